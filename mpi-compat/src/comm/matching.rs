//! Matching point-to-point messages to receives, per communicator context (MPI-3.1 §3.5,
//! "Semantics of Point-to-Point Communication": order and progress): the messages taken off the
//! transport, the posted receives, and the queue of unexpected messages.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

use transport::Message;

use super::{Rank, Status, Tag};
use crate::error::{Error, Result};

/// Bytes of the header in front of every point-to-point payload: the MPI tag.
pub(super) const HEADER: usize = 4;

/// A message taken off the transport and not yet matched.
#[derive(Debug)]
pub(crate) struct Incoming {
    source: usize,
    tag: Tag,
    /// Header and payload, as they arrived.
    data: Vec<u8>,
}

impl Incoming {
    fn matches(&self, source: Option<usize>, tag: Option<Tag>) -> bool {
        source.is_none_or(|s| s == self.source) && tag.is_none_or(|t| t == self.tag)
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.data[HEADER..]
    }

    pub(crate) fn status(&self) -> Status {
        Status {
            source: self.source as Rank,
            tag: self.tag,
            bytes: self.data.len() - HEADER,
        }
    }
}

impl Drop for Incoming {
    /// A large payload's buffer goes back to the transport's pool: the next large message
    /// reuses its pages instead of faulting in new ones.
    fn drop(&mut self) {
        transport::pool::recycle(std::mem::take(&mut self.data));
    }
}

/// The matching state of every communicator context of a process, by context.
pub(crate) type Contexts = FxHashMap<u32, Matching>;

/// A posted receive that no message matched yet.
#[derive(Debug)]
struct Posted {
    id: u64,
    source: Option<usize>,
    tag: Option<Tag>,
}

/// The matching state of one communicator context (MPI-3.1 §3.5 "Semantics of
/// Point-to-Point Communication": order, progress).
#[derive(Debug, Default)]
pub(crate) struct Matching {
    next_id: u64,
    posted: VecDeque<Posted>,
    /// Receives that have their message, by id (a fast hash: ids are this process's own
    /// counter, and this map is consulted several times per message).
    pub(super) matched: FxHashMap<u64, Incoming>,
    /// Messages no receive matched yet, in arrival order.
    unexpected: VecDeque<Incoming>,
    /// The sources (`None`: any) that threads wait for on the network for this context's
    /// receives; see `Communicator::progress`.
    pub(super) listeners: Vec<Option<usize>>,
    /// Threads asleep on `Shared::progressed` for a receive of this context.
    pub(super) waiting: usize,
}

impl Matching {
    /// Posts a receive; it is matched at once against messages already here.
    pub(super) fn post(&mut self, source: Option<usize>, tag: Option<Tag>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(i) = self.unexpected.iter().position(|m| m.matches(source, tag)) {
            if let Some(m) = self.unexpected.remove(i) {
                self.matched.insert(id, m);
                return id;
            }
        }
        self.posted.push_back(Posted { id, source, tag });
        id
    }

    /// Gives a message that arrived to the oldest posted receive that matches it, or queues
    /// it as unexpected (behind the messages that arrived before it).
    pub(super) fn deliver(&mut self, m: Incoming) {
        match self.posted.iter().position(|p| m.matches(p.source, p.tag)) {
            Some(i) => {
                if let Some(p) = self.posted.remove(i) {
                    self.matched.insert(p.id, m);
                }
            }
            None => self.unexpected.push_back(m),
        }
    }

    /// Withdraws a receive (its request was dropped before completion): `MPI_Cancel`
    /// (MPI-3.1 §3.8.4). Returns whether the cancel succeeded.
    ///
    /// A receive that no message matched yet is cancelled: it is as if it was never posted.
    /// One that already has its message cannot be: handing the message to another receive
    /// could let a later message of the same sender, already taken by a later receive, go
    /// ahead of it (MPI-3.1 §3.5, non-overtaking). The cancel fails then, as MPICH's does for
    /// an eager message it matched: the receive counts as complete and its message is
    /// discarded (nothing is written to the buffer: the program may have freed it).
    pub(super) fn cancel(&mut self, id: u64) -> bool {
        if let Some(i) = self.posted.iter().position(|p| p.id == id) {
            self.posted.remove(i);
            return true;
        }
        self.matched.remove(&id).is_none()
    }

    /// Whether a thread receiving from `source` may take messages and wait for the network:
    /// nobody listens for any source, nor for this one (a receive from any source needs that
    /// nobody listens at all).
    pub(super) fn free_to_take(&self, source: Option<usize>) -> bool {
        match source {
            None => self.listeners.is_empty(),
            Some(_) => !self.listeners.iter().any(|l| l.is_none() || *l == source),
        }
    }

