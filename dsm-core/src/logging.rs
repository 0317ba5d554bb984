//! The runtime's diagnostics on stderr, for the programs that ask for them.
//!
//! The runtime reports through [`tracing`] (warnings such as a refused connection or a rank that
//! is gone; `debug` details of the bootstrap and the transport) and installs no subscriber of its
//! own: the process has one global subscriber, and it is the program's to choose. A program that
//! wants the runtime's diagnostics either installs its own subscriber, or calls [`init`] first:
//!
//! ```no_run
//! dsm_core::logging::init(); // stderr, filtered by DSM_LOG (default `warn`)
//! let d = dsm_core::Dsm::init()?;
//! # Ok::<(), dsm_core::Error>(())
//! ```
//!
//! The rule, in `docs/ENVIRONMENT.md` too: library calls (`Node::init`, `Dsm::init`,
//! `mpi_compat::initialize`) install nothing; the programs of this workspace (`dsmrun`,
//! `dsm-demo`, the test programs and the benchmarks) call [`init`]; so do the C entry points
//! `dsm_init` (libdsm) and `MPI_Init` (libdsmmpi), since a C program cannot install a Rust
//! subscriber itself.

use crate::config::var;

/// Sends the runtime's diagnostics to stderr, filtered by `DSM_LOG` (`error`, `warn`, `info`,
/// `debug`, or `tracing` directives such as `transport=debug`; default `warn`; a malformed
/// filter means `warn`). Does nothing when the process has a global subscriber already (the
/// program's own, or an earlier call's).
///
/// Returns whether this call installed the subscriber.
pub fn init() -> bool {
    let filter = std::env::var(var::LOG).unwrap_or_else(|_| "warn".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init()
        .is_ok()
}
