//! A deterministic simulation of the protocol: several nodes inside one process, over the
//! `loopback` transport (every remote operation executes synchronously, so a run is a pure
//! function of its schedule), running the real runtime code (`Inner::resolve`, `release`,
//! `acquire`) with accesses interleaved in random orders. Property tests generate random
//! data-race-free programs and compare every read with a sequential oracle.

use super::*;
use crate::fault::FaultMode;
use proptest::prelude::*;
use transport::LoopbackTransport;

const SIZE: usize = 16 << 20;
/// Bytes of the allocation the programs touch: a few pages, so that they share a lot.
const SPAN: usize = 4 * PAGE;

fn cluster(n: usize, cache_pages: usize) -> Vec<Arc<Inner>> {
    let job = LoopbackTransport::job(n).expect("loopback job");
    let config = DsmConfig {
        global_size: SIZE,
        fault_mode: FaultMode::Inline,
        fault_engine: crate::fault::FaultEngineKind::Sigsegv,
        cache_size: cache_pages * PAGE,
        checkpoint: Default::default(),
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = job
            .into_iter()
            .map(|t| {
                let c = config.clone();
                s.spawn(move || {
                    let space = GlobalSpace::map_anywhere(SIZE).expect("map");
                    Inner::build(Arc::new(AnyTransport::Loopback(t)), space, &c).expect("build")
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("node"))
            .collect()
    })
}

/// One access, as the application would make it: what the fault handler would do first (the
/// page's protection says whether the access would fault), then the load or store itself.
fn access(node: &Inner, start: usize, offset: usize, write: Option<u8>) -> u8 {
    let page = start + offset / PAGE;
    let addr = node.space.base() + start * PAGE + offset;
    let st = node.pages.peek(page);
    let cache = st.cache();
    match write {
        Some(_) if cache != Cache::Writable => node.resolve(addr, true).expect("write fault"),
        // An invalid page, or a prefetched one not touched yet: the view does not map either.
        None if cache == Cache::Invalid || st.has(crate::coherence::page::PREFETCHED) => {
            node.resolve(addr, false).expect("read fault")
        }
        _ => {}
    }
    match write {
        Some(v) => {
            // SAFETY: the page is open for writing in this node's application view (resolved
            // above), and the simulation runs on one thread.
            unsafe { (addr as *mut u8).write_volatile(v) };
            v
        }
        // SAFETY: the page is open for reading, as above.
        None => unsafe { (addr as *const u8).read_volatile() },
    }
}

/// Release on every node, then acquire on every node: a barrier.
/// Allocates `bytes` collectively on every node of `nodes`; the start page, checked to be the
/// same everywhere.
fn alloc_everywhere(nodes: &[Arc<Inner>], bytes: usize, placement: Placement) -> usize {
    let start: Vec<usize> = nodes
        .iter()
        .map(|n| n.alloc_collective_local(bytes, placement).expect("alloc"))
        .collect();
    assert!(
        start.iter().all(|&s| s == start[0]),
        "collective allocation differs between nodes: {start:?}"
    );
    start[0]
}

fn barrier(nodes: &[Arc<Inner>]) {
    for n in nodes {
        n.release().expect("release");
    }
    for n in nodes {
        n.acquire().expect("acquire");
    }
}

/// One access of a program: node, offset, and the value for a write.
type Access = (usize, usize, Option<u8>);

/// Keeps a phase data-race free: the first node to write an offset owns it for the phase;
/// other nodes' writes to it and reads of it are dropped.
fn race_free(phase: Vec<Access>, nodes: usize) -> Vec<Access> {
    let mut owner: HashMap<usize, usize> = HashMap::new();
    for &(n, o, w) in &phase {
        if w.is_some() {
            owner.entry(o).or_insert(n % nodes);
        }
    }
    phase
        .into_iter()
        .map(|(n, o, w)| (n % nodes, o, w))
        .filter(|&(n, o, _)| owner.get(&o).is_none_or(|&w| w == n))
        .collect()
}

fn run(
    nodes: usize,
    placement: Placement,
    cache_pages: usize,
    phases: Vec<Vec<Access>>,
) -> std::result::Result<(), TestCaseError> {
    let cl = cluster(nodes, cache_pages);
    let start = alloc_everywhere(&cl, SPAN, placement);
    let mut memory = vec![0u8; SPAN];
    for phase in phases {
        let phase = race_free(phase, nodes);
        // Each node sees the memory of the phase's start plus its own writes.
        let mut views: Vec<HashMap<usize, u8>> = vec![HashMap::new(); nodes];
        for &(n, o, w) in &phase {
            let got = access(&cl[n], start, o, w);
            match w {
                Some(v) => {
                    views[n].insert(o, v);
                }
                None => {
                    let want = views[n].get(&o).copied().unwrap_or(memory[o]);
                    prop_assert_eq!(got, want, "node {} read offset {}", n, o);
                }
            }
        }
        barrier(&cl);
        for view in views {
            for (o, v) in view {
                memory[o] = v;
            }
        }
    }
    for (n, node) in cl.iter().enumerate() {
        for (o, &want) in memory.iter().enumerate().step_by(7) {
            let got = access(node, start, o, None);
            prop_assert_eq!(got, want, "final read by node {} at offset {}", n, o);
        }
        let s = node.stats.snapshot();
        prop_assert_eq!(
            s.prefetched_used + s.prefetched_wasted + untouched(node),
            s.prefetched,
            "node {}: every prefetched page is used, wasted or still untouched",
            n
        );
    }
    Ok(())
}

/// Pages of `node` prefetched and not touched yet.
fn untouched(node: &Inner) -> u64 {
    (0..node.pages.len())
        .filter(|&p| node.pages.peek(p).has(crate::coherence::page::PREFETCHED))
        .count() as u64
}

fn placement() -> impl Strategy<Value = Placement> {
    prop_oneof![
        Just(Placement::Blocked),
        (1usize..3).prop_map(|b| Placement::Cyclic { block_pages: b }),
        Just(Placement::FirstTouch),
    ]
}

fn program() -> impl Strategy<Value = Vec<Vec<Access>>> {
    let access = (
        0usize..4,
        0usize..SPAN,
        proptest::option::weighted(0.5, any::<u8>()),
    );
    proptest::collection::vec(proptest::collection::vec(access, 0..60), 1..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    /// Random data-race-free programs on 2 to 4 simulated nodes, with any placement and a
    /// cache small enough to evict, read exactly what a sequential execution would.
    #[test]
    fn data_race_free_programs_match_the_sequential_oracle(
        nodes in 2usize..5,
        placement in placement(),
        cache_pages in prop_oneof![Just(2usize), Just(1024usize)],
        phases in program(),
    ) {
        run(nodes, placement, cache_pages, phases)?;
    }
}

#[test]
fn false_sharing_on_one_word_survives() {
    // Four nodes write the four bytes of one word in one phase.
    let phase = (0..4).map(|n| (n, 100 + n, Some(n as u8 + 1))).collect();
    run(4, Placement::Blocked, 1024, vec![phase]).expect("false sharing");
}

/// Pages in [`second_half_written_by_node_1`]'s allocation, per node.
const PAGES: usize = 64;

/// Two nodes sharing `2 * PAGES` blocked pages, after node 1 wrote every page of its half
/// (page `p` holds `p`) and a barrier. Returns the cluster and the allocation's first page.
fn second_half_written_by_node_1() -> (Vec<Arc<Inner>>, usize) {
    let cl = cluster(2, 1024);
    let start = alloc_everywhere(&cl, 2 * PAGES * PAGE, Placement::Blocked);
    for p in PAGES..2 * PAGES {
        access(&cl[1], start, p * PAGE, Some(p as u8));
    }
    barrier(&cl);
    (cl, start)
}

#[test]
fn prefetched_pages_are_counted_used_or_wasted() {
    let (cl, start) = second_half_written_by_node_1();
    // Node 0 reads the first 40 of them in order: remote faults at 0 and 1 (which posts the
    // run 2-3); then the first touch of each run's first page posts runs, twice as long each
    // time, up to two runs beyond the one it starts: at 2, runs 4-7, 8-11, 12-15; at 4, runs
    // 16-23, 24-31; at 8, runs 32-47, 48-63 (the allocation ends there). The last is still in
    // flight (not counted yet); 40-47 are installed but untouched.
    for p in PAGES..PAGES + 40 {
        assert_eq!(access(&cl[0], start, p * PAGE, None), p as u8);
    }
    let s = cl[0].stats.snapshot();
    assert_eq!(s.read_faults, 40, "{s:?}");
    assert_eq!(s.pages_fetched, 2 + 46, "{s:?}");
    assert_eq!(s.prefetched, 46, "{s:?}");
    assert_eq!(s.prefetched_used, 38, "{s:?}");
    assert_eq!(s.prefetched_wasted, 0, "{s:?}");
    assert_eq!(untouched(&cl[0]), 8);
    // Node 1 writes them: the barrier installs the run in flight and invalidates node 0's
    // copies; the 24 untouched are wasted (fewer than were used: the window keeps its cap).
    barrier(&cl);
    let s = cl[0].stats.snapshot();
    assert_eq!(s.prefetched, 62, "{s:?}");
    assert_eq!(s.prefetched_wasted, 24, "{s:?}");
    assert_eq!(untouched(&cl[0]), 0);
    assert_eq!(
        lock(&cl[0].prefetch).cap(),
        prefetch::MAX_WINDOW,
        "34 used, 24 wasted"
    );
    // Two pages again: the second fault prefetches two more, wasted at the barrier, with
    // nothing used since: the cap halves.
    for p in PAGES..PAGES + 2 {
        access(&cl[0], start, p * PAGE, None);
    }
    barrier(&cl);
    assert_eq!(cl[0].stats.snapshot().prefetched_wasted, 24 + 2);
    assert_eq!(lock(&cl[0].prefetch).cap(), prefetch::MAX_WINDOW / 2);
}

#[test]
fn a_strided_reader_gets_the_pages_on_its_stride_prefetched() {
    let (cl, start) = second_half_written_by_node_1();
    // Node 0 reads every fourth page of node 1's half (offsets 0, 4, ..., 60): remote faults at
    // 0 and 4 (one stride is not a pattern), at 8 (which posts 12 and 16), at 20 (24 to 36),
    // at 40 (44 to 60: the pages past the allocation are left out).
    for p in (PAGES..2 * PAGES).step_by(4) {
        assert_eq!(access(&cl[0], start, p * PAGE, None), p as u8);
    }
    let s = cl[0].stats.snapshot();
    assert_eq!(s.read_faults, 16, "{s:?}");
    assert_eq!(s.pages_fetched, 5 + 11, "{s:?}");
    assert_eq!(s.prefetched, 11, "{s:?}");
    assert_eq!(s.prefetched_used, 11, "{s:?}");
    assert_eq!(untouched(&cl[0]), 0);
    // The pages between were never fetched.
    assert_eq!(cl[0].pages.peek(start + PAGES + 1).cache(), Cache::Invalid);
}

#[test]
fn a_home_writes_its_own_pages_in_place() {
    const PAGES: usize = 8;
    let cl = cluster(2, 1024);
    let start = alloc_everywhere(&cl, 2 * PAGES * PAGE, Placement::Blocked);
    // Node 1 reads, then writes, every page of its half (blocked: the second half is its own),
    // and node 0 writes one byte of each at the same time (false sharing with the home).
    for p in PAGES..2 * PAGES {
        assert_eq!(access(&cl[1], start, p * PAGE, None), 0);
        access(&cl[1], start, p * PAGE, Some(p as u8));
        access(&cl[0], start, p * PAGE + 1, Some(p as u8 + 100));
    }
    let s = cl[1].stats.snapshot();
    assert_eq!(
        (s.read_faults, s.write_faults),
        (PAGES as u64, PAGES as u64),
        "{s:?}"
    );
    assert_eq!(s.pages_fetched, 0, "the home fetches nothing: {s:?}");
    assert!(lock(&cl[1].twins).is_empty(), "no twin of a home page");
    assert!(
        lock(&cl[1].dirty).is_empty(),
        "no home page on the dirty list"
    );
    barrier(&cl);
    let s = cl[1].stats.snapshot();
    assert_eq!(
        (s.diffs, s.bytes_written_home, s.invalidations),
        (0, 0, 0),
        "{s:?}"
    );
    // Both writes are at the home, and node 0 reads node 1's after the barrier.
    for p in PAGES..2 * PAGES {
        assert_eq!(access(&cl[1], start, p * PAGE + 1, None), p as u8 + 100);
        assert_eq!(access(&cl[0], start, p * PAGE, None), p as u8);
    }
    // The home's pages stay writable across the barrier: writing them again takes no fault,
    // and node 0 (now a reader, notified or having seen the writer) sees the new values.
    barrier(&cl);
    for p in PAGES..2 * PAGES {
        access(&cl[1], start, p * PAGE, Some(p as u8 + 1));
    }
    assert_eq!(cl[1].stats.snapshot().write_faults, PAGES as u64);
    barrier(&cl);
    for p in PAGES..2 * PAGES {
        assert_eq!(access(&cl[0], start, p * PAGE, None), p as u8 + 1);
    }
    assert_eq!(cl[1].stats.snapshot().invalidations, 0);
}
