//! Contact property definitions served by the HubSpot simulator: HubSpot's read-only defaults
//! plus the cooperative's custom properties, and their JSON shape on `GET …/properties/contacts`.

use serde_json::{Value, json};

/// A property's value type, as HubSpot names it in `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PropertyType {
    String,
    Number,
    Enumeration,
    Date,
    DateTime,
    Bool,
}

impl PropertyType {
    /// HubSpot's name for the type.
    pub fn as_str(self) -> &'static str {
        match self {
            PropertyType::String => "string",
            PropertyType::Number => "number",
            PropertyType::Enumeration => "enumeration",
            PropertyType::Date => "date",
            PropertyType::DateTime => "datetime",
            PropertyType::Bool => "bool",
        }
    }

    fn field_type(self) -> &'static str {
        match self {
            PropertyType::String => "text",
            PropertyType::Number => "number",
            PropertyType::Enumeration => "select",
            PropertyType::Date | PropertyType::DateTime => "date",
            PropertyType::Bool => "booleancheckbox",
        }
    }
}

/// One option of an enumeration property: the label users see and the internal value the API
/// takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropertyOption {
    pub label: String,
    pub value: String,
}

/// One contact property definition.
#[derive(Clone, Debug, PartialEq)]
pub struct PropertyDef {
    pub name: String,
    pub label: String,
    pub kind: PropertyType,
    pub group: String,
    pub options: Vec<PropertyOption>,
    /// `hasUniqueValue`: usable as `idProperty` in batch reads.
    pub unique: bool,
    /// `modificationMetadata.readOnlyValue`: writes are rejected.
    pub read_only: bool,
    pub hubspot_defined: bool,
    /// Email property: values must be addresses and are stored lowercased.
    pub email: bool,
}

impl PropertyDef {
    /// A writable custom property of the given type.
    pub fn custom(name: &str, label: &str, kind: PropertyType) -> Self {
        Self {
            name: name.to_owned(),
            label: label.to_owned(),
            kind,
            group: "contactinformation".to_owned(),
            options: Vec::new(),
            unique: false,
            read_only: false,
            hubspot_defined: false,
            email: false,
        }
    }

