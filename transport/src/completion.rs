//! Completion of posted operations: a slot per operation that a backend fills in and a caller
//! waits on, spinning briefly before it sleeps.
//!
//! Spinning first matters: waking a sleeping thread costs several microseconds on a virtual CPU
//! (see `docs/ARCHITECTURE.md`), more than a whole round trip on loopback.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

const PENDING: u32 = 0;
const DONE: u32 = 1;
const FAILED: u32 = 2;

/// How long a waiter spins before it blocks, unless configured otherwise.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(50);

#[derive(Debug, Default)]
struct Slot {
    state: AtomicU32,
    value: AtomicU64,
    sleeping: AtomicBool,
    error: Mutex<Option<Error>>,
    wake: Condvar,
}

/// Something a waiting thread can do to make progress itself instead of waiting for another
/// thread to do it (for tcp: read the connection the response will arrive on).
pub(crate) trait Driver: Send + Sync + std::fmt::Debug {
    /// The waiter starts spinning (tcp: the progress thread stops being woken by arrivals on
    /// the connection). Paired with [`Driver::end`].
    fn begin(&self) {}

    /// One non-blocking attempt to make progress.
    fn drive(&self);

    /// The waiter stops spinning: `done`, the operation completed (it returns), or not (it
    /// is about to sleep, or unwinding).
    fn end(&self, done: bool) {
        let _ = done;
    }
}

/// Calls [`Driver::end`] when dropped.
struct Spinning<'a> {
    driver: &'a dyn Driver,
    done: bool,
}

impl<'a> Spinning<'a> {
    fn new(driver: &'a dyn Driver) -> Spinning<'a> {
        driver.begin();
        Spinning {
            driver,
            done: false,
        }
    }
}

impl Drop for Spinning<'_> {
    fn drop(&mut self) {
        self.driver.end(self.done);
    }
}

/// The handle of one posted operation. Wait for it with [`Completion::wait`].
///
/// Dropping it without waiting is allowed: the operation still runs to completion.
#[derive(Debug, Clone)]
pub struct Completion {
    slot: Arc<Slot>,
    spin: Duration,
    driver: Option<Arc<dyn Driver>>,
}

/// The backend's side of a [`Completion`]: completes it exactly once.
#[derive(Debug)]
pub(crate) struct Completer {
    slot: Arc<Slot>,
}

impl Completion {
    /// A new pending completion and the handle that completes it.
    pub(crate) fn new(spin: Duration) -> (Completion, Completer) {
        Completion::driven(spin, None)
    }

    /// A pending completion whose waiter calls `driver` while it spins.
    pub(crate) fn driven(
        spin: Duration,
        driver: Option<Arc<dyn Driver>>,
    ) -> (Completion, Completer) {
        let slot = Arc::new(Slot::default());
        let completion = Completion {
            slot: Arc::clone(&slot),
            spin,
            driver,
        };
        (completion, Completer { slot })
    }

    /// An already completed operation (for backends that finish inline).
    pub(crate) fn ready(value: u64) -> Completion {
        let (c, done) = Completion::new(Duration::ZERO);
        done.complete(value);
        c
    }

    /// An already failed operation.
    pub(crate) fn failed(error: Error) -> Completion {
        let (c, done) = Completion::new(Duration::ZERO);
        done.fail(error);
        c
    }

    /// Whether the operation has finished (successfully or not).
    pub fn is_done(&self) -> bool {
        self.slot.state.load(Ordering::Acquire) != PENDING
    }

    /// Waits for the operation. Returns the old value for atomics, 0 for reads and writes.
    ///
    /// # Errors
    /// The error the operation failed with ([`Error::Remote`], [`Error::PeerLost`], ...).
    pub fn wait(&self) -> Result<u64> {
        self.wait_deadline(None)
    }

    /// Like [`Completion::wait`], giving up after `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the operation is still pending at the deadline (it stays posted),
    /// or the error the operation failed with.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    /// Sleeps until the operation finishes or `timeout` passes, without spinning and
    /// without driving anything; whether it finished.
    pub fn sleep_timeout(&self, timeout: Duration) -> bool {
        if !self.is_done() {
            // A timeout is the expected outcome of some calls: whether it finished is the answer.
            let _ = self.block(Some(Instant::now() + timeout));
        }
        self.is_done()
    }

