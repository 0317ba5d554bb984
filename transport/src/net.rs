//! Small socket helpers shared by the tcp backend and the bootstrap.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Waits until `socket` is readable (for a listener: has a connection to accept) or `timeout`
/// passes, whichever comes first.
pub fn wait_readable(socket: &impl AsRawFd, timeout: Duration) {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is a valid, initialised pollfd that lives across the call, and the count
    // passed is exactly one. An error (EINTR) only shortens the wait, which callers tolerate.
    unsafe { libc::poll(&mut pfd, 1, ms) };
}

/// Pauses for `d`: the back-off between two attempts to connect to a peer that is not listening
/// yet. Never a means of synchronisation: every caller retries against a deadline.
pub fn backoff(d: Duration) {
    let m = std::sync::Mutex::new(());
    let cv = std::sync::Condvar::new();
    let deadline = Instant::now() + d;
    let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
    while Instant::now() < deadline {
        g = cv
            .wait_timeout(g, deadline - Instant::now())
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
