//! Collective calls (MPI-3.1 chapter 5). Buffers are packed into contiguous bytes (so any
//! committed datatype works and C buffers need no particular alignment), the collective of
//! `mpi-compat` runs on them, and the result is unpacked.

use std::ffi::{c_int, c_void};

use bytemuck::Zeroable;
use mpi_compat::Equivalence;

use crate::state::{with_state, CResult, Failure, ERR_COUNT};
use crate::types::{count, op, with_prim, Datatype};

const IN_PLACE: *const c_void = usize::MAX as *const c_void;

/// `MPI_Barrier` (MPI-3.1 §5.3).
#[no_mangle]
pub unsafe extern "C" fn MPI_Barrier(comm: c_int) -> c_int {
    with_state("MPI_Barrier", Some(comm), |s| {
        s.tables.comm(comm)?.comm.barrier()?;
        Ok(())
    })
}

/// `MPI_Bcast` (MPI-3.1 §5.4).
#[no_mangle]
pub unsafe extern "C" fn MPI_Bcast(
    buffer: *mut c_void,
    n: c_int,
    datatype: c_int,
    root: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Bcast", Some(comm), |s| {
        let dt = s.tables.datatype(datatype)?;
        let c = &s.tables.comm(comm)?.comm;
        let n = count(n)?;
        let mut data = if c.rank() == root {
            // SAFETY: `buffer` holds `n` elements by contract.
            unsafe { dt.pack(buffer.cast(), n)? }
        } else {
            vec![0u8; n * dt.size]
        };
        c.broadcast(&mut data, root)?;
        // SAFETY: `buffer` holds `n` elements by contract.
        unsafe { dt.unpack(&data, buffer.cast(), n) }
    })
}

/// Elements of the datatype's primitive type, from packed bytes.
fn elements<T: Equivalence>(bytes: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(bytes)
}

#[allow(clippy::too_many_arguments)]
fn reduce_common(
    name: &'static str,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    n: c_int,
    datatype: c_int,
    o: c_int,
    root: Option<c_int>,
    comm: c_int,
) -> c_int {
    with_state(name, Some(comm), |s| {
        let dt: Datatype = s.tables.datatype(datatype)?.clone();
        let op = op(o)?;
        let c = &s.tables.comm(comm)?.comm;
        let n = count(n)?;
        let at_root = root.is_none_or(|r| r == c.rank());
        let src = if sendbuf == IN_PLACE {
            recvbuf.cast_const()
        } else {
            sendbuf
        };
        // SAFETY: the send buffer (or, in place, the receive buffer) holds `n` elements.
        let send = unsafe { dt.pack(src.cast(), n)? };
        let result: Vec<u8> = with_prim!(dt.prim, T => {
            let mine: Vec<T> = elements(&send);
            let mut out = vec![T::zeroed(); mine.len()];
            match root {
                Some(r) => c.reduce(&mine, &mut out, op, r)?,
                None => c.all_reduce(&mine, &mut out, op)?,
            }
            bytemuck::cast_slice(&out).to_vec()
        });
        if at_root {
            // SAFETY: the receive buffer holds `n` elements at the root (every rank for
            // all-reduce) by contract.
            unsafe { dt.unpack(&result, recvbuf.cast(), n)? };
        }
        Ok(())
    })
}

/// `MPI_Reduce` (MPI-3.1 §5.9.1); `MPI_IN_PLACE` at the root.
#[no_mangle]
pub unsafe extern "C" fn MPI_Reduce(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    n: c_int,
    datatype: c_int,
    o: c_int,
    root: c_int,
    comm: c_int,
) -> c_int {
    reduce_common(
        "MPI_Reduce",
        sendbuf,
        recvbuf,
        n,
        datatype,
        o,
        Some(root),
        comm,
    )
}

/// `MPI_Allreduce` (MPI-3.1 §5.9.6); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Allreduce(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    n: c_int,
    datatype: c_int,
    o: c_int,
    comm: c_int,
) -> c_int {
    reduce_common(
        "MPI_Allreduce",
        sendbuf,
        recvbuf,
        n,
        datatype,
        o,
        None,
        comm,
    )
}

