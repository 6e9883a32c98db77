//! An upload of a whole file as one core operation, [`Fs::upload`]: check
//! the target (the directory's path and permissions, that no directory
//! has the name, the client's condition), fill a nameless staging file
//! from a reader while hashing it, make it durable, set the attributes
//! sent with it and publish it under its name (see `publish`), durably.
//!
//! Every rule (permissions, mode, capacity, conditions, retention) is
//! checked here or below; a door parses its request and hands over the
//! content as pieces ([`Content`]).

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::namespace::NewNode;
use super::publish::{Expect, Published};
use super::{Attr, Fs};
use crate::types::error::{enotdir, Error, Result};
use crate::types::Caller;

/// An upload's content, handed over in pieces that the core writes and
/// hashes where they are: the HTTP door's body arrives in buffers of its
/// own, and copying it into another cost a memcpy of every byte (issue
/// 20).
pub trait Content {
    /// The next pieces, in order (about a megabyte in all is a good
    /// size); `None` at the end. An error fails the upload.
    fn next_pieces(&mut self) -> std::io::Result<Option<Vec<Bytes>>>;
}

/// Content in memory, whole (tests, small bodies).
impl Content for &[u8] {
    fn next_pieces(&mut self) -> std::io::Result<Option<Vec<Bytes>>> {
        if self.is_empty() {
            return Ok(None);
        }
        let piece = Bytes::copy_from_slice(self);
        *self = &[];
        Ok(Some(vec![piece]))
    }
}

/// Matches the current file's checksum (None: unknown yet) against what
/// the client listed. How tags are compared is the door's business.
pub type ChecksumMatch = Box<dyn Fn(Option<&str>) -> bool + Send>;

/// What the client requires of the name (HTTP `If-Match`,
/// `If-None-Match`).
pub enum Condition {
    /// Create or replace.
    Any,
    /// Only create (`If-None-Match: *`).
    Absent,
    /// Fail if the current file matches (`If-None-Match` with tags).
    NoneOf(ChecksumMatch),
    /// Only replace a current file that matches (`If-Match`).
    OneOf(ChecksumMatch),
}

/// The id a new file gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewFileId {
    /// A fresh UUIDv7, artfs's own kind.
    Fresh,
    /// Made by the door, as random as a fresh one (a UUIDv4 for the
    /// original's clients): taken as it is, never looked up.
    Made(String),
    /// Chosen by the client (the original API's `file_id`): EEXIST when
    /// any inode of the store has it, trashed ones included.
    Chosen(String),
}

/// What an upload asks for besides its content.
pub struct UploadOptions {
    pub condition: Condition,
    /// Permission bits of the new file, used as given (no umask).
    pub perm: u32,
    /// Recorded as the file's creator.
    pub created_by: String,
    /// Attributes set and removed with the content (all or none).
    pub set: Vec<(Vec<u8>, Vec<u8>)>,
    pub remove: Vec<Vec<u8>>,
    /// The new file's id.
    pub file_id: NewFileId,
    /// Kept as the original filename when the file is published under a
    /// name of the door's making; None: the name itself.
    pub original_name: Option<Vec<u8>>,
    /// Make the missing directories of the target's path first, with these
    /// permission bits (as `mkdir -p` would, each as a create in its
    /// parent); None: the directory must exist.
    pub make_dirs: Option<u32>,
}

/// A published upload. It keeps the file open until [`Uploaded::finish`]
/// (or drop), so the door can still describe it when a concurrent upload
/// replaces it the moment it is published.
pub struct Uploaded<'a> {
    staging: Staging<'a>,
    /// The directory the name went into.
    pub parent: u64,
    pub ino: u64,
    /// The inode whose link the upload replaced.
    pub replaced: Option<u64>,
    /// The directories made for it (`make_dirs`): (parent, name) each.
    pub made: Vec<(u64, Vec<u8>)>,
}

impl Uploaded<'_> {
    /// Close the file.
    pub fn finish(self) -> Result<()> {
        self.staging.release()
    }
}

