//! The verbs backend's own checks: what it says without a device, and (where a device exists)
//! large messages, batches and capabilities. The conformance suite is in `conformance.rs`.

use std::sync::Arc;
use std::time::Duration;

use transport::{
    BackendKind, Error, LocalSlice, Op, Rank, Region, Tag, Transport, VerbsConfig, VerbsTransport,
};

fn job(n: usize) -> Option<Vec<VerbsTransport>> {
    let config = VerbsConfig::default();
    match transport::verbs::probe(&config) {
        Ok(_) => Some(VerbsTransport::local_job(n, &config).expect("verbs job")),
        Err(why) => {
            assert!(
                std::env::var_os("DSM_REQUIRE_RDMA").is_none(),
                "DSM_REQUIRE_RDMA is set but the verbs backend cannot run: {why}"
            );
            eprintln!("skipping: {why}");
            None
        }
    }
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
