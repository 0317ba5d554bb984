//! Non-blocking collectives (MPI-3.1 §5.12): each is a schedule of `crate::sched`, whose
//! messages are all sent when it starts and whose receives complete in `MPI_Wait`, `MPI_Test`
//! and the rest of that family. A started collective therefore never waits for anything this
//! rank does later: the ranks may do other point-to-point work, or start other collectives
//! (in the same order everywhere), before they wait for it.

use std::ffi::{c_int, c_void};

use crate::collv::{
    me_and_size, plan_allgatherv, plan_alltoallv, plan_alltoallw, plan_barrier, plan_bcast,
    plan_gatherv, plan_reduce, plan_scatterv, scatter_counts, Layout, ReduceTo,
};
use crate::sched::run;
use crate::state::with_state;
use crate::types::count;

/// `MPI_Ibarrier` (MPI-3.1 §5.12.1): complete once every rank has started it.
#[no_mangle]
pub unsafe extern "C" fn MPI_Ibarrier(comm: c_int, request: *mut c_int) -> c_int {
    with_state("MPI_Ibarrier", Some(comm), |s| {
        let p = plan_barrier(s, comm)?;
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Ibcast` (MPI-3.1 §5.12.2): the root's buffer is read when the call is made.
#[no_mangle]
pub unsafe extern "C" fn MPI_Ibcast(
    buffer: *mut c_void,
    n: c_int,
    datatype: c_int,
    root: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Ibcast", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe { plan_bcast(s, buffer, n, datatype, root, comm)? };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Igather` (MPI-3.1 §5.12.3); `MPI_IN_PLACE` at the root.
#[no_mangle]
pub unsafe extern "C" fn MPI_Igather(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Igather", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_gatherv(
                s,
                sendbuf,
                scount,
                stype,
                recvbuf,
                Layout::Same(rcount),
                rtype,
                root,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Igatherv` (MPI-3.1 §5.12.3); `MPI_IN_PLACE` at the root.
#[no_mangle]
pub unsafe extern "C" fn MPI_Igatherv(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    displs: *const c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Igatherv", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_gatherv(
                s,
                sendbuf,
                scount,
                stype,
                recvbuf,
                Layout::Each(rcounts, displs),
                rtype,
                root,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Iscatter` (MPI-3.1 §5.12.4); `MPI_IN_PLACE` at the root.
#[no_mangle]
pub unsafe extern "C" fn MPI_Iscatter(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Iscatter", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_scatterv(
                s,
                sendbuf,
                Layout::Same(scount),
                stype,
                recvbuf,
                rcount,
                rtype,
                root,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Iscatterv` (MPI-3.1 §5.12.4); `MPI_IN_PLACE` at the root.
#[no_mangle]
pub unsafe extern "C" fn MPI_Iscatterv(
    sendbuf: *const c_void,
    scounts: *const c_int,
    displs: *const c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    root: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Iscatterv", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_scatterv(
                s,
                sendbuf,
                Layout::Each(scounts, displs),
                stype,
                recvbuf,
                rcount,
                rtype,
                root,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Iallgather` (MPI-3.1 §5.12.5); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Iallgather(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Iallgather", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_allgatherv(
                s,
                sendbuf,
                scount,
                stype,
                recvbuf,
                Layout::Same(rcount),
                rtype,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Iallgatherv` (MPI-3.1 §5.12.5); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Iallgatherv(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    displs: *const c_int,
    rtype: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Iallgatherv", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_allgatherv(
                s,
                sendbuf,
                scount,
                stype,
                recvbuf,
                Layout::Each(rcounts, displs),
                rtype,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Ialltoall` (MPI-3.1 §5.12.6); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Ialltoall(
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Ialltoall", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_alltoallv(
                s,
                sendbuf,
                Layout::Same(scount),
                stype,
                recvbuf,
                Layout::Same(rcount),
                rtype,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Ialltoallv` (MPI-3.1 §5.12.6); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Ialltoallv(
    sendbuf: *const c_void,
    scounts: *const c_int,
    sdispls: *const c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    rdispls: *const c_int,
    rtype: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Ialltoallv", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_alltoallv(
                s,
                sendbuf,
                Layout::Each(scounts, sdispls),
                stype,
                recvbuf,
                Layout::Each(rcounts, rdispls),
                rtype,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Ialltoallw` (MPI-3.1 §5.12.6): displacements in bytes, a datatype per rank.
#[no_mangle]
pub unsafe extern "C" fn MPI_Ialltoallw(
    sendbuf: *const c_void,
    scounts: *const c_int,
    sdispls: *const c_int,
    stypes: *const c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    rdispls: *const c_int,
    rtypes: *const c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Ialltoallw", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_alltoallw(
                s, sendbuf, scounts, sdispls, stypes, recvbuf, rcounts, rdispls, rtypes, comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Ireduce` (MPI-3.1 §5.12.7); `MPI_IN_PLACE` at the root.
#[no_mangle]
pub unsafe extern "C" fn MPI_Ireduce(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    n: c_int,
    datatype: c_int,
    o: c_int,
    root: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Ireduce", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_reduce(
                s,
                sendbuf,
                recvbuf,
                ReduceTo::Root(root, count(n)?),
                datatype,
                o,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Iallreduce` (MPI-3.1 §5.12.8); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Iallreduce(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    n: c_int,
    datatype: c_int,
    o: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Iallreduce", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            plan_reduce(
                s,
                sendbuf,
                recvbuf,
                ReduceTo::All(count(n)?),
                datatype,
                o,
                comm,
            )?
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Ireduce_scatter` (MPI-3.1 §5.12.9); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Ireduce_scatter(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    recvcounts: *const c_int,
    datatype: c_int,
    o: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Ireduce_scatter", Some(comm), |s| {
        // SAFETY: one count per rank, as the MPI contract.
        let counts = unsafe { scatter_counts(s, recvcounts, comm)? };
        let to = ReduceTo::Scatter(&counts);
        // SAFETY: buffers as the MPI contract.
        let p = unsafe { plan_reduce(s, sendbuf, recvbuf, to, datatype, o, comm)? };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}

/// `MPI_Ireduce_scatter_block` (MPI-3.1 §5.12.9); `MPI_IN_PLACE` accepted.
#[no_mangle]
pub unsafe extern "C" fn MPI_Ireduce_scatter_block(
    sendbuf: *const c_void,
    recvbuf: *mut c_void,
    recvcount: c_int,
    datatype: c_int,
    o: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Ireduce_scatter_block", Some(comm), |s| {
        // SAFETY: buffers and arrays as the MPI contract.
        let p = unsafe {
            {
                let counts = vec![count(recvcount)?; me_and_size(s, comm)?.1];
                plan_reduce(
                    s,
                    sendbuf,
                    recvbuf,
                    ReduceTo::Scatter(&counts),
                    datatype,
                    o,
                    comm,
                )?
            }
        };
        // SAFETY: `request` as the MPI contract.
        unsafe { run(s, comm, p, Some(request)) }
    })
}
