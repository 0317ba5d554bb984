//! The runtime of the PARMACS layer (`ffi/parmacs/dsm.m4`, installed as
//! `share/dsm/parmacs.m4`): SPLASH-2 and SPLASH-3 programs, written for threads that share
//! everything, run unmodified over nodes that share only global memory.
//!
//! The program runs as one process per node (`dsmrun -n N`, `mpiexec -n N`). The model:
//!
//! - **Serial phase.** Only rank 0 runs `main`: `MAIN_INITENV` returns on rank 0 and never on
//!   the others, which serve rank 0's requests until the program ends. A `G_MALLOC` of the
//!   serial phase is a collective allocation that rank 0 asks every rank to make with it
//!   (same pointer everywhere; blocked placement unless `DSM_PARMACS_PLACEMENT` says
//!   otherwise), so set-up code that does read-modify-write on shared structures runs once, as
//!   in the threaded original.
//! - **Program data.** Every rank runs with the same address-space layout (`dsm_parmacs_boot`,
//!   before `main`, turns address randomisation off for the process). At the first `CREATE` of
//!   a parallel phase rank 0 releases and sends its program data (the executable's `.data` and
//!   `.bss`: file-scope and static variables, pointers to global memory among them) to every
//!   rank, which installs it and keeps a copy (a twin). At `WAIT_FOR_END` every rank sends the
//!   bytes of its program data that differ from the twin, and rank 0 writes them into its own:
//!   a file-scope variable written by any thread in the parallel phase is seen by `main`
//!   after `WAIT_FOR_END`.
//! - **Threads.** `CREATE(f, P)` starts P - 1 threads (thread t on rank t mod N) and runs `f`
//!   on the main thread as thread 0; `CREATE(f)` (the SPLASH-2 form, called once per thread)
//!   starts one. Threads of a node share its memory as threads do; global memory is coherent
//!   across nodes at the layer's synchronisation (locks, barriers, pauses, condition
//!   variables), release-consistent as `docs/MEMORY_MODEL.md` says.
//! - `G_MALLOC` in the parallel phase is the node's own heap (`dsm_malloc`).
//!
//! Requests travel as messages from rank 0 (tag `RESERVED + 0x300`), answers to it
//! (`RESERVED + 0x301`); their format is in `docs/PROTOCOL.md`.

pub(crate) mod barrier;
pub(crate) mod image;

use std::ffi::{c_int, c_long, c_void};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;

use dsm_core::{Dsm, Placement};
use transport::{Rank, Tag, Transport};

use crate::runtime::{self, with_dsm};
use crate::status::Failure;
use image::Image;

/// Requests from rank 0.
const REQUEST: Tag = Tag(Tag::RESERVED + 0x300);
/// Answers to rank 0.
const ANSWER: Tag = Tag(Tag::RESERVED + 0x301);

const ALLOC: u8 = 1;
const FREE: u8 = 2;
const CREATE: u8 = 3;
const WAIT: u8 = 4;
const END: u8 = 5;

/// The layer's state in this process.
struct Layer {
    image: Image,
    layout: u64,
    rank: usize,
    nodes: usize,
    /// The thread that ran `MAIN_INITENV` (the program's main thread).
    main: std::thread::ThreadId,
    phase: Mutex<Phase>,
}

/// Where the program is: serial or parallel phase.
#[derive(Default)]
struct Phase {
    parallel: bool,
    /// Threads handed out in this phase (thread 0 is rank 0's main thread).
    created: usize,
    /// This process's threads of the phase.
    threads: Vec<JoinHandle<()>>,
    /// The program data as the phase started (ranks other than 0).
    twin: Option<Vec<u8>>,
    ended: bool,
}

static LAYER: OnceLock<Layer> = OnceLock::new();

/// The layer, once `MAIN_INITENV` ran.
fn layer() -> &'static Layer {
    LAYER
        .get()
        .unwrap_or_else(|| fail("a PARMACS call before MAIN_INITENV"))
}

fn phase(l: &Layer) -> MutexGuard<'_, Phase> {
    l.phase.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Stops the process with a message: the macros have no way to report an error, and a job
/// whose synchronisation failed cannot go on.
fn fail(what: impl std::fmt::Display) -> ! {
    let rank = LAYER
        .get()
        .map_or(String::from("?"), |l| l.rank.to_string());
    eprintln!("dsm PARMACS layer (rank {rank}): {what}");
    std::process::exit(1)
}

fn or_fail<T>(what: &str, r: Result<T, Failure>) -> T {
    r.unwrap_or_else(|e| fail(format!("{what}: {}", e.message)))
}

