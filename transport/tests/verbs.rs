//! The verbs backend's own checks: what it says without a device, and (where a device exists)
//! large messages, batches and capabilities. The conformance suite is in `conformance.rs`.

use std::sync::Arc;
use std::time::Duration;

use transport::{
    BackendKind, Error, LocalSlice, Op, Rank, Region, Tag, Transport, VerbsConfig, VerbsTransport,
};

mod common;

fn job(n: usize) -> Option<Vec<VerbsTransport>> {
    common::verbs_job(n, &VerbsConfig::default())
}

#[test]
fn without_a_device_prepare_says_so() {
    if !transport::verbs::device_names().is_empty() {
        // Where there is a device, an unknown device name must be named in the error.
        let config = VerbsConfig {
            device: Some("no-such-hca".into()),
            ..VerbsConfig::default()
        };
        let e = VerbsTransport::prepare(Rank(0), 2, config).expect_err("unknown device");
        assert!(e.to_string().contains("no-such-hca"), "{e}");
        return;
    }
    let e = VerbsTransport::prepare(Rank(0), 2, VerbsConfig::default()).expect_err("no device");
    assert!(matches!(e, Error::Unsupported(_)), "{e:?}");
    let why = transport::verbs::probe(&VerbsConfig::default()).expect_err("no device");
    assert!(
        why.to_string().contains("RDMA"),
        "the reason names RDMA: {why}"
    );
}

#[test]
fn capabilities_and_large_messages() {
    let Some(job) = job(2) else { return };
    let caps = job[0].capabilities();
    assert_eq!(caps.backend, BackendKind::Verbs);
    assert!(caps.native_one_sided && caps.ordered_writes && !caps.atomics_coherent_with_cpu);
    assert!(caps.max_message >= 64 << 20);
    // A message of many fragments, then a small one: both arrive whole and in order.
    let big: Vec<u8> = (0..(3 << 20) + 17).map(|i| (i % 251) as u8).collect();
    job[0].send(Rank(1), Tag(9), &big).expect("send big");
    job[0].send(Rank(1), Tag(9), b"after").expect("send small");
    let m = job[1]
        .recv(Some(Rank(0)), Some(Tag(9)), Some(Duration::from_secs(60)))
        .expect("recv big");
    assert!(m.data == big, "large message corrupted");
    let m = job[1]
        .recv(Some(Rank(0)), Some(Tag(9)), Some(Duration::from_secs(60)))
        .expect("recv small");
    assert_eq!(m.data, b"after");
}

#[test]
fn batches_go_out_as_post_lists() {
    let Some(job) = job(2) else { return };
    let home = Region::allocate(1 << 20).expect("allocate");
    let desc = job[1].register(&home).expect("register");
    let src = Region::allocate(1 << 20).expect("allocate");
    job[0].register(&src).expect("register");
    src.write_at(0, &vec![7u8; 1 << 20]).expect("fill");
    let ops = (0..1000).map(|i| Op::Write {
        remote: desc.slice(i * 1000, 1000).expect("slice"),
        local: LocalSlice::new(&src, i as usize * 1000, 1000).expect("local"),
    });
    job[0].post_all(ops).expect("batch");
    job[0].flush(Rank(1)).expect("flush");
    let mut got = vec![0u8; 1_000_000];
    home.read_at(0, &mut got).expect("read");
    assert!(got.iter().all(|&b| b == 7));
    let word = desc.word(0).expect("word");
    let adds = (0..100).map(|_| Op::FetchAdd {
        remote: word,
        add: 1,
    });
    job[0].post_all(adds).expect("atomics batch");
    let before = job[0].fetch_add(word, 0).expect("load");
    assert_eq!(before, u64::from_le_bytes([7; 8]).wrapping_add(100));
    let _keep = Arc::clone(&home);
}

