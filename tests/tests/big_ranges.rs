//! Large global ranges: the per-page metadata costs memory only where pages are used, and the
//! base address is found whenever a common free range exists. Real jobs of 2 processes over tcp
//! with hard timeouts.

use std::time::Duration;

use tests::run_job;

const LITMUS: &str = env!("CARGO_BIN_EXE_dsm-litmus");

/// `VmRSS` of `rank` at `when`, in KiB, from the `memory` scenario's report lines.
fn rss_kib(output: &str, rank: usize, when: &str) -> u64 {
    output
        .lines()
        .find(|l| l.contains(&format!("memory: rank {rank} ")) && l.contains(when))
        .and_then(|l| {
            l.split("VmRSS ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no VmRSS of rank {rank} {when}:\n{output}"))
}

#[test]
fn a_4_tib_range_starts_with_little_resident_memory() {
    let env = [
        ("DSM_TRANSPORT", "tcp"),
        ("DSM_GLOBAL_SIZE", "4T"),
        ("DSM_CACHE_SIZE", "1M"),
    ];
    let r = run_job(LITMUS, 2, &["memory"], &env, Duration::from_secs(120));
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    for rank in 0..2 {
        let kib = rss_kib(&r.output, rank, "after start-up");
        println!("rank {rank}: {kib} KiB resident after start-up with a 4 TiB global range");
        // Before: ~3 MB per GiB of global range (12 GB here, killed by the OOM killer).
        assert!(kib < 64 << 10, "rank {rank}: {kib} KiB resident");
    }
}

#[test]
fn a_1_tib_range_is_placed_every_time() {
    // Before: each node proposed ranges near its own randomised mmap base, and 1 start in 3
    // found none common.
    for run in 0..8 {
        let env = [("DSM_GLOBAL_SIZE", "1T")];
        let r = run_job(LITMUS, 2, &["mp-barrier"], &env, Duration::from_secs(60));
        assert_eq!(r.exit_code, 0, "run {run}: {:?}\n{}", r.failure, r.output);
    }
}

#[test]
fn a_range_larger_than_any_common_free_range_is_a_clear_error() {
    let env = [("DSM_GLOBAL_SIZE", "100T")];
    let r = run_job(LITMUS, 2, &["mp-barrier"], &env, Duration::from_secs(60));
    assert_ne!(r.exit_code, 0);
    assert!(
        r.output.contains("no address range of") && r.output.contains("largest common free range"),
        "{}",
        r.output
    );
}
