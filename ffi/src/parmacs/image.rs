//! The program's own writable data (its `.data` and `.bss`: file-scope and static variables),
//! copied from rank 0 to the other ranks when the parallel phase starts and merged back, byte
//! by byte, when it ends; and the same address-space layout in every rank, which makes those
//! bytes (pointers included) mean the same thing everywhere.

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use crate::status::Failure;

/// Symbols that may live in the program's data (copy relocations of the C library's variables)
/// and whose values differ between processes: they are never copied.
const PRIVATE: [&CStr; 7] = [
    c"environ",
    c"__environ",
    c"_environ",
    c"program_invocation_name",
    c"program_invocation_short_name",
    c"__progname",
    c"__progname_full",
];

/// The writable, non-RELRO ranges of the main executable, minus [`PRIVATE`] words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Image {
    ranges: Vec<(usize, usize)>,
}

/// What `dl_iterate_phdr` found for the main executable.
#[derive(Default)]
struct Found {
    seen: bool,
    writable: Vec<(usize, usize)>,
    relro: Option<(usize, usize)>,
    code: Vec<(usize, usize)>,
}

extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut c_void,
) -> c_int {
    // SAFETY: `data` is the `&mut Found` passed to `dl_iterate_phdr` below, alive for the call
    // and not otherwise borrowed during it.
    let found = unsafe { &mut *data.cast::<Found>() };
    // SAFETY: `info` points to a valid entry whose `dlpi_phdr` array has `dlpi_phnum` headers
    // (the loader's guarantee for the duration of the callback).
    let info = unsafe { &*info };
    if found.seen {
        return 1;
    }
    // The first object is the main executable.
    found.seen = true;
    let base = info.dlpi_addr as usize;
    // SAFETY: as above: `dlpi_phnum` headers at `dlpi_phdr`.
    let headers =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
    for h in headers {
        let range = (base + h.p_vaddr as usize, h.p_memsz as usize);
        match h.p_type {
            libc::PT_LOAD if h.p_flags & libc::PF_W != 0 => found.writable.push(range),
            libc::PT_LOAD if h.p_flags & libc::PF_X != 0 => found.code.push(range),
            libc::PT_GNU_RELRO => found.relro = Some(range),
            _ => {}
        }
    }
    1
}

/// `ranges` without `cut` (start, len).
fn subtract(ranges: Vec<(usize, usize)>, cut: (usize, usize)) -> Vec<(usize, usize)> {
    let (cs, ce) = (cut.0, cut.0 + cut.1);
    let mut out = Vec::new();
    for (s, len) in ranges {
        let e = s + len;
        if ce <= s || cs >= e {
            out.push((s, len));
            continue;
        }
        if s < cs {
            out.push((s, cs - s));
        }
        if ce < e {
            out.push((ce, e - ce));
        }
    }
    out
}

impl Image {
    /// The main executable's writable data.
    ///
    /// # Errors
    /// When the runtime itself is linked into the executable (`libdsm.a`): its own state would
    /// be copied between processes, so the layer needs the shared library.
    pub(super) fn of_program() -> Result<Image, Failure> {
        let (image, runtime_inside) = Image::scan();
        if runtime_inside {
            return Err(Failure::invalid(
                "the PARMACS layer needs the shared libdsm (link with -ldsm, not libdsm.a): \
                 the runtime's own state must not be copied between processes",
            ));
        }
        Ok(image)
    }

    /// The main executable's writable data, and whether the runtime's code is part of the
    /// executable.
    fn scan() -> (Image, bool) {
        let mut found = Found::default();
        // SAFETY: `visit` matches the callback type, and `found` outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(visit), (&mut found as *mut Found).cast()) };
        let me = Image::scan as *const () as usize;
        let inside = found
            .code
            .iter()
            .any(|&(s, len)| (s..s + len).contains(&me));
        let mut ranges = found.writable;
        if let Some(relro) = found.relro {
            ranges = subtract(ranges, relro);
        }
        for name in PRIVATE {
            // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the loaded objects.
            let at = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
            if at != 0 {
                ranges = subtract(ranges, (at, size_of::<usize>()));
            }
        }
        ranges.retain(|&(_, len)| len > 0);
        (Image { ranges }, inside)
    }

