//! [`Dsm`]: the shared memory of a job. It executes the coherence protocol of
//! [`crate::coherence`] against the transport: page faults fetch pages and register this node in
//! directories, releases write diffs home, acquires invalidate what others wrote.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use transport::{
    wait_all, AnyTransport, Completion, LocalSlice, Op, Region, RegionDesc, Transport,
};

use crate::alloc::RangeAllocator;
use crate::coherence::diff::diff;
use crate::coherence::page::{
    Cache, PageGuard, PageTable, State, OTHER_WRITERS, PREFETCHED, REG_READER, REG_WRITER,
    RUN_START,
};
use crate::coherence::placement::{self, Placement};
use crate::coherence::prefetch;
use crate::coherence::{bit, home_fault, others_write, ranks, to_notify};
use crate::collective;
use crate::error::{Error, Result};
use crate::fault::{self, FaultEngine, FaultEngineKind, FaultMode};
use crate::node::Node;
use crate::space::{self, Access, GlobalSpace, PAGE};
use crate::sparse::SparseTable;
use crate::stats::Stats;
use arena::{Arena, MALLOC_GRANULE};

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
mod engine;
mod held;
#[cfg(test)]
mod sim;

/// Bytes of directory entry per page at its manager: readers, writers, home (+ 1), spare.
const DIR_ENTRY: usize = 32;
/// Entries in a node's notification log.
const LOG_CAP: usize = 1 << 16;
/// Size of the scratch area used as the local side of small remote operations.
const SCRATCH_SLOTS: usize = 4096;
/// The home/manager table entry of a page: bits 0–7 home + 1 (0: not known yet), bits 8–15
/// manager + 1 (0: the page is not allocated).
fn map_entry(home: Option<usize>, manager: usize) -> u32 {
    (home.map_or(0, |h| h as u32 + 1)) | ((manager as u32 + 1) << 8)
}

/// What the application view allows for a page holding `c`.
fn access_of(c: Cache) -> Access {
    match c {
        Cache::Invalid => Access::None,
        Cache::ReadOnly => Access::Read,
        Cache::Writable => Access::ReadWrite,
    }
}

/// What the application view allows for a page in state `st`: nothing while a prefetched copy
/// waits for its first touch (see [`PREFETCHED`]).
fn view_of(st: State) -> Access {
    if st.has(PREFETCHED) {
        Access::None
    } else {
        access_of(st.cache())
    }
}

/// `st` after the application's first touch of a prefetched copy (or its loss).
fn touched(st: State) -> State {
    st.without(PREFETCHED).without(RUN_START)
}

/// Prefetched runs kept in flight beyond the one a sequential reader is consuming.
const RUNS_AHEAD: usize = 2;

/// Settings of the shared memory.
#[derive(Debug, Clone)]
pub struct DsmConfig {
    /// Size of the global address space (virtual; memory is used only where touched).
    pub global_size: usize,
    /// How page faults are resolved.
    pub fault_mode: FaultMode,
    /// Which engine detects accesses.
    pub fault_engine: FaultEngineKind,
    /// Most memory spent on copies of pages homed elsewhere; older copies are evicted (clean
    /// ones dropped, dirty ones written home first) to stay under it.
    pub cache_size: usize,
}

impl DsmConfig {
    /// Reads `DSM_GLOBAL_SIZE` (bytes, with an optional K/M/G suffix; default 4G),
    /// `DSM_CACHE_SIZE` (default 1G),
    /// `DSM_FAULT_ENGINE` (`auto`, the default, `sigsegv` or `uffd`),
    /// `DSM_FAULT_MODE` (`inline`, the default, or `handoff`) and `DSM_FAULT_THREADS` (service
    /// threads of the hand-off mode, default 2).
    ///
    /// # Errors
    /// [`Error::Config`] naming a malformed variable.
    pub fn from_env() -> Result<DsmConfig> {
        let size = match std::env::var("DSM_GLOBAL_SIZE") {
            Ok(v) => parse_size(&v).ok_or_else(|| {
                Error::Config(format!("DSM_GLOBAL_SIZE={v:?} is not a size like 4G"))
            })?,
            Err(_) => 4 << 30,
        };
        let threads = match std::env::var("DSM_FAULT_THREADS") {
            Ok(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "DSM_FAULT_THREADS={v:?} is not a number from 1 to 64"
                    ))
                })?,
            Err(_) => 2,
        };
        let fault_mode = match std::env::var("DSM_FAULT_MODE").as_deref().map(str::trim) {
            Err(_) | Ok("inline") => FaultMode::Inline,
            Ok("handoff") => FaultMode::Handoff { threads },
            Ok(v) => {
                return Err(Error::Config(format!(
                    "DSM_FAULT_MODE={v:?}: expected inline or handoff"
                )))
            }
        };
        let fault_engine = match std::env::var("DSM_FAULT_ENGINE") {
            Ok(v) => FaultEngineKind::parse(&v)?,
            Err(_) => FaultEngineKind::Auto,
        };
        let cache_size = match std::env::var("DSM_CACHE_SIZE") {
            Ok(v) => parse_size(&v).filter(|&c| c >= 16 * PAGE).ok_or_else(|| {
                Error::Config(format!(
                    "DSM_CACHE_SIZE={v:?} is not a size of at least 64K"
                ))
            })?,
            Err(_) => 1 << 30,
        };
        Ok(DsmConfig {
            global_size: size,
            fault_mode,
            fault_engine,
            cache_size,
        })
    }
}

/// Parses `4096`, `64K`, `256M`, `4G`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1usize << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}

