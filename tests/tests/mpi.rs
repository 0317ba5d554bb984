//! The MPI-style API on real jobs: `mpi-check` (`src/bin/mpi-check/`) runs as N real processes
//! over tcp, started by the runtime's launcher with a hard timeout that kills the whole job.

use std::time::Duration;

use dsm_launcher::{launch, LaunchOptions};

const CHECK: &str = env!("CARGO_BIN_EXE_mpi-check");

const PARTS: [&str; 10] = [
    "p2p",
    "nonblocking",
    "threads",
    "collectives",
    "rma",
    "pscw",
    "created",
    "raw",
    "errors",
    "split",
];

/// Runs `mpi-check` on `n` ranks with `parts`; every rank must report each part ok.
fn check(n: usize, parts: &[&str]) {
    check_with(n, parts, &[]);
}

/// [`check`] with more environment for the ranks.
fn check_with(n: usize, parts: &[&str], env: &[(&str, &str)]) {
    let mut o = LaunchOptions::new(n, CHECK);
    o.args = parts.iter().map(Into::into).collect();
    o.env = vec![("DSM_TRANSPORT".into(), "tcp".into())];
    o.env.extend(env.iter().map(|&(k, v)| (k.into(), v.into())));
    o.timeout = Some(Duration::from_secs(120));
    o.capture_output = true;
    o.grace = Duration::from_secs(2);
    let r = launch(o).expect("start the job").wait();
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    for rank in 0..n {
        for part in parts {
            assert!(
                r.output.contains(&format!("rank {rank}: {part} ok")),
                "rank {rank} did not pass {part}:\n{}",
                r.output
            );
        }
    }
}

#[test]
fn everything_on_two_ranks() {
    check(2, &PARTS);
}

#[test]
fn everything_on_three_ranks() {
    check(3, &PARTS);
}

#[test]
fn everything_on_four_ranks() {
    check(4, &PARTS);
}

#[test]
fn a_single_rank_job_works() {
    check(1, &PARTS);
}

/// A rank leaves the job; the survivors' failing RMA synchronisation calls (`unlock`,
/// `lock_all`, `complete`) still release what the other survivor waits for.
#[test]
fn failing_rma_calls_release_what_other_ranks_wait_for() {
    check_with(3, &["lost"], &[("DSM_ON_PEER_LOST", "error")]);
}
