//! Collective operations (MPI-3.1 chapter 5, "Collective Communication").
//!
//! Each kind of collective has its own transport tag per communicator, so collectives never
//! match point-to-point messages. Messages between two ranks keep their order, and every rank
//! calls the collectives of a communicator in the same order, so consecutive collectives need
//! no sequence numbers. Algorithms: dissemination barrier, binomial-tree broadcast and reduce,
//! recursive-doubling all-reduce (reduce + broadcast when the size is not a power of two),
//! direct exchanges for gather, scatter, all-gather and all-to-all.
//!
//! A mismatch that one rank can see (a contribution of another length than its own) is
//! reported as [`Error::InvalidCount`] instead of being silently accepted.

use transport::Transport;

use crate::comm::{Channel, Communicator, Rank};
use crate::datatype::{bytes, check_op, fill, reduce_bytes, Equivalence, Op};
use crate::error::{Error, ErrorClass, Result};

fn wrong_len(what: &str, got: usize, want: usize) -> Error {
    Error::InvalidCount(format!(
        "{what}: got {got} bytes where {want} were expected"
    ))
}

impl Communicator {
    fn send_to(&self, ch: Channel, to: usize, data: &[u8]) -> Result<()> {
        self.transport().send(self.peer(to), self.tag(ch), data)?;
        Ok(())
    }

    fn recv_from(&self, ch: Channel, from: usize) -> Result<Received> {
        Ok(Received(
            self.transport()
                .recv(Some(self.peer(from)), Some(self.tag(ch)), None)?
                .data,
        ))
    }

    fn me(&self) -> usize {
        self.rank() as usize
    }

    /// `MPI_Barrier` (MPI-3.1 §5.3): returns when every rank has entered.
    ///
    /// # Collective
    /// Every rank must call it.
    ///
    /// # Errors
    /// [`Error::PeerLost`] when a rank is gone.
    pub fn barrier(&self) -> Result<()> {
        let n = self.size_usize();
        let me = self.me();
        let mut dist = 1;
        while dist < n {
            self.send_to(Channel::Barrier, (me + dist) % n, &[])?;
            self.recv_from(Channel::Barrier, (me + n - dist) % n)?;
            dist *= 2;
        }
        Ok(())
    }

