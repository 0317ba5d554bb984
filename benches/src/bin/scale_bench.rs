//! Costs that grow with the job, measured on the job itself (`scripts/scale-bench.sh` runs it
//! for several N):
//!
//! - barrier latency (median of many), beside the message floor measured in the same run: a
//!   one-way message between ranks 0 and 1 (half a ping-pong), times ⌈log2 N⌉ rounds;
//! - the first write (write fault, then the release that carries its notices) to a page that
//!   k other nodes read, for k = 0, 1, 8, 64, 128 (those below N - 1), on the last rank (not
//!   the page's home); the k = 0 case is the floor.
//!
//! Rank 0 prints a table and `RESULT` lines.

use std::time::{Duration, Instant};

use benches::{print_report, Better, Row, Stats};
use dsm_core::space::PAGE;
use dsm_core::{Dsm, Placement, Rank};
use transport::{Tag, Transport};

const PING: Tag = Tag(7);

fn main() {
    dsm_core::logging::init();
    let d = Dsm::init().expect("init");
    let (me, n) = (d.rank(), d.nodes());
    assert!(n >= 2, "scale_bench needs at least 2 nodes");
    let t = d.node().transport_arc();
    // The floor: half a ping-pong between ranks 0 and 1.
    let rounds = 200;
    let mut one_way = Vec::new();
    for _ in 0..rounds {
        match me {
            0 => {
                let s = Instant::now();
                t.send(Rank(1), PING, &[1]).expect("send");
                t.recv(Some(Rank(1)), Some(PING), None).expect("recv");
                one_way.push(s.elapsed() / 2);
            }
            1 => {
                t.recv(Some(Rank(0)), Some(PING), None).expect("recv");
                t.send(Rank(0), PING, &[1]).expect("send");
            }
            _ => {}
        }
    }
    d.barrier().expect("barrier");
    let count = (20_000 / n).clamp(20, 500);
    let mut barriers = Vec::with_capacity(count);
    for _ in 0..count {
        let s = Instant::now();
        d.barrier().expect("barrier");
        barriers.push(s.elapsed());
    }
    // Write faults on pages read by k nodes, homed at rank 0; the writer is the last rank.
    let ks: Vec<usize> = [0usize, 1, 8, 64, 128]
        .into_iter()
        .filter(|&k| k < n - 1)
        .collect();
    let reps = 5;
    let pages = d
        .alloc_collective(ks.len() * reps * PAGE, Placement::Node(Rank(0)))
        .expect("alloc") as *mut u64;
    let writer = n - 1;
    let mut writes: Vec<Vec<Duration>> = vec![Vec::new(); ks.len()];
    for (i, &k) in ks.iter().enumerate() {
        for r in 0..reps {
            let page = pages.wrapping_add((i * reps + r) * PAGE / 8);
            // Ranks 1..=k read the page (each faults it in and registers as a reader).
            if (1..=k).contains(&me) {
                // SAFETY: a word of a live allocation; written only after the barrier below.
                let _ = unsafe { page.read_volatile() };
            }
            d.barrier().expect("barrier");
            if me == writer {
                let s = Instant::now();
                // SAFETY: as above; only the writer writes it, between barriers.
                unsafe { page.write_volatile(1) };
                d.release().expect("release");
                writes[i].push(s.elapsed());
            }
            d.barrier().expect("barrier");
        }
    }
    // The writer's numbers go to rank 0.
    if me == writer && writer != 0 {
        let bytes: Vec<u8> = writes
            .iter()
            .flatten()
            .flat_map(|w| (w.as_nanos() as u64).to_le_bytes())
            .collect();
        t.send(Rank(0), PING, &bytes).expect("send");
    }
    if me == 0 {
        let got = t
            .recv(Some(Rank(writer as u32)), Some(PING), None)
            .expect("recv")
            .data;
        let mut it = got
            .chunks_exact(8)
            .map(|c| Duration::from_nanos(u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))));
        for w in &mut writes {
            *w = (&mut it).take(reps).collect();
        }
        let floor = Stats::of(&mut one_way).median;
        let log = (n as f64).log2().ceil();
        let barrier = Stats::of(&mut barriers).median;
        let mut rows = vec![Row {
            metric: format!("barrier, {n} nodes (median)"),
            value: barrier.as_secs_f64() * 1e6,
            floor: floor.as_secs_f64() * 1e6 * log,
            unit: "us",
            better: Better::Lower,
            target: None,
        }];
        let base = Stats::of(&mut writes[0]).median;
        for (i, &k) in ks.iter().enumerate().skip(1) {
            rows.push(Row {
                metric: format!("first write, page read by {k} (median)"),
                value: Stats::of(&mut writes[i]).median.as_secs_f64() * 1e6,
                floor: base.as_secs_f64() * 1e6,
                unit: "us",
                better: Better::Lower,
                target: None,
            });
        }
        print_report(
            &[
                ("nodes", n.to_string()),
                ("barrier floor", "one-way message x ceil(log2 N)".into()),
                (
                    "write floor",
                    "the same write to a page nobody else reads".into(),
                ),
            ],
            &rows,
        );
    }
    d.finalize().expect("finalize");
}
