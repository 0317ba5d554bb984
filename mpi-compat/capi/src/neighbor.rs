//! Distributed graph topologies and the neighbourhood collectives on them (MPI-3.1 §7.5.4,
//! §7.5.5, §7.6, §7.7).
//!
//! `MPI_Dist_graph_create_adjacent` gives a duplicate of the communicator the graph each rank
//! describes (its sources and destinations); the creation checks, across the ranks, that every
//! edge is declared at both its ends (`MPI_ERR_TOPOLOGY` at every rank otherwise, so no rank is
//! left waiting). `reorder` is ignored (ranks stay), and so is the info argument. The general
//! `MPI_Dist_graph_create` is not provided. Neighbourhood collectives need a distributed-graph
//! communicator (`MPI_ERR_TOPOLOGY` otherwise); they are schedules of `crate::sched` (sent to
//! every destination, received from every source), waited for at once or, in their
//! `MPI_Ineighbor_` form, completed by the wait and test calls. Several edges between the same
//! two ranks carry their messages in the order of the lists.

use std::ffi::{c_int, c_void};

use mpi_compat::Rank;

use crate::collv::{array, blocks_of, blocks_w, plan_exchange, Block, Layout};
use crate::sched::{run, Plan, IN_PLACE};
use crate::state::{put, with_state, CResult, CommEntry, Failure, State, ERR_ARG, ERR_TOPOLOGY};
use crate::types::count;

/// The object whose address is `MPI_UNWEIGHTED` in `mpi.h`.
#[no_mangle]
pub static dsmmpi_unweighted: c_int = 0;
/// The object whose address is `MPI_WEIGHTS_EMPTY` in `mpi.h`.
#[no_mangle]
pub static dsmmpi_weights_empty: c_int = 0;

/// Whether a weights argument is `MPI_UNWEIGHTED`.
fn unweighted(p: *const c_int) -> bool {
    std::ptr::eq(p, &dsmmpi_unweighted)
}

/// The distributed graph of a communicator, as this rank declared it.
#[derive(Debug, Clone)]
pub(crate) struct DistGraph {
    sources: Vec<Rank>,
    source_weights: Option<Vec<c_int>>,
    destinations: Vec<Rank>,
    destination_weights: Option<Vec<c_int>>,
}

/// Reads one side of the graph: `degree` ranks and their weights (`None`: unweighted).
///
/// # Safety
/// `ranks` holds `degree` ints; `weights` too unless it is `MPI_UNWEIGHTED` or
/// `MPI_WEIGHTS_EMPTY`.
unsafe fn side(
    degree: c_int,
    ranks: *const c_int,
    weights: *const c_int,
    size: Rank,
) -> CResult<(Vec<Rank>, Option<Vec<c_int>>)> {
    let n = count(degree)?;
    // SAFETY: as this function's contract.
    let r = unsafe { array(ranks, n, "neighbour")? }.to_vec();
    if let Some(&bad) = r.iter().find(|&&x| x < 0 || x >= size) {
        return Err(Failure::new(
            ERR_TOPOLOGY,
            format!("neighbour {bad} outside the communicator (size {size})"),
        ));
    }
    let w = if unweighted(weights) {
        None
    } else if std::ptr::eq(weights, &dsmmpi_weights_empty) || n == 0 {
        Some(Vec::new())
    } else {
        // SAFETY: as this function's contract.
        Some(unsafe { array(weights, n, "weight")? }.to_vec())
    };
    Ok((r, w))
}

