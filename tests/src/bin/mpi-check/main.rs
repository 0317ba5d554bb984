//! Checks of the MPI-style API on a real job: run as `dsmrun -n N mpi-check <part>...`, where
//! each part is `p2p`, `nonblocking`, `threads`, `collectives`, `rma`, `pscw`, `created`,
//! `raw`, `errors` or `split`; or as `dsmrun -n 3 mpi-check lost` with
//! `DSM_ON_PEER_LOST=error` (a rank leaves the job; see `errors::lost`).
//! Every check compares with the value it must have; the first mismatch exits non-zero.

use std::process::ExitCode;

use mpi_compat::RequestFailed;

/// What a check returns: `Err` names the line that found the mismatch.
type Check = Result<(), String>;

/// [`ok`] for `wait_any` and `test_any`.
#[track_caller]
fn ok_any<T>(r: Result<T, RequestFailed>) -> Result<T, String> {
    let at = std::panic::Location::caller();
    r.map_err(|e| format!("{at}: unexpected error: {e}"))
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)*)));
        }
    };
}

/// The value, or a message naming the caller's line and the error.
#[track_caller]
fn ok<T>(r: mpi_compat::Result<T>) -> Result<T, String> {
    let at = std::panic::Location::caller();
    r.map_err(|e| format!("{at}: unexpected error: {e}"))
}

mod collectives;
mod errors;
mod p2p;
mod rma;

fn main() -> ExitCode {
    dsm_core::logging::init();
    let parts: Vec<String> = std::env::args().skip(1).collect();
    let universe = match mpi_compat::initialize() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("mpi-check: initialize: {e}");
            return ExitCode::from(2);
        }
    };
    let world = universe.world();
    for part in &parts {
        let r = match part.as_str() {
            "p2p" => p2p::p2p(&world),
            "nonblocking" => p2p::nonblocking(&world),
            "threads" => p2p::threads(&world),
            "collectives" => collectives::collectives(&world),
            "rma" => rma::rma(&world),
            "pscw" => rma::pscw(&world),
            "created" => rma::created(&world, universe.dsm()),
            "raw" => rma::raw_and_dynamic(&world, universe.dsm()),
            "errors" => errors::errors(&world),
            "split" => collectives::split(&world),
            "lost" => errors::lost(&world, universe.dsm()),
            other => Err(format!("unknown part {other:?}")),
        };
        if let Err(e) = r {
            eprintln!("mpi-check: rank {}: {part}: {e}", world.rank());
            return ExitCode::from(1);
        }
        println!("rank {}: {part} ok", world.rank());
    }
    drop(world);
    if parts.iter().any(|p| p == "lost") {
        // A rank has left: finalizing (a collective) would fail; dropping the runtime is the
        // survivors' clean-up.
        drop(universe);
        return ExitCode::SUCCESS;
    }
    match universe.finalize() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpi-check: finalize: {e}");
            ExitCode::from(1)
        }
    }
}
