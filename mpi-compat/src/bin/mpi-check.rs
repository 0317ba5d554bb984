//! Checks of the MPI-style API on a real job: run as `dsmrun -n N mpi-check <part>...`, where
//! each part is `p2p`, `nonblocking`, `threads`, `collectives`, `rma`, `pscw`, `created`,
//! `raw`, `errors` or `split`; or as `dsmrun -n 3 mpi-check lost` with
//! `DSM_ON_PEER_LOST=error` (a rank leaves the job; see [`lost`]).
//! Every check compares with the value it must have; the first mismatch exits non-zero.

use std::process::ExitCode;

use mpi_compat::{
    test_any, wait_all, wait_any, Communicator, Error, ErrorClass, Group, LockType, Op, Request,
    RequestFailed, Status, Window, ANY_SOURCE, ANY_TAG, MODE_NOCHECK, MODE_NOPRECEDE,
    MODE_NOSUCCEED, PROC_NULL,
};

type Check = Result<(), String>;

/// [`ok`] for [`wait_any`] and [`test_any`].
#[track_caller]
fn ok_any<T>(r: Result<T, RequestFailed>) -> Result<T, String> {
    let at = std::panic::Location::caller();
    r.map_err(|e| format!("{at}: unexpected error: {e}"))
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)*) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($fmt)*)));
        }
    };
}

/// The value, or a message naming the caller's line and the error.
#[track_caller]
fn ok<T>(r: mpi_compat::Result<T>) -> Result<T, String> {
    let at = std::panic::Location::caller();
    r.map_err(|e| format!("{at}: unexpected error: {e}"))
}

/// Receives from several threads at once: a thread blocked in a receive must not hold up
/// another thread's receive and send. Rank 0's first thread waits for a message that rank 1
/// sends only after rank 0's second thread has received its own message and answered it, so
/// a receive that blocked the others would never finish (the job's timeout would end it).
fn threads(w: &Communicator) -> Check {
    const ROUNDS: u32 = 50;
    let me = w.rank();
    if w.size() < 2 || me > 1 {
        return Ok(());
    }
    for round in 0..ROUNDS {
        let tag = |t: i32| t + 10 * round as i32;
        if me == 0 {
            let (first, second) = std::thread::scope(|s| {
                let first = s.spawn(|| -> Result<u32, String> {
                    let mut x = [0u32];
                    ok(w.recv(&mut x, 1, tag(1)))?;
                    Ok(x[0])
                });
                let second = s.spawn(|| -> Result<u32, String> {
                    let mut x = [0u32];
                    ok(w.recv(&mut x, 1, tag(2)))?;
                    ok(w.send(&[x[0] + 1], 1, tag(3)))?;
                    Ok(x[0])
                });
                (
                    first
                        .join()
                        .map_err(|_| "first thread panicked".to_string()),
                    second
                        .join()
                        .map_err(|_| "second thread panicked".to_string()),
                )
            });
            let (first, second) = (first??, second??);
            ensure!(
                second == round && first == round + 2,
                "round {round}: {first} {second}"
            );
        } else {
            ok(w.send(&[round], 0, tag(2)))?;
            let mut x = [0u32];
            ok(w.recv(&mut x, 0, tag(3)))?;
            ensure!(x[0] == round + 1, "round {round}: answer {}", x[0]);
            ok(w.send(&[round + 2], 0, tag(1)))?;
        }
    }
    Ok(())
}

fn p2p(w: &Communicator) -> Check {
    let (me, n) = (w.rank(), w.size());
    // A ring with a tag per round; sizes from 0 to 1 MiB.
    for (round, len) in [0usize, 1, 7, 4096, 65536, 1 << 20].into_iter().enumerate() {
        let to = (me + 1) % n;
        let from = (me + n - 1) % n;
        let data: Vec<u8> = (0..len)
            .map(|i| (i + me as usize * 3 + round) as u8)
            .collect();
        let mut got = vec![0u8; len];
        let st = ok(w.sendrecv(&data, to, round as i32, &mut got, from, round as i32))?;
        ensure!(
            st.source == from && st.tag == round as i32 && st.bytes == len,
            "{st:?}"
        );
        let want: Vec<u8> = (0..len)
            .map(|i| (i + from as usize * 3 + round) as u8)
            .collect();
        ensure!(got == want, "ring round {round}: wrong bytes");
    }
    // Any source, any tag: rank 0 hears from everybody, in any order.
    if me == 0 {
        let mut seen = vec![false; n as usize];
        for _ in 1..n {
            let mut x = [0i64; 2];
            let st = ok(w.recv(&mut x, ANY_SOURCE, ANY_TAG))?;
            ensure!(
                x == [i64::from(st.source), 100 + i64::from(st.source)],
                "{x:?} {st:?}"
            );
            ensure!(st.tag == 40 + st.source, "tag {st:?}");
            ensure!(
                st.count::<i64>() == Some(2) && st.count::<f32>() == Some(4),
                "count"
            );
            seen[st.source as usize] = true;
        }
        ensure!(seen[1..].iter().all(|&s| s), "missing senders {seen:?}");
    } else {
        ok(w.send(&[i64::from(me), 100 + i64::from(me)], 0, 40 + me))?;
    }
    // Tags select, and messages of one sender and tag keep their order.
    if me == 0 && n > 1 {
        for i in 0..5u32 {
            ok(w.send(&[i], 1, 1))?;
        }
        ok(w.send(&[99u32], 1, 2))?;
    } else if me == 1 {
        let mut x = [0u32];
        ok(w.recv(&mut x, 0, 2))?;
        ensure!(x == [99], "tag 2 first: {x:?}");
        for i in 0..5u32 {
            ok(w.recv(&mut x, 0, ANY_TAG))?;
            ensure!(x == [i], "order: {x:?} != {i}");
        }
    }
    // A shorter message fills the start of the buffer.
    if me == 0 && n > 1 {
        ok(w.send(&[1.5f64], 1, 3))?;
    } else if me == 1 {
        let mut x = [0.0f64; 4];
        let st = ok(w.recv(&mut x, 0, 3))?;
        ensure!(st.bytes == 8 && x[0] == 1.5 && x[1] == 0.0, "{st:?} {x:?}");
    }
    // MPI_PROC_NULL: sends and receives complete at once and move nothing.
    let mut x = [7u32];
    ok(w.send(&[1u32], PROC_NULL, 0))?;
    let st = ok(w.recv(&mut x, PROC_NULL, ANY_TAG))?;
    ensure!(
        st == Status::proc_null() && st.source == PROC_NULL && st.tag == -1 && st.bytes == 0,
        "{st:?}"
    );
    ensure!(x == [7], "a receive from PROC_NULL wrote {x:?}");
    let r = ok(w.irecv(&mut x, PROC_NULL, 3))?;
    ensure!(r.is_complete(), "irecv from PROC_NULL not complete at once");
    ensure!(ok(r.wait())? == Status::proc_null(), "irecv status");
    ok(ok(w.isend(&[1u32], PROC_NULL, 3))?.wait())?;
    ensure!(
        w.send(&[1u8], PROC_NULL, -3).err().map(|e| e.class()) == Some(ErrorClass::Tag),
        "a bad tag to PROC_NULL"
    );
    // A shift without wrap-around: the ends talk to PROC_NULL.
    let up = if me + 1 < n { me + 1 } else { PROC_NULL };
    let down = if me > 0 { me - 1 } else { PROC_NULL };
    let mut got = [-5i32];
    let st = ok(w.sendrecv(&[me], up, 12, &mut got, down, 12))?;
    ensure!(
        if me == 0 {
            got == [-5] && st.source == PROC_NULL
        } else {
            got == [me - 1] && st.source == me - 1 && st.tag == 12
        },
        "shift: {got:?} {st:?}"
    );
    // A dup'ed communicator has its own message space.
    let d = ok(w.dup())?;
    if me == 0 && n > 1 {
        ok(d.send(&[1u8], 1, 5))?;
        ok(w.send(&[2u8], 1, 5))?;
    } else if me == 1 {
        let mut x = [0u8];
        ok(w.recv(&mut x, 0, 5))?;
        ensure!(x == [2], "world got the dup's message");
        ok(d.recv(&mut x, 0, 5))?;
        ensure!(x == [1], "dup got {x:?}");
    }
    ok(w.barrier())
}

