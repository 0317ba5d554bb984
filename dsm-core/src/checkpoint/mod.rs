//! Coordinated checkpoints of the shared memory, and restarts from them.
//!
//! A checkpoint ([`crate::Dsm::checkpoint`]) is collective and a barrier: every node releases,
//! then saves what it homes (the pages written since the previous epoch, or all of them in a
//! full epoch), the allocation state (the collective heap's live allocations in the order they
//! were made, the first-touch homes, its `malloc` arena's blocks) to its own directory, and sends
//! the same image to its partner (the next rank), which keeps a copy. The epoch counts only once
//! every node has flushed both files and its manifest (`store.rs`). A restart (`DSM_RESTART=1`)
//! agrees on the newest whole epoch (`plan.rs`), maps global memory at the same address, and puts
//! every byte back before the program's first access (`restart.rs`).
//!
//! The design and the consistency argument are in `docs/ARCHITECTURE.md`, "Checkpoint and
//! restart".

use std::collections::HashMap;
use std::time::Duration;

use transport::{Rank, Tag, Transport};

use crate::error::{Error, Result};

pub(crate) mod image;
pub(crate) mod plan;
pub(crate) mod restart;
pub(crate) mod store;

/// The tag of images travelling between partners (reserved for the runtime).
const IMAGE: Tag = Tag(Tag::RESERVED + 0x200);
/// Bytes per message of an image in transit.
const CHUNK: usize = 1 << 20;

/// The number of a checkpoint: 1 for a job's first, then one more for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Checkpoint settings, from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `DSM_CHECKPOINT_DIR`: where this node keeps its checkpoints (`%r`: the rank). Unset:
    /// checkpoints are refused.
    pub dir: Option<String>,
    /// `DSM_CHECKPOINT_FULL_EVERY`: every how many epochs a full checkpoint is taken (the
    /// others write only the pages changed since the previous epoch). Default 8; 1: always
    /// full.
    pub full_every: u64,
    /// `DSM_RESTART`: resume from the newest whole checkpoint.
    pub restart: bool,
}

impl Settings {
    /// Reads `DSM_CHECKPOINT_DIR`, `DSM_CHECKPOINT_FULL_EVERY` and `DSM_RESTART`.
    ///
    /// # Errors
    /// [`Error::Config`] naming a malformed variable.
    pub fn from_env() -> Result<Settings> {
        let dir = std::env::var("DSM_CHECKPOINT_DIR")
            .ok()
            .filter(|d| !d.trim().is_empty());
        let full_every = match std::env::var("DSM_CHECKPOINT_FULL_EVERY") {
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "DSM_CHECKPOINT_FULL_EVERY={v:?} is not a number of at least 1"
                    ))
                })?,
            Err(_) => 8,
        };
        let restart = match std::env::var("DSM_RESTART").as_deref().map(str::trim) {
            Err(_) | Ok("" | "0") => false,
            Ok("1") => true,
            Ok(v) => {
                return Err(Error::Config(format!(
                    "DSM_RESTART={v:?}: expected 1 (resume from the newest checkpoint) or 0"
                )))
            }
        };
        if restart && dir.is_none() {
            return Err(Error::Config(
                "DSM_RESTART=1 needs DSM_CHECKPOINT_DIR (where the checkpoints are)".into(),
            ));
        }
        Ok(Settings {
            dir,
            full_every,
            restart,
        })
    }
}

/// What a node remembers between its checkpoints.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The next epoch's number.
    pub(crate) next: u64,
    /// The full epoch the current chain starts at (`None`: the next checkpoint is full).
    pub(crate) chain_start: Option<u64>,
    /// The next checkpoint must be full (after a restart, or a failed checkpoint).
    pub(crate) full_next: bool,
    /// A checksum of each page homed here, as the current chain last saved it.
    pub(crate) saved: HashMap<u64, u64>,
}

/// Sends `bytes` to `to` in messages of at most [`CHUNK`] bytes: its length first.
pub(crate) fn send_image<T: Transport>(t: &T, to: usize, bytes: &[u8]) -> Result<()> {
    let chunk = CHUNK.min(t.capabilities().max_message.max(4096));
    t.send(Rank(to as u32), IMAGE, &(bytes.len() as u64).to_le_bytes())?;
    for c in bytes.chunks(chunk) {
        t.send(Rank(to as u32), IMAGE, c)?;
    }
    Ok(())
}

/// Receives what [`send_image`] sent from `from`.
///
/// # Errors
/// The transport's, or [`Error::Checkpoint`] for a malformed stream.
pub(crate) fn recv_image<T: Transport>(
    t: &T,
    from: usize,
    timeout: Option<Duration>,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    recv_image_with(t, from, timeout, |chunk| out.extend_from_slice(chunk))?;
    Ok(out)
}

/// Receives what [`send_image`] sent from `from`, chunk by chunk into `sink` as the chunks
/// arrive (the whole stream, whatever `sink` does with it); returns its length.
///
/// # Errors
/// The transport's, or [`Error::Checkpoint`] for a malformed stream.
pub(crate) fn recv_image_with<T: Transport>(
    t: &T,
    from: usize,
    timeout: Option<Duration>,
    mut sink: impl FnMut(&[u8]),
) -> Result<u64> {
    let first = t.recv(Some(Rank(from as u32)), Some(IMAGE), timeout)?.data;
    let len = first
        .as_slice()
        .try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| Error::Checkpoint(format!("rank {from} sent a malformed image length")))?;
    let mut got = 0u64;
    while got < len {
        let m = t.recv(Some(Rank(from as u32)), Some(IMAGE), timeout)?.data;
        if m.is_empty() || got + m.len() as u64 > len {
            return Err(Error::Checkpoint(format!(
                "rank {from} sent an image longer than it announced"
            )));
        }
        got += m.len() as u64;
        sink(&m);
    }
    Ok(len)
}
