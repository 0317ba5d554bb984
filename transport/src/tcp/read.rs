//! Reading a connection: whoever reads it (the progress thread on an event, or a thread waiting
//! for a response) takes its receive side, reads what is available, and hands each complete
//! frame to `handle.rs`; large payloads are read straight into their destination.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::error::Error;
use crate::exec;
use crate::types::{Message, Tag};
use crate::wire::{Header, Kind};

use super::conn::{lost, Conn, Direct, DirectEnd, DirectInto, Payload, Rx, CLOSING, DOWN};
use super::handle::{handle, respond};
use super::shared::Shared;

/// Bytes read from one connection before the progress thread turns to the others.
const READ_BUDGET: usize = 4 << 20;

/// Who reads a connection, which decides how far it reads before it lets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// The progress thread on a readable event that does not report a closed peer: it may stop
    /// at a short read (an end of stream that arrives later raises a new event), and stops when
    /// its budget runs out, to come back on its next turn.
    Event,
    /// The progress thread on an event that reports the peer closed or failed: read until the
    /// socket would block or ends (no further event would come for what is queued).
    EventClosed,
    /// A thread waiting for a response: stops at a short read, one system call fewer per round
    /// trip; the progress thread still gets the event for anything that arrives later.
    Waiter,
}

/// What [`drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Another thread holds the connection's receive side (and will see `rx_pending`).
    Busy,
    /// Read until there was nothing more.
    Done,
    /// Stopped because the read budget ran out: come back without waiting for an event.
    More,
}

/// Reads and handles everything available on `conn`, unless another thread is already doing
/// so. Any thread may call it: the progress thread on a readable event, or a thread waiting for
/// a response on this connection (which saves a wake-up of the progress thread per round trip).
///
/// Edge-triggered readiness is never lost: the progress thread sets `rx_pending` before it tries
/// the lock, and whoever holds the lock checks `rx_pending` again after releasing it.
///
/// Only the progress thread stops at the read budget ([`Drained::More`]): it comes back on its
/// next turn. Another thread reads what it took over until the socket would block, since
/// nobody would come back for what it left (the edge-triggered event that announced it was
/// consumed by the progress thread).
pub(crate) fn drain(shared: &Shared, conn: &Conn, how: Reading) -> Drained {
    let budgeted = how != Reading::Waiter;
    let mut how = how;
    let mut outcome = Drained::Busy;
    loop {
        let mut rx = match conn.rx.try_lock() {
            Ok(rx) => rx,
            Err(std::sync::TryLockError::WouldBlock) => return outcome,
            Err(std::sync::TryLockError::Poisoned(rx)) => {
                // A reader panicked part-way through a frame: what is buffered cannot be
                // trusted, and a lock that stays poisoned must not look busy forever.
                drop(rx);
                let reason = "a thread panicked while reading the connection".to_string();
                shared.peer_down(conn, lost(conn.peer, reason));
                return Drained::Done;
            }
        };
        conn.rx_pending.store(false, Ordering::SeqCst);
        if read_available(shared, conn, &mut rx, how, budgeted) {
            return Drained::More;
        }
        outcome = Drained::Done;
        // Readiness that arrived meanwhile was meant for the progress thread: read it fully.
        how = Reading::EventClosed;
        drop(rx);
        if !conn.rx_pending.load(Ordering::SeqCst) {
            return Drained::Done;
        }
    }
}

/// Payloads at least this large are read straight into their destination when they have not
/// fully arrived yet, saving a copy through the frame buffer.
const DIRECT_MIN: usize = crate::wire::LARGE_PAYLOAD;

