//! Collectives as schedules of point-to-point messages: the v/w collectives, reduce-scatter,
//! every non-blocking collective (MPI-3.1 §5.12) and the neighbourhood collectives (§7.6).
//!
//! A [`Plan`] lists what a rank sends (packed bytes to a peer) and what it receives (from a
//! peer, unpacked into the program's buffer, or kept for a reduction). [`Plan::post`] sends
//! everything at once (sends are eager: they never wait for the receiver) and posts every
//! receive, on the communicator's hidden duplicate with the collective's sequence number as
//! its tag; the [`Schedule`] it returns completes when every receive has its message, at which
//! point the received data are unpacked (or reduced, in rank order, so every rank gets the same
//! bits) into the program's buffers.
//!
//! The algorithms are direct (one round: every rank sends straight to each rank that needs its
//! data), so no send waits for a receive. That is what makes a non-blocking collective safe:
//! once a rank has started it, its part is on the wire, and the others complete it whatever
//! that rank does before its `MPI_Wait` or `MPI_Test` (more point-to-point traffic, other
//! collectives, computation). A blocking collective of this module is the same schedule,
//! waited for at once. The cost is `size - 1` messages per rank and a reduction's full vector
//! to every rank: right for the small communicators this layer runs on, not for thousands of
//! ranks.
//!
//! Arguments are checked before anything is sent; a rank given wrong arguments fails at once
//! and sends nothing (the others then wait for it, as for a rank that does not make the call:
//! an erroneous program, MPI-3.1 §5.1). A message longer than its receive is
//! `MPI_ERR_TRUNCATE` at the receiver.

use std::collections::VecDeque;
use std::ffi::c_void;

use mpi_compat::{Equivalence, Op, Rank, Request, Source, Status, TagMatch, PROC_NULL};

use crate::state::ERR_TRUNCATE;
use crate::state::{CResult, CommEntry, Failure, ERR_ARG, ERR_COUNT, ERR_INTERN, ERR_OP};
use crate::types::{with_prim, Datatype};

/// `MPI_IN_PLACE`: `(void *)-1`, never a buffer to read or write.
pub(crate) const IN_PLACE: *const c_void = usize::MAX as *const c_void;

/// A buffer of the C program that a schedule writes when it completes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CPtr(*mut u8);

// SAFETY: the pointer is only an address here; the memory is the C program's, which MPI
// requires to stay valid and untouched until the request completes, whichever thread
// completes it (the library's state, schedules included, is used under one lock).
unsafe impl Send for CPtr {}

impl CPtr {
    /// Wraps a buffer of the C program.
    pub(crate) fn new(p: *mut u8) -> CPtr {
        CPtr(p)
    }

    /// The address.
    pub(crate) fn as_ptr(self) -> *const u8 {
        self.0
    }
}

/// Where a received message goes: `count` elements of `dt` at `at`.
#[derive(Debug)]
struct Target {
    dt: Datatype,
    at: CPtr,
    count: usize,
}

/// One receive of a plan: its peer, its length, and where its data go (`None`: kept for the
/// reduction, or nothing to keep).
#[derive(Debug)]
struct Recv {
    peer: Rank,
    len: usize,
    into: Option<Target>,
}

/// What completes a schedule once every message is in.
#[derive(Debug)]
enum Finish {
    /// Each receive's data go to its target.
    Unpack,
    /// The received contributions, in order, are reduced with `op`; the result goes to the
    /// target.
    Reduce { op: Op, out: Target },
}

/// Checks that `op` is a reduction defined on `dt`'s elements (`MPI_ERR_OP`).
pub(crate) fn check_reduce_op(op: Op, dt: &Datatype) -> CResult<()> {
    if matches!(op, Op::Replace | Op::NoOp) {
        return Err(Failure::new(
            ERR_OP,
            "MPI_REPLACE and MPI_NO_OP are for accumulate only",
        ));
    }
    with_prim!(dt.prim, T => mpi_compat::datatype::check_op::<T>(op)?);
    Ok(())
}

/// What one rank sends and receives in one collective (see the module documentation).
#[derive(Debug)]
pub(crate) struct Plan {
    sends: Vec<(Rank, Vec<u8>)>,
    recvs: Vec<Recv>,
    finish: Finish,
}

