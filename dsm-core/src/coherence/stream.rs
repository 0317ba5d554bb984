//! How many pages homed here a first write opens ahead (row H4 of `docs/PROTOCOL.md`): a pure
//! policy (no I/O, no clock) that the runtime consults on every *fresh* home write fault (a
//! write fault on a page homed here that is invalid and not yet registered as written here).
//!
//! A fresh home write fault a little after the previous one (at most [`MAX_WINDOW`] pages
//! beyond it, or beyond the pages it opened) continues a **stream**: a node filling its own
//! memory forwards, in order (an initialisation, a copy) or in tiles (a transpose into its
//! rows writes a few pages of each row, then the next few). It opens a window of the pages
//! after the faulting one at once, without their faults; the window doubles from
//! [`MIN_WINDOW`] on each further fault of the stream, up to [`MAX_WINDOW`]. A fault behind
//! the previous one, or far ahead of it, ends the stream.

/// The first window of a stream.
pub const MIN_WINDOW: usize = 2;
/// The largest window, in pages; also how far ahead a fault may be and continue a stream.
pub const MAX_WINDOW: usize = 64;

/// The stream of fresh home write faults of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    /// The last page the stream faulted on or opened (`usize::MAX`: none).
    last: usize,
    /// The window the last fault of the stream opened (0: no stream).
    window: usize,
}

impl Default for Stream {
    fn default() -> Stream {
        Stream {
            last: usize::MAX,
            window: 0,
        }
    }
}

impl Stream {
    /// A fresh home write fault on `page`: how many of the pages after it to open now.
    pub fn on_fault(&mut self, page: usize) -> usize {
        let near = self.last != usize::MAX && page > self.last && page - self.last <= MAX_WINDOW;
        self.window = if near {
            (self.window * 2).clamp(MIN_WINDOW, MAX_WINDOW)
        } else {
            0
        };
        self.last = page;
        self.window
    }

    /// `count` pages after `page` were opened: the stream goes on after them.
    pub fn opened(&mut self, page: usize, count: usize) {
        self.last = page.saturating_add(count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_opens_a_doubling_window_and_a_jump_ends_it() {
        let mut s = Stream::default();
        assert_eq!(s.on_fault(10), 0, "one fault is not a stream");
        assert_eq!(s.on_fault(11), MIN_WINDOW);
        s.opened(11, 2);
        assert_eq!(
            s.on_fault(14),
            4,
            "the fault after the opened pages continues it"
        );
        s.opened(14, 4);
        let mut page = 19;
        let mut last = 0;
        for _ in 0..10 {
            last = s.on_fault(page);
            s.opened(page, last);
            page += last + 1;
        }
        assert_eq!(last, MAX_WINDOW, "the window stops growing");
        assert_eq!(s.on_fault(page + MAX_WINDOW), 0, "a jump ends the stream");
        assert_eq!(
            s.on_fault(page + MAX_WINDOW + 1),
            MIN_WINDOW,
            "a new one starts small"
        );
        assert_eq!(s.on_fault(page), 0, "so does a fault behind it");
    }

    /// A transpose into this node's rows: a few pages of each row, then the next rows; every
    /// fault lands a few pages past what was opened and keeps the stream going.
    #[test]
    fn faults_a_few_pages_apart_continue_the_stream() {
        let mut s = Stream::default();
        s.on_fault(0);
        let w = s.on_fault(8);
        assert_eq!(w, MIN_WINDOW);
        s.opened(8, w);
        let w = s.on_fault(16);
        assert_eq!(w, 4);
        s.opened(16, 1);
        assert_eq!(s.on_fault(24), 8, "a window cut short keeps the stream");
    }
}
