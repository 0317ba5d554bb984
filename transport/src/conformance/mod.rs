//! The conformance suite: one set of checks, generic over the backend, that every backend must
//! pass. Each check takes a whole job (one transport per rank, all in this process) and drives
//! the ranks from scoped threads.
//!
//! ```
//! let job = transport::LoopbackTransport::job(3)?;
//! transport::conformance::run_all(&job);
//! # Ok::<(), transport::Error>(())
//! ```
//!
//! # Panics
//! Every function here panics, with a message saying what went wrong, when the backend breaks
//! the contract of [`Transport`]. That is its purpose.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::api::Transport;
use crate::completion::wait_all;
use crate::error::Error;
use crate::region::Region;
use crate::types::{LocalSlice, Op, Rank, RegionDesc, Tag};

mod diffs;
mod landing;
mod lending;
mod posted;
mod refusals;
pub use diffs::batched_diffs_land_in_order;
pub use landing::landed_messages_take_their_place;
pub use lending::{lent_messages_keep_order, lent_sends_arrive_whole};
pub use posted::{posted_reads_complete_unwaited, posted_writes_land_in_order};
pub use refusals::rejects_bad_access;

/// Runs every check.
pub fn run_all<T: Transport>(job: &[T]) {
    read_write_round_trips(job);
    many_in_flight(job);
    atomics_give_exact_totals(job);
    messages_keep_order_per_peer(job);
    rejects_bad_access(job);
    flush_makes_writes_visible(job);
    batched_operations_land_exactly(job);
    batched_diffs_land_in_order(job);
    waiting_for_a_message_takes_nothing(job);
    large_messages_arrive_whole(job);
    messages_in_parts_arrive_whole(job);
    lent_messages_keep_order(job);
    lent_sends_arrive_whole(job);
    landed_messages_take_their_place(job);
    posted_writes_land_in_order(job);
    posted_reads_complete_unwaited(job);
    reads_see_no_later_request(job);
    accumulates_land_exactly(job);
}

const BIG: usize = 4 << 20;

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(131) ^ (i >> 8)) as u8)
        .collect()
}

/// Registers a zeroed region of `len` bytes on every rank; returns the regions and descriptors.
fn expose<T: Transport>(job: &[T], len: usize) -> (Vec<Arc<Region>>, Vec<RegionDesc>) {
    let regions: Vec<Arc<Region>> = job
        .iter()
        .map(|_| Region::allocate(len).expect("allocate"))
        .collect();
    let descs = job
        .iter()
        .zip(&regions)
        .map(|(t, r)| t.register(r).expect("register"))
        .collect();
    (regions, descs)
}

fn unexpose<T: Transport>(job: &[T], descs: &[RegionDesc]) {
    for (t, d) in job.iter().zip(descs) {
        t.deregister(d).expect("deregister");
    }
}

/// Reads and writes from 1 byte to 4 MiB, at unaligned offsets, from every rank to the next.
pub fn read_write_round_trips<T: Transport>(job: &[T]) {
    let n = job.len();
    let (homes, descs) = expose(job, BIG + 64);
    let sizes = [1usize, 7, 8, 63, 4096, 4097, 65_536 + 3, 1 << 20, BIG];
    std::thread::scope(|s| {
        for (me, t) in job.iter().enumerate() {
            let descs = &descs;
            s.spawn(move || {
                let target = descs[(me + 1) % n];
                let src = Region::allocate(BIG + 64).expect("allocate");
                let dst = Region::allocate(BIG + 64).expect("allocate");
                let (sd, dd) = (
                    t.register(&src).expect("register"),
                    t.register(&dst).expect("register"),
                );
                for (i, &len) in sizes.iter().enumerate() {
                    let (loff, roff) = (i % 5, (i * 3) % 11 + 1);
                    let data = pattern(me * 100 + i, len);
                    src.write_at(loff, &data).expect("fill");
                    t.write(
                        target.slice(roff as u64, len).expect("slice"),
                        LocalSlice::new(&src, loff, len).expect("local"),
                    )
                    .unwrap_or_else(|e| panic!("rank {me}: write of {len} bytes failed: {e}"));
                    t.read(
                        target.slice(roff as u64, len).expect("slice"),
                        LocalSlice::new(&dst, loff + 1, len).expect("local"),
                    )
                    .unwrap_or_else(|e| panic!("rank {me}: read of {len} bytes failed: {e}"));
                    let mut back = vec![0u8; len];
                    dst.read_at(loff + 1, &mut back).expect("read back");
                    assert!(
                        back == data,
                        "rank {me}: {len}-byte round trip at offset {roff} corrupted data"
                    );
                }
                t.deregister(&sd).expect("deregister");
                t.deregister(&dd).expect("deregister");
            });
        }
    });
    // The last write of each rank is visible in the home's memory itself.
    for (me, home) in homes.iter().enumerate() {
        let writer = (me + n - 1) % n;
        let i = sizes.len() - 1;
        let mut got = vec![0u8; BIG];
        home.read_at((i * 3) % 11 + 1, &mut got).expect("read home");
        assert!(
            got == pattern(writer * 100 + i, BIG),
            "rank {me}: home memory does not hold rank {writer}'s write"
        );
    }
    unexpose(job, &descs);
}

