//! The scenarios of sequential streams of pages: reads prefetched ahead of a reader (used,
//! wasted) and first writes to a node's own pages opened ahead of the writer.

use dsm_core::{Dsm, Placement};

use super::{check, e, load, store, R};

/// Words per page.
const WORDS: usize = 4096 / 8;

/// `pages` pages homed at rank 1 (the second half of a blocked allocation over two nodes),
/// written by rank 1 with `value(page)` in each page's first word, then a barrier.
fn remote_pages(d: &Dsm, pages: usize, value: impl Fn(usize) -> u64) -> Result<*mut u64, String> {
    check(d.nodes() == 2, || "run it on 2 nodes".into())?;
    let a = d
        .alloc_collective(2 * pages * 4096, Placement::Blocked)
        .map_err(e)? as *mut u64;
    let remote = a.wrapping_add(pages * WORDS);
    if d.rank() == 1 {
        for p in 0..pages {
            store(remote.wrapping_add(p * WORDS), value(p));
        }
    }
    d.barrier().map_err(e)?;
    Ok(remote)
}

/// A sequential read of memory homed on the other node: prefetch brings most pages, and the
/// reader touches every one, so every prefetched page counts as used and none as wasted (also
/// after the barrier that invalidates them all: they were touched).
pub(super) fn prefetch_used(d: &Dsm) -> R {
    const PAGES: usize = 512;
    let value = |p: usize| p as u64 * 7 + 1;
    let remote = remote_pages(d, PAGES, value)?;
    d.reset_stats();
    if d.rank() == 0 {
        for p in 0..PAGES {
            let v = load(remote.wrapping_add(p * WORDS));
            check(v == value(p), || format!("page {p}: {v}"))?;
        }
        let s = d.stats();
        check(s.prefetched >= PAGES as u64 / 2, || {
            format!("only {} of {PAGES} pages prefetched: {s:?}", s.prefetched)
        })?;
        check(
            s.prefetched_used == s.prefetched && s.prefetched_wasted == 0,
            || format!("a sequential read of every page: {s:?}"),
        )?;
    }
    d.barrier().map_err(e)?;
    let s = d.stats();
    check(
        s.prefetched_used == s.prefetched && s.prefetched_wasted == 0,
        || format!("after the barrier: {s:?}"),
    )?;
    if d.rank() == 0 {
        check(s.invalidations >= PAGES as u64, || {
            format!("the barrier should invalidate every page rank 1 writes: {s:?}")
        })?;
    }
    d.barrier().map_err(e)
}

/// First writes to a node's own memory in order open the pages ahead of them (row H4): each
/// node fills its half of a blocked allocation (its own pages), taking far fewer write faults
/// than pages; then every node reads the other's half, as written, and a second round of
/// writes (the pages registered now) is seen by the reader after the next barrier.
pub(super) fn home_stream(d: &Dsm) -> R {
    const PAGES: usize = 1024;
    let nodes = d.nodes();
    let me = d.rank();
    let a = d
        .alloc_collective(nodes * PAGES * 4096, Placement::Blocked)
        .map_err(e)? as *mut u64;
    let page = |node: usize, p: usize| a.wrapping_add((node * PAGES + p) * WORDS);
    let value = |node: usize, p: usize, round: u64| (node * PAGES + p) as u64 * 3 + round;
    d.barrier().map_err(e)?;
    d.reset_stats();
    let start = std::time::Instant::now();
    for p in 0..PAGES {
        store(page(me, p), value(me, p, 1));
    }
    let took = start.elapsed();
    let s = d.stats();
    println!(
        "rank {me}: {PAGES} own pages written in {:.1} us a page ({} write faults, {} opened ahead)",
        took.as_secs_f64() * 1e6 / PAGES as f64,
        s.write_faults,
        s.home_written_ahead
    );
    check(s.write_faults <= PAGES as u64 / 4, || {
        format!(
            "{} write faults for {PAGES} pages written in order: {s:?}",
            s.write_faults
        )
    })?;
    check(s.home_written_ahead >= PAGES as u64 / 2, || {
        format!("only {} pages opened ahead: {s:?}", s.home_written_ahead)
    })?;
    d.barrier().map_err(e)?;
    for round in [1u64, 2] {
        for node in (0..nodes).filter(|&n| n != me) {
            for p in 0..PAGES {
                let v = load(page(node, p));
                check(v == value(node, p, round), || {
                    format!("round {round}: page {p} of rank {node} reads {v}")
                })?;
            }
        }
        d.barrier().map_err(e)?;
        if round == 1 {
            for p in 0..PAGES {
                store(page(me, p), value(me, p, 2));
            }
            d.barrier().map_err(e)?;
        }
    }
    d.free_collective(a as *mut u8).map_err(e)
}

/// Prefetched pages dropped before anybody touched them are wasted, and prefetching that keeps
/// wasting stops: in each of 12 phases rank 0 reads two consecutive pages homed on rank 1
/// (the second fault is sequential, so the pages after it are prefetched), and the barrier
/// invalidates them untouched (rank 1 writes them). Every phase wastes what it prefetched; the
/// last four phases prefetch less than the first four.
pub(super) fn prefetch_wasted(d: &Dsm) -> R {
    const PHASES: usize = 12;
    const STRIDE: usize = 16;
    let value = |p: usize| p as u64 ^ 0xabcd;
    let remote = remote_pages(d, PHASES * STRIDE, value)?;
    d.reset_stats();
    let mut per_phase = Vec::with_capacity(PHASES);
    for phase in 0..PHASES {
        let before = d.stats().prefetched;
        if d.rank() == 0 {
            for p in phase * STRIDE..phase * STRIDE + 2 {
                let v = load(remote.wrapping_add(p * WORDS));
                check(v == value(p), || format!("page {p}: {v}"))?;
            }
        }
        d.barrier().map_err(e)?;
        per_phase.push(d.stats().prefetched - before);
    }
    if d.rank() == 0 {
        let s = d.stats();
        check(s.prefetched_wasted > 0, || format!("nothing wasted: {s:?}"))?;
        check(s.prefetched_used == 0, || {
            format!("nothing was touched: {s:?}")
        })?;
        check(s.prefetched_wasted == s.prefetched, || {
            format!("every prefetched page was invalidated untouched: {s:?}")
        })?;
        let (first, last): (u64, u64) = (
            per_phase[..4].iter().sum(),
            per_phase[PHASES - 4..].iter().sum(),
        );
        check(last < first, || {
            format!("pages prefetched per phase did not shrink: {per_phase:?}")
        })?;
    }
    d.barrier().map_err(e)
}
