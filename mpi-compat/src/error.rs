//! Errors, and the MPI error classes they map to (MPI-3.1 §8.4, "Error Codes and Classes").

/// The MPI error class of an [`Error`] (MPI-3.1 §8.4, Table 8.2). The numeric values are
/// MPICH's, so that a C caller comparing against `mpi.h` constants sees the usual numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(i32)]
pub enum ErrorClass {
    /// `MPI_ERR_BUFFER`: an invalid buffer.
    Buffer = 1,
    /// `MPI_ERR_COUNT`: an invalid count.
    Count = 2,
    /// `MPI_ERR_TYPE`: an invalid datatype.
    Type = 3,
    /// `MPI_ERR_TAG`: an invalid tag.
    Tag = 4,
    /// `MPI_ERR_COMM`: an invalid communicator.
    Comm = 5,
    /// `MPI_ERR_RANK`: an invalid rank.
    Rank = 6,
    /// `MPI_ERR_ROOT`: an invalid root.
    Root = 7,
    /// `MPI_ERR_GROUP`: an invalid group.
    Group = 8,
    /// `MPI_ERR_OP`: an invalid or unsupported reduction operation.
    Op = 9,
    /// `MPI_ERR_ARG`: another invalid argument.
    Arg = 12,
    /// `MPI_ERR_UNKNOWN`: unknown error.
    Unknown = 13,
    /// `MPI_ERR_TRUNCATE`: a message longer than the receive buffer.
    Truncate = 14,
    /// `MPI_ERR_OTHER`: an error of the runtime below (transport, shared memory).
    Other = 15,
    /// `MPI_ERR_INTERN`: an internal error.
    Intern = 16,
    /// `MPI_ERR_DISP`: an invalid displacement.
    Disp = 28,
    /// `MPI_ERR_NO_MEM`: out of memory.
    NoMem = 34,
    /// `MPI_ERR_RMA_RANGE`: an RMA access outside the target window.
    RmaRange = 45,
    /// `MPI_ERR_RMA_SYNC`: an RMA call outside a matching epoch.
    RmaSync = 46,
    /// `MPI_ERR_WIN`: an invalid window.
    Win = 53,
    /// `MPI_ERR_PROC_FAILED`: a process the call needs has failed (MPI 4.0 ULFM class).
    ProcFailed = 75,
}

impl ErrorClass {
    /// Every class, for [`ErrorClass::from_code`].
    const ALL: [ErrorClass; 20] = [
        ErrorClass::Buffer,
        ErrorClass::Count,
        ErrorClass::Type,
        ErrorClass::Tag,
        ErrorClass::Comm,
        ErrorClass::Rank,
        ErrorClass::Root,
        ErrorClass::Group,
        ErrorClass::Op,
        ErrorClass::Arg,
        ErrorClass::Unknown,
        ErrorClass::Truncate,
        ErrorClass::Other,
        ErrorClass::Intern,
        ErrorClass::Disp,
        ErrorClass::NoMem,
        ErrorClass::RmaRange,
        ErrorClass::RmaSync,
        ErrorClass::Win,
        ErrorClass::ProcFailed,
    ];

    /// The class with this number (`MPI_ERR_*`), if it is one of this crate's.
    pub fn from_code(code: i32) -> Option<ErrorClass> {
        Self::ALL.into_iter().find(|c| *c as i32 == code)
    }
}

