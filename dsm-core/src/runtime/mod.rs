//! The runtime behind [`crate::Dsm`]: it executes the coherence protocol of
//! [`crate::coherence`] against the transport: page faults fetch pages and register this node in
//! directories, releases write diffs home, acquires invalidate what others wrote.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use transport::{
    wait_all, AnyTransport, Completion, LocalSlice, Op, Region, RegionDesc, Transport,
};

use crate::alloc::RangeAllocator;
use crate::coherence::diff::diff;
use crate::coherence::dir::{DirEntry, Field, ENTRY_BYTES};
use crate::coherence::machine::Machine;
use crate::coherence::page::{Cache, PageGuard, PageTable, State, PREFETCHED, REG_READER};
use crate::coherence::placement::{self, Placement};
use crate::coherence::prefetch;
use crate::coherence::stream;
use crate::coherence::PageNo;
use crate::collective;
use crate::config::DsmConfig;
use crate::error::{Error, Result};
use crate::space::{Access, GlobalSpace, PAGE};
use crate::sparse::SparseTable;
use crate::stats::Stats;
use crate::Rank;

/// The storage of the page table: sparse in the runtime (memory only for the pages a node
/// uses), a `Vec` of loom's atomics in the loom models.
#[cfg(not(loom))]
type PageWords = SparseTable<crate::sync::AtomicU64>;
#[cfg(loom)]
type PageWords = Vec<crate::sync::AtomicU64>;

#[cfg(not(loom))]
fn page_words(pages: usize) -> Result<PageWords> {
    SparseTable::new(pages)
}

#[cfg(loom)]
fn page_words(pages: usize) -> Result<PageWords> {
    Ok((0..pages).map(|_| crate::sync::AtomicU64::new(0)).collect())
}

mod arena;
mod buffers;
mod carry;
mod consistency;
mod engine;
mod heap;
mod notices;
mod profiling;
mod resolve;
mod runs;
#[cfg(test)]
mod sim;
mod snapshot;

use arena::Arena;
pub(crate) use arena::MALLOC_GRANULE;
use buffers::{Batch, Scratch, BATCH_SLOTS};
pub(crate) use carry::Carry;
use consistency::CacheQueue;
use runs::Inflight;

/// Bytes of directory entry per page at its manager ([`crate::coherence::dir`]).
pub(crate) const DIR_ENTRY: usize = ENTRY_BYTES;
/// Entries in a node's notification log.
const LOG_CAP: usize = 1 << 16;

/// How far this node has read its notification log: every ticket below `consumed` was taken,
/// except the `holes` (reserved by a writer whose release has not filled them yet), ascending.
#[derive(Debug, Default)]
struct LogCursor {
    consumed: u64,
    holes: Vec<u64>,
}
/// Size of the scratch area used as the local side of small remote operations.
const SCRATCH_SLOTS: usize = 4096;
/// The home/manager table entry of a page: bits 0–15 home + 1 (0: not known yet), bits 16–31
/// manager + 1 (0: the page is not allocated). Room for 65,535 nodes.
fn map_entry(home: Option<usize>, manager: usize) -> u32 {
    (home.map_or(0, |h| h as u32 + 1)) | ((manager as u32 + 1) << 16)
}

/// The home an entry of [`map_entry`] names, if known.
fn entry_home(e: u32) -> Option<usize> {
    (e & 0xffff).checked_sub(1).map(|h| h as usize)
}

/// The manager an entry of [`map_entry`] names; `None`: the page is not allocated.
fn entry_manager(e: u32) -> Option<usize> {
    (e >> 16).checked_sub(1).map(|m| m as usize)
}

