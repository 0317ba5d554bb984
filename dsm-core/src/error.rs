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
    /// A checkpoint could not be taken, or a restart cannot resume from the checkpoints (the
    /// message names the rank and the file).
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// An access to global memory that no allocation covers.
    #[error("access to unallocated global memory at {0:#x}")]
    Unallocated(usize),
    /// The global heap has no room for the request (nothing was changed).
    #[error("global memory exhausted: no room for {requested} bytes")]
    OutOfMemory {
        /// Bytes asked for.
        requested: usize,
    },
    /// A pointer that is not what the call needs (not a live allocation, not global memory).
    #[error("invalid global pointer {0:#x}")]
    InvalidPointer(usize),
    /// A global word or lock that is outside global memory or not aligned.
    #[error("{0:#x} is not an aligned word of global memory")]
    Misaligned(usize),
    /// `unlock` of a lock this node does not hold: unlocked already, never locked, or held by
    /// another node. Nothing was changed.
    #[error("the lock at {0:#x} is not held by this node (a second unlock, or an unlock without a lock)")]
    LockNotHeld(usize),
    /// `lock` of a lock the calling thread holds already: waiting would never end. Nothing was
    /// changed.
    #[error("the lock at {0:#x} is already held by this thread: taking it again would deadlock")]
    LockHeldByCaller(usize),
    /// A node that is not in the job (a placement on node `node` of a job of `nodes` nodes).
    /// Nothing was changed.
    #[error("there is no node {node} in a job of {nodes} nodes")]
    NoSuchNode {
        /// The node asked for.
        node: Rank,
        /// The number of nodes of the job.
        nodes: usize,
    },
    /// The nodes made a collective call with different arguments, or are in different
    /// collective calls; every node gets this error, and nothing was changed.
    #[error("collective call mismatch: {0}")]
    CollectiveMismatch(String),
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