/// The staging file's handle. Released when dropped: an unpublished
/// staging inode goes away before an error of the upload reaches the
/// caller (so usage figures never count it afterwards), and also when the
/// caller unwinds.
struct Staging<'a> {
    fs: &'a Fs,
    fh: u64,
    released: bool,
}

impl Staging<'_> {
    fn release(mut self) -> Result<()> {
        self.released = true;
        self.fs.release(self.fh)
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.fs.release(self.fh) {
                tracing::warn!(fh = self.fh, error = %e, "could not discard an upload");
            }
        }
    }
}

/// A failed client condition (the door's 412).
fn failed(why: &'static str) -> Error {
    Error::posix(libc::ESTALE, why)
}

impl Fs {
    /// Upload `content` as `name` in the directory at path `dir`, as
    /// `caller`: all or nothing. A failure (refused, over capacity, the
    /// content's reader failing) leaves no trace, the staging file
    /// included, by the time it is returned.
    pub fn upload<'a>(
        &'a self,
        caller: &Caller,
        dir: &[Vec<u8>],
        name: &[u8],
        content: &mut dyn Content,
        opts: UploadOptions,
    ) -> Result<Uploaded<'a>> {
        let made = match opts.make_dirs {
            Some(mode) => self.make_dirs(caller, dir, mode)?,
            None => Vec::new(),
        };
        let (parent, expect) = self.upload_target(caller, dir, name, opts.condition)?;
        let (ino, h) = self.create_staging(
            caller,
            parent,
            opts.perm,
            &opts.created_by,
            &opts.file_id,
            opts.original_name.as_deref().unwrap_or_default(),
        )?;
        let staging = Staging {
            fs: self,
            fh: h.fh,
            released: false,
        };
        let sha256 = self.fill(h.fh, content)?;
        self.fsync(h.fh, false)?;
        self.update_xattrs(caller, ino, &opts.set, &opts.remove)?;
        let published = self.publish_durably(caller, ino, parent, name, &expect, sha256)?;
        Ok(Uploaded {
            staging,
            parent,
            ino,
            replaced: published.replaced,
            made,
        })
    }

    /// Make the directories of the path `dir` that are missing, as
    /// `caller`: search permission on the way, and a create's rules (mode,
    /// write permission on the parent) for each one made; one made
    /// meanwhile by someone else is taken as it is. Returns what was made.
    fn make_dirs(
        &self,
        caller: &Caller,
        dir: &[Vec<u8>],
        mode: u32,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut made = Vec::new();
        for depth in 0..dir.len() {
            // Walked each time: search permission, and the trash hidden.
            let parent = self.walk(caller, &dir[..depth])?.inode;
            let name = &dir[depth];
            if !parent.kind.is_dir() {
                return Err(enotdir());
            }
            match self.lookup(parent.ino, name) {
                Ok(_) => continue,
                Err(e) if e.errno() == libc::ENOENT => {}
                Err(e) => return Err(e),
            }
            self.check_dir_change(caller, parent.ino, None)?;
            match self.create_node(caller, parent.ino, name, NewNode::Dir, mode, 0) {
                Ok(_) => made.push((parent.ino, name.clone())),
                Err(e) if e.errno() == libc::EEXIST => {}
                Err(e) => return Err(e),
            }
        }
        Ok(made)
    }

    /// Check that `caller` may upload `name` into the directory at path
    /// `dir` under `cond`. Returns the directory and what publishing must
    /// find under the name.
    fn upload_target(
        &self,
        caller: &Caller,
        dir: &[Vec<u8>],
        name: &[u8],
        cond: Condition,
    ) -> Result<(u64, Expect)> {
        let dir = self.walk(caller, dir)?;
        if !dir.inode.kind.is_dir() {
            return Err(enotdir());
        }
        let parent = dir.inode.ino;
        let existing = match self.lookup(parent, name) {
            Ok(a) => Some(a),
            Err(e) if e.errno() == libc::ENOENT => None,
            Err(e) => return Err(e),
        };
        if existing.as_ref().is_some_and(|a| a.inode.kind.is_dir()) {
            return Err(Error::posix(libc::EEXIST, "a directory has that name"));
        }
        self.check_dir_change(caller, parent, existing.as_ref().map(|a| a.inode.ino))?;
        Ok((parent, self.expectation(cond, existing.as_ref())?))
    }

    /// Turn the client's condition into what publishing must find, or
    /// refuse at once when the name already fails it.
    fn expectation(&self, cond: Condition, existing: Option<&Attr>) -> Result<Expect> {
        let matches = |a: &Attr, m: &ChecksumMatch| -> Result<bool> {
            Ok(m(self.sha256(a.inode.ino)?.as_deref()))
        };
        match (cond, existing) {
            (Condition::Any, _) => Ok(Expect::Any),
            (Condition::Absent, None) => Ok(Expect::Absent),
            (Condition::Absent, Some(_)) => Err(failed("the file exists (If-None-Match: *)")),
            (Condition::NoneOf(m), Some(a)) if matches(a, &m)? => {
                Err(failed("the current file matches If-None-Match"))
            }
            (Condition::NoneOf(_), Some(a)) => Ok(Expect::FileId(a.inode.file_id.clone())),
            (Condition::NoneOf(_), None) => Ok(Expect::Absent),
            (Condition::OneOf(m), Some(a)) if matches(a, &m)? => {
                Ok(Expect::FileId(a.inode.file_id.clone()))
            }
            (Condition::OneOf(_), Some(_)) => {
                Err(failed("the current file does not match If-Match"))
            }
            (Condition::OneOf(_), None) => Err(failed("no file to match (If-Match)")),
        }
    }

    /// Write everything `content` yields into handle `fh` from offset 0;
    /// returns its SHA-256 (hex).
    ///
    /// The hash runs on a thread of its own, a batch of pieces behind the
    /// writes (`checksum::hashed_beside`). Every byte written is hashed, in
    /// order; the pieces are written (`pwritev`) and hashed where the door
    /// put them, never copied, and freed once both are done with them. Where the object takes O_DIRECT,
    /// [`Fs::fill_direct`] does this instead.
    fn fill(&self, fh: u64, content: &mut dyn Content) -> Result<String> {
        let file = self.handle(fh)?.file.clone();
        if let Some(direct) = super::direct_fill::reopen_direct(&file) {
            return self.fill_direct(fh, content, &direct);
        }
        // One batch hashed while the next is written.
        let feed = |h: &mut Sha256, batch: &Arc<Vec<Bytes>>| batch.iter().for_each(|p| h.update(p));
        super::checksum::hashed_beside(1, feed, drop, |to_hash| {
            let mut offset = 0u64;
            while let Some(pieces) = content.next_pieces()? {
                let pieces = Arc::new(pieces);
                let n: usize = pieces.iter().map(Bytes::len).sum();
                if n == 0 {
                    continue;
                }
                to_hash(pieces.clone())?;
                self.write_pieces(fh, offset, &pieces)?;
                start_writeback(&file, offset, n);
                offset += n as u64;
            }
            Ok(())
        })
    }

    /// Link the filled staging file under its name, then make that
    /// durable. A create-only upload that finds the name taken meanwhile
    /// failed its condition.
    fn publish_durably(
        &self,
        caller: &Caller,
        ino: u64,
        parent: u64,
        name: &[u8],
        expect: &Expect,
        sha256: String,
    ) -> Result<Published> {
        let publish = || -> Result<Published> {
            let p = self.publish(caller, ino, parent, name, expect, Some(sha256))?;
            self.sync_meta()?;
            Ok(p)
        };
        publish().map_err(|e| {
            if *expect == Expect::Absent && e.errno() == libc::EEXIST {
                failed("the file exists (If-None-Match: *)")
            } else {
                e
            }
        })
    }
}

/// Start writing a chunk just written to disk, without waiting for it
/// (issue 20): the disk then works while the rest of the upload arrives,
/// and the fsync before the upload is published has little left to do,
/// where otherwise the whole file would wait in the page cache for it.
/// Only a hint: durability is still the fsync's, and a filesystem that
/// refuses the call loses nothing.
fn start_writeback(file: &std::fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor `file` keeps open.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
#[path = "upload_tests.rs"]
mod tests;
