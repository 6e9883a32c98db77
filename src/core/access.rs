//! POSIX permission checks for doors the kernel does not guard.
//!
//! The FUSE door mounts with `default_permissions`: the kernel checks mode
//! bits before a request reaches the core. The HTTP door has no kernel in
//! front of it, so it asks here, and the same rules apply: owner, group and
//! other bits; root passes read and write checks, and execute when any
//! execute bit is set (or on a directory); search permission on every
//! directory walked; the sticky-directory rule for removing or replacing a
//! name.

use super::error::{eacces, enotdir, eperm, Result};
use super::types::{Caller, Inode, ROOT_INO};
use super::{Attr, Fs};

/// Read permission (`R_OK`).
pub const MAY_READ: u32 = 4;
/// Write permission (`W_OK`).
pub const MAY_WRITE: u32 = 2;
/// Execute, or search for a directory (`X_OK`).
pub const MAY_EXEC: u32 = 1;

/// Whether `caller` has every permission in `mask` on `inode`.
pub fn permits(caller: &Caller, inode: &Inode, mask: u32) -> bool {
    let mask = mask & 7;
    if mask == 0 {
        return true;
    }
    if caller.is_root() {
        // As generic_permission: root may read and write anything, and
        // execute what is a directory or executable by someone.
        return mask & MAY_EXEC == 0 || inode.kind.is_dir() || inode.perm & 0o111 != 0;
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

impl Fs {
    /// EACCES unless `caller` has every permission in `mask` (a combination
    /// of [`MAY_READ`], [`MAY_WRITE`], [`MAY_EXEC`]) on `ino`.
    pub fn check_access(&self, caller: &Caller, ino: u64, mask: u32) -> Result<()> {
        let inode = self.inode(ino)?;
        if permits(caller, &inode, mask) {
            Ok(())
        } else {
            Err(eacces("permission denied"))
        }
    }

    /// Resolve `components` from the root as `caller`: each directory
    /// walked must grant search permission, as path resolution in the
    /// kernel does. Symbolic links are not followed (a symlink in the
    /// middle of a path is ENOTDIR).
    pub fn walk(&self, caller: &Caller, components: &[Vec<u8>]) -> Result<Attr> {
        let mut attr = self.getattr(ROOT_INO)?;
        for name in components {
            if !attr.inode.kind.is_dir() {
                return Err(enotdir());
            }
            if !permits(caller, &attr.inode, MAY_EXEC) {
                return Err(eacces("search permission denied"));
            }
            attr = self.lookup(attr.inode.ino, name)?;
        }
        Ok(attr)
    }

    /// Whether `caller` may add, remove or replace names in directory
    /// `dir`; with `victim`, also whether the sticky bit lets them remove
    /// or replace that inode (its owner, the directory's owner or root).
    pub fn check_dir_change(&self, caller: &Caller, dir: u64, victim: Option<u64>) -> Result<()> {
        let d = self.inode(dir)?;
        if !d.kind.is_dir() {
            return Err(enotdir());
        }
        if !permits(caller, &d, MAY_WRITE | MAY_EXEC) {
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
    use crate::core::types::{Kind, Timestamp};

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
