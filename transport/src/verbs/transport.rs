//! The `Transport` impl of the verbs backend: one-sided operations as work requests, messages
//! as fragments on the control queue pairs, registration, closing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::chunks::{pieces, Chunked, ChunkedKey, KeyKind, Pinned, EAGER_CHUNKS, SHIFTS};
use super::config::VerbsConfig;
use super::control::{fragments, Control};
use super::sendq::{Item, Local, SqState};
use super::shared::{Registered, Shared, REQ_DEPTH};
use super::sys::WrKind;
use crate::api::Transport;
use crate::completion::{Completer, Completion, Driver};
use crate::error::{Error, RemoteFault, Result};
use crate::region::Region;
use crate::types::{BackendKind, Capabilities, LocalSlice, Message, Op, Rank, RegionDesc, Tag};

/// A node of a job connected over RDMA verbs.
#[derive(Debug)]
pub struct VerbsTransport {
    pub(super) shared: Arc<Shared>,
    pub(super) driver: Arc<dyn Driver>,
    pub(super) progress: Mutex<Option<JoinHandle<()>>>,
    pub(super) closed: AtomicBool,
}

impl VerbsTransport {
    /// The device, port and GID in use, for reports.
    pub fn device(&self) -> String {
        self.shared.sel.describe()
    }

    /// Bytes that the registrations of users' regions pin now (whole regions, and the chunks
    /// of large regions used so far; the transport's own queues and buffers are not counted).
    pub fn pinned(&self) -> usize {
        self.shared.budget.used()
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Read { .. } => "RDMA READ",
        Op::Write { .. } => "RDMA WRITE",
        Op::CompareSwap { .. } => "compare-and-swap",
        Op::FetchAdd { .. } => "fetch-and-add",
    }
}

impl VerbsTransport {
    fn check_open(&self) -> Result<()> {
        if self.shared.closing.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn peer_index(&self, peer: Rank) -> Result<usize> {
        if peer.index() < self.shared.nodes {
            Ok(peer.index())
        } else {
            Err(Error::InvalidArgument(format!(
                "rank {peer} outside a job of {} nodes",
                self.shared.nodes
            )))
        }
    }

    /// Checks an operation and turns it into work requests (one, or one per piece where a
    /// side is registered chunk by chunk and the transfer crosses a chunk: the last carries
    /// `done`), or the error it completes with.
    fn prepare_op(&self, op: Op, done: Option<Completer>) -> Result<Prepared> {
        op.validate()?;
        let p = self.peer_index(op.peer())?;
        let name = op_name(&op);
        let (remote, local, what) = match op {
            Op::Read { remote, local } => (remote, Some(local), What::Read),
            Op::Write { remote, local } => (remote, Some(local), What::Write),
            Op::CompareSwap {
                remote,
                expected,
                desired,
            } => (remote, None, What::CompareSwap { expected, desired }),
            Op::FetchAdd { remote, add } => (remote, None, What::FetchAdd { add }),
        };
        let local_keys = match &local {
            Some(l) => Some(self.shared.local_keys(l)?),
            None => None,
        };
        if remote.len > self.shared.max_transfer {
            return Err(Error::InvalidArgument(format!(
                "a transfer of {} bytes is over the device's limit of {}",
                remote.len, self.shared.max_transfer
            )));
        }
        if let Some(e) = self.shared.peer_error(p) {
            return Ok(Err((e, done)));
        }
        let peer = remote.rank();
        let refused = |fault| Error::Remote { peer, fault };
        let kind = match ChunkedKey::decode(remote.region.key.0) {
            Ok(kind) => kind,
            Err(fault) => return Ok(Err((refused(fault), done))),
        };
        let in_bounds = remote
            .offset
            .checked_add(remote.len as u64)
            .is_some_and(|end| end <= remote.region.len);
        let Some(raddr) = remote
            .region
            .addr
            .checked_add(remote.offset)
            .filter(|_| in_bounds)
        else {
            return Ok(Err((refused(RemoteFault::OutOfBounds), done)));
        };
        if remote.len == 0 {
            // Nothing to move: done here, without asking any chunk's key or pinning it.
            if let Some(d) = done {
                d.complete(0);
            }
            return Ok(Ok(Vec::new()));
        }
        let remote_side = match kind {
            KeyKind::Whole(_) => None,
            KeyKind::Chunked(k) => Some((remote.offset, k.shift)),
        };
        let cuts = match (&local, &local_keys) {
            (Some(l), Some(keys)) => pieces(remote.len, keys.side(l.offset()), remote_side),
            // An aligned 8-byte word never crosses a chunk.
            _ => vec![(0, remote.len)],
        };
        let last = cuts.len() - 1;
        let mut done = done;
        let mut items = Vec::with_capacity(cuts.len());
        for (i, (start, len)) in cuts.into_iter().enumerate() {
            let rkey = match kind {
                KeyKind::Whole(rkey) => rkey,
                KeyKind::Chunked(k) => {
                    // Inside the region (checked above, and the transfer is not empty).
                    let chunk = (remote.offset + start as u64) >> k.shift;
                    let Ok(chunk) = u32::try_from(chunk) else {
                        return Ok(Err((refused(RemoteFault::OutOfBounds), done)));
                    };
                    match self.shared.remote_key(p, k, chunk) {
                        Ok(rkey) => rkey,
                        Err(e) => return Ok(Err((e, done))),
                    }
                }
            };
            let local = match (&local, &local_keys) {
                (Some(l), Some(keys)) => {
                    let lkey = self.shared.lkey(keys, l.offset() + start)?;
                    let slice = if len == l.len() {
                        l.clone()
                    } else {
                        LocalSlice::new(l.region(), l.offset() + start, len)?
                    };
                    Local::Slice(slice, lkey)
                }
                _ => Local::Result,
            };
            let raddr = raddr + start as u64;
            let kind = match what {
                What::Read => WrKind::Read { raddr, rkey },
                What::Write => WrKind::Write { raddr, rkey },
                What::CompareSwap { expected, desired } => WrKind::CompareSwap {
                    raddr,
                    rkey,
                    expected,
                    desired,
                },
                What::FetchAdd { add } => WrKind::FetchAdd { raddr, rkey, add },
            };
            items.push(Item {
                kind,
                local,
                name,
                done: if i == last { done.take() } else { None },
                signal: false,
                chained: false,
                continued: i != last,
            });
        }
        Ok(Ok(items))
    }
}

/// An operation's work requests, or the error it completes with (and its waiter).
type Prepared = std::result::Result<Vec<Item>, (Error, Option<Completer>)>;

/// What an operation does, apart from where.
#[derive(Debug, Clone, Copy)]
enum What {
    Read,
    Write,
    CompareSwap { expected: u64, desired: u64 },
    FetchAdd { add: u64 },
}

impl Transport for VerbsTransport {
    fn rank(&self) -> Rank {
        self.shared.rank
    }

