//! The trash (issue 12): where unlinked files wait, who may reach them,
//! and how they go for good.
//!
//! Layout: `/.trash/<uid>/<when>/<original path>`.
//! - `/.trash` is root's, mode 0711: anyone may pass through it, nobody
//!   but root may list it or make names in it.
//! - `/.trash/<uid>` is the deleting user's (uid as a decimal number),
//!   mode 0711: its owner (and root) can list it; others need a name.
//! - `/.trash/<uid>/<when>` is a *bucket*: one deletion session of that
//!   user, named by its start (UTC, `2026-12-04T18:53:54Z`, with `.1`,
//!   `.2` on a clash). It stands for the root directory and has the root's
//!   owner, group and mode; below it, each directory of the original path
//!   is a copy with the owner, group and mode the original had when the
//!   first file went. A file in the trash is therefore exactly as
//!   reachable, to each user, as at its old path (plus search through two
//!   0711 directories that everybody has): a `chmod 700` directory stays
//!   700 in the trash, through the kernel's `default_permissions` and
//!   through the HTTP door's `Fs::walk` alike.
//! - A session: a user's deletions go to their current bucket while each
//!   comes within [`SESSION_GAP`] of the previous one and fits (no name
//!   already taken, directory copies still as the originals are). So a
//!   tree removed by one `rm -rf` lands in one bucket and comes back with
//!   one `mv /.trash/<uid>/<when>/<path> /<path>`. Directories are never
//!   trashed themselves (rmdir of an empty directory is real); their
//!   copies are made as files arrive.
//! - The bucket's ctime is the time of its last deletion; a unit of the
//!   trash (each entry of a user directory, normally a bucket; or a file
//!   of the old flat layout directly in `/.trash`) is purged whole once
//!   its ctime is `--trash-days` old, directories included, and user
//!   directories left empty go too.
//! - Space: trashed files count toward the capacity until purged, but a
//!   write that would fail for lack of space (capacity or BACKING's
//!   filesystem) first purges the oldest trash (oldest units first, file
//!   by file, enough bytes) and is tried once more; `statfs` counts the
//!   trash's bytes as free (reclaimable). BACKING keeps a reserve for the
//!   database's commits (4 × the ballast): below it an unlink is for good,
//!   and daemon-served writes purge trash before dipping into it. Writes
//!   the daemon does not see (FUSE passthrough) cannot be retried, so
//!   while BACKING is nearly full and the trash holds bytes, new handles
//!   get no passthrough (`writes_through_daemon`), and every second the
//!   collector purges old trash while less than twice the reserve is free.
//! - Emptying: `rm` inside `/.trash` is for good (with the permissions of
//!   the old path); `artfs trash list|empty` offline; `GET|DELETE
//!   /api/v1/trash` for operators. Restoring is a rename out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::json;

use super::{Fs, Mutation};
use crate::types::error::{Error, Result};
use crate::types::journal;
use crate::types::{Caller, DirEntry, Inode, Kind, Timestamp, ROOT_INO};

/// The trash directory's name in the root.
pub const TRASH: &[u8] = b".trash";

