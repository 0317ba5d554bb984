//! The coherence protocol as pure logic: no I/O, no clock, no `unsafe`. The runtime
//! ([`crate::dsm`]) executes the actions these functions decide; the deterministic simulation in
//! the tests drives the same functions. `docs/PROTOCOL.md` has the state table.
//!
//! The protocol is home-based release consistency with passive homes (the ideas of ArgoDSM's
//! Carina and Pyxis):
//!
//! - every page has a **home** that holds its authoritative copy and a **manager** that holds its
//!   **directory entry** (the set of nodes that read it and the set that write it); for blocked
//!   and cyclic placement they are the same node, for first-touch the manager is fixed and the
//!   home is chosen by the first node that touches the page;
//! - nodes update directories themselves with remote atomics (a node adds its own bit, once), so
//!   no handler runs on the home or manager for a fault;
//! - a node that becomes a writer of a page tells every other node that reads or writes it, by
//!   appending the page to their **notification log** (remote atomic + remote write), so that
//!   their next acquire invalidates the page; a node that starts reading a page learns the
//!   writers from the directory;
//! - **release** writes the difference between each dirty page and its twin back to the home;
//! - **acquire** invalidates only the cached pages that another node writes: its cost grows
//!   with those pages, not with the size of the cache.

pub mod diff;
pub mod dir;
pub mod machine;
pub mod nodeset;
pub mod page;
pub mod placement;
pub mod prefetch;
#[cfg(test)]
mod sim;
pub mod stream;

pub use dir::DirEntry;
pub use nodeset::NodeSet;

use crate::Rank;

/// A page of the global range, by number (page 0 starts at the range's base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageNo(pub usize);

/// An address inside the global range, the same on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GlobalAddr(pub usize);

/// How a page is shared, from a directory entry, seen by node `me`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Nobody but `me` reads or writes it.
    Private,
    /// Others read it, nobody writes it.
    SharedNoWriter,
    /// Exactly one node writes it.
    SingleWriter,
    /// Several nodes write it.
    MultipleWriters,
}

/// Classifies a page from its directory entry.
pub fn classify(entry: DirEntry, me: Rank) -> Class {
    let others = entry.readers.union(entry.writers).without(me);
    match entry.writers.len() {
        _ if others.is_empty() => Class::Private,
        0 => Class::SharedNoWriter,
        1 => Class::SingleWriter,
        _ => Class::MultipleWriters,
    }
}

/// Whether `me` must invalidate its copy at an acquire: some other node writes the page.
pub fn others_write(writers: NodeSet, me: Rank) -> bool {
    !writers.without(me).is_empty()
}

/// The nodes a new writer `me` must notify, given the directory sets it saw right after adding
/// itself as a writer: every other reader or writer (they may hold a copy they would otherwise
/// keep across acquires).
pub fn to_notify(readers: NodeSet, old_writers: NodeSet, me: Rank) -> NodeSet {
    readers.union(old_writers).without(me)
}

/// A fault on a page homed at the faulting node `me`: the copy it leaves, and whether `me`
/// must first register as the page's writer (directory fetch-and-add, then notify the other
/// sharers, as a remote writer does). The home's copy is the authoritative one, always valid:
/// no fetch, no twin, no diff, no reader registration (nobody needs to tell the home about a
/// write: releases write into this very copy), and a copy once writable stays writable (a
/// release has nothing to write back from it, and the writer registration is sticky).
pub fn home_fault(cache: page::Cache, registered_writer: bool, write: bool) -> (page::Cache, bool) {
    use page::Cache;
    let to = if write || cache == Cache::Writable {
        Cache::Writable
    } else {
        Cache::ReadOnly
    };
    (to, write && !registered_writer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let set = |rs: &[u32]| rs.iter().map(|&r| Rank(r)).collect::<NodeSet>();
        let entry = |r: &[u32], w: &[u32]| DirEntry {
            readers: set(r),
            writers: set(w),
        };
        let me = Rank(1);
        assert_eq!(classify(entry(&[1], &[]), me), Class::Private);
        assert_eq!(classify(entry(&[1], &[1]), me), Class::Private);
        assert_eq!(classify(entry(&[1, 2], &[]), me), Class::SharedNoWriter);
        assert_eq!(classify(entry(&[1, 2], &[2]), me), Class::SingleWriter);
        assert_eq!(
            classify(entry(&[1, 2], &[1, 2]), me),
            Class::MultipleWriters
        );
        assert!(others_write(set(&[2]), me));
        assert!(!others_write(set(&[1]), me));
        assert_eq!(to_notify(set(&[0, 1]), set(&[3]), me), set(&[0, 3]));
    }

    #[test]
    fn home_faults() {
        use page::Cache::*;
        // A read maps the home's copy; a write registers once and keeps it writable.
        assert_eq!(home_fault(Invalid, false, false), (ReadOnly, false));
        assert_eq!(home_fault(Invalid, false, true), (Writable, true));
        assert_eq!(home_fault(ReadOnly, false, true), (Writable, true));
        assert_eq!(home_fault(ReadOnly, true, true), (Writable, false));
        assert_eq!(home_fault(Invalid, true, false), (ReadOnly, false));
        // A read fault on a writable page (another thread resolved it first) leaves it so.
        assert_eq!(home_fault(Writable, true, false), (Writable, false));
    }
}
