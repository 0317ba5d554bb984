//! The progress thread of the tcp backend: it reads every connection, serves peers' one-sided
//! requests against this node's registered memory (the home CPU playing the NIC), completes our
//! own requests as their responses arrive, sends heartbeats, and notices lost peers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::error::{Error, RemoteFault};
use crate::exec;
use crate::types::{Message, Rank, Tag};
use crate::wire::{Frame, FrameReader, Header, Kind};

use super::conn::{Conn, Payload, CLOSING, DOWN};
use super::Shared;

pub(crate) const WAKER: Token = Token(usize::MAX);

/// How long a closing node keeps flushing queued frames before it gives up.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

struct Peer {
    conn: Arc<Conn>,
    reader: FrameReader,
    last_recv: Instant,
}

/// Runs until the transport is closed.
pub(crate) fn run(shared: Arc<Shared>, mut poll: Poll) {
    let mut peers: Vec<Option<Peer>> = shared
        .conns
        .iter()
        .map(|c| {
            c.as_ref().map(|conn| Peer {
                conn: Arc::clone(conn),
                reader: FrameReader::new(shared.config.max_payload),
                last_recv: Instant::now(),
            })
        })
        .collect();
    for (i, p) in peers.iter().enumerate() {
        if let Some(p) = p {
            let fd = p.conn.stream.as_raw_fd();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = poll
                .registry()
                .register(&mut SourceFd(&fd), Token(i), interest)
            {
                p.conn
                    .mark_down(Error::io("registering a connection with the poller", e));
            }
        }
    }
    let tick =
        (shared.config.peer_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut events = Events::with_capacity(256);
    let mut last_tick = Instant::now();
    let mut closing_since: Option<Instant> = None;
    loop {
        let timeout = if closing_since.is_some() {
            Duration::from_millis(10)
        } else {
            tick
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("progress thread: poll failed: {e}");
                for p in peers.iter().flatten() {
                    shared.peer_down(
                        &p.conn,
                        Error::io(
                            "polling connections",
                            std::io::Error::new(e.kind(), e.to_string()),
                        ),
                    );
                }
                return;
            }
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let Some(Some(peer)) = peers.get_mut(ev.token().0) else {
                continue;
            };
            if ev.is_writable() {
                if let Err(e) = peer.conn.flush_queue() {
                    shared.peer_down(
                        &peer.conn,
                        lost(peer.conn.peer, format!("send failed: {e}")),
                    );
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                read_peer(&shared, peer);
            }
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= tick {
            last_tick = now;
            heartbeat(&shared, &mut peers, now);
        }
        if shared.closing.load(Ordering::SeqCst) {
            let since = *closing_since.get_or_insert(now);
            let busy = peers
                .iter()
                .flatten()
                .any(|p| p.conn.state() != DOWN && p.conn.has_queued());
            if !busy || now.duration_since(since) >= CLOSE_FLUSH {
                for p in peers.iter().flatten() {
                    let _ = p.conn.stream.shutdown(std::net::Shutdown::Write);
                    p.conn.mark_down(Error::Closed);
                }
                return;
            }
        }
    }
}

fn lost(peer: Rank, reason: String) -> Error {
    Error::PeerLost { peer, reason }
}

fn heartbeat(shared: &Shared, peers: &mut [Option<Peer>], now: Instant) {
    let now_ms = shared.now_ms();
    let tick_ms = (shared.config.peer_timeout / 4).as_millis() as u64;
    for p in peers.iter_mut().flatten() {
        if p.conn.state() == DOWN {
            continue;
        }
        if now.duration_since(p.last_recv) > shared.config.peer_timeout {
            shared.peer_down(
                &p.conn,
                lost(
                    p.conn.peer,
                    format!(
                        "silent for more than {:?} (no heartbeat)",
                        shared.config.peer_timeout
                    ),
                ),
            );
            continue;
        }
        if now_ms.saturating_sub(p.conn.last_send_ms.load(Ordering::Relaxed)) >= tick_ms {
            let _ = p
                .conn
                .send(Header::new(Kind::Heartbeat), Payload::None, now_ms);
        }
    }
}

/// Reads everything available from one peer and handles each frame.
fn read_peer(shared: &Shared, peer: &mut Peer) {
    if peer.conn.state() == DOWN {
        return;
    }
    loop {
        let mut stream = &peer.conn.stream;
        match peer.reader.fill_from(&mut stream) {
            Ok(0) => {
                let err = if peer.conn.state() == CLOSING {
                    Error::PeerClosed(peer.conn.peer)
                } else {
                    lost(
                        peer.conn.peer,
                        "connection closed without goodbye (process died?)".into(),
                    )
                };
                handle_frames(shared, peer);
                shared.peer_down(&peer.conn, err);
                return;
            }
            Ok(_) => {
                peer.last_recv = Instant::now();
                if !handle_frames(shared, peer) {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                shared.peer_down(
                    &peer.conn,
                    lost(peer.conn.peer, format!("receive failed: {e}")),
                );
                return;
            }
        }
    }
}

/// Handles every complete frame buffered for `peer`. Returns false when the connection was
/// closed for a protocol violation.
fn handle_frames(shared: &Shared, peer: &mut Peer) -> bool {
    loop {
        match peer.reader.next_frame() {
            Ok(Some(frame)) => {
                if let Err(detail) = handle(shared, &peer.conn, frame) {
                    tracing::error!("rank {}: protocol violation: {detail}", peer.conn.peer);
                    shared.peer_down(
                        &peer.conn,
                        Error::Protocol {
                            from: peer.conn.peer,
                            detail,
                        },
                    );
                    return false;
                }
            }
            Ok(None) => return true,
            Err(e) => {
                tracing::error!("rank {}: bad frame: {e}", peer.conn.peer);
                shared.peer_down(
                    &peer.conn,
                    Error::Protocol {
                        from: peer.conn.peer,
                        detail: e.to_string(),
                    },
                );
                return false;
            }
        }
    }
}

fn respond(
    shared: &Shared,
    conn: &Conn,
    id: u64,
    outcome: Result<u64, RemoteFault>,
    payload: Payload,
) {
    let mut h = Header::new(Kind::Response);
    h.id = id;
    match outcome {
        Ok(v) => h.b = v,
        Err(f) => h.a = u64::from(f.code()),
    }
    let payload = if h.a == 0 { payload } else { Payload::None };
    // A failed send marks the connection down; nothing else to do here.
    let _ = conn.send(h, payload, shared.now_ms());
}

/// Handles one frame; an `Err` is a protocol violation that closes the connection.
fn handle(shared: &Shared, conn: &Conn, frame: Frame<'_>) -> Result<(), String> {
    let h = frame.header;
    let table = &shared.regions;
    match h.kind {
        Kind::Read => {
            match exec::range(table, h.a, h.b, h.c) {
                Ok((region, _)) => {
                    // `range` checked b..b+c against the region, and `c` is at most the frame
                    // limit, so both fit in usize.
                    let payload = Payload::Region {
                        region,
                        offset: h.b as usize,
                        len: h.c as usize,
                    };
                    respond(shared, conn, h.id, Ok(0), payload);
                }
                Err(f) => respond(shared, conn, h.id, Err(f), Payload::None),
            }
        }
        Kind::Write => {
            let r = exec::write(table, h.a, h.b, frame.payload);
            respond(shared, conn, h.id, r.map(|()| 0), Payload::None);
        }
        Kind::CompareSwap => {
            let r = exec::compare_swap(table, h.a, h.b, h.c, h.d);
            respond(shared, conn, h.id, r, Payload::None);
        }
        Kind::FetchAdd => {
            let r = exec::fetch_add(table, h.a, h.b, h.c);
            respond(shared, conn, h.id, r, Payload::None);
        }
        Kind::Flush => respond(shared, conn, h.id, Ok(0), Payload::None),
        Kind::Response => {
            let pending = conn
                .take_pending(h.id)
                .ok_or_else(|| format!("response to request {} that is not outstanding", h.id))?;
            if h.a != 0 {
                let fault = u32::try_from(h.a)
                    .ok()
                    .and_then(RemoteFault::from_code)
                    .ok_or_else(|| format!("unknown status code {}", h.a))?;
                pending.completer.fail(Error::Remote {
                    peer: conn.peer,
                    fault,
                });
                return Ok(());
            }
            match &pending.dest {
                Some(dest) => {
                    if frame.payload.len() != dest.len() {
                        let detail = format!(
                            "read response of {} bytes for a read of {}",
                            frame.payload.len(),
                            dest.len()
                        );
                        pending.completer.fail(Error::Protocol {
                            from: conn.peer,
                            detail: detail.clone(),
                        });
                        return Err(detail);
                    }
                    // The LocalSlice was bounds-checked when it was made.
                    if let Err(e) = dest.region().write_at(dest.offset(), frame.payload) {
                        pending.completer.fail(e);
                        return Ok(());
                    }
                    pending.completer.complete(0);
                }
                None => {
                    if !frame.payload.is_empty() {
                        pending.completer.fail(Error::Protocol {
                            from: conn.peer,
                            detail: "unexpected payload".into(),
                        });
                        return Err("payload on a response that carries none".into());
                    }
                    pending.completer.complete(h.b);
                }
            }
        }
        Kind::Message => {
            shared.mailbox.deliver(Message {
                source: conn.peer,
                tag: Tag(h.a),
                data: frame.payload.to_vec(),
            });
        }
        Kind::Heartbeat => {}
        Kind::Goodbye => conn.set_closing(),
    }
    Ok(())
}
