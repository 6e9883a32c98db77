//! Extended attributes. Names in the `user.`, `trusted.` and `security.`
//! namespaces are stored; `system.` (POSIX ACLs) is not supported.

use std::sync::Arc;

use super::error::{Error, Result};
use super::types::{Timestamp, XATTR_NAME_MAX, XATTR_SIZE_MAX};
use super::Fs;

pub const XATTR_CREATE: i32 = libc::XATTR_CREATE;
pub const XATTR_REPLACE: i32 = libc::XATTR_REPLACE;

fn enodata() -> Error {
    Error::posix(libc::ENODATA, "no such attribute")
}

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Error::posix(
            libc::ERANGE,
            "attribute name length out of range",
        ));
    }
    let known = [&b"user."[..], b"trusted.", b"security."];
    if known
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
    {
        Ok(())
    } else {
        Err(Error::posix(
            libc::EOPNOTSUPP,
            "attribute namespace not supported",
        ))
    }
}

impl Fs {
    fn xattr_list(&self, ino: u64) -> Result<super::cache::Xattrs> {
        if let Some(x) = self.cache.xattrs(ino) {
            return Ok(x);
        }
        let gen = self.cache.generation();
        self.inode(ino)?;
        let x = Arc::new(self.meta.xattrs(ino)?);
        self.cache.fill_xattrs(gen, ino, x.clone());
        Ok(x)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name).map_err(|e| {
            if e.errno() == libc::EOPNOTSUPP {
                enodata()
            } else {
                e
            }
        })?;
        self.xattr_list(ino)?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(enodata)
    }

    /// All names, each followed by NUL (the listxattr wire format).
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (n, _) in self.xattr_list(ino)?.iter() {
            out.extend_from_slice(n);
            out.push(0);
        }
        if out.len() > XATTR_SIZE_MAX {
            return Err(Error::posix(libc::E2BIG, "attribute list too large"));
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Error::posix(
                libc::E2BIG,
                "attribute value larger than 64 KiB",
            ));
        }
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
            return Err(Error::posix(libc::EINVAL, "unknown setxattr flags"));
        }
        self.with_tx(|tx| {
            // Under the mutation lock the cached list is the committed one.
            let exists = self.xattr_list(ino)?.iter().any(|(n, _)| n == name);
            if flags & XATTR_CREATE != 0 && exists {
                return Err(Error::posix(libc::EEXIST, "attribute exists"));
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(enodata());
            }
            let mut inode = tx.inode(ino)?;
            tx.txn.set_xattr(ino, name, value)?;
            tx.changes.xattrs_changed.push(ino);
            inode.ctime = Timestamp::now();
            tx.put(&inode)
        })
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        check_xattr_name(name).map_err(|e| {
            if e.errno() == libc::EOPNOTSUPP {
                enodata()
            } else {
                e
            }
        })?;
        self.with_tx(|tx| {
            let mut inode = tx.inode(ino)?;
            if !tx.txn.remove_xattr(ino, name)? {
                return Err(enodata());
            }
            tx.changes.xattrs_changed.push(ino);
            inode.ctime = Timestamp::now();
            tx.put(&inode)
        })
    }
}
