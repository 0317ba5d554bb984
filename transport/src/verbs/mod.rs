//! The `verbs` backend: RDMA over InfiniBand, RoCE or soft-RoCE (`rdma_rxe`), on `libibverbs`
//! through the `rdma-sys` bindings.
//!
//! One-sided operations are the NIC's own: [`Op::Read`](crate::Op::Read) is an RDMA READ,
//! [`Op::Write`](crate::Op::Write) an RDMA WRITE (inline when small),
//! [`Op::CompareSwap`](crate::Op::CompareSwap) and [`Op::FetchAdd`](crate::Op::FetchAdd) the
//! 8-byte atomics; the target's CPU takes no part. Registration ([`crate::Transport::register`])
//! is `ibv_reg_mr` with local write and remote read, write and atomic access; the
//! [`RegionDesc`](crate::RegionDesc) carries the rkey and the virtual address. A large region
//! is registered chunk by chunk as operations first use it, so that pinned memory follows use
//! (see `chunks.rs`: [`VerbsConfig::reg_chunk`], [`VerbsConfig::pin_max`]).
//!
//! # Set-up
//!
//! Two phases, as for tcp, so that the bootstrap can carry the endpoints in between:
//! [`VerbsTransport::prepare`] picks the device, port and GID, creates the protection domain,
//! the completion queue and the queue pairs, and yields the endpoint bytes (GID, LID, MTU and,
//! for each peer, the queue-pair numbers and first packet sequence numbers meant for it);
//! [`PreparedVerbs::connect`] moves every queue pair to ready-to-send and waits until every peer
//! has answered over RDMA.
//!
//! # Queue pairs
//!
//! Per peer, three reliable-connected queue pairs: one for this node's one-sided operations, one
//! that serves the peer's, and one for messages and heartbeats (none for the node itself: its
//! messages go straight to its mailbox). One-sided traffic that the target refuses (a bad rkey,
//! a range outside the registration) breaks its queue pair, as RDMA does: the pair is reset and
//! reconnected through the message queue pair, the operation fails with
//! [`Error::Remote`](crate::Error::Remote), and the connection goes on. A peer that does not
//! acknowledge (transport retries exhausted) or stays silent for the peer timeout is lost:
//! [`Error::PeerLost`](crate::Error::PeerLost) and [`crate::Transport::wait_failure`].
//!
//! # Messages
//!
//! SEND/RECV into 16 KiB receive buffers pre-posted to one shared receive queue for every
//! peer (its size stops growing with the job at 256 buffers); longer messages are cut into fragments
//! that follow each other on the peer's one queue pair, so order per sender holds. Small sends
//! are inline, and only every so often signalled.
//!
//! # Building without RDMA
//!
//! The backend needs `libibverbs` (and `libclang` to generate the bindings). Without the
//! crate's `verbs` feature (on by default) it is compiled out: [`VerbsTransport::prepare`]
//! returns [`Error::Unsupported`](crate::Error::Unsupported), and nothing links against
//! `libibverbs`. On a machine whose kernel has no RDMA, [`probe`] says so quietly.

#[cfg(feature = "verbs")]
mod chunks;
mod config;
#[cfg(any(feature = "verbs", test))]
mod control;
#[cfg(any(feature = "verbs", test))]
mod endpoint;
#[cfg(feature = "verbs")]
mod keys;
#[cfg(feature = "verbs")]
mod progress;
#[cfg(feature = "verbs")]
mod select;
#[cfg(feature = "verbs")]
mod sendq;
#[cfg(feature = "verbs")]
mod setup;
#[cfg(feature = "verbs")]
mod shared;
#[cfg(feature = "verbs")]
mod sys;
#[cfg(feature = "verbs")]
mod transport;
#[cfg(feature = "verbs")]
pub use setup::PreparedVerbs;
#[cfg(feature = "verbs")]
pub use transport::VerbsTransport;

#[cfg(not(feature = "verbs"))]
mod stub;
#[cfg(not(feature = "verbs"))]
pub use stub::{PreparedVerbs, VerbsTransport};

pub use config::VerbsConfig;

/// Whether this build has the verbs backend (the `verbs` cargo feature).
pub const AVAILABLE: bool = cfg!(feature = "verbs");

/// Looks for a usable RDMA port as `config` describes it, without creating anything.
///
/// Returns a description of the device, port and GID that [`VerbsTransport::prepare`] would use.
///
/// # Errors
/// [`Error::Unsupported`](crate::Error::Unsupported) saying why not: no RDMA support in this
/// build, no device (a kernel without RDMA is reported this way, quietly), no device of the
/// configured name, no active port, no usable GID.
pub fn probe(config: &VerbsConfig) -> crate::Result<String> {
    #[cfg(feature = "verbs")]
    {
        select::select(config).map(|s| s.describe())
    }
    #[cfg(not(feature = "verbs"))]
    {
        let _ = config;
        Err(stub::unsupported())
    }
}

/// The RDMA devices of this machine (empty without RDMA support).
pub fn device_names() -> Vec<String> {
    #[cfg(feature = "verbs")]
    {
        sys::device_names()
    }
    #[cfg(not(feature = "verbs"))]
    {
        Vec::new()
    }
}
