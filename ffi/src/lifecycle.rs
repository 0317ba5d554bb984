//! Starting and stopping the runtime, and who this node is.

use std::ffi::{c_char, c_int};
use std::sync::OnceLock;
use std::time::Instant;

use dsm_core::Dsm;

use crate::runtime::{self, status_call, value_call, with_dsm};
use crate::signals;
use crate::status::Failure;

/// Joins the job and maps the global memory: reads the environment the launcher (`dsmrun`,
/// `mpiexec`, or a hand-written one, see `docs/ENVIRONMENT.md`) sets for this process.
///
/// `argc` and `argv` may be NULL; the runtime takes no command-line arguments and changes
/// neither. If `SIGPIPE` has its default action, it is set to be ignored: a peer that closes a
/// connection must give an error, not kill the process.
///
/// Collective: every process of the job calls it once, before any other `dsm_` call except
/// `dsm_wtime`, `dsm_strerror`, `dsm_last_error`, `dsm_last_error_message` and
/// `dsm_initialized`.
/// Thread safety: call it from one thread.
/// Errors: `DSM_ERR_ALREADY_INITIALIZED`, `DSM_ERR_FINALIZED`, `DSM_ERR_CONFIG` (not started by a
/// launcher, bad settings), `DSM_ERR_BOOTSTRAP`, `DSM_ERR_TRANSPORT`, `DSM_ERR_TIMEOUT`,
/// `DSM_ERR_IO`.
#[no_mangle]
pub extern "C" fn dsm_init(argc: *mut c_int, argv: *mut *mut *mut c_char) -> c_int {
    // The arguments are accepted for the MPI-like signature and not read.
    let _ = (argc, argv);
    status_call(|| {
        epoch();
        // The C program's entry: it cannot install a Rust subscriber, so DSM_LOG works here.
        dsm_core::logging::init();
        runtime::initialize(|| {
            signals::ignore_sigpipe()?;
            Dsm::init().map_err(Failure::from)
        })
    })
}

/// Leaves the job: waits for every node, then releases the global memory and the connections.
/// Global pointers are invalid afterwards; the runtime cannot be initialised again.
///
/// Collective: every node calls it once, after its last use of global memory.
/// Thread safety: call it from one thread, when no other thread uses the runtime.
/// Errors: `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`, `DSM_ERR_PEER_LOST`,
/// `DSM_ERR_TRANSPORT`.
#[no_mangle]
pub extern "C" fn dsm_finalize() -> c_int {
    status_call(runtime::finalize)
}

/// 1 while the runtime is running (between `dsm_init` and `dsm_finalize`), 0 otherwise.
///
/// Thread safety: thread-safe. Never fails.
#[no_mangle]
pub extern "C" fn dsm_initialized() -> c_int {
    value_call(0, || Ok(c_int::from(runtime::is_running())))
}

/// This node's rank, from 0 to `dsm_nodes() - 1`; a negative status on failure.
///
/// Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_rank() -> c_int {
    counted(|dsm| dsm.rank())
}

/// The number of nodes in the job; a negative status on failure.
///
/// Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_nodes() -> c_int {
    counted(|dsm| dsm.nodes())
}

/// Seconds elapsed since a fixed moment in this process's past (its first `dsm_` call), from a
/// monotonic clock, with sub-microsecond resolution: subtract two readings to time something.
/// Like `MPI_Wtime`, the clock is per process, not synchronised across nodes.
///
/// Thread safety: thread-safe; usable before `dsm_init`. Never fails.
#[no_mangle]
pub extern "C" fn dsm_wtime() -> f64 {
    value_call(0.0, || Ok(epoch().elapsed().as_secs_f64()))
}

/// The page size of the coherence protocol in bytes: the unit of transfer and of placement.
///
/// Thread safety: thread-safe; usable before `dsm_init`. Never fails.
#[no_mangle]
pub extern "C" fn dsm_page_size() -> usize {
    dsm_core::space::PAGE
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A rank or node count as a C `int`, or the status of the failure.
fn counted(f: impl FnOnce(&Dsm) -> usize) -> c_int {
    let mut status = 0;
    let n = value_call(-1, || {
        with_dsm(|dsm| Ok(f(dsm) as c_int)).inspect_err(|e| status = e.status)
    });
    if n < 0 {
        status
    } else {
        n
    }
}
