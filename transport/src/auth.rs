//! Mutual authentication of two nodes that share a job secret: an HMAC-SHA256 challenge and
//! response, used both when a node joins the job and when two nodes open a data connection.
//!
//! The secret itself never travels. Each side sends a fresh random nonce; each proves it knows the
//! secret by sending `HMAC(secret, context ‖ role ‖ rank ‖ own nonce ‖ peer nonce)`. The acceptor
//! checks the connector's proof first and answers with a verdict, so a node with the wrong secret
//! gets a clear refusal instead of a dropped connection; the connector then checks the acceptor's
//! proof, so it never hands its data to an impostor.

use std::io::{Read, Write};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

const MAGIC: &[u8; 8] = b"DSMAUTH1";
const NONCE_LEN: usize = 32;
const PROOF_LEN: usize = 32;
const HELLO_LEN: usize = 8 + 1 + 4 + NONCE_LEN;
const ACCEPTED: u8 = 1;
const REFUSED: u8 = 0;

/// Lowercase hexadecimal of `bytes`, two digits a byte: how secrets, and values in a launcher's
/// key-value space, are written.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The bytes of `hex`, two hexadecimal digits (either case) a byte; `None` for an odd length or
/// any other character (a sign or a space included).
pub fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| char::from(c).to_digit(16);
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks_exact(2)
        .map(|p| Some((digit(p[0])? << 4 | digit(p[1])?) as u8))
        .collect()
}

/// The job's shared secret: 32 bytes, written as 64 hexadecimal digits in the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// A fresh random secret from the operating system's generator.
    ///
    /// # Errors
    /// [`Error::Io`] when the system has no entropy source.
    pub fn generate() -> Result<Secret> {
        let mut b = [0u8; 32];
        getrandom::getrandom(&mut b).map_err(|e| {
            Error::io(
                "reading random bytes for a job secret",
                std::io::Error::other(e.to_string()),
            )
        })?;
        Ok(Secret(b))
    }

    /// Parses 64 hexadecimal digits.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for anything else.
    pub fn from_hex(hex: &str) -> Result<Secret> {
        hex_decode(hex.trim())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(Secret)
            .ok_or_else(|| Error::InvalidArgument("a secret is 64 hexadecimal digits".into()))
    }

    /// The secret as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }
}

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that accepted the connection.
    Acceptor,
    /// The side that connected.
    Connector,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Acceptor => b'A',
            Role::Connector => b'C',
        }
    }
}

/// Who the peer said it is, once it proved it knows the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    /// The rank the peer claimed in its hello (`u32::MAX` for "not yet known").
    pub peer_rank: u32,
}

fn proof(
    secret: &Secret,
    context: &str,
    role: u8,
    rank: u32,
    own: &[u8],
    other: &[u8],
) -> HmacSha256 {
    // An HMAC key can be of any length, so `new_from_slice` cannot fail for 32 bytes.
    let mut mac = match HmacSha256::new_from_slice(&secret.0) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(&(context.len() as u32).to_le_bytes());
    mac.update(context.as_bytes());
    mac.update(&[role]);
    mac.update(&rank.to_le_bytes());
    mac.update(own);
    mac.update(other);
    mac
}

