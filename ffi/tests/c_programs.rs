//! C programs against `include/dsm.h` and `libdsm`: the C tests (every function, every error
//! path) and the examples, compiled with the system's C compiler and run as real multi-node
//! jobs through the launcher, each with a hard timeout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use dsm_launcher::{launch, LaunchOptions, Report};

/// The directory holding `libdsm.so`: where cargo put this test's dependencies' artifacts.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/c_programs-<hash> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    tests::build_cdylib(dir, "dsm-ffi");
    assert!(
        dir.join("libdsm.so").exists(),
        "libdsm.so is missing from {}",
        dir.display()
    );
    dir.to_path_buf()
}

/// Compiles `source` (relative to the crate) with warnings as errors, once per test process
/// (tests run in parallel and several use the same program: none may overwrite a binary another
/// is running); returns the program.
fn compile(source: &'static str) -> PathBuf {
    static COMPILED: Mutex<BTreeMap<&'static str, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    compiled
        .entry(source)
        .or_insert_with(|| compile_now(source))
        .clone()
}

fn compile_now(source: &str) -> PathBuf {
    let krate = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = library_dir();
    let out_dir = lib.join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("create the output directory");
    // The library's SONAME is `libdsm.so.0` (as installed); the programs find it here.
    let soname = out_dir.join("libdsm.so.0");
    match std::os::unix::fs::symlink(lib.join("libdsm.so"), &soname) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        r => r.expect("link libdsm.so.0"),
    }
    let name = Path::new(source).file_stem().unwrap().to_str().unwrap();
    let program = out_dir.join(name);
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-g", "-O1"])
        .args(["-Wall", "-Wextra", "-Werror"])
        .arg("-I")
        .arg(krate.join("include"))
        .arg("-I")
        .arg(krate.join("tests/c"))
        .arg(krate.join(source))
        .arg("-o")
        .arg(&program)
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", out_dir.display()))
        .args(["-ldsm", "-lm"])
        .status()
        .expect("run the C compiler (cc)");
    assert!(status.success(), "{source} does not compile");
    program
}

fn run(program: &Path, nodes: usize, args: &[&str], wrapper: &[&str]) -> Report {
    let (exe, mut all): (PathBuf, Vec<String>) = match wrapper.split_first() {
        Some((w, rest)) => (
            PathBuf::from(w),
            rest.iter()
                .map(|s| s.to_string())
                .chain([program.display().to_string()])
                .collect(),
        ),
        None => (program.to_path_buf(), Vec::new()),
    };
    all.extend(args.iter().map(|s| s.to_string()));
    let mut o = LaunchOptions::new(nodes, exe);
    o.args = all.into_iter().map(Into::into).collect();
    o.timeout = Some(Duration::from_secs(120));
    o.capture_output = true;
    o.grace = Duration::from_secs(2);
    launch(o).expect("start the job").wait()
}

fn assert_every_rank_says(r: &Report, nodes: usize, what: &str) {
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    for rank in 0..nodes {
        assert!(
            r.output.contains(&format!("rank {rank}: {what}")),
            "rank {rank} did not say {what:?}:\n{}",
            r.output
        );
    }
}

#[test]
fn every_function_works_on_two_to_four_nodes() {
    let api = compile("tests/c/api.c");
    for nodes in [2, 3, 4] {
        let r = run(&api, nodes, &[], &[]);
        assert_every_rank_says(&r, nodes, "api ok");
    }
}

#[test]
fn a_single_node_job_works() {
    let api = compile("tests/c/api.c");
    assert_every_rank_says(&run(&api, 1, &[], &[]), 1, "api ok");
}

#[test]
fn every_misuse_gives_its_documented_error() {
    let errors = compile("tests/c/errors.c");
    for nodes in [1, 2, 4] {
        let r = run(&errors, nodes, &[], &[]);
        assert_every_rank_says(&r, nodes, "errors ok");
    }
}

#[test]
fn semaphores_condition_variables_and_placement_on_a_node_work_on_one_to_four_nodes() {
    let sync2 = compile("tests/c/sync2.c");
    for nodes in [1, 2, 4] {
        let r = run(&sync2, nodes, &[], &[]);
        assert_every_rank_says(&r, nodes, "sync2 ok");
    }
}

