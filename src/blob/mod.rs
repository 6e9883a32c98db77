//! Content: the bytes of regular files, one object per inode number, and
//! beside every inode its `attr.json` sidecar (see `sidecar`). The core
//! asks for content through [`ContentStore`] only; [`LocalDir`] (objects
//! as files under `BACKING/objects/`) is the first implementation,
//! [`S3Store`] (an S3-compatible bucket, worked on through a local cache)
//! the second.
//!
//! An object is never created by opening it: a regular file with content
//! recorded (size > 0) whose object is absent lost it, and the core answers
//! EIO (see `core::data::open_object`). Only a file that records no content
//! (size 0: made by mknod, or by a create whose object was never made) may
//! lack its object; the core then makes it empty.
//!
//! # What the crash protocol relies on
//!
//! The core keeps the metadata tables and the content in step with its
//! intent log (docs/ARCHITECTURE.md); a store must give it these:
//!
//! 1. Objects exist before the inode that refers to them commits (made
//!    ahead of need, staged by uploads, adopted by imports), under numbers
//!    a pending log row covers. Recovery removes the objects of numbers
//!    whose inode never committed: [`ContentStore::stat`] and
//!    [`ContentStore::remove`] work on any number, and `remove` is
//!    idempotent (recovery may repeat it).
//! 2. An object is removed only after the metadata removing its inode is
//!    durable; the store adds no ordering of its own.
//! 3. Content is durable when [`ContentStore::fsync`] returns: after a
//!    crash the object is found under its number with that content. Content
//!    written and not synced may be lost (the object may even be absent),
//!    never mixed into another object: inode numbers, hence object names,
//!    are never reused.
//! 4. Recovery takes the object as the truth for a file's size and mtime
//!    (roll forward): [`ContentStore::stat`] reports what the content
//!    holds now, after the crash.
//! 5. Sidecars are copies: written after the commit that changed their
//!    inode, under a pending `sidecars` row, durable only at
//!    [`ContentStore::sync_all`]. A crash before it may leave an old, new
//!    or empty document, or temp files of the write, which
//!    [`ContentStore::sweep_temp`] removes; recovery rewrites the documents
//!    the row names.
//!
//! # Local files
//!
//! The doors need local descriptors: FUSE passthrough hands the kernel the
//! object's fd, reads and writes are `pread`/`pwrite` on it, imports
//! hard-link into a staging area, and statfs reports a local filesystem.
//! So the object calls return the *local file of an object*: for
//! `LocalDir` the object itself; for a remote store its copy in the local
//! cache, fetched (materialised) before the call returns, and sent back at
//! `fsync`. The one exception is [`ContentStore::open_partial`], for
//! handles read only through the core: a large copy may come back still
//! being fetched, with a [`Filling`] to wait on. Nothing outside `blob/`
//! builds a path to an object or sidecar.

pub mod ballast;
#[cfg(test)]
mod conformance;
pub mod lease;
mod local;
/// The tests' S3 server, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/common/s3.rs"]
mod moto;
mod s3;
pub mod sidecar;
mod unnamed;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use local::{remove_legacy_pool, LocalDir};
pub use s3::{
    BucketTree, Credentials, S3Config, S3Store, DEFAULT_CACHE_SIZE, DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_RETRY_FOR, DEFAULT_SPARSE_THRESHOLD,
};

use crate::types::Timestamp;

/// What the core needs of content. Object-safe: the core holds an
/// `Arc<dyn ContentStore>` chosen at open time from BACKING (a virtual
/// call costs nothing beside the syscall or request behind each method).
/// Errors are `io::Error`s; a missing object is `NotFound` where an
/// object is needed, never a panic.
pub trait ContentStore: Send + Sync {
    // ---- objects ------------------------------------------------------

    /// The local file of existing object `ino`, open read-write (no atime
    /// updates). `NotFound` when the object is absent: never created here.
    fn open_rw(&self, ino: u64) -> io::Result<File>;

    /// The local file of existing object `ino`, open read-only (hashing,
    /// scrubbing). `NotFound` when absent.
    fn open_read(&self, ino: u64) -> io::Result<File>;

    /// Object `ino` open read-write, created empty if absent: only for a
    /// file that records no content (see the module docs).
    fn open_or_create(&self, ino: u64) -> io::Result<File>;

    /// Create object `ino`, which must not exist yet (`AlreadyExists`
    /// otherwise), empty and open read-write: objects made ahead of need
    /// (`core::objpool`), before their inode commits. Not durable by itself
    /// (nothing is written yet; see [`ContentStore::fsync`]).
    fn create_new(&self, ino: u64) -> io::Result<File>;

