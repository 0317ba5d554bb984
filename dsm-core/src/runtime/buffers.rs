//! Registered scratch buffers for the local side of remote operations: small slots (one
//! directory entry, one word) and batch buffers (the directory entries of a prefetched run).

use super::*;

/// A small registered buffer for the local side of a remote operation; returned on drop.
pub(super) struct Scratch<'a> {
    pub(super) inner: &'a Inner,
    pub(super) slot: usize,
}

impl Scratch<'_> {
    /// The first word of the slot.
    pub(super) fn slice(&self) -> Result<LocalSlice> {
        Ok(LocalSlice::new(&self.inner.scratch, self.slot * 16, 8)?)
    }
    /// Both words of the slot (a whole directory entry's reader and writer sets).
    pub(super) fn pair(&self) -> Result<LocalSlice> {
        Ok(LocalSlice::new(&self.inner.scratch, self.slot * 16, 16)?)
    }
    pub(super) fn word(&self, i: usize) -> u64 {
        let mut b = [0u8; 8];
        // The slot lies inside the scratch region by construction.
        let _ = self.inner.scratch.read_at(self.slot * 16 + i * 8, &mut b);
        u64::from_le_bytes(b)
    }
    pub(super) fn set(&self, v: u64) {
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
pub(super) struct Batch<'a> {
    pub(super) inner: &'a Inner,
    pub(super) slot: usize,
}

/// Directory entries per batch buffer (the largest prefetch run).
pub(super) const BATCH_PAGES: usize = prefetch::MAX_WINDOW;
/// Batch buffers (concurrent prefetches).
pub(super) const BATCH_SLOTS: usize = 16;

impl Batch<'_> {
    pub(super) fn base(&self) -> usize {
        SCRATCH_SLOTS * 16 + self.slot * BATCH_PAGES * DIR_ENTRY
    }
    pub(super) fn slice(&self, len: usize) -> Result<LocalSlice> {
        Ok(LocalSlice::new(
            &self.inner.scratch,
            self.base(),
            len.min(BATCH_PAGES * DIR_ENTRY),
        )?)
    }
    pub(super) fn word(&self, i: usize) -> u64 {
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

/// Page-sized buffers for the copies of locks' pages carried with their grants (`carry`): one
/// per thread of a node waiting for a lock at once; a thread that finds none takes the lock
/// without carrying.
pub(super) const CARRY_SLOTS: usize = 8;

/// Where carry buffer `slot` starts in the scratch region (after the batch buffers).
pub(super) fn carry_base(slot: usize) -> usize {
    (SCRATCH_SLOTS * 16 + BATCH_SLOTS * BATCH_PAGES * DIR_ENTRY).next_multiple_of(PAGE)
        + slot * PAGE
}

/// The size of the scratch region: small slots, batch buffers, carry buffers.
pub(super) fn scratch_size() -> usize {
    carry_base(CARRY_SLOTS)
}

impl Inner {
    /// A batch buffer, if one is free (else no prefetch now).
    pub(super) fn try_batch(&self) -> Option<Batch<'_>> {
        let slot = lock(&self.free_batches).pop()?;
        Some(Batch { inner: self, slot })
    }

    pub(super) fn scratch(&self) -> Result<Scratch<'_>> {
        let slot = lock(&self.free_scratch).pop().ok_or_else(|| {
            Error::Bootstrap("out of scratch buffers for remote operations".into())
        })?;
        Ok(Scratch { inner: self, slot })
    }
}
