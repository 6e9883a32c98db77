//! [`LocalDir`]: the content store as files under BACKING.
//!
//! ```text
//! BACKING/objects/XX/<ino as 16 hex>            object of inode <ino>, XX = ino & 0xff
//! BACKING/objects/XX/<ino as 16 hex>.attr.json  its sidecar
//! BACKING/objects/XX/.attr-json-tmp-*           a sidecar write in progress (or cut short)
//! BACKING/.artfs/import/                        staging for imports
//! ```
//!
//! Durability: an object's content is durable at `fsync` of its file
//! (`fsync(2)`/`fdatasync(2)`). Its name, made by `create_new` or
//! `open_or_create`, gets no directory fsync of its own: on the journalling
//! filesystems BACKING is meant for (ext4, xfs) fsync of a new file also
//! commits the entry that created it, so a create costs no extra fsync. An
//! object never synced may vanish in a crash; the core relies on it only
//! while it records no content (see the module docs of `blob`). `adopt`
//! renames into place and fsyncs the fan-out directory. Sidecars are
//! written by `sidecar::write_atomic_with`; `sync_all` is one `syncfs` of
//! BACKING's filesystem for a whole batch of them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::sidecar::{self, AttrJson, DirSync, Parsed, SidecarError};
use super::{ContentStore, FoundSidecar, NewVersion, ObjectStat, Space};

pub struct LocalDir {
    /// `BACKING/objects`.
    root: PathBuf,
    /// `BACKING/.artfs/import`.
    staging: PathBuf,
}

/// Where imports stage content, under BACKING.
const STAGING_DIR: &str = ".artfs/import";

impl LocalDir {
    /// Open the object area under `backing`, creating the fan-out directories.
    pub fn open(backing: &Path) -> io::Result<LocalDir> {
        let root = backing.join("objects");
        for i in 0..=255u8 {
            let dir = root.join(format!("{i:02x}"));
            std::fs::create_dir_all(&dir).map_err(|e| {
                // A dangling `objects` link (shared content not mounted)
                // says only "File exists" otherwise.
                io::Error::new(e.kind(), format!("{}: {e}", dir.display()))
            })?;
        }
        Ok(LocalDir {
            root,
            staging: backing.join(STAGING_DIR),
        })
    }

    fn dir_of(&self, ino: u64) -> PathBuf {
        self.root.join(format!("{:02x}", ino & 0xff))
    }

    /// The object file of `ino`.
    fn path(&self, ino: u64) -> PathBuf {
        self.dir_of(ino).join(format!("{ino:016x}"))
    }

    /// The `attr.json` sidecar beside object `ino` (see `sidecar`).
    fn sidecar_path(&self, ino: u64) -> PathBuf {
        self.dir_of(ino)
            .join(format!("{ino:016x}{}", sidecar::SUFFIX))
    }

    fn open_with(&self, ino: u64, opts: &mut OpenOptions) -> io::Result<File> {
        opts.read(true)
            .write(true)
            // The object's atime means nothing; don't pay for updating it.
            .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC)
            .open(self.path(ino))
    }
}

