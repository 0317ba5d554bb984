//! Semaphores and condition variables in global memory.

use std::ffi::c_int;

use dsm_core::{Dsm, GlobalCondvar, GlobalLock, GlobalSemaphore};

use crate::runtime::{global, status_call, with_dsm};
use crate::status::{Failure, DSM_ERR_MISALIGNED};
use crate::sync::dsm_lock_t;

/// A counting semaphore that lives in global memory: 32 bytes, 16-byte aligned, plain data. It
/// may be a field of a struct in global memory; any node initialises it once with
/// `dsm_sem_init` before use. What a node wrote before `dsm_sem_post` is visible to the node
/// whose `dsm_sem_wait` that post ended.
#[repr(C, align(16))]
pub struct dsm_sem_t {
    /// The semaphore's state; only the runtime reads or writes it.
    pub opaque: [u64; 4],
}

const _: () = assert!(size_of::<dsm_sem_t>() == size_of::<GlobalSemaphore>());
const _: () = assert!(align_of::<dsm_sem_t>() == align_of::<GlobalSemaphore>());

/// A condition variable that lives in global memory: 16 bytes, 16-byte aligned, plain data,
/// used with a `dsm_lock_t`. It may be a field of a struct in global memory; any node
/// initialises it once with `dsm_cond_init` before use.
#[repr(C, align(16))]
pub struct dsm_cond_t {
    /// The condition variable's state; only the runtime reads or writes it.
    pub opaque: [u64; 2],
}

const _: () = assert!(size_of::<dsm_cond_t>() == size_of::<GlobalCondvar>());
const _: () = assert!(align_of::<dsm_cond_t>() == align_of::<GlobalCondvar>());

/// Initialises the semaphore at `s` (in global memory) with the count `value`. Call it once,
/// on one node, before any node uses the semaphore (and make that visible, e.g. with a
/// barrier).
///
/// One-sided (not collective). Thread safety: thread-safe.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (NULL), `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_MISALIGNED`,
/// `DSM_ERR_UNALLOCATED`, `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`,
/// `DSM_ERR_PEER_LOST`, `DSM_ERR_TRANSPORT`.
#[no_mangle]
pub extern "C" fn dsm_sem_init(s: *mut dsm_sem_t, value: u64) -> c_int {
    status_call(|| with_object(s, "the semaphore", |dsm, s| Ok(dsm.sem_init(s, value)?)))
}

/// Releases (this node's writes become visible to the node whose wait this post ends), then
/// adds one to the count, letting a waiter go on.
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_sem_init`.
#[no_mangle]
pub extern "C" fn dsm_sem_post(s: *mut dsm_sem_t) -> c_int {
    status_call(|| with_object(s, "the semaphore", |dsm, s| Ok(dsm.sem_post(s)?)))
}

/// Waits until the count is above 0, takes one from it, then acquires (what the poster wrote
/// before its post is visible). The runtime does the waiting (polling the count at its home,
/// backing off to short sleeps).
///
/// One-sided. Thread safety: thread-safe; any thread of any node may wait.
/// Errors: as `dsm_sem_init`.
#[no_mangle]
pub extern "C" fn dsm_sem_wait(s: *mut dsm_sem_t) -> c_int {
    status_call(|| with_object(s, "the semaphore", |dsm, s| Ok(dsm.sem_wait(s)?)))
}

/// Takes one from the count if it is above 0 and returns 1 (after acquiring); returns 0 at
/// once when the count is 0 (`dsm_last_error` is then `DSM_OK`); a negative status on failure.
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_sem_init`.
#[no_mangle]
pub extern "C" fn dsm_sem_trywait(s: *mut dsm_sem_t) -> c_int {
    let mut taken = false;
    let status = status_call(|| {
        with_object(s, "the semaphore", |dsm, s| {
            taken = dsm.sem_try_wait(s)?;
            Ok(())
        })
    });
    if status < 0 {
        status
    } else {
        c_int::from(taken)
    }
}

/// Initialises the condition variable at `c` (in global memory). Call it once, on one node,
/// before any node uses it (and make that visible, e.g. with a barrier).
///
/// One-sided (not collective). Thread safety: thread-safe.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (NULL), `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_MISALIGNED`,
/// `DSM_ERR_UNALLOCATED`, `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`,
/// `DSM_ERR_PEER_LOST`, `DSM_ERR_TRANSPORT`.
#[no_mangle]
pub extern "C" fn dsm_cond_init(c: *mut dsm_cond_t) -> c_int {
    status_call(|| with_object(c, "the condition variable", |dsm, c| Ok(dsm.cond_init(c)?)))
}

/// Unlocks `held` (which this node holds), waits for a `dsm_cond_signal` or
/// `dsm_cond_broadcast` made after the call began, then locks `held` again (acquiring). A
/// signal made by a node holding `held` after this call began is never missed. As in POSIX,
/// wakeups may be spurious (a signal may wake several waiters): wait in a loop on the
/// predicate, under the lock.
///
/// One-sided. Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_HELD` when this node does not hold `held` (nothing changes, nothing is
/// waited for); `DSM_ERR_INVALID_ARGUMENT` (NULL), `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_MISALIGNED`
/// for either pointer; otherwise as `dsm_cond_init` (after such a failure of the wait itself,
/// `held` is not held).
#[no_mangle]
pub extern "C" fn dsm_cond_wait(c: *mut dsm_cond_t, held: *mut dsm_lock_t) -> c_int {
    status_call(|| {
        with_object(c, "the condition variable", |dsm, c| {
            checked(dsm, held, "the lock")?;
            Ok(dsm.cond_wait(c, held.cast_const().cast::<GlobalLock>())?)
        })
    })
}

/// Releases, then wakes the nodes waiting on `c`; it may wake more than one (POSIX allows it).
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_cond_init`.
#[no_mangle]
pub extern "C" fn dsm_cond_signal(c: *mut dsm_cond_t) -> c_int {
    status_call(|| {
        with_object(
            c,
            "the condition variable",
            |dsm, c| Ok(dsm.cond_signal(c)?),
        )
    })
}

/// Releases, then wakes every node waiting on `c`.
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_cond_init`.
#[no_mangle]
pub extern "C" fn dsm_cond_broadcast(c: *mut dsm_cond_t) -> c_int {
    status_call(|| {
        with_object(c, "the condition variable", |dsm, c| {
            Ok(dsm.cond_broadcast(c)?)
        })
    })
}

/// Checks that `p` is a 16-byte aligned pointer into global memory.
fn checked<T>(dsm: &Dsm, p: *mut T, what: &str) -> Result<(), Failure> {
    let addr = p as usize;
    global(dsm, addr, what)?;
    if !addr.is_multiple_of(16) {
        return Err(Failure::new(
            DSM_ERR_MISALIGNED,
            format!("{what} {addr:#x} is not 16-byte aligned"),
        ));
    }
    Ok(())
}

/// Runs `f` with a checked pointer to a C object and its Rust counterpart `R` (same layout).
fn with_object<C, R>(
    p: *mut C,
    what: &str,
    f: impl FnOnce(&Dsm, *const R) -> Result<(), Failure>,
) -> Result<(), Failure> {
    with_dsm(|dsm| {
        checked(dsm, p, what)?;
        f(dsm, p.cast_const().cast())
    })
}