fn nonblocking(w: &Communicator) -> Check {
    let (me, n) = (w.rank(), w.size());
    // Every rank posts receives from every other, then sends, then waits for all.
    let mut bufs: Vec<[u64; 3]> = vec![[0; 3]; n as usize];
    let sends: Vec<[u64; 3]> = (0..n).map(|to| [me as u64, to as u64, 7]).collect();
    {
        let mut reqs = Vec::new();
        for (from, b) in bufs.iter_mut().enumerate() {
            if from as i32 != me {
                reqs.push(ok(w.irecv(b, from as i32, 9))?);
            }
        }
        for to in 0..n {
            if to != me {
                reqs.push(ok(w.isend(&sends[to as usize], to, 9))?);
            }
        }
        let st = ok(wait_all(&mut reqs))?;
        ensure!(st.len() == 2 * (n as usize - 1), "statuses {}", st.len());
    }
    for (from, b) in bufs.iter().enumerate() {
        if from as i32 != me {
            ensure!(*b == [from as u64, me as u64, 7], "from {from}: {b:?}");
        }
    }
    // Receives posted earlier match earlier, whatever order they are waited in.
    if me == 0 && n > 1 {
        ok(w.send(&[1i32], 1, 4))?;
        ok(w.send(&[2i32], 1, 4))?;
    } else if me == 1 {
        let (mut a, mut b) = ([0i32], [0i32]);
        let ra = ok(w.irecv(&mut a, 0, 4))?;
        let rb = ok(w.irecv(&mut b, ANY_SOURCE, ANY_TAG))?;
        ok(rb.wait())?;
        ok(ra.wait())?;
        ensure!(a == [1] && b == [2], "posting order: {a:?} {b:?}");
    }
    // test() eventually completes; a dropped request cancels its receive.
    if me == 0 && n > 1 {
        ok(w.recv(&mut [0u8], 1, 6))?;
        ok(w.send(&[42u16], 1, 8))?;
    } else if me == 1 {
        let mut dropped = [0u16];
        drop(ok(w.irecv(&mut dropped, 0, 8))?);
        let mut x = [0u16];
        let mut r = ok(w.irecv(&mut x, 0, 8))?;
        ensure!(ok(r.test())?.is_none(), "test completed before the send");
        ok(w.send(&[0u8], 0, 6))?;
        let st = loop {
            if let Some(st) = ok(r.test())? {
                break st;
            }
        };
        ensure!(st.source == 0 && st.tag == 8, "{st:?}");
        drop(r);
        ensure!(x == [42] && dropped == [0], "{x:?} {dropped:?}");
    }
    // wait_any: rank 0 takes one message from every other rank, in the order they complete.
    if me == 0 {
        let mut bufs = vec![[0i32]; n as usize - 1];
        let mut reqs = Vec::new();
        for (i, b) in bufs.iter_mut().enumerate() {
            reqs.push(ok(w.irecv(b, i as i32 + 1, 13))?);
        }
        let mut from = Vec::new();
        while let Some((i, st)) = ok_any(wait_any(&mut reqs))? {
            ensure!(i <= reqs.len() && st.tag == 13, "wait_any gave {i} {st:?}");
            from.push(st.source);
        }
        drop(reqs);
        from.sort_unstable();
        ensure!(
            from == (1..n).collect::<Vec<_>>(),
            "wait_any sources {from:?}"
        );
        ensure!(
            bufs.iter()
                .enumerate()
                .all(|(i, b)| b[0] == (i as i32 + 1) * 3),
            "wait_any data {bufs:?}"
        );
    } else {
        ok(w.send(&[me * 3], 0, 13))?;
    }
    // test_any: nothing until the message is sent; the index is the request's position.
    if me == 0 && n > 1 {
        ok(w.recv(&mut [0u8], 1, 15))?;
        ok(w.send(&[16u8], 1, 16))?;
    } else if me == 1 {
        let (mut a, mut b) = ([0u8], [9u8]);
        let mut reqs: Vec<Request<'_>> = vec![ok(w.irecv(&mut a, 0, 16))?];
        ensure!(
            ok_any(test_any(&mut reqs))?.is_none(),
            "test_any before the send"
        );
        reqs.push(ok(w.irecv(&mut b, PROC_NULL, 16))?);
        let got = ok_any(test_any(&mut reqs))?;
        ensure!(
            got == Some((1, Status::proc_null())) && reqs.len() == 1,
            "test_any with a PROC_NULL receive: {got:?}"
        );
        ok(w.send(&[0u8], 0, 15))?;
        let st = loop {
            if let Some((i, st)) = ok_any(test_any(&mut reqs))? {
                ensure!(i == 0, "test_any index {i}");
                break st;
            }
        };
        ensure!(st.source == 0 && st.tag == 16 && reqs.is_empty(), "{st:?}");
        ensure!(
            ok_any(wait_any(&mut reqs))?.is_none(),
            "wait_any of nothing"
        );
        drop(reqs);
        ensure!(a == [16] && b == [9], "test_any data {a:?} {b:?}");
    }
    // wait_any blocks instead of spinning: rank 0 waits for one message from every other rank;
    // the last sends only some time after rank 0 has started waiting, the others (and the last
    // a second message, so that two requests are open even on two ranks) only after that
    // message. Over that time, rank 0's thread must have been mostly off the CPU.
    if me == 0 && n > 1 {
        let mut bufs = vec![[0i32]; n as usize - 1];
        let mut extra = [0i32];
        let mut reqs = Vec::new();
        for (i, b) in bufs.iter_mut().enumerate() {
            reqs.push(ok(w.irecv(b, i as i32 + 1, 31))?);
        }
        reqs.push(ok(w.irecv(&mut extra, n - 1, 37))?);
        ok(w.send(&[0u8], n - 1, 32))?;
        let (cpu, start) = (thread_cpu()?, std::time::Instant::now());
        let got = ok_any(wait_any(&mut reqs))?;
        let (cpu, wall) = (thread_cpu()? - cpu, start.elapsed());
        ensure!(
            matches!(got, Some((i, st)) if i == n as usize - 2 && st.source == n - 1),
            "wait_any for the last rank: {got:?}"
        );
        ensure!(
            cpu < wall / 4,
            "wait_any used {cpu:?} of CPU while it waited {wall:?}"
        );
        for to in 1..n {
            ok(w.send(&[0u8], to, 32))?;
        }
        while ok_any(wait_any(&mut reqs))?.is_some() {}
        drop(reqs);
        ensure!(
            bufs.iter().enumerate().all(|(i, b)| b[0] == i as i32 + 1) && extra == [n - 1],
            "wait_any data {bufs:?} {extra:?}"
        );
    } else if me > 0 {
        ok(w.recv(&mut [0u8], 0, 32))?;
        if me == n - 1 {
            // A delay (nothing depends on its length: a shorter one only measures less).
            let (_keep, delay) = std::sync::mpsc::channel::<()>();
            let _ = delay.recv_timeout(std::time::Duration::from_millis(300));
            ok(w.send(&[me], 0, 31))?;
            ok(w.recv(&mut [0u8], 0, 32))?;
            ok(w.send(&[me], 0, 37))?;
        } else {
            ok(w.send(&[me], 0, 31))?;
        }
    }
    // A request that fails in wait_any is named by its index (and removed).
    if me == 0 && n > 1 {
        let (mut a, mut short) = ([0u32], [0u8]);
        let mut reqs = vec![ok(w.irecv(&mut a, 1, 34))?, ok(w.irecv(&mut short, 1, 35))?];
        let got = wait_any(&mut reqs);
        ensure!(
            matches!(
                &got,
                Err(RequestFailed {
                    index: 1,
                    error: Error::Truncate { .. }
                })
            ) && reqs.len() == 1,
            "wait_any with a truncated message: {got:?}"
        );
        ok(w.send(&[0u8], 1, 36))?;
        let got = ok_any(wait_any(&mut reqs))?;
        ensure!(
            matches!(got, Some((0, st)) if st.tag == 34) && reqs.is_empty(),
            "wait_any after the failed one: {got:?}"
        );
        drop(reqs);
        ensure!(a == [34], "{a:?}");
    } else if me == 1 {
        ok(w.send(&[35u32], 0, 35))?;
        ok(w.recv(&mut [0u8], 0, 36))?;
        ok(w.send(&[34u32], 0, 34))?;
    }
    // A receive that a message already matched cannot be cancelled (MPI-3.1 §3.8.4): dropping
    // it completes it and discards its message. `a` (tag 5) holds the first message, `b` (any
    // tag) the second; once `a` is dropped, the next receive gets the third message: the first
    // coming back after the second was received would break non-overtaking (§3.5).
    if me == 0 && n > 1 {
        for tag in [5, 6, 7] {
            ok(w.send(&[tag], 1, tag))?;
        }
    } else if me == 1 {
        let (mut a, mut b, mut c) = ([0i32], [0i32], [0i32]);
        let ra = ok(w.irecv(&mut a, 0, 5))?;
        let rb = ok(w.irecv(&mut b, 0, ANY_TAG))?;
        // The second message has arrived, so the first has too (one sender keeps its order).
        let st = ok(rb.wait())?;
        ensure!(st.tag == 6 && b == [6], "the second message: {st:?} {b:?}");
        drop(ra);
        let st = ok(w.recv(&mut c, 0, ANY_TAG))?;
        ensure!(
            st.tag == 7 && c == [7],
            "after the failed cancel: {st:?} {c:?}"
        );
        ensure!(a == [0], "the dropped receive's buffer was written: {a:?}");
    }
    ok(w.barrier())
}

