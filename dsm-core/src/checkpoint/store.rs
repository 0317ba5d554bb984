//! The files of checkpoints on one node: each epoch is a directory `epoch-NNNNNNNNNN` in the
//! node's checkpoint directory (`DSM_CHECKPOINT_DIR`, `%r` expanded to the rank), holding the
//! node's own image `rank-R.img`, the copy it keeps of its partner's image `rank-Q.copy` (Q is
//! the rank before it), and last its manifest `MANIFEST-R`, which names both files with their
//! lengths and checksums. Every file is written under a temporary name, flushed (`fsync`) and
//! renamed into place; the manifest goes last, then the directory is flushed: an epoch
//! directory without a manifest, or whose files do not match it, is not used.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::image::sealed_checksum;

/// The manifest's first line.
const MANIFEST_HEADER: &str = "dsm-checkpoint 1";

/// What a node's manifest of one epoch says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// The epoch.
    pub(crate) epoch: u64,
    /// The full epoch its chain starts at.
    pub(crate) chain_start: u64,
    /// The job's size.
    pub(crate) nodes: u64,
    /// The node that wrote it.
    pub(crate) rank: u64,
    /// Where global memory was mapped, and its size.
    pub(crate) global_base: u64,
    /// The size of global memory.
    pub(crate) global_size: u64,
    /// The program that wrote it ([`program_identity`]).
    pub(crate) program: String,
    /// The node's own image: length and checksum.
    pub(crate) own: (u64, u64),
    /// The copy of the partner's image it keeps (absent in a job of one node).
    pub(crate) copy: Option<(u64, u64)>,
}

impl Manifest {
    fn encode(&self) -> String {
        let mut s = format!(
            "{MANIFEST_HEADER}\nepoch {}\nchain-start {}\nnodes {}\nrank {}\nglobal-base {}\n\
             global-size {}\nprogram {}\nown {} {}\n",
            self.epoch,
            self.chain_start,
            self.nodes,
            self.rank,
            self.global_base,
            self.global_size,
            self.program,
            self.own.0,
            self.own.1
        );
        if let Some((len, h)) = self.copy {
            s.push_str(&format!("copy {len} {h}\n"));
        }
        s
    }

    fn decode(text: &str) -> Result<Manifest, String> {
        let mut lines = text.lines();
        if lines.next() != Some(MANIFEST_HEADER) {
            return Err("not a manifest".into());
        }
        let mut m = Manifest {
            epoch: 0,
            chain_start: 0,
            nodes: 0,
            rank: 0,
            global_base: 0,
            global_size: 0,
            program: String::new(),
            own: (0, 0),
            copy: None,
        };
        let mut seen = 0;
        for line in lines {
            let (key, value) = line.split_once(' ').ok_or(format!("bad line {line:?}"))?;
            let num = |v: &str| v.parse::<u64>().map_err(|_| format!("bad line {line:?}"));
            let pair = |v: &str| -> Result<(u64, u64), String> {
                let (a, b) = v.split_once(' ').ok_or(format!("bad line {line:?}"))?;
                Ok((num(a)?, num(b)?))
            };
            match key {
                "epoch" => m.epoch = num(value)?,
                "chain-start" => m.chain_start = num(value)?,
                "nodes" => m.nodes = num(value)?,
                "rank" => m.rank = num(value)?,
                "global-base" => m.global_base = num(value)?,
                "global-size" => m.global_size = num(value)?,
                "program" => m.program = value.to_string(),
                "own" => m.own = pair(value)?,
                "copy" => m.copy = Some(pair(value)?),
                _ => return Err(format!("unknown line {line:?}")),
            }
            seen += 1;
        }
        if seen < 8 {
            return Err("incomplete".into());
        }
        Ok(m)
    }
}

/// What this program is, as far as a restart must match it: its executable's file name and
/// length.
pub(crate) fn program_identity() -> String {
    let Ok(exe) = std::env::current_exe() else {
        return "unknown".into();
    };
    let name = exe
        .file_name()
        .map_or("unknown".into(), |n| n.to_string_lossy().replace(' ', "_"));
    let len = fs::metadata(&exe).map_or(0, |m| m.len());
    format!("{name}:{len}")
}

