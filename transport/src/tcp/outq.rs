//! The outgoing side of a tcp connection: frames waiting for the socket, and writing them with
//! as few system calls as it takes.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::completion::Completer;
use crate::region::Region;
use crate::wire::HEADER_LEN;

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
    /// A small head of owned bytes, then a caller's buffer lent until the frame is written
    /// (`Transport::send_lent`): `done` completes when the last byte is with the kernel, and
    /// fails (dropped) when the connection goes down first; either way nothing reads the
    /// buffer after that.
    Lent {
        head: Vec<u8>,
        body: LentBytes,
        done: Completer,
    },
}

/// A caller's buffer, kept valid and unchanged until its frame's completion by the contract of
/// `Transport::send_lent`.
#[derive(Debug)]
pub(crate) struct LentBytes {
    pub(crate) ptr: *const u8,
    pub(crate) len: usize,
}

// SAFETY: `LentBytes` is a pointer to bytes that nobody changes while it exists (the contract
// of `Transport::send_lent`); only the kernel reads through it, from whichever thread writes
// the queue, one at a time under the queue's lock.
unsafe impl Send for LentBytes {}
// SAFETY: as for `Send`: shared access only ever reads the pointer's value.
unsafe impl Sync for LentBytes {}

impl Payload {
    /// Start and length of the bytes, in at most two pieces, as raw parts: region memory may
    /// change under us (remote writers, local stores) and lent memory is the caller's, so
    /// neither is borrowed as a Rust slice, only handed to the kernel.
    pub(super) fn pieces(&self) -> [(*const u8, usize); 2] {
        const NONE: (*const u8, usize) = (std::ptr::null(), 0);
        match self {
            Payload::None => [NONE, NONE],
            Payload::Bytes(b) => [(b.as_ptr(), b.len()), NONE],
            // `offset..offset+len` was bounds-checked against the region when the payload was
            // made, and the `Arc` keeps the region mapped while the payload exists.
            Payload::Region {
                region,
                offset,
                len,
            } => [
                (region.as_ptr().wrapping_add(*offset).cast_const(), *len),
                NONE,
            ],
            Payload::Lent { head, body, .. } => [(head.as_ptr(), head.len()), (body.ptr, body.len)],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.pieces().iter().map(|p| p.1).sum()
    }
}

#[derive(Debug)]
pub(super) struct Queued {
    pub(super) header: [u8; HEADER_LEN],
    pub(super) payload: Payload,
    /// Bytes of header + payload already written.
    pub(super) sent: usize,
    /// A response whose payload must show memory as it was when it was queued (see
    /// [`super::conn::Conn::before_memory_change`]).
    pub(super) response: bool,
}

impl Queued {
    fn total(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }
}

/// Writes from the front of `q` until it is empty or the socket would block. Uses `sendmsg`
/// with `MSG_NOSIGNAL`: a peer that reset the connection is an error here, never a SIGPIPE that
/// kills a C program that left SIGPIPE at its default.
pub(super) fn drain(stream: &mio::net::TcpStream, q: &mut VecDeque<Queued>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// Frames gathered into one `sendmsg` (up to three iovecs each).
    const GATHER: usize = 32;
    while !q.is_empty() {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 3 * GATHER];
        let mut count = 0;
        for f in q.iter().take(GATHER) {
            let [p0, p1] = f.payload.pieces();
            let header = (f.header.as_ptr(), HEADER_LEN);
            let mut at = 0usize;
            for (ptr, len) in [header, p0, p1] {
                let end = at + len;
                if end > f.sent && len > 0 {
                    let from = f.sent.saturating_sub(at);
                    iov[count] = libc::iovec {
                        iov_base: ptr.wrapping_add(from) as *mut libc::c_void,
                        iov_len: len - from,
                    };
                    count += 1;
                }
                at = end;
            }
        }
        // SAFETY: an all-zero msghdr is a valid "no name, no control data" header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = count;
        // SAFETY: `msg` points at `count` iovecs that describe live memory: the queued headers
        // (owned by the queue, which is not touched until the call returns) and the payloads,
        // owned by their frames, kept mapped by their `Arc` or lent until their frame's
        // completion (which is not signalled before the last byte is written); the kernel only
        // reads from them, and nothing else borrows them as Rust slices.
        let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock => return Ok(()),
                std::io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        // Account the bytes sent, frame by frame.
        let mut left = n as usize;
        while left > 0 {
            let Some(front) = q.front_mut() else { break };
            let take = (front.total() - front.sent).min(left);
            front.sent += take;
            left -= take;
            if front.sent == front.total() {
                match q.pop_front().map(|f| f.payload) {
                    Some(Payload::Bytes(b)) => crate::pool::recycle(b),
                    Some(Payload::Lent { done, .. }) => done.complete(0),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}
