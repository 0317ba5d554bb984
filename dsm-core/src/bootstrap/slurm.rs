//! Starting under Slurm's `srun`: rank and job size from `SLURM_PROCID` and `SLURM_NTASKS`, the
//! coordinator from `DSM_COORDINATOR` or from a file in a shared directory (`DSM_RENDEZVOUS_DIR`).
//!
//! With a rendezvous directory, rank 0 binds the coordinator on its own address (port chosen
//! by the system), and writes `ADDRESS SECRET` to `DIR/dsm-JOB.STEP` (mode 0600, written to a
//! temporary name and renamed, so no reader sees half a file); the other ranks wait for the file
//! (bounded by `DSM_CONNECT_TIMEOUT`) and read it. The secret is `DSM_SECRET` when set, otherwise
//! drawn by rank 0: it is then as private as the directory. Rank 0 removes the file once every
//! rank has joined. The file name carries the Slurm job and step ids, so two jobs sharing the
//! directory do not meet.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use transport::{Rank, Secret};

use crate::config::{self, var as dsm, Config, Coordinator};
use crate::error::{Error, Result};

/// Names of the Slurm variables read.
pub mod var {
    /// This task's rank in the step.
    pub const PROCID: &str = "SLURM_PROCID";
    /// Number of tasks of the step.
    pub const NTASKS: &str = "SLURM_NTASKS";
    /// Older name of `SLURM_NTASKS`; must agree with it when both are set.
    pub const NPROCS: &str = "SLURM_NPROCS";
    /// Number of hosts of the step.
    pub const STEP_NUM_NODES: &str = "SLURM_STEP_NUM_NODES";
    /// Number of hosts of the job (used when the step's is unset).
    pub const NNODES: &str = "SLURM_NNODES";
    /// The job id.
    pub const JOB_ID: &str = "SLURM_JOB_ID";
    /// The step id.
    pub const STEP_ID: &str = "SLURM_STEP_ID";
}

/// The variable naming the shared directory for the rendezvous file.
pub const RENDEZVOUS_DIR: &str = "DSM_RENDEZVOUS_DIR";

/// A node's configuration under Slurm, and the rendezvous file rank 0 must remove once every
/// rank has joined.
#[derive(Debug)]
pub struct SlurmStart {
    /// The configuration.
    pub config: Config,
    /// Rank 0's rendezvous file, to remove after the bootstrap.
    pub rendezvous: Option<PathBuf>,
}

fn number(get: &impl Fn(&str) -> Option<String>, k: &str) -> Result<Option<u64>> {
    get(k)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::Config(format!("{k}={v:?} is not a non-negative integer")))
        })
        .transpose()
}

/// Rank and job size from the Slurm variables, checked against each other and `DSM_NODES`.
///
/// # Errors
/// [`Error::Config`] naming the missing or inconsistent variables.
pub fn rank_and_size(get: &impl Fn(&str) -> Option<String>) -> Result<(u32, usize)> {
    let rank = number(get, var::PROCID)?
        .ok_or_else(|| Error::Config(format!("{} is not set", var::PROCID)))?;
    let ntasks = number(get, var::NTASKS)?;
    let nprocs = number(get, var::NPROCS)?;
    let size = match (ntasks, nprocs) {
        (Some(a), Some(b)) if a != b => {
            return Err(Error::Config(format!(
                "{}={a} but {}={b}: inconsistent Slurm environment",
                var::NTASKS,
                var::NPROCS
            )))
        }
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(Error::Config(format!(
            "{} is set but {} is not: start the job with srun (or set DSM_RANK, DSM_NODES by hand)",
            var::PROCID,
            var::NTASKS
        )))
        }
    };
    if size == 0 || size > 65_536 || rank >= size {
        return Err(Error::Config(format!(
            "{}={rank} and {}={size} do not describe a job of 1 to 65536 tasks",
            var::PROCID,
            var::NTASKS
        )));
    }
    if let Some(n) = number(get, dsm::NODES)? {
        if n != size {
            return Err(Error::Config(format!(
                "{}={n} but {}={size}: remove DSM_NODES or make them agree",
                dsm::NODES,
                var::NTASKS
            )));
        }
    }
    Ok((rank as u32, size as usize))
}

