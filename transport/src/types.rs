//! Small vocabulary types: ranks, keys, remote addresses, messages and capabilities.

use std::sync::Arc;

use crate::error::{Error, Result};
pub use crate::rank::Rank;
use crate::region::Region;
pub use crate::region::RemoteKey;

/// What a peer needs to address a registered region: its owner, key, base address and length.
///
/// The owner publishes it (through the bootstrap or a message); peers build [`RemoteSlice`]s
/// from it. It is plain data with a fixed 32-byte encoding ([`RegionDesc::to_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegionDesc {
    /// The node that owns the memory.
    pub rank: Rank,
    /// The key the owner registered it under.
    pub key: RemoteKey,
    /// The region's virtual address in the owner (what RDMA hardware addresses; informational on
    /// tcp).
    pub addr: u64,
    /// Length in bytes.
    pub len: u64,
}

impl RegionDesc {
    /// Encoded length of a descriptor.
    pub const ENCODED_LEN: usize = 28;

    /// A slice of `len` bytes at `offset` into the region.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range does not fit in the region. (The owner checks
    /// again: this check only saves a round trip.)
    pub fn slice(&self, offset: u64, len: usize) -> Result<RemoteSlice> {
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if end <= self.len => Ok(RemoteSlice {
                region: *self,
                offset,
                len,
            }),
            _ => Err(Error::InvalidArgument(format!(
                "remote range {offset}+{len} outside region of {} bytes on rank {}",
                self.len, self.rank
            ))),
        }
    }

    /// The 8-byte word at `offset`, for atomics.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the word is out of range or not 8-byte aligned.
    pub fn word(&self, offset: u64) -> Result<RemoteSlice> {
        if !offset.is_multiple_of(8) {
            return Err(Error::InvalidArgument(format!(
                "atomic offset {offset} is not 8-byte aligned"
            )));
        }
        self.slice(offset, 8)
    }

    /// Encodes the descriptor (little endian: rank u32, key u64, addr u64, len u64).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0..4].copy_from_slice(&self.rank.0.to_le_bytes());
        b[4..12].copy_from_slice(&self.key.0.to_le_bytes());
        b[12..20].copy_from_slice(&self.addr.to_le_bytes());
        b[20..28].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes a descriptor written by [`RegionDesc::to_bytes`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `bytes` has the wrong length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != Self::ENCODED_LEN {
            return Err(Error::InvalidArgument(format!(
                "region descriptor of {} bytes, expected {}",
                bytes.len(),
                Self::ENCODED_LEN
            )));
        }
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let mut r = [0u8; 4];
        r.copy_from_slice(&bytes[0..4]);
        Ok(RegionDesc {
            rank: Rank(u32::from_le_bytes(r)),
            key: RemoteKey(u64_at(4)),
            addr: u64_at(12),
            len: u64_at(20),
        })
    }
}

/// A byte range inside a peer's registered region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteSlice {
    /// The region it lies in.
    pub region: RegionDesc,
    /// Offset from the region's start.
    pub offset: u64,
    /// Length in bytes.
    pub len: usize,
}

impl RemoteSlice {
    /// The rank that owns the memory.
    pub fn rank(&self) -> Rank {
        self.region.rank
    }
}

/// A byte range inside a local registered region: the source of a write or the destination of
/// a read.
///
/// It holds the region alive until the operation completes, which is what makes posting safe.
#[derive(Debug, Clone)]
pub struct LocalSlice {
    region: Arc<Region>,
    offset: usize,
    len: usize,
}

impl LocalSlice {
    /// `len` bytes at `offset` in `region`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range does not fit in the region.
    pub fn new(region: &Arc<Region>, offset: usize, len: usize) -> Result<Self> {
        region.check(offset, len)?;
        Ok(LocalSlice {
            region: Arc::clone(region),
            offset,
            len,
        })
    }

    /// The whole region.
    pub fn whole(region: &Arc<Region>) -> Self {
        LocalSlice {
            region: Arc::clone(region),
            offset: 0,
            len: region.len(),
        }
    }

