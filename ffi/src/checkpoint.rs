//! Checkpoints of the shared memory, and restarts from them (`DSM_RESTART=1`).

use std::ffi::c_int;

use crate::runtime::{status_call, with_dsm};

/// Takes a checkpoint of the shared memory: every node releases, saves the pages it homes (those
/// changed since the previous epoch, or all of them every `DSM_CHECKPOINT_FULL_EVERY` epochs)
/// and the allocation state to `DSM_CHECKPOINT_DIR` (`%r`: the rank) and a copy to its partner
/// (the next rank). Returns once every node has flushed both copies; it is a barrier. A job
/// started again with `DSM_RESTART=1` (`dsmrun --restart`) resumes from the newest whole one.
///
/// Collective: every node calls it; no thread writes global memory meanwhile.
/// Thread safety: call collective functions from one thread per node.
/// Errors: `DSM_ERR_CONFIG` (`DSM_CHECKPOINT_DIR` is not set), `DSM_ERR_CHECKPOINT` on every
/// node when some node could not write its files (the previous checkpoint stays the newest
/// whole one), `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`, `DSM_ERR_PEER_LOST`,
/// `DSM_ERR_TRANSPORT`.
#[no_mangle]
pub extern "C" fn dsm_checkpoint() -> c_int {
    status_call(|| with_dsm(|dsm| Ok(dsm.checkpoint().map(drop)?)))
}

/// `dsm_checkpoint`, full whatever the epoch (every page is written).
///
/// Collective: every node calls it. Errors: as `dsm_checkpoint`.
#[no_mangle]
pub extern "C" fn dsm_checkpoint_full() -> c_int {
    status_call(|| with_dsm(|dsm| Ok(dsm.checkpoint_full().map(drop)?)))
}

/// Whether this run resumed from a checkpoint: 1 after a restart (and `*epoch`, when `epoch`
/// is not NULL, is the epoch resumed from), 0 on a fresh start; a negative `DSM_ERR_*` status
/// when the runtime is not initialised.
///
/// Not collective. Thread safety: thread-safe.
///
/// # Safety
/// `epoch` must be NULL or valid for writing one `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn dsm_restarted(epoch: *mut u64) -> c_int {
    let mut answer = 0;
    let status = status_call(|| {
        with_dsm(|dsm| {
            if let Some(e) = dsm.restarted() {
                answer = 1;
                if !epoch.is_null() {
                    // SAFETY: `epoch` is not NULL and the caller guarantees it is writable.
                    unsafe { epoch.write(e.0) };
                }
            }
            Ok(())
        })
    });
    if status < 0 {
        status
    } else {
        answer
    }
}
