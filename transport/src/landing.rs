//! Landing places for messages (`Transport::land`): a receiver that knows where the next
//! message from a peer goes (an MPI receive posted before its message arrived) offers that
//! memory, and the backend puts the message's payload there as it arrives, instead of into a
//! buffer of its own that the receiver then copies out. Over tcp a large payload is read from
//! the socket straight into the offered memory.
//!
//! A landing takes the first message from its peer with its tag that arrives after it was
//! offered and that its `accept` accepts (given the message's first `head` bytes: mpi-compat's
//! MPI tag), in arrival order among the landings of that peer and tag, before any receive
//! from the queue would; messages it does not accept are queued as usual. It is offered only
//! when no queued message would be accepted (that one is older, and the receiver must take it
//! first), so a message never overtakes another for its receiver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::completion::{Completer, Completion};
use crate::error::Error;
use crate::types::{Rank, Tag};

/// Decides, given a message's first `head` bytes, whether a landing takes it.
pub type Accept = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// The receiver's handle of an offered landing place: wait for [`Landing::completion`], then
/// read the message's head with [`Landing::head`].
#[derive(Debug)]
pub struct Landing {
    pub(crate) id: u64,
    /// Finishes with the payload's whole length (head included) once it is in place, or
    /// fails (nothing written any more) when the peer is lost first.
    pub completion: Completion,
    head: Arc<Mutex<Vec<u8>>>,
}

impl Landing {
    /// The first `head` bytes of the message that landed (empty before it did).
    pub fn head(&self) -> Vec<u8> {
        self.head.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The receiver's memory, lent until the landing finishes (`Transport::land`'s contract).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LentMut {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a pointer to memory the receiver gave up until the landing finishes; only the one
// thread that places the message (holding the landing, which is taken out of the table
// exactly once) writes through it.
unsafe impl Send for LentMut {}
// SAFETY: as for `Send`: shared references only read the pointer's value.
unsafe impl Sync for LentMut {}

impl LentMut {
    /// Where byte `at` of the destination goes (`at <= len`).
    pub(crate) fn at(&self, at: usize) -> *mut u8 {
        self.ptr.wrapping_add(at)
    }

    /// The destination's size.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// An offered landing place, kept by the backend until a message takes it.
#[derive(Debug)]
pub(crate) struct Offer {
    pub(crate) id: u64,
    pub(crate) from: Rank,
    pub(crate) tag: Tag,
    head_len: usize,
    accept: AcceptBox,
    dest: LentMut,
    done: Completer,
    head: Arc<Mutex<Vec<u8>>>,
}

/// [`Accept`], printable.
struct AcceptBox(Accept);

impl std::fmt::Debug for AcceptBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Accept")
    }
}

impl Offer {
    /// A landing place for `dest` and the receiver's handle of it, which `completion` (made
    /// with `done`) finishes.
    ///
    /// # Safety
    /// `dest` stays valid for writes, and nobody else reads or writes it, until the returned
    /// landing's completion finishes or [`Offer`] is dropped unused (withdrawn).
    pub(crate) unsafe fn new(
        from: Rank,
        tag: Tag,
        head_len: usize,
        accept: Accept,
        dest: &mut [u8],
        (completion, done): (Completion, Completer),
    ) -> (Offer, Landing) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let head = Arc::new(Mutex::new(Vec::new()));
        let offer = Offer {
            id,
            from,
            tag,
            head_len,
            accept: AcceptBox(accept),
            dest: LentMut {
                ptr: dest.as_mut_ptr(),
                len: dest.len(),
            },
            done,
            head: Arc::clone(&head),
        };
        (
            offer,
            Landing {
                id,
                completion,
                head,
            },
        )
    }

    /// Whether this landing takes a message from `from` with `tag` whose payload starts with
    /// `start` (at least the head's length of it; a shorter payload is never taken).
    pub(crate) fn takes(&self, from: Rank, tag: Tag, start: &[u8]) -> bool {
        from == self.from
            && tag == self.tag
            && start.len() >= self.head_len
            && (self.accept.0)(&start[..self.head_len])
    }

    /// The message's head length.
    pub(crate) fn head_len(&self) -> usize {
        self.head_len
    }

    /// Where the payload after the head goes.
    pub(crate) fn dest(&self) -> LentMut {
        self.dest
    }

    /// Records the head (the payload's first bytes, at least `head_len` of them).
    pub(crate) fn set_head(&self, start: &[u8]) {
        let mut h = self.head.lock().unwrap_or_else(|e| e.into_inner());
        h.clear();
        h.extend_from_slice(&start[..self.head_len.min(start.len())]);
    }

    /// Places a whole payload that is in memory: its head, then as much of the rest as the
    /// destination holds; finishes the landing with the payload's length.
    pub(crate) fn fill(self, payload: &[u8]) {
        self.set_head(payload);
        let body = &payload[self.head_len.min(payload.len())..];
        let n = body.len().min(self.dest.len);
        if n > 0 {
            // SAFETY: `dest` is valid for `dest.len >= n` bytes of writes and nobody else
            // touches it until the landing finishes (`Offer::new`'s contract); `body` is
            // another allocation (the receiver's memory is never a payload buffer).
            unsafe { std::ptr::copy_nonoverlapping(body.as_ptr(), self.dest.ptr, n) };
        }
        self.finish(payload.len());
    }

    /// Finishes the landing: the payload (`len` bytes, head included) is in place.
    pub(crate) fn finish(self, len: usize) {
        self.done.complete(len as u64);
    }

    /// Fails the landing: nothing is written into its destination any more.
    pub(crate) fn fail(self, error: Error) {
        self.done.fail(error);
    }
}