/// Everything that can go wrong in this crate. Each variant maps to one MPI error class
/// ([`Error::class`]); none of them leaves memory corrupted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rank outside `0..size` of the communicator (or group).
    #[error("invalid rank {rank}: the communicator has {size} ranks")]
    InvalidRank {
        /// The rank given.
        rank: i32,
        /// Size of the communicator.
        size: usize,
    },
    /// A negative tag, or one above [`crate::TAG_UB`].
    #[error("invalid tag {0}: tags are 0..={ub}", ub = crate::TAG_UB)]
    InvalidTag(i32),
    /// A count that does not fit the call (buffers of the wrong length, a count not a multiple
    /// of the element size).
    #[error("invalid count: {0}")]
    InvalidCount(String),
    /// A datatype the call cannot use (a bitwise operation on floating point, a window
    /// atomic on elements that do not divide 8 bytes).
    #[error("invalid datatype: {0}")]
    InvalidDatatype(String),
    /// An operation the call does not support.
    #[error("invalid operation: {0}")]
    InvalidOp(String),
    /// A message longer than the receive buffer; the message was consumed.
    #[error("message of {got} bytes truncated: the receive buffer holds {room}")]
    Truncate {
        /// Bytes that arrived.
        got: usize,
        /// Bytes the buffer holds.
        room: usize,
    },
    /// A communicator the call cannot use (for example a window over a communicator made by
    /// [`crate::Communicator::split`]).
    #[error("invalid communicator: {0}")]
    InvalidCommunicator(String),
    /// A window that cannot be used (freed, or created with inconsistent arguments).
    #[error("invalid window: {0}")]
    InvalidWindow(String),
    /// A displacement unit of zero, or a displacement whose byte offset overflows.
    #[error("invalid displacement: {0}")]
    InvalidDisplacement(String),
    /// An access outside the target's part of the window.
    #[error(
        "access of {len} bytes at offset {offset} is outside rank {rank}'s window of {size} bytes"
    )]
    OutOfWindow {
        /// Target rank.
        rank: i32,
        /// Byte offset of the access in the target's part.
        offset: usize,
        /// Bytes accessed.
        len: usize,
        /// Size of the target's part.
        size: usize,
    },
    /// An RMA call outside an epoch that allows it (for example a put before any fence or
    /// lock, or an unlock without a lock).
    #[error("RMA synchronisation: {0}")]
    RmaSync(String),
    /// A group argument that does not fit (a rank listed twice, or outside the group).
    #[error("invalid group: {0}")]
    InvalidGroup(String),
    /// Another invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Another rank failed its part of a collective call (for example `MPI_Win_free` while it
    /// still held a lock): every rank learns of it in the call, so that none waits forever, and
    /// returns the failing rank's class.
    #[error("rank {rank} failed its part of this collective call ({class:?})")]
    FailedElsewhere {
        /// The rank that failed (the one with the highest class when several did).
        rank: i32,
        /// Its error class.
        class: ErrorClass,
    },
    /// A peer the call needs was lost.
    #[error("lost rank {0}")]
    PeerLost(u32),
    /// The shared-memory runtime failed.
    #[error("runtime: {0}")]
    Dsm(#[source] dsm_core::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[source] transport::Error),
}

impl Error {
    /// The MPI error class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::InvalidRank { .. } => ErrorClass::Rank,
            Error::InvalidTag(_) => ErrorClass::Tag,
            Error::InvalidCount(_) => ErrorClass::Count,
            Error::InvalidDatatype(_) => ErrorClass::Type,
            Error::InvalidOp(_) => ErrorClass::Op,
            Error::Truncate { .. } => ErrorClass::Truncate,
            Error::InvalidWindow(_) => ErrorClass::Win,
            Error::InvalidCommunicator(_) => ErrorClass::Comm,
            Error::InvalidDisplacement(_) => ErrorClass::Disp,
            Error::OutOfWindow { .. } => ErrorClass::RmaRange,
            Error::RmaSync(_) => ErrorClass::RmaSync,
            Error::InvalidGroup(_) => ErrorClass::Group,
            Error::InvalidArgument(_) => ErrorClass::Arg,
            Error::FailedElsewhere { class, .. } => *class,
            Error::PeerLost(_) => ErrorClass::ProcFailed,
            Error::Dsm(dsm_core::Error::OutOfMemory { .. }) => ErrorClass::NoMem,
            Error::Dsm(dsm_core::Error::PeerLost(_)) => ErrorClass::ProcFailed,
            Error::Dsm(_) | Error::Transport(_) => ErrorClass::Other,
        }
    }
}

impl From<transport::Error> for Error {
    fn from(e: transport::Error) -> Self {
        match e {
            transport::Error::PeerLost { peer, .. } => Error::PeerLost(peer.0),
            e => Error::Transport(e),
        }
    }
}

impl From<dsm_core::Error> for Error {
    fn from(e: dsm_core::Error) -> Self {
        match e {
            dsm_core::Error::Transport(t) => t.into(),
            e => Error::Dsm(e),
        }
    }
}

/// The result of this crate's calls.
pub type Result<T> = std::result::Result<T, Error>;
