//! Datatypes: the predefined ones and the derived ones of `MPI_Type_contiguous`,
//! `MPI_Type_vector` and `MPI_Type_indexed` (MPI-3.1 §4.1), as a list of byte blocks over one
//! primitive type, packed into contiguous bytes before they travel.

use std::borrow::Cow;
use std::sync::Arc;

use mpi_compat::Op;

use crate::state::{CResult, Failure, Tables, ERR_ARG, ERR_OP, ERR_TYPE};

/// The element type a datatype is built of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prim {
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Prim {
    pub(crate) fn size(self) -> usize {
        match self {
            Prim::I8 | Prim::U8 => 1,
            Prim::I16 | Prim::U16 => 2,
            Prim::I32 | Prim::U32 | Prim::F32 => 4,
            Prim::I64 | Prim::U64 | Prim::F64 => 8,
        }
    }
}

/// Runs `$body` with `$t` bound to the Rust type of `$prim`.
macro_rules! with_prim {
    ($prim:expr, $t:ident => $body:expr) => {
        match $prim {
            $crate::types::Prim::I8 => {
                type $t = i8;
                $body
            }
            $crate::types::Prim::U8 => {
                type $t = u8;
                $body
            }
            $crate::types::Prim::I16 => {
                type $t = i16;
                $body
            }
            $crate::types::Prim::U16 => {
                type $t = u16;
                $body
            }
            $crate::types::Prim::I32 => {
                type $t = i32;
                $body
            }
            $crate::types::Prim::U32 => {
                type $t = u32;
                $body
            }
            $crate::types::Prim::I64 => {
                type $t = i64;
                $body
            }
            $crate::types::Prim::U64 => {
                type $t = u64;
                $body
            }
            $crate::types::Prim::F32 => {
                type $t = f32;
                $body
            }
            $crate::types::Prim::F64 => {
                type $t = f64;
                $body
            }
        }
    };
}
pub(crate) use with_prim;

/// A datatype: blocks of bytes (offset, length) inside an extent, all of one primitive.
#[derive(Debug, Clone)]
pub(crate) struct Datatype {
    pub(crate) prim: Prim,
    /// The runs of bytes of one element (offset, length), shared: a call takes a clone of its
    /// datatypes, and that must not cost an allocation.
    pub(crate) blocks: Arc<[(usize, usize)]>,
    pub(crate) extent: usize,
    pub(crate) size: usize,
    pub(crate) committed: bool,
    pub(crate) name: &'static str,
}

const PREDEFINED: [(i32, Prim, &str); 23] = [
    (1, Prim::I8, "MPI_CHAR"),
    (2, Prim::I8, "MPI_SIGNED_CHAR"),
    (3, Prim::U8, "MPI_UNSIGNED_CHAR"),
    (4, Prim::U8, "MPI_BYTE"),
    (5, Prim::I16, "MPI_SHORT"),
    (6, Prim::U16, "MPI_UNSIGNED_SHORT"),
    (7, Prim::I32, "MPI_INT"),
    (8, Prim::U32, "MPI_UNSIGNED"),
    (9, Prim::I64, "MPI_LONG"),
    (10, Prim::U64, "MPI_UNSIGNED_LONG"),
    (11, Prim::I64, "MPI_LONG_LONG"),
    (12, Prim::U64, "MPI_UNSIGNED_LONG_LONG"),
    (13, Prim::F32, "MPI_FLOAT"),
    (14, Prim::F64, "MPI_DOUBLE"),
    (15, Prim::I64, "MPI_AINT"),
    (16, Prim::I8, "MPI_INT8_T"),
    (17, Prim::U8, "MPI_UINT8_T"),
    (18, Prim::I16, "MPI_INT16_T"),
    (19, Prim::U16, "MPI_UINT16_T"),
    (20, Prim::I32, "MPI_INT32_T"),
    (21, Prim::U32, "MPI_UINT32_T"),
    (22, Prim::I64, "MPI_INT64_T"),
    (23, Prim::U64, "MPI_UINT64_T"),
];

