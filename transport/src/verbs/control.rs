//! Control messages on a peer's control queue pair (hello and heartbeat, goodbye, queue-pair
//! reset, the keys of chunks registered on first use, and fragments of two-sided messages), and
//! the reassembly of fragments into messages.
//! Pure encoding and decoding, no device.
//!
//! Every control message is one SEND of at most [`FRAG`] bytes: a 16-byte header, then the
//! fragment's body (only for fragments). Little endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind: 1 hello, 2 fragment, 3 goodbye, 4 reset, 5 reset acknowledged, 6 key request, 7 key reply |
//! | 1 | 1 | flags: bit 0 set on a message's first fragment; a key reply's refusal ([`RemoteFault::code`], 0: granted) |
//! | 2 | 2 | zero |
//! | 4 | 4 | a fragment's message length; a reset's new packet sequence number; a key's chunk |
//! | 8 | 8 | a fragment's tag; a key's region number (low 32 bits) and, in a reply, the rkey (high 32) |
//!
//! A message of `total` bytes is cut into fragments of at most `FRAG - HEADER` bytes that
//! follow each other on one reliable-connected queue pair, which delivers them once and in
//! order: a fragment carries no offset, so the receiver refuses only what order cannot explain
//! (a continuation without a first fragment, a first fragment before the previous message is
//! complete, a fragment of another tag or length, one that goes past the length, a length over
//! the limit).

/// Bytes of one control receive buffer: the largest fragment of a message, header included.
pub(super) const FRAG: usize = 16 << 10;
/// Bytes of a control message's header.
pub(super) const HEADER: usize = 16;

const K_HELLO: u8 = 1;
const K_MSG: u8 = 2;
const K_GOODBYE: u8 = 3;
const K_RESET: u8 = 4;
const K_RESET_ACK: u8 = 5;
const K_KEY_REQUEST: u8 = 6;
const K_KEY_REPLY: u8 = 7;
const F_FIRST: u8 = 1;

use crate::error::RemoteFault;

/// One control message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control<'a> {
    /// Connection set-up and heartbeat: the sender is alive.
    Hello,
    /// A piece of a two-sided message.
    Fragment(Fragment<'a>),
    /// The sender closes in order.
    Goodbye,
    /// The sender's requester queue pair restarts at this packet sequence number: reset the
    /// responder that serves it.
    Reset {
        /// The requester's new first packet sequence number.
        psn: u32,
    },
    /// The responder is reset: the requester may reconnect.
    ResetAck,
    /// The sender wants the rkey of a chunk of one of our regions registered on first use
    /// (registering it now if nothing has used it yet).
    KeyRequest {
        /// The region's number (see `chunks::ChunkedKey`).
        region: u32,
        /// The chunk's index in the region.
        chunk: u32,
    },
    /// The answer to a [`Control::KeyRequest`].
    KeyReply {
        /// The region's number.
        region: u32,
        /// The chunk's index.
        chunk: u32,
        /// The chunk's rkey, or why there is none.
        key: Result<u32, RemoteFault>,
    },
}

/// A piece of a two-sided message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fragment<'a> {
    /// Whether this is the message's first fragment.
    pub(super) first: bool,
    /// The whole message's length.
    pub(super) total: u32,
    /// The message's tag.
    pub(super) tag: u64,
    /// This fragment's bytes.
    pub(super) body: &'a [u8],
}

