//! Every program of the application suite, at its quick size, on a 2-node job through the
//! launcher (hard timeout), checked against its serial run (`app_bench PROGRAM --quick
//! --verify`), and on 2 threads.

use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_app_bench");

fn on_two_nodes(program: &str) {
    let mut o = dsm_launcher::LaunchOptions::new(2, APP);
    o.args = vec![program.into(), "--quick".into(), "--verify".into()];
    o.timeout = Some(Duration::from_secs(60));
    o.capture_output = true;
    o.grace = Duration::from_secs(2);
    let r = dsm_launcher::launch(o).expect("start the job").wait();
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    assert!(r.output.contains("matches the serial run"), "{}", r.output);
    let threads = std::process::Command::new(APP)
        .args([program, "--quick", "--verify", "--threads", "2"])
        .output()
        .expect("run app_bench on threads");
    assert!(
        threads.status.success(),
        "{}{}",
        String::from_utf8_lossy(&threads.stdout),
        String::from_utf8_lossy(&threads.stderr)
    );
}

#[test]
fn fft_verifies_on_two_nodes() {
    on_two_nodes("fft");
}

#[test]
fn lu_verifies_on_two_nodes() {
    on_two_nodes("lu");
}

#[test]
fn radix_verifies_on_two_nodes() {
    on_two_nodes("radix");
}

#[test]
fn stencil_verifies_on_two_nodes() {
    on_two_nodes("stencil");
}

#[test]
fn nbody_verifies_on_two_nodes() {
    on_two_nodes("nbody");
}