/// 256 writes then 256 reads in flight at once from every rank to every rank.
pub fn many_in_flight<T: Transport>(job: &[T]) {
    const OPS: usize = 256;
    const LEN: usize = 1000;
    let n = job.len();
    let (_homes, descs) = expose(job, n * OPS * LEN);
    std::thread::scope(|s| {
        for (me, t) in job.iter().enumerate() {
            let descs = &descs;
            s.spawn(move || {
                let buf = Region::allocate(OPS * LEN).expect("allocate");
                let back = Region::allocate(OPS * LEN).expect("allocate");
                let (bd, kd) = (
                    t.register(&buf).expect("register"),
                    t.register(&back).expect("register"),
                );
                buf.write_at(0, &pattern(me, OPS * LEN)).expect("fill");
                for target in descs.iter() {
                    let base = (me * OPS * LEN) as u64;
                    let ops = (0..OPS).map(|i| Op::Write {
                        remote: target.slice(base + (i * LEN) as u64, LEN).expect("slice"),
                        local: LocalSlice::new(&buf, i * LEN, LEN).expect("local"),
                    });
                    let posted: Vec<_> = ops.map(|op| t.post(op).expect("post")).collect();
                    wait_all(&posted)
                        .unwrap_or_else(|e| panic!("rank {me}: batched writes failed: {e}"));
                    let posted: Vec<_> = (0..OPS)
                        .rev()
                        .map(|i| {
                            t.post(Op::Read {
                                remote: target.slice(base + (i * LEN) as u64, LEN).expect("slice"),
                                local: LocalSlice::new(&back, i * LEN, LEN).expect("local"),
                            })
                            .expect("post")
                        })
                        .collect();
                    wait_all(&posted)
                        .unwrap_or_else(|e| panic!("rank {me}: batched reads failed: {e}"));
                    let mut a = vec![0u8; OPS * LEN];
                    back.read_at(0, &mut a).expect("read");
                    assert!(
                        a == pattern(me, OPS * LEN),
                        "rank {me}: batched data to rank {} differs",
                        target.rank
                    );
                }
                t.deregister(&bd).expect("deregister");
                t.deregister(&kd).expect("deregister");
            });
        }
    });
    unexpose(job, &descs);
}

