//! The fault engine: turns accesses to pages the application view does not allow into
//! requests that the runtime resolves.
//!
//! Two engines sit behind one interface (`FaultEngine`), chosen at start-up with
//! `DSM_FAULT_ENGINE` ([`FaultEngineKind`]):
//!
//! - **`sigsegv`**: the portable one. The application view's pages are protected with
//!   `mprotect`; an access it does not allow raises `SIGSEGV`. Each protected run of pages is a
//!   VMA of its own, so scattered pages split the view into many VMAs (up to
//!   `vm.max_map_count`).
//! - **`uffd`**: userfaultfd (the `uffd` module). The view is mapped read-write once and registered
//!   for missing, minor and write-protect faults; pages are opened with `UFFDIO_CONTINUE` and
//!   `UFFDIO_WRITEPROTECT` and invalidated with `MADV_DONTNEED`, per page-table entry: no VMA is
//!   split. In the `inline` mode the file is opened with `UFFD_FEATURE_SIGBUS`, so a fault
//!   raises `SIGBUS` in the faulting thread, which resolves it in the handler exactly as the
//!   `sigsegv` engine does; in the `handoff` mode the faulting thread sleeps in the kernel and
//!   service threads read the fault from the file, resolve it, and wake it (faults the kernel
//!   itself takes, such as a `read(2)` into global memory, are then served too).
//! - **`auto`**: `uffd` when this kernel and process can use it, else `sigsegv`, with the reason
//!   logged.
//!
//! Either engine changes page mappings only with the page locked
//! ([`crate::coherence::page`]), so a mapping always matches the page's state.
//!
//! Each engine runs in one of two modes (`DSM_FAULT_MODE`):
//!
//! - **`inline`** (the default): the faulting thread resolves its own fault inside the signal
//!   handler. No thread hand-off: on a virtual CPU each hand-off costs a wake-up of tens of
//!   microseconds, more than the remote fetch itself, and a handing-off thread spins beside the
//!   one doing the work. This is not async-signal-safe in the strict sense (the handler
//!   allocates and takes the runtime's locks), and it is safe here because of where the signal
//!   comes from: an ordinary load or store of the application to global memory, never from
//!   inside the runtime (which only touches the runtime view) or from inside `malloc` (which
//!   never touches global memory). Faults on different pages from different threads are
//!   resolved concurrently; the per-page lock of [`crate::coherence::page`] serialises faults
//!   on one page. ArgoDSM makes the same choice.
//! - **`handoff`**: strictly async-signal-safe. The handler only checks the address, hands the
//!   fault to the **fault service threads** through a fixed array of slots (atomics and
//!   `futex`, no allocation, no lock), and waits on its slot's futex until a service thread has
//!   resolved it. Slower by the two hand-offs; for programs that touch global memory from
//!   places where the inline mode's reasoning does not hold (their own signal handlers).
//!
//! A signal outside the global range is forwarded to the handler that was installed before
//! ours (Rust's stack-overflow handler, a debugger's, or the default action), so a genuine bug
//! still crashes the program with an ordinary segmentation fault.
//!
//! ## The runtime behind a trait
//!
//! The engines know the runtime only as a `Resolve`: something that resolves a fault at an
//! address, and the [`GlobalSpace`] whose application view faults. The runtime
//! (the `dsm` module) implements it and hands itself to `FaultEngine::start` as an
//! `Arc<dyn Resolve>`; this module never names the runtime, so the two do not import each
//! other, and an engine can be driven by any resolver (the unit test below uses one that only
//! opens pages).
//!
//! ## Files
//!
//! - `mod.rs`: the choice of engine and mode, `Resolve`, and the running engine (start,
//!   stop);
//! - `signal.rs`: the `SIGSEGV`/`SIGBUS` handler: install, tell faults in the global range
//!   from the rest, forward the rest to the previous handler, and the resolver the inline mode
//!   uses;
//! - `arch.rs`: whether a fault was a write, from the interrupted context, per architecture
//!   (x86-64 and aarch64; a compile error elsewhere);
//! - `handoff.rs`: the `sigsegv` engine's hand-off mode: futex slots and service threads;
//! - `userfault.rs`: the userfaultfd engine: whether it can run, attaching it to the
//!   application view, its service threads.
//!
//! The userfaultfd file itself (its `ioctl`s) is the crate's `uffd` module, beside this one
//! rather than inside: [`crate::space`] maps the application view's pages with it (per
//! page-table entry instead of `mprotect`), and this module imports `space`, so `uffd` inside
//! `fault` would make `space` and `fault` import each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::space::GlobalSpace;

