//! The machine's topology (through hwloc) and where the runtime's own threads run.
//!
//! At start-up the node reads the cores and processing units (PUs) this process may use and the
//! number of NUMA nodes, and chooses a core for the transport's progress thread, away from the
//! application's threads where cores allow: with `L` ranks of the job on this host and `C`
//! usable cores, pinning needs `C >= 2L` (a core for each rank's application and one for its
//! progress thread); local rank `l` then gets core `C - 1 - l`, the last cores, leaving the first
//! ones to the applications (bind those with the launcher: `mpiexec -bind-to core`, `srun
//! --cpu-bind=cores`). Otherwise, or with `DSM_PIN=off`, nothing is pinned and the report says
//! why. The decision ([`choose_core`]) is pure; only this module calls hwloc and
//! `sched_setaffinity`.
//!
//! hwloc2 2.2.0 has two known bugs this module avoids: `objects_with_type(NUMANode)` panics (the
//! NUMA nodes are counted from the root's node set instead) and `TopologyObject::name` frees
//! memory hwloc owns (never called).

use std::fmt;

use transport::ThreadHook;

use crate::error::{Error, Result};

/// `DSM_PIN`: `auto` (default) or `off`.
pub const PIN: &str = "DSM_PIN";

/// What the node learned about the machine and what it pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyReport {
    /// Cores this process may use.
    pub cores: usize,
    /// Processing units (hardware threads) this process may use.
    pub pus: usize,
    /// NUMA nodes of the machine.
    pub numa_nodes: usize,
    /// Ranks of the job on this host, and this one's index among them.
    pub local: (usize, usize),
    /// The core (its index among the usable cores) and the PUs (operating-system numbers) the
    /// progress thread is pinned to; `None` when it is not pinned.
    pub progress: Option<(usize, Vec<u32>)>,
    /// Why the progress thread is not pinned.
    pub why_not: Option<String>,
}

impl fmt::Display for TopologyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} cores, {} PUs, {} NUMA node(s) usable; local rank {} of {}; ",
            self.cores, self.pus, self.numa_nodes, self.local.1, self.local.0
        )?;
        match (&self.progress, &self.why_not) {
            (Some((core, pus)), _) => {
                write!(f, "progress thread pinned to core {core} (PU {pus:?})")
            }
            (None, Some(why)) => write!(f, "progress thread not pinned: {why}"),
            (None, None) => write!(f, "progress thread not pinned"),
        }
    }
}

/// The core for local rank `local_rank` of `local_ranks`, among `cores` usable cores, or why
/// there is none.
pub fn choose_core(cores: usize, local_ranks: usize, local_rank: usize) -> Result<usize, String> {
    let local_ranks = local_ranks.max(1);
    if local_rank >= local_ranks {
        return Err(format!(
            "local rank {local_rank} of {local_ranks} is inconsistent"
        ));
    }
    if cores < 2 * local_ranks {
        return Err(format!(
            "{cores} usable core(s) for {local_ranks} rank(s) on this host; pinning needs two per rank"
        ));
    }
    Ok(cores - 1 - local_rank)
}

/// Ranks of the job on this host and this rank's index among them, from what the launcher
/// says: Hydra's `MPI_LOCALNRANKS`/`MPI_LOCALRANKID`, Slurm's `SLURM_LOCALID` with
/// `SLURM_NTASKS`/`SLURM_NNODES`; otherwise, when the node binds loopback (every rank on this
/// host), the whole job; else one.
pub fn local_ranks(
    get: impl Fn(&str) -> Option<String>,
    rank: usize,
    nodes: usize,
    loopback: bool,
) -> (usize, usize) {
    let num = |k: &str| get(k).and_then(|v| v.trim().parse::<usize>().ok());
    if let (Some(n), Some(l)) = (num("MPI_LOCALNRANKS"), num("MPI_LOCALRANKID")) {
        return (n.max(1), l);
    }
    if let (Some(l), Some(t), Some(h)) = (
        num("SLURM_LOCALID"),
        num("SLURM_NTASKS"),
        num("SLURM_STEP_NUM_NODES").or(num("SLURM_NNODES")),
    ) {
        return (t.div_ceil(h.max(1)).max(l + 1), l);
    }
    if loopback {
        (nodes.max(1), rank)
    } else {
        (1, 0)
    }
}

/// Reads the topology and decides where the progress thread goes. Returns the report and, when
/// pinning, the hook that pins the thread that runs it.
///
/// # Errors
/// [`Error::Config`] for a malformed `DSM_PIN`. A machine hwloc cannot read is not an error:
/// the report then says that nothing was pinned and why.
pub fn plan(
    get: impl Fn(&str) -> Option<String>,
    local: (usize, usize),
) -> Result<(TopologyReport, Option<ThreadHook>)> {
    let pin = match get(PIN).as_deref().map(str::trim) {
        None | Some("auto") | Some("on") => true,
        Some("off") | Some("0") | Some("no") => false,
        Some(v) => return Err(Error::Config(format!("{PIN}={v:?}: expected auto or off"))),
    };
    let mut report = TopologyReport {
        cores: 0,
        pus: 0,
        numa_nodes: 0,
        local,
        progress: None,
        why_not: None,
    };
    let Some(cores) = usable_cores(&mut report) else {
        return Ok((report, None));
    };
    if !pin {
        report.why_not = Some(format!("{PIN}=off"));
        return Ok((report, None));
    }
    match choose_core(cores.len(), local.0, local.1) {
        Ok(c) => {
            let pus = cores[c].clone();
            report.progress = Some((c, pus.clone()));
            Ok((
                report,
                Some(ThreadHook::new(move || pin_current_thread(&pus))),
            ))
        }
        Err(why) => {
            report.why_not = Some(why);
            Ok((report, None))
        }
    }
}

