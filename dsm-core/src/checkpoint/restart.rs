//! The first half of a restart, before global memory is mapped: every node says what its
//! directory holds, every node takes the same decision ([`super::plan::choose`]), partners send
//! the copies a node lost, and each node reads its chain of images. The second half (putting
//! the bytes and the allocation state back) is the runtime's (`Inner::restore`).

use transport::Transport;

use super::image::Image;
use super::plan::{self, Found, Report, Source};
use super::store::{self, Store};
use super::{recv_image, send_image, Settings};
use crate::collective;
use crate::error::{Error, Result};

/// What a restarting node resumes from.
#[derive(Debug)]
pub(crate) struct Restore {
    /// The epoch resumed from.
    pub(crate) epoch: u64,
    /// Where global memory was mapped.
    pub(crate) global_base: usize,
    /// This node's images of the chain, oldest (the full one) first.
    pub(crate) images: Vec<Image>,
}

/// Decides the restart with every node and reads this node's chain of images.
///
/// `Ok(None)`: no node has a checkpoint (the job starts fresh, as it says).
///
/// # Collective
/// Every node must call it.
///
/// # Errors
/// [`Error::Checkpoint`] on every node when the checkpoints were taken by another job shape
/// (node count, program, global size) or no epoch is whole, naming the rank and the file;
/// transport errors.
pub(crate) fn prepare<T: Transport>(
    t: &T,
    settings: &Settings,
    global_size: usize,
) -> Result<Option<Restore>> {
    let dir = settings
        .dir
        .as_deref()
        .ok_or_else(|| Error::Config("DSM_RESTART=1 needs DSM_CHECKPOINT_DIR".into()))?;
    let me = t.rank().index();
    let nodes = t.nodes();
    let store = Store::new(dir, me);
    let files = store.scan();
    let program = store::program_identity();
    let mut report = Report::default();
    if let Some(newest) = files.last() {
        let m = &newest.manifest;
        let manifest = store.path(m.epoch, &format!("MANIFEST-{me}"));
        report.refused = if m.nodes != nodes as u64 {
            Some(format!(
                "{} was written by a job of {} nodes; this job has {nodes}",
                manifest.display(),
                m.nodes
            ))
        } else if m.program != program {
            Some(format!(
                "{} was written by the program {}; this is {program}",
                manifest.display(),
                m.program
            ))
        } else if m.global_size != global_size as u64 {
            Some(format!(
                "{} has {} bytes of global memory; DSM_GLOBAL_SIZE gives {global_size}",
                manifest.display(),
                m.global_size
            ))
        } else {
            None
        };
    }
    for f in &files {
        report.found.push(Found {
            epoch: f.manifest.epoch,
            chain_start: f.manifest.chain_start,
            global_base: f.manifest.global_base,
            own: f.own.is_ok(),
            copy: f.copy.is_ok(),
        });
    }
    let all = collective::all_gather(t, &report.encode(), None)?;
    let reports = all
        .iter()
        .enumerate()
        .map(|(r, b)| {
            Report::decode(b)
                .ok_or_else(|| Error::Checkpoint(format!("rank {r} sent a malformed report")))
        })
        .collect::<Result<Vec<_>>>()?;
    let plan = match plan::choose(&reports) {
        Ok((Some(p), _)) => p,
        Ok((None, why)) => {
            if me == 0 {
                match why {
                    Some(why) => tracing::warn!("restart: {dir}: {why}: the job starts fresh"),
                    None => tracing::warn!("restart: no checkpoint in {dir}: the job starts fresh"),
                }
            }
            return Ok(None);
        }
        Err(why) => {
            return Err(Error::Checkpoint(format!(
                "cannot restart from {dir}: {why}"
            )))
        }
    };
    if me == 0 {
        for s in &plan.skipped {
            tracing::warn!("restart: passing over {s}");
        }
    }
    let manifest_of = |e: u64| files.iter().find(|f| f.manifest.epoch == e);
    let chain: Vec<u64> = (plan.chain_start..=plan.epoch).collect();
    // First send what the rank before this one lost (the transport buffers it), then read.
    let before = (me + nodes - 1) % nodes;
    let after = (me + 1) % nodes;
    for (i, &e) in chain.iter().enumerate() {
        if nodes > 1 && plan.sources[before][i] == Source::Partner {
            let f = manifest_of(e).ok_or_else(|| {
                Error::Checkpoint(format!("rank {me}: the copy of epoch {e} vanished"))
            })?;
            let expect = f.manifest.copy.unwrap_or_default();
            let bytes = store
                .read(e, &Store::copy_name(before), expect)
                .map_err(Error::Checkpoint)?;
            send_image(t, before, &bytes)?;
        }
    }
    let mut images = Vec::with_capacity(chain.len());
    for (i, &e) in chain.iter().enumerate() {
        let bytes = match plan.sources[me][i] {
            Source::Own => {
                let f = manifest_of(e).ok_or_else(|| {
                    Error::Checkpoint(format!("rank {me}: the manifest of epoch {e} vanished"))
                })?;
                store
                    .read(e, &Store::own_name(me), f.manifest.own)
                    .map_err(Error::Checkpoint)?
            }
            Source::Partner => {
                let why = manifest_of(e).map_or_else(
                    || format!("{}: no manifest", store.path(e, "").display()),
                    |f| f.own.clone().err().unwrap_or_default(),
                );
                tracing::warn!(
                    "restart: rank {me}, epoch {e}: {why}; using the copy kept by rank {after}"
                );
                recv_image(t, after, None)?
            }
        };
        let image = Image::decode(&bytes)
            .map_err(|w| Error::Checkpoint(format!("rank {me}, epoch {e}: the image: {w}")))?;
        if image.rank as usize != me || image.nodes as usize != nodes || image.epoch != e {
            return Err(Error::Checkpoint(format!(
                "rank {me}, epoch {e}: the image is rank {}'s of {} nodes, epoch {}",
                image.rank, image.nodes, image.epoch
            )));
        }
        images.push(image);
    }
    if me == 0 {
        tracing::warn!(
            "restart: resuming from checkpoint epoch {} (chain from full epoch {})",
            plan.epoch,
            plan.chain_start
        );
    }
    Ok(Some(Restore {
        epoch: plan.epoch,
        global_base: plan.global_base as usize,
        images,
    }))
}