/// Every rank hammers two words on every rank with fetch-and-add and compare-and-swap; the
/// totals are exact and every fetch-and-add saw a distinct old value.
pub fn atomics_give_exact_totals<T: Transport>(job: &[T]) {
    const K: u64 = 300;
    let n = job.len() as u64;
    let (homes, descs) = expose(job, 64);
    let olds: Vec<Vec<u64>> = std::thread::scope(|s| {
        let handles: Vec<_> = job
            .iter()
            .enumerate()
            .map(|(me, t)| {
                let descs = &descs;
                s.spawn(move || {
                    let mut olds = Vec::new();
                    for _ in 0..K {
                        for d in descs.iter() {
                            olds.push(
                                t.fetch_add(d.word(8).expect("word"), 1)
                                    .unwrap_or_else(|e| panic!("rank {me}: fetch_add: {e}")),
                            );
                            let w = d.word(16).expect("word");
                            let mut cur = t.fetch_add(w, 0).expect("load");
                            loop {
                                let seen = t
                                    .compare_swap(w, cur, cur + 1)
                                    .unwrap_or_else(|e| panic!("rank {me}: cas: {e}"));
                                if seen == cur {
                                    break;
                                }
                                cur = seen;
                            }
                        }
                    }
                    olds
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    });
    for (r, home) in homes.iter().enumerate() {
        let add = home
            .atomic_u64(8)
            .expect("word")
            .load(std::sync::atomic::Ordering::SeqCst);
        let cas = home
            .atomic_u64(16)
            .expect("word")
            .load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(add, n * K, "fetch_add total on rank {r}");
        assert_eq!(cas, n * K, "compare_swap total on rank {r}");
    }
    let all: Vec<u64> = olds.into_iter().flatten().collect();
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(all.len() as u64, n * n * K);
    // Per home the old values are 0..n*K, each exactly once: n homes give n copies of each.
    assert_eq!(
        distinct.len() as u64,
        n * K,
        "fetch_add returned duplicate old values"
    );
    unexpose(job, &descs);
}

/// Messages from one sender arrive in order; tags select among them.
pub fn messages_keep_order_per_peer<T: Transport>(job: &[T]) {
    const M: u32 = 200;
    let n = job.len();
    std::thread::scope(|s| {
        for (me, t) in job.iter().enumerate() {
            s.spawn(move || {
                for peer in 0..n {
                    for i in 0..M {
                        let tag = Tag(u64::from(i % 2));
                        let mut data = (me as u32).to_le_bytes().to_vec();
                        data.extend_from_slice(&i.to_le_bytes());
                        data.resize(8 + (i as usize * 37) % 3000, i as u8);
                        t.send(Rank(peer as u32), tag, &data)
                            .unwrap_or_else(|e| panic!("rank {me}: send: {e}"));
                    }
                }
                for from in 0..n {
                    for tag in [Tag(1), Tag(0)] {
                        let mut expect = u32::try_from(tag.0).expect("tag");
                        while expect < M {
                            let m = t
                                .recv(
                                    Some(Rank(from as u32)),
                                    Some(tag),
                                    Some(Duration::from_secs(30)),
                                )
                                .unwrap_or_else(|e| panic!("rank {me}: recv from {from}: {e}"));
                            let seq =
                                u32::from_le_bytes([m.data[4], m.data[5], m.data[6], m.data[7]]);
                            assert_eq!(
                                (m.source, m.tag, seq),
                                (Rank(from as u32), tag, expect),
                                "rank {me}: order"
                            );
                            assert_eq!(m.data.len(), 8 + (seq as usize * 37) % 3000);
                            expect += 2;
                        }
                    }
                }
            });
        }
    });
}

/// [`Transport::wait_message`] returns once a matching message is there and leaves it for
/// [`Transport::try_recv`], which takes it without waiting; both ignore messages that do not
/// match.
pub fn waiting_for_a_message_takes_nothing<T: Transport>(job: &[T]) {
    let (a, b) = (&job[0], &job[1]);
    let long = Some(Duration::from_secs(30));
    b.send(a.rank(), Tag(8), b"other").expect("send");
    b.send(a.rank(), Tag(7), b"first").expect("send");
    b.send(a.rank(), Tag(7), b"second").expect("send");
    a.wait_message(Some(b.rank()), Some(Tag(7)), long)
        .expect("wait for the first message");
    a.wait_message(Some(b.rank()), Some(Tag(7)), long)
        .expect("the first message is still there");
    let first = a
        .try_recv(Some(b.rank()), Some(Tag(7)))
        .expect("a message is there")
        .expect("no error");
    assert_eq!(first.data, b"first");
    a.wait_message(None, Some(Tag(7)), long)
        .expect("wait for the second message");
    let second = a.recv(None, Some(Tag(7)), long).expect("second");
    assert_eq!((second.source, second.data), (b.rank(), b"second".to_vec()));
    assert!(a.try_recv(Some(b.rank()), Some(Tag(7))).is_none());
    assert!(matches!(
        a.wait_message(
            Some(b.rank()),
            Some(Tag(7)),
            Some(Duration::from_millis(20))
        ),
        Err(Error::Timeout(_))
    ));
    let other = a.recv(Some(b.rank()), Some(Tag(8)), long).expect("other");
    assert_eq!(other.data, b"other");
}

/// Large messages (read by tcp straight into their own buffers) arrive whole and in order
/// between small ones, sent by copy and by value.
pub fn large_messages_arrive_whole<T: Transport>(job: &[T]) {
    let (a, b) = (&job[0], &job[1]);
    let sizes = [100 << 10, 7, (1 << 20) + 3, 20 << 10, 0, 3 << 20];
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, &len) in sizes.iter().enumerate() {
                let data = pattern(i, len);
                if i % 2 == 0 {
                    b.send(a.rank(), Tag(9), &data).expect("send");
                } else {
                    let mut owned = crate::pool::buffer(len);
                    owned.extend_from_slice(&data);
                    b.send_owned(a.rank(), Tag(9), owned).expect("send_owned");
                }
            }
        });
        for (i, &len) in sizes.iter().enumerate() {
            let m = a
                .recv(Some(b.rank()), Some(Tag(9)), Some(Duration::from_secs(30)))
                .expect("recv");
            assert_eq!(m.data.len(), len, "message {i}: length");
            assert!(m.data == pattern(i, len), "message {i}: bytes");
        }
    });
}

