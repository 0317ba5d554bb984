//! A release's diffs posted together (`write_runs_batch`): many pages, to every rank (itself
//! included), more bytes than a backend holds back at once, and the same page written twice in
//! one batch: every run lands, nothing beside the runs is touched, and a later write to the same
//! bytes wins.

use super::{expose, pattern, unexpose};
use crate::api::Transport;
use crate::completion::wait_all;
use crate::region::Region;
use crate::types::{LocalSlice, RunsWrite};

const PAGE: usize = 4096;
/// Pages each rank writes at each rank: 48 whole pages are 192 KiB, past tcp's 64 KiB.
const PAGES: usize = 48;

/// See the module.
pub fn batched_diffs_land_in_order<T: Transport>(job: &[T]) {
    let n = job.len();
    let (homes, descs) = expose(job, n * PAGES * PAGE);
    for h in &homes {
        h.write_at(0, &vec![0xEE; n * PAGES * PAGE]).expect("fill");
    }
    // Odd pages: scattered runs; even pages: the whole page; page 0 again at the end, with
    // runs from a second source.
    let runs = vec![(8u32, 16u32), (1000, 1), (4090, 6)];
    for (me, t) in job.iter().enumerate() {
        let src = Region::allocate(PAGES * PAGE).expect("allocate");
        let again = Region::allocate(PAGE).expect("allocate");
        let (sd, ad) = (
            t.register(&src).expect("register"),
            t.register(&again).expect("register"),
        );
        src.write_at(0, &pattern(me, PAGES * PAGE)).expect("fill");
        again.write_at(0, &pattern(me + 1000, PAGE)).expect("fill");
        let mut writes = Vec::new();
        for d in &descs {
            for p in 0..PAGES {
                let at = (me * PAGES + p) * PAGE;
                writes.push(RunsWrite {
                    remote: d.slice(at as u64, PAGE).expect("slice"),
                    local: LocalSlice::new(&src, p * PAGE, PAGE).expect("local"),
                    runs: if p % 2 == 0 {
                        vec![(0, PAGE as u32)]
                    } else {
                        runs.clone()
                    },
                });
            }
            writes.push(RunsWrite {
                remote: d.slice((me * PAGES * PAGE) as u64, PAGE).expect("slice"),
                local: LocalSlice::whole(&again),
                runs: runs.clone(),
            });
        }
        let done = t.write_runs_batch(&writes).expect("write_runs_batch");
        assert_eq!(done.len(), writes.len(), "rank {me}: one result per write");
        let all: Vec<_> = done.into_iter().flatten().collect();
        wait_all(&all).unwrap_or_else(|e| panic!("rank {me}: batched diffs: {e}"));
        t.deregister(&sd).expect("deregister");
        t.deregister(&ad).expect("deregister");
    }
    for (r, h) in homes.iter().enumerate() {
        let mut got = vec![0u8; n * PAGES * PAGE];
        h.read_at(0, &mut got).expect("read");
        for me in 0..n {
            let data = pattern(me, PAGES * PAGE);
            let second = pattern(me + 1000, PAGE);
            for p in 0..PAGES {
                let page = &got[(me * PAGES + p) * PAGE..][..PAGE];
                let want = &data[p * PAGE..][..PAGE];
                let mut expect = if p % 2 == 0 {
                    want.to_vec()
                } else {
                    let mut e = vec![0xEE; PAGE];
                    for &(o, l) in &runs {
                        let (o, l) = (o as usize, l as usize);
                        e[o..o + l].copy_from_slice(&want[o..o + l]);
                    }
                    e
                };
                if p == 0 {
                    for &(o, l) in &runs {
                        let (o, l) = (o as usize, l as usize);
                        expect[o..o + l].copy_from_slice(&second[o..o + l]);
                    }
                }
                assert!(page == expect, "rank {r}: page {p} from rank {me}");
            }
        }
    }
    unexpose(job, &descs);
}
