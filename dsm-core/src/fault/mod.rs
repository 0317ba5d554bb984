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

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::dsm::Inner;
use crate::error::{Error, Result};
use crate::space::GlobalSpace;

mod userfault;

const FREE: u32 = 0;
const CLAIMED: u32 = 1;
const REQUESTED: u32 = 2;
const SERVING: u32 = 3;
const DONE: u32 = 4;
const FAILED: u32 = 5;

/// A fault handed from the signal handler to the service threads.
struct Slot {
    state: AtomicU32,
    addr: AtomicUsize,
    write: AtomicBool,
}

const SLOTS: usize = 256;

#[allow(
    clippy::declare_interior_mutable_const,
    reason = "used only to initialise the array"
)]
const EMPTY: Slot = Slot {
    state: AtomicU32::new(FREE),
    addr: AtomicUsize::new(0),
    write: AtomicBool::new(false),
};

static FAULTS: [Slot; SLOTS] = [EMPTY; SLOTS];
/// Counts requests; service threads sleep on it as a futex.
static PENDING: AtomicU32 = AtomicU32::new(0);
/// 1 while a service thread is polling for requests (the token allows one poller at a time, so
/// idle pollers never crowd out the thread that is serving on a small machine); 0 when every
/// service thread is serving or asleep, and a new request must wake one.
static POLLING: AtomicU32 = AtomicU32::new(0);
static RANGE_START: AtomicUsize = AtomicUsize::new(0);
static RANGE_END: AtomicUsize = AtomicUsize::new(0);
/// How long the faulting thread and the service threads spin before they sleep, in ns.
static SPIN_NS: AtomicUsize = AtomicUsize::new(50_000);
static PREVIOUS_SEGV: OnceLock<libc::sigaction> = OnceLock::new();
static PREVIOUS_BUS: OnceLock<libc::sigaction> = OnceLock::new();
/// The signal our handler is installed for: `SIGSEGV` (the `sigsegv` engine) or `SIGBUS` (the
/// `uffd` engine in the inline mode); 0 when none is.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The runtime, for the inline mode (null when the engine is stopped or in hand-off mode).
static INLINE: AtomicPtr<Inner> = AtomicPtr::new(std::ptr::null_mut());
static INSTALLED: AtomicBool = AtomicBool::new(false);

fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT on a valid, aligned u32 that lives for the whole program (a static);
    // it only sleeps while the word equals `expected`, and a null timeout waits without limit
    // (every waker stores a new value first). Async-signal-safe: a bare system call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE on a valid, aligned u32 (a static); wakes at most `n` waiters.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

/// Writes `msg` and a hexadecimal `addr` to stderr with one `write(2)`: async-signal-safe.
fn say(msg: &[u8], addr: usize) {
    let mut buf = [0u8; 160];
    let n = msg.len().min(120);
    buf[..n].copy_from_slice(&msg[..n]);
    let mut i = n;
    buf[i..i + 2].copy_from_slice(b"0x");
    i += 2;
    for shift in (0..16).rev() {
        let d = (addr >> (shift * 4)) & 0xf;
        buf[i] = b"0123456789abcdef"[d];
        i += 1;
    }
    buf[i] = b'\n';
    // SAFETY: writing an initialised stack buffer to fd 2; write(2) is async-signal-safe.
    unsafe { libc::write(2, buf.as_ptr().cast(), i + 1) };
}

/// Where the handler that was there before ours is kept, for `sig`.
fn previous_cell(sig: libc::c_int) -> &'static OnceLock<libc::sigaction> {
    if sig == libc::SIGBUS {
        &PREVIOUS_BUS
    } else {
        &PREVIOUS_SEGV
    }
}

/// Puts back the handler that was there before ours, so that returning from the signal handler
/// re-executes the faulting instruction under it (the default action crashes the process).
fn restore_previous() {
    let sig = SIGNAL.load(Ordering::Acquire);
    if let (Some(prev), true) = (previous_cell(sig).get(), sig != 0) {
        // SAFETY: reinstalling, for the signal it was taken from, a sigaction the kernel gave
        // us; async-signal-safe.
        unsafe { libc::sigaction(sig, prev, std::ptr::null_mut()) };
    }
}

