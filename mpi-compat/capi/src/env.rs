//! Environment, communicators, groups and datatypes (MPI-3.1 chapters 4, 6, 8).

use std::ffi::{c_char, c_int, c_void};

use mpi_compat::Group;

use crate::state::{
    guarded, lock, put, with_state, CResult, CommEntry, Failure, State, ERRORS_ARE_FATAL,
    ERRORS_RETURN, ERR_ARG, ERR_COMM, ERR_GROUP, ERR_OTHER, ERR_TYPE, SUCCESS,
};
use crate::types::{self, count, Datatype};

fn init() -> c_int {
    let mut guard = lock();
    if guard
        .as_ref()
        .is_some_and(|s| s.universe.is_some() || s.finalized)
    {
        eprintln!("dsmmpi: MPI_Init called twice");
        return ERR_OTHER;
    }
    // The C program's entry: it cannot install a Rust subscriber, so DSM_LOG works here.
    dsm_core::logging::init();
    match mpi_compat::initialize() {
        Ok(u) => {
            let mut s = State::default();
            types::install_predefined(&mut s.tables);
            let world = match CommEntry::new(u.world(), ERRORS_ARE_FATAL) {
                Ok(e) => e,
                Err(f) => {
                    eprintln!("dsmmpi: fatal error in MPI_Init: {}", f.message);
                    std::process::exit(f.class.clamp(1, 255))
                }
            };
            s.tables.comms.insert(1, world);
            s.universe = Some(u);
            *guard = Some(s);
            SUCCESS
        }
        Err(e) => {
            eprintln!("dsmmpi: fatal error in MPI_Init: {e}");
            std::process::exit(e.class() as i32)
        }
    }
}

/// `MPI_Init` (MPI-3.1 §8.7).
#[no_mangle]
pub unsafe extern "C" fn MPI_Init(_argc: *mut c_int, _argv: *mut *mut *mut c_char) -> c_int {
    guarded("MPI_Init", init)
}

/// `MPI_Init_thread` (MPI-3.1 §12.4.3): provides the level required, up to
/// `MPI_THREAD_MULTIPLE`. Every call is safe from any thread: calls run one at a time under
/// the library lock, except the ones that may block on other processes (point-to-point sends
/// and receives, `MPI_Wait`/`MPI_Waitall`, and the collectives `MPI_Barrier`, `MPI_Bcast`,
/// `MPI_Reduce`, `MPI_Allreduce`, `MPI_Gather`, `MPI_Allgather`, `MPI_Scatter`,
/// `MPI_Alltoall`), which release it while they wait, so that a thread blocked in one does not
/// hold back the others. See docs/C_API.md for the calls that still block under the lock.
#[no_mangle]
pub unsafe extern "C" fn MPI_Init_thread(
    _argc: *mut c_int,
    _argv: *mut *mut *mut c_char,
    required: c_int,
    provided: *mut c_int,
) -> c_int {
    guarded("MPI_Init_thread", || {
        let r = init();
        if r == SUCCESS && !provided.is_null() {
            // SAFETY: not null; the caller passes a valid `int *`.
            unsafe { provided.write(required.clamp(0, 3)) };
        }
        r
    })
}

/// `MPI_Finalize` (MPI-3.1 §8.7).
#[no_mangle]
pub unsafe extern "C" fn MPI_Finalize() -> c_int {
    guarded("MPI_Finalize", finalize)
}

fn finalize() -> c_int {
    let mut guard = lock();
    let Some(state) = guard.as_mut().filter(|s| s.universe.is_some()) else {
        eprintln!("dsmmpi: MPI_Finalize called before MPI_Init or twice");
        return ERR_OTHER;
    };
    // Everything that refers to the universe goes first.
    state.tables.requests.clear();
    state.tables.detached.clear();
    let windows: Vec<_> = state.tables.windows.drain().collect();
    drop(windows);
    state.tables.comms.clear();
    crate::recent::tables_changed();
    crate::recent::forget();
    state.tables.groups.clear();
    state.finalized = true;
    let Some(universe) = state.universe.take() else {
        return ERR_OTHER;
    };
    drop(guard);
    match universe.finalize() {
        Ok(()) => SUCCESS,
        Err(e) => {
            eprintln!("dsmmpi: MPI_Finalize: {e}");
            e.class() as i32
        }
    }
}

