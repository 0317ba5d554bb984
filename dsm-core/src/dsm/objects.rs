//! Semaphores and condition variables in global memory: [`GlobalSemaphore`] and
//! [`GlobalCondvar`], plain data that may live anywhere in global memory (a field of a struct
//! there is fine), initialised by any node. Their words live at the home of their page, as a
//! [`GlobalLock`]'s do, and every operation on them is one of the transport's remote atomics
//! there; waiting is done here, polling the word at its home with a backoff that ends in short
//! sleeps, so that programs never write a polling loop of their own.
//!
//! Ordering: `sem_post`, `cond_signal` and `cond_broadcast` release before they change the
//! word; `sem_wait` and `sem_try_wait` acquire after they take a unit, `cond_wait` after it
//! takes its lock again. What a node wrote before a post is visible to the node whose wait
//! that post ended (`docs/MEMORY_MODEL.md`).

use std::time::Duration;

use transport::{RemoteSlice, Transport};

use super::{Dsm, GlobalLock};
use crate::error::{Error, Result};

/// A counting semaphore in global memory: 32 bytes, 16-byte aligned. Its first word is the
/// count; the others are reserved (zero). Initialise it with [`Dsm::sem_init`] on one node
/// before any node uses it.
#[repr(C, align(16))]
#[derive(Debug, Default)]
pub struct GlobalSemaphore {
    count: u64,
    reserved: [u64; 3],
}

/// A condition variable in global memory: 16 bytes, 16-byte aligned. Its first word counts the
/// signals and broadcasts so far (a sequence); the second is reserved (zero). Initialise it
/// with [`Dsm::cond_init`] on one node before any node uses it.
#[repr(C, align(16))]
#[derive(Debug, Default)]
pub struct GlobalCondvar {
    sequence: u64,
    reserved: u64,
}

/// Polls of a word at its home, spinning at first, then yielding the processor, then
/// sleeping: a wait that ends soon costs little latency, one that lasts (a consumer waiting
/// for a slow producer) does not keep a core and the home's progress thread busy.
#[derive(Debug)]
struct Backoff {
    polls: u32,
}

impl Backoff {
    /// Polls that spin (with a doubling number of spin-loop hints) before the first yield.
    const SPINS: u32 = 10;
    /// Polls that yield the processor before the first sleep.
    const YIELDS: u32 = 64;
    /// The longest sleep between two polls: the most latency a wake-up of a long wait adds.
    const MAX_SLEEP: Duration = Duration::from_micros(200);

    fn new() -> Backoff {
        Backoff { polls: 0 }
    }

    /// Waits a little before the next poll.
    #[expect(
        clippy::disallowed_methods,
        reason = "a bounded pause between two polls of a word at its home, not a way to \
                  synchronise: what ends the wait is the value the next poll reads"
    )]
    fn pause(&mut self) {
        let n = self.polls;
        self.polls = self.polls.saturating_add(1);
        if n < Self::SPINS {
            for _ in 0..1u32 << n {
                std::hint::spin_loop();
            }
        } else if n < Self::SPINS + Self::YIELDS {
            std::thread::yield_now();
        } else {
            let doublings = (n - Self::SPINS - Self::YIELDS).min(8);
            let sleep = Duration::from_micros(2 << doublings).min(Self::MAX_SLEEP);
            std::thread::sleep(sleep);
        }
    }
}

impl Dsm {
    /// The first word of a 16-byte aligned object in global memory, at its home.
    fn object_word(&self, addr: usize) -> Result<RemoteSlice> {
        if !addr.is_multiple_of(16) {
            return Err(Error::Misaligned(addr));
        }
        self.inner.atomic_word(addr)
    }

    /// Sets the word `w` to `v` with the transport's atomics (no store of a whole object:
    /// its words live at the home, not in this node's copy of the page).
    fn set_word(&self, w: RemoteSlice, v: u64) -> Result<()> {
        let mut cur = self.inner.t.fetch_add(w, 0)?;
        while cur != v {
            let seen = self.inner.t.compare_swap(w, cur, v)?;
            if seen == cur {
                break;
            }
            cur = seen;
        }
        Ok(())
    }

    /// Initialises a semaphore in global memory with the count `value`. Any node may do it,
    /// once, before any node uses the semaphore (a barrier after it makes sure of that).
    ///
    /// # One-sided
    /// Only the calling node takes part.
    ///
    /// # Errors
    /// [`Error::Misaligned`] for a semaphore outside global memory or not 16-byte aligned;
    /// [`Error::Unallocated`] for memory no allocation covers; transport errors.
    pub fn sem_init(&self, s: *const GlobalSemaphore, value: u64) -> Result<()> {
        let count = self.object_word(s as usize)?;
        self.set_word(count, value)
    }

    /// Releases (what this node wrote becomes visible to the node whose wait this post ends),
    /// then adds one to the count, which lets one waiter (or the next caller of
    /// [`Dsm::sem_wait`]) go on.
    ///
    /// # One-sided
    /// Only the calling node takes part.
    ///
    /// # Errors
    /// As [`Dsm::sem_init`]. A failed release leaves the count as it was.
    pub fn sem_post(&self, s: *const GlobalSemaphore) -> Result<()> {
        let count = self.object_word(s as usize)?;
        self.inner.release()?;
        self.inner.t.fetch_add(count, 1)?;
        Ok(())
    }

