//! The node's settings, read from the environment that `dsmrun` (or a person, or a cluster
//! launcher) sets. `docs/ENVIRONMENT.md` lists every variable.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::time::Duration;

use transport::{Rank, Secret};

use crate::error::{Error, Result};
use crate::fault::{FaultEngineKind, FaultMode};
use crate::space::PAGE;

/// Names of the environment variables, in one place.
pub mod var {
    /// This node's rank, 0 to `DSM_NODES - 1`.
    pub const RANK: &str = "DSM_RANK";
    /// Number of nodes in the job.
    pub const NODES: &str = "DSM_NODES";
    /// `host:port` where rank 0 listens for the other nodes to join.
    pub const COORDINATOR: &str = "DSM_COORDINATOR";
    /// Rank 0 only: an inherited, already listening socket to use as the coordinator
    /// (set by `dsmrun`, which binds it race-free before starting the nodes).
    pub const COORDINATOR_FD: &str = "DSM_COORDINATOR_FD";
    /// The job's shared secret, 64 hexadecimal digits.
    pub const SECRET: &str = "DSM_SECRET";
    /// A file holding the secret (used when `DSM_SECRET` is not set).
    pub const SECRET_FILE: &str = "DSM_SECRET_FILE";
    /// Address (or interface name) the data listener binds to; default `127.0.0.1`.
    pub const BIND: &str = "DSM_BIND";
    /// `auto`, `tcp` or `verbs`; default `auto`.
    pub const TRANSPORT: &str = "DSM_TRANSPORT";
    /// Seconds after which a silent peer is declared lost; default 10.
    pub const PEER_TIMEOUT: &str = "DSM_PEER_TIMEOUT";
    /// Seconds the whole bootstrap may take; default 30.
    pub const CONNECT_TIMEOUT: &str = "DSM_CONNECT_TIMEOUT";
    /// Seconds one connection to the coordinator or a data listener may take, from being
    /// accepted, to authenticate (and, at the coordinator, to send its join); default 3.
    pub const HANDSHAKE_TIMEOUT: &str = "DSM_HANDSHAKE_TIMEOUT";
    /// Microseconds a waiting thread spins before it sleeps; default 50.
    pub const SPIN_US: &str = "DSM_SPIN_US";
    /// What a node does when a peer is lost: `exit` (default) or `error`.
    pub const ON_PEER_LOST: &str = "DSM_ON_PEER_LOST";
    /// Log filter (`error`, `warn`, `info`, `debug`, or `tracing` directives); default `warn`.
    pub const LOG: &str = "DSM_LOG";
    /// The RDMA device for the verbs transport (`mlx5_0`, `rxe0`); default: the first with an
    /// active port.
    pub const RDMA_DEVICE: &str = "DSM_RDMA_DEVICE";
    /// The RDMA port (from 1); default: the device's first active port.
    pub const RDMA_PORT: &str = "DSM_RDMA_PORT";
    /// The GID index; default: the first RoCE v2 IPv4-mapped GID (RoCE), none (InfiniBand).
    pub const RDMA_GID_INDEX: &str = "DSM_RDMA_GID_INDEX";
    /// Bytes per registration chunk of a large region (a power of two, `4K` to `1T`, or `0`:
    /// register every region whole); default `2M`.
    pub const RDMA_REG_CHUNK: &str = "DSM_RDMA_REG_CHUNK";
    /// A bound on the memory the verbs transport's registrations pin (`512M`, say); default:
    /// none but the locked-memory limit.
    pub const RDMA_PIN_MAX: &str = "DSM_RDMA_PIN_MAX";
}