    /// Make the local file `staged` (in [`ContentStore::staging_dir`],
    /// complete and fsynced) the content of new object `ino`, durably:
    /// when this returns the object survives a crash. `staged` is consumed.
    /// On error no object `ino` is left (`staged` may remain: the caller
    /// removes it). Returns the new object's figures.
    fn adopt(&self, ino: u64, staged: &Path) -> io::Result<ObjectStat>;

    /// The core is done with `file`, the local file of object `ino` it
    /// opened with `open_rw`, `open_or_create` or `create_new`: the last
    /// handle closed, or a truncate of a closed file is over. A remote
    /// store sends what changed, and returns the version it made;
    /// `LocalDir` has nothing to do. An error leaves the changes in the
    /// local file, for the store to send later.
    fn close(&self, _ino: u64, _file: &File) -> io::Result<Option<NewVersion>> {
        Ok(None)
    }

    /// Send what `file` (the local file of object `ino`, still open)
    /// holds that the store does not yet, as a new version: a remote
    /// store's last release does this before its figures are recorded, so
    /// that the size and the version commit together. `LocalDir`: nothing
    /// (`None`). An error leaves the changes to send later.
    fn send(&self, _ino: u64, _file: &File) -> io::Result<Option<NewVersion>> {
        Ok(None)
    }

    /// Versions the store made or found that the core has not been told
    /// of (sent in the background, sent before a crash cut the commit
    /// naming them, newer in the bucket than the tables say); each is
    /// handed out once. `LocalDir`: none.
    fn take_versions(&self) -> Vec<NewVersion> {
        Vec::new()
    }

    /// The tables now durably name version `name` of `ino`: the store
    /// deletes the versions it `superseded` (never `name` itself), and
    /// owes no report of it any more. Idempotent (recovery repeats it).
    fn version_committed(&self, _ino: u64, _name: &str, _superseded: &[String]) -> io::Result<()> {
        Ok(())
    }

    /// The name of the version of `ino` the store holds current (a
    /// bucket's highest), for recovery to record; `None` for a store
    /// without versions, or no object.
    fn current_version(&self, _ino: u64) -> io::Result<Option<String>> {
        Ok(None)
    }

    /// The tables name `version` as the content of `ino` (called before
    /// the object is opened): a remote store follower trusts a copy of
    /// that version without asking the bucket, and fetches that version
    /// otherwise. `None`: not recorded (the store finds out itself).
    fn expect_version(&self, _ino: u64, _version: Option<&str>) {}

    /// Whether opening an object may wait on the network (a remote store
    /// fetching it): the doors then open off their request loop.
    fn is_remote(&self) -> bool {
        false
    }

    /// A remote store's cache and traffic, for metrics; `None` for a
    /// local one.
    fn remote_stats(&self) -> Option<RemoteStats> {
        None
    }

    /// Object `ino` is about to be opened, `for_write` if it may be
    /// written through what is opened (or truncated): a remote store
    /// fetches it now, before the core takes the locks an open holds, and
    /// records that local writes may follow (`LocalDir`: nothing to do).
    /// A failure for a read is for the open itself to report; for a write,
    /// the write must not happen.
    fn warm(&self, _ino: u64, _for_write: bool) -> io::Result<()> {
        Ok(())
    }

    /// Object `ino` opened as `open_rw` opens it (closed by
    /// [`ContentStore::close`]), for a handle whose reads all go through
    /// the core (`Fs::read`), never its descriptor: a remote store may
    /// answer before a large copy is whole, with a [`Filling`] that reads
    /// wait on. No [`ContentStore::warm`] first: this does its work.
    fn open_partial(&self, ino: u64) -> io::Result<Partial> {
        Ok(Partial {
            file: self.open_rw(ino)?,
            filling: None,
        })
    }

    /// This process writes the store from now on (a mount's writer, a
    /// standby taking over), and recovery is about to run: a remote store
    /// becomes writable and cleans up what a crash left (multipart
    /// uploads).
    fn serve_as_writer(&self) -> io::Result<()> {
        Ok(())
    }

    /// Send now what the store holds locally only (a clean stop); errors
    /// say what could not go (it stays, sent at the next start).
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    /// Recovery is over: a remote store starts sending, in the
    /// background, the changes its cache holds unsent (not before: the
    /// content of inodes recovery removes is never sent).
    fn recovered(&self) {}

    /// Make the content written through `file` (a local file of object
    /// `ino` from this store) durable, with its size and times
    /// (`data_only`: the data and size, as `fdatasync`). After it returns
    /// the object is found under `ino`, with this content, after a crash.
    /// A remote store returns the version it made (see [`NewVersion`]).
    fn fsync(&self, ino: u64, file: &File, data_only: bool) -> io::Result<Option<NewVersion>>;