/// `MPI_Dist_graph_create_adjacent` (MPI-3.1 §7.5.4): a new communicator with the same ranks
/// and the graph each rank gives (its sources and destinations, with weights or
/// `MPI_UNWEIGHTED`). `reorder` and `info` are ignored.
#[no_mangle]
pub unsafe extern "C" fn MPI_Dist_graph_create_adjacent(
    comm_old: c_int,
    indegree: c_int,
    sources: *const c_int,
    sourceweights: *const c_int,
    outdegree: c_int,
    destinations: *const c_int,
    destweights: *const c_int,
    _info: c_int,
    _reorder: c_int,
    comm_dist_graph: *mut c_int,
) -> c_int {
    with_state("MPI_Dist_graph_create_adjacent", Some(comm_old), |s| {
        let e = s.tables.comm(comm_old)?;
        let c = e.comm.clone();
        let errhandler = e.errhandler;
        let size = c.size();
        // This rank's own arguments; an error here still takes part in the checks below.
        // SAFETY: the arrays as the MPI contract.
        let src = unsafe { side(indegree, sources, sourceweights, size) };
        // SAFETY: as above.
        let dst = unsafe { side(outdegree, destinations, destweights, size) };
        let mine = src.and_then(|src| {
            let dst = dst?;
            if src.1.is_some() != dst.1.is_some() {
                return Err(Failure::new(
                    ERR_ARG,
                    "MPI_UNWEIGHTED for one side of the graph only",
                ));
            }
            if comm_dist_graph.is_null() {
                return Err(Failure::new(ERR_ARG, "a null communicator pointer"));
            }
            Ok((src, dst))
        });
        // Every rank tells each rank how many of its edges go there; each compares with the
        // sources it declared.
        let mut out_edges = vec![0i32; size as usize];
        let mut in_edges = vec![0i32; size as usize];
        if let Ok((src, dst)) = &mine {
            for &d in &dst.0 {
                out_edges[d as usize] += 1;
            }
            for &r in &src.0 {
                in_edges[r as usize] += 1;
            }
        }
        let mut told = vec![0i32; size as usize];
        c.all_to_all(&out_edges, &mut told)?;
        let consistent = mine.is_ok() && told == in_edges;
        let mut all = [0i32];
        c.all_reduce(&[i32::from(!consistent)], &mut all, mpi_compat::Op::Max)?;
        let ((sources, source_weights), (destinations, destination_weights)) = mine?;
        if all[0] != 0 {
            return Err(Failure::new(
                ERR_TOPOLOGY,
                if consistent {
                    "another rank's graph is invalid or does not match"
                } else {
                    "an edge is declared at one end only"
                },
            ));
        }
        let mut entry = CommEntry::new(c.dup()?, errhandler)?;
        entry.graph = Some(DistGraph {
            sources,
            source_weights,
            destinations,
            destination_weights,
        });
        let h = s.tables.handle();
        s.tables.comms.insert(h, entry);
        // SAFETY: checked not null above; a valid `MPI_Comm *` by contract.
        unsafe { put(comm_dist_graph, h) }
    })
}

fn graph(s: &State, comm: c_int) -> CResult<&DistGraph> {
    s.tables
        .comm(comm)?
        .graph
        .as_ref()
        .ok_or_else(|| Failure::new(ERR_TOPOLOGY, "not a distributed-graph communicator"))
}

/// `MPI_Dist_graph_neighbors_count` (MPI-3.1 §7.5.5): this rank's in- and out-degree, and
/// whether the graph has weights.
#[no_mangle]
pub unsafe extern "C" fn MPI_Dist_graph_neighbors_count(
    comm: c_int,
    indegree: *mut c_int,
    outdegree: *mut c_int,
    weighted: *mut c_int,
) -> c_int {
    with_state("MPI_Dist_graph_neighbors_count", Some(comm), |s| {
        let g = graph(s, comm)?;
        let (i, o) = (g.sources.len() as c_int, g.destinations.len() as c_int);
        let w = c_int::from(g.source_weights.is_some());
        // SAFETY: valid `int *`s by contract (null is refused).
        unsafe { put(indegree, i)? };
        // SAFETY: as above.
        unsafe { put(outdegree, o)? };
        // SAFETY: as above.
        unsafe { put(weighted, w) }
    })
}