/// Whether `path` (from the root) is `/.trash` or below it; true of both
/// trash layouts (flat names or `/.trash/<uid>/<when>/<original path>`).
/// The one test of "this is in the trash", for every caller: the names a
/// door may reach an inode by (`access`), search hits, lookup by file id
/// ([`trashed`]).
pub fn in_trash(path: &[u8]) -> bool {
    path.strip_prefix(b"/")
        .and_then(|p| p.strip_prefix(TRASH))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

/// Whether committed inode `ino`'s path ([`crate::meta::MetaStore::path_of`]:
/// its first name at each level) lies in the trash; false without a name.
pub fn trashed(meta: &dyn crate::meta::MetaStore, ino: u64) -> Result<bool> {
    Ok(meta.path_of(ino)?.is_some_and(|p| in_trash(&p)))
}

/// Mode of `/.trash` and of each user's directory in it.
const PASS_ONLY: u32 = 0o711;

/// Deletions closer together than this (nanoseconds) by one user share a
/// bucket.
pub const SESSION_GAP: i64 = 60 * 1_000_000_000;

/// In-memory state of the trash (per mounted store).
#[derive(Default)]
pub(crate) struct TrashState {
    /// Each deleting uid's current bucket.
    sessions: Mutex<HashMap<u32, Session>>,
    /// Hints: a directory's name in its parent (checked before use).
    names: Mutex<HashMap<u64, Vec<u8>>>,
    /// Bytes of regular files in the trash, when `known`.
    bytes: AtomicU64,
    known: AtomicBool,
    /// One reclaim at a time.
    reclaim: Mutex<()>,
    /// `space_tight`'s last answer and when it was computed (ns since the
    /// epoch): it is asked at every open, a statfs each time would show.
    tight: AtomicBool,
    tight_at: std::sync::atomic::AtomicI64,
}

#[derive(Clone)]
struct Session {
    user_dir: u64,
    bucket: u64,
    name: Vec<u8>,
    last: Timestamp,
}

/// One purgeable unit of the trash, as `artfs trash list` shows it.
#[derive(Clone, Debug)]
pub struct Unit {
    /// Path from the root, e.g. `/.trash/1000/2026-12-04T18:53:54Z`.
    pub path: Vec<u8>,
    /// The deleting user (from the directory name), if known.
    pub uid: Option<u32>,
    /// When it last changed (its last deletion): its age counts from here.
    pub when: Timestamp,
    pub files: u64,
    pub bytes: u64,
    parent: u64,
    name: Vec<u8>,
}

/// What a purge did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Purged {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

fn bucket_name(now: Timestamp, n: u32) -> Vec<u8> {
    let secs = Timestamp(now.0.div_euclid(1_000_000_000) * 1_000_000_000);
    let mut s = secs.to_rfc3339();
    if n > 0 {
        s.push_str(&format!(".{n}"));
    }
    s.into_bytes()
}

fn same_owner_mode(a: &Inode, b: &Inode) -> bool {
    a.uid == b.uid && a.gid == b.gid && a.perm == b.perm
}

impl Fs {
    /// The trash directory's inode number, if it exists.
    pub(crate) fn trash_ino(&self) -> Option<u64> {
        match self.child(ROOT_INO, TRASH) {
            Ok(Some(d)) if d.kind == Kind::Dir => Some(d.ino),
            _ => None,
        }
    }

    fn tx_within(tx: &mut Mutation<'_>, mut dir: u64, ancestor: u64) -> Result<bool> {
        for _ in 0..4096 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT_INO {
                return Ok(false);
            }
            dir = tx.inode(dir)?.parent;
        }
        Ok(false)
    }

    /// A change was made inside the trash other than by the trash itself
    /// (a restore, an `rm` there): its byte count is recounted when next
    /// needed.
    pub(crate) fn trash_changed_by_hand(&self, tx: &mut Mutation<'_>, dirs: &[u64]) -> Result<()> {
        let Some(t) = self.trash_ino() else {
            return Ok(());
        };
        for d in dirs {
            if Self::tx_within(tx, *d, t)? {
                self.trash.known.store(false, Ordering::Release);
                break;
            }
        }
        Ok(())
    }

    /// Move the last name of a quiet regular file into the trash instead of
    /// unlinking it (see the module doc for where). Returns its path under
    /// `/.trash`, or `None` when the file must be unlinked for real; adds
    /// to `made` every (directory, name) it made or moved a name into.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn trash_entry(
        &self,
        tx: &mut Mutation<'_>,
        caller: &Caller,
        parent: u64,
        name: &[u8],
        inode: &Inode,
        now: Timestamp,
        made: &mut Vec<(u64, Vec<u8>)>,
    ) -> Result<Option<Vec<u8>>> {
        if self.collector.trash_days <= 0.0
            || self.mode() != super::policy::Mode::Edit
            || inode.kind != Kind::File
            || inode.nlink != 1
            || self.is_open(inode.ino)
        {
            return Ok(None);
        }
        if self
            .backing_avail()
            .is_some_and(|a| a < self.space_reserve())
        {
            // BACKING is (nearly) full: a trash would keep the very space
            // needed now, even by the commit that would purge it.
            return Ok(None);
        }
        let trash = match tx.dentry(ROOT_INO, TRASH)? {
            Some(d) if d.kind == Kind::Dir => {
                let mut t = tx.inode(d.ino)?;
                if t.perm != PASS_ONLY || t.uid != 0 || t.gid != 0 {
                    // The old layout's 1777 trash: private from now on.
                    t.perm = PASS_ONLY;
                    (t.uid, t.gid) = (0, 0);
                    t.ctime = now;
                    tx.put(&t)?;
                }
                d.ino
            }
            // Something else is called .trash: no trash.
            Some(_) => return Ok(None),
            None => self.make_trash(tx, now)?,
        };
        // Removing from inside the trash is for good.
        if Self::tx_within(tx, parent, trash)? {
            self.trash.known.store(false, Ordering::Release);
            return Ok(None);
        }
        let path = self.dir_path(tx, parent)?;
        let root = tx.inode(ROOT_INO)?;
        let uid_name = caller.uid.to_string().into_bytes();
        let user_dir = match tx.dentry(trash, &uid_name)? {
            Some(d) if d.kind == Kind::Dir => d.ino,
            Some(_) => {
                tracing::warn!(
                    uid = caller.uid,
                    "/.trash/<uid> is not a directory: no trash"
                );
                return Ok(None);
            }
            None => {
                let d = Inode::new_dir(
                    0,
                    PASS_ONLY,
                    (caller.uid, caller.gid),
                    trash,
                    &uid_name,
                    "artfs",
                );
                made.push((trash, uid_name.clone()));
                self.add_dir(tx, trash, &uid_name, d, now)?
            }
        };
        // The user's current bucket, if this deletion may join it.
        let current = self.trash.sessions.lock().get(&caller.uid).cloned();
        let mut bucket = None;
        if let Some(s) = current {
            if s.user_dir == user_dir
                && now.0 - s.last.0 < SESSION_GAP
                && tx.dentry(user_dir, &s.name)?.map(|d| d.ino) == Some(s.bucket)
                && self.fits(tx, s.bucket, &root, &path, name)?
            {
                bucket = Some((s.bucket, s.name));
            }
        }
        let (bucket, bname) = match bucket {
            Some(b) => b,
            None => {
                let mut n = 0;
                let bname = loop {
                    let b = bucket_name(now, n);
                    if tx.dentry(user_dir, &b)?.is_none() {
                        break b;
                    }
                    n += 1;
                };
                let d = Inode::new_dir(
                    0,
                    root.perm,
                    (root.uid, root.gid),
                    user_dir,
                    &bname,
                    "artfs",
                );
                made.push((user_dir, bname.clone()));
                (self.add_dir(tx, user_dir, &bname, d, now)?, bname)
            }
        };
        // Down the copies, making those missing.
        let mut cur = bucket;
        let mut rel = [uid_name.as_slice(), b"/", &bname].concat();
        for (n, orig) in &path {
            cur = match tx.dentry(cur, n)? {
                Some(d) => d.ino,
                None => {
                    let mut d = Inode::new_dir(0, orig.perm, (orig.uid, orig.gid), cur, n, "artfs");
                    (d.atime, d.mtime) = (orig.atime, orig.mtime);
                    made.push((cur, n.clone()));
                    self.add_dir(tx, cur, n, d, now)?
                }
            };
            rel.push(b'/');
            rel.extend_from_slice(n);
        }
        // A fresh entry id, not the moved name's cookie: ids only grow, so
        // files deleted in one tick of the clock still purge in the order
        // they came (see `reclaim_trash`).
        tx.remove_entry(parent, name)?;
        tx.add_entry(cur, name, inode.ino, inode.kind)?;
        made.push((cur, name.to_vec()));
        rel.push(b'/');
        rel.extend_from_slice(name);
        let mut i = inode.clone();
        i.parent = cur;
        i.ctime = now;
        tx.put(&i)?;
        // The bucket's ctime is its last deletion: its age counts from it.
        let mut b = tx.inode(bucket)?;
        b.ctime = now;
        tx.put(&b)?;
        self.trash.sessions.lock().insert(
            caller.uid,
            Session {
                user_dir,
                bucket,
                name: bname,
                last: now,
            },
        );
        self.trash.bytes.fetch_add(inode.size, Ordering::AcqRel);
        Ok(Some(rel))
    }

    /// Make a `/.trash` of the old layout (1777) private: root's, 0711.
    pub(crate) fn secure_trash(&self) -> Result<()> {
        let Some(t) = self.trash_ino() else {
            return Ok(());
        };
        let i = self.inode(t)?;
        if i.perm == PASS_ONLY && i.uid == 0 && i.gid == 0 {
            return Ok(());
        }
        self.mutate(|tx| {
            let mut i = tx.inode(t)?;
            i.perm = PASS_ONLY;
            (i.uid, i.gid) = (0, 0);
            i.ctime = Timestamp::now();
            tx.put(&i)
        })?;
        tracing::info!("made /.trash private (root, 0711)");
        if let Some(inv) = self.invalidator() {
            inv.inode(t);
        }
        Ok(())
    }

    /// Tell a caching door about names the trash made behind its back
    /// (directory listings it may hold, negative entries). Safe from inside
    /// the door's unlink: these are trash directories, which that request
    /// never holds locked (it holds the file's old directory, outside).
    pub(crate) fn trash_notify(&self, made: &[(u64, Vec<u8>)]) {
        let Some(inv) = self.invalidator() else {
            return;
        };
        for (dir, name) in made {
            inv.entry(*dir, name);
            inv.inode(*dir);
        }
    }

    /// Whether a file `name` from the directories `path` may go into
    /// `bucket`: no name on the way is taken by something else and every
    /// directory copy there has its original's owner, group and mode.
    fn fits(
        &self,
        tx: &mut Mutation<'_>,
        bucket: u64,
        root: &Inode,
        path: &[(Vec<u8>, Inode)],
        name: &[u8],
    ) -> Result<bool> {
        if !same_owner_mode(&tx.inode(bucket)?, root) {
            return Ok(false);
        }
        let mut cur = bucket;
        for (n, orig) in path {
            match tx.dentry(cur, n)? {
                None => return Ok(true),
                Some(d) if d.kind == Kind::Dir && same_owner_mode(&tx.inode(d.ino)?, orig) => {
                    cur = d.ino
                }
                Some(_) => return Ok(false),
            }
        }
        Ok(tx.dentry(cur, name)?.is_none())
    }

    /// Insert directory `d` as `name` in `parent`; returns its number.
    fn add_dir(
        &self,
        tx: &mut Mutation<'_>,
        parent: u64,
        name: &[u8],
        d: Inode,
        now: Timestamp,
    ) -> Result<u64> {
        let d = tx.insert(d)?;
        tx.add_entry(parent, name, d.ino, Kind::Dir)?;
        let mut p = tx.inode(parent)?;
        p.nlink += 1;
        p.mtime = now;
        p.ctime = now;
        tx.put(&p)?;
        Ok(d.ino)
    }

    fn make_trash(&self, tx: &mut Mutation<'_>, now: Timestamp) -> Result<u64> {
        let dir = Inode::new_dir(0, PASS_ONLY, (0, 0), ROOT_INO, TRASH, "artfs");
        let ino = self.add_dir(tx, ROOT_INO, TRASH, dir, now)?;
        self.trash.bytes.store(0, Ordering::Release);
        self.trash.known.store(true, Ordering::Release);
        Ok(ino)
    }

    /// The directories from the root (excluded) down to `dir`, with their
    /// names.
    fn dir_path(&self, tx: &mut Mutation<'_>, dir: u64) -> Result<Vec<(Vec<u8>, Inode)>> {
        let mut out = Vec::new();
        let mut d = dir;
        while d != ROOT_INO {
            if out.len() > 4096 {
                return Err(Error::Meta(format!("directory {dir} has no path")));
            }
            let di = tx.inode(d)?;
            let name = self.name_in_parent(tx, &di)?;
            d = di.parent;
            out.push((name, di));
        }
        out.reverse();
        Ok(out)
    }

    /// A directory's name in its parent: a hint, else the store (after a
    /// commit if the store is behind), always checked against the
    /// current entries.
    fn name_in_parent(&self, tx: &mut Mutation<'_>, di: &Inode) -> Result<Vec<u8>> {
        let hint = self.trash.names.lock().get(&di.ino).cloned();
        if let Some(n) = hint {
            if tx.dentry(di.parent, &n)?.map(|e| e.ino) == Some(di.ino) {
                return Ok(n);
            }
        }
        for attempt in 0..2 {
            if attempt == 1 {
                // A rename not committed yet. The writer never waits for
                // the mutation lock, so waiting for it here is safe.
                self.wait_committed()?;
            }
            for (_, p, n) in self.meta.links_of(&[di.ino])? {
                if p == di.parent && tx.dentry(p, &n)?.map(|e| e.ino) == Some(di.ino) {
                    let mut names = self.trash.names.lock();
                    if names.len() > 65_536 {
                        names.clear();
                    }
                    names.insert(di.ino, n.clone());
                    return Ok(n);
                }
            }
        }
        Err(Error::Meta(format!(
            "directory {} has no name in {}",
            di.ino, di.parent
        )))
    }

    /// Every entry of directory `dir` (without "." and "..").
    fn entries(&self, dir: u64) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        let mut offset = 2;
        loop {
            let page = self.readdir(dir, offset, 1024)?;
            let Some(last) = page.last() else { break };
            offset = last.offset;
            out.extend(
                page.into_iter()
                    .filter(|e| e.name != b"." && e.name != b".."),
            );
        }
        Ok(out)
    }

    /// The trash's units, oldest first, with their sizes.
    pub fn trash_units(&self) -> Result<Vec<Unit>> {
        self.units(true)
    }

    /// The trash's units, oldest first; their files and bytes counted
    /// only with `sizes` (a walk of everything).
    fn units(&self, sizes: bool) -> Result<Vec<Unit>> {
        let Some(t) = self.trash_ino() else {
            return Ok(Vec::new());
        };
        let mut units = Vec::new();
        for e in self.entries(t)? {
            let mut path = [b"/.trash/".as_slice(), &e.name].concat();
            if e.kind != Kind::Dir {
                // The old flat layout: one file, aged from its move.
                let i = self.inode(e.ino)?;
                let (files, bytes) = if i.kind == Kind::File {
                    (1, i.size)
                } else {
                    (0, 0)
                };
                units.push(Unit {
                    path,
                    uid: None,
                    when: i.ctime,
                    files,
                    bytes,
                    parent: t,
                    name: e.name,
                });
                continue;
            }
            let uid = std::str::from_utf8(&e.name)
                .ok()
                .and_then(|s| s.parse().ok());
            let children = self.entries(e.ino)?;
            if children.is_empty() {
                // A user directory left empty: a unit of nothing.
                let i = self.inode(e.ino)?;
                units.push(Unit {
                    path,
                    uid,
                    when: i.ctime,
                    files: 0,
                    bytes: 0,
                    parent: t,
                    name: e.name,
                });
                continue;
            }
            path.push(b'/');
            for c in children {
                let i = self.inode(c.ino)?;
                let (files, bytes) = if sizes { self.tree_size(&i)? } else { (0, 0) };
                units.push(Unit {
                    path: [path.as_slice(), &c.name].concat(),
                    uid,
                    when: i.ctime,
                    files,
                    bytes,
                    parent: e.ino,
                    name: c.name,
                });
            }
        }
        units.sort_by(|a, b| a.when.cmp(&b.when).then(a.path.cmp(&b.path)));
        Ok(units)
    }

    /// (files, bytes) of the regular files in a tree.
    fn tree_size(&self, i: &Inode) -> Result<(u64, u64)> {
        match i.kind {
            Kind::File => Ok((1, i.size)),
            Kind::Dir => {
                let mut sum = (0, 0);
                for e in self.entries(i.ino)? {
                    let (f, b) = self.tree_size(&self.inode(e.ino)?)?;
                    sum = (sum.0 + f, sum.1 + b);
                }
                Ok(sum)
            }
            _ => Ok((0, 0)),
        }
    }

    /// Bytes of regular files in the trash (counted once, then followed).
    pub fn trash_bytes(&self) -> u64 {
        if !self.trash.known.load(Ordering::Acquire) {
            let total = self
                .trash_units()
                .map(|u| u.iter().map(|u| u.bytes).sum())
                .unwrap_or(0);
            self.trash.bytes.store(total, Ordering::Release);
            self.trash.known.store(true, Ordering::Release);
        }
        self.trash.bytes.load(Ordering::Acquire)
    }

    /// [`Fs::trash_bytes`] if known without counting.
    pub(crate) fn trash_bytes_known(&self) -> Option<u64> {
        self.trash
            .known
            .load(Ordering::Acquire)
            .then(|| self.trash.bytes.load(Ordering::Acquire))
    }

    /// Purge units last changed before `before` (all with `None`), at most
    /// `budget` removals.
    pub fn trash_empty(&self, before: Option<Timestamp>, budget: usize) -> Result<Purged> {
        if !matches!(
            self.mode(),
            super::policy::Mode::Edit | super::policy::Mode::Rw
        ) {
            return Err(Error::posix(libc::EROFS, "the store is read-only"));
        }
        let mut done = Purged::default();
        let mut budget = budget;
        for u in self.units(false)? {
            if before.is_some_and(|b| u.when >= b) {
                break;
            }
            self.purge_tree(u.parent, &u.name, None, &mut budget, &mut done)?;
            if budget == 0 {
                break;
            }
        }
        self.drop_empty_user_dirs(&mut done)?;
        Ok(done)
    }

    /// Remove user directories of the trash left empty.
    fn drop_empty_user_dirs(&self, done: &mut Purged) -> Result<()> {
        let Some(t) = self.trash_ino() else {
            return Ok(());
        };
        for e in self.entries(t)? {
            if e.kind == Kind::Dir
                && self.entries(e.ino)?.is_empty()
                && self.remove_for_good(t, &e.name, "trash purged")?
            {
                done.dirs += 1;
            }
        }
        Ok(())
    }

    /// Remove `name` in `parent` and, for a directory, everything in it,
    /// for good; stop once `need` bytes are freed or the budget is spent.
    fn purge_tree(
        &self,
        parent: u64,
        name: &[u8],
        need: Option<u64>,
        budget: &mut usize,
        done: &mut Purged,
    ) -> Result<()> {
        let Some(d) = self.child(parent, name)? else {
            return Ok(());
        };
        let enough = |done: &Purged| need.is_some_and(|n| done.bytes >= n);
        if d.kind == Kind::Dir {
            for e in self.entries(d.ino)? {
                if *budget == 0 || enough(done) {
                    return Ok(());
                }
                self.purge_tree(d.ino, &e.name, need, budget, done)?;
            }
            if *budget == 0 || !self.entries(d.ino)?.is_empty() {
                return Ok(());
            }
            if self.remove_for_good(parent, name, "trash purged")? {
                done.dirs += 1;
                *budget -= 1;
            }
            return Ok(());
        }
        let size = self.inode(d.ino).map(|i| i.size).unwrap_or(0);
        if self.remove_for_good(parent, name, "trash purged")? {
            done.files += 1;
            if d.kind == Kind::File {
                done.bytes += size;
                let _ = self
                    .trash
                    .bytes
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                        Some(b.saturating_sub(size))
                    });
            }
            *budget -= 1;
        }
        Ok(())
    }

    /// Remove one name for good (no trash; an empty directory too), logged
    /// as the collector's. Returns whether it removed anything.
    pub(crate) fn remove_for_good(&self, parent: u64, name: &[u8], why: &str) -> Result<bool> {
        let removed = self.mutate(|tx| {
            let mut dir = tx.inode(parent)?;
            let Some((ino, kind)) = tx.lookup(parent, name)? else {
                return Ok(false); // gone already: a sweep done twice
            };
            if kind.is_dir() && !tx.dir_is_empty(ino)? {
                return Ok(false);
            }
            let now = Timestamp::now();
            let inode = tx.inode(ino)?;
            // Locked by chattr (+i, +a): kept, as retention keeps a file.
            if super::flags::check(&inode, super::flags::Touch::Name).is_err() {
                return Ok(false);
            }
            tx.remove_entry(parent, name)?;
            let mut rec = journal::Record::new(
                if kind.is_dir() {
                    journal::Op::Rmdir
                } else {
                    journal::Op::Unlink
                },
                journal::Status::Committed,
                Some(inode.file_id.clone()),
                json!({ "ino": ino, "parent": parent, "name": journal::name_json(name),
                        "reason": why }),
            );
            rec.user_id = Some("collector".into());
            tx.log(rec);
            if kind.is_dir() {
                self.drop_dir(tx, inode, now)?;
                dir.nlink = dir.nlink.saturating_sub(1);
            } else {
                self.drop_link(tx, inode, now)?;
            }
            dir.mtime = now;
            dir.ctime = now;
            tx.put(&dir)?;
            Ok(true)
        })?;
        if removed {
            // Behind the kernel's back: tell it (after the change, never
            // from inside one of its requests).
            if let Some(inv) = self.invalidator() {
                inv.entry(parent, name);
                inv.inode(parent);
            }
        }
        Ok(removed)
    }

    /// Free at least `need` bytes by purging the oldest trash: units
    /// oldest first, and in a unit its files by deletion time (ctime),
    /// oldest first, then the directories left empty; once committed, so
    /// the objects are gone too. Returns the bytes freed.
    pub(crate) fn reclaim_trash(&self, need: u64) -> Result<u64> {
        let _one = self.trash.reclaim.lock();
        let need = need.max(1);
        let mut done = Purged::default();
        let mut budget = usize::MAX;
        for u in self.units(false)? {
            if done.bytes >= need {
                break;
            }
            let mut files = Vec::new();
            self.files_of(u.parent, &u.name, &mut files)?;
            // By deletion time; within one tick of the clock, in the
            // order they came into the trash (entry ids only grow).
            files.sort_by_key(|f| (f.0, f.1));
            for (_, _, parent, name) in files {
                if done.bytes >= need {
                    break;
                }
                self.purge_tree(parent, &name, None, &mut budget, &mut done)?;
            }
            self.prune_empty(u.parent, &u.name, &mut done)?;
        }
        self.drop_empty_user_dirs(&mut done)?;
        if done.bytes == 0 {
            // Nothing to free after all: count again before trying again.
            self.trash.known.store(false, Ordering::Release);
        }
        if done.files + done.dirs > 0 {
            // The writer deletes objects right after the commit that
            // removed their inodes, before it reports the commit done.
            self.wait_committed()?;
            tracing::info!(
                files = done.files,
                bytes = done.bytes,
                need,
                "space short: purged the oldest trash"
            );
        }
        Ok(done.bytes)
    }

    /// The non-directories of a tree as (ctime, parent, name).
    fn files_of(
        &self,
        parent: u64,
        name: &[u8],
        out: &mut Vec<(Timestamp, u64, u64, Vec<u8>)>,
    ) -> Result<()> {
        let Some(d) = self.child(parent, name)? else {
            return Ok(());
        };
        if d.kind == Kind::Dir {
            for e in self.entries(d.ino)? {
                self.files_of(d.ino, &e.name, out)?;
            }
        } else {
            out.push((self.inode(d.ino)?.ctime, d.id, parent, name.to_vec()));
        }
        Ok(())
    }

    /// Remove the directories of a tree that hold no files, bottom up.
    fn prune_empty(&self, parent: u64, name: &[u8], done: &mut Purged) -> Result<()> {
        let Some(d) = self.child(parent, name)? else {
            return Ok(());
        };
        if d.kind != Kind::Dir {
            return Ok(());
        }
        let entries = self.entries(d.ino)?;
        for e in &entries {
            if e.kind == Kind::Dir {
                self.prune_empty(d.ino, &e.name, done)?;
            }
        }
        if self.entries(d.ino)?.is_empty() && self.remove_for_good(parent, name, "trash purged")? {
            done.dirs += 1;
        }
        Ok(())
    }

    /// Run `op`; if it fails for lack of space, purge the oldest trash
    /// (at least `need` bytes) and run it once more.
    pub(crate) fn with_room<T>(&self, need: u64, mut op: impl FnMut() -> Result<T>) -> Result<T> {
        match op() {
            Err(e) if e.is_disk_full() && self.trash_ino().is_some() => {
                match self.reclaim_trash(need) {
                    Ok(0) => Err(e),
                    Ok(_) => op(),
                    Err(r) => {
                        tracing::warn!(error = %r, "could not purge the trash to make room");
                        Err(e)
                    }
                }
            }
            r => r,
        }
    }

    /// Before growing a file by `grow` bytes: purge the oldest trash first
    /// if the capacity would be exceeded, or BACKING's free space would
    /// fall under the reserve (see [`Fs::space_reserve`]).
    pub(crate) fn make_room(&self, grow: u64) {
        if grow == 0 || self.trash_ino().is_none() {
            return;
        }
        let mut need = 0;
        if let Some(cap) = self.capacity() {
            let used = self.usage().0;
            need = (used.saturating_add(grow)).saturating_sub(cap);
        }
        if self.trash_bytes() > 0 {
            if let Some(avail) = self.backing_avail() {
                let want = grow.saturating_add(self.space_reserve());
                need = need.max(want.saturating_sub(avail));
            }
        }
        if need > 0 && self.trash_bytes() > 0 {
            if let Err(e) = self.reclaim_trash(need) {
                tracing::warn!(error = %e, "could not purge the trash to make room");
            }
        }
    }

    /// While BACKING has less than twice the reserve free, purge the
    /// oldest trash until it has (the collector calls this every second).
    pub(crate) fn keep_reserve(&self) {
        if self.trash_ino().is_none()
            || !matches!(
                self.mode(),
                super::policy::Mode::Edit | super::policy::Mode::Rw
            )
        {
            return;
        }
        let Some(avail) = self.backing_avail() else {
            return;
        };
        let want = 2 * self.space_reserve();
        if avail < want && self.trash_bytes() > 0 {
            if let Err(e) = self.reclaim_trash(want - avail) {
                tracing::warn!(error = %e, "could not purge the trash to keep space free");
            }
        }
    }

    /// Free space BACKING keeps for the database's own commits (4 times
    /// the ballast, so 4 to 256 MiB): the trash never holds it. Purging
    /// the trash is itself a commit and needs room.
    pub(crate) fn space_reserve(&self) -> u64 {
        self.ballast.size().saturating_mul(4)
    }

    /// Bytes free for us on BACKING's filesystem.
    fn backing_avail(&self) -> Option<u64> {
        let v = self.objects.space().ok()?;
        Some(v.bavail.saturating_mul(v.frsize))
    }

    /// BACKING is nearly full (under a tenth, or twice the reserve, free)
    /// while the trash holds something: writes must come through the
    /// daemon, which purges the trash before they would fill it.
    pub(crate) fn space_tight(&self) -> bool {
        // Rechecked at most every 250 ms; the collector's check of every
        // second and the write path's purge cover the time in between.
        const RECHECK_NS: i64 = 250_000_000;
        let now = Timestamp::now().0;
        let at = self.trash.tight_at.load(Ordering::Acquire);
        if now.saturating_sub(at) < RECHECK_NS && at != 0 {
            return self.trash.tight.load(Ordering::Acquire);
        }
        let tight = self.space_tight_now();
        self.trash.tight.store(tight, Ordering::Release);
        self.trash.tight_at.store(now, Ordering::Release);
        tight
    }

    fn space_tight_now(&self) -> bool {
        if self.trash_ino().is_none() || self.trash_bytes() == 0 {
            return false;
        }
        let Ok(v) = self.objects.space() else {
            return false;
        };
        let frsize = v.frsize;
        let avail = v.bavail.saturating_mul(frsize);
        let total = v.blocks.saturating_mul(frsize);
        avail < (total / 10).max(2 * self.space_reserve())
    }
}
