//! Receiving a message where it lies in its ring ([`crate::Transport::recv_lent`]): a thread
//! waiting for a message from one peer with one tag spins on that peer's ring itself and lends
//! the payload of a whole frame to the caller in place, so the bytes are copied once (ring to
//! the caller's buffer) and no buffer, mailbox lock or wake-up is spent on the message.
//!
//! Order is kept as on the mailbox path: the ring's reader lock is taken before anything is
//! read, and every frame taken out of the ring before (by the progress thread, or another
//! thread draining it) went to the mailbox under that lock. So under the lock, the oldest
//! message from the peer with the tag is in the mailbox if there is one there, and otherwise
//! at the head of the ring.

use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use super::ring::{Lend, Ring};
use super::shared::{Peer, Took};
use super::transport::ShmTransport;
use crate::error::{Error, Result};
use crate::types::{Message, Rank, Tag};

/// What a receiver is given: `None` when `take` took the message, the message otherwise.
type Lent = Result<Option<Message>>;

impl ShmTransport {
    /// See [`crate::Transport::recv_lent`]. Lends from the ring only for one peer on this host
    /// and one tag; other receives (and a wait that outlasts the spin) take the mailbox path.
    pub(super) fn lend(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
        take: &mut dyn FnMut(Rank, &[u8]) -> bool,
    ) -> Lent {
        let (Some(rank), Some(tag)) = (from, tag) else {
            return self.recv_then_lend(from, tag, timeout, take);
        };
        let (Some(peer), Some(ring)) = (
            self.shared.peer_up(rank),
            self.shared.control.ring(rank.index()),
        ) else {
            return self.recv_then_lend(from, Some(tag), timeout, take);
        };
        let spin = self
            .shared
            .config
            .message_spin
            .min(timeout.unwrap_or(Duration::MAX));
        let spinners = self.shared.control.spinners();
        let mut counted = false;
        let mut start = None;
        let mut spins = 0u32;
        loop {
            if let Some(r) = self.lend_once(peer, &ring, tag, take) {
                if counted {
                    spinners.fetch_sub(1, Ordering::SeqCst);
                }
                return r;
            }
            if !counted {
                // Senders wake nobody while this thread spins; look once more after saying so.
                spinners.fetch_add(1, Ordering::SeqCst);
                counted = true;
                continue;
            }
            spins += 1;
            // The clock is read only once the wait is not short (a read costs tens of ns here).
            if spins.is_multiple_of(64) && start.get_or_insert_with(Instant::now).elapsed() >= spin
            {
                break;
            }
            if spins.is_multiple_of(1024) {
                // On an oversubscribed host the sender may need this processor.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        spinners.fetch_sub(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        // A long wait: sleep on the mailbox while the progress thread reads the rings.
        let left = timeout.map(|t| t.saturating_sub(start.map_or(Duration::ZERO, |s| s.elapsed())));
        self.recv_then_lend(from, Some(tag), left, take)
    }

    /// The mailbox path: receive, then lend the message's buffer.
    fn recv_then_lend(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
        take: &mut dyn FnMut(Rank, &[u8]) -> bool,
    ) -> Lent {
        let m = crate::api::Transport::recv(self, from, tag, timeout)?;
        Ok(crate::api::lend_received(m, take))
    }

    /// One look for the oldest message from `peer` with `tag`: in the mailbox, then at the head
    /// of its ring (frames of other tags ahead of it go to the mailbox). `None`: not there yet.
    fn lend_once(
        &self,
        peer: &Peer,
        ring: &Ring<'_>,
        tag: Tag,
        take: &mut dyn FnMut(Rank, &[u8]) -> bool,
    ) -> Option<Lent> {
        let mailbox = &self.shared.mailbox;
        let quiet = mailbox.quiet();
        if quiet && !ring.has_data() {
            return None;
        }
        let Ok(mut reader) = self.shared.readers[peer.rank.index()].try_lock() else {
            return None;
        };
        let from = Some(peer.rank);
        let lend_message = |m: Result<Message>, take: &mut dyn FnMut(Rank, &[u8]) -> bool| {
            m.map(|m| crate::api::lend_received(m, take))
        };
        loop {
            if !mailbox.quiet() {
                match mailbox.poll(from, Some(tag)) {
                    Some(Err(Error::PeerClosed(_) | Error::PeerLost { .. })) => {
                        // Its last messages first: they are in the ring, ahead of the news.
                        while self.shared.take_frame(peer, ring, &mut reader) == Took::Message {}
                        let r = mailbox.poll(from, Some(tag))?;
                        return Some(lend_message(r, take));
                    }
                    Some(r) => return Some(lend_message(r, take)),
                    None => {}
                }
            }
            let lent = reader.lend(ring, self.shared.config.max_message, tag.0, |data| {
                take(peer.rank, data)
            });
            match lent {
                Ok(Lend::Empty) => return None,
                Ok(Lend::Taken) => return Some(Ok(None)),
                Ok(Lend::Refused(data)) => {
                    return Some(Ok(Some(Message {
                        source: peer.rank,
                        tag,
                        data,
                    })))
                }
                Ok(Lend::Other) | Err(_) => {
                    // `next` takes (and judges) the frame as every reader does.
                    if self.shared.take_frame(peer, ring, &mut reader) == Took::Nothing {
                        return None;
                    }
                }
            }
        }
    }
}
