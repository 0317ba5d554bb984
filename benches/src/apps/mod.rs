//! The application suite: five shared-memory programs (an FFT with transposes, a blocked LU, a
//! radix sort, a red-black SOR stencil, an n-body code with a lock per body), each written once
//! against [`Team`] and run two ways: on the DSM ([`DsmTeam`], one process per node under
//! `dsmrun`) and on threads in one process ([`run_threads`], the same code on ordinary memory).
//! The serial reference of a program is the same code on one thread.
//!
//! The driver is `app_bench` (`benches/src/bin/app_bench.rs`); `scripts/app-bench.sh` runs every
//! program on 1, 2 and 4 nodes beside 1 and 2 threads and prints the ratios.

pub mod fft;
pub mod lu;
pub mod nbody;
pub mod radix;
pub mod stencil;

use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use dsm_core::{Dsm, GlobalLock, Placement};

/// One participant of a parallel program: a node of the DSM or a thread of a process.
///
/// Every method documented as collective must be called by every participant, in the same
/// order. Failures of the DSM (a lost peer, a transport error) end the program with a panic:
/// these are benchmarks, and the launcher reports the rank that failed.
pub trait Team {
    /// This participant's index, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of participants.
    fn size(&self) -> usize;
    /// Waits for every participant; writes before it are visible to every participant after it.
    ///
    /// # Collective
    /// Every participant must call it.
    fn barrier(&self);
    /// A zeroed array of `len` values shared by every participant; `placement` says which node
    /// is home of which pages (threads ignore it).
    ///
    /// # Collective
    /// Every participant must call it, in the same order, with the same arguments.
    fn alloc<T: Copy>(&self, len: usize, placement: Placement) -> Shared<T>;
    /// `n` unlocked locks shared by every participant.
    ///
    /// # Collective
    /// Every participant must call it, in the same order, with the same arguments.
    fn locks(&self, n: usize) -> Locks;
    /// Takes lock `i` of `l`; writes made under the lock by its previous holder are visible.
    fn lock(&self, l: Locks, i: usize);
    /// Gives lock `i` of `l` back, making this participant's writes visible to its next holder.
    fn unlock(&self, l: Locks, i: usize);
}

/// An array in memory shared by a team (global memory on the DSM). Copying it copies the handle.
///
/// Its accessors are unsafe: the program must be data-race free (no participant writes
/// elements another reads or writes between the same two synchronisation points).
#[derive(Debug)]
pub struct Shared<T> {
    ptr: *mut T,
    len: usize,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Shared<T> {}

// SAFETY: a Shared is a pointer to memory that lives as long as the team; the accessors are
// unsafe and their contracts forbid data races, so sending the handle to another thread of the
// team is sound.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as for Send.
unsafe impl<T: Sync> Sync for Shared<T> {}

impl<T: Copy> Shared<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The elements `range`, to read.
    ///
    /// # Safety
    /// No participant writes these elements until the next synchronisation point, and the slice
    /// is not kept across one.
    ///
    /// # Panics
    /// When the range is out of bounds.
    pub unsafe fn slice(&self, range: std::ops::Range<usize>) -> &[T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds of a live allocation; the caller rules out concurrent writers.
        unsafe { std::slice::from_raw_parts(self.ptr.wrapping_add(range.start), range.len()) }
    }

    /// The elements `range`, to write.
    ///
    /// # Safety
    /// No other participant (and no other slice here) reads or writes these elements until
    /// the next synchronisation point, and the slice is not kept across one.
    ///
    /// # Panics
    /// When the range is out of bounds.
    #[allow(
        clippy::mut_from_ref,
        reason = "shared memory; the contract is the caller's"
    )]
    pub unsafe fn slice_mut(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds of a live allocation; the caller guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.wrapping_add(range.start), range.len()) }
    }

    /// The elements `range` as cells: for programs whose participants write disjoint elements
    /// interleaved in the same range (a red-black sweep), where slices would overlap.
    ///
    /// # Safety
    /// Until the next synchronisation point, no element this participant reads or writes
    /// through the cells is written by another participant, and the cells are not kept across
    /// it.
    ///
    /// # Panics
    /// When the range is out of bounds.
    pub unsafe fn cells(&self, range: std::ops::Range<usize>) -> &[std::cell::Cell<T>] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds of a live allocation; a Cell<T> has T's layout; the caller rules
        // out concurrent writes of the elements this participant accesses.
        unsafe {
            std::slice::from_raw_parts(self.ptr.wrapping_add(range.start).cast(), range.len())
        }
    }

    /// Writes `v` at element `i` (through a pointer: participants may write disjoint elements
    /// of the same array without holding overlapping slices).
    ///
    /// # Safety
    /// No other participant reads or writes element `i` until the next synchronisation point.
    ///
    /// # Panics
    /// When `i` is out of bounds.
    pub unsafe fn write(&self, i: usize, v: T) {
        assert!(i < self.len);
        // SAFETY: in bounds of a live allocation; the caller rules out concurrent access.
        unsafe { self.ptr.wrapping_add(i).write(v) }
    }

    /// A private copy of the whole array.
    ///
    /// # Safety
    /// As for [`Shared::slice`] over the whole array.
    pub unsafe fn to_vec(&self) -> Vec<T> {
        // SAFETY: the caller's contract is slice's.
        unsafe { self.slice(0..self.len) }.to_vec()
    }
}

