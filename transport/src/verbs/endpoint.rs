//! The verbs endpoint: what a node publishes through the bootstrap so that its peers can
//! connect their queue pairs to its own. Pure encoding and decoding, no device.
//!
//! Little endian throughout; `FIXED` bytes, then `PER_PEER` bytes for every node of the job, in
//! rank order (the node's own entry included):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `"DSMVERB1"` |
//! | 8 | 4 | nodes in the job |
//! | 12 | 4 | the publishing node's rank |
//! | 16 | 2 | LID |
//! | 18 | 1 | active MTU (the verbs enumeration) |
//! | 19 | 1 | 1 when addressed by GID (global route), else 0 |
//! | 20 | 16 | GID |
//! | 36 | 4 | rkey of the flush word |
//! | 40 | 8 | address of the flush word |
//! | 48 | 4 | zero |
//!
//! and per node: the control queue pair's number and first packet sequence number, the
//! requester's number and first sequence number, and the responder's number (4 bytes each).

use crate::error::{Error, Result};
use crate::types::Rank;

/// Largest job: every endpoint carries one entry per node and must fit the bootstrap's 64 KiB.
pub(super) const MAX_NODES: usize = 3000;
const MAGIC: &[u8; 8] = b"DSMVERB1";
const FIXED: usize = 8 + 4 + 4 + 2 + 1 + 1 + 16 + 4 + 8 + 4;
const PER_PEER: usize = 20;
// The largest job's endpoint fits the bootstrap's 64 KiB.
const _: () = assert!(FIXED + PER_PEER * MAX_NODES <= 64 << 10);

/// The queue pairs a node created for one peer, as that peer must know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Towards {
    /// The control queue pair (0 for the node itself, which has none).
    pub(super) ctrl_qpn: u32,
    pub(super) ctrl_psn: u32,
    /// The requester: the node's one-sided operations to the peer.
    pub(super) req_qpn: u32,
    pub(super) req_psn: u32,
    /// The responder: serves the peer's one-sided operations.
    pub(super) resp_qpn: u32,
}

/// A node's whole endpoint, as it publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Endpoint {
    pub(super) rank: u32,
    pub(super) lid: u16,
    pub(super) mtu: u8,
    pub(super) global: bool,
    pub(super) gid: [u8; 16],
    pub(super) flush_rkey: u32,
    pub(super) flush_addr: u64,
    /// One entry per node of the job, in rank order.
    pub(super) towards: Vec<Towards>,
}

/// What a node needs of one peer's endpoint: the common part and the entry meant for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PeerEndpoint {
    pub(super) lid: u16,
    pub(super) mtu: u32,
    pub(super) gid: [u8; 16],
    pub(super) flush_rkey: u32,
    pub(super) flush_addr: u64,
    /// Its queue pairs towards us.
    pub(super) ctrl_qpn: u32,
    pub(super) ctrl_psn: u32,
    pub(super) req_qpn: u32,
    pub(super) req_psn: u32,
    pub(super) resp_qpn: u32,
}

impl Endpoint {
    /// The bytes to publish; the job's size is the number of entries.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(FIXED + PER_PEER * self.towards.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&(self.towards.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.rank.to_le_bytes());
        b.extend_from_slice(&self.lid.to_le_bytes());
        b.push(self.mtu);
        b.push(u8::from(self.global));
        b.extend_from_slice(&self.gid);
        b.extend_from_slice(&self.flush_rkey.to_le_bytes());
        b.extend_from_slice(&self.flush_addr.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        for t in &self.towards {
            b.extend_from_slice(&t.ctrl_qpn.to_le_bytes());
            b.extend_from_slice(&t.ctrl_psn.to_le_bytes());
            b.extend_from_slice(&t.req_qpn.to_le_bytes());
            b.extend_from_slice(&t.req_psn.to_le_bytes());
            b.extend_from_slice(&t.resp_qpn.to_le_bytes());
        }
        b
    }
}

/// Decodes the endpoint that rank `from` of a job of `nodes` published, keeping what node `me`
/// needs of it.
///
/// # Errors
/// [`Error::Protocol`] naming `from` for bytes of the wrong length or magic, or an endpoint of
/// another job size or rank (or `me` outside the job). Never panics, whatever the bytes.
pub(super) fn decode(b: &[u8], nodes: usize, from: usize, me: usize) -> Result<PeerEndpoint> {
    let bad = |detail: &str| Error::Protocol {
        from: Rank(from as u32),
        detail: format!("verbs endpoint: {detail}"),
    };
    let expected = PER_PEER
        .checked_mul(nodes)
        .and_then(|n| n.checked_add(FIXED));
    if Some(b.len()) != expected || &b[..8] != MAGIC {
        return Err(bad(
            "wrong length or magic (is every node using the verbs transport?)",
        ));
    }
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut a8 = [0u8; 8];
    a8.copy_from_slice(&b[40..48]);
    if u32_at(8) as usize != nodes || u32_at(12) as usize != from || me >= nodes {
        return Err(bad("job size or rank differs"));
    }
    let mut gid = [0u8; 16];
    gid.copy_from_slice(&b[20..36]);
    let base = FIXED + PER_PEER * me;
    Ok(PeerEndpoint {
        lid: u16::from_le_bytes([b[16], b[17]]),
        mtu: u32::from(b[18]),
        gid,
        flush_rkey: u32_at(36),
        flush_addr: u64::from_le_bytes(a8),
        ctrl_qpn: u32_at(base),
        ctrl_psn: u32_at(base + 4),
        req_qpn: u32_at(base + 8),
        req_psn: u32_at(base + 12),
        resp_qpn: u32_at(base + 16),
    })
}

