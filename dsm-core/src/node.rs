//! [`Node`]: this process's membership of a job: configuration, bootstrap, transport and the
//! watchdog that stops the node when the job breaks.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use transport::{
    AnyTransport, PreparedMixed, Rank, Secret, ShmConfig, ShmTransport, TcpConfig, TcpTransport,
    Transport, VerbsConfig, VerbsTransport,
};

use crate::bootstrap::{self, pmi::Pmi, slurm};
use crate::collective;
use crate::config::{self, var, Config, Coordinator, OnPeerLost, RdmaSettings, TransportChoice};
use crate::error::{Error, Result};
use crate::topology::{self, TopologyReport};

/// Exit status of a node that stops because it lost a peer.
pub const EXIT_PEER_LOST: i32 = 3;

/// This process's place in a job.
#[derive(Debug)]
pub struct Node {
    config: Config,
    transport: Arc<AnyTransport>,
    watchdog: Option<JoinHandle<()>>,
    /// The PMI server's connection, when an MPI launcher started the job: finalized on leaving.
    pmi: Option<Pmi>,
    launcher: Launcher,
    init_time: Duration,
    topology: TopologyReport,
    /// Set by the first `shutdown`.
    closed: bool,
}

/// What started this node: where its rank, size and peers came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `DSM_RANK`, `DSM_NODES`, `DSM_COORDINATOR` (from `dsmrun` or set by hand), or
    /// [`Node::with_config`].
    Env,
    /// An MPI launcher's PMI-1 server (`PMI_FD`, `PMI_RANK`, `PMI_SIZE`: `mpiexec.hydra`).
    Pmi,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_NTASKS`).
    Slurm,
}

impl std::fmt::Display for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::Env => "env",
            Launcher::Pmi => "pmi",
            Launcher::Slurm => "slurm",
        })
    }
}

impl Node {
    /// Joins the job described by the environment. The first that applies:
    /// `DSM_RANK` set (by `dsmrun` or by hand: [`Config::from_env`]); `PMI_FD` set (an MPI
    /// launcher such as `mpiexec.hydra`: [`bootstrap::pmi`]); `SLURM_PROCID` set (`srun`:
    /// [`bootstrap::slurm`]).
    ///
    /// # Collective
    /// Every node of the job must call it.
    ///
    /// # Errors
    /// Configuration, bootstrap and transport errors, each naming what failed.
    pub fn init() -> Result<Node> {
        let started = Instant::now();
        let get = |k: &str| std::env::var(k).ok();
        if get(var::RANK).is_none() {
            let timeout = config::connect_timeout_from_lookup(get)?;
            // Read before the PMI connection opens: an error found later is reported with the
            // connection held open (see `Pmi::hold_until_exit`), but one found here needs nothing.
            let secret = config::secret_from_lookup(get)?;
            if let Some(pmi) = Pmi::connect_from_env(get, timeout)? {
                return Node::with_pmi(pmi, secret, get, started);
            }
            if let Some(start) = slurm::start_from_lookup(get)? {
                return Node::start(
                    start.config,
                    None,
                    Launcher::Slurm,
                    start.rendezvous,
                    started,
                );
            }
        }
        Node::start(Config::from_env()?, None, Launcher::Env, None, started)
    }

    /// Joins a job started by an MPI launcher, through its PMI server. On failure the PMI
    /// connection is held open until the process exits: Hydra kills a process whose connection
    /// closes before `finalize` at once, before it can report the error it is returning.
    fn with_pmi(
        mut pmi: Pmi,
        secret: Option<Secret>,
        get: impl Fn(&str) -> Option<String> + Copy,
        started: Instant,
    ) -> Result<Node> {
        let config = match Node::pmi_config(&mut pmi, secret, get) {
            Ok(config) => config,
            Err(e) => {
                pmi.hold_until_exit();
                return Err(e);
            }
        };
        Node::start(config, Some(pmi), Launcher::Pmi, None, started)
    }

    /// The configuration of a node started by a PMI launcher: rank and size from the server, the
    /// secret shared through its key-value space.
    fn pmi_config(
        pmi: &mut Pmi,
        secret: Option<Secret>,
        get: impl Fn(&str) -> Option<String> + Copy,
    ) -> Result<Config> {
        let hosts = pmi.hosts()?;
        if hosts.is_some_and(|h| h > 1) && get(var::BIND).is_none() {
            return Err(Error::Config(format!(
                "the job spans {} hosts: set {} to this host's address or interface (for example `mpiexec -genv {} eth0`) so that the others can reach it",
                hosts.unwrap_or(0),
                var::BIND,
                var::BIND
            )));
        }
        let secret = pmi.share_secret(secret)?;
        Config::with_identity(
            get,
            Rank(pmi.rank()),
            pmi.size() as usize,
            Coordinator::Pmi,
            secret,
        )
    }

    /// Joins the job described by `config`.
    ///
    /// # Collective
    /// Every node of the job must call it.
    ///
    /// # Errors
    /// Bootstrap and transport errors, each naming what failed.
    pub fn with_config(config: Config) -> Result<Node> {
        Node::start(config, None, Launcher::Env, None, Instant::now())
    }

    fn start(
        config: Config,
        mut pmi: Option<Pmi>,
        launcher: Launcher,
        rendezvous: Option<PathBuf>,
        started: Instant,
    ) -> Result<Node> {
        let get = |k: &str| std::env::var(k).ok();
        let local = topology::local_ranks(
            get,
            config.rank.index(),
            config.nodes,
            config.bind.is_loopback(),
        );
        let connected = topology::plan(get, local).and_then(|(topology, pin)| {
            // More ranks on this host than hardware threads: a rank that spins waiting for a
            // message holds a processor its sender may need, so message waits spin no longer
            // than other waits.
            let pus = if topology.pus > 0 {
                topology.pus
            } else {
                std::thread::available_parallelism().map_or(1, usize::from)
            };
            let message_spin = if local.0 > pus {
                config.spin
            } else {
                transport::tcp::MESSAGE_SPIN
            };
            let transport =
                connect_transport(&config, pin, message_spin, |endpoint| match pmi.as_mut() {
                    Some(p) => p.exchange(endpoint),
                    None => bootstrap::exchange(&config, endpoint),
                });
            transport.map(|t| (topology, t))
        });
        if let Some(path) = rendezvous {
            // Every rank has joined (or the job failed): the file has served.
            let _ = std::fs::remove_file(path);
        }
        let (topology, transport) = match connected {
            Ok(c) => c,
            Err(e) => {
                if let Some(p) = pmi {
                    p.hold_until_exit();
                }
                return Err(e);
            }
        };
        report_backends(&transport, config.rank);
        let transport = Arc::new(transport);
        let watchdog = match config.on_peer_lost {
            OnPeerLost::Error => None,
            OnPeerLost::Exit => {
                let t = Arc::clone(&transport);
                let rank = config.rank;
                Some(
                    std::thread::Builder::new()
                        .name("dsm-watchdog".into())
                        .spawn(move || watch(&t, rank))
                        .map_err(|e| Error::io("starting the watchdog thread", e))?,
                )
            }
        };
        Ok(Node {
            config,
            transport,
            watchdog,
            pmi,
            launcher,
            init_time: started.elapsed(),
            topology,
            closed: false,
        })
    }

    /// The machine's topology as this node sees it, and where its progress thread runs.
    pub fn topology(&self) -> &TopologyReport {
        &self.topology
    }

    /// What started this node.
    pub fn launcher(&self) -> Launcher {
        self.launcher
    }

    /// How long joining the job took (from the start of [`Node::init`] to a connected mesh).
    pub fn init_time(&self) -> Duration {
        self.init_time
    }

    /// This node's rank.
    pub fn rank(&self) -> Rank {
        self.config.rank
    }

    /// The number of nodes in the job.
    pub fn nodes(&self) -> usize {
        self.config.nodes
    }

    /// The configuration the node was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The transport to the other nodes.
    pub fn transport(&self) -> &AnyTransport {
        &self.transport
    }

    /// The transport, shared (for runtime layers that outlive a borrow).
    pub fn transport_arc(&self) -> Arc<AnyTransport> {
        Arc::clone(&self.transport)
    }

    /// Waits until every node has called `barrier`.
    ///
    /// # Collective
    /// Every node must call it.
    ///
    /// # Errors
    /// When a peer is lost.
    pub fn barrier(&self) -> Result<()> {
        collective::barrier(&*self.transport, None)
    }

    /// Leaves the job in order: a barrier (so that no node leaves while others still need it),
    /// then the transport is closed.
    ///
    /// # Collective
    /// Every node must call it.
    ///
    /// # Errors
    /// When the final barrier fails; the transport is closed anyway.
    pub fn finalize(mut self) -> Result<()> {
        let barrier = self.barrier();
        self.shutdown();
        barrier
    }

    fn shutdown(&mut self) {
        if !std::mem::replace(&mut self.closed, true)
            && std::env::var("DSM_STATS").is_ok_and(|v| v != "0")
        {
            let pinned = self
                .transport
                .pinned()
                .map(|b| format!("; pinned for RDMA: {:.1} MiB", b as f64 / (1 << 20) as f64))
                .unwrap_or_default();
            eprintln!(
                "dsm: rank {}: started by {} in {:.1} ms; topology: {}{pinned}",
                self.config.rank,
                self.launcher,
                self.init_time.as_secs_f64() * 1e3,
                self.topology
            );
        }
        let _ = self.transport.close();
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        if let Some(pmi) = self.pmi.take() {
            if let Err(e) = pmi.finalize() {
                tracing::warn!("leaving the PMI server: {e}");
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Chooses the transport (`DSM_TRANSPORT`), exchanges endpoints through the bootstrap and
/// connects. Under `auto`, one backend per peer: shm to the nodes on this host, verbs to the
/// others when an active RDMA port exists, else tcp; rank 0 says which on stderr where RDMA
/// devices exist. `shm` and `tcp` force one backend for every peer. Every rank must end up with
/// the same choice: the endpoints of the two differ and
/// the connection fails naming the rank that chose otherwise.
fn connect_transport(
    config: &Config,
    pin: Option<transport::ThreadHook>,
    message_spin: std::time::Duration,
    mut exchange: impl FnMut(&[u8]) -> Result<Vec<Vec<u8>>>,
) -> Result<AnyTransport> {
    let verbs_config = || -> Result<VerbsConfig> {
        let rdma = RdmaSettings::from_env()?;
        Ok(VerbsConfig {
            device: rdma.device,
            port: rdma.port,
            gid_index: rdma.gid_index,
            reg_chunk: rdma.reg_chunk.unwrap_or(VerbsConfig::default().reg_chunk),
            pin_max: rdma.pin_max,
            peer_timeout: config.peer_timeout,
            connect_timeout: config.connect_timeout,
            spin: config.spin,
            on_progress_start: pin.clone(),
            ..VerbsConfig::default()
        })
    };
    let use_verbs = match config.transport {
        TransportChoice::Tcp | TransportChoice::Shm => false,
        TransportChoice::Verbs => true,
        TransportChoice::Auto => match transport::verbs::probe(&verbs_config()?) {
            Ok(device) => {
                if config.rank.0 == 0 {
                    eprintln!(
                        "dsm: transport auto: using shm on this host, verbs on {device} to others"
                    );
                }
                true
            }
            Err(why) => {
                // A machine without any RDMA device is the common case: say so only in the
                // log. A device that is there but cannot be used deserves a line.
                if transport::verbs::device_names().is_empty() {
                    tracing::info!("transport auto: shm on this host, tcp to others ({why})");
                } else if config.rank.0 == 0 {
                    eprintln!("dsm: transport auto: using shm on this host, tcp to others ({why})");
                }
                false
            }
        },
    };
    let shm = || {
        let shm = ShmConfig {
            message_spin,
            peer_timeout: config.peer_timeout,
            ..ShmConfig::default()
        };
        ShmTransport::prepare(config.rank, config.nodes, shm)
    };
    if use_verbs && config.transport == TransportChoice::Auto {
        let verbs = VerbsConfig {
            chunk_all: true,
            ..verbs_config()?
        };
        let verbs = VerbsTransport::prepare(config.rank, config.nodes, verbs)?;
        let prepared = PreparedMixed::with_verbs(verbs, shm()?)?;
        let endpoints = exchange(&prepared.endpoint()?)?;
        return Ok(AnyTransport::Mixed(prepared.connect(&endpoints)?));
    }
    if use_verbs {
        let prepared = VerbsTransport::prepare(config.rank, config.nodes, verbs_config()?)
            .map_err(|e| match e {
                transport::Error::Unsupported(why) => transport::Error::Unsupported(format!(
                    "DSM_TRANSPORT=verbs, but {why} (use DSM_TRANSPORT=tcp or auto)"
                )),
                other => other,
            })?;
        let endpoints = exchange(&prepared.endpoint())?;
        return Ok(AnyTransport::Verbs(prepared.connect(&endpoints)?));
    }
    if config.transport == TransportChoice::Shm {
        let prepared = shm()?;
        let endpoints = exchange(&prepared.endpoint()?)?;
        return Ok(AnyTransport::Shm(prepared.connect(&endpoints)?));
    }
    let mut tcp = TcpConfig::new(config.secret.clone());
    tcp.bind = config.bind;
    tcp.peer_timeout = config.peer_timeout;
    tcp.connect_timeout = config.connect_timeout;
    tcp.handshake_timeout = config.handshake_timeout;
    tcp.spin = config.spin;
    tcp.message_spin = message_spin;
    tcp.on_progress_start = pin;
    let prepared = TcpTransport::prepare(config.rank, config.nodes, tcp)?;
    if config.transport == TransportChoice::Tcp {
        let endpoints = exchange(&prepared.endpoint()?)?;
        return Ok(AnyTransport::Tcp(prepared.connect(&endpoints)?));
    }
    let prepared = PreparedMixed::new(prepared, shm()?);
    let endpoints = exchange(&prepared.endpoint()?)?;
    Ok(AnyTransport::Mixed(prepared.connect(&endpoints)?))
}

/// With `DSM_STATS`, says which backend reaches each peer.
fn report_backends(t: &AnyTransport, me: Rank) {
    if !std::env::var("DSM_STATS").is_ok_and(|v| v != "0") {
        return;
    }
    let peers: Vec<String> = (0..t.nodes() as u32)
        .filter(|&r| r != me.0)
        .map(|r| format!("{r} {}", t.backend_of(Rank(r))))
        .collect();
    eprintln!("dsm: rank {me}: transport per peer: {}", peers.join(", "));
}

/// Stops the process with an error naming the lost rank, so that no node hangs on a broken job.
fn watch(t: &AnyTransport, me: Rank) {
    if let transport::Error::PeerLost { peer, reason } = t.wait_failure() {
        eprintln!("dsm: rank {me}: lost rank {peer} ({reason}); stopping this node");
        std::process::exit(EXIT_PEER_LOST);
    }
}
