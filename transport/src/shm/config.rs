//! Settings of the `shm` backend.

use std::time::Duration;

use crate::completion::DEFAULT_SPIN;

/// Settings of the `shm` backend.
#[derive(Debug, Clone)]
pub struct ShmConfig {
    /// Bytes of each message ring (one per ordered pair of nodes on the host); a multiple of 64.
    /// Larger messages stream through it.
    pub ring_bytes: usize,
    /// Largest payload of one two-sided message.
    pub max_message: usize,
    /// How long a thread waiting for a message spins, reading the rings itself, before it
    /// sleeps. While it spins, senders wake nobody: a message costs no system call.
    pub message_spin: Duration,
    /// How often the progress thread, when idle, checks that the peers' processes still run: a
    /// dead peer is reported within about this long.
    pub liveness_period: Duration,
    /// A peer whose progress thread has not counted its heartbeat for this long (a stopped or
    /// hung process) is declared lost.
    pub peer_timeout: Duration,
    /// What tells this host apart from others; `None`: the kernel's boot id and the host name.
    /// Nodes whose host ids are equal use shared memory between them.
    pub host: Option<String>,
    /// Run first by the progress thread (the runtime pins it to a core with it).
    pub on_progress_start: Option<crate::ThreadHook>,
}

impl Default for ShmConfig {
    /// 256 KiB rings, 64 MiB messages, a 1 ms message spin, a 20 ms liveness period, a
    /// 10 s peer timeout.
    fn default() -> ShmConfig {
        ShmConfig {
            ring_bytes: 256 << 10,
            max_message: 64 << 20,
            message_spin: Duration::from_millis(1).max(DEFAULT_SPIN),
            liveness_period: Duration::from_millis(20),
            peer_timeout: Duration::from_secs(10),
            host: None,
            on_progress_start: None,
        }
    }
}