/// Where the verbs transport should run: device, port and GID index (each `None`: automatic),
/// and how it registers memory.
/// Read separately from [`Config`] (by [`RdmaSettings::from_env`]) so that the node's main
/// configuration stays the same for every transport.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RdmaSettings {
    /// `DSM_RDMA_DEVICE`.
    pub device: Option<String>,
    /// `DSM_RDMA_PORT`.
    pub port: Option<u8>,
    /// `DSM_RDMA_GID_INDEX`.
    pub gid_index: Option<u8>,
    /// `DSM_RDMA_REG_CHUNK` (`None`: the transport's default).
    pub reg_chunk: Option<usize>,
    /// `DSM_RDMA_PIN_MAX`.
    pub pin_max: Option<usize>,
}

impl RdmaSettings {
    /// Reads the `DSM_RDMA_*` variables from the environment.
    ///
    /// # Errors
    /// [`Error::Config`] naming a malformed variable.
    pub fn from_env() -> Result<RdmaSettings> {
        RdmaSettings::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the RDMA variables through `get`.
    ///
    /// # Errors
    /// [`Error::Config`] naming a malformed variable.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<RdmaSettings> {
        let small = |k: &str, min: u8| -> Result<Option<u8>> {
            match get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            {
                None => Ok(None),
                Some(v) => v
                    .parse::<u8>()
                    .ok()
                    .filter(|n| *n >= min)
                    .map(Some)
                    .ok_or_else(|| {
                        Error::Config(format!("{k}={v:?} is not an integer from {min} to 255"))
                    }),
            }
        };
        let bytes = |k: &str, ok: fn(usize) -> bool| -> Result<Option<usize>> {
            match get(k).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => parse_size(&v).filter(|&n| ok(n)).map(Some).ok_or_else(|| {
                    Error::Config(format!(
                        "{k}={v:?}: not a size this setting accepts (see docs/ENVIRONMENT.md)"
                    ))
                }),
            }
        };
        Ok(RdmaSettings {
            device: get(var::RDMA_DEVICE)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()),
            port: small(var::RDMA_PORT, 1)?,
            gid_index: small(var::RDMA_GID_INDEX, 0)?,
            reg_chunk: bytes(var::RDMA_REG_CHUNK, |n| {
                n == 0 || (n.is_power_of_two() && (1 << 12..=1 << 40).contains(&n))
            })?,
            pin_max: bytes(var::RDMA_PIN_MAX, |n| n > 0)?,
        })
    }
}

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportChoice {
    /// RDMA verbs when an active RDMA port exists; otherwise one backend per peer: shared
    /// memory to the nodes on this host, TCP to the others.
    Auto,
    /// TCP sockets to every peer.
    Tcp,
    /// RDMA verbs, or fail.
    Verbs,
    /// Shared memory to every peer; every node must be on this host, or fail.
    Shm,
}

impl std::str::FromStr for TransportChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(TransportChoice::Auto),
            "tcp" => Ok(TransportChoice::Tcp),
            "verbs" | "rdma" => Ok(TransportChoice::Verbs),
            "shm" => Ok(TransportChoice::Shm),
            other => Err(Error::Config(format!(
                "unknown transport {other:?}: expected auto, tcp, verbs or shm"
            ))),
        }
    }
}

/// Where rank 0 accepts the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coordinator {
    /// An address to bind (rank 0) or connect to (the others).
    Addr(SocketAddr),
    /// A listening socket inherited from the launcher (rank 0 only).
    Fd(RawFd),
    /// No coordinator: the endpoints are exchanged through the key-value space of the MPI
    /// launcher's PMI server (see [`crate::bootstrap::pmi`]; [`crate::Node::init`] does it).
    Pmi,
}

/// What a node does when it loses a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPeerLost {
    /// Print an error naming the lost rank and exit the process with status 3.
    Exit,
    /// Only fail the operations that involve the lost rank.
    Error,
}