    /// A barrier that also tells every rank whether some rank failed its part of the
    /// collective call it belongs to: each rank passes its own outcome, and gets it back, or
    /// [`Error::FailedElsewhere`] naming a failing rank when its own part went well. The
    /// dissemination pattern of [`Communicator::barrier`] carries the highest (class, rank)
    /// seen, so it costs what a barrier costs.
    ///
    /// # Collective
    /// Every rank must call it.
    ///
    /// # Errors
    /// This rank's own error; [`Error::FailedElsewhere`]; [`Error::PeerLost`].
    pub(crate) fn agree(&self, mine: Result<()>) -> Result<()> {
        let n = self.size_usize();
        let me = self.me();
        // (class << 32 | rank), 0 for success: the maximum names the worst failure.
        let mut worst: u64 = match &mine {
            Ok(()) => 0,
            Err(e) => (u64::from(e.class() as i32 as u32) << 32) | me as u64,
        };
        let mut dist = 1;
        while dist < n {
            self.send_to(Channel::Barrier, (me + dist) % n, &worst.to_le_bytes())?;
            let got = self.recv_from(Channel::Barrier, (me + n - dist) % n)?;
            let theirs = got
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes);
            worst = worst.max(theirs);
            dist *= 2;
        }
        mine?;
        if worst == 0 {
            return Ok(());
        }
        Err(Error::FailedElsewhere {
            rank: (worst & 0xffff_ffff) as Rank,
            class: ErrorClass::from_code((worst >> 32) as i32).unwrap_or(ErrorClass::Unknown),
        })
    }

    /// `MPI_Bcast` (MPI-3.1 §5.4): copies `root`'s `buf` into every rank's `buf`.
    ///
    /// # Collective
    /// Every rank must call it with the same root and buffer length.
    ///
    /// # Errors
    /// [`Error::InvalidRank`] for a bad root (at once: the exception of
    /// [the crate's errors](crate#errors)); [`Error::InvalidCount`] when the root's buffer
    /// has another length than this rank's.
    pub fn broadcast<T: Equivalence>(&self, buf: &mut [T], root: Rank) -> Result<()> {
        let root = self.check_rank(root)?;
        let n = self.size_usize();
        let vr = (self.me() + n - root) % n;
        let mut mask = 1;
        let mut received = None;
        while mask < n {
            if vr & mask != 0 {
                let data = self.recv_from(Channel::Broadcast, (vr - mask + root) % n)?;
                if data.len() == std::mem::size_of_val(buf) {
                    fill(buf, &data);
                }
                received = Some(data);
                break;
            }
            mask <<= 1;
        }
        // What came from the root goes on down the tree even when this rank's length differs
        // (the mismatch is this rank's error): the ranks below must not wait forever.
        let payload: &[u8] = received.as_deref().unwrap_or_else(|| bytes(buf));
        mask >>= 1;
        while mask > 0 {
            if vr + mask < n {
                self.send_to(Channel::Broadcast, (vr + mask + root) % n, payload)?;
            }
            mask >>= 1;
        }
        match received {
            Some(data) if data.len() != std::mem::size_of_val(buf) => Err(wrong_len(
                "broadcast",
                data.len(),
                std::mem::size_of_val(buf),
            )),
            _ => Ok(()),
        }
    }

    /// Binomial-tree reduction of `acc` towards virtual rank 0 (`root`); on return the
    /// root's `acc` holds the result. With `op` `None` (this rank's operation is invalid) the
    /// contributions are taken but not combined: `acc` goes on as it is.
    fn reduce_tree<T: Equivalence>(
        &self,
        acc: &mut [T],
        op: Option<Op>,
        root: usize,
    ) -> Result<()> {
        let n = self.size_usize();
        let vr = (self.me() + n - root) % n;
        let mut mask = 1;
        // A contribution of the wrong length is an error here, but the tree still completes
        // (this rank sends on what it has) so that no rank above waits forever.
        let mut failed = None;
        while mask < n {
            if vr & mask == 0 {
                let src = vr | mask;
                if src < n {
                    let data = self.recv_from(Channel::Reduce, (src + root) % n)?;
                    if let Some(Err(e)) = op.map(|op| reduce_bytes(op, acc, &data)) {
                        failed.get_or_insert(e);
                    }
                }
            } else {
                self.send_to(Channel::Reduce, (vr - mask + root) % n, bytes(acc))?;
                break;
            }
            mask <<= 1;
        }
        failed.map_or(Ok(()), Err)
    }

    /// `MPI_Reduce` (MPI-3.1 §5.9.1): combines every rank's `send` with `op`, element by
    /// element, into `recv` at `root` (`recv` is not touched elsewhere and may be empty there).
    ///
    /// # Collective
    /// Every rank must call it with the same root, operation and length.
    ///
    /// # Errors
    /// [`Error::InvalidRank`], [`Error::InvalidOp`] (a bitwise operation on floats,
    /// `Replace`/`NoOp`), [`Error::InvalidCount`] for buffers of different lengths. A rank
    /// with an invalid operation or a `recv` of the wrong length still takes part (its `send`
    /// goes up the tree, uncombined when the operation is invalid), so no other rank waits for
    /// it; the error is reported afterwards. An invalid root cannot take part (no rank knows
    /// where the tree would end): it fails at once, and the ranks that were given a valid root
    /// wait for it; see [the crate's errors](crate#errors).
    pub fn reduce<T: Equivalence>(
        &self,
        send: &[T],
        recv: &mut [T],
        op: Op,
        root: Rank,
    ) -> Result<()> {
        let root = self.check_rank(root)?;
        let bad_op = check_reduction::<T>(op).err();
        let mut acc = send.to_vec();
        // The tree runs even when this rank's arguments are wrong, so that no other rank waits
        // forever; the error is reported afterwards.
        let tree = self.reduce_tree(&mut acc, bad_op.is_none().then_some(op), root);
        if let Some(e) = bad_op {
            return Err(e);
        }
        if self.me() == root && recv.len() != send.len() {
            return Err(Error::InvalidCount(format!(
                "reduce of {} elements into {}",
                send.len(),
                recv.len()
            )));
        }
        tree?;
        if self.me() == root {
            recv.copy_from_slice(&acc);
        }
        Ok(())
    }

    /// `MPI_Allreduce` (MPI-3.1 §5.9.6): like [`Communicator::reduce`], with the result at
    /// every rank.
    ///
    /// # Collective
    /// Every rank must call it with the same operation and length.
    ///
    /// # Errors
    /// As [`Communicator::reduce`] (without a root): a rank with an invalid operation or a
    /// `recv` of the wrong length still takes part with its `send`, and fails afterwards.
    pub fn all_reduce<T: Equivalence>(&self, send: &[T], recv: &mut [T], op: Op) -> Result<()> {
        let bad_op = check_reduction::<T>(op).err();
        let bad_len = (recv.len() != send.len()).then(|| {
            Error::InvalidCount(format!(
                "all-reduce of {} elements into {}",
                send.len(),
                recv.len()
            ))
        });
        // The exchange runs even when this rank's arguments are wrong (with its `send` in a
        // scratch accumulator when `recv` cannot hold it), so that no other rank waits forever.
        let mut scratch = Vec::new();
        let acc: &mut [T] = if bad_len.is_none() {
            recv.copy_from_slice(send);
            recv
        } else {
            scratch.extend_from_slice(send);
            &mut scratch
        };
        let exchanged = self.all_reduce_in_place(acc, bad_op.is_none().then_some(op));
        match bad_op.or(bad_len) {
            Some(e) => Err(e),
            None => exchanged,
        }
    }

    /// The all-reduce exchange on `acc` (this rank's contribution, then the result); `op`
    /// `None` as in [`Communicator::reduce_tree`].
    fn all_reduce_in_place<T: Equivalence>(&self, acc: &mut [T], op: Option<Op>) -> Result<()> {
        let n = self.size_usize();
        if !n.is_power_of_two() {
            // Both phases run whatever the first gave, so that no rank waits forever.
            let reduced = self.reduce_tree(acc, op, 0);
            let spread = self.broadcast(acc, 0);
            return reduced.and(spread);
        }
        let me = self.me();
        let mut mask = 1;
        let mut failed = None;
        while mask < n {
            let partner = me ^ mask;
            self.send_to(Channel::AllReduce, partner, bytes(acc))?;
            let data = self.recv_from(Channel::AllReduce, partner)?;
            // A contribution of the wrong length is an error here; the rounds still complete.
            if let Some(Err(e)) = op.map(|op| reduce_bytes(op, acc, &data)) {
                failed.get_or_insert(e);
            }
            mask <<= 1;
        }
        failed.map_or(Ok(()), Err)
    }

    /// `MPI_Gather` (MPI-3.1 §5.5): `root`'s `recv` receives every rank's `send`, in rank
    /// order (`recv` holds `size × send.len()` elements at the root; elsewhere it is not
    /// touched and may be empty).
    ///
    /// # Collective
    /// Every rank must call it with the same root and length.
    ///
    /// # Errors
    /// [`Error::InvalidRank`] (at once: the exception of [the crate's errors](crate#errors));
    /// [`Error::InvalidCount`] for a `recv` of the wrong length or a contribution of another
    /// length. The root takes every contribution off the transport even then, so none is left
    /// behind for the next gather.
    pub fn gather<T: Equivalence>(&self, send: &[T], recv: &mut [T], root: Rank) -> Result<()> {
        let root = self.check_rank(root)?;
        let k = send.len();
        if self.me() != root {
            return self.send_to(Channel::Gather, root, bytes(send));
        }
        let n = self.size_usize();
        let mut first = check_len("gather", recv.len(), n * k).err();
        for r in 0..n {
            let data = if r == root {
                None
            } else {
                Some(self.recv_from(Channel::Gather, r)?)
            };
            if first.is_some() {
                continue;
            }
            let part = &mut recv[r * k..(r + 1) * k];
            match data {
                None => part.copy_from_slice(send),
                Some(d) if d.len() == std::mem::size_of_val(part) => fill(part, &d),
                Some(d) => first = Some(wrong_len("gather", d.len(), std::mem::size_of_val(part))),
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// `MPI_Allgather` (MPI-3.1 §5.7): every rank's `recv` receives every rank's `send`, in
    /// rank order (`size × send.len()` elements).
    ///
    /// # Collective
    /// Every rank must call it with the same length.
    ///
    /// # Errors
    /// [`Error::InvalidCount`] as for [`Communicator::gather`]. A rank whose `recv` has the
    /// wrong length still sends its contribution and takes the others', so no rank waits for
    /// it and none is left behind.
    pub fn all_gather<T: Equivalence>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let n = self.size_usize();
        let k = send.len();
        let mut first = check_len("all-gather", recv.len(), n * k).err();
        let me = self.me();
        for d in 1..n {
            self.send_to(Channel::AllGather, (me + d) % n, bytes(send))?;
        }
        if first.is_none() {
            recv[me * k..(me + 1) * k].copy_from_slice(send);
        }
        for d in 1..n {
            let r = (me + n - d) % n;
            let data = self.recv_from(Channel::AllGather, r)?;
            if first.is_some() {
                continue;
            }
            let part = &mut recv[r * k..(r + 1) * k];
            if data.len() == std::mem::size_of_val(part) {
                fill(part, &data);
            } else {
                first = Some(wrong_len(
                    "all-gather",
                    data.len(),
                    std::mem::size_of_val(part),
                ));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// `MPI_Scatter` (MPI-3.1 §5.6): rank `r`'s `recv` receives the `r`-th block of
    /// `recv.len()` elements of `root`'s `send` (`send` is read only at the root, where it
    /// holds `size × recv.len()` elements).
    ///
    /// # Collective
    /// Every rank must call it with the same root and length.
    ///
    /// # Errors
    /// [`Error::InvalidRank`] (at once: the exception of [the crate's errors](crate#errors));
    /// [`Error::InvalidCount`] for a `send` of the wrong length or a block of another length. A root whose `send` has the wrong length sends every rank an
    /// empty block, so that none waits forever (they fail with a count error unless they
    /// expect no elements).
    pub fn scatter<T: Equivalence>(&self, send: &[T], recv: &mut [T], root: Rank) -> Result<()> {
        let root = self.check_rank(root)?;
        let k = recv.len();
        if self.me() == root {
            let n = self.size_usize();
            let bad = check_len("scatter", send.len(), n * k).err();
            for r in 0..n {
                if r != root {
                    let block = match bad {
                        None => bytes(&send[r * k..(r + 1) * k]),
                        Some(_) => &[],
                    };
                    self.send_to(Channel::Scatter, r, block)?;
                }
            }
            if let Some(e) = bad {
                return Err(e);
            }
            recv.copy_from_slice(&send[root * k..(root + 1) * k]);
            return Ok(());
        }
        let data = self.recv_from(Channel::Scatter, root)?;
        if data.len() != std::mem::size_of_val(recv) {
            return Err(wrong_len(
                "scatter",
                data.len(),
                std::mem::size_of_val(recv),
            ));
        }
        fill(recv, &data);
        Ok(())
    }

    /// `MPI_Alltoall` (MPI-3.1 §5.8): block `j` of rank `i`'s `send` lands in block `i` of
    /// rank `j`'s `recv`; both hold `size` blocks of equal length.
    ///
    /// # Collective
    /// Every rank must call it with the same length.
    ///
    /// # Errors
    /// [`Error::InvalidCount`] for buffers whose lengths differ or are not a multiple of the
    /// size, or a block of another length. A rank with bad buffers sends every rank an empty
    /// block and takes theirs, so no rank waits for it and none is left behind.
    pub fn all_to_all<T: Equivalence>(&self, send: &[T], recv: &mut [T]) -> Result<()> {
        let n = self.size_usize();
        let mut first = check_len("all-to-all", recv.len(), send.len()).err();
        if first.is_none() && !send.len().is_multiple_of(n) {
            first = Some(Error::InvalidCount(format!(
                "all-to-all of {} elements over {n} ranks",
                send.len()
            )));
        }
        let k = send.len() / n;
        let me = self.me();
        for d in 1..n {
            let to = (me + d) % n;
            let block = match first {
                None => bytes(&send[to * k..(to + 1) * k]),
                Some(_) => &[],
            };
            self.send_to(Channel::AllToAll, to, block)?;
        }
        if first.is_none() {
            recv[me * k..(me + 1) * k].copy_from_slice(&send[me * k..(me + 1) * k]);
        }
        for d in 1..n {
            let r = (me + n - d) % n;
            let data = self.recv_from(Channel::AllToAll, r)?;
            if first.is_some() {
                continue;
            }
            let part = &mut recv[r * k..(r + 1) * k];
            if data.len() == std::mem::size_of_val(part) {
                fill(part, &data);
            } else {
                first = Some(wrong_len(
                    "all-to-all",
                    data.len(),
                    std::mem::size_of_val(part),
                ));
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Every rank's bytes, in rank order (used to set windows up).
    pub(crate) fn all_gather_bytes(&self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        let n = self.size_usize();
        let me = self.me();
        for d in 1..n {
            self.send_to(Channel::WindowCreate, (me + d) % n, data)?;
        }
        (0..n)
            .map(|r| {
                if r == me {
                    Ok(data.to_vec())
                } else {
                    Ok(self.recv_from(Channel::WindowCreate, r)?.to_vec())
                }
            })
            .collect()
    }
}

/// A collective's message taken off the transport. Dropping it gives its buffer back to the
/// transport's pool (`transport::pool`), so that the next large message reuses its pages:
/// a buffer freed instead was unmapped, and the next one faulted in afresh, a page fault per
/// 4 KiB (`osu_alltoall` and `osu_allgather` at 256 KiB: 7-9x MPICH).
#[derive(Debug)]
struct Received(Vec<u8>);

impl std::ops::Deref for Received {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        transport::pool::recycle(std::mem::take(&mut self.0));
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::InvalidCount(format!(
            "{what}: a buffer of {got} elements where {want} are needed"
        )))
    }
}

fn check_reduction<T: Equivalence>(op: Op) -> Result<()> {
    if matches!(op, Op::Replace | Op::NoOp) {
        return Err(Error::InvalidOp(format!(
            "{op:?} is an accumulate operation, not a reduction"
        )));
    }
    check_op::<T>(op)
}
