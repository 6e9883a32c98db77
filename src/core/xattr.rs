//! Extended attributes. Names in the `user.`, `trusted.` and `security.`
//! namespaces are stored, and the two POSIX ACLs of `system.`
//! (`system.posix_acl_access`, `system.posix_acl_default`), whose rules
//! are `acl.rs`'s; other `system.` names are not supported.
//!
//! The archive attributes (`user.artstore.*`) are checked here for both
//! doors: read-only names, values, unknown names in the reserved namespace,
//! and who may set a retention lock or schedule a removal
//! ([`archive_attrs::check_privilege`]). Each refusal of an archive
//! attribute is logged once at info level with its reason, since a mount
//! can only answer with an errno.

use super::acl;
use super::archive_attrs::{self, Class};
use super::policy::Change;
use super::{Fs, Mutation};
use crate::types::error::{Error, Result};
use crate::types::journal;
use crate::types::{Caller, Timestamp, XATTR_LIST_MAX, XATTR_NAME_MAX, XATTR_SIZE_MAX};
use serde_json::json;

pub const XATTR_CREATE: i32 = libc::XATTR_CREATE;
pub const XATTR_REPLACE: i32 = libc::XATTR_REPLACE;

fn enodata() -> Error {
    Error::posix(libc::ENODATA, "no such attribute")
}

/// The SELinux label's name (see [`absent`]).
const SELINUX_LABEL: &[u8] = b"security.selinux";

/// The error for an attribute `name` the inode does not have: ENODATA,
/// but EOPNOTSUPP for a missing SELinux label. No security module reads
/// labels from a FUSE mount (policies label FUSE by `genfscon`), so a
/// stored label is plain data, kept and returned; a file without one
/// answers as a filesystem without labels does, and libselinux's callers
/// (`ls -l`, `stat -c %C`, `find -context`) stop asking on this device
/// after the first file: `ls -l` otherwise costs one GETXATTR round trip
/// per entry.
fn absent(name: &[u8]) -> Error {
    if name == SELINUX_LABEL {
        Error::posix(libc::EOPNOTSUPP, "no security label")
    } else {
        enodata()
    }
}

fn read_only() -> Error {
    Error::posix(libc::EPERM, "maintained by artfs: read-only")
}

fn check_xattr_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.len() > XATTR_NAME_MAX {
        return Err(Error::posix(
            libc::ERANGE,
            "attribute name length out of range",
        ));
    }
    if acl::is_acl_name(name) {
        return Ok(());
    }
    let known = [&b"user."[..], b"trusted.", b"security."];
    match known.iter().find(|p| name.starts_with(p)) {
        Some(p) if name.len() == p.len() => Err(Error::posix(libc::EINVAL, "empty attribute name")),
        Some(_) => Ok(()),
        None => Err(Error::posix(
            libc::EOPNOTSUPP,
            "attribute namespace not supported",
        )),
    }
}

