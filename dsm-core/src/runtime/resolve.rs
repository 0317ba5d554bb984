//! The fault path: resolving a fault on a page, fetching it from its home, registering this
//! node in the page's directory entry and notifying the other sharers of a new writer.

use super::*;

impl Inner {
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
    pub(super) fn resolve_home(&self, g: &mut PageGuard<'_>, write: bool) -> Result<()> {
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
    pub(super) fn post_fetch(
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
    pub(super) fn fetched_state(
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
    pub(super) fn fetch(&self, g: &mut PageGuard<'_>, write: bool) -> Result<Vec<usize>> {
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
    pub(super) fn registered_writer(
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
    pub(super) fn open_for_writing(
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
    pub(super) fn make_writable(&self, g: &mut PageGuard<'_>) -> Result<()> {
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
    pub(super) fn register_writer(
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

    /// Appends `page` to the notification log of every node in `set`.
    pub(super) fn notify(&self, page: usize, set: u64) -> Result<()> {
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
}
