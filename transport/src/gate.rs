//! Admission of the connections a listener receives: the bootstrap's coordinator (while a job
//! sets up, [`serve`]) and the tcp backend's data listeners (as long as a node runs: peers
//! connect when they first need to, [`serve_until_stopped`]) both go through it.
//!
//! Anyone who can reach a listening port can connect to it, so the job must not wait on what a
//! stranger does (or does not) send. Three rules make sure it does not:
//!
//! - **Concurrent handshakes.** Every accepted connection gets a thread of its own for its
//!   handshake (authentication and whatever the caller reads next), so one slow or silent
//!   connection never holds up another; the caller's decision about an authenticated peer is
//!   taken on the calling thread, one at a time.
//! - **A deadline for the whole handshake**, not for each read ([`DeadlineStream`]): a connection
//!   that has not finished within [`GateConfig::handshake_timeout`] of being accepted is dropped,
//!   however steadily it trickles bytes. The overall deadline given to [`serve`] is a hard bound
//!   too: `serve` returns when it passes, whatever the connections in flight are doing.
//! - **A bound on unauthenticated connections** ([`GateConfig::max_pending`]): when a new one
//!   arrives with the bound reached, the oldest still in its handshake is dropped. A flood of idle
//!   connections therefore cannot keep a real peer out: it only pushes out older strangers, and a
//!   real peer needs a round trip, not seconds. A peer whose connection is dropped this way sees
//!   it closed during its handshake and connects again (the bootstrap and the tcp backend both do).
//!
//! Refusals (a failed handshake, a dropped connection, a peer the caller refuses) are logged at
//! `warn`: the first [`SHOWN_IN_FULL`] in full, then one summary line per [`SUMMARY_EVERY`] and one
//! when `serve` returns, so a flood of strangers cannot flood the log.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Default of [`GateConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Unauthenticated connections held at once besides one per expected peer (see
/// [`GateConfig::for_peers`]).
pub const DEFAULT_SPARE_PENDING: usize = 32;
/// Refusals logged one line each before the log switches to summaries.
pub const SHOWN_IN_FULL: u32 = 5;
/// At most one summary line of refusals per this period.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(5);
/// Stack of a handshake thread: the handshake needs a few kilobytes.
const HANDSHAKE_STACK: usize = 256 << 10;

/// How a listener admits connections.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// What the log calls the listener (`"coordinator"`, `"data listener"`).
    pub name: &'static str,
    /// Longest a connection may take, from being accepted, to finish its whole handshake.
    pub handshake_timeout: Duration,
    /// Most connections held in their handshake at once; beyond, the oldest is dropped.
    pub max_pending: usize,
}

impl GateConfig {
    /// A gate expecting `peers` real connections: room for all of them at once and
    /// [`DEFAULT_SPARE_PENDING`] more.
    pub fn for_peers(name: &'static str, handshake_timeout: Duration, peers: usize) -> GateConfig {
        GateConfig {
            name,
            handshake_timeout,
            max_pending: peers.saturating_add(DEFAULT_SPARE_PENDING),
        }
    }
}

/// A stream whose every read and write fails with [`std::io::ErrorKind::TimedOut`] once a
/// deadline has passed, and waits at most until then: a deadline for a whole conversation, where
/// a socket's own timeouts bound each call only.
#[derive(Debug)]
pub struct DeadlineStream {
    stream: TcpStream,
    deadline: Instant,
    allowed: Duration,
}

impl DeadlineStream {
    /// Wraps `stream` (which must be in blocking mode) with a deadline `allowed` from now.
    pub fn new(stream: TcpStream, allowed: Duration) -> DeadlineStream {
        DeadlineStream::until(stream, Instant::now() + allowed)
    }

    /// Wraps `stream` (which must be in blocking mode) with the deadline `deadline`.
    pub fn until(stream: TcpStream, deadline: Instant) -> DeadlineStream {
        DeadlineStream {
            stream,
            deadline,
            allowed: deadline.saturating_duration_since(Instant::now()),
        }
    }

