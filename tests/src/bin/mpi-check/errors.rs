//! Errors: each wrong call returns the right class and changes nothing; and, with a rank that
//! leaves the job (`lost`), the survivors' calls fail without leaving the others waiting.

use mpi_compat::{
    Communicator, Error, ErrorClass, Group, LockType, Op, Window, ANY_SOURCE, ANY_TAG,
    MODE_NOCHECK, MODE_NOSUCCEED,
};

use crate::{ok, Check};

pub(crate) fn errors(w: &Communicator) -> Check {
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
pub(crate) fn lost(w: &Communicator, dsm: &dsm_core::Dsm) -> Check {
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
