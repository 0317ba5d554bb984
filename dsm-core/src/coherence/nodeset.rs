//! [`NodeSet`]: a set of ranks, as a directory entry holds its readers and writers.
//!
//! The representation (one 64-bit word, one bit per rank) is known only here: the directory
//! words at a manager are read with [`NodeSet::from_word`] and grown with the addend
//! [`NodeSet::addend`] gives (a remote fetch-and-add of a bit a node adds once), and nothing
//! else in the workspace shifts a rank into a word.

use crate::Rank;

/// A set of nodes of the job, by rank. Holds ranks below [`NodeSet::CAPACITY`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NodeSet(u64);

/// A rank a [`NodeSet`] cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rank {0} does not fit in a node set (at most {cap} nodes)", cap = NodeSet::CAPACITY)]
pub struct RankOutOfRange(pub Rank);

impl NodeSet {
    /// The empty set.
    pub const EMPTY: NodeSet = NodeSet(0);
    /// The number of ranks a set can hold (ranks `0..CAPACITY`).
    pub const CAPACITY: usize = 64;

    /// The set holding only `rank`.
    ///
    /// # Errors
    /// [`RankOutOfRange`] for a rank of [`NodeSet::CAPACITY`] or more.
    pub fn of(rank: Rank) -> Result<NodeSet, RankOutOfRange> {
        let mut s = NodeSet::EMPTY;
        s.insert(rank)?;
        Ok(s)
    }

    /// Adds `rank`.
    ///
    /// # Errors
    /// [`RankOutOfRange`] for a rank of [`NodeSet::CAPACITY`] or more (the set is unchanged).
    pub fn insert(&mut self, rank: Rank) -> Result<(), RankOutOfRange> {
        if rank.index() >= Self::CAPACITY {
            return Err(RankOutOfRange(rank));
        }
        self.0 |= 1 << rank.index();
        Ok(())
    }

    /// Whether `rank` is in the set.
    pub fn contains(self, rank: Rank) -> bool {
        rank.index() < Self::CAPACITY && self.0 & (1 << rank.index()) != 0
    }

    /// The set without `rank`.
    pub fn without(self, rank: Rank) -> NodeSet {
        if rank.index() < Self::CAPACITY {
            NodeSet(self.0 & !(1 << rank.index()))
        } else {
            self
        }
    }

    /// The union of two sets.
    pub fn union(self, other: NodeSet) -> NodeSet {
        NodeSet(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of ranks in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The ranks in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = Rank> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let r = bits.trailing_zeros();
            bits &= bits - 1;
            Some(Rank(r))
        })
    }

    /// The set a directory word at a manager holds.
    pub fn from_word(word: u64) -> NodeSet {
        NodeSet(word)
    }

    /// The value to fetch-and-add to a directory word to put `rank` in its set (done once per
    /// rank: directories only ever gain members, so the add never carries).
    ///
    /// # Errors
    /// [`RankOutOfRange`] for a rank the set cannot hold.
    pub fn addend(rank: Rank) -> Result<u64, RankOutOfRange> {
        Ok(NodeSet::of(rank)?.0)
    }
}

impl std::fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(|r| r.0)).finish()
    }
}

impl FromIterator<Rank> for NodeSet {
    /// Collects ranks; a rank the set cannot hold is left out.
    fn from_iter<I: IntoIterator<Item = Rank>>(iter: I) -> NodeSet {
        let mut s = NodeSet::EMPTY;
        for r in iter {
            let _ = s.insert(r);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insertion_is_checked_and_sets_behave() {
        let mut s = NodeSet::EMPTY;
        assert!(s.insert(Rank(3)).is_ok());
        assert!(s.insert(Rank(0)).is_ok());
        assert_eq!(s.insert(Rank(64)), Err(RankOutOfRange(Rank(64))));
        assert_eq!(s.len(), 2);
        assert!(s.contains(Rank(3)) && !s.contains(Rank(64)));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![Rank(0), Rank(3)]);
        assert_eq!(s.without(Rank(3)), NodeSet::of(Rank(0)).unwrap());
        assert_eq!(
            NodeSet::from_word(NodeSet::addend(Rank(5)).unwrap()),
            NodeSet::of(Rank(5)).unwrap()
        );
        assert_eq!(format!("{s:?}"), "{0, 3}");
    }
}
