//! [`Dsm`]: the shared memory of a job. It executes the coherence protocol of
//! [`crate::coherence`] against the transport: page faults fetch pages and register this node in
//! directories, releases write diffs home, acquires invalidate what others wrote.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use transport::Transport;

use crate::coherence::placement::Placement;
use crate::collective;
use crate::config::DsmConfig;
use crate::error::{Error, Result};
use crate::fault::{self, FaultEngine, FaultEngineKind};
use crate::node::Node;
use crate::space::{self, Access, PAGE};
use lock_word::LockWord;

use crate::runtime::Inner;

mod checkpointing;
mod held;
mod lock_word;
mod objects;

pub use objects::{GlobalCondvar, GlobalSemaphore};

/// The shared memory of a job: one global address space, the same on every node.
///
/// Obtain it with [`Dsm::init`]; it owns the [`Node`] (transport, watchdog) and the fault
/// engine. Every call documented as *collective* must be made by every node, in the same order.
#[derive(Debug)]
pub struct Dsm {
    inner: Arc<Inner>,
    engine: Option<FaultEngine>,
    node: Option<Node>,
    held: held::HeldLocks,
    /// Checkpoint settings and what the next checkpoint builds on.
    checkpoint: checkpointing::Checkpoints,
}

/// The longest pause, in spin-loop hints, between two polls of a lock's `serving` word.
const MAX_LOCK_BACKOFF: u32 = 1 << 10;

/// A lock in global memory: a ticket lock (fair: first come, first served), 16 bytes, that may
/// live anywhere in global memory and be initialised by any node.
#[repr(C, align(16))]
#[derive(Debug, Default)]
pub struct GlobalLock {
    next: u64,
    serving: u64,
}

