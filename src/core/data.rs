//! Open files and their data: open/create, read, write, fsync, release,
//! fallocate, lseek. While an inode is open its object file is the truth
//! for size and content; metadata catches up at fsync and last release.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;

use super::archive_attrs;
use super::handles::{Handle, OpenChange, OpenInode};
use super::namespace::NewNode;
use super::policy::Change;
use super::{Attr, Fs};
use crate::types::error::{ebadf, eisdir, Error, Result};
use crate::types::journal;
use crate::types::{Caller, Kind, Timestamp};
use serde_json::json;

impl Fs {
    /// Open a regular file. Whoever holds the handle may read its
    /// descriptor directly (the API's downloads do): the content is whole.
    pub fn open(&self, caller: &Caller, ino: u64, flags: i32) -> Result<Arc<Handle>> {
        self.open_with(caller, ino, flags, false)
    }

    /// [`Fs::open`] for a door that reads through [`Fs::read`] (the FUSE
    /// door), or waits on [`Handle::fetch`] before it reads the
    /// descriptor itself (the API's downloads): opened for reading only,
    /// a large file of a remote store may be returned while it is
    /// fetched, each read waiting for the bytes it needs.
    pub fn open_streamed(&self, caller: &Caller, ino: u64, flags: i32) -> Result<Arc<Handle>> {
        self.open_with(caller, ino, flags, true)
    }

    fn open_with(
        &self,
        caller: &Caller,
        ino: u64,
        flags: i32,
        streamed: bool,
    ) -> Result<Arc<Handle>> {
        // What a shared mapping wrote since the last close is recorded
        // first: a remote store would take it for damage.
        self.settle_if_lingering(ino);
        let _pin = self.pin_open(ino);
        // Tests hold an open here while the file is replaced.
        fail::fail_point!("open::pinned");
        let inode = self.inode(ino)?;
        match inode.kind {
            Kind::File => {}
            Kind::Dir => return Err(eisdir()),
            _ => return Err(Error::posix(libc::ENXIO, "not a regular file")),
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let readable = flags & libc::O_ACCMODE != libc::O_WRONLY;
        if readable {
            self.allow(Change::Read)?;
        }
        if writable {
            self.allow(Change::Write)?;
            if flags & libc::O_TRUNC != 0 && inode.size > 0 {
                self.allow(Change::Shrink)?;
            }
            archive_attrs::check_retention(&self.xattr_list(ino)?)?;
            super::flags::check_open_for_writing(&inode, flags)?;
        }
        let changed = self.on_open(caller, &inode, readable, writable)?;
        // Writes through this handle may reach the object without passing
        // here (passthrough): the intent must be durable before the handle
        // exists, unless another writer's intent already covers the file.
        let mut intent = None;
        if writable && !self.has_write_intent(ino) {
            let rec = journal::Record::new(
                journal::Op::Write,
                journal::Status::Pending,
                Some(inode.file_id.clone()),
                json!({ "ino": ino, "size": inode.size }),
            )
            .by_caller(caller);
            intent = Some(self.durable_intent(rec, Some(ino))?);
            crate::crash_point!("open::after_intent");
        }
        let streamed = streamed && !writable;
        let handle = self.open_handle_with(
            caller.describe(),
            ino,
            writable,
            changed,
            intent,
            None,
            streamed,
        )?;
        if writable {
            // Once this writer is registered no close records a hash (see
            // persist_open); one recorded by a close that raced with this
            // open is dropped here.
            self.mutate(|tx| {
                let mut i = tx.inode(ino)?;
                if i.sha256.take().is_some() {
                    tx.put(&i)?;
                }
                Ok(())
            })?;
        }
        Ok(handle)
    }

    /// Register a handle on a regular file's object.
    pub(super) fn open_handle(
        &self,
        caller: &Caller,
        ino: u64,
        writable: bool,
        changed: OpenChange,
        intent: Option<uuid::Uuid>,
    ) -> Result<Arc<Handle>> {
        self.open_handle_with(
            caller.describe(),
            ino,
            writable,
            changed,
            intent,
            None,
            false,
        )
    }

    /// `open_handle`, with the object already open when it was just made;
    /// `streamed`: for reads through [`Fs::read`] only (see
    /// [`Fs::open_streamed`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_handle_with(
        &self,
        opener: String,
        ino: u64,
        writable: bool,
        changed: OpenChange,
        intent: Option<uuid::Uuid>,
        object: Option<super::objpool::Made>,
        streamed: bool,
    ) -> Result<Arc<Handle>> {
        let fail = |e: Error| {
            if let Some(id) = intent {
                self.fail_intent(id, &e);
            }
            e
        };
        // A streamed reader opening the file first takes its copy as it
        // comes; anyone else waits for a copy still being fetched.
        let mut partial = None;
        if object.is_none() && streamed && !self.has_handles(ino) {
            self.expect_version(ino);
            partial = Some(self.open_object_partial(ino)?);
        } else if object.is_none() {
            // A streamed reader shares a copy being fetched as it is.
            let filling = !streamed && self.fill_of(ino).is_some();
            if writable || filling || !self.has_handles(ino) {
                self.expect_version(ino);
                // A remote store fetches here, outside the lock every open
                // takes, and records that writes may follow.
                if let Err(e) = self.objects.warm(ino, writable) {
                    if writable || filling {
                        return Err(fail(Error::from(e)));
                    }
                }
            }
        }
        let (file, fill) = loop {
            let mut open = self.files.inodes.lock();
            if let Some(o) = open.get_mut(&ino) {
                if !streamed && o.filling().is_some() {
                    // Fetched while read since the check above.
                    drop(open);
                    self.objects
                        .warm(ino, writable)
                        .map_err(|e| fail(e.into()))?;
                    continue;
                }
                o.count += 1;
                o.writers += u32::from(writable);
                o.intents.extend(intent);
                let shared = (o.file.clone(), o.fill.clone());
                drop(open);
                // Another open came first: this one's object goes back.
                if let Some((f, _)) = partial.take() {
                    self.close_object(ino, &f);
                }
                break shared;
            }
            // A new file's object comes with its mtime; an existing
            // one is asked (one being fetched: the content's).
            let opened = match (object, partial.take()) {
                (Some(m), _) => Ok((m.file, m.mtime, None)),
                (None, Some((f, Some(fill)))) => {
                    let mtime = fill.figures().mtime;
                    Ok((f, mtime, Some(fill)))
                }
                (None, Some((f, None))) => f
                    .metadata()
                    .map(|m| (f, Timestamp::mtime_of(&m), None))
                    .map_err(Error::from),
                (None, None) => self.open_object(ino).and_then(|f| {
                    let m = f.metadata()?;
                    Ok((f, Timestamp::mtime_of(&m), None))
                }),
            };
            let (file, base_mtime, fill) = match opened {
                Ok((f, mtime, fill)) => (Arc::new(f), mtime, fill),
                Err(e) => {
                    drop(open);
                    return Err(fail(e));
                }
            };
            open.insert(
                ino,
                OpenInode {
                    count: 1,
                    file: file.clone(),
                    base_mtime,
                    writers: u32::from(writable),
                    intents: intent.into_iter().collect(),
                    fill: fill.clone(),
                },
            );
            break (file, fill);
        };
        let fh = self.files.next_fh();
        let append_only = self.is_append_only(ino);
        let handle = Arc::new(Handle {
            fh,
            ino,
            file,
            writable,
            changed,
            append_only,
            opener,
            fill,
        });
        self.files.handles.lock().insert(fh, handle.clone());
        Ok(handle)
    }

