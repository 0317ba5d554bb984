//! [`NodeSet`]: a set of ranks, as a directory entry holds its readers and writers.
//!
//! The representation (one 64-bit word) is known only here: the directory words at a manager
//! are read with [`NodeSet::from_word`] and grown with the addend [`NodeSet::addend`] gives (a
//! remote fetch-and-add a node makes once), and nothing else in the workspace shifts a rank into
//! a word.
//!
//! The word is exact for the first [`NodeSet::EXACT`] ranks (one bit each) and *coarse* for
//! the others: its top 12 bits count the members of rank [`NodeSet::EXACT`] or more, without
//! saying which. A set with a non-zero count may hold any of those ranks, and every use of a set
//! in the protocol is safe when a set holds more than it says (`docs/PROTOCOL.md`, "Jobs of more
//! than 52 nodes"): a node notifies, or invalidates for, every node the set may hold. The count
//! never overflows: a node adds itself once per directory word, and there are fewer than 4,096
//! such nodes ([`NodeSet::CAPACITY`]).

use crate::Rank;

/// A set of nodes of the job, by rank: exact below [`NodeSet::EXACT`], a count of members
/// above. Holds ranks below [`NodeSet::CAPACITY`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct NodeSet(u64);

/// A rank a [`NodeSet`] cannot hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rank {0} does not fit in a node set (at most {cap} nodes)", cap = NodeSet::CAPACITY)]
pub struct RankOutOfRange(pub Rank);

/// Where the count of coarse members starts in the word.
const COUNT_SHIFT: u32 = 52;
/// The exact members' bits.
const EXACT_MASK: u64 = (1 << COUNT_SHIFT) - 1;
/// The largest count the word holds.
const COUNT_MAX: u64 = (1 << (64 - COUNT_SHIFT)) - 1;

impl NodeSet {
    /// The empty set.
    pub const EMPTY: NodeSet = NodeSet(0);
    /// The ranks a set holds exactly (`0..EXACT`); ranks from `EXACT` on are counted, not named.
    pub const EXACT: usize = COUNT_SHIFT as usize;
    /// The number of ranks a set can hold (ranks `0..CAPACITY`): the count of coarse members
    /// cannot overflow in a job of this many nodes.
    pub const CAPACITY: usize = 4096;

    /// The set holding only `rank`.
    ///
    /// # Errors
    /// [`RankOutOfRange`] for a rank of [`NodeSet::CAPACITY`] or more.
    pub fn of(rank: Rank) -> Result<NodeSet, RankOutOfRange> {
        let mut s = NodeSet::EMPTY;
        s.insert(rank)?;
        Ok(s)
    }

    fn count(self) -> u64 {
        self.0 >> COUNT_SHIFT
    }

    /// Adds `rank` (a coarse rank adds one to the count).
    ///
    /// # Errors
    /// [`RankOutOfRange`] for a rank of [`NodeSet::CAPACITY`] or more (the set is unchanged).
    pub fn insert(&mut self, rank: Rank) -> Result<(), RankOutOfRange> {
        if rank.index() >= Self::CAPACITY {
            return Err(RankOutOfRange(rank));
        }
        if rank.index() < Self::EXACT {
            self.0 |= 1 << rank.index();
        } else {
            let count = (self.count() + 1).min(COUNT_MAX);
            self.0 = self.0 & EXACT_MASK | count << COUNT_SHIFT;
        }
        Ok(())
    }

    /// Whether the set holds coarse members (of rank [`NodeSet::EXACT`] or more) it cannot
    /// name.
    pub fn is_coarse(self) -> bool {
        self.count() != 0
    }

    /// Whether `rank` may be in the set: exact below [`NodeSet::EXACT`]; from there, whether
    /// the set has any coarse member.
    pub fn contains(self, rank: Rank) -> bool {
        if rank.index() < Self::EXACT {
            self.0 & (1 << rank.index()) != 0
        } else {
            rank.index() < Self::CAPACITY && self.is_coarse()
        }
    }

    /// The set without `rank`: exact below [`NodeSet::EXACT`]; a coarse rank cannot be told
    /// apart from the others, so the set stays as it is (it may hold more than it says).
    pub fn without(self, rank: Rank) -> NodeSet {
        if rank.index() < Self::EXACT {
            NodeSet(self.0 & !(1 << rank.index()))
        } else {
            self
        }
    }

