//! The archive's metadata as extended attributes (`user.artstore.*`, the
//! contract of DESIGN §5): which names are maintained by artfs and
//! read-only, which are writable and how their values are checked, and
//! who may set the ones that lock or remove a file (retention, expiry).
//! Every other name under `user.artstore.` is reserved (refused); the rest
//! of `user.` holds custom attributes.

use std::time::Duration;

use crate::types::error::{Error, Result};
use crate::types::{Caller, Inode, Kind, Timestamp};

pub const PREFIX: &[u8] = b"user.artstore.";

/// Maintained by artfs; setting or removing them fails with EPERM.
pub const READ_ONLY: [&str; 6] = [
    "file_id",
    "sha256",
    "created_at",
    "updated_at",
    "created_by",
    "original_filename",
];

/// Writable, with validated values.
pub const WRITABLE: [&str; 6] = [
    "description",
    "version",
    "content_type",
    "retention_until",
    // When the collector removes the file (RFC 3339).
    "expires_at",
    // On a directory: seconds until new files in it expire (inherited by
    // new subdirectories).
    "default_ttl",
];

/// What an attribute name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `user.artstore.<one of READ_ONLY>`.
    ReadOnly(&'static str),
    /// `user.artstore.<one of WRITABLE>`: stored like any attribute.
    Writable(&'static str),
    /// Any other name in the reserved namespace (a typo such as
    /// `user.artstore.descripton`): setting it is refused; one a store
    /// already holds (from before the rule) can still be read and removed.
    Unknown,
    /// Any other name: stored as given.
    Other,
}

pub fn classify(name: &[u8]) -> Class {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return Class::Other;
    };
    if let Some(n) = READ_ONLY.iter().find(|n| n.as_bytes() == rest) {
        return Class::ReadOnly(n);
    }
    if let Some(n) = WRITABLE.iter().find(|n| n.as_bytes() == rest) {
        return Class::Writable(n);
    }
    Class::Unknown
}

/// The read-only names an inode shows: sha256 only for regular files, and
/// none for symlinks and special files, where Linux allows no `user.`
/// attributes (the kernel would refuse to read what we listed).
pub fn read_only_names(inode: &Inode) -> impl Iterator<Item = &'static str> + '_ {
    let shown = matches!(inode.kind, Kind::File | Kind::Dir);
    READ_ONLY
        .iter()
        .copied()
        .filter(move |n| shown && (*n != "sha256" || inode.kind == Kind::File))
}

/// The value of a read-only attribute other than sha256 (which needs the
/// content). `None` when the inode does not have it.
pub fn read_only_value(inode: &Inode, name: &str) -> Option<Vec<u8>> {
    Some(match name {
        "file_id" => inode.file_id.clone().into_bytes(),
        "created_at" => inode.crtime.to_rfc3339().into_bytes(),
        "updated_at" => updated_at(inode).to_rfc3339().into_bytes(),
        "created_by" => inode.created_by.clone().into_bytes(),
        "original_filename" => inode.original_name.clone(),
        _ => return None,
    })
}

/// How recently a regular file must have been created for its first
/// rename to carry the new name into `original_filename`: tools that write
/// a temporary name and rename it over the final one (rsync, editors,
/// package tools, archivers) do so within moments of creating it.
pub const RENAME_NAMES_WINDOW: Duration = Duration::from_secs(60);

/// Whether renaming `inode` from `from` at `now` carries the new name into
/// its original name: a regular file created within
/// [`RENAME_NAMES_WINDOW`] and still under the name it was created with.
/// (That no rename carried a name before is the caller's to know.)
pub fn takes_new_name(inode: &Inode, from: &[u8], now: Timestamp) -> bool {
    inode.kind == Kind::File && inode.original_name == from && in_rename_window(inode.crtime, now)
}

/// Whether a file created at `crtime` is still within
/// [`RENAME_NAMES_WINDOW`] at `now`.
pub fn in_rename_window(crtime: Timestamp, now: Timestamp) -> bool {
    let window = RENAME_NAMES_WINDOW.as_nanos() as i64;
    crtime <= now && now.0 - crtime.0 < window
}

/// When the file or its metadata last changed.
pub fn updated_at(inode: &Inode) -> Timestamp {
    inode.mtime.max(inode.ctime)
}