/// `MPI_Initialized`.
#[no_mangle]
pub unsafe extern "C" fn MPI_Initialized(flag: *mut c_int) -> c_int {
    let v = lock()
        .as_ref()
        .is_some_and(|s| s.universe.is_some() || s.finalized);
    if flag.is_null() {
        return ERR_ARG;
    }
    // SAFETY: not null; a valid `int *` by contract.
    unsafe { flag.write(c_int::from(v)) };
    SUCCESS
}

/// `MPI_Finalized`.
#[no_mangle]
pub unsafe extern "C" fn MPI_Finalized(flag: *mut c_int) -> c_int {
    let v = lock().as_ref().is_some_and(|s| s.finalized);
    if flag.is_null() {
        return ERR_ARG;
    }
    // SAFETY: not null; a valid `int *` by contract.
    unsafe { flag.write(c_int::from(v)) };
    SUCCESS
}

/// `MPI_Abort` (MPI-3.1 §8.7): ends this process with `errorcode`; `dsmrun` then stops the
/// other ranks.
#[no_mangle]
pub unsafe extern "C" fn MPI_Abort(_comm: c_int, errorcode: c_int) -> c_int {
    eprintln!("dsmmpi: MPI_Abort with error code {errorcode}");
    std::process::exit(abort_status(errorcode))
}

/// The exit status of `MPI_Abort(errorcode)`: the low byte the shell sees, never 0 (success).
fn abort_status(errorcode: c_int) -> i32 {
    match errorcode & 0xff {
        0 => 1,
        low => low,
    }
}

/// `MPI_Wtime` (MPI-3.1 §8.6).
#[no_mangle]
pub extern "C" fn MPI_Wtime() -> f64 {
    mpi_compat::time()
}

/// `MPI_Comm_set_errhandler` (MPI-3.1 §8.3): `MPI_ERRORS_ARE_FATAL` or `MPI_ERRORS_RETURN`.
#[no_mangle]
pub unsafe extern "C" fn MPI_Comm_set_errhandler(comm: c_int, errhandler: c_int) -> c_int {
    with_state("MPI_Comm_set_errhandler", Some(comm), |s| {
        if errhandler != ERRORS_ARE_FATAL && errhandler != ERRORS_RETURN {
            return Err(Failure::new(
                ERR_ARG,
                format!("invalid error handler {errhandler}"),
            ));
        }
        let e = s
            .tables
            .comms
            .get_mut(&comm)
            .ok_or_else(|| Failure::new(ERR_COMM, format!("invalid communicator {comm}")))?;
        e.errhandler = errhandler;
        crate::recent::tables_changed();
        Ok(())
    })
}

/// `MPI_Error_class`: error codes are classes here.
#[no_mangle]
pub unsafe extern "C" fn MPI_Error_class(errorcode: c_int, errorclass: *mut c_int) -> c_int {
    if errorclass.is_null() {
        return ERR_ARG;
    }
    // SAFETY: not null; a valid `int *` by contract.
    unsafe { errorclass.write(errorcode) };
    SUCCESS
}

/// `MPI_Error_string`.
#[no_mangle]
pub unsafe extern "C" fn MPI_Error_string(
    errorcode: c_int,
    string: *mut c_char,
    resultlen: *mut c_int,
) -> c_int {
    let text = match errorcode {
        0 => "MPI_SUCCESS: no error",
        2 => "MPI_ERR_COUNT: invalid count",
        3 => "MPI_ERR_TYPE: invalid datatype",
        4 => "MPI_ERR_TAG: invalid tag",
        5 => "MPI_ERR_COMM: invalid communicator",
        6 => "MPI_ERR_RANK: invalid rank",
        8 => "MPI_ERR_GROUP: invalid group",
        9 => "MPI_ERR_OP: invalid operation",
        11 => "MPI_ERR_DIMS: invalid dimensions",
        12 => "MPI_ERR_ARG: invalid argument",
        14 => "MPI_ERR_TRUNCATE: message truncated",
        15 => "MPI_ERR_OTHER: runtime error",
        19 => "MPI_ERR_REQUEST: invalid request",
        28 => "MPI_ERR_DISP: invalid displacement",
        34 => "MPI_ERR_NO_MEM: out of memory",
        45 => "MPI_ERR_RMA_RANGE: access outside the window",
        46 => "MPI_ERR_RMA_SYNC: RMA call outside an epoch",
        53 => "MPI_ERR_WIN: invalid window",
        75 => "MPI_ERR_PROC_FAILED: a process failed",
        _ => "unknown error class",
    };
    // SAFETY: the caller provides MPI_MAX_ERROR_STRING (512) bytes; the text is shorter.
    unsafe { write_name(text, string, resultlen) }
}

