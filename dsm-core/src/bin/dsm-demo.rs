//! The main job: a dense matrix multiply `C = A × B` in global memory, shared by every node
//! through ordinary loads and stores. Each node fills its block of rows of A and B, computes its
//! block of rows of C (reading all of B, most of it homed elsewhere), and rank 0 checks every
//! element of C against a serial computation in private memory, then prints timings and
//! statistics. Run it with `dsmrun -n 4 dsm-demo [N]` (what `scripts/run.sh` does).

use std::process::ExitCode;
use std::time::Instant;

use dsm_core::{Dsm, Placement};
use transport::Transport;

fn a_at(i: usize, k: usize) -> f64 {
    ((i * 7 + k * 3) % 13) as f64 - 6.0
}

fn b_at(k: usize, j: usize) -> f64 {
    ((k * 5 + j * 11) % 17) as f64 * 0.5 - 4.0
}

/// `c[rows] = a[rows] × b`, in i-k-j order so the inner loop streams rows of B and C.
fn multiply(a: &[f64], b: &[f64], c: &mut [f64], n: usize) {
    for (ci, ai) in c.chunks_exact_mut(n).zip(a.chunks_exact(n)) {
        ci.fill(0.0);
        for (k, &aik) in ai.iter().enumerate() {
            let bk = &b[k * n..(k + 1) * n];
            for (cij, bkj) in ci.iter_mut().zip(bk) {
                *cij += aik * bkj;
            }
        }
    }
}

fn run(d: &Dsm, n: usize) -> Result<(), String> {
    let e = |err: dsm_core::Error| err.to_string();
    let (me, nodes) = (d.rank(), d.nodes());
    let say = |msg: String| {
        if me == 0 {
            println!("{msg}");
        }
    };
    say(format!(
        "dsm-demo: C = A x B, {n} x {n} f64, on {nodes} node(s) ({})",
        d.node().transport().capabilities().backend
    ));
    let a = d.alloc_vec::<f64>(n * n, Placement::Blocked).map_err(e)?;
    let b = d.alloc_vec::<f64>(n * n, Placement::Blocked).map_err(e)?;
    let c = d.alloc_vec::<f64>(n * n, Placement::Blocked).map_err(e)?;
    let (lo, hi) = (me * n / nodes, (me + 1) * n / nodes);
    let start = Instant::now();

    // Fill my rows of A and B (pages mostly homed here: blocked placement).
    {
        // SAFETY: rows lo..hi of A belong to this node until the barrier; nobody else touches
        // them, and no other slice of them exists.
        let my_a = unsafe { a.slice_mut(lo * n..hi * n) };
        // SAFETY: the same for rows lo..hi of B.
        let my_b = unsafe { b.slice_mut(lo * n..hi * n) };
        for i in lo..hi {
            for k in 0..n {
                my_a[(i - lo) * n + k] = a_at(i, k);
                my_b[(i - lo) * n + k] = b_at(i, k);
            }
        }
    }
    d.barrier().map_err(e)?;
    let filled = start.elapsed();
    say(format!(
        "  filled A and B in {:.1} ms",
        filled.as_secs_f64() * 1e3
    ));

    // Compute my rows of C, reading all of B.
    let t0 = Instant::now();
    {
        // SAFETY: after the barrier, B is only read by every node until the next barrier.
        let all_b = unsafe { b.slice(0..n * n) };
        // SAFETY: the same for A.
        let my_a = unsafe { a.slice(lo * n..hi * n) };
        // SAFETY: see above: rows lo..hi of C are this node's alone.
        let my_c = unsafe { c.slice_mut(lo * n..hi * n) };
        multiply(my_a, all_b, my_c, n);
    }
    let computed = t0.elapsed();
    println!(
        "  rank {me}: rows {lo}..{hi} in {:.1} ms",
        computed.as_secs_f64() * 1e3
    );
    d.barrier().map_err(e)?;
    let parallel = start.elapsed();

    if me == 0 {
        // The same product, serially, in private memory.
        let ts = Instant::now();
        let pa: Vec<f64> = (0..n * n).map(|x| a_at(x / n, x % n)).collect();
        let pb: Vec<f64> = (0..n * n).map(|x| b_at(x / n, x % n)).collect();
        let mut pc = vec![0.0; n * n];
        multiply(&pa, &pb, &mut pc, n);
        let serial = ts.elapsed();
        // SAFETY: after the barrier C is only read until the job ends.
        let all_c = unsafe { c.slice(0..n * n) };
        if let Some(x) = (0..n * n).find(|&x| all_c[x] != pc[x]) {
            return Err(format!(
                "C[{}][{}] = {} but the serial product has {}",
                x / n,
                x % n,
                all_c[x],
                pc[x]
            ));
        }
        println!(
            "  parallel {:.1} ms on {nodes} node(s) (fill + multiply + 2 barriers), serial {:.1} ms: {:.2}x",
            parallel.as_secs_f64() * 1e3,
            serial.as_secs_f64() * 1e3,
            serial.as_secs_f64() / parallel.as_secs_f64()
        );
        println!("  all {} elements of C match the serial product", n * n);
        let s = d.stats();
        println!(
            "  rank 0: {} read faults, {} write faults, {} pages fetched, {} diffs ({} KiB home), {} invalidations",
            s.read_faults,
            s.write_faults,
            s.pages_fetched,
            s.diffs,
            s.bytes_written_home / 1024,
            s.invalidations
        );
    }
    d.barrier().map_err(e)?;
    say("dsm-demo: done, every check passed".into());
    Ok(())
}

fn main() -> ExitCode {
    dsm_core::logging::init();
    let n = match std::env::args().nth(1).map(|s| s.parse::<usize>()) {
        None => 512,
        Some(Ok(n)) if (1..=8192).contains(&n) => n,
        Some(_) => {
            eprintln!("usage: dsm-demo [N]   (matrix size, 1 to 8192; default 512)");
            return ExitCode::from(2);
        }
    };
    let d = match Dsm::init() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("dsm-demo: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let r = run(&d, n);
    match r.and_then(|()| d.finalize().map_err(|e| e.to_string())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("dsm-demo: {err}");
            ExitCode::FAILURE
        }
    }
}
