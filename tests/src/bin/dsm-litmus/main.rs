//! Memory-model litmus tests on the shared memory, one scenario per run, for the multi-process
//! tests. Each exits 0 only when its check holds on this node.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dsm_core::fault::FaultEngineKind;
use dsm_core::{Dsm, GlobalLock, Placement};
use transport::Transport;

mod streams;

use tests::scenario::{check, e, Outcome as R};

/// Reads a u64 of global memory through an ordinary load (which may fault).
fn load(p: *const u64) -> u64 {
    // SAFETY: every pointer passed here lies inside a live global allocation; the runtime
    // resolves the fault, and the program is data-race free by construction of each scenario.
    unsafe { std::ptr::read_volatile(p) }
}

fn store(p: *mut u64, v: u64) {
    // SAFETY: as for `load`.
    unsafe { std::ptr::write_volatile(p, v) }
}

/// Rank 0 writes an array, a barrier, everyone reads it.
fn mp_barrier(d: &Dsm) -> R {
    const N: usize = 64 * 1024;
    let a = d.alloc_collective(N * 8, Placement::Blocked).map_err(e)? as *mut u64;
    if d.rank() == 0 {
        for i in 0..N {
            store(a.wrapping_add(i), i as u64 * 3 + 1);
        }
    }
    d.barrier().map_err(e)?;
    for i in 0..N {
        let v = load(a.wrapping_add(i));
        check(v == i as u64 * 3 + 1, || {
            format!("a[{i}] = {v} after the barrier")
        })?;
    }
    d.barrier().map_err(e)
}

