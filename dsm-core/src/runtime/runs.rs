//! Prefetched runs: posting them, installing them when a thread needs one of their pages, and
//! counting their pages used or wasted (the policy itself is [`crate::coherence::prefetch`]).

use super::*;
use crate::coherence::machine::{Action, Input, Why};
use crate::coherence::NodeSet;

/// Prefetched runs kept in flight beyond the one a sequential reader is consuming.
pub(super) const RUNS_AHEAD: usize = 2;

/// A run of prefetched pages whose data is on its way: the pages stay locked (with their
/// states as of locking) until [`Inner::install`] waits for the data and opens them.
#[derive(Debug)]
pub(super) struct Inflight {
    pub(super) first: usize,
    pub(super) states: Vec<State>,
    /// The batch buffer receiving the run's directory entries (taken out of the free list).
    pub(super) batch: usize,
    pub(super) done: Vec<Completion>,
    /// [`Inner::acquires`] when the run was posted: see [`Inner::install`].
    pub(super) acquires: u64,
}

impl Inflight {
    pub(super) fn holds(&self, page: usize) -> bool {
        (self.first..self.first + self.states.len()).contains(&page)
    }
}

impl Inner {
    /// Locks `page`; when a prefetch in flight holds it, installs that prefetch first (so that
    /// no thread waits for a run nobody completes).
    pub(super) fn lock_page(&self, page: usize) -> Result<PageGuard<'_>> {
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
    pub(super) fn finish_prefetches(&self, page: Option<usize>) -> Result<bool> {
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
    pub(super) fn install(&self, w: Inflight) -> Result<()> {
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
        let mut steps = Vec::with_capacity(n);
        for (i, st) in w.states.into_iter().enumerate() {
            // Row R2.
            let page = w.first + i;
            let writers = NodeSet::from_word(entries.word(i * DIR_ENTRY / 8 + 1));
            let step = self.machine.step(
                st,
                Input::Installed {
                    writers,
                    first_of_run: i == 0,
                },
            );
            for a in step.actions.as_slice() {
                match a {
                    Action::TrackSharer => {
                        lock(&self.sharers).insert(page);
                    }
                    _ => unreachable!("installing a prefetched page never takes {a:?}"),
                }
            }
            steps.push(step);
        }
        // An acquire begun since the run was posted may have found these pages still locked
        // and in flight (nothing to invalidate) while their data predates what it must see:
        // a page others write is dropped again (the sharers are checked after the pages went
        // in, and an acquire counts itself before it takes them, so one of the two sees the
        // other).
        let stale = self.acquires.load(Ordering::SeqCst) != w.acquires;
        let mut dropped = 0;
        for (i, step) in steps.into_iter().enumerate() {
            let page = w.first + i;
            let mut next = step.next;
            if stale && lock(&self.sharers).contains(&page) {
                // Rows A1 on a prefetched copy: its view never opened, so nothing to unmap.
                next = self
                    .machine
                    .step(next, Input::Invalidate(Why::Acquire))
                    .next;
                dropped += 1;
            }
            self.pages.unlock_kept(page, next);
        }
        self.note_wasted(dropped);
        self.stats
            .pages_fetched
            .fetch_add(n as u64, Ordering::Relaxed);
        self.stats.prefetched.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Counts `n` prefetched pages the application touched, and lets the prefetch window grow
    /// back by as many.
    pub(super) fn note_used(&self, n: usize) {
        self.stats
            .prefetched_used
            .fetch_add(n as u64, Ordering::Relaxed);
        lock(&self.prefetch).on_used(n);
    }

    /// Counts `n` prefetched pages dropped untouched by one event, and shrinks the prefetch
    /// window: prefetching stops when it does not pay.
    pub(super) fn note_wasted(&self, n: usize) {
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
    ///
    /// A strided pattern (see [`prefetch`]) prefetches its next pages, each its own run of one
    /// page (as many as there are free batch buffers).
    pub(super) fn prefetch_after(&self, page: usize) -> Result<Vec<usize>> {
        let expected = self.next_expected.swap(page + 1, Ordering::Relaxed);
        let ahead = lock(&self.prefetch).plan(page, page == expected);
        match ahead {
            prefetch::Ahead::Nothing => Ok(Vec::new()),
            prefetch::Ahead::Run { from, pages } => self.post_run(from, pages),
            prefetch::Ahead::Strided {
                from,
                stride,
                pages,
            } => {
                let pages: Vec<usize> = (0..pages)
                    .map_while(|i| from.checked_add(i.checked_mul(stride)?))
                    .take_while(|&q| q < self.pages.len())
                    .collect();
                self.post_pages(&pages)
            }
        }
    }

    /// At the first touch of `page`, the first page of a prefetched run ([`RUN_START`]): the
    /// application is consuming that run sequentially, so the runs that follow are posted now,
    /// up to [`RUNS_AHEAD`] runs beyond this one, to land while it consumes this one (no remote
    /// fault at the end of a run, no wait for the next). Returns the pages posted.
    pub(super) fn prefetch_ahead(&self, page: usize) -> Result<Vec<usize>> {
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

    /// Posts the prefetch of `pages`, each a run of one page (for [`Inner::post_run`]: its
    /// registration, entry and content), every operation in one batch (one message per peer
    /// where the backend can). Pages that are valid, busy, unallocated or homed here are left
    /// out, and so are the last ones when the batch buffers run out. Returns the pages posted.
    pub(super) fn post_pages(&self, pages: &[usize]) -> Result<Vec<usize>> {
        // Before the data is read: see `install`.
        let acquires = self.acquires.load(Ordering::SeqCst);
        let me = NodeSet::addend(self.machine.me()).map_err(|e| Error::Config(e.to_string()))?;
        // Held from before the pages are locked until their runs are on the list (`post_run`).
        let mut inflight = lock(&self.inflight);
        let mut ops = Vec::with_capacity(3 * pages.len());
        let mut runs = Vec::with_capacity(pages.len());
        for &q in pages {
            if self.pages.peek(q).cache() != Cache::Invalid || self.entry(q) == 0 {
                continue;
            }
            let (home, manager) = self.home_of(q)?;
            if home == self.me {
                continue;
            }
            let Some(entries) = self.try_batch() else {
                break;
            };
            let g = match self.pages.try_lock(q) {
                Some(g) if g.state().cache() == Cache::Invalid => g,
                _ => continue,
            };
            let first = ops.len();
            if !g.state().has(REG_READER) {
                ops.push(Op::FetchAdd {
                    remote: self.dir_word(manager, q, Field::Readers)?,
                    add: me,
                });
            }
            ops.push(Op::Read {
                remote: self.dirs[manager].slice((q * DIR_ENTRY) as u64, DIR_ENTRY)?,
                local: entries.slice(DIR_ENTRY)?,
            });
            ops.push(Op::Read {
                remote: self.homes[home].slice((q * PAGE) as u64, PAGE)?,
                local: self.runtime_slice(q * PAGE, PAGE)?,
            });
            runs.push((g, entries, ops.len() - first));
        }
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        let mut done = self.post_batch(ops)?.into_iter();
        let mut posted = Vec::with_capacity(runs.len());
        for (g, entries, n) in runs {
            let first = g.page;
            let batch = entries.slot;
            std::mem::forget(entries);
            inflight.push(Inflight {
                first,
                states: vec![g.keep_locked()],
                batch,
                done: done.by_ref().take(n).collect(),
                acquires,
            });
            posted.push(first);
        }
        Ok(posted)
    }

    /// Posts the prefetch of up to `window` pages from `from`: the invalid, allocated pages
    /// that follow with one home and manager. Per page, the reader registration; for the whole
    /// run, one read of the directory entries and one of the content. The pages stay locked
    /// until [`Inner::install`] (by whichever thread needs them first) opens them. Returns the
    /// pages posted.
    pub(super) fn post_run(&self, from: usize, window: usize) -> Result<Vec<usize>> {
        if window == 0 {
            return Ok(Vec::new());
        }
        // Before the data is read: see `install`.
        let acquires = self.acquires.load(Ordering::SeqCst);
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
        let me = NodeSet::addend(self.machine.me()).map_err(|e| Error::Config(e.to_string()))?;
        // The run's reader registrations: one message where the backend can (tcp), when every
        // page of the run needs one (the usual case); else one fetch-and-add per page.
        if guards.iter().all(|g| !g.state().has(REG_READER)) {
            let first = self.dir_word(manager, guards[0].page, Field::Readers)?;
            posted.extend(self.t.add_strided(first, DIR_ENTRY as u64, n as u32, me)?);
        } else {
            for g in guards.iter().filter(|g| !g.state().has(REG_READER)) {
                let remote = self.dir_word(manager, g.page, Field::Readers)?;
                posted.push(self.post(Op::FetchAdd { remote, add: me })?);
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
            acquires,
        });
        drop(inflight);
        self.next_expected.store(first + n, Ordering::Relaxed);
        Ok(pages)
    }
}
