//! A blocked LU factorisation without pivoting of an `n x n` diagonally dominant matrix, in
//! blocks of `B x B` stored contiguously, owned 2-D cyclically over a `pr x pc` grid of
//! participants (each block homed on its owner by first touch). Step `k`: the owner of the
//! diagonal block factors it; barrier; the owners of the blocks of row and column `k` solve
//! them; barrier; every owner updates its blocks of the trailing matrix.

use std::time::Instant;

use dsm_core::Placement;

use super::{unit, Answer, Outcome, Shared, Team};

/// `n` where one thread takes about half a second.
pub const DEFAULT: usize = 1536;
/// `n` for a check of a few seconds.
pub const QUICK: usize = 256;
/// The block's side: a block of f64 is 32 KiB, eight pages.
pub const B: usize = 64;

/// The participant grid `pr x pc` (`pr * pc = size`, as square as it goes).
fn grid(size: usize) -> (usize, usize) {
    let mut pr = (size as f64).sqrt() as usize;
    while !size.is_multiple_of(pr) {
        pr -= 1;
    }
    (pr, size / pr)
}

/// The element of the matrix at row `i`, column `j`.
fn initial(i: usize, j: usize, n: usize) -> f64 {
    unit((i * n + j) as u64) + if i == j { n as f64 } else { 0.0 }
}

/// Factors a diagonal block in place: `L` (unit diagonal) below, `U` on and above.
fn factor(a: &mut [f64]) {
    for k in 0..B {
        let pivot = a[k * B + k];
        for i in k + 1..B {
            let l = a[i * B + k] / pivot;
            a[i * B + k] = l;
            for j in k + 1..B {
                a[i * B + j] -= l * a[k * B + j];
            }
        }
    }
}

/// `a = L^-1 a` with `L` the unit lower triangle of the factored diagonal block `d`.
fn solve_row(d: &[f64], a: &mut [f64]) {
    for k in 0..B {
        for i in k + 1..B {
            let l = d[i * B + k];
            for j in 0..B {
                a[i * B + j] -= l * a[k * B + j];
            }
        }
    }
}

/// `a = a U^-1` with `U` the upper triangle of the factored diagonal block `d`.
fn solve_col(d: &[f64], a: &mut [f64]) {
    for i in 0..B {
        for k in 0..B {
            let v = a[i * B + k] / d[k * B + k];
            a[i * B + k] = v;
            for j in k + 1..B {
                a[i * B + j] -= v * d[k * B + j];
            }
        }
    }
}

/// `c -= a b`.
fn update(a: &[f64], b: &[f64], c: &mut [f64]) {
    for i in 0..B {
        for k in 0..B {
            let v = a[i * B + k];
            let (row, brow) = (&mut c[i * B..(i + 1) * B], &b[k * B..(k + 1) * B]);
            for (x, y) in row.iter_mut().zip(brow) {
                *x -= v * y;
            }
        }
    }
}

/// Runs the factorisation of an `n x n` matrix (`n` a multiple of [`B`]).
///
/// # Panics
/// When `n` is not a positive multiple of [`B`].
pub fn run<T: Team>(t: &T, n: usize) -> Outcome {
    assert!(n >= B && n.is_multiple_of(B), "n must be a multiple of {B}");
    let nb = n / B;
    let (pr, pc) = grid(t.size());
    let me = t.rank();
    let owner = |bi: usize, bj: usize| (bi % pr) * pc + bj % pc;
    let a: Shared<f64> = t.alloc(n * n, Placement::FirstTouch);
    let at = |bi: usize, bj: usize| (bi * nb + bj) * B * B..(bi * nb + bj + 1) * B * B;
    for bi in 0..nb {
        for bj in (0..nb).filter(|&bj| owner(bi, bj) == me) {
            // SAFETY: each block is written by its owner alone before the barrier.
            let blk = unsafe { a.slice_mut(at(bi, bj)) };
            for (x, v) in blk.iter_mut().enumerate() {
                *v = initial(bi * B + x / B, bj * B + x % B, n);
            }
        }
    }
    t.barrier();
    let start = Instant::now();
    for k in 0..nb {
        if owner(k, k) == me {
            // SAFETY: the diagonal block is its owner's alone in this phase.
            factor(unsafe { a.slice_mut(at(k, k)) });
        }
        t.barrier();
        // SAFETY: the diagonal block is only read in this phase, and every block of row and
        // column k is written by its owner alone.
        let d = unsafe { a.slice(at(k, k)) };
        for j in (k + 1..nb).filter(|&j| owner(k, j) == me) {
            // SAFETY: as above.
            solve_row(d, unsafe { a.slice_mut(at(k, j)) });
        }
        for i in (k + 1..nb).filter(|&i| owner(i, k) == me) {
            // SAFETY: as above.
            solve_col(d, unsafe { a.slice_mut(at(i, k)) });
        }
        t.barrier();
        for i in k + 1..nb {
            for j in (k + 1..nb).filter(|&j| owner(i, j) == me) {
                // SAFETY: row and column k are only read now; block (i, j) is its owner's,
                // and the owner factors or solves it next itself, after this update.
                let l = unsafe { a.slice(at(i, k)) };
                // SAFETY: as above.
                let u = unsafe { a.slice(at(k, j)) };
                // SAFETY: as above.
                let c = unsafe { a.slice_mut(at(i, j)) };
                update(l, u, c);
            }
        }
    }
    t.barrier();
    let time = start.elapsed();
    let answer = if me == 0 {
        // SAFETY: after the last barrier the matrix is only read.
        Answer::Float(unsafe { a.to_vec() })
    } else {
        Answer::Float(Vec::new())
    };
    t.barrier();
    Outcome { time, answer }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l_times_u_is_the_matrix() {
        let n = 2 * B;
        let Answer::Float(f) = crate::apps::run_threads(3, |t| run(t, n)).answer else {
            panic!("not floats")
        };
        let get = |i: usize, j: usize| f[((i / B) * (n / B) + j / B) * B * B + (i % B) * B + j % B];
        for i in (0..n).step_by(7) {
            for j in (0..n).step_by(5) {
                let s: f64 = (0..=i.min(j))
                    .map(|k| if k == i { 1.0 } else { get(i, k) } * get(k, j))
                    .sum();
                assert!((s - initial(i, j, n)).abs() < 1e-9, "({i}, {j}): {s}");
            }
        }
    }
}
