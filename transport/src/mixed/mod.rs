//! [`MixedTransport`]: one transport per peer. Peers on this node's host are reached through
//! shared memory ([`crate::shm`]); the others through tcp or RDMA verbs (the *far* backend).
//! Hosts are told apart at bootstrap by [`crate::shm::host_id`], carried in the endpoint.
//!
//! The far backend connects every pair of nodes, co-located ones too: it carries one-sided
//! operations on memory that cannot be shared (a program's own buffers registered with
//! [`crate::Region::from_raw`]) and notices lost peers as it does alone. Both backends deliver
//! messages into one mailbox, so receiving matches across them in arrival order.
//!
//! A region is registered with both backends under one key, the far backend's: over verbs
//! every region then gets a chunked key ([`crate::VerbsConfig::chunk_all`]), whose numbers are
//! never reused, as shared memory's keys must not be.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::api::Transport;
use crate::completion::Completion;
use crate::error::{Error, Result};
use crate::landing::{Accept, Landing};
use crate::mailbox::Mailbox;
use crate::region::Region;
use crate::shm::{PreparedShm, ShmTransport};
use crate::tcp::{PreparedTcp, TcpTransport};
use crate::types::{
    BackendKind, Capabilities, LocalSlice, Message, Op, Rank, RegionDesc, RemoteSlice, Tag,
};
use crate::verbs::{PreparedVerbs, VerbsTransport};
use far::{Far, PreparedFar};

mod far;

/// A node between the two set-up phases of a mixed job.
#[derive(Debug)]
pub struct PreparedMixed {
    far: PreparedFar,
    shm: PreparedShm,
}

/// See the module documentation.
#[derive(Debug)]
pub struct MixedTransport {
    far: Far,
    shm: ShmTransport,
    /// Per peer: an operation went to it through the far backend (so a flush must go that way
    /// too).
    far_used: Vec<AtomicBool>,
    /// Atomics go through the far backend for every peer, this node and its co-located peers
    /// too: its atomics are not atomic with respect to CPU atomics (RDMA NICs), and every
    /// atomic on a word must be made the same way.
    atomics_far: bool,
    /// Some other node is reached through shared memory (fixed at connection).
    any_shm: bool,
}

impl PreparedMixed {
    /// Pairs a prepared tcp node and a prepared shm node of the same rank.
    pub fn new(tcp: PreparedTcp, shm: PreparedShm) -> PreparedMixed {
        PreparedMixed {
            far: PreparedFar::Tcp(tcp),
            shm,
        }
    }

    /// Pairs a prepared verbs node and a prepared shm node of the same rank: RDMA to the
    /// other hosts. The verbs node must have been prepared with
    /// [`VerbsConfig::chunk_all`](crate::VerbsConfig::chunk_all).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it was not.
    pub fn with_verbs(verbs: PreparedVerbs, shm: PreparedShm) -> Result<PreparedMixed> {
        if !verbs.chunk_all() {
            return Err(Error::InvalidArgument(
                "a mixed job over verbs needs VerbsConfig::chunk_all".into(),
            ));
        }
        Ok(PreparedMixed {
            far: PreparedFar::Verbs(Box::new(verbs)),
            shm,
        })
    }

    /// Both endpoints: the far one's length (u32, little endian), the far one, the shm one.
    ///
    /// # Errors
    /// As [`PreparedTcp::endpoint`] and [`PreparedShm::endpoint`].
    pub fn endpoint(&self) -> Result<Vec<u8>> {
        let far = self.far.endpoint()?;
        let mut b = (far.len() as u32).to_le_bytes().to_vec();
        b.extend_from_slice(&far);
        b.extend_from_slice(&self.shm.endpoint()?);
        Ok(b)
    }

