//! The `tcp` backend: one authenticated TCP connection per pair of nodes, with `TCP_NODELAY`,
//! and a progress thread per node that serves peers' one-sided requests against this node's
//! registered memory.
//!
//! Setting up is two-phase, so that a bootstrap can exchange endpoints in between:
//! [`TcpTransport::prepare`] binds the data listener and yields this node's endpoint;
//! [`PreparedTcp::connect`] takes every node's endpoint and builds the full mesh (each node
//! connects to the lower ranks and accepts the higher ones, authenticating both ways).

mod conn;
mod linger;
mod progress;

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::api::Transport;
use crate::auth::{handshake, Role, Secret};
use crate::completion::{Completion, Driver, DEFAULT_SPIN};
use crate::error::{Error, Result};
use crate::exec;
use crate::mailbox::Mailbox;
use crate::region::{Region, RegionTable};
use crate::types::{BackendKind, Capabilities, Message, Op, Rank, RegionDesc, Tag};
use crate::wire::{Header, Kind};

use conn::{Conn, Payload, Pending};

const AUTH_CONTEXT: &str = "dsm tcp data connection v1";

/// Default of [`TcpConfig::message_spin`].
pub const MESSAGE_SPIN: Duration = Duration::from_millis(1);

/// Settings of the tcp backend.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Address the data listener binds to (port chosen by the system). Loopback by default.
    pub bind: IpAddr,
    /// The job's shared secret; peers authenticate with it.
    pub secret: Secret,
    /// A peer silent for this long is declared lost. Heartbeats go out every quarter of it.
    pub peer_timeout: Duration,
    /// How long connecting to the mesh may take.
    pub connect_timeout: Duration,
    /// How long a waiter spins before it sleeps.
    pub spin: Duration,
    /// How long a thread waiting for a message spins (reading its connections) before it
    /// sleeps, while recent waits were shorter than that; after a longer wait it spins only
    /// [`TcpConfig::spin`]. It must outlast a round trip in which the peer slept (two wake-ups
    /// on each side, over 100 µs on a loaded two-vCPU machine): with a shorter spin, one slow
    /// round trip makes both sides sleep on every message from then on.
    pub message_spin: Duration,
    /// Largest payload of one frame: bounds messages and single transfers.
    pub max_payload: u32,
    /// Run first by the progress thread (the runtime pins it to a core with it).
    pub on_progress_start: Option<crate::ThreadHook>,
}

impl TcpConfig {
    /// Defaults: loopback, 10 s peer timeout, 30 s to connect, 64 MiB frames.
    pub fn new(secret: Secret) -> TcpConfig {
        TcpConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secret,
            peer_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            spin: DEFAULT_SPIN,
            message_spin: MESSAGE_SPIN,
            max_payload: 64 << 20,
            on_progress_start: None,
        }
    }
}

/// A node between the two set-up phases: listening, not yet connected.
#[derive(Debug)]
pub struct PreparedTcp {
    rank: Rank,
    nodes: usize,
    config: TcpConfig,
    listener: TcpListener,
}

/// State shared by the application threads and the progress thread.
#[derive(Debug)]
pub(crate) struct Shared {
    rank: Rank,
    config: TcpConfig,
    regions: RegionTable,
    /// The progress thread's poller (a descriptor of its own, valid after the thread ends):
    /// waiters withdraw and restore read interest through it.
    registry: mio::Registry,
    /// Gives lingering connections back to the progress thread (see `linger`).
    linger: linger::LingerTimer,
    mailbox: Arc<Mailbox>,
    /// Indexed by rank; `None` for this node.
    conns: Vec<Option<Arc<Conn>>>,
    /// Whether the last wait for a message outlasted `config.message_spin`: the next one then
    /// spins only `config.spin`.
    long_waits: AtomicBool,
    /// Set first by `close`: no new operations.
    closing: AtomicBool,
    /// Set by `close` once every goodbye is queued: the progress thread may finish.
    stopping: AtomicBool,
    start: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Takes a connection down and tells everyone waiting on it.
    fn peer_down(&self, conn: &Conn, error: Error) {
        conn.mark_down(error);
    }
}

