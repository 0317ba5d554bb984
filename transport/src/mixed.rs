//! [`MixedTransport`]: one transport per peer. Peers on this node's host are reached through
//! shared memory ([`crate::shm`]); the others through tcp. Hosts are told apart at bootstrap by
//! [`crate::shm::host_id`], carried in the endpoint.
//!
//! The tcp mesh connects every pair of nodes, co-located ones too: it carries one-sided
//! operations on memory that cannot be shared (a program's own buffers registered with
//! [`crate::Region::from_raw`]) and notices lost peers as it does alone. Both backends deliver
//! messages into one mailbox, so receiving matches across them in arrival order.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::api::Transport;
use crate::completion::Completion;
use crate::error::{Error, Result};
use crate::mailbox::Mailbox;
use crate::region::Region;
use crate::shm::{PreparedShm, ShmTransport};
use crate::tcp::{PreparedTcp, TcpTransport};
use crate::types::{
    BackendKind, Capabilities, LocalSlice, Message, Op, Rank, RegionDesc, RemoteSlice, Tag,
};

/// A node between the two set-up phases of a mixed job.
#[derive(Debug)]
pub struct PreparedMixed {
    tcp: PreparedTcp,
    shm: PreparedShm,
}

/// See the module documentation.
#[derive(Debug)]
pub struct MixedTransport {
    tcp: TcpTransport,
    shm: ShmTransport,
    /// Per peer: an operation went to it over tcp (so a flush must go that way too).
    tcp_used: Vec<AtomicBool>,
}

impl PreparedMixed {
    /// Pairs a prepared tcp node and a prepared shm node of the same rank.
    pub fn new(tcp: PreparedTcp, shm: PreparedShm) -> PreparedMixed {
        PreparedMixed { tcp, shm }
    }

    /// Both endpoints: the tcp one's length (u32, little endian), the tcp one, the shm one.
    ///
    /// # Errors
    /// As [`PreparedTcp::endpoint`] and [`PreparedShm::endpoint`].
    pub fn endpoint(&self) -> Result<Vec<u8>> {
        let tcp = self.tcp.endpoint()?;
        let mut b = (tcp.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&tcp);
        b.extend_from_slice(&self.shm.endpoint()?);
        Ok(b)
    }

    /// Connects: shared memory to the nodes whose host id equals this one's, tcp to all.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a malformed endpoint; as [`PreparedTcp::connect`] and
    /// [`PreparedShm::connect`].
    pub fn connect(self, endpoints: &[Vec<u8>]) -> Result<MixedTransport> {
        let mut tcp_eps = Vec::with_capacity(endpoints.len());
        let mut shm_eps = Vec::with_capacity(endpoints.len());
        for (r, e) in endpoints.iter().enumerate() {
            let bad = || Error::Protocol {
                from: Rank(r as u32),
                detail: "not a mixed endpoint".into(),
            };
            let len = e
                .get(..4)
                .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize)
                .ok_or_else(bad)?;
            let tcp = e.get(4..4 + len).ok_or_else(bad)?;
            tcp_eps.push(tcp.to_vec());
            shm_eps.push(e[4 + len..].to_vec());
        }
        let nodes = endpoints.len();
        let parsed = crate::shm::parse_all(&shm_eps, nodes)?;
        let local: Vec<bool> = parsed.iter().map(|e| e.host == self.shm.host()).collect();
        let mailbox = Arc::new(Mailbox::new(nodes, self.tcp.spin()));
        let shm = self
            .shm
            .connect_some(&parsed, &local, Arc::clone(&mailbox))?;
        let tcp = self.tcp.connect_sharing(&tcp_eps, mailbox)?;
        // One round trip on every connection: until a peer has been heard from, tcp allows it
        // the connect timeout on top of the peer timeout, and peers on this host may never
        // say anything over tcp.
        for r in (0..nodes as u32).map(Rank).filter(|&r| r != tcp.rank()) {
            tcp.flush(r)?;
        }
        Ok(MixedTransport {
            tcp,
            shm,
            tcp_used: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
        })
    }
}

impl MixedTransport {
    /// Connects `n` nodes inside this process (all on this host, so every pair uses shared
    /// memory): for tests.
    ///
    /// # Errors
    /// As [`PreparedMixed::connect`].
    pub fn local_job(
        n: usize,
        tcp: &crate::TcpConfig,
        shm: &crate::ShmConfig,
    ) -> Result<Vec<MixedTransport>> {
        let host = shm.host.clone().unwrap_or_else(crate::shm::host_id);
        let hosts = vec![host.as_str(); n];
        MixedTransport::local_job_on(&hosts, tcp, shm)
    }

