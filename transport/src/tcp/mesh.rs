//! Connections made on demand: a node connects to a peer the first time it needs it
//! ([`dial`]), and accepts its peers' connections for as long as it runs ([`accept`]), every
//! connection authenticated both ways. Accepting goes through [`crate::gate`], so strangers on
//! the data listener (silent, trickling, or many) cannot delay the real peers.
//!
//! One connection per pair. When two nodes dial each other at once (a crossing), the lower
//! rank's connection is kept: a node that is dialing a peer admits that peer's connection if
//! the peer's rank is lower than its own, and refuses it otherwise; the refused dialer then waits
//! for the other connection, which its own acceptor admits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::auth::{handshake, Role};
use crate::error::{Error, Result};
use crate::gate::{self, Admission, DeadlineStream, GateConfig};
use crate::types::Rank;

use super::conn::Conn;
use super::shared::{Dial, Shared};

const AUTH_CONTEXT: &str = "dsm tcp data connection v1";

/// The acceptor's answer after authentication: this connection is the pair's.
const WELCOME: u8 = 1;
/// The acceptor's answer after authentication: the pair has (or is making) another connection.
const UNWELCOME: u8 = 0;
/// The acceptor's answer after authentication: the node is closing and takes no new peers.
const GONE: u8 = 2;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The connection to `peer`, made now if there is none: connects to its data listener and
/// authenticates, within the connect timeout. One thread dials at a time; others wanting the
/// same peer wait for it.
///
/// # Errors
/// [`Error::Timeout`] when no connection is made within the connect timeout (the peer does not
/// answer), [`Error::Auth`] when the peer fails authentication, [`Error::PeerLost`] when it is
/// closing or has ended (its listener refuses connections), [`Error::Io`] and
/// [`Error::Protocol`] for broken endpoints.
pub(super) fn dial(shared: &Shared, peer: Rank) -> Result<&Arc<Conn>> {
    let slot = &shared.conns[peer.index()];
    let deadline = Instant::now() + shared.config.connect_timeout;
    let mut state = lock(&slot.dial);
    loop {
        if let Some(c) = slot.conn.get() {
            return Ok(c);
        }
        if *state == Dial::Idle {
            break;
        }
        state = wait(slot, state, deadline, peer)?;
    }
    *state = Dial::Dialing;
    drop(state);
    let greeted = connect_one(shared, peer, deadline);
    let mut state = lock(&slot.dial);
    let outcome = match greeted {
        Ok(Greeted::Welcome(s)) => match slot.conn.get() {
            // Cannot happen (the peer welcomes only the pair's one connection), but then the
            // connection we have wins and this one closes.
            Some(c) => Ok(c),
            None => shared.install(peer, s),
        },
        // Crossed: the peer's own connection to us is the pair's; our acceptor admits it.
        Ok(Greeted::Unwelcome) => loop {
            if let Some(c) = slot.conn.get() {
                break Ok(c);
            }
            match wait(slot, state, deadline, peer) {
                Ok(s) => state = s,
                Err(e) => {
                    state = lock(&slot.dial);
                    break Err(e);
                }
            }
        },
        Err(e) => Err(e),
    };
    *state = Dial::Idle;
    slot.made.notify_all();
    outcome
}

/// Waits on `slot` until its connection is made or its dialer gives up, at most until
/// `deadline`.
fn wait<'a>(
    slot: &'a super::shared::Slot,
    state: MutexGuard<'a, Dial>,
    deadline: Instant,
    peer: Rank,
) -> Result<MutexGuard<'a, Dial>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(format!(
            "no connection to rank {peer} was made in time"
        )));
    }
    let (state, _) = slot
        .made
        .wait_timeout(state, left)
        .unwrap_or_else(|e| e.into_inner());
    Ok(state)
}

/// How a dial ended, short of an error.
enum Greeted {
    /// The peer admitted this connection.
    Welcome(TcpStream),
    /// The peer admitted (or will) its own connection to us instead.
    Unwelcome,
}