/// The frame of a one-sided operation (request id still to be assigned), its payload, and
/// where a read's data goes.
fn frame_of(op: Op) -> (Header, Payload, Option<crate::LocalSlice>) {
    match op {
        Op::Read { remote, local } => {
            let mut h = Header::new(Kind::Read);
            (h.a, h.b, h.c) = (remote.region.key.0, remote.offset, remote.len as u64);
            (h, Payload::None, Some(local))
        }
        Op::Write { remote, local } => {
            let mut h = Header::new(Kind::Write);
            (h.a, h.b) = (remote.region.key.0, remote.offset);
            let payload = Payload::Region {
                region: Arc::clone(local.region()),
                offset: local.offset(),
                len: local.len(),
            };
            (h, payload, None)
        }
        Op::CompareSwap {
            remote,
            expected,
            desired,
        } => {
            let mut h = Header::new(Kind::CompareSwap);
            (h.a, h.b, h.c, h.d) = (remote.region.key.0, remote.offset, expected, desired);
            (h, Payload::None, None)
        }
        Op::FetchAdd { remote, add } => {
            let mut h = Header::new(Kind::FetchAdd);
            (h.a, h.b, h.c) = (remote.region.key.0, remote.offset, add);
            (h, Payload::None, None)
        }
    }
}

/// Reads one connection on behalf of a thread that waits for a response on it.
#[derive(Debug)]
struct ConnDriver {
    shared: Arc<Shared>,
    peer: usize,
}

impl Driver for ConnDriver {
    fn begin(&self) {
        if let Some(Some(conn)) = self.shared.conns.get(self.peer) {
            progress::waiter_arrives(&self.shared, conn);
        }
    }

    fn drive(&self) {
        if let Some(Some(conn)) = self.shared.conns.get(self.peer) {
            progress::drain(&self.shared, conn, progress::Reading::Waiter);
        }
    }

    fn end(&self) {
        if let Some(Some(conn)) = self.shared.conns.get(self.peer) {
            progress::waiter_leaves(&self.shared, conn, false);
        }
    }
}

/// A node of a job connected over TCP.
#[derive(Debug)]
pub struct TcpTransport {
    shared: Arc<Shared>,
    /// Per peer: lets a thread waiting for a response read the connection itself.
    drivers: Vec<Option<Arc<dyn Driver>>>,
    waker: mio::Waker,
    progress: Mutex<Option<JoinHandle<()>>>,
    nodes: usize,
}

impl TcpTransport {
    /// Binds this node's data listener on `config.bind`. Publish
    /// [`PreparedTcp::endpoint`] to the other nodes, then call [`PreparedTcp::connect`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a rank outside the job; [`Error::Io`] when binding fails.
    pub fn prepare(rank: Rank, nodes: usize, config: TcpConfig) -> Result<PreparedTcp> {
        if nodes == 0 || rank.index() >= nodes {
            return Err(Error::InvalidArgument(format!(
                "rank {rank} in a job of {nodes} nodes"
            )));
        }
        let listener = TcpListener::bind(SocketAddr::new(config.bind, 0))
            .map_err(|e| Error::io(format!("binding the data listener on {}", config.bind), e))?;
        Ok(PreparedTcp {
            rank,
            nodes,
            config,
            listener,
        })
    }
}

impl TcpTransport {
    /// Connects `n` nodes inside this process over real sockets on `config.bind`: a whole job for
    /// tests and benchmarks of one process.
    ///
    /// # Errors
    /// As [`TcpTransport::prepare`] and [`PreparedTcp::connect`].
    pub fn local_job(n: usize, config: &TcpConfig) -> Result<Vec<TcpTransport>> {
        let prepared = (0..n)
            .map(|r| TcpTransport::prepare(Rank(r as u32), n, config.clone()))
            .collect::<Result<Vec<_>>>()?;
        let endpoints = prepared
            .iter()
            .map(PreparedTcp::endpoint)
            .collect::<Result<Vec<_>>>()?;
        std::thread::scope(|s| {
            let handles: Vec<_> = prepared
                .into_iter()
                .map(|p| {
                    let endpoints = &endpoints;
                    s.spawn(move || p.connect(endpoints))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Closed)))
                .collect()
        })
    }
}

