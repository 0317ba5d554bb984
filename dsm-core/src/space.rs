//! The global address space: one range of virtual memory mapped at the same address on every
//! node, so that a pointer into it means the same thing everywhere.
//!
//! In a job of several nodes the range is backed by a `memfd` mapped twice:
//!
//! - the **application view**, at the agreed base address, whose page protections drive
//!   coherence (`PROT_NONE`: not cached here; read-only: a clean copy; read-write: being written);
//! - the **runtime view**, always read-write, where the runtime installs fetched pages, keeps
//!   them while they are protected from the application, and reads dirty data for write-back.
//!   It is registered with the transport, so fetched pages land in place without a copy.
//!
//! Page protections of the application view are changed by one of two means, chosen with the
//! fault engine ([`crate::fault`]): `mprotect` (the `SIGSEGV` engine; each protected run of
//! pages is a VMA of its own), or userfaultfd (the view is mapped read-write once and registered;
//! protection is per page-table entry, see the `uffd` module, and no VMA is ever split).
//!
//! A job of one node never faults (it homes every page and nothing else writes them): its
//! range is private anonymous memory mapped once, read-write, and the runtime view is the
//! application view. Its pages are then the process's own, as `malloc`'s are, and a first touch
//! costs what it costs a program on threads (a memfd page also goes through the page cache).
//!
//! The base address is negotiated ([`negotiate`]): every node proposes a range that is free in
//! its own process, every node tries to map each proposal with `MAP_FIXED_NOREPLACE`, and the
//! first proposal that is free everywhere wins. Nothing is hard-coded, so the layout of newer
//! distributions (or of sanitizers) cannot break it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use transport::Transport;

use crate::address;
use crate::collective;
use crate::error::{Error, Result};
use crate::uffd::Userfaultfd;

/// Size of a page, the unit of coherence.
pub const PAGE: usize = 4096;

/// Alignment of the global range (2 MiB, so the kernel may use huge page table entries).
const ALIGN: usize = 2 << 20;

/// Page protections of the application view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any access faults.
    None,
    /// Reads succeed; writes fault.
    Read,
    /// Reads and writes succeed.
    ReadWrite,
}