    /// Bytes in the image.
    pub(super) fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.1).sum()
    }

    /// A fingerprint of the address-space layout: the image's ranges and where the C library
    /// and the runtime are loaded. Equal in two processes of one program when their layouts
    /// are the same (no address randomisation).
    pub(super) fn layout(&self) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        let mut mix = |v: usize| {
            for b in (v as u64).to_le_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        };
        for &(s, len) in &self.ranges {
            mix(s);
            mix(len);
        }
        // SAFETY: a NUL-terminated name; RTLD_DEFAULT searches the loaded objects.
        mix(unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()) } as usize);
        mix(Image::scan as *const () as usize);
        h
    }

    /// A copy of the image's bytes now.
    pub(super) fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        for &(s, len) in &self.ranges {
            // SAFETY: the range is part of a mapped, writable (so readable) segment of the
            // executable for the life of the process; other threads may write it meanwhile (the
            // program's own data race, as under threads), which a byte copy tolerates.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(s as *const u8, len) });
        }
        out
    }

    /// Overwrites the image with `bytes` (a [`Image::snapshot`] of the same layout).
    ///
    /// # Errors
    /// A snapshot of another length.
    pub(super) fn restore(&self, bytes: &[u8]) -> Result<(), Failure> {
        if bytes.len() != self.len() {
            return Err(Failure::invalid(format!(
                "rank 0's program data is {} bytes, this rank's {}: not the same program",
                bytes.len(),
                self.len()
            )));
        }
        let mut at = 0;
        for &(s, len) in &self.ranges {
            // SAFETY: the range is mapped writable (see `snapshot`); no thread of the program
            // runs on this rank while the parallel phase starts (the threads are created after).
            unsafe { std::ptr::copy_nonoverlapping(bytes[at..].as_ptr(), s as *mut u8, len) };
            at += len;
        }
        Ok(())
    }

    /// The bytes that differ from `twin` now: runs of (offset u64, length u32, bytes).
    pub(super) fn diff(&self, twin: &[u8]) -> Vec<u8> {
        let now = self.snapshot();
        let mut out = Vec::new();
        let mut i = 0;
        while i < now.len().min(twin.len()) {
            if now[i] == twin[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < now.len() && now[i] != twin[i] {
                i += 1;
            }
            out.extend_from_slice(&(start as u64).to_le_bytes());
            out.extend_from_slice(&((i - start) as u32).to_le_bytes());
            out.extend_from_slice(&now[start..i]);
        }
        out
    }

    /// Writes the runs of a [`Image::diff`] into the image.
    ///
    /// # Errors
    /// A malformed diff (nothing past the malformed run is written).
    pub(super) fn apply(&self, mut runs: &[u8]) -> Result<(), Failure> {
        let bad = || Failure::invalid("a malformed program-data diff from another rank");
        while !runs.is_empty() {
            let head = runs.get(..12).ok_or_else(bad)?;
            let off = u64::from_le_bytes(head[..8].try_into().map_err(|_| bad())?) as usize;
            let len = u32::from_le_bytes(head[8..].try_into().map_err(|_| bad())?) as usize;
            let bytes = runs.get(12..12 + len).ok_or_else(bad)?;
            if off.checked_add(len).is_none_or(|end| end > self.len()) {
                return Err(bad());
            }
            self.write_at(off, bytes);
            runs = &runs[12 + len..];
        }
        Ok(())
    }

    /// Writes `bytes` at image offset `off` (in bounds: checked by the caller).
    fn write_at(&self, mut off: usize, mut bytes: &[u8]) {
        for &(s, len) in &self.ranges {
            if bytes.is_empty() {
                return;
            }
            if off >= len {
                off -= len;
                continue;
            }
            let n = (len - off).min(bytes.len());
            // SAFETY: `s + off .. s + off + n` lies inside a mapped writable range; the ranks'
            // threads that wrote these bytes have ended (the phase is over).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (s + off) as *mut u8, n) };
            bytes = &bytes[n..];
            off = 0;
        }
    }
}