    /// The figures of object `ino`, `None` when it does not exist.
    fn stat(&self, ino: u64) -> io::Result<Option<ObjectStat>>;

    /// Whether anything holds the local file of object `ino` open for
    /// writing (a shared mapping whose descriptor was closed, see
    /// `core::mapped`), with its figures when nothing does; `None`: no
    /// local file. Asked only when no handle of the core holds it.
    fn writers(&self, ino: u64) -> io::Result<Option<lease::Writers>>;

    /// A writer the store was not told of (a shared mapping that outlived
    /// its descriptor) changed, or may still change, the local file of
    /// `ino` since its last close: a remote store takes its changes for
    /// local writes to send, not for damage. `LocalDir`: nothing to do.
    fn adopt_changes(&self, _ino: u64) -> io::Result<()> {
        Ok(())
    }

    /// The objects present among the numbers `range` (recovery sweeps
    /// the numbers a crash left reserved). The default asks `stat` of
    /// each; a remote store lists the range at once.
    fn present(&self, range: std::ops::Range<u64>) -> io::Result<Vec<u64>> {
        let mut out = Vec::new();
        for ino in range {
            if self.stat(ino)?.is_some() {
                out.push(ino);
            }
        }
        Ok(out)
    }

    /// Remove object `ino`; a missing one is already gone (`Ok`).
    fn remove(&self, ino: u64) -> io::Result<()>;

    /// Every object present, as sorted inode numbers (a whole-store scan,
    /// for fsck), and the locations of names that are neither objects nor
    /// sidecars nor temp files (strays, reported, never touched).
    fn list(&self) -> io::Result<(Vec<u64>, Vec<PathBuf>)>;

    /// Where object `ino` lives, for messages (a path, a bucket key).
    fn location(&self, ino: u64) -> String;

    // ---- sidecars -----------------------------------------------------

    /// The sidecar of `ino`, parsed; `None` when it has none.
    fn read_sidecar(&self, ino: u64) -> Result<Option<sidecar::Parsed>, sidecar::SidecarError>;

    /// Replace the sidecar of `ino` with `doc` atomically (a reader, or a
    /// crash, sees the old document or the new one). Durable on return
    /// with `DirSync::Now`; with `DirSync::Deferred` at the next
    /// [`ContentStore::sync_all`] (until then a crash may also leave an
    /// empty document: the caller's pending log row has it rewritten).
    fn write_sidecar(
        &self,
        ino: u64,
        doc: &sidecar::AttrJson,
        when: sidecar::DirSync,
    ) -> io::Result<()>;

    /// Remove the sidecar of `ino`; a missing one is already gone (`Ok`).
    /// Durable at the next [`ContentStore::sync_all`].
    fn remove_sidecar(&self, ino: u64) -> io::Result<()>;

    /// Every sidecar, in name order, each parsed or with its own error
    /// (fsck, rebuild). Temp files of interrupted writes are skipped.
    fn sidecars(&self) -> Box<dyn Iterator<Item = FoundSidecar> + '_>;

    /// Delete temp files of sidecar writes cut short by a crash; returns
    /// how many.
    fn sweep_temp(&self) -> io::Result<usize>;

    /// Make every sidecar write and removal so far durable (deferred
    /// writes are paid for once per batch, not per document).
    fn sync_all(&self) -> io::Result<()>;

    // ---- the local side -------------------------------------------------

    /// A local directory, on the filesystem of the store's local files,
    /// where content is prepared before [`ContentStore::adopt`] makes it an
    /// object (imports copy or hard-link there). Not created here; what it
    /// holds after a crash is garbage.
    fn staging_dir(&self) -> PathBuf;

    /// Figures of the local filesystem that object files fill (`LocalDir`:
    /// BACKING's; a remote store: its cache's): what statfs reports and
    /// what free-space checks watch.
    fn space(&self) -> io::Result<Space>;

    /// The store id the content itself records (a bucket keeps one, so
    /// that a new cache finds its store); `None` for a store that keeps
    /// none (`LocalDir`: BACKING's `.artfs/store-id` is the record).
    fn identity(&self) -> io::Result<Option<String>> {
        Ok(None)
    }

    /// Record the store id in the content (see [`ContentStore::identity`]).
    fn set_identity(&self, _id: &str) -> io::Result<()> {
        Ok(())
    }

    /// Whether the store can take new objects now (the readiness probe):
    /// `LocalDir` checks the object area is there and writable.
    fn check_ready(&self) -> io::Result<()>;
}

