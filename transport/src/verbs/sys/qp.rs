//! The queue pair: creation, the connection's state changes (INIT, RTR, RTS) and posting work
//! requests, with what a work request and a connection's settings are.

use std::io;
use std::os::raw::c_int;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rdma_sys as ibv;

use super::{errno_error, Cq, Pd, Srq};
use crate::error::{Error, Result};

/// Where a connected queue pair sends to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remote {
    pub(crate) qpn: u32,
    pub(crate) psn: u32,
    pub(crate) gid: [u8; 16],
    pub(crate) lid: u16,
    pub(crate) mtu: u32,
}

/// Settings of a queue pair's connection that do not depend on the peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Path {
    pub(crate) port: u8,
    pub(crate) gid_index: u8,
    pub(crate) global: bool,
    pub(crate) max_rd_atomic: u8,
    pub(crate) max_dest_rd_atomic: u8,
    pub(crate) timeout: u8,
    pub(crate) retry_cnt: u8,
}

/// What one work request does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WrKind {
    Read {
        raddr: u64,
        rkey: u32,
    },
    Write {
        raddr: u64,
        rkey: u32,
    },
    CompareSwap {
        raddr: u64,
        rkey: u32,
        expected: u64,
        desired: u64,
    },
    FetchAdd {
        raddr: u64,
        rkey: u32,
        add: u64,
    },
    Send,
}

/// One send work request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wr {
    pub(crate) wr_id: u64,
    pub(crate) kind: WrKind,
    /// Local buffer: address, length, lkey (`len == 0`: no scatter/gather entry).
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) lkey: u32,
    pub(crate) signaled: bool,
    pub(crate) inline: bool,
}

/// A reliable-connected queue pair.
pub(crate) struct Qp {
    qp: NonNull<ibv::ibv_qp>,
    pub(crate) qpn: u32,
    pub(crate) max_inline: u32,
    _pd: Arc<Pd>,
    _cq: Arc<Cq>,
    _srq: Option<Arc<Srq>>,
}

// SAFETY: posting and modifying are thread-safe in libibverbs; the owner serialises them anyway.
unsafe impl Send for Qp {}
// SAFETY: as above.
unsafe impl Sync for Qp {}

impl std::fmt::Debug for Qp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Qp({})", self.qpn)
    }
}

impl Qp {
    /// Creates an RC queue pair on `cq` (sends and receives), asking for `inline` bytes of
    /// inline data (falling back to none when the device refuses). Its receives come from
    /// `srq` when given (then `recv` is not used), else from its own `recv` slots.
    pub(crate) fn new(
        pd: &Arc<Pd>,
        cq: &Arc<Cq>,
        send: u32,
        recv: u32,
        inline: u32,
        srq: Option<&Arc<Srq>>,
    ) -> Result<Qp> {
        let mut last = None;
        for inline in [inline, 0] {
            let mut init = ibv::ibv_qp_init_attr {
                qp_context: ptr::null_mut(),
                send_cq: cq.cq.as_ptr(),
                recv_cq: cq.cq.as_ptr(),
                srq: srq.map_or(ptr::null_mut(), |s| s.raw()),
                cap: ibv::ibv_qp_cap {
                    max_send_wr: send,
                    max_recv_wr: if srq.is_some() { 0 } else { recv.max(1) },
                    max_send_sge: 1,
                    max_recv_sge: 1,
                    max_inline_data: inline,
                },
                qp_type: ibv::ibv_qp_type::IBV_QPT_RC,
                sq_sig_all: 0,
            };
            // SAFETY: valid PD and attributes; the CQ outlives the QP (held below).
            let qp = unsafe { ibv::ibv_create_qp(pd.pd.as_ptr(), &mut init) };
            if let Some(qp) = NonNull::new(qp) {
                // SAFETY: live QP.
                let qpn = unsafe { (*qp.as_ptr()).qp_num };
                return Ok(Qp {
                    qp,
                    qpn,
                    max_inline: init.cap.max_inline_data,
                    _pd: Arc::clone(pd),
                    _cq: Arc::clone(cq),
                    _srq: srq.cloned(),
                });
            }
            last = Some(io::Error::last_os_error());
        }
        Err(Error::io(
            format!(
                "creating a queue pair ({send} sends, {recv} receives) on {} (ibv_create_qp)",
                pd.ctx.name
            ),
            last.unwrap_or_else(|| io::Error::other("unknown")),
        ))
    }

