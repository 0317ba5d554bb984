//! Settings of the tcp backend.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::auth::Secret;
use crate::completion::DEFAULT_SPIN;

/// Default of [`TcpConfig::message_spin`].
pub const MESSAGE_SPIN: Duration = Duration::from_millis(1);

/// Settings of the tcp backend.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// Address the data listener binds to (port chosen by the system). Loopback by default.
    pub bind: IpAddr,
    /// The job's shared secret; peers authenticate with it.
    pub secret: Secret,
    /// A peer silent for this long is declared lost. Heartbeats go out every quarter of it.
    pub peer_timeout: Duration,
    /// How long connecting to the mesh may take.
    pub connect_timeout: Duration,
    /// How long a connection to the data listener may take, from being accepted, to finish
    /// authenticating; see [`crate::gate`].
    pub handshake_timeout: Duration,
    /// How long a waiter spins before it sleeps.
    pub spin: Duration,
    /// How long a thread waiting for a message spins (reading its connections) before it
    /// sleeps, while recent waits were shorter than that; after a longer wait it spins only
    /// [`TcpConfig::spin`]. It must outlast a round trip in which the peer slept (two wake-ups
    /// on each side, over 100 µs on a loaded two-vCPU machine): with a shorter spin, one slow
    /// round trip makes both sides sleep on every message from then on.
    pub message_spin: Duration,
    /// Largest payload of one frame: bounds messages and single transfers.
    pub max_payload: u32,
    /// Run first by the progress thread (the runtime pins it to a core with it).
    pub on_progress_start: Option<crate::ThreadHook>,
}

impl TcpConfig {
    /// Defaults: loopback, 10 s peer timeout, 30 s to connect, 3 s per handshake, 64 MiB frames.
    pub fn new(secret: Secret) -> TcpConfig {
        TcpConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            secret,
            peer_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            handshake_timeout: crate::gate::DEFAULT_HANDSHAKE_TIMEOUT,
            spin: DEFAULT_SPIN,
            message_spin: MESSAGE_SPIN,
            max_payload: 64 << 20,
            on_progress_start: None,
        }
    }
}