/// Writes the first `max` entries of `v` to `out` (unless `v` is empty or `max` is 0).
///
/// # Safety
/// `out` holds `max` ints.
unsafe fn fill(out: *mut c_int, max: c_int, v: &[c_int]) -> CResult<()> {
    let n = count(max)?.min(v.len());
    if n == 0 {
        return Ok(());
    }
    if out.is_null() {
        return Err(Failure::new(ERR_ARG, "a null neighbour array"));
    }
    // SAFETY: `out` holds `max` >= `n` ints by contract; `v` is distinct memory.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out, n) };
    Ok(())
}

/// `MPI_Dist_graph_neighbors` (MPI-3.1 §7.5.5): this rank's sources and destinations (and
/// their weights, when the graph has some and the arrays are not `MPI_UNWEIGHTED`), the first
/// `maxindegree`/`maxoutdegree` of each.
#[no_mangle]
pub unsafe extern "C" fn MPI_Dist_graph_neighbors(
    comm: c_int,
    maxindegree: c_int,
    sources: *mut c_int,
    sourceweights: *mut c_int,
    maxoutdegree: c_int,
    destinations: *mut c_int,
    destweights: *mut c_int,
) -> c_int {
    with_state("MPI_Dist_graph_neighbors", Some(comm), |s| {
        let g = graph(s, comm)?;
        let skip = |p: *mut c_int| unweighted(p.cast_const()) || p.is_null();
        // SAFETY: each array holds its `max...` ints by contract.
        unsafe { fill(sources, maxindegree, &g.sources)? };
        // SAFETY: as above.
        unsafe { fill(destinations, maxoutdegree, &g.destinations)? };
        if let Some(w) = g.source_weights.as_ref().filter(|_| !skip(sourceweights)) {
            // SAFETY: as above.
            unsafe { fill(sourceweights, maxindegree, w)? };
        }
        let dw = g.destination_weights.as_ref();
        if let Some(w) = dw.filter(|_| !skip(destweights)) {
            // SAFETY: as above.
            unsafe { fill(destweights, maxoutdegree, w)? };
        }
        Ok(())
    })
}

/// The sources and destinations of `comm`'s graph.
fn neighbours(s: &State, comm: c_int) -> CResult<(Vec<Rank>, Vec<Rank>)> {
    let g = graph(s, comm)?;
    Ok((g.sources.clone(), g.destinations.clone()))
}

/// Refuses `MPI_IN_PLACE`, which the neighbourhood collectives do not take.
fn not_in_place(sendbuf: *const c_void, recvbuf: *mut c_void) -> CResult<()> {
    if sendbuf == IN_PLACE || recvbuf.cast_const() == IN_PLACE {
        return Err(Failure::new(
            ERR_ARG,
            "MPI_IN_PLACE is not allowed in a neighbourhood collective",
        ));
    }
    Ok(())
}

/// Blocks numbered by position, given to the neighbours of those positions.
fn to_peers(blocks: Vec<(Rank, Block)>, peers: &[Rank]) -> Vec<(Rank, Block)> {
    blocks
        .into_iter()
        .zip(peers)
        .map(|((_, b), &p)| (p, b))
        .collect()
}

/// `MPI_Neighbor_allgather(v)`'s plan: this rank's block to every destination; block `i` of
/// `recvbuf` from source `i`.
///
/// # Safety
/// The buffers and arrays as `MPI_Neighbor_allgatherv` requires.
#[allow(clippy::too_many_arguments)]
unsafe fn plan_allgather(
    s: &State,
    sendbuf: *const c_void,
    scount: c_int,
    stype: c_int,
    recvbuf: *mut c_void,
    layout: Layout,
    rtype: c_int,
    comm: c_int,
) -> CResult<Plan> {
    not_in_place(sendbuf, recvbuf)?;
    let (sources, destinations) = neighbours(s, comm)?;
    let st = s.tables.datatype(stype)?;
    // SAFETY: `sendbuf` holds `scount` elements by contract.
    let mine = unsafe { st.pack(sendbuf.cast(), count(scount)?)? };
    // SAFETY: one layout entry per source, by contract.
    let recvs = unsafe { blocks_of(s, recvbuf, layout, rtype, sources.len())? };
    let mut p = Plan::new();
    for &d in &destinations {
        p.send(d, mine.clone());
    }
    for ((_, b), &src) in recvs.iter().zip(&sources) {
        // SAFETY: the block lies inside `recvbuf` by contract.
        unsafe { p.recv_block(src, &b.dt, b.at, b.count)? };
    }
    Ok(p)
}

