//! Gives `libdsmmpi.so` its SONAME (`libdsmmpi.so.<major>`), as `libdsm.so` has, and leaves the
//! link `libdsmmpi.so.<major> -> libdsmmpi.so` in the target directory, so that a program linked
//! with `-L target/release -ldsmmpi -Wl,-rpath,target/release` (what `dsmmpicc` does) starts
//! without an install.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libdsmmpi.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../ffi/build/soname_link.rs");
    soname_link::in_target_dir("libdsmmpi.so", &format!("libdsmmpi.so.{major}"));
}

#[path = "../../ffi/build/soname_link.rs"]
mod soname_link;
