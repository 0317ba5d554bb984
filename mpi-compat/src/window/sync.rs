//! Synchronisation calls of RMA windows (MPI-3.1 §11.5): fence, post/start/complete/wait,
//! lock/unlock, lock_all/unlock_all, flush, flush_local, sync.

use transport::{Op as TOp, Transport};

use super::Window;
use crate::comm::Rank;
use crate::error::{Error, Result};
use crate::group::Group;

/// `MPI_MODE_NOCHECK` (MPI-3.1 §11.5.5): no conflicting lock or epoch can exist; the lock
/// or start is granted without asking the target.
pub const MODE_NOCHECK: u32 = 1024;
/// `MPI_MODE_NOSTORE`: no local stores since the last synchronisation (a hint).
pub const MODE_NOSTORE: u32 = 2048;
/// `MPI_MODE_NOPUT`: no puts or accumulates until the next synchronisation (a hint).
pub const MODE_NOPUT: u32 = 4096;
/// `MPI_MODE_NOPRECEDE`: the fence completes no RMA calls (a hint).
pub const MODE_NOPRECEDE: u32 = 8192;
/// `MPI_MODE_NOSUCCEED`: the fence opens no new epoch.
pub const MODE_NOSUCCEED: u32 = 16384;

const ALL_MODES: u32 = MODE_NOCHECK | MODE_NOSTORE | MODE_NOPUT | MODE_NOPRECEDE | MODE_NOSUCCEED;

/// The kind of a passive-target lock (MPI-3.1 §11.5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockType {
    /// `MPI_LOCK_SHARED`: other shared locks may be held at once.
    Shared,
    /// `MPI_LOCK_EXCLUSIVE`: no other lock may be held at once.
    Exclusive,
}

/// The lock word's writer bit; the low bits count shared holders.
const EXCLUSIVE: u64 = 1 << 62;

/// Transport tags of post/start/complete/wait: above the communicators' tags.
const PSCW_BASE: u64 = (1 << 62) + (1 << 48);

fn check_assert(assert: u32) -> Result<()> {
    if assert & !ALL_MODES != 0 {
        return Err(Error::InvalidArgument(format!(
            "assertion {assert:#x} has bits that are no MPI_MODE_* flag"
        )));
    }
    Ok(())
}

impl Window {
    fn pscw_tag(&self, complete: bool) -> transport::Tag {
        transport::Tag(PSCW_BASE + u64::from(self.id) * 2 + u64::from(complete))
    }

