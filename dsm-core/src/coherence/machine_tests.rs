//! One test per row of the state table: the state a step leaves and the actions it takes, in
//! order.

use super::*;
use Action::*;

const ME: Rank = Rank(1);

fn m() -> Machine {
    Machine::new(ME)
}

fn set(rs: &[u32]) -> NodeSet {
    rs.iter().map(|&r| Rank(r)).collect()
}

fn entry(r: &[u32], w: &[u32]) -> DirEntry {
    DirEntry {
        readers: set(r),
        writers: set(w),
    }
}

const INVALID: State = State(0);

fn fault(write: bool, home: Home) -> Input {
    Input::Fault { write, home }
}

#[test]
fn r1_read_fault_fetches_then_maps_read_only() {
    let s = m().step(INVALID, fault(false, Home::Elsewhere));
    assert_eq!(s.row, Row::R1);
    assert_eq!(s.wait, Some(Wait::Fetch));
    assert_eq!(
        s.actions.as_slice(),
        &[RegisterReader, ReadEntry, FetchPage, PrefetchAfter]
    );
    assert_eq!(
        s.next, INVALID,
        "the state changes only once the data is in"
    );
    let f = m().step(
        s.next,
        Input::Fetched {
            write: false,
            entry: entry(&[1], &[2]),
            old_writers: None,
        },
    );
    assert_eq!(f.row, Row::R1);
    assert_eq!(f.next.cache(), Cache::ReadOnly);
    assert!(f.next.has(REG_READER) && f.next.has(OTHER_WRITERS));
    assert_eq!(
        f.actions.as_slice(),
        &[
            TrackSharer,
            Map {
                from: View::None,
                to: View::Read
            },
            Cached
        ]
    );
    // Registered already, nobody else writes: no registration, not tracked.
    let s = m().step(State(0).with(REG_READER), fault(false, Home::Elsewhere));
    assert_eq!(s.actions.as_slice(), &[ReadEntry, FetchPage, PrefetchAfter]);
    let f = m().step(
        s.next,
        Input::Fetched {
            write: false,
            entry: entry(&[1], &[1]),
            old_writers: None,
        },
    );
    assert!(!f.next.has(OTHER_WRITERS) && !f.actions.contains(TrackSharer));
}

#[test]
fn w1_write_fault_registers_notifies_twins_then_opens() {
    let s = m().step(INVALID, fault(true, Home::Elsewhere));
    assert_eq!(s.row, Row::W1);
    assert_eq!(
        s.actions.as_slice(),
        &[RegisterReader, RegisterWriter, ReadEntry, FetchPage]
    );
    let f = m().step(
        s.next,
        Input::Fetched {
            write: true,
            entry: entry(&[0, 1], &[1, 3]),
            old_writers: Some(set(&[3])),
        },
    );
    assert_eq!(f.row, Row::W1);
    assert_eq!(f.next.cache(), Cache::Writable);
    assert!(f.next.has(REG_WRITER) && f.next.has(REG_READER) && f.next.has(OTHER_WRITERS));
    assert_eq!(
        f.actions.as_slice(),
        &[
            TrackSharer,
            Notify(set(&[0, 3])),
            KeepTwin,
            AddDirty,
            Map {
                from: View::None,
                to: View::ReadWrite
            },
            Cached
        ]
    );
}

#[test]
fn w2_write_to_a_read_only_copy_registers_once() {
    let ro = State(0).with(REG_READER).with_cache(Cache::ReadOnly);
    let s = m().step(ro, fault(true, Home::Elsewhere));
    assert_eq!((s.row, s.wait), (Row::W2, Some(Wait::WriterRegistration)));
    assert_eq!(s.actions.as_slice(), &[RegisterWriter, ReadEntry]);
    let r = m().step(
        ro,
        Input::WriterRegistered {
            entry: entry(&[1, 2], &[1]),
            old_writers: NodeSet::EMPTY,
            home: Home::Elsewhere,
        },
    );
    assert_eq!(r.actions.as_slice(), &[Notify(set(&[2]))]);
    assert!(r.next.has(REG_WRITER) && !r.next.has(OTHER_WRITERS));
    // Fed again, the fault completes in one step.
    let f = m().step(r.next, fault(true, Home::Elsewhere));
    assert_eq!((f.row, f.wait), (Row::W2, None));
    assert_eq!(
        f.actions.as_slice(),
        &[
            KeepTwin,
            AddDirty,
            Map {
                from: View::Read,
                to: View::ReadWrite
            }
        ]
    );
    assert_eq!(f.next.cache(), Cache::Writable);
}

#[test]
fn p1_p2_first_touch_of_a_prefetched_copy() {
    let pf = State(0)
        .with(REG_READER)
        .with(PREFETCHED)
        .with(RUN_START)
        .with_cache(Cache::ReadOnly);
    let s = m().step(pf, fault(false, Home::Elsewhere));
    assert_eq!(s.row, Row::P1);
    assert_eq!(
        s.actions.as_slice(),
        &[
            Map {
                from: View::None,
                to: View::Read
            },
            CountUsed,
            PrefetchAhead,
            Cached
        ]
    );
    assert!(!s.next.has(PREFETCHED) && !s.next.has(RUN_START));
    let s = m().step(pf.with(REG_WRITER), fault(true, Home::Elsewhere));
    assert_eq!(s.row, Row::P2);
    assert_eq!(
        s.actions.as_slice(),
        &[
            CountUsed,
            KeepTwin,
            AddDirty,
            Map {
                from: View::None,
                to: View::ReadWrite
            }
        ]
    );
    // Unregistered: registration first, and the use is counted once, at the end.
    let s = m().step(pf, fault(true, Home::Elsewhere));
    assert_eq!(s.row, Row::P2);
    assert!(!s.actions.contains(CountUsed));
}

