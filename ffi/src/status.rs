//! Status codes: what every function of the C API returns (or, for the functions that return a
//! pointer or a value, what [`dsm_last_error`] tells afterwards), their names, and the
//! per-thread record of the last one.

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, CStr, CString};

/// The status of a C API call: `DSM_OK`, `DSM_BUSY`, or a negative `DSM_ERR_*` per kind of
/// failure. Functions return it as an `int`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum dsm_status {
    /// Success.
    DSM_OK = 0,
    /// `dsm_trylock` found the lock taken (not a failure: nothing went wrong).
    DSM_BUSY = 1,
    /// The runtime is not running: `dsm_init` was not called (or failed).
    DSM_ERR_NOT_INITIALIZED = -1,
    /// `dsm_init` was called twice.
    DSM_ERR_ALREADY_INITIALIZED = -2,
    /// The runtime was finalized; it cannot be used (or initialised) again in this process.
    DSM_ERR_FINALIZED = -3,
    /// An argument is invalid: a NULL pointer where one is needed, a size that overflows, an
    /// unknown placement, a root that is not a rank, a collective call whose arguments differ
    /// between nodes (or nodes in different collective calls).
    DSM_ERR_INVALID_ARGUMENT = -4,
    /// A pointer that should point into global memory does not.
    DSM_ERR_NOT_GLOBAL = -5,
    /// A global pointer that is not what the call needs: not a live allocation (double free, a
    /// pointer into the middle of a block, a `dsm_malloc` block given to `dsm_free_collective`).
    DSM_ERR_INVALID_POINTER = -6,
    /// A global word or lock that is not aligned (8 bytes for words, 16 for locks).
    DSM_ERR_MISALIGNED = -7,
    /// The global heap has no room for the request; nothing was changed.
    DSM_ERR_OUT_OF_MEMORY = -8,
    /// An access to global memory that no allocation covers.
    DSM_ERR_UNALLOCATED = -9,
    /// A setting (environment variable set by the launcher or by hand) is missing or malformed.
    DSM_ERR_CONFIG = -10,
    /// The nodes could not assemble the job (coordinator unreachable, authentication refused).
    DSM_ERR_BOOTSTRAP = -11,
    /// The transport failed (connection, RDMA device, remote refusal).
    DSM_ERR_TRANSPORT = -12,
    /// A peer node disappeared.
    DSM_ERR_PEER_LOST = -13,
    /// Something did not happen in time.
    DSM_ERR_TIMEOUT = -14,
    /// An operating-system call failed.
    DSM_ERR_IO = -15,
    /// A bug in the runtime (a caught panic); the message says where.
    DSM_ERR_INTERNAL = -16,
    /// `dsm_unlock` of a lock this node does not hold (a second unlock, an unlock of a free
    /// lock or of another node's); nothing was changed.
    DSM_ERR_NOT_HELD = -17,
    /// `dsm_lock` of a lock the calling thread holds already (it would wait forever); nothing
    /// was changed.
    DSM_ERR_DEADLOCK = -18,
    /// `dsm_checkpoint` failed on some node (the previous checkpoint stays the newest whole
    /// one), or `dsm_init` cannot restart from the checkpoints (`DSM_RESTART=1`: another node
    /// count, program or global size, or no whole epoch).
    DSM_ERR_CHECKPOINT = -19,
}

pub(crate) const DSM_OK: c_int = dsm_status::DSM_OK as c_int;
pub(crate) const DSM_BUSY: c_int = dsm_status::DSM_BUSY as c_int;
pub(crate) const DSM_ERR_NOT_INITIALIZED: c_int = dsm_status::DSM_ERR_NOT_INITIALIZED as c_int;
pub(crate) const DSM_ERR_ALREADY_INITIALIZED: c_int =
    dsm_status::DSM_ERR_ALREADY_INITIALIZED as c_int;