/// Messages given in pieces ([`Transport::send_parts`]: tcp writes them from the caller's
/// memory, and copies what a full socket does not take) arrive whole and in order among
/// messages sent by copy, several large ones in a row.
pub fn messages_in_parts_arrive_whole<T: Transport>(job: &[T]) {
    let (a, b) = (&job[0], &job[1]);
    let sizes = [4 << 20, 5, 3 << 20, (1 << 20) + 1, 0, 4 << 20, 3 << 10];
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, &len) in sizes.iter().enumerate() {
                let data = pattern(i + 100, len);
                match i % 3 {
                    0 | 2 => {
                        let (head, tail) = data.split_at(len.min(4));
                        b.send_parts(a.rank(), Tag(10), &[head, &[], tail])
                            .expect("send_parts");
                    }
                    _ => b.send(a.rank(), Tag(10), &data).expect("send"),
                }
            }
        });
        for (i, &len) in sizes.iter().enumerate() {
            let m = a
                .recv(Some(b.rank()), Some(Tag(10)), Some(Duration::from_secs(30)))
                .expect("recv");
            assert_eq!(m.data.len(), len, "message {i}: length");
            assert!(m.data == pattern(i + 100, len), "message {i}: bytes");
        }
    });
}

/// After `flush`, every write posted before it is visible in the target's memory.
pub fn flush_makes_writes_visible<T: Transport>(job: &[T]) {
    let n = job.len();
    let (homes, descs) = expose(job, 64 * 1024);
    for (me, t) in job.iter().enumerate() {
        let target = descs[(me + 1) % n];
        let buf = Region::allocate(64 * 1024).expect("allocate");
        let bd = t.register(&buf).expect("register");
        let data = pattern(me + 7, 64 * 1024);
        buf.write_at(0, &data).expect("fill");
        for i in 0..16 {
            // Posted and dropped: only the flush waits.
            t.post(Op::Write {
                remote: target.slice(i * 4096, 4096).expect("slice"),
                local: LocalSlice::new(&buf, i as usize * 4096, 4096).expect("local"),
            })
            .expect("post");
        }
        t.flush(target.rank).expect("flush");
        let mut got = vec![0u8; 64 * 1024];
        homes[(me + 1) % n].read_at(0, &mut got).expect("read");
        assert!(got == data, "rank {me}: writes not visible after flush");
        t.deregister(&bd).expect("deregister");
    }
    unexpose(job, &descs);
}