    /// Takes one from the count when it is above 0: returns whether it did, without waiting.
    /// When it did, it then acquires.
    fn sem_take(&self, count: RemoteSlice) -> Result<bool> {
        let mut cur = self.inner.t.fetch_add(count, 0)?;
        while cur > 0 {
            let seen = self.inner.t.compare_swap(count, cur, cur - 1)?;
            if seen == cur {
                self.inner.acquire()?;
                return Ok(true);
            }
            cur = seen;
        }
        Ok(false)
    }

    /// Waits until the count is above 0, takes one from it, then acquires: what the poster
    /// wrote before its [`Dsm::sem_post`] is visible when this returns. Waiting polls the
    /// count at its home, backing off to short sleeps; any thread of any node may wait.
    ///
    /// # One-sided
    /// Only the calling node takes part.
    ///
    /// # Errors
    /// As [`Dsm::sem_init`].
    pub fn sem_wait(&self, s: *const GlobalSemaphore) -> Result<()> {
        let count = self.object_word(s as usize)?;
        let mut backoff = Backoff::new();
        while !self.sem_take(count)? {
            backoff.pause();
        }
        Ok(())
    }

    /// Takes one from the count if it is above 0 and returns `true` (after acquiring), or
    /// returns `false` at once when it is 0.
    ///
    /// # One-sided
    /// Only the calling node takes part.
    ///
    /// # Errors
    /// As [`Dsm::sem_init`].
    pub fn sem_try_wait(&self, s: *const GlobalSemaphore) -> Result<bool> {
        let count = self.object_word(s as usize)?;
        self.sem_take(count)
    }

    /// Initialises a condition variable in global memory. Any node may do it, once, before
    /// any node uses it (a barrier after it makes sure of that).
    ///
    /// # One-sided
    /// Only the calling node takes part.
    ///
    /// # Errors
    /// [`Error::Misaligned`] for a condition variable outside global memory or not 16-byte
    /// aligned; [`Error::Unallocated`] for memory no allocation covers; transport errors.
    pub fn cond_init(&self, c: *const GlobalCondvar) -> Result<()> {
        let sequence = self.object_word(c as usize)?;
        self.set_word(sequence, 0)
    }

    /// Unlocks `held` (a lock this node holds), waits for a [`Dsm::cond_signal`] or
    /// [`Dsm::cond_broadcast`] made after this call began, then takes `held` again (which
    /// acquires). A signal made after this call read the condition variable's sequence, which
    /// it does before it unlocks, is never missed: a node that signals while holding `held`
    /// (or after taking it once this call began) wakes this waiter.
    ///
    /// As with POSIX condition variables, a return does not mean the program's condition
    /// holds: a signal may wake more than one waiter (every waiter of the moment, here), so
    /// callers wait in a loop on their predicate, read under the lock.
    ///
    /// # One-sided
    /// Only the calling node takes part.
    ///
    /// # Errors
    /// [`Error::LockNotHeld`] when this node does not hold `held` (nothing changes: the lock
    /// stays as it was and nothing is waited for); [`Error::Misaligned`] for a condition
    /// variable or lock outside global memory or not 16-byte aligned; transport errors. After
    /// an error of the wait itself, `held` is not held.
    pub fn cond_wait(&self, c: *const GlobalCondvar, held: *const GlobalLock) -> Result<()> {
        let sequence = self.object_word(c as usize)?;
        let seen = self.inner.t.fetch_add(sequence, 0)?;
        self.unlock(held)?;
        let mut backoff = Backoff::new();
        while self.inner.t.fetch_add(sequence, 0)? == seen {
            backoff.pause();
        }
        self.lock(held)
    }

    /// Releases (what this node wrote becomes visible to the waiters once they take their lock
    /// again), then wakes the nodes waiting on the condition variable. It may wake more than
    /// one (all of this moment's waiters, as [`Dsm::cond_broadcast`] does), which POSIX allows.
    ///
    /// # One-sided
    /// Only the calling node takes part.
    ///
    /// # Errors
    /// As [`Dsm::cond_init`].
    pub fn cond_signal(&self, c: *const GlobalCondvar) -> Result<()> {
        self.cond_broadcast(c)
    }

    /// Releases, then wakes every node waiting on the condition variable (each takes its lock
    /// again in turn).
    ///
    /// # One-sided
    /// Only the calling node takes part.
    ///
    /// # Errors
    /// As [`Dsm::cond_init`].
    pub fn cond_broadcast(&self, c: *const GlobalCondvar) -> Result<()> {
        let sequence = self.object_word(c as usize)?;
        self.inner.release()?;
        self.inner.t.fetch_add(sequence, 1)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_objects_have_the_sizes_of_their_c_types() {
        assert_eq!(size_of::<GlobalSemaphore>(), 32);
        assert_eq!(align_of::<GlobalSemaphore>(), 16);
        assert_eq!(size_of::<GlobalCondvar>(), 16);
        assert_eq!(align_of::<GlobalCondvar>(), 16);
    }

    #[test]
    fn the_backoff_sleeps_at_most_its_bound() {
        let mut b = Backoff::new();
        for _ in 0..Backoff::SPINS + Backoff::YIELDS {
            b.pause();
        }
        let start = std::time::Instant::now();
        for _ in 0..20 {
            b.pause();
        }
        // 20 sleeps of at most MAX_SLEEP (and some of less), with generous room for a busy
        // machine.
        assert!(start.elapsed() < Backoff::MAX_SLEEP * 20 * 50);
    }
}
