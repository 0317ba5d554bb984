//! Release, acquire and eviction: writing diffs home, invalidating what other nodes wrote,
//! keeping the cache of remote copies under its bound, and forgetting freed pages.

use super::resolve::access;
use super::*;
use crate::coherence::machine::{Action, Home, Input, Step, View, Why};
use transport::RunsWrite;

/// The mapping change a closing step makes, as `(from, to)` for [`GlobalSpace::set_access`].
fn view_change(step: &Step) -> Option<(Access, Access)> {
    if step.actions.contains(Action::Unmap) {
        // (Closing ignores what the view allowed before.)
        Some((Access::None, Access::None))
    } else if step.actions.contains(Action::WriteProtect) {
        Some((access(View::ReadWrite), access(View::Read)))
    } else {
        None
    }
}

/// The copies of remote pages this node holds, oldest first, each page at most once.
#[derive(Debug, Default)]
pub(super) struct CacheQueue {
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

impl Inner {
    /// Closes `pages` for `input`: a release ([`Input::Release`], row L1: written pages become
    /// read-only and their diffs go home) or an invalidation ([`Input::Invalidate`], rows A1,
    /// A2, E1: copies are closed, written ones send their diffs first). Pages are locked in
    /// ascending order and closed with one `mprotect` per run of consecutive pages: each
    /// `mprotect` that removes a permission costs a TLB shootdown, which on a virtual machine is
    /// expensive. Returns how many pages it changed.
    pub(crate) fn close_and_write_back(&self, pages: Vec<usize>, input: Input) -> Result<usize> {
        self.close_pages(pages, input, false, None)
    }

