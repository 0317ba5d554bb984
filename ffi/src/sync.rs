//! Barriers, fences and locks in global memory.

use std::ffi::c_int;

use dsm_core::{Dsm, GlobalLock};

use crate::runtime::{global, status_call, with_dsm};
use crate::status::{self, Failure, DSM_BUSY, DSM_ERR_MISALIGNED, DSM_OK};

/// A lock that lives in global memory: 16 bytes, 16-byte aligned, plain data. It may be a field
/// of a struct in global memory; any node initialises it once with `dsm_lock_init` before use.
/// It is fair (first come, first served) and its critical sections are release-consistent: what
/// one holder wrote is visible to the next.
#[repr(C, align(16))]
pub struct dsm_lock_t {
    /// The lock's state; only the runtime reads or writes it.
    pub opaque: [u64; 2],
}

const _: () = assert!(size_of::<dsm_lock_t>() == size_of::<GlobalLock>());
const _: () = assert!(align_of::<dsm_lock_t>() == align_of::<GlobalLock>());

/// Makes this node's writes visible everywhere, waits for every node, then makes every node's
/// writes visible here.
///
/// Collective: every node calls it.
/// Thread safety: call collective functions from one thread per node.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` on every node when another node is in a different
/// collective call, `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`, `DSM_ERR_PEER_LOST`,
/// `DSM_ERR_TRANSPORT`.
#[no_mangle]
pub extern "C" fn dsm_barrier() -> c_int {
    status_call(|| with_dsm(|dsm| Ok(dsm.barrier()?)))
}

/// Acquire fence: makes writes that other nodes released visible to this node.
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`, `DSM_ERR_PEER_LOST`,
/// `DSM_ERR_TRANSPORT`.
#[no_mangle]
pub extern "C" fn dsm_acquire() -> c_int {
    status_call(|| with_dsm(|dsm| Ok(dsm.acquire()?)))
}

/// Release fence: makes this node's writes visible to any node that acquires afterwards.
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`, `DSM_ERR_PEER_LOST`,
/// `DSM_ERR_TRANSPORT`.
#[no_mangle]
pub extern "C" fn dsm_release() -> c_int {
    status_call(|| with_dsm(|dsm| Ok(dsm.release()?)))
}

/// Initialises the lock at `lock` (in global memory) as free. Call it once, on one node, before
/// any node uses the lock (and make the initialisation visible, e.g. with a barrier).
///
/// One-sided (not collective). Thread safety: thread-safe.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (NULL), `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_MISALIGNED`,
/// `DSM_ERR_UNALLOCATED`, `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_lock_init(lock: *mut dsm_lock_t) -> c_int {
    status_call(|| with_lock(lock, |dsm, l| Ok(dsm.lock_init(l)?)))
}

/// Takes the lock, waiting for it, then acquires (what the previous holders wrote is visible).
///
/// One-sided. Thread safety: thread-safe; the lock is held by the node, not the thread (two
/// threads of one node exclude each other too, since each takes its own ticket; any thread of
/// the node may unlock it), but the thread that took it cannot take it again.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (NULL), `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_MISALIGNED`,
/// `DSM_ERR_UNALLOCATED`, `DSM_ERR_DEADLOCK` (this thread holds it already: nothing changes),
/// `DSM_ERR_PEER_LOST`, `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_lock(lock: *mut dsm_lock_t) -> c_int {
    status_call(|| with_lock(lock, |dsm, l| Ok(dsm.lock(l)?)))
}

/// Takes the lock if it is free and returns `DSM_OK`; returns `DSM_BUSY` (a positive status,
/// not a failure) at once if a holder has it (this node included); `dsm_last_error` then says
/// `DSM_BUSY` too.
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_lock`.
#[no_mangle]
pub extern "C" fn dsm_trylock(lock: *mut dsm_lock_t) -> c_int {
    let mut taken = true;
    let status = status_call(|| {
        with_lock(lock, |dsm, l| {
            taken = dsm.try_lock(l)?;
            Ok(())
        })
    });
    if status == DSM_OK && !taken {
        // dsm_last_error and dsm_last_error_message say so too (not an earlier failure's).
        status::record(Err(Failure::new(
            DSM_BUSY,
            format!("the lock at {lock:p} is taken (DSM_BUSY)"),
        )))
    } else {
        status
    }
}

/// Releases (this node's writes become visible to the next holder), then passes the lock on.
///
/// One-sided. Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_HELD` when this node does not hold the lock (a second unlock, an
/// unlock of a free lock or of another node's lock): nothing changes, the lock stays as it
/// was; otherwise as `dsm_lock`.
#[no_mangle]
pub extern "C" fn dsm_unlock(lock: *mut dsm_lock_t) -> c_int {
    status_call(|| with_lock(lock, |dsm, l| Ok(dsm.unlock(l)?)))
}

/// Runs `f` with a checked lock pointer.
fn with_lock(
    lock: *mut dsm_lock_t,
    f: impl FnOnce(&Dsm, *const GlobalLock) -> Result<(), Failure>,
) -> Result<(), Failure> {
    with_dsm(|dsm| {
        let addr = lock as usize;
        global(dsm, addr, "the lock")?;
        if !addr.is_multiple_of(align_of::<dsm_lock_t>()) {
            return Err(Failure::new(
                DSM_ERR_MISALIGNED,
                format!("the lock {addr:#x} is not 16-byte aligned"),
            ));
        }
        f(dsm, lock.cast_const().cast())
    })
}
