//! The OSU micro-benchmarks, over `mpi-compat`: the same loops as OSU's programs (version 7),
//! printed with OSU's headings and column layout, followed by machine-readable `RESULT` lines.
//! Each `osu_*` binary of this crate calls [`main`] with its [`Bench`]. They need two ranks
//! (`osu_barrier`, `osu_allreduce` and `osu_bcast` take any number):
//! `dsmrun -n 2 target/release/osu_latency`.
//!
//! Options, as OSU spells them: `-m MAX` (largest message, default 1 MiB), `-i N` (iterations
//! for small messages; large ones use a tenth), `-x N` (warm-up iterations), `--quick` (a few
//! iterations up to 4 KiB: checks the program works).
//!
//! One-sided programs use `MPI_Win_allocate` and, like OSU's defaults, passive-target
//! synchronisation: rank 0 holds a shared lock on rank 1 for the whole run and ends every
//! operation (latency) or every window of 64 operations (bandwidth) with `MPI_Win_flush`.

use std::process::ExitCode;

use mpi_compat::{wait_all, Communicator, LockType, Op, Window};

/// Which benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bench {
    /// `osu_latency`: ping-pong, half the round trip.
    Latency,
    /// `osu_bw`: 64 non-blocking sends per window, then an acknowledgement.
    Bandwidth,
    /// `osu_bibw`: both ranks send 64 messages per window to each other.
    BiBandwidth,
    /// `osu_put_latency`: `MPI_Put` + `MPI_Win_flush`.
    PutLatency,
    /// `osu_get_latency`: `MPI_Get` + `MPI_Win_flush`.
    GetLatency,
    /// `osu_put_bw`: 64 puts, then a flush.
    PutBandwidth,
    /// `osu_get_bw`: 64 gets, then a flush.
    GetBandwidth,
    /// `osu_acc_latency`: `MPI_Accumulate` of `MPI_CHAR` with `MPI_SUM` + flush.
    AccLatency,
    /// `osu_fop_latency`: `MPI_Fetch_and_op` of one `MPI_LONG_LONG` with `MPI_SUM` + flush.
    FopLatency,
    /// `osu_cas_latency`: `MPI_Compare_and_swap` of one `MPI_LONG_LONG` + flush.
    CasLatency,
    /// `osu_barrier`.
    Barrier,
    /// `osu_allreduce`: `MPI_SUM` of `MPI_FLOAT`s.
    AllReduce,
    /// `osu_bcast`.
    Broadcast,
}

impl Bench {
    /// The OSU program name.
    pub fn name(self) -> &'static str {
        match self {
            Bench::Latency => "osu_latency",
            Bench::Bandwidth => "osu_bw",
            Bench::BiBandwidth => "osu_bibw",
            Bench::PutLatency => "osu_put_latency",
            Bench::GetLatency => "osu_get_latency",
            Bench::PutBandwidth => "osu_put_bw",
            Bench::GetBandwidth => "osu_get_bw",
            Bench::AccLatency => "osu_acc_latency",
            Bench::FopLatency => "osu_fop_latency",
            Bench::CasLatency => "osu_cas_latency",
            Bench::Barrier => "osu_barrier",
            Bench::AllReduce => "osu_allreduce",
            Bench::Broadcast => "osu_bcast",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Bench::Latency => "OSU MPI Latency Test",
            Bench::Bandwidth => "OSU MPI Bandwidth Test",
            Bench::BiBandwidth => "OSU MPI Bi-Directional Bandwidth Test",
            Bench::PutLatency => "OSU MPI_Put Latency Test",
            Bench::GetLatency => "OSU MPI_Get latency Test",
            Bench::PutBandwidth => "OSU MPI_Put Bandwidth Test",
            Bench::GetBandwidth => "OSU MPI_Get Bandwidth Test",
            Bench::AccLatency => "OSU MPI_Accumulate latency Test",
            Bench::FopLatency => "OSU MPI_Fetch_and_op latency Test",
            Bench::CasLatency => "OSU MPI_Compare_and_swap latency Test",
            Bench::Barrier => "OSU MPI Barrier Latency Test",
            Bench::AllReduce => "OSU MPI Allreduce Latency Test",
            Bench::Broadcast => "OSU MPI Broadcast Latency Test",
        }
    }

    fn bandwidth(self) -> bool {
        matches!(
            self,
            Bench::Bandwidth | Bench::BiBandwidth | Bench::PutBandwidth | Bench::GetBandwidth
        )
    }

    fn one_sided(self) -> bool {
        matches!(
            self,
            Bench::PutLatency
                | Bench::GetLatency
                | Bench::PutBandwidth
                | Bench::GetBandwidth
                | Bench::AccLatency
                | Bench::FopLatency
                | Bench::CasLatency
        )
    }

    fn collective(self) -> bool {
        matches!(self, Bench::Barrier | Bench::AllReduce | Bench::Broadcast)
    }
}

