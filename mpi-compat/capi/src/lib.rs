//! # libdsmmpi: a C `mpi.h` subset over the DSM runtime
//!
//! The functions of `include/mpi.h` (MPI 3.1: environment, communicators and groups,
//! point-to-point, collectives, derived datatypes, one-sided windows, Cartesian topologies),
//! exported with C linkage from `libdsmmpi.so` / `libdsmmpi.a` and implemented on
//! [`mpi_compat`]. Build a C program with `mpi-compat/capi/dsmmpicc prog.c -o prog` and run it
//! with `dsmrun -n 4 ./prog`.
//!
//! Every exported function catches panics, checks its handles, and returns `MPI_SUCCESS` or
//! an MPI error class; under the default error handler (`MPI_ERRORS_ARE_FATAL`) an error is
//! printed and ends the process with the class as its exit status, which makes `dsmrun` stop
//! the job. Calls before `MPI_Init` or after `MPI_Finalize` are errors of class
//! `MPI_ERR_OTHER`.
//!
//! What is not supported returns an error class: a non-contiguous datatype in `MPI_Irecv` or
//! as the target datatype of an RMA call (`MPI_ERR_TYPE`), a Cartesian grid that does not
//! cover the whole communicator (`MPI_ERR_DIMS`), negative ranks other than `MPI_PROC_NULL`
//! (`MPI_ERR_RANK`). `MPI_PROC_NULL` is a valid peer of point-to-point calls (they complete at
//! once) and a valid RMA target (the call does nothing).
//!
//! # Safety
//! The exported functions are `unsafe`: their pointer arguments must be what the MPI standard
//! says (buffers valid for `count` elements of the datatype, outputs valid for writing), and
//! non-blocking receive buffers must stay valid until the request completes.

#![allow(non_snake_case, clippy::missing_safety_doc)]

mod coll;
mod env;
mod p2p;
mod state;
mod topo;
mod types;
mod win;

pub use coll::*;
pub use env::*;
pub use p2p::*;
pub use topo::*;
pub use win::*;
