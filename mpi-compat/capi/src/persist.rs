//! Persistent point-to-point requests and freeing requests (MPI-3.1 §3.9, §3.7.3).
//!
//! `MPI_Send_init`/`MPI_Recv_init` keep the arguments; each `MPI_Start` makes one send or
//! receive of them, completed by the usual `MPI_Wait`/`MPI_Test` family, after which the
//! handle stays valid (inactive) for the next start, until `MPI_Request_free`. Sends are eager:
//! a started send is complete at once, or (tcp, a full socket) when the rest of its bytes are
//! written from the buffer, as `MPI_Isend`'s; a persistent receive takes contiguous datatypes
//! only (`MPI_ERR_TYPE`), as `MPI_Irecv` does, and lands in its buffer as `MPI_Irecv`'s.

use std::ffi::{c_int, c_void};

use mpi_compat::{Source, TagMatch};

use crate::request::{CRequest, Persistent, PersistentOp};
use crate::sched::CPtr;
use crate::state::{put, with_state, CResult, Failure, State, ERR_ARG, ERR_REQUEST, ERR_TYPE};
use crate::types::count;

/// Checks the arguments common to both inits and stores the request.
///
/// # Safety
/// `request` is a valid `MPI_Request *` (null is refused).
#[allow(clippy::too_many_arguments)]
unsafe fn init(
    s: &mut State,
    buf: *const c_void,
    n: c_int,
    datatype: c_int,
    comm: c_int,
    op: PersistentOp,
    request: *mut c_int,
) -> CResult<()> {
    let dt = s.tables.datatype(datatype)?.clone();
    let count = count(n)?;
    let c = s.tables.comm(comm)?.comm.clone();
    let peer = match op {
        PersistentOp::Send { dest, tag } => {
            if tag < 0 {
                return Err(mpi_compat::Error::InvalidTag(tag).into());
            }
            Some(dest)
        }
        PersistentOp::Recv { source, tag } => {
            if let TagMatch::Tag(t) = tag {
                if t < 0 {
                    return Err(mpi_compat::Error::InvalidTag(t).into());
                }
            }
            if !dt.contiguous() {
                return Err(Failure::new(
                    ERR_TYPE,
                    "MPI_Recv_init supports contiguous datatypes only",
                ));
            }
            match source {
                Source::Rank(r) => Some(r),
                Source::Any => None,
            }
        }
    };
    if let Some(p) = peer.filter(|&p| p != mpi_compat::PROC_NULL) {
        if p < 0 || p >= c.size() {
            return Err(mpi_compat::Error::InvalidRank {
                rank: p,
                size: c.size() as usize,
            }
            .into());
        }
    }
    if buf.is_null() && count * dt.size > 0 {
        return Err(Failure::new(ERR_ARG, "a null buffer"));
    }
    let h = s.tables.handle();
    s.tables.requests.insert(
        h,
        CRequest::Persistent(Persistent {
            op,
            comm: c,
            buf: CPtr::new(buf.cast::<u8>().cast_mut()),
            count,
            dt,
            active: None,
        }),
    );
    // SAFETY: a valid `MPI_Request *` by contract (null is refused).
    let written = unsafe { put(request, h) };
    if written.is_err() {
        s.tables.requests.remove(&h);
    }
    written
}

/// `MPI_Send_init` (MPI-3.1 §3.9): a persistent standard-mode send, inactive until
/// `MPI_Start`.
#[no_mangle]
pub unsafe extern "C" fn MPI_Send_init(
    buf: *const c_void,
    n: c_int,
    datatype: c_int,
    dest: c_int,
    tag: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Send_init", Some(comm), |s| {
        let op = PersistentOp::Send { dest, tag };
        // SAFETY: `request` as the MPI contract.
        unsafe { init(s, buf, n, datatype, comm, op, request) }
    })
}

/// `MPI_Recv_init` (MPI-3.1 §3.9): a persistent receive (contiguous datatypes only), inactive
/// until `MPI_Start`. The buffer must stay valid while the request is active.
#[no_mangle]
pub unsafe extern "C" fn MPI_Recv_init(
    buf: *mut c_void,
    n: c_int,
    datatype: c_int,
    source: c_int,
    tag: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Recv_init", Some(comm), |s| {
        let op = PersistentOp::Recv {
            source: if source == -2 {
                Source::Any
            } else {
                Source::Rank(source)
            },
            tag: if tag == -1 {
                TagMatch::Any
            } else {
                TagMatch::Tag(tag)
            },
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { init(s, buf, n, datatype, comm, op, request) }
    })
}

/// Starts the persistent request `h`.
fn start(s: &mut State, h: c_int) -> CResult<()> {
    match s.tables.requests.get_mut(&h) {
        Some(CRequest::Persistent(p)) => p.start(),
        Some(_) => Err(Failure::new(
            ERR_REQUEST,
            format!("request {h} is not persistent"),
        )),
        None => Err(Failure::new(ERR_REQUEST, format!("invalid request {h}"))),
    }
}

/// `MPI_Start` (MPI-3.1 §3.9): starts an inactive persistent request (`MPI_ERR_REQUEST` for
/// an active one, or one that is not persistent).
#[no_mangle]
pub unsafe extern "C" fn MPI_Start(request: *mut c_int) -> c_int {
    with_state("MPI_Start", None, |s| {
        if request.is_null() {
            return Err(Failure::new(ERR_ARG, "a null request pointer"));
        }
        // SAFETY: not null; a valid `MPI_Request *` by contract.
        start(s, unsafe { request.read() })
    })
}

/// `MPI_Startall` (MPI-3.1 §3.9): `MPI_Start` of each request, in order; stops at the first
/// that fails.
#[no_mangle]
pub unsafe extern "C" fn MPI_Startall(n: c_int, requests: *mut c_int) -> c_int {
    with_state("MPI_Startall", None, |s| {
        let n = count(n)?;
        if n > 0 && requests.is_null() {
            return Err(Failure::new(ERR_ARG, "a null request array"));
        }
        for i in 0..n {
            // SAFETY: `requests` holds `n` handles by contract.
            let h = unsafe { requests.wrapping_add(i).read() };
            start(s, h)?;
        }
        Ok(())
    })
}

/// `MPI_Request_free` (MPI-3.1 §3.7.3): frees the handle and sets it to `MPI_REQUEST_NULL`.
/// An operation still under way completes anyway: it is progressed with the other requests
/// (by later waits and tests) and dropped at `MPI_Finalize`.
#[no_mangle]
pub unsafe extern "C" fn MPI_Request_free(request: *mut c_int) -> c_int {
    with_state("MPI_Request_free", None, |s| {
        if request.is_null() {
            return Err(Failure::new(ERR_ARG, "a null request pointer"));
        }
        // SAFETY: not null; a valid `MPI_Request *` by contract.
        let h = unsafe { request.read() };
        let r = s
            .tables
            .requests
            .remove(&h)
            .ok_or_else(|| Failure::new(ERR_REQUEST, format!("invalid request {h}")))?;
        if let Some(mut rest) = r.detach() {
            if matches!(rest.progress(false), Ok(None)) {
                s.tables.detached.push(rest);
            }
        }
        // SAFETY: as above.
        unsafe { request.write(0) };
        Ok(())
    })
}
