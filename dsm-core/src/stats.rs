//! Per-node statistics of the shared memory: counters updated with relaxed atomics on the hot
//! paths, read as a [`Snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $doc:literal),* $(,)?) => {
        /// Live counters.
        #[derive(Debug, Default)]
        pub struct Stats {
            $(#[doc = $doc] pub $name: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Snapshot {
            $(#[doc = $doc] pub $name: u64,)*
        }

        impl Stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }

            /// Zeroes every counter.
            pub fn reset(&self) {
                $(self.$name.store(0, Ordering::Relaxed);)*
            }
        }

        impl Snapshot {
            /// One line per counter, for people.
            pub fn report(&self, rank: usize) -> String {
                let mut s = format!("dsm statistics of rank {rank}:");
                $(s.push_str(&format!("\n  {:<22} {}", stringify!($name), self.$name));)*
                s
            }
        }
    };
}

counters! {
    read_faults: "Read faults served (with the first touches of prefetched pages).",
    write_faults: "Write faults served.",
    pages_fetched: "Pages copied from their home.",
    prefetched: "Pages fetched ahead of a sequential read pattern.",
    prefetched_used: "Prefetched pages the application touched (each once, at its first touch).",
    prefetched_wasted: "Prefetched pages invalidated, evicted or freed before any touch.",
    home_written_ahead: "Pages homed here opened for writing ahead of a stream of first writes, without their own faults (row H4).",
    bytes_written_home: "Bytes of diffs written to homes.",
    diffs: "Pages whose diff was written home.",
    invalidations: "Cached pages invalidated at acquires.",
    evictions: "Cached pages evicted to bound the cache.",
    notifications: "Notifications sent to other nodes about new writers.",
    lock_acquires: "Locks taken.",
    lock_wait_ns: "Nanoseconds spent taking locks.",
    barriers: "Barriers passed.",
    barrier_ns: "Nanoseconds spent in barriers.",
    fault_ns: "Nanoseconds spent serving faults.",
    release_ns: "Nanoseconds spent in releases (writing diffs home).",
    acquire_ns: "Nanoseconds spent in acquires (invalidating).",
    checkpoints: "Checkpoints taken.",
    checkpoint_pages: "Pages whose content checkpoints wrote (an incremental one writes only changed pages).",
    checkpoint_bytes: "Bytes of this node's own checkpoint images written.",
    checkpoint_ns: "Nanoseconds spent in checkpoints.",
}
