//! Accumulates applied by the target (MPI-3.1 §11.3.4): the origin's elements travel once and
//! the target combines them into its memory in one pass ([`transport::Transport::accumulate`]),
//! instead of the origin updating the target word by word with remote compare-and-swaps. Used
//! when the transport serves reductions at the target (`Capabilities::remote_reduce`: tcp and
//! loopback); otherwise, and for a single 8-byte integer sum (one remote fetch-and-add),
//! `ops.rs` updates word by word.

use std::any::TypeId;

use transport::{wait_all, Elem, LocalSlice, ReduceOp, Reduction, Transport};

use super::Window;
use crate::datatype::{bytes, bytes_mut, Equivalence, Op};
use crate::error::Result;

/// The transport's element type for `T`.
fn elem_of<T: 'static>() -> Option<Elem> {
    let t = TypeId::of::<T>();
    let table = [
        (TypeId::of::<i8>(), Elem::I8),
        (TypeId::of::<u8>(), Elem::U8),
        (TypeId::of::<i16>(), Elem::I16),
        (TypeId::of::<u16>(), Elem::U16),
        (TypeId::of::<i32>(), Elem::I32),
        (TypeId::of::<u32>(), Elem::U32),
        (TypeId::of::<i64>(), Elem::I64),
        (TypeId::of::<u64>(), Elem::U64),
        (TypeId::of::<f32>(), Elem::F32),
        (TypeId::of::<f64>(), Elem::F64),
    ];
    table.iter().find(|(id, _)| *id == t).map(|&(_, e)| e)
}

/// The transport's operation for `op`.
fn reduce_op(op: Op) -> ReduceOp {
    match op {
        Op::Sum => ReduceOp::Sum,
        Op::Prod => ReduceOp::Prod,
        Op::Min => ReduceOp::Min,
        Op::Max => ReduceOp::Max,
        Op::BAnd => ReduceOp::BAnd,
        Op::BOr => ReduceOp::BOr,
        Op::BXor => ReduceOp::BXor,
        Op::Replace => ReduceOp::Replace,
        Op::NoOp => ReduceOp::NoOp,
    }
}

impl Window {
    /// Applies `op` with `origin` to the elements at `offset` of `target`'s part, at the
    /// target: `Ok(None)` when the transport cannot (the caller updates word by word), else the
    /// old elements when `want_old` (the call waits for them), or nothing (the update is
    /// pending until the next flush, like a put's).
    ///
    /// # Errors
    /// Transport errors; errors at the target arrive when the operation is waited for.
    pub(super) fn reduce_at_target<T: Equivalence>(
        &self,
        target: usize,
        offset: usize,
        origin: &[T],
        op: Op,
        want_old: bool,
    ) -> Result<Option<Vec<T>>> {
        if !self.t().capabilities().remote_reduce {
            return Ok(None);
        }
        let Some(reduction) = elem_of::<T>().and_then(|e| Reduction::new(e, reduce_op(op))) else {
            return Ok(None);
        };
        let data = bytes(origin);
        // Runs never split an element: they break at page boundaries, and elements are aligned
        // to their size, which divides the page size.
        let runs = self.remote_runs(target, offset, data.len())?;
        let stage = self.staging(data.len())?;
        stage.write_at(0, data)?;
        let result = if want_old {
            Some(self.staging(data.len())?)
        } else {
            None
        };
        let mut done = Vec::with_capacity(runs.len());
        for (at, remote) in runs {
            let local = LocalSlice::new(&stage, at, remote.len)?;
            let fetch = match &result {
                Some(r) => Some(LocalSlice::new(r, at, remote.len)?),
                None => None,
            };
            done.push(self.t().accumulate(remote, &local, reduction, fetch)?);
        }
        let Some(result) = result else {
            self.keep_pending(target, done, stage, None);
            return Ok(Some(Vec::new()));
        };
        let waited = wait_all(&done);
        self.recycle(stage);
        let mut old = vec![T::zeroed(); origin.len()];
        let read = waited.and_then(|()| result.read_at(0, bytes_mut(&mut old)));
        self.recycle(result);
        read?;
        Ok(Some(old))
    }
}
