//! Semaphores, condition variables and placement on a chosen node across real processes over
//! tcp (`tests/src/bin/dsm-objects.rs`), each job with a hard timeout that kills its whole
//! process group.

use std::time::Duration;

use tests::run_job;

const OBJECTS: &str = env!("CARGO_BIN_EXE_dsm-objects");

/// Runs `scenario` on `nodes` nodes and checks that every rank passed.
fn objects(scenario: &str, nodes: usize) {
    let r = run_job(
        OBJECTS,
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
fn semaphores_carry_data_from_producers_to_consumers() {
    for nodes in [1, 2, 4] {
        objects("sem-producer-consumer", nodes);
    }
}

#[test]
fn a_condition_variable_passes_a_token_around_the_nodes() {
    for nodes in [2, 4] {
        objects("cond-token", nodes);
    }
}

#[test]
fn a_broadcast_wakes_every_waiter_and_signals_hand_out_tickets() {
    for nodes in [1, 2, 4] {
        objects("cond-broadcast-signal", nodes);
    }
}

#[test]
fn misused_objects_give_their_errors() {
    for nodes in [1, 2] {
        objects("misuse", nodes);
    }
}

#[test]
fn an_allocation_placed_on_a_node_is_homed_there() {
    for nodes in [1, 2, 3] {
        objects("placement", nodes);
    }
}

#[test]
fn threads_of_several_nodes_lose_no_update_under_locks() {
    for nodes in [1, 2, 3] {
        objects("threaded-locks", nodes);
    }
}
