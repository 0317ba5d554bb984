//! Dynamic windows (MPI-3.1 §11.2.4): `attach`, `detach`, and the check that an RMA access
//! lies inside memory attached at its target.
//!
//! Each rank publishes the regions it attached in its control page of the window (global
//! memory homed at the rank, after the lock word), guarded by a generation counter that is
//! odd while the list changes:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | the lock word (see `sync`) |
//! | 8..16 | generation: odd while the owner rewrites the list |
//! | 16..24 | number of regions |
//! | 24.. | regions: (address, length), 8 bytes each, at most [`MAX_ATTACHED`] |
//!
//! The owner changes the list with the transport's operations on its own memory (so remote
//! readers, which use the same operations, see them in order on every backend). An origin
//! reads a target's list once (an atomic read of the generation, a read of the list, the
//! generation again; repeated while it changes) and keeps it: an access inside a known region
//! needs no remote operation. Every call that opens an access epoch (`fence`, `lock`,
//! `lock_all`, `start`) marks the lists unverified, and the first access after it compares
//! the generation (one remote atomic), so a region detached before the epoch is refused. An
//! access to a region the target attached since is found by reading the list again. Detaching
//! memory while another rank's epoch that accesses it is open is erroneous in MPI, and is not
//! detected before that epoch ends.

use std::sync::MutexGuard;

use dsm_core::space::PAGE;
use transport::{LocalSlice, RemoteSlice, Transport};

use super::{Memory, Window};
use crate::error::{Error, Result};

/// Offset of the generation counter in a control page.
const GENERATION: usize = 8;
/// Offset of the number of regions; the regions follow it.
const LIST: usize = 16;
/// Most regions one rank can have attached to one window at a time.
pub const MAX_ATTACHED: usize = (PAGE - LIST - 8) / 16;
/// Attempts to read a list that keeps changing before giving up.
const READ_ATTEMPTS: usize = 100_000;

/// What this rank knows of another rank's attached regions.
#[derive(Debug, Clone)]
pub(super) struct Known {
    /// The generation the regions were read at.
    generation: u64,
    regions: Vec<(usize, usize)>,
    /// The generation was checked since the last call that opened an epoch.
    verified: bool,
}

/// Whether `[addr, addr + len)` lies inside one of `regions`.
fn covers(regions: &[(usize, usize)], addr: usize, len: usize) -> bool {
    regions.iter().any(|&(base, size)| {
        addr.checked_sub(base)
            .and_then(|off| off.checked_add(len))
            .is_some_and(|end| end <= size)
    })
}

