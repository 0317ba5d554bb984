//! Setting a tcp node up: binding the data listener (`prepare`), publishing its address, and
//! starting the progress and acceptor threads (`connect`; connections are made on demand).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::config::TcpConfig;
use super::linger;
use super::mesh;
use super::progress;
use super::shared::{Shared, Slot};
use super::transport::{ConnDriver, TcpTransport};
use crate::completion::Driver;
use crate::error::{Error, Result};
use crate::mailbox::Mailbox;
use crate::region::RegionTable;
use crate::types::Rank;

/// A node between the two set-up phases: listening, not yet connected.
#[derive(Debug)]
pub struct PreparedTcp {
    rank: Rank,
    nodes: usize,
    config: TcpConfig,
    listener: TcpListener,
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
        crate::job::connect_all(prepared, &endpoints, PreparedTcp::connect)
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

    /// Takes every node's endpoint (indexed by rank) and starts the progress thread and the
    /// acceptor thread. No connection is made here: a node connects to a peer the first time
    /// it needs it, and accepts its peers' connections until it closes (see `mesh`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] and [`Error::Protocol`] for a wrong number of endpoints or
    /// a broken one; [`Error::Io`] when a thread or the poller cannot be set up. Nodes that
    /// connect to us without the secret are refused and logged.
    pub fn connect(self, endpoints: &[Vec<u8>]) -> Result<TcpTransport> {
        let mailbox = Arc::new(Mailbox::new(self.nodes, self.config.spin));
        self.connect_sharing(endpoints, mailbox)
    }

    /// How long waiters spin before they sleep (the mailbox's setting).
    pub(crate) fn spin(&self) -> std::time::Duration {
        self.config.spin
    }

    /// Like [`PreparedTcp::connect`], delivering messages into `mailbox` (shared with another
    /// backend: [`crate::mixed`]).
    pub(crate) fn connect_sharing(
        self,
        endpoints: &[Vec<u8>],
        mailbox: Arc<Mailbox>,
    ) -> Result<TcpTransport> {
        if endpoints.len() != self.nodes {
            return Err(Error::InvalidArgument(format!(
                "{} endpoints for a job of {} nodes",
                endpoints.len(),
                self.nodes
            )));
        }
        let endpoints = endpoints
            .iter()
            .enumerate()
            .map(|(peer, ep)| {
                std::str::from_utf8(ep)
                    .ok()
                    .and_then(|s| s.parse::<SocketAddr>().ok())
                    .ok_or_else(|| Error::Protocol {
                        from: Rank(peer as u32),
                        detail: "endpoint is not a socket address".into(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let poll = mio::Poll::new().map_err(|e| Error::io("creating the poller", e))?;
        let waker = mio::Waker::new(poll.registry(), progress::WAKER)
            .map_err(|e| Error::io("creating the poller's waker", e))?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(|e| Error::io("sharing the poller", e))?;
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
            linger_after_waits: AtomicBool::new(false),
            mailbox,
            config: self.config,
            regions: RegionTable::default(),
            endpoints,
            conns: (0..self.nodes).map(|_| Slot::default()).collect(),
            opened: AtomicUsize::new(0),
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
        let acceptor_shared = Arc::clone(&shared);
        let listener = self.listener;
        let acceptor = std::thread::Builder::new()
            .name(format!("dsm-accept-{}", self.rank))
            .stack_size(ACCEPTOR_STACK)
            .spawn(move || mesh::accept(&acceptor_shared, &listener));
        let acceptor = acceptor.map_err(|e| Error::io("starting the acceptor thread", e));
        let drivers = (0..self.nodes)
            .map(|peer| {
                Arc::new(ConnDriver {
                    shared: Arc::clone(&shared),
                    peer,
                }) as Arc<dyn Driver>
            })
            .collect();
        let transport = TcpTransport {
            drivers,
            shared,
            waker,
            progress: Mutex::new(Some(progress)),
            acceptor: Mutex::new(None),
            nodes: self.nodes,
        };
        // Dropping the transport (closing it) stops the progress thread on this error path.
        let handle = acceptor?;
        *transport.acceptor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(transport)
    }
}

/// Stack of the acceptor thread: the gate's loop and a decision at a time.
const ACCEPTOR_STACK: usize = 256 << 10;