/// `post_batch`, `write_runs` and `add_strided` (native or the trait's defaults) do exactly what
/// the single operations would: every rank to every rank, itself included.
pub fn batched_operations_land_exactly<T: Transport>(job: &[T]) {
    let n = job.len();
    let (homes, descs) = expose(job, n * 4096);
    for h in &homes {
        h.write_at(0, &vec![0xEE; n * 4096]).expect("fill");
    }
    let runs = [(0u32, 3u32), (100, 1), (4000, 96)];
    for (me, t) in job.iter().enumerate() {
        let src = Region::allocate(4096).expect("allocate");
        let sd = t.register(&src).expect("register");
        src.write_at(0, &pattern(me, 4096)).expect("fill");
        let mut done = Vec::new();
        for d in &descs {
            let remote = d.slice((me * 4096) as u64, 4096).expect("slice");
            done.extend(
                t.write_runs(remote, &LocalSlice::whole(&src), &runs)
                    .expect("write_runs"),
            );
            // Words 1, 5, 9 of this rank's page, and a plain batch of two adds to word 2.
            let first = d.word((me * 4096 + 8) as u64).expect("word");
            done.extend(t.add_strided(first, 32, 3, 1).expect("add_strided"));
            let w = d.word((me * 4096 + 16) as u64).expect("word");
            let ops = vec![
                Op::FetchAdd { remote: w, add: 2 },
                Op::FetchAdd { remote: w, add: 3 },
            ];
            done.extend(t.post_batch(ops).expect("post_batch"));
        }
        wait_all(&done).unwrap_or_else(|e| panic!("rank {me}: batched operations: {e}"));
        t.deregister(&sd).expect("deregister");
        let bad = t.add_strided(descs[0].word(8).expect("word"), 4, 2, 1);
        assert!(
            matches!(bad, Err(Error::InvalidArgument(_))),
            "a stride under 8 bytes is refused"
        );
    }
    for (r, h) in homes.iter().enumerate() {
        let mut got = vec![0u8; n * 4096];
        h.read_at(0, &mut got).expect("read");
        for me in 0..n {
            let page = &got[me * 4096..(me + 1) * 4096];
            let data = pattern(me, 4096);
            let word =
                |w: usize| u64::from_le_bytes(page[w * 8..w * 8 + 8].try_into().expect("8 bytes"));
            // Runs (0,3) and (100,1) are written exactly; the bytes around them are untouched.
            assert!(
                page[..3] == data[..3] && page[100] == data[100],
                "rank {r}: runs from rank {me}"
            );
            assert!(
                page[3..8].iter().all(|&b| b == 0xEE) && page[99] == 0xEE && page[101] == 0xEE,
                "rank {r}: bytes beside the runs"
            );
            assert!(
                page[4000..] == data[4000..],
                "rank {r}: last run from rank {me}"
            );
            for w in [1usize, 5, 9] {
                assert_eq!(
                    word(w),
                    u64::from_le_bytes([0xEE; 8]).wrapping_add(1),
                    "rank {r}: strided word {w} from rank {me}"
                );
            }
            assert_eq!(
                word(2),
                u64::from_le_bytes([0xEE; 8]).wrapping_add(5),
                "rank {r}: batch from rank {me}"
            );
        }
    }
    unexpose(job, &descs);
}

/// Requests on one connection are served in order: a read posted in one batch before a write
/// and an atomic to the same bytes returns the bytes as they were before them, and a read
/// posted after them sees both. Small and large (directly received) payloads.
pub fn reads_see_no_later_request<T: Transport>(job: &[T]) {
    const ROUNDS: usize = 100;
    let n = job.len();
    let sizes = [64usize, 64 * 1024];
    let slot = sizes[1];
    let (homes, descs) = expose(job, n * slot);
    for (me, t) in job.iter().enumerate() {
        let target = (me + 1) % n;
        let buf = Region::allocate(3 * slot).expect("allocate");
        let bd = t.register(&buf).expect("register");
        for &len in &sizes {
            let remote = descs[target].slice((me * slot) as u64, len).expect("slice");
            let word = descs[target].word((me * slot) as u64).expect("word");
            let mut now = pattern(me, len);
            homes[target].write_at(me * slot, &now).expect("fill");
            for round in 1..=ROUNDS {
                let new = pattern(me + 17 * round, len);
                buf.write_at(slot, &new).expect("fill");
                let ops = vec![
                    Op::Read {
                        remote,
                        local: LocalSlice::new(&buf, 0, len).expect("local"),
                    },
                    Op::Write {
                        remote,
                        local: LocalSlice::new(&buf, slot, len).expect("local"),
                    },
                    Op::FetchAdd {
                        remote: word,
                        add: 1,
                    },
                    Op::Read {
                        remote,
                        local: LocalSlice::new(&buf, 2 * slot, len).expect("local"),
                    },
                ];
                let done = t.post_batch(ops).expect("post_batch");
                wait_all(&done).unwrap_or_else(|e| panic!("rank {me}: batch failed: {e}"));
                let mut before = vec![0u8; len];
                buf.read_at(0, &mut before).expect("read back");
                assert!(
                    before == now,
                    "rank {me}: round {round}: a {len}-byte read returned data written by a later request of its batch"
                );
                now = new;
                let first = u64::from_le_bytes(now[..8].try_into().expect("8 bytes"));
                now[..8].copy_from_slice(&first.wrapping_add(1).to_le_bytes());
                let mut after = vec![0u8; len];
                buf.read_at(2 * slot, &mut after).expect("read back");
                assert!(
                    after == now,
                    "rank {me}: round {round}: a {len}-byte read missed the write and add posted before it"
                );
            }
        }
        t.deregister(&bd).expect("deregister");
    }
    unexpose(job, &descs);
}

