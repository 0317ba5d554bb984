//! What went wrong: status names and the per-thread last error.

use std::ffi::{c_char, c_int};

use crate::status;

/// The name and meaning of `status`, as a static string (never NULL; unknown codes give
/// "unknown dsm status").
///
/// Thread safety: thread-safe; usable before `dsm_init`. Never fails.
#[no_mangle]
pub extern "C" fn dsm_strerror(status: c_int) -> *const c_char {
    status::describe(status).as_ptr()
}

/// The status of the calling thread's most recent `dsm_` call (`DSM_OK` if it succeeded): how
/// the functions that return a pointer or a value report failures.
///
/// Thread safety: per thread; usable before `dsm_init`. Never fails.
#[no_mangle]
pub extern "C" fn dsm_last_error() -> c_int {
    status::last_status()
}

/// A message for people about the calling thread's most recent failure (naming the pointer,
/// peer or setting at fault), or "" if none failed yet. The string stays valid until this
/// thread's next failing call.
///
/// Thread safety: per thread; usable before `dsm_init`. Never fails.
#[no_mangle]
pub extern "C" fn dsm_last_error_message() -> *const c_char {
    status::last_message()
}
