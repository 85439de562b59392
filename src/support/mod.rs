//! Small shared helpers: retry policy (the one place that uses `backoff`) and locking a mutex
//! whose holder panicked.

pub mod retry;

/// Locks `m`, taking the value as it is when an earlier holder panicked: the counters and
/// schedules behind these locks stay usable, so a panic elsewhere must not stop every caller.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
