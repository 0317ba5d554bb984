//! Datatypes and reduction operations (MPI-3.1 §3.2.2 "Message Data", §5.9 "Global Reduction
//! Operations", §11.3.4 "Accumulate Functions").
//!
//! A Rust type is an MPI datatype when it implements [`Equivalence`] (rsmpi's name): the
//! fixed-size integers and floats, like `MPI_INT32_T` ... `MPI_DOUBLE`, and `u8`/`i8` for
//! `MPI_BYTE`/`MPI_CHAR`. Buffers are plain slices of them.

use crate::error::{Error, Result};

/// A reduction or accumulate operation (MPI-3.1 §5.9.2 "Predefined Reduction Operations";
/// `Replace` and `NoOp` are the accumulate-only `MPI_REPLACE` and `MPI_NO_OP` of §11.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `MPI_SUM` (integers wrap).
    Sum,
    /// `MPI_PROD` (integers wrap).
    Prod,
    /// `MPI_MIN`.
    Min,
    /// `MPI_MAX`.
    Max,
    /// `MPI_BAND`: bitwise and (integers only).
    BAnd,
    /// `MPI_BOR`: bitwise or (integers only).
    BOr,
    /// `MPI_BXOR`: bitwise exclusive or (integers only).
    BXor,
    /// `MPI_REPLACE`: the origin's value replaces the target's (accumulate only).
    Replace,
    /// `MPI_NO_OP`: the target is left alone; only fetched (get-accumulate, fetch-and-op).
    NoOp,
}

mod sealed {
    pub trait Sealed {}
}

/// A type that travels in messages and windows as its own bytes: an MPI predefined datatype.
/// Sealed: implemented for `u8`, `i8`, `i16`, `u16`, `i32`, `u32`, `i64`, `u64`, `f32`, `f64`.
pub trait Equivalence: bytemuck::Pod + PartialOrd + sealed::Sealed + Send + Sync {
    /// The name `MPI_Type_get_name` gives.
    const NAME: &'static str;
    /// Whether the bitwise operations apply.
    const INTEGER: bool;

    /// `a[i] = a[i] op b[i]` for every element; `Replace` copies, `NoOp` leaves `a`.
    ///
    /// # Errors
    /// [`Error::InvalidOp`] for a bitwise operation on a floating-point type, and
    /// [`Error::InvalidCount`] for slices of different lengths.
    fn reduce(op: Op, a: &mut [Self], b: &[Self]) -> Result<()>;
}

/// Checks that `op` applies to `T` (MPI-3.1 §5.9.2: bitwise operations need integers).
///
/// # Errors
/// [`Error::InvalidOp`] when it does not.
pub fn check_op<T: Equivalence>(op: Op) -> Result<()> {
    if matches!(op, Op::BAnd | Op::BOr | Op::BXor) && !T::INTEGER {
        return Err(Error::InvalidOp(format!(
            "{op:?} is not defined on {}",
            T::NAME
        )));
    }
    Ok(())
}

fn same_len<T>(a: &[T], b: &[T]) -> Result<()> {
    if a.len() == b.len() {
        Ok(())
    } else {
        Err(Error::InvalidCount(format!(
            "reduction of {} elements with {}",
            a.len(),
            b.len()
        )))
    }
}

/// `a[i] = f(a[i], b[i])` for every element (same lengths, checked by the caller).
#[inline(always)]
fn each<T: Copy>(a: &mut [T], b: &[T], f: impl Fn(T, T) -> T) {
    for (x, &y) in a.iter_mut().zip(b) {
        *x = f(*x, y);
    }
}

macro_rules! integer {
    ($($t:ty => $name:literal),*) => {$(
        impl sealed::Sealed for $t {}
        impl Equivalence for $t {
            const NAME: &'static str = $name;
            const INTEGER: bool = true;
            fn reduce(op: Op, a: &mut [Self], b: &[Self]) -> Result<()> {
                same_len(a, b)?;
                // One loop per operation, the operation inlined: a plain loop the compiler
                // vectorises (a function pointer called per element made it one indirect call
                // per element).
                match op {
                    Op::Sum => each(a, b, <$t>::wrapping_add),
                    Op::Prod => each(a, b, <$t>::wrapping_mul),
                    Op::Min => each(a, b, |x, y| x.min(y)),
                    Op::Max => each(a, b, |x, y| x.max(y)),
                    Op::BAnd => each(a, b, |x, y| x & y),
                    Op::BOr => each(a, b, |x, y| x | y),
                    Op::BXor => each(a, b, |x, y| x ^ y),
                    Op::Replace => a.copy_from_slice(b),
                    Op::NoOp => {}
                }
                Ok(())
            }
        }
    )*};
}

