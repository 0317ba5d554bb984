//! The control segment every `shm` node creates and its peers on the same host map: a header
//! (identity, the doorbell its progress thread sleeps on), the table of its registered regions,
//! and one message ring per sender. The format is in `docs/PROTOCOL.md` ("shm control
//! segment"). Every value read from it is checked before use: a peer's bug cannot make this
//! process read or write outside the mapping.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::memfd::Mapping;

/// `DSMSHM01`, little endian.
pub(super) const MAGIC: u64 = u64::from_le_bytes(*b"DSMSHM01");
/// Format version.
pub(super) const VERSION: u32 = 1;
/// Bytes of header.
const HEADER: usize = 512;
/// Entries of the region table.
pub(super) const KEYS: usize = 1024;
/// Bytes per region-table entry (8 words).
const ENTRY: usize = 64;
/// Bytes of a ring before its data: the consumer's head and the producer's tail, each on its own
/// cache line.
const RING_HEADER: usize = 128;

/// A region-table entry's key while it has never been used.
pub(super) const EMPTY: u64 = 0;
/// A region-table entry's key after its region was deregistered.
pub(super) const TOMBSTONE: u64 = u64::MAX;
/// The `fd` of a region that peers cannot map (memory this crate did not allocate and that is
/// not a shared mapping of a file): operations on it need another backend.
pub(super) const NO_FD: u64 = u64::MAX;

// Header word offsets.
const H_MAGIC: usize = 0;
const H_VERSION_NODES: usize = 8;
const H_RANK_PID: usize = 16;
const H_RING_BYTES: usize = 24;
const H_DOORBELL: usize = 64;
const H_SLEEPING: usize = 128;
const H_SPINNERS: usize = 192;
const H_HEARTBEAT: usize = 256;

/// Total size of a control segment for `nodes` rings of `ring_bytes` data bytes each.
pub(super) fn size(nodes: usize, ring_bytes: usize) -> usize {
    HEADER + KEYS * ENTRY + nodes * (RING_HEADER + ring_bytes)
}

/// Where one registered region lives, as its owner publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Published {
    /// The owner's descriptor number of the file (or [`NO_FD`]).
    pub(super) fd: u64,
    /// The file's device and inode, to check what a peer opened.
    pub(super) dev: u64,
    /// See `dev`.
    pub(super) ino: u64,
    /// The region's offset in the file.
    pub(super) offset: u64,
    /// The region's length.
    pub(super) len: u64,
}

/// A mapped control segment (this node's own, or a peer's).
#[derive(Debug)]
pub(super) struct Control {
    map: Mapping,
    nodes: usize,
    ring_bytes: usize,
}

impl Control {
    /// Initialises a fresh (zero-filled) segment of this node.
    pub(super) fn init(map: Mapping, nodes: usize, rank: u32, ring_bytes: usize) -> Control {
        let c = Control {
            map,
            nodes,
            ring_bytes,
        };
        let pid = std::process::id();
        c.word(H_VERSION_NODES).store(
            u64::from(VERSION) | ((nodes as u64) << 32),
            Ordering::Relaxed,
        );
        c.word(H_RANK_PID)
            .store(u64::from(rank) | (u64::from(pid) << 32), Ordering::Relaxed);
        c.word(H_RING_BYTES)
            .store(ring_bytes as u64, Ordering::Relaxed);
        c.word(H_MAGIC).store(MAGIC, Ordering::Release);
        c
    }

    /// Checks a peer's segment: magic, version, job size, rank, and that its rings fit the
    /// mapping.
    pub(super) fn open(map: Mapping, nodes: usize, rank: u32) -> Result<Control> {
        let bad = |detail: String| Error::Protocol {
            from: crate::Rank(rank),
            detail,
        };
        if map.len() < HEADER {
            return Err(bad("control segment too small".into()));
        }
        let probe = Control {
            map,
            nodes,
            ring_bytes: 0,
        };
        if probe.word(H_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(bad("not a dsm shm control segment".into()));
        }
        let vn = probe.word(H_VERSION_NODES).load(Ordering::Relaxed);
        if vn as u32 != VERSION || (vn >> 32) as usize != nodes {
            return Err(bad(format!(
                "control segment of version {} for {} nodes; expected {VERSION} and {nodes}",
                vn as u32,
                vn >> 32
            )));
        }
        if probe.word(H_RANK_PID).load(Ordering::Relaxed) as u32 != rank {
            return Err(bad("control segment of another rank".into()));
        }
        let ring_bytes = probe.word(H_RING_BYTES).load(Ordering::Relaxed) as usize;
        if ring_bytes == 0
            || !ring_bytes.is_multiple_of(64)
            || ring_bytes > (1 << 30)
            || size(nodes, ring_bytes) > probe.map.len()
        {
            return Err(bad(format!("ring size {ring_bytes} does not fit")));
        }
        Ok(Control {
            ring_bytes,
            ..probe
        })
    }

