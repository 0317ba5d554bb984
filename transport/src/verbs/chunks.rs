//! Registration that follows use.
//!
//! Registering memory with an RDMA device pins every page of it (without on-demand paging,
//! which soft-RoCE and many NICs lack): one `ibv_reg_mr` of a node's whole view of the global
//! range pins `DSM_GLOBAL_SIZE` of RAM from the first second. So a region of more than
//! [`EAGER_CHUNKS`] chunks (`DSM_RDMA_REG_CHUNK`, 2 MiB by default) is registered chunk by chunk,
//! each the first time an operation uses it, on either side:
//!
//! - the local side of an operation registers the chunks it covers before the work request is
//!   posted;
//! - a peer that aims at a chunk asks once for its rkey over the control queue pair
//!   ([`Control::KeyRequest`](super::control::Control::KeyRequest)); the owner registers the
//!   chunk then and answers, and the peer keeps the key.
//!
//! Pinned memory then grows with what a node homes, caches and serves. A [`Budget`]
//! (`DSM_RDMA_PIN_MAX`) bounds every registration the transport makes for its users; a chunk
//! over the bound is refused (locally with an error naming the bound, remotely with
//! [`RemoteFault::NoMemory`]). A chunk, once registered, stays registered until its region is
//! deregistered: rkeys handed to peers must stay valid.
//!
//! A chunked region's key, as its [`RegionDesc`](crate::RegionDesc) carries it, is not an rkey:
//! see [`ChunkedKey`]. Transfers are cut where either side crosses a chunk ([`pieces`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::sys::{Mr, Pd};
use crate::error::{Error, RemoteFault, Result};
use crate::region::Region;

/// A region of more chunks than this is registered chunk by chunk; a smaller one at once.
pub(super) const EAGER_CHUNKS: usize = 8;

/// Bit 63 of a region key: the region is registered chunk by chunk. (An rkey is 32 bits.)
const CHUNKED: u64 = 1 << 63;
/// The smallest and largest chunk sizes, as powers of two.
pub(super) const SHIFTS: std::ops::RangeInclusive<u32> = 12..=40;

/// The key of a region registered chunk by chunk: bit 63 set, the chunk size's base-2
/// logarithm in bits 32-39, the region's number (this node's count of chunked regions) in bits
/// 0-31. A peer needs nothing else to name a chunk in a [`Control::KeyRequest`].
///
/// [`Control::KeyRequest`]: super::control::Control::KeyRequest
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ChunkedKey {
    /// The region's number at its owner.
    pub(super) number: u32,
    /// The chunk size is `1 << shift` bytes.
    pub(super) shift: u32,
}

/// What a region key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyKind {
    /// A region registered whole: the key is its rkey.
    Whole(u32),
    /// A region registered chunk by chunk.
    Chunked(ChunkedKey),
}

impl ChunkedKey {
    /// The key as a [`RegionDesc`](crate::RegionDesc) carries it.
    pub(super) fn encode(self) -> u64 {
        CHUNKED | u64::from(self.shift) << 32 | u64::from(self.number)
    }

    /// What `key` (from a peer's region descriptor) names.
    ///
    /// # Errors
    /// [`RemoteFault::BadKey`] for a key that is neither an rkey nor a well-formed chunked key.
    pub(super) fn decode(key: u64) -> std::result::Result<KeyKind, RemoteFault> {
        if let Ok(rkey) = u32::try_from(key) {
            return Ok(KeyKind::Whole(rkey));
        }
        let shift = ((key >> 32) & 0xff) as u32;
        if key & CHUNKED == 0 || key >> 40 & 0x7f_ffff != 0 || !SHIFTS.contains(&shift) {
            return Err(RemoteFault::BadKey);
        }
        Ok(KeyKind::Chunked(ChunkedKey {
            number: key as u32,
            shift,
        }))
    }
}

/// A bound on the bytes this transport's registrations pin. Each [`Pinned`] registration takes
/// its bytes and gives them back when dropped.
#[derive(Debug)]
pub(super) struct Budget {
    used: AtomicUsize,
    max: Option<usize>,
}

impl Budget {
    /// A budget of `max` bytes (`None`: no bound but the kernel's locked-memory limit).
    pub(super) fn new(max: Option<usize>) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes `n` bytes from the budget.
    ///
    /// # Errors
    /// An error naming the bound when `n` more bytes would go over it.
    pub(super) fn take(&self, n: usize) -> Result<()> {
        let Some(max) = self.max else {
            self.used.fetch_add(n, Ordering::Relaxed);
            return Ok(());
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&u| u <= max)
            })
            .map(drop)
            .map_err(|used| {
                Error::io(
                    format!(
                        "registering {n} more bytes with the RDMA device: {used} are pinned, \
                         and the bound (DSM_RDMA_PIN_MAX) is {max}"
                    ),
                    std::io::Error::from_raw_os_error(libc::ENOMEM),
                )
            })
    }

    /// Gives `n` bytes back (a registration dropped or failed).
    pub(super) fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes pinned by registrations now.
    pub(super) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// A registration with its share of the budget, given back when it is dropped (whoever holds