fn send(dsm: &Dsm, to: usize, tag: Tag, bytes: &[u8]) -> Result<(), Failure> {
    dsm.node()
        .transport()
        .send(Rank(to as u32), tag, bytes)
        .map_err(|e| Failure::from(dsm_core::Error::from(e)))
}

fn recv(dsm: &Dsm, from: usize, tag: Tag) -> Result<Vec<u8>, Failure> {
    dsm.node()
        .transport()
        .recv(Some(Rank(from as u32)), Some(tag), None)
        .map(|m| m.data)
        .map_err(|e| Failure::from(dsm_core::Error::from(e)))
}

/// The placement of the serial phase's allocations: `DSM_PARMACS_PLACEMENT` = `blocked`
/// (default), `first-touch` or `cyclic` (one page per node in turn).
fn placement() -> Placement {
    match std::env::var("DSM_PARMACS_PLACEMENT").as_deref() {
        Ok("first-touch") => Placement::FirstTouch,
        Ok("cyclic") => Placement::Cyclic { block_pages: 1 },
        Ok("blocked") | Err(_) => Placement::Blocked,
        Ok(other) => fail(format!(
            "DSM_PARMACS_PLACEMENT={other:?}: expected blocked, first-touch or cyclic"
        )),
    }
}

/// `MAIN_INITENV`: starts the runtime (if the program did not) and the layer. Returns on rank
/// 0, which runs the program; on every other rank it serves rank 0 until the program ends, and
/// then exits the process. A failure stops the process with a message.
#[no_mangle]
pub extern "C" fn dsm_parmacs_init() {
    if !runtime::is_running() {
        let status = crate::lifecycle::dsm_init(std::ptr::null_mut(), std::ptr::null_mut());
        if status != 0 {
            // SAFETY: `dsm_last_error_message` returns a NUL-terminated string owned by this
            // thread's record, valid until its next call.
            let msg = unsafe { std::ffi::CStr::from_ptr(crate::errors::dsm_last_error_message()) };
            fail(format!("dsm_init: {}", msg.to_string_lossy()));
        }
    }
    let image = or_fail("the program's data", Image::of_program());
    let (rank, nodes) = or_fail("the runtime", with_dsm(|d| Ok((d.rank(), d.nodes()))));
    let layer = Layer {
        layout: image.layout(),
        image,
        rank,
        nodes,
        main: std::thread::current().id(),
        phase: Mutex::new(Phase::default()),
    };
    if LAYER.set(layer).is_err() {
        fail("MAIN_INITENV called twice");
    }
    if rank == 0 {
        // SAFETY: `at_exit` is an `extern "C" fn()` that lives as long as the library.
        unsafe { libc::atexit(at_exit) };
        return;
    }
    serve();
}

/// On a rank other than 0: carries out rank 0's requests until `END`.
fn serve() -> ! {
    let l = layer();
    loop {
        let msg = or_fail("waiting for rank 0", with_dsm(|d| recv(d, 0, REQUEST)));
        let word = |i: usize| {
            msg.get(1 + 8 * i..9 + 8 * i)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .unwrap_or_else(|| fail("a truncated request from rank 0"))
        };
        match msg.first().copied() {
            Some(ALLOC) => {
                // (The allocation's checked barrier makes sure every rank asked the same.)
                or_fail(
                    "G_MALLOC",
                    with_dsm(|d| Ok(d.alloc_collective(word(0) as usize, placement())?)),
                );
            }
            Some(FREE) => or_fail(
                "G_FREE",
                with_dsm(|d| Ok(d.free_collective(word(0) as *mut u8)?)),
            ),
            Some(CREATE) => {
                let (f, count, layout) = (word(0), word(1) as usize, word(2));
                if layout != l.layout {
                    fail(
                        "this rank's address-space layout differs from rank 0's (address \
                         randomisation could not be turned off: see docs/C_API.md, PARMACS)",
                    );
                }
                let mut ph = phase(l);
                if let Some(snapshot) = msg.get(25..).filter(|s| !s.is_empty()) {
                    or_fail(
                        "installing rank 0's program data",
                        l.image.restore(snapshot),
                    );
                    ph.twin = Some(snapshot.to_vec());
                    or_fail("acquire", with_dsm(|d| Ok(d.acquire()?)));
                }
                for _ in 0..count {
                    ph.threads.push(spawn(f));
                }
            }
            Some(WAIT) => {
                join(l);
                or_fail("release", with_dsm(|d| Ok(d.release()?)));
                let twin = phase(l).twin.take();
                let diff = twin.map(|t| l.image.diff(&t)).unwrap_or_default();
                or_fail("answering rank 0", with_dsm(|d| send(d, 0, ANSWER, &diff)));
            }
            Some(END) => {
                let code = word(0) as i32;
                or_fail("finalize", runtime::finalize());
                std::process::exit(code);
            }
            _ => fail("an unknown request from rank 0"),
        }
    }
}

