//! This node's statistics of the shared memory.

use std::ffi::c_int;
use std::io;

use dsm_core::stats::Snapshot;

use crate::runtime::{status_call, with_dsm};
use crate::status::{Failure, DSM_ERR_IO};

/// This node's counters since `dsm_init` or the last `dsm_stats_reset` (times in nanoseconds).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct dsm_stats_t {
    /// Read faults served (with the first touches of prefetched pages).
    pub read_faults: u64,
    /// Write faults served.
    pub write_faults: u64,
    /// Pages copied from their home.
    pub pages_fetched: u64,
    /// Pages fetched ahead of a sequential read pattern.
    pub prefetched: u64,
    /// Prefetched pages the application touched (each once, at its first touch).
    pub prefetched_used: u64,
    /// Prefetched pages invalidated, evicted or freed before any touch.
    pub prefetched_wasted: u64,
    /// Bytes of diffs written to homes.
    pub bytes_written_home: u64,
    /// Pages whose diff was written home.
    pub diffs: u64,
    /// Cached pages invalidated at acquires.
    pub invalidations: u64,
    /// Cached pages evicted to bound the cache.
    pub evictions: u64,
    /// Notifications sent to other nodes about new writers.
    pub notifications: u64,
    /// Locks taken.
    pub lock_acquires: u64,
    /// Nanoseconds spent taking locks.
    pub lock_wait_ns: u64,
    /// Barriers passed.
    pub barriers: u64,
    /// Nanoseconds spent in barriers.
    pub barrier_ns: u64,
    /// Nanoseconds spent serving faults.
    pub fault_ns: u64,
    /// Nanoseconds spent in releases (writing diffs home).
    pub release_ns: u64,
    /// Nanoseconds spent in acquires (invalidating).
    pub acquire_ns: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Pages whose content checkpoints wrote (an incremental one writes only changed pages).
    pub checkpoint_pages: u64,
    /// Bytes of this node's own checkpoint images written.
    pub checkpoint_bytes: u64,
    /// Nanoseconds spent in checkpoints.
    pub checkpoint_ns: u64,
}

impl From<Snapshot> for dsm_stats_t {
    fn from(s: Snapshot) -> dsm_stats_t {
        // Destructured, so that a counter added to the runtime fails to compile here until the
        // C struct has it too.
        let Snapshot {
            read_faults,
            write_faults,
            pages_fetched,
            prefetched,
            prefetched_used,
            prefetched_wasted,
            // Not in the C struct: a field more would change its size under programs built
            // against an earlier `dsm.h` (the Rust API and `DSM_STATS=1` show it).
            home_written_ahead: _,
            bytes_written_home,
            diffs,
            invalidations,
            evictions,
            notifications,
            lock_acquires,
            lock_wait_ns,
            barriers,
            barrier_ns,
            fault_ns,
            release_ns,
            acquire_ns,
            checkpoints,
            checkpoint_pages,
            checkpoint_bytes,
            checkpoint_ns,
        } = s;
        dsm_stats_t {
            read_faults,
            write_faults,
            pages_fetched,
            prefetched,
            prefetched_used,
            prefetched_wasted,
            bytes_written_home,
            diffs,
            invalidations,
            evictions,
            notifications,
            lock_acquires,
            lock_wait_ns,
            barriers,
            barrier_ns,
            fault_ns,
            release_ns,
            acquire_ns,
            checkpoints,
            checkpoint_pages,
            checkpoint_bytes,
            checkpoint_ns,
        }
    }
}

/// Copies this node's counters into `*out`.
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (NULL), `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
///
/// # Safety
/// `out` must be NULL or valid for writing one `dsm_stats_t`.
#[no_mangle]
pub unsafe extern "C" fn dsm_stats_get(out: *mut dsm_stats_t) -> c_int {
    status_call(|| {
        if out.is_null() {
            return Err(Failure::invalid("the output pointer is NULL"));
        }
        with_dsm(|dsm| {
            // SAFETY: `out` is not NULL and the caller guarantees it is writable.
            unsafe { out.write(dsm.stats().into()) };
            Ok(())
        })
    })
}

/// Zeroes this node's counters.
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_stats_reset() -> c_int {
    status_call(|| {
        with_dsm(|dsm| {
            dsm.reset_stats();
            Ok(())
        })
    })
}

/// Writes this node's counters, one per line, to the file descriptor `fd` (for example 2, the
/// standard error). The descriptor stays open.
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (negative `fd`), `DSM_ERR_IO` (the write failed, e.g. a
/// closed descriptor), `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_stats_print(fd: c_int) -> c_int {
    status_call(|| {
        if fd < 0 {
            return Err(Failure::invalid(format!("{fd} is not a file descriptor")));
        }
        with_dsm(|dsm| {
            let report = dsm.stats().report(dsm.rank()) + "\n";
            write_all(fd, report.as_bytes()).map_err(|e| {
                Failure::new(DSM_ERR_IO, format!("write the statistics to fd {fd}: {e}"))
            })
        })
    })
}

/// Writes all of `bytes` to the caller's descriptor `fd` with write(2), which (unlike a `File`
/// made from it) claims no ownership: a closed or invalid descriptor is just an EBADF error.
fn write_all(fd: c_int, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a live slice, valid for reads of its length; write(2) on any
        // integer descriptor is memory-safe (a bad one fails with EBADF).
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match n {
            n if n > 0 => bytes = &bytes[n as usize..],
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
