//! Owners of the raw verbs handles (`rdma_sys`): device context, protection domain, memory
//! registration, completion channel and queue; the queue pair is in `sys/qp.rs`.
//!
//! Each wrapper holds an `Arc` of what it depends on, so the handles are released in dependency
//! order whatever order their owners are dropped in (queue pairs, then memory registrations and
//! the completion queue, then the channel and the protection domain, then the context). `Drop`
//! never panics: a failing `ibv_destroy_*` is logged.
//!
//! Everything here is thin: the policy (what to post, when to signal, what an error means) lives
//! in `transport.rs`.

use std::ffi::CStr;
use std::io;
use std::os::raw::c_int;
use std::ptr::{self, NonNull};
use std::sync::Arc;

use rdma_sys as ibv;

use crate::error::{Error, Result};

mod qp;
mod srq;
pub(crate) use qp::{Path, Qp, Remote, Wr, WrKind};
pub(crate) use srq::Srq;

/// `IBV_LINK_LAYER_INFINIBAND` (a C macro, not in the bindings).
pub(crate) const LINK_LAYER_INFINIBAND: u8 = 1;

/// What a device's port says about itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PortInfo {
    pub(crate) active: bool,
    pub(crate) state: u32,
    pub(crate) link_layer: u8,
    pub(crate) active_mtu: u32,
    pub(crate) lid: u16,
    pub(crate) gid_table_len: i32,
    pub(crate) max_msg: u32,
}

/// What the device can do, as far as this backend cares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeviceCaps {
    pub(crate) ports: u8,
    pub(crate) max_qp_wr: u32,
    pub(crate) max_cqe: u32,
    pub(crate) max_srq_wr: u32,
    pub(crate) max_qp_rd_atom: u8,
    pub(crate) max_qp_init_rd_atom: u8,
    pub(crate) atomics: bool,
}

/// The names of the RDMA devices of this machine. A kernel without RDMA support makes
/// `ibv_get_device_list` fail (ENOSYS, or ENODEV without `/sys/class/infiniband`): that is an
/// empty list, not an error.
pub(crate) fn device_names() -> Vec<String> {
    let mut n: c_int = 0;
    // SAFETY: `n` is a valid out-pointer; the list is freed below.
    let list = unsafe { ibv::ibv_get_device_list(&mut n) };
    if list.is_null() {
        tracing::debug!(
            "ibv_get_device_list: {} (no RDMA device)",
            io::Error::last_os_error()
        );
        return Vec::new();
    }
    let mut names = Vec::new();
    for i in 0..usize::try_from(n).unwrap_or(0) {
        // SAFETY: the list holds `n` device pointers (then a NULL).
        let dev = unsafe { *list.wrapping_add(i) };
        if dev.is_null() {
            break;
        }
        // SAFETY: `dev` is a device of the live list.
        let name = unsafe { ibv::ibv_get_device_name(dev) };
        if !name.is_null() {
            // SAFETY: libibverbs returns a NUL-terminated name owned by the device.
            let s = unsafe { CStr::from_ptr(name) };
            names.push(s.to_string_lossy().into_owned());
        }
    }
    // SAFETY: `list` came from `ibv_get_device_list` and is freed once; the names were copied.
    unsafe { ibv::ibv_free_device_list(list) };
    names
}

fn os_error(context: String) -> Error {
    Error::io(context, io::Error::last_os_error())
}

fn errno_error(context: String, rc: c_int) -> Error {
    // The verbs calls return a positive errno (or -1 with errno set).
    let e = if rc > 0 {
        io::Error::from_raw_os_error(rc)
    } else {
        io::Error::last_os_error()
    };
    Error::io(context, e)
}

/// An open device (`ibv_context`).
pub(crate) struct Context {
    ctx: NonNull<ibv::ibv_context>,
    pub(crate) name: String,
}

// SAFETY: libibverbs contexts may be used from any thread (the library locks internally).
unsafe impl Send for Context {}
// SAFETY: as above; `&Context` only calls thread-safe verbs.
unsafe impl Sync for Context {}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context({})", self.name)
    }
}

