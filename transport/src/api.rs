//! The [`Transport`] trait: what every backend offers the runtime.

use std::sync::Arc;
use std::time::Duration;

use crate::completion::{wait_all, Completion};
use crate::error::Result;
use crate::region::Region;
use crate::types::{Capabilities, LocalSlice, Message, Op, Rank, RegionDesc, RemoteSlice, Tag};

/// A node's connection to every other node of the job.
///
/// One-sided operations ([`Transport::post`] and the helpers built on it) act on memory a peer
/// registered, with RDMA semantics: the peer's application does nothing to serve them. Two-sided
/// messages ([`Transport::send`], [`Transport::recv`]) carry control traffic. All methods take
/// `&self` and may be called from any number of threads at once.
pub trait Transport: Send + Sync {
    /// This node's rank.
    fn rank(&self) -> Rank;

    /// The number of nodes in the job.
    fn nodes(&self) -> usize;

    /// What the backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Registers `region` so that peers can address it and so that it can be the local side of
    /// one-sided operations. Returns the descriptor to publish to peers.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] or [`crate::Error::Io`] when the backend cannot register
    /// the memory (for example, the locked-memory limit on RDMA hardware).
    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc>;

    /// Withdraws a registration: later remote requests under its key fail with
    /// [`crate::RemoteFault::BadKey`].
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] when nothing is registered under the descriptor's key.
    fn deregister(&self, desc: &RegionDesc) -> Result<()>;

    /// Posts a one-sided operation and returns at once. Many operations may be outstanding.
    ///
    /// # One-sided
    /// The target's application takes no part.
    ///
    /// # Errors
    /// Local argument errors are returned here; errors at the target arrive through the
    /// [`Completion`].
    fn post(&self, op: Op) -> Result<Completion>;

    /// Waits until every operation posted to `peer` before this call is complete at the peer.
    ///
    /// # Errors
    /// [`crate::Error::PeerLost`] and the like when the peer cannot be reached.
    fn flush(&self, peer: Rank) -> Result<()>;

    /// Sends a message. Messages from one sender to one receiver arrive in the order sent.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a message longer than
    /// [`Capabilities::max_message`] or an unknown rank; peer errors when it cannot be delivered.
    fn send(&self, peer: Rank, tag: Tag, data: &[u8]) -> Result<()>;

    /// Receives the oldest message that matches `from` and `tag` (`None` matches any), waiting at
    /// most `timeout` (`None`: without limit, but never past the loss of the awaited peer).
    ///
    /// # Errors
    /// [`crate::Error::Timeout`], [`crate::Error::PeerLost`] (the awaited peer, or any peer when
    /// `from` is `None`), [`crate::Error::Closed`].
    fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message>;

    /// Blocks until a peer is lost, returning [`crate::Error::PeerLost`] naming it, or until
    /// the transport is closed, returning [`crate::Error::Closed`]. A watchdog thread calls this
    /// to stop the whole node when the job breaks, instead of letting it hang.
    fn wait_failure(&self) -> crate::Error;

    /// Closes the transport in order: tells every peer, finishes queued sends (within a bounded
    /// time) and stops the backend's threads. Later calls fail with [`crate::Error::Closed`].
    ///
    /// # Errors
    /// When peers could not be told; the transport is closed anyway.
    fn close(&self) -> Result<()>;

    /// Reads `remote` into `local` and waits for it.
    ///
    /// # Errors
    /// As [`Transport::post`] and [`Completion::wait`].
    fn read(&self, remote: RemoteSlice, local: LocalSlice) -> Result<()> {
        self.post(Op::Read { remote, local })?.wait().map(drop)
    }

    /// Writes `local` into `remote` and waits until it is done at the peer.
    ///
    /// # Errors
    /// As [`Transport::post`] and [`Completion::wait`].
    fn write(&self, remote: RemoteSlice, local: LocalSlice) -> Result<()> {
        self.post(Op::Write { remote, local })?.wait().map(drop)
    }

    /// Atomically replaces the 8-byte word with `desired` if it equals `expected`; returns the
    /// old value.
    ///
    /// # Errors
    /// As [`Transport::post`] and [`Completion::wait`].
    fn compare_swap(&self, remote: RemoteSlice, expected: u64, desired: u64) -> Result<u64> {
        self.post(Op::CompareSwap {
            remote,
            expected,
            desired,
        })?
        .wait()
    }

    /// Atomically adds `add` (wrapping) to the 8-byte word; returns the old value.
    ///
    /// # Errors
    /// As [`Transport::post`] and [`Completion::wait`].
    fn fetch_add(&self, remote: RemoteSlice, add: u64) -> Result<u64> {
        self.post(Op::FetchAdd { remote, add })?.wait()
    }

    /// Posts every operation, then waits for all of them.
    ///
    /// # Errors
    /// The first error; every operation that was posted has finished when this returns.
    fn post_all(&self, ops: impl IntoIterator<Item = Op>) -> Result<()>
    where
        Self: Sized,
    {
        let mut posted = Vec::new();
        let mut first = None;
        for op in ops {
            match self.post(op) {
                Ok(c) => posted.push(c),
                Err(e) => {
                    first = Some(e);
                    break;
                }
            }
        }
        let waited = wait_all(&posted);
        match first {
            Some(e) => Err(e),
            None => waited,
        }
    }
}
