//! A lock's page carried with its grant (row K1 of `docs/PROTOCOL.md`): a node that waits for a
//! lock homed elsewhere reads the lock's page from the home in the same round trip as each look
//! at `serving` that may grant it, and installs that copy after its acquire, so that the data
//! beside the lock (a counter, a cell's fields) costs no fault of its own. The read is posted
//! after the look on the same ordered connection, so the home executes it after the
//! fetch-and-add that saw the grant: the copy holds every write the lock's earlier holders
//! released, which is all the acquire must see of that page.

use super::*;
use crate::coherence::machine::{Action, Input, Why};
use crate::coherence::page::OTHER_WRITERS;

/// A page being carried: locked (no thread of this node changes it meanwhile), with the buffer
/// its copy is read into. Dropping it leaves the page as it was.
pub(crate) struct Carry<'a> {
    inner: &'a Inner,
    guard: PageGuard<'a>,
    slot: usize,
    /// [`Inner::acquires`] when the read was posted: an acquire begun since (another
    /// thread's) may need a newer copy than this one, which is then dropped.
    acquires: u64,
}

impl Drop for Carry<'_> {
    fn drop(&mut self) {
        lock(&self.inner.free_carries).push(self.slot);
    }
}

impl Inner {
    /// For a lock homed elsewhere whose words lie in `page`: the read of the page's home copy to
    /// post with a look at `serving`, and the locked page it is for, when carrying it pays:
    /// this node reads the page (registered reader), others write it (so this node's acquire
    /// would drop its copy), and it holds no written copy of its own. `None` otherwise, or when
    /// another thread holds the page or every carry buffer.
    pub(crate) fn carry(&self, page: usize) -> Option<(Carry<'_>, Op)> {
        if self.homed_here(page) {
            return None;
        }
        let guard = self.pages.try_lock(page)?;
        let st = guard.state();
        if !st.has(REG_READER)
            || !st.has(OTHER_WRITERS)
            || st.has(PREFETCHED)
            || st.cache() == Cache::Writable
        {
            return None;
        }
        let slot = lock(&self.free_carries).pop()?;
        let carry = Carry {
            inner: self,
            guard,
            slot,
            acquires: self.acquires.load(Ordering::SeqCst),
        };
        let (home, _) = self.home_of(page).ok()?;
        let remote = self.homes[home].slice((page * PAGE) as u64, PAGE).ok()?;
        let local = LocalSlice::new(&self.scratch, buffers::carry_base(slot), PAGE).ok()?;
        Some((carry, Op::Read { remote, local }))
    }

    /// The page `carry` locked, for an acquire that must leave it to [`Inner::install_carried`].
    pub(super) fn carried_page(carry: &Option<Carry<'_>>) -> Option<usize> {
        carry.as_ref().map(|c| c.guard.page)
    }

    /// Applies a notification for the carried page to its held state (row N1).
    pub(super) fn notify_carried(&self, carry: &mut Carry<'_>) {
        let home = crate::coherence::machine::Home::here_if(false);
        let step = self
            .machine
            .step(carry.guard.state(), Input::Notified { home });
        carry.guard.set(step.next);
    }

    /// Ends the acquire's work on the carried page, inside the acquire (`acquires_now` is the
    /// count with it): its old copy is closed as row A1 closes any (a clean copy: nothing to
    /// write home), then the carried copy goes in as a prefetched one (row K1), unless another
    /// acquire began after the read was posted.
    pub(super) fn install_carried(&self, mut carry: Carry<'_>, acquires_now: u64) -> Result<()> {
        let page = carry.guard.page;
        let st = carry.guard.state();
        if st.cache() != Cache::Invalid {
            let step = self.machine.step(st, Input::Invalidate(Why::Acquire));
            for a in step.actions.as_slice() {
                match a {
                    Action::Unmap => self.space.set_access(page, 1, Access::None, Access::None)?,
                    Action::WriteProtect | Action::CountWasted => {}
                    _ => unreachable!("closing a clean copy never takes {a:?}"),
                }
            }
            carry.guard.set(step.next);
            self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
            if let Some(p) = self.profile.on() {
                p.invalidated(page);
            }
        }
        if acquires_now != carry.acquires + 1 {
            return Ok(());
        }
        let mut copy = vec![0u8; PAGE];
        self.scratch
            .read_at(buffers::carry_base(carry.slot), &mut copy)?;
        self.runtime.write_at(page * PAGE, &copy)?;
        let step = self.machine.step(carry.guard.state(), Input::Carried);
        for a in step.actions.as_slice() {
            match a {
                Action::TrackSharer => {
                    lock(&self.sharers).insert(page);
                }
                _ => unreachable!("installing a carried page never takes {a:?}"),
            }
        }
        carry.guard.set(step.next);
        drop(carry);
        self.stats.pages_fetched.fetch_add(1, Ordering::Relaxed);
        self.stats.prefetched.fetch_add(1, Ordering::Relaxed);
        self.account_cached([page])
    }
}