/// Run settings.
#[derive(Debug, Clone, Copy)]
struct Plan {
    max: usize,
    iters: usize,
    skip: usize,
}

const WINDOW: usize = 64;
const LARGE: usize = 8192;

fn parse(args: &[String]) -> Result<Plan, String> {
    let mut plan = Plan {
        max: 1 << 20,
        iters: 2000,
        skip: 200,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |what: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{what} needs a number"))
        };
        match a.as_str() {
            "-m" => plan.max = num("-m")?.clamp(1, 64 << 20),
            "-i" => plan.iters = num("-i")?.max(1),
            "-x" => plan.skip = num("-x")?,
            "--quick" => {
                plan = Plan {
                    max: 4096,
                    iters: 20,
                    skip: 2,
                }
            }
            other => {
                return Err(format!(
                    "unknown option {other:?} (use -m, -i, -x, --quick)"
                ))
            }
        }
    }
    Ok(plan)
}

fn sizes(bench: Bench, max: usize) -> Vec<usize> {
    match bench {
        Bench::FopLatency | Bench::CasLatency => vec![8],
        Bench::Barrier => vec![0],
        Bench::AllReduce => std::iter::successors(Some(4usize), |s| Some(s * 2))
            .take_while(|&s| s <= max)
            .collect(),
        _ => std::iter::successors(Some(1usize), |s| Some(s * 2))
            .take_while(|&s| s <= max)
            .collect(),
    }
}

/// Runs `bench` as an OSU program: parses the command line, prints the table on rank 0.
pub fn main(bench: Bench) -> ExitCode {
    dsm_core::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = match parse(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", bench.name());
            return ExitCode::from(2);
        }
    };
    match run(bench, plan) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", bench.name());
            ExitCode::from(1)
        }
    }
}

fn run(bench: Bench, plan: Plan) -> mpi_compat::Result<()> {
    let universe = mpi_compat::initialize()?;
    let world = universe.world();
    let n = world.size();
    if !bench.collective() && n != 2 {
        if world.rank() == 0 {
            eprintln!("{}: this test requires exactly two processes", bench.name());
        }
        drop(world);
        universe.finalize()?;
        return Err(mpi_compat::Error::InvalidArgument(
            "this test requires exactly two processes".into(),
        ));
    }
    let me = world.rank();
    let transport = format!(
        "{}",
        transport::Transport::capabilities(universe.dsm().node().transport()).backend
    );
    if me == 0 {
        println!("# {} (dsm mpi-compat)", bench.title());
        if bench.one_sided() {
            println!("# Window creation: MPI_Win_allocate");
            println!("# Synchronization: MPI_Win_flush");
        }
        println!(
            "# transport: {transport}, ranks: {n}, commit: {}",
            crate::commit()
        );
        match bench {
            Bench::Barrier => println!("# Avg Latency(us)"),
            _ if bench.collective() => println!("# Size       Avg Latency(us)"),
            _ if bench.bandwidth() => println!("# Size      Bandwidth (MB/s)"),
            _ => println!("# Size          Latency (us)"),
        }
    }
    let max = plan.max;
    let win = if bench.one_sided() {
        let copies = if bench.bandwidth() { WINDOW } else { 1 };
        Some(Window::allocate(&world, max.max(8) * copies, 1)?)
    } else {
        None
    };
    let mut results = Vec::new();
    for size in sizes(bench, max) {
        let (iters, skip) = if size > LARGE {
            ((plan.iters / 10).max(1), (plan.skip / 10).max(1))
        } else {
            (plan.iters, plan.skip)
        };
        world.barrier()?;
        let value = match &win {
            Some(w) => one_sided(bench, &world, w, size, iters, skip)?,
            None if bench.collective() => collective(bench, &world, size, iters, skip)?,
            None => two_sided(bench, &world, size, iters, skip)?,
        };
        if me == 0 {
            if bench == Bench::Barrier {
                println!("{value:>18.2}");
            } else {
                println!("{size:<10}{value:>18.2}");
            }
        }
        results.push((size, value));
    }
    if me == 0 {
        for (size, value) in results {
            println!(
                "RESULT {}",
                serde_json::json!({
                    "bench": bench.name(),
                    "impl": "dsm",
                    "transport": transport,
                    "ranks": n,
                    "size": size,
                    "value": value,
                    "unit": if bench.bandwidth() { "MB/s" } else { "us" },
                })
            );
        }
    }
    if let Some(w) = win {
        w.free()?;
    }
    drop(world);
    universe.finalize()
}