/// Remove `BACKING/.artfs/pool`, where an earlier version kept objects
/// made ahead of need (empty files, never part of the store).
pub fn remove_legacy_pool(backing: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(backing.join(".artfs").join("pool")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Ok for a removal of something already gone.
fn gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl ContentStore for LocalDir {
    fn open_rw(&self, ino: u64) -> io::Result<File> {
        self.open_with(ino, &mut OpenOptions::new())
    }

    fn open_read(&self, ino: u64) -> io::Result<File> {
        File::open(self.path(ino))
    }

    fn open_or_create(&self, ino: u64) -> io::Result<File> {
        self.open_with(ino, OpenOptions::new().create(true).truncate(false))
    }

    fn create_new(&self, ino: u64) -> io::Result<File> {
        self.open_with(ino, OpenOptions::new().create_new(true))
    }

    fn adopt(&self, ino: u64, staged: &Path) -> io::Result<ObjectStat> {
        let object = self.path(ino);
        if object.symlink_metadata().is_ok() {
            // rename(2) would replace it: an object is never overwritten.
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        std::fs::rename(staged, &object)?;
        let placed = std::fs::metadata(&object)
            .and_then(|m| sidecar::sync_dir(&self.dir_of(ino)).map(|()| ObjectStat::of(&m)));
        if placed.is_err() {
            let _ = std::fs::remove_file(&object);
        }
        placed
    }

    fn fsync(&self, _ino: u64, file: &File, data_only: bool) -> io::Result<Option<NewVersion>> {
        if data_only {
            file.sync_data()?;
        } else {
            file.sync_all()?;
        }
        Ok(None)
    }

    fn stat(&self, ino: u64) -> io::Result<Option<ObjectStat>> {
        match std::fs::metadata(self.path(ino)) {
            Ok(m) => Ok(Some(ObjectStat::of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn writers(&self, ino: u64) -> io::Result<Option<super::lease::Writers>> {
        super::lease::probe(&self.path(ino))
    }

    fn remove(&self, ino: u64) -> io::Result<()> {
        gone(std::fs::remove_file(self.path(ino)))
    }

    fn list(&self) -> io::Result<(Vec<u64>, Vec<PathBuf>)> {
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

    fn location(&self, ino: u64) -> String {
        self.path(ino).display().to_string()
    }

    fn read_sidecar(&self, ino: u64) -> Result<Option<Parsed>, SidecarError> {
        match std::fs::read(self.sidecar_path(ino)) {
            Ok(bytes) => AttrJson::parse(&bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write_sidecar(&self, ino: u64, doc: &AttrJson, when: DirSync) -> io::Result<()> {
        sidecar::write_atomic_with(&self.sidecar_path(ino), doc, when)
    }

    fn remove_sidecar(&self, ino: u64) -> io::Result<()> {
        gone(std::fs::remove_file(self.sidecar_path(ino)))
    }

    fn sidecars(&self) -> Box<dyn Iterator<Item = FoundSidecar> + '_> {
        Box::new(sidecar::scan(&self.root).map(|(path, parsed)| {
            FoundSidecar {
                ino: path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(sidecar::SUFFIX))
                    .and_then(|n| u64::from_str_radix(n, 16).ok()),
                path,
                parsed,
            }
        }))
    }

    fn sweep_temp(&self) -> io::Result<usize> {
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

    fn sync_all(&self) -> io::Result<()> {
        let f = File::open(&self.root)?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)).map_err(io::Error::from)
    }

    fn staging_dir(&self) -> PathBuf {
        self.staging.clone()
    }

    fn space(&self) -> io::Result<Space> {
        Space::of(&self.root)
    }

    fn check_ready(&self) -> io::Result<()> {
        nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        // A fan-out directory: where objects are made.
        nix::unistd::access(&self.dir_of(0), nix::unistd::AccessFlags::W_OK)
            .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::conformance::{self, Faults};

    #[test]
    fn local_dir_conforms() {
        let backing = tempfile::tempdir().unwrap();
        let store = LocalDir::open(backing.path()).unwrap();
        let n = std::cell::Cell::new(0);
        let interrupt = |ino: u64| {
            // What `sidecar::write_atomic` leaves when cut short.
            n.set(n.get() + 1);
            let tmp =
                store
                    .dir_of(ino)
                    .join(format!("{}crashed-{}", sidecar::TEMP_PREFIX, n.get()));
            std::fs::write(tmp, b"{\"file_id\":").unwrap();
        };
        let damage = |ino: u64| std::fs::write(store.sidecar_path(ino), b"{ not json").unwrap();
        conformance::run(
            &store,
            &Faults {
                interrupt_sidecar_write: Some(&interrupt),
                damage_sidecar: &damage,
            },
        );
    }

    /// The layout on disk is a contract too (docs/ARCHITECTURE.md, fsck,
    /// rebuild from a copied BACKING).
    #[test]
    fn objects_live_under_backing_objects_by_low_byte() {
        let backing = tempfile::tempdir().unwrap();
        // As the core opens it.
        let store = crate::blob::open(backing.path(), &crate::blob::Content::Local, false).unwrap();
        store.create_new(0x1234_56ab).unwrap();
        store
            .write_sidecar(
                0x1234_56ab,
                &AttrJson::new(uuid::Uuid::nil().to_string()),
                DirSync::Now,
            )
            .unwrap();
        let dir = backing.path().join("objects/ab");
        assert!(dir.join("00000000123456ab").is_file());
        assert!(dir.join("00000000123456ab.attr.json").is_file());
        assert_eq!(
            store.location(0x1234_56ab),
            dir.join("00000000123456ab").display().to_string()
        );
        assert_eq!(store.staging_dir(), backing.path().join(".artfs/import"));
        for i in 0..=255u8 {
            assert!(backing.path().join(format!("objects/{i:02x}")).is_dir());
        }
    }

    /// Names that are not objects are reported as strays, never removed;
    /// an object in the wrong fan-out directory is one.
    #[test]
    fn strays_are_listed_and_left() {
        let backing = tempfile::tempdir().unwrap();
        let store = LocalDir::open(backing.path()).unwrap();
        store.create_new(0x105).unwrap();
        let objects = backing.path().join("objects");
        let stray = [
            objects.join("05/notes.txt"),
            objects.join("06/0000000000000105"),
            objects.join("05/105"),
        ];
        for p in &stray {
            std::fs::write(p, b"x").unwrap();
        }
        let (inos, mut found) = store.list().unwrap();
        assert_eq!(inos, vec![0x105]);
        found.sort();
        let mut want = stray.to_vec();
        want.sort();
        assert_eq!(found, want);
        assert_eq!(store.sweep_temp().unwrap(), 0);
        assert!(stray.iter().all(|p| p.exists()));
    }

    #[test]
    fn legacy_pool_is_removed() {
        let backing = tempfile::tempdir().unwrap();
        let pool = backing.path().join(".artfs/pool");
        std::fs::create_dir_all(&pool).unwrap();
        std::fs::write(pool.join("x"), b"").unwrap();
        remove_legacy_pool(backing.path()).unwrap();
        assert!(!pool.exists());
        remove_legacy_pool(backing.path()).expect("already gone is fine");
    }
}