    /// Metadata effects of opening; returns what changed (the door may
    /// have to tell the kernel, whose cached copy is stale).
    /// - atime by the mount's rule (`options::Atime`: relatime unless
    ///   mounted noatime or strictatime): reads may bypass the daemon
    ///   through passthrough, so opening for reading counts as the read;
    /// - setuid/setgid dropped when a non-root caller opens for writing
    ///   (`access::perm_after_write`; passthrough writes never reach us,
    ///   ext4 drops them at the first write).
    fn on_open(
        &self,
        caller: &Caller,
        inode: &crate::types::Inode,
        readable: bool,
        writable: bool,
    ) -> Result<OpenChange> {
        const DAY_NS: i64 = 24 * 3600 * 1_000_000_000;
        let now = Timestamp::now();
        // A read-only store records no atime (as a read-only mount).
        // Nor does a file marked noatime (chattr +A).
        let stale_atime = readable
            && inode.flags & crate::types::flags::NOATIME == 0
            && self.allow(Change::Metadata).is_ok()
            && match self.atime {
                super::options::Atime::Never => false,
                super::options::Atime::Always => true,
                super::options::Atime::Relative => {
                    inode.atime <= inode.mtime
                        || inode.atime <= inode.ctime
                        || now.0 - inode.atime.0 > DAY_NS
                }
            };
        let kill = writable
            && inode.perm & (libc::S_ISUID | libc::S_ISGID) != 0
            && super::access::perm_after_write(inode.perm, inode.gid, caller) != inode.perm;
        if !stale_atime && !kill {
            return Ok(OpenChange::Nothing);
        }
        self.mutate(|tx| {
            let mut i = tx.inode(inode.ino)?;
            if stale_atime {
                // Newer than mtime and ctime once read, as relatime needs:
                // file times have the kernel's coarse resolution, so a read
                // in the tick of the last change would otherwise tie (a
                // change time set ahead by hand is not followed).
                let changed = i.mtime.max(i.ctime);
                i.atime = if changed >= now && changed.0 - now.0 < 50_000_000 {
                    Timestamp(changed.0 + 1)
                } else {
                    now
                };
            }
            if kill {
                i.perm = super::access::perm_after_write(i.perm, i.gid, caller);
                i.ctime = now;
            }
            tx.put(&i)
        })?;
        Ok(if kill {
            OpenChange::Attrs
        } else {
            OpenChange::Atime
        })
    }

    pub fn create(
        &self,
        caller: &Caller,
        parent: u64,
        name: &[u8],
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Attr, Arc<Handle>)> {
        let made = self.make_open(caller, parent, Some(name), mode, umask, flags)?;
        crate::crash_point!("create::after_object");
        Ok(made)
    }

