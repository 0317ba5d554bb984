//! Small writes and reads posted one at a time while earlier ones are still in flight (MPI
//! puts and gets before their flush): a backend may send them together later (tcp holds them
//! back until a response arrives or somebody waits), but none may be lost, overtaken or left
//! waiting for traffic that never comes.

use std::time::{Duration, Instant};

use super::{expose, pattern, unexpose};
use crate::api::Transport;
use crate::completion::Completion;
use crate::region::Region;
use crate::types::{LocalSlice, Op, Rank, RegionDesc, Tag};

/// Writes of this many bytes, one `post_batch` each.
const PIECE: usize = 64;
/// Writes per round.
const PIECES: usize = 64;
const ROUND: usize = PIECE * PIECES;
const WAIT: Duration = Duration::from_secs(30);
/// How soon writes whose completions were dropped must land: well within the first heartbeat
/// (tcp: a quarter of the 10 s peer timeout), so that a backend whose held writes wait for
/// unrelated traffic fails.
const LAND: Duration = Duration::from_secs(2);

/// Posts round `round`'s writes from `t` to `target`, one at a time, without waiting.
fn post_round<T: Transport>(
    t: &T,
    src: &std::sync::Arc<Region>,
    target: &RegionDesc,
    round: usize,
) -> Vec<Completion> {
    (0..PIECES)
        .flat_map(|i| {
            let at = round * ROUND + i * PIECE;
            let op = Op::Write {
                remote: target.slice(at as u64, PIECE).expect("slice"),
                local: LocalSlice::new(src, at, PIECE).expect("local"),
            };
            t.post_batch(vec![op]).expect("post_batch")
        })
        .collect()
}

/// A read posted after a stream of small writes sees them all; waiting on the last write alone
/// completes it; a message sent after writes whose completions nobody waits for arrives; and
/// writes whose completions are dropped at once land with nobody waiting.
pub fn posted_writes_land_in_order<T: Transport>(job: &[T]) {
    let (a, b) = (&job[0], &job[1]);
    let (homes, descs) = expose(job, 4 * ROUND);
    let target = descs[1];
    let src = Region::allocate(4 * ROUND).expect("allocate");
    let sd = a.register(&src).expect("register");
    let data = pattern(11, 4 * ROUND);
    src.write_at(0, &data).expect("fill");

    // A read after the writes: served after them, on one connection as on any backend.
    let writes = post_round(a, &src, &target, 0);
    let dst = Region::allocate(ROUND).expect("allocate");
    let dd = a.register(&dst).expect("register");
    a.post(Op::Read {
        remote: target.slice(0, ROUND).expect("slice"),
        local: LocalSlice::whole(&dst),
    })
    .expect("post read")
    .wait()
    .expect("read");
    let mut got = vec![0u8; ROUND];
    dst.read_at(0, &mut got).expect("copy");
    assert!(
        got == data[..ROUND],
        "a read overtook the writes posted before it"
    );
    for w in writes.iter().rev() {
        w.wait_timeout(WAIT).expect("a write posted before a read");
    }

    // Waiting on the last write first.
    let writes = post_round(a, &src, &target, 1);
    let last = writes.last().expect("a write");
    last.wait_timeout(WAIT)
        .expect("the last of a stream of writes, waited on first");
    for w in &writes {
        w.wait_timeout(WAIT).expect("a write of the stream");
    }

    // A message after writes nobody waits for yet is not held up by them.
    let writes = post_round(a, &src, &target, 2);
    a.send(Rank(1), Tag(77), b"after the writes").expect("send");
    let m = b
        .recv(Some(Rank(0)), Some(Tag(77)), Some(WAIT))
        .expect("recv");
    assert_eq!(m.data, b"after the writes");
    for w in &writes {
        w.wait_timeout(WAIT)
            .expect("a write posted before a message");
    }

    // Dropped completions: the writes land anyway, with nobody waiting on this side.
    drop(post_round(a, &src, &target, 3));
    let want = &data[3 * ROUND..];
    let deadline = Instant::now() + LAND;
    let mut seen = vec![0u8; ROUND];
    loop {
        homes[1].read_at(3 * ROUND, &mut seen).expect("read home");
        if seen == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes whose completions were dropped did not land within {LAND:?}"
        );
        std::thread::yield_now();
    }

    let mut all = vec![0u8; 3 * ROUND];
    homes[1].read_at(0, &mut all).expect("read home");
    assert!(all == data[..3 * ROUND], "a posted write was lost");
    a.deregister(&dd).expect("deregister");
    a.deregister(&sd).expect("deregister");
    unexpose(job, &descs);
}

/// Reads posted one at a time while earlier ones are in flight (a window of MPI gets) each
/// bring their own bytes, and complete with nobody waiting on them (only polled), in time.
pub fn posted_reads_complete_unwaited<T: Transport>(job: &[T]) {
    let a = &job[0];
    let (homes, descs) = expose(job, ROUND);
    let data = pattern(23, ROUND);
    homes[1].write_at(0, &data).expect("fill the target");
    let dst = Region::allocate(ROUND).expect("allocate");
    let dd = a.register(&dst).expect("register");
    let reads: Vec<Completion> = (0..PIECES)
        .flat_map(|i| {
            let op = Op::Read {
                remote: descs[1].slice((i * PIECE) as u64, PIECE).expect("slice"),
                local: LocalSlice::new(&dst, (PIECES - 1 - i) * PIECE, PIECE).expect("local"),
            };
            a.post_batch(vec![op]).expect("post_batch")
        })
        .collect();
    let deadline = Instant::now() + LAND;
    while !reads.iter().all(Completion::is_done) {
        assert!(
            Instant::now() < deadline,
            "posted reads nobody waits on did not complete within {LAND:?}"
        );
        std::thread::yield_now();
    }
    for r in &reads {
        r.wait_timeout(WAIT).expect("a posted read");
    }
    let mut got = vec![0u8; ROUND];
    dst.read_at(0, &mut got).expect("copy");
    for i in 0..PIECES {
        let (at, from) = ((PIECES - 1 - i) * PIECE, i * PIECE);
        assert!(
            got[at..at + PIECE] == data[from..from + PIECE],
            "posted read {i} brought other bytes"
        );
    }
    a.deregister(&dd).expect("deregister");
    unexpose(job, &descs);
}
