//! A node's knowledge of one page, packed in one atomic word, and the per-page lock that keeps
//! the fault path free of any global lock: faults on different pages proceed in parallel,
//! faults on one page wait for each other.

use crate::sync::{pause, AtomicU64, Ordering};

/// The copy this node holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// No valid copy: the application view is `PROT_NONE`.
    Invalid,
    /// A clean copy: read-only.
    ReadOnly,
    /// A copy being written, with a twin: read-write, on the dirty list.
    Writable,
}

const CACHE_MASK: u64 = 0b11;
/// The page is locked by a thread that is changing its state.
pub const BUSY: u64 = 1 << 2;
/// This node's bit is set in the page's reader set (directories only ever gain bits).
pub const REG_READER: u64 = 1 << 3;
/// This node's bit is set in the page's writer set.
pub const REG_WRITER: u64 = 1 << 4;
/// Another node writes this page: invalidate the copy at every acquire.
pub const OTHER_WRITERS: u64 = 1 << 5;
/// The copy was prefetched and the application has not touched it yet: its content is valid
/// (the cache state says `ReadOnly`) but the application view does not map it, so the first
/// touch takes a local fault that only maps it, and counts it used. A copy dropped while the
/// flag is set was prefetched in vain (wasted).
pub const PREFETCHED: u64 = 1 << 6;
/// With [`PREFETCHED`]: the first page of a prefetched run, whose first touch posts the runs
/// that follow (a sequential reader is consuming this one).
pub const RUN_START: u64 = 1 << 7;

/// The decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State(pub u64);

impl State {
    /// The copy held.
    pub fn cache(self) -> Cache {
        match self.0 & CACHE_MASK {
            0 => Cache::Invalid,
            1 => Cache::ReadOnly,
            _ => Cache::Writable,
        }
    }

    /// The same state with another copy.
    pub fn with_cache(self, c: Cache) -> State {
        let bits = match c {
            Cache::Invalid => 0,
            Cache::ReadOnly => 1,
            Cache::Writable => 2,
        };
        State((self.0 & !CACHE_MASK) | bits)
    }

    /// Whether `flag` is set.
    pub fn has(self, flag: u64) -> bool {
        self.0 & flag != 0
    }

    /// The same state with `flag` set.
    pub fn with(self, flag: u64) -> State {
        State(self.0 | flag)
    }

    /// The same state with `flag` cleared.
    pub fn without(self, flag: u64) -> State {
        State(self.0 & !flag)
    }
}

/// The state words of every page of the global range, in any storage of atomic words: a `Vec`
/// (tests, loom models) or, in the runtime, a table that costs memory only for the pages a node
/// uses ([`crate::sparse::SparseTable`]; the initial state is all zero bits).
#[derive(Debug)]
pub struct PageTable<W = Vec<AtomicU64>> {
    words: W,
}

/// A locked page: the state can be read and changed; dropping it stores the state and unlocks.
#[derive(Debug)]
pub struct PageGuard<'a> {
    word: &'a AtomicU64,
    state: State,
    /// The page number.
    pub page: usize,
}

impl PageTable {
    /// A table of `pages` pages, all invalid.
    pub fn new(pages: usize) -> PageTable {
        PageTable::over((0..pages).map(|_| AtomicU64::new(0)).collect())
    }
}

impl<W: std::ops::Deref<Target = [AtomicU64]>> PageTable<W> {
    /// A table over `words`, which must all be 0 (every page invalid).
    pub fn over(words: W) -> PageTable<W> {
        PageTable { words }
    }

    /// The current state of `page` (without locking; for statistics and fast checks).
    pub fn peek(&self, page: usize) -> State {
        State(self.words[page].load(Ordering::Acquire) & !BUSY)
    }

    /// Whether a thread holds `page` locked now.
    pub fn is_locked(&self, page: usize) -> bool {
        self.words[page].load(Ordering::Acquire) & BUSY != 0
    }

    /// Locks `page`, waiting for another thread that holds it.
    pub fn lock(&self, page: usize) -> PageGuard<'_> {
        let word = &self.words[page];
        let mut spins = 0u32;
        loop {
            let cur = word.load(Ordering::Relaxed);
            if cur & BUSY == 0
                && word
                    .compare_exchange_weak(cur, cur | BUSY, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return PageGuard {
                    word,
                    state: State(cur),
                    page,
                };
            }
            spins = spins.wrapping_add(1);
            pause(spins);
        }
    }

    /// Locks `page` if nobody holds it.
    pub fn try_lock(&self, page: usize) -> Option<PageGuard<'_>> {
        let word = &self.words[page];
        let cur = word.load(Ordering::Relaxed);
        if cur & BUSY != 0 {
            return None;
        }
        word.compare_exchange(cur, cur | BUSY, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| PageGuard {
                word,
                state: State(cur),
                page,
            })
    }

    /// Unlocks a page kept locked with [`PageGuard::keep_locked`], storing `state`.
    pub fn unlock_kept(&self, page: usize, state: State) {
        self.words[page].store(state.0 & !BUSY, Ordering::Release);
    }

    /// Resets `count` pages from `page` to the initial state (when an allocation is freed).
    pub fn reset(&self, page: usize, count: usize) {
        for w in &self.words[page..page + count] {
            w.store(0, Ordering::Release);
        }
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

impl PageGuard<'_> {
    /// The state as of locking (and as changed since).
    pub fn state(&self) -> State {
        self.state
    }

    /// Changes the state; stored when the guard drops.
    pub fn set(&mut self, s: State) {
        self.state = State(s.0 & !BUSY);
    }

    /// Leaves the page locked past the guard (for an operation that completes later, such as
    /// a prefetch in flight) and returns its state. Whoever completes the operation unlocks it
    /// with [`PageTable::unlock_kept`]; until then every [`PageTable::lock`] of it waits.
    pub fn keep_locked(self) -> State {
        let state = self.state;
        std::mem::forget(self);
        state
    }
}