#[test]
fn l1_release_writes_the_diff_and_protects() {
    let w = State(0).with(REG_WRITER).with_cache(Cache::Writable);
    let s = m().step(w, Input::Release);
    assert_eq!(s.row, Row::L1);
    assert_eq!(s.actions.as_slice(), &[WriteProtect, WriteDiff]);
    assert_eq!(s.next.cache(), Cache::ReadOnly);
    let ro = w.with_cache(Cache::ReadOnly);
    assert!(m().step(ro, Input::Release).actions.is_empty());
}

#[test]
fn a1_a2_e1_invalidate() {
    let w = State(0).with(OTHER_WRITERS).with_cache(Cache::Writable);
    let s = m().step(w, Input::Invalidate(Why::Acquire));
    assert_eq!(s.row, Row::A1);
    assert_eq!(s.actions.as_slice(), &[Unmap, WriteDiff]);
    assert_eq!(s.next.cache(), Cache::Invalid);
    assert!(s.next.has(OTHER_WRITERS), "sticky facts survive");
    let pf = State(0).with(PREFETCHED).with_cache(Cache::ReadOnly);
    let s = m().step(pf, Input::Invalidate(Why::Evict));
    assert_eq!(
        (s.row, s.actions.as_slice()),
        (Row::E1, &[Unmap, CountWasted][..])
    );
    assert!(!s.next.has(PREFETCHED));
    let s = m().step(INVALID, Input::Invalidate(Why::Overflow));
    assert_eq!(s.row, Row::A2);
    assert!(s.actions.is_empty());
}

#[test]
fn h1_h2_home_faults() {
    let s = m().step(INVALID, fault(false, Home::Here));
    assert_eq!(s.row, Row::H1);
    assert_eq!(
        s.actions.as_slice(),
        &[
            Populate,
            Map {
                from: View::None,
                to: View::Read
            }
        ]
    );
    let s = m().step(INVALID, fault(true, Home::Here));
    assert_eq!((s.row, s.wait), (Row::H2, Some(Wait::WriterRegistration)));
    let r = m().step(
        INVALID,
        Input::WriterRegistered {
            entry: entry(&[0], &[1]),
            old_writers: set(&[2]),
            home: Home::Here,
        },
    );
    assert_eq!(
        r.actions.as_slice(),
        &[Notify(set(&[0, 2]))],
        "the home tracks nothing"
    );
    assert!(r.next.has(OTHER_WRITERS));
    let f = m().step(r.next, fault(true, Home::Here));
    assert_eq!(f.row, Row::H2);
    assert_eq!(
        f.actions.as_slice(),
        &[
            Populate,
            Map {
                from: View::None,
                to: View::ReadWrite
            }
        ]
    );
    assert_eq!(f.next.cache(), Cache::Writable);
    // No twin, no dirty list: a home copy is never written back.
    assert!(!f.actions.contains(KeepTwin) && !f.actions.contains(AddDirty));
}

#[test]
fn v1_n1_f1_r2() {
    let ro = State(0).with_cache(Cache::ReadOnly);
    let s = m().step(ro, fault(false, Home::Elsewhere));
    assert_eq!(
        (s.row, s.actions.as_slice()),
        (Row::V1, &[Remap(View::Read)][..])
    );
    let s = m().step(
        ro,
        Input::Notified {
            home: Home::Elsewhere,
        },
    );
    assert_eq!((s.row, s.actions.as_slice()), (Row::N1, &[TrackSharer][..]));
    assert!(s.next.has(OTHER_WRITERS));
    let s = m().step(ro, Input::Notified { home: Home::Here });
    assert!(s.actions.is_empty() && s.next.has(OTHER_WRITERS));
    let s = m().step(
        INVALID,
        Input::Notified {
            home: Home::Elsewhere,
        },
    );
    assert!(
        s.actions.is_empty(),
        "an invalid copy needs no invalidation"
    );
    let pf = State(0).with(PREFETCHED).with_cache(Cache::ReadOnly);
    let s = m().step(pf, Input::Freed);
    assert_eq!(
        (s.row, s.actions.as_slice(), s.next),
        (Row::F1, &[CountWasted][..], INVALID)
    );
    let s = m().step(
        INVALID,
        Input::Installed {
            writers: set(&[0]),
            first_of_run: true,
        },
    );
    assert_eq!((s.row, s.actions.as_slice()), (Row::R2, &[TrackSharer][..]));
    assert!(s.next.has(PREFETCHED) && s.next.has(RUN_START) && s.next.has(REG_READER));
    // K1: a carried lock page goes in as a prefetched copy, still tracked as written by
    // others (so the next acquire closes it again).
    let shared = INVALID.with(REG_READER).with(OTHER_WRITERS);
    let k = m().step(shared, Input::Carried);
    assert_eq!((k.row, k.actions.as_slice()), (Row::K1, &[TrackSharer][..]));
    assert!(k.next.has(PREFETCHED) && k.next.has(OTHER_WRITERS) && !k.next.has(RUN_START));
    assert_eq!(
        (k.next.cache(), View::of(k.next)),
        (Cache::ReadOnly, View::None)
    );
    assert_eq!(s.next.cache(), Cache::ReadOnly);
    assert_eq!(
        View::of(s.next),
        View::None,
        "a prefetched copy's view stays closed"
    );
}
