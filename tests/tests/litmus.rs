//! Memory-model litmus tests on the shared memory over tcp: real processes, 2 to 4 nodes, each
//! job with a hard timeout that kills its whole process group.

use std::time::Duration;

use tests::run_job;

const LITMUS: &str = env!("CARGO_BIN_EXE_dsm-litmus");

fn litmus(scenario: &str, nodes: usize) {
    let r = run_job(
        LITMUS,
        nodes,
        &[scenario],
        &[("DSM_GLOBAL_SIZE", "256M")],
        Duration::from_secs(120),
    );
    assert_eq!(
        r.exit_code, 0,
        "{scenario} on {nodes} nodes: {:?}\n{}",
        r.failure, r.output
    );
    for rank in 0..nodes {
        assert!(
            r.output
                .contains(&format!("[{rank}] rank {rank}: {scenario} ok")),
            "{}",
            r.output
        );
    }
}

#[test]
fn message_passing_through_a_barrier() {
    litmus("mp-barrier", 3);
}

#[test]
fn message_passing_through_a_lock() {
    litmus("mp-lock", 4);
}

#[test]
fn a_counter_under_a_lock_is_exact() {
    litmus("counter-lock", 3);
}

#[test]
fn disjoint_bytes_of_one_page_all_survive() {
    litmus("false-sharing", 4);
}

#[test]
fn atomics_under_contention_are_exact() {
    litmus("atomics", 4);
}

#[test]
fn store_buffering_with_fences_never_reads_both_old_values() {
    litmus("store-buffering", 2);
}

#[test]
fn first_touch_places_pages_where_they_were_first_touched() {
    litmus("first-touch", 4);
}

#[test]
fn an_array_larger_than_the_cache_is_written_and_checksummed_by_all() {
    let env = [("DSM_GLOBAL_SIZE", "256M"), ("DSM_CACHE_SIZE", "256K")];
    let r = run_job(LITMUS, 3, &["big-array"], &env, Duration::from_secs(120));
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
}

#[test]
fn any_node_frees_what_another_allocated() {
    litmus("remote-free", 3);
}

#[test]
fn a_segfault_outside_global_memory_still_crashes() {
    let r = run_job(
        LITMUS,
        2,
        &["segv"],
        &[("DSM_GLOBAL_SIZE", "256M")],
        Duration::from_secs(60),
    );
    use std::os::unix::process::ExitStatusExt;
    match r.ranks[1] {
        dsm_core::launcher::RankEnd::Exited(s) => assert_eq!(s.signal(), Some(11), "{}", r.output),
        other => panic!("rank 1: {other:?}\n{}", r.output),
    }
    assert_ne!(r.exit_code, 0);
    assert!(
        r.output
            .contains("segmentation fault outside global memory at 0x0000000000000010"),
        "{}",
        r.output
    );
}

#[test]
fn the_strict_hand_off_fault_mode_gives_the_same_results() {
    for scenario in ["mp-lock", "false-sharing"] {
        let env = [("DSM_GLOBAL_SIZE", "256M"), ("DSM_FAULT_MODE", "handoff")];
        let r = run_job(LITMUS, 3, &[scenario], &env, Duration::from_secs(120));
        assert_eq!(r.exit_code, 0, "{scenario}: {:?}\n{}", r.failure, r.output);
    }
}
