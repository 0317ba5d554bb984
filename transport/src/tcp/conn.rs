//! One authenticated connection to a peer: its send queue, its outstanding requests and its
//! health. Any thread may send on it; one thread at a time reads from it (the progress thread,
//! or a thread that waits for something to arrive on it: see `read::drain`).

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

pub(crate) use super::outq::Payload;
use super::outq::{drain, Queued};
use crate::completion::Completer;
use crate::error::{Error, Result};
use crate::landing::{LentMut, Offer};
use crate::mailbox::Mailbox;
use crate::region::Region;
use crate::types::{LocalSlice, Rank};
use crate::wire::{FrameReader, Header, Kind, HEADER_LEN};

pub(crate) const OPEN: u8 = 0;
/// The peer said goodbye: its end of stream will be orderly.
pub(crate) const CLOSING: u8 = 1;
pub(crate) const DOWN: u8 = 2;

/// Most frames [`Conn::send_batch`] holds back for one batch.
pub(crate) const HOLD_FRAMES: usize = 64;

/// Largest write payload a batch may be held back with (larger ones go at once: they fill the
/// socket by themselves).
pub(crate) const HOLD_BYTES: usize = 16384;

/// The receive side of a connection.
#[derive(Debug)]
pub(crate) struct Rx {
    /// Reassembles frames.
    pub(crate) reader: FrameReader,
    /// A large payload being read straight from the socket into registered memory.
    pub(crate) direct: Option<Direct>,
}

impl Rx {
    /// Fails the read whose payload was arriving directly when the connection broke.
    pub(crate) fn fail_direct(&mut self, err: &Error) {
        match self.direct.take().map(|d| d.then) {
            Some(DirectEnd::Response(p)) => p.completer.fail(err.clone()),
            Some(DirectEnd::Landed(offer)) => offer.fail(err.clone()),
            _ => {}
        }
    }
}

/// A payload read straight into its destination: the data of a read response, or of a write
/// request aimed at this node's memory, or a large message (into its own buffer).
#[derive(Debug)]
pub(crate) struct Direct {
    /// Where it goes.
    pub(crate) into: DirectInto,
    pub(crate) len: usize,
    /// Bytes already placed.
    pub(crate) done: usize,
    /// What to do once it is all there.
    pub(crate) then: DirectEnd,
}

/// The destination of a direct payload.
#[derive(Debug)]
pub(crate) enum DirectInto {
    /// Registered memory (bounds-checked when this was made; the `Arc` keeps it mapped).
    Region { region: Arc<Region>, offset: usize },
    /// A message's buffer: capacity for the whole payload, length the bytes placed so far.
    Buffer(Vec<u8>),
    /// A receiver's landing place (`crate::landing`), room for the payload after its first
    /// `skip` bytes (the head, placed already).
    Lent { dest: LentMut, skip: usize },
}

/// What completes a direct payload.
#[derive(Debug)]
pub(crate) enum DirectEnd {
    /// Our read request: complete it.
    Response(Pending),
    /// A peer's write request: answer it.
    Write { id: u64 },
    /// A message with this transport tag: deliver it.
    Message { tag: u64 },
    /// A message a receiver's landing place took: finish the landing.
    Landed(Offer),
}

