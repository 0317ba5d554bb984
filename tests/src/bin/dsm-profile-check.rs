//! A program with known sharing, for the profile's multi-process test (`tests/profile.rs`):
//! on 2 nodes, one page written by both nodes in disjoint halves (false sharing), one word
//! incremented by both under a lock (true sharing), and three barriers before `finalize`'s
//! (four phases). Exits 0 when the program's own results hold.

use std::process::ExitCode;

use dsm_core::{Dsm, GlobalLock, Placement};

/// Increments of the shared counter per node.
const INCREMENTS: u64 = 10;

fn run(d: &Dsm) -> Result<(), String> {
    let e = |err: dsm_core::Error| err.to_string();
    let (me, nodes) = (d.rank(), d.nodes());
    // Allocation 0: its first page is written by every node, each in its own part.
    let halves = d
        .alloc_collective(2 * 4096, Placement::Blocked)
        .map_err(e)?;
    // Allocation 1: a counter every node increments under the lock of allocation 2.
    let counter = d.alloc_collective(4096, Placement::Blocked).map_err(e)? as *mut u64;
    let lock = d
        .alloc_collective(4096, Placement::Blocked)
        .map_err(e)?
        .cast::<GlobalLock>();
    if me == 0 {
        d.lock_init(lock).map_err(e)?;
    }
    let part = 4096 / nodes;
    for i in 0..part {
        // SAFETY: bytes [me*part, (me+1)*part) of the first page belong to this node alone.
        unsafe { std::ptr::write_volatile(halves.wrapping_add(me * part + i), 1 + me as u8) };
    }
    d.barrier().map_err(e)?;
    for _ in 0..INCREMENTS {
        d.lock(lock).map_err(e)?;
        // SAFETY: the counter lies in a live allocation and is only touched under the lock.
        let v = unsafe { std::ptr::read_volatile(counter) };
        // SAFETY: as above.
        unsafe { std::ptr::write_volatile(counter, v + 1) };
        d.unlock(lock).map_err(e)?;
    }
    d.barrier().map_err(e)?;
    // SAFETY: read after the barrier; nobody writes any more.
    let total = unsafe { std::ptr::read_volatile(counter) };
    if total != INCREMENTS * nodes as u64 {
        return Err(format!("counter is {total}"));
    }
    for r in 0..nodes {
        // SAFETY: as above.
        let v = unsafe { std::ptr::read_volatile(halves.wrapping_add(r * part)) };
        if v != 1 + r as u8 {
            return Err(format!("byte of rank {r} is {v}"));
        }
    }
    d.barrier().map_err(e)
}

fn main() -> ExitCode {
    dsm_core::logging::init();
    let d = match Dsm::init() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("dsm-profile-check: cannot start: {err}");
            return ExitCode::from(2);
        }
    };
    let rank = d.rank();
    match run(&d).and_then(|()| d.finalize().map_err(|err| err.to_string())) {
        Ok(()) => {
            println!("rank {rank}: profile-check ok");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("rank {rank}: profile-check FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}