impl Context {
    /// Opens the device called `name`.
    pub(crate) fn open(name: &str) -> Result<Arc<Context>> {
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-pointer; the list is freed below.
        let list = unsafe { ibv::ibv_get_device_list(&mut n) };
        if list.is_null() {
            return Err(Error::Unsupported(format!(
                "no RDMA device (looking for {name}): {}",
                io::Error::last_os_error()
            )));
        }
        let mut found = ptr::null_mut();
        for i in 0..usize::try_from(n).unwrap_or(0) {
            // SAFETY: the list holds `n` device pointers.
            let dev = unsafe { *list.wrapping_add(i) };
            if dev.is_null() {
                break;
            }
            // SAFETY: `dev` is a device of the live list.
            let p = unsafe { ibv::ibv_get_device_name(dev) };
            // SAFETY: NUL-terminated name owned by the device (checked non-null first).
            if !p.is_null() && unsafe { CStr::from_ptr(p) }.to_bytes() == name.as_bytes() {
                // SAFETY: `dev` is a device of the live list; opening it does not need the list
                // to stay alive afterwards (libibverbs keeps devices referenced by contexts).
                found = unsafe { ibv::ibv_open_device(dev) };
                if found.is_null() {
                    let e = os_error(format!("opening RDMA device {name} (ibv_open_device)"));
                    // SAFETY: freed once.
                    unsafe { ibv::ibv_free_device_list(list) };
                    return Err(e);
                }
                break;
            }
        }
        // SAFETY: freed once; the opened context stays valid.
        unsafe { ibv::ibv_free_device_list(list) };
        match NonNull::new(found) {
            Some(ctx) => Ok(Arc::new(Context {
                ctx,
                name: name.to_string(),
            })),
            None => Err(Error::Unsupported(format!("no RDMA device called {name}"))),
        }
    }

    pub(crate) fn raw(&self) -> *mut ibv::ibv_context {
        self.ctx.as_ptr()
    }

    /// `ibv_query_device`.
    pub(crate) fn caps(&self) -> Result<DeviceCaps> {
        let mut attr = std::mem::MaybeUninit::<ibv::ibv_device_attr>::zeroed();
        // SAFETY: valid context and out-pointer of the right type.
        let rc = unsafe { ibv::ibv_query_device(self.raw(), attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(errno_error(
                format!("querying RDMA device {} (ibv_query_device)", self.name),
                rc,
            ));
        }
        // SAFETY: the call succeeded and filled the structure (it was zeroed before anyway,
        // and every field is plain data).
        let a = unsafe { attr.assume_init() };
        let clamp = |v: c_int| u32::try_from(v).unwrap_or(0);
        Ok(DeviceCaps {
            ports: a.phys_port_cnt,
            max_qp_wr: clamp(a.max_qp_wr),
            max_cqe: clamp(a.max_cqe),
            max_srq_wr: clamp(a.max_srq_wr),
            max_qp_rd_atom: u8::try_from(a.max_qp_rd_atom.clamp(0, 255)).unwrap_or(1),
            max_qp_init_rd_atom: u8::try_from(a.max_qp_init_rd_atom.clamp(0, 255)).unwrap_or(1),
            atomics: a.atomic_cap != ibv::ibv_atomic_cap::IBV_ATOMIC_NONE,
        })
    }

    /// `ibv_query_port`.
    pub(crate) fn port(&self, port: u8) -> Result<PortInfo> {
        let mut attr = std::mem::MaybeUninit::<ibv::ibv_port_attr>::zeroed();
        // SAFETY: valid context and out-pointer of the right type (the rdma-sys helper passes
        // the structure's size, as the C inline function does).
        let rc = unsafe { ibv::___ibv_query_port(self.raw(), port, attr.as_mut_ptr()) };
        if rc != 0 {
            return Err(errno_error(
                format!("querying port {port} of RDMA device {}", self.name),
                rc,
            ));
        }
        // SAFETY: filled by the successful call (and zeroed before); plain data.
        let a = unsafe { attr.assume_init() };
        Ok(PortInfo {
            active: a.state == ibv::ibv_port_state::IBV_PORT_ACTIVE,
            state: a.state,
            link_layer: a.link_layer,
            active_mtu: a.active_mtu,
            lid: a.lid,
            gid_table_len: a.gid_tbl_len,
            max_msg: a.max_msg_sz,
        })
    }

    /// The GID at `index` of `port`, or `None` when it cannot be read.
    pub(crate) fn gid(&self, port: u8, index: i32) -> Option<[u8; 16]> {
        let mut gid = ibv::ibv_gid { raw: [0; 16] };
        // SAFETY: valid context and out-pointer.
        let rc = unsafe { ibv::ibv_query_gid(self.raw(), port, index, &mut gid) };
        // SAFETY: every bit pattern of the union is a valid `[u8; 16]`.
        let raw = unsafe { gid.raw };
        (rc == 0).then_some(raw)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: every dependent handle holds an Arc of this context, so none is left.
        let rc = unsafe { ibv::ibv_close_device(self.raw()) };
        if rc != 0 {
            tracing::warn!("ibv_close_device({}) failed: {rc}", self.name);
        }
    }
}

/// A protection domain.
pub(crate) struct Pd {
    pd: NonNull<ibv::ibv_pd>,
    pub(crate) ctx: Arc<Context>,
}

// SAFETY: a PD is a handle that libibverbs lets any thread use.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl std::fmt::Debug for Pd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pd({})", self.ctx.name)
    }
}

