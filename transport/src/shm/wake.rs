//! Waking a sleeping receiver only when it sleeps: the doorbell protocol of a control segment,
//! and the process-exit watch on peers (`pidfd`).
//!
//! A sender publishes its bytes, then (after a full fence) looks at the receiver's `spinners`
//! and `sleeping` words: while a receiving thread spins on the rings, or the progress thread is
//! awake, the message costs no system call. Only a receiver whose progress thread sleeps gets a
//! `FUTEX_WAKE` on the doorbell. The progress thread announces `sleeping`, fences, and looks
//! at the rings once more before it waits, so no message is left unseen (the two fences order
//! the two sides as in Dekker's algorithm).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::Duration;

use super::layout::Control;
use crate::error::{Error, Result};

/// Sender side: wakes the owner of `control` if it sleeps and nobody spins.
pub(super) fn notify(control: &Control) {
    fence(Ordering::SeqCst);
    if control.spinners().load(Ordering::SeqCst) == 0
        && control.sleeping().load(Ordering::SeqCst) != 0
    {
        ring_doorbell(control.doorbell());
    }
}

/// Bumps the doorbell and wakes whoever sleeps on it.
pub(super) fn ring_doorbell(doorbell: &AtomicU32) {
    doorbell.fetch_add(1, Ordering::SeqCst);
    // SAFETY: FUTEX_WAKE on an aligned 4-byte word of a mapping that outlives the call; a
    // shared (not private) futex, because the waiter is another process. It reads nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            doorbell.as_ptr(),
            libc::FUTEX_WAKE,
            1,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// Receiver side: sleeps on `doorbell` while it still reads `seen`, at most `timeout`.
pub(super) fn sleep(doorbell: &AtomicU32, seen: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: FUTEX_WAIT on an aligned 4-byte word of a mapping that outlives the call, with a
    // valid relative timeout; it returns at once when the word no longer holds `seen`.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            doorbell.as_ptr(),
            libc::FUTEX_WAIT,
            seen,
            &ts as *const libc::timespec,
        )
    };
}

/// A descriptor that becomes readable when a process exits.
pub(super) fn pidfd(pid: u32) -> Result<OwnedFd> {
    // SAFETY: pidfd_open with no flags takes a number and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(Error::io(
            format!("watching process {pid}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a descriptor just returned by pidfd_open, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind `pidfd` has exited.
pub(super) fn exited(pidfd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll of one valid pollfd that we own, without waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents != 0
}

/// Producer side, its ring full: waits until the consumer's `head` moves from `seen`, at most
/// `timeout`. The consumer does not wake this wait (it would cost it a system call per frame),
/// so a full ring is re-checked every `timeout`; the kernel returns at once if `head` already
/// moved.
pub(super) fn wait_for_room(head: &std::sync::atomic::AtomicU64, seen: u64, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // The futex is the counter's low half (little endian): the kernel compares it with `seen`'s.
    let low = head.as_ptr().cast::<u32>();
    // SAFETY: FUTEX_WAIT only reads the aligned 4-byte word at the start of an 8-byte word of a
    // mapping that outlives the call, with a valid relative timeout; Rust code never accesses
    // that half on its own.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            low,
            libc::FUTEX_WAIT,
            seen as u32,
            &ts as *const libc::timespec,
        )
    };
}
