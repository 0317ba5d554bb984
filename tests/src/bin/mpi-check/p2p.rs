//! Point-to-point: blocking and non-blocking sends and receives, wildcards, `PROC_NULL`,
//! requests (`wait_all`, `wait_any`, `test_any`), and receives from several threads at once.

use mpi_compat::{
    test_any, wait_all, wait_any, Communicator, Error, ErrorClass, Request, RequestFailed, Status,
    ANY_SOURCE, ANY_TAG, PROC_NULL,
};

use crate::{ok, ok_any, Check};

/// Receives from several threads at once: a thread blocked in a receive must not hold up
/// another thread's receive and send. Rank 0's first thread waits for a message that rank 1
/// sends only after rank 0's second thread has received its own message and answered it, so
/// a receive that blocked the others would never finish (the job's timeout would end it).
pub(crate) fn threads(w: &Communicator) -> Check {
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

pub(crate) fn p2p(w: &Communicator) -> Check {
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

pub(crate) fn nonblocking(w: &Communicator) -> Check {
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
