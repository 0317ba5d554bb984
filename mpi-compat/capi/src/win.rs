//! One-sided calls (MPI-3.1 chapter 11). Target datatypes must be contiguous
//! (`MPI_ERR_TYPE` otherwise); origin datatypes may be any committed type.

use std::borrow::Cow;
use std::ffi::{c_int, c_void};

use bytemuck::Zeroable;
use mpi_compat::{LockType, Op, Window, PROC_NULL};

use crate::state::{
    put, with_state, CResult, Failure, State, ERR_ARG, ERR_COUNT, ERR_NO_MEM, ERR_TYPE, ERR_WIN,
};
use crate::types::{count, op, with_prim, Datatype};

fn disp(d: isize) -> CResult<usize> {
    usize::try_from(d)
        .map_err(|_| Failure::new(crate::state::ERR_ARG, format!("negative displacement {d}")))
        .map_err(|mut f| {
            f.class = 28;
            f
        })
}

fn insert(s: &mut State, w: Window, comm: c_int, out: *mut c_int) -> CResult<()> {
    let h = s.tables.handle();
    s.tables.windows.insert(h, (w, comm));
    // SAFETY: a valid `MPI_Win *` by contract (null is refused).
    unsafe { put(out, h) }
}

/// `MPI_Win_allocate` (MPI-3.1 §11.2.2).
#[no_mangle]
pub unsafe extern "C" fn MPI_Win_allocate(
    size: isize,
    disp_unit: c_int,
    _info: c_int,
    comm: c_int,
    baseptr: *mut c_void,
    win: *mut c_int,
) -> c_int {
    with_state("MPI_Win_allocate", Some(comm), |s| {
        let size = usize::try_from(size).map_err(|_| Failure::new(ERR_ARG, "negative size"))?;
        let unit = usize::try_from(disp_unit).unwrap_or(0);
        let w = Window::allocate(&s.tables.comm(comm)?.comm, size, unit)?;
        // SAFETY: `baseptr` is a `void **` by contract (null is refused).
        unsafe { put(baseptr.cast::<*mut c_void>(), w.local_ptr().cast())? };
        insert(s, w, comm, win)
    })
}

/// `MPI_Win_create` (MPI-3.1 §11.2.1): over any memory (global memory from `MPI_Alloc_mem`,
/// or the program's own, which is registered with the transport).
#[no_mangle]
pub unsafe extern "C" fn MPI_Win_create(
    base: *mut c_void,
    size: isize,
    disp_unit: c_int,
    _info: c_int,
    comm: c_int,
    win: *mut c_int,
) -> c_int {
    with_state("MPI_Win_create", Some(comm), |s| {
        let size = usize::try_from(size).map_err(|_| Failure::new(ERR_ARG, "negative size"))?;
        let unit = usize::try_from(disp_unit).unwrap_or(0);
        // SAFETY: MPI requires `base` to hold `size` bytes until the window is freed, and the
        // program accesses it only as the RMA rules allow.
        let w = unsafe {
            Window::create_from_raw(&s.tables.comm(comm)?.comm, base.cast(), size, unit)?
        };
        insert(s, w, comm, win)
    })
}

/// `MPI_Win_create_dynamic` (MPI-3.1 §11.2.4).
#[no_mangle]
pub unsafe extern "C" fn MPI_Win_create_dynamic(
    _info: c_int,
    comm: c_int,
    win: *mut c_int,
) -> c_int {
    with_state("MPI_Win_create_dynamic", Some(comm), |s| {
        let w = Window::create_dynamic(&s.tables.comm(comm)?.comm)?;
        insert(s, w, comm, win)
    })
}

/// `MPI_Win_attach` (MPI-3.1 §11.2.4): memory from `MPI_Alloc_mem` only.
#[no_mangle]
pub unsafe extern "C" fn MPI_Win_attach(win: c_int, base: *mut c_void, size: isize) -> c_int {
    with_state("MPI_Win_attach", None, |s| {
        let size = usize::try_from(size).map_err(|_| Failure::new(ERR_ARG, "negative size"))?;
        Ok(s.tables.window(win)?.attach(base.cast(), size)?)
    })
}

/// `MPI_Win_detach` (MPI-3.1 §11.2.4).
#[no_mangle]
pub unsafe extern "C" fn MPI_Win_detach(win: c_int, base: *const c_void) -> c_int {
    with_state("MPI_Win_detach", None, |s| {
        Ok(s.tables.window(win)?.detach(base.cast())?)
    })
}

