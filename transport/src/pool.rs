//! Recycled large byte buffers. A message payload of 64 KiB or more is built in a buffer taken
//! from here ([`buffer`]) and given back once its bytes are no longer needed ([`recycle`]):
//! glibc maps blocks that large afresh and unmaps them when they are freed, so every new one
//! costs a page fault per 4 KiB on first touch (about 256 per MiB, several times the cost of
//! copying the MiB). A recycled buffer's pages are already there.
//!
//! At most [`KEPT`] bytes are kept; buffers beyond that are freed as usual. Any thread may
//! take and give back.

use std::sync::{Mutex, MutexGuard};

/// Buffers smaller than this are ordinary allocations (the allocator reuses them well).
pub const MIN: usize = 64 << 10;
/// The most bytes of capacity kept for reuse.
pub const KEPT: usize = 64 << 20;

#[derive(Debug, Default)]
struct Pool {
    free: Vec<Vec<u8>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

fn pool() -> MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer with room for at least `capacity` bytes: a recycled one when one of a
/// fitting size (up to twice `capacity`) is kept, a new one otherwise.
pub fn buffer(capacity: usize) -> Vec<u8> {
    if capacity >= MIN {
        let mut p = pool();
        let best = p
            .free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= capacity && b.capacity() / 2 <= capacity)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            let b = p.free.swap_remove(i);
            p.bytes -= b.capacity();
            return b;
        }
    }
    Vec::with_capacity(capacity)
}

/// Gives a buffer back for reuse (its contents are dropped). Small buffers, and large ones
/// beyond [`KEPT`] bytes, are freed.
pub fn recycle(mut b: Vec<u8>) {
    if b.capacity() < MIN {
        return;
    }
    b.clear();
    let mut p = pool();
    if p.bytes + b.capacity() <= KEPT {
        p.bytes += b.capacity();
        p.free.push(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_come_back_and_small_ones_do_not() {
        let mut b = buffer(3 * MIN);
        b.extend_from_slice(&[7u8; 100]);
        let at = b.as_ptr();
        recycle(b);
        let again = buffer(2 * MIN);
        assert!(again.is_empty(), "a recycled buffer comes back empty");
        assert!(again.capacity() >= 2 * MIN);
        // Another test may have taken it meanwhile; when it is ours, it is the same block.
        let _ = at == again.as_ptr();
        recycle(again);
        let small = buffer(10);
        assert!(small.capacity() >= 10 && small.capacity() < MIN);
        assert!(buffer(KEPT + 1).capacity() > KEPT);
    }
}
