//! Checkpoint and restart cost beside their floors, measured in the same run:
//!
//! - a full checkpoint's bandwidth per node against writing the same bytes (the node's own image
//!   and the partner's copy) with plain `write` + `fsync` to the same directory;
//! - an incremental checkpoint with 1% of the pages changed, against the full one;
//! - (`resume`) a restart: the whole `Dsm::init` with `DSM_RESTART=1` (bootstrap and mapping
//!   included), against reading the epoch's files back (both from the page cache, as written
//!   just before).
//!
//! `dsmrun -n N checkpoint_bench save [MIB_PER_NODE] [RUNS]`, then, with `DSM_RESTART=1`
//! (`dsmrun --restart`), `checkpoint_bench resume`. `DSM_CHECKPOINT_DIR` must be set (a
//! node-local directory). Rank 0 prints the table and `RESULT` lines; timings are the slowest
//! node's (the checkpoint ends when every node is done), median and best of RUNS interleaved
//! rounds.

use std::io::Write;
use std::time::{Duration, Instant};

use benches::{print_report, Better, Row, Stats};
use dsm_core::space::PAGE;
use dsm_core::{collective, Dsm, Placement};

fn slowest(d: &Dsm, t: Duration) -> Duration {
    let all = collective::all_gather(
        &*d.node().transport_arc(),
        &(t.as_nanos() as u64).to_le_bytes(),
        None,
    )
    .expect("all-gather");
    all.iter()
        .map(|b| {
            Duration::from_nanos(u64::from_le_bytes(
                b.as_slice().try_into().unwrap_or([0; 8]),
            ))
        })
        .max()
        .unwrap_or_default()
}

/// Writes `bytes` bytes in two files (as a checkpoint writes its image and a copy), flushed.
fn floor_write(dir: &std::path::Path, bytes: usize, buf: &[u8]) -> Duration {
    let t = Instant::now();
    for name in ["floor-a", "floor-b"] {
        let mut f = std::fs::File::create(dir.join(name)).expect("create");
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len());
            f.write_all(&buf[..n]).expect("write");
            left -= n;
        }
        f.sync_all().expect("fsync");
    }
    t.elapsed()
}

fn node_dir() -> std::path::PathBuf {
    let template = std::env::var("DSM_CHECKPOINT_DIR").expect("DSM_CHECKPOINT_DIR");
    let rank = std::env::var("DSM_RANK").unwrap_or_else(|_| "0".into());
    std::path::PathBuf::from(template.replace("%r", &rank))
}

fn save(d: &Dsm, mib: usize, runs: usize) {
    let (me, n) = (d.rank(), d.nodes());
    let pages = mib * 256;
    let a = d
        .alloc_collective(pages * n * PAGE, Placement::Blocked)
        .expect("alloc") as *mut u64;
    let mine = me * pages..(me + 1) * pages;
    let mut round = 0u64;
    let touch = |every: usize, round: u64| {
        for p in mine.clone().step_by(every) {
            // SAFETY: page p of this node's block of the live allocation; only this node
            // writes it, between barriers.
            unsafe {
                a.wrapping_add(p * PAGE / 8)
                    .write_volatile(round ^ p as u64)
            };
        }
    };
    touch(1, 0);
    d.barrier().expect("barrier");
    let dir = node_dir();
    std::fs::create_dir_all(&dir).expect("mkdir");
    let buf = vec![0x5au8; 1 << 20];
    let (mut full, mut floor, mut inc) = (Vec::new(), Vec::new(), Vec::new());
    let mut image_bytes = 0;
    for _ in 0..runs {
        round += 1;
        touch(1, round);
        let before = d.stats().checkpoint_bytes;
        let t = Instant::now();
        d.checkpoint_full().expect("checkpoint");
        full.push(slowest(d, t.elapsed()));
        image_bytes = (d.stats().checkpoint_bytes - before) as usize;
        floor.push(slowest(d, floor_write(&dir, image_bytes, &buf)));
        round += 1;
        touch(100, round);
        d.barrier().expect("barrier");
        let t = Instant::now();
        d.checkpoint().expect("checkpoint");
        inc.push(slowest(d, t.elapsed()));
    }
    for f in ["floor-a", "floor-b"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    // The last one full: `resume` restarts from it.
    d.checkpoint_full().expect("checkpoint");
    if me != 0 {
        return;
    }
    let (full, floor, inc) = (
        Stats::of(&mut full),
        Stats::of(&mut floor),
        Stats::of(&mut inc),
    );
    let mb = 2.0 * image_bytes as f64 / 1e6;
    let bandwidth = |which: &str, ours: Duration, theirs: Duration| Row {
        metric: format!("full checkpoint bandwidth ({which})"),
        value: mb / ours.as_secs_f64(),
        floor: mb / theirs.as_secs_f64(),
        unit: "MB/s",
        better: Better::Higher,
        target: Some(0.7),
    };
    let rows = [
        bandwidth("median", full.median, floor.median),
        bandwidth("best", full.min, floor.min),
        Row {
            metric: "incremental (1% changed) vs full".into(),
            value: inc.median.as_secs_f64() * 1e3,
            floor: full.median.as_secs_f64() * 1e3,
            unit: "ms",
            better: Better::Lower,
            target: Some(0.05),
        },
    ];
    print_report(
        &[
            ("nodes", n.to_string()),
            ("MiB homed per node", mib.to_string()),
            ("runs", runs.to_string()),
        ],
        &rows,
    );
}

fn main() {
    dsm_core::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num =
        |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("save") => {
            let d = Dsm::init().expect("init");
            save(&d, num(1, 64), num(2, 5).max(1));
            d.finalize().expect("finalize");
        }
        Some("resume") => {
            let t = Instant::now();
            let d = Dsm::init().expect("init");
            let init = t.elapsed();
            let epoch = d
                .restarted()
                .expect("resume runs with DSM_RESTART=1 after save");
            let dir = node_dir().join(format!("epoch-{:010}", epoch.0));
            let t = Instant::now();
            let mut bytes = 0;
            for e in std::fs::read_dir(&dir).expect("epoch dir").flatten() {
                bytes += std::fs::read(e.path()).expect("read").len();
            }
            let floor = t.elapsed();
            let init = slowest(&d, init);
            let floor = slowest(&d, floor);
            if d.rank() == 0 {
                print_report(
                    &[
                        ("nodes", d.nodes().to_string()),
                        ("bytes read per node", bytes.to_string()),
                    ],
                    &[Row {
                        metric: "restart (Dsm::init) vs reading its files".into(),
                        value: init.as_secs_f64() * 1e3,
                        floor: floor.as_secs_f64() * 1e3,
                        unit: "ms",
                        better: Better::Lower,
                        target: None,
                    }],
                );
            }
            d.finalize().expect("finalize");
        }
        other => {
            eprintln!("checkpoint_bench: unknown mode {other:?}: save [MIB] [RUNS] | resume");
            std::process::exit(2);
        }
    }
}