impl PreparedTcp {
    /// This node's endpoint: the listener's address, as bytes for the bootstrap's table.
    ///
    /// # Errors
    /// [`Error::Io`] when the listener's address cannot be read.
    pub fn endpoint(&self) -> Result<Vec<u8>> {
        let addr = self
            .listener
            .local_addr()
            .map_err(|e| Error::io("reading the listener address", e))?;
        Ok(addr.to_string().into_bytes())
    }

    /// Connects to every peer (given every node's endpoint, indexed by rank) and starts the
    /// progress thread.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the mesh is not complete within the connect timeout,
    /// [`Error::Auth`] when a peer we connect to fails authentication, [`Error::Io`] and
    /// [`Error::Protocol`] for broken endpoints. Nodes that connect to us without the secret are
    /// refused and logged, and we keep waiting for the real ones.
    pub fn connect(self, endpoints: &[Vec<u8>]) -> Result<TcpTransport> {
        if endpoints.len() != self.nodes {
            return Err(Error::InvalidArgument(format!(
                "{} endpoints for a job of {} nodes",
                endpoints.len(),
                self.nodes
            )));
        }
        let deadline = Instant::now() + self.config.connect_timeout;
        let mut streams: Vec<Option<TcpStream>> = (0..self.nodes).map(|_| None).collect();
        for (peer, ep) in endpoints.iter().enumerate().take(self.rank.index()) {
            let addr: SocketAddr = std::str::from_utf8(ep)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Protocol {
                    from: Rank(peer as u32),
                    detail: "endpoint is not a socket address".into(),
                })?;
            streams[peer] = Some(self.connect_one(Rank(peer as u32), addr, deadline)?);
        }
        let mut missing = self.nodes - 1 - self.rank.index();
        self.listener
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring the listener", e))?;
        while missing > 0 {
            match self.listener.accept() {
                Ok((stream, from)) => match self.accept_one(stream, deadline) {
                    Ok((peer, s)) if streams[peer.index()].is_none() => {
                        streams[peer.index()] = Some(s);
                        missing -= 1;
                    }
                    Ok((peer, _)) => tracing::warn!(
                        "refused a second connection claiming rank {peer} from {from}"
                    ),
                    Err(e) => tracing::warn!("refused a connection from {from}: {e}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let waiting: Vec<String> = (self.rank.index() + 1..self.nodes)
                            .filter(|r| streams[*r].is_none())
                            .map(|r| r.to_string())
                            .collect();
                        return Err(Error::Timeout(format!(
                            "ranks {} did not connect within {:?}",
                            waiting.join(", "),
                            self.config.connect_timeout
                        )));
                    }
                    crate::net::wait_readable(&self.listener, Duration::from_millis(50));
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("accepting a peer", e)),
            }
        }
        drop(self.listener);

