//! Reductions the target applies to its own memory: the element-wise combine of
//! [`crate::Transport::accumulate`] (MPI's accumulate and get-accumulate, MPI-3.1 §11.3.4).
//!
//! The origin sends its elements once; the target combines them into its memory in one pass, at
//! memory speed, instead of the origin updating it word by word with remote atomics. The target
//! applies a reduction under the exclusive side of its region table's atomics lock, which every
//! remote fetch-and-add and compare-and-swap takes shared: a reduction is atomic with respect to
//! the remote atomics on the same node, as MPI requires of accumulates among themselves.

use crate::error::RemoteFault;

/// The element type of a reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Elem {
    /// `i8`.
    I8,
    /// `u8`.
    U8,
    /// `i16`.
    I16,
    /// `u16`.
    U16,
    /// `i32`.
    I32,
    /// `u32`.
    U32,
    /// `i64`.
    I64,
    /// `u64`.
    U64,
    /// `f32`.
    F32,
    /// `f64`.
    F64,
}

impl Elem {
    const ALL: [Elem; 10] = [
        Elem::I8,
        Elem::U8,
        Elem::I16,
        Elem::U16,
        Elem::I32,
        Elem::U32,
        Elem::I64,
        Elem::U64,
        Elem::F32,
        Elem::F64,
    ];

    /// Bytes of one element.
    pub fn size(self) -> usize {
        match self {
            Elem::I8 | Elem::U8 => 1,
            Elem::I16 | Elem::U16 => 2,
            Elem::I32 | Elem::U32 | Elem::F32 => 4,
            Elem::I64 | Elem::U64 | Elem::F64 => 8,
        }
    }

    fn float(self) -> bool {
        matches!(self, Elem::F32 | Elem::F64)
    }
}

/// How the origin's element combines with the target's (MPI's predefined operations that
/// accumulate allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReduceOp {
    /// `MPI_SUM` (integers wrap).
    Sum,
    /// `MPI_PROD` (integers wrap).
    Prod,
    /// `MPI_MIN`.
    Min,
    /// `MPI_MAX`.
    Max,
    /// `MPI_BAND` (integers only).
    BAnd,
    /// `MPI_BOR` (integers only).
    BOr,
    /// `MPI_BXOR` (integers only).
    BXor,
    /// `MPI_REPLACE`: the origin's element.
    Replace,
    /// `MPI_NO_OP`: the target's element, unchanged (an atomic read).
    NoOp,
}

impl ReduceOp {
    const ALL: [ReduceOp; 9] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::BAnd,
        ReduceOp::BOr,
        ReduceOp::BXor,
        ReduceOp::Replace,
        ReduceOp::NoOp,
    ];

    fn bitwise(self) -> bool {
        matches!(self, ReduceOp::BAnd | ReduceOp::BOr | ReduceOp::BXor)
    }
}

/// A reduction: an operation on elements of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reduction {
    elem: Elem,
    op: ReduceOp,
}

impl Reduction {
    /// The reduction of `op` on `elem`s; `None` for a bitwise operation on floats.
    pub fn new(elem: Elem, op: ReduceOp) -> Option<Reduction> {
        (!(elem.float() && op.bitwise())).then_some(Reduction { elem, op })
    }

    /// The element type.
    pub fn elem(self) -> Elem {
        self.elem
    }

    /// The operation.
    pub fn op(self) -> ReduceOp {
        self.op
    }

    /// The reduction as one wire word.
    pub(crate) fn code(self) -> u64 {
        let e = Elem::ALL.iter().position(|&x| x == self.elem).unwrap_or(0) as u64;
        let o = ReduceOp::ALL
            .iter()
            .position(|&x| x == self.op)
            .unwrap_or(0) as u64;
        (o << 8) | e
    }

    /// The reduction of a wire word, or `None` for one no reduction has.
    pub(crate) fn from_code(code: u64) -> Option<Reduction> {
        let elem = *Elem::ALL.get(usize::try_from(code & 0xff).ok()?)?;
        let op = *ReduceOp::ALL.get(usize::try_from((code >> 8) & 0xff).ok()?)?;
        if code >> 16 != 0 {
            return None;
        }
        Reduction::new(elem, op)
    }
}

/// Combines one element.
trait Combine: Copy {
    fn combine(op: ReduceOp, target: Self, origin: Self) -> Self;
}

macro_rules! combine_int {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            #[inline(always)]
            fn combine(op: ReduceOp, t: $t, o: $t) -> $t {
                match op {
                    ReduceOp::Sum => t.wrapping_add(o),
                    ReduceOp::Prod => t.wrapping_mul(o),
                    ReduceOp::Min => t.min(o),
                    ReduceOp::Max => t.max(o),
                    ReduceOp::BAnd => t & o,
                    ReduceOp::BOr => t | o,
                    ReduceOp::BXor => t ^ o,
                    ReduceOp::Replace => o,
                    ReduceOp::NoOp => t,
                }
            }
        }
    )*};
}
combine_int!(i8, u8, i16, u16, i32, u32, i64, u64);

macro_rules! combine_float {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            #[inline(always)]
            fn combine(op: ReduceOp, t: $t, o: $t) -> $t {
                match op {
                    ReduceOp::Sum => t + o,
                    ReduceOp::Prod => t * o,
                    ReduceOp::Min => t.min(o),
                    ReduceOp::Max => t.max(o),
                    // Refused by `Reduction::new`: the target stays as it is.
                    ReduceOp::BAnd | ReduceOp::BOr | ReduceOp::BXor | ReduceOp::NoOp => t,
                    ReduceOp::Replace => o,
                }
            }
        }
    )*};
}
combine_float!(f32, f64);

