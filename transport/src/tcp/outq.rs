//! The outgoing side of a tcp connection: frames waiting for the socket, and writing them with
//! as few system calls as it takes.

use std::collections::VecDeque;
use std::sync::Arc;

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
}

impl Payload {
    /// Start and length of the bytes, as raw parts: region memory may change under us (remote
    /// writers, local stores), so it is never borrowed as a Rust slice, only handed to the kernel.
    pub(super) fn raw(&self) -> (*const u8, usize) {
        match self {
            Payload::None => (std::ptr::null(), 0),
            Payload::Bytes(b) => (b.as_ptr(), b.len()),
            // `offset..offset+len` was bounds-checked against the region when the payload was
            // made, and the `Arc` keeps the region mapped while the payload exists.
            Payload::Region {
                region,
                offset,
                len,
            } => (region.as_ptr().wrapping_add(*offset).cast_const(), *len),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.raw().1
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
    /// Frames gathered into one `sendmsg` (two iovecs each).
    const GATHER: usize = 32;
    while !q.is_empty() {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2 * GATHER];
        let mut count = 0;
        for f in q.iter().take(GATHER) {
            let (payload, payload_len) = f.payload.raw();
            if f.sent < HEADER_LEN {
                iov[count] = libc::iovec {
                    iov_base: f.header[f.sent..].as_ptr() as *mut libc::c_void,
                    iov_len: HEADER_LEN - f.sent,
                };
                count += 1;
                if payload_len > 0 {
                    iov[count] = libc::iovec {
                        iov_base: payload as *mut libc::c_void,
                        iov_len: payload_len,
                    };
                    count += 1;
                }
            } else {
                let done = f.sent - HEADER_LEN;
                iov[count] = libc::iovec {
                    iov_base: payload.wrapping_add(done) as *mut libc::c_void,
                    iov_len: payload_len - done,
                };
                count += 1;
            }
        }
        // SAFETY: an all-zero msghdr is a valid "no name, no control data" header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = count;
        // SAFETY: `msg` points at `count` iovecs that describe live memory: the queued headers
        // (owned by the queue, which is not touched until the call returns) and the payloads,
        // owned by their frames or kept mapped by their `Arc`; the kernel only reads from them,
        // and nothing else borrows them as Rust slices.
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
                if let Some(Queued {
                    payload: Payload::Bytes(b),
                    ..
                }) = q.pop_front()
                {
                    crate::pool::recycle(b);
                }
            }
        }
    }
    Ok(())
}