        let poll = mio::Poll::new().map_err(|e| Error::io("creating the poller", e))?;
        let waker = mio::Waker::new(poll.registry(), progress::WAKER)
            .map_err(|e| Error::io("creating the poller's waker", e))?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(|e| Error::io("sharing the poller", e))?;
        let mailbox = Arc::new(Mailbox::new(self.nodes, self.config.spin));
        let mut conns = Vec::with_capacity(self.nodes);
        for (peer, s) in streams.into_iter().enumerate() {
            conns.push(match s {
                None => None,
                Some(s) => {
                    s.set_nonblocking(true)
                        .map_err(|e| Error::io("configuring a connection", e))?;
                    let read_fd = std::os::fd::AsFd::as_fd(&s)
                        .try_clone_to_owned()
                        .map_err(|e| Error::io("duplicating a connection's descriptor", e))?;
                    Some(Arc::new(Conn::new(
                        Rank(peer as u32),
                        mio::net::TcpStream::from_std(s),
                        read_fd,
                        Arc::clone(&mailbox),
                        self.config.max_payload,
                    )))
                }
            });
        }
        for conn in conns.iter().flatten() {
            progress::register(poll.registry(), conn)
                .map_err(|e| Error::io("registering a connection with the poller", e))?;
        }
        let linger = linger::LingerTimer::new()?;
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&linger.raw_fd()),
                progress::LINGER,
                mio::Interest::READABLE,
            )
            .map_err(|e| Error::io("registering the linger timer", e))?;
        let shared = Arc::new(Shared {
            rank: self.rank,
            registry,
            linger,
            mailbox,
            config: self.config,
            regions: RegionTable::default(),
            conns,
            long_waits: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            start: Instant::now(),
        });
        let thread_shared = Arc::clone(&shared);
        let hook = shared.config.on_progress_start.clone();
        let progress = std::thread::Builder::new()
            .name(format!("dsm-progress-{}", self.rank))
            .spawn(move || {
                if let Some(h) = hook {
                    h.run();
                }
                progress::run(thread_shared, poll)
            })
            .map_err(|e| Error::io("starting the progress thread", e))?;
        let drivers = shared
            .conns
            .iter()
            .enumerate()
            .map(|(peer, c)| {
                c.as_ref().map(|_| {
                    Arc::new(ConnDriver {
                        shared: Arc::clone(&shared),
                        peer,
                    }) as Arc<dyn Driver>
                })
            })
            .collect();
        Ok(TcpTransport {
            shared,
            drivers,
            waker,
            progress: Mutex::new(Some(progress)),
            nodes: self.nodes,
        })
    }

    fn connect_one(&self, peer: Rank, addr: SocketAddr, deadline: Instant) -> Result<TcpStream> {
        let mut backoff = Duration::from_millis(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout(format!(
                    "connecting to rank {peer} at {addr}"
                )));
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(mut s) => {
                    configure(&s, left)?;
                    let who = handshake(
                        &mut s,
                        &self.config.secret,
                        AUTH_CONTEXT,
                        Role::Connector,
                        self.rank.0,
                    )?;
                    if who.peer_rank != peer.0 {
                        return Err(Error::Protocol {
                            from: peer,
                            detail: format!("the node at {addr} says it is rank {}", who.peer_rank),
                        });
                    }
                    let mut ack = [0u8; 1];
                    s.read_exact(&mut ack).map_err(|e| {
                        Error::io(format!("waiting for rank {peer} to accept us"), e)
                    })?;
                    if ack[0] != 1 {
                        return Err(Error::Protocol {
                            from: peer,
                            detail: "refused our rank".into(),
                        });
                    }
                    s.set_read_timeout(None)
                        .map_err(|e| Error::io("configuring a connection", e))?;
                    return Ok(s);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    // The peer's listener is bound before its endpoint is published, so this
                    // only happens for a stale endpoint; retry until the deadline.
                    crate::net::backoff(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(Error::io(format!("connecting to rank {peer} at {addr}"), e)),
            }
        }
    }

    fn accept_one(&self, mut s: TcpStream, deadline: Instant) -> Result<(Rank, TcpStream)> {
        s.set_nonblocking(false)
            .map_err(|e| Error::io("configuring a connection", e))?;
        // A stranger that connects and says nothing holds us up for a bounded time only.
        let left = deadline.saturating_duration_since(Instant::now());
        configure(&s, left.min(Duration::from_secs(5)))?;
        let who = handshake(
            &mut s,
            &self.config.secret,
            AUTH_CONTEXT,
            Role::Acceptor,
            self.rank.0,
        )?;
        let peer = Rank(who.peer_rank);
        let ok = peer.index() > self.rank.index() && peer.index() < self.nodes;
        std::io::Write::write_all(&mut s, &[u8::from(ok)])
            .map_err(|e| Error::io("answering a peer", e))?;
        if !ok {
            return Err(Error::Protocol {
                from: peer,
                detail: "a rank that should not connect to us".into(),
            });
        }
        s.set_read_timeout(None)
            .map_err(|e| Error::io("configuring a connection", e))?;
        Ok((peer, s))
    }
}

fn configure(s: &TcpStream, timeout: Duration) -> Result<()> {
    let t = Some(timeout.max(Duration::from_millis(1)));
    s.set_nodelay(true)
        .and_then(|()| s.set_read_timeout(t))
        .and_then(|()| s.set_write_timeout(t))
        .map_err(|e| Error::io("configuring a connection", e))
}

