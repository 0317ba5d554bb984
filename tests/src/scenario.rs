//! What the scenario programs (`dsm-litmus`, `dsm-objects`) share: a scenario's outcome, the
//! checks that make one, and the `main` that joins the job, runs the scenario named by the
//! first argument, finalizes and reports `rank R: NAME ok` (or `FAILED: why`), which the
//! integration tests look for.

use std::process::ExitCode;

use dsm_core::Dsm;

/// A scenario's outcome: why it failed, if it did.
pub type Outcome = Result<(), String>;

/// A runtime error as a scenario's failure.
pub fn e(err: dsm_core::Error) -> String {
    err.to_string()
}

/// Fails with `what()` unless `cond` holds.
///
/// # Errors
/// `what()` when `cond` is false.
pub fn check(cond: bool, what: impl FnOnce() -> String) -> Outcome {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// The `main` of a scenario program called `program`: joins the job, runs `run` with the
/// scenario named by the first argument, then finalizes, except after a scenario in
/// `vanishing` (one where a rank leaves the job: a collective finalize would fail, so the
/// node is dropped, which must not hang either).
pub fn main(
    program: &str,
    vanishing: &[&str],
    run: impl FnOnce(&Dsm, &str) -> Outcome,
) -> ExitCode {
    dsm_core::logging::init();
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let d = match Dsm::init() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("{program}: cannot start: {err}");
            return ExitCode::from(2);
        }
    };
    let r = run(&d, &scenario);
    let rank = d.rank();
    let r = if vanishing.contains(&scenario.as_str()) {
        r.map(|()| drop(d))
    } else {
        r.and_then(|()| d.finalize().map_err(e))
    };
    match r {
        Ok(()) => {
            println!("rank {rank}: {scenario} ok");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("rank {rank}: {scenario} FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}
