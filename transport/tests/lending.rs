//! Memory lent to the tcp backend past a call (`Transport::send_lent`'s body, `Transport::land`'s
//! place) is given back when its peer goes: the completion finishes, with an error, within a
//! bounded time, and a landing place that no message took stays unwritten.

use std::time::Duration;

use transport::{Error, Rank, Secret, Tag, TcpConfig, TcpTransport, Transport};

fn pair() -> Vec<TcpTransport> {
    TcpTransport::local_job(2, &TcpConfig::new(Secret::generate().expect("secret")))
        .expect("tcp job")
}

/// Connects the two (connections are made on first use): a message from `b` to `a`.
fn connect(a: &TcpTransport, b: &TcpTransport) {
    b.send(a.rank(), Tag(1), b"hello").expect("send");
    a.recv(Some(b.rank()), Some(Tag(1)), Some(LIMIT))
        .expect("recv");
}

/// A hard limit on each wait, not a synchronisation: without the failure path it would hang.
const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn a_landing_fails_when_its_peer_closes() {
    let job = pair();
    let (a, b) = (&job[0], &job[1]);
    connect(a, b);
    let mut place = vec![0u8; 4096];
    // SAFETY: `place` outlives the landing: it is waited for below.
    let landing = unsafe { a.land(Rank(1), Tag(9), 4, Box::new(|_: &[u8]| true), &mut place) }
        .expect("land")
        .expect("the tcp backend lands messages");
    b.close().expect("close");
    match landing.completion.wait_timeout(LIMIT) {
        Err(Error::PeerClosed(Rank(1)) | Error::PeerLost { peer: Rank(1), .. }) => {}
        other => panic!("expected the landing to fail with rank 1 gone, got {other:?}"),
    }
    assert!(
        place.iter().all(|&x| x == 0),
        "a landing no message took was written"
    );
}

#[test]
fn a_lent_send_finishes_when_its_peer_closes() {
    let job = pair();
    let (a, b) = (&job[0], &job[1]);
    connect(a, b);
    let body = vec![7u8; 32 << 20];
    // Rank 1 goes away while rank 0's 32 MiB may still be being written.
    // SAFETY: `body` outlives the completion: it is waited for below.
    let lent = unsafe { a.send_lent(Rank(1), Tag(9), b"head", &body) }.expect("send_lent");
    b.close().expect("close");
    if let Some(done) = lent {
        // Written whole before the close, or failed: either way it finishes.
        match done.wait_timeout(LIMIT) {
            Ok(_) | Err(Error::PeerClosed(_) | Error::PeerLost { .. } | Error::Closed) => {}
            Err(e) => panic!("the lent send ended with {e}"),
        }
    }
}