/// CPU time of the calling thread so far (Linux: `/proc/thread-self/schedstat`).
fn thread_cpu() -> Result<std::time::Duration, String> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat")
        .map_err(|e| format!("/proc/thread-self/schedstat: {e}"))?;
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("/proc/thread-self/schedstat: {stat:?}"))?;
    Ok(std::time::Duration::from_nanos(ns))
}

/// `split`: sub-communicators with their own ranks for point-to-point and collectives.
fn split(w: &Communicator) -> Check {
    let (me, n) = (w.rank(), w.size());
    // Even and odd ranks, each ordered by descending world rank; the last rank opts out when
    // there are more than two.
    let out = n > 2 && me == n - 1;
    let sub = ok(w.split(if out { None } else { Some(me % 2) }, -me))?;
    if out {
        ensure!(sub.is_none(), "MPI_UNDEFINED gave a communicator");
    } else {
        let sub = sub.ok_or("no communicator for a color")?;
        let members: Vec<i32> = (0..n)
            .filter(|&r| r % 2 == me % 2 && !(n > 2 && r == n - 1))
            .rev()
            .collect();
        let (sr, ss) = (sub.rank(), sub.size());
        ensure!(
            ss as usize == members.len() && members[sr as usize] == me,
            "rank {sr} of {ss}, members {members:?}"
        );
        // A ring in the sub-communicator: ranks and statuses are its own.
        let (next, prev) = ((sr + 1) % ss, (sr + ss - 1) % ss);
        let mut got = [-1i32];
        let st = ok(sub.sendrecv(&[me], next, 1, &mut got, prev, 1))?;
        ensure!(
            got == [members[prev as usize]] && st.source == prev,
            "ring: {got:?} {st:?}"
        );
        if sr == 0 {
            for _ in 1..ss {
                let mut x = [0i32];
                let st = ok(sub.recv(&mut x, ANY_SOURCE, 2))?;
                ensure!(
                    x == [members[st.source as usize]],
                    "any source: {x:?} {st:?}"
                );
            }
        } else {
            ok(sub.send(&[me], 0, 2))?;
        }
        let mut sum = [0i32];
        ok(sub.all_reduce(&[me], &mut sum, Op::Sum))?;
        ensure!(sum == [members.iter().sum::<i32>()], "all_reduce {sum:?}");
        let mut b = [if sr == ss - 1 { me } else { -1 }];
        ok(sub.broadcast(&mut b, ss - 1))?;
        ensure!(b == [members[ss as usize - 1]], "broadcast {b:?}");
        let mut all = vec![0i32; ss as usize];
        ok(sub.all_gather(&[me], &mut all))?;
        ensure!(all == members, "all_gather {all:?}");
        let d = ok(sub.dup())?;
        ensure!(
            d.rank() == sr && d.size() == ss,
            "dup of a split communicator"
        );
        ok(d.barrier())?;
        if ss < n {
            ensure!(
                Window::allocate(&sub, 64, 8).err().map(|e| e.class()) == Some(ErrorClass::Comm),
                "a window over a split communicator"
            );
        }
    }
    // One color, ranks in order: the whole job again (windows work on it).
    let same = ok(w.split(Some(7), 0))?.ok_or("no communicator for color 7")?;
    ensure!(same.rank() == me && same.size() == n, "split of one color");
    let win = ok(Window::allocate(&same, 64, 8))?;
    ok(win.free())?;
    // A negative color is this rank's error; the others go on without it.
    let r = w.split(Some(if me == 0 { -4 } else { 0 }), 0);
    if me == 0 {
        ensure!(
            r.as_ref().err().map(|e| e.class()) == Some(ErrorClass::Arg),
            "negative color: {r:?}"
        );
    } else {
        let c = ok(r)?.ok_or("no communicator")?;
        ensure!(c.size() == n - 1 && c.rank() == me - 1, "without rank 0");
        ok(c.barrier())?;
    }
    // The world's messages are not the sub-communicators'.
    let mut total = [0i32];
    ok(w.all_reduce(&[1], &mut total, Op::Sum))?;
    ensure!(total == [n], "world all_reduce after split {total:?}");
    ok(w.barrier())
}

fn collectives(w: &Communicator) -> Check {
    let (me, n) = (w.rank(), w.size());
    let nu = n as usize;
    ok(w.barrier())?;
    for root in 0..n {
        let mut b = if me == root {
            [root * 11, 5, -1]
        } else {
            [0; 3]
        };
        ok(w.broadcast(&mut b, root))?;
        ensure!(b == [root * 11, 5, -1], "bcast from {root}: {b:?}");
        let mut big = vec![0u8; 100_000];
        if me == root {
            big.iter_mut()
                .enumerate()
                .for_each(|(i, x)| *x = (i % 251) as u8);
        }
        ok(w.broadcast(&mut big, root))?;
        ensure!(
            big.iter().enumerate().all(|(i, &x)| x == (i % 251) as u8),
            "big bcast"
        );
    }
    // Every operation on every type, against a sequential computation.
    fn check_all<T: mpi_compat::Equivalence + std::fmt::Debug>(
        w: &Communicator,
        val: impl Fn(i32, usize) -> T,
    ) -> Check {
        let (me, n) = (w.rank(), w.size());
        for op in [
            Op::Sum,
            Op::Prod,
            Op::Min,
            Op::Max,
            Op::BAnd,
            Op::BOr,
            Op::BXor,
        ] {
            let mine: Vec<T> = (0..4).map(|i| val(me, i)).collect();
            let mut want = (0..4).map(|i| val(0, i)).collect::<Vec<T>>();
            let mut out = vec![T::zeroed(); 4];
            let r = w.all_reduce(&mine, &mut out, op);
            if !T::INTEGER && matches!(op, Op::BAnd | Op::BOr | Op::BXor) {
                ensure!(
                    matches!(&r, Err(e) if e.class() == ErrorClass::Op),
                    "{op:?} on float"
                );
                continue;
            }
            ok(r)?;
            for r in 1..n {
                let other: Vec<T> = (0..4).map(|i| val(r, i)).collect();
                ok(T::reduce(op, &mut want, &other))?;
            }
            ensure!(
                out == want,
                "all_reduce {op:?} {}: {out:?} != {want:?}",
                T::NAME
            );
            for root in [0, n - 1] {
                let mut at_root = vec![T::zeroed(); 4];
                ok(w.reduce(&mine, &mut at_root, op, root))?;
                if me == root {
                    ensure!(at_root == want, "reduce {op:?} {}: {at_root:?}", T::NAME);
                }
            }
        }
        Ok(())
    }
    check_all::<i32>(w, |r, i| r * 7 - 3 + i as i32)?;
    check_all::<i64>(w, |r, i| i64::from(r) * 1_000_000_007 - i as i64)?;
    check_all::<u32>(w, |r, i| (r as u32 + 1) * 0x1111 + i as u32)?;
    check_all::<u64>(w, |r, i| (r as u64 + 3) << (i * 8))?;
    check_all::<u8>(w, |r, i| (r as u8).wrapping_mul(37) ^ i as u8)?;
    check_all::<f32>(w, |r, i| r as f32 * 0.5 + i as f32)?;
    check_all::<f64>(w, |r, i| f64::from(r) * 1.25 - i as f64)?;
    // Gather, scatter, all-gather, all-to-all.
    let root = n - 1;
    let mine = [me, me * me];
    let mut all = vec![0i32; if me == root { 2 * nu } else { 0 }];
    ok(w.gather(&mine, &mut all, root))?;
    if me == root {
        let want: Vec<i32> = (0..n).flat_map(|r| [r, r * r]).collect();
        ensure!(all == want, "gather {all:?}");
    }
    let mut everyone = vec![0i32; 2 * nu];
    ok(w.all_gather(&mine, &mut everyone))?;
    ensure!(
        everyone == (0..n).flat_map(|r| [r, r * r]).collect::<Vec<_>>(),
        "all_gather"
    );
    let src: Vec<f64> = (0..2 * nu).map(|i| i as f64 * 0.5).collect();
    let mut part = [0.0f64; 2];
    ok(w.scatter(if me == 0 { &src } else { &[] }, &mut part, 0))?;
    ensure!(part == [me as f64, me as f64 + 0.5], "scatter {part:?}");
    let send: Vec<u32> = (0..nu * 3).map(|i| me as u32 * 1000 + i as u32).collect();
    let mut recv = vec![0u32; nu * 3];
    ok(w.all_to_all(&send, &mut recv))?;
    for r in 0..nu {
        for k in 0..3 {
            let want = r as u32 * 1000 + (me as usize * 3 + k) as u32;
            ensure!(
                recv[r * 3 + k] == want,
                "all_to_all from {r}: {:?}",
                &recv[r * 3..]
            );
        }
    }
    Ok(())
}

