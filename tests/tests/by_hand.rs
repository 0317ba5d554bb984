//! Jobs started without `dsmrun` or `mpiexec`: by hand (rank, size, coordinator address, secret
//! and the interface to bind, as on a cluster without a launcher) and under a simulated `srun`
//! (the Slurm variables and a rendezvous directory; there is no Slurm in CI). Real processes over
//! real sockets, each job killed as a whole after its timeout.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use tests::run_by_hand;

const CHECK: &str = env!("CARGO_BIN_EXE_dsm-check");
const SECRET: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn nodes_started_by_hand_in_any_order_form_a_job() {
    let coordinator = format!("127.0.0.1:{}", free_port());
    let n = 4;
    // Rank 0 last: the others must wait for it, bounded by the connect timeout.
    let envs: Vec<_> = (0..n)
        .rev()
        .map(|rank| {
            env(&[
                ("DSM_RANK", rank.to_string()),
                ("DSM_NODES", n.to_string()),
                ("DSM_COORDINATOR", coordinator.clone()),
                ("DSM_SECRET", SECRET.into()),
                // An interface name, as on a cluster.
                ("DSM_BIND", "lo".into()),
                ("DSM_TRANSPORT", "tcp".into()),
            ])
        })
        .collect();
    let (ends, timed_out) = run_by_hand(CHECK, &["mesh"], &envs, Duration::from_secs(60));
    assert!(!timed_out, "{ends:?}");
    for (i, e) in ends.iter().enumerate() {
        let rank = n - 1 - i;
        assert_eq!(e.status, Some(0), "rank {rank}: {}", e.output);
        assert!(
            e.output.contains(&format!("rank {rank}: mesh ok")),
            "{}",
            e.output
        );
    }
}

#[test]
fn a_node_with_another_secret_is_refused_by_hand_too() {
    let coordinator = format!("127.0.0.1:{}", free_port());
    let mk = |rank: u32, secret: &str, timeout: &str| {
        env(&[
            ("DSM_RANK", rank.to_string()),
            ("DSM_NODES", "2".into()),
            ("DSM_COORDINATOR", coordinator.clone()),
            ("DSM_SECRET", secret.into()),
            ("DSM_CONNECT_TIMEOUT", timeout.into()),
        ])
    };
    let other = "cd".repeat(32);
    let start = Instant::now();
    let (ends, timed_out) = run_by_hand(
        CHECK,
        &["mesh"],
        &[mk(0, SECRET, "3"), mk(1, &other, "3")],
        Duration::from_secs(30),
    );
    assert!(!timed_out);
    assert_ne!(ends[1].status, Some(0));
    assert!(ends[1].output.contains("secret"), "{}", ends[1].output);
    // Rank 0 waits for the real rank 1 until its connect timeout, then names it.
    assert_ne!(ends[0].status, Some(0));
    assert!(
        ends[0].output.contains("ranks 1 did not join"),
        "{}",
        ends[0].output
    );
    assert!(start.elapsed() < Duration::from_secs(20));
}

fn slurm_env(rank: usize, n: usize, job: &str, dir: &str) -> Vec<(String, String)> {
    env(&[
        ("SLURM_PROCID", rank.to_string()),
        ("SLURM_NTASKS", n.to_string()),
        ("SLURM_NPROCS", n.to_string()),
        ("SLURM_STEP_NUM_NODES", "1".into()),
        ("SLURM_JOB_ID", job.into()),
        ("SLURM_STEP_ID", "0".into()),
        ("DSM_RENDEZVOUS_DIR", dir.into()),
        ("DSM_TRANSPORT", "tcp".into()),
    ])
}

#[test]
fn a_simulated_srun_job_meets_through_the_rendezvous_directory() {
    let dir = std::env::temp_dir().join(format!("dsm-srun-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let n = 3;
    // Two jobs share the directory at once and must not meet; the ranks start in reverse order.
    let jobs: Vec<_> = ["101", "102"]
        .into_iter()
        .map(|job| {
            let envs: Vec<_> = (0..n).rev().map(|r| slurm_env(r, n, job, d)).collect();
            std::thread::spawn(move || {
                run_by_hand(CHECK, &["mesh"], &envs, Duration::from_secs(60))
            })
        })
        .collect();
    for j in jobs {
        let (ends, timed_out) = j.join().unwrap();
        assert!(!timed_out, "{ends:?}");
        for e in &ends {
            assert_eq!(e.status, Some(0), "{}", e.output);
            assert!(e.output.contains("mesh ok"), "{}", e.output);
        }
    }
    // Rank 0 removed its file once everyone had joined.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inconsistent_slurm_variables_stop_the_node_by_name() {
    let mut e = slurm_env(0, 2, "7", "/tmp");
    e.push(("SLURM_NPROCS".into(), "5".into()));
    let (ends, timed_out) = run_by_hand(CHECK, &["mesh"], &[e], Duration::from_secs(20));
    assert!(!timed_out);
    assert_ne!(ends[0].status, Some(0));
    assert!(
        ends[0].output.contains("SLURM_NTASKS=2 but SLURM_NPROCS=5"),
        "{}",
        ends[0].output
    );
}

/// `dsm-litmus vanish` over tcp (scripts/test-softroce.sh runs it over verbs): rank 1 dies by
/// SIGKILL mid-job; rank 0 gets errors naming it and stops within a bounded time, no hang.
#[test]
fn a_rank_killed_mid_job_is_named_by_the_survivor() {
    const LITMUS: &str = env!("CARGO_BIN_EXE_dsm-litmus");
    let coordinator = format!("127.0.0.1:{}", free_port());
    let envs: Vec<_> = (0..2)
        .map(|rank| {
            env(&[
                ("DSM_RANK", rank.to_string()),
                ("DSM_NODES", "2".into()),
                ("DSM_COORDINATOR", coordinator.clone()),
                ("DSM_SECRET", SECRET.into()),
                ("DSM_TRANSPORT", "tcp".into()),
                ("DSM_GLOBAL_SIZE", "64M".into()),
                ("DSM_PEER_TIMEOUT", "3".into()),
            ])
        })
        .collect();
    let start = Instant::now();
    let (ends, timed_out) = run_by_hand(LITMUS, &["vanish"], &envs, Duration::from_secs(60));
    assert!(!timed_out, "{ends:?}");
    // Rank 1 was killed by a signal; rank 0 finished the scenario (0), or the runtime's watcher
    // stopped it first naming the lost rank (3).
    assert_eq!(ends[1].status, None, "{}", ends[1].output);
    assert!(
        matches!(ends[0].status, Some(0) | Some(3)),
        "{:?}: {}",
        ends[0].status,
        ends[0].output
    );
    // Over tcp the loss is seen at once, both by the failing atomic and by the watcher, so
    // either may speak first; each must name rank 1.
    let out = &ends[0].output;
    let by_atomic = out.contains("vanish: atomic failed") && out.contains("rank 1");
    let by_watcher = ends[0].status == Some(3) && out.contains("lost rank 1");
    assert!(by_atomic || by_watcher, "{out}");
    assert!(start.elapsed() < Duration::from_secs(45));
}