/// Everything a node needs to join a job.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's rank.
    pub rank: Rank,
    /// Number of nodes.
    pub nodes: usize,
    /// Where rank 0 listens.
    pub coordinator: Coordinator,
    /// The job's shared secret.
    pub secret: Secret,
    /// Address for the data listener.
    pub bind: IpAddr,
    /// Which transport.
    pub transport: TransportChoice,
    /// Silence after which a peer is lost.
    pub peer_timeout: Duration,
    /// Time allowed for the whole bootstrap.
    pub connect_timeout: Duration,
    /// Time allowed to one joining connection, from being accepted, for its whole handshake.
    pub handshake_timeout: Duration,
    /// Spin time before sleeping.
    pub spin: Duration,
    /// Reaction to a lost peer.
    pub on_peer_lost: OnPeerLost,
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that is missing or malformed.
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that is missing or malformed.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let need = |k: &str| {
            get(k).ok_or_else(|| {
                Error::Config(format!("{k} is not set: start the program with `dsmrun -n N PROGRAM`, `mpiexec -n N PROGRAM` or `srun`, or see docs/ENVIRONMENT.md"))
            })
        };
        let parse_u = |k: &str, v: String| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::Config(format!("{k}={v:?} is not a non-negative integer")))
        };
        let nodes = parse_u(var::NODES, need(var::NODES)?)?;
        if nodes == 0 || nodes > 65_536 {
            return Err(Error::Config(format!(
                "{}={nodes}: must be between 1 and 65536",
                var::NODES
            )));
        }
        let rank = parse_u(var::RANK, need(var::RANK)?)?;
        if rank >= nodes {
            return Err(Error::Config(format!(
                "{}={rank} but {}={nodes}",
                var::RANK,
                var::NODES
            )));
        }
        let coordinator = match (rank, get(var::COORDINATOR_FD)) {
            (0, Some(fd)) => {
                let fd = fd
                    .trim()
                    .parse::<RawFd>()
                    .ok()
                    .filter(|f| *f >= 0)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{}={fd:?} is not a file descriptor",
                            var::COORDINATOR_FD
                        ))
                    })?;
                Coordinator::Fd(fd)
            }
            _ => {
                let v = need(var::COORDINATOR)?;
                Coordinator::Addr(v.trim().parse().map_err(|_| {
                    Error::Config(format!(
                        "{}={v:?} is not an address like 127.0.0.1:7000",
                        var::COORDINATOR
                    ))
                })?)
            }
        };
        let secret = secret_from_lookup(&get)?.ok_or_else(|| {
            Error::Config(format!(
                "no job secret: set {} or {} (dsmrun does it for you)",
                var::SECRET,
                var::SECRET_FILE
            ))
        })?;
        Config::with_identity(get, Rank(rank as u32), nodes as usize, coordinator, secret)
    }

    /// The configuration of a node whose rank, job size, coordinator and secret are already
    /// known (from a launcher such as `mpiexec` or Slurm); the rest is read through `get`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable that is malformed.
    pub fn with_identity(
        get: impl Fn(&str) -> Option<String>,
        rank: Rank,
        nodes: usize,
        coordinator: Coordinator,
        secret: Secret,
    ) -> Result<Config> {
        let parse_u = |k: &str, v: String| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| Error::Config(format!("{k}={v:?} is not a non-negative integer")))
        };
        let secs = |k: &str, default: f64| -> Result<Duration> {
            match get(k) {
                None => Ok(Duration::from_secs_f64(default)),
                Some(v) => parse_seconds(k, &v),
            }
        };
        let bind = match get(var::BIND) {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(v) => parse_bind(&v)?,
        };
        let transport = match get(var::TRANSPORT) {
            None => TransportChoice::Auto,
            Some(v) => v.parse()?,
        };
        let spin = match get(var::SPIN_US) {
            None => transport::completion::DEFAULT_SPIN,
            Some(v) => Duration::from_micros(parse_u(var::SPIN_US, v)?.min(1_000_000)),
        };
        let on_peer_lost = match get(var::ON_PEER_LOST).as_deref().map(str::trim) {
            None | Some("exit") => OnPeerLost::Exit,
            Some("error") => OnPeerLost::Error,
            Some(v) => {
                return Err(Error::Config(format!(
                    "{}={v:?}: expected exit or error",
                    var::ON_PEER_LOST
                )))
            }
        };
        Ok(Config {
            rank,
            nodes,
            coordinator,
            secret,
            bind,
            transport,
            peer_timeout: secs(var::PEER_TIMEOUT, 10.0)?,
            connect_timeout: secs(var::CONNECT_TIMEOUT, 30.0)?,
            handshake_timeout: secs(
                var::HANDSHAKE_TIMEOUT,
                transport::gate::DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64(),
            )?,
            spin,
            on_peer_lost,
        })
    }
}

