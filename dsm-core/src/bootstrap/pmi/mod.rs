//! Starting under an MPI launcher: a PMI-1 client over the descriptor MPICH's Hydra
//! (`mpiexec.hydra`) passes in `PMI_FD`, and the endpoint exchange through its key-value space.
//!
//! No MPI library is involved: [`wire`] is the protocol (pure code), this module the socket.
//! [`Pmi::connect_from_env`] takes `PMI_FD`, `PMI_RANK` and `PMI_SIZE`, and does `init`,
//! `get_maxes` and `get_my_kvsname`. Then [`Pmi::share_secret`] and [`Pmi::exchange`] put values,
//! make them visible with a barrier (PMI-1's commit is the `barrier_in`/`barrier_out` pair) and
//! get the others' values; [`Pmi::finalize`] tells the launcher this process ends cleanly.
//!
//! ## The job's secret under PMI
//!
//! No `dsmrun` hands out `DSM_SECRET`. Unless the user set one (`mpiexec -genv DSM_SECRET ...`,
//! which then wins), rank 0 draws a fresh secret and puts it in the key-value space before the
//! first barrier, and every other rank gets it from there. The key-value space of a job is
//! reachable only through the PMI connections Hydra opened for the job's own processes (a
//! socket pair inherited from the local proxy), so a process outside the job cannot read it; the
//! values do cross the network between Hydra's proxies and `mpiexec` unencrypted, exactly as
//! MPICH's own connection data does. The secret therefore keeps other jobs and stray processes
//! out of the job's sockets; it does not defend against someone who can read the cluster's
//! launcher traffic (set `DSM_SECRET` yourself, from a file only you can read, if that matters).

pub mod wire;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use transport::Secret;

use crate::error::{Error, Result};
use wire::Reply;

/// Names of the variables Hydra sets.
pub mod var {
    /// The descriptor of the connection to the PMI server.
    pub const FD: &str = "PMI_FD";
    /// This process's rank.
    pub const RANK: &str = "PMI_RANK";
    /// The number of processes.
    pub const SIZE: &str = "PMI_SIZE";
    /// Hydra's port mode (`host:port` plus `PMI_ID`), not supported.
    pub const PORT: &str = "PMI_PORT";
}

/// The key of the secret rank 0 publishes.
const SECRET_KEY: &str = "dsm.secret";
/// Longest value this client puts, whatever the server allows (Hydra's line limit is 1024).
const MAX_VALUE: usize = 512;

/// Set once `PMI_FD` has been taken: the descriptor belongs to one client per process.
static FD_TAKEN: AtomicBool = AtomicBool::new(false);

/// The server's limits (`get_maxes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maxes {
    /// Longest key-value space name.
    pub kvsname: usize,
    /// Longest key.
    pub key: usize,
    /// Longest value.
    pub value: usize,
}

/// A connection to the PMI server of the job.
#[derive(Debug)]
pub struct Pmi {
    stream: UnixStream,
    /// Bytes read past the last line.
    pending: Vec<u8>,
    rank: u32,
    size: u32,
    kvsname: String,
    maxes: Maxes,
    /// Longest wait for any reply (a barrier waits for the slowest process).
    timeout: Duration,
}

fn pmi_error(what: impl std::fmt::Display) -> Error {
    Error::Bootstrap(format!("PMI: {what}"))
}

impl Pmi {
    /// Connects to the PMI server named by `PMI_FD` when the process runs under a PMI-1
    /// launcher; `Ok(None)` when `PMI_FD` is not set.
    ///
    /// # Errors
    /// [`Error::Config`] for missing or malformed `PMI_RANK`/`PMI_SIZE`/`PMI_FD`, or a second
    /// connection in one process; the errors of [`Pmi::over`].
    pub fn connect_from_env(
        get: impl Fn(&str) -> Option<String>,
        timeout: Duration,
    ) -> Result<Option<Pmi>> {
        let Some(fd) = get(var::FD) else {
            if get(var::PORT).is_some() {
                return Err(Error::Config(format!(
                    "{} is set but not {}: the PMI port mode is not supported (use mpiexec.hydra, whose default is {})",
                    var::PORT,
                    var::FD,
                    var::FD
                )));
            }
            return Ok(None);
        };
        let (rank, size) = rank_and_size(&get)?;
        let fd: RawFd = fd
            .trim()
            .parse()
            .ok()
            .filter(|f| *f > 2)
            .ok_or_else(|| Error::Config(format!("{}={fd:?} is not a descriptor", var::FD)))?;
        if !is_socket(fd) {
            return Err(Error::Config(format!(
                "{}={fd} is not an open socket: was this process started by mpiexec?",
                var::FD
            )));
        }
        if FD_TAKEN.swap(true, Ordering::SeqCst) {
            return Err(Error::Config(format!(
                "{}={fd} is already in use by this process (the runtime joins a job once)",
                var::FD
            )));
        }
        // SAFETY: `fd` is an open socket (checked just above), handed to this process by the
        // launcher for exactly this connection; FD_TAKEN makes this the only owner in the process.
        let stream = unsafe { UnixStream::from_raw_fd(fd) };
        Pmi::over(stream, rank, size, timeout).map(Some)
    }