fn lock<T>(m: &std::sync::Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Window {
    /// `MPI_Win_attach` (MPI-3.1 §11.2.4): makes `[base, base + bytes)`, which must be global
    /// memory (from `Dsm::malloc`, `Dsm::alloc_collective` or `MPI_Alloc_mem`), accessible
    /// through this dynamic window. The other ranks may access it once they learn its address
    /// (`MPI_Get_address`, sent in a message).
    ///
    /// # One-sided
    /// Only this rank takes part.
    ///
    /// # Errors
    /// [`Error::InvalidWindow`] for a window not made by [`Window::create_dynamic`];
    /// [`Error::InvalidArgument`] for memory that is not global memory, that overlaps a region
    /// already attached, or beyond [`MAX_ATTACHED`] regions; transport errors.
    pub fn attach(&self, base: *mut u8, bytes: usize) -> Result<()> {
        let Memory::Dynamic { attached, .. } = &self.memory else {
            return Err(Error::InvalidWindow(
                "attach to a window that is not dynamic".into(),
            ));
        };
        let dsm = &self.comm.shared.dsm;
        let addr = base as usize;
        if bytes == 0
            || !dsm.is_global(addr)
            || !addr
                .checked_add(bytes - 1)
                .is_some_and(|l| dsm.is_global(l))
        {
            return Err(Error::InvalidArgument(
                "a dynamic window can attach global memory only (MPI_Alloc_mem)".into(),
            ));
        }
        let mut list = lock(attached);
        if list
            .iter()
            .any(|&(a, l)| addr < a.saturating_add(l) && a < addr + bytes)
        {
            return Err(Error::InvalidArgument(format!(
                "[{addr:#x}, +{bytes}) overlaps memory already attached to the window"
            )));
        }
        if list.len() >= MAX_ATTACHED {
            return Err(Error::InvalidArgument(format!(
                "a dynamic window holds at most {MAX_ATTACHED} attached regions per rank"
            )));
        }
        let mut next = list.clone();
        next.push((addr, bytes));
        self.publish(&next)?;
        *list = next;
        Ok(())
    }

    /// `MPI_Win_detach` (MPI-3.1 §11.2.4): the region attached at `base` is no longer
    /// accessible through the window; accesses from epochs opened afterwards are refused with
    /// [`Error::OutOfWindow`].
    ///
    /// # One-sided
    /// Only this rank takes part.
    ///
    /// # Errors
    /// [`Error::InvalidWindow`] for a window that is not dynamic; [`Error::InvalidArgument`]
    /// when nothing is attached at `base`; transport errors.
    pub fn detach(&self, base: *const u8) -> Result<()> {
        let Memory::Dynamic { attached, .. } = &self.memory else {
            return Err(Error::InvalidWindow(
                "detach from a window that is not dynamic".into(),
            ));
        };
        let mut list = lock(attached);
        let next: Vec<(usize, usize)> = list
            .iter()
            .copied()
            .filter(|&(addr, _)| addr != base as usize)
            .collect();
        if next.len() == list.len() {
            return Err(Error::InvalidArgument("nothing is attached there".into()));
        }
        self.publish(&next)?;
        *list = next;
        Ok(())
    }

    /// `len` bytes at `offset` of `rank`'s control page, as a remote slice.
    fn control_slice(&self, rank: usize, offset: usize, len: usize) -> Result<RemoteSlice> {
        let at = (self.control + rank * PAGE + offset) as *const u8;
        Ok(self.comm.shared.dsm.home_slice(at, len)?)
    }

    /// Writes `list` into this rank's control page, between two increments of the
    /// generation (the second happens even when the write fails, so readers never wait on an
    /// odd generation forever).
    fn publish(&self, list: &[(usize, usize)]) -> Result<()> {
        let me = self.comm.rank() as usize;
        let mut data = Vec::with_capacity(8 + 16 * list.len());
        data.extend_from_slice(&(list.len() as u64).to_le_bytes());
        for &(addr, len) in list {
            data.extend_from_slice(&(addr as u64).to_le_bytes());
            data.extend_from_slice(&(len as u64).to_le_bytes());
        }
        let generation = self.control_slice(me, GENERATION, 8)?;
        let target = self.control_slice(me, LIST, data.len())?;
        let stage = self.staging(data.len())?;
        let written = (|| -> Result<()> {
            stage.write_at(0, &data)?;
            self.t().fetch_add(generation, 1)?;
            let w = LocalSlice::new(&stage, 0, data.len())
                .and_then(|local| self.t().write(target, local));
            let closed = self.t().fetch_add(generation, 1);
            w?;
            closed?;
            Ok(())
        })();
        self.recycle(stage);
        written
    }

    /// Reads `rank`'s published list.
    fn read_attached(&self, rank: usize) -> Result<Known> {
        let generation = self.control_slice(rank, GENERATION, 8)?;
        let list = self.control_slice(rank, LIST, PAGE - LIST)?;
        let stage = self.staging(list.len)?;
        let read = (|| -> Result<Known> {
            for _ in 0..READ_ATTEMPTS {
                let before = self.t().fetch_add(generation, 0)?;
                if before % 2 == 1 {
                    std::hint::spin_loop();
                    continue;
                }
                self.t().read(list, LocalSlice::new(&stage, 0, list.len)?)?;
                if self.t().fetch_add(generation, 0)? != before {
                    continue;
                }
                let mut raw = vec![0u8; list.len];
                stage.read_at(0, &mut raw)?;
                let word = |i: usize| {
                    let b: [u8; 8] = raw[i * 8..i * 8 + 8].try_into().unwrap_or_default();
                    u64::from_le_bytes(b) as usize
                };
                let count = word(0).min(MAX_ATTACHED);
                let regions = (0..count)
                    .map(|i| (word(1 + 2 * i), word(2 + 2 * i)))
                    .collect();
                return Ok(Known {
                    generation: before,
                    regions,
                    verified: true,
                });
            }
            Err(Error::InvalidWindow(format!(
                "rank {rank}'s attached memory kept changing while it was read"
            )))
        })();
        self.recycle(stage);
        read
    }

    /// Whether `[addr, addr + len)` lies in memory `target` attached (dynamic windows only).
    pub(super) fn attached_at(&self, target: usize, addr: usize, len: usize) -> Result<bool> {
        let Memory::Dynamic { attached, known } = &self.memory else {
            return Ok(true);
        };
        if target == self.comm.rank() as usize {
            return Ok(covers(&lock(attached), addr, len));
        }
        let mut known = lock(known);
        let slot = &mut known[target];
        if let Some(k) = slot.as_mut().filter(|k| !k.verified) {
            let now = self
                .t()
                .fetch_add(self.control_slice(target, GENERATION, 8)?, 0)?;
            if now == k.generation {
                k.verified = true;
            } else {
                *slot = None;
            }
        }
        if slot.as_ref().is_some_and(|k| covers(&k.regions, addr, len)) {
            return Ok(true);
        }
        let fresh = self.read_attached(target)?;
        let hit = covers(&fresh.regions, addr, len);
        *slot = Some(fresh);
        Ok(hit)
    }

    /// Marks what this rank knows of the other ranks' attached memory as unverified: called
    /// by every call that opens an access epoch.
    pub(super) fn forget_attached(&self) {
        if let Memory::Dynamic { known, .. } = &self.memory {
            for k in lock(known).iter_mut().flatten() {
                k.verified = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_whole_accesses_only() {
        let regions = [(1000, 100), (5000, 8)];
        assert!(covers(&regions, 1000, 100));
        assert!(covers(&regions, 1050, 50));
        assert!(covers(&regions, 5000, 8));
        assert!(!covers(&regions, 1050, 51));
        assert!(!covers(&regions, 999, 2));
        assert!(!covers(&regions, 5004, 8));
        assert!(!covers(&regions, usize::MAX, 2));
        assert!(!covers(&[], 0, 0));
    }
}