impl Access {
    fn prot(self) -> libc::c_int {
        match self {
            Access::None => libc::PROT_NONE,
            Access::Read => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// The mapped global range of this node.
#[derive(Debug)]
pub struct GlobalSpace {
    base: usize,
    size: usize,
    runtime: usize,
    /// Set when the userfaultfd engine drives the application view.
    uffd: Option<Userfaultfd>,
    backing: Backing,
}

/// What the global range is made of.
#[derive(Debug)]
enum Backing {
    /// A memfd mapped twice: the application view and the runtime view.
    Shared(OwnedFd),
    /// Private anonymous memory mapped once, read-write (a job of one node): the runtime view
    /// is the application view.
    Private,
}

fn os_err(what: impl Into<String>) -> Error {
    Error::io(what, std::io::Error::last_os_error())
}

/// Maps `fd` (`size` bytes) at exactly `addr` without replacing anything; false when something
/// is already mapped there.
fn map_at(addr: usize, size: usize, backing: &Backing) -> Result<bool> {
    let (flags, prot, fd) = match backing {
        Backing::Shared(fd) => (libc::MAP_SHARED, libc::PROT_NONE, fd.as_raw_fd()),
        Backing::Private => (
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            libc::PROT_READ | libc::PROT_WRITE,
            -1,
        ),
    };
    let flags = flags | libc::MAP_FIXED_NOREPLACE | libc::MAP_NORESERVE;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: it fails with EEXIST
    // instead, so no memory of this process can be clobbered. The fd is a valid memfd, or -1
    // for anonymous memory.
    let p = unsafe { libc::mmap(addr as *mut libc::c_void, size, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EEXIST) | Some(libc::ENOMEM) | Some(libc::EINVAL) => Ok(false),
            _ => Err(Error::io(
                format!("mapping the global range at {addr:#x}"),
                e,
            )),
        };
    }
    if p as usize != addr {
        // An old kernel that ignores MAP_FIXED_NOREPLACE treats it as a hint.
        // SAFETY: unmapping the mapping just created, which nothing else uses.
        unsafe { libc::munmap(p, size) };
        return Ok(false);
    }
    Ok(true)
}

fn unmap(addr: usize, size: usize) {
    // SAFETY: only called on ranges this module mapped and that nothing refers to.
    unsafe { libc::munmap(addr as *mut libc::c_void, size) };
}

/// Agrees with every other node on a base address and maps the global range of `size` bytes
/// there.
///
/// # Collective
/// Every node must call it with the same `size`.
///
/// # Errors
/// [`Error::Config`] for a size that is zero or not a multiple of the page size;
/// [`Error::Io`] when mapping fails; [`Error::Bootstrap`] when no common free range is found.
pub fn negotiate<T: Transport>(t: &T, size: usize) -> Result<GlobalSpace> {
    if size == 0 || !size.is_multiple_of(ALIGN) {
        return Err(Error::Config(format!(
            "the global size must be a positive multiple of 2 MiB, not {size}"
        )));
    }
    let backing = backing(t.nodes(), size)?;
    // Each round: every node's free ranges, their intersection, the same deterministic choice
    // on every node, a vote on whether the mapping there succeeded everywhere. A round fails
    // only when another thread mapped something in the chosen range meanwhile; the next round
    // sees that mapping in the node's free ranges.
    let mut largest = 0;
    for round in 0..8 {
        let mine = address::free_here(ALIGN)?;
        let all = collective::all_gather(t, &address::encode(&mine), None)?;
        let common = all
            .iter()
            .map(|b| address::decode(b))
            .fold(mine, |acc, theirs| address::intersect(&acc, &theirs));
        largest = address::largest(&common);
        let chosen = address::choose(&common, size);
        let mapped = match chosen {
            Some(base) => map_at(base, size, &backing)?,
            None => false,
        };
        let votes = collective::all_gather(t, &[u8::from(mapped)], None)?;
        let everywhere = votes.iter().all(|v| v.as_slice() == [1]);
        match chosen {
            Some(base) if everywhere => {
                let runtime = map_runtime_view(base, size, &backing)?;
                tracing::debug!("global range at {base:#x} after {} round(s)", round + 1);
                return Ok(GlobalSpace {
                    base,
                    size,
                    runtime,
                    uffd: None,
                    backing,
                });
            }
            Some(base) if mapped => unmap(base, size),
            Some(_) => {}
            // Nothing fits on every node: no later round will do better.
            None => break,
        }
    }
    Err(Error::Bootstrap(format!(
        "no address range of {size} bytes is free on every node (the largest common free range \
         is {largest} bytes): use a smaller DSM_GLOBAL_SIZE"
    )))
}

/// Maps the global range of `size` bytes at `base` on every node (a restart: pointers stored
/// in checkpointed memory stay valid only there).
///
/// # Collective
/// Every node must call it with the same `size` and `base`.
///
/// # Errors
/// [`Error::Checkpoint`] on every node when the range is not free on some node (naming the
/// nodes); [`Error::Io`] when mapping fails.
pub fn negotiate_at<T: Transport>(t: &T, size: usize, base: usize) -> Result<GlobalSpace> {
    if size == 0 || !size.is_multiple_of(ALIGN) || !base.is_multiple_of(ALIGN) {
        return Err(Error::Checkpoint(format!(
            "the checkpoint's global range ({size} bytes at {base:#x}) is malformed"
        )));
    }
    let backing = backing(t.nodes(), size)?;
    let mapped = map_at(base, size, &backing)?;
    let votes = collective::all_gather(t, &[u8::from(mapped)], None)?;
    let busy: Vec<String> = votes
        .iter()
        .enumerate()
        .filter(|(_, v)| v.as_slice() != [1])
        .map(|(r, _)| r.to_string())
        .collect();
    if !busy.is_empty() {
        if mapped {
            unmap(base, size);
        }
        return Err(Error::Checkpoint(format!(
            "the checkpoint's global range {base:#x}..{:#x} is not free on rank(s) {} (something \
             else is mapped there): it must be mapped at the same address to restart",
            base + size,
            busy.join(", ")
        )));
    }
    let runtime = map_runtime_view(base, size, &backing)?;
    Ok(GlobalSpace {
        base,
        size,
        runtime,
        uffd: None,
        backing,
    })
}

/// What backs the global range of a job of `nodes` nodes: private memory for one node, a
/// memfd of `size` bytes otherwise.
fn backing(nodes: usize, size: usize) -> Result<Backing> {
    if nodes == 1 {
        Ok(Backing::Private)
    } else {
        Ok(Backing::Shared(memfd(size)?))
    }
}

/// Creates the memfd that backs a global range of `size` bytes.
fn memfd(size: usize) -> Result<OwnedFd> {
    // SAFETY: memfd_create with a static, NUL-terminated name and a valid flag set.
    let fd = unsafe { libc::memfd_create(c"dsm-global".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(os_err("creating the memfd that backs global memory"));
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate on the memfd we own; the file stays sparse.
    if unsafe { libc::ftruncate(memfd.as_raw_fd(), size as libc::off_t) } != 0 {
        return Err(os_err("sizing the memfd that backs global memory"));
    }
    Ok(memfd)
}

impl GlobalSpace {
    /// Maps a global range of `size` bytes wherever the kernel likes, without agreeing with
    /// anybody: for several simulated nodes inside one process (the protocol simulation).
    ///
    /// # Errors
    /// As [`negotiate`].
    pub fn map_anywhere(size: usize) -> Result<GlobalSpace> {
        if size == 0 || !size.is_multiple_of(ALIGN) {
            return Err(Error::Config(format!(
                "the global size must be a positive multiple of 2 MiB, not {size}"
            )));
        }
        let memfd = memfd(size)?;
        let flags = libc::MAP_SHARED | libc::MAP_NORESERVE;
        // SAFETY: a shared mapping of our own memfd at an address of the kernel's choosing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_NONE,
                flags,
                memfd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(os_err("mapping a simulated global range"));
        }
        let backing = Backing::Shared(memfd);
        let runtime = map_runtime_view(p as usize, size, &backing)?;
        Ok(GlobalSpace {
            base: p as usize,
            size,
            runtime,
            uffd: None,
            backing,
        })
    }
}

/// The runtime view of the range mapped at `base`: a second mapping of the memfd, or `base`
/// itself for private memory.
fn map_runtime_view(base: usize, size: usize, backing: &Backing) -> Result<usize> {
    let fd = match backing {
        Backing::Shared(fd) => fd,
        Backing::Private => return Ok(base),
    };
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_SHARED | libc::MAP_NORESERVE;
    // SAFETY: a shared mapping of our own memfd at an address of the kernel's choosing.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), size, prot, flags, fd.as_raw_fd(), 0) };
    if p == libc::MAP_FAILED {
        return Err(os_err("mapping the runtime view of global memory"));
    }
    Ok(p as usize)
}

impl GlobalSpace {
    /// The base address, the same on every node.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Size of the range in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.size / PAGE
    }

    /// Whether `addr` lies in the global range.
    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.base && addr < self.base + self.size
    }

    /// The page that holds `addr` (which must lie in the range).
    pub fn page_of(&self, addr: usize) -> usize {
        (addr - self.base) / PAGE
    }

    /// Start of the runtime view (read-write, registered with the transport).
    pub fn runtime_base(&self) -> *mut u8 {
        self.runtime as *mut u8
    }

    /// Hands the application view to userfaultfd: maps it read-write (one VMA) and registers it
    /// for missing, minor and write-protect faults. From then on every page whose page-table
    /// entry is absent faults, so pages are invalid until [`GlobalSpace::set_access`] opens them.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Config`] when the kernel refuses; the view is then back to
    /// `PROT_NONE` and `mprotect` still drives it.
    pub(crate) fn attach_uffd(&mut self, uffd: Userfaultfd) -> Result<()> {
        self.mprotect(0, self.pages(), libc::PROT_READ | libc::PROT_WRITE)?;
        if let Err(e) = uffd.register(self.base, self.size) {
            self.mprotect(0, self.pages(), libc::PROT_NONE)?;
            return Err(e);
        }
        self.uffd = Some(uffd);
        Ok(())
    }

    /// Under userfaultfd, once no service thread serves faults any more: makes the whole
    /// application view inaccessible, so that a late access crashes with `SIGSEGV` instead of
    /// sleeping in the kernel for a fault nobody will resolve.
    ///
    /// # Errors
    /// [`Error::Io`] when `mprotect` fails.
    pub(crate) fn close_uffd_view(&self) -> Result<()> {
        if self.uffd.is_some() {
            self.mprotect(0, self.pages(), libc::PROT_NONE)?;
        }
        Ok(())
    }

    /// The userfaultfd driving the application view, if any.
    pub(crate) fn uffd(&self) -> Option<&Userfaultfd> {
        self.uffd.as_ref()
    }

    fn mprotect(&self, page: usize, count: usize, prot: libc::c_int) -> Result<()> {
        let addr = self.base + page * PAGE;
        // SAFETY: the range lies inside the application view this value mapped (callers pass
        // page numbers below `pages()`); changing protections cannot violate Rust's memory
        // safety because the runtime never holds references into the application view.
        if unsafe { libc::mprotect(addr as *mut libc::c_void, count * PAGE, prot) } != 0 {
            return Err(os_err(format!("mprotect of page {page} (+{count})")));
        }
        Ok(())
    }

    /// Changes what the application may do with `count` pages from `page`, which it may now do
    /// `from` (the same for every page of the run, except when going to [`Access::None`]).
    /// Called with the pages locked, so that the mapping always matches the pages' states.
    ///
    /// Under `mprotect` this is one `mprotect`. Under userfaultfd: to `None`, `MADV_DONTNEED` of
    /// the view (the page cache, shared with the runtime view, stays); from `None`,
    /// `UFFDIO_CONTINUE` of the cached pages, write-protected for `Read`; between `Read` and
    /// `ReadWrite`, `UFFDIO_WRITEPROTECT`. Nothing here wakes a thread waiting on a fault (the
    /// engine does once the fault is resolved, see `crate::uffd`).
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses (for example `mprotect` failing with ENOMEM past
    /// `vm.max_map_count`).
    pub fn set_access(&self, page: usize, count: usize, from: Access, to: Access) -> Result<()> {
        let Some(uffd) = &self.uffd else {
            return self.mprotect(page, count, to.prot());
        };
        let addr = self.base + page * PAGE;
        let len = count * PAGE;
        match (from, to) {
            (_, Access::None) => self.zap(page, count),
            (Access::None, _) => self.map_cached(uffd, page, count, to),
            (Access::Read, Access::ReadWrite) => uffd.write_protect(addr, len, false),
            (Access::ReadWrite, Access::Read) => uffd.write_protect(addr, len, true),
            (Access::Read, Access::Read) | (Access::ReadWrite, Access::ReadWrite) => {
                self.map_cached(uffd, page, count, to)
            }
        }
    }

    /// After a fault on a page that is already valid (`access`) and locked: under userfaultfd,
    /// makes sure its page-table entry is there with the right protection (the fault was
    /// queued before another thread resolved it, or the kernel dropped the entry). Nothing to
    /// do under `mprotect`.
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses.
    pub fn remap(&self, page: usize, access: Access) -> Result<()> {
        match &self.uffd {
            Some(uffd) if access != Access::None => self.map_cached(uffd, page, 1, access),
            _ => Ok(()),
        }
    }

    /// `UFFDIO_CONTINUE` of `count` cached pages from `page`; a page already mapped gets the
    /// protection asked for with `UFFDIO_WRITEPROTECT`.
    fn map_cached(&self, uffd: &Userfaultfd, page: usize, count: usize, to: Access) -> Result<()> {
        let wp = to == Access::Read;
        let mut addr = self.base + page * PAGE;
        let end = addr + count * PAGE;
        while addr < end {
            match uffd.map_cached(addr, end - addr, wp)? {
                None => return Ok(()),
                Some(done) => {
                    let present = addr + done;
                    uffd.write_protect(present, PAGE, wp)?;
                    addr = present + PAGE;
                }
            }
        }
        Ok(())
    }

    /// Drops the application view's page-table entries of `count` pages from `page`.
    fn zap(&self, page: usize, count: usize) -> Result<()> {
        let addr = self.base + page * PAGE;
        // SAFETY: the range lies inside the application view; MADV_DONTNEED on a shared mapping
        // only removes page-table entries (the memfd keeps the data), and the runtime holds no
        // references into the application view.
        if unsafe { libc::madvise(addr as *mut libc::c_void, count * PAGE, libc::MADV_DONTNEED) }
            != 0
        {
            return Err(os_err(format!("unmapping page {page} (+{count})")));
        }
        Ok(())
    }

    /// Makes sure the memfd holds the `count` pages from `page` (a page never written is a hole, and
    /// `UFFDIO_CONTINUE` maps only pages the cache holds) without changing a byte of it, even
    /// while another thread writes it through the runtime view: `MADV_POPULATE_WRITE` of the
    /// runtime view, or on a kernel without it (before 5.14) a locked compare-and-swap of zero
    /// by zero, which writes nothing but faults the page in for writing (an atomic add of zero
    /// would not do: compilers turn it into a fenced load, and a read fault may leave the hole).
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses.
    pub fn populate(&self, page: usize, count: usize) -> Result<()> {
        let addr = self.runtime + page * PAGE;
        // SAFETY: the pages lie inside the runtime view (the caller's pages); MADV_POPULATE_WRITE
        // only faults them in (as a write access would, writing nothing), which cannot change
        // their content.
        if unsafe {
            libc::madvise(
                addr as *mut libc::c_void,
                count * PAGE,
                libc::MADV_POPULATE_WRITE,
            )
        } == 0
        {
            return Ok(());
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(os_err(format!(
                "populating {count} page(s) from page {page}"
            )));
        }
        for p in page..page + count {
            let addr = self.runtime + p * PAGE;
            // SAFETY: the runtime view is mapped read-write for the life of `self` and the
            // address is 8-byte aligned (page-aligned); the runtime only ever accesses it
            // through raw pointers and atomics (the transport writes it the same way), never
            // through Rust references, so an `AtomicU64` over it aliases nothing.
            let word = unsafe { &*(addr as *const std::sync::atomic::AtomicU64) };
            let _ = word.compare_exchange(
                0,
                0,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        Ok(())
    }

    /// Releases the memory behind `count` pages from `page` (their content becomes zero).
    ///
    /// # Errors
    /// [`Error::Io`] when the kernel refuses.
    pub fn discard(&self, page: usize, count: usize) -> Result<()> {
        let addr = self.runtime + page * PAGE;
        // Private memory: dropping the pages makes them read as zeros again.
        let advice = match self.backing {
            Backing::Shared(_) => libc::MADV_REMOVE,
            Backing::Private => libc::MADV_DONTNEED,
        };
        // SAFETY: the range lies inside the runtime view; MADV_REMOVE frees the memfd's pages,
        // MADV_DONTNEED a private mapping's, which nobody holds references to (the runtime
        // copies out of the view, never borrows; the application's pointers into a job of one
        // node's range see zeros, as freed memory may).
        if unsafe { libc::madvise(addr as *mut libc::c_void, count * PAGE, advice) } != 0 {
            return Err(os_err(format!("releasing page {page}")));
        }
        Ok(())
    }
}

impl Drop for GlobalSpace {
    fn drop(&mut self) {
        unmap(self.base, self.size);
        if let Backing::Shared(_) = self.backing {
            unmap(self.runtime, self.size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uffd::{self, Msg, EVENT_PAGEFAULT, FEATURES_NEEDED, PAGEFAULT_FLAG_WRITE};
    use Access as View;

    /// Whether this kernel and process give what the engine needs from userfaultfd in the
    /// hand-off mode (what `fault::userfaultfd_support` checks, valgrind aside).
    fn userfaultfd_here() -> Result<()> {
        let (offered, _) = Userfaultfd::probe()?;
        if offered & FEATURES_NEEDED != FEATURES_NEEDED {
            return Err(Error::Config(format!(
                "userfaultfd offers features {}",
                uffd::describe(offered)
            )));
        }
        uffd::check_continue_wp(FEATURES_NEEDED)
    }

    /// `UFFD_PAGEFAULT_FLAG_WP` and `UFFD_PAGEFAULT_FLAG_MINOR`.
    const FLAG_WP: u64 = 1 << 1;
    const FLAG_MINOR: u64 = 1 << 2;

    /// The next fault message, waiting at most ten seconds for it.
    fn next_fault(file: &Userfaultfd) -> Msg {
        let mut fds = [libc::pollfd {
            fd: file.raw(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: poll on one valid pollfd that lives for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 10_000) };
        assert_eq!(n, 1, "no fault within 10 s");
        let msg = file.read_msg().expect("read").expect("a message");
        assert_eq!(msg.event, EVENT_PAGEFAULT);
        msg
    }

    /// VMAs of this process that start inside `[start, start + len)`.
    fn vmas_in(start: usize, len: usize) -> usize {
        std::fs::read_to_string("/proc/self/maps")
            .expect("maps")
            .lines()
            .filter_map(|l| l.split('-').next())
            .filter_map(|a| usize::from_str_radix(a, 16).ok())
            .filter(|&a| a >= start && a < start + len)
            .count()
    }

    /// The engine's transitions on a real view, with this thread playing the service thread:
    /// missing, write-protect and minor faults arrive as expected, mapping does not need the
    /// faulting thread awake, and the view stays two VMAs however pages are protected.
    #[test]
    fn transitions_deliver_the_faults_the_engine_expects() {
        if let Err(e) = userfaultfd_here() {
            // As the litmus tests: where userfaultfd is required, not being able to run fails.
            assert!(
                std::env::var_os("DSM_REQUIRE_UFFD").is_none(),
                "DSM_REQUIRE_UFFD is set but userfaultfd cannot run here: {e}"
            );
            eprintln!("SKIPPED: userfaultfd cannot run here: {e}");
            return;
        }
        let mut space = GlobalSpace::map_anywhere(2 << 20).expect("map");
        space
            .attach_uffd(Userfaultfd::open(FEATURES_NEEDED).expect("open"))
            .expect("attach");
        let base = space.base();
        let runtime = space.runtime_base() as usize;
        let file = space.uffd().expect("attached");
        let page = move |i: usize| base + i * PAGE;

        // A page the cache does not hold: a missing fault; the fetch fills it through the
        // runtime view and it is mapped read-only.
        let reader = std::thread::spawn(move || {
            // SAFETY: the view is mapped; the load sleeps until the test maps the page.
            unsafe { std::ptr::read_volatile(page(1) as *const u8) }
        });
        let m = next_fault(file);
        assert_eq!((m.address as usize, m.flags), (page(1), 0), "{m:?}");
        // SAFETY: the runtime view is mapped read-write and nothing borrows it.
        unsafe { std::ptr::write_bytes((runtime + PAGE) as *mut u8, 0xab, PAGE) };
        space.set_access(1, 1, View::None, View::Read).expect("map");
        file.wake(page(1), PAGE).expect("wake");
        assert_eq!(reader.join().expect("reader"), 0xab);

        // A write to the read-only page: a write-protect fault; opened for writing.
        let writer = std::thread::spawn(move || {
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile(page(1) as *mut u8, 0xcd) }
        });
        let m = next_fault(file);
        assert_eq!(m.address as usize, page(1));
        assert_eq!(m.flags, PAGEFAULT_FLAG_WRITE | FLAG_WP, "{m:?}");
        space
            .set_access(1, 1, View::Read, View::ReadWrite)
            .expect("open");
        file.wake(page(1), PAGE).expect("wake");
        writer.join().expect("writer");
        // SAFETY: reading the runtime view, mapped.
        let written = unsafe { std::ptr::read_volatile((runtime + PAGE) as *const u8) };
        assert_eq!(written, 0xcd, "the write reached the page cache");

        // Invalidated: the cache keeps the page, so the next access is a minor fault.
        space.set_access(1, 1, View::None, View::None).expect("zap");
        let reader = std::thread::spawn(move || {
            // SAFETY: as above.
            unsafe { std::ptr::read_volatile(page(1) as *const u8) }
        });
        let m = next_fault(file);
        assert_eq!(
            (m.address as usize, m.flags),
            (page(1), FLAG_MINOR),
            "{m:?}"
        );
        space.set_access(1, 1, View::None, View::Read).expect("map");
        file.wake(page(1), PAGE).expect("wake");
        assert_eq!(reader.join().expect("reader"), 0xcd);

        // Scattered protections split no VMA.
        for i in (2..200).step_by(2) {
            // SAFETY: the runtime view is mapped read-write.
            unsafe { std::ptr::write_volatile((runtime + i * PAGE) as *mut u8, 1) };
            space.set_access(i, 1, View::None, View::Read).expect("map");
        }
        space
            .set_access(4, 1, View::Read, View::ReadWrite)
            .expect("open");
        assert_eq!(vmas_in(base, 2 << 20), 1, "the application view, unsplit");
    }
}
