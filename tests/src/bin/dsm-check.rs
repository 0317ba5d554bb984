//! A multi-process test program: joins the job and runs the scenario named by its first
//! argument. Integration tests start it through the launcher.
//!
//! - `mesh`: every node writes into every node's memory, counts with atomics, and exchanges
//!   messages; exits 0 only when every check passes.
//! - `die RANK`: like `mesh`'s start, then rank RANK aborts; the others wait for a message that
//!   never comes and must be stopped by the watchdog, naming RANK.
//! - `hang`: joins, then waits forever (for the launcher's timeout).

use std::process::ExitCode;
use std::time::Duration;

use dsm_core::{collective, Node};
use transport::{LocalSlice, Rank, Region, RegionDesc, Tag, Transport};

fn mesh(node: &Node) -> Result<(), String> {
    let t = node.transport();
    let (me, n) = (node.rank().index(), node.nodes());
    let e = |e: transport::Error| e.to_string();
    let home = Region::allocate((n + 1) * 4096).map_err(e)?;
    let desc = t.register(&home).map_err(e)?;
    let all = collective::all_gather(t, &desc.to_bytes(), None).map_err(|e| e.to_string())?;
    let descs: Vec<RegionDesc> = all
        .iter()
        .map(|b| RegionDesc::from_bytes(b))
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let buf = Region::allocate(4096).map_err(e)?;
    t.register(&buf).map_err(e)?;
    buf.write_at(0, &[me as u8 + 1; 4096]).map_err(e)?;
    for d in &descs {
        t.write(
            d.slice((me * 4096) as u64, 4096).map_err(e)?,
            LocalSlice::whole(&buf),
        )
        .map_err(e)?;
        t.fetch_add(d.word((n * 4096) as u64).map_err(e)?, 1)
            .map_err(e)?;
    }
    node.barrier().map_err(|e| e.to_string())?;
    let mut page = vec![0u8; 4096];
    let count = home
        .atomic_u64(n * 4096)
        .map_err(e)?
        .load(std::sync::atomic::Ordering::SeqCst);
    if count != n as u64 {
        return Err(format!("rank {me}: counter is {count}, expected {n}"));
    }
    for from in 0..n {
        home.read_at(from * 4096, &mut page).map_err(e)?;
        if page.iter().any(|&b| b != from as u8 + 1) {
            return Err(format!("rank {me}: page from rank {from} is wrong"));
        }
    }
    for peer in 0..n {
        t.send(
            Rank(peer as u32),
            Tag(7),
            format!("{me}->{peer}").as_bytes(),
        )
        .map_err(e)?;
    }
    for peer in 0..n {
        let m = t
            .recv(
                Some(Rank(peer as u32)),
                Some(Tag(7)),
                Some(Duration::from_secs(30)),
            )
            .map_err(e)?;
        if m.data != format!("{peer}->{me}").as_bytes() {
            return Err(format!("rank {me}: wrong message from rank {peer}"));
        }
    }
    node.barrier().map_err(|e| e.to_string())?;
    println!("rank {me}: mesh ok");
    Ok(())
}

fn main() -> ExitCode {
    dsm_core::logging::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let node = match Node::init() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("dsm-check: cannot join: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.first().map(String::as_str) {
        Some("mesh") => mesh(&node),
        Some(scenario @ ("die" | "freeze")) => {
            let victim: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1);
            let _ = node.barrier();
            if node.rank().index() == victim {
                if scenario == "die" {
                    eprintln!("rank {victim}: aborting on purpose");
                    std::process::abort();
                }
                // Stopped (SIGSTOP), the victim keeps its sockets open but goes silent: only
                // the heartbeat timeout can reveal it.
                // SAFETY: raise has no memory-safety preconditions.
                unsafe { libc::raise(libc::SIGSTOP) };
            }
            // Wait for a message nobody sends: only the loss of the victim ends this (the
            // watchdog stops the process, naming it).
            match node
                .transport()
                .recv(None, Some(Tag(99)), Some(Duration::from_secs(120)))
            {
                Ok(_) => Err("an impossible message arrived".into()),
                Err(e) => Err(format!("recv ended: {e}")),
            }
        }
        Some("hang") => {
            let _ = node.barrier();
            let _ = node.transport().recv(None, Some(Tag(99)), None);
            Err("hang ended".into())
        }
        other => Err(format!("unknown scenario {other:?}")),
    };
    match result.and_then(|()| node.finalize().map_err(|e| e.to_string())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsm-check: {e}");
            ExitCode::FAILURE
        }
    }
}
