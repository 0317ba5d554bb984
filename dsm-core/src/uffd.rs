//! A `userfaultfd(2)` file, through raw `ioctl`s: open it, negotiate features, register the
//! application view, and change the mapping of pages (`UFFDIO_CONTINUE`, `UFFDIO_WRITEPROTECT`,
//! `UFFDIO_WAKE`).
//!
//! The application view is a shared mapping of the memfd that backs global memory (see
//! [`crate::space`]), so the runtime never copies a page in: it writes fetched data through the
//! runtime view (the same page cache), and `UFFDIO_CONTINUE` installs the page-table entry of
//! the page already in the cache, write-protected or not. Registration asks for three modes:
//!
//! - `MISSING`: an access to a page the cache does not hold (never fetched, or discarded);
//! - `MINOR`: an access to a page the cache holds but this view does not map (invalidated
//!   with `MADV_DONTNEED`, which drops the page-table entry and keeps the cache);
//! - `WP`: a write to a page mapped write-protected (a clean copy).
//!
//! Protection is per page-table entry: no VMA is ever split.
//!
//! Two modules use it, and it imports neither: [`crate::space`] maps the view's pages with it,
//! and the userfaultfd engine (`fault/userfault.rs`) opens it, attaches it and serves its
//! faults.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

const UFFD_API: u64 = 0xAA;
const UFFDIO: u64 = 0xAA;

/// `_IOC(dir, 0xAA, nr, size)` as the kernel's `asm-generic/ioctl.h` computes it.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (UFFDIO << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