    /// Connects one node per entry of `hosts` inside this process, each claiming that host id:
    /// nodes with equal ids use shared memory between them, tcp to the others. For tests of
    /// jobs that span hosts.
    ///
    /// # Errors
    /// As [`PreparedMixed::connect`].
    pub fn local_job_on(
        hosts: &[&str],
        tcp: &crate::TcpConfig,
        shm: &crate::ShmConfig,
    ) -> Result<Vec<MixedTransport>> {
        let n = hosts.len();
        let prepared = (0..n)
            .map(|r| {
                let rank = Rank(r as u32);
                let mut shm = shm.clone();
                shm.host = Some(hosts[r].to_string());
                Ok(PreparedMixed::new(
                    TcpTransport::prepare(rank, n, tcp.clone())?,
                    ShmTransport::prepare(rank, n, shm)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let endpoints = prepared
            .iter()
            .map(PreparedMixed::endpoint)
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

    /// Which backend reaches `peer`: [`BackendKind::Shm`] or [`BackendKind::Tcp`].
    pub fn backend_of(&self, peer: Rank) -> BackendKind {
        if self.shm.reaches(peer) {
            BackendKind::Shm
        } else {
            BackendKind::Tcp
        }
    }

    /// A one-sided operation executed and waited for: directly through shared memory where it
    /// can, else over tcp.
    fn direct(&self, op: Op) -> Result<u64> {
        if self.shm.reaches(op.peer()) {
            if let Some(done) = self.shm.try_run(&op) {
                return done;
            }
        }
        self.via_tcp(op)?.wait()
    }

    fn via_tcp(&self, op: Op) -> Result<Completion> {
        if let Some(f) = self.tcp_used.get(op.peer().index()) {
            f.store(true, Ordering::Relaxed);
        }
        self.tcp.post(op)
    }
}

impl Transport for MixedTransport {
    fn rank(&self) -> Rank {
        self.tcp.rank()
    }

    fn nodes(&self) -> usize {
        self.tcp.nodes()
    }

    fn capabilities(&self) -> Capabilities {
        let (t, s) = (self.tcp.capabilities(), self.shm.capabilities());
        let any_shm =
            (0..self.nodes()).any(|r| r != self.rank().index() && self.shm.reaches(Rank(r as u32)));
        Capabilities {
            backend: BackendKind::Mixed,
            native_one_sided: false,
            atomics_coherent_with_cpu: t.atomics_coherent_with_cpu && s.atomics_coherent_with_cpu,
            ordered_writes: true,
            max_message: t.max_message.min(s.max_message),
            max_transfer: t.max_transfer.min(s.max_transfer),
            // A reduction served by the target's tcp thread is not atomic with respect to the
            // CPU atomics co-located peers apply directly.
            remote_reduce: !any_shm,
        }
    }

    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc> {
        let desc = self.tcp.register(region)?;
        match self.shm.register(region) {
            Ok(d) if d.key == desc.key => Ok(desc),
            other => {
                let _ = self.tcp.deregister(&desc);
                if let Ok(d) = other {
                    let _ = self.shm.deregister(&d);
                }
                Err(Error::InvalidArgument(
                    "the tcp and shm registrations of a region disagree".into(),
                ))
            }
        }
    }

    fn deregister(&self, desc: &RegionDesc) -> Result<()> {
        let shm = self.shm.deregister(desc);
        self.tcp.deregister(desc).and(shm)
    }

    fn post(&self, op: Op) -> Result<Completion> {
        if self.shm.reaches(op.peer()) {
            if let Some(done) = self.shm.try_post(&op) {
                return done;
            }
        }
        self.via_tcp(op)
    }

    fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        let mut out: Vec<Option<Completion>> = Vec::with_capacity(ops.len());
        let mut tcp_ops = Vec::new();
        for op in ops {
            if self.shm.reaches(op.peer()) {
                if let Some(done) = self.shm.try_post(&op) {
                    out.push(Some(done?));
                    continue;
                }
            }
            if let Some(f) = self.tcp_used.get(op.peer().index()) {
                f.store(true, Ordering::Relaxed);
            }
            tcp_ops.push(op);
            out.push(None);
        }
        let mut tcp_done = if tcp_ops.is_empty() {
            Vec::new()
        } else {
            self.tcp.post_batch(tcp_ops)?
        }
        .into_iter();
        out.into_iter()
            .map(|c| c.or_else(|| tcp_done.next()).ok_or(Error::Closed))
            .collect()
    }

    fn write_runs(
        &self,
        remote: RemoteSlice,
        local: &LocalSlice,
        runs: &[(u32, u32)],
    ) -> Result<Vec<Completion>> {
        if !self.shm.reaches(remote.rank()) {
            return self.tcp.write_runs(remote, local, runs);
        }
        crate::api::check_runs(&remote, local, runs)?;
        // One lookup of the peer's region and one copy per run (posting each run as a write
        // cost a completion, a lookup and a check per run: most of a release of scattered
        // writes).
        if let Some(done) = self.shm.try_write_runs(&remote, local, runs) {
            return done.map(|c| vec![c]);
        }
        let ops = crate::api::run_writes(&remote, local, runs)?;
        self.post_batch(ops)
    }

    fn add_strided(
        &self,
        first: RemoteSlice,
        stride: u64,
        count: u32,
        add: u64,
    ) -> Result<Vec<Completion>> {
        if !self.shm.reaches(first.rank()) {
            return self.tcp.add_strided(first, stride, count, add);
        }
        crate::api::check_strided(&first, stride)?;
        let ops = (0..u64::from(count))
            .map(|i| {
                Ok(Op::FetchAdd {
                    remote: first.region.word(first.offset + i * stride)?,
                    add,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        self.post_batch(ops)
    }

    fn accumulate(
        &self,
        remote: RemoteSlice,
        local: &LocalSlice,
        reduction: crate::Reduction,
        fetch: Option<LocalSlice>,
    ) -> Result<Completion> {
        if self.capabilities().remote_reduce {
            return self.tcp.accumulate(remote, local, reduction, fetch);
        }
        Err(Error::Unsupported(
            "mixed transport with co-located peers: remote reductions".into(),
        ))
    }

    fn read(&self, remote: RemoteSlice, local: LocalSlice) -> Result<()> {
        if let Some(done) = self.shm.fast_read(&remote, &local) {
            return Ok(done);
        }
        self.direct(Op::Read { remote, local }).map(drop)
    }

    fn write(&self, remote: RemoteSlice, local: LocalSlice) -> Result<()> {
        if let Some(done) = self.shm.fast_write(&remote, &local) {
            return Ok(done);
        }
        self.direct(Op::Write { remote, local }).map(drop)
    }

    fn compare_swap(&self, remote: RemoteSlice, expected: u64, desired: u64) -> Result<u64> {
        if let Some(old) = self.shm.fast_compare_swap(&remote, expected, desired) {
            return Ok(old);
        }
        self.direct(Op::CompareSwap {
            remote,
            expected,
            desired,
        })
    }

    fn fetch_add(&self, remote: RemoteSlice, add: u64) -> Result<u64> {
        if let Some(old) = self.shm.fast_fetch_add(&remote, add) {
            return Ok(old);
        }
        self.direct(Op::FetchAdd { remote, add })
    }

    fn flush(&self, peer: Rank) -> Result<()> {
        if self.shm.reaches(peer) {
            self.shm.flush(peer)?;
            if !self
                .tcp_used
                .get(peer.index())
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                return Ok(());
            }
        }
        self.tcp.flush(peer)
    }

    fn send(&self, peer: Rank, tag: Tag, data: &[u8]) -> Result<()> {
        if self.shm.reaches(peer) {
            self.shm.send(peer, tag, data)
        } else {
            self.tcp.send(peer, tag, data)
        }
    }

    fn send_owned(&self, peer: Rank, tag: Tag, data: Vec<u8>) -> Result<()> {
        if self.shm.reaches(peer) {
            self.shm.send_owned(peer, tag, data)
        } else {
            self.tcp.send_owned(peer, tag, data)
        }
    }

    // Both backends deliver into the shm transport's mailbox: receiving goes through it, which
    // reads the rings itself while it spins (tcp messages arrive through tcp's progress thread).
    fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        self.shm.recv(from, tag, timeout)
    }

    fn try_recv(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<Message>> {
        self.shm.try_recv(from, tag)
    }

    fn wait_message(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.shm.wait_message(from, tag, timeout)
    }

    fn wait_failure(&self) -> Error {
        self.shm.wait_failure()
    }

    fn close(&self) -> Result<()> {
        let shm = self.shm.close();
        self.tcp.close().and(shm)
    }
}
