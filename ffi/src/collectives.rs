//! Collectives over local (non-global) memory.

use std::ffi::{c_int, c_void};

use transport::{Rank, Transport};

use crate::runtime::{status_call, with_dsm};
use crate::status::Failure;

/// Copies `bytes` bytes at `buf` on the node `root` into `buf` on every other node. Meant for
/// local memory, for instance to hand everyone a pointer from `dsm_malloc`.
///
/// Collective: every node calls it with the same `bytes` and `root`.
/// Thread safety: call collective functions from one thread per node.
/// Errors: `DSM_ERR_INVALID_ARGUMENT` (NULL `buf` with `bytes` > 0, `root` not a rank, or a
/// `bytes` that differs from the root's: `buf` is then left unchanged), `DSM_ERR_PEER_LOST`,
/// `DSM_ERR_TRANSPORT`, `DSM_ERR_NOT_INITIALIZED`, `DSM_ERR_FINALIZED`.
///
/// # Safety
/// `buf` must be valid for reads (on the root) and writes (elsewhere) of `bytes` bytes.
#[no_mangle]
pub unsafe extern "C" fn dsm_broadcast(buf: *mut c_void, bytes: usize, root: c_int) -> c_int {
    status_call(|| {
        with_dsm(|dsm| {
            if buf.is_null() && bytes > 0 {
                return Err(Failure::invalid("the buffer is NULL"));
            }
            let nodes = dsm.nodes();
            let root = usize::try_from(root)
                .ok()
                .filter(|&r| r < nodes)
                .ok_or_else(|| {
                    Failure::invalid(format!("root {root} is not a rank of {nodes} nodes"))
                })?;
            let t = dsm.node().transport();
            let data: &[u8] = if bytes == 0 || t.rank().index() != root {
                &[]
            } else {
                // SAFETY: the caller guarantees `buf` is readable for `bytes` bytes on the root.
                unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), bytes) }
            };
            let got = dsm_core::collective::broadcast(t, Rank(root as u32), data, None)?;
            if t.rank().index() == root {
                return Ok(());
            }
            if got.len() != bytes {
                return Err(Failure::invalid(format!(
                    "the root broadcast {} bytes but this node expected {bytes}",
                    got.len()
                )));
            }
            if bytes > 0 {
                // SAFETY: the caller guarantees `buf` is writable for `bytes` bytes; `got` is
                // a separate vector of that length.
                unsafe { std::ptr::copy_nonoverlapping(got.as_ptr(), buf.cast::<u8>(), bytes) };
            }
            Ok(())
        })
    })
}
