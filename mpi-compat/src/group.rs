//! Groups of processes (MPI-3.1 §6.3), as post/start/complete/wait need them.

use crate::comm::{Communicator, Rank};
use crate::error::{Error, Result};

/// An ordered set of ranks of a communicator: `MPI_Group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    ranks: Vec<Rank>,
}

impl Group {
    /// `MPI_Comm_group`: every rank of `comm`, in order.
    pub fn of(comm: &Communicator) -> Group {
        Group {
            ranks: (0..comm.size()).collect(),
        }
    }

    /// `MPI_Group_incl` (MPI-3.1 §6.3.2): the members at positions `ranks` of this group, in
    /// that order.
    ///
    /// # Errors
    /// [`Error::InvalidRank`] for a position outside the group; [`Error::InvalidGroup`] for a
    /// position listed twice.
    pub fn include(&self, ranks: &[Rank]) -> Result<Group> {
        let mut out = Vec::with_capacity(ranks.len());
        for &r in ranks {
            let member = usize::try_from(r)
                .ok()
                .and_then(|i| self.ranks.get(i))
                .copied()
                .ok_or(Error::InvalidRank {
                    rank: r,
                    size: self.ranks.len(),
                })?;
            if out.contains(&member) {
                return Err(Error::InvalidGroup(format!("rank {r} is listed twice")));
            }
            out.push(member);
        }
        Ok(Group { ranks: out })
    }

    /// `MPI_Group_size`.
    pub fn size(&self) -> Rank {
        self.ranks.len() as Rank
    }

    /// The members, as ranks of the communicator the group came from.
    pub fn ranks(&self) -> &[Rank] {
        &self.ranks
    }

    /// The members as checked indices of `comm`.
    pub(crate) fn world_ranks(&self, comm: &Communicator) -> Result<Vec<usize>> {
        self.ranks.iter().map(|&r| comm.check_rank(r)).collect()
    }
}