    /// Connects: shared memory to the nodes whose host id equals this one's, the far backend
    /// to all.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a malformed endpoint; as [`PreparedTcp::connect`] and
    /// [`PreparedShm::connect`].
    pub fn connect(self, endpoints: &[Vec<u8>]) -> Result<MixedTransport> {
        let mut far_eps = Vec::with_capacity(endpoints.len());
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
            let far = e.get(4..4 + len).ok_or_else(bad)?;
            far_eps.push(far.to_vec());
            shm_eps.push(e[4 + len..].to_vec());
        }
        let nodes = endpoints.len();
        let parsed = crate::shm::parse_all(&shm_eps, nodes)?;
        let local: Vec<bool> = parsed.iter().map(|e| e.host == self.shm.host()).collect();
        let mailbox = Arc::new(Mailbox::new(nodes, self.far.spin()));
        let shm = self
            .shm
            .connect_some(&parsed, &local, Arc::clone(&mailbox))?;
        let far = self.far.connect_sharing(&far_eps, mailbox)?;
        let me = far.get().rank();
        let atomics_far = !far.get().capabilities().atomics_coherent_with_cpu;
        let any_shm = (0..nodes).any(|r| r != me.index() && shm.reaches(Rank(r as u32)));
        Ok(MixedTransport {
            far,
            shm,
            far_used: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            atomics_far,
            any_shm,
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
        MixedTransport::local_job_with(hosts, shm, |rank| {
            Ok(PreparedFar::Tcp(TcpTransport::prepare(
                rank,
                n,
                tcp.clone(),
            )?))
        })
    }

    /// As [`MixedTransport::local_job_on`] with RDMA verbs (this machine's device) between
    /// the "hosts".
    ///
    /// # Errors
    /// As [`VerbsTransport::prepare`] and [`PreparedMixed::connect`].
    pub fn local_job_on_verbs(
        hosts: &[&str],
        verbs: &crate::VerbsConfig,
        shm: &crate::ShmConfig,
    ) -> Result<Vec<MixedTransport>> {
        let n = hosts.len();
        let verbs = crate::VerbsConfig {
            chunk_all: true,
            ..verbs.clone()
        };
        MixedTransport::local_job_with(hosts, shm, |rank| {
            let prepared = VerbsTransport::prepare(rank, n, verbs.clone())?;
            Ok(PreparedFar::Verbs(Box::new(prepared)))
        })
    }

    fn local_job_with(
        hosts: &[&str],
        shm: &crate::ShmConfig,
        far: impl Fn(Rank) -> Result<PreparedFar>,
    ) -> Result<Vec<MixedTransport>> {
        let n = hosts.len();
        let prepared = (0..n)
            .map(|r| {
                let rank = Rank(r as u32);
                let mut shm = shm.clone();
                shm.host = Some(hosts[r].to_string());
                Ok(PreparedMixed {
                    far: far(rank)?,
                    shm: ShmTransport::prepare(rank, n, shm)?,
                })
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

    /// Which backend reaches `peer`: [`BackendKind::Shm`], else the far backend's kind
    /// ([`BackendKind::Tcp`] or [`BackendKind::Verbs`]).
    pub fn backend_of(&self, peer: Rank) -> BackendKind {
        if self.shm.reaches(peer) {
            BackendKind::Shm
        } else {
            self.far.kind()
        }
    }

    /// Bytes pinned by RDMA registrations (`None` when the far backend is tcp).
    pub fn pinned(&self) -> Option<usize> {
        self.far.pinned()
    }

    /// A one-sided operation executed and waited for: directly through shared memory where it
    /// can, else through the far backend.
    fn direct(&self, op: Op) -> Result<u64> {
        if self.near(&op) {
            if let Some(done) = self.shm.try_run(&op) {
                return done;
            }
        }
        self.via_far(op)?.wait()
    }

    /// Whether `op` goes through shared memory (when the region can be shared).
    fn near(&self, op: &Op) -> bool {
        let atomic = matches!(op, Op::CompareSwap { .. } | Op::FetchAdd { .. });
        self.shm.reaches(op.peer()) && !(atomic && self.atomics_far)
    }

    fn via_far(&self, op: Op) -> Result<Completion> {
        if let Some(f) = self.far_used.get(op.peer().index()) {
            f.store(true, Ordering::Relaxed);
        }
        self.far.get().post(op)
    }
}

impl Transport for MixedTransport {
    fn rank(&self) -> Rank {
        self.far.get().rank()
    }

    fn nodes(&self) -> usize {
        self.far.get().nodes()
    }

    fn capabilities(&self) -> Capabilities {
        let (t, s) = (self.far.get().capabilities(), self.shm.capabilities());
        Capabilities {
            backend: BackendKind::Mixed,
            native_one_sided: false,
            atomics_coherent_with_cpu: t.atomics_coherent_with_cpu && s.atomics_coherent_with_cpu,
            ordered_writes: t.ordered_writes && s.ordered_writes,
            ordered_atomics: t.ordered_atomics && s.ordered_atomics,
            max_message: t.max_message.min(s.max_message),
            max_transfer: t.max_transfer.min(s.max_transfer),
            // A reduction served by the target's tcp thread is not atomic with respect to the
            // CPU atomics co-located peers apply directly.
            remote_reduce: t.remote_reduce && !self.any_shm,
        }
    }

    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc> {
        let desc = self.far.get().register(region)?;
        // Under the far backend's key (tcp's keys are region ids, verbs' chunked keys with
        // `chunk_all`: neither is ever reused), so that one descriptor serves every peer.
        if let Err(e) = self.shm.register_under(region, Some(desc.key.0)) {
            let _ = self.far.get().deregister(&desc);
            return Err(e);
        }
        Ok(desc)
    }

    fn deregister(&self, desc: &RegionDesc) -> Result<()> {
        let shm = self.shm.deregister(desc);
        self.far.get().deregister(desc).and(shm)
    }

    fn post(&self, op: Op) -> Result<Completion> {
        if self.near(&op) {
            if let Some(done) = self.shm.try_post(&op) {
                return done;
            }
        }
        self.via_far(op)
    }

    fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        let mut out: Vec<Option<Completion>> = Vec::with_capacity(ops.len());
        let mut far_ops = Vec::new();
        // Peers that an earlier operation of this batch reaches through the far backend: the
        // later ones go that way too, so that none overtakes it (the far backend keeps the
        // order of a batch, shared memory runs each operation as it comes).
        let mut far_peers: Vec<Rank> = Vec::new();
        for op in ops {
            if self.near(&op) && !far_peers.contains(&op.peer()) {
                if let Some(done) = self.shm.try_post(&op) {
                    out.push(Some(done?));
                    continue;
                }
            }
            if let Some(f) = self.far_used.get(op.peer().index()) {
                f.store(true, Ordering::Relaxed);
            }
            if !far_peers.contains(&op.peer()) {
                far_peers.push(op.peer());
            }
            far_ops.push(op);
            out.push(None);
        }
        let mut far_done = if far_ops.is_empty() {
            Vec::new()
        } else {
            self.far.get().post_batch(far_ops)?
        }
        .into_iter();
        out.into_iter()
            .map(|c| c.or_else(|| far_done.next()).ok_or(Error::Closed))
            .collect()
    }

    fn write_runs_batch(&self, writes: &[crate::RunsWrite]) -> Result<Vec<Vec<Completion>>> {
        // The far peers' writes go to their backend together (tcp writes them in few system
        // calls); the near ones are copies.
        let far: Vec<crate::RunsWrite> = writes
            .iter()
            .filter(|w| !self.shm.reaches(w.remote.rank()))
            .cloned()
            .collect();
        let mut far_done = if far.is_empty() {
            Vec::new()
        } else {
            self.far.get().write_runs_batch(&far)?
        }
        .into_iter();
        writes
            .iter()
            .map(|w| {
                if self.shm.reaches(w.remote.rank()) {
                    self.write_runs(w.remote, &w.local, &w.runs)
                } else {
                    far_done.next().ok_or(Error::Closed)
                }
            })
            .collect()
    }

    fn write_runs(
        &self,
        remote: RemoteSlice,
        local: &LocalSlice,
        runs: &[(u32, u32)],
    ) -> Result<Vec<Completion>> {
        if !self.shm.reaches(remote.rank()) {
            return self.far.get().write_runs(remote, local, runs);
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
        if !self.shm.reaches(first.rank()) || self.atomics_far {
            return self.far.get().add_strided(first, stride, count, add);
        }
        self.post_batch(crate::api::strided_adds(&first, stride, count, add)?)
    }

    fn accumulate(
        &self,
        remote: RemoteSlice,
        local: &LocalSlice,
        reduction: crate::Reduction,
        fetch: Option<LocalSlice>,
    ) -> Result<Completion> {
        // Asked of the far backend and `any_shm` directly: `capabilities` builds the whole
        // answer, and this is on every accumulate's path.
        if !self.any_shm && self.far.get().capabilities().remote_reduce {
            return self.far.get().accumulate(remote, local, reduction, fetch);
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
        if !self.atomics_far {
            if let Some(old) = self.shm.fast_compare_swap(&remote, expected, desired) {
                return Ok(old);
            }
        }
        self.direct(Op::CompareSwap {
            remote,
            expected,
            desired,
        })
    }

    fn fetch_add(&self, remote: RemoteSlice, add: u64) -> Result<u64> {
        if !self.atomics_far {
            if let Some(old) = self.shm.fast_fetch_add(&remote, add) {
                return Ok(old);
            }
        }
        self.direct(Op::FetchAdd { remote, add })
    }

    fn flush(&self, peer: Rank) -> Result<()> {
        if self.shm.reaches(peer) {
            self.shm.flush(peer)?;
            if !self
                .far_used
                .get(peer.index())
                .is_some_and(|f| f.load(Ordering::Relaxed))
            {
                return Ok(());
            }
        }
        self.far.get().flush(peer)
    }

    fn send(&self, peer: Rank, tag: Tag, data: &[u8]) -> Result<()> {
        if self.shm.reaches(peer) {
            self.shm.send(peer, tag, data)
        } else {
            self.far.get().send(peer, tag, data)
        }
    }

    fn send_parts(&self, peer: Rank, tag: Tag, parts: &[&[u8]]) -> Result<()> {
        if self.shm.reaches(peer) {
            self.shm.send_parts(peer, tag, parts)
        } else {
            self.far.get().send_parts(peer, tag, parts)
        }
    }

    unsafe fn land(
        &self,
        from: Rank,
        tag: Tag,
        head: usize,
        accept: Accept,
        dest: &mut [u8],
    ) -> Result<Option<Landing>> {
        if self.shm.reaches(from) {
            return Ok(None);
        }
        // SAFETY: the caller's contract, passed on unchanged.
        unsafe { self.far.get().land(from, tag, head, accept, dest) }
    }

    fn unland(&self, landing: &Landing) -> bool {
        self.far.get().unland(landing)
    }

    fn wait_landed(&self, landings: &[&Landing], timeout: Duration) {
        self.far.get().wait_landed(landings, timeout);
    }

    fn serve_until(&self, done: &mut dyn FnMut() -> bool) {
        self.far.get().serve_until(done);
    }

    fn set_linger(&self, on: bool) {
        self.far.get().set_linger(on);
    }

    unsafe fn send_lent(
        &self,
        peer: Rank,
        tag: Tag,
        head: &[u8],
        body: &[u8],
    ) -> Result<Option<Completion>> {
        if self.shm.reaches(peer) {
            self.shm.send_parts(peer, tag, &[head, body]).map(|()| None)
        } else {
            // SAFETY: the caller's contract, passed on unchanged.
            unsafe { self.far.get().send_lent(peer, tag, head, body) }
        }
    }

    fn send_owned(&self, peer: Rank, tag: Tag, data: Vec<u8>) -> Result<()> {
        if self.shm.reaches(peer) {
            self.shm.send_owned(peer, tag, data)
        } else {
            self.far.get().send_owned(peer, tag, data)
        }
    }

    // Both backends deliver into the shm transport's mailbox: receiving goes through it, which
    // reads the rings itself while it spins (far messages arrive through the far backend's
    // progress thread).
    fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        self.shm.recv(from, tag, timeout)
    }

    fn recv_lent(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
        take: &mut dyn FnMut(Rank, &[u8]) -> bool,
    ) -> Result<Option<Message>> {
        self.shm.recv_lent(from, tag, timeout, take)
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
        self.far.get().close().and(shm)
    }
}
