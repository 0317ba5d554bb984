//! Typed access to global memory: [`GlobalVec`], an array of plain-old-data values allocated
//! collectively, the same on every node.

use std::marker::PhantomData;

use crate::coherence::placement::Placement;
use crate::dsm::Dsm;
use crate::error::Result;

/// A collectively allocated array of `len` values of `T` in global memory.
///
/// Element access ([`GlobalVec::get`], [`GlobalVec::set`]) is safe: it is an ordinary load or
/// store on global memory, made coherent by the runtime at synchronisation points. A
/// `GlobalVec` is neither `Send` nor `Sync`: one thread per process uses it, so its safe
/// accessors cannot race inside the process; races between nodes are the program's to avoid
/// (the memory model: data-race-free programs see sequential consistency).
#[derive(Debug)]
pub struct GlobalVec<'d, T> {
    ptr: *mut T,
    len: usize,
    _dsm: PhantomData<&'d Dsm>,
}

impl Dsm {
    /// Allocates a zero-initialised array of `len` values of `T` with the given placement.
    ///
    /// # Collective
    /// Every node must call it, in the same order, with the same arguments.
    ///
    /// # Errors
    /// [`crate::Error::OutOfMemory`] when the global heap has no room.
    pub fn alloc_vec<T: bytemuck::Pod>(
        &self,
        len: usize,
        placement: Placement,
    ) -> Result<GlobalVec<'_, T>> {
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or(crate::Error::OutOfMemory {
                requested: usize::MAX,
            })?;
        let ptr = self.alloc_collective(bytes, placement)?.cast::<T>();
        Ok(GlobalVec {
            ptr,
            len,
            _dsm: PhantomData,
        })
    }
}

impl<T: bytemuck::Pod> GlobalVec<'_, T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first element: the same on every node.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr
    }

    /// Reads element `i`.
    ///
    /// # Panics
    /// When `i` is out of bounds.
    pub fn get(&self, i: usize) -> T {
        assert!(
            i < self.len,
            "index {i} out of bounds of a global array of {}",
            self.len
        );
        // SAFETY: `i < len`, so the element lies inside the live allocation, which is aligned
        // for T (page-aligned start, T: Pod); any bit pattern is a valid T. A volatile read keeps
        // the compiler from caching values across synchronisation calls.
        unsafe { self.ptr.wrapping_add(i).read_volatile() }
    }

    /// Writes element `i`.
    ///
    /// # Panics
    /// When `i` is out of bounds.
    pub fn set(&self, i: usize, v: T) {
        assert!(
            i < self.len,
            "index {i} out of bounds of a global array of {}",
            self.len
        );
        // SAFETY: as for `get`; no other thread of this process can access it concurrently
        // (the type is neither Send nor Sync).
        unsafe { self.ptr.wrapping_add(i).write_volatile(v) }
    }

    /// The elements `range` as a slice, for loops that run at full speed.
    ///
    /// # Safety
    /// Until the slice is dropped, no other thread of this process may write these elements,
    /// and the program must be data-race free across nodes for them: no node writes them
    /// between the synchronisation point before this call and the next one. Do not keep the
    /// slice across a synchronisation call (barrier, lock, acquire): take a new one after it.
    ///
    /// # Panics
    /// When the range is out of bounds.
    pub unsafe fn slice(&self, range: std::ops::Range<usize>) -> &[T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range out of bounds"
        );
        // SAFETY: the range lies inside the allocation; the caller guarantees the absence of
        // concurrent writers (see the contract above).
        unsafe {
            std::slice::from_raw_parts(self.ptr.wrapping_add(range.start), range.end - range.start)
        }
    }

    /// The elements `range` as a mutable slice.
    ///
    /// # Safety
    /// As for [`GlobalVec::slice`], and no other slice of these elements may exist at the same
    /// time, in this process or (for the same interval) on another node.
    ///
    /// # Panics
    /// When the range is out of bounds.
    #[allow(
        clippy::mut_from_ref,
        reason = "global memory is shared; the contract is the caller's"
    )]
    pub unsafe fn slice_mut(&self, range: std::ops::Range<usize>) -> &mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "range out of bounds"
        );
        // SAFETY: the range lies inside the allocation; the caller guarantees exclusivity.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.wrapping_add(range.start),
                range.end - range.start,
            )
        }
    }
}
