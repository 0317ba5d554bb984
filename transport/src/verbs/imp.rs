//! The verbs backend itself: queue pairs per peer, posting, completion handling, messages,
//! heartbeats and recovery from refused accesses.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::sys::{self, Channel, Context, Cq, Mr, Path, Pd, Qp, Remote, Wc, Wr, WrKind};
use super::VerbsConfig;
use crate::api::Transport;
use crate::completion::{Completer, Completion, Driver};
use crate::error::{Error, RemoteFault, Result};
use crate::mailbox::Mailbox;
use crate::region::Region;
use crate::types::{BackendKind, Capabilities, LocalSlice, Message, Op, Rank, RegionDesc, Tag};

/// Largest job: every endpoint carries one entry per node and must fit the bootstrap's 64 KiB.
pub(crate) const MAX_NODES: usize = 3000;
const MAGIC: &[u8; 8] = b"DSMVERB1";
const FIXED: usize = 8 + 4 + 4 + 2 + 1 + 1 + 16 + 4 + 8 + 4;
const PER_PEER: usize = 20;
/// Work requests of a peer's one-sided send queue.
const REQ_DEPTH: u32 = 256;
/// Send and receive slots of a peer's control queue pair (messages, heartbeats).
const CTRL_DEPTH: u32 = 32;
/// Bytes of one control receive buffer: the largest fragment of a message, header included.
const FRAG: usize = 16 << 10;
const HEADER: usize = 16;
const INLINE_WANTED: u32 = 128;
const RECV_BIT: u64 = 1 << 63;

const K_HELLO: u8 = 1;
const K_MSG: u8 = 2;
const K_GOODBYE: u8 = 3;
const K_RESET: u8 = 4;
const K_RESET_ACK: u8 = 5;
const F_FIRST: u8 = 1;

/// What the device selection found.
#[derive(Debug)]
pub(crate) struct Selected {
    ctx: Arc<Context>,
    port: u8,
    port_info: sys::PortInfo,
    caps: sys::DeviceCaps,
    gid_index: u8,
    gid: [u8; 16],
    global: bool,
}

impl Selected {
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} port {} ({}, GID index {} = {})",
            self.ctx.name,
            self.port,
            if self.port_info.link_layer == sys::LINK_LAYER_INFINIBAND {
                "InfiniBand"
            } else {
                "Ethernet/RoCE"
            },
            self.gid_index,
            gid_text(&self.gid)
        )
    }
}

fn gid_text(g: &[u8; 16]) -> String {
    std::net::Ipv6Addr::from(*g).to_string()
}

fn ipv4_mapped(g: &[u8; 16]) -> bool {
    g[..10].iter().all(|&b| b == 0) && g[10] == 0xff && g[11] == 0xff
}

fn port_state_name(s: u32) -> &'static str {
    match s {
        1 => "DOWN",
        2 => "INIT",
        3 => "ARMED",
        4 => "ACTIVE",
        5 => "ACTIVE_DEFER",
        _ => "unknown",
    }
}

/// Finds the device and port to use (the configured ones, or the first active port), and the
/// GID: the configured index, else for RoCE the first RoCE v2 IPv4-mapped GID.
pub(crate) fn select(config: &VerbsConfig) -> Result<Selected> {
    let names = sys::device_names();
    if names.is_empty() {
        return Err(Error::Unsupported(
            "no RDMA device on this machine (ibv_get_device_list found none; is the kernel's RDMA support loaded?)".into(),
        ));
    }
    let candidates: Vec<String> = match &config.device {
        Some(d) if names.iter().any(|n| n == d) => vec![d.clone()],
        Some(d) => {
            return Err(Error::Unsupported(format!(
                "no RDMA device called {d} (DSM_RDMA_DEVICE); this machine has {}",
                names.join(", ")
            )))
        }
        None => names,
    };
    let mut why = Vec::new();
    for name in candidates {
        let ctx = Context::open(&name)?;
        let caps = ctx.caps()?;
        let ports: Vec<u8> = match config.port {
            Some(p) if p >= 1 && p <= caps.ports => vec![p],
            Some(p) => {
                why.push(format!("{name} has no port {p} (it has {})", caps.ports));
                continue;
            }
            None => (1..=caps.ports).collect(),
        };
        for port in ports {
            let info = ctx.port(port)?;
            if !info.active {
                why.push(format!(
                    "{name} port {port} is {}",
                    port_state_name(info.state)
                ));
                continue;
            }
            let (gid_index, gid, global) = pick_gid(&ctx, port, &info, config.gid_index)?;
            return Ok(Selected {
                ctx,
                port,
                port_info: info,
                caps,
                gid_index,
                gid,
                global,
            });
        }
    }
    Err(Error::Unsupported(format!(
        "no active RDMA port: {}",
        why.join("; ")
    )))
}

fn pick_gid(
    ctx: &Context,
    port: u8,
    info: &sys::PortInfo,
    wanted: Option<u8>,
) -> Result<(u8, [u8; 16], bool)> {
    if let Some(i) = wanted {
        return match ctx.gid(port, i32::from(i)) {
            Some(g) if g != [0; 16] => Ok((i, g, true)),
            _ => Err(Error::Unsupported(format!(
                "{} port {port} has no GID at index {i} (DSM_RDMA_GID_INDEX)",
                ctx.name
            ))),
        };
    }
    if info.link_layer == sys::LINK_LAYER_INFINIBAND {
        let g = ctx.gid(port, 0).unwrap_or([0; 16]);
        return Ok((0, g, false));
    }
    let len = info.gid_table_len.clamp(0, 256);
    let gids: Vec<(u8, [u8; 16])> = (0..len)
        .filter_map(|i| ctx.gid(port, i).map(|g| (i as u8, g)))
        .filter(|(_, g)| *g != [0; 16])
        .collect();
    let roce_v2 = |i: u8| {
        std::fs::read_to_string(format!(
            "/sys/class/infiniband/{}/ports/{port}/gid_attrs/types/{i}",
            ctx.name
        ))
        .map(|t| t.trim().eq_ignore_ascii_case("RoCE v2"))
        .unwrap_or(false)
    };
    let pick = gids
        .iter()
        .find(|(i, g)| ipv4_mapped(g) && roce_v2(*i))
        .or_else(|| gids.iter().find(|(_, g)| ipv4_mapped(g)))
        .or_else(|| gids.first());
    match pick {
        Some(&(i, g)) => Ok((i, g, true)),
        None => Err(Error::Unsupported(format!(
            "{} port {port} has no usable GID (is the interface up with an address?)",
            ctx.name
        ))),
    }
}

