//! The checked-in `include/dsm.h` is exactly what cbindgen generates from the sources.

use std::path::Path;

#[test]
fn header_is_current() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("config");
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut fresh);
    let path = crate_dir.join("include/dsm.h");
    if std::env::var_os("DSM_BLESS_HEADER").is_some() {
        std::fs::write(&path, &fresh).expect("write include/dsm.h");
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "include/dsm.h differs from a fresh generation: run \
         `DSM_BLESS_HEADER=1 cargo test -p dsm-ffi --test header` and commit the result"
    );
}
