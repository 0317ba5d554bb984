//! Where each page of an allocation lives: its home (authoritative copy) and its manager
//! (directory entry).

use crate::Rank;

/// How the pages of an allocation are spread over the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The allocation is cut into `nodes` contiguous blocks; node k is home of block k.
    Blocked,
    /// Blocks of `block_pages` pages go to the nodes in turn (round robin).
    Cyclic {
        /// Pages per block (at least 1).
        block_pages: usize,
    },
    /// A page's home is the first node that touches it.
    FirstTouch,
    /// Every page is homed and managed at this node (which must be one of the job's: the
    /// allocation checks it before anything is placed).
    Node(Rank),
}

/// The node that holds the directory entry of page `index` of an allocation of `pages` pages,
/// and, unless the placement is first-touch, its home. The node of [`Placement::Node`] must be
/// below `nodes` (the caller checks it).
pub fn manager(placement: Placement, index: usize, pages: usize, nodes: usize) -> usize {
    match placement {
        Placement::Blocked | Placement::FirstTouch => {
            // Node k gets pages [k * pages / nodes, (k + 1) * pages / nodes).
            let k = ((index as u128 * nodes as u128) / pages.max(1) as u128) as usize;
            k.min(nodes - 1)
        }
        Placement::Cyclic { block_pages } => (index / block_pages.max(1)) % nodes,
        Placement::Node(node) => node.index(),
    }
}

/// The home of page `index`, when the placement decides it (`None` for first-touch).
pub fn home(placement: Placement, index: usize, pages: usize, nodes: usize) -> Option<usize> {
    match placement {
        Placement::FirstTouch => None,
        p => Some(manager(p, index, pages, nodes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_is_contiguous_and_balanced() {
        let homes: Vec<usize> = (0..10)
            .map(|i| manager(Placement::Blocked, i, 10, 3))
            .collect();
        assert_eq!(homes, vec![0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert_eq!(manager(Placement::Blocked, 0, 1, 4), 0);
    }

    #[test]
    fn cyclic_round_robin() {
        let homes: Vec<usize> = (0..8)
            .map(|i| manager(Placement::Cyclic { block_pages: 2 }, i, 8, 3))
            .collect();
        assert_eq!(homes, vec![0, 0, 1, 1, 2, 2, 0, 0]);
        assert_eq!(home(Placement::FirstTouch, 3, 8, 3), None);
    }

    #[test]
    fn on_a_node_every_page_is_homed_and_managed_there() {
        for index in 0..9 {
            assert_eq!(manager(Placement::Node(Rank(2)), index, 9, 4), 2);
            assert_eq!(home(Placement::Node(Rank(2)), index, 9, 4), Some(2));
        }
        assert_eq!(home(Placement::Node(Rank(0)), 0, 1, 1), Some(0));
    }
}
