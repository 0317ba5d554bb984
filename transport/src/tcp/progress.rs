//! The progress thread of the tcp backend: it waits for events on every connection and reads
//! the readable ones (`read.rs`, which hands each frame to `handle.rs`: peers' one-sided
//! requests served against this node's registered memory, the home CPU playing the NIC, and our
//! own requests completed as their responses arrive), sends heartbeats, and notices lost peers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::error::Error;
use crate::wire::{Header, Kind};

use super::conn::{lock, lost, Conn, Payload, Watch, DOWN};
use super::linger;
use super::read::{drain, Drained, Reading};
use super::shared::Shared;

pub(crate) const WAKER: Token = Token(usize::MAX);
/// The linger timer's token (see `linger`).
pub(crate) const LINGER: Token = Token(usize::MAX - 1);

/// How long a closing node keeps flushing queued frames before it gives up.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Runs until the transport is closed.
pub(crate) fn run(shared: Arc<Shared>, mut poll: Poll) {
    // The connections made so far, looked at again whenever one is made.
    let mut opened = shared.opened.load(Ordering::Acquire);
    let mut conns: Vec<&Arc<Conn>> = shared.open_conns();
    let tick =
        (shared.config.peer_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut events = Events::with_capacity(256);
    let mut last_tick = Instant::now();
    let mut last_event = Instant::now();
    let mut closing_since: Option<Instant> = None;
    let mut write_shut = false;
    // Connections whose read budget ran out: served again on the next turn, events or not.
    let mut backlog: Vec<Arc<Conn>> = Vec::new();
    loop {
        let now_opened = shared.opened.load(Ordering::Acquire);
        if now_opened != opened {
            opened = now_opened;
            conns = shared.open_conns();
        }
        // Right after activity, poll without sleeping for a while: the next request of a
        // latency-bound peer usually comes within a round trip, and waking up costs more.
        let timeout = if !backlog.is_empty() || last_event.elapsed() < shared.config.spin {
            Duration::ZERO
        } else if closing_since.is_some() {
            Duration::from_millis(10)
        } else {
            tick
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("progress thread: poll failed: {e}");
                for conn in &conns {
                    let err = std::io::Error::new(e.kind(), e.to_string());
                    shared.peer_down(conn, Error::io("polling connections", err));
                }
                return;
            }
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            if ev.token() == LINGER {
                linger_expired(&shared, &conns);
                continue;
            }
            let Some(conn) = shared.conn(ev.token().0) else {
                continue;
            };
            if ev.is_writable() {
                last_event = Instant::now();
                if let Err(e) = conn.flush_queue() {
                    shared.peer_down(conn, send_failed(conn, &e));
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                conn.rx_pending.store(true, Ordering::SeqCst);
                // The event was taken before we read: an end of stream that had already arrived
                // shows in it, and one that arrives later raises a new event. So a short read
                // may stop unless the event itself says the peer closed or failed.
                let how = if ev.is_read_closed() || ev.is_error() {
                    Reading::EventClosed
                } else {
                    Reading::Event
                };
                match drain(&shared, conn, how) {
                    // Another thread is reading (one waiting for its response): this is not
                    // work for us, so it is no reason to keep spinning.
                    Drained::Busy => {}
                    // Spin only after serving a request: a latency-bound peer's next one
                    // comes within a round trip. Messages and responses are read by the
                    // threads that wait for them, and a progress thread spinning beside them
                    // takes one of two vCPUs away.
                    Drained::Done => {
                        if conn.served.swap(false, Ordering::Relaxed) {
                            last_event = Instant::now();
                        }
                    }
                    Drained::More => {
                        last_event = Instant::now();
                        if !backlog.iter().any(|c| Arc::ptr_eq(c, conn)) {
                            backlog.push(Arc::clone(conn));
                        }
                    }
                }
            }
        }
        backlog.retain(|conn| {
            conn.rx_pending.store(true, Ordering::SeqCst);
            drain(&shared, conn, Reading::EventClosed) == Drained::More
        });
        let now = Instant::now();
        if now.duration_since(last_tick) >= tick {
            last_tick = now;
            heartbeat(&shared, &conns);
            // The linger timer's fallback: a connection whose timer could not be armed is
            // taken back here at the latest.
            linger_expired(&shared, &conns);
        }
        if shared.stopping.load(Ordering::SeqCst) {
            // Closing in order: flush what is queued (our goodbye last), shut our side, then keep
            // reading until every peer has shut its side too, so that no unread byte makes the
            // kernel answer with a reset that could destroy data the peer has not read yet.
            let since = *closing_since.get_or_insert(now);
            let late = now.duration_since(since) >= CLOSE_FLUSH;
            let busy = conns.iter().any(|c| c.state() != DOWN && c.has_queued());
            if !busy && !write_shut {
                for conn in &conns {
                    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                }
                write_shut = true;
            }
            let open = conns.iter().any(|c| c.state() != DOWN);
            if (write_shut && !open) || late {
                for conn in &conns {
                    conn.mark_down(Error::Closed);
                }
                return;
            }
        }
    }
}

/// Sets whether the progress thread is woken by arrivals on `conn`: registers or deregisters
/// its read descriptor. (Narrowing the interest instead would not do: every arrival also
/// signals urgent-data interest, and a wake-up that reports nothing still costs the wake-up.)
/// Registering again polls the socket, so data that arrived meanwhile raises an event at once.
fn watch_reads(registry: &Registry, conn: &Conn, reads: bool) -> std::io::Result<()> {
    let mut fd = SourceFd(&conn.read_fd.as_raw_fd());
    if reads {
        registry.register(&mut fd, Token(conn.peer.index()), Interest::READABLE)
    } else {
        registry.deregister(&mut fd)
    }
}

/// A thread starts reading `conn` itself while it waits (with [`drain`] and
/// [`Reading::Waiter`]). The first such thread withdraws the progress thread's read interest
/// (a hang-up or error then shows to the waiter, which reads the socket): on two virtual CPUs
/// a wake-up of the progress thread per arriving message costs more than the message, and the
/// woken thread then competes with the waiter for a CPU. Every call is paired with
/// [`waiter_leaves`].
pub(crate) fn waiter_arrives(shared: &Shared, conn: &Conn) {
    let mut watch = lock(&conn.watch);
    watch.waiters += 1;
    watch.left_at = None;
    if watch.registered {
        match watch_reads(&shared.registry, conn, false) {
            Ok(()) => watch.registered = false,
            // Harmless: the progress thread keeps being woken, as before.
            Err(e) => tracing::debug!("rank {}: withdrawing read interest: {e}", conn.peer),
        }
    }
}

/// The thread that called [`waiter_arrives`] stops reading `conn`. When it is the last one,
/// read interest goes back to the progress thread: at once when `linger` is false (the thread
/// is about to sleep) or lingering is off (`Transport::set_linger`), else after
/// [`linger::LINGER`] unless a thread waits on the connection again before (it got what it
/// waited for and will likely wait again soon). Either way the progress thread then reads
/// whatever is waiting: nothing is left unread once no thread waits.
pub(crate) fn waiter_leaves(shared: &Shared, conn: &Conn, linger: bool) {
    let mut watch = lock(&conn.watch);
    watch.waiters = watch.waiters.saturating_sub(1);
    if watch.waiters > 0 || watch.registered {
        return;
    }
    if linger && shared.linger_after_waits.load(Ordering::Relaxed) {
        watch.left_at = Some(Instant::now());
        drop(watch);
        shared.linger.arm(linger::LINGER);
        return;
    }
    give_back(shared, conn, &mut watch);
}

/// Registers `conn`'s read descriptor again (the progress thread reads it from now on).
fn give_back(shared: &Shared, conn: &Conn, watch: &mut Watch) {
    watch.left_at = None;
    match watch_reads(&shared.registry, conn, true) {
        Ok(()) => watch.registered = true,
        Err(e) => {
            // Nobody would read the connection any more: fail it rather than hang.
            shared.peer_down(
                conn,
                lost(conn.peer, format!("cannot watch the connection: {e}")),
            );
        }
    }
}

/// The linger timer expired: takes back the connections nobody waited on for
/// [`linger::LINGER`], and arms the timer again for those that lingered less.
fn linger_expired(shared: &Shared, conns: &[&Arc<Conn>]) {
    shared.linger.expired();
    let now = Instant::now();
    let mut next: Option<Duration> = None;
    for conn in conns {
        let mut watch = lock(&conn.watch);
        if watch.waiters > 0 || watch.registered {
            continue;
        }
        match watch.left_at.map(|t| t + linger::LINGER) {
            Some(due) if due > now => {
                let left = due - now;
                next = Some(next.map_or(left, |n| n.min(left)));
            }
            _ => give_back(shared, conn, &mut watch),
        }
    }
    if let Some(d) = next {
        shared.linger.arm(d);
    }
}

/// Reads some connections on behalf of a waiting thread for as long as it lives (see
/// [`waiter_arrives`]); dropping it hands them back to the progress thread.
#[derive(Debug)]
pub(crate) struct Driving<'a> {
    shared: &'a Shared,
    conns: Vec<&'a Conn>,
    /// The connections' read descriptors, asked for readability in one `poll` per turn.
    ready: Vec<libc::pollfd>,
    /// Whether the connections linger when it is dropped.
    linger: bool,
}

