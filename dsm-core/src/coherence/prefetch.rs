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
//! - A **strided** pattern (a column of a row-major matrix, a transpose's source: faults on
//!   pages a constant distance apart, at most [`MAX_STRIDE`]) is prefetched too once two
//!   consecutive faults show the same stride: the window's worth of pages (at most
//!   [`MAX_STRIDED`], each its own run) at that stride; a fault on the page after the last one
//!   fetched continues the pattern, and the window grows as for sequential faults.

/// The largest window, in pages (also the largest run one prefetch fetches).
pub const MAX_WINDOW: usize = 64;
/// The first window of a sequential run; a cap below it turns prefetching off.
pub const MIN_WINDOW: usize = 2;

/// The largest distance between the pages of a strided pattern, in pages.
pub const MAX_STRIDE: usize = 1024;
/// The most pages of a strided pattern fetched after one fault.
pub const MAX_STRIDED: usize = 8;

/// What to fetch ahead after a remote read fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead {
    /// Nothing.
    Nothing,
    /// `pages` pages from `from` (the pages after a sequential fault).
    Run {
        /// The first page.
        from: usize,
        /// How many.
        pages: usize,
    },
    /// `pages` pages from `from`, `stride` pages apart.
    Strided {
        /// The first page.
        from: usize,
        /// The distance between two of them, in pages.
        stride: usize,
        /// How many.
        pages: usize,
    },
}

/// The prefetch state of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    window: usize,
    cap: usize,
    used_since: usize,
    /// The page of the previous remote read fault.
    last: Option<usize>,
    /// The distance between the last two remote read faults (0: none yet).
    stride: usize,
    /// The page after the last strided prefetch: a fault there continues the pattern.
    resume: Option<usize>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            window: 0,
            cap: MAX_WINDOW,
            used_since: 0,
            last: None,
            stride: 0,
            resume: None,
        }
    }
}

impl Policy {
    /// What to fetch ahead after a remote read fault on `page`; `sequential` says whether it
    /// is on the page that follows the previous fault's run.
    pub fn plan(&mut self, page: usize, sequential: bool) -> Ahead {
        let strided = if sequential {
            None
        } else if self.resume == Some(page) {
            Some(self.stride)
        } else {
            match self.last.map(|last| page.wrapping_sub(last)) {
                Some(d) if (2..=MAX_STRIDE).contains(&d) => {
                    let same = d == self.stride;
                    self.stride = d;
                    same.then_some(d)
                }
                _ => {
                    self.stride = 0;
                    None
                }
            }
        };
        self.last = Some(page);
        self.resume = None;
        let window = self.on_read_fault(sequential || strided.is_some());
        match strided {
            _ if window == 0 => Ahead::Nothing,
            None => Ahead::Run {
                from: page + 1,
                pages: window,
            },
            Some(stride) => {
                let pages = window.min(MAX_STRIDED);
                self.resume = Some(page + (pages + 1) * stride);
                Ahead::Strided {
                    from: page + stride,
                    stride,
                    pages,
                }
            }
        }
    }

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
    fn a_strided_pattern_is_prefetched_after_two_equal_strides() {
        let mut p = Policy::default();
        assert_eq!(p.plan(100, false), Ahead::Nothing);
        assert_eq!(
            p.plan(108, false),
            Ahead::Nothing,
            "one stride is not a pattern"
        );
        assert_eq!(
            p.plan(116, false),
            Ahead::Strided {
                from: 124,
                stride: 8,
                pages: 2
            }
        );
        // The pages fetched are touched without faults; the next fault is after them.
        assert_eq!(
            p.plan(140, false),
            Ahead::Strided {
                from: 148,
                stride: 8,
                pages: 4
            }
        );
        assert_eq!(
            p.plan(180, false),
            Ahead::Strided {
                from: 188,
                stride: 8,
                pages: 8
            }
        );
        assert_eq!(
            p.plan(252, false),
            Ahead::Strided {
                from: 260,
                stride: 8,
                pages: MAX_STRIDED
            }
        );
        // Anything else ends it.
        assert_eq!(p.plan(5, false), Ahead::Nothing);
        assert_eq!(p.plan(5 + MAX_STRIDE + 1, false), Ahead::Nothing);
        assert_eq!(p.plan(7 + 2 * MAX_STRIDE, false), Ahead::Nothing);
    }

    #[test]
    fn sequential_faults_plan_runs() {
        let mut p = Policy::default();
        assert_eq!(p.plan(10, false), Ahead::Nothing);
        assert_eq!(p.plan(11, true), Ahead::Run { from: 12, pages: 2 });
        assert_eq!(p.plan(14, true), Ahead::Run { from: 15, pages: 4 });
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
