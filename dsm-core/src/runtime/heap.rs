//! The runtime side of the non-collective heap and of global atomics: blocks other nodes freed
//! into this node's arena, and the home word of an atomic (refused on arena memory no block
//! covers).

use super::*;

impl Inner {
    /// Offset (in the global range) of the head of `owner`'s stack of remote frees.
    pub(super) fn arena_head(&self, owner: usize) -> usize {
        (self.collective_pages + owner * self.arena_pages) * PAGE
    }

    /// Takes every block other nodes freed into this node's arena and frees it here.
    pub(super) fn take_remote_frees(&self) -> Result<()> {
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
    pub(crate) fn atomic_word(&self, addr: usize) -> Result<transport::RemoteSlice> {
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
    pub(super) fn check_arena_word(&self, addr: usize, page: usize, owner: usize) -> Result<()> {
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

    /// Gives back a collective allocation that was made locally at page `start` for `bytes`
    /// but that the other nodes did not agree on (nothing was handed out).
    pub(crate) fn undo_collective_local(&self, start: usize, bytes: usize) {
        lock(&self.collective_heap).free(start);
        if let Some(p) = self.profile.on() {
            p.unalloc(start);
        }
        for p in start..start + bytes.div_ceil(PAGE).max(1) {
            self.map[p].store(0, Ordering::Release);
        }
    }

    /// The local part of [`crate::Dsm::free_collective`] between its barriers: frees the run at page
    /// `start` in the collective heap, resets its pages and clears what this node holds of it.
    pub(crate) fn free_collective_local(&self, start: usize, bad: Error) -> Result<()> {
        let pages = lock(&self.collective_heap).free(start).ok_or(bad)?;
        self.reset_pages(start, pages)?;
        // Clear the directory entries this node manages.
        for p in start..start + pages {
            let e = self.map[p].swap(0, Ordering::AcqRel);
            if entry_manager(e) == Some(self.me) {
                let _ = self._dir.write_at(p * DIR_ENTRY, &[0u8; DIR_ENTRY]);
            }
        }
        Ok(())
    }

    /// Allocates `bytes` from this node's arena (taking the blocks other nodes freed into it
    /// first); returns the block's offset in the global range.
    pub(crate) fn malloc_local(&self, bytes: usize) -> Result<usize> {
        self.take_remote_frees()?;
        lock(&self.arena)
            .alloc(bytes, &self.runtime)
            .ok_or(Error::OutOfMemory { requested: bytes })
    }

    /// Frees the `malloc` block at `addr` (see [`crate::Dsm::free`]): into this node's arena, or
    /// pushed on its owner's stack of remote frees.
    pub(crate) fn free_block(&self, addr: usize) -> Result<()> {
        let inner = self;
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
}
