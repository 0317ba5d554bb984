//! Collective calls (MPI-3.1 chapter 5). Broadcasts, all-gathers and all-to-alls of contiguous
//! datatypes (with distinct buffers), and reductions of one whose buffers are aligned for its
//! element type, run on the C buffers in place;
//! otherwise buffers are packed into contiguous bytes (so any committed datatype works and C
//! buffers need no particular alignment), the collective of `mpi-compat` runs on them, and the
//! result is unpacked.

use std::ffi::{c_int, c_void};

use mpi_compat::{Communicator, Equivalence};

use crate::state::{with_comm, CResult, Failure, ERR_ARG, ERR_COUNT};
use crate::types::{count, op, with_prim, Datatype};

const IN_PLACE: *const c_void = usize::MAX as *const c_void;

/// Refuses `MPI_IN_PLACE` where the call does not allow it (it is `(void *)-1`, never a
/// buffer to read or write).
fn not_in_place(buf: *const c_void, what: &str) -> CResult<()> {
    if buf == IN_PLACE {
        Err(Failure::new(
            ERR_ARG,
            format!("MPI_IN_PLACE is not allowed as the {what} here"),
        ))
    } else {
        Ok(())
    }
}

/// Packs block `index` (of `n` elements of `dt`) of `buf`: a rank's own contribution when
/// it passes `MPI_IN_PLACE`.
///
/// # Safety
/// `buf` must be readable over `(index + 1) × n` extents of `dt`.
unsafe fn pack_block(
    dt: &Datatype,
    buf: *const c_void,
    index: usize,
    n: usize,
) -> CResult<Vec<u8>> {
    let off = index
        .checked_mul(n)
        .and_then(|e| e.checked_mul(dt.extent))
        .ok_or_else(|| Failure::new(ERR_COUNT, "receive buffer too large"))?;
    // SAFETY: block `index` lies inside the extents the caller vouches for.
    unsafe { dt.pack(buf.cast::<u8>().wrapping_add(off), n) }
}

