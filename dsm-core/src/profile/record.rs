//! What a node records while profiling: counters of the current phase, the closed phases, and
//! per-page records; written out as JSON at `finalize`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use crate::coherence::diff::Run;
use crate::space::PAGE;

/// Bytes per bit of a page's line mask: a page is 64 lines.
pub(crate) const LINE: usize = PAGE / 64;

/// The counters of a phase, in the order of [`COUNTERS`].
const N: usize = 14;

/// The names of a phase's counters, as they appear in the JSON.
pub(crate) const COUNTERS: [&str; N] = [
    "read_faults",
    "read_fault_ns",
    "write_faults",
    "write_fault_ns",
    "releases",
    "release_ns",
    "diffs",
    "diff_bytes",
    "acquires",
    "acquire_ns",
    "invalidations",
    "lock_waits",
    "lock_wait_ns",
    "barrier_wait_ns",
];

const READ_FAULTS: usize = 0;
const WRITE_FAULTS: usize = 2;
const RELEASES: usize = 4;
const DIFFS: usize = 6;
const DIFF_BYTES: usize = 7;
const ACQUIRES: usize = 8;
const INVALIDATIONS: usize = 10;
const LOCK_WAITS: usize = 11;
const BARRIER_WAIT_NS: usize = 13;

/// Where pages lie in the global range, to name them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// The global range's base address.
    pub(crate) base: usize,
    /// Pages of the collective heap (the arenas follow).
    pub(crate) collective_pages: usize,
    /// Pages of each node's arena.
    pub(crate) arena_pages: usize,
}

/// What happened to one page on this node.
#[derive(Debug, Default, Clone, Copy)]
struct PageRec {
    read_faults: u64,
    write_faults: u64,
    invalidations: u64,
    diffs: u64,
    diff_bytes: u64,
    /// The lines this node's diffs changed.
    lines: u64,
    /// Homed here and written here.
    home_wrote: bool,
    /// Homed here: the lines that changed in the home copy between barriers since this node's
    /// first write (its own stores and other nodes' diffs).
    home_lines: u64,
}

/// A closed phase.
#[derive(Debug)]
struct Phase {
    start_ns: u64,
    end_ns: u64,
    counters: [u64; N],
}

