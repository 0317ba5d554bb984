//! Point-to-point calls (MPI-3.1 chapter 3).

use std::ffi::{c_int, c_void};

use mpi_compat::{Source, Status, TagMatch, PROC_NULL};

use crate::request::CRequest;
use crate::state::{
    lock, put, with_comm, with_state, with_state_then, CResult, Failure, ERR_ARG, ERR_OTHER,
    ERR_REQUEST, ERR_TYPE,
};
use crate::types::count;

/// `MPI_Status` as `mpi.h` lays it out.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MpiStatus {
    /// `MPI_SOURCE`.
    pub source: c_int,
    /// `MPI_TAG`.
    pub tag: c_int,
    /// `MPI_ERROR`.
    pub error: c_int,
    reserved: c_int,
    /// Bytes received.
    pub count: i64,
}

fn source(s: c_int) -> Source {
    if s == -2 {
        Source::Any
    } else {
        Source::Rank(s)
    }
}

fn tag(t: c_int) -> TagMatch {
    if t == -1 {
        TagMatch::Any
    } else {
        TagMatch::Tag(t)
    }
}

/// Fills an `MPI_Status` unless it is `MPI_STATUS_IGNORE`.
///
/// # Safety
/// `out` is null or valid for a write.
unsafe fn status(out: *mut MpiStatus, st: Status) {
    if !out.is_null() {
        // SAFETY: not null; valid for a write by contract.
        unsafe {
            out.write(MpiStatus {
                source: st.source,
                tag: st.tag,
                error: 0,
                reserved: 0,
                count: st.bytes as i64,
            })
        };
    }
}

/// The bytes of a contiguous C buffer, to be written.
///
/// # Safety
/// `buf` is valid for writes of `len` bytes (or `len` is 0), and not otherwise borrowed for `'a`.
unsafe fn bytes_mut<'a>(buf: *mut c_void, len: usize) -> CResult<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(Failure::new(ERR_ARG, "a null buffer"));
    }
    // SAFETY: not null, `len` writable bytes by contract.
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// `MPI_Send` (MPI-3.1 §3.2.1).
#[no_mangle]
pub unsafe extern "C" fn MPI_Send(
    buf: *const c_void,
    n: c_int,
    datatype: c_int,
    dest: c_int,
    t: c_int,
    comm: c_int,
) -> c_int {
    with_comm("MPI_Send", comm, &[datatype], |s| {
        let dt = s.datatype(datatype)?;
        // SAFETY: `buf` holds `n` elements of `datatype` by contract.
        let data = unsafe { dt.view(buf.cast(), count(n)?)? };
        s.comm.send(&data, dest, t)?;
        Ok(())
    })
}

/// `MPI_Recv` (MPI-3.1 §3.2.4).
#[no_mangle]
pub unsafe extern "C" fn MPI_Recv(
    buf: *mut c_void,
    n: c_int,
    datatype: c_int,
    src: c_int,
    t: c_int,
    comm: c_int,
    st: *mut MpiStatus,
) -> c_int {
    with_comm("MPI_Recv", comm, &[datatype], |s| {
        let dt = s.datatype(datatype)?;
        let n = count(n)?;
        let c = &s.comm;
        let got = if src == PROC_NULL {
            // Completes at once, the buffer untouched.
            c.recv(&mut [0u8; 0], PROC_NULL, tag(t))?
        } else if dt.contiguous() {
            // SAFETY: `buf` holds `n` elements by contract, and the receive is waited for
            // before this returns (the landing, if any, finishes first).
            let b: &'static mut [u8] = unsafe { bytes_mut(buf, n * dt.size)? };
            // SAFETY: as above.
            unsafe { c.irecv_landed(b, source(src), tag(t))? }.wait()?
        } else {
            let mut tmp = vec![0u8; n * dt.size];
            let got = c.recv(&mut tmp, source(src), tag(t))?;
            // SAFETY: `buf` holds `n` elements by contract.
            unsafe { dt.unpack(&tmp[..got.bytes], buf.cast(), n)? };
            got
        };
        // SAFETY: `st` is null or a valid `MPI_Status *`.
        unsafe { status(st, got) };
        Ok(())
    })
}

