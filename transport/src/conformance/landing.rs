//! [`Transport::land`]: a landing place takes the first message after it that it accepts, in
//! arrival order, whole or truncated to its size; a message it does not accept, or that came
//! after it was taken, is received as usual; a landing is refused when a queued message would
//! be taken, and one withdrawn takes nothing.

use std::time::Duration;

use super::pattern;
use crate::api::Transport;
use crate::landing::{Accept, Landing};
use crate::types::{Rank, Tag};

const WAIT: Option<Duration> = Some(Duration::from_secs(30));
const TAG: Tag = Tag(50);

/// Accepts messages whose 4-byte head is `want`.
fn head_is(want: u32) -> Accept {
    Box::new(move |h: &[u8]| h == want.to_le_bytes())
}

/// Offers `dest` for the next message from `from` with head `want`.
fn offer<T: Transport>(t: &T, from: Rank, want: u32, dest: &mut [u8]) -> Option<Landing> {
    // SAFETY: every caller waits for the landing's completion or withdraws it before `dest`
    // is used or dropped.
    unsafe { t.land(from, TAG, 4, head_is(want), dest) }.expect("land")
}

fn message(head: u32, body: &[u8]) -> Vec<u8> {
    let mut m = head.to_le_bytes().to_vec();
    m.extend_from_slice(body);
    m
}

/// Landings take their messages, large (straight from the socket over tcp) and truncated;
/// the others are received as usual, in order.
pub fn landed_messages_take_their_place<T: Transport>(job: &[T]) {
    let (a, b) = (&job[0], &job[1]);
    let big = pattern(60, 1 << 20);
    let small = pattern(61, 300);
    let mut big_dest = vec![0u8; 2 << 20];
    let mut short_dest = vec![0u8; 100];
    let Some(first) = offer(a, b.rank(), 1, &mut big_dest) else {
        // The backend lands nothing.
        return;
    };
    let second = offer(a, b.rank(), 2, &mut short_dest).expect("a second landing");
    b.send(a.rank(), TAG, &message(3, b"not for a landing"))
        .expect("send");
    b.send(a.rank(), TAG, &message(1, &big)).expect("send");
    b.send(a.rank(), TAG, &message(2, &small)).expect("send");
    b.send(a.rank(), TAG, &message(1, b"after its landing was taken"))
        .expect("send");
    let len = first.completion.wait().expect("the large message lands");
    assert_eq!(len as usize, 4 + big.len());
    assert_eq!(first.head(), 1u32.to_le_bytes());
    assert!(
        big_dest[..big.len()] == big[..],
        "the large message landed changed"
    );
    assert!(
        big_dest[big.len()..].iter().all(|&x| x == 0),
        "it wrote past itself"
    );
    let len = second
        .completion
        .wait()
        .expect("the truncated message lands");
    assert_eq!(
        len as usize,
        4 + small.len(),
        "the whole length is reported"
    );
    assert!(
        short_dest[..] == small[..100],
        "the truncated message landed changed"
    );
    let from = Some(b.rank());
    let other = a.recv(from, Some(TAG), WAIT).expect("recv");
    assert_eq!(other.data, message(3, b"not for a landing"));
    let later = a.recv(from, Some(TAG), WAIT).expect("recv");
    assert_eq!(later.data, message(1, b"after its landing was taken"));

    // Refused while a message it would take is queued.
    b.send(a.rank(), TAG, &message(4, b"queued")).expect("send");
    a.wait_message(from, Some(TAG), WAIT).expect("wait_message");
    let mut dest = vec![0u8; 16];
    assert!(
        offer(a, b.rank(), 4, &mut dest).is_none(),
        "a landing overtook a queued message"
    );
    assert_eq!(
        a.recv(from, Some(TAG), WAIT).expect("recv").data,
        message(4, b"queued")
    );

    // Withdrawn: it takes nothing.
    let withdrawn = offer(a, b.rank(), 5, &mut dest).expect("a landing");
    assert!(a.unland(&withdrawn), "an untaken landing was not withdrawn");
    b.send(a.rank(), TAG, &message(5, b"withdrawn"))
        .expect("send");
    assert_eq!(
        a.recv(from, Some(TAG), WAIT).expect("recv").data,
        message(5, b"withdrawn")
    );
    assert!(
        dest.iter().all(|&x| x == 0),
        "a withdrawn landing was written"
    );
}
