//! When to prefetch, and how much: a pure policy (no I/O, no clock) that the runtime consults
//! on every remote read fault and tells about every prefetched page the application used or
//! wasted.
//!
//! - A read fault on the page that follows the previous fault's run (a **sequential** fault)
//!   opens a window of pages to fetch ahead that doubles, from [`MIN_WINDOW`], on each further
//!   sequential fault; any other fault closes it.
//! - The window never exceeds a **cap**. A prefetched page is *used* when the application first
//!   touches it, *wasted* when it is invalidated, evicted or freed untouched. Each time the
//!   application has used a cap's worth of prefetched pages the cap doubles (up to
//!   [`MAX_WINDOW`]); each event (an acquire, an eviction, a free) that wastes more pages than
//!   were used since the previous such event halves it. Below [`MIN_WINDOW`] prefetching stops.
//! - With prefetching stopped, every sequential fault goes remote on its own and raises the cap
//!   by one, so a pattern that turns sequential again gets its prefetch back after two faults.

/// The largest window, in pages (also the largest run one prefetch fetches).
pub const MAX_WINDOW: usize = 64;
/// The first window of a sequential run; a cap below it turns prefetching off.
pub const MIN_WINDOW: usize = 2;

/// The prefetch state of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    window: usize,
    cap: usize,
    used_since: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            window: 0,
            cap: MAX_WINDOW,
            used_since: 0,
        }
    }
}

impl Policy {
    /// How many pages to fetch ahead after a read fault; `sequential` says whether the fault is
    /// on the page that follows the previous fault's run.
    pub fn on_read_fault(&mut self, sequential: bool) -> usize {
        if !sequential {
            self.window = 0;
            return 0;
        }
        if self.cap < MIN_WINDOW {
            self.cap += 1;
        }
        self.window = if self.cap < MIN_WINDOW {
            0
        } else {
            (self.window * 2)
                .clamp(MIN_WINDOW, MAX_WINDOW)
                .min(self.cap)
        };
        self.window
    }

    /// The application touched `n` prefetched pages for the first time.
    pub fn on_used(&mut self, n: usize) {
        self.used_since += n;
        if self.cap >= MIN_WINDOW && self.used_since >= self.cap {
            self.cap = (self.cap * 2).min(MAX_WINDOW);
            self.used_since = 0;
        }
    }

    /// One event dropped `n` prefetched pages that were never touched.
    pub fn on_wasted(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        if n > self.used_since {
            self.cap /= 2;
            if self.cap < MIN_WINDOW {
                self.cap = 0;
            }
        }
        self.used_since = 0;
    }

    /// The largest window allowed now.
    pub fn cap(&self) -> usize {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_doubles_while_sequential_and_closes_otherwise() {
        let mut p = Policy::default();
        let seen: Vec<usize> = (0..8).map(|_| p.on_read_fault(true)).collect();
        assert_eq!(seen, [2, 4, 8, 16, 32, 64, 64, 64]);
        assert_eq!(p.on_read_fault(false), 0);
        assert_eq!(p.on_read_fault(true), MIN_WINDOW);
    }

    #[test]
    fn waste_shrinks_the_window_until_prefetch_stops() {
        let mut p = Policy::default();
        let mut caps = Vec::new();
        for _ in 0..7 {
            p.on_wasted(3);
            caps.push(p.cap());
        }
        assert_eq!(caps, [32, 16, 8, 4, 2, 0, 0]);
        // Off: the first sequential fault does not prefetch, the second does, from the minimum.
        assert_eq!(p.on_read_fault(true), 0);
        assert_eq!(p.on_read_fault(true), MIN_WINDOW);
    }

    #[test]
    fn waste_that_is_outweighed_by_use_changes_nothing() {
        let mut p = Policy::default();
        p.on_used(10);
        p.on_wasted(10);
        assert_eq!(p.cap(), MAX_WINDOW);
        p.on_wasted(1);
        assert_eq!(p.cap(), MAX_WINDOW / 2, "nothing used since the last event");
    }

    #[test]
    fn use_brings_the_window_back() {
        let mut p = Policy::default();
        for _ in 0..5 {
            p.on_wasted(1);
        }
        assert_eq!(p.cap(), 2);
        assert_eq!(p.on_read_fault(true), 2);
        p.on_used(2);
        assert_eq!(p.cap(), 4);
        p.on_used(4);
        p.on_used(8);
        assert_eq!(p.cap(), 16);
        let seen: Vec<usize> = (0..4).map(|_| p.on_read_fault(true)).collect();
        assert_eq!(seen, [4, 8, 16, 16]);
    }
}
