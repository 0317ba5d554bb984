//! One-sided communication: RMA windows (MPI-3.1 chapter 11, "One-Sided Communications").
//!
//! # How a window maps onto global memory
//!
//! A window is global memory of the runtime. Each rank's part of it lives at a home, and an
//! RMA operation is the transport's one-sided operation on that home copy:
//!
//! | MPI call | transport operations |
//! |---|---|
//! | `put` | one `write` per run of pages with one home (one, for [`Window::allocate`]) |
//! | `get` | one `read` per run |
//! | `accumulate`, `get_accumulate`, `fetch_and_op` of `u64`/`i64` with `Sum` | one `fetch_add` per element |
//! | any other `accumulate` | an atomic read of the covering 8-byte words (skipped when this rank remembers their last values: the swap verifies them), then a `compare_swap` per word (repeated for words another rank changed meanwhile); large accumulates therefore cost one remote atomic per 8 bytes |
//! | `compare_and_swap` of 8-byte integers | one `compare_swap` |
//! | `lock`/`unlock` | atomics on a lock word homed at the target |
//! | `fence` | waits for this rank's operations, then a barrier |
//! | `post`/`start`/`complete`/`wait` | one small message per pair in the groups |
//!
//! A put's bytes are copied into a registered staging buffer when it is called (so the origin
//! buffer is free at once: puts complete locally on return), and the write is posted without
//! waiting. `flush`, `unlock`, `complete` and `fence` wait for the writes to be done at their
//! targets. Gets and accumulates wait for their own results before returning, which MPI allows
//! (they complete earlier than required).
//!
//! # Local access and the memory models (MPI-3.1 §11.4)
//!
//! - [`Window::allocate`] is `MPI_WIN_UNIFIED`: the rank's part is allocated homed at the
//!   rank, and [`Window::local_ptr`] points into the home copy itself, the very memory that
//!   remote puts write and remote gets read. A local store is seen by a later remote get, a
//!   remote put by a later local load, as soon as the synchronisation between them (fence,
//!   unlock + a message or barrier, complete/wait, flush + a message) has happened, with no
//!   copy in between. Remote atomics on the tcp transport are CPU atomics on that memory, so
//!   the owner's own atomics agree with them (the transport reports this capability).
//! - [`Window::create`] over existing global memory is `MPI_WIN_SEPARATE`: the rank's own
//!   loads and stores go through the shared memory's coherence protocol (its *private copy*),
//!   while RMA operations act on the home copy (the *public copy*). The window reconciles the
//!   two at the synchronisation calls: `fence`, `post`, `wait`, `lock`/`unlock` of the rank's
//!   own part, `lock_all`/`unlock_all` and [`Window::sync`] (`MPI_Win_sync`) write this rank's
//!   changes to the window's pages home and drop its cached copies, so later loads fetch what
//!   the RMA operations wrote. As MPI requires in the separate model, a process that exposes
//!   its part with passive-target synchronisation only must call [`Window::sync`] (or lock its
//!   own part) to make its stores public and to see remote updates.
//!
//! # Errors
//! Every operation checks the target rank, the epoch (an operation outside an access epoch
//! that covers the target is [`Error::RmaSync`]), the displacement and the range (an access
//! outside the target's part, or for a dynamic window outside the memory the target attached,
//! is [`Error::OutOfWindow`], checked before anything is sent).
//!
//! A synchronisation call that fails part way still does what other ranks wait for (releases
//! its locks, tells every target of `complete`), then returns its first error; the collective
//! calls ([`Window::fence`], [`Window::free`]) make one rank's failure every rank's
//! ([`Error::FailedElsewhere`]), so no rank waits forever for another that gave up.

mod dynamic;
mod ops;
mod reduce;
mod sync;

use std::sync::{Arc, Mutex, MutexGuard};

use dsm_core::space::PAGE;
use dsm_core::Placement;
use transport::{Completion, Region, RemoteSlice, Transport};

use crate::comm::{Communicator, Rank};
use crate::datatype::{bytes, bytes_mut, Equivalence};
use crate::error::{Error, Result};

pub use dynamic::MAX_ATTACHED;
pub use sync::{LockType, MODE_NOCHECK, MODE_NOPRECEDE, MODE_NOPUT, MODE_NOSTORE, MODE_NOSUCCEED};

