//! The shared receive queue: one pool of receive buffers for the control queue pairs of every
//! peer, so that a node's receive memory does not grow with the job.

use std::io;
use std::os::raw::c_int;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rdma_sys as ibv;

use super::Pd;
use crate::error::{Error, Result};

/// A shared receive queue (`ibv_create_srq`).
pub(crate) struct Srq {
    srq: NonNull<ibv::ibv_srq>,
    pub(crate) depth: u32,
    _pd: Arc<Pd>,
}

// SAFETY: an SRQ is a handle that libibverbs lets any thread post to.
unsafe impl Send for Srq {}
// SAFETY: as above.
unsafe impl Sync for Srq {}

impl std::fmt::Debug for Srq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Srq(depth {})", self.depth)
    }
}

impl Srq {
    /// A shared receive queue of `depth` receives (one scatter entry each) on `pd`.
    pub(crate) fn new(pd: &Arc<Pd>, depth: u32) -> Result<Srq> {
        let mut init = ibv::ibv_srq_init_attr {
            srq_context: ptr::null_mut(),
            attr: ibv::ibv_srq_attr {
                max_wr: depth,
                max_sge: 1,
                srq_limit: 0,
            },
        };
        // SAFETY: valid PD and attributes (copied by the call).
        let srq = unsafe { ibv::ibv_create_srq(pd.pd.as_ptr(), &mut init) };
        let Some(srq) = NonNull::new(srq) else {
            return Err(Error::io(
                format!(
                    "creating a shared receive queue of {depth} receives on {} (ibv_create_srq)",
                    pd.ctx.name
                ),
                io::Error::last_os_error(),
            ));
        };
        Ok(Srq {
            srq,
            depth,
            _pd: Arc::clone(pd),
        })
    }

    /// The raw queue, for a queue pair's creation attributes.
    pub(crate) fn raw(&self) -> *mut ibv::ibv_srq {
        self.srq.as_ptr()
    }

    /// Posts one receive of `len` bytes at `addr`.
    ///
    /// # Safety
    /// The buffer must stay valid and registered under `lkey` until the receive completes.
    pub(crate) unsafe fn post_recv(
        &self,
        wr_id: u64,
        addr: u64,
        len: u32,
        lkey: u32,
    ) -> std::result::Result<(), c_int> {
        let mut sge = ibv::ibv_sge {
            addr,
            length: len,
            lkey,
        };
        let mut wr = ibv::ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad = ptr::null_mut();
        // SAFETY: live SRQ; the request is copied by the provider; the buffer is the caller's
        // promise.
        let rc = unsafe { ibv::ibv_post_srq_recv(self.srq.as_ptr(), &mut wr, &mut bad) };
        if rc == 0 {
            Ok(())
        } else {
            Err(rc)
        }
    }
}

impl Drop for Srq {
    fn drop(&mut self) {
        // SAFETY: created once, destroyed once, after every queue pair that uses it (they hold
        // an `Arc` of it).
        let rc = unsafe { ibv::ibv_destroy_srq(self.srq.as_ptr()) };
        if rc != 0 {
            tracing::warn!("ibv_destroy_srq failed: {rc}");
        }
    }
}