/// `MPI_Neighbor_alltoall(v)`'s plan: block `j` to destination `j`, block `i` from source `i`.
///
/// # Safety
/// The buffers and arrays as `MPI_Neighbor_alltoallv` requires.
#[allow(clippy::too_many_arguments)]
unsafe fn plan_alltoall(
    s: &State,
    sendbuf: *const c_void,
    slayout: Layout,
    stype: c_int,
    recvbuf: *mut c_void,
    rlayout: Layout,
    rtype: c_int,
    comm: c_int,
) -> CResult<Plan> {
    not_in_place(sendbuf, recvbuf)?;
    let (sources, destinations) = neighbours(s, comm)?;
    // SAFETY: one layout entry per destination, by contract.
    let sends = unsafe { blocks_of(s, sendbuf, slayout, stype, destinations.len())? };
    // SAFETY: one layout entry per source, by contract.
    let recvs = unsafe { blocks_of(s, recvbuf, rlayout, rtype, sources.len())? };
    // SAFETY: the blocks lie inside the buffers by contract.
    unsafe { plan_exchange(&to_peers(sends, &destinations), &to_peers(recvs, &sources)) }
}

/// `MPI_Neighbor_alltoallw`'s plan: per neighbour a count, a byte displacement and a type.
///
/// # Safety
/// The buffers and arrays as `MPI_Neighbor_alltoallw` requires.
#[allow(clippy::too_many_arguments)]
unsafe fn plan_alltoallw(
    s: &State,
    sendbuf: *const c_void,
    scounts: *const c_int,
    sdispls: *const isize,
    stypes: *const c_int,
    recvbuf: *mut c_void,
    rcounts: *const c_int,
    rdispls: *const isize,
    rtypes: *const c_int,
    comm: c_int,
) -> CResult<Plan> {
    not_in_place(sendbuf, recvbuf)?;
    let (sources, destinations) = neighbours(s, comm)?;
    // SAFETY: one entry per destination, by contract.
    let sd = unsafe { array(sdispls, destinations.len(), "displacement")? };
    // SAFETY: one entry per source, by contract.
    let rd = unsafe { array(rdispls, sources.len(), "displacement")? };
    // SAFETY: one entry per destination in each array, by contract.
    let sends = unsafe { blocks_w(s, sendbuf, &destinations, scounts, sd, stypes)? };
    // SAFETY: one entry per source in each array, by contract.
    let recvs = unsafe { blocks_w(s, recvbuf, &sources, rcounts, rd, rtypes)? };
    // SAFETY: the blocks lie inside the buffers by contract.
    unsafe { plan_exchange(&sends, &recvs) }
}

/// Defines a neighbourhood collective and its non-blocking form over one plan function.
macro_rules! neighbour_pair {
    ($doc:literal, $name:ident, $iname:ident, ($($arg:ident: $ty:ty),*) => $plan:expr) => {
        #[doc = concat!("`", stringify!($name), "` (MPI-3.1 §7.6): ", $doc)]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty,)* comm: c_int) -> c_int {
            with_state(stringify!($name), Some(comm), |s| {
                let p = $plan(s, comm)?;
                // SAFETY: blocking: no request.
                unsafe { run(s, comm, p, None) }
            })
        }

        #[doc = concat!("`", stringify!($iname), "` (MPI-3.1 §7.7): the non-blocking `",
            stringify!($name), "`.")]
        #[no_mangle]
        pub unsafe extern "C" fn $iname(
            $($arg: $ty,)*
            comm: c_int,
            request: *mut c_int,
        ) -> c_int {
            with_state(stringify!($iname), Some(comm), |s| {
                let p = $plan(s, comm)?;
                // SAFETY: `request` as the MPI contract.
                unsafe { run(s, comm, p, Some(request)) }
            })
        }
    };
}

