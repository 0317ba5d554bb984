//! # dsm-core: page-based distributed shared memory
//!
//! `dsm-core` turns N processes, usually one per host, into one job that shares memory: a global
//! address space mapped at the same address in every process, kept coherent by a home-based,
//! release-consistent protocol with passive homes, over any [`transport::Transport`].
//!
//! - [`Dsm`]: the shared memory of a job: collective allocation with a [`Placement`], a
//!   non-collective heap (`malloc`/`free`), `barrier`, `acquire`/`release`, fair locks in global
//!   memory ([`GlobalLock`]), semaphores and condition variables there ([`GlobalSemaphore`],
//!   [`GlobalCondvar`]), 8-byte atomics at the word's home, statistics;
//!   [`GlobalVec`] is the typed view of an allocation;
//! - [`coherence`]: the protocol as pure logic (page states, directory words, exact diffs,
//!   placement), with no I/O; its state table is `docs/PROTOCOL.md`;
//! - [`space`] and [`fault`]: the global range (one memfd mapped as the application's view and
//!   the runtime's view) and the fault engines (userfaultfd, or `SIGSEGV` + `mprotect`);
//! - [`config`]: the node's settings, from the environment a launcher sets
//!   (`docs/ENVIRONMENT.md` lists every variable);
//! - [`bootstrap`]: rank 0 gathers every node's transport endpoint, authenticating each node
//!   with the job's secret, and broadcasts the table (under `dsmrun`, `mpiexec` or `srun`, or
//!   by hand);
//! - [`node`]: [`Node::init`] joins the job and gives a connected transport, with a watchdog
//!   that stops the node (naming the lost rank) when a peer disappears;
//! - [`collective`]: barrier, broadcast and all-gather over messages;
//! - [`checkpoint`]: coordinated checkpoints of the shared memory ([`Dsm::checkpoint`]) and
//!   restarts from them (`DSM_RESTART=1`, `dsmrun --restart`, [`Dsm::restarted`]);
//! - [`logging`]: the runtime's diagnostics on stderr (`DSM_LOG`), for programs that ask: the
//!   library installs no global subscriber itself.
//!
//! `dsmrun`, the local launcher (N processes, supervised, with a timeout), is the
//! `dsm-launcher` crate.
//!
//! The memory model (sequential consistency for data-race-free programs) is
//! `docs/MEMORY_MODEL.md`.
//!
//! ## Quick start
//!
//! ```no_run
//! use dsm_core::{Dsm, Placement};
//!
//! // Started as `dsmrun -n 4 ./my-program`:
//! let d = Dsm::init()?;
//! let v = d.alloc_vec::<u64>(1024, Placement::Blocked)?; // the same address on every node
//! if d.rank() == 0 {
//!     v.set(7, 42); // an ordinary store into global memory
//! }
//! d.barrier()?; // release, barrier, acquire
//! assert_eq!(v.get(7), 42);
//! d.finalize()?;
//! # Ok::<(), dsm_core::Error>(())
//! ```
//!
//! ## Thread safety
//!
//! `Dsm` is `Send + Sync`: any thread may touch global memory, allocate, lock and use atomics;
//! collective calls are made by one thread per node, in the same order on every node.
//!
//! ## Other launchers, or none
//!
//! The same program starts unchanged under MPICH's `mpiexec` (the ranks find each other
//! through its PMI-1 server: [`bootstrap::pmi`]) and under Slurm's `srun`
//! ([`bootstrap::slurm`]). Without a launcher, set `DSM_RANK`, `DSM_NODES`, `DSM_COORDINATOR`
//! and `DSM_SECRET` by hand on every node (see `docs/ENVIRONMENT.md`), or use
//! [`Node::with_config`]. [`topology`] pins the transport's progress thread where cores allow.

pub mod address;
pub mod alloc;
pub mod bootstrap;
pub mod checkpoint;
pub mod coherence;
pub mod collective;
pub mod config;
pub mod dsm;
pub mod error;
pub mod fault;
pub mod logging;
pub mod node;
pub mod profile;
mod runtime;
pub mod space;
pub mod sparse;
pub mod stats;
mod sync;
pub mod topology;
pub mod typed;
mod uffd;

pub use checkpoint::Epoch;
pub use coherence::placement::Placement;
pub use config::Config;
pub use config::DsmConfig;
pub use dsm::{Dsm, GlobalCondvar, GlobalLock, GlobalSemaphore};
pub use error::{Error, Result};
pub use node::Node;
pub use transport::Rank;
pub use typed::GlobalVec;
