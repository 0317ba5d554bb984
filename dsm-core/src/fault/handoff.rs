//! The hand-off of the `sigsegv` engine's `handoff` mode: the signal handler puts the fault in
//! a slot and sleeps on it; a service thread takes it, resolves it and wakes the handler.
//!
//! Strictly async-signal-safe on the handler's side ([`request`]): a fixed array of slots,
//! atomics and `futex`, no allocation, no lock. The service threads ([`spawn`]) do the work
//! with the runtime's locks and allocations, outside any signal handler.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Resolve;
use crate::error::{Error, Result};

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const REQUESTED: u32 = 2;
const SERVING: u32 = 3;
const DONE: u32 = 4;
const FAILED: u32 = 5;

/// A fault handed from the signal handler to the service threads.
struct Slot {
    state: AtomicU32,
    addr: AtomicUsize,
    write: AtomicBool,
}

const SLOTS: usize = 256;

#[allow(
    clippy::declare_interior_mutable_const,
    reason = "used only to initialise the array"
)]
const EMPTY: Slot = Slot {
    state: AtomicU32::new(FREE),
    addr: AtomicUsize::new(0),
    write: AtomicBool::new(false),
};

static FAULTS: [Slot; SLOTS] = [EMPTY; SLOTS];
/// Counts requests; service threads sleep on it as a futex.
static PENDING: AtomicU32 = AtomicU32::new(0);
/// 1 while a service thread is polling for requests (the token allows one poller at a time, so
/// idle pollers never crowd out the thread that is serving on a small machine); 0 when every
/// service thread is serving or asleep, and a new request must wake one.
static POLLING: AtomicU32 = AtomicU32::new(0);
/// How long the faulting thread and the service threads spin before they sleep, in ns.
static SPIN_NS: AtomicUsize = AtomicUsize::new(50_000);

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 that lives for the whole program (a static);
    // it only sleeps while the word equals `expected`, and a null timeout waits without limit
    // (every waker stores a new value first). Async-signal-safe: a bare system call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32 (a static); wakes at most `n` waiters.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

/// From the signal handler: hands the fault at `addr` to a service thread and waits until it
/// is resolved. False when it could not be. Async-signal-safe.
pub(super) fn request(addr: usize, write: bool) -> bool {
    let slot = loop {
        if let Some(s) = FAULTS.iter().find(|s| {
            s.state
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        }) {
            break s;
        }
        // More faults in flight than slots: let one finish.
        // SAFETY: sched_yield has no preconditions and is async-signal-safe.
        unsafe { libc::sched_yield() };
    };
    slot.addr.store(addr, Ordering::Relaxed);
    slot.write.store(write, Ordering::Relaxed);
    slot.state.store(REQUESTED, Ordering::Release);
    PENDING.fetch_add(1, Ordering::SeqCst);
    if POLLING.load(Ordering::SeqCst) == 0 {
        futex_wake(&PENDING, 1);
    }
    let spin_until = SPIN_NS.load(Ordering::Relaxed);
    let mut spins = 0usize;
    let resolved = loop {
        let s = slot.state.load(Ordering::Acquire);
        match s {
            DONE => break true,
            FAILED => break false,
            _ if spins < spin_until / 20 => {
                spins += 1;
                std::hint::spin_loop();
            }
            _ => futex_wait(&slot.state, s),
        }
    };
    slot.state.store(FREE, Ordering::Release);
    resolved
}

/// Starts `threads` service threads resolving with `resolver` until `stop` is set and
/// [`wake_all`] called.
///
/// # Errors
/// [`Error::Io`] when a thread cannot start (the ones started are stopped by the caller
/// through `stop`).
pub(super) fn spawn(
    resolver: &Arc<dyn Resolve>,
    threads: usize,
    stop: &Arc<AtomicBool>,
    handles: &mut Vec<JoinHandle<()>>,
) -> Result<()> {
    for i in 0..threads {
        let resolver = Arc::clone(resolver);
        let stop = Arc::clone(stop);
        let h = std::thread::Builder::new()
            .name(format!("dsm-fault-{i}"))
            .spawn(move || serve(&*resolver, &stop))
            .map_err(|e| Error::io("starting a fault service thread", e))?;
        handles.push(h);
    }
    Ok(())
}

/// Wakes every sleeping service thread, so that they see their stop flag.
pub(super) fn wake_all() {
    PENDING.fetch_add(1, Ordering::SeqCst);
    futex_wake(&PENDING, i32::MAX);
}

/// A service thread: takes requested faults, resolves them, wakes the faulting thread.
///
/// One service thread at a time polls (holding the `POLLING` token) for `SPIN_NS` after its
/// last work; the others sleep on the `PENDING` futex. A thread gives the token up while it
/// serves, so a second fault meanwhile wakes a sleeper and both are served concurrently.
fn serve(resolver: &dyn Resolve, stop: &AtomicBool) {
    let spin = Duration::from_nanos(SPIN_NS.load(Ordering::Relaxed) as u64);
    let mut polling = false;
    let mut last_work = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let seen = PENDING.load(Ordering::SeqCst);
        let mut served = false;
        for slot in &FAULTS {
            if slot
                .state
                .compare_exchange(REQUESTED, SERVING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if polling {
                POLLING.store(0, Ordering::SeqCst);
                polling = false;
            }
            served = true;
            let addr = slot.addr.load(Ordering::Relaxed);
            let write = slot.write.load(Ordering::Relaxed);
            let outcome = match resolver.resolve(addr, write) {
                Ok(()) => DONE,
                Err(e) => {
                    eprintln!(
                        "dsm: rank {}: cannot resolve a {} fault at {addr:#x}: {e}",
                        resolver.rank(),
                        if write { "write" } else { "read" }
                    );
                    FAILED
                }
            };
            slot.state.store(outcome, Ordering::Release);
            futex_wake(&slot.state, 1);
        }
        if served {
            last_work = Instant::now();
        }
        if !polling {
            polling = POLLING
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if polling {
                continue;
            }
        }
        if polling && last_work.elapsed() < spin {
            std::hint::spin_loop();
            continue;
        }
        if polling {
            POLLING.store(0, Ordering::SeqCst);
            polling = false;
        }
        futex_wait(&PENDING, seen);
    }
    if polling {
        POLLING.store(0, Ordering::SeqCst);
    }
}
