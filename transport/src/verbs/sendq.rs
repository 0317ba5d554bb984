//! Send queues: a queue pair's send side with what is outstanding on it, in posting order, and
//! posting chains of work requests onto it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::sys::{Mr, Pd, Qp, Wr, WrKind};
use crate::completion::Completer;
use crate::error::{Error, Result};
use crate::region::Region;
use crate::types::{LocalSlice, Rank};

/// Internal registered scratch memory: atomic results, message bounce buffers.
#[derive(Debug)]
pub(super) struct Scratch {
    pub(super) mr: Mr,
    pub(super) region: Arc<Region>,
    pub(super) slot: usize,
}

impl Scratch {
    pub(super) fn new(pd: &Arc<Pd>, slots: usize, slot: usize) -> Result<Scratch> {
        let region = Region::allocate(slots * slot)?;
        // SAFETY: the region is owned here and dropped after the registration (field order and
        // `Scratch` is never taken apart).
        let mr = unsafe { Mr::register(pd, region.as_ptr(), region.len()) }?;
        Ok(Scratch { mr, region, slot })
    }
    pub(super) fn addr(&self, pos: usize) -> u64 {
        self.region.as_ptr() as u64 + (pos * self.slot) as u64
    }
}

/// One posted work request, in posting order.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) wr_id: u64,
    pub(super) pos: usize,
    pub(super) name: &'static str,
    pub(super) len: usize,
    pub(super) atomic: bool,
    pub(super) done: Option<Completer>,
    pub(super) _keep: Option<LocalSlice>,
    /// As [`Item::continued`].
    pub(super) continued: bool,
}

#[derive(Debug, Clone)]
pub(super) enum SqState {
    Ready,
    /// Reconnecting after a refused access; posts wait.
    Recovering {
        psn: u32,
    },
    Dead(Error),
}

#[derive(Debug)]
pub(super) struct SqInner {
    pub(super) entries: VecDeque<Entry>,
    pub(super) first_pos: usize,
    pub(super) unsignaled: usize,
    pub(super) state: SqState,
}

/// A send queue and what is outstanding on it.
#[derive(Debug)]
pub(super) struct Sq {
    pub(super) qp: Qp,
    pub(super) depth: usize,
    pub(super) scratch: Scratch,
    pub(super) inner: Mutex<SqInner>,
    pub(super) changed: Condvar,
}

impl Sq {
    pub(super) fn new(qp: Qp, depth: usize, scratch: Scratch) -> Sq {
        Sq {
            qp,
            depth,
            scratch,
            inner: Mutex::new(SqInner {
                entries: VecDeque::new(),
                first_pos: 0,
                unsignaled: 0,
                state: SqState::Ready,
            }),
            changed: Condvar::new(),
        }
    }
    pub(super) fn lock(&self) -> MutexGuard<'_, SqInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a work request's local side is.
#[derive(Debug)]
pub(super) enum Local {
    Slice(LocalSlice, u32),
    /// The 8-byte result slot of an atomic.
    Result,
    /// Message bytes: inline when small, else copied into the send slot.
    Bytes(Vec<u8>),
}

#[derive(Debug)]
pub(super) struct Item {
    pub(super) kind: WrKind,
    pub(super) local: Local,
    pub(super) name: &'static str,
    pub(super) done: Option<Completer>,
    /// Signal even without a waiter (rare control messages, so that their queue drains).
    pub(super) signal: bool,
    /// Has a waiter, but a later signalled request of the same chain completes it (RC
    /// completes in order): it may go unsignalled.
    pub(super) chained: bool,
    /// More pieces of the same operation follow (a transfer cut at chunk boundaries): the
    /// operation's own error reaches its waiter if this piece fails.
    pub(super) continued: bool,
}

/// What posting needs besides the queue: whom it goes to, how long to wait, and how to make
/// progress while waiting.
pub(super) struct Posting<'a, D: Fn()> {
    /// The peer at the other end (for errors).
    pub(super) peer: Rank,
    /// How long to wait for room or recovery.
    pub(super) timeout: Duration,
    /// Set when the transport starts closing: waiting posts give up.
    pub(super) closing: &'a AtomicBool,
    /// The largest inline send.
    pub(super) max_inline: usize,
    /// The transport's work-request numbers.
    pub(super) next_wr: &'a AtomicU64,
    /// Polls the completion queue once (what frees room).
    pub(super) drive: D,
}

