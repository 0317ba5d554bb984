//! Micro-benchmark of the protocol state machine's step (`dsm_core::coherence::machine`): the
//! pure decision a fault, a release or an invalidation costs before any I/O, for the common
//! rows (R1's two halves, W2's registration and completion, P1, L1, A1, V1).
//!
//! Run: `cargo bench -p benches --bench machine` (`scripts/bench.sh --micro` runs it with the
//! other micro-benchmarks).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use dsm_core::coherence::machine::{Home, Input, Machine, Why};
use dsm_core::coherence::page::{Cache, State, PREFETCHED, REG_READER, REG_WRITER, RUN_START};
use dsm_core::coherence::{DirEntry, NodeSet};
use dsm_core::Rank;

fn steps(c: &mut Criterion) {
    let m = Machine::new(Rank(1));
    let invalid = State(0);
    let ro = State(0).with(REG_READER).with_cache(Cache::ReadOnly);
    let rw = ro.with(REG_WRITER).with_cache(Cache::Writable);
    let prefetched = ro.with(PREFETCHED).with(RUN_START);
    let entry = DirEntry {
        readers: [Rank(0), Rank(1)].into_iter().collect(),
        writers: [Rank(2)].into_iter().collect(),
    };
    let fault = |write| Input::Fault {
        write,
        home: Home::Elsewhere,
    };
    let cases: [(&str, State, Input); 8] = [
        ("R1 fault", invalid, fault(false)),
        (
            "R1 fetched",
            invalid,
            Input::Fetched {
                write: false,
                entry,
                old_writers: None,
            },
        ),
        ("W2 register", ro, fault(true)),
        (
            "W2 registered",
            ro,
            Input::WriterRegistered {
                entry,
                old_writers: NodeSet::EMPTY,
                home: Home::Elsewhere,
            },
        ),
        ("P1 first touch", prefetched, fault(false)),
        ("L1 release", rw, Input::Release),
        ("A1 invalidate", rw, Input::Invalidate(Why::Acquire)),
        ("V1 already valid", ro, fault(false)),
    ];
    let mut g = c.benchmark_group("machine step");
    for (name, st, input) in cases {
        g.bench_function(name, |b| b.iter(|| m.step(black_box(st), black_box(input))));
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    steps(&mut c);
    c.final_summary();
}
