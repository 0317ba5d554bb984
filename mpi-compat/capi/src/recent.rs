//! The communicator and datatypes a thread's last call on a communicator took
//! ([`crate::state::with_comm`]), kept for its next call: a program that sends and receives
//! in a loop names the same handles every time, and taking them again cost the library lock,
//! three table lookups and the clones, about as much as the rest of a small message's path.
//!
//! What a thread keeps is good while the tables are unchanged: every change that could alter
//! what a handle names (a handle made or freed, an error handler set, a datatype committed,
//! `MPI_Finalize`) calls [`tables_changed`] under the library lock, and a kept entry is used
//! only when it was taken in the current epoch. Handles are never reused, so a kept failure
//! (an invalid handle) is renewed once the handle is made.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::state::Taken;

/// Counts changes to the handle tables.
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Says that the handle tables changed: what threads keep is stale.
pub(crate) fn tables_changed() {
    EPOCH.fetch_add(1, Ordering::AcqRel);
}

/// The current epoch (read before the tables are, so that what is taken is at least as new).
pub(crate) fn epoch() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// What one thread keeps.
struct Kept {
    epoch: u64,
    comm: i32,
    types: [Option<i32>; 2],
    /// The error handler in force for calls on `comm`.
    handler: i32,
    taken: Rc<Taken>,
}

thread_local! {
    static KEPT: RefCell<Option<Kept>> = const { RefCell::new(None) };
}

/// The handles of a call, as kept (`None` past the end of `types`).
fn key(types: &[i32]) -> Option<[Option<i32>; 2]> {
    match *types {
        [] => Some([None, None]),
        [a] => Some([Some(a), None]),
        [a, b] => Some([Some(a), Some(b)]),
        _ => None,
    }
}

/// What this thread took for communicator `comm` and datatypes `types` in epoch `epoch`, with
/// the error handler, if it kept that.
pub(crate) fn lookup(epoch: u64, comm: i32, types: &[i32]) -> Option<(Rc<Taken>, i32)> {
    let types = key(types)?;
    KEPT.with(|k| {
        let k = k.try_borrow().ok()?;
        let k = k.as_ref()?;
        (k.epoch == epoch && k.comm == comm && k.types == types)
            .then(|| (Rc::clone(&k.taken), k.handler))
    })
}

/// Keeps what a call took in epoch `epoch`, in place of what the thread kept before.
pub(crate) fn keep(epoch: u64, comm: i32, types: &[i32], handler: i32, taken: Rc<Taken>) {
    let Some(types) = key(types) else {
        return;
    };
    KEPT.with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            *k = Some(Kept {
                epoch,
                comm,
                types,
                handler,
                taken,
            });
        }
    });
}

/// Drops what this thread keeps (at `MPI_Finalize`: the communicator holds the job's state).
pub(crate) fn forget() {
    KEPT.with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            *k = None;
        }
    });
}
