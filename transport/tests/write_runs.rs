//! The tcp backend's batched operations: scattered writes in one frame (`write_runs`, which
//! carries page diffs), strided adds (`add_strided`) and `post_batch`.

use transport::{
    Error, LocalSlice, Rank, Region, RegionDesc, RemoteFault, RemoteKey, Secret, TcpConfig,
    TcpTransport, Transport,
};

#[test]
fn runs_land_exactly_and_nothing_else_changes() {
    let job = TcpTransport::local_job(2, &TcpConfig::new(Secret::generate().unwrap())).unwrap();
    let home = Region::allocate(8192).unwrap();
    home.write_at(0, &[0xEE; 8192]).unwrap();
    let desc = job[1].register(&home).unwrap();
    let src = Region::allocate(4096).unwrap();
    job[0].register(&src).unwrap();
    job[1].register(&src).unwrap();
    let data: Vec<u8> = (0..4096).map(|i| (i % 251) as u8).collect();
    src.write_at(0, &data).unwrap();
    let runs = [(0u32, 3u32), (100, 1), (4000, 96)];
    for (rank, t) in job.iter().enumerate() {
        // From the other node and from the owner itself (executed in place).
        let at = if rank == 0 { 4096 } else { 0 };
        t.write_runs(
            desc.slice(at, 4096).unwrap(),
            &LocalSlice::whole(&src),
            &runs,
        )
        .map(|c| transport::wait_all(&c))
        .unwrap()
        .unwrap();
        let mut got = vec![0u8; 4096];
        home.read_at(at as usize, &mut got).unwrap();
        for i in 0..4096usize {
            let inside = runs
                .iter()
                .any(|&(o, l)| (o as usize..(o + l) as usize).contains(&i));
            let want = if inside { data[i] } else { 0xEE };
            assert_eq!(got[i], want, "byte {i} (written by rank {rank})");
        }
    }
    // A run past the end of the region: refused, and nothing of the request is written.
    let bad = RegionDesc {
        rank: Rank(1),
        key: desc.key,
        addr: desc.addr,
        len: desc.len + 4096,
    };
    home.write_at(0, &[0xEE; 8192]).unwrap();
    let r = job[0].write_runs(
        bad.slice(4096, 8192).unwrap(),
        &LocalSlice::new(&Region::allocate(8192).unwrap(), 0, 8192).unwrap(),
        &[(0, 1)],
    );
    assert!(matches!(r, Err(Error::NotRegistered(_))), "{r:?}");
    let big = Region::allocate(8192).unwrap();
    job[0].register(&big).unwrap();
    let c = job[0]
        .write_runs(
            bad.slice(4096, 8192).unwrap(),
            &LocalSlice::whole(&big),
            &[(0, 1), (4100, 10)],
        )
        .unwrap();
    assert!(matches!(
        transport::wait_all(&c),
        Err(Error::Remote {
            fault: RemoteFault::OutOfBounds,
            ..
        })
    ));
    let mut got = vec![0u8; 8192];
    home.read_at(0, &mut got).unwrap();
    assert!(
        got.iter().all(|&b| b == 0xEE),
        "a refused request wrote something"
    );
    let gone = RegionDesc {
        key: RemoteKey(u64::MAX),
        ..desc
    };
    let c = job[0]
        .write_runs(
            gone.slice(0, 4096).unwrap(),
            &LocalSlice::whole(&src),
            &runs,
        )
        .unwrap();
    assert!(matches!(
        transport::wait_all(&c),
        Err(Error::Remote {
            fault: RemoteFault::BadKey,
            ..
        })
    ));
}

#[test]
fn strided_adds_touch_exactly_their_words() {
    let job = TcpTransport::local_job(2, &TcpConfig::new(Secret::generate().unwrap())).unwrap();
    let home = Region::allocate(4096).unwrap();
    let desc = job[1].register(&home).unwrap();
    for t in &job {
        // From the other node and from the owner itself: words 1, 5, 9 (stride 32 bytes).
        t.add_strided(desc.word(8).unwrap(), 32, 3, 7)
            .map(|c| transport::wait_all(&c))
            .unwrap()
            .unwrap();
    }
    for w in 0..512usize {
        let v = home
            .atomic_u64(w * 8)
            .unwrap()
            .load(std::sync::atomic::Ordering::SeqCst);
        let want = if [1, 5, 9].contains(&w) { 14 } else { 0 };
        assert_eq!(v, want, "word {w}");
    }
    // One word past the end: refused, nothing changed.
    let c = job[0]
        .add_strided(desc.word(4000).unwrap(), 64, 3, 1)
        .unwrap();
    assert!(matches!(
        transport::wait_all(&c),
        Err(Error::Remote {
            fault: RemoteFault::OutOfBounds,
            ..
        })
    ));
    assert_eq!(
        home.atomic_u64(4000)
            .unwrap()
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(
        job[0].add_strided(desc.word(8).unwrap(), 12, 2, 1).is_err(),
        "misaligned stride"
    );
}

#[test]
fn a_batch_to_several_peers_completes_every_operation() {
    let job = TcpTransport::local_job(3, &TcpConfig::new(Secret::generate().unwrap())).unwrap();
    let homes: Vec<_> = (0..3).map(|_| Region::allocate(4096).unwrap()).collect();
    let descs: Vec<_> = job
        .iter()
        .zip(&homes)
        .map(|(t, h)| t.register(h).unwrap())
        .collect();
    let buf = Region::allocate(4096).unwrap();
    job[0].register(&buf).unwrap();
    buf.write_at(0, &[5u8; 64]).unwrap();
    let mut ops = Vec::new();
    for d in &descs {
        // Two to each peer, including this node itself, in a row.
        ops.push(transport::Op::FetchAdd {
            remote: d.word(0).unwrap(),
            add: 3,
        });
        ops.push(transport::Op::Write {
            remote: d.slice(64, 64).unwrap(),
            local: LocalSlice::new(&buf, 0, 64).unwrap(),
        });
    }
    let done = job[0].post_batch(ops).unwrap();
    assert_eq!(done.len(), 6);
    transport::wait_all(&done).unwrap();
    for h in &homes {
        assert_eq!(
            h.atomic_u64(0)
                .unwrap()
                .load(std::sync::atomic::Ordering::SeqCst),
            3
        );
        let mut got = [0u8; 64];
        h.read_at(64, &mut got).unwrap();
        assert_eq!(got, [5u8; 64]);
    }
    // A refused operation in the middle: what was registered before it still completes.
    let stray = Region::allocate(64).unwrap();
    let ops = vec![
        transport::Op::FetchAdd {
            remote: descs[1].word(0).unwrap(),
            add: 1,
        },
        transport::Op::Write {
            remote: descs[1].slice(0, 8).unwrap(),
            local: LocalSlice::new(&stray, 0, 8).unwrap(),
        },
    ];
    assert!(matches!(
        job[0].post_batch(ops),
        Err(Error::NotRegistered(_))
    ));
    let v = job[0].fetch_add(descs[1].word(0).unwrap(), 0).unwrap();
    assert_eq!(v, 4, "the operation before the refused one was sent");
}
