//! # dsm-launcher: `dsmrun` and the launch API
//!
//! The local launcher behind `dsmrun`: starts N processes of one program with the bootstrap
//! environment, supervises them, and stops them all when one fails, when the time is up, or when
//! the launcher is interrupted. Tests use it too, so a hung job fails instead of stalling.
//!
//! All ranks run in one new process group, so that stopping the job also stops anything the
//! ranks started themselves.
//!
//! ## Quick start
//!
//! ```no_run
//! use std::time::Duration;
//! use dsm_launcher::{launch, LaunchOptions};
//!
//! let mut options = LaunchOptions::new(4, "target/release/dsm-demo");
//! options.timeout = Some(Duration::from_secs(60));
//! let report = launch(options)?.wait();
//! assert_eq!(report.exit_code, 0, "{}", report.output);
//! # Ok::<(), dsm_core::Error>(())
//! ```
//!
//! The crate is apart from `dsm-core` so that the runtime a program links carries no
//! command-line parser and installs no signal handlers of the launcher's; the runtime itself
//! reads only the environment set here (`docs/ENVIRONMENT.md`). Errors are `dsm_core`'s:
//! [`Error::Launch`] when a process cannot be started.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use transport::Secret;

use dsm_core::config::var;
use dsm_core::error::{Error, Result};

/// How to start a job.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// Number of processes (nodes).
    pub nodes: usize,
    /// The program to run.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// `DSM_TRANSPORT` for the nodes (`auto`, `tcp`, `verbs`, `shm`); `None` leaves it unset.
    pub transport: Option<String>,
    /// Stop the whole job after this long.
    pub timeout: Option<Duration>,
    /// Prefix every output line with `[rank] `.
    pub tag_output: bool,
    /// Address the coordinator and the nodes' listeners bind to.
    pub bind: IpAddr,
    /// Extra environment for every node.
    pub env: Vec<(OsString, OsString)>,
    /// After asking the ranks to stop (SIGTERM), wait this long before killing them (SIGKILL).
    pub grace: Duration,
    /// Forward SIGINT and SIGTERM received by this process to the ranks (for `dsmrun` itself).
    pub forward_signals: bool,
    /// Stop the other ranks as soon as one fails (the default, as `mpirun` does). When false,
    /// the others run on until they end by themselves or the timeout passes.
    pub stop_on_failure: bool,
    /// Copy the ranks' tagged output here instead of this process's stdout/stderr (tests).
    pub capture_output: bool,
}

impl LaunchOptions {
    /// `nodes` copies of `program`, bound to loopback, with no timeout.
    pub fn new(nodes: usize, program: impl Into<OsString>) -> LaunchOptions {
        LaunchOptions {
            nodes,
            program: program.into(),
            args: Vec::new(),
            transport: None,
            timeout: None,
            tag_output: false,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            env: Vec::new(),
            grace: Duration::from_secs(3),
            forward_signals: false,
            stop_on_failure: true,
            capture_output: false,
        }
    }
}

/// How one rank ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankEnd {
    /// Still running when the launcher gave up on it (it was then killed).
    Unknown,
    /// It exited or was killed.
    Exited(ExitStatus),
}

/// How the whole job ended.
#[derive(Debug, Clone)]
pub struct Report {
    /// The launcher's exit status: 0 when every rank succeeded; the first failing rank's status
    /// (128 + signal for a signal); 124 after a timeout; 128 + signal when interrupted.
    pub exit_code: i32,
    /// What went wrong, naming the rank; `None` on success.
    pub failure: Option<String>,
    /// The rank whose failure ended the job, when that is what ended it (not a timeout or a
    /// signal to the launcher): a job `dsmrun --max-restarts` may start again.
    pub failed_rank: Option<usize>,
    /// How each rank ended.
    pub ranks: Vec<RankEnd>,
    /// The tagged output of every rank, when [`LaunchOptions::capture_output`] was set.
    pub output: String,
}

enum Event {
    Exited(usize, std::io::Result<ExitStatus>),
    Signal(i32),
    Line(String),
    /// A rank's stdout or stderr reached its end.
    OutputClosed,
}

