//! A peer that knows the job's secret but speaks garbage, or dies mid-operation: the node must
//! refuse it with a clear error, never panic, never hang, never touch unregistered memory.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use transport::auth::{handshake, Role};
use transport::wire::{Header, Kind, HEADER_LEN};
use transport::{
    Error, LocalSlice, Rank, Region, RemoteFault, Secret, Tag, TcpConfig, TcpTransport, Transport,
};

const DATA_CONTEXT: &str = "dsm tcp data connection v1";

/// Rank 0 is a real node; rank 1 is this test speaking raw bytes on an authenticated socket.
fn real_and_fake() -> (TcpTransport, TcpStream) {
    real_and_fake_with(Duration::from_secs(10))
}

/// [`real_and_fake`], the real node declaring a peer lost after `peer_timeout` of silence.
fn real_and_fake_with(peer_timeout: Duration) -> (TcpTransport, TcpStream) {
    let secret = Secret::generate().unwrap();
    let mut config = TcpConfig::new(secret.clone());
    config.connect_timeout = Duration::from_secs(20);
    config.peer_timeout = peer_timeout;
    let prepared = TcpTransport::prepare(Rank(0), 2, config).unwrap();
    let ep = prepared.endpoint().unwrap();
    let addr = String::from_utf8(ep.clone()).unwrap();
    let fake = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        handshake(&mut s, &secret, DATA_CONTEXT, Role::Connector, 1).unwrap();
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(ack[0], 1);
        s
    });
    let real = prepared.connect(&[ep, b"127.0.0.1:1".to_vec()]).unwrap();
    (real, fake.join().unwrap())
}

fn read_header(s: &mut TcpStream) -> Header {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).unwrap();
    Header::decode(&h, u32::MAX).unwrap()
}

fn expect_protocol_loss(real: &TcpTransport) {
    match real.recv(Some(Rank(1)), None, Some(Duration::from_secs(20))) {
        Err(Error::PeerLost {
            peer: Rank(1),
            reason,
        }) => assert!(reason.contains("protocol"), "{reason}"),
        other => {
            panic!("expected the fake peer to be dropped for a protocol violation, got {other:?}")
        }
    }
}

#[test]
fn garbage_bytes_drop_the_connection() {
    let (real, mut fake) = real_and_fake();
    fake.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n......................")
        .unwrap();
    expect_protocol_loss(&real);
}

#[test]
fn wrong_version_drops_the_connection() {
    let (real, mut fake) = real_and_fake();
    let mut h = Header::new(Kind::Heartbeat).encode();
    h[2] = 99;
    fake.write_all(&h).unwrap();
    expect_protocol_loss(&real);
}

#[test]
fn oversized_frame_drops_the_connection() {
    let (real, mut fake) = real_and_fake();
    let mut h = Header::new(Kind::Message);
    h.payload_len = u32::MAX;
    fake.write_all(&h.encode()).unwrap();
    expect_protocol_loss(&real);
}

#[test]
fn unsolicited_response_drops_the_connection() {
    let (real, mut fake) = real_and_fake();
    let mut h = Header::new(Kind::Response);
    h.id = 12345;
    fake.write_all(&h.encode()).unwrap();
    expect_protocol_loss(&real);
}

#[test]
fn truncated_frame_then_close_is_a_lost_peer() {
    let (real, mut fake) = real_and_fake();
    let mut h = Header::new(Kind::Write);
    h.payload_len = 100;
    fake.write_all(&h.encode()).unwrap();
    fake.write_all(&[1, 2, 3]).unwrap();
    drop(fake);
    match real.recv(Some(Rank(1)), None, Some(Duration::from_secs(20))) {
        Err(Error::PeerLost { peer: Rank(1), .. }) => {}
        other => panic!("expected a lost peer, got {other:?}"),
    }
}