fn rma_ops(win: &Window, w: &Communicator, sync: &dyn Fn(&Window, i32, bool) -> Check) -> Check {
    let (me, n) = (w.rank(), w.size());
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    // Put into the right neighbour; the neighbour sees it locally after the epoch.
    sync(win, right, true)?;
    let data: Vec<u64> = (0..64).map(|i| u64::from(me as u32) << 32 | i).collect();
    ok(win.put(&data, right, 8))?;
    sync(win, right, false)?;
    let mut local = vec![0u64; 64];
    ok(win.read_local(8, &mut local))?;
    let want: Vec<u64> = (0..64).map(|i| u64::from(left as u32) << 32 | i).collect();
    ensure!(local == want, "put from {left} not seen locally");
    // Get what the left neighbour's left put there.
    sync(win, left, true)?;
    let mut got = vec![0u64; 64];
    ok(win.get(&mut got, left, 8))?;
    sync(win, left, false)?;
    let ll = (left + n - 1) % n;
    ensure!(
        got == (0..64)
            .map(|i| u64::from(ll as u32) << 32 | i)
            .collect::<Vec<_>>(),
        "get"
    );
    // Accumulate into rank 0 from everyone: u64 sum (fetch-and-add), f64 sum, i32 max,
    // bytes xor (compare-and-swap).
    sync(win, 0, true)?;
    ok(win.accumulate(&[1u64, 2], 0, 0, Op::Sum))?;
    ok(win.accumulate(&[0.5f64], 0, 2, Op::Sum))?;
    ok(win.accumulate(&[me * 10, -me], 0, 6, Op::Max))?;
    ok(win.accumulate(&[1u8 << (me % 8), 0xff], 0, 80, Op::BXor))?;
    sync(win, 0, false)?;
    if me == 0 {
        let mut s = [0u64; 2];
        ok(win.read_local(0, &mut s))?;
        let mut f = [0.0f64];
        ok(win.read_local(2, &mut f))?;
        let mut m = [0i32; 2];
        ok(win.read_local(6, &mut m))?;
        let mut b = [0u8; 2];
        ok(win.read_local(80, &mut b))?;
        ensure!(s == [n as u64, 2 * n as u64], "u64 sum {s:?}");
        ensure!(f == [0.5 * f64::from(n)], "f64 sum {f:?}");
        ensure!(m == [(n - 1) * 10, 0], "i32 max {m:?}");
        let x = (0..n).fold(0u8, |a, r| a ^ (1u8 << (r % 8)));
        ensure!(b == [x, if n % 2 == 1 { 0xff } else { 0 }], "xor {b:?}");
    }
    // Fetch-and-op and compare-and-swap: everybody increments rank 0's counter, and one
    // rank wins the swap.
    sync(win, 0, true)?;
    let old = ok(win.fetch_and_op(1i64, 0, 100, Op::Sum))?;
    ensure!((0..i64::from(n)).contains(&old), "fetch_and_op old {old}");
    // A 4-byte element: compare-and-swap on its word, leaving the neighbour alone.
    let old32 = ok(win.fetch_and_op(2u32, 0, 102, Op::Max))?;
    ensure!(old32 == 0 || old32 == 2, "u32 fetch_and_op old {old32}");
    let prev = ok(win.compare_and_swap(100 + i64::from(me), 0, 0, 101))?;
    sync(win, 0, false)?;
    ok(w.barrier())?;
    sync(win, 0, true)?;
    let counter = ok(win.fetch_and_op(0i64, 0, 100, Op::NoOp))?;
    let winner = ok(win.fetch_and_op(0i64, 0, 101, Op::NoOp))?;
    let max32 = ok(win.fetch_and_op(0u32, 0, 102, Op::NoOp))?;
    let mut both = [0i64; 2];
    ok(win.get_accumulate(&[5, 5], &mut both, 0, 100, Op::NoOp))?;
    sync(win, 0, false)?;
    ensure!(counter == i64::from(n), "counter {counter}");
    ensure!(
        (100..100 + i64::from(n)).contains(&winner),
        "winner {winner}"
    );
    ensure!(both == [counter, winner], "get_accumulate no-op {both:?}");
    ensure!(max32 == 2, "u32 max {max32}");
    let won = prev == 0;
    let mut wins = [0i32];
    ok(w.all_reduce(&[i32::from(won)], &mut wins, Op::Sum))?;
    ensure!(wins == [1], "{} ranks won the compare-and-swap", wins[0]);
    ok(w.barrier())
}

