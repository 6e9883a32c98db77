//! Namespace and attribute operations: lookup, getattr/setattr, creating
//! and removing names, rename, link, readdir, statfs.

use super::archive_attrs;
use super::cache::Known;
use super::flags::{self, Touch};
use super::policy::Change;
use super::{Attr, Fs};
use crate::types::error::{
    eexist, einval, eisdir, enametoolong, enoent, enotdir, enotempty, eperm, Error, Result,
};
use crate::types::journal;
use crate::types::{
    Caller, DirEntry, Inode, Kind, RenameMode, SetAttr, SetTime, StatFs, Timestamp, NAME_MAX,
    ROOT_INO, SYMLINK_MAX,
};
use serde_json::json;
use std::collections::HashMap;

/// What statfs shows as the size of a store in a bucket without a
/// capacity: 1 PiB (a figure only; nothing enforces it).
const REMOTE_SIZE: u64 = 1 << 50;

/// Reject names a directory entry cannot have.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(enametoolong());
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(einval("invalid file name"));
    }
    Ok(())
}

/// `/.trash` belongs to the trash: no name may be made there, nor may it
/// be renamed away or replaced (a directory put in its place would be
/// purged as trash; a renamed trash would keep files nobody purges).
pub(crate) fn check_not_trash(parent: u64, name: &[u8]) -> Result<()> {
    if parent == ROOT_INO && name == super::collector::TRASH {
        return Err(eperm("/.trash is reserved for the trash"));
    }
    Ok(())
}

/// The user name of a uid, or the number when it has none. Looked up once
/// per uid: the passwd lookup costs more than the rest of a create.
pub fn user_name(uid: u32) -> String {
    static NAMES: std::sync::LazyLock<parking_lot::Mutex<std::collections::HashMap<u32, String>>> =
        std::sync::LazyLock::new(Default::default);
    if let Some(n) = NAMES.lock().get(&uid) {
        return n.clone();
    }
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    NAMES.lock().insert(uid, name.clone());
    name
}

/// What to create.
pub enum NewNode<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
    Special { kind: Kind, rdev: u32 },
}

