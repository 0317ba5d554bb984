//! A word of a global lock, as the node that takes or passes the lock reaches it: through the
//! transport (a one-sided atomic at the word's home), or, when this node is the home and the
//! transport's atomics act on the home's memory with the CPU's own instructions, as that
//! memory's atomic word directly.
//!
//! The second is the same operation without the transport around it: over tcp and shm a
//! peer's atomic on this node's memory is executed by this node's CPU (`transport::exec`,
//! sequentially consistent read-modify-writes of the registered region's word), so a local
//! atomic on that word is atomic with respect to every peer's. Over verbs the NIC's atomics
//! are not atomic with the CPU's ([`transport::Capabilities::atomics_coherent_with_cpu`] is
//! false) and the transport is always used. A lock homed here is then taken and passed on
//! without posting an operation or waiting for a completion: what a lock per object costs a
//! node that homes most of its objects, and a job of one node.

use std::sync::atomic::{AtomicU64, Ordering};

use transport::{RemoteSlice, Transport};

use crate::error::Result;
use crate::runtime::Inner;

/// One word of a lock.
#[derive(Debug, Clone, Copy)]
pub(super) enum LockWord<'a> {
    /// Homed here, and the transport's atomics are the CPU's: this node's own word.
    Own(&'a AtomicU64),
    /// Anywhere else: through the transport.
    Far(RemoteSlice),
}

impl<'a> LockWord<'a> {
    /// The word `w` (as [`Inner::atomic_word`] gave it) as this node reaches it best.
    pub(super) fn of(inner: &'a Inner, w: RemoteSlice) -> LockWord<'a> {
        if w.rank().index() == inner.me && inner.cpu_atomics {
            if let Ok(word) = inner.runtime.atomic_u64(w.offset as usize) {
                return LockWord::Own(word);
            }
        }
        LockWord::Far(w)
    }

    /// Atomically adds `v`; the old value.
    ///
    /// # Errors
    /// The transport's, for a word elsewhere.
    pub(super) fn fetch_add(self, inner: &Inner, v: u64) -> Result<u64> {
        match self {
            LockWord::Own(w) => Ok(w.fetch_add(v, Ordering::SeqCst)),
            LockWord::Far(w) => Ok(inner.t.fetch_add(w, v)?),
        }
    }

    /// Adds `v` without waiting for the old value: a word elsewhere gets a posted
    /// fetch-and-add whose completion nobody waits for (the transport serves a connection's
    /// requests in order, so this node's later operations on the word come after it).
    ///
    /// # Errors
    /// The transport's, when the operation cannot be posted.
    pub(super) fn post_add(self, inner: &Inner, v: u64) -> Result<()> {
        match self {
            LockWord::Own(w) => {
                w.fetch_add(v, Ordering::SeqCst);
            }
            LockWord::Far(w) => {
                drop(
                    inner
                        .t
                        .post(transport::Op::FetchAdd { remote: w, add: v })?,
                );
            }
        }
        Ok(())
    }

    /// Reads the word (a fetch-and-add of 0 for a word elsewhere, as a peer reads it).
    ///
    /// # Errors
    /// As [`LockWord::fetch_add`].
    pub(super) fn load(self, inner: &Inner) -> Result<u64> {
        match self {
            LockWord::Own(w) => Ok(w.load(Ordering::SeqCst)),
            LockWord::Far(_) => self.fetch_add(inner, 0),
        }
    }

    /// Atomically replaces `expected` by `desired`; the old value.
    ///
    /// # Errors
    /// As [`LockWord::fetch_add`].
    pub(super) fn compare_swap(self, inner: &Inner, expected: u64, desired: u64) -> Result<u64> {
        match self {
            LockWord::Own(w) => Ok(
                match w.compare_exchange(expected, desired, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(v) | Err(v) => v,
                },
            ),
            LockWord::Far(w) => Ok(inner.t.compare_swap(w, expected, desired)?),
        }
    }
}
