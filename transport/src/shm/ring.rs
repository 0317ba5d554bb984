//! A single-producer, single-consumer byte ring in shared memory, and the frames of two-sided
//! messages carried through it.
//!
//! There is no lock in shared memory: the producer (one process, its threads serialised by a
//! local mutex) alone writes `tail`, the consumer (one process, likewise) alone writes `head`.
//! A process killed half-way through a frame leaves a partial frame and nothing locked; the
//! consumer drops it when it learns the producer is gone. Both counters only grow (mod 2^64);
//! every value read from the other side is checked (`tail - head <= capacity`) before use.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of a frame header: payload length (u32), kind (u32), tag (u64), little endian.
pub(super) const FRAME_HEADER: usize = 16;
/// A two-sided message.
pub(super) const KIND_MESSAGE: u32 = 1;
/// The sender closed its transport in order; nothing follows.
pub(super) const KIND_GOODBYE: u32 = 2;

/// One ring: two counters and `cap` bytes of data, all inside a mapped control segment.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ring<'a> {
    pub(super) head: &'a AtomicU64,
    pub(super) tail: &'a AtomicU64,
    pub(super) data: *mut u8,
    pub(super) cap: u64,
}

/// The ring's counters broke the protocol (only a corrupted peer can cause it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Corrupt;

impl Ring<'_> {
    /// Bytes the consumer may read: `tail - head`, checked.
    fn used(&self, head: u64, tail: u64) -> Result<u64, Corrupt> {
        let used = tail.wrapping_sub(head);
        if used > self.cap {
            Err(Corrupt)
        } else {
            Ok(used)
        }
    }

    /// Whether bytes are waiting (for the consumer).
    pub(super) fn has_data(&self) -> bool {
        self.head.load(Ordering::Relaxed) != self.tail.load(Ordering::Acquire)
    }

    /// Copies `n` bytes between the ring at stream position `at` and `buf`, in at most two
    /// pieces around the end of the data area. `to_ring` chooses the direction.
    fn copy(&self, at: u64, buf: *mut u8, n: usize, to_ring: bool) {
        let pos = (at % self.cap) as usize;
        let first = n.min(self.cap as usize - pos);
        for (ring_at, buf_at, len) in [(pos, 0, first), (0, first, n - first)] {
            if len == 0 {
                continue;
            }
            let (r, b) = (self.data.wrapping_add(ring_at), buf.wrapping_add(buf_at));
            let (src, dst) = if to_ring { (b, r) } else { (r, b) };
            // SAFETY: `ring_at + len <= cap` (the first piece stops at the end of the data
            // area, the second starts at 0 and is shorter than `cap`, as `n <= cap` for every
            // caller), so the ring side lies inside the mapped data area, which outlives
            // `self`; the buffer side is `len` bytes inside the caller's buffer of `n` bytes;
            // a process-local buffer and the shared ring never overlap.
            unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        }
    }

    /// Producer: writes as much of `bytes` as fits and publishes it; returns how much.
    pub(super) fn push(&self, bytes: &[u8]) -> Result<usize, Corrupt> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let free = self.cap - self.used(head, tail)?;
        let n = (bytes.len() as u64).min(free) as usize;
        if n > 0 {
            self.copy(tail, bytes.as_ptr().cast_mut(), n, true);
            self.tail
                .store(tail.wrapping_add(n as u64), Ordering::Release);
        }
        Ok(n)
    }

    /// Producer: writes all of `pieces`, one after the other, and publishes them with one
    /// store of `tail` (the consumer sees the whole frame at once, and its cache line moves
    /// once), if they fit in the free space; returns whether they did (nothing is written
    /// otherwise).
    pub(super) fn push_all<'b>(
        &self,
        pieces: impl Iterator<Item = &'b [u8]> + Clone,
    ) -> Result<bool, Corrupt> {
        let tail = self.tail.load(Ordering::Relaxed);
        let head = self.head.load(Ordering::Acquire);
        let free = self.cap - self.used(head, tail)?;
        let total: usize = pieces.clone().map(<[u8]>::len).sum();
        if total as u64 > free {
            return Ok(false);
        }
        let mut at = tail;
        for p in pieces {
            self.copy(at, p.as_ptr().cast_mut(), p.len(), true);
            at = at.wrapping_add(p.len() as u64);
        }
        self.tail.store(at, Ordering::Release);
        Ok(true)
    }

    /// Consumer: bytes available.
    fn available(&self) -> Result<u64, Corrupt> {
        let head = self.head.load(Ordering::Relaxed);
        self.used(head, self.tail.load(Ordering::Acquire))
    }

    /// Consumer: moves `dst.len()` bytes (at most [`Ring::available`]) out of the ring.
    fn pop(&self, dst: &mut [u8]) {
        let head = self.head.load(Ordering::Relaxed);
        self.copy(head, dst.as_mut_ptr(), dst.len(), false);
        self.head
            .store(head.wrapping_add(dst.len() as u64), Ordering::Release);
    }

    /// Consumer: moves `n` bytes (at most [`Ring::available`]) out of the ring onto the end
    /// of `v`, with no zeroing of `v`'s new bytes first.
    fn pop_onto(&self, v: &mut Vec<u8>, n: usize) {
        v.reserve(n);
        let at = v.len();
        let head = self.head.load(Ordering::Relaxed);
        self.copy(head, v.as_mut_ptr().wrapping_add(at), n, false);
        // SAFETY: `reserve` made room for `n` bytes after `at`, and `copy` has just written
        // all of them, so the first `at + n` bytes are initialised and within the capacity.
        unsafe { v.set_len(at + n) };
        self.head
            .store(head.wrapping_add(n as u64), Ordering::Release);
    }

    /// Consumer: drops `n` bytes (at most [`Ring::available`]).
    fn skip(&self, n: u64) {
        let head = self.head.load(Ordering::Relaxed);
        self.head.store(head.wrapping_add(n), Ordering::Release);
    }
}

