//! The `Transport` impl of the tcp backend: one-sided operations as request frames, messages,
//! waiting, closing.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::{Conn, Payload, Pending, HOLD_BYTES};
use super::mesh;
use super::progress;
use super::read;
use super::shared::Shared;
use crate::api::Transport;
use crate::completion::{Completion, Driver};
use crate::error::{Error, Result};
use crate::exec;
use crate::landing::{Accept, Landing, Offer};
use crate::region::Region;
use crate::types::{BackendKind, Capabilities, Message, Op, Rank, RegionDesc, Tag};
use crate::wire::{Header, Kind};

/// Most bytes of diffs [`Transport::write_runs_batch`] holds back before it lets them go: enough
/// for many small diffs to leave in one system call, little enough that the peer starts
/// applying a large release's first pages while the rest are made.
const BATCH_BYTES: usize = 64 << 10;

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
pub(super) struct ConnDriver {
    pub(super) shared: Arc<Shared>,
    pub(super) peer: usize,
}

impl Driver for ConnDriver {
    fn begin(&self) {
        if let Some(conn) = self.shared.conn(self.peer) {
            progress::waiter_arrives(&self.shared, conn);
            // What the waiter waits for may be among the writes held back for a batch.
            conn.release_held();
        }
    }

    fn drive(&self) {
        if let Some(conn) = self.shared.conn(self.peer) {
            progress::drive_ready(&self.shared, &[conn], &mut [progress::pollfd_of(conn)]);
        }
    }

    fn end(&self, done: bool) {
        if let Some(conn) = self.shared.conn(self.peer) {
            progress::waiter_leaves(&self.shared, conn, done);
        }
    }
}

/// A node of a job connected over TCP.
#[derive(Debug)]
pub struct TcpTransport {
    pub(super) shared: Arc<Shared>,
    /// Per peer: lets a thread waiting for a response read the connection itself.
    pub(super) drivers: Vec<Arc<dyn Driver>>,
    pub(super) waker: mio::Waker,
    pub(super) progress: Mutex<Option<JoinHandle<()>>>,
    /// The acceptor thread (see `mesh::accept`), stopped and joined by `close`.
    pub(super) acceptor: Mutex<Option<JoinHandle<()>>>,
    pub(super) nodes: usize,
}

impl TcpTransport {
    fn conn(&self, peer: Rank) -> Result<&Arc<Conn>> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if peer == self.shared.rank {
            return Err(Error::InvalidArgument("no connection to self".into()));
        }
        if peer.index() >= self.nodes {
            return Err(Error::InvalidArgument(format!(
                "rank {peer} outside a job of {} nodes",
                self.nodes
            )));
        }
        match self.shared.conn(peer.index()) {
            Some(c) => Ok(c),
            None => mesh::dial(&self.shared, peer),
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
        let driver = self.drivers.get(conn.peer.index()).cloned();
        let spin = self
            .shared
            .config
            .op_spin(payload.len() + dest.as_ref().map_or(0, |d| d.len()));
        let (completion, completer) = Completion::driven(spin, driver);
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
        // The connections made so far: a message on one made later is read by the progress
        // thread, and found in the mailbox.
        let conns: Vec<&Conn> = match from {
            Some(f) => self
                .shared
                .conn(f.index())
                .map(|c| &**c)
                .into_iter()
                .collect(),
            None => self.shared.open_conns().into_iter().map(|c| &**c).collect(),
        };
        if spin.is_zero() {
            // A poll: read what is there once, without withdrawing anything.
            for c in &conns {
                read::drain(&self.shared, c, read::Reading::Waiter);
            }
        } else if !conns.is_empty() {
            let mut driving = progress::Driving::new(&self.shared, conns);
            let mut turns = 0u32;
            loop {
                driving.drive();
                if let Some(r) = found() {
                    driving.got_it();
                    return r;
                }
                let spun = start.elapsed();
                if spun >= spin {
                    break;
                }
                turns += 1;
                if spun >= YIELD_AFTER && turns.is_multiple_of(YIELD_EVERY) {
                    // On an oversubscribed host a thread woken for a message (another
                    // receiver's, or the sender this one waits for) needs this processor.
                    std::thread::yield_now();
                }
            }
        }
        sleep(timeout.map(|t| t.saturating_sub(start.elapsed())))
    }
}

