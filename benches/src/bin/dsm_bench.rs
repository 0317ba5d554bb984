//! Shared-memory benchmark: remote and local page-fault latency, VMAs after scattered faults,
//! sequential read bandwidth through faults, lock hand-off (bare, and carrying a counter beside
//! the lock), an uncontended lock homed on its taker and barrier latency (median, mean, 99th
//! percentile; and after each node changed 1, 16 or 256 pages), each beside its
//! floor measured in the same run (a raw transport read, the kernel's fault on anonymous
//! memory, the VMAs before, a raw TCP stream, a remote atomic round trip, a process-local
//! mutex, a message barrier).
//! The fault engine is the one `DSM_FAULT_ENGINE` picks.
//!
//! Run: `dsmrun -n 2 target/release/dsm_bench` (also with `-n 4` for the barrier). `--quick`
//! shrinks every measurement, to check that the program works; `--medium` is sized for an
//! emulated guest (scripts/test-softroce.sh runs it over soft-RoCE with a 128 MiB global range).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use benches::{commit, print_report, Better, Row, Stats};
use dsm_core::{collective, Dsm, GlobalLock, Placement};
use transport::{LocalSlice, Rank, Region, RegionDesc, Tag, Transport};

const PAGE: usize = 4096;
const PORT_TAG: Tag = Tag(11);

struct Plan {
    fault_pages: usize,
    seq_bytes: usize,
    lock_rounds: usize,
    barriers: usize,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A raw TCP stream of `total` bytes in 64 KiB writes from rank 1 to rank 0: the floor of
/// sequential reads.
fn raw_stream(d: &Dsm, total: usize) -> Result<f64, String> {
    let t = d.node().transport();
    let io = |e: std::io::Error| e.to_string();
    if d.rank() == 1 {
        let l = TcpListener::bind(SocketAddr::new(d.node().config().bind, 0)).map_err(io)?;
        let addr = l.local_addr().map_err(io)?.to_string();
        t.send(Rank(0), PORT_TAG, addr.as_bytes())
            .map_err(|e| e.to_string())?;
        let (mut s, _) = l.accept().map_err(io)?;
        let buf = vec![7u8; 64 << 10];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            s.write_all(&buf[..n]).map_err(io)?;
            left -= n;
        }
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).map_err(io)?;
        Ok(0.0)
    } else if d.rank() == 0 {
        let m = t
            .recv(Some(Rank(1)), Some(PORT_TAG), Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let addr: SocketAddr = String::from_utf8_lossy(&m.data)
            .parse()
            .map_err(|_| "bad address".to_string())?;
        let mut s = TcpStream::connect(addr).map_err(io)?;
        let mut buf = vec![0u8; 64 << 10];
        let t0 = Instant::now();
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len());
            s.read_exact(&mut buf[..n]).map_err(io)?;
            left -= n;
        }
        let secs = t0.elapsed().as_secs_f64();
        s.write_all(&[1]).map_err(io)?;
        Ok(total as f64 / secs)
    } else {
        Ok(0.0)
    }
}

/// Lines of `/proc/self/maps`: the process's VMAs.
fn vma_count() -> Result<usize, String> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .map_err(|e| format!("reading /proc/self/maps: {e}"))
}

/// Times the kernel's own fault on each of `pages` pages of fresh anonymous memory (the floor
/// of a local fault).
fn anonymous_faults(pages: usize) -> Result<Vec<Duration>, String> {
    let len = pages * PAGE;
    // SAFETY: a private anonymous mapping at an address of the kernel's choosing; unmapped
    // below, and only touched inside it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    let base = p as *mut u8;
    let mut t = Vec::with_capacity(pages);
    for i in 0..pages {
        let t0 = Instant::now();
        // SAFETY: inside the mapping made above; a write, so the kernel allocates the page.
        unsafe { std::ptr::write_volatile(base.wrapping_add(i * PAGE), 1) };
        t.push(t0.elapsed());
    }
    // SAFETY: unmapping exactly the mapping made above, which nothing refers to any more.
    unsafe { libc::munmap(p, len) };
    Ok(t)
}

