//! Collectives on the world communicator, and sub-communicators from `split`.

use mpi_compat::{Communicator, ErrorClass, Op, Window, ANY_SOURCE};

use crate::{ok, Check};

/// `split`: sub-communicators with their own ranks for point-to-point and collectives.
pub(crate) fn split(w: &Communicator) -> Check {
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

pub(crate) fn collectives(w: &Communicator) -> Check {
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