/// `MPI_Win_free` (MPI-3.1 §11.2.5).
#[no_mangle]
pub unsafe extern "C" fn MPI_Win_free(win: *mut c_int) -> c_int {
    with_state("MPI_Win_free", None, |s| {
        if win.is_null() {
            return Err(Failure::new(ERR_ARG, "a null window pointer"));
        }
        // SAFETY: not null; a valid `MPI_Win *` by contract.
        let h = unsafe { win.read() };
        let (w, _) = s
            .tables
            .windows
            .remove(&h)
            .ok_or_else(|| Failure::new(ERR_WIN, format!("invalid window {h}")))?;
        w.free()?;
        // SAFETY: as above.
        unsafe { win.write(0) };
        Ok(())
    })
}

/// The target datatype, which must be contiguous and carry as many bytes as the origin.
fn target_type(s: &State, ttype: c_int, tcount: c_int, bytes: usize) -> CResult<&Datatype> {
    let tt = s.tables.datatype(ttype)?;
    if !tt.contiguous() {
        return Err(Failure::new(
            ERR_TYPE,
            "target datatypes must be contiguous",
        ));
    }
    if count(tcount)? * tt.size != bytes {
        return Err(Failure::new(
            ERR_COUNT,
            "origin and target carry different byte counts",
        ));
    }
    Ok(tt)
}

/// `MPI_Put` (MPI-3.1 §11.3.1).
#[no_mangle]
pub unsafe extern "C" fn MPI_Put(
    origin: *const c_void,
    ocount: c_int,
    otype: c_int,
    target: c_int,
    tdisp: isize,
    tcount: c_int,
    ttype: c_int,
    win: c_int,
) -> c_int {
    with_state("MPI_Put", None, |s| {
        let ot = s.tables.datatype(otype)?;
        // SAFETY: `origin` holds `ocount` elements by contract.
        let data = unsafe { ot.view(origin.cast(), count(ocount)?)? };
        target_type(s, ttype, tcount, data.len())?;
        Ok(s.tables.window(win)?.put(&data, target, disp(tdisp)?)?)
    })
}

/// `MPI_Get` (MPI-3.1 §11.3.2): complete when it returns.
#[no_mangle]
pub unsafe extern "C" fn MPI_Get(
    origin: *mut c_void,
    ocount: c_int,
    otype: c_int,
    target: c_int,
    tdisp: isize,
    tcount: c_int,
    ttype: c_int,
    win: c_int,
) -> c_int {
    with_state("MPI_Get", None, |s| {
        let ot = s.tables.datatype(otype)?.clone();
        let n = count(ocount)?;
        let len = n
            .checked_mul(ot.size)
            .ok_or_else(|| Failure::new(ERR_COUNT, "MPI_Get of more bytes than memory has"))?;
        target_type(s, ttype, tcount, len)?;
        let w = s.tables.window(win)?;
        if target == PROC_NULL {
            return Ok(());
        }
        if ot.contiguous() {
            if len == 0 {
                return Ok(());
            }
            if origin.is_null() {
                return Err(Failure::new(ERR_ARG, "a null origin buffer"));
            }
            // The bytes land by the next flush, unlock, fence or complete (MPI-3.1 §11.3.2).
            // SAFETY: not null; `origin` holds `ocount` elements (`len` bytes in one run) by
            // contract, and MPI forbids touching them until the operation completes, which
            // is that synchronization call.
            return Ok(unsafe { w.get_posted(origin.cast(), len, target, disp(tdisp)?) }?);
        }
        let mut data = vec![0u8; len];
        w.get(&mut data, target, disp(tdisp)?)?;
        // SAFETY: `origin` holds `ocount` elements by contract.
        unsafe { ot.unpack(&data, origin.cast(), n) }
    })
}

