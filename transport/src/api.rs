//! The [`Transport`] trait: what every backend offers the runtime.

use std::sync::Arc;
use std::time::Duration;

use crate::completion::{wait_all, Completion};
use crate::error::Result;
use crate::landing::{Accept, Landing};
use crate::region::Region;
use crate::types::{
    Capabilities, LocalSlice, Message, Op, Rank, RegionDesc, RemoteSlice, RunsWrite, Tag,
};

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

    /// Like [`Transport::send`], taking the bytes by value: the tcp backend sends them without
    /// copying them again. Build large ones in [`crate::pool::buffer`]; the backend recycles
    /// them once sent.
    ///
    /// # Errors
    /// As [`Transport::send`].
    fn send_owned(&self, peer: Rank, tag: Tag, data: Vec<u8>) -> Result<()> {
        let sent = self.send(peer, tag, &data);
        crate::pool::recycle(data);
        sent
    }

    /// Like [`Transport::send`], with the message's bytes given in pieces (`parts`, one after
    /// the other: a header and a caller's buffer), so that a caller need not copy them into one
    /// buffer first. The tcp backend writes them to the socket straight from the caller's
    /// memory; the default joins them in a [`crate::pool::buffer`] and calls
    /// [`Transport::send_owned`].
    ///
    /// # Errors
    /// As [`Transport::send`].
    fn send_parts(&self, peer: Rank, tag: Tag, parts: &[&[u8]]) -> Result<()> {
        let mut data = crate::pool::buffer(parts.iter().map(|p| p.len()).sum());
        for p in parts {
            data.extend_from_slice(p);
        }
        self.send_owned(peer, tag, data)
    }

    /// Like [`Transport::send_parts`] with a `head` and a `body`, except that the tcp backend
    /// does not copy what of `body` the socket cannot take at once: it keeps `body` lent and
    /// writes it as the socket drains. `Ok(None)`: the message is sent (whole, or with
    /// nothing of `body` needed any more). `Ok(Some(done))`: `body` is still being read, until
    /// `done` is finished (completed once the last byte is written; failed, with nothing read
    /// any more, when the peer is lost first). The default sends with `send_parts`.
    ///
    /// # Safety
    /// When this returns `Ok(Some(done))`, the memory of `body` stays valid and unchanged
    /// until `done` is finished ([`Completion::is_done`]), although the borrow ends here: an
    /// MPI program's `MPI_Isend` buffer until its request completes.
    ///
    /// # Errors
    /// As [`Transport::send`].
    unsafe fn send_lent(
        &self,
        peer: Rank,
        tag: Tag,
        head: &[u8],
        body: &[u8],
    ) -> Result<Option<Completion>> {
        self.send_parts(peer, tag, &[head, body]).map(|()| None)
    }

    /// Offers `dest` as the landing place of the next message from `from` with `tag` that
    /// `accept` takes (given its first `head` bytes), in arrival order: the backend puts the
    /// payload's first `head` bytes aside ([`Landing::head`]) and the rest into `dest` as it
    /// arrives (over tcp a large payload goes from the socket straight there), and finishes
    /// [`Landing::completion`] with the payload's length (head included); a payload longer
    /// than `head + dest.len()` fills `dest` and the rest is dropped. Messages it does not take
    /// are received as usual. `Ok(None)`: the backend does not land messages, or a message
    /// already queued would be taken (it is older: receive it the usual way), or `from` is down
    /// (a receive reports it). See `crate::landing`. The default lands nothing.
    ///
    /// # Safety
    /// When this returns `Ok(Some(landing))`, `dest` stays valid for writes, and nothing else
    /// reads or writes it, until `landing.completion` is finished or [`Transport::unland`]
    /// withdrew it, although the borrow ends here: an MPI program's `MPI_Irecv` buffer until
    /// its request completes.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for an unknown rank.
    unsafe fn land(
        &self,
        from: Rank,
        tag: Tag,
        head: usize,
        accept: Accept,
        dest: &mut [u8],
    ) -> Result<Option<Landing>> {
        let _ = (from, tag, head, accept, dest);
        Ok(None)
    }

    /// Withdraws `landing` if no message took it yet; whether it did (then nothing is written
    /// into its place any more). When a message took it, wait for its completion.
    fn unland(&self, landing: &Landing) -> bool {
        let _ = landing;
        false
    }

    /// Waits until `done` returns true, looking at it between turns in which the calling
    /// thread serves what peers send this node (their one-sided requests; messages go to the
    /// mailbox) in place of the progress thread. For a thread that waits for a word of this
    /// node's own memory that a peer's operation will change (a lock homed here, passed on by
    /// its holder's atomic from another node): the peer's request then does not wait for a
    /// progress thread that must first get a processor from the very thread that waits. The
    /// thread spins, yielding the processor now and then; there is no time limit (`done`
    /// decides). Backends whose peers need nothing from this node's processors (shared
    /// memory, RDMA) only spin and yield.
    fn serve_until(&self, done: &mut dyn FnMut() -> bool) {
        spin_until(done);
    }

    /// Whether a thread that got the message or the response it waited for keeps its
    /// connections for a short while (1 ms over tcp) before the progress thread reads them
    /// again. A program whose threads wait in a loop (an MPI program: the next receive of a
    /// ping-pong, the next round of a collective, the next fetch-and-op) saves two system
    /// calls and a wake-up per wait; one whose
    /// peers' one-sided requests must be served while it computes (the shared memory: a
    /// page fetch right after a barrier) would make them wait until its next wait. Off until
    /// asked for; backends that read no connections on their waiters' behalf ignore it.
    fn set_linger(&self, on: bool) {
        let _ = on;
    }

    /// Sleeps, without spinning, until one of `landings` (of this transport) is finished, at
    /// most `timeout`: a thread that waits for any of several receives (`MPI_Waitany`) waits
    /// here between looks at them. The default sleeps on the first one's completion.
    fn wait_landed(&self, landings: &[&Landing], timeout: Duration) {
        if let Some(first) = landings.first() {
            first.completion.sleep_timeout(timeout);
        }
    }

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

    /// Like [`Transport::recv`], lending the message's payload to `take` where it lies instead
    /// of handing over a buffer: the shm backend lends a whole frame from its ring, so a
    /// receiver copies the bytes once, straight to where they go. `take` gets the sender and
    /// the payload and returns whether it took the message; a message it refuses is returned
    /// (`Ok(Some)`), exactly as `recv` would have returned it, and `take` must then have changed
    /// nothing. `Ok(None)`: `take` took the message. The default receives with `recv` and lends
    /// the buffer.
    ///
    /// # Errors
    /// As [`Transport::recv`] (`take` is not called then).
    fn recv_lent(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
        take: &mut dyn FnMut(Rank, &[u8]) -> bool,
    ) -> Result<Option<Message>> {
        Ok(lend_received(self.recv(from, tag, timeout)?, take))
    }

    /// Takes the oldest message that matches `from` and `tag` if one has already arrived,
    /// without waiting: `None` when there is none yet.
    ///
    /// # Errors
    /// Inside the `Some`: the errors of [`Transport::recv`] that end any wait for such a
    /// message ([`crate::Error::PeerLost`], [`crate::Error::Closed`], ...).
    fn try_recv(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<Message>>;

    /// Waits until a message that matches `from` and `tag` has arrived, without taking it, at
    /// most `timeout`: a caller that must not hold its own lock while it waits (a matching
    /// layer with several receiving threads) waits here, then takes messages with
    /// [`Transport::try_recv`] under its lock, so that they enter its queues in the order they
    /// arrived. Another thread may take the message first.
    ///
    /// # Errors
    /// As [`Transport::recv`].
    fn wait_message(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<()>;

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

    /// Posts several operations at once and returns their completions, in order. Backends send
    /// consecutive operations to one peer together where they can (tcp: one system call; verbs:
    /// one post list); the default posts them one by one. Operations to one peer land in the
    /// order they were posted. tcp may hold small writes back while earlier requests to the
    /// same peer are unanswered: they leave with the next answer from that peer, or as soon
    /// as a thread waits on it.
    ///
    /// # One-sided
    /// The targets' applications take no part.
    ///
    /// # Errors
    /// As [`Transport::post`]; the operations before a failing one have been posted.
    fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        ops.into_iter().map(|op| self.post(op)).collect()
    }

    /// Writes `runs` of `(offset, length)` of `local` into `remote`, at the same offsets in
    /// both: a page's diff, however scattered. Each run is written exactly; the bytes between
    /// runs are not touched. The default posts one write per run; tcp sends one frame.
    ///
    /// # One-sided
    /// The target's application takes no part.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for slices of different lengths or a run outside them;
    /// errors at the target arrive through the completions.
    fn write_runs(
        &self,
        remote: RemoteSlice,
        local: &LocalSlice,
        runs: &[(u32, u32)],
    ) -> Result<Vec<Completion>> {
        check_runs(&remote, local, runs)?;
        self.post_batch(run_writes(&remote, local, runs)?)
    }

    /// Several [`Transport::write_runs`] at once (a release's diffs, one per page): the
    /// completions of each write, in order. The default posts them one after another; tcp
    /// holds each connection's frames back until all are queued and then writes them with as
    /// few system calls as the socket allows, instead of one `sendmsg` per page.
    ///
    /// # One-sided
    /// The targets' applications take no part.
    ///
    /// # Errors
    /// As [`Transport::write_runs`]; the writes before a failing one have been posted.
    fn write_runs_batch(&self, writes: &[RunsWrite]) -> Result<Vec<Vec<Completion>>> {
        writes
            .iter()
            .map(|w| self.write_runs(w.remote, &w.local, &w.runs))
            .collect()
    }

    /// Adds `add` to `count` aligned 8-byte words, the first being `first`, each `stride` bytes
    /// after the previous one (`stride` a positive multiple of 8): a run of directory
    /// registrations. The old values are not returned. The default posts one fetch-and-add per
    /// word; tcp sends one frame.
    ///
    /// # One-sided
    /// The target's application takes no part.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a misaligned word or stride; errors at the target
    /// arrive through the completions (on tcp nothing is changed then).
    fn add_strided(
        &self,
        first: RemoteSlice,
        stride: u64,
        count: u32,
        add: u64,
    ) -> Result<Vec<Completion>> {
        self.post_batch(strided_adds(&first, stride, count, add)?)
    }

    /// Combines the elements in `local` into `remote` with `reduction`, at the target, in one
    /// pass over its memory (MPI's accumulate, MPI-3.1 §11.3.4); with `fetch` (as long as
    /// `local`), the target's elements as they were before are written into `fetch`
    /// (get-accumulate). The target applies it atomically with respect to the remote
    /// fetch-and-adds, compare-and-swaps and other reductions on its memory, and in order with
    /// the operations posted to it before. Backends without [`Capabilities::remote_reduce`]
    /// return [`crate::Error::Unsupported`]: the caller then updates word by word with remote
    /// atomics.
    ///
    /// # One-sided
    /// The target's application takes no part.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] as above; [`crate::Error::InvalidArgument`] for slices of
    /// different lengths or more than the transfer limit; errors at the target (a range not
    /// aligned to the element size: [`crate::RemoteFault::Misaligned`]) arrive through the
    /// completion.
    fn accumulate(
        &self,
        remote: RemoteSlice,
        local: &LocalSlice,
        reduction: crate::Reduction,
        fetch: Option<LocalSlice>,
    ) -> Result<Completion> {
        let _ = (remote, local, reduction, fetch);
        Err(crate::Error::Unsupported(format!(
            "{:?} transport: remote reductions",
            self.capabilities().backend
        )))
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

/// Spins until `done` returns true, yielding the processor every 64 looks: the wait of
/// [`Transport::serve_until`] where this node's processors serve nothing.
pub(crate) fn spin_until(done: &mut dyn FnMut() -> bool) {
    let mut turns = 0u32;
    while !done() {
        turns = turns.wrapping_add(1);
        if turns.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The runs of a [`Transport::write_runs`] as one write each (for backends without a native
/// form, and as the fallback of those with one).
pub(crate) fn run_writes(
    remote: &RemoteSlice,
    local: &LocalSlice,
    runs: &[(u32, u32)],
) -> Result<Vec<Op>> {
    runs.iter()
        .map(|&(off, len)| {
            Ok(Op::Write {
                remote: remote
                    .region
                    .slice(remote.offset + u64::from(off), len as usize)?,
                local: LocalSlice::new(
                    local.region(),
                    local.offset() + off as usize,
                    len as usize,
                )?,
            })
        })
        .collect()
}

/// The checks every backend's [`Transport::write_runs`] makes before anything leaves.
pub(crate) fn check_runs(
    remote: &RemoteSlice,
    local: &LocalSlice,
    runs: &[(u32, u32)],
) -> Result<()> {
    if remote.len != local.len() {
        return Err(crate::Error::InvalidArgument(
            "remote and local slices differ in length".into(),
        ));
    }
    if runs
        .iter()
        .any(|&(o, l)| o as usize + l as usize > local.len())
    {
        return Err(crate::Error::InvalidArgument(
            "a run lies outside the slice".into(),
        ));
    }
    Ok(())
}

/// The words of a [`Transport::add_strided`] as one fetch-and-add each, checked (for backends
/// without a native form).
pub(crate) fn strided_adds(
    first: &RemoteSlice,
    stride: u64,
    count: u32,
    add: u64,
) -> Result<Vec<Op>> {
    check_strided(first, stride)?;
    (0..u64::from(count))
        .map(|i| {
            Ok(Op::FetchAdd {
                remote: first.region.word(first.offset + i * stride)?,
                add,
            })
        })
        .collect()
}

/// The checks every backend's [`Transport::add_strided`] makes before anything leaves.
pub(crate) fn check_strided(first: &RemoteSlice, stride: u64) -> Result<()> {
    if first.len != 8
        || !first.offset.is_multiple_of(8)
        || !stride.is_multiple_of(8)
        || stride < 8
        || stride > u64::from(u32::MAX)
    {
        return Err(crate::Error::InvalidArgument(
            "add_strided needs an aligned word and a positive stride that is a multiple of 8"
                .into(),
        ));
    }
    Ok(())
}

/// The checks every backend's [`Transport::accumulate`] makes before anything leaves.
pub(crate) fn check_accumulate(
    remote: &RemoteSlice,
    local: &LocalSlice,
    reduction: crate::Reduction,
    fetch: Option<&LocalSlice>,
) -> Result<()> {
    let size = reduction.elem().size();
    if remote.len != local.len() || fetch.is_some_and(|f| f.len() != local.len()) {
        return Err(crate::Error::InvalidArgument(format!(
            "accumulate of {} local bytes into {} remote bytes",
            local.len(),
            remote.len
        )));
    }
    if !local.len().is_multiple_of(size) {
        return Err(crate::Error::InvalidArgument(format!(
            "accumulate of {} bytes: not a whole number of {size}-byte elements",
            local.len()
        )));
    }
    Ok(())
}

/// Lends a received message's buffer to `take` ([`Transport::recv_lent`]): `None` when it took
/// the message (its buffer goes back to the pool), the message when it refused it.
pub(crate) fn lend_received(
    m: Message,
    take: &mut dyn FnMut(Rank, &[u8]) -> bool,
) -> Option<Message> {
    if take(m.source, &m.data) {
        crate::pool::recycle(m.data);
        None
    } else {
        Some(m)
    }
}
