//! RMA communication calls (MPI-3.1 §11.3): put, get, accumulate, get-accumulate,
//! fetch-and-op, compare-and-swap.

use std::any::TypeId;
use std::sync::Arc;

use transport::{wait_all, Completion, LocalSlice, Op as TOp, Region, RemoteSlice, Transport};

use super::{Pending, Window, PAGE};
use crate::comm::{Rank, Status, PROC_NULL};
use crate::datatype::{bytes, bytes_mut, check_op, fill, Equivalence, Op};
use crate::error::{Error, Result};
use crate::request::Request;

/// Most words whose last seen value a window remembers (see [`Window::guesses`]).
const GUESSES: usize = 4096;

/// Whether `T` is an 8-byte integer, whose `Sum` the transport's `fetch_add` does directly.
fn is_word_integer<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<u64>() || TypeId::of::<T>() == TypeId::of::<i64>()
}

impl Window {
    /// Checks the target and that an access epoch covers it; returns its index.
    fn access(&self, target: Rank) -> Result<usize> {
        let t = self.comm.check_rank(target)?;
        let e = self.epochs();
        let open = e.fence
            || e.lock_all
            || e.locks.contains_key(&t)
            || e.access.as_ref().is_some_and(|g| g.contains(&t));
        if open {
            Ok(t)
        } else {
            Err(Error::RmaSync(format!(
                "no access epoch covers rank {target}: call fence, lock, lock_all or start first"
            )))
        }
    }