/// The address `displ` elements of `extent` bytes from `buf`.
pub(crate) fn offset(buf: *const c_void, displ: isize, extent: usize) -> CResult<*mut u8> {
    let bytes = isize::try_from(extent)
        .ok()
        .and_then(|e| e.checked_mul(displ))
        .ok_or_else(|| Failure::new(ERR_COUNT, "displacement too large"))?;
    Ok(buf.cast::<u8>().cast_mut().wrapping_offset(bytes))
}

impl Plan {
    /// A plan that sends and receives nothing.
    pub(crate) fn new() -> Plan {
        Plan {
            sends: Vec::new(),
            recvs: Vec::new(),
            finish: Finish::Unpack,
        }
    }

    /// Sends `bytes` to `peer`.
    pub(crate) fn send(&mut self, peer: Rank, bytes: Vec<u8>) {
        self.sends.push((peer, bytes));
    }

    /// Sends `count` elements of `dt` at `at` to `peer` (packed now).
    ///
    /// # Safety
    /// `at` is readable over `count` extents of `dt`.
    pub(crate) unsafe fn send_block(
        &mut self,
        peer: Rank,
        dt: &Datatype,
        at: *const u8,
        count: usize,
    ) -> CResult<()> {
        // SAFETY: as this function's contract.
        let bytes = unsafe { dt.pack(at, count)? };
        self.sends.push((peer, bytes));
        Ok(())
    }

    /// Receives `count` elements of `dt` from `peer` into `at`.
    ///
    /// # Safety
    /// `at` is writable over `count` extents of `dt` until the schedule completes or is
    /// dropped, and nothing else uses that memory meanwhile (MPI's rule for receive buffers).
    pub(crate) unsafe fn recv_block(
        &mut self,
        peer: Rank,
        dt: &Datatype,
        at: *mut u8,
        count: usize,
    ) -> CResult<()> {
        let len = dt
            .size
            .checked_mul(count)
            .ok_or_else(|| Failure::new(ERR_COUNT, "receive too large"))?;
        if len > 0 && at.is_null() {
            return Err(Failure::new(ERR_ARG, "a null receive buffer"));
        }
        self.recvs.push(Recv {
            peer,
            len,
            into: Some(Target {
                dt: dt.clone(),
                at: CPtr(at),
                count,
            }),
        });
        Ok(())
    }

    /// Receives `len` bytes from `peer`, for the reduction (or, empty, as a signal).
    pub(crate) fn recv_bytes(&mut self, peer: Rank, len: usize) {
        self.recvs.push(Recv {
            peer,
            len,
            into: None,
        });
    }

    /// Makes the plan a reduction: the received contributions, in the order of the receives,
    /// reduced with `op` into `count` elements of `dt` at `at`. The operation is checked
    /// against the type here (`MPI_ERR_OP`).
    ///
    /// # Safety
    /// As [`Plan::recv_block`] for `at`.
    pub(crate) unsafe fn reduce_into(
        &mut self,
        op: Op,
        dt: &Datatype,
        at: *mut u8,
        count: usize,
    ) -> CResult<()> {
        check_reduce_op(op, dt)?;
        if count > 0 && at.is_null() {
            return Err(Failure::new(ERR_ARG, "a null receive buffer"));
        }
        self.finish = Finish::Reduce {
            op,
            out: Target {
                dt: dt.clone(),
                at: CPtr(at),
                count,
            },
        };
        Ok(())
    }