/// A positive number of seconds.
fn parse_seconds(k: &str, v: &str) -> Result<Duration> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e7)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| Error::Config(format!("{k}={v:?} is not a positive number of seconds")))
}

/// `DSM_CONNECT_TIMEOUT`, or its default of 30 s: launchers need it before the rest.
///
/// # Errors
/// [`Error::Config`] when it is malformed.
pub fn connect_timeout_from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Duration> {
    match get(var::CONNECT_TIMEOUT) {
        None => Ok(Duration::from_secs(30)),
        Some(v) => parse_seconds(var::CONNECT_TIMEOUT, &v),
    }
}

/// The job's secret from `DSM_SECRET` or `DSM_SECRET_FILE`; `None` when neither is set.
///
/// # Errors
/// [`Error::Config`] when the value or the file is not 64 hexadecimal digits, or the file
/// cannot be read.
pub fn secret_from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Secret>> {
    match (get(var::SECRET), get(var::SECRET_FILE)) {
        (Some(s), _) => Secret::from_hex(&s)
            .map(Some)
            .map_err(|_| Error::Config(format!("{} must be 64 hexadecimal digits", var::SECRET))),
        (None, Some(path)) => {
            let s = std::fs::read_to_string(&path)
                .map_err(|e| Error::Config(format!("{}={path}: {e}", var::SECRET_FILE)))?;
            Secret::from_hex(&s)
                .map(Some)
                .map_err(|_| Error::Config(format!("{path} must hold 64 hexadecimal digits")))
        }
        (None, None) => Ok(None),
    }
}