    fn wait_deadline(&self, deadline: Option<Instant>) -> Result<u64> {
        if self.is_done() {
            return self.outcome();
        }
        let spin_until = Instant::now() + self.spin;
        if let Some(d) = &self.driver {
            let mut spinning = Spinning::new(&**d);
            while !self.is_done() && Instant::now() < spin_until {
                d.drive();
            }
            spinning.done = self.is_done();
        } else {
            let mut spins = 0u32;
            while !self.is_done() && Instant::now() < spin_until {
                spins += 1;
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        if !self.is_done() {
            self.block(deadline)?;
        }
        self.outcome()
    }

    fn block(&self, deadline: Option<Instant>) -> Result<()> {
        let slot = &*self.slot;
        let mut guard = slot.error.lock().unwrap_or_else(|e| e.into_inner());
        slot.sleeping.store(true, Ordering::SeqCst);
        while slot.state.load(Ordering::SeqCst) == PENDING {
            guard = match deadline {
                None => slot.wake.wait(guard).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(Error::Timeout("waiting for a completion".into()));
                    }
                    slot.wake
                        .wait_timeout(guard, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        Ok(())
    }

    fn outcome(&self) -> Result<u64> {
        match self.slot.state.load(Ordering::Acquire) {
            DONE => Ok(self.slot.value.load(Ordering::Relaxed)),
            _ => Err(self
                .slot
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or(Error::Closed)),
        }
    }
}

impl Completer {
    /// Completes the operation with `value`.
    pub(crate) fn complete(self, value: u64) {
        self.slot.value.store(value, Ordering::Relaxed);
        self.finish(DONE);
    }

    /// Fails the operation with `error`.
    pub(crate) fn fail(self, error: Error) {
        *self.slot.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        self.finish(FAILED);
    }

    fn finish(&self, state: u32) {
        let slot = &*self.slot;
        if slot
            .state
            .compare_exchange(PENDING, state, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return;
        }
        if slot.sleeping.load(Ordering::SeqCst) {
            // Taking the lock orders this notification after the waiter's check-then-wait.
            let _guard = slot.error.lock().unwrap_or_else(|e| e.into_inner());
            slot.wake.notify_all();
        }
    }
}

impl Drop for Completer {
    /// An operation whose completer disappears without an answer (its connection was dropped, a
    /// backend thread died) fails with [`Error::Closed`] instead of leaving its waiter hanging.
    fn drop(&mut self) {
        self.finish(FAILED);
    }
}

/// Waits for every completion, returning the first error after all have finished.
///
/// # Errors
/// The first failure among them.
pub fn wait_all(completions: &[Completion]) -> Result<()> {
    let mut first = None;
    for c in completions {
        if let Err(e) = c.wait() {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_across_threads_after_blocking() {
        let (c, done) = Completion::new(Duration::ZERO);
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            rx.recv().unwrap();
            done.complete(42);
        });
        tx.send(()).unwrap();
        assert_eq!(c.wait().unwrap(), 42);
        t.join().unwrap();
    }

    #[test]
    fn failure_is_reported_to_every_clone() {
        let (c, done) = Completion::new(DEFAULT_SPIN);
        let c2 = c.clone();
        done.fail(Error::Closed);
        assert!(matches!(c.wait(), Err(Error::Closed)));
        assert!(matches!(c2.wait(), Err(Error::Closed)));
    }

    #[test]
    fn a_dropped_completer_fails_the_waiter() {
        let (c, done) = Completion::new(Duration::ZERO);
        drop(done);
        assert!(matches!(c.wait(), Err(Error::Closed)));
        let (c, done) = Completion::new(Duration::ZERO);
        done.complete(5);
        assert_eq!(
            c.wait().unwrap(),
            5,
            "completing then dropping keeps the value"
        );
    }

    #[test]
    fn timeout_leaves_the_operation_pending() {
        let (c, done) = Completion::new(Duration::ZERO);
        assert!(matches!(
            c.wait_timeout(Duration::from_millis(5)),
            Err(Error::Timeout(_))
        ));
        done.complete(7);
        assert_eq!(c.wait().unwrap(), 7);
    }
}
