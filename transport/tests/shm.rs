//! The `shm` backend with memory it did not allocate, and the mixed transport's fallback to
//! tcp for memory that cannot be shared.

use std::sync::Arc;

use transport::{
    LocalSlice, MixedTransport, Op, Region, RemoteFault, Secret, ShmConfig, ShmTransport,
    TcpConfig, Transport,
};

/// Reads back, writes and adds through `t` on `desc`; returns the word's old value.
fn exercise<T: Transport>(t: &T, desc: transport::RegionDesc) -> transport::Result<u64> {
    let buf = Region::allocate(64)?;
    let bd = t.register(&buf)?;
    buf.write_at(0, b"abcdefgh")?;
    t.write(desc.slice(8, 8)?, LocalSlice::new(&buf, 0, 8)?)?;
    t.read(desc.slice(8, 8)?, LocalSlice::new(&buf, 16, 8)?)?;
    let mut back = [0u8; 8];
    buf.read_at(16, &mut back)?;
    assert_eq!(&back, b"abcdefgh");
    let old = t.fetch_add(desc.word(0)?, 5)?;
    t.deregister(&bd)?;
    Ok(old)
}

#[test]
fn a_borrowed_view_of_shared_memory_is_reached_through_its_file() {
    let job = ShmTransport::local_job(2, &ShmConfig::default()).expect("job");
    let owned = Region::allocate(8192).expect("allocate");
    // SAFETY: `owned` stays alive (and mapped) until the end of the test, after `view` is
    // deregistered; nothing borrows it as a slice.
    let view = unsafe { Region::from_raw(owned.as_ptr().wrapping_add(4096), 4096) }.expect("view");
    let desc = job[1].register(&view).expect("register");
    assert_eq!(exercise(&job[0], desc).expect("through shm"), 0);
    assert_eq!(
        view.atomic_u64(0)
            .expect("word")
            .load(std::sync::atomic::Ordering::SeqCst),
        5
    );
    let mut got = [0u8; 8];
    owned.read_at(4096 + 8, &mut got).expect("read");
    assert_eq!(&got, b"abcdefgh", "the write landed in the owner's pages");
    job[1].deregister(&desc).expect("deregister");
}

#[test]
fn private_memory_goes_over_tcp_in_a_mixed_job_and_is_refused_by_shm_alone() {
    let mut heap = vec![0u64; 512];
    let ptr = heap.as_mut_ptr().cast::<u8>();
    // SAFETY: `heap` outlives both jobs (dropped at the end of the test, after they are
    // closed); it is not touched through Rust references while they may access it.
    let private: Arc<Region> = unsafe { Region::from_raw(ptr, 4096) }.expect("region");

    let shm = ShmTransport::local_job(2, &ShmConfig::default()).expect("shm job");
    let desc = shm[1].register(&private).expect("register");
    let refused = shm[0].post(Op::FetchAdd {
        remote: desc.word(0).expect("word"),
        add: 1,
    });
    match refused.and_then(|c| c.wait()) {
        Err(transport::Error::Remote {
            fault: RemoteFault::Unsupported,
            ..
        }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
    shm[1].deregister(&desc).expect("deregister");
    drop(shm);

    let tcp = TcpConfig::new(Secret::generate().expect("secret"));
    let mixed = MixedTransport::local_job(2, &tcp, &ShmConfig::default()).expect("mixed job");
    let desc = mixed[1].register(&private).expect("register");
    assert_eq!(exercise(&mixed[0], desc).expect("through tcp"), 0);
    mixed[0].flush(transport::Rank(1)).expect("flush");
    mixed[1].deregister(&desc).expect("deregister");
    drop(mixed);
    assert_eq!(heap[0], 5);
}
