//! Setting a verbs node up: creating the queue pairs (`prepare`), publishing the endpoint, and
//! connecting to every peer (`connect`).

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::chunks::Budget;
use super::config::VerbsConfig;
use super::control::{Control, Reassembly, FRAG};
use super::endpoint::{self, psn_for, Endpoint, Towards, MAX_NODES};
use super::progress::{progress, CqDriver};
use super::select::select;
use super::sendq::{Scratch, Sq};
use super::shared::{
    random_psn, KeyCache, Peer, Regions, Shared, Status, CTRL_DEPTH, INLINE_WANTED, RECV_BIT,
    REQ_DEPTH, SRQ_MAX,
};
use super::sys::{Channel, Cq, Path, Pd, Qp, Remote, Srq};
use super::transport::VerbsTransport;
use crate::error::{Error, Result};
use crate::mailbox::Mailbox;
use crate::types::Rank;

/// A node between the two set-up phases: queue pairs created, not yet connected.
#[derive(Debug)]
pub struct PreparedVerbs {
    pub(super) shared: Shared,
}

impl VerbsTransport {
    /// Opens the RDMA device, creates the protection domain, completion queue and one set of
    /// queue pairs per peer. Publish [`PreparedVerbs::endpoint`] to the other nodes, then call
    /// [`PreparedVerbs::connect`].
    ///
    /// # Errors
    /// [`Error::Unsupported`] when there is no RDMA device or no active port (naming what was
    /// found), [`Error::InvalidArgument`] for a rank outside the job or a job larger than the
    /// bootstrap can describe, [`Error::Io`] naming the verb that failed.
    pub fn prepare(rank: Rank, nodes: usize, config: VerbsConfig) -> Result<PreparedVerbs> {
        if nodes == 0 || rank.index() >= nodes {
            return Err(Error::InvalidArgument(format!(
                "rank {rank} in a job of {nodes} nodes"
            )));
        }
        if nodes > MAX_NODES {
            return Err(Error::InvalidArgument(format!(
                "the verbs backend supports at most {MAX_NODES} nodes (its endpoint must fit the bootstrap)"
            )));
        }
        let sel = select(&config)?;
        if !sel.caps.atomics {
            return Err(Error::Unsupported(format!(
                "{} does not support remote atomics",
                sel.ctx.name
            )));
        }
        let pd = Pd::new(&sel.ctx)?;
        let channel = Channel::new(&sel.ctx)?;
        let req_depth = REQ_DEPTH.min(sel.caps.max_qp_wr.max(8));
        let ctrl_depth = CTRL_DEPTH.min(sel.caps.max_qp_wr.max(8));
        let cqe = (nodes as u64 * u64::from(req_depth + 2 * ctrl_depth) + 64)
            .min(u64::from(sel.caps.max_cqe.max(64))) as u32;
        let cq = Cq::new(&sel.ctx, &channel, cqe)?;
        // One pool of receive buffers for every peer's control queue pair: 32 per peer up to
        // SRQ_MAX. A burst from many peers that finds it empty is held back by the senders'
        // receiver-not-ready retries (unlimited), not lost.
        let srq_depth = (CTRL_DEPTH as usize * nodes.saturating_sub(1))
            .clamp(CTRL_DEPTH as usize, SRQ_MAX as usize) as u32;
        let srq_depth = srq_depth.min(sel.caps.max_srq_wr.max(8));
        let srq = Arc::new(Srq::new(&pd, srq_depth)?);
        let recv = Scratch::new(&pd, srq_depth as usize, FRAG)?;
        for slot in 0..srq_depth as usize {
            // SAFETY: the slot lies in the registered receive scratch, which lives as long as
            // the shared receive queue (both end up in `Shared`, the scratch dropped after).
            unsafe {
                srq.post_recv(
                    RECV_BIT | slot as u64,
                    recv.addr(slot),
                    FRAG as u32,
                    recv.mr.lkey,
                )
            }
            .map_err(|rc| {
                Error::io(
                    "posting receive buffers (ibv_post_srq_recv)",
                    std::io::Error::from_raw_os_error(rc.max(1)),
                )
            })?;
        }
        let mut peers = Vec::with_capacity(nodes);
        let mut qpn = HashMap::new();
        let mut max_inline = usize::MAX;
        for p in 0..nodes {
            let req = Qp::new(&pd, &cq, req_depth, 1, INLINE_WANTED, None)?;
            let resp = Qp::new(&pd, &cq, 1, 1, 0, None)?;
            max_inline = max_inline.min(req.max_inline as usize);
            qpn.insert(req.qpn, (p, false));
            qpn.insert(resp.qpn, (p, false));
            let ctrl = if p == rank.index() {
                None
            } else {
                let q = Qp::new(&pd, &cq, ctrl_depth, 0, INLINE_WANTED, Some(&srq))?;
                max_inline = max_inline.min(q.max_inline as usize);
                qpn.insert(q.qpn, (p, true));
                let bounce = Scratch::new(&pd, ctrl_depth as usize, FRAG)?;
                Some(Sq::new(q, ctrl_depth as usize, bounce))
            };
            let results = Scratch::new(&pd, req_depth as usize, 8)?;
            peers.push(Peer {
                rank: Rank(p as u32),
                req: Sq::new(req, req_depth as usize, results),
                resp,
                ctrl,
                send_lock: Mutex::new(()),
                remote: Mutex::new(None),
                status: Mutex::new((Status::Up, None)),
                last_recv_ms: AtomicU64::new(0),
                last_send_ms: AtomicU64::new(0),
                heard: AtomicBool::new(false),
                assembly: Mutex::new(Reassembly::default()),
                keys: Mutex::new(KeyCache::default()),
                keys_changed: Condvar::new(),
            });
        }
        let flush = Scratch::new(&pd, 1, 64)?;
        // SAFETY: plain system call; the descriptor is owned right away.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(Error::io(
                "creating the progress thread's eventfd",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: `wake` is a fresh descriptor that nothing else owns.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let path = Path {
            port: sel.port,
            gid_index: sel.gid_index,
            global: sel.global,
            max_rd_atomic: sel.caps.max_qp_init_rd_atom.clamp(1, 16),
            max_dest_rd_atomic: sel.caps.max_qp_rd_atom.clamp(1, 16),
            timeout: 14,
            retry_cnt: 7,
        };
        let max_transfer = (sel.port_info.max_msg as usize).clamp(1, 1 << 30);
        let mailbox = Arc::new(Mailbox::new(nodes, config.spin));
        let budget = Arc::new(Budget::new(config.pin_max));
        if rank.0 == 0 {
            tracing::info!("verbs: using {}", sel.describe());
        }
        Ok(PreparedVerbs {
            shared: Shared {
                rank,
                nodes,
                config,
                sel,
                path,
                pd,
                cq,
                poll_lock: Mutex::new(()),
                regions: RwLock::new(Regions::default()),
                budget,
                peers,
                qpn,
                mailbox,
                flush,
                recv,
                srq,
                next_wr: AtomicU64::new(1),
                quiet: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                stopping: AtomicBool::new(false),
                wake,
                start: Instant::now(),
                max_inline: if max_inline == usize::MAX {
                    0
                } else {
                    max_inline
                },
                max_transfer,
            },
        })
    }