/// The frame header of a message of `len` bytes (or a goodbye).
pub(super) fn header(kind: u32, tag: u64, len: usize) -> [u8; FRAME_HEADER] {
    let mut h = [0u8; FRAME_HEADER];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..8].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&tag.to_le_bytes());
    h
}

/// Padding that keeps frames 8-byte aligned in the stream.
pub(super) fn padding(len: usize) -> usize {
    len.next_multiple_of(8) - len
}

/// A frame taken out of a ring.
#[derive(Debug)]
pub(super) enum Frame {
    /// A message with its tag.
    Message(u64, Vec<u8>),
    /// The sender closed in order.
    Goodbye,
}

/// What [`Reader::lend`] found at the head of a ring.
#[derive(Debug)]
pub(super) enum Lend {
    /// No frame header yet.
    Empty,
    /// A message was lent and taken; it is out of the ring.
    Taken,
    /// A message was lent and refused: its payload, out of the ring.
    Refused(Vec<u8>),
    /// The next frame is not a message that can be lent (another tag, a goodbye, a message
    /// not whole yet, or lying across the end of the data area, or streaming through the
    /// ring): [`Reader::next`] takes it.
    Other,
}

/// A message being received, possibly over several calls (it may be larger than the ring).
#[derive(Debug)]
struct Partial {
    tag: u64,
    len: usize,
    /// Bytes of payload and padding consumed so far.
    got: usize,
    buf: Vec<u8>,
}

/// The consumer's process-local state for one ring.
#[derive(Debug, Default)]
pub(super) struct Reader {
    partial: Option<Partial>,
}

impl Reader {
    /// Lends the next frame's payload to `take` where it lies in `ring`, if that frame is a
    /// whole message with tag `want` in one piece, then moves the ring's head past it (one
    /// store). `take` returns whether it took the payload; a refused one is copied out first.
    /// Anything else is left for [`Reader::next`], which also checks what this does not.
    pub(super) fn lend(
        &mut self,
        ring: &Ring<'_>,
        max: usize,
        want: u64,
        take: impl FnOnce(&[u8]) -> bool,
    ) -> Result<Lend, String> {
        if self.partial.is_some() {
            return Ok(Lend::Other);
        }
        let avail = ring
            .available()
            .map_err(|_| "ring counters out of range".to_string())?;
        if avail < FRAME_HEADER as u64 {
            return Ok(Lend::Empty);
        }
        let head = ring.head.load(Ordering::Relaxed);
        let pos = (head % ring.cap) as usize;
        if pos + FRAME_HEADER > ring.cap as usize {
            return Ok(Lend::Other);
        }
        let mut h = [0u8; FRAME_HEADER];
        ring.copy(head, h.as_mut_ptr(), FRAME_HEADER, false);
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let kind = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let mut t = [0u8; 8];
        t.copy_from_slice(&h[8..16]);
        let total = FRAME_HEADER + len + padding(len);
        if kind != KIND_MESSAGE
            || u64::from_le_bytes(t) != want
            || len > max
            || total as u64 > avail
            || pos + FRAME_HEADER + len > ring.cap as usize
        {
            return Ok(Lend::Other);
        }
        // SAFETY: the `len` bytes after the header lie inside the data area (checked just
        // above: `pos + FRAME_HEADER + len <= cap`), which outlives `ring`; they are between
        // `head` and `tail` (`total <= avail`, `tail` read with acquire ordering), so the
        // producer wrote them before it published `tail` and writes no byte there until `head`
        // moves past them, which happens below, after the slice's last use.
        let payload =
            unsafe { std::slice::from_raw_parts(ring.data.wrapping_add(pos + FRAME_HEADER), len) };
        let lent = if take(payload) {
            Lend::Taken
        } else {
            Lend::Refused(payload.to_vec())
        };
        ring.head
            .store(head.wrapping_add(total as u64), Ordering::Release);
        Ok(lent)
    }

