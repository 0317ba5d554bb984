//! The tcp backend's wire format: versioned, length-prefixed frames, and a decoder that turns
//! arbitrary bytes into frames or a clear error, never a panic.
//!
//! Every frame is a 48-byte header followed by `payload_len` bytes:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `"DF"` |
//! | 2 | 1 | version ([`VERSION`]) |
//! | 3 | 1 | kind ([`Kind`]) |
//! | 4 | 4 | payload length, little endian |
//! | 8 | 8 | request id (echoed in the response) |
//! | 16 | 8 | `a`: key, status or tag |
//! | 24 | 8 | `b`: offset or value |
//! | 32 | 8 | `c`: length, expected value or addend |
//! | 40 | 8 | `d`: desired value |
//!
//! `docs/PROTOCOL.md` describes each kind. This module does no I/O of its own.

use std::io::Read;

/// Version of the wire format; a frame of any other version is refused.
pub const VERSION: u8 = 1;
/// Length of a frame header.
pub const HEADER_LEN: usize = 48;
const MAGIC: [u8; 2] = *b"DF";

/// The kinds of frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Read `c` bytes at offset `b` of region `a`.
    Read = 1,
    /// Write the payload at offset `b` of region `a`.
    Write = 2,
    /// Compare-and-swap the word at offset `b` of region `a`: expected `c`, desired `d`.
    CompareSwap = 3,
    /// Fetch-and-add `c` to the word at offset `b` of region `a`.
    FetchAdd = 4,
    /// Answered once every earlier request on the connection has been served.
    Flush = 5,
    /// The answer to request `id`: status `a` (0 = success), value `b`, data in the payload.
    Response = 6,
    /// A two-sided message with tag `a`.
    Message = 7,
    /// Keeps an idle connection alive.
    Heartbeat = 8,
    /// The sender is closing its transport in order.
    Goodbye = 9,
    /// Write several runs of bytes into region `a` near offset `b`: the payload is a run count
    /// (u32), then per run its offset from `b` and its length (u32 each), then the runs' bytes
    /// back to back. One frame for a page's diff, however scattered.
    WriteRuns = 10,
    /// Add `c` (wrapping) to `d & 0xffff_ffff` aligned 8-byte words of region `a`, the first at
    /// offset `b`, each `d >> 32` bytes after the previous one: one frame for a run of
    /// directory registrations. No payload; the response carries only the status.
    AddStrided = 11,
    /// Combine the payload's elements into region `a` at offset `b` with the reduction `c`
    /// ([`crate::Reduction`]); when `d` is 1 the response carries the bytes as they were before.
    Accumulate = 12,
}

impl Kind {
    /// Whether the peer answers this frame with a [`Kind::Response`].
    pub fn is_request(self) -> bool {
        !matches!(
            self,
            Kind::Response | Kind::Message | Kind::Heartbeat | Kind::Goodbye
        )
    }

    fn from_u8(k: u8) -> Option<Kind> {
        Some(match k {
            1 => Kind::Read,
            2 => Kind::Write,
            3 => Kind::CompareSwap,
            4 => Kind::FetchAdd,
            5 => Kind::Flush,
            6 => Kind::Response,
            7 => Kind::Message,
            8 => Kind::Heartbeat,
            9 => Kind::Goodbye,
            10 => Kind::WriteRuns,
            11 => Kind::AddStrided,
            12 => Kind::Accumulate,
            _ => return None,
        })
    }
}

/// Why bytes could not be decoded. The connection they came from is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The first two bytes are not the magic number.
    #[error("bad magic {0:02x?}: not a DSM frame")]
    BadMagic([u8; 2]),
    /// A version this node does not speak.
    #[error("wire version {0}, this node speaks version {VERSION}")]
    Version(u8),
    /// An unknown kind byte.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The payload is larger than the limit.
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    Oversized {
        /// Announced length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A frame whose fields contradict each other (payload on a read request...).
    #[error("malformed {kind:?} frame: {detail}")]
    Malformed {
        /// The frame's kind.
        kind: Kind,
        /// What is wrong.
        detail: &'static str,
    },
}

