//! Which epoch a restart resumes from, decided the same way on every node from what every node
//! found in its directory (exchanged with an all-gather): the newest epoch whose whole chain
//! (from its full epoch on) is readable for every rank, from the rank's own image or else from
//! the copy its partner (the next rank) keeps. Pure: no files, no messages.

/// What one node found of one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// The epoch.
    pub(crate) epoch: u64,
    /// The full epoch its chain starts at.
    pub(crate) chain_start: u64,
    /// Where global memory was mapped.
    pub(crate) global_base: u64,
    /// The node's own image is whole.
    pub(crate) own: bool,
    /// The copy it keeps of its partner's image is whole.
    pub(crate) copy: bool,
}

/// What one node reports before a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// The epochs it has a manifest of.
    pub(crate) found: Vec<Found>,
    /// Why this job cannot resume from its checkpoints at all (another node count, program or
    /// global size), if so.
    pub(crate) refused: Option<String>,
}

/// Where a rank's image of one epoch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The rank's own file.
    Own,
    /// The copy its partner keeps.
    Partner,
}

/// The decision: resume from `epoch`, reading each rank's chain `chain_start..=epoch` from
/// `sources[rank][epoch - chain_start]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The epoch resumed from.
    pub(crate) epoch: u64,
    /// The full epoch its chain starts at.
    pub(crate) chain_start: u64,
    /// Where global memory was mapped.
    pub(crate) global_base: u64,
    /// Per rank, per epoch of the chain, where the image comes from.
    pub(crate) sources: Vec<Vec<Source>>,
    /// Newer epochs passed over, and why.
    pub(crate) skipped: Vec<String>,
}

/// Bytes of one [`Found`] in a report.
const RECORD: usize = 25;

impl Report {
    /// The report's bytes (for the all-gather).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = (self.found.len() as u32).to_le_bytes().to_vec();
        for f in &self.found {
            b.extend_from_slice(&f.epoch.to_le_bytes());
            b.extend_from_slice(&f.chain_start.to_le_bytes());
            b.extend_from_slice(&f.global_base.to_le_bytes());
            b.push(u8::from(f.own) | u8::from(f.copy) << 1);
        }
        if let Some(r) = &self.refused {
            b.extend_from_slice(r.as_bytes());
        }
        b
    }

    /// Reads a peer's report; `None` when malformed.
    pub(crate) fn decode(b: &[u8]) -> Option<Report> {
        let n = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let body = b.get(4..4 + n.checked_mul(RECORD)?)?;
        let word =
            |c: &[u8], i: usize| u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().expect("8"));
        let found = body
            .chunks_exact(RECORD)
            .map(|c| Found {
                epoch: word(c, 0),
                chain_start: word(c, 1),
                global_base: word(c, 2),
                own: c[24] & 1 != 0,
                copy: c[24] & 2 != 0,
            })
            .collect();
        let rest = &b[4 + n * RECORD..];
        let refused = (!rest.is_empty()).then(|| String::from_utf8_lossy(rest).into_owned());
        Some(Report { found, refused })
    }
}

