//! Helpers for the multi-process integration tests: start a job of one of this crate's
//! programs through the launcher, always with a hard timeout, and read how it ended.

use std::time::Duration;

pub mod scenario;

use dsm_launcher::{launch, LaunchOptions, Report};

/// Runs `program` as an `n`-node job with `args`, killed after `timeout`; the ranks' output is
/// captured into the report. Extra environment comes from `env`.
///
/// # Panics
/// When the job cannot be started at all (a broken test setup).
pub fn run_job(
    program: &str,
    n: usize,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> Report {
    let mut o = LaunchOptions::new(n, program);
    o.args = args.iter().map(Into::into).collect();
    o.env = env.iter().map(|(k, v)| (k.into(), v.into())).collect();
    o.timeout = Some(timeout);
    o.capture_output = true;
    o.grace = Duration::from_secs(2);
    launch(o).expect("start the job").wait()
}

/// How a job started by `mpiexec` ended.
#[derive(Debug)]
pub struct MpiexecReport {
    /// `mpiexec`'s exit status (`None`: killed, after the timeout).
    pub status: Option<i32>,
    /// Whether the timeout passed and the process group was killed.
    pub timed_out: bool,
    /// Standard output and standard error of every rank, as `mpiexec` forwarded them.
    pub output: String,
}

/// The MPICH Hydra launcher, when installed: `Ok(path)`, or `Err(why)` to print when skipping.
/// With `DSM_REQUIRE_MPIEXEC` set (CI), a missing launcher is a failure, not a skip.
///
/// # Panics
/// When `DSM_REQUIRE_MPIEXEC` is set and no `mpiexec.hydra` is found.
pub fn mpiexec() -> Result<std::path::PathBuf, String> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("mpiexec.hydra"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => Ok(p),
        None if std::env::var_os("DSM_REQUIRE_MPIEXEC").is_some() => {
            panic!("DSM_REQUIRE_MPIEXEC is set but mpiexec.hydra is not on PATH (install the Debian package mpich)")
        }
        None => Err("SKIPPED: mpiexec.hydra is not on PATH (install the Debian package mpich; scripts/setup.sh does)".into()),
    }
}

/// Runs `mpiexec.hydra -n N program args` in its own process group, with `env` added and every
/// `DSM_RANK`-style variable of this process removed (so the ranks must find each other through
/// PMI). After `timeout` the whole group is killed.
///
/// # Panics
/// When `mpiexec` cannot be started (a broken test setup).
pub fn run_mpiexec(
    mpiexec: &std::path::Path,
    n: usize,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    timeout: Duration,
) -> MpiexecReport {
    use std::io::Read;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let mut cmd = std::process::Command::new(mpiexec);
    cmd.arg("-n")
        .arg(n.to_string())
        .arg(program)
        .args(args)
        .env("MPIEXEC_TIMEOUT", timeout.as_secs().max(1).to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    for k in [
        "DSM_RANK",
        "DSM_NODES",
        "DSM_COORDINATOR",
        "DSM_COORDINATOR_FD",
        "DSM_SECRET",
        "DSM_SECRET_FILE",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start mpiexec.hydra");
    let pgid = child.id() as libc::pid_t;
    let mut readers = Vec::new();
    for mut pipe in [
        Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("piped")),
    ] {
        readers.push(std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        }));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let (status, timed_out) = match rx.recv_timeout(timeout + Duration::from_secs(5)) {
        Ok(s) => (s.ok(), false),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the group is the one we created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            (rx.recv().ok().and_then(Result::ok), true)
        }
    };
    let _ = waiter.join();
    // Whatever the ranks left behind in the group goes too, so the pipes close.
    // SAFETY: as above.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let output = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("");
    MpiexecReport {
        status: status.and_then(|s| s.code().or(s.signal().map(|n| 128 + n))),
        timed_out,
        output,
    }
}

/// How one process of [`run_by_hand`] ended.
#[derive(Debug)]
pub struct ProcessEnd {
    /// Its exit status (`None` when killed by a signal).
    pub status: Option<i32>,
    /// Its standard output and standard error.
    pub output: String,
}