mod arch;
mod handoff;
mod signal;
mod userfault;

/// Whether an engine runs in this process (there is one signal handler and one global range
/// per process).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// What the fault engines need from the runtime: resolving a fault, and the global space whose
/// application view faults.
///
/// The runtime implements it; an engine holds it as an `Arc<dyn Resolve>` for as long as it
/// runs. Implementations are called concurrently from several threads, in the inline mode from
/// inside the faulting thread's signal handler (see the module documentation for why that is
/// sound).
pub(crate) trait Resolve: Send + Sync + std::fmt::Debug {
    /// Resolves a fault at `addr`, which lies in [`Resolve::space`]'s range: makes its page
    /// readable, or writable when `write`, so that the faulting access succeeds when retried.
    /// Under userfaultfd, returns only once the resolution is complete: the engine then wakes
    /// the faulting thread.
    ///
    /// # Errors
    /// Whatever keeps the page from being opened (a transport or mapping error); the engine
    /// then ends the process with a message naming the fault, as an access that can never
    /// succeed.
    fn resolve(&self, addr: usize, write: bool) -> Result<()>;

    /// The global space whose application view the engine watches: its range, and under
    /// userfaultfd the file that reports its faults.
    fn space(&self) -> &GlobalSpace;

    /// This node's rank, for the message about a fault that cannot be resolved.
    fn rank(&self) -> usize;
}

/// How faults are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// By the faulting thread, inside the signal handler.
    Inline,
    /// By service threads, the handler only handing the fault over.
    Handoff {
        /// Service threads.
        threads: usize,
    },
}

/// Which fault engine detects accesses (`DSM_FAULT_ENGINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultEngineKind {
    /// userfaultfd when the kernel and the process allow it, else `SIGSEGV` + `mprotect`.
    Auto,
    /// `SIGSEGV` + `mprotect`: portable.
    Sigsegv,
    /// userfaultfd: per page-table entry, no VMA split per page.
    Userfaultfd,
}

impl FaultEngineKind {
    /// Parses `auto`, `sigsegv` or `uffd`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable for anything else.
    pub fn parse(v: &str) -> Result<FaultEngineKind> {
        match v.trim() {
            "auto" => Ok(FaultEngineKind::Auto),
            "sigsegv" => Ok(FaultEngineKind::Sigsegv),
            "uffd" | "userfaultfd" => Ok(FaultEngineKind::Userfaultfd),
            other => Err(Error::Config(format!(
                "DSM_FAULT_ENGINE={other:?}: expected auto, sigsegv or uffd"
            ))),
        }
    }

    /// The name `DSM_FAULT_ENGINE` uses.
    pub fn name(self) -> &'static str {
        match self {
            FaultEngineKind::Auto => "auto",
            FaultEngineKind::Sigsegv => "sigsegv",
            FaultEngineKind::Userfaultfd => "uffd",
        }
    }
}

/// Whether the userfaultfd engine can run in this process in `mode` (what `auto` checks first).
///
/// # Errors
/// [`Error::Io`] when userfaultfd cannot be opened (not compiled into the kernel, forbidden by
/// a seccomp filter, `vm.unprivileged_userfaultfd`); [`Error::Config`] when the kernel lacks a
/// feature the engine needs (minor faults and write-protection on shared memory,
/// `UFFDIO_CONTINUE_MODE_WP` (Linux 6.5), and for the inline mode `UFFD_FEATURE_SIGBUS`), or
/// when the program runs under valgrind. The message says which.
pub fn userfaultfd_support(mode: FaultMode) -> Result<()> {
    userfault::check(mode).map(|_| ())
}

