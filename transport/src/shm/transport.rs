//! [`ShmTransport`]: one-sided operations as copies and CPU atomics on peers' regions mapped
//! here; messages through the rings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::regions::Mapped;
use super::ring::{self, KIND_GOODBYE, KIND_MESSAGE};
use super::shared::{Peer, Shared, UP};
use crate::api::Transport;
use crate::completion::Completion;
use crate::error::{Error, RemoteFault, Result};
use crate::exec;
use crate::region::Region;
use crate::types::{
    BackendKind, Capabilities, LocalSlice, Message, Op, Rank, RegionDesc, RemoteSlice, Tag,
};

/// A node of a job whose peers share its host. See [`crate::shm`].
#[derive(Debug)]
pub struct ShmTransport {
    pub(super) shared: Arc<Shared>,
    pub(super) progress: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How long `close` waits for room in a full ring for its goodbye.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);

impl ShmTransport {
    /// Whether `rank` is reached through shared memory by this node (itself included).
    pub fn reaches(&self, rank: Rank) -> bool {
        rank == self.shared.rank
            || self
                .shared
                .peers
                .get(rank.index())
                .is_some_and(Option::is_some)
    }

    /// Executes `op` now, if its target region can be mapped here: `None` when the region was
    /// published as not shareable (memory this crate did not allocate), so that another backend
    /// must carry it.
    pub(crate) fn try_post(&self, op: &Op) -> Option<Result<Completion>> {
        self.run(op).map(|r| {
            r.map(|done| match done {
                Ok(v) => Completion::ready(v),
                Err(e) => Completion::failed(e),
            })
        })
    }

    /// Executes `op` now and waits for it: [`ShmTransport::try_post`] without the completion.
    pub(crate) fn try_run(&self, op: &Op) -> Option<Result<u64>> {
        self.run(op).map(|r| r.and_then(|done| done))
    }

    /// Executes `op` now: `None` as for [`ShmTransport::try_post`]; the outer error is local
    /// (refused before anything happened), the inner one the target's refusal.
    fn run(&self, op: &Op) -> Option<Result<Result<u64>>> {
        if let Err(e) = op.validate() {
            return Some(Err(e));
        }
        if let Op::Read { local, .. } | Op::Write { local, .. } = op {
            if let Err(e) = self.shared.regions.check_local(local.region()) {
                return Some(Err(e));
            }
        }
        let rank = op.peer();
        if rank == self.shared.rank {
            if self.shared.closing.load(Ordering::Acquire) {
                return Some(Err(Error::Closed));
            }
            return Some(Ok(exec::execute(&self.shared.regions, op)));
        }
        let peer = match self.shared.peer(rank) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let remote = match op {
            Op::Read { remote, .. }
            | Op::Write { remote, .. }
            | Op::CompareSwap { remote, .. }
            | Op::FetchAdd { remote, .. } => remote,
        };
        let done = peer.regions.with(
            rank,
            &peer.control,
            peer.pid,
            remote.region.key.0,
            |mapped| mapped.shareable().then(|| execute(mapped, op)),
        );
        let done = match done {
            Ok(Some(done)) => done,
            Ok(None) => return None,
            // A bad key, or a region that cannot be opened: the operation's failure.
            Err(e) => return Some(Ok(Err(e))),
        };
        Some(Ok(done.map_err(|fault| Error::Remote { peer: rank, fault })))
    }

