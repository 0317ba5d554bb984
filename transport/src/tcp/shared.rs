//! The state a tcp node shares between the application threads and the progress thread.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use super::config::TcpConfig;
use super::conn::Conn;
use super::linger;
use crate::error::Error;
use crate::mailbox::Mailbox;
use crate::region::RegionTable;
use crate::types::Rank;

/// State shared by the application threads and the progress thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) rank: Rank,
    pub(super) config: TcpConfig,
    pub(super) regions: RegionTable,
    /// The progress thread's poller (a descriptor of its own, valid after the thread ends):
    /// waiters withdraw and restore read interest through it.
    pub(super) registry: mio::Registry,
    /// Gives lingering connections back to the progress thread (see `linger`).
    pub(super) linger: linger::LingerTimer,
    pub(super) mailbox: Arc<Mailbox>,
    /// Indexed by rank; `None` for this node.
    pub(super) conns: Vec<Option<Arc<Conn>>>,
    /// Whether the last wait for a message outlasted `config.message_spin`: the next one then
    /// spins only `config.spin`.
    pub(super) long_waits: AtomicBool,
    /// Set first by `close`: no new operations.
    pub(super) closing: AtomicBool,
    /// Set by `close` once every goodbye is queued: the progress thread may finish.
    pub(super) stopping: AtomicBool,
    pub(super) start: Instant,
}

impl Shared {
    pub(super) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Takes a connection down and tells everyone waiting on it.
    pub(super) fn peer_down(&self, conn: &Conn, error: Error) {
        conn.mark_down(error);
    }
}
