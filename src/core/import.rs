//! Adopting a file written by the original storage element (`artfs
//! import`): a regular file whose inode keeps the original's identity
//! (file_id, creation time, creator, original name) and whose archive
//! metadata (description, version, content type, retention, custom
//! attributes) becomes its extended attributes.
//!
//! The WAL protocol as for any new file, in three steps:
//! 1. the content is copied (or hard linked) into a staging area of BACKING
//!    (`.artfs/import/`), hashed from there, and fsynced; a checksum that
//!    does not match ends the import here, the staged file removed;
//! 2. under the mutation lock, a new inode number is allocated (the
//!    `reserve` intent covers it until its inode commits), the staged file
//!    is renamed to that number's object and the object's directory
//!    fsynced: the object is durable *before* anything refers to it;
//! 3. in the same critical section the inode, its entry, its attributes
//!    and one `import` record are staged; the writer commits them together.
//!
//! A crash after 2 leaves an object without an inode, which recovery of the
//! `reserve` row removes; a crash before leaves a file in the staging area,
//! which the next import clears. The copy itself runs outside the lock:
//! other mutations go on meanwhile.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use parking_lot::Mutex;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::archive_attrs::{self, Class};
use super::namespace::owner_in;
use super::namespace::{check_name, NewNode};
use super::Fs;
use crate::types::error::{eexist, einval, enotdir, Error, Result};
use crate::types::journal;
use crate::types::{Caller, Inode, Kind, Timestamp, ROOT_INO, XATTR_NAME_MAX, XATTR_SIZE_MAX};

/// What the original recorded about one file, as the import keeps it.
#[derive(Clone, Debug, Default)]
pub struct ImportMeta {
    /// The original's UUID; kept (normalised to lowercase, hyphenated).
    pub file_id: String,
    /// Kept as `original_name` (`user.artstore.original_filename`), byte
    /// for byte, whatever name the entry gets.
    pub original_filename: Vec<u8>,
    /// Becomes the inode's crtime (`user.artstore.created_at`).
    pub created_at: Timestamp,
    /// Becomes mtime (and atime); `None` takes `created_at`.
    pub updated_at: Option<Timestamp>,
    /// The original creator's username (`user.artstore.created_by`).
    pub created_by: String,
    /// SHA-256 (hex) the content must have. `None`: nothing to verify
    /// against; the computed hash is recorded.
    pub checksum: Option<String>,
    pub description: Option<String>,
    pub version: Option<String>,
    pub content_type: Option<String>,
    pub retention_until: Option<Timestamp>,
    /// Custom attributes, each stored as `user.<name>`.
    pub custom: Vec<(String, String)>,
}

/// What became of one import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported {
        ino: u64,
        size: u64,
        sha256: String,
        /// The object is a hard link to the source (else a copy).
        linked: bool,
        /// Things worth telling: metadata left out, link fallback.
        notes: Vec<String>,
    },
    /// A file with this file_id is already in the store (at `ino`).
    AlreadyPresent { ino: u64 },
    /// The content's SHA-256 is not the recorded checksum: nothing was
    /// imported, nothing left behind.
    ChecksumMismatch { expected: String, actual: String },
}

/// Imports check a file_id's absence and stage its inode under this lock,
/// so two imports of one file_id never both stage (the column is unique:
/// a duplicate would fail the writer's commit). Other creators draw fresh
/// UUIDs and cannot collide.
static IMPORTING: Mutex<()> = Mutex::new(());

/// The normalised (lowercase, hyphenated) form of a UUID.
fn normalise_file_id(id: &str) -> Result<String> {
    uuid::Uuid::try_parse(id.trim())
        .map(|u| u.to_string())
        .map_err(|_| einval("file_id is not a UUID"))
}

fn normalise_checksum(sum: &str) -> Result<String> {
    let s = sum.trim().to_ascii_lowercase();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(einval("checksum is not 64 hex digits"));
    }
    Ok(s)
}

/// The extended attributes an import sets, checked as `setxattr` would,
/// sorted. What cannot be kept is said in `notes`.
fn import_xattrs(meta: &ImportMeta, notes: &mut Vec<String>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut archive = |name: &str, value: &str, notes: &mut Vec<String>| {
        if value.is_empty() {
            return;
        }
        if value.len() > XATTR_SIZE_MAX {
            notes.push(format!("{name} left out: longer than 64 KiB"));
            return;
        }
        if let Err(e) = archive_attrs::validate(name, value.as_bytes()) {
            notes.push(format!("{name} {value:?} left out: {e}"));
            return;
        }
        let mut n = archive_attrs::PREFIX.to_vec();
        n.extend_from_slice(name.as_bytes());
        out.push((n, archive_attrs::normalise(name, value.as_bytes())));
    };
    if let Some(d) = &meta.description {
        archive("description", d, notes);
    }
    if let Some(v) = &meta.version {
        archive("version", v, notes);
    }
    if let Some(c) = &meta.content_type {
        archive("content_type", c, notes);
    }
    if let Some(r) = meta.retention_until {
        archive("retention_until", &r.to_rfc3339(), notes);
    }
    for (name, value) in &meta.custom {
        let full = format!("user.{name}");
        let why = if name.is_empty() {
            Some("empty name")
        } else if full.len() > XATTR_NAME_MAX {
            Some("name longer than 255 bytes as user.<name>")
        } else if name.contains('\0') {
            Some("name contains NUL")
        } else if archive_attrs::classify(full.as_bytes()) != Class::Other {
            Some("name of an archive attribute")
        } else if value.len() > XATTR_SIZE_MAX {
            Some("value longer than 64 KiB")
        } else if out.iter().any(|(n, _)| n == full.as_bytes()) {
            Some("duplicate name")
        } else {
            None
        };
        match why {
            Some(w) => notes.push(format!("custom attribute {name:?} left out: {w}")),
            None => out.push((full.into_bytes(), value.clone().into_bytes())),
        }
    }
    out.sort();
    out
}