    /// The runs of a [`Transport::write_runs`] executed now, the peer's region looked up once
    /// and every run checked before any is written: `None` when the region is not shareable
    /// (as for [`ShmTransport::try_post`]) or is this node's own (the caller posts the runs as
    /// writes then). The caller has checked the runs against both slices.
    pub(crate) fn try_write_runs(
        &self,
        remote: &RemoteSlice,
        local: &LocalSlice,
        runs: &[(u32, u32)],
    ) -> Option<Result<Completion>> {
        if let Err(e) = self.shared.regions.check_local(local.region()) {
            return Some(Err(e));
        }
        let rank = remote.rank();
        if rank == self.shared.rank {
            return None;
        }
        let peer = match self.shared.peer(rank) {
            Ok(p) => p,
            Err(e) => return Some(Err(e)),
        };
        let done = peer.regions.with(
            rank,
            &peer.control,
            peer.pid,
            remote.region.key.0,
            |mapped| {
                mapped
                    .shareable()
                    .then(|| write_runs(mapped, remote, local, runs))
            },
        );
        match done {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(fault))) => {
                return Some(Ok(Completion::failed(Error::Remote { peer: rank, fault })))
            }
            Ok(None) => return None,
            Err(e) => return Some(Ok(Completion::failed(e))),
        }
        Some(Ok(Completion::ready(0)))
    }

    /// Registers `region` under `key` (chosen by a mixed job's far backend, never reused), or
    /// under a key of its own.
    pub(crate) fn register_under(
        &self,
        region: &Arc<Region>,
        key: Option<u64>,
    ) -> Result<RegionDesc> {
        let key = match key {
            Some(k) => self.shared.regions.insert_as(Arc::clone(region), k)?,
            None => self.shared.regions.insert(Arc::clone(region)),
        };
        let publication = super::regions::publish(&self.shared.control, key.0, region);
        match publication {
            Ok(p) => {
                self.shared
                    .published
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key.0, p);
            }
            Err(e) => {
                let _ = self.shared.regions.remove(key);
                return Err(e);
            }
        }
        Ok(RegionDesc {
            rank: self.shared.rank,
            key,
            addr: region.as_ptr() as u64,
            len: region.len() as u64,
        })
    }

    /// A one-sided operation executed and waited for, without a [`Completion`].
    fn direct(&self, op: Op) -> Result<u64> {
        let rank = op.peer();
        self.try_run(&op).unwrap_or(Err(Error::Remote {
            peer: rank,
            fault: RemoteFault::Unsupported,
        }))
    }

    /// Writes one frame into the ring to `peer` (its payload: `parts`, one after the other),
    /// waiting for room as long as the peer is up.
    fn send_frame(
        &self,
        peer: &Peer,
        kind: u32,
        tag: u64,
        parts: &[&[u8]],
        limit: Option<Instant>,
    ) -> Result<()> {
        let _one_producer = peer.send.lock().unwrap_or_else(|e| e.into_inner());
        let ring = peer
            .control
            .ring(self.shared.rank.index())
            .ok_or(Error::Closed)?;
        let len = parts.iter().map(|p| p.len()).sum();
        let head = ring::header(kind, tag, len);
        let pad = [0u8; 8];
        let pad = &pad[..ring::padding(len)];
        let pieces = std::iter::once(&head[..])
            .chain(parts.iter().copied())
            .chain(std::iter::once(pad));
        let corrupt = |_| Error::PeerLost {
            peer: peer.rank,
            reason: "its ring's counters are out of range".into(),
        };
        // The common case: the whole frame fits, and is published at once.
        if ring.push_all(pieces.clone()).map_err(corrupt)? {
            super::wake::notify(&peer.control);
            return Ok(());
        }
        let mut waits = 0u32;
        for piece in pieces {
            let mut at = 0;
            while at < piece.len() {
                let n = ring.push(&piece[at..]).map_err(corrupt)?;
                at += n;
                if n > 0 {
                    super::wake::notify(&peer.control);
                    waits = 0;
                    continue;
                }
                // The ring is full: the peer's progress thread is draining it (or dead).
                if peer.state.load(Ordering::Acquire) != UP && kind != KIND_GOODBYE {
                    return Err(self.shared.peer(peer.rank).err().unwrap_or(Error::Closed));
                }
                if limit.is_some_and(|l| Instant::now() >= l) {
                    return Err(Error::Timeout(format!(
                        "rank {}'s ring stayed full",
                        peer.rank
                    )));
                }
                // A system call: only once the wait is no longer short.
                if waits >= 64 && waits.is_multiple_of(64) && super::wake::exited(&peer.pidfd) {
                    self.shared.check_liveness();
                    return Err(Error::PeerLost {
                        peer: peer.rank,
                        reason: format!("its process {} exited", peer.pid),
                    });
                }
                waits += 1;
                if waits < 64 {
                    std::hint::spin_loop();
                } else if waits < 1024 {
                    std::thread::yield_now();
                } else {
                    let seen = ring.head.load(Ordering::Acquire);
                    super::wake::wait_for_room(ring.head, seen, Duration::from_micros(50));
                }
            }
        }
        Ok(())
    }

    /// Waits for a message from `from`: spins reading the rings (senders then wake nobody), then
    /// sleeps in `sleep` while the progress thread reads them.
    fn await_with<T>(
        &self,
        from: Option<Rank>,
        timeout: Option<Duration>,
        found: impl Fn() -> Option<Result<T>>,
        sleep: impl FnOnce(Option<Duration>) -> Result<T>,
    ) -> Result<T> {
        let start = Instant::now();
        // A peer's last messages must enter the mailbox before a goodbye that reached it
        // another way (a mixed job's tcp connection) can end the wait: when the mailbox says the
        // peer is gone, its ring is read to the end first, waiting for a thread that is reading
        // it (`drain` skips such a ring, and its reader may be holding the last message).
        let found = || match found() {
            Some(Err(Error::PeerClosed(_) | Error::PeerLost { .. })) => {
                self.shared.drain_waiting(from);
                found()
            }
            other => other,
        };
        self.shared.drain(from);
        if let Some(r) = found() {
            return r;
        }
        let spin = self
            .shared
            .config
            .message_spin
            .min(timeout.unwrap_or(Duration::MAX));
        let control = &self.shared.control;
        control.spinners().fetch_add(1, Ordering::SeqCst);
        let mut got = None;
        let mut seen = self.shared.mailbox.events();
        let mut spins = 0u32;
        // The clock is read every 64 turns: a read costs as much as a look at the rings.
        while !spins.is_multiple_of(64) || start.elapsed() < spin {
            // Messages reach the mailbox through this thread, the progress thread, or another
            // backend's thread (a mixed job): look whenever anything arrived.
            let drained = self.shared.drain(from);
            let now = self.shared.mailbox.events();
            if drained || now != seen {
                seen = now;
                if let Some(r) = found() {
                    got = Some(r);
                    break;
                }
            }
            spins += 1;
            if spins.is_multiple_of(1024) {
                // On an oversubscribed host the sender may need this processor.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        control.spinners().fetch_sub(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        // A message published before the count dropped woke nobody: take it now.
        self.shared.drain(from);
        if let Some(r) = got.or_else(&found) {
            return r;
        }
        let slept = sleep(timeout.map(|t| t.saturating_sub(start.elapsed())));
        if let Err(Error::PeerClosed(_) | Error::PeerLost { .. }) = slept {
            // A peer's goodbye or loss may have reached the mailbox another way (a mixed job's
            // tcp connection) before its last messages left the ring: they were written before
            // it, so they are in the ring now.
            self.shared.drain_waiting(from);
            if let Some(r) = found() {
                return r;
            }
        }
        slept
    }
}

impl Transport for ShmTransport {
    fn rank(&self) -> Rank {
        self.shared.rank
    }

    fn nodes(&self) -> usize {
        self.shared.nodes
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: BackendKind::Shm,
            native_one_sided: true,
            atomics_coherent_with_cpu: true,
            ordered_writes: true,
            ordered_atomics: true,
            max_message: self.shared.config.max_message,
            max_transfer: usize::MAX >> 1,
            remote_reduce: false,
        }
    }

    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc> {
        self.register_under(region, None)
    }

    fn deregister(&self, desc: &RegionDesc) -> Result<()> {
        let p = self
            .shared
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&desc.key.0);
        if let Some(p) = p {
            self.shared.control.withdraw(p.slot);
        }
        self.shared.regions.remove(desc.key)
    }

    fn write_runs(
        &self,
        remote: RemoteSlice,
        local: &LocalSlice,
        runs: &[(u32, u32)],
    ) -> Result<Vec<Completion>> {
        crate::api::check_runs(&remote, local, runs)?;
        match self.try_write_runs(&remote, local, runs) {
            Some(done) => done.map(|c| vec![c]),
            None => self.post_batch(crate::api::run_writes(&remote, local, runs)?),
        }
    }

    fn post(&self, op: Op) -> Result<Completion> {
        let rank = op.peer();
        self.try_post(&op).unwrap_or_else(|| {
            Ok(Completion::failed(Error::Remote {
                peer: rank,
                fault: RemoteFault::Unsupported,
            }))
        })
    }

    fn read(&self, remote: RemoteSlice, local: LocalSlice) -> Result<()> {
        if let Some(done) = self.fast_read(&remote, &local) {
            return Ok(done);
        }
        self.direct(Op::Read { remote, local }).map(drop)
    }

    fn write(&self, remote: RemoteSlice, local: LocalSlice) -> Result<()> {
        if let Some(done) = self.fast_write(&remote, &local) {
            return Ok(done);
        }
        self.direct(Op::Write { remote, local }).map(drop)
    }

    fn compare_swap(&self, remote: RemoteSlice, expected: u64, desired: u64) -> Result<u64> {
        if let Some(old) = self.fast_compare_swap(&remote, expected, desired) {
            return Ok(old);
        }
        self.direct(Op::CompareSwap {
            remote,
            expected,
            desired,
        })
    }

    fn fetch_add(&self, remote: RemoteSlice, add: u64) -> Result<u64> {
        if let Some(old) = self.fast_fetch_add(&remote, add) {
            return Ok(old);
        }
        self.direct(Op::FetchAdd { remote, add })
    }

    fn flush(&self, peer: Rank) -> Result<()> {
        // Every operation completed when it was posted.
        if peer == self.shared.rank {
            return Ok(());
        }
        self.shared.peer(peer).map(drop)
    }

    fn send(&self, peer: Rank, tag: Tag, data: &[u8]) -> Result<()> {
        self.send_parts(peer, tag, &[data])
    }

    /// The pieces are copied into the ring as they are, with no buffer of their own.
    fn send_parts(&self, peer: Rank, tag: Tag, parts: &[&[u8]]) -> Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > self.shared.config.max_message {
            return Err(Error::InvalidArgument(format!(
                "a message of {len} bytes exceeds the limit of {}",
                self.shared.config.max_message
            )));
        }
        if peer == self.shared.rank {
            if self.shared.closing.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            self.shared.mailbox.deliver(Message {
                source: peer,
                tag,
                data: parts.concat(),
            });
            return Ok(());
        }
        let p = self.shared.peer(peer)?;
        self.send_frame(p, KIND_MESSAGE, tag.0, parts, None)
    }

    fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        let mailbox = &self.shared.mailbox;
        self.await_with(
            from,
            timeout,
            || mailbox.poll(from, tag),
            |left| mailbox.wait(from, tag, left),
        )
    }

    fn recv_lent(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
        take: &mut dyn FnMut(Rank, &[u8]) -> bool,
    ) -> Result<Option<Message>> {
        self.lend(from, tag, timeout, take)
    }

    fn try_recv(&self, from: Option<Rank>, tag: Option<Tag>) -> Option<Result<Message>> {
        self.shared.drain(from);
        match self.shared.mailbox.poll(from, tag) {
            // The peer's last messages first (see `await_with`).
            Some(Err(Error::PeerClosed(_) | Error::PeerLost { .. })) => {
                self.shared.drain_waiting(from);
                self.shared.mailbox.poll(from, tag)
            }
            other => other,
        }
    }

    fn wait_message(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let mailbox = &self.shared.mailbox;
        self.await_with(
            from,
            timeout,
            || mailbox.peek(from, tag),
            |left| mailbox.wait_present(from, tag, left),
        )
    }

    fn wait_failure(&self) -> Error {
        self.shared.mailbox.wait_failure()
    }

    fn close(&self) -> Result<()> {
        if self.shared.closing.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let limit = Instant::now() + GOODBYE_WAIT;
        for p in self.shared.peers.iter().flatten() {
            if p.state.load(Ordering::Acquire) != UP {
                continue;
            }
            let _ = self.send_frame(p, KIND_GOODBYE, 0, &[], Some(limit));
        }
        self.shared.stopping.store(true, Ordering::SeqCst);
        super::wake::ring_doorbell(self.shared.control.doorbell());
        let handle = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("the shm progress thread panicked");
            }
        }
        self.shared.mailbox.close();
        Ok(())
    }
}

