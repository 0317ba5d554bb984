//! The fault signal handler: installing it for `SIGSEGV` (the `sigsegv` engine) or `SIGBUS`
//! (the `uffd` engine in the inline mode), telling faults in the global range from the rest,
//! and forwarding the rest to the handler that was installed before ours.
//!
//! A fault in the global range is resolved by the faulting thread itself through the resolver
//! published with [`Inline::publish`] (inline mode), or handed to the service threads
//! ([`super::handoff`]). A fault outside the range goes to the previous handler (Rust's
//! stack-overflow handler, a debugger's, or the default action, which crashes the process), so
//! a genuine bug still ends as an ordinary segmentation fault.
//!
//! Everything the handler reads is in statics written before the handler is installed and
//! cleared after it is removed.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::{arch, handoff, Resolve};
use crate::error::{Error, Result};

static RANGE_START: AtomicUsize = AtomicUsize::new(0);
static RANGE_END: AtomicUsize = AtomicUsize::new(0);
static PREVIOUS_SEGV: OnceLock<libc::sigaction> = OnceLock::new();
static PREVIOUS_BUS: OnceLock<libc::sigaction> = OnceLock::new();
/// The signal our handler is installed for: `SIGSEGV` (the `sigsegv` engine) or `SIGBUS` (the
/// `uffd` engine in the inline mode); 0 when none is.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The resolver of the inline mode: the `Arc<dyn Resolve>` inside the allocation an [`Inline`]
/// owns (a thin pointer to the fat one, so that it fits an atomic); null when the engine is
/// stopped or in the hand-off mode.
static INLINE: AtomicPtr<Arc<dyn Resolve>> = AtomicPtr::new(std::ptr::null_mut());

/// Sets the global range `[start, end)` whose faults the handler resolves.
pub(super) fn set_range(start: usize, end: usize) {
    RANGE_START.store(start, Ordering::Release);
    RANGE_END.store(end, Ordering::Release);
}

/// Empties the global range: from now on every fault is forwarded.
pub(super) fn clear_range() {
    RANGE_END.store(0, Ordering::Release);
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
    let write = unsafe { arch::fault_was_write(ctx) };
    let inline = INLINE.load(Ordering::Acquire);
    if !inline.is_null() {
        // SAFETY: a non-null INLINE points into the allocation of the `Inline` that published
        // it, which withdraws it (stores null) before that allocation can be freed, and the
        // engine is stopped only after the final barrier, when no application thread accesses
        // global memory any more: no fault can be between the load above and this use when
        // the allocation goes.
        let resolver = unsafe { &*inline };
        if let Err(e) = resolver.resolve(addr, write) {
            let kind = if write { "write" } else { "read" };
            eprintln!(
                "dsm: rank {}: cannot resolve a {kind} fault at {addr:#x}: {e}",
                resolver.rank()
            );
            restore_previous();
        }
        return;
    }
    if !handoff::request(addr, write) {
        say(b"dsm: cannot resolve the fault at ", addr);
        restore_previous();
    }
}

/// Installs our handler for `sig`, remembering the previous one.
///
/// # Errors
/// [`Error::Io`] when `sigaction` fails.
pub(super) fn install(sig: libc::c_int) -> Result<()> {
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
    // justified for the inline mode (see the module documentation of `fault` and on_fault).
    if unsafe { libc::sigaction(sig, &action, &mut old) } != 0 {
        return Err(Error::io(
            "installing the fault signal handler",
            std::io::Error::last_os_error(),
        ));
    }
    // The first engine of the process records what was there before; a later engine (after
    // `uninstall` put it back) finds the same handler.
    let _ = previous_cell(sig).set(old);
    SIGNAL.store(sig, Ordering::Release);
    Ok(())
}

/// Puts the previous handler back (nothing when ours is not installed).
pub(super) fn uninstall() {
    restore_previous();
    SIGNAL.store(0, Ordering::Release);
}

/// The resolver the inline handler uses, published for as long as this value lives.
///
/// The handler finds it through a thin pointer in a static; this value owns the allocation the
/// pointer designates (an `Arc`, so that moving the owner never moves or reasserts unique
/// ownership of what the handler reads) and withdraws the pointer before letting it go.
#[derive(Debug)]
pub(super) struct Inline {
    resolver: Arc<Arc<dyn Resolve>>,
}

impl Inline {
    /// Makes `resolver` the one the handler uses for faults in the range.
    pub(super) fn publish(resolver: Arc<dyn Resolve>) -> Inline {
        let resolver = Arc::new(resolver);
        INLINE.store(Arc::as_ptr(&resolver).cast_mut(), Ordering::Release);
        Inline { resolver }
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        // Withdrawn only if still ours (a later engine cannot exist while this one runs, but
        // a failed start must not clear somebody else's).
        let _ = INLINE.compare_exchange(
            Arc::as_ptr(&self.resolver).cast_mut(),
            std::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}