    /// Sends everything and posts every receive, on `entry`'s hidden duplicate with the next
    /// sequence number as tag. Messages to this rank itself go straight to its receives from
    /// itself, in order; `MPI_PROC_NULL` peers are skipped (their receives complete empty).
    ///
    /// # Errors
    /// Transport errors of the sends; `MPI_ERR_INTERN` when the plan receives more from this
    /// rank than it sends to it.
    pub(crate) fn post(self, entry: &mut CommEntry) -> CResult<Schedule> {
        let tag = (entry.seq & 0x7fff_ffff) as i32;
        entry.seq = entry.seq.wrapping_add(1);
        let me = entry.comm.rank();
        let mut own = VecDeque::new();
        for (peer, bytes) in self.sends {
            if peer == me {
                own.push_back(bytes);
            } else if peer != PROC_NULL {
                entry.coll.send(&bytes, peer, tag)?;
            }
        }
        let mut slots = Vec::with_capacity(self.recvs.len());
        let mut targets = Vec::with_capacity(self.recvs.len());
        for r in self.recvs {
            let slot = if r.peer == me {
                let bytes = own.pop_front().ok_or_else(|| {
                    Failure::new(ERR_INTERN, "a collective receives from itself unsent data")
                })?;
                Slot::Ready(bytes, r.len)
            } else if r.peer == PROC_NULL {
                Slot::Ready(Vec::new(), 0)
            } else {
                Slot::Waiting(OwnedRecv::post(entry, r.peer, tag, r.len)?, r.len)
            };
            slots.push(slot);
            targets.push(r.into);
        }
        Ok(Schedule {
            slots,
            targets,
            finish: Some(self.finish),
        })
    }
}

/// A receive into a buffer of its own: a request of mpi-compat borrowing a heap block that
/// this value owns and frees only after the request is gone.
#[derive(Debug)]
struct OwnedRecv {
    /// Always `Some` until drop; dropped before `buf` is freed.
    req: Option<Request<'static>>,
    /// A leaked `Box<[u8]>`, freed by `Drop`.
    buf: *mut [u8],
}

// SAFETY: `buf` is a heap block owned by this value alone (like the `Box` it came from), and
// the request is `Send`; moving both to another thread moves the ownership with them.
unsafe impl Send for OwnedRecv {}

impl OwnedRecv {
    fn post(entry: &CommEntry, peer: Rank, tag: i32, len: usize) -> CResult<OwnedRecv> {
        let buf: *mut [u8] = Box::into_raw(vec![0u8; len].into_boxed_slice());
        // SAFETY: `buf` is the live, unaliased heap block just leaked; the request borrows it
        // until `Drop` drops the request, and only then is the block freed.
        let slice: &'static mut [u8] = unsafe { &mut *buf };
        let mut me = OwnedRecv { req: None, buf };
        me.req = Some(
            entry
                .coll
                .irecv(slice, Source::Rank(peer), TagMatch::Tag(tag))?,
        );
        Ok(me)
    }

    /// Completes the receive (blocking or not); its bytes once it is complete.
    fn progress(&mut self, block: bool) -> CResult<Option<Vec<u8>>> {
        let Some(req) = self.req.as_mut() else {
            return Err(Failure::new(ERR_INTERN, "a receive without its request"));
        };
        let got = if block {
            Some(req.wait_in_place()?)
        } else {
            req.test()?
        };
        Ok(got.map(|st| {
            // SAFETY: the request is complete: it no longer writes the block (it wrote it in
            // the call above, which returned), and this shared read ends before any other use.
            let bytes = unsafe { &*self.buf };
            bytes[..st.bytes.min(bytes.len())].to_vec()
        }))
    }
}

impl Drop for OwnedRecv {
    fn drop(&mut self) {
        // The request first: dropping an unfinished one cancels it, after which nothing
        // writes the block.
        drop(self.req.take());
        // SAFETY: `buf` came from `Box::into_raw` in `post`, is freed only here, and nothing
        // borrows it any more (the request is gone).
        drop(unsafe { Box::from_raw(self.buf) });
    }
}

/// A receive of a schedule, complete (its bytes) or waiting, with the length it expects.
#[derive(Debug)]
enum Slot {
    Ready(Vec<u8>, usize),
    Waiting(OwnedRecv, usize),
}

/// A started collective: the requests of `MPI_Ixxx` and the body of the blocking calls of
/// this module.
#[derive(Debug)]
pub(crate) struct Schedule {
    slots: Vec<Slot>,
    targets: Vec<Option<Target>>,
    /// `None` once finished.
    finish: Option<Finish>,
}

/// The status of a completed collective: an empty one (MPI-3.1 §5.12: only `MPI_ERROR` is
/// meaningful).
const DONE: Status = Status {
    source: -2,
    tag: -1,
    bytes: 0,
};

