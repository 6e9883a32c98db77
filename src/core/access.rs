//! POSIX permission checks for doors the kernel does not guard.
//!
//! The FUSE door mounts with `default_permissions`: the kernel checks mode
//! bits before a request reaches the core. The HTTP door has no kernel in
//! front of it, so it asks here, and the same rules apply: owner, group and
//! other bits; root passes read and write checks, and execute when any
//! execute bit is set (or on a directory); search permission on every
//! directory walked; the sticky-directory rule for removing or replacing a
//! name. An access ACL is honoured as the kernel's `generic_permission`
//! does ([`permits_with`], the ACL's own rules in `acl.rs`), so both doors
//! grant the same.
//!
//! Reachability (issue 12): a door that finds an inode without walking a
//! path (by file id, by search) asks [`Fs::reachable`], which succeeds only
//! when some name of the inode can be walked from the root by the caller
//! ([`Fs::walk`]: search permission on every directory, and `/.trash` only
//! for callers who may see the trash). So every door applies the checks of
//! a path, written once here.

use super::acl::{access_acl, Acl};
use super::trash::{in_trash, TRASH};
use super::{Attr, Fs};
use crate::types::error::{eacces, enoent, enotdir, eperm, Result};
use crate::types::{Caller, Inode, ROOT_INO};

/// Read permission (`R_OK`).
pub const MAY_READ: u32 = 4;
/// Write permission (`W_OK`).
pub const MAY_WRITE: u32 = 2;
/// Execute, or search for a directory (`X_OK`).
pub const MAY_EXEC: u32 = 1;

/// The mode a file keeps after `caller` changes its content (a write, a
/// truncate), as Linux's kill-suid rules say: root keeps everything;
/// anyone else drops setuid, and setgid when the file is group-executable
/// or the writer is not in the file's group (`setattr_should_drop_sgid`;
/// checked against ext4 by `posix_attrs.rs`).
pub(crate) fn perm_after_write(perm: u32, gid: u32, caller: &Caller) -> u32 {
    if caller.is_root() {
        return perm;
    }
    let mut perm = perm & !libc::S_ISUID;
    if perm & libc::S_ISGID != 0 && (perm & libc::S_IXGRP != 0 || !caller.in_group(gid)) {
        perm &= !libc::S_ISGID;
    }
    perm
}

/// Whether `caller` has every permission in `mask` on `inode` by its mode
/// bits alone (no ACL): [`permits_with`] without one.
pub fn permits(caller: &Caller, inode: &Inode, mask: u32) -> bool {
    permits_with(caller, inode, None, mask)
}

/// Whether `caller` has every permission in `mask` on `inode`, whose access
/// ACL is `acl`, as the kernel's `generic_permission`: root; the owner by
/// the owner bits; then the ACL, consulted only when the mode's group bits
/// (an ACL's mask) are not all clear; else the group or other bits.
pub fn permits_with(caller: &Caller, inode: &Inode, acl: Option<&Acl>, mask: u32) -> bool {
    let mask = mask & 7;
    if mask == 0 {
        return true;
    }
    if caller.is_root() {
        // As generic_permission: root may read and write anything, and
        // execute what is a directory or executable by someone.
        return mask & MAY_EXEC == 0 || inode.kind.is_dir() || inode.perm & 0o111 != 0;
    }
    if caller.uid != inode.uid && inode.perm & 0o070 != 0 {
        if let Some(acl) = acl {
            return acl.permits(caller, inode.uid, inode.gid, mask);
        }
    }
    let bits = if caller.uid == inode.uid {
        (inode.perm >> 6) & 7
    } else if caller.in_group(inode.gid) {
        (inode.perm >> 3) & 7
    } else {
        inode.perm & 7
    };
    bits & mask == mask
}

/// A way a caller reaches an inode: the path walked and where it ends.
#[derive(Clone, Debug)]
pub struct Reach {
    pub attr: Attr,
    /// `/a/b` (bytes; `/` for the root).
    pub path: Vec<u8>,
    /// The directory holding the last name walked, and that name (the
    /// root: `ROOT_INO` and an empty name).
    pub dir: u64,
    pub name: Vec<u8>,
}

impl Reach {
    /// Whether the name reached lies in `/.trash` (then the file has no
    /// name outside it that the caller can walk).
    pub fn in_trash(&self) -> bool {
        in_trash(&self.path)
    }
}

/// Whether `caller` may see and use `/.trash`: local callers (the mount,
/// offline commands: their POSIX identity decides) and HTTP tokens whose
/// role grants it (operator, admin).
pub fn sees_trash(caller: &Caller) -> bool {
    caller.grants.is_none_or(|g| g.trash)
}