/// `post_batch` sends a chain with one signalled request at its end: every operation still
/// gets its own outcome (an atomic's old value, a read's bytes), and one refused in the middle
/// fails alone. Long batches (over a quarter of the queue) and two peers exercise the chains'
/// cuts.
#[test]
fn a_post_batch_gives_each_operation_its_own_outcome() {
    let Some(job) = job(3) else { return };
    let homes: Vec<_> = (1..3)
        .map(|r| {
            let h = Region::allocate(1 << 16).expect("allocate");
            h.write_at(
                0,
                &(0..1 << 16).map(|i| (i % 253) as u8).collect::<Vec<u8>>(),
            )
            .expect("fill");
            let d = job[r].register(&h).expect("register");
            h.write_at(0, &[0u8; 8]).expect("zero word 0");
            (h, d)
        })
        .collect();
    let dst = Region::allocate(1 << 20).expect("allocate");
    job[0].register(&dst).expect("register");
    let mut ops = Vec::new();
    let mut expect_add = Vec::new();
    for i in 0..200usize {
        let (_, d) = &homes[(i / 70) % 2];
        match i % 3 {
            0 => {
                expect_add.push(i);
                ops.push(Op::FetchAdd {
                    remote: d.word(0).expect("word"),
                    add: 1,
                });
            }
            1 => ops.push(Op::Read {
                remote: d.slice(4096 + i as u64, 16).expect("slice"),
                local: LocalSlice::new(&dst, i * 4096, 16).expect("local"),
            }),
            _ => ops.push(Op::Read {
                remote: d.slice(8192, 4096).expect("slice"),
                local: LocalSlice::new(&dst, i * 4096, 4096).expect("local"),
            }),
        }
    }
    // One refused in the middle, before it reaches the NIC (a key no registration can have).
    // (One the NIC refuses breaks the queue pair, and the requests behind it are flushed, as
    // for separate posts.)
    let bad = transport::RegionDesc {
        key: transport::RemoteKey(u64::MAX),
        ..homes[0].1
    };
    ops.insert(
        100,
        Op::Read {
            remote: bad.slice(0, 16).expect("slice"),
            local: LocalSlice::new(&dst, 0, 16).expect("local"),
        },
    );
    let done = job[0].post_batch(ops).expect("post_batch");
    assert_eq!(done.len(), 201);
    let mut seen = [Vec::new(), Vec::new()];
    for (k, c) in done.iter().enumerate() {
        let r = c.wait_timeout(Duration::from_secs(60));
        if k == 100 {
            assert!(
                matches!(r, Err(Error::Remote { .. })),
                "the bad read: {r:?}"
            );
            continue;
        }
        let i = if k > 100 { k - 1 } else { k };
        let v = r.unwrap_or_else(|e| panic!("operation {i}: {e}"));
        if i % 3 == 0 {
            seen[(i / 70) % 2].push(v);
        }
    }
    // Each target's word went 0, 1, 2, ... in posting order: the old values say so.
    for (t, s) in seen.iter().enumerate() {
        assert_eq!(*s, (0..s.len() as u64).collect::<Vec<_>>(), "target {t}");
    }
    let pattern =
        |at: usize, len: usize| -> Vec<u8> { (at..at + len).map(|i| (i % 253) as u8).collect() };
    for i in (0..200usize).filter(|i| i % 3 != 0) {
        let (at, len) = if i % 3 == 1 {
            (4096 + i, 16)
        } else {
            (8192, 4096)
        };
        let mut got = vec![0u8; len];
        dst.read_at(i * 4096, &mut got).expect("read");
        assert!(got == pattern(at, len), "read {i}");
    }
    assert_eq!(expect_add.len(), seen[0].len() + seen[1].len());
}

#[test]
fn a_closed_peer_is_reported_not_lost() {
    let Some(mut job) = job(2) else { return };
    let gone = job.pop().expect("rank 1");
    gone.close().expect("close");
    let e = job[0]
        .recv(Some(Rank(1)), None, Some(Duration::from_secs(30)))
        .expect_err("closed");
    assert!(matches!(e, Error::PeerClosed(Rank(1))), "{e:?}");
}