const NR_REGISTER: u64 = 0x00;
const NR_WAKE: u64 = 0x02;
const NR_WRITEPROTECT: u64 = 0x06;
const NR_CONTINUE: u64 = 0x07;
const NR_API: u64 = 0x3F;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Range {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct ApiArg {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct RegisterArg {
    range: Range,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct WriteProtectArg {
    range: Range,
    mode: u64,
}

#[repr(C)]
#[derive(Debug, Default)]
struct ContinueArg {
    range: Range,
    mode: u64,
    mapped: i64,
}

const UFFDIO_API: u64 = ioc(IOC_READ | IOC_WRITE, NR_API, size_of::<ApiArg>());
const UFFDIO_REGISTER: u64 = ioc(IOC_READ | IOC_WRITE, NR_REGISTER, size_of::<RegisterArg>());
const UFFDIO_WAKE: u64 = ioc(IOC_READ, NR_WAKE, size_of::<Range>());
const UFFDIO_WRITEPROTECT: u64 = ioc(
    IOC_READ | IOC_WRITE,
    NR_WRITEPROTECT,
    size_of::<WriteProtectArg>(),
);
const UFFDIO_CONTINUE: u64 = ioc(IOC_READ | IOC_WRITE, NR_CONTINUE, size_of::<ContinueArg>());
/// `USERFAULTFD_IOC_NEW` of `/dev/userfaultfd`: `_IO(0xAA, 0x00)`.
const USERFAULTFD_IOC_NEW: u64 = UFFDIO << 8;

const REGISTER_MODE_MISSING: u64 = 1 << 0;
const REGISTER_MODE_WP: u64 = 1 << 1;
const REGISTER_MODE_MINOR: u64 = 1 << 2;
const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
const WRITEPROTECT_MODE_DONTWAKE: u64 = 1 << 1;
const CONTINUE_MODE_DONTWAKE: u64 = 1 << 0;
const CONTINUE_MODE_WP: u64 = 1 << 1;
/// `UFFD_USER_MODE_ONLY`: the flag an unprivileged process needs when
/// `vm.unprivileged_userfaultfd` is 0.
const USER_MODE_ONLY: libc::c_int = 1;

/// `UFFD_FEATURE_SIGBUS`: a fault raises `SIGBUS` in the faulting thread instead of queueing a
/// message.
pub(crate) const FEATURE_SIGBUS: u64 = 1 << 7;
/// `UFFD_FEATURE_MINOR_SHMEM`: minor faults (and `UFFDIO_CONTINUE`) on shared memory.
pub(crate) const FEATURE_MINOR_SHMEM: u64 = 1 << 10;
/// `UFFD_FEATURE_WP_HUGETLBFS_SHMEM`: write-protect mode on shared memory.
pub(crate) const FEATURE_WP_SHMEM: u64 = 1 << 12;
/// What the engine cannot work without.
pub(crate) const FEATURES_NEEDED: u64 = FEATURE_MINOR_SHMEM | FEATURE_WP_SHMEM;

/// `UFFD_EVENT_PAGEFAULT`.
pub(crate) const EVENT_PAGEFAULT: u8 = 0x12;
/// `UFFD_PAGEFAULT_FLAG_WRITE`.
pub(crate) const PAGEFAULT_FLAG_WRITE: u64 = 1 << 0;

/// One message read from the file (`struct uffd_msg`, 32 bytes); only page faults are asked
/// for.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Msg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    /// `UFFD_PAGEFAULT_FLAG_*`.
    pub flags: u64,
    /// The faulting address.
    pub address: u64,
    feat: u64,
}

const _: () = assert!(size_of::<Msg>() == 32);

/// How the file was obtained, for the log and the documentation of `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// The `userfaultfd(2)` system call, kernel faults included.
    Syscall,
    /// `/dev/userfaultfd`, kernel faults included.
    Device,
    /// The system call with `UFFD_USER_MODE_ONLY`: faults taken inside the kernel (a `read(2)`
    /// into global memory) fail with `EFAULT` instead of being served.
    UserModeOnly,
}

/// An open, negotiated `userfaultfd`.
#[derive(Debug)]
pub(crate) struct Userfaultfd {
    fd: OwnedFd,
    /// Features the kernel agreed to.
    pub features: u64,
    /// How it was opened.
    pub access: Access,
}

fn last_err(what: &str) -> Error {
    Error::io(what.to_string(), std::io::Error::last_os_error())
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Opens a fresh file: the system call, else `/dev/userfaultfd`, else the system call limited
/// to user-mode faults.
fn open_raw() -> Result<(OwnedFd, Access)> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    // SAFETY: the userfaultfd system call takes one integer of flags and returns a new file
    // descriptor (or -1); no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) } as libc::c_int;
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just returned, owned by nothing else.
        return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Access::Syscall));
    }
    let syscall_err = std::io::Error::last_os_error();
    if let Ok(dev) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/userfaultfd")
    {
        // SAFETY: USERFAULTFD_IOC_NEW takes the flags as its integer argument and returns a
        // new descriptor; `dev` is an open /dev/userfaultfd.
        let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, flags) };
        if fd >= 0 {
            // SAFETY: a descriptor the kernel just returned, owned by nothing else.
            return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Access::Device));
        }
    }
    // SAFETY: as above, with UFFD_USER_MODE_ONLY added to the flags.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags | USER_MODE_ONLY) } as libc::c_int;
    if fd >= 0 {
        // SAFETY: a descriptor the kernel just returned, owned by nothing else.
        return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Access::UserModeOnly));
    }
    Err(Error::io(
        "userfaultfd is not available (neither the system call, with or without \
         UFFD_USER_MODE_ONLY, nor /dev/userfaultfd)",
        syscall_err,
    ))
}

