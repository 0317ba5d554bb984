//! Who is on which host, and a node's `shm` endpoint: what the bootstrap carries to the other
//! nodes so that those on the same host can map its control segment.

use crate::error::{Error, Result};
use crate::types::Rank;

/// This host's identity: the kernel's boot id (different on every machine and every boot, the
/// same in every network namespace of one) and the host name (different in separate UTS
/// namespaces, such as containers). Either alone can mistake two hosts for one.
pub fn host_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}/{}", boot.trim(), name.trim())
}

/// A node's `shm` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// See [`host_id`].
    pub(crate) host: String,
    /// The node's process.
    pub(crate) pid: u32,
    /// Its descriptor of the control segment, and the file's identity.
    pub(crate) fd: u64,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

const PREFIX: &str = "shm1";

impl Endpoint {
    /// Text form: `shm1 <pid> <fd> <dev> <ino> <host>`.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        format!(
            "{PREFIX} {} {} {} {} {}",
            self.pid, self.fd, self.dev, self.ino, self.host
        )
        .into_bytes()
    }

    /// Parses [`Endpoint::to_bytes`]; `rank` names the sender in the error.
    pub(crate) fn parse(bytes: &[u8], rank: Rank) -> Result<Endpoint> {
        let bad = || Error::Protocol {
            from: rank,
            detail: "not an shm endpoint".into(),
        };
        let s = std::str::from_utf8(bytes).map_err(|_| bad())?;
        let mut f = s.splitn(6, ' ');
        if f.next() != Some(PREFIX) {
            return Err(bad());
        }
        let mut num = || f.next().and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
        let (pid, fd, dev, ino) = (num()?, num()?, num()?, num()?);
        let host = f.next().ok_or_else(bad)?.to_string();
        Ok(Endpoint {
            host,
            pid: u32::try_from(pid).map_err(|_| bad())?,
            fd,
            dev,
            ino,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip_and_refuse_garbage() {
        let e = Endpoint {
            host: "abc/my host".into(),
            pid: 7,
            fd: 9,
            dev: 1,
            ino: 2,
        };
        assert_eq!(Endpoint::parse(&e.to_bytes(), Rank(1)).unwrap(), e);
        assert!(Endpoint::parse(b"shm1 1 2", Rank(1)).is_err());
        assert!(Endpoint::parse(b"127.0.0.1:80", Rank(1)).is_err());
        assert!(host_id().len() > 2);
    }
}