macro_rules! float {
    ($($t:ty => $name:literal),*) => {$(
        impl sealed::Sealed for $t {}
        impl Equivalence for $t {
            const NAME: &'static str = $name;
            const INTEGER: bool = false;
            fn reduce(op: Op, a: &mut [Self], b: &[Self]) -> Result<()> {
                same_len(a, b)?;
                check_op::<$t>(op)?;
                // As for the integers: one inlined loop per operation.
                match op {
                    Op::Sum => each(a, b, |x, y| x + y),
                    Op::Prod => each(a, b, |x, y| x * y),
                    Op::Min => each(a, b, <$t>::min),
                    Op::Max => each(a, b, <$t>::max),
                    Op::Replace => a.copy_from_slice(b),
                    Op::NoOp | Op::BAnd | Op::BOr | Op::BXor => {}
                }
                Ok(())
            }
        }
    )*};
}

integer!(u8 => "MPI_BYTE", i8 => "MPI_CHAR", i16 => "MPI_SHORT", u16 => "MPI_UNSIGNED_SHORT",
    i32 => "MPI_INT", u32 => "MPI_UNSIGNED",
    i64 => "MPI_LONG", u64 => "MPI_UNSIGNED_LONG");
float!(f32 => "MPI_FLOAT", f64 => "MPI_DOUBLE");

/// The bytes of a buffer, as they travel.
pub(crate) fn bytes<T: Equivalence>(buf: &[T]) -> &[u8] {
    bytemuck::cast_slice(buf)
}

/// The bytes of a buffer, to be filled.
pub(crate) fn bytes_mut<T: Equivalence>(buf: &mut [T]) -> &mut [u8] {
    bytemuck::cast_slice_mut(buf)
}

/// Copies received bytes into a typed buffer (the bytes need not be aligned for `T`).
pub(crate) fn fill<T: Equivalence>(buf: &mut [T], data: &[u8]) {
    bytes_mut(buf)[..data.len()].copy_from_slice(data);
}

/// Reduces `data` (bytes of `T`, possibly unaligned) into `acc`.
pub(crate) fn reduce_bytes<T: Equivalence>(op: Op, acc: &mut [T], data: &[u8]) -> Result<()> {
    if data.len() != std::mem::size_of_val(acc) {
        return Err(Error::InvalidCount(format!(
            "a contribution of {} bytes to a reduction of {} bytes",
            data.len(),
            std::mem::size_of_val(acc)
        )));
    }
    // The received bytes themselves when they are aligned for `T` (a fresh or pooled buffer
    // is); a copy otherwise.
    match bytemuck::try_cast_slice::<u8, T>(data) {
        Ok(other) => T::reduce(op, acc, other),
        Err(_) => T::reduce(op, acc, &bytemuck::pod_collect_to_vec::<u8, T>(data)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_on_integers_and_floats() {
        let mut a = [5i32, -3, 0xf0];
        i32::reduce(Op::Sum, &mut a, &[1, 1, 1]).unwrap();
        assert_eq!(a, [6, -2, 0xf1]);
        i32::reduce(Op::BAnd, &mut a, &[2, -1, 0x0f]).unwrap();
        assert_eq!(a, [2, -2, 0x01]);
        let mut u = [u64::MAX];
        u64::reduce(Op::Sum, &mut u, &[2]).unwrap();
        assert_eq!(u, [1]);
        let mut f = [1.5f64, -2.0];
        f64::reduce(Op::Max, &mut f, &[1.0, 3.0]).unwrap();
        assert_eq!(f, [1.5, 3.0]);
        f64::reduce(Op::Prod, &mut f, &[2.0, 2.0]).unwrap();
        assert_eq!(f, [3.0, 6.0]);
        assert!(matches!(
            f32::reduce(Op::BXor, &mut [1.0], &[1.0]),
            Err(Error::InvalidOp(_))
        ));
        assert!(matches!(
            u8::reduce(Op::Min, &mut [1, 2], &[1]),
            Err(Error::InvalidCount(_))
        ));
    }
}