/// Copies `text` and a NUL into `out` (at most 127 bytes), and its length into `len`.
///
/// # Safety
/// `out` holds at least 128 bytes; `len` is valid for a write.
unsafe fn write_name(text: &str, out: *mut c_char, len: *mut c_int) -> c_int {
    if out.is_null() || len.is_null() {
        return ERR_ARG;
    }
    let n = text.len().min(127);
    // SAFETY: `out` holds at least 128 bytes by contract, and `n + 1` <= 128.
    let dst = unsafe { std::slice::from_raw_parts_mut(out.cast::<u8>(), n + 1) };
    dst[..n].copy_from_slice(&text.as_bytes()[..n]);
    dst[n] = 0;
    // SAFETY: not null; a valid `int *` by contract.
    unsafe { len.write(n as c_int) };
    SUCCESS
}

/// `MPI_Alloc_mem` (MPI-3.1 §8.2): memory from the runtime's global memory (this rank's
/// arena), which RMA windows reach directly and dynamic windows can attach.
#[no_mangle]
pub unsafe extern "C" fn MPI_Alloc_mem(size: isize, _info: c_int, baseptr: *mut c_void) -> c_int {
    with_state("MPI_Alloc_mem", None, |s| {
        let size = usize::try_from(size).map_err(|_| Failure::new(ERR_ARG, "negative size"))?;
        let u = s
            .universe
            .as_ref()
            .ok_or_else(|| Failure::new(ERR_OTHER, "not initialised"))?;
        let p = u.dsm().malloc(size.max(1))?;
        // SAFETY: `baseptr` is a `void **` by the MPI contract.
        unsafe { put(baseptr.cast::<*mut c_void>(), p.cast()) }
    })
}

/// `MPI_Free_mem` (MPI-3.1 §8.2).
#[no_mangle]
pub unsafe extern "C" fn MPI_Free_mem(base: *mut c_void) -> c_int {
    with_state("MPI_Free_mem", None, |s| {
        let u = s
            .universe
            .as_ref()
            .ok_or_else(|| Failure::new(ERR_OTHER, "not initialised"))?;
        u.dsm().free(base.cast())?;
        Ok(())
    })
}

/// `MPI_Comm_rank` (MPI-3.1 §6.4.1).
#[no_mangle]
pub unsafe extern "C" fn MPI_Comm_rank(comm: c_int, rank: *mut c_int) -> c_int {
    with_state("MPI_Comm_rank", Some(comm), |s| {
        let r = s.tables.comm(comm)?.comm.rank();
        // SAFETY: a valid `int *` by contract (null is refused).
        unsafe { put(rank, r) }
    })
}

/// `MPI_Comm_size` (MPI-3.1 §6.4.1).
#[no_mangle]
pub unsafe extern "C" fn MPI_Comm_size(comm: c_int, size: *mut c_int) -> c_int {
    with_state("MPI_Comm_size", Some(comm), |s| {
        let n = s.tables.comm(comm)?.comm.size();
        // SAFETY: a valid `int *` by contract (null is refused).
        unsafe { put(size, n) }
    })
}

pub(crate) fn dup_entry(s: &mut State, comm: c_int) -> CResult<CommEntry> {
    let e = s.tables.comm(comm)?;
    let mut new = CommEntry::new(e.comm.dup()?, e.errhandler)?;
    new.cart = e.cart.clone();
    new.graph = e.graph.clone();
    Ok(new)
}