/// The first handle value free for derived types.
pub(crate) fn install_predefined(t: &mut Tables) {
    for (h, prim, name) in PREDEFINED {
        t.types.insert(
            h,
            Datatype {
                prim,
                blocks: Arc::new([(0, prim.size())]),
                extent: prim.size(),
                size: prim.size(),
                committed: true,
                name,
            },
        );
    }
}

pub(crate) fn is_predefined(h: i32) -> bool {
    (1..=PREDEFINED.len() as i32).contains(&h)
}

impl Datatype {
    /// Whether `count` elements lie as one run of bytes.
    pub(crate) fn contiguous(&self) -> bool {
        *self.blocks == [(0, self.size)] && self.extent == self.size
    }

    /// `count` copies of `old`, `stride` bytes apart, each made of `blocklen` elements at
    /// `displs` (bytes): the common shape of the three constructors.
    pub(crate) fn derive(old: &Datatype, pieces: &[(usize, usize)]) -> CResult<Datatype> {
        // Size (an `int` in C) and extent first, checked, before any block is built.
        let mut total: usize = 0;
        for &(displ, count) in pieces {
            total = count
                .checked_mul(old.size)
                .and_then(|bytes| total.checked_add(bytes))
                .filter(|&t| t <= i32::MAX as usize)
                .ok_or_else(too_big)?;
            count
                .checked_mul(old.extent)
                .and_then(|span| span.checked_add(displ))
                .ok_or_else(too_big)?;
        }
        let mut blocks: Vec<(usize, usize)> = Vec::new();
        let mut extent = 0;
        for &(displ, count) in pieces {
            for i in 0..count {
                let base = displ
                    .checked_add(i.checked_mul(old.extent).ok_or_else(too_big)?)
                    .ok_or_else(too_big)?;
                for &(off, len) in old.blocks.iter() {
                    let at = base + off;
                    match blocks.last_mut() {
                        Some((o, l)) if *o + *l == at => *l += len,
                        _ => blocks.push((at, len)),
                    }
                }
                extent = extent.max(base + old.extent);
            }
        }
        let size = blocks.iter().map(|b| b.1).sum();
        if size > i32::MAX as usize {
            return Err(too_big());
        }
        Ok(Datatype {
            prim: old.prim,
            blocks: blocks.into(),
            extent,
            size,
            committed: false,
            name: "",
        })
    }

    /// Packs `count` elements at `buf` into contiguous bytes.
    ///
    /// # Safety
    /// `buf` must be readable over `count` extents of this type.
    pub(crate) unsafe fn pack(&self, buf: *const u8, count: usize) -> CResult<Vec<u8>> {
        let total = self.size.checked_mul(count).ok_or_else(too_big)?;
        if total > 0 && buf.is_null() {
            return Err(Failure::new(ERR_ARG, "a null buffer"));
        }
        if self.contiguous() {
            // One run of bytes: one copy, not one per element.
            // SAFETY: `total` bytes at `buf` are readable (checked not null when `total` > 0;
            // the caller vouches for `count` extents, which are `total` bytes here).
            return Ok(unsafe { contiguous_bytes(buf, total) }.to_vec());
        }
        let mut out = Vec::with_capacity(total);
        for i in 0..count {
            for &(off, len) in self.blocks.iter() {
                let at = buf.wrapping_add(i * self.extent + off);
                // SAFETY: inside the `count` extents the caller vouches for.
                let src = unsafe { std::slice::from_raw_parts(at, len) };
                out.extend_from_slice(src);
            }
        }
        Ok(out)
    }

    /// The bytes of `count` elements at `buf` as they travel: the C buffer itself when the
    /// type is contiguous (no copy), packed otherwise.
    ///
    /// # Safety
    /// `buf` must be readable over `count` extents of this type, and not written while the
    /// result lives.
    pub(crate) unsafe fn view<'a>(&self, buf: *const u8, count: usize) -> CResult<Cow<'a, [u8]>> {
        if !self.contiguous() {
            // SAFETY: as this function's contract.
            return Ok(Cow::Owned(unsafe { self.pack(buf, count)? }));
        }
        let total = self.size.checked_mul(count).ok_or_else(too_big)?;
        if total > 0 && buf.is_null() {
            return Err(Failure::new(ERR_ARG, "a null buffer"));
        }
        // SAFETY: as this function's contract; `total` bytes in one run, not null if any.
        Ok(Cow::Borrowed(unsafe { contiguous_bytes(buf, total) }))
    }

