//! The machine alone, simulated: N nodes, each a [`Machine`] and a small executor, over an
//! in-memory model of homes, directories and notification logs, with every remote operation a
//! message on a FIFO channel per ordered pair of nodes (as on one connection). A random
//! schedule interleaves the nodes' steps with the delivery of messages. Random data-race-free
//! programs ([`program`]) run to completion, and every read is checked against the sequential
//! oracle; a run that does not settle within a bound of events, or stops with nodes blocked,
//! fails. The application view of each page is what the machine's mapping actions made it
//! (not derived from the state), and after every step it must match the state.
//!
//! Run by `cargo test -p dsm-core --lib coherence::sim` (part of the `test` stage);
//! `DSM_SIM_PROGRAMS` sets how many programs (default 3000), `DSM_SIM_SEED` the first seed.

pub mod program;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use super::diff::diff;
use super::machine::{Action, Home, Input, Machine, Step, View, Wait, Why};
use super::page::{Cache, State, PREFETCHED, REG_READER};
use super::{DirEntry, NodeSet};
use crate::Rank;
use program::{Op, Program, Rng, WORDS};

const PAGE_BYTES: usize = WORDS * 8;
type Page = [u8; PAGE_BYTES];
/// Events a program may take before it is declared never to settle.
const MAX_EVENTS: usize = 200_000;

/// A remote operation in flight.
#[derive(Debug, Clone)]
enum Msg {
    /// Fetch-and-add a node's bit into a directory set; the old set goes to `answer`.
    Register {
        page: usize,
        writers: bool,
        add: u64,
        answer: Answer,
    },
    /// Read a directory entry into `answer`.
    ReadEntry { page: usize, answer: Answer },
    /// Read a page's content from its home into the sender's copy.
    Fetch { page: usize },
    /// Write runs of a page at its home.
    Diff {
        page: usize,
        runs: Vec<(usize, Vec<u8>)>,
    },
    /// Append a page to the receiver's notification log.
    Notify { page: usize },
}

/// Where a remote operation's answer goes at its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The faulting page's fetch or registration.
    Main,
    /// The page prefetched with it.
    Prefetch,
}

/// What a blocked node does once its remote operations are done.
#[derive(Debug, Clone, Copy)]
enum Then {
    /// Feed the answer `step` waited for (its operations are done).
    Answer {
        page: usize,
        step: Step,
        write: bool,
    },
    /// Arrive at the barrier (a release finished).
    Arrive,
    /// Retry the access that faulted (an eviction finished).
    Retry,
}

/// What follows a fault step's actions.
#[derive(Debug, Clone, Copy)]
enum After {
    /// Wait for the step's operations, then feed their answer (a fault, `write`).
    Answer { write: bool },
    /// The fault's transition is complete: evict if over the bound, then retry the access.
    Retry,
    /// A writer registration's second half: feed the fault again.
    Refault { write: bool },
    /// Go on with the acquire's remaining invalidations.
    Nothing,
}

#[derive(Debug)]
struct Node {
    st: Vec<State>,
    view: Vec<View>,
    copy: Vec<Page>,
    twins: HashMap<usize, Page>,
    dirty: Vec<usize>,
    /// Write notices kept for the next release.
    notices: Vec<(usize, NodeSet)>,
    sharers: BTreeSet<usize>,
    cached: VecDeque<usize>,
    log: Vec<u64>,
    tail: u64,
    consumed: u64,
    pc: usize,
    outstanding: usize,
    then: Option<Then>,
    at_barrier: bool,
    entry: [Option<DirEntry>; 2],
    old_writers: Option<NodeSet>,
    prefetching: Option<usize>,
    prefetched: u64,
    used: u64,
    wasted: u64,
}

