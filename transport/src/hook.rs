//! [`ThreadHook`]: code the transport runs first in each thread it starts.

use std::sync::Arc;

/// Code run first by a thread the transport starts (its progress thread), before any work: the
/// runtime uses it to pin that thread to a core chosen from the machine's topology, so that the
/// transport itself needs no knowledge of the topology.
#[derive(Clone)]
pub struct ThreadHook(Arc<dyn Fn() + Send + Sync>);

impl ThreadHook {
    /// Wraps `f`.
    pub fn new(f: impl Fn() + Send + Sync + 'static) -> ThreadHook {
        ThreadHook(Arc::new(f))
    }

    /// Runs the hook in the calling thread.
    pub fn run(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for ThreadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThreadHook")
    }
}
