//! # transport: how the nodes of a DSM job reach each other's memory
//!
//! The runtime above this crate (`dsm-core`) is written against one trait, [`Transport`]:
//!
//! - **one-sided operations** on a peer's registered memory, with RDMA semantics: [`Op::Read`],
//!   [`Op::Write`], and 8-byte [`Op::CompareSwap`] and [`Op::FetchAdd`] on aligned words that
//!   return the old value. They are *posted* ([`Transport::post`]) and complete through a
//!   [`Completion`], so many can be in flight at once; [`Transport::flush`] orders them.
//! - **two-sided messages** ([`Transport::send`], [`Transport::recv`]) matched by source and
//!   [`Tag`], for control traffic and bootstrap.
//! - **registration** ([`Transport::register`]): a [`Region`] of local memory becomes
//!   addressable by peers through its [`RegionDesc`]. Every remote access is bounds-checked
//!   against the registered region at the target: a bad key, offset or length is refused with a
//!   [`RemoteFault`], never a crash, never a touch of other memory.
//! - **capabilities as data** ([`Capabilities`]): whether one-sided operations are native or
//!   emulated, whether remote atomics are coherent with the owner's CPU atomics, the size limits.
//!
//! ## Backends
//!
//! | backend | module | for |
//! |---|---|---|
//! | `loopback` | [`loopback`] | several ranks in one process: unit tests, no network |
//! | `tcp` | [`tcp`] | real sockets, one connection per pair of nodes, a progress thread per node |
//! | `shm` | [`shm`] | nodes on one host: shared mappings of each other's regions, message rings in shared memory |
//! | `mixed` | [`mixed`] | one backend per peer: `shm` on this host, `tcp` to other hosts |
//! | `verbs` | [`verbs`] | RDMA: InfiniBand, RoCE, soft-RoCE (`rdma_rxe`); the `verbs` cargo feature, on by default |
//!
//! [`AnyTransport`] is the closed enum that the runtime selects at start-up; calls go through a
//! `match`, not a virtual call.
//!
//! ## Quick start (no network needed)
//!
//! ```
//! use std::sync::Arc;
//! use transport::{LocalSlice, LoopbackTransport, Region, Transport};
//!
//! let job = LoopbackTransport::job(2)?;
//! let (a, b) = (&job[0], &job[1]);
//! let home = Region::allocate(4096)?;
//! let desc = b.register(&home)?; // rank 1 exposes 4 KiB
//! let buf = Region::allocate(4096)?;
//! a.register(&buf)?; // the local side of operations must be registered too
//! buf.write_at(0, b"hello")?;
//! a.write(desc.slice(0, 5)?, LocalSlice::new(&buf, 0, 5)?)?;
//! let mut got = [0u8; 5];
//! home.read_at(0, &mut got)?;
//! assert_eq!(&got, b"hello");
//! assert_eq!(a.fetch_add(desc.word(8)?, 3)?, 0);
//! # Ok::<(), transport::Error>(())
//! ```
//!
//! ## Thread safety
//!
//! Every transport is `Send + Sync`; all methods take `&self`. Registered memory is shared with
//! peers exactly as RDMA memory is shared with a NIC: the protocol above decides who touches
//! which bytes when.
//!
//! ## Testing
//!
//! `conformance` is one suite, generic over the backend, that every backend must pass. It is
//! test code, so it is compiled only with the `conformance` cargo feature (off by default), which
//! this crate's own tests turn on through a dev-dependency on the crate itself; a new backend's
//! tests, or another crate's, enable it the same way:
//! `transport = { path = "...", features = ["conformance"] }` under `[dev-dependencies]`.
//!
//! ## Without RDMA hardware
//!
//! `loopback`, `tcp` and `shm` need nothing (`shm` needs its peers on the same host, in one PID
//! namespace). The `verbs` backend runs on soft-RoCE (`rdma_rxe` over any
//! Ethernet interface, even `lo`); where the kernel has no RDMA support, [`verbs::probe`] says
//! so and `scripts/softroce-vm.sh` boots a small QEMU guest that has it. Building without
//! `libibverbs` is possible with `--no-default-features`: the verbs backend then reports
//! [`Error::Unsupported`].

mod any;
pub mod api;
pub mod auth;
pub mod completion;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
mod exec;
pub mod gate;
pub mod hook;
mod job;
pub mod landing;
pub mod loopback;
mod mailbox;
pub(crate) mod memfd;
pub mod mixed;
pub mod net;
pub mod pool;
mod rank;
pub mod reduce;
pub mod region;
pub mod shm;
pub mod tcp;
pub mod types;
pub mod verbs;
pub mod wire;

pub use any::AnyTransport;
pub use api::Transport;
pub use auth::Secret;
pub use completion::{wait_all, Completion};
pub use error::{Error, RemoteFault, Result};
pub use hook::ThreadHook;
pub use loopback::LoopbackTransport;
pub use mixed::{MixedTransport, PreparedMixed};
pub use reduce::{Elem, ReduceOp, Reduction};
pub use region::Region;
pub use shm::{PreparedShm, ShmConfig, ShmTransport};
pub use tcp::{PreparedTcp, TcpConfig, TcpTransport};
pub use types::{
    BackendKind, Capabilities, LocalSlice, Message, Op, Rank, RegionDesc, RemoteKey, RemoteSlice,
    RunsWrite, Tag,
};
pub use verbs::{PreparedVerbs, VerbsConfig, VerbsTransport};