/// Starts a thread of the program running the C function at `f`.
fn spawn(f: u64) -> JoinHandle<()> {
    // SAFETY: `f` is the address of the function the program passed to CREATE on rank 0, a
    // `void f(void)`; the layouts were checked equal, so it is the same function here.
    let f: extern "C" fn() = unsafe { std::mem::transmute::<usize, extern "C" fn()>(f as usize) };
    std::thread::Builder::new()
        .name("parmacs".into())
        .stack_size(stack_size())
        .spawn(move || f())
        .unwrap_or_else(|e| fail(format!("cannot start a thread: {e}")))
}

/// The stack of a program thread: as large as the main thread's limit (8 MiB at least), as
/// threads of the original programs get.
fn stack_size() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-parameter.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) } == 0;
    let cur = if ok && lim.rlim_cur != libc::RLIM_INFINITY {
        lim.rlim_cur as usize
    } else {
        0
    };
    cur.clamp(8 << 20, 256 << 20)
}

/// Waits for this process's threads of the phase. The phase's lock is not held meanwhile: the
/// threads may still be calling `G_MALLOC`, which takes it.
fn join(l: &Layer) {
    let threads = std::mem::take(&mut phase(l).threads);
    for t in threads {
        if t.join().is_err() {
            fail("a program thread panicked");
        }
    }
}

/// `CREATE(f, P)` (with `nprocs` = P: starts P - 1 threads; the macro then runs `f` itself) or
/// `CREATE(f)` (`nprocs` = 0: starts one thread). Only rank 0 runs it (the serial phase).
#[no_mangle]
pub extern "C" fn dsm_parmacs_create(f: Option<extern "C" fn()>, nprocs: c_long) {
    let l = layer();
    let Some(f) = f else {
        fail("CREATE of a NULL function");
    };
    let extra = if nprocs > 0 { nprocs as usize - 1 } else { 1 };
    let mut ph = phase(l);
    let first = !ph.parallel;
    let snapshot = if first {
        or_fail("release", with_dsm(|d| Ok(d.release()?)));
        ph.parallel = true;
        ph.created = 0;
        l.image.snapshot()
    } else {
        Vec::new()
    };
    let mut counts = vec![0u64; l.nodes];
    for i in 1..=extra {
        counts[(ph.created + i) % l.nodes] += 1;
    }
    ph.created += extra;
    for (r, &count) in counts.iter().enumerate().skip(1) {
        if first || count > 0 {
            let mut m = vec![CREATE];
            for w in [f as usize as u64, count, l.layout] {
                m.extend_from_slice(&w.to_le_bytes());
            }
            m.extend_from_slice(&snapshot);
            or_fail("CREATE", with_dsm(|d| send(d, r, REQUEST, &m)));
        }
    }
    for _ in 0..counts[0] {
        ph.threads.push(spawn(f as usize as u64));
    }
}

/// `WAIT_FOR_END`: waits for every thread of the parallel phase, on every rank, and merges
/// their changes to the program data into rank 0's.
#[no_mangle]
pub extern "C" fn dsm_parmacs_wait_for_end(_n: c_long) {
    let l = layer();
    if !phase(l).parallel {
        return;
    }
    join(l);
    let mut ph = phase(l);
    let outcome = with_dsm(|d| {
        for r in 1..l.nodes {
            send(d, r, REQUEST, &[WAIT])?;
        }
        for r in 1..l.nodes {
            let diff = recv(d, r, ANSWER)?;
            l.image.apply(&diff)?;
        }
        Ok(d.acquire()?)
    });
    or_fail("WAIT_FOR_END", outcome);
    ph.parallel = false;
}

