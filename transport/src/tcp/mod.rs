//! The `tcp` backend: one authenticated TCP connection per pair of nodes, with `TCP_NODELAY`,
//! and a progress thread per node that serves peers' one-sided requests against this node's
//! registered memory.
//!
//! Setting up is two-phase, so that a bootstrap can exchange endpoints in between:
//! [`TcpTransport::prepare`] binds the data listener and yields this node's endpoint;
//! [`PreparedTcp::connect`] takes every node's endpoint and builds the full mesh (each node
//! connects to the lower ranks and accepts the higher ones, authenticating both ways; see
//! [`crate::gate`] for how strangers on the data listener are kept from delaying it).

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
