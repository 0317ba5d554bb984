//! Bootstrap: every node learns every other node's transport endpoint.
//!
//! Rank 0 is the coordinator. Each other node connects to it, proves it knows the job's secret
//! (a mutual HMAC challenge, [`transport::auth`]), and sends a `Join` with its rank and
//! endpoint. When all `N - 1` have joined, rank 0 sends everyone the table of endpoints, indexed
//! by rank. A node without the secret, with a wrong job size or a duplicate rank is refused
//! with a reason, and the job goes on waiting for the real one. The whole exchange is bounded by
//! the connect timeout, and costs rank 0 one short conversation per node: O(N).
//!
//! Where rank, size, coordinator and secret come from, in order ([`crate::Node::init`]):
//! `DSM_RANK` and friends (set by `dsmrun` or by hand); an MPI launcher's PMI-1 server
//! ([`pmi`]; the endpoints then go through its key-value space instead of a coordinator);
//! Slurm's `srun` ([`slurm`]).

pub mod message;
pub mod pmi;
pub mod slurm;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use transport::auth::{handshake, Role};
use transport::{Rank, Secret};

use crate::config::{Config, Coordinator};
use crate::error::{Error, Result};
use message::{Message, MAX_MESSAGE};

const AUTH_CONTEXT: &str = "dsm bootstrap v1";
/// Longest a single joining node may take to authenticate and say who it is.
const PER_NODE: Duration = Duration::from_secs(5);

/// Runs the bootstrap for this node and returns every node's endpoint, indexed by rank.
///
/// # Collective
/// Every node of the job must call this.
///
/// # Errors
/// [`Error::Timeout`] naming the ranks that never joined (rank 0) or the coordinator that never
/// answered (the others); [`Error::Bootstrap`] when rank 0 refuses us; [`Error::Io`] and
/// [`Error::Protocol`] for broken connections and malformed messages.
pub fn exchange(config: &Config, endpoint: &[u8]) -> Result<Vec<Vec<u8>>> {
    let deadline = Instant::now() + config.connect_timeout;
    if config.rank.0 == 0 {
        let listener = match config.coordinator {
            // SAFETY: the launcher passed us this descriptor for exactly this purpose; we take
            // sole ownership of it here, once (rank 0 bootstraps once per process).
            Coordinator::Fd(fd) => unsafe { TcpListener::from_raw_fd(fd) },
            Coordinator::Addr(addr) => TcpListener::bind(addr)
                .map_err(|e| Error::io(format!("binding the coordinator on {addr}"), e))?,
            Coordinator::Pmi => return Err(pmi_without_client()),
        };
        coordinate(&listener, config, endpoint, deadline)
    } else {
        let addr = match config.coordinator {
            Coordinator::Addr(addr) => addr,
            Coordinator::Fd(_) => {
                return Err(Error::Config(
                    "only rank 0 can use an inherited coordinator socket".into(),
                ))
            }
            Coordinator::Pmi => return Err(pmi_without_client()),
        };
        join(addr, config, endpoint, deadline)
    }
}

fn pmi_without_client() -> Error {
    Error::Config(
        "a PMI job exchanges its endpoints through the PMI server: start it with Node::init".into(),
    )
}

fn write_msg(s: &mut TcpStream, m: &Message) -> std::io::Result<()> {
    let body = m.encode();
    let mut framed = (body.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&body);
    s.write_all(&framed)?;
    s.flush()
}

fn read_msg(s: &mut TcpStream, from: Rank) -> Result<Message> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)
        .map_err(|e| Error::io(format!("reading from rank {from}"), e))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(Error::Protocol {
            from,
            detail: format!("message of {len} bytes"),
        });
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .map_err(|e| Error::io(format!("reading from rank {from}"), e))?;
    Message::decode(&body).map_err(|e| Error::Protocol {
        from,
        detail: e.to_string(),
    })
}

fn set_timeouts(s: &TcpStream, t: Duration) -> std::io::Result<()> {
    let t = Some(t.max(Duration::from_millis(1)));
    s.set_nodelay(true)?;
    s.set_read_timeout(t)?;
    s.set_write_timeout(t)
}

