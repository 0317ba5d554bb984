//! Message-based collectives over any [`Transport`]: barrier, broadcast, all-gather.
//!
//! They use tags reserved for the runtime, so they never match an application's messages.
//! Messages between two nodes keep their order, so consecutive collectives need no epoch.
//!
//! Every barrier is a *checked* one ([`checked_barrier`]): its messages carry the name of the
//! collective call it belongs to and that call's arguments, merged as ranges on the way, so that
//! a node in a different call (a free on one node only, calls in a different order) or with
//! other arguments (allocation sizes that differ) makes the call fail on every node, naming what
//! differs, instead of handing out different pointers.

use std::time::Duration;

use transport::{Rank, Tag, Transport};

use crate::error::{Error, Result};

const BARRIER: u64 = Tag::RESERVED + 0x100;
const BROADCAST: u64 = Tag::RESERVED + 2;
const ALL_GATHER: u64 = Tag::RESERVED + 3;

/// A barrier: [`checked_barrier`] of the call `"barrier"`, without arguments.
///
/// # Collective
/// Every node must call it.
///
/// # Errors
/// The transport's error when a peer is lost or the wait exceeds `timeout`;
/// [`Error::CollectiveMismatch`] when another node is in a different collective call.
pub fn barrier<T: Transport>(t: &T, timeout: Option<Duration>) -> Result<()> {
    checked_barrier(t, "barrier", &[], timeout)
}

/// A dissemination barrier that also checks that every node is in the same collective call
/// with the same arguments: ⌈log₂ N⌉ rounds; in round k each node sends the node 2ᵏ ahead what
/// it knows (the call, and for each argument the least and the greatest value seen so far) and
/// merges what the node 2ᵏ behind sends. After the last round every node has heard, directly or
/// not, from every node, so all of them come to the same verdict: either every node passes, or
/// every node fails with the same [`Error::CollectiveMismatch`]. The cost over a bare barrier is
/// 16 bytes per argument in each message.
///
/// `call` names the call (`"alloc_collective"`); `args` are its arguments by name.
///
/// # Collective
/// Every node must call it, with the same `call` and `args` values.
///
/// # Errors
/// [`Error::CollectiveMismatch`] naming the argument that differs (with its range and this
/// node's value), or saying that the nodes are in different calls; the transport's error when a
/// peer is lost or the wait exceeds `timeout`.
pub fn checked_barrier<T: Transport>(
    t: &T,
    call: &str,
    args: &[(&str, u64)],
    timeout: Option<Duration>,
) -> Result<()> {
    let mut seen = Seen::new(call, args);
    let n = t.nodes() as u64;
    let me = u64::from(t.rank().0);
    let mut dist = 1u64;
    let mut round = 0u64;
    while dist < n {
        let to = Rank(((me + dist) % n) as u32);
        let from = Rank(((me + n - dist) % n) as u32);
        t.send(to, Tag(BARRIER + round), &seen.encode())?;
        let got = t.recv(Some(from), Some(Tag(BARRIER + round)), timeout)?;
        seen.merge(&got.data);
        dist *= 2;
        round += 1;
    }
    seen.verdict(call, args)
}

/// What a node of a [`checked_barrier`] knows so far: for the call's name (as a hash) and each
/// argument, the least and the greatest value seen; whether some node sent something else (a
/// different number of arguments, or a bare message).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    ranges: Vec<(u64, u64)>,
    other_call: bool,
}

impl Seen {
    fn new(call: &str, args: &[(&str, u64)]) -> Seen {
        let id = name_hash(call);
        let ranges = std::iter::once((id, id))
            .chain(args.iter().map(|&(_, v)| (v, v)))
            .collect();
        Seen {
            ranges,
            other_call: false,
        }
    }

