//! Received two-sided messages, matched by source and tag, as MPI matches them: the oldest
//! message that matches is taken, so messages from one source with one tag keep their order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::types::{Message, Rank, Tag};

#[derive(Debug)]
struct State {
    queue: VecDeque<Message>,
    down: Vec<Option<Error>>,
    /// The first peer lost, in time: the root cause to report.
    first_lost: Option<Error>,
    closed: bool,
}

/// The per-node queue of received messages.
#[derive(Debug)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
    arrived: Condvar,
    events: AtomicU64,
    spin: Duration,
}

impl Mailbox {
    pub(crate) fn new(nodes: usize, spin: Duration) -> Self {
        Mailbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                down: vec![None; nodes],
                first_lost: None,
                closed: false,
            }),
            arrived: Condvar::new(),
            events: AtomicU64::new(0),
            spin,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.events.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_all();
    }

    /// Queues a message that arrived.
    pub(crate) fn deliver(&self, msg: Message) {
        self.lock().queue.push_back(msg);
        self.notify();
    }

    /// Records that `peer` is gone: receives that can only be satisfied by it fail with `error`.
    pub(crate) fn peer_down(&self, peer: Rank, error: Error) {
        let mut state = self.lock();
        if matches!(error, Error::PeerLost { .. }) && state.first_lost.is_none() {
            state.first_lost = Some(error.clone());
        }
        if let Some(slot) = state.down.get_mut(peer.index()) {
            slot.get_or_insert(error);
        }
        drop(state);
        self.notify();
    }

    /// Wakes every receiver with [`Error::Closed`].
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify();
    }

    /// Blocks until a peer is lost (returns its [`Error::PeerLost`]) or the mailbox is closed
    /// (returns [`Error::Closed`]).
    pub(crate) fn wait_failure(&self) -> Error {
        let mut state = self.lock();
        loop {
            if let Some(e) = &state.first_lost {
                return e.clone();
            }
            if state.closed {
                return Error::Closed;
            }
            state = self.arrived.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes the oldest message matching `from` and `tag` (`None` matches any).
    pub(crate) fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        let start = Instant::now();
        let deadline = timeout.map(|t| start + t);
        // Spin while nothing new arrives, to avoid the cost of sleeping on a short wait.
        loop {
            let seen = self.events.load(Ordering::SeqCst);
            if let Some(r) = self.try_take(&mut self.lock(), from, tag) {
                return r;
            }
            if start.elapsed() >= self.spin {
                break;
            }
            while self.events.load(Ordering::SeqCst) == seen && start.elapsed() < self.spin {
                std::hint::spin_loop();
            }
        }
        let mut state = self.lock();
        loop {
            if let Some(r) = self.try_take(&mut state, from, tag) {
                return r;
            }
            state = match deadline {
                None => self.arrived.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout(format!(
                            "no message from {} with tag {} within {:?}",
                            from.map_or("any rank".to_string(), |r| format!("rank {r}")),
                            tag.map_or("any".to_string(), |t| t.0.to_string()),
                            timeout.unwrap_or_default()
                        )));
                    }
                    self.arrived
                        .wait_timeout(state, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Takes a matching message if one is there (or the error that ends the wait), without
    /// waiting.
    pub(crate) fn poll(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<Message>> {
        self.try_take(&mut self.lock(), from, tag)
    }

    fn try_take(
        &self,
        state: &mut State,
        from: Option<Rank>,
        tag: Option<Tag>,
    ) -> Option<Result<Message>> {
        let pos = state
            .queue
            .iter()
            .position(|m| from.is_none_or(|f| f == m.source) && tag.is_none_or(|t| t == m.tag));
        if let Some(i) = pos {
            return state.queue.remove(i).map(Ok);
        }
        if state.closed {
            return Some(Err(Error::Closed));
        }
        match from {
            Some(f) => state.down.get(f.index()).and_then(|d| d.clone()).map(Err),
            // Any source: only a lost peer breaks the job; one that closed in order does not.
            None => state
                .down
                .iter()
                .flatten()
                .find(|e| matches!(e, Error::PeerLost { .. }))
                .cloned()
                .map(Err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(source: u32, tag: u64, b: u8) -> Message {
        Message {
            source: Rank(source),
            tag: Tag(tag),
            data: vec![b],
        }
    }

    #[test]
    fn matches_by_source_and_tag_in_order() {
        let m = Mailbox::new(3, Duration::ZERO);
        m.deliver(msg(1, 5, 1));
        m.deliver(msg(2, 5, 2));
        m.deliver(msg(1, 6, 3));
        m.deliver(msg(1, 5, 4));
        let t = Some(Duration::from_millis(1));
        assert_eq!(
            m.recv(Some(Rank(1)), Some(Tag(6)), t).unwrap().data,
            vec![3]
        );
        assert_eq!(m.recv(Some(Rank(1)), None, t).unwrap().data, vec![1]);
        assert_eq!(m.recv(None, Some(Tag(5)), t).unwrap().data, vec![2]);
        assert_eq!(m.recv(None, None, t).unwrap().data, vec![4]);
        assert!(matches!(m.recv(None, None, t), Err(Error::Timeout(_))));
    }

    #[test]
    fn lost_peer_fails_waiting_receivers() {
        let m = Mailbox::new(2, Duration::ZERO);
        m.peer_down(
            Rank(1),
            Error::PeerLost {
                peer: Rank(1),
                reason: "reset".into(),
            },
        );
        assert!(matches!(
            m.recv(Some(Rank(1)), None, None),
            Err(Error::PeerLost { .. })
        ));
        assert!(matches!(
            m.recv(None, None, None),
            Err(Error::PeerLost { .. })
        ));
    }
}