/// `DSM_BIND`: an IP address, or the name of a network interface (`eth0`, `ib0`), whose first
/// IPv4 address (else its first address) is taken.
///
/// # Errors
/// [`Error::Config`] when it is neither an address nor an interface with an address, listing
/// the interfaces there are.
pub fn parse_bind(v: &str) -> Result<IpAddr> {
    let v = v.trim();
    if let Ok(ip) = v.parse() {
        return Ok(ip);
    }
    let ifaces = if_addrs::get_if_addrs()
        .map_err(|e| Error::Config(format!("{}={v:?}: listing the interfaces: {e}", var::BIND)))?;
    let mine: Vec<IpAddr> = ifaces
        .iter()
        .filter(|i| i.name == v)
        .map(|i| i.ip())
        .collect();
    mine.iter()
        .find(|ip| ip.is_ipv4())
        .or(mine.first())
        .copied()
        .ok_or_else(|| {
            let mut names: Vec<&str> = ifaces.iter().map(|i| i.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            Error::Config(format!(
                "{}={v:?} is neither an IP address nor an interface with an address (interfaces: {})",
                var::BIND,
                names.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    const S: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn reads_the_rdma_variables() {
        let get = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            RdmaSettings::from_lookup(get(&[])).unwrap(),
            RdmaSettings::default()
        );
        let r = RdmaSettings::from_lookup(get(&[
            ("DSM_RDMA_DEVICE", "mlx5_0"),
            ("DSM_RDMA_PORT", "2"),
            ("DSM_RDMA_GID_INDEX", "3"),
        ]))
        .unwrap();
        assert_eq!(
            (r.device.as_deref(), r.port, r.gid_index),
            (Some("mlx5_0"), Some(2), Some(3))
        );
        let e = RdmaSettings::from_lookup(get(&[("DSM_RDMA_PORT", "0")])).unwrap_err();
        assert!(e.to_string().contains("DSM_RDMA_PORT"));
        let e = RdmaSettings::from_lookup(get(&[("DSM_RDMA_GID_INDEX", "x")])).unwrap_err();
        assert!(e.to_string().contains("DSM_RDMA_GID_INDEX"));
        let r = RdmaSettings::from_lookup(get(&[
            ("DSM_RDMA_REG_CHUNK", "64K"),
            ("DSM_RDMA_PIN_MAX", "512M"),
        ]))
        .unwrap();
        assert_eq!((r.reg_chunk, r.pin_max), (Some(64 << 10), Some(512 << 20)));
        let r = RdmaSettings::from_lookup(get(&[("DSM_RDMA_REG_CHUNK", "0")])).unwrap();
        assert_eq!(r.reg_chunk, Some(0));
        const BAD: [(&str, &str); 4] = [
            ("DSM_RDMA_REG_CHUNK", "3M"),
            ("DSM_RDMA_REG_CHUNK", "1K"),
            ("DSM_RDMA_PIN_MAX", "0"),
            ("DSM_RDMA_PIN_MAX", "lots"),
        ];
        for i in 0..BAD.len() {
            let e = RdmaSettings::from_lookup(get(&BAD[i..=i])).unwrap_err();
            assert!(e.to_string().contains(BAD[i].0), "{e}");
        }
    }

    #[test]
    fn reads_a_full_configuration() {
        let c = cfg(&[
            ("DSM_RANK", "2"),
            ("DSM_NODES", "4"),
            ("DSM_COORDINATOR", "127.0.0.1:7000"),
            ("DSM_SECRET", S),
            ("DSM_TRANSPORT", "tcp"),
            ("DSM_PEER_TIMEOUT", "2.5"),
            ("DSM_HANDSHAKE_TIMEOUT", "0.5"),
        ])
        .unwrap();
        assert_eq!((c.rank, c.nodes), (Rank(2), 4));
        assert_eq!(c.transport, TransportChoice::Tcp);
        assert_eq!(c.peer_timeout, Duration::from_millis(2500));
        assert_eq!(c.handshake_timeout, Duration::from_millis(500));
        assert_eq!(c.bind, IpAddr::from([127, 0, 0, 1]));
        // An interface name stands for its address.
        let c = cfg(&[
            ("DSM_RANK", "0"),
            ("DSM_NODES", "1"),
            ("DSM_COORDINATOR", "127.0.0.1:7000"),
            ("DSM_SECRET", S),
            ("DSM_BIND", "lo"),
        ])
        .unwrap();
        assert_eq!(c.bind, IpAddr::from([127, 0, 0, 1]));
    }

    #[test]
    fn names_the_bad_variable() {
        let base = [
            ("DSM_NODES", "2"),
            ("DSM_COORDINATOR", "127.0.0.1:1"),
            ("DSM_SECRET", S),
        ];
        let err = |extra: &[(&str, &str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            cfg(&v).unwrap_err().to_string()
        };
        assert!(err(&[]).contains("DSM_RANK is not set"));
        assert!(err(&[("DSM_RANK", "2")]).contains("DSM_RANK=2 but DSM_NODES=2"));
        assert!(err(&[("DSM_RANK", "x")]).contains("DSM_RANK"));
        assert!(
            err(&[("DSM_RANK", "1"), ("DSM_TRANSPORT", "carrier-pigeon")])
                .contains("unknown transport")
        );
        assert!(err(&[("DSM_RANK", "1"), ("DSM_PEER_TIMEOUT", "-1")]).contains("DSM_PEER_TIMEOUT"));
        assert!(err(&[("DSM_RANK", "1"), ("DSM_HANDSHAKE_TIMEOUT", "0")])
            .contains("DSM_HANDSHAKE_TIMEOUT"));
        assert!(err(&[("DSM_RANK", "1"), ("DSM_BIND", "everywhere")]).contains("DSM_BIND"));
        assert!(err(&[("DSM_RANK", "1"), ("DSM_BIND", "eth99")]).contains("interfaces: "));
        let no_secret = cfg(&[
            ("DSM_RANK", "1"),
            ("DSM_NODES", "2"),
            ("DSM_COORDINATOR", "127.0.0.1:1"),
        ]);
        assert!(no_secret.unwrap_err().to_string().contains("no job secret"));
    }
}

/// Settings of the shared memory.
#[derive(Debug, Clone)]
pub struct DsmConfig {
    /// Size of the global address space (virtual; memory is used only where touched).
    pub global_size: usize,
    /// How page faults are resolved.
    pub fault_mode: FaultMode,
    /// Which engine detects accesses.
    pub fault_engine: FaultEngineKind,
    /// Most memory spent on copies of pages homed elsewhere; older copies are evicted (clean
    /// ones dropped, dirty ones written home first) to stay under it.
    pub cache_size: usize,
    /// Checkpoints and restarts ([`crate::checkpoint::Settings`]).
    pub checkpoint: crate::checkpoint::Settings,
}

impl DsmConfig {
    /// Reads `DSM_GLOBAL_SIZE` (bytes, with an optional K/M/G suffix; default 4G),
    /// `DSM_CACHE_SIZE` (default 1G),
    /// `DSM_FAULT_ENGINE` (`auto`, the default, `sigsegv` or `uffd`),
    /// `DSM_FAULT_MODE` (`inline`, the default, or `handoff`) and `DSM_FAULT_THREADS` (service
    /// threads of the hand-off mode, default 2), and the checkpoint settings
    /// ([`crate::checkpoint::Settings::from_env`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming a malformed variable.
    pub fn from_env() -> Result<DsmConfig> {
        let size = match std::env::var("DSM_GLOBAL_SIZE") {
            Ok(v) => parse_size(&v).ok_or_else(|| {
                Error::Config(format!("DSM_GLOBAL_SIZE={v:?} is not a size like 4G"))
            })?,
            Err(_) => 4 << 30,
        };
        let threads = match std::env::var("DSM_FAULT_THREADS") {
            Ok(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "DSM_FAULT_THREADS={v:?} is not a number from 1 to 64"
                    ))
                })?,
            Err(_) => 2,
        };
        let fault_mode = match std::env::var("DSM_FAULT_MODE").as_deref().map(str::trim) {
            Err(_) | Ok("inline") => FaultMode::Inline,
            Ok("handoff") => FaultMode::Handoff { threads },
            Ok(v) => {
                return Err(Error::Config(format!(
                    "DSM_FAULT_MODE={v:?}: expected inline or handoff"
                )))
            }
        };
        let fault_engine = match std::env::var("DSM_FAULT_ENGINE") {
            Ok(v) => FaultEngineKind::parse(&v)?,
            Err(_) => FaultEngineKind::Auto,
        };
        let cache_size = match std::env::var("DSM_CACHE_SIZE") {
            Ok(v) => parse_size(&v).filter(|&c| c >= 16 * PAGE).ok_or_else(|| {
                Error::Config(format!(
                    "DSM_CACHE_SIZE={v:?} is not a size of at least 64K"
                ))
            })?,
            Err(_) => 1 << 30,
        };
        Ok(DsmConfig {
            global_size: size,
            fault_mode,
            fault_engine,
            cache_size,
            checkpoint: crate::checkpoint::Settings::from_env()?,
        })
    }
}

/// Parses `4096`, `64K`, `256M`, `4G`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1usize << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(mult)
}