/// The usable cores, each as the operating-system numbers of its usable PUs; fills the counts of
/// `report`. `None` (with the reason in the report) when hwloc cannot read the machine.
fn usable_cores(report: &mut TopologyReport) -> Option<Vec<Vec<u32>>> {
    use hwloc2::{CpuBindFlags, ObjectType, Topology};
    let Some(topo) = Topology::new() else {
        report.why_not = Some("hwloc cannot read this machine's topology".into());
        return None;
    };
    let allowed = topo.get_cpubind(CpuBindFlags::CPUBIND_PROCESS);
    let is_allowed = |pu: u32| allowed.as_ref().is_none_or(|a| a.is_set(pu));
    let mut cores: Vec<Vec<u32>> = Vec::new();
    match topo.objects_with_type(&ObjectType::Core) {
        Ok(objs) if !objs.is_empty() => {
            for core in objs {
                let Some(set) = core.cpuset() else { continue };
                let pus: Vec<u32> = (0..=set.last().max(0) as u32)
                    .filter(|pu| set.is_set(*pu) && is_allowed(*pu))
                    .collect();
                if !pus.is_empty() {
                    cores.push(pus);
                }
            }
        }
        _ => {
            // No core level: each PU counts as a core.
            if let Ok(pus) = topo.objects_with_type(&ObjectType::PU) {
                cores = pus
                    .iter()
                    .map(|p| p.os_index())
                    .filter(|pu| is_allowed(*pu))
                    .map(|pu| vec![pu])
                    .collect();
            }
        }
    }
    report.cores = cores.len();
    report.pus = cores.iter().map(Vec::len).sum();
    report.numa_nodes = topo
        .object_at_root()
        .nodeset()
        .map_or(1, |n| n.weight().max(1) as usize);
    if cores.is_empty() {
        report.why_not = Some("hwloc found no usable core".into());
        return None;
    }
    Some(cores)
}

/// Restricts the calling thread to `pus`. A failure is logged, never fatal: an unpinned thread
/// is slower, not wrong.
fn pin_current_thread(pus: &[u32]) {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value of this plain C struct.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &pu in pus {
        if (pu as usize) < libc::CPU_SETSIZE as usize {
            // SAFETY: CPU_SET writes one bit inside `set`; `pu` is below CPU_SETSIZE.
            unsafe { libc::CPU_SET(pu as usize, &mut set) };
        }
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        tracing::warn!(
            "pinning the progress thread to PUs {pus:?}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_only_where_cores_allow() {
        assert_eq!(choose_core(2, 1, 0), Ok(1));
        assert_eq!(choose_core(8, 4, 0), Ok(7));
        assert_eq!(choose_core(8, 4, 3), Ok(4));
        assert!(choose_core(2, 2, 0).unwrap_err().contains("two per rank"));
        assert!(choose_core(1, 1, 0).is_err());
        assert!(choose_core(8, 2, 2).unwrap_err().contains("inconsistent"));
        // Zero local ranks counts as one.
        assert_eq!(choose_core(4, 0, 0), Ok(3));
    }

    #[test]
    fn local_ranks_come_from_the_launcher() {
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            local_ranks(
                get(&[("MPI_LOCALNRANKS", "4"), ("MPI_LOCALRANKID", "2")]),
                6,
                8,
                false
            ),
            (4, 2)
        );
        assert_eq!(
            local_ranks(
                get(&[
                    ("SLURM_LOCALID", "1"),
                    ("SLURM_NTASKS", "8"),
                    ("SLURM_NNODES", "4")
                ]),
                5,
                8,
                false
            ),
            (2, 1)
        );
        assert_eq!(local_ranks(get(&[]), 3, 4, true), (4, 3));
        assert_eq!(local_ranks(get(&[]), 3, 4, false), (1, 0));
    }

    #[test]
    fn reads_this_machine_and_honours_pin_off() {
        let (r, _) = plan(|_| None, (1, 0)).unwrap();
        assert!(r.cores >= 1 && r.pus >= r.cores && r.numa_nodes >= 1, "{r}");
        let (r, hook) = plan(|k| (k == PIN).then(|| "off".into()), (1, 0)).unwrap();
        assert!(hook.is_none());
        assert!(r.to_string().contains("DSM_PIN=off"), "{r}");
        assert!(plan(|k| (k == PIN).then(|| "sometimes".into()), (1, 0)).is_err());
    }
}