    /// A new regular file, named `name` (none: O_TMPFILE), open.
    fn make_open(
        &self,
        caller: &Caller,
        parent: u64,
        name: Option<&[u8]>,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Attr, Arc<Handle>)> {
        // The create's log row stays pending while the file is open: it is
        // the write intent of the new handle. Its object may appear before
        // the row commits; the inode number's `reserve` row covers that.
        // The object is usually one made ahead of need (see `objpool`).
        let (attr, intent, object) = self.with_room(0, || {
            self.make_node(caller, parent, name, NewNode::File, mode, umask, true)
        })?;
        // None made ahead of need (the first create, or creates outrunning
        // the pool): made as new here too. The open's own path would ask a
        // remote store (listing the bucket, failing with it away); it is
        // left only for what goes wrong.
        let object =
            object.or_else(|| super::objpool::Made::create(&*self.objects, attr.inode.ino).ok());
        // A new file has nothing to read and no privileges to drop.
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let handle = self.open_handle_with(
            caller.describe(),
            attr.inode.ino,
            writable,
            OpenChange::Nothing,
            Some(intent),
            object,
            false,
        )?;
        Ok((attr, handle))
    }

    /// `open(2)` with `O_TMPFILE`: a new regular file in directory `parent`
    /// with no name (nlink 0), open. `link` may name it while it is open
    /// (`linkat` of the descriptor, how such a file is published whole);
    /// otherwise it goes at its last close, or at the next mount after a
    /// crash, as a file unlinked while open does.
    pub fn tmpfile(
        &self,
        caller: &Caller,
        parent: u64,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Result<(Attr, Arc<Handle>)> {
        self.make_open(caller, parent, None, mode, umask, flags)
    }

    pub fn handle(&self, fh: u64) -> Result<Arc<Handle>> {
        self.files
            .handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or_else(ebadf)
    }

    /// Whether a read can be served without waiting on anything but
    /// memory: the bytes of a copy being fetched that have just landed
    /// (in the page cache). Other reads through the daemon may wait on
    /// the disk, or on the fetch.
    pub fn read_is_quick(&self, fh: u64, offset: u64, size: usize) -> bool {
        self.handle(fh).is_ok_and(|h| {
            h.fetch()
                .is_some_and(|f| f.ready(offset..offset.saturating_add(size as u64)))
        })
    }

    pub fn read(&self, fh: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let h = self.handle(fh)?;
        if let Some(f) = h.fetch() {
            // Holes until the bytes come: never read as zeros.
            f.wait(offset..offset.saturating_add(size as u64))?;
        }
        // Read into spare capacity: zeroing the buffer first cost as much
        // as the copy (reads of a file being fetched are CPU-bound).
        let mut buf: Vec<u8> = Vec::with_capacity(size);
        let fd = h.file.as_raw_fd();
        while buf.len() < size {
            let done = buf.len();
            // SAFETY: pread writes at most `size - done` bytes at the end
            // of the buffer's spare capacity, which is that long; the
            // length then counts only the bytes it wrote.
            let n = unsafe {
                libc::pread(
                    fd,
                    buf.as_mut_ptr().add(done).cast(),
                    size - done,
                    (offset + done as u64) as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if n == 0 {
                break;
            }
            // SAFETY: the n bytes after `done` were just written.
            unsafe { buf.set_len(done + n as usize) };
        }
        Ok(buf)
    }

    /// Whether a write ending at `end` can go without waiting on anything
    /// but the page cache: it needs no purge of the trash to make room (a
    /// purge waits for the metadata writer).
    pub fn write_is_quick(&self, ino: u64, end: u64) -> bool {
        if self.trash_ino().is_none() || self.trash_bytes_known() == Some(0) {
            return true;
        }
        let grow = end.saturating_sub(self.inode(ino).map_or(0, |i| i.size));
        grow == 0
            || (!self.space_tight()
                && self
                    .capacity()
                    .is_none_or(|cap| self.usage().0.saturating_add(grow) <= cap))
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize> {
        self.write_with(fh, offset, data.len(), |file| {
            Ok(file.write_all_at(data, offset)?)
        })
    }

    /// [`Fs::write`] of `pieces`, one after the other, in one `pwritev`
    /// (an upload's body, written where it arrived).
    pub(crate) fn write_pieces(
        &self,
        fh: u64,
        offset: u64,
        pieces: &[bytes::Bytes],
    ) -> Result<usize> {
        let len = pieces.iter().map(bytes::Bytes::len).sum();
        self.write_with(fh, offset, len, |file| {
            Ok(pwritev_all(file, pieces, offset)?)
        })
    }

    /// [`Fs::write`] of `data` through `direct`, the handle's object
    /// opened again with O_DIRECT (an upload's body: see `direct_fill`).
    /// `data` and `offset` are aligned as O_DIRECT requires.
    pub(crate) fn write_direct(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        direct: &File,
    ) -> Result<usize> {
        self.write_with(fh, offset, data.len(), |_| {
            Ok(direct.write_all_at(data, offset)?)
        })
    }

    /// A write of `len` bytes at `offset` through `fh`, done by `put`
    /// once every rule allows it and the room is reserved.
    fn write_with(
        &self,
        fh: u64,
        offset: u64,
        len: usize,
        put: impl Fn(&File) -> Result<()>,
    ) -> Result<usize> {
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(ebadf());
        }
        // The mode may have changed since the open (a change lets the
        // writers open before it finish, see `change_mode`).
        self.allow_handle_write()?;
        let end = offset.saturating_add(len as u64);
        // Short of space, the oldest trash makes way (see `trash`).
        let need = len as u64;
        let inode = self.inode(h.ino)?;
        if inode.flags != 0 {
            // The object is the truth for an open file's length.
            super::flags::check_write(&inode, offset, h.file.metadata()?.len())?;
        }
        let size = inode.size;
        self.make_room(end.saturating_sub(size));
        self.with_room(need, || self.reserve_size(h.ino, end))?;
        self.with_room(need, || put(&h.file))?;
        Ok(len)
    }

    /// Whether closing `fh` has work to do before close(2) returns: on a
    /// remote content store, a handle open for writing sends its changes
    /// then (see [`Fs::flush`]).
    pub fn flush_sends(&self, fh: u64) -> bool {
        self.objects.is_remote() && self.handle(fh).is_ok_and(|h| h.writable)
    }

    /// A close(2) of `fh` (every descriptor's, not only the last): a
    /// remote store sends what the file holds that it does not, and the
    /// size and version are recorded together, as at the last release,
    /// which then finds nothing left to send. The doors run this aside,
    /// so a large upload holds up only the closing caller, not the
    /// mount's other requests (the last release runs in order on the
    /// request thread). A send that fails is not the close's error: the
    /// changes stay in the cache and the store's sender retries them.
    pub fn flush(&self, fh: u64) -> Result<()> {
        let h = self.handle(fh)?;
        if !h.writable || !self.objects.is_remote() || self.role() != super::options::Role::Writer {
            return Ok(());
        }
        match self.send_open(h.ino, &h.file) {
            Some(v) => {
                crate::crash_point!("flush::after_send");
                self.persist_open(h.ino, &[], Some(&v))
            }
            None => Ok(()),
        }
    }

    /// Make the file's data and metadata durable.
    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let h = self.handle(fh)?;
        let sent = self.objects.fsync(h.ino, &h.file, datasync)?;
        self.persist_open(h.ino, &[], sent.as_ref())?;
        self.sync_meta()
    }

    /// Commit all metadata changes so far and make them durable (fsync,
    /// fsyncdir).
    pub fn sync_meta(&self) -> Result<()> {
        self.wait_committed()?;
        self.meta.sync()
    }

    /// At unmount, close what the doors left open. The kernel drops the
    /// RELEASE requests still queued when an unmount ends the connection,
    /// so files and directories closed just before it would otherwise keep
    /// their unrecorded sizes, and removed ones would wait for the next
    /// mount to be reclaimed.
    pub(crate) fn release_all(&self) {
        let fhs: Vec<u64> = self.files.handles.lock().keys().copied().collect();
        for fh in fhs {
            if let Err(e) = self.release(fh) {
                tracing::warn!(fh, error = %e, "could not close a file left open at unmount");
            }
        }
        let dirs: Vec<u64> = self.files.dirs.lock().keys().copied().collect();
        for ino in dirs {
            self.files.dirs.lock().insert(ino, 1);
            if let Err(e) = self.releasedir(ino) {
                tracing::warn!(ino, error = %e, "could not close a directory left open at unmount");
            }
        }
    }

    pub fn release(&self, fh: u64) -> Result<()> {
        self.release_with(fh, false)
    }

    /// [`Fs::release`] of a handle whose I/O went to the object without
    /// passing the daemon (FUSE passthrough): a shared mapping of it may
    /// write on after the close (see `mapped`).
    pub fn release_bypassed(&self, fh: u64) -> Result<()> {
        self.release_with(fh, true)
    }

    fn release_with(&self, fh: u64, bypassed: bool) -> Result<()> {
        let h = self.files.handles.lock().remove(&fh).ok_or_else(ebadf)?;
        // The intents settle with the last writer (or last handle), in the
        // same commit as the size they lead to.
        let (settle, last_writer) = {
            let mut open = self.files.inodes.lock();
            match open.get_mut(&h.ino) {
                Some(o) => {
                    o.writers -= u32::from(h.writable);
                    let last_writer = h.writable && o.writers == 0;
                    if o.writers == 0 || o.count == 1 {
                        (std::mem::take(&mut o.intents), last_writer)
                    } else {
                        (Vec::new(), last_writer)
                    }
                }
                None => (Vec::new(), false),
            }
        };
        crate::crash_point!("release::before_persist");
        // Every release records the object's size and times (staged in
        // memory, so cheap): no write through any handle goes unrecorded,
        // whichever handle happens to close last. Not on a follower: it
        // wrote nothing, and what the shared object shows is the writer's
        // to record.
        let follower = self.role() != super::options::Role::Writer;
        // The last handle on a remote store sends what changed first, so
        // that the size recorded below and the version it was sent as
        // commit together (a failure leaves the changes to the store's
        // sender, and the version to a later commit).
        let sent = if follower {
            None
        } else {
            self.send_before_last_release(h.ino)
        };
        let result = if follower {
            Ok(())
        } else {
            self.persist_open(h.ino, &settle, sent.as_ref())
        };
        let last = {
            let mut open = self.files.inodes.lock();
            match open.get_mut(&h.ino) {
                Some(o) if o.count > 1 => {
                    o.count -= 1;
                    None
                }
                Some(_) => open.remove(&h.ino).map(|o| o.file),
                None => None,
            }
        };
        // The last handle: a remote store sends what changed since (a
        // failure keeps the changes in its cache, retried; see
        // `blob::S3Store`).
        if let Some(file) = &last {
            self.close_object(h.ino, file);
        }
        if last.is_some() {
            self.reclaim_if_unlinked(h.ino)?;
        }
        if last_writer && !follower && (bypassed || self.lingers(h.ino)) {
            self.linger(h.ino, &h.file);
        }
        result
    }

    /// Tell a remote store which version of `ino` the tables name, before
    /// it opens the object: a follower's copy of it is served without
    /// asking the bucket.
    fn expect_version(&self, ino: u64) {
        if self.objects.is_remote() {
            let version = self.inode(ino).ok().and_then(|i| i.version);
            self.objects.expect_version(ino, version.as_deref());
        }
    }

    /// Send the content of `ino`, open, through a remote store, if this
    /// is its last handle and it is still named (see `release`).
    fn send_before_last_release(&self, ino: u64) -> Option<crate::blob::NewVersion> {
        if !self.objects.is_remote() {
            return None;
        }
        let file = match self.files.inodes.lock().get(&ino) {
            Some(o) if o.count == 1 && o.fill.is_none() => o.file.clone(),
            _ => return None,
        };
        if self.inode(ino).is_ok_and(|i| i.nlink == 0) {
            // Reclaimed at this close: nothing to keep.
            return None;
        }
        self.send_open(ino, &file)
    }

    /// Send an open file's changes through a remote store at a close; a
    /// failure is logged, not the close's error (the changes stay in the
    /// cache, and the store's sender retries them).
    fn send_open(&self, ino: u64, file: &std::fs::File) -> Option<crate::blob::NewVersion> {
        self.objects
            .send(ino, file)
            .inspect_err(
                |e| tracing::warn!(ino, error = %e, "could not send a closed file's content"),
            )
            .ok()
            .flatten()
    }

    /// Hand a local file of `ino` back to the store (the last handle, a
    /// truncate of a closed file, an open that lost a race), recording
    /// any version it sent.
    pub(crate) fn close_object(&self, ino: u64, file: &std::fs::File) {
        match self.objects.close(ino, file) {
            Ok(None) => {}
            Ok(Some(v)) => {
                if let Err(e) = self.record_versions(vec![v]) {
                    tracing::warn!(ino, error = %e, "could not record a sent content version");
                }
            }
            Err(e) => tracing::warn!(ino, error = %e, "could not send a closed file's content"),
        }
    }

    /// Record content versions a remote store made or found (see
    /// `blob::NewVersion`): each that is newer than what the tables name.
    pub(crate) fn record_versions(&self, versions: Vec<crate::blob::NewVersion>) -> Result<()> {
        if versions.is_empty() {
            return Ok(());
        }
        self.mutate(|tx| {
            tx.exempt = true;
            for v in &versions {
                let mut i = match tx.inode(v.ino) {
                    Ok(i) => i,
                    // Removed meanwhile: its versions went with it.
                    Err(e) if e.errno() == libc::ENOENT => continue,
                    Err(e) => return Err(e),
                };
                if tx.record_version(&mut i, v) {
                    tx.put(&i)?;
                }
            }
            Ok(())
        })
    }

    /// Record the versions the content store reported since last asked
    /// (sent in the background, found newer at a restart).
    pub(crate) fn record_reported_versions(&self) {
        let versions = self.objects.take_versions();
        let n = versions.len();
        if let Err(e) = self.record_versions(versions) {
            // The store reports them again at its next start.
            tracing::warn!(count = n, error = %e, "could not record sent content versions");
        }
    }

    /// Reclaim `ino` if its last name went while it was open and nothing
    /// holds it open any more.
    fn reclaim_if_unlinked(&self, ino: u64) -> Result<()> {
        let follower = self.role() != super::options::Role::Writer;
        if !follower && self.inode(ino).is_ok_and(|i| i.nlink == 0) {
            self.mutate(|tx| {
                let inode = match tx.inode(ino) {
                    Ok(i) => i,
                    // Reclaimed meanwhile by another last close.
                    Err(e) if e.errno() == libc::ENOENT => return Ok(()),
                    Err(e) => return Err(e),
                };
                if inode.nlink == 0 && !self.is_open(ino) {
                    tx.remove(&inode)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Count `ino` as open until the returned pin is dropped, and make
    /// sure a reclaim that decided otherwise is visible first: a reclaim
    /// decides (`is_open`) and removes the inode in one mutation, so once
    /// the mutation lock has been free after the pin was taken, the inode
    /// is either gone (the open finds no inode) or stays until the pin, or
    /// the handle it becomes, goes. Without it an open that found the
    /// inode could be reclaimed under it while it opened the object (a
    /// remote store's fetch takes a while), and end up a handle on a file
    /// that no longer exists.
    fn pin_open(&self, ino: u64) -> OpenPin<'_> {
        *self.files.pins.lock().entry(ino).or_default() += 1;
        drop(self.mutate.lock());
        OpenPin { fs: self, ino }
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let h = self.handle(fh)?;
        // COLLAPSE_RANGE and INSERT_RANGE never reach a FUSE daemon (the
        // kernel refuses them); UNSHARE_RANGE means nothing here.
        let allowed =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !allowed != 0 {
            return Err(Error::posix(libc::EOPNOTSUPP, "unsupported fallocate mode"));
        }
        if !h.writable {
            return Err(ebadf());
        }
        // Punching or zeroing a range discards data, as shrinking does.
        let discards = mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0;
        super::flags::check(
            &self.inode(h.ino)?,
            if discards {
                super::flags::Touch::Overwrite
            } else {
                super::flags::Touch::Append
            },
        )?;
        if discards {
            self.allow(Change::Shrink)?;
        } else {
            self.allow_handle_write()?;
        }
        if !discards {
            self.make_room(length);
        }
        if mode & (libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE) == 0 {
            self.with_room(length, || {
                self.reserve_size(h.ino, offset.saturating_add(length))
            })?;
        }
        self.with_room(length, || {
            // SAFETY: plain syscall on an owned descriptor.
            let rc = unsafe {
                libc::fallocate(
                    h.file.as_raw_fd(),
                    mode,
                    offset as libc::off_t,
                    length as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error().into());
            }
            Ok(())
        })
    }

    /// SEEK_DATA / SEEK_HOLE (and the plain whences) on the object.
    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let h = self.handle(fh)?;
        if let Some(f) = h.fetch() {
            // The holes of a copy being fetched are not the file's.
            f.wait(0..f.figures().size)?;
        }
        // SAFETY: lseek on an owned descriptor; I/O uses pread/pwrite, so the
        // shared file position is never relied upon.
        let r = unsafe { libc::lseek(h.file.as_raw_fd(), offset, whence) };
        if r < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(r)
    }

    /// Whether an open handle's durable write intent covers `ino`.
    pub(crate) fn has_write_intent(&self, ino: u64) -> bool {
        self.files
            .inodes
            .lock()
            .get(&ino)
            .is_some_and(|o| !o.intents.is_empty())
    }

    /// Log a pending intent and wait until it is durable: only then may
    /// its side effect in BACKING begin.
    /// With `content_of`, the file's recorded hash is cleared in the same
    /// commit: its content may change from now on.
    pub(crate) fn durable_intent(
        &self,
        rec: journal::Record,
        content_of: Option<u64>,
    ) -> Result<uuid::Uuid> {
        let id = rec.id;
        self.mutate(|tx| {
            if let Some(ino) = content_of {
                let mut i = tx.inode(ino)?;
                if i.sha256.take().is_some() {
                    tx.put(&i)?;
                }
            }
            tx.log(rec);
            Ok(())
        })?;
        self.sync_meta()?;
        Ok(id)
    }

    /// The side effect of an intent failed before anything changed: record
    /// why (the row stays for audit).
    pub(crate) fn fail_intent(&self, id: uuid::Uuid, e: &Error) {
        let mut u = journal::Update::new(id, journal::Status::Failed, None);
        u.error = Some(e.to_string());
        let _ = self.mutate(|tx| {
            tx.settle(u);
            Ok(())
        });
    }

    /// Whether a handle is open on `ino` (an open in progress, pinned,
    /// not counted).
    fn has_handles(&self, ino: u64) -> bool {
        self.files.inodes.lock().contains_key(&ino)
    }

    /// Whether `ino` is open, or being opened, or written through a shared
    /// mapping whose descriptor is closed: such a file is reclaimed
    /// only once the last of them is closed.
    pub(crate) fn is_open(&self, ino: u64) -> bool {
        self.files.inodes.lock().contains_key(&ino)
            || self.files.pins.lock().contains_key(&ino)
            || self.mappings.holds(ino)
    }

    /// How many handles are open on `ino`.
    pub fn open_count(&self, ino: u64) -> u32 {
        self.files.inodes.lock().get(&ino).map_or(0, |o| o.count)
    }

    /// How many handles may write to `ino`.
    pub(crate) fn open_writers(&self, ino: u64) -> u32 {
        self.files.inodes.lock().get(&ino).map_or(0, |o| o.writers)
    }

    /// Attributes of an open file: size and, once written, times from the object.
    pub(crate) fn open_attr(&self, inode: &crate::types::Inode) -> Result<Option<Attr>> {
        let (file, base) = match self.files.inodes.lock().get(&inode.ino) {
            Some(o) => match o.filling() {
                // Fetched, never written: the content's figures (the
                // copy's own move with every byte that lands).
                Some(f) => {
                    let fig = f.figures();
                    let mut inode = inode.clone();
                    inode.size = fig.size;
                    let blocks = inode.blocks.unwrap_or(fig.blocks);
                    return Ok(Some(Attr { inode, blocks }));
                }
                None => (o.file.clone(), o.base_mtime),
            },
            None => return Ok(None),
        };
        let m = file.metadata()?;
        let mut inode = inode.clone();
        inode.size = m.len();
        let mtime = Timestamp::mtime_of(&m);
        if mtime != base {
            // Written through passthrough: the kernel's times, which the
            // daemon's later ones must not precede.
            let ctime = Timestamp::ctime_of(&m);
            Timestamp::observe(mtime.max(ctime));
            inode.mtime = mtime;
            inode.ctime = inode.ctime.max(ctime);
        }
        Ok(Some(Attr {
            inode,
            blocks: m.blocks(),
        }))
    }

    /// Before bytes written past the daemon (a guarded passthrough write,
    /// `fuse::write_guard`) may grow open file `ino` to `end`: the same
    /// reservation a write through [`Fs::write`] makes, trash purged first
    /// when the capacity would be passed. Refused (ENOSPC), the write must
    /// not happen. The last close records the size the object reached.
    pub fn reserve_growth(&self, ino: u64, end: u64) -> Result<()> {
        let size = self.inode(ino)?.size;
        if end <= size {
            return Ok(());
        }
        self.make_room(end - size);
        self.with_room(end - size, || self.reserve_size(ino, end))
    }

    /// [`Fs::reserve_growth`] to `end`, and `ahead` bytes more when it must
    /// grow at all (a sequential writer is then decided once per `ahead`
    /// bytes); short of room for those, to `end` alone. Within what is
    /// already held, nothing: a growth answered here rather than by
    /// [`Fs::growth_covered`] (its lock was busy) holds no more than it.
    pub fn reserve_growth_ahead(&self, ino: u64, end: u64, ahead: u64) -> Result<()> {
        if self.inode(ino)?.size >= end {
            return Ok(());
        }
        if ahead > 0 && self.reserve_growth(ino, end.saturating_add(ahead)).is_ok() {
            return Ok(());
        }
        self.reserve_growth(ino, end)
    }

    /// Whether growing `ino` to `end` is already covered by its recorded
    /// size (so [`Fs::reserve_growth`] would have nothing to do), answered
    /// from memory without waiting on a lock; `None`: ask
    /// `reserve_growth`.
    pub fn growth_covered(&self, ino: u64, end: u64) -> Option<bool> {
        self.cache.try_size(ino).map(|size| end <= size)
    }

    /// Write an open file's size and times back to the metadata store.
    /// The object is examined under the mutation lock, so concurrent
    /// persists record sizes in order.
    /// With a capacity set, record a file's new size before the bytes that
    /// grow it are written: the capacity check sees the growth, exactly,
    /// even with concurrent writers (they stage one at a time).
    fn reserve_size(&self, ino: u64, end: u64) -> Result<()> {
        if self.capacity().is_none() {
            return Ok(());
        }
        // Within the recorded size (an overwrite, or a size an earlier
        // write reserved): nothing to reserve.
        if self.inode(ino).is_ok_and(|i| i.size >= end) {
            return Ok(());
        }
        self.mutate(|tx| {
            let mut i = tx.inode(ino)?;
            if end > i.size {
                i.size = end;
                tx.put(&i)?;
            }
            Ok(())
        })
    }

    fn persist_open(
        &self,
        ino: u64,
        settle: &[uuid::Uuid],
        sent: Option<&crate::blob::NewVersion>,
    ) -> Result<()> {
        // The last writer is closing: hash a small file now, while its
        // pages are warm (see `checksum`), unless its hash is known (an
        // upload's, recorded at its publish).
        let mut hash = None;
        if !settle.is_empty() && self.inode(ino).is_ok_and(|i| i.sha256.is_none()) {
            let file = self.files.inodes.lock().get(&ino).map(|o| o.file.clone());
            if let Some(f) = file {
                hash = super::checksum::hash_file(&f, super::checksum::HASH_AT_CLOSE_MAX)?;
            }
        }
        let mut queue = false;
        self.mutate(|tx| {
            // What the object holds is already there: record it.
            tx.exempt = true;
            let mut i = tx.inode(ino)?;
            // The version a remote store just sent commits with the size
            // it was sent at (docs/S3.md).
            if sent.is_some_and(|v| tx.record_version(&mut i, v)) {
                tx.put(&i)?;
            }
            let Some(fresh) = self.open_attr(&i)? else {
                return Ok(());
            };
            let blocks = Some(fresh.blocks);
            let fresh = fresh.inode;
            let mut hashed = false;
            // Only if no other writer is registered: its writes would make
            // the hash stale at once.
            if !settle.is_empty() && i.sha256.is_none() && !self.open_for_write(ino) {
                match &hash {
                    Some((h, (size, mtime))) if *size == fresh.size && *mtime == fresh.mtime.0 => {
                        i.sha256 = Some(h.clone());
                        hashed = true;
                        tx.put(&i)?;
                    }
                    _ => queue = true,
                }
            }
            for id in settle {
                tx.settle(journal::Update::new(
                    *id,
                    journal::Status::Committed,
                    format!("closed at size {}", fresh.size),
                ));
            }
            if i.blocks != blocks {
                // Allocation alone (fallocate, a hole filled) changes no
                // time: record it without touching the hash.
                i.blocks = blocks;
                tx.put(&i)?;
            }
            if i.size == fresh.size && i.mtime == fresh.mtime && i.ctime == fresh.ctime {
                return Ok(());
            }
            if !hashed {
                // Content may have changed: the hash is unknown until
                // recomputed.
                i.sha256 = None;
            }
            i.size = fresh.size;
            i.mtime = fresh.mtime;
            i.ctime = fresh.ctime;
            tx.put(&i)?;
            // The recorded mtime is now the object's: it is the new base.
            if let Some(o) = self.files.inodes.lock().get_mut(&ino) {
                o.base_mtime = fresh.mtime;
            }
            Ok(())
        })?;
        if queue {
            if let Some(h) = self.hasher.get() {
                h.queue(ino);
            }
        }
        Ok(())
    }

    /// After metadata caught up with the object, treat its mtime as the base.
    pub(crate) fn rebase_open(&self, ino: u64) {
        if let Some(o) = self.files.inodes.lock().get_mut(&ino) {
            if let Some(f) = o.filling() {
                // The mtime the copy has once whole.
                o.base_mtime = f.figures().mtime;
            } else if let Ok(m) = o.file.metadata() {
                o.base_mtime = Timestamp::mtime_of(&m);
            }
        }
    }

    /// Set an object's length (truncate up or down); returns the blocks
    /// it then holds, and the version a remote store sent of a closed
    /// file (the caller's mutation records it: this runs inside one).
    pub(crate) fn truncate_object(
        &self,
        ino: u64,
        size: u64,
    ) -> Result<(u64, Option<crate::blob::NewVersion>)> {
        if size > i64::MAX as u64 {
            return Err(Error::posix(libc::EFBIG, "file too large"));
        }
        // The object changes: a remote store records it first.
        self.objects.warm(ino, true)?;
        let shared = self.files.inodes.lock().get(&ino).map(|o| o.file.clone());
        let Some(file) = shared else {
            // A closed file: opened for this change alone, and closed.
            let file = self.open_object(ino)?;
            file.set_len(size)?;
            let sent = match self.objects.close(ino, &file) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(ino, error = %e, "could not send a truncated file's content");
                    None
                }
            };
            return Ok((file.metadata()?.blocks(), sent));
        };
        file.set_len(size)?;
        Ok((file.metadata()?.blocks(), None))
    }
}

impl Fs {
    /// Open a regular file's object (not open yet) read-write. It is never
    /// created in place of lost content: a file that records content
    /// (a size above 0) whose object is absent, or shorter than recorded, is EIO, and
    /// its size and hash stay as recorded. A file that records no content
    /// may lack its object (mknod makes none); it is made empty then.
    pub(crate) fn open_object(&self, ino: u64) -> Result<File> {
        let recorded = self.inode(ino)?.size;
        let file = match self.objects.open_rw(ino) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && recorded == 0 => {
                return Ok(self.objects.open_or_create(ino)?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.lost_object(ino, recorded, None))
            }
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        if len < recorded {
            return Err(self.lost_object(ino, recorded, Some(len)));
        }
        Ok(file)
    }

    /// [`Fs::open_object`] through `ContentStore::open_partial`: the
    /// object, and its fetch while it is not whole.
    fn open_object_partial(
        &self,
        ino: u64,
    ) -> Result<(File, Option<Arc<dyn crate::blob::Filling>>)> {
        let recorded = self.inode(ino)?.size;
        let p = match self.objects.open_partial(ino) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && recorded == 0 => {
                return Ok((self.objects.open_or_create(ino)?, None))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.lost_object(ino, recorded, None))
            }
            Err(e) => return Err(e.into()),
        };
        let len = match &p.filling {
            Some(f) => f.figures().size,
            None => p.file.metadata()?.len(),
        };
        if len < recorded {
            self.close_object(ino, &p.file);
            return Err(self.lost_object(ino, recorded, Some(len)));
        }
        Ok((p.file, p.filling))
    }

    /// The fetch of an open file's copy, while it is not whole.
    fn fill_of(&self, ino: u64) -> Option<Arc<dyn crate::blob::Filling>> {
        self.files.inodes.lock().get(&ino)?.filling().cloned()
    }

    /// Log and count an object found missing (`held` None) or holding
    /// fewer bytes than recorded; the EIO to answer with.
    pub(crate) fn lost_object(&self, ino: u64, recorded: u64, held: Option<u64>) -> Error {
        self.ops.missing_object();
        let path = self
            .meta
            .path_of(ino)
            .ok()
            .flatten()
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_default();
        let object = self.objects.location(ino);
        match held {
            None => tracing::error!(ino, %path, recorded, %object,
                "the file's object is missing from the content store; answering EIO \
                 (restore the object; `artfs fsck` lists every such file)"),
            Some(held) => tracing::error!(ino, %path, recorded, held, %object,
                "the file's object holds fewer bytes than recorded; answering EIO"),
        }
        Error::posix(
            libc::EIO,
            "the file's object is missing or short in the content store",
        )
    }
}

/// An open in progress (see [`Fs::pin_open`]). Dropped once the handle is
/// registered, or the open failed: then the file is reclaimed if it lost
/// its last name meanwhile and nothing else holds it.
struct OpenPin<'a> {
    fs: &'a Fs,
    ino: u64,
}