/// The shared state of the runtime, reachable from the fault service threads.
pub(crate) struct Inner {
    pub(crate) t: Arc<AnyTransport>,
    pub(crate) me: usize,
    pub(crate) nodes: usize,
    pub(crate) space: GlobalSpace,
    runtime: Arc<Region>,
    log: Arc<Region>,
    scratch: Arc<Region>,
    free_scratch: Mutex<Vec<usize>>,
    free_batches: Mutex<Vec<usize>>,
    /// Copies of remote pages, oldest first (may hold pages already invalidated).
    cached: Mutex<CacheQueue>,
    /// How many pages `cached` may hold.
    cache_pages: usize,
    homes: Vec<RegionDesc>,
    dirs: Vec<RegionDesc>,
    logs: Vec<RegionDesc>,
    pages: PageTable<PageWords>,
    map: SparseTable<AtomicU32>,
    twins: Mutex<HashMap<usize, Box<[u8]>>>,
    dirty: Mutex<Vec<usize>>,
    sharers: Mutex<HashSet<usize>>,
    log_consumed: Mutex<u64>,
    collective_heap: Mutex<RangeAllocator>,
    arena: Mutex<Arena>,
    /// Pages of other nodes' arenas seen holding a live block (their owners' bitmaps said so):
    /// atomics and locks there need not ask again. Never forgotten: a page whose blocks were
    /// all freed since is not refused (the check is for memory never allocated).
    known_live: Mutex<HashSet<usize>>,
    collective_pages: usize,
    /// Pages of each node's arena.
    arena_pages: usize,
    /// The page a sequential read would fault on next.
    next_expected: std::sync::atomic::AtomicUsize,
    /// How much to prefetch (see [`prefetch`]): the window, and its cap that pages used raise
    /// and pages wasted lower.
    prefetch: Mutex<prefetch::Policy>,
    /// Prefetches whose data is still on its way (their pages stay locked until installed).
    inflight: Mutex<Vec<Inflight>>,
    pub(crate) stats: Stats,
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The copies of remote pages this node holds, oldest first, each page at most once.
#[derive(Debug, Default)]
struct CacheQueue {
    order: std::collections::VecDeque<usize>,
    queued: HashSet<usize>,
}

impl CacheQueue {
    fn push(&mut self, page: usize) {
        if self.queued.insert(page) {
            self.order.push_back(page);
        }
    }
}

/// A small registered buffer for the local side of a remote operation; returned on drop.
struct Scratch<'a> {
    inner: &'a Inner,
    slot: usize,
}

impl Scratch<'_> {
    /// The first word of the slot.
    fn slice(&self) -> Result<LocalSlice> {
        Ok(LocalSlice::new(&self.inner.scratch, self.slot * 16, 8)?)
    }
    /// Both words of the slot (a whole directory entry's reader and writer sets).
    fn pair(&self) -> Result<LocalSlice> {
        Ok(LocalSlice::new(&self.inner.scratch, self.slot * 16, 16)?)
    }
    fn word(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        // The slot lies inside the scratch region by construction.
        let _ = self.inner.scratch.read_at(self.slot * 16 + i * 8, &mut b);
        u64::from_le_bytes(b)
    }
    fn set(&self, v: u64) {
        let _ = self
            .inner
            .scratch
            .write_at(self.slot * 16, &v.to_le_bytes());
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        lock(&self.inner.free_scratch).push(self.slot);
    }
}

/// A registered buffer for the directory entries of a run of prefetched pages; returned on drop.
struct Batch<'a> {
    inner: &'a Inner,
    slot: usize,
}

/// Directory entries per batch buffer (the largest prefetch run).
const BATCH_PAGES: usize = prefetch::MAX_WINDOW;
/// Batch buffers (concurrent prefetches).
const BATCH_SLOTS: usize = 16;

impl Batch<'_> {
    fn base(&self) -> usize {
        SCRATCH_SLOTS * 16 + self.slot * BATCH_PAGES * DIR_ENTRY
    }
    fn slice(&self, len: usize) -> Result<LocalSlice> {
        Ok(LocalSlice::new(
            &self.inner.scratch,
            self.base(),
            len.min(BATCH_PAGES * DIR_ENTRY),
        )?)
    }
    fn word(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        // Inside the batch buffer by construction (i < BATCH_PAGES * 4).
        let _ = self.inner.scratch.read_at(self.base() + i * 8, &mut b);
        u64::from_le_bytes(b)
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        lock(&self.inner.free_batches).push(self.slot);
    }
}

/// A run of prefetched pages whose data is on its way: the pages stay locked (with their
/// states as of locking) until [`Inner::install`] waits for the data and opens them.
#[derive(Debug)]
struct Inflight {
    first: usize,
    states: Vec<State>,
    /// The batch buffer receiving the run's directory entries (taken out of the free list).
    batch: usize,
    done: Vec<Completion>,
}

impl Inflight {
    fn holds(&self, page: usize) -> bool {
        (self.first..self.first + self.states.len()).contains(&page)
    }
}