/// `MPI_Isend` (MPI-3.1 §3.7.2): what the transport cannot take at once is written from
/// the buffer later (tcp, a full socket), and the request completes when its last byte is
/// written; a derived datatype's packed bytes are sent before this returns.
#[no_mangle]
pub unsafe extern "C" fn MPI_Isend(
    buf: *const c_void,
    n: c_int,
    datatype: c_int,
    dest: c_int,
    t: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Isend", Some(comm), |s| {
        let dt = s.tables.datatype(datatype)?;
        // SAFETY: `buf` holds `n` elements of `datatype` by contract.
        let data = unsafe { dt.view(buf.cast(), count(n)?)? };
        let c = &s.tables.comm(comm)?.comm;
        let r = match data {
            // SAFETY: MPI requires the buffer to stay valid and untouched by the program
            // until the request completes; the request lives in the table until then (freed
            // early, it is progressed to completion among the detached requests).
            std::borrow::Cow::Borrowed(b) => unsafe { c.isend_lent(b, dest, t)? },
            std::borrow::Cow::Owned(packed) => {
                c.send(&packed, dest, t)?;
                mpi_compat::Request::completed(Status {
                    source: c.rank(),
                    tag: t,
                    bytes: packed.len(),
                })
            }
        };
        let h = s.tables.handle();
        s.tables.requests.insert(h, CRequest::Plain(r));
        // SAFETY: a valid `MPI_Request *` by contract (null is refused).
        unsafe { put(request, h) }
    })
}

/// `MPI_Irecv` (MPI-3.1 §3.7.2): contiguous datatypes only (`MPI_ERR_TYPE` otherwise). The
/// buffer must stay valid until the request completes, as MPI requires.
#[no_mangle]
pub unsafe extern "C" fn MPI_Irecv(
    buf: *mut c_void,
    n: c_int,
    datatype: c_int,
    src: c_int,
    t: c_int,
    comm: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Irecv", Some(comm), |s| {
        let dt = s.tables.datatype(datatype)?;
        if !dt.contiguous() {
            return Err(Failure::new(
                ERR_TYPE,
                "MPI_Irecv supports contiguous datatypes only",
            ));
        }
        // SAFETY: MPI requires the buffer to hold `n` elements and to stay valid, untouched
        // by the program, until the request completes; the request lives in the table until
        // then (or until MPI_Finalize drops it, after which nothing writes into it).
        let b: &'static mut [u8] = unsafe { bytes_mut(buf, count(n)? * dt.size)? };
        let c = &s.tables.comm(comm)?.comm;
        // SAFETY: as above: the buffer is the request's until it completes.
        let r = unsafe { c.irecv_landed(b, source(src), tag(t))? };
        let h = s.tables.handle();
        s.tables.requests.insert(h, CRequest::Plain(r));
        // SAFETY: a valid `MPI_Request *` by contract (null is refused).
        unsafe { put(request, h) }
    })
}

/// Completes request `h` (blocking or not); on completion frees it and sets `*req` to
/// `MPI_REQUEST_NULL`, unless it is persistent (it stays, inactive). Requests freed before
/// they completed are progressed too.
///
/// # Safety
/// `req` is a valid `MPI_Request *`; `st` is null or a valid `MPI_Status *`.
unsafe fn complete(
    s: &mut crate::state::State,
    req: *mut c_int,
    st: *mut MpiStatus,
    block: bool,
) -> CResult<bool> {
    if req.is_null() {
        return Err(Failure::new(ERR_ARG, "a null request pointer"));
    }
    // SAFETY: not null; valid by contract.
    let h = unsafe { req.read() };
    if h == 0 {
        // MPI_REQUEST_NULL: an empty status.
        // SAFETY: as the caller's contract.
        unsafe {
            status(
                st,
                Status {
                    source: -2,
                    tag: -1,
                    bytes: 0,
                },
            )
        };
        return Ok(true);
    }
    let r = s
        .tables
        .requests
        .get_mut(&h)
        .ok_or_else(|| Failure::new(ERR_REQUEST, format!("invalid request {h}")))?;
    let progress = r.progress(block).transpose();
    if !s.tables.detached.is_empty() {
        // After the request: what it waited for may have brought theirs too. Their errors
        // have nobody to go to (MPI-3.1 §3.7.3).
        s.tables
            .detached
            .retain_mut(|r| matches!(r.progress(false), Ok(None)));
    }
    match progress {
        None => Ok(false),
        Some(result) => {
            let persistent = matches!(s.tables.requests.get(&h), Some(r) if r.persistent());
            if !persistent {
                s.tables.requests.remove(&h);
                // SAFETY: valid by contract.
                unsafe { req.write(0) };
            }
            let got = result?;
            // SAFETY: as the caller's contract.
            unsafe { status(st, got) };
            Ok(true)
        }
    }
}