#[test]
fn hostile_requests_get_error_replies_and_touch_nothing() {
    let (real, mut fake) = real_and_fake();
    let home = Region::allocate(4096).unwrap();
    home.write_at(0, &[7u8; 4096]).unwrap();
    let desc = real.register(&home).unwrap();
    let cases: Vec<(Header, Vec<u8>, u64)> = vec![
        // Unknown key.
        (
            {
                let mut h = Header::new(Kind::Read);
                (h.a, h.b, h.c) = (desc.key.0 ^ 0xdead, 0, 8);
                h
            },
            vec![],
            RemoteFault::BadKey.code().into(),
        ),
        // Reads and writes past the end, and with offsets that overflow.
        (
            {
                let mut h = Header::new(Kind::Read);
                (h.a, h.b, h.c) = (desc.key.0, 4000, 200);
                h
            },
            vec![],
            RemoteFault::OutOfBounds.code().into(),
        ),
        (
            {
                let mut h = Header::new(Kind::Write);
                (h.a, h.b) = (desc.key.0, u64::MAX - 3);
                h
            },
            vec![9; 16],
            RemoteFault::OutOfBounds.code().into(),
        ),
        (
            {
                let mut h = Header::new(Kind::Write);
                (h.a, h.b) = (desc.key.0, 4090);
                h
            },
            vec![9; 16],
            RemoteFault::OutOfBounds.code().into(),
        ),
        // Misaligned and out-of-range atomics.
        (
            {
                let mut h = Header::new(Kind::FetchAdd);
                (h.a, h.b, h.c) = (desc.key.0, 3, 1);
                h
            },
            vec![],
            RemoteFault::Misaligned.code().into(),
        ),
        (
            {
                let mut h = Header::new(Kind::CompareSwap);
                (h.a, h.b) = (desc.key.0, 4096);
                h
            },
            vec![],
            RemoteFault::OutOfBounds.code().into(),
        ),
    ];
    // A strided add asking for billions of words, or for one word again and again: refused at
    // once, nothing allocated or changed.
    let mut huge = Header::new(Kind::AddStrided);
    (huge.a, huge.b, huge.c, huge.d) = (desc.key.0, 0, 1, (8 << 32) | u64::from(u32::MAX));
    let mut same = Header::new(Kind::AddStrided);
    (same.a, same.b, same.c, same.d) = (desc.key.0, 0, 1, 1_000_000);
    let mut cases = cases;
    cases.push((huge, vec![], RemoteFault::OutOfBounds.code().into()));
    cases.push((same, vec![], RemoteFault::OutOfBounds.code().into()));
    for (i, (mut h, payload, status)) in cases.into_iter().enumerate() {
        h.id = i as u64 + 1;
        h.payload_len = payload.len() as u32;
        fake.write_all(&h.encode()).unwrap();
        fake.write_all(&payload).unwrap();
        let r = read_header(&mut fake);
        assert_eq!(
            (r.kind, r.id, r.a, r.payload_len),
            (Kind::Response, i as u64 + 1, status, 0),
            "case {i}"
        );
    }
    let mut got = [0u8; 4096];
    home.read_at(0, &mut got).unwrap();
    assert!(
        got.iter().all(|&b| b == 7),
        "a refused request changed memory"
    );
    // The connection is still good: a valid read is served.
    let mut h = Header::new(Kind::Read);
    (h.id, h.a, h.b, h.c) = (99, desc.key.0, 8, 16);
    fake.write_all(&h.encode()).unwrap();
    let r = read_header(&mut fake);
    assert_eq!((r.id, r.a, r.payload_len), (99, 0, 16));
    let mut data = [0u8; 16];
    fake.read_exact(&mut data).unwrap();
    assert_eq!(data, [7u8; 16]);
}