    /// One byte (1: a different call was seen), then the ranges, little-endian.
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(1 + 16 * self.ranges.len());
        b.push(u8::from(self.other_call));
        for &(lo, hi) in &self.ranges {
            b.extend_from_slice(&lo.to_le_bytes());
            b.extend_from_slice(&hi.to_le_bytes());
        }
        b
    }

    /// Merges a peer's message; one of another shape means another call.
    fn merge(&mut self, msg: &[u8]) {
        let Some((&flag, rest)) = msg.split_first() else {
            self.other_call = true;
            return;
        };
        if flag > 1 || rest.len() != 16 * self.ranges.len() {
            self.other_call = true;
            return;
        }
        self.other_call |= flag == 1;
        for (r, chunk) in self.ranges.iter_mut().zip(rest.chunks_exact(16)) {
            let (lo, hi) = chunk.split_at(8);
            let lo = u64::from_le_bytes(lo.try_into().unwrap_or_default());
            let hi = u64::from_le_bytes(hi.try_into().unwrap_or_default());
            *r = (r.0.min(lo), r.1.max(hi));
        }
    }

    fn verdict(&self, call: &str, args: &[(&str, u64)]) -> Result<()> {
        let (lo, hi) = self.ranges[0];
        if self.other_call || lo != hi {
            return Err(Error::CollectiveMismatch(format!(
                "the nodes are not in the same collective call (this node is in {call}): \
                 every node must make the same collective calls in the same order"
            )));
        }
        for (&(name, mine), &(lo, hi)) in args.iter().zip(&self.ranges[1..]) {
            if lo != hi {
                return Err(Error::CollectiveMismatch(format!(
                    "{call}: the nodes passed different values of {name}: from {lo} to {hi} \
                     (this node: {mine}); every node must pass the same"
                )));
            }
        }
        Ok(())
    }
}

/// FNV-1a of a call's name: the same on every node, different for the runtime's call names.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
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
    fn a_checked_barrier_fails_on_every_node_naming_what_differs() {
        let job = LoopbackTransport::job(5).unwrap();
        let verdicts: Vec<Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = job
                .iter()
                .map(|t| {
                    s.spawn(move || {
                        let me = t.rank().0 as u64;
                        checked_barrier(t, "alloc", &[("bytes", 4096), ("placement", 1)], None)?;
                        // Rank 3 asks for another size.
                        let bytes = if me == 3 { 8192 } else { 4096 };
                        checked_barrier(t, "alloc", &[("bytes", bytes), ("placement", 1)], None)
                            .map(|_| panic!("rank {me}: a size that differs passed"))
                            .or_else(|e| {
                                let m = e.to_string();
                                assert!(m.contains("bytes: from 4096 to 8192"), "{m}");
                                Ok::<(), Error>(())
                            })?;
                        // Rank 1 frees where the others allocate; rank 4 is in a bare barrier.
                        let r = match me {
                            1 => checked_barrier(t, "free", &[("page", 7)], None),
                            4 => barrier(t, None),
                            _ => checked_barrier(t, "alloc", &[("bytes", 1), ("p", 0)], None),
                        };
                        let m = r.expect_err("different calls passed").to_string();
                        assert!(m.contains("not in the same collective call"), "{m}");
                        // Back in step, all pass again.
                        checked_barrier(t, "alloc", &[("bytes", 1)], None)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(verdicts.iter().all(|v| v.is_ok()), "{verdicts:?}");
    }

    #[test]
    fn a_barrier_message_of_any_shape_is_a_mismatch_not_a_panic() {
        let mut s = Seen::new("barrier", &[("x", 1)]);
        for msg in [&[][..], &[7u8][..], &[0u8; 5][..], &[1u8; 33][..]] {
            let mut t = s.clone();
            t.merge(msg);
            assert!(t.other_call, "{msg:?}");
        }
        let peer = Seen::new("barrier", &[("x", 3)]).encode();
        s.merge(&peer);
        assert_eq!(s.ranges[1], (1, 3));
        assert!(s.verdict("barrier", &[("x", 1)]).is_err());
    }

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