    /// [`Inner::close_and_write_back`]; with `skip_busy`, pages another thread holds are left
    /// alone instead of waited for (eviction). The diffs for node `trusted` are not waited for
    /// but kept in `unconfirmed` (see [`Inner::release_toward`]); every earlier such diff is
    /// waited for first, so that what this call writes back is at home, with everything
    /// written back before it, when it returns.
    pub(super) fn close_pages(
        &self,
        mut pages: Vec<usize>,
        input: Input,
        skip_busy: bool,
        trusted: Option<usize>,
    ) -> Result<usize> {
        self.confirm_written()?;
        pages.sort_unstable();
        pages.dedup();
        // A page homed here holds the home's copy: never dirty (nothing to write back), never
        // stale (nothing to invalidate), never evicted (row H3).
        pages.retain(|&p| !self.homed_here(p));
        let mut guards: Vec<(PageGuard<'_>, Step)> = Vec::with_capacity(pages.len());
        for p in pages {
            let g = if skip_busy {
                self.pages.try_lock(p)
            } else {
                Some(self.lock_page(p)?)
            };
            if let Some(g) = g {
                let step = self.machine.step(g.state(), input);
                if let (Some(prof), Input::Invalidate(Why::Acquire | Why::Overflow)) =
                    (self.profile.on(), input)
                {
                    if !step.actions.is_empty() {
                        prof.invalidated(p);
                    }
                }
                if !step.actions.is_empty() {
                    guards.push((g, step));
                }
            }
        }
        // Close first, so that no thread of this process writes while we diff: one mapping
        // change per run of consecutive pages that take the same one.
        let mut i = 0;
        while i < guards.len() {
            let (start, close) = (guards[i].0.page, view_change(&guards[i].1));
            let mut n = 1;
            while i + n < guards.len()
                && guards[i + n].0.page == start + n
                && view_change(&guards[i + n].1) == close
            {
                n += 1;
            }
            if let Some((from, to)) = close {
                self.space.set_access(start, n, from, to)?;
            }
            i += n;
        }
        let mut posted = Vec::new();
        let mut deferred = Vec::new();
        let mut now = vec![0u8; PAGE];
        let mut wasted = 0;
        // The diffs, posted together once all are made (tcp: a few system calls, not one per
        // page), with the home of each.
        let mut diffs = Vec::new();
        let mut homes = Vec::new();
        for (g, step) in &mut guards {
            for a in step.actions.as_slice() {
                match a {
                    Action::WriteProtect | Action::Unmap => {}
                    Action::WriteDiff => {
                        let (home, write) = self.diff_of(g.page, &mut now)?;
                        homes.push(home);
                        diffs.push(write);
                    }
                    Action::CountWasted => wasted += 1,
                    _ => unreachable!("closing a page never takes {a:?}"),
                }
            }
            g.set(step.next);
        }
        if !diffs.is_empty() {
            for (home, done) in homes.into_iter().zip(self.t.write_runs_batch(&diffs)?) {
                if Some(home) == trusted {
                    deferred.extend(done);
                } else {
                    posted.extend(done);
                }
            }
            self.stats
                .diffs
                .fetch_add(diffs.len() as u64, Ordering::Relaxed);
        }
        let changed = guards.len();
        self.note_wasted(wasted);
        // The pages stay locked until their diffs are at home: a release that finds one of them
        // in its dirty list must not return (and let another node read the home) before then.
        let waited = wait_all(&posted);
        drop(guards);
        lock(&self.unconfirmed).extend(deferred);
        waited?;
        Ok(changed)
    }

    /// Waits for the diffs a release toward a lock's home left unconfirmed
    /// ([`Inner::release_toward`]).
    fn confirm_written(&self) -> Result<()> {
        let unconfirmed = std::mem::take(&mut *lock(&self.unconfirmed));
        Ok(wait_all(&unconfirmed)?)
    }

    /// The diff of `page` against its twin (the whole page when it has none), as a write to
    /// its home's copy; with the home. `now` is scratch space of a page. The page must be
    /// closed (no thread writes it) until the write is posted: the bytes are read then.
    fn diff_of(&self, page: usize, now: &mut [u8]) -> Result<(usize, RunsWrite)> {
        let twin = lock(&self.twins).remove(&page);
        let (home, _) = self.home_of(page)?;
        self.runtime.read_at(page * PAGE, now)?;
        let runs = match &twin {
            Some(t) => diff(now, t),
            None => vec![crate::coherence::diff::Run {
                offset: 0,
                len: PAGE,
            }],
        };
        let bytes: usize = runs.iter().map(|r| r.len).sum();
        if let Some(p) = self.profile.on() {
            p.diff(page, &runs);
        }
        self.stats
            .bytes_written_home
            .fetch_add(bytes as u64, Ordering::Relaxed);
        let write = RunsWrite {
            remote: self.homes[home].slice((page * PAGE) as u64, PAGE)?,
            local: self.runtime_slice(page * PAGE, PAGE)?,
            runs: runs
                .iter()
                .map(|r| (r.offset as u32, r.len as u32))
                .collect(),
        };
        Ok((home, write))
    }

    /// Records a fetched copy of a remote page, and evicts the oldest copies when the cache is
    /// over its bound: clean ones are dropped, dirty ones written home first, and their memory
    /// is given back.
    pub(super) fn account_cached(&self, pages: impl IntoIterator<Item = usize>) -> Result<()> {
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
        let n = self.close_pages(victims.clone(), Input::Invalidate(Why::Evict), true, None)?;
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
    ///
    /// A node's threads share one dirty list, so a thread's writes may be in a list another
    /// thread's release took and is still writing back: releases are serialized
    /// (`release_gate`), so that a release returns only after every release begun before it
    /// (its writes to a page another thread was writing back are in that page's diff).
    pub(crate) fn release(&self) -> Result<()> {
        self.release_toward(None)
    }

    /// [`Inner::release`], before an operation on node `lock_home` that lets others see this
    /// release (an unlock's fetch-and-add on `serving`): the diffs for that node are posted and
    /// not waited for when the transport executes a peer's operations in order, atomics after
    /// writes ([`transport::Capabilities::ordered_atomics`]), since whoever sees the
    /// operation's effect then sees them too. They are waited for at the start of the node's
    /// next release, write-back or eviction (any of which may let another node see them by
    /// another path), and a failure shows there. Over tcp this takes the wait for a round trip
    /// out of every unlock of a lock homed with the data it protects.
    pub(crate) fn release_toward(&self, lock_home: Option<usize>) -> Result<()> {
        let trusted = lock_home.filter(|&h| h != self.me && self.ordered_atomics);
        let _gate = lock(&self.release_gate);
        let start = Instant::now();
        // The application's stores to pages homed here are already in the home's copy: order
        // them before whatever follows the release (the operations that let others see them).
        std::sync::atomic::fence(Ordering::SeqCst);
        let dirty = std::mem::take(&mut *lock(&self.dirty));
        // The notices of the writes this release publishes go out with it (`notices.rs`).
        self.flush_notices()?;
        self.close_pages(dirty, Input::Release, false, trusted)?;
        let ns = start.elapsed().as_nanos() as u64;
        self.stats.release_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some(p) = self.profile.on() {
            p.release(ns);
        }
        Ok(())
    }

    /// Acquire: invalidates every cached page that another node writes.
    ///
    /// The notifications are taken from the node's log once, by whichever thread acquires
    /// first: acquires are serialized (`acquire_gate`), so that an acquire returns only after
    /// the invalidations of every acquire begun before it (which may have taken the
    /// notifications this one must honour) are done.
    pub(crate) fn acquire(&self) -> Result<()> {
        self.acquire_carrying(None)
    }

    /// [`Inner::acquire`] after taking a lock whose page came with its grant (`carry`): that
    /// page, locked by the caller, is closed and given its carried copy here (row K1) instead
    /// of being closed with the others.
    pub(crate) fn acquire_carrying(&self, mut carried: Option<carry::Carry<'_>>) -> Result<()> {
        // The gate comes before page locks: a thread that must wait for it lets the carried
        // page go first (another acquire may need that page, and the copy would be dropped
        // after it anyway).
        let _gate = match self.acquire_gate.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                carried = None;
                lock(&self.acquire_gate)
            }
        };
        let start = Instant::now();
        // A run prefetched before this acquire may hold data older than what it must see: it is
        // installed first, so that the invalidations below cover it.
        self.finish_prefetches(None)?;
        // Before the tracked pages are taken: a fault or a prefetch whose data was on its way
        // meanwhile fetches or drops its page again (`resolve`, `install`).
        let acquires_now = self.acquires.fetch_add(1, Ordering::SeqCst) + 1;
        let full = self.drain_log(&mut carried);
        let spared = Inner::carried_page(&carried);
        let mut victims: Vec<usize> = if full {
            lock(&self.sharers).clear();
            (0..self.pages.len())
                .filter(|&p| self.pages.peek(p).cache() != Cache::Invalid && !self.homed_here(p))
                .collect()
        } else {
            lock(&self.sharers).drain().collect()
        };
        victims.retain(|&p| Some(p) != spared);
        let why = if full { Why::Overflow } else { Why::Acquire };
        let n = self.close_and_write_back(victims, Input::Invalidate(why))?;
        self.stats
            .invalidations
            .fetch_add(n as u64, Ordering::Relaxed);
        if let Some(c) = carried {
            self.install_carried(c, acquires_now)?;
        }
        let ns = start.elapsed().as_nanos() as u64;
        self.stats.acquire_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some(p) = self.profile.on() {
            p.acquire(ns);
        }
        Ok(())
    }

