//! `BARRIER(b, P)` for P threads spread over the nodes (`P` = nodes x threads).
//!
//! When every node runs at least one of the P threads (the usual case, P >= nodes), the barrier
//! is hierarchical: the threads of a node meet in a local barrier, the last to arrive takes the
//! runtime's barrier across nodes (release, a dissemination barrier over messages, acquire),
//! and then lets the node's threads go. Otherwise (fewer threads than nodes) it counts arrivals
//! in the barrier's words in global memory at their home: release, fetch-and-add the count,
//! the last arrival resets it and advances the generation, the others wait (inside the
//! runtime) for the generation to move, then acquire.

use std::collections::HashMap;
use std::ffi::{c_int, c_long};
use std::sync::{Condvar, Mutex, PoisonError};

use dsm_core::Dsm;

use super::{fail, layer};
use crate::runtime::{status_call, with_dsm};
use crate::status::Failure;

/// A barrier of the PARMACS layer (`BARDEC`): 16 bytes, 16-byte aligned, plain data, usually a
/// field of a struct in global memory (`G_MALLOC`). Initialise it with `BARINIT` (that is,
/// `dsm_parmacs_barrier_init`) before use.
#[repr(C, align(16))]
pub struct dsm_parmacs_barrier_t {
    /// The barrier's state; only the runtime reads or writes it.
    pub opaque: [u64; 2],
}

/// The threads of this node waiting at one barrier.
#[derive(Default)]
struct Local {
    arrived: usize,
    generation: u64,
}

static LOCAL: Mutex<Option<HashMap<usize, Local>>> = Mutex::new(None);
static MOVED: Condvar = Condvar::new();

/// The number of the P threads that run on `rank` of `nodes` (thread t runs on rank t mod
/// nodes; thread 0 is the main thread of rank 0).
pub(super) fn threads_on(rank: usize, nodes: usize, p: usize) -> usize {
    p / nodes + usize::from(rank < p % nodes)
}

/// Initialises the barrier at `b` for `p` threads (`BARINIT`). Call it once, in the serial
/// phase (before `CREATE`).
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (NULL, `p` < 1), `DSM_ERR_NOT_INITIALIZED`.
#[no_mangle]
pub extern "C" fn dsm_parmacs_barrier_init(b: *mut dsm_parmacs_barrier_t, p: c_long) -> c_int {
    status_call(|| {
        if b.is_null() || p < 1 {
            return Err(Failure::invalid(
                "BARINIT of a NULL barrier or for fewer than 1 thread",
            ));
        }
        with_dsm(|dsm| {
            if dsm.is_global(b as usize) {
                let w = b.cast::<u64>();
                dsm.atomic_store(w, 0)?;
                dsm.atomic_store(w.wrapping_add(1), 0)?;
            }
            Ok(())
        })
    })
}

/// Waits until `p` threads of the job have arrived at the barrier `b` (`BARRIER`); what every
/// thread wrote before arriving is visible to every thread after. A failure (a lost node, a
/// barrier outside global memory used by fewer threads than nodes) stops the process with a
/// message.
#[no_mangle]
pub extern "C" fn dsm_parmacs_barrier(b: *mut dsm_parmacs_barrier_t, p: c_long) {
    let l = layer();
    let p = usize::try_from(p).unwrap_or(0).max(1);
    let local = threads_on(l.rank, l.nodes, p);
    let outcome = if p >= l.nodes {
        hierarchical(b as usize, local)
    } else {
        with_dsm(|dsm| counted(dsm, b, p as u64))
    };
    if let Err(e) = outcome {
        fail(format!("BARRIER: {}", e.message));
    }
}

/// The node's `local` threads meet; the last one takes the barrier across nodes.
fn hierarchical(key: usize, local: usize) -> Result<(), Failure> {
    let mut all = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = all.get_or_insert_with(HashMap::new).entry(key).or_default();
    entry.arrived += 1;
    let generation = entry.generation;
    if entry.arrived < local {
        while all
            .as_ref()
            .and_then(|m| m.get(&key))
            .is_some_and(|e| e.generation == generation)
        {
            all = MOVED.wait(all).unwrap_or_else(PoisonError::into_inner);
        }
        return Ok(());
    }
    entry.arrived = 0;
    drop(all);
    let crossed = with_dsm(|dsm| Ok(dsm.barrier()?));
    let mut all = LOCAL.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = all.as_mut().and_then(|m| m.get_mut(&key)) {
        e.generation += 1;
    }
    MOVED.notify_all();
    crossed
}

/// Counts arrivals at the barrier's home (fewer threads than nodes).
fn counted(dsm: &Dsm, b: *mut dsm_parmacs_barrier_t, p: u64) -> Result<(), Failure> {
    let count = b.cast::<u64>();
    let generation = count.wrapping_add(1);
    dsm.release()?;
    let seen = dsm.atomic_load(generation)?;
    if dsm.atomic_fetch_add(count, 1)? + 1 == p {
        dsm.atomic_store(count, 0)?;
        dsm.atomic_fetch_add(generation, 1)?;
    } else {
        let mut backoff = 1u32;
        while dsm.atomic_load(generation)? == seen {
            // As `Dsm::lock` polls: a short spin, then the processor goes to whoever runs.
            for _ in 0..backoff {
                std::hint::spin_loop();
            }
            if backoff == 1 << 10 {
                std::thread::yield_now();
            }
            backoff = (backoff * 2).min(1 << 10);
        }
    }
    Ok(dsm.acquire()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_dealt_round_robin() {
        assert_eq!(threads_on(0, 2, 4), 2);
        assert_eq!(threads_on(1, 2, 4), 2);
        assert_eq!(threads_on(0, 4, 6), 2);
        assert_eq!(threads_on(3, 4, 6), 1);
        assert_eq!(threads_on(3, 4, 3), 0);
        let total: usize = (0..3).map(|r| threads_on(r, 3, 10)).sum();
        assert_eq!(total, 10);
    }
}
