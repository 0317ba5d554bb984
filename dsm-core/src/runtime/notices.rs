//! Write notices: the machine's `Notify` actions (a node started writing a page: every other
//! reader and writer must invalidate its copy at its next acquire) are kept here and delivered
//! in one batch per target node when this node releases, before the release completes: one
//! fetch-and-add reserves the slots in the target's notification log, and one write (two when
//! the reserved slots wrap around the ring) fills them. Release consistency asks no more: a
//! node learns of another's writes at an acquire that follows that node's release, and the
//! release does not end before its notices are in the logs. (They used to be appended one page
//! and one target at a time, at the write fault itself: two round trips per page and target.)

use std::collections::BTreeMap;

use super::*;
use crate::coherence::NodeSet;

/// Values (page + 1) the notice buffer holds: larger batches go in several rounds.
pub(super) const NOTICE_SLOTS: usize = 8192;

/// Notices waiting for this node's next release, and the registered buffer they leave from.
pub(super) struct Notices {
    /// (page, nodes to notify), in the order the writes began.
    pending: Mutex<Vec<(usize, NodeSet)>>,
    /// The local side of the log writes (`NOTICE_SLOTS` words), used by one flush at a time.
    buffer: Mutex<Arc<Region>>,
}

impl Notices {
    /// An empty set of notices over a registered buffer of [`NOTICE_SLOTS`] words.
    pub(super) fn new(t: &AnyTransport) -> Result<Notices> {
        let buffer = Region::allocate(NOTICE_SLOTS * 8)?;
        t.register(&buffer)?;
        Ok(Notices {
            pending: Mutex::new(Vec::new()),
            buffer: Mutex::new(buffer),
        })
    }
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").finish_non_exhaustive()
    }
}

impl Inner {
    /// Keeps the notice that this node writes `page`, for every node in `set`, until the next
    /// release ([`Inner::flush_notices`]).
    pub(super) fn defer_notice(&self, page: usize, set: NodeSet) {
        lock(&self.notices.pending).push((page, set));
    }

    /// Delivers every pending notice: per target node, the pages in one reserved run of its
    /// log. Returns when every notice is in its log.
    pub(super) fn flush_notices(&self) -> Result<()> {
        let pending = std::mem::take(&mut *lock(&self.notices.pending));
        if pending.is_empty() {
            return Ok(());
        }
        let mut by_target: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (page, set) in pending {
            // A coarse set names every rank it may hold; this node never notifies itself.
            for r in set
                .ranks(self.nodes)
                .map(Rank::index)
                .filter(|&r| r != self.me)
            {
                by_target.entry(r).or_default().push(page as u64 + 1);
            }
        }
        // One flush at a time uses the buffer (held across its writes, and no other lock).
        let buffer = lock(&self.notices.buffer);
        let mut sent = 0u64;
        let mut queue: Vec<(usize, &[u64])> = by_target
            .iter()
            .flat_map(|(&r, v)| v.chunks(NOTICE_SLOTS).map(move |c| (r, c)))
            .collect();
        while !queue.is_empty() {
            // A round: as many (target, values) as fit in the buffer.
            let mut round = Vec::new();
            let mut used = 0;
            while let Some(&(r, values)) = queue.first() {
                if used + values.len() > NOTICE_SLOTS {
                    break;
                }
                queue.remove(0);
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                buffer.write_at(used * 8, &bytes)?;
                round.push((r, used, values.len()));
                used += values.len();
            }
            let reserved = round
                .iter()
                .map(|&(r, _, n)| {
                    self.post(Op::FetchAdd {
                        remote: self.logs[r].word(0)?,
                        add: n as u64,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut writes = Vec::new();
            for (&(r, at, n), c) in round.iter().zip(&reserved) {
                let first = c.wait()? as usize;
                // The reserved slots, cut where they wrap around the ring.
                let mut done = 0;
                while done < n {
                    let slot = (first + done) % LOG_CAP;
                    let len = (n - done).min(LOG_CAP - slot);
                    writes.push(self.post(Op::Write {
                        remote: self.logs[r].slice(8 + slot as u64 * 8, len * 8)?,
                        local: LocalSlice::new(&buffer, (at + done) * 8, len * 8)?,
                    })?);
                    done += len;
                }
                sent += n as u64;
            }
            wait_all(&writes)?;
        }
        self.stats.notifications.fetch_add(sent, Ordering::Relaxed);
        Ok(())
    }
}
