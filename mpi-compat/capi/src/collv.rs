//! The vector and w collectives and reduce-scatter (MPI-3.1 §5.5-5.10): their plans (shared
//! with the non-blocking forms of `icoll`) and their blocking entry points. Each runs as a
//! schedule of `crate::sched`, waited for at once.

use std::ffi::{c_int, c_void};

use mpi_compat::Rank;

use crate::sched::{check_reduce_op, offset, run, Plan, IN_PLACE};
use crate::state::{with_state, CResult, Failure, State, ERR_ARG, ERR_COUNT, ERR_ROOT};
use crate::types::{count, op, Datatype};

/// A C array of `n` elements (`&[]` when `n` is 0).
///
/// # Safety
/// `p` is null or holds `n` elements, unchanged while the slice lives.
pub(crate) unsafe fn array<'a, T>(p: *const T, n: usize, what: &str) -> CResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::new(ERR_ARG, format!("a null {what} array")));
    }
    // SAFETY: not null; `n` elements by contract.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// How the blocks of a buffer with one per rank lie: `count` elements each, block `i` at
/// `i × count` (`MPI_Gather` ...), or counts and displacements (in elements) per rank
/// (`MPI_Gatherv` ...).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layout {
    Same(c_int),
    Each(*const c_int, *const c_int),
}

impl Layout {
    /// (count, displacement in elements) of each of `n` blocks.
    ///
    /// # Safety
    /// For `Each`, both arrays hold `n` ints (or are null: refused).
    unsafe fn blocks(self, n: usize) -> CResult<Vec<(usize, isize)>> {
        match self {
            Layout::Same(k) => {
                let k = count(k)?;
                (0..n)
                    .map(|i| {
                        let d = i
                            .checked_mul(k)
                            .and_then(|d| isize::try_from(d).ok())
                            .ok_or_else(|| Failure::new(ERR_COUNT, "buffer too large"))?;
                        Ok((k, d))
                    })
                    .collect()
            }
            Layout::Each(counts, displs) => {
                // SAFETY: `n` ints, by contract.
                let c = unsafe { array(counts, n, "count")? };
                // SAFETY: as above.
                let d = unsafe { array(displs, n, "displacement")? };
                c.iter()
                    .zip(d)
                    .map(|(&c, &d)| Ok((count(c)?, d as isize)))
                    .collect()
            }
        }
    }
}

/// The rank and size of `comm`.
pub(crate) fn me_and_size(s: &State, comm: c_int) -> CResult<(Rank, usize)> {
    let c = &s.tables.comm(comm)?.comm;
    Ok((c.rank(), c.size() as usize))
}

fn check_root(root: c_int, n: usize) -> CResult<()> {
    if root < 0 || root as usize >= n {
        return Err(Failure::new(
            ERR_ROOT,
            format!("invalid root {root} (size {n})"),
        ));
    }
    Ok(())
}

fn datatype(s: &State, h: c_int) -> CResult<Datatype> {
    Ok(s.tables.datatype(h)?.clone())
}

/// `MPI_Barrier`'s plan: an empty message to every other rank, and one from each.
pub(crate) fn plan_barrier(s: &State, comm: c_int) -> CResult<Plan> {
    let (me, n) = me_and_size(s, comm)?;
    let mut p = Plan::new();
    for r in (0..n as Rank).filter(|&r| r != me) {
        p.send(r, Vec::new());
        p.recv_bytes(r, 0);
    }
    Ok(p)
}

/// `MPI_Bcast`'s plan: the root sends to every rank.
///
/// # Safety
/// `buffer` holds `n` elements of `datatype` (and stays valid until completion).
pub(crate) unsafe fn plan_bcast(
    s: &State,
    buffer: *mut c_void,
    n: c_int,
    datatype_h: c_int,
    root: c_int,
    comm: c_int,
) -> CResult<Plan> {
    let (me, size) = me_and_size(s, comm)?;
    check_root(root, size)?;
    let dt = datatype(s, datatype_h)?;
    let n = count(n)?;
    let mut p = Plan::new();
    if me == root {
        // SAFETY: `buffer` holds `n` elements by contract.
        let bytes = unsafe { dt.pack(buffer.cast(), n)? };
        for r in (0..size as Rank).filter(|&r| r != me) {
            p.send(r, bytes.clone());
        }
    } else {
        // SAFETY: as this function's contract.
        unsafe { p.recv_block(root, &dt, buffer.cast(), n)? };
    }
    Ok(p)
}