    /// Connects `n` nodes inside this process over the RDMA device: a whole job for tests.
    ///
    /// # Errors
    /// As [`VerbsTransport::prepare`] and [`PreparedVerbs::connect`].
    pub fn local_job(n: usize, config: &VerbsConfig) -> Result<Vec<VerbsTransport>> {
        let prepared = (0..n)
            .map(|r| VerbsTransport::prepare(Rank(r as u32), n, config.clone()))
            .collect::<Result<Vec<_>>>()?;
        let endpoints: Vec<Vec<u8>> = prepared.iter().map(PreparedVerbs::endpoint).collect();
        crate::job::connect_all(prepared, &endpoints, PreparedVerbs::connect)
    }
}

impl PreparedVerbs {
    /// The device, port and GID this node will use.
    pub fn device(&self) -> String {
        self.shared.sel.describe()
    }

    /// This node's endpoint for the bootstrap's table: its GID, LID and MTU, the key of its
    /// flush word, and for every peer the numbers and first packet sequence numbers of the queue
    /// pairs meant for it.
    pub fn endpoint(&self) -> Vec<u8> {
        let s = &self.shared;
        Endpoint {
            rank: s.rank.0,
            lid: s.sel.port_info.lid,
            mtu: s.sel.port_info.active_mtu as u8,
            global: s.sel.global,
            gid: s.sel.gid,
            flush_rkey: s.flush.mr.rkey,
            flush_addr: s.flush.addr(0),
            towards: s
                .peers
                .iter()
                .map(|peer| Towards {
                    ctrl_qpn: peer.ctrl.as_ref().map_or(0, |c| c.qp.qpn),
                    ctrl_psn: psn_for(s.rank.0, peer.rank.0, 0),
                    req_qpn: peer.req.qp.qpn,
                    req_psn: psn_for(s.rank.0, peer.rank.0, 1),
                    resp_qpn: peer.resp.qpn,
                })
                .collect(),
        }
        .encode()
    }

