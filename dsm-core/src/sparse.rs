//! Per-page tables that cost memory only where pages are used: a table of atomic words in an
//! anonymous mapping without swap reservation. The kernel gives zero-filled pages on first
//! touch, so a table of a billion entries (a 4 TiB global range) costs address space, and
//! resident memory only for the parts of the table whose pages a node actually uses.

use std::ops::Deref;
use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::{Error, Result};

/// Atomic integer types whose all-zero bit pattern is the value 0: the only types a
/// [`SparseTable`] holds.
///
/// # Safety
/// Implementors must be plain atomic integers: valid when zeroed, no drop glue, alignment at
/// most a page.
pub unsafe trait ZeroedAtomic: Sync + Send {}
// SAFETY: AtomicU32 has the layout of u32, for which all-zero is 0; no drop glue.
unsafe impl ZeroedAtomic for AtomicU32 {}
// SAFETY: AtomicU64 has the layout of u64, for which all-zero is 0; no drop glue.
unsafe impl ZeroedAtomic for AtomicU64 {}

/// `len` atomics, all 0 at first, in memory that is only made resident where written (or read:
/// the kernel maps its shared zero page for reads).
pub struct SparseTable<A: ZeroedAtomic> {
    /// Owns the mapping; `table` points into it.
    _map: memmap2::MmapMut,
    table: *const A,
    len: usize,
}

// SAFETY: the table is a slice of atomics (Sync + Send) in memory owned by the value; sharing it
// between threads is sharing `&[A]`.
unsafe impl<A: ZeroedAtomic> Send for SparseTable<A> {}
// SAFETY: as above: only `&[A]` is ever handed out, and `A` is `Sync`.
unsafe impl<A: ZeroedAtomic> Sync for SparseTable<A> {}

impl<A: ZeroedAtomic> SparseTable<A> {
    /// A table of `len` entries, all 0.
    ///
    /// # Errors
    /// [`Error::Config`] when `len` entries overflow the address space; [`Error::Io`] when the
    /// kernel refuses the mapping.
    pub fn new(len: usize) -> Result<Self> {
        let bytes = len
            .checked_mul(std::mem::size_of::<A>())
            .ok_or_else(|| Error::Config(format!("a table of {len} entries is too large")))?
            .max(1);
        let mut map = memmap2::MmapOptions::new()
            .len(bytes)
            .no_reserve_swap()
            .map_anon()
            .map_err(|e| Error::io(format!("reserving a per-page table of {bytes} bytes"), e))?;
        let table = map.as_mut_ptr().cast::<A>().cast_const();
        Ok(SparseTable {
            _map: map,
            table,
            len,
        })
    }
}

impl<A: ZeroedAtomic> Deref for SparseTable<A> {
    type Target = [A];

    fn deref(&self) -> &[A] {
        // SAFETY: `table` points at `len * size_of::<A>()` bytes of a private anonymous mapping
        // owned by `self` (so valid for the borrow), page-aligned (so aligned for `A`),
        // zero-filled by the kernel (a valid `A`: `ZeroedAtomic`), and only ever accessed through
        // `&A`, whose interior mutability makes shared writes sound.
        unsafe { std::slice::from_raw_parts(self.table, self.len) }
    }
}

impl<A: ZeroedAtomic> std::fmt::Debug for SparseTable<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SparseTable")
            .field("len", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Resident memory of the mapping that starts at `addr`, in KiB (from /proc/self/smaps, so
    /// that other tests' allocations do not count).
    fn rss_of_mapping_kib(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut lines = smaps.lines();
        while let Some(l) = lines.next() {
            let start = l
                .split('-')
                .next()
                .and_then(|a| usize::from_str_radix(a, 16).ok());
            if start == Some(addr) {
                return lines
                    .find_map(|l| l.strip_prefix("Rss:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
                    .expect("Rss");
            }
        }
        panic!("no mapping at {addr:#x}");
    }

    #[test]
    fn a_huge_table_starts_at_zero_and_costs_only_what_is_written() {
        // A billion entries: 8 GiB of address space (a 4 TiB global range's page states).
        let t = SparseTable::<AtomicU64>::new(1 << 30).expect("map");
        assert_eq!(t.len(), 1 << 30);
        for i in (0..t.len()).step_by(1 << 20) {
            assert_eq!(t[i].load(Ordering::Relaxed), 0);
            t[i].store(i as u64 + 1, Ordering::Relaxed);
        }
        let last = (1 << 30) - (1 << 20);
        assert_eq!(t[last].load(Ordering::Relaxed), last as u64 + 1);
        // 1024 pages written: about 4 MiB resident, not 8 GiB.
        let rss = rss_of_mapping_kib(t.as_ptr() as usize);
        assert!(rss <= 8 << 10, "the table is {rss} KiB resident");
    }
}
