//! Helpers for the multi-process integration tests: start a job of one of this crate's
//! programs through the launcher, always with a hard timeout, and read how it ended.

use std::time::Duration;

use dsm_core::launcher::{launch, LaunchOptions, Report};

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