/// `G_MALLOC`: global memory. In the serial phase, on rank 0, a collective allocation that
/// every rank makes with it; in the parallel phase, this node's heap. NULL when out of memory.
#[no_mangle]
pub extern "C" fn dsm_parmacs_malloc(bytes: usize) -> *mut c_void {
    let l = layer();
    let ph = phase(l);
    let outcome = with_dsm(|d| {
        if l.rank == 0 && !ph.parallel {
            let mut m = vec![ALLOC];
            m.extend_from_slice(&(bytes as u64).to_le_bytes());
            for r in 1..l.nodes {
                send(d, r, REQUEST, &m)?;
            }
            Ok(d.alloc_collective(bytes, placement())?)
        } else {
            Ok(d.malloc(bytes)?)
        }
    });
    match outcome {
        Ok(p) => p.cast(),
        Err(_) => std::ptr::null_mut(),
    }
}

/// `G_FREE`: frees global memory from `G_MALLOC` (collectively, for a serial-phase allocation
/// freed in the serial phase).
#[no_mangle]
pub extern "C" fn dsm_parmacs_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    let l = layer();
    let ph = phase(l);
    let outcome = with_dsm(|d| {
        let (base, size) = d.global_range();
        let collective = (base..base + size / 2).contains(&(p as usize));
        if collective && l.rank == 0 && !ph.parallel {
            let mut m = vec![FREE];
            m.extend_from_slice(&(p as u64).to_le_bytes());
            for r in 1..l.nodes {
                send(d, r, REQUEST, &m)?;
            }
            Ok(d.free_collective(p.cast())?)
        } else {
            Ok(d.free(p.cast())?)
        }
    });
    or_fail("G_FREE", outcome);
}

/// `MAIN_END`: ends the program on every rank with exit status `code`.
#[no_mangle]
pub extern "C" fn dsm_parmacs_end(code: c_int) {
    end(code);
    std::process::exit(code);
}

/// Rank 0 leaving `main` without `MAIN_END`: the others end too.
extern "C" fn at_exit() {
    end(0);
}

fn end(code: c_int) {
    let l = layer();
    if l.rank != 0 {
        return;
    }
    let mut ph = phase(l);
    if ph.ended {
        return;
    }
    ph.ended = true;
    drop(ph);
    // A program thread calling `exit` (a failed check, say) ends the process: the other ranks
    // are told to end, but neither the phase's threads (itself among them) are waited for nor
    // is the runtime shut down under them.
    let from_main = std::thread::current().id() == l.main;
    if from_main {
        dsm_parmacs_wait_for_end(0);
    }
    let outcome = with_dsm(|d| {
        let mut m = vec![END];
        m.extend_from_slice(&i64::from(code).to_le_bytes());
        for r in 1..l.nodes {
            send(d, r, REQUEST, &m)?;
        }
        Ok(())
    });
    or_fail("MAIN_END", outcome);
    if from_main {
        or_fail("finalize", runtime::finalize());
    }
}

/// Stops the process with the last error's message when `status` is negative (a macro's call
/// failed: a lock outside global memory, a lost node...). `what` names the macro.
///
/// # Safety
/// `what` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn dsm_parmacs_check(status: c_int, what: *const std::ffi::c_char) {
    if status >= 0 {
        return;
    }
    let what = if what.is_null() {
        String::from("a PARMACS macro")
    } else {
        // SAFETY: the caller passes a NUL-terminated string (a literal in the macros).
        unsafe { std::ffi::CStr::from_ptr(what) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: a NUL-terminated string owned by this thread's record.
    let msg = unsafe { std::ffi::CStr::from_ptr(crate::errors::dsm_last_error_message()) };
    fail(format!("{what}: {}", msg.to_string_lossy()));
}

/// `GETSUB(x, sub, max, P)`: hands out `x`'s values 0..=max, one per call across all threads
/// and nodes, then -1 (and `x` starts again from 0), as the original macros do under a lock.
/// `x` is a `long` in global memory (`GSDEC` in a `G_MALLOC` struct).
#[no_mangle]
pub extern "C" fn dsm_parmacs_getsub(x: *mut c_long, max: c_long) -> c_long {
    let word = x.cast::<u64>();
    let outcome = with_dsm(|d| loop {
        let cur = d.atomic_load(word)? as c_long;
        let (next, sub) = if cur <= max { (cur + 1, cur) } else { (0, -1) };
        if d.atomic_compare_exchange(word, cur as u64, next as u64)? == cur as u64 {
            return Ok(sub);
        }
    });
    or_fail("GETSUB", outcome)
}

/// The number of threads of the parallel phase on this node for `P` = `p` (for programs and
/// tests that want to know where their threads run).
#[no_mangle]
pub extern "C" fn dsm_parmacs_threads_here(p: c_long) -> c_long {
    let l = layer();
    barrier::threads_on(l.rank, l.nodes, usize::try_from(p).unwrap_or(0)) as c_long
}
