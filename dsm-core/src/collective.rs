//! Message-based collectives over any [`Transport`]: barrier, broadcast, all-gather, each in
//! ⌈log2 N⌉ rounds of messages (no node talks to every other).
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

/// Copies `data` from `root` to every node and returns it (the root gets its own copy back),
/// along a binomial tree: ⌈log2 N⌉ rounds, each node receives once (from its parent) and
/// sends at most ⌈log2 N⌉ times.
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
    let n = t.nodes();
    let root = root.index();
    // Ranks relative to the root: node v's parent is v without its highest set bit.
    let v = (t.rank().index() + n - root) % n;
    let real = |v: usize| Rank(((v + root) % n) as u32);
    let mut mask = 1;
    let mut data = data.to_vec();
    while mask < n {
        if v & mask != 0 {
            data = t
                .recv(Some(real(v - mask)), Some(Tag(BROADCAST)), timeout)?
                .data;
            break;
        }
        mask <<= 1;
    }
    // Children: v + 2^k for every 2^k below v's lowest set bit (every 2^k < n for the root).
    mask >>= 1;
    while mask > 0 {
        if v + mask < n {
            t.send(real(v + mask), Tag(BROADCAST), &data)?;
        }
        mask >>= 1;
    }
    Ok(data)
}

/// Every node contributes `data`; every node gets all contributions, indexed by rank.
///
/// Bruck's algorithm: ⌈log2 N⌉ rounds; in the round of distance `d` a node sends the
/// contributions it holds (its own and the `d - 1` after it, at most `N - d`) to the node `d`
/// before it and receives as many from the node `d` after it. Each node sends ⌈log2 N⌉
/// messages, not N - 1, and receives each contribution once.
///
/// # Collective
/// Every node must call it.
///
/// # Errors
/// The transport's error when a peer is lost or the wait exceeds `timeout`;
/// [`Error::Protocol`] for a message that does not hold the contributions it should.
pub fn all_gather<T: Transport>(
    t: &T,
    data: &[u8],
    timeout: Option<Duration>,
) -> Result<Vec<Vec<u8>>> {
    let n = t.nodes();
    let me = t.rank().index();
    // `have[i]` is the contribution of rank `(me + i) % n`.
    let mut have = vec![data.to_vec()];
    let mut d = 1;
    while d < n {
        let count = d.min(n - d);
        let to = Rank(((me + n - d) % n) as u32);
        let from = Rank(((me + d) % n) as u32);
        t.send(to, Tag(ALL_GATHER), &encode_blocks(&have[..count]))?;
        let msg = t.recv(Some(from), Some(Tag(ALL_GATHER)), timeout)?;
        let blocks = decode_blocks(&msg.data, count).ok_or_else(|| Error::Protocol {
            from,
            detail: format!("an all-gather message that does not hold {count} contributions"),
        })?;
        have.extend(blocks);
        d *= 2;
    }
    let mut out = vec![Vec::new(); n];
    for (i, b) in have.into_iter().enumerate() {
        out[(me + i) % n] = b;
    }
    Ok(out)
}

/// Contributions back to back, each after its length (u32, little endian).
fn encode_blocks(blocks: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.iter().map(|b| 4 + b.len()).sum());
    for b in blocks {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// Exactly `count` contributions encoded by [`encode_blocks`], or `None`.
fn decode_blocks(mut bytes: &[u8], count: usize) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        out.push(bytes.get(4..4 + len)?.to_vec());
        bytes = &bytes[4 + len..];
    }
    bytes.is_empty().then_some(out)
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

    /// Every job size up to 17 (powers of two and not), every root, contributions of
    /// different lengths (empty ones too), calls back to back: every node gets the root's
    /// bytes and every contribution at its rank.
    #[test]
    fn tree_broadcast_and_bruck_all_gather_on_any_size() {
        let contribution = |r: usize, call: usize| vec![(r * 7 + call) as u8; (r + call) % 5];
        for n in 1..=17usize {
            let job = LoopbackTransport::job(n).unwrap();
            std::thread::scope(|s| {
                for t in &job {
                    s.spawn(move || {
                        let me = t.rank().index();
                        for call in 0..n.min(6) {
                            let root = Rank(((call * 5) % n) as u32);
                            let mine = if t.rank() == root {
                                vec![call as u8; 3 + call]
                            } else {
                                vec![0xee]
                            };
                            let got = broadcast(t, root, &mine, None).unwrap();
                            assert_eq!(
                                got,
                                vec![call as u8; 3 + call],
                                "n {n} root {root} rank {me}"
                            );
                            let all = all_gather(t, &contribution(me, call), None).unwrap();
                            let want: Vec<Vec<u8>> =
                                (0..n).map(|r| contribution(r, call)).collect();
                            assert_eq!(all, want, "n {n} call {call} rank {me}");
                        }
                    });
                }
            });
        }
    }

    #[test]
    fn all_gather_messages_of_the_wrong_shape_are_refused() {
        let blocks = vec![b"ab".to_vec(), Vec::new(), b"xyz".to_vec()];
        let bytes = encode_blocks(&blocks);
        assert_eq!(decode_blocks(&bytes, 3), Some(blocks));
        assert_eq!(decode_blocks(&bytes, 2), None, "one contribution too many");
        assert_eq!(decode_blocks(&bytes, 4), None, "one too few");
        assert_eq!(
            decode_blocks(&bytes[..bytes.len() - 1], 3),
            None,
            "truncated"
        );
        assert_eq!(decode_blocks(&[0xff; 4], 1), None, "a length past the end");
        assert_eq!(decode_blocks(&[], 0), Some(Vec::new()));
    }
}