/// Called before `main` by the program (a constructor that `MAIN_ENV` defines): makes sure
/// this process runs without address-space randomisation, so that every rank of the job has
/// the same layout and the program's data (pointers to its functions and variables included)
/// means the same in every rank. If randomisation is on, the program is started again in
/// place (`execv` of itself, same arguments, same process) with it off; where that is refused
/// (a sandbox that forbids `personality`), it goes on, and the parallel phase will report the
/// different layouts. Does nothing under valgrind, or when `DSM_PARMACS_REEXEC=0`.
#[no_mangle]
pub extern "C" fn dsm_parmacs_boot() {
    const ADDR_NO_RANDOMIZE: libc::c_ulong = 0x0040000;
    if std::env::var("DSM_PARMACS_REEXEC").is_ok_and(|v| v == "0")
        || std::env::var("LD_PRELOAD").is_ok_and(|v| v.contains("vgpreload"))
    {
        return;
    }
    // SAFETY: `personality(0xffffffff)` only queries.
    let current = unsafe { libc::personality(0xffff_ffff) };
    if current < 0 || current as libc::c_ulong & ADDR_NO_RANDOMIZE != 0 {
        return;
    }
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let args: Vec<CString> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .filter_map(|a| CString::new(a).ok())
        .collect();
    if args.is_empty() {
        return;
    }
    let mut argv: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: sets a flag of this process's execution domain, inherited by the `execv` below.
    if unsafe { libc::personality(current as libc::c_ulong | ADDR_NO_RANDOMIZE) } < 0 {
        return;
    }
    // SAFETY: `argv` is a NULL-terminated array of NUL-terminated strings that outlive the
    // call; on success the process image is replaced, on failure execv returns.
    unsafe { libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr()) };
    // The exec failed: put the flag back and run randomised.
    // SAFETY: as above.
    unsafe { libc::personality(current as libc::c_ulong) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtract_cuts_ranges() {
        assert_eq!(subtract(vec![(0, 100)], (10, 10)), vec![(0, 10), (20, 80)]);
        assert_eq!(subtract(vec![(0, 100)], (0, 100)), vec![]);
        assert_eq!(
            subtract(vec![(0, 10), (50, 10)], (5, 50)),
            vec![(0, 5), (55, 5)]
        );
    }

    #[test]
    fn diffs_round_trip_and_reject_garbage() {
        let (img, inside) = Image::scan();
        assert!(inside, "the test binary links the runtime in");
        assert!(Image::of_program().is_err(), "which the layer refuses");
        assert!(img.len() > 0);
        // A word of this binary's own data changes after the snapshot: the diff has a run
        // with its new bytes at its offset. (Other tests' threads may change other bytes
        // meanwhile, so the diff need not be only that.)
        static PROBE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let addr = &PROBE as *const _ as usize;
        let mut base = 0;
        let mut probe = None;
        for &(s, len) in &img.ranges {
            if (s..s + len).contains(&addr) {
                probe = Some(base + addr - s);
            }
            base += len;
        }
        let probe = probe.expect("a static of the program is in its image");
        let twin = img.snapshot();
        let value = 0x1122_3344_5566_7788u64;
        PROBE.store(value, std::sync::atomic::Ordering::SeqCst);
        let diff = img.diff(&twin);
        let mut runs = &diff[..];
        let mut seen = false;
        while !runs.is_empty() {
            let off = u64::from_le_bytes(runs[..8].try_into().unwrap()) as usize;
            let len = u32::from_le_bytes(runs[8..12].try_into().unwrap()) as usize;
            let bytes = &runs[12..12 + len];
            if off <= probe && probe + 8 <= off + len {
                seen = bytes[probe - off..probe - off + 8] == value.to_le_bytes();
            }
            runs = &runs[12 + len..];
        }
        assert!(seen, "the diff carries the probe's new value");
        assert!(img.apply(&[1, 2, 3]).is_err());
        let mut huge = (u64::MAX - 3).to_le_bytes().to_vec();
        huge.extend_from_slice(&8u32.to_le_bytes());
        huge.extend_from_slice(&[0; 8]);
        assert!(
            img.apply(&huge).is_err(),
            "an offset past the image is refused"
        );
        assert_eq!(img.layout(), Image::scan().0.layout());
    }
}
