//! A 2-D Jacobi stencil on shared memory: an `N x N` grid of f64 (one row is one 4 KiB page at
//! N = 512) split into blocks of rows, one per node; each sweep reads the neighbours' boundary
//! rows (remote faults) and ends with a barrier. Rank 0 checks the final grid against the same
//! sweeps done serially in private memory (bit for bit), then prints the time per sweep and
//! `RESULT {json}`. Used across network namespaces with added delay (`scripts/netns-test.sh`).
//!
//! `stencil_bench [N] [SWEEPS]` (defaults 512 and 20), under any launcher.

use std::process::ExitCode;
use std::time::Instant;

use dsm_core::{Dsm, Placement};
use transport::Transport;

fn initial(i: usize, j: usize, n: usize) -> f64 {
    if i == 0 || j == 0 || i == n - 1 || j == n - 1 {
        100.0 + (i + 2 * j) as f64
    } else {
        ((i * 31 + j * 17) % 23) as f64
    }
}

/// One sweep of rows `lo..hi` of `next` from `cur` (boundary rows and columns stay fixed).
fn sweep(cur: &[f64], next: &mut [f64], n: usize, lo: usize, hi: usize) {
    for i in lo..hi {
        let row = &mut next[(i - lo) * n..(i - lo + 1) * n];
        if i == 0 || i == n - 1 {
            row.copy_from_slice(&cur[i * n..(i + 1) * n]);
            continue;
        }
        row[0] = cur[i * n];
        row[n - 1] = cur[i * n + n - 1];
        for j in 1..n - 1 {
            row[j] = 0.25
                * (cur[(i - 1) * n + j]
                    + cur[(i + 1) * n + j]
                    + cur[i * n + j - 1]
                    + cur[i * n + j + 1]);
        }
    }
}

fn run(d: &Dsm, n: usize, sweeps: usize) -> Result<(), String> {
    let e = |err: dsm_core::Error| err.to_string();
    let (me, nodes) = (d.rank(), d.nodes());
    let grids = [
        d.alloc_vec::<f64>(n * n, Placement::Blocked).map_err(e)?,
        d.alloc_vec::<f64>(n * n, Placement::Blocked).map_err(e)?,
    ];
    let (lo, hi) = (me * n / nodes, (me + 1) * n / nodes);
    for g in &grids {
        // SAFETY: rows lo..hi are this node's alone until the barrier below.
        let mine = unsafe { g.slice_mut(lo * n..hi * n) };
        for i in lo..hi {
            for j in 0..n {
                mine[(i - lo) * n + j] = initial(i, j, n);
            }
        }
    }
    d.barrier().map_err(e)?;
    let start = Instant::now();
    for s in 0..sweeps {
        let (cur, next) = (&grids[s % 2], &grids[(s + 1) % 2]);
        {
            // SAFETY: during a sweep `cur` is only read (by every node) and rows lo..hi of
            // `next` are written by this node alone; the barrier separates the sweeps.
            let all = unsafe { cur.slice(0..n * n) };
            // SAFETY: as above.
            let mine = unsafe { next.slice_mut(lo * n..hi * n) };
            sweep(all, mine, n, lo, hi);
        }
        d.barrier().map_err(e)?;
    }
    let elapsed = start.elapsed();
    if me == 0 {
        let mut cur: Vec<f64> = (0..n * n).map(|x| initial(x / n, x % n, n)).collect();
        let mut next = cur.clone();
        let serial = Instant::now();
        for _ in 0..sweeps {
            sweep(&cur, &mut next, n, 0, n);
            std::mem::swap(&mut cur, &mut next);
        }
        let serial = serial.elapsed();
        // SAFETY: after the last barrier the grid is only read.
        let result = unsafe { grids[sweeps % 2].slice(0..n * n) };
        if let Some(x) = (0..n * n).find(|&x| result[x].to_bits() != cur[x].to_bits()) {
            return Err(format!(
                "cell ({}, {}) is {} but the serial sweeps give {}",
                x / n,
                x % n,
                result[x],
                cur[x]
            ));
        }
        let per = elapsed.as_secs_f64() * 1e3 / sweeps as f64;
        println!(
            "stencil_bench: {n} x {n}, {sweeps} sweeps on {nodes} nodes: {:.1} ms ({per:.2} ms per sweep); serial {:.1} ms; every cell matches",
            elapsed.as_secs_f64() * 1e3,
            serial.as_secs_f64() * 1e3
        );
        println!(
            "RESULT {}",
            serde_json::json!({
                "bench": "stencil",
                "n": n,
                "sweeps": sweeps,
                "nodes": nodes,
                "transport": d.node().transport().capabilities().backend.to_string(),
                "total_ms": elapsed.as_secs_f64() * 1e3,
                "per_sweep_ms": per,
                "serial_ms": serial.as_secs_f64() * 1e3,
                "floor_ms": serial.as_secs_f64() * 1e3,
            })
        );
    }
    d.barrier().map_err(e)?;
    Ok(())
}

fn main() -> ExitCode {
    dsm_core::logging::init();
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let n = args.next().unwrap_or(Ok(512));
    let sweeps = args.next().unwrap_or(Ok(20));
    let (Ok(n @ 4..=8192), Ok(sweeps @ 1..=100_000)) = (n, sweeps) else {
        eprintln!("usage: stencil_bench [N (4..8192)] [SWEEPS]");
        return ExitCode::from(2);
    };
    let d = match Dsm::init() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("stencil_bench: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&d, n, sweeps);
    let end = d.finalize();
    match (result, end) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(err), _) => {
            eprintln!("stencil_bench: {err}");
            ExitCode::FAILURE
        }
        (_, Err(err)) => {
            eprintln!("stencil_bench: finalize: {err}");
            ExitCode::FAILURE
        }
    }
}