fn rma(w: &Communicator) -> Check {
    let me = w.rank();
    // Active target: fence.
    let win = ok(Window::allocate(w, 8 * 1024, 8))?;
    ok(win.fence(MODE_NOPRECEDE))?;
    rma_ops(&win, w, &|win, _, _| ok(win.fence(0)))?;
    ok(win.fence(MODE_NOSUCCEED))?;
    ok(win.free())?;
    // Passive target: exclusive locks; the barrier after the unlock orders the check.
    let win = ok(Window::allocate(w, 8 * 1024, 8))?;
    ok(w.barrier())?;
    rma_ops(&win, w, &|win, t, open| {
        if open {
            ok(win.lock(LockType::Exclusive, t, 0))
        } else {
            ok(win.unlock(t))?;
            ok(win.communicator().barrier())
        }
    })?;
    ok(win.free())?;
    // Passive target: lock_all with flush.
    let win = ok(Window::allocate(w, 8 * 1024, 8))?;
    ok(w.barrier())?;
    ok(win.lock_all(0))?;
    rma_ops(&win, w, &|win, t, open| {
        if !open {
            ok(win.flush(t))?;
            ok(win.flush_local(t))?;
            ok(win.flush_all())?;
            ok(win.communicator().barrier())?;
        }
        Ok(())
    })?;
    ok(win.unlock_all())?;
    ok(win.free())?;
    // Mutual exclusion: each rank increments a plain (non-atomic) counter at rank 0 under an
    // exclusive lock with get + put; no update may be lost.
    let win = ok(Window::allocate(w, 64, 8))?;
    ok(w.barrier())?;
    for _ in 0..20 {
        ok(win.lock(LockType::Exclusive, 0, 0))?;
        let mut v = [0u64];
        ok(win.get(&mut v, 0, 0))?;
        ok(win.put(&[v[0] + 1], 0, 0))?;
        ok(win.unlock(0))?;
    }
    ok(w.barrier())?;
    ok(win.lock(LockType::Shared, 0, 0))?;
    let mut v = [0u64];
    ok(win.get(&mut v, 0, 0))?;
    ok(win.unlock(0))?;
    ensure!(
        v[0] == 20 * w.size() as u64,
        "lost updates under the lock: {}",
        v[0]
    );
    ok(win.free())?;
    // Concurrent accumulates into one word by compare-and-swap (each rank's remembered value
    // goes stale as the others update it): no update may be lost.
    let win = ok(Window::allocate(w, 64, 8))?;
    ok(w.barrier())?;
    ok(win.lock_all(0))?;
    for _ in 0..50 {
        ok(win.accumulate(&[1.0f64], 0, 1, Op::Sum))?;
        ok(win.accumulate(&[1u8, 2], 0, 2, Op::Sum))?;
    }
    ok(win.flush_all())?;
    ok(win.unlock_all())?;
    ok(w.barrier())?;
    ok(win.lock(LockType::Shared, 0, 0))?;
    let total = ok(win.fetch_and_op(0.0f64, 0, 1, Op::NoOp))?;
    let mut b = [0u8; 2];
    ok(win.get_accumulate(&[0u8; 2], &mut b, 0, 2, Op::NoOp))?;
    ok(win.unlock(0))?;
    let n = w.size() as usize;
    ensure!(
        total == 50.0 * n as f64,
        "concurrent f64 sums lost updates: {total}"
    );
    ensure!(
        b == [(50 * n) as u8, (100 * n) as u8],
        "concurrent byte sums {b:?}"
    );
    ok(win.free())?;
    // Windows of different sizes per rank, displacement unit 1; NOCHECK locks.
    let win = ok(Window::allocate(w, 100 + me as usize * 5000, 1))?;
    ok(w.barrier())?;
    let t = w.size() - 1;
    ok(win.lock(LockType::Shared, t, MODE_NOCHECK))?;
    let len = ok(win.len_of(t))?;
    ensure!(len == 100 + t as usize * 5000, "len_of {len}");
    ok(win.put(&[me as u8 + 1], t, len - 1 - me as usize))?;
    ok(win.unlock(t))?;
    ok(w.barrier())?;
    if me == t {
        let mut tail = vec![0u8; w.size() as usize];
        ok(win.read_local(len - w.size() as usize, &mut tail))?;
        let want: Vec<u8> = (0..w.size()).rev().map(|r| r as u8 + 1).collect();
        ensure!(tail == want, "tail {tail:?}");
    }
    ok(win.free())?;
    // MPI_PROC_NULL targets do nothing; request-based RMA (passive target only).
    let win = ok(Window::allocate(w, 64, 8))?;
    let right = (me + 1) % w.size();
    ok(win.fence(0))?;
    ok(win.put(&[9u64], PROC_NULL, 0))?;
    let mut g = [3u64];
    ok(win.get(&mut g, PROC_NULL, 1 << 40))?;
    ensure!(g == [3], "a get from PROC_NULL wrote {g:?}");
    ok(win.accumulate(&[1u64], PROC_NULL, 0, Op::Sum))?;
    ensure!(
        ok(win.fetch_and_op(1u64, PROC_NULL, 0, Op::Sum))? == 0,
        "fetch_and_op"
    );
    ensure!(
        ok(win.compare_and_swap(1u64, 0, PROC_NULL, 0))? == 0,
        "compare_and_swap"
    );
    ensure!(
        win.rput(&[1u64], right, 0).err().map(|e| e.class()) == Some(ErrorClass::RmaSync),
        "rput in a fence epoch"
    );
    ok(win.fence(MODE_NOSUCCEED))?;
    let mut x = [1u64; 8];
    ok(win.read_local(0, &mut x))?;
    ensure!(x == [0; 8], "PROC_NULL operations wrote {x:?}");
    ok(w.barrier())?;
    ok(win.lock_all(0))?;
    let r = ok(win.rput(&[me as u64 + 100], right, 2))?;
    ensure!(r.is_complete(), "rput request not complete at once");
    ok(r.wait())?;
    ok(win.flush(right))?;
    let mut v = [0u64];
    let r = ok(win.rget(&mut v, right, 2))?;
    let st = ok(r.wait())?;
    ensure!(v == [me as u64 + 100] && st.bytes == 8, "rget {v:?} {st:?}");
    ok(ok(win.rput(&[1u64], PROC_NULL, 0))?.wait())?;
    ok(win.unlock_all())?;
    ok(win.free())
}

fn pscw(w: &Communicator) -> Check {
    let (me, n) = (w.rank(), w.size());
    let win = ok(Window::allocate(w, 4096, 4))?;
    let world = Group::of(w);
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    for round in 0..3i32 {
        // Expose to the left neighbour, access the right one.
        ok(win.post(&ok(world.include(&[left]))?, 0))?;
        ok(win.start(&ok(world.include(&[right]))?, 0))?;
        ok(win.put(&[me * 100 + round], right, round as usize))?;
        ok(win.accumulate(&[1i32], right, 10, Op::Sum))?;
        ok(win.complete())?;
        if round == 1 {
            // MPI_Win_test until the origin's complete is in.
            while !ok(win.test())? {}
            ensure!(
                win.test().err().map(|e| e.class()) == Some(ErrorClass::RmaSync),
                "test after the epoch closed"
            );
        } else {
            ok(win.wait())?;
        }
        let mut x = [0i32];
        ok(win.read_local(round as usize, &mut x))?;
        ensure!(x == [left * 100 + round], "pscw round {round}: {x:?}");
        ok(win.read_local(10, &mut x))?;
        ensure!(x == [round + 1], "pscw accumulate {x:?}");
    }
    ok(win.free())
}

/// A window over memory the program allocated in global memory (the separate model): local
/// stores through the global address reach remote gets, and remote puts reach local loads,
/// across the synchronisation calls.
fn created(w: &Communicator, dsm: &dsm_core::Dsm) -> Check {
    let (me, n) = (w.rank(), w.size());
    let nu = n as usize;
    let base = ok(dsm
        .alloc_collective(nu * 8192, dsm_core::Placement::FirstTouch)
        .map_err(Into::into))?;
    // Each rank's part straddles a page boundary and pages of several homes.
    let mine = base.wrapping_add(me as usize * 8192 + 4000);
    let win = ok(Window::create(w, mine, 1000, 8))?;
    let mine_vals: Vec<u64> = (0..125).map(|i| me as u64 * 1000 + i).collect();
    ok(win.write_local(0, &mine_vals))?;
    ok(win.fence(0))?;
    let right = (me + 1) % n;
    let mut got = vec![0u64; 125];
    ok(win.get(&mut got, right, 0))?;
    ensure!(
        got.iter()
            .enumerate()
            .all(|(i, &x)| x == right as u64 * 1000 + i as u64),
        "get of a created window missed the owner's stores: {:?}",
        &got[..4]
    );
    ok(win.fence(0))?;
    ok(win.put(&[7777u64 + me as u64; 125], right, 0))?;
    ok(win.accumulate(&[1u64], right, 3, Op::Sum))?;
    ok(win.fence(0))?;
    let left = (me + n - 1) % n;
    let mut want = vec![7777 + left as u64; 125];
    want[3] += 1;
    let mut local = vec![0u64; 125];
    ok(win.read_local(0, &mut local))?;
    ensure!(
        local == want,
        "local loads missed a remote put: {:?}",
        &local[..4]
    );
    ok(win.fence(MODE_NOSUCCEED))?;
    ok(win.free())?;
    ok(dsm.free_collective(base).map_err(Into::into))
}