impl Drop for PageGuard<'_> {
    fn drop(&mut self) {
        self.word.store(self.state.0 & !BUSY, Ordering::Release);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn state_bits() {
        let s = State(0).with_cache(Cache::Writable).with(REG_READER);
        assert_eq!(s.cache(), Cache::Writable);
        assert!(s.has(REG_READER) && !s.has(REG_WRITER));
        assert_eq!(s.with_cache(Cache::Invalid).cache(), Cache::Invalid);
        assert!(
            s.with_cache(Cache::Invalid).has(REG_READER),
            "registration survives invalidation"
        );
    }

    #[test]
    fn the_page_lock_serialises_updates() {
        let t = PageTable::new(2);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        let mut g = t.lock(1);
                        let n = g.state().0 + (1 << 8);
                        g.set(State(n));
                    }
                });
            }
        });
        assert_eq!(t.peek(1).0 >> 8, 4000);
        assert_eq!(t.peek(0).0, 0);
    }
}

/// Loom models of the page-state transitions that run concurrently inside a node. Run with
/// `RUSTFLAGS="--cfg loom" cargo test -p dsm-core --lib loom` (what `scripts/test.sh` does).
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;

    /// Two threads that both lock a page and change its state: neither update is lost, the
    /// lock is free afterwards, and a reader never sees the lock bit.
    #[test]
    fn concurrent_updates_of_one_page_are_serialised() {
        loom::model(|| {
            let t = Arc::new(PageTable::new(1));
            let handles: Vec<_> = (0..2)
                .map(|i| {
                    let t = Arc::clone(&t);
                    loom::thread::spawn(move || {
                        let mut g = t.lock(0);
                        let s = g.state().with(if i == 0 { REG_READER } else { REG_WRITER });
                        g.set(s.with_cache(Cache::ReadOnly));
                        assert!(!t.peek(0).has(BUSY));
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let s = t.peek(0);
            assert!(
                s.has(REG_READER) && s.has(REG_WRITER),
                "an update was lost: {s:?}"
            );
            assert_eq!(s.cache(), Cache::ReadOnly);
            assert!(t.try_lock(0).is_some(), "the page lock leaked");
        });
    }

    /// A prefetch in flight keeps its page locked past the guard (`keep_locked`), listed
    /// under the list's lock; a faulting thread that finds the page locked installs the run
    /// itself when it is listed (as `Inner::lock_page` does) instead of waiting for the thread
    /// that posted it. Whatever the interleaving, the fault gets the page, and once the run is
    /// installed (as the next acquire would) nobody holds it.
    #[test]
    fn a_page_kept_locked_is_released_by_whoever_installs_its_run() {
        loom::model(|| {
            let t = Arc::new(PageTable::new(1));
            let list = Arc::new(loom::sync::Mutex::new(Vec::<State>::new()));
            let install = |t: &PageTable, list: &loom::sync::Mutex<Vec<State>>| -> bool {
                let taken = list.lock().unwrap().pop();
                match taken {
                    Some(st) => {
                        t.unlock_kept(0, st.with(PREFETCHED).with_cache(Cache::ReadOnly));
                        true
                    }
                    None => false,
                }
            };
            let (t2, l2) = (Arc::clone(&t), Arc::clone(&list));
            let prefetch = loom::thread::spawn(move || {
                let mut listed = l2.lock().unwrap();
                if let Some(g) = t2.try_lock(0) {
                    if g.state().cache() == Cache::Invalid {
                        listed.push(g.keep_locked());
                    }
                }
            });
            let mut spins = 0u32;
            let g = loop {
                if let Some(g) = t.try_lock(0) {
                    break g;
                }
                if !install(&t, &list) {
                    spins += 1;
                    pause(spins);
                }
            };
            let seen = g.state();
            drop(g);
            prefetch.join().unwrap();
            install(&t, &list);
            assert!(!t.is_locked(0), "a page stayed locked");
            assert!(list.lock().unwrap().is_empty());
            if seen.has(PREFETCHED) {
                assert_eq!(seen.cache(), Cache::ReadOnly);
            }
        });
    }

    /// A prefetching thread's `try_lock` and a faulting thread's `lock` never both hold the page,
    /// and the fault sees the prefetch's result (or the prefetch sees the fault's).
    #[test]
    fn try_lock_and_lock_exclude_each_other() {
        loom::model(|| {
            let t = Arc::new(PageTable::new(1));
            let t2 = Arc::clone(&t);
            let prefetch = loom::thread::spawn(move || {
                if let Some(mut g) = t2.try_lock(0) {
                    if g.state().cache() == Cache::Invalid {
                        g.set(g.state().with_cache(Cache::ReadOnly));
                        return true;
                    }
                }
                false
            });
            let mut g = t.lock(0);
            let fetched_here = g.state().cache() == Cache::Invalid;
            if fetched_here {
                g.set(g.state().with_cache(Cache::Writable));
            }
            drop(g);
            let prefetched = prefetch.join().unwrap();
            // Exactly one of them found the page invalid and filled it.
            assert_ne!(fetched_here, prefetched);
            let end = t.peek(0).cache();
            assert_ne!(end, Cache::Invalid);
            if prefetched && !fetched_here {
                assert_eq!(end, Cache::ReadOnly);
            }
        });
    }
}
