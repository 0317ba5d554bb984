//! The coherence protocol of one node as a pure state machine, in the manner of quinn-proto's
//! `Connection`: the runtime feeds it a page's state and what happened ([`Input`]), and it
//! answers with the page's next state and the [`Action`]s to take, in order ([`Step`]). It does
//! no I/O, reads no clock and maps nothing: the executor (`dsm-core/src/runtime/`) turns actions
//! into transport operations and mapping changes, and the machine-only simulation
//! (`coherence/sim.rs`) into operations on an in-memory model of homes and directories.
//!
//! Every step names its row of the state table in `docs/PROTOCOL.md` ([`Row`]). A transition
//! that needs remote data first (the directory entry and the page for a fetch, the directory
//! entry after a writer registration) is two steps: the first posts and says what to wait for
//! ([`Step::wait`]); the executor feeds the answer back as the next input ([`Input::Fetched`],
//! [`Input::WriterRegistered`]). After a writer registration the executor feeds the original
//! fault again: the page is then registered, and the same row completes in one step.

use super::page::{Cache, State, OTHER_WRITERS, PREFETCHED, REG_READER, REG_WRITER, RUN_START};
use super::{others_write, to_notify, DirEntry, NodeSet};
use crate::Rank;

/// Whether the page is homed at this node (its copy here is the authoritative one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Home {
    /// This node is the page's home (rows H).
    Here,
    /// Another node is.
    Elsewhere,
}

impl Home {
    /// [`Home::Here`] when `here`.
    pub fn here_if(here: bool) -> Home {
        if here {
            Home::Here
        } else {
            Home::Elsewhere
        }
    }
}

/// Why cached copies are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// An acquire: another node writes the page (A1).
    Acquire,
    /// An acquire after the notification log overflowed: every cached copy goes (A2).
    Overflow,
    /// The cache of remote copies is over its bound (E1), or `sync_range` drops the copy.
    Evict,
}

/// What happened to a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The application touched the page and its view refused the access.
    Fault {
        /// A write (else a read).
        write: bool,
        /// Where the page is homed (known at the first fault, after a first touch's choice).
        home: Home,
    },
    /// The operations a fetch posted completed: the page's content is in, and `entry` is the
    /// directory entry read after this node's registrations.
    Fetched {
        /// The fault was a write.
        write: bool,
        /// The entry as read after the registrations.
        entry: DirEntry,
        /// When this node registered as a writer in the same round: the writers before it.
        old_writers: Option<NodeSet>,
    },
    /// This node's writer registration completed: the entry read after it, and the writers
    /// before it.
    WriterRegistered {
        /// The entry as read after the registration.
        entry: DirEntry,
        /// The writers the fetch-and-add returned.
        old_writers: NodeSet,
        /// Where the page is homed.
        home: Home,
    },
    /// A prefetched run's data arrived; the page was posted invalid and locked (R2).
    Installed {
        /// The writers in the entry read with the run.
        writers: NodeSet,
        /// The page is the first of its run.
        first_of_run: bool,
    },
    /// The copy of a lock's page read in the round trip that granted the lock is in, after
    /// the taker's acquire closed the old copy; the page is locked, read here and written by
    /// others (K1).
    Carried,
    /// A release, for a page on the dirty list (L1).
    Release,
    /// The copy must go (A1, A2, E1).
    Invalidate(Why),
    /// A notification naming the page was taken from this node's log at an acquire (N1).
    Notified {
        /// Where the page is homed.
        home: Home,
    },
    /// The page's allocation was freed (F1).
    Freed,
}

/// What the application view allows for a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// No access.
    None,
    /// Reads.
    Read,
    /// Reads and writes.
    ReadWrite,
}

impl View {
    /// What the view allows for a page holding `c`.
    pub fn of_cache(c: Cache) -> View {
        match c {
            Cache::Invalid => View::None,
            Cache::ReadOnly => View::Read,
            Cache::Writable => View::ReadWrite,
        }
    }

    /// What the view allows for a page in state `st`: nothing while a prefetched copy waits
    /// for its first touch ([`PREFETCHED`]).
    pub fn of(st: State) -> View {
        if st.has(PREFETCHED) {
            View::None
        } else {
            View::of_cache(st.cache())
        }
    }
}