    fn modify(
        &self,
        attr: &mut ibv::ibv_qp_attr,
        mask: ibv::ibv_qp_attr_mask,
        what: &str,
    ) -> Result<()> {
        // SAFETY: live QP; valid attributes for the mask.
        let rc = unsafe { ibv::ibv_modify_qp(self.qp.as_ptr(), attr, mask.0 as c_int) };
        if rc != 0 {
            return Err(errno_error(
                format!("moving queue pair {} to {what} (ibv_modify_qp)", self.qpn),
                rc,
            ));
        }
        Ok(())
    }

    fn zeroed_attr() -> ibv::ibv_qp_attr {
        // SAFETY: `ibv_qp_attr` is plain data (integers, and GIDs that are byte arrays).
        unsafe { std::mem::zeroed() }
    }

    /// RESET, then INIT, RTR and RTS towards `remote`, sending from `sq_psn`.
    pub(crate) fn connect(
        &self,
        path: &Path,
        remote: &Remote,
        sq_psn: u32,
        my_mtu: u32,
    ) -> Result<()> {
        use ibv::ibv_qp_attr_mask as m;
        let mut a = Self::zeroed_attr();
        a.qp_state = ibv::ibv_qp_state::IBV_QPS_RESET;
        self.modify(&mut a, m::IBV_QP_STATE, "RESET")?;

        let mut a = Self::zeroed_attr();
        a.qp_state = ibv::ibv_qp_state::IBV_QPS_INIT;
        a.pkey_index = 0;
        a.port_num = path.port;
        a.qp_access_flags = (ibv::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv::ibv_access_flags::IBV_ACCESS_REMOTE_READ
            | ibv::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            | ibv::ibv_access_flags::IBV_ACCESS_REMOTE_ATOMIC)
            .0;
        self.modify(
            &mut a,
            m::IBV_QP_STATE | m::IBV_QP_PKEY_INDEX | m::IBV_QP_PORT | m::IBV_QP_ACCESS_FLAGS,
            "INIT",
        )?;

        let mut a = Self::zeroed_attr();
        a.qp_state = ibv::ibv_qp_state::IBV_QPS_RTR;
        a.path_mtu = my_mtu.min(remote.mtu).max(ibv::ibv_mtu::IBV_MTU_256);
        a.dest_qp_num = remote.qpn;
        a.rq_psn = remote.psn;
        a.max_dest_rd_atomic = path.max_dest_rd_atomic;
        a.min_rnr_timer = 12;
        a.ah_attr.dlid = remote.lid;
        a.ah_attr.sl = 0;
        a.ah_attr.src_path_bits = 0;
        a.ah_attr.port_num = path.port;
        if path.global {
            a.ah_attr.is_global = 1;
            a.ah_attr.grh.dgid = ibv::ibv_gid { raw: remote.gid };
            a.ah_attr.grh.sgid_index = path.gid_index;
            a.ah_attr.grh.hop_limit = 64;
        }
        self.modify(
            &mut a,
            m::IBV_QP_STATE
                | m::IBV_QP_AV
                | m::IBV_QP_PATH_MTU
                | m::IBV_QP_DEST_QPN
                | m::IBV_QP_RQ_PSN
                | m::IBV_QP_MAX_DEST_RD_ATOMIC
                | m::IBV_QP_MIN_RNR_TIMER,
            "RTR",
        )?;

        let mut a = Self::zeroed_attr();
        a.qp_state = ibv::ibv_qp_state::IBV_QPS_RTS;
        a.timeout = path.timeout;
        a.retry_cnt = path.retry_cnt;
        a.rnr_retry = 7; // without limit: a receiver that is slow to re-post is not lost
        a.sq_psn = sq_psn;
        a.max_rd_atomic = path.max_rd_atomic;
        self.modify(
            &mut a,
            m::IBV_QP_STATE
                | m::IBV_QP_TIMEOUT
                | m::IBV_QP_RETRY_CNT
                | m::IBV_QP_RNR_RETRY
                | m::IBV_QP_SQ_PSN
                | m::IBV_QP_MAX_QP_RD_ATOMIC,
            "RTS",
        )
    }

    /// Moves the queue pair to the error state: everything outstanding is flushed.
    pub(crate) fn to_error(&self) {
        let mut a = Self::zeroed_attr();
        a.qp_state = ibv::ibv_qp_state::IBV_QPS_ERR;
        if let Err(e) = self.modify(&mut a, ibv::ibv_qp_attr_mask::IBV_QP_STATE, "ERROR") {
            tracing::debug!("{e}");
        }
    }

