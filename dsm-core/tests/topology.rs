//! The progress thread really runs where the topology report says.

use std::net::TcpListener;
use std::time::Duration;

use dsm_core::config::{Coordinator, OnPeerLost, TransportChoice};
use dsm_core::{Config, Node};
use transport::{Rank, Secret};

/// The PUs a thread of this process may run on, from /proc, by the thread's name.
fn allowed_pus(thread_name: &str) -> Option<Vec<u32>> {
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        if comm.trim() != thread_name {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
            .trim()
            .to_string();
        let mut pus = Vec::new();
        for part in list.split(',') {
            match part.split_once('-') {
                Some((a, b)) => pus.extend(a.parse::<u32>().ok()?..=b.parse::<u32>().ok()?),
                None => pus.push(part.parse().ok()?),
            }
        }
        return Some(pus);
    }
    None
}

#[test]
fn the_progress_thread_runs_where_the_report_says() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let node = Node::with_config(Config {
        rank: Rank(0),
        nodes: 1,
        coordinator: Coordinator::Addr(addr),
        secret: Secret::generate().unwrap(),
        bind: "127.0.0.1".parse().unwrap(),
        transport: TransportChoice::Tcp,
        peer_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(10),
        handshake_timeout: Duration::from_secs(3),
        spin: Duration::from_micros(10),
        on_peer_lost: OnPeerLost::Error,
    })
    .unwrap();
    let report = node.topology().clone();
    match &report.progress {
        Some((_, want)) => {
            // The thread pins itself first thing after it starts: wait (bounded) until it has.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let mut pus = allowed_pus("dsm-progress-0");
            while pus.as_ref() != Some(want) && std::time::Instant::now() < deadline {
                std::thread::yield_now();
                pus = allowed_pus("dsm-progress-0");
            }
            assert_eq!(pus.as_ref(), Some(want), "{report}");
        }
        None => {
            let pus = allowed_pus("dsm-progress-0").expect("the progress thread is running");
            let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
            let main = allowed_pus(comm.trim());
            assert!(report.why_not.is_some(), "{report}");
            if let Some(main) = main {
                assert_eq!(pus, main, "unpinned: {report}");
            }
        }
    }
    // On a machine with two cores or more, a one-rank job pins it.
    if report.cores >= 2 {
        assert!(report.progress.is_some(), "{report}");
    }
    node.finalize().unwrap();
}