/// A registered region: the registration is dropped before the region it covers.
#[derive(Debug)]
struct Registered {
    mr: Mr,
    _region: Arc<Region>,
}

#[derive(Debug, Default)]
struct Regions {
    by_id: HashMap<u64, Registered>,
    id_of_rkey: HashMap<u32, u64>,
}

/// Internal registered scratch memory: atomic results, message bounce buffers.
#[derive(Debug)]
struct Scratch {
    mr: Mr,
    region: Arc<Region>,
    slot: usize,
}

impl Scratch {
    fn new(pd: &Arc<Pd>, slots: usize, slot: usize) -> Result<Scratch> {
        let region = Region::allocate(slots * slot)?;
        // SAFETY: the region is owned here and dropped after the registration (field order and
        // `Scratch` is never taken apart).
        let mr = unsafe { Mr::register(pd, region.as_ptr(), region.len()) }?;
        Ok(Scratch { mr, region, slot })
    }
    fn addr(&self, pos: usize) -> u64 {
        self.region.as_ptr() as u64 + (pos * self.slot) as u64
    }
}

/// One posted work request, in posting order.
#[derive(Debug)]
struct Entry {
    wr_id: u64,
    pos: usize,
    name: &'static str,
    len: usize,
    atomic: bool,
    done: Option<Completer>,
    _keep: Option<LocalSlice>,
}

#[derive(Debug, Clone)]
enum SqState {
    Ready,
    /// Reconnecting after a refused access; posts wait.
    Recovering {
        psn: u32,
    },
    Dead(Error),
}

#[derive(Debug)]
struct SqInner {
    entries: VecDeque<Entry>,
    first_pos: usize,
    unsignaled: usize,
    state: SqState,
}

/// A send queue and what is outstanding on it.
#[derive(Debug)]
struct Sq {
    qp: Qp,
    depth: usize,
    scratch: Scratch,
    inner: Mutex<SqInner>,
    changed: Condvar,
}

