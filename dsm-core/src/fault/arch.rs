//! Whether a fault was a write, read from the interrupted context the kernel hands a
//! `SA_SIGINFO` handler: the one architecture-specific part of the fault engines.
//!
//! - **x86-64**: bit 1 (`X86_PF_WRITE`) of the page-fault error code, `REG_ERR` of the
//!   general registers.
//! - **aarch64**: the syndrome (`ESR_EL1`) of the data abort, which the kernel saves as an
//!   `esr_context` record in the `__reserved` area of the `sigcontext`; a write sets its
//!   `WnR` bit (6), and a cache-maintenance instruction sets `WnR` and `CM` (8) and is not a
//!   write (the kernel's own `is_write_abort`).
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

/// Whether the fault the interrupted context `ctx` describes was a write (aarch64: `WnR` of
/// the saved syndrome). Without a syndrome record, which the kernel always saves for a fault
/// it signals, the fault is taken for a write: resolving a read as a write costs a twin and a
/// diff, while resolving a write as a read would fault again for ever.
///
/// # Safety
/// `ctx` must be the `ucontext_t` a `SA_SIGINFO` handler received for SIGSEGV or SIGBUS.
#[cfg(target_arch = "aarch64")]
pub(super) unsafe fn fault_was_write(ctx: *mut libc::c_void) -> bool {
    // SAFETY: the caller passes the handler's context, a valid ucontext_t; taking the address
    // of its field reads nothing.
    let mcontext = unsafe { std::ptr::addr_of!((*(ctx as *const libc::ucontext_t)).uc_mcontext) };
    // SAFETY: the reserved area is the last RESERVED bytes of the mcontext (asserted at
    // RESERVED_AT), so the offset stays inside the same object.
    let area = unsafe { mcontext.cast::<u8>().add(RESERVED_AT) };
    // SAFETY: the signal frame holds all RESERVED bytes, in the faulting thread's stack: the
    // records the kernel wrote, its null record, then stack memory; nothing writes them while
    // the handler reads, and `esr` stops at the null record.
    let records = unsafe { std::slice::from_raw_parts(area, RESERVED) };
    esr(records).is_none_or(esr_is_write)
}

/// Bytes of the `__reserved` area of an aarch64 `sigcontext`.
#[cfg(any(target_arch = "aarch64", test))]
const RESERVED: usize = 4096;

/// Where the `__reserved` area starts in `mcontext_t`: the kernel aligns it to 16 bytes after
/// `pstate` (libc declares the field private, with an alignment of 8, so its own offset would
/// be 8 bytes short); it ends the structure.
#[cfg(target_arch = "aarch64")]
const RESERVED_AT: usize =
    (std::mem::offset_of!(libc::mcontext_t, pstate) + 8).next_multiple_of(16);
#[cfg(target_arch = "aarch64")]
const _: () = assert!(RESERVED_AT + RESERVED == size_of::<libc::mcontext_t>());

/// The syndrome saved in the `esr_context` record (`ESR_MAGIC`) of an aarch64 `sigcontext`'s
/// reserved area: a run of `_aarch64_ctx { magic: u32, size: u32 }` headers, each followed by
/// its payload (`size` counts the header), ended by a null record. `None` when the records end
/// (or are malformed) before one is found. Reads only, allocates nothing: async-signal-safe.
#[cfg(any(target_arch = "aarch64", test))]
fn esr(records: &[u8]) -> Option<u64> {
    /// `ESR_MAGIC` of the kernel's `arch/arm64/include/uapi/asm/sigcontext.h`.
    const ESR_MAGIC: u32 = 0x4553_5201;
    let word = |at: usize| -> Option<u32> {
        let b = records.get(at..at.checked_add(4)?)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut at = 0;
    loop {
        let magic = word(at)?;
        let size = word(at.checked_add(4)?)? as usize;
        if magic == 0 || size < 8 || records.len() - at < size {
            return None;
        }
        if magic == ESR_MAGIC && size >= 16 {
            let esr = records.get(at + 8..at + 16)?;
            return Some(u64::from_ne_bytes(<[u8; 8]>::try_from(esr).ok()?));
        }
        at += size;
    }
}

/// Whether the syndrome `esr` is a data abort by a write (`WnR` set, `CM` clear), as the
/// kernel's `is_write_abort` decides.
#[cfg(any(target_arch = "aarch64", test))]
fn esr_is_write(esr: u64) -> bool {
    /// Exception classes of a data abort, from a lower and from the same exception level.
    const EC_DABT_LOW: u64 = 0x24;
    const EC_DABT_CUR: u64 = 0x25;
    const WNR: u64 = 1 << 6;
    const CM: u64 = 1 << 8;
    let ec = (esr >> 26) & 0x3f;
    (ec == EC_DABT_LOW || ec == EC_DABT_CUR) && esr & WNR != 0 && esr & CM == 0
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "the fault engines decode the write bit of a page fault on x86-64 and aarch64 only \
     (see dsm-core/src/fault/arch.rs)"
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A reserved area as the kernel lays it out: an `fpsimd_context` (528 bytes), then
    /// `extra` records, then the null record.
    fn area(extra: &[(u32, &[u8])]) -> Vec<u8> {
        let mut a = Vec::new();
        let mut record = |magic: u32, payload: &[u8]| {
            a.extend_from_slice(&magic.to_ne_bytes());
            a.extend_from_slice(&((8 + payload.len()) as u32).to_ne_bytes());
            a.extend_from_slice(payload);
        };
        record(0x4650_8001, &[0x5a; 520]);
        for (magic, payload) in extra {
            record(*magic, payload);
        }
        a.resize(RESERVED, 0);
        a
    }

    #[test]
    fn the_syndrome_is_found_after_other_records() {
        let esr_value: u64 = 0x9200_0047;
        let a = area(&[(0x4553_5201, &esr_value.to_ne_bytes())]);
        assert_eq!(esr(&a), Some(esr_value));
    }

    #[test]
    fn no_syndrome_record_or_a_malformed_area_gives_none() {
        assert_eq!(esr(&area(&[])), None);
        let mut looping = area(&[]);
        looping[4..8].copy_from_slice(&0u32.to_ne_bytes());
        assert_eq!(esr(&looping), None, "a zero size must not loop");
        let mut overlong = area(&[]);
        overlong[4..8].copy_from_slice(&(RESERVED as u32 + 16).to_ne_bytes());
        assert_eq!(esr(&overlong), None);
        assert_eq!(esr(&[1, 2, 3]), None);
    }

    #[test]
    fn write_aborts_are_told_from_reads_and_cache_maintenance() {
        // Data aborts from EL0, level-3 translation and permission faults.
        assert!(esr_is_write(0x9200_0047), "write, translation fault");
        assert!(esr_is_write(0x9200_004f), "write, permission fault");
        assert!(!esr_is_write(0x9200_0007), "read, translation fault");
        assert!(
            !esr_is_write(0x9200_0147),
            "cache maintenance sets WnR and CM"
        );
        // An instruction abort (EC 0x20) is never a write.
        assert!(!esr_is_write(0x8200_0047));
        // A data abort from the same level (EC 0x25) is decoded the same way.
        assert!(esr_is_write(0x9600_0047));
    }
}
