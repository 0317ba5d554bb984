//! The bootstrap's messages and their encoding: pure code, no I/O.
//!
//! Every message is a 4-byte little-endian length followed by that many bytes; the first byte
//! of the body is the kind.
//!
//! | kind | body after the kind byte |
//! |---|---|
//! | 1 `Join` | version u8, rank u32, nodes u32, the node's tree listener address (UTF-8; empty for a leaf) |
//! | 2 `Table` | nodes u32, then per rank: length u32 and endpoint bytes |
//! | 3 `Refuse` | a UTF-8 reason |
//! | 4 `Parent` | the parent's tree listener address (UTF-8); empty when the parent is rank 0, on this connection |
//! | 5 `Subtree` | first rank u32, then as `Table`: count u32, per rank length u32 and endpoint bytes |

/// Version of the bootstrap protocol (2: the endpoints travel through a tree, not rank 0).
pub const VERSION: u8 = 2;
/// Largest endpoint a node may publish.
pub const MAX_ENDPOINT: usize = 64 * 1024;
/// Longest tree listener address.
pub const MAX_ADDRESS: usize = 256;
/// Largest message accepted from a peer.
pub const MAX_MESSAGE: usize = 64 << 20;

/// A bootstrap message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A node introduces itself to rank 0: who it is and where its children in the tree
    /// reach it.
    Join {
        /// Its rank.
        rank: u32,
        /// The job size it was told.
        nodes: u32,
        /// Its tree listener's address (`ip:port`, UTF-8), empty when it has no children.
        listener: Vec<u8>,
    },
    /// Every node's endpoint, indexed by rank: sent down the tree.
    Table(Vec<Vec<u8>>),
    /// The node refuses the join or the subtree, saying why.
    Refuse(String),
    /// Rank 0's answer to a join: the parent's tree listener address, or nothing when the
    /// parent is rank 0 itself (the node stays on this connection).
    Parent(Vec<u8>),
    /// The endpoints of a subtree, the contiguous ranks from `first`: sent up the tree.
    Subtree {
        /// The subtree's root, its first rank.
        first: u32,
        /// The endpoints of ranks `first`, `first + 1`, ...
        endpoints: Vec<Vec<u8>>,
    },
}

/// Encodes a list of endpoints: count u32, then per endpoint its length u32 and its bytes.
fn encode_list(b: &mut Vec<u8>, endpoints: &[Vec<u8>]) {
    b.extend_from_slice(&(endpoints.len() as u32).to_le_bytes());
    for e in endpoints {
        b.extend_from_slice(&(e.len() as u32).to_le_bytes());
        b.extend_from_slice(e);
    }
}

/// Decodes what [`encode_list`] wrote: the whole of `rest`.
fn decode_list(rest: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let n = u32_at(rest, 0)? as usize;
    let mut at = 4;
    let mut endpoints = Vec::new();
    for _ in 0..n {
        let len = u32_at(rest, at)? as usize;
        at += 4;
        if len > MAX_ENDPOINT {
            return Err(DecodeError("endpoint too long"));
        }
        let e = rest
            .get(at..at + len)
            .ok_or(DecodeError("truncated table"))?;
        endpoints.push(e.to_vec());
        at += len;
    }
    if at != rest.len() {
        return Err(DecodeError("trailing bytes after the table"));
    }
    Ok(endpoints)
}

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed bootstrap message: {0}")]
pub struct DecodeError(pub &'static str);

fn u32_at(b: &[u8], at: usize) -> Result<u32, DecodeError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(DecodeError("truncated"))
}

impl Message {
    /// Encodes the body (without the length prefix).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Message::Join {
                rank,
                nodes,
                listener,
            } => {
                b.push(1);
                b.push(VERSION);
                b.extend_from_slice(&rank.to_le_bytes());
                b.extend_from_slice(&nodes.to_le_bytes());
                b.extend_from_slice(listener);
            }
            Message::Table(endpoints) => {
                b.push(2);
                encode_list(&mut b, endpoints);
            }
            Message::Refuse(reason) => {
                b.push(3);
                b.extend_from_slice(reason.as_bytes());
            }
            Message::Parent(addr) => {
                b.push(4);
                b.extend_from_slice(addr);
            }
            Message::Subtree { first, endpoints } => {
                b.push(5);
                b.extend_from_slice(&first.to_le_bytes());
                encode_list(&mut b, endpoints);
            }
        }
        b
    }

    /// Decodes a body.
    ///
    /// # Errors
    /// [`DecodeError`] for anything that is not a well-formed message.
    pub fn decode(b: &[u8]) -> Result<Message, DecodeError> {
        let (&kind, rest) = b.split_first().ok_or(DecodeError("empty message"))?;
        match kind {
            1 => {
                let (&version, rest) = rest.split_first().ok_or(DecodeError("truncated join"))?;
                if version != VERSION {
                    return Err(DecodeError("unsupported bootstrap version"));
                }
                let rank = u32_at(rest, 0)?;
                let nodes = u32_at(rest, 4)?;
                let listener = rest[8..].to_vec();
                if listener.len() > MAX_ADDRESS {
                    return Err(DecodeError("listener address too long"));
                }
                Ok(Message::Join {
                    rank,
                    nodes,
                    listener,
                })
            }
            2 => Ok(Message::Table(decode_list(rest)?)),
            3 => Ok(Message::Refuse(String::from_utf8_lossy(rest).into_owned())),
            4 => {
                if rest.len() > MAX_ADDRESS {
                    return Err(DecodeError("parent address too long"));
                }
                Ok(Message::Parent(rest.to_vec()))
            }
            5 => Ok(Message::Subtree {
                first: u32_at(rest, 0)?,
                endpoints: decode_list(&rest[4..])?,
            }),
            _ => Err(DecodeError("unknown message kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        for m in [
            Message::Join {
                rank: 3,
                nodes: 4,
                listener: b"127.0.0.1:5".to_vec(),
            },
            Message::Table(vec![b"a".to_vec(), vec![], b"ccc".to_vec()]),
            Message::Refuse("no".into()),
            Message::Parent(b"10.0.0.1:7".to_vec()),
            Message::Parent(Vec::new()),
            Message::Subtree {
                first: 4,
                endpoints: vec![b"x".to_vec(), b"yy".to_vec()],
            },
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Message::decode(&[]).is_err());
        assert!(Message::decode(&[9]).is_err());
        assert!(Message::decode(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Message::decode(&[2, 5, 0, 0, 0]).is_err());
        assert!(Message::decode(&[2, 255, 255, 255, 255, 1, 0]).is_err());
        assert!(Message::decode(&[5, 1, 0, 0]).is_err());
        assert!(Message::decode(&[5, 1, 0, 0, 0, 1, 0, 0, 0]).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(m) = Message::decode(&b) {
                // Anything accepted re-encodes to something that decodes the same.
                prop_assert_eq!(Message::decode(&m.encode()).unwrap(), m);
            }
        }
    }
}