impl Sq {
    /// Posts `items` on this queue, waiting for room and for recovery.
    /// `wait`: whether to wait for room at all (heartbeats do not).
    ///
    /// # Errors
    /// The queue's death, [`Error::Closed`] once closing starts, [`Error::Timeout`] when room
    /// or recovery takes longer than the posting's timeout, [`Error::Io`] when the post fails.
    pub(super) fn post(
        &self,
        items: Vec<Item>,
        wait: bool,
        ctx: &Posting<'_, impl Fn()>,
    ) -> Result<()> {
        let mut items = items.into_iter().peekable();
        let chunk = (self.depth / 2).max(1);
        while items.peek().is_some() {
            let deadline = Instant::now() + ctx.timeout;
            let mut inner = self.lock();
            loop {
                if ctx.closing.load(Ordering::Acquire) && wait {
                    return Err(Error::Closed);
                }
                match &inner.state {
                    SqState::Dead(e) => return Err(e.clone()),
                    SqState::Ready if self.depth - inner.entries.len() >= 1 => break,
                    state => {
                        if !wait {
                            return Ok(());
                        }
                        if Instant::now() >= deadline {
                            return Err(Error::Timeout(format!(
                                "{} to rank {}",
                                if matches!(state, SqState::Ready) {
                                    "waiting for room in the send queue"
                                } else {
                                    "waiting for the queue pair to recover"
                                },
                                ctx.peer
                            )));
                        }
                    }
                }
                drop(inner);
                (ctx.drive)();
                std::thread::yield_now();
                inner = self.lock();
            }
            let room = (self.depth - inner.entries.len()).min(chunk);
            let mut wrs = Vec::with_capacity(room);
            let mut entries = Vec::with_capacity(room);
            let mut inline_bufs: Vec<Vec<u8>> = Vec::new();
            let mut taken = 0;
            while taken < room {
                let Some(item) = items.next() else { break };
                taken += 1;
                let pos = (inner.first_pos + inner.entries.len() + entries.len()) % self.depth;
                let free_after = self.depth - inner.entries.len() - entries.len() - 1;
                let signaled = (item.done.is_some() && !item.chained)
                    || item.signal
                    || inner.unsignaled + 1 >= self.depth / 2
                    || free_after < (self.depth / 4).max(1);
                let (addr, len, lkey, inline, keep, atomic) = match item.local {
                    Local::Slice(s, lkey) => {
                        let addr = s.region().as_ptr() as u64 + s.offset() as u64;
                        let len = s.len();
                        let inline =
                            matches!(item.kind, WrKind::Write { .. }) && len <= ctx.max_inline;
                        (addr, len, lkey, inline, Some(s), false)
                    }
                    Local::Result => (
                        self.scratch.addr(pos),
                        8,
                        self.scratch.mr.lkey,
                        false,
                        None,
                        true,
                    ),
                    Local::Bytes(b) => {
                        if b.len() <= ctx.max_inline {
                            let addr = b.as_ptr() as u64;
                            let len = b.len();
                            inline_bufs.push(b);
                            (addr, len, 0, true, None, false)
                        } else {
                            self.scratch.region.write_at(pos * self.scratch.slot, &b)?;
                            (
                                self.scratch.addr(pos),
                                b.len(),
                                self.scratch.mr.lkey,
                                false,
                                None,
                                false,
                            )
                        }
                    }
                };
                let wr_id = ctx.next_wr.fetch_add(1, Ordering::Relaxed);
                wrs.push(Wr {
                    wr_id,
                    kind: item.kind,
                    addr,
                    len: len as u32,
                    lkey,
                    signaled,
                    inline,
                });
                if signaled {
                    inner.unsignaled = 0;
                } else {
                    inner.unsignaled += 1;
                }
                entries.push(Entry {
                    wr_id,
                    pos,
                    name: item.name,
                    len,
                    atomic,
                    done: item.done,
                    _keep: keep,
                    continued: item.continued,
                });
            }
            // SAFETY: every non-inline local buffer is registered (lkey looked up above, or
            // internal scratch) and kept alive until completion: user slices by the entry's
            // `_keep`, scratch slots by `sq`, which lives as long as the QP. Inline buffers
            // live until the call returns.
            let posted = unsafe { self.qp.post_send(&wrs) };
            drop(inline_bufs);
            match posted {
                Ok(()) => inner.entries.extend(entries),
                Err((rc, at)) => {
                    let name = entries.get(at).map_or("work request", |e| e.name);
                    let mut rest = entries.split_off(at.min(entries.len()));
                    inner.entries.extend(entries);
                    for e in rest.drain(..) {
                        if let Some(d) = e.done {
                            d.fail(Error::Closed);
                        }
                    }
                    return Err(Error::io(
                        format!("posting {name} to rank {} (ibv_post_send)", ctx.peer),
                        std::io::Error::from_raw_os_error(if rc > 0 { rc } else { libc::EIO }),
                    ));
                }
            }
        }
        Ok(())
    }
}
