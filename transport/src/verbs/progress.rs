//! Progress: polling the completion queue (by the progress thread, or by a waiter), what each
//! completion means (operations completed or failed, control messages received), recovery of
//! queue pairs broken by refused accesses, lost peers, heartbeats.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::{Control, FRAG};
use super::sendq::SqState;
use super::shared::{random_psn, Shared, Status, RECV_BIT};
use super::sys::{Remote, Wc};
use crate::completion::Driver;
use crate::error::{Error, RemoteFault};
use crate::types::{Message, Tag};

/// Work found while holding the completion queue that must be done after releasing it.
#[derive(Debug)]
pub(super) enum Action {
    Recover(usize, u32),
    ServeReset(usize, u32),
    Reconnect(usize),
    Lose(usize, Error),
    /// Peer `p` asks for the key of chunk `.2` of our region `.1`.
    ServeKey(usize, u32, u32),
}

impl Shared {
    /// Polls the completion queue once (`block_lock`: wait for the poll lock instead of giving
    /// up when another thread polls), handles what it finds, then does the follow-up work.
    /// Returns how many completions were handled.
    pub(super) fn drive(&self, block_lock: bool) -> usize {
        let guard = if block_lock {
            Some(self.poll_lock.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            match self.poll_lock.try_lock() {
                Ok(g) => Some(g),
                Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            }
        };
        let Some(guard) = guard else { return 0 };
        let mut wcs = Vec::new();
        let mut total = 0;
        let mut actions = Vec::new();
        while self.cq.poll(&mut wcs, 32) > 0 {
            for wc in wcs.drain(..) {
                total += 1;
                self.handle(&wc, &mut actions);
            }
            if total >= 256 {
                break;
            }
        }
        drop(guard);
        for a in actions {
            self.act(a);
        }
        total
    }

    fn handle(&self, wc: &Wc, actions: &mut Vec<Action>) {
        if wc.wr_id & RECV_BIT != 0 {
            self.handle_recv(wc, actions);
            return;
        }
        let Some(&(p, is_ctrl)) = self.qpn.get(&wc.qp_num) else {
            return;
        };
        let peer = &self.peers[p];
        let sq = if is_ctrl {
            match &peer.ctrl {
                Some(c) => c,
                None => return,
            }
        } else {
            &peer.req
        };
        let mut inner = sq.lock();
        if !inner.entries.iter().any(|e| e.wr_id == wc.wr_id) {
            return; // from before a reset or a loss: already accounted for
        }
        while let Some(e) = inner.entries.pop_front() {
            let pos = inner.first_pos;
            inner.first_pos = (pos + 1) % sq.depth;
            let this = e.wr_id == wc.wr_id;
            if !this || wc.ok() {
                let value = if e.atomic {
                    sq.scratch
                        .region
                        .atomic_u64(e.pos * 8)
                        .map(|w| w.load(Ordering::Acquire))
                        .unwrap_or(0)
                } else {
                    0
                };
                if let Some(d) = e.done {
                    d.complete(value);
                }
                if this {
                    break;
                }
                continue;
            }
            // The failed request: what it means depends on the status.
            let status = wc.status_str();
            let err = if wc.remote_access() {
                tracing::debug!("{} to rank {} refused: {status}", e.name, peer.rank);
                Error::Remote {
                    peer: peer.rank,
                    fault: RemoteFault::BadKey,
                }
            } else if wc.remote_invalid() {
                tracing::debug!("{} to rank {} refused: {status}", e.name, peer.rank);
                Error::Remote {
                    peer: peer.rank,
                    fault: RemoteFault::OutOfBounds,
                }
            } else if wc.unreachable() || is_ctrl || wc.flushed() {
                Error::PeerLost {
                    peer: peer.rank,
                    reason: format!("{} of {} bytes failed: {status}", e.name, e.len),
                }
            } else {
                Error::io(
                    format!("{} of {} bytes to rank {} failed", e.name, e.len, peer.rank),
                    std::io::Error::other(status.clone()),
                )
            };
            if let Some(d) = e.done {
                d.fail(err.clone());
            }
            let flushed = Error::io(
                format!(
                    "operation to rank {} flushed: an earlier {} on the same queue pair failed",
                    peer.rank, e.name
                ),
                std::io::Error::other(err.to_string()),
            );
            // The rest of a cut transfer is the same operation: its own error.
            let mut same_op = e.continued;
            for later in inner.entries.drain(..) {
                if let Some(d) = later.done {
                    d.fail(match &err {
                        Error::PeerLost { .. } => err.clone(),
                        _ if same_op => err.clone(),
                        _ => flushed.clone(),
                    });
                }
                same_op = same_op && later.continued;
            }
            inner.first_pos = 0;
            inner.unsignaled = 0;
            if matches!(err, Error::PeerLost { .. }) {
                let closed = matches!(peer.status.lock().map(|s| s.0), Ok(Status::Closed));
                if closed {
                    inner.state = SqState::Dead(Error::PeerClosed(peer.rank));
                } else {
                    actions.push(Action::Lose(p, err));
                }
            } else {
                let psn = random_psn();
                inner.state = SqState::Recovering { psn };
                actions.push(Action::Recover(p, psn));
            }
            break;
        }
        drop(inner);
        sq.changed.notify_all();
    }

    fn handle_recv(&self, wc: &Wc, actions: &mut Vec<Action>) {
        let slot = (wc.wr_id & 0xfffff) as usize;
        let recv = &self.recv;
        let copied = wc.ok().then(|| {
            let mut buf = vec![0u8; (wc.byte_len as usize).min(FRAG)];
            recv.region.read_at(slot * FRAG, &mut buf).map(|()| buf)
        });
        // The slot is copied out (or its receive failed): give it back to the shared receive
        // queue at once, whichever peer it served.
        if !self.closing.load(Ordering::Acquire) {
            // SAFETY: the slot lies inside the registered receive scratch, which lives as long
            // as the shared receive queue (both are fields of `self`).
            let rc = unsafe {
                self.srq
                    .post_recv(wc.wr_id, recv.addr(slot), FRAG as u32, recv.mr.lkey)
            };
            if rc.is_err() {
                tracing::debug!("re-posting receive slot {slot} failed");
            }
        }
        let Some(&(p, true)) = self.qpn.get(&wc.qp_num) else {
            return;
        };
        let peer = &self.peers[p];
        let Some(copied) = copied else {
            let up = matches!(peer.status.lock().map(|s| s.0), Ok(Status::Up));
            if up && !self.closing.load(Ordering::Acquire) {
                actions.push(Action::Lose(
                    p,
                    Error::PeerLost {
                        peer: peer.rank,
                        reason: format!("receive failed: {}", wc.status_str()),
                    },
                ));
            }
            return;
        };
        let Ok(buf) = copied else {
            return;
        };
        peer.last_recv_ms.store(self.now_ms(), Ordering::Relaxed);
        peer.heard.store(true, Ordering::Release);
        if let Err(detail) = self.on_message(p, &buf, actions) {
            actions.push(Action::Lose(
                p,
                Error::Protocol {
                    from: peer.rank,
                    detail,
                },
            ));
        }
    }

    fn on_message(
        &self,
        p: usize,
        buf: &[u8],
        actions: &mut Vec<Action>,
    ) -> std::result::Result<(), String> {
        let peer = &self.peers[p];
        match Control::decode(buf)? {
            Control::Hello => Ok(()),
            Control::Goodbye => {
                let mut st = peer.status.lock().unwrap_or_else(|e| e.into_inner());
                if st.0 == Status::Up {
                    *st = (Status::Closed, Some(Error::PeerClosed(peer.rank)));
                    drop(st);
                    self.mailbox
                        .peer_down(peer.rank, Error::PeerClosed(peer.rank));
                }
                Ok(())
            }
            Control::Reset { psn } => {
                actions.push(Action::ServeReset(p, psn));
                Ok(())
            }
            Control::ResetAck => {
                actions.push(Action::Reconnect(p));
                Ok(())
            }
            // Registering may take a while: after the completion queue is released.
            Control::KeyRequest { region, chunk } => {
                actions.push(Action::ServeKey(p, region, chunk));
                Ok(())
            }
            Control::KeyReply { region, chunk, key } => {
                self.key_answer(p, region, chunk, key);
                Ok(())
            }
            Control::Fragment(f) => {
                let mut asm = peer.assembly.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((tag, data)) = asm.push(f, self.config.max_message)? {
                    self.mailbox.deliver(Message {
                        source: peer.rank,
                        tag: Tag(tag),
                        data,
                    });
                }
                Ok(())
            }
        }
    }

    fn act(&self, a: Action) {
        match a {
            Action::Lose(p, e) => self.lose(p, e),
            Action::Recover(p, psn) => {
                if p == self.rank.index() {
                    self.serve_reset(p, psn);
                    self.reconnect(p);
                } else if let Err(e) = self.send_ctrl(p, &Control::Reset { psn }, true) {
                    self.lose(
                        p,
                        Error::PeerLost {
                            peer: self.peers[p].rank,
                            reason: format!("could not ask it to reset a queue pair: {e}"),
                        },
                    );
                }
            }
            Action::ServeReset(p, psn) => {
                self.serve_reset(p, psn);
                if p != self.rank.index() {
                    let _ = self.send_ctrl(p, &Control::ResetAck, true);
                }
            }
            Action::Reconnect(p) => self.reconnect(p),
            Action::ServeKey(p, region, chunk) => {
                let key = self.serve_key(region, chunk);
                // The peer waits for this answer: one that cannot be sent (a control queue
                // that stays full, or broken) ends the connection rather than leave it waiting.
                if let Err(e) = self.send_ctrl(p, &Control::KeyReply { region, chunk, key }, true) {
                    self.lose(
                        p,
                        Error::PeerLost {
                            peer: self.peers[p].rank,
                            reason: format!("could not answer its request for a key: {e}"),
                        },
                    );
                }
            }
        }
    }

    /// Reconnects our responder queue pair for peer `p`, whose requester restarts at `psn`.
    fn serve_reset(&self, p: usize, psn: u32) {
        let Some(ep) = self.endpoint_of(p) else {
            return;
        };
        let remote = Remote {
            qpn: ep.req_qpn,
            psn,
            gid: ep.gid,
            lid: ep.lid,
            mtu: ep.mtu,
        };
        if let Err(e) = self.peers[p].resp.connect(
            &self.path,
            &remote,
            random_psn(),
            self.sel.port_info.active_mtu,
        ) {
            tracing::warn!("resetting the queue pair serving rank {p}: {e}");
        }
    }

    /// Reconnects our requester queue pair to peer `p` once its responder has been reset.
    fn reconnect(&self, p: usize) {
        let Some(ep) = self.endpoint_of(p) else {
            return;
        };
        let sq = &self.peers[p].req;
        let mut inner = sq.lock();
        let SqState::Recovering { psn } = inner.state else {
            return;
        };
        let remote = Remote {
            qpn: ep.resp_qpn,
            psn: 0,
            gid: ep.gid,
            lid: ep.lid,
            mtu: ep.mtu,
        };
        match sq
            .qp
            .connect(&self.path, &remote, psn, self.sel.port_info.active_mtu)
        {
            Ok(()) => {
                inner.entries.clear();
                inner.first_pos = 0;
                inner.unsignaled = 0;
                inner.state = SqState::Ready;
            }
            Err(e) => {
                inner.state = SqState::Dead(Error::PeerLost {
                    peer: self.peers[p].rank,
                    reason: format!("reconnecting after a refused access failed: {e}"),
                })
            }
        }
        drop(inner);
        sq.changed.notify_all();
    }

    /// Declares peer `p` lost: every operation on it fails, receivers waiting for it wake up.
    fn lose(&self, p: usize, err: Error) {
        let peer = &self.peers[p];
        {
            let mut st = peer.status.lock().unwrap_or_else(|e| e.into_inner());
            if st.0 != Status::Up {
                return;
            }
            *st = (Status::Lost, Some(err.clone()));
        }
        tracing::debug!("rank {}: {err}", self.rank);
        self.mailbox.peer_down(peer.rank, err.clone());
        for sq in std::iter::once(&peer.req).chain(peer.ctrl.as_ref()) {
            let mut inner = sq.lock();
            inner.state = SqState::Dead(err.clone());
            for e in inner.entries.drain(..) {
                if let Some(d) = e.done {
                    d.fail(err.clone());
                }
            }
            sq.qp.to_error();
            drop(inner);
            sq.changed.notify_all();
        }
        peer.resp.to_error();
        peer.keys_changed.notify_all();
    }
}

/// The progress thread: completions, heartbeats, silent peers.
pub(super) fn progress(shared: Arc<Shared>) {
    let hb = (shared.config.peer_timeout / 4).max(Duration::from_millis(10));
    let tick = hb.min(Duration::from_millis(100));
    let mut last_work = Instant::now();
    let mut last_check = Instant::now();
    while !shared.stopping.load(Ordering::Acquire) {
        if shared.drive(true) > 0 {
            last_work = Instant::now();
            continue;
        }
        if last_check.elapsed() >= tick {
            last_check = Instant::now();
            let now = shared.now_ms();
            for (p, peer) in shared.peers.iter().enumerate() {
                if p == shared.rank.index() || shared.peer_error(p).is_some() {
                    continue;
                }
                if !shared.quiet.load(Ordering::Acquire)
                    && now.saturating_sub(peer.last_send_ms.load(Ordering::Relaxed))
                        >= hb.as_millis() as u64
                {
                    let _ = shared.send_ctrl(p, &Control::Hello, false);
                }
                let silent = now.saturating_sub(peer.last_recv_ms.load(Ordering::Relaxed));
                if silent >= shared.config.peer_timeout.as_millis() as u64 {
                    shared.lose(
                        p,
                        Error::PeerLost {
                            peer: peer.rank,
                            reason: format!(
                                "silent for {:.1} s (no heartbeat over RDMA)",
                                silent as f64 / 1000.0
                            ),
                        },
                    );
                }
            }
        }
        if last_work.elapsed() < shared.config.spin {
            std::hint::spin_loop();
            continue;
        }
        // Block: arm, look once more, then sleep on the channel (or the wake-up descriptor).
        shared.cq.arm();
        if shared.drive(true) > 0 {
            last_work = Instant::now();
            continue;
        }
        let mut fds = [
            libc::pollfd {
                fd: shared.cq.channel.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: shared.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries; a bounded timeout.
        let _ = unsafe { libc::poll(fds.as_mut_ptr(), 2, tick.as_millis() as i32) };
        shared.cq.channel.drain();
        if fds[1].revents != 0 {
            let mut v: u64 = 0;
            // SAFETY: reading 8 bytes into a live u64 from our own non-blocking eventfd.
            let _ = unsafe {
                libc::read(
                    shared.wake.as_raw_fd(),
                    (&mut v as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}

/// Lets a thread waiting for a completion poll the completion queue itself.
#[derive(Debug)]
pub(super) struct CqDriver(pub(super) Arc<Shared>);

impl Driver for CqDriver {
    fn drive(&self) {
        self.0.drive(false);
    }
}
