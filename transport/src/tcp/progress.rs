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

/// Bytes read from one connection before the progress thread turns to the others.
const READ_BUDGET: usize = 4 << 20;

/// How long a closing node keeps flushing queued frames before it gives up.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Runs until the transport is closed.
pub(crate) fn run(shared: Arc<Shared>, mut poll: Poll) {
    let conns: Vec<&Arc<Conn>> = shared.conns.iter().flatten().collect();
    for conn in &conns {
        let fd = conn.stream.as_raw_fd();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            poll.registry()
                .register(&mut SourceFd(&fd), Token(conn.peer.index()), interest)
        {
            shared.peer_down(
                conn,
                Error::io("registering a connection with the poller", e),
            );
        }
    }
    let tick =
        (shared.config.peer_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut events = Events::with_capacity(256);
    let mut last_tick = Instant::now();
    let mut last_event = Instant::now();
    let mut closing_since: Option<Instant> = None;
    let mut write_shut = false;
    // Connections whose read budget ran out: served again on the next turn, events or not.
    let mut backlog: Vec<Arc<Conn>> = Vec::new();
    loop {
        // Right after activity, poll without sleeping for a while: the next request of a
        // latency-bound peer usually comes within a round trip, and waking up costs more.
        let timeout = if !backlog.is_empty() || last_event.elapsed() < shared.config.spin {
            Duration::ZERO
        } else if closing_since.is_some() {
            Duration::from_millis(10)
        } else {
            tick
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("progress thread: poll failed: {e}");
                for conn in &conns {
                    let err = std::io::Error::new(e.kind(), e.to_string());
                    shared.peer_down(conn, Error::io("polling connections", err));
                }
                return;
            }
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let Some(Some(conn)) = shared.conns.get(ev.token().0) else {
                continue;
            };
            last_event = Instant::now();
            if ev.is_writable() {
                if let Err(e) = conn.flush_queue() {
                    shared.peer_down(conn, send_failed(conn, &e));
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                conn.rx_pending.store(true, Ordering::SeqCst);
                if drain(&shared, conn, Reading::UntilWouldBlock)
                    && !backlog.iter().any(|c| Arc::ptr_eq(c, conn))
                {
                    backlog.push(Arc::clone(conn));
                }
            }
        }
        backlog.retain(|conn| {
            conn.rx_pending.store(true, Ordering::SeqCst);
            drain(&shared, conn, Reading::UntilWouldBlock)
        });
        let now = Instant::now();
        if now.duration_since(last_tick) >= tick {
            last_tick = now;
            heartbeat(&shared, &conns);
        }
        if shared.stopping.load(Ordering::SeqCst) {
            // Closing in order: flush what is queued (our goodbye last), shut our side, then keep
            // reading until every peer has shut its side too, so that no unread byte makes the
            // kernel answer with a reset that could destroy data the peer has not read yet.
            let since = *closing_since.get_or_insert(now);
            let late = now.duration_since(since) >= CLOSE_FLUSH;
            let busy = conns.iter().any(|c| c.state() != DOWN && c.has_queued());
            if !busy && !write_shut {
                for conn in &conns {
                    let _ = conn.stream.shutdown(std::net::Shutdown::Write);
                }
                write_shut = true;
            }
            let open = conns.iter().any(|c| c.state() != DOWN);
            if (write_shut && !open) || late {
                for conn in &conns {
                    conn.mark_down(Error::Closed);
                }
                return;
            }
        }
    }
}

fn lost(peer: Rank, reason: String) -> Error {
    Error::PeerLost { peer, reason }
}

/// The error for a failed send: an orderly close when the peer said goodbye, a loss otherwise.
pub(crate) fn send_failed(conn: &Conn, e: &std::io::Error) -> Error {
    if conn.state() == CLOSING {
        Error::PeerClosed(conn.peer)
    } else {
        lost(conn.peer, format!("send failed: {e}"))
    }
}

fn heartbeat(shared: &Shared, conns: &[&Arc<Conn>]) {
    let now_ms = shared.now_ms();
    let tick_ms = (shared.config.peer_timeout / 4).as_millis() as u64;
    let timeout_ms = shared.config.peer_timeout.as_millis() as u64;
    for conn in conns {
        if conn.state() == DOWN {
            continue;
        }
        // Until a peer has said anything it may still be connecting to the others.
        let limit = if conn.heard.load(Ordering::Relaxed) {
            timeout_ms
        } else {
            timeout_ms + shared.config.connect_timeout.as_millis() as u64
        };
        if now_ms.saturating_sub(conn.last_recv_ms.load(Ordering::Relaxed)) > limit {
            let reason = format!(
                "silent for more than {:?} (no heartbeat)",
                shared.config.peer_timeout
            );
            shared.peer_down(conn, lost(conn.peer, reason));
            continue;
        }
        if now_ms.saturating_sub(conn.last_send_ms.load(Ordering::Relaxed)) >= tick_ms {
            let _ = conn.send(Header::new(Kind::Heartbeat), Payload::None, now_ms);
        }
    }
}

/// How far a reader reads before it lets go of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Until the socket would block or ends: what the progress thread must do on an
    /// edge-triggered event (an end of stream queued behind data raises no new event).
    UntilWouldBlock,
    /// Until a read comes back short: enough for a thread waiting on a response, and one system
    /// call fewer per round trip; the progress thread still gets the event for anything left.
    UntilShort,
}

