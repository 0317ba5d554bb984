//! # mpi-compat: MPI-style programming over the DSM runtime
//!
//! Programs written the MPI way (ranks, tagged messages, collectives, RMA windows) run on the
//! runtime's transport and global memory, with the names an MPI or rsmpi user looks for.
//! Each call's documentation cites the section of the MPI 3.1 standard it follows.
//!
//! ## Quick start
//!
//! ```no_run
//! use mpi_compat::{Op, Window, ANY_SOURCE, ANY_TAG};
//!
//! // Started as `dsmrun -n 4 ./my-program`:
//! let universe = mpi_compat::initialize()?;
//! let world = universe.world();
//! let (rank, size) = (world.rank(), world.size());
//!
//! // Point-to-point (MPI-3.1 chapter 3).
//! if rank == 0 {
//!     for _ in 1..size {
//!         let mut x = [0i64];
//!         let status = world.recv(&mut x, ANY_SOURCE, ANY_TAG)?;
//!         assert_eq!(x[0], i64::from(status.source) * 10);
//!     }
//! } else {
//!     world.send(&[i64::from(rank) * 10], 0, 7)?;
//! }
//!
//! // Collectives (chapter 5).
//! let mut total = [0.0f64];
//! world.all_reduce(&[f64::from(rank)], &mut total, Op::Sum)?;
//!
//! // One-sided (chapter 11): every rank adds into rank 0's counter.
//! let win = Window::allocate(&world, 8, 8)?;
//! win.fence(0)?;
//! win.accumulate(&[1u64], 0, 0, Op::Sum)?;
//! win.fence(0)?;
//! win.free()?;
//! drop(world);
//! universe.finalize()?;
//! # Ok::<(), mpi_compat::Error>(())
//! ```
//!
//! ## What maps to what
//!
//! - Point-to-point messages are the transport's two-sided messages, matched here by source
//!   and tag in MPI order ([`comm`]); sends are eager.
//! - Collectives are message algorithms over the transport ([`collective`]).
//! - RMA windows are global memory, and RMA calls are the transport's one-sided operations on
//!   the home copy of the target's part: a put to rank r is one transport write into r's
//!   registered memory ([`window`] explains the memory models and the synchronisation).
//!
//! ## Thread safety
//!
//! Every type may be used from any thread, and point-to-point calls and waits may be made by
//! several threads at once, on one communicator too (`MPI_THREAD_MULTIPLE`): a thread blocked
//! in a receive holds no lock, and when several threads receive from the same source and tag,
//! each message goes to one of them (the oldest posted receive, MPI-3.1 §3.5). As MPI
//! requires (§5.13), collectives on one communicator are called in the same order on every
//! rank, so never by two threads of a rank at once.
//!
//! ## Without RDMA hardware
//!
//! Nothing changes: the runtime picks the tcp transport, whose progress thread plays the NIC
//! for one-sided operations. `dsmrun -n 2 target/release/osu_latency` runs on any Linux box.
//!
//! ## What is supported
//!
//! - Communicators: the world ([`Universe::world`]), [`Communicator::dup`] and
//!   [`Communicator::split`] (sub-communicators with their own ranks for point-to-point and
//!   collectives; windows need a communicator of the whole job).
//! - Point-to-point: blocking, non-blocking ([`Request`]: [`Request::wait`],
//!   [`Request::test`], [`wait_all`], [`test_all`], [`wait_any`], [`test_any`]),
//!   [`ANY_SOURCE`], [`ANY_TAG`], [`PROC_NULL`], `sendrecv`; dropping an unfinished receive
//!   cancels it, or, when a message already matched it, completes it and discards the message
//!   (MPI-3.1 §3.8.4: such a cancel fails, as in MPICH).
//! - Collectives: barrier, broadcast, reduce, all-reduce, gather, all-gather, scatter,
//!   all-to-all.
//! - One-sided: windows allocated, created over global or registered memory, dynamic (with
//!   attach/detach); put, get, accumulate, get-accumulate, fetch-and-op, compare-and-swap,
//!   request-based `rput`/`rget`; fence, lock/unlock, lock_all/unlock_all, flush,
//!   flush_local, sync, post/start/complete/wait/test. RMA calls to [`PROC_NULL`] do nothing.
//!
//! ## Errors
//!
//! Every call returns [`Result`]; [`Error::class`] gives the MPI error class. Invalid ranks,
//! tags, counts, datatypes, operations, windows and displacements, and accesses outside a
//! window (for a dynamic window: outside the memory its target attached), are refused before
//! anything is sent. A call that fails never leaves another rank waiting for it: a failing
//! synchronisation call still releases its locks and notifies its peers, and the collective
//! window calls make one rank's failure every rank's ([`Error::FailedElsewhere`]). A rank
//! whose own arguments to a collective are wrong (a buffer of the wrong length, an operation
//! its type does not have) still takes part with what it can send, and fails afterwards.
//!
//! One exception: a rooted collective (broadcast, reduce, gather, scatter) given an invalid
//! root fails at once with [`Error::InvalidRank`]. When every rank passes the same invalid
//! root, every rank fails and none waits; when only some do, they cannot take part (no tree or
//! exchange can be built around a rank that does not exist, and they cannot tell which root
//! the others use), so the ranks given a valid root wait for them, as they would for a rank
//! that never makes the call (an erroneous program, MPI-3.1 §5.1).

pub mod collective;
pub mod comm;
pub mod datatype;
pub mod error;
pub mod group;
pub mod request;
pub mod universe;
pub mod window;

pub use comm::{
    Communicator, Rank, Source, Status, Tag, TagMatch, ANY_SOURCE, ANY_TAG, PROC_NULL, TAG_UB,
};
pub use datatype::{Equivalence, Op};
pub use error::{Error, ErrorClass, Result};
pub use group::Group;
pub use request::{
    test_all, test_any, wait_all, wait_any, wait_any_in_place, Request, RequestFailed,
};
pub use universe::{initialize, time, Universe};
pub use window::{
    LockType, Window, MODE_NOCHECK, MODE_NOPRECEDE, MODE_NOPUT, MODE_NOSTORE, MODE_NOSUCCEED,
};
