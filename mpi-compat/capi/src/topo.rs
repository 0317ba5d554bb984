//! Cartesian topologies (MPI-3.1 §7.5).

use std::ffi::c_int;

use crate::env::dup_entry;
use crate::state::{guarded, put, with_state, CResult, Failure, ERR_ARG, ERR_DIMS, ERR_TOPOLOGY};
use crate::types::count;

/// `MPI_Dims_create` (MPI-3.1 §7.5.2): fills the zero entries of `dims` with a balanced
/// factorisation of `nnodes`, in non-increasing order.
#[no_mangle]
pub unsafe extern "C" fn MPI_Dims_create(nnodes: c_int, ndims: c_int, dims: *mut c_int) -> c_int {
    guarded("MPI_Dims_create", || {
        // SAFETY: forwarded from this function's own contract.
        unsafe { dims_create_entry(nnodes, ndims, dims) }
    })
}

/// # Safety
/// `dims` holds `ndims` ints (or is null).
unsafe fn dims_create_entry(nnodes: c_int, ndims: c_int, dims: *mut c_int) -> c_int {
    let Ok(nd) = usize::try_from(ndims) else {
        return ERR_DIMS;
    };
    if nnodes < 1 || (nd > 0 && dims.is_null()) {
        return ERR_ARG;
    }
    // SAFETY: `dims` holds `ndims` ints by contract (null refused above).
    let d = unsafe { std::slice::from_raw_parts_mut(dims, nd) };
    match dims_create(nnodes, d) {
        Ok(()) => 0,
        Err(f) => f.class,
    }
}

