//! Building the mesh: each node connects to the lower ranks and accepts the higher ones, every
//! connection authenticated both ways. Accepting goes through [`crate::gate`], so strangers on the
//! data listener (silent, trickling, or many) cannot delay the real peers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::auth::{handshake, Role};
use crate::error::{Error, Result};
use crate::gate::{self, Admission, DeadlineStream, GateConfig, Served};
use crate::types::Rank;

use super::config::TcpConfig;

const AUTH_CONTEXT: &str = "dsm tcp data connection v1";

/// What building the mesh needs of the node being set up.
pub(super) struct Node<'a> {
    pub(super) rank: Rank,
    pub(super) nodes: usize,
    pub(super) config: &'a TcpConfig,
    pub(super) listener: &'a std::net::TcpListener,
}

/// The acceptor's answer after authentication: this rank should connect to us.
const WELCOME: u8 = 1;
/// The acceptor's answer after authentication: this rank should not (or already did).
const UNWELCOME: u8 = 0;

/// One connection to every other node, indexed by rank (`None` for this node), each in blocking
/// mode with `TCP_NODELAY` and no read timeout.
pub(super) fn streams(p: &Node<'_>, endpoints: &[Vec<u8>]) -> Result<Vec<Option<TcpStream>>> {
    let deadline = Instant::now() + p.config.connect_timeout;
    let mut streams: Vec<Option<TcpStream>> = (0..p.nodes).map(|_| None).collect();
    for (peer, ep) in endpoints.iter().enumerate().take(p.rank.index()) {
        let addr: SocketAddr = std::str::from_utf8(ep)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Protocol {
                from: Rank(peer as u32),
                detail: "endpoint is not a socket address".into(),
            })?;
        streams[peer] = Some(connect_one(p, Rank(peer as u32), addr, deadline)?);
    }
    let mut missing = p.nodes - 1 - p.rank.index();
    if missing == 0 {
        return Ok(streams);
    }
    let gate = GateConfig::for_peers("data listener", p.config.handshake_timeout, missing);
    let (me, nodes, secret) = (p.rank, p.nodes, &p.config.secret);
    let served = gate::serve(
        p.listener,
        &gate,
        deadline,
        |s: &mut DeadlineStream| {
            handshake(s, secret, AUTH_CONTEXT, Role::Acceptor, me.0)
                .map(|who| Rank(who.peer_rank))
                .map_err(|e| e.to_string())
        },
        |arrival| {
            let peer = arrival.value;
            let mut s = arrival.stream;
            let expected = peer.index() > me.index() && peer.index() < nodes;
            let first = expected && streams[peer.index()].is_none();
            let answered = s.write_all(&[if first { WELCOME } else { UNWELCOME }]);
            if !expected {
                return Admission::Refused(format!("rank {peer} should not connect to rank {me}"));
            }
            if !first {
                return Admission::Refused(format!("a second connection claiming rank {peer}"));
            }
            if let Err(e) = answered.and_then(|()| finish(&s)) {
                return Admission::Refused(format!("answering rank {peer}: {e}"));
            }
            streams[peer.index()] = Some(s);
            missing -= 1;
            if missing == 0 {
                Admission::Finished
            } else {
                Admission::Admitted
            }
        },
    )?;
    if served == Served::DeadlinePassed {
        let waiting: Vec<String> = (p.rank.index() + 1..p.nodes)
            .filter(|r| streams[*r].is_none())
            .map(|r| r.to_string())
            .collect();
        return Err(Error::Timeout(format!(
            "ranks {} did not connect within {:?}",
            waiting.join(", "),
            p.config.connect_timeout
        )));
    }
    Ok(streams)
}

/// A connection as the mesh keeps it: `TCP_NODELAY`, no socket timeouts.
fn finish(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)
}

/// Connects to `peer` and authenticates, until `deadline`. A connection closed during the
/// handshake (the peer's listener dropped it among strangers, or its handshake deadline passed
/// on a loaded host) is tried again, as is one refused (the peer not listening yet).
fn connect_one(p: &Node<'_>, peer: Rank, addr: SocketAddr, deadline: Instant) -> Result<TcpStream> {
    let mut backoff = Duration::from_millis(5);
    let mut last: Option<Error> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let last = last.map(|e| format!(" (last: {e})")).unwrap_or_default();
            return Err(Error::Timeout(format!(
                "connecting to rank {peer} at {addr}{last}"
            )));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => match greet(p, peer, addr, s, deadline) {
                Ok(s) => return Ok(s),
                Err(e @ Error::Io { .. }) => last = Some(e),
                Err(e) => return Err(e),
            },
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                ) =>
            {
                // The peer's listener is bound before its endpoint is published, so this
                // only happens for a stale endpoint; retry until the deadline.
                last = Some(Error::io(format!("connecting to rank {peer} at {addr}"), e));
            }
            Err(e) => return Err(Error::io(format!("connecting to rank {peer} at {addr}"), e)),
        }
        crate::net::backoff(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// Authenticates a new connection to `peer` and waits for its welcome, all before `deadline`.
fn greet(
    p: &Node<'_>,
    peer: Rank,
    addr: SocketAddr,
    s: TcpStream,
    deadline: Instant,
) -> Result<TcpStream> {
    s.set_nodelay(true)
        .map_err(|e| Error::io("configuring a connection", e))?;
    let mut s = DeadlineStream::until(s, deadline);
    let who = handshake(
        &mut s,
        &p.config.secret,
        AUTH_CONTEXT,
        Role::Connector,
        p.rank.0,
    )?;
    if who.peer_rank != peer.0 {
        return Err(Error::Protocol {
            from: peer,
            detail: format!("the node at {addr} says it is rank {}", who.peer_rank),
        });
    }
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer)
        .map_err(|e| Error::io(format!("waiting for rank {peer} to accept us"), e))?;
    if answer[0] != WELCOME {
        return Err(Error::Protocol {
            from: peer,
            detail: "refused our rank".into(),
        });
    }
    let s = s.into_inner();
    finish(&s).map_err(|e| Error::io("configuring a connection", e))?;
    Ok(s)
}
