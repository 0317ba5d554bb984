//! Micro-benchmarks of the pure costs the protocol is made of, in one process, no network: the
//! twin a writer keeps of a page, the diff of the page against it and its application at the
//! home, and the tcp wire format's encoding and decoding (a header, a diff's `WriteRuns`
//! payload, and whole frames through the `FrameReader` a connection uses).
//!
//! Run: `cargo bench -p benches --bench codec` (criterion; `scripts/bench.sh --micro` runs every
//! micro-benchmark with short measurements). The page-fault round trip is `benches/fault.rs`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use dsm_core::coherence::diff::{apply, diff, Run};
use transport::wire::{self, FrameReader, Header, Kind, HEADER_LEN};

const PAGE: usize = dsm_core::space::PAGE;

/// A page and its twin that differ as `how` says: `word` (one aligned 8-byte word), `scattered`
/// (one byte in every 64, the worst case for the run list) or `all` (every byte).
fn page_pair(how: &str) -> (Vec<u8>, Vec<u8>) {
    let twin: Vec<u8> = (0..PAGE).map(|i| (i * 7) as u8).collect();
    let mut page = twin.clone();
    match how {
        "word" => page[512..520].iter_mut().for_each(|b| *b = !*b),
        "scattered" => page.iter_mut().step_by(64).for_each(|b| *b = !*b),
        _ => page.iter_mut().for_each(|b| *b = !*b),
    }
    (page, twin)
}

/// Keeping a twin: a fresh page-sized buffer filled with the page, as a writer's first write
/// fault does.
fn twin(c: &mut Criterion) {
    let page: Vec<u8> = (0..PAGE).map(|i| i as u8).collect();
    let mut g = c.benchmark_group("twin");
    g.throughput(Throughput::Bytes(PAGE as u64));
    g.bench_function("alloc+copy", |b| {
        b.iter(|| {
            let mut t = vec![0u8; PAGE].into_boxed_slice();
            t.copy_from_slice(black_box(&page));
            t
        })
    });
    let mut t = vec![0u8; PAGE];
    g.bench_function("copy", |b| b.iter(|| t.copy_from_slice(black_box(&page))));
    g.finish();
}

/// Making a diff (the writer, at release or eviction) and applying it (the home).
fn diffs(c: &mut Criterion) {
    let mut g = c.benchmark_group("diff");
    g.throughput(Throughput::Bytes(PAGE as u64));
    for how in ["none", "word", "scattered", "all"] {
        let (page, twin) = if how == "none" {
            let p: Vec<u8> = (0..PAGE).map(|i| i as u8).collect();
            (p.clone(), p)
        } else {
            page_pair(how)
        };
        g.bench_with_input(BenchmarkId::new("make", how), &how, |b, _| {
            b.iter(|| diff(black_box(&page), black_box(&twin)))
        });
        let runs = diff(&page, &twin);
        let mut home = twin.clone();
        g.bench_with_input(BenchmarkId::new("apply", how), &how, |b, _| {
            b.iter(|| apply(black_box(&mut home), black_box(&page), black_box(&runs)))
        });
    }
    g.finish();
}

/// The runs of a diff as the wire's `(offset, len)` pairs.
fn wire_runs(runs: &[Run]) -> Vec<(u32, u32)> {
    runs.iter()
        .map(|r| (r.offset as u32, r.len as u32))
        .collect()
}

/// The tcp wire format: headers, `WriteRuns` payloads, and frames through a `FrameReader`.
fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    let mut h = Header::new(Kind::Read);
    (h.id, h.a, h.b, h.c) = (42, 3, 8 * PAGE as u64, PAGE as u64);
    let bytes = h.encode();
    g.bench_function("header/encode", |b| b.iter(|| black_box(&h).encode()));
    g.bench_function("header/decode", |b| {
        b.iter(|| Header::decode(black_box(&bytes), 1 << 24).expect("a valid header"))
    });
    for how in ["word", "scattered"] {
        let (page, twin) = page_pair(how);
        let runs = wire_runs(&diff(&page, &twin));
        let payload = wire::encode_runs(&runs, &page);
        g.bench_with_input(BenchmarkId::new("runs/encode", how), &how, |b, _| {
            b.iter(|| wire::encode_runs(black_box(&runs), black_box(&page)))
        });
        g.bench_with_input(BenchmarkId::new("runs/decode", how), &how, |b, _| {
            b.iter(|| wire::decode_runs(black_box(&payload)).expect("a valid payload"))
        });
    }
    // A stream of page-sized responses, as a connection reading pages receives them: pushed
    // 64 KiB at a time and taken frame by frame.
    let mut response = Header::new(Kind::Response);
    response.payload_len = PAGE as u32;
    let mut stream = Vec::new();
    for id in 0..16u64 {
        response.id = id;
        stream.extend_from_slice(&response.encode());
        stream.extend(std::iter::repeat_n(id as u8, PAGE));
    }
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("frames/16 page responses", |b| {
        let mut reader = FrameReader::new(1 << 24);
        b.iter(|| {
            let mut frames = 0;
            for chunk in stream.chunks(64 << 10) {
                reader.push(black_box(chunk));
                while let Some(f) = reader.next_frame().expect("valid frames") {
                    black_box(f.payload);
                    frames += 1;
                }
            }
            assert_eq!(frames, 16);
        })
    });
    g.finish();
    debug_assert_eq!(bytes.len(), HEADER_LEN);
}

fn main() {
    // Short by default (each figure within a few per cent on an idle machine); criterion's own
    // options (`--measurement-time`, `--sample-size`, a filter) still apply.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args();
    twin(&mut c);
    diffs(&mut c);
    codec(&mut c);
    c.final_summary();
}