    fn nodes(&self) -> usize {
        self.shared.nodes
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: BackendKind::Verbs,
            native_one_sided: true,
            atomics_coherent_with_cpu: false,
            ordered_writes: true,
            ordered_atomics: false,
            max_message: self.shared.config.max_message,
            max_transfer: self.shared.max_transfer,
            remote_reduce: false,
        }
    }

    /// A region of more than 8 chunks ([`super::VerbsConfig::reg_chunk`]) is
    /// registered chunk by chunk as operations first use it; a smaller one at once.
    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc> {
        self.check_open()?;
        let mut regions = self
            .shared
            .regions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let desc = |key: u64| RegionDesc {
            rank: self.shared.rank,
            key: crate::RemoteKey(key),
            addr: region.as_ptr() as u64,
            len: region.len() as u64,
        };
        if let Some(r) = regions.by_id.get(&region.id()) {
            return Ok(desc(match r {
                Registered::Whole { pinned, .. } => u64::from(pinned.mr.rkey),
                Registered::Chunked(c) => c.key().encode(),
            }));
        }
        let config = &self.shared.config;
        let chunk = match config.reg_chunk {
            0 if config.chunk_all => VerbsConfig::default().reg_chunk,
            c => c,
        };
        if chunk > 0 && (config.chunk_all || region.len() > EAGER_CHUNKS * chunk) {
            let shift = chunk.trailing_zeros();
            if !chunk.is_power_of_two() || !SHIFTS.contains(&shift) {
                return Err(Error::InvalidArgument(format!(
                    "a registration chunk of {chunk} bytes: it must be a power of two from 4 KiB to 1 TiB"
                )));
            }
            let number = regions.next_chunked;
            regions.next_chunked = number
                .checked_add(1)
                .ok_or_else(|| Error::InvalidArgument("too many registrations".into()))?;
            let c = Chunked::new(Arc::clone(region), number, shift)?;
            let key = c.key().encode();
            regions.id_of_chunked.insert(number, region.id());
            regions
                .by_id
                .insert(region.id(), Registered::Chunked(Arc::new(c)));
            return Ok(desc(key));
        }
        // SAFETY: the region is kept alive by the table entry, which drops the registration
        // first.
        let pinned = unsafe {
            Pinned::register(
                &self.shared.pd,
                &self.shared.budget,
                region.as_ptr(),
                region.len(),
            )
        }?;
        let rkey = pinned.mr.rkey;
        regions.id_of_rkey.insert(rkey, region.id());
        regions.by_id.insert(
            region.id(),
            Registered::Whole {
                pinned,
                _region: Arc::clone(region),
            },
        );
        Ok(desc(u64::from(rkey)))
    }

