//! Global memory: collective allocations with a placement, and the non-collective heap.

use std::ffi::{c_int, c_void};
use std::ptr;

use dsm_core::space::PAGE;
use dsm_core::{Dsm, Placement, Rank};

use crate::runtime::{global, status_call, value_call, with_dsm};
use crate::status::{Failure, DSM_ERR_OUT_OF_MEMORY, DSM_OK};

/// How the pages of a collective allocation are spread over the nodes (each page has a home
/// node that holds its authoritative copy).
pub type dsm_placement = c_int;

/// Node k is the home of the k-th of `dsm_nodes()` contiguous blocks of pages.
pub const DSM_PLACEMENT_BLOCKED: dsm_placement = 0;
/// Blocks of `block` bytes (rounded up to pages) go to the nodes in turn, round robin.
pub const DSM_PLACEMENT_CYCLIC: dsm_placement = 1;
/// A page's home is the first node that touches it.
pub const DSM_PLACEMENT_FIRST_TOUCH: dsm_placement = 2;
/// Every page is homed (and managed) at node `block` (a rank below `dsm_nodes()`).
pub const DSM_PLACEMENT_NODE: dsm_placement = 3;

/// Allocates `bytes` of global memory, page-aligned and zeroed, placed blocked over the nodes;
/// every node gets the same pointer. NULL on failure (see `dsm_last_error`).
///
/// Collective: every node calls it, in the same order, with the same size.
/// Thread safety: call collective functions from one thread per node.
/// Errors: `DSM_ERR_OUT_OF_MEMORY` (nothing is changed), `DSM_ERR_INVALID_ARGUMENT` on every
/// node when the nodes asked for different sizes (or are in different collective calls; nothing
/// is changed), `DSM_ERR_NOT_INITIALIZED`,
/// `DSM_ERR_FINALIZED`, `DSM_ERR_PEER_LOST`.
#[no_mangle]
pub extern "C" fn dsm_alloc_collective(bytes: usize) -> *mut c_void {
    dsm_alloc_collective_placed(bytes, DSM_PLACEMENT_BLOCKED, 0)
}

/// Allocates `bytes` of global memory like `dsm_alloc_collective`, with the placement `policy`;
/// `block` is the block size in bytes of `DSM_PLACEMENT_CYCLIC` (rounded up to whole pages; 0
/// means one page), the home node of `DSM_PLACEMENT_NODE`, and is ignored by the other
/// policies. NULL on failure.
///
/// Collective: every node calls it, in the same order, with the same arguments.
/// Thread safety: call collective functions from one thread per node.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (unknown policy; a `DSM_PLACEMENT_NODE` node not below
/// `dsm_nodes()`; or, on every node, arguments that differ between nodes: nothing is changed), `DSM_ERR_OUT_OF_MEMORY` (nothing is
/// changed), `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`, `DSM_ERR_PEER_LOST`.
#[no_mangle]
pub extern "C" fn dsm_alloc_collective_placed(
    bytes: usize,
    policy: dsm_placement,
    block: usize,
) -> *mut c_void {
    value_call(ptr::null_mut(), || {
        let placement = match policy {
            DSM_PLACEMENT_BLOCKED => Placement::Blocked,
            DSM_PLACEMENT_CYCLIC => Placement::Cyclic {
                block_pages: block.div_ceil(PAGE).max(1),
            },
            DSM_PLACEMENT_FIRST_TOUCH => Placement::FirstTouch,
            // A node that does not fit a rank is outside every job: the runtime refuses it
            // after the allocation's checked barrier, on every node that asked for it.
            DSM_PLACEMENT_NODE => Placement::Node(Rank(u32::try_from(block).unwrap_or(u32::MAX))),
            other => return Err(Failure::invalid(format!("unknown placement {other}"))),
        };
        with_dsm(|dsm| Ok(dsm.alloc_collective(bytes.max(1), placement)?.cast()))
    })
}

