//! `dsmrun` as a user meets it: the real binary, real processes, each run with a hard timeout.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

const DSMRUN: &str = env!("CARGO_BIN_EXE_dsmrun");

/// `dsm-demo`, a binary of another package (`dsm-core`), which `cargo test` does not build for
/// this one: built here once per test process, into the same profile directory as `dsmrun`.
fn demo() -> &'static str {
    static DEMO: OnceLock<String> = OnceLock::new();
    DEMO.get_or_init(|| {
        let dir = PathBuf::from(DSMRUN)
            .parent()
            .expect("dsmrun is in a directory")
            .to_path_buf();
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "dsm-core", "--bin", "dsm-demo"]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p dsm-core --bin dsm-demo failed"
        );
        dir.join("dsm-demo").to_string_lossy().into_owned()
    })
}

/// Runs dsmrun with `args`; the launcher's own `--timeout` bounds the job, and this bounds
/// dsmrun itself through an outer launcher job (which kills its process group on drop).
fn dsmrun(args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=5", "120", DSMRUN]).args(args);
    cmd.output().expect("run dsmrun under timeout(1)")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn runs_the_demo_on_four_nodes() {
    let o = dsmrun(&["-n", "4", "--timeout", "60", demo()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("every check passed"), "{}", text(&o));
}

#[test]
fn tags_output_with_the_rank() {
    let o = dsmrun(&[
        "-n",
        "3",
        "--tag-output",
        "--timeout",
        "30",
        "sh",
        "-c",
        "echo hello from $DSM_RANK of $DSM_NODES",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for r in 0..3 {
        assert!(out.contains(&format!("[{r}] hello from {r} of 3")), "{out}");
    }
}

#[test]
fn names_the_failing_rank_and_stops_the_others() {
    let o = dsmrun(&[
        "-n",
        "3",
        "--timeout",
        "60",
        "sh",
        "-c",
        "if [ $DSM_RANK = 2 ]; then exit 7; fi; exec sleep 50",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("rank 2 exited with status 7"), "{t}");
    assert!(t.contains("stopping the 2 remaining rank(s)"), "{t}");
}

#[test]
fn stops_the_job_at_the_timeout() {
    let start = std::time::Instant::now();
    let o = dsmrun(&["-n", "2", "--timeout", "1", "sleep", "60"]);
    assert_eq!(o.status.code(), Some(124), "{}", text(&o));
    assert!(text(&o).contains("timeout after 1 s"), "{}", text(&o));
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_missing_program_is_a_clear_error() {
    let o = dsmrun(&["-n", "2", "/nonexistent/program"]);
    assert_eq!(o.status.code(), Some(127), "{}", text(&o));
    assert!(
        text(&o).contains("cannot start \"/nonexistent/program\""),
        "{}",
        text(&o)
    );
}

#[test]
fn wrong_arguments_are_refused() {
    for args in [
        &["-n", "0", "true"][..],
        &["-n", "two", "true"],
        &["-n", "2"],
        &["--transport", "smoke", "-n", "2", "true"],
        &["-n", "2", "--timeout", "-3", "true"],
        // An unknown option is an error, not a program named "--frobnicate" (exit 127).
        &["-n", "2", "--frobnicate", "true"],
        &["-n", "2", "--bind", "no-such-interface0", "true"],
        &["-n", "4097", "true"],
    ] {
        let o = dsmrun(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("error"), "{args:?}: {}", text(&o));
    }
}

#[test]
fn binds_to_an_interface_given_by_name() {
    let o = dsmrun(&["-n", "2", "--bind", "lo", "--timeout", "60", demo(), "64"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("every check passed"), "{}", text(&o));
}

#[test]
fn dsm_log_reaches_the_ranks_diagnostics() {
    // The library installs no subscriber; dsm-demo asks for one (`dsm_core::logging::init`),
    // which reads DSM_LOG: rank 0's bootstrap says at debug level who joined.
    let mut cmd = Command::new("timeout");
    cmd.args(["--kill-after=5", "120", DSMRUN])
        .args(["-n", "2", "--timeout", "60", demo(), "64"])
        .env("DSM_LOG", "dsm_core=debug");
    let o = cmd.output().expect("run dsmrun under timeout(1)");
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("DEBUG") && err.contains("joined from"),
        "{err}"
    );
}

#[test]
fn the_lines_of_different_ranks_never_mix() {
    // Each rank writes its lines in pieces (printf of one word at a time, no newline until the
    // end), many times: without forwarding whole lines, pieces of different ranks interleave.
    let script = "for i in $(seq 1 200); do printf 'rank%s ' $DSM_RANK; printf 'line%s ' $i; \
                  printf 'end%s\\n' $DSM_RANK; done >&2";
    let o = dsmrun(&["-n", "4", "--timeout", "60", "sh", "-c", script]);
    assert!(o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("rank")).collect();
    assert_eq!(lines.len(), 800, "{err}");
    for l in lines {
        let w: Vec<&str> = l.split(' ').collect();
        assert_eq!(w.len(), 3, "a mixed line: {l:?}");
        assert_eq!(w[0].strip_prefix("rank"), w[2].strip_prefix("end"), "{l:?}");
    }
}

#[test]
fn forwards_sigterm_to_the_ranks() {
    let mut child = Command::new(DSMRUN)
        .args([
            "-n",
            "2",
            "--timeout",
            "60",
            "sh",
            "-c",
            "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start dsmrun");
    // Wait for both ranks to be ready (their output), then interrupt dsmrun.
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut ready = 0;
    while ready < 2 {
        match lines.next() {
            Some(Ok(l)) if l.contains("ready") => ready += 1,
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(ready, 2);
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert_eq!(
        rest.iter().filter(|l| l.contains("got-term")).count(),
        2,
        "{rest:?}"
    );
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}

#[test]
fn a_leftover_child_holding_the_output_does_not_hang_the_launcher() {
    let start = std::time::Instant::now();
    let o = dsmrun(&[
        "-n",
        "2",
        "--tag-output",
        "--timeout",
        "60",
        "sh",
        "-c",
        "sleep 60 & echo started",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("[1] started"),
        "{}",
        text(&o)
    );
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}