/// Who reads a connection.
#[derive(Debug)]
pub(crate) struct Watch {
    /// Threads reading the connection while they wait for something on it.
    pub(crate) waiters: usize,
    /// Whether the read descriptor is registered with the progress thread's poller.
    pub(crate) registered: bool,
    /// When the last waiter left with read interest still withdrawn (it is given back to the
    /// progress thread after `linger::LINGER`).
    pub(crate) left_at: Option<Instant>,
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
    /// Told when the connection goes down, so that receivers waiting on the peer wake up.
    mailbox: Arc<Mailbox>,
    /// Whether anything has arrived from the peer yet: until then it may still be connecting
    /// to others, and its silence is measured against the connect timeout.
    pub(crate) heard: AtomicBool,
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
    /// The receive side: whoever holds this lock reads the socket (see `read::drain`).
    pub(crate) rx: Mutex<Rx>,
    /// Set by the progress thread on a readable event before it tries `rx`.
    pub(crate) rx_pending: AtomicBool,
    /// Set while the frames of one received batch are handled: the responses they produce are
    /// queued and leave together at [`Conn::uncork`] (one `sendmsg`, not one per request).
    corked: AtomicBool,
    /// Frames in `out` never offered to the socket: small writes held back while other requests
    /// are outstanding, to leave together (see [`Conn::send_batch`]). Changed under `out`'s
    /// lock; 0 once anything is written.
    held: AtomicUsize,
    /// Requests written or queued behind a full socket whose response has not arrived yet
    /// (not the held ones): while there are any, a response is coming, whose handling ends
    /// with `uncork`, which writes what is held.
    awaited: AtomicIsize,
    /// Set when a response whose payload points at registered memory ([`Payload::Region`]:
    /// the data of a peer's read) is queued; cleared by [`Conn::before_memory_change`] once none is left (a hint: frames
    /// that left meanwhile do not clear it).
    region_queued: AtomicBool,
    /// A second descriptor of the socket, registered with the progress thread's poller for
    /// readability only (the socket's own descriptor is registered for writability), so that
    /// read interest can be withdrawn while threads wait on the connection without touching
    /// write interest (see `progress::Driving`).
    pub(crate) read_fd: OwnedFd,
    /// Who reads the connection: the threads waiting on it, or the progress thread (see
    /// `progress::waiter_arrives`).
    pub(crate) watch: Mutex<Watch>,
    /// Set when a request of the peer was answered: the progress thread keeps polling a while
    /// after that (see `progress::run`).
    pub(crate) served: AtomicBool,
}