/// A window over ordinary process memory (registered with the transport) and a dynamic
/// window over attached global memory.
fn raw_and_dynamic(w: &Communicator, dsm: &dsm_core::Dsm) -> Check {
    let (me, n) = (w.rank(), w.size());
    let right = (me + 1) % n;
    let left = (me + n - 1) % n;
    let mut memory = vec![0u64; 512].into_boxed_slice();
    let base = memory.as_mut_ptr().cast::<u8>();
    // SAFETY: `memory` outlives the window (freed below before `memory` is dropped) and is
    // not touched through Rust references while the window lives.
    let win = ok(unsafe { Window::create_from_raw(w, base, 4096, 8) })?;
    ok(win.fence(0))?;
    ok(win.put(&[me as u64 + 1; 3], right, 5))?;
    ok(win.accumulate(&[2u64], right, 100, Op::Sum))?;
    ok(win.fence(0))?;
    let mut x = [0u64; 4];
    ok(win.read_local(5, &mut x))?;
    ensure!(
        x == [left as u64 + 1, left as u64 + 1, left as u64 + 1, 0],
        "raw window {x:?}"
    );
    ok(win.read_local(100, &mut x[..1]))?;
    ensure!(x[0] == 2, "raw accumulate {}", x[0]);
    ok(win.fence(MODE_NOSUCCEED))?;
    ok(win.free())?;
    drop(memory);
    // Dynamic: each rank attaches memory from its own arena and publishes the address.
    let win = ok(Window::create_dynamic(w))?;
    let mine = ok(dsm.malloc(256).map_err(Into::into))?;
    ok(win.attach(mine, 256))?;
    let mut addrs = vec![0u64; n as usize];
    ok(w.all_gather(&[mine as u64], &mut addrs))?;
    let class = |r: mpi_compat::Result<()>| r.err().map(|e: Error| e.class());
    let theirs = addrs[right as usize] as usize;
    ok(win.lock_all(0))?;
    ok(win.put(&[me as u32 + 10], right, theirs + 4))?;
    // Global memory, but outside what the target attached: refused at the origin.
    ensure!(
        class(win.put(&[1u32], right, theirs + 256)) == Some(ErrorClass::RmaRange),
        "put past the attached memory"
    );
    ensure!(
        class(win.get(&mut [0u8; 8], right, theirs + 252)) == Some(ErrorClass::RmaRange),
        "get straddling the end of the attached memory"
    );
    ensure!(
        class(win.accumulate(&[1u64], right, theirs - 8, Op::Sum)) == Some(ErrorClass::RmaRange),
        "accumulate before the attached memory"
    );
    ok(win.flush(right))?;
    ok(win.unlock_all())?;
    ok(w.barrier())?;
    ok(win.sync())?;
    let mut y = [0u32];
    ok(win.read_local(mine as usize + 4, &mut y))?;
    ensure!(y == [left as u32 + 10], "dynamic window {y:?}");
    ensure!(
        matches!(
            win.attach(std::ptr::null_mut(), 8),
            Err(Error::InvalidArgument(_))
        ),
        "attach of non-global memory"
    );
    ok(win.detach(mine))?;
    ensure!(
        matches!(win.detach(mine), Err(Error::InvalidArgument(_))),
        "detach twice"
    );
    // Once every rank has detached, an epoch opened afterwards refuses the memory (what this
    // rank remembered of the target's list is checked again).
    ok(w.barrier())?;
    ok(win.lock_all(0))?;
    ensure!(
        class(win.put(&[1u32], right, theirs + 4)) == Some(ErrorClass::RmaRange),
        "put to detached memory"
    );
    ok(win.unlock_all())?;
    ok(w.barrier())?;
    // Memory attached while an epoch is open is found by the next access to it.
    ok(win.lock_all(0))?;
    ok(win.attach(mine, 64))?;
    ok(w.barrier())?;
    ok(win.put(&[me as u32 + 20], right, theirs + 8))?;
    ok(win.flush(right))?;
    ok(win.unlock_all())?;
    ok(w.barrier())?;
    ok(win.sync())?;
    ok(win.read_local(mine as usize + 8, &mut y))?;
    ensure!(
        y == [left as u32 + 20],
        "dynamic window after a new attach {y:?}"
    );
    ok(win.detach(mine))?;
    ok(win.free())?;
    ok(dsm.free(mine).map_err(Into::into))
}

