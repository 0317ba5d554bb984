//! Checkpoints and restarts across real processes over tcp (`tests/src/bin/dsm-restart.rs`):
//! a rank killed at a random moment and the job restarted by `dsmrun --max-restarts` ends with
//! the same bits as a run without failure; a node's lost directory comes back from its
//! partner's copy; a damaged newest epoch falls back to the one before; another job shape is
//! refused with nothing overwritten; an incremental checkpoint writes only changed pages. Every
//! job has a hard timeout that kills its process group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::run_job;

const RESTART: &str = env!("CARGO_BIN_EXE_dsm-restart");
const OBJECTS: &str = env!("CARGO_BIN_EXE_dsm-objects");

/// A fresh checkpoint directory for one test (removed when dropped).
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("dsm-ckpt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn template(&self) -> String {
        format!("{}/%r", self.0.display())
    }
    fn rank(&self, r: usize) -> PathBuf {
        self.0.join(r.to_string())
    }
    /// Every file under the directory with its bytes.
    fn snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in std::fs::read_dir(p).unwrap().flatten() {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.insert(path.clone(), std::fs::read(&path).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.0, &mut out);
        out
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn env(dir: &Dir) -> Vec<(&'static str, String)> {
    vec![
        ("DSM_CHECKPOINT_DIR", dir.template()),
        ("DSM_GLOBAL_SIZE", "256M".into()),
    ]
}

/// Runs the stencil through the launcher library; its output and whether it passed.
fn stencil(dir: &Dir, nodes: usize, steps: u64, extra: &[(&str, &str)]) -> (bool, String) {
    let mut e: Vec<(&str, String)> = env(dir);
    e.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let steps = steps.to_string();
    let r = run_job(
        RESTART,
        nodes,
        &["stencil", &steps, "10"],
        &e,
        Duration::from_secs(120),
    );
    (r.exit_code == 0, r.output)
}

fn result_line(output: &str) -> String {
    output
        .lines()
        .find_map(|l| l.split_once("result ").map(|(_, r)| r.to_string()))
        .unwrap_or_else(|| panic!("no result line in:\n{output}"))
}

/// `dsmrun` (built with the workspace, beside this test's directory of binaries).
fn dsmrun() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("dsmrun");
    assert!(
        p.exists(),
        "{} is missing: build the workspace",
        p.display()
    );
    p
}

/// Runs `dsmrun ARGS` in its own process group, killed (the whole group) after `limit`.
fn run_dsmrun(args: &[&str], envs: &[(&str, String)], limit: Duration) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(dsmrun());
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let child = cmd.spawn().unwrap();
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code().unwrap_or(-1), text)
        }
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the group is the child's.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            panic!("dsmrun {args:?} did not end within {limit:?}");
        }
    }
}

#[test]
fn a_rank_killed_at_any_moment_is_restarted_from_its_checkpoint_with_the_same_result() {
    const STEPS: u64 = 300;
    // 2 nodes over tcp, 4 over the shared-memory transport (auto, on one host).
    for (nodes, transport) in [(2usize, "tcp"), (4, "auto")] {
        let dir = Dir::new(&format!("kill-{nodes}"));
        let t0 = Instant::now();
        let (ok, out) = stencil(&dir, nodes, STEPS, &[("DSM_TRANSPORT", transport)]);
        assert!(ok, "{out}");
        let reference = result_line(&out);
        let span = t0.elapsed().as_millis().max(20) as u64;
        // Kill moments spread over the whole run (a checkpoint every 10 steps: many land in
        // one), on every rank in turn.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d ^ nodes as u64;
        for round in 0..4u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let rank = (round as usize) % nodes;
            let ms = seed % span;
            std::fs::remove_dir_all(&dir.0).unwrap();
            std::fs::create_dir_all(&dir.0).unwrap();
            let mut envs = env(&dir);
            envs.push(("DSM_TEST_KILL", format!("{rank}:{ms}")));
            envs.push(("DSM_TRANSPORT", transport.to_string()));
            let n = nodes.to_string();
            let steps = STEPS.to_string();
            let (code, out) = run_dsmrun(
                &[
                    "-n",
                    &n,
                    "--timeout",
                    "120",
                    "--max-restarts",
                    "2",
                    RESTART,
                    "stencil",
                    &steps,
                    "10",
                ],
                &envs,
                Duration::from_secs(300),
            );
            assert_eq!(
                code, 0,
                "{nodes} nodes, rank {rank} killed at {ms} ms:\n{out}"
            );
            assert_eq!(
                result_line(&out),
                reference,
                "{nodes} nodes, rank {rank} killed at {ms} ms:\n{out}"
            );
        }
    }
}

