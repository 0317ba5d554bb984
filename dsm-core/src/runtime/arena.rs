//! A node's arena for `malloc`: its allocator, and the map of its pages that hold live blocks.
//! The map is published at the start of the arena, in the node's registered memory (after the
//! head of the stack of remote frees), one bit per page, so that every node can refuse an
//! atomic or a lock on arena memory that nobody allocated, as the collective heap does
//! ([`crate::Error::Unallocated`]).
//!
//! Layout of an arena of `pages` pages, from its first byte: the remote-free head (8 bytes, in
//! a header of [`ARENA_HEADER`] bytes), the page bitmap ([`bitmap_bytes`]), then the blocks.
//! Only the owner writes the bitmap (under its arena lock); others read its words remotely.

use std::collections::HashMap;

use transport::Region;

use crate::alloc::RangeAllocator;
use crate::space::PAGE;

/// Bytes at the start of each node's arena before its page bitmap: the head of its stack of
/// blocks freed by other nodes (a global word homed at the owner).
pub(super) const ARENA_HEADER: usize = 64;
/// Granule of non-collective allocations, in bytes.
pub(crate) const MALLOC_GRANULE: usize = 16;

/// Bytes of the page bitmap of an arena of `pages` pages (whole 8-byte words).
pub(super) fn bitmap_bytes(pages: usize) -> usize {
    pages.div_ceil(64) * 8
}

/// Offset, from the arena's start, of the bitmap word that holds page `index`'s bit.
pub(super) fn bitmap_word(index: usize) -> usize {
    ARENA_HEADER + index / 64 * 8
}

/// This node's arena: blocks, and how many live blocks touch each page.
#[derive(Debug)]
pub(super) struct Arena {
    blocks: RangeAllocator,
    /// Live blocks per page, by page index within the arena.
    live: HashMap<usize, u32>,
    /// The arena's first byte, as an offset in the global range.
    start: usize,
    /// Bytes of its page bitmap.
    bitmap_len: usize,
}

impl Arena {
    /// The arena of `pages` pages that starts at offset `start` of the global range.
    pub(super) fn new(start: usize, pages: usize) -> Arena {
        let first = (ARENA_HEADER + bitmap_bytes(pages)).next_multiple_of(MALLOC_GRANULE);
        Arena {
            blocks: RangeAllocator::new(start + first, start + pages * PAGE, MALLOC_GRANULE),
            live: HashMap::new(),
            start,
            bitmap_len: bitmap_bytes(pages),
        }
    }

    /// The pages (indices within the arena) that the block `[off, off + len)` touches.
    fn pages_of(&self, off: usize, len: usize) -> std::ops::Range<usize> {
        (off - self.start) / PAGE..(off + len - 1 - self.start) / PAGE + 1
    }

