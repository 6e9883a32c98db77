//! The FUSE door: a thin fuser adapter. It translates kernel requests into
//! core calls and core errors into errnos, and manages what only the
//! kernel connection has (passthrough backing ids, TTLs). It holds no policy.

mod attr_ioctl;
mod awake;
mod known;
mod mount;
mod notify;
mod offload;
mod opstats;
mod write_guard;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyStatx, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use parking_lot::Mutex;
use tracing::{debug_span, warn};

use crate::core::namespace::NewNode;
use crate::core::{Attr, Fs, Handle, OpenChange};
use crate::types::error::{enotdir, errno_label, Context, Error};
use crate::types::{Caller, Kind, RenameMode, SetAttr, SetTime, Timestamp};
use opstats::FuseOps;

pub use mount::{check_mountpoint, serve, MountOptions};
pub use notify::KernelInvalidator;

/// The door: what its requests share. Requests that may block run on a
/// helper thread with a clone of it (see `offload`).
pub struct FuseFs {
    inner: Arc<Shared>,
    /// Helper threads for requests that may block (see `offload`); none:
    /// they run on the request thread.
    offload: Option<offload::Offload>,
}

impl std::ops::Deref for FuseFs {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.inner
    }
}

/// A writer refused because its file is append-only and already open by
/// passthrough (since before it became append-only): sharing that backing
/// file, a shared mapping of the writer could write anywhere in it.
fn append_only_shared() -> Error {
    Error::posix(
        libc::ETXTBSY,
        "open for writing refused: this append-only file is open by passthrough since before it became append-only, and a writer's shared mapping could write anywhere through it; retry once those handles close",
    )
}

/// An open inode's kernel backing file, shared by its passthrough handles.
struct Backed {
    id: Weak<BackingId>,
    /// Registered on the write guard's watched file: passthrough writes
    /// through it are checked against the capacity (see `write_guard`).
    /// Without it, a writer that must be seen joins with its reads and
    /// writes served by the daemon (see [`Shared::backing`]).
    guarded: bool,
}

pub struct Shared {
    fs: Arc<Fs>,
    /// Set once the session exists; used after replying, never inside a
    /// request, so the kernel never waits on itself.
    notifier: Arc<OnceLock<Notifier>>,
    ttl: Duration,
    passthrough: AtomicBool,
    /// One kernel backing id per open inode, shared by its handles.
    backing_by_ino: Mutex<HashMap<u64, Backed>>,
    backing_by_fh: Mutex<HashMap<u64, Arc<BackingId>>>,
    /// Per inode served through the daemon (no passthrough): the object's
    /// (mtime, size) when the kernel's page cache of it was last known
    /// good. An open that finds them unchanged keeps that cache (see
    /// `keep_cache`).
    page_cache: Mutex<HashMap<u64, (i64, u64)>>,
    /// Inodes whose refused write back waits for its pages to be dropped
    /// (see `drop_refused_pages`).
    refused_pages: Arc<Mutex<std::collections::HashSet<u64>>>,
    /// Per open directory: the rest of the last chunk read from the store.
    /// A reply holds only what fits the kernel's buffer (a few dozen
    /// entries with attributes); the next request continues from here
    /// instead of querying the store again.
    listings: Mutex<HashMap<u64, Listing>>,
    /// Directories moved by rename since their last open: their next open
    /// must not keep the kernel's cached listing (its ".." is stale).
    moved_dirs: Mutex<std::collections::HashSet<u64>>,
    next_dir_fh: std::sync::atomic::AtomicU64,
    /// Keeps a CPU awake during bursts of requests (see `awake`).
    awake: Option<Arc<awake::KeepAwake>>,
    /// Ask for FUSE over io_uring at INIT (see `MountOptions::io_uring`).
    io_uring: bool,
    /// listxattr shows the computed `user.artstore.*` names too
    /// (`MountOptions::list_computed_xattrs`).
    list_computed_xattrs: bool,
    /// Special inodes (FIFOs, sockets, symlinks, devices) the kernel holds,
    /// by number (see `Held`).
    held: Mutex<HashMap<u64, Held>>,
    /// Every name the kernel holds, on a follower's mount (see `known`).
    known: Option<Arc<known::KnownNames>>,
    /// Checks passthrough writes against the capacity, when asked for
    /// (`MountOptions::capacity_passthrough`; see `write_guard`).
    guard: Option<write_guard::WriteGuard>,
}

/// A special inode the kernel holds (its lookup count). Removed while held
/// (a FIFO or `O_PATH` descriptor open on it), it keeps answering getattr
/// with nlink 0 until the kernel forgets it, as on ext4. Regular files and
/// directories are held by the core through their open handles; special
/// files are never opened through the daemon, so only the door sees that
/// the kernel still uses them.
struct Held {
    lookups: u64,
    removed: Option<FileAttr>,
}

fn is_special(k: Kind) -> bool {
    !matches!(k, Kind::File | Kind::Dir)
}

/// Entries fetched for an open directory and not yet handed out.
#[derive(Default)]
struct Listing {
    entries: std::collections::VecDeque<crate::types::DirEntry>,
    /// The offset the kernel continues from if it read what we sent.
    next_offset: u64,
}

/// Whether `done` holds within a second, asked every millisecond.
fn within_a_second(done: impl Fn() -> bool) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while !done() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
        subject: None,
        groups: None,
        grants: None,
    }
}

/// A reply that can carry an errno (every fuser reply type can).
trait ErrorReply {
    fn error(self, errno: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn error(self, errno: Errno) {
                <$t>::error(self, errno)
            }
        }
    )*};
}

error_reply!(
    ReplyAttr,
    ReplyStatx,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
    fuser::ReplyIoctl
);

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

