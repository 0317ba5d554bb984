//! A radix sort of `n` 32-bit keys, 11 bits a pass (three passes). Each pass: every participant
//! counts the digits of its block of keys into its own page-aligned row of a global histogram;
//! barrier; every participant reads every row and computes where its keys of each digit go (the
//! prefix sum, through global memory); it writes its keys there (a permutation scattered over
//! every node's pages); barrier.

use std::time::Instant;

use dsm_core::Placement;

use super::{block, mix, Answer, Outcome, Shared, Team};

/// Keys where one thread takes about half a second.
pub const DEFAULT: usize = 1 << 24;
/// Keys for a check of a few seconds.
pub const QUICK: usize = 1 << 18;

/// Bits of the digit of one pass.
const BITS: u32 = 11;
const BUCKETS: usize = 1 << BITS;
/// A participant's row of the histogram, padded to whole pages.
const ROW: usize = BUCKETS.div_ceil(512) * 512;

/// Runs the sort of `n` keys.
pub fn run<T: Team>(t: &T, n: usize) -> Outcome {
    let (me, size) = (t.rank(), t.size());
    let (lo, hi) = block(n, me, size);
    let keys = [
        t.alloc::<u32>(n, Placement::Blocked),
        t.alloc::<u32>(n, Placement::Blocked),
    ];
    let hist: Shared<u64> = t.alloc(ROW * size, Placement::Blocked);
    {
        // SAFETY: keys lo..hi are this participant's until the barrier.
        let mine = unsafe { keys[0].slice_mut(lo..hi) };
        for (i, k) in mine.iter_mut().enumerate() {
            *k = mix((lo + i) as u64) as u32;
        }
    }
    t.barrier();
    let start = Instant::now();
    let mut pass = 0;
    let mut shift = 0;
    while shift < 32 {
        let (src, dst) = (keys[pass % 2], keys[(pass + 1) % 2]);
        let digit = |k: u32| ((k >> shift) as usize) & (BUCKETS - 1);
        {
            // SAFETY: src is only read during a pass.
            let mine = unsafe { src.slice(lo..hi) };
            // SAFETY: row `me` of the histogram is this participant's until the barrier.
            let row = unsafe { hist.slice_mut(me * ROW..me * ROW + BUCKETS) };
            row.fill(0);
            for &k in mine {
                row[digit(k)] += 1;
            }
        }
        t.barrier();
        let mut at = vec![0u64; BUCKETS];
        {
            // SAFETY: the histogram is only read until the next pass's barrier.
            let h = unsafe { hist.slice(0..ROW * size) };
            let mut total = 0;
            for (b, at) in at.iter_mut().enumerate() {
                *at = total + (0..me).map(|r| h[r * ROW + b]).sum::<u64>();
                total += (0..size).map(|r| h[r * ROW + b]).sum::<u64>();
            }
        }
        // SAFETY: src is only read during a pass.
        let mine = unsafe { src.slice(lo..hi) };
        for &k in mine {
            let d = digit(k);
            // SAFETY: the places `at` hands out are this participant's alone (the prefix sum
            // gives every participant disjoint places) until the barrier.
            unsafe { dst.write(at[d] as usize, k) };
            at[d] += 1;
        }
        t.barrier();
        pass += 1;
        shift += BITS;
    }
    let time = start.elapsed();
    let answer = if me == 0 {
        // SAFETY: after the last barrier the keys are only read.
        Answer::Exact(
            unsafe { keys[pass % 2].to_vec() }
                .into_iter()
                .map(u64::from)
                .collect(),
        )
    } else {
        Answer::Exact(Vec::new())
    };
    t.barrier();
    Outcome { time, answer }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_keys_come_out_sorted() {
        let n = 10_000;
        let Answer::Exact(got) = crate::apps::run_threads(3, |t| run(t, n)).answer else {
            panic!("not integers")
        };
        let mut want: Vec<u64> = (0..n).map(|i| u64::from(mix(i as u64) as u32)).collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
