//! The backend of a mixed job that reaches every peer, those on other hosts above all: tcp, or
//! RDMA verbs where the job runs on them. Peers on this node's host are reached through shared
//! memory where they can be; the far backend connects to them too (for memory that cannot be
//! shared, and to notice lost peers).

use std::sync::Arc;

use crate::api::Transport;
use crate::error::Result;
use crate::mailbox::Mailbox;
use crate::tcp::{PreparedTcp, TcpTransport};
use crate::types::BackendKind;
use crate::verbs::{PreparedVerbs, VerbsTransport};

/// A far backend between the two set-up phases.
#[derive(Debug)]
pub(super) enum PreparedFar {
    /// TCP sockets.
    Tcp(PreparedTcp),
    /// RDMA verbs (boxed: it is large).
    Verbs(Box<PreparedVerbs>),
}

/// See the module documentation.
#[derive(Debug)]
pub(super) enum Far {
    /// TCP sockets.
    Tcp(TcpTransport),
    /// RDMA verbs.
    Verbs(VerbsTransport),
}

impl PreparedFar {
    /// This node's endpoint for the far backend.
    pub(super) fn endpoint(&self) -> Result<Vec<u8>> {
        match self {
            PreparedFar::Tcp(t) => t.endpoint(),
            PreparedFar::Verbs(v) => Ok(v.endpoint()),
        }
    }

    /// How long a waiter spins before it sleeps.
    pub(super) fn spin(&self) -> std::time::Duration {
        match self {
            PreparedFar::Tcp(t) => t.spin(),
            PreparedFar::Verbs(v) => v.spin(),
        }
    }

    /// Connects to every peer, delivering messages into `mailbox`.
    pub(super) fn connect_sharing(
        self,
        endpoints: &[Vec<u8>],
        mailbox: Arc<Mailbox>,
    ) -> Result<Far> {
        Ok(match self {
            PreparedFar::Tcp(t) => Far::Tcp(t.connect_sharing(endpoints, mailbox)?),
            PreparedFar::Verbs(v) => Far::Verbs((*v).connect_sharing(endpoints, mailbox)?),
        })
    }
}

impl Far {
    /// The backend as a trait object: calls through it go to the network anyway.
    pub(super) fn get(&self) -> &dyn Transport {
        match self {
            Far::Tcp(t) => t,
            Far::Verbs(v) => v,
        }
    }

    /// Which kind of backend this is.
    pub(super) fn kind(&self) -> BackendKind {
        match self {
            Far::Tcp(_) => BackendKind::Tcp,
            Far::Verbs(_) => BackendKind::Verbs,
        }
    }

    /// Bytes pinned by RDMA registrations (`None` over tcp).
    pub(super) fn pinned(&self) -> Option<usize> {
        match self {
            Far::Tcp(_) => None,
            Far::Verbs(v) => Some(v.pinned()),
        }
    }
}
