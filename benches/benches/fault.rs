//! Micro-benchmarks of a page fault's round trip through the runtime, on this machine: from the
//! access that faults, through the fault engine and the protocol, to the access completing.
//!
//! - `fault/home first touch`: the first read of a page this node is home of: the engine and the
//!   protocol's local work (the directory registration, the protection change), no page moves;
//! - `fault/remote read`: a read of a page homed on the other node, fetched over tcp on
//!   loopback; the cache is kept small (`DSM_CACHE_SIZE=256K`) and the pages are visited in a
//!   shuffled order, so that every visit faults (nothing prefetched, the copy long evicted).
//!
//! A job of one node never faults (it is home of every page, opened once), so this program is a
//! job of two nodes: started by `cargo bench`, it launches itself twice through the launcher
//! (`dsm-launcher`), over tcp; rank 0 measures while rank 1, a passive home, waits in a
//! barrier. The fault engine is the one `DSM_FAULT_ENGINE` picks (rank 0 prints it).
//!
//! A first touch can be measured once per page: the home benchmark has a pool of
//! `HOME_PAGES` fresh pages, and when criterion asks for more iterations than are left it
//! times the pages that are left and scales that time to the iterations asked (saying so once
//! on stderr). Run: `cargo bench -p benches --bench fault` (or `scripts/bench.sh --micro`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use criterion::Criterion;
use dsm_core::{Dsm, Placement};
use dsm_launcher::{launch, LaunchOptions};

const PAGE: usize = dsm_core::space::PAGE;
/// Fresh pages homed on rank 0 (512 MiB of virtual memory, used as they are touched).
const HOME_PAGES: usize = 1 << 17;
/// Pages homed on rank 1 that rank 0 cycles through (16 MiB, 64 times the cache).
const REMOTE_PAGES: usize = 4096;

/// The pages `0..n` in a fixed shuffled order (xorshift), so that no run looks sequential to
/// the prefetcher.
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// Reads the first byte of page `p` of the allocation at `base`.
fn touch(base: *mut u8, p: usize) {
    // SAFETY: `p` is a page of the live allocation at `base`, which no node writes while the
    // benchmarks run; a read of global memory is what the runtime exists to serve.
    let _ = unsafe { std::ptr::read_volatile(base.wrapping_add(p * PAGE)) };
}

/// Rank 0: the benchmarks.
fn measure(d: &Dsm, home: *mut u8, remote: *mut u8) {
    println!(
        "fault benchmarks: {} nodes, tcp on loopback, fault engine {:?}, page {PAGE} B, commit {}",
        d.nodes(),
        d.fault_engine(),
        benches::commit()
    );
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_millis(500))
        .sample_size(10)
        .configure_from_args();
    let mut g = c.benchmark_group("fault");

    let fresh = shuffled(HOME_PAGES);
    let mut next = 0;
    let (mut spent, mut timed) = (Duration::ZERO, 0u64);
    let mut warned = false;
    g.bench_function("home first touch", |b| {
        b.iter_custom(|iters| {
            let n = (iters as usize).min(HOME_PAGES - next);
            let t0 = Instant::now();
            for &p in &fresh[next..next + n] {
                touch(home, p);
            }
            let took = t0.elapsed();
            next += n;
            (spent, timed) = (spent + took, timed + n as u64);
            if n as u64 == iters {
                return took;
            }
            if !warned {
                eprintln!(
                    "fault/home first touch: the {HOME_PAGES} fresh pages are used up; \
                     the remaining iterations are scaled from the {timed} timed"
                );
                warned = true;
            }
            spent.mul_f64(iters as f64 / timed.max(1) as f64)
        })
    });

    let order = shuffled(REMOTE_PAGES);
    let mut i = 0;
    g.bench_function("remote read", |b| {
        b.iter(|| {
            touch(remote, REMOTE_PAGES + order[i % REMOTE_PAGES]);
            i += 1;
        })
    });
    g.finish();
    c.final_summary();
}

/// One rank of the job: both allocate, rank 0 measures, both leave together.
fn rank() -> Result<(), String> {
    let e = |err: dsm_core::Error| err.to_string();
    let d = Dsm::init().map_err(e)?;
    // Blocked over two nodes: the first half of each allocation is homed on rank 0, the second
    // on rank 1.
    let home = d
        .alloc_collective(2 * HOME_PAGES * PAGE, Placement::Blocked)
        .map_err(e)?;
    let remote = d
        .alloc_collective(2 * REMOTE_PAGES * PAGE, Placement::Blocked)
        .map_err(e)?;
    d.barrier().map_err(e)?;
    if d.rank() == 0 {
        measure(&d, home, remote);
    }
    d.barrier().map_err(e)?;
    d.finalize().map_err(e)
}

/// Started by `cargo bench`: runs this program as a job of two nodes and reports its end.
fn drive() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(err) => {
            eprintln!("fault bench: finding this program: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut o = LaunchOptions::new(2, exe);
    o.args = std::env::args_os().skip(1).collect();
    o.transport = Some("tcp".into());
    o.timeout = Some(Duration::from_secs(600));
    for (k, v) in [("DSM_GLOBAL_SIZE", "8G"), ("DSM_CACHE_SIZE", "256K")] {
        if std::env::var_os(k).is_none() {
            o.env.push((k.into(), v.into()));
        }
    }
    match launch(o) {
        Ok(job) => {
            let r = job.wait();
            if let Some(why) = &r.failure {
                eprintln!("fault bench: {why}");
            }
            ExitCode::from(r.exit_code.clamp(0, 255) as u8)
        }
        Err(err) => {
            eprintln!("fault bench: launching the job: {err}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    if std::env::var_os("DSM_RANK").is_none() {
        return drive();
    }
    dsm_core::logging::init();
    match rank() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("fault bench: {err}");
            ExitCode::FAILURE
        }
    }
}