    /// Takes the next whole frame out of `ring`, if there is one yet; `Err` describes a
    /// protocol violation (the ring must not be read again).
    pub(super) fn next(&mut self, ring: &Ring<'_>, max: usize) -> Result<Option<Frame>, String> {
        let corrupt = |_| "ring counters out of range".to_string();
        loop {
            let avail = ring.available().map_err(corrupt)?;
            let Some(p) = &mut self.partial else {
                if avail < FRAME_HEADER as u64 {
                    return Ok(None);
                }
                let mut h = [0u8; FRAME_HEADER];
                ring.pop(&mut h);
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let kind = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
                let mut t = [0u8; 8];
                t.copy_from_slice(&h[8..16]);
                let tag = u64::from_le_bytes(t);
                match kind {
                    KIND_GOODBYE if len == 0 => return Ok(Some(Frame::Goodbye)),
                    KIND_MESSAGE if len <= max => {}
                    _ => return Err(format!("bad frame: kind {kind}, {len} bytes")),
                }
                self.partial = Some(Partial {
                    tag,
                    len,
                    got: 0,
                    buf: crate::pool::buffer(len),
                });
                continue;
            };
            let total = p.len + padding(p.len);
            let take = ((total - p.got) as u64).min(avail) as usize;
            let data = take.min(p.len.saturating_sub(p.got));
            if data > 0 {
                ring.pop_onto(&mut p.buf, data);
            }
            ring.skip((take - data) as u64);
            p.got += take;
            if p.got == total {
                let done = self.partial.take().map(|p| Frame::Message(p.tag, p.buf));
                return Ok(done);
            }
            if take == 0 {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(words: &[AtomicU64; 2], data: &mut [u8]) -> Ring<'static> {
        let words: &'static [AtomicU64; 2] = Box::leak(Box::new([
            AtomicU64::new(words[0].load(Ordering::Relaxed)),
            AtomicU64::new(words[1].load(Ordering::Relaxed)),
        ]));
        Ring {
            head: &words[0],
            tail: &words[1],
            data: data.as_mut_ptr(),
            cap: data.len() as u64,
        }
    }

    #[test]
    fn frames_larger_than_the_ring_stream_through() {
        let mut data = vec![0u8; 64];
        let r = ring(
            &[AtomicU64::new(u64::MAX - 20), AtomicU64::new(u64::MAX - 20)],
            &mut data,
        );
        let payload: Vec<u8> = (0..301u32).map(|i| i as u8).collect();
        let mut stream = header(KIND_MESSAGE, 7, payload.len()).to_vec();
        stream.extend_from_slice(&payload);
        stream.extend(std::iter::repeat_n(0, padding(payload.len())));
        let mut reader = Reader::default();
        let mut sent = 0;
        let mut got = None;
        while got.is_none() {
            sent += r.push(&stream[sent..]).unwrap();
            got = reader.next(&r, 1 << 20).unwrap();
        }
        assert_eq!(sent, stream.len());
        match got {
            Some(Frame::Message(7, b)) => assert_eq!(b, payload),
            other => panic!("{other:?}"),
        }
        assert!(!r.has_data());
    }

    #[test]
    fn a_frame_in_pieces_is_published_whole_or_not_at_all() {
        // 64 bytes of ring, its counters 8 bytes before the end of the data area.
        let mut data = vec![0u8; 64];
        let r = ring(&[AtomicU64::new(56), AtomicU64::new(56)], &mut data);
        let payload = [&b"abc"[..], &b"defgh"[..]];
        let head = header(KIND_MESSAGE, 9, 8);
        let frame = || std::iter::once(&head[..]).chain(payload.iter().copied());
        // 24 bytes: published at once, across the end of the data area.
        assert_eq!(r.push_all(frame()), Ok(true));
        assert_eq!(r.tail.load(Ordering::Relaxed), 56 + 24);
        // Two more do not fit in the 40 bytes left: the second is refused, nothing written.
        assert_eq!(r.push_all(frame()), Ok(true));
        assert_eq!(r.push_all(frame()), Ok(false));
        assert_eq!(r.tail.load(Ordering::Relaxed), 56 + 48);
        let mut reader = Reader::default();
        for _ in 0..2 {
            match reader.next(&r, 100).unwrap() {
                Some(Frame::Message(9, b)) => assert_eq!(b, b"abcdefgh"),
                other => panic!("{other:?}"),
            }
        }
        assert!(reader.next(&r, 100).unwrap().is_none());
    }

    #[test]
    fn corrupt_counters_and_frames_are_refused() {
        let mut data = vec![0u8; 64];
        let r = ring(&[AtomicU64::new(0), AtomicU64::new(65)], &mut data);
        assert!(Reader::default().next(&r, 100).is_err());
        assert_eq!(r.push(b"x"), Err(Corrupt));
        let r = ring(&[AtomicU64::new(0), AtomicU64::new(0)], &mut data);
        r.push(&header(KIND_MESSAGE, 1, 1000)).unwrap();
        assert!(Reader::default().next(&r, 100).is_err(), "too long");
        let r = ring(&[AtomicU64::new(0), AtomicU64::new(0)], &mut data);
        r.push(&header(9, 1, 0)).unwrap();
        assert!(Reader::default().next(&r, 100).is_err(), "unknown kind");
    }
}