impl Pd {
    pub(crate) fn new(ctx: &Arc<Context>) -> Result<Arc<Pd>> {
        // SAFETY: valid context.
        let pd = unsafe { ibv::ibv_alloc_pd(ctx.raw()) };
        match NonNull::new(pd) {
            Some(pd) => Ok(Arc::new(Pd {
                pd,
                ctx: Arc::clone(ctx),
            })),
            None => Err(os_error(format!(
                "allocating a protection domain on {} (ibv_alloc_pd)",
                ctx.name
            ))),
        }
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: memory registrations and queue pairs hold an Arc of this PD: none is left.
        let rc = unsafe { ibv::ibv_dealloc_pd(self.pd.as_ptr()) };
        if rc != 0 {
            tracing::warn!("ibv_dealloc_pd failed: {rc}");
        }
    }
}

/// A memory registration.
pub(crate) struct Mr {
    mr: NonNull<ibv::ibv_mr>,
    pub(crate) lkey: u32,
    pub(crate) rkey: u32,
    _pd: Arc<Pd>,
}

// SAFETY: an MR is a handle; its keys are plain numbers.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl std::fmt::Debug for Mr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mr(lkey {:#x}, rkey {:#x})", self.lkey, self.rkey)
    }
}

impl Mr {
    /// Registers `len` bytes at `addr` for local write and remote read, write and atomics.
    ///
    /// # Safety
    /// The memory must stay mapped until the `Mr` is dropped (the NIC may access it until then).
    pub(crate) unsafe fn register(pd: &Arc<Pd>, addr: *mut u8, len: usize) -> Result<Mr> {
        let access = ibv::ibv_access_flags::IBV_ACCESS_LOCAL_WRITE
            | ibv::ibv_access_flags::IBV_ACCESS_REMOTE_READ
            | ibv::ibv_access_flags::IBV_ACCESS_REMOTE_WRITE
            | ibv::ibv_access_flags::IBV_ACCESS_REMOTE_ATOMIC;
        // SAFETY: valid PD; the caller keeps the memory mapped for the registration's life.
        let mr = unsafe { ibv::ibv_reg_mr(pd.pd.as_ptr(), addr.cast(), len, access.0 as c_int) };
        let Some(mr) = NonNull::new(mr) else {
            let e = io::Error::last_os_error();
            let hint = if matches!(e.raw_os_error(), Some(libc::ENOMEM) | Some(libc::EPERM)) {
                " (is the locked-memory limit, `ulimit -l`, large enough?)"
            } else {
                ""
            };
            return Err(Error::io(
                format!(
                    "registering {len} bytes with RDMA device {} (ibv_reg_mr){hint}",
                    pd.ctx.name
                ),
                e,
            ));
        };
        // SAFETY: `mr` is a live registration returned just now.
        let m = unsafe { &*mr.as_ptr() };
        let (lkey, rkey) = (m.lkey, m.rkey);
        Ok(Mr {
            mr,
            lkey,
            rkey,
            _pd: Arc::clone(pd),
        })
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        // SAFETY: registered once, deregistered once.
        let rc = unsafe { ibv::ibv_dereg_mr(self.mr.as_ptr()) };
        if rc != 0 {
            tracing::warn!("ibv_dereg_mr failed: {rc}");
        }
    }
}