/// Hands a signal outside the global range to the previous handler.
///
/// # Safety
/// Called only from our signal handler with the kernel's arguments.
unsafe fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let Some(prev) = previous_cell(sig).get() else {
        restore_previous();
        return;
    };
    let handler = prev.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        restore_previous();
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with SA_SIGINFO, so it has this signature;
        // we pass it the kernel's own arguments, as if it had been called directly.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a handler installed without SA_SIGINFO has the one-argument signature.
        let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        f(sig);
    }
}

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSEGV and SIGBUS.
    let info_ref = unsafe { &*info };
    // SAFETY: for SIGSEGV and SIGBUS the union member holding the faulting address is the
    // valid one.
    let addr = unsafe { info_ref.si_addr() } as usize;
    if addr < RANGE_START.load(Ordering::Acquire) || addr >= RANGE_END.load(Ordering::Acquire) {
        if sig == libc::SIGBUS {
            say(b"dsm: bus error outside global memory at ", addr);
        } else {
            say(b"dsm: segmentation fault outside global memory at ", addr);
        }
        // SAFETY: forwarding the kernel's arguments from within the handler.
        unsafe { forward(sig, info, ctx) };
        return;
    }
    // SAFETY: for SIGSEGV and SIGBUS the third argument is the interrupted context (SA_SIGINFO).
    let write = unsafe { fault_was_write(ctx) };
    let inline = INLINE.load(Ordering::Acquire);
    if !inline.is_null() {
        // SAFETY: the pointer comes from the `Arc<Inner>` the engine holds; it is cleared before
        // that Arc is dropped, and faults stop before the engine does (after the final barrier).
        let inner = unsafe { &*inline };
        if let Err(e) = inner.resolve(addr, write) {
            let kind = if write { "write" } else { "read" };
            eprintln!(
                "dsm: rank {}: cannot resolve a {kind} fault at {addr:#x}: {e}",
                inner.me
            );
            restore_previous();
        }
        return;
    }
    let slot = loop {
        if let Some(s) = FAULTS.iter().find(|s| {
            s.state
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        }) {
            break s;
        }
        // More faults in flight than slots: let one finish.
        // SAFETY: sched_yield has no preconditions and is async-signal-safe.
        unsafe { libc::sched_yield() };
    };
    slot.addr.store(addr, Ordering::Relaxed);
    slot.write.store(write, Ordering::Relaxed);
    slot.state.store(REQUESTED, Ordering::Release);
    PENDING.fetch_add(1, Ordering::SeqCst);
    if POLLING.load(Ordering::SeqCst) == 0 {
        futex_wake(&PENDING, 1);
    }
    let spin_until = SPIN_NS.load(Ordering::Relaxed);
    let mut spins = 0usize;
    loop {
        let s = slot.state.load(Ordering::Acquire);
        match s {
            DONE => break,
            FAILED => {
                slot.state.store(FREE, Ordering::Release);
                say(b"dsm: cannot resolve the fault at ", addr);
                restore_previous();
                return;
            }
            _ if spins < spin_until / 20 => {
                spins += 1;
                std::hint::spin_loop();
            }
            _ => futex_wait(&slot.state, s),
        }
    }
    slot.state.store(FREE, Ordering::Release);
}