/// The first packet sequence number of the queue pair from `from` to `to` (`which`: 0 control,
/// 1 one-sided). Derived, not random, so that a reset can be checked; 24 bits.
pub(super) fn psn_for(from: u32, to: u32, which: u32) -> u32 {
    (from.wrapping_mul(2_654_435_761) ^ to.wrapping_mul(40_503) ^ which.wrapping_mul(97))
        & 0x00ff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn towards() -> impl Strategy<Value = Towards> {
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        )
            .prop_map(|(ctrl_qpn, ctrl_psn, req_qpn, req_psn, resp_qpn)| Towards {
                ctrl_qpn,
                ctrl_psn,
                req_qpn,
                req_psn,
                resp_qpn,
            })
    }

    fn endpoint() -> impl Strategy<Value = Endpoint> {
        (
            (any::<u16>(), any::<u8>(), any::<bool>(), any::<[u8; 16]>()),
            (any::<u32>(), any::<u64>()),
            proptest::collection::vec(towards(), 1..40),
        )
            .prop_flat_map(
                |((lid, mtu, global, gid), (flush_rkey, flush_addr), towards)| {
                    (0..towards.len() as u32).prop_map(move |rank| Endpoint {
                        rank,
                        lid,
                        mtu,
                        global,
                        gid,
                        flush_rkey,
                        flush_addr,
                        towards: towards.clone(),
                    })
                },
            )
    }

    #[test]
    fn layout_is_fixed() {
        let e = Endpoint {
            rank: 1,
            lid: 0x0102,
            mtu: 3,
            global: true,
            gid: [7; 16],
            flush_rkey: 0x0a0b_0c0d,
            flush_addr: 0x1122_3344_5566_7788,
            towards: vec![Towards::default(); 2],
        };
        let b = e.encode();
        assert_eq!(b.len(), 52 + 2 * 20);
        assert_eq!(&b[..8], b"DSMVERB1");
        assert_eq!(&b[8..12], &2u32.to_le_bytes());
        assert_eq!(&b[12..16], &1u32.to_le_bytes());
        assert_eq!(&b[16..20], &[0x02, 0x01, 3, 1]);
        assert_eq!(&b[36..40], &0x0a0b_0c0du32.to_le_bytes());
        assert_eq!(&b[48..52], &[0; 4]);
    }

    #[test]
    fn psns_are_24_bits_and_differ_per_queue_pair() {
        assert!(psn_for(u32::MAX, u32::MAX, 1) <= 0x00ff_ffff);
        assert_ne!(psn_for(0, 1, 0), psn_for(0, 1, 1));
        assert_ne!(psn_for(0, 1, 0), psn_for(1, 0, 0));
    }

    proptest! {
        /// Every node reads back the common part and the entry meant for it.
        #[test]
        fn round_trip(e in endpoint()) {
            let b = e.encode();
            let nodes = e.towards.len();
            for me in 0..nodes {
                let p = decode(&b, nodes, e.rank as usize, me).unwrap();
                let t = e.towards[me];
                prop_assert_eq!(p, PeerEndpoint {
                    lid: e.lid,
                    mtu: u32::from(e.mtu),
                    gid: e.gid,
                    flush_rkey: e.flush_rkey,
                    flush_addr: e.flush_addr,
                    ctrl_qpn: t.ctrl_qpn,
                    ctrl_psn: t.ctrl_psn,
                    req_qpn: t.req_qpn,
                    req_psn: t.req_psn,
                    resp_qpn: t.resp_qpn,
                });
            }
        }

        /// An endpoint of another job size, another rank, or one cut short or lengthened is
        /// refused, naming the rank it came from.
        #[test]
        fn mismatches_are_refused(e in endpoint(), cut in 1usize..30, extra in 1usize..30) {
            let b = e.encode();
            let nodes = e.towards.len();
            let from = e.rank as usize;
            let refused_from = |r: Result<PeerEndpoint>, from: usize| matches!(
                r, Err(Error::Protocol { from: f, .. }) if f == Rank(from as u32));
            let refused = |r: Result<PeerEndpoint>| refused_from(r, from);
            prop_assert!(refused(decode(&b, nodes + 1, from, 0)));
            prop_assert!(refused_from(decode(&b, nodes, from + 1, 0), from + 1));
            prop_assert!(refused(decode(&b, nodes, from, nodes)));
            prop_assert!(refused(decode(&b[..b.len().saturating_sub(cut)], nodes, from, 0)));
            let mut longer = b.clone();
            longer.resize(longer.len() + extra, 0);
            prop_assert!(refused(decode(&longer, nodes, from, 0)));
            let mut magic = b;
            magic[cut % 8] ^= 0x20;
            prop_assert!(refused(decode(&magic, nodes, from, 0)));
        }

        /// Arbitrary bytes, job sizes and ranks never panic the decoder.
        #[test]
        fn arbitrary_bytes_never_panic(
            b in proptest::collection::vec(any::<u8>(), 0..400),
            nodes in 0usize..20,
            from in 0usize..25,
            me in 0usize..25,
        ) {
            let _ = decode(&b, nodes, from, me);
        }

        /// Valid-looking headers (right magic and length) with arbitrary contents never
        /// panic either, and decode exactly when job size and rank match.
        #[test]
        fn arbitrary_contents_never_panic(
            body in proptest::collection::vec(any::<u8>(), 44..44 + 20 * 8),
            nodes in 0usize..usize::MAX,
            me in 0usize..10,
        ) {
            let n = (body.len() - 44) / 20;
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&body[..44 + 20 * n]);
            let claimed = u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize;
            let from = u32::from_le_bytes([b[12], b[13], b[14], b[15]]) as usize;
            let r = decode(&b, n, from, me);
            prop_assert_eq!(r.is_ok(), claimed == n && me < n);
            let _ = decode(&b, nodes, from, me);
        }
    }
}
