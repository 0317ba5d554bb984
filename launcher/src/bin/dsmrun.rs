//! `dsmrun`: start a DSM job of N local processes, like `mpirun` for one machine.

use std::ffi::OsString;
use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use dsm_core::config::RdmaSettings;
use dsm_core::fault::{userfaultfd_support, FaultMode};
use dsm_launcher::{launch, LaunchOptions};
use transport::verbs::VerbsConfig;

/// Start N processes of PROGRAM as the nodes of one DSM job on this machine.
///
/// Each process gets its rank, the job size, the coordinator's address and a fresh job secret in
/// its environment (see docs/ENVIRONMENT.md). When any process fails, is killed, or the timeout
/// passes, dsmrun stops the others and exits non-zero, naming the rank and what happened.
///
/// With `--restart`, the job resumes from the newest whole checkpoint in `DSM_CHECKPOINT_DIR`
/// (`DSM_RESTART=1` for every rank). With `--max-restarts K`, a job that a rank's failure
/// stopped is started again from its newest whole checkpoint, up to K times.
///
/// `dsmrun --info` starts nothing: it says which fault engines and transports can run on this
/// machine, and why not where one cannot.
#[derive(Debug, Parser)]
#[command(name = "dsmrun", version, about, long_about = None)]
struct Args {
    /// Number of processes (nodes) to start (1 to 4096; the shared memory holds 4096 nodes, and
    /// the machine's process, thread and file limits bound what one host can start).
    #[arg(short = 'n', long = "nodes", value_parser = clap::value_parser!(u32).range(1..=4096),
          required_unless_present = "info")]
    nodes: Option<u32>,
    /// Transport between the nodes.
    #[arg(long, value_parser = ["auto", "tcp", "verbs", "shm"])]
    transport: Option<String>,
    /// Stop the whole job after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Prefix every output line with the rank that printed it.
    #[arg(long)]
    tag_output: bool,
    /// Address the nodes bind their listeners to: an IP address or a network interface's name
    /// (its first IPv4 address).
    #[arg(long, default_value = "127.0.0.1", value_parser = parse_bind)]
    bind: IpAddr,
    /// Resume from the newest whole checkpoint in DSM_CHECKPOINT_DIR (sets DSM_RESTART=1).
    #[arg(long)]
    restart: bool,
    /// When a rank fails, stop the job and start it again from its newest whole checkpoint
    /// (DSM_RESTART=1), up to this many times. Needs DSM_CHECKPOINT_DIR.
    #[arg(long, value_name = "K", default_value_t = 0)]
    max_restarts: u32,
    /// Say which fault engines and transports can run here, and why not, then exit.
    #[arg(long, exclusive = true)]
    info: bool,
    /// The program, then its arguments.
    #[arg(
        required_unless_present = "info",
        trailing_var_arg = true,
        value_name = "PROGRAM [ARGS]"
    )]
    command: Vec<OsString>,
}

fn parse_bind(s: &str) -> Result<IpAddr, String> {
    dsm_core::config::parse_bind(s).map_err(|e| e.to_string())
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}

/// One line per fault engine and transport: `NAME: available[ (detail)]` or
/// `NAME: unavailable: REASON`. Scripts read it (`scripts/test.sh` requires the userfaultfd
/// tests where the engine is available).
fn info() {
    let line = |name: &str, r: Result<String, String>| match r {
        Ok(detail) if detail.is_empty() => println!("{name}: available"),
        Ok(detail) => println!("{name}: available ({detail})"),
        Err(why) => println!("{name}: unavailable: {why}"),
    };
    println!("dsmrun {}", env!("CARGO_PKG_VERSION"));
    line("fault engine sigsegv", Ok(String::new()));
    for (name, mode) in [
        ("fault engine uffd inline", FaultMode::Inline),
        (
            "fault engine uffd handoff",
            FaultMode::Handoff { threads: 1 },
        ),
    ] {
        line(
            name,
            userfaultfd_support(mode)
                .map(|()| String::new())
                .map_err(|e| e.to_string()),
        );
    }
    line("transport tcp", Ok(String::new()));
    let verbs = RdmaSettings::from_env()
        .map_err(|e| e.to_string())
        .and_then(|rdma| {
            let config = VerbsConfig {
                device: rdma.device,
                port: rdma.port,
                gid_index: rdma.gid_index,
                ..VerbsConfig::default()
            };
            transport::verbs::probe(&config).map_err(|e| e.to_string())
        });
    line("transport verbs", verbs);
}

fn main() {
    dsm_core::logging::init();
    let args = Args::parse();
    if args.info {
        info();
        return;
    }
    let Some(nodes) = args.nodes else {
        eprintln!("dsmrun: -n NODES is required");
        std::process::exit(2);
    };
    let mut command = args.command.into_iter();
    let Some(program) = command.next() else {
        eprintln!("dsmrun: no program given");
        std::process::exit(2);
    };
    let mut options = LaunchOptions::new(nodes as usize, program);
    options.args = command.collect();
    options.transport = args.transport;
    options.timeout = args.timeout;
    options.tag_output = args.tag_output;
    options.bind = args.bind;
    options.forward_signals = true;
    if (args.restart || args.max_restarts > 0)
        && std::env::var_os("DSM_CHECKPOINT_DIR").is_none_or(|d| d.is_empty())
    {
        eprintln!("dsmrun: --restart and --max-restarts need DSM_CHECKPOINT_DIR (where the checkpoints are)");
        std::process::exit(2);
    }
    let restart_env = |o: &mut dsm_launcher::LaunchOptions| {
        o.env.push(("DSM_RESTART".into(), "1".into()));
    };
    if args.restart {
        restart_env(&mut options);
    }
    let mut restarts = 0;
    loop {
        let job = match launch(options.clone()) {
            Ok(job) => job,
            Err(e) => {
                eprintln!("dsmrun: {e}");
                // 127 only when the program could not be started, as a shell says it; 2 for
                // the rest (a bad setting, a bind that failed).
                let code = if matches!(e, dsm_core::Error::Launch(_)) {
                    127
                } else {
                    2
                };
                std::process::exit(code);
            }
        };
        let report = job.wait();
        match report.failed_rank {
            Some(rank) if restarts < args.max_restarts => {
                restarts += 1;
                eprintln!(
                    "dsmrun: rank {rank} failed ({}); restart {restarts} of {}: the job starts \
                     again from its newest whole checkpoint (rank 0 names the epoch)",
                    report.failure.as_deref().unwrap_or("no reason"),
                    args.max_restarts
                );
                if !options.env.iter().any(|(k, _)| k == "DSM_RESTART") {
                    restart_env(&mut options);
                }
            }
            _ => std::process::exit(report.exit_code),
        }
    }
}