/// Looks at the connections between which a spinning receiver yields the processor (each
/// look is a `poll`: about 0.3 us), once it has spun [`YIELD_AFTER`]. Without it,
/// `osu_latency_mt` (two receiving threads, one of them asleep until the other hands it its
/// message) took 190-340 us a message on 2 vCPUs: the woken thread waited for a spinner's
/// time slice to end.
const YIELD_EVERY: u32 = 8;
/// How long a receiver spins before it starts yielding: longer than a ping-pong's round
/// trip over loopback (about 13 us), whose waits then pay no `sched_yield`.
const YIELD_AFTER: Duration = Duration::from_micros(20);

impl Transport for TcpTransport {
    fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        let mut out = Vec::with_capacity(ops.len());
        let mut frames: Vec<(Header, Payload)> = Vec::new();
        let mut target: Option<Rank> = None;
        let flush = |target: Option<Rank>, frames: &mut Vec<(Header, Payload)>| -> Result<()> {
            if let Some(peer) = target.filter(|_| !frames.is_empty()) {
                // Small writes and reads (a read request carries no payload): what a window
                // of MPI puts or gets posts before its flush.
                let hold = frames.iter().all(|(h, p)| {
                    (h.kind == Kind::Write && p.len() <= HOLD_BYTES) || h.kind == Kind::Read
                });
                self.conn(peer)?
                    .send_batch(std::mem::take(frames), hold, self.shared.now_ms())?;
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
                let driver = self.drivers.get(conn.peer.index()).cloned();
                let spin = self
                    .shared
                    .config
                    .op_spin(payload.len() + dest.as_ref().map_or(0, |d| d.len()));
                let (completion, completer) = Completion::driven(spin, driver);
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

    fn write_runs_batch(&self, writes: &[crate::RunsWrite]) -> Result<Vec<Vec<Completion>>> {
        // Every connection written to is corked first and uncorked once all its frames are
        // queued: they leave in as few system calls as the socket takes (the peer's reader
        // answers a batch with one write too), where one `sendmsg` each made a release's cost
        // grow by a system call per page on each side. The cork is only a hint (the reader
        // uncorks after its own batches): an uncork always writes what is queued.
        let mut corked: Vec<&Arc<Conn>> = Vec::new();
        let mut out = Vec::with_capacity(writes.len());
        let mut failed = None;
        let mut held = 0;
        for w in writes {
            // Large batches leave in parts: the peer starts applying the first diffs while
            // the rest are made.
            let bytes: usize = w.runs.iter().map(|&(_, len)| len as usize).sum();
            if held > 0 && held + bytes > BATCH_BYTES {
                for c in &corked {
                    c.uncork();
                    c.cork();
                }
                held = 0;
            }
            held += bytes;
            let peer = w.remote.rank();
            if peer != self.shared.rank && !corked.iter().any(|c| c.peer == peer) {
                match self.conn(peer) {
                    Ok(c) => {
                        c.cork();
                        corked.push(c);
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match self.write_runs(w.remote, &w.local, &w.runs) {
                Ok(done) => out.push(done),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        for c in corked {
            c.uncork();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(out),
        }
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
            ordered_atomics: true,
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
        self.send_parts(peer, tag, &[data])
    }

    fn send_parts(&self, peer: Rank, tag: Tag, parts: &[&[u8]]) -> Result<()> {
        let len = parts.iter().map(|p| p.len()).sum();
        self.check_len(len)?;
        if peer == self.shared.rank {
            let mut data = crate::pool::buffer(len);
            for p in parts {
                data.extend_from_slice(p);
            }
            return self.send_owned(peer, tag, data);
        }
        let conn = self.conn(peer)?;
        let mut h = Header::new(Kind::Message);
        h.a = tag.0;
        conn.send_parts(h, parts, self.shared.now_ms())
    }

    unsafe fn send_lent(
        &self,
        peer: Rank,
        tag: Tag,
        head: &[u8],
        body: &[u8],
    ) -> Result<Option<Completion>> {
        if peer == self.shared.rank {
            return self.send_parts(peer, tag, &[head, body]).map(|()| None);
        }
        self.check_len(head.len() + body.len())?;
        let conn = self.conn(peer)?;
        let mut h = Header::new(Kind::Message);
        h.a = tag.0;
        // Made only when the frame is queued with `body` lent.
        let mut completion = None;
        let done = || {
            let driver = self.drivers.get(peer.index()).cloned();
            let spin = self.shared.config.op_spin(body.len());
            let (c, done) = Completion::driven(spin, driver);
            completion = Some(c);
            done
        };
        // SAFETY: when a completion is made, the caller keeps `body` valid and unchanged until
        // it is finished, which is when its completer finishes.
        unsafe { conn.send_lent(h, head, body, done, self.shared.now_ms())? };
        Ok(completion)
    }

    unsafe fn land(
        &self,
        from: Rank,
        tag: Tag,
        head: usize,
        accept: Accept,
        dest: &mut [u8],
    ) -> Result<Option<Landing>> {
        if from.index() >= self.nodes {
            return Err(Error::InvalidArgument(format!(
                "rank {from} outside a job of {} nodes",
                self.nodes
            )));
        }
        // Its waiter reads the connection the message comes on (none for this node's own).
        let driver = (from != self.shared.rank)
            .then(|| self.drivers.get(from.index()).cloned())
            .flatten();
        // Spins as a receive does: the message may come much later than a response would.
        let spin = self
            .message_spin(None)
            .max(self.shared.config.op_spin(dest.len()));
        // SAFETY: the caller keeps `dest` for the landing until its completion finishes or it
        // is withdrawn (`unland`), which is when the offer is used or dropped.
        let (offer, landing) = unsafe {
            Offer::new(
                from,
                tag,
                head,
                accept,
                dest,
                Completion::driven(spin, driver),
            )
        };
        Ok(self.shared.mailbox.offer(offer).ok().map(|()| landing))
    }

    fn unland(&self, landing: &Landing) -> bool {
        self.shared.mailbox.withdraw(landing.id)
    }

    fn serve_until(&self, done: &mut dyn FnMut() -> bool) {
        if done() {
            return;
        }
        // The connections made so far; one made meanwhile is served by the progress thread.
        let conns: Vec<&Conn> = self.shared.open_conns().into_iter().map(|c| &**c).collect();
        if conns.is_empty() {
            // Nothing to serve (a job whose peers all share memory, under `mixed`): no
            // `poll` of nothing on every turn.
            return crate::api::spin_until(done);
        }
        let mut driving = progress::Driving::new(&self.shared, conns);
        let start = Instant::now();
        let mut turns = 0u32;
        loop {
            driving.drive();
            if done() {
                return;
            }
            turns += 1;
            if start.elapsed() >= YIELD_AFTER && turns.is_multiple_of(YIELD_EVERY) {
                // Whoever holds what this thread waits for may need this processor.
                std::thread::yield_now();
            }
        }
    }

    fn set_linger(&self, on: bool) {
        self.shared.linger_after_waits.store(on, Ordering::Relaxed);
    }

    fn wait_landed(&self, landings: &[&Landing], timeout: Duration) {
        let done = || landings.iter().any(|l| l.completion.is_done());
        self.shared.mailbox.sleep_until_landed(&done, timeout);
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
        for conn in self.shared.open_conns() {
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
        mesh::stop_accepting(&self.shared);
        let acceptor = self
            .acceptor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = acceptor {
            if h.join().is_err() {
                tracing::error!("the acceptor thread panicked");
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
