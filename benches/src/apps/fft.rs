//! A six-step 1-D FFT of `N = 2^m` complex points (`m` even), laid out as an `n x n` matrix
//! (`n = 2^(m/2)`) blocked by rows: transpose, an FFT of every row, a twiddle, transpose, an FFT
//! of every row, transpose. Each transpose reads columns of the whole source matrix (rows
//! homed on every node) and writes this participant's rows; a barrier follows it.

use std::f64::consts::PI;
use std::time::Instant;

use dsm_core::Placement;

use super::{block, unit, Answer, Outcome, Shared, Team};

/// `m` (`N = 2^m` points) where one thread takes about half a second.
pub const DEFAULT: usize = 22;
/// `m` for a check of a few seconds.
pub const QUICK: usize = 16;

type C = [f64; 2];

fn mul(a: C, b: C) -> C {
    [a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]]
}

/// `e^(-2 pi i k / len)`.
fn root(k: usize, len: usize) -> C {
    let a = -2.0 * PI * k as f64 / len as f64;
    [a.cos(), a.sin()]
}

/// An in-place radix-2 FFT of `x` (length a power of two) with the roots `w[k] = root(k, len)`
/// for `k < len / 2`.
fn fft_row(x: &mut [C], w: &[C]) {
    let len = x.len();
    let bits = len.trailing_zeros();
    for i in 0..len {
        let j = i.reverse_bits() >> (usize::BITS - bits);
        if i < j {
            x.swap(i, j);
        }
    }
    let mut half = 1;
    while half < len {
        let stride = len / (2 * half);
        for start in (0..len).step_by(2 * half) {
            for k in 0..half {
                let t = mul(w[k * stride], x[start + k + half]);
                let u = x[start + k];
                x[start + k] = [u[0] + t[0], u[1] + t[1]];
                x[start + k + half] = [u[0] - t[0], u[1] - t[1]];
            }
        }
        half *= 2;
    }
}

/// Rows `lo..hi` of `dst` become columns `lo..hi` of `src` (both `n x n`), in tiles.
fn transpose(src: Shared<C>, dst: Shared<C>, n: usize, lo: usize, hi: usize) {
    // SAFETY: between the barriers around a transpose `src` is only read and rows lo..hi of
    // `dst` are written by this participant alone.
    let s = unsafe { src.slice(0..n * n) };
    // SAFETY: as above.
    let d = unsafe { dst.slice_mut(lo * n..hi * n) };
    const TILE: usize = 32;
    for r0 in (lo..hi).step_by(TILE) {
        for c0 in (0..n).step_by(TILE) {
            for r in r0..(r0 + TILE).min(hi) {
                for c in c0..(c0 + TILE).min(n) {
                    d[(r - lo) * n + c] = s[c * n + r];
                }
            }
        }
    }
}

/// Runs the FFT of `2^m` points (`m` even, at least 2).
///
/// # Panics
/// When `m` is odd or below 2.
pub fn run<T: Team>(t: &T, m: usize) -> Outcome {
    assert!(
        m >= 2 && m.is_multiple_of(2),
        "m must be even and at least 2"
    );
    let n = 1usize << (m / 2);
    let big = n * n;
    let (lo, hi) = block(n, t.rank(), t.size());
    let x = t.alloc::<C>(big, Placement::Blocked);
    let y = t.alloc::<C>(big, Placement::Blocked);
    {
        // SAFETY: rows lo..hi are this participant's until the barrier.
        let mine = unsafe { x.slice_mut(lo * n..hi * n) };
        for (i, v) in mine.iter_mut().enumerate() {
            let g = (lo * n + i) as u64;
            *v = [unit(2 * g) - 0.5, unit(2 * g + 1) - 0.5];
        }
    }
    let w: Vec<C> = (0..n / 2).map(|k| root(k, n)).collect();
    t.barrier();
    let start = Instant::now();
    transpose(x, y, n, lo, hi);
    t.barrier();
    {
        // SAFETY: rows lo..hi of y are this participant's until the next barrier.
        let rows = unsafe { y.slice_mut(lo * n..hi * n) };
        for (i, row) in rows.chunks_exact_mut(n).enumerate() {
            fft_row(row, &w);
            let j2 = lo + i;
            for (k1, v) in row.iter_mut().enumerate() {
                *v = mul(*v, root(j2 * k1 % big, big));
            }
        }
    }
    t.barrier();
    transpose(y, x, n, lo, hi);
    t.barrier();
    {
        // SAFETY: rows lo..hi of x are this participant's until the next barrier.
        let rows = unsafe { x.slice_mut(lo * n..hi * n) };
        for row in rows.chunks_exact_mut(n) {
            fft_row(row, &w);
        }
    }
    t.barrier();
    transpose(x, y, n, lo, hi);
    t.barrier();
    let time = start.elapsed();
    let answer = if t.rank() == 0 {
        // SAFETY: after the last barrier y is only read.
        Answer::Float(unsafe { y.to_vec() }.into_iter().flatten().collect())
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
    fn the_six_steps_give_the_dft() {
        let m = 6;
        let big = 1usize << m;
        let out = crate::apps::run_threads(2, |t| run(t, m));
        let Answer::Float(got) = out.answer else {
            panic!("not floats")
        };
        for k in 0..big {
            let mut s = [0.0, 0.0];
            for j in 0..big {
                let x = [unit(2 * j as u64) - 0.5, unit(2 * j as u64 + 1) - 0.5];
                let p = mul(x, root(j * k % big, big));
                s = [s[0] + p[0], s[1] + p[1]];
            }
            assert!((got[2 * k] - s[0]).abs() < 1e-9 && (got[2 * k + 1] - s[1]).abs() < 1e-9);
        }
    }
}
