//! Setting an `shm` node up: creating its control segment (`prepare`), publishing its endpoint,
//! and mapping the control segments of the peers on its host (`connect`).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8};
use std::sync::{Arc, Mutex};

use super::config::ShmConfig;
use super::host::{host_id, Endpoint};
use super::layout::{self, Control};
use super::regions::PeerRegions;
use super::shared::{Peer, Shared, UP};
use super::transport::ShmTransport;
use super::wake;
use crate::error::{Error, Result};
use crate::mailbox::Mailbox;
use crate::memfd::{self, Mapping};
use crate::region::RegionTable;
use crate::types::Rank;

/// A node between the two set-up phases: its control segment exists, peers are not mapped yet.
#[derive(Debug)]
pub struct PreparedShm {
    rank: Rank,
    nodes: usize,
    config: ShmConfig,
    host: String,
    control: Control,
    fd: OwnedFd,
}

impl ShmTransport {
    /// Creates this node's control segment. Publish [`PreparedShm::endpoint`] to the other
    /// nodes (through an authenticated bootstrap), then call [`PreparedShm::connect`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a rank outside the job, a ring size that is not a
    /// positive multiple of 64, or a message limit over 4 GiB; [`Error::Io`] when the segment cannot be created.
    pub fn prepare(rank: Rank, nodes: usize, config: ShmConfig) -> Result<PreparedShm> {
        if nodes == 0 || rank.index() >= nodes || u32::try_from(nodes).is_err() {
            return Err(Error::InvalidArgument(format!(
                "rank {rank} in a job of {nodes} nodes"
            )));
        }
        let ring = config.ring_bytes;
        if ring == 0 || !ring.is_multiple_of(64) || ring > 1 << 30 {
            return Err(Error::InvalidArgument(format!(
                "shm ring of {ring} bytes: a positive multiple of 64 up to 1 GiB"
            )));
        }
        if u32::try_from(config.max_message).is_err() {
            return Err(Error::InvalidArgument(format!(
                "shm messages of up to {} bytes: frames carry a 32-bit length",
                config.max_message
            )));
        }
        let len = layout::size(nodes, ring);
        let fd = memfd::create(c"dsm-shm-control", len)?;
        let map = Mapping::shared(&fd, 0, len)?;
        let control = Control::init(map, nodes, rank.0, ring);
        let host = config.host.clone().unwrap_or_else(host_id);
        Ok(PreparedShm {
            rank,
            nodes,
            config,
            host,
            control,
            fd,
        })
    }

    /// Connects `n` nodes inside this process: a whole job for tests and benchmarks.
    ///
    /// # Errors
    /// As [`ShmTransport::prepare`] and [`PreparedShm::connect`].
    pub fn local_job(n: usize, config: &ShmConfig) -> Result<Vec<ShmTransport>> {
        let prepared = (0..n)
            .map(|r| ShmTransport::prepare(Rank(r as u32), n, config.clone()))
            .collect::<Result<Vec<_>>>()?;
        let endpoints = prepared
            .iter()
            .map(PreparedShm::endpoint)
            .collect::<Result<Vec<_>>>()?;
        prepared
            .into_iter()
            .map(|p| p.connect(&endpoints))
            .collect()
    }
}

impl PreparedShm {
    /// This node's endpoint (host, process, control segment), as bytes for the bootstrap.
    ///
    /// # Errors
    /// [`Error::Io`] when the segment's identity cannot be read.
    pub fn endpoint(&self) -> Result<Vec<u8>> {
        let (dev, ino, _) = memfd::identity(&self.fd)?;
        Ok(Endpoint {
            host: self.host.clone(),
            pid: std::process::id(),
            fd: self.fd.as_raw_fd() as u64,
            dev,
            ino,
        }
        .to_bytes())
    }

