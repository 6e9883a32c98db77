//! Inode flags (`chattr`, `lsattr`): immutable and append-only files and
//! directories, as ext4 keeps them, and who may set them. The kernel's FUSE
//! client keeps no inode flags of its own, so every refusal is made here,
//! for both doors; each operation asks [`check`] with what it would do.
//!
//! Relation to retention (`user.artstore.retention_until`): retention is
//! the archive's lock with a date, which nobody can lift early; `chattr +i`
//! is the administrator's lock without a date, which root can lift. Either
//! refuses what it covers; they are independent.

use super::Fs;
use crate::types::error::{eperm, Error, Result};
use crate::types::flags::{APPEND, IMMUTABLE, KEPT};
use crate::types::{journal, Caller, Inode, SetAttr, SetTime, Timestamp};

/// What an operation would do to an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Touch {
    /// Change bytes already there: a write below the end, truncate,
    /// punching or zeroing a range, opening for writing without O_APPEND.
    Overwrite,
    /// Add bytes at the end (a write at or past the end, O_APPEND).
    Append,
    /// Change mode, owner, explicit times or extended attributes.
    Attrs,
    /// Set the times to now (`touch`): what append-only still allows.
    TimesNow,
    /// Remove, rename or link the inode itself.
    Name,
    /// Add an entry to this directory.
    AddEntry,
    /// Remove or rename an entry of this directory.
    RemoveEntry,
}

/// Refuse `t` on `inode` if its flags forbid it (EPERM, as ext4).
pub fn check(inode: &Inode, t: Touch) -> Result<()> {
    let what = if inode.kind.is_dir() {
        "directory"
    } else {
        "file"
    };
    if inode.flags & IMMUTABLE != 0 {
        return Err(Error::posix_msg(
            libc::EPERM,
            format!("the {what} is immutable (chattr +i)"),
        ));
    }
    if inode.flags & APPEND != 0 && !matches!(t, Touch::Append | Touch::TimesNow | Touch::AddEntry)
    {
        return Err(Error::posix_msg(
            libc::EPERM,
            format!("the {what} is append-only (chattr +a)"),
        ));
    }
    Ok(())
}

/// The touch a `setattr` makes: the strictest of its parts.
pub fn check_setattr(inode: &Inode, set: &SetAttr) -> Result<()> {
    if set.size.is_some() {
        check(inode, Touch::Overwrite)?;
    }
    let explicit = |t: &Option<SetTime>| matches!(t, Some(SetTime::At(_)));
    if set.mode.is_some()
        || set.uid.is_some()
        || set.gid.is_some()
        || explicit(&set.atime)
        || explicit(&set.mtime)
    {
        check(inode, Touch::Attrs)?;
    }
    if set.atime.is_some() || set.mtime.is_some() {
        check(inode, Touch::TimesNow)?;
    }
    Ok(())
}

/// Opening for writing: append-only files only with O_APPEND and never
/// with O_TRUNC.
pub fn check_open_for_writing(inode: &Inode, flags: i32) -> Result<()> {
    let appending = flags & libc::O_APPEND != 0 && flags & libc::O_TRUNC == 0;
    check(
        inode,
        if appending {
            Touch::Append
        } else {
            Touch::Overwrite
        },
    )
}

/// A write the daemon serves (no passthrough), at `offset` into a file
/// of `size` bytes. Through passthrough an append-only file's writers
/// hold O_APPEND descriptors (checked at open), which the kernel keeps on
/// its own copy: clearing O_APPEND with fcntl does not reach it.
pub fn check_write(inode: &Inode, offset: u64, size: u64) -> Result<()> {
    check(
        inode,
        if offset >= size {
            Touch::Append
        } else {
            Touch::Overwrite
        },
    )
}

impl Fs {
    /// The inode flags `lsattr` shows (`FS_IOC_GETFLAGS`).
    pub fn get_flags(&self, ino: u64) -> Result<u32> {
        Ok(self.inode(ino)?.flags)
    }

    /// `chattr` (`FS_IOC_SETFLAGS`): set the kept flags to `flags`. The
    /// owner or root may change them; immutable and append-only, or any
    /// flag of a file that has one of them, only root (the kernel's
    /// CAP_LINUX_IMMUTABLE). A flag artfs does not keep is EOPNOTSUPP;
    /// locking (+i, +a) a file open for writing is EBUSY.
    pub fn set_flags(&self, caller: &Caller, ino: u64, flags: u32) -> Result<u32> {
        if flags & !KEPT != 0 {
            return Err(Error::posix_msg(
                libc::EOPNOTSUPP,
                format!(
                    "artfs keeps only the flags i, a, d and A (asked for {:#x})",
                    flags & !KEPT
                ),
            ));
        }
        self.allow(super::policy::Change::Metadata)?;
        let locks = APPEND | IMMUTABLE;
        let inode = self.mutate(|tx| {
            let mut i = tx.inode(ino)?;
            if i.flags == flags {
                return Ok(i);
            }
            if caller.uid != i.uid && !caller.is_root() {
                return Err(eperm("only the owner or root may change a file's flags"));
            }
            if (i.flags | flags) & locks != 0 && !caller.is_root() {
                return Err(eperm(
                    "only root may set or clear immutable or append-only (chattr +i, +a), \
                     or change the flags of such a file",
                ));
            }
            // A writer the kernel serves directly (passthrough) could not
            // be stopped.
            if flags & !i.flags & locks != 0 && self.open_writers(ino) > 0 {
                return Err(Error::posix(
                    libc::EBUSY,
                    "the file is open for writing; lock it once its writers have closed it",
                ));
            }
            let old = i.flags;
            i.flags = flags;
            i.ctime = Timestamp::now();
            tx.put(&i)?;
            tx.log(
                journal::Record::new(
                    journal::Op::Setattr,
                    journal::Status::Committed,
                    Some(i.file_id.clone()),
                    serde_json::json!({ "ino": ino, "flags": flags, "flags_before": old }),
                )
                .by_caller(caller),
            );
            Ok(i)
        })?;
        Ok(inode.flags)
    }
}