/// the last reference to it: a registration in use by another thread outlives its region's
/// deregistration, and is accounted for until it goes).
#[derive(Debug)]
pub(super) struct Pinned {
    pub(super) mr: Mr,
    len: usize,
    budget: Arc<Budget>,
}

impl Pinned {
    /// Takes `len` bytes from `budget` and registers `len` bytes at `addr`.
    ///
    /// # Errors
    /// The budget's error, or the device's.
    ///
    /// # Safety
    /// As [`Mr::register`]: the memory must stay mapped until the `Pinned` is dropped.
    pub(super) unsafe fn register(
        pd: &Arc<Pd>,
        budget: &Arc<Budget>,
        addr: *mut u8,
        len: usize,
    ) -> Result<Pinned> {
        budget.take(len)?;
        // SAFETY: the caller's promise.
        match unsafe { Mr::register(pd, addr, len) } {
            Ok(mr) => Ok(Pinned {
                mr,
                len,
                budget: Arc::clone(budget),
            }),
            Err(e) => {
                budget.give(len);
                Err(e)
            }
        }
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.budget.give(self.len);
    }
}

/// A region registered chunk by chunk, on first use. Only the chunks in use have an entry, so
/// a huge, sparsely used region costs memory for what is used.
#[derive(Debug)]
pub(super) struct Chunked {
    // Dropped before `region` (field order): a registration never outlives its memory.
    mrs: RwLock<HashMap<u32, Pinned>>,
    registering: Mutex<()>,
    chunks: u32,
    key: ChunkedKey,
    region: Arc<Region>,
}

impl Chunked {
    /// `region` in chunks of `1 << shift` bytes (the last may be shorter), none registered yet.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a region of more than `u32::MAX` chunks.
    pub(super) fn new(region: Arc<Region>, number: u32, shift: u32) -> Result<Chunked> {
        let chunks = u32::try_from(region.len().div_ceil(1 << shift).max(1)).map_err(|_| {
            Error::InvalidArgument(format!(
                "a region of {} bytes has more than 2^32 chunks of {} bytes: raise DSM_RDMA_REG_CHUNK",
                region.len(),
                1u64 << shift
            ))
        })?;
        Ok(Chunked {
            mrs: RwLock::new(HashMap::new()),
            registering: Mutex::new(()),
            chunks,
            key: ChunkedKey { number, shift },
            region,
        })
    }

    /// The key peers name the region by.
    pub(super) fn key(&self) -> ChunkedKey {
        self.key
    }

    /// How many chunks the region has.
    pub(super) fn chunks(&self) -> u32 {
        self.chunks
    }

    /// The chunk that holds byte `offset` (clamped to the last chunk).
    pub(super) fn chunk_of(&self, offset: usize) -> u32 {
        u32::try_from(offset >> self.key.shift)
            .unwrap_or(u32::MAX)
            .min(self.chunks - 1)
    }

    /// The lkey and rkey of chunk `index`, registering it now if this is its first use.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an index past the region; the budget's error when the
    /// chunk would go over it; the device's when registering fails (the kernel's locked-memory
    /// limit, say).
    pub(super) fn keys(
        &self,
        index: u32,
        pd: &Arc<Pd>,
        budget: &Arc<Budget>,
    ) -> Result<(u32, u32)> {
        if index >= self.chunks {
            return Err(Error::InvalidArgument(format!(
                "chunk {index} of a region of {} chunks",
                self.chunks
            )));
        }
        let known = |mrs: &HashMap<u32, Pinned>| mrs.get(&index).map(|p| (p.mr.lkey, p.mr.rkey));
        if let Some(k) = known(&self.mrs.read().unwrap_or_else(|e| e.into_inner())) {
            return Ok(k);
        }
        let _one = self.registering.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = known(&self.mrs.read().unwrap_or_else(|e| e.into_inner())) {
            return Ok(k);
        }
        let start = (index as usize) << self.key.shift;
        let len = (self.region.len() - start).min(1 << self.key.shift);
        let at = self.region.as_ptr().wrapping_add(start);
        // SAFETY: `start + len` lies inside the region (`index` is below the chunk count), and
        // the region outlives the registration (`mrs` is dropped before `region`).
        let pinned = unsafe { Pinned::register(pd, budget, at, len) }?;
        let k = (pinned.mr.lkey, pinned.mr.rkey);
        self.mrs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, pinned);
        Ok(k)
    }
}