/// The simulated job.
struct Sim<'p> {
    p: &'p Program,
    rng: Rng,
    nodes: Vec<Node>,
    machines: Vec<Machine>,
    homes: Vec<Page>,
    dir: Vec<[u64; 2]>,
    /// Who added itself to which directory word (page, writers?, node).
    registered: HashSet<(usize, bool, usize)>,
    /// FIFO channels, `from * nodes + to`.
    chans: Vec<VecDeque<(usize, Msg)>>,
    /// The channels that hold a message (a job of thousands of nodes has millions of channels).
    busy: Busy,
    barrier: usize,
    /// Print every step and delivery (`DSM_SIM_TRACE`).
    trace: bool,
}

fn word(page: &Page, w: usize) -> u64 {
    u64::from_le_bytes(page[w * 8..w * 8 + 8].try_into().expect("8 bytes"))
}

impl<'p> Sim<'p> {
    fn new(p: &'p Program, seed: u64) -> Sim<'p> {
        let node = |_| Node {
            st: vec![State(0); p.pages],
            view: vec![View::None; p.pages],
            copy: vec![[0; PAGE_BYTES]; p.pages],
            twins: HashMap::new(),
            dirty: Vec::new(),
            notices: Vec::new(),
            sharers: BTreeSet::new(),
            cached: VecDeque::new(),
            log: vec![0; p.log_cap],
            tail: 0,
            consumed: 0,
            pc: 0,
            outstanding: 0,
            then: None,
            at_barrier: false,
            entry: [None; 2],
            old_writers: None,
            prefetching: None,
            prefetched: 0,
            used: 0,
            wasted: 0,
        };
        Sim {
            p,
            rng: Rng::new(seed.wrapping_mul(31).wrapping_add(7)),
            nodes: (0..p.nodes).map(node).collect(),
            machines: (0..p.nodes).map(|n| Machine::new(Rank(n as u32))).collect(),
            homes: vec![[0; PAGE_BYTES]; p.pages],
            dir: vec![[0; 2]; p.pages],
            registered: HashSet::new(),
            busy: Busy::default(),
            chans: vec![VecDeque::new(); p.nodes * p.nodes],
            barrier: 0,
            trace: std::env::var_os("DSM_SIM_TRACE").is_some(),
        }
    }

    fn home(&self, n: usize, page: usize) -> Home {
        Home::here_if(self.p.home[page] == n)
    }

    fn post(&mut self, n: usize, to: usize, msg: Msg) {
        self.nodes[n].outstanding += 1;
        let chan = n * self.p.nodes + to;
        if self.chans[chan].is_empty() {
            self.busy.insert(chan);
        }
        self.chans[chan].push_back((n, msg));
    }

    /// Runs the program to its end; `Err` says what went wrong.
    fn run(&mut self) -> Result<(), String> {
        for _ in 0..MAX_EVENTS {
            let ready: Vec<usize> = (0..self.p.nodes)
                .filter(|&n| {
                    let node = &self.nodes[n];
                    node.outstanding == 0
                        && !node.at_barrier
                        && (node.then.is_some() || node.pc < self.p.ops[n].len())
                })
                .collect();
            if ready.is_empty() && self.busy.is_empty() {
                return if self.nodes.iter().any(|n| n.at_barrier || n.then.is_some()) {
                    Err("stuck: nodes blocked with nothing in flight".into())
                } else {
                    self.check_counts()
                };
            }
            let pick = self.rng.below(ready.len() + self.busy.len());
            if pick < ready.len() {
                self.advance(ready[pick])?;
            } else {
                self.deliver(self.busy.at(pick - ready.len()))?;
            }
        }
        Err(format!("never settled in {MAX_EVENTS} events"))
    }

    fn check_counts(&self) -> Result<(), String> {
        for (n, node) in self.nodes.iter().enumerate() {
            let untouched = node.st.iter().filter(|s| s.has(PREFETCHED)).count() as u64;
            if node.used + node.wasted + untouched != node.prefetched {
                return Err(format!(
                    "node {n}: prefetched {} != used {} + wasted {} + untouched {untouched}",
                    node.prefetched, node.used, node.wasted
                ));
            }
        }
        Ok(())
    }

    /// Executes one remote operation at its target.
    fn deliver(&mut self, chan: usize) -> Result<(), String> {
        let to = chan % self.p.nodes;
        let Some((from, msg)) = self.chans[chan].pop_front() else {
            return Ok(());
        };
        if self.chans[chan].is_empty() {
            self.busy.remove(chan);
        }
        if self.trace {
            eprintln!("deliver {from} -> {to}: {msg:?}");
        }
        match msg {
            Msg::Register {
                page,
                writers,
                add,
                answer,
            } => {
                // Each node adds itself once per word (the coarse count depends on it).
                if !self.registered.insert((page, writers, from)) {
                    return Err(format!("node {from} registered twice on page {page}"));
                }
                let w = &mut self.dir[page][writers as usize];
                let old = *w;
                *w = old.wrapping_add(add);
                if answer == Answer::Main && writers {
                    self.nodes[from].old_writers = Some(NodeSet::from_word(old));
                }
            }
            Msg::ReadEntry { page, answer } => {
                let [r, w] = self.dir[page];
                self.nodes[from].entry[(answer == Answer::Prefetch) as usize] =
                    Some(DirEntry::from_words(r, w));
            }
            Msg::Fetch { page } => self.nodes[from].copy[page] = self.homes[page],
            Msg::Diff { page, runs } => {
                for (off, bytes) in runs {
                    self.homes[page][off..off + bytes.len()].copy_from_slice(&bytes);
                }
            }
            Msg::Notify { page } => {
                let node = &mut self.nodes[to];
                let slot = (node.tail % self.p.log_cap as u64) as usize;
                node.log[slot] = page as u64 + 1;
                node.tail += 1;
            }
        }
        self.nodes[from].outstanding -= 1;
        Ok(())
    }

    /// Lets node `n` take its next step.
    fn advance(&mut self, n: usize) -> Result<(), String> {
        // A prefetched run's data is in (nothing is outstanding): install it before anything
        // else touches its page (the runtime's page lock makes a thread that needs it do so).
        self.install(n);
        match self.nodes[n].then.take() {
            Some(Then::Answer { page, step, write }) => return self.answer(n, page, step, write),
            Some(Then::Arrive) => return self.arrive(n),
            Some(Then::Retry) => {}
            None => {}
        }
        let pc = self.nodes[n].pc;
        match self.p.ops[n][pc] {
            Op::Barrier => self.release(n),
            Op::Read {
                page,
                word: w,
                expect,
            } => {
                if self.nodes[n].view[page] == View::None {
                    return self.fault(n, page, false);
                }
                let got = if self.p.home[page] == n {
                    word(&self.homes[page], w)
                } else {
                    word(&self.nodes[n].copy[page], w)
                };
                if got != expect {
                    return Err(format!(
                        "node {n} op {pc}: read page {page} word {w}: {got}, expected {expect}"
                    ));
                }
                self.nodes[n].pc += 1;
                Ok(())
            }
            Op::Write {
                page,
                word: w,
                value,
            } => {
                if self.nodes[n].view[page] != View::ReadWrite {
                    return self.fault(n, page, true);
                }
                let target = if self.p.home[page] == n {
                    &mut self.homes[page]
                } else {
                    &mut self.nodes[n].copy[page]
                };
                target[w * 8..w * 8 + 8].copy_from_slice(&value.to_le_bytes());
                self.nodes[n].pc += 1;
                Ok(())
            }
        }
    }

    fn fault(&mut self, n: usize, page: usize, write: bool) -> Result<(), String> {
        let home = self.home(n, page);
        let step = self.machines[n].step(self.nodes[n].st[page], Input::Fault { write, home });
        let after = match step.wait {
            Some(_) => After::Answer { write },
            None => After::Retry,
        };
        self.actions(n, page, step, 0, after)
    }

    /// Takes `step`'s actions from index `from`; blocks where the executor would wait.
    fn actions(
        &mut self,
        n: usize,
        page: usize,
        step: Step,
        from: usize,
        after: After,
    ) -> Result<(), String> {
        if self.trace && from == 0 {
            eprintln!(
                "node {n} page {page}: {:?} {:?} -> {:?}",
                step.row, step.actions, step.next
            );
        }
        let (home, manager) = (self.p.home[page], self.p.manager[page]);
        let me = NodeSet::addend(Rank(n as u32)).map_err(|e| e.to_string())?;
        let list = step.actions.as_slice();
        for &a in list.iter().skip(from) {
            let node = &mut self.nodes[n];
            match a {
                Action::RegisterReader | Action::RegisterWriter => {
                    let writers = a == Action::RegisterWriter;
                    let answer = Answer::Main;
                    self.post(
                        n,
                        manager,
                        Msg::Register {
                            page,
                            writers,
                            add: me,
                            answer,
                        },
                    );
                }
                Action::ReadEntry => {
                    let answer = Answer::Main;
                    self.post(n, manager, Msg::ReadEntry { page, answer });
                }
                Action::FetchPage => self.post(n, home, Msg::Fetch { page }),
                Action::PrefetchAfter | Action::PrefetchAhead => self.prefetch(n, page + 1),
                // As the runtime does: kept, and delivered with the next release.
                Action::Notify(set) => node.notices.push((page, set)),
                Action::TrackSharer => {
                    node.sharers.insert(page);
                }
                Action::KeepTwin => {
                    node.twins.insert(page, node.copy[page]);
                }
                Action::AddDirty => node.dirty.push(page),
                Action::Populate => {}
                Action::Map { from: v, to } => {
                    if node.view[page] != v {
                        return Err(format!(
                            "node {n} page {page}: {a:?} but the view is {:?}",
                            node.view[page]
                        ));
                    }
                    node.view[page] = to;
                }
                Action::Remap(v) => node.view[page] = v,
                Action::WriteProtect => node.view[page] = View::Read,
                Action::Unmap => node.view[page] = View::None,
                Action::WriteDiff => {
                    let now = node.copy[page];
                    let runs = match node.twins.remove(&page) {
                        Some(t) => diff(&now, &t)
                            .into_iter()
                            .map(|r| (r.offset, now[r.offset..r.offset + r.len].to_vec()))
                            .collect(),
                        None => vec![(0, now.to_vec())],
                    };
                    self.post(n, home, Msg::Diff { page, runs });
                }
                Action::CountUsed => node.used += 1,
                Action::CountWasted => node.wasted += 1,
                Action::Cached => {
                    if !node.cached.contains(&page) {
                        node.cached.push_back(page);
                    }
                }
            }
        }
        let node = &mut self.nodes[n];
        node.st[page] = step.next;
        if step.wait.is_none() && node.view[page] != View::of(step.next) {
            return Err(format!(
                "node {n} page {page}: after {:?} the view is {:?}, the state {:?}",
                step.row, node.view[page], step.next
            ));
        }
        match after {
            After::Answer { write } => {
                // `advance` feeds the answer once the operations are done.
                self.nodes[n].then = Some(Then::Answer { page, step, write });
                Ok(())
            }
            After::Refault { write } => {
                let home = self.home(n, page);
                let next = self.machines[n].step(step.next, Input::Fault { write, home });
                let after = if next.wait.is_some() {
                    After::Answer { write }
                } else {
                    After::Retry
                };
                self.actions(n, page, next, 0, after)
            }
            After::Retry => self.evict(n, page),
            After::Nothing => Ok(()),
        }
    }

    /// Feeds the answer a step waited for (its operations are all done).
    fn answer(&mut self, n: usize, page: usize, step: Step, write: bool) -> Result<(), String> {
        self.install(n);
        let node = &mut self.nodes[n];
        let entry = node.entry[0].take().unwrap_or_default();
        let old_writers = node.old_writers.take();
        let home = self.home(n, page);
        let (input, after) = match step.wait {
            Some(Wait::Fetch) => (
                Input::Fetched {
                    write,
                    entry,
                    old_writers,
                },
                After::Retry,
            ),
            _ => (
                Input::WriterRegistered {
                    entry,
                    old_writers: old_writers.unwrap_or_default(),
                    home,
                },
                After::Refault { write },
            ),
        };
        let next = self.machines[n].step(self.nodes[n].st[page], input);
        self.actions(n, page, next, 0, after)
    }

    /// Posts the prefetch of `page` when it is a remote page this node does not hold.
    fn prefetch(&mut self, n: usize, page: usize) {
        let p = self.p;
        if !p.prefetch
            || page >= p.pages
            || p.home[page] == n
            || self.nodes[n].prefetching.is_some()
        {
            return;
        }
        let st = self.nodes[n].st[page];
        if st.cache() != Cache::Invalid {
            return;
        }
        self.nodes[n].prefetching = Some(page);
        if !st.has(REG_READER) {
            let add = NodeSet::addend(Rank(n as u32)).expect("small job");
            let answer = Answer::Prefetch;
            self.post(
                n,
                p.manager[page],
                Msg::Register {
                    page,
                    writers: false,
                    add,
                    answer,
                },
            );
        }
        self.post(
            n,
            p.manager[page],
            Msg::ReadEntry {
                page,
                answer: Answer::Prefetch,
            },
        );
        self.post(n, p.home[page], Msg::Fetch { page });
    }

    /// Installs the page prefetched (row R2), once its operations are done.
    fn install(&mut self, n: usize) {
        let Some(page) = self.nodes[n].prefetching.take() else {
            return;
        };
        let entry = self.nodes[n].entry[1].take().unwrap_or_default();
        let input = Input::Installed {
            writers: entry.writers,
            first_of_run: true,
        };
        let step = self.machines[n].step(self.nodes[n].st[page], input);
        let node = &mut self.nodes[n];
        if step.actions.contains(Action::TrackSharer) {
            node.sharers.insert(page);
        }
        node.st[page] = step.next;
        node.prefetched += 1;
        if !node.cached.contains(&page) {
            node.cached.push_back(page);
        }
    }

    /// After a fault: evicts the oldest copies (not `page`) while over the bound (row E1).
    fn evict(&mut self, n: usize, page: usize) -> Result<(), String> {
        let cap = self.p.cache_cap;
        let node = &mut self.nodes[n];
        let victims: Vec<usize> = node
            .cached
            .iter()
            .copied()
            .filter(|&q| q != page)
            .take(node.cached.len().saturating_sub(cap))
            .collect();
        node.cached.retain(|q| !victims.contains(q));
        self.close(n, &victims, Input::Invalidate(Why::Evict))?;
        self.nodes[n].then = Some(Then::Retry);
        Ok(())
    }

    /// Takes a closing input (release, invalidation) for `pages`; their diffs are in flight.
    fn close(&mut self, n: usize, pages: &[usize], input: Input) -> Result<(), String> {
        for &q in pages {
            if self.p.home[q] == n {
                continue; // Row H3.
            }
            let step = self.machines[n].step(self.nodes[n].st[q], input);
            self.actions(n, q, step, 0, After::Nothing)?;
        }
        Ok(())
    }

    fn release(&mut self, n: usize) -> Result<(), String> {
        for (page, set) in std::mem::take(&mut self.nodes[n].notices) {
            for t in set.ranks(self.p.nodes).filter(|t| t.index() != n) {
                self.post(n, t.index(), Msg::Notify { page });
            }
        }
        let dirty = std::mem::take(&mut self.nodes[n].dirty);
        self.close(n, &dirty, Input::Release)?;
        self.nodes[n].then = Some(Then::Arrive);
        Ok(())
    }

    fn arrive(&mut self, n: usize) -> Result<(), String> {
        self.nodes[n].at_barrier = true;
        self.barrier += 1;
        if self.barrier < self.p.nodes {
            return Ok(());
        }
        self.barrier = 0;
        for m in 0..self.p.nodes {
            self.nodes[m].at_barrier = false;
            self.nodes[m].pc += 1;
            self.acquire(m)?;
        }
        Ok(())
    }

    /// Drains the log (row N1, or A2 when it overflowed) and invalidates (A1).
    fn acquire(&mut self, n: usize) -> Result<(), String> {
        self.install(n);
        let (tail, consumed) = (self.nodes[n].tail, self.nodes[n].consumed);
        let overflow = tail - consumed > self.p.log_cap as u64;
        if !overflow {
            for i in consumed..tail {
                let page = self.nodes[n].log[(i % self.p.log_cap as u64) as usize] as usize - 1;
                let home = self.home(n, page);
                let step = self.machines[n].step(self.nodes[n].st[page], Input::Notified { home });
                if step.actions.contains(Action::TrackSharer) {
                    self.nodes[n].sharers.insert(page);
                }
                self.nodes[n].st[page] = step.next;
            }
        }
        self.nodes[n].consumed = tail;
        let (victims, why) = if overflow {
            self.nodes[n].sharers.clear();
            ((0..self.p.pages).collect::<Vec<_>>(), Why::Overflow)
        } else {
            (
                std::mem::take(&mut self.nodes[n].sharers)
                    .into_iter()
                    .collect(),
                Why::Acquire,
            )
        };
        self.close(n, &victims, Input::Invalidate(why))
    }
}

/// A set of channel numbers that can be picked from by index: insertion, removal and lookup in
/// constant time.
#[derive(Debug, Default)]
struct Busy {
    list: Vec<usize>,
    at: HashMap<usize, usize>,
}

impl Busy {
    fn insert(&mut self, c: usize) {
        if !self.at.contains_key(&c) {
            self.at.insert(c, self.list.len());
            self.list.push(c);
        }
    }
    fn remove(&mut self, c: usize) {
        if let Some(i) = self.at.remove(&c) {
            self.list.swap_remove(i);
            if let Some(&moved) = self.list.get(i) {
                self.at.insert(moved, i);
            }
        }
    }
    fn at(&self, i: usize) -> usize {
        self.list[i]
    }
    fn len(&self) -> usize {
        self.list.len()
    }
    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Runs `count` random programs from `seed`; the first failure, with its seed and program.
pub fn run_programs(seed: u64, count: u64) -> Result<(), String> {
    for s in seed..seed + count {
        let program = program::generate(&mut Rng::new(s));
        if let Err(e) = Sim::new(&program, s).run() {
            return Err(format!("seed {s}: {e}\n{program:#?}"));
        }
    }
    Ok(())
}

/// Runs `count` random programs of `nodes` nodes from `seed` (pages shared past the exact part
/// of the directory's node sets); the first failure, with its seed.
pub fn run_wide_programs(seed: u64, count: u64, nodes: usize) -> Result<(), String> {
    for s in seed..seed + count {
        let program = program::generate_wide(&mut Rng::new(s), nodes, 3);
        if let Err(e) = Sim::new(&program, s).run() {
            return Err(format!("seed {s} ({nodes} nodes): {e}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, default: u64) -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    #[test]
    fn random_race_free_programs_read_what_the_oracle_says() {
        let (seed, count) = (env("DSM_SIM_SEED", 0), env("DSM_SIM_PROGRAMS", 3000));
        if let Err(e) = run_programs(seed, count) {
            panic!("{e}");
        }
    }

    /// Jobs of 1,024 nodes (`DSM_SIM_WIDE_NODES`; 4,096 in a longer run outside CI): every
    /// directory word counts most of its members instead of naming them.
    #[test]
    fn race_free_programs_on_a_thousand_nodes_read_what_the_oracle_says() {
        let nodes = env("DSM_SIM_WIDE_NODES", 1024) as usize;
        let (seed, count) = (env("DSM_SIM_SEED", 0), env("DSM_SIM_WIDE_PROGRAMS", 12));
        if let Err(e) = run_wide_programs(seed, count, nodes) {
            panic!("{e}");
        }
    }
}