    /// The stream, its socket timeouts left as the last call set them.
    pub fn into_inner(self) -> TcpStream {
        self.stream
    }

    /// The stream.
    pub fn get_ref(&self) -> &TcpStream {
        &self.stream
    }

    fn timed_out(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("timed out ({:.1?} allowed)", self.allowed),
        )
    }

    /// The time left, or the time-out error.
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        // A socket timeout of zero would mean "none": below a millisecond is over.
        if left < Duration::from_millis(1) {
            Err(self.timed_out())
        } else {
            Ok(left)
        }
    }

    fn map(&self, e: std::io::Error) -> std::io::Error {
        // A socket timeout shows as EAGAIN ("Resource temporarily unavailable"): say what it is.
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            self.timed_out()
        } else {
            e
        }
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf).map_err(|e| self.map(e))
    }
}

impl Write for DeadlineStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let left = self.left()?;
        self.stream.set_write_timeout(Some(left))?;
        self.stream.write(buf).map_err(|e| self.map(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

/// A connection that finished its handshake, for the caller to admit or refuse.
#[derive(Debug)]
pub struct Arrival<T> {
    /// The connection, in blocking mode with `TCP_NODELAY`, with the socket timeouts the
    /// handshake left.
    pub stream: TcpStream,
    /// Where it came from.
    pub from: SocketAddr,
    /// What the handshake returned.
    pub value: T,
}

/// The caller's decision about an [`Arrival`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; keep serving.
    Admitted,
    /// Admitted, and it was the last one expected: [`serve`] returns.
    Finished,
    /// Refused, for this reason (logged, rate-limited).
    Refused(String),
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The caller said [`Admission::Finished`].
    Finished,
    /// The overall deadline passed first.
    DeadlinePassed,
    /// The stop flag given to [`serve_until_stopped`] was set.
    Stopped,
}

/// How often [`serve_until_stopped`] looks at its stop flag while nothing arrives.
const STOP_LOOK: Duration = Duration::from_millis(50);

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const DROPPED: u8 = 2;

/// A connection in its handshake.
struct Pending {
    id: u64,
    from: SocketAddr,
    /// A second handle on the socket, to shut it down (which ends the thread's blocked read).
    socket: TcpStream,
    /// `RUNNING`, then `DONE` (set by its thread) or `DROPPED` (set by `serve`), whichever first.
    state: Arc<AtomicU8>,
}

impl Pending {
    /// Drops the connection unless its handshake has just finished; whether it did.
    fn drop_connection(&self) -> bool {
        let dropped = self
            .state
            .compare_exchange(RUNNING, DROPPED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if dropped {
            let _ = self.socket.shutdown(Shutdown::Both);
        }
        dropped
    }
}

type Outcome<T> = (u64, SocketAddr, std::result::Result<(T, TcpStream), String>);

const LISTENER: mio::Token = mio::Token(0);
const WAKER: mio::Token = mio::Token(1);

/// Accepts connections on `listener` until `admit` says [`Admission::Finished`] or `deadline`
/// passes. Each connection runs `handshake` on a thread of its own, over a [`DeadlineStream`]
/// that ends `config.handshake_timeout` after the connection was accepted (or at `deadline`,
/// if sooner); its result goes to `admit`, on the calling thread. Connections still in their
/// handshake when `serve` returns are closed, and their threads joined (they end at once).
///
/// # Errors
/// [`Error::Io`] when the listener fails (other than a connection aborted before it was
/// accepted, or a shortage of descriptors, which drops the oldest connection in its handshake
/// and tries again) or the poller cannot be set up.
pub fn serve<T, H, A>(
    listener: &TcpListener,
    config: &GateConfig,
    deadline: Instant,
    handshake: H,
    admit: A,
) -> Result<Served>
where
    T: Send,
    H: Fn(&mut DeadlineStream) -> std::result::Result<T, String> + Sync,
    A: FnMut(Arrival<T>) -> Admission,
{
    serve_inner(listener, config, deadline, None, handshake, admit)
}

/// [`serve`] for a listener that stays open as long as its node runs (the tcp backend's data
/// listener, whose peers connect when they first need to): no overall deadline; it returns
/// [`Served::Stopped`] within 50 ms of `stop` being set, or when `admit` says
/// [`Admission::Finished`].
///
/// # Errors
/// As [`serve`].
pub fn serve_until_stopped<T, H, A>(
    listener: &TcpListener,
    config: &GateConfig,
    stop: &AtomicBool,
    handshake: H,
    admit: A,
) -> Result<Served>
where
    T: Send,
    H: Fn(&mut DeadlineStream) -> std::result::Result<T, String> + Sync,
    A: FnMut(Arrival<T>) -> Admission,
{
    // A year: far enough to be "never", near enough not to overflow an `Instant`.
    let never = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    serve_inner(listener, config, never, Some(stop), handshake, admit)
}

fn serve_inner<T, H, A>(
    listener: &TcpListener,
    config: &GateConfig,
    deadline: Instant,
    stop: Option<&AtomicBool>,
    handshake: H,
    mut admit: A,
) -> Result<Served>
where
    T: Send,
    H: Fn(&mut DeadlineStream) -> std::result::Result<T, String> + Sync,
    A: FnMut(Arrival<T>) -> Admission,
{
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io(format!("configuring the {}", config.name), e))?;
    let mut poll = mio::Poll::new().map_err(|e| Error::io("creating a poller", e))?;
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&listener.as_raw_fd()),
            LISTENER,
            mio::Interest::READABLE,
        )
        .map_err(|e| Error::io(format!("polling the {}", config.name), e))?;
    let waker = mio::Waker::new(poll.registry(), WAKER)
        .map_err(|e| Error::io("creating a poller's waker", e))?;
    let (tx, rx) = mpsc::channel::<Outcome<T>>();
    let mut log = RefusalLog::new(config.name);
    let handshake = &handshake;
    let waker = &waker;
    let served = std::thread::scope(|scope| {
        let mut pending: Vec<Pending> = Vec::new();
        let mut next_id = 0u64;
        let mut events = mio::Events::with_capacity(8);
        // Set when accepting ran out of descriptors: connections wait in the backlog, with no
        // new readiness to wake us, so the next wait is short.
        let mut short_of_descriptors;
        let served = 'serve: loop {
            while let Ok((id, from, outcome)) = rx.try_recv() {
                pending.retain(|p| p.id != id);
                match outcome {
                    Ok((value, stream)) => match admit(Arrival {
                        stream,
                        from,
                        value,
                    }) {
                        Admission::Admitted => {}
                        Admission::Finished => break 'serve Ok(Served::Finished),
                        Admission::Refused(why) => log.refused(from, &why),
                    },
                    Err(why) => log.refused(from, &why),
                }
            }
            log.tick();
            let now = Instant::now();
            if now >= deadline {
                break Ok(Served::DeadlinePassed);
            }
            if stop.is_some_and(|s| s.load(Ordering::Acquire)) {
                break Ok(Served::Stopped);
            }
            short_of_descriptors = false;
            loop {
                let (stream, from) = match listener.accept() {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if is_shortage(&e) => {
                        // Strangers must not make the job fail this way either: make room by
                        // dropping the oldest connection in its handshake, and accept again soon.
                        if !pending.is_empty() {
                            let oldest = pending.remove(0);
                            if oldest.drop_connection() {
                                log.refused(oldest.from, &format!("dropped in its handshake: {e}"));
                            }
                        }
                        short_of_descriptors = true;
                        break;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::Interrupted | std::io::ErrorKind::ConnectionAborted
                        ) =>
                    {
                        continue
                    }
                    Err(e) => {
                        break 'serve Err(Error::io(
                            format!("accepting a connection on the {}", config.name),
                            e,
                        ))
                    }
                };
                // Oldest first: `pending` is in the order of acceptance.
                while pending.len() >= config.max_pending.max(1) {
                    let oldest = pending.remove(0);
                    if oldest.drop_connection() {
                        log.refused(
                            oldest.from,
                            &format!(
                                "dropped in its handshake, the oldest of the {} held at most",
                                config.max_pending
                            ),
                        );
                    }
                }
                let socket = match stream.try_clone() {
                    Ok(s) => s,
                    Err(e) => {
                        log.refused(from, &format!("duplicating its socket: {e}"));
                        continue;
                    }
                };
                // Without TCP_NODELAY, the handshake's small writes in a row wait for a delayed
                // acknowledgement: 40 ms per connection.
                if let Err(e) = stream
                    .set_nonblocking(false)
                    .and_then(|()| stream.set_nodelay(true))
                {
                    log.refused(from, &format!("configuring its socket: {e}"));
                    continue;
                }
                let state = Arc::new(AtomicU8::new(RUNNING));
                let id = next_id;
                next_id += 1;
                let until = deadline.min(Instant::now() + config.handshake_timeout);
                let (tx, thread_state) = (tx.clone(), Arc::clone(&state));
                let spawned = std::thread::Builder::new()
                    .name("dsm-handshake".into())
                    .stack_size(HANDSHAKE_STACK)
                    .spawn_scoped(scope, move || {
                        let mut s = DeadlineStream::until(stream, until);
                        let outcome = handshake(&mut s).map(|v| (v, s.into_inner()));
                        let finished = thread_state
                            .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                            .is_ok();
                        // A connection dropped meanwhile was already counted as refused.
                        if finished && tx.send((id, from, outcome)).is_ok() {
                            let _ = waker.wake();
                        }
                    });
                match spawned {
                    Ok(_) => pending.push(Pending {
                        id,
                        from,
                        socket,
                        state,
                    }),
                    Err(e) => log.refused(from, &format!("starting its handshake thread: {e}")),
                }
            }
            let mut wait = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if short_of_descriptors {
                wait = wait.min(SHORTAGE_RETRY);
            }
            if stop.is_some() {
                wait = wait.min(STOP_LOOK);
            }
            match poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(Error::io(format!("polling the {}", config.name), e)),
            }
        };
        for p in &pending {
            p.drop_connection();
        }
        served
    });
    log.finish();
    served
}