/// One thing the executor does, in the order the step lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Fetch-and-add this node into the entry's readers at the manager.
    RegisterReader,
    /// Fetch-and-add this node into the entry's writers at the manager (its result is the old
    /// writers).
    RegisterWriter,
    /// Read the directory entry, after the registrations posted before it (same connection).
    ReadEntry,
    /// Read the page's content from its home into this node's copy.
    FetchPage,
    /// Post the prefetch a read fault's access pattern calls for (R2, by the prefetch policy).
    PrefetchAfter,
    /// Post the runs after the one whose first page was just touched (P1 with `RUN_START`).
    PrefetchAhead,
    /// Tell every node in the set that this node writes the page (a write notice: the executor
    /// appends the page to their notification logs before this node's next release completes).
    Notify(NodeSet),
    /// Remember the page as one to invalidate at the next acquire.
    TrackSharer,
    /// Keep a twin of the page (its content now).
    KeepTwin,
    /// Put the page on the dirty list.
    AddDirty,
    /// Make sure the memory behind a page homed here exists (userfaultfd), changing no byte.
    Populate,
    /// Change the application view of the page.
    Map {
        /// What it allows now.
        from: View,
        /// What it must allow.
        to: View,
    },
    /// The state already allows the access (another thread resolved it first): make sure the
    /// mapping matches (userfaultfd may have dropped the entry).
    Remap(View),
    /// Remove write access (a release of a written page); batched over runs of pages.
    WriteProtect,
    /// Close the view (no access); batched over runs of pages.
    Unmap,
    /// Write the difference between the page and its twin to the home, and drop the twin.
    WriteDiff,
    /// Count a prefetched page the application touched.
    CountUsed,
    /// Count a prefetched page dropped untouched.
    CountWasted,
    /// Record the page as a cached copy of a remote page (eviction's bookkeeping).
    Cached,
}

/// The row of `docs/PROTOCOL.md`'s state table a step follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// Read fault on an invalid page homed elsewhere.
    R1,
    /// A page of a prefetched run installed.
    R2,
    /// First touch (read) of a prefetched page.
    P1,
    /// First touch (write) of a prefetched page.
    P2,
    /// Write fault on an invalid page homed elsewhere.
    W1,
    /// Write fault on a read-only page homed elsewhere.
    W2,
    /// Release of a written page.
    L1,
    /// Acquire: another node writes the page.
    A1,
    /// Acquire after the log overflowed.
    A2,
    /// Eviction.
    E1,
    /// Read fault on a page homed here.
    H1,
    /// Write fault on a page homed here.
    H2,
    /// Release, acquire, eviction or notification of a page homed here: nothing.
    H3,
    /// Free.
    F1,
    /// A notification.
    N1,
    /// The copy of a lock's page read in the round trip that granted the lock installed.
    K1,
    /// A fault on a page whose state already allows the access.
    V1,
}

/// Most actions a step takes.
const MAX_ACTIONS: usize = 8;

/// The actions of a step, in order (a fixed array: a step allocates nothing).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Actions {
    list: [Action; MAX_ACTIONS],
    len: usize,
}

impl Actions {
    fn new() -> Actions {
        Actions {
            list: [Action::Cached; MAX_ACTIONS],
            len: 0,
        }
    }

    fn push(&mut self, a: Action) {
        // Every step below pushes at most MAX_ACTIONS (checked by the tests of every row).
        self.list[self.len] = a;
        self.len += 1;
    }

    /// The actions, in order.
    pub fn as_slice(&self) -> &[Action] {
        &self.list[..self.len]
    }

    /// Whether the step does nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the step takes `a`.
    pub fn contains(&self, a: Action) -> bool {
        self.as_slice().contains(&a)
    }
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// What the executor waits for before it feeds the next input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The posted registrations, entry and page: then [`Input::Fetched`].
    Fetch,
    /// The posted writer registration and entry: then [`Input::WriterRegistered`], and then
    /// the fault again.
    WriterRegistration,
}

/// The answer to an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The row of the state table.
    pub row: Row,
    /// The page's state once the actions are done (stored when the page is unlocked).
    pub next: State,
    /// What to do, in order.
    pub actions: Actions,
    /// What to wait for before the next input (the page stays locked meanwhile).
    pub wait: Option<Wait>,
}

/// The protocol of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    me: Rank,
}

impl Machine {
    /// The machine of node `me`.
    pub fn new(me: Rank) -> Machine {
        Machine { me }
    }

    /// This node's rank.
    pub fn me(&self) -> Rank {
        self.me
    }

    /// The next state of a page in state `st` after `input`, and what to do.
    pub fn step(&self, st: State, input: Input) -> Step {
        match input {
            Input::Fault {
                home: Home::Here,
                write,
            } => self.home_fault(st, write),
            Input::Fault {
                home: Home::Elsewhere,
                write,
            } => self.remote_fault(st, write),
            Input::Fetched {
                write,
                entry,
                old_writers,
            } => self.fetched(st, write, entry, old_writers),
            Input::WriterRegistered {
                entry,
                old_writers,
                home,
            } => self.writer_registered(st, entry, old_writers, home),
            Input::Installed {
                writers,
                first_of_run,
            } => self.installed(st, writers, first_of_run),
            Input::Carried => self.carried(st),
            Input::Release => release(st),
            Input::Invalidate(why) => invalidate(st, why),
            Input::Notified { home } => notified(st, home),
            Input::Freed => freed(st),
        }
    }