fn api(fd: &OwnedFd, features: u64) -> Result<u64> {
    let mut arg = ApiArg {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes one `struct uffdio_api`, which `arg` is (repr(C),
    // same layout), alive for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, &mut arg) } != 0 {
        return Err(last_err("UFFDIO_API"));
    }
    Ok(arg.features)
}

impl Userfaultfd {
    /// The features this kernel offers (negotiated on a throw-away file, since a file takes
    /// only one `UFFDIO_API`).
    ///
    /// # Errors
    /// [`Error::Io`] when userfaultfd cannot be opened at all.
    pub(crate) fn probe() -> Result<(u64, Access)> {
        let (fd, access) = open_raw()?;
        Ok((api(&fd, 0)?, access))
    }

    /// Opens a file with `features` (which must all be offered, see [`Userfaultfd::probe`]).
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses.
    pub(crate) fn open(features: u64) -> Result<Userfaultfd> {
        let (fd, access) = open_raw()?;
        let got = api(&fd, features)?;
        Ok(Userfaultfd {
            fd,
            features: got,
            access,
        })
    }

    /// The descriptor, for `poll` and `read`.
    pub(crate) fn raw(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// Registers `[start, start + len)` for missing, minor and write-protect faults.
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses; [`Error::Config`] when it cannot give the
    /// operations the engine uses (`UFFDIO_CONTINUE` and `UFFDIO_WRITEPROTECT`) on the range.
    pub(crate) fn register(&self, start: usize, len: usize) -> Result<()> {
        let mut arg = RegisterArg {
            range: Range {
                start: start as u64,
                len: len as u64,
            },
            mode: REGISTER_MODE_MISSING | REGISTER_MODE_MINOR | REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one `struct uffdio_register`, which `arg`
        // is; registering changes how faults in the range are served, not what memory holds.
        if unsafe { libc::ioctl(self.raw(), UFFDIO_REGISTER as _, &mut arg) } != 0 {
            return Err(last_err("UFFDIO_REGISTER of the application view"));
        }
        let needed = (1 << NR_CONTINUE) | (1 << NR_WRITEPROTECT) | (1 << NR_WAKE);
        if arg.ioctls & needed != needed {
            return Err(Error::Config(format!(
                "userfaultfd registration offers ioctls {:#x}, which lack CONTINUE or \
                 WRITEPROTECT",
                arg.ioctls
            )));
        }
        Ok(())
    }

    /// Maps the cached pages of `[start, start + len)` (`UFFDIO_CONTINUE`), write-protected
    /// when `wp`, without waking the threads waiting on them (see [`Userfaultfd::wake`]). Stops
    /// at the first page that is already mapped: returns the bytes mapped before it, or `None`
    /// when all were mapped.
    ///
    /// # Errors
    /// [`Error::Io`] for any other failure (for example a page the cache does not hold).
    pub(crate) fn map_cached(&self, start: usize, len: usize, wp: bool) -> Result<Option<usize>> {
        let mut done = 0;
        while done < len {
            let mut arg = ContinueArg {
                range: Range {
                    start: (start + done) as u64,
                    len: (len - done) as u64,
                },
                mode: CONTINUE_MODE_DONTWAKE | if wp { CONTINUE_MODE_WP } else { 0 },
                mapped: 0,
            };
            // SAFETY: UFFDIO_CONTINUE reads and writes one `struct uffdio_continue`, which `arg`
            // is. It maps pages of the memfd's own cache into the registered view: it cannot
            // change what any memory holds.
            let rc = unsafe { libc::ioctl(self.raw(), UFFDIO_CONTINUE as _, &mut arg) };
            if arg.mapped > 0 {
                done += arg.mapped as usize;
            }
            if rc == 0 {
                continue;
            }
            match errno() {
                libc::EEXIST => return Ok(Some(done)),
                libc::EAGAIN | libc::EINTR => continue,
                _ => return Err(last_err("UFFDIO_CONTINUE")),
            }
        }
        Ok(None)
    }

    /// Write-protects (`wp`) or un-protects `[start, start + len)`, without waking anybody.
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses.
    pub(crate) fn write_protect(&self, start: usize, len: usize, wp: bool) -> Result<()> {
        loop {
            let mut arg = WriteProtectArg {
                range: Range {
                    start: start as u64,
                    len: len as u64,
                },
                // Protecting never wakes (and the kernel refuses DONTWAKE with WP).
                mode: if wp {
                    WRITEPROTECT_MODE_WP
                } else {
                    WRITEPROTECT_MODE_DONTWAKE
                },
            };
            // SAFETY: UFFDIO_WRITEPROTECT reads one `struct uffdio_writeprotect`, which `arg`
            // is; it changes page-table protections of the registered view only.
            if unsafe { libc::ioctl(self.raw(), UFFDIO_WRITEPROTECT as _, &mut arg) } == 0 {
                return Ok(());
            }
            match errno() {
                libc::EAGAIN | libc::EINTR => continue,
                _ => return Err(last_err("UFFDIO_WRITEPROTECT")),
            }
        }
    }

    /// Wakes the threads waiting on faults in `[start, start + len)`; they retry their access.
    ///
    /// Mapping never wakes by itself: a thread woken in the middle of a resolution (after the
    /// page is mapped, before it is on the dirty list) could write and release before the
    /// runtime knows the page is written. The hand-off service threads wake a fault's page
    /// once its resolution is complete.
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses.
    pub(crate) fn wake(&self, start: usize, len: usize) -> Result<()> {
        let mut arg = Range {
            start: start as u64,
            len: len as u64,
        };
        // SAFETY: UFFDIO_WAKE reads one `struct uffdio_range`, which `arg` is.
        if unsafe { libc::ioctl(self.raw(), UFFDIO_WAKE as _, &mut arg) } != 0 {
            return Err(last_err("UFFDIO_WAKE"));
        }
        Ok(())
    }

    /// Reads the next message without blocking: `None` when there is none.
    ///
    /// # Errors
    /// [`Error::Io`] when reading fails.
    pub(crate) fn read_msg(&self) -> Result<Option<Msg>> {
        let mut msg = Msg::default();
        // SAFETY: reading at most size_of::<Msg>() bytes into `msg`, a plain repr(C) struct
        // valid for any bytes; the file is non-blocking.
        let n = unsafe { libc::read(self.raw(), (&mut msg as *mut Msg).cast(), size_of::<Msg>()) };
        if n == size_of::<Msg>() as isize {
            return Ok(Some(msg));
        }
        if n >= 0 {
            // (errno is only meaningful when the read failed.)
            return Err(Error::Config(format!(
                "short read of {n} bytes from userfaultfd"
            )));
        }
        match errno() {
            libc::EAGAIN | libc::EINTR => Ok(None),
            _ => Err(last_err("reading userfaultfd")),
        }
    }
}

/// Whether `UFFDIO_CONTINUE` takes `UFFDIO_CONTINUE_MODE_WP` (Linux 6.5 and later; no feature
/// bit announces it): maps a cached page of a one-page memfd write-protected, as the engine
/// does for every clean copy. Without it a clean copy would be mapped writable for a moment
/// before being write-protected, and a write by another thread in that moment would escape
/// the write detection, so the engine refuses such kernels.
///
/// # Errors
/// [`Error::Config`] when the kernel refuses the mode; [`Error::Io`] when the probe itself
/// cannot be set up.
pub(crate) fn check_continue_wp(features: u64) -> Result<()> {
    // SAFETY: memfd_create with a static, NUL-terminated name and a valid flag set.
    let fd = unsafe { libc::memfd_create(c"dsm-uffd-probe".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(last_err("creating the userfaultfd probe memfd"));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one = [1u8];
    // SAFETY: writing one initialised byte at offset 0 of our memfd: the page enters the cache.
    if unsafe { libc::pwrite(memfd.as_raw_fd(), one.as_ptr().cast(), 1, 0) } != 1 {
        return Err(last_err("filling the userfaultfd probe memfd"));
    }
    let len = 4096;
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    // SAFETY: a shared mapping of our own memfd at an address of the kernel's choosing; it is
    // never accessed, only registered and mapped through ioctls, and unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            memfd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_err("mapping the userfaultfd probe memfd"));
    }
    let outcome = Userfaultfd::open(features).and_then(|file| {
        file.register(p as usize, len)?;
        match file.map_cached(p as usize, len, true) {
            Ok(_) => Ok(()),
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                Err(Error::Config(
                    "this kernel's UFFDIO_CONTINUE lacks UFFDIO_CONTINUE_MODE_WP (Linux 6.5 and \
                     later), which maps clean copies write-protected"
                        .into(),
                ))
            }
            Err(e) => Err(e),
        }
    });
    // SAFETY: unmapping exactly the mapping made above, which nothing refers to.
    unsafe { libc::munmap(p, len) };
    outcome
}

/// Names of the feature bits this runtime cares about, for log messages.
pub(crate) fn describe(features: u64) -> String {
    let names = [
        (FEATURE_SIGBUS, "SIGBUS"),
        (FEATURE_MINOR_SHMEM, "MINOR_SHMEM"),
        (FEATURE_WP_SHMEM, "WP_HUGETLBFS_SHMEM"),
    ];
    let have: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| features & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    format!("{features:#x} ({})", have.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_headers() {
        // Values from <linux/userfaultfd.h> as compiled for x86-64.
        assert_eq!(UFFDIO_API, 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER, 0xc020_aa00);
        assert_eq!(UFFDIO_WAKE, 0x8010_aa02);
        assert_eq!(UFFDIO_WRITEPROTECT, 0xc018_aa06);
        assert_eq!(UFFDIO_CONTINUE, 0xc020_aa07);
    }
}