/// One rank's part of a window.
#[derive(Debug, Clone)]
struct Part {
    /// Global address of its first byte.
    addr: usize,
    /// Bytes.
    len: usize,
    /// `disp_unit`: bytes per unit of displacement.
    unit: usize,
    /// The home copy of the whole part, when one node is home of all of it (or the
    /// registered memory of a part made by [`Window::create_from_raw`]).
    home: Option<RemoteSlice>,
    /// The part is global memory reached through the coherence protocol by its owner (the
    /// separate model): synchronisation calls reconcile it.
    global: bool,
}

/// How the window's memory came to be.
#[derive(Debug)]
enum Memory {
    /// [`Window::allocate`]: a collective allocation, each part homed at its rank.
    Allocated { global: usize, local: usize },
    /// [`Window::create`] or [`Window::create_from_raw`]: memory the program allocated;
    /// the registration of this rank's part when it is not global memory.
    Created { registered: Option<Arc<Region>> },
    /// [`Window::create_dynamic`]: displacements are addresses of global memory; the ranges
    /// this rank attached (published in its control page), and what this rank knows of the
    /// other ranks' (see [`dynamic`]).
    Dynamic {
        attached: Mutex<Vec<(usize, usize)>>,
        known: Mutex<Vec<Option<dynamic::Known>>>,
    },
}

/// An operation posted and not yet known to be complete.
#[derive(Debug)]
struct Pending {
    target: usize,
    done: Completion,
    staging: Option<Arc<Region>>,
    /// Part of a posted get ([`Window::get_posted`]): complete at this rank only once it is
    /// complete (a flush_local waits for it).
    get: bool,
    /// A posted get's destination, on its last operation: copied out of `staging` once the
    /// get's operations are complete.
    deliver: Option<Deliver>,
}

/// Where a posted get's bytes go: `len` bytes at `skew` in its staging region, to the
/// caller's buffer at `to` (an address: the caller promised it stays valid, see
/// [`Window::get_posted`]).
#[derive(Debug, Clone, Copy)]
struct Deliver {
    to: usize,
    len: usize,
    skew: usize,
}

/// The access and exposure epochs this rank has open (MPI-3.1 §11.5).
#[derive(Debug, Default)]
struct Epochs {
    /// A fence opened an epoch (and the last fence did not say `MODE_NOSUCCEED`).
    fence: bool,
    /// Passive-target locks held, by target, and whether the lock word was taken (not under
    /// `MODE_NOCHECK`).
    locks: std::collections::HashMap<usize, (LockType, bool)>,
    /// `lock_all` is in force.
    lock_all: bool,
    /// Targets of the access epoch opened by `start`.
    access: Option<Vec<usize>>,
    /// Origins of the exposure epoch opened by `post`.
    exposure: Option<Vec<usize>>,
    pending: Vec<Pending>,
}

/// An RMA window: `MPI_Win`. Created collectively by [`Window::allocate`] or
/// [`Window::create`], freed collectively by [`Window::free`] (dropping it without `free`
/// leaks its global memory but is otherwise harmless). Its communicator must have every rank
/// of the job (the world or a duplicate): the constructors refuse one made by
/// [`Communicator::split`] with [`Error::InvalidCommunicator`] (`MPI_ERR_COMM`), on every rank
/// that calls them.
#[derive(Debug)]
pub struct Window {
    comm: Communicator,
    id: u32,
    memory: Memory,
    parts: Vec<Part>,
    /// Base of the control pages (one per rank, homed at it: its lock word).
    control: usize,
    /// Each rank's lock word.
    lock_words: Vec<RemoteSlice>,
    epochs: Mutex<Epochs>,
    staging: Mutex<Vec<Arc<Region>>>,
    /// The registrations of every staging buffer made, withdrawn by [`Window::free`].
    staging_registrations: Mutex<Vec<transport::RegionDesc>>,
    /// The last value this rank saw in remote words it updated by compare-and-swap, by
    /// (region key, offset): the expected value of the next compare-and-swap.
    guesses: Mutex<std::collections::HashMap<(transport::Rank, transport::RemoteKey, u64), u64>>,
}

/// Smallest staging buffer.
const MIN_STAGING: usize = 64 << 10;

