//! The fault path, as the executor of [`crate::coherence::machine`]: a fault on a page feeds
//! the machine, and the actions it answers with become transport operations (registrations in
//! the page's directory entry, the fetch of the page, notifications of the other sharers) and
//! mapping changes. This is the only place a fault posts.

use super::*;
use crate::coherence::machine::{Action, Home, Input, Step, View, Wait};
use crate::coherence::page::REG_WRITER;
use crate::coherence::{DirEntry, NodeSet};

/// What the application view allows, as the mapping layer says it.
pub(super) fn access(v: View) -> Access {
    match v {
        View::None => Access::None,
        View::Read => Access::Read,
        View::ReadWrite => Access::ReadWrite,
    }
}

/// Whether a page homed here takes its first write here: invalid, and not registered as
/// written by this node.
fn fresh_home_page(st: State) -> bool {
    st.cache() == Cache::Invalid && !st.has(REG_WRITER)
}

/// Whether a step only populates its page and opens it read-write from nothing (the last step
/// of H2 from Invalid).
fn opens_populated(step: &Step) -> bool {
    step.actions.as_slice()
        == [
            Action::Populate,
            Action::Map {
                from: View::None,
                to: View::ReadWrite,
            },
        ]
}

/// The operations one step posted, and where their answers land.
struct Posted<'a> {
    done: Vec<Completion>,
    /// The scratch slot the directory entry is read into.
    entry: Option<Scratch<'a>>,
    /// The index in `done` of the writer registration (its result: the old writers).
    writer: Option<usize>,
}