/// Decides the restart from every rank's report (indexed by rank).
///
/// `Ok((None, why))`: a fresh start, because no rank has any checkpoint, or because no epoch was
/// ever finished by every rank (each one found lacks some rank's manifest: the job ended while
/// writing its first checkpoint, before any was whole), said in `why`
/// (`None` when there were no checkpoints at all).
///
/// # Errors
/// A sentence: a rank refused (it names the rank and why), or no epoch is whole, with the
/// reason for each epoch tried.
pub(crate) fn choose(reports: &[Report]) -> Result<(Option<Plan>, Option<String>), String> {
    let nodes = reports.len();
    if let Some((rank, why)) = reports
        .iter()
        .enumerate()
        .find_map(|(r, rep)| rep.refused.as_ref().map(|w| (r, w)))
    {
        return Err(format!("rank {rank}: {why}"));
    }
    let find = |rank: usize, epoch: u64| reports[rank].found.iter().find(|f| f.epoch == epoch);
    let mut epochs: Vec<(u64, u64, u64)> = reports
        .iter()
        .flat_map(|r| {
            r.found
                .iter()
                .map(|f| (f.epoch, f.chain_start, f.global_base))
        })
        .collect();
    if epochs.is_empty() {
        return Ok((None, None));
    }
    epochs.sort_unstable();
    epochs.dedup_by_key(|e| e.0);
    let mut skipped = Vec::new();
    'epochs: for &(epoch, chain_start, global_base) in epochs.iter().rev() {
        if chain_start > epoch {
            skipped.push(format!("epoch {epoch}: a chain that starts after it"));
            continue;
        }
        let mut sources = vec![Vec::new(); nodes];
        for e in chain_start..=epoch {
            for (rank, src) in sources.iter_mut().enumerate() {
                let partner = (rank + 1) % nodes;
                if find(rank, e).is_some_and(|f| f.own) {
                    src.push(Source::Own);
                } else if nodes > 1 && find(partner, e).is_some_and(|f| f.copy) {
                    src.push(Source::Partner);
                } else {
                    skipped.push(format!(
                        "epoch {epoch}: rank {rank} has no whole image of epoch {e}, and {}",
                        if nodes > 1 {
                            format!("rank {partner} no whole copy of it")
                        } else {
                            "there is no partner copy in a job of one node".into()
                        }
                    ));
                    continue 'epochs;
                }
            }
        }
        return Ok((
            Some(Plan {
                epoch,
                chain_start,
                global_base,
                sources,
                skipped,
            }),
            None,
        ));
    }
    // An epoch that some rank never committed (no manifest: the rank ended before it finished
    // writing) was never whole; when that holds of every epoch found, no checkpoint ever
    // completed and the program starts again from its beginning. A damaged or lost epoch that
    // every rank did commit is an error: resuming from nothing would silently lose work.
    let unfinished = |epoch: u64| (0..nodes).find(|&rank| find(rank, epoch).is_none());
    if epochs.iter().all(|&(e, ..)| unfinished(e).is_some()) {
        let why = epochs
            .iter()
            .map(|&(e, ..)| {
                format!(
                    "rank {} never finished epoch {e}",
                    unfinished(e).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        return Ok((None, Some(format!("no checkpoint was ever whole ({why})"))));
    }
    Err(format!(
        "no checkpoint epoch is whole: {}",
        skipped.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(epoch: u64, chain_start: u64, own: bool, copy: bool) -> Found {
        Found {
            epoch,
            chain_start,
            global_base: 1 << 40,
            own,
            copy,
        }
    }

    fn rep(found: Vec<Found>) -> Report {
        Report {
            found,
            refused: None,
        }
    }

    #[test]
    fn the_newest_whole_epoch_wins_and_a_lost_image_comes_from_the_partner() {
        // Epochs 4 (full) and 5 (incremental); rank 1 lost its own image of 5.
        let reports = vec![
            rep(vec![f(4, 4, true, true), f(5, 4, true, true)]),
            rep(vec![f(4, 4, true, true), f(5, 4, false, true)]),
            rep(vec![f(4, 4, true, true), f(5, 4, true, true)]),
        ];
        let p = choose(&reports).unwrap().0.unwrap();
        assert_eq!((p.epoch, p.chain_start), (5, 4));
        assert_eq!(p.sources[1], vec![Source::Own, Source::Partner]);
        assert_eq!(p.sources[0], vec![Source::Own, Source::Own]);
        // Rank 2, the partner of 1, lost its copy too: back to epoch 4.
        let mut r = reports.clone();
        r[2].found[1].copy = false;
        let p = choose(&r).unwrap().0.unwrap();
        assert_eq!(p.epoch, 4);
        assert!(
            p.skipped[0].contains("rank 1 has no whole image of epoch 5"),
            "{:?}",
            p.skipped
        );
        // An epoch some rank never finished (no manifest) is not used either.
        let mut r = reports.clone();
        r[0].found.pop();
        r[1].found[1].copy = false;
        assert_eq!(choose(&r).unwrap().0.unwrap().epoch, 4);
        // A broken chain start makes every later epoch of the chain unusable.
        let mut r = reports.clone();
        for x in &mut r {
            x.found[0].own = false;
            x.found[0].copy = false;
        }
        assert!(choose(&r)
            .unwrap_err()
            .contains("no checkpoint epoch is whole"));
    }

    #[test]
    fn a_job_that_ended_during_its_first_checkpoint_starts_fresh() {
        // Ranks 0 and 1 committed epoch 1, rank 2 was killed before it sent rank 0 its copy.
        let reports = vec![
            rep(vec![f(1, 1, true, false)]),
            rep(vec![f(1, 1, true, true)]),
            rep(vec![]),
        ];
        let (plan, why) = choose(&reports).unwrap();
        assert_eq!(plan, None);
        assert!(why.unwrap().contains("rank 2 never finished epoch 1"));
        // Every rank committed it but one image and its copy are damaged: an error, not a
        // silent start from nothing.
        let mut r = reports;
        r[2].found.push(f(1, 1, false, true));
        assert!(choose(&r)
            .unwrap_err()
            .contains("rank 2 has no whole image of epoch 1"));
    }

    #[test]
    fn nothing_found_is_a_fresh_start_and_a_refusal_names_its_rank() {
        assert_eq!(choose(&[rep(vec![]), rep(vec![])]).unwrap(), (None, None));
        let mut r = vec![rep(vec![f(1, 1, true, true)]), rep(vec![])];
        r[1].refused = Some("taken by a job of 4 nodes".into());
        assert_eq!(choose(&r).unwrap_err(), "rank 1: taken by a job of 4 nodes");
    }

    #[test]
    fn reports_travel_intact_and_garbage_is_refused() {
        let r = Report {
            found: vec![f(9, 8, true, false), f(10, 8, false, true)],
            refused: Some("why".into()),
        };
        assert_eq!(Report::decode(&r.encode()), Some(r));
        assert_eq!(Report::decode(&[1, 0, 0, 0, 1]), None);
        assert_eq!(Report::decode(&[0xff; 3]), None);
    }
}