    /// Takes the notifications that arrived since the last acquire and marks their pages as
    /// written by others. Returns true when the log overflowed (every cached page must go).
    ///
    /// A slot reserved but not written yet belongs to a release still under way (a release
    /// ends only when its notices are in the logs): it is remembered as a hole and looked at
    /// again by the next acquires, while the slots after it, which later releases may have
    /// filled, are taken now.
    pub(super) fn drain_log(&self, carried: &mut Option<carry::Carry<'_>>) -> bool {
        let spared = Inner::carried_page(carried);
        let mut cursor = lock(&self.log_consumed);
        let Ok(tail) = self.log.atomic_u64(0).map(|w| w.load(Ordering::Acquire)) else {
            return true;
        };
        let oldest = cursor.holes.first().copied().unwrap_or(cursor.consumed);
        if tail.saturating_sub(oldest) > LOG_CAP as u64 {
            cursor.consumed = tail;
            cursor.holes.clear();
            return true;
        }
        let from = cursor.consumed;
        let mut holes = std::mem::take(&mut cursor.holes);
        holes.extend(from..tail);
        cursor.consumed = tail.max(from);
        for ticket in holes {
            let at = 8 + (ticket as usize % LOG_CAP) * 8;
            let Ok(word) = self.log.atomic_u64(at) else {
                return true;
            };
            let v = word.swap(0, Ordering::AcqRel);
            if v == 0 {
                cursor.holes.push(ticket);
                continue;
            }
            let page = v as usize - 1;
            if Some(page) == spared {
                // Locked by this thread for the acquire: its state is changed in place.
                if let Some(c) = carried.as_mut() {
                    self.notify_carried(c);
                }
            } else if page < self.pages.len() {
                let Ok(mut g) = self.lock_page(page) else {
                    return true;
                };
                // Row N1.
                let home = Home::here_if(self.homed_here(page));
                let step = self.machine.step(g.state(), Input::Notified { home });
                if step.actions.contains(Action::TrackSharer) {
                    lock(&self.sharers).insert(page);
                }
                g.set(step.next);
            }
        }
        false
    }

    /// Forgets everything about `count` pages from `page` (their allocation was freed).
    pub(super) fn reset_pages(&self, page: usize, count: usize) -> Result<()> {
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
}