impl Window {
    /// `MPI_Win_allocate` (MPI-3.1 §11.2.2): allocates `bytes` bytes at every rank (sizes may
    /// differ between ranks), zeroed, homed at their rank. Displacements count in units of
    /// `disp_unit` bytes.
    ///
    /// # Collective
    /// Every rank of `comm` must call it.
    ///
    /// # Errors
    /// [`Error::InvalidDisplacement`] for a `disp_unit` of 0; [`Error::Dsm`] (class
    /// `MPI_ERR_NO_MEM`) when global memory is exhausted.
    pub fn allocate(comm: &Communicator, bytes: usize, disp_unit: usize) -> Result<Window> {
        Self::check_comm(comm)?;
        let mut parts = Self::exchange(comm, 0, bytes, disp_unit, None)?;
        let dsm = &comm.shared.dsm;
        let part_pages = parts
            .iter()
            .map(|p| p.len.div_ceil(PAGE))
            .max()
            .unwrap_or(1)
            .max(1);
        let n = comm.size_usize();
        // Every rank computes this from the same exchanged lengths, so all fail together.
        let total = n
            .checked_mul(part_pages)
            .and_then(|pages| pages.checked_mul(PAGE))
            .ok_or(Error::Dsm(dsm_core::Error::OutOfMemory {
                requested: usize::MAX,
            }))?;
        let global = dsm.alloc_collective(
            total,
            Placement::Cyclic {
                block_pages: part_pages,
            },
        )?;
        for (r, p) in parts.iter_mut().enumerate() {
            p.addr = global as usize + r * part_pages * PAGE;
            p.home = Some(dsm.home_slice(p.addr as *const u8, p.len)?);
            p.global = false;
        }
        let me = comm.rank() as usize;
        let local = dsm.home_copy(parts[me].addr as *const u8, parts[me].len)?;
        Self::finish(
            comm,
            parts,
            Memory::Allocated {
                global: global as usize,
                local: local as usize,
            },
        )
    }

    /// `MPI_Win_create` (MPI-3.1 §11.2.1): exposes `bytes` bytes of existing global memory at
    /// `base` (from `Dsm::alloc_collective` or `Dsm::malloc`; any home) as this rank's part.
    ///
    /// # Collective
    /// Every rank of `comm` must call it.
    ///
    /// # Errors
    /// [`Error::InvalidWindow`] when `[base, base + bytes)` is not global memory;
    /// [`Error::InvalidDisplacement`] for a `disp_unit` of 0.
    pub fn create(
        comm: &Communicator,
        base: *mut u8,
        bytes: usize,
        disp_unit: usize,
    ) -> Result<Window> {
        Self::check_comm(comm)?;
        let dsm = &comm.shared.dsm;
        let addr = base as usize;
        let inside = bytes == 0
            || (dsm.is_global(addr)
                && addr
                    .checked_add(bytes - 1)
                    .is_some_and(|last| dsm.is_global(last)));
        // Every rank learns of a bad part (its owner sends length 0 and an error flag), so
        // that all of them fail together instead of one hanging in the next collective.
        let bad = !inside || disp_unit == 0;
        let parts = Self::exchange(
            comm,
            if bad { 0 } else { addr },
            if bad { usize::MAX } else { bytes },
            disp_unit.max(1),
            None,
        )?;
        if let Some(r) = parts.iter().position(|p| p.len == usize::MAX) {
            return Err(if r == comm.rank() as usize && disp_unit == 0 {
                Error::InvalidDisplacement("disp_unit must be at least 1".into())
            } else {
                Error::InvalidWindow(format!(
                    "rank {r} offered memory that is not global memory of the runtime"
                ))
            });
        }
        let parts = Self::resolve_homes(comm, parts);
        Self::finish(comm, parts, Memory::Created { registered: None })
    }

    /// Windows are made of job-wide collective allocations of the runtime, so their
    /// communicator must have every rank of the job (the world or a duplicate of it).
    fn check_comm(comm: &Communicator) -> Result<()> {
        if comm.is_whole_job() {
            Ok(())
        } else {
            Err(Error::InvalidCommunicator(
                "windows need a communicator of every rank of the job (the world or a \
                 duplicate): the runtime's collective allocations are job-wide"
                    .into(),
            ))
        }
    }