/// A completion channel (the file descriptor a blocked poller sleeps on).
#[derive(Debug)]
pub(crate) struct Channel {
    ch: NonNull<ibv::ibv_comp_channel>,
    _ctx: Arc<Context>,
}

// SAFETY: a handle with a file descriptor; used by one poller at a time under the CQ lock.
unsafe impl Send for Channel {}
// SAFETY: as above.
unsafe impl Sync for Channel {}

impl Channel {
    pub(crate) fn new(ctx: &Arc<Context>) -> Result<Arc<Channel>> {
        // SAFETY: valid context.
        let ch = unsafe { ibv::ibv_create_comp_channel(ctx.raw()) };
        let ch = NonNull::new(ch).ok_or_else(|| {
            os_error(format!(
                "creating a completion channel on {} (ibv_create_comp_channel)",
                ctx.name
            ))
        })?;
        // SAFETY: live channel.
        let fd = unsafe { (*ch.as_ptr()).fd };
        // SAFETY: `fd` is the channel's open descriptor; making it non-blocking lets the poller
        // drain events without blocking.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(os_error("configuring the completion channel".into()));
        }
        Ok(Arc::new(Channel {
            ch,
            _ctx: Arc::clone(ctx),
        }))
    }

    pub(crate) fn fd(&self) -> c_int {
        // SAFETY: live channel; `fd` never changes.
        unsafe { (*self.ch.as_ptr()).fd }
    }

    /// Takes and acknowledges every pending event (non-blocking). Returns how many there were.
    pub(crate) fn drain(&self) -> usize {
        let mut n = 0;
        loop {
            let mut cq = ptr::null_mut();
            let mut ctx = ptr::null_mut();
            // SAFETY: live channel, valid out-pointers; the descriptor is non-blocking.
            let rc = unsafe { ibv::ibv_get_cq_event(self.ch.as_ptr(), &mut cq, &mut ctx) };
            if rc != 0 {
                return n;
            }
            // SAFETY: `cq` is the queue the event was for; acknowledged once, as required before
            // it can be destroyed.
            unsafe { ibv::ibv_ack_cq_events(cq, 1) };
            n += 1;
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        // SAFETY: the completion queue using it holds an Arc of it: it is gone.
        let rc = unsafe { ibv::ibv_destroy_comp_channel(self.ch.as_ptr()) };
        if rc != 0 {
            tracing::warn!("ibv_destroy_comp_channel failed: {rc}");
        }
    }
}

/// One work completion, as plain data.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wc {
    pub(crate) wr_id: u64,
    pub(crate) status: u32,
    pub(crate) qp_num: u32,
    pub(crate) byte_len: u32,
}

