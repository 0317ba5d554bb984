//! The main job until the shared memory lands: every node writes into every other node's
//! registered memory over the transport, checks what it received, and reports latency and
//! bandwidth. Run it with `dsmrun -n 4 dsm-demo` (what `scripts/run.sh` does).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use dsm_core::{collective, Node};
use transport::{wait_all, LocalSlice, Op, Rank, Region, RegionDesc, Transport};

const SLOT: usize = 1 << 20;

fn pattern(from: usize, to: usize, i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 7) as u8
        ^ (from as u8).wrapping_mul(17)
        ^ (to as u8).wrapping_mul(101)
}

fn run(node: &Node) -> dsm_core::Result<()> {
    let t = node.transport();
    let (me, n) = (node.rank().index(), node.nodes());
    let say = |msg: String| {
        if me == 0 {
            println!("{msg}");
        }
    };
    say(format!(
        "dsm-demo: {n} nodes over {}, {} KiB per pair",
        t.capabilities().backend,
        SLOT / 1024
    ));

    // Every node exposes one slot per writer and learns everyone's descriptor.
    let home = Region::allocate(n * SLOT)?;
    let desc = t.register(&home)?;
    let descs: Vec<RegionDesc> = collective::all_gather(t, &desc.to_bytes(), None)?
        .iter()
        .map(|b| RegionDesc::from_bytes(b))
        .collect::<Result<_, _>>()?;

    // 1. Write my pattern into my slot on every node, all at once, then check what I received.
    let out = Region::allocate(n * SLOT)?;
    t.register(&out)?;
    for (to, _) in descs.iter().enumerate() {
        let bytes: Vec<u8> = (0..SLOT).map(|i| pattern(me, to, i)).collect();
        out.write_at(to * SLOT, &bytes)?;
    }
    let start = Instant::now();
    let posted = descs
        .iter()
        .enumerate()
        .map(|(to, d)| {
            t.post(Op::Write {
                remote: d.slice((me * SLOT) as u64, SLOT)?,
                local: LocalSlice::new(&out, to * SLOT, SLOT)?,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    wait_all(&posted)?;
    let elapsed = start.elapsed();
    node.barrier()?;
    let mut got = vec![0u8; SLOT];
    for from in 0..n {
        home.read_at(from * SLOT, &mut got)?;
        if let Some(i) = (0..SLOT).find(|&i| got[i] != pattern(from, me, i)) {
            return Err(dsm_core::Error::Bootstrap(format!(
                "rank {me}: byte {i} written by rank {from} is wrong"
            )));
        }
    }
    println!(
        "rank {me}: wrote {} MiB to {n} nodes in {:.2} ms ({:.2} GB/s); all {n} slots verified",
        n,
        elapsed.as_secs_f64() * 1e3,
        (n * SLOT) as f64 / elapsed.as_secs_f64() / 1e9
    );
    node.barrier()?;

    // 2. Every node counts into one word on rank 0; the total must be exact.
    const ADDS: u64 = 1000;
    let counter = descs[0].word(0)?;
    if me == 0 {
        home.atomic_u64(0)?
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }
    node.barrier()?;
    let start = Instant::now();
    for _ in 0..ADDS {
        t.fetch_add(counter, 1)?;
    }
    let per_op = start.elapsed() / ADDS as u32;
    node.barrier()?;
    if me == 0 {
        let total = home
            .atomic_u64(0)?
            .load(std::sync::atomic::Ordering::SeqCst);
        if total != ADDS * n as u64 {
            return Err(dsm_core::Error::Bootstrap(format!(
                "counter is {total}, expected {}",
                ADDS * n as u64
            )));
        }
        println!("rank 0: {n} nodes x {ADDS} fetch_add on one word = {total} (exact)");
    }
    println!(
        "rank {me}: fetch_add {:.1} us per operation",
        per_op.as_secs_f64() * 1e6
    );

    // 3. Read latency from the next node.
    if n > 1 {
        let peer = descs[(me + 1) % n];
        let buf = Arc::clone(&out);
        for len in [8usize, 4096] {
            let src = peer.slice(0, len)?;
            let dst = LocalSlice::new(&buf, 0, len)?;
            let iters = 500u32;
            let start = Instant::now();
            for _ in 0..iters {
                t.read(src, dst.clone())?;
            }
            println!(
                "rank {me}: read {len} B from rank {}: {:.1} us",
                Rank(((me + 1) % n) as u32),
                (start.elapsed() / iters).as_secs_f64() * 1e6
            );
        }
    }
    node.barrier()?;
    say("dsm-demo: done, every check passed".into());
    Ok(())
}

fn main() -> ExitCode {
    let node = match Node::init() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("dsm-demo: cannot join the job: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = run(&node);
    let fin = node.finalize();
    match result.and(fin) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsm-demo: {e}");
            ExitCode::FAILURE
        }
    }
}