/// A frame header, decoded and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The kind of frame.
    pub kind: Kind,
    /// Length of the payload that follows.
    pub payload_len: u32,
    /// Request id.
    pub id: u64,
    /// Field `a`.
    pub a: u64,
    /// Field `b`.
    pub b: u64,
    /// Field `c`.
    pub c: u64,
    /// Field `d`.
    pub d: u64,
}

impl Header {
    /// A header of `kind` with every field zero.
    pub fn new(kind: Kind) -> Header {
        Header {
            kind,
            payload_len: 0,
            id: 0,
            a: 0,
            b: 0,
            c: 0,
            d: 0,
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&MAGIC);
        h[2] = VERSION;
        h[3] = self.kind as u8;
        h[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        for (i, v) in [self.id, self.a, self.b, self.c, self.d]
            .into_iter()
            .enumerate()
        {
            h[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        h
    }

    /// Decodes and checks a header. `max_payload` bounds payloads and read lengths.
    ///
    /// # Errors
    /// A [`WireError`] naming what is wrong.
    pub fn decode(h: &[u8; HEADER_LEN], max_payload: u32) -> Result<Header, WireError> {
        if h[0..2] != MAGIC {
            return Err(WireError::BadMagic([h[0], h[1]]));
        }
        if h[2] != VERSION {
            return Err(WireError::Version(h[2]));
        }
        let kind = Kind::from_u8(h[3]).ok_or(WireError::UnknownKind(h[3]))?;
        let payload_len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&h[8 + 8 * i..16 + 8 * i]);
            u64::from_le_bytes(w)
        };
        let hd = Header {
            kind,
            payload_len,
            id: word(0),
            a: word(1),
            b: word(2),
            c: word(3),
            d: word(4),
        };
        if payload_len > max_payload {
            return Err(WireError::Oversized {
                len: payload_len.into(),
                max: max_payload.into(),
            });
        }
        let malformed = |detail| Err(WireError::Malformed { kind, detail });
        match kind {
            Kind::Read => {
                if payload_len != 0 {
                    return malformed("a read request carries no payload");
                }
                if hd.c > u64::from(max_payload) {
                    return Err(WireError::Oversized {
                        len: hd.c,
                        max: max_payload.into(),
                    });
                }
            }
            Kind::CompareSwap
            | Kind::FetchAdd
            | Kind::AddStrided
            | Kind::Flush
            | Kind::Heartbeat
            | Kind::Goodbye => {
                if payload_len != 0 {
                    return malformed("this kind carries no payload");
                }
            }
            Kind::Write | Kind::Response | Kind::Message | Kind::WriteRuns | Kind::Accumulate => {}
        }
        Ok(hd)
    }
}

/// Encodes the payload of a [`Kind::WriteRuns`] frame: `runs` of `(offset, len)` within `data`
/// (which holds the bytes at those offsets).
pub fn encode_runs(runs: &[(u32, u32)], data: &[u8]) -> Vec<u8> {
    let mut p = runs_table(runs);
    for &(off, len) in runs {
        p.extend_from_slice(&data[off as usize..off as usize + len as usize]);
    }
    p
}

/// The start of a [`Kind::WriteRuns`] payload: the run count and the table of runs, with room
/// reserved for the runs' bytes, which the caller appends in order.
pub fn runs_table(runs: &[(u32, u32)]) -> Vec<u8> {
    let total: usize = runs.iter().map(|r| r.1 as usize).sum();
    let mut p = Vec::with_capacity(4 + runs.len() * 8 + total);
    p.extend_from_slice(&(runs.len() as u32).to_le_bytes());
    for &(off, len) in runs {
        p.extend_from_slice(&off.to_le_bytes());
        p.extend_from_slice(&len.to_le_bytes());
    }
    p
}

/// Decodes a [`Kind::WriteRuns`] payload into `(offset, bytes)` pairs, checking that the
/// lengths add up exactly; `None` for a malformed payload.
pub fn decode_runs(payload: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let word = |at: usize| {
        payload
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let count = word(0)? as usize;
    let table_end = count.checked_mul(8)?.checked_add(4)?;
    if table_end > payload.len() {
        return None;
    }
    let mut at = table_end;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let off = word(4 + i * 8)?;
        let len = word(8 + i * 8)? as usize;
        let bytes = payload.get(at..at.checked_add(len)?)?;
        at += len;
        out.push((u64::from(off), bytes));
    }
    (at == payload.len()).then_some(out)
}

/// A whole frame: header and payload, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The checked header.
    pub header: Header,
    /// The payload (`header.payload_len` bytes).
    pub payload: &'a [u8],
}