/// A running job. Dropping it kills every rank that is still running.
pub struct Job {
    pgid: libc::pid_t,
    alive: usize,
    ranks: Vec<RankEnd>,
    events: Receiver<Event>,
    options: LaunchOptions,
    started: Instant,
    threads: Vec<JoinHandle<()>>,
    /// Output-copying threads still running.
    copiers: usize,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("pgid", &self.pgid)
            .field("alive", &self.alive)
            .finish()
    }
}

fn describe(status: ExitStatus) -> (String, i32) {
    if let Some(code) = status.code() {
        (format!("exited with status {code}"), code)
    } else if let Some(sig) = status.signal() {
        (
            format!("was killed by signal {sig} ({})", signal_name(sig)),
            128 + sig,
        )
    } else {
        ("ended in an unknown way".into(), 1)
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Starts the job.
///
/// # Errors
/// [`Error::Launch`] when `nodes` is 0 or a process cannot be started (for example, the program
/// does not exist); processes already started are killed.
pub fn launch(options: LaunchOptions) -> Result<Job> {
    if options.nodes == 0 {
        return Err(Error::Launch(
            "the number of nodes must be at least 1".into(),
        ));
    }
    let secret = match std::env::var(var::SECRET) {
        Ok(s) => Secret::from_hex(&s)
            .map_err(|_| Error::Config(format!("{} must be 64 hexadecimal digits", var::SECRET)))?,
        Err(_) => Secret::generate()?,
    };
    // Bind the coordinator here and hand the socket to rank 0: no port can be taken in between.
    let coordinator = TcpListener::bind(SocketAddr::new(options.bind, 0))
        .map_err(|e| Error::io(format!("binding the coordinator on {}", options.bind), e))?;
    let coord_addr = coordinator
        .local_addr()
        .map_err(|e| Error::io("reading the coordinator address", e))?;
    let coord_fd = coordinator.as_raw_fd();
    let (tx, events) = channel();
    let mut job = Job {
        pgid: 0,
        alive: 0,
        ranks: vec![RankEnd::Unknown; options.nodes],
        events,
        options: options.clone(),
        started: Instant::now(),
        threads: Vec::new(),
        copiers: 0,
    };
    if options.forward_signals {
        forward_signals(tx.clone())?;
    }
    let mut children: Vec<Child> = Vec::with_capacity(options.nodes);
    for rank in 0..options.nodes {
        let mut cmd = Command::new(&options.program);
        cmd.args(&options.args)
            .env(var::RANK, rank.to_string())
            .env(var::NODES, options.nodes.to_string())
            .env(var::COORDINATOR, coord_addr.to_string())
            .env(var::SECRET, secret.to_hex())
            .env(var::BIND, options.bind.to_string())
            .env_remove(var::COORDINATOR_FD)
            .process_group(job.pgid);
        if let Some(t) = &options.transport {
            cmd.env(var::TRANSPORT, t);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let inherit_fd = (rank == 0).then_some(coord_fd);
        if let Some(fd) = inherit_fd {
            cmd.env(var::COORDINATOR_FD, fd.to_string());
        }
        // Ranks run in a background process group: one that read a terminal would be stopped
        // (SIGTTIN). Rank 0 gets our stdin only when it is a pipe or a file.
        // SAFETY: isatty has no memory-safety preconditions.
        let stdin_is_tty = unsafe { libc::isatty(0) } == 1;
        if rank != 0 || stdin_is_tty {
            cmd.stdin(Stdio::null());
        }
        let launcher_pid = std::process::id() as libc::pid_t;
        let prepare_child = move || {
            // Die with the launcher, even when it is killed with SIGKILL and cannot clean up.
            // SAFETY: prctl(PR_SET_PDEATHSIG) has no memory-safety preconditions and is
            // async-signal-safe (this runs between fork and exec).
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: getppid has no preconditions. The launcher may have died before prctl.
            if unsafe { libc::getppid() } != launcher_pid {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(fd) = inherit_fd {
                // SAFETY: `fcntl(F_SETFD)` on a descriptor this process owns has no
                // memory-safety preconditions, and it is async-signal-safe. It clears
                // close-on-exec so that rank 0 inherits the coordinator socket.
                if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        };
        // SAFETY: the closure runs in the child between fork and exec; it only calls `prctl`,
        // `getppid` and `fcntl`, which are async-signal-safe, allocates nothing (its errors are
        // bare errno values) and takes no lock, so it is sound in the fork of a threaded process.
        unsafe { cmd.pre_exec(prepare_child) };
        // Always through pipes, forwarded a whole line at a time: the lines of different ranks
        // never mix mid-line (a rank's own writes may be partial lines).
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                for mut c in children {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                job.alive = 0;
                return Err(Error::Launch(format!(
                    "cannot start {:?} for rank {rank}: {e}",
                    options.program
                )));
            }
        };
        if job.pgid == 0 {
            job.pgid = child.id() as libc::pid_t;
        }
        job.alive += 1;
        {
            let out = child.stdout.take();
            let err = child.stderr.take();
            for (stream, is_err) in [
                (out.map(|s| Box::new(s) as Box<dyn Read + Send>), false),
                (err.map(|s| Box::new(s) as Box<dyn Read + Send>), true),
            ] {
                if let Some(s) = stream {
                    let tx = tx.clone();
                    let capture = options.capture_output;
                    let tag = options.tag_output || capture;
                    job.copiers += 1;
                    // Detached: a rank's leftover child may hold the pipe open (see `wait`).
                    std::thread::spawn(move || {
                        copy_lines(rank, s, is_err, tag, capture, &tx);
                        let _ = tx.send(Event::OutputClosed);
                    });
                }
            }
        }
        children.push(child);
    }
    // Reap only now: an exited but unreaped leader still holds the process group open for the
    // ranks started after it.
    for (rank, child) in children.into_iter().enumerate() {
        let tx = tx.clone();
        job.threads
            .push(std::thread::spawn(move || wait_child(rank, child, &tx)));
    }
    drop(coordinator);
    Ok(job)
}

fn wait_child(rank: usize, mut child: Child, tx: &Sender<Event>) {
    let _ = tx.send(Event::Exited(rank, child.wait()));
}

/// Copies one rank's stream a whole line at a time (a last line without its newline gets one),
/// prefixed with `[rank] ` when `tag` is set, to this process's stream or, when `capture` is
/// set, to the job's events.
fn copy_lines(
    rank: usize,
    stream: Box<dyn Read + Send>,
    is_err: bool,
    tag: bool,
    capture: bool,
    tx: &Sender<Event>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                if capture {
                    let text = format!("[{rank}] {}", String::from_utf8_lossy(&line));
                    let _ = tx.send(Event::Line(text));
                    continue;
                }
                if tag {
                    line.splice(0..0, format!("[{rank}] ").into_bytes());
                }
                // One write per line, under the stream's lock: lines stay whole.
                let _ = if is_err {
                    std::io::stderr().lock().write_all(&line)
                } else {
                    std::io::stdout().lock().write_all(&line)
                };
            }
        }
    }
}

fn forward_signals(tx: Sender<Event>) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])
        .map_err(|e| Error::io("installing signal handlers", e))?;
    std::thread::Builder::new()
        .name("dsmrun-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| Error::io("starting the signal thread", e))?;
    Ok(())
}

