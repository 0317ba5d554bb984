//! The transport's error type.

use crate::rank::Rank;

/// Why a remote operation was refused by the node that owns the memory.
///
/// These travel on the wire as status codes (see [`crate::wire`]), so their numbering is part
/// of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemoteFault {
    /// No region is registered under the key.
    BadKey,
    /// The range does not lie inside the registered region.
    OutOfBounds,
    /// An 8-byte atomic was aimed at an address that is not 8-byte aligned.
    Misaligned,
    /// The request was well formed but the peer does not implement it.
    Unsupported,
    /// The peer could not pin the memory for the device (its bound on pinned memory, or its
    /// locked-memory limit, is reached).
    NoMemory,
}

impl RemoteFault {
    /// The wire status code of this fault.
    pub fn code(self) -> u32 {
        match self {
            RemoteFault::BadKey => 1,
            RemoteFault::OutOfBounds => 2,
            RemoteFault::Misaligned => 3,
            RemoteFault::Unsupported => 4,
            RemoteFault::NoMemory => 5,
        }
    }

    /// The fault for a wire status code, or `None` for an unknown code.
    pub fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => RemoteFault::BadKey,
            2 => RemoteFault::OutOfBounds,
            3 => RemoteFault::Misaligned,
            4 => RemoteFault::Unsupported,
            5 => RemoteFault::NoMemory,
            _ => return None,
        })
    }
}

impl std::fmt::Display for RemoteFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemoteFault::BadKey => "no region is registered under this key",
            RemoteFault::OutOfBounds => "range outside the registered region",
            RemoteFault::Misaligned => "atomic target is not 8-byte aligned",
            RemoteFault::Unsupported => "operation not supported by the peer",
            RemoteFault::NoMemory => {
                "the peer could not pin the memory (pinned-memory bound reached)"
            }
        })
    }
}

/// Everything that can go wrong in a transport.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer refused a one-sided operation; nothing was read or written.
    #[error("rank {peer} refused the operation: {fault}")]
    Remote {
        /// The rank that owns the memory.
        peer: Rank,
        /// What it objected to.
        fault: RemoteFault,
    },
    /// A local argument is out of range (a slice outside its region, a rank beyond the job...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The local buffer of an operation is not registered with this transport.
    #[error("local region {0} is not registered with this transport")]
    NotRegistered(u64),
    /// The peer disappeared (connection reset, closed without saying goodbye, or silent for longer
    /// than the peer timeout). The job cannot go on with it.
    #[error("lost rank {peer}: {reason}")]
    PeerLost {
        /// The rank that was lost.
        peer: Rank,
        /// What was observed.
        reason: String,
    },
    /// The peer closed its transport in an orderly way; no further operation can reach it.
    #[error("rank {0} has closed its transport")]
    PeerClosed(Rank),
    /// A peer sent something that breaks the wire protocol; its connection was closed.
    #[error("protocol violation by rank {from}: {detail}")]
    Protocol {
        /// The rank that sent the bad data (or the claimed rank during a handshake).
        from: Rank,
        /// What was wrong with it.
        detail: String,
    },
    /// Authentication of a connecting node failed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The operation did not finish in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The backend or its hardware cannot do this.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// This transport has been closed.
    #[error("the transport is closed")]
    Closed,
    /// An operating-system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error (shared so that the error can be cloned to every waiter).
        source: std::sync::Arc<std::io::Error>,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: std::sync::Arc::new(source),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