#[test]
fn a_c_program_checkpoints_and_resumes_where_it_stopped() {
    let restart = compile("tests/c/restart.c");
    for nodes in [1, 3] {
        let dir =
            std::env::temp_dir().join(format!("dsm-c-restart-{}-{nodes}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let job = |steps: &str, again: bool| {
            let mut o = LaunchOptions::new(nodes, &restart);
            o.args = vec![steps.into()];
            o.env = vec![
                (
                    "DSM_CHECKPOINT_DIR".into(),
                    format!("{}/%r", dir.display()).into(),
                ),
                ("DSM_GLOBAL_SIZE".into(), "256M".into()),
            ];
            if again {
                o.env.push(("DSM_RESTART".into(), "1".into()));
            }
            o.timeout = Some(Duration::from_secs(120));
            o.capture_output = true;
            o.grace = Duration::from_secs(2);
            launch(o).expect("start the job").wait()
        };
        assert_every_rank_says(&job("10", false), nodes, "restart ok after 10 steps");
        let r = job("20", true);
        assert_every_rank_says(&r, nodes, "resumed from epoch 2 at step 10");
        assert_every_rank_says(&r, nodes, "restart ok after 20 steps");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_program_run_without_a_launcher_gets_a_clear_error() {
    let hello = compile("examples/hello.c");
    // (`timeout`: a hang must fail the test, not stall it.)
    let out = Command::new("timeout")
        .args(["-k", "5", "60"])
        .arg(&hello)
        .env_remove("DSM_RANK")
        .env_remove("DSM_NODES")
        .output()
        .expect("run hello");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("DSM_ERR_CONFIG") && stderr.contains("dsmrun -n N"),
        "{stderr}"
    );
}

#[test]
fn the_examples_give_verified_results_on_four_nodes() {
    let r = run(&compile("examples/hello.c"), 4, &[], &[]);
    assert_every_rank_says(&r, 4, "");
    assert_eq!(r.output.matches("add up to 14").count(), 4, "{}", r.output);
    let r = run(&compile("examples/counter.c"), 4, &["200"], &[]);
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    assert_eq!(
        r.output
            .matches("counter 800, atomic 800, expected 800: ok")
            .count(),
        4,
        "{}",
        r.output
    );
    let r = run(&compile("examples/stencil.c"), 4, &["128", "10"], &[]);
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    assert_eq!(
        r.output.matches("max difference from serial 0: ok").count(),
        4,
        "{}",
        r.output
    );
}

#[test]
fn valgrind_finds_no_invalid_access_and_no_leak_on_one_node() {
    let valgrind = Command::new("valgrind").arg("--version").output();
    assert!(
        valgrind.is_ok_and(|o| o.status.success()),
        "valgrind is not installed: run scripts/setup.sh"
    );
    let memcheck = [
        "valgrind",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--quiet",
    ];
    for (source, args, says) in [
        ("examples/hello.c", &[][..], "add up to 0"),
        ("examples/counter.c", &["100"][..], "expected 100: ok"),
        ("examples/stencil.c", &["64", "5"][..], "from serial 0: ok"),
        ("tests/c/api.c", &[][..], "api ok"),
        ("tests/c/errors.c", &[][..], "errors ok"),
        ("tests/c/sync2.c", &[][..], "sync2 ok"),
    ] {
        let r = run(&compile(source), 1, args, &memcheck);
        assert_eq!(r.exit_code, 0, "{source}: {:?}\n{}", r.failure, r.output);
        assert!(r.output.contains(says), "{source}:\n{}", r.output);
        assert!(
            !r.output.contains("=="),
            "{source}: valgrind said:\n{}",
            r.output
        );
    }
}

/// Expands a PARMACS program with the shipped macro file (`parmacs/dsm.m4`), as a user does
/// (`m4 -Ulen -Uindex`), and compiles the result; returns the program.
fn compile_parmacs(source: &'static str) -> PathBuf {
    let krate = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = library_dir().join("c-tests");
    std::fs::create_dir_all(&out_dir).expect("create the output directory");
    let stem = Path::new(source).file_stem().unwrap().to_str().unwrap();
    let expanded = out_dir
        .join(stem.trim_end_matches(".c"))
        .with_extension("c");
    let out = Command::new("m4")
        .args(["-Ulen", "-Uindex"])
        .arg(krate.join("parmacs/dsm.m4"))
        .arg(krate.join(source))
        .output()
        .expect("run m4");
    assert!(
        out.status.success(),
        "m4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&expanded, &out.stdout).expect("write the expanded program");
    let leaked: &'static str = Box::leak(expanded.display().to_string().into_boxed_str());
    compile(leaked)
}

#[test]
fn parmacs_programs_behave_as_on_threads_on_one_two_and_four_nodes() {
    let check = compile_parmacs("tests/parmacs/check.c.in");
    for nodes in [1, 2, 4] {
        for p in [nodes, 2 * nodes, nodes + 1] {
            let r = run(&check, nodes, &[&format!("-p{p}")], &[]);
            assert_eq!(
                r.exit_code, 0,
                "{nodes} nodes, P={p}: {:?}\n{}",
                r.failure, r.output
            );
            let ok = format!("parmacs check ok P={p}");
            assert_eq!(
                r.output.matches(&ok).count(),
                1,
                "{nodes} nodes, P={p}: main (rank 0 only) reports once:\n{}",
                r.output
            );
        }
    }
}
