//! Shareable memory: sealed `memfd`s and shared mappings of them.
//!
//! Every [`crate::Region`] this crate allocates lives in a `memfd` mapped `MAP_SHARED`, so that
//! the `shm` backend can hand it to peers on the same host, which map the same pages. The file is
//! created with mode 0600, is never linked into any directory, and is sealed against shrinking
//! and growing, so that no process holding it can make another's mapping fault with `SIGBUS`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use crate::error::{Error, Result};

/// A shared mapping of (part of) a file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is an address range that stays valid until drop; every access to its bytes
// goes through raw pointers or atomics, never through references asserting exclusivity.
unsafe impl Send for Mapping {}
// SAFETY: see `Send`.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset` (a multiple of the page size), read-write, shared,
    /// without reserving swap (the file's pages are allocated where touched).
    pub(crate) fn shared(fd: &OwnedFd, offset: u64, len: usize) -> Result<Mapping> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_SHARED | libc::MAP_NORESERVE;
        let off = libc::off_t::try_from(offset)
            .map_err(|_| Error::InvalidArgument(format!("file offset {offset}")))?;
        // SAFETY: a new shared mapping of an open file at an address of the kernel's choosing
        // replaces nothing; the result is checked before use.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), off) };
        if p == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            return Err(Error::io(format!("mapping {len} shared bytes"), e));
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| Error::InvalidArgument("mmap returned a null pointer".into()))?;
        Ok(Mapping { ptr, len })
    }

    /// The first byte.
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping this value created and owns; whoever handed out pointers
        // into it keeps the `Mapping` alive for as long as they are used.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Creates a zero-filled `memfd` of `len` bytes, mode 0600, sealed at that size.
pub(crate) fn create(name: &std::ffi::CStr, len: usize) -> Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a NUL-terminated name and a valid flag set.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::io(
            "creating a memfd",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let os = |what: &str| Error::io(format!("{what} a memfd"), std::io::Error::last_os_error());
    // SAFETY: fchmod of a descriptor we own.
    if unsafe { libc::fchmod(fd.as_raw_fd(), 0o600) } != 0 {
        return Err(os("restricting the mode of"));
    }
    let size = libc::off_t::try_from(len)
        .map_err(|_| Error::InvalidArgument(format!("a memfd of {len} bytes")))?;
    // SAFETY: ftruncate of a descriptor we own; the file stays sparse.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
        return Err(os("sizing"));
    }
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: fcntl(F_ADD_SEALS) on a descriptor we own, created with MFD_ALLOW_SEALING.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(os("sealing"));
    }
    Ok(fd)
}

/// Device, inode and size of an open file.
pub(crate) fn identity(fd: &OwnedFd) -> Result<(u64, u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes one `struct stat` into memory we own.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(Error::io(
            "reading a file's identity",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fstat succeeded, so it initialised the structure (which was zeroed anyway).
    let st = unsafe { st.assume_init() };
    Ok((st.st_dev, st.st_ino, st.st_size.max(0) as u64))
}