/// `MPI_Rput` (MPI-3.1 §11.3.5): in a passive-target epoch; the request is complete at once
/// (the data are copied when the call is made).
#[no_mangle]
pub unsafe extern "C" fn MPI_Rput(
    origin: *const c_void,
    ocount: c_int,
    otype: c_int,
    target: c_int,
    tdisp: isize,
    tcount: c_int,
    ttype: c_int,
    win: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Rput", None, |s| {
        if request.is_null() {
            return Err(Failure::new(ERR_ARG, "a null request pointer"));
        }
        let ot = s.tables.datatype(otype)?;
        // SAFETY: `origin` holds `ocount` elements by contract.
        let data = unsafe { ot.view(origin.cast(), count(ocount)?)? };
        target_type(s, ttype, tcount, data.len())?;
        let r = s.tables.window(win)?.rput(&data, target, disp(tdisp)?)?;
        let h = s.tables.handle();
        s.tables
            .requests
            .insert(h, crate::request::CRequest::Plain(r));
        // SAFETY: a valid `MPI_Request *` by contract (checked not null).
        unsafe { put(request, h) }
    })
}

/// `MPI_Rget` (MPI-3.1 §11.3.5): in a passive-target epoch; the request is complete at once
/// (the data are in `origin` when the call returns).
#[no_mangle]
pub unsafe extern "C" fn MPI_Rget(
    origin: *mut c_void,
    ocount: c_int,
    otype: c_int,
    target: c_int,
    tdisp: isize,
    tcount: c_int,
    ttype: c_int,
    win: c_int,
    request: *mut c_int,
) -> c_int {
    with_state("MPI_Rget", None, |s| {
        if request.is_null() {
            return Err(Failure::new(ERR_ARG, "a null request pointer"));
        }
        let ot = s.tables.datatype(otype)?.clone();
        let n = count(ocount)?;
        let bytes = n
            .checked_mul(ot.size)
            .ok_or_else(|| Failure::new(ERR_COUNT, "MPI_Rget of more bytes than memory has"))?;
        target_type(s, ttype, tcount, bytes)?;
        let w = s.tables.window(win)?;
        let tdisp = disp(tdisp)?;
        // A huge count must fail, not abort on a failed allocation.
        let mut data = Vec::new();
        data.try_reserve_exact(bytes).map_err(|_| {
            Failure::new(ERR_NO_MEM, format!("MPI_Rget: no memory for {bytes} bytes"))
        })?;
        data.resize(bytes, 0u8);
        let r = w.rget(&mut data, target, tdisp)?;
        if target != PROC_NULL {
            // SAFETY: `origin` holds `ocount` elements by contract.
            unsafe { ot.unpack(&data, origin.cast(), n)? };
        }
        let h = s.tables.handle();
        s.tables
            .requests
            .insert(h, crate::request::CRequest::Plain(r));
        // SAFETY: a valid `MPI_Request *` by contract (checked not null).
        unsafe { put(request, h) }
    })
}

/// One accumulate-family operation, as its parts.
struct Acc {
    origin: *const c_void,
    ocount: c_int,
    otype: c_int,
    target: c_int,
    tdisp: isize,
    tcount: c_int,
    ttype: c_int,
    op: c_int,
    win: c_int,
}

/// Shared body of the accumulate family: applies the operation; with `fetch`, returns the
/// target's old elements as bytes.
fn accumulate(s: &State, a: &Acc, fetch: bool) -> CResult<(Vec<u8>, Datatype)> {
    let ot = s.tables.datatype(a.otype)?.clone();
    let op = op(a.op)?;
    let n = count(a.ocount)?;
    let data: Cow<'_, [u8]> = if op == Op::NoOp && a.origin.is_null() {
        Cow::Owned(vec![0u8; n * ot.size])
    } else {
        // SAFETY: `origin` holds `ocount` elements by contract.
        unsafe { ot.view(a.origin.cast(), n)? }
    };
    let tt = target_type(s, a.ttype, a.tcount, data.len())?;
    if tt.prim != ot.prim {
        return Err(Failure::new(
            ERR_TYPE,
            "origin and target element types differ",
        ));
    }
    let w = s.tables.window(a.win)?;
    let d = disp(a.tdisp)?;
    let old = with_prim!(ot.prim, T => {
        // The C buffer itself when it is aligned for `T`.
        let values: Cow<'_, [T]> = match bytemuck::try_cast_slice(&data) {
            Ok(v) => Cow::Borrowed(v),
            Err(_) => Cow::Owned(bytemuck::pod_collect_to_vec(&data)),
        };
        if fetch {
            let mut old = vec![T::zeroed(); values.len()];
            w.get_accumulate(&values, &mut old, a.target, d, op)?;
            bytemuck::cast_slice(&old).to_vec()
        } else {
            w.accumulate(&values, a.target, d, op)?;
            Vec::new()
        }
    });
    Ok((old, ot))
}