/// `MPI_Comm_dup` (MPI-3.1 §6.4.2).
#[no_mangle]
pub unsafe extern "C" fn MPI_Comm_dup(comm: c_int, newcomm: *mut c_int) -> c_int {
    with_state("MPI_Comm_dup", Some(comm), |s| {
        let e = dup_entry(s, comm)?;
        let h = s.tables.handle();
        s.tables.comms.insert(h, e);
        // SAFETY: a valid `MPI_Comm *` by contract (null is refused).
        unsafe { put(newcomm, h) }
    })
}

/// `MPI_Comm_split` (MPI-3.1 §6.4.2): one communicator per color, ranks ordered by key
/// (ties by rank); `MPI_UNDEFINED` gives `MPI_COMM_NULL`. The new communicator keeps the
/// error handler of `comm`. Windows cannot be created over it unless it has every rank in
/// order (`MPI_ERR_COMM`).
#[no_mangle]
pub unsafe extern "C" fn MPI_Comm_split(
    comm: c_int,
    color: c_int,
    key: c_int,
    newcomm: *mut c_int,
) -> c_int {
    with_state("MPI_Comm_split", Some(comm), |s| {
        let e = s.tables.comm(comm)?;
        let errhandler = e.errhandler;
        // The split is collective: it is made even when `newcomm` is null (refused after,
        // before the new communicator gets a handle: it is dropped).
        let sub = e.comm.split((color != UNDEFINED).then_some(color), key)?;
        let entry = sub.map(|c| CommEntry::new(c, errhandler)).transpose()?;
        if newcomm.is_null() {
            return Err(Failure::new(ERR_ARG, "a null communicator pointer"));
        }
        let h = match entry {
            None => 0,
            Some(e) => {
                let h = s.tables.handle();
                s.tables.comms.insert(h, e);
                h
            }
        };
        // SAFETY: a valid `MPI_Comm *` by contract (null is refused).
        unsafe { put(newcomm, h) }
    })
}

/// `MPI_UNDEFINED`.
const UNDEFINED: c_int = -32766;

/// `MPI_Comm_free` (MPI-3.1 §6.4.3). `MPI_COMM_WORLD` cannot be freed.
#[no_mangle]
pub unsafe extern "C" fn MPI_Comm_free(comm: *mut c_int) -> c_int {
    with_state("MPI_Comm_free", None, |s| {
        if comm.is_null() {
            return Err(Failure::new(ERR_ARG, "a null communicator pointer"));
        }
        // SAFETY: not null; a valid `MPI_Comm *` by contract.
        let c = unsafe { comm.read() };
        crate::recent::tables_changed();
        if c == 1 || s.tables.comms.remove(&c).is_none() {
            return Err(Failure::new(
                ERR_COMM,
                format!("cannot free communicator {c}"),
            ));
        }
        // SAFETY: as above.
        unsafe { comm.write(0) };
        Ok(())
    })
}

/// `MPI_Comm_group` (MPI-3.1 §6.3.2).
#[no_mangle]
pub unsafe extern "C" fn MPI_Comm_group(comm: c_int, group: *mut c_int) -> c_int {
    with_state("MPI_Comm_group", Some(comm), |s| {
        let g = Group::of(&s.tables.comm(comm)?.comm);
        let h = s.tables.handle();
        s.tables.groups.insert(h, g);
        // SAFETY: a valid `MPI_Group *` by contract (null is refused).
        unsafe { put(group, h) }
    })
}

/// `MPI_Group_incl` (MPI-3.1 §6.3.2).
#[no_mangle]
pub unsafe extern "C" fn MPI_Group_incl(
    group: c_int,
    n: c_int,
    ranks: *const c_int,
    newgroup: *mut c_int,
) -> c_int {
    with_state("MPI_Group_incl", None, |s| {
        let n = count(n)?;
        if n > 0 && ranks.is_null() {
            return Err(Failure::new(ERR_ARG, "a null rank list"));
        }
        let list: &[c_int] = if n == 0 {
            &[]
        } else {
            // SAFETY: not null, and `n` ints long by contract.
            unsafe { std::slice::from_raw_parts(ranks, n) }
        };
        let g = s.tables.group(group)?.include(list)?;
        let h = s.tables.handle();
        s.tables.groups.insert(h, g);
        // SAFETY: a valid `MPI_Group *` by contract (null is refused).
        unsafe { put(newgroup, h) }
    })
}

