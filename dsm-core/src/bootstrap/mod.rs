//! Bootstrap: every node learns every other node's transport endpoint.
//!
//! Rank 0 is the coordinator, but the endpoints travel through a binomial tree (`tree.rs`), so
//! that no node sends or receives more than ⌈log2 N⌉ tables. Each other node connects to rank
//! 0, proves it knows the job's secret (a mutual HMAC challenge, [`transport::auth`]) and sends
//! a `Join` with its rank and the address of its tree listener; rank 0 answers with the address
//! of the node's parent as soon as the parent has joined. Each node then gathers its children's
//! subtrees of endpoints on its tree listener (authenticated likewise), sends its own subtree to
//! its parent, gets the whole table back from its parent and sends it down to its children: the
//! endpoints go up and the table comes down in ⌈log2 N⌉ rounds each. A node without the
//! secret, with a wrong job size, a duplicate rank or a malformed subtree is refused with a
//! reason, and the job goes on waiting for the real one. The whole exchange is bounded by the
//! connect timeout on every node; a node that gives up tells the nodes waiting on it why. Rank
//! 0 holds its N - 1 introductions (a few dozen bytes each) concurrently, each within the
//! handshake timeout as a whole, and holds only so many unauthenticated connections at once
//! ([`transport::gate`]), as does every tree listener: strangers connected to a node's port
//! cannot delay the real nodes.
//!
//! Where rank, size, coordinator and secret come from, in order ([`crate::Node::init`]):
//! `DSM_RANK` and friends (set by `dsmrun` or by hand); an MPI launcher's PMI-1 server
//! ([`pmi`]; the endpoints then go through its key-value space instead of a coordinator);
//! Slurm's `srun` ([`slurm`]).

pub mod message;
pub mod pmi;
pub mod slurm;
mod tree;

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

const AUTH_CONTEXT: &str = "dsm bootstrap v2";

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

/// Rank 0's part: introduces every joining node to its parent in the tree (gathering the joins
/// through [`transport::gate`]: each joining connection authenticates and sends its `Join` on
/// a thread of its own, within the handshake timeout, so strangers cannot delay the real nodes),
/// then gathers its children's subtrees and sends them the table.
fn coordinate(
    listener: &TcpListener,
    config: &Config,
    endpoint: &[u8],
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let n = config.nodes;
    // Each node's tree listener, once it has joined (empty for a leaf).
    let mut joined: Vec<Option<Vec<u8>>> = vec![None; n];
    joined[0] = Some(Vec::new());
    // Joined nodes whose parent has not joined yet, by parent.
    let mut waiting: Vec<Vec<TcpStream>> = (0..n).map(|_| Vec::new()).collect();
    // Rank 0's own children stay on their join connection.
    let mut kids: Vec<(usize, TcpStream)> = Vec::new();
    let mut count = 1;
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
                let _ = s.set_write_timeout(Some(config.handshake_timeout));
                match admit(arrival.value, config, &joined) {
                    Ok((rank, addr)) => {
                        tracing::debug!("rank {rank} joined from {from}");
                        joined[rank] = Some(addr);
                        count += 1;
                        let p = tree::parent(rank);
                        match &joined[p] {
                            Some(_) if p == 0 => {
                                // Best effort: a child that cannot be told fails its subtree,
                                // which the gathering below names.
                                let _ = write_msg(&mut s, &Message::Parent(Vec::new()));
                                kids.push((rank, s));
                            }
                            Some(addr) => {
                                let _ = write_msg(&mut s, &Message::Parent(addr.clone()));
                            }
                            None => waiting[p].push(s),
                        }
                        let addr = joined[rank].clone().unwrap_or_default();
                        for mut c in std::mem::take(&mut waiting[rank]) {
                            let _ = write_msg(&mut c, &Message::Parent(addr.clone()));
                        }
                        if count == n {
                            Admission::Finished
                        } else {
                            Admission::Admitted
                        }
                    }
                    Err(why) => {
                        // Best effort, and short: the node proved it has the secret, so it reads.
                        let _ = write_msg(&mut s, &Message::Refuse(why.clone()));
                        Admission::Refused(why)
                    }
                }
            },
        )?;
        if served == Served::DeadlinePassed {
            let missing: Vec<String> = (1..n)
                .filter(|r| joined[*r].is_none())
                .map(|r| r.to_string())
                .collect();
            let why = format!(
                "ranks {} did not join within {:?} (did they start? same secret? right coordinator address?)",
                missing.join(", "),
                config.connect_timeout
            );
            let held = kids.into_iter().map(|(_, s)| s);
            give_up(held.chain(waiting.into_iter().flatten()), &why);
            return Err(Error::Timeout(why));
        }
    }
    kids.sort_by_key(|(r, _)| *r);
    let mut table = vec![Vec::new(); n];
    table[0] = endpoint.to_vec();
    let mut streams = Vec::with_capacity(kids.len());
    for (kid, s) in kids {
        let mut s = DeadlineStream::until(s, deadline);
        let got = read_msg(&mut s, Rank(kid as u32)).map_err(|e| subtree_lost(e, kid, n, config));
        place_subtree(&mut table, 0, kid, n, got?)?;
        streams.push(s);
    }
    send_down(streams, &table)?;
    Ok(table)
}