/// A team's array of locks (a handle; copying it copies the handle).
#[derive(Debug, Clone, Copy)]
pub struct Locks {
    base: usize,
    n: usize,
}

/// What a program computed, kept by rank 0 to compare with the serial run.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Integers, compared exactly.
    Exact(Vec<u64>),
    /// Floating-point values, compared with a relative tolerance.
    Float(Vec<f64>),
}

impl Answer {
    /// `Ok` when `self` matches the serial `reference`: exactly, or for floating point within
    /// `tolerance` relative to the largest magnitude of the reference; otherwise the first
    /// difference.
    ///
    /// # Errors
    /// A description of the first element that differs.
    pub fn check(&self, reference: &Answer, tolerance: f64) -> Result<(), String> {
        match (self, reference) {
            (Answer::Exact(a), Answer::Exact(b)) => {
                if a.len() != b.len() {
                    return Err(format!(
                        "{} values, the serial run has {}",
                        a.len(),
                        b.len()
                    ));
                }
                match (0..a.len()).find(|&i| a[i] != b[i]) {
                    Some(i) => Err(format!("value {i} is {} but serially {}", a[i], b[i])),
                    None => Ok(()),
                }
            }
            (Answer::Float(a), Answer::Float(b)) => {
                if a.len() != b.len() {
                    return Err(format!(
                        "{} values, the serial run has {}",
                        a.len(),
                        b.len()
                    ));
                }
                let scale = b.iter().fold(f64::MIN_POSITIVE, |m, x| m.max(x.abs()));
                match (0..a.len())
                    .find(|&i| a[i].is_nan() || (a[i] - b[i]).abs() > tolerance * scale)
                {
                    Some(i) => Err(format!(
                        "value {i} is {} but serially {} (scale {scale:e})",
                        a[i], b[i]
                    )),
                    None => Ok(()),
                }
            }
            _ => Err("the answers are of different kinds".into()),
        }
    }
}

/// How one run of a program went, as rank 0 saw it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Time of the parallel phase (after set-up, between two barriers).
    pub time: Duration,
    /// The result (rank 0 only; empty elsewhere).
    pub answer: Answer,
}

/// Rows `lo..hi` of `n` that participant `rank` of `size` owns (blocks of consecutive rows).
pub fn block(n: usize, rank: usize, size: usize) -> (usize, usize) {
    (rank * n / size, (rank + 1) * n / size)
}

/// A deterministic pseudo-random 64-bit value of `x` (splitmix64).
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A deterministic pseudo-random value in `[0, 1)` of `x`.
pub fn unit(x: u64) -> f64 {
    (mix(x) >> 11) as f64 / (1u64 << 53) as f64
}

/// A node of the DSM as a [`Team`] member.
#[derive(Debug)]
pub struct DsmTeam<'d> {
    d: &'d Dsm,
}

impl<'d> DsmTeam<'d> {
    /// The team of every node of `d`'s job.
    pub fn new(d: &'d Dsm) -> DsmTeam<'d> {
        DsmTeam { d }
    }
}

fn lock_at(l: Locks, i: usize) -> *const GlobalLock {
    assert!(i < l.n, "lock {i} of {}", l.n);
    (l.base + i * size_of::<GlobalLock>()) as *const GlobalLock
}

impl Team for DsmTeam<'_> {
    fn rank(&self) -> usize {
        self.d.rank()
    }
    fn size(&self) -> usize {
        self.d.nodes()
    }
    fn barrier(&self) {
        self.d.barrier().expect("barrier");
    }
    fn alloc<T: Copy>(&self, len: usize, placement: Placement) -> Shared<T> {
        let bytes = (len * size_of::<T>()).max(1);
        let ptr = self
            .d
            .alloc_collective(bytes, placement)
            .expect("alloc_collective");
        Shared {
            ptr: ptr.cast(),
            len,
        }
    }
    fn locks(&self, n: usize) -> Locks {
        let bytes = (n * size_of::<GlobalLock>()).max(1);
        let base = self
            .d
            .alloc_collective(bytes, Placement::Blocked)
            .expect("alloc_collective") as usize;
        let l = Locks { base, n };
        // Zeroed memory is an unlocked lock; initialising the ones this node is home of keeps
        // that an explicit step.
        let (lo, hi) = block(n, self.rank(), self.size());
        for i in lo..hi {
            self.d.lock_init(lock_at(l, i)).expect("lock_init");
        }
        self.barrier();
        l
    }
    fn lock(&self, l: Locks, i: usize) {
        self.d.lock(lock_at(l, i)).expect("lock");
    }
    fn unlock(&self, l: Locks, i: usize) {
        self.d.unlock(lock_at(l, i)).expect("unlock");
    }
}