impl Fs {
    /// [`permits_with`] with the inode's access ACL, read only when it
    /// could decide.
    pub(crate) fn may(&self, caller: &Caller, inode: &Inode, mask: u32) -> Result<bool> {
        let acl = if mask & 7 != 0
            && !caller.is_root()
            && caller.uid != inode.uid
            && inode.perm & 0o070 != 0
        {
            access_acl(&self.xattr_list(inode.ino)?)
        } else {
            None
        };
        Ok(permits_with(caller, inode, acl.as_ref(), mask))
    }

    /// EACCES unless `caller` has every permission in `mask` (a combination
    /// of [`MAY_READ`], [`MAY_WRITE`], [`MAY_EXEC`]) on `ino`.
    pub fn check_access(&self, caller: &Caller, ino: u64, mask: u32) -> Result<()> {
        let inode = self.inode(ino)?;
        if self.may(caller, &inode, mask)? {
            Ok(())
        } else {
            Err(eacces("permission denied"))
        }
    }

    /// Resolve `components` from the root as `caller`: each directory
    /// walked must grant search permission, as path resolution in the
    /// kernel does. Symbolic links are not followed (a symlink in the
    /// middle of a path is ENOTDIR). `/.trash` is ENOENT, as a missing
    /// name, to a caller who may not see the trash ([`sees_trash`]), so
    /// its existence is not confirmed either.
    pub fn walk(&self, caller: &Caller, components: &[Vec<u8>]) -> Result<Attr> {
        Ok(self.walk_in(caller, components)?.1)
    }

    /// [`Fs::walk`], also giving the directory the last name was found in
    /// (the root for the root).
    fn walk_in(&self, caller: &Caller, components: &[Vec<u8>]) -> Result<(u64, Attr)> {
        let mut attr = self.getattr(ROOT_INO)?;
        let mut dir = ROOT_INO;
        for name in components {
            if !attr.inode.kind.is_dir() {
                return Err(enotdir());
            }
            if !self.may(caller, &attr.inode, MAY_EXEC)? {
                return Err(eacces("search permission denied"));
            }
            if attr.inode.ino == ROOT_INO && name == TRASH && !sees_trash(caller) {
                return Err(enoent());
            }
            dir = attr.inode.ino;
            attr = self.lookup(dir, name)?;
        }
        Ok((dir, attr))
    }

    /// How `caller` reaches inode `ino` by path, or `None` when no name of
    /// it can be walked from the root by them ([`Fs::walk`]), or it has no
    /// name. For a file with several names any walkable one will do: names
    /// outside the trash first, the recorded parent's first among them.
    /// Commits what is staged first (names are read from the database).
    pub fn reachable(&self, caller: &Caller, ino: u64) -> Result<Option<Reach>> {
        self.wait_committed()?;
        self.reach_committed(caller, ino)
    }

    /// [`Fs::reachable`] of the inode with this stable file id.
    pub fn reach_by_file_id(&self, caller: &Caller, file_id: &str) -> Result<Option<Reach>> {
        self.wait_committed()?;
        match self.meta.find_by_file_id(file_id)? {
            Some(ino) => self.reach_committed(caller, ino),
            None => Ok(None),
        }
    }