/// `MPI_Gather(v)`'s plan: every rank sends its block to the root, which unpacks each at its
/// place (its own stays in place with `MPI_IN_PLACE`).
///
/// # Safety
/// The buffers and arrays as `MPI_Gatherv` requires.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn plan_gatherv(
    s: &State,
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    layout: Layout,
    rtype: c_int,
    root: c_int,
    comm: c_int,
) -> CResult<Plan> {
    let (me, size) = me_and_size(s, comm)?;
    check_root(root, size)?;
    let in_place = me == root && sendbuf == IN_PLACE;
    let mut p = Plan::new();
    if !in_place {
        if sendbuf == IN_PLACE {
            return Err(Failure::new(ERR_ARG, "MPI_IN_PLACE at a non-root rank"));
        }
        let st = datatype(s, stype)?;
        // SAFETY: `sendbuf` holds `scount` elements by contract.
        unsafe { p.send_block(root, &st, sendbuf.cast(), count(scount)?)? };
    }
    if me == root {
        let rt = datatype(s, rtype)?;
        // SAFETY: the root's arrays hold one entry per rank by contract.
        let blocks = unsafe { layout.blocks(size)? };
        for (r, (k, d)) in blocks.into_iter().enumerate() {
            if in_place && r as Rank == me {
                continue;
            }
            let at = offset(recvbuf, d, rt.extent)?;
            // SAFETY: block `r` of `recvbuf` lies inside it by contract.
            unsafe { p.recv_block(r as Rank, &rt, at, k)? };
        }
    }
    Ok(p)
}

/// `MPI_Scatter(v)`'s plan: the root sends each rank its block (its own stays in place with
/// `MPI_IN_PLACE`).
///
/// # Safety
/// The buffers and arrays as `MPI_Scatterv` requires.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn plan_scatterv(
    s: &State,
    sendbuf: *const c_void,
    layout: Layout,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
) -> CResult<Plan> {
    let (me, size) = me_and_size(s, comm)?;
    check_root(root, size)?;
    let in_place = me == root && recvbuf.cast_const() == IN_PLACE;
    let mut p = Plan::new();
    if me == root {
        let st = datatype(s, stype)?;
        // SAFETY: the root's arrays hold one entry per rank by contract.
        let blocks = unsafe { layout.blocks(size)? };
        for (r, (k, d)) in blocks.into_iter().enumerate() {
            if in_place && r as Rank == me {
                continue;
            }
            let at = offset(sendbuf, d, st.extent)?;
            // SAFETY: block `r` of `sendbuf` lies inside it by contract.
            unsafe { p.send_block(r as Rank, &st, at, k)? };
        }
    }
    if !in_place {
        if recvbuf.cast_const() == IN_PLACE {
            return Err(Failure::new(ERR_ARG, "MPI_IN_PLACE at a non-root rank"));
        }
        let rt = datatype(s, rtype)?;
        // SAFETY: `recvbuf` holds `rcount` elements by contract.
        unsafe { p.recv_block(root, &rt, recvbuf.cast(), count(rcount)?)? };
    }
    Ok(p)
}

/// `MPI_Allgather(v)`'s plan: every rank sends its block to every rank. With `MPI_IN_PLACE`
/// a rank's block is taken from its place in `recvbuf`.
///
/// # Safety
/// The buffers and arrays as `MPI_Allgatherv` requires.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn plan_allgatherv(
    s: &State,
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    layout: Layout,
    rtype: c_int,
    comm: c_int,
) -> CResult<Plan> {
    let (me, size) = me_and_size(s, comm)?;
    let rt = datatype(s, rtype)?;
    // SAFETY: the arrays hold one entry per rank by contract.
    let blocks = unsafe { layout.blocks(size)? };
    let mine = if sendbuf == IN_PLACE {
        let (k, d) = blocks[me as usize];
        // SAFETY: this rank's block of `recvbuf` lies inside it by contract.
        unsafe { rt.pack(offset(recvbuf, d, rt.extent)?, k)? }
    } else {
        let st = datatype(s, stype)?;
        // SAFETY: `sendbuf` holds `scount` elements by contract.
        unsafe { st.pack(sendbuf.cast(), count(scount)?)? }
    };
    let mut p = Plan::new();
    for (r, (k, d)) in blocks.into_iter().enumerate() {
        p.send(r as Rank, mine.clone());
        // SAFETY: block `r` of `recvbuf` lies inside it by contract.
        unsafe { p.recv_block(r as Rank, &rt, offset(recvbuf, d, rt.extent)?, k)? };
    }
    Ok(p)
}

/// One rank's block of an all-to-all: `count` elements of `dt` at `at`.
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) dt: Datatype,
    pub(crate) at: *mut u8,
    pub(crate) count: usize,
}

