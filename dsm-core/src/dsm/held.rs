//! Which global locks this node holds, and which of its threads took each one: what turns an
//! unlock of a lock this node does not hold (a second unlock, an unlock of a free lock, of
//! another node's lock) and a lock taken again by the thread that holds it into errors that
//! change nothing, instead of a broken lock (two holders, or a next `lock` that waits forever).
//!
//! The table is local: no remote operation is added to `lock` or `unlock`, only a short critical
//! section on a node-local mutex. A lock is held by the node (any of its threads may unlock
//! it, as `docs/C_API.md` says); only the thread that took it cannot take it again.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// A number for the calling thread, unique in the process. Not `std::thread::current().id()`:
/// that allocates a handle on the first call in a thread the runtime did not start (a C
/// program's main thread), which valgrind reports as possibly lost at exit.
fn caller() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ME: Cell<u64> = const { Cell::new(0) };
    }
    ME.with(|me| {
        if me.get() == 0 {
            me.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        me.get()
    })
}

/// The global locks this node holds: lock address → the thread that took it ([`caller`]).
#[derive(Debug, Default)]
pub(super) struct HeldLocks {
    held: Mutex<HashMap<usize, u64>>,
}

impl HeldLocks {
    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<usize, u64>> {
        // A panic while holding this mutex cannot leave the map inconsistent (single inserts
        // and removes): go on with it.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before waiting for the lock at `addr`: refuses it when the calling thread holds it
    /// already (waiting would never end).
    ///
    /// # Errors
    /// [`Error::LockHeldByCaller`].
    pub(super) fn check_not_mine(&self, addr: usize) -> Result<()> {
        if self.table().get(&addr) == Some(&caller()) {
            return Err(Error::LockHeldByCaller(addr));
        }
        Ok(())
    }

    /// Records that the calling thread took the lock at `addr`.
    pub(super) fn taken(&self, addr: usize) {
        self.table().insert(addr, caller());
    }

    /// Before passing the lock at `addr` on: forgets it.
    ///
    /// # Errors
    /// [`Error::LockNotHeld`] when this node does not hold it (nothing changes).
    pub(super) fn give_up(&self, addr: usize) -> Result<()> {
        self.table()
            .remove(&addr)
            .map(drop)
            .ok_or(Error::LockNotHeld(addr))
    }

    /// The lock at `addr` was (re)initialised: whatever this node held of it is gone.
    pub(super) fn forget(&self, addr: usize) {
        self.table().remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlock_needs_a_lock_and_relocking_by_the_holder_is_refused() {
        let h = HeldLocks::default();
        assert!(matches!(h.give_up(64), Err(Error::LockNotHeld(64))));
        h.check_not_mine(64).expect("free");
        h.taken(64);
        assert!(matches!(
            h.check_not_mine(64),
            Err(Error::LockHeldByCaller(64))
        ));
        // Another thread of the node may wait for it (and may unlock it: the node holds it).
        std::thread::scope(|s| {
            s.spawn(|| h.check_not_mine(64).expect("another thread waits"));
        });
        h.check_not_mine(128).expect("another lock");
        h.give_up(64).expect("held");
        assert!(matches!(h.give_up(64), Err(Error::LockNotHeld(64))));
        h.taken(64);
        h.forget(64);
        assert!(h.give_up(64).is_err(), "re-initialised");
    }
}
