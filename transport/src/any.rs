//! [`AnyTransport`]: the closed set of backends, selected at run time.

use std::sync::Arc;
use std::time::Duration;

use crate::api::Transport;
use crate::completion::Completion;
use crate::error::Result;
use crate::landing::{Accept, Landing};
use crate::loopback::LoopbackTransport;
use crate::mixed::MixedTransport;
use crate::region::Region;
use crate::shm::ShmTransport;
use crate::tcp::TcpTransport;
use crate::types::{Capabilities, Message, Op, Rank, RegionDesc, Tag};
use crate::verbs::VerbsTransport;

/// Whichever backend the job runs on. Each call is a `match`, so the hot path has no virtual
/// call and the compiler can inline the backend.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyTransport {
    /// In-process ranks.
    Loopback(LoopbackTransport),
    /// TCP sockets.
    Tcp(TcpTransport),
    /// RDMA verbs.
    Verbs(VerbsTransport),
    /// Shared memory, every node on one host.
    Shm(ShmTransport),
    /// Shared memory to peers on this host, tcp to the others.
    Mixed(MixedTransport),
}

macro_rules! each {
    ($self:expr, $t:ident => $e:expr) => {
        match $self {
            AnyTransport::Loopback($t) => $e,
            AnyTransport::Tcp($t) => $e,
            AnyTransport::Verbs($t) => $e,
            AnyTransport::Shm($t) => $e,
            AnyTransport::Mixed($t) => $e,
        }
    };
}

impl AnyTransport {
    /// Which backend carries operations and messages to `peer` (for a mixed job, the one
    /// chosen for that peer).
    pub fn backend_of(&self, peer: Rank) -> crate::BackendKind {
        match self {
            AnyTransport::Mixed(t) => t.backend_of(peer),
            other => other.capabilities().backend,
        }
    }

    /// Bytes pinned by RDMA registrations of the runtime's and users' regions (`None` for a
    /// backend that pins nothing).
    pub fn pinned(&self) -> Option<usize> {
        match self {
            AnyTransport::Verbs(t) => Some(t.pinned()),
            AnyTransport::Mixed(t) => t.pinned(),
            _ => None,
        }
    }
}

impl Transport for AnyTransport {
    fn rank(&self) -> Rank {
        each!(self, t => t.rank())
    }
    fn nodes(&self) -> usize {
        each!(self, t => t.nodes())
    }
    fn capabilities(&self) -> Capabilities {
        each!(self, t => t.capabilities())
    }
    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc> {
        each!(self, t => t.register(region))
    }
    fn deregister(&self, desc: &RegionDesc) -> Result<()> {
        each!(self, t => t.deregister(desc))
    }
    fn post(&self, op: Op) -> Result<Completion> {
        each!(self, t => t.post(op))
    }
    fn flush(&self, peer: Rank) -> Result<()> {
        each!(self, t => t.flush(peer))
    }
    fn read(&self, remote: crate::RemoteSlice, local: crate::LocalSlice) -> Result<()> {
        each!(self, t => t.read(remote, local))
    }
    fn write(&self, remote: crate::RemoteSlice, local: crate::LocalSlice) -> Result<()> {
        each!(self, t => t.write(remote, local))
    }
    fn compare_swap(&self, remote: crate::RemoteSlice, expected: u64, desired: u64) -> Result<u64> {
        each!(self, t => t.compare_swap(remote, expected, desired))
    }
    fn fetch_add(&self, remote: crate::RemoteSlice, add: u64) -> Result<u64> {
        each!(self, t => t.fetch_add(remote, add))
    }
    fn send(&self, peer: Rank, tag: Tag, data: &[u8]) -> Result<()> {
        each!(self, t => t.send(peer, tag, data))
    }
    fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        each!(self, t => t.recv(from, tag, timeout))
    }
    fn recv_lent(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
        take: &mut dyn FnMut(Rank, &[u8]) -> bool,
    ) -> Result<Option<Message>> {
        each!(self, t => t.recv_lent(from, tag, timeout, take))
    }
    fn send_owned(&self, peer: Rank, tag: Tag, data: Vec<u8>) -> Result<()> {
        each!(self, t => t.send_owned(peer, tag, data))
    }
    fn send_parts(&self, peer: Rank, tag: Tag, parts: &[&[u8]]) -> Result<()> {
        each!(self, t => t.send_parts(peer, tag, parts))
    }
    unsafe fn send_lent(
        &self,
        peer: Rank,
        tag: Tag,
        head: &[u8],
        body: &[u8],
    ) -> Result<Option<Completion>> {
        // SAFETY: the caller's contract, passed on unchanged.
        each!(self, t => unsafe { t.send_lent(peer, tag, head, body) })
    }
    unsafe fn land(
        &self,
        from: Rank,
        tag: Tag,
        head: usize,
        accept: Accept,
        dest: &mut [u8],
    ) -> Result<Option<Landing>> {
        // SAFETY: the caller's contract, passed on unchanged.
        each!(self, t => unsafe { t.land(from, tag, head, accept, dest) })
    }
    fn unland(&self, landing: &Landing) -> bool {
        each!(self, t => t.unland(landing))
    }
    fn wait_landed(&self, landings: &[&Landing], timeout: Duration) {
        each!(self, t => t.wait_landed(landings, timeout))
    }
    fn serve_until(&self, done: &mut dyn FnMut() -> bool) {
        each!(self, t => t.serve_until(done))
    }
    fn set_linger(&self, on: bool) {
        each!(self, t => t.set_linger(on))
    }
    fn try_recv(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<Message>> {
        each!(self, t => t.try_recv(from, tag))
    }
    fn wait_message(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        each!(self, t => t.wait_message(from, tag, timeout))
    }
    fn wait_failure(&self) -> crate::Error {
        each!(self, t => t.wait_failure())
    }
    fn close(&self) -> Result<()> {
        each!(self, t => t.close())
    }
    fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        each!(self, t => t.post_batch(ops))
    }
    fn write_runs(
        &self,
        remote: crate::RemoteSlice,
        local: &crate::LocalSlice,
        runs: &[(u32, u32)],
    ) -> Result<Vec<Completion>> {
        each!(self, t => t.write_runs(remote, local, runs))
    }
    fn write_runs_batch(&self, writes: &[crate::RunsWrite]) -> Result<Vec<Vec<crate::Completion>>> {
        each!(self, t => t.write_runs_batch(writes))
    }
    fn add_strided(
        &self,
        first: crate::RemoteSlice,
        stride: u64,
        count: u32,
        add: u64,
    ) -> Result<Vec<Completion>> {
        each!(self, t => t.add_strided(first, stride, count, add))
    }
    fn accumulate(
        &self,
        remote: crate::RemoteSlice,
        local: &crate::LocalSlice,
        reduction: crate::Reduction,
        fetch: Option<crate::LocalSlice>,
    ) -> Result<Completion> {
        each!(self, t => t.accumulate(remote, local, reduction, fetch))
    }
    fn post_all(&self, ops: impl IntoIterator<Item = Op>) -> Result<()> {
        each!(self, t => t.post_all(ops))
    }
}