impl<'a> Control<'a> {
    /// The bytes of the SEND.
    pub(super) fn encode(&self) -> Vec<u8> {
        let (kind, flags, total, tag, body): (u8, u8, u32, u64, &[u8]) = match *self {
            Control::Hello => (K_HELLO, 0, 0, 0, &[]),
            Control::Fragment(f) => (
                K_MSG,
                if f.first { F_FIRST } else { 0 },
                f.total,
                f.tag,
                f.body,
            ),
            Control::Goodbye => (K_GOODBYE, 0, 0, 0, &[]),
            Control::Reset { psn } => (K_RESET, 0, psn, 0, &[]),
            Control::ResetAck => (K_RESET_ACK, 0, 0, 0, &[]),
            Control::KeyRequest { region, chunk } => {
                (K_KEY_REQUEST, 0, chunk, u64::from(region), &[])
            }
            Control::KeyReply { region, chunk, key } => {
                let (refusal, rkey) = match key {
                    Ok(rkey) => (0, rkey),
                    // Codes are small (one byte on this wire).
                    Err(fault) => (fault.code() as u8, 0),
                };
                let tag = u64::from(region) | u64::from(rkey) << 32;
                (K_KEY_REPLY, refusal, chunk, tag, &[])
            }
        };
        let mut bytes = Vec::with_capacity(HEADER + body.len());
        bytes.extend_from_slice(&[kind, flags, 0, 0]);
        bytes.extend_from_slice(&total.to_le_bytes());
        bytes.extend_from_slice(&tag.to_le_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    /// Decodes a received SEND. Fields a kind does not use are ignored.
    ///
    /// # Errors
    /// What is wrong, for a message shorter than the header or of an unknown kind. Never
    /// panics, whatever the bytes.
    pub(super) fn decode(buf: &'a [u8]) -> Result<Control<'a>, String> {
        if buf.len() < HEADER {
            return Err(format!("control message of {} bytes", buf.len()));
        }
        let kind = buf[0];
        let flags = buf[1];
        let total = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&buf[8..16]);
        let tag = u64::from_le_bytes(t);
        let body = &buf[HEADER..];
        match kind {
            K_HELLO => Ok(Control::Hello),
            K_MSG => Ok(Control::Fragment(Fragment {
                first: flags & F_FIRST != 0,
                total,
                tag,
                body,
            })),
            K_GOODBYE => Ok(Control::Goodbye),
            K_RESET => Ok(Control::Reset { psn: total }),
            K_RESET_ACK => Ok(Control::ResetAck),
            K_KEY_REQUEST => Ok(Control::KeyRequest {
                region: tag as u32,
                chunk: total,
            }),
            K_KEY_REPLY => Ok(Control::KeyReply {
                region: tag as u32,
                chunk: total,
                key: match flags {
                    0 => Ok((tag >> 32) as u32),
                    code => Err(RemoteFault::from_code(u32::from(code))
                        .ok_or_else(|| format!("key reply with unknown refusal {code}"))?),
                },
            }),
            other => Err(format!("unknown control message kind {other}")),
        }
    }

    /// Whether the SEND must be signalled even without a waiter: every kind but the frequent
    /// ones (hellos and fragments), so that the control queue drains.
    pub(super) fn signalled(&self) -> bool {
        !matches!(self, Control::Hello | Control::Fragment(_))
    }
}

/// The fragments of a message of `data.len()` bytes (at most `u32::MAX`) with tag `tag`, in
/// sending order; an empty message is one empty first fragment.
pub(super) fn fragments(tag: u64, data: &[u8]) -> impl Iterator<Item = Fragment<'_>> {
    let total = data.len() as u32;
    let mut chunks = data.chunks(FRAG - HEADER);
    let first = chunks.next().unwrap_or(&[]);
    std::iter::once(Fragment {
        first: true,
        total,
        tag,
        body: first,
    })
    .chain(chunks.map(move |body| Fragment {
        first: false,
        total,
        tag,
        body,
    }))
}

#[derive(Debug)]
struct Assembly {
    tag: u64,
    total: usize,
    data: Vec<u8>,
}

/// The message being received from one peer, fragment by fragment.
#[derive(Debug, Default)]
pub(super) struct Reassembly {
    current: Option<Assembly>,
}

impl Reassembly {
    /// Adds the next fragment from the peer; returns the tag and bytes of the message it
    /// completes.
    ///
    /// # Errors
    /// What is wrong with the fragment (see the module's documentation): the peer breaks the
    /// protocol, and what was assembled so far is of no further use.
    pub(super) fn push(
        &mut self,
        f: Fragment<'_>,
        max_message: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, String> {
        let total = f.total as usize;
        if total > max_message {
            return Err(format!(
                "message of {total} bytes, over the limit of {max_message}"
            ));
        }
        if f.first {
            if self.current.is_some() {
                return Err("a new message before the previous one was complete".into());
            }
            self.current = Some(Assembly {
                tag: f.tag,
                total,
                data: Vec::with_capacity(total),
            });
        }
        let Some(a) = self.current.as_mut() else {
            return Err("a continuation without a first fragment".into());
        };
        if a.tag != f.tag || a.total != total || a.data.len() + f.body.len() > total {
            return Err("a fragment that does not continue its message".into());
        }
        a.data.extend_from_slice(f.body);
        if a.data.len() == a.total {
            return Ok(self.current.take().map(|a| (a.tag, a.data)));
        }
        Ok(None)
    }

    /// Whether a message is partly received.
    #[cfg(test)]
    fn pending(&self) -> bool {
        self.current.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BODY: usize = FRAG - HEADER;

    /// Every fragment of `data`, encoded and decoded again, pushed in order.
    fn deliver(
        r: &mut Reassembly,
        tag: u64,
        data: &[u8],
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, String> {
        let mut out = Vec::new();
        for f in fragments(tag, data) {
            let bytes = Control::Fragment(f).encode();
            assert!(bytes.len() <= FRAG);
            let Control::Fragment(g) = Control::decode(&bytes)? else {
                return Err("not a fragment".into());
            };
            out.extend(r.push(g, max)?);
        }
        Ok(out)
    }

    fn control() -> impl Strategy<Value = (u8, u32, u64, bool, Vec<u8>)> {
        (
            0u8..7,
            any::<u32>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
    }

    fn build(k: u8, n: u32, tag: u64, first: bool, body: &[u8]) -> Control<'_> {
        match k {
            0 => Control::Hello,
            1 => Control::Goodbye,
            2 => Control::Reset { psn: n },
            3 => Control::ResetAck,
            4 => Control::KeyRequest {
                region: tag as u32,
                chunk: n,
            },
            5 => Control::KeyReply {
                region: tag as u32,
                chunk: n,
                key: if first {
                    Ok((tag >> 32) as u32)
                } else {
                    Err(RemoteFault::from_code(n % 5 + 1).unwrap_or(RemoteFault::BadKey))
                },
            },
            _ => Control::Fragment(Fragment {
                first,
                total: n,
                tag,
                body,
            }),
        }
    }

    #[test]
    fn layout_is_fixed() {
        let f = Fragment {
            first: true,
            total: 0x0102_0304,
            tag: 9,
            body: b"xy",
        };
        let b = Control::Fragment(f).encode();
        assert_eq!(&b[..8], &[2, 1, 0, 0, 4, 3, 2, 1]);
        assert_eq!(&b[8..16], &9u64.to_le_bytes());
        assert_eq!(&b[16..], b"xy");
        assert_eq!(
            Control::Reset { psn: 7 }.encode(),
            [4, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(Control::Hello.encode()[0], 1);
        assert_eq!(Control::Goodbye.encode()[0], 3);
        assert_eq!(Control::ResetAck.encode()[0], 5);
        assert_eq!(
            Control::KeyReply {
                region: 3,
                chunk: 2,
                key: Ok(0x0a0b_0c0d)
            }
            .encode(),
            [7, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a]
        );
        assert_eq!(
            Control::KeyReply {
                region: 3,
                chunk: 2,
                key: Err(RemoteFault::NoMemory)
            }
            .encode()[..2],
            [7, 5]
        );
        assert!(!Control::Hello.signalled() && !Control::Fragment(f).signalled());
        assert!(Control::Goodbye.signalled() && Control::Reset { psn: 0 }.signalled());
    }

    #[test]
    fn short_and_unknown_messages_are_refused() {
        assert!(Control::decode(&[1; HEADER - 1]).is_err());
        assert!(Control::decode(&[]).is_err());
        let mut b = Control::Hello.encode();
        b[0] = 8;
        assert!(Control::decode(&b).is_err());
        // A key reply refused for a reason this build does not know.
        b[0] = 7;
        b[1] = 200;
        assert!(Control::decode(&b).is_err());
        b[0] = 0;
        assert!(Control::decode(&b).is_err());
    }

    #[test]
    fn empty_and_boundary_messages() {
        for len in [0, 1, BODY - 1, BODY, BODY + 1, 2 * BODY, 3 * BODY + 5] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let n = fragments(3, &data).count();
            assert_eq!(n, len.div_ceil(BODY).max(1), "{len} bytes");
            let mut r = Reassembly::default();
            assert_eq!(deliver(&mut r, 3, &data, 1 << 20), Ok(vec![(3, data)]));
            assert!(!r.pending());
        }
    }

    #[test]
    fn over_the_limit_is_refused_at_the_first_fragment() {
        let mut r = Reassembly::default();
        let data = vec![0u8; 100];
        assert!(deliver(&mut r, 1, &data, 99).is_err());
        assert!(!r.pending());
        assert_eq!(deliver(&mut r, 1, &data, 100), Ok(vec![(1, data)]));
    }

    proptest! {
        /// Every control message decodes to itself.
        #[test]
        fn round_trip((k, n, tag, first, body) in control()) {
            let c = build(k, n, tag, first, &body);
            let bytes = c.encode();
            prop_assert_eq!(Control::decode(&bytes), Ok(c));
        }

        /// Arbitrary bytes never panic the decoder; whatever it accepts encodes back to the
        /// same header fields it uses.
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            match Control::decode(&b) {
                Ok(c) => {
                    let again = c.encode();
                    prop_assert_eq!(again[0], b[0]);
                    prop_assert_eq!(Control::decode(&again), Ok(c));
                }
                Err(_) => prop_assert!(
                    b.len() < HEADER || !(1..=6).contains(&b[0]),
                    "refused a well-formed message"
                ),
            }
        }

        /// Messages sent back to back, cut into fragments, come out whole, in order, once.
        #[test]
        fn messages_survive_fragmentation(
            msgs in proptest::collection::vec(
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..3 * BODY)), 1..4),
        ) {
            let mut r = Reassembly::default();
            for (tag, data) in &msgs {
                let got = deliver(&mut r, *tag, data, 4 * BODY);
                prop_assert_eq!(got, Ok(vec![(*tag, data.clone())]));
            }
            prop_assert!(!r.pending());
        }

        /// A message cut short (its last fragments never arrive) delivers nothing, and the next
        /// first fragment is refused. (At least three fragments, so that keeping two cuts it.)
        #[test]
        fn truncated_messages_deliver_nothing(
            len in 2 * BODY + 1..4 * BODY, keep in 1usize..3,
        ) {
            let data = vec![7u8; len];
            let mut r = Reassembly::default();
            for f in fragments(1, &data).take(keep) {
                prop_assert_eq!(r.push(f, len), Ok(None));
            }
            prop_assert!(r.pending());
            let next = fragments(2, b"x").next().unwrap();
            prop_assert!(r.push(next, len).is_err());
        }

        /// Fragments out of order, duplicated, of another message, or past the message's
        /// length are refused whenever order can tell, and never deliver a wrong message.
        #[test]
        fn disorder_is_refused_or_harmless(
            len in 1usize..4 * BODY,
            order in proptest::collection::vec(0usize..6, 1..8),
            tag in any::<u64>(),
        ) {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frags: Vec<Fragment<'_>> = fragments(tag, &data).collect();
            let mut r = Reassembly::default();
            let mut delivered = Vec::new();
            for &i in &order {
                let f = frags[i % frags.len()];
                match r.push(f, len) {
                    Ok(Some(m)) => delivered.push(m),
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            // What completes is exactly `len` bytes of this message's tag; it is the
            // message itself when the fragments came in sending order.
            for (t, d) in &delivered {
                prop_assert_eq!(*t, tag);
                prop_assert_eq!(d.len(), len);
            }
            let in_order: Vec<usize> = (0..frags.len()).collect();
            if order.iter().map(|i| i % frags.len()).eq(in_order.iter().copied()) {
                prop_assert_eq!(delivered, vec![(tag, data.clone())]);
            }
        }

        /// Fragments made of arbitrary header fields never panic the reassembly, and whatever
        /// it delivers is exactly as long as its first fragment announced.
        #[test]
        fn arbitrary_fragments_never_panic(
            frags in proptest::collection::vec(
                (any::<bool>(), 0u32..200, 0u64..3, proptest::collection::vec(any::<u8>(), 0..80)),
                0..12),
            max in 0usize..300,
        ) {
            let mut r = Reassembly::default();
            for (first, total, tag, body) in &frags {
                let f = Fragment { first: *first, total: *total, tag: *tag, body };
                match r.push(f, max) {
                    Ok(Some((t, d))) => {
                        prop_assert!(d.len() <= max);
                        prop_assert_eq!(t, *tag);
                        prop_assert_eq!(d.len(), *total as usize);
                    }
                    Ok(None) => {}
                    Err(_) => r = Reassembly::default(),
                }
            }
        }

        /// A continuation without a first fragment, and a second first fragment while a
        /// message is incomplete, are refused.
        #[test]
        fn orphans_and_restarts_are_refused(len in BODY + 1..3 * BODY) {
            let data = vec![1u8; len];
            let frags: Vec<Fragment<'_>> = fragments(5, &data).collect();
            let mut r = Reassembly::default();
            prop_assert!(r.push(frags[1], len).is_err());
            let mut r = Reassembly::default();
            prop_assert_eq!(r.push(frags[0], len), Ok(None));
            prop_assert!(r.push(frags[0], len).is_err());
            // A duplicate last fragment goes past the length.
            let mut r = Reassembly::default();
            for f in &frags {
                let _ = r.push(*f, len);
            }
            prop_assert!(!r.pending());
            prop_assert!(r.push(*frags.last().unwrap(), len).is_err());
        }
    }
}