/// Waits for request `*req` as [`complete`] does (blocking), without holding the library lock
/// while it blocks: the request is taken out of the table, waited for, and a persistent one is
/// put back. Another thread's calls go on meanwhile (`MPI_THREAD_MULTIPLE`); MPI forbids two
/// threads to wait for the same request at once (MPI-3.1 §12.4.2).
///
/// # Safety
/// `req` is a valid `MPI_Request *`; `st` is null or a valid `MPI_Status *`.
unsafe fn wait_unlocked(req: *mut c_int, st: *mut MpiStatus) -> CResult<()> {
    if req.is_null() {
        return Err(Failure::new(ERR_ARG, "a null request pointer"));
    }
    // SAFETY: not null; valid by contract.
    let h = unsafe { req.read() };
    if h == 0 {
        // MPI_REQUEST_NULL: an empty status.
        // SAFETY: as the caller's contract.
        unsafe { status(st, EMPTY) };
        return Ok(());
    }
    let mut r = {
        let mut guard = lock();
        let s = guard
            .as_mut()
            .filter(|s| s.universe.is_some())
            .ok_or_else(|| Failure::new(ERR_OTHER, "a wait outside MPI_Init .. MPI_Finalize"))?;
        s.tables
            .requests
            .remove(&h)
            .ok_or_else(|| Failure::new(ERR_REQUEST, format!("invalid request {h}")))?
    };
    let result = r.progress(true);
    let persistent = r.persistent();
    {
        let mut guard = lock();
        if let Some(s) = guard.as_mut().filter(|s| s.universe.is_some()) {
            if persistent {
                s.tables.requests.insert(h, r);
            }
            if !s.tables.detached.is_empty() {
                // What this request waited for may have brought theirs too (see `complete`).
                s.tables
                    .detached
                    .retain_mut(|r| matches!(r.progress(false), Ok(None)));
            }
        }
    }
    if !persistent {
        // SAFETY: valid by contract.
        unsafe { req.write(0) };
    }
    let got = result?.unwrap_or(EMPTY);
    // SAFETY: as the caller's contract.
    unsafe { status(st, got) };
    Ok(())
}

/// `MPI_Wait` (MPI-3.1 §3.7.3). Blocks without the library lock (see `wait_unlocked`).
#[no_mangle]
pub unsafe extern "C" fn MPI_Wait(request: *mut c_int, st: *mut MpiStatus) -> c_int {
    with_state_then(
        "MPI_Wait",
        None,
        |_| Ok(()),
        // SAFETY: pointers as the MPI contract.
        |()| unsafe { wait_unlocked(request, st) },
    )
}

/// `MPI_Test` (MPI-3.1 §3.7.3).
#[no_mangle]
pub unsafe extern "C" fn MPI_Test(
    request: *mut c_int,
    flag: *mut c_int,
    st: *mut MpiStatus,
) -> c_int {
    with_state("MPI_Test", None, |s| {
        // SAFETY: pointers as the MPI contract.
        let done = unsafe { complete(s, request, st, false)? };
        // SAFETY: a valid `int *` by contract (null is refused).
        unsafe { put(flag, c_int::from(done)) }
    })
}

/// `MPI_Waitall` (MPI-3.1 §3.7.5).
#[no_mangle]
pub unsafe extern "C" fn MPI_Waitall(
    n: c_int,
    requests: *mut c_int,
    statuses: *mut MpiStatus,
) -> c_int {
    with_state_then(
        "MPI_Waitall",
        None,
        |_| {
            let n = count(n)?;
            if n > 0 && requests.is_null() {
                return Err(Failure::new(ERR_ARG, "a null request array"));
            }
            Ok(n)
        },
        |n| {
            let mut first = None;
            for i in 0..n {
                let st = if statuses.is_null() {
                    std::ptr::null_mut()
                } else {
                    statuses.wrapping_add(i)
                };
                // SAFETY: `requests` and `statuses` (unless null) hold `n` entries by contract.
                if let Err(e) = unsafe { wait_unlocked(requests.wrapping_add(i), st) } {
                    first.get_or_insert(e);
                }
            }
            first.map_or(Ok(()), Err)
        },
    )
}

