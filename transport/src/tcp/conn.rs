//! One authenticated connection to a peer: its send queue, its outstanding requests and its
//! health. Any thread may send on it; only the progress thread reads from it.

use std::collections::{HashMap, VecDeque};
use std::io::{IoSlice, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::completion::Completer;
use crate::error::{Error, Result};
use crate::region::Region;
use crate::types::{LocalSlice, Rank};
use crate::wire::{FrameReader, Header, HEADER_LEN};

pub(crate) const OPEN: u8 = 0;
/// The peer said goodbye: its end of stream will be orderly.
pub(crate) const CLOSING: u8 = 1;
pub(crate) const DOWN: u8 = 2;

/// Bytes waiting to be sent.
#[derive(Debug)]
pub(crate) enum Payload {
    /// Nothing after the header.
    None,
    /// Owned bytes.
    Bytes(Vec<u8>),
    /// A range of a registered region, sent without copying (the `Arc` keeps it alive).
    Region {
        region: Arc<Region>,
        offset: usize,
        len: usize,
    },
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::None => &[],
            Payload::Bytes(b) => b,
            Payload::Region {
                region,
                offset,
                len,
            } => {
                // SAFETY: `offset..offset+len` was bounds-checked against the region when the
                // payload was made, and the `Arc` keeps the region mapped. The bytes may change
                // while they are being sent (remote writers, local stores), exactly as under
                // RDMA; the slice is only handed to `writev`, never read by Rust code.
                unsafe { std::slice::from_raw_parts(region.as_ptr().wrapping_add(*offset), *len) }
            }
        }
    }
}

#[derive(Debug)]
struct Queued {
    header: [u8; HEADER_LEN],
    payload: Payload,
    /// Bytes of header + payload already written.
    sent: usize,
}

impl Queued {
    fn total(&self) -> usize {
        HEADER_LEN + self.payload.bytes().len()
    }
}

/// An outstanding request of ours.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) completer: Completer,
    /// Where the data of a read response goes.
    pub(crate) dest: Option<LocalSlice>,
}

/// What a sender must do after queueing: nothing, or wake the progress thread.
pub(crate) type Sent = Result<()>;

#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) peer: Rank,
    pub(crate) stream: mio::net::TcpStream,
    out: Mutex<VecDeque<Queued>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    state: AtomicU8,
    why_down: Mutex<Option<Error>>,
    /// Time of the last send, in milliseconds since the transport started.
    pub(crate) last_send_ms: AtomicU64,
    /// Time of the last receive, in milliseconds since the transport started.
    pub(crate) last_recv_ms: AtomicU64,
    /// The receive side: whoever holds this lock reads the socket (see `progress::drain`).
    pub(crate) rx: Mutex<FrameReader>,
    /// Set by the progress thread on a readable event before it tries `rx`.
    pub(crate) rx_pending: AtomicBool,
}

impl Conn {
    pub(crate) fn new(
        peer: Rank,
        stream: mio::net::TcpStream,
        max_payload: u32,
        now_ms: u64,
    ) -> Conn {
        Conn {
            peer,
            stream,
            out: Mutex::new(VecDeque::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            state: AtomicU8::new(OPEN),
            why_down: Mutex::new(None),
            last_send_ms: AtomicU64::new(now_ms),
            last_recv_ms: AtomicU64::new(now_ms),
            rx: Mutex::new(FrameReader::new(max_payload)),
            rx_pending: AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }

    pub(crate) fn set_closing(&self) {
        let _ = self
            .state
            .compare_exchange(OPEN, CLOSING, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// The error every operation on a down connection gets.
    pub(crate) fn down_error(&self) -> Error {
        lock(&self.why_down)
            .clone()
            .unwrap_or(Error::PeerClosed(self.peer))
    }

    /// Fails the connection: every outstanding and later request gets `error`.
    /// Returns false when it was already down.
    pub(crate) fn mark_down(&self, error: Error) -> bool {
        {
            let mut why = lock(&self.why_down);
            if self.state.swap(DOWN, Ordering::SeqCst) == DOWN {
                return false;
            }
            *why = Some(error.clone());
        }
        let drained: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in drained {
            p.completer.fail(error.clone());
        }
        lock(&self.out).clear();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        true
    }

    /// Records an outstanding request and returns its id.
    pub(crate) fn add_pending(&self, pending: Pending) -> Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(id, pending);
        if self.state() == DOWN {
            if let Some(p) = lock(&self.pending).remove(&id) {
                p.completer.fail(self.down_error());
            }
            return Err(self.down_error());
        }
        Ok(id)
    }

    /// Removes and returns the outstanding request `id`.
    pub(crate) fn take_pending(&self, id: u64) -> Option<Pending> {
        lock(&self.pending).remove(&id)
    }

    /// Sends a frame, writing as much as the socket takes now and queueing the rest for the
    /// progress thread (which is told by the writable event when the socket drains).
    pub(crate) fn send(&self, mut header: Header, payload: Payload, now_ms: u64) -> Sent {
        if self.state() == DOWN {
            return Err(self.down_error());
        }
        header.payload_len = u32::try_from(payload.bytes().len())
            .map_err(|_| Error::InvalidArgument("payload longer than 4 GiB".into()))?;
        let mut q = lock(&self.out);
        q.push_back(Queued {
            header: header.encode(),
            payload,
            sent: 0,
        });
        self.last_send_ms.store(now_ms, Ordering::Relaxed);
        if q.len() == 1 {
            // Nothing was queued before us: write straight away instead of waking anybody.
            if let Err(e) = drain(&self.stream, &mut q) {
                drop(q);
                let err = Error::PeerLost {
                    peer: self.peer,
                    reason: format!("send failed: {e}"),
                };
                self.mark_down(err.clone());
                return Err(err);
            }
        }
        Ok(())
    }

    /// Writes queued frames until the socket would block. Called by the progress thread on a
    /// writable event.
    pub(crate) fn flush_queue(&self) -> std::io::Result<()> {
        drain(&self.stream, &mut lock(&self.out))
    }

    /// Whether frames are still waiting to be written.
    pub(crate) fn has_queued(&self) -> bool {
        !lock(&self.out).is_empty()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes from the front of `q` until it is empty or the socket would block.
fn drain(mut stream: &mio::net::TcpStream, q: &mut VecDeque<Queued>) -> std::io::Result<()> {
    while let Some(front) = q.front_mut() {
        let payload = front.payload.bytes();
        let mut slices = [IoSlice::new(&[]), IoSlice::new(&[])];
        let n_slices = if front.sent < HEADER_LEN {
            slices[0] = IoSlice::new(&front.header[front.sent..]);
            slices[1] = IoSlice::new(payload);
            2
        } else {
            slices[0] = IoSlice::new(&payload[front.sent - HEADER_LEN..]);
            1
        };
        match stream.write_vectored(&slices[..n_slices]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                front.sent += n;
                if front.sent == front.total() {
                    q.pop_front();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