    /// This node's host id (see [`crate::shm::host_id`]).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Maps the control segment of every peer (given every node's endpoint, indexed by rank)
    /// and starts the progress thread. Every node must be on this host.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming a node on another host; [`Error::Protocol`] for a broken
    /// endpoint or segment; [`Error::PeerLost`] for a peer whose process is gone; [`Error::Io`].
    pub fn connect(self, endpoints: &[Vec<u8>]) -> Result<ShmTransport> {
        let nodes = self.nodes;
        let mailbox = Arc::new(Mailbox::new(nodes, self.config.message_spin));
        let parsed = parse_all(endpoints, nodes)?;
        if let Some((r, e)) = parsed.iter().enumerate().find(|(_, e)| e.host != self.host) {
            return Err(Error::Unsupported(format!(
                "shm: rank {r} is on another host ({}, this is {}); use DSM_TRANSPORT=auto or tcp",
                e.host, self.host
            )));
        }
        let local = vec![true; nodes];
        self.connect_some(&parsed, &local, mailbox)
    }

    /// Maps the segments of the nodes marked in `local` (this node's own mark is ignored),
    /// delivering messages into `mailbox`: for a job mixing backends.
    pub(crate) fn connect_some(
        self,
        endpoints: &[Endpoint],
        local: &[bool],
        mailbox: Arc<Mailbox>,
    ) -> Result<ShmTransport> {
        let mut peers = Vec::with_capacity(self.nodes);
        for (r, e) in endpoints.iter().enumerate() {
            if r == self.rank.index() || !local.get(r).copied().unwrap_or(false) {
                peers.push(None);
                continue;
            }
            peers.push(Some(open_peer(Rank(r as u32), e, self.nodes)?));
        }
        let shared = Arc::new(Shared {
            rank: self.rank,
            nodes: self.nodes,
            readers: (0..self.nodes).map(|_| Mutex::default()).collect(),
            config: self.config,
            control: self.control,
            _control_fd: self.fd,
            regions: RegionTable::default(),
            published: Mutex::new(HashMap::new()),
            peers,
            mailbox,
            closing: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let hook = shared.config.on_progress_start.clone();
        let progress = std::thread::Builder::new()
            .name(format!("dsm-shm-{}", self.rank))
            .spawn(move || {
                if let Some(h) = hook {
                    h.run();
                }
                super::progress::run(thread_shared)
            })
            .map_err(|e| Error::io("starting the shm progress thread", e))?;
        Ok(ShmTransport {
            shared,
            progress: Mutex::new(Some(progress)),
        })
    }
}

/// Parses every node's endpoint.
pub(crate) fn parse_all(endpoints: &[Vec<u8>], nodes: usize) -> Result<Vec<Endpoint>> {
    if endpoints.len() != nodes {
        return Err(Error::InvalidArgument(format!(
            "{} endpoints for a job of {nodes} nodes",
            endpoints.len()
        )));
    }
    endpoints
        .iter()
        .enumerate()
        .map(|(r, b)| Endpoint::parse(b, Rank(r as u32)))
        .collect()
}

/// Opens, checks and maps the control segment of peer `rank`, and starts watching its process.
fn open_peer(rank: Rank, e: &Endpoint, nodes: usize) -> Result<Peer> {
    let pidfd = wake::pidfd(e.pid).map_err(|err| Error::PeerLost {
        peer: rank,
        reason: format!("its process {} cannot be watched: {err}", e.pid),
    })?;
    let path = format!("/proc/{}/fd/{}", e.pid, e.fd);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|err| Error::io(format!("opening rank {rank}'s control segment {path}"), err))?;
    let fd = OwnedFd::from(file);
    let (dev, ino, size) = memfd::identity(&fd)?;
    if (dev, ino) != (e.dev, e.ino) {
        return Err(Error::Protocol {
            from: rank,
            detail: format!("{path} is not the control segment it published"),
        });
    }
    let len = usize::try_from(size).map_err(|_| Error::Protocol {
        from: rank,
        detail: "control segment too large".into(),
    })?;
    let control = Control::open(Mapping::shared(&fd, 0, len)?, nodes, rank.0)?;
    if control.pid() != e.pid {
        return Err(Error::Protocol {
            from: rank,
            detail: "control segment of another process".into(),
        });
    }
    Ok(Peer {
        rank,
        control,
        pid: e.pid,
        pidfd,
        regions: PeerRegions::default(),
        send: Mutex::new(()),
        state: AtomicU8::new(UP),
        beat: Mutex::new((0, std::time::Instant::now())),
    })
}