/// `MPI_Accumulate` (MPI-3.1 §11.3.4).
#[no_mangle]
pub unsafe extern "C" fn MPI_Accumulate(
    origin: *const c_void,
    ocount: c_int,
    otype: c_int,
    target: c_int,
    tdisp: isize,
    tcount: c_int,
    ttype: c_int,
    o: c_int,
    win: c_int,
) -> c_int {
    with_state("MPI_Accumulate", None, |s| {
        let a = Acc {
            origin,
            ocount,
            otype,
            target,
            tdisp,
            tcount,
            ttype,
            op: o,
            win,
        };
        accumulate(s, &a, false).map(drop)
    })
}

/// `MPI_Get_accumulate` (MPI-3.1 §11.3.4).
#[no_mangle]
pub unsafe extern "C" fn MPI_Get_accumulate(
    origin: *const c_void,
    ocount: c_int,
    otype: c_int,
    result: *mut c_void,
    rcount: c_int,
    rtype: c_int,
    target: c_int,
    tdisp: isize,
    tcount: c_int,
    ttype: c_int,
    o: c_int,
    win: c_int,
) -> c_int {
    with_state("MPI_Get_accumulate", None, |s| {
        let rt = s.tables.datatype(rtype)?.clone();
        let rn = count(rcount)?;
        // With MPI_NO_OP the origin arguments may be unused: take the result's shape.
        let (ocount, otype) = if matches!(op(o), Ok(Op::NoOp)) && origin.is_null() {
            (rcount, rtype)
        } else {
            (ocount, otype)
        };
        let a = Acc {
            origin,
            ocount,
            otype,
            target,
            tdisp,
            tcount,
            ttype,
            op: o,
            win,
        };
        let (old, _) = accumulate(s, &a, true)?;
        if target == PROC_NULL {
            return Ok(());
        }
        if old.len() != rn * rt.size {
            return Err(Failure::new(
                ERR_COUNT,
                "the result buffer has another size",
            ));
        }
        // SAFETY: `result` holds `rcount` elements by contract.
        unsafe { rt.unpack(&old, result.cast(), rn) }
    })
}

/// `MPI_Fetch_and_op` (MPI-3.1 §11.3.4).
#[no_mangle]
pub unsafe extern "C" fn MPI_Fetch_and_op(
    origin: *const c_void,
    result: *mut c_void,
    datatype: c_int,
    target: c_int,
    tdisp: isize,
    o: c_int,
    win: c_int,
) -> c_int {
    with_state("MPI_Fetch_and_op", None, |s| {
        let a = Acc {
            origin,
            ocount: 1,
            otype: datatype,
            target,
            tdisp,
            tcount: 1,
            ttype: datatype,
            op: o,
            win,
        };
        let (old, dt) = accumulate(s, &a, true)?;
        if target == PROC_NULL {
            return Ok(());
        }
        // SAFETY: `result` holds one element by contract.
        unsafe { dt.unpack(&old, result.cast(), 1) }
    })
}

/// `MPI_Compare_and_swap` (MPI-3.1 §11.3.4): integer types.
#[no_mangle]
pub unsafe extern "C" fn MPI_Compare_and_swap(
    origin: *const c_void,
    compare: *const c_void,
    result: *mut c_void,
    datatype: c_int,
    target: c_int,
    tdisp: isize,
    win: c_int,
) -> c_int {
    with_state("MPI_Compare_and_swap", None, |s| {
        let dt = s.tables.datatype(datatype)?.clone();
        if !dt.contiguous() || dt.size != dt.prim.size() {
            return Err(Failure::new(
                ERR_TYPE,
                "compare-and-swap takes one predefined element",
            ));
        }
        // SAFETY: `origin` holds one element by contract.
        let o = unsafe { dt.pack(origin.cast(), 1)? };
        // SAFETY: `compare` holds one element by contract.
        let c = unsafe { dt.pack(compare.cast(), 1)? };
        let w = s.tables.window(win)?;
        let d = disp(tdisp)?;
        let old: Vec<u8> = with_prim!(dt.prim, T => {
            let ov: T = bytemuck::pod_read_unaligned(&o);
            let cv: T = bytemuck::pod_read_unaligned(&c);
            let old = w.compare_and_swap(ov, cv, target, d)?;
            bytemuck::bytes_of(&old).to_vec()
        });
        if target == PROC_NULL {
            return Ok(());
        }
        // SAFETY: `result` holds one element by contract.
        unsafe { dt.unpack(&old, result.cast(), 1) }
    })
}