/// The status `MPI_Waitany`/`MPI_Testany` give when no request is active (MPI-3.1 §3.7.3).
const EMPTY: Status = Status {
    source: -2,
    tag: -1,
    bytes: 0,
};

/// `MPI_UNDEFINED`.
const UNDEFINED: c_int = -32766;

/// Tries each active request of `requests[..n]` once, in order; completes and frees the first
/// that is done. `Ok(Some(i))` for request `i`, `Ok(Some(UNDEFINED))` when none is active,
/// `Ok(None)` when none is done yet.
///
/// # Safety
/// `requests` holds `n` valid `MPI_Request`s; `st` is null or a valid `MPI_Status *`.
unsafe fn complete_any(
    s: &mut crate::state::State,
    n: usize,
    requests: *mut c_int,
    st: *mut MpiStatus,
    index: *mut c_int,
) -> CResult<Option<c_int>> {
    let mut active = false;
    for i in 0..n {
        let req = requests.wrapping_add(i);
        // SAFETY: `requests` holds `n` entries by contract.
        if unsafe { req.read() } == 0 {
            continue;
        }
        active = true;
        // SAFETY: as this function's contract.
        match unsafe { complete(s, req, st, false) } {
            Ok(true) => return Ok(Some(i as c_int)),
            Ok(false) => {}
            Err(e) => {
                // SAFETY: `index` is a valid `int *` (checked by the caller).
                unsafe { index.write(i as c_int) };
                return Err(e);
            }
        }
    }
    if active {
        return Ok(None);
    }
    // SAFETY: as this function's contract.
    unsafe { status(st, EMPTY) };
    Ok(Some(UNDEFINED))
}

/// Checks the arguments of `MPI_Waitany`/`MPI_Testany`.
fn any_args(n: c_int, requests: *mut c_int, index: *mut c_int) -> CResult<usize> {
    let n = count(n)?;
    if n > 0 && requests.is_null() {
        return Err(Failure::new(ERR_ARG, "a null request array"));
    }
    if index.is_null() {
        return Err(Failure::new(ERR_ARG, "a null index pointer"));
    }
    Ok(n)
}