/// The configuration under `srun`; `Ok(None)` when `SLURM_PROCID` is not set.
///
/// # Errors
/// [`Error::Config`] for missing or inconsistent variables, [`Error::Timeout`] when the
/// rendezvous file does not appear in time, [`Error::Io`] when it cannot be written.
pub fn start_from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<SlurmStart>> {
    if get(var::PROCID).is_none() {
        return Ok(None);
    }
    let (rank, nodes) = rank_and_size(&get)?;
    let hosts = match number(&get, var::STEP_NUM_NODES)? {
        Some(n) => Some(n),
        None => number(&get, var::NNODES)?,
    };
    if hosts.is_some_and(|h| h > 1) && get(dsm::BIND).is_none() {
        return Err(Error::Config(format!(
            "the job spans {} hosts: set {} to this host's address or interface (for example {}=eth0) so that the others can reach it",
            hosts.unwrap_or(0),
            dsm::BIND,
            dsm::BIND
        )));
    }
    let preset = config::secret_from_lookup(&get)?;
    let timeout = config::connect_timeout_from_lookup(&get)?;
    let (coordinator, secret, rendezvous) = match (get(dsm::COORDINATOR), get(RENDEZVOUS_DIR)) {
        (Some(addr), _) => {
            let addr: SocketAddr = addr.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "{}={addr:?} is not an address like 10.0.0.1:7000",
                    dsm::COORDINATOR
                ))
            })?;
            let secret = preset.ok_or_else(|| {
                Error::Config(format!(
                    "no job secret: under srun with {} set {} or {} (or use {} instead)",
                    dsm::COORDINATOR,
                    dsm::SECRET,
                    dsm::SECRET_FILE,
                    RENDEZVOUS_DIR
                ))
            })?;
            (Coordinator::Addr(addr), secret, None)
        }
        (None, Some(dir)) => {
            let job = get(var::JOB_ID).unwrap_or_else(|| "0".into());
            let step = get(var::STEP_ID).unwrap_or_else(|| "0".into());
            let safe = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !safe(&job) || !safe(&step) {
                return Err(Error::Config(format!(
                    "{}={job:?} or {}={step:?} cannot name a file",
                    var::JOB_ID,
                    var::STEP_ID
                )));
            }
            let path = Path::new(&dir).join(format!("dsm-{job}.{step}"));
            if rank == 0 {
                let bind = match get(dsm::BIND) {
                    Some(b) => config::parse_bind(&b)?,
                    None => std::net::Ipv4Addr::LOCALHOST.into(),
                };
                let secret = match preset {
                    Some(s) => s,
                    None => Secret::generate()?,
                };
                let listener = TcpListener::bind(SocketAddr::new(bind, 0))
                    .map_err(|e| Error::io(format!("binding the coordinator on {bind}"), e))?;
                let addr = listener
                    .local_addr()
                    .map_err(|e| Error::io("reading the coordinator address", e))?;
                write_rendezvous(&path, addr, &secret)?;
                (
                    Coordinator::Fd(listener.into_raw_fd()),
                    secret,
                    Some(path),
                )
            } else {
                let (addr, published) = read_rendezvous(&path, timeout)?;
                (Coordinator::Addr(addr), preset.unwrap_or(published), None)
            }
        }
        (None, None) => {
            return Err(Error::Config(format!(
                "under srun, set {} (a shared directory, for example $HOME/.dsm) or {} (rank 0's host:port)",
                RENDEZVOUS_DIR,
                dsm::COORDINATOR
            )))
        }
    };
    let listener = match coordinator {
        Coordinator::Fd(fd) => Some(fd),
        _ => None,
    };
    match Config::with_identity(&get, Rank(rank), nodes, coordinator, secret) {
        Ok(config) => Ok(Some(SlurmStart { config, rendezvous })),
        Err(e) => {
            // Rank 0 published a coordinator it will never serve: withdraw the file (no stale
            // rendezvous is left in the shared directory for a later step) and close the port.
            if let Some(path) = rendezvous {
                let _ = std::fs::remove_file(path);
            }
            if let Some(fd) = listener {
                // SAFETY: `fd` is the listener this function bound and turned into a raw
                // descriptor above; the configuration that would have owned it was not built, so
                // this is its only owner.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
            Err(e)
        }
    }
}

/// Writes `ADDRESS SECRET` to `path`, readable by the owner only, in one rename.
fn write_rendezvous(path: &Path, addr: SocketAddr, secret: &Secret) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{addr} {}\n", secret.to_hex()).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(format!("writing the rendezvous file {}", path.display()), e)
    })
}