/// A version of an object's content a store that keeps versions (a
/// bucket) made: the tables record `name` in the commit that records the
/// size it was sent at, and only once that commit is durable are the
/// versions it `superseded` deleted (through a `reclaim` log row,
/// [`ContentStore::version_committed`]). Until then a crash finds both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewVersion {
    pub ino: u64,
    /// The version's name (the last part of its key).
    pub name: String,
    /// The version it replaced, if the store knows it.
    pub superseded: Option<String>,
}

/// Whether version `name` is later than `than` (none recorded: any is):
/// names begin with the version's number as 16 hex digits, so they order
/// as strings do.
pub fn is_later_version(name: &str, than: Option<&str>) -> bool {
    than.is_none_or(|t| name > t)
}

/// An object's local file from [`ContentStore::open_partial`].
pub struct Partial {
    pub file: File,
    /// `Some` while the copy is being fetched.
    pub filling: Option<Arc<dyn Filling>>,
}

/// A local copy still being fetched while it is read (a remote store's
/// large file; docs/S3.md). Until [`Filling::whole`], the file's bytes
/// are only those [`Filling::wait`] vouched for, and its own figures
/// (size, times) mean nothing: [`Filling::figures`] are the content's.
pub trait Filling: Send + Sync {
    /// Wait until bytes `range` (clipped to the content's size) are in
    /// the local file; an error (EIO) when they could not be fetched.
    fn wait(&self, range: std::ops::Range<u64>) -> io::Result<()>;
    /// Whether bytes `range` (clipped as for `wait`) are in the local file
    /// now: `wait` would return at once.
    fn ready(&self, range: std::ops::Range<u64>) -> bool;
    /// The copy is whole and recorded: the local file is the truth.
    fn whole(&self) -> bool;
    /// The figures of the content being fetched.
    fn figures(&self) -> ObjectStat;
}

/// The figures of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectStat {
    /// Bytes of content.
    pub size: u64,
    /// Last content change.
    pub mtime: Timestamp,
    /// Last change of the object's content or attributes.
    pub ctime: Timestamp,
    /// Space taken, in 512-byte blocks (`st_blocks`).
    pub blocks: u64,
}

impl ObjectStat {
    /// The figures of a local file.
    pub fn of(m: &std::fs::Metadata) -> ObjectStat {
        use std::os::unix::fs::MetadataExt;
        ObjectStat {
            size: m.len(),
            mtime: Timestamp::mtime_of(m),
            ctime: Timestamp::ctime_of(m),
            blocks: m.blocks(),
        }
    }
}

/// Space on a local filesystem, in `statvfs(3)` terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Fragment size: the unit of the block counts.
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    /// Blocks free for unprivileged users.
    pub bavail: u64,
    /// Free inodes.
    pub ffree: u64,
}

impl Space {
    /// The figures of the filesystem holding `path`.
    pub fn of(path: &Path) -> io::Result<Space> {
        let v = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        Ok(Space {
            frsize: v.fragment_size(),
            blocks: v.blocks(),
            bfree: v.blocks_free(),
            bavail: v.blocks_available(),
            ffree: v.files_free(),
        })
    }
}

/// A remote store's cache and traffic since it opened (metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RemoteStats {
    /// Bytes of cached copies, and the most the cache keeps.
    pub cache_bytes: u64,
    pub cache_limit: u64,
    /// Cached copies, and those with changes not sent yet.
    pub cached: u64,
    pub unsent: u64,
    /// Requests by kind (a multipart upload counts each part), and those
    /// that failed after their retries.
    pub gets: u64,
    pub puts: u64,
    pub lists: u64,
    pub deletes: u64,
    pub failures: u64,
    pub bytes_fetched: u64,
    pub bytes_sent: u64,
}

/// One sidecar found by [`ContentStore::sidecars`].
#[derive(Debug)]
pub struct FoundSidecar {
    /// The inode its name says, if the name is `<ino as hex>.attr.json`.
    pub ino: Option<u64>,
    /// Where it is, for reports.
    pub path: PathBuf,
    pub parsed: Result<sidecar::Parsed, sidecar::SidecarError>,
}

/// Where content lives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Content {
    /// Files under BACKING (the default).
    #[default]
    Local,
    /// An S3-compatible bucket; BACKING is then its local cache directory.
    S3(Box<S3Config>),
}

/// The content store of BACKING: the one place that knows the kinds of
/// store. `read_only`: a follower's (a remote store then never writes).
pub fn open(
    backing: &Path,
    content: &Content,
    read_only: bool,
) -> io::Result<Arc<dyn ContentStore>> {
    match content {
        Content::Local => Ok(Arc::new(LocalDir::open(backing)?)),
        Content::S3(cfg) => {
            let cfg = S3Config {
                read_only,
                ..(**cfg).clone()
            };
            Ok(S3Store::open(cfg, backing)?)
        }
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