impl<'a> Driving<'a> {
    pub(crate) fn new(shared: &'a Shared, conns: Vec<&'a Conn>) -> Driving<'a> {
        for c in &conns {
            waiter_arrives(shared, c);
        }
        let ready = conns.iter().map(|c| pollfd_of(c)).collect();
        Driving {
            shared,
            conns,
            ready,
            linger: false,
        }
    }

    /// The wait got what it waited for: the connections linger (see [`waiter_leaves`]).
    pub(crate) fn got_it(&mut self) {
        self.linger = true;
    }

    /// Reads and handles what has arrived on the connections, and writes what is queued on
    /// them, without blocking.
    pub(crate) fn drive(&mut self) {
        drive_ready(self.shared, &self.conns, &mut self.ready);
    }
}

/// The readiness entry of a waiting thread for `conn` (see [`drive_ready`]).
pub(crate) fn pollfd_of(conn: &Conn) -> libc::pollfd {
    libc::pollfd {
        fd: conn.read_fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }
}

/// One turn of a thread that waits on `conns` (`ready` holds their [`pollfd_of`] entries):
/// reads and handles what has arrived, and writes what is queued, without blocking.
/// Readiness first, in one system call for all the connections: `poll` does not take the
/// socket lock, which a `recv` on an empty socket would, holding up the very packet it waits
/// for (the kernel queues it to the lock holder's backlog). Writability too where frames are
/// queued and nobody else is writing them: a `sendmsg` on a full socket takes the socket lock
/// as well.
pub(crate) fn drive_ready(shared: &Shared, conns: &[&Conn], ready: &mut [libc::pollfd]) {
    for (c, p) in conns.iter().zip(ready.iter_mut()) {
        p.events = libc::POLLIN | if c.flush_wanted() { libc::POLLOUT } else { 0 };
    }
    let n = ready.len() as libc::nfds_t;
    // SAFETY: `ready` is a live, exclusively borrowed array of `n` pollfds; the kernel writes
    // only their `revents` and returns without keeping the pointer (timeout 0).
    let polled = unsafe { libc::poll(ready.as_mut_ptr(), n, 0) };
    for (c, p) in conns.iter().zip(ready.iter()) {
        if polled < 0 || p.revents & !libc::POLLIN != 0 {
            // What the waiter waits for may be its own large message, queued behind a full
            // socket: it writes what the socket takes now, without waiting for the progress
            // thread's writable event.
            c.try_flush();
        }
        if polled < 0 || p.revents & !libc::POLLOUT != 0 || c.rx_pending.load(Ordering::SeqCst) {
            drain(shared, c, Reading::Waiter);
        }
    }
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        for c in &self.conns {
            waiter_leaves(self.shared, c, self.linger);
        }
    }
}