fn run(d: &Dsm, plan: &Plan) -> Result<Vec<Row>, String> {
    let e = |err: dsm_core::Error| err.to_string();
    let te = |err: transport::Error| err.to_string();
    let t = d.node().transport();
    let me = d.rank();
    let mut rows = Vec::new();
    // The median remote read fault of phase 1 (rank 0), beside which a prefetched page's first
    // touch is reported.
    let mut remote_fault = Duration::ZERO;

    // Floor of a fault: a raw transport read of 4 KiB from rank 1's registered memory.
    let raw = Region::allocate(PAGE * 64).map_err(te)?;
    let raw_desc = t.register(&raw).map_err(te)?;
    let descs = collective::all_gather(t, &raw_desc.to_bytes(), None).map_err(e)?;
    let peer = RegionDesc::from_bytes(&descs[1 % d.nodes()]).map_err(te)?;

    // 1. Remote read faults in random page order (so that prefetch stays out of it).
    let n = plan.fault_pages;
    let arr = d
        .alloc_collective(2 * n * PAGE, Placement::Blocked)
        .map_err(e)?;
    d.barrier().map_err(e)?;
    if me == 0 {
        let mut order: Vec<usize> = (n..2 * n).collect();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in (1..order.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut faults = Vec::with_capacity(n);
        for p in order {
            let t0 = Instant::now();
            // SAFETY: the page lies in a live allocation that nobody writes during this phase.
            let _ = unsafe { std::ptr::read_volatile(arr.wrapping_add(p * PAGE)) };
            faults.push(t0.elapsed());
        }
        let local = LocalSlice::new(&raw, 0, PAGE).map_err(te)?;
        let mut reads = Vec::with_capacity(n);
        for i in 0..n {
            let remote = peer.slice(((i % 64) * PAGE) as u64, PAGE).map_err(te)?;
            let t0 = Instant::now();
            t.read(remote, local.clone()).map_err(te)?;
            reads.push(t0.elapsed());
        }
        // What a fetch asks of the transport, without the fault engine: the reader
        // registration (an 8-byte fetch-and-add), the directory entry (16 bytes) and the page,
        // as one batch, as `Inner::fetch` posts them.
        let entry = LocalSlice::new(&raw, PAGE, 16).map_err(te)?;
        let word = peer.word((63 * PAGE) as u64).map_err(te)?;
        let mut batches = Vec::with_capacity(n);
        for i in 0..n {
            let ops = vec![
                transport::Op::FetchAdd {
                    remote: word,
                    add: 0,
                },
                transport::Op::Read {
                    remote: peer.slice(((i % 63) * PAGE) as u64, 16).map_err(te)?,
                    local: entry.clone(),
                },
                transport::Op::Read {
                    remote: peer.slice(((i % 63) * PAGE) as u64, PAGE).map_err(te)?,
                    local: local.clone(),
                },
            ];
            let t0 = Instant::now();
            transport::wait_all(&t.post_batch(ops).map_err(te)?).map_err(te)?;
            batches.push(t0.elapsed());
        }
        let (f, r) = (Stats::of(&mut faults), Stats::of(&mut reads));
        remote_fault = f.median;
        let b = Stats::of(&mut batches);
        rows.push(Row {
            metric: "remote 4 KiB read fault (median)".into(),
            value: us(f.median),
            floor: us(r.median),
            unit: "us",
            better: Better::Lower,
            target: Some(1.5),
        });
        rows.push(Row {
            metric: "remote fault vs its transport ops".into(),
            value: us(f.median),
            floor: us(b.median),
            unit: "us",
            better: Better::Lower,
            target: None,
        });
        // Address-space cost: VMAs of the process after reading every other page of n (the
        // first half, homed here), against the count before. `mprotect` splits one VMA per
        // protected run; userfaultfd splits none.
        // These are local faults (the pages are homed here): the engine's own cost, against
        // the kernel's fault on fresh anonymous memory.
        let before = vma_count()?;
        let mut local = Vec::with_capacity(n / 2);
        for p in (0..n).step_by(2) {
            let t0 = Instant::now();
            // SAFETY: as above: a live allocation nobody writes now.
            let _ = unsafe { std::ptr::read_volatile(arr.wrapping_add(p * PAGE)) };
            local.push(t0.elapsed());
        }
        let mut kernel = anonymous_faults(n.div_ceil(2))?;
        let (l, k) = (Stats::of(&mut local), Stats::of(&mut kernel));
        rows.push(Row {
            metric: "local 4 KiB read fault (median)".into(),
            value: us(l.median),
            floor: us(k.median),
            unit: "us",
            better: Better::Lower,
            target: None,
        });
        rows.push(Row {
            metric: format!("VMAs after reading {} scattered pages", n.div_ceil(2)),
            value: vma_count()? as f64,
            floor: before as f64,
            unit: "VMAs",
            better: Better::Lower,
            target: None,
        });
    }
    d.barrier().map_err(e)?;

    // 2. Sequential read through faults of memory homed on the other node.
    let seq = d
        .alloc_collective(2 * plan.seq_bytes, Placement::Blocked)
        .map_err(e)?;
    d.barrier().map_err(e)?;
    let floor = raw_stream(d, plan.seq_bytes)?;
    if me == 0 {
        let base = seq.wrapping_add(plan.seq_bytes);
        let pages = plan.seq_bytes / PAGE;
        let mut touches = Vec::with_capacity(pages);
        let before = d.stats();
        let t0 = Instant::now();
        let mut sum = 0u64;
        for p in 0..pages {
            let t1 = Instant::now();
            // SAFETY: as above: a live allocation nobody writes now.
            sum = sum.wrapping_add(
                unsafe { std::ptr::read_volatile(base.wrapping_add(p * PAGE)) } as u64,
            );
            touches.push(t1.elapsed());
        }
        let secs = t0.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        let after = d.stats();
        let mib = plan.seq_bytes >> 20;
        rows.push(Row {
            metric: format!("sequential read {mib} MiB via faults"),
            value: plan.seq_bytes as f64 / secs / 1e9,
            floor: floor / 1e9,
            unit: "GB/s",
            better: Better::Higher,
            target: Some(0.4),
        });
        // Most pages arrive by prefetch and are mapped at their first touch by a local fault
        // (no message): its cost, beside a remote fault's.
        let touch = Stats::of(&mut touches);
        rows.push(Row {
            metric: "sequential read: page touch (median)".into(),
            value: us(touch.median),
            floor: us(remote_fault),
            unit: "us",
            better: Better::Lower,
            target: None,
        });
        let fetched = after.pages_fetched - before.pages_fetched;
        let prefetched = after.prefetched - before.prefetched;
        rows.push(Row {
            metric: "sequential read: pages by remote fault".into(),
            value: fetched.saturating_sub(prefetched) as f64,
            floor: pages as f64,
            unit: "pages",
            better: Better::Lower,
            target: None,
        });
    }
    d.barrier().map_err(e)?;
    d.free_collective(seq).map_err(e)?;

    // 3. Lock hand-off between two nodes, against a remote atomic round trip.
    // Two pages, blocked: the second (the lock's) is homed on rank 1, so rank 0's atomics on it
    // are remote round trips.
    let lk = d
        .alloc_collective(2 * PAGE, Placement::Blocked)
        .map_err(e)?
        .wrapping_add(PAGE);
    let l = lk as *const GlobalLock;
    let word = lk.wrapping_add(64) as *const u64;
    if me == 0 {
        d.lock_init(l).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    let mut atomics = Vec::with_capacity(plan.lock_rounds);
    for _ in 0..plan.lock_rounds {
        let t0 = Instant::now();
        d.atomic_fetch_add(word, 1).map_err(e)?;
        atomics.push(t0.elapsed());
    }
    d.barrier().map_err(e)?;
    let t0 = Instant::now();
    if me < 2 {
        for _ in 0..plan.lock_rounds {
            d.lock(l).map_err(e)?;
            d.unlock(l).map_err(e)?;
        }
    }
    let contended = t0.elapsed();
    d.barrier().map_err(e)?;
    // The same, each holder adding one to a counter beside the lock (in the lock's page, homed
    // on rank 1): the hand-off carries the data it protects.
    let counter = lk.wrapping_add(128) as *mut u64;
    let t0 = Instant::now();
    if me < 2 {
        for _ in 0..plan.lock_rounds {
            d.lock(l).map_err(e)?;
            // SAFETY: the counter is global memory of this allocation, written only under `l`.
            let v = unsafe { counter.read_volatile() };
            // SAFETY: as above.
            unsafe { counter.write_volatile(v + 1) };
            d.unlock(l).map_err(e)?;
        }
    }
    let with_data = t0.elapsed();
    d.barrier().map_err(e)?;
    if me == 0 {
        // SAFETY: as above; every holder released before the barrier.
        let total = unsafe { counter.read_volatile() };
        let want = (plan.lock_rounds * d.nodes().min(2)) as u64;
        if total != want {
            return Err(format!(
                "the counter under the lock is {total}, expected {want}"
            ));
        }
        let rtt = Stats::of(&mut atomics).median;
        for (metric, time) in [
            ("lock hand-off (2 nodes, contended)", contended),
            (
                "lock hand-off with a counter beside the lock (2 nodes, contended)",
                with_data,
            ),
        ] {
            rows.push(Row {
                metric: metric.into(),
                value: us(time / (2 * plan.lock_rounds) as u32),
                floor: us(rtt),
                unit: "us",
                better: Better::Lower,
                target: Some(2.0),
            });
        }
    }

    // An uncontended lock homed on its taker (page 0 of the allocation, homed on rank 0),
    // lock and unlock, against a process-local mutex taken and dropped as often.
    if me == 0 {
        let own = (lk.wrapping_sub(PAGE)) as *const GlobalLock;
        d.lock_init(own).map_err(e)?;
        let rounds = plan.lock_rounds * 10;
        let t0 = Instant::now();
        for _ in 0..rounds {
            d.lock(own).map_err(e)?;
            d.unlock(own).map_err(e)?;
        }
        let ours = t0.elapsed() / rounds as u32;
        let m = std::sync::Mutex::new(0u64);
        let t0 = Instant::now();
        for _ in 0..rounds {
            *std::hint::black_box(&m)
                .lock()
                .unwrap_or_else(|p| p.into_inner()) += 1;
        }
        let floor = t0.elapsed() / rounds as u32;
        rows.push(Row {
            metric: "uncontended lock homed here, lock + unlock (issue target: under 1 us)".into(),
            value: us(ours),
            floor: us(floor),
            unit: "us",
            better: Better::Lower,
            target: None,
        });
    }
    d.barrier().map_err(e)?;

    // 4. Barrier latency, against a plain message barrier: median, mean and 99th percentile
    // (a program pays the mean).
    let mut plain = Vec::with_capacity(plan.barriers);
    let mut full = Vec::with_capacity(plan.barriers);
    for _ in 0..plan.barriers {
        let t0 = Instant::now();
        collective::barrier(t, None).map_err(e)?;
        plain.push(t0.elapsed());
        let t0 = Instant::now();
        d.barrier().map_err(e)?;
        full.push(t0.elapsed());
    }
    let (p, f) = (Stats::of(&mut plain), Stats::of(&mut full));
    if me == 0 {
        let n = d.nodes();
        for (what, value, floor, target) in [
            ("median", f.median, p.median, Some(1.2)),
            ("mean", f.mean, p.mean, None),
            ("99th percentile", f.p99, p.p99, None),
        ] {
            rows.push(Row {
                metric: format!("barrier, {n} nodes, no page changed ({what})"),
                value: us(value),
                floor: us(floor),
                unit: "us",
                better: Better::Lower,
                target,
            });
        }
    }
    rows.extend(changed_barriers(d, plan, f.median)?);
    Ok(rows)
}

/// Pages each node changes before a barrier, in [`changed_barriers`].
const CHANGED: [usize; 3] = [1, 16, 256];

/// A barrier after each node changed `k` pages homed on the next node (one word each, written
/// before the timing starts), for each `k` of [`CHANGED`], against the barrier after which no
/// page changed (`unchanged`, its median): its cost should grow with `k`. Rows on rank 0.
fn changed_barriers(d: &Dsm, plan: &Plan, unchanged: Duration) -> Result<Vec<Row>, String> {
    let e = |x: dsm_core::Error| x.to_string();
    let (me, n) = (d.rank(), d.nodes());
    let most = CHANGED[CHANGED.len() - 1];
    // Block i homed on node i; this node writes the block of the next one.
    let base = d
        .alloc_collective(n * most * PAGE, Placement::Blocked)
        .map_err(e)?;
    let mine = base.wrapping_add(((me + 1) % n) * most * PAGE);
    let mut rows = Vec::new();
    d.barrier().map_err(e)?;
    for k in CHANGED {
        let rounds = (plan.barriers * 4 / k).clamp(5, plan.barriers);
        let mut took = Vec::with_capacity(rounds);
        for round in 0..rounds {
            for page in 0..k {
                let w = mine.wrapping_add(page * PAGE) as *mut u64;
                // SAFETY: inside this node's part of the live allocation, which only this
                // node writes (and nobody reads) between barriers.
                unsafe { w.write_volatile(round as u64) };
            }
            let t0 = Instant::now();
            d.barrier().map_err(e)?;
            took.push(t0.elapsed());
        }
        let s = Stats::of(&mut took);
        if me == 0 {
            rows.push(Row {
                metric: format!("barrier, {n} nodes, after each changed {k} pages (median)"),
                value: us(s.median),
                floor: us(unchanged),
                unit: "us",
                better: Better::Lower,
                target: None,
            });
        }
    }
    d.barrier().map_err(e)?;
    d.free_collective(base).map_err(e)?;
    Ok(rows)
}

fn main() -> ExitCode {
    dsm_core::logging::init();
    let quick = std::env::args().any(|a| a == "--quick");
    let medium = std::env::args().any(|a| a == "--medium");
    let plan = if medium {
        Plan {
            fault_pages: 500,
            seq_bytes: 16 << 20,
            lock_rounds: 200,
            barriers: 200,
        }
    } else if quick {
        Plan {
            fault_pages: 64,
            seq_bytes: 4 << 20,
            lock_rounds: 20,
            barriers: 20,
        }
    } else {
        Plan {
            fault_pages: 2000,
            seq_bytes: 256 << 20,
            lock_rounds: 500,
            barriers: 500,
        }
    };
    let d = match Dsm::init() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("dsm_bench: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    if d.nodes() < 2 {
        eprintln!("dsm_bench: run it with at least 2 nodes (dsmrun -n 2)");
        return ExitCode::from(2);
    }
    let r = run(&d, &plan);
    if let Ok(rows) = &r {
        if d.rank() == 0 {
            let context = [
                ("benchmark", "dsm".to_string()),
                (
                    "transport",
                    d.node().transport().capabilities().backend.to_string(),
                ),
                ("nodes", d.nodes().to_string()),
                ("page_size", PAGE.to_string()),
                ("fault_engine", d.fault_engine().name().to_string()),
                (
                    "fault_mode",
                    std::env::var("DSM_FAULT_MODE").unwrap_or_else(|_| "inline".into()),
                ),
                ("commit", commit()),
            ];
            print_report(&context, rows);
        }
    }
    match r.and_then(|_| d.finalize().map_err(|e| e.to_string())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dsm_bench: {err}");
            ExitCode::FAILURE
        }
    }
}