    /// Rows H1, H2 (and V1 for a page homed here).
    fn home_fault(&self, st: State, write: bool) -> Step {
        let (to, register) = super::home_fault(st.cache(), st.has(REG_WRITER), write);
        if register {
            return register_first(Row::H2, st);
        }
        let row = if write { Row::H2 } else { Row::H1 };
        let mut actions = Actions::new();
        if to == st.cache() {
            actions.push(Action::Remap(View::of_cache(to)));
            return done(Row::V1, st, actions);
        }
        if st.cache() == Cache::Invalid {
            actions.push(Action::Populate);
        }
        actions.push(Action::Map {
            from: View::of_cache(st.cache()),
            to: View::of_cache(to),
        });
        done(row, st.with_cache(to), actions)
    }

    /// Rows R1, W1 (first half), P1, P2, W2, and V1.
    fn remote_fault(&self, st: State, write: bool) -> Step {
        let mut actions = Actions::new();
        match (st.cache(), write) {
            (Cache::Invalid, _) => {
                if !st.has(REG_READER) {
                    actions.push(Action::RegisterReader);
                }
                if write && !st.has(REG_WRITER) {
                    actions.push(Action::RegisterWriter);
                }
                actions.push(Action::ReadEntry);
                actions.push(Action::FetchPage);
                if !write {
                    actions.push(Action::PrefetchAfter);
                }
                Step {
                    row: if write { Row::W1 } else { Row::R1 },
                    next: st,
                    actions,
                    wait: Some(Wait::Fetch),
                }
            }
            (Cache::ReadOnly, true) => {
                let row = if st.has(PREFETCHED) { Row::P2 } else { Row::W2 };
                if !st.has(REG_WRITER) {
                    return register_first(row, st);
                }
                if st.has(PREFETCHED) {
                    actions.push(Action::CountUsed);
                }
                open_for_writing(row, st, actions)
            }
            (Cache::ReadOnly, false) if st.has(PREFETCHED) => {
                actions.push(Action::Map {
                    from: View::None,
                    to: View::Read,
                });
                actions.push(Action::CountUsed);
                if st.has(RUN_START) {
                    actions.push(Action::PrefetchAhead);
                }
                actions.push(Action::Cached);
                done(Row::P1, touched(st), actions)
            }
            _ => {
                actions.push(Action::Remap(View::of(st)));
                done(Row::V1, st, actions)
            }
        }
    }

    /// What a page's state learns from the entry read with it: this node is a reader, and
    /// another node writes it (keep it on the list of pages to invalidate at acquires).
    fn learn_entry(&self, st: State, writers: NodeSet, actions: &mut Actions) -> State {
        let mut st = st.with(REG_READER);
        if others_write(writers, self.me) {
            st = st.with(OTHER_WRITERS);
        }
        if st.has(OTHER_WRITERS) {
            actions.push(Action::TrackSharer);
        }
        st
    }

    /// After this node's writer bit went in: notify the other sharers, note other writers.
    fn learn_writers(
        &self,
        st: State,
        readers: NodeSet,
        old_writers: NodeSet,
        home: Home,
        actions: &mut Actions,
    ) -> State {
        let set = to_notify(readers, old_writers, self.me);
        if !set.is_empty() {
            actions.push(Action::Notify(set));
        }
        let mut st = st.with(REG_WRITER);
        if others_write(old_writers, self.me) {
            st = st.with(OTHER_WRITERS);
            if home == Home::Elsewhere && !actions.contains(Action::TrackSharer) {
                actions.push(Action::TrackSharer);
            }
        }
        st
    }

    /// Rows R1 and W1, second half.
    fn fetched(
        &self,
        st: State,
        write: bool,
        entry: DirEntry,
        old_writers: Option<NodeSet>,
    ) -> Step {
        let mut actions = Actions::new();
        let mut st = self.learn_entry(st, entry.writers, &mut actions);
        if let Some(old) = old_writers {
            st = self.learn_writers(st, entry.readers, old, Home::Elsewhere, &mut actions);
        }
        if write {
            let mut step = open_for_writing(Row::W1, st, actions);
            step.actions.push(Action::Cached);
            step
        } else {
            actions.push(Action::Map {
                from: View::None,
                to: View::Read,
            });
            actions.push(Action::Cached);
            done(Row::R1, st.with_cache(Cache::ReadOnly), actions)
        }
    }