#[test]
fn a_peer_that_dies_mid_operation_fails_the_operation() {
    let (real, mut fake) = real_and_fake();
    let buf = Region::allocate(4096).unwrap();
    real.register(&buf).unwrap();
    let remote = transport::RegionDesc {
        rank: Rank(1),
        key: transport::RemoteKey(1),
        addr: 0,
        len: 4096,
    };
    let c = real
        .post(transport::Op::Read {
            remote: remote.slice(0, 4096).unwrap(),
            local: LocalSlice::whole(&buf),
        })
        .unwrap();
    // The fake receives the request, then dies without answering.
    let h = read_header(&mut fake);
    assert_eq!(h.kind, Kind::Read);
    drop(fake);
    match c.wait_timeout(Duration::from_secs(20)) {
        Err(Error::PeerLost { peer: Rank(1), .. }) => {}
        other => panic!("expected the read to fail with a lost peer, got {other:?}"),
    }
    assert!(matches!(
        real.fetch_add(remote.word(0).unwrap(), 1),
        Err(Error::PeerLost { .. })
    ));
}

/// A peer that freezes (alive, socket open, silent) part-way through the payload of a large
/// read's response: the heartbeat declares it lost and the read, whose payload was being
/// received straight into memory, fails with it instead of waiting forever.
#[test]
fn a_peer_that_freezes_mid_response_fails_the_read() {
    const LEN: usize = 256 * 1024;
    let (real, mut fake) = real_and_fake_with(Duration::from_secs(2));
    let buf = Region::allocate(LEN).unwrap();
    real.register(&buf).unwrap();
    let remote = transport::RegionDesc {
        rank: Rank(1),
        key: transport::RemoteKey(1),
        addr: 0,
        len: LEN as u64,
    };
    let c = real
        .post(transport::Op::Read {
            remote: remote.slice(0, LEN).unwrap(),
            local: LocalSlice::whole(&buf),
        })
        .unwrap();
    let h = read_header(&mut fake);
    assert_eq!(h.kind, Kind::Read);
    // The response's header and its first 32 KiB, then silence with the socket left open.
    let mut r = Header::new(Kind::Response);
    r.id = h.id;
    r.payload_len = LEN as u32;
    fake.write_all(&r.encode()).unwrap();
    fake.write_all(&[5u8; 32 * 1024]).unwrap();
    match c.wait_timeout(Duration::from_secs(30)) {
        Err(Error::PeerLost { peer: Rank(1), .. }) => {}
        other => panic!("expected the read to fail with a lost peer, got {other:?}"),
    }
    drop(fake);
}