/// The shared state of the runtime, reachable from the fault service threads.
///
/// # Lock order
///
/// A thread that holds one of these locks takes only locks further down the list, so no two
/// threads ever wait for each other:
///
/// 0. `release_gate`, `acquire_gate` (each held across a whole release or acquire, never both:
///    see [`Inner::release`], [`Inner::acquire`]);
/// 1. `log_consumed` (held while the notification log is drained);
/// 2. the page locks of [`PageTable`]: a blocking `lock` of one page at a time, or of several in
///    ascending page order (`close_pages`); `try_lock` of any page at any time (it never
///    waits), as `post_run` does under `inflight`;
/// 3. `inflight` (taken alone by `finish_prefetches`; held by `post_run` while it try-locks
///    the run's pages and posts);
/// 4. `prefetch`, `sharers`, `free_batches` (a batch buffer is returned under `inflight`);
/// 5. leaves, never held while another is taken: `twins`, `dirty` (taken after `sharers` by
///    `reset_pages`), `cached`, `free_scratch`, `free_carries`, `collective_heap`, `allocations`, `replay`,
///    `arena`, `known_live`, `home_stream`, `unconfirmed`.
///
/// No lock is held across a wait for a remote operation except the gates, a page lock (the
/// page being resolved or written back) and `log_consumed`.
pub(crate) struct Inner {
    pub(crate) t: Arc<AnyTransport>,
    pub(crate) me: usize,
    /// The protocol ([`crate::coherence::machine`]) this runtime executes.
    machine: Machine,
    pub(crate) nodes: usize,
    /// The transport's atomics on this node's memory are the CPU's own
    /// ([`transport::Capabilities::atomics_coherent_with_cpu`]).
    pub(crate) cpu_atomics: bool,
    /// The transport executes a peer's operations in order, atomics after writes
    /// ([`transport::Capabilities::ordered_atomics`]).
    ordered_atomics: bool,
    /// Diffs posted by a release toward a lock's home and not yet waited for
    /// ([`Inner::release_toward`]).
    unconfirmed: Mutex<Vec<Completion>>,
    pub(crate) space: GlobalSpace,
    pub(crate) runtime: Arc<Region>,
    log: Arc<Region>,
    scratch: Arc<Region>,
    free_scratch: Mutex<Vec<usize>>,
    /// The free carry buffers (`carry`).
    free_carries: Mutex<Vec<usize>>,
    free_batches: Mutex<Vec<usize>>,
    /// Copies of remote pages, oldest first (may hold pages already invalidated).
    cached: Mutex<CacheQueue>,
    /// How many pages `cached` may hold.
    cache_pages: usize,
    pub(crate) homes: Vec<RegionDesc>,
    dirs: Vec<RegionDesc>,
    logs: Vec<RegionDesc>,
    pages: PageTable<PageWords>,
    map: SparseTable<AtomicU32>,
    twins: Mutex<HashMap<usize, Box<[u8]>>>,
    dirty: Mutex<Vec<usize>>,
    /// Serializes the releases of this node's threads ([`Inner::release`]).
    release_gate: Mutex<()>,
    /// Serializes the acquires of this node's threads ([`Inner::acquire`]).
    acquire_gate: Mutex<()>,
    sharers: Mutex<HashSet<usize>>,
    /// Write notices waiting for the next release ([`notices`]).
    notices: notices::Notices,
    log_consumed: Mutex<LogCursor>,
    collective_heap: Mutex<RangeAllocator>,
    /// The live collective allocations, in the order they were made (for checkpoints).
    allocations: Mutex<Vec<crate::checkpoint::image::Allocation>>,
    /// After a restart, the checkpointed allocations the program has not asked for again.
    replay: Mutex<std::collections::VecDeque<crate::checkpoint::image::Allocation>>,
    arena: Mutex<Arena>,
    /// Pages of other nodes' arenas seen holding a live block (their owners' bitmaps said so):
    /// atomics and locks there need not ask again. Never forgotten: a page whose blocks were
    /// all freed since is not refused (the check is for memory never allocated).
    known_live: Mutex<HashSet<usize>>,
    pub(crate) collective_pages: usize,
    /// Pages of each node's arena.
    arena_pages: usize,
    /// The page a sequential read would fault on next.
    next_expected: std::sync::atomic::AtomicUsize,
    /// How much to prefetch (see [`prefetch`]): the window, and its cap that pages used raise
    /// and pages wasted lower.
    prefetch: Mutex<prefetch::Policy>,
    /// The stream of first writes to pages homed here (see [`stream`]: row H4).
    home_stream: Mutex<stream::Stream>,
    /// Prefetches whose data is still on its way (their pages stay locked until installed).
    inflight: Mutex<Vec<Inflight>>,
    pub(crate) stats: Stats,
    /// How many acquires have begun on this node: a fault whose fetch overlapped one checks
    /// that its copy is not older than what that acquire must see ([`Inner::resolve`]).
    acquires: AtomicU64,
    /// The profile (`DSM_PROFILE`), off unless asked for.
    pub(crate) profile: crate::profile::Profile,
    // Keep the registered directory alive for as long as peers may address it.
    _dir: Arc<Region>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("me", &self.me)
            .field("nodes", &self.nodes)
            .field("space", &self.space)
            .finish()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error of a failed registration of the global range (the runtime view, which is also this
/// node's home memory). Under RDMA a large range is registered chunk by chunk as it is used
/// (nothing is pinned here), unless `DSM_RDMA_REG_CHUNK=0` registers it whole, which pins all
/// of it: then the fix is a smaller `DSM_GLOBAL_SIZE` or a larger locked-memory limit.
fn registering(t: &AnyTransport, space: &GlobalSpace, err: transport::Error) -> Error {
    if !t.capabilities().native_one_sided {
        return err.into();
    }
    Error::Config(format!(
        "cannot register the global memory ({} MiB, DSM_GLOBAL_SIZE) with the RDMA device \
         (a range registered whole, as DSM_RDMA_REG_CHUNK=0 asks, is pinned whole: set a \
         smaller DSM_GLOBAL_SIZE, register it chunk by chunk, or raise the locked-memory \
         limit): {err}",
        space.size() >> 20
    ))
}

impl Inner {
    /// Registers this node's regions, exchanges their descriptors with every node, and builds
    /// the runtime state over an already mapped global range.
    ///
    /// # Collective
    /// Every node must call it.
    pub(crate) fn build(
        t: Arc<AnyTransport>,
        space: GlobalSpace,
        config: &DsmConfig,
    ) -> Result<Arc<Inner>> {
        let nodes = t.nodes();
        let me = t.rank().index();
        let pages = space.pages();
        // SAFETY: the runtime view is mapped, read-write, for `size` bytes for as long as `space`
        // lives, and `space` lives as long as `Inner`. The region is shared only with the
        // transport (its table, and the local side of operations in flight), and `Dsm` closes
        // the transport, which stops every access, before the last `Arc<Inner>` goes (see `Drop
        // for Dsm`). Nothing borrows the view as a Rust slice.
        let runtime = unsafe { Region::from_raw(space.runtime_base(), space.size())? };
        let runtime_desc = t
            .register(&runtime)
            .map_err(|e| registering(&t, &space, e))?;
        // A node's home memory is its runtime view: the authoritative copy of a page homed here
        // is this node's own copy of it, at the page's offset (peers read and write it
        // one-sided). So a node never discards, zeroes or overwrites a page it homes except when
        // the page is freed (see `Inner::homed_here`), and one registration of the range
        // suffices. A job of one node homes every page: atomics and plain accesses meet in the
        // same bytes and no fault is ever needed (see `Dsm::with_node`).
        let dir = Region::allocate_sparse(pages * DIR_ENTRY)?;
        let log = Region::allocate_sparse((LOG_CAP + 1) * 8)?;
        let scratch = Region::allocate(buffers::scratch_size())?;
        t.register(&scratch)?;
        let mine = [runtime_desc, t.register(&dir)?, t.register(&log)?];
        let mut bytes = Vec::new();
        for d in &mine {
            bytes.extend_from_slice(&d.to_bytes());
        }
        let all = collective::all_gather(&*t, &bytes, None)?;
        let (mut homes, mut dirs, mut logs) = (Vec::new(), Vec::new(), Vec::new());
        for b in &all {
            let n = RegionDesc::ENCODED_LEN;
            if b.len() != 3 * n {
                return Err(Error::Bootstrap("malformed region descriptors".into()));
            }
            homes.push(RegionDesc::from_bytes(&b[..n])?);
            dirs.push(RegionDesc::from_bytes(&b[n..2 * n])?);
            logs.push(RegionDesc::from_bytes(&b[2 * n..])?);
        }
        let collective_pages = pages / 2;
        let arena_pages = (pages - collective_pages) / nodes;
        let arena_start = (collective_pages + me * arena_pages) * PAGE;
        // The home/manager entries of the collective heap's pages; those of the arenas follow
        // from the page number (`Inner::entry`). Both tables cost memory only where used.
        let map = SparseTable::new(collective_pages)?;
        let notices = notices::Notices::new(&t)?;
        let inner = Arc::new(Inner {
            cpu_atomics: t.capabilities().atomics_coherent_with_cpu,
            ordered_atomics: t.capabilities().ordered_atomics,
            unconfirmed: Mutex::new(Vec::new()),
            t,
            me,
            machine: Machine::new(Rank(me as u32)),
            nodes,
            runtime,
            log,
            scratch,
            free_scratch: Mutex::new((0..SCRATCH_SLOTS).collect()),
            free_carries: Mutex::new((0..buffers::CARRY_SLOTS).collect()),
            free_batches: Mutex::new((0..BATCH_SLOTS).collect()),
            cached: Mutex::new(CacheQueue::default()),
            cache_pages: (config.cache_size / PAGE).max(2),
            homes,
            dirs,
            logs,
            pages: PageTable::over(page_words(pages)?),
            map,
            twins: Mutex::new(HashMap::new()),
            dirty: Mutex::new(Vec::new()),
            release_gate: Mutex::new(()),
            acquire_gate: Mutex::new(()),
            sharers: Mutex::new(HashSet::new()),
            notices,
            log_consumed: Mutex::new(LogCursor::default()),
            collective_heap: Mutex::new(RangeAllocator::new(0, collective_pages, 1)),
            allocations: Mutex::new(Vec::new()),
            replay: Mutex::new(std::collections::VecDeque::new()),
            arena: Mutex::new(Arena::new(arena_start, arena_pages)),
            known_live: Mutex::new(HashSet::new()),
            collective_pages,
            arena_pages,
            next_expected: std::sync::atomic::AtomicUsize::new(usize::MAX),
            prefetch: Mutex::new(prefetch::Policy::default()),
            home_stream: Mutex::new(stream::Stream::default()),
            inflight: Mutex::new(Vec::new()),
            stats: Stats::default(),
            acquires: AtomicU64::new(0),
            profile: crate::profile::Profile::from_env(
                me,
                nodes,
                crate::profile::Layout {
                    base: space.base(),
                    collective_pages,
                    arena_pages,
                },
            ),
            space,
            _dir: dir,
        });
        Ok(inner)
    }

    /// Allocates `bytes` from the collective heap on this node's copy of the heap and records
    /// the homes and managers of its pages (every node computes the same). No communication.
    pub(crate) fn alloc_collective_local(
        &self,
        bytes: usize,
        placement: Placement,
    ) -> Result<usize> {
        let pages = bytes.div_ceil(PAGE).max(1);
        let start = lock(&self.collective_heap)
            .alloc(pages)
            .ok_or(Error::OutOfMemory { requested: bytes })?;
        self.place(start, pages, placement);
        Ok(start)
    }

    /// Records the homes and managers of the `pages` pages of a collective allocation at page
    /// `start` (every node computes the same).
    fn place(&self, start: usize, pages: usize, placement: Placement) {
        for i in 0..pages {
            let manager = placement::manager(placement, i, pages, self.nodes);
            let home = placement::home(placement, i, pages, self.nodes);
            self.map[start + i].store(map_entry(home, manager), Ordering::Release);
        }
        if let Some(p) = self.profile.on() {
            p.alloc(start, pages);
        }
    }
}
impl Inner {
    fn post(&self, op: Op) -> Result<Completion> {
        Ok(self.t.post(op)?)
    }

    /// Posts several operations; those to one peer leave together where the backend can.
    pub(crate) fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        Ok(self.t.post_batch(ops)?)
    }

    /// A word of `page`'s directory entry at its manager.
    fn dir_word(
        &self,
        manager: usize,
        page: usize,
        field: Field,
    ) -> Result<transport::RemoteSlice> {
        Ok(self.dirs[manager].word(field.offset(PageNo(page)) as u64)?)
    }

    fn runtime_slice(&self, offset: usize, len: usize) -> Result<LocalSlice> {
        Ok(LocalSlice::new(&self.runtime, offset, len)?)
    }

    /// Whether `page` is allocated and homed at this node (without choosing the home of a
    /// first-touch page nobody has touched yet). Such a page's authoritative copy is this
    /// node's own: it must never be discarded, zeroed, evicted or invalidated here, except when
    /// it is freed.
    fn homed_here(&self, page: usize) -> bool {
        entry_home(self.entry(page)) == Some(self.me)
    }

    /// Under userfaultfd, makes sure the memfd holds a page at `page` without changing a byte
    /// of it ([`GlobalSpace::populate`]: a peer's concurrent one-sided write to the same page
    /// is never lost).
    fn populate(&self, page: usize) -> Result<()> {
        self.populate_run(page, 1)
    }

    /// [`Inner::populate`] for `count` pages from `page`, in one call where the kernel can.
    fn populate_run(&self, page: usize, count: usize) -> Result<()> {
        if self.space.uffd().is_some() {
            self.space.populate(page, count)?;
        }
        Ok(())
    }

    /// The home/manager entry of `page` ([`map_entry`]): from the table in the collective heap;
    /// computed in the arenas (each node homes and manages its own); 0 past the last arena.
    fn entry(&self, page: usize) -> u32 {
        if page < self.collective_pages {
            return self.map[page].load(Ordering::Acquire);
        }
        let owner = (page - self.collective_pages) / self.arena_pages.max(1);
        if owner < self.nodes {
            map_entry(Some(owner), owner)
        } else {
            0
        }
    }

    /// The home and manager of `page`, choosing the home of a first-touch page.
    pub(crate) fn home_of(&self, page: usize) -> Result<(usize, usize)> {
        let e = self.entry(page);
        let Some(manager) = entry_manager(e) else {
            return Err(Error::Unallocated(self.space.base() + page * PAGE));
        };
        if let Some(home) = entry_home(e) {
            return Ok((home, manager));
        }
        // First touch: the first node to swap its rank into the manager's entry is the home.
        let word = self.dir_word(manager, page, Field::Home)?;
        let old = self
            .t
            .compare_swap(word, 0, DirEntry::home_word(self.machine.me()))?;
        let home = DirEntry::home_of_word(old).map_or(self.me, Rank::index);
        self.map[page].store(map_entry(Some(home), manager), Ordering::Release);
        Ok((home, manager))
    }

    /// Gives the memory behind pages back to the system, where that is safe: not when the
    /// transport's hardware has the runtime view pinned (RDMA), as the NIC would go on using
    /// the old pages.
    fn discard(&self, page: usize, count: usize) -> Result<()> {
        if self.t.capabilities().native_one_sided {
            return Ok(());
        }
        self.space.discard(page, count)
    }
}
