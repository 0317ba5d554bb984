//! C programs written against `include/mpi.h`, compiled with the project's `dsmmpicc` wrapper
//! against the freshly built `libdsmmpi.so`, and run as real jobs of 2 to 4 processes with a
//! hard timeout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dsm_launcher::{launch, LaunchOptions};

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

/// Receives posted before their messages (landing places over tcp): matching order,
/// truncation, messages queued before their receive.
#[test]
fn receives_posted_early_in_c() {
    let p = compile("landing");
    for n in [2, 3] {
        run(&p, n, "c landing ok");
    }
}

/// `MPI_THREAD_MULTIPLE`: threads in point-to-point calls, waits and collectives at once.
#[test]
fn threads_call_mpi_at_once_in_c() {
    let p = compile("threads");
    for n in [2, 3, 4] {
        run(&p, n, "c threads ok");
    }
}

#[test]
fn vector_collectives_and_reduce_scatter_in_c() {
    let p = compile("coll_v");
    for n in [1, 2, 3, 4] {
        run(&p, n, "c coll v ok");
    }
}

#[test]
fn non_blocking_collectives_in_c() {
    let p = compile("nbc");
    for n in [1, 2, 3, 4] {
        run(&p, n, "c nbc ok");
    }
}

#[test]
fn distributed_graphs_and_neighbourhood_collectives_in_c() {
    let p = compile("neighbor");
    for n in [1, 2, 3, 4] {
        run(&p, n, "c neighbor ok");
    }
}

#[test]
fn persistent_requests_in_c() {
    let p = compile("persistent");
    for n in [1, 2, 3, 4] {
        run(&p, n, "c persistent ok");
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
        ("coll_v", "c coll v ok"),
        ("nbc", "c nbc ok"),
        ("neighbor", "c neighbor ok"),
        ("persistent", "c persistent ok"),
        ("threads", "c threads ok"),
    ] {
        let p = compile(name);
        let mut o = LaunchOptions::new(2, "valgrind");
        o.args = vec![
            "-q".into(),
            "--error-exitcode=9".into(),
            // Valgrind runs one thread at a time; without fair scheduling a spinning thread can
            // keep the progress thread (and its heartbeats) off the CPU for seconds.
            "--fair-sched=yes".into(),
            p.to_str().expect("utf-8 path").into(),
            // p2p_coll skips its CPU-time check (valgrind makes every instruction slow).
            "no-timing".into(),
        ];
        // Everything runs tens of times slower: the default 10 s of silence before a peer is
        // declared lost was seen to pass while a rank was merely slow (persistent.c, once).
        o.env = vec![
            ("DSM_TRANSPORT".into(), "tcp".into()),
            ("DSM_PEER_TIMEOUT".into(), "60".into()),
        ];
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

/// The wrapper script in this crate, by name (`dsmmpicc` or `dsmmpicxx`).
fn wrapper(name: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg("60")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
        .env_remove("DSMMPI_CC")
        .env_remove("DSMMPI_CXX");
    c
}

/// `-show` prints the command (with link flags only when something is linked) and runs
/// nothing.
#[test]
fn dsmmpicc_show_prints_the_command() {
    let o = wrapper("dsmmpicc")
        .env("DSMMPI_LIB_DIR", "/some/lib")
        .args(["-show", "a.c", "-o", "a"])
        .output()
        .expect("run dsmmpicc");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.starts_with("cc -I"), "{out}");
    assert!(
        out.contains("include a.c -o a -L/some/lib -ldsmmpi -Wl,-rpath,/some/lib"),
        "{out}"
    );
    for only in ["-c", "-E", "-M", "-S"] {
        let o = wrapper("dsmmpicc")
            .args(["-show", only, "a.c"])
            .output()
            .expect("run dsmmpicc");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(!out.contains("-ldsmmpi"), "{only}: {out}");
    }
    let o = wrapper("dsmmpicxx")
        .env("DSMMPI_CXX", "g++ -m64")
        .args(["-show", "a.cc"])
        .output()
        .expect("run dsmmpicxx");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("g++ -m64 -I"), "{out}");
}

/// As `CC` of a configure script the wrapper is in the environment as `CC`: it must not
/// call itself (it reads `DSMMPI_CC`), and a `DSMMPI_CC` naming it is refused.
#[test]
fn dsmmpicc_is_safe_as_cc() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-as-cc");
    let o = wrapper("dsmmpicc")
        .env("CC", here.join("dsmmpicc"))
        .env("DSMMPI_LIB_DIR", lib_dir())
        .arg("-o")
        .arg(&out)
        .arg(here.join("tests/c/p2p_coll.c"))
        .output()
        .expect("run dsmmpicc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = wrapper("dsmmpicc")
        .env("DSMMPI_CC", here.join("dsmmpicc"))
        .args(["-c", "x.c"])
        .output()
        .expect("run dsmmpicc");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("names this wrapper"));
}

/// `dsmmpicxx` compiles and links a C++ program that runs.
#[test]
fn dsmmpicxx_builds_a_cxx_program() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cxx-hello");
    let o = wrapper("dsmmpicxx")
        .env("DSMMPI_LIB_DIR", lib_dir())
        .args(["-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(here.join("tests/cxx/hello.cc"))
        .output()
        .expect("run dsmmpicxx (needs a C++ compiler)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run(&out, 2, "c++ ok");
}

/// `dsmmpi.pc.in`, filled in as `scripts/install.sh` does over an installed layout, gives
/// the flags that build a program.
#[test]
fn the_pkg_config_file_builds_a_program() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pc-prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    for d in ["include/dsmmpi", "lib/pkgconfig"] {
        std::fs::create_dir_all(prefix.join(d)).expect("create the prefix");
    }
    std::os::unix::fs::symlink(
        here.join("include/mpi.h"),
        prefix.join("include/dsmmpi/mpi.h"),
    )
    .expect("link mpi.h");
    // As installed: the library, its SONAME link (what the program loads) and the dev link.
    for name in ["libdsmmpi.so", "libdsmmpi.so.0"] {
        std::os::unix::fs::symlink(
            lib_dir().join("libdsmmpi.so"),
            prefix.join("lib").join(name),
        )
        .expect("link libdsmmpi.so");
    }
    let pc = std::fs::read_to_string(here.join("dsmmpi.pc.in"))
        .expect("read dsmmpi.pc.in")
        .replace("@PREFIX@", prefix.to_str().expect("utf-8 path"))
        .replace("@VERSION@", "0");
    std::fs::write(prefix.join("lib/pkgconfig/dsmmpi.pc"), pc).expect("write dsmmpi.pc");
    let o = Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .args(["--cflags", "--libs", "dsmmpi"])
        .output()
        .expect("run pkg-config");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let flags = String::from_utf8_lossy(&o.stdout).to_string();
    let out = prefix.join("p2p_coll");
    let o = Command::new("cc")
        .arg(here.join("tests/c/p2p_coll.c"))
        .arg("-o")
        .arg(&out)
        .args(flags.split_whitespace())
        .output()
        .expect("run cc");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    run(&out, 2, "c p2p and collectives ok");
}
