//! `DSM_PROFILE` on a real 2-node job with known sharing (`dsm-profile-check`): the profiles
//! say how many phases there were, which page is falsely and which truly shared, and rank 0
//! draws the picture.

use std::time::Duration;

use serde_json::Value;
use tests::run_job;

const CHECK: &str = env!("CARGO_BIN_EXE_dsm-profile-check");

fn read(dir: &std::path::Path, name: &str) -> Value {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The shared page whose name starts with `prefix`.
fn shared<'a>(merged: &'a Value, prefix: &str) -> &'a Value {
    merged["shared_pages"]
        .as_array()
        .expect("shared_pages")
        .iter()
        .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no shared page {prefix}: {merged:#}"))
}

#[test]
fn the_profile_finds_phases_and_false_and_true_sharing() {
    let dir = std::env::temp_dir().join(format!("dsm-profile-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.to_str().expect("a UTF-8 temporary directory");
    let r = run_job(
        CHECK,
        2,
        &[],
        &[("DSM_GLOBAL_SIZE", "256M"), ("DSM_PROFILE", path)],
        Duration::from_secs(120),
    );
    assert_eq!(r.exit_code, 0, "{:?}\n{}", r.failure, r.output);
    assert!(r.output.contains("dsm profile:"), "{}", r.output);
    for rank in 0..2 {
        let node = read(&dir, &format!("dsm-profile-{rank}.json"));
        let phases = node["phases"].as_array().expect("phases");
        // Three barriers of the program and the one of finalize.
        assert_eq!(phases.len(), 4, "{node:#}");
        assert_eq!(phases[1]["lock_waits"], 10, "{node:#}");
        assert_eq!(node["allocations"].as_array().map(Vec::len), Some(3));
    }
    let merged = read(&dir, "dsm-profile.json");
    let halves = shared(&merged, "alloc 0 ");
    assert_eq!(halves["sharing"], "false", "{halves:#}");
    assert!(halves["name"].as_str().unwrap().ends_with("+0x0"));
    let counter = shared(&merged, "alloc 1 ");
    assert_eq!(counter["sharing"], "true", "{counter:#}");
    assert_eq!(merged["sharing"]["false"], 1, "{merged:#}");
    assert_eq!(merged["sharing"]["true"], 1, "{merged:#}");
    let html = std::fs::read_to_string(dir.join("dsm-profile.html")).expect("the picture");
    assert!(html.contains("<svg") && html.contains("Hottest pages"));
    let _ = std::fs::remove_dir_all(&dir);
}