impl TcpTransport {
    fn conn(&self, peer: Rank) -> Result<&Arc<Conn>> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        match self.shared.conns.get(peer.index()) {
            Some(Some(c)) => Ok(c),
            Some(None) => Err(Error::InvalidArgument("no connection to self".into())),
            None => Err(Error::InvalidArgument(format!(
                "rank {peer} outside a job of {} nodes",
                self.nodes
            ))),
        }
    }

    fn check_len(&self, len: usize) -> Result<()> {
        if len > self.shared.config.max_payload as usize {
            return Err(Error::InvalidArgument(format!(
                "{len} bytes exceed the transfer limit of {} bytes",
                self.shared.config.max_payload
            )));
        }
        Ok(())
    }

    /// What can be checked before an operation leaves: lengths, alignment, registration.
    fn check_op(&self, op: &Op) -> Result<()> {
        op.validate()?;
        if let Op::Read { local, .. } | Op::Write { local, .. } = op {
            self.shared.regions.check_local(local.region())?;
            self.check_len(local.len())?;
        }
        Ok(())
    }

    /// An operation on this node's own memory, executed in place.
    fn execute_here(&self, op: &Op) -> Result<Completion> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(match exec::execute(&self.shared.regions, op) {
            Ok(v) => Completion::ready(v),
            Err(e) => Completion::failed(e),
        })
    }

    fn request(
        &self,
        conn: &Conn,
        mut header: Header,
        payload: Payload,
        dest: Option<crate::LocalSlice>,
    ) -> Result<Completion> {
        let driver = self.drivers.get(conn.peer.index()).cloned().flatten();
        let (completion, completer) = Completion::driven(self.shared.config.spin, driver);
        header.id = conn.add_pending(Pending { completer, dest })?;
        conn.send(header, payload, self.shared.now_ms())?;
        Ok(completion)
    }
    /// How long the next wait for a message spins (see [`TcpConfig::message_spin`]).
    fn message_spin(&self, timeout: Option<Duration>) -> Duration {
        let config = &self.shared.config;
        if self.shared.long_waits.load(Ordering::Relaxed) {
            config.spin
        } else {
            config.spin.max(config.message_spin)
        }
        .min(timeout.unwrap_or(Duration::MAX))
    }

    /// Records how long a wait for a message took, for [`TcpTransport::message_spin`].
    fn waited(&self, start: Instant) {
        let long = start.elapsed() >= self.shared.config.message_spin;
        if long != self.shared.long_waits.load(Ordering::Relaxed) {
            self.shared.long_waits.store(long, Ordering::Relaxed);
        }
    }

    /// Waits for a message from `from` (any rank: `None`) until `found` finds what it looks
    /// for: first spinning `spin`, reading the connections with the progress thread's read
    /// interest withdrawn (a message then needs no wake-up of the progress thread and of this
    /// thread, each of which costs more than the message itself), then sleeping in `sleep`
    /// (given the time left of `timeout`, counted from `start`) while the progress thread reads.
    fn await_with<T>(
        &self,
        from: Option<Rank>,
        timeout: Option<Duration>,
        start: Instant,
        found: impl Fn() -> Option<Result<T>>,
        sleep: impl FnOnce(Option<Duration>) -> Result<T>,
    ) -> Result<T> {
        if let Some(f) = from {
            if f.index() >= self.nodes {
                return Err(Error::InvalidArgument(format!(
                    "rank {f} outside a job of {} nodes",
                    self.nodes
                )));
            }
        }
        if let Some(r) = found() {
            return r;
        }
        let spin = self.message_spin(timeout);
        let conns: Vec<&Conn> = match from {
            Some(f) => self
                .shared
                .conns
                .get(f.index())
                .and_then(Option::as_deref)
                .into_iter()
                .collect(),
            None => self.shared.conns.iter().flatten().map(|c| &**c).collect(),
        };
        if spin.is_zero() {
            // A poll: read what is there once, without withdrawing anything.
            for c in &conns {
                progress::drain(&self.shared, c, progress::Reading::Waiter);
            }
        } else if !conns.is_empty() {
            let mut driving = progress::Driving::new(&self.shared, conns);
            loop {
                driving.drive();
                if let Some(r) = found() {
                    driving.got_it();
                    return r;
                }
                if start.elapsed() >= spin {
                    break;
                }
            }
        }
        sleep(timeout.map(|t| t.saturating_sub(start.elapsed())))
    }
}

