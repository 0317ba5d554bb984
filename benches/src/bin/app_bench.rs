//! The application suite's driver (see `benches::apps`): one program of the suite, run on the
//! DSM (every node of the job, under `dsmrun`) or on threads of this process, with its time and,
//! with `--verify`, a check against the same program run serially (one thread, private memory).
//!
//! ```text
//! app_bench PROGRAM [--quick | --size S] [--verify] [--threads N]
//! PROGRAM: fft (S = m, 2^m points), lu (S = n), radix (S = keys), stencil (S = n), nbody (S = bodies)
//! ```
//!
//! Without `--threads` it joins the DSM job (`dsmrun -n N app_bench fft`). Rank 0 (thread 0)
//! prints one line and `RESULT {json}` with the program, mode (`dsm` or `threads`), the number
//! of nodes or threads, the size, the time of the parallel phase in ms, and whether it verified.
//! A failed check exits with status 1.

use std::process::ExitCode;

use benches::apps::{self, run_threads, Answer, DsmTeam, Outcome, Team};
use benches::commit;
use dsm_core::Dsm;
use transport::Transport;

/// A program of the suite: its name, default and quick sizes, tolerance against the serial run.
struct Program {
    name: &'static str,
    default: usize,
    quick: usize,
    tolerance: f64,
}

const PROGRAMS: [Program; 5] = [
    Program {
        name: "fft",
        default: apps::fft::DEFAULT,
        quick: apps::fft::QUICK,
        tolerance: 1e-9,
    },
    Program {
        name: "lu",
        default: apps::lu::DEFAULT,
        quick: apps::lu::QUICK,
        tolerance: 1e-9,
    },
    Program {
        name: "radix",
        default: apps::radix::DEFAULT,
        quick: apps::radix::QUICK,
        tolerance: 0.0,
    },
    Program {
        name: "stencil",
        default: apps::stencil::DEFAULT,
        quick: apps::stencil::QUICK,
        tolerance: 1e-9,
    },
    Program {
        name: "nbody",
        default: apps::nbody::DEFAULT,
        quick: apps::nbody::QUICK,
        tolerance: 1e-6,
    },
];

fn run<T: Team>(t: &T, name: &str, size: usize) -> Outcome {
    match name {
        "fft" => apps::fft::run(t, size),
        "lu" => apps::lu::run(t, size),
        "radix" => apps::radix::run(t, size),
        "stencil" => apps::stencil::run(t, size),
        "nbody" => apps::nbody::run(t, size),
        _ => unreachable!("checked by the caller"),
    }
}

struct Args {
    program: &'static Program,
    size: usize,
    verify: bool,
    threads: Option<usize>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let name = it.next().ok_or("no program")?;
    let program = PROGRAMS
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("unknown program {name:?}"))?;
    let mut a = Args {
        program,
        size: program.default,
        verify: false,
        threads: None,
    };
    let number = |v: Option<String>, what: &str| {
        v.and_then(|v| v.parse::<usize>().ok())
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("{what} needs a positive number"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.size = program.quick,
            "--size" => a.size = number(it.next(), "--size")?,
            "--verify" => a.verify = true,
            "--threads" => a.threads = Some(number(it.next(), "--threads")?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

/// Checks rank 0's answer against the serial run and prints the report; `Err` when it differs.
fn report(a: &Args, mode: &str, n: usize, transport: &str, out: &Outcome) -> Result<(), String> {
    let p = a.program;
    let verified = if a.verify {
        let serial = run_threads(1, |t| run(t, p.name, a.size));
        out.answer
            .check(&serial.answer, p.tolerance)
            .map_err(|e| format!("{} on {n} {mode}: {e}", p.name))?;
        true
    } else {
        false
    };
    let kind = match out.answer {
        Answer::Exact(_) => "exactly",
        Answer::Float(_) => "within tolerance",
    };
    let ms = out.time.as_secs_f64() * 1e3;
    println!(
        "app_bench: {} size {} on {n} {mode}: {ms:.1} ms{}",
        p.name,
        a.size,
        if verified {
            format!("; matches the serial run {kind}")
        } else {
            String::new()
        }
    );
    println!(
        "RESULT {}",
        serde_json::json!({
            "bench": "app",
            "program": p.name,
            "mode": mode,
            "n": n,
            "size": a.size,
            "ms": ms,
            "verified": verified,
            "transport": transport,
            "page_size": 4096,
            "commit": commit(),
        })
    );
    Ok(())
}

fn main() -> ExitCode {
    dsm_core::logging::init();
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("app_bench: {e}");
            eprintln!(
                "usage: app_bench fft|lu|radix|stencil|nbody [--quick | --size S] [--verify] [--threads N]"
            );
            return ExitCode::from(2);
        }
    };
    if let Some(threads) = a.threads {
        let out = run_threads(threads, |t| run(t, a.program.name, a.size));
        return match report(&a, "threads", threads, "none", &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("app_bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let d = match Dsm::init() {
        Ok(d) => d,
        Err(err) => {
            eprintln!("app_bench: cannot start: {err}");
            return ExitCode::FAILURE;
        }
    };
    let out = run(&DsmTeam::new(&d), a.program.name, a.size);
    let checked = if d.rank() == 0 {
        let transport = d.node().transport().capabilities().backend.to_string();
        report(&a, "dsm", d.nodes(), &transport, &out)
    } else {
        Ok(())
    };
    let end = d.finalize();
    match (checked, end) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("app_bench: {e}");
            ExitCode::FAILURE
        }
        (_, Err(e)) => {
            eprintln!("app_bench: finalize: {e}");
            ExitCode::FAILURE
        }
    }
}
