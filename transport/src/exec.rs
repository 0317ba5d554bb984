//! Execution of one-sided operations against a node's registered regions: what the target does,
//! whichever backend carried the request there. Every access is bounds-checked first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Error, RemoteFault, Result};
use crate::region::{Region, RegionTable};
use crate::types::Op;

/// Runs `op` directly on `table` (the target's regions), for backends where the target's memory
/// is reachable from this thread (loopback, or a node addressing itself).
pub(crate) fn execute(table: &RegionTable, op: &Op) -> Result<u64> {
    let peer = op.peer();
    let fault = |fault| Error::Remote { peer, fault };
    match op {
        Op::Read { remote, local } => {
            let (_keep, src) = range(table, remote.region.key.0, remote.offset, remote.len as u64)
                .map_err(fault)?;
            // SAFETY: `src` points at `remote.len` bytes inside a registered region kept alive by
            // `_keep` (checked by `range`); the destination range was bounds-checked when the
            // LocalSlice was built and its region is kept alive by `local`; `copy` tolerates
            // overlap when a node reads its own region.
            unsafe {
                std::ptr::copy(
                    src,
                    local.region().as_ptr().wrapping_add(local.offset()),
                    remote.len,
                )
            };
            Ok(0)
        }
        Op::Write { remote, local } => {
            let (_keep, dst) = range(table, remote.region.key.0, remote.offset, remote.len as u64)
                .map_err(fault)?;
            // SAFETY: as for reads, with source and destination swapped.
            unsafe {
                std::ptr::copy(
                    local.region().as_ptr().wrapping_add(local.offset()),
                    dst,
                    remote.len,
                )
            };
            Ok(0)
        }
        Op::CompareSwap {
            remote,
            expected,
            desired,
        } => compare_swap(
            table,
            remote.region.key.0,
            remote.offset,
            *expected,
            *desired,
        )
        .map_err(fault),
        Op::FetchAdd { remote, add } => {
            fetch_add(table, remote.region.key.0, remote.offset, *add).map_err(fault)
        }
    }
}

/// The region under `key` and a pointer to `offset..offset+len` inside it.
pub(crate) fn range(
    table: &RegionTable,
    key: u64,
    offset: u64,
    len: u64,
) -> Result<(Arc<Region>, *mut u8), RemoteFault> {
    let region = table.get(key)?;
    let ptr = region.range_ptr(offset, len)?;
    Ok((region, ptr))
}

fn with_word(
    table: &RegionTable,
    key: u64,
    offset: u64,
    f: impl FnOnce(&AtomicU64) -> u64,
) -> Result<u64, RemoteFault> {
    let region = table.get(key)?;
    let word = region.word(offset)?;
    let _shared = table.atomics.read().unwrap_or_else(|e| e.into_inner());
    Ok(f(word))
}

/// Compare-and-swap on the word at `offset` of region `key`; returns the old value.
pub(crate) fn compare_swap(
    table: &RegionTable,
    key: u64,
    offset: u64,
    expected: u64,
    desired: u64,
) -> Result<u64, RemoteFault> {
    with_word(table, key, offset, |w| {
        match w.compare_exchange(expected, desired, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(v) | Err(v) => v,
        }
    })
}

/// Fetch-and-add on the word at `offset` of region `key`; returns the old value.
pub(crate) fn fetch_add(
    table: &RegionTable,
    key: u64,
    offset: u64,
    add: u64,
) -> Result<u64, RemoteFault> {
    with_word(table, key, offset, |w| w.fetch_add(add, Ordering::SeqCst))
}

/// Copies `data` into region `key` at `offset`.
pub(crate) fn write(
    table: &RegionTable,
    key: u64,
    offset: u64,
    data: &[u8],
) -> Result<(), RemoteFault> {
    let (_keep, dst) = range(table, key, offset, data.len() as u64)?;
    // SAFETY: `dst` points at `data.len()` bytes inside a registered region kept alive by
    // `_keep`; `data` is a separate heap buffer (a received frame), so they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    Ok(())
}