fn errors(w: &Communicator) -> Check {
    let n = w.size();
    let class = |r: mpi_compat::Result<()>| r.err().map(|e: Error| e.class());
    ensure!(
        class(w.send(&[1u8], n, 0)) == Some(ErrorClass::Rank),
        "bad rank"
    );
    ensure!(
        class(w.send(&[1u8], -3, 0)) == Some(ErrorClass::Rank),
        "negative rank"
    );
    ensure!(
        class(w.send(&[1u8], 0, -5)) == Some(ErrorClass::Tag),
        "bad tag"
    );
    ensure!(
        class(w.recv(&mut [0u8], n + 3, ANY_TAG).map(drop)) == Some(ErrorClass::Rank),
        "recv from a bad rank"
    );
    ensure!(
        class(w.broadcast(&mut [0u8], n)) == Some(ErrorClass::Rank),
        "bcast bad root"
    );
    ensure!(
        class(w.all_reduce(&[1.0f64], &mut [0.0], Op::BOr)) == Some(ErrorClass::Op),
        "bitwise on floats"
    );
    ensure!(
        class(w.all_reduce(&[1u8; 2], &mut [0u8; 3], Op::Sum)) == Some(ErrorClass::Count),
        "count mismatch"
    );
    // Mismatched lengths across ranks (detectable where the data meets): the ranks that see
    // the mismatch get a count error, nobody waits forever, and the communicator goes on.
    let me = w.rank();
    let mut buf = vec![7u32; if me == 0 { 4 } else { 2 }];
    let got = class(w.broadcast(&mut buf, 0));
    ensure!(
        got == if me == 0 {
            None
        } else {
            Some(ErrorClass::Count)
        },
        "bcast with mismatched lengths: {got:?}"
    );
    let mine = vec![1u64; if me == n - 1 && n > 1 { 3 } else { 2 }];
    let mut out = vec![0u64; mine.len()];
    // (Which ranks see a reduction's mismatch depends on the tree: the odd contribution's
    // receivers do; every rank returns.)
    let got = class(w.reduce(&mine, &mut out, Op::Sum, 0));
    ensure!(
        got.is_none() || got == Some(ErrorClass::Count),
        "reduce with mismatched lengths: {got:?}"
    );
    let got = class(w.all_reduce(&mine, &mut out, Op::Sum));
    ensure!(
        if n > 1 && me == n - 1 {
            got == Some(ErrorClass::Count)
        } else {
            got.is_none() || got == Some(ErrorClass::Count)
        },
        "all_reduce with mismatched lengths: {got:?}"
    );
    ok(w.barrier())?;
    // One rank's buffer of the wrong length: that rank fails, the others are not left waiting
    // for it, and nothing is left behind to spoil the next call.
    let nu = n as usize;
    let mut all = vec![0i32; if me == 0 { nu } else { 2 * nu }];
    let got = class(w.all_gather(&[me, -me], &mut all));
    ensure!(
        got == if me == 0 {
            Some(ErrorClass::Count)
        } else {
            None
        },
        "all_gather with a short buffer on rank 0: {got:?}"
    );
    let mut all = vec![0i32; 2 * nu];
    ok(w.all_gather(&[me + 1, 7], &mut all))?;
    ensure!(
        all == (0..n).flat_map(|r| [r + 1, 7]).collect::<Vec<_>>(),
        "all_gather after the failed one: {all:?}"
    );
    let root = n - 1;
    let mut g = vec![0i32; if me == root { nu + 1 } else { 0 }];
    let got = class(w.gather(&[me], &mut g, root));
    ensure!(
        got == if me == root {
            Some(ErrorClass::Count)
        } else {
            None
        },
        "gather into a long buffer: {got:?}"
    );
    let mut g = vec![0i32; if me == root { nu } else { 0 }];
    ok(w.gather(&[me * 2], &mut g, root))?;
    ensure!(
        me != root || g == (0..n).map(|r| r * 2).collect::<Vec<_>>(),
        "gather after the failed one: {g:?}"
    );
    let src = vec![1i32; if me == 0 { 2 * nu + 1 } else { 0 }];
    let mut part = [0i32; 2];
    let got = class(w.scatter(&src, &mut part, 0));
    ensure!(
        got == Some(ErrorClass::Count),
        "scatter of a send buffer of the wrong length: {got:?}"
    );
    let src: Vec<i32> = if me == 0 {
        (0..2 * n).collect()
    } else {
        Vec::new()
    };
    ok(w.scatter(&src, &mut part, 0))?;
    ensure!(
        part == [2 * me, 2 * me + 1],
        "scatter after the failed one: {part:?}"
    );
    if n > 1 {
        let len = if me == 0 { 2 * nu + 1 } else { 2 * nu };
        let mut recv = vec![0i32; len];
        let got = class(w.all_to_all(&vec![me; len], &mut recv));
        ensure!(
            got == Some(ErrorClass::Count),
            "all_to_all with rank 0's buffers not a multiple of the size: {got:?}"
        );
        let mut recv = vec![0i32; 2 * nu];
        ok(w.all_to_all(&vec![me; 2 * nu], &mut recv))?;
        ensure!(
            recv == (0..n).flat_map(|r| [r, r]).collect::<Vec<_>>(),
            "all_to_all after the failed one: {recv:?}"
        );
    }
    ensure!(
        class(w.all_to_all(&[1u8; 3], &mut [0u8; 3]).map(drop))
            == if n == 3 || n == 1 {
                None
            } else {
                Some(ErrorClass::Count)
            },
        "all_to_all count"
    );
    // Reductions with one rank's own arguments wrong: that rank still takes part and fails
    // afterwards; the others are not left waiting, and the next reduction is not spoiled.
    // A receive buffer too short on rank 0: its contribution still counts.
    let sum: i64 = (0..i64::from(n)).map(|r| r + 1).sum();
    let mut out = vec![0i64; if me == 0 { 1 } else { 2 }];
    let got = class(w.all_reduce(&[i64::from(me) + 1, 1], &mut out, Op::Sum));
    ensure!(
        if me == 0 {
            got == Some(ErrorClass::Count)
        } else {
            got.is_none() && out == [sum, i64::from(n)]
        },
        "all_reduce with a short recv on rank 0: {got:?} {out:?}"
    );
    // An operation the type does not have (bitwise on floats) on the last rank only.
    let last = n - 1;
    let op = if me == last { Op::BAnd } else { Op::Sum };
    let mut x = [0.0f64];
    let got = class(w.all_reduce(&[1.0f64], &mut x, op));
    ensure!(
        got == (me == last).then_some(ErrorClass::Op),
        "all_reduce with an invalid op on rank {last}: {got:?}"
    );
    let got = class(w.reduce(&[1.0f64], &mut x, op, 0));
    ensure!(
        got == (me == last).then_some(ErrorClass::Op),
        "reduce with an invalid op on rank {last}: {got:?}"
    );
    let mut out = [0i64; 2];
    ok(w.all_reduce(&[i64::from(me) + 1, 1], &mut out, Op::Sum))?;
    ensure!(
        out == [sum, i64::from(n)],
        "all_reduce after the failed ones: {out:?}"
    );
    let mut x = [0.0f64];
    ok(w.reduce(&[2.0f64], &mut x, Op::Sum, 0))?;
    ensure!(
        me != 0 || x == [2.0 * f64::from(n)],
        "reduce after the failed ones: {x:?}"
    );
    // Truncation: the message is consumed and reported.
    if w.rank() == 0 && n > 1 {
        ok(w.send(&[1u32, 2, 3], 1, 11))?;
    } else if w.rank() == 1 {
        let mut small = [0u32; 2];
        let r = w.recv(&mut small, 0, 11);
        ensure!(
            matches!(r, Err(Error::Truncate { got: 12, room: 8 })),
            "{r:?}"
        );
        ensure!(small == [1, 2], "truncated prefix {small:?}");
    }
    ok(w.barrier())?;
    // Windows.
    ensure!(
        class(Window::allocate(w, 64, 0).map(drop)) == Some(ErrorClass::Disp),
        "disp_unit 0"
    );
    let win = ok(Window::allocate(w, 64, 8))?;
    ensure!(
        class(win.put(&[1u64], 0, 0)) == Some(ErrorClass::RmaSync),
        "put outside epoch"
    );
    ensure!(
        class(win.unlock(0)) == Some(ErrorClass::RmaSync),
        "unlock without lock"
    );
    ensure!(
        class(win.complete()) == Some(ErrorClass::RmaSync),
        "complete without start"
    );
    ensure!(
        class(win.fence(1 << 30)) == Some(ErrorClass::Arg),
        "bad assert"
    );
    ok(win.fence(0))?;
    ensure!(
        class(win.put(&[1u64], n, 0)) == Some(ErrorClass::Rank),
        "put to a bad rank"
    );
    ensure!(
        class(win.put(&[1u64; 2], 0, 7)) == Some(ErrorClass::RmaRange),
        "put past the end"
    );
    ensure!(
        class(win.get(&mut [0u8; 65], 0, 0)) == Some(ErrorClass::RmaRange),
        "get past the end"
    );
    ensure!(
        class(win.put(&[1u8], 0, usize::MAX)) == Some(ErrorClass::Disp),
        "overflowing displacement"
    );
    ensure!(
        class(win.accumulate(&[1.0f32], 0, 0, Op::BAnd)) == Some(ErrorClass::Op),
        "bitwise accumulate on floats"
    );
    ensure!(
        class(win.compare_and_swap(1.0f64, 0.0, 0, 0).map(drop)) == Some(ErrorClass::Type),
        "compare-and-swap on floats"
    );
    ensure!(
        class(win.read_local(8, &mut [0u64; 2])) == Some(ErrorClass::RmaRange),
        "local"
    );
    ok(win.fence(MODE_NOSUCCEED))?;
    ok(win.lock(LockType::Shared, 0, 0))?;
    ensure!(
        class(win.lock(LockType::Shared, 0, 0)) == Some(ErrorClass::RmaSync),
        "double lock"
    );
    ensure!(
        class(win.fence(0)) == Some(ErrorClass::RmaSync),
        "fence inside a lock"
    );
    ok(win.unlock(0))?;
    ok(win.free())?;
    // A free that fails on one rank (a lock still held there) fails on every rank with that
    // rank's class: nobody waits in the free's barrier forever.
    let win = ok(Window::allocate(w, 64, 8))?;
    if me == 0 {
        ok(win.lock(LockType::Shared, 0, 0))?;
    }
    let got = win.free();
    ensure!(
        if me == 0 {
            matches!(got, Err(Error::RmaSync(_)))
        } else {
            matches!(
                got,
                Err(Error::FailedElsewhere {
                    rank: 0,
                    class: ErrorClass::RmaSync
                })
            )
        },
        "free with a lock held on rank 0: {got:?}"
    );
    // Likewise a fence with a bad assertion on the last rank only; it closes the epoch it
    // ends and opens none (a put then fails on every rank); the window goes on.
    let win = ok(Window::allocate(w, 64, 8))?;
    ok(win.fence(0))?;
    let got = win.fence(if me == n - 1 { 1 << 30 } else { 0 });
    ensure!(
        if me == n - 1 {
            matches!(&got, Err(e) if e.class() == ErrorClass::Arg)
        } else {
            matches!(
                got,
                Err(Error::FailedElsewhere { rank, class: ErrorClass::Arg }) if rank == n - 1
            )
        },
        "fence with a bad assertion on rank {}: {got:?}",
        n - 1
    );
    ensure!(
        class(win.put(&[5u64], (me + 1) % n, 1)) == Some(ErrorClass::RmaSync),
        "put after the failed fence"
    );
    ok(win.fence(0))?;
    ok(win.put(&[5u64], (me + 1) % n, 1))?;
    ok(win.fence(MODE_NOSUCCEED))?;
    let mut x = [0u64];
    ok(win.read_local(1, &mut x))?;
    ensure!(x == [5], "put after the failed fence: {x:?}");
    ok(win.free())?;
    // A window over process memory whose free fails on the last rank (a lock held there, its
    // put to rank 0 not flushed): the failing rank still completes its put before the free's
    // agreement, so the put is in rank 0's memory when rank 0's free returns, and the
    // registration is withdrawn on every rank (the memory may be freed then).
    let last = n - 1;
    let mut raw = vec![0u64; 8].into_boxed_slice();
    // SAFETY: `raw` is not touched until the window is gone (its free returns on this rank),
    // and outlives it.
    let win = ok(unsafe { Window::create_from_raw(w, raw.as_mut_ptr().cast(), 64, 8) })?;
    if me == last {
        ok(win.lock(LockType::Shared, 0, 0))?;
        ok(win.put(&[77u64], 0, 2))?;
    }
    let got = win.free();
    ensure!(
        if me == last {
            matches!(got, Err(Error::RmaSync(_)))
        } else {
            matches!(got, Err(Error::FailedElsewhere { rank, class: ErrorClass::RmaSync }) if rank == last)
        },
        "free of a raw window with a lock held on rank {last}: {got:?}"
    );
    ensure!(
        me != 0 || raw[2] == 77,
        "the failing rank's put before the failed free: {raw:?}"
    );
    drop(raw);
    // A window over process memory whose size overflows on one rank fails on every rank.
    let mut mine = vec![0u64; 8].into_boxed_slice();
    let huge = if me == 0 { usize::MAX - 2 } else { 64 };
    // SAFETY: `mine` outlives the call and is not borrowed meanwhile; on rank 0 the size
    // overflows, which the call refuses before it touches or registers the memory.
    let r = unsafe { Window::create_from_raw(w, mine.as_mut_ptr().cast(), huge, 8) }.map(drop);
    ensure!(
        class(r)
            == Some(if me == 0 {
                ErrorClass::Arg
            } else {
                ErrorClass::Win
            }),
        "create_from_raw with an overflowing size on rank 0"
    );
    drop(mine);
    // A part outside global memory fails on every rank (nobody hangs).
    let mut plain = [0u8; 64];
    let r = Window::create(w, plain.as_mut_ptr(), 64, 1).map(drop);
    ensure!(
        class(r) == Some(ErrorClass::Win),
        "create over non-global memory"
    );
    ok(w.barrier())
}