/// Runs the handshake on `stream` (which should have read and write timeouts set).
///
/// `context` binds the proof to a purpose (for example `"bootstrap"` or `"tcp-data"`), so a
/// proof captured on one kind of connection is worthless on another. `rank` is our own rank.
///
/// # Errors
/// [`Error::Auth`] when either side fails to prove it knows the secret, [`Error::Protocol`] for a
/// malformed hello, [`Error::Io`] when the connection fails or times out.
pub fn handshake<S: Read + Write>(
    stream: &mut S,
    secret: &Secret,
    context: &str,
    role: Role,
    rank: u32,
) -> Result<Authenticated> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::getrandom(&mut nonce).map_err(|e| {
        Error::io(
            "reading a random nonce",
            std::io::Error::other(e.to_string()),
        )
    })?;
    let mut hello = [0u8; HELLO_LEN];
    hello[..8].copy_from_slice(MAGIC);
    hello[8] = role.byte();
    hello[9..13].copy_from_slice(&rank.to_le_bytes());
    hello[13..].copy_from_slice(&nonce);
    let io = |what: &'static str| {
        move |e: std::io::Error| Error::io(format!("authentication: {what}"), e)
    };
    stream.write_all(&hello).map_err(io("sending hello"))?;
    stream.flush().map_err(io("sending hello"))?;
    let mut peer = [0u8; HELLO_LEN];
    stream
        .read_exact(&mut peer)
        .map_err(io("reading the peer's hello"))?;
    let peer_rank = u32::from_le_bytes([peer[9], peer[10], peer[11], peer[12]]);
    let expected_role = match role {
        Role::Acceptor => Role::Connector.byte(),
        Role::Connector => Role::Acceptor.byte(),
    };
    if &peer[..8] != MAGIC || peer[8] != expected_role {
        return Err(Error::Protocol {
            from: crate::Rank(peer_rank),
            detail: "not a DSM authentication hello (wrong magic or role)".into(),
        });
    }
    let peer_nonce = &peer[13..];
    let mine = proof(secret, context, role.byte(), rank, &nonce, peer_nonce)
        .finalize()
        .into_bytes();
    let check = |got: &[u8]| {
        proof(
            secret,
            context,
            expected_role,
            peer_rank,
            peer_nonce,
            &nonce,
        )
        .verify_slice(got)
        .is_ok()
    };
    let mut theirs = [0u8; PROOF_LEN];
    match role {
        Role::Connector => {
            stream.write_all(&mine).map_err(io("sending proof"))?;
            stream.flush().map_err(io("sending proof"))?;
            let mut verdict = [0u8; 1];
            stream
                .read_exact(&mut verdict)
                .map_err(io("reading the verdict"))?;
            if verdict[0] != ACCEPTED {
                return Err(Error::Auth(
                    "the peer refused our proof: this node does not have the job's secret".into(),
                ));
            }
            stream
                .read_exact(&mut theirs)
                .map_err(io("reading the peer's proof"))?;
            if !check(&theirs) {
                return Err(Error::Auth(format!(
                    "the node that accepted us (claiming rank {peer_rank}) does not know the job's secret"
                )));
            }
        }
        Role::Acceptor => {
            stream
                .read_exact(&mut theirs)
                .map_err(io("reading the peer's proof"))?;
            if !check(&theirs) {
                // Best effort: tell the connector why before the connection is dropped.
                let _ = stream.write_all(&[REFUSED]);
                let _ = stream.flush();
                return Err(Error::Auth(format!(
                    "a node claiming rank {peer_rank} failed to prove it knows the job's secret"
                )));
            }
            stream
                .write_all(&[ACCEPTED])
                .map_err(io("sending the verdict"))?;
            stream.write_all(&mine).map_err(io("sending proof"))?;
            stream.flush().map_err(io("sending proof"))?;
        }
    }
    Ok(Authenticated { peer_rank })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn run(a: Secret, c: Secret) -> (Result<Authenticated>, Result<Authenticated>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            handshake(&mut s, &c, "test", Role::Connector, 3)
        });
        let (mut s, _) = l.accept().unwrap();
        let acc = handshake(&mut s, &a, "test", Role::Acceptor, 0);
        drop(s);
        (acc, t.join().unwrap())
    }

    #[test]
    fn same_secret_authenticates_both_ways() {
        let s = Secret::generate().unwrap();
        let (a, c) = run(s.clone(), s);
        assert_eq!(a.unwrap().peer_rank, 3);
        assert_eq!(c.unwrap().peer_rank, 0);
    }

    #[test]
    fn wrong_secret_is_refused_on_both_sides() {
        let (a, c) = run(Secret::generate().unwrap(), Secret::generate().unwrap());
        assert!(matches!(a, Err(Error::Auth(_))), "{a:?}");
        assert!(matches!(c, Err(Error::Auth(_))), "{c:?}");
    }

    #[test]
    fn hex_round_trip_and_rejection() {
        let s = Secret::generate().unwrap();
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap(), s);
        assert!(Secret::from_hex("abc").is_err());
        assert!(Secret::from_hex(&"zz".repeat(32)).is_err());
        assert!(Secret::from_hex(&"+f".repeat(32)).is_err());
    }

    #[test]
    fn hex_is_two_digits_a_byte_and_nothing_else() {
        assert_eq!(hex_encode(&[0, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(hex_decode("000FA5ff"), Some(vec![0, 0x0f, 0xa5, 0xff]));
        assert_eq!(hex_decode(""), Some(vec![]));
        for bad in ["abc", "zz", "+f", " f", "é0", "0x"] {
            assert_eq!(hex_decode(bad), None, "{bad:?}");
        }
    }
}