/// The error for a subtree that did not come up from child `kid`.
fn subtree_lost(e: Error, kid: usize, n: usize, config: &Config) -> Error {
    let last = kid + tree::subtree_size(kid, n) - 1;
    match e {
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
            Error::Timeout(format!(
                "the endpoints of ranks {kid}-{last} (the subtree under rank {kid}) did not arrive within {:?}",
                config.connect_timeout
            ))
        }
        e => e,
    }
}

/// Checks a child's `Subtree` message and puts its endpoints in `table` (which holds the
/// subtree of `me`, from index 0 for rank `me`).
fn place_subtree(
    table: &mut [Vec<u8>],
    me: usize,
    kid: usize,
    n: usize,
    msg: Message,
) -> Result<()> {
    let bad = |detail: String| Error::Protocol {
        from: Rank(kid as u32),
        detail,
    };
    match msg {
        Message::Subtree { first, endpoints } => {
            let size = tree::subtree_size(kid, n);
            if first as usize != kid || endpoints.len() != size {
                return Err(bad(format!(
                    "sent {} endpoints from rank {first}, not the {size} of its subtree",
                    endpoints.len()
                )));
            }
            for (i, e) in endpoints.into_iter().enumerate() {
                table[kid - me + i] = e;
            }
            Ok(())
        }
        Message::Refuse(why) => Err(Error::Bootstrap(format!("rank {kid} refused: {why}"))),
        other => Err(bad(format!("expected its subtree, got {other:?}"))),
    }
}

/// Tells the nodes still waiting on us that the bootstrap failed, and why (best effort,
/// briefly): they fail at once with the reason instead of a reset connection or a timeout.
fn give_up(held: impl Iterator<Item = TcpStream>, why: &str) {
    for mut s in held {
        let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
        let _ = write_msg(
            &mut s,
            &Message::Refuse(format!("the bootstrap failed: {why}")),
        );
    }
}

/// Sends the table to every child, each within the bootstrap's deadline.
fn send_down(streams: Vec<DeadlineStream>, table: &[Vec<u8>]) -> Result<()> {
    let msg = Message::Table(table.to_vec());
    for mut s in streams {
        write_msg(&mut s, &msg).map_err(|e| Error::io("sending the endpoint table", e))?;
    }
    Ok(())
}

/// Checks an authenticated node's `Join`; the node's rank and tree listener, or the reason to
/// refuse it.
fn admit(
    msg: Message,
    config: &Config,
    joined: &[Option<Vec<u8>>],
) -> Result<(usize, Vec<u8>), String> {
    match msg {
        Message::Join {
            rank,
            nodes,
            listener,
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
            } else if joined[rank as usize].is_some() {
                Err(format!("rank {rank} has already joined"))
            } else if tree::children(rank as usize, config.nodes).is_empty() != listener.is_empty()
                || (!listener.is_empty() && parse_addr(&listener).is_none())
            {
                Err(format!(
                    "rank {rank} gave the tree listener {:?}",
                    String::from_utf8_lossy(&listener)
                ))
            } else {
                Ok((rank as usize, listener))
            }
        }
        other => Err(format!("expected a join, got {other:?}")),
    }
}