    fn deregister(&self, desc: &RegionDesc) -> Result<()> {
        let mut regions = self
            .shared
            .regions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let id = match ChunkedKey::decode(desc.key.0) {
            Ok(KeyKind::Whole(rkey)) => regions.id_of_rkey.remove(&rkey),
            Ok(KeyKind::Chunked(k)) => regions.id_of_chunked.remove(&k.number),
            Err(_) => None,
        };
        match id.and_then(|id| regions.by_id.remove(&id)) {
            Some(r) => {
                drop(regions);
                drop(r);
                Ok(())
            }
            None => Err(Error::InvalidArgument(format!(
                "no region registered under key {}",
                desc.key.0
            ))),
        }
    }

    fn post(&self, op: Op) -> Result<Completion> {
        self.check_open()?;
        let (c, done) = Completion::driven(self.shared.config.spin, Some(Arc::clone(&self.driver)));
        let p = op.peer().index();
        match self.prepare_op(op, Some(done))? {
            Ok(items) => {
                let sq = &self.shared.peers[p].req;
                self.shared.post_items(p, sq, items, true)?;
                Ok(c)
            }
            Err((e, _)) => Ok(Completion::failed(e)),
        }
    }

    /// Consecutive operations to one peer go out as one post list in which only the last
    /// request is signalled: its completion completes the earlier ones (RC completes in
    /// order; a failed request still produces its own completion). A page fetch (register,
    /// read the directory entry, read the page) is one `ibv_post_send` and one completion.
    fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        self.check_open()?;
        let mut out = Vec::with_capacity(ops.len());
        let mut chain: Vec<Item> = Vec::new();
        let mut chain_peer = usize::MAX;
        let send = |chain: &mut Vec<Item>, p: usize| -> Result<()> {
            if let Some(last) = chain.last_mut() {
                last.chained = false;
                let sq = &self.shared.peers[p].req;
                return self.shared.post_items(p, sq, std::mem::take(chain), true);
            }
            Ok(())
        };
        for op in ops {
            let p = match self.peer_index(op.peer()) {
                Ok(p) => p,
                Err(e) => {
                    // The operations before this one are posted, as the trait promises.
                    send(&mut chain, chain_peer)?;
                    return Err(e);
                }
            };
            if p != chain_peer || chain.len() >= REQ_DEPTH as usize / 4 {
                send(&mut chain, chain_peer)?;
                chain_peer = p;
            }
            let (c, done) =
                Completion::driven(self.shared.config.spin, Some(Arc::clone(&self.driver)));
            let prepared = match self.prepare_op(op, Some(done)) {
                Ok(prepared) => prepared,
                Err(e) => {
                    send(&mut chain, chain_peer)?;
                    return Err(e);
                }
            };
            match prepared {
                Ok(items) => {
                    for mut item in items {
                        item.chained = true;
                        chain.push(item);
                    }
                }
                // Refused before posting (bounds, a lost peer): this one fails on its own,
                // the others go out.
                Err((e, done)) => {
                    if let Some(d) = done {
                        d.fail(e);
                    }
                }
            }
            out.push(c);
        }
        send(&mut chain, chain_peer)?;
        Ok(out)
    }

    fn post_all(&self, ops: impl IntoIterator<Item = Op>) -> Result<()> {
        self.check_open()?;
        // Consecutive operations to one peer go out as one chain with one signalled request
        // at its end; a completion for each chain is what we wait for.
        let mut waits = Vec::new();
        let mut first_err = None;
        let mut batch: Vec<Item> = Vec::new();
        let mut batch_peer = usize::MAX;
        let flush_batch =
            |batch: &mut Vec<Item>, p: usize, waits: &mut Vec<Completion>| -> Result<()> {
                if batch.is_empty() {
                    return Ok(());
                }
                let (c, done) =
                    Completion::driven(self.shared.config.spin, Some(Arc::clone(&self.driver)));
                if let Some(last) = batch.last_mut() {
                    last.done = Some(done);
                }
                waits.push(c);
                let sq = &self.shared.peers[p].req;
                self.shared.post_items(p, sq, std::mem::take(batch), true)
            };
        for op in ops {
            let p = match self.peer_index(op.peer()) {
                Ok(p) => p,
                Err(e) => {
                    first_err = Some(e);
                    break;
                }
            };
            if p != batch_peer {
                if let Err(e) = flush_batch(&mut batch, batch_peer, &mut waits) {
                    first_err = Some(e);
                    break;
                }
                batch_peer = p;
            }
            match self.prepare_op(op, None) {
                Ok(Ok(items)) => batch.extend(items),
                Ok(Err((e, _))) | Err(e) => {
                    first_err = Some(e);
                    break;
                }
            }
            if batch.len() >= REQ_DEPTH as usize / 2 {
                if let Err(e) = flush_batch(&mut batch, batch_peer, &mut waits) {
                    first_err = Some(e);
                    break;
                }
            }
        }
        if first_err.is_none() {
            if let Err(e) = flush_batch(&mut batch, batch_peer, &mut waits) {
                first_err = Some(e);
            }
        }
        let waited = crate::completion::wait_all(&waits);
        match first_err {
            Some(e) => Err(e),
            None => waited,
        }
    }

    fn flush(&self, peer: Rank) -> Result<()> {
        self.check_open()?;
        let p = self.peer_index(peer)?;
        if let Some(e) = self.shared.peer_error(p) {
            return Err(e);
        }
        let Some(ep) = self.shared.endpoint_of(p) else {
            return Err(Error::Closed);
        };
        // A read completes after every earlier request on the queue pair has been executed at
        // the target: the writes before it are in its memory.
        let (c, done) = Completion::driven(self.shared.config.spin, Some(Arc::clone(&self.driver)));
        let item = Item {
            kind: WrKind::Read {
                raddr: ep.flush_addr,
                rkey: ep.flush_rkey,
            },
            local: Local::Result,
            name: "RDMA READ (flush)",
            done: Some(done),
            signal: true,
            chained: false,
            continued: false,
        };
        self.shared
            .post_items(p, &self.shared.peers[p].req, vec![item], true)?;
        c.wait().map(drop)
    }

    fn send(&self, peer: Rank, tag: Tag, data: &[u8]) -> Result<()> {
        self.check_open()?;
        let p = self.peer_index(peer)?;
        if data.len() > self.shared.config.max_message {
            return Err(Error::InvalidArgument(format!(
                "message of {} bytes over the limit of {}",
                data.len(),
                self.shared.config.max_message
            )));
        }
        if p == self.shared.rank.index() {
            self.shared.mailbox.deliver(Message {
                source: peer,
                tag,
                data: data.to_vec(),
            });
            return Ok(());
        }
        if let Some(e) = self.shared.peer_error(p) {
            return Err(e);
        }
        let _whole = self.shared.peers[p]
            .send_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for f in fragments(tag.0, data) {
            self.shared.send_ctrl(p, &Control::Fragment(f), true)?;
        }
        Ok(())
    }

    fn recv(
        &self,
        from: Option<Rank>,
        tag: Option<Tag>,
        timeout: Option<Duration>,
    ) -> Result<Message> {
        self.shared.mailbox.recv(from, tag, timeout)
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
        self.shared.mailbox.await_message(from, tag, timeout)
    }

    fn wait_failure(&self) -> Error {
        self.shared.mailbox.wait_failure()
    }

    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        let sh = &self.shared;
        sh.quiet.store(true, Ordering::Release);
        // Goodbyes first, while the queues still run.
        let mut result = Ok(());
        for p in 0..sh.nodes {
            if p != sh.rank.index() && sh.peer_error(p).is_none() {
                if let Err(e) = sh.send_ctrl(p, &Control::Goodbye, true) {
                    result = Err(e);
                }
            }
        }
        sh.closing.store(true, Ordering::Release);
        // Let the goodbyes leave (bounded): wait until the control queues are empty.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline
            && sh
                .peers
                .iter()
                .filter_map(|p| p.ctrl.as_ref())
                .any(|c| !c.lock().entries.is_empty())
        {
            sh.drive(false);
            std::thread::yield_now();
        }
        sh.stopping.store(true, Ordering::Release);
        sh.wake_progress();
        if let Some(h) = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = h.join();
        }
        // Fail whatever is still outstanding: nobody will complete it now.
        for peer in &sh.peers {
            for sq in std::iter::once(&peer.req).chain(peer.ctrl.as_ref()) {
                let mut inner = sq.lock();
                inner.state = SqState::Dead(Error::Closed);
                for e in inner.entries.drain(..) {
                    if let Some(d) = e.done {
                        d.fail(Error::Closed);
                    }
                }
                drop(inner);
                sq.changed.notify_all();
            }
        }
        sh.mailbox.close();
        result
    }
}

impl Drop for VerbsTransport {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
