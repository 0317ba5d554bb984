//! Registered memory: [`Region`], and the table of regions a node exposes to its peers.
//!
//! A region is a range of memory that local threads and remote peers access at the same time, as
//! RDMA hardware would: there is no lock around the bytes. The runtime's protocol decides who may
//! touch which bytes when; this module guarantees only that every access stays inside the region
//! and that 8-byte atomics are aligned.

use std::cell::Cell;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The key under which a region is registered; a peer names the region by it.
///
/// On tcp and loopback it is a number chosen by the owner; on RDMA verbs it is the rkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RemoteKey(pub u64);

use crate::error::{Error, RemoteFault, Result};

static NEXT_REGION_ID: AtomicU64 = AtomicU64::new(1);

/// A range of memory that can be registered with a transport.
///
/// Either owned (anonymous, page-aligned, zero-filled memory from [`Region::allocate`]) or
/// borrowed from the caller ([`Region::from_raw`], for memory mapped elsewhere such as the global
/// address space).
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    id: u64,
    _owner: Owner,
}

/// Who keeps a region's memory mapped.
#[derive(Debug)]
enum Owner {
    /// A shared mapping of a sealed `memfd` ([`crate::memfd`]): peers on the same host can map
    /// the same pages (the `shm` backend).
    Shared {
        #[expect(dead_code, reason = "held only to be unmapped with the region")]
        map: crate::memfd::Mapping,
        fd: std::os::fd::OwnedFd,
    },
    /// The caller ([`Region::from_raw`]).
    Borrowed,
}

// SAFETY: a Region is a pointer and a length to memory that stays valid for the Region's whole
// life (owned map, or the `from_raw` contract). All accesses go through raw-pointer copies or
// atomics, never through references that assert exclusivity, so sharing it between threads is
// the intended use (exactly as with memory a NIC can write at any moment).
unsafe impl Send for Region {}
// SAFETY: see `Send` above; `&Region` hands out no `&mut` and no `&[u8]`.
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("id", &self.id)
            .field("addr", &self.ptr)
            .field("len", &self.len)
            .field("owner", &self._owner)
            .finish()
    }
}

impl Region {
    /// Allocates `len` bytes of zeroed, page-aligned memory, shareable with peers on the same
    /// host (a sealed `memfd`, mode 0600, never linked into a directory).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `len == 0`; [`Error::Io`] when the mapping fails.
    pub fn allocate(len: usize) -> Result<Arc<Region>> {
        Region::shared(len)
    }

    /// Reserves `len` bytes of zeroed, page-aligned address space (`MAP_NORESERVE`): memory is
    /// used only for the pages that are touched. For large, sparsely used regions such as a
    /// node's directory.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `len == 0`; [`Error::Io`] when the mapping fails.
    pub fn allocate_sparse(len: usize) -> Result<Arc<Region>> {
        Region::shared(len)
    }

    /// A region in a fresh sealed `memfd`, mapped shared: its pages are allocated where touched,
    /// and the `shm` backend can give the file to peers on the same host.
    fn shared(len: usize) -> Result<Arc<Region>> {
        if len == 0 {
            return Err(Error::InvalidArgument(
                "cannot allocate an empty region".into(),
            ));
        }
        let fd = crate::memfd::create(c"dsm-region", len)?;
        let map = crate::memfd::Mapping::shared(&fd, 0, len)?;
        let ptr = NonNull::new(map.ptr())
            .ok_or_else(|| Error::InvalidArgument("mmap returned a null pointer".into()))?;
        Ok(Arc::new(Region {
            ptr,
            len,
            id: NEXT_REGION_ID.fetch_add(1, Ordering::Relaxed),
            _owner: Owner::Shared { map, fd },
        }))
    }

    /// Wraps memory that the caller owns.
    ///
    /// # Safety
    /// `ptr..ptr+len` must be valid for reads and writes, and must stay mapped, for as long as the
    /// returned region (or any clone of the `Arc`) lives. The caller must not create Rust
    /// references (`&[u8]`, `&mut [u8]`) to the memory while a transport may access it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a null pointer or `len == 0`.
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> Result<Arc<Region>> {
        let ptr = NonNull::new(ptr)
            .ok_or_else(|| Error::InvalidArgument("null pointer for a region".into()))?;
        if len == 0 {
            return Err(Error::InvalidArgument("empty region".into()));
        }
        Ok(Arc::new(Region {
            ptr,
            len,
            id: NEXT_REGION_ID.fetch_add(1, Ordering::Relaxed),
            _owner: Owner::Borrowed,
        }))
    }

