//! The state of an `shm` node shared by its user threads and its progress thread: its own
//! control segment, the peers on its host, the mailbox, and taking messages out of the rings.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::config::ShmConfig;
use super::layout::Control;
use super::regions::{PeerRegions, Publication};
use super::ring::{Frame, Reader, Ring};
use crate::error::{Error, Result};
use crate::mailbox::Mailbox;
use crate::region::RegionTable;
use crate::types::{Message, Rank, Tag};

/// A peer is up.
pub(super) const UP: u8 = 0;
/// A peer said goodbye.
pub(super) const CLOSED: u8 = 1;
/// A peer died or broke the protocol.
pub(super) const LOST: u8 = 2;

/// A peer on this host.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) rank: Rank,
    /// Its control segment, mapped here.
    pub(super) control: Control,
    pub(super) pid: u32,
    pub(super) pidfd: OwnedFd,
    pub(super) regions: PeerRegions,
    /// Serialises this process's threads on the ring to the peer (the ring has one producer).
    pub(super) send: Mutex<()>,
    pub(super) state: AtomicU8,
    /// The last heartbeat count seen in its segment, and when it last changed.
    pub(super) beat: Mutex<(u64, std::time::Instant)>,
}

/// What [`Shared::take_frame`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Took {
    /// No whole frame was there.
    Nothing,
    /// A message went to the mailbox.
    Message,
    /// The peer is gone (a goodbye, or a broken frame): nothing more is read from it.
    End,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) rank: Rank,
    pub(super) nodes: usize,
    pub(super) config: ShmConfig,
    pub(super) control: Control,
    pub(super) _control_fd: OwnedFd,
    pub(super) regions: RegionTable,
    pub(super) published: Mutex<HashMap<u64, Publication>>,
    /// Peers on this host, by rank (`None`: this node, or a node elsewhere).
    pub(super) peers: Vec<Option<Peer>>,
    /// This node's reading state of the ring from each peer.
    pub(super) readers: Vec<Mutex<Reader>>,
    pub(super) mailbox: Arc<Mailbox>,
    pub(super) closing: AtomicBool,
    pub(super) stopping: AtomicBool,
}