/// `MPI_Barrier` (MPI-3.1 §5.3).
#[no_mangle]
pub unsafe extern "C" fn MPI_Barrier(comm: c_int) -> c_int {
    with_comm("MPI_Barrier", comm, &[], |s| {
        s.comm.barrier()?;
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
    with_comm("MPI_Bcast", comm, &[datatype], |s| {
        let dt = s.datatype(datatype)?;
        let c = &s.comm;
        let n = count(n)?;
        not_in_place(buffer, "buffer")?;
        if dt.contiguous() {
            let len = n
                .checked_mul(dt.size)
                .ok_or_else(|| Failure::new(ERR_COUNT, "broadcast too large"))?;
            if len == 0 {
                return Ok(c.broadcast::<u8>(&mut [], root)?);
            }
            if buffer.is_null() {
                return Err(Failure::new(ERR_ARG, "a null buffer"));
            }
            // SAFETY: not null; `buffer` holds `n` elements (`len` bytes in one run) by
            // contract, and the program does not touch it during the call.
            let b = unsafe { std::slice::from_raw_parts_mut(buffer.cast::<u8>(), len) };
            // In place: no packing, no copies.
            return Ok(c.broadcast(b, root)?);
        }
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
    with_comm(name, comm, &[datatype], |s| {
        let dt: Datatype = s.datatype(datatype)?.clone();
        let op = op(o)?;
        let c = &s.comm;
        let n = count(n)?;
        let at_root = root.is_none_or(|r| r == c.rank());
        not_in_place(recvbuf, "receive buffer")?;
        if !at_root {
            not_in_place(sendbuf, "send buffer of a non-root rank")?;
        }
        let src = if sendbuf == IN_PLACE {
            recvbuf.cast_const()
        } else {
            sendbuf
        };
        let how = Reduction {
            op,
            root,
            at_root,
            in_place: sendbuf == IN_PLACE,
        };
        with_prim!(dt.prim, T => {
            // SAFETY: the send buffer (or, in place, the receive buffer) holds `n` elements;
            // the receive buffer holds `n` elements at the root (every rank for all-reduce).
            unsafe { reduce_typed::<T>(c, &dt, src, recvbuf, n, &how) }
        })
    })
}

/// What a reduction does besides its buffers.
struct Reduction {
    op: mpi_compat::Op,
    /// `None` for an all-reduce.
    root: Option<c_int>,
    /// Whether this rank receives the result.
    at_root: bool,
    /// `MPI_IN_PLACE`: the send buffer is the receive buffer.
    in_place: bool,
}

/// `ptr` as `len` elements of `T` when it is aligned for them and not null.
fn aligned<T>(ptr: *const c_void) -> bool {
    !ptr.is_null() && ptr.cast::<T>().is_aligned()
}

/// A reduction of `n` elements of `dt` (whose primitive is `T`). The send and receive
/// buffers are used in place (no packing, no copies) when the type is contiguous and they are
/// aligned for `T` and distinct; otherwise they are packed and unpacked.
///
/// # Safety
/// `src` holds `n` elements of `dt`; `recvbuf` holds `n` elements when `how.at_root`.
unsafe fn reduce_typed<T: Equivalence>(
    c: &Communicator,
    dt: &Datatype,
    src: *const c_void,
    recvbuf: *mut c_void,
    n: usize,
    how: &Reduction,
) -> CResult<()> {
    let len = n
        .checked_mul(dt.size)
        .ok_or_else(|| Failure::new(ERR_COUNT, "reduction too large"))?;
    let elems = len / std::mem::size_of::<T>();
    let distinct = how.in_place
        || !how.at_root
        || (src.cast::<u8>().wrapping_add(len) <= recvbuf.cast_const().cast::<u8>())
        || (recvbuf.cast::<u8>().wrapping_add(len).cast_const() <= src.cast::<u8>());
    let direct = dt.contiguous()
        && len > 0
        && aligned::<T>(src)
        && (!how.at_root || aligned::<T>(recvbuf))
        && distinct;
    if direct {
        let copy: Vec<T>;
        // SAFETY: aligned, not null, `elems` elements of `T` (the bytes of `n` contiguous
        // elements of `dt`) by contract; any bytes are a valid `T` (`Equivalence`: `Pod`).
        let send: &[T] = unsafe { std::slice::from_raw_parts(src.cast::<T>(), elems) };
        let send: &[T] = if how.in_place {
            // The result overwrites the receive buffer: the contribution is copied first.
            copy = send.to_vec();
            &copy
        } else {
            send
        };
        let mut none: [T; 0] = [];
        let out: &mut [T] = if how.at_root {
            // SAFETY: aligned, not null, `elems` elements by contract, and (checked above)
            // not overlapping the send slice, which in place is a copy.
            unsafe { std::slice::from_raw_parts_mut(recvbuf.cast::<T>(), elems) }
        } else {
            &mut none
        };
        match how.root {
            Some(r) => c.reduce(send, out, how.op, r)?,
            None => c.all_reduce(send, out, how.op)?,
        }
        return Ok(());
    }
    // SAFETY: `src` holds `n` elements by contract.
    let send = unsafe { dt.pack(src.cast(), n)? };
    let mine: Vec<T> = elements(&send);
    let mut out = vec![T::zeroed(); mine.len()];
    match how.root {
        Some(r) => c.reduce(&mine, &mut out, how.op, r)?,
        None => c.all_reduce(&mine, &mut out, how.op)?,
    }
    if how.at_root {
        // SAFETY: the receive buffer holds `n` elements at the root by contract.
        unsafe { dt.unpack(bytemuck::cast_slice(&out), recvbuf.cast(), n)? };
    }
    Ok(())
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

/// The send bytes and the receive buffer of an exchange run in place (see [`in_place`]).
type Exchange<'a> = (std::borrow::Cow<'a, [u8]>, &'a mut [u8]);

/// The buffers of an all-gather or all-to-all as they are, when both datatypes are contiguous
/// and the buffers distinct: the collective then reads and writes the C buffers in place, with
/// no packing, no temporary buffers and no unpacking (which cost more than the exchange itself
/// from 64 KiB up: fresh buffers fault their pages in). `sends` is how many send blocks
/// `sendbuf` holds (1 for an all-gather, the size for an all-to-all); `recvbuf` holds the
/// size's number of blocks. With `MPI_IN_PLACE` the send blocks are a copy of the receive
/// buffer's (this rank's block for an all-gather). `None`: take the packing path.
///
/// # Safety
/// `sendbuf` (unless `MPI_IN_PLACE`) holds `sends` × `scount` elements of its type and
/// `recvbuf` size × `rcount` of its type, untouched by the program during the call.
unsafe fn in_place<'a>(
    c: &Communicator,
    sendbuf: *const c_void,
    (st, scount): (Option<&Datatype>, c_int),
    recvbuf: *mut c_void,
    (rt, rcount): (&Datatype, c_int),
    sends: usize,
) -> CResult<Option<Exchange<'a>>> {
    let n = c.size() as usize;
    if !rt.contiguous() || st.is_some_and(|t| !t.contiguous()) {
        return Ok(None);
    }
    let block = count(rcount)?
        .checked_mul(rt.size)
        .ok_or_else(|| Failure::new(ERR_COUNT, "receive buffer too large"))?;
    let rlen = block
        .checked_mul(n)
        .ok_or_else(|| Failure::new(ERR_COUNT, "receive buffer too large"))?;
    if let Some(t) = st {
        same_bytes(count(scount)? * t.size, block)?;
    }
    let slen = block * sends;
    if rlen == 0 {
        return Ok(Some((std::borrow::Cow::Borrowed(&[]), &mut [])));
    }
    if recvbuf.is_null() || (st.is_some() && sendbuf.is_null()) {
        return Err(Failure::new(ERR_ARG, "a null buffer"));
    }
    let (r0, s0) = (recvbuf as usize, sendbuf as usize);
    if st.is_some() && s0 < r0 + rlen && r0 < s0 + slen {
        // Overlapping buffers (erroneous in MPI): the packing path copies them apart.
        return Ok(None);
    }
    // SAFETY: not null; `rlen` bytes by contract, not otherwise borrowed during the call.
    let recv = unsafe { std::slice::from_raw_parts_mut(recvbuf.cast::<u8>(), rlen) };
    let send = if st.is_some() {
        // SAFETY: not null, `slen` readable bytes by contract, distinct from `recv` (checked).
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(sendbuf.cast::<u8>(), slen)
        })
    } else {
        // MPI_IN_PLACE: this rank's block (all-gather) or every block (all-to-all).
        let from = if sends == 1 {
            c.rank() as usize * block
        } else {
            0
        };
        std::borrow::Cow::Owned(recv[from..from + slen].to_vec())
    };
    Ok(Some((send, recv)))
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
    with_comm("MPI_Gather", comm, &[stype, rtype], |s| {
        let c = &s.comm;
        not_in_place(recvbuf, "receive buffer")?;
        if c.rank() != root {
            not_in_place(sendbuf, "send buffer of a non-root rank")?;
            let st = s.datatype(stype)?;
            // SAFETY: `sendbuf` holds `scount` elements by contract.
            let send = unsafe { st.pack(sendbuf.cast(), count(scount)?)? };
            return Ok(c.gather(&send, &mut [], root)?);
        }
        let rt = s.datatype(rtype)?;
        let rn = count(rcount)?;
        let send = if sendbuf == IN_PLACE {
            // SAFETY: at the root `recvbuf` holds size × `rcount` elements by contract; its
            // own block is its contribution.
            unsafe { pack_block(rt, recvbuf, c.rank() as usize, rn)? }
        } else {
            let st = s.datatype(stype)?;
            // SAFETY: `sendbuf` holds `scount` elements by contract.
            unsafe { st.pack(sendbuf.cast(), count(scount)?)? }
        };
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
    with_comm("MPI_Allgather", comm, &[stype, rtype], |s| {
        let c = &s.comm;
        let rt = s.datatype(rtype)?;
        let rn = count(rcount)?;
        not_in_place(recvbuf, "receive buffer")?;
        let st = (sendbuf != IN_PLACE)
            .then(|| s.datatype(stype))
            .transpose()?;
        // SAFETY: `sendbuf` (unless in place) holds `scount` elements of `st` and `recvbuf`
        // size × `rcount` elements of `rt`, by contract.
        if let Some(r) = unsafe { in_place(c, sendbuf, (st, scount), recvbuf, (rt, rcount), 1)? } {
            let (send, recv) = r;
            return Ok(c.all_gather(&send, recv)?);
        }
        let send = if sendbuf == IN_PLACE {
            // SAFETY: `recvbuf` holds size × `rcount` elements by contract; this rank's own
            // block is its contribution.
            unsafe { pack_block(rt, recvbuf, c.rank() as usize, rn)? }
        } else {
            let st = s.datatype(stype)?;
            // SAFETY: `sendbuf` holds `scount` elements by contract.
            unsafe { st.pack(sendbuf.cast(), count(scount)?)? }
        };
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
    with_comm("MPI_Scatter", comm, &[stype, rtype], |s| {
        let c = &s.comm;
        if c.rank() == root {
            not_in_place(sendbuf, "send buffer")?;
            let st = s.datatype(stype)?;
            let sn = count(scount)?;
            let in_place = recvbuf.cast_const() == IN_PLACE;
            if !in_place {
                let rt = s.datatype(rtype)?;
                same_bytes(sn * st.size, count(rcount)? * rt.size)?;
            }
            let total = sn
                .checked_mul(c.size() as usize)
                .ok_or_else(|| Failure::new(ERR_COUNT, "send buffer too large"))?;
            // SAFETY: at the root `sendbuf` holds size × `scount` elements by contract.
            let send = unsafe { st.pack(sendbuf.cast(), total)? };
            let mut mine = vec![0u8; sn * st.size];
            c.scatter(&send, &mut mine, root)?;
            if in_place {
                // The root's block stays where it is in `sendbuf`.
                return Ok(());
            }
            let rt = s.datatype(rtype)?;
            // SAFETY: `recvbuf` holds `rcount` elements by contract.
            return unsafe { rt.unpack(&mine, recvbuf.cast(), count(rcount)?) };
        }
        not_in_place(recvbuf, "receive buffer of a non-root rank")?;
        let rt = s.datatype(rtype)?;
        let rn = count(rcount)?;
        let mut mine = vec![0u8; rn * rt.size];
        c.scatter(&[], &mut mine, root)?;
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
    with_comm("MPI_Alltoall", comm, &[stype, rtype], |s| {
        let c = &s.comm;
        let n = c.size() as usize;
        let rt = s.datatype(rtype)?;
        let rn = count(rcount)?;
        not_in_place(recvbuf, "receive buffer")?;
        let st = (sendbuf != IN_PLACE)
            .then(|| s.datatype(stype))
            .transpose()?;
        // SAFETY: `sendbuf` (unless in place) and `recvbuf` hold size × `scount` elements of
        // `st` and size × `rcount` of `rt`, by contract.
        if let Some(r) = unsafe { in_place(c, sendbuf, (st, scount), recvbuf, (rt, rcount), n)? } {
            let (send, recv) = r;
            return Ok(c.all_to_all(&send, recv)?);
        }
        let send = if sendbuf == IN_PLACE {
            // SAFETY: `recvbuf` holds size × `rcount` elements by contract; it is both the
            // data sent and (after the exchange) the data received.
            unsafe { pack_block(rt, recvbuf, 0, rn * n)? }
        } else {
            let st = s.datatype(stype)?;
            let sn = count(scount)?;
            same_bytes(sn * st.size, rn * rt.size)?;
            // SAFETY: `sendbuf` holds size × `scount` elements by contract.
            unsafe { st.pack(sendbuf.cast(), sn * n)? }
        };
        let mut all = vec![0u8; send.len()];
        c.all_to_all(&send, &mut all)?;
        // SAFETY: `recvbuf` holds size × `rcount` elements by contract.
        unsafe { rt.unpack(&all, recvbuf.cast(), rn * n) }
    })
}