    /// The `memfd` behind the region and the region's offset in it, when the region was
    /// allocated by this crate (for [`Region::from_raw`] memory: `None`).
    pub(crate) fn backing(&self) -> Option<(&std::os::fd::OwnedFd, u64)> {
        match &self._owner {
            Owner::Shared { fd, .. } => Some((fd, 0)),
            Owner::Borrowed => None,
        }
    }

    /// A process-unique identity (used to find the registration of a local buffer).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never true: empty regions cannot be made).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start of the memory, for code that maps it elsewhere or hands it to hardware.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Checks that `offset..offset+len` lies inside the region.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it does not.
    pub fn check(&self, offset: usize, len: usize) -> Result<()> {
        if self.fits(offset as u64, len as u64) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "range {offset}+{len} outside region of {} bytes",
                self.len
            )))
        }
    }

    fn fits(&self, offset: u64, len: u64) -> bool {
        offset
            .checked_add(len)
            .is_some_and(|end| end <= self.len as u64)
    }

    /// Copies `dst.len()` bytes starting at `offset` out of the region.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range is outside the region.
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check(offset, dst.len())?;
        // SAFETY: the range was checked to lie inside the region, which is valid for reads for
        // its whole life; `dst` is a distinct, exclusive buffer, so the two cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().wrapping_add(offset),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
        Ok(())
    }

    /// Copies `src` into the region at `offset`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range is outside the region.
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.check(offset, src.len())?;
        // SAFETY: the range was checked to lie inside the region, which is valid for writes for
        // its whole life; `src` is a shared Rust slice and the region is never exposed as one,
        // so the two cannot overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.ptr.as_ptr().wrapping_add(offset),
                src.len(),
            )
        };
        Ok(())
    }

    /// The aligned 8-byte word at `offset`, as an atomic.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the word is misaligned or outside the region.
    pub fn atomic_u64(&self, offset: usize) -> Result<&AtomicU64> {
        self.word(offset as u64)
            .map_err(|f| Error::InvalidArgument(f.to_string()))
    }

    /// The atomic word at `offset` or the fault a remote request for it gets.
    pub(crate) fn word(&self, offset: u64) -> Result<&AtomicU64, RemoteFault> {
        if !self.fits(offset, 8) {
            return Err(RemoteFault::OutOfBounds);
        }
        let addr = self.ptr.as_ptr() as usize + offset as usize;
        if !addr.is_multiple_of(8) {
            return Err(RemoteFault::Misaligned);
        }
        // SAFETY: the word lies inside the region (checked above), is 8-byte aligned (checked
        // above), and the region outlives the returned reference (it borrows `self`). All other
        // accesses to the region's bytes are raw copies or atomics, never `&mut`.
        Ok(unsafe { AtomicU64::from_ptr(addr as *mut u64) })
    }

    /// A raw pointer to `offset..offset+len`, or the fault a remote request for it gets.
    pub(crate) fn range_ptr(&self, offset: u64, len: u64) -> Result<*mut u8, RemoteFault> {
        if !self.fits(offset, len) {
            return Err(RemoteFault::OutOfBounds);
        }
        // `offset <= self.len` was just checked, so the result stays inside (or one past the end
        // of) the region.
        Ok(self.ptr.as_ptr().wrapping_add(offset as usize))
    }
}

/// Hashes the process-unique ids and keys of regions (small numbers chosen here, never by a
/// peer: a peer only looks keys up) with one multiplication, instead of SipHash: the lookup is
/// on the path of every one-sided operation.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by region ids or keys.
pub(crate) type IdMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The regions a node exposes, by key, shared by the threads that serve remote requests.
#[derive(Debug)]
pub(crate) struct RegionTable {
    by_key: RwLock<IdMap<Arc<Region>>>,
    key_of_id: RwLock<IdMap<u64>>,
    /// Unique in the process: names this table in the threads' caches of [`Self::check_local`].
    id: u64,
    /// Advanced by every removal, so that a cached "registered" answer older than a removal is
    /// not trusted.
    removals: AtomicU64,
    /// Taken shared by every remote word atomic on these regions and exclusively by a
    /// reduction ([`crate::reduce`]), so that a reduction's plain loop is atomic with respect
    /// to them.
    pub(crate) atomics: RwLock<()>,
}

impl Default for RegionTable {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        RegionTable {
            by_key: RwLock::default(),
            key_of_id: RwLock::default(),
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            removals: AtomicU64::new(0),
            atomics: RwLock::default(),
        }
    }
}

