//! Threads that wait for messages read their connections themselves, with the progress
//! thread's read interest withdrawn, and keep it withdrawn a little after they got their
//! message (tcp). Whatever the application does afterwards, the node must go on serving its
//! peers' one-sided requests and noticing their loss.

use std::sync::Arc;
use std::time::{Duration, Instant};

use transport::{Error, LocalSlice, Rank, Region, Secret, Tag, TcpConfig, TcpTransport, Transport};

fn pair() -> Vec<TcpTransport> {
    TcpTransport::local_job(2, &TcpConfig::new(Secret::generate().expect("secret")))
        .expect("tcp job")
}

/// After rank 0 received a message and went on without calling the transport again, rank 1's
/// reads of rank 0's memory are served (by the progress thread, once the connection is given
/// back to it), every time.
#[test]
fn requests_are_served_after_a_receive() {
    let job = pair();
    let (a, b) = (&job[0], &job[1]);
    let home = Arc::new(Region::allocate(4096).expect("allocate"));
    home.write_at(0, &[42u8; 8]).expect("fill");
    let desc = a.register(&home).expect("register");
    let local = Arc::new(Region::allocate(4096).expect("allocate"));
    b.register(&local).expect("register");
    for round in 0..50u8 {
        b.send(Rank(0), Tag(1), &[round]).expect("send");
        let m = a
            .recv(Some(Rank(1)), Some(Tag(1)), Some(Duration::from_secs(30)))
            .expect("recv");
        assert_eq!(m.data, [round]);
        // Rank 0's application now leaves the transport alone; rank 1 reads its memory.
        b.post(transport::Op::Read {
            remote: desc.slice(0, 8).expect("slice"),
            local: LocalSlice::new(&local, 0, 8).expect("local"),
        })
        .expect("post")
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("round {round}: read not served: {e}"));
        let mut got = [0u8; 8];
        local.read_at(0, &mut got).expect("read back");
        assert_eq!(got, [42u8; 8]);
    }
}

/// A peer that closes its transport while this node's application has stopped receiving
/// (the connection lingering with it) is noticed by the progress thread, once the connection
/// is handed back to it: the application only looks at what has arrived (`try_recv` reads no
/// connection), and the peer's loss shows there.
#[test]
fn a_peer_closing_during_the_linger_is_noticed() {
    let job = pair();
    let (a, b) = (&job[0], &job[1]);
    a.set_linger(true);
    b.send(Rank(0), Tag(1), b"x").expect("send");
    a.recv(Some(Rank(1)), Some(Tag(1)), Some(Duration::from_secs(30)))
        .expect("recv");
    b.close().expect("close");
    // A hard limit, not a synchronisation: without the hand-back nothing would ever be read.
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        if let Some(r) = a.try_recv(Some(Rank(1)), Some(Tag(1))) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "rank 0 never noticed rank 1's close without reading itself"
        );
        std::thread::yield_now();
    };
    match got {
        Err(Error::PeerClosed(Rank(1)) | Error::PeerLost { peer: Rank(1), .. }) => {}
        other => panic!("expected rank 1 to be gone, got {other:?}"),
    }
}
