//! Start-up time of the runtime: from the moment the launcher was started (`DSM_BENCH_T0`,
//! nanoseconds since the epoch, set by the caller just before running `dsmrun`, `mpiexec` or
//! the nodes by hand) to the end of `Dsm::init` in this process, `Node::init`'s own time, and
//! the process's resident memory then.
//! Each rank prints one `RESULT {json}` line; the job's start-up time is the largest.
//!
//! `DSM_BENCH_T0=$(date +%s%N) mpiexec -n 4 startup_bench`

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use dsm_core::Dsm;

fn main() -> ExitCode {
    dsm_core::logging::init();
    let t0 = std::env::var("DSM_BENCH_T0")
        .ok()
        .and_then(|v| v.trim().parse::<u128>().ok());
    let d = match Dsm::init() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("startup_bench: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let since_launch_ms = t0.map(|t| now.saturating_sub(t) as f64 / 1e6);
    // Resident memory once started (the global range reserved, nothing allocated yet).
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        });
    println!(
        "RESULT {}",
        serde_json::json!({
            "bench": "startup",
            "rank": d.rank(),
            "nodes": d.nodes(),
            "launcher": d.node().launcher().to_string(),
            "since_launch_ms": since_launch_ms,
            "node_init_ms": d.node().init_time().as_secs_f64() * 1e3,
            "rss_kib": rss_kib,
        })
    );
    match d.finalize() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("startup_bench: finalize: {err}");
            ExitCode::FAILURE
        }
    }
}