    /// The region the slice lies in.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Offset from the region's start.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the slice is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A one-sided operation on a peer's registered memory, with RDMA semantics.
#[derive(Debug, Clone)]
pub enum Op {
    /// Copy `remote` into `local` (the lengths must match).
    Read {
        /// Source in the peer.
        remote: RemoteSlice,
        /// Destination here.
        local: LocalSlice,
    },
    /// Copy `local` into `remote` (the lengths must match).
    Write {
        /// Destination in the peer.
        remote: RemoteSlice,
        /// Source here.
        local: LocalSlice,
    },
    /// If the aligned 8-byte word equals `expected`, replace it with `desired`. Completes with the
    /// old value.
    CompareSwap {
        /// The word (built with [`RegionDesc::word`]).
        remote: RemoteSlice,
        /// Compared with the word.
        expected: u64,
        /// Stored when the comparison succeeds.
        desired: u64,
    },
    /// Add `add` (wrapping) to the aligned 8-byte word. Completes with the old value.
    FetchAdd {
        /// The word (built with [`RegionDesc::word`]).
        remote: RemoteSlice,
        /// The addend.
        add: u64,
    },
}

impl Op {
    /// The rank the operation targets.
    pub fn peer(&self) -> Rank {
        match self {
            Op::Read { remote, .. }
            | Op::Write { remote, .. }
            | Op::CompareSwap { remote, .. }
            | Op::FetchAdd { remote, .. } => remote.rank(),
        }
    }

    /// Checks what can be checked locally: matching lengths, alignment of atomics.
    pub(crate) fn validate(&self) -> Result<()> {
        match self {
            Op::Read { remote, local } | Op::Write { remote, local } => {
                if remote.len != local.len() {
                    return Err(Error::InvalidArgument(format!(
                        "remote length {} differs from local length {}",
                        remote.len,
                        local.len()
                    )));
                }
            }
            Op::CompareSwap { remote, .. } | Op::FetchAdd { remote, .. } => {
                if remote.len != 8 || remote.offset % 8 != 0 {
                    return Err(Error::InvalidArgument(
                        "atomics need an aligned 8-byte word".to_string(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A tag that classifies two-sided messages; receivers match on source and tag.
///
/// Tags at or above [`Tag::RESERVED`] belong to the runtime (bootstrap, barriers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u64);

impl Tag {
    /// First tag reserved for the runtime itself.
    pub const RESERVED: u64 = 1 << 63;
}

/// One write of [`crate::Transport::write_runs_batch`]: the byte ranges `runs` (offset,
/// length) of `local` into `remote`, at the same offsets in both: a page's diff.
#[derive(Debug, Clone)]
pub struct RunsWrite {
    /// Where the bytes go.
    pub remote: RemoteSlice,
    /// Where they come from, as long as `remote`.
    pub local: LocalSlice,
    /// The ranges written, each inside both slices.
    pub runs: Vec<(u32, u32)>,
}

/// A two-sided message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub source: Rank,
    /// The sender's tag.
    pub tag: Tag,
    /// The payload.
    pub data: Vec<u8>,
}

/// The closed set of backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// Several ranks inside one process.
    Loopback,
    /// TCP sockets, one-sided operations served by a progress thread on the target.
    Tcp,
    /// RDMA verbs (InfiniBand, RoCE, soft-RoCE).
    Verbs,
    /// Shared memory between nodes on one host.
    Shm,
    /// One backend per peer: shared memory on this host, tcp to other hosts.
    Mixed,
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BackendKind::Loopback => "loopback",
            BackendKind::Tcp => "tcp",
            BackendKind::Verbs => "verbs",
            BackendKind::Shm => "shm",
            BackendKind::Mixed => "mixed",
        })
    }
}

/// What a backend can do, as data, so that layers above choose a strategy without knowing the
/// backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Which backend this is.
    pub backend: BackendKind,
    /// One-sided operations complete without any software running on the target (RDMA); when
    /// `false` they are emulated by a progress thread on the target.
    pub native_one_sided: bool,
    /// Remote atomics are atomic with respect to the owner's own CPU atomics on the same word.
    /// When `false`, the owner must also use the transport for atomics on words that peers touch.
    pub atomics_coherent_with_cpu: bool,
    /// Writes to one peer become visible in the order they were posted.
    pub ordered_writes: bool,
    /// A peer executes this node's operations in the order they were posted, atomics
    /// included: whoever sees an atomic's effect at the peer sees every write posted to that
    /// peer before it, waited for or not (a software target reading one connection in order,
    /// or writes that are complete when posted). Not claimed over RDMA.
    pub ordered_atomics: bool,
    /// Largest payload of one two-sided message.
    pub max_message: usize,
    /// Largest length of one read or write.
    pub max_transfer: usize,
    /// [`crate::Transport::accumulate`] is served by the target (software on the target applies
    /// reductions to its memory); when `false` it returns `Unsupported`.
    pub remote_reduce: bool,
}