/// Message passing through a lock: the writer publishes data then a flag under the lock; a
/// reader that sees the flag under the lock must see the data.
fn mp_lock(d: &Dsm) -> R {
    const N: usize = 4096;
    let base = d
        .alloc_collective(N * 8 + 2 * 4096, Placement::Cyclic { block_pages: 1 })
        .map_err(e)?;
    let l = base as *mut GlobalLock;
    let flag = base.wrapping_add(4096) as *mut u64;
    let data = base.wrapping_add(8192) as *mut u64;
    if d.rank() == 0 {
        d.lock_init(l).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    if d.rank() == 0 {
        d.lock(l).map_err(e)?;
        for i in 0..N {
            store(data.wrapping_add(i), 0xabc0_0000 + i as u64);
        }
        store(flag, 1);
        d.unlock(l).map_err(e)?;
    } else {
        loop {
            d.lock(l).map_err(e)?;
            let f = load(flag);
            if f == 1 {
                for i in 0..N {
                    let v = load(data.wrapping_add(i));
                    if v != 0xabc0_0000 + i as u64 {
                        let _ = d.unlock(l);
                        return Err(format!("flag set but data[{i}] = {v:#x}"));
                    }
                }
                d.unlock(l).map_err(e)?;
                break;
            }
            d.unlock(l).map_err(e)?;
        }
    }
    d.barrier().map_err(e)
}

/// Every node increments one counter under a lock (200 rounds each, fewer in big jobs: about
/// 1,600 hand-offs in all); the total is exact.
fn counter_lock(d: &Dsm) -> R {
    let k = (1600 / d.nodes() as u64).clamp(4, 200);
    let base = d.alloc_collective(8192, Placement::Blocked).map_err(e)?;
    let l = base as *mut GlobalLock;
    let counter = base.wrapping_add(64) as *mut u64;
    if d.rank() == 0 {
        d.lock_init(l).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    for _ in 0..k {
        d.lock(l).map_err(e)?;
        store(counter, load(counter) + 1);
        d.unlock(l).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    let total = load(counter);
    let want = k * d.nodes() as u64;
    check(total == want, || {
        format!("counter is {total}, expected {want}")
    })
}

/// Threads of every node take two locks in turn and add one to the counter beside each (in
/// the lock's page: a remote taker gets the page with the lock's grant, row K1, while
/// another thread of its node may hold the lock and use the page); both counters come out
/// exact, and a second word beside each, written with the counter, always matches it.
fn counter_lock_threads(d: &Dsm) -> R {
    const THREADS: u64 = 3;
    // Even: each thread takes each lock k / 2 times.
    let k = (600 / d.nodes() as u64).clamp(4, 100) & !1;
    let base = d.alloc_collective(8192, Placement::Blocked).map_err(e)? as usize;
    // One lock in each page, the two pages homed on different ranks.
    let locks = [base, base + 4096];
    if d.rank() == 0 {
        for l in locks {
            d.lock_init(l as *const GlobalLock).map_err(e)?;
        }
    }
    d.barrier().map_err(e)?;
    let torn = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || -> R {
                    for i in 0..k {
                        let l = locks[((i + t) % 2) as usize];
                        let (count, twin) = ((l + 64) as *mut u64, (l + 72) as *mut u64);
                        d.lock(l as *const GlobalLock).map_err(e)?;
                        let (c, w) = (load(count), load(twin));
                        if c != w {
                            return Err(format!("under the lock, counter {c} beside {w}"));
                        }
                        store(count, c + 1);
                        store(twin, c + 1);
                        d.unlock(l as *const GlobalLock).map_err(e)?;
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
    });
    torn?;
    d.barrier().map_err(e)?;
    let want = k / 2 * THREADS * d.nodes() as u64;
    for l in locks {
        let total = load((l + 64) as *const u64);
        check(total == want, || {
            format!(
                "counter beside the lock at +{:#x} is {total}, expected {want}",
                l - base
            )
        })?;
    }
    Ok(())
}

/// Every node writes its own bytes of one shared page many times; all survive. (64 bytes each,
/// fewer in jobs of more than 64 nodes: every node shares the one page.)
fn false_sharing(d: &Dsm) -> R {
    let page = d.alloc_collective(4096, Placement::Blocked).map_err(e)?;
    let (me, n) = (d.rank(), d.nodes());
    let w = (4096 / n).min(64);
    for round in 0..20u8 {
        for i in 0..w {
            let v = round ^ (me as u8) ^ i as u8;
            // SAFETY: bytes [me*w, me*w+w) of the page belong to this node alone.
            unsafe { std::ptr::write_volatile(page.wrapping_add(me * w + i), v) };
        }
        d.barrier().map_err(e)?;
        for r in 0..n {
            for i in 0..w {
                // SAFETY: read after the barrier; nobody writes until the next round's barrier...
                // the next round writes only after every node passed this check (barrier below).
                let v = unsafe { std::ptr::read_volatile(page.wrapping_add(r * w + i)) };
                let want = round ^ (r as u8) ^ i as u8;
                check(v == want, || {
                    format!("round {round}: byte {i} of rank {r} is {v}, expected {want}")
                })?;
            }
        }
        d.barrier().map_err(e)?;
    }
    Ok(())
}

/// Atomics hammered by every node give exact totals.
fn atomics(d: &Dsm) -> R {
    const K: u64 = 300;
    let base = d.alloc_collective(4096, Placement::Blocked).map_err(e)? as *mut u64;
    let (sum, cas) = (base, base.wrapping_add(1));
    for _ in 0..K {
        d.atomic_fetch_add(sum, 2).map_err(e)?;
        let mut cur = d.atomic_load(cas).map_err(e)?;
        loop {
            let seen = d.atomic_compare_exchange(cas, cur, cur + 1).map_err(e)?;
            if seen == cur {
                break;
            }
            cur = seen;
        }
    }
    d.barrier().map_err(e)?;
    let n = d.nodes() as u64;
    let (s, c) = (
        d.atomic_load(sum).map_err(e)?,
        d.atomic_load(cas).map_err(e)?,
    );
    check(s == 2 * K * n && c == K * n, || {
        format!(
            "fetch_add total {s}, CAS total {c}, expected {} and {}",
            2 * K * n,
            K * n
        )
    })?;
    d.barrier().map_err(e)?;
    if d.rank() == 0 {
        let old = d.atomic_exchange(sum, 7).map_err(e)?;
        check(old == 2 * K * n, || format!("exchange returned {old}"))?;
        check(d.atomic_load(sum).map_err(e)? == 7, || {
            "exchange did not store".into()
        })?;
    }
    d.barrier().map_err(e)
}

/// Store buffering with fences: x = y = 0; node 0 writes x then reads y, node 1 writes y then
/// reads x, each with release + acquire in between. Both reading 0 is forbidden.
fn store_buffering(d: &Dsm) -> R {
    if d.nodes() < 2 {
        return Ok(());
    }
    let base = d
        .alloc_collective(2 * 4096 + 4096, Placement::Cyclic { block_pages: 1 })
        .map_err(e)?;
    let (x, y) = (base as *mut u64, base.wrapping_add(4096) as *mut u64);
    let results = base.wrapping_add(8192) as *mut u64;
    for round in 1..=100u64 {
        let (mine, theirs) = if d.rank() == 0 { (x, y) } else { (y, x) };
        if d.rank() < 2 {
            store(mine, round);
            d.release().map_err(e)?;
            d.acquire().map_err(e)?;
            let seen = load(theirs);
            d.atomic_store(results.wrapping_add(d.rank()), seen)
                .map_err(e)?;
        }
        d.barrier().map_err(e)?;
        let (r0, r1) = (
            d.atomic_load(results).map_err(e)?,
            d.atomic_load(results.wrapping_add(1)).map_err(e)?,
        );
        check(r0 == round || r1 == round, || {
            format!("round {round}: both nodes read old values ({r0}, {r1})")
        })?;
        d.barrier().map_err(e)?;
    }
    Ok(())
}

/// First-touch placement puts each page where it was first touched.
fn first_touch(d: &Dsm) -> R {
    let n = d.nodes();
    let base = d
        .alloc_collective(n * 4096, Placement::FirstTouch)
        .map_err(e)?;
    // Node r touches page (r + 1) % n first.
    let mine = (d.rank() + 1) % n;
    store(
        base.wrapping_add(mine * 4096) as *mut u64,
        d.rank() as u64 + 100,
    );
    d.barrier().map_err(e)?;
    for p in 0..n {
        let home = d.home_of(base.wrapping_add(p * 4096)).map_err(e)?;
        let toucher = (p + n - 1) % n;
        check(home == toucher, || {
            format!("page {p} is homed on rank {home}, first touched by {toucher}")
        })?;
        let v = load(base.wrapping_add(p * 4096) as *const u64);
        check(v == toucher as u64 + 100, || format!("page {p} holds {v}"))?;
    }
    d.barrier().map_err(e)
}

/// An array much larger than the cache, written by every node (pages homed elsewhere) and
/// checksummed by every node: evictions write dirty pages home and drop clean ones.
fn big_array(d: &Dsm) -> R {
    const PAGES: usize = 1024;
    const PER_PAGE: usize = 4096 / 8;
    let (me, n) = (d.rank(), d.nodes());
    let a = d
        .alloc_collective(PAGES * 4096, Placement::Cyclic { block_pages: 1 })
        .map_err(e)? as *mut u64;
    let value = |i: usize| (i as u64).wrapping_mul(0x9e37_79b9) ^ 0x5555;
    for p in (0..PAGES).filter(|p| (p + 1) % n == me) {
        for k in 0..PER_PAGE {
            let i = p * PER_PAGE + k;
            store(a.wrapping_add(i), value(i));
        }
    }
    d.barrier().map_err(e)?;
    let (mut sum, mut want) = (0u64, 0u64);
    for i in 0..PAGES * PER_PAGE {
        sum = sum.wrapping_add(load(a.wrapping_add(i)));
        want = want.wrapping_add(value(i));
    }
    let evictions = d.stats().evictions;
    check(sum == want, || {
        format!("checksum {sum:#x}, expected {want:#x}")
    })?;
    check(evictions > 0, || {
        "the cache never evicted anything: the test does not test it".into()
    })?;
    d.barrier().map_err(e)
}

/// Non-collective allocation: every node mallocs blocks, hands them to the next node through
/// global memory, which writes them, checks them, and frees them; the owner then reuses them.
fn remote_free(d: &Dsm) -> R {
    const BLOCKS: usize = 10;
    let (me, n) = (d.rank(), d.nodes());
    let table = d
        .alloc_collective(n * BLOCKS * 8, Placement::Blocked)
        .map_err(e)? as *mut u64;
    let mine: Vec<*mut u8> = (0..BLOCKS)
        .map(|_| d.malloc(1000))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    for (i, p) in mine.iter().enumerate() {
        store(table.wrapping_add(me * BLOCKS + i), *p as u64);
    }
    d.barrier().map_err(e)?;
    let from = (me + n - 1) % n;
    for i in 0..BLOCKS {
        let p = load(table.wrapping_add(from * BLOCKS + i)) as *mut u64;
        store(p, 0xfeed_0000 + i as u64);
        check(load(p) == 0xfeed_0000 + i as u64, || {
            "a block did not keep its value".into()
        })?;
        d.free(p.cast()).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    let again = d.malloc(1000).map_err(e)?;
    check(again == mine[0], || {
        format!(
            "freed blocks were not reused: got {again:?}, first was {:?}",
            mine[0]
        )
    })?;
    check(d.free(16usize as *mut u8).is_err(), || {
        "freeing a wild pointer succeeded".into()
    })?;
    d.free(again).map_err(e)?;
    d.barrier().map_err(e)
}

/// A write outside global memory still crashes the process with a segmentation fault.
fn segv(d: &Dsm) -> R {
    d.barrier().map_err(e)?;
    if d.rank() == d.nodes() - 1 {
        let p = 16usize as *mut u64;
        // SAFETY: deliberately invalid: this scenario checks that a genuine bug still crashes.
        unsafe { std::ptr::write_volatile(p, 1) };
    }
    Ok(())
}

/// Several threads per node write their own byte of every page of a shared array at once
/// (concurrent faults on one page from threads of one node and from several nodes), then read
/// every byte at once after a barrier.
fn threads(d: &Dsm) -> R {
    const PAGES: usize = 64;
    const THREADS: usize = 4;
    let a = d
        .alloc_collective(PAGES * 4096, Placement::Cyclic { block_pages: 1 })
        .map_err(e)? as usize;
    let (me, nodes) = (d.rank(), d.nodes());
    let value = |round: usize, slot: usize, page: usize| (round * 31 + slot * 7 + page) as u8;
    for round in 0..5 {
        std::thread::scope(|s| {
            for t in 0..THREADS {
                s.spawn(move || {
                    for k in 0..PAGES {
                        let page = (k + t * PAGES / THREADS) % PAGES;
                        let slot = me * THREADS + t;
                        let p = (a + page * 4096 + slot) as *mut u8;
                        // SAFETY: byte `slot` of every page belongs to this thread alone in
                        // this phase; the allocation is live.
                        unsafe { std::ptr::write_volatile(p, value(round, slot, page)) };
                    }
                });
            }
        });
        d.barrier().map_err(e)?;
        let bad = std::thread::scope(|s| {
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    s.spawn(move || {
                        for k in 0..PAGES {
                            let page = (k + t * PAGES / THREADS) % PAGES;
                            for slot in 0..THREADS * nodes {
                                let p = (a + page * 4096 + slot) as *const u8;
                                // SAFETY: read after the barrier; nobody writes until the
                                // next barrier.
                                let v = unsafe { std::ptr::read_volatile(p) };
                                let want = value(round, slot, page);
                                if v != want {
                                    return Some(format!(
                                        "round {round}: page {page} slot {slot} is {v}, \
                                         expected {want}"
                                    ));
                                }
                            }
                        }
                        None
                    })
                })
                .collect();
            hs.into_iter().find_map(|h| h.join().ok().flatten())
        });
        if let Some(msg) = bad {
            return Err(msg);
        }
        d.barrier().map_err(e)?;
    }
    Ok(())
}

/// The process's mappings that start inside the global range. Only those count: threads of
/// the runtime or of the C library may map stacks or malloc arenas meanwhile, which says
/// nothing about the fault engine.
fn global_vmas(d: &Dsm) -> Result<usize, String> {
    let (base, size) = d.global_range();
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| {
            m.lines()
                .filter_map(|l| l.split('-').next())
                .filter_map(|a| usize::from_str_radix(a, 16).ok())
                .filter(|&a| a >= base && a < base + size)
                .count()
        })
        .map_err(|err| err.to_string())
}

/// Reading every other page of a large allocation: under userfaultfd the process's VMAs do
/// not grow with the pages (protection is per page-table entry); under `SIGSEGV` + `mprotect`
/// each page is a VMA of its own.
fn scattered(d: &Dsm) -> R {
    const PAGES: usize = 1024;
    let a = d
        .alloc_collective(PAGES * 4096, Placement::Blocked)
        .map_err(e)? as usize;
    let vmas = || global_vmas(d);
    let before = vmas()?;
    for page in (0..PAGES).step_by(2) {
        load((a + page * 4096) as *const u64);
    }
    let after = vmas()?;
    let engine = d.fault_engine();
    println!(
        "rank {}: {} engine: {before} VMAs in global memory before reading {} scattered pages, {after} after",
        d.rank(),
        engine.name(),
        PAGES / 2
    );
    match engine {
        FaultEngineKind::Userfaultfd => check(after < before + 16, || {
            format!("VMAs grew from {before} to {after} under userfaultfd")
        })?,
        _ => check(after >= before + PAGES / 2, || {
            format!("VMAs grew only from {before} to {after} under mprotect")
        })?,
    }
    d.barrier().map_err(e)
}

/// More scattered cached pages than `vm.max_map_count` allows VMAs: `mprotect` would fail with
/// ENOMEM long before the end; userfaultfd keeps the view one VMA. Run under the uffd engine.
fn many_scattered(d: &Dsm) -> R {
    let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .map_err(|err| err.to_string())?
        .trim()
        .parse::<usize>()
        .map_err(|err| err.to_string())?;
    // Every other page: one VMA per page (and one per gap) under mprotect.
    let pages = max + 2000;
    let a = d
        .alloc_collective(pages * 4096, Placement::Blocked)
        .map_err(e)? as usize;
    let vmas = || global_vmas(d);
    let before = vmas()?;
    let mut sum = 0u64;
    for page in (0..pages).step_by(2) {
        sum = sum.wrapping_add(load((a + page * 4096) as *const u64));
    }
    let after = vmas()?;
    println!(
        "rank {}: {} engine: {} pages cached (vm.max_map_count {max}), VMAs {before} -> {after}",
        d.rank(),
        d.fault_engine().name(),
        pages.div_ceil(2)
    );
    check(sum == 0, || format!("fresh memory summed to {sum}"))?;
    check(after < before + 16, || {
        format!("VMAs grew from {before} to {after}")
    })?;
    d.barrier().map_err(e)
}

/// A system call writes into global memory (`read(2)` from a pipe into an invalid page): the
/// userfaultfd engine with service threads serves the kernel's fault (when the file was opened
/// for kernel faults: as root), so the call succeeds and every node sees the bytes; other
/// engines make it fail with EFAULT (documented).
fn kernel_write(d: &Dsm) -> R {
    let n = d.nodes();
    let a = d
        .alloc_collective(n * 4096, Placement::Blocked)
        .map_err(e)? as usize;
    // Homed on the last node: a remote fetch for rank 0.
    let target = a + (n - 1) * 4096;
    let flag = a as *mut u64;
    // Root opens userfaultfd for kernel faults too; an unprivileged process may only get it
    // for user-mode faults (vm.unprivileged_userfaultfd=0), and then the call fails.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let must = d.fault_engine() == FaultEngineKind::Userfaultfd
        && std::env::var("DSM_FAULT_MODE").as_deref() == Ok("handoff")
        && root;
    let msg: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(3) ^ 0x5a).collect();
    if d.rank() == 0 {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills two descriptors into a valid 2-element array.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err("pipe".into());
        }
        // SAFETY: writing 64 initialised bytes into the pipe we just made.
        let w = unsafe { libc::write(fds[1], msg.as_ptr().cast(), msg.len()) };
        check(w == 64, || format!("write to the pipe: {w}"))?;
        // SAFETY: reading at most 64 bytes into a live global page; the runtime resolves the
        // kernel's fault (or the call fails with EFAULT).
        let r = unsafe { libc::read(fds[0], target as *mut libc::c_void, msg.len()) };
        let err = std::io::Error::last_os_error();
        // SAFETY: closing the two descriptors pipe(2) gave us.
        unsafe { libc::close(fds[0]) };
        // SAFETY: as above.
        unsafe { libc::close(fds[1]) };
        if must {
            check(r == 64, || {
                format!("read(2) into global memory returned {r} ({err})")
            })?;
        }
        println!(
            "rank 0: {} engine: read(2) into an invalid global page: {}",
            d.fault_engine().name(),
            if r == 64 {
                "served".to_string()
            } else {
                format!("{err}")
            }
        );
        store(flag, u64::from(r == 64));
    }
    d.barrier().map_err(e)?;
    if load(flag) == 1 {
        for (i, &want) in msg.iter().enumerate() {
            // SAFETY: read after the barrier; nobody writes the page any more.
            let v = unsafe { std::ptr::read_volatile((target + i) as *const u8) };
            check(v == want, || format!("byte {i} is {v}, expected {want}"))?;
        }
    }
    d.barrier().map_err(e)
}

