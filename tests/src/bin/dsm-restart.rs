//! A program that checkpoints, for the checkpoint and restart tests (`tests/tests/checkpoint.rs`).
//!
//! `dsm-restart stencil STEPS EVERY`: a 1-D stencil over a blocked array and a first-touch
//! array, with a `malloc` block of the last rank that rank writes every step (its pointer kept
//! in global memory), and a checkpoint every EVERY steps. On a fresh start it initialises
//! everything; after a restart it goes on from the step the checkpoint holds. Rank 0 prints
//! `result HASH after STEPS steps`: the same bits whether or not the job was killed and
//! restarted on the way. With `DSM_TEST_KILL=RANK:MS` (fresh starts only), rank RANK kills
//! itself with SIGKILL after MS milliseconds, wherever it is (a checkpoint included), in the
//! first launch only (not when `DSM_RESTART=1`).
//!
//! `dsm-restart occupied` (with `DSM_RESTART=1`): rank 1 maps a page inside the range its
//! newest checkpoint used before `Dsm::init`; every rank prints `refused: ...` when the restart
//! is refused.
//!
//! `dsm-restart incremental`: a full checkpoint, one page changed per node, a second
//! checkpoint: that one must write exactly one page per node (the statistics say).

use std::process::ExitCode;
use std::time::Duration;

use dsm_core::space::PAGE;
use dsm_core::{Dsm, Placement, Rank};

type R = Result<(), String>;

/// Cells of each array per node (8 pages of f64).
const CELLS: usize = 8 * PAGE / 8;

fn load<T: Copy>(p: *const T) -> T {
    // SAFETY: every pointer passed here is inside a live global allocation; the program orders
    // conflicting accesses with barriers (it is data-race free), and the runtime resolves the
    // fault.
    unsafe { std::ptr::read_volatile(p) }
}

fn store<T: Copy>(p: *mut T, v: T) {
    // SAFETY: as `load`.
    unsafe { std::ptr::write_volatile(p, v) }
}

fn kill_later() {
    let Ok(spec) = std::env::var("DSM_TEST_KILL") else {
        return;
    };
    let Some((rank, ms)) = spec.split_once(':') else {
        return;
    };
    let (Ok(rank), Ok(ms)) = (rank.parse::<usize>(), ms.parse::<u64>()) else {
        return;
    };
    // Only the first launch: the restarted job must be able to finish.
    if std::env::var("DSM_RANK").ok().and_then(|r| r.parse().ok()) != Some(rank)
        || std::env::var("DSM_RESTART").is_ok_and(|v| v == "1")
    {
        return;
    }
    std::thread::spawn(move || {
        // Nothing is waited for: the moment of the kill is a deadline, whatever the job does.
        let (_keep, never) = std::sync::mpsc::channel::<()>();
        let _ = never.recv_timeout(Duration::from_millis(ms));
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(me, libc::SIGKILL) };
    });
}

fn stencil(d: &Dsm, steps: u64, every: u64) -> R {
    let e = |x: dsm_core::Error| x.to_string();
    let (me, n) = (d.rank(), d.nodes());
    let cells = CELLS * n;
    // The same allocations, in the same order, on a fresh start and after a restart.
    let state = d
        .alloc_collective(PAGE, Placement::Node(Rank(0)))
        .map_err(e)? as *mut u64;
    let a = d
        .alloc_collective(cells * 8, Placement::Blocked)
        .map_err(e)? as *mut f64;
    let b = d
        .alloc_collective(cells * 8, Placement::FirstTouch)
        .map_err(e)? as *mut f64;
    let mine = me * CELLS..(me + 1) * CELLS;
    match d.restarted() {
        None => {
            kill_later();
            for i in mine.clone() {
                store(a.wrapping_add(i), (i % 97) as f64);
                store(b.wrapping_add(i), 0.0);
            }
            if me == n - 1 {
                let blob = d.malloc(64 * 8).map_err(e)? as *mut u64;
                for k in 0..64 {
                    store(blob.wrapping_add(k), 0);
                }
                store(state.wrapping_add(1), blob as u64);
            }
            if me == 0 {
                store(state, 0);
            }
        }
        Some(epoch) => {
            if me == 0 {
                println!("restarted from epoch {epoch}");
            }
        }
    }
    d.barrier().map_err(e)?;
    loop {
        let step = load(state);
        if step >= steps {
            break;
        }
        for i in mine.clone() {
            let l = load(a.wrapping_add((i + cells - 1) % cells));
            let c = load(a.wrapping_add(i));
            let r = load(a.wrapping_add((i + 1) % cells));
            store(
                b.wrapping_add(i),
                (l + 2.0 * c + r) / 4.0 + step as f64 * 1e-3,
            );
        }
        d.barrier().map_err(e)?;
        for i in mine.clone() {
            store(a.wrapping_add(i), load(b.wrapping_add(i)));
        }
        if me == n - 1 {
            let blob = load(state.wrapping_add(1)) as *mut u64;
            let k = blob.wrapping_add(step as usize % 64);
            store(k, load(k) + step + 1);
        }
        d.barrier().map_err(e)?;
        if me == 0 {
            store(state, step + 1);
        }
        d.barrier().map_err(e)?;
        if (step + 1).is_multiple_of(every) {
            d.checkpoint().map_err(e)?;
        }
    }
    if me == 0 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |v: u64| h = (h ^ v).wrapping_mul(0x0100_0000_01b3);
        for i in 0..cells {
            mix(load(a.wrapping_add(i)).to_bits());
        }
        let blob = load(state.wrapping_add(1)) as *const u64;
        for k in 0..64 {
            mix(load(blob.wrapping_add(k)));
        }
        println!("result {h:016x} after {} steps", load(state));
    }
    Ok(())
}