/// Errors of one rank that other ranks wait on, caused by a rank that leaves the job: run on 3
/// ranks with `DSM_ON_PEER_LOST=error`. Once the windows exist, rank 2 exits (without
/// finalizing: its connections simply close). The survivors' calls that need it fail, and
/// must still give the other survivor what it waits for: `unlock` whose reconciliation fails
/// releases the lock, `lock_all` that fails part way gives back the locks it took, and
/// `complete` whose first target is gone tells the other target. Each of these waited
/// forever before; the job's timeout catches a regression.
fn lost(w: &Communicator, dsm: &dsm_core::Dsm) -> Check {
    let (me, n) = (w.rank(), w.size());
    ensure!(n == 3, "lost runs on 3 ranks, not {n}");
    let gone = 2;
    // A created window (the separate model): rank r's part is page r + 1 of a cyclic
    // allocation, homed at rank r + 1, so rank 1's part is homed at the rank that leaves.
    let base = ok(dsm
        .alloc_collective(3 * 4096, dsm_core::Placement::Cyclic { block_pages: 1 })
        .map_err(Into::into))?;
    let part = base.wrapping_add(((me + 1) % n) as usize * 4096);
    let other = ok(w.dup())?;
    let created = ok(Window::create(w, part, 64, 8))?;
    let allocated = ok(Window::allocate(w, 64, 8))?;
    if me == 1 {
        // A local store under its own lock: the page is dirty here until the unlock.
        ok(created.lock(LockType::Exclusive, 1, 0))?;
        ok(created.write_local(0, &[7u64]))?;
    }
    ok(w.barrier())?;
    // The leaving rank waits until every other rank has passed the barrier (each tells it):
    // its last barrier message could otherwise still be in its send queue when it exits.
    if me == gone {
        for r in 0..gone {
            ok(w.recv(&mut [0u8], r, 9))?;
        }
        println!("rank {me}: lost ok");
        std::process::exit(0);
    }
    ok(w.send(&[0u8], gone, 9))?;
    // A message that arrived before the departure is seen still reaches an any-source receive
    // that takes it off the transport after (the loss of another rank does not fail a receive
    // that has its message): rank 1's message waits on rank 0's transport, untaken, while rank
    // 0 learns of the departure on another communicator.
    if me == 1 {
        ok(w.send(&[8u8], 0, 8))?;
        ok(other.send(&[1u8], 0, 1))?;
    } else {
        // Rank 1's message on `w` came before this one.
        ok(other.recv(&mut [0u8], 1, 1))?;
        let r = other.recv(&mut [0u8], gone, 2);
        ensure!(
            matches!(&r, Err(e) if e.class() == ErrorClass::ProcFailed),
            "receive from the rank that left: {r:?}"
        );
        let mut x = [0u8];
        let st = ok(w.recv(&mut x, ANY_SOURCE, 8))?;
        ensure!(
            st.source == 1 && x == [8],
            "any-source receive after a loss: {st:?} {x:?}"
        );
    }
    // The departure is seen: a receive from the rank that left fails.
    let r = w.recv(&mut [0u8], gone, 0);
    ensure!(
        matches!(&r, Err(e) if e.class() == ErrorClass::ProcFailed),
        "receive from the rank that left: {r:?}"
    );
    // 1. unlock: reconciling rank 1's part (its store goes home, to rank 2) fails; the
    // exclusive lock is released all the same, so rank 0 gets it.
    if me == 1 {
        let r = created.unlock(1);
        ensure!(r.is_err(), "unlock whose stores cannot go home succeeded");
        println!(
            "rank {me}: lost: unlock failed as it must: {}",
            r.unwrap_err()
        );
        ok(w.send(&[1u8], 0, 1))?;
    } else {
        ok(w.recv(&mut [0u8], 1, 1))?;
        ok(created.lock(LockType::Exclusive, 1, 0))?;
        ok(created.unlock(1))?;
    }
    // 2. lock_all fails at rank 2 after taking the shared locks of ranks 0 and 1; it gives
    // them back, so rank 1 gets both exclusively.
    if me == 0 {
        let r = allocated.lock_all(0);
        ensure!(r.is_err(), "lock_all with a lost rank succeeded");
        println!(
            "rank {me}: lost: lock_all failed as it must: {}",
            r.unwrap_err()
        );
        ok(w.send(&[2u8], 1, 2))?;
    } else {
        ok(w.recv(&mut [0u8], 0, 2))?;
        for t in [0, 1] {
            ok(allocated.lock(LockType::Exclusive, t, 0))?;
            ok(allocated.unlock(t))?;
        }
    }
    // 3. complete: the first target of rank 0's access epoch is rank 2; rank 1, the second,
    // is told all the same and sees the put.
    // (The messages order the steps: rank 0 stays until rank 1 is done with its memory.)
    if me == 1 {
        ok(allocated.post(&ok(Group::of(w).include(&[0]))?, MODE_NOCHECK))?;
        ok(w.send(&[3u8], 0, 3))?;
        ok(allocated.wait())?;
        let mut x = [0u64];
        ok(allocated.read_local(0, &mut x))?;
        ensure!(x == [42], "put of the completed epoch: {x:?}");
        ok(w.send(&[4u8], 0, 4))?;
    } else {
        ok(w.recv(&mut [0u8], 1, 3))?;
        let targets = ok(Group::of(w).include(&[gone, 1]))?;
        ok(allocated.start(&targets, MODE_NOCHECK))?;
        ok(allocated.put(&[42u64], 1, 0))?;
        let r = allocated.complete();
        ensure!(r.is_err(), "complete with a lost target succeeded");
        println!(
            "rank {me}: lost: complete failed as it must: {}",
            r.unwrap_err()
        );
        ok(w.recv(&mut [0u8], 1, 4))?;
    }
    // The windows cannot be freed (a collective with the rank that left): dropped.
    drop((created, allocated));
    Ok(())
}

fn main() -> ExitCode {
    let parts: Vec<String> = std::env::args().skip(1).collect();
    let universe = match mpi_compat::initialize() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("mpi-check: initialize: {e}");
            return ExitCode::from(2);
        }
    };
    let world = universe.world();
    for part in &parts {
        let r = match part.as_str() {
            "p2p" => p2p(&world),
            "nonblocking" => nonblocking(&world),
            "threads" => threads(&world),
            "collectives" => collectives(&world),
            "rma" => rma(&world),
            "pscw" => pscw(&world),
            "created" => created(&world, universe.dsm()),
            "raw" => raw_and_dynamic(&world, universe.dsm()),
            "errors" => errors(&world),
            "split" => split(&world),
            "lost" => lost(&world, universe.dsm()),
            other => Err(format!("unknown part {other:?}")),
        };
        if let Err(e) = r {
            eprintln!("mpi-check: rank {}: {part}: {e}", world.rank());
            return ExitCode::from(1);
        }
        println!("rank {}: {part} ok", world.rank());
    }
    drop(world);
    if parts.iter().any(|p| p == "lost") {
        // A rank has left: finalizing (a collective) would fail; dropping the runtime is the
        // survivors' clean-up.
        drop(universe);
        return ExitCode::SUCCESS;
    }
    match universe.finalize() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpi-check: finalize: {e}");
            ExitCode::from(1)
        }
    }
}