    pub(super) fn source_of(&self, id: u64) -> Option<Option<usize>> {
        self.posted.iter().find(|p| p.id == id).map(|p| p.source)
    }

    /// The source and tag of posted receive `id` when the next message from its source that
    /// matches it is its own: no receive posted before it could take a message from that
    /// source (all earlier ones wait for other ranks), and nobody listens for that source.
    /// The receive may then take its message straight from the transport.
    pub(super) fn first_in_line(&self, id: u64) -> Option<(Option<usize>, Option<Tag>)> {
        let at = self.posted.iter().position(|p| p.id == id)?;
        let me = &self.posted[at];
        let earlier_may_take = self
            .posted
            .iter()
            .take(at)
            .any(|p| match (p.source, me.source) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            });
        (!earlier_may_take && self.free_to_take(me.source)).then_some((me.source, me.tag))
    }

    /// Whether a receive from `source` with `tag` may be offered to the transport as a
    /// landing place (`Communicator::irecv_landed`): no message here matches it (it would be
    /// its own), no receive posted before it could take a message from that source (each
    /// would come first; landings posted earlier are the transport's and come first there
    /// too), and nobody listens for that source (a listener may hold a message it took).
    pub(super) fn may_land(&self, source: usize, tag: Option<Tag>) -> bool {
        !self.unexpected.iter().any(|m| m.matches(Some(source), tag))
            && !self
                .posted
                .iter()
                .any(|p| p.source.is_none_or(|s| s == source))
            && self.free_to_take(Some(source))
    }

    /// Removes posted receive `id`, which took its message without this matching state.
    pub(super) fn withdraw(&mut self, id: u64) {
        if let Some(i) = self.posted.iter().position(|p| p.id == id) {
            self.posted.remove(i);
        }
    }
}

/// The MPI tag in the header of a point-to-point message's bytes (`None`: no header).
pub(crate) fn header_tag(data: &[u8]) -> Option<Tag> {
    let h = data.get(..HEADER)?;
    Some(i32::from_le_bytes([h[0], h[1], h[2], h[3]]))
}

/// The payload of a point-to-point message's bytes (after [`header_tag`]'s header).
pub(super) fn payload_of(data: &[u8]) -> &[u8] {
    data.get(HEADER..).unwrap_or_default()
}

/// The message a peer sent, with its MPI tag read from the header.
pub(super) fn decode(msg: Message) -> Result<Incoming> {
    if msg.data.len() < HEADER {
        return Err(Error::Transport(transport::Error::Protocol {
            from: msg.source,
            detail: "point-to-point message without its header".into(),
        }));
    }
    let tag = header_tag(&msg.data).unwrap_or_default();
    Ok(Incoming {
        source: msg.source.index(),
        tag,
        data: msg.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(source: usize, tag: Tag) -> Incoming {
        Incoming {
            source,
            tag,
            data: vec![0; HEADER],
        }
    }

    #[test]
    fn earlier_receives_match_first_and_unexpected_messages_wait() {
        let mut m = Matching::default();
        let any = m.post(None, None);
        let from1 = m.post(Some(1), Some(7));
        m.deliver(msg(1, 7));
        m.deliver(msg(1, 7));
        m.deliver(msg(2, 3));
        assert_eq!(m.matched[&any].source, 1);
        assert_eq!(m.matched[&from1].tag, 7);
        assert_eq!(m.unexpected.len(), 1);
        let late = m.post(Some(2), None);
        assert_eq!(m.matched[&late].source, 2);
        let never = m.post(Some(3), None);
        assert!(m.cancel(never));
        assert!(m.posted.is_empty());
    }

    #[test]
    fn a_receive_that_has_its_message_cannot_be_cancelled() {
        // Sender 1 sends tag 5 then tag 6; r1 (tag 5) and r2 (any tag) take them; r2 completes with tag 6; a later any-tag receive must not get tag 5
        // once r1 is dropped (it would see the sender's messages out of order).
        let mut m = Matching::default();
        let r1 = m.post(Some(1), Some(5));
        let r2 = m.post(Some(1), None);
        m.deliver(msg(1, 5));
        m.deliver(msg(1, 6));
        assert_eq!(m.matched.remove(&r2).map(|x| x.tag), Some(6));
        let r3 = m.post(Some(1), None);
        assert!(!m.cancel(r1), "the cancel of a matched receive succeeded");
        assert!(m.matched.is_empty() && m.unexpected.is_empty());
        m.deliver(msg(1, 7));
        assert_eq!(m.matched[&r3].tag, 7);
        // A receive still waiting for its message is cancelled, and takes nothing.
        let r4 = m.post(Some(1), None);
        assert!(m.cancel(r4));
        m.deliver(msg(1, 8));
        assert_eq!(m.unexpected.len(), 1);
        assert!(m.posted.is_empty() && !m.matched.contains_key(&r4));
    }
}
