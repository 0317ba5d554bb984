//! C programs written against `include/mpi.h`, compiled with the project's `dsmmpicc` wrapper
//! against the freshly built `libdsmmpi.so`, and run as real jobs of 2 to 4 processes with a
//! hard timeout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dsm_core::launcher::{launch, LaunchOptions};

/// The directory holding `libdsmmpi.so`: the profile directory above this test's `deps/`.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>")
        .to_path_buf();
    tests::build_cdylib(&dir, "dsmmpi");
    assert!(
        dir.join("libdsmmpi.so").exists(),
        "libdsmmpi.so missing in {}",
        dir.display()
    );
    dir
}

/// Compiles `tests/c/<name>.c` with `dsmmpicc`; returns the program's path.
fn compile(name: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("c-{name}"));
    let o = Command::new(here.join("dsmmpicc"))
        .env("DSMMPI_LIB_DIR", lib_dir())
        .args(["-Wall", "-Wextra", "-Werror", "-O1", "-g", "-o"])
        .arg(&out)
        .arg(here.join("tests/c").join(format!("{name}.c")))
        .output()
        .expect("run dsmmpicc (needs a C compiler)");
    assert!(
        o.status.success(),
        "compiling {name}.c failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

fn run(program: &Path, n: usize, expect: &str) {
    let mut o = LaunchOptions::new(n, program.to_str().expect("utf-8 path"));
    o.env = vec![("DSM_TRANSPORT".into(), "tcp".into())];
    o.timeout = Some(Duration::from_secs(90));
    o.capture_output = true;
    o.grace = Duration::from_secs(2);
    let r = launch(o).expect("start the job").wait();
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    for rank in 0..n {
        assert!(
            r.output.contains(&format!("rank {rank}: {expect}")),
            "rank {rank}:\n{}",
            r.output
        );
    }
}

#[test]
fn point_to_point_and_collectives_in_c() {
    let p = compile("p2p_coll");
    for n in [2, 3, 4] {
        run(&p, n, "c p2p and collectives ok");
    }
}

#[test]
fn one_sided_in_c() {
    let p = compile("rma");
    for n in [2, 3] {
        run(&p, n, "c rma ok");
    }
}

#[test]
fn errors_return_their_classes_in_c() {
    let p = compile("errors");
    run(&p, 2, "c errors ok");
}

#[test]
fn a_call_before_init_stops_the_program_with_a_message() {
    let p = compile("before_init");
    let o = Command::new("timeout")
        .arg("30")
        .arg(&p)
        .output()
        .expect("run the program");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("MPI_Send called before MPI_Init"), "{err}");
}

/// The programs that touch no global memory run clean under valgrind: no invalid access and
/// no uninitialised value reaches a decision in `libdsmmpi` or the runtime. (Accesses to
/// global memory are resolved by the runtime's fault handler, which valgrind reports as
/// invalid reads, so `rma.c` is not run here.)
#[test]
fn c_programs_run_clean_under_valgrind() {
    let found = Command::new("valgrind").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "valgrind is missing: scripts/setup.sh installs it"
    );
    for (name, expect) in [
        ("p2p_coll", "c p2p and collectives ok"),
        ("errors", "c errors ok"),
    ] {
        let p = compile(name);
        let mut o = LaunchOptions::new(2, "valgrind");
        o.args = vec![
            "-q".into(),
            "--error-exitcode=9".into(),
            p.to_str().expect("utf-8 path").into(),
            // p2p_coll skips its CPU-time check (valgrind makes every instruction slow).
            "no-timing".into(),
        ];
        o.env = vec![("DSM_TRANSPORT".into(), "tcp".into())];
        o.timeout = Some(Duration::from_secs(240));
        o.capture_output = true;
        o.grace = Duration::from_secs(2);
        let r = launch(o).expect("start the job").wait();
        assert_eq!(r.exit_code, 0, "{name}: {:?}\n{}", r.failure, r.output);
        assert!(
            r.output.contains(&format!("rank 1: {expect}")),
            "{}",
            r.output
        );
    }
}
