//! # libdsm: the C ABI of the DSM runtime
//!
//! This crate builds `libdsm.so` and `libdsm.a`, the library C, C++ and Fortran programs link to
//! use the global shared memory of [`dsm_core`]. Its header, `include/dsm.h`, is generated from
//! these sources by cbindgen and checked in (a test fails when they drift apart); `dsm.pc` makes
//! `pkg-config --cflags --libs dsm` work after `scripts/install.sh --prefix DIR`.
//!
//! ```c
//! #include <dsm.h>
//! int main(int argc, char **argv) {
//!     if (dsm_init(&argc, &argv) != DSM_OK) return 1;
//!     long *counter = dsm_alloc_collective(sizeof(long));
//!     static dsm_lock_t *lock; // ... see ffi/examples/counter.c
//!     dsm_barrier();
//!     dsm_finalize();
//! }
//! ```
//! Compile with `cc prog.c $(pkg-config --cflags --libs dsm)`, run with `dsmrun -n 4 ./a.out`.
//!
//! ## Conventions
//!
//! - Functions return an `int` status: `DSM_OK` (0) on success, a distinct negative `DSM_ERR_*`
//!   per kind of failure (`DSM_BUSY`, positive, is `dsm_trylock`'s "taken"). Functions that
//!   return a pointer or a value return NULL or 0 on failure and leave the status for
//!   [`dsm_last_error`]; [`dsm_last_error_message`] says more (which pointer, which peer).
//! - Every exported function catches panics (a bug in the runtime becomes `DSM_ERR_INTERNAL`,
//!   never an unwind into C), checks its pointers (NULL, not global, misaligned), and fails
//!   cleanly before `dsm_init` and after `dsm_finalize`.
//! - The header says, per function, whether it is collective (every node calls it, in the same
//!   order), whether it is thread-safe, and its errors.
//!
//! ## Thread safety
//!
//! Every function may be called from any thread once the runtime runs; collective functions
//! (`dsm_barrier`, `dsm_alloc_collective*`, `dsm_free_collective`, `dsm_broadcast`,
//! `dsm_finalize`) must be called from one thread per node at a time, in the same order on every
//! node. Global memory itself is release-consistent (see `docs/MEMORY_MODEL.md`).

#![allow(non_camel_case_types)]

mod atomics;
mod checkpoint;
mod collectives;
mod errors;
mod lifecycle;
mod memory;
mod objects;
mod parmacs;
mod runtime;
mod signals;
mod stats;
mod status;
mod sync;

pub use atomics::{
    dsm_atomic_compare_exchange_u64, dsm_atomic_exchange_u64, dsm_atomic_fetch_add_u64,
    dsm_atomic_load_u64, dsm_atomic_store_u64,
};
pub use collectives::dsm_broadcast;
pub use errors::{dsm_last_error, dsm_last_error_message, dsm_strerror};
pub use lifecycle::{
    dsm_finalize, dsm_init, dsm_initialized, dsm_nodes, dsm_page_size, dsm_rank, dsm_wtime,
};
pub use memory::{
    dsm_alloc_collective, dsm_alloc_collective_placed, dsm_calloc, dsm_free, dsm_free_collective,
    dsm_home_of, dsm_is_global, dsm_malloc, dsm_placement, DSM_PLACEMENT_BLOCKED,
    DSM_PLACEMENT_CYCLIC, DSM_PLACEMENT_FIRST_TOUCH, DSM_PLACEMENT_NODE,
};
pub use objects::{
    dsm_cond_broadcast, dsm_cond_init, dsm_cond_signal, dsm_cond_t, dsm_cond_wait, dsm_sem_init,
    dsm_sem_post, dsm_sem_t, dsm_sem_trywait, dsm_sem_wait,
};
pub use parmacs::barrier::{dsm_parmacs_barrier, dsm_parmacs_barrier_init, dsm_parmacs_barrier_t};
pub use parmacs::image::dsm_parmacs_boot;
pub use parmacs::{
    dsm_parmacs_check, dsm_parmacs_create, dsm_parmacs_end, dsm_parmacs_free, dsm_parmacs_getsub,
    dsm_parmacs_init, dsm_parmacs_malloc, dsm_parmacs_threads_here, dsm_parmacs_wait_for_end,
};
pub use stats::{dsm_stats_get, dsm_stats_print, dsm_stats_reset, dsm_stats_t};
pub use status::dsm_status;
pub use sync::{
    dsm_acquire, dsm_barrier, dsm_lock, dsm_lock_init, dsm_lock_t, dsm_release, dsm_trylock,
    dsm_unlock,
};