#[test]
fn a_lost_directory_comes_back_from_the_partner_and_a_damaged_epoch_is_passed_over() {
    let nodes = 3;
    let dir = Dir::new("partner");
    // The reference: 50 steps in one go.
    let (ok, out) = stencil(&dir, nodes, 50, &[]);
    assert!(ok, "{out}");
    let reference = result_line(&out);
    // 30 steps: epochs for steps 10, 20, 30 (the run numbers them after the reference's).
    std::fs::remove_dir_all(&dir.0).unwrap();
    let (ok, out) = stencil(&dir, nodes, 30, &[]);
    assert!(ok, "{out}");
    // Rank 1 loses its whole directory: rank 2's copies bring it back.
    std::fs::remove_dir_all(dir.rank(1)).unwrap();
    let (ok, out) = stencil(&dir, nodes, 50, &[("DSM_RESTART", "1")]);
    assert!(ok, "{out}");
    assert!(out.contains("restarted from epoch 3"), "{out}");
    assert!(out.contains("using the copy kept by rank 2"), "{out}");
    assert_eq!(result_line(&out), reference);

    // Again from 30 steps; then the newest epoch of rank 0 is damaged in both copies (its own
    // and rank 1's): the restart passes over it, saying why, and resumes from the epoch before.
    std::fs::remove_dir_all(&dir.0).unwrap();
    let (ok, out) = stencil(&dir, nodes, 30, &[]);
    assert!(ok, "{out}");
    let mut damaged = Vec::new();
    for path in [
        dir.rank(0).join("epoch-0000000003/rank-0.img"),
        dir.rank(1).join("epoch-0000000003/rank-0.copy"),
    ] {
        let mut b = std::fs::read(&path).unwrap();
        let at = b.len() / 2;
        b[at] ^= 0x40;
        std::fs::write(&path, &b).unwrap();
        if damaged.is_empty() {
            damaged = b;
        }
    }
    let (ok, out) = stencil(&dir, nodes, 50, &[("DSM_RESTART", "1")]);
    assert!(ok, "{out}");
    assert!(out.contains("passing over epoch 3"), "{out}");
    assert!(out.contains("restarted from epoch 2"), "{out}");
    assert_eq!(result_line(&out), reference);
    // The run after the restart never wrote into the damaged epoch 3: its checkpoints are
    // epochs 4 and 5, and epoch 3's damaged image is as it was left.
    for r in 0..nodes {
        assert!(dir.rank(r).join("epoch-0000000005").exists());
    }
    let img = std::fs::read(dir.rank(0).join("epoch-0000000003/rank-0.img")).unwrap();
    assert!(img == damaged, "epoch 3 was written again");
}

#[test]
fn a_restart_with_another_node_count_or_program_is_refused_and_overwrites_nothing() {
    let dir = Dir::new("shape");
    let (ok, out) = stencil(&dir, 2, 20, &[]);
    assert!(ok, "{out}");
    let before = dir.snapshot();
    assert!(!before.is_empty());
    let (ok, out) = stencil(&dir, 3, 20, &[("DSM_RESTART", "1")]);
    assert!(
        !ok,
        "a restart on 3 nodes of a 2-node checkpoint passed:\n{out}"
    );
    assert!(
        out.contains("written by a job of 2 nodes; this job has 3"),
        "{out}"
    );
    let e = env(&dir);
    let mut e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
    e.push(("DSM_RESTART", "1"));
    let r = run_job(
        OBJECTS,
        2,
        &["sem-producer-consumer"],
        &e,
        Duration::from_secs(120),
    );
    assert_ne!(r.exit_code, 0, "another program restarted:\n{}", r.output);
    assert!(
        r.output.contains("written by the program dsm-restart"),
        "{}",
        r.output
    );
    // The old address range taken on rank 1: every rank refuses, naming it.
    let r = run_job(RESTART, 2, &["occupied"], &e, Duration::from_secs(120));
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    for rank in 0..2 {
        assert!(
            r.output.contains(&format!(
                "[{rank}] refused: checkpoint: the checkpoint's global range"
            )),
            "{}",
            r.output
        );
    }
    assert!(
        r.output.contains("is not free on rank(s) 1"),
        "{}",
        r.output
    );
    assert_eq!(
        dir.snapshot(),
        before,
        "a refused restart changed the checkpoint"
    );
    // The same shape still restarts.
    let (ok, out) = stencil(&dir, 2, 30, &[("DSM_RESTART", "1")]);
    assert!(ok && out.contains("restarted from epoch 2"), "{out}");
}

#[test]
fn an_incremental_checkpoint_writes_only_the_changed_pages() {
    for nodes in [1, 2] {
        let dir = Dir::new(&format!("incr-{nodes}"));
        let e = env(&dir);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = run_job(
            RESTART,
            nodes,
            &["incremental"],
            &e,
            Duration::from_secs(120),
        );
        assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
        for rank in 0..nodes {
            assert!(
                r.output.contains(&format!("rank {rank}: incremental ok")),
                "{}",
                r.output
            );
        }
    }
}