impl Fs {
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        check_xattr_name(name)?;
        if let Class::ReadOnly(n) = archive_attrs::classify(name) {
            let inode = self.inode(ino)?;
            let value = match n {
                "sha256" => self.sha256(ino)?.map(String::into_bytes),
                _ => archive_attrs::read_only_value(&inode, n),
            };
            return value.ok_or_else(enodata);
        }
        self.xattr_list(ino)?
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| absent(name))
    }

    /// The stored names (writable archive attributes and custom ones),
    /// each followed by NUL (the listxattr wire format). The computed
    /// read-only names are not listed (as virtual attributes are not on
    /// CephFS or GlusterFS), so copying tools (`rsync -X`, `cp -a`,
    /// `tar --xattrs`) never carry them; they stay readable by name.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        self.listxattr_with(ino, false)
    }

    /// [`Fs::listxattr`], with the computed names first when `computed`
    /// (the mount's `--list-computed-xattrs`).
    pub fn listxattr_with(&self, ino: u64, computed: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        if computed {
            let inode = self.inode(ino)?;
            for n in archive_attrs::read_only_names(&inode) {
                out.extend_from_slice(archive_attrs::PREFIX);
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
        }
        for (n, _) in self.xattr_list(ino)?.iter() {
            out.extend_from_slice(n);
            out.push(0);
        }
        if out.len() > XATTR_SIZE_MAX {
            return Err(Error::posix(libc::E2BIG, "attribute list too large"));
        }
        Ok(out)
    }

    pub fn setxattr(
        &self,
        caller: &Caller,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<()> {
        let r = (|| {
            if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 {
                return Err(Error::posix(libc::EINVAL, "unknown setxattr flags"));
            }
            if self.restores_computed(ino, name, value, flags)? {
                return Ok(());
            }
            let value = checked_value(name, value)?;
            self.allow(Change::Metadata)?;
            let who = Who {
                caller,
                max_retention: self.max_retention,
            };
            self.mutate(|tx| stage_set(tx, &who, ino, name, &value, flags))
        })();
        refused(caller, ino, name, Some(value), r)
    }

    /// Whether `name` is a computed (read-only) attribute being set to
    /// exactly the value it has: a no-op that succeeds, so restoring a
    /// backup onto the file it came from is harmless. Any other value of
    /// a computed attribute is refused later (EPERM, logged).
    fn restores_computed(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<bool> {
        if !matches!(archive_attrs::classify(name), Class::ReadOnly(_)) {
            return Ok(false);
        }
        match self.getxattr(ino, name) {
            Ok(v) if v == value && flags & XATTR_CREATE != 0 => {
                Err(Error::posix(libc::EEXIST, "attribute exists"))
            }
            Ok(v) => Ok(v == value),
            Err(e) if e.errno() == libc::ENODATA => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn removexattr(&self, caller: &Caller, ino: u64, name: &[u8]) -> Result<()> {
        let r = (|| {
            checked_removal(name)?;
            self.allow(Change::Metadata)?;
            self.mutate(|tx| stage_remove(tx, caller, ino, name))
        })();
        refused(caller, ino, name, None, r)
    }

    /// Set and remove several attributes in one change: all of them or, on
    /// any error, none. Removing an absent attribute is not an error here.
    pub fn update_xattrs(
        &self,
        caller: &Caller,
        ino: u64,
        set: &[(Vec<u8>, Vec<u8>)],
        remove: &[Vec<u8>],
    ) -> Result<()> {
        let mut checked = Vec::with_capacity(set.len());
        for (n, v) in set {
            let value = checked_value(n, v);
            checked.push((
                n.as_slice(),
                refused(caller, ino, n, Some(v.as_slice()), value)?,
            ));
        }
        for n in remove {
            refused(caller, ino, n, None, checked_removal(n))?;
        }
        self.allow(Change::Metadata)?;
        let mut culprit: Option<(&[u8], Option<&[u8]>)> = None;
        let who = Who {
            caller,
            max_retention: self.max_retention,
        };
        let r = self.mutate(|tx| {
            for (name, value) in &checked {
                culprit = Some((name, Some(value)));
                stage_set(tx, &who, ino, name, value, 0)?;
            }
            for name in remove {
                culprit = Some((name, None));
                match stage_remove(tx, caller, ino, name) {
                    Err(e) if e.errno() == libc::ENODATA => {}
                    r => r?,
                }
            }
            Ok(())
        });
        match (r, culprit) {
            (Err(e), Some((name, value))) => refused(caller, ino, name, value, Err(e)),
            (r, _) => r,
        }
    }
}

/// Log a refused change of an archive attribute (`user.artstore.*`) once,
/// at info level, with its reason: the mount can only answer an errno.
/// Values are cut to a short prefix.
fn refused<T>(
    caller: &Caller,
    ino: u64,
    name: &[u8],
    value: Option<&[u8]>,
    r: Result<T>,
) -> Result<T> {
    if let Err(e) = &r {
        if name.starts_with(archive_attrs::PREFIX)
            && matches!(e.errno(), libc::EPERM | libc::EINVAL)
        {
            let shown = value.map(|v| {
                let cut = &v[..v.len().min(40)];
                let mut t = String::from_utf8_lossy(cut).into_owned();
                if v.len() > cut.len() {
                    t.push('…');
                }
                t
            });
            tracing::info!(
                ino,
                uid = caller.uid,
                subject = caller.subject.as_deref().unwrap_or(""),
                attribute = %String::from_utf8_lossy(name),
                value = shown.as_deref().unwrap_or("(removal)"),
                reason = %e,
                "archive attribute refused"
            );
        }
    }
    r
}

/// A value to store under `name`: checked, and normalised for the archive
/// attributes.
fn checked_value(name: &[u8], value: &[u8]) -> Result<Vec<u8>> {
    check_xattr_name(name)?;
    if value.len() > XATTR_SIZE_MAX {
        return Err(Error::posix(
            libc::E2BIG,
            "attribute value larger than 64 KiB",
        ));
    }
    if acl::is_acl_name(name) {
        return acl::normalise(value);
    }
    match archive_attrs::classify(name) {
        Class::ReadOnly(_) => Err(read_only()),
        Class::Writable(n) => {
            archive_attrs::validate(n, value)?;
            Ok(archive_attrs::normalise(n, value))
        }
        Class::Unknown => Err(Error::posix(
            libc::EINVAL,
            "unknown name in the reserved user.artstore. namespace (a typo?)",
        )),
        Class::Other => Ok(value.to_vec()),
    }
}

fn checked_removal(name: &[u8]) -> Result<()> {
    check_xattr_name(name)?;
    match archive_attrs::classify(name) {
        Class::ReadOnly(_) => Err(read_only()),
        _ => Ok(()),
    }
}

/// Who sets an attribute, and the store's bound on retention.
struct Who<'a> {
    caller: &'a Caller,
    max_retention: Option<std::time::Duration>,
}

fn stage_set(
    tx: &mut Mutation<'_>,
    who: &Who<'_>,
    ino: u64,
    name: &[u8],
    value: &[u8],
    flags: i32,
) -> Result<()> {
    if acl::is_acl_name(name) {
        return stage_acl(tx, who.caller, ino, name, Some(value));
    }
    let mut inode = tx.inode(ino)?;
    super::flags::check(&inode, super::flags::Touch::Attrs)?;
    let mut list = tx.xattrs(ino)?.as_ref().clone();
    if let Class::Writable(n) = archive_attrs::classify(name) {
        if flags & XATTR_CREATE == 0 && list.iter().any(|(k, v)| k == name && v == value) {
            // The value it already has (a backup restored onto its own
            // file): nothing changes, so nothing needs a privilege.
            return Ok(());
        }
        // Privilege first: an unprivileged caller learns nothing more.
        archive_attrs::check_privilege(n, who.caller, inode.uid)?;
        if n == "retention_until" {
            archive_attrs::check_retention_bound(value, who.max_retention, Timestamp::now())?;
        }
    }
    if archive_attrs::classify(name) == Class::Writable("retention_until") {
        // A retention date in force may be extended, never shortened.
        let now = Timestamp::now();
        if let Some(until) = archive_attrs::retained_until(&list, now) {
            let new = std::str::from_utf8(value)
                .ok()
                .and_then(|v| Timestamp::parse_rfc3339(v).ok());
            if new.is_none_or(|t| t < until) {
                return Err(Error::posix(
                    libc::EPERM,
                    "retention can be extended, never shortened",
                ));
            }
        }
    }
    match list.iter_mut().find(|(n, _)| n == name) {
        Some(_) if flags & XATTR_CREATE != 0 => {
            return Err(Error::posix(libc::EEXIST, "attribute exists"))
        }
        Some((_, v)) => *v = value.to_vec(),
        None if flags & XATTR_REPLACE != 0 => return Err(enodata()),
        None => {
            list.push((name.to_vec(), value.to_vec()));
            list.sort();
            // Every name must stay listable in one listxattr (ext4 runs out
            // of room far sooner, with ENOSPC too).
            let listed: usize = list.iter().map(|(n, _)| n.len() + 1).sum::<usize>()
                + archive_attrs::read_only_names(&inode)
                    .map(|n| archive_attrs::PREFIX.len() + n.len() + 1)
                    .sum::<usize>();
            if listed > XATTR_LIST_MAX {
                return Err(Error::posix(
                    libc::ENOSPC,
                    "no room for another attribute: the names would not fit one listxattr",
                ));
            }
        }
    }
    tx.set_xattrs(ino, list);
    inode.ctime = Timestamp::now();
    tx.log(journal::Record::new(
        journal::Op::XattrSet,
        journal::Status::Committed,
        Some(inode.file_id.clone()),
        json!({ "ino": ino, "name": journal::name_json(name), "size": value.len() }),
    ));
    tx.put(&inode)
}

/// Set (`Some`, checked by `checked_value`) or remove (`None`) a POSIX
/// ACL, as ext4 does behind the kernel's checks: a default ACL only on a
/// directory (EACCES, but removing one from a file is a no-op), only by
/// the owner or root (EPERM); an access ACL sets the mode's rwx bits and is
/// stored only when it says more than they do (`acl::mode_for`). Removing
/// an ACL that is not there succeeds. Flags are ignored, as the kernel
/// ignores them for ACLs.
fn stage_acl(
    tx: &mut Mutation<'_>,
    caller: &Caller,
    ino: u64,
    name: &[u8],
    value: Option<&[u8]>,
) -> Result<()> {
    let mut inode = tx.inode(ino)?;
    super::flags::check(&inode, super::flags::Touch::Attrs)?;
    if inode.kind == crate::types::Kind::Symlink {
        // Linux has no ACL operations for symbolic links.
        return Err(Error::posix(libc::EOPNOTSUPP, "no ACLs on a symbolic link"));
    }
    let mut new = match value {
        Some(v) => acl::Acl::parse(v)?,
        None => None,
    };
    if name == acl::DEFAULT && !inode.kind.is_dir() {
        return match new {
            Some(_) => Err(Error::posix(
                libc::EACCES,
                "a default ACL is only for a directory",
            )),
            None => Ok(()),
        };
    }
    if !caller.is_root() && caller.uid != inode.uid {
        return Err(Error::posix(
            libc::EPERM,
            "only the owner may change an ACL",
        ));
    }
    let mut list = tx.xattrs(ino)?.as_ref().clone();
    let removal = new.is_none();
    if removal && !list.iter().any(|(n, _)| n == name) {
        return Ok(());
    }
    if name == acl::ACCESS {
        if let Some(a) = &new {
            let (perm, store) = acl::mode_for(a, inode.perm, inode.gid, caller);
            inode.perm = perm;
            if !store {
                new = None;
            }
        }
    }
    list.retain(|(n, _)| n != name);
    let stored = new.map(|a| a.to_bytes());
    let size = stored.as_ref().map_or(0, Vec::len);
    if let Some(v) = stored {
        list.push((name.to_vec(), v));
        list.sort();
    }
    tx.set_xattrs(ino, list);
    inode.ctime = Timestamp::now();
    let op = if removal {
        journal::Op::XattrRemove
    } else {
        journal::Op::XattrSet
    };
    tx.log(journal::Record::new(
        op,
        journal::Status::Committed,
        Some(inode.file_id.clone()),
        json!({ "ino": ino, "name": journal::name_json(name), "size": size }),
    ));
    tx.put(&inode)
}

fn stage_remove(tx: &mut Mutation<'_>, caller: &Caller, ino: u64, name: &[u8]) -> Result<()> {
    if acl::is_acl_name(name) {
        return stage_acl(tx, caller, ino, name, None);
    }
    let mut inode = tx.inode(ino)?;
    super::flags::check(&inode, super::flags::Touch::Attrs)?;
    if archive_attrs::classify(name) == Class::Writable("retention_until") {
        archive_attrs::check_retention(&tx.xattrs(ino)?)?;
    }
    let mut list = tx.xattrs(ino)?.as_ref().clone();
    let before = list.len();
    list.retain(|(n, _)| n != name);
    if list.len() == before {
        return Err(enodata());
    }
    tx.set_xattrs(ino, list);
    inode.ctime = Timestamp::now();
    tx.log(journal::Record::new(
        journal::Op::XattrRemove,
        journal::Status::Committed,
        Some(inode.file_id.clone()),
        json!({ "ino": ino, "name": journal::name_json(name) }),
    ));
    tx.put(&inode)
}
