//! Gives `libdsm.so` its SONAME, so that programs linked against it keep working when a
//! compatible release replaces the file (`scripts/install.sh` installs the versioned name and
//! the links).

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdsm.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
}
