//! Refusals: bad keys, out-of-bounds and misaligned ranges, unregistered local buffers and
//! regions withdrawn after use are refused with the right error, and the target's memory is
//! untouched.

use crate::api::Transport;
use crate::error::{Error, RemoteFault};
use crate::region::Region;
use crate::types::{LocalSlice, Op, RegionDesc, RemoteSlice};

use super::{expose, unexpose};

fn expect_fault<T: Transport>(t: &T, op: Op, want: RemoteFault) {
    let peer = op.peer();
    let got = t.post(op).and_then(|c| c.wait());
    match got {
        Err(Error::Remote { peer: p, fault }) if p == peer && fault == want => {}
        other => panic!("expected {want:?} from rank {peer}, got {other:?}"),
    }
}

/// Bad keys, out-of-bounds ranges and unregistered local buffers are refused, and the target's
/// memory is untouched.
pub fn rejects_bad_access<T: Transport>(job: &[T]) {
    let n = job.len();
    let (homes, descs) = expose(job, 4096);
    for h in &homes {
        h.write_at(0, &[0xAB; 4096]).expect("fill");
    }
    for (me, t) in job.iter().enumerate() {
        let target = descs[(me + 1) % n];
        let buf = Region::allocate(8192).expect("allocate");
        let bd = t.register(&buf).expect("register");
        let local = |len| LocalSlice::new(&buf, 0, len).expect("local");
        let raw = |offset, len| RemoteSlice {
            region: target,
            offset,
            len,
        };
        let bad_key = RemoteSlice {
            region: RegionDesc {
                key: crate::RemoteKey(u64::MAX - 7),
                ..target
            },
            offset: 0,
            len: 8,
        };
        expect_fault(
            t,
            Op::Read {
                remote: bad_key,
                local: local(8),
            },
            RemoteFault::BadKey,
        );
        expect_fault(
            t,
            Op::Write {
                remote: bad_key,
                local: local(8),
            },
            RemoteFault::BadKey,
        );
        expect_fault(
            t,
            Op::FetchAdd {
                remote: bad_key,
                add: 1,
            },
            RemoteFault::BadKey,
        );
        expect_fault(
            t,
            Op::Read {
                remote: raw(4090, 8),
                local: local(8),
            },
            RemoteFault::OutOfBounds,
        );
        expect_fault(
            t,
            Op::Write {
                remote: raw(4096, 1),
                local: local(1),
            },
            RemoteFault::OutOfBounds,
        );
        expect_fault(
            t,
            Op::Write {
                remote: raw(u64::MAX - 2, 8),
                local: local(8),
            },
            RemoteFault::OutOfBounds,
        );
        expect_fault(
            t,
            Op::Write {
                remote: raw(0, 8192),
                local: local(8192),
            },
            RemoteFault::OutOfBounds,
        );
        expect_fault(
            t,
            Op::CompareSwap {
                remote: raw(4096, 8),
                expected: 0,
                desired: 1,
            },
            RemoteFault::OutOfBounds,
        );
        // Local checks: lengths that differ, misaligned atomics, unregistered buffers.
        assert!(matches!(
            t.post(Op::Read {
                remote: raw(0, 4),
                local: local(8)
            }),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            t.post(Op::FetchAdd {
                remote: raw(4, 8),
                add: 1
            }),
            Err(Error::InvalidArgument(_))
        ));
        let stray = Region::allocate(64).expect("allocate");
        let unregistered = LocalSlice::new(&stray, 0, 8).expect("local");
        assert!(matches!(
            t.post(Op::Write {
                remote: raw(0, 8),
                local: unregistered
            }),
            Err(Error::NotRegistered(_))
        ));
        // A withdrawn registration is a bad key.
        let gone = Region::allocate(64).expect("allocate");
        let peer = &job[(me + 1) % n];
        let gd = peer.register(&gone).expect("register");
        peer.deregister(&gd).expect("deregister");
        expect_fault(
            t,
            Op::Read {
                remote: gd.slice(0, 8).expect("slice"),
                local: local(8),
            },
            RemoteFault::BadKey,
        );
        // So is one withdrawn after use (whatever the backend remembered of it), through the
        // direct calls as through `post`; and a local region deregistered after use is
        // refused as unregistered.
        let used = Region::allocate(64).expect("allocate");
        let ud = peer.register(&used).expect("register");
        let scratch = Region::allocate(64).expect("allocate");
        let sd = t.register(&scratch).expect("register");
        let into = LocalSlice::new(&scratch, 0, 8).expect("local");
        t.read(ud.slice(0, 8).expect("slice"), into.clone())
            .expect("a read before the withdrawal");
        t.fetch_add(ud.word(8).expect("word"), 1)
            .expect("an atomic before the withdrawal");
        peer.deregister(&ud).expect("deregister");
        for got in [
            t.read(ud.slice(0, 8).expect("slice"), local(8)),
            t.fetch_add(ud.word(8).expect("word"), 1).map(drop),
            t.compare_swap(ud.word(8).expect("word"), 0, 1).map(drop),
        ] {
            assert!(
                matches!(
                    got,
                    Err(Error::Remote {
                        fault: RemoteFault::BadKey,
                        ..
                    })
                ),
                "a withdrawn region after use: {got:?}"
            );
        }
        t.read(target.slice(0, 8).expect("slice"), into.clone())
            .expect("a read into a registered region");
        t.deregister(&sd).expect("deregister");
        let got = t.read(target.slice(0, 8).expect("slice"), into);
        assert!(
            matches!(got, Err(Error::NotRegistered(_))),
            "a local region deregistered after use: {got:?}"
        );
        // The connection still works after every refusal.
        t.write(target.slice(100, 1).expect("slice"), local(1))
            .expect("a good write after refusals");
        t.deregister(&bd).expect("deregister");
    }
    for (r, h) in homes.iter().enumerate() {
        let mut got = vec![0u8; 4096];
        h.read_at(0, &mut got).expect("read");
        assert!(
            got[..100].iter().chain(&got[101..]).all(|&b| b == 0xAB),
            "rank {r}: refused operations touched memory"
        );
    }
    unexpose(job, &descs);
}
