//! Real processes over real sockets and shared memory: whole jobs started through the launcher,
//! each with a hard timeout that kills the whole process group.

use std::time::{Duration, Instant};

use tests::run_job;

const CHECK: &str = env!("CARGO_BIN_EXE_dsm-check");

#[test]
fn four_nodes_share_memory_and_messages() {
    mesh(&[]);
}

#[test]
fn four_nodes_share_memory_and_messages_over_tcp() {
    mesh(&[("DSM_TRANSPORT", "tcp")]);
}

#[test]
fn four_nodes_share_memory_and_messages_over_shm() {
    mesh(&[("DSM_TRANSPORT", "shm"), ("DSM_STATS", "1")]);
}

fn mesh(env: &[(&str, &str)]) {
    let r = run_job(CHECK, 4, &["mesh"], env, Duration::from_secs(60));
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    for rank in 0..4 {
        assert!(
            r.output.contains(&format!("[{rank}] rank {rank}: mesh ok")),
            "{}",
            r.output
        );
    }
}

#[test]
fn a_single_node_job_works() {
    let r = run_job(CHECK, 1, &["mesh"], &[], Duration::from_secs(30));
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
}

#[test]
fn a_dead_peer_stops_the_others_naming_it() {
    let start = Instant::now();
    let r = run_job(
        CHECK,
        3,
        &["die", "1"],
        &[("DSM_PEER_TIMEOUT", "2")],
        Duration::from_secs(60),
    );
    assert_ne!(r.exit_code, 0);
    // The victim's death is what the launcher reports first...
    // The launcher reports the first rank it saw fail: the victim (killed by SIGABRT), or a
    // survivor that noticed the loss even sooner (status 3) and said whom it lost.
    let failure = r.failure.clone().unwrap_or_default();
    let victim_first = failure.contains("rank 1 was killed by signal 6");
    let survivor_first =
        failure.contains("exited with status 3") && r.output.contains("lost rank 1 (");
    assert!(victim_first || survivor_first, "{failure}\n{}", r.output);
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn survivors_detect_a_lost_peer_within_the_peer_timeout() {
    survivors_detect_a_lost_peer("auto");
}

#[test]
fn survivors_detect_a_lost_peer_within_the_peer_timeout_over_tcp() {
    survivors_detect_a_lost_peer("tcp");
}

#[test]
fn survivors_detect_a_lost_peer_within_the_peer_timeout_over_shm() {
    survivors_detect_a_lost_peer("shm");
}

fn survivors_detect_a_lost_peer(transport: &str) {
    // The launcher does not stop the survivors itself here: each must notice the dead peer and
    // exit with the peer-lost status, naming it.
    let mut o = dsm_launcher::LaunchOptions::new(3, CHECK);
    o.args = vec!["die".into(), "2".into()];
    o.env = vec![
        ("DSM_PEER_TIMEOUT".into(), "2".into()),
        ("DSM_TRANSPORT".into(), transport.into()),
    ];
    o.timeout = Some(Duration::from_secs(60));
    o.capture_output = true;
    o.stop_on_failure = false;
    let start = Instant::now();
    let r = dsm_launcher::launch(o).expect("start").wait();
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}:\n{}",
        start.elapsed(),
        r.output
    );
    // Each survivor stops by itself with the peer-lost status and names the rank it lost: rank 2,
    // or a survivor that stopped first (both are gone); at least one names rank 2.
    for rank in [0, 1] {
        match r.ranks[rank] {
            dsm_launcher::RankEnd::Exited(s) => assert_eq!(
                s.code(),
                Some(dsm_core::node::EXIT_PEER_LOST),
                "rank {rank}:\n{}",
                r.output
            ),
            other => panic!("rank {rank}: {other:?}"),
        }
        let prefix = format!("[{rank}] dsm: rank {rank}: lost rank ");
        assert!(
            r.output.lines().any(|l| l.starts_with(&prefix)),
            "rank {rank} named nobody:\n{}",
            r.output
        );
    }
    assert!(
        r.output.contains(": lost rank 2 ("),
        "nobody named rank 2:\n{}",
        r.output
    );
}

#[test]
fn a_hung_job_is_killed_at_the_timeout() {
    let start = Instant::now();
    let r = run_job(CHECK, 2, &["hang"], &[], Duration::from_secs(3));
    assert_eq!(r.exit_code, 124, "{:?}", r.failure);
    assert!(r.failure.unwrap_or_default().contains("timeout"));
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_silent_peer_is_declared_lost_by_heartbeat_timeout() {
    silent_peer("auto");
}

#[test]
fn a_silent_peer_is_declared_lost_by_heartbeat_timeout_over_tcp() {
    silent_peer("tcp");
}

#[test]
fn a_silent_peer_is_declared_lost_by_heartbeat_timeout_over_shm() {
    silent_peer("shm");
}

fn silent_peer(transport: &str) {
    let start = Instant::now();
    let r = run_job(
        CHECK,
        3,
        &["freeze", "1"],
        &[("DSM_PEER_TIMEOUT", "2"), ("DSM_TRANSPORT", transport)],
        Duration::from_secs(60),
    );
    let failure = r.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("exited with status 3"),
        "{failure}\n{}",
        r.output
    );
    assert!(
        r.output.contains("lost rank 1 (silent for more than"),
        "{}",
        r.output
    );
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
}
