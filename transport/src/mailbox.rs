//! Received two-sided messages, matched by source and tag, as MPI matches them: the oldest
//! message that matches is taken, so messages from one source with one tag keep their order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::landing::Offer;
use crate::types::{Message, Rank, Tag};

#[derive(Debug)]
struct State {
    queue: VecDeque<Message>,
    down: Vec<Option<Error>>,
    /// The first peer lost, in time: the root cause to report.
    first_lost: Option<Error>,
    closed: bool,
    /// Receivers asleep on the condition variable: deliveries skip the wake-up system call
    /// when there are none.
    sleepers: usize,
    /// Landing places offered for messages not arrived yet, in the order offered
    /// (`crate::landing`).
    landings: Vec<Offer>,
}

/// The per-node queue of received messages.
#[derive(Debug)]
pub(crate) struct Mailbox {
    state: Mutex<State>,
    arrived: Condvar,
    /// Where [`Mailbox::wait_failure`] sleeps: told of lost peers and closing only, so that a
    /// watchdog is not woken by every message.
    failed: Condvar,
    events: AtomicU64,
    /// Messages queued (written under the lock): [`Mailbox::quiet`] reads it without the lock.
    queued: AtomicUsize,
    /// Set (for good) once a peer is down or the mailbox is closed.
    troubled: AtomicBool,
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
                sleepers: 0,
                landings: Vec::new(),
            }),
            arrived: Condvar::new(),
            failed: Condvar::new(),
            events: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            troubled: AtomicBool::new(false),
            spin,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.events.fetch_add(1, Ordering::SeqCst);
        self.arrived.notify_all();
        self.failed.notify_all();
    }

    /// Counts deliveries and failures: a spinning receiver looks again when it moves.
    pub(crate) fn events(&self) -> u64 {
        self.events.load(Ordering::SeqCst)
    }

    /// Keeps `offer` until a message takes it, unless a queued message would: that one is
    /// older, and its receiver takes it from the queue (the offer comes back). It comes back
    /// too when its peer is down or the mailbox is closed (the receiver then learns why the
    /// usual way).
    pub(crate) fn offer(&self, offer: Offer) -> std::result::Result<(), Offer> {
        let mut state = self.lock();
        let taken = state
            .queue
            .iter()
            .any(|m| offer.takes(m.source, m.tag, &m.data));
        let down = state
            .down
            .get(offer.from.index())
            .is_none_or(|d| d.is_some());
        if taken || down || state.closed {
            return Err(offer);
        }
        state.landings.push(offer);
        Ok(())
    }

    /// Withdraws landing `id` if no message took it yet (it then writes nothing); whether it
    /// was withdrawn.
    pub(crate) fn withdraw(&self, id: u64) -> bool {
        let mut state = self.lock();
        let at = state.landings.iter().position(|o| o.id == id);
        // Dropped unused: its completion fails, and nobody waits for it.
        at.map(|i| state.landings.remove(i)).is_some()
    }

    /// Takes the first landing offered for a message from `from` with `tag` whose payload
    /// starts with `start`.
    pub(crate) fn claim(&self, from: Rank, tag: Tag, start: &[u8]) -> Option<Offer> {
        let mut state = self.lock();
        claim(&mut state, from, tag, start)
    }

    /// Delivers a message whose payload is still in the reader's buffer: into its landing
    /// place when one takes it (one copy), else into a buffer of its own, queued.
    pub(crate) fn deliver_slice(&self, from: Rank, tag: Tag, payload: &[u8]) {
        if let Some(offer) = self.claim(from, tag, payload) {
            offer.fill(payload);
            self.landed();
            return;
        }
        let mut data = crate::pool::buffer(payload.len());
        data.extend_from_slice(payload);
        // A landing offered meanwhile takes it there.
        self.deliver(Message {
            source: from,
            tag,
            data,
        });
    }

    /// Tells threads asleep in [`Mailbox::sleep_until_landed`] that a landing finished
    /// (called after it finished).
    pub(crate) fn landed(&self) {
        let state = self.lock();
        self.events.fetch_add(1, Ordering::SeqCst);
        if state.sleepers > 0 {
            self.arrived.notify_all();
        }
    }

    /// Sleeps (without spinning) until `done` holds, a landing finishes and it holds then, or
    /// `timeout` passes.
    pub(crate) fn sleep_until_landed(&self, done: &dyn Fn() -> bool, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !done() && !state.closed && Instant::now() < deadline {
            state = self.sleep(state, Some(deadline));
        }
    }

    /// Queues a message that arrived (or places it, when a landing takes it).
    pub(crate) fn deliver(&self, msg: Message) {
        let mut state = self.lock();
        if let Some(offer) = claim(&mut state, msg.source, msg.tag, &msg.data) {
            drop(state);
            offer.fill(&msg.data);
            crate::pool::recycle(msg.data);
            self.landed();
            return;
        }
        state.queue.push_back(msg);
        self.queued.store(state.queue.len(), Ordering::Release);
        // Sleepers count themselves under the lock before they look at the queue, so one that
        // has not counted itself yet will see this message.
        let sleeping = state.sleepers > 0;
        drop(state);
        self.events.fetch_add(1, Ordering::SeqCst);
        if sleeping {
            self.arrived.notify_all();
        }
    }

    /// Records that `peer` is gone: receives that can only be satisfied by it fail with `error`.
    pub(crate) fn peer_down(&self, peer: Rank, error: Error) {
        let mut state = self.lock();
        if matches!(error, Error::PeerLost { .. }) && state.first_lost.is_none() {
            state.first_lost = Some(error.clone());
        }
        if let Some(slot) = state.down.get_mut(peer.index()) {
            slot.get_or_insert(error.clone());
        }
        let (lost, kept) = std::mem::take(&mut state.landings)
            .into_iter()
            .partition(|o| o.from == peer);
        state.landings = kept;
        self.troubled.store(true, Ordering::Release);
        drop(state);
        for o in lost {
            o.fail(error.clone());
        }
        self.notify();
    }

    /// Wakes every receiver with [`Error::Closed`].
    pub(crate) fn close(&self) {
        let landings = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.landings)
        };
        for o in landings {
            o.fail(Error::Closed);
        }
        self.troubled.store(true, Ordering::Release);
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
            state = self.failed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Sleeps on the condition variable, counted as a sleeper, at most until `deadline`.
    fn sleep<'a>(
        &'a self,
        mut state: std::sync::MutexGuard<'a, State>,
        deadline: Option<Instant>,
    ) -> std::sync::MutexGuard<'a, State> {
        state.sleepers += 1;
        let mut state = match deadline {
            None => self.arrived.wait(state).unwrap_or_else(|e| e.into_inner()),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                self.arrived
                    .wait_timeout(state, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
        state.sleepers -= 1;
        state
    }

    /// Takes the oldest message matching `from` and `tag` (`None` matches any), spinning for
    /// a while before it sleeps.
    pub(crate) fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        self.spin_then_wait(from, tag, timeout, take)?
    }

    /// Waits until a message matching `from` and `tag` is queued, without taking it, spinning
    /// for a while before it sleeps.
    pub(crate) fn await_message(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.spin_then_wait(from, tag, timeout, |_, _| ())
    }

    fn spin_then_wait<T>(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
        found: impl Fn(&mut State, usize) -> T,
    ) -> Result<T> {
        let start = Instant::now();
        // Spin while nothing new arrives, to avoid the cost of sleeping on a short wait.
        loop {
            let seen = self.events.load(Ordering::SeqCst);
            {
                let mut state = self.lock();
                if let Some(r) = locate(&state, from, tag) {
                    return r.map(|i| {
                        let v = found(&mut state, i);
                        self.queued.store(state.queue.len(), Ordering::Release);
                        v
                    });
                }
            }
            if start.elapsed() >= self.spin {
                break;
            }
            while self.events.load(Ordering::SeqCst) == seen && start.elapsed() < self.spin {
                std::hint::spin_loop();
            }
        }
        let left = timeout.map(|t| t.saturating_sub(start.elapsed()));
        self.sleep_until(from, tag, left, found)
    }

    /// Like [`Mailbox::recv`], sleeping at once instead of spinning first.
    pub(crate) fn wait(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        self.sleep_until(from, tag, timeout, take)?
    }

    /// Like [`Mailbox::await_message`], sleeping at once instead of spinning first.
    pub(crate) fn wait_present(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.sleep_until(from, tag, timeout, |_, _| ())
    }

    fn sleep_until<T>(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
        found: impl Fn(&mut State, usize) -> T,
    ) -> Result<T> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut state = self.lock();
        loop {
            if let Some(r) = locate(&state, from, tag) {
                return r.map(|i| {
                    let v = found(&mut state, i);
                    self.queued.store(state.queue.len(), Ordering::Release);
                    v
                });
            }
            if let Some(d) = deadline {
                if Instant::now() >= d {
                    return Err(Error::Timeout(format!(
                        "no message from {} with tag {} within {:?}",
                        from.map_or("any rank".to_string(), |r| format!("rank {r}")),
                        tag.map_or("any".to_string(), |t| t.0.to_string()),
                        timeout.unwrap_or_default()
                    )));
                }
            }
            state = self.sleep(state, deadline);
        }
    }

    /// Takes a matching message if one is there (or the error that ends the wait), without
    /// waiting.
    pub(crate) fn poll(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<Message>> {
        let mut state = self.lock();
        let found = locate(&state, from, tag).map(|r| r.and_then(|i| take(&mut state, i)));
        self.queued.store(state.queue.len(), Ordering::Release);
        found
    }

    /// Whether nothing is queued and no peer is down (nor the mailbox closed), read without the
    /// lock: a receiver that has seen this may look for its message elsewhere first (a
    /// delivery racing with the look is a message another look will find).
    pub(crate) fn quiet(&self) -> bool {
        self.queued.load(Ordering::Acquire) == 0 && !self.troubled.load(Ordering::Acquire)
    }

    /// Whether a matching message is there (or the error that ends a wait for one), without
    /// taking it.
    pub(crate) fn peek(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<()>> {
        locate(&self.lock(), from, tag).map(|r| r.map(drop))
    }
}

/// Where the oldest message matching `from` and `tag` is queued, or the error that ends a
/// wait for one; `None` when neither is there yet.
fn locate(state: &State, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<usize>> {
    let pos = state
        .queue
        .iter()
        .position(|m| from.is_none_or(|f| f == m.source) && tag.is_none_or(|t| t == m.tag));
    if let Some(i) = pos {
        return Some(Ok(i));
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

/// [`Mailbox::claim`] under the lock.
fn claim(state: &mut State, from: Rank, tag: Tag, start: &[u8]) -> Option<Offer> {
    let at = state
        .landings
        .iter()
        .position(|o| o.takes(from, tag, start))?;
    Some(state.landings.remove(at))
}

/// Takes the message `locate` found at `i`.
fn take(state: &mut State, i: usize) -> Result<Message> {
    // `i` came from `locate` under the same lock, so the message is there.
    state.queue.remove(i).ok_or(Error::Closed)
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
