//! The progress thread of an `shm` node: takes messages out of the rings into the mailbox while
//! no user thread is spinning on them, watches the peers' processes, and sleeps on the doorbell
//! when there is nothing to do (see [`super::wake`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::shared::Shared;
use super::wake;

/// Runs until the transport stops.
pub(super) fn run(shared: Arc<Shared>) {
    let period = shared.config.liveness_period;
    let mut checked = Instant::now();
    let control = &shared.control;
    while !shared.stopping.load(Ordering::SeqCst) {
        if checked.elapsed() >= period {
            control.heartbeat().fetch_add(1, Ordering::Relaxed);
            shared.check_liveness();
            checked = Instant::now();
        }
        if shared.drain(None) {
            continue;
        }
        let seen = control.doorbell().load(Ordering::SeqCst);
        control.sleeping().store(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if !shared.any_data() && !shared.stopping.load(Ordering::SeqCst) {
            wake::sleep(control.doorbell(), seen, period);
        }
        control.sleeping().store(0, Ordering::SeqCst);
    }
}
