//! The state a tcp node shares between the application threads, the progress thread and the
//! acceptor thread.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Instant;

use super::config::TcpConfig;
use super::conn::Conn;
use super::linger;
use crate::error::{Error, Result};
use crate::mailbox::Mailbox;
use crate::region::RegionTable;
use crate::types::Rank;

/// Whether this node is making a connection to a peer (see `mesh`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dial {
    /// Nobody here is connecting to the peer.
    #[default]
    Idle,
    /// A thread of this node is connecting to the peer, or waiting for the peer's own
    /// connection after a crossing (see `mesh::dial`).
    Dialing,
}

/// One peer's connection, made the first time either side needs it.
#[derive(Debug, Default)]
pub(super) struct Slot {
    /// Set once, by whichever side's connection was admitted; never replaced (a lost peer's
    /// connection stays, down).
    pub(super) conn: OnceLock<Arc<Conn>>,
    /// Taken while deciding about a connection to this peer (ours or theirs).
    pub(super) dial: Mutex<Dial>,
    /// Signalled when `conn` is set.
    pub(super) made: Condvar,
}

/// State shared by the application threads and the progress thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) rank: Rank,
    pub(super) config: TcpConfig,
    pub(super) regions: RegionTable,
    /// The progress thread's poller (a descriptor of its own, valid after the thread ends):
    /// waiters withdraw and restore read interest through it, and new connections register.
    pub(super) registry: mio::Registry,
    /// Gives lingering connections back to the progress thread (see `linger`).
    pub(super) linger: linger::LingerTimer,
    /// Whether connections linger after a wait that got what it waited for
    /// (`Transport::set_linger`); off, they go back to the progress thread at once.
    pub(super) linger_after_waits: AtomicBool,
    pub(super) mailbox: Arc<Mailbox>,
    /// Every node's data listener, indexed by rank.
    pub(super) endpoints: Vec<SocketAddr>,
    /// Indexed by rank; this node's own slot stays empty.
    pub(super) conns: Vec<Slot>,
    /// How many connections have been made: the progress thread looks again at `conns` when
    /// it changes.
    pub(super) opened: AtomicUsize,
    /// Whether the last wait for a message outlasted `config.message_spin`: the next one then
    /// spins only `config.spin`.
    pub(super) long_waits: AtomicBool,
    /// Set first by `close`: no new operations, no new connections.
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

    /// The connection to `peer`, if one has been made.
    pub(super) fn conn(&self, peer: usize) -> Option<&Arc<Conn>> {
        self.conns.get(peer).and_then(|s| s.conn.get())
    }

    /// Every connection made so far.
    pub(super) fn open_conns(&self) -> Vec<&Arc<Conn>> {
        self.conns.iter().filter_map(|s| s.conn.get()).collect()
    }

    /// Makes `stream` (authenticated, answered) the connection to `peer`: non-blocking, with
    /// the progress thread watching it. The caller holds the slot's `dial` lock and has seen
    /// the slot empty.
    pub(super) fn install(&self, peer: Rank, stream: std::net::TcpStream) -> Result<&Arc<Conn>> {
        stream
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring a connection", e))?;
        let read_fd = std::os::fd::AsFd::as_fd(&stream)
            .try_clone_to_owned()
            .map_err(|e| Error::io("duplicating a connection's descriptor", e))?;
        let conn = Arc::new(Conn::new(
            peer,
            mio::net::TcpStream::from_std(stream),
            read_fd,
            Arc::clone(&self.mailbox),
            self.config.max_payload,
            self.now_ms(),
        ));
        // In the slot before the poller watches it: the progress thread finds a connection
        // by its token there, and an event it cannot place would be lost (edge-triggered).
        let slot = &self.conns[peer.index()];
        if let Err(ours) = slot.conn.set(conn) {
            // Never with the caller's lock and look (see above); were it to happen, the pair's
            // connection stays, watched once, and this one closes.
            drop(ours);
            return slot.conn.get().ok_or(Error::Closed);
        }
        let conn = slot.conn.get().ok_or(Error::Closed)?;
        self.opened.fetch_add(1, Ordering::AcqRel);
        slot.made.notify_all();
        if let Err(e) = conn.watch(&self.registry) {
            let err = Error::io("registering a connection with the poller", e);
            conn.mark_down(err.clone());
            return Err(err);
        }
        Ok(conn)
    }
}
