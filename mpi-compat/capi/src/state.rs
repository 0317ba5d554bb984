//! The library's global state (the universe and the handle tables), the error handler, and
//! the guard every exported function runs its body in.

use rustc_hash::FxHashMap;
use std::sync::{Mutex, MutexGuard};

use mpi_compat::{Communicator, Group, Universe, Window};

use crate::neighbor::DistGraph;
use crate::request::CRequest;
use crate::types::Datatype;

/// `MPI_SUCCESS`.
pub(crate) const SUCCESS: i32 = 0;
pub(crate) const ERR_COUNT: i32 = 2;
pub(crate) const ERR_TYPE: i32 = 3;
pub(crate) const ERR_COMM: i32 = 5;
pub(crate) const ERR_ROOT: i32 = 7;
pub(crate) const ERR_GROUP: i32 = 8;
pub(crate) const ERR_OP: i32 = 9;
pub(crate) const ERR_TOPOLOGY: i32 = 10;
pub(crate) const ERR_DIMS: i32 = 11;
pub(crate) const ERR_ARG: i32 = 12;
pub(crate) const ERR_TRUNCATE: i32 = 14;
pub(crate) const ERR_OTHER: i32 = 15;
pub(crate) const ERR_INTERN: i32 = 16;
pub(crate) const ERR_NO_MEM: i32 = 34;
pub(crate) const ERR_REQUEST: i32 = 19;
pub(crate) const ERR_WIN: i32 = 53;
/// `MPI_ERRORS_ARE_FATAL`.
pub(crate) const ERRORS_ARE_FATAL: i32 = 1;
/// `MPI_ERRORS_RETURN`.
pub(crate) const ERRORS_RETURN: i32 = 2;

/// An error on its way to the caller: its class and what happened.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) class: i32,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(class: i32, message: impl Into<String>) -> Failure {
        Failure {
            class,
            message: message.into(),
        }
    }
}

impl From<mpi_compat::Error> for Failure {
    fn from(e: mpi_compat::Error) -> Self {
        Failure {
            class: e.class() as i32,
            message: e.to_string(),
        }
    }
}

impl From<dsm_core::Error> for Failure {
    fn from(e: dsm_core::Error) -> Self {
        mpi_compat::Error::from(e).into()
    }
}

pub(crate) type CResult<T> = Result<T, Failure>;

/// A communicator handle's object: the communicator, its topology (Cartesian or distributed
/// graph), if any, and the hidden duplicate that carries its schedule-based collectives.
#[derive(Debug)]
pub(crate) struct CommEntry {
    pub(crate) comm: Communicator,
    /// A duplicate of `comm` (same ranks, a context of its own) for the collectives run as
    /// schedules of point-to-point messages (`crate::sched`): their messages never match the
    /// program's own. Made when the communicator is, a collective call already.
    pub(crate) coll: Communicator,
    /// The number of schedule-based collectives started on this communicator: the tag of the
    /// next one (every rank starts collectives in the same order, MPI-3.1 §5.12).
    pub(crate) seq: u32,
    pub(crate) cart: Option<(Vec<i32>, Vec<bool>)>,
    pub(crate) graph: Option<DistGraph>,
    pub(crate) errhandler: i32,
}

impl CommEntry {
    /// The entry of `comm`, without topology.
    ///
    /// # Collective
    /// Every rank of `comm` must call it (it duplicates `comm`).
    ///
    /// # Errors
    /// Those of the duplication.
    pub(crate) fn new(comm: Communicator, errhandler: i32) -> CResult<CommEntry> {
        Ok(CommEntry {
            coll: comm.dup()?,
            comm,
            seq: 0,
            cart: None,
            graph: None,
            errhandler,
        })
    }
}

/// Everything `MPI_Init` creates.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    // Handles are small integers this library hands out, and every call looks one up: a fast
    // hash (`FxHashMap`) rather than the default keyed one. Every change to what a handle of
    // `comms` or `types` names goes with `crate::recent::tables_changed` (threads keep what
    // they took: see `crate::recent`); `handle` does it for new handles.
    pub(crate) comms: FxHashMap<i32, CommEntry>,
    pub(crate) groups: FxHashMap<i32, Group>,
    pub(crate) windows: FxHashMap<i32, (Window, i32)>,
    pub(crate) requests: FxHashMap<i32, CRequest>,
    /// Requests freed by `MPI_Request_free` before they completed: progressed with the others
    /// until they do (MPI-3.1 §3.7.3), dropped at `MPI_Finalize`.
    pub(crate) detached: Vec<CRequest>,
    pub(crate) types: FxHashMap<i32, Datatype>,
    next: i32,
}

