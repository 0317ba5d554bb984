//! Registration that follows use over verbs (where a device exists): a large region pins
//! nothing when registered, each side pins the chunks operations touch, transfers that cross
//! chunks on either side arrive whole, and a bound on pinned memory refuses clearly.

use std::sync::Arc;

use transport::{
    Error, LocalSlice, Op, Rank, Region, RegionDesc, RemoteFault, Transport, VerbsConfig,
    VerbsTransport,
};

const MIB: usize = 1 << 20;

mod common;

fn job(config: &VerbsConfig) -> Option<Vec<VerbsTransport>> {
    common::verbs_job(2, config)
}

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

#[test]
fn large_regions_pin_the_chunks_operations_use() {
    let Some(job) = job(&VerbsConfig::default()) else {
        return;
    };
    // 256 MiB each: registered chunk by chunk (2 MiB chunks by default).
    let home = Region::allocate_sparse(256 * MIB).expect("allocate");
    let desc = job[1].register(&home).expect("register");
    let buf = Region::allocate_sparse(256 * MIB).expect("allocate");
    job[0].register(&buf).expect("register");
    assert_eq!(
        (job[0].pinned(), job[1].pinned()),
        (0, 0),
        "nothing used yet"
    );

    // 8 bytes across a local chunk boundary (4 MiB) into one remote chunk.
    let local = LocalSlice::new(&buf, 4 * MIB - 4, 8).expect("local");
    buf.write_at(4 * MIB - 4, b"abcdefgh").expect("fill");
    job[0]
        .write(desc.slice(40 * MIB as u64, 8).expect("slice"), local)
        .expect("write across a local chunk");
    job[0].flush(Rank(1)).expect("flush");
    let mut got = [0u8; 8];
    home.read_at(40 * MIB, &mut got).expect("read");
    assert_eq!(&got, b"abcdefgh");
    assert_eq!(job[0].pinned(), 4 * MIB, "two local chunks");
    assert_eq!(job[1].pinned(), 2 * MIB, "one remote chunk");

    // 5 MiB + 3 bytes read across three remote chunks into an odd local offset: whole.
    let len = 5 * MIB + 3;
    let data = pattern(1, len);
    home.write_at(MIB + 1, &data).expect("fill");
    let local = LocalSlice::new(&buf, 100 * MIB + 12_345, len).expect("local");
    job[0]
        .read(desc.slice((MIB + 1) as u64, len).expect("slice"), local)
        .expect("read across chunks");
    let mut back = vec![0u8; len];
    buf.read_at(100 * MIB + 12_345, &mut back).expect("read");
    assert!(back == data, "a transfer across chunks arrived damaged");
    // Remote: chunks 0-3 and 20; local: chunks 1, 2 (before) and 50-52.
    assert_eq!(job[1].pinned(), 5 * 2 * MIB);
    assert_eq!(job[0].pinned(), 5 * 2 * MIB);

    // Atomics on a chunk nobody used, and a batch: keys are asked once and kept.
    let word = desc.word(200 * MIB as u64).expect("word");
    assert_eq!(job[0].fetch_add(word, 5).expect("add"), 0);
    assert_eq!(job[0].compare_swap(word, 5, 9).expect("cas"), 5);
    let ops: Vec<Op> = (0..64)
        .map(|i| Op::FetchAdd {
            remote: desc.word(200 * MIB as u64 + 8 * i).expect("word"),
            add: 1,
        })
        .collect();
    job[0].post_all(ops).expect("batch");
    assert_eq!(job[0].fetch_add(word, 0).expect("load"), 10);
    assert_eq!(job[1].pinned(), 6 * 2 * MIB);

    // A descriptor that claims more than the region: the owner refuses chunks past its end,
    // and pins nothing for them.
    let lying = RegionDesc {
        len: 512 * MIB as u64,
        ..desc
    };
    let e = job[0]
        .fetch_add(lying.word(300 * MIB as u64).expect("word"), 1)
        .expect_err("out of bounds");
    assert!(
        matches!(
            e,
            Error::Remote {
                peer: Rank(1),
                fault: RemoteFault::OutOfBounds
            }
        ),
        "{e:?}"
    );
    assert_eq!(job[1].pinned(), 6 * 2 * MIB, "nothing pinned for it");

    // An empty transfer on chunks nobody used pins nothing on either side.
    let before = (job[0].pinned(), job[1].pinned());
    let empty = LocalSlice::new(&buf, 250 * MIB, 0).expect("local");
    job[0]
        .read(desc.slice(250 * MIB as u64, 0).expect("slice"), empty)
        .expect("empty read");
    assert_eq!((job[0].pinned(), job[1].pinned()), before);

    // Deregistering gives the pinned bytes back.
    job[1].deregister(&desc).expect("deregister");
    assert_eq!(job[1].pinned(), 0);
    let _keep = (Arc::clone(&home), Arc::clone(&buf));
}

#[test]
fn a_bound_on_pinned_memory_refuses_clearly() {
    let config = VerbsConfig {
        pin_max: Some(4 * MIB),
        ..VerbsConfig::default()
    };
    let Some(job) = job(&config) else { return };
    let home = Region::allocate_sparse(64 * MIB).expect("allocate");
    let desc = job[1].register(&home).expect("register");
    let buf = Region::allocate_sparse(64 * MIB).expect("allocate");
    job[0].register(&buf).expect("register");
    // Rank 1 holds a whole 2 MiB region and pins one chunk for rank 0: the next chunk is over
    // its bound.
    let extra = Region::allocate(2 * MIB).expect("allocate");
    let extra_desc = job[1].register(&extra).expect("register");
    job[0]
        .fetch_add(desc.word(0).expect("word"), 1)
        .expect("within the bound");
    let over = || {
        job[0]
            .fetch_add(desc.word(2 * MIB as u64).expect("word"), 1)
            .expect_err("over the peer's bound")
    };
    for e in [over(), over()] {
        assert!(
            matches!(
                e,
                Error::Remote {
                    peer: Rank(1),
                    fault: RemoteFault::NoMemory
                }
            ),
            "{e:?}"
        );
    }
    // Freed memory at the peer: the refusal was not kept, the chunk is asked for again.
    job[1].deregister(&extra_desc).expect("deregister");
    assert_eq!(job[1].pinned(), 2 * MIB);
    job[0]
        .fetch_add(desc.word(2 * MIB as u64).expect("word"), 1)
        .expect("room again");
    assert_eq!(job[1].pinned(), 4 * MIB);
    // Locally: a transfer whose local side needs a third chunk names the bound.
    for at in [0, 2 * MIB] {
        let local = LocalSlice::new(&buf, at, 8).expect("local");
        job[0]
            .read(desc.slice(0, 8).expect("slice"), local)
            .expect("within the local bound");
    }
    let local = LocalSlice::new(&buf, 4 * MIB, 8).expect("local");
    let e = job[0]
        .read(desc.slice(0, 8).expect("slice"), local)
        .expect_err("over the local bound");
    assert!(e.to_string().contains("DSM_RDMA_PIN_MAX"), "{e}");
    // What is registered still works.
    assert_eq!(
        job[0]
            .fetch_add(desc.word(0).expect("word"), 0)
            .expect("load"),
        1
    );
    let _keep = (Arc::clone(&home), Arc::clone(&buf), extra);
}