impl Wc {
    pub(crate) fn ok(&self) -> bool {
        self.status == ibv::ibv_wc_status::IBV_WC_SUCCESS
    }
    pub(crate) fn flushed(&self) -> bool {
        self.status == ibv::ibv_wc_status::IBV_WC_WR_FLUSH_ERR
    }
    /// The peer cannot be reached (transport or receiver-not-ready retries exhausted).
    pub(crate) fn unreachable(&self) -> bool {
        self.status == ibv::ibv_wc_status::IBV_WC_RETRY_EXC_ERR
            || self.status == ibv::ibv_wc_status::IBV_WC_RNR_RETRY_EXC_ERR
    }
    /// The target refused the access (bad rkey, range outside the registration).
    pub(crate) fn remote_access(&self) -> bool {
        self.status == ibv::ibv_wc_status::IBV_WC_REM_ACCESS_ERR
    }
    /// The target refused the request as invalid (for example, too long).
    pub(crate) fn remote_invalid(&self) -> bool {
        self.status == ibv::ibv_wc_status::IBV_WC_REM_INV_REQ_ERR
    }
    /// `ibv_wc_status_str` of the status, with its name.
    pub(crate) fn status_str(&self) -> String {
        status_str(self.status)
    }
}

/// `ibv_wc_status_str(status)` and the number.
pub(crate) fn status_str(status: u32) -> String {
    // SAFETY: returns a static string for any value.
    let p = unsafe { ibv::ibv_wc_status_str(status) };
    let s = if p.is_null() {
        "unknown status".to_string()
    } else {
        // SAFETY: static NUL-terminated string.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    };
    format!("{s} (status {status})")
}

/// A completion queue bound to a channel.
#[derive(Debug)]
pub(crate) struct Cq {
    cq: NonNull<ibv::ibv_cq>,
    pub(crate) channel: Arc<Channel>,
    _ctx: Arc<Context>,
}

// SAFETY: a handle; polling is serialised by the owner's lock, arming and polling are allowed
// from any thread.
unsafe impl Send for Cq {}
// SAFETY: as above.
unsafe impl Sync for Cq {}

impl Cq {
    pub(crate) fn new(ctx: &Arc<Context>, channel: &Arc<Channel>, entries: u32) -> Result<Arc<Cq>> {
        let n = c_int::try_from(entries).unwrap_or(c_int::MAX);
        // SAFETY: valid context and channel.
        let cq =
            unsafe { ibv::ibv_create_cq(ctx.raw(), n, ptr::null_mut(), channel.ch.as_ptr(), 0) };
        match NonNull::new(cq) {
            Some(cq) => Ok(Arc::new(Cq {
                cq,
                channel: Arc::clone(channel),
                _ctx: Arc::clone(ctx),
            })),
            None => Err(os_error(format!(
                "creating a completion queue of {entries} entries on {} (ibv_create_cq)",
                ctx.name
            ))),
        }
    }

    /// Polls up to `out.len()` completions; returns how many.
    pub(crate) fn poll(&self, out: &mut Vec<Wc>, max: usize) -> usize {
        const BATCH: usize = 32;
        // SAFETY: `ibv_wc` is plain data (integers and a union of integers): all zeros is valid.
        let mut wcs: [ibv::ibv_wc; BATCH] = unsafe { std::mem::zeroed() };
        let want = max.min(BATCH) as c_int;
        // SAFETY: live CQ; the array holds `want` entries.
        let n = unsafe { ibv::ibv_poll_cq(self.cq.as_ptr(), want, wcs.as_mut_ptr()) };
        let n = usize::try_from(n).unwrap_or(0);
        for wc in &wcs[..n] {
            out.push(Wc {
                wr_id: wc.wr_id,
                status: wc.status,
                qp_num: wc.qp_num,
                byte_len: wc.byte_len,
            });
        }
        n
    }

    /// Asks for an event on the channel at the next completion.
    pub(crate) fn arm(&self) -> bool {
        // SAFETY: live CQ.
        unsafe { ibv::ibv_req_notify_cq(self.cq.as_ptr(), 0) == 0 }
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: queue pairs using it hold an Arc of it: none is left; every event was
        // acknowledged by `Channel::drain`.
        let rc = unsafe { ibv::ibv_destroy_cq(self.cq.as_ptr()) };
        if rc != 0 {
            tracing::warn!("ibv_destroy_cq failed: {rc}");
        }
    }
}