/// What one node's directory holds of one epoch.
#[derive(Debug, Clone)]
pub(crate) struct EpochFiles {
    /// The manifest.
    pub(crate) manifest: Manifest,
    /// Whether the own image matches the manifest, or why not.
    pub(crate) own: Result<(), String>,
    /// Whether the partner's copy matches the manifest, or why not.
    pub(crate) copy: Result<(), String>,
}

/// The checkpoint files of one node.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    template: String,
    rank: usize,
}

/// A file being written under a temporary name; [`PendingFile::finish`] flushes it and renames
/// it into place.
#[derive(Debug)]
pub(crate) struct PendingFile {
    file: fs::File,
    tmp: PathBuf,
    dest: PathBuf,
}

impl PendingFile {
    fn create(dir: &Path, name: &str) -> std::io::Result<PendingFile> {
        let tmp = dir.join(format!(".{name}.tmp"));
        Ok(PendingFile {
            file: fs::File::create(&tmp)?,
            tmp,
            dest: dir.join(name),
        })
    }

    /// Appends `bytes`.
    ///
    /// # Errors
    /// The file system's.
    pub(crate) fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)
    }

    /// Flushes the file (`fsync`) and renames it into place.
    ///
    /// # Errors
    /// The file system's.
    pub(crate) fn finish(self) -> std::io::Result<()> {
        self.file.sync_all()?;
        drop(self.file);
        fs::rename(&self.tmp, &self.dest)
    }
}

