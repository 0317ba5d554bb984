//! The shape of the bootstrap's tree: a binomial tree over the ranks, rooted at rank 0. Pure
//! arithmetic, no I/O.
//!
//! A rank's parent is the rank with its lowest set bit cleared; its children are itself plus
//! each power of two below its lowest set bit (every power of two, for rank 0) that stays
//! below the job size. A subtree is therefore the contiguous block of ranks from its root up
//! to its root plus its lowest set bit, and the tree is ⌈log2 N⌉ levels deep: the endpoints go
//! up in that many rounds and the table comes down in as many, each node talking only to its
//! parent and its at most ⌈log2 N⌉ children.

/// The parent of `rank` (not 0).
pub(super) fn parent(rank: usize) -> usize {
    debug_assert!(rank > 0);
    rank & (rank - 1)
}

/// The children of `rank` in a job of `nodes`, in increasing order.
pub(super) fn children(rank: usize, nodes: usize) -> Vec<usize> {
    let below = if rank == 0 {
        usize::MAX
    } else {
        rank & rank.wrapping_neg()
    };
    let mut kids = Vec::new();
    let mut step = 1usize;
    while step < below && rank.checked_add(step).is_some_and(|c| c < nodes) {
        kids.push(rank + step);
        step <<= 1;
    }
    kids
}

/// How many ranks the subtree rooted at `rank` holds (the ranks `rank..rank + size`).
pub(super) fn subtree_size(rank: usize, nodes: usize) -> usize {
    if rank == 0 {
        nodes
    } else {
        (rank & rank.wrapping_neg()).min(nodes.saturating_sub(rank))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every rank but 0 has exactly one parent, which lists it among its children; subtrees
    /// are the contiguous blocks their children's subtrees tile; the depth is at most ⌈log2 N⌉.
    #[test]
    fn the_tree_covers_every_rank_once() {
        for nodes in 1..300usize {
            let mut seen = vec![0u32; nodes];
            for r in 0..nodes {
                for c in children(r, nodes) {
                    assert_eq!(parent(c), r, "child {c} of {r}, {nodes} nodes");
                    seen[c] += 1;
                }
                let mut covered = 1;
                for c in children(r, nodes) {
                    assert_eq!(c, r + covered, "subtree of {r} not contiguous");
                    covered += subtree_size(c, nodes);
                }
                assert_eq!(covered, subtree_size(r, nodes), "rank {r}, {nodes} nodes");
            }
            assert_eq!(seen[0], 0);
            assert!(seen[1..].iter().all(|&s| s == 1), "{nodes} nodes: {seen:?}");
            let depth = (1..nodes)
                .map(|mut r| {
                    let mut d = 0;
                    while r != 0 {
                        r = parent(r);
                        d += 1;
                    }
                    d
                })
                .max()
                .unwrap_or(0);
            let log = nodes.next_power_of_two().trailing_zeros() as usize;
            assert!(depth <= log, "{nodes} nodes: depth {depth}");
            assert_eq!(children(0, nodes).len(), log);
        }
    }

    #[test]
    fn large_jobs() {
        assert_eq!(children(0, 4096).len(), 12);
        assert_eq!(children(2048, 4096).len(), 11);
        assert_eq!(subtree_size(2048, 4096), 2048);
        assert_eq!(subtree_size(4094, 4095), 1);
        assert!(children(4095, 4096).is_empty());
    }
}