/// How soon accepting is tried again after running out of descriptors.
const SHORTAGE_RETRY: Duration = Duration::from_millis(2);

/// Whether accepting failed for want of descriptors or memory (not a broken listener).
fn is_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Refusals for the log, with a rate limit.
struct RefusalLog {
    name: &'static str,
    shown: u32,
    unshown: u64,
    since: Instant,
}

impl RefusalLog {
    fn new(name: &'static str) -> RefusalLog {
        RefusalLog {
            name,
            shown: 0,
            unshown: 0,
            since: Instant::now(),
        }
    }

    fn refused(&mut self, from: SocketAddr, why: &str) {
        if self.shown < SHOWN_IN_FULL {
            self.shown += 1;
            tracing::warn!("{}: refused a connection from {from}: {why}", self.name);
            if self.shown == SHOWN_IN_FULL {
                tracing::warn!(
                    "{}: further refusals are counted, and summed up every {:?}",
                    self.name,
                    SUMMARY_EVERY
                );
                self.since = Instant::now();
            }
        } else {
            self.unshown += 1;
        }
    }

    fn tick(&mut self) {
        if self.unshown > 0 && self.since.elapsed() >= SUMMARY_EVERY {
            self.summary();
        }
    }

    fn summary(&mut self) {
        tracing::warn!(
            "{}: refused {} more connection(s) in the last {:.1?}",
            self.name,
            self.unshown,
            self.since.elapsed()
        );
        self.unshown = 0;
        self.since = Instant::now();
    }

    fn finish(&mut self) {
        if self.unshown > 0 {
            self.summary();
        }
    }
}

#[cfg(test)]
mod tests;