/// Frees a collective allocation. NULL is ignored. Failures are reported by `dsm_last_error`.
///
/// Collective: every node calls it, in the same order, with the same pointer.
/// Thread safety: call collective functions from one thread per node.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` on every node when the nodes passed different pointers or
/// are in different collective calls (a free on some nodes only; nothing is freed),
/// `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_INVALID_POINTER` (not the start of a live collective
/// allocation: double free, a `dsm_malloc` block), `DSM_ERR_NOT_INITIALIZED`,
/// `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_free_collective(p: *mut c_void) {
    value_call((), || {
        if p.is_null() {
            return Ok(());
        }
        with_dsm(|dsm| {
            global(dsm, p as usize, "the pointer")?;
            Ok(dsm.free_collective(p.cast())?)
        })
    })
}

/// Allocates `bytes` of global memory (homed on this node); the pointer is valid on every node,
/// and any node may free it. The memory is not initialised. NULL on failure (see
/// `dsm_last_error`).
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_OUT_OF_MEMORY` (this node's heap is full; nothing is changed),
/// `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_malloc(bytes: usize) -> *mut c_void {
    value_call(ptr::null_mut(), || with_dsm(|dsm| allocate(dsm, bytes)))
}

/// Allocates zeroed global memory for `n` elements of `size` bytes, like `dsm_malloc`.
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_OUT_OF_MEMORY` (also when `n * size` overflows), `DSM_ERR_NOT_INITIALIZED`,
/// `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_calloc(n: usize, size: usize) -> *mut c_void {
    value_call(ptr::null_mut(), || {
        let bytes = n.checked_mul(size).ok_or_else(|| {
            Failure::new(
                DSM_ERR_OUT_OF_MEMORY,
                format!("{n} elements of {size} bytes overflow the address space"),
            )
        })?;
        with_dsm(|dsm| {
            let p = allocate(dsm, bytes)?;
            // SAFETY: `p` is a fresh allocation of at least `bytes` bytes of global memory that
            // no one else has a pointer to yet; the fault engine makes it writable on first
            // touch.
            unsafe { ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
            Ok(p)
        })
    })
}

/// Frees memory from `dsm_malloc` or `dsm_calloc`, whichever node allocated it. NULL is
/// ignored. Failures are reported by `dsm_last_error`.
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_INVALID_POINTER` (not a live block of this node: a
/// double free, a pointer into the middle of a block; a bad pointer to another node's block is
/// reported by that node and ignored), `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
#[no_mangle]
pub extern "C" fn dsm_free(p: *mut c_void) {
    value_call((), || {
        if p.is_null() {
            return Ok(());
        }
        with_dsm(|dsm| {
            global(dsm, p as usize, "the pointer")?;
            Ok(dsm.free(p.cast())?)
        })
    })
}

/// Whether `p` points into global memory: 1 if it does, 0 if not (or before `dsm_init`).
///
/// Thread safety: thread-safe. Never fails.
#[no_mangle]
pub extern "C" fn dsm_is_global(p: *const c_void) -> c_int {
    value_call(0, || {
        Ok(with_dsm(|dsm| Ok(c_int::from(dsm.is_global(p as usize)))).unwrap_or(0))
    })
}

/// The node that homes the page at `p` (holds its authoritative copy), or a negative status.
/// For a first-touch page nobody has touched yet, the home is chosen now: this node.
///
/// Not collective. Thread safety: thread-safe.
/// Errors: `DSM_ERR_NOT_GLOBAL`, `DSM_ERR_UNALLOCATED` (no allocation covers `p`),
/// `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`, `DSM_ERR_PEER_LOST`, `DSM_ERR_TRANSPORT`.
#[no_mangle]
pub extern "C" fn dsm_home_of(p: *const c_void) -> c_int {
    let mut home = 0;
    let status = status_call(|| {
        with_dsm(|dsm| {
            global(dsm, p as usize, "the pointer")?;
            // Ranks are below 64 (`Dsm::with_node`), so they fit an int.
            home = c_int::try_from(dsm.home_of(p.cast())?).unwrap_or(c_int::MAX);
            Ok(())
        })
    });
    if status == DSM_OK {
        home
    } else {
        status
    }
}

fn allocate(dsm: &Dsm, bytes: usize) -> Result<*mut c_void, Failure> {
    // As `malloc(0)` may, a zero-byte request gets a unique pointer that can be freed.
    Ok(dsm.malloc(bytes.max(1))?.cast())
}
