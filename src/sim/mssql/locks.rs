//! Row locks of the simulator's emulated transactions: which session holds an exclusive lock on
//! which row (`(table, rowid)`), waiting until another session releases its locks (bounded by
//! `SET LOCK_TIMEOUT` and by a cancelled request), and deadlock detection over the waits-for
//! graph.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Why a session's request must stop: nothing, an ATTENTION, or the client has gone.
#[derive(Debug, Default)]
pub struct Cancel(AtomicU8);

pub const NOT_CANCELLED: u8 = 0;
pub const ATTENTION: u8 = 1;
pub const DROPPED: u8 = 2;

impl Cancel {
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn is_set(&self) -> bool {
        self.get() != NOT_CANCELLED
    }
    /// Raises the reason (a dropped connection outranks an attention).
    pub fn set(&self, reason: u8) {
        self.0.fetch_max(reason, Ordering::SeqCst);
    }
    /// Clears an attention once it has been answered.
    pub fn clear_attention(&self) {
        let _ =
            self.0
                .compare_exchange(ATTENTION, NOT_CANCELLED, Ordering::SeqCst, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct State {
    /// Table → rowid → holding session.
    rows: HashMap<String, HashMap<i64, u64>>,
    /// Waiting session → the session it waits for.
    waits: HashMap<u64, u64>,
}

/// How a wait for another session's locks ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The awaited session released the row (or all of its locks).
    Released,
    /// `SET LOCK_TIMEOUT` elapsed (error 1222).
    TimedOut,
    /// The request was cancelled (ATTENTION or a dropped connection).
    Cancelled,
    /// Waiting would close a cycle: this session is the deadlock victim (error 1205).
    Deadlock,
}

/// What a session waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Awaited {
    /// One row held by `holder`.
    Row {
        table: String,
        rowid: i64,
        holder: u64,
    },
    /// Every row of `table` held by sessions other than the waiter (a scanning reader).
    Table { table: String, holder: u64 },
}

impl Awaited {
    fn holder(&self) -> u64 {
        match self {
            Awaited::Row { holder, .. } | Awaited::Table { holder, .. } => *holder,
        }
    }
}

/// The lock table of one database.
#[derive(Debug, Default)]
pub struct Locks {
    state: Mutex<State>,
    changed: Condvar,
}

impl Locks {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks a row for `session`: `Ok(true)` when newly locked, `Ok(false)` when it already held
    /// it, `Err(holder)` when another session holds it.
    pub fn lock(&self, table: &str, rowid: i64, session: u64) -> Result<bool, u64> {
        let mut s = self.state();
        let rows = s.rows.entry(table.to_string()).or_default();
        match rows.get(&rowid) {
            Some(&holder) if holder == session => Ok(false),
            Some(&holder) => Err(holder),
            None => {
                rows.insert(rowid, session);
                Ok(true)
            }
        }
    }

    /// The session other than `session` holding a row, if any.
    pub fn holder(&self, table: &str, rowid: i64, session: u64) -> Option<u64> {
        self.state()
            .rows
            .get(table)
            .and_then(|rows| rows.get(&rowid))
            .copied()
            .filter(|&h| h != session)
    }

    /// A session other than `session` holding some row of `table`.
    pub fn table_holder(&self, table: &str, session: u64) -> Option<u64> {
        self.state()
            .rows
            .get(table)
            .and_then(|rows| rows.values().copied().find(|&h| h != session))
    }

    /// Whether another session than `session` holds any lock.
    pub fn others_hold_any(&self, session: u64) -> bool {
        self.state()
            .rows
            .values()
            .any(|rows| rows.values().any(|&h| h != session))
    }

    /// Releases the given rows of `session` and wakes the waiters.
    pub fn release(&self, session: u64, keys: &[(String, i64)]) {
        if keys.is_empty() {
            return;
        }
        let mut s = self.state();
        for (table, rowid) in keys {
            if let Some(rows) = s.rows.get_mut(table) {
                if rows.get(rowid) == Some(&session) {
                    rows.remove(rowid);
                }
                if rows.is_empty() {
                    s.rows.remove(table);
                }
            }
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Wakes every waiter so it looks at its cancel flag again.
    pub fn wake(&self) {
        let _guard = self.state();
        self.changed.notify_all();
    }

    /// Waits until `awaited` is released, `timeout` elapses (`None`: no bound) or `cancel` is
    /// set. A wait that would close a cycle of waiting sessions returns `Deadlock` at once.
    pub fn wait(
        &self,
        session: u64,
        awaited: &Awaited,
        timeout: Option<Duration>,
        cancel: &Cancel,
    ) -> Wait {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut s = self.state();
        // Deadlock: the holder waits (transitively) for this session.
        let mut next = awaited.holder();
        let mut hops = 0;
        while let Some(&w) = s.waits.get(&next) {
            if w == session {
                return Wait::Deadlock;
            }
            next = w;
            hops += 1;
            if hops > 10_000 {
                break;
            }
        }
        s.waits.insert(session, awaited.holder());
        let outcome = loop {
            if cancel.is_set() {
                break Wait::Cancelled;
            }
            let held = match awaited {
                Awaited::Row {
                    table,
                    rowid,
                    holder,
                } => s
                    .rows
                    .get(table)
                    .and_then(|r| r.get(rowid))
                    .is_some_and(|h| h == holder),
                Awaited::Table { table, .. } => s
                    .rows
                    .get(table)
                    .is_some_and(|r| r.values().any(|&h| h != session)),
            };
            if !held {
                break Wait::Released;
            }
            // Bounded steps: a cancel flag set without a wake-up is still seen.
            let step = Duration::from_millis(200);
            let wait_for = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        break Wait::TimedOut;
                    }
                    (d - now).min(step)
                }
                None => step,
            };
            s = self
                .changed
                .wait_timeout(s, wait_for)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        s.waits.remove(&session);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn rows_of_other_sessions_block_and_release_wakes_the_waiter() {
        let locks = Arc::new(Locks::default());
        assert_eq!(locks.lock("t", 1, 1), Ok(true));
        assert_eq!(locks.lock("t", 1, 1), Ok(false));
        assert_eq!(locks.lock("t", 2, 2), Ok(true));
        assert_eq!(locks.lock("t", 1, 2), Err(1));
        let waiter = {
            let locks = Arc::clone(&locks);
            std::thread::spawn(move || {
                let awaited = Awaited::Row {
                    table: "t".into(),
                    rowid: 1,
                    holder: 1,
                };
                locks.wait(2, &awaited, None, &Cancel::default())
            })
        };
        locks.release(1, &[("t".into(), 1)]);
        assert_eq!(waiter.join().unwrap(), Wait::Released);
        assert_eq!(locks.lock("t", 1, 2), Ok(true));
    }

    #[test]
    fn timeouts_cancels_and_cycles_end_a_wait() {
        let locks = Locks::default();
        locks.lock("t", 1, 1).unwrap();
        let awaited = Awaited::Row {
            table: "t".into(),
            rowid: 1,
            holder: 1,
        };
        let cancel = Cancel::default();
        assert_eq!(
            locks.wait(2, &awaited, Some(Duration::from_millis(20)), &cancel),
            Wait::TimedOut
        );
        cancel.set(ATTENTION);
        assert_eq!(locks.wait(2, &awaited, None, &cancel), Wait::Cancelled);
        // Session 1 waits for session 2: session 2 waiting for 1 would be a deadlock.
        locks.state().waits.insert(1, 2);
        assert_eq!(
            locks.wait(2, &awaited, None, &Cancel::default()),
            Wait::Deadlock
        );
    }
}
