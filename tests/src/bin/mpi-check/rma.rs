//! RMA windows: allocated, created over global memory, over process memory and dynamic, under
//! each synchronisation (fence, locks, post/start/complete/wait).

use mpi_compat::{
    Communicator, Error, ErrorClass, Group, LockType, Op, Window, MODE_NOCHECK, MODE_NOPRECEDE,
    MODE_NOSUCCEED, PROC_NULL,
};

use crate::{ok, Check};

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

pub(crate) fn rma(w: &Communicator) -> Check {
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
    narrow_compare_and_swap(w)?;
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

pub(crate) fn pscw(w: &Communicator) -> Check {
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
pub(crate) fn created(w: &Communicator, dsm: &dsm_core::Dsm) -> Check {
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
pub(crate) fn raw_and_dynamic(w: &Communicator, dsm: &dsm_core::Dsm) -> Check {
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

/// Compare-and-swap of bytes that share a word (each swaps its whole word): every rank (up to
/// 8) steps its own byte of one word at rank 0 while the others step theirs, and every rank
/// increments one shared byte with compare-and-swap loops. No swap may lose or invent a value.
fn narrow_compare_and_swap(w: &Communicator) -> Check {
    let (me, n) = (w.rank(), w.size());
    let win = ok(Window::allocate(w, 64, 1))?;
    ok(w.barrier())?;
    ok(win.lock_all(0))?;
    let steps = 100u8;
    if me < 8 {
        let mine = me as usize;
        for i in 0..steps {
            let old = ok(win.compare_and_swap(i + 1, i, 0, mine))?;
            ensure!(old == i, "rank {me}: byte step {i} saw {old}");
        }
        // A compare that fails returns the element and changes nothing.
        let old = ok(win.compare_and_swap(7u8, steps + 1, 0, mine))?;
        ensure!(old == steps, "rank {me}: failed compare saw {old}");
    }
    let rounds = 200 / n as u32;
    for _ in 0..rounds {
        let mut current = 0u8;
        loop {
            let seen = ok(win.compare_and_swap(current.wrapping_add(1), current, 0, 16))?;
            if seen == current {
                break;
            }
            current = seen;
        }
    }
    ok(win.flush_all())?;
    ok(win.unlock_all())?;
    ok(w.barrier())?;
    if me == 0 {
        let mut b = [0u8; 17];
        ok(win.read_local(0, &mut b))?;
        let owners = n.min(8) as usize;
        ensure!(
            b[..owners].iter().all(|&v| v == steps) && b[owners..16].iter().all(|&v| v == 0),
            "bytes stepped by compare-and-swap: {b:?}"
        );
        ensure!(
            u32::from(b[16]) == rounds * n as u32,
            "a byte counter incremented by compare-and-swap loops: {} of {}",
            b[16],
            rounds * n as u32
        );
    }
    ok(w.barrier())?;
    ok(win.free())
}
