//! `dsmrun`: start a DSM job of N local processes, like `mpirun` for one machine.

use std::ffi::OsString;
use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
use dsm_core::launcher::{launch, LaunchOptions};

/// Start N processes of PROGRAM as the nodes of one DSM job on this machine.
///
/// Each process gets its rank, the job size, the coordinator's address and a fresh job secret in
/// its environment (see docs/ENVIRONMENT.md). When any process fails, is killed, or the timeout
/// passes, dsmrun stops the others and exits non-zero, naming the rank and what happened.
#[derive(Debug, Parser)]
#[command(name = "dsmrun", version, about, long_about = None)]
struct Args {
    /// Number of processes (nodes) to start.
    #[arg(short = 'n', long = "nodes", value_parser = clap::value_parser!(u32).range(1..=1024))]
    nodes: u32,
    /// Transport between the nodes.
    #[arg(long, value_parser = ["auto", "tcp", "verbs"])]
    transport: Option<String>,
    /// Stop the whole job after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    timeout: Option<Duration>,
    /// Prefix every output line with the rank that printed it.
    #[arg(long)]
    tag_output: bool,
    /// Address the nodes bind their listeners to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The program, then its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]"
    )]
    command: Vec<OsString>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a positive number of seconds"))
}

fn main() {
    let args = Args::parse();
    let mut command = args.command.into_iter();
    let Some(program) = command.next() else {
        eprintln!("dsmrun: no program given");
        std::process::exit(2);
    };
    let mut options = LaunchOptions::new(args.nodes as usize, program);
    options.args = command.collect();
    options.transport = args.transport;
    options.timeout = args.timeout;
    options.tag_output = args.tag_output;
    options.bind = args.bind;
    options.forward_signals = true;
    let job = match launch(options) {
        Ok(job) => job,
        Err(e) => {
            eprintln!("dsmrun: {e}");
            std::process::exit(127);
        }
    };
    let report = job.wait();
    std::process::exit(report.exit_code);
}