neighbour_pair!(
    "`sendcount` elements to every destination, `recvcount` from each source into its block.",
    MPI_Neighbor_allgather, MPI_Ineighbor_allgather,
    (sendbuf: *const c_void, sendcount: c_int, sendtype: c_int, recvbuf: *mut c_void,
     recvcount: c_int, recvtype: c_int)
    // SAFETY: buffers and arrays as the MPI contract (the caller's).
    => |s: &State, comm| unsafe { plan_allgather(s, sendbuf, sendcount, sendtype, recvbuf,
        Layout::Same(recvcount), recvtype, comm) }
);

neighbour_pair!(
    "`sendcount` elements to every destination, `recvcounts[i]` from source `i` at \
     `displs[i]` elements into the receive buffer.",
    MPI_Neighbor_allgatherv, MPI_Ineighbor_allgatherv,
    (sendbuf: *const c_void, sendcount: c_int, sendtype: c_int, recvbuf: *mut c_void,
     recvcounts: *const c_int, displs: *const c_int, recvtype: c_int)
    // SAFETY: buffers and arrays as the MPI contract (the caller's).
    => |s: &State, comm| unsafe { plan_allgather(s, sendbuf, sendcount, sendtype, recvbuf,
        Layout::Each(recvcounts, displs), recvtype, comm) }
);

neighbour_pair!(
    "block `j` of `sendcount` elements to destination `j`, block `i` from source `i`.",
    MPI_Neighbor_alltoall, MPI_Ineighbor_alltoall,
    (sendbuf: *const c_void, sendcount: c_int, sendtype: c_int, recvbuf: *mut c_void,
     recvcount: c_int, recvtype: c_int)
    // SAFETY: buffers and arrays as the MPI contract (the caller's).
    => |s: &State, comm| unsafe { plan_alltoall(s, sendbuf, Layout::Same(sendcount), sendtype, recvbuf,
        Layout::Same(recvcount), recvtype, comm) }
);

neighbour_pair!(
    "counts and displacements (in elements) per destination and per source.",
    MPI_Neighbor_alltoallv, MPI_Ineighbor_alltoallv,
    (sendbuf: *const c_void, sendcounts: *const c_int, sdispls: *const c_int, sendtype: c_int,
     recvbuf: *mut c_void, recvcounts: *const c_int, rdispls: *const c_int, recvtype: c_int)
    // SAFETY: buffers and arrays as the MPI contract (the caller's).
    => |s: &State, comm| unsafe { plan_alltoall(s, sendbuf, Layout::Each(sendcounts, sdispls), sendtype,
        recvbuf, Layout::Each(recvcounts, rdispls), recvtype, comm) }
);

neighbour_pair!(
    "counts, byte displacements (`MPI_Aint`) and datatypes per destination and per source.",
    MPI_Neighbor_alltoallw, MPI_Ineighbor_alltoallw,
    (sendbuf: *const c_void, sendcounts: *const c_int, sdispls: *const isize,
     sendtypes: *const c_int, recvbuf: *mut c_void, recvcounts: *const c_int,
     rdispls: *const isize, recvtypes: *const c_int)
    // SAFETY: buffers and arrays as the MPI contract (the caller's).
    => |s: &State, comm| unsafe { plan_alltoallw(s, sendbuf, sendcounts, sdispls, sendtypes, recvbuf,
        recvcounts, rdispls, recvtypes, comm) }
);