impl Conn {
    pub(crate) fn new(
        peer: Rank,
        stream: mio::net::TcpStream,
        read_fd: OwnedFd,
        mailbox: Arc<Mailbox>,
        max_payload: u32,
        now_ms: u64,
    ) -> Conn {
        Conn {
            peer,
            mailbox,
            heard: AtomicBool::new(false),
            stream,
            out: Mutex::new(VecDeque::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            state: AtomicU8::new(OPEN),
            why_down: Mutex::new(None),
            last_send_ms: AtomicU64::new(now_ms),
            last_recv_ms: AtomicU64::new(now_ms),
            rx: Mutex::new(Rx {
                reader: FrameReader::new(max_payload),
                direct: None,
            }),
            rx_pending: AtomicBool::new(false),
            corked: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            awaited: AtomicIsize::new(0),
            region_queued: AtomicBool::new(false),
            read_fd,
            watch: Mutex::new(Watch {
                waiters: 0,
                registered: true,
                left_at: None,
            }),
            served: AtomicBool::new(false),
        }
    }

    /// Registers the connection with the progress thread's poller: its socket for
    /// writability, its second descriptor for readability, both under the peer's token.
    ///
    /// # Errors
    /// The poller's error.
    pub(crate) fn watch(&self, registry: &mio::Registry) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let token = mio::Token(self.peer.index());
        registry.register(
            &mut mio::unix::SourceFd(&self.stream.as_raw_fd()),
            token,
            mio::Interest::WRITABLE,
        )?;
        registry.register(
            &mut mio::unix::SourceFd(&self.read_fd.as_raw_fd()),
            token,
            mio::Interest::READABLE,
        )
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
        {
            let mut q = lock(&self.out);
            q.clear();
            self.held.store(0, Ordering::Relaxed);
            self.awaited.store(0, Ordering::SeqCst);
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        // A read whose payload was arriving straight into memory is no longer in `pending`.
        // `try_lock`: the reader's own error path calls this holding `rx` (and fails it
        // itself); a reader busy in another thread sees the shutdown, or the down state at its
        // next turn, and fails it then.
        let rx = match self.rx.try_lock() {
            Ok(rx) => Some(rx),
            Err(std::sync::TryLockError::Poisoned(rx)) => Some(rx.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(mut rx) = rx {
            rx.fail_direct(&error);
        }
        if matches!(error, Error::PeerLost { .. } | Error::Protocol { .. }) {
            tracing::error!("connection to rank {}: {error}", self.peer);
        }
        // Receivers waiting on this peer learn it too (a protocol violation breaks the job as a
        // lost peer does).
        let error = match error {
            Error::Protocol { from, detail } => Error::PeerLost {
                peer: from,
                reason: format!("protocol violation: {detail}"),
            },
            e => e,
        };
        self.mailbox.peer_down(self.peer, error);
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

    /// The destination length of the outstanding read `id`, if it is one.
    pub(crate) fn pending_read_len(&self, id: u64) -> Option<usize> {
        lock(&self.pending)
            .get(&id)
            .and_then(|p| p.dest.as_ref())
            .map(LocalSlice::len)
    }

    /// Removes and returns the outstanding request `id`.
    pub(crate) fn take_pending(&self, id: u64) -> Option<Pending> {
        let taken = lock(&self.pending).remove(&id);
        if taken.is_some() {
            self.awaited.fetch_sub(1, Ordering::SeqCst);
        }
        taken
    }

    /// Sends a frame, writing as much as the socket takes now and queueing the rest for the
    /// progress thread (which is told by the writable event when the socket drains).
    pub(crate) fn send(&self, mut header: Header, payload: Payload, now_ms: u64) -> Sent {
        if self.state() == DOWN {
            return Err(self.down_error());
        }
        header.payload_len = u32::try_from(payload.len())
            .map_err(|_| Error::InvalidArgument("payload longer than 4 GiB".into()))?;
        let mut q = lock(&self.out);
        let response = header.kind == Kind::Response;
        if response && matches!(payload, Payload::Region { .. }) {
            self.region_queued.store(true, Ordering::Relaxed);
        }
        // Nothing but held frames before us: no writable event is coming for them.
        let free = q.len() == self.held.load(Ordering::Relaxed);
        if header.kind.is_request() {
            self.awaited.fetch_add(1, Ordering::SeqCst);
        }
        q.push_back(Queued {
            header: header.encode(),
            payload,
            sent: 0,
            response,
        });
        self.last_send_ms.store(now_ms, Ordering::Relaxed);
        if free && !self.corked.load(Ordering::Acquire) {
            // Nothing was queued before us: write straight away instead of waking anybody.
            if let Err(e) = self.drain_out(&mut q) {
                drop(q);
                let err = self.send_error(&e);
                self.mark_down(err.clone());
                return Err(err);
            }
        }
        Ok(())
    }

    /// Sends a frame whose payload is `parts` (borrowed, one after the other), without copying
    /// what the socket takes at once: the kernel reads it straight from the caller's memory.
    /// What a full socket does not take is copied and queued as [`Conn::send`] queues it (the
    /// progress thread writes it at the writable event). When frames are already queued, or the
    /// connection is corked, the whole payload is copied and queued behind them, so frames keep
    /// their order. It never waits for room: two ranks sending to each other at once must each
    /// get to reading the other's message (waiting for room here, with read interest withdrawn
    /// from the progress thread after a receive, stalled exchanges for a millisecond per step).
    pub(crate) fn send_parts(&self, header: Header, parts: &[&[u8]], now_ms: u64) -> Sent {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let copy = |from: usize| {
            let mut b = crate::pool::buffer(total - from);
            let mut skip = from;
            for p in parts {
                let s = skip.min(p.len());
                b.extend_from_slice(&p[s..]);
                skip -= s;
            }
            b
        };
        self.send_now(header, parts, now_ms, |sent| {
            // The header's unsent bytes, if any, go with the copy.
            let (payload, sent) = if sent < HEADER_LEN {
                (copy(0), sent)
            } else {
                (copy(sent - HEADER_LEN), HEADER_LEN)
            };
            (Payload::Bytes(payload), sent)
        })
        .map(drop)
    }

    /// Sends a frame whose payload is `head` then `body`, like [`Conn::send_parts`], except
    /// that what the socket does not take at once is not copied: the frame is queued with
    /// `body` lent ([`Payload::Lent`]) and the completer `done` makes, which completes when its
    /// last byte is written. `done` is called only then (a frame written whole at once needs
    /// no completion, and the common case allocates none).
    ///
    /// # Safety
    /// When `done` was called, `body` stays valid and unchanged until its completer completes
    /// or fails (it fails when the connection goes down, once nothing reads it any more).
    pub(crate) unsafe fn send_lent(
        &self,
        header: Header,
        head: &[u8],
        body: &[u8],
        done: impl FnOnce() -> Completer,
        now_ms: u64,
    ) -> Result<()> {
        self.send_now(header, &[head, body], now_ms, move |sent| {
            let payload = Payload::Lent {
                head: head.to_vec(),
                body: super::outq::LentBytes {
                    ptr: body.as_ptr(),
                    len: body.len(),
                },
                done: done(),
            };
            (payload, sent)
        })
        .map(drop)
    }

    /// Writes a frame of `header` and `parts` straight from the caller's memory as far as the
    /// socket takes it, when nothing is queued before it and the connection is not corked;
    /// otherwise, or for what the socket does not take, queues the payload `rest` makes of the
    /// bytes written so far (given the count, it returns the payload and the count of frame
    /// bytes already written that goes with it). Returns whether the frame went whole.
    fn send_now(
        &self,
        mut header: Header,
        parts: &[&[u8]],
        now_ms: u64,
        rest: impl FnOnce(usize) -> (Payload, usize),
    ) -> Result<bool> {
        use std::os::fd::AsRawFd;
        if self.state() == DOWN {
            return Err(self.down_error());
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        header.payload_len = u32::try_from(total)
            .map_err(|_| Error::InvalidArgument("payload longer than 4 GiB".into()))?;
        let encoded = header.encode();
        let mut q = lock(&self.out);
        self.last_send_ms.store(now_ms, Ordering::Relaxed);
        let corked = self.corked.load(Ordering::Acquire);
        if !corked && self.held.load(Ordering::Relaxed) > 0 {
            // Held writes go first, now: a message does not wait for their batch.
            if let Err(e) = self.drain_out(&mut q) {
                drop(q);
                let err = self.send_error(&e);
                self.mark_down(err.clone());
                return Err(err);
            }
        }
        let all = HEADER_LEN + total;
        let mut sent = 0usize;
        if q.is_empty() && !corked {
            while sent < all {
                let mut iov = Vec::with_capacity(parts.len() + 1);
                let mut at = 0usize;
                for part in std::iter::once(&encoded[..]).chain(parts.iter().copied()) {
                    let end = at + part.len();
                    if end > sent && !part.is_empty() {
                        let from = sent.saturating_sub(at);
                        iov.push(libc::iovec {
                            iov_base: part[from..].as_ptr() as *mut libc::c_void,
                            iov_len: part.len() - from,
                        });
                    }
                    at = end;
                }
                // SAFETY: an all-zero msghdr is a valid "no name, no control data" header.
                let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
                msg.msg_iov = iov.as_mut_ptr();
                msg.msg_iovlen = iov.len();
                // SAFETY: `msg` points at `iov.len()` iovecs that describe the unsent ends of
                // `encoded` and of the borrowed `parts`, all alive and unmodified until this
                // returns; the kernel only reads them.
                let n = unsafe { libc::sendmsg(self.stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
                if n > 0 {
                    sent += n as usize;
                    continue;
                }
                let e = if n == 0 {
                    std::io::ErrorKind::WriteZero.into()
                } else {
                    std::io::Error::last_os_error()
                };
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => break,
                    _ => {
                        drop(q);
                        let err = self.send_error(&e);
                        self.mark_down(err.clone());
                        return Err(err);
                    }
                }
            }
            if sent == all {
                return Ok(true);
            }
        }
        // Queued behind other frames, or the socket is full.
        let (payload, sent) = rest(sent);
        q.push_back(Queued {
            header: encoded,
            payload,
            sent,
            response: false,
        });
        Ok(false)
    }

    /// Called before a request of the peer changes this node's memory: a queued frame whose
    /// payload still points at registered memory (the response to an earlier read, held back
    /// by the cork or by a full socket) gets a copy of its bytes now, so that the read returns
    /// the memory as it was when the read was served. Requests on one connection are served in
    /// order (PROTOCOL.md), and a read never sees a later request's write.
    pub(crate) fn before_memory_change(&self) {
        if !self.region_queued.load(Ordering::Relaxed) {
            return;
        }
        let mut q = lock(&self.out);
        for f in q.iter_mut().filter(|f| f.response) {
            if let Payload::Region {
                region,
                offset,
                len,
            } = &f.payload
            {
                let mut copy = crate::pool::buffer(*len);
                copy.resize(*len, 0);
                if region.read_at(*offset, &mut copy).is_ok() {
                    // Same length, so `sent` still counts the same bytes.
                    f.payload = Payload::Bytes(copy);
                }
            }
        }
        self.region_queued.store(false, Ordering::Relaxed);
    }

    /// The error for a failed send: an orderly close when the peer said goodbye, a loss
    /// otherwise.
    pub(crate) fn send_error(&self, e: &std::io::Error) -> Error {
        if self.state() == CLOSING {
            Error::PeerClosed(self.peer)
        } else {
            Error::PeerLost {
                peer: self.peer,
                reason: format!("send failed: {e}"),
            }
        }
    }

    /// Holds back what [`Conn::send`] would write at once, until [`Conn::uncork`].
    pub(crate) fn cork(&self) {
        self.corked.store(true, Ordering::Release);
    }

    /// Writes what was queued since [`Conn::cork`], with as few system calls as the socket
    /// allows (the rest goes at the writable event, as for [`Conn::send`]).
    pub(crate) fn uncork(&self) {
        self.corked.store(false, Ordering::Release);
        let mut q = lock(&self.out);
        if q.is_empty() {
            return;
        }
        if let Err(e) = self.drain_out(&mut q) {
            drop(q);
            self.mark_down(self.send_error(&e));
        }
    }

    /// Writes the frames held back by [`Conn::send_batch`], if any: a thread starts waiting for
    /// a completion on this connection.
    pub(crate) fn release_held(&self) {
        if self.held.load(Ordering::Relaxed) == 0 || self.corked.load(Ordering::Acquire) {
            return;
        }
        let mut q = lock(&self.out);
        if self.held.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Err(e) = self.drain_out(&mut q) {
            drop(q);
            self.mark_down(self.send_error(&e));
        }
    }

    /// Sends several frames with as few system calls as the socket allows (see
    /// [`Conn::send`]). With `hold` (small writes, whose completion nobody waits for at once:
    /// MPI puts before their flush), the frames are held back while other requests are
    /// outstanding, up to [`HOLD_FRAMES`]: the response to those writes them with whatever was
    /// held meanwhile (`uncork` after every batch of received frames), as does a thread that
    /// starts waiting on the connection ([`Conn::release_held`]) or any other send. A stream of
    /// puts then leaves in a few system calls, and its answers come back in a few, instead of
    /// one each (what made `osu_put_bw` at 8 B-4 KiB half as fast as MPICH's).
    pub(crate) fn send_batch(
        &self,
        frames: Vec<(Header, Payload)>,
        hold: bool,
        now_ms: u64,
    ) -> Sent {
        if self.state() == DOWN {
            return Err(self.down_error());
        }
        let n = frames.len();
        let requests = frames.iter().filter(|(h, _)| h.kind.is_request()).count();
        let hold = hold && requests == n;
        let mut q = lock(&self.out);
        let held = self.held.load(Ordering::Relaxed);
        let was_empty = q.len() == held;
        for (mut header, payload) in frames {
            header.payload_len = u32::try_from(payload.len())
                .map_err(|_| Error::InvalidArgument("payload longer than 4 GiB".into()))?;
            let response = header.kind == Kind::Response;
            if response && matches!(payload, Payload::Region { .. }) {
                self.region_queued.store(true, Ordering::Relaxed);
            }
            q.push_back(Queued {
                header: header.encode(),
                payload,
                sent: 0,
                response,
            });
        }
        self.last_send_ms.store(now_ms, Ordering::Relaxed);
        // A response is coming: its handling writes what is held. It counts itself out of
        // `awaited` before the `uncork` that follows, which takes `out` after us (and writes
        // these frames), or before us, and then we see it gone.
        if was_empty && hold && held + n <= HOLD_FRAMES && self.awaited.load(Ordering::SeqCst) > 0 {
            self.held.store(held + n, Ordering::Relaxed);
            return Ok(());
        }
        self.awaited.fetch_add(requests as isize, Ordering::SeqCst);
        if was_empty {
            if let Err(e) = self.drain_out(&mut q) {
                drop(q);
                let err = self.send_error(&e);
                self.mark_down(err.clone());
                return Err(err);
            }
        }
        Ok(())
    }

    /// [`drain`] of `q` (this connection's `out`, locked): every frame is offered to the
    /// socket, none is held any more.
    fn drain_out(&self, q: &mut VecDeque<Queued>) -> std::io::Result<()> {
        let held = self.held.swap(0, Ordering::Relaxed);
        self.awaited.fetch_add(held as isize, Ordering::SeqCst);
        drain(&self.stream, q)
    }

    /// Writes queued frames until the socket would block. Called by the progress thread on a
    /// writable event.
    pub(crate) fn flush_queue(&self) -> std::io::Result<()> {
        self.drain_out(&mut lock(&self.out))
    }

    /// Writes queued frames until the socket would block, unless another thread is writing or
    /// the connection is corked: a thread that waits on the connection pushes out what is
    /// queued (its own large sends, typically) instead of leaving it to the progress thread.
    pub(crate) fn try_flush(&self) {
        if self.corked.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut q) = self.out.try_lock() else {
            return;
        };
        if q.is_empty() || self.state() == DOWN {
            return;
        }
        if let Err(e) = self.drain_out(&mut q) {
            drop(q);
            self.mark_down(self.send_error(&e));
        }
    }

    /// Whether frames are still waiting to be written.
    pub(crate) fn has_queued(&self) -> bool {
        !lock(&self.out).is_empty()
    }

    /// Whether a spinning waiter should look for room to write queued frames: frames are
    /// queued and no other thread is writing them (that one is busy, not this one).
    pub(crate) fn flush_wanted(&self) -> bool {
        self.out.try_lock().is_ok_and(|q| !q.is_empty())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The error for a peer lost for `reason`.
pub(crate) fn lost(peer: Rank, reason: String) -> Error {
    Error::PeerLost { peer, reason }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;

    /// A connection whose peer is a plain socket that reads nothing until told to.
    fn conn_and_peer() -> (Conn, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (peer, _) = listener.accept().expect("accept");
        ours.set_nonblocking(true).expect("nonblocking");
        let read_fd = std::os::fd::OwnedFd::from(ours.try_clone().expect("dup"));
        let conn = Conn::new(
            Rank(1),
            mio::net::TcpStream::from_std(ours),
            read_fd,
            Arc::new(Mailbox::new(2, Duration::ZERO)),
            64 << 20,
            0,
        );
        (conn, peer)
    }

    /// A frame in pieces that a full socket does not take is finished from a queued copy of
    /// what is left, and then a frame sent behind it, copied whole: the peer reads both, byte
    /// for byte, in order, although the caller's pieces were gone before it read anything.
    #[test]
    fn the_rest_of_a_frame_in_pieces_goes_from_a_copy() {
        let (conn, mut peer) = conn_and_peer();
        let big: Vec<u8> = (0..24usize << 20)
            .map(|i| (i * 7 + (i >> 12)) as u8)
            .collect();
        let mut h = Header::new(Kind::Message);
        h.a = 5;
        {
            let pieces = big.clone();
            let (x, y) = pieces.split_at(3);
            // Whatever the socket does not take at once is copied and queued.
            conn.send_parts(h, &[x, y], 0).expect("send_parts");
            assert!(conn.has_queued(), "24 MiB went into a socket nobody reads");
        }
        conn.send_parts(h, &[b"tail"], 0).expect("behind");
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; 2 * HEADER_LEN + (24 << 20) + 4];
            peer.read_exact(&mut got).expect("read");
            got
        });
        while conn.has_queued() {
            conn.flush_queue().expect("flush");
            std::thread::yield_now();
        }
        let got = reader.join().expect("reader");
        let first: [u8; HEADER_LEN] = got[..HEADER_LEN].try_into().expect("header");
        let first = Header::decode(&first, 64 << 20).expect("decode");
        assert_eq!(
            (first.kind, first.a, first.payload_len),
            (Kind::Message, 5, 24 << 20)
        );
        assert!(
            got[HEADER_LEN..HEADER_LEN + big.len()] == big[..],
            "payload bytes"
        );
        let at = HEADER_LEN + big.len();
        let second: [u8; HEADER_LEN] = got[at..at + HEADER_LEN].try_into().expect("header");
        assert_eq!(
            Header::decode(&second, 64 << 20)
                .expect("decode")
                .payload_len,
            4
        );
        assert_eq!(&got[at + HEADER_LEN..], b"tail");
    }
}
