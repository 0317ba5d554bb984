//! Gives `libdsm.so` its SONAME, so that programs linked against it keep working when a
//! compatible release replaces the file (`scripts/install.sh` installs the versioned name and
//! the links), and leaves the link `libdsm.so.0 -> libdsm.so` in the target directory, so that a
//! program linked with `-L target/release -ldsm -Wl,-rpath,target/release` starts without an
//! install.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdsm.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/soname_link.rs");
    soname_link::in_target_dir("libdsm.so", &format!("libdsm.so.{major}"));
}

#[path = "build/soname_link.rs"]
mod soname_link;