fn dims_create(nnodes: c_int, d: &mut [c_int]) -> CResult<()> {
    let fixed = d
        .iter()
        .filter(|&&x| x > 0)
        .try_fold(1 as c_int, |acc, &x| acc.checked_mul(x));
    let Some(fixed) = fixed.filter(|&f| f > 0) else {
        return Err(Failure::new(
            ERR_DIMS,
            "the given dims multiply beyond nnodes",
        ));
    };
    if d.iter().any(|&x| x < 0) || nnodes % fixed != 0 {
        return Err(Failure::new(ERR_DIMS, "dims cannot divide the nodes"));
    }
    let free = d.iter().filter(|&&x| x == 0).count();
    if free == 0 {
        return if fixed == nnodes {
            Ok(())
        } else {
            Err(Failure::new(ERR_DIMS, "dims do not multiply to nnodes"))
        };
    }
    // Prime factors, largest first, each given to the currently smallest free dimension.
    let mut rest = nnodes / fixed;
    let mut factors = Vec::new();
    let mut p = 2;
    while rest > 1 {
        if p > rest / p {
            // No factor up to its square root: `rest` is a prime.
            factors.push(rest);
            break;
        }
        while rest % p == 0 {
            factors.push(p);
            rest /= p;
        }
        p += 1;
    }
    let mut out = vec![1; free];
    for f in factors.into_iter().rev() {
        if let Some(m) = out.iter_mut().min() {
            *m *= f;
        }
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    let mut it = out.into_iter();
    for x in d.iter_mut().filter(|x| **x == 0) {
        *x = it.next().unwrap_or(1);
    }
    Ok(())
}

/// `MPI_Cart_create` (MPI-3.1 §7.5.1): the grid must cover the whole communicator
/// (`MPI_ERR_DIMS` otherwise); `reorder` is ignored (ranks stay).
#[no_mangle]
pub unsafe extern "C" fn MPI_Cart_create(
    comm: c_int,
    ndims: c_int,
    dims: *const c_int,
    periods: *const c_int,
    _reorder: c_int,
    comm_cart: *mut c_int,
) -> c_int {
    with_state("MPI_Cart_create", Some(comm), |s| {
        let nd = count(ndims)?;
        if nd > 0 && (dims.is_null() || periods.is_null()) {
            return Err(Failure::new(ERR_ARG, "null dims or periods"));
        }
        // SAFETY: the array holds `ndims` ints by contract (null refused above).
        let d = unsafe { std::slice::from_raw_parts(dims, nd) };
        // SAFETY: as above.
        let p = unsafe { std::slice::from_raw_parts(periods, nd) };
        let size = s.tables.comm(comm)?.comm.size();
        let cells = d
            .iter()
            .try_fold(1i64, |a, &x| (x > 0).then(|| a * i64::from(x)));
        if cells != Some(i64::from(size)) {
            return Err(Failure::new(
                ERR_DIMS,
                format!("a grid of {cells:?} cells over {size} ranks (it must cover them all)"),
            ));
        }
        let mut e = dup_entry(s, comm)?;
        e.cart = Some((d.to_vec(), p.iter().map(|&x| x != 0).collect()));
        let h = s.tables.handle();
        s.tables.comms.insert(h, e);
        // SAFETY: a valid `MPI_Comm *` by contract (null is refused).
        unsafe { put(comm_cart, h) }
    })
}

fn cart(s: &crate::state::State, comm: c_int) -> CResult<(Vec<i32>, Vec<bool>)> {
    s.tables
        .comm(comm)?
        .cart
        .clone()
        .ok_or_else(|| Failure::new(ERR_TOPOLOGY, "not a Cartesian communicator"))
}

/// `MPI_Cart_coords` (MPI-3.1 §7.5.5): row-major coordinates of `rank`.
#[no_mangle]
pub unsafe extern "C" fn MPI_Cart_coords(
    comm: c_int,
    rank: c_int,
    maxdims: c_int,
    coords: *mut c_int,
) -> c_int {
    with_state("MPI_Cart_coords", Some(comm), |s| {
        let (d, _) = cart(s, comm)?;
        let size = s.tables.comm(comm)?.comm.size();
        if rank < 0 || rank >= size {
            return Err(Failure::new(6, format!("invalid rank {rank}")));
        }
        if count(maxdims)? < d.len() || (!d.is_empty() && coords.is_null()) {
            return Err(Failure::new(ERR_ARG, "coords too short"));
        }
        // SAFETY: `coords` holds at least `maxdims` >= ndims ints by contract.
        let out = unsafe { std::slice::from_raw_parts_mut(coords, d.len()) };
        let mut r = rank;
        for i in (0..d.len()).rev() {
            out[i] = r % d[i];
            r /= d[i];
        }
        Ok(())
    })
}

/// `MPI_Cart_rank` (MPI-3.1 §7.5.5): periodic dimensions wrap; others must be in range.
#[no_mangle]
pub unsafe extern "C" fn MPI_Cart_rank(
    comm: c_int,
    coords: *const c_int,
    rank: *mut c_int,
) -> c_int {
    with_state("MPI_Cart_rank", Some(comm), |s| {
        let (d, p) = cart(s, comm)?;
        if !d.is_empty() && coords.is_null() {
            return Err(Failure::new(ERR_ARG, "null coords"));
        }
        // SAFETY: `coords` holds ndims ints by contract (null refused above).
        let cs = unsafe { std::slice::from_raw_parts(coords, d.len()) };
        let mut r = 0;
        for i in 0..d.len() {
            let mut c = cs[i];
            if p[i] {
                c = c.rem_euclid(d[i]);
            } else if c < 0 || c >= d[i] {
                return Err(Failure::new(
                    6,
                    format!("coordinate {c} outside dimension {i}"),
                ));
            }
            r = r * d[i] + c;
        }
        // SAFETY: a valid `int *` by contract (null is refused).
        unsafe { put(rank, r) }
    })
}

#[cfg(test)]
mod tests {
    use super::dims_create;
    use std::ffi::c_int;

    #[test]
    fn dims_are_balanced() {
        let mut d = [0, 0];
        dims_create(12, &mut d).unwrap();
        assert_eq!(d, [4, 3]);
        let mut d = [0, 3, 0];
        dims_create(24, &mut d).unwrap();
        assert_eq!(d, [4, 3, 2]);
        assert!(dims_create(7, &mut [2, 0]).is_err());
        // Products that overflow an int are refused, not wrapped.
        assert!(dims_create(8, &mut [65536, 65536, 0]).is_err());
        assert!(dims_create(8, &mut [65536, 65537, 0]).is_err());
        let mut d = [0, 0];
        dims_create(c_int::MAX, &mut d).unwrap();
        assert_eq!(d, [c_int::MAX, 1]);
        let mut d = [0, 0];
        dims_create(2 * 3 * 5 * 7 * 11, &mut d).unwrap();
        assert_eq!(d[0] * d[1], 2310);
    }
}
