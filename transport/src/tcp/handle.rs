//! Handling one received frame: serving a peer's one-sided request against this node's
//! registered memory (the home CPU playing the NIC) and answering it, completing one of our own
//! requests with its response, delivering a message, or noting a heartbeat or a goodbye.

use std::sync::atomic::Ordering;

use crate::error::{Error, RemoteFault};
use crate::exec;
use crate::types::Tag;
use crate::wire::{Frame, Header, Kind};

use super::conn::{Conn, Payload};
use super::shared::Shared;

/// Answers request `id` with `outcome` (and `payload` on success).
pub(super) fn respond(
    shared: &Shared,
    conn: &Conn,
    id: u64,
    outcome: Result<u64, RemoteFault>,
    payload: Payload,
) {
    conn.served.store(true, Ordering::Relaxed);
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
pub(super) fn handle(shared: &Shared, conn: &Conn, frame: Frame<'_>) -> Result<(), String> {
    let h = frame.header;
    let table = &shared.regions;
    if matches!(
        h.kind,
        Kind::Write
            | Kind::AddStrided
            | Kind::WriteRuns
            | Kind::CompareSwap
            | Kind::FetchAdd
            | Kind::Accumulate
    ) {
        // An earlier read's response must not carry this request's change.
        conn.before_memory_change();
    }
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
        Kind::AddStrided => {
            let (stride, count) = (h.d >> 32, h.d & 0xffff_ffff);
            let r = exec::add_strided(table, h.a, h.b, stride, count, h.c);
            respond(shared, conn, h.id, r.map(|()| 0), Payload::None);
        }
        Kind::WriteRuns => {
            let runs =
                crate::wire::decode_runs(frame.payload).ok_or("malformed write-runs payload")?;
            let r = exec::write_runs(table, h.a, h.b, &runs);
            respond(shared, conn, h.id, r.map(|()| 0), Payload::None);
        }
        Kind::Accumulate => {
            let Some(reduction) = crate::reduce::Reduction::from_code(h.c) else {
                respond(
                    shared,
                    conn,
                    h.id,
                    Err(RemoteFault::Unsupported),
                    Payload::None,
                );
                return Ok(());
            };
            let mut old = (h.d != 0).then(|| vec![0u8; frame.payload.len()]);
            let r = exec::accumulate(
                table,
                h.a,
                h.b,
                reduction,
                frame.payload,
                old.as_deref_mut(),
            );
            let payload = old.map_or(Payload::None, Payload::Bytes);
            respond(shared, conn, h.id, r.map(|()| 0), payload);
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
        Kind::Message => shared
            .mailbox
            .deliver_slice(conn.peer, Tag(h.a), frame.payload),
        Kind::Heartbeat => {}
        Kind::Goodbye => conn.set_closing(),
    }
    Ok(())
}