/// Cuts a transfer of `len` bytes so that no piece crosses a chunk boundary of either side.
/// `local` and `remote` are, for a side registered chunk by chunk, the transfer's offset in its
/// region and the chunk shift (`None` for a side registered whole). Returns each piece's start
/// (from the transfer's start) and length, in order: one empty piece for an empty transfer.
pub(super) fn pieces(
    len: usize,
    local: Option<(u64, u32)>,
    remote: Option<(u64, u32)>,
) -> Vec<(usize, usize)> {
    // Bytes from `at` (into the transfer) to the next chunk boundary of a side.
    let room = |side: Option<(u64, u32)>, at: usize| -> usize {
        side.map_or(usize::MAX, |(offset, shift)| {
            let pos = offset + at as u64;
            let chunk = 1u64 << shift;
            (chunk - pos % chunk) as usize
        })
    };
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(room(local, at)).min(room(remote, at));
        out.push((at, n));
        at += n;
    }
    if out.is_empty() {
        out.push((0, 0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_round_trip_and_rkeys_stay_rkeys() {
        for (number, shift) in [(0, 12), (7, 21), (u32::MAX, 40)] {
            let k = ChunkedKey { number, shift };
            assert_eq!(ChunkedKey::decode(k.encode()), Ok(KeyKind::Chunked(k)));
        }
        assert_eq!(ChunkedKey::decode(0x1234), Ok(KeyKind::Whole(0x1234)));
        assert_eq!(
            ChunkedKey::decode(u64::from(u32::MAX)),
            Ok(KeyKind::Whole(u32::MAX))
        );
        // Neither: a key above 32 bits without the chunked bit, a shift out of range, stray
        // high bits.
        for bad in [
            1u64 << 32,
            CHUNKED | 11 << 32,
            CHUNKED | 41 << 32,
            CHUNKED | 1 << 50 | 21 << 32,
        ] {
            assert_eq!(
                ChunkedKey::decode(bad),
                Err(RemoteFault::BadKey),
                "{bad:#x}"
            );
        }
    }

    #[test]
    fn budget_bounds_and_gives_back() {
        let b = Budget::new(Some(10));
        assert!(b.take(6).is_ok());
        let e = b.take(5).expect_err("over the bound");
        assert!(e.to_string().contains("DSM_RDMA_PIN_MAX"), "{e}");
        assert_eq!(b.used(), 6);
        b.give(6);
        assert!(b.take(10).is_ok());
        let free = Budget::new(None);
        assert!(free.take(usize::MAX / 2).is_ok());
    }

    #[test]
    fn pieces_cut_at_either_sides_boundaries() {
        assert_eq!(pieces(0, Some((4096, 12)), None), vec![(0, 0)]);
        assert_eq!(pieces(100, None, None), vec![(0, 100)]);
        // Local chunks of 4 KiB from offset 4000 (boundaries 96, 4192 and 8288 bytes in);
        // remote chunks of 8 KiB from offset 8000 (192 and 8384 bytes in).
        assert_eq!(
            pieces(10_000, Some((4000, 12)), Some((8000, 13))),
            vec![
                (0, 96),
                (96, 96),
                (192, 4000),
                (4192, 4096),
                (8288, 96),
                (8384, 1616)
            ]
        );
    }

    proptest! {
        /// The pieces tile the transfer in order, none crosses a boundary of either side, and
        /// every cut is at a boundary of one of them.
        #[test]
        fn pieces_tile_the_transfer(
            len in 0usize..1 << 20,
            lo in 0u64..1 << 22, ls in 12u32..16, lon in any::<bool>(),
            ro in 0u64..1 << 22, rs in 12u32..16, ron in any::<bool>(),
        ) {
            let local = lon.then_some((lo, ls));
            let remote = ron.then_some((ro, rs));
            let ps = pieces(len, local, remote);
            let mut at = 0;
            for &(start, n) in &ps {
                prop_assert_eq!(start, at);
                prop_assert!(n > 0 || len == 0);
                for (off, shift) in [local, remote].into_iter().flatten() {
                    let first = (off + start as u64) >> shift;
                    let last = (off + (start + n.max(1)) as u64 - 1) >> shift;
                    prop_assert_eq!(first, last, "piece {:?} crosses a chunk", (start, n));
                }
                at += n;
                if at < len {
                    let cut = [local, remote].into_iter().flatten()
                        .any(|(off, shift)| (off + at as u64).is_multiple_of(1 << shift));
                    prop_assert!(cut, "a cut at {} is at no boundary", at);
                }
            }
            prop_assert_eq!(at, len);
        }
    }
}
