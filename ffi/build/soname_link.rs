//! Shared by the build scripts of `libdsm` and `libdsmmpi`: the SONAME link in the target
//! directory.

use std::path::{Path, PathBuf};

/// The directory cargo puts the final artifacts in (`target/<profile>`, or
/// `target/<triple>/<profile>`): three levels above this build script's `OUT_DIR`
/// (`<profile>/build/<package>-<hash>/out`).
fn profile_dir() -> Option<PathBuf> {
    let out = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let build = out.parent()?.parent()?;
    (build.file_name()? == "build").then(|| build.parent().map(Path::to_path_buf))?
}

/// Makes `<profile dir>/soname` a relative symbolic link to `file` (which the linker writes
/// after this script has run: the link dangles until then). Warns instead of failing: the
/// library itself does not need the link, only programs run from the target directory do.
pub fn in_target_dir(file: &str, soname: &str) {
    let Some(dir) = profile_dir() else {
        println!("cargo:warning=cannot tell the target directory from OUT_DIR: no {soname} link");
        return;
    };
    let link = dir.join(soname);
    if std::fs::read_link(&link).is_ok_and(|to| to == Path::new(file)) {
        return;
    }
    let _ = std::fs::remove_file(&link);
    if let Err(e) = std::os::unix::fs::symlink(file, &link) {
        println!("cargo:warning=cannot create {}: {e}", link.display());
    }
}