/// Reads and handles everything available on `conn`, unless another thread is already doing
/// so. Any thread may call it: the progress thread on a readable event, or a thread waiting for
/// a response on this connection (which saves a wake-up of the progress thread per round trip).
///
/// Edge-triggered readiness is never lost: the progress thread sets `rx_pending` before it tries
/// the lock, and whoever holds the lock checks `rx_pending` again after releasing it.
///
/// Returns true when data may be left unread because the read budget ran out: the caller (the
/// progress thread) must come back without waiting for an event.
pub(crate) fn drain(shared: &Shared, conn: &Conn, how: Reading) -> bool {
    let mut how = how;
    loop {
        let Ok(mut rx) = conn.rx.try_lock() else {
            return false;
        };
        conn.rx_pending.store(false, Ordering::SeqCst);
        if read_available(shared, conn, &mut rx, how) {
            return true;
        }
        // Readiness that arrived meanwhile was meant for the progress thread: read it fully.
        how = Reading::UntilWouldBlock;
        drop(rx);
        if !conn.rx_pending.load(Ordering::SeqCst) {
            return false;
        }
    }
}

/// Reads until the socket would block, handling each complete frame.
/// Returns true when it stopped with data possibly left (the read budget ran out).
fn read_available(shared: &Shared, conn: &Conn, reader: &mut FrameReader, how: Reading) -> bool {
    if conn.state() == DOWN {
        return false;
    }
    let mut read = 0usize;
    loop {
        let mut stream = &conn.stream;
        match reader.fill_from(&mut stream) {
            Ok(0) => {
                // After the peer's goodbye, or while we close ourselves, an end of stream is the
                // orderly end of the connection.
                let err = if conn.state() == CLOSING || shared.closing.load(Ordering::SeqCst) {
                    Error::PeerClosed(conn.peer)
                } else {
                    lost(
                        conn.peer,
                        "connection closed without goodbye (process died?)".into(),
                    )
                };
                handle_frames(shared, conn, reader);
                shared.peer_down(conn, err);
                return false;
            }
            Ok(n) => {
                conn.last_recv_ms.store(shared.now_ms(), Ordering::Relaxed);
                conn.heard.store(true, Ordering::Relaxed);
                read += n;
                if read >= READ_BUDGET && how == Reading::UntilWouldBlock {
                    // Let the other peers have a turn; the progress thread comes back here.
                    handle_frames(shared, conn, reader);
                    return true;
                }
                if !handle_frames(shared, conn, reader)
                    || (how == Reading::UntilShort && reader.drained())
                {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if conn.state() == CLOSING || shared.closing.load(Ordering::SeqCst) => {
                tracing::debug!("rank {}: receive after goodbye: {e}", conn.peer);
                shared.peer_down(conn, Error::PeerClosed(conn.peer));
                return false;
            }
            Err(e) => {
                shared.peer_down(conn, lost(conn.peer, format!("receive failed: {e}")));
                return false;
            }
        }
    }
}

/// Handles every complete frame buffered in `reader`. Returns false when the connection was
/// closed for a protocol violation.
fn handle_frames(shared: &Shared, conn: &Conn, reader: &mut FrameReader) -> bool {
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => {
                if let Err(detail) = handle(shared, conn, frame) {
                    tracing::error!("rank {}: protocol violation: {detail}", conn.peer);
                    shared.peer_down(
                        conn,
                        Error::Protocol {
                            from: conn.peer,
                            detail,
                        },
                    );
                    return false;
                }
            }
            Ok(None) => return true,
            Err(e) => {
                tracing::error!("rank {}: bad frame: {e}", conn.peer);
                shared.peer_down(
                    conn,
                    Error::Protocol {
                        from: conn.peer,
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
