//! Business-rule validation: generic rules and Costa Rica rules (cédulas, phones, territory,
//! beneficiaries). Pure code, no I/O.
