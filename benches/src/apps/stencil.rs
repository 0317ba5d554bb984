//! Red-black successive over-relaxation of a Poisson problem on an `n x n` grid (fixed
//! boundary), blocked by rows: each iteration updates the red cells, barrier, the black cells,
//! barrier; every tenth iteration each participant also writes its part of the residual to its
//! own page of global memory, and after a barrier every participant sums them (in rank order),
//! as a solver testing convergence does. Two to three barriers an iteration: an iteration of
//! the default size is a few milliseconds of work on one thread.

use std::cell::Cell;
use std::time::Instant;

use dsm_core::Placement;

use super::{block, unit, Answer, Outcome, Shared, Team};

/// `n` (with [`iterations`]) where one thread takes about half a second.
pub const DEFAULT: usize = 512;
/// `n` for a check of a few seconds.
pub const QUICK: usize = 128;

/// The number of iterations for a grid of side `n`.
pub fn iterations(n: usize) -> usize {
    if n >= 512 {
        500
    } else {
        100
    }
}

const OMEGA: f64 = 1.5;
/// f64 words a participant's residual slot takes: one page.
const SLOT: usize = 512;

/// Updates the cells of `colour` (0 red, 1 black: `(i + j) % 2`) of rows `lo..hi` (interior
/// only) of the grid `u` whose rows `lo - 1 .. hi + 1` are in `g` starting at row `first`;
/// returns the sum of squared changes.
fn relax(
    g: &[Cell<f64>],
    f: &[f64],
    n: usize,
    first: usize,
    lo: usize,
    hi: usize,
    colour: usize,
) -> f64 {
    let mut change = 0.0;
    let h2 = 1.0 / ((n - 1) * (n - 1)) as f64;
    for i in lo.max(1)..hi.min(n - 1) {
        let r = (i - first) * n;
        let j0 = 1 + (i + 1 + colour) % 2;
        for j in (j0..n - 1).step_by(2) {
            let c = r + j;
            let around = g[c - n].get() + g[c + n].get() + g[c - 1].get() + g[c + 1].get();
            let d = 0.25 * (around - h2 * f[i * n + j]) - g[c].get();
            g[c].set(g[c].get() + OMEGA * d);
            change += d * d;
        }
    }
    change
}

/// Runs the solver on an `n x n` grid for [`iterations`]`(n)` iterations.
///
/// # Panics
/// When `n < 4`.
pub fn run<T: Team>(t: &T, n: usize) -> Outcome {
    assert!(n >= 4);
    let (me, size) = (t.rank(), t.size());
    let (lo, hi) = block(n, me, size);
    let u: Shared<f64> = t.alloc(n * n, Placement::Blocked);
    let residual: Shared<f64> = t.alloc(SLOT * size, Placement::Cyclic { block_pages: 1 });
    // The source term is private and the same everywhere.
    let f: Vec<f64> = (0..n * n).map(|x| unit(x as u64) - 0.5).collect();
    {
        // SAFETY: rows lo..hi are this participant's until the barrier.
        let mine = unsafe { u.slice_mut(lo * n..hi * n) };
        for (x, v) in mine.iter_mut().enumerate() {
            let (i, j) = (lo + x / n, x % n);
            if i == 0 || j == 0 || i == n - 1 || j == n - 1 {
                *v = (i + j) as f64 / n as f64;
            }
        }
    }
    t.barrier();
    let start = Instant::now();
    let mut sums = Vec::new();
    for it in 0..iterations(n) {
        let mut change = 0.0;
        for colour in 0..2 {
            let first = lo.saturating_sub(1);
            let last = (hi + 1).min(n);
            // SAFETY: this participant writes only cells of `colour` in its own rows; the
            // neighbours' rows first and last - 1, when not its own, are only read (their cells
            // of the other colour), and their owners write only cells of `colour` there.
            let g = unsafe { u.cells(first * n..last * n) };
            change += relax(g, &f, n, first, lo, hi, colour);
            t.barrier();
        }
        if it % 10 == 9 {
            // SAFETY: slot `me` is this participant's until the barrier.
            unsafe { residual.write(me * SLOT, change) };
            t.barrier();
            // SAFETY: the slots are only read until the next write, two barriers later.
            let r = unsafe { residual.slice(0..SLOT * size) };
            sums.push((0..size).map(|p| r[p * SLOT]).sum::<f64>().sqrt());
        }
    }
    let time = start.elapsed();
    let answer = if me == 0 {
        // SAFETY: after the last barrier the grid is only read.
        Answer::Float(unsafe { u.to_vec() })
    } else {
        Answer::Float(Vec::new())
    };
    t.barrier();
    assert!(sums.iter().all(|s| s.is_finite()), "the solver diverged");
    Outcome { time, answer }
}