/// The error for a failed send: an orderly close when the peer said goodbye, a loss otherwise.
pub(crate) fn send_failed(conn: &Conn, e: &std::io::Error) -> Error {
    conn.send_error(e)
}

fn heartbeat(shared: &Shared, conns: &[&Arc<Conn>]) {
    let now_ms = shared.now_ms();
    let tick_ms = (shared.config.peer_timeout / 4).as_millis() as u64;
    let timeout_ms = shared.config.peer_timeout.as_millis() as u64;
    for conn in conns {
        if conn.state() == DOWN {
            continue;
        }
        // Until a peer has said anything it may still be connecting to the others.
        let limit = if conn.heard.load(Ordering::Relaxed) {
            timeout_ms
        } else {
            timeout_ms + shared.config.connect_timeout.as_millis() as u64
        };
        if now_ms.saturating_sub(conn.last_recv_ms.load(Ordering::Relaxed)) > limit {
            let reason = format!(
                "silent for more than {:?} (no heartbeat)",
                shared.config.peer_timeout
            );
            shared.peer_down(conn, lost(conn.peer, reason));
            continue;
        }
        if now_ms.saturating_sub(conn.last_send_ms.load(Ordering::Relaxed)) >= tick_ms {
            let _ = conn.send(Header::new(Kind::Heartbeat), Payload::None, now_ms);
        }
    }
}
