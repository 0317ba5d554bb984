//! Memory-model litmus tests on the shared memory: real processes, 2 to 4 nodes, each job with a
//! hard timeout that kills its whole process group. The default engine (`auto`) and transport
//! (`auto`: shared memory between these co-located nodes, beside a tcp mesh) run them all; each
//! engine and mode, and the tcp and shm transports forced for every peer, also run every
//! scenario explicitly.

use std::time::Duration;

use dsm_core::fault::FaultMode;
use tests::run_job;

const LITMUS: &str = env!("CARGO_BIN_EXE_dsm-litmus");

fn litmus(scenario: &str, nodes: usize) {
    litmus_with(scenario, nodes, &[]);
}

/// Runs `scenario` on `nodes` nodes with `env` added, and checks every rank passed.
fn litmus_with(scenario: &str, nodes: usize, env: &[(&str, &str)]) {
    let mut all = env.to_vec();
    if !env.iter().any(|(k, _)| *k == "DSM_GLOBAL_SIZE") {
        all.push(("DSM_GLOBAL_SIZE", "256M"));
    }
    let r = run_job(LITMUS, nodes, &[scenario], &all, Duration::from_secs(120));
    assert_eq!(
        r.exit_code, 0,
        "{scenario} on {nodes} nodes with {env:?}: {:?}\n{}",
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

/// Every scenario with its node count. `scattered` checks that userfaultfd splits no VMA (and
/// that `mprotect` does); `kernel-write` that the uffd service threads serve a `read(2)` into
/// global memory.
const SCENARIOS: [(&str, usize); 16] = [
    ("mp-barrier", 3),
    ("threads", 3),
    ("scattered", 2),
    ("kernel-write", 2),
    ("mp-lock", 4),
    ("counter-lock", 3),
    ("counter-lock-threads", 3),
    ("false-sharing", 4),
    ("atomics", 4),
    ("store-buffering", 2),
    ("first-touch", 4),
    ("big-array", 3),
    ("remote-free", 3),
    ("prefetch-used", 2),
    ("prefetch-wasted", 2),
    ("home-stream", 3),
];

fn env_for(scenario: &str) -> Vec<(&'static str, &'static str)> {
    if scenario == "big-array" {
        vec![("DSM_CACHE_SIZE", "256K")]
    } else {
        Vec::new()
    }
}

/// Whether the userfaultfd engine can run here in `mode`; when it cannot, says why and, unless
/// `DSM_REQUIRE_UFFD=1` asks for it, lets the test pass without it (containers often forbid
/// userfaultfd with a seccomp filter).
fn userfaultfd_here(mode: FaultMode) -> bool {
    match dsm_core::fault::userfaultfd_support(mode) {
        Ok(()) => true,
        Err(e) if std::env::var("DSM_REQUIRE_UFFD").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: the userfaultfd engine cannot run here: {e}");
            false
        }
        Err(e) => panic!("DSM_REQUIRE_UFFD=1 but the userfaultfd engine cannot run: {e}"),
    }
}

#[test]
fn a_bad_fault_engine_is_a_clear_error() {
    let env = [
        ("DSM_GLOBAL_SIZE", "256M"),
        ("DSM_FAULT_ENGINE", "mprotect"),
    ];
    let r = run_job(LITMUS, 2, &["mp-barrier"], &env, Duration::from_secs(60));
    assert_ne!(r.exit_code, 0);
    assert!(
        r.output
            .contains("DSM_FAULT_ENGINE=\"mprotect\": expected auto, sigsegv or uffd"),
        "{}",
        r.output
    );
}

#[test]
fn every_scenario_passes_over_tcp() {
    for (scenario, nodes) in SCENARIOS {
        let mut env = env_for(scenario);
        env.push(("DSM_TRANSPORT", "tcp"));
        litmus_with(scenario, nodes, &env);
    }
}

#[test]
fn every_scenario_passes_over_shm() {
    for (scenario, nodes) in SCENARIOS {
        let mut env = env_for(scenario);
        env.push(("DSM_TRANSPORT", "shm"));
        litmus_with(scenario, nodes, &env);
    }
}

#[test]
fn every_scenario_passes_under_the_sigsegv_engine() {
    for (scenario, nodes) in SCENARIOS {
        let mut env = env_for(scenario);
        env.push(("DSM_FAULT_ENGINE", "sigsegv"));
        litmus_with(scenario, nodes, &env);
    }
}

#[test]
fn every_scenario_passes_under_the_userfaultfd_engine_inline() {
    if !userfaultfd_here(FaultMode::Inline) {
        return;
    }
    for (scenario, nodes) in SCENARIOS {
        let mut env = env_for(scenario);
        env.extend([("DSM_FAULT_ENGINE", "uffd"), ("DSM_FAULT_MODE", "inline")]);
        litmus_with(scenario, nodes, &env);
    }
}

#[test]
fn userfaultfd_caches_more_scattered_pages_than_vm_max_map_count_allows_vmas() {
    if !userfaultfd_here(FaultMode::Inline) {
        return;
    }
    let env = [("DSM_FAULT_ENGINE", "uffd"), ("DSM_GLOBAL_SIZE", "2G")];
    litmus_with("many-scattered", 2, &env);
}

#[test]
fn every_scenario_passes_under_the_userfaultfd_engine_with_service_threads() {
    if !userfaultfd_here(FaultMode::Handoff { threads: 2 }) {
        return;
    }
    for (scenario, nodes) in SCENARIOS {
        let mut env = env_for(scenario);
        env.extend([("DSM_FAULT_ENGINE", "uffd"), ("DSM_FAULT_MODE", "handoff")]);
        litmus_with(scenario, nodes, &env);
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
    litmus_with("big-array", 3, &env_for("big-array"));
}

#[test]
fn any_node_frees_what_another_allocated() {
    litmus("remote-free", 3);
}

fn segfault_crashes(engine: &str) {
    let r = run_job(
        LITMUS,
        2,
        &["segv"],
        &[("DSM_GLOBAL_SIZE", "256M"), ("DSM_FAULT_ENGINE", engine)],
        Duration::from_secs(60),
    );
    use std::os::unix::process::ExitStatusExt;
    match r.ranks[1] {
        dsm_launcher::RankEnd::Exited(s) => assert_eq!(s.signal(), Some(11), "{}", r.output),
        other => panic!("rank 1: {other:?}\n{}", r.output),
    }
    assert_ne!(r.exit_code, 0);
    if engine == "sigsegv" {
        // Our handler saw it first and forwarded it.
        assert!(
            r.output
                .contains("segmentation fault outside global memory at 0x0000000000000010"),
            "{}",
            r.output
        );
    }
}

#[test]
fn a_segfault_outside_global_memory_still_crashes() {
    segfault_crashes("sigsegv");
    if userfaultfd_here(FaultMode::Inline) {
        segfault_crashes("uffd");
    }
}

#[test]
fn the_strict_hand_off_fault_mode_gives_the_same_results() {
    for scenario in ["mp-lock", "false-sharing"] {
        let env = [("DSM_GLOBAL_SIZE", "256M"), ("DSM_FAULT_MODE", "handoff")];
        let r = run_job(LITMUS, 3, &[scenario], &env, Duration::from_secs(120));
        assert_eq!(r.exit_code, 0, "{scenario}: {:?}\n{}", r.failure, r.output);
    }
}
