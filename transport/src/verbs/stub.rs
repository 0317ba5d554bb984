//! The verbs backend of a build without the `verbs` feature: every entry point says so.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use super::config::VerbsConfig;
use crate::api::Transport;
use crate::completion::Completion;
use crate::error::{Error, Result};
use crate::region::Region;
use crate::types::{Capabilities, Message, Op, Rank, RegionDesc, Tag};

pub(crate) fn unsupported() -> Error {
    Error::Unsupported(
        "this build has no RDMA verbs support (the transport crate's `verbs` feature is off)"
            .into(),
    )
}

/// Never exists in this build.
#[derive(Debug)]
pub struct PreparedVerbs(Infallible);

/// Never exists in this build.
#[derive(Debug)]
pub struct VerbsTransport(Infallible);

impl VerbsTransport {
    /// # Errors
    /// Always [`Error::Unsupported`].
    pub fn prepare(_rank: Rank, _nodes: usize, _config: VerbsConfig) -> Result<PreparedVerbs> {
        Err(unsupported())
    }

    /// # Errors
    /// Always [`Error::Unsupported`].
    pub fn local_job(_n: usize, _config: &VerbsConfig) -> Result<Vec<VerbsTransport>> {
        Err(unsupported())
    }

    /// Unreachable.
    pub fn device(&self) -> String {
        match self.0 {}
    }

    /// Unreachable.
    pub fn pinned(&self) -> usize {
        match self.0 {}
    }
}

impl PreparedVerbs {
    /// Unreachable.
    pub fn device(&self) -> String {
        match self.0 {}
    }
    /// Unreachable.
    pub fn endpoint(&self) -> Vec<u8> {
        match self.0 {}
    }
    /// # Errors
    /// Unreachable.
    pub fn connect(self, _endpoints: &[Vec<u8>]) -> Result<VerbsTransport> {
        match self.0 {}
    }
    /// # Errors
    /// Unreachable.
    pub(crate) fn connect_sharing(
        self,
        _endpoints: &[Vec<u8>],
        _mailbox: std::sync::Arc<crate::mailbox::Mailbox>,
    ) -> Result<VerbsTransport> {
        match self.0 {}
    }
    /// Unreachable.
    pub fn chunk_all(&self) -> bool {
        match self.0 {}
    }
    /// Unreachable.
    pub(crate) fn spin(&self) -> std::time::Duration {
        match self.0 {}
    }
}

impl Transport for VerbsTransport {
    fn rank(&self) -> Rank {
        match self.0 {}
    }
    fn nodes(&self) -> usize {
        match self.0 {}
    }
    fn capabilities(&self) -> Capabilities {
        match self.0 {}
    }
    fn register(&self, _region: &Arc<Region>) -> Result<RegionDesc> {
        match self.0 {}
    }
    fn deregister(&self, _desc: &RegionDesc) -> Result<()> {
        match self.0 {}
    }
    fn post(&self, _op: Op) -> Result<Completion> {
        match self.0 {}
    }
    fn flush(&self, _peer: Rank) -> Result<()> {
        match self.0 {}
    }
    fn send(&self, _peer: Rank, _tag: Tag, _data: &[u8]) -> Result<()> {
        match self.0 {}
    }
    fn recv(
        &self,
        _from: Option<Rank>,
        _tag: Option<Tag>,
        _t: Option<Duration>,
    ) -> Result<Message> {
        match self.0 {}
    }
    fn try_recv(&self, _from: Option<Rank>, _tag: Option<Tag>) -> Option<Result<Message>> {
        match self.0 {}
    }
    fn wait_message(
        &self,
        _from: Option<Rank>,
        _tag: Option<Tag>,
        _t: Option<Duration>,
    ) -> Result<()> {
        match self.0 {}
    }
    fn wait_failure(&self) -> Error {
        match self.0 {}
    }
    fn close(&self) -> Result<()> {
        match self.0 {}
    }
}
