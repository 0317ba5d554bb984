//! The profile: where a node's time goes, phase by phase, and which pages cost it.
//!
//! Off by default. `DSM_PROFILE=1` turns it on (files in the working directory);
//! `DSM_PROFILE=/dir` writes them into `/dir`. When it is off the runtime holds no recorder and
//! each hook is one test of an `Option` (no atomic, no clock read beyond what the statistics
//! already take).
//!
//! A *phase* is the time between two [`crate::Dsm::barrier`]s, numbered from 0 (from `init` to
//! the first barrier); the barrier of [`crate::Dsm::finalize`] closes the last one. For each
//! phase a node records the time in read faults, write faults, releases (with the diffs written
//! home: count and bytes), acquires (with the pages invalidated), lock waits and barrier waits.
//! For each page it records its faults, invalidations and diffs, and which 64-byte lines its
//! diffs changed (one 64-bit mask per page), so that pages written by several nodes can be told
//! apart: *false sharing* when the nodes' lines are disjoint, *true sharing* when they overlap.
//!
//! A home never diffs its own pages (its stores land in the home copy, row H2 of
//! `docs/PROTOCOL.md`): when profiling, a home that writes a page keeps a private copy of it and
//! compares at each barrier, which yields the lines that changed at the home (its own stores
//! and the diffs other nodes wrote there). The report subtracts the other writers' lines: what
//! remains is certainly the home's; a home writer with nothing left wrote only lines others
//! wrote too, which is counted as true sharing.
//!
//! At `finalize` every node writes `dsm-profile-RANK.json`; the nodes then gather their
//! profiles at rank 0, which writes the merged `dsm-profile.json` (with the sharing flags) and
//! `dsm-profile.html` (a picture: per-node per-phase stacked bars, the hottest pages) and prints
//! a short summary to stderr. `docs/PROFILE.md` describes the files.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use transport::AnyTransport;

use crate::collective;
use crate::error::{Error, Result};

mod record;
pub mod report;
mod svg;

pub(crate) use record::{Layout, Recorder};

/// The profile of one node: a recorder when `DSM_PROFILE` asks for one, nothing otherwise.
#[derive(Debug, Default)]
pub(crate) struct Profile(Option<Box<Recorder>>);

impl Profile {
    /// Reads `DSM_PROFILE`: unset, empty or `0` is off; `1` writes into the working directory;
    /// anything else names the directory.
    pub(crate) fn from_env(rank: usize, nodes: usize, layout: Layout) -> Profile {
        match std::env::var("DSM_PROFILE") {
            Ok(v) if !v.is_empty() && v != "0" => {
                let dir = if v == "1" {
                    PathBuf::from(".")
                } else {
                    PathBuf::from(v)
                };
                Profile(Some(Box::new(Recorder::new(rank, nodes, dir, layout))))
            }
            _ => Profile(None),
        }
    }

    /// The recorder, when profiling.
    #[inline]
    pub(crate) fn on(&self) -> Option<&Recorder> {
        self.0.as_deref()
    }
}

/// Nanoseconds of `d`, saturated.
pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Writes this node's profile to `dsm-profile-RANK.json`, gathers every node's at rank 0,
/// which writes `dsm-profile.json` and `dsm-profile.html` and prints the summary to stderr.
///
/// # Collective
/// Every node must call it (every node profiles or none does: `DSM_PROFILE` is the job's).
pub(crate) fn finish(rec: &Recorder, rank: usize, t: &AnyTransport) -> Result<()> {
    let mine = rec.to_json();
    let text = serde_json::to_string(&mine).map_err(|e| Error::Config(e.to_string()))?;
    let write = |name: String, body: &str| {
        std::fs::create_dir_all(&rec.dir)
            .and_then(|()| std::fs::write(rec.dir.join(&name), body))
            .map_err(|e| Error::Config(format!("DSM_PROFILE: writing {name}: {e}")))
    };
    let wrote = write(format!("dsm-profile-{rank}.json"), &text);
    let all = collective::all_gather(t, text.as_bytes(), None)?;
    wrote?;
    if rank == 0 {
        let nodes: Vec<Value> = all
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
            .collect();
        let merged = report::merge(&nodes);
        let summary = report::summary(&merged);
        let pretty = serde_json::to_string_pretty(&merged).unwrap_or_default();
        write("dsm-profile.json".into(), &pretty)?;
        write(
            "dsm-profile.html".into(),
            &svg::html(&nodes, &merged, &summary),
        )?;
        eprintln!(
            "{summary}  written: {}",
            rec.dir.join("dsm-profile.html").display()
        );
    }
    Ok(())
}
