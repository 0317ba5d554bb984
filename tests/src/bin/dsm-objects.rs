//! Semaphores, condition variables and placement on a chosen node, one scenario per run, for
//! the multi-process tests (`tests/tests/objects.rs`). Each exits 0 only when its checks hold
//! on this node. No scenario polls: every wait is a `sem_wait` or a `cond_wait`.

use std::process::ExitCode;

use dsm_core::space::PAGE;
use dsm_core::{Dsm, Error, GlobalCondvar, GlobalLock, GlobalSemaphore, Placement, Rank};

use tests::scenario::{check, e, Outcome as R};

/// Reads a u64 of global memory through an ordinary load (which may fault).
fn load(p: usize) -> u64 {
    // SAFETY: every address passed here is an aligned word inside a live global allocation;
    // the runtime resolves the fault, and each scenario orders conflicting accesses through
    // a semaphore, a lock or a barrier (it is data-race free).
    unsafe { std::ptr::read_volatile(p as *const u64) }
}

fn store(p: usize, v: u64) {
    // SAFETY: as for `load`.
    unsafe { std::ptr::write_volatile(p as *mut u64, v) }
}

/// Reports a failure of this rank and ends the process (the launcher stops the others).
fn fail(msg: String) -> ! {
    eprintln!("dsm-objects: FAILED: {msg}");
    std::process::exit(1)
}

/// Words in a slot of the producer/consumer ring: one page.
const WORDS: usize = PAGE / 8;

/// The semaphores of one channel, rank r to rank r + 1: `full` counts the items in its ring,
/// `empty` the free slots.
#[repr(C)]
struct Channel {
    full: GlobalSemaphore,
    empty: GlobalSemaphore,
}

/// Producer/consumer across nodes: every rank r sends `ITEMS` one-page items to rank r + 1
/// (mod n) through a ring of `SLOTS` slots guarded by two semaphores (a producer thread and a
/// consumer thread per rank, so all channels run at once). The consumer checks every word of
/// every item: what the producer wrote before `sem_post(full)` is visible after
/// `sem_wait(full)`, and the slot it frees (`sem_post(empty)`) is not overwritten before it
/// has read it.
fn sem_producer_consumer(d: &Dsm) -> R {
    const ITEMS: usize = 150;
    const SLOTS: usize = 3;
    let (me, n) = (d.rank(), d.nodes());
    let channels = d
        .alloc_collective(n * size_of::<Channel>(), Placement::Blocked)
        .map_err(e)? as usize;
    let rings = d
        .alloc_collective(n * SLOTS * PAGE, Placement::Cyclic { block_pages: 1 })
        .map_err(e)? as usize;
    let channel = |r: usize| (channels + r * size_of::<Channel>()) as *const Channel;
    let full = |r: usize| channel(r).cast::<GlobalSemaphore>();
    let empty = |r: usize| full(r).wrapping_add(1);
    let slot = |r: usize, i: usize| rings + (r * SLOTS + i % SLOTS) * PAGE;
    let value = |r: usize, i: usize, w: usize| ((r as u64) << 48) | ((i as u64) << 16) | w as u64;
    d.sem_init(full(me), 0).map_err(e)?;
    d.sem_init(empty(me), SLOTS as u64).map_err(e)?;
    d.barrier().map_err(e)?;
    let from = (me + n - 1) % n;
    // A failed side stops the job at once (`fail`): the other side, and the next rank's,
    // would wait forever for units that never come.
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..ITEMS {
                let r = d.sem_wait(empty(me)).map_err(e);
                r.unwrap_or_else(|m| fail(format!("the producer: {m}")));
                for w in 0..WORDS {
                    store(slot(me, i) + w * 8, value(me, i, w));
                }
                let r = d.sem_post(full(me)).map_err(e);
                r.unwrap_or_else(|m| fail(format!("the producer: {m}")));
            }
        });
        s.spawn(|| {
            for i in 0..ITEMS {
                let r = d.sem_wait(full(from)).map_err(e);
                r.unwrap_or_else(|m| fail(format!("the consumer: {m}")));
                for w in 0..WORDS {
                    let v = load(slot(from, i) + w * 8);
                    if v != value(from, i, w) {
                        fail(format!("item {i} from rank {from}, word {w}: {v:#x}"));
                    }
                }
                let r = d.sem_post(empty(from)).map_err(e);
                r.unwrap_or_else(|m| fail(format!("the consumer: {m}")));
            }
        });
    });
    d.barrier().map_err(e)?;
    // Every unit was taken: full is 0 and empty back at SLOTS, so a try_wait of full fails
    // and SLOTS try_waits of empty succeed.
    check(!d.sem_try_wait(full(me)).map_err(e)?, || {
        "full is not 0 at the end".into()
    })?;
    for k in 0..SLOTS {
        check(d.sem_try_wait(empty(me)).map_err(e)?, || {
            format!("empty has {k} units, not {SLOTS}")
        })?;
    }
    check(!d.sem_try_wait(empty(me)).map_err(e)?, || {
        "empty has more than SLOTS units".into()
    })?;
    d.barrier().map_err(e)
}