impl Job {
    fn signal_all(&self, sig: i32) {
        if self.alive > 0 && self.pgid > 0 {
            // SAFETY: `kill` has no memory-safety preconditions; a negative pid addresses the
            // process group we created, which still has members (`alive > 0`).
            unsafe { libc::kill(-self.pgid, sig) };
        }
    }

    /// Records the first failure and asks every remaining rank to stop (SIGTERM now, SIGKILL
    /// after the grace period).
    fn stop(
        &self,
        why: (String, i32),
        failure: &mut Option<(String, i32)>,
        kill_at: &mut Option<Instant>,
    ) {
        if failure.is_none() {
            if !self.options.capture_output {
                eprintln!("dsmrun: {}", why.0);
            }
            *failure = Some(why);
        }
        if kill_at.is_none() {
            if self.alive > 0 && !self.options.capture_output {
                eprintln!("dsmrun: stopping the {} remaining rank(s)", self.alive);
            }
            self.signal_all(libc::SIGTERM);
            *kill_at = Some(Instant::now() + self.options.grace);
        }
    }

    /// Supervises the job until every rank has ended, and says how it went.
    pub fn wait(mut self) -> Report {
        let deadline = self.options.timeout.map(|t| self.started + t);
        let mut failure: Option<(String, i32)> = None;
        let mut failed_rank: Option<usize> = None;
        let mut kill_at: Option<Instant> = None;
        let mut output = String::new();
        while self.alive > 0 {
            let now = Instant::now();
            let next = [deadline.filter(|_| kill_at.is_none()), kill_at]
                .into_iter()
                .flatten()
                .min();
            let event = match next {
                Some(t) if t <= now => Err(RecvTimeoutError::Timeout),
                Some(t) => self.events.recv_timeout(t - now),
                None => self
                    .events
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match event {
                Ok(Event::Exited(rank, status)) => {
                    self.alive -= 1;
                    match status {
                        Ok(st) => {
                            self.ranks[rank] = RankEnd::Exited(st);
                            if !st.success() && kill_at.is_none() {
                                if failure.is_none() {
                                    failed_rank = Some(rank);
                                }
                                let (what, code) = describe(st);
                                if !self.options.stop_on_failure {
                                    failure.get_or_insert((format!("rank {rank} {what}"), code));
                                    continue;
                                }
                                self.stop(
                                    (format!("rank {rank} {what}"), code),
                                    &mut failure,
                                    &mut kill_at,
                                );
                            }
                        }
                        Err(e) => self.stop(
                            (format!("lost track of rank {rank}: {e}"), 1),
                            &mut failure,
                            &mut kill_at,
                        ),
                    }
                }
                Ok(Event::Signal(sig)) => {
                    if kill_at.is_some() {
                        self.signal_all(libc::SIGKILL);
                    } else {
                        // `stop` sends SIGTERM itself: a forwarded SIGTERM is not sent twice
                        // (a rank's handler would run twice).
                        if sig != libc::SIGTERM {
                            self.signal_all(sig);
                        }
                        self.stop(
                            (format!("interrupted by {}", signal_name(sig)), 128 + sig),
                            &mut failure,
                            &mut kill_at,
                        );
                    }
                }
                Ok(Event::Line(l)) => output.push_str(&l),
                Ok(Event::OutputClosed) => self.copiers -= 1,
                Err(RecvTimeoutError::Timeout) => {
                    if kill_at.is_some_and(|k| Instant::now() >= k) {
                        self.signal_all(libc::SIGKILL);
                        kill_at = Some(Instant::now() + Duration::from_secs(3600));
                    } else if kill_at.is_none() {
                        let secs = self.options.timeout.unwrap_or_default().as_secs_f64();
                        self.stop(
                            (format!("timeout after {secs} s"), 124),
                            &mut failure,
                            &mut kill_at,
                        );
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Collect the rest of the output. A process the ranks left behind may still hold their
        // pipes: after a grace period, kill what is left of the group (it still exists while
        // such a process lives) and stop waiting.
        let mut output_deadline = Instant::now() + Duration::from_secs(2);
        let mut killed_leftovers = false;
        while self.copiers > 0 {
            match self
                .events
                .recv_timeout(output_deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Event::Line(l)) => output.push_str(&l),
                Ok(Event::OutputClosed) => self.copiers -= 1,
                Ok(_) => {}
                Err(_) if !killed_leftovers => {
                    // SAFETY: kill has no memory-safety preconditions; the group is ours.
                    unsafe { libc::kill(-self.pgid, libc::SIGKILL) };
                    killed_leftovers = true;
                    output_deadline = Instant::now() + Duration::from_secs(1);
                }
                Err(_) => break,
            }
        }
        let (failure, exit_code) = match failure {
            Some((m, c)) => (Some(m), c),
            None => (None, 0),
        };
        Report {
            exit_code,
            failure,
            failed_rank,
            ranks: self.ranks.clone(),
            output,
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.signal_all(libc::SIGKILL);
    }
}
