use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;

/// A stranger that sends one byte per `every` until told to stop (or its connection breaks).
struct Drip {
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drip {
    fn start(addr: SocketAddr, every: Duration) -> Drip {
        let mut s = TcpStream::connect(addr).unwrap();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // The pacing of an attacker, not synchronisation: a stop ends it at once.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                if s.write_all(b"D").is_err() {
                    return;
                }
            }
        });
        Drip {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Drip {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The handshake of these tests: the peer says `hello`.
fn hello(s: &mut DeadlineStream) -> std::result::Result<(), String> {
    let mut b = [0u8; 5];
    s.read_exact(&mut b).map_err(|e| e.to_string())?;
    if &b == b"hello" {
        Ok(())
    } else {
        Err("not hello".into())
    }
}

fn config(max_pending: usize) -> GateConfig {
    GateConfig {
        name: "test listener",
        handshake_timeout: Duration::from_secs(3),
        max_pending,
    }
}

/// Serves until one `hello` arrives (or `limit` passes); how long that took, and how it ended.
fn serve_one(l: &TcpListener, config: &GateConfig, limit: Duration) -> (Served, Duration) {
    let start = Instant::now();
    let served = serve(l, config, start + limit, hello, |_| Admission::Finished).unwrap();
    (served, start.elapsed())
}

#[test]
fn silent_and_dripping_strangers_do_not_delay_a_real_peer() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let _drip = Drip::start(addr, Duration::from_millis(200));
    let mut peer = TcpStream::connect(addr).unwrap();
    peer.write_all(b"hello").unwrap();
    let (served, took) = serve_one(&l, &config(64), Duration::from_secs(20));
    assert_eq!(served, Served::Finished);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    drop(idle);
}

#[test]
fn a_flood_pushes_out_the_oldest_strangers_not_the_real_peer() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut idle: Vec<TcpStream> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut peer = TcpStream::connect(addr).unwrap();
    peer.write_all(b"hello").unwrap();
    let (served, took) = serve_one(&l, &config(4), Duration::from_secs(20));
    assert_eq!(served, Served::Finished);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    // The first stranger was dropped (its connection is closed: end of stream or a reset).
    idle[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 1];
    match idle[0].read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the oldest stranger should have been dropped: {other:?}"),
    }
}

#[test]
fn the_overall_deadline_is_a_hard_bound() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let _idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let _drip = Drip::start(addr, Duration::from_millis(50));
    let (served, took) = serve_one(&l, &config(64), Duration::from_millis(300));
    assert_eq!(served, Served::DeadlinePassed);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[test]
fn the_whole_handshake_has_one_deadline_and_says_timed_out() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // One byte every 50 ms: each read succeeds well within any per-read timeout.
    let _drip = Drip::start(addr, Duration::from_millis(50));
    let (s, _) = l.accept().unwrap();
    let start = Instant::now();
    let mut s = DeadlineStream::new(s, Duration::from_millis(300));
    let mut b = [0u8; 45];
    let e = s.read_exact(&mut b).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_refused_peer_does_not_end_serving() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let mut wrong = TcpStream::connect(addr).unwrap();
    wrong.write_all(b"hallo").unwrap();
    let mut right = TcpStream::connect(addr).unwrap();
    right.write_all(b"hello").unwrap();
    let mut admitted = 0;
    let start = Instant::now();
    let served = serve(
        &l,
        &config(64),
        start + Duration::from_secs(20),
        |s: &mut DeadlineStream| {
            let mut b = [0u8; 5];
            s.read_exact(&mut b).map_err(|e| e.to_string())?;
            Ok(b)
        },
        |a| {
            if &a.value == b"hello" {
                admitted += 1;
                Admission::Finished
            } else {
                Admission::Refused("said hallo".into())
            }
        },
    )
    .unwrap();
    assert_eq!(served, Served::Finished);
    assert_eq!(admitted, 1);
}