impl Drop for OpenPin<'_> {
    fn drop(&mut self) {
        {
            let mut pins = self.fs.files.pins.lock();
            if let Some(n) = pins.get_mut(&self.ino) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(&self.ino);
                }
            }
        }
        if !self.fs.is_open(self.ino) {
            if let Err(e) = self.fs.reclaim_if_unlinked(self.ino) {
                tracing::warn!(ino = self.ino, error = %e, "could not reclaim a removed file");
            }
        }
    }
}

/// Write all of `pieces`, in order, at `offset`: `pwritev` of at most
/// `IOV_MAX` pieces a call, resumed after a short write.
fn pwritev_all(file: &File, pieces: &[bytes::Bytes], mut offset: u64) -> std::io::Result<()> {
    use std::io::IoSlice;
    const IOV_MAX: usize = 1024;
    for group in pieces.chunks(IOV_MAX) {
        let mut slices: Vec<IoSlice<'_>> = group.iter().map(|p| IoSlice::new(p)).collect();
        let mut left = &mut slices[..];
        while !left.is_empty() {
            // SAFETY: IoSlice is ABI-compatible with iovec, and the slices
            // borrow pieces that outlive the call.
            let n = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    left.as_ptr().cast(),
                    left.len() as libc::c_int,
                    offset as libc::off_t,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            offset += n as u64;
            IoSlice::advance_slices(&mut left, n as usize);
        }
    }
    Ok(())
}