/// Reassembles frames from a byte stream.
///
/// Feed it with [`FrameReader::fill_from`] (or [`FrameReader::push`]) and take frames with
/// [`FrameReader::next_frame`], which lends each payload straight out of the buffer (no copy).
/// After an error the stream cannot be resynchronised; the connection must be closed.
#[derive(Debug)]
pub struct FrameReader {
    /// Always fully initialised; `start..end` holds unread bytes.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_payload: u32,
    header: Option<Header>,
    /// The last read returned less than it asked for: the socket was empty at that moment.
    short: bool,
    /// The last header carried a large payload ([`LARGE_PAYLOAD`]): the next is likely large
    /// too, so reads between frames ask for [`AFTER_LARGE_ASK`] only.
    after_large: bool,
}

/// Initial buffer size is four times this: large buffers mean rare compaction.
const MIN_READ: usize = 256 * 1024;

/// The most a read asks for beyond the rest of the frame in progress. Small enough that a large
/// payload is mostly left in the socket until its header is seen, so that it is then read
/// straight into its destination (`tcp::progress::try_direct`) instead of through this buffer
/// and a copy out of it: asking for the whole buffer (1 MiB), a 1 MiB message that had arrived
/// before the read was copied once more (kernel to this buffer, this buffer to its own).
/// Large enough that a stream of small frames costs one system call per 16 of 4 KiB.
const ASK: usize = 64 * 1024;

/// Payloads from this size up are large: after one, a read between frames asks for a header and
/// the start of a payload only, and the tcp backend reads them straight into their destination.
pub const LARGE_PAYLOAD: usize = 16 * 1024;

/// What a read between frames asks for after a frame with a large payload: a header and the
/// start of its payload, so that the rest of a large payload that follows stays in the socket
/// until it is read straight to where it goes. Asking [`ASK`] there, a stream of 64 KiB
/// messages (each sent as a 65,483-byte segment and a small one) had most of every payload read
/// into this buffer, then copied out (`osu_bw`).
const AFTER_LARGE_ASK: usize = 4096;

impl FrameReader {
    /// A reader that refuses payloads larger than `max_payload` bytes.
    pub fn new(max_payload: u32) -> FrameReader {
        FrameReader {
            buf: vec![0; 4 * MIN_READ],
            short: false,
            after_large: false,
            start: 0,
            end: 0,
            max_payload,
            header: None,
        }
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Makes room for at least `want` more bytes after `end`, moving unread bytes to the front.
    fn reserve(&mut self, want: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end >= want {
            return;
        }
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
    }

    /// Appends bytes (for tests and fuzzing; sockets use [`FrameReader::fill_from`]).
    pub fn push(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Reads once from `src` into the buffer: enough for the frame in progress when its size is
    /// known. Returns what `read` returned (0 at end of stream).
    ///
    /// # Errors
    /// The reader's error, including `WouldBlock` on a non-blocking socket.
    pub fn fill_from<R: Read>(&mut self, src: &mut R) -> std::io::Result<usize> {
        let ask = match self.header {
            Some(h) => (h.payload_len as usize)
                .saturating_sub(self.buffered())
                .max(ASK),
            None if self.after_large => AFTER_LARGE_ASK,
            None => ASK,
        };
        self.reserve(ask);
        let n = src.read(&mut self.buf[self.end..self.end + ask])?;
        self.short = n < ask;
        self.end += n;
        Ok(n)
    }

    /// Whether the last [`FrameReader::fill_from`] got less than it asked for, which on a stream
    /// socket means it emptied the receive queue: with edge-triggered readiness there is no
    /// need for another read until the next readable event.
    pub fn drained(&self) -> bool {
        self.short
    }

    /// The next complete frame, `None` when more bytes are needed.
    ///
    /// # Errors
    /// A [`WireError`] for bytes that are not a valid frame.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        let Some(header) = self.next_header()? else {
            return Ok(None);
        };
        let len = header.payload_len as usize;
        if self.buffered() < len {
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        self.header = None;
        Ok(Some(Frame {
            header,
            payload: &self.buf[at..at + len],
        }))
    }

    /// The header of the frame in progress, decoding it once its 48 bytes are buffered; its
    /// payload may not be complete yet (see [`FrameReader::payload_buffered`]).
    ///
    /// # Errors
    /// A [`WireError`] for bytes that are not a valid header.
    pub fn next_header(&mut self) -> Result<Option<Header>, WireError> {
        if let Some(h) = self.header {
            return Ok(Some(h));
        }
        if self.buffered() < HEADER_LEN {
            return Ok(None);
        }
        let mut raw = [0u8; HEADER_LEN];
        raw.copy_from_slice(&self.buf[self.start..self.start + HEADER_LEN]);
        let h = Header::decode(&raw, self.max_payload)?;
        self.after_large = h.payload_len as usize >= LARGE_PAYLOAD;
        self.start += HEADER_LEN;
        self.header = Some(h);
        Ok(Some(h))
    }

    /// How much of the payload of the frame in progress is buffered (0 without a header).
    pub fn payload_buffered(&self) -> usize {
        self.header
            .map_or(0, |h| self.buffered().min(h.payload_len as usize))
    }

    /// The buffered part of the payload of the frame in progress (empty without a header).
    pub fn payload_start(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.payload_buffered()]
    }

