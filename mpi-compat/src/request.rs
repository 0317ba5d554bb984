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

use std::time::Duration;

use transport::Transport;

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
    /// A send whose bytes the transport is still writing from the caller's buffer
    /// ([`Communicator::isend_lent`]).
    Sending {
        done: transport::Completion,
        status: Status,
    },
    /// A receive whose message lands in its buffer (`Communicator::irecv_landed`).
    Landed {
        comm: Communicator,
        landing: transport::landing::Landing,
        /// The sender, as a rank of `comm`.
        source: Rank,
        /// The buffer's size.
        room: usize,
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

    pub(crate) fn sending(done: transport::Completion, status: Status) -> Request<'static> {
        Request {
            state: State::Sending { done, status },
        }
    }

    pub(crate) fn landed(
        comm: Communicator,
        landing: transport::landing::Landing,
        source: Rank,
        room: usize,
    ) -> Request<'static> {
        Request {
            state: State::Landed {
                comm,
                landing,
                source,
                room,
            },
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

    /// The completion of a send still being written.
    fn send_in_flight(&self) -> Option<&transport::Completion> {
        match &self.state {
            State::Sending { done, .. } => Some(done),
            _ => None,
        }
    }

    /// The communicator and landing of a landed receive not complete yet.
    fn landing(&self) -> Option<(&Communicator, &transport::landing::Landing)> {
        match &self.state {
            State::Landed { comm, landing, .. } => Some((comm, landing)),
            _ => None,
        }
    }

    /// The communicator and id of a receive not complete yet.
    fn receiving(&self) -> Option<(&Communicator, u64)> {
        match &self.state {
            State::Receiving { comm, id, .. } => Some((comm, *id)),
            _ => None,
        }
    }

    fn complete(&mut self, block: bool) -> Result<Option<Status>> {
        match &mut self.state {
            State::Done(s) => return Ok(Some(*s)),
            State::Finished => {
                return Err(Error::InvalidArgument(
                    "the request already completed with an error".into(),
                ))
            }
            State::Sending { done, status } => {
                if !block && !done.is_done() {
                    return Ok(None);
                }
                let got = done.wait().map(|_| *status);
                self.state = match got {
                    Ok(s) => State::Done(s),
                    Err(_) => State::Finished,
                };
                return got.map(Some).map_err(Error::from);
            }
            State::Landed { landing, .. } => {
                if !block && !landing.completion.is_done() {
                    return Ok(None);
                }
                return self.finish_landed();
            }
            State::Receiving { .. } => {}
        }
        let State::Receiving { comm, id, buf } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Ok(None);
        };
        if block {
            // The fast way first: the message straight from the transport into `buf`.
            match comm.receive_lent(id, buf) {
                Ok(Some(status)) => {
                    self.state = State::Done(status);
                    return Ok(Some(status));
                }
                Ok(None) => {}
                Err(e) => {
                    comm.cancel(id);
                    return Err(e);
                }
            }
        }
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

impl Request<'_> {
    /// Completes a landed receive whose landing finished (or waits for it).
    fn finish_landed(&mut self) -> Result<Option<Status>> {
        let State::Landed {
            landing,
            source,
            room,
            ..
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Ok(None);
        };
        let len = landing.completion.wait()? as usize;
        let head = landing.head();
        let tag = crate::comm::header_tag(&head)
            .ok_or_else(|| Error::InvalidArgument("a landed message without its header".into()))?;
        let bytes = len.saturating_sub(head.len());
        if bytes > room {
            return Err(Error::Truncate { got: bytes, room });
        }
        let status = Status { source, tag, bytes };
        self.state = State::Done(status);
        Ok(Some(status))
    }
}