    /// Posts a chain of send work requests.
    ///
    /// # Safety
    /// Every non-inline local buffer must stay valid and registered (under its lkey) until the
    /// work request completes; inline data is copied before this returns.
    pub(crate) unsafe fn post_send(&self, wrs: &[Wr]) -> std::result::Result<(), (c_int, usize)> {
        if wrs.is_empty() {
            return Ok(());
        }
        let mut sges: Vec<ibv::ibv_sge> = wrs
            .iter()
            .map(|w| ibv::ibv_sge {
                addr: w.addr,
                length: w.len,
                lkey: w.lkey,
            })
            .collect();
        let sge_base = sges.as_mut_ptr();
        let mut raw: Vec<ibv::ibv_send_wr> = Vec::with_capacity(wrs.len());
        for (i, w) in wrs.iter().enumerate() {
            // SAFETY: `ibv_send_wr` is plain data (integers, raw pointers, unions of them).
            let mut r: ibv::ibv_send_wr = unsafe { std::mem::zeroed() };
            r.wr_id = w.wr_id;
            r.next = ptr::null_mut();
            r.sg_list = sge_base.wrapping_add(i);
            r.num_sge = i32::from(w.len > 0);
            let mut flags = 0u32;
            if w.signaled {
                flags |= ibv::ibv_send_flags::IBV_SEND_SIGNALED.0;
            }
            if w.inline {
                flags |= ibv::ibv_send_flags::IBV_SEND_INLINE.0;
            }
            r.send_flags = flags;
            match w.kind {
                WrKind::Read { raddr, rkey } => {
                    r.opcode = ibv::ibv_wr_opcode::IBV_WR_RDMA_READ;
                    r.wr.rdma = ibv::rdma_t {
                        remote_addr: raddr,
                        rkey,
                    };
                }
                WrKind::Write { raddr, rkey } => {
                    r.opcode = ibv::ibv_wr_opcode::IBV_WR_RDMA_WRITE;
                    r.wr.rdma = ibv::rdma_t {
                        remote_addr: raddr,
                        rkey,
                    };
                }
                WrKind::CompareSwap {
                    raddr,
                    rkey,
                    expected,
                    desired,
                } => {
                    r.opcode = ibv::ibv_wr_opcode::IBV_WR_ATOMIC_CMP_AND_SWP;
                    r.wr.atomic = ibv::atomic_t {
                        remote_addr: raddr,
                        compare_add: expected,
                        swap: desired,
                        rkey,
                    };
                }
                WrKind::FetchAdd { raddr, rkey, add } => {
                    r.opcode = ibv::ibv_wr_opcode::IBV_WR_ATOMIC_FETCH_AND_ADD;
                    r.wr.atomic = ibv::atomic_t {
                        remote_addr: raddr,
                        compare_add: add,
                        swap: 0,
                        rkey,
                    };
                }
                WrKind::Send => r.opcode = ibv::ibv_wr_opcode::IBV_WR_SEND,
            }
            raw.push(r);
        }
        let base = raw.as_mut_ptr();
        for i in 0..raw.len() - 1 {
            // SAFETY: `i` and `i + 1` are inside `raw`, which is not touched otherwise until the
            // call below returns.
            let this = base.wrapping_add(i);
            // SAFETY: as above.
            unsafe { (*this).next = base.wrapping_add(i + 1) };
        }
        let mut bad = ptr::null_mut();
        // SAFETY: live QP; the chain and its scatter/gather entries live until the call returns
        // (the provider copies them); the buffers are the caller's promise.
        let rc = unsafe { ibv::ibv_post_send(self.qp.as_ptr(), base, &mut bad) };
        let failed_at = if bad.is_null() {
            0
        } else {
            (bad as usize - base as usize) / std::mem::size_of::<ibv::ibv_send_wr>()
        };
        drop(raw);
        drop(sges);
        if rc == 0 {
            Ok(())
        } else {
            Err((rc, failed_at))
        }
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once; its CQ and PD are kept alive by the Arcs.
        let rc = unsafe { ibv::ibv_destroy_qp(self.qp.as_ptr()) };
        if rc != 0 {
            tracing::warn!("ibv_destroy_qp({}) failed: {rc}", self.qpn);
        }
    }
}
