//! A blocking receive that takes its message where the transport holds it
//! ([`transport::Transport::recv_lent`]): the payload is copied once, straight into the
//! receive's buffer, with no message buffer, no queue of this layer and no second copy. Over
//! shared memory the bytes come from the sender's ring.
//!
//! It applies when the receive is first in line for its source: no receive posted before it
//! could take a message from that source, and no other thread listens for it (the rules of
//! [`Communicator::progress`]). Then the next message from that source that matches it is its
//! own, in arrival order; one that does not match (another tag) is delivered to the matching
//! state as usual, and the caller goes on the general way.

use transport::Transport;

use super::matching::{decode, header_tag, payload_of};
use super::{Channel, Communicator, Rank, Status, LISTEN_SLICE};
use crate::datatype::fill;
use crate::error::{Error, Result};

impl Communicator {
    /// Tries to complete posted receive `id` into `buf` by taking its message from the
    /// transport in place, waiting at most one listening slice. `Ok(None)`: it did not apply,
    /// or no message of its own came (one that came for another receive was delivered to the
    /// matching state); the caller then completes the receive with
    /// [`Communicator::progress`], which also reports a lost sender.
    ///
    /// # Errors
    /// [`Error::Truncate`] when the message is longer than `buf` (it is consumed, `buf`
    /// holds its first bytes); a message without its header.
    pub(crate) fn receive_lent(&self, id: u64, buf: &mut [u8]) -> Result<Option<Status>> {
        let tag = self.tag(Channel::PointToPoint);
        let mut all = self.shared.matching();
        let m = all.entry(self.context).or_default();
        let Some((source, want)) = m.first_in_line(id) else {
            return Ok(None);
        };
        // Listening keeps other threads from taking this source's messages meanwhile.
        m.listeners.push(source);
        drop(all);
        let mut got = None;
        let waited = self.transport().recv_lent(
            source.map(|s| transport::Rank(s as u32)),
            Some(tag),
            Some(LISTEN_SLICE),
            &mut |from, data| {
                let Some(t) = header_tag(data).filter(|t| want.is_none_or(|w| w == *t)) else {
                    return false;
                };
                let payload = payload_of(data);
                let n = payload.len().min(buf.len());
                fill(&mut buf[..n], &payload[..n]);
                got = Some(Status {
                    source: from.index() as Rank,
                    tag: t,
                    bytes: payload.len(),
                });
                true
            },
        );
        let mut all = self.shared.matching();
        let m = all.entry(self.context).or_default();
        if let Some(i) = m.listeners.iter().position(|l| *l == source) {
            m.listeners.swap_remove(i);
        }
        if m.waiting > 0 {
            self.shared.progressed.notify_all();
        }
        match waited {
            Ok(None) => {
                m.withdraw(id);
                drop(all);
                // `take` returned true only after it recorded the status.
                let mut st = got.ok_or_else(|| {
                    Error::InvalidArgument("a message was taken without its status".into())
                })?;
                st.source = self.rank_of_job_rank(st.source as usize);
                if st.bytes > buf.len() {
                    return Err(Error::Truncate {
                        got: st.bytes,
                        room: buf.len(),
                    });
                }
                Ok(Some(st))
            }
            Ok(Some(msg)) => {
                m.deliver(decode(msg)?);
                Ok(None)
            }
            // Nothing yet, or an error that the general path meets and reports (it knows the
            // finer cases: a message matched before its sender was lost).
            Err(_) => Ok(None),
        }
    }
}