/// Microseconds per iteration, or MB/s for bandwidth.
fn two_sided(
    bench: Bench,
    w: &Communicator,
    size: usize,
    iters: usize,
    skip: usize,
) -> mpi_compat::Result<f64> {
    let me = w.rank();
    let peer = 1 - me;
    let send = vec![b'a'; size];
    let mut recv = vec![0u8; size];
    let mut start = mpi_compat::time();
    match bench {
        Bench::Latency => {
            for i in 0..iters + skip {
                if i == skip {
                    start = mpi_compat::time();
                }
                if me == 0 {
                    w.send(&send, peer, 1)?;
                    w.recv(&mut recv, peer, 1)?;
                } else {
                    w.recv(&mut recv, peer, 1)?;
                    w.send(&send, peer, 1)?;
                }
            }
            Ok((mpi_compat::time() - start) * 1e6 / (2.0 * iters as f64))
        }
        Bench::Bandwidth | Bench::BiBandwidth => {
            let mut bufs = vec![vec![0u8; size]; WINDOW];
            let mut ack = [0u8; 4];
            for i in 0..iters + skip {
                if i == skip {
                    start = mpi_compat::time();
                }
                let sending = me == 0 || bench == Bench::BiBandwidth;
                let receiving = me == 1 || bench == Bench::BiBandwidth;
                let mut reqs = Vec::with_capacity(2 * WINDOW);
                if receiving {
                    for b in bufs.iter_mut() {
                        reqs.push(w.irecv(b, peer, 100)?);
                    }
                }
                if sending {
                    for _ in 0..WINDOW {
                        reqs.push(w.isend(&send, peer, 100)?);
                    }
                }
                wait_all(&mut reqs)?;
                drop(reqs);
                if bench == Bench::Bandwidth {
                    if me == 0 {
                        w.recv(&mut ack, peer, 101)?;
                    } else {
                        w.send(&ack, peer, 101)?;
                    }
                }
            }
            let t = mpi_compat::time() - start;
            let factor = if bench == Bench::BiBandwidth {
                2.0
            } else {
                1.0
            };
            Ok(factor * (size * WINDOW * iters) as f64 / 1e6 / t)
        }
        _ => unreachable_bench(bench),
    }
}

fn unreachable_bench(bench: Bench) -> mpi_compat::Result<f64> {
    Err(mpi_compat::Error::InvalidArgument(format!(
        "{} is not measured here",
        bench.name()
    )))
}

fn one_sided(
    bench: Bench,
    w: &Communicator,
    win: &Window,
    size: usize,
    iters: usize,
    skip: usize,
) -> mpi_compat::Result<f64> {
    let me = w.rank();
    let mut value = 0.0;
    if me == 0 {
        let send = vec![b'a'; size];
        let mut recv = vec![0u8; size];
        win.lock(LockType::Shared, 1, 0)?;
        let mut start = mpi_compat::time();
        for i in 0..iters + skip {
            if i == skip {
                start = mpi_compat::time();
            }
            match bench {
                Bench::PutLatency => win.put(&send, 1, 0)?,
                Bench::GetLatency => win.get(&mut recv, 1, 0)?,
                Bench::AccLatency => win.accumulate(&send, 1, 0, Op::Sum)?,
                Bench::FopLatency => drop(win.fetch_and_op(1i64, 1, 0, Op::Sum)?),
                Bench::CasLatency => drop(win.compare_and_swap(i as i64, 0i64, 1, 0)?),
                Bench::PutBandwidth => {
                    for k in 0..WINDOW {
                        win.put(&send, 1, k * size)?;
                    }
                }
                Bench::GetBandwidth => {
                    for k in 0..WINDOW {
                        win.get(&mut recv, 1, k * size)?;
                    }
                }
                _ => return unreachable_bench(bench),
            }
            win.flush(1)?;
        }
        let t = mpi_compat::time() - start;
        win.unlock(1)?;
        value = if bench.bandwidth() {
            (size * WINDOW * iters) as f64 / 1e6 / t
        } else {
            t * 1e6 / iters as f64
        };
    }
    w.barrier()?;
    Ok(value)
}

fn collective(
    bench: Bench,
    w: &Communicator,
    size: usize,
    iters: usize,
    skip: usize,
) -> mpi_compat::Result<f64> {
    let floats = (size / 4).max(1);
    let send = vec![1.0f32; floats];
    let mut recv = vec![0.0f32; floats];
    let mut buf = vec![0u8; size];
    let mut total = 0.0;
    for i in 0..iters + skip {
        let start = mpi_compat::time();
        match bench {
            Bench::Barrier => w.barrier()?,
            Bench::AllReduce => w.all_reduce(&send, &mut recv, Op::Sum)?,
            Bench::Broadcast => w.broadcast(&mut buf, 0)?,
            _ => return unreachable_bench(bench),
        }
        if i >= skip {
            total += mpi_compat::time() - start;
        }
        // As OSU: a barrier between iterations, outside the timed part, so that a root
        // cannot run ahead of the others.
        if bench != Bench::Barrier {
            w.barrier()?;
        }
    }
    // OSU reports the average over ranks of each rank's average.
    let mine = [total * 1e6 / iters as f64];
    let mut sum = [0.0f64];
    w.all_reduce(&mine, &mut sum, Op::Sum)?;
    w.barrier()?;
    Ok(sum[0] / f64::from(w.size()))
}