pub(crate) const DSM_ERR_FINALIZED: c_int = dsm_status::DSM_ERR_FINALIZED as c_int;
pub(crate) const DSM_ERR_INVALID_ARGUMENT: c_int = dsm_status::DSM_ERR_INVALID_ARGUMENT as c_int;
pub(crate) const DSM_ERR_NOT_GLOBAL: c_int = dsm_status::DSM_ERR_NOT_GLOBAL as c_int;
pub(crate) const DSM_ERR_INVALID_POINTER: c_int = dsm_status::DSM_ERR_INVALID_POINTER as c_int;
pub(crate) const DSM_ERR_MISALIGNED: c_int = dsm_status::DSM_ERR_MISALIGNED as c_int;
pub(crate) const DSM_ERR_OUT_OF_MEMORY: c_int = dsm_status::DSM_ERR_OUT_OF_MEMORY as c_int;
pub(crate) const DSM_ERR_UNALLOCATED: c_int = dsm_status::DSM_ERR_UNALLOCATED as c_int;
pub(crate) const DSM_ERR_CONFIG: c_int = dsm_status::DSM_ERR_CONFIG as c_int;
pub(crate) const DSM_ERR_BOOTSTRAP: c_int = dsm_status::DSM_ERR_BOOTSTRAP as c_int;
pub(crate) const DSM_ERR_TRANSPORT: c_int = dsm_status::DSM_ERR_TRANSPORT as c_int;
pub(crate) const DSM_ERR_PEER_LOST: c_int = dsm_status::DSM_ERR_PEER_LOST as c_int;
pub(crate) const DSM_ERR_TIMEOUT: c_int = dsm_status::DSM_ERR_TIMEOUT as c_int;
pub(crate) const DSM_ERR_IO: c_int = dsm_status::DSM_ERR_IO as c_int;
pub(crate) const DSM_ERR_INTERNAL: c_int = dsm_status::DSM_ERR_INTERNAL as c_int;
pub(crate) const DSM_ERR_NOT_HELD: c_int = dsm_status::DSM_ERR_NOT_HELD as c_int;
pub(crate) const DSM_ERR_DEADLOCK: c_int = dsm_status::DSM_ERR_DEADLOCK as c_int;

/// Every status with its name and meaning, for `dsm_strerror` and the tests.
pub(crate) const ALL: &[(c_int, &CStr)] = &[
    (DSM_OK, c"DSM_OK: success"),
    (DSM_BUSY, c"DSM_BUSY: the lock is taken"),
    (
        DSM_ERR_NOT_INITIALIZED,
        c"DSM_ERR_NOT_INITIALIZED: dsm_init has not been called",
    ),
    (
        DSM_ERR_ALREADY_INITIALIZED,
        c"DSM_ERR_ALREADY_INITIALIZED: dsm_init was already called",
    ),
    (
        DSM_ERR_FINALIZED,
        c"DSM_ERR_FINALIZED: the runtime was finalized",
    ),
    (
        DSM_ERR_INVALID_ARGUMENT,
        c"DSM_ERR_INVALID_ARGUMENT: invalid argument",
    ),
    (
        DSM_ERR_NOT_GLOBAL,
        c"DSM_ERR_NOT_GLOBAL: the pointer is not in global memory",
    ),
    (
        DSM_ERR_INVALID_POINTER,
        c"DSM_ERR_INVALID_POINTER: not a live allocation",
    ),
    (
        DSM_ERR_MISALIGNED,
        c"DSM_ERR_MISALIGNED: a global word (8 bytes) or lock (16 bytes) is not aligned",
    ),
    (
        DSM_ERR_OUT_OF_MEMORY,
        c"DSM_ERR_OUT_OF_MEMORY: the global heap is full",
    ),
    (
        DSM_ERR_UNALLOCATED,
        c"DSM_ERR_UNALLOCATED: no allocation covers this global address",
    ),
    (
        DSM_ERR_CONFIG,
        c"DSM_ERR_CONFIG: missing or malformed setting",
    ),
    (
        DSM_ERR_BOOTSTRAP,
        c"DSM_ERR_BOOTSTRAP: the job could not be assembled",
    ),
    (DSM_ERR_TRANSPORT, c"DSM_ERR_TRANSPORT: transport failure"),
    (
        DSM_ERR_PEER_LOST,
        c"DSM_ERR_PEER_LOST: a peer node was lost",
    ),
    (DSM_ERR_TIMEOUT, c"DSM_ERR_TIMEOUT: timed out"),
    (DSM_ERR_IO, c"DSM_ERR_IO: an operating-system call failed"),
    (
        DSM_ERR_INTERNAL,
        c"DSM_ERR_INTERNAL: internal error in the runtime",
    ),
    (
        DSM_ERR_NOT_HELD,
        c"DSM_ERR_NOT_HELD: this node does not hold the lock",
    ),
    (
        DSM_ERR_DEADLOCK,
        c"DSM_ERR_DEADLOCK: this thread holds the lock already",
    ),
];

/// A failure of a C API call: its status and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) status: c_int,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: c_int, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(DSM_ERR_INVALID_ARGUMENT, message)
    }
}