/// Chooses the engine for `space` and prepares it: under userfaultfd, opens the file with the
/// features `mode` needs and registers the application view. Returns the engine chosen.
///
/// # Errors
/// [`Error::Config`] or [`Error::Io`] when `uffd` is asked for explicitly and cannot be used
/// (with the reason); `auto` falls back to `sigsegv` instead, logging the reason.
pub(crate) fn prepare(
    space: &mut GlobalSpace,
    kind: FaultEngineKind,
    mode: FaultMode,
) -> Result<FaultEngineKind> {
    match kind {
        FaultEngineKind::Sigsegv => Ok(FaultEngineKind::Sigsegv),
        FaultEngineKind::Userfaultfd => {
            userfault::attach(space, mode)?;
            Ok(FaultEngineKind::Userfaultfd)
        }
        FaultEngineKind::Auto => match userfault::attach(space, mode) {
            Ok(()) => Ok(FaultEngineKind::Userfaultfd),
            Err(e) => {
                tracing::info!("fault engine: sigsegv, as userfaultfd cannot be used: {e}");
                Ok(FaultEngineKind::Sigsegv)
            }
        },
    }
}

/// The running engine: the installed handler and the service threads. Dropping it (or
/// [`FaultEngine::stop`]) stops the threads and puts the previous handler back.
#[derive(Debug)]
pub(crate) struct FaultEngine {
    threads: Vec<JoinHandle<()>>,
    /// Tells the hand-off service threads of the `sigsegv` engine to stop.
    stop: Arc<AtomicBool>,
    /// Wakes the userfaultfd service threads to stop (absent for the `sigsegv` engine).
    uffd_stop: Option<userfault::StopSignal>,
    /// The resolver published to the inline handler (inline mode only).
    inline: Option<signal::Inline>,
    /// Whether our signal handler is installed.
    handler: bool,
    kind: FaultEngineKind,
    /// Keeps the runtime alive while the handler or a service thread may use it.
    resolver: Arc<dyn Resolve>,
}