/// Reads until the socket would block (or comes back short, as `how` allows),
/// handling each complete frame. Returns true when it stopped with data possibly left (the read
/// budget ran out, which only happens when `budgeted`).
fn read_available(shared: &Shared, conn: &Conn, rx: &mut Rx, how: Reading, budgeted: bool) -> bool {
    if conn.state() == DOWN {
        // Marked down elsewhere (heartbeat, a failed send, close) while a read was arriving
        // straight into memory: `mark_down` fails only what it can reach without waiting.
        rx.fail_direct(&conn.down_error());
        return false;
    }
    let mut read = 0usize;
    loop {
        let got = match rx.direct.as_mut() {
            Some(d) => recv_direct(conn, d),
            None => {
                let mut stream = &conn.stream;
                rx.reader
                    .fill_from(&mut stream)
                    .map(|n| (n, rx.reader.drained()))
            }
        };
        match got {
            Ok((0, _)) => {
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
                if rx.direct.is_none() {
                    handle_frames(shared, conn, rx);
                }
                rx.fail_direct(&err);
                shared.peer_down(conn, err);
                return false;
            }
            Ok((n, short)) => {
                conn.last_recv_ms.store(shared.now_ms(), Ordering::Relaxed);
                conn.heard.store(true, Ordering::Relaxed);
                read += n;
                if rx.direct.as_ref().is_some_and(|d| d.done == d.len) {
                    if let Some(d) = rx.direct.take() {
                        finish_direct(shared, conn, d);
                    }
                }
                if rx.direct.is_none() && !handle_frames(shared, conn, rx) {
                    return false;
                }
                if budgeted && read >= READ_BUDGET {
                    // Let the other peers have a turn; the progress thread comes back here.
                    return true;
                }
                if how != Reading::EventClosed && short {
                    return false;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let err = if conn.state() == CLOSING || shared.closing.load(Ordering::SeqCst) {
                    tracing::debug!("rank {}: receive after goodbye: {e}", conn.peer);
                    Error::PeerClosed(conn.peer)
                } else {
                    lost(conn.peer, format!("receive failed: {e}"))
                };
                rx.fail_direct(&err);
                shared.peer_down(conn, err);
                return false;
            }
        }
    }
}

/// A read straight into memory that leaves at least this much of its payload in flight asks
/// the kernel to acknowledge at once (`TCP_QUICKACK`). On a connection that carries traffic
/// both ways the receiver otherwise delays its acknowledgements, hoping to carry them on data,
/// and the sender of a payload larger than its window waits for them: over loopback a 1 MiB
/// ping-pong took 260-300 us, 170 with this (and 150 with one connection per direction).
const QUICKACK_LEFT: usize = 128 << 10;

/// Receives the next part of a direct payload into its destination. Returns the byte count and
/// whether the read came back short.
fn recv_direct(conn: &Conn, d: &mut Direct) -> std::io::Result<(usize, bool)> {
    use std::os::fd::AsRawFd;
    let want = d.len - d.done;
    let dst = match &mut d.into {
        DirectInto::Region { region, offset } => region.as_ptr().wrapping_add(*offset + d.done),
        // The buffer holds `done` bytes and has room for `len`.
        DirectInto::Buffer(b) => b.spare_capacity_mut().as_mut_ptr().cast::<u8>(),
        // `skip <= done` (the head was buffered when the landing took the message).
        DirectInto::Lent { dest, skip } => dest.at(d.done - *skip),
    };
    // SAFETY: for a region, `offset..offset+len` lies inside it (checked when the Direct was
    // made) and `done < len`, so `dst..dst+want` is inside it too; the `Arc` keeps it mapped.
    // For a buffer, `dst` starts its spare capacity, of at least `len - done = want` bytes. For
    // a landing place, `len - skip` bytes fit in it (checked when the Direct was made), so
    // `dst..dst+want` (from `done - skip`) does, and it is the receiver's memory, lent to this
    // reader alone until the landing finishes. The kernel writes through the raw pointer; no
    // Rust reference to the bytes exists meanwhile.
    let n = unsafe { libc::recv(conn.stream.as_raw_fd(), dst.cast(), want, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    if let DirectInto::Buffer(b) = &mut d.into {
        // SAFETY: the kernel initialised the first `n <= want` bytes of the spare capacity.
        unsafe { b.set_len(b.len() + n) };
    }
    d.done += n;
    if n > 0 && want - n >= QUICKACK_LEFT {
        // Harmless if refused: acknowledgements come as they did.
        let _ = socket2::SockRef::from(&conn.stream).set_tcp_quickack(true);
    }
    Ok((n, n < want))
}

/// Completes a direct payload that has fully arrived.
fn finish_direct(shared: &Shared, conn: &Conn, d: Direct) {
    let len = d.len;
    match (d.then, d.into) {
        (DirectEnd::Response(p), _) => p.completer.complete(0),
        (DirectEnd::Write { id }, _) => respond(shared, conn, id, Ok(0), Payload::None),
        (DirectEnd::Message { tag }, DirectInto::Buffer(data)) => {
            shared.mailbox.deliver(Message {
                source: conn.peer,
                tag: Tag(tag),
                data,
            });
        }
        (DirectEnd::Landed(offer), DirectInto::Buffer(data)) => {
            offer.fill(&data);
            crate::pool::recycle(data);
            shared.mailbox.landed();
        }
        (DirectEnd::Landed(offer), _) => {
            offer.finish(len);
            shared.mailbox.landed();
        }
        // Never made: a message goes to its own buffer or a landing place.
        (DirectEnd::Message { .. }, _) => {}
    }
}

/// If the frame whose header has arrived carries a large payload that has not fully arrived and
/// has a known destination in registered memory, switch to reading it straight there.
fn try_direct(shared: &Shared, conn: &Conn, rx: &mut Rx, h: Header) -> bool {
    let len = h.payload_len as usize;
    if len < DIRECT_MIN || rx.reader.payload_buffered() >= len {
        return false;
    }
    if h.kind == Kind::Message {
        // A receiver's landing place takes it when its head is here to be judged.
        let landing = shared
            .mailbox
            .claim(conn.peer, Tag(h.a), rx.reader.payload_start());
        let prefix = rx.reader.detach_payload();
        let (into, then) = match landing {
            Some(offer) if len - offer.head_len() <= offer.dest().len() => {
                offer.set_head(prefix);
                let body = &prefix[offer.head_len()..];
                let dest = offer.dest();
                if !body.is_empty() {
                    // SAFETY: the landing place holds `len - head_len >= body.len()` bytes
                    // (checked above) and is lent to this reader alone until the landing
                    // finishes; `body` is in the reader's own buffer.
                    unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), dest.at(0), body.len()) };
                }
                let skip = offer.head_len();
                (DirectInto::Lent { dest, skip }, DirectEnd::Landed(offer))
            }
            // Longer than its landing place (the receiver reports the truncation): through a
            // buffer of its own, as a message nobody waits for.
            landing => {
                let mut data = crate::pool::buffer(len);
                data.extend_from_slice(prefix);
                let then = match landing {
                    Some(offer) => DirectEnd::Landed(offer),
                    None => DirectEnd::Message { tag: h.a },
                };
                (DirectInto::Buffer(data), then)
            }
        };
        rx.direct = Some(Direct {
            done: prefix.len(),
            into,
            len,
            then,
        });
        return true;
    }
    let (region, offset, then) = match h.kind {
        Kind::Response if h.a == 0 && conn.pending_read_len(h.id) == Some(len) => {
            let Some(p) = conn.take_pending(h.id) else {
                return false;
            };
            let Some(dest) = p.dest.clone() else {
                return false;
            };
            (
                Arc::clone(dest.region()),
                dest.offset(),
                DirectEnd::Response(p),
            )
        }
        Kind::Write => match exec::range(&shared.regions, h.a, h.b, h.payload_len.into()) {
            // `range` checked b..b+len against the region, so `b` fits in usize.
            Ok((region, _)) => {
                conn.before_memory_change();
                (region, h.b as usize, DirectEnd::Write { id: h.id })
            }
            Err(_) => return false,
        },
        _ => return false,
    };
    let prefix = rx.reader.detach_payload();
    if region.write_at(offset, prefix).is_err() {
        // Unreachable: the range was checked; fail safe by dropping the request.
        return false;
    }
    let done = prefix.len();
    rx.direct = Some(Direct {
        into: DirectInto::Region { region, offset },
        len,
        done,
        then,
    });
    true
}

/// Handles every complete frame buffered in the reader, stopping early when a large payload
/// switches to direct reading. Returns false when the connection was closed for a protocol
/// violation. The responses to the batch leave together once it is handled: a peer that posts
/// several requests at once (a page fault's registration, directory read and page read) gets
/// one write back, not one per request.
fn handle_frames(shared: &Shared, conn: &Conn, rx: &mut Rx) -> bool {
    conn.cork();
    let open = handle_batch(shared, conn, rx);
    conn.uncork();
    open
}

/// [`handle_frames`] without the corking.
fn handle_batch(shared: &Shared, conn: &Conn, rx: &mut Rx) -> bool {
    let violation = |detail: String| {
        shared.peer_down(
            conn,
            Error::Protocol {
                from: conn.peer,
                detail,
            },
        );
        false
    };
    loop {
        let header = match rx.reader.next_header() {
            Ok(Some(h)) => h,
            Ok(None) => return true,
            Err(e) => return violation(e.to_string()),
        };
        if try_direct(shared, conn, rx, header) {
            return true;
        }
        let frame = match rx.reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => return true,
            Err(e) => return violation(e.to_string()),
        };
        if let Err(detail) = handle(shared, conn, frame) {
            return violation(detail);
        }
    }
}