/// `MPI_Group_free` (MPI-3.1 §6.3.4).
#[no_mangle]
pub unsafe extern "C" fn MPI_Group_free(group: *mut c_int) -> c_int {
    with_state("MPI_Group_free", None, |s| {
        if group.is_null() {
            return Err(Failure::new(ERR_ARG, "a null group pointer"));
        }
        // SAFETY: not null; a valid `MPI_Group *` by contract.
        let g = unsafe { group.read() };
        s.tables
            .groups
            .remove(&g)
            .ok_or_else(|| Failure::new(ERR_GROUP, format!("invalid group {g}")))?;
        // SAFETY: as above.
        unsafe { group.write(0) };
        Ok(())
    })
}

/// `MPI_Type_size` (MPI-3.1 §4.1.5).
#[no_mangle]
pub unsafe extern "C" fn MPI_Type_size(datatype: c_int, size: *mut c_int) -> c_int {
    with_state("MPI_Type_size", None, |s| {
        let t = s
            .tables
            .types
            .get(&datatype)
            .ok_or_else(|| Failure::new(ERR_TYPE, format!("invalid datatype {datatype}")))?;
        let bytes = c_int::try_from(t.size)
            .map_err(|_| Failure::new(ERR_TYPE, "datatype size does not fit an int"))?;
        // SAFETY: a valid `int *` by contract (null is refused).
        unsafe { put(size, bytes) }
    })
}

/// `MPI_Type_get_name` (MPI-3.1 §6.8): the predefined names; "" for derived types.
#[no_mangle]
pub unsafe extern "C" fn MPI_Type_get_name(
    datatype: c_int,
    type_name: *mut c_char,
    resultlen: *mut c_int,
) -> c_int {
    with_state("MPI_Type_get_name", None, |s| {
        let t = s
            .tables
            .types
            .get(&datatype)
            .ok_or_else(|| Failure::new(ERR_TYPE, format!("invalid datatype {datatype}")))?;
        // SAFETY: the caller provides MPI_MAX_OBJECT_NAME (128) bytes and an `int *`.
        match unsafe { write_name(t.name, type_name, resultlen) } {
            SUCCESS => Ok(()),
            c => Err(Failure::new(c, "a null output pointer")),
        }
    })
}

fn new_type(s: &mut State, old: c_int, pieces: &[(usize, usize)], out: *mut c_int) -> CResult<()> {
    let o = s
        .tables
        .types
        .get(&old)
        .ok_or_else(|| Failure::new(ERR_TYPE, format!("invalid datatype {old}")))?;
    let t = Datatype::derive(o, pieces)?;
    let h = s.tables.handle();
    s.tables.types.insert(h, t);
    // SAFETY: a valid `MPI_Datatype *` by contract (null is refused).
    unsafe { put(out, h) }
}

/// `MPI_Type_contiguous` (MPI-3.1 §4.1.2).
#[no_mangle]
pub unsafe extern "C" fn MPI_Type_contiguous(n: c_int, old: c_int, newtype: *mut c_int) -> c_int {
    with_state("MPI_Type_contiguous", None, |s| {
        new_type(s, old, &[(0, count(n)?)], newtype)
    })
}

/// `MPI_Type_vector` (MPI-3.1 §4.1.2): non-negative strides only.
#[no_mangle]
pub unsafe extern "C" fn MPI_Type_vector(
    n: c_int,
    blocklength: c_int,
    stride: c_int,
    old: c_int,
    newtype: *mut c_int,
) -> c_int {
    with_state("MPI_Type_vector", None, |s| {
        let extent = s
            .tables
            .types
            .get(&old)
            .map(|t| t.extent)
            .ok_or_else(|| Failure::new(ERR_TYPE, format!("invalid datatype {old}")))?;
        let (n, bl) = (count(n)?, count(blocklength)?);
        let stride = usize::try_from(stride)
            .map_err(|_| Failure::new(ERR_ARG, "negative strides are not supported"))?;
        let pieces = (0..n)
            .map(|i| {
                i.checked_mul(stride)
                    .and_then(|e| e.checked_mul(extent))
                    .map(|d| (d, bl))
                    .ok_or_else(|| Failure::new(ERR_TYPE, "datatype too large"))
            })
            .collect::<CResult<Vec<(usize, usize)>>>()?;
        new_type(s, old, &pieces, newtype)
    })
}

