//! Message-based collectives over any [`Transport`]: barrier, broadcast, all-gather.
//!
//! They use tags reserved for the runtime, so they never match an application's messages.
//! Messages between two nodes keep their order, so consecutive collectives need no epoch.

use std::time::Duration;

use transport::{Rank, Tag, Transport};

use crate::error::Result;

const BARRIER: u64 = Tag::RESERVED + 0x100;
const BROADCAST: u64 = Tag::RESERVED + 2;
const ALL_GATHER: u64 = Tag::RESERVED + 3;

/// A dissemination barrier: ⌈log₂ N⌉ rounds; in round k each node signals the node 2ᵏ ahead
/// and waits for the one 2ᵏ behind. Returns when every node has entered.
///
/// # Collective
/// Every node must call it.
///
/// # Errors
/// The transport's error when a peer is lost or the wait exceeds `timeout`.
pub fn barrier<T: Transport>(t: &T, timeout: Option<Duration>) -> Result<()> {
    let n = t.nodes() as u64;
    let me = u64::from(t.rank().0);
    let mut dist = 1u64;
    let mut round = 0u64;
    while dist < n {
        let to = Rank(((me + dist) % n) as u32);
        let from = Rank(((me + n - dist) % n) as u32);
        t.send(to, Tag(BARRIER + round), &[])?;
        t.recv(Some(from), Some(Tag(BARRIER + round)), timeout)?;
        dist *= 2;
        round += 1;
    }
    Ok(())
}

/// Copies `data` from `root` to every node and returns it (the root gets its own copy back).
///
/// # Collective
/// Every node must call it with the same `root`; only the root's `data` matters.
///
/// # Errors
/// The transport's error when a peer is lost or the wait exceeds `timeout`.
pub fn broadcast<T: Transport>(
    t: &T,
    root: Rank,
    data: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<u8>> {
    if t.rank() == root {
        for r in 0..t.nodes() as u32 {
            if Rank(r) != root {
                t.send(Rank(r), Tag(BROADCAST), data)?;
            }
        }
        Ok(data.to_vec())
    } else {
        Ok(t.recv(Some(root), Some(Tag(BROADCAST)), timeout)?.data)
    }
}

/// Every node contributes `data`; every node gets all contributions, indexed by rank.
///
/// # Collective
/// Every node must call it.
///
/// # Errors
/// The transport's error when a peer is lost or the wait exceeds `timeout`.
pub fn all_gather<T: Transport>(
    t: &T,
    data: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<Vec<u8>>> {
    let n = t.nodes() as u32;
    for r in 0..n {
        if Rank(r) != t.rank() {
            t.send(Rank(r), Tag(ALL_GATHER), data)?;
        }
    }
    (0..n)
        .map(|r| {
            if Rank(r) == t.rank() {
                Ok(data.to_vec())
            } else {
                Ok(t.recv(Some(Rank(r)), Some(Tag(ALL_GATHER)), timeout)?.data)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use transport::LoopbackTransport;

    #[test]
    fn collectives_on_five_ranks() {
        let job = LoopbackTransport::job(5).unwrap();
        std::thread::scope(|s| {
            for t in &job {
                s.spawn(move || {
                    for round in 0..20u8 {
                        barrier(t, None).unwrap();
                        let b = broadcast(t, Rank(u32::from(round) % 5), &[round], None).unwrap();
                        assert_eq!(b, vec![round]);
                        let g = all_gather(t, &[t.rank().0 as u8, round], None).unwrap();
                        assert_eq!(g, (0..5u8).map(|r| vec![r, round]).collect::<Vec<_>>());
                    }
                });
            }
        });
    }
}
