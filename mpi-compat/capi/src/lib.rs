//! # libdsmmpi: a C `mpi.h` subset over the DSM runtime
//!
//! The functions of `include/mpi.h` (MPI 3.1: environment, communicators and groups,
//! point-to-point with persistent requests, blocking and non-blocking collectives with their
//! v/w forms and reduce-scatter, derived datatypes, one-sided windows, Cartesian and
//! distributed-graph topologies with neighbourhood collectives: everything the OSU
//! Micro-Benchmarks 7.x use),
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
//! Threads: `MPI_Init_thread` grants `MPI_THREAD_MULTIPLE`. Calls run under one library lock,
//! except those that may wait for other processes: `MPI_Send`, `MPI_Recv`, `MPI_Wait`,
//! `MPI_Waitall`, `MPI_Barrier`, `MPI_Bcast`, `MPI_Reduce`, `MPI_Allreduce`, `MPI_Gather`,
//! `MPI_Allgather`, `MPI_Scatter` and `MPI_Alltoall` take what they need under the lock (the
//! communicator, the datatypes, the request) and wait without it, so a thread blocked in one
//! never holds back another thread's calls (test `tests/c/threads.c`). `MPI_Waitany`,
//! `MPI_Test*`, the v/w and neighbourhood collectives and the RMA synchronisation calls still
//! wait holding the lock: a thread blocked in one of them delays the other threads' calls until
//! it returns, and a program whose progress needs another thread's call meanwhile (a send the
//! awaited message depends on) waits for ever. `osu_latency_mt` uses only the first kind.
//! The calls on a communicator of the first kind take nothing under the lock when their thread's
//! previous such call named the same handles and no handle changed since (`recent.rs`).
//!
//! Non-blocking collectives (and the v/w, reduce-scatter and neighbourhood collectives) are
//! schedules of point-to-point messages on a hidden duplicate of the communicator: every
//! message is sent when the collective starts, and `MPI_Wait`/`MPI_Test` complete its
//! receives (module `sched`), so ranks may do other communication between the start and the
//! wait without deadlock.
//!
//! What is not supported returns an error class: a non-contiguous datatype in `MPI_Irecv`,
//! `MPI_Recv_init` or as the target datatype of an RMA call (`MPI_ERR_TYPE`), a neighbourhood
//! collective on a communicator without a distributed graph (`MPI_ERR_TOPOLOGY`: Cartesian
//! neighbourhoods are not provided, nor is the general `MPI_Dist_graph_create`), a Cartesian grid that does not
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
mod collv;
mod env;
mod icoll;
mod neighbor;
mod p2p;
mod persist;
mod recent;
mod request;
mod sched;
mod state;
mod topo;
mod types;
mod win;

pub use coll::*;
pub use collv::*;
pub use env::*;
pub use icoll::*;
pub use neighbor::*;
pub use p2p::*;
pub use persist::*;
pub use topo::*;
pub use win::*;