/// Writes `bytes` to `dir/name` through a temporary file, flushed before the rename.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = PendingFile::create(dir, name)?;
    f.write(bytes)?;
    f.finish()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl Store {
    /// The files of node `rank` under the directory template (`%r`: the rank).
    pub(crate) fn new(template: &str, rank: usize) -> Store {
        Store {
            template: template.to_string(),
            rank,
        }
    }

    /// This node's checkpoint directory.
    pub(crate) fn dir(&self) -> PathBuf {
        PathBuf::from(self.template.replace("%r", &self.rank.to_string()))
    }

    fn epoch_dir(&self, epoch: u64) -> PathBuf {
        self.dir().join(format!("epoch-{epoch:010}"))
    }

    /// The file name of `rank`'s own image.
    pub(crate) fn own_name(rank: usize) -> String {
        format!("rank-{rank}.img")
    }

    /// The file name of the copy of `rank`'s image its partner keeps.
    pub(crate) fn copy_name(rank: usize) -> String {
        format!("rank-{rank}.copy")
    }

    fn manifest_name(&self) -> String {
        format!("MANIFEST-{}", self.rank)
    }

    /// A path of epoch `epoch`, for messages.
    pub(crate) fn path(&self, epoch: u64, name: &str) -> PathBuf {
        self.epoch_dir(epoch).join(name)
    }

    /// Writes one of the epoch's files (the own image, or the partner's copy), flushed.
    ///
    /// # Errors
    /// The file system's.
    pub(crate) fn write(&self, epoch: u64, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.epoch_dir(epoch);
        fs::create_dir_all(&dir)?;
        write_durably(&dir, name, bytes)
    }

    /// Starts one of the epoch's files, to be written piece by piece.
    ///
    /// # Errors
    /// The file system's.
    pub(crate) fn create(&self, epoch: u64, name: &str) -> std::io::Result<PendingFile> {
        let dir = self.epoch_dir(epoch);
        fs::create_dir_all(&dir)?;
        PendingFile::create(&dir, name)
    }

    /// Writes the epoch's manifest last, flushed with its directory: the epoch is complete on
    /// this node.
    ///
    /// # Errors
    /// The file system's.
    pub(crate) fn commit(&self, manifest: &Manifest) -> std::io::Result<()> {
        let dir = self.epoch_dir(manifest.epoch);
        write_durably(&dir, &self.manifest_name(), manifest.encode().as_bytes())?;
        sync_dir(&dir)?;
        sync_dir(&self.dir())
    }

    /// Reads one of the epoch's files (a sealed image: its bytes, then their checksum), checked
    /// against its manifest entry (length, checksum) and against its own checksum.
    ///
    /// # Errors
    /// A sentence naming the file and what is wrong.
    pub(crate) fn read(
        &self,
        epoch: u64,
        name: &str,
        expect: (u64, u64),
    ) -> Result<Vec<u8>, String> {
        let path = self.path(epoch, name);
        let bytes = fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if bytes.len() as u64 != expect.0 {
            return Err(format!(
                "{}: {} bytes, the manifest says {}",
                path.display(),
                bytes.len(),
                expect.0
            ));
        }
        if sealed_checksum(&bytes) != Some(expect.1) {
            return Err(format!(
                "{}: its checksum does not match the manifest",
                path.display()
            ));
        }
        Ok(bytes)
    }

    /// The epochs this node's directory has a directory of (whole or not), ascending.
    pub(crate) fn epochs(&self) -> Vec<u64> {
        let mut epochs: Vec<u64> = match fs::read_dir(self.dir()) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()?
                        .strip_prefix("epoch-")?
                        .parse::<u64>()
                        .ok()
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        epochs.sort_unstable();
        epochs
    }

    /// The epochs in this node's directory that have a manifest, oldest first, each with
    /// whether its files are whole. Unreadable manifests are skipped (said at `debug`).
    pub(crate) fn scan(&self) -> Vec<EpochFiles> {
        let mut out = Vec::new();
        for epoch in self.epochs() {
            let path = self.path(epoch, &self.manifest_name());
            let manifest = match fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|t| Manifest::decode(&t))
            {
                Ok(m) if m.epoch == epoch && m.rank == self.rank as u64 => m,
                Ok(_) => {
                    tracing::warn!("{}: names another epoch or rank; ignored", path.display());
                    continue;
                }
                Err(e) => {
                    tracing::debug!("{}: {e}; the epoch is incomplete here", path.display());
                    continue;
                }
            };
            let own = self
                .read(epoch, &Self::own_name(self.rank), manifest.own)
                .map(drop);
            let copy = match manifest.copy {
                Some(c) => {
                    let of =
                        (self.rank + manifest.nodes as usize - 1) % manifest.nodes.max(1) as usize;
                    self.read(epoch, &Self::copy_name(of), c).map(drop)
                }
                None => Err("no partner copy (a job of one node)".into()),
            };
            out.push(EpochFiles {
                manifest,
                own,
                copy,
            });
        }
        out
    }

    /// Removes the epochs before `epoch` from this node's directory.
    pub(crate) fn prune_before(&self, epoch: u64) {
        let Ok(rd) = fs::read_dir(self.dir()) else {
            return;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(n) = name.to_str().and_then(|n| n.strip_prefix("epoch-")) else {
                continue;
            };
            if n.parse::<u64>().is_ok_and(|n| n < epoch) {
                if let Err(err) = fs::remove_dir_all(e.path()) {
                    tracing::warn!("cannot remove {}: {err}", e.path().display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed(bytes: &[u8]) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b.extend_from_slice(&super::super::image::hash64(bytes).to_le_bytes());
        b
    }

    fn manifest(epoch: u64, own: &[u8]) -> Manifest {
        Manifest {
            epoch,
            chain_start: epoch,
            nodes: 2,
            rank: 0,
            global_base: 1 << 40,
            global_size: 1 << 30,
            program: "prog:10".into(),
            own: (own.len() as u64, super::super::image::trailer(own)),
            copy: None,
        }
    }

    #[test]
    fn an_epoch_counts_only_once_its_manifest_is_in_place_and_its_files_match() {
        let root = tempdir();
        let s = Store::new(&format!("{}/%r", root.display()), 0);
        let (three, four) = (sealed(b"three"), sealed(b"four"));
        s.write(3, &Store::own_name(0), &three).unwrap();
        assert!(s.scan().is_empty(), "no manifest yet");
        s.commit(&manifest(3, &three)).unwrap();
        s.write(4, &Store::own_name(0), &four).unwrap();
        s.commit(&manifest(4, &four)).unwrap();
        let scan = s.scan();
        assert_eq!(scan.len(), 2);
        assert!(scan.iter().all(|e| e.own.is_ok()));
        assert_eq!(
            Manifest::decode(&scan[1].manifest.encode()).unwrap(),
            scan[1].manifest
        );
        // A flipped byte, then a missing file.
        let mut bad = four.clone();
        bad[2] ^= 0x20;
        fs::write(s.path(4, &Store::own_name(0)), bad).unwrap();
        let why = s.scan()[1].own.clone().unwrap_err();
        assert!(why.contains("checksum"), "{why}");
        fs::remove_file(s.path(3, &Store::own_name(0))).unwrap();
        assert!(s.scan()[0].own.is_err());
        s.prune_before(4);
        assert_eq!(s.scan().len(), 1);
        fs::remove_dir_all(root).unwrap();
    }

    fn tempdir() -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "dsm-store-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }
}
