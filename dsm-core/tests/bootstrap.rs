//! The bootstrap over real sockets: a node without the job's secret is refused with a clear
//! error and the job goes on; a coordinator that never comes up is a bounded, named timeout.

use std::net::TcpListener;
use std::os::fd::IntoRawFd;
use std::time::{Duration, Instant};

use dsm_core::config::{Coordinator, OnPeerLost, TransportChoice};
use dsm_core::{Config, Node};
use transport::{Rank, Secret};

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
