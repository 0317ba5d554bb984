//! Jobs started by MPICH's `mpiexec.hydra`, with no `dsmrun` and no MPI library: the ranks find
//! each other through the launcher's PMI-1 server. Each job has a hard timeout that kills its
//! process group. Skipped (saying so) only where `mpiexec.hydra` is not installed, unless
//! `DSM_REQUIRE_MPIEXEC` is set.

use std::time::Duration;

use tests::{mpiexec, run_mpiexec};

const CHECK: &str = env!("CARGO_BIN_EXE_dsm-check");
const LITMUS: &str = env!("CARGO_BIN_EXE_dsm-litmus");

fn launcher() -> Option<std::path::PathBuf> {
    match mpiexec() {
        Ok(p) => Some(p),
        Err(why) => {
            eprintln!("{why}");
            None
        }
    }
}

#[test]
fn four_ranks_start_under_mpiexec_and_share_messages() {
    let Some(m) = launcher() else { return };
    let r = run_mpiexec(&m, 4, CHECK, &["mesh"], &[], Duration::from_secs(60));
    assert_eq!(r.status, Some(0), "{r:?}");
    for rank in 0..4 {
        assert!(
            r.output.contains(&format!("rank {rank}: mesh ok")),
            "{}",
            r.output
        );
    }
}

#[test]
fn litmus_tests_hold_under_mpiexec() {
    let Some(m) = launcher() else { return };
    for (scenario, n) in [("mp-lock", 4), ("counter-lock", 4), ("false-sharing", 3)] {
        let r = run_mpiexec(
            &m,
            n,
            LITMUS,
            &[scenario],
            &[("DSM_GLOBAL_SIZE", "256M")],
            Duration::from_secs(120),
        );
        assert_eq!(r.status, Some(0), "{scenario}: {r:?}");
        for rank in 0..n {
            assert!(
                r.output.contains(&format!("rank {rank}: {scenario} ok")),
                "{scenario}: {}",
                r.output
            );
        }
    }
}

#[test]
fn two_jobs_at_once_do_not_see_each_other() {
    let Some(m) = launcher() else { return };
    let m2 = m.clone();
    let other = std::thread::spawn(move || {
        run_mpiexec(&m2, 3, CHECK, &["mesh"], &[], Duration::from_secs(60))
    });
    let r = run_mpiexec(&m, 2, CHECK, &["mesh"], &[], Duration::from_secs(60));
    let r2 = other.join().expect("the other job's thread");
    assert_eq!(r.status, Some(0), "{r:?}");
    assert_eq!(r2.status, Some(0), "{r2:?}");
    // Each job saw exactly its own ranks.
    assert!(!r.output.contains("rank 2:"), "{}", r.output);
    assert!(r2.output.contains("rank 2: mesh ok"), "{}", r2.output);
}

#[test]
fn a_user_secret_is_used_when_given() {
    let Some(m) = launcher() else { return };
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let r = run_mpiexec(
        &m,
        2,
        CHECK,
        &["mesh"],
        &[("DSM_SECRET", secret)],
        Duration::from_secs(60),
    );
    assert_eq!(r.status, Some(0), "{r:?}");
    // One rank: with two, Hydra kills the second when the first fails and may drop the first's
    // last output while it tears the job down.
    let r = run_mpiexec(
        &m,
        1,
        CHECK,
        &["mesh"],
        &[("DSM_SECRET", "not-hex")],
        Duration::from_secs(60),
    );
    assert_ne!(r.status, Some(0), "{r:?}");
    assert!(r.output.contains("DSM_SECRET must be 64"), "{}", r.output);
}

#[test]
fn an_error_found_after_joining_the_pmi_server_is_reported() {
    let Some(m) = launcher() else { return };
    // `DSM_BIND` is read after the PMI connection opened; the process must live to say why it
    // failed instead of being killed by Hydra for closing that connection early.
    let r = run_mpiexec(
        &m,
        1,
        CHECK,
        &["mesh"],
        &[("DSM_BIND", "no-such-interface0")],
        Duration::from_secs(60),
    );
    assert_ne!(r.status, Some(0), "{r:?}");
    assert!(
        r.output
            .contains("is neither an IP address nor an interface"),
        "{}",
        r.output
    );
    assert!(!r.output.contains("signal 9"), "{}", r.output);
}
