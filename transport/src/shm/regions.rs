//! Registered regions across processes: the owner publishes where each region's pages live (a
//! file descriptor number, the file's identity and the region's offset in it); a peer opens the
//! owner's descriptor through `/proc/<pid>/fd/<n>`, checks that it is the published file, maps
//! the region's pages and keeps the mapping until the owner withdraws the key.
//!
//! Opening another process's descriptor through `/proc` is allowed to exactly the processes that
//! may read that process's memory anyway (same user, `PTRACE_MODE_READ`), so it exposes nothing
//! that was not exposed already; the descriptor numbers themselves reach only job members,
//! through the authenticated bootstrap.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::layout::{Control, Published, NO_FD};
use crate::error::{Error, RemoteFault, Result};
use crate::memfd::{self, Mapping};
use crate::region::Region;
use crate::types::Rank;

/// What the owner keeps per published region: its slot, and a duplicate of the descriptor it
/// published (so that the number stays valid, and names the same file, until the key is
/// withdrawn).
#[derive(Debug)]
pub(super) struct Publication {
    pub(super) slot: usize,
    _fd: Option<OwnedFd>,
}

/// The file behind `region` and the region's offset in it: the region's own `memfd`, or for
/// memory mapped elsewhere ([`Region::from_raw`]) a shared file mapping found in
/// `/proc/self/maps` together with a descriptor of this process open on the same file.
fn backing(region: &Region) -> Option<(OwnedFd, u64)> {
    if let Some((fd, offset)) = region.backing() {
        return fd.try_clone().ok().map(|fd| (fd, offset));
    }
    let start = region.as_ptr() as u64;
    let end = start.checked_add(region.len() as u64)?;
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    // The mapping that holds the first byte must hold the whole region (one VMA) and be shared.
    let line = maps.lines().find(|l| {
        l.split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .is_some_and(|lo| lo <= start)
            && l.split(['-', ' '])
                .nth(1)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .is_some_and(|hi| start < hi)
    })?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let (range, perms, off, ino) = (f.first()?, f.get(1)?, f.get(2)?, f.get(4)?);
    let lo = u64::from_str_radix(range.split('-').next()?, 16).ok()?;
    let hi = u64::from_str_radix(range.split('-').nth(1)?, 16).ok()?;
    let ino: u64 = ino.parse().ok()?;
    if end > hi || !perms.starts_with("rw") || perms.as_bytes().get(3) != Some(&b's') || ino == 0 {
        return None;
    }
    let offset = u64::from_str_radix(off, 16).ok()? + (start - lo);
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        if meta.ino() != ino || !meta.file_type().is_file() {
            continue;
        }
        let n: i32 = entry.file_name().to_str()?.parse().ok()?;
        // SAFETY: `n` is an open descriptor of this process (just listed); it is only borrowed
        // to be duplicated at once.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(n) };
        return borrowed.try_clone_to_owned().ok().map(|fd| (fd, offset));
    }
    None
}

/// Publishes `region` under `key` in this node's control segment.
pub(super) fn publish(control: &Control, key: u64, region: &Region) -> Result<Publication> {
    let (fd, published) = match backing(region) {
        Some((fd, offset)) => {
            let (dev, ino, _) = memfd::identity(&fd)?;
            let p = Published {
                fd: fd.as_raw_fd() as u64,
                dev,
                ino,
                offset,
                len: region.len() as u64,
            };
            (Some(fd), p)
        }
        None => (
            None,
            Published {
                fd: NO_FD,
                dev: 0,
                ino: 0,
                offset: 0,
                len: region.len() as u64,
            },
        ),
    };
    let slot = control.publish(key, published)?;
    Ok(Publication { slot, _fd: fd })
}

/// A peer's region, mapped here.
#[derive(Debug)]
pub(super) struct Mapped {
    /// The slot of the owner's table it was published in, checked on every use.
    pub(super) slot: usize,
    key: u64,
    /// `None`: published as not shareable.
    map: Option<(Mapping, usize)>,
    len: u64,
}

impl Mapped {
    /// A pointer to `offset..offset+len` of the region, or the fault.
    pub(super) fn range(&self, offset: u64, len: u64) -> Result<*mut u8, RemoteFault> {
        let (map, delta) = self.map.as_ref().ok_or(RemoteFault::Unsupported)?;
        match offset.checked_add(len) {
            Some(end) if end <= self.len => {}
            _ => return Err(RemoteFault::OutOfBounds),
        }
        // `delta + offset + len <= delta + self.len <= map.len()` (checked when mapped).
        Ok(map.ptr().wrapping_add(delta + offset as usize))
    }

    /// The aligned 8-byte word at `offset`, or the fault.
    pub(super) fn word(&self, offset: u64) -> Result<&AtomicU64, RemoteFault> {
        let p = self.range(offset, 8)?;
        if !(p as usize).is_multiple_of(8) {
            return Err(RemoteFault::Misaligned);
        }
        // SAFETY: eight bytes inside the mapping (checked by `range`), 8-aligned (checked
        // above), mapped for as long as `self` lives (the borrow); shared memory is accessed
        // by peers only through atomics or raw copies, never through `&mut`.
        Ok(unsafe { AtomicU64::from_ptr(p.cast()) })
    }