impl Schedule {
    /// Drives the schedule: completes its receives (waiting for them with `block`, else as
    /// far as messages already here allow) and, once all are in, unpacks or reduces into the
    /// program's buffers. `Some` once complete (and on every later call).
    ///
    /// # Errors
    /// A receive's error (`MPI_ERR_TRUNCATE` for a message longer than expected), or the
    /// reduction's.
    pub(crate) fn progress(&mut self, block: bool) -> CResult<Option<Status>> {
        let Some(finish) = self.finish.as_ref() else {
            return Ok(Some(DONE));
        };
        let mut all = true;
        for slot in &mut self.slots {
            if let Slot::Waiting(r, len) = slot {
                match r.progress(block)? {
                    Some(bytes) => *slot = Slot::Ready(bytes, *len),
                    None => all = false,
                }
            }
        }
        if !all {
            return Ok(None);
        }
        let payloads: Vec<Vec<u8>> = std::mem::take(&mut self.slots)
            .into_iter()
            .map(|s| match s {
                Slot::Ready(b, len) if b.len() > len => Err(Failure::new(
                    ERR_TRUNCATE,
                    format!("a contribution of {} bytes for {len}", b.len()),
                )),
                Slot::Ready(b, _) => Ok(b),
                Slot::Waiting(..) => Err(Failure::new(ERR_INTERN, "a receive left waiting")),
            })
            .collect::<CResult<_>>()?;
        let result = match finish {
            Finish::Unpack => {
                for (data, t) in payloads.iter().zip(&self.targets) {
                    if let Some(t) = t {
                        // SAFETY: the target is writable over `count` extents until the
                        // schedule completes (`Plan::recv_block`'s contract).
                        unsafe { t.dt.unpack(data, t.at.0, t.count)? };
                    }
                }
                Ok(())
            }
            Finish::Reduce { op, out } => reduce(*op, out, &payloads),
        };
        self.finish = None;
        result.map(|()| Some(DONE))
    }
}

/// Reduces `payloads` (packed elements of `out`'s primitive type), in order, into `out`.
fn reduce(op: Op, out: &Target, payloads: &[Vec<u8>]) -> CResult<()> {
    let Some((first, rest)) = payloads.split_first() else {
        return Ok(());
    };
    let bytes: Vec<u8> = with_prim!(out.dt.prim, T => {
        let mut acc: Vec<T> = bytemuck::pod_collect_to_vec(first);
        for p in rest {
            let other: Vec<T> = bytemuck::pod_collect_to_vec(p);
            if other.len() != acc.len() {
                return Err(Failure::new(
                    ERR_COUNT,
                    format!("contributions of {} and {} bytes", first.len(), p.len()),
                ));
            }
            <T as Equivalence>::reduce(op, &mut acc, &other)?;
        }
        bytemuck::cast_slice(&acc).to_vec()
    });
    // SAFETY: the target is writable over `count` extents until the schedule completes
    // (`Plan::reduce_into`'s contract).
    unsafe { out.dt.unpack(&bytes, out.at.0, out.count) }
}

/// Runs `plan` on communicator `comm`: as a blocking collective (`request` `None`: posted and
/// waited for), or as a non-blocking one whose request handle is written to `*request`.
///
/// # Safety
/// `request` is `None` or a valid `MPI_Request *` (null is refused before anything is sent).
pub(crate) unsafe fn run(
    s: &mut crate::state::State,
    comm: i32,
    plan: Plan,
    request: Option<*mut i32>,
) -> CResult<()> {
    if request.is_some_and(|r| r.is_null()) {
        return Err(Failure::new(ERR_ARG, "a null request pointer"));
    }
    let mut sched = plan.post(s.tables.comm_mut(comm)?)?;
    let Some(request) = request else {
        return sched.progress(true).map(drop);
    };
    let h = s.tables.handle();
    s.tables
        .requests
        .insert(h, crate::request::CRequest::Coll(sched));
    // SAFETY: a valid `MPI_Request *` (checked not null) by contract.
    unsafe { crate::state::put(request, h) }
}
