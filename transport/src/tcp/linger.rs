//! The linger timer of the tcp backend. When lingering is on (`Transport::set_linger`, an MPI
//! program), a thread that got the message or response it waited for leaves the
//! progress thread's read interest withdrawn for a while ([`LINGER`]): it usually waits again
//! within microseconds (the next receive of a ping-pong, the next round of a collective), and
//! giving the interest back and taking it away again costs two system calls per message, while
//! a message that arrives in between would wake the progress thread for nothing. When nobody
//! waited on a connection for [`LINGER`], this timer (a `timerfd` in the progress thread's
//! poller) makes the progress thread take the connection back.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::{Error, Result};

/// How long a connection stays with the threads that wait on it after the last one got its
/// message. Bounds the extra delay of a peer's one-sided request that arrives after an
/// application thread stopped receiving and before the progress thread took the connection
/// back.
pub(crate) const LINGER: Duration = Duration::from_millis(1);

/// A one-shot monotonic timer that the progress thread polls.
#[derive(Debug)]
pub(crate) struct LingerTimer {
    /// The timerfd (a `File` for its `read`).
    fd: std::fs::File,
    /// Whether an expiry is pending (so that arming it again is skipped).
    armed: AtomicBool,
}

impl LingerTimer {
    /// A disarmed timer.
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses a timer.
    pub(crate) fn new() -> Result<LingerTimer> {
        // SAFETY: timerfd_create takes no pointers; it returns a new descriptor or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::io(
                "creating the linger timer",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(LingerTimer {
            // SAFETY: `fd` was just returned by timerfd_create, is open, and nothing else owns it.
            fd: std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }),
            armed: AtomicBool::new(false),
        })
    }

    /// The descriptor to register with the poller (readable when the timer expired).
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the timer expire `after` from now, unless an expiry is already pending.
    pub(crate) fn arm(&self, after: Duration) {
        if self.armed.swap(true, Ordering::SeqCst) {
            return;
        }
        let after = after.max(Duration::from_micros(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec that outlives the call; the old value is not
        // asked for (null); the descriptor is a timerfd we own.
        let r =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r != 0 {
            // Cannot happen with a valid descriptor and spec; without the timer the progress
            // thread would take connections back only at its next tick.
            tracing::warn!(
                "arming the linger timer: {}",
                std::io::Error::last_os_error()
            );
            self.armed.store(false, Ordering::SeqCst);
        }
    }

    /// Consumes an expiry: later calls of [`LingerTimer::arm`] arm it again.
    pub(crate) fn expired(&self) {
        let mut count = [0u8; 8];
        // A short or failed read (nothing expired: a spurious event) changes nothing.
        let _ = std::io::Read::read(&mut &self.fd, &mut count);
        self.armed.store(false, Ordering::SeqCst);
    }
}
