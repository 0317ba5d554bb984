//! The keys of a transfer's pieces: this node's local keys (its chunks registered on first
//! use), peers' chunk keys (asked for once over the control queue pair, then kept), and the
//! answers to peers' requests for ours. See [`super::chunks`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chunks::{Chunked, ChunkedKey};
use super::control::Control;
use super::shared::{Registered, Shared};
use crate::error::{Error, RemoteFault, Result};
use crate::types::LocalSlice;

/// How the region of an operation's local side is registered.
#[derive(Debug, Clone)]
pub(super) enum LocalKeys {
    /// Whole: one lkey.
    Whole(u32),
    /// Chunk by chunk.
    Chunked(Arc<Chunked>),
}

impl LocalKeys {
    /// The transfer's offset in its region and the chunk shift, for [`super::chunks::pieces`].
    pub(super) fn side(&self, offset: usize) -> Option<(u64, u32)> {
        match self {
            LocalKeys::Whole(_) => None,
            LocalKeys::Chunked(c) => Some((offset as u64, c.key().shift)),
        }
    }
}

impl Shared {
    /// How `slice`'s region is registered here.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] when it is not.
    pub(super) fn local_keys(&self, slice: &LocalSlice) -> Result<LocalKeys> {
        let regions = self.regions.read().unwrap_or_else(|e| e.into_inner());
        match regions.by_id.get(&slice.region().id()) {
            Some(Registered::Whole { pinned, .. }) => Ok(LocalKeys::Whole(pinned.mr.lkey)),
            Some(Registered::Chunked(c)) => Ok(LocalKeys::Chunked(Arc::clone(c))),
            None => Err(Error::NotRegistered(slice.region().id())),
        }
    }

    /// The lkey of byte `offset` of a local region, registering its chunk on first use.
    ///
    /// # Errors
    /// As [`Chunked::chunk`].
    pub(super) fn lkey(&self, keys: &LocalKeys, offset: usize) -> Result<u32> {
        match keys {
            LocalKeys::Whole(lkey) => Ok(*lkey),
            LocalKeys::Chunked(c) => c
                .keys(c.chunk_of(offset), &self.pd, &self.budget)
                .map(|(lkey, _)| lkey),
        }
    }

    /// The rkey of chunk `chunk` of peer `p`'s region `key`: known, or asked for now (the
    /// peer registers the chunk if nothing has used it yet) and waited for, at most the peer
    /// timeout.
    ///
    /// # Errors
    /// [`Error::Remote`] with the peer's refusal (no such region or chunk, or
    /// [`RemoteFault::NoMemory`]); the peer's loss; [`Error::Timeout`]; [`Error::Closed`].
    pub(super) fn remote_key(&self, p: usize, key: ChunkedKey, chunk: u32) -> Result<u32> {
        let peer = &self.peers[p];
        if p == self.rank.index() {
            return self
                .serve_key(key.number, chunk)
                .map_err(|fault| Error::Remote {
                    peer: peer.rank,
                    fault,
                });
        }
        let at = (key.number, chunk);
        let deadline = Instant::now() + self.config.peer_timeout;
        let mut cache = peer.keys.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(&answer) = cache.known.get(&at) {
                if answer == Err(RemoteFault::NoMemory) {
                    // Memory may be freed at the peer: the next use asks again.
                    cache.known.remove(&at);
                }
                return answer.map_err(|fault| Error::Remote {
                    peer: peer.rank,
                    fault,
                });
            }
            if cache.asked.insert(at) {
                drop(cache);
                let request = Control::KeyRequest {
                    region: key.number,
                    chunk,
                };
                if let Err(e) = self.send_ctrl(p, &request, true) {
                    let mut cache = peer.keys.lock().unwrap_or_else(|e| e.into_inner());
                    cache.asked.remove(&at);
                    return Err(e);
                }
                cache = peer.keys.lock().unwrap_or_else(|e| e.into_inner());
                continue;
            }
            drop(cache);
            if let Some(e) = self.peer_error(p) {
                return Err(e);
            }
            if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                return Err(Error::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                // The next use asks again (a late answer is then recorded as it comes).
                let mut cache = peer.keys.lock().unwrap_or_else(|e| e.into_inner());
                cache.asked.remove(&at);
                return Err(Error::Timeout(format!(
                    "rank {} did not answer for the key of chunk {chunk} of its region {}",
                    peer.rank, key.number
                )));
            }
            // The answer comes as a receive completion: poll for it (the progress thread
            // does too), then sleep briefly on the cache.
            self.drive(false);
            cache = peer.keys.lock().unwrap_or_else(|e| e.into_inner());
            if !cache.known.contains_key(&at) {
                let nap = (deadline - now).min(Duration::from_millis(1));
                cache = peer
                    .keys_changed
                    .wait_timeout(cache, nap)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }

    /// Our answer to a request for chunk `chunk` of our region `number`: its rkey, registering
    /// it on first use.
    ///
    /// # Errors
    /// [`RemoteFault::BadKey`] for no such region, [`RemoteFault::OutOfBounds`] for a chunk past
    /// its end, [`RemoteFault::NoMemory`] when it cannot be registered (the reason is logged
    /// here, at warning level).
    pub(super) fn serve_key(
        &self,
        number: u32,
        chunk: u32,
    ) -> std::result::Result<u32, RemoteFault> {
        let chunked = {
            let regions = self.regions.read().unwrap_or_else(|e| e.into_inner());
            match regions
                .id_of_chunked
                .get(&number)
                .and_then(|id| regions.by_id.get(id))
            {
                Some(Registered::Chunked(c)) => Arc::clone(c),
                _ => return Err(RemoteFault::BadKey),
            }
        };
        if chunk >= chunked.chunks() {
            return Err(RemoteFault::OutOfBounds);
        }
        chunked
            .keys(chunk, &self.pd, &self.budget)
            .map(|(_, rkey)| rkey)
            .map_err(|e| {
                tracing::warn!("rank {}: chunk {chunk} of region {number}: {e}", self.rank);
                RemoteFault::NoMemory
            })
    }

    /// Records peer `p`'s answer for chunk `chunk` of its region `number`, and wakes those
    /// waiting for it. (An answer that comes after its waiter gave up is recorded all the
    /// same: the peer is an authenticated member of the job, and a wrong key could only make
    /// its own memory refuse an access.)
    pub(super) fn key_answer(
        &self,
        p: usize,
        number: u32,
        chunk: u32,
        key: std::result::Result<u32, RemoteFault>,
    ) {
        let peer = &self.peers[p];
        let mut cache = peer.keys.lock().unwrap_or_else(|e| e.into_inner());
        cache.asked.remove(&(number, chunk));
        cache.known.insert((number, chunk), key);
        drop(cache);
        peer.keys_changed.notify_all();
    }
}
