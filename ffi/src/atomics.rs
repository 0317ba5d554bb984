//! 8-byte atomics on global memory, performed at the word's home (sequentially consistent with
//! each other on the same word; they neither acquire nor release other data).

use crate::runtime::{global, value_call, with_dsm};
use crate::status::{Failure, DSM_ERR_MISALIGNED};

use dsm_core::Dsm;

/// Reads the 8-byte global word at `p` atomically. Returns 0 on failure (see `dsm_last_error`).
///
/// One-sided. Thread safety: thread-safe.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (NULL), `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_MISALIGNED`,
/// `DSM_ERR_UNALLOCATED`, `DSM_ERR_PEER_LOST`, `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_atomic_load_u64(p: *const u64) -> u64 {
    atomic(p, |dsm| Ok(dsm.atomic_load(p)?))
}

/// Writes `v` to the 8-byte global word at `p` atomically.
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_atomic_load_u64`, reported by `dsm_last_error`.
#[no_mangle]
pub extern "C" fn dsm_atomic_store_u64(p: *mut u64, v: u64) {
    atomic(p, |dsm| Ok(dsm.atomic_store(p, v).map(|()| 0)?));
}

/// Replaces the 8-byte global word at `p` with `v`; returns the previous value (0 on failure).
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_atomic_load_u64`.
#[no_mangle]
pub extern "C" fn dsm_atomic_exchange_u64(p: *mut u64, v: u64) -> u64 {
    atomic(p, |dsm| Ok(dsm.atomic_exchange(p, v)?))
}

/// Adds `v` (wrapping) to the 8-byte global word at `p`; returns the previous value (0 on
/// failure).
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_atomic_load_u64`.
#[no_mangle]
pub extern "C" fn dsm_atomic_fetch_add_u64(p: *mut u64, v: u64) -> u64 {
    atomic(p, |dsm| Ok(dsm.atomic_fetch_add(p, v)?))
}

/// Replaces the 8-byte global word at `p` with `desired` if it equals `expected`; returns the
/// previous value either way (equal to `expected` exactly when the swap happened; 0 on failure,
/// so check `dsm_last_error` when 0 is a possible value).
///
/// One-sided. Thread safety: thread-safe.
/// Errors: as `dsm_atomic_load_u64`.
#[no_mangle]
pub extern "C" fn dsm_atomic_compare_exchange_u64(p: *mut u64, expected: u64, desired: u64) -> u64 {
    atomic(p, |dsm| {
        Ok(dsm.atomic_compare_exchange(p, expected, desired)?)
    })
}

fn atomic(p: *const u64, f: impl FnOnce(&Dsm) -> Result<u64, Failure>) -> u64 {
    value_call(0, || {
        with_dsm(|dsm| {
            let addr = p as usize;
            global(dsm, addr, "the word")?;
            if !addr.is_multiple_of(8) {
                return Err(Failure::new(
                    DSM_ERR_MISALIGNED,
                    format!("the word {addr:#x} is not 8-byte aligned"),
                ));
            }
            f(dsm)
        })
    })
}