    /// Speaks PMI-1 over `stream` as `rank` of `size`: `init`, `get_maxes`, `get_my_kvsname`.
    /// Every reply is awaited at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the server is silent, [`Error::Bootstrap`] when it closes the
    /// connection or answers something that is not the expected reply.
    pub fn over(stream: UnixStream, rank: u32, size: u32, timeout: Duration) -> Result<Pmi> {
        let mut pmi = Pmi {
            stream,
            pending: Vec::new(),
            rank,
            size,
            kvsname: String::new(),
            maxes: Maxes {
                kvsname: 0,
                key: 0,
                value: 0,
            },
            timeout,
        };
        let r = pmi.call(
            "init",
            &[("pmi_version", "1"), ("pmi_subversion", "1")],
            "response_to_init",
        )?;
        if r.get("pmi_version").is_some_and(|v| v != "1") {
            return Err(pmi_error(format!(
                "the server speaks PMI version {}, not 1",
                r.get("pmi_version").unwrap_or("?")
            )));
        }
        let r = pmi.call("get_maxes", &[], "maxes")?;
        let size_of = |k: &str| -> Result<usize> {
            let n = r.number(k).map_err(pmi_error)?;
            usize::try_from(n)
                .ok()
                .filter(|n| (1..=1 << 20).contains(n))
                .ok_or_else(|| pmi_error(format!("{k}={n} in the server's maxes")))
        };
        pmi.maxes = Maxes {
            kvsname: size_of("kvsname_max")?,
            key: size_of("keylen_max")?,
            value: size_of("vallen_max")?,
        };
        if pmi.maxes.key < 16 || pmi.maxes.value < 16 {
            return Err(pmi_error(format!(
                "the server's limits {:?} are too small for the runtime's keys",
                pmi.maxes
            )));
        }
        let r = pmi.call("get_my_kvsname", &[], "my_kvsname")?;
        let name = r.need("kvsname").map_err(pmi_error)?;
        if name.is_empty() || name.len() > pmi.maxes.kvsname {
            return Err(pmi_error(format!("key-value space name {name:?}")));
        }
        pmi.kvsname = name.to_string();
        Ok(pmi)
    }

    /// This process's rank (`PMI_RANK`).
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// The number of processes (`PMI_SIZE`).
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The server's limits.
    pub fn maxes(&self) -> Maxes {
        self.maxes
    }

    /// The name of the job's key-value space.
    pub fn kvsname(&self) -> &str {
        &self.kvsname
    }

    /// Sends one request and waits for its reply.
    fn call(&mut self, cmd: &str, fields: &[(&str, &str)], reply: &str) -> Result<Reply> {
        let line = wire::encode(cmd, fields).map_err(pmi_error)?;
        self.stream
            .set_write_timeout(Some(self.timeout))
            .and_then(|()| self.stream.write_all(line.as_bytes()))
            .map_err(|e| self.io_error(cmd, e))?;
        let deadline = Instant::now() + self.timeout;
        let line = self.read_line(cmd, deadline)?;
        wire::decode(&line)
            .and_then(|r| r.expect(reply))
            .map_err(|e| pmi_error(format!("answering `cmd={cmd}`: {e}")))
    }

