//! The progress thread of the tcp backend: it reads every connection, serves peers' one-sided
//! requests against this node's registered memory (the home CPU playing the NIC), completes our
//! own requests as their responses arrive, sends heartbeats, and notices lost peers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::error::{Error, RemoteFault};
use crate::exec;
use crate::types::{Message, Rank, Tag};
use crate::wire::{Frame, Header, Kind};

use super::conn::{lock, Conn, Direct, DirectEnd, DirectInto, Payload, Rx, Watch, CLOSING, DOWN};
use super::linger;
use super::shared::Shared;

pub(crate) const WAKER: Token = Token(usize::MAX);
/// The linger timer's token (see `linger`).
pub(crate) const LINGER: Token = Token(usize::MAX - 1);

/// Bytes read from one connection before the progress thread turns to the others.
const READ_BUDGET: usize = 4 << 20;

/// How long a closing node keeps flushing queued frames before it gives up.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Runs until the transport is closed.
pub(crate) fn run(shared: Arc<Shared>, mut poll: Poll) {
    let conns: Vec<&Arc<Conn>> = shared.conns.iter().flatten().collect();
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
            let Some(Some(conn)) = shared.conns.get(ev.token().0) else {
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

/// Registers `conn` with the progress thread's poller: its socket for writability, its second
/// descriptor for readability, both under the peer's token.
///
/// # Errors
/// The poller's error.
pub(crate) fn register(registry: &Registry, conn: &Conn) -> std::io::Result<()> {
    let token = Token(conn.peer.index());
    registry.register(
        &mut SourceFd(&conn.stream.as_raw_fd()),
        token,
        Interest::WRITABLE,
    )?;
    registry.register(
        &mut SourceFd(&conn.read_fd.as_raw_fd()),
        token,
        Interest::READABLE,
    )
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
/// is about to sleep, or returns to the application after a one-sided operation), else after
/// [`linger::LINGER`] unless a thread waits on the connection again before (it got the message
/// it waited for and will likely wait again soon). Either way the progress thread then reads
/// whatever is waiting: nothing is left unread once no thread waits.
pub(crate) fn waiter_leaves(shared: &Shared, conn: &Conn, linger: bool) {
    let mut watch = lock(&conn.watch);
    watch.waiters = watch.waiters.saturating_sub(1);
    if watch.waiters > 0 || watch.registered {
        return;
    }
    if linger {
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
        let ready = conns
            .iter()
            .map(|c| libc::pollfd {
                fd: c.read_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
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
        // Readiness first, in one system call for all the connections: `poll` does not take
        // the socket lock, which a `recv` on an empty socket would, holding up the very
        // packet it waits for (the kernel queues it to the lock holder's backlog).
        let n = self.ready.len() as libc::nfds_t;
        // SAFETY: `ready` is a live, exclusively borrowed array of `n` pollfds; the kernel
        // writes only their `revents` and returns without keeping the pointer (timeout 0).
        let polled = unsafe { libc::poll(self.ready.as_mut_ptr(), n, 0) };
        for (c, p) in self.conns.iter().zip(&self.ready) {
            if polled < 0 || p.revents != 0 || c.rx_pending.load(Ordering::SeqCst) {
                drain(self.shared, c, Reading::Waiter);
            }
            c.try_flush();
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

fn lost(peer: Rank, reason: String) -> Error {
    Error::PeerLost { peer, reason }
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

/// Who reads a connection, which decides how far it reads before it lets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// The progress thread on a readable event that does not report a closed peer: it may stop
    /// at a short read (an end of stream that arrives later raises a new event), and stops when
    /// its budget runs out, to come back on its next turn.
    Event,
    /// The progress thread on an event that reports the peer closed or failed: read until the
    /// socket would block or ends (no further event would come for what is queued).
    EventClosed,
    /// A thread waiting for a response: stops at a short read, one system call fewer per round
    /// trip; the progress thread still gets the event for anything that arrives later.
    Waiter,
}

/// What [`drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Another thread holds the connection's receive side (and will see `rx_pending`).
    Busy,
    /// Read until there was nothing more.
    Done,
    /// Stopped because the read budget ran out: come back without waiting for an event.
    More,
}

/// Reads and handles everything available on `conn`, unless another thread is already doing
/// so. Any thread may call it: the progress thread on a readable event, or a thread waiting for
/// a response on this connection (which saves a wake-up of the progress thread per round trip).
///
/// Edge-triggered readiness is never lost: the progress thread sets `rx_pending` before it tries
/// the lock, and whoever holds the lock checks `rx_pending` again after releasing it.
///
/// Only the progress thread stops at the read budget ([`Drained::More`]): it comes back on its
/// next turn. Another thread reads what it took over until the socket would block, since
/// nobody would come back for what it left (the edge-triggered event that announced it was
/// consumed by the progress thread).
pub(crate) fn drain(shared: &Shared, conn: &Conn, how: Reading) -> Drained {
    let budgeted = how != Reading::Waiter;
    let mut how = how;
    let mut outcome = Drained::Busy;
    loop {
        let mut rx = match conn.rx.try_lock() {
            Ok(rx) => rx,
            Err(std::sync::TryLockError::WouldBlock) => return outcome,
            Err(std::sync::TryLockError::Poisoned(rx)) => {
                // A reader panicked part-way through a frame: what is buffered cannot be
                // trusted, and a lock that stays poisoned must not look busy forever.
                drop(rx);
                let reason = "a thread panicked while reading the connection".to_string();
                shared.peer_down(conn, lost(conn.peer, reason));
                return Drained::Done;
            }
        };
        conn.rx_pending.store(false, Ordering::SeqCst);
        if read_available(shared, conn, &mut rx, how, budgeted) {
            return Drained::More;
        }
        outcome = Drained::Done;
        // Readiness that arrived meanwhile was meant for the progress thread: read it fully.
        how = Reading::EventClosed;
        drop(rx);
        if !conn.rx_pending.load(Ordering::SeqCst) {
            return Drained::Done;
        }
    }
}

/// Payloads at least this large are read straight into their destination when they have not
/// fully arrived yet, saving a copy through the frame buffer.
const DIRECT_MIN: usize = 16 * 1024;

/// Reads until the socket would block (or comes back short, as `how` allows),
/// handling each complete frame. Returns true when it stopped with data possibly left (the read
/// budget ran out, which only happens when `budgeted`).
fn read_available(shared: &Shared, conn: &Conn, rx: &mut Rx, how: Reading, budgeted: bool) -> bool {
    if conn.state() == DOWN {
        // Marked down elsewhere (heartbeat, a failed send, close) while a read was arriving
        // straight into memory: `mark_down` fails only what it can reach without waiting.
        rx.fail_direct(&conn.down_error());
        return false;
    }
    let mut read = 0usize;
    loop {
        let got = match rx.direct.as_mut() {
            Some(d) => recv_direct(conn, d),
            None => {
                let mut stream = &conn.stream;
                rx.reader
                    .fill_from(&mut stream)
                    .map(|n| (n, rx.reader.drained()))
            }
        };
        match got {
            Ok((0, _)) => {
                // After the peer's goodbye, or while we close ourselves, an end of stream is the
                // orderly end of the connection.
                let err = if conn.state() == CLOSING || shared.closing.load(Ordering::SeqCst) {
                    Error::PeerClosed(conn.peer)
                } else {
                    lost(
                        conn.peer,
                        "connection closed without goodbye (process died?)".into(),
                    )
                };
                if rx.direct.is_none() {
                    handle_frames(shared, conn, rx);
                }
                rx.fail_direct(&err);
                shared.peer_down(conn, err);
                return false;
            }
            Ok((n, short)) => {
                conn.last_recv_ms.store(shared.now_ms(), Ordering::Relaxed);
                conn.heard.store(true, Ordering::Relaxed);
                read += n;
                if rx.direct.as_ref().is_some_and(|d| d.done == d.len) {
                    if let Some(d) = rx.direct.take() {
                        finish_direct(shared, conn, d);
                    }
                }
                if rx.direct.is_none() && !handle_frames(shared, conn, rx) {
                    return false;
                }
                if budgeted && read >= READ_BUDGET {
                    // Let the other peers have a turn; the progress thread comes back here.
                    return true;
                }
                if how != Reading::EventClosed && short {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let err = if conn.state() == CLOSING || shared.closing.load(Ordering::SeqCst) {
                    tracing::debug!("rank {}: receive after goodbye: {e}", conn.peer);
                    Error::PeerClosed(conn.peer)
                } else {
                    lost(conn.peer, format!("receive failed: {e}"))
                };
                rx.fail_direct(&err);
                shared.peer_down(conn, err);
                return false;
            }
        }
    }
}

/// Receives the next part of a direct payload into its destination. Returns the byte count and
/// whether the read came back short.
fn recv_direct(conn: &Conn, d: &mut Direct) -> std::io::Result<(usize, bool)> {
    use std::os::fd::AsRawFd;
    let want = d.len - d.done;
    let dst = match &mut d.into {
        DirectInto::Region { region, offset } => region.as_ptr().wrapping_add(*offset + d.done),
        // The buffer holds `done` bytes and has room for `len`.
        DirectInto::Buffer(b) => b.spare_capacity_mut().as_mut_ptr().cast::<u8>(),
    };
    // SAFETY: for a region, `offset..offset+len` lies inside it (checked when the Direct was
    // made) and `done < len`, so `dst..dst+want` is inside it too; the `Arc` keeps it mapped.
    // For a buffer, `dst` starts its spare capacity, of at least `len - done = want` bytes. The
    // kernel writes through the raw pointer; no Rust reference to the bytes exists meanwhile.
    let n = unsafe { libc::recv(conn.stream.as_raw_fd(), dst.cast(), want, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    if let DirectInto::Buffer(b) = &mut d.into {
        // SAFETY: the kernel initialised the first `n <= want` bytes of the spare capacity.
        unsafe { b.set_len(b.len() + n) };
    }
    d.done += n;
    Ok((n, n < want))
}

/// Completes a direct payload that has fully arrived.
fn finish_direct(shared: &Shared, conn: &Conn, d: Direct) {
    match (d.then, d.into) {
        (DirectEnd::Response(p), _) => p.completer.complete(0),
        (DirectEnd::Write { id }, _) => respond(shared, conn, id, Ok(0), Payload::None),
        (DirectEnd::Message { tag }, DirectInto::Buffer(data)) => {
            shared.mailbox.deliver(Message {
                source: conn.peer,
                tag: Tag(tag),
                data,
            });
        }
        // Never made: a message always goes to its own buffer.
        (DirectEnd::Message { .. }, DirectInto::Region { .. }) => {}
    }
}

/// If the frame whose header has arrived carries a large payload that has not fully arrived and
/// has a known destination in registered memory, switch to reading it straight there.
fn try_direct(shared: &Shared, conn: &Conn, rx: &mut Rx, h: Header) -> bool {
    let len = h.payload_len as usize;
    if len < DIRECT_MIN || rx.reader.payload_buffered() >= len {
        return false;
    }
    if h.kind == Kind::Message {
        let mut data = crate::pool::buffer(len);
        data.extend_from_slice(rx.reader.detach_payload());
        rx.direct = Some(Direct {
            done: data.len(),
            into: DirectInto::Buffer(data),
            len,
            then: DirectEnd::Message { tag: h.a },
        });
        return true;
    }
    let (region, offset, then) = match h.kind {
        Kind::Response if h.a == 0 && conn.pending_read_len(h.id) == Some(len) => {
            let Some(p) = conn.take_pending(h.id) else {
                return false;
            };
            let Some(dest) = p.dest.clone() else {
                return false;
            };
            (
                Arc::clone(dest.region()),
                dest.offset(),
                DirectEnd::Response(p),
            )
        }
        Kind::Write => match exec::range(&shared.regions, h.a, h.b, h.payload_len.into()) {
            // `range` checked b..b+len against the region, so `b` fits in usize.
            Ok((region, _)) => {
                conn.before_memory_change();
                (region, h.b as usize, DirectEnd::Write { id: h.id })
            }
            Err(_) => return false,
        },
        _ => return false,
    };
    let prefix = rx.reader.detach_payload();
    if region.write_at(offset, prefix).is_err() {
        // Unreachable: the range was checked; fail safe by dropping the request.
        return false;
    }
    let done = prefix.len();
    rx.direct = Some(Direct {
        into: DirectInto::Region { region, offset },
        len,
        done,
        then,
    });
    true
}

/// Handles every complete frame buffered in the reader, stopping early when a large payload
/// switches to direct reading. Returns false when the connection was closed for a protocol
/// violation. The responses to the batch leave together once it is handled: a peer that posts
/// several requests at once (a page fault's registration, directory read and page read) gets
/// one write back, not one per request.
fn handle_frames(shared: &Shared, conn: &Conn, rx: &mut Rx) -> bool {
    conn.cork();
    let open = handle_batch(shared, conn, rx);
    conn.uncork();
    open
}

/// [`handle_frames`] without the corking.
fn handle_batch(shared: &Shared, conn: &Conn, rx: &mut Rx) -> bool {
    let violation = |detail: String| {
        shared.peer_down(
            conn,
            Error::Protocol {
                from: conn.peer,
                detail,
            },
        );
        false
    };
    loop {
        let header = match rx.reader.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => return true,
            Err(e) => return violation(e.to_string()),
        };
        if try_direct(shared, conn, rx, header) {
            return true;
        }
        let frame = match rx.reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(e) => return violation(e.to_string()),
        };
        if let Err(detail) = handle(shared, conn, frame) {
            return violation(detail);
        }
    }
}

fn respond(
    shared: &Shared,
    conn: &Conn,
    id: u64,
    outcome: Result<u64, RemoteFault>,
    payload: Payload,
) {
    conn.served.store(true, Ordering::Relaxed);
    let mut h = Header::new(Kind::Response);
    h.id = id;
    match outcome {
        Ok(v) => h.b = v,
        Err(f) => h.a = u64::from(f.code()),
    }
    let payload = if h.a == 0 { payload } else { Payload::None };
    // A failed send marks the connection down; nothing else to do here.
    let _ = conn.send(h, payload, shared.now_ms());
}

/// Handles one frame; an `Err` is a protocol violation that closes the connection.
fn handle(shared: &Shared, conn: &Conn, frame: Frame<'_>) -> Result<(), String> {
    let h = frame.header;
    let table = &shared.regions;
    if matches!(
        h.kind,
        Kind::Write
            | Kind::AddStrided
            | Kind::WriteRuns
            | Kind::CompareSwap
            | Kind::FetchAdd
            | Kind::Accumulate
    ) {
        // An earlier read's response must not carry this request's change.
        conn.before_memory_change();
    }
    match h.kind {
        Kind::Read => {
            match exec::range(table, h.a, h.b, h.c) {
                Ok((region, _)) => {
                    // `range` checked b..b+c against the region, and `c` is at most the frame
                    // limit, so both fit in usize.
                    let payload = Payload::Region {
                        region,
                        offset: h.b as usize,
                        len: h.c as usize,
                    };
                    respond(shared, conn, h.id, Ok(0), payload);
                }
                Err(f) => respond(shared, conn, h.id, Err(f), Payload::None),
            }
        }
        Kind::Write => {
            let r = exec::write(table, h.a, h.b, frame.payload);
            respond(shared, conn, h.id, r.map(|()| 0), Payload::None);
        }
        Kind::AddStrided => {
            let (stride, count) = (h.d >> 32, h.d & 0xffff_ffff);
            let r = exec::add_strided(table, h.a, h.b, stride, count, h.c);
            respond(shared, conn, h.id, r.map(|()| 0), Payload::None);
        }
        Kind::WriteRuns => {
            let runs =
                crate::wire::decode_runs(frame.payload).ok_or("malformed write-runs payload")?;
            let r = exec::write_runs(table, h.a, h.b, &runs);
            respond(shared, conn, h.id, r.map(|()| 0), Payload::None);
        }
        Kind::Accumulate => {
            let Some(reduction) = crate::reduce::Reduction::from_code(h.c) else {
                respond(
                    shared,
                    conn,
                    h.id,
                    Err(RemoteFault::Unsupported),
                    Payload::None,
                );
                return Ok(());
            };
            let mut old = (h.d != 0).then(|| vec![0u8; frame.payload.len()]);
            let r = exec::accumulate(
                table,
                h.a,
                h.b,
                reduction,
                frame.payload,
                old.as_deref_mut(),
            );
            let payload = old.map_or(Payload::None, Payload::Bytes);
            respond(shared, conn, h.id, r.map(|()| 0), payload);
        }
        Kind::CompareSwap => {
            let r = exec::compare_swap(table, h.a, h.b, h.c, h.d);
            respond(shared, conn, h.id, r, Payload::None);
        }
        Kind::FetchAdd => {
            let r = exec::fetch_add(table, h.a, h.b, h.c);
            respond(shared, conn, h.id, r, Payload::None);
        }
        Kind::Flush => respond(shared, conn, h.id, Ok(0), Payload::None),
        Kind::Response => {
            let pending = conn
                .take_pending(h.id)
                .ok_or_else(|| format!("response to request {} that is not outstanding", h.id))?;
            if h.a != 0 {
                let fault = u32::try_from(h.a)
                    .ok()
                    .and_then(RemoteFault::from_code)
                    .ok_or_else(|| format!("unknown status code {}", h.a))?;
                pending.completer.fail(Error::Remote {
                    peer: conn.peer,
                    fault,
                });
                return Ok(());
            }
            match &pending.dest {
                Some(dest) => {
                    if frame.payload.len() != dest.len() {
                        let detail = format!(
                            "read response of {} bytes for a read of {}",
                            frame.payload.len(),
                            dest.len()
                        );
                        pending.completer.fail(Error::Protocol {
                            from: conn.peer,
                            detail: detail.clone(),
                        });
                        return Err(detail);
                    }
                    // The LocalSlice was bounds-checked when it was made.
                    if let Err(e) = dest.region().write_at(dest.offset(), frame.payload) {
                        pending.completer.fail(e);
                        return Ok(());
                    }
                    pending.completer.complete(0);
                }
                None => {
                    if !frame.payload.is_empty() {
                        pending.completer.fail(Error::Protocol {
                            from: conn.peer,
                            detail: "unexpected payload".into(),
                        });
                        return Err("payload on a response that carries none".into());
                    }
                    pending.completer.complete(h.b);
                }
            }
        }
        Kind::Message => {
            let mut data = crate::pool::buffer(frame.payload.len());
            data.extend_from_slice(frame.payload);
            shared.mailbox.deliver(Message {
                source: conn.peer,
                tag: Tag(h.a),
                data,
            });
        }
        Kind::Heartbeat => {}
        Kind::Goodbye => conn.set_closing(),
    }
    Ok(())
}