/// The plan of an exchange: block `i` of `sends` to peer `i`, block `i` of `recvs` from peer
/// `i` (`MPI_Alltoall*`, and the neighbourhood collectives with their neighbours as peers).
/// Every send is packed before any receive can write, so `sends` may be the receive buffer
/// (`MPI_IN_PLACE`).
///
/// # Safety
/// Each block lies inside its buffer, readable (sends) or writable until completion (receives).
pub(crate) unsafe fn plan_exchange(
    sends: &[(Rank, Block)],
    recvs: &[(Rank, Block)],
) -> CResult<Plan> {
    let mut p = Plan::new();
    for (r, b) in sends {
        // SAFETY: as this function's contract.
        unsafe { p.send_block(*r, &b.dt, b.at, b.count)? };
    }
    for (r, b) in recvs {
        // SAFETY: as this function's contract.
        unsafe { p.recv_block(*r, &b.dt, b.at, b.count)? };
    }
    Ok(p)
}

/// The blocks of one side of `MPI_Alltoall(v)`: one datatype, blocks by `layout`.
///
/// # Safety
/// As [`Layout::blocks`].
pub(crate) unsafe fn blocks_of(
    s: &State,
    buf: *const c_void,
    layout: Layout,
    dt: c_int,
    n: usize,
) -> CResult<Vec<(Rank, Block)>> {
    let dt = datatype(s, dt)?;
    // SAFETY: as this function's contract.
    let blocks = unsafe { layout.blocks(n)? };
    blocks
        .into_iter()
        .enumerate()
        .map(|(r, (k, d))| {
            Ok((
                r as Rank,
                Block {
                    dt: dt.clone(),
                    at: offset(buf, d, dt.extent)?,
                    count: k,
                },
            ))
        })
        .collect()
}

/// The blocks of one side of `MPI_Alltoallw`/`MPI_Neighbor_alltoallw`: per peer a count, a
/// displacement in bytes and a datatype.
///
/// # Safety
/// The arrays hold `peers.len()` entries each.
pub(crate) unsafe fn blocks_w(
    s: &State,
    buf: *const c_void,
    peers: &[Rank],
    counts: *const c_int,
    displs: &[isize],
    types: *const c_int,
) -> CResult<Vec<(Rank, Block)>> {
    let n = peers.len();
    // SAFETY: `n` entries by contract.
    let c = unsafe { array(counts, n, "count")? };
    // SAFETY: as above.
    let t = unsafe { array(types, n, "datatype")? };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push((
            peers[i],
            Block {
                dt: datatype(s, t[i])?,
                at: offset(buf, displs[i], 1)?,
                count: count(c[i])?,
            },
        ));
    }
    Ok(out)
}

/// Where the result of a reduction goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReduceTo<'a> {
    /// To the root only (`MPI_Reduce`): `count` elements.
    Root(Rank, usize),
    /// To every rank (`MPI_Allreduce`): `count` elements.
    All(usize),
    /// Block `i` (of the given counts, in order) to rank `i` (`MPI_Reduce_scatter`).
    Scatter(&'a [usize]),
}

/// The plan of a reduction: every rank's vector (from `recvbuf` with `MPI_IN_PLACE`) is sent
/// (whole, or cut into blocks for reduce-scatter) to the ranks that get a result, which reduce
/// the contributions in rank order into `recvbuf`.
///
/// # Safety
/// `sendbuf` (or `recvbuf`, in place) holds the whole vector; `recvbuf` holds this rank's
/// result (where it gets one).
pub(crate) unsafe fn plan_reduce(
    s: &State,
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    to: ReduceTo<'_>,
    datatype_h: c_int,
    o: c_int,
    comm: c_int,
) -> CResult<Plan> {
    let (me, size) = me_and_size(s, comm)?;
    let dt = datatype(s, datatype_h)?;
    let op = op(o)?;
    check_reduce_op(op, &dt)?;
    let (total, gets) = match to {
        ReduceTo::Root(root, n) => {
            check_root(root, size)?;
            (n, (me == root).then_some(n))
        }
        ReduceTo::All(n) => (n, Some(n)),
        ReduceTo::Scatter(counts) => {
            if counts.len() != size {
                return Err(Failure::new(ERR_COUNT, "one count per rank needed"));
            }
            let total = counts
                .iter()
                .try_fold(0usize, |a, &k| a.checked_add(k))
                .ok_or_else(|| Failure::new(ERR_COUNT, "counts too large"))?;
            (total, Some(counts[me as usize]))
        }
    };
    if gets.is_some() && recvbuf.cast_const() == IN_PLACE {
        return Err(Failure::new(ERR_ARG, "MPI_IN_PLACE as the receive buffer"));
    }
    let src = if sendbuf == IN_PLACE {
        if gets.is_none() {
            return Err(Failure::new(ERR_ARG, "MPI_IN_PLACE at a non-root rank"));
        }
        recvbuf.cast_const()
    } else {
        sendbuf
    };
    // SAFETY: the send buffer (or, in place, the receive buffer) holds the whole vector.
    let all = unsafe { dt.pack(src.cast(), total)? };
    let mut p = Plan::new();
    match to {
        ReduceTo::Root(root, _) => p.send(root, all),
        ReduceTo::All(_) => {
            for r in 0..size as Rank {
                p.send(r, all.clone());
            }
        }
        ReduceTo::Scatter(counts) => {
            let mut at = 0;
            for (r, &k) in counts.iter().enumerate() {
                let len = k * dt.size;
                p.send(r as Rank, all[at..at + len].to_vec());
                at += len;
            }
        }
    }
    if let Some(mine) = gets {
        for r in 0..size as Rank {
            p.recv_bytes(r, mine * dt.size);
        }
        // SAFETY: `recvbuf` holds this rank's `mine` elements by contract.
        unsafe { p.reduce_into(op, &dt, recvbuf.cast(), mine)? };
    }
    Ok(p)
}

