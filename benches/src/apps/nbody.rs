//! An O(n²) gravitational n-body code in two dimensions with a lock per body, after the
//! molecular-dynamics codes of the SPLASH suites: each step every participant computes the
//! interactions of its bodies (cyclically assigned) with every later body into private sums,
//! then adds each body's sum into the shared force array under that body's lock (n lock hand-offs
//! per participant per step); barrier; each participant moves its block of bodies; barrier.

use std::time::Instant;

use dsm_core::Placement;

use super::{block, unit, Answer, Outcome, Shared, Team};

/// Bodies where one thread takes about half a second (with [`steps`]).
pub const DEFAULT: usize = 4096;
/// Bodies for a check of a few seconds.
pub const QUICK: usize = 256;

/// The number of time steps for `n` bodies.
pub fn steps(n: usize) -> usize {
    if n >= 4096 {
        5
    } else {
        10
    }
}

type V = [f64; 2];
const DT: f64 = 1e-3;
const SOFTENING: f64 = 1e-2;

fn mass(i: usize) -> f64 {
    0.5 + unit(3 * i as u64 + 2)
}

/// Runs `n` bodies for [`steps`]`(n)` steps.
pub fn run<T: Team>(t: &T, n: usize) -> Outcome {
    let (me, size) = (t.rank(), t.size());
    let (lo, hi) = block(n, me, size);
    let pos: Shared<V> = t.alloc(n, Placement::Blocked);
    let vel: Shared<V> = t.alloc(n, Placement::Blocked);
    let force: Shared<V> = t.alloc(n, Placement::Blocked);
    let locks = t.locks(n);
    {
        // SAFETY: bodies lo..hi are this participant's until the barrier.
        let p = unsafe { pos.slice_mut(lo..hi) };
        for (k, p) in p.iter_mut().enumerate() {
            let i = (lo + k) as u64;
            *p = [unit(3 * i), unit(3 * i + 1)];
        }
    }
    let m: Vec<f64> = (0..n).map(mass).collect();
    t.barrier();
    let start = Instant::now();
    let mut sum = vec![[0.0; 2]; n];
    for _ in 0..steps(n) {
        {
            // SAFETY: bodies lo..hi are this participant's until the barrier.
            unsafe { force.slice_mut(lo..hi) }.fill([0.0; 2]);
        }
        t.barrier();
        {
            // SAFETY: positions are only read until the barrier after the forces.
            let p = unsafe { pos.slice(0..n) };
            sum.fill([0.0; 2]);
            for i in (me..n).step_by(size) {
                for j in i + 1..n {
                    let d = [p[j][0] - p[i][0], p[j][1] - p[i][1]];
                    let r2 = d[0] * d[0] + d[1] * d[1] + SOFTENING * SOFTENING;
                    let s = m[i] * m[j] / (r2 * r2.sqrt());
                    sum[i] = [sum[i][0] + s * d[0], sum[i][1] + s * d[1]];
                    sum[j] = [sum[j][0] - s * d[0], sum[j][1] - s * d[1]];
                }
            }
        }
        // Start at this participant's own block, so that the participants do not queue for the
        // same locks.
        for b in (0..n).map(|k| (k + lo) % n) {
            t.lock(locks, b);
            // SAFETY: force b is only accessed under lock b until the barrier.
            let f = unsafe { force.slice_mut(b..b + 1) };
            f[0] = [f[0][0] + sum[b][0], f[0][1] + sum[b][1]];
            t.unlock(locks, b);
        }
        t.barrier();
        {
            // SAFETY: bodies lo..hi are this participant's until the barrier; forces are only
            // read.
            let f = unsafe { force.slice(lo..hi) };
            // SAFETY: as above.
            let v = unsafe { vel.slice_mut(lo..hi) };
            // SAFETY: as above.
            let p = unsafe { pos.slice_mut(lo..hi) };
            for k in 0..hi - lo {
                let a = 1.0 / m[lo + k];
                v[k] = [v[k][0] + DT * a * f[k][0], v[k][1] + DT * a * f[k][1]];
                p[k] = [p[k][0] + DT * v[k][0], p[k][1] + DT * v[k][1]];
            }
        }
        t.barrier();
    }
    let time = start.elapsed();
    let answer = if me == 0 {
        // SAFETY: after the last barrier the positions are only read.
        Answer::Float(unsafe { pos.to_vec() }.into_iter().flatten().collect())
    } else {
        Answer::Float(Vec::new())
    };
    t.barrier();
    Outcome { time, answer }
}