    /// Waits for every posted operation to `target` (or to every target), recycling staging
    /// buffers.
    fn wait_pending(&self, target: Option<usize>) -> Result<()> {
        let mine: Vec<super::Pending> = {
            let mut e = self.epochs();
            let (mine, rest) = std::mem::take(&mut e.pending)
                .into_iter()
                .partition(|p| target.is_none_or(|t| t == p.target));
            e.pending = rest;
            mine
        };
        let mut first = None;
        for p in mine {
            if let Err(err) = p.done.wait() {
                first.get_or_insert(err);
            }
            if let Some(s) = p.staging {
                self.recycle(s);
            }
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    pub(super) fn flush_all_internal(&self) -> Result<()> {
        self.wait_pending(None)
    }

    /// `MPI_Win_fence` (MPI-3.1 §11.5.1): completes every RMA call of this rank, waits for
    /// every rank (so every call targeting this rank is complete too), and opens the next
    /// epoch unless `assert` has [`MODE_NOSUCCEED`].
    ///
    /// # Collective
    /// Every rank of the window's communicator must call it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for unknown assertion bits; [`Error::RmaSync`] while a lock
    /// or post/start epoch is open; transport errors.
    pub fn fence(&self, assert: u32) -> Result<()> {
        check_assert(assert)?;
        {
            let e = self.epochs();
            if !e.locks.is_empty() || e.lock_all || e.access.is_some() || e.exposure.is_some() {
                return Err(Error::RmaSync(
                    "fence inside a lock or post/start epoch".into(),
                ));
            }
        }
        self.wait_pending(None)?;
        self.reconcile()?;
        self.comm.barrier()?;
        self.reconcile()?;
        self.epochs().fence = assert & MODE_NOSUCCEED == 0;
        Ok(())
    }

    /// Takes the lock word of `target`, spinning with back-off while a conflicting lock is
    /// held.
    fn take_lock(&self, target: usize, kind: LockType) -> Result<()> {
        let word = self.lock_words[target];
        let mut backoff = 1u32;
        loop {
            let got = match kind {
                LockType::Exclusive => self.t().compare_swap(word, 0, EXCLUSIVE)? == 0,
                LockType::Shared => {
                    let old = self.t().fetch_add(word, 1)?;
                    if old & EXCLUSIVE != 0 {
                        self.t().fetch_add(word, 1u64.wrapping_neg())?;
                        false
                    } else {
                        true
                    }
                }
            };
            if got {
                return Ok(());
            }
            for _ in 0..backoff {
                std::hint::spin_loop();
            }
            backoff = (backoff * 2).min(1 << 12);
        }
    }

    fn release_lock(&self, target: usize, kind: LockType) -> Result<()> {
        let sub = match kind {
            LockType::Exclusive => EXCLUSIVE,
            LockType::Shared => 1,
        };
        self.t()
            .fetch_add(self.lock_words[target], sub.wrapping_neg())?;
        Ok(())
    }

    /// `MPI_Win_lock` (MPI-3.1 §11.5.3): opens a passive-target access epoch to `target`,
    /// shared or exclusive. With [`MODE_NOCHECK`] no lock is taken (the program guarantees
    /// there is no conflict).
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// [`Error::InvalidRank`]; [`Error::RmaSync`] when `target` is already locked by this rank
    /// or `lock_all` is in force.
    pub fn lock(&self, kind: LockType, target: Rank, assert: u32) -> Result<()> {
        check_assert(assert)?;
        let t = self.comm.check_rank(target)?;
        {
            let e = self.epochs();
            if e.lock_all || e.locks.contains_key(&t) {
                return Err(Error::RmaSync(format!("rank {target} is already locked")));
            }
        }
        if assert & MODE_NOCHECK == 0 {
            self.take_lock(t, kind)?;
        }
        self.epochs()
            .locks
            .insert(t, (kind, assert & MODE_NOCHECK == 0));
        if t == self.comm.rank() as usize {
            self.reconcile()?;
        }
        Ok(())
    }

    /// `MPI_Win_unlock` (MPI-3.1 §11.5.3): completes every RMA call to `target` at the target
    /// and releases the lock.
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// [`Error::RmaSync`] when this rank does not hold a lock on `target`.
    pub fn unlock(&self, target: Rank) -> Result<()> {
        let t = self.comm.check_rank(target)?;
        let Some((kind, took)) = self.epochs().locks.get(&t).copied() else {
            return Err(Error::RmaSync(format!("rank {target} is not locked")));
        };
        let r = self.wait_pending(Some(t));
        if t == self.comm.rank() as usize {
            self.reconcile()?;
        }
        self.epochs().locks.remove(&t);
        // The lock word goes back even when an operation failed, so nobody waits forever.
        // A MODE_NOCHECK lock took no word, so it gives none back.
        if took {
            self.release_lock(t, kind)?;
        }
        r
    }

    /// `MPI_Win_lock_all` (MPI-3.1 §11.5.3): a shared lock on every rank.
    ///
    /// # One-sided
    /// The targets take no part.
    ///
    /// # Errors
    /// [`Error::RmaSync`] when this rank already holds a lock of this window.
    pub fn lock_all(&self, assert: u32) -> Result<()> {
        check_assert(assert)?;
        {
            let e = self.epochs();
            if e.lock_all || !e.locks.is_empty() {
                return Err(Error::RmaSync("lock_all while holding locks".into()));
            }
        }
        if assert & MODE_NOCHECK == 0 {
            let n = self.comm.size_usize();
            let done = self.t().post_batch(
                (0..n)
                    .map(|r| TOp::FetchAdd {
                        remote: self.lock_words[r],
                        add: 1,
                    })
                    .collect(),
            )?;
            for (r, c) in done.iter().enumerate() {
                if c.wait()? & EXCLUSIVE != 0 {
                    self.t()
                        .fetch_add(self.lock_words[r], 1u64.wrapping_neg())?;
                    self.take_lock(r, LockType::Shared)?;
                }
            }
        }
        let mut e = self.epochs();
        e.lock_all = true;
        for r in 0..self.comm.size_usize() {
            e.locks
                .insert(r, (LockType::Shared, assert & MODE_NOCHECK == 0));
        }
        drop(e);
        self.reconcile()
    }

    /// `MPI_Win_unlock_all` (MPI-3.1 §11.5.3): completes every RMA call and releases the
    /// shared locks of [`Window::lock_all`].
    ///
    /// # One-sided
    /// The targets take no part.
    ///
    /// # Errors
    /// [`Error::RmaSync`] without a preceding `lock_all`.
    pub fn unlock_all(&self) -> Result<()> {
        if !self.epochs().lock_all {
            return Err(Error::RmaSync("unlock_all without lock_all".into()));
        }
        let r = self.wait_pending(None);
        self.reconcile()?;
        let held = {
            let mut e = self.epochs();
            e.lock_all = false;
            std::mem::take(&mut e.locks)
        };
        for (t, (kind, took)) in held {
            if took {
                self.release_lock(t, kind)?;
            }
        }
        r
    }

    fn check_passive(&self, t: usize) -> Result<()> {
        let e = self.epochs();
        if e.lock_all || e.locks.contains_key(&t) {
            Ok(())
        } else {
            Err(Error::RmaSync(format!(
                "flush of rank {t} outside a passive-target epoch"
            )))
        }
    }

    /// `MPI_Win_flush` (MPI-3.1 §11.5.4): every RMA call to `target` is complete at the
    /// target when it returns.
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// [`Error::RmaSync`] outside a lock epoch on `target`; transport errors.
    pub fn flush(&self, target: Rank) -> Result<()> {
        let t = self.comm.check_rank(target)?;
        self.check_passive(t)?;
        self.wait_pending(Some(t))
    }

    /// `MPI_Win_flush_all` (MPI-3.1 §11.5.4): [`Window::flush`] of every target.
    ///
    /// # Errors
    /// [`Error::RmaSync`] outside a passive-target epoch.
    pub fn flush_all(&self) -> Result<()> {
        {
            let e = self.epochs();
            if !e.lock_all && e.locks.is_empty() {
                return Err(Error::RmaSync(
                    "flush_all outside a passive-target epoch".into(),
                ));
            }
        }
        self.wait_pending(None)
    }

    /// `MPI_Win_flush_local` (MPI-3.1 §11.5.4): every RMA call to `target` is complete at
    /// this rank (its buffers may be reused). Puts copy their data when called and gets wait
    /// for theirs, so this only checks the epoch: local completion is already there.
    ///
    /// # Errors
    /// [`Error::RmaSync`] outside a lock epoch on `target`.
    pub fn flush_local(&self, target: Rank) -> Result<()> {
        let t = self.comm.check_rank(target)?;
        self.check_passive(t)
    }

    /// `MPI_Win_sync` (MPI-3.1 §11.5.4): reconciles this rank's private and public copies of
    /// the window (see the module docs; nothing to do for an allocated window).
    ///
    /// # Errors
    /// Runtime errors.
    pub fn sync(&self) -> Result<()> {
        self.reconcile()
    }

    /// `MPI_Win_post` (MPI-3.1 §11.5.2): exposes this rank's part to the ranks of `group`
    /// (ranks of the window's communicator) until [`Window::wait`].
    ///
    /// # Errors
    /// [`Error::RmaSync`] when an exposure epoch is already open; [`Error::InvalidGroup`].
    pub fn post(&self, group: &Group, assert: u32) -> Result<()> {
        check_assert(assert)?;
        let origins = group.world_ranks(&self.comm)?;
        if self.epochs().exposure.is_some() {
            return Err(Error::RmaSync(
                "post while an exposure epoch is open".into(),
            ));
        }
        self.reconcile()?;
        if assert & MODE_NOCHECK == 0 {
            for &o in &origins {
                self.t()
                    .send(transport::Rank(o as u32), self.pscw_tag(false), &[])?;
            }
        }
        self.epochs().exposure = Some(origins);
        Ok(())
    }

    /// `MPI_Win_start` (MPI-3.1 §11.5.2): opens an access epoch to the ranks of `group`,
    /// waiting until each has posted (unless [`MODE_NOCHECK`]: then every target must have
    /// used it in its post too).
    ///
    /// # Errors
    /// [`Error::RmaSync`] when an access epoch is already open; [`Error::InvalidGroup`];
    /// [`Error::PeerLost`].
    pub fn start(&self, group: &Group, assert: u32) -> Result<()> {
        check_assert(assert)?;
        let targets = group.world_ranks(&self.comm)?;
        if self.epochs().access.is_some() {
            return Err(Error::RmaSync("start while an access epoch is open".into()));
        }
        if assert & MODE_NOCHECK == 0 {
            for &t in &targets {
                self.t().recv(
                    Some(transport::Rank(t as u32)),
                    Some(self.pscw_tag(false)),
                    None,
                )?;
            }
        }
        self.epochs().access = Some(targets);
        Ok(())
    }

    /// `MPI_Win_complete` (MPI-3.1 §11.5.2): completes every RMA call of the access epoch
    /// at its targets and tells them.
    ///
    /// # Errors
    /// [`Error::RmaSync`] without a preceding `start`.
    pub fn complete(&self) -> Result<()> {
        let Some(targets) = self.epochs().access.take() else {
            return Err(Error::RmaSync("complete without start".into()));
        };
        self.wait_pending(None)?;
        for &t in &targets {
            self.t()
                .send(transport::Rank(t as u32), self.pscw_tag(true), &[])?;
        }
        Ok(())
    }

    /// `MPI_Win_wait` (MPI-3.1 §11.5.2): waits until every origin of the exposure epoch has
    /// called `complete`; their RMA calls are then complete here.
    ///
    /// # Errors
    /// [`Error::RmaSync`] without a preceding `post`; [`Error::PeerLost`].
    pub fn wait(&self) -> Result<()> {
        let Some(origins) = self.epochs().exposure.take() else {
            return Err(Error::RmaSync("wait without post".into()));
        };
        for &o in &origins {
            self.t().recv(
                Some(transport::Rank(o as u32)),
                Some(self.pscw_tag(true)),
                None,
            )?;
        }
        self.reconcile()
    }
}