/// `MPI_Alltoall(v)`'s plan (`MPI_IN_PLACE`: the receive buffer's blocks are sent).
///
/// # Safety
/// The buffers and arrays as `MPI_Alltoallv` requires.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn plan_alltoallv(
    s: &State,
    sendbuf: *const c_void,
    slayout: Layout,
    stype: c_int,
    recvbuf: *mut c_void,
    rlayout: Layout,
    rtype: c_int,
    comm: c_int,
) -> CResult<Plan> {
    let (_, n) = me_and_size(s, comm)?;
    // SAFETY: as this function's contract.
    let recvs = unsafe { blocks_of(s, recvbuf, rlayout, rtype, n)? };
    let sends = if sendbuf == IN_PLACE {
        // SAFETY: as this function's contract.
        unsafe { blocks_of(s, recvbuf, rlayout, rtype, n)? }
    } else {
        // SAFETY: as this function's contract.
        unsafe { blocks_of(s, sendbuf, slayout, stype, n)? }
    };
    // SAFETY: the blocks lie inside the buffers by contract.
    unsafe { plan_exchange(&sends, &recvs) }
}

/// `MPI_Alltoallw`'s plan: per-rank counts, byte displacements and datatypes.
///
/// # Safety
/// The buffers and arrays as `MPI_Alltoallw` requires.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn plan_alltoallw(
    s: &State,
    sendbuf: *const c_void,
    scounts: *const c_int,
    sdispls: *const c_int,
    stypes: *const c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    rdispls: *const c_int,
    rtypes: *const c_int,
    comm: c_int,
) -> CResult<Plan> {
    let (_, n) = me_and_size(s, comm)?;
    let peers: Vec<Rank> = (0..n as Rank).collect();
    let bytes = |d: *const c_int| -> CResult<Vec<isize>> {
        // SAFETY: `n` ints by contract.
        Ok(unsafe { array(d, n, "displacement")? }
            .iter()
            .map(|&x| x as isize)
            .collect())
    };
    let rd = bytes(rdispls)?;
    // SAFETY: as this function's contract.
    let recvs = unsafe { blocks_w(s, recvbuf, &peers, rcounts, &rd, rtypes)? };
    let sends = if sendbuf == IN_PLACE {
        // SAFETY: as this function's contract.
        unsafe { blocks_w(s, recvbuf, &peers, rcounts, &rd, rtypes)? }
    } else {
        let sd = bytes(sdispls)?;
        // SAFETY: as this function's contract.
        unsafe { blocks_w(s, sendbuf, &peers, scounts, &sd, stypes)? }
    };
    // SAFETY: the blocks lie inside the buffers by contract.
    unsafe { plan_exchange(&sends, &recvs) }
}

/// The counts of `MPI_Reduce_scatter`, one per rank of `comm`.
///
/// # Safety
/// `counts` holds one int per rank.
pub(crate) unsafe fn scatter_counts(
    s: &State,
    counts: *const c_int,
    comm: c_int,
) -> CResult<Vec<usize>> {
    let (_, n) = me_and_size(s, comm)?;
    // SAFETY: as this function's contract.
    unsafe { array(counts, n, "count")? }
        .iter()
        .map(|&c| count(c))
        .collect()
}