impl From<dsm_core::Error> for Failure {
    fn from(e: dsm_core::Error) -> Failure {
        use dsm_core::Error as E;
        let status = match &e {
            E::Config(_) => DSM_ERR_CONFIG,
            E::Transport(t) => transport_status(t),
            E::Bootstrap(_) | E::Protocol { .. } | E::Launch(_) => DSM_ERR_BOOTSTRAP,
            E::PeerLost(_) => DSM_ERR_PEER_LOST,
            E::Timeout(_) => DSM_ERR_TIMEOUT,
            E::Unallocated(_) => DSM_ERR_UNALLOCATED,
            E::OutOfMemory { .. } => DSM_ERR_OUT_OF_MEMORY,
            E::InvalidPointer(_) => DSM_ERR_INVALID_POINTER,
            E::Misaligned(_) => DSM_ERR_MISALIGNED,
            E::Io { .. } => DSM_ERR_IO,
            E::LockNotHeld(_) => DSM_ERR_NOT_HELD,
            E::CollectiveMismatch(_) | E::NoSuchNode { .. } => DSM_ERR_INVALID_ARGUMENT,
            E::LockHeldByCaller(_) => DSM_ERR_DEADLOCK,
            E::Checkpoint(_) => dsm_status::DSM_ERR_CHECKPOINT as c_int,
            _ => DSM_ERR_INTERNAL,
        };
        Failure::new(status, e.to_string())
    }
}

fn transport_status(e: &transport::Error) -> c_int {
    match e {
        transport::Error::PeerLost { .. } => DSM_ERR_PEER_LOST,
        transport::Error::Timeout(_) => DSM_ERR_TIMEOUT,
        // A wrong job secret is refused while the job is assembled.
        transport::Error::Auth(_) => DSM_ERR_BOOTSTRAP,
        _ => DSM_ERR_TRANSPORT,
    }
}

thread_local! {
    static LAST_STATUS: Cell<c_int> = const { Cell::new(DSM_OK) };
    static LAST_MESSAGE: RefCell<CString> = RefCell::new(CString::default());
}

/// Records the outcome of a call on this thread and returns its status.
pub(crate) fn record(outcome: Result<(), Failure>) -> c_int {
    match outcome {
        Ok(()) => {
            LAST_STATUS.with(|s| s.set(DSM_OK));
            DSM_OK
        }
        Err(f) => {
            LAST_STATUS.with(|s| s.set(f.status));
            // A message with an interior NUL (it cannot come from the runtime's own messages)
            // is cut at the NUL rather than lost.
            let bytes: Vec<u8> = f.message.bytes().take_while(|&b| b != 0).collect();
            let message = CString::new(bytes).unwrap_or_default();
            LAST_MESSAGE.with(|m| *m.borrow_mut() = message);
            f.status
        }
    }
}

/// The name and meaning of `status`.
pub(crate) fn describe(status: c_int) -> &'static CStr {
    ALL.iter()
        .find(|(s, _)| *s == status)
        .map_or(c"unknown dsm status", |(_, text)| text)
}

/// The status of this thread's most recent call.
pub(crate) fn last_status() -> c_int {
    LAST_STATUS.with(Cell::get)
}

/// The message of this thread's most recent failure; valid until the thread's next failing call.
pub(crate) fn last_message() -> *const c_char {
    LAST_MESSAGE.with(|m| m.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_authentication_is_a_bootstrap_failure() {
        let e = dsm_core::Error::Transport(transport::Error::Auth("wrong secret".into()));
        assert_eq!(Failure::from(e).status, DSM_ERR_BOOTSTRAP);
    }

    #[test]
    fn every_status_is_distinct_and_named_after_itself() {
        for (i, (a, text)) in ALL.iter().enumerate() {
            for (b, _) in &ALL[i + 1..] {
                assert_ne!(a, b);
            }
            assert!(text.to_str().unwrap().starts_with("DSM_"));
            assert_eq!(describe(*a), *text);
        }
        assert_eq!(describe(-1000), c"unknown dsm status");
    }

    #[test]
    fn failures_are_recorded_per_thread() {
        assert_eq!(
            record(Err(Failure::invalid("bad size"))),
            DSM_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last_status(), DSM_ERR_INVALID_ARGUMENT);
        std::thread::spawn(|| assert_eq!(last_status(), DSM_OK))
            .join()
            .unwrap();
        // SAFETY: last_message points at this thread's live CString.
        let m = unsafe { CStr::from_ptr(last_message()) };
        assert_eq!(m.to_str().unwrap(), "bad size");
        assert_eq!(record(Ok(())), DSM_OK);
        assert_eq!(last_status(), DSM_OK);
    }

    #[test]
    fn core_errors_map_to_their_status() {
        let f = Failure::from(dsm_core::Error::OutOfMemory { requested: 5 });
        assert_eq!(f.status, DSM_ERR_OUT_OF_MEMORY);
        assert!(f.message.contains('5'));
        let f = Failure::from(dsm_core::Error::InvalidPointer(0x10));
        assert_eq!(f.status, DSM_ERR_INVALID_POINTER);
        let f = Failure::from(dsm_core::Error::NoSuchNode {
            node: dsm_core::Rank(4),
            nodes: 4,
        });
        assert_eq!(f.status, DSM_ERR_INVALID_ARGUMENT);
        assert!(f.message.contains("no node 4"), "{}", f.message);
    }
}