/// `MPI_Waitany` (MPI-3.1 §3.7.5): waits until one active request is complete, frees it and
/// sets `*index`; `MPI_UNDEFINED` (and an empty status) when none is active. The wait is
/// `mpi_compat::wait_any_in_place`: it blocks between polls instead of spinning.
#[no_mangle]
pub unsafe extern "C" fn MPI_Waitany(
    n: c_int,
    requests: *mut c_int,
    index: *mut c_int,
    st: *mut MpiStatus,
) -> c_int {
    with_state("MPI_Waitany", None, |s| {
        let n = any_args(n, requests, index)?;
        // One pass first: a request already complete (or unknown) is answered at once.
        // SAFETY: pointers as the MPI contract (`index` checked).
        if let Some(i) = unsafe { complete_any(s, n, requests, st, index)? } {
            // SAFETY: checked not null; valid by contract.
            return unsafe { put(index, i) };
        }
        // The active handles, by their position in `requests` (the first of duplicates).
        let mut active: Vec<(c_int, usize)> = Vec::new();
        for i in 0..n {
            // SAFETY: `requests` holds `n` entries by contract.
            let h = unsafe { requests.wrapping_add(i).read() };
            if h != 0 && !active.iter().any(|&(x, _)| x == h) {
                active.push((h, i));
            }
        }
        let plain = active
            .iter()
            .all(|(h, _)| matches!(s.tables.requests.get(h), Some(CRequest::Plain(_)) | None));
        if !plain {
            // Collectives and persistent requests among them: polled in turn.
            // SAFETY: pointers as the MPI contract (`index` checked).
            return unsafe { poll_any(s, n, requests, index, st) };
        }
        let mut table: Vec<(usize, &mut mpi_compat::Request<'static>)> = s
            .tables
            .requests
            .iter_mut()
            .filter_map(|(h, r)| match r {
                CRequest::Plain(r) => active.iter().find(|&&(x, _)| x == *h).map(|&(_, i)| (i, r)),
                _ => None,
            })
            .collect();
        table.sort_by_key(|&(i, _)| i);
        let (positions, mut refs): (Vec<usize>, Vec<&mut mpi_compat::Request<'static>>) =
            table.into_iter().unzip();
        let Some((k, got)) = mpi_compat::wait_any_in_place(&mut refs) else {
            return Err(Failure::new(ERR_REQUEST, "no active request left"));
        };
        drop(refs);
        let i = positions[k];
        let req = requests.wrapping_add(i);
        // SAFETY: `requests` holds `n` entries by contract.
        let h = unsafe { req.read() };
        s.tables.requests.remove(&h);
        // SAFETY: as above.
        unsafe { req.write(0) };
        // SAFETY: checked not null; valid by contract.
        unsafe { put(index, i as c_int)? };
        let got = got?;
        // SAFETY: `st` is null or a valid `MPI_Status *` by contract.
        unsafe { status(st, got) };
        Ok(())
    })
}

/// `MPI_Waitany` over requests that are not all point-to-point: tries each in turn until one
/// completes, yielding the processor between rounds; blocks on the last active one.
///
/// # Safety
/// As [`complete_any`]; `index` is a valid `int *`.
unsafe fn poll_any(
    s: &mut crate::state::State,
    n: usize,
    requests: *mut c_int,
    index: *mut c_int,
    st: *mut MpiStatus,
) -> CResult<()> {
    loop {
        // SAFETY: as this function's contract.
        if let Some(i) = unsafe { complete_any(s, n, requests, st, index)? } {
            // SAFETY: checked not null by the caller; valid by contract.
            return unsafe { put(index, i) };
        }
        let mut active = (0..n).filter(|&i| {
            // SAFETY: `requests` holds `n` entries by contract.
            let h = unsafe { requests.wrapping_add(i).read() };
            h != 0
        });
        if let (Some(only), None) = (active.next(), active.next()) {
            // One left: block on it.
            // SAFETY: as this function's contract.
            unsafe { complete(s, requests.wrapping_add(only), st, true)? };
            // SAFETY: checked not null by the caller; valid by contract.
            return unsafe { put(index, only as c_int) };
        }
        std::thread::yield_now();
    }
}

/// `MPI_Testany` (MPI-3.1 §3.7.5): completes one active request if one is done (`*flag` true,
/// `*index` its position); `*flag` true with `MPI_UNDEFINED` when none is active; `*flag`
/// false otherwise.
#[no_mangle]
pub unsafe extern "C" fn MPI_Testany(
    n: c_int,
    requests: *mut c_int,
    index: *mut c_int,
    flag: *mut c_int,
    st: *mut MpiStatus,
) -> c_int {
    with_state("MPI_Testany", None, |s| {
        let n = any_args(n, requests, index)?;
        if flag.is_null() {
            return Err(Failure::new(ERR_ARG, "a null flag pointer"));
        }
        // SAFETY: pointers as the MPI contract (`index` checked).
        let done = unsafe { complete_any(s, n, requests, st, index)? };
        // SAFETY: checked not null; valid by contract.
        unsafe { put(index, done.unwrap_or(UNDEFINED))? };
        // SAFETY: checked not null; valid by contract.
        unsafe { put(flag, c_int::from(done.is_some())) }
    })
}

/// `MPI_Get_count` (MPI-3.1 §3.2.5): `MPI_UNDEFINED` when the bytes are not a whole number of
/// elements.
#[no_mangle]
pub unsafe extern "C" fn MPI_Get_count(
    st: *const MpiStatus,
    datatype: c_int,
    n: *mut c_int,
) -> c_int {
    with_state("MPI_Get_count", None, |s| {
        if st.is_null() {
            return Err(Failure::new(ERR_ARG, "a null status"));
        }
        let size = s.tables.datatype(datatype)?.size as i64;
        // SAFETY: not null; a valid `MPI_Status *` by contract.
        let bytes = unsafe { st.read() }.count;
        let v = if size == 0 {
            0
        } else if bytes % size == 0 {
            (bytes / size) as c_int
        } else {
            -32766
        };
        // SAFETY: a valid `int *` by contract (null is refused).
        unsafe { put(n, v) }
    })
}