    /// Hands the rest of the frame in progress to the caller, who will read its remaining
    /// `payload_len - prefix.len()` bytes straight from the stream into their destination (no
    /// copy through this buffer). Returns the prefix already buffered; the reader then expects
    /// the next frame's header.
    pub fn detach_payload(&mut self) -> &[u8] {
        let n = self.payload_buffered();
        let at = self.start;
        self.start += n;
        self.header = None;
        &self.buf[at..at + n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut h = Header::new(kind);
        h.id = 77;
        h.a = 5;
        h.payload_len = payload.len() as u32;
        let mut v = h.encode().to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// After a frame with a large payload, a read between frames asks for a header and the
    /// start of a payload only, leaving the rest of the next large payload in the stream for
    /// its destination; after a small one it asks [`ASK`] again.
    #[test]
    fn reads_after_a_large_frame_leave_the_next_payload_in_the_stream() {
        // Twice ASK: the reads for the first frame end exactly at its end.
        let large = vec![9u8; 2 * ASK];
        let mut stream = frame(Kind::Message, &large);
        stream.extend(frame(Kind::Message, &large));
        stream.extend(frame(Kind::Message, b"small"));
        stream.extend(vec![0u8; 2 * ASK]);
        let mut src = std::io::Cursor::new(stream);
        let mut r = FrameReader::new(u32::MAX);
        while r.next_header().expect("header").is_none() || r.buffered() < large.len() {
            r.fill_from(&mut src).expect("read");
        }
        assert_eq!(
            r.next_frame().expect("frame").map(|f| f.payload.len()),
            Some(large.len())
        );
        assert_eq!(r.buffered(), 0, "the first frame's reads went past it");
        let n = r.fill_from(&mut src).expect("read");
        assert_eq!(
            n, AFTER_LARGE_ASK,
            "a read after a large frame asked for more"
        );
        let h = r.next_header().expect("header").expect("the second header");
        assert_eq!(r.payload_start().len(), AFTER_LARGE_ASK - HEADER_LEN);
        // The backend reads the rest straight to its destination; then the small frame.
        let rest = h.payload_len as usize - r.detach_payload().len();
        let mut sink = vec![0u8; rest];
        std::io::Read::read_exact(&mut src, &mut sink).expect("the rest of the payload");
        r.fill_from(&mut src).expect("read");
        assert_eq!(
            r.next_frame().expect("frame").map(|f| f.payload.len()),
            Some(5)
        );
        assert_eq!(
            r.fill_from(&mut src).expect("read"),
            ASK,
            "after a small frame"
        );
    }

    #[test]
    fn round_trip_in_pieces() {
        let mut bytes = frame(Kind::Write, b"hello");
        bytes.extend(frame(Kind::Heartbeat, b""));
        let mut r = FrameReader::new(1 << 20);
        for b in &bytes {
            r.push(std::slice::from_ref(b));
        }
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!(
            (f.header.kind, f.header.id, f.header.a),
            (Kind::Write, 77, 5)
        );
        assert_eq!(f.payload, b"hello");
        let _ = f;
        assert_eq!(
            r.next_frame().unwrap().unwrap().header.kind,
            Kind::Heartbeat
        );
        assert_eq!(r.next_frame().unwrap(), None);
    }

    #[test]
    fn detached_payloads_resume_at_the_next_frame() {
        let mut bytes = frame(Kind::Write, &[9u8; 100]);
        bytes.extend(frame(Kind::Message, b"next"));
        let mut r = FrameReader::new(1 << 20);
        r.push(&bytes[..HEADER_LEN + 30]);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(
            (h.kind, h.payload_len, r.payload_buffered()),
            (Kind::Write, 100, 30)
        );
        assert_eq!(r.detach_payload(), &[9u8; 30][..]);
        // The caller reads the other 70 bytes itself; the reader sees the next frame.
        r.push(&bytes[HEADER_LEN + 100..]);
        let f = r.next_frame().unwrap().unwrap();
        assert_eq!((f.header.kind, f.payload), (Kind::Message, &b"next"[..]));
    }

    #[test]
    fn rejects_bad_frames() {
        let mut v = frame(Kind::Write, b"x");
        v[0] = b'X';
        let mut r = FrameReader::new(16);
        r.push(&v);
        assert!(matches!(r.next_frame(), Err(WireError::BadMagic(_))));

        let mut v = frame(Kind::Write, b"x");
        v[2] = 9;
        let mut r = FrameReader::new(16);
        r.push(&v);
        assert_eq!(r.next_frame(), Err(WireError::Version(9)));

        let mut v = frame(Kind::Write, b"x");
        v[3] = 200;
        let mut r = FrameReader::new(16);
        r.push(&v);
        assert_eq!(r.next_frame(), Err(WireError::UnknownKind(200)));

        let mut r = FrameReader::new(4);
        r.push(&frame(Kind::Message, b"too long"));
        assert!(matches!(
            r.next_frame(),
            Err(WireError::Oversized { len: 8, max: 4 })
        ));

        let mut r = FrameReader::new(16);
        r.push(&frame(Kind::Read, b"x"));
        assert!(matches!(r.next_frame(), Err(WireError::Malformed { .. })));

        let mut h = Header::new(Kind::Read);
        h.c = 1 << 40;
        let mut r = FrameReader::new(16);
        r.push(&h.encode());
        assert!(matches!(r.next_frame(), Err(WireError::Oversized { .. })));
    }

    #[test]
    fn runs_round_trip_and_reject_lies() {
        let data: Vec<u8> = (0..100).collect();
        let p = encode_runs(&[(3, 2), (50, 10)], &data);
        let runs = decode_runs(&p).unwrap();
        assert_eq!(runs, vec![(3, &data[3..5]), (50, &data[50..60])]);
        let mut short = p.clone();
        short.pop();
        assert!(decode_runs(&short).is_none());
        let mut lie = p.clone();
        lie[0] = 200;
        assert!(decode_runs(&lie).is_none());
        assert!(decode_runs(&[]).is_none());
    }

    proptest! {
        /// The runs decoder never panics on arbitrary bytes.
        #[test]
        fn runs_decoder_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_runs(&b);
        }

        /// Arbitrary bytes never panic the decoder, and a frame it returns re-encodes to the same
        /// bytes it came from.
        #[test]
        fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..200), 0..8)) {
            let mut r = FrameReader::new(256);
            let mut all = Vec::new();
            for c in &chunks {
                r.push(c);
                all.extend_from_slice(c);
                while let Ok(Some(f)) = r.next_frame() {
                    let mut enc = f.header.encode().to_vec();
                    enc.extend_from_slice(f.payload);
                    prop_assert!(all.windows(enc.len()).any(|w| w == &enc[..]));
                }
            }
        }

        /// Valid frames split at arbitrary points come back whole and in order.
        #[test]
        fn valid_frames_survive_any_split(payloads in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..300), 1..6), split in 1usize..97) {
            let mut bytes = Vec::new();
            for p in &payloads {
                bytes.extend(frame(Kind::Message, p));
            }
            let mut r = FrameReader::new(1024);
            let mut got = Vec::new();
            for c in bytes.chunks(split) {
                r.push(c);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f.payload.to_vec());
                }
            }
            prop_assert_eq!(got, payloads);
        }
    }
}