    /// Unpacks bytes (a whole number of elements, at most `count`) into `buf`.
    ///
    /// # Safety
    /// `buf` must be writable over `count` extents of this type.
    pub(crate) unsafe fn unpack(&self, data: &[u8], buf: *mut u8, count: usize) -> CResult<()> {
        if data.len() > self.size * count {
            return Err(Failure::new(ERR_ARG, "more data than the buffer holds"));
        }
        if !data.is_empty() && buf.is_null() {
            return Err(Failure::new(ERR_ARG, "a null buffer"));
        }
        if self.contiguous() {
            if !data.is_empty() {
                // SAFETY: `data.len()` is at most `count` elements (checked above), all
                // writable by contract, in one run; `data` and the C buffer are distinct.
                unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len()) };
            }
            return Ok(());
        }
        let mut at = 0;
        'outer: for i in 0..count {
            for &(off, len) in self.blocks.iter() {
                if at >= data.len() {
                    break 'outer;
                }
                let n = len.min(data.len() - at);
                let dst = buf.wrapping_add(i * self.extent + off);
                // SAFETY: inside the `count` extents the caller vouches for; `data` and the
                // C buffer are distinct memory.
                unsafe {
                    std::ptr::copy_nonoverlapping(data[at..].as_ptr(), dst, n);
                }
                at += n;
            }
        }
        Ok(())
    }
}

/// `len` bytes at `buf` as a slice (empty when `len` is 0, whatever `buf` is).
///
/// # Safety
/// When `len` > 0, `buf` is not null and readable for `len` bytes, not written while the
/// slice lives.
unsafe fn contiguous_bytes<'a>(buf: *const u8, len: usize) -> &'a [u8] {
    if len == 0 {
        return &[];
    }
    // SAFETY: not null and `len` readable bytes by contract.
    unsafe { std::slice::from_raw_parts(buf, len) }
}

fn too_big() -> Failure {
    Failure::new(ERR_TYPE, "datatype too large")
}

impl Tables {
    pub(crate) fn datatype(&self, h: i32) -> CResult<&Datatype> {
        let t = self
            .types
            .get(&h)
            .ok_or_else(|| Failure::new(ERR_TYPE, format!("invalid datatype {h}")))?;
        if !t.committed {
            return Err(Failure::new(
                ERR_TYPE,
                format!("datatype {h} is not committed"),
            ));
        }
        Ok(t)
    }
}

/// The operation of an `MPI_Op` handle.
pub(crate) fn op(h: i32) -> CResult<Op> {
    Ok(match h {
        1 => Op::Sum,
        2 => Op::Prod,
        3 => Op::Min,
        4 => Op::Max,
        5 => Op::BAnd,
        6 => Op::BOr,
        7 => Op::BXor,
        8 => Op::Replace,
        9 => Op::NoOp,
        _ => return Err(Failure::new(ERR_OP, format!("invalid operation {h}"))),
    })
}

/// A count argument as a length.
pub(crate) fn count(c: i32) -> CResult<usize> {
    usize::try_from(c)
        .map_err(|_| Failure::new(crate::state::ERR_COUNT, format!("negative count {c}")))
}

#[cfg(test)]
mod tests {
    use super::{install_predefined, Datatype};
    use crate::state::Tables;

    #[test]
    fn oversized_derived_types_are_refused_up_front() {
        let mut t = Tables::default();
        install_predefined(&mut t);
        let double = t.types[&14].clone();
        // 2^28 doubles is 2^31 bytes: one more than an int holds.
        assert!(Datatype::derive(&double, &[(0, 1 << 28)]).is_err());
        assert!(Datatype::derive(&double, &[(0, usize::MAX)]).is_err());
        assert!(Datatype::derive(&double, &[(usize::MAX, 2)]).is_err());
        let ok = Datatype::derive(&double, &[(0, 2), (32, 1)]).unwrap();
        assert_eq!((ok.size, ok.extent), (24, 40));
    }
}
