//! Settings of the verbs backend (they exist in every build, with or without the `verbs`
//! feature).

use std::time::Duration;

use crate::completion::DEFAULT_SPIN;

/// Settings of the verbs backend.
#[derive(Debug, Clone)]
pub struct VerbsConfig {
    /// The RDMA device (`rxe0`, `mlx5_0`); `None`: the first with an active port.
    pub device: Option<String>,
    /// The port (from 1); `None`: the device's first active port.
    pub port: Option<u8>,
    /// The GID index; `None`: for RoCE the first RoCE v2 IPv4-mapped GID, for InfiniBand the
    /// port's LID without a global route.
    pub gid_index: Option<u8>,
    /// A peer silent for this long is lost. Heartbeats go out every quarter of it.
    pub peer_timeout: Duration,
    /// How long connecting to every peer may take.
    pub connect_timeout: Duration,
    /// How long a waiter spins (polling the completion queue itself) before it sleeps.
    pub spin: Duration,
    /// Largest two-sided message.
    pub max_message: usize,
    /// A region of more than 8 chunks of this many bytes (a power of two, at least 4 KiB) is
    /// registered chunk by chunk, on first use, so that pinned memory follows use; 0
    /// registers every region whole at once.
    pub reg_chunk: usize,
    /// Every region gets a chunked key, whatever its size (chunks of `reg_chunk`, or 2 MiB
    /// when that is 0): chunked keys are never reused, as a job that also reaches peers
    /// through shared memory needs ([`crate::PreparedMixed::with_verbs`]). A peer's first
    /// use of each chunk then costs a key request.
    pub chunk_all: bool,
    /// A bound on the bytes the registrations of users' regions pin (`None`: only the
    /// kernel's locked-memory limit).
    pub pin_max: Option<usize>,
    /// Run first by the progress thread (the runtime pins it to a core with it).
    pub on_progress_start: Option<crate::ThreadHook>,
}

impl Default for VerbsConfig {
    /// Automatic device, port and GID; 10 s peer timeout, 30 s to connect, 64 MiB messages,
    /// chunks of 2 MiB, no bound on pinned memory.
    fn default() -> Self {
        VerbsConfig {
            device: None,
            port: None,
            gid_index: None,
            peer_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            spin: DEFAULT_SPIN,
            max_message: 64 << 20,
            reg_chunk: 2 << 20,
            chunk_all: false,
            pin_max: None,
            on_progress_start: None,
        }
    }
}
