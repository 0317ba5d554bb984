//! Bookkeeping of the global heap, in pages and bytes. Pure data structures: the runtime
//! ([`crate::dsm`]) decides homes and talks to peers.
//!
//! The global range is split in two: the **collective heap** (the first half), from which every
//! node carves the same allocations in the same order (so no communication is needed to agree
//! on addresses), and one **arena per node** (the second half, cut in equal parts), from which
//! each node serves its own non-collective allocations without asking anybody.

use std::collections::BTreeMap;

/// First-fit allocation of ranges of units (pages or bytes) from `[start, end)`.
#[derive(Debug, Clone)]
pub struct RangeAllocator {
    /// Free ranges, start → length, never adjacent (coalesced).
    free: BTreeMap<usize, usize>,
    /// Live allocations, start → length.
    live: BTreeMap<usize, usize>,
    granule: usize,
}

impl RangeAllocator {
    /// An allocator of `[start, end)` handing out multiples of `granule` units.
    pub fn new(start: usize, end: usize, granule: usize) -> RangeAllocator {
        let mut free = BTreeMap::new();
        if end > start {
            free.insert(start, end - start);
        }
        RangeAllocator {
            free,
            live: BTreeMap::new(),
            granule: granule.max(1),
        }
    }

    /// Allocates `len` units (rounded up to the granule); `None` when nothing fits.
    pub fn alloc(&mut self, len: usize) -> Option<usize> {
        let len = len.max(1).checked_next_multiple_of(self.granule)?;
        let (&start, &size) = self.free.iter().find(|(_, &size)| size >= len)?;
        self.free.remove(&start);
        if size > len {
            self.free.insert(start + len, size - len);
        }
        self.live.insert(start, len);
        Some(start)
    }

    /// Frees the allocation that starts at `start`; returns its length, or `None` when no
    /// allocation starts there (a double or wild free).
    pub fn free(&mut self, start: usize) -> Option<usize> {
        let len = self.live.remove(&start)?;
        let mut s = start;
        let mut l = len;
        if let Some((&ps, &pl)) = self.free.range(..start).next_back() {
            if ps + pl == start {
                self.free.remove(&ps);
                s = ps;
                l += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            l += nl;
        }
        self.free.insert(s, l);
        Some(len)
    }

    /// The live allocation (start, length) that contains `unit`, if any.
    pub fn block_at(&self, unit: usize) -> Option<(usize, usize)> {
        let (&start, &len) = self.live.range(..=unit).next_back()?;
        (unit < start + len).then_some((start, len))
    }

    /// The length of the live allocation that starts at `start`.
    pub fn len_of(&self, start: usize) -> Option<usize> {
        self.live.get(&start).copied()
    }

    /// Allocates exactly `[start, start + len)` (a restart putting back a checkpoint's
    /// allocations); false, changing nothing, when that range is not free.
    pub fn claim(&mut self, start: usize, len: usize) -> bool {
        let Some((&fs, &fl)) = self.free.range(..=start).next_back() else {
            return false;
        };
        if len == 0 || start + len > fs + fl {
            return false;
        }
        self.free.remove(&fs);
        if start > fs {
            self.free.insert(fs, start - fs);
        }
        if fs + fl > start + len {
            self.free.insert(start + len, fs + fl - start - len);
        }
        self.live.insert(start, len);
        true
    }

    /// The live allocations (start, length), ascending.
    pub fn live(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.live.iter().map(|(&s, &l)| (s, l))
    }

    /// Units currently allocated.
    pub fn used(&self) -> usize {
        self.live.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_fit_and_coalescing() {
        let mut a = RangeAllocator::new(10, 20, 1);
        let x = a.alloc(3).unwrap();
        let y = a.alloc(3).unwrap();
        let z = a.alloc(4).unwrap();
        assert_eq!((x, y, z), (10, 13, 16));
        assert_eq!(a.alloc(1), None, "full");
        assert_eq!(a.block_at(14), Some((13, 3)));
        assert_eq!(a.block_at(9), None);
        assert_eq!(a.free(y), Some(3));
        assert_eq!(a.block_at(14), None, "freed");
        assert_eq!(a.free(y), None, "double free");
        assert_eq!(a.free(x), Some(3));
        assert_eq!(a.alloc(6), Some(10), "coalesced with its neighbour");
    }

    #[test]
    fn claiming_the_live_ranges_rebuilds_the_same_allocator() {
        let mut a = RangeAllocator::new(0, 100, 4);
        let blocks: Vec<usize> = (0..6).map(|i| a.alloc(3 + i).unwrap()).collect();
        a.free(blocks[1]);
        a.free(blocks[4]);
        let mut b = RangeAllocator::new(0, 100, 4);
        for (s, l) in a.live() {
            assert!(b.claim(s, l));
        }
        assert!(!b.claim(blocks[0], 4), "taken already");
        assert!(!b.claim(98, 4), "past the end");
        assert_eq!(a.live().collect::<Vec<_>>(), b.live().collect::<Vec<_>>());
        // The same free ranges: the same next allocations.
        for _ in 0..5 {
            assert_eq!(a.alloc(8), b.alloc(8));
        }
    }

    proptest! {
        /// Live allocations never overlap and stay inside the range, whatever the sequence.
        #[test]
        fn never_overlaps(ops in proptest::collection::vec((1usize..50, any::<bool>()), 1..200)) {
            let mut a = RangeAllocator::new(0, 1000, 8);
            let mut live: Vec<(usize, usize)> = Vec::new();
            for (len, free) in ops {
                if free && !live.is_empty() {
                    let (s, _) = live.remove(len % live.len());
                    prop_assert!(a.free(s).is_some());
                } else if let Some(s) = a.alloc(len) {
                    let l = len.next_multiple_of(8);
                    prop_assert!(s + l <= 1000);
                    for &(os, ol) in &live {
                        prop_assert!(s + l <= os || os + ol <= s);
                    }
                    live.push((s, l));
                }
            }
            prop_assert_eq!(a.used(), live.iter().map(|x| x.1).sum::<usize>());
        }
    }
}
