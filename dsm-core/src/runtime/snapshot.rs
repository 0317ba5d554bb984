//! The runtime side of checkpoints: the collective allocations in the order they were made,
//! this node's image of an epoch (what it homes, and the allocation state), and putting an image
//! chain back into a freshly built runtime at a restart (before any access to global memory).

use std::collections::{HashMap, HashSet};

use super::*;
use crate::checkpoint::image::{hash64, Allocation, Image};

/// The placement a checkpoint recorded as kind and argument (see `Dsm::alloc_collective`).
pub(crate) fn placement_of(kind: u64, argument: u64) -> Option<Placement> {
    Some(match kind {
        0 => Placement::Blocked,
        1 => Placement::FirstTouch,
        2 => Placement::Cyclic {
            block_pages: usize::try_from(argument).ok().filter(|&b| b >= 1)?,
        },
        3 => Placement::Node(Rank(u32::try_from(argument).ok()?)),
        _ => return None,
    })
}

fn broken(what: String) -> Error {
    Error::Checkpoint(format!("the checkpoint cannot be put back: {what}"))
}

impl Inner {
    /// Remembers a collective allocation every node agreed on.
    pub(crate) fn record_allocation(&self, a: Allocation) {
        lock(&self.allocations).push(a);
    }

    /// Forgets the collective allocation at page `start` (freed).
    pub(crate) fn forget_allocation(&self, start: usize) {
        lock(&self.allocations).retain(|a| a.start != start as u64);
    }

    /// After a restart, the next checkpointed allocation the program has not asked for again.
    pub(crate) fn next_replay(&self) -> Option<Allocation> {
        lock(&self.replay).pop_front()
    }

    /// Puts back an allocation [`Inner::next_replay`] took (the call failed after all).
    pub(crate) fn unreplay(&self, a: Allocation) {
        lock(&self.replay).push_front(a);
    }

    /// The pages this node homes (ascending) and the first-touch ones among them.
    fn homed_pages(&self) -> (Vec<u64>, Vec<u64>) {
        let allocations = lock(&self.allocations).clone();
        let (mut homed, mut first_touch) = (Vec::new(), Vec::new());
        for a in &allocations {
            for p in a.start..a.start + a.pages {
                // Alone, a node homes every page (and never faults, so first-touch pages have
                // no recorded home).
                if self.nodes == 1 || self.homed_here(p as usize) {
                    homed.push(p);
                    if a.kind == 1 && self.nodes > 1 {
                        first_touch.push(p);
                    }
                }
            }
        }
        let arena = (self.collective_pages + self.me * self.arena_pages) as u64;
        homed.extend(
            lock(&self.arena)
                .pages_in_use()
                .into_iter()
                .map(|i| arena + i as u64),
        );
        homed.sort_unstable();
        (homed, first_touch)
    }

    /// This node's image of `epoch` (chain from `chain_start`): every page it homes, with the
    /// content of those whose checksum differs from `saved` (all of them when `saved` is
    /// empty), and the allocation state. `saved` becomes the checksums of this epoch. Called
    /// at a barrier after a release: nobody writes these pages meanwhile.
    ///
    /// # Errors
    /// Transport errors reading the runtime view.
    pub(crate) fn image(
        &self,
        epoch: u64,
        chain_start: u64,
        saved: &mut HashMap<u64, u64>,
    ) -> Result<Image> {
        let (homed, first_touch) = self.homed_pages();
        let (mut pages, mut data) = (Vec::new(), Vec::new());
        let mut now = HashMap::with_capacity(homed.len());
        for &p in &homed {
            // Read straight into the image; kept only if the page changed.
            let at = data.len();
            data.resize(at + PAGE, 0);
            self.runtime.read_at(p as usize * PAGE, &mut data[at..])?;
            let h = hash64(&data[at..]);
            if saved.get(&p) == Some(&h) {
                data.truncate(at);
            } else {
                pages.push(p);
            }
            now.insert(p, h);
        }
        *saved = now;
        Ok(Image {
            rank: self.me as u32,
            nodes: self.nodes as u32,
            epoch,
            chain_start,
            allocations: lock(&self.allocations).clone(),
            first_touch,
            blocks: lock(&self.arena).blocks(),
            homed,
            pages,
            data,
        })
    }

    /// Puts a checkpoint back: the collective heap (and the homes and managers of its pages),
    /// the first-touch homes of every node, this node's arena, and the bytes of every page it
    /// homes (from the newest image of the chain that holds them). Returns the checksums of
    /// the pages put back.
    ///
    /// # Collective
    /// Every node must call it, after [`Inner::build`] and before global memory is used.
    ///
    /// # Errors
    /// [`Error::Checkpoint`] for an image that does not fit this runtime; transport errors.
    pub(crate) fn restore(&self, images: &[Image]) -> Result<()> {
        let last = images
            .last()
            .ok_or_else(|| broken("an empty chain of images".into()))?;
        let pages = self.space.pages() as u64;
        for a in &last.allocations {
            let placement = placement_of(a.kind, a.argument)
                .ok_or_else(|| broken(format!("an unknown placement {}", a.kind)))?;
            let (start, n) = (a.start as usize, a.pages as usize);
            if a.pages == 0 || !lock(&self.collective_heap).claim(start, n) {
                return Err(broken(format!(
                    "the allocation at page {start} (+{n}) does not fit the collective heap"
                )));
            }
            self.place(start, n, placement);
        }
        *lock(&self.allocations) = last.allocations.clone();
        *lock(&self.replay) = last.allocations.iter().copied().collect();
        // Every node learns every first-touch home; managers put it back in their directory.
        let mine: Vec<u8> = last
            .first_touch
            .iter()
            .flat_map(|p| p.to_le_bytes())
            .collect();
        let all = collective::all_gather(&*self.t, &mine, None)?;
        for (home, b) in all.iter().enumerate() {
            for c in b.chunks_exact(8) {
                let p = u64::from_le_bytes(c.try_into().expect("8")) as usize;
                let e = if p < self.collective_pages {
                    self.entry(p)
                } else {
                    0
                };
                let Some(manager) = entry_manager(e) else {
                    return Err(broken(format!(
                        "rank {home} homes page {p}, which is not allocated"
                    )));
                };
                self.map[p].store(map_entry(Some(home), manager), Ordering::Release);
                if manager == self.me {
                    let word = DirEntry::home_word(Rank(home as u32));
                    self._dir
                        .write_at(Field::Home.offset(PageNo(p)), &word.to_le_bytes())?;
                }
            }
        }
        if !lock(&self.arena).restore(&last.blocks) {
            return Err(broken("a malloc block outside this node's arena".into()));
        }
        let mut wanted: HashSet<u64> = last.homed.iter().copied().collect();
        for image in images.iter().rev() {
            for (p, bytes) in image.pages.iter().zip(image.data.chunks_exact(PAGE)) {
                if *p >= pages {
                    return Err(broken(format!("page {p} is outside global memory")));
                }
                if wanted.remove(p) {
                    self.runtime.write_at(*p as usize * PAGE, bytes)?;
                }
            }
        }
        // Pages no image holds were never written (zero), as they are in a fresh memory.
        Ok(())
    }
}