    /// Parts in global memory: their home copy when a single node holds all of it.
    fn resolve_homes(comm: &Communicator, parts: Vec<Part>) -> Vec<Part> {
        let dsm = &comm.shared.dsm;
        parts
            .into_iter()
            .map(|mut p| {
                if p.global {
                    p.home = dsm.home_slice(p.addr as *const u8, p.len).ok();
                }
                p
            })
            .collect()
    }

    /// `MPI_Win_create` over memory that is not global memory (for example a C program's
    /// `malloc`): the memory is registered with the transport, so that RMA operations reach
    /// it directly (the unified model: local loads and stores see RMA at once, after the
    /// synchronisation). When `base` is global memory this is [`Window::create`].
    ///
    /// # Safety
    /// `[base, base + bytes)` must be valid for reads and writes until the window is freed,
    /// and must not be accessed through Rust references meanwhile (remote operations write it
    /// at any time).
    ///
    /// # Collective
    /// Every rank of `comm` must call it.
    ///
    /// # Errors
    /// [`Error::InvalidDisplacement`] for a `disp_unit` of 0; transport errors of the
    /// registration.
    pub unsafe fn create_from_raw(
        comm: &Communicator,
        base: *mut u8,
        bytes: usize,
        disp_unit: usize,
    ) -> Result<Window> {
        Self::check_comm(comm)?;
        let dsm = &comm.shared.dsm;
        if bytes == 0 || dsm.is_global(base as usize) {
            return Self::create(comm, base, bytes, disp_unit);
        }
        // The registration covers the 8-byte words enclosing the buffer, so that narrow
        // atomics (a compare-and-swap of the whole word, which leaves the neighbouring bytes
        // as they are) reach every element; puts and gets stay inside the buffer.
        let lead = base as usize % 8;
        let registered = lead
            .checked_add(bytes)
            .and_then(|end| end.checked_next_multiple_of(8))
            .ok_or_else(|| Error::InvalidArgument("window memory too large".into()))
            .and_then(|span| {
                // SAFETY: the caller guarantees `[base, base + bytes)` is valid for reads and
                // writes until the window is freed and is not borrowed by Rust meanwhile; the
                // enclosing 8-byte words share a page with it, so they are mapped and
                // writable, and the window only ever rewrites their bytes outside the buffer
                // with their own value (by compare-and-swap). `free` withdraws the
                // registration before returning, and the region is dropped with the window.
                let region = unsafe { Region::from_raw(base.wrapping_sub(lead), span)? };
                let desc = comm.transport().register(&region)?;
                Ok((region, desc))
            });
        // A rank that failed still takes part in the exchange, with the failure marker of
        // `create`, so that every rank fails instead of waiting for it.
        let parts = match &registered {
            Ok((_, desc)) => Self::exchange(comm, base as usize, bytes, disp_unit, Some(*desc)),
            Err(_) => Self::exchange(comm, 0, usize::MAX, 1, None),
        };
        let failed = parts
            .as_ref()
            .ok()
            .and_then(|p| p.iter().position(|p| p.len == usize::MAX));
        let (region, desc) = registered?;
        let parts = match (parts, failed) {
            (Ok(parts), None) => parts,
            (parts, failed) => {
                // Best effort: the error to report is the exchange's or the failed rank's.
                let _ = comm.transport().deregister(&desc);
                parts?;
                return Err(Error::InvalidWindow(format!(
                    "rank {} could not create its part of the window",
                    failed.unwrap_or_default()
                )));
            }
        };
        let parts = Self::resolve_homes(comm, parts);
        Self::finish(
            comm,
            parts,
            Memory::Created {
                registered: Some(region),
            },
        )
    }

    /// `MPI_Win_create_dynamic` (MPI-3.1 §11.2.4): a window with no memory yet; each rank
    /// attaches global memory with [`Window::attach`], and displacements are addresses
    /// (`MPI_Get_address`), the same on every rank because global memory is mapped at the
    /// same address everywhere. Local access follows the separate model, as for
    /// [`Window::create`].
    ///
    /// # Collective
    /// Every rank of `comm` must call it.
    ///
    /// # Errors
    /// Transport errors.
    pub fn create_dynamic(comm: &Communicator) -> Result<Window> {
        Self::check_comm(comm)?;
        let mut parts = Self::exchange(comm, 0, 0, 1, None)?;
        for p in &mut parts {
            p.global = true;
        }
        Self::finish(
            comm,
            parts,
            Memory::Dynamic {
                attached: Mutex::new(Vec::new()),
                known: Mutex::new(vec![None; comm.size_usize()]),
            },
        )
    }

