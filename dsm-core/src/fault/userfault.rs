//! The userfaultfd engine: choosing it, and its service threads (hand-off mode).
//!
//! In the hand-off mode a faulting thread sleeps in the kernel while a service thread reads the
//! fault from the file, resolves it with [`Resolve::resolve`] (the runtime maps the page, under its
//! lock, with `UFFDIO_CONTINUE` or `UFFDIO_WRITEPROTECT`), wakes the sleeper once the
//! resolution is complete, and reads the next. Several service threads read the same file, so
//! faults on different pages are served concurrently; faults on one page wait for each other on
//! the page's lock.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{FaultMode, Resolve};
use crate::error::{Error, Result};
use crate::space::{GlobalSpace, PAGE};
use crate::uffd::{self, Userfaultfd};

/// Whether this kernel and process can run the userfaultfd engine in `mode`: the features it
/// needs are offered, and `UFFDIO_CONTINUE` can map a page write-protected. Returns the
/// features to ask for and how the file is opened.
///
/// # Errors
/// [`Error::Io`] when userfaultfd cannot be opened at all; [`Error::Config`] when the kernel
/// lacks a needed feature. Each names the reason.
pub(super) fn check(mode: FaultMode) -> Result<(u64, uffd::Access)> {
    // Valgrind runs the program's loads itself, one thread at a time: a load that sleeps in the
    // kernel on a userfaultfd fault (hand-off) blocks every thread, and the SIGBUS of the inline
    // mode ends the process. It announces itself through the preload of its core.
    if std::env::var("LD_PRELOAD").is_ok_and(|p| p.contains("vgpreload")) {
        return Err(Error::Config(
            "running under valgrind, which cannot run a program whose faults userfaultfd serves"
                .into(),
        ));
    }
    let (offered, access) = Userfaultfd::probe()?;
    let mut wanted = uffd::FEATURES_NEEDED;
    if mode == FaultMode::Inline {
        wanted |= uffd::FEATURE_SIGBUS;
    }
    if offered & wanted != wanted {
        return Err(Error::Config(format!(
            "userfaultfd offers features {}, the engine needs {}",
            uffd::describe(offered),
            uffd::describe(wanted)
        )));
    }
    uffd::check_continue_wp(uffd::FEATURES_NEEDED)?;
    Ok((wanted, access))
}

/// Opens a userfaultfd with what `mode` needs and hands `space`'s application view to it.
///
/// # Errors
/// As [`check`], and [`Error::Io`] when the view cannot be registered.
pub(super) fn attach(space: &mut GlobalSpace, mode: FaultMode) -> Result<()> {
    let (wanted, access) = check(mode)?;
    if access == uffd::Access::UserModeOnly && !matches!(mode, FaultMode::Inline) {
        tracing::warn!(
            "userfaultfd limited to user-mode faults (vm.unprivileged_userfaultfd=0 and no \
             CAP_SYS_PTRACE or /dev/userfaultfd): system calls that write into global memory \
             fail with EFAULT"
        );
    }
    let file = Userfaultfd::open(wanted)?;
    tracing::debug!(
        "fault engine: userfaultfd ({:?}) with features {}",
        file.access,
        uffd::describe(file.features)
    );
    space.attach_uffd(file)
}

/// Tells the service threads to stop: an `eventfd` they poll beside the userfaultfd.
#[derive(Debug)]
pub(super) struct StopSignal {
    fd: Arc<OwnedFd>,
}

impl StopSignal {
    /// Creates the event, not raised.
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses an `eventfd`.
    pub(super) fn new() -> Result<StopSignal> {
        // SAFETY: eventfd with a zero count and valid flags returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::io(
                "creating the fault engine's stop event",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(StopSignal {
            // SAFETY: a descriptor the kernel just returned, owned by nothing else.
            fd: Arc::new(unsafe { OwnedFd::from_raw_fd(fd) }),
        })
    }

    /// Makes the event readable for good: every service thread sees it and returns.
    pub(super) fn raise(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 initialised bytes to our eventfd.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

/// Starts `threads` service threads on the userfaultfd of `resolver`'s space, pushing them on
/// `handles`; they return once `stop` is raised.
///
/// # Errors
/// [`Error::Io`] when a thread cannot be created (the ones started are in `handles`, and
/// stop when `stop` is raised).
pub(super) fn spawn(
    resolver: &Arc<dyn Resolve>,
    threads: usize,
    stop: &StopSignal,
    handles: &mut Vec<JoinHandle<()>>,
) -> Result<()> {
    for i in 0..threads {
        let resolver = Arc::clone(resolver);
        let stop_fd = Arc::clone(&stop.fd);
        let h = std::thread::Builder::new()
            .name(format!("dsm-uffd-{i}"))
            .spawn(move || serve(&*resolver, stop_fd.as_raw_fd()))
            .map_err(|e| Error::io("starting a userfaultfd service thread", e))?;
        handles.push(h);
    }
    Ok(())
}

/// A service thread: waits for the userfaultfd (or the stop event) to become readable, then
/// serves the faults it reads one at a time.
fn serve(resolver: &dyn Resolve, stop: libc::c_int) {
    let Some(file) = resolver.space().uffd() else {
        return;
    };
    loop {
        let mut fds = [
            libc::pollfd {
                fd: file.raw(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: poll on two valid pollfd structs that live for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            fail(resolver, &format!("polling userfaultfd: {e}"));
        }
        if fds[1].revents != 0 {
            return;
        }
        loop {
            match file.read_msg() {
                Ok(Some(msg)) => serve_one(resolver, &msg),
                Ok(None) => break,
                Err(e) => fail(resolver, &format!("{e}")),
            }
        }
    }
}

fn serve_one(resolver: &dyn Resolve, msg: &uffd::Msg) {
    if msg.event != uffd::EVENT_PAGEFAULT {
        return;
    }
    let addr = msg.address as usize;
    let write = msg.flags & uffd::PAGEFAULT_FLAG_WRITE != 0;
    if let Err(e) = resolver.resolve(addr, write) {
        let kind = if write { "write" } else { "read" };
        fail(
            resolver,
            &format!("cannot resolve a {kind} fault at {addr:#x}: {e}"),
        );
    }
    // Only now, with the resolution complete (the page on the dirty list, its lock released),
    // may the faulting thread go on.
    let page = addr & !(PAGE - 1);
    if let Some(Err(e)) = resolver.space().uffd().map(|f| f.wake(page, PAGE)) {
        fail(resolver, &format!("{e}"));
    }
}

/// A fault that cannot be resolved: its thread sleeps in the kernel and would never wake, so
/// the process ends as the `sigsegv` engine ends it, with an error message and a crash the
/// launcher reports.
fn fail(resolver: &dyn Resolve, what: &str) -> ! {
    eprintln!("dsm: rank {}: {what}", resolver.rank());
    std::process::abort()
}