/// The running engine: the installed handler and the service threads.
#[derive(Debug)]
pub(crate) struct FaultEngine {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Wakes the userfaultfd service threads to stop (absent for the `sigsegv` engine).
    uffd_stop: Option<userfault::StopSignal>,
    kind: FaultEngineKind,
    /// Keeps the runtime alive while the inline handler may use it.
    _inner: Arc<Inner>,
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

/// Installs our handler for `sig`, remembering the previous one.
fn install(sig: libc::c_int) -> Result<()> {
    // SAFETY: an all-zero sigaction is a valid starting point (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_fault as *const () as usize;
    // SA_SIGINFO: we need the address and the context. SA_RESTART: system calls interrupted
    // by a fault resume. Not SA_ONSTACK: the inline mode resolves faults in the handler, which
    // needs more stack than the small alternate stacks threads get; the cost is that a stack
    // overflow (which cannot be a fault in global memory) kills the process without Rust's
    // "stack overflow" message, as the kernel cannot run any handler on a full stack.
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: an all-zero sigaction is a valid out-parameter.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: installing a handler whose body is async-signal-safe in the hand-off mode and
    // justified for the inline mode (see the module documentation and on_fault).
    if unsafe { libc::sigaction(sig, &action, &mut old) } != 0 {
        return Err(Error::io(
            "installing the fault signal handler",
            std::io::Error::last_os_error(),
        ));
    }
    // The first engine of the process records what was there before; a later engine (after
    // `stop` put it back) finds the same handler.
    let _ = previous_cell(sig).set(old);
    SIGNAL.store(sig, Ordering::Release);
    Ok(())
}

impl FaultEngine {
    /// Starts the engine [`prepare`] chose for `inner`'s global space: installs the signal
    /// handler for the global range (inline mode, or the `sigsegv` engine) and starts the
    /// service threads (hand-off mode).
    ///
    /// # Errors
    /// [`Error::Config`] when an engine is already installed in this process; [`Error::Io`]
    /// when the handler cannot be installed or a thread cannot start.
    pub(crate) fn start(inner: Arc<Inner>, mode: FaultMode) -> Result<FaultEngine> {
        if INSTALLED.swap(true, Ordering::SeqCst) {
            return Err(Error::Config("one shared memory per process".into()));
        }
        match FaultEngine::start_installed(inner, mode) {
            Ok(e) => Ok(e),
            Err(e) => {
                INSTALLED.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    fn start_installed(inner: Arc<Inner>, mode: FaultMode) -> Result<FaultEngine> {
        RANGE_START.store(inner.space.base(), Ordering::Release);
        RANGE_END.store(inner.space.base() + inner.space.size(), Ordering::Release);
        let stop = Arc::new(AtomicBool::new(false));
        let uffd = inner.space.uffd().is_some();
        let kind = if uffd {
            FaultEngineKind::Userfaultfd
        } else {
            FaultEngineKind::Sigsegv
        };
        if uffd {
            if let FaultMode::Handoff { threads } = mode {
                let (threads, signal) = userfault::spawn(&inner, threads.max(1))?;
                return Ok(FaultEngine {
                    threads,
                    stop,
                    uffd_stop: Some(signal),
                    kind,
                    _inner: inner,
                });
            }
        }
        install(if uffd { libc::SIGBUS } else { libc::SIGSEGV })?;
        let mut handles = Vec::new();
        let threads = match mode {
            FaultMode::Inline => {
                INLINE.store(Arc::as_ptr(&inner).cast_mut(), Ordering::Release);
                0
            }
            FaultMode::Handoff { threads } => threads.max(1),
        };
        for i in 0..threads {
            let inner = Arc::clone(&inner);
            let stop = Arc::clone(&stop);
            let h = std::thread::Builder::new()
                .name(format!("dsm-fault-{i}"))
                .spawn(move || serve(&inner, &stop))
                .map_err(|e| Error::io("starting a fault service thread", e))?;
            handles.push(h);
        }
        Ok(FaultEngine {
            threads: handles,
            stop,
            uffd_stop: None,
            kind,
            _inner: inner,
        })
    }

    /// The engine that runs (never [`FaultEngineKind::Auto`]).
    pub(crate) fn kind(&self) -> FaultEngineKind {
        self.kind
    }

    /// Stops the service threads and puts the previous handler back.
    pub(crate) fn stop(self) {
        INLINE.store(std::ptr::null_mut(), Ordering::Release);
        self.stop.store(true, Ordering::SeqCst);
        PENDING.fetch_add(1, Ordering::SeqCst);
        futex_wake(&PENDING, i32::MAX);
        if let Some(signal) = &self.uffd_stop {
            signal.raise();
        }
        for t in self.threads {
            let _ = t.join();
        }
        if let Err(e) = self._inner.space.close_uffd_view() {
            tracing::warn!("closing the application view: {e}");
        }
        restore_previous();
        SIGNAL.store(0, Ordering::Release);
        RANGE_END.store(0, Ordering::Release);
        INSTALLED.store(false, Ordering::SeqCst);
    }
}

/// A service thread: takes requested faults, resolves them, wakes the faulting thread.
///
/// One service thread at a time polls (holding the `POLLING` token) for `SPIN_NS` after its
/// last work; the others sleep on the `PENDING` futex. A thread gives the token up while it
/// serves, so a second fault meanwhile wakes a sleeper and both are served concurrently.
fn serve(inner: &Inner, stop: &AtomicBool) {
    let spin = Duration::from_nanos(SPIN_NS.load(Ordering::Relaxed) as u64);
    let mut polling = false;
    let mut last_work = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let seen = PENDING.load(Ordering::SeqCst);
        let mut served = false;
        for slot in &FAULTS {
            if slot
                .state
                .compare_exchange(REQUESTED, SERVING, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            if polling {
                POLLING.store(0, Ordering::SeqCst);
                polling = false;
            }
            served = true;
            let addr = slot.addr.load(Ordering::Relaxed);
            let write = slot.write.load(Ordering::Relaxed);
            let outcome = match inner.resolve(addr, write) {
                Ok(()) => DONE,
                Err(e) => {
                    eprintln!(
                        "dsm: rank {}: cannot resolve a {} fault at {addr:#x}: {e}",
                        inner.me,
                        if write { "write" } else { "read" }
                    );
                    FAILED
                }
            };
            slot.state.store(outcome, Ordering::Release);
            futex_wake(&slot.state, 1);
        }
        if served {
            last_work = Instant::now();
        }
        if !polling {
            polling = POLLING
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
            if polling {
                continue;
            }
        }
        if polling && last_work.elapsed() < spin {
            std::hint::spin_loop();
            continue;
        }
        if polling {
            POLLING.store(0, Ordering::SeqCst);
            polling = false;
        }
        futex_wait(&PENDING, seen);
    }
    if polling {
        POLLING.store(0, Ordering::SeqCst);
    }
}

/// Whether the fault the interrupted context `ctx` describes was a write. x86-64: bit 1 of the
/// page-fault error code (the kernel records it for a SIGBUS raised by userfaultfd as for a
/// SIGSEGV). Other architectures keep it elsewhere (aarch64: the ESR in the context's reserved
/// records) and are not supported yet: building for them is a compile error, not a wrong guess.
///
/// # Safety
/// `ctx` must be the `ucontext_t` a `SA_SIGINFO` handler received for SIGSEGV or SIGBUS.
#[cfg(target_arch = "x86_64")]
unsafe fn fault_was_write(ctx: *mut libc::c_void) -> bool {
    // SAFETY: the caller passes the handler's context, a valid ucontext_t.
    let err =
        unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize] };
    err & 2 != 0
}

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "the fault engines decode the write bit of a page fault on x86-64 only (see fault_was_write)"
);