/// `MPI_Gatherv` (MPI-3.1 §5.5); `MPI_IN_PLACE` at the root.
#[no_mangle]
pub unsafe extern "C" fn MPI_Gatherv(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    displs: *const c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Gatherv", Some(comm), |s| {
        let layout = Layout::Each(rcounts, displs);
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_gatherv(
                s, sendbuf, scount, stype, recvbuf, layout, rtype, root, comm,
            )?
        };
        // SAFETY: blocking: no request.
        unsafe { run(s, comm, p, None) }
    })
}

/// `MPI_Scatterv` (MPI-3.1 §5.6); `MPI_IN_PLACE` at the root.
#[no_mangle]
pub unsafe extern "C" fn MPI_Scatterv(
    sendbuf: *const c_void,
    scounts: *const c_int,
    displs: *const c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Scatterv", Some(comm), |s| {
        let layout = Layout::Each(scounts, displs);
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_scatterv(
                s, sendbuf, layout, stype, recvbuf, rcount, rtype, root, comm,
            )?
        };
        // SAFETY: blocking: no request.
        unsafe { run(s, comm, p, None) }
    })
}

/// `MPI_Allgatherv` (MPI-3.1 §5.7); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Allgatherv(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    displs: *const c_int,
    rtype: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Allgatherv", Some(comm), |s| {
        let layout = Layout::Each(rcounts, displs);
        // SAFETY: buffers and arrays as the MPI contract.
        let p =
            unsafe { plan_allgatherv(s, sendbuf, scount, stype, recvbuf, layout, rtype, comm)? };
        // SAFETY: blocking: no request.
        unsafe { run(s, comm, p, None) }
    })
}

/// `MPI_Alltoallv` (MPI-3.1 §5.8); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Alltoallv(
    sendbuf: *const c_void,
    scounts: *const c_int,
    sdispls: *const c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    rdispls: *const c_int,
    rtype: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Alltoallv", Some(comm), |s| {
        let (sl, rl) = (
            Layout::Each(scounts, sdispls),
            Layout::Each(rcounts, rdispls),
        );
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe { plan_alltoallv(s, sendbuf, sl, stype, recvbuf, rl, rtype, comm)? };
        // SAFETY: blocking: no request.
        unsafe { run(s, comm, p, None) }
    })
}

/// `MPI_Alltoallw` (MPI-3.1 §5.8): displacements in bytes, a datatype per rank;
/// `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Alltoallw(
    sendbuf: *const c_void,
    scounts: *const c_int,
    sdispls: *const c_int,
    stypes: *const c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    rdispls: *const c_int,
    rtypes: *const c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Alltoallw", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_alltoallw(
                s, sendbuf, scounts, sdispls, stypes, recvbuf, rcounts, rdispls, rtypes, comm,
            )?
        };
        // SAFETY: blocking: no request.
        unsafe { run(s, comm, p, None) }
    })
}

/// `MPI_Reduce_scatter` (MPI-3.1 §5.10.1): the reduction of every rank's vector, block `i`
/// (of `recvcounts[i]` elements) to rank `i`; `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Reduce_scatter(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    recvcounts: *const c_int,
    datatype: c_int,
    o: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Reduce_scatter", Some(comm), |s| {
        // SAFETY: one count per rank, as the MPI contract.
        let counts = unsafe { scatter_counts(s, recvcounts, comm)? };
        let to = ReduceTo::Scatter(&counts);
        // SAFETY: buffers as the MPI contract.
        let p = unsafe { plan_reduce(s, sendbuf, recvbuf, to, datatype, o, comm)? };
        // SAFETY: blocking: no request.
        unsafe { run(s, comm, p, None) }
    })
}

/// `MPI_Reduce_scatter_block` (MPI-3.1 §5.10.2): `MPI_Reduce_scatter` with `recvcount`
/// elements for every rank.
#[no_mangle]
pub unsafe extern "C" fn MPI_Reduce_scatter_block(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    recvcount: c_int,
    datatype: c_int,
    o: c_int,
    comm: c_int,
) -> c_int {
    with_state("MPI_Reduce_scatter_block", Some(comm), |s| {
        let counts = vec![count(recvcount)?; me_and_size(s, comm)?.1];
        let to = ReduceTo::Scatter(&counts);
        // SAFETY: buffers as the MPI contract.
        let p = unsafe { plan_reduce(s, sendbuf, recvbuf, to, datatype, o, comm)? };
        // SAFETY: blocking: no request.
        unsafe { run(s, comm, p, None) }
    })
}