    /// Whether a region can be reached through shared memory at all.
    pub(super) fn shareable(&self) -> bool {
        self.map.is_some()
    }
}

/// A peer's regions mapped here, by key.
#[derive(Debug)]
pub(super) struct PeerRegions {
    by_key: RwLock<crate::region::IdMap<Arc<Mapped>>>,
    /// Unique in the process: names this peer's regions in the threads' caches.
    id: u64,
}

impl Default for PeerRegions {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        PeerRegions {
            by_key: RwLock::default(),
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// Entries of a thread's cache of mapped regions.
const CACHED: usize = 4;

/// A thread's cache entry: (the [`PeerRegions`] id, the key, the mapping).
type Cached = Option<(u64, u64, Arc<Mapped>)>;

thread_local! {
    /// The peer regions this thread used last. A hit costs a few loads where the shared map
    /// costs a read lock, a hash lookup and a reference count taken and given back (the
    /// atomic read-modify-writes were most of an 8-byte operation). Each entry holds its
    /// mapping alive, so at most [`CACHED`] withdrawn regions per thread stay mapped until
    /// the thread next misses.
    static RECENT: RefCell<[Cached; CACHED]> = const { RefCell::new([const { None }; CACHED]) };
}

impl PeerRegions {
    /// Runs `f` on the region `key` when this thread's cache holds it and the owner still
    /// publishes it (`control` is the owner's segment); `None` otherwise, or when `f` says so.
    #[inline]
    pub(super) fn cached<R>(
        &self,
        control: &Control,
        key: u64,
        f: impl FnOnce(&Mapped) -> Option<R>,
    ) -> Option<R> {
        RECENT.with(|recent| {
            let recent = recent.try_borrow().ok()?;
            let (_, _, m) = recent
                .iter()
                .flatten()
                .find(|e| e.0 == self.id && e.1 == key)?;
            if control.key_at(m.slot) != m.key {
                return None;
            }
            f(m)
        })
    }

    /// Runs `f` on the region `key` of peer `rank`, whose segment is `control` (process
    /// `pid`): from this thread's cache or the shared one while the owner still publishes it,
    /// else looked up and mapped.
    ///
    /// # Errors
    /// `BadKey` when the owner does not publish `key` (any more); as [`map`].
    pub(super) fn with<R>(
        &self,
        rank: Rank,
        control: &Control,
        pid: u32,
        key: u64,
        f: impl Fn(&Mapped) -> R,
    ) -> Result<R> {
        if let Some(r) = self.cached(control, key, |m| Some(f(m))) {
            return Ok(r);
        }
        let m = self.get(control, pid, key, rank)?.ok_or(Error::Remote {
            peer: rank,
            fault: RemoteFault::BadKey,
        })?;
        // The fresh mapping first; an older entry for the same key (withdrawn, or
        // republished) is dropped with it.
        RECENT.with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                for e in recent.iter_mut() {
                    if e.as_ref().is_some_and(|e| e.0 == self.id && e.1 == key) {
                        *e = None;
                    }
                }
                recent.rotate_right(1);
                recent[0] = Some((self.id, key, Arc::clone(&m)));
            }
        });
        Ok(f(&m))
    }

    /// The region `key` from the shared cache while the owner still publishes it, else looked
    /// up and mapped; `None` when the owner does not publish it.
    fn get(
        &self,
        control: &Control,
        pid: u32,
        key: u64,
        rank: Rank,
    ) -> Result<Option<Arc<Mapped>>> {
        let cached = self
            .by_key
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        if let Some(m) = cached {
            if control.key_at(m.slot) == m.key {
                return Ok(Some(m));
            }
            self.by_key
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&key);
            return Ok(None);
        }
        let Some((slot, p)) = control.lookup(key) else {
            return Ok(None);
        };
        let mapped = Arc::new(Mapped {
            slot,
            key,
            map: if p.fd == NO_FD {
                None
            } else {
                Some(map(rank, pid, &p)?)
            },
            len: p.len,
        });
        self.by_key
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&mapped));
        Ok(Some(mapped))
    }
}

/// Opens and maps what a peer published; returns the mapping and the region's offset in it.
fn map(rank: Rank, pid: u32, p: &Published) -> Result<(Mapping, usize)> {
    let path = format!("/proc/{pid}/fd/{}", p.fd);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening a peer's region through {path}"), e))?;
    let fd = OwnedFd::from(file);
    let (dev, ino, size) = memfd::identity(&fd)?;
    let fits = p.offset.checked_add(p.len).is_some_and(|end| end <= size);
    if (dev, ino) != (p.dev, p.ino) || !fits {
        return Err(Error::Protocol {
            from: rank,
            detail: format!("{path} is not the region the peer published"),
        });
    }
    let page = 4096u64;
    let start = p.offset - p.offset % page;
    let delta = (p.offset - start) as usize;
    let len = usize::try_from(p.len)
        .ok()
        .and_then(|l| l.checked_add(delta))
        .ok_or_else(|| Error::InvalidArgument("a peer's region is too large".into()))?;
    Ok((Mapping::shared(&fd, start, len)?, delta))
}
