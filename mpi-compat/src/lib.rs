//! # mpi-compat: MPI-style programming over the DSM runtime
//!
//! This crate will give programs written for MPI a familiar API (the world communicator,
//! point-to-point messages, collectives and RMA windows) and a C `mpi.h` subset, mapped onto the
//! global memory and the one-sided operations of [`dsm_core`], so that MPI-style benchmarks run
//! on the runtime unchanged. It holds no code yet: it is built by its own issue.