    /// The atomic word at byte `at` of the segment.
    fn word(&self, at: usize) -> &AtomicU64 {
        assert!(at + 8 <= self.map.len() && at.is_multiple_of(8));
        // SAFETY: `at` is 8-aligned (the mapping is page-aligned) and inside the mapping
        // (asserted above: internal offsets only, never from remote input), which lives as
        // long as `self`; the segment is only ever accessed through atomics.
        unsafe { AtomicU64::from_ptr(self.map.ptr().wrapping_add(at).cast()) }
    }

    fn word32(&self, at: usize) -> &AtomicU32 {
        assert!(at + 4 <= self.map.len() && at.is_multiple_of(4));
        // SAFETY: as for `word`, for a 4-byte word.
        unsafe { AtomicU32::from_ptr(self.map.ptr().wrapping_add(at).cast()) }
    }

    /// The futex word the owner's progress thread sleeps on.
    pub(super) fn doorbell(&self) -> &AtomicU32 {
        self.word32(H_DOORBELL)
    }

    /// 1 while the owner's progress thread is (about to be) asleep.
    pub(super) fn sleeping(&self) -> &AtomicU32 {
        self.word32(H_SLEEPING)
    }

    /// How many of the owner's threads are spinning on its rings (they need no wake-up).
    pub(super) fn spinners(&self) -> &AtomicU32 {
        self.word32(H_SPINNERS)
    }

    /// Counts up while the owner's progress thread runs (see [`super::ShmConfig::peer_timeout`]).
    pub(super) fn heartbeat(&self) -> &AtomicU64 {
        self.word(H_HEARTBEAT)
    }

    /// The owner's process id as it wrote it.
    pub(super) fn pid(&self) -> u32 {
        (self.word(H_RANK_PID).load(Ordering::Relaxed) >> 32) as u32
    }

    fn entry(&self, slot: usize, word: usize) -> &AtomicU64 {
        self.word(HEADER + (slot % KEYS) * ENTRY + word * 8)
    }

    /// The key in region-table slot `slot`.
    pub(super) fn key_at(&self, slot: usize) -> u64 {
        self.entry(slot, 0).load(Ordering::Acquire)
    }

    /// Publishes a region under `key` (owner only, one thread at a time); returns its slot.
    pub(super) fn publish(&self, key: u64, p: Published) -> Result<usize> {
        let start = key as usize % KEYS;
        for i in 0..KEYS {
            let slot = (start + i) % KEYS;
            let k = self.key_at(slot);
            if k == EMPTY || k == TOMBSTONE {
                for (w, v) in [p.fd, p.dev, p.ino, p.offset, p.len]
                    .into_iter()
                    .enumerate()
                {
                    self.entry(slot, w + 1).store(v, Ordering::Relaxed);
                }
                self.entry(slot, 0).store(key, Ordering::Release);
                return Ok(slot);
            }
        }
        Err(Error::Unsupported(format!(
            "shm: more than {KEYS} regions registered at once"
        )))
    }

    /// Withdraws the region in `slot` (owner only).
    pub(super) fn withdraw(&self, slot: usize) {
        self.entry(slot, 0).store(TOMBSTONE, Ordering::Release);
    }

    /// Finds `key` in a peer's table: its slot and what was published.
    pub(super) fn lookup(&self, key: u64) -> Option<(usize, Published)> {
        if key == EMPTY || key == TOMBSTONE {
            return None;
        }
        let start = key as usize % KEYS;
        for i in 0..KEYS {
            let slot = (start + i) % KEYS;
            match self.key_at(slot) {
                EMPTY => return None,
                k if k == key => {
                    let w = |i| self.entry(slot, i).load(Ordering::Relaxed);
                    let p = Published {
                        fd: w(1),
                        dev: w(2),
                        ino: w(3),
                        offset: w(4),
                        len: w(5),
                    };
                    std::sync::atomic::fence(Ordering::Acquire);
                    // Keys are never reused: the entry still holds `key`, so it was not
                    // rewritten for another region while it was read.
                    return (self.key_at(slot) == key).then_some((slot, p));
                }
                _ => {}
            }
        }
        None
    }

    /// The ring that carries messages from `sender` to this segment's owner.
    pub(super) fn ring(&self, sender: usize) -> Option<super::ring::Ring<'_>> {
        if sender >= self.nodes {
            return None;
        }
        let at = HEADER + KEYS * ENTRY + sender * (RING_HEADER + self.ring_bytes);
        Some(super::ring::Ring {
            head: self.word(at),
            tail: self.word(at + 64),
            // The ring's data lies inside the mapping: `open` checked `size` against its length.
            data: self.map.ptr().wrapping_add(at + RING_HEADER),
            cap: self.ring_bytes as u64,
        })
    }
}