    /// The second half of a writer registration (W2, P2, H2); the fault is fed again after it.
    fn writer_registered(
        &self,
        st: State,
        entry: DirEntry,
        old_writers: NodeSet,
        home: Home,
    ) -> Step {
        let mut actions = Actions::new();
        let next = self.learn_writers(st, entry.readers, old_writers, home, &mut actions);
        let row = match (home, st.has(PREFETCHED)) {
            (Home::Here, _) => Row::H2,
            (_, true) => Row::P2,
            _ => Row::W2,
        };
        done(row, next, actions)
    }

    /// Row R2: a prefetched page's data is in; its view stays closed until its first touch.
    /// Row K1: a lock's page carried with its grant goes in as a prefetched copy (content
    /// valid, view closed until its first touch: P1, P2). Its copy is as new as what the
    /// acquire must see: the home read it after the look that granted the lock.
    fn carried(&self, st: State) -> Step {
        let mut actions = Actions::new();
        let st = self
            .learn_entry(st, NodeSet::EMPTY, &mut actions)
            .with(PREFETCHED);
        done(Row::K1, st.with_cache(Cache::ReadOnly), actions)
    }

    fn installed(&self, st: State, writers: NodeSet, first_of_run: bool) -> Step {
        let mut actions = Actions::new();
        let mut st = self.learn_entry(st, writers, &mut actions).with(PREFETCHED);
        if first_of_run {
            st = st.with(RUN_START);
        }
        done(Row::R2, st.with_cache(Cache::ReadOnly), actions)
    }
}

/// A step that completes the transition.
fn done(row: Row, next: State, actions: Actions) -> Step {
    Step {
        row,
        next,
        actions,
        wait: None,
    }
}

/// The first half of a transition that needs this node's writer registration first.
fn register_first(row: Row, st: State) -> Step {
    let mut actions = Actions::new();
    actions.push(Action::RegisterWriter);
    actions.push(Action::ReadEntry);
    Step {
        row,
        next: st,
        actions,
        wait: Some(Wait::WriterRegistration),
    }
}

/// Keeps a twin, puts the page on the dirty list, opens it for writing (in that order: another
/// thread may write as soon as it is open, and its next release must find it on the list).
fn open_for_writing(row: Row, st: State, mut actions: Actions) -> Step {
    actions.push(Action::KeepTwin);
    actions.push(Action::AddDirty);
    actions.push(Action::Map {
        from: View::of(st),
        to: View::ReadWrite,
    });
    done(row, touched(st).with_cache(Cache::Writable), actions)
}

/// `st` after the application's first touch of a prefetched copy (or its loss).
pub fn touched(st: State) -> State {
    st.without(PREFETCHED).without(RUN_START)
}

/// Row L1 (the executor never feeds a page homed here: such a page is never on the dirty
/// list, H3).
fn release(st: State) -> Step {
    let mut actions = Actions::new();
    if st.cache() != Cache::Writable {
        return done(Row::L1, st, actions);
    }
    actions.push(Action::WriteProtect);
    actions.push(Action::WriteDiff);
    done(Row::L1, touched(st).with_cache(Cache::ReadOnly), actions)
}

/// Rows A1, A2, E1 (never fed for a page homed here, H3).
fn invalidate(st: State, why: Why) -> Step {
    let row = match why {
        Why::Acquire => Row::A1,
        Why::Overflow => Row::A2,
        Why::Evict => Row::E1,
    };
    let mut actions = Actions::new();
    if st.cache() == Cache::Invalid {
        return done(row, st, actions);
    }
    actions.push(Action::Unmap);
    if st.cache() == Cache::Writable {
        actions.push(Action::WriteDiff);
    }
    if st.has(PREFETCHED) {
        actions.push(Action::CountWasted);
    }
    done(row, touched(st).with_cache(Cache::Invalid), actions)
}

/// Row N1: another node writes the page; a cached copy here is invalidated at this acquire.
fn notified(st: State, home: Home) -> Step {
    let mut actions = Actions::new();
    if st.cache() != Cache::Invalid && home == Home::Elsewhere {
        actions.push(Action::TrackSharer);
    }
    done(Row::N1, st.with(OTHER_WRITERS), actions)
}

/// Row F1: the page is forgotten (the executor discards its memory and directory entry).
fn freed(st: State) -> Step {
    let mut actions = Actions::new();
    if st.has(PREFETCHED) {
        actions.push(Action::CountWasted);
    }
    done(Row::F1, State(0), actions)
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
