//! Small shared helpers: retry policy (the one place that uses `backoff`).

pub mod retry;
