//! Random data-race-free programs for the machine-only simulation, each with its sequential
//! oracle: the value every read must return.

/// Words of a simulated page.
pub const WORDS: usize = 4;

/// A small deterministic generator (SplitMix64): a program is a function of its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
}

/// One operation of a node's program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Load a word; the oracle says what it must hold.
    Read {
        /// The page.
        page: usize,
        /// The word in the page.
        word: usize,
        /// The value a sequentially consistent execution returns.
        expect: u64,
    },
    /// Store a word.
    Write {
        /// The page.
        page: usize,
        /// The word in the page.
        word: usize,
        /// The value stored.
        value: u64,
    },
    /// Release, barrier, acquire.
    Barrier,
}

/// A job: its shape, where each page lives, and what each node runs.
#[derive(Debug, Clone)]
pub struct Program {
    /// Nodes of the job.
    pub nodes: usize,
    /// Pages of global memory.
    pub pages: usize,
    /// The home of each page.
    pub home: Vec<usize>,
    /// The manager (directory) of each page.
    pub manager: Vec<usize>,
    /// Remote copies a node may cache before it evicts.
    pub cache_cap: usize,
    /// Slots of each node's notification log (small: overflows happen).
    pub log_cap: usize,
    /// Whether read faults prefetch the next page.
    pub prefetch: bool,
    /// Each node's operations.
    pub ops: Vec<Vec<Op>>,
}

/// A random data-race-free program: in each epoch (between barriers) every word is written by
/// at most one node, and no node reads a word another node writes in that epoch. The last
/// epoch reads every word on every node.
pub fn generate(rng: &mut Rng) -> Program {
    let nodes = 2 + rng.below(3);
    generate_with(rng, nodes, 7)
}

/// A random data-race-free program of `nodes` nodes (hundreds or thousands: every page is
/// shared by more nodes than a directory word names exactly), each making fewer than `ops`
/// accesses per epoch.
pub fn generate_wide(rng: &mut Rng, nodes: usize, ops: usize) -> Program {
    generate_with(rng, nodes, ops)
}

fn generate_with(rng: &mut Rng, nodes: usize, ops_per_epoch: usize) -> Program {
    let pages = 1 + rng.below(4);
    let epochs = 1 + rng.below(4);
    let home = (0..pages).map(|_| rng.below(nodes)).collect();
    let manager = (0..pages).map(|_| rng.below(nodes)).collect();
    let mut ops = vec![Vec::new(); nodes];
    // Memory as of the last barrier.
    let mut mem = vec![[0u64; WORDS]; pages];
    let mut serial = 1u64;
    for _ in 0..epochs {
        // The single writer of each word in this epoch, if any.
        let owner: Vec<[Option<usize>; WORDS]> = (0..pages)
            .map(|_| std::array::from_fn(|_| rng.chance(2, 3).then(|| rng.below(nodes))))
            .collect();
        let mut next = mem.clone();
        for (n, list) in ops.iter_mut().enumerate() {
            // What this node sees: its own stores of this epoch over the memory of the last.
            let mut mine = mem.clone();
            for _ in 0..rng.below(ops_per_epoch) {
                let (page, word) = (rng.below(pages), rng.below(WORDS));
                match owner[page][word] {
                    Some(o) if o == n && rng.chance(3, 5) => {
                        let value = serial;
                        serial += 1;
                        mine[page][word] = value;
                        next[page][word] = value;
                        list.push(Op::Write { page, word, value });
                    }
                    Some(o) if o != n => {}
                    _ => list.push(Op::Read {
                        page,
                        word,
                        expect: mine[page][word],
                    }),
                }
            }
        }
        mem = next;
        for list in &mut ops {
            list.push(Op::Barrier);
        }
    }
    for list in &mut ops {
        for (page, words) in mem.iter().enumerate() {
            for (word, &expect) in words.iter().enumerate() {
                list.push(Op::Read { page, word, expect });
            }
        }
    }
    Program {
        nodes,
        pages,
        home,
        manager,
        cache_cap: 1 + rng.below(pages + 1),
        log_cap: 1 + rng.below(4),
        prefetch: rng.chance(1, 2),
        ops,
    }
}
