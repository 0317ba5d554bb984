//! The `loopback` backend: several ranks inside one process, for unit tests and for running the
//! layers above without any network.
//!
//! One-sided operations execute inline on the target's registered memory, with the same bounds
//! checks and faults as the other backends; messages go straight into the target's mailbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::api::Transport;
use crate::completion::{Completion, DEFAULT_SPIN};
use crate::error::{Error, Result};
use crate::exec;
use crate::mailbox::Mailbox;
use crate::region::{Region, RegionTable};
use crate::types::{BackendKind, Capabilities, Message, Op, Rank, RegionDesc, Tag};

/// Largest message or transfer on loopback.
const MAX_LEN: usize = 1 << 30;

#[derive(Debug)]
struct Node {
    regions: RegionTable,
    mailbox: Mailbox,
    closed: AtomicBool,
}

/// One rank of an in-process job. Create a whole job with [`LoopbackTransport::job`].
#[derive(Debug)]
pub struct LoopbackTransport {
    rank: Rank,
    nodes: Arc<Vec<Node>>,
}

impl LoopbackTransport {
    /// Creates `n` ranks that share this process. Give each to its own thread.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `n` is 0 or larger than `u32::MAX`.
    pub fn job(n: usize) -> Result<Vec<LoopbackTransport>> {
        if n == 0 || u32::try_from(n).is_err() {
            return Err(Error::InvalidArgument(format!(
                "a loopback job of {n} ranks"
            )));
        }
        let nodes: Arc<Vec<Node>> = Arc::new(
            (0..n)
                .map(|_| Node {
                    regions: RegionTable::default(),
                    mailbox: Mailbox::new(n, DEFAULT_SPIN),
                    closed: AtomicBool::new(false),
                })
                .collect(),
        );
        Ok((0..n as u32)
            .map(|r| LoopbackTransport {
                rank: Rank(r),
                nodes: Arc::clone(&nodes),
            })
            .collect())
    }

    fn me(&self) -> &Node {
        &self.nodes[self.rank.index()]
    }

    fn peer(&self, rank: Rank) -> Result<&Node> {
        if self.me().closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let node = self.nodes.get(rank.index()).ok_or_else(|| {
            Error::InvalidArgument(format!("rank {rank} outside a job of {}", self.nodes.len()))
        })?;
        if node.closed.load(Ordering::Acquire) {
            return Err(Error::PeerClosed(rank));
        }
        Ok(node)
    }
}

impl Transport for LoopbackTransport {
    fn rank(&self) -> Rank {
        self.rank
    }

    fn nodes(&self) -> usize {
        self.nodes.len()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: BackendKind::Loopback,
            native_one_sided: true,
            atomics_coherent_with_cpu: true,
            ordered_writes: true,
            ordered_atomics: true,
            max_message: MAX_LEN,
            max_transfer: MAX_LEN,
            remote_reduce: true,
        }
    }

    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc> {
        let key = self.me().regions.insert(Arc::clone(region));
        Ok(RegionDesc {
            rank: self.rank,
            key,
            addr: region.as_ptr() as u64,
            len: region.len() as u64,
        })
    }

    fn deregister(&self, desc: &RegionDesc) -> Result<()> {
        self.me().regions.remove(desc.key)
    }

    fn post(&self, op: Op) -> Result<Completion> {
        op.validate()?;
        if let Op::Read { local, .. } | Op::Write { local, .. } = &op {
            self.me().regions.check_local(local.region())?;
        }
        let target = self.peer(op.peer())?;
        Ok(match exec::execute(&target.regions, &op) {
            Ok(v) => Completion::ready(v),
            Err(e) => Completion::failed(e),
        })
    }

    fn accumulate(
        &self,
        remote: crate::RemoteSlice,
        local: &crate::LocalSlice,
        reduction: crate::Reduction,
        fetch: Option<crate::LocalSlice>,
    ) -> Result<Completion> {
        crate::api::check_accumulate(&remote, local, reduction, fetch.as_ref())?;
        self.me().regions.check_local(local.region())?;
        if let Some(f) = &fetch {
            self.me().regions.check_local(f.region())?;
        }
        let target = self.peer(remote.rank())?;
        Ok(
            match exec::accumulate_here(&target.regions, &remote, local, reduction, fetch.as_ref())
            {
                Ok(v) => Completion::ready(v),
                Err(e) => Completion::failed(e),
            },
        )
    }

    fn flush(&self, peer: Rank) -> Result<()> {
        self.peer(peer).map(drop)
    }

    fn send(&self, peer: Rank, tag: Tag, data: &[u8]) -> Result<()> {
        if data.len() > MAX_LEN {
            return Err(Error::InvalidArgument(format!(
                "message of {} bytes",
                data.len()
            )));
        }
        self.peer(peer)?.mailbox.deliver(Message {
            source: self.rank,
            tag,
            data: data.to_vec(),
        });
        Ok(())
    }

    fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        self.me().mailbox.recv(from, tag, timeout)
    }

    fn try_recv(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<Message>> {
        self.me().mailbox.poll(from, tag)
    }

    fn wait_message(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        self.me().mailbox.await_message(from, tag, timeout)
    }

    fn wait_failure(&self) -> Error {
        self.me().mailbox.wait_failure()
    }

    fn close(&self) -> Result<()> {
        let me = self.me();
        if !me.closed.swap(true, Ordering::AcqRel) {
            me.mailbox.close();
            for node in self.nodes.iter() {
                node.mailbox
                    .peer_down(self.rank, Error::PeerClosed(self.rank));
            }
        }
        Ok(())
    }
}

impl Drop for LoopbackTransport {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