impl Drop for Request<'_> {
    fn drop(&mut self) {
        match &self.state {
            State::Receiving { comm, id, .. } => {
                comm.cancel(*id);
            }
            // Withdrawn unless a message already took it (then it completes unobserved).
            State::Landed { comm, landing, .. } => {
                comm.transport().unland(landing);
            }
            _ => {}
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

/// The error of the request that [`test_any`] or [`wait_any`] completed (it is removed from
/// the list, like a request that completes normally): `MPI_Testany`/`MPI_Waitany` set
/// `*index` then too. Converts into [`Error`] for `?`.
#[derive(Debug, thiserror::Error)]
#[error("request {index}: {error}")]
pub struct RequestFailed {
    /// The request's position in the list (before its removal).
    pub index: usize,
    /// Its error.
    #[source]
    pub error: Error,
}

impl From<RequestFailed> for Error {
    fn from(e: RequestFailed) -> Error {
        e.error
    }
}

/// Empty polls of every request before [`wait_any_in_place`] blocks between polls.
const SPIN_POLLS: u32 = 16;
/// How long [`wait_any_in_place`] blocks between polls when every unfinished receive is on
/// one communicator (it wakes at once when a message arrives there).
const ONE_COMMUNICATOR_SLICE: Duration = Duration::from_millis(100);
/// The same when unfinished receives are on several communicators (it listens on one).
const SEVERAL_COMMUNICATORS_SLICE: Duration = Duration::from_millis(1);

/// `MPI_Testany` (MPI-3.1 §3.7.5): completes one request if one can be completed without
/// blocking, removes it from `requests` and returns its index (before the removal) and
/// status; `None` when none is complete yet (or `requests` is empty). The requests are
/// tried in order.
///
/// # Errors
/// [`RequestFailed`]: the index and error of the request that completed with one (it is
/// removed too).
pub fn test_any(
    requests: &mut Vec<Request<'_>>,
) -> std::result::Result<Option<(usize, Status)>, RequestFailed> {
    for i in 0..requests.len() {
        let got = requests[i].complete(false);
        if let Some(done) = take_completed(requests, i, got)? {
            return Ok(Some(done));
        }
    }
    Ok(None)
}

/// Removes request `i` if `got` completed it; its index and status, or its error.
fn take_completed(
    requests: &mut Vec<Request<'_>>,
    i: usize,
    got: Result<Option<Status>>,
) -> std::result::Result<Option<(usize, Status)>, RequestFailed> {
    match got {
        Ok(None) => Ok(None),
        Ok(Some(s)) => {
            drop(requests.remove(i));
            Ok(Some((i, s)))
        }
        Err(error) => {
            drop(requests.remove(i));
            Err(RequestFailed { index: i, error })
        }
    }
}

/// `MPI_Waitany` (MPI-3.1 §3.7.5): blocks until one of `requests` is complete, removes it
/// and returns its index (before the removal) and status, as rsmpi's `wait_any` does;
/// `None` (`MPI_UNDEFINED`) when `requests` is empty. Waits as [`wait_any_in_place`].
///
/// # Errors
/// As [`test_any`].
pub fn wait_any(
    requests: &mut Vec<Request<'_>>,
) -> std::result::Result<Option<(usize, Status)>, RequestFailed> {
    let mut refs: Vec<&mut Request<'_>> = requests.iter_mut().collect();
    let Some((i, got)) = wait_any_in_place(&mut refs) else {
        return Ok(None);
    };
    drop(refs);
    take_completed(requests, i, got.map(Some))
}

/// [`wait_any`] for requests kept elsewhere (the C API keeps them in a table): blocks until
/// one of `requests` is complete and returns its position and outcome; the request stays
/// where it is (complete, or finished with its error). `None` when `requests` is empty.
///
/// The requests are polled in turn; when only one is unfinished, this blocks on it. After a
/// few empty polls it blocks between polls until a message arrives for the communicator of
/// the first unfinished receive (or a bounded slice passes), so it never spins against the
/// threads that make progress.
pub fn wait_any_in_place(requests: &mut [&mut Request<'_>]) -> Option<(usize, Result<Status>)> {
    if requests.is_empty() {
        return None;
    }
    let mut polls = 0u32;
    loop {
        let mut unfinished = Vec::new();
        for (i, r) in requests.iter_mut().enumerate() {
            match r.complete(false) {
                Ok(Some(s)) => return Some((i, Ok(s))),
                Ok(None) => unfinished.push(i),
                Err(e) => return Some((i, Err(e))),
            }
        }
        if let [only] = unfinished[..] {
            let got = requests[only].complete(true).and_then(|s| {
                s.ok_or_else(|| Error::InvalidArgument("wait returned without a message".into()))
            });
            return Some((only, got));
        }
        polls += 1;
        if polls < SPIN_POLLS {
            std::hint::spin_loop();
            continue;
        }
        let receives: Vec<(&Communicator, u64)> = unfinished
            .iter()
            .filter_map(|&i| requests[i].receiving())
            .collect();
        let landed: Vec<(&Communicator, &transport::landing::Landing)> = unfinished
            .iter()
            .filter_map(|&i| requests[i].landing())
            .collect();
        let Some(&(comm, _)) = receives.first() else {
            if let Some(&(comm, _)) = landed.first() {
                // Receives whose messages land: asleep until one of them has.
                let all: Vec<&transport::landing::Landing> = landed.iter().map(|l| l.1).collect();
                comm.transport().wait_landed(&all, ONE_COMMUNICATOR_SLICE);
                continue;
            }
            // Sends still being written: they finish without anything from here; asleep
            // until the first one has (or a slice passes, for the others).
            if let Some(done) = unfinished
                .iter()
                .find_map(|&i| requests[i].send_in_flight())
            {
                done.sleep_timeout(SEVERAL_COMMUNICATORS_SLICE);
            } else {
                std::thread::yield_now();
            }
            continue;
        };
        let slice = if landed.is_empty() {
            None
        } else {
            // Some receives land: none of them wakes the wait below.
            Some(SEVERAL_COMMUNICATORS_SLICE)
        };
        let ids: Vec<u64> = receives
            .iter()
            .filter(|(c, _)| c.same_context(comm))
            .map(|&(_, id)| id)
            .collect();
        let slice = slice.unwrap_or(if ids.len() == receives.len() {
            ONE_COMMUNICATOR_SLICE
        } else {
            SEVERAL_COMMUNICATORS_SLICE
        });
        comm.await_any(&ids, slice);
    }
}