impl Shared {
    /// The peer `rank`, if it is up.
    pub(super) fn peer(&self, rank: Rank) -> Result<&Peer> {
        if self.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let p = self
            .peers
            .get(rank.index())
            .and_then(Option::as_ref)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "rank {rank} is not a peer on this host (a job of {} nodes)",
                    self.nodes
                ))
            })?;
        match p.state.load(Ordering::Acquire) {
            UP => Ok(p),
            CLOSED => Err(Error::PeerClosed(rank)),
            _ => Err(Error::PeerLost {
                peer: rank,
                reason: "its process exited".into(),
            }),
        }
    }

    /// The peer `rank` when it is on this host and up (and this node is not closing): the
    /// question of [`Shared::peer`] without building the error.
    #[inline]
    pub(super) fn peer_up(&self, rank: Rank) -> Option<&Peer> {
        if self.closing.load(Ordering::Acquire) {
            return None;
        }
        let p = self.peers.get(rank.index())?.as_ref()?;
        (p.state.load(Ordering::Acquire) == UP).then_some(p)
    }

    /// Takes every whole message out of the rings from `from` (every peer: `None`) into the
    /// mailbox. Returns whether anything arrived. Rings another thread is reading are skipped.
    pub(super) fn drain(&self, from: Option<Rank>) -> bool {
        match from {
            Some(r) => self.drain_one(r.index()),
            None => {
                let mut got = false;
                for i in 0..self.peers.len() {
                    got |= self.drain_one(i);
                }
                got
            }
        }
    }

    /// Like [`Shared::drain`], waiting for rings another thread is reading.
    pub(super) fn drain_waiting(&self, from: Option<Rank>) {
        match from {
            Some(r) => {
                self.drain_ring(r.index(), true);
            }
            None => {
                for i in 0..self.peers.len() {
                    self.drain_ring(i, true);
                }
            }
        }
    }

    fn drain_one(&self, i: usize) -> bool {
        self.drain_ring(i, false)
    }

    /// Takes the whole messages out of the ring from peer `i`; `wait`: even if another thread
    /// is reading it (then after that thread).
    fn drain_ring(&self, i: usize, wait: bool) -> bool {
        let Some(peer) = self.peers.get(i).and_then(Option::as_ref) else {
            return false;
        };
        if peer.state.load(Ordering::Acquire) != UP && !wait {
            return false;
        }
        let Some(ring) = self.control.ring(i) else {
            return false;
        };
        // Waiting, the ring may look empty while another thread holds a frame it took out of
        // it and has not delivered yet: the lock is the point after which it has.
        if !wait && !ring.has_data() {
            return false;
        }
        let mut reader = if wait {
            self.readers[i].lock().unwrap_or_else(|e| e.into_inner())
        } else {
            match self.readers[i].try_lock() {
                Ok(r) => r,
                Err(_) => return false,
            }
        };
        let mut got = false;
        loop {
            match self.take_frame(peer, &ring, &mut reader) {
                Took::Nothing => return got,
                Took::Message => got = true,
                Took::End => return true,
            }
        }
    }

    /// Takes the next whole frame out of `ring` (from `peer`, read with `reader`, whose lock
    /// the caller holds): a message goes to the mailbox; a goodbye or a broken frame ends the
    /// peer.
    pub(super) fn take_frame(&self, peer: &Peer, ring: &Ring<'_>, reader: &mut Reader) -> Took {
        match reader.next(ring, self.config.max_message) {
            Ok(None) => Took::Nothing,
            Ok(Some(Frame::Message(tag, data))) => {
                self.mailbox.deliver(Message {
                    source: peer.rank,
                    tag: Tag(tag),
                    data,
                });
                Took::Message
            }
            Ok(Some(Frame::Goodbye)) => {
                self.down(peer, CLOSED, Error::PeerClosed(peer.rank));
                Took::End
            }
            Err(detail) => {
                let reason = format!("broke the shm ring protocol: {detail}");
                let e = Error::PeerLost {
                    peer: peer.rank,
                    reason,
                };
                self.down(peer, LOST, e);
                Took::End
            }
        }
    }

    /// Whether any ring holds bytes.
    pub(super) fn any_data(&self) -> bool {
        (0..self.peers.len()).any(|i| {
            self.peers[i]
                .as_ref()
                .is_some_and(|p| p.state.load(Ordering::Acquire) == UP)
                && self.control.ring(i).is_some_and(|r| r.has_data())
        })
    }

    /// Marks `peer` closed or lost (once) and tells the mailbox.
    pub(super) fn down(&self, peer: &Peer, state: u8, error: Error) {
        if peer
            .state
            .compare_exchange(UP, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            if state == LOST {
                tracing::error!("shm: rank {}: {error}", self.rank);
            }
            self.mailbox.peer_down(peer.rank, error);
        }
    }

    /// Checks the peers' processes; a peer that exited without a goodbye is lost (after its
    /// last messages are taken), and so is one whose heartbeat stopped for the peer timeout.
    pub(super) fn check_liveness(&self) {
        for (i, p) in self.peers.iter().enumerate() {
            let Some(p) = p else { continue };
            if p.state.load(Ordering::Acquire) != UP {
                continue;
            }
            let beat = p.control.heartbeat().load(Ordering::Relaxed);
            let silent = {
                let mut last = p.beat.lock().unwrap_or_else(|e| e.into_inner());
                if last.0 != beat {
                    *last = (beat, std::time::Instant::now());
                }
                last.1.elapsed() > self.config.peer_timeout
            };
            if silent {
                let reason = format!(
                    "silent for more than {:?} (no heartbeat)",
                    self.config.peer_timeout
                );
                self.down(
                    p,
                    LOST,
                    Error::PeerLost {
                        peer: p.rank,
                        reason,
                    },
                );
                continue;
            }
            if super::wake::exited(&p.pidfd) {
                // Whatever it sent before it died (a goodbye among it) is taken first.
                while self.drain_one(i) {}
                let reason = format!("its process {} exited without closing", p.pid);
                let error = Error::PeerLost {
                    peer: p.rank,
                    reason,
                };
                self.down(p, LOST, error);
            }
        }
    }
}
