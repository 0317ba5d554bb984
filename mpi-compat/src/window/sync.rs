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

/// Keeps the first error of several steps that must all run.
fn keep_first(first: &mut Option<Error>, r: Result<()>) {
    if let Err(e) = r {
        first.get_or_insert(e);
    }
}

fn first_or_ok(first: Option<Error>) -> Result<()> {
    first.map_or(Ok(()), Err)
}

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
        self.wait_some(target, false)
    }

    /// Waits for the posted operations to `target` (or to every target), only for the gets
    /// with `gets_only` (what local completion needs: a put's data were copied when it was
    /// called).
    fn wait_some(&self, target: Option<usize>, gets_only: bool) -> Result<()> {
        let mine: Vec<super::Pending> = {
            let mut e = self.epochs();
            let (mine, rest) = std::mem::take(&mut e.pending)
                .into_iter()
                .partition(|p| target.is_none_or(|t| t == p.target) && (p.get || !gets_only));
            e.pending = rest;
            mine
        };
        let mut first = None;
        for p in mine {
            if let Err(err) = p.done.wait() {
                first.get_or_insert(err);
            }
            // A posted get's operations come before the one that carries its delivery (and
            // are waited for first). After any failure the call returns it and delivers no
            // more: a failed get's bytes are not all there (MPI leaves the buffers of a
            // failed synchronisation undefined).
            if let (Some(d), Some(s), None) = (p.deliver, &p.staging, &first) {
                // SAFETY: `get_posted`'s caller promised `d.len` writable bytes at `d.to`,
                // touched by nothing else until this call returns.
                let to = unsafe { std::slice::from_raw_parts_mut(d.to as *mut u8, d.len) };
                if let Err(err) = s.read_at(d.skew, to) {
                    first.get_or_insert(err);
                }
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
    /// or post/start epoch is open; transport errors. A rank that fails still takes part in
    /// the fence's barrier, and the others then fail with [`Error::FailedElsewhere`] (of the
    /// same class) instead of waiting for it forever; the epoch the fence ends is closed
    /// and no epoch is opened then.
    pub fn fence(&self, assert: u32) -> Result<()> {
        let mine = self.fence_local(assert);
        let done = self.comm.agree(mine).and_then(|()| {
            self.forget_attached();
            self.reconcile()
        });
        // A failed fence closes the epoch it ends and opens none.
        self.epochs().fence = done.is_ok() && assert & MODE_NOSUCCEED == 0;
        done
    }

    /// This rank's part of a fence before its barrier. This rank's operations are completed
    /// even when its arguments are wrong, so that none is left in flight past the fence.
    fn fence_local(&self, assert: u32) -> Result<()> {
        let checked = check_assert(assert).and_then(|()| {
            let e = self.epochs();
            if !e.locks.is_empty() || e.lock_all || e.access.is_some() || e.exposure.is_some() {
                return Err(Error::RmaSync(
                    "fence inside a lock or post/start epoch".into(),
                ));
            }
            Ok(())
        });
        let flushed = self.wait_pending(None);
        checked?;
        flushed?;
        self.reconcile()
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
        self.forget_attached();
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
    /// [`Error::RmaSync`] when this rank does not hold a lock on `target`; the first error
    /// of completing the operations and reconciling. The lock is released and the epoch
    /// closed even then, so that no other rank waits for the lock forever.
    pub fn unlock(&self, target: Rank) -> Result<()> {
        let t = self.comm.check_rank(target)?;
        let Some((kind, took)) = self.epochs().locks.get(&t).copied() else {
            return Err(Error::RmaSync(format!("rank {target} is not locked")));
        };
        let mut first = None;
        keep_first(&mut first, self.wait_pending(Some(t)));
        if t == self.comm.rank() as usize {
            keep_first(&mut first, self.reconcile());
        }
        self.epochs().locks.remove(&t);
        // A MODE_NOCHECK lock took no word, so it gives none back.
        if took {
            keep_first(&mut first, self.release_lock(t, kind));
        }
        first_or_ok(first)
    }

    /// `MPI_Win_lock_all` (MPI-3.1 §11.5.3): a shared lock on every rank.
    ///
    /// # One-sided
    /// The targets take no part.
    ///
    /// # Errors
    /// [`Error::RmaSync`] when this rank already holds a lock of this window; transport
    /// errors ([`Error::PeerLost`]). A `lock_all` that fails part way gives back the locks it
    /// had taken, so that no other rank waits for them forever, and opens no epoch.
    pub fn lock_all(&self, assert: u32) -> Result<()> {
        check_assert(assert)?;
        {
            let e = self.epochs();
            if e.lock_all || !e.locks.is_empty() {
                return Err(Error::RmaSync("lock_all while holding locks".into()));
            }
        }
        if assert & MODE_NOCHECK == 0 {
            let mut held = Vec::with_capacity(self.comm.size_usize());
            if let Err(e) = self.take_all_shared(&mut held) {
                for r in held {
                    // Best effort: the first error is the one to report.
                    let _ = self.release_lock(r, LockType::Shared);
                }
                return Err(e);
            }
        }
        self.forget_attached();
        let mut e = self.epochs();
        e.lock_all = true;
        for r in 0..self.comm.size_usize() {
            e.locks
                .insert(r, (LockType::Shared, assert & MODE_NOCHECK == 0));
        }
        drop(e);
        self.reconcile()
    }

    /// A shared lock on every rank; `held` lists the ranks whose lock is taken, also when an
    /// error stops it part way.
    fn take_all_shared(&self, held: &mut Vec<usize>) -> Result<()> {
        // Posted one by one (one message per target either way), so that a failing post
        // leaves the completions of those before it here, to be waited for and given back.
        let mut posted = Vec::with_capacity(self.comm.size_usize());
        let mut first = None;
        for (r, &remote) in self.lock_words.iter().enumerate() {
            match self.t().post(TOp::FetchAdd { remote, add: 1 }) {
                Ok(c) => posted.push((r, c)),
                Err(e) => {
                    first = Some(e.into());
                    break;
                }
            }
        }
        for (r, c) in posted {
            match c.wait() {
                Ok(old) if old & EXCLUSIVE == 0 => held.push(r),
                Ok(_) => {
                    // A writer holds it: withdraw, then queue like a single shared lock
                    // (unless the call already failed: then only withdraw).
                    let undo = self
                        .t()
                        .fetch_add(self.lock_words[r], 1u64.wrapping_neg())
                        .map(drop)
                        .map_err(Error::from);
                    keep_first(&mut first, undo);
                    if first.is_none() {
                        match self.take_lock(r, LockType::Shared) {
                            Ok(()) => held.push(r),
                            Err(e) => first = Some(e),
                        }
                    }
                }
                // Whether the increment happened is unknown (the target is gone).
                Err(e) => {
                    first.get_or_insert(e.into());
                }
            }
        }
        first_or_ok(first)
    }

    /// `MPI_Win_unlock_all` (MPI-3.1 §11.5.3): completes every RMA call and releases the
    /// shared locks of [`Window::lock_all`].
    ///
    /// # One-sided
    /// The targets take no part.
    ///
    /// # Errors
    /// [`Error::RmaSync`] without a preceding `lock_all`; the first error of completing the
    /// operations, reconciling and releasing. Every lock is released even then.
    pub fn unlock_all(&self) -> Result<()> {
        if !self.epochs().lock_all {
            return Err(Error::RmaSync("unlock_all without lock_all".into()));
        }
        let mut first = None;
        keep_first(&mut first, self.wait_pending(None));
        keep_first(&mut first, self.reconcile());
        let held = {
            let mut e = self.epochs();
            e.lock_all = false;
            std::mem::take(&mut e.locks)
        };
        for (t, (kind, took)) in held {
            if took {
                keep_first(&mut first, self.release_lock(t, kind));
            }
        }
        first_or_ok(first)
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

    /// A passive-target epoch on some target is open (for `call`, named in the error).
    fn check_passive_any(&self, call: &str) -> Result<()> {
        let e = self.epochs();
        if !e.lock_all && e.locks.is_empty() {
            return Err(Error::RmaSync(format!(
                "{call} outside a passive-target epoch"
            )));
        }
        Ok(())
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
        self.check_passive_any("flush_all")?;
        self.wait_pending(None)
    }

    /// `MPI_Win_flush_local` (MPI-3.1 §11.5.4): every RMA call to `target` is complete at
    /// this rank (its buffers may be reused). Puts copy their data when called; the gets
    /// posted from C ([`Window::get_posted`]) are waited for and their bytes delivered.
    ///
    /// # Errors
    /// [`Error::RmaSync`] outside a lock epoch on `target`; the first failed get's error.
    pub fn flush_local(&self, target: Rank) -> Result<()> {
        let t = self.comm.check_rank(target)?;
        self.check_passive(t)?;
        self.wait_some(Some(t), true)
    }

    /// `MPI_Win_flush_local_all` (MPI-3.1 §11.5.4): [`Window::flush_local`] for every
    /// target.
    ///
    /// # Errors
    /// [`Error::RmaSync`] outside a passive-target epoch; the first failed get's error.
    pub fn flush_local_all(&self) -> Result<()> {
        self.check_passive_any("flush_local_all")?;
        self.wait_some(None, true)
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
    /// [`Error::RmaSync`] when an exposure epoch is already open; [`Error::InvalidGroup`];
    /// the first error of reconciling and telling the origins. Every origin is told even
    /// then, and the epoch is open, so that [`Window::wait`] collects the completions of
    /// those that were told (none of them waits forever).
    pub fn post(&self, group: &Group, assert: u32) -> Result<()> {
        check_assert(assert)?;
        let origins = group.world_ranks(&self.comm)?;
        if self.epochs().exposure.is_some() {
            return Err(Error::RmaSync(
                "post while an exposure epoch is open".into(),
            ));
        }
        let mut first = None;
        keep_first(&mut first, self.reconcile());
        if assert & MODE_NOCHECK == 0 {
            for &o in &origins {
                keep_first(&mut first, self.notify(o, false));
            }
        }
        self.epochs().exposure = Some(origins);
        first_or_ok(first)
    }

    /// Sends a post (`complete == false`) or complete notification to `to`.
    fn notify(&self, to: usize, complete: bool) -> Result<()> {
        self.t()
            .send(self.comm.peer(to), self.pscw_tag(complete), &[])?;
        Ok(())
    }

    /// Receives a post or complete notification from `from`.
    fn notified(&self, from: usize, complete: bool) -> Result<()> {
        self.t().recv(
            Some(self.comm.peer(from)),
            Some(self.pscw_tag(complete)),
            None,
        )?;
        Ok(())
    }

    /// `MPI_Win_start` (MPI-3.1 §11.5.2): opens an access epoch to the ranks of `group`,
    /// waiting until each has posted (unless [`MODE_NOCHECK`]: then every target must have
    /// used it in its post too).
    ///
    /// # Errors
    /// [`Error::RmaSync`] when an access epoch is already open; [`Error::InvalidGroup`];
    /// [`Error::PeerLost`]. When a target cannot be heard from, the others' posts are still
    /// collected and each target that posted is told the (empty) epoch is complete, so that
    /// its [`Window::wait`] returns; no epoch is opened.
    pub fn start(&self, group: &Group, assert: u32) -> Result<()> {
        check_assert(assert)?;
        let targets = group.world_ranks(&self.comm)?;
        if self.epochs().access.is_some() {
            return Err(Error::RmaSync("start while an access epoch is open".into()));
        }
        if assert & MODE_NOCHECK == 0 {
            let mut first = None;
            let mut posted = Vec::with_capacity(targets.len());
            for &t in &targets {
                match self.notified(t, false) {
                    Ok(()) => posted.push(t),
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first {
                for t in posted {
                    // Best effort: the first error is the one to report.
                    let _ = self.notify(t, true);
                }
                return Err(e);
            }
        }
        self.forget_attached();
        self.epochs().access = Some(targets);
        Ok(())
    }

    /// `MPI_Win_complete` (MPI-3.1 §11.5.2): completes every RMA call of the access epoch
    /// at its targets and tells them.
    ///
    /// # Errors
    /// [`Error::RmaSync`] without a preceding `start`; the first error of completing the
    /// operations and telling the targets. Every target of the epoch is told even then, so
    /// that none waits forever in [`Window::wait`].
    pub fn complete(&self) -> Result<()> {
        let Some(targets) = self.epochs().access.take() else {
            return Err(Error::RmaSync("complete without start".into()));
        };
        let mut first = None;
        keep_first(&mut first, self.wait_pending(None));
        for &t in &targets {
            keep_first(&mut first, self.notify(t, true));
        }
        first_or_ok(first)
    }

    /// `MPI_Win_test` (MPI-3.1 §11.5.2): [`Window::wait`] without blocking. Returns `true`
    /// when every origin of the exposure epoch has called `complete` (the epoch is then
    /// closed, as by `wait`), `false` otherwise (the origins heard from so far are
    /// remembered; a later `test` or `wait` waits for the others only).
    ///
    /// # Errors
    /// [`Error::RmaSync`] without a preceding `post`; [`Error::PeerLost`] (that origin is
    /// given up, the epoch stays open for the others).
    pub fn test(&self) -> Result<bool> {
        let Some(origins) = self.epochs().exposure.take() else {
            return Err(Error::RmaSync("test without post".into()));
        };
        let mut first = None;
        let mut left = Vec::with_capacity(origins.len());
        for o in origins {
            match self.t().recv(
                Some(self.comm.peer(o)),
                Some(self.pscw_tag(true)),
                Some(std::time::Duration::ZERO),
            ) {
                Ok(_) => {}
                Err(transport::Error::Timeout(_)) => left.push(o),
                Err(e) => {
                    first.get_or_insert(e.into());
                }
            }
        }
        if !left.is_empty() {
            self.epochs().exposure = Some(left);
            return first.map_or(Ok(false), Err);
        }
        keep_first(&mut first, self.reconcile());
        first_or_ok(first).map(|()| true)
    }

    /// `MPI_Win_wait` (MPI-3.1 §11.5.2): waits until every origin of the exposure epoch has
    /// called `complete`; their RMA calls are then complete here.
    ///
    /// # Errors
    /// [`Error::RmaSync`] without a preceding `post`; [`Error::PeerLost`]. The completions of
    /// the other origins are collected even when one is lost (none is left behind to be
    /// mistaken for the next epoch's).
    pub fn wait(&self) -> Result<()> {
        let Some(origins) = self.epochs().exposure.take() else {
            return Err(Error::RmaSync("wait without post".into()));
        };
        let mut first = None;
        for &o in &origins {
            keep_first(&mut first, self.notified(o, true));
        }
        keep_first(&mut first, self.reconcile());
        first_or_ok(first)
    }
}