fn incremental(d: &Dsm) -> R {
    let e = |x: dsm_core::Error| x.to_string();
    let (me, n) = (d.rank(), d.nodes());
    let pages = 64;
    let a = d
        .alloc_collective(pages * n * PAGE, Placement::Blocked)
        .map_err(e)?;
    for p in me * pages..(me + 1) * pages {
        store(a.wrapping_add(p * PAGE), p as u8 + 1);
    }
    let before = d.stats().checkpoint_pages;
    d.checkpoint().map_err(e)?;
    let full = d.stats().checkpoint_pages - before;
    if full < pages as u64 {
        return Err(format!(
            "the full checkpoint wrote {full} pages, fewer than the {pages} homed here"
        ));
    }
    // One page of this node's block changes.
    let p = me * pages + 5;
    store(a.wrapping_add(p * PAGE + 9), 0xee_u8);
    let before = d.stats().checkpoint_pages;
    d.checkpoint().map_err(e)?;
    let inc = d.stats().checkpoint_pages - before;
    if inc != 1 {
        return Err(format!(
            "the incremental checkpoint wrote {inc} pages, not the 1 changed"
        ));
    }
    println!(
        "rank {me}: incremental ok: full {full} pages, incremental {inc} ({} bytes in all)",
        d.stats().checkpoint_bytes
    );
    Ok(())
}

/// Maps a page where the newest checkpoint of this rank put global memory (its manifest's
/// `global-base`), so that a restart finds the range taken.
fn occupy() -> Result<(), String> {
    let template = std::env::var("DSM_CHECKPOINT_DIR").map_err(|e| e.to_string())?;
    let rank = std::env::var("DSM_RANK").map_err(|e| e.to_string())?;
    let dir = std::path::PathBuf::from(template.replace("%r", &rank));
    let mut epochs: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .collect();
    epochs.sort();
    let newest = epochs.last().ok_or("no epoch")?;
    let manifest = std::fs::read_to_string(newest.join(format!("MANIFEST-{rank}")))
        .map_err(|e| e.to_string())?;
    let base: usize = manifest
        .lines()
        .find_map(|l| l.strip_prefix("global-base "))
        .and_then(|v| v.parse().ok())
        .ok_or("no global-base in the manifest")?;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; an anonymous page at a free
    // address changes nothing else in the process.
    let p = unsafe {
        libc::mmap(
            (base + 4 * PAGE) as *mut libc::c_void,
            PAGE,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p as usize != base + 4 * PAGE {
        return Err(format!("cannot map a page at {:#x}", base + 4 * PAGE));
    }
    Ok(())
}

fn main() -> ExitCode {
    dsm_core::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("occupied") {
        // Rank 1 takes a page of the old range; every rank's restart must refuse.
        if std::env::var("DSM_RANK").as_deref() == Ok("1") {
            if let Err(why) = occupy() {
                eprintln!("dsm-restart: {why}");
                return ExitCode::FAILURE;
            }
        }
        return match Dsm::init() {
            Ok(_) => {
                eprintln!("dsm-restart: the restart passed with its range taken");
                ExitCode::FAILURE
            }
            Err(err) => {
                println!("refused: {err}");
                ExitCode::SUCCESS
            }
        };
    }
    let d = match Dsm::init() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("dsm-restart: init: {err}");
            return ExitCode::from(3);
        }
    };
    let num = |i: usize, default: u64| {
        args.get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let r = match args.first().map(String::as_str) {
        Some("stencil") => stencil(&d, num(1, 40), num(2, 10).max(1)),
        Some("incremental") => incremental(&d),
        other => Err(format!(
            "unknown mode {other:?}: stencil STEPS EVERY | incremental"
        )),
    };
    let me = d.rank();
    let f = d.finalize();
    match (r, f) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(why), _) => {
            eprintln!("dsm-restart: rank {me}: {why}");
            ExitCode::FAILURE
        }
        (_, Err(err)) => {
            eprintln!("dsm-restart: rank {me}: finalize: {err}");
            ExitCode::FAILURE
        }
    }
}
