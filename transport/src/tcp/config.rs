//! Settings of the tcp backend.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::auth::Secret;
use crate::completion::DEFAULT_SPIN;

/// Default of [`TcpConfig::message_spin`].
pub const MESSAGE_SPIN: Duration = Duration::from_millis(1);

/// The transfer rate a waiter's spin allows for (bytes a microsecond, 1 GB/s): slower than
/// loopback (3-6 GB/s), as fast as a 10 Gb/s link.
const SPIN_BYTES_PER_US: usize = 1000;

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

    /// How long a thread waiting for a one-sided operation that moves `bytes` spins before
    /// it sleeps: [`TcpConfig::spin`] plus the time the bytes take at 1 GB/s, at most
    /// [`TcpConfig::message_spin`]. With the bare spin (50 µs) a waiter for a 64 KiB read over
    /// loopback (30-60 µs) slept on many reads and paid a wake-up on each: `osu_get_latency`
    /// at 64 KiB took 56-144 µs from run to run, 34-45 µs with this.
    pub(crate) fn op_spin(&self, bytes: usize) -> Duration {
        let transfer = Duration::from_micros((bytes / SPIN_BYTES_PER_US) as u64);
        (self.spin + transfer).min(self.spin.max(self.message_spin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_spins_longer_for_more_bytes_up_to_the_message_spin() {
        let c = TcpConfig::new(Secret::from_hex(&"7".repeat(64)).expect("a valid secret"));
        assert_eq!(c.op_spin(8), c.spin);
        assert_eq!(c.op_spin(64 << 10), c.spin + Duration::from_micros(65));
        assert_eq!(c.op_spin(64 << 20), c.message_spin);
        let short = TcpConfig {
            message_spin: Duration::ZERO,
            ..c.clone()
        };
        assert_eq!(short.op_spin(64 << 20), c.spin);
    }
}
