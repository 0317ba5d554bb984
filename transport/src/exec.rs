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
    for w in words {
        w.fetch_add(add, Ordering::SeqCst);
    }
    Ok(())
}