/// `MPI_Win_test` (MPI-3.1 §11.5.2): `*flag` true when every origin of the exposure epoch has
/// completed (the epoch is then closed).
#[no_mangle]
pub unsafe extern "C" fn MPI_Win_test(win: c_int, flag: *mut c_int) -> c_int {
    with_state("MPI_Win_test", None, |s| {
        if flag.is_null() {
            return Err(Failure::new(ERR_ARG, "a null flag pointer"));
        }
        let done = s.tables.window(win)?.test()?;
        // SAFETY: a valid `int *` by contract (checked not null).
        unsafe { put(flag, c_int::from(done)) }
    })
}

macro_rules! win_call {
    ($(#[$doc:meta] $name:ident ( $($arg:ident : $t:ty),* ) => |$w:ident, $s:ident| $body:expr;)*) => {$(
        #[$doc]
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $t,)* win: c_int) -> c_int {
            with_state(stringify!($name), None, |$s| {
                let $w = $s.tables.window(win)?;
                Ok($body?)
            })
        }
    )*};
}

fn lock_type(t: c_int) -> CResult<LockType> {
    match t {
        234 => Ok(LockType::Exclusive),
        235 => Ok(LockType::Shared),
        _ => Err(Failure::new(ERR_ARG, format!("invalid lock type {t}"))),
    }
}

fn assert_bits(a: c_int) -> u32 {
    a as u32
}

win_call! {
    /// `MPI_Win_fence` (MPI-3.1 §11.5.1).
    MPI_Win_fence(assert: c_int) => |w, s| w.fence(assert_bits(assert));
    /// `MPI_Win_lock` (MPI-3.1 §11.5.3).
    MPI_Win_lock(lock: c_int, rank: c_int, assert: c_int) => |w, s| lock_type(lock).and_then(|l| Ok(w.lock(l, rank, assert_bits(assert))?));
    /// `MPI_Win_unlock` (MPI-3.1 §11.5.3).
    MPI_Win_unlock(rank: c_int) => |w, s| w.unlock(rank);
    /// `MPI_Win_lock_all` (MPI-3.1 §11.5.3).
    MPI_Win_lock_all(assert: c_int) => |w, s| w.lock_all(assert_bits(assert));
    /// `MPI_Win_unlock_all` (MPI-3.1 §11.5.3).
    MPI_Win_unlock_all() => |w, s| w.unlock_all();
    /// `MPI_Win_flush` (MPI-3.1 §11.5.4).
    MPI_Win_flush(rank: c_int) => |w, s| w.flush(rank);
    /// `MPI_Win_flush_all` (MPI-3.1 §11.5.4).
    MPI_Win_flush_all() => |w, s| w.flush_all();
    /// `MPI_Win_flush_local` (MPI-3.1 §11.5.4).
    MPI_Win_flush_local(rank: c_int) => |w, s| w.flush_local(rank);
    /// `MPI_Win_flush_local_all` (MPI-3.1 §11.5.4).
    MPI_Win_flush_local_all() => |w, s| w.flush_local_all();
    /// `MPI_Win_sync` (MPI-3.1 §11.5.4).
    MPI_Win_sync() => |w, s| w.sync();
    /// `MPI_Win_post` (MPI-3.1 §11.5.2).
    MPI_Win_post(group: c_int, assert: c_int) => |w, s| s.tables.group(group).and_then(|g| Ok(w.post(g, assert_bits(assert))?));
    /// `MPI_Win_start` (MPI-3.1 §11.5.2).
    MPI_Win_start(group: c_int, assert: c_int) => |w, s| s.tables.group(group).and_then(|g| Ok(w.start(g, assert_bits(assert))?));
    /// `MPI_Win_complete` (MPI-3.1 §11.5.2).
    MPI_Win_complete() => |w, s| w.complete();
    /// `MPI_Win_wait` (MPI-3.1 §11.5.2).
    MPI_Win_wait() => |w, s| w.wait();
}