impl Tables {
    /// A fresh handle value (never one of the predefined ones).
    pub(crate) fn handle(&mut self) -> i32 {
        // A handle made names something new (one a thread kept as invalid, say).
        crate::recent::tables_changed();
        self.next = self.next.max(1000) + 1;
        self.next
    }
}

/// The library state.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) universe: Option<Universe>,
    pub(crate) tables: Tables,
    pub(crate) finalized: bool,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

pub(crate) fn lock() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `body` (an entry point that needs no initialised state) catching panics: a panic is
/// fatal, as under `with_state`, instead of unwinding into C.
pub(crate) fn guarded(name: &str, body: impl FnOnce() -> i32) -> i32 {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(r) => r,
        Err(_) => {
            eprintln!("dsmmpi: fatal error in {name}: internal panic (error class {ERR_INTERN})");
            std::process::exit(ERR_INTERN)
        }
    }
}

/// Runs `body` on the initialised state, catching panics; applies the error handler of
/// `comm` (or of `MPI_COMM_WORLD`) to a failure. The library lock is held throughout: calls
/// made this way are serialized.
pub(crate) fn with_state(
    name: &str,
    comm: Option<i32>,
    body: impl FnOnce(&mut State) -> CResult<()>,
) -> i32 {
    with_state_then(name, comm, body, Ok)
}

/// [`with_state`] in two steps, for calls that may block (`MPI_THREAD_MULTIPLE`): `prepare`
/// runs on the state under the library lock and takes what the call needs (a clone of the
/// communicator, of the datatype, a request taken out of the table); `run` runs on that after
/// the lock is released, so that other threads' calls go on while it waits. `run` takes the
/// lock again ([`lock`]) if it must put something back.
pub(crate) fn with_state_then<P>(
    name: &str,
    comm: Option<i32>,
    prepare: impl FnOnce(&mut State) -> CResult<P>,
    run: impl FnOnce(P) -> CResult<()>,
) -> i32 {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut guard = lock();
        let Some(state) = guard.as_mut().filter(|s| s.universe.is_some()) else {
            let when = if guard.as_ref().is_some_and(|s| s.finalized) {
                "after MPI_Finalize"
            } else {
                "before MPI_Init"
            };
            return (
                Err(Failure::new(ERR_OTHER, format!("{name} called {when}"))),
                ERRORS_ARE_FATAL,
            );
        };
        let handler = handler_of(state, comm);
        let prepared = prepare(state);
        drop(guard);
        (prepared.and_then(run), handler)
    }));
    let (result, handler) = match outcome {
        Ok(r) => r,
        Err(_) => (
            Err(Failure::new(ERR_INTERN, format!("{name}: internal panic"))),
            ERRORS_ARE_FATAL,
        ),
    };
    finish(name, result, handler)
}

/// The error handler in force for a call on communicator `comm` (`MPI_COMM_WORLD`'s for a
/// call on none).
fn handler_of(state: &State, comm: Option<i32>) -> i32 {
    comm.and_then(|c| state.tables.comms.get(&c))
        .or_else(|| state.tables.comms.get(&1))
        .map_or(ERRORS_ARE_FATAL, |e| e.errhandler)
}

/// A call's return value: `MPI_SUCCESS`, or its failure's class under `MPI_ERRORS_RETURN`;
/// under `MPI_ERRORS_ARE_FATAL` the failure is printed and the process exits.
fn finish(name: &str, result: CResult<()>, handler: i32) -> i32 {
    match result {
        Ok(()) => SUCCESS,
        Err(f) => {
            if handler == ERRORS_RETURN {
                f.class
            } else {
                eprintln!(
                    "dsmmpi: fatal error in {name}: {} (error class {})",
                    f.message, f.class
                );
                std::process::exit(f.class.clamp(1, 255))
            }
        }
    }
}