/// Accepts peers' connections on `listener` until the node closes (the acceptor thread).
pub(super) fn accept(shared: &Shared, listener: &TcpListener) {
    let me = shared.rank;
    let nodes = shared.conns.len();
    let gate = GateConfig::for_peers(
        "data listener",
        shared.config.handshake_timeout,
        nodes.saturating_sub(1),
    );
    let secret = &shared.config.secret;
    let served = gate::serve_until_stopped(
        listener,
        &gate,
        &shared.closing,
        |s: &mut DeadlineStream| {
            handshake(s, secret, AUTH_CONTEXT, Role::Acceptor, me.0)
                .map(|who| Rank(who.peer_rank))
                .map_err(|e| e.to_string())
        },
        |arrival| admit(shared, arrival.value, arrival.stream),
    );
    if let Err(e) = served {
        tracing::error!("rank {me}: the data listener failed, no more peers can connect: {e}");
    }
}

/// Wakes the acceptor thread of a closing node (`closing` is set), so that it sees it at once
/// rather than at its next look: a connection to our own listener, closed straight away.
pub(super) fn stop_accepting(shared: &Shared) {
    let mut at = shared.endpoints[shared.rank.index()];
    if at.ip().is_unspecified() {
        at.set_ip(match at {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    // Best effort: without it the acceptor still stops within the gate's look at its flag.
    let _ = TcpStream::connect_timeout(&at, Duration::from_millis(100));
}

/// Decides about an authenticated connection from `peer` (see the module's rules).
fn admit(shared: &Shared, peer: Rank, mut s: TcpStream) -> Admission {
    let me = shared.rank;
    if peer == me || peer.index() >= shared.conns.len() {
        let _ = s.write_all(&[UNWELCOME]);
        return Admission::Refused(format!("rank {peer} is not a peer of rank {me}"));
    }
    if shared.closing.load(std::sync::atomic::Ordering::Acquire) {
        let _ = s.write_all(&[GONE]);
        return Admission::Refused(format!("rank {me} is closing"));
    }
    let slot = &shared.conns[peer.index()];
    let state = lock(&slot.dial);
    if slot.conn.get().is_some() || (*state == Dial::Dialing && peer > me) {
        // A crossing: both dialed, and ours is (or is being made) the pair's connection. Not
        // a refusal worth a warning: the peer then waits for ours.
        let _ = s.write_all(&[UNWELCOME]);
        tracing::debug!("rank {me}: rank {peer} dialed while we did; ours is kept");
        return Admission::Admitted;
    }
    if let Err(e) = s.write_all(&[WELCOME]).and_then(|()| finish(&s)) {
        return Admission::Refused(format!("answering rank {peer}: {e}"));
    }
    if let Err(e) = shared.install(peer, s) {
        tracing::error!("rank {me}: setting up the connection from rank {peer}: {e}");
    }
    drop(state);
    Admission::Admitted
}

/// A connection as the node keeps it: `TCP_NODELAY`, no socket timeouts.
fn finish(s: &TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(None)?;
    s.set_write_timeout(None)
}

/// Connects to `peer` and authenticates, until `deadline`. A connection closed during the
/// handshake (the peer's listener dropped it among strangers, or its handshake deadline passed
/// on a loaded host) is tried again; a refused one means the peer has ended.
fn connect_one(shared: &Shared, peer: Rank, deadline: Instant) -> Result<Greeted> {
    let addr = shared.endpoints[peer.index()];
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
            Ok(s) => match greet(shared, peer, addr, s, deadline) {
                Ok(g) => return Ok(g),
                Err(e @ Error::Io { .. }) => last = Some(e),
                Err(e) => return Err(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                // A node listens from before its endpoint is published until it has closed:
                // nobody listening means the peer has ended.
                return Err(Error::PeerLost {
                    peer,
                    reason: format!(
                        "its data listener at {addr} refuses connections ({e}): it has ended"
                    ),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = Some(Error::io(format!("connecting to rank {peer} at {addr}"), e));
            }
            Err(e) => return Err(Error::io(format!("connecting to rank {peer} at {addr}"), e)),
        }
        crate::net::backoff(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// Authenticates a new connection to `peer` and reads its answer, all before `deadline`.
fn greet(
    shared: &Shared,
    peer: Rank,
    addr: SocketAddr,
    s: TcpStream,
    deadline: Instant,
) -> Result<Greeted> {
    s.set_nodelay(true)
        .map_err(|e| Error::io("configuring a connection", e))?;
    let mut s = DeadlineStream::until(s, deadline);
    let who = handshake(
        &mut s,
        &shared.config.secret,
        AUTH_CONTEXT,
        Role::Connector,
        shared.rank.0,
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
    match answer[0] {
        WELCOME => {
            let s = s.into_inner();
            finish(&s).map_err(|e| Error::io("configuring a connection", e))?;
            Ok(Greeted::Welcome(s))
        }
        UNWELCOME => Ok(Greeted::Unwelcome),
        GONE => Err(Error::PeerLost {
            peer,
            reason: "it is closing and takes no new connections".into(),
        }),
        other => Err(Error::Protocol {
            from: peer,
            detail: format!("answered {other} to our connection"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;
    use std::time::Duration;

    use crate::api::Transport;
    use crate::tcp::{TcpConfig, TcpTransport};
    use crate::types::{Rank, Tag};

    fn config() -> TcpConfig {
        let mut c = TcpConfig::new(crate::auth::Secret::generate().expect("secret"));
        c.connect_timeout = Duration::from_secs(20);
        c
    }

    /// Every node sends to every other at the same moment, so most pairs dial each other at
    /// once: every message arrives, and each pair ends up with one connection (the two ends
    /// of the same socket), whoever won the crossing.
    #[test]
    fn crossing_dials_leave_one_connection_per_pair() {
        const N: usize = 6;
        for round in 0..4u64 {
            let nodes = TcpTransport::local_job(N, &config()).expect("job");
            let start = Barrier::new(N);
            std::thread::scope(|s| {
                for t in &nodes {
                    let start = &start;
                    s.spawn(move || {
                        let me = t.rank().index();
                        start.wait();
                        for k in 1..N {
                            let to = Rank(((me + k) % N) as u32);
                            t.send(to, Tag(round), &[me as u8]).expect("send");
                        }
                        let mut from: Vec<u8> = (1..N)
                            .map(|_| {
                                let m = t
                                    .recv(None, Some(Tag(round)), Some(Duration::from_secs(30)))
                                    .expect("recv");
                                m.data[0]
                            })
                            .collect();
                        from.sort_unstable();
                        let want: Vec<u8> = (0..N as u8).filter(|&r| r as usize != me).collect();
                        assert_eq!(from, want, "rank {me}");
                    });
                }
            });
            for a in &nodes {
                assert_eq!(a.shared.open_conns().len(), N - 1, "rank {}", a.rank());
                for b in &nodes {
                    if a.rank() == b.rank() {
                        continue;
                    }
                    let ab = a.shared.conn(b.rank().index()).expect("a to b");
                    let ba = b.shared.conn(a.rank().index()).expect("b to a");
                    assert_eq!(
                        ab.stream.local_addr().expect("local"),
                        ba.stream.peer_addr().expect("peer"),
                        "ranks {} and {}: two connections",
                        a.rank(),
                        b.rank()
                    );
                }
            }
        }
    }

    /// A peer that has ended is named lost at once, not after the connect timeout.
    #[test]
    fn dialing_a_peer_that_has_ended_fails_at_once() {
        let mut nodes = TcpTransport::local_job(2, &config()).expect("job");
        let gone = nodes.pop().expect("rank 1");
        gone.close().expect("close");
        drop(gone);
        let start = std::time::Instant::now();
        let err = nodes[0]
            .send(Rank(1), Tag(1), b"anyone?")
            .expect_err("rank 1 has ended");
        assert!(
            matches!(err, crate::Error::PeerLost { peer: Rank(1), .. }),
            "{err}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    /// A node connects only to the peers it talks to; one-sided operations and messages work
    /// on a connection the peer made.
    #[test]
    fn nodes_connect_only_to_the_peers_they_use() {
        let nodes = TcpTransport::local_job(4, &config()).expect("job");
        for t in &nodes {
            assert!(t.shared.open_conns().is_empty(), "rank {}", t.rank());
        }
        nodes[2].send(Rank(0), Tag(1), b"hi").expect("send");
        let m = nodes[0]
            .recv(Some(Rank(2)), Some(Tag(1)), Some(Duration::from_secs(20)))
            .expect("recv");
        assert_eq!(&m.data[..], b"hi");
        // Rank 0 answers over the connection rank 2 made.
        nodes[0].send(Rank(2), Tag(2), b"back").expect("send back");
        let m = nodes[2]
            .recv(Some(Rank(0)), Some(Tag(2)), Some(Duration::from_secs(20)))
            .expect("recv back");
        assert_eq!(&m.data[..], b"back");
        let counts: Vec<usize> = nodes.iter().map(|t| t.shared.open_conns().len()).collect();
        assert_eq!(counts, [1, 0, 1, 0]);
    }
}
