//! Starting and ending an MPI-style job (MPI-3.1 §8.7 "Startup"; rsmpi's `Universe`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use dsm_core::Dsm;
use transport::Transport;

use crate::comm::{Communicator, Contexts};
use crate::error::{Error, Result};

/// What every communicator and window of a job shares: the runtime and the queues of
/// received point-to-point messages, per communicator context.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dsm: Dsm,
    pub(crate) matching: Mutex<Contexts>,
    /// Signalled (with `matching` held) when messages were matched or a listener left; see
    /// `Communicator::progress`.
    pub(crate) progressed: Condvar,
    next_context: AtomicU32,
    next_window: AtomicU32,
}

impl Shared {
    pub(crate) fn matching(&self) -> MutexGuard<'_, Contexts> {
        self.matching.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The context this rank would give the next communicator it creates.
    pub(crate) fn proposed_context(&self) -> u32 {
        self.next_context.load(Ordering::Relaxed)
    }

    /// Takes `context` (agreed by the members of a new communicator: the highest of their
    /// proposals, so that none of them uses it yet); later contexts come after it.
    pub(crate) fn claim_context(&self, context: u32) {
        self.next_context
            .fetch_max(context.saturating_add(1), Ordering::Relaxed);
    }

    pub(crate) fn new_window_id(&self) -> u32 {
        self.next_window.fetch_add(1, Ordering::Relaxed)
    }
}

/// The job, as `MPI_Init` leaves it: obtained from [`initialize`], it hands out the world
/// communicator and ends with [`Universe::finalize`].
///
/// Thread level: `MPI_THREAD_SERIALIZED` (MPI-3.1 §12.4.3) is what is promised: every object
/// may be used from any thread. Point-to-point calls from several threads at once also work
/// (a thread blocked in a receive does not hold up other threads' sends and receives), but
/// collectives on one communicator must not run concurrently.
#[derive(Debug)]
pub struct Universe {
    shared: Arc<Shared>,
}

/// Joins the job started by `dsmrun -n N` (or any launcher `dsm-core` understands) and maps
/// its global memory: `MPI_Init` (MPI-3.1 §8.7).
///
/// # Collective
/// Every rank must call it.
///
/// # Errors
/// [`Error::Dsm`] when the runtime cannot start (no launcher environment, a peer that never
/// joins, ...).
pub fn initialize() -> Result<Universe> {
    Universe::with_dsm(Dsm::init()?)
}

/// Seconds since an arbitrary point in the past: `MPI_Wtime` (MPI-3.1 §8.6).
pub fn time() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

impl Universe {
    /// Builds the universe over a runtime already started.
    ///
    /// # Collective
    /// Every rank must call it.
    ///
    /// # Errors
    /// None today; kept fallible for future set-up work.
    pub fn with_dsm(dsm: Dsm) -> Result<Universe> {
        let _ = time();
        // An MPI rank receives in loops (ping-pongs, collectives' rounds) and serves peers'
        // one-sided requests in its own calls, as MPI's progress rule allows.
        dsm.node().transport().set_linger(true);
        Ok(Universe {
            shared: Arc::new(Shared {
                dsm,
                matching: Mutex::new(Contexts::default()),
                progressed: Condvar::new(),
                next_context: AtomicU32::new(1),
                next_window: AtomicU32::new(0),
            }),
        })
    }

    /// `MPI_COMM_WORLD`: every rank of the job.
    pub fn world(&self) -> Communicator {
        Communicator::new(Arc::clone(&self.shared), 0)
    }

    /// The shared-memory runtime underneath, for programs that mix MPI-style calls with
    /// direct use of global memory.
    pub fn dsm(&self) -> &Dsm {
        &self.shared.dsm
    }

    /// `MPI_Finalize` (MPI-3.1 §8.7): a final barrier, then the runtime stops.
    ///
    /// # Collective
    /// Every rank must call it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] while communicators or windows of this universe are still
    /// alive (drop or free them first; nothing is stopped then); runtime errors of the final
    /// barrier.
    pub fn finalize(self) -> Result<()> {
        match Arc::try_unwrap(self.shared) {
            Ok(shared) => Ok(shared.dsm.finalize()?),
            Err(_) => Err(Error::InvalidArgument(
                "finalize while communicators or windows are still alive".into(),
            )),
        }
    }
}
