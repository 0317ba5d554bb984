//! Requests of non-blocking point-to-point calls (MPI-3.1 §3.7 "Nonblocking Communication").
//!
//! A [`Request`] borrows its buffer for as long as it lives, so the buffer cannot be read,
//! moved or freed while the operation may still use it: rsmpi's scopes give the same
//! guarantee. Here a receive's bytes are copied into the buffer by the call that completes the
//! request (`wait`, `test`, [`wait_all`]); nothing writes into the buffer behind the program's
//! back, so dropping an unfinished request is safe: it cancels the receive (`MPI_Cancel`,
//! §3.8.4) and leaves the buffer as it was. A receive that a message already matched cannot be
//! cancelled (giving its message to another receive could let a later message of the same
//! sender overtake it, §3.5): dropping it completes it, and the message is discarded.
//! `Drop` never blocks and never panics.

use crate::comm::{Communicator, Rank, Status, Tag};
use crate::datatype::fill;
use crate::error::{Error, Result};

#[derive(Debug)]
enum State<'a> {
    /// Complete; the status is kept for repeated tests.
    Done(Status),
    /// A posted receive.
    Receiving {
        comm: Communicator,
        id: u64,
        buf: &'a mut [u8],
    },
    /// Waited for, or its receive failed.
    Finished,
}

/// An outstanding non-blocking operation: `MPI_Request`.
#[derive(Debug)]
#[must_use = "a request must be waited for or tested; dropping it cancels a receive \
              (or discards its message)"]
pub struct Request<'a> {
    state: State<'a>,
}

impl<'a> Request<'a> {
    pub(crate) fn sent(bytes: usize, source: Rank, tag: Tag) -> Request<'a> {
        Request {
            state: State::Done(Status { source, tag, bytes }),
        }
    }

    pub(crate) fn receive(comm: Communicator, id: u64, buf: &'a mut [u8]) -> Request<'a> {
        Request {
            state: State::Receiving { comm, id, buf },
        }
    }

    /// A request that is already complete with `status` (for layers that send by other
    /// means, such as the C API's packed sends).
    pub fn completed(status: Status) -> Request<'static> {
        Request {
            state: State::Done(status),
        }
    }

    /// [`Request::wait`] without consuming the request (it stays complete, and later waits
    /// or tests return the same status).
    ///
    /// # Errors
    /// As [`Request::wait`].
    pub fn wait_in_place(&mut self) -> Result<Status> {
        self.complete(true)?
            .ok_or_else(|| Error::InvalidArgument("wait returned without a message".into()))
    }

    /// `MPI_Wait` (MPI-3.1 §3.7.3): blocks until the operation is complete. For a send, the
    /// status carries this rank, the tag and the bytes sent.
    ///
    /// # Errors
    /// [`Error::Truncate`] when the message is longer than the buffer (the message is
    /// consumed, the buffer holds its first bytes); [`Error::PeerLost`] when the awaited
    /// sender is gone.
    pub fn wait(mut self) -> Result<Status> {
        self.complete(true)?
            .ok_or_else(|| Error::InvalidArgument("wait returned without a message".into()))
    }

    /// `MPI_Test` (MPI-3.1 §3.7.3): completes the operation if it can without blocking;
    /// returns its status then, `None` otherwise. May be called again after it returned a
    /// status, and returns the same one.
    ///
    /// # Errors
    /// As [`Request::wait`].
    pub fn test(&mut self) -> Result<Option<Status>> {
        self.complete(false)
    }

    /// Whether the request has completed (without driving progress).
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Done(_))
    }

    fn complete(&mut self, block: bool) -> Result<Option<Status>> {
        match &mut self.state {
            State::Done(s) => return Ok(Some(*s)),
            State::Finished => {
                return Err(Error::InvalidArgument(
                    "the request already completed with an error".into(),
                ))
            }
            State::Receiving { .. } => {}
        }
        let State::Receiving { comm, id, buf } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Ok(None);
        };
        match comm.progress(id, block) {
            Ok(Some(m)) => {
                let status = comm.status_of(&m);
                let payload = m.payload();
                if payload.len() > buf.len() {
                    fill(buf, &payload[..buf.len()]);
                    return Err(Error::Truncate {
                        got: payload.len(),
                        room: buf.len(),
                    });
                }
                fill(buf, payload);
                self.state = State::Done(status);
                Ok(Some(status))
            }
            Ok(None) => {
                self.state = State::Receiving { comm, id, buf };
                Ok(None)
            }
            Err(e) => {
                comm.cancel(id);
                Err(e)
            }
        }
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        if let State::Receiving { comm, id, .. } = &self.state {
            comm.cancel(*id);
        }
    }
}

/// `MPI_Waitall` (MPI-3.1 §3.7.5): waits for every request, in order; returns their
/// statuses.
///
/// # Errors
/// The first error; the requests after it are still waited for (so none is left half done),
/// and the first error is returned.
pub fn wait_all(requests: &mut [Request<'_>]) -> Result<Vec<Status>> {
    let mut out = Vec::with_capacity(requests.len());
    let mut first = None;
    for r in requests.iter_mut() {
        match r.complete(true) {
            Ok(Some(s)) => out.push(s),
            Ok(None) => {}
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// `MPI_Testall` (MPI-3.1 §3.7.5): the statuses when every request is complete, `None` when
/// some is not yet (those that could be completed are).
///
/// # Errors
/// As [`Request::test`].
pub fn test_all(requests: &mut [Request<'_>]) -> Result<Option<Vec<Status>>> {
    let mut out = Vec::with_capacity(requests.len());
    for r in requests.iter_mut() {
        if let Some(s) = r.complete(false)? {
            out.push(s);
        }
    }
    Ok((out.len() == requests.len()).then_some(out))
}

/// `MPI_Testany` (MPI-3.1 §3.7.5): completes one request if one can be completed without
/// blocking, removes it from `requests` and returns its index (before the removal) and
/// status; `None` when none is complete yet (or `requests` is empty). The requests are
/// tried in order.
///
/// # Errors
/// The error of the request that completed with one (it is removed too).
pub fn test_any(requests: &mut Vec<Request<'_>>) -> Result<Option<(usize, Status)>> {
    for i in 0..requests.len() {
        match requests[i].complete(false) {
            Ok(Some(s)) => {
                drop(requests.remove(i));
                return Ok(Some((i, s)));
            }
            Ok(None) => {}
            Err(e) => {
                drop(requests.remove(i));
                return Err(e);
            }
        }
    }
    Ok(None)
}

/// `MPI_Waitany` (MPI-3.1 §3.7.5): blocks until one of `requests` is complete, removes it
/// and returns its index (before the removal) and status, as rsmpi's `wait_any` does;
/// `None` (`MPI_UNDEFINED`) when `requests` is empty. The requests are polled in turn
/// (blocking in the transport when only one is left unfinished).
///
/// # Errors
/// As [`test_any`].
pub fn wait_any(requests: &mut Vec<Request<'_>>) -> Result<Option<(usize, Status)>> {
    if requests.is_empty() {
        return Ok(None);
    }
    loop {
        if let Some(done) = test_any(requests)? {
            return Ok(Some(done));
        }
        if let [only] = requests.as_mut_slice() {
            let r = only.complete(true);
            drop(requests.remove(0));
            return r.map(|s| s.map(|s| (0, s)));
        }
        std::hint::spin_loop();
    }
}
