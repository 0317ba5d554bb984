//! Twins and diffs: what a node changed in a page since it started writing it, so that two
//! nodes writing different bytes of one page both survive at the home.

/// A run of changed bytes: offset in the page and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Offset of the first changed byte.
    pub offset: usize,
    /// Number of bytes.
    pub len: usize,
}

/// The runs of bytes where `page` differs from `twin` (both one page long, of any page size). Compares eight
/// bytes at a time and refines at the edges, so that a run holds exactly the changed bytes:
/// writing back an unchanged byte could overwrite another node's change.
pub fn diff(page: &[u8], twin: &[u8]) -> Vec<Run> {
    debug_assert_eq!(page.len(), twin.len());
    let mut runs: Vec<Run> = Vec::new();
    let mut push = |offset: usize, len: usize| match runs.last_mut() {
        Some(last) if last.offset + last.len == offset => last.len += len,
        _ => runs.push(Run { offset, len }),
    };
    let n = page.len().min(twin.len()) / 8 * 8;
    for (w, (a, b)) in page[..n]
        .chunks_exact(8)
        .zip(twin[..n].chunks_exact(8))
        .enumerate()
    {
        let x = u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]])
            ^ u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
        if x == 0 {
            continue;
        }
        if x.trailing_zeros() < 8
            && x.leading_zeros() < 8
            && (0..8).all(|i| (x >> (8 * i)) & 0xff != 0)
        {
            push(w * 8, 8);
            continue;
        }
        // Some bytes of this word changed: exactly those.
        let mut i = 0;
        while i < 8 {
            if (x >> (8 * i)) & 0xff == 0 {
                i += 1;
                continue;
            }
            let start = i;
            while i < 8 && (x >> (8 * i)) & 0xff != 0 {
                i += 1;
            }
            push(w * 8 + start, i - start);
        }
    }
    for i in n..page.len().min(twin.len()) {
        if page[i] != twin[i] {
            push(i, 1);
        }
    }
    runs
}

/// Applies `runs` of `src` onto `dst` (what the home does with a diff; for tests and for the
/// simulation).
pub fn apply(dst: &mut [u8], src: &[u8], runs: &[Run]) {
    for r in runs {
        dst[r.offset..r.offset + r.len].copy_from_slice(&src[r.offset..r.offset + r.len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime's page size.
    const PAGE: usize = 4096;
    use proptest::prelude::*;

    #[test]
    fn exact_runs() {
        let twin = vec![0u8; PAGE];
        let mut page = twin.clone();
        page[3] = 1;
        page[4] = 1;
        page[100] = 9;
        page[PAGE - 1] = 7;
        assert_eq!(
            diff(&page, &twin),
            vec![
                Run { offset: 3, len: 2 },
                Run {
                    offset: 100,
                    len: 1
                },
                Run {
                    offset: PAGE - 1,
                    len: 1
                }
            ]
        );
        assert!(diff(&twin, &twin).is_empty());
    }

    proptest! {
        /// The runs cover exactly the bytes that differ, in order, never adjacent.
        #[test]
        fn runs_are_exact(
            base in proptest::collection::vec(any::<u8>(), PAGE),
            writes in proptest::collection::vec((0..PAGE, any::<u8>()), 0..300),
        ) {
            let mut page = base.clone();
            for (at, v) in writes { page[at] = v; }
            let runs = diff(&page, &base);
            let mut covered = vec![false; PAGE];
            let mut last_end = None;
            for r in &runs {
                prop_assert!(r.len > 0);
                if let Some(e) = last_end { prop_assert!(r.offset > e, "runs are merged when adjacent"); }
                last_end = Some(r.offset + r.len);
                for c in &mut covered[r.offset..r.offset + r.len] { *c = true; }
            }
            for i in 0..PAGE {
                prop_assert_eq!(covered[i], page[i] != base[i], "byte {}", i);
            }
        }

        /// Two writers that change disjoint bytes of a page both survive when their diffs are
        /// applied to the home in either order.
        #[test]
        fn disjoint_writers_both_survive(
            base in proptest::collection::vec(any::<u8>(), PAGE),
            writes in proptest::collection::vec((0..PAGE, any::<u8>(), any::<bool>()), 0..200),
            a_first in any::<bool>(),
        ) {
            let (mut a, mut b) = (base.clone(), base.clone());
            let mut expect = base.clone();
            for (at, v, to_a) in writes {
                // Byte `at` belongs to writer a when even, b when odd: disjoint, data-race free.
                let mine = (at % 2 == 0) == to_a;
                if !mine { continue; }
                if to_a { a[at] = v; } else { b[at] = v; }
                expect[at] = v;
            }
            let (da, db) = (diff(&a, &base), diff(&b, &base));
            let mut home = base.clone();
            if a_first {
                apply(&mut home, &a, &da);
                apply(&mut home, &b, &db);
            } else {
                apply(&mut home, &b, &db);
                apply(&mut home, &a, &da);
            }
            prop_assert_eq!(home, expect);
        }
    }
}
