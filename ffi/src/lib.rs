//! # dsm-ffi: the C ABI of the DSM runtime
//!
//! This crate will build `libdsm.so` and `libdsm.a`, with the generated header `include/dsm.h`
//! and a `dsm.pc` for pkg-config, so that C, C++ and Fortran programs can use the global shared
//! memory of [`dsm_core`]. It holds no code yet: the C API is built by its own issue, on top of
//! the shared memory of `dsm-core`.