/// Waits (at most `timeout`) for rank 0's rendezvous file and reads it.
fn read_rendezvous(path: &Path, timeout: Duration) -> Result<(SocketAddr, Secret)> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(5);
    let text = loop {
        match std::fs::read_to_string(path) {
            Ok(t) => break t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(format!(
                "rank 0 did not write {} within {timeout:?} (did it start? is {} shared by every host?)",
                path.display(),
                RENDEZVOUS_DIR
            )));
        }
        transport::net::backoff(backoff.min(left));
        backoff = (backoff * 2).min(Duration::from_millis(100));
    };
    let bad = || Error::Config(format!("{} is not a rendezvous file", path.display()));
    let (addr, secret) = text.trim().split_once(' ').ok_or_else(bad)?;
    Ok((
        addr.parse().map_err(|_| bad())?,
        Secret::from_hex(secret).map_err(|_| bad())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const S: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn not_under_slurm_is_none() {
        assert!(start_from_lookup(lookup(&[])).unwrap().is_none());
    }

    #[test]
    fn missing_and_inconsistent_variables_are_named() {
        let err =
            |pairs: &[(&str, &str)]| start_from_lookup(lookup(pairs)).unwrap_err().to_string();
        assert!(err(&[("SLURM_PROCID", "0")]).contains("SLURM_NTASKS is not"));
        assert!(err(&[("SLURM_PROCID", "x"), ("SLURM_NTASKS", "2")]).contains("SLURM_PROCID=\"x\""));
        assert!(err(&[("SLURM_PROCID", "2"), ("SLURM_NTASKS", "2")]).contains("do not describe"));
        assert!(err(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "0")]).contains("do not describe"));
        assert!(err(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_NPROCS", "3")
        ])
        .contains("inconsistent"));
        assert!(err(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("DSM_NODES", "4")
        ])
        .contains("DSM_NODES=4 but SLURM_NTASKS=2"));
        assert!(err(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]).contains("DSM_RENDEZVOUS_DIR"));
        assert!(err(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("DSM_COORDINATOR", "10.0.0.1:7000")
        ])
        .contains("no job secret"));
        assert!(err(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_STEP_NUM_NODES", "2"),
            ("DSM_COORDINATOR", "10.0.0.1:7000"),
            ("DSM_SECRET", S)
        ])
        .contains("spans 2 hosts"));
        assert!(err(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_ID", "../x"),
            ("DSM_RENDEZVOUS_DIR", "/tmp")
        ])
        .contains("cannot name a file"));
    }

    #[test]
    fn takes_rank_size_and_coordinator() {
        let s = start_from_lookup(lookup(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_NPROCS", "4"),
            ("SLURM_STEP_NUM_NODES", "2"),
            ("DSM_BIND", "127.0.0.1"),
            ("DSM_COORDINATOR", "10.0.0.1:7000"),
            ("DSM_SECRET", S),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((s.config.rank, s.config.nodes), (Rank(3), 4));
        assert_eq!(
            s.config.coordinator,
            Coordinator::Addr("10.0.0.1:7000".parse().unwrap())
        );
        assert!(s.rendezvous.is_none());
    }

    #[test]
    fn a_rank_waits_a_bounded_time_for_a_rendezvous_file_that_never_comes() {
        let dir = std::env::temp_dir().join(format!("dsm-slurm-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        let err = start_from_lookup(lookup(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_ID", "77"),
            ("SLURM_STEP_ID", "0"),
            ("DSM_CONNECT_TIMEOUT", "0.3"),
            ("DSM_RENDEZVOUS_DIR", dir.to_str().unwrap()),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("did not write") && err.contains("dsm-77.0"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // Rank 0 writes the file; a rank then reads the same address and secret.
        let s0 = start_from_lookup(lookup(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_ID", "77"),
            ("SLURM_STEP_ID", "0"),
            ("DSM_RENDEZVOUS_DIR", dir.to_str().unwrap()),
        ]))
        .unwrap()
        .unwrap();
        let path = s0.rendezvous.clone().unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let s1 = start_from_lookup(lookup(&[
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_ID", "77"),
            ("SLURM_STEP_ID", "0"),
            ("DSM_RENDEZVOUS_DIR", dir.to_str().unwrap()),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s1.config.secret.to_hex(), s0.config.secret.to_hex());
        assert!(matches!(s1.config.coordinator, Coordinator::Addr(_)));
        if let Coordinator::Fd(fd) = s0.config.coordinator {
            // SAFETY: the descriptor came from `into_raw_fd` above and nothing else owns it.
            drop(unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rank_0_withdraws_its_rendezvous_file_when_its_configuration_fails() {
        let dir = std::env::temp_dir().join(format!("dsm-slurm-withdraw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = start_from_lookup(lookup(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_ID", "78"),
            ("SLURM_STEP_ID", "0"),
            ("DSM_RENDEZVOUS_DIR", dir.to_str().unwrap()),
            ("DSM_ON_PEER_LOST", "shrug"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("DSM_ON_PEER_LOST"), "{err}");
        assert!(
            !dir.join("dsm-78.0").exists(),
            "the rendezvous file of a failed rank 0 was left behind"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
