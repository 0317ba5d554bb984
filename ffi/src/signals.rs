//! The one signal disposition the C API changes: `SIGPIPE`.
//!
//! Rust programs start with `SIGPIPE` ignored, C programs with its default action, which kills
//! the process when it writes to a connection its peer closed. The transport sends with
//! `MSG_NOSIGNAL`, but the bootstrap and the standard library's sockets do not, so a C program
//! would die silently where a Rust one gets an error naming the lost peer.

use std::io;

use crate::status::{Failure, DSM_ERR_IO};

/// Ignores `SIGPIPE` if it still has its default action (a handler or `SIG_IGN` the program
/// set itself is left alone).
pub(crate) fn ignore_sigpipe() -> Result<(), Failure> {
    // SAFETY: an all-zero `sigaction` is a valid value for the kernel to fill in.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`, which is valid.
    if unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) } != 0 {
        return Err(io_failure("read the SIGPIPE action"));
    }
    if old.sa_sigaction != libc::SIG_DFL {
        return Ok(());
    }
    // SAFETY: as above; `new` is a fully initialised action that ignores the signal (no
    // handler runs, so no async-signal-safety question arises).
    let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
    new.sa_sigaction = libc::SIG_IGN;
    // SAFETY: `new` is a valid action and a null old action is allowed.
    if unsafe { libc::sigaction(libc::SIGPIPE, &new, std::ptr::null_mut()) } != 0 {
        return Err(io_failure("ignore SIGPIPE"));
    }
    Ok(())
}

fn io_failure(what: &str) -> Failure {
    Failure::new(
        DSM_ERR_IO,
        format!("{what}: {}", io::Error::last_os_error()),
    )
}
