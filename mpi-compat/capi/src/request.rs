//! The objects behind `MPI_Request` handles (MPI-3.1 §3.7.3, §3.9, §5.12): a point-to-point
//! or RMA request of mpi-compat, a collective's schedule, or a persistent request.

use mpi_compat::{Communicator, Rank, Request, Source, Status, Tag, TagMatch};

use crate::sched::{CPtr, Schedule};
use crate::state::{CResult, Failure, ERR_REQUEST};
use crate::types::Datatype;

/// What an `MPI_Request` handle stands for.
#[derive(Debug)]
pub(crate) enum CRequest {
    /// A non-blocking point-to-point or RMA call.
    Plain(Request<'static>),
    /// A non-blocking collective.
    Coll(Schedule),
    /// A persistent request (`MPI_Send_init`, `MPI_Recv_init`).
    Persistent(Persistent),
}

/// The empty status of an inactive request (MPI-3.1 §3.7.3).
pub(crate) const EMPTY: Status = Status {
    source: -2,
    tag: -1,
    bytes: 0,
};

impl CRequest {
    /// Drives the request: its status once complete (`block`: waits for that), `None` while
    /// it is not. An inactive persistent request is complete with the empty status.
    ///
    /// # Errors
    /// The operation's error.
    pub(crate) fn progress(&mut self, block: bool) -> CResult<Option<Status>> {
        match self {
            CRequest::Plain(r) => Ok(if block {
                Some(r.wait_in_place()?)
            } else {
                r.test()?
            }),
            CRequest::Coll(s) => s.progress(block),
            CRequest::Persistent(p) => {
                let Some(r) = p.active.as_mut() else {
                    return Ok(Some(EMPTY));
                };
                let got = if block {
                    Some(r.wait_in_place())
                } else {
                    r.test().transpose()
                };
                if got.is_some() {
                    // Complete (or failed): inactive again, ready for the next MPI_Start.
                    p.active = None;
                }
                Ok(got.transpose()?)
            }
        }
    }

    /// Whether completing the request leaves its handle valid (a persistent request).
    pub(crate) fn persistent(&self) -> bool {
        matches!(self, CRequest::Persistent(_))
    }

    /// The part of the request that must still complete after `MPI_Request_free`, if any.
    pub(crate) fn detach(self) -> Option<CRequest> {
        match self {
            CRequest::Persistent(p) => p.active.map(CRequest::Plain),
            other => Some(other),
        }
    }
}

/// A persistent point-to-point request: the arguments of `MPI_Send_init`/`MPI_Recv_init`
/// (MPI-3.1 §3.9) and the operation of its current activation, if any.
#[derive(Debug)]
pub(crate) struct Persistent {
    pub(crate) op: PersistentOp,
    pub(crate) comm: Communicator,
    pub(crate) buf: CPtr,
    pub(crate) count: usize,
    pub(crate) dt: Datatype,
    pub(crate) active: Option<Request<'static>>,
}

/// The kind of a persistent request, with its peer and tag.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PersistentOp {
    Send { dest: Rank, tag: Tag },
    Recv { source: Source, tag: TagMatch },
}

impl Persistent {
    /// `MPI_Start`: starts one activation. A send is eager: it is complete when this returns,
    /// or when what a full tcp socket did not take is written from the buffer.
    ///
    /// # Errors
    /// `MPI_ERR_REQUEST` when the request is active; the errors of the send or receive.
    pub(crate) fn start(&mut self) -> CResult<()> {
        if self.active.is_some() {
            return Err(Failure::new(ERR_REQUEST, "MPI_Start of an active request"));
        }
        let r = match self.op {
            PersistentOp::Send { dest, tag } => {
                // SAFETY: `buf` holds `count` elements of `dt` (`MPI_Send_init`'s contract,
                // which lasts while the request exists).
                let data = unsafe { self.dt.view(self.buf.as_ptr(), self.count)? };
                match data {
                    // SAFETY: MPI requires the buffer to stay valid and untouched by the
                    // program while the request is active; the activation lives in the
                    // request until it completes (freed early, among the detached ones).
                    std::borrow::Cow::Borrowed(b) => unsafe { self.comm.isend_lent(b, dest, tag)? },
                    std::borrow::Cow::Owned(packed) => {
                        self.comm.send(&packed, dest, tag)?;
                        Request::completed(Status {
                            source: self.comm.rank(),
                            tag,
                            bytes: packed.len(),
                        })
                    }
                }
            }
            PersistentOp::Recv { source, tag } => {
                let len = self.count * self.dt.size;
                let b: &'static mut [u8] = if len == 0 {
                    &mut []
                } else {
                    // SAFETY: `MPI_Recv_init` checked the buffer (not null, contiguous type);
                    // MPI requires it to hold `count` elements and to stay valid, untouched by
                    // the program, while the request is active; the request lives in the
                    // table until it completes (or until MPI_Finalize drops it, after which
                    // nothing writes into it).
                    unsafe { std::slice::from_raw_parts_mut(self.buf.as_ptr().cast_mut(), len) }
                };
                // SAFETY: as above: the buffer is the request's until it completes.
                unsafe { self.comm.irecv_landed(b, source, tag)? }
            }
        };
        self.active = Some(r);
        Ok(())
    }
}