/// Posts the atomics `looks` (the last a look at `serving`) and, when carrying the lock's
/// `page` pays, a read of it after them in the same round trip (row K1). Returns the looks'
/// values and the carried page.
fn look_carrying(
    inner: &Inner,
    looks: Vec<transport::Op>,
    page: usize,
) -> Result<(Vec<u64>, Option<crate::runtime::Carry<'_>>)> {
    let n = looks.len();
    let mut ops = looks;
    let carry = inner.carry(page).map(|(c, read)| {
        ops.push(read);
        c
    });
    let done = inner.post_batch(ops)?;
    // Every completion is waited for, the read's too: its buffer is reused once `carry` goes.
    let mut values = Vec::with_capacity(n);
    let mut failed = None;
    for c in &done {
        match c.wait() {
            Ok(v) => values.push(v),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => {
            values.truncate(n);
            Ok((values, carry))
        }
    }
}

impl Dsm {
    /// Joins the job described by the environment and maps the global address space.
    ///
    /// # Collective
    /// Every node must call it.
    ///
    /// # Errors
    /// Configuration, bootstrap, transport and mapping errors.
    pub fn init() -> Result<Dsm> {
        let node = Node::init()?;
        Dsm::with_node(node, DsmConfig::from_env()?)
    }

    /// Builds the shared memory on a joined node.
    ///
    /// # Collective
    /// Every node must call it with the same configuration.
    ///
    /// # Errors
    /// [`Error::Config`] for more than 4,096 nodes or a bad size; mapping and transport errors.
    pub fn with_node(node: Node, config: DsmConfig) -> Result<Dsm> {
        let nodes = node.nodes();
        let most = crate::coherence::NodeSet::CAPACITY;
        if nodes > most {
            return Err(Error::Config(format!(
                "the shared memory supports up to {most} nodes, not {nodes}"
            )));
        }
        let t = node.transport_arc();
        let settings = config.checkpoint.clone();
        // A restart decides its epoch and reads its images first: global memory goes back
        // where it was.
        let restore = if settings.restart {
            crate::checkpoint::restart::prepare(&*t, &settings, config.global_size)?
        } else {
            None
        };
        let mut space = match &restore {
            Some(r) => space::negotiate_at(&*t, config.global_size, r.global_base)?,
            None => space::negotiate(&*t, config.global_size)?,
        };
        if nodes > 1 {
            fault::prepare(&mut space, config.fault_engine, config.fault_mode)?;
        }
        let inner = Inner::build(t, space, &config)?;
        if let Some(r) = &restore {
            inner.restore(&r.images)?;
        }
        let checkpoint = checkpointing::Checkpoints::new(settings, restore.as_ref());
        let engine = if nodes == 1 {
            // Alone, the node is home of every page (its home memory is these very pages, see
            // `Inner::build`): the whole range is opened once and nothing ever faults.
            let pages = inner.space.pages();
            inner
                .space
                .set_access(0, pages, Access::None, Access::ReadWrite)?;
            None
        } else {
            Some(FaultEngine::start(Arc::clone(&inner), config.fault_mode)?)
        };
        collective::barrier(&*inner.t, None)?;
        Ok(Dsm {
            inner,
            engine,
            node: Some(node),
            held: held::HeldLocks::default(),
            checkpoint,
        })
    }

    /// This node's rank.
    pub fn rank(&self) -> usize {
        self.inner.me
    }

    /// The number of nodes.
    pub fn nodes(&self) -> usize {
        self.inner.nodes
    }

    /// The node (transport, configuration).
    pub fn node(&self) -> &Node {
        self.node
            .as_ref()
            .expect("the node lives as long as the Dsm")
    }

    /// The base address of the global range (the same on every node) and its size.
    pub fn global_range(&self) -> (usize, usize) {
        (self.inner.space.base(), self.inner.space.size())
    }

    /// The fault engine that runs on this node (`auto` resolved to what it chose), or
    /// [`FaultEngineKind::Auto`] when none runs (a job of one node never faults).
    pub fn fault_engine(&self) -> FaultEngineKind {
        self.engine
            .as_ref()
            .map_or(FaultEngineKind::Auto, FaultEngine::kind)
    }

    /// Whether `addr` points into global memory.
    pub fn is_global(&self, addr: usize) -> bool {
        self.inner.space.contains(addr)
    }

    /// Allocates `bytes` of global memory, page-aligned and zeroed on first use, with the given
    /// placement; every node gets the same pointer.
    ///
    /// # Collective
    /// Every node must call it, in the same order, with the same arguments.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the collective heap has no room (nothing is changed);
    /// [`Error::NoSuchNode`] for [`Placement::Node`] with a node outside the job (nothing is
    /// changed);
    /// [`Error::CollectiveMismatch`] on every node when the nodes passed different arguments
    /// or are in different collective calls (nothing is changed).
    pub fn alloc_collective(&self, bytes: usize, placement: Placement) -> Result<*mut u8> {
        let (kind, argument) = match placement {
            Placement::Blocked => (0, 0),
            Placement::FirstTouch => (1, 0),
            Placement::Cyclic { block_pages } => (2, block_pages as u64),
            Placement::Node(node) => (3, u64::from(node.0)),
        };
        let args = [
            ("bytes", bytes as u64),
            (
                "placement (0 blocked, 1 first-touch, 2 cyclic, 3 on a node)",
                kind,
            ),
            (
                "the placement's argument (cyclic: block pages; on a node: the node)",
                argument,
            ),
        ];
        // A node outside the job fails here like a lack of memory: on every node that asked
        // for it, after the checked barrier (so a node that asked for another one is not left
        // waiting), with nothing allocated.
        // After a restart, the checkpointed allocations come back first, in their order.
        let replayed = self.inner.next_replay();
        let start = match (placement, replayed) {
            (Placement::Node(node), _) if node.index() >= self.inner.nodes => {
                Err(Error::NoSuchNode {
                    node,
                    nodes: self.inner.nodes,
                })
            }
            (_, Some(a)) => checkpointing::replay(a, bytes, kind, argument),
            (_, None) => self.inner.alloc_collective_local(bytes, placement),
        };
        // The check covers failures too: a node out of memory where the others are not must
        // not leave the others' heaps with one allocation more.
        let ok = (
            "allocation succeeded here (1) or failed (0)",
            start.is_ok() as u64,
        );
        let agreed = collective::checked_barrier(
            &*self.inner.t,
            "alloc_collective",
            &[args[0], args[1], args[2], ok],
            None,
        );
        match (start, agreed) {
            (Ok(start), Ok(())) => {
                if replayed.is_none() {
                    self.inner
                        .record_allocation(crate::checkpoint::image::Allocation {
                            start: start as u64,
                            pages: bytes.div_ceil(PAGE).max(1) as u64,
                            bytes: bytes as u64,
                            kind,
                            argument,
                        });
                }
                Ok((self.inner.space.base() + start * PAGE) as *mut u8)
            }
            (Ok(start), Err(mismatch)) => {
                // Nothing was handed out: give the run back, so that every heap stays the same.
                match replayed {
                    Some(a) => self.inner.unreplay(a),
                    None => self.inner.undo_collective_local(start, bytes),
                }
                Err(mismatch)
            }
            (Err(local), agreed) => {
                if let Some(a) = replayed {
                    self.inner.unreplay(a);
                }
                Err(agreed.err().unwrap_or(local))
            }
        }
    }

    /// Frees a collective allocation.
    ///
    /// # Collective
    /// Every node must call it, in the same order, with the same pointer.
    ///
    /// # Errors
    /// [`Error::InvalidPointer`] for a pointer that is not a live collective allocation;
    /// [`Error::CollectiveMismatch`] on every node when the nodes passed different pointers or
    /// are in different collective calls (a free on some nodes only): nothing is freed;
    /// transport errors of the release of this node's changes, reported after the call's
    /// barriers (the allocation is freed all the same, so no other node waits for this one).
    pub fn free_collective(&self, ptr: *mut u8) -> Result<()> {
        let addr = ptr as usize;
        let bad = Error::InvalidPointer(addr);
        if !self.inner.space.contains(addr)
            || !(addr - self.inner.space.base()).is_multiple_of(PAGE)
        {
            return Err(bad);
        }
        let start = self.inner.space.page_of(addr);
        if start >= self.inner.collective_pages {
            return Err(bad);
        }
        // Everything written before the free is home, and nobody uses the pages any more. A
        // local failure is reported after both barriers, so that no other node is left
        // waiting in one, and the pages are freed all the same (every node's collective heap
        // must stay the same).
        let released = self.inner.release();
        let offset = (
            "pointer (offset in global memory)",
            (addr - self.inner.space.base()) as u64,
        );
        collective::checked_barrier(&*self.inner.t, "free_collective", &[offset], None)?;
        let freed = self.inner.free_collective_local(start, bad);
        if freed.is_ok() {
            self.inner.forget_allocation(start);
        }
        collective::barrier(&*self.inner.t, None)?;
        released.and(freed)
    }

    /// Allocates `bytes` of global memory from this node's arena (home: this node); the pointer
    /// is valid on every node. Thread-safe; not collective.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena is full (nothing is changed).
    pub fn malloc(&self, bytes: usize) -> Result<*mut u8> {
        let off = self.inner.malloc_local(bytes)?;
        Ok((self.inner.space.base() + off) as *mut u8)
    }

    /// Frees memory from [`Dsm::malloc`], whichever node allocated it. Thread-safe; not
    /// collective. A block of another node is pushed on that node's stack of remote frees (a
    /// release, a remote write of the link, then a compare-and-swap of the head at its home); the
    /// owner takes the whole stack on its next `malloc`.
    ///
    /// # Errors
    /// [`Error::InvalidPointer`] for a pointer outside every arena, or (for this node's own
    /// blocks) not a live allocation. A bad pointer freed to another node is reported by that
    /// node when it takes its remote frees, and ignored.
    pub fn free(&self, ptr: *mut u8) -> Result<()> {
        self.inner.free_block(ptr as usize)
    }

    /// Makes this node's writes visible to any node that acquires afterwards.
    ///
    /// # Errors
    /// Transport errors.
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }

    /// Makes writes released by other nodes visible here.
    ///
    /// # Errors
    /// Transport errors.
    pub fn acquire(&self) -> Result<()> {
        self.inner.acquire()
    }

    /// Release, wait for every node, acquire.
    ///
    /// # Collective
    /// Every node must call it.
    ///
    /// # Errors
    /// Transport errors, or a lost peer.
    pub fn barrier(&self) -> Result<()> {
        let start = Instant::now();
        self.inner.release()?;
        let wait = Instant::now();
        collective::barrier(&*self.inner.t, None)?;
        let waited = wait.elapsed();
        self.inner.acquire()?;
        let s = &self.inner.stats;
        s.barriers.fetch_add(1, Ordering::Relaxed);
        s.barrier_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.inner.profile_barrier(waited);
        Ok(())
    }

    fn lock_words(
        &self,
        l: *const GlobalLock,
    ) -> Result<(transport::RemoteSlice, transport::RemoteSlice)> {
        let addr = l as usize;
        if !addr.is_multiple_of(16) {
            return Err(Error::Misaligned(addr));
        }
        Ok((
            self.inner.atomic_word(addr)?,
            self.inner.atomic_word(addr + 8)?,
        ))
    }

    /// Initialises a lock in global memory (unlocked). Any node may do it, once, before use.
    ///
    /// # Errors
    /// [`Error::Misaligned`] for a lock not in global memory or not 16-byte aligned.
    pub fn lock_init(&self, l: *const GlobalLock) -> Result<()> {
        let (next, serving) = self.lock_words(l)?;
        self.held.forget(l as usize);
        for w in [next, serving] {
            let mut cur = self.inner.t.fetch_add(w, 0)?;
            while cur != 0 {
                cur = self.inner.t.compare_swap(w, cur, 0)?;
            }
        }
        Ok(())
    }

    /// Takes the lock (first come, first served), then acquires. The lock is held by this
    /// node: any of its threads may unlock it; other threads of this node wait for it as other
    /// nodes do.
    ///
    /// # Errors
    /// [`Error::LockHeldByCaller`] when the calling thread holds it already (nothing changes);
    /// [`Error::Misaligned`] for a lock not in global memory or not 16-byte aligned; transport
    /// errors.
    pub fn lock(&self, l: *const GlobalLock) -> Result<()> {
        let start = Instant::now();
        let (next, serving) = self.lock_words(l)?;
        self.held.check_not_mine(l as usize)?;
        let inner = &*self.inner;
        let page = serving.offset as usize / crate::space::PAGE;
        let (next, serving) = (LockWord::of(inner, next), LockWord::of(inner, serving));
        // The lock's page, read in the round trip that grants the lock (row K1), if it was.
        let mut carried = None;
        let (ticket, mut now) = match (next, serving) {
            // The ticket and a first look at `serving` in one round trip (one message where
            // the backend can): a free lock is taken at once. Were the look served before the
            // ticket, it would only see `serving` lower (it never passes a ticket not yet
            // served).
            (LockWord::Far(n), LockWord::Far(s)) => {
                let ops = vec![
                    transport::Op::FetchAdd { remote: n, add: 1 },
                    transport::Op::FetchAdd { remote: s, add: 0 },
                ];
                let (values, carry) = look_carrying(inner, ops, page)?;
                let (ticket, now) = (values[0], values[1]);
                carried = carry.filter(|_| now == ticket);
                (ticket, now)
            }
            // Homed here (both words: a 16-byte aligned lock lies in one page): the ticket,
            // then a look at `serving`, as this node's own atomics.
            _ => (next.fetch_add(inner, 1)?, serving.load(inner)?),
        };
        if let (LockWord::Own(word), true) = (serving, now != ticket) {
            // Homed here, the lock is passed on by its holder's atomic on this node's memory:
            // over tcp a request that this node's processors must serve. The waiting thread
            // serves it (and whatever else comes): left to the progress thread, which must
            // first get a processor from this very thread, a hand-off took 100-150 us, not 8.
            inner
                .t
                .serve_until(&mut || word.load(Ordering::SeqCst) == ticket);
            now = ticket;
        }
        let mut backoff = 1u32;
        loop {
            if now == ticket {
                break;
            }
            if ticket.wrapping_sub(now) > 1 || backoff == MAX_LOCK_BACKOFF {
                // Others are served first (or the holder is slow): give the processor to
                // whoever runs the critical section instead of polling its home at full speed,
                // which matters when nodes share cores.
                std::thread::yield_now();
            } else {
                for _ in 0..backoff {
                    std::hint::spin_loop();
                }
            }
            backoff = (backoff * 2).min(MAX_LOCK_BACKOFF);
            now = match serving {
                // Next in line: this look may grant the lock, so the page comes with it.
                LockWord::Far(s) if ticket.wrapping_sub(now) == 1 => {
                    let look = vec![transport::Op::FetchAdd { remote: s, add: 0 }];
                    let (values, carry) = look_carrying(inner, look, page)?;
                    carried = carry.filter(|_| values[0] == ticket);
                    values[0]
                }
                _ => serving.load(inner)?,
            };
        }
        self.held.taken(l as usize);
        if let Some(p) = self.inner.profile.on() {
            p.lock_wait(crate::profile::ns(start.elapsed()));
        }
        self.inner.acquire_carrying(carried)?;
        let s = &self.inner.stats;
        s.lock_acquires.fetch_add(1, Ordering::Relaxed);
        s.lock_wait_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the lock if it is free; returns whether it did (`false` also when this node
    /// holds it already).
    ///
    /// # Errors
    /// [`Error::Misaligned`]; transport errors.
    pub fn try_lock(&self, l: *const GlobalLock) -> Result<bool> {
        let (next, serving) = self.lock_words(l)?;
        let inner = &*self.inner;
        let (next, serving) = (LockWord::of(inner, next), LockWord::of(inner, serving));
        let now = serving.load(inner)?;
        if next.compare_swap(inner, now, now + 1)? != now {
            return Ok(false);
        }
        self.held.taken(l as usize);
        self.inner.acquire()?;
        self.inner
            .stats
            .lock_acquires
            .fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Releases, then passes the lock on.
    ///
    /// # Errors
    /// [`Error::LockNotHeld`] when this node does not hold the lock (a second unlock, an unlock
    /// of a free lock or of another node's): nothing changes, the lock stays as it was;
    /// [`Error::Misaligned`]; transport errors.
    pub fn unlock(&self, l: *const GlobalLock) -> Result<()> {
        let (_, serving) = self.lock_words(l)?;
        self.held.give_up(l as usize)?;
        // Whoever takes the lock next sees `serving` change at its home after the diffs this
        // release posted there (`release_toward`).
        self.inner.release_toward(Some(serving.rank().index()))?;
        LockWord::of(&self.inner, serving).post_add(&self.inner, 1)
    }

    /// Atomically adds `v` to the 8-byte global word at `p` (at its home); returns the old value.
    ///
    /// # Errors
    /// [`Error::Misaligned`] for a word outside global memory or not 8-byte aligned.
    pub fn atomic_fetch_add(&self, p: *const u64, v: u64) -> Result<u64> {
        Ok(self
            .inner
            .t
            .fetch_add(self.inner.atomic_word(p as usize)?, v)?)
    }

    /// Atomically loads the 8-byte global word at `p`.
    ///
    /// # Errors
    /// As [`Dsm::atomic_fetch_add`].
    pub fn atomic_load(&self, p: *const u64) -> Result<u64> {
        self.atomic_fetch_add(p, 0)
    }

    /// If the word at `p` equals `expected`, replaces it with `desired`; returns the old value.
    ///
    /// # Errors
    /// As [`Dsm::atomic_fetch_add`].
    pub fn atomic_compare_exchange(
        &self,
        p: *const u64,
        expected: u64,
        desired: u64,
    ) -> Result<u64> {
        Ok(self
            .inner
            .t
            .compare_swap(self.inner.atomic_word(p as usize)?, expected, desired)?)
    }

    /// Atomically replaces the word at `p` with `v`; returns the old value.
    ///
    /// # Errors
    /// As [`Dsm::atomic_fetch_add`].
    pub fn atomic_exchange(&self, p: *const u64, v: u64) -> Result<u64> {
        let w = self.inner.atomic_word(p as usize)?;
        let mut cur = self.inner.t.fetch_add(w, 0)?;
        loop {
            let seen = self.inner.t.compare_swap(w, cur, v)?;
            if seen == cur {
                return Ok(cur);
            }
            cur = seen;
        }
    }

    /// Atomically stores `v` in the word at `p`.
    ///
    /// # Errors
    /// As [`Dsm::atomic_fetch_add`].
    pub fn atomic_store(&self, p: *const u64, v: u64) -> Result<()> {
        self.atomic_exchange(p, v).map(drop)
    }

    /// The node that holds the authoritative copy of the page at `ptr` (choosing it, for a
    /// first-touch page nobody has touched yet, as this node).
    ///
    /// # Errors
    /// [`Error::Unallocated`] for memory that no allocation covers.
    pub fn home_of(&self, ptr: *const u8) -> Result<usize> {
        let addr = ptr as usize;
        if !self.inner.space.contains(addr) {
            return Err(Error::InvalidPointer(addr));
        }
        Ok(self.inner.home_of(self.inner.space.page_of(addr))?.0)
    }

    /// Where the bytes `[ptr, ptr + len)` live at their home: the home's registered copy, as
    /// the remote side of one-sided transport operations. A write there is what a release does;
    /// it bypasses every node's cached copy (see [`Dsm::sync_range`]). Used by layers that map
    /// their own one-sided model onto global memory (the RMA windows of `mpi-compat`).
    ///
    /// # Errors
    /// [`Error::InvalidPointer`] for a range outside global memory or over pages with more than
    /// one home; [`Error::Unallocated`] for memory no allocation covers.
    pub fn home_slice(&self, ptr: *const u8, len: usize) -> Result<transport::RemoteSlice> {
        let addr = ptr as usize;
        let space = &self.inner.space;
        let end = addr.checked_add(len).ok_or(Error::InvalidPointer(addr))?;
        if !space.contains(addr) || (len > 0 && !space.contains(end - 1)) {
            return Err(Error::InvalidPointer(addr));
        }
        let first = space.page_of(addr);
        let last = if len == 0 {
            first
        } else {
            space.page_of(end - 1)
        };
        let (home, _) = self.inner.home_of(first)?;
        for p in first + 1..=last {
            if self.inner.home_of(p)?.0 != home {
                return Err(Error::InvalidPointer(addr));
            }
        }
        Ok(self.inner.homes[home].slice((addr - space.base()) as u64, len)?)
    }

    /// A pointer to this node's own home copy of `[ptr, ptr + len)`: the memory that remote
    /// writes through [`Dsm::home_slice`] change. It is the runtime view of those pages, the
    /// very bytes the application's view of them maps here (a node's home memory is its own
    /// copy). Loads and stores through it bypass the coherence protocol (no fault).
    ///
    /// # Errors
    /// [`Error::InvalidPointer`] when some page of the range is not homed at this node.
    pub fn home_copy(&self, ptr: *const u8, len: usize) -> Result<*mut u8> {
        let slice = self.home_slice(ptr, len)?;
        if slice.rank().index() != self.inner.me {
            return Err(Error::InvalidPointer(ptr as usize));
        }
        let offset = ptr as usize - self.inner.space.base();
        self.inner.runtime.check(offset, len)?;
        // In bounds of the runtime view (checked just above), which lives as long as `self`.
        Ok(self.inner.runtime.as_ptr().wrapping_add(offset))
    }

    /// Writes this node's changes to the pages of `[ptr, ptr + len)` home and drops its cached
    /// copies of them, so that the next access fetches what their homes hold now (including
    /// one-sided writes made through [`Dsm::home_slice`]). The pages homed at this node need
    /// nothing: this node's copy of them is the home's, where such writes land.
    ///
    /// # Errors
    /// [`Error::InvalidPointer`] for a range outside global memory; transport errors.
    pub fn sync_range(&self, ptr: *const u8, len: usize) -> Result<()> {
        let addr = ptr as usize;
        let space = &self.inner.space;
        if len == 0 {
            return Ok(());
        }
        let end = addr.checked_add(len).ok_or(Error::InvalidPointer(addr))?;
        if !space.contains(addr) || !space.contains(end - 1) {
            return Err(Error::InvalidPointer(addr));
        }
        let pages: Vec<usize> = (space.page_of(addr)..=space.page_of(end - 1)).collect();
        self.inner.close_and_write_back(
            pages,
            crate::coherence::machine::Input::Invalidate(crate::coherence::machine::Why::Evict),
        )?;
        Ok(())
    }

    /// This node's statistics.
    pub fn stats(&self) -> crate::stats::Snapshot {
        self.inner.stats.snapshot()
    }

    /// Zeroes this node's statistics.
    pub fn reset_stats(&self) {
        self.inner.stats.reset();
    }

    /// Leaves the job in order: a final barrier (which writes everything home), then the fault
    /// engine and the transport stop.
    ///
    /// # Collective
    /// Every node must call it.
    ///
    /// # Errors
    /// When the final barrier fails; everything is shut down anyway.
    pub fn finalize(mut self) -> Result<()> {
        let r = self.barrier().and_then(|()| self.inner.profile_finish());
        if std::env::var("DSM_STATS").is_ok_and(|v| v != "0") {
            eprintln!("{}", self.inner.stats.snapshot().report(self.inner.me));
        }
        self.shutdown();
        let node = self.node.take();
        match node {
            Some(n) => r.and(n.finalize()),
            None => r,
        }
    }

    fn shutdown(&mut self) {
        if let Some(e) = self.engine.take() {
            e.stop();
        }
    }
}

impl Drop for Dsm {
    fn drop(&mut self) {
        self.shutdown();
        // No transport access to the runtime view may outlive the mapping (see `Inner::build`).
        let _ = self.inner.t.close();
    }
}