/// `MPI_Type_indexed` (MPI-3.1 §4.1.2): non-negative displacements only.
#[no_mangle]
pub unsafe extern "C" fn MPI_Type_indexed(
    n: c_int,
    blocklengths: *const c_int,
    displacements: *const c_int,
    old: c_int,
    newtype: *mut c_int,
) -> c_int {
    with_state("MPI_Type_indexed", None, |s| {
        let n = count(n)?;
        if n > 0 && (blocklengths.is_null() || displacements.is_null()) {
            return Err(Failure::new(ERR_ARG, "a null array"));
        }
        let extent = s
            .tables
            .types
            .get(&old)
            .map(|t| t.extent)
            .ok_or_else(|| Failure::new(ERR_TYPE, format!("invalid datatype {old}")))?;
        // SAFETY: the array holds `n` ints by contract (null refused above).
        let bls = unsafe { std::slice::from_raw_parts(blocklengths, n) };
        // SAFETY: as above.
        let ds = unsafe { std::slice::from_raw_parts(displacements, n) };
        let mut pieces = Vec::with_capacity(n);
        for (&bl, &d) in bls.iter().zip(ds) {
            let d = usize::try_from(d)
                .map_err(|_| Failure::new(ERR_ARG, "negative displacements are not supported"))?;
            let d = d
                .checked_mul(extent)
                .ok_or_else(|| Failure::new(ERR_TYPE, "datatype too large"))?;
            pieces.push((d, count(bl)?));
        }
        new_type(s, old, &pieces, newtype)
    })
}

/// `MPI_Type_commit` (MPI-3.1 §4.1.9).
#[no_mangle]
pub unsafe extern "C" fn MPI_Type_commit(datatype: *mut c_int) -> c_int {
    with_state("MPI_Type_commit", None, |s| {
        if datatype.is_null() {
            return Err(Failure::new(ERR_ARG, "a null datatype pointer"));
        }
        // SAFETY: not null; a valid `MPI_Datatype *` by contract.
        let h = unsafe { datatype.read() };
        let t = s
            .tables
            .types
            .get_mut(&h)
            .ok_or_else(|| Failure::new(ERR_TYPE, format!("invalid datatype {h}")))?;
        t.committed = true;
        crate::recent::tables_changed();
        Ok(())
    })
}

/// `MPI_Type_free` (MPI-3.1 §4.1.10). Predefined types cannot be freed.
#[no_mangle]
pub unsafe extern "C" fn MPI_Type_free(datatype: *mut c_int) -> c_int {
    with_state("MPI_Type_free", None, |s| {
        if datatype.is_null() {
            return Err(Failure::new(ERR_ARG, "a null datatype pointer"));
        }
        // SAFETY: not null; a valid `MPI_Datatype *` by contract.
        let h = unsafe { datatype.read() };
        crate::recent::tables_changed();
        if types::is_predefined(h) || s.tables.types.remove(&h).is_none() {
            return Err(Failure::new(ERR_TYPE, format!("cannot free datatype {h}")));
        }
        // SAFETY: as above.
        unsafe { datatype.write(0) };
        Ok(())
    })
}

/// `MPI_Get_address` (MPI-3.1 §4.1.5).
#[no_mangle]
pub unsafe extern "C" fn MPI_Get_address(location: *const c_void, address: *mut isize) -> c_int {
    if address.is_null() {
        return ERR_ARG;
    }
    // SAFETY: not null; a valid `MPI_Aint *` by contract.
    unsafe { address.write(location as isize) };
    SUCCESS
}

#[cfg(test)]
mod tests {
    use super::abort_status;

    #[test]
    fn abort_status_is_never_success() {
        assert_eq!(abort_status(0), 1);
        assert_eq!(abort_status(256), 1);
        assert_eq!(abort_status(258), 2);
        assert_eq!(abort_status(3), 3);
        assert_eq!(abort_status(255), 255);
    }
}