impl Transport for TcpTransport {
    fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        let mut out = Vec::with_capacity(ops.len());
        let mut frames: Vec<(Header, Payload)> = Vec::new();
        let mut target: Option<Rank> = None;
        let flush = |target: Option<Rank>, frames: &mut Vec<(Header, Payload)>| -> Result<()> {
            if let Some(peer) = target.filter(|_| !frames.is_empty()) {
                self.conn(peer)?
                    .send_batch(std::mem::take(frames), self.shared.now_ms())?;
            }
            Ok(())
        };
        let post_all = || -> Result<()> {
            for op in ops {
                self.check_op(&op)?;
                let peer = op.peer();
                if peer == self.shared.rank {
                    out.push(self.execute_here(&op)?);
                    continue;
                }
                if target != Some(peer) {
                    flush(target, &mut frames)?;
                    target = Some(peer);
                }
                let conn = self.conn(peer)?;
                let (mut h, payload, dest) = frame_of(op);
                let driver = self.drivers.get(conn.peer.index()).cloned().flatten();
                let (completion, completer) = Completion::driven(self.shared.config.spin, driver);
                h.id = conn.add_pending(Pending { completer, dest })?;
                frames.push((h, payload));
                out.push(completion);
            }
            Ok(())
        };
        let posted = post_all();
        // Whatever was registered goes out, even when a later operation was refused.
        flush(target, &mut frames)?;
        posted.map(|()| out)
    }

    fn add_strided(
        &self,
        first: crate::RemoteSlice,
        stride: u64,
        count: u32,
        add: u64,
    ) -> Result<Vec<Completion>> {
        crate::api::check_strided(&first, stride)?;
        if first.rank() == self.shared.rank {
            let (key, offset) = (first.region.key.0, first.offset);
            let done = match exec::add_strided(
                &self.shared.regions,
                key,
                offset,
                stride,
                count.into(),
                add,
            ) {
                Ok(()) => Completion::ready(0),
                Err(fault) => Completion::failed(Error::Remote {
                    peer: first.rank(),
                    fault,
                }),
            };
            return Ok(vec![done]);
        }
        let conn = self.conn(first.rank())?;
        let mut h = Header::new(Kind::AddStrided);
        (h.a, h.b, h.c, h.d) = (
            first.region.key.0,
            first.offset,
            add,
            (stride << 32) | u64::from(count),
        );
        Ok(vec![self.request(conn, h, Payload::None, None)?])
    }

    fn write_runs(
        &self,
        remote: crate::RemoteSlice,
        local: &crate::LocalSlice,
        runs: &[(u32, u32)],
    ) -> Result<Vec<Completion>> {
        crate::api::check_runs(&remote, local, runs)?;
        self.shared.regions.check_local(local.region())?;
        // The runs' bytes, read straight from the local region into the frame.
        let mut payload = crate::wire::runs_table(runs);
        for &(off, len) in runs {
            let at = payload.len();
            payload.resize(at + len as usize, 0);
            local
                .region()
                .read_at(local.offset() + off as usize, &mut payload[at..])?;
        }
        self.check_len(payload.len())?;
        if remote.rank() == self.shared.rank {
            let decoded = crate::wire::decode_runs(&payload).unwrap_or_default();
            let done = match exec::write_runs(
                &self.shared.regions,
                remote.region.key.0,
                remote.offset,
                &decoded,
            ) {
                Ok(()) => Completion::ready(0),
                Err(fault) => Completion::failed(Error::Remote {
                    peer: remote.rank(),
                    fault,
                }),
            };
            return Ok(vec![done]);
        }
        let conn = self.conn(remote.rank())?;
        let mut h = Header::new(Kind::WriteRuns);
        (h.a, h.b) = (remote.region.key.0, remote.offset);
        Ok(vec![self.request(
            conn,
            h,
            Payload::Bytes(payload),
            None,
        )?])
    }

    fn accumulate(
        &self,
        remote: crate::RemoteSlice,
        local: &crate::LocalSlice,
        reduction: crate::Reduction,
        fetch: Option<crate::LocalSlice>,
    ) -> Result<Completion> {
        crate::api::check_accumulate(&remote, local, reduction, fetch.as_ref())?;
        self.shared.regions.check_local(local.region())?;
        if let Some(f) = &fetch {
            self.shared.regions.check_local(f.region())?;
        }
        self.check_len(local.len())?;
        if remote.rank() == self.shared.rank {
            if self.shared.closing.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let table = &self.shared.regions;
            return Ok(
                match exec::accumulate_here(table, &remote, local, reduction, fetch.as_ref()) {
                    Ok(v) => Completion::ready(v),
                    Err(e) => Completion::failed(e),
                },
            );
        }
        let conn = self.conn(remote.rank())?;
        let mut h = Header::new(Kind::Accumulate);
        (h.a, h.b, h.c, h.d) = (
            remote.region.key.0,
            remote.offset,
            reduction.code(),
            u64::from(fetch.is_some()),
        );
        // The elements go straight from the local region into the socket.
        let payload = Payload::Region {
            region: Arc::clone(local.region()),
            offset: local.offset(),
            len: local.len(),
        };
        self.request(conn, h, payload, fetch)
    }

    fn rank(&self) -> Rank {
        self.shared.rank
    }

    fn nodes(&self) -> usize {
        self.nodes
    }

    fn capabilities(&self) -> Capabilities {
        let max = self.shared.config.max_payload as usize;
        Capabilities {
            backend: BackendKind::Tcp,
            native_one_sided: false,
            atomics_coherent_with_cpu: true,
            ordered_writes: true,
            max_message: max,
            max_transfer: max,
            remote_reduce: true,
        }
    }

    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc> {
        let key = self.shared.regions.insert(Arc::clone(region));
        Ok(RegionDesc {
            rank: self.shared.rank,
            key,
            addr: region.as_ptr() as u64,
            len: region.len() as u64,
        })
    }

    fn deregister(&self, desc: &RegionDesc) -> Result<()> {
        self.shared.regions.remove(desc.key)
    }

    fn post(&self, op: Op) -> Result<Completion> {
        self.check_op(&op)?;
        if op.peer() == self.shared.rank {
            return self.execute_here(&op);
        }
        let conn = self.conn(op.peer())?;
        let (h, payload, dest) = frame_of(op);
        self.request(conn, h, payload, dest)
    }

    fn flush(&self, peer: Rank) -> Result<()> {
        if peer == self.shared.rank {
            return Ok(());
        }
        let conn = self.conn(peer)?;
        self.request(conn, Header::new(Kind::Flush), Payload::None, None)?
            .wait()
            .map(drop)
    }

    fn send(&self, peer: Rank, tag: Tag, data: &[u8]) -> Result<()> {
        let mut owned = crate::pool::buffer(data.len());
        owned.extend_from_slice(data);
        self.send_owned(peer, tag, owned)
    }

    fn send_owned(&self, peer: Rank, tag: Tag, data: Vec<u8>) -> Result<()> {
        self.check_len(data.len())?;
        if peer == self.shared.rank {
            self.shared.mailbox.deliver(Message {
                source: peer,
                tag,
                data,
            });
            return Ok(());
        }
        let conn = self.conn(peer)?;
        let mut h = Header::new(Kind::Message);
        h.a = tag.0;
        conn.send(h, Payload::Bytes(data), self.shared.now_ms())
    }

    fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        let start = Instant::now();
        let mailbox = &self.shared.mailbox;
        let got = self.await_with(
            from,
            timeout,
            start,
            || mailbox.poll(from, tag),
            |left| mailbox.wait(from, tag, left),
        );
        self.waited(start);
        got
    }

    fn try_recv(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<Message>> {
        self.shared.mailbox.poll(from, tag)
    }

    fn wait_message(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let start = Instant::now();
        let mailbox = &self.shared.mailbox;
        let got = self.await_with(
            from,
            timeout,
            start,
            || mailbox.peek(from, tag),
            |left| mailbox.wait_present(from, tag, left),
        );
        self.waited(start);
        got
    }

    fn wait_failure(&self) -> Error {
        self.shared.mailbox.wait_failure()
    }

    fn close(&self) -> Result<()> {
        if self.shared.closing.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        for conn in self.shared.conns.iter().flatten() {
            let _ = conn.send(
                Header::new(Kind::Goodbye),
                Payload::None,
                self.shared.now_ms(),
            );
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        let woke = self.waker.wake();
        let handle = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the progress thread panicked");
            }
        }
        self.shared.mailbox.close();
        woke.map_err(|e| Error::io("waking the progress thread", e))
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