fn fuse_attr(a: &Attr) -> FileAttr {
    let i = &a.inode;
    FileAttr {
        ino: INodeNo(i.ino),
        size: i.size,
        blocks: a.blocks,
        atime: i.atime.to_system(),
        mtime: i.mtime.to_system(),
        ctime: i.ctime.to_system(),
        crtime: i.crtime.to_system(),
        kind: file_type(i.kind),
        perm: (i.perm & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev,
        blksize: 4096,
        flags: 0,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(wire_time(t)),
    }
}

/// A time from a kernel request. fuser builds pre-1970 times as
/// `EPOCH - (-secs, nsecs)`, subtracting the nanoseconds instead of adding
/// them; undo that so `(-1, 999999999)` stays one nanosecond before 1970.
fn wire_time(t: SystemTime) -> Timestamp {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(_) => Timestamp::from_system(t),
        Err(e) => {
            let d = e.duration();
            Timestamp(-(d.as_secs() as i64) * 1_000_000_000 + i64::from(d.subsec_nanos()))
        }
    }
}

impl FuseFs {
    pub fn new(fs: Arc<Fs>) -> FuseFs {
        FuseFs {
            inner: Arc::new(Shared {
                fs,
                notifier: Arc::default(),
                ttl: MountOptions::default().ttl,
                passthrough: AtomicBool::new(false),
                backing_by_ino: Mutex::default(),
                backing_by_fh: Mutex::default(),
                page_cache: Mutex::default(),
                refused_pages: Arc::default(),
                listings: Mutex::default(),
                moved_dirs: Mutex::default(),
                next_dir_fh: 1.into(),
                awake: None,
                io_uring: false,
                list_computed_xattrs: false,
                held: Mutex::default(),
                known: None,
                guard: None,
            }),
            offload: None,
        }
    }

    /// The shared state, while building (before any request).
    fn building(&mut self) -> &mut Shared {
        Arc::get_mut(&mut self.inner).expect("FuseFs is configured before it serves")
    }

    /// Run requests that may block on `n` helper threads.
    pub fn with_helpers(mut self, n: usize) -> std::io::Result<FuseFs> {
        self.offload = Some(offload::Offload::start(n)?);
        Ok(self)
    }

    /// Keep a CPU awake for `window` after each request (zero: never).
    pub fn with_keep_awake(mut self, window: Duration) -> std::io::Result<FuseFs> {
        self.building().awake = awake::KeepAwake::start(window)?;
        Ok(self)
    }

    /// Ask the kernel for FUSE over io_uring (see `MountOptions::io_uring`).
    pub fn with_io_uring(mut self, on: bool) -> FuseFs {
        self.building().io_uring = on;
        self
    }

    /// Writes through passthrough under a capacity, checked by a
    /// [`write_guard::WriteGuard`] (see `MountOptions::capacity_passthrough`).
    /// Where the kernel cannot (no pre-content events, or no CAP_SYS_ADMIN)
    /// writes stay served by the daemon, and the log says why.
    pub fn with_capacity_passthrough(mut self, on: bool) -> FuseFs {
        if on {
            let (fs, awake) = (self.fs.clone(), self.awake.clone());
            match write_guard::WriteGuard::start(fs, awake) {
                Ok(g) => self.building().guard = Some(g),
                Err(e) => warn!(
                    error = %e,
                    "--capacity-passthrough: the kernel offers no fanotify pre-content events \
                     (Linux 6.14 or later, as root); writes under the capacity go through the daemon"
                ),
            }
        }
        self
    }

    /// List the computed attributes (see `MountOptions::list_computed_xattrs`).
    pub fn with_list_computed_xattrs(mut self, on: bool) -> FuseFs {
        self.building().list_computed_xattrs = on;
        self
    }

    /// Keep track of every name the kernel holds (a follower's mount: see
    /// `known`), shared with the invalidator that drops them.
    pub fn with_known_names(mut self, known: Arc<known::KnownNames>) -> FuseFs {
        self.building().known = Some(known);
        self
    }

    pub fn with_ttl(mut self, ttl: Duration) -> FuseFs {
        self.building().ttl = ttl;
        self
    }

    /// Serve a request that may block: on a helper thread if there are
    /// any, with the shared state.
    fn blocking(&self, job: impl FnOnce(&Shared) + Send + 'static) {
        if let Some(a) = &self.awake {
            a.ping();
        }
        let inner = self.inner.clone();
        match &self.offload {
            Some(o) => o.run(move || job(&inner)),
            None => job(&inner),
        }
    }
}

thread_local! {
    /// This thread serves a FUSE-over-io_uring queue (the vendored fuser
    /// names them `fuser-ring-CPU`).
    static ON_RING: bool = std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("fuser-ring-"));
}

/// The request being served came over a FUSE-over-io_uring queue, on a
/// thread pinned to its caller's CPU.
fn on_ring_thread() -> bool {
    ON_RING.with(|r| *r)
}