/// After the application received a message and stopped calling the transport (the connection
/// lingering with it), a peer that says goodbye and shuts its side, keeping its socket open, is
/// noticed as closed in order: only the progress thread, once the connection is handed back to
/// it, can read that (`try_recv` reads nothing, and the half-closed socket raises no event on
/// the write side). Without the hand-back, only the heartbeat would notice, as a lost peer.
#[test]
fn a_goodbye_after_a_receive_is_read_without_the_application() {
    const ROUNDS: u8 = 20;
    let (real, fake) = real_and_fake();
    real.set_linger(true);
    // A ping-pong, so that the real node's last receive is likely to get its message while
    // it reads the connection itself (which leaves the connection lingering with it); then
    // the fake says goodbye and shuts its side, keeping the socket open.
    let fake = std::thread::spawn(move || {
        let mut fake = fake;
        for _ in 0..ROUNDS {
            let h = read_header(&mut fake);
            assert_eq!(h.kind, Kind::Message);
            let mut data = vec![0u8; h.payload_len as usize];
            fake.read_exact(&mut data).unwrap();
            let mut m = Header::new(Kind::Message);
            m.a = h.a;
            m.payload_len = data.len() as u32;
            fake.write_all(&m.encode()).unwrap();
            fake.write_all(&data).unwrap();
        }
        fake.write_all(&Header::new(Kind::Goodbye).encode())
            .unwrap();
        fake.shutdown(std::net::Shutdown::Write).unwrap();
        fake
    });
    for round in 0..ROUNDS {
        real.send(Rank(1), Tag(1), &[round]).unwrap();
        let got = real
            .recv(Some(Rank(1)), Some(Tag(1)), Some(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(got.data, [round]);
    }
    let fake = fake.join().unwrap();
    // A hard limit, not a synchronisation: without the hand-back nothing would ever be read.
    let deadline = Instant::now() + Duration::from_secs(30);
    let outcome = loop {
        if let Some(r) = real.try_recv(Some(Rank(1)), Some(Tag(1))) {
            break r;
        }
        assert!(Instant::now() < deadline, "the goodbye was never read");
        std::thread::yield_now();
    };
    match outcome {
        Err(Error::PeerClosed(Rank(1))) => {}
        other => panic!("expected rank 1 to have closed in order, got {other:?}"),
    }
    drop(fake);
}

#[test]
fn a_stranger_on_the_data_listener_is_refused_and_the_mesh_still_forms() {
    let secret = Secret::generate().unwrap();
    let config = TcpConfig::new(secret.clone());
    let p0 = TcpTransport::prepare(Rank(0), 2, config.clone()).unwrap();
    let p1 = TcpTransport::prepare(Rank(1), 2, config).unwrap();
    let endpoints = vec![p0.endpoint().unwrap(), p1.endpoint().unwrap()];
    let addr = String::from_utf8(endpoints[0].clone()).unwrap();
    // A process without the secret connects first, claiming to be rank 1.
    let mut stranger = TcpStream::connect(&addr).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let eps = endpoints.clone();
    let rank0 = std::thread::spawn(move || p0.connect(&eps));
    let refused = handshake(
        &mut stranger,
        &Secret::generate().unwrap(),
        DATA_CONTEXT,
        Role::Connector,
        1,
    );
    assert!(matches!(refused, Err(Error::Auth(_))), "{refused:?}");
    // The real rank 1 then completes the mesh.
    let t1 = p1.connect(&endpoints).unwrap();
    let t0 = rank0.join().unwrap().unwrap();
    let home = Region::allocate(64).unwrap();
    let desc = t0.register(&home).unwrap();
    assert_eq!(t1.fetch_add(desc.word(0).unwrap(), 5).unwrap(), 0);
    assert_eq!(t1.fetch_add(desc.word(0).unwrap(), 0).unwrap(), 5);
}

/// A stranger that sends one byte per `every` until dropped (or its connection breaks).
struct Drip {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drip {
    fn start(addr: &str, every: Duration) -> Drip {
        let mut s = TcpStream::connect(addr).unwrap();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            // The pacing of an attacker, not synchronisation: a stop ends it at once.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
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

/// Issue 18: strangers connected to a data listener before the real peer, saying nothing or
/// one byte a second, held the mesh up by up to 5 s each (30 s and a failure for 8 + 1).
#[test]
fn idle_and_dripping_strangers_on_a_data_listener_do_not_delay_the_mesh() {
    let secret = Secret::generate().unwrap();
    let mut config = TcpConfig::new(secret);
    config.connect_timeout = Duration::from_secs(10);
    let p0 = TcpTransport::prepare(Rank(0), 2, config.clone()).unwrap();
    let p1 = TcpTransport::prepare(Rank(1), 2, config).unwrap();
    let endpoints = vec![p0.endpoint().unwrap(), p1.endpoint().unwrap()];
    let addr = String::from_utf8(endpoints[0].clone()).unwrap();
    let idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let drip = Drip::start(&addr, Duration::from_secs(1));
    let start = Instant::now();
    let eps = endpoints.clone();
    let rank0 = std::thread::spawn(move || p0.connect(&eps));
    let t1 = p1.connect(&endpoints).unwrap();
    let t0 = rank0.join().unwrap().unwrap();
    let took = start.elapsed();
    println!("mesh of 2 with 8 idle and 1 dripping stranger: {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let home = Region::allocate(64).unwrap();
    let desc = t0.register(&home).unwrap();
    assert_eq!(t1.fetch_add(desc.word(0).unwrap(), 5).unwrap(), 0);
    drop((idle, drip));
}
