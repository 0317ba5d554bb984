//! Whether a fault was a write, read from the interrupted context the kernel hands a
//! `SA_SIGINFO` handler: the one architecture-specific part of the fault engines.
//!
//! - **x86-64**: bit 1 (`X86_PF_WRITE`) of the page-fault error code, `REG_ERR` of the
//!   general registers.
//!
//! The kernel records the same information for the `SIGBUS` that userfaultfd raises
//! (`UFFD_FEATURE_SIGBUS`) as for a `SIGSEGV`. Building for any other architecture is a
//! compile error, not a wrong guess.

/// Whether the fault the interrupted context `ctx` describes was a write (x86-64: bit 1 of
/// the page-fault error code).
///
/// # Safety
/// `ctx` must be the `ucontext_t` a `SA_SIGINFO` handler received for SIGSEGV or SIGBUS.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn fault_was_write(ctx: *mut libc::c_void) -> bool {
    /// `X86_PF_WRITE` of the kernel's `arch/x86/include/asm/trap_pf.h`.
    const PF_WRITE: libc::greg_t = 1 << 1;
    // SAFETY: the caller passes the handler's context, a valid ucontext_t.
    let err =
        unsafe { (*(ctx as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_ERR as usize] };
    err & PF_WRITE != 0
}

#[cfg(not(target_arch = "x86_64"))]
compile_error!(
    "the fault engines decode the write bit of a page fault on x86-64 only \
     (see dsm-core/src/fault/arch.rs)"
);
