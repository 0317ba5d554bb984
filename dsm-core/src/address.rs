//! Where the global range goes: the free ranges of this process's address space (from
//! `/proc/self/maps`), their intersection over every node, and a deterministic choice of a base
//! in it. Every node computes the same choice from the same intersection, so one round of
//! messages normally suffices, and a common free range is found whenever one exists (not only
//! near each node's randomised `mmap` base).

use crate::error::{Error, Result};

/// A half-open range of addresses, `[start, end)`.
pub type Span = (usize, usize);

/// Nothing below this is proposed: the program's own low mappings, the `brk` heap and the first
/// 4 GiB that 32-bit-minded code may want.
pub const LOWEST: usize = 1 << 32;
/// The top of the user address space with 4-level page tables (47 bits): the kernel hands out
/// nothing above it unless asked to.
pub const TOP: usize = 1 << 47;
/// Preferred lowest base: 16 TiB, far above the heap and far below the `mmap` area and the
/// executable (ASLR puts both in the top quarter), so the range stays out of their way.
pub const PREFERRED: usize = 1 << 44;

/// The free ranges of this process between [`LOWEST`] and [`TOP`], their ends aligned inward to
/// `align`, sorted.
///
/// # Errors
/// [`Error::Io`] when `/proc/self/maps` cannot be read.
pub fn free_here(align: usize) -> Result<Vec<Span>> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| Error::io("reading /proc/self/maps", e))?;
    let used = maps.lines().filter_map(|l| {
        let range = l.split_whitespace().next()?;
        let (a, b) = range.split_once('-')?;
        Some((
            usize::from_str_radix(a, 16).ok()?,
            usize::from_str_radix(b, 16).ok()?,
        ))
    });
    Ok(gaps(used, align))
}

/// The gaps between `used` ranges (in any order) within `[LOWEST, TOP)`, aligned inward.
pub fn gaps(used: impl IntoIterator<Item = Span>, align: usize) -> Vec<Span> {
    let mut used: Vec<Span> = used.into_iter().filter(|&(a, b)| a < b).collect();
    used.sort_unstable();
    let mut free = Vec::new();
    let mut at = LOWEST;
    for (a, b) in used.into_iter().chain(std::iter::once((TOP, TOP))) {
        let (start, end) = (at.next_multiple_of(align), a.min(TOP) / align * align);
        if start < end {
            free.push((start, end));
        }
        at = at.max(b);
        if at >= TOP {
            break;
        }
    }
    free
}

/// The ranges free in both `a` and `b` (each sorted and disjoint).
pub fn intersect(a: &[Span], b: &[Span]) -> Vec<Span> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The base for `size` bytes in `free` (sorted, aligned): the lowest fit at or above
/// [`PREFERRED`]; else the highest fit below it, at the top of its range (away from the heap).
pub fn choose(free: &[Span], size: usize) -> Option<usize> {
    let above = free.iter().find_map(|&(s, e)| {
        let s = s.max(PREFERRED);
        (e >= s && e - s >= size).then_some(s)
    });
    above.or_else(|| {
        free.iter()
            .rev()
            .find(|&&(s, e)| e - s >= size)
            .map(|&(_, e)| e - size)
    })
}

/// The largest range in `free`, in bytes (for the error when nothing fits).
pub fn largest(free: &[Span]) -> usize {
    free.iter().map(|&(s, e)| e - s).max().unwrap_or(0)
}

/// `free` as bytes: pairs of little-endian u64.
pub fn encode(free: &[Span]) -> Vec<u8> {
    free.iter()
        .flat_map(|&(s, e)| [s as u64, e as u64])
        .flat_map(u64::to_le_bytes)
        .collect()
}

/// Decodes [`encode`]'s bytes, keeping only well-formed, sorted, disjoint ranges within
/// `[LOWEST, TOP)` (a peer's bytes are remote input).
pub fn decode(bytes: &[u8]) -> Vec<Span> {
    let words: Vec<usize> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()) as usize)
        .collect();
    let mut out: Vec<Span> = Vec::new();
    for pair in words.chunks_exact(2) {
        let (s, e) = (pair[0].max(LOWEST), pair[1].min(TOP));
        if s < e && out.last().is_none_or(|&(_, pe)| pe <= s) {
            out.push((s, e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: usize = 2 << 20;

    #[test]
    fn gaps_skip_the_used_ranges_and_stay_in_bounds() {
        let used = [
            (0x5555_0000_0000, 0x5555_0010_0000),
            (0x1000, 0x2000),
            (0x7ff0_0000_0000, 0x7fff_ffff_f000),
            (0x5555_0008_0000, 0x5555_0020_0000), // overlaps the first
        ];
        let g = gaps(used, A);
        assert_eq!(
            g,
            vec![
                (LOWEST, 0x5555_0000_0000),
                (0x5555_0020_0000, 0x7ff0_0000_0000)
            ]
        );
    }

    #[test]
    fn the_choice_prefers_16_tib_then_the_top_of_the_highest_lower_fit() {
        let free = [(LOWEST, 1 << 40), (PREFERRED - (1 << 30), 1 << 46)];
        assert_eq!(choose(&free, 1 << 40), Some(PREFERRED));
        assert_eq!(choose(&free, 1 << 45), Some(PREFERRED));
        let low = [(LOWEST, 1 << 40), (1 << 41, 1 << 42)];
        assert_eq!(choose(&low, 1 << 39), Some((1 << 42) - (1 << 39)));
        assert_eq!(choose(&low, 1 << 43), None);
        assert_eq!(largest(&low), 1 << 41);
    }

    #[test]
    fn hostile_bytes_decode_to_well_formed_ranges() {
        assert!(decode(&[1, 2, 3]).is_empty());
        let mut b = encode(&[(1 << 40, 1 << 41)]);
        b.extend(encode(&[(1 << 35, 1 << 36)])); // out of order: dropped
        b.extend(encode(&[(usize::MAX, 0)])); // empty: dropped
        assert_eq!(decode(&b), vec![(1 << 40, 1 << 41)]);
    }

    proptest! {
        /// The intersection is exactly the addresses free in both, and the choice fits in it.
        #[test]
        fn intersection_and_choice_are_exact(
            ua in proptest::collection::vec((0usize..64, 1usize..8), 0..12),
            ub in proptest::collection::vec((0usize..64, 1usize..8), 0..12),
            size in 1usize..40,
        ) {
            let unit = 1usize << 41; // 2 TiB cells over the 128 TiB space
            let to_used = |u: &[(usize, usize)]| -> Vec<Span> {
                u.iter().map(|&(a, l)| (a * unit, (a + l) * unit)).collect()
            };
            let (fa, fb) = (gaps(to_used(&ua), A), gaps(to_used(&ub), A));
            let both = intersect(&fa, &fb);
            let free_in = |f: &[Span], x: usize| f.iter().any(|&(s, e)| s <= x && x < e);
            for cell in 0..64 {
                let x = cell * unit + unit / 2;
                prop_assert_eq!(free_in(&both, x), free_in(&fa, x) && free_in(&fb, x));
            }
            let size = size * unit / 4;
            match choose(&both, size) {
                Some(base) => prop_assert!(both.iter().any(|&(s, e)| s <= base && base + size <= e)),
                None => prop_assert!(largest(&both) < size),
            }
            prop_assert_eq!(decode(&encode(&both)), both);
        }
    }
}
