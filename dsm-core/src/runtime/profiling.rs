//! The runtime's profiling hooks that need its state (`DSM_PROFILE`, [`crate::profile`]).

use std::time::Duration;

use super::*;

impl Inner {
    /// Profiling: a barrier waited `waited` for the other nodes (its release and acquire not
    /// included) and closes the current phase.
    pub(crate) fn profile_barrier(&self, waited: Duration) {
        if let Some(p) = self.profile.on() {
            p.barrier(crate::profile::ns(waited), |page, buf| {
                // (A page homed here is in the runtime view while it is allocated; a failed
                // read leaves the buffer as it was, which only hides changes.)
                let _ = self.runtime.read_at(page * crate::space::PAGE, buf);
            });
        }
    }

    /// Profiling: the end of the job (see [`crate::profile::finish`]).
    ///
    /// # Collective
    /// Every node must call it.
    pub(crate) fn profile_finish(&self) -> Result<()> {
        match self.profile.on() {
            Some(p) => crate::profile::finish(p, self.me, &self.t),
            None => Ok(()),
        }
    }
}