/// The profile of one node while it runs.
#[derive(Debug)]
pub(crate) struct Recorder {
    rank: usize,
    nodes: usize,
    pub(crate) dir: PathBuf,
    layout: Layout,
    start: Instant,
    /// When the current phase started, in nanoseconds since `start`.
    phase_start: AtomicU64,
    cur: [AtomicU64; N],
    phases: Mutex<Vec<Phase>>,
    pages: Mutex<HashMap<usize, PageRec>>,
    /// Pages homed and written here: their content at the last barrier.
    home_copies: Mutex<HashMap<usize, Box<[u8]>>>,
    /// Collective allocations in allocation order: first page, pages.
    allocs: Mutex<Vec<(usize, usize)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lines of a page that `runs` touch.
pub(crate) fn line_mask(runs: &[Run]) -> u64 {
    let mut m = 0u64;
    for r in runs.iter().filter(|r| r.len > 0) {
        for line in r.offset / LINE..=(r.offset + r.len - 1) / LINE {
            m |= 1 << (line % 64);
        }
    }
    m
}

/// The lines in which `a` and `b` differ.
fn changed_lines(a: &[u8], b: &[u8]) -> u64 {
    let mut m = 0u64;
    for (i, (x, y)) in a.chunks(LINE).zip(b.chunks(LINE)).enumerate() {
        if x != y {
            m |= 1 << (i % 64);
        }
    }
    m
}

impl Recorder {
    pub(crate) fn new(rank: usize, nodes: usize, dir: PathBuf, layout: Layout) -> Recorder {
        Recorder {
            rank,
            nodes,
            dir,
            layout,
            start: Instant::now(),
            phase_start: AtomicU64::new(0),
            cur: Default::default(),
            phases: Mutex::new(Vec::new()),
            pages: Mutex::new(HashMap::new()),
            home_copies: Mutex::new(HashMap::new()),
            allocs: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, i: usize, v: u64) {
        self.cur[i].fetch_add(v, Ordering::Relaxed);
    }

    fn page(&self, page: usize, f: impl FnOnce(&mut PageRec)) {
        f(lock(&self.pages).entry(page).or_default());
    }

    /// A fault on `page` served in `ns`. `home_copy` is the page's content before a write
    /// fault at its home (the first one only is kept).
    pub(crate) fn fault(&self, page: usize, write: bool, ns: u64, home_copy: Option<Box<[u8]>>) {
        let i = if write { WRITE_FAULTS } else { READ_FAULTS };
        self.add(i, 1);
        self.add(i + 1, ns);
        self.page(page, |p| {
            if write {
                p.write_faults += 1;
            } else {
                p.read_faults += 1;
            }
            p.home_wrote |= home_copy.is_some();
        });
        if let Some(c) = home_copy {
            lock(&self.home_copies).entry(page).or_insert(c);
        }
    }

    /// `page`, homed here, opened for writing ahead of a stream of first writes (row H4)
    /// without a fault of its own: `home_copy` is its content before the home's writes, kept
    /// as its write fault would have kept it.
    pub(crate) fn opened_ahead(&self, page: usize, home_copy: Box<[u8]>) {
        self.page(page, |p| p.home_wrote = true);
        lock(&self.home_copies).entry(page).or_insert(home_copy);
    }

    /// Whether a write fault on `page`, homed here, needs the page's content kept.
    pub(crate) fn wants_home_copy(&self, page: usize) -> bool {
        !lock(&self.home_copies).contains_key(&page)
    }

    /// A diff of `page` written home: its runs.
    pub(crate) fn diff(&self, page: usize, runs: &[Run]) {
        let bytes: usize = runs.iter().map(|r| r.len).sum();
        self.add(DIFFS, 1);
        self.add(DIFF_BYTES, bytes as u64);
        let mask = line_mask(runs);
        self.page(page, |p| {
            p.diffs += 1;
            p.diff_bytes += bytes as u64;
            p.lines |= mask;
        });
    }

    /// A release that took `ns`.
    pub(crate) fn release(&self, ns: u64) {
        self.add(RELEASES, 1);
        self.add(RELEASES + 1, ns);
    }

    /// An acquire that took `ns`.
    pub(crate) fn acquire(&self, ns: u64) {
        self.add(ACQUIRES, 1);
        self.add(ACQUIRES + 1, ns);
    }

    /// `page` was invalidated by an acquire.
    pub(crate) fn invalidated(&self, page: usize) {
        self.add(INVALIDATIONS, 1);
        self.page(page, |p| p.invalidations += 1);
    }

    /// A lock taken after waiting `ns` for it (its acquire not included).
    pub(crate) fn lock_wait(&self, ns: u64) {
        self.add(LOCK_WAITS, 1);
        self.add(LOCK_WAITS + 1, ns);
    }

    /// A collective allocation of `pages` pages from `start`.
    pub(crate) fn alloc(&self, start: usize, pages: usize) {
        lock(&self.allocs).push((start, pages));
    }

    /// The allocation at `start` was undone.
    pub(crate) fn unalloc(&self, start: usize) {
        let mut a = lock(&self.allocs);
        if a.last().is_some_and(|&(s, _)| s == start) {
            a.pop();
        }
    }

    /// A barrier waited `ns` (its release and acquire not included) and ends the current
    /// phase. `read` reads a page's current content at its home (for the home copies).
    pub(crate) fn barrier(&self, ns: u64, read: impl Fn(usize, &mut [u8])) {
        self.add(BARRIER_WAIT_NS, ns);
        {
            let mut copies = lock(&self.home_copies);
            let mut now = vec![0u8; PAGE];
            for (&page, copy) in copies.iter_mut() {
                read(page, &mut now);
                let m = changed_lines(&now, copy);
                if m != 0 {
                    copy.copy_from_slice(&now);
                    self.page(page, |p| p.home_lines |= m);
                }
            }
        }
        let end = super::ns(self.start.elapsed());
        let start = self.phase_start.swap(end, Ordering::Relaxed);
        let counters = std::array::from_fn(|i| self.cur[i].swap(0, Ordering::Relaxed));
        lock(&self.phases).push(Phase {
            start_ns: start,
            end_ns: end,
            counters,
        });
    }

    /// The name of `page`: its allocation and offset in it.
    fn name(&self, page: usize, allocs: &[(usize, usize)]) -> String {
        let l = self.layout;
        if page >= l.collective_pages {
            let owner = (page - l.collective_pages) / l.arena_pages.max(1);
            let off = (page - l.collective_pages - owner * l.arena_pages) * PAGE;
            return format!("arena of node {owner} +{off:#x}");
        }
        match allocs
            .iter()
            .enumerate()
            .rev()
            .find(|(_, &(s, n))| (s..s + n).contains(&page))
        {
            Some((i, &(s, _))) => format!(
                "alloc {i} ({:#x}) +{:#x}",
                l.base + s * PAGE,
                (page - s) * PAGE
            ),
            None => format!("page {page} (no allocation)"),
        }
    }

    /// This node's profile as JSON.
    pub(crate) fn to_json(&self) -> Value {
        let allocs = lock(&self.allocs).clone();
        let phases: Vec<Value> = lock(&self.phases)
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut o = serde_json::Map::new();
                o.insert("phase".into(), json!(i));
                o.insert("start_ns".into(), json!(p.start_ns));
                o.insert("end_ns".into(), json!(p.end_ns));
                for (name, v) in COUNTERS.iter().zip(p.counters) {
                    o.insert((*name).into(), json!(v));
                }
                Value::Object(o)
            })
            .collect();
        let mut pages: Vec<(usize, PageRec)> =
            lock(&self.pages).iter().map(|(&p, &r)| (p, r)).collect();
        pages.sort_unstable_by_key(|&(p, _)| p);
        let pages: Vec<Value> = pages
            .into_iter()
            .map(|(p, r)| {
                json!({
                    "page": p,
                    "address": format!("{:#x}", self.layout.base + p * PAGE),
                    "name": self.name(p, &allocs),
                    "read_faults": r.read_faults,
                    "write_faults": r.write_faults,
                    "invalidations": r.invalidations,
                    "diffs": r.diffs,
                    "diff_bytes": r.diff_bytes,
                    "lines": format!("{:016x}", r.lines),
                    "home_wrote": r.home_wrote,
                    "home_lines": format!("{:016x}", r.home_lines),
                })
            })
            .collect();
        let allocs: Vec<Value> = allocs
            .iter()
            .enumerate()
            .map(|(i, &(s, n))| {
                json!({"index": i, "base": format!("{:#x}", self.layout.base + s * PAGE), "pages": n})
            })
            .collect();
        json!({
            "rank": self.rank,
            "nodes": self.nodes,
            "page_size": PAGE,
            "line_size": LINE,
            "wall_ns": super::ns(self.start.elapsed()),
            "allocations": allocs,
            "phases": phases,
            "pages": pages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_become_lines() {
        let r = |offset, len| Run { offset, len };
        assert_eq!(line_mask(&[r(0, 1)]), 1);
        assert_eq!(line_mask(&[r(LINE - 1, 2)]), 0b11);
        assert_eq!(line_mask(&[r(PAGE / 2, PAGE / 2)]), !0u64 << 32);
        assert_eq!(line_mask(&[r(8, 0)]), 0);
        let mut a = vec![0u8; PAGE];
        let b = a.clone();
        a[LINE * 3 + 5] = 1;
        assert_eq!(changed_lines(&a, &b), 1 << 3);
    }
}