/// Starts one process of `program` per entry of `envs` (each with that environment added to a
/// copy of this one from which every `DSM_`/`SLURM_`/`PMI_` variable was removed), all in one new
/// process group, as a person or a cluster launcher would start them; waits for all, and kills
/// the group after `timeout`. Processes are started in the order given.
///
/// # Panics
/// When a process cannot be started (a broken test setup).
pub fn run_by_hand(
    program: &str,
    args: &[&str],
    envs: &[Vec<(String, String)>],
    timeout: Duration,
) -> (Vec<ProcessEnd>, bool) {
    let mut job = ByHand::new(program, args, timeout);
    for env in envs {
        job.start(env);
    }
    job.wait()
}

/// A job started by hand one process at a time (see [`run_by_hand`]), so that a test can act
/// between two starts. The hard timeout counts from [`ByHand::new`]; the whole process group
/// is killed when it passes in [`ByHand::wait`], and at once when the `ByHand` is dropped
/// without waiting (a failed assertion in between).
#[derive(Debug)]
pub struct ByHand {
    program: String,
    args: Vec<String>,
    deadline: std::time::Instant,
    pgid: i32,
    waiters: Vec<std::thread::JoinHandle<std::io::Result<std::process::Output>>>,
}

impl ByHand {
    /// A job of `program args` that must end within `timeout`.
    pub fn new(program: &str, args: &[&str], timeout: Duration) -> ByHand {
        ByHand {
            program: program.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            deadline: std::time::Instant::now() + timeout,
            pgid: 0,
            waiters: Vec::new(),
        }
    }

    /// Starts one more process with `env` added (see [`run_by_hand`]); its process id.
    ///
    /// # Panics
    /// When the process cannot be started (a broken test setup).
    pub fn start(&mut self, env: &[(String, String)]) -> u32 {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(std::process::Stdio::null())
            .process_group(self.pgid);
        for (k, _) in std::env::vars() {
            if k.starts_with("DSM_") || k.starts_with("SLURM_") || k.starts_with("PMI_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().expect("start a process");
        let pid = child.id();
        if self.pgid == 0 {
            self.pgid = pid as i32;
        }
        // wait_with_output reads both pipes and waits: one thread per process.
        self.waiters
            .push(std::thread::spawn(move || child.wait_with_output()));
        pid
    }

    /// Waits for every process, killing the group when the timeout passes; how each ended (in
    /// the order started) and whether the timeout passed.
    pub fn wait(mut self) -> (Vec<ProcessEnd>, bool) {
        let waiters = std::mem::take(&mut self.waiters);
        let (tx, rx) = std::sync::mpsc::channel();
        let collector = std::thread::spawn(move || {
            let ends: Vec<ProcessEnd> = waiters
                .into_iter()
                .map(|w| match w.join() {
                    Ok(Ok(out)) => ProcessEnd {
                        status: out.status.code(),
                        output: format!(
                            "{}{}",
                            String::from_utf8_lossy(&out.stdout),
                            String::from_utf8_lossy(&out.stderr)
                        ),
                    },
                    _ => ProcessEnd {
                        status: None,
                        output: String::new(),
                    },
                })
                .collect();
            let _ = tx.send(ends);
        });
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        let (ends, timed_out) = match rx.recv_timeout(left) {
            Ok(e) => (e, false),
            Err(_) => {
                self.kill();
                (rx.recv().unwrap_or_default(), true)
            }
        };
        let _ = collector.join();
        self.pgid = 0;
        (ends, timed_out)
    }

    fn kill(&self) {
        if self.pgid > 0 {
            // SAFETY: kill has no memory-safety preconditions; the group is the one we created.
            unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
        }
    }
}

impl Drop for ByHand {
    fn drop(&mut self) {
        // Not waited for (a test failed in between): no process may outlive the test.
        self.kill();
    }
}

/// Builds `package`'s library (with its `cdylib`) into the profile directory `dir` of the
/// calling test, once per package and test process: `cargo test` builds only the rlib a test
/// links, so without this a test's C programs would load whatever `.so` an earlier
/// `cargo build` left there, perhaps stale.
///
/// # Panics
/// When `cargo build` fails (a broken test setup).
pub fn build_cdylib(dir: &std::path::Path, package: &str) {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.iter().any(|p| p == package) {
        return;
    }
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args(["build", "--lib", "-p", package]);
    if dir.file_name().is_some_and(|p| p == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    built.push(package.to_owned());
}