/// What the threads of one team share: the barrier and the arrays allocated so far.
#[derive(Debug)]
struct ThreadsState {
    size: usize,
    barrier: Barrier,
    allocs: Mutex<Vec<(usize, Layout)>>,
}

impl Drop for ThreadsState {
    fn drop(&mut self) {
        let allocs = self.allocs.get_mut().unwrap_or_else(|e| e.into_inner());
        for &(ptr, layout) in allocs.iter() {
            // SAFETY: allocated in `alloc_raw` with this very layout; every thread of the team
            // has finished (the state is dropped with its last reference).
            unsafe { std::alloc::dealloc(ptr as *mut u8, layout) };
        }
    }
}

/// A thread of a process as a [`Team`] member (see [`run_threads`]).
#[derive(Debug)]
pub struct ThreadTeam {
    rank: usize,
    allocated: std::cell::Cell<usize>,
    state: Arc<ThreadsState>,
}

impl ThreadTeam {
    /// Collective: rank 0 allocates, everyone takes the pointer of the same index.
    fn alloc_raw(&self, bytes: usize) -> usize {
        let k = self.allocated.get();
        self.allocated.set(k + 1);
        if self.rank == 0 {
            let layout = Layout::from_size_align(bytes.max(1), 4096).expect("layout");
            // SAFETY: the layout's size is not zero.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!ptr.is_null(), "out of memory for {bytes} bytes");
            self.state
                .allocs
                .lock()
                .expect("allocs")
                .push((ptr as usize, layout));
        }
        self.state.barrier.wait();
        let ptr = self.state.allocs.lock().expect("allocs")[k].0;
        self.state.barrier.wait();
        ptr
    }
}

impl Team for ThreadTeam {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.state.size
    }
    fn barrier(&self) {
        self.state.barrier.wait();
    }
    fn alloc<T: Copy>(&self, len: usize, _placement: Placement) -> Shared<T> {
        let ptr = self.alloc_raw(len * size_of::<T>());
        Shared {
            ptr: ptr as *mut T,
            len,
        }
    }
    fn locks(&self, n: usize) -> Locks {
        Locks {
            base: self.alloc_raw(n * 8),
            n,
        }
    }
    fn lock(&self, l: Locks, i: usize) {
        let w = thread_lock(l, i);
        let mut spins = 0u32;
        while w
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
    fn unlock(&self, l: Locks, i: usize) {
        thread_lock(l, i).store(0, Ordering::Release);
    }
}

fn thread_lock(l: Locks, i: usize) -> &'static AtomicU64 {
    assert!(i < l.n, "lock {i} of {}", l.n);
    // SAFETY: word i lies inside the team's zeroed, 8-byte aligned lock array, which lives
    // until every thread of the team has finished; it is only ever accessed atomically.
    unsafe { AtomicU64::from_ptr((l.base + i * 8) as *mut u64) }
}

/// Runs `program` on `threads` threads of this process sharing ordinary memory; returns rank
/// 0's outcome.
///
/// # Panics
/// When a thread panics.
pub fn run_threads<F>(threads: usize, program: F) -> Outcome
where
    F: Fn(&ThreadTeam) -> Outcome + Sync,
{
    let state = Arc::new(ThreadsState {
        size: threads,
        barrier: Barrier::new(threads),
        allocs: Mutex::new(Vec::new()),
    });
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|rank| {
                let team = ThreadTeam {
                    rank,
                    allocated: std::cell::Cell::new(0),
                    state: Arc::clone(&state),
                };
                let program = &program;
                s.spawn(move || program(&team))
            })
            .collect();
        let mut outcomes = handles
            .into_iter()
            .map(|h| h.join().expect("a thread of the team panicked"));
        outcomes.next().expect("at least one thread")
    })
}
