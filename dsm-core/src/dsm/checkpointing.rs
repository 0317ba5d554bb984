//! [`Dsm::checkpoint`] and [`Dsm::restarted`]: the collective checkpoint, epoch by epoch, over
//! the files of [`crate::checkpoint::store`] and the images of the runtime.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

use super::Dsm;
use crate::checkpoint::image::{trailer, Allocation};
use crate::checkpoint::restart::Restore;
use crate::checkpoint::store::{self, Manifest, Store};
use crate::checkpoint::{recv_image_with, send_image, Epoch, Settings, State};
use crate::collective;
use crate::error::{Error, Result};
use crate::runtime::lock;

/// A node's checkpoint settings and state.
#[derive(Debug)]
pub(super) struct Checkpoints {
    settings: Settings,
    state: Mutex<State>,
    restarted: Option<Epoch>,
}

impl Checkpoints {
    /// After a fresh start, or a restart from `restore`.
    pub(super) fn new(settings: Settings, restore: Option<&Restore>) -> Checkpoints {
        let mut state = State::default();
        if let Some(r) = restore {
            // The next epoch is numbered after every epoch any node has (newer ones than the
            // one resumed from may exist, damaged or incomplete: their numbers are never
            // used again), and is full: this run has no checksums of its own yet. The chain
            // resumed from is kept until the next one completes.
            state.chain_start = r.images.first().map(|i| i.chain_start);
            state.full_next = true;
        }
        Checkpoints {
            settings,
            state: Mutex::new(state),
            restarted: restore.map(|r| Epoch(r.epoch)),
        }
    }
}

/// After a restart: the allocation the program asks for (`bytes`, placement `kind` and
/// `argument`) must be the next checkpointed one; its first page.
///
/// # Errors
/// [`Error::Checkpoint`] naming both when they differ (the same on every node).
pub(super) fn replay(a: Allocation, bytes: usize, kind: u64, argument: u64) -> Result<usize> {
    if (a.bytes, a.kind, a.argument) == (bytes as u64, kind, argument) {
        return Ok(a.start as usize);
    }
    Err(Error::Checkpoint(format!(
        "after a restart the collective allocations must be made again in the same order with \
         the same arguments: this one asks for {bytes} bytes (placement {kind}, argument \
         {argument}), the checkpoint's next one is {} bytes (placement {}, argument {})",
        a.bytes, a.kind, a.argument
    )))
}

impl Dsm {
    /// Takes a checkpoint: every node releases, then saves what it homes and the allocation
    /// state to `DSM_CHECKPOINT_DIR` (`%r`: the rank) and a copy to its partner (the next
    /// rank); returns the epoch once every node has flushed both copies and its manifest. Only
    /// pages changed since the previous epoch are written, except every
    /// `DSM_CHECKPOINT_FULL_EVERY`-th epoch (and the first of a run), which is full. It is a
    /// barrier: writes before it on any node are visible after it on every node.
    ///
    /// # Collective
    /// Every node must call it; no thread of any node may write global memory meanwhile.
    ///
    /// # Errors
    /// [`Error::Config`] when `DSM_CHECKPOINT_DIR` is not set (on every node);
    /// [`Error::Checkpoint`] on every node when some node could not write its files (the
    /// previous epoch stays the newest whole one; the next checkpoint is full); transport
    /// errors.
    pub fn checkpoint(&self) -> Result<Epoch> {
        self.checkpoint_as(false)
    }

    /// [`Dsm::checkpoint`], full whatever the epoch: every page this node homes is written.
    ///
    /// # Collective
    /// As [`Dsm::checkpoint`].
    ///
    /// # Errors
    /// As [`Dsm::checkpoint`].
    pub fn checkpoint_full(&self) -> Result<Epoch> {
        self.checkpoint_as(true)
    }

    /// After a restart (`DSM_RESTART=1`), the epoch this run resumed from; `None` on a fresh
    /// start (also when a restart found no checkpoint at all).
    pub fn restarted(&self) -> Option<Epoch> {
        self.checkpoint.restarted
    }

