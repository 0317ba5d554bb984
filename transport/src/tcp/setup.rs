//! Setting a tcp node up: binding the data listener (`prepare`), publishing its address, and
//! building the mesh and starting the progress thread (`connect`).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::config::TcpConfig;
use super::conn::Conn;
use super::linger;
use super::mesh::{self, Node};
use super::progress;
use super::shared::Shared;
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

    /// Connects to every peer (given every node's endpoint, indexed by rank) and starts the
    /// progress thread.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the mesh is not complete within the connect timeout,
    /// [`Error::Auth`] when a peer we connect to fails authentication, [`Error::Io`] and
    /// [`Error::Protocol`] for broken endpoints. Nodes that connect to us without the secret are
    /// refused and logged, and we keep waiting for the real ones.
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
        let streams = mesh::streams(
            &Node {
                rank: self.rank,
                nodes: self.nodes,
                config: &self.config,
                listener: &self.listener,
            },
            endpoints,
        )?;
        drop(self.listener);

        let poll = mio::Poll::new().map_err(|e| Error::io("creating the poller", e))?;
        let waker = mio::Waker::new(poll.registry(), progress::WAKER)
            .map_err(|e| Error::io("creating the poller's waker", e))?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(|e| Error::io("sharing the poller", e))?;
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
}
