//! The durable work queue in PostgreSQL: enqueue with coalescing, claim with leases, heartbeat,
//! settle, rescue of expired leases, pruning, and wake-ups by LISTEN/NOTIFY.