    fn checkpoint_as(&self, full_asked: bool) -> Result<Epoch> {
        let start = Instant::now();
        let inner = &self.inner;
        let t = &*inner.t;
        let (me, nodes) = (inner.me, inner.nodes);
        let settings = &self.checkpoint.settings;
        let mut state = lock(&self.checkpoint.state);
        let released = inner.release();
        collective::checked_barrier(
            t,
            "checkpoint",
            &[
                (
                    "DSM_CHECKPOINT_DIR set (1) or not (0)",
                    u64::from(settings.dir.is_some()),
                ),
                (
                    "a full checkpoint asked (1) or not (0)",
                    u64::from(full_asked),
                ),
            ],
            None,
        )?;
        released?;
        let dir = settings.dir.as_deref().ok_or_else(|| {
            Error::Config("a checkpoint needs DSM_CHECKPOINT_DIR (where to write it)".into())
        })?;
        let store = Store::new(dir, me);
        if state.next == 0 {
            // A fresh run numbers its epochs after any a previous run left in the directories,
            // so that no file of this run ever shares an epoch with an older one.
            let newest = store.epochs().last().copied().unwrap_or(0);
            let all = collective::all_gather(t, &newest.to_le_bytes(), None)?;
            let max = all
                .iter()
                .filter_map(|b| b.as_slice().try_into().ok().map(u64::from_le_bytes))
                .max()
                .unwrap_or(0);
            state.next = max + 1;
        }
        let epoch = state.next;
        // Every node takes the same decision: the same counters, the same request.
        let full = full_asked
            || state.full_next
            || state
                .chain_start
                .is_none_or(|c| epoch - c >= settings.full_every);
        let chain_start = if full {
            epoch
        } else {
            state.chain_start.unwrap_or(epoch)
        };
        let mut saved = if full {
            HashMap::new()
        } else {
            std::mem::take(&mut state.saved)
        };
        // Whatever fails, the partner gets a message (an empty image if this node has none),
        // so that nobody waits; the verdict is shared at the end.
        let phase = Instant::now();
        let image = inner.image(epoch, chain_start, &mut saved);
        let (bytes, pages) = match &image {
            Ok(i) => (i.encode(), i.pages.len()),
            Err(_) => (Vec::new(), 0),
        };
        let mut outcome = image.map(drop);
        // The own file is written (and flushed) by a second thread while the image travels to
        // the partner and the partner's arrives: the disk and the network work at once.
        let own_name = Store::own_name(me);
        let built = phase.elapsed();
        let (own, copy) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                store
                    .write(epoch, &own_name, &bytes)
                    .map_err(|e| io_error(&store, epoch, &own_name, e))
            });
            let copy = if nodes > 1 {
                self.exchange_copies(&store, epoch, &bytes)
            } else {
                Ok(None)
            };
            let own = writer.join().unwrap_or_else(|_| {
                Err(Error::Checkpoint(
                    "the thread writing the image panicked".into(),
                ))
            });
            (own, copy)
        });
        outcome = outcome.and(own);
        let copy = match copy {
            Ok(c) => c,
            Err(e) => {
                outcome = outcome.and(Err(e));
                None
            }
        };
        let written = phase.elapsed();
        if outcome.is_ok() && !bytes.is_empty() {
            let manifest = Manifest {
                epoch,
                chain_start,
                nodes: nodes as u64,
                rank: me as u64,
                global_base: inner.space.base() as u64,
                global_size: inner.space.size() as u64,
                program: store::program_identity(),
                own: (bytes.len() as u64, trailer(&bytes)),
                copy,
            };
            outcome = store
                .commit(&manifest)
                .map_err(|e| io_error(&store, epoch, "MANIFEST", e));
        }
        // Epoch numbers are never used twice, whatever happens: the files of one epoch always
        // belong to one cut.
        state.next = epoch + 1;
        tracing::debug!(
            "checkpoint epoch {epoch}: image of {} bytes built in {built:?}, written and \
             exchanged by {written:?}, committed by {:?}",
            bytes.len(),
            phase.elapsed()
        );
        let verdict = collective::checked_barrier(
            t,
            "checkpoint written",
            &[("written (1) or failed (0)", u64::from(outcome.is_ok()))],
            None,
        );
        // A mismatch is another node's failure (it says why); a lost peer stays what it is.
        let verdict = verdict.map_err(|e| match e {
            Error::CollectiveMismatch(_) => Error::Checkpoint(format!(
                "epoch {epoch} failed on another node (it says why)"
            )),
            other => other,
        });
        if let Err(e) = outcome.and(verdict) {
            state.full_next = true;
            return Err(match e {
                Error::Checkpoint(m) => Error::Checkpoint(format!("epoch {epoch}: {m}")),
                other => other,
            });
        }
        if full {
            // The chain before this one stays until this one has a successor: a restart can
            // fall back to it if this epoch's files are damaged.
            store.prune_before(state.chain_start.unwrap_or(epoch));
            state.chain_start = Some(epoch);
        }
        state.full_next = false;
        state.saved = saved;
        drop(state);
        inner.acquire()?;
        let s = &inner.stats;
        s.checkpoints.fetch_add(1, Ordering::Relaxed);
        s.checkpoint_pages
            .fetch_add(pages as u64, Ordering::Relaxed);
        s.checkpoint_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        s.checkpoint_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(Epoch(epoch))
    }
}

impl Dsm {
    /// Sends this node's image to its partner (the next rank), receives the previous rank's
    /// and writes it, flushed; the copy's length and checksum, for the manifest.
    fn exchange_copies(
        &self,
        store: &Store,
        epoch: u64,
        bytes: &[u8],
    ) -> Result<Option<(u64, u64)>> {
        let t = &*self.inner.t;
        let (me, nodes) = (self.inner.me, self.inner.nodes);
        let before = (me + nodes - 1) % nodes;
        let name = Store::copy_name(before);
        // Sending, receiving and writing the partner's copy overlap: a thread sends, and each
        // chunk received goes to the file at once. The stream is received whole whatever
        // happens to the file, so that nothing of it is left for the next checkpoint.
        std::thread::scope(|scope| {
            let sender = scope.spawn(|| send_image(t, (me + 1) % nodes, bytes));
            let mut file = store.create(epoch, &name);
            let mut last = Vec::with_capacity(16);
            let len = recv_image_with(t, before, None, |chunk| {
                if let Ok(f) = &mut file {
                    if let Err(e) = f.write(chunk) {
                        file = Err(e);
                    }
                }
                last.extend_from_slice(&chunk[chunk.len().saturating_sub(8)..]);
                let extra = last.len().saturating_sub(8);
                last.drain(..extra);
            });
            let sent = sender.join().unwrap_or_else(|_| {
                Err(Error::Checkpoint(
                    "the thread sending the image panicked".into(),
                ))
            });
            let len = len?;
            sent?;
            if len < 8 {
                return Err(Error::Checkpoint(format!(
                    "rank {before} had no image to send"
                )));
            }
            file.and_then(|f| f.finish())
                .map_err(|e| io_error(store, epoch, &name, e))?;
            // The transport delivers bytes intact; the copy's checksum is checked with every
            // other file when a restart reads it.
            Ok(Some((len, trailer(&last))))
        })
    }
}

fn io_error(store: &Store, epoch: u64, name: &str, e: std::io::Error) -> Error {
    Error::Checkpoint(format!("{}: {e}", store.path(epoch, name).display()))
}
