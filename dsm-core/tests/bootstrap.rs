//! The bootstrap over real sockets: a node without the job's secret is refused with a clear
//! error and the job goes on; a coordinator that never comes up is a bounded, named timeout.

use std::net::TcpListener;
use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

use dsm_core::config::{Coordinator, OnPeerLost, TransportChoice};
use dsm_core::{Config, Node};
use transport::{Rank, Secret, Tag, Transport};

fn config(rank: u32, nodes: usize, coordinator: Coordinator, secret: Secret) -> Config {
    Config {
        rank: Rank(rank),
        nodes,
        coordinator,
        secret,
        bind: "127.0.0.1".parse().unwrap(),
        transport: TransportChoice::Tcp,
        peer_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(20),
        handshake_timeout: Duration::from_secs(3),
        spin: Duration::from_micros(10),
        on_peer_lost: OnPeerLost::Error,
    }
}

/// Rank 0's configuration for a 2-node job, with its coordinator already listening, and the
/// address the other node joins at.
fn rank0_of_two(secret: &Secret) -> (Config, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = Coordinator::Fd(listener.into_raw_fd());
    (config(0, 2, fd, secret.clone()), addr)
}

#[test]
fn an_intruder_is_refused_and_the_job_goes_on() {
    let secret = Secret::generate().unwrap();
    let (c0, addr) = rank0_of_two(&secret);
    let rank0 = std::thread::spawn(move || {
        let node = Node::with_config(c0)?;
        node.barrier()?;
        node.finalize()
    });
    let intruder = Node::with_config(config(
        1,
        2,
        Coordinator::Addr(addr),
        Secret::generate().unwrap(),
    ));
    let err = intruder
        .expect_err("a node with the wrong secret must be refused")
        .to_string();
    assert!(err.contains("does not have the job's secret"), "{err}");
    let node = Node::with_config(config(1, 2, Coordinator::Addr(addr), secret))
        .expect("the real rank 1 joins");
    node.barrier().unwrap();
    node.finalize().unwrap();
    rank0.join().unwrap().unwrap();
}

#[test]
fn a_wrong_job_size_is_refused_with_the_reason() {
    let secret = Secret::generate().unwrap();
    let (c0, addr) = rank0_of_two(&secret);
    let rank0 = std::thread::spawn(move || Node::with_config(c0).and_then(Node::finalize));
    let err = Node::with_config(config(1, 3, Coordinator::Addr(addr), secret.clone()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("believes the job has 3 nodes"), "{err}");
    Node::with_config(config(1, 2, Coordinator::Addr(addr), secret))
        .unwrap()
        .finalize()
        .unwrap();
    rank0.join().unwrap().unwrap();
}

#[test]
fn a_coordinator_that_never_comes_up_times_out_by_name() {
    // A port that was free a moment ago and has nobody listening on it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = config(1, 2, Coordinator::Addr(addr), Secret::generate().unwrap());
    c.connect_timeout = Duration::from_secs(2);
    let start = Instant::now();
    let err = Node::with_config(c).unwrap_err().to_string();
    assert!(err.contains("did not answer"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn rank_zero_names_the_ranks_that_never_joined() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = config(
        0,
        3,
        Coordinator::Fd(listener.into_raw_fd()),
        Secret::generate().unwrap(),
    );
    c.connect_timeout = Duration::from_secs(1);
    let err = Node::with_config(c).unwrap_err().to_string();
    assert!(err.contains("ranks 1, 2 did not join"), "{err}");
}

/// Starts ranks `ranks` of an `n`-node job on threads, joining the coordinator `listener` (rank
/// 0's, when 0 is among them), with the connect timeout `timeout(rank)`; each runs `body` on
/// its node.
fn start<F>(
    n: usize,
    ranks: &[usize],
    listener: TcpListener,
    secret: &Secret,
    timeout: fn(usize) -> Duration,
    body: F,
) -> Vec<std::thread::JoinHandle<Result<(), String>>>
where
    F: Fn(Node) -> Result<(), String> + Send + Sync + Clone + 'static,
{
    let addr = listener.local_addr().unwrap();
    let mut listener = Some(listener);
    ranks
        .iter()
        .map(|&r| {
            let coordinator = if r == 0 {
                Coordinator::Fd(listener.take().unwrap().into_raw_fd())
            } else {
                Coordinator::Addr(addr)
            };
            let mut c = config(r as u32, n, coordinator, secret.clone());
            c.connect_timeout = timeout(r);
            let body = body.clone();
            std::thread::spawn(move || body(Node::with_config(c).map_err(|e| e.to_string())?))
        })
        .collect()
}

/// The endpoints go up a tree 4 levels deep (11 nodes) and the table comes down: every node
/// then reaches every other, each message arriving from the rank it names.
#[test]
fn the_endpoints_travel_through_the_tree() {
    let n = 11;
    let secret = Secret::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ranks: Vec<usize> = (0..n).collect();
    let every = start(
        n,
        &ranks,
        listener,
        &secret,
        |_| Duration::from_secs(30),
        move |node| {
            let t = node.transport();
            let me = node.rank();
            for p in (0..n).filter(|&p| p != me.index()) {
                t.send(Rank(p as u32), Tag(7), &me.0.to_le_bytes())
                    .map_err(|e| e.to_string())?;
            }
            for _ in 1..n {
                let m = t
                    .recv(None, Some(Tag(7)), Some(Duration::from_secs(20)))
                    .map_err(|e| e.to_string())?;
                if m.data != m.source.0.to_le_bytes() {
                    return Err(format!("rank {me}: {:?} from rank {}", m.data, m.source));
                }
            }
            node.barrier().map_err(|e| e.to_string())?;
            node.finalize().map_err(|e| e.to_string())
        },
    );
    for h in every {
        h.join().unwrap().unwrap();
    }
}

/// A rank that never starts: rank 0 names it as not joined and tells the node it holds why
/// (which waits longer than rank 0 here, so that it hears it), and its parent names the
/// subtree it waited for; all within the connect timeouts.
#[test]
fn a_missing_subtree_is_named_by_its_parent() {
    let n = 4;
    let secret = Secret::generate().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let timeout = |r| Duration::from_secs(if r == 0 { 2 } else { 4 });
    let ends = start(n, &[0, 1, 2], listener, &secret, timeout, |node| {
        node.finalize().map_err(|e| e.to_string())
    });
    let errs: Vec<String> = ends
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .expect_err("nobody may start without rank 3")
        })
        .collect();
    assert!(errs[0].contains("ranks 3 did not join"), "{errs:?}");
    assert!(
        errs[1].contains("rank 0 refused us: the bootstrap failed: ranks 3 did not join"),
        "{errs:?}"
    );
    assert!(
        errs[2].contains("the endpoints of ranks 3-3 (our children's subtrees)"),
        "{errs:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "rank 2 waited its whole timeout"
    );
}