/// Check a value for a writable attribute.
pub fn validate(name: &str, value: &[u8]) -> Result<()> {
    let text = std::str::from_utf8(value)
        .map_err(|_| Error::posix(libc::EINVAL, "archive attributes must be UTF-8 text"))?;
    match name {
        "default_ttl" if !text.trim().parse::<u64>().is_ok_and(|s| s > 0) => {
            return Err(Error::posix(
                libc::EINVAL,
                "default_ttl must be a number of seconds above 0",
            ));
        }
        "retention_until" | "expires_at" => {
            Timestamp::parse_rfc3339(text.trim()).map_err(|_| {
                Error::posix_msg(
                    libc::EINVAL,
                    format!("{name} must be an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)"),
                )
            })?;
        }
        "content_type" => {
            let ok = text.len() <= 255
                && text.split_once('/').is_some_and(|(t, s)| {
                    !t.is_empty()
                        && !s.is_empty()
                        && text
                            .bytes()
                            .all(|b| b.is_ascii_graphic() || b == b' ' || b == b';')
                });
            if !ok {
                return Err(Error::posix(
                    libc::EINVAL,
                    "content_type must be a MIME type such as text/plain",
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Until when the attributes keep a file from being changed or deleted
/// (`user.artstore.retention_until`), if that is still in the future.
pub fn retained_until(xattrs: &[(Vec<u8>, Vec<u8>)], now: Timestamp) -> Option<Timestamp> {
    let name = [PREFIX, b"retention_until"].concat();
    let (_, v) = xattrs.iter().find(|(n, _)| *n == name)?;
    let t = Timestamp::parse_rfc3339(std::str::from_utf8(v).ok()?.trim()).ok()?;
    (t > now).then_some(t)
}

/// EPERM while `xattrs` hold a retention date in the future.
pub fn check_retention(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
    match retained_until(xattrs, Timestamp::now()) {
        Some(_) => Err(Error::posix(
            libc::EPERM,
            "under retention (user.artstore.retention_until)",
        )),
        None => Ok(()),
    }
}

/// The furthest a retention lock may reach by default (`--max-retention`).
pub const DEFAULT_MAX_RETENTION: Duration = Duration::from_secs(100 * 36525 * 864);

/// EINVAL when a new `retention_until` reaches beyond `now + max` (the
/// store's `--max-retention`; `None`: no bound).
pub fn check_retention_bound(value: &[u8], max: Option<Duration>, now: Timestamp) -> Result<()> {
    let (Some(max), Some(t)) = (
        max,
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| Timestamp::parse_rfc3339(v.trim()).ok()),
    ) else {
        return Ok(());
    };
    let limit = Timestamp(
        now.0
            .saturating_add(i64::try_from(max.as_nanos()).unwrap_or(i64::MAX)),
    );
    if t > limit {
        return Err(Error::posix_msg(
            libc::EINVAL,
            format!(
                "retention_until {} is beyond this store's --max-retention ({}): at most {}",
                t.to_rfc3339(),
                humantime::format_duration(max),
                limit.to_rfc3339()
            ),
        ));
    }
    Ok(())
}

/// Whether `caller` may set the archive attribute `name` on a file owned
/// by `owner`, beyond the write access every attribute takes (the rule of
/// docs/SEMANTICS.md, "Who may lock or schedule removal"):
/// - `retention_until` (a lock even root cannot lift): an HTTP token with
///   the `retain` grant (operator/admin); on the mount, root only, as
///   `chattr +i` needs CAP_LINUX_IMMUTABLE.
/// - `expires_at`, `default_ttl` (a scheduled removal): an HTTP token that
///   may delete; on the mount, the owner or root.
///
/// Removing them takes nothing more: it lifts no lock in force (that is
/// refused elsewhere) and cancels a removal rather than causing one.
pub fn check_privilege(name: &str, caller: &Caller, owner: u32) -> Result<()> {
    let (allowed, who) = match name {
        "retention_until" => (
            caller.grants.map_or(caller.is_root(), |g| g.retain),
            "root on the mount, an operator or admin token (storage:admin when scoped) through the API",
        ),
        "expires_at" | "default_ttl" => (
            caller
                .grants
                .map_or(caller.is_root() || caller.uid == owner, |g| g.expire),
            "the owner or root on the mount, a token that may delete through the API",
        ),
        _ => return Ok(()),
    };
    if allowed {
        Ok(())
    } else {
        Err(Error::posix_msg(
            libc::EPERM,
            format!("setting {name} is a privileged act (allowed to: {who})"),
        ))
    }
}

/// A time value normalised for storage (`Z`, UTC), as the sidecar keeps it.
pub fn normalise(name: &str, value: &[u8]) -> Vec<u8> {
    if name == "retention_until" || name == "expires_at" {
        if let Some(t) = std::str::from_utf8(value)
            .ok()
            .and_then(|s| Timestamp::parse_rfc3339(s.trim()).ok())
        {
            return t.to_rfc3339().into_bytes();
        }
    }
    value.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        assert_eq!(
            classify(b"user.artstore.file_id"),
            Class::ReadOnly("file_id")
        );
        assert_eq!(
            classify(b"user.artstore.description"),
            Class::Writable("description")
        );
        assert_eq!(classify(b"user.artstore.other"), Class::Unknown);
        assert_eq!(classify(b"user.artstore."), Class::Unknown);
        assert_eq!(classify(b"user.project"), Class::Other);
    }

    #[test]
    fn values_are_checked() {
        assert!(validate("retention_until", b"2030-01-01T00:00:00Z").is_ok());
        assert!(validate("retention_until", b"2030-01-01T03:00:00+03:00").is_ok());
        assert_eq!(
            validate("retention_until", b"next year")
                .unwrap_err()
                .errno(),
            libc::EINVAL
        );
        assert!(validate("content_type", b"text/plain; charset=utf-8").is_ok());
        assert!(validate("content_type", b"plain").is_err());
        assert!(validate("description", &[0xff]).is_err());
        assert!(validate("expires_at", b"soon")
            .unwrap_err()
            .to_string()
            .contains("expires_at"));
        assert_eq!(
            normalise("retention_until", b"2030-01-01T03:00:00+03:00"),
            b"2030-01-01T00:00:00Z".to_vec()
        );
    }

    #[test]
    fn a_fresh_file_takes_its_first_new_name() {
        let now = Timestamp::parse_rfc3339("2026-01-01T00:01:00Z").unwrap();
        let mut i = Inode::new_dir(5, 0o644, (0, 0), 1, b".a.KXnWkr", "root");
        i.kind = Kind::File;
        i.crtime = Timestamp(now.0 - 1_000_000_000);
        assert!(takes_new_name(&i, b".a.KXnWkr", now));
        // Not under the name it was created with (a hard link's name).
        assert!(!takes_new_name(&i, b"other", now));
        // Old files keep their original name.
        i.crtime = Timestamp(now.0 - RENAME_NAMES_WINDOW.as_nanos() as i64);
        assert!(!takes_new_name(&i, b".a.KXnWkr", now));
        // Directories always keep theirs.
        let mut d = Inode::new_dir(6, 0o755, (0, 0), 1, b"d", "root");
        d.crtime = now;
        assert!(!takes_new_name(&d, b"d", now));
    }

    #[test]
    fn retention_is_bounded() {
        let now = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let year = Duration::from_secs(366 * 86400);
        assert!(check_retention_bound(b"2026-12-31T00:00:00Z", Some(year), now).is_ok());
        let e = check_retention_bound(b"2028-01-01T00:00:00Z", Some(year), now).unwrap_err();
        assert_eq!(e.errno(), libc::EINVAL);
        assert!(e.to_string().contains("max-retention"), "{e}");
        assert!(check_retention_bound(b"2261-12-31T00:00:00Z", None, now).is_ok());
        assert!(
            check_retention_bound(b"2261-12-31T00:00:00Z", Some(DEFAULT_MAX_RETENTION), now)
                .is_err()
        );
    }

    #[test]
    fn locks_and_expiries_need_their_grant() {
        use crate::types::Grants;
        let user = |uid, grants| Caller {
            uid,
            gid: uid,
            pid: 0,
            subject: None,
            groups: None,
            grants,
        };
        let root = Caller::root();
        assert!(check_privilege("retention_until", &root, 1000).is_ok());
        let owner = user(1000, None);
        assert_eq!(
            check_privilege("retention_until", &owner, 1000)
                .unwrap_err()
                .errno(),
            libc::EPERM
        );
        assert!(check_privilege("expires_at", &owner, 1000).is_ok());
        assert!(check_privilege("default_ttl", &user(1001, None), 1000).is_err());
        assert!(check_privilege("description", &user(1001, None), 1000).is_ok());
        // A token: its grants decide, whatever uid it acts as.
        let token = user(0, Some(Grants::default()));
        assert!(check_privilege("retention_until", &token, 0).is_err());
        assert!(check_privilege("expires_at", &token, 0).is_err());
        let op = Grants {
            retain: true,
            expire: true,
            trash: true,
        };
        assert!(check_privilege("retention_until", &user(65534, Some(op)), 0).is_ok());
    }
}