impl Inner {
    /// Resolves a fault at `addr`: makes the page readable, or writable for a write.
    pub(crate) fn resolve(&self, addr: usize, write: bool) -> Result<()> {
        let start = Instant::now();
        let page = self.space.page_of(addr);
        let mut g = self.lock_page(page)?;
        let home_here = match g.state().cache() {
            // (Chooses the home of a first-touch page nobody touched yet.)
            Cache::Invalid => self.home_of(page)?.0 == self.me,
            _ => self.homed_here(page),
        };
        let home = Home::here_if(home_here);
        // Profiling: a home's first write to a page keeps its content (see `crate::profile`).
        let home_copy = match self.profile.on() {
            Some(p) if write && home_here && p.wants_home_copy(page) => {
                let mut copy = vec![0u8; PAGE].into_boxed_slice();
                self.runtime.read_at(page * PAGE, &mut copy)?;
                Some(copy)
            }
            _ => None,
        };
        // A first write here to a page homed here: the start or continuation of a stream (H4).
        let home_stream = write && home_here && fresh_home_page(g.state());
        // Pages this fault brought in (the faulting one, and prefetched runs posted).
        let mut fresh = Vec::new();
        self.steps(&mut g, write, home, &mut fresh, false)?;
        drop(g);
        if home_stream {
            self.write_ahead(page)?;
        }
        if !fresh.is_empty() {
            self.account_cached(fresh)?;
        }
        let ns = start.elapsed().as_nanos() as u64;
        self.stats.fault_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some(p) = self.profile.on() {
            p.fault(page, write, ns, home_copy);
        }
        let counter = if write {
            &self.stats.write_faults
        } else {
            &self.stats.read_faults
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Row H4: after a first write fault on a page homed here that continues a stream of them
    /// ([`stream`]), opens the window's worth of the following pages for writing as their own
    /// faults would (H2: writer registration, notices kept for their readers, the memory
    /// populated, the view read-write), without their faults. Only pages that are allocated,
    /// homed and managed here (their registrations are local), invalid, not yet registered as
    /// written here and not busy are opened; the first that is not ends the window.
    fn write_ahead(&self, page: usize) -> Result<()> {
        let window = lock(&self.home_stream).on_fault(page);
        if window == 0 {
            return Ok(());
        }
        let last = (page + window).min(self.pages.len().saturating_sub(1));
        let end = (page + 1..=last)
            .take_while(|&q| {
                let e = self.entry(q);
                entry_home(e) == Some(self.me)
                    && entry_manager(e) == Some(self.me)
                    && fresh_home_page(self.pages.peek(q))
            })
            .last();
        let mut opened = 0;
        if let Some(end) = end {
            // The memory of the whole window in one call, and its view opened in one call
            // (per run of pages whose last step was left to it) while their locks are held.
            self.populate_run(page + 1, end - page)?;
            let mut none = Vec::new();
            let mut held = Vec::with_capacity(end - page);
            let mut to_map: Option<(usize, usize)> = None;
            for q in page + 1..=end {
                let Some(mut g) = self.pages.try_lock(q) else {
                    break;
                };
                if !fresh_home_page(g.state()) {
                    break;
                }
                if let Some(p) = self.profile.on().filter(|p| p.wants_home_copy(q)) {
                    let mut copy = vec![0u8; PAGE].into_boxed_slice();
                    self.runtime.read_at(q * PAGE, &mut copy)?;
                    p.opened_ahead(q, copy);
                }
                if self.steps(&mut g, true, Home::Here, &mut none, true)? {
                    to_map = match to_map {
                        Some((first, n)) if first + n == q => Some((first, n + 1)),
                        other => {
                            self.open_writable(other)?;
                            Some((q, 1))
                        }
                    };
                }
                held.push(g);
                opened += 1;
            }
            self.open_writable(to_map)?;
            drop(held);
        }
        lock(&self.home_stream).opened(page, opened);
        self.stats
            .home_written_ahead
            .fetch_add(opened as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Maps `count` pages from `first` (when given) read-write in the application view: the
    /// last step of H2 for pages whose memory is populated already.
    fn open_writable(&self, run: Option<(usize, usize)>) -> Result<()> {
        match run {
            Some((first, count)) => {
                self.space
                    .set_access(first, count, Access::None, Access::ReadWrite)
            }
            None => Ok(()),
        }
    }

    /// Feeds a fault on the page `g` holds to the machine and takes its steps until the page
    /// allows the access. With `defer_open`, a last step that only populates the page and
    /// maps it read-write (H2's) is left to the caller, which has populated it and maps it
    /// with its neighbours: returns whether it was.
    fn steps(
        &self,
        g: &mut PageGuard<'_>,
        write: bool,
        home: Home,
        fresh: &mut Vec<usize>,
        defer_open: bool,
    ) -> Result<bool> {
        let page = g.page;
        let fault = Input::Fault { write, home };
        let mut input = fault;
        // An acquire that begins while this fault's fetch is on its way may find nothing to
        // invalidate (the page is not cached yet) and let its thread read the copy this fetch
        // installs, which may predate the writes that acquire must see: see `Wait::Fetch`.
        let acquires = self.acquires.load(Ordering::SeqCst);
        loop {
            let step = self.machine.step(g.state(), input);
            if defer_open && step.wait.is_none() && opens_populated(&step) {
                g.set(step.next);
                return Ok(true);
            }
            let posted = self.execute(g, &step, fresh)?;
            g.set(step.next);
            input = match step.wait {
                None => break,
                Some(Wait::Fetch) => {
                    let (entry, old_writers) = self.answers(posted)?;
                    self.stats.pages_fetched.fetch_add(1, Ordering::Relaxed);
                    let mut fetched = Input::Fetched {
                        write,
                        entry,
                        old_writers,
                    };
                    // A copy others write is tracked (invalidated at this node's acquires)
                    // before it is opened; and it is fetched again when an acquire began
                    // meanwhile: that acquire counted itself before it took the tracked pages,
                    // and the page is tracked before the count is read, so either the acquire
                    // sees the page (and invalidates it once this fault lets go of it) or this
                    // fault sees the acquire (and its data goes to the home again, after the
                    // lock that acquire follows was granted).
                    let next = self.machine.step(g.state(), fetched);
                    if next.actions.contains(Action::TrackSharer) {
                        lock(&self.sharers).insert(page);
                        if self.acquires.load(Ordering::SeqCst) != acquires {
                            fetched = Input::Fetched {
                                write,
                                entry: self.refetch(page)?,
                                old_writers,
                            };
                            self.stats.pages_fetched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    fetched
                }
                Some(Wait::WriterRegistration) => {
                    let (entry, old_writers) = self.answers(posted)?;
                    let registered = self.machine.step(
                        g.state(),
                        Input::WriterRegistered {
                            entry,
                            old_writers: old_writers.unwrap_or_default(),
                            home,
                        },
                    );
                    self.execute(g, &registered, fresh)?;
                    g.set(registered.next);
                    // Registered now: the fault completes in one step.
                    fault
                }
            };
        }
        Ok(false)
    }

    /// Reads `page`'s directory entry and content from their homes again (the fault's
    /// registrations are in already); returns the entry.
    fn refetch(&self, page: usize) -> Result<DirEntry> {
        let (home, manager) = self.home_of(page)?;
        let entry = self.scratch()?;
        let done = self.post_batch(vec![
            Op::Read {
                remote: self.dirs[manager].slice((page * DIR_ENTRY) as u64, 16)?,
                local: entry.pair()?,
            },
            Op::Read {
                remote: self.homes[home].slice((page * PAGE) as u64, PAGE)?,
                local: self.runtime_slice(page * PAGE, PAGE)?,
            },
        ])?;
        wait_all(&done)?;
        Ok(DirEntry::from_words(entry.word(0), entry.word(1)))
    }

    /// Waits for what a step posted: the directory entry, and the old writers when this node
    /// registered as a writer.
    fn answers(&self, posted: Posted<'_>) -> Result<(DirEntry, Option<NodeSet>)> {
        wait_all(&posted.done)?;
        let old_writers = match posted.writer {
            Some(i) => Some(NodeSet::from_word(posted.done[i].wait()?)),
            None => None,
        };
        let entry = posted
            .entry
            .map(|e| DirEntry::from_words(e.word(0), e.word(1)))
            .unwrap_or_default();
        Ok((entry, old_writers))
    }

    /// Takes a fault step's actions, in order. The remote operations (registrations, the
    /// entry, the page) are posted together, those to one peer in one message where the
    /// backend can, registrations before the entry's read on the same connection, so the read
    /// sees them; the prefetch a read calls for goes out in the same round.
    fn execute<'a>(
        &'a self,
        g: &mut PageGuard<'_>,
        step: &Step,
        fresh: &mut Vec<usize>,
    ) -> Result<Posted<'a>> {
        let page = g.page;
        let mut ops = Vec::with_capacity(4);
        let mut posted = Posted {
            done: Vec::new(),
            entry: None,
            writer: None,
        };
        let me = NodeSet::addend(self.machine.me()).map_err(|e| Error::Config(e.to_string()))?;
        for &a in step.actions.as_slice() {
            match a {
                Action::RegisterReader => {
                    let (_, manager) = self.home_of(page)?;
                    ops.push(Op::FetchAdd {
                        remote: self.dir_word(manager, page, Field::Readers)?,
                        add: me,
                    });
                }
                Action::RegisterWriter => {
                    let (_, manager) = self.home_of(page)?;
                    ops.push(Op::FetchAdd {
                        remote: self.dir_word(manager, page, Field::Writers)?,
                        add: me,
                    });
                    posted.writer = Some(posted.done.len() + ops.len() - 1);
                }
                Action::ReadEntry => {
                    let (_, manager) = self.home_of(page)?;
                    let entry = self.scratch()?;
                    let remote = self.dirs[manager].slice((page * DIR_ENTRY) as u64, 16)?;
                    ops.push(Op::Read {
                        remote,
                        local: entry.pair()?,
                    });
                    posted.entry = Some(entry);
                }
                Action::FetchPage => {
                    let (home, _) = self.home_of(page)?;
                    debug_assert_ne!(home, self.me, "a page homed here is never fetched");
                    ops.push(Op::Read {
                        remote: self.homes[home].slice((page * PAGE) as u64, PAGE)?,
                        local: self.runtime_slice(page * PAGE, PAGE)?,
                    });
                }
                Action::PrefetchAfter => {
                    // The page's operations first: the prefetch rides behind them.
                    self.flush(&mut ops, &mut posted)?;
                    fresh.extend(self.prefetch_after(page)?);
                }
                Action::PrefetchAhead => fresh.extend(self.prefetch_ahead(page)?),
                // (Delivered before this node's next release completes: `notices.rs`.)
                Action::Notify(set) => self.defer_notice(page, set),
                Action::TrackSharer => {
                    lock(&self.sharers).insert(page);
                }
                Action::KeepTwin => {
                    let mut twin = vec![0u8; PAGE].into_boxed_slice();
                    self.runtime.read_at(page * PAGE, &mut twin)?;
                    lock(&self.twins).insert(page, twin);
                }
                Action::AddDirty => lock(&self.dirty).push(page),
                Action::Populate => self.populate(page)?,
                Action::Map { from, to } => {
                    self.space.set_access(page, 1, access(from), access(to))?
                }
                Action::Remap(v) => self.space.remap(page, access(v))?,
                Action::CountUsed => self.note_used(1),
                Action::Cached => fresh.push(page),
                Action::WriteProtect | Action::Unmap | Action::WriteDiff | Action::CountWasted => {
                    unreachable!("a fault step never takes {a:?}")
                }
            }
        }
        self.flush(&mut ops, &mut posted)?;
        Ok(posted)
    }

    /// Posts the operations gathered so far (their completions keep their order in `posted`).
    fn flush(&self, ops: &mut Vec<Op>, posted: &mut Posted<'_>) -> Result<()> {
        if !ops.is_empty() {
            posted
                .done
                .append(&mut self.post_batch(std::mem::take(ops))?);
        }
        Ok(())
    }
}