/// The shared state of the condition-variable scenarios, in one page.
#[repr(C)]
struct Shared {
    lock: GlobalLock,
    cond: GlobalCondvar,
    ready: GlobalSemaphore,
    /// Protected by `lock`.
    turn: u64,
    tickets: u64,
    go: u64,
    payload: u64,
    woken: u64,
}

/// The address of a field of the `Shared` at `base`.
macro_rules! field {
    ($base:expr, $f:ident) => {
        $base as usize + std::mem::offset_of!(Shared, $f)
    };
}

/// A token passed around the nodes with a lock, a condition variable and a predicate: in
/// each turn, the node whose turn it is checks the previous turn's record, writes its own and
/// broadcasts; the others wait in a loop on `turn % n == me`, as POSIX programs do.
fn cond_token(d: &Dsm) -> R {
    const TURNS: u64 = 120;
    let (me, n) = (d.rank() as u64, d.nodes() as u64);
    let base = d
        .alloc_collective(size_of::<Shared>(), Placement::Blocked)
        .map_err(e)? as *const Shared;
    let history = d
        .alloc_collective(TURNS as usize * 8, Placement::Node(Rank(0)))
        .map_err(e)? as usize;
    let lock = field!(base, lock) as *const GlobalLock;
    let cond = field!(base, cond) as *const GlobalCondvar;
    let turn = field!(base, turn);
    if me == 0 {
        d.lock_init(lock).map_err(e)?;
        d.cond_init(cond).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    d.lock(lock).map_err(e)?;
    loop {
        let t = load(turn);
        if t >= TURNS {
            break;
        }
        if t % n != me {
            d.cond_wait(cond, lock).map_err(e)?;
            continue;
        }
        if t > 0 {
            let prev = load(history + (t as usize - 1) * 8);
            check(prev == (t - 1) % n + 1, || {
                format!("turn {t}: the record of turn {} is {prev}", t - 1)
            })?;
        }
        store(history + t as usize * 8, me + 1);
        store(turn, t + 1);
        d.cond_broadcast(cond).map_err(e)?;
    }
    d.unlock(lock).map_err(e)?;
    d.barrier().map_err(e)?;
    for t in 0..TURNS {
        let v = load(history + t as usize * 8);
        check(v == t % n + 1, || format!("turn {t} was taken by {v}"))?;
    }
    d.barrier().map_err(e)
}

/// A broadcast wakes every waiter: every node but 0 waits for `go` under the lock; node 0
/// lets them start waiting, then publishes a payload, sets `go` and broadcasts once. Then
/// signals hand out one ticket each: node 0 adds a ticket and signals, n - 1 times; each other
/// node waits for a ticket and takes it (a signal may wake several: the loop copes).
fn cond_broadcast_and_signal(d: &Dsm) -> R {
    let (me, n) = (d.rank(), d.nodes());
    let base = d
        .alloc_collective(size_of::<Shared>(), Placement::Node(Rank((n - 1) as u32)))
        .map_err(e)? as *const Shared;
    let lock = field!(base, lock) as *const GlobalLock;
    let cond = field!(base, cond) as *const GlobalCondvar;
    let go = field!(base, go);
    let payload = field!(base, payload);
    let woken = field!(base, woken);
    let tickets = field!(base, tickets);
    let ready = field!(base, ready) as *const GlobalSemaphore;
    if me == 0 {
        d.lock_init(lock).map_err(e)?;
        d.cond_init(cond).map_err(e)?;
        d.sem_init(ready, 0).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    if me == 0 {
        // Each waiter posts `ready` while it holds the lock, just before its `cond_wait`,
        // which releases the lock only once it has read the sequence: when node 0 has all the
        // posts and then the lock, every other node is waiting, and only the broadcast can
        // wake it.
        for _ in 1..n {
            d.sem_wait(ready).map_err(e)?;
        }
        d.lock(lock).map_err(e)?;
        store(payload, 0xfeed);
        store(go, 1);
        d.cond_broadcast(cond).map_err(e)?;
        d.unlock(lock).map_err(e)?;
    } else {
        d.lock(lock).map_err(e)?;
        d.sem_post(ready).map_err(e)?;
        while load(go) == 0 {
            d.cond_wait(cond, lock).map_err(e)?;
        }
        let p = load(payload);
        check(p == 0xfeed, || {
            format!("woken by the broadcast, payload {p:#x}")
        })?;
        d.unlock(lock).map_err(e)?;
        d.atomic_fetch_add(woken as *const u64, 1).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    let w = d.atomic_load(woken as *const u64).map_err(e)?;
    check(w == n as u64 - 1, || {
        format!("{w} nodes woke, not {}", n - 1)
    })?;
    if me == 0 {
        for _ in 1..n {
            d.lock(lock).map_err(e)?;
            store(tickets, load(tickets) + 1);
            d.cond_signal(cond).map_err(e)?;
            d.unlock(lock).map_err(e)?;
        }
    } else {
        d.lock(lock).map_err(e)?;
        while load(tickets) == 0 {
            d.cond_wait(cond, lock).map_err(e)?;
        }
        store(tickets, load(tickets) - 1);
        d.unlock(lock).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    let left = load(tickets);
    check(left == 0, || format!("{left} tickets left"))?;
    d.barrier().map_err(e)
}

/// Misuse: `cond_wait` with a lock this node does not hold changes nothing; misaligned
/// objects are refused; `sem_try_wait` of an empty semaphore is `false`.
fn misuse(d: &Dsm) -> R {
    let base = d
        .alloc_collective(size_of::<Shared>() + 64, Placement::Blocked)
        .map_err(e)? as *const Shared;
    let lock = field!(base, lock) as *const GlobalLock;
    let cond = field!(base, cond) as *const GlobalCondvar;
    let sem = (base as usize + size_of::<Shared>()) as *const GlobalSemaphore;
    if d.rank() == 0 {
        d.lock_init(lock).map_err(e)?;
        d.cond_init(cond).map_err(e)?;
        d.sem_init(sem, 0).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    let r = d.cond_wait(cond, lock);
    check(matches!(r, Err(Error::LockNotHeld(_))), || {
        format!("cond_wait without the lock: {r:?}")
    })?;
    // The lock is untouched: it can be taken and given back.
    d.lock(lock).map_err(e)?;
    d.unlock(lock).map_err(e)?;
    let odd = (sem as usize + 8) as *const GlobalSemaphore;
    check(matches!(d.sem_post(odd), Err(Error::Misaligned(_))), || {
        "a misaligned semaphore was accepted".into()
    })?;
    let odd = (cond as usize + 8) as *const GlobalCondvar;
    check(
        matches!(d.cond_signal(odd), Err(Error::Misaligned(_))),
        || "a misaligned condition variable was accepted".into(),
    )?;
    let local = GlobalSemaphore::default();
    check(
        matches!(d.sem_post(&local), Err(Error::Misaligned(_))),
        || "a semaphore outside global memory was accepted".into(),
    )?;
    check(!d.sem_try_wait(sem).map_err(e)?, || {
        "an empty semaphore was taken".into()
    })?;
    d.barrier().map_err(e)?;
    if d.rank() == 0 {
        d.sem_post(sem).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    let got = u64::from(d.sem_try_wait(sem).map_err(e)?);
    let total = d.alloc_collective(8, Placement::Blocked).map_err(e)? as *const u64;
    d.atomic_fetch_add(total, got).map_err(e)?;
    d.barrier().map_err(e)?;
    let t = d.atomic_load(total).map_err(e)?;
    check(t == 1, || format!("one unit was taken {t} times"))?;
    d.barrier().map_err(e)
}

/// Placement on a chosen node: every page of an allocation on node k is homed there
/// (`home_of`), written by another node and read by all; a node outside the job is refused on
/// every node with nothing allocated; nodes asking for different nodes all fail.
fn placement(d: &Dsm) -> R {
    const PAGES: usize = 5;
    let (me, n) = (d.rank(), d.nodes());
    for k in 0..n {
        let a = d
            .alloc_collective(PAGES * PAGE, Placement::Node(Rank(k as u32)))
            .map_err(e)? as usize;
        for p in 0..PAGES {
            let home = d.home_of((a + p * PAGE) as *const u8).map_err(e)?;
            check(home == k, || {
                format!("page {p} of the allocation on node {k} is homed at {home}")
            })?;
        }
        let writer = (k + 1) % n;
        if me == writer {
            for p in 0..PAGES {
                store(a + p * PAGE + 8 * me, (k * 100 + p) as u64);
            }
        }
        d.barrier().map_err(e)?;
        for p in 0..PAGES {
            let v = load(a + p * PAGE + 8 * writer);
            check(v == (k * 100 + p) as u64, || {
                format!("node {k}'s page {p}: {v}")
            })?;
        }
        d.barrier().map_err(e)?;
        d.free_collective(a as *mut u8).map_err(e)?;
    }
    let probe = d.alloc_collective(PAGE, Placement::Blocked).map_err(e)?;
    d.free_collective(probe).map_err(e)?;
    let bad = d.alloc_collective(PAGE, Placement::Node(Rank(n as u32)));
    check(
        matches!(bad, Err(Error::NoSuchNode { node, nodes }) if node.index() == n && nodes == n),
        || format!("a placement on node {n} of {n}: {bad:?}"),
    )?;
    if n > 1 {
        let mixed = d.alloc_collective(PAGE, Placement::Node(Rank(u32::from(me == 0))));
        check(matches!(mixed, Err(Error::CollectiveMismatch(_))), || {
            format!("nodes asked for different homes: {mixed:?}")
        })?;
        // A bad node on one node only: every node fails, nothing is allocated.
        let some = d.alloc_collective(
            PAGE,
            Placement::Node(Rank(if me == 0 { n as u32 } else { 0 })),
        );
        check(some.is_err(), || "a bad node on rank 0 only passed".into())?;
    }
    // Nothing was allocated by the failures: the next allocation gets the same pages.
    let again = d.alloc_collective(PAGE, Placement::Blocked).map_err(e)?;
    check(again == probe, || {
        format!("the heap changed: {again:p} after {probe:p}")
    })?;
    d.free_collective(again).map_err(e)?;
    d.barrier().map_err(e)
}

/// Several threads per node, each adding to one of two counters under that counter's lock; the
/// counters share a page homed on node 0, so every node's release writes a diff of a page its
/// other threads keep writing. No increment may be lost: a thread's release must not return
/// before another thread's write-back of the same page (which carries its writes) is home.
fn threaded_locks(d: &Dsm) -> R {
    let threads_arg = std::env::args().nth(2).and_then(|a| a.parse().ok());
    let threads: usize = threads_arg.unwrap_or(3);
    const ROUNDS: u64 = 200;
    let n = d.nodes();
    let base = d
        .alloc_collective(PAGE, Placement::Node(Rank(0)))
        .map_err(e)? as usize;
    let locks = d
        .alloc_collective(2 * size_of::<GlobalLock>(), Placement::Blocked)
        .map_err(e)? as usize;
    let lock_of = |j: usize| (locks + j * size_of::<GlobalLock>()) as *const GlobalLock;
    let counter = |j: usize| base + 64 * j;
    if d.rank() == 0 {
        for j in 0..2 {
            d.lock_init(lock_of(j)).map_err(e)?;
        }
    }
    d.barrier().map_err(e)?;
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> R {
                    let j = t % 2;
                    for _ in 0..ROUNDS {
                        d.lock(lock_of(j)).map_err(e)?;
                        let v = load(counter(j));
                        store(counter(j), v + 1);
                        d.unlock(lock_of(j)).map_err(e)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err("a thread panicked".into())))
    })?;
    d.barrier().map_err(e)?;
    for j in 0..2 {
        let mine = (0..threads).filter(|t| t % 2 == j).count();
        let want = ROUNDS * (mine * n) as u64;
        let got = load(counter(j));
        check(got == want, || {
            format!("counter {j}: {got}, expected {want}")
        })?;
    }
    d.barrier().map_err(e)
}

fn main() -> ExitCode {
    tests::scenario::main("dsm-objects", &[], |d, scenario| match scenario {
        "sem-producer-consumer" => sem_producer_consumer(d),
        "cond-token" => cond_token(d),
        "cond-broadcast-signal" => cond_broadcast_and_signal(d),
        "misuse" => misuse(d),
        "placement" => placement(d),
        "threaded-locks" => threaded_locks(d),
        other => Err(format!("unknown scenario {other:?}")),
    })
}
