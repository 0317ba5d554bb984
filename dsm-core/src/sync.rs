//! The synchronisation primitives the page-state code uses, from `std` normally and from `loom`
//! when the crate is built with `--cfg loom`, so that the same code is model-checked.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// Lets another thread run (under loom: an explicit scheduling point, so that spin loops are
/// explored rather than reported as livelocks).
pub(crate) fn pause(spins: u32) {
    #[cfg(loom)]
    {
        let _ = spins;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}