impl Shared {
    /// Count and time a request (see `opstats`); note it for `awake`.
    #[inline]
    fn timed(&self, op: usize) -> opstats::OpTimer<'_> {
        if let Some(a) = &self.awake {
            a.ping();
        }
        self.fs.ops().time_at(op)
    }

    /// The cell the session's notifier goes into once mounted.
    pub fn notifier_cell(&self) -> Arc<OnceLock<Notifier>> {
        self.notifier.clone()
    }

    /// Drop the kernel's cached attributes (and, with `pages`, cached
    /// content or listing) of an inode changed behind its back.
    fn invalidate(&self, ino: u64, pages: bool) {
        if let Some(n) = self.notifier.get() {
            let offset = if pages { 0 } else { -1 };
            if let Err(e) = n.inval_inode(INodeNo(ino), offset, 0) {
                // ENOENT: the kernel holds nothing for it; fine.
                tracing::debug!(ino, error = %e, "kernel invalidation");
            }
        }
    }

    /// A write back from the kernel's page cache (a shared mapping's, on a
    /// handle served cached) was refused, say on an append-only file: its
    /// pages still hold bytes the object never got, which the file's other
    /// readers would see. Drop them, from a thread of its own, after the
    /// reply: the kernel first writes back the file's other dirty pages,
    /// through this daemon, so no request thread may wait for it.
    fn drop_refused_pages(&self, ino: u64) {
        if !self.refused_pages.lock().insert(ino) {
            return;
        }
        let (notifier, pending) = (self.notifier.clone(), self.refused_pages.clone());
        let spawned = std::thread::Builder::new()
            .name("artfs-refused".into())
            .spawn(move || {
                // Out first: a refusal while the kernel writes back asks
                // again.
                pending.lock().remove(&ino);
                if let Some(n) = notifier.get() {
                    if let Err(e) = n.inval_inode(INodeNo(ino), 0, 0) {
                        tracing::debug!(ino, error = %e, "dropping refused pages");
                    }
                }
            });
        if let Err(e) = spawned {
            self.refused_pages.lock().remove(&ino);
            warn!(ino, error = %e, "cannot drop the pages of a refused write back");
        }
    }

    /// Answer a request with an error: the one way every error reply goes
    /// (but flush's ENOSYS and ioctl's ENOTTY, protocol answers sent on
    /// every close and open, which are neither logged nor counted). Counts
    /// it in `artfs_fuse_errors_total{op, errno}` and logs it once
    /// (`Error::log`: at the level the error picks, ENOENT debug, EIO
    /// error) with the operation, the inode (the parent, for a request
    /// naming an entry), the name when there is one, and the causes.
    fn fail(
        &self,
        op: &'static str,
        ino: u64,
        name: Option<&[u8]>,
        e: Error,
        reply: impl ErrorReply,
    ) {
        let errno = e.errno();
        self.fs
            .ops()
            .error(&opstats::OPS, opstats::op_index(op), errno);
        if e.would_log() {
            let mut at = Context::op(op).ino(ino);
            if let Some(n) = name {
                at = at.path(String::from_utf8_lossy(n));
            }
            e.with_context(at).log(&errno_label(errno));
        }
        reply.error(Errno::from_i32(errno));
    }

    /// Answer a request whose reply carries nothing but success or an errno.
    fn empty(&self, op: &'static str, ino: u64, reply: ReplyEmpty, r: Result<(), Error>) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => self.fail(op, ino, None, e, reply),
        }
    }

    /// Answer a request for an entry (`parent`/`name`).
    fn entry(
        &self,
        op: &'static str,
        parent: u64,
        name: &[u8],
        reply: ReplyEntry,
        r: Result<Attr, Error>,
    ) {
        match r {
            Ok(a) => {
                self.note_lookup(parent, name, &a);
                reply.entry(&self.ttl, &fuse_attr(&a), Generation(0))
            }
            Err(e) => self.fail(op, parent, Some(name), e, reply),
        }
    }

    /// Whether `ino` is open by passthrough, which an append-only file's
    /// writer may not join (see [`append_only_shared`]).
    fn passthrough_open(&self, ino: u64) -> bool {
        self.backing_by_ino
            .lock()
            .get(&ino)
            .is_some_and(|b| b.id.strong_count() > 0)
    }

    /// Whether `ino`'s passthrough handles are all gone within a second.
    /// The kernel sends a handle's release after close(2) returns, so one
    /// just closed (the `chattr +a` that made the file append-only holds
    /// one itself) may still be on its way. Called on a helper thread:
    /// the request thread meanwhile serves the releases.
    fn passthrough_gone(&self, ino: u64) -> bool {
        within_a_second(|| !self.passthrough_open(ino))
    }

    /// Whether `ino`'s writers are all gone within a second (releases on
    /// their way, as in `passthrough_gone`). On a helper thread.
    fn writers_gone(&self, ino: u64) -> bool {
        within_a_second(|| self.fs.open_writers(ino) == 0)
    }

    /// Answer a `chattr` (see `ioctl`).
    fn flags_set(&self, ino: u64, r: Result<(), Error>, reply: fuser::ReplyIoctl) {
        match r {
            Ok(()) => {
                self.invalidate(ino, false);
                reply.ioctl(0, &[])
            }
            Err(e) => self.fail("ioctl", ino, None, e, reply),
        }
    }

    /// Answer a create or tmpfile: the new file, open (with passthrough
    /// when the handle may use it).
    fn created(&self, reply: ReplyCreate, attr: &Attr, h: &Handle) {
        let fa = fuse_attr(attr);
        // A new inode has no backing file yet, so nothing to refuse.
        match self.backing(h, |f| reply.open_backing(f)).ok().flatten() {
            Some((id, flags)) => reply.created_passthrough(
                &self.ttl,
                &fa,
                Generation(0),
                FileHandle(h.fh),
                flags,
                &id,
            ),
            None => reply.created(
                &self.ttl,
                &fa,
                Generation(0),
                FileHandle(h.fh),
                self.keep_cache(h),
            ),
        }
    }

    /// xattr(7) size protocol: size 0 probes, too small a buffer is ERANGE.
    fn xattr_reply(&self, op: &'static str, ino: u64, reply: ReplyXattr, value: &[u8], size: u32) {
        if size == 0 {
            reply.size(value.len() as u32);
        } else if value.len() > size as usize {
            let e = Error::posix(libc::ERANGE, "the buffer is smaller than the value");
            self.fail(op, ino, None, e, reply);
        } else {
            reply.data(value);
        }
    }

    /// The kernel takes a reference to `a` (an entry reply), under
    /// `parent`/`name`.
    fn note_lookup(&self, parent: u64, name: &[u8], a: &Attr) {
        if let Some(k) = &self.known {
            k.note(parent, name, a.inode.ino);
        }
        if is_special(a.inode.kind) {
            self.held
                .lock()
                .entry(a.inode.ino)
                .or_insert(Held {
                    lookups: 0,
                    removed: None,
                })
                .lookups += 1;
        }
    }

    /// The special inode at `parent`/`name` if the kernel holds it: it may
    /// be about to lose its last name.
    fn held_at(&self, parent: u64, name: &[u8]) -> Option<Attr> {
        if self.held.lock().is_empty() {
            return None;
        }
        let a = self.fs.lookup(parent, name).ok()?;
        (self.held.lock().contains_key(&a.inode.ino) && a.inode.nlink == 1).then_some(a)
    }

    /// `victim` lost its last name: keep its attributes for the kernel.
    fn keep_removed(&self, victim: Option<Attr>) {
        let Some(a) = victim else { return };
        if let Some(h) = self.held.lock().get_mut(&a.inode.ino) {
            let mut fa = fuse_attr(&a);
            fa.nlink = 0;
            fa.ctime = SystemTime::now();
            h.removed = Some(fa);
        }
    }

    /// Hand directory entries after `offset` to `add` until it reports a
    /// full buffer (`Some(true)`; `None` skips an entry), reading the store
    /// in chunks kept per open directory.
    fn list(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        with_attrs: bool,
        mut add: impl FnMut(&crate::types::DirEntry) -> Option<bool>,
    ) -> Result<(), Error> {
        const CHUNK: usize = 1024;
        let mut l = self.listings.lock().remove(&fh).unwrap_or_default();
        if l.next_offset != offset {
            // A seek (or a reread): start over from the store.
            l.entries.clear();
            l.next_offset = offset;
        }
        loop {
            if l.entries.is_empty() {
                let fetched = self.fs.readdir(ino, l.next_offset, CHUNK)?;
                if fetched.is_empty() {
                    break;
                }
                if with_attrs {
                    let inos: Vec<u64> = fetched.iter().map(|e| e.ino).collect();
                    self.fs.prefetch(&inos);
                }
                l.entries.extend(fetched);
            }
            let Some(e) = l.entries.front() else { break };
            match add(e) {
                Some(true) => break,
                _ => {
                    l.next_offset = e.offset;
                    l.entries.pop_front();
                }
            }
        }
        if fh != 0 {
            self.listings.lock().insert(fh, l);
        }
        Ok(())
    }

    /// The backing id for a handle's inode, registering it on first open,
    /// and the open flags to go with it. `None` means serve I/O through the
    /// daemon, cached; an error, refuse the open (an append-only file's
    /// writer on an inode open by passthrough).
    ///
    /// Readers go by passthrough (unless the inode is open cached through
    /// the daemon). A writer whose writes the daemon must see (a capacity,
    /// or BACKING nearly full), unless the write guard watches it, gets
    /// FOPEN_DIRECT_IO with its backing file: the kernel then sends its
    /// reads, writes and splices to the daemon, uncached, which checks each
    /// write; only its mappings reach the backing file, and a mapping
    /// cannot grow a file. So readers keep passthrough beside writers in
    /// every mode, and bulk writes skip the page cache copy a cached
    /// write-through would add.
    fn backing(
        &self,
        h: &Handle,
        open: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> Result<Option<(Arc<BackingId>, FopenFlags)>, Error> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let seen = h.writable && self.fs.writes_through_daemon();
        let mut by_ino = self.backing_by_ino.lock();
        // The kernel refuses (EIO) to mix: once an inode is open with
        // passthrough every open of it must be, and once open cached
        // through the daemon, none may be until all its handles are closed.
        let live = by_ino
            .get(&h.ino)
            .and_then(|b| Some((b.id.upgrade()?, b.guarded)));
        let (id, guarded) = match live {
            // Its writes must be seen, and a shared mapping could write
            // anywhere through the backing file.
            Some(_) if h.writable && h.append_only => return Err(append_only_shared()),
            Some(l) => l,
            // An append-only file's handles are served cached, readers too
            // (so its writers may join them); a copy still being fetched
            // holds holes: its reads wait in the daemon for their bytes.
            None if h.append_only || h.filling() || self.fs.open_count(h.ino) > 1 => {
                return Ok(None)
            }
            None => {
                let watched = match &self.guard {
                    Some(g) if seen && !self.fs.space_tight() => g
                        .watch(h.ino, &h.file)
                        .map_err(|e| {
                            tracing::debug!(error = %e, ino = h.ino, "write guard: cannot watch; served by the daemon");
                        })
                        .ok(),
                    _ => None,
                };
                match open(watched.as_ref().unwrap_or(&h.file)) {
                    Ok(id) => {
                        let id = Arc::new(id);
                        let backed = Backed {
                            id: Arc::downgrade(&id),
                            guarded: watched.is_some(),
                        };
                        by_ino.insert(h.ino, backed);
                        (id, watched.is_some())
                    }
                    Err(e) => {
                        if let (Some(_), Some(g)) = (&watched, &self.guard) {
                            g.unwatch(h.ino);
                        }
                        warn!(error = %e, "passthrough unavailable; serving I/O through the daemon");
                        self.passthrough.store(false, Ordering::Relaxed);
                        return Ok(None);
                    }
                }
            }
        };
        self.backing_by_fh.lock().insert(h.fh, id.clone());
        if h.writable {
            // Its writes bypass the kernel's page cache of the inode.
            self.page_cache.lock().remove(&h.ino);
        }
        let flags = if seen && !guarded {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        };
        Ok(Some((id, flags)))
    }

    /// The open flags of a handle served through the daemon: keep the
    /// kernel's cached pages of the file (warm reads then never reach the
    /// daemon) when the object is as it was when they were last known
    /// good. Writes through such handles pass the page cache, so it stays
    /// right; anything else that changes the object (a passthrough writer
    /// at another time, a crash) changes its mtime or size, and the
    /// kernel then drops the pages at this open.
    fn keep_cache(&self, h: &Handle) -> FopenFlags {
        if h.filling() {
            // Its figures move as bytes land: nothing to compare with.
            self.page_cache.lock().remove(&h.ino);
            return FopenFlags::empty();
        }
        let Ok(m) = h.file.metadata() else {
            return FopenFlags::empty();
        };
        let now = (
            std::os::unix::fs::MetadataExt::mtime(&m) * 1_000_000_000
                + std::os::unix::fs::MetadataExt::mtime_nsec(&m),
            m.len(),
        );
        let before = self.page_cache.lock().insert(h.ino, now);
        if before == Some(now) {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        }
    }

    /// A handle served through the daemon closes: its writes went through
    /// the kernel's page cache, which is right for the object as it is now.
    fn cache_known_good(&self, ino: u64, fh: u64) {
        if !self.page_cache.lock().contains_key(&ino) {
            return;
        }
        if let Some(h) = self.fs.handle(fh).ok().filter(|h| !h.filling()) {
            if let Ok(m) = h.file.metadata() {
                let now = (
                    std::os::unix::fs::MetadataExt::mtime(&m) * 1_000_000_000
                        + std::os::unix::fs::MetadataExt::mtime_nsec(&m),
                    m.len(),
                );
                self.page_cache.lock().insert(ino, now);
            }
        }
    }

    fn setattr_now(&self, who: &Caller, ino: u64, set: &SetAttr, reply: ReplyAttr) {
        let _t = self.timed(const { opstats::op_index("setattr") });
        let _s = debug_span!("setattr", ino).entered();
        match self.fs.setattr(who, ino, set) {
            Ok(a) => reply.attr(&self.ttl, &fuse_attr(&a)),
            Err(e) => self.fail("setattr", ino, None, e, reply),
        }
    }

    fn open_now(&self, who: &Caller, ino: u64, flags: i32, reply: ReplyOpen) {
        let _t = self.timed(const { opstats::op_index("open") });
        let _s = debug_span!("open", ino).entered();
        // An append-only file's writer that passthrough handles keep out
        // is refused before the open, so it changes nothing (opening for
        // writing clears the recorded hash); `backing` asks again under its
        // lock, for a handle that came in between. Opens for writing come
        // on a helper thread (see `open`), which may wait. An open the
        // core refuses anyway (no O_APPEND, O_TRUNC) gets its EPERM.
        if flags & libc::O_ACCMODE != libc::O_RDONLY
            && flags & (libc::O_APPEND | libc::O_TRUNC) == libc::O_APPEND
            && self.passthrough_open(ino)
            && self.fs.is_append_only(ino)
            && !self.passthrough_gone(ino)
        {
            return self.fail("open", ino, None, append_only_shared(), reply);
        }
        // Reads reach the core (`Fs::read`) or go by passthrough, which
        // a copy still being fetched never gets: it may open streamed.
        match self.fs.open_streamed(who, ino, flags) {
            Ok(h) => {
                let mut passthrough = false;
                match self.backing(&h, |f| reply.open_backing(f)) {
                    Ok(Some((id, flags))) => {
                        passthrough = true;
                        reply.opened_passthrough(FileHandle(h.fh), flags, &id)
                    }
                    Ok(None) => reply.opened(FileHandle(h.fh), self.keep_cache(&h)),
                    Err(e) => {
                        if let Err(r) = self.fs.release(h.fh) {
                            warn!(error = %r, ino, "releasing a refused writer's handle");
                        }
                        return self.fail("open", ino, None, e, reply);
                    }
                }
                // A read through passthrough has the kernel drop its atime
                // itself (fuse_file_accessed): dropping every attribute for
                // an atime moved here made the next open's permission check
                // (default_permissions) a GETATTR round trip.
                match h.changed {
                    OpenChange::Nothing => {}
                    OpenChange::Atime if passthrough => {}
                    OpenChange::Atime | OpenChange::Attrs => self.invalidate(h.ino, false),
                }
            }
            Err(e) => self.fail("open", ino, None, e, reply),
        }
    }

    fn lookup_now(&self, parent: u64, name: &[u8], reply: ReplyEntry) {
        let _t = self.timed(const { opstats::op_index("lookup") });
        let _s = debug_span!("lookup", parent).entered();
        // "." and ".." reach the daemon only from file handles (export
        // support): the kernel asks for an inode it forgot by number, or
        // for the parent of a directory it reached that way.
        let r = match name {
            b"." => self.fs.lookup_number(parent),
            b".." => self.fs.lookup_parent(parent),
            _ => self.fs.lookup(parent, name),
        };
        self.entry("lookup", parent, name, reply, r);
    }

    fn getattr_now(&self, ino: u64, reply: ReplyAttr) {
        let _t = self.timed(const { opstats::op_index("getattr") });
        let _s = debug_span!("getattr", ino).entered();
        match self.attr_of(ino) {
            Ok(a) => reply.attr(&self.ttl, &a),
            Err(e) => self.fail("getattr", ino, None, e, reply),
        }
    }

    /// statx(2): getattr's answer with the birth time, the recorded
    /// creation time (`user.artstore.created_at`).
    fn statx_now(&self, ino: u64, reply: ReplyStatx) {
        let _t = self.timed(const { opstats::op_index("statx") });
        let _s = debug_span!("statx", ino).entered();
        match self.attr_of(ino) {
            Ok(a) => reply.statx(&self.ttl, &a),
            Err(e) => self.fail("statx", ino, None, e, reply),
        }
    }

    /// What getattr and statx answer: the inode's attributes, or those the
    /// kernel still holds of one removed while it held it.
    fn attr_of(&self, ino: u64) -> Result<FileAttr, Error> {
        match self.fs.getattr(ino) {
            Ok(a) => Ok(fuse_attr(&a)),
            Err(e) => {
                let kept = self.held.lock().get(&ino).and_then(|h| h.removed);
                match kept {
                    Some(fa) if e.errno() == libc::ENOENT => Ok(fa),
                    _ => Err(e),
                }
            }
        }
    }

    fn readdir_now(&self, ino: u64, fh: u64, offset: u64, mut reply: ReplyDirectory) {
        let _t = self.timed(const { opstats::op_index("readdir") });
        let _s = debug_span!("readdir", ino, offset).entered();
        let r = self.list(ino, fh, offset, false, |e| {
            let name = OsStr::from_bytes(&e.name);
            Some(reply.add(INodeNo(e.ino), e.offset, file_type(e.kind), name))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => self.fail("readdir", ino, None, e, reply),
        }
    }

    fn readdirplus_now(&self, ino: u64, fh: u64, offset: u64, mut reply: ReplyDirectoryPlus) {
        let _t = self.timed(const { opstats::op_index("readdirplus") });
        let _s = debug_span!("readdirplus", ino, offset).entered();
        let r = self.list(ino, fh, offset, true, |e| {
            // An entry removed since the listing was read is skipped.
            let attr = self.fs.getattr(e.ino).ok()?;
            let name = OsStr::from_bytes(&e.name);
            let full = reply.add(
                INodeNo(e.ino),
                e.offset,
                name,
                &self.ttl,
                &fuse_attr(&attr),
                Generation(0),
            );
            // The kernel takes a reference to each entry it gets ("." and
            // ".." are directories, never counted here).
            if !full {
                self.note_lookup(ino, &e.name, &attr);
            }
            Some(full)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => self.fail("readdirplus", ino, None, e, reply),
        }
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // HANDLE_KILLPRIV_V2: the kernel would otherwise ask for
        // security.capability before every write; the core drops
        // setuid/setgid itself (on open for writing, truncate and chown).
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2
            // File handles (open_by_handle_at, NFS re-export) that outlive
            // the kernel's inode cache and a remount: see `lookup_now`.
            | InitFlags::FUSE_EXPORT_SUPPORT
            // POSIX ACLs: the kernel checks them (reading them with
            // getxattr) and leaves the daemon to keep the mode in step
            // (core/acl.rs). DONT_MASK: creates carry the unmasked mode and
            // the umask, for the core applies either the directory's
            // default ACL or the umask; without it the kernel would mask
            // first (fs/fuse/dir.c) and a default ACL could not widen.
            | InitFlags::FUSE_POSIX_ACL
            | InitFlags::FUSE_DONT_MASK;
        let _ = config.add_capabilities(wanted & config.capabilities());
        let _ = config.set_max_write(1024 * 1024);
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
            tracing::info!("FUSE passthrough enabled");
        } else {
            tracing::info!("kernel lacks FUSE passthrough; I/O goes through the daemon");
        }
        if self.io_uring {
            // The vendored fuser starts the ring queues once the INIT
            // reply has granted it.
            if config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok()
            {
                tracing::info!("FUSE over io_uring requested");
            } else {
                // The usual case: the kernel's enable_uring is N by default.
                tracing::info!(
                    "serving over /dev/fuse: the kernel does not offer FUSE over io_uring \
                     (/sys/module/fuse/parameters/enable_uring is not Y)"
                );
            }
        }
        Ok(())
    }

    fn destroy(&mut self) {
        // Requests still on helper threads finish before the store closes.
        if let Some(o) = &self.offload {
            o.finish();
        }
        self.backing_by_fh.lock().clear();
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        // A miss on a remote database is a network round trip: keep it off
        // the request thread so it holds up no one else.
        if self.fs.meta_is_remote() && !self.fs.lookup_in_memory(parent.0, name.as_bytes()) {
            let name = name.as_bytes().to_vec();
            self.blocking(move |me| me.lookup_now(parent.0, &name, reply));
        } else {
            self.lookup_now(parent.0, name.as_bytes(), reply);
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Some(k) = &self.known {
            k.forget(ino.0, nlookup);
        }
        // The kernel's inode, and its pages, are gone.
        self.page_cache.lock().remove(&ino.0);
        let mut held = self.held.lock();
        if let Some(h) = held.get_mut(&ino.0) {
            h.lookups = h.lookups.saturating_sub(nlookup);
            if h.lookups == 0 {
                held.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        if self.fs.meta_is_remote() && !self.fs.getattr_in_memory(ino.0) {
            self.blocking(move |me| me.getattr_now(ino.0, reply));
        } else {
            self.getattr_now(ino.0, reply);
        }
    }

    fn statx(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: Option<FileHandle>,
        _mask: u32,
        reply: ReplyStatx,
    ) {
        if self.fs.meta_is_remote() && !self.fs.getattr_in_memory(ino.0) {
            self.blocking(move |me| me.statx_now(ino.0, reply));
        } else {
            self.statx_now(ino.0, reply);
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(wire_time),
        };
        let who = caller(req);
        // A truncate waits until its intent is durable.
        if size.is_some() {
            self.blocking(move |me| me.setattr_now(&who, ino.0, &set, reply));
        } else {
            self.setattr_now(&who, ino.0, &set, reply);
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _t = self.timed(const { opstats::op_index("readlink") });
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => self.fail("readlink", ino.0, None, e, reply),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.timed(const { opstats::op_index("mknod") });
        let _s = debug_span!("mknod", parent = parent.0).entered();
        let node = match Kind::from_mode(mode) {
            Some(Kind::File) | None => NewNode::File,
            Some(Kind::Dir) | Some(Kind::Symlink) => {
                let e = Error::posix(libc::EINVAL, "mknod makes no directory or symlink");
                return self.fail("mknod", parent.0, Some(name.as_bytes()), e, reply);
            }
            Some(kind) => NewNode::Special { kind, rdev },
        };
        let r = self
            .fs
            .create_node(&caller(req), parent.0, name.as_bytes(), node, mode, umask);
        self.entry("mknod", parent.0, name.as_bytes(), reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _t = self.timed(const { opstats::op_index("mkdir") });
        let _s = debug_span!("mkdir", parent = parent.0).entered();
        let r = self.fs.create_node(
            &caller(req),
            parent.0,
            name.as_bytes(),
            NewNode::Dir,
            mode,
            umask,
        );
        self.entry("mkdir", parent.0, name.as_bytes(), reply, r);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timed(const { opstats::op_index("unlink") });
        let _s = debug_span!("unlink", parent = parent.0).entered();
        let victim = self.held_at(parent.0, name.as_bytes());
        match self.fs.unlink(&caller(req), parent.0, name.as_bytes()) {
            Ok(()) => {
                self.keep_removed(victim);
                reply.ok()
            }
            Err(e) => self.fail("unlink", parent.0, Some(name.as_bytes()), e, reply),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timed(const { opstats::op_index("rmdir") });
        let _s = debug_span!("rmdir", parent = parent.0).entered();
        match self.fs.rmdir(&caller(req), parent.0, name.as_bytes()) {
            Ok(()) => reply.ok(),
            Err(e) => self.fail("rmdir", parent.0, Some(name.as_bytes()), e, reply),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _t = self.timed(const { opstats::op_index("symlink") });
        let _s = debug_span!("symlink", parent = parent.0).entered();
        let r = self.fs.create_node(
            &caller(req),
            parent.0,
            link_name.as_bytes(),
            NewNode::Symlink(target.as_os_str().as_bytes()),
            0o777,
            0,
        );
        self.entry("symlink", parent.0, link_name.as_bytes(), reply, r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(const { opstats::op_index("rename") });
        let _s = debug_span!("rename", parent = parent.0, newparent = newparent.0).entered();
        let mode = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            RenameMode::Exchange
        } else if flags.contains(RenameFlags::RENAME_NOREPLACE) {
            RenameMode::NoReplace
        } else if flags.is_empty() {
            RenameMode::Replace
        } else {
            let e = Error::posix(libc::EINVAL, "unknown rename flags");
            return self.fail("rename", parent.0, Some(name.as_bytes()), e, reply);
        };
        // A replaced special file the kernel holds stays visible to it.
        let victim = match mode {
            RenameMode::Replace => self.held_at(newparent.0, newname.as_bytes()).filter(|v| {
                self.fs
                    .lookup(parent.0, name.as_bytes())
                    .is_ok_and(|s| s.inode.ino != v.inode.ino)
            }),
            _ => None,
        };
        match self.fs.rename(
            &caller(req),
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            mode,
        ) {
            Ok(moved) => {
                self.keep_removed(victim);
                // A moved directory's cached listing holds the old "..":
                // its next open drops the kernel's copy (a sure thing), and
                // the notifier below drops it for handles already open.
                self.moved_dirs.lock().extend(moved.iter().copied());
                reply.ok();
                for dir in moved {
                    self.invalidate(dir, true);
                }
            }
            Err(e) => self.fail("rename", parent.0, Some(name.as_bytes()), e, reply),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _t = self.timed(const { opstats::op_index("link") });
        let _s = debug_span!("link", ino = ino.0, newparent = newparent.0).entered();
        let r = self
            .fs
            .link(&caller(req), ino.0, newparent.0, newname.as_bytes());
        self.entry("link", newparent.0, newname.as_bytes(), reply, r);
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let who = caller(req);
        // Opening for writing may wait until its intent is durable.
        let writes = flags.0 & libc::O_ACCMODE != libc::O_RDONLY || flags.0 & libc::O_TRUNC != 0;
        // So may fetching a file a remote content store has not cached.
        if writes || self.fs.content_is_remote() {
            self.blocking(move |me| me.open_now(&who, ino.0, flags.0, reply));
        } else {
            self.open_now(&who, ino.0, flags.0, reply);
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.timed(const { opstats::op_index("create") });
        let _s = debug_span!("create", parent = parent.0).entered();
        match self
            .fs
            .create(&caller(req), parent.0, name.as_bytes(), mode, umask, flags)
        {
            Ok((attr, h)) => self.created(reply, &attr, &h),
            Err(e) => self.fail("create", parent.0, Some(name.as_bytes()), e, reply),
        }
    }

    fn tmpfile(
        &self,
        req: &Request,
        parent: INodeNo,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _t = self.timed(const { opstats::op_index("tmpfile") });
        let _s = debug_span!("tmpfile", parent = parent.0).entered();
        match self.fs.tmpfile(&caller(req), parent.0, mode, umask, flags) {
            Ok((attr, h)) => self.created(reply, &attr, &h),
            Err(e) => self.fail("tmpfile", parent.0, None, e, reply),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let read = move |me: &Shared| {
            let fs = &me.fs;
            let _t = fs.ops().time_at(const { opstats::op_index("read") });
            match fs.read(fh.0, offset, size as usize) {
                Ok(d) => reply.data(&d),
                Err(e) => me.fail("read", ino.0, None, e, reply),
            }
        };
        // Bytes of a file being fetched that have landed are in memory: a
        // hand-off would cost more than the copy (a reader trailing the
        // fetch reads mostly these).
        if self.fs.read_is_quick(fh.0, offset, size as usize) {
            read(self);
        } else {
            self.blocking(read);
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // A write into the page cache is quicker served here than handed
        // to a helper thread (a wake-up and a copy: with a capacity, 4 KiB
        // random writes ran at half the rate). One that may have to purge
        // the trash first waits for the writer: a helper takes it.
        let from_cache = write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        if self
            .fs
            .write_is_quick(ino.0, offset.saturating_add(data.len() as u64))
        {
            let _t = self.timed(const { opstats::op_index("write") });
            match self.fs.write(fh.0, offset, data) {
                Ok(n) => reply.written(n as u32),
                Err(e) => {
                    self.fail("write", ino.0, None, e, reply);
                    if from_cache {
                        self.drop_refused_pages(ino.0);
                    }
                }
            }
            return;
        }
        let data = data.to_vec();
        self.blocking(move |me| {
            let fs = &me.fs;
            let _t = fs.ops().time_at(const { opstats::op_index("write") });
            match fs.write(fh.0, offset, &data) {
                Ok(n) => reply.written(n as u32),
                Err(e) => {
                    me.fail("write", ino.0, None, e, reply);
                    if from_cache {
                        me.drop_refused_pages(ino.0);
                    }
                }
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(const { opstats::op_index("flush") });
        if self.fs.content_is_remote() {
            // A remote store sends a written file at its close, on a
            // helper: the caller's close(2) waits for the upload, the
            // mount's other requests do not (see `Fs::flush`).
            if self.fs.flush_sends(fh.0) {
                self.blocking(move |me| {
                    let _s = debug_span!("flush", fh = fh.0).entered();
                    me.empty("flush", ino.0, reply, me.fs.flush(fh.0))
                });
            } else {
                reply.ok();
            }
            return;
        }
        // Nothing to do at close (metadata catches up at release); ENOSYS
        // tells the kernel to stop sending flush, saving a round trip per close.
        // A protocol answer, not a failure: not logged or counted (see `fail`).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // On the request thread: a last close costs a few microseconds
        // (hashing at close stops at 1 MiB, see `checksum`), less than a
        // hand-off to a helper. (Also over the ring, where it runs on the
        // caller's CPU: handed to a helper, creates took 120-170 µs
        // instead of 100-113.)
        let _t = self.timed(const { opstats::op_index("release") });
        let _s = debug_span!("release", fh = fh.0).entered();
        // Tests slow a release here (`sleep(ms)`), as a busy daemon would.
        fail::fail_point!("fuse::release");
        let backing = self.backing_by_fh.lock().remove(&fh.0);
        if backing.is_none() {
            self.cache_known_good(ino.0, fh.0);
        }
        let r = if backing.is_some() {
            // A shared mapping of it writes the object, past the daemon.
            self.fs.release_bypassed(fh.0)
        } else {
            self.fs.release(fh.0)
        };
        if let Some(b) = backing {
            drop(b);
            // The inode's last passthrough handle: its entry goes too (a
            // million files created kept a million entries otherwise).
            let mut by_ino = self.backing_by_ino.lock();
            if by_ino.get(&ino.0).is_some_and(|b| b.id.strong_count() == 0) {
                by_ino.remove(&ino.0);
                if let Some(g) = &self.guard {
                    g.unwatch(ino.0);
                }
            }
        }
        self.empty("release", ino.0, reply, r)
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.blocking(move |me| {
            let fs = &me.fs;
            let _t = fs.ops().time_at(const { opstats::op_index("fsync") });
            let _s = debug_span!("fsync", fh = fh.0).entered();
            me.empty("fsync", ino.0, reply, fs.fsync(fh.0, datasync))
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _t = self.timed(const { opstats::op_index("opendir") });
        match self.fs.opendir(ino.0) {
            // The kernel may cache listings: changes through the mount
            // invalidate them, and a directory moved by rename (whose ".."
            // changed) is invalidated after the rename's reply.
            Ok(a) if a.inode.kind.is_dir() => {
                let fh = self.next_dir_fh.fetch_add(1, Ordering::Relaxed);
                self.listings.lock().insert(fh, Listing::default());
                let mut flags = FopenFlags::FOPEN_CACHE_DIR;
                if !self.moved_dirs.lock().remove(&ino.0) {
                    flags |= FopenFlags::FOPEN_KEEP_CACHE;
                }
                reply.opened(FileHandle(fh), flags)
            }
            Ok(_) => self.fail("opendir", ino.0, None, enotdir(), reply),
            Err(e) => self.fail("opendir", ino.0, None, e, reply),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        // A listing read from the store waits for pending changes to commit.
        if self.fs.readdir_waits(ino.0) {
            self.blocking(move |me| me.readdir_now(ino.0, fh.0, offset, reply));
        } else {
            self.readdir_now(ino.0, fh.0, offset, reply);
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(const { opstats::op_index("releasedir") });
        self.listings.lock().remove(&fh.0);
        if let Err(e) = self.fs.releasedir(ino.0) {
            warn!(ino = ino.0, error = %e, "could not reclaim a removed directory");
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        if self.fs.readdir_waits(ino.0) {
            self.blocking(move |me| me.readdirplus_now(ino.0, fh.0, offset, reply));
        } else {
            self.readdirplus_now(ino.0, fh.0, offset, reply);
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.blocking(move |me| {
            let fs = &me.fs;
            let _t = fs.ops().time_at(const { opstats::op_index("fsyncdir") });
            me.empty("fsyncdir", ino.0, reply, fs.sync_meta())
        });
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _t = self.timed(const { opstats::op_index("statfs") });
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => self.fail("statfs", ino.0, None, e, reply),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _t = self.timed(const { opstats::op_index("setxattr") });
        let _s = debug_span!("setxattr", ino = ino.0).entered();
        let r = self
            .fs
            .setxattr(&caller(req), ino.0, name.as_bytes(), value, flags);
        self.empty("setxattr", ino.0, reply, r)
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _t = self.timed(const { opstats::op_index("getxattr") });
        let _s = debug_span!("getxattr", ino = ino.0).entered();
        match self.fs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) => self.xattr_reply("getxattr", ino.0, reply, &v, size),
            Err(e) => self.fail("getxattr", ino.0, None, e, reply),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _t = self.timed(const { opstats::op_index("listxattr") });
        match self.fs.listxattr_with(ino.0, self.list_computed_xattrs) {
            Ok(v) => self.xattr_reply("listxattr", ino.0, reply, &v, size),
            Err(e) => self.fail("listxattr", ino.0, None, e, reply),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _t = self.timed(const { opstats::op_index("removexattr") });
        let r = self.fs.removexattr(&caller(req), ino.0, name.as_bytes());
        self.empty("removexattr", ino.0, reply, r)
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _t = self.timed(const { opstats::op_index("access") });
        // With default_permissions the kernel checks mode bits itself.
        match self.fs.getattr(ino.0) {
            Ok(_) => reply.ok(),
            Err(e) => self.fail("access", ino.0, None, e, reply),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.blocking(move |me| {
            let fs = &me.fs;
            let _t = fs.ops().time_at(const { opstats::op_index("fallocate") });
            me.empty(
                "fallocate",
                ino.0,
                reply,
                fs.fallocate(fh.0, offset, length, mode),
            )
        });
    }

    /// No ioctls are served (as ext4 answers TCGETS, which many programs
    /// send at every open): ENOTTY, quietly (fuser's default logs a
    /// warning for each).
    /// `chattr`/`lsattr`: the kernel turns FS_IOC_GETFLAGS/SETFLAGS and
    /// FS_IOC_FSGETXATTR/FSSETXATTR into these, on a handle it opened
    /// itself, after its own permission checks. Anything else is ENOTTY.
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let _t = self.timed(const { opstats::op_index("ioctl") });
        let ino = ino.0;
        let set = match cmd {
            attr_ioctl::SETFLAGS => attr_ioctl::flags_in(in_data),
            attr_ioctl::FSSETXATTR => attr_ioctl::xflags_in(in_data),
            attr_ioctl::GETFLAGS | attr_ioctl::FSGETXATTR => {
                return match self.fs.get_flags(ino) {
                    Ok(f) if cmd == attr_ioctl::GETFLAGS => reply.ioctl(0, &f.to_ne_bytes()),
                    Ok(f) => reply.ioctl(0, &attr_ioctl::fsxattr(f)),
                    Err(e) => self.fail("ioctl", ino, None, e, reply),
                };
            }
            // Not logged or counted either (see `fail`).
            _ => return reply.error(Errno::ENOTTY),
        };
        let flags = match set {
            Ok(f) => f,
            Err(e) => return self.fail("ioctl", ino, None, e, reply),
        };
        let who = caller(req);
        match self.fs.set_flags(&who, ino, flags) {
            Err(e) if e.errno() == libc::EBUSY => {
                // A writer just closed may still count: the kernel sends
                // its release after close(2) returns (`echo x > f; chattr
                // +a f`). Waited for on a helper thread, as the request
                // thread serves that release; then asked again.
                self.blocking(move |me| {
                    me.writers_gone(ino);
                    let r = me.fs.set_flags(&who, ino, flags);
                    me.flags_set(ino, r.map(|_| ()), reply);
                });
            }
            r => self.flags_set(ino, r.map(|_| ()), reply),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _t = self.timed(const { opstats::op_index("lseek") });
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => self.fail("lseek", ino.0, None, e, reply),
        }
    }
}