    /// Like [`PreparedVerbs::connect`], delivering messages into `mailbox` (shared with
    /// another backend: [`crate::mixed`]).
    pub(crate) fn connect_sharing(
        mut self,
        endpoints: &[Vec<u8>],
        mailbox: Arc<Mailbox>,
    ) -> Result<VerbsTransport> {
        self.shared.mailbox = mailbox;
        self.connect(endpoints)
    }

    /// Whether it was prepared with [`VerbsConfig::chunk_all`].
    pub fn chunk_all(&self) -> bool {
        self.shared.config.chunk_all
    }

    /// How long a waiter spins before it sleeps.
    pub(crate) fn spin(&self) -> Duration {
        self.shared.config.spin
    }

    /// Connects every queue pair to its peer's (given every node's endpoint, indexed by rank),
    /// starts the progress thread and waits until every peer has answered over RDMA.
    ///
    /// # Errors
    /// [`Error::Protocol`] for a malformed endpoint, [`Error::Io`] naming the verb that failed,
    /// [`Error::Timeout`] naming the ranks that did not answer within the connect timeout.
    pub fn connect(self, endpoints: &[Vec<u8>]) -> Result<VerbsTransport> {
        let s = self.shared;
        if endpoints.len() != s.nodes {
            return Err(Error::InvalidArgument(format!(
                "{} endpoints for a job of {} nodes",
                endpoints.len(),
                s.nodes
            )));
        }
        let me = s.rank.index();
        for (p, ep) in endpoints.iter().enumerate() {
            let e = endpoint::decode(ep, s.nodes, p, me)?;
            *s.peers[p].remote.lock().unwrap_or_else(|x| x.into_inner()) = Some(e);
        }
        for (p, peer) in s.peers.iter().enumerate() {
            let Some(e) = *peer.remote.lock().unwrap_or_else(|x| x.into_inner()) else {
                continue;
            };
            let remote = |qpn, psn| Remote {
                qpn,
                psn,
                gid: e.gid,
                lid: e.lid,
                mtu: e.mtu,
            };
            let mtu = s.sel.port_info.active_mtu;
            peer.resp
                .connect(&s.path, &remote(e.req_qpn, e.req_psn), random_psn(), mtu)?;
            peer.req.qp.connect(
                &s.path,
                &remote(e.resp_qpn, 0),
                psn_for(me as u32, p as u32, 1),
                mtu,
            )?;
            if let Some(ctrl) = &peer.ctrl {
                ctrl.qp.connect(
                    &s.path,
                    &remote(e.ctrl_qpn, e.ctrl_psn),
                    psn_for(me as u32, p as u32, 0),
                    mtu,
                )?;
            }
        }
        let now = s.now_ms();
        for peer in &s.peers {
            peer.last_recv_ms.store(now, Ordering::Relaxed);
        }
        let connect_timeout = s.config.connect_timeout;
        let shared = Arc::new(s);
        let thread_shared = Arc::clone(&shared);
        let hook = shared.config.on_progress_start.clone();
        let progress = std::thread::Builder::new()
            .name(format!("dsm-verbs-{}", shared.rank))
            .spawn(move || {
                if let Some(h) = hook {
                    h.run();
                }
                progress(thread_shared)
            })
            .map_err(|e| Error::io("starting the progress thread", e))?;
        let t = VerbsTransport {
            driver: Arc::new(CqDriver(Arc::clone(&shared))),
            shared,
            progress: Mutex::new(Some(progress)),
            closed: AtomicBool::new(false),
        };
        // Say hello to everyone and wait until everyone has said hello: afterwards every
        // peer's queue pairs are ready for us.
        let sh = &t.shared;
        let deadline = Instant::now() + connect_timeout;
        for p in 0..sh.nodes {
            if p != me {
                sh.send_ctrl(p, &Control::Hello, true)?;
            }
        }
        loop {
            let missing: Vec<String> = (0..sh.nodes)
                .filter(|&p| p != me && !sh.peers[p].heard.load(Ordering::Acquire))
                .map(|p| p.to_string())
                .collect();
            if missing.is_empty() {
                break;
            }
            if let Some(e) = (0..sh.nodes).find_map(|p| sh.peer_error(p)) {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "ranks {} did not answer over RDMA within {:?} (device {}; check that every node uses the same fabric, DSM_RDMA_GID_INDEX and DSM_RDMA_PORT)",
                    missing.join(", "),
                    connect_timeout,
                    sh.sel.describe()
                )));
            }
            sh.drive(false);
            std::thread::park_timeout(Duration::from_millis(1));
        }
        Ok(t)
    }
}