/// A peer that vanishes mid-job: after a barrier the last rank kills itself with SIGKILL (what
/// `kill -9` does: no clean-up, its queue pairs and sockets simply go), and every other rank
/// goes on with remote atomics on a word homed there. Each survivor must get an error naming
/// the lost rank within `VANISH_BOUND`, and the next collective must fail too, at once: never a
/// hang, never a crash. Start it by hand (`DSM_RANK` ...), not under `dsmrun`, which stops the
/// survivors itself as soon as one rank dies.
fn vanish(d: &Dsm) -> R {
    const VANISH_BOUND: Duration = Duration::from_secs(60);
    let (me, nodes) = (d.rank(), d.nodes());
    check(nodes >= 2, || "vanish needs at least 2 nodes".into())?;
    let victim = nodes - 1;
    let base = d
        .alloc_collective(nodes * 4096, Placement::Blocked)
        .map_err(e)?;
    let word = base.wrapping_add(victim * 4096) as *const u64;
    d.atomic_fetch_add(word, 1).map_err(e)?;
    d.barrier().map_err(e)?;
    if me == victim {
        println!("rank {me}: vanishing (SIGKILL)");
        // SAFETY: raise(3) has no memory-safety preconditions; with SIGKILL it does not return.
        unsafe { libc::raise(libc::SIGKILL) };
        return Err("still alive after SIGKILL".into());
    }
    let t0 = Instant::now();
    let err = loop {
        if t0.elapsed() > VANISH_BOUND {
            return Err(format!(
                "remote atomics on rank {victim} still succeed {VANISH_BOUND:?} after it was killed"
            ));
        }
        if let Err(err) = d.atomic_fetch_add(word, 1) {
            break err;
        }
    };
    let detected = t0.elapsed();
    println!(
        "rank {me}: vanish: atomic failed after {:.2} s: {err}",
        detected.as_secs_f64()
    );
    let msg = err.to_string();
    check(msg.contains(&format!("rank {victim}")), || {
        format!("the error does not name rank {victim}: {msg}")
    })?;
    let t1 = Instant::now();
    let barrier = d.barrier();
    println!(
        "rank {me}: vanish: barrier after {:.2} s: {:?}",
        t1.elapsed().as_secs_f64(),
        barrier.as_ref().map_err(|e| e.to_string())
    );
    check(barrier.is_err(), || {
        "a barrier with a killed rank succeeded".into()
    })?;
    check(t1.elapsed() < VANISH_BOUND, || {
        format!("the barrier took {:?} to fail", t1.elapsed())
    })
}