/// The error of a failed registration of the global range (the runtime view, which is also this
/// node's home memory): under RDMA, registration pins what it covers, so the fix is usually a
/// smaller `DSM_GLOBAL_SIZE` (or a larger locked-memory limit).
fn registering(t: &AnyTransport, space: &GlobalSpace, err: transport::Error) -> Error {
    if !t.capabilities().native_one_sided {
        return err.into();
    }
    Error::Config(format!(
        "cannot register the global memory ({} MiB, DSM_GLOBAL_SIZE) with the RDMA device: \
         registration pins the whole range once (the runtime view of global memory, which is \
         also this node's home memory); set a smaller DSM_GLOBAL_SIZE or raise the \
         locked-memory limit: {err}",
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
        let scratch = Region::allocate(SCRATCH_SLOTS * 16 + BATCH_SLOTS * BATCH_PAGES * DIR_ENTRY)?;
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
        let inner = Arc::new(Inner {
            t,
            me,
            nodes,
            runtime,
            log,
            scratch,
            free_scratch: Mutex::new((0..SCRATCH_SLOTS).collect()),
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
            sharers: Mutex::new(HashSet::new()),
            log_consumed: Mutex::new(0),
            collective_heap: Mutex::new(RangeAllocator::new(0, collective_pages, 1)),
            arena: Mutex::new(Arena::new(arena_start, arena_pages)),
            known_live: Mutex::new(HashSet::new()),
            collective_pages,
            arena_pages,
            next_expected: std::sync::atomic::AtomicUsize::new(usize::MAX),
            prefetch: Mutex::new(prefetch::Policy::default()),
            inflight: Mutex::new(Vec::new()),
            stats: Stats::default(),
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
        for i in 0..pages {
            let manager = placement::manager(placement, i, pages, self.nodes);
            let home = placement::home(placement, i, pages, self.nodes);
            self.map[start + i].store(map_entry(home, manager), Ordering::Release);
        }
        Ok(start)
    }
}

impl Inner {
    /// A batch buffer, if one is free (else no prefetch now).
    fn try_batch(&self) -> Option<Batch<'_>> {
        let slot = lock(&self.free_batches).pop()?;
        Some(Batch { inner: self, slot })
    }

    /// Locks `page`; when a prefetch in flight holds it, installs that prefetch first (so that
    /// no thread waits for a run nobody completes).
    fn lock_page(&self, page: usize) -> Result<PageGuard<'_>> {
        let mut spins = 0u32;
        loop {
            if let Some(g) = self.pages.try_lock(page) {
                return Ok(g);
            }
            if !self.finish_prefetches(Some(page))? {
                spins = spins.wrapping_add(1);
                crate::sync::pause(spins);
            }
        }
    }

    /// Installs the prefetch in flight that holds `page` (every one, for `None`): waits for its
    /// data and opens its pages as prefetched copies. Returns whether it installed any.
    fn finish_prefetches(&self, page: Option<usize>) -> Result<bool> {
        let taken: Vec<Inflight> = {
            let mut all = lock(&self.inflight);
            match page {
                None => std::mem::take(&mut *all),
                Some(p) => match all.iter().position(|w| w.holds(p)) {
                    Some(i) => vec![all.swap_remove(i)],
                    None => return Ok(false),
                },
            }
        };
        let any = !taken.is_empty();
        let mut result = Ok(any);
        for w in taken {
            if let Err(e) = self.install(w) {
                result = result.and(Err(e));
            }
        }
        result
    }

    /// Waits for a prefetched run's data and unlocks its pages as prefetched copies (content
    /// valid, application view still closed: [`PREFETCHED`]).
    fn install(&self, w: Inflight) -> Result<()> {
        let entries = Batch {
            inner: self,
            slot: w.batch,
        };
        let n = w.states.len();
        if let Err(e) = wait_all(&w.done) {
            for (i, st) in w.states.into_iter().enumerate() {
                self.pages.unlock_kept(w.first + i, st);
            }
            return Err(e.into());
        }
        for (i, st) in w.states.into_iter().enumerate() {
            let page = w.first + i;
            let writers = entries.word(i * DIR_ENTRY / 8 + 1);
            let mut st = self.fetched_state(page, st, writers).with(PREFETCHED);
            if i == 0 {
                st = st.with(RUN_START);
            }
            self.pages.unlock_kept(page, st.with_cache(Cache::ReadOnly));
        }
        self.stats
            .pages_fetched
            .fetch_add(n as u64, Ordering::Relaxed);
        self.stats.prefetched.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    fn scratch(&self) -> Result<Scratch<'_>> {
        let slot = lock(&self.free_scratch).pop().ok_or_else(|| {
            Error::Bootstrap("out of scratch buffers for remote operations".into())
        })?;
        Ok(Scratch { inner: self, slot })
    }

    fn post(&self, op: Op) -> Result<Completion> {
        Ok(self.t.post(op)?)
    }

    /// Posts several operations; those to one peer leave together where the backend can.
    fn post_batch(&self, ops: Vec<Op>) -> Result<Vec<Completion>> {
        Ok(self.t.post_batch(ops)?)
    }

    fn dir_word(
        &self,
        manager: usize,
        page: usize,
        field: usize,
    ) -> Result<transport::RemoteSlice> {
        Ok(self.dirs[manager].word((page * DIR_ENTRY + field * 8) as u64)?)
    }

    fn runtime_slice(&self, offset: usize, len: usize) -> Result<LocalSlice> {
        Ok(LocalSlice::new(&self.runtime, offset, len)?)
    }

    /// Whether `page` is allocated and homed at this node (without choosing the home of a
    /// first-touch page nobody has touched yet). Such a page's authoritative copy is this
    /// node's own: it must never be discarded, zeroed, evicted or invalidated here, except when
    /// it is freed.
    fn homed_here(&self, page: usize) -> bool {
        self.entry(page) & 0xff == self.me as u32 + 1
    }

    /// Under userfaultfd, makes sure the memfd holds a page at `page` without changing a byte
    /// of it ([`GlobalSpace::populate`]: a peer's concurrent one-sided write to the same page
    /// is never lost).
    fn populate(&self, page: usize) -> Result<()> {
        if self.space.uffd().is_some() {
            self.space.populate(page)?;
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
    fn home_of(&self, page: usize) -> Result<(usize, usize)> {
        let e = self.entry(page);
        let manager = ((e >> 8) & 0xff) as usize;
        if manager == 0 {
            return Err(Error::Unallocated(self.space.base() + page * PAGE));
        }
        let manager = manager - 1;
        if e & 0xff != 0 {
            return Ok(((e & 0xff) as usize - 1, manager));
        }
        // First touch: the first node to swap its rank into the manager's entry is the home.
        let word = self.dir_word(manager, page, 2)?;
        let old = self.t.compare_swap(word, 0, self.me as u64 + 1)?;
        let home = if old == 0 { self.me } else { old as usize - 1 };
        self.map[page].store(map_entry(Some(home), manager), Ordering::Release);
        Ok((home, manager))
    }

    /// Resolves a fault at `addr`: makes the page readable, or writable for a write.
    pub(crate) fn resolve(&self, addr: usize, write: bool) -> Result<()> {
        let start = Instant::now();
        let page = self.space.page_of(addr);
        let mut g = self.lock_page(page)?;
        let st = g.state();
        let home_page = match st.cache() {
            Cache::Invalid => self.home_of(page)?.0 == self.me,
            _ => self.homed_here(page),
        };
        // Pages this fault brought in (the faulting one, and prefetched runs posted).
        let fresh = match (st.cache(), write) {
            // The home's own copy: always valid here, nothing to fetch (rows H1-H3).
            _ if home_page => {
                self.resolve_home(&mut g, write)?;
                Vec::new()
            }
            (Cache::Invalid, _) => {
                let mut ahead = self.fetch(&mut g, write)?;
                ahead.push(page);
                ahead
            }
            (Cache::ReadOnly, true) => {
                self.make_writable(&mut g)?;
                Vec::new()
            }
            // The first touch of a prefetched page: a local fault, no message (but, at the
            // first page of the latest run, the next run is posted).
            (Cache::ReadOnly, false) if st.has(PREFETCHED) => {
                self.space.set_access(page, 1, Access::None, Access::Read)?;
                g.set(touched(st));
                self.note_used(1);
                // (The page itself among them, so that no eviction it causes takes it away
                // before the access that faulted.)
                let mut ahead = if st.has(RUN_START) {
                    self.prefetch_ahead(page)?
                } else {
                    Vec::new()
                };
                ahead.push(page);
                ahead
            }
            // Another thread resolved it first (or, under userfaultfd, the kernel dropped the
            // page-table entry): make sure the mapping matches the state.
            _ => {
                self.space.remap(page, view_of(st))?;
                Vec::new()
            }
        };
        drop(g);
        if !fresh.is_empty() {
            self.account_cached(fresh)?;
        }
        self.stats
            .fault_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let counter = if write {
            &self.stats.write_faults
        } else {
            &self.stats.read_faults
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A fault on a page homed here (see [`home_fault`]): maps this node's copy, which is the
    /// authoritative one; a first write registers this node as a writer (notifying every other
    /// sharer, so that their next acquire invalidates their copies). No fetch, no twin, not on
    /// the dirty list, never invalidated: releases and acquires skip the page.
    fn resolve_home(&self, g: &mut PageGuard<'_>, write: bool) -> Result<()> {
        let page = g.page;
        let mut st = g.state();
        let (to, register) = home_fault(st.cache(), st.has(REG_WRITER), write);
        if register {
            st = self.register_writer(page, st)?;
        }
        if to == st.cache() {
            // Another thread resolved it first (or, under userfaultfd, the kernel dropped the
            // page-table entry).
            self.space.remap(page, access_of(to))?;
        } else {
            if st.cache() == Cache::Invalid {
                self.populate(page)?;
            }
            self.space
                .set_access(page, 1, access_of(st.cache()), access_of(to))?;
        }
        g.set(st.with_cache(to));
        Ok(())
    }

    /// Posts what fetching a page needs: registration as reader (once) and as writer (once, for
    /// a write), a read of the directory entry (after the registrations, on the same
    /// connection, so it sees them), and the page's content. Returns the scratch slot that will
    /// hold the entry and the completion of the writer registration.
    fn post_fetch(
        &self,
        page: usize,
        st: crate::coherence::page::State,
        write: bool,
        posted: &mut Vec<Completion>,
    ) -> Result<(Scratch<'_>, Option<Completion>)> {
        let (home, manager) = self.home_of(page)?;
        let mut ops = Vec::with_capacity(4);
        if !st.has(REG_READER) {
            ops.push(Op::FetchAdd {
                remote: self.dir_word(manager, page, 0)?,
                add: bit(self.me),
            });
        }
        let writer_at = if write && !st.has(REG_WRITER) {
            ops.push(Op::FetchAdd {
                remote: self.dir_word(manager, page, 1)?,
                add: bit(self.me),
            });
            Some(ops.len() - 1)
        } else {
            None
        };
        let entry = self.scratch()?;
        let remote = self.dirs[manager].slice((page * DIR_ENTRY) as u64, 16)?;
        ops.push(Op::Read {
            remote,
            local: entry.pair()?,
        });
        debug_assert_ne!(home, self.me, "a page homed here is never fetched");
        let remote = self.homes[home].slice((page * PAGE) as u64, PAGE)?;
        ops.push(Op::Read {
            remote,
            local: self.runtime_slice(page * PAGE, PAGE)?,
        });
        let mut done = self.post_batch(ops)?;
        let as_writer = writer_at.map(|i| done[i].clone());
        posted.append(&mut done);
        Ok((entry, as_writer))
    }

    /// The state of a page just fetched, from the directory entry that came with it.
    fn fetched_state(
        &self,
        page: usize,
        st: crate::coherence::page::State,
        writers: u64,
    ) -> crate::coherence::page::State {
        let mut st = st.with(REG_READER);
        if others_write(writers, self.me) {
            st = st.with(OTHER_WRITERS);
        }
        if st.has(OTHER_WRITERS) {
            lock(&self.sharers).insert(page);
        }
        st
    }

    /// Fetches an invalid page (see [`Inner::post_fetch`]) and opens it for reading, or for
    /// writing with a twin and the writer registration done, in one round of messages. A read
    /// posts the prefetch the access pattern calls for in the same round, and returns as soon
    /// as its own page is in (the prefetched pages stay locked until their data lands).
    /// Returns the pages prefetched.
    fn fetch(&self, g: &mut PageGuard<'_>, write: bool) -> Result<Vec<usize>> {
        let page = g.page;
        let mut posted = Vec::with_capacity(4);
        let (entry, as_writer) = self.post_fetch(page, g.state(), write, &mut posted)?;
        let ahead = if write {
            Vec::new()
        } else {
            self.prefetch_after(page)?
        };
        wait_all(&posted)?;
        self.stats.pages_fetched.fetch_add(1, Ordering::Relaxed);
        let (readers, writers) = (entry.word(0), entry.word(1));
        let mut st = self.fetched_state(page, g.state(), writers);
        if let Some(c) = as_writer {
            st = self.registered_writer(page, st, readers, c.wait()?)?;
        }
        if write {
            self.open_for_writing(g, st)?;
        } else {
            self.space.set_access(page, 1, Access::None, Access::Read)?;
            g.set(st.with_cache(Cache::ReadOnly));
        }
        Ok(ahead)
    }

    /// After this node's writer bit went in: tell the other sharers, note other writers.
    fn registered_writer(
        &self,
        page: usize,
        st: crate::coherence::page::State,
        readers: u64,
        old_writers: u64,
    ) -> Result<crate::coherence::page::State> {
        self.notify(page, to_notify(readers, old_writers, self.me))?;
        let mut st = st.with(REG_WRITER);
        if others_write(old_writers, self.me) {
            st = st.with(OTHER_WRITERS);
            if !self.homed_here(page) {
                lock(&self.sharers).insert(page);
            }
        }
        Ok(st)
    }

    /// Keeps a twin, opens the page for writing, puts it on the dirty list.
    fn open_for_writing(
        &self,
        g: &mut PageGuard<'_>,
        st: crate::coherence::page::State,
    ) -> Result<()> {
        let page = g.page;
        let mut twin = vec![0u8; PAGE].into_boxed_slice();
        self.runtime.read_at(page * PAGE, &mut twin)?;
        lock(&self.twins).insert(page, twin);
        // On the dirty list before it is writable: another thread of this node may write it as
        // soon as it is mapped, and its next release must then find the page (it waits for the
        // page's lock, which this thread holds, and then sees it writable).
        lock(&self.dirty).push(page);
        let from = view_of(g.state());
        self.space.set_access(page, 1, from, Access::ReadWrite)?;
        g.set(touched(st).with_cache(Cache::Writable));
        Ok(())
    }

    /// Makes a valid, read-only page writable: registers as writer (once, notifying every other
    /// sharer), then opens it for writing.
    fn make_writable(&self, g: &mut PageGuard<'_>) -> Result<()> {
        let page = g.page;
        let mut st = g.state();
        if st.has(PREFETCHED) {
            // Its first touch is this write.
            self.note_used(1);
        }
        if !st.has(REG_WRITER) {
            st = self.register_writer(page, st)?;
        }
        self.open_for_writing(g, st)
    }

    /// Adds this node to the page's writers in the directory and reads the entry back (posted
    /// after the fetch-and-add on the same connection, so it sees our bit), then tells the
    /// other sharers (see [`Inner::registered_writer`]).
    fn register_writer(
        &self,
        page: usize,
        st: crate::coherence::page::State,
    ) -> Result<crate::coherence::page::State> {
        let (_, manager) = self.home_of(page)?;
        let entry = self.scratch()?;
        let add = self.post(Op::FetchAdd {
            remote: self.dir_word(manager, page, 1)?,
            add: bit(self.me),
        })?;
        let remote = self.dirs[manager].slice((page * DIR_ENTRY) as u64, 16)?;
        let read = self.post(Op::Read {
            remote,
            local: entry.pair()?,
        })?;
        let old_writers = add.wait()?;
        read.wait()?;
        self.registered_writer(page, st, entry.word(0), old_writers)
    }

    /// Counts `n` prefetched pages the application touched, and lets the prefetch window grow
    /// back by as many.
    fn note_used(&self, n: usize) {
        self.stats
            .prefetched_used
            .fetch_add(n as u64, Ordering::Relaxed);
        lock(&self.prefetch).on_used(n);
    }

    /// Counts `n` prefetched pages dropped untouched by one event, and shrinks the prefetch
    /// window: prefetching stops when it does not pay.
    fn note_wasted(&self, n: usize) {
        if n == 0 {
            return;
        }
        self.stats
            .prefetched_wasted
            .fetch_add(n as u64, Ordering::Relaxed);
        lock(&self.prefetch).on_wasted(n);
    }

    /// After a read fault on `page` that went to its home: whether the pattern is sequential,
    /// and if so, posts the prefetch of the pages after it ([`Inner::post_run`]). Returns the
    /// pages posted.
    ///
    /// Sequential read faults prefetch the pages that follow, in a window that doubles while
    /// the pattern stays sequential and closes as soon as it does not, capped by what
    /// prefetching has recently wasted ([`prefetch`]). Prefetched pages are installed but not
    /// mapped for the application ([`PREFETCHED`]): the first touch of each takes a local
    /// fault that maps it and counts it used.
    fn prefetch_after(&self, page: usize) -> Result<Vec<usize>> {
        let expected = self.next_expected.swap(page + 1, Ordering::Relaxed);
        let window = lock(&self.prefetch).on_read_fault(page == expected);
        self.post_run(page + 1, window)
    }

    /// At the first touch of `page`, the first page of a prefetched run ([`RUN_START`]): the
    /// application is consuming that run sequentially, so the runs that follow are posted now,
    /// up to [`RUNS_AHEAD`] runs beyond this one, to land while it consumes this one (no remote
    /// fault at the end of a run, no wait for the next). Returns the pages posted.
    fn prefetch_ahead(&self, page: usize) -> Result<Vec<usize>> {
        let window = lock(&self.prefetch).on_read_fault(true);
        let mut posted = Vec::new();
        for _ in 0..=RUNS_AHEAD {
            let from = self.next_expected.load(Ordering::Relaxed);
            // (Not behind the reader: another fault moved the pattern elsewhere.)
            if window == 0 || from <= page || from >= page + (RUNS_AHEAD + 1) * window {
                break;
            }
            let run = self.post_run(from, window)?;
            if run.is_empty() {
                break;
            }
            posted.extend(run);
        }
        Ok(posted)
    }

    /// Posts the prefetch of up to `window` pages from `from`: the invalid, allocated pages
    /// that follow with one home and manager. Per page, the reader registration; for the whole
    /// run, one read of the directory entries and one of the content. The pages stay locked
    /// until [`Inner::install`] (by whichever thread needs them first) opens them. Returns the
    /// pages posted.
    fn post_run(&self, from: usize, window: usize) -> Result<Vec<usize>> {
        if window == 0 {
            return Ok(Vec::new());
        }
        let Some(entries) = self.try_batch() else {
            // Every batch buffer is in flight: this run is not worth waiting for.
            return Ok(Vec::new());
        };
        // Held from before the pages are locked until the run is on the list, so that a thread
        // that finds one of them locked finds the run (see `lock_page`).
        let mut inflight = lock(&self.inflight);
        let mut guards = Vec::with_capacity(window);
        for q in from..(from + window).min(self.pages.len()) {
            // Stop at the first page that is valid, busy, or not allocated.
            if self.pages.peek(q).cache() != Cache::Invalid || self.entry(q) == 0 {
                break;
            }
            match self.pages.try_lock(q) {
                Some(g) if g.state().cache() == Cache::Invalid => guards.push(g),
                _ => break,
            }
        }
        if guards.is_empty() {
            return Ok(Vec::new());
        }
        let first = guards[0].page;
        let (home, manager) = self.home_of(first)?;
        if home == self.me {
            // Nothing to fetch: this node's copy is the home's.
            return Ok(Vec::new());
        }
        let mut n = 1;
        while n < guards.len() && self.home_of(guards[n].page)? == (home, manager) {
            n += 1;
        }
        guards.truncate(n);
        let mut posted = Vec::with_capacity(n + 2);
        // The run's reader registrations: one message where the backend can (tcp), when every
        // page of the run needs one (the usual case); else one fetch-and-add per page.
        if guards.iter().all(|g| !g.state().has(REG_READER)) {
            let first = self.dir_word(manager, guards[0].page, 0)?;
            posted.extend(
                self.t
                    .add_strided(first, DIR_ENTRY as u64, n as u32, bit(self.me))?,
            );
        } else {
            for g in guards.iter().filter(|g| !g.state().has(REG_READER)) {
                let remote = self.dir_word(manager, g.page, 0)?;
                posted.push(self.post(Op::FetchAdd {
                    remote,
                    add: bit(self.me),
                })?);
            }
        }
        let remote = self.dirs[manager].slice((first * DIR_ENTRY) as u64, n * DIR_ENTRY)?;
        posted.push(self.post(Op::Read {
            remote,
            local: entries.slice(n * DIR_ENTRY)?,
        })?);
        let remote = self.homes[home].slice((first * PAGE) as u64, n * PAGE)?;
        posted.push(self.post(Op::Read {
            remote,
            local: self.runtime_slice(first * PAGE, n * PAGE)?,
        })?);
        let pages: Vec<usize> = (first..first + n).collect();
        let states = guards.into_iter().map(PageGuard::keep_locked).collect();
        let batch = entries.slot;
        std::mem::forget(entries);
        inflight.push(Inflight {
            first,
            states,
            batch,
            done: posted,
        });
        drop(inflight);
        self.next_expected.store(first + n, Ordering::Relaxed);
        Ok(pages)
    }

    /// Appends `page` to the notification log of every node in `set`.
    fn notify(&self, page: usize, set: u64) -> Result<()> {
        if set == 0 {
            return Ok(());
        }
        let targets: Vec<usize> = ranks(set).filter(|&r| r < self.nodes).collect();
        let slots = targets
            .iter()
            .map(|&r| {
                self.post(Op::FetchAdd {
                    remote: self.logs[r].word(0)?,
                    add: 1,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let value = self.scratch()?;
        value.set(page as u64 + 1);
        let mut writes = Vec::with_capacity(targets.len());
        for (&r, c) in targets.iter().zip(&slots) {
            let slot = c.wait()? as usize % LOG_CAP;
            let remote = self.logs[r].word(8 + slot as u64 * 8)?;
            writes.push(self.post(Op::Write {
                remote,
                local: value.slice()?,
            })?);
        }
        wait_all(&writes)?;
        self.stats
            .notifications
            .fetch_add(targets.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Closes `pages` (read-only for a release, no access for an invalidation), posts the diff
    /// of each written one to its home, and sets them to `then`. Pages are locked in ascending
    /// order and closed with one `mprotect` per run of consecutive pages: each `mprotect` that
    /// removes a permission costs a TLB shootdown, which on a virtual machine is expensive.
    /// Returns how many pages it changed.
    fn close_and_write_back(&self, pages: Vec<usize>, then: Cache) -> Result<usize> {
        self.close_pages(pages, then, false)
    }

    /// [`Inner::close_and_write_back`]; with `skip_busy`, pages another thread holds are left
    /// alone instead of waited for (eviction).
    fn close_pages(&self, mut pages: Vec<usize>, then: Cache, skip_busy: bool) -> Result<usize> {
        pages.sort_unstable();
        pages.dedup();
        // A page homed here holds the home's copy: never dirty (nothing to write back), never
        // stale (nothing to invalidate), never evicted.
        pages.retain(|&p| !self.homed_here(p));
        let needs = |c: Cache| match then {
            Cache::ReadOnly => c == Cache::Writable,
            _ => c != Cache::Invalid,
        };
        let mut guards: Vec<PageGuard<'_>> = Vec::with_capacity(pages.len());
        for p in pages {
            let g = if skip_busy {
                self.pages.try_lock(p)
            } else {
                Some(self.lock_page(p)?)
            };
            if let Some(g) = g.filter(|g| needs(g.state().cache())) {
                guards.push(g);
            }
        }
        // Close first, so that no thread of this process writes while we diff. Closing to
        // read-only only ever applies to writable pages (see `needs`).
        let (from, access) = if then == Cache::Invalid {
            (Access::None, Access::None)
        } else {
            (Access::ReadWrite, Access::Read)
        };
        let mut i = 0;
        while i < guards.len() {
            let start = guards[i].page;
            let mut n = 1;
            while i + n < guards.len() && guards[i + n].page == start + n {
                n += 1;
            }
            self.space.set_access(start, n, from, access)?;
            i += n;
        }
        let mut posted = Vec::new();
        let mut now = vec![0u8; PAGE];
        let mut wasted = 0;
        for g in &mut guards {
            let page = g.page;
            if g.state().cache() == Cache::Writable {
                let twin = lock(&self.twins).remove(&page);
                let (home, _) = self.home_of(page)?;
                self.runtime.read_at(page * PAGE, &mut now)?;
                let runs = match &twin {
                    Some(t) => diff(&now, t),
                    None => vec![crate::coherence::diff::Run {
                        offset: 0,
                        len: PAGE,
                    }],
                };
                let bytes: usize = runs.iter().map(|r| r.len).sum();
                self.stats
                    .bytes_written_home
                    .fetch_add(bytes as u64, Ordering::Relaxed);
                let spans: Vec<(u32, u32)> = runs
                    .iter()
                    .map(|r| (r.offset as u32, r.len as u32))
                    .collect();
                let remote = self.homes[home].slice((page * PAGE) as u64, PAGE)?;
                let local = self.runtime_slice(page * PAGE, PAGE)?;
                posted.extend(self.t.write_runs(remote, &local, &spans)?);
                self.stats.diffs.fetch_add(1, Ordering::Relaxed);
            }
            if then == Cache::Invalid && g.state().has(PREFETCHED) {
                wasted += 1;
            }
            g.set(touched(g.state()).with_cache(then));
        }
        let changed = guards.len();
        drop(guards);
        self.note_wasted(wasted);
        wait_all(&posted)?;
        Ok(changed)
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

    /// Records a fetched copy of a remote page, and evicts the oldest copies when the cache is
    /// over its bound: clean ones are dropped, dirty ones written home first, and their memory
    /// is given back.
    fn account_cached(&self, pages: impl IntoIterator<Item = usize>) -> Result<()> {
        let fresh: Vec<usize> = pages.into_iter().collect();
        let victims: Vec<usize> = {
            let mut cached = lock(&self.cached);
            for &p in &fresh {
                if !self.homed_here(p) && self.entry(p) != 0 {
                    cached.push(p);
                }
            }
            if cached.order.len() <= self.cache_pages {
                return Ok(());
            }
            // Evict down to seven eighths, so that eviction runs in batches; never a page
            // fetched just now (the access that faulted is about to use it).
            let excess = cached.order.len() - self.cache_pages * 7 / 8;
            let mut victims = Vec::with_capacity(excess);
            while victims.len() < excess {
                let Some(p) = cached.order.pop_front() else {
                    break;
                };
                cached.queued.remove(&p);
                if fresh.contains(&p) {
                    cached.push(p);
                    if victims.len() + fresh.len() >= cached.order.len() {
                        break;
                    }
                } else {
                    victims.push(p);
                }
            }
            victims
        };
        let n = self.close_pages(victims.clone(), Cache::Invalid, true)?;
        for &p in &victims {
            // (A page locked now is being fetched or prefetched: its memory stays.)
            if self.pages.peek(p).cache() == Cache::Invalid && !self.pages.is_locked(p) {
                lock(&self.sharers).remove(&p);
                self.discard(p, 1)?;
            } else {
                // Busy or refetched meanwhile: keep counting it.
                lock(&self.cached).push(p);
            }
        }
        self.stats.evictions.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Release: every page written since the last release has its diff at its home when this
    /// returns.
    pub(crate) fn release(&self) -> Result<()> {
        let start = Instant::now();
        // The application's stores to pages homed here are already in the home's copy: order
        // them before whatever follows the release (the operations that let others see them).
        std::sync::atomic::fence(Ordering::SeqCst);
        let dirty = std::mem::take(&mut *lock(&self.dirty));
        self.close_and_write_back(dirty, Cache::ReadOnly)?;
        self.stats
            .release_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Acquire: invalidates every cached page that another node writes.
    pub(crate) fn acquire(&self) -> Result<()> {
        let start = Instant::now();
        // A run prefetched before this acquire may hold data older than what it must see: it is
        // installed first, so that the invalidations below cover it.
        self.finish_prefetches(None)?;
        let full = self.drain_log();
        let victims: Vec<usize> = if full {
            lock(&self.sharers).clear();
            (0..self.pages.len())
                .filter(|&p| self.pages.peek(p).cache() != Cache::Invalid && !self.homed_here(p))
                .collect()
        } else {
            lock(&self.sharers).drain().collect()
        };
        let n = self.close_and_write_back(victims, Cache::Invalid)?;
        self.stats
            .invalidations
            .fetch_add(n as u64, Ordering::Relaxed);
        self.stats
            .acquire_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the notifications that arrived since the last acquire and marks their pages as
    /// written by others. Returns true when the log overflowed (every cached page must go).
    fn drain_log(&self) -> bool {
        let mut consumed = lock(&self.log_consumed);
        let Ok(tail) = self.log.atomic_u64(0).map(|w| w.load(Ordering::Acquire)) else {
            return true;
        };
        if tail.saturating_sub(*consumed) > LOG_CAP as u64 {
            *consumed = tail;
            return true;
        }
        while *consumed < tail {
            let at = 8 + (*consumed as usize % LOG_CAP) * 8;
            let Ok(word) = self.log.atomic_u64(at) else {
                return true;
            };
            let v = word.swap(0, Ordering::AcqRel);
            if v == 0 {
                // Announced but not written yet: it belongs to a write not yet released to us.
                break;
            }
            *consumed += 1;
            let page = v as usize - 1;
            if page < self.pages.len() {
                let Ok(mut g) = self.lock_page(page) else {
                    return true;
                };
                let st = g.state().with(OTHER_WRITERS);
                if st.cache() != Cache::Invalid && !self.homed_here(page) {
                    lock(&self.sharers).insert(page);
                }
                g.set(st);
            }
        }
        false
    }

    /// Forgets everything about `count` pages from `page` (their allocation was freed).
    fn reset_pages(&self, page: usize, count: usize) -> Result<()> {
        // No run in flight may stay locked over pages that are reset.
        self.finish_prefetches(None)?;
        {
            let mut sharers = lock(&self.sharers);
            let mut twins = lock(&self.twins);
            for p in page..page + count {
                sharers.remove(&p);
                twins.remove(&p);
            }
        }
        lock(&self.dirty).retain(|p| !(page..page + count).contains(p));
        if self.nodes > 1 {
            // (Alone, the node's pages stay open: nothing would serve a fault.)
            self.space
                .set_access(page, count, Access::None, Access::None)?;
        }
        // The pages' memory (home copies included: a page homed here lives in the runtime view)
        // goes back to the system, or is zeroed where the NIC pins it, so that whatever is
        // allocated here next starts from zeros at its home.
        if self.t.capabilities().native_one_sided {
            self.runtime
                .write_at(page * PAGE, &vec![0u8; count * PAGE])?;
        } else {
            self.space.discard(page, count)?;
        }
        let wasted = (page..page + count)
            .filter(|&p| self.pages.peek(p).has(PREFETCHED))
            .count();
        self.note_wasted(wasted);
        self.pages.reset(page, count);
        Ok(())
    }

    /// Offset (in the global range) of the head of `owner`'s stack of remote frees.
    fn arena_head(&self, owner: usize) -> usize {
        (self.collective_pages + owner * self.arena_pages) * PAGE
    }

    /// Takes every block other nodes freed into this node's arena and frees it here.
    fn take_remote_frees(&self) -> Result<()> {
        let head = self.homes[self.me].word(self.arena_head(self.me) as u64)?;
        let mut list = self.t.fetch_add(head, 0)?;
        if list == 0 {
            return Ok(());
        }
        // Take the whole stack at once: pushers only ever add at the head, so no ABA.
        loop {
            let seen = self.t.compare_swap(head, list, 0)?;
            if seen == list {
                break;
            }
            list = seen;
        }
        let mut arena = lock(&self.arena);
        while list != 0 {
            let block = list as usize;
            let mut next = [0u8; 8];
            if block + 8 > self.runtime.len() || self.runtime.read_at(block, &mut next).is_err() {
                tracing::warn!("a remote free left a link outside the arena: {block:#x}");
                break;
            }
            if arena.free(block, &self.runtime).is_none() {
                tracing::warn!(
                    "another node freed {:#x}, which is not a live allocation here",
                    self.space.base() + block
                );
            }
            list = u64::from_le_bytes(next);
        }
        Ok(())
    }

    /// The remote word of an 8-byte global atomic at `addr`.
    fn atomic_word(&self, addr: usize) -> Result<transport::RemoteSlice> {
        if !self.space.contains(addr) || !addr.is_multiple_of(8) {
            return Err(Error::Misaligned(addr));
        }
        let page = self.space.page_of(addr);
        let (home, _) = self.home_of(page)?;
        if page >= self.collective_pages {
            self.check_arena_word(addr, page, home)?;
        }
        Ok(self.homes[home].word((addr - self.space.base()) as u64)?)
    }

    /// Refuses an atomic on `malloc` arena memory that no block covers: exactly in this node's
    /// own arena; in another node's, by its owner's page bitmap (one remote read the first time
    /// a page is used, remembered after).
    fn check_arena_word(&self, addr: usize, page: usize, owner: usize) -> Result<()> {
        let off = addr - self.space.base();
        if owner == self.me {
            return if lock(&self.arena).covers(off, 8) {
                Ok(())
            } else {
                Err(Error::Unallocated(addr))
            };
        }
        if lock(&self.known_live).contains(&page) {
            return Ok(());
        }
        let index = page - self.collective_pages - owner * self.arena_pages;
        let word =
            self.homes[owner].word((self.arena_head(owner) + arena::bitmap_word(index)) as u64)?;
        let bits = self.t.fetch_add(word, 0)?;
        if bits >> (index % 64) & 1 == 0 {
            return Err(Error::Unallocated(addr));
        }
        lock(&self.known_live).insert(page);
        Ok(())
    }
}

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
    /// [`Error::Config`] for more than 64 nodes or a bad size; mapping and transport errors.
    pub fn with_node(node: Node, config: DsmConfig) -> Result<Dsm> {
        let nodes = node.nodes();
        if nodes > 64 {
            return Err(Error::Config(format!(
                "the shared memory supports up to 64 nodes, not {nodes}"
            )));
        }
        let t = node.transport_arc();
        let mut space = space::negotiate(&*t, config.global_size)?;
        if nodes > 1 {
            fault::prepare(&mut space, config.fault_engine, config.fault_mode)?;
        }
        let inner = Inner::build(t, space, &config)?;
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
    /// [`Error::CollectiveMismatch`] on every node when the nodes passed different arguments
    /// or are in different collective calls (nothing is changed).
    pub fn alloc_collective(&self, bytes: usize, placement: Placement) -> Result<*mut u8> {
        let (kind, block_pages) = match placement {
            Placement::Blocked => (0, 0),
            Placement::FirstTouch => (1, 0),
            Placement::Cyclic { block_pages } => (2, block_pages as u64),
        };
        let args = [
            ("bytes", bytes as u64),
            ("placement (0 blocked, 1 first-touch, 2 cyclic)", kind),
            ("the cyclic placement's block pages", block_pages),
        ];
        let start = self.inner.alloc_collective_local(bytes, placement);
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
            (Ok(start), Ok(())) => Ok((self.inner.space.base() + start * PAGE) as *mut u8),
            (Ok(start), Err(mismatch)) => {
                // Nothing was handed out: give the run back, so that every heap stays the same.
                lock(&self.inner.collective_heap).free(start);
                for p in start..start + bytes.div_ceil(PAGE).max(1) {
                    self.inner.map[p].store(0, Ordering::Release);
                }
                Err(mismatch)
            }
            (Err(_), Err(mismatch)) => Err(mismatch),
            (Err(local), Ok(())) => Err(local),
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
        let freed = self.free_collective_pages(start, bad);
        collective::barrier(&*self.inner.t, None)?;
        released.and(freed)
    }

    /// The local part of [`Dsm::free_collective`] between its barriers: frees the run at page
    /// `start` in the collective heap, resets its pages and clears what this node holds of it.
    fn free_collective_pages(&self, start: usize, bad: Error) -> Result<()> {
        let pages = lock(&self.inner.collective_heap).free(start).ok_or(bad)?;
        self.inner.reset_pages(start, pages)?;
        // Clear the directory entries this node manages.
        for p in start..start + pages {
            let e = self.inner.map[p].swap(0, Ordering::AcqRel);
            if ((e >> 8) & 0xff) as usize == self.inner.me + 1 {
                let _ = self.inner._dir.write_at(p * DIR_ENTRY, &[0u8; DIR_ENTRY]);
            }
        }
        Ok(())
    }

    /// Allocates `bytes` of global memory from this node's arena (home: this node); the pointer
    /// is valid on every node. Thread-safe; not collective.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the arena is full (nothing is changed).
    pub fn malloc(&self, bytes: usize) -> Result<*mut u8> {
        self.inner.take_remote_frees()?;
        let off = lock(&self.inner.arena)
            .alloc(bytes, &self.inner.runtime)
            .ok_or(Error::OutOfMemory { requested: bytes })?;
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
        let addr = ptr as usize;
        let inner = &*self.inner;
        if !inner.space.contains(addr) {
            return Err(Error::InvalidPointer(addr));
        }
        let off = addr - inner.space.base();
        let page = off / PAGE;
        if page < inner.collective_pages || !off.is_multiple_of(MALLOC_GRANULE) {
            return Err(Error::InvalidPointer(addr));
        }
        let owner = (page - inner.collective_pages) / inner.arena_pages;
        if owner >= inner.nodes {
            return Err(Error::InvalidPointer(addr));
        }
        if owner == inner.me {
            inner.take_remote_frees()?;
            return lock(&inner.arena)
                .free(off, &inner.runtime)
                .map(drop)
                .ok_or(Error::InvalidPointer(addr));
        }
        // The link goes into the block's first word at its home: first write home what this
        // node changed, so that no later diff of ours overwrites the link.
        inner.release()?;
        let head = inner.homes[owner].word(inner.arena_head(owner) as u64)?;
        let link = inner.homes[owner].word(off as u64)?;
        let value = inner.scratch()?;
        let mut cur = inner.t.fetch_add(head, 0)?;
        loop {
            value.set(cur);
            inner.t.write(link, value.slice()?)?;
            let seen = inner.t.compare_swap(head, cur, off as u64)?;
            if seen == cur {
                return Ok(());
            }
            cur = seen;
        }
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
        collective::barrier(&*self.inner.t, None)?;
        self.inner.acquire()?;
        let s = &self.inner.stats;
        s.barriers.fetch_add(1, Ordering::Relaxed);
        s.barrier_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
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
        let ticket = self.inner.t.fetch_add(next, 1)?;
        let mut backoff = 1u32;
        loop {
            let now = self.inner.t.fetch_add(serving, 0)?;
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
        }
        self.held.taken(l as usize);
        self.inner.acquire()?;
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
        let now = self.inner.t.fetch_add(serving, 0)?;
        if self.inner.t.compare_swap(next, now, now + 1)? != now {
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
        self.inner.release()?;
        self.inner.t.fetch_add(serving, 1)?;
        Ok(())
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
        self.inner.close_and_write_back(pages, Cache::Invalid)?;
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
        let r = self.barrier();
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