/// Applies the runs of a write-runs request to region `key` at `base`: checks every run first,
/// so that a request with one bad run changes nothing.
pub(crate) fn write_runs(
    table: &RegionTable,
    key: u64,
    base: u64,
    runs: &[(u64, &[u8])],
) -> Result<(), RemoteFault> {
    let mut targets = Vec::with_capacity(runs.len());
    for (off, bytes) in runs {
        let at = base.checked_add(*off).ok_or(RemoteFault::OutOfBounds)?;
        targets.push(range(table, key, at, bytes.len() as u64)?);
    }
    for ((_keep, dst), (_, bytes)) in targets.iter().zip(runs) {
        // SAFETY: `dst` points at `bytes.len()` bytes inside a registered region kept alive by
        // `_keep` (checked by `range` above); `bytes` is part of a received frame, a separate
        // buffer, so they do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), *dst, bytes.len()) };
    }
    Ok(())
}

/// Adds `add` to `count` aligned words of region `key`, the first at `offset`, `stride` bytes
/// apart; checks every word first, so that a request with one bad word changes nothing.
pub(crate) fn add_strided(
    table: &RegionTable,
    key: u64,
    offset: u64,
    stride: u64,
    count: u64,
    add: u64,
) -> Result<(), RemoteFault> {
    let region = table.get(key)?;
    // Distinct words only, all inside the region: this also bounds the work a request can ask.
    if count == 0 {
        return Ok(());
    }
    if stride < 8 || count > region.len() as u64 / 8 {
        return Err(RemoteFault::OutOfBounds);
    }
    let last = (count - 1)
        .checked_mul(stride)
        .and_then(|d| d.checked_add(offset))
        .ok_or(RemoteFault::OutOfBounds)?;
    region.word(last)?;
    let mut words = Vec::with_capacity(count as usize);
    for i in 0..count {
        let at = i
            .checked_mul(stride)
            .and_then(|d| d.checked_add(offset))
            .ok_or(RemoteFault::OutOfBounds)?;
        words.push(region.word(at)?);
    }
    let _shared = table.atomics.read().unwrap_or_else(|e| e.into_inner());
    for w in words {
        w.fetch_add(add, Ordering::SeqCst);
    }
    Ok(())
}

/// Applies `reduction` with the elements `data` to region `key` at `offset`, in one pass under
/// the exclusive atomics lock; with `old`, copies the bytes there first into it (its length is
/// `data.len()`).
pub(crate) fn accumulate(
    table: &RegionTable,
    key: u64,
    offset: u64,
    reduction: crate::reduce::Reduction,
    data: &[u8],
    old: Option<&mut [u8]>,
) -> Result<(), RemoteFault> {
    let (_keep, dst) = range(table, key, offset, data.len() as u64)?;
    let _exclusive = table.atomics.write().unwrap_or_else(|e| e.into_inner());
    // SAFETY: `dst` points at `data.len()` bytes inside a registered region kept alive by
    // `_keep` (checked by `range`); remote atomics on the node are held off by the exclusive
    // lock, and MPI forbids conflicting plain accesses meanwhile; `data` and `old` are separate
    // buffers (a received frame or a local region's copy, and a fresh buffer).
    unsafe { crate::reduce::apply(reduction, dst, data, old) }
}

/// [`crate::Transport::accumulate`] on `table` (the target's regions) from this thread, for a
/// node addressing itself or the loopback backend: `local`'s elements are copied out first (the
/// local region may be the target's), the old elements go to `fetch`.
pub(crate) fn accumulate_here(
    table: &RegionTable,
    remote: &crate::RemoteSlice,
    local: &crate::LocalSlice,
    reduction: crate::reduce::Reduction,
    fetch: Option<&crate::LocalSlice>,
) -> Result<u64> {
    let mut data = vec![0u8; local.len()];
    local.region().read_at(local.offset(), &mut data)?;
    let mut old = fetch.map(|f| vec![0u8; f.len()]);
    accumulate(
        table,
        remote.region.key.0,
        remote.offset,
        reduction,
        &data,
        old.as_deref_mut(),
    )
    .map_err(|fault| Error::Remote {
        peer: remote.rank(),
        fault,
    })?;
    if let (Some(f), Some(old)) = (fetch, old) {
        f.region().write_at(f.offset(), &old)?;
    }
    Ok(0)
}