    /// An enumeration with `(label, value)` options.
    pub fn enumeration(name: &str, label: &str, options: &[(&str, &str)]) -> Self {
        let mut def = Self::custom(name, label, PropertyType::Enumeration);
        def.options = options
            .iter()
            .map(|(label, value)| PropertyOption {
                label: (*label).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        def
    }

    fn hubspot(mut self, read_only: bool) -> Self {
        self.hubspot_defined = true;
        self.read_only = read_only;
        self
    }

    /// The property as `GET …/properties/contacts` returns it.
    pub fn to_json(&self) -> Value {
        let options: Vec<Value> = self
            .options
            .iter()
            .enumerate()
            .map(|(i, o)| {
                json!({"label": o.label, "value": o.value, "displayOrder": i, "hidden": false,
                       "description": ""})
            })
            .collect();
        json!({
            "name": self.name,
            "label": self.label,
            "type": self.kind.as_str(),
            "fieldType": if self.email { "text" } else { self.kind.field_type() },
            "groupName": self.group,
            "description": "",
            "options": options,
            "hasUniqueValue": self.unique,
            "hidden": false,
            "formField": !self.read_only,
            "calculated": false,
            "externalOptions": false,
            "hubspotDefined": self.hubspot_defined,
            "displayOrder": -1,
            "dataSensitivity": "non_sensitive",
            "modificationMetadata": {
                "archivable": !self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
                "readOnlyOptions": false,
            },
            "createdAt": "2024-01-15T14:00:00.000Z",
            "updatedAt": "2024-01-15T14:00:00.000Z",
            "archived": false,
        })
    }
}

/// Options of `marital_status` (label, internal value), in option order. The internal values
/// are the labels, as HubSpot makes them for options created in its settings page; values are
/// case-sensitive.
pub const MARITAL_STATUS: &[(&str, &str)] = &[
    ("Soltero", "Soltero"),
    ("Casado", "Casado"),
    ("Divorciado", "Divorciado"),
    ("Viudo", "Viudo"),
    ("Unión Libre", "Unión Libre"),
];

/// HubSpot's lifecycle stages, in the order a contact moves through them (forward only).
pub const LIFECYCLE_STAGES: &[(&str, &str)] = &[
    ("Subscriber", "subscriber"),
    ("Lead", "lead"),
    ("Marketing Qualified Lead", "marketingqualifiedlead"),
    ("Sales Qualified Lead", "salesqualifiedlead"),
    ("Opportunity", "opportunity"),
    ("Customer", "customer"),
    ("Evangelist", "evangelist"),
    ("Other", "other"),
];

/// Internal values of `frecuencia_deposito_de_su_salario`, in option order.
pub const FRECUENCIA_DEPOSITO: &[(&str, &str)] = &[
    ("Semanal", "semanal"),
    ("Bisemanal", "bisemanal"),
    ("Quincenal", "quincenal"),
    ("Mensual", "mensual"),
];

/// The default contact properties: HubSpot's own (read-only ones included) and the
/// cooperative's custom ones. `numero_asociado` is unique (usable as `idProperty`).
pub fn default_properties() -> Vec<PropertyDef> {
    use PropertyType::{Date, DateTime, Number, String as Text};
    let mut email = PropertyDef::custom("email", "Email", Text).hubspot(false);
    email.email = true;
    let mut props = vec![
        PropertyDef::custom("hs_object_id", "Record ID", Number).hubspot(true),
        PropertyDef::custom("createdate", "Create Date", DateTime).hubspot(true),
        PropertyDef::custom("lastmodifieddate", "Last Modified Date", DateTime).hubspot(true),
        PropertyDef::custom("hs_lastmodifieddate", "Object last modified", DateTime).hubspot(true),
        PropertyDef::custom("hs_merged_object_ids", "Merged Record IDs", Text).hubspot(true),
        PropertyDef::custom(
            "hs_calculated_merged_vids",
            "Merged vids with timestamps of a contact",
            Text,
        )
        .hubspot(true),
        PropertyDef::custom("hs_additional_emails", "Additional email addresses", Text)
            .hubspot(true),
        email,
        PropertyDef::custom("firstname", "First Name", Text).hubspot(false),
        PropertyDef::custom("lastname", "Last Name", Text).hubspot(false),
        PropertyDef::custom("phone", "Phone Number", Text).hubspot(false),
        PropertyDef::custom("mobilephone", "Mobile Phone Number", Text).hubspot(false),
        PropertyDef::custom("hs_whatsapp_phone_number", "WhatsApp Phone Number", Text)
            .hubspot(false),
        PropertyDef::custom("address", "Street Address", Text).hubspot(false),
        PropertyDef::custom("city", "City", Text).hubspot(false),
        PropertyDef::enumeration("lifecyclestage", "Lifecycle Stage", LIFECYCLE_STAGES)
            .hubspot(false),
    ];
    let mut numero = PropertyDef::custom("numero_asociado", "Número de asociado", Text);
    numero.unique = true;
    props.push(numero);
    props.extend([
        PropertyDef::custom("no__de_cedula", "No. de cédula", Text),
        PropertyDef::custom("telefono_habitacion", "Teléfono habitación", Text),
        PropertyDef::custom("telefono_oficina", "Teléfono oficina", Text),
        PropertyDef::custom("date_of_birth", "Fecha de nacimiento", Date),
        PropertyDef::enumeration("marital_status", "Estado civil", MARITAL_STATUS),
        PropertyDef::custom("provincia", "Provincia", Text),
        PropertyDef::custom("canton", "Cantón", Text),
        PropertyDef::custom("distrito", "Distrito", Text),
        PropertyDef::custom(
            "salario_neto_semanal_o_quincenal",
            "Salario neto semanal o quincenal",
            Number,
        ),
        PropertyDef::custom(
            "salario_bruto_semanal_o_quincenal",
            "Salario bruto semanal o quincenal",
            Number,
        ),
        PropertyDef::enumeration(
            "frecuencia_deposito_de_su_salario",
            "Frecuencia depósito de su salario",
            FRECUENCIA_DEPOSITO,
        ),
    ]);
    for n in 1..=5 {
        props.push(PropertyDef::custom(
            &format!("nombre_y_apellidos__beneficiario_0{n}_"),
            &format!("Nombre y apellidos (beneficiario 0{n})"),
            Text,
        ));
        props.push(PropertyDef::custom(
            &format!("numero_de_cedula__beneficiario_{n}_"),
            &format!("Número de cédula (beneficiario {n})"),
            Text,
        ));
        props.push(PropertyDef::custom(
            &format!("porcentaje__beneficiario_{n}_"),
            &format!("Porcentaje (beneficiario {n})"),
            Number,
        ));
    }
    props
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_have_unique_names_and_the_cooperative_fields() {
        let props = default_properties();
        let mut names: Vec<&str> = props.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate property names");
        for name in [
            "numero_asociado",
            "porcentaje__beneficiario_5_",
            "nombre_y_apellidos__beneficiario_03_",
            "hs_lastmodifieddate",
        ] {
            assert!(names.contains(&name), "{name} missing");
        }
        let marital = props.iter().find(|p| p.name == "marital_status");
        assert_eq!(marital.map(|p| p.options.len()), Some(5));
    }

    #[test]
    fn json_shape_marks_read_only_and_unique() {
        let props = default_properties();
        let created = props
            .iter()
            .find(|p| p.name == "createdate")
            .map(PropertyDef::to_json);
        let created = created.unwrap_or_default();
        assert_eq!(created["modificationMetadata"]["readOnlyValue"], true);
        assert_eq!(created["type"], "datetime");
        let numero = props
            .iter()
            .find(|p| p.name == "numero_asociado")
            .map(PropertyDef::to_json);
        assert_eq!(numero.unwrap_or_default()["hasUniqueValue"], true);
    }
}
