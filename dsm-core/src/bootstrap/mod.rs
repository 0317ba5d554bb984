//! Bootstrap: every node learns every other node's transport endpoint.
//!
//! Rank 0 is the coordinator. Each other node connects to it, proves it knows the job's secret
//! (a mutual HMAC challenge, [`transport::auth`]), and sends a `Join` with its rank and
//! endpoint. When all `N - 1` have joined, rank 0 sends everyone the table of endpoints, indexed
//! by rank. A node without the secret, with a wrong job size or a duplicate rank is refused
//! with a reason, and the job goes on waiting for the real one. The whole exchange is bounded by
//! the connect timeout, and costs rank 0 one short conversation per node: O(N). Rank 0 holds
//! these conversations concurrently, each within the handshake timeout as a whole, and holds only
//! so many unauthenticated connections at once ([`transport::gate`]): strangers connected to the
//! coordinator's port cannot delay the real nodes.
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
use transport::gate::{self, Admission, DeadlineStream, GateConfig, Served};
use transport::{Rank, Secret};

use crate::config::{Config, Coordinator};
use crate::error::{Error, Result};
use message::{Message, MAX_MESSAGE};

const AUTH_CONTEXT: &str = "dsm bootstrap v1";

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

fn write_msg(s: &mut impl Write, m: &Message) -> std::io::Result<()> {
    let body = m.encode();
    let mut framed = (body.len() as u32).to_le_bytes().to_vec();
    framed.extend_from_slice(&body);
    s.write_all(&framed)?;
    s.flush()
}

fn read_msg(s: &mut impl Read, from: Rank) -> Result<Message> {
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

/// Gathers every node's `Join` through [`transport::gate`]: each joining connection
/// authenticates and sends its `Join` on a thread of its own, within the handshake timeout, so
/// strangers cannot delay the real nodes; then sends everyone the table.
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
    if n > 1 {
        let gate = GateConfig::for_peers("coordinator", config.handshake_timeout, n - 1);
        let secret = &config.secret;
        let served = gate::serve(
            listener,
            &gate,
            deadline,
            |s: &mut DeadlineStream| {
                handshake(s, secret, AUTH_CONTEXT, Role::Acceptor, 0).map_err(|e| e.to_string())?;
                read_msg(s, Rank(u32::MAX)).map_err(|e| e.to_string())
            },
            |arrival| {
                let (mut s, from) = (arrival.stream, arrival.from);
                match admit(arrival.value, config, &table) {
                    Ok((rank, ep)) => {
                        tracing::debug!("rank {rank} joined from {from}");
                        table[rank as usize] = Some(ep);
                        streams.push(s);
                        if streams.len() + 1 == n {
                            Admission::Finished
                        } else {
                            Admission::Admitted
                        }
                    }
                    Err(why) => {
                        // Best effort, and short: the node proved it has the secret, so it reads.
                        let _ = s.set_write_timeout(Some(config.handshake_timeout));
                        let _ = write_msg(&mut s, &Message::Refuse(why.clone()));
                        Admission::Refused(why)
                    }
                }
            },
        )?;
        if served == Served::DeadlinePassed {
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
    }
    let table: Vec<Vec<u8>> = table.into_iter().map(Option::unwrap_or_default).collect();
    let msg = Message::Table(table.clone());
    for s in streams {
        // The connect timeout bounds the whole bootstrap, this last step included.
        let mut s = DeadlineStream::until(s, deadline);
        write_msg(&mut s, &msg).map_err(|e| Error::io("sending the endpoint table", e))?;
    }
    Ok(table)
}

/// Checks an authenticated node's first message; the reason to refuse it otherwise.
fn admit(
    msg: Message,
    config: &Config,
    table: &[Option<Vec<u8>>],
) -> Result<(u32, Vec<u8>), String> {
    match msg {
        Message::Join {
            rank,
            nodes,
            endpoint,
        } => {
            if nodes as usize != config.nodes {
                Err(format!(
                    "rank {rank} believes the job has {nodes} nodes; it has {}",
                    config.nodes
                ))
            } else if rank == 0 || rank as usize >= config.nodes {
                Err(format!(
                    "rank {rank} is not a joining rank of a {}-node job",
                    config.nodes
                ))
            } else if table[rank as usize].is_some() {
                Err(format!("rank {rank} has already joined"))
            } else {
                Ok((rank, endpoint))
            }
        }
        other => Err(format!("expected a join, got {other:?}")),
    }
}

/// Joins the coordinator at `addr`: connects (again, while it is not listening yet or drops us
/// during authentication, as it may among many strangers), authenticates, sends our `Join` and
/// waits for the table, all before `deadline`.
fn join(
    addr: SocketAddr,
    config: &Config,
    endpoint: &[u8],
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let mut backoff = Duration::from_millis(5);
    let mut last: Option<Error> = None;
    let mut s = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let last = last.map(|e| format!(" (last: {e})")).unwrap_or_default();
            return Err(Error::Timeout(format!(
                "the coordinator (rank 0) at {addr} did not answer within {:?}{last}",
                config.connect_timeout
            )));
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                let mut s = DeadlineStream::until(s, deadline);
                match handshake(
                    &mut s,
                    &config.secret,
                    AUTH_CONTEXT,
                    Role::Connector,
                    config.rank.0,
                ) {
                    Ok(_) => break s,
                    // Closed or reset before we were authenticated: dropped among strangers.
                    Err(e @ transport::Error::Io { .. }) => last = Some(e.into()),
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Rank 0 may not be listening yet: retry with a bounded back-off.
                last = Some(Error::io(
                    format!("connecting to the coordinator at {addr}"),
                    e,
                ));
            }
            Err(e) => {
                return Err(Error::io(
                    format!("connecting to the coordinator at {addr}"),
                    e,
                ))
            }
        }
        transport::net::backoff(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(Duration::from_millis(200));
    };
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
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::TimedOut => {
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