    fn io_error(&self, cmd: &str, e: std::io::Error) -> Error {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                Error::Timeout(format!(
                    "the PMI server did not answer `cmd={cmd}` within {:?}",
                    self.timeout
                ))
            }
            _ => Error::io(format!("PMI `cmd={cmd}`"), e),
        }
    }

    fn read_line(&mut self, cmd: &str, deadline: Instant) -> Result<Vec<u8>> {
        let mut chunk = [0u8; 1024];
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let rest = self.pending.split_off(end + 1);
                return Ok(std::mem::replace(&mut self.pending, rest));
            }
            if self.pending.len() > wire::MAX_LINE {
                return Err(pmi_error(format!(
                    "the reply to `cmd={cmd}` is longer than {} bytes",
                    wire::MAX_LINE
                )));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.io_error(cmd, std::io::ErrorKind::TimedOut.into()));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|e| self.io_error(cmd, e))?;
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(pmi_error(format!(
                        "the server closed the connection before answering `cmd={cmd}` (did mpiexec stop?)"
                    )))
                }
                Ok(n) => self.pending.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(cmd, e)),
            }
        }
    }

    /// Puts `key=value` in the job's key-value space (visible to others after [`Pmi::barrier`]).
    ///
    /// # Errors
    /// As [`Pmi::over`]; [`Error::Bootstrap`] when the key or value exceeds the server's
    /// limits or holds characters PMI cannot carry.
    pub fn put(&mut self, key: &str, value: &str) -> Result<()> {
        if key.len() > self.maxes.key || value.len() > self.maxes.value {
            return Err(pmi_error(format!(
                "key {key:?} or its value of {} bytes exceed the server's limits {:?}",
                value.len(),
                self.maxes
            )));
        }
        let kvs = self.kvsname.clone();
        self.call(
            "put",
            &[("kvsname", &kvs), ("key", key), ("value", value)],
            "put_result",
        )?;
        Ok(())
    }

    /// Gets the value of `key`.
    ///
    /// # Errors
    /// As [`Pmi::over`]; [`Error::Bootstrap`] when the key is not there.
    pub fn get(&mut self, key: &str) -> Result<String> {
        let kvs = self.kvsname.clone();
        let r = self.call("get", &[("kvsname", &kvs), ("key", key)], "get_result")?;
        Ok(r.need("value").map_err(pmi_error)?.to_string())
    }

    /// Waits until every process has entered the barrier; values put before it are then
    /// visible to every process (PMI-1's commit).
    ///
    /// # Collective
    /// Every process of the job must call it.
    ///
    /// # Errors
    /// As [`Pmi::over`].
    pub fn barrier(&mut self) -> Result<()> {
        self.call("barrier_in", &[], "barrier_out").map(drop)
    }

    /// Tells the launcher this process is leaving cleanly.
    ///
    /// # Errors
    /// As [`Pmi::over`].
    pub fn finalize(mut self) -> Result<()> {
        self.call("finalize", &[], "finalize_ack").map(drop)
    }

    /// Keeps the connection open until the process exits, for a process that failed to join and
    /// is about to report why. Hydra kills a process whose PMI connection closes before
    /// `finalize` at once (and the rest of the job with it), so closing here would lose the
    /// report; at exit the launcher sees an ordinary failed process instead. The descriptor is
    /// released by the kernel when the process ends.
    pub fn hold_until_exit(self) {
        let _ = self.stream.into_raw_fd();
    }

    /// Puts `bytes` under `key`, hexadecimal, split over `key.1`, `key.2`... when longer than a
    /// value may be: `key` holds `CHUNKS.HEX`.
    fn publish(&mut self, key: &str, bytes: &[u8]) -> Result<()> {
        let hex = wire::to_hex(bytes);
        let per = self.maxes.value.min(MAX_VALUE) - 8;
        let chunks: Vec<&str> = if hex.is_empty() {
            vec![""]
        } else {
            hex.as_bytes()
                .chunks(per)
                // Hexadecimal is ASCII: every split is a character boundary.
                .map(|c| std::str::from_utf8(c).unwrap_or_default())
                .collect()
        };
        self.put(key, &format!("{}.{}", chunks.len(), chunks[0]))?;
        for (i, c) in chunks.iter().enumerate().skip(1) {
            self.put(&format!("{key}.{i}"), c)?;
        }
        Ok(())
    }

    /// Reads what [`Pmi::publish`] put under `key`.
    fn fetch(&mut self, key: &str) -> Result<Vec<u8>> {
        let first = self.get(key)?;
        let bad = || {
            pmi_error(format!(
                "the value of {key} is not what the runtime put there"
            ))
        };
        let (n, hex) = first.split_once('.').ok_or_else(bad)?;
        let n: usize = n
            .parse()
            .ok()
            .filter(|n| (1..=4096).contains(n))
            .ok_or_else(bad)?;
        let mut hex = hex.to_string();
        for i in 1..n {
            hex.push_str(&self.get(&format!("{key}.{i}"))?);
        }
        wire::from_hex(&hex).map_err(|e| pmi_error(format!("{key}: {e}")))
    }

    /// The job's secret: `preset` when the user gave one (every rank must then have the same),
    /// otherwise drawn by rank 0 and published in the key-value space (see the module's notes
    /// on the trust model).
    ///
    /// # Collective
    /// Every process must call it (it holds a barrier).
    ///
    /// # Errors
    /// As [`Pmi::over`]; [`Error::Bootstrap`] when the published secret is malformed.
    pub fn share_secret(&mut self, preset: Option<Secret>) -> Result<Secret> {
        // The barrier is held whether or not a secret was given, so that every rank goes
        // through the same collective steps even when only some of them were given one (their
        // handshakes then fail, naming the secret, instead of the barriers pairing wrongly).
        let drawn = match (&preset, self.rank) {
            (None, 0) => {
                let s = Secret::generate()?;
                self.put(SECRET_KEY, &s.to_hex())?;
                Some(s)
            }
            _ => None,
        };
        self.barrier()?;
        if let Some(s) = preset.or(drawn) {
            return Ok(s);
        }
        let hex = self.get(SECRET_KEY).map_err(|e| match e {
            Error::Bootstrap(why) => pmi_error(format!(
                "rank 0 published no secret ({why}): set DSM_SECRET on every rank or on none"
            )),
            other => other,
        })?;
        Secret::from_hex(&hex)
            .map_err(|_| pmi_error(format!("{SECRET_KEY} is not 64 hexadecimal digits")))
    }

    /// Every process's endpoint, indexed by rank, exchanged through the key-value space: each
    /// puts its own, a barrier commits them, each gets the others'.
    ///
    /// # Collective
    /// Every process must call it.
    ///
    /// # Errors
    /// As [`Pmi::over`]; [`Error::Bootstrap`] when a value is malformed.
    pub fn exchange(&mut self, endpoint: &[u8]) -> Result<Vec<Vec<u8>>> {
        let me = self.rank;
        self.publish(&format!("dsm.ep.{me}"), endpoint)?;
        self.barrier()?;
        (0..self.size)
            .map(|r| {
                if r == me {
                    Ok(endpoint.to_vec())
                } else {
                    self.fetch(&format!("dsm.ep.{r}"))
                }
            })
            .collect()
    }

    /// How many hosts the job spans, from Hydra's `PMI_process_mapping`; `None` when the
    /// server does not say.
    ///
    /// # Errors
    /// As [`Pmi::over`].
    pub fn hosts(&mut self) -> Result<Option<u64>> {
        match self.get("PMI_process_mapping") {
            Ok(m) => Ok(wire::mapped_hosts(&m).ok()),
            Err(Error::Bootstrap(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `PMI_RANK` and `PMI_SIZE`, checked.
fn rank_and_size(get: &impl Fn(&str) -> Option<String>) -> Result<(u32, u32)> {
    let num = |k: &str| -> Result<u32> {
        let v = get(k).ok_or_else(|| {
            Error::Config(format!(
                "{} is set but {k} is not: a broken PMI launcher",
                var::FD
            ))
        })?;
        v.trim()
            .parse()
            .map_err(|_| Error::Config(format!("{k}={v:?} is not a non-negative integer")))
    };
    let (rank, size) = (num(var::RANK)?, num(var::SIZE)?);
    if size == 0 || size > 65_536 || rank >= size {
        return Err(Error::Config(format!(
            "{}={rank} and {}={size} do not describe a job of 1 to 65536 processes",
            var::RANK,
            var::SIZE
        )));
    }
    Ok((rank, size))
}

/// Whether `fd` is an open socket.
fn is_socket(fd: RawFd) -> bool {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into `st`, which lives across the call; a closed or invalid
    // descriptor makes it fail with EBADF, nothing more.
    let ok = unsafe { libc::fstat(fd, &mut st) } == 0;
    ok && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}