    /// Every rank's part: address, length and displacement unit.
    fn exchange(
        comm: &Communicator,
        addr: usize,
        len: usize,
        unit: usize,
        registered: Option<transport::RegionDesc>,
    ) -> Result<Vec<Part>> {
        if unit == 0 {
            // Still take part in the exchange, so that the others fail too.
            comm.all_gather_bytes(&[0u8; 24])?;
            return Err(Error::InvalidDisplacement(
                "disp_unit must be at least 1".into(),
            ));
        }
        let mut mine = Vec::with_capacity(24);
        for v in [addr, len, unit] {
            mine.extend_from_slice(&(v as u64).to_le_bytes());
        }
        if let Some(d) = registered {
            mine.extend_from_slice(&d.to_bytes());
        }
        let all = comm.all_gather_bytes(&mine)?;
        all.iter()
            .enumerate()
            .map(|(r, b)| {
                let word = |i: usize| {
                    b.get(i * 8..i * 8 + 8)
                        .and_then(|w| w.try_into().ok())
                        .map(u64::from_le_bytes)
                };
                let desc = b
                    .get(24..)
                    .filter(|d| !d.is_empty())
                    .map(transport::RegionDesc::from_bytes)
                    .transpose()
                    .ok();
                match (word(0), word(1), word(2), desc) {
                    (Some(addr), Some(len), Some(unit), Some(desc)) if unit > 0 => {
                        let home = match desc {
                            // The registration starts at the 8-byte word enclosing `addr`.
                            Some(d) => Some(d.slice(addr % 8, len as usize)?),
                            None => None,
                        };
                        Ok(Part {
                            addr: addr as usize,
                            len: len as usize,
                            unit: unit as usize,
                            global: home.is_none(),
                            home,
                        })
                    }
                    _ => Err(Error::InvalidWindow(format!(
                        "rank {r} could not create its part of the window"
                    ))),
                }
            })
            .collect()
    }