/// Copy `src` into `dst` (which must not exist), hashing on the way, and
/// make it durable; returns (size, sha256 hex).
fn copy_hashing(src: &Path, dst: &Path, mtime: Timestamp) -> std::io::Result<(u64, String)> {
    let mut from = File::open(src)?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dst)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])?;
        size += n as u64;
    }
    // The object's own mtime agrees with the inode's (recovery compares
    // them). A linked object is the source's and is left alone.
    to.set_modified(mtime.to_system())?;
    to.sync_all()?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// Hash a file already in place (a hard link to the source) and make it
/// durable; returns (size, sha256 hex).
fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    // The linked data may never have been synced by whoever wrote it.
    f.sync_all()?;
    Ok((size, hex::encode(hasher.finalize())))
}

impl Fs {
    /// Where imports stage content before it becomes an object (the
    /// content store's staging directory, `BACKING/.artfs/import`: same
    /// filesystem as the objects, so it moves by rename). Whatever an
    /// interrupted import left there is garbage: the importer, holding the
    /// store lock, empties it when it starts.
    pub fn import_staging_dir(&self) -> std::path::PathBuf {
        self.objects.staging_dir()
    }

    fn import_temp_path(&self) -> Result<std::path::PathBuf> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = self.import_staging_dir();
        std::fs::create_dir_all(&dir)?;
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(dir.join(format!("{}-{n}", std::process::id())))
    }

    /// Create regular file `name` in `parent_dir_ino` with the content of
    /// `source` (hard-linked into the object with `link`, when BACKING is
    /// on the same filesystem; copied otherwise) and the identity and
    /// metadata of `meta`. A file_id already in the store is
    /// `AlreadyPresent`; a name already taken in the directory is EEXIST
    /// (the caller chooses another name).
    pub fn import_file(
        &self,
        caller: &Caller,
        parent_dir_ino: u64,
        name: &[u8],
        meta: &ImportMeta,
        source: &Path,
        link: bool,
    ) -> Result<ImportOutcome> {
        check_name(name)?;
        let file_id = normalise_file_id(&meta.file_id)?;
        let expected = meta
            .checksum
            .as_deref()
            .map(normalise_checksum)
            .transpose()?;
        let mut notes = Vec::new();
        let xattrs = import_xattrs(meta, &mut notes);
        let source_meta = std::fs::metadata(source)?;
        if !source_meta.is_file() {
            return Err(Error::posix(libc::EINVAL, "source is not a regular file"));
        }

        let _one_at_a_time = IMPORTING.lock();
        if let Some(ino) = self.find_by_file_id(&file_id)? {
            return Ok(ImportOutcome::AlreadyPresent { ino });
        }
        // Fail early, before any copying, when the target cannot be made;
        // checked again when staging.
        let dir = self.inode(parent_dir_ino)?;
        if !dir.kind.is_dir() {
            return Err(enotdir());
        }
        if self.child(parent_dir_ino, name)?.is_some() {
            return Err(eexist());
        }

        // The content first, durable, in the staging area of BACKING; the
        // checksum is computed from what will become the object.
        let temp = self.import_temp_path()?;
        let mut linked = false;
        if link {
            match std::fs::hard_link(source, &temp) {
                Ok(()) => linked = true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EXDEV) | Some(libc::EPERM)) => {
                    tracing::warn!(source = %source.display(), error = %e,
                        "cannot hard-link into BACKING; copying instead");
                    notes.push(format!("copied instead of linked: {e}"));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mtime = meta.updated_at.unwrap_or(meta.created_at);
        let hashed = if linked {
            hash_file(&temp)
        } else {
            copy_hashing(source, &temp, mtime)
        };
        let (size, actual) = match hashed {
            Ok(h) => h,
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                return Err(e.into());
            }
        };
        if let Some(expected) = expected {
            if expected != actual {
                std::fs::remove_file(&temp)?;
                return Ok(ImportOutcome::ChecksumMismatch { expected, actual });
            }
        }

        // Then, under the mutation lock (so the `reserve` intent covering
        // the new number is not settled before the inode is staged): the
        // object takes its name, durably, and only then is the metadata
        // that makes it reachable staged.
        let mut renamed = None;
        let staged = self.mutate(|tx| {
            let mut dir = tx.live_dir(parent_dir_ino)?;
            if tx.lookup(parent_dir_ino, name)?.is_some() {
                return Err(eexist());
            }
            let ino = self.alloc_ino()?;
            // Durable when it returns; on error no object is left.
            let blocks = self.objects.adopt(ino, &temp)?.blocks;
            renamed = Some(ino);
            // A bucket's first version of it (known without a request).
            let version = self.objects.current_version(ino)?;
            crate::crash_point!("import::after_object");
            let now = Timestamp::now();
            let (_, gid) = owner_in(caller, &dir, Kind::File, 0o644);
            let inode = Inode {
                ino,
                file_id: file_id.clone(),
                kind: Kind::File,
                perm: 0o644,
                uid: caller.uid,
                gid,
                nlink: 1,
                size,
                atime: mtime,
                mtime,
                // This store's metadata changes now.
                ctime: now,
                crtime: meta.created_at,
                rdev: 0,
                parent: parent_dir_ino,
                target: None,
                created_by: meta.created_by.clone(),
                original_name: meta.original_filename.clone(),
                sha256: Some(actual.clone()),
                blocks: Some(blocks),
                flags: 0,
                version,
            };
            tx.insert_at(inode, ino);
            tx.set_xattrs(ino, xattrs.clone());
            tx.add_entry(parent_dir_ino, name, ino, Kind::File)?;
            tx.log(
                journal::Record::new(
                    journal::Op::Import,
                    journal::Status::Committed,
                    Some(file_id.clone()),
                    json!({ "ino": ino, "parent": parent_dir_ino, "name": journal::name_json(name),
                            "source": source.to_string_lossy(), "size": size,
                            "sha256": actual, "linked": linked,
                            "verified": meta.checksum.is_some() }),
                )
                .by_caller(caller),
            );
            dir.mtime = now;
            dir.ctime = now;
            tx.put(&dir)?;
            Ok(ino)
        });
        let ino = match staged {
            Ok(ino) => ino,
            Err(e) => {
                // Nothing refers to the content: take it back.
                match renamed {
                    Some(ino) => {
                        let _ = self.objects.remove(ino);
                    }
                    None => {
                        let _ = std::fs::remove_file(&temp);
                    }
                }
                return Err(e);
            }
        };
        Ok(ImportOutcome::Imported {
            ino,
            size,
            sha256: actual,
            linked,
            notes,
        })
    }

    /// Make every directory of the slash-separated `path` (from the root)
    /// that does not exist yet, like `mkdir -p`; returns the last one.
    /// Existing directories are fine; an existing non-directory is ENOTDIR.
    pub fn mkdir_p(&self, caller: &Caller, path: &[u8]) -> Result<u64> {
        let mut ino = ROOT_INO;
        for comp in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            if comp == b"." {
                continue;
            }
            if comp == b".." {
                return Err(einval("'..' is not allowed in paths"));
            }
            ino = match self.child(ino, comp)? {
                Some(d) if d.kind.is_dir() => d.ino,
                Some(_) => return Err(enotdir()),
                None => match self.create_node(caller, ino, comp, NewNode::Dir, 0o755, 0) {
                    Ok(a) => a.inode.ino,
                    // Made meanwhile by someone else: take theirs.
                    Err(e) if e.errno() == libc::EEXIST => match self.child(ino, comp)? {
                        Some(d) if d.kind.is_dir() => d.ino,
                        _ => return Err(enotdir()),
                    },
                    Err(e) => return Err(e),
                },
            };
        }
        Ok(ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_metadata_becomes_checked_xattrs() {
        let meta = ImportMeta {
            description: Some("quarterly".into()),
            version: Some("".into()),
            content_type: Some("not a mime type".into()),
            custom: vec![
                ("dept".into(), "финансы".into()),
                ("artstore.file_id".into(), "x".into()),
                ("".into(), "x".into()),
            ],
            ..ImportMeta::default()
        };
        let mut notes = Vec::new();
        let x = import_xattrs(&meta, &mut notes);
        let names: Vec<_> = x
            .iter()
            .map(|(n, _)| String::from_utf8(n.clone()).unwrap())
            .collect();
        assert_eq!(names, ["user.artstore.description", "user.dept"]);
        assert_eq!(x[1].1, "финансы".as_bytes());
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn ids_and_checksums_are_normalised() {
        assert_eq!(
            normalise_file_id("0190F5D2-7A4B-7C3E-8D1F-2A3B4C5D6E7F").unwrap(),
            "0190f5d2-7a4b-7c3e-8d1f-2a3b4c5d6e7f"
        );
        assert!(normalise_file_id("nope").is_err());
        assert!(normalise_checksum(&"A".repeat(64)).is_ok());
        assert!(normalise_checksum("abc").is_err());
    }
}