/// Where the backend reduces at the target ([`crate::Capabilities::remote_reduce`]): every rank
/// adds 1 to each of 512 `u64`s on every rank, `K` times (every other time fetching the old
/// elements), while also fetch-and-adding the first word; the totals are exact, so reductions
/// and remote atomics never lose each other's updates. Elsewhere `accumulate` says
/// `Unsupported`.
pub fn accumulates_land_exactly<T: Transport>(job: &[T]) {
    use crate::reduce::{Elem, ReduceOp, Reduction};
    const K: u64 = 40;
    const WORDS: usize = 512;
    let n = job.len() as u64;
    let sum = Reduction::new(Elem::U64, ReduceOp::Sum).expect("a valid reduction");
    let (homes, descs) = expose(job, WORDS * 8);
    let ones: Vec<u8> = (0..WORDS).flat_map(|_| 1u64.to_le_bytes()).collect();
    if !job[0].capabilities().remote_reduce {
        let src = Region::allocate(WORDS * 8).expect("allocate");
        let sd = job[0].register(&src).expect("register");
        let local = LocalSlice::new(&src, 0, WORDS * 8).expect("local slice");
        let remote = descs[0].slice(0, WORDS * 8).expect("remote slice");
        let got = job[0].accumulate(remote, &local, sum, None);
        assert!(matches!(got, Err(Error::Unsupported(_))), "{got:?}");
        job[0].deregister(&sd).expect("deregister");
        unexpose(job, &descs);
        return;
    }
    std::thread::scope(|s| {
        for (me, t) in job.iter().enumerate() {
            let (descs, ones) = (&descs, &ones);
            s.spawn(move || {
                let src = Region::allocate(WORDS * 8).expect("allocate");
                let res = Region::allocate(WORDS * 8).expect("allocate");
                let (sd, rd) = (
                    t.register(&src).expect("register"),
                    t.register(&res).expect("register"),
                );
                src.write_at(0, ones).expect("fill");
                let local = LocalSlice::new(&src, 0, WORDS * 8).expect("local slice");
                for k in 0..K {
                    for d in descs.iter() {
                        let remote = d.slice(0, WORDS * 8).expect("remote slice");
                        let fetch = (k % 2 == 1)
                            .then(|| LocalSlice::new(&res, 0, WORDS * 8).expect("result slice"));
                        t.accumulate(remote, &local, sum, fetch)
                            .and_then(|c| c.wait())
                            .unwrap_or_else(|e| panic!("rank {me}: accumulate: {e}"));
                        t.fetch_add(d.word(0).expect("word"), 1)
                            .unwrap_or_else(|e| panic!("rank {me}: fetch_add: {e}"));
                    }
                    if k % 2 == 1 {
                        // The last element fetched is one this rank's own earlier sums raised.
                        let mut last = [0u8; 8];
                        res.read_at((WORDS - 1) * 8, &mut last).expect("read");
                        assert!(u64::from_le_bytes(last) >= k, "rank {me}: stale old value");
                    }
                }
                t.deregister(&sd).expect("deregister");
                t.deregister(&rd).expect("deregister");
            });
        }
    });
    for (r, home) in homes.iter().enumerate() {
        let mut all = vec![0u8; WORDS * 8];
        home.read_at(0, &mut all).expect("read");
        for (w, v) in all.chunks_exact(8).enumerate() {
            let v = u64::from_le_bytes(v.try_into().expect("8 bytes"));
            let want = n * K + if w == 0 { n * K } else { 0 };
            assert_eq!(v, want, "word {w} on rank {r}");
        }
    }
    unexpose(job, &descs);
}