impl Fs {
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        /// Lookups of a name replaced each time it is read before giving up.
        const LOOKUP_TRIES: usize = 64;
        if name.len() > NAME_MAX {
            return Err(enametoolong());
        }
        let dir = self.inode(parent)?;
        if !dir.kind.is_dir() {
            return Err(enotdir());
        }
        let mut tried = None;
        for _ in 0..LOOKUP_TRIES {
            let Some(d) = self.child(parent, name)? else {
                return Err(enoent());
            };
            match self.getattr(d.ino) {
                // The name was replaced between finding the entry and
                // reading its inode, and the file it named reclaimed: the
                // name still exists, so look again (a newer inode each
                // time, or the error is real).
                Err(e) if e.errno() == libc::ENOENT && tried != Some(d.ino) => tried = Some(d.ino),
                r => return r,
            }
        }
        Err(enoent())
    }

    /// Whether [`Fs::lookup`] would be answered from memory. A door whose
    /// database is a network round trip away serves the others elsewhere.
    pub fn lookup_in_memory(&self, parent: u64, name: &[u8]) -> bool {
        self.cache.holds_inode(parent)
            && match self.cache.peek_dentry(parent, name) {
                Known::Hit(Some(d)) => self.cache.holds_inode(d.ino),
                Known::Hit(None) => true,
                Known::Miss => false,
            }
    }

    /// Whether [`Fs::getattr`] would be answered from memory.
    pub fn getattr_in_memory(&self, ino: u64) -> bool {
        self.cache.holds_inode(ino)
    }

    /// Whether a database round trip may take long enough (a network) that
    /// doors should not make other requests wait for one.
    pub fn meta_is_remote(&self) -> bool {
        self.meta.is_remote()
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let inode = self.inode(ino)?;
        self.attr_of(inode)
    }

    /// Load into memory, with one query each, the inodes and attribute
    /// lists of `inos` that are not there yet: what a listing with
    /// attributes (READDIRPLUS, then `ls -l`'s stat and getxattr of each
    /// entry) would otherwise fetch one round trip per entry (issue 19).
    /// Only a hint: a failure leaves each entry to its own query.
    pub fn prefetch(&self, inos: &[u64]) {
        // A later miss on one of them refills the chunk (see `listed`).
        self.listed.remember(inos);
        self.fill_listed(inos);
    }

    /// Load into the cache the inodes of `inos` it does not hold, with
    /// their attribute lists: one query each.
    pub(super) fn fill_listed(&self, inos: &[u64]) {
        // The inode, and the attribute list, where the cache lacks either:
        // their LRUs evict apart (`ls -l` asks for attributes only).
        let missing: Vec<u64> = inos
            .iter()
            .copied()
            .filter(|i| !self.cache.holds_inode(*i))
            .collect();
        let unlisted: Vec<u64> = inos
            .iter()
            .copied()
            .filter(|i| self.cache.lacks_xattrs(*i))
            .collect();
        if missing.is_empty() && unlisted.is_empty() {
            return;
        }
        let gen = self.cache.generation();
        let found = match missing.is_empty() {
            true => Vec::new(),
            false => match self.meta.inodes_of(&missing) {
                Ok(f) => f,
                Err(_) => return,
            },
        };
        let mut want: Vec<u64> = found.iter().map(|i| i.ino).collect();
        want.extend(unlisted);
        let Ok(rows) = self.meta.xattrs_of(&want) else {
            return;
        };
        let mut lists: HashMap<u64, crate::meta::XattrList> = HashMap::new();
        for (ino, name, value) in rows {
            lists.entry(ino).or_default().push((name, value));
        }
        for inode in &found {
            self.cache.fill_inode(gen, inode);
        }
        for ino in want {
            let list = lists.remove(&ino).unwrap_or_default();
            self.cache
                .fill_xattrs(gen, ino, super::cache::xattr_list(list));
        }
    }

    /// An inode by its number alone: the kernel's file handles
    /// (`open_by_handle_at`, an NFS re-export) carry only the number, and
    /// look it up as "." once the kernel has forgotten the inode. Inode
    /// numbers are never reused, so the number is the whole identity. A
    /// file whose names are all gone, or all in the trash, is gone (ESTALE
    /// to the caller), as on ext4 after unlink; one still open stays
    /// reachable, as there.
    pub fn lookup_number(&self, ino: u64) -> Result<Attr> {
        let a = self.getattr(ino)?;
        if ino == ROOT_INO || self.is_open(ino) {
            return Ok(a);
        }
        if a.inode.nlink == 0 {
            return Err(enoent());
        }
        // The trash test reads committed names; handles are looked up
        // rarely (the kernel forgot the inode), so waiting is cheap.
        self.wait_committed()?;
        if super::trash::trashed(self.meta.as_ref(), ino)? {
            return Err(enoent());
        }
        Ok(a)
    }

    /// The directory holding directory `ino` (a handle's parent, for
    /// ".." of a directory the kernel reached by handle).
    pub fn lookup_parent(&self, ino: u64) -> Result<Attr> {
        let dir = self.inode(ino)?;
        if !dir.kind.is_dir() {
            return Err(enotdir());
        }
        self.getattr(dir.parent)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.inode(ino)?;
        inode.target.ok_or_else(|| einval("not a symbolic link"))
    }

    /// Create a node in `parent`. `mode` carries permission bits; `umask`
    /// is applied here (doing it twice is harmless).
    pub fn create_node(
        &self,
        caller: &Caller,
        parent: u64,
        name: &[u8],
        node: NewNode<'_>,
        mode: u32,
        umask: u32,
    ) -> Result<Attr> {
        Ok(self
            .make_node(caller, parent, Some(name), node, mode, umask, false)?
            .0)
    }

    /// Create a node and log it. With `open_after`, the log row stays
    /// pending as the write intent of the handle about to be opened on it;
    /// its id is returned, with the new file's object when one made ahead
    /// of need was used.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn make_node(
        &self,
        caller: &Caller,
        parent: u64,
        name: Option<&[u8]>,
        node: NewNode<'_>,
        mode: u32,
        umask: u32,
        open_after: bool,
    ) -> Result<(Attr, uuid::Uuid, Option<super::objpool::Made>)> {
        // No name: an O_TMPFILE file, made open with no link (an orphan
        // until `link` names it, reclaimed at its last close otherwise).
        if let Some(name) = name {
            check_name(name)?;
            check_not_trash(parent, name)?;
        }
        self.allow(Change::Create)?;
        let (kind, rdev, target) = match node {
            NewNode::File => (Kind::File, 0, None),
            NewNode::Dir => (Kind::Dir, 0, None),
            NewNode::Symlink(t) => {
                if t.len() > SYMLINK_MAX {
                    return Err(enametoolong());
                }
                if t.is_empty() {
                    return Err(enoent());
                }
                (Kind::Symlink, 0, Some(t.to_vec()))
            }
            NewNode::Special { kind, rdev } => (kind, rdev, None),
        };
        // A file to be opened takes an object made ahead of need, if one
        // is ready; it goes back if the create fails.
        let mut pooled = None;
        let made = self.mutate(|tx| {
            let mut dir = tx.live_dir(parent)?;
            flags::check(&dir, Touch::AddEntry)?;
            if let Some(name) = name {
                if tx.lookup(parent, name)?.is_some() {
                    return Err(eexist());
                }
            }
            // The umask, or the directory's default ACL (acl.rs).
            let (mut perm, acls) = match kind {
                Kind::Symlink => (0o777, Vec::new()),
                _ => super::acl::inherit(&tx.xattrs(parent)?, kind.is_dir(), mode & 0o7777, umask),
            };
            let gid;
            (perm, gid) = owner_in(caller, &dir, kind, perm);
            let now = Timestamp::now();
            let new = Inode {
                ino: 0,
                file_id: uuid::Uuid::now_v7().to_string(),
                kind,
                perm,
                uid: caller.uid,
                gid,
                nlink: match (kind.is_dir(), name) {
                    (true, _) => 2,
                    (false, Some(_)) => 1,
                    (false, None) => 0,
                },
                size: target.as_ref().map_or(0, |t| t.len() as u64),
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                rdev,
                parent,
                target: target.clone(),
                created_by: user_name(caller.uid),
                original_name: name.unwrap_or_default().to_vec(),
                sha256: None,
                blocks: None,
                flags: 0,
                version: None,
            };
            let new = match (kind, open_after) {
                (Kind::File, true) => match self.pool.take() {
                    Some(made) => {
                        let ino = made.ino;
                        pooled = Some(made);
                        tx.insert_at(new, ino)
                    }
                    None => tx.insert(new)?,
                },
                _ => tx.insert(new)?,
            };
            if let Some(name) = name {
                tx.add_entry(parent, name, new.ino, kind)?;
            }
            let mut inherited = self.inherited_expiry(tx, parent, kind, now)?;
            if !acls.is_empty() {
                inherited.extend(acls);
                inherited.sort();
            }
            if !inherited.is_empty() {
                tx.set_xattrs(new.ino, inherited);
            }
            let op = match kind {
                Kind::File => journal::Op::Create,
                Kind::Dir => journal::Op::Mkdir,
                Kind::Symlink => journal::Op::Symlink,
                _ => journal::Op::Mknod,
            };
            let status = if open_after {
                journal::Status::Pending
            } else {
                journal::Status::Committed
            };
            let rec = journal::Record::new(
                op,
                status,
                Some(new.file_id.clone()),
                json!({ "ino": new.ino, "parent": parent,
                        "name": name.map(journal::name_json),
                        "mode": new.mode(), "rdev": rdev }),
            )
            .by_caller(caller);
            let id = rec.id;
            tx.log(rec);
            if kind.is_dir() {
                dir.nlink += 1;
            }
            if name.is_some() {
                dir.mtime = now;
                dir.ctime = now;
                tx.put(&dir)?;
            }
            Ok((new, id))
        });
        let (inode, id) = match made {
            Ok(m) => m,
            Err(e) => {
                if let Some(p) = pooled {
                    self.pool.put_back(p);
                }
                return Err(e);
            }
        };
        // Numbers are never reused, so a new inode has no stored
        // attributes unless it was just given some: known without a query
        // (the kernel asks for security.capability at its first write).
        self.cache.fresh_inode_xattrs(inode.ino);
        Ok((self.attr_of(inode)?, id, pooled))
    }

    pub fn unlink(&self, caller: &Caller, parent: u64, name: &[u8]) -> Result<()> {
        check_name(name).map_err(not_found_if_invalid)?;
        self.allow(Change::Remove)?;
        // Names the trash made (its directories), for the kernel's caches.
        let mut made = Vec::new();
        self.mutate(|tx| {
            let mut dir = tx.inode(parent)?;
            if !dir.kind.is_dir() {
                return Err(enotdir());
            }
            let (ino, kind) = tx.lookup(parent, name)?.ok_or_else(enoent)?;
            if kind.is_dir() {
                return Err(eisdir());
            }
            archive_attrs::check_retention(&tx.xattrs(ino)?)?;
            let now = Timestamp::now();
            let inode = tx.inode(ino)?;
            flags::check(&dir, Touch::RemoveEntry)?;
            flags::check(&inode, Touch::Name)?;
            if let Some(tname) =
                self.trash_entry(tx, caller, parent, name, &inode, now, &mut made)?
            {
                tx.log(
                    journal::Record::new(
                        journal::Op::Unlink,
                        journal::Status::Committed,
                        Some(inode.file_id.clone()),
                        json!({ "ino": ino, "parent": parent, "name": journal::name_json(name),
                                "trashed_as": journal::name_json(&tname) }),
                    )
                    .by_caller(caller),
                );
                dir = tx.inode(parent)?;
                dir.mtime = now;
                dir.ctime = now;
                return tx.put(&dir);
            }
            tx.remove_entry(parent, name)?;
            tx.log(
                journal::Record::new(
                    journal::Op::Unlink,
                    journal::Status::Committed,
                    Some(inode.file_id.clone()),
                    json!({ "ino": ino, "parent": parent, "name": journal::name_json(name),
                            "nlink_after": inode.nlink.saturating_sub(1) }),
                )
                .by_caller(caller),
            );
            self.drop_link(tx, inode, now)?;
            dir.mtime = now;
            dir.ctime = now;
            tx.put(&dir)
        })?;
        self.trash_notify(&made);
        Ok(())
    }

    /// One link of a non-directory is gone: keep, orphan or delete it.
    pub(crate) fn drop_link(
        &self,
        tx: &mut super::Mutation<'_>,
        mut inode: Inode,
        now: Timestamp,
    ) -> Result<()> {
        inode.nlink = inode.nlink.saturating_sub(1);
        inode.ctime = now;
        if inode.nlink == 0 && !self.is_open(inode.ino) {
            tx.remove(&inode)
        } else {
            // nlink 0 while open: reclaimed at last release, or at next mount.
            tx.put(&inode)
        }
    }

    /// A directory's name is gone: delete it, or keep it with no links
    /// while it is open (its open descriptors still work, as on ext4),
    /// until its last close or the next mount.
    pub(crate) fn drop_dir(
        &self,
        tx: &mut super::Mutation<'_>,
        mut dir: Inode,
        now: Timestamp,
    ) -> Result<()> {
        if self.files.dirs.lock().contains_key(&dir.ino) {
            dir.nlink = 0;
            dir.ctime = now;
            tx.put(&dir)
        } else {
            tx.remove(&dir)
        }
    }

    /// A door opened directory `ino` (its removal then waits for `releasedir`).
    pub fn opendir(&self, ino: u64) -> Result<Attr> {
        let a = self.getattr(ino)?;
        if !a.inode.kind.is_dir() {
            return Err(enotdir());
        }
        *self.files.dirs.lock().entry(ino).or_insert(0) += 1;
        Ok(a)
    }

    /// A door closed directory `ino`; a removed one goes with its last close.
    pub fn releasedir(&self, ino: u64) -> Result<()> {
        let last = {
            let mut open = self.files.dirs.lock();
            match open.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    open.remove(&ino);
                    true
                }
                None => false,
            }
        };
        if last && self.inode(ino).is_ok_and(|i| i.nlink == 0) {
            self.mutate(|tx| {
                let dir = tx.inode(ino)?;
                if dir.nlink == 0 && !self.files.dirs.lock().contains_key(&ino) {
                    tx.remove(&dir)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    pub fn rmdir(&self, caller: &Caller, parent: u64, name: &[u8]) -> Result<()> {
        if name == b"." {
            return Err(einval("cannot remove '.'"));
        }
        if name == b".." {
            return Err(enotempty());
        }
        check_name(name).map_err(not_found_if_invalid)?;
        self.allow(Change::Remove)?;
        self.mutate(|tx| {
            let mut dir = tx.inode(parent)?;
            if !dir.kind.is_dir() {
                return Err(enotdir());
            }
            let (ino, kind) = tx.lookup(parent, name)?.ok_or_else(enoent)?;
            if !kind.is_dir() {
                return Err(enotdir());
            }
            let victim = tx.inode(ino)?;
            flags::check(&dir, Touch::RemoveEntry)?;
            flags::check(&victim, Touch::Name)?;
            if !tx.dir_is_empty(ino)? {
                return Err(enotempty());
            }
            tx.remove_entry(parent, name)?;
            let now = Timestamp::now();
            self.drop_dir(tx, victim.clone(), now)?;
            tx.log(
                journal::Record::new(
                    journal::Op::Rmdir,
                    journal::Status::Committed,
                    Some(victim.file_id.clone()),
                    json!({ "ino": ino, "parent": parent, "name": journal::name_json(name) }),
                )
                .by_caller(caller),
            );
            dir.nlink = dir.nlink.saturating_sub(1);
            dir.mtime = now;
            dir.ctime = now;
            tx.put(&dir)
        })
    }

    pub fn link(
        &self,
        caller: &Caller,
        ino: u64,
        new_parent: u64,
        new_name: &[u8],
    ) -> Result<Attr> {
        check_name(new_name)?;
        check_not_trash(new_parent, new_name)?;
        self.allow(Change::Create)?;
        let inode = self.mutate(|tx| {
            let mut inode = tx.inode(ino)?;
            if inode.kind.is_dir() {
                return Err(eperm("hard links to directories are not allowed"));
            }
            // A file with no link is linkable only while it is an open
            // O_TMPFILE file that never had a name (the kernel also refuses
            // one opened O_EXCL); it takes the name it is published under.
            let unnamed = inode.original_name.is_empty() && self.is_open(ino);
            if inode.nlink == 0 && !unnamed {
                return Err(enoent());
            }
            if inode.nlink == 0 {
                inode.original_name = new_name.to_vec();
                inode.parent = new_parent;
            }
            if inode.nlink >= 65_000 {
                return Err(Error::posix(libc::EMLINK, "too many links"));
            }
            let mut dir = tx.inode(new_parent)?;
            if !dir.kind.is_dir() {
                return Err(enotdir());
            }
            if dir.nlink == 0 {
                return Err(enoent());
            }
            flags::check(&inode, Touch::Name)?;
            flags::check(&dir, Touch::AddEntry)?;
            if tx.lookup(new_parent, new_name)?.is_some() {
                return Err(eexist());
            }
            let now = Timestamp::now();
            tx.add_entry(new_parent, new_name, ino, inode.kind)?;
            tx.log(
                journal::Record::new(
                    journal::Op::Link,
                    journal::Status::Committed,
                    Some(inode.file_id.clone()),
                    json!({ "ino": ino, "parent": new_parent, "name": journal::name_json(new_name) }),
                )
                .by_caller(caller),
            );
            inode.nlink += 1;
            inode.ctime = now;
            tx.put(&inode)?;
            dir.mtime = now;
            dir.ctime = now;
            tx.put(&dir)?;
            Ok(inode)
        })?;
        self.attr_of(inode)
    }

    pub fn rename(
        &self,
        caller: &Caller,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        mode: RenameMode,
    ) -> Result<Vec<u64>> {
        check_name(name).map_err(not_found_if_invalid)?;
        check_name(new_name)?;
        check_not_trash(parent, name)?;
        check_not_trash(new_parent, new_name)?;
        // Directories whose ".." changed: a door caching listings must drop them.
        let mut moved = Vec::new();
        // The file whose original name this rename replaced, and its
        // creation time: it keeps its new one from now on.
        let mut carried = None;
        self.mutate(|tx| {
            let src_dir = tx.inode(parent)?;
            let dst_dir = tx.inode(new_parent)?;
            if !src_dir.kind.is_dir() || !dst_dir.kind.is_dir() {
                return Err(enotdir());
            }
            // A restore from the trash (or a move into it by hand).
            self.trash_changed_by_hand(tx, &[parent, new_parent])?;
            let (src_ino, src_kind) = tx.lookup(parent, name)?.ok_or_else(enoent)?;
            let dst = tx.lookup(new_parent, new_name)?;
            // Two names of one file: nothing happens, nothing is refused.
            if dst.is_none_or(|(d, _)| d != src_ino) {
                flags::check(&src_dir, Touch::RemoveEntry)?;
                flags::check(&tx.inode(src_ino)?, Touch::Name)?;
                flags::check(&dst_dir, Touch::AddEntry)?;
                if let Some((dst_ino, _)) = dst {
                    flags::check(&dst_dir, Touch::RemoveEntry)?;
                    flags::check(&tx.inode(dst_ino)?, Touch::Name)?;
                }
            }
            match dst {
                Some((dst_ino, _)) if dst_ino != src_ino => {
                    self.allow(Change::RenameOver)?;
                    archive_attrs::check_retention(&tx.xattrs(dst_ino)?)?;
                    if mode == RenameMode::Exchange {
                        archive_attrs::check_retention(&tx.xattrs(src_ino)?)?;
                    }
                }
                _ => self.allow(Change::Rename)?,
            }
            let now = Timestamp::now();
            let src_file_id = tx.inode(src_ino)?.file_id;
            tx.log(
                journal::Record::new(
                    journal::Op::Rename,
                    journal::Status::Committed,
                    Some(src_file_id),
                    json!({ "ino": src_ino, "parent": parent, "name": journal::name_json(name),
                            "new_parent": new_parent, "new_name": journal::name_json(new_name),
                            "replaced_ino": dst.map(|d| d.0),
                            "mode": format!("{mode:?}").to_lowercase() }),
                )
                .by_caller(caller),
            );

            if src_kind.is_dir() && is_within(tx, new_parent, src_ino)? {
                return Err(einval("cannot move a directory into itself"));
            }

            if mode == RenameMode::Exchange {
                let (dst_ino, dst_kind) = dst.ok_or_else(enoent)?;
                if dst_kind.is_dir() && is_within(tx, parent, dst_ino)? {
                    return Err(einval("cannot move a directory into itself"));
                }
                if src_ino == dst_ino {
                    return Ok(());
                }
                if parent != new_parent {
                    moved.extend(
                        [(src_ino, src_kind), (dst_ino, dst_kind)]
                            .iter()
                            .filter(|(_, k)| k.is_dir())
                            .map(|(i, _)| *i),
                    );
                }
                tx.retarget(parent, name, dst_ino, dst_kind)?;
                tx.retarget(new_parent, new_name, src_ino, src_kind)?;
                for (ino, to) in [(src_ino, new_parent), (dst_ino, parent)] {
                    let mut i = tx.inode(ino)?;
                    if i.kind.is_dir() || i.parent == parent || i.parent == new_parent {
                        i.parent = to;
                    }
                    i.ctime = now;
                    tx.put(&i)?;
                }
                if parent != new_parent && src_kind.is_dir() != dst_kind.is_dir() {
                    let (mut a, mut b) = (tx.inode(parent)?, tx.inode(new_parent)?);
                    if src_kind.is_dir() {
                        a.nlink -= 1;
                        b.nlink += 1;
                    } else {
                        a.nlink += 1;
                        b.nlink -= 1;
                    }
                    tx.put(&a)?;
                    tx.put(&b)?;
                }
                touch_dirs(tx, parent, new_parent, now)?;
                return Ok(());
            }

            if let Some((dst_ino, dst_kind)) = dst {
                if mode == RenameMode::NoReplace {
                    return Err(eexist());
                }
                if dst_ino == src_ino {
                    // Two names of one file: POSIX says do nothing.
                    return Ok(());
                }
                match (src_kind.is_dir(), dst_kind.is_dir()) {
                    (true, false) => return Err(enotdir()),
                    (false, true) => return Err(eisdir()),
                    (true, true) => {
                        if !tx.dir_is_empty(dst_ino)? {
                            return Err(enotempty());
                        }
                        let victim = tx.inode(dst_ino)?;
                        tx.remove_entry(new_parent, new_name)?;
                        self.drop_dir(tx, victim, now)?;
                        let mut d = tx.inode(new_parent)?;
                        d.nlink -= 1;
                        tx.put(&d)?;
                    }
                    (false, false) => {
                        tx.remove_entry(new_parent, new_name)?;
                        let victim = tx.inode(dst_ino)?;
                        self.drop_link(tx, victim, now)?;
                    }
                }
            }

            tx.move_entry((parent, name.to_vec()), (new_parent, new_name.to_vec()))?;
            let mut src = tx.inode(src_ino)?;
            src.ctime = now;
            // Write-temp-and-rename: the name the user sees is the original.
            if archive_attrs::takes_new_name(&src, name, now)
                && !self.renamed_fresh.lock().contains_key(&src_ino)
            {
                src.original_name = new_name.to_vec();
                carried = Some((src_ino, src.crtime));
            }
            if src_kind.is_dir() && parent != new_parent {
                moved.push(src_ino);
                src.parent = new_parent;
                let (mut a, mut b) = (tx.inode(parent)?, tx.inode(new_parent)?);
                a.nlink -= 1;
                b.nlink += 1;
                tx.put(&a)?;
                tx.put(&b)?;
            } else if src.parent == parent {
                src.parent = new_parent;
            }
            tx.put(&src)?;
            touch_dirs(tx, parent, new_parent, now)
        })?;
        if let Some((ino, crtime)) = carried {
            self.name_is_final(ino, crtime);
        }
        Ok(moved)
    }

    /// The original name of `ino` (created at `crtime`) is settled: no
    /// later rename carries its new name (a rename already did, or an
    /// upload was published under the name it was given).
    pub(super) fn name_is_final(&self, ino: u64, crtime: Timestamp) {
        let now = Timestamp::now();
        if !archive_attrs::in_rename_window(crtime, now) {
            return;
        }
        let mut fresh = self.renamed_fresh.lock();
        fresh.retain(|_, c| archive_attrs::in_rename_window(*c, now));
        fresh.insert(ino, crtime);
    }

    pub fn setattr(&self, caller: &Caller, ino: u64, set: &SetAttr) -> Result<Attr> {
        // Changing an object's length is a side effect in BACKING: unless a
        // write intent of an open handle covers the file, log a durable
        // intent first.
        let mut intent = None;
        let current = self.getattr(ino)?.inode;
        let change = match set.size {
            Some(s) if s < current.size => Change::Shrink,
            Some(_) => Change::Write,
            None => Change::Metadata,
        };
        self.allow(change)?;
        super::flags::check_setattr(&current, set)?;
        if change != Change::Metadata {
            archive_attrs::check_retention(&self.xattr_list(ino)?)?;
        }
        if let Some(size) = set.size {
            // What a shared mapping wrote since the last close is recorded
            // before the object changes here (see `mapped`).
            self.settle_if_lingering(ino);
            let i = self.inode(ino)?;
            // Growing under a capacity: old trash makes way first.
            self.make_room(size.saturating_sub(i.size));
            match i.kind {
                Kind::File => {}
                Kind::Dir => return Err(eisdir()),
                _ => return Err(einval("cannot truncate this kind of file")),
            }
            if !self.has_write_intent(ino) {
                let rec = journal::Record::new(
                    journal::Op::Truncate,
                    journal::Status::Pending,
                    Some(i.file_id.clone()),
                    json!({ "ino": ino, "from": i.size, "to": size }),
                )
                .by_caller(caller);
                intent = Some(self.durable_intent(rec, Some(ino))?);
                crate::crash_point!("truncate::after_intent");
            }
        }
        let result = self.mutate(|tx| {
            let mut i = tx.inode(ino)?;
            let now = Timestamp::now();
            let mut changed = false;
            if let Some(size) = set.size {
                match i.kind {
                    Kind::File => {}
                    Kind::Dir => return Err(eisdir()),
                    _ => return Err(einval("cannot truncate this kind of file")),
                }
                let (blocks, sent) = self.truncate_object(ino, size)?;
                i.blocks = Some(blocks);
                if let Some(v) = &sent {
                    tx.record_version(&mut i, v);
                }
                crate::crash_point!("truncate::after_object");
                if let Some(id) = intent {
                    tx.settle(journal::Update::new(
                        id,
                        journal::Status::Committed,
                        format!("size {} -> {size}", i.size),
                    ));
                }
                i.size = size;
                i.sha256 = None;
                // As a write would, truncation by non-root drops setuid
                // and setgid (see `perm_after_write`).
                if set.mode.is_none() {
                    i.perm = super::access::perm_after_write(i.perm, i.gid, caller);
                }
                if set.mtime.is_none() {
                    i.mtime = now;
                }
                changed = true;
            }
            if (set.uid.is_some_and(|u| u != i.uid) || set.gid.is_some_and(|g| g != i.gid))
                && !caller.is_root()
            {
                if set.uid.is_some_and(|u| u != i.uid) {
                    return Err(eperm("only root may change the owner"));
                }
                if caller.uid != i.uid || !set.gid.is_some_and(|g| caller.in_group(g)) {
                    return Err(eperm(
                        "only the owner may change the group, to one of theirs",
                    ));
                }
            }
            // Any chown of a non-directory, even to the same owner and by
            // root, drops setuid, and setgid when group-executable (Linux).
            if (set.uid.is_some() || set.gid.is_some()) && set.mode.is_none() && !i.kind.is_dir() {
                i.perm &= !libc::S_ISUID;
                if i.perm & libc::S_IXGRP != 0 {
                    i.perm &= !libc::S_ISGID;
                }
                changed = true;
            }
            if let Some(uid) = set.uid {
                i.uid = uid;
                changed = true;
            }
            if let Some(gid) = set.gid {
                i.gid = gid;
                changed = true;
            }
            if let Some(mode) = set.mode {
                let mut perm = mode & 0o7777;
                if !caller.is_root() && caller.uid != i.uid {
                    return Err(eperm("only the owner may change the mode"));
                }
                if !caller.is_root() && perm & libc::S_ISGID != 0 && !caller.in_group(i.gid) {
                    perm &= !libc::S_ISGID;
                }
                i.perm = perm;
                // An access ACL follows the new mode (acl.rs).
                if let Some(list) = super::acl::chmod(&tx.xattrs(ino)?, perm) {
                    tx.set_xattrs(ino, list);
                }
                changed = true;
            }
            if let Some(t) = set.atime {
                i.atime = resolve(t, now);
                changed = true;
            }
            if let Some(t) = set.mtime {
                i.mtime = resolve(t, now);
                changed = true;
            }
            if changed {
                i.ctime = set.ctime.unwrap_or(now);
            } else if let Some(c) = set.ctime {
                i.ctime = c;
            }
            tx.put(&i)?;
            tx.log(
                journal::Record::new(
                    journal::Op::Setattr,
                    journal::Status::Committed,
                    Some(i.file_id.clone()),
                    json!({ "ino": ino, "mode": set.mode, "uid": set.uid, "gid": set.gid,
                            "size": set.size, "atime": set.atime.is_some(),
                            "mtime": set.mtime.is_some() }),
                )
                .by_caller(caller),
            );
            Ok(i)
        });
        let inode = match (result, intent) {
            (Ok(i), _) => i,
            (Err(e), Some(id)) => {
                self.fail_intent(id, &e);
                return Err(e);
            }
            (Err(e), None) => return Err(e),
        };
        if inode.kind == Kind::File && (set.mtime.is_some() || set.size.is_some()) {
            // The object's own mtime now matches; later writes move it again.
            self.rebase_open(ino);
        }
        self.attr_of(inode)
    }

    /// Whether listing `ino` would wait for pending changes to commit (a
    /// door serves such requests where waiting holds up nobody).
    pub fn readdir_waits(&self, ino: u64) -> bool {
        !self.cache.has_listing(ino) && self.cache.has_dirty_entries(ino)
    }

    /// Directory entries after cookie `offset` (0 starts; 1 and 2 are "."
    /// and ".."). Each entry's `offset` is the cookie to continue from.
    pub fn readdir(&self, ino: u64, offset: u64, limit: usize) -> Result<Vec<DirEntry>> {
        let dir = self.inode(ino)?;
        if !dir.kind.is_dir() {
            return Err(enotdir());
        }
        let mut out = Vec::new();
        if offset < 1 {
            out.push(DirEntry {
                offset: 1,
                ino,
                kind: Kind::Dir,
                name: b".".to_vec(),
            });
        }
        if offset < 2 {
            out.push(DirEntry {
                offset: 2,
                ino: dir.parent,
                kind: Kind::Dir,
                name: b"..".to_vec(),
            });
        }
        let after = offset.saturating_sub(2);
        // A directory made during this run is listed from memory; others
        // come from the store, with pending changes committed first.
        let page = match self.cache.listing(ino, after, limit) {
            Some(p) => p,
            None => {
                if self.cache.has_dirty_entries(ino) {
                    self.wait_committed()?;
                }
                self.meta.read_dir(ino, after, limit)?
            }
        };
        for mut e in page {
            // The trash is reachable by path, not listed.
            if ino == ROOT_INO && e.name == super::collector::TRASH {
                continue;
            }
            e.offset += 2;
            out.push(e);
        }
        Ok(out)
    }

    /// Figures for statfs(2).
    pub fn statfs(&self) -> Result<StatFs> {
        let v = self.objects.space()?;
        let frsize = v.frsize.max(1);
        let bsize = 4096u64;
        let scale = |n: u64| n.saturating_mul(frsize) / bsize;
        // Counted in memory: statfs is frequent (some tools call it per
        // file) and must not wait for a commit or scan the table.
        let files = self.inode_total();
        let (mut blocks, mut bfree, mut bavail) =
            (scale(v.blocks), scale(v.bfree), scale(v.bavail));
        // The trash gives its space back to any write that needs it: it
        // counts as free (reclaimable).
        let trash = self.trash_bytes() / bsize;
        bfree = bfree.saturating_add(trash).min(blocks);
        bavail = bavail.saturating_add(trash).min(blocks);
        if self.objects.is_remote() {
            // A bucket has no size: the capacity is the store's size (1 PiB
            // without one, as other S3 filesystems show); the cache disk
            // is no limit on what the store holds.
            let total = self.capacity().unwrap_or(REMOTE_SIZE);
            let free = (total.saturating_sub(self.usage().0) / bsize).saturating_add(trash);
            blocks = total / bsize;
            bfree = free.min(blocks);
            bavail = bfree;
        } else if let Some(cap) = self.capacity() {
            // `df` tells the store's own accounting, never more than the
            // backing filesystem can hold (trash included).
            let free = (cap.saturating_sub(self.usage().0) / bsize).saturating_add(trash);
            blocks = cap / bsize;
            bfree = bfree.min(free).min(blocks);
            bavail = bavail.min(free).min(blocks);
        }
        Ok(StatFs {
            blocks,
            bfree,
            bavail,
            files: files + v.ffree,
            ffree: v.ffree,
            bsize: bsize as u32,
            namelen: NAME_MAX as u32,
            frsize: bsize as u32,
        })
    }

    /// Resolve a slash-separated path from the root, without following
    /// symlinks (for the HTTP door and tools).
    pub fn resolve_path(&self, path: &[u8]) -> Result<u64> {
        let mut ino = ROOT_INO;
        for comp in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            if comp == b"." {
                continue;
            }
            if comp == b".." {
                return Err(einval("'..' is not allowed in paths"));
            }
            ino = self.lookup(ino, comp)?.inode.ino;
        }
        Ok(ino)
    }
}

/// Permission bits and group of a new inode of `kind` in `dir`: a setgid
/// directory passes its group on (and, to directories, its setgid bit); a
/// non-directory keeps setgid only if its creator is in that group.
pub(crate) fn owner_in(caller: &Caller, dir: &Inode, kind: Kind, mut perm: u32) -> (u32, u32) {
    let mut gid = caller.gid;
    if dir.perm & libc::S_ISGID != 0 {
        gid = dir.gid;
        if kind.is_dir() {
            perm |= libc::S_ISGID;
        }
    }
    if !kind.is_dir() && perm & libc::S_ISGID != 0 && !caller.is_root() && !caller.in_group(gid) {
        perm &= !libc::S_ISGID;
    }
    (perm, gid)
}

fn resolve(t: SetTime, now: Timestamp) -> Timestamp {
    match t {
        SetTime::Now => now,
        SetTime::At(t) => t,
    }
}

/// Removing an invalid name finds nothing (ENOENT), except overlong ones.
fn not_found_if_invalid(e: Error) -> Error {
    if e.errno() == libc::ENAMETOOLONG {
        e
    } else {
        enoent()
    }
}

/// Whether directory `ino` is `ancestor` or lies below it.
fn is_within(tx: &mut super::Mutation<'_>, mut ino: u64, ancestor: u64) -> Result<bool> {
    loop {
        if ino == ancestor {
            return Ok(true);
        }
        if ino == ROOT_INO {
            return Ok(false);
        }
        ino = tx.inode(ino)?.parent;
    }
}

fn touch_dirs(tx: &mut super::Mutation<'_>, a: u64, b: u64, now: Timestamp) -> Result<()> {
    for ino in if a == b { vec![a] } else { vec![a, b] } {
        let mut d = tx.inode(ino)?;
        d.mtime = now;
        d.ctime = now;
        tx.put(&d)?;
    }
    Ok(())
}
#[cfg(test)]
#[path = "namespace_tests.rs"]
mod tests;