impl Sq {
    fn new(qp: Qp, depth: usize, scratch: Scratch) -> Sq {
        Sq {
            qp,
            depth,
            scratch,
            inner: Mutex::new(SqInner {
                entries: VecDeque::new(),
                first_pos: 0,
                unsignaled: 0,
                state: SqState::Ready,
            }),
            changed: Condvar::new(),
        }
    }
    fn lock(&self) -> MutexGuard<'_, SqInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a work request's local side is.
#[derive(Debug)]
enum Local {
    Slice(LocalSlice, u32),
    /// The 8-byte result slot of an atomic.
    Result,
    /// Message bytes: inline when small, else copied into the send slot.
    Bytes(Vec<u8>),
}

#[derive(Debug)]
struct Item {
    kind: WrKind,
    local: Local,
    name: &'static str,
    done: Option<Completer>,
    /// Signal even without a waiter (rare control messages, so that their queue drains).
    signal: bool,
    /// Has a waiter, but a later signalled request of the same chain completes it (RC
    /// completes in order): it may go unsignalled.
    chained: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Up,
    Closed,
    Lost,
}

/// What a peer published in its endpoint.
#[derive(Debug, Clone, Copy)]
struct PeerEndpoint {
    lid: u16,
    mtu: u32,
    gid: [u8; 16],
    flush_rkey: u32,
    flush_addr: u64,
    /// Its queue pairs towards us.
    ctrl_qpn: u32,
    ctrl_psn: u32,
    req_qpn: u32,
    req_psn: u32,
    resp_qpn: u32,
}

#[derive(Debug)]
struct Assembly {
    tag: u64,
    total: usize,
    data: Vec<u8>,
}

#[derive(Debug)]
struct Peer {
    rank: Rank,
    /// Our one-sided operations to the peer.
    req: Sq,
    /// The peer's one-sided operations to us (we only serve them).
    resp: Qp,
    /// Messages, heartbeats and recovery (`None` for this node).
    ctrl: Option<Sq>,
    recv: Option<Scratch>,
    send_lock: Mutex<()>,
    remote: Mutex<Option<PeerEndpoint>>,
    status: Mutex<(Status, Option<Error>)>,
    last_recv_ms: AtomicU64,
    last_send_ms: AtomicU64,
    heard: AtomicBool,
    assembly: Mutex<Option<Assembly>>,
}

/// Work found while holding the completion queue that must be done after releasing it.
#[derive(Debug)]
enum Action {
    Recover(usize, u32),
    ServeReset(usize, u32),
    Reconnect(usize),
    Lose(usize, Error),
}

#[derive(Debug)]
pub(crate) struct Shared {
    rank: Rank,
    nodes: usize,
    config: VerbsConfig,
    sel: Selected,
    path: Path,
    pd: Arc<Pd>,
    cq: Arc<Cq>,
    poll_lock: Mutex<()>,
    regions: RwLock<Regions>,
    peers: Vec<Peer>,
    qpn: HashMap<u32, (usize, bool)>,
    mailbox: Arc<Mailbox>,
    flush: Scratch,
    next_wr: AtomicU64,
    /// Set when closing starts: no more heartbeats.
    quiet: AtomicBool,
    closing: AtomicBool,
    stopping: AtomicBool,
    wake: OwnedFd,
    start: Instant,
    max_inline: usize,
    max_transfer: usize,
}

fn random_psn() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::getrandom(&mut b);
    u32::from_le_bytes(b) & 0x00ff_ffff
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Read { .. } => "RDMA READ",
        Op::Write { .. } => "RDMA WRITE",
        Op::CompareSwap { .. } => "compare-and-swap",
        Op::FetchAdd { .. } => "fetch-and-add",
    }
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn lkey_of(&self, slice: &LocalSlice) -> Result<u32> {
        let regions = self.regions.read().unwrap_or_else(|e| e.into_inner());
        regions
            .by_id
            .get(&slice.region().id())
            .map(|r| r.mr.lkey)
            .ok_or(Error::NotRegistered(slice.region().id()))
    }

    fn peer_error(&self, p: usize) -> Option<Error> {
        let st = self.peers[p]
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match st.0 {
            Status::Up => None,
            _ => st.1.clone(),
        }
    }

    /// Posts `items` on `sq` (the queue towards peer `p`), waiting for room and for recovery.
    /// `wait`: whether to wait for room at all (heartbeats do not).
    fn post_items(&self, p: usize, sq: &Sq, items: Vec<Item>, wait: bool) -> Result<()> {
        let mut items = items.into_iter().peekable();
        let chunk = (sq.depth / 2).max(1);
        while items.peek().is_some() {
            let deadline = Instant::now() + self.config.peer_timeout;
            let mut inner = sq.lock();
            loop {
                if self.closing.load(Ordering::Acquire) && wait {
                    return Err(Error::Closed);
                }
                match &inner.state {
                    SqState::Dead(e) => return Err(e.clone()),
                    SqState::Ready if sq.depth - inner.entries.len() >= 1 => break,
                    state => {
                        if !wait {
                            return Ok(());
                        }
                        if Instant::now() >= deadline {
                            return Err(Error::Timeout(format!(
                                "{} to rank {}",
                                if matches!(state, SqState::Ready) {
                                    "waiting for room in the send queue"
                                } else {
                                    "waiting for the queue pair to recover"
                                },
                                self.peers[p].rank
                            )));
                        }
                    }
                }
                drop(inner);
                self.drive(false);
                std::thread::yield_now();
                inner = sq.lock();
            }
            let room = (sq.depth - inner.entries.len()).min(chunk);
            let mut wrs = Vec::with_capacity(room);
            let mut entries = Vec::with_capacity(room);
            let mut inline_bufs: Vec<Vec<u8>> = Vec::new();
            let mut taken = 0;
            while taken < room {
                let Some(item) = items.next() else { break };
                taken += 1;
                let pos = (inner.first_pos + inner.entries.len() + entries.len()) % sq.depth;
                let free_after = sq.depth - inner.entries.len() - entries.len() - 1;
                let signaled = (item.done.is_some() && !item.chained)
                    || item.signal
                    || inner.unsignaled + 1 >= sq.depth / 2
                    || free_after < (sq.depth / 4).max(1);
                let (addr, len, lkey, inline, keep, atomic) = match item.local {
                    Local::Slice(s, lkey) => {
                        let addr = s.region().as_ptr() as u64 + s.offset() as u64;
                        let len = s.len();
                        let inline =
                            matches!(item.kind, WrKind::Write { .. }) && len <= self.max_inline;
                        (addr, len, lkey, inline, Some(s), false)
                    }
                    Local::Result => (
                        sq.scratch.addr(pos),
                        8,
                        sq.scratch.mr.lkey,
                        false,
                        None,
                        true,
                    ),
                    Local::Bytes(b) => {
                        if b.len() <= self.max_inline {
                            let addr = b.as_ptr() as u64;
                            let len = b.len();
                            inline_bufs.push(b);
                            (addr, len, 0, true, None, false)
                        } else {
                            sq.scratch.region.write_at(pos * sq.scratch.slot, &b)?;
                            (
                                sq.scratch.addr(pos),
                                b.len(),
                                sq.scratch.mr.lkey,
                                false,
                                None,
                                false,
                            )
                        }
                    }
                };
                let wr_id = self.next_wr.fetch_add(1, Ordering::Relaxed);
                wrs.push(Wr {
                    wr_id,
                    kind: item.kind,
                    addr,
                    len: len as u32,
                    lkey,
                    signaled,
                    inline,
                });
                if signaled {
                    inner.unsignaled = 0;
                } else {
                    inner.unsignaled += 1;
                }
                entries.push(Entry {
                    wr_id,
                    pos,
                    name: item.name,
                    len,
                    atomic,
                    done: item.done,
                    _keep: keep,
                });
            }
            // SAFETY: every non-inline local buffer is registered (lkey looked up above, or
            // internal scratch) and kept alive until completion: user slices by the entry's
            // `_keep`, scratch slots by `sq`, which lives as long as the QP. Inline buffers
            // live until the call returns.
            let posted = unsafe { sq.qp.post_send(&wrs) };
            drop(inline_bufs);
            match posted {
                Ok(()) => inner.entries.extend(entries),
                Err((rc, at)) => {
                    let name = entries.get(at).map_or("work request", |e| e.name);
                    let mut rest = entries.split_off(at.min(entries.len()));
                    inner.entries.extend(entries);
                    for e in rest.drain(..) {
                        if let Some(d) = e.done {
                            d.fail(Error::Closed);
                        }
                    }
                    return Err(Error::io(
                        format!(
                            "posting {name} to rank {} (ibv_post_send)",
                            self.peers[p].rank
                        ),
                        std::io::Error::from_raw_os_error(if rc > 0 { rc } else { libc::EIO }),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Polls the completion queue once (`block_lock`: wait for the poll lock instead of giving
    /// up when another thread polls), handles what it finds, then does the follow-up work.
    /// Returns how many completions were handled.
    fn drive(&self, block_lock: bool) -> usize {
        let guard = if block_lock {
            Some(self.poll_lock.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            match self.poll_lock.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        };
        let Some(guard) = guard else { return 0 };
        let mut wcs = Vec::new();
        let mut total = 0;
        let mut actions = Vec::new();
        while self.cq.poll(&mut wcs, 32) > 0 {
            for wc in wcs.drain(..) {
                total += 1;
                self.handle(&wc, &mut actions);
            }
            if total >= 256 {
                break;
            }
        }
        drop(guard);
        for a in actions {
            self.act(a);
        }
        total
    }

    fn handle(&self, wc: &Wc, actions: &mut Vec<Action>) {
        if wc.wr_id & RECV_BIT != 0 {
            self.handle_recv(wc, actions);
            return;
        }
        let Some(&(p, is_ctrl)) = self.qpn.get(&wc.qp_num) else {
            return;
        };
        let peer = &self.peers[p];
        let sq = if is_ctrl {
            match &peer.ctrl {
                Some(c) => c,
                None => return,
            }
        } else {
            &peer.req
        };
        let mut inner = sq.lock();
        if !inner.entries.iter().any(|e| e.wr_id == wc.wr_id) {
            return; // from before a reset or a loss: already accounted for
        }
        while let Some(e) = inner.entries.pop_front() {
            let pos = inner.first_pos;
            inner.first_pos = (pos + 1) % sq.depth;
            let this = e.wr_id == wc.wr_id;
            if !this || wc.ok() {
                let value = if e.atomic {
                    sq.scratch
                        .region
                        .atomic_u64(e.pos * 8)
                        .map(|w| w.load(Ordering::Acquire))
                        .unwrap_or(0)
                } else {
                    0
                };
                if let Some(d) = e.done {
                    d.complete(value);
                }
                if this {
                    break;
                }
                continue;
            }
            // The failed request: what it means depends on the status.
            let status = wc.status_str();
            let err = if wc.remote_access() {
                tracing::debug!("{} to rank {} refused: {status}", e.name, peer.rank);
                Error::Remote {
                    peer: peer.rank,
                    fault: RemoteFault::BadKey,
                }
            } else if wc.remote_invalid() {
                tracing::debug!("{} to rank {} refused: {status}", e.name, peer.rank);
                Error::Remote {
                    peer: peer.rank,
                    fault: RemoteFault::OutOfBounds,
                }
            } else if wc.unreachable() || is_ctrl || wc.flushed() {
                Error::PeerLost {
                    peer: peer.rank,
                    reason: format!("{} of {} bytes failed: {status}", e.name, e.len),
                }
            } else {
                Error::io(
                    format!("{} of {} bytes to rank {} failed", e.name, e.len, peer.rank),
                    std::io::Error::other(status.clone()),
                )
            };
            if let Some(d) = e.done {
                d.fail(err.clone());
            }
            let flushed = Error::io(
                format!(
                    "operation to rank {} flushed: an earlier {} on the same queue pair failed",
                    peer.rank, e.name
                ),
                std::io::Error::other(err.to_string()),
            );
            for later in inner.entries.drain(..) {
                if let Some(d) = later.done {
                    d.fail(match &err {
                        Error::PeerLost { .. } => err.clone(),
                        _ => flushed.clone(),
                    });
                }
            }
            inner.first_pos = 0;
            inner.unsignaled = 0;
            if matches!(err, Error::PeerLost { .. }) {
                let closed = matches!(peer.status.lock().map(|s| s.0), Ok(Status::Closed));
                if closed {
                    inner.state = SqState::Dead(Error::PeerClosed(peer.rank));
                } else {
                    actions.push(Action::Lose(p, err));
                }
            } else {
                let psn = random_psn();
                inner.state = SqState::Recovering { psn };
                actions.push(Action::Recover(p, psn));
            }
            break;
        }
        drop(inner);
        sq.changed.notify_all();
    }

    fn handle_recv(&self, wc: &Wc, actions: &mut Vec<Action>) {
        let p = ((wc.wr_id >> 20) & 0xffff_ffff) as usize;
        let slot = (wc.wr_id & 0xfffff) as usize;
        let Some(peer) = self.peers.get(p) else {
            return;
        };
        let (Some(ctrl), Some(recv)) = (&peer.ctrl, &peer.recv) else {
            return;
        };
        if !wc.ok() {
            let up = matches!(peer.status.lock().map(|s| s.0), Ok(Status::Up));
            if up && !self.closing.load(Ordering::Acquire) {
                actions.push(Action::Lose(
                    p,
                    Error::PeerLost {
                        peer: peer.rank,
                        reason: format!("receive failed: {}", wc.status_str()),
                    },
                ));
            }
            return;
        }
        peer.last_recv_ms.store(self.now_ms(), Ordering::Relaxed);
        peer.heard.store(true, Ordering::Release);
        let len = (wc.byte_len as usize).min(FRAG);
        let mut buf = vec![0u8; len];
        if recv.region.read_at(slot * FRAG, &mut buf).is_err() {
            return;
        }
        // The slot is copied out: give it back to the NIC at once.
        if !self.closing.load(Ordering::Acquire) {
            // SAFETY: the slot lies inside the registered receive scratch, which lives as long
            // as the peer's queue pairs.
            let rc = unsafe {
                ctrl.qp
                    .post_recv(wc.wr_id, recv.addr(slot), FRAG as u32, recv.mr.lkey)
            };
            if rc.is_err() {
                tracing::debug!("re-posting a receive from rank {} failed", peer.rank);
            }
        }
        if let Err(detail) = self.on_message(p, &buf, actions) {
            actions.push(Action::Lose(
                p,
                Error::Protocol {
                    from: peer.rank,
                    detail,
                },
            ));
        }
    }

    fn on_message(
        &self,
        p: usize,
        buf: &[u8],
        actions: &mut Vec<Action>,
    ) -> std::result::Result<(), String> {
        let peer = &self.peers[p];
        if buf.len() < HEADER {
            return Err(format!("control message of {} bytes", buf.len()));
        }
        let kind = buf[0];
        let flags = buf[1];
        let total = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        let mut t = [0u8; 8];
        t.copy_from_slice(&buf[8..16]);
        let tag = u64::from_le_bytes(t);
        let body = &buf[HEADER..];
        match kind {
            K_HELLO => Ok(()),
            K_GOODBYE => {
                let mut st = peer.status.lock().unwrap_or_else(|e| e.into_inner());
                if st.0 == Status::Up {
                    *st = (Status::Closed, Some(Error::PeerClosed(peer.rank)));
                    drop(st);
                    self.mailbox
                        .peer_down(peer.rank, Error::PeerClosed(peer.rank));
                }
                Ok(())
            }
            K_RESET => {
                actions.push(Action::ServeReset(p, total as u32));
                Ok(())
            }
            K_RESET_ACK => {
                actions.push(Action::Reconnect(p));
                Ok(())
            }
            K_MSG => {
                if total > self.config.max_message {
                    return Err(format!(
                        "message of {total} bytes, over the limit of {}",
                        self.config.max_message
                    ));
                }
                let mut asm = peer.assembly.lock().unwrap_or_else(|e| e.into_inner());
                if flags & F_FIRST != 0 {
                    if asm.is_some() {
                        return Err("a new message before the previous one was complete".into());
                    }
                    *asm = Some(Assembly {
                        tag,
                        total,
                        data: Vec::with_capacity(total),
                    });
                }
                let Some(a) = asm.as_mut() else {
                    return Err("a continuation without a first fragment".into());
                };
                if a.tag != tag || a.total != total || a.data.len() + body.len() > total {
                    return Err("a fragment that does not continue its message".into());
                }
                a.data.extend_from_slice(body);
                if a.data.len() == a.total {
                    if let Some(a) = asm.take() {
                        self.mailbox.deliver(Message {
                            source: peer.rank,
                            tag: Tag(a.tag),
                            data: a.data,
                        });
                    }
                }
                Ok(())
            }
            other => Err(format!("unknown control message kind {other}")),
        }
    }

    fn act(&self, a: Action) {
        match a {
            Action::Lose(p, e) => self.lose(p, e),
            Action::Recover(p, psn) => {
                if p == self.rank.index() {
                    self.serve_reset(p, psn);
                    self.reconnect(p);
                } else if let Err(e) = self.send_ctrl(p, K_RESET, 0, psn, Tag(0), &[], true) {
                    self.lose(
                        p,
                        Error::PeerLost {
                            peer: self.peers[p].rank,
                            reason: format!("could not ask it to reset a queue pair: {e}"),
                        },
                    );
                }
            }
            Action::ServeReset(p, psn) => {
                self.serve_reset(p, psn);
                if p != self.rank.index() {
                    let _ = self.send_ctrl(p, K_RESET_ACK, 0, 0, Tag(0), &[], true);
                }
            }
            Action::Reconnect(p) => self.reconnect(p),
        }
    }

    fn endpoint_of(&self, p: usize) -> Option<PeerEndpoint> {
        *self.peers[p]
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Reconnects our responder queue pair for peer `p`, whose requester restarts at `psn`.
    fn serve_reset(&self, p: usize, psn: u32) {
        let Some(ep) = self.endpoint_of(p) else {
            return;
        };
        let remote = Remote {
            qpn: ep.req_qpn,
            psn,
            gid: ep.gid,
            lid: ep.lid,
            mtu: ep.mtu,
        };
        if let Err(e) = self.peers[p].resp.connect(
            &self.path,
            &remote,
            random_psn(),
            self.sel.port_info.active_mtu,
        ) {
            tracing::warn!("resetting the queue pair serving rank {p}: {e}");
        }
    }

    /// Reconnects our requester queue pair to peer `p` once its responder has been reset.
    fn reconnect(&self, p: usize) {
        let Some(ep) = self.endpoint_of(p) else {
            return;
        };
        let sq = &self.peers[p].req;
        let mut inner = sq.lock();
        let SqState::Recovering { psn } = inner.state else {
            return;
        };
        let remote = Remote {
            qpn: ep.resp_qpn,
            psn: 0,
            gid: ep.gid,
            lid: ep.lid,
            mtu: ep.mtu,
        };
        match sq
            .qp
            .connect(&self.path, &remote, psn, self.sel.port_info.active_mtu)
        {
            Ok(()) => {
                inner.entries.clear();
                inner.first_pos = 0;
                inner.unsignaled = 0;
                inner.state = SqState::Ready;
            }
            Err(e) => {
                inner.state = SqState::Dead(Error::PeerLost {
                    peer: self.peers[p].rank,
                    reason: format!("reconnecting after a refused access failed: {e}"),
                })
            }
        }
        drop(inner);
        sq.changed.notify_all();
    }

    /// Declares peer `p` lost: every operation on it fails, receivers waiting for it wake up.
    fn lose(&self, p: usize, err: Error) {
        let peer = &self.peers[p];
        {
            let mut st = peer.status.lock().unwrap_or_else(|e| e.into_inner());
            if st.0 != Status::Up {
                return;
            }
            *st = (Status::Lost, Some(err.clone()));
        }
        tracing::debug!("rank {}: {err}", self.rank);
        self.mailbox.peer_down(peer.rank, err.clone());
        for sq in std::iter::once(&peer.req).chain(peer.ctrl.as_ref()) {
            let mut inner = sq.lock();
            inner.state = SqState::Dead(err.clone());
            for e in inner.entries.drain(..) {
                if let Some(d) = e.done {
                    d.fail(err.clone());
                }
            }
            sq.qp.to_error();
            drop(inner);
            sq.changed.notify_all();
        }
        peer.resp.to_error();
    }

    /// Sends one control message (a fragment, or a header-only message) to peer `p`.
    #[allow(clippy::too_many_arguments)]
    fn send_ctrl(
        &self,
        p: usize,
        kind: u8,
        flags: u8,
        total: u32,
        tag: Tag,
        body: &[u8],
        wait: bool,
    ) -> Result<()> {
        let Some(ctrl) = &self.peers[p].ctrl else {
            return Ok(());
        };
        let mut bytes = Vec::with_capacity(HEADER + body.len());
        bytes.extend_from_slice(&[kind, flags, 0, 0]);
        bytes.extend_from_slice(&total.to_le_bytes());
        bytes.extend_from_slice(&tag.0.to_le_bytes());
        bytes.extend_from_slice(body);
        let item = Item {
            kind: WrKind::Send,
            local: Local::Bytes(bytes),
            name: "SEND",
            done: None,
            signal: !matches!(kind, K_HELLO | K_MSG),
            chained: false,
        };
        self.post_items(p, ctrl, vec![item], wait)?;
        self.peers[p]
            .last_send_ms
            .store(self.now_ms(), Ordering::Relaxed);
        Ok(())
    }

    fn wake_progress(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our own eventfd.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

/// The progress thread: completions, heartbeats, silent peers.
fn progress(shared: Arc<Shared>) {
    let hb = (shared.config.peer_timeout / 4).max(Duration::from_millis(10));
    let tick = hb.min(Duration::from_millis(100));
    let mut last_work = Instant::now();
    let mut last_check = Instant::now();
    while !shared.stopping.load(Ordering::Acquire) {
        if shared.drive(true) > 0 {
            last_work = Instant::now();
            continue;
        }
        if last_check.elapsed() >= tick {
            last_check = Instant::now();
            let now = shared.now_ms();
            for (p, peer) in shared.peers.iter().enumerate() {
                if p == shared.rank.index() || shared.peer_error(p).is_some() {
                    continue;
                }
                if !shared.quiet.load(Ordering::Acquire)
                    && now.saturating_sub(peer.last_send_ms.load(Ordering::Relaxed))
                        >= hb.as_millis() as u64
                {
                    let _ = shared.send_ctrl(p, K_HELLO, 0, 0, Tag(0), &[], false);
                }
                let silent = now.saturating_sub(peer.last_recv_ms.load(Ordering::Relaxed));
                if silent >= shared.config.peer_timeout.as_millis() as u64 {
                    shared.lose(
                        p,
                        Error::PeerLost {
                            peer: peer.rank,
                            reason: format!(
                                "silent for {:.1} s (no heartbeat over RDMA)",
                                silent as f64 / 1000.0
                            ),
                        },
                    );
                }
            }
        }
        if last_work.elapsed() < shared.config.spin {
            std::hint::spin_loop();
            continue;
        }
        // Block: arm, look once more, then sleep on the channel (or the wake-up descriptor).
        shared.cq.arm();
        if shared.drive(true) > 0 {
            last_work = Instant::now();
            continue;
        }
        let mut fds = [
            libc::pollfd {
                fd: shared.cq.channel.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries; a bounded timeout.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), 2, tick.as_millis() as i32) };
        shared.cq.channel.drain();
        if fds[1].revents != 0 {
            let mut v: u64 = 0;
            // SAFETY: reading 8 bytes into a live u64 from our own non-blocking eventfd.
            let _ = unsafe {
                libc::read(
                    shared.wake.as_raw_fd(),
                    (&mut v as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

/// Lets a thread waiting for a completion poll the completion queue itself.
#[derive(Debug)]
struct CqDriver(Arc<Shared>);

impl Driver for CqDriver {
    fn drive(&self) {
        self.0.drive(false);
    }
}

/// A node between the two set-up phases: queue pairs created, not yet connected.
#[derive(Debug)]
pub struct PreparedVerbs {
    shared: Shared,
}

/// A node of a job connected over RDMA verbs.
#[derive(Debug)]
pub struct VerbsTransport {
    shared: Arc<Shared>,
    driver: Arc<dyn Driver>,
    progress: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl VerbsTransport {
    /// Opens the RDMA device, creates the protection domain, completion queue and one set of
    /// queue pairs per peer. Publish [`PreparedVerbs::endpoint`] to the other nodes, then call
    /// [`PreparedVerbs::connect`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] when there is no RDMA device or no active port (naming what was
    /// found), [`Error::InvalidArgument`] for a rank outside the job or a job larger than the
    /// bootstrap can describe, [`Error::Io`] naming the verb that failed.
    pub fn prepare(rank: Rank, nodes: usize, config: VerbsConfig) -> Result<PreparedVerbs> {
        if nodes == 0 || rank.index() >= nodes {
            return Err(Error::InvalidArgument(format!(
                "rank {rank} in a job of {nodes} nodes"
            )));
        }
        if nodes > MAX_NODES {
            return Err(Error::InvalidArgument(format!(
                "the verbs backend supports at most {MAX_NODES} nodes (its endpoint must fit the bootstrap)"
            )));
        }
        let sel = select(&config)?;
        if !sel.caps.atomics {
            return Err(Error::Unsupported(format!(
                "{} does not support remote atomics",
                sel.ctx.name
            )));
        }
        let pd = Pd::new(&sel.ctx)?;
        let channel = Channel::new(&sel.ctx)?;
        let req_depth = REQ_DEPTH.min(sel.caps.max_qp_wr.max(8));
        let ctrl_depth = CTRL_DEPTH.min(sel.caps.max_qp_wr.max(8));
        let cqe = (nodes as u64 * u64::from(req_depth + 2 * ctrl_depth) + 64)
            .min(u64::from(sel.caps.max_cqe.max(64))) as u32;
        let cq = Cq::new(&sel.ctx, &channel, cqe)?;
        let mut peers = Vec::with_capacity(nodes);
        let mut qpn = HashMap::new();
        let mut max_inline = usize::MAX;
        for p in 0..nodes {
            let req = Qp::new(&pd, &cq, req_depth, 1, INLINE_WANTED)?;
            let resp = Qp::new(&pd, &cq, 1, 1, 0)?;
            max_inline = max_inline.min(req.max_inline as usize);
            qpn.insert(req.qpn, (p, false));
            qpn.insert(resp.qpn, (p, false));
            let (ctrl, recv) = if p == rank.index() {
                (None, None)
            } else {
                let q = Qp::new(&pd, &cq, ctrl_depth, ctrl_depth, INLINE_WANTED)?;
                max_inline = max_inline.min(q.max_inline as usize);
                qpn.insert(q.qpn, (p, true));
                let bounce = Scratch::new(&pd, ctrl_depth as usize, FRAG)?;
                let recv = Scratch::new(&pd, ctrl_depth as usize, FRAG)?;
                (Some(Sq::new(q, ctrl_depth as usize, bounce)), Some(recv))
            };
            let results = Scratch::new(&pd, req_depth as usize, 8)?;
            peers.push(Peer {
                rank: Rank(p as u32),
                req: Sq::new(req, req_depth as usize, results),
                resp,
                ctrl,
                recv,
                send_lock: Mutex::new(()),
                remote: Mutex::new(None),
                status: Mutex::new((Status::Up, None)),
                last_recv_ms: AtomicU64::new(0),
                last_send_ms: AtomicU64::new(0),
                heard: AtomicBool::new(false),
                assembly: Mutex::new(None),
            });
        }
        let flush = Scratch::new(&pd, 1, 64)?;
        // SAFETY: plain system call; the descriptor is owned right away.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(Error::io(
                "creating the progress thread's eventfd",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `wake` is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let path = Path {
            port: sel.port,
            gid_index: sel.gid_index,
            global: sel.global,
            max_rd_atomic: sel.caps.max_qp_init_rd_atom.clamp(1, 16),
            max_dest_rd_atomic: sel.caps.max_qp_rd_atom.clamp(1, 16),
            timeout: 14,
            retry_cnt: 7,
        };
        let max_transfer = (sel.port_info.max_msg as usize).clamp(1, 1 << 30);
        let mailbox = Arc::new(Mailbox::new(nodes, config.spin));
        if rank.0 == 0 {
            tracing::info!("verbs: using {}", sel.describe());
        }
        Ok(PreparedVerbs {
            shared: Shared {
                rank,
                nodes,
                config,
                sel,
                path,
                pd,
                cq,
                poll_lock: Mutex::new(()),
                regions: RwLock::new(Regions::default()),
                peers,
                qpn,
                mailbox,
                flush,
                next_wr: AtomicU64::new(1),
                quiet: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                wake,
                start: Instant::now(),
                max_inline: if max_inline == usize::MAX {
                    0
                } else {
                    max_inline
                },
                max_transfer,
            },
        })
    }

    /// Connects `n` nodes inside this process over the RDMA device: a whole job for tests.
    ///
    /// # Errors
    /// As [`VerbsTransport::prepare`] and [`PreparedVerbs::connect`].
    pub fn local_job(n: usize, config: &VerbsConfig) -> Result<Vec<VerbsTransport>> {
        let prepared = (0..n)
            .map(|r| VerbsTransport::prepare(Rank(r as u32), n, config.clone()))
            .collect::<Result<Vec<_>>>()?;
        let endpoints: Vec<Vec<u8>> = prepared.iter().map(PreparedVerbs::endpoint).collect();
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
                .map(|h| h.join().unwrap_or(Err(Error::Closed)))
                .collect()
        })
    }

    /// The device, port and GID in use, for reports.
    pub fn device(&self) -> String {
        self.shared.sel.describe()
    }
}

impl PreparedVerbs {
    /// The device, port and GID this node will use.
    pub fn device(&self) -> String {
        self.shared.sel.describe()
    }

    /// This node's endpoint for the bootstrap's table: its GID, LID and MTU, the key of its
    /// flush word, and for every peer the numbers and first packet sequence numbers of the queue
    /// pairs meant for it.
    pub fn endpoint(&self) -> Vec<u8> {
        let s = &self.shared;
        let mut b = Vec::with_capacity(FIXED + PER_PEER * s.nodes);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&(s.nodes as u32).to_le_bytes());
        b.extend_from_slice(&s.rank.0.to_le_bytes());
        b.extend_from_slice(&s.sel.port_info.lid.to_le_bytes());
        b.push(s.sel.port_info.active_mtu as u8);
        b.push(u8::from(s.sel.global));
        b.extend_from_slice(&s.sel.gid);
        b.extend_from_slice(&s.flush.mr.rkey.to_le_bytes());
        b.extend_from_slice(&s.flush.addr(0).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        for peer in &s.peers {
            b.extend_from_slice(&peer.ctrl.as_ref().map_or(0, |c| c.qp.qpn).to_le_bytes());
            b.extend_from_slice(&psn_for(s.rank.0, peer.rank.0, 0).to_le_bytes());
            b.extend_from_slice(&peer.req.qp.qpn.to_le_bytes());
            b.extend_from_slice(&psn_for(s.rank.0, peer.rank.0, 1).to_le_bytes());
            b.extend_from_slice(&peer.resp.qpn.to_le_bytes());
        }
        b
    }

    /// Connects every queue pair to its peer's (given every node's endpoint, indexed by rank),
    /// starts the progress thread and waits until every peer has answered over RDMA.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a malformed endpoint, [`Error::Io`] naming the verb that failed,
    /// [`Error::Timeout`] naming the ranks that did not answer within the connect timeout.
    pub fn connect(self, endpoints: &[Vec<u8>]) -> Result<VerbsTransport> {
        let s = self.shared;
        if endpoints.len() != s.nodes {
            return Err(Error::InvalidArgument(format!(
                "{} endpoints for a job of {} nodes",
                endpoints.len(),
                s.nodes
            )));
        }
        let me = s.rank.index();
        for (p, ep) in endpoints.iter().enumerate() {
            let e = parse_endpoint(ep, s.nodes, p, me)?;
            *s.peers[p].remote.lock().unwrap_or_else(|x| x.into_inner()) = Some(e);
        }
        for (p, peer) in s.peers.iter().enumerate() {
            let Some(e) = *peer.remote.lock().unwrap_or_else(|x| x.into_inner()) else {
                continue;
            };
            let remote = |qpn, psn| Remote {
                qpn,
                psn,
                gid: e.gid,
                lid: e.lid,
                mtu: e.mtu,
            };
            let mtu = s.sel.port_info.active_mtu;
            peer.resp
                .connect(&s.path, &remote(e.req_qpn, e.req_psn), random_psn(), mtu)?;
            peer.req.qp.connect(
                &s.path,
                &remote(e.resp_qpn, 0),
                psn_for(me as u32, p as u32, 1),
                mtu,
            )?;
            if let (Some(ctrl), Some(recv)) = (&peer.ctrl, &peer.recv) {
                ctrl.qp.connect(
                    &s.path,
                    &remote(e.ctrl_qpn, e.ctrl_psn),
                    psn_for(me as u32, p as u32, 0),
                    mtu,
                )?;
                for slot in 0..ctrl.depth {
                    let wr_id = RECV_BIT | ((p as u64) << 20) | slot as u64;
                    // SAFETY: the slot lies in the registered receive scratch, which lives as
                    // long as the queue pair.
                    unsafe {
                        ctrl.qp
                            .post_recv(wr_id, recv.addr(slot), FRAG as u32, recv.mr.lkey)
                    }
                    .map_err(|rc| {
                        Error::io(
                            format!("posting receive buffers for rank {p} (ibv_post_recv)"),
                            std::io::Error::from_raw_os_error(rc.max(1)),
                        )
                    })?;
                }
            }
        }
        let now = s.now_ms();
        for peer in &s.peers {
            peer.last_recv_ms.store(now, Ordering::Relaxed);
        }
        let connect_timeout = s.config.connect_timeout;
        let shared = Arc::new(s);
        let thread_shared = Arc::clone(&shared);
        let hook = shared.config.on_progress_start.clone();
        let progress = std::thread::Builder::new()
            .name(format!("dsm-verbs-{}", shared.rank))
            .spawn(move || {
                if let Some(h) = hook {
                    h.run();
                }
                progress(thread_shared)
            })
            .map_err(|e| Error::io("starting the progress thread", e))?;
        let t = VerbsTransport {
            driver: Arc::new(CqDriver(Arc::clone(&shared))),
            shared,
            progress: Mutex::new(Some(progress)),
            closed: AtomicBool::new(false),
        };
        // Say hello to everyone and wait until everyone has said hello: afterwards every
        // peer's queue pairs are ready for us.
        let sh = &t.shared;
        let deadline = Instant::now() + connect_timeout;
        for p in 0..sh.nodes {
            if p != me {
                sh.send_ctrl(p, K_HELLO, 0, 0, Tag(0), &[], true)?;
            }
        }
        loop {
            let missing: Vec<String> = (0..sh.nodes)
                .filter(|&p| p != me && !sh.peers[p].heard.load(Ordering::Acquire))
                .map(|p| p.to_string())
                .collect();
            if missing.is_empty() {
                break;
            }
            if let Some(e) = (0..sh.nodes).find_map(|p| sh.peer_error(p)) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "ranks {} did not answer over RDMA within {:?} (device {}; check that every node uses the same fabric, DSM_RDMA_GID_INDEX and DSM_RDMA_PORT)",
                    missing.join(", "),
                    connect_timeout,
                    sh.sel.describe()
                )));
            }
            sh.drive(false);
            std::thread::park_timeout(Duration::from_millis(1));
        }
        Ok(t)
    }
}

/// The first packet sequence number of the queue pair from `from` to `to` (`which`: 0 control,
/// 1 one-sided). Derived, not random, so that a reset can be checked; 24 bits.
fn psn_for(from: u32, to: u32, which: u32) -> u32 {
    (from.wrapping_mul(2_654_435_761) ^ to.wrapping_mul(40_503) ^ which.wrapping_mul(97))
        & 0x00ff_ffff
}

fn parse_endpoint(b: &[u8], nodes: usize, from: usize, me: usize) -> Result<PeerEndpoint> {
    let bad = |detail: &str| Error::Protocol {
        from: Rank(from as u32),
        detail: format!("verbs endpoint: {detail}"),
    };
    if b.len() != FIXED + PER_PEER * nodes || &b[..8] != MAGIC {
        return Err(bad(
            "wrong length or magic (is every node using the verbs transport?)",
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut a8 = [0u8; 8];
    a8.copy_from_slice(&b[40..48]);
    if u32_at(8) as usize != nodes || u32_at(12) as usize != from {
        return Err(bad("job size or rank differs"));
    }
    let mut gid = [0u8; 16];
    gid.copy_from_slice(&b[20..36]);
    let base = FIXED + PER_PEER * me;
    Ok(PeerEndpoint {
        lid: u16::from_le_bytes([b[16], b[17]]),
        mtu: u32::from(b[18]),
        gid,
        flush_rkey: u32_at(36),
        flush_addr: u64::from_le_bytes(a8),
        ctrl_qpn: u32_at(base),
        ctrl_psn: u32_at(base + 4),
        req_qpn: u32_at(base + 8),
        req_psn: u32_at(base + 12),
        resp_qpn: u32_at(base + 16),
    })
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

    /// Checks an operation and turns it into a work request, or the error it completes with.
    fn prepare_op(
        &self,
        op: Op,
        done: Option<Completer>,
    ) -> Result<std::result::Result<Item, (Error, Option<Completer>)>> {
        op.validate()?;
        let p = self.peer_index(op.peer())?;
        let name = op_name(&op);
        let (remote, local) = match &op {
            Op::Read { remote, local } | Op::Write { remote, local } => {
                (*remote, Some(local.clone()))
            }
            Op::CompareSwap { remote, .. } | Op::FetchAdd { remote, .. } => (*remote, None),
        };
        let lkey = match &local {
            Some(l) => Some(self.shared.lkey_of(l)?),
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
        let Ok(rkey) = u32::try_from(remote.region.key.0) else {
            return Ok(Err((
                Error::Remote {
                    peer,
                    fault: RemoteFault::BadKey,
                },
                done,
            )));
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
            return Ok(Err((
                Error::Remote {
                    peer,
                    fault: RemoteFault::OutOfBounds,
                },
                done,
            )));
        };
        let (kind, local) = match op {
            Op::Read { local, .. } => (
                WrKind::Read { raddr, rkey },
                Local::Slice(local, lkey.unwrap_or(0)),
            ),
            Op::Write { local, .. } => (
                WrKind::Write { raddr, rkey },
                Local::Slice(local, lkey.unwrap_or(0)),
            ),
            Op::CompareSwap {
                expected, desired, ..
            } => (
                WrKind::CompareSwap {
                    raddr,
                    rkey,
                    expected,
                    desired,
                },
                Local::Result,
            ),
            Op::FetchAdd { add, .. } => (WrKind::FetchAdd { raddr, rkey, add }, Local::Result),
        };
        Ok(Ok(Item {
            kind,
            local,
            name,
            done,
            signal: false,
            chained: false,
        }))
    }
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
            max_message: self.shared.config.max_message,
            max_transfer: self.shared.max_transfer,
            remote_reduce: false,
        }
    }

    fn register(&self, region: &Arc<Region>) -> Result<RegionDesc> {
        self.check_open()?;
        let mut regions = self
            .shared
            .regions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(r) = regions.by_id.get(&region.id()) {
            return Ok(RegionDesc {
                rank: self.shared.rank,
                key: crate::RemoteKey(u64::from(r.mr.rkey)),
                addr: region.as_ptr() as u64,
                len: region.len() as u64,
            });
        }
        // SAFETY: the region is kept alive by the table entry, which drops the registration
        // first.
        let mr = unsafe { Mr::register(&self.shared.pd, region.as_ptr(), region.len()) }?;
        let rkey = mr.rkey;
        regions.id_of_rkey.insert(rkey, region.id());
        regions.by_id.insert(
            region.id(),
            Registered {
                mr,
                _region: Arc::clone(region),
            },
        );
        Ok(RegionDesc {
            rank: self.shared.rank,
            key: crate::RemoteKey(u64::from(rkey)),
            addr: region.as_ptr() as u64,
            len: region.len() as u64,
        })
    }

    fn deregister(&self, desc: &RegionDesc) -> Result<()> {
        let mut regions = self
            .shared
            .regions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let id = u32::try_from(desc.key.0)
            .ok()
            .and_then(|k| regions.id_of_rkey.remove(&k));
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
            Ok(item) => {
                let sq = &self.shared.peers[p].req;
                self.shared.post_items(p, sq, vec![item], true)?;
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
                Ok(mut item) => {
                    item.chained = true;
                    chain.push(item);
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
                Ok(Ok(item)) => batch.push(item),
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
        let total = data.len() as u32;
        let mut chunks = data.chunks(FRAG - HEADER);
        let first = chunks.next().unwrap_or(&[]);
        self.shared
            .send_ctrl(p, K_MSG, F_FIRST, total, tag, first, true)?;
        for c in chunks {
            self.shared.send_ctrl(p, K_MSG, 0, total, tag, c, true)?;
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
                if let Err(e) = sh.send_ctrl(p, K_GOODBYE, 0, 0, Tag(0), &[], true) {
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