thread_local! {
    /// The last local regions this thread found registered: (table id, region id, the table's
    /// removal count then). A hit costs two loads instead of a read lock and a hash lookup on
    /// the path of every one-sided operation.
    static REGISTERED: Cell<[(u64, u64, u64); 2]> = const { Cell::new([(0, 0, 0); 2]) };
}

impl RegionTable {
    /// Registers `region` under a fresh key (its id: unique in the process, never reused).
    pub(crate) fn insert(&self, region: Arc<Region>) -> RemoteKey {
        let key = region.id();
        self.key_of_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(region.id(), key);
        self.by_key
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, region);
        RemoteKey(key)
    }

    /// Registers `region` under `key`, chosen by another backend of the same node (a mixed
    /// job's far backend), which must never reuse it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `key` is taken, or is 0 or `u64::MAX`.
    pub(crate) fn insert_as(&self, region: Arc<Region>, key: u64) -> Result<RemoteKey> {
        if key == 0 || key == u64::MAX {
            return Err(Error::InvalidArgument(format!(
                "{key:#x} cannot be a region key"
            )));
        }
        let mut by_key = self.by_key.write().unwrap_or_else(|e| e.into_inner());
        if by_key.contains_key(&key) {
            return Err(Error::InvalidArgument(format!(
                "the region key {key:#x} is taken"
            )));
        }
        self.key_of_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(region.id(), key);
        by_key.insert(key, region);
        Ok(RemoteKey(key))
    }

    /// Removes a registration; peers' later requests under the key fail with `BadKey`.
    pub(crate) fn remove(&self, key: RemoteKey) -> Result<()> {
        let region = self
            .by_key
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key.0);
        match region {
            Some(r) => {
                self.key_of_id
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&r.id());
                self.removals.fetch_add(1, Ordering::AcqRel);
                Ok(())
            }
            None => Err(Error::InvalidArgument(format!(
                "no region registered under key {}",
                key.0
            ))),
        }
    }

    /// The region registered under `key`.
    pub(crate) fn get(&self, key: u64) -> Result<Arc<Region>, RemoteFault> {
        self.by_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .ok_or(RemoteFault::BadKey)
    }

    /// Whether this thread has seen `region` registered here and nothing was removed since:
    /// `false` says only "ask [`RegionTable::check_local`]".
    #[inline]
    pub(crate) fn seen_registered(&self, region: &Region) -> bool {
        let seen = (self.id, region.id(), self.removals.load(Ordering::Acquire));
        REGISTERED.with(Cell::get).contains(&seen)
    }

    /// Whether the local region `region` is registered.
    pub(crate) fn check_local(&self, region: &Region) -> Result<()> {
        // The removal count is read before the lookup: a removal after it makes the entry
        // recorded below stale at once.
        let seen = (self.id, region.id(), self.removals.load(Ordering::Acquire));
        if REGISTERED.with(Cell::get).contains(&seen) {
            return Ok(());
        }
        if self
            .key_of_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&region.id())
        {
            // Most recent first; the older entry is kept (an operation usually names two).
            REGISTERED.with(|c| c.set([seen, c.get()[0]]));
            Ok(())
        } else {
            Err(Error::NotRegistered(region.id()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        let r = Region::allocate(4096).unwrap();
        assert!(r.check(0, 4096).is_ok());
        assert!(r.check(1, 4096).is_err());
        assert!(r.check(usize::MAX, 2).is_err());
        assert_eq!(r.range_ptr(u64::MAX, 1), Err(RemoteFault::OutOfBounds));
        assert_eq!(r.word(4090).err(), Some(RemoteFault::OutOfBounds));
        assert_eq!(r.word(4).err(), Some(RemoteFault::Misaligned));
        r.write_at(10, b"hello").unwrap();
        let mut b = [0u8; 5];
        r.read_at(10, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert!(r.write_at(4094, b"xyz").is_err());
    }

    #[test]
    fn table_lookup_and_removal() {
        let t = RegionTable::default();
        let r = Region::allocate(64).unwrap();
        let key = t.insert(Arc::clone(&r));
        assert!(t.get(key.0).is_ok());
        assert!(t.check_local(&r).is_ok());
        t.remove(key).unwrap();
        assert_eq!(t.get(key.0).err(), Some(RemoteFault::BadKey));
        assert!(t.check_local(&r).is_err());
        assert!(t.remove(key).is_err());
    }
}
