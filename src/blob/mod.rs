//! Object files under `BACKING/objects/`: one per regular file inode, named
//! after the inode number (never reused), fanned out over 256 directories.
//!
//! An object is never created by opening it: a regular file with content
//! recorded (size > 0) whose object is absent lost it, and the core answers
//! EIO (see `core::data::open_object`). Only a file that records no content
//! (size 0: made by mknod, or by a create whose object was never made) may
//! lack its object; the core then makes it empty.

pub mod ballast;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub mod sidecar;

pub struct ObjectStore {
    root: PathBuf,
}

impl ObjectStore {
    /// Open the object area under `backing`, creating the fan-out directories.
    pub fn open(backing: &Path) -> io::Result<ObjectStore> {
        let root = backing.join("objects");
        for i in 0..=255u8 {
            std::fs::create_dir_all(root.join(format!("{i:02x}")))?;
        }
        Ok(ObjectStore { root })
    }

    /// The object area (`BACKING/objects`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, ino: u64) -> PathBuf {
        self.root
            .join(format!("{:02x}", ino & 0xff))
            .join(format!("{ino:016x}"))
    }

    /// The `attr.json` sidecar beside object `ino` (see `sidecar`).
    pub fn sidecar_path(&self, ino: u64) -> PathBuf {
        self.root
            .join(format!("{:02x}", ino & 0xff))
            .join(format!("{ino:016x}{}", sidecar::SUFFIX))
    }

    /// Open an existing object for reading and writing (NotFound when it
    /// is absent: never created here).
    pub fn open_rw(&self, ino: u64) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            // The object's atime means nothing; don't pay for updating it.
            .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC)
            .open(self.path(ino))
    }

    /// Open object `ino` read-write, creating it empty if absent: only for
    /// a file that records no content (see the module docs).
    pub fn open_or_create(&self, ino: u64) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC)
            .open(self.path(ino))
    }

    /// Create object `ino`, which must not exist yet, open read-write
    /// (objects made ahead of need, see `core::objpool`).
    pub fn create_new(&self, ino: u64) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC)
            .open(self.path(ino))
    }

    /// Remove `BACKING/.artfs/pool`, where an earlier version kept objects
    /// made ahead of need (empty files, never part of the store).
    pub fn remove_legacy_pool(&self) -> io::Result<()> {
        match std::fs::remove_dir_all(self.root.with_file_name(".artfs").join("pool")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Metadata of an object, `None` when it does not exist.
    pub fn stat(&self, ino: u64) -> io::Result<Option<std::fs::Metadata>> {
        match std::fs::metadata(self.path(ino)) {
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object present, as inode numbers (a whole-store scan, for
    /// fsck). Names that are not objects are returned as stray paths.
    pub fn list(&self) -> io::Result<(Vec<u64>, Vec<PathBuf>)> {
        let mut inos = Vec::new();
        let mut stray = Vec::new();
        for i in 0..=255u8 {
            let dir = self.root.join(format!("{i:02x}"));
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in entries {
                let e = e?;
                let name = e.file_name();
                if sidecar::is_temp_name(&name) {
                    // A sidecar write cut short; swept after a crash.
                    continue;
                }
                let name = name.to_string_lossy();
                // `<ino>` is an object; `<ino>.<suffix>` belongs to one
                // (its attr.json sidecar, or a temp file of an atomic write).
                let (stem, aux) = match name.split_once('.') {
                    Some((stem, _)) => (stem, true),
                    None => (&*name, false),
                };
                let parsed = Some(stem)
                    .filter(|n| n.len() == 16)
                    .and_then(|n| u64::from_str_radix(n, 16).ok())
                    .filter(|ino| ino & 0xff == u64::from(i));
                match parsed {
                    Some(_) if aux => {}
                    Some(ino) => inos.push(ino),
                    None => stray.push(e.path()),
                }
            }
        }
        inos.sort_unstable();
        Ok((inos, stray))
    }

    /// Delete temp files of sidecar writes cut short by a crash.
    pub fn sweep_temp(&self) -> io::Result<usize> {
        let mut n = 0;
        for i in 0..=255u8 {
            let dir = self.root.join(format!("{i:02x}"));
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries {
                let e = e?;
                if sidecar::is_temp_name(&e.file_name()) {
                    std::fs::remove_file(e.path())?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Remove an object; a missing one is already gone.
    pub fn remove(&self, ino: u64) -> io::Result<()> {
        match std::fs::remove_file(self.path(ino)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Backing filesystem figures (for statfs).
    pub fn statvfs(&self) -> io::Result<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)
    }
}

/// Write a small state file atomically: temp file, fsync, rename, fsync
/// of the directory (the store id, the mode file).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
