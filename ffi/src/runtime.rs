//! The process's one runtime, and the boundary every exported function goes through: panics are
//! caught, the outcome is recorded for `dsm_last_error`, and calls before `dsm_init` or after
//! `dsm_finalize` fail cleanly.

use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{PoisonError, RwLock};

use dsm_core::Dsm;

use crate::status::{
    self, Failure, DSM_ERR_ALREADY_INITIALIZED, DSM_ERR_FINALIZED, DSM_ERR_INTERNAL,
    DSM_ERR_NOT_GLOBAL, DSM_ERR_NOT_INITIALIZED,
};

/// Where the process's runtime is in its life.
enum State {
    /// Before `dsm_init`.
    Uninitialized,
    /// Between `dsm_init` and `dsm_finalize`.
    Running(Box<Dsm>),
    /// After `dsm_finalize`: the runtime cannot come back (as in MPI).
    Finalized,
}

/// Readers are the calls that use the runtime (any number at once, from any thread); the writers
/// are `dsm_init` and `dsm_finalize`.
static STATE: RwLock<State> = RwLock::new(State::Uninitialized);

/// Runs `f` with the running runtime.
pub(crate) fn with_dsm<T>(f: impl FnOnce(&Dsm) -> Result<T, Failure>) -> Result<T, Failure> {
    // A reader never panics while holding the lock in a way that leaves the state half-changed
    // (it only reads it), so a poisoned lock still holds a valid state.
    let state = STATE.read().unwrap_or_else(PoisonError::into_inner);
    match &*state {
        State::Running(dsm) => f(dsm),
        State::Uninitialized => Err(Failure::new(
            DSM_ERR_NOT_INITIALIZED,
            "the runtime is not initialised: call dsm_init first",
        )),
        State::Finalized => Err(Failure::new(DSM_ERR_FINALIZED, "the runtime was finalized")),
    }
}

/// Starts the runtime with `start` unless it is running or was finalized.
pub(crate) fn initialize(start: impl FnOnce() -> Result<Dsm, Failure>) -> Result<(), Failure> {
    let mut state = STATE.write().unwrap_or_else(PoisonError::into_inner);
    match &*state {
        State::Running(_) => Err(Failure::new(
            DSM_ERR_ALREADY_INITIALIZED,
            "dsm_init was already called",
        )),
        State::Finalized => Err(Failure::new(
            DSM_ERR_FINALIZED,
            "the runtime was finalized and cannot be initialised again",
        )),
        State::Uninitialized => {
            *state = State::Running(Box::new(start()?));
            Ok(())
        }
    }
}

/// Stops the running runtime; it stays stopped whatever `finalize` returns.
pub(crate) fn finalize() -> Result<(), Failure> {
    let mut state = STATE.write().unwrap_or_else(PoisonError::into_inner);
    match std::mem::replace(&mut *state, State::Finalized) {
        State::Running(dsm) => dsm.finalize().map_err(Failure::from),
        State::Uninitialized => {
            *state = State::Uninitialized;
            Err(Failure::new(
                DSM_ERR_NOT_INITIALIZED,
                "dsm_finalize before dsm_init",
            ))
        }
        State::Finalized => Err(Failure::new(
            DSM_ERR_FINALIZED,
            "dsm_finalize was already called",
        )),
    }
}

/// Whether the runtime is running.
pub(crate) fn is_running() -> bool {
    matches!(
        &*STATE.read().unwrap_or_else(PoisonError::into_inner),
        State::Running(_)
    )
}

/// Runs `f` at the boundary of a function that returns a status.
pub(crate) fn status_call(f: impl FnOnce() -> Result<(), Failure>) -> c_int {
    status::record(caught(f))
}

/// Runs `f` at the boundary of a function that returns a value (`fallback` on failure; the
/// status is left for `dsm_last_error`).
pub(crate) fn value_call<T>(fallback: T, f: impl FnOnce() -> Result<T, Failure>) -> T {
    match caught(f) {
        Ok(v) => {
            status::record(Ok(()));
            v
        }
        Err(e) => {
            status::record(Err(e));
            fallback
        }
    }
}

/// Runs `f`, turning a panic into [`DSM_ERR_INTERNAL`]: unwinding into C is undefined behaviour.
fn caught<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(Failure::new(
            DSM_ERR_INTERNAL,
            format!("internal error (panic): {what}"),
        ))
    })
}

/// Checks that `addr` is in the global memory of `dsm`, for calls that need a global pointer.
pub(crate) fn global(dsm: &Dsm, addr: usize, what: &str) -> Result<(), Failure> {
    if addr == 0 {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    if !dsm.is_global(addr) {
        return Err(Failure::new(
            DSM_ERR_NOT_GLOBAL,
            format!("{what} {addr:#x} is not in global memory"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{last_status, DSM_ERR_INVALID_ARGUMENT};

    #[test]
    fn panics_become_internal_errors() {
        // The default hook would print the panic; it is expected here.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let s = status_call(|| panic!("boom"));
        std::panic::set_hook(hook);
        assert_eq!(s, DSM_ERR_INTERNAL);
        assert_eq!(last_status(), DSM_ERR_INTERNAL);
    }

    #[test]
    fn value_calls_fall_back_and_record() {
        assert_eq!(value_call(7u64, || Err(Failure::invalid("x"))), 7);
        assert_eq!(last_status(), DSM_ERR_INVALID_ARGUMENT);
        assert_eq!(value_call(7u64, || Ok(9)), 9);
        assert_eq!(last_status(), crate::status::DSM_OK);
    }

    #[test]
    fn calls_before_init_fail_cleanly() {
        let r = with_dsm(|_| Ok(()));
        assert_eq!(r.unwrap_err().status, DSM_ERR_NOT_INITIALIZED);
        assert!(!is_running());
    }
}