/// Reports this node's memory use (`VmRSS`, `VmLck`, `VmPin` of `/proc/self/status`) after
/// start-up, and again after reading 8 MiB homed on the next node through faults, as
/// `memory:` lines: what registering the global range and keeping fetched pages costs under
/// each transport (scripts/test-softroce.sh measures it over verbs).
fn memory(d: &Dsm) -> R {
    let (me, nodes) = (d.rank(), d.nodes());
    let report = |when: &str| -> R {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|err| format!("reading /proc/self/status: {err}"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        println!(
            "memory: rank {me} transport {} global {} {when}: VmRSS {} kB VmLck {} kB VmPin {} kB",
            d.node().transport().capabilities().backend,
            std::env::var("DSM_GLOBAL_SIZE").unwrap_or_else(|_| "default".into()),
            field("VmRSS"),
            field("VmLck"),
            field("VmPin")
        );
        Ok(())
    };
    d.barrier().map_err(e)?;
    report("after start-up")?;
    let per = 8 << 20;
    let a = d
        .alloc_collective(per * nodes, Placement::Blocked)
        .map_err(e)? as usize;
    d.barrier().map_err(e)?;
    let from = (me + 1) % nodes;
    let mut sum = 0u64;
    for off in (0..per).step_by(4096) {
        sum = sum.wrapping_add(load((a + from * per + off) as *const u64));
    }
    check(sum == 0, || format!("fresh global memory reads {sum}"))?;
    d.barrier().map_err(e)?;
    report(&format!("after reading {} KiB from rank {from}", per >> 10))?;
    d.barrier().map_err(e)?;
    d.free_collective(a as *mut u8).map_err(e)
}

fn main() -> ExitCode {
    tests::scenario::main("dsm-litmus", &["vanish"], |d, scenario| match scenario {
        "mp-barrier" => mp_barrier(d),
        "mp-lock" => mp_lock(d),
        "counter-lock" => counter_lock(d),
        "counter-lock-threads" => counter_lock_threads(d),
        "false-sharing" => false_sharing(d),
        "atomics" => atomics(d),
        "store-buffering" => store_buffering(d),
        "first-touch" => first_touch(d),
        "segv" => segv(d),
        "big-array" => big_array(d),
        "remote-free" => remote_free(d),
        "threads" => threads(d),
        "scattered" => scattered(d),
        "kernel-write" => kernel_write(d),
        "many-scattered" => many_scattered(d),
        "vanish" => vanish(d),
        "memory" => memory(d),
        "prefetch-used" => streams::prefetch_used(d),
        "prefetch-wasted" => streams::prefetch_wasted(d),
        "home-stream" => streams::home_stream(d),
        other => Err(format!("unknown scenario {other:?}")),
    })
}