    fn finish(comm: &Communicator, parts: Vec<Part>, memory: Memory) -> Result<Window> {
        let dsm = &comm.shared.dsm;
        let n = comm.size_usize();
        let control = dsm.alloc_collective(n * PAGE, Placement::Cyclic { block_pages: 1 })?;
        let lock_words = (0..n)
            .map(|r| Ok(dsm.home_slice(control.wrapping_add(r * PAGE), 8)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Window {
            comm: comm.clone(),
            id: comm.shared.new_window_id(),
            memory,
            parts,
            control: control as usize,
            lock_words,
            epochs: Mutex::new(Epochs::default()),
            staging: Mutex::new(Vec::new()),
            staging_registrations: Mutex::new(Vec::new()),
            guesses: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// `MPI_Win_free` (MPI-3.1 §11.2.5): completes this rank's operations, waits for every
    /// rank, and frees the window's memory (for [`Window::allocate`]) and its control words.
    ///
    /// # Collective
    /// Every rank of the window's communicator must call it.
    ///
    /// # Errors
    /// [`Error::RmaSync`] while a lock or a post/start epoch is still open; runtime errors.
    /// A rank that fails still completes its operations and takes part in the call's barrier,
    /// and the others then fail with [`Error::FailedElsewhere`] (of the same class) instead of
    /// waiting for it forever. The window is gone on every rank then: the memory given to
    /// [`Window::create_from_raw`] and the staging buffers are no longer registered (no late
    /// operation can reach them, so the caller may free that memory), but the global memory of
    /// the window and its control words are not freed (they leak).
    pub fn free(self) -> Result<()> {
        let open = {
            let e = self.epochs();
            if !e.locks.is_empty() || e.lock_all || e.access.is_some() || e.exposure.is_some() {
                Err(Error::RmaSync(
                    "free with a lock or a post/start epoch still open".into(),
                ))
            } else {
                Ok(())
            }
        };
        // Even a rank that fails completes its puts and gets, so that once every rank has
        // passed the agreement no operation on the window is left in flight.
        let flushed = self.flush_all_internal();
        let agreed = self.comm.agree(open.and(flushed));
        // Whether or not the free succeeds, nothing may reach this rank's registered memory
        // once it returns: a failed free consumes the window too, and the caller may then
        // release the memory of `create_from_raw`.
        let withdrawn = self.withdraw_registrations();
        agreed?;
        // Both collective frees run even when the first fails locally, so that no rank is
        // left in the second one's barriers.
        let dsm = &self.comm.shared.dsm;
        let memory = match &self.memory {
            Memory::Allocated { global, .. } => dsm.free_collective(*global as *mut u8),
            _ => Ok(()),
        };
        let control = dsm.free_collective(self.control as *mut u8);
        memory?;
        control?;
        withdrawn
    }

    /// Withdraws this rank's registrations: its staging buffers and, for a window created over
    /// process memory, its part. Every one is tried; the first failure is returned.
    fn withdraw_registrations(&self) -> Result<()> {
        let staged = std::mem::take(
            &mut *self
                .staging_registrations
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let mut withdrawn: Result<()> = Ok(());
        for desc in &staged {
            if let Err(e) = self.t().deregister(desc) {
                withdrawn = withdrawn.and(Err(e.into()));
            }
        }
        if let Memory::Created {
            registered: Some(_),
        } = &self.memory
        {
            if let Some(home) = &self.parts[self.comm.rank() as usize].home {
                if let Err(e) = self.t().deregister(&home.region) {
                    withdrawn = withdrawn.and(Err(e.into()));
                }
            }
        }
        withdrawn
    }

    /// The communicator the window was created over.
    pub fn communicator(&self) -> &Communicator {
        &self.comm
    }

    /// Bytes of this rank's part.
    pub fn local_len(&self) -> usize {
        self.parts[self.comm.rank() as usize].len
    }

    /// Bytes of `rank`'s part.
    ///
    /// # Errors
    /// [`Error::InvalidRank`].
    pub fn len_of(&self, rank: Rank) -> Result<usize> {
        Ok(self.parts[self.comm.check_rank(rank)?].len)
    }

    /// This rank's part: `baseptr` of `MPI_Win_allocate`. For an allocated window this is the
    /// home copy (the unified memory model, see the module docs); for a created one, the
    /// global address given to [`Window::create`].
    pub fn local_ptr(&self) -> *mut u8 {
        match self.memory {
            Memory::Allocated { local, .. } => local as *mut u8,
            Memory::Created { .. } | Memory::Dynamic { .. } => {
                self.parts[self.comm.rank() as usize].addr as *mut u8
            }
        }
    }

    /// The global address of this rank's part (valid on every rank).
    pub fn global_ptr(&self) -> *mut u8 {
        self.parts[self.comm.rank() as usize].addr as *mut u8
    }

    /// Byte range `[offset, offset + len)` of this rank's part, checked.
    fn local_range(&self, disp: usize, len: usize) -> Result<usize> {
        let me = self.comm.rank() as usize;
        self.range(me, disp, len)
    }

    /// Copies from this rank's part, at displacement `disp`, into `out`: a load of local window
    /// memory.
    ///
    /// # Errors
    /// [`Error::OutOfWindow`], [`Error::InvalidDisplacement`].
    pub fn read_local<T: Equivalence>(&self, disp: usize, out: &mut [T]) -> Result<()> {
        let out = bytes_mut(out);
        let off = self.local_range(disp, out.len())?;
        let src = self.local_ptr().wrapping_add(off);
        // SAFETY: `local_range` checked that `[off, off + len)` lies inside this rank's part,
        // and the part stays mapped for the life of `self` (home copies and global memory are
        // never unmapped while the runtime runs). `out` is a distinct Rust buffer, so the
        // ranges do not overlap. Any bytes are valid for the Pod element type; concurrent RMA
        // updates of the same bytes are excluded by the epoch rules of MPI-3.1 §11.7.
        unsafe {
            std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len());
        }
        Ok(())
    }

    /// Copies `data` into this rank's part at displacement `disp`: a store to local window
    /// memory.
    ///
    /// # Errors
    /// [`Error::OutOfWindow`], [`Error::InvalidDisplacement`].
    pub fn write_local<T: Equivalence>(&self, disp: usize, data: &[T]) -> Result<()> {
        let data = bytes(data);
        let off = self.local_range(disp, data.len())?;
        let dst = self.local_ptr().wrapping_add(off);
        // SAFETY: as in `read_local`: the destination range was checked to lie inside this
        // rank's part, which is mapped read-write for the life of `self`, and does not overlap
        // the caller's slice.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len());
        }
        Ok(())
    }

    /// Remembered word values (see the field).
    fn guesses(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<(transport::Rank, transport::RemoteKey, u64), u64>>
    {
        self.guesses.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn epochs(&self) -> MutexGuard<'_, Epochs> {
        self.epochs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn t(&self) -> &transport::AnyTransport {
        self.comm.transport()
    }

    /// Checks an access of `len` bytes at displacement `disp` of `target`'s part; returns the
    /// byte offset in the part.
    fn range(&self, target: usize, disp: usize, len: usize) -> Result<usize> {
        let part = &self.parts[target];
        if let Memory::Dynamic { .. } = self.memory {
            // The displacement is an address of global memory, inside a region the target
            // attached (MPI-3.1 §11.2.4: access elsewhere is erroneous).
            let dsm = &self.comm.shared.dsm;
            let inside = len == 0
                || (dsm.is_global(disp)
                    && disp.checked_add(len - 1).is_some_and(|l| dsm.is_global(l))
                    && self.attached_at(target, disp, len)?);
            return if inside {
                Ok(disp)
            } else {
                Err(Error::OutOfWindow {
                    rank: target as Rank,
                    offset: disp,
                    len,
                    size: 0,
                })
            };
        }
        let offset = disp
            .checked_mul(part.unit)
            .ok_or_else(|| Error::InvalidDisplacement(format!("displacement {disp} overflows")))?;
        match offset.checked_add(len) {
            Some(end) if end <= part.len => Ok(offset),
            _ => Err(Error::OutOfWindow {
                rank: target as Rank,
                offset,
                len,
                size: part.len,
            }),
        }
    }

    /// The home copies of `len` bytes at `offset` of `target`'s part, as runs of
    /// (offset in the access, remote slice).
    fn remote_runs(
        &self,
        target: usize,
        offset: usize,
        len: usize,
    ) -> Result<Vec<(usize, RemoteSlice)>> {
        let part = &self.parts[target];
        if let Some(home) = &part.home {
            return Ok(vec![(
                0,
                home.region.slice(home.offset + offset as u64, len)?,
            )]);
        }
        let dsm = &self.comm.shared.dsm;
        let mut runs: Vec<(usize, RemoteSlice)> = Vec::new();
        let mut done = 0;
        while done < len {
            let addr = part.addr + offset + done;
            let chunk = (PAGE - addr % PAGE).min(len - done);
            let s = dsm.home_slice(addr as *const u8, chunk)?;
            match runs.last_mut() {
                Some((_, last))
                    if last.region == s.region && last.offset + last.len as u64 == s.offset =>
                {
                    last.len += chunk;
                }
                _ => runs.push((done, s)),
            }
            done += chunk;
        }
        Ok(runs)
    }

    /// A registered staging buffer of at least `len` bytes.
    fn staging(&self, len: usize) -> Result<Arc<Region>> {
        let mut free = self.staging.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = free.iter().position(|r| r.len() >= len) {
            return Ok(free.swap_remove(i));
        }
        drop(free);
        let region = Region::allocate(len.next_power_of_two().max(MIN_STAGING))?;
        let desc = self.t().register(&region)?;
        self.staging_registrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(desc);
        Ok(region)
    }

    fn recycle(&self, region: Arc<Region>) {
        self.staging
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(region);
    }

    /// Whether this window's memory follows the separate model (see the module docs).
    fn separate(&self) -> bool {
        !matches!(self.memory, Memory::Allocated { .. })
    }

    /// Reconciles this rank's private and public copies of the whole window (separate model
    /// only): local changes go home, cached copies are dropped.
    fn reconcile(&self) -> Result<()> {
        if !self.separate() {
            return Ok(());
        }
        let dsm = &self.comm.shared.dsm;
        if let Memory::Dynamic { attached, .. } = &self.memory {
            let ranges = attached.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (addr, len) in ranges {
                dsm.sync_range(addr as *const u8, len)?;
            }
            return Ok(());
        }
        for p in self.parts.iter().filter(|p| p.global) {
            dsm.sync_range(p.addr as *const u8, p.len)?;
        }
        Ok(())
    }
}