/// What a call on a communicator that may block takes from the state before it releases the
/// library lock (see [`with_comm`]): the communicator, and its datatype arguments (each lookup's
/// failure kept until the call asks for that datatype, as a call that ignores an argument
/// never fails on it).
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) comm: Communicator,
    /// At most [`TAKEN_TYPES`] (a send and a receive type), in place: a vector cost an
    /// allocation per call.
    types: [Option<(i32, CResult<Datatype>)>; TAKEN_TYPES],
}

/// The most datatype arguments a call made through [`with_comm`] names.
const TAKEN_TYPES: usize = 2;

impl Taken {
    /// Datatype `h`, one of those named to [`with_comm`].
    pub(crate) fn datatype(&self, h: i32) -> CResult<&Datatype> {
        match self.types.iter().flatten().find(|(t, _)| *t == h) {
            Some((_, Ok(d))) => Ok(d),
            Some((_, Err(f))) => Err(f.clone()),
            None => Err(Failure::new(
                ERR_INTERN,
                format!("datatype {h} was not taken"),
            )),
        }
    }
}

/// Runs `body` on communicator `comm` and datatypes `types` without the library lock (see
/// [`with_state_then`]): under `MPI_THREAD_MULTIPLE`, a thread blocked in a receive or a
/// collective does not hold back the other threads' calls.
pub(crate) fn with_comm(
    name: &str,
    comm: i32,
    types: &[i32],
    body: impl FnOnce(&Taken) -> CResult<()>,
) -> i32 {
    let epoch = crate::recent::epoch();
    if let Some((taken, handler)) = crate::recent::lookup(epoch, comm, types) {
        // What this thread took for the same handles, with the tables unchanged since.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&taken)));
        return match outcome {
            Ok(result) => finish(name, result, handler),
            Err(_) => finish(
                name,
                Err(Failure::new(ERR_INTERN, format!("{name}: internal panic"))),
                ERRORS_ARE_FATAL,
            ),
        };
    }
    with_state_then(
        name,
        Some(comm),
        |s| {
            let c = s.tables.comm(comm)?.comm.clone();
            if types.len() > TAKEN_TYPES {
                return Err(Failure::new(
                    ERR_INTERN,
                    format!("{name} names {} datatypes", types.len()),
                ));
            }
            let mut taken = [const { None }; TAKEN_TYPES];
            for (slot, &t) in taken.iter_mut().zip(types) {
                *slot = Some((t, s.tables.datatype(t).cloned()));
            }
            let taken = Taken {
                comm: c,
                types: taken,
            };
            Ok((taken, handler_of(s, Some(comm))))
        },
        |(taken, handler)| {
            let taken = std::rc::Rc::new(taken);
            crate::recent::keep(epoch, comm, types, handler, std::rc::Rc::clone(&taken));
            body(&taken)
        },
    )
}

impl Tables {
    pub(crate) fn comm(&self, c: i32) -> CResult<&CommEntry> {
        self.comms
            .get(&c)
            .ok_or_else(|| Failure::new(ERR_COMM, format!("invalid communicator {c}")))
    }

    pub(crate) fn comm_mut(&mut self, c: i32) -> CResult<&mut CommEntry> {
        self.comms
            .get_mut(&c)
            .ok_or_else(|| Failure::new(ERR_COMM, format!("invalid communicator {c}")))
    }

    pub(crate) fn window(&self, w: i32) -> CResult<&Window> {
        self.windows
            .get(&w)
            .map(|(w, _)| w)
            .ok_or_else(|| Failure::new(ERR_WIN, format!("invalid window {w}")))
    }

    pub(crate) fn group(&self, g: i32) -> CResult<&Group> {
        self.groups
            .get(&g)
            .ok_or_else(|| Failure::new(ERR_GROUP, format!("invalid group {g}")))
    }
}

/// Writes `v` through `p` when it is not null.
///
/// # Safety
/// `p` is null or valid for a write of a `T`.
pub(crate) unsafe fn put<T>(p: *mut T, v: T) -> CResult<()> {
    if p.is_null() {
        return Err(Failure::new(ERR_ARG, "a null output pointer"));
    }
    // SAFETY: not null (checked), and valid for a write by the caller's contract.
    unsafe { p.write(v) };
    Ok(())
}
