//! The state a verbs node shares between the threads that post, the threads that wait and the
//! progress thread: the device's objects, the peers with their queue pairs, registrations.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use super::chunks::{Budget, Chunked, Pinned};
use super::config::VerbsConfig;
use super::control::{Control, Reassembly};
use super::endpoint::PeerEndpoint;
use super::select::Selected;
use super::sendq::{Item, Local, Posting, Scratch, Sq};
use super::sys::{Cq, Path, Pd, Qp, Srq, WrKind};
use crate::error::{Error, RemoteFault, Result};
use crate::mailbox::Mailbox;
use crate::region::Region;
use crate::types::Rank;

/// Work requests of a peer's one-sided send queue.
pub(super) const REQ_DEPTH: u32 = 256;
/// Send slots of a peer's control queue pair (messages, heartbeats), and the receive slots
/// the shared receive queue holds per peer, up to [`SRQ_MAX`].
pub(super) const CTRL_DEPTH: u32 = 32;
/// The most receive slots (of 16 KiB) the shared receive queue holds, whatever the job.
pub(super) const SRQ_MAX: u32 = 256;
pub(super) const INLINE_WANTED: u32 = 128;
pub(super) const RECV_BIT: u64 = 1 << 63;

/// A registered region.
#[derive(Debug)]
pub(super) enum Registered {
    /// One registration of the whole region, dropped before the region it covers.
    Whole {
        /// The registration.
        pinned: Pinned,
        /// The region, kept alive while registered.
        _region: Arc<Region>,
    },
    /// Registered chunk by chunk on first use (see [`super::chunks`]).
    Chunked(Arc<Chunked>),
}

#[derive(Debug, Default)]
pub(super) struct Regions {
    /// By region id.
    pub(super) by_id: HashMap<u64, Registered>,
    /// The region id of a whole registration's rkey.
    pub(super) id_of_rkey: HashMap<u32, u64>,
    /// The region id of a chunked region's number.
    pub(super) id_of_chunked: HashMap<u32, u64>,
    /// The number the next chunked region gets.
    pub(super) next_chunked: u32,
}

/// What this node knows of a peer's chunk keys, and which it has asked for.
#[derive(Debug, Default)]
pub(super) struct KeyCache {
    /// (region number, chunk) -> the rkey, or why the peer refused it (a refusal for want of
    /// memory is kept only until a waiter has read it: the next use asks again).
    pub(super) known: HashMap<(u32, u32), std::result::Result<u32, RemoteFault>>,
    /// Asked, no answer yet.
    pub(super) asked: HashSet<(u32, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    Up,
    Closed,
    Lost,
}

#[derive(Debug)]
pub(super) struct Peer {
    pub(super) rank: Rank,
    /// Our one-sided operations to the peer.
    pub(super) req: Sq,
    /// The peer's one-sided operations to us (we only serve them).
    pub(super) resp: Qp,
    /// Messages, heartbeats and recovery (`None` for this node).
    pub(super) ctrl: Option<Sq>,
    pub(super) send_lock: Mutex<()>,
    pub(super) remote: Mutex<Option<PeerEndpoint>>,
    pub(super) status: Mutex<(Status, Option<Error>)>,
    pub(super) last_recv_ms: AtomicU64,
    pub(super) last_send_ms: AtomicU64,
    pub(super) heard: AtomicBool,
    pub(super) assembly: Mutex<Reassembly>,
    /// The peer's chunk keys (see [`super::chunks`]); `keys_changed` wakes those waiting.
    pub(super) keys: Mutex<KeyCache>,
    pub(super) keys_changed: Condvar,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) rank: Rank,
    pub(super) nodes: usize,
    pub(super) config: VerbsConfig,
    pub(super) sel: Selected,
    pub(super) path: Path,
    pub(super) pd: Arc<Pd>,
    pub(super) cq: Arc<Cq>,
    pub(super) poll_lock: Mutex<()>,
    pub(super) regions: RwLock<Regions>,
    /// Bounds what registrations for users pin (`DSM_RDMA_PIN_MAX`).
    pub(super) budget: Arc<Budget>,
    pub(super) peers: Vec<Peer>,
    pub(super) qpn: HashMap<u32, (usize, bool)>,
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) flush: Scratch,
    /// The receive buffers of every peer's control queue pair, posted to `srq` (slot `i` as
    /// work request `RECV_BIT | i`): a pool whose size does not grow past [`SRQ_MAX`] slots
    /// with the job.
    pub(super) recv: Scratch,
    pub(super) srq: Arc<Srq>,
    pub(super) next_wr: AtomicU64,
    /// Set when closing starts: no more heartbeats.
    pub(super) quiet: AtomicBool,
    pub(super) closing: AtomicBool,
    pub(super) stopping: AtomicBool,
    pub(super) wake: OwnedFd,
    pub(super) start: Instant,
    pub(super) max_inline: usize,
    pub(super) max_transfer: usize,
}

pub(super) fn random_psn() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    u32::from_le_bytes(b) & 0x00ff_ffff
}

impl Shared {
    pub(super) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(super) fn peer_error(&self, p: usize) -> Option<Error> {
        let st = self.peers[p]
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match st.0 {
            Status::Up => None,
            _ => st.1.clone(),
        }
    }

    /// Posts `items` on `sq`, the queue towards peer `p` (see [`Sq::post`]).
    pub(super) fn post_items(&self, p: usize, sq: &Sq, items: Vec<Item>, wait: bool) -> Result<()> {
        let ctx = Posting {
            peer: self.peers[p].rank,
            timeout: self.config.peer_timeout,
            closing: &self.closing,
            max_inline: self.max_inline,
            next_wr: &self.next_wr,
            drive: || {
                self.drive(false);
            },
        };
        sq.post(items, wait, &ctx)
    }

    pub(super) fn endpoint_of(&self, p: usize) -> Option<PeerEndpoint> {
        *self.peers[p]
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one control message to peer `p`.
    pub(super) fn send_ctrl(&self, p: usize, msg: &Control<'_>, wait: bool) -> Result<()> {
        let Some(ctrl) = &self.peers[p].ctrl else {
            return Ok(());
        };
        let bytes = msg.encode();
        let item = Item {
            kind: WrKind::Send,
            local: Local::Bytes(bytes),
            name: "SEND",
            done: None,
            signal: msg.signalled(),
            chained: false,
            continued: false,
        };
        self.post_items(p, ctrl, vec![item], wait)?;
        self.peers[p]
            .last_send_ms
            .store(self.now_ms(), Ordering::Relaxed);
        Ok(())
    }

    pub(super) fn wake_progress(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our own eventfd.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}