impl FaultEngine {
    /// Starts the engine [`prepare`] chose for `resolver`'s global space: installs the signal
    /// handler for the global range (inline mode, or the `sigsegv` engine) and starts the
    /// service threads (hand-off mode).
    ///
    /// # Errors
    /// [`Error::Config`] when an engine is already installed in this process; [`Error::Io`]
    /// when the handler cannot be installed or a thread cannot start (what was started is
    /// stopped again).
    pub(crate) fn start<R: Resolve + 'static>(
        resolver: Arc<R>,
        mode: FaultMode,
    ) -> Result<FaultEngine> {
        let resolver: Arc<dyn Resolve> = resolver;
        if INSTALLED.swap(true, Ordering::SeqCst) {
            return Err(Error::Config("one shared memory per process".into()));
        }
        let space = resolver.space();
        let uffd = space.uffd().is_some();
        signal::set_range(space.base(), space.base() + space.size());
        // From here on, dropping `engine` undoes what was done, INSTALLED included.
        let mut engine = FaultEngine {
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            uffd_stop: None,
            inline: None,
            handler: false,
            kind: if uffd {
                FaultEngineKind::Userfaultfd
            } else {
                FaultEngineKind::Sigsegv
            },
            resolver,
        };
        match mode {
            FaultMode::Handoff { threads } if uffd => {
                // The faulting thread sleeps in the kernel: no signal, no handler.
                let signal = userfault::StopSignal::new()?;
                let signal = engine.uffd_stop.insert(signal);
                userfault::spawn(
                    &engine.resolver,
                    threads.max(1),
                    signal,
                    &mut engine.threads,
                )?;
                return Ok(engine);
            }
            FaultMode::Handoff { threads } => handoff::spawn(
                &engine.resolver,
                threads.max(1),
                &engine.stop,
                &mut engine.threads,
            )?,
            FaultMode::Inline => {
                engine.inline = Some(signal::Inline::publish(Arc::clone(&engine.resolver)));
            }
        }
        signal::install(if uffd { libc::SIGBUS } else { libc::SIGSEGV })?;
        engine.handler = true;
        Ok(engine)
    }

    /// The engine that runs (never [`FaultEngineKind::Auto`]).
    pub(crate) fn kind(&self) -> FaultEngineKind {
        self.kind
    }

    /// Stops the service threads and puts the previous handler back (as dropping does).
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for FaultEngine {
    fn drop(&mut self) {
        self.inline = None;
        self.stop.store(true, Ordering::SeqCst);
        handoff::wake_all();
        if let Some(signal) = &self.uffd_stop {
            signal.raise();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Err(e) = self.resolver.space().close_uffd_view() {
            tracing::warn!("closing the application view: {e}");
        }
        if self.handler {
            signal::uninstall();
        }
        signal::clear_range();
        INSTALLED.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use super::*;
    use crate::space::{Access, PAGE};

    /// A resolver without a runtime: opens the faulting page (read-only for a read, read-write
    /// for a write) and counts the faults.
    #[derive(Debug)]
    struct Opener {
        space: GlobalSpace,
        access: Mutex<Vec<Access>>,
        reads: AtomicUsize,
        writes: AtomicUsize,
    }

    impl Resolve for Opener {
        fn resolve(&self, addr: usize, write: bool) -> Result<()> {
            let page = self.space.page_of(addr);
            let mut access = self.access.lock().unwrap_or_else(|e| e.into_inner());
            let (from, to) = (
                access[page],
                if write {
                    Access::ReadWrite
                } else {
                    Access::Read
                },
            );
            if from == Access::None {
                self.space.populate(page, 1)?;
            }
            self.space.set_access(page, 1, from, to)?;
            access[page] = to;
            let count = if write { &self.writes } else { &self.reads };
            count.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }

        fn space(&self) -> &GlobalSpace {
            &self.space
        }

        fn rank(&self) -> usize {
            0
        }
    }

    /// Runs one engine in one mode over a fresh space: a read and a write from another thread
    /// each fault once, are told apart, and reach the memory. Returns false when the engine
    /// cannot run here.
    fn round_trip(kind: FaultEngineKind, mode: FaultMode) -> bool {
        let mut space = GlobalSpace::map_anywhere(2 << 20).expect("map");
        match prepare(&mut space, kind, mode) {
            Ok(k) => assert_eq!(k, kind),
            Err(e) => {
                assert!(
                    std::env::var("DSM_REQUIRE_UFFD").as_deref() != Ok("1"),
                    "DSM_REQUIRE_UFFD=1 but {} cannot run in {mode:?}: {e}",
                    kind.name()
                );
                eprintln!("SKIPPED: {} in {mode:?}: {e}", kind.name());
                return false;
            }
        }
        let pages = space.pages();
        let opener = Arc::new(Opener {
            space,
            access: Mutex::new(vec![Access::None; pages]),
            reads: AtomicUsize::new(0),
            writes: AtomicUsize::new(0),
        });
        let engine = FaultEngine::start(Arc::clone(&opener), mode).expect("start");
        assert_eq!(engine.kind(), kind);
        let base = opener.space.base();
        std::thread::spawn(move || {
            let word = (base + 3 * PAGE + 8) as *mut u64;
            // SAFETY: the application view is mapped; the engine opens the page on the fault
            // this store takes, and nothing else accesses it.
            unsafe { std::ptr::write_volatile(word, 42) };
            // SAFETY: as above, a load of another page.
            let other = unsafe { std::ptr::read_volatile((base + 5 * PAGE) as *const u64) };
            // SAFETY: as above; the page is now open for writing, so this load does not fault.
            let back = unsafe { std::ptr::read_volatile(word) };
            assert_eq!((other, back), (0, 42));
        })
        .join()
        .expect("the faulting thread");
        engine.stop();
        assert_eq!(
            opener.writes.load(Ordering::Relaxed),
            1,
            "{kind:?} {mode:?}"
        );
        assert_eq!(opener.reads.load(Ordering::Relaxed), 1, "{kind:?} {mode:?}");
        let runtime = opener.space.runtime_base() as usize;
        // SAFETY: the runtime view is mapped read-write for the life of the space.
        let v = unsafe { std::ptr::read_volatile((runtime + 3 * PAGE + 8) as *const u64) };
        assert_eq!(v, 42, "the write reached the memory");
        true
    }

    /// Every engine and mode, driven by a resolver that is not the runtime; one after the
    /// other in one test, as a process holds one engine at a time.
    #[test]
    fn every_engine_and_mode_resolves_through_a_resolver_of_its_own() {
        let modes = [FaultMode::Inline, FaultMode::Handoff { threads: 2 }];
        for mode in modes {
            assert!(round_trip(FaultEngineKind::Sigsegv, mode));
        }
        for mode in modes {
            round_trip(FaultEngineKind::Userfaultfd, mode);
        }
    }
}
