//! The `shm` backend: nodes on the same host reach each other's memory through shared mappings.
//!
//! - **Regions.** Every region this crate allocates is a sealed `memfd` ([`crate::Region`]); the
//!   global range of the runtime is one too. Registering a region publishes, in the node's
//!   *control segment*, which file holds it; a peer on the same host opens that file through
//!   `/proc/<pid>/fd/<n>` (checking its identity), maps it once and keeps the mapping. One-sided
//!   reads and writes are then `memcpy`s, and remote atomics are CPU atomics on the shared word,
//!   coherent with the owner's own atomics ([`crate::Capabilities::atomics_coherent_with_cpu`]).
//!   Every access is bounds-checked against the published length; a withdrawn key is refused
//!   with [`crate::RemoteFault::BadKey`]. Memory the crate did not allocate and that is not a
//!   shared file mapping cannot be shared: operations on it fail with
//!   [`crate::RemoteFault::Unsupported`] (the per-peer transport of the runtime sends them over
//!   tcp instead).
//! - **Messages.** One single-producer, single-consumer ring per ordered pair of nodes, in the
//!   receiver's control segment, with no lock in shared memory: a peer killed mid-message leaves
//!   nothing locked. A thread waiting for a message spins on the rings first; meanwhile senders
//!   make no system call. Only when the receiver's progress thread sleeps does a sender wake it
//!   with a `futex` (see `wake.rs`).
//! - **Failure detection.** Each node watches its peers' processes with a `pidfd`: a peer that
//!   exits without closing is reported as [`crate::Error::PeerLost`] within
//!   [`ShmConfig::liveness_period`].
//! - **Hosts** are told apart by [`host_id`] (boot id and host name), which travels in the
//!   endpoint.
//!
//! The ring and segment formats are in `docs/PROTOCOL.md`.

mod config;
mod fast;
mod host;
mod layout;
mod lend;
mod progress;
mod regions;
mod ring;
mod setup;
mod shared;
mod transport;
mod wake;

pub use config::ShmConfig;
pub use host::host_id;
pub(crate) use setup::parse_all;
pub use setup::PreparedShm;
pub use transport::ShmTransport;