/// Checks that a send and a receive signature carry the same bytes.
fn same_bytes(sent: usize, recv: usize) -> CResult<()> {
    if sent == recv {
        Ok(())
    } else {
        Err(Failure::new(
            ERR_COUNT,
            format!("type signatures differ: {sent} bytes sent, {recv} expected"),
        ))
    }
}

/// `MPI_Gather` (MPI-3.1 §5.5).
#[no_mangle]
pub unsafe extern "C" fn MPI_Gather(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Gather", Some(comm), |s| {
        let c = &s.tables.comm(comm)?.comm;
        let st = s.tables.datatype(stype)?;
        // SAFETY: `sendbuf` holds `scount` elements by contract.
        let send = unsafe { st.pack(sendbuf.cast(), count(scount)?)? };
        if c.rank() != root {
            return Ok(c.gather(&send, &mut [], root)?);
        }
        let rt = s.tables.datatype(rtype)?;
        let rn = count(rcount)?;
        same_bytes(send.len(), rn * rt.size)?;
        let mut all = vec![0u8; send.len() * c.size() as usize];
        c.gather(&send, &mut all, root)?;
        // SAFETY: at the root `recvbuf` holds size × `rcount` elements by contract.
        unsafe { rt.unpack(&all, recvbuf.cast(), rn * c.size() as usize) }
    })
}

/// `MPI_Allgather` (MPI-3.1 §5.7).
#[no_mangle]
pub unsafe extern "C" fn MPI_Allgather(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Allgather", Some(comm), |s| {
        let c = &s.tables.comm(comm)?.comm;
        let st = s.tables.datatype(stype)?;
        let rt = s.tables.datatype(rtype)?;
        // SAFETY: `sendbuf` holds `scount` elements by contract.
        let send = unsafe { st.pack(sendbuf.cast(), count(scount)?)? };
        let rn = count(rcount)?;
        same_bytes(send.len(), rn * rt.size)?;
        let mut all = vec![0u8; send.len() * c.size() as usize];
        c.all_gather(&send, &mut all)?;
        // SAFETY: `recvbuf` holds size × `rcount` elements by contract.
        unsafe { rt.unpack(&all, recvbuf.cast(), rn * c.size() as usize) }
    })
}

/// `MPI_Scatter` (MPI-3.1 §5.6).
#[no_mangle]
pub unsafe extern "C" fn MPI_Scatter(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Scatter", Some(comm), |s| {
        let c = &s.tables.comm(comm)?.comm;
        let rt = s.tables.datatype(rtype)?;
        let rn = count(rcount)?;
        let send = if c.rank() == root {
            let st = s.tables.datatype(stype)?;
            let sn = count(scount)?;
            same_bytes(sn * st.size, rn * rt.size)?;
            // SAFETY: at the root `sendbuf` holds size × `scount` elements by contract.
            unsafe { st.pack(sendbuf.cast(), sn * c.size() as usize)? }
        } else {
            Vec::new()
        };
        let mut mine = vec![0u8; rn * rt.size];
        c.scatter(&send, &mut mine, root)?;
        // SAFETY: `recvbuf` holds `rcount` elements by contract.
        unsafe { rt.unpack(&mine, recvbuf.cast(), rn) }
    })
}

/// `MPI_Alltoall` (MPI-3.1 §5.8).
#[no_mangle]
pub unsafe extern "C" fn MPI_Alltoall(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Alltoall", Some(comm), |s| {
        let c = &s.tables.comm(comm)?.comm;
        let n = c.size() as usize;
        let st = s.tables.datatype(stype)?;
        let rt = s.tables.datatype(rtype)?;
        let (sn, rn) = (count(scount)?, count(rcount)?);
        same_bytes(sn * st.size, rn * rt.size)?;
        // SAFETY: `sendbuf` holds size × `scount` elements by contract.
        let send = unsafe { st.pack(sendbuf.cast(), sn * n)? };
        let mut all = vec![0u8; send.len()];
        c.all_to_all(&send, &mut all)?;
        // SAFETY: `recvbuf` holds size × `rcount` elements by contract.
        unsafe { rt.unpack(&all, recvbuf.cast(), rn * n) }
    })
}