    /// The union of two sets (the counts add up, capped).
    pub fn union(self, other: NodeSet) -> NodeSet {
        let count = (self.count() + other.count()).min(COUNT_MAX);
        NodeSet((self.0 | other.0) & EXACT_MASK | count << COUNT_SHIFT)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The number of members: exact for a directory word (each member added itself once).
    pub fn len(self) -> usize {
        (self.0 & EXACT_MASK).count_ones() as usize + self.count() as usize
    }

    /// The ranks the set may hold in a job of `nodes` nodes, lowest first: the exact members,
    /// then, when the set is coarse, every rank from [`NodeSet::EXACT`] to `nodes`.
    pub fn ranks(self, nodes: usize) -> impl Iterator<Item = Rank> {
        let mut bits = self.0 & EXACT_MASK;
        let exact = std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let r = bits.trailing_zeros();
            bits &= bits - 1;
            Some(Rank(r))
        });
        let coarse = if self.is_coarse() {
            Self::EXACT..nodes.min(Self::CAPACITY)
        } else {
            0..0
        };
        exact
            .filter(move |r| r.index() < nodes)
            .chain(coarse.map(|r| Rank(r as u32)))
    }

    /// The set a directory word at a manager holds.
    pub fn from_word(word: u64) -> NodeSet {
        NodeSet(word)
    }

    /// The value to fetch-and-add to a directory word to put `rank` in its set (done once per
    /// rank and word: directories only ever gain members, so the add never carries into
    /// another member's bit, and the count of coarse members stays below 4,096).
    ///
    /// # Errors
    /// [`RankOutOfRange`] for a rank the set cannot hold.
    pub fn addend(rank: Rank) -> Result<u64, RankOutOfRange> {
        Ok(NodeSet::of(rank)?.0)
    }
}

impl std::fmt::Debug for NodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_set();
        d.entries(self.ranks(Self::EXACT).map(|r| r.0));
        if self.is_coarse() {
            d.entry(&format_args!(
                "+{} of rank {} or more",
                self.count(),
                Self::EXACT
            ));
        }
        d.finish()
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
        assert_eq!(s.insert(Rank(4096)), Err(RankOutOfRange(Rank(4096))));
        assert_eq!(s.len(), 2);
        assert!(s.contains(Rank(3)) && !s.contains(Rank(64)));
        assert_eq!(s.ranks(64).collect::<Vec<_>>(), vec![Rank(0), Rank(3)]);
        assert_eq!(s.ranks(2).collect::<Vec<_>>(), vec![Rank(0)]);
        assert_eq!(s.without(Rank(3)), NodeSet::of(Rank(0)).unwrap());
        assert_eq!(
            NodeSet::from_word(NodeSet::addend(Rank(5)).unwrap()),
            NodeSet::of(Rank(5)).unwrap()
        );
        assert_eq!(format!("{s:?}"), "{0, 3}");
    }

    #[test]
    fn coarse_members_are_counted_and_may_be_any_high_rank() {
        // A directory word grown by fetch-and-adds: two exact members, three coarse ones.
        let mut word = 0u64;
        for r in [1, 60, 100, 4095, 7] {
            word = word.wrapping_add(NodeSet::addend(Rank(r)).unwrap());
        }
        let s = NodeSet::from_word(word);
        assert_eq!(s.len(), 5);
        assert!(s.is_coarse());
        assert!(s.contains(Rank(1)) && s.contains(Rank(7)) && !s.contains(Rank(2)));
        // Any rank from EXACT on may be a member: the set says so for all of them.
        assert!(s.contains(Rank(52)) && s.contains(Rank(61)) && s.contains(Rank(4095)));
        let job = 200;
        let ranks: Vec<u32> = s.ranks(job).map(|r| r.0).collect();
        assert_eq!(&ranks[..2], &[1, 7]);
        assert_eq!(ranks.len(), 2 + (job - NodeSet::EXACT));
        // A coarse rank cannot be taken out; an exact one can.
        assert_eq!(s.without(Rank(100)), s);
        assert!(!s.without(Rank(7)).contains(Rank(7)));
        // The count of a full job's worth of coarse members does not overflow into the bits.
        let mut full = 0u64;
        for r in NodeSet::EXACT..NodeSet::CAPACITY {
            full = full.wrapping_add(NodeSet::addend(Rank(r as u32)).unwrap());
        }
        let f = NodeSet::from_word(full);
        assert_eq!(f.len(), NodeSet::CAPACITY - NodeSet::EXACT);
        assert!(!f.contains(Rank(0)));
        assert_eq!(
            f.union(s).len(),
            2 + (NodeSet::CAPACITY - NodeSet::EXACT) + 3
        );
        assert_eq!(f.union(f).union(f).len(), 4095, "the count is capped");
        assert!(NodeSet::EMPTY.union(NodeSet::EMPTY).is_empty());
    }
}