    /// `MPI_Put` (MPI-3.1 §11.3.1): writes `origin` into `target`'s part at displacement
    /// `disp`. The origin buffer may be reused at once; the write is complete at the target
    /// after the next `flush`, `unlock`, `complete` or `fence`. Every RMA call to
    /// [`PROC_NULL`] does nothing (MPI-3.1 §11.3).
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// [`Error::InvalidRank`], [`Error::RmaSync`], [`Error::OutOfWindow`],
    /// [`Error::InvalidDisplacement`]; transport errors.
    pub fn put<T: Equivalence>(&self, origin: &[T], target: Rank, disp: usize) -> Result<()> {
        if target == PROC_NULL {
            return Ok(());
        }
        let t = self.access(target)?;
        let data = bytes(origin);
        let offset = self.range(t, disp, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        let runs = self.remote_runs(t, offset, data.len())?;
        let stage = self.staging(data.len())?;
        stage.write_at(0, data)?;
        let ops = runs
            .into_iter()
            .map(|(at, remote)| {
                Ok(TOp::Write {
                    local: LocalSlice::new(&stage, at, remote.len)?,
                    remote,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let done = self.t().post_batch(ops)?;
        self.keep_pending(t, done, stage, None);
        Ok(())
    }

    /// Keeps `done`, the completions of one call's operations to `target`, until the flush
    /// that waits for them; the last one carries the call's staging region (recycled then)
    /// and, for a posted get, where its bytes go.
    pub(super) fn keep_pending(
        &self,
        target: usize,
        done: Vec<Completion>,
        stage: Arc<Region>,
        deliver: Option<super::Deliver>,
    ) {
        let mut e = self.epochs();
        let last = done.len().saturating_sub(1);
        let get = deliver.is_some();
        let mut stage = Some(stage);
        for (i, c) in done.into_iter().enumerate() {
            e.pending.push(Pending {
                target,
                done: c,
                staging: if i == last { stage.take() } else { None },
                get,
                deliver: if i == last { deliver } else { None },
            });
        }
    }

    /// The reads of `runs` (offsets in the part, and where each lies remotely) into `stage`
    /// at `base` plus each run's offset.
    fn read_ops(
        stage: &Arc<Region>,
        base: usize,
        runs: Vec<(usize, RemoteSlice)>,
    ) -> Result<Vec<TOp>> {
        runs.into_iter()
            .map(|(at, remote)| {
                Ok(TOp::Read {
                    local: LocalSlice::new(stage, base + at, remote.len)?,
                    remote,
                })
            })
            .collect()
    }

    /// `MPI_Get` (MPI-3.1 §11.3.2): reads `target`'s part at displacement `disp` into
    /// `origin`. Completes before it returns.
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// As [`Window::put`].
    pub fn get<T: Equivalence>(&self, origin: &mut [T], target: Rank, disp: usize) -> Result<()> {
        if target == PROC_NULL {
            return Ok(());
        }
        let t = self.access(target)?;
        let len = std::mem::size_of_val(origin);
        let offset = self.range(t, disp, len)?;
        if len == 0 {
            return Ok(());
        }
        // The data lands in the staging region at the origin's offset within its page: a copy
        // whose destination sits a little past its source's page offset (a `malloc`ed buffer
        // 16 bytes past a page against a page-aligned staging region) stalls on every load
        // (4K aliasing with the stores just made), which made 64 KiB-256 KiB gets into
        // `malloc`ed buffers 2-3x slower than into page-aligned ones.
        let skew = origin.as_ptr() as usize % PAGE;
        let stage = self.staging(skew + len)?;
        let runs = self.remote_runs(t, offset, len)?;
        self.read_runs(&stage, skew, runs)?;
        // Straight from the staging region into the origin: no intermediate buffer.
        let read = stage.read_at(skew, bytes_mut(origin));
        self.recycle(stage);
        Ok(read?)
    }

    /// `MPI_Get` from C (MPI-3.1 §11.3.2): posts the read of `len` bytes of `target`'s part at
    /// displacement `disp`; they land in `origin` by the return of the next call that
    /// completes this rank's operations to `target` (a flush, an unlock, a fence, a complete),
    /// as MPI allows, so that a window of gets is in flight at once instead of one round trip
    /// after another. Checked as [`Window::get`] is, before anything is posted.
    ///
    /// # Safety
    /// `origin` must be valid for writes of `len` bytes, and neither read nor written by
    /// anything else, until that call returns (or the window is freed, when nothing is
    /// written any more).
    ///
    /// # Errors
    /// As [`Window::get`].
    pub unsafe fn get_posted(
        &self,
        origin: *mut u8,
        len: usize,
        target: Rank,
        disp: usize,
    ) -> Result<()> {
        if target == PROC_NULL {
            return Ok(());
        }
        let t = self.access(target)?;
        let offset = self.range(t, disp, len)?;
        if len == 0 {
            return Ok(());
        }
        // As in `get`: the staging region at the origin's page offset.
        let skew = origin as usize % PAGE;
        let stage = self.staging(skew + len)?;
        let runs = self.remote_runs(t, offset, len)?;
        let done = self.t().post_batch(Self::read_ops(&stage, skew, runs)?)?;
        let to = origin as usize;
        self.keep_pending(t, done, stage, Some(super::Deliver { to, len, skew }));
        Ok(())
    }

    /// Reads each run into `stage` at `base` plus its offset, and waits for them all.
    fn read_runs(
        &self,
        stage: &Arc<Region>,
        base: usize,
        runs: Vec<(usize, RemoteSlice)>,
    ) -> Result<()> {
        let done = self.t().post_batch(Self::read_ops(stage, base, runs)?)?;
        wait_all(&done)?;
        Ok(())
    }

    /// The home copy of the 8-byte word enclosing byte `offset` of `target`'s part.
    ///
    /// # Errors
    /// [`Error::InvalidDisplacement`] when that word is not (8-byte aligned) in the part's
    /// registered memory.
    fn word(&self, target: usize, offset: usize) -> Result<RemoteSlice> {
        let part = &self.parts[target];
        // How far the enclosing word starts before the byte (the part itself need not be
        // 8-byte aligned).
        let back = part.addr.wrapping_add(offset) % 8;
        let outside = || {
            Error::InvalidDisplacement(format!(
                "the 8-byte word around byte {offset} of rank {target}'s part lies outside it"
            ))
        };
        let slice = match &part.home {
            Some(home) => {
                let at = home
                    .offset
                    .checked_add(offset as u64)
                    .and_then(|o| o.checked_sub(back as u64))
                    .ok_or_else(outside)?;
                home.region.slice(at, 8)?
            }
            None => {
                let at = part
                    .addr
                    .checked_add(offset)
                    .map(|a| a - back)
                    .ok_or_else(outside)?;
                self.comm.shared.dsm.home_slice(at as *const u8, 8)?
            }
        };
        if !slice.offset.is_multiple_of(8) {
            return Err(Error::InvalidDisplacement(format!(
                "rank {target}'s window part is not 8-byte aligned for atomics"
            )));
        }
        Ok(slice)
    }

    /// Checks an atomic access: elements aligned to their size. Returns the byte offset.
    fn atomic_range<T: Equivalence>(
        &self,
        target: usize,
        disp: usize,
        count: usize,
    ) -> Result<usize> {
        let size = std::mem::size_of::<T>();
        let offset = self.range(target, disp, count * size)?;
        if !(self.parts[target].addr + offset).is_multiple_of(size) {
            return Err(Error::InvalidDisplacement(format!(
                "an atomic {} at byte {offset} is not aligned to its size",
                T::NAME
            )));
        }
        Ok(offset)
    }

    /// Applies `op` with `origin` to `count` elements at `offset` of `target`'s part,
    /// atomically per element; returns the elements' old values.
    fn atomic_update<T: Equivalence>(
        &self,
        target: usize,
        offset: usize,
        origin: &[T],
        op: Op,
        want_old: bool,
    ) -> Result<Vec<T>> {
        let size = std::mem::size_of::<T>();
        let count = origin.len();
        if count == 0 {
            return Ok(Vec::new());
        }
        let word_sum = op == Op::Sum && is_word_integer::<T>();
        // The target combines the elements itself when the transport can (see `reduce.rs`),
        // except for one 8-byte integer sum: one remote fetch-and-add.
        if !(word_sum && count == 1) {
            if let Some(old) = self.reduce_at_target(target, offset, origin, op, want_old)? {
                return Ok(old);
            }
        }
        // One 8-byte integer sum whose old value is wanted (`MPI_Fetch_and_op`): one call, as
        // compare-and-swap makes, with no batch around it (the batch's vectors and completion
        // made fetch-and-op over shm 2.5x compare-and-swap).
        if word_sum && count == 1 && want_old {
            let add: u64 = bytemuck::pod_read_unaligned(bytes(origin));
            let old = self.t().fetch_add(self.word(target, offset)?, add)?;
            return Ok(vec![bytemuck::pod_read_unaligned(&old.to_le_bytes())]);
        }
        // Sum of 8-byte integers: one fetch-and-add per element, at the target's memory.
        if word_sum {
            let ops = (0..count)
                .map(|i| {
                    let add: u64 = bytemuck::pod_read_unaligned(bytes(&origin[i..=i]));
                    Ok(TOp::FetchAdd {
                        remote: self.word(target, offset + i * 8)?,
                        add,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let done = self.t().post_batch(ops)?;
            if !want_old {
                let mut e = self.epochs();
                for c in done {
                    e.pending.push(Pending {
                        target,
                        done: c,
                        staging: None,
                        get: false,
                        deliver: None,
                    });
                }
                return Ok(Vec::new());
            }
            let mut old = Vec::with_capacity(count);
            for c in &done {
                old.push(bytemuck::pod_read_unaligned(&c.wait()?.to_le_bytes()));
            }
            return Ok(old);
        }
        // Otherwise: the covering words, each changed by compare-and-swap until it sticks.
        let base = self.parts[target].addr + offset;
        let first = base - base % 8;
        let end = base + std::mem::size_of_val(origin);
        let words = (end - first).div_ceil(8);
        // Byte `offset + 8w` lies in word `w` (the one at `first + 8w`).
        let word_of = |w: usize| self.word(target, offset + w * 8);
        let remotes = (0..words).map(word_of).collect::<Result<Vec<_>>>()?;
        // The current values: the last ones this rank saw, when it saw every word before (a
        // guess that the compare-and-swap below verifies, saving the read's round trip when
        // nobody else changed them); otherwise atomic reads. An atomic read (NoOp) never
        // guesses.
        let guessed: Option<Vec<u64>> = if op == Op::NoOp {
            None
        } else {
            let g = self.guesses();
            remotes
                .iter()
                .map(|r| g.get(&(r.region.rank, r.region.key, r.offset)).copied())
                .collect()
        };
        let mut verified = vec![guessed.is_none(); words];
        let mut current = match guessed {
            Some(g) => g,
            None => {
                let reads = self.t().post_batch(
                    remotes
                        .iter()
                        .map(|&remote| TOp::FetchAdd { remote, add: 0 })
                        .collect(),
                )?;
                reads
                    .iter()
                    .map(Completion::wait)
                    .collect::<std::result::Result<Vec<u64>, _>>()?
            }
        };
        let skip = base - first;
        let len = std::mem::size_of_val(origin);
        // Elements lie inside one word each (aligned to their size, which divides 8).
        let elements_of = |w: usize| {
            let a = skip.max(w * 8);
            let b = (skip + len).min(w * 8 + 8);
            ((a - skip) / size, (b - skip) / size, a - w * 8)
        };
        let mut olds = vec![T::zeroed(); count];
        let mut open: Vec<usize> = (0..words).collect();
        while !open.is_empty() {
            let mut desired = Vec::with_capacity(open.len());
            for &w in &open {
                let (lo, hi, at) = elements_of(w);
                let mut word = current[w].to_le_bytes();
                fill(&mut olds[lo..hi], &word[at..at + (hi - lo) * size]);
                let mut new = olds[lo..hi].to_vec();
                T::reduce(op, &mut new, &origin[lo..hi])?;
                word[at..at + (hi - lo) * size].copy_from_slice(bytes(&new));
                desired.push(u64::from_le_bytes(word));
            }
            // Words whose value does not change need no swap: the atomic read was the update.
            let swaps: Vec<(usize, u64)> = open
                .iter()
                .zip(&desired)
                .filter(|(&w, &d)| d != current[w] || !verified[w])
                .map(|(&w, &d)| (w, d))
                .collect();
            if swaps.is_empty() {
                break;
            }
            let done = self.t().post_batch(
                swaps
                    .iter()
                    .map(|&(w, d)| TOp::CompareSwap {
                        remote: remotes[w],
                        expected: current[w],
                        desired: d,
                    })
                    .collect(),
            )?;
            open.clear();
            for (&(w, d), c) in swaps.iter().zip(&done) {
                let seen = c.wait()?;
                if seen != current[w] {
                    // Another rank changed the word meanwhile (or the guess was stale):
                    // again from its real value.
                    current[w] = seen;
                    verified[w] = true;
                    open.push(w);
                } else {
                    current[w] = d;
                }
            }
        }
        for (r, &v) in remotes.iter().zip(&current) {
            self.remember((r.region.rank, r.region.key, r.offset), v);
        }
        Ok(olds)
    }

    /// Remembers `word` as the last value seen in the remote word `key` (rank, region key,
    /// offset): the guess of the next read-modify-write there. At most [`GUESSES`] words.
    fn remember(&self, key: (transport::Rank, transport::RemoteKey, u64), word: u64) {
        let mut g = self.guesses();
        if g.len() >= GUESSES && !g.contains_key(&key) {
            g.clear();
        }
        g.insert(key, word);
    }

    /// `MPI_Accumulate` (MPI-3.1 §11.3.4): combines `origin` with `target`'s elements at
    /// `disp` using `op`, atomically per element with respect to other accumulates. Over a
    /// transport that reduces at the target (tcp, loopback) the elements travel once and the
    /// target combines them in one pass; the update is posted and complete at the next
    /// `flush`, as are sums of `u64`/`i64` on other transports; other operations complete
    /// before the call returns there (word by word, with remote compare-and-swaps).
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// As [`Window::put`]; [`Error::InvalidOp`] for a bitwise operation on floats;
    /// [`Error::InvalidDisplacement`] for elements not aligned to their size.
    pub fn accumulate<T: Equivalence>(
        &self,
        origin: &[T],
        target: Rank,
        disp: usize,
        op: Op,
    ) -> Result<()> {
        check_op::<T>(op)?;
        if target == PROC_NULL {
            return Ok(());
        }
        let t = self.access(target)?;
        let offset = self.atomic_range::<T>(t, disp, origin.len())?;
        if op == Op::NoOp {
            return Ok(());
        }
        self.atomic_update(t, offset, origin, op, false).map(drop)
    }

    /// `MPI_Get_accumulate` (MPI-3.1 §11.3.4): like [`Window::accumulate`], and `result`
    /// receives the target's elements as they were before. With [`Op::NoOp`] it is an atomic
    /// read. Completes before it returns.
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// As [`Window::accumulate`]; [`Error::InvalidCount`] when `result` and `origin` differ
    /// in length.
    pub fn get_accumulate<T: Equivalence>(
        &self,
        origin: &[T],
        result: &mut [T],
        target: Rank,
        disp: usize,
        op: Op,
    ) -> Result<()> {
        check_op::<T>(op)?;
        if result.len() != origin.len() {
            return Err(Error::InvalidCount(format!(
                "get-accumulate of {} elements into a result of {}",
                origin.len(),
                result.len()
            )));
        }
        if target == PROC_NULL {
            return Ok(());
        }
        let t = self.access(target)?;
        let offset = self.atomic_range::<T>(t, disp, origin.len())?;
        let old = self.atomic_update(t, offset, origin, op, true)?;
        result.copy_from_slice(&old);
        Ok(())
    }

    /// `MPI_Fetch_and_op` (MPI-3.1 §11.3.4): applies `op` with `origin` to one element of
    /// `target`'s part at `disp`; returns its old value (zero for [`PROC_NULL`]).
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// As [`Window::accumulate`].
    pub fn fetch_and_op<T: Equivalence>(
        &self,
        origin: T,
        target: Rank,
        disp: usize,
        op: Op,
    ) -> Result<T> {
        let mut old = [T::zeroed()];
        self.get_accumulate(&[origin], &mut old, target, disp, op)?;
        Ok(old[0])
    }

    /// `MPI_Compare_and_swap` (MPI-3.1 §11.3.4): if `target`'s element at `disp` equals
    /// `compare`, replaces it with `origin`; returns its old value either way. Integer types
    /// only, as MPI requires. With [`PROC_NULL`] nothing happens and it returns zero.
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// As [`Window::put`]; [`Error::InvalidDatatype`] for floating-point types.
    pub fn compare_and_swap<T: Equivalence>(
        &self,
        origin: T,
        compare: T,
        target: Rank,
        disp: usize,
    ) -> Result<T> {
        if !T::INTEGER {
            return Err(Error::InvalidDatatype(format!(
                "compare-and-swap is defined on integers, not {}",
                T::NAME
            )));
        }
        if target == PROC_NULL {
            return Ok(T::zeroed());
        }
        let t = self.access(target)?;
        let offset = self.atomic_range::<T>(t, disp, 1)?;
        let size = std::mem::size_of::<T>();
        let base = self.parts[t].addr + offset;
        let at = base % 8;
        let remote = self.word(t, offset)?;
        let value = |w: u64| -> T { bytemuck::pod_read_unaligned(&w.to_le_bytes()[at..at + size]) };
        let with = |w: u64, v: T| -> u64 {
            let mut b = w.to_le_bytes();
            b[at..at + size].copy_from_slice(bytes(&[v]));
            u64::from_le_bytes(b)
        };
        if size == 8 {
            let old = self
                .t()
                .compare_swap(remote, with(0, compare), with(0, origin))?;
            return Ok(value(old));
        }
        // A narrower element: swap its whole word. Its neighbours' bytes are guessed from the
        // word as this rank last saw it (zero the first time) and the element from `compare`,
        // so the first swap is the whole operation when the guess holds; when it fails it
        // returns the real word, and a second swap is needed only if the element did equal
        // `compare` (the neighbours changed). No atomic read first: one round trip, not two.
        let key = (remote.region.rank, remote.region.key, remote.offset);
        let guess = self.guesses().get(&key).copied().unwrap_or(0);
        let mut current = with(guess, compare);
        let mut real = false;
        let old = loop {
            let old = value(current);
            if real && bytes(&[old]) != bytes(&[compare]) {
                break old;
            }
            let desired = with(current, origin);
            let seen = self.t().compare_swap(remote, current, desired)?;
            if seen == current {
                current = desired;
                break old;
            }
            (current, real) = (seen, true);
        };
        self.remember(key, current);
        Ok(old)
    }

    /// Request-based RMA needs a passive-target epoch on `target` (MPI-3.1 §11.3.5).
    fn check_request_based(&self, target: Rank) -> Result<()> {
        if target == PROC_NULL {
            return Ok(());
        }
        let t = self.comm.check_rank(target)?;
        let e = self.epochs();
        if e.lock_all || e.locks.contains_key(&t) {
            Ok(())
        } else {
            Err(Error::RmaSync(format!(
                "request-based RMA to rank {target} outside a lock or lock_all epoch"
            )))
        }
    }

    /// `MPI_Rput` (MPI-3.1 §11.3.5): [`Window::put`] returning a request that completes when
    /// the origin buffer may be reused. A put copies its data when it is called, so the
    /// request is complete when it is returned; the write is complete at the target after the
    /// next `flush` or `unlock`, as for a put. Allowed in passive-target epochs only, as MPI
    /// requires.
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// As [`Window::put`]; [`Error::RmaSync`] outside a `lock` or `lock_all` epoch on
    /// `target`.
    pub fn rput<T: Equivalence>(
        &self,
        origin: &[T],
        target: Rank,
        disp: usize,
    ) -> Result<Request<'static>> {
        self.check_request_based(target)?;
        self.put(origin, target, disp)?;
        Ok(Request::completed(Status {
            source: target,
            tag: -1,
            bytes: std::mem::size_of_val(origin),
        }))
    }

    /// `MPI_Rget` (MPI-3.1 §11.3.5): [`Window::get`] returning a request that completes when
    /// `origin` holds the data. A get waits for its data, so the request is complete when it
    /// is returned. Allowed in passive-target epochs only, as MPI requires.
    ///
    /// # One-sided
    /// The target takes no part.
    ///
    /// # Errors
    /// As [`Window::get`]; [`Error::RmaSync`] outside a `lock` or `lock_all` epoch on
    /// `target`.
    pub fn rget<T: Equivalence>(
        &self,
        origin: &mut [T],
        target: Rank,
        disp: usize,
    ) -> Result<Request<'static>> {
        self.check_request_based(target)?;
        self.get(origin, target, disp)?;
        Ok(Request::completed(Status {
            source: target,
            tag: -1,
            bytes: std::mem::size_of_val(origin),
        }))
    }
}
