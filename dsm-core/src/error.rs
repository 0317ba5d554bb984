//! The error type of `dsm-core`.

use transport::Rank;

/// Everything that can go wrong in the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting (environment variable or option) is missing or malformed.
    #[error("configuration: {0}")]
    Config(String),
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] transport::Error),
    /// The bootstrap could not assemble the job.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    /// A peer sent bytes that break the bootstrap protocol.
    #[error("bootstrap protocol violation by rank {from}: {detail}")]
    Protocol {
        /// The rank that sent them (as far as it is known).
        from: Rank,
        /// What was wrong.
        detail: String,
    },
    /// A peer disappeared.
    #[error("lost rank {0}")]
    PeerLost(Rank),
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The launcher could not start or supervise a process.
    #[error("launch: {0}")]
    Launch(String),
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
