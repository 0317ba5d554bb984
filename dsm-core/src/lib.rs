//! # dsm-core: page-based distributed shared memory
//!
//! `dsm-core` turns N processes, usually one per host, into one job that shares memory. This
//! release holds the foundation the shared memory is built on:
//!
//! - [`config`]: the node's settings, from the environment a launcher sets
//!   (`docs/ENVIRONMENT.md` lists every variable);
//! - [`bootstrap`]: rank 0 gathers every node's transport endpoint, authenticating each node
//!   with the job's secret, and broadcasts the table;
//! - [`node`]: [`Node::init`] joins the job and gives a connected [`transport::Transport`], with a
//!   watchdog that stops the node (naming the lost rank) when a peer disappears;
//! - [`collective`]: barrier, broadcast and all-gather over messages;
//! - [`launcher`]: what `dsmrun` runs: N local processes, supervised, with a timeout.
//!
//! The global address space, the fault engines and the coherence protocol come next, on top of
//! these (see `docs/ARCHITECTURE.md`).
//!
//! ## Quick start
//!
//! ```no_run
//! use dsm_core::Node;
//! use transport::Transport;
//!
//! // Started as `dsmrun -n 4 ./my-program`:
//! let node = Node::init()?;
//! println!("rank {} of {}", node.rank(), node.nodes());
//! node.barrier()?;
//! node.finalize()?;
//! # Ok::<(), dsm_core::Error>(())
//! ```
//!
//! ## Without a launcher
//!
//! Set `DSM_RANK`, `DSM_NODES`, `DSM_COORDINATOR` and `DSM_SECRET` by hand on every node (see
//! `docs/ENVIRONMENT.md`), or use [`Node::with_config`].

pub mod alloc;
pub mod bootstrap;
pub mod coherence;
pub mod collective;
pub mod config;
pub mod dsm;
pub mod error;
pub mod fault;
pub mod launcher;
pub mod node;
pub mod space;
pub mod stats;
mod sync;
pub mod topology;
pub mod typed;
mod uffd;

pub use coherence::placement::Placement;
pub use config::Config;
pub use dsm::{Dsm, DsmConfig, GlobalLock};
pub use error::{Error, Result};
pub use node::Node;
pub use typed::GlobalVec;
