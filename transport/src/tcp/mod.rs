//! The `tcp` backend: one authenticated TCP connection per pair of nodes that talk, with
//! `TCP_NODELAY`, and a progress thread per node that serves peers' one-sided requests against
//! this node's registered memory.
//!
//! Setting up is two-phase, so that a bootstrap can exchange endpoints in between:
//! [`TcpTransport::prepare`] binds the data listener and yields this node's endpoint;
//! [`PreparedTcp::connect`] takes every node's endpoint and starts the node's threads. A node
//! connects to a peer the first time it needs it and accepts its peers' connections as long as
//! it runs, authenticating both ways (`mesh`; see [`crate::gate`] for how strangers on the data
//! listener are kept from delaying it): start-up costs and descriptors grow with the peers a
//! node talks to, not with the job.

mod config;
mod conn;
mod handle;
mod linger;
mod mesh;
mod outq;
mod progress;
mod read;
mod setup;
mod shared;
mod transport;

pub use config::{TcpConfig, MESSAGE_SPIN};
pub use setup::PreparedTcp;
pub use transport::TcpTransport;
