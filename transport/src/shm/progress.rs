//! The progress thread of an `shm` node: takes messages out of the rings into the mailbox while
//! no user thread is spinning on them, watches the peers' processes, and sleeps on the doorbell
//! when there is nothing to do (see [`super::wake`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shared::Shared;
use super::wake;

/// How long the thread keeps looking at the rings after the last message it took.
const LINGER: Duration = Duration::from_micros(50);

/// Runs until the transport stops.
pub(super) fn run(shared: Arc<Shared>) {
    let period = shared.config.liveness_period;
    let mut checked = Instant::now();
    // When something last arrived: the thread looks again (yielding the processor between
    // looks) for `LINGER` after that before it sleeps, so that a burst of messages costs one
    // wake-up, not one each.
    let mut busy = Instant::now();
    let control = &shared.control;
    while !shared.stopping.load(Ordering::SeqCst) {
        if checked.elapsed() >= period {
            control.heartbeat().fetch_add(1, Ordering::Relaxed);
            shared.check_liveness();
            checked = Instant::now();
        }
        // Lingering is for bursts nobody else reads: while a user thread spins on the rings
        // it takes the messages itself, and a third thread looking beside it (on 2 vCPUs)
        // only takes a processor from it or from its sender.
        let spinning = || control.spinners().load(Ordering::Relaxed) != 0;
        if shared.drain(None) {
            if !spinning() {
                busy = Instant::now();
            }
            continue;
        }
        if busy.elapsed() < LINGER && !spinning() {
            std::thread::yield_now();
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