/// Combines the elements of `origin` into the `origin.len()` bytes at `target`, one pass, the
/// operation chosen once (so the loop is a plain, vectorisable one).
///
/// # Safety
/// `target` is valid for reads and writes of `origin.len()` bytes, aligned for `T`, and nothing
/// else accesses those bytes during the call; `origin.len()` is a multiple of `T`'s size.
unsafe fn combine_all<T: Combine>(op: ReduceOp, target: *mut u8, origin: &[u8]) {
    let size = std::mem::size_of::<T>();
    let n = origin.len() / size;
    let dst = target.cast::<T>();
    macro_rules! each {
        ($op:expr) => {
            for i in 0..n {
                // SAFETY: element `i` lies inside `origin` (`n` whole elements), read unaligned.
                let o = unsafe { origin.as_ptr().add(i * size).cast::<T>().read_unaligned() };
                // SAFETY: element `i` of the target range, aligned, exclusively ours (contract).
                unsafe { dst.add(i).write(T::combine($op, dst.add(i).read(), o)) };
            }
        };
    }
    match op {
        ReduceOp::Sum => each!(ReduceOp::Sum),
        ReduceOp::Prod => each!(ReduceOp::Prod),
        ReduceOp::Min => each!(ReduceOp::Min),
        ReduceOp::Max => each!(ReduceOp::Max),
        ReduceOp::BAnd => each!(ReduceOp::BAnd),
        ReduceOp::BOr => each!(ReduceOp::BOr),
        ReduceOp::BXor => each!(ReduceOp::BXor),
        ReduceOp::Replace => {
            // SAFETY: the target range is valid and exclusively ours (contract); `origin` is a
            // separate buffer.
            unsafe { std::ptr::copy_nonoverlapping(origin.as_ptr(), target, origin.len()) }
        }
        ReduceOp::NoOp => {}
    }
}

/// Applies `reduction` with `origin` to the bytes at `target`, copying them first into `old`
/// when it is given (its length is `origin.len()`).
///
/// # Errors
/// [`RemoteFault::Misaligned`] when `target` is not aligned to the element size;
/// [`RemoteFault::OutOfBounds`] when `origin` is not a whole number of elements or `old` has
/// another length.
///
/// # Safety
/// `target` is valid for reads and writes of `origin.len()` bytes, and nothing else accesses
/// them during the call (the caller holds the atomics lock exclusively); `old`, `origin` and the
/// target range do not overlap.
pub(crate) unsafe fn apply(
    reduction: Reduction,
    target: *mut u8,
    origin: &[u8],
    old: Option<&mut [u8]>,
) -> Result<(), RemoteFault> {
    let size = reduction.elem.size();
    if !(target as usize).is_multiple_of(size) {
        return Err(RemoteFault::Misaligned);
    }
    if !origin.len().is_multiple_of(size) || old.as_ref().is_some_and(|o| o.len() != origin.len()) {
        return Err(RemoteFault::OutOfBounds);
    }
    if let Some(old) = old {
        // SAFETY: `target` is readable for `origin.len()` bytes (contract), `old` has as many and
        // does not overlap it.
        unsafe { std::ptr::copy_nonoverlapping(target, old.as_mut_ptr(), old.len()) };
    }
    let combine: unsafe fn(ReduceOp, *mut u8, &[u8]) = match reduction.elem {
        Elem::I8 => combine_all::<i8>,
        Elem::U8 => combine_all::<u8>,
        Elem::I16 => combine_all::<i16>,
        Elem::U16 => combine_all::<u16>,
        Elem::I32 => combine_all::<i32>,
        Elem::U32 => combine_all::<u32>,
        Elem::I64 => combine_all::<i64>,
        Elem::U64 => combine_all::<u64>,
        Elem::F32 => combine_all::<f32>,
        Elem::F64 => combine_all::<f64>,
    };
    // SAFETY: aligned for the element type (checked), a whole number of elements (checked),
    // valid and exclusive (contract).
    unsafe { combine(reduction.op, target, origin) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_bitwise_float_is_refused() {
        for e in Elem::ALL {
            for o in ReduceOp::ALL {
                match Reduction::new(e, o) {
                    Some(r) => assert_eq!(Reduction::from_code(r.code()), Some(r)),
                    None => assert!(e.float() && o.bitwise()),
                }
            }
        }
        assert_eq!(Reduction::from_code(1 << 16), None);
        assert_eq!(Reduction::from_code(0xff), None);
    }

    #[test]
    fn apply_combines_and_returns_the_old_elements() {
        let mut target = [1i32, -2, 3, 4];
        let origin: Vec<u8> = [10i32, 20, -30, 40]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut old = [0u8; 16];
        let sum = Reduction::new(Elem::I32, ReduceOp::Sum).unwrap();
        // SAFETY: `target` is a local array of 16 bytes, aligned for i32, not otherwise used.
        unsafe { apply(sum, target.as_mut_ptr().cast(), &origin, Some(&mut old)) }.unwrap();
        assert_eq!(target, [11, 18, -27, 44]);
        assert_eq!(&old[..4], &1i32.to_le_bytes());
        let max = Reduction::new(Elem::I32, ReduceOp::Max).unwrap();
        // SAFETY: as above.
        unsafe { apply(max, target.as_mut_ptr().cast(), &origin, None) }.unwrap();
        assert_eq!(target, [11, 20, -27, 44]);
        // One byte in: misaligned for i32 (and refused before anything is touched).
        let inside = target.as_mut_ptr().cast::<u8>().wrapping_add(1);
        // SAFETY: `inside..inside + 4` lies inside the local array, not otherwise used.
        let bad = unsafe { apply(sum, inside, &origin[..4], None) };
        assert_eq!(bad, Err(RemoteFault::Misaligned));
    }
}