fn parse_addr(b: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Connects to `addr` and authenticates, again while it is not listening yet or drops us
/// during authentication (as it may among many strangers), all before `deadline`. `who` names
/// the listener in errors.
fn connect(
    addr: SocketAddr,
    config: &Config,
    deadline: Instant,
    who: &str,
) -> Result<DeadlineStream> {
    let mut backoff = Duration::from_millis(5);
    let mut last: Option<Error> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let last = last.map(|e| format!(" (last: {e})")).unwrap_or_default();
            return Err(Error::Timeout(format!(
                "{who} at {addr} did not answer within {:?}{last}",
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
                    Ok(_) => return Ok(s),
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
                // Not listening yet: retry with a bounded back-off.
                last = Some(Error::io(format!("connecting to {who} at {addr}"), e));
            }
            Err(e) => return Err(Error::io(format!("connecting to {who} at {addr}"), e)),
        }
        transport::net::backoff(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(Duration::from_millis(200));
    }
}

/// Reads the answer to a message sent `to` whom, turning a timeout into a named one.
fn answer(s: &mut DeadlineStream, from: usize, what: &str, config: &Config) -> Result<Message> {
    match read_msg(s, Rank(from as u32)) {
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::TimedOut => {
            Err(Error::Timeout(format!(
                "{what} did not arrive from rank {from} within {:?}",
                config.connect_timeout
            )))
        }
        r => r,
    }
}

/// A node other than rank 0: introduces itself to the coordinator at `addr`, which names its
/// parent; gathers its children's subtrees on its own tree listener; sends its subtree to its
/// parent; gets the table back and sends it down to its children. All before `deadline`.
fn join(
    addr: SocketAddr,
    config: &Config,
    endpoint: &[u8],
    deadline: Instant,
) -> Result<Vec<Vec<u8>>> {
    let (me, n) = (config.rank.index(), config.nodes);
    let kids = tree::children(me, n);
    let listener = if kids.is_empty() {
        None
    } else {
        let l = TcpListener::bind((config.bind, 0))
            .map_err(|e| Error::io(format!("binding the tree listener on {}", config.bind), e))?;
        Some(l)
    };
    let listen = match &listener {
        Some(l) => l
            .local_addr()
            .map_err(|e| Error::io("the tree listener's address", e))?
            .to_string()
            .into_bytes(),
        None => Vec::new(),
    };
    let mut s = connect(addr, config, deadline, "the coordinator (rank 0)")?;
    let join = Message::Join {
        rank: me as u32,
        nodes: n as u32,
        listener: listen,
    };
    write_msg(&mut s, &join).map_err(|e| Error::io("sending our join", e))?;
    let parent = match answer(&mut s, 0, "the introduction to our parent", config)? {
        Message::Parent(p) => p,
        Message::Refuse(why) => return Err(Error::Bootstrap(format!("rank 0 refused us: {why}"))),
        other => {
            return Err(Error::Protocol {
                from: Rank(0),
                detail: format!("expected our parent, got {other:?}"),
            })
        }
    };
    // Our subtree: ourselves, then each child's.
    let mut table = vec![Vec::new(); tree::subtree_size(me, n)];
    table[0] = endpoint.to_vec();
    let streams = match &listener {
        Some(l) => gather(l, config, &kids, &mut table, deadline)?,
        None => Vec::new(),
    };
    let p = tree::parent(me);
    let mut up = if parent.is_empty() {
        s
    } else {
        drop(s);
        let addr = parse_addr(&parent).ok_or_else(|| Error::Protocol {
            from: Rank(0),
            detail: "named our parent by a malformed address".into(),
        })?;
        connect(addr, config, deadline, &format!("our parent (rank {p})"))?
    };
    let subtree = Message::Subtree {
        first: me as u32,
        endpoints: table,
    };
    write_msg(&mut up, &subtree)
        .map_err(|e| Error::io(format!("sending our subtree to rank {p}"), e))?;
    let table = match answer(&mut up, p, "the endpoint table", config)? {
        Message::Table(t) if t.len() == n && t[me] == endpoint => t,
        Message::Table(_) => {
            return Err(Error::Protocol {
                from: Rank(p as u32),
                detail: "the endpoint table does not match this job".into(),
            })
        }
        Message::Refuse(why) => {
            return Err(Error::Bootstrap(format!("rank {p} refused us: {why}")))
        }
        other => {
            return Err(Error::Protocol {
                from: Rank(p as u32),
                detail: format!("expected the table, got {other:?}"),
            })
        }
    };
    send_down(streams, &table)?;
    Ok(table)
}

/// Accepts our children's connections on `listener` (authenticated, through
/// [`transport::gate`], so strangers cannot delay them) and puts each one's subtree in
/// `table`; returns their connections, for the table to go down.
fn gather(
    listener: &TcpListener,
    config: &Config,
    kids: &[usize],
    table: &mut [Vec<u8>],
    deadline: Instant,
) -> Result<Vec<DeadlineStream>> {
    let (me, n) = (config.rank.index(), config.nodes);
    let gate = GateConfig::for_peers("tree listener", config.handshake_timeout, kids.len());
    let secret = &config.secret;
    let mut streams: Vec<Option<TcpStream>> = kids.iter().map(|_| None).collect();
    let mut fault: Option<Error> = None;
    let served = gate::serve(
        listener,
        &gate,
        deadline,
        |s: &mut DeadlineStream| {
            handshake(s, secret, AUTH_CONTEXT, Role::Acceptor, me as u32)
                .map_err(|e| e.to_string())?;
            read_msg(s, Rank(u32::MAX)).map_err(|e| e.to_string())
        },
        |arrival| {
            let mut s = arrival.stream;
            let first = match &arrival.value {
                Message::Subtree { first, .. } => *first as usize,
                _ => usize::MAX,
            };
            let Some(i) = kids.iter().position(|&k| k == first) else {
                let why = format!("rank {me} has no child that would send {:?}", arrival.value);
                let _ = s.set_write_timeout(Some(config.handshake_timeout));
                let _ = write_msg(&mut s, &Message::Refuse(why.clone()));
                return Admission::Refused(why);
            };
            if streams[i].is_some() {
                return Admission::Refused(format!("rank {first}'s subtree came twice"));
            }
            if let Err(e) = place_subtree(table, me, first, n, arrival.value) {
                fault = Some(e);
                return Admission::Finished;
            }
            streams[i] = Some(s);
            if streams.iter().all(Option::is_some) {
                Admission::Finished
            } else {
                Admission::Admitted
            }
        },
    )?;
    let failed = match fault {
        Some(e) => Some(e),
        None if served == Served::DeadlinePassed => {
            let missing: Vec<String> = kids
                .iter()
                .zip(&streams)
                .filter(|(_, s)| s.is_none())
                .map(|(&k, _)| format!("{k}-{}", k + tree::subtree_size(k, n) - 1))
                .collect();
            Some(Error::Timeout(format!(
                "rank {me}: the endpoints of ranks {} (our children's subtrees) did not arrive within {:?}",
                missing.join(", "),
                config.connect_timeout
            )))
        }
        None => None,
    };
    if let Some(e) = failed {
        give_up(streams.into_iter().flatten(), &e.to_string());
        return Err(e);
    }
    Ok(streams
        .into_iter()
        .flatten()
        .map(|s| DeadlineStream::until(s, deadline))
        .collect())
}

/// A fresh secret, for launchers.
///
/// # Errors
/// When the system has no entropy source.
pub fn new_secret() -> Result<Secret> {
    Ok(Secret::generate()?)
}