impl Drop for ShmTransport {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Executes a one-sided operation on a peer's region mapped here.
fn execute(mapped: &Mapped, op: &Op) -> std::result::Result<u64, RemoteFault> {
    match op {
        Op::Read { remote, local } => mapped.range(remote.offset, remote.len as u64).map(|src| {
            let dst = local.region().as_ptr().wrapping_add(local.offset());
            // SAFETY: `src` is `remote.len` bytes inside the peer's region mapped here (bounds
            // checked by `range`, the mapping kept alive by the borrow of `mapped`); `dst` is
            // the same length inside the local registered region (checked when the LocalSlice
            // was built, region kept alive by `local`). The two mappings may show the same
            // pages (a node's own file), so `copy` tolerates overlap.
            unsafe { std::ptr::copy(src, dst, remote.len) };
            0
        }),
        Op::Write { remote, local } => mapped.range(remote.offset, remote.len as u64).map(|dst| {
            let src = local.region().as_ptr().wrapping_add(local.offset());
            // SAFETY: as for reads, with source and destination swapped.
            unsafe { std::ptr::copy(src, dst, remote.len) };
            0
        }),
        Op::CompareSwap {
            remote,
            expected,
            desired,
        } => mapped.word(remote.offset).map(|w: &AtomicU64| {
            match w.compare_exchange(*expected, *desired, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(v) | Err(v) => v,
            }
        }),
        Op::FetchAdd { remote, add } => mapped
            .word(remote.offset)
            .map(|w| w.fetch_add(*add, Ordering::SeqCst)),
    }
}

/// Writes the runs of a [`Transport::write_runs`] into a peer's region mapped here, every run
/// checked before any is written. The caller has checked the runs against `local`.
fn write_runs(
    mapped: &Mapped,
    remote: &RemoteSlice,
    local: &LocalSlice,
    runs: &[(u32, u32)],
) -> std::result::Result<(), RemoteFault> {
    let targets = runs
        .iter()
        .map(|&(off, len)| {
            let at = remote.offset + u64::from(off);
            Ok((
                mapped.range(at, u64::from(len))?,
                off as usize,
                len as usize,
            ))
        })
        .collect::<std::result::Result<Vec<_>, RemoteFault>>()?;
    let base = local.region().as_ptr().wrapping_add(local.offset());
    for (dst, off, len) in targets {
        // SAFETY: `dst` is `len` bytes inside the peer's region mapped here (checked by
        // `range`, the mapping kept alive by the borrow of `mapped`); the source is `len` bytes
        // at `off` inside `local` (the caller checked the runs against it; the region is kept
        // alive by `local`). The two mappings may show the same pages, so `copy` tolerates
        // overlap.
        unsafe { std::ptr::copy(base.wrapping_add(off), dst, len) };
    }
    Ok(())
}