fn coordinate(
    listener: &TcpListener,
    config: &Config,
    endpoint: &[u8],
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let n = config.nodes;
    let mut table: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut streams: Vec<TcpStream> = Vec::with_capacity(n.saturating_sub(1));
    table[0] = Some(endpoint.to_vec());
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("configuring the coordinator", e))?;
    while streams.len() + 1 < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let missing: Vec<String> = (1..n)
                .filter(|r| table[*r].is_none())
                .map(|r| r.to_string())
                .collect();
            return Err(Error::Timeout(format!(
                "ranks {} did not join within {:?} (did they start? same secret? right coordinator address?)",
                missing.join(", "),
                config.connect_timeout
            )));
        }
        let (mut s, from) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                transport::net::wait_readable(listener, left.min(Duration::from_millis(100)));
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("accepting a joining node", e)),
        };
        match admit(&mut s, config, &table, left.min(PER_NODE)) {
            Ok((rank, ep)) => {
                tracing::debug!("rank {rank} joined from {from}");
                table[rank as usize] = Some(ep);
                streams.push(s);
            }
            Err(reason) => {
                tracing::warn!("refused a node from {from}: {reason}");
                eprintln!("dsm: rank 0: refused a node from {from}: {reason}");
            }
        }
    }
    let table: Vec<Vec<u8>> = table.into_iter().map(Option::unwrap_or_default).collect();
    let msg = Message::Table(table.clone());
    for s in &mut streams {
        write_msg(s, &msg).map_err(|e| Error::io("sending the endpoint table", e))?;
    }
    Ok(table)
}

/// Authenticates one joining node and checks its `Join`; refuses it with a reason otherwise.
fn admit(
    s: &mut TcpStream,
    config: &Config,
    table: &[Option<Vec<u8>>],
    limit: Duration,
) -> Result<(u32, Vec<u8>), String> {
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    set_timeouts(s, limit).map_err(|e| e.to_string())?;
    handshake(s, &config.secret, AUTH_CONTEXT, Role::Acceptor, 0).map_err(|e| e.to_string())?;
    let refuse = |s: &mut TcpStream, why: String| {
        let _ = write_msg(s, &Message::Refuse(why.clone()));
        why
    };
    match read_msg(s, Rank(u32::MAX)) {
        Ok(Message::Join {
            rank,
            nodes,
            endpoint,
        }) => {
            if nodes as usize != config.nodes {
                Err(refuse(
                    s,
                    format!(
                        "rank {rank} believes the job has {nodes} nodes; it has {}",
                        config.nodes
                    ),
                ))
            } else if rank == 0 || rank as usize >= config.nodes {
                Err(refuse(
                    s,
                    format!(
                        "rank {rank} is not a joining rank of a {}-node job",
                        config.nodes
                    ),
                ))
            } else if table[rank as usize].is_some() {
                Err(refuse(s, format!("rank {rank} has already joined")))
            } else {
                Ok((rank, endpoint))
            }
        }
        Ok(other) => Err(refuse(s, format!("expected a join, got {other:?}"))),
        Err(e) => Err(e.to_string()),
    }
}

fn join(
    addr: SocketAddr,
    config: &Config,
    endpoint: &[u8],
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let mut backoff = Duration::from_millis(5);
    let mut s = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Timeout(format!(
                "the coordinator (rank 0) at {addr} did not answer within {:?}",
                config.connect_timeout
            )));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Rank 0 may not be listening yet: retry with a bounded back-off.
                transport::net::backoff(backoff.min(left));
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(Error::io(
                    format!("connecting to the coordinator at {addr}"),
                    e,
                ))
            }
        }
    };
    set_timeouts(&s, deadline.saturating_duration_since(Instant::now()))
        .map_err(|e| Error::io("configuring the bootstrap connection", e))?;
    handshake(
        &mut s,
        &config.secret,
        AUTH_CONTEXT,
        Role::Connector,
        config.rank.0,
    )?;
    let join = Message::Join {
        rank: config.rank.0,
        nodes: config.nodes as u32,
        endpoint: endpoint.to_vec(),
    };
    write_msg(&mut s, &join).map_err(|e| Error::io("sending our join", e))?;
    match read_msg(&mut s, Rank(0)) {
        Ok(Message::Table(t)) if t.len() == config.nodes && t[config.rank.index()] == endpoint => {
            Ok(t)
        }
        Ok(Message::Table(_)) => Err(Error::Protocol {
            from: Rank(0),
            detail: "the endpoint table does not match this job".into(),
        }),
        Ok(Message::Refuse(why)) => Err(Error::Bootstrap(format!("rank 0 refused us: {why}"))),
        Ok(Message::Join { .. }) => Err(Error::Protocol {
            from: Rank(0),
            detail: "sent a join".into(),
        }),
        Err(Error::Io { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(Error::Timeout(format!(
                "the endpoint table did not arrive within {:?}",
                config.connect_timeout
            )))
        }
        Err(e) => Err(e),
    }
}

/// A fresh secret, for launchers.
///
/// # Errors
/// When the system has no entropy source.
pub fn new_secret() -> Result<Secret> {
    Ok(Secret::generate()?)
}