    /// [`Fs::reachable`] without the flush (the caller flushed).
    pub(crate) fn reach_committed(&self, caller: &Caller, ino: u64) -> Result<Option<Reach>> {
        if ino == ROOT_INO {
            let attr = self.walk(caller, &[])?;
            return Ok(Some(Reach {
                attr,
                path: b"/".to_vec(),
                dir: ROOT_INO,
                name: Vec::new(),
            }));
        }
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) if e.errno() == libc::ENOENT => return Ok(None),
            Err(e) => return Err(e),
        };
        if inode.nlink == 0 {
            // Unlinked while open, or an upload not yet published.
            return Ok(None);
        }
        // Every name as a path, best first.
        let mut names: Vec<(bool, bool, Vec<u8>)> = Vec::new();
        for (_, parent, name) in self.meta.links_of(&[ino])? {
            let Some(mut path) = self.meta.path_of(parent)? else {
                continue;
            };
            if path != b"/" {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            names.push((in_trash(&path), parent != inode.parent, path));
        }
        names.sort_by_key(|(trashed, elsewhere, _)| (*trashed, *elsewhere));
        for (trashed, _, path) in names {
            if trashed && !sees_trash(caller) {
                continue;
            }
            let comps: Vec<Vec<u8>> = path
                .split(|b| *b == b'/')
                .filter(|c| !c.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            match self.walk_in(caller, &comps) {
                Ok((dir, attr)) if attr.inode.ino == ino => {
                    let name = comps.last().expect("a name").clone();
                    return Ok(Some(Reach {
                        attr,
                        path,
                        dir,
                        name,
                    }));
                }
                // Renamed meanwhile, or not walkable by this caller.
                Ok(_) => {}
                Err(e) if matches!(e.errno(), libc::EACCES | libc::ENOENT | libc::ENOTDIR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Whether `caller` may add, remove or replace names in directory
    /// `dir`; with `victim`, also whether the sticky bit lets them remove
    /// or replace that inode (its owner, the directory's owner or root).
    pub fn check_dir_change(&self, caller: &Caller, dir: u64, victim: Option<u64>) -> Result<()> {
        let d = self.inode(dir)?;
        if !d.kind.is_dir() {
            return Err(enotdir());
        }
        if !self.may(caller, &d, MAY_WRITE | MAY_EXEC)? {
            return Err(eacces("write permission on the directory denied"));
        }
        if let Some(v) = victim {
            if d.perm & libc::S_ISVTX != 0 && !caller.is_root() && caller.uid != d.uid {
                let v = self.inode(v)?;
                if caller.uid != v.uid {
                    return Err(eperm(
                        "sticky directory: only the owner may remove or replace",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Kind, Timestamp};

    fn inode(kind: Kind, perm: u32, uid: u32, gid: u32) -> Inode {
        Inode {
            ino: 2,
            file_id: String::new(),
            kind,
            perm,
            uid,
            gid,
            nlink: 1,
            size: 0,
            atime: Timestamp(0),
            mtime: Timestamp(0),
            ctime: Timestamp(0),
            crtime: Timestamp(0),
            rdev: 0,
            parent: 1,
            target: None,
            created_by: String::new(),
            original_name: Vec::new(),
            sha256: None,
            blocks: None,
            flags: 0,
            version: None,
        }
    }

    fn user(uid: u32, gid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid: 0,
            subject: None,
            groups: None,
            grants: None,
        }
    }

    #[test]
    fn owner_group_other_bits() {
        let f = inode(Kind::File, 0o640, 1000, 100);
        assert!(permits(&user(1000, 1), &f, MAY_READ | MAY_WRITE));
        assert!(!permits(&user(1000, 1), &f, MAY_EXEC));
        assert!(permits(&user(2000, 100), &f, MAY_READ));
        assert!(!permits(&user(2000, 100), &f, MAY_WRITE));
        assert!(!permits(&user(2000, 200), &f, MAY_READ));
        // The owner class decides even when group or other would allow more.
        let g = inode(Kind::File, 0o066, 1000, 100);
        assert!(!permits(&user(1000, 100), &g, MAY_READ));
    }

    #[test]
    fn access_acls_decide_for_all_but_the_owner() {
        let mut acl = 2u32.to_le_bytes().to_vec();
        // user::rw- user:2000:rw- group::r-- mask::r-- other::---
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 6, 2000),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        let acl = Acl::parse(&acl).unwrap().unwrap();
        let f = inode(Kind::File, 0o640, 1000, 100);
        assert!(permits_with(&user(2000, 1), &f, Some(&acl), MAY_READ));
        assert!(!permits_with(&user(2000, 1), &f, Some(&acl), MAY_WRITE));
        assert!(!permits_with(&user(3000, 1), &f, Some(&acl), MAY_READ));
        assert!(permits_with(&user(1000, 1), &f, Some(&acl), MAY_WRITE));
        // Group bits all clear: the kernel does not consult the ACL, the
        // other bits decide.
        let g = inode(Kind::File, 0o604, 1000, 100);
        assert!(permits_with(&user(2000, 1), &g, Some(&acl), MAY_READ));
    }

    #[test]
    fn trash_paths() {
        assert!(in_trash(b"/.trash"));
        assert!(in_trash(b"/.trash/1-2-x"));
        assert!(in_trash(b"/.trash/2026/a/b"));
        assert!(!in_trash(b"/.trashy"));
        assert!(!in_trash(b"/a/.trash/x"));
        assert!(!in_trash(b"/"));
        let mut u = user(5, 5);
        assert!(sees_trash(&u));
        u.grants = Some(Default::default());
        assert!(!sees_trash(&u));
        u.grants = Some(crate::types::Grants {
            trash: true,
            ..Default::default()
        });
        assert!(sees_trash(&u));
    }

    #[test]
    fn root_bypasses_read_and_write_not_exec() {
        let f = inode(Kind::File, 0o000, 1000, 100);
        assert!(permits(&Caller::root(), &f, MAY_READ | MAY_WRITE));
        assert!(!permits(&Caller::root(), &f, MAY_EXEC));
        let x = inode(Kind::File, 0o001, 1000, 100);
        assert!(permits(&Caller::root(), &x, MAY_EXEC));
        let d = inode(Kind::Dir, 0o000, 1000, 100);
        assert!(permits(&Caller::root(), &d, MAY_EXEC | MAY_WRITE));
    }
}
