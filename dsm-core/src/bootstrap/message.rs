//! The bootstrap's messages and their encoding: pure code, no I/O.
//!
//! Every message is a 4-byte little-endian length followed by that many bytes; the first byte
//! of the body is the kind.
//!
//! | kind | body after the kind byte |
//! |---|---|
//! | 1 `Join` | version u8, rank u32, nodes u32, endpoint bytes |
//! | 2 `Table` | nodes u32, then per rank: length u32 and endpoint bytes |
//! | 3 `Refuse` | a UTF-8 reason |

/// Version of the bootstrap protocol.
pub const VERSION: u8 = 1;
/// Largest endpoint a node may publish.
pub const MAX_ENDPOINT: usize = 64 * 1024;
/// Largest message accepted from a peer.
pub const MAX_MESSAGE: usize = 64 << 20;

/// A bootstrap message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A node asks to join: who it is and how to reach it.
    Join {
        /// Its rank.
        rank: u32,
        /// The job size it was told.
        nodes: u32,
        /// Its transport endpoint.
        endpoint: Vec<u8>,
    },
    /// Rank 0's answer: every node's endpoint, indexed by rank.
    Table(Vec<Vec<u8>>),
    /// Rank 0 refuses the join, saying why.
    Refuse(String),
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
                endpoint,
            } => {
                b.push(1);
                b.push(VERSION);
                b.extend_from_slice(&rank.to_le_bytes());
                b.extend_from_slice(&nodes.to_le_bytes());
                b.extend_from_slice(endpoint);
            }
            Message::Table(endpoints) => {
                b.push(2);
                b.extend_from_slice(&(endpoints.len() as u32).to_le_bytes());
                for e in endpoints {
                    b.extend_from_slice(&(e.len() as u32).to_le_bytes());
                    b.extend_from_slice(e);
                }
            }
            Message::Refuse(reason) => {
                b.push(3);
                b.extend_from_slice(reason.as_bytes());
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
                let endpoint = rest[8..].to_vec();
                if endpoint.len() > MAX_ENDPOINT {
                    return Err(DecodeError("endpoint too long"));
                }
                Ok(Message::Join {
                    rank,
                    nodes,
                    endpoint,
                })
            }
            2 => {
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
                Ok(Message::Table(endpoints))
            }
            3 => Ok(Message::Refuse(String::from_utf8_lossy(rest).into_owned())),
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
                endpoint: b"127.0.0.1:5".to_vec(),
            },
            Message::Table(vec![b"a".to_vec(), vec![], b"ccc".to_vec()]),
            Message::Refuse("no".into()),
        ] {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Message::decode(&[]).is_err());
        assert!(Message::decode(&[9]).is_err());
        assert!(Message::decode(&[1, 2, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Message::decode(&[2, 5, 0, 0, 0]).is_err());
        assert!(Message::decode(&[2, 255, 255, 255, 255, 1, 0]).is_err());
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
