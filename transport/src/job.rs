//! Whole jobs inside one process, for tests and benchmarks: a backend's `local_job` prepares `n`
//! nodes, gathers their endpoints, and connects them all at once here.

use crate::error::{Error, Result};

/// Connects the `prepared` nodes (indexed by rank), given every node's endpoint: `connect` runs
/// on a thread per node, since each node's connection waits for its peers. A thread that
/// panicked counts as [`Error::Closed`].
pub(crate) fn connect_all<P: Send, T: Send>(
    prepared: Vec<P>,
    endpoints: &[Vec<u8>],
    connect: impl Fn(P, &[Vec<u8>]) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let connect = &connect;
    std::thread::scope(|s| {
        let handles: Vec<_> = prepared
            .into_iter()
            .map(|p| s.spawn(move || connect(p, endpoints)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(Error::Closed)))
            .collect()
    })
}