    /// Allocates `bytes`; returns the block's offset in the global range. Marks the pages it
    /// touches in the bitmap of `runtime` (this node's registered view of the global range).
    pub(super) fn alloc(&mut self, bytes: usize, runtime: &Region) -> Option<usize> {
        let off = self.blocks.alloc(bytes)?;
        let len = self.blocks.len_of(off).unwrap_or(MALLOC_GRANULE);
        for p in self.pages_of(off, len) {
            let n = self.live.entry(p).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.set_bit(runtime, p, true);
            }
        }
        Some(off)
    }

    /// Frees the block at `off`; returns its length, or `None` when no block starts there.
    pub(super) fn free(&mut self, off: usize, runtime: &Region) -> Option<usize> {
        let len = self.blocks.free(off)?;
        for p in self.pages_of(off, len) {
            if let Some(n) = self.live.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.live.remove(&p);
                    self.set_bit(runtime, p, false);
                }
            }
        }
        Some(len)
    }

    /// The live blocks (offset in the global range, length), ascending.
    pub(super) fn blocks(&self) -> Vec<(u64, u64)> {
        self.blocks
            .live()
            .map(|(s, l)| (s as u64, l as u64))
            .collect()
    }

    /// The pages (indices within the arena) that hold anything: the header and bitmap, then
    /// the pages of live blocks, ascending.
    pub(super) fn pages_in_use(&self) -> Vec<usize> {
        let first_block_page = (ARENA_HEADER + self.bitmap_len).div_ceil(PAGE);
        let mut pages: Vec<usize> = (0..first_block_page).collect();
        let mut live: Vec<usize> = self.live.keys().copied().collect();
        live.sort_unstable();
        pages.extend(live.into_iter().filter(|&p| p >= first_block_page));
        pages
    }

    /// Puts back the live blocks of a checkpoint (their pages' bitmap bits come back with the
    /// pages); false when a block does not fit the arena or overlaps another.
    pub(super) fn restore(&mut self, blocks: &[(u64, u64)]) -> bool {
        for &(off, len) in blocks {
            let (off, len) = (off as usize, len as usize);
            if off < self.start || !self.blocks.claim(off, len) {
                return false;
            }
            for p in self.pages_of(off, len) {
                *self.live.entry(p).or_insert(0) += 1;
            }
        }
        true
    }

    /// Whether the bytes `[off, off + len)` lie inside one live block (exact, for this node's
    /// own arena).
    pub(super) fn covers(&self, off: usize, len: usize) -> bool {
        self.blocks
            .block_at(off)
            .is_some_and(|(start, blen)| off + len <= start + blen)
    }

    fn set_bit(&self, runtime: &Region, page: usize, on: bool) {
        let at = self.start + bitmap_word(page);
        let mut w = [0u8; 8];
        // The bitmap lies inside the arena, inside the runtime view, by construction.
        let _ = runtime.read_at(at, &mut w);
        let mut word = u64::from_le_bytes(w);
        if on {
            word |= 1 << (page % 64);
        } else {
            word &= !(1 << (page % 64));
        }
        let _ = runtime.write_at(at, &word.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bit(runtime: &Region, start: usize, page: usize) -> bool {
        let mut w = [0u8; 8];
        runtime.read_at(start + bitmap_word(page), &mut w).unwrap();
        u64::from_le_bytes(w) >> (page % 64) & 1 == 1
    }

    #[test]
    fn the_bitmap_follows_the_live_blocks_page_by_page() {
        let pages = 200;
        let start = 3 * PAGE;
        let runtime = Region::allocate(start + pages * PAGE).unwrap();
        let mut a = Arena::new(start, pages);
        let first = a.alloc(16, &runtime).unwrap();
        assert!(
            first >= start + ARENA_HEADER + bitmap_bytes(pages),
            "after the bitmap"
        );
        assert!(bit(&runtime, start, 0));
        // A block over pages 0..=2 (it starts in page 0), and one on page 130.
        let big = a.alloc(2 * PAGE, &runtime).unwrap();
        let far = loop {
            let b = a.alloc(4000, &runtime).unwrap();
            if (b - start) / PAGE >= 130 {
                break b;
            }
        };
        let far_page = (far - start) / PAGE;
        assert!(bit(&runtime, start, far_page));
        assert!(!bit(&runtime, start, 199));
        assert!(a.covers(big + 8, 8) && a.covers(first, 16));
        assert!(!a.covers(first + 8, 16), "runs past the 16-byte block");
        assert!(!a.covers(far + 4000, 8), "past the last block");
        assert!(!a.covers(start + (pages - 1) * PAGE, 8), "never allocated");
        // Freeing the page-0 blocks clears page 0 only when both are gone.
        a.free(first, &runtime).unwrap();
        assert!(
            bit(&runtime, start, 0),
            "the big block still touches page 0"
        );
        a.free(big, &runtime).unwrap();
        assert!(!bit(&runtime, start, 0) && !bit(&runtime, start, 1));
        assert!(a.free(big, &runtime).is_none(), "double free");
        assert!(!a.covers(big, 8));
    }
}
