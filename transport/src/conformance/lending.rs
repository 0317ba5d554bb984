//! [`Transport::recv_lent`] gives messages in the order `recv` would, whether they wait in the
//! backend's queue or still lie where they arrived (an shm ring), and keeps what it passes over
//! or is refused. [`Transport::send_lent`] sends from the caller's memory, in order with the
//! other sends, and finishes its completion.

use std::sync::Barrier;
use std::time::Duration;

use super::pattern;
use crate::api::Transport;
use crate::types::{Message, Rank, Tag};

const WAIT: Option<Duration> = Some(Duration::from_secs(30));

/// Lends the next message from `from` with `tag` and returns a copy of its bytes, or the
/// message itself when `refuse`.
fn lend<T: Transport>(
    t: &T,
    from: Option<Rank>,
    tag: u64,
    refuse: bool,
) -> (Vec<u8>, Option<Message>) {
    let mut got = Vec::new();
    let back = t
        .recv_lent(from, Some(Tag(tag)), WAIT, &mut |_, data| {
            if refuse {
                return false;
            }
            got = data.to_vec();
            true
        })
        .expect("recv_lent");
    (got, back)
}

/// Messages queued before others still in flight are lent first; a message of another tag is
/// kept for its own receive; a refused message comes back whole, and the next one is lent.
pub fn lent_messages_keep_order<T: Transport>(job: &[T]) {
    let (a, b) = (&job[0], &job[1]);
    let big = pattern(7, 1 << 20);
    let turn = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            b.send(a.rank(), Tag(20), b"first").expect("send");
            b.send(a.rank(), Tag(21), b"other tag").expect("send");
            turn.wait();
            b.send_parts(a.rank(), Tag(20), &[&big[..3], &big[3..]])
                .expect("send");
            for m in [&b""[..], b"refused", b"after", b"any source"] {
                b.send(a.rank(), Tag(20), m).expect("send");
            }
        });
        // Both first messages are in (taken off the wire into the queue, where a backend has
        // one) before the others are sent.
        a.wait_message(Some(b.rank()), Some(Tag(21)), WAIT)
            .expect("wait_message");
        turn.wait();
        let from = Some(b.rank());
        assert_eq!(lend(a, from, 20, false).0, b"first");
        let (got, _) = lend(a, from, 20, false);
        assert!(
            got == big,
            "the large message came changed ({} bytes)",
            got.len()
        );
        assert_eq!(lend(a, from, 20, false).0, b"");
        let (got, back) = lend(a, from, 20, true);
        assert!(got.is_empty());
        let back = back.expect("a refused message comes back");
        assert_eq!(
            (back.source, back.tag, &back.data[..]),
            (b.rank(), Tag(20), &b"refused"[..])
        );
        assert_eq!(lend(a, from, 20, false).0, b"after");
        assert_eq!(lend(a, None, 20, false).0, b"any source");
        let other = a.recv(from, Some(Tag(21)), WAIT).expect("recv");
        assert_eq!(other.data, b"other tag");
        assert!(a.try_recv(from, None).is_none(), "a message was left over");
    });
}

/// Lent sends larger than any socket buffer, between ordinary ones, arrive whole and in order,
/// and every completion a lent send returns finishes without error once its message is
/// received (the receiver starts only after all were sent).
pub fn lent_sends_arrive_whole<T: Transport>(job: &[T]) {
    let (a, b) = (&job[0], &job[1]);
    let bodies: Vec<Vec<u8>> = [8usize << 20, 3, 1 << 20, 0]
        .iter()
        .enumerate()
        .map(|(i, &len)| pattern(40 + i, len))
        .collect();
    let sent = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut pending = Vec::new();
            for (i, body) in bodies.iter().enumerate() {
                let head = (i as u32).to_le_bytes();
                // SAFETY: `bodies` outlives every completion: they are all waited for below,
                // inside the scope that borrows it.
                let lent = unsafe { b.send_lent(a.rank(), Tag(30), &head, body) };
                pending.extend(lent.expect("send_lent"));
                b.send(a.rank(), Tag(30), b"between").expect("send");
            }
            sent.wait();
            for done in pending {
                done.wait_timeout(Duration::from_secs(30))
                    .expect("a lent send finishes once its message is received");
            }
        });
        sent.wait();
        for (i, body) in bodies.iter().enumerate() {
            let m = a.recv(Some(b.rank()), Some(Tag(30)), WAIT).expect("recv");
            assert_eq!(
                m.data[..4],
                (i as u32).to_le_bytes(),
                "message {i} out of order"
            );
            assert!(m.data[4..] == body[..], "lent message {i} came changed");
            let between = a.recv(Some(b.rank()), Some(Tag(30)), WAIT).expect("recv");
            assert_eq!(between.data, b"between");
        }
    });
}
