//! Plain data types shared by the core, the metadata stores and the doors.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod error;
pub mod journal;
pub mod url;

/// A directory entry's key: (parent inode, name bytes).
pub type DentryKey = (u64, Vec<u8>);

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;
/// Longest name a directory entry may have, in bytes.
pub const NAME_MAX: usize = 255;
/// Largest extended attribute value (as Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 64 * 1024;
/// Longest list of attribute names (as Linux `XATTR_LIST_MAX`).
pub const XATTR_LIST_MAX: usize = 64 * 1024;
/// Longest extended attribute name (as Linux `XATTR_NAME_MAX`).
pub const XATTR_NAME_MAX: usize = 255;
/// Longest symlink target (as Linux `PATH_MAX` less the NUL).
pub const SYMLINK_MAX: usize = 4095;

/// What an inode is. Stored as a small integer; never renumber.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    Socket = 5,
    CharDev = 6,
    BlockDev = 7,
}

impl Kind {
    pub fn from_i64(v: i64) -> Option<Kind> {
        Some(match v {
            1 => Kind::File,
            2 => Kind::Dir,
            3 => Kind::Symlink,
            4 => Kind::Fifo,
            5 => Kind::Socket,
            6 => Kind::CharDev,
            7 => Kind::BlockDev,
            _ => return None,
        })
    }

    /// The kind encoded in the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return None,
        })
    }

    pub fn is_dir(self) -> bool {
        self == Kind::Dir
    }
}

/// Nanoseconds since the Unix epoch, UTC. The one time type of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

/// The latest time [`Timestamp::now`] gave or [`Timestamp::observe`] saw.
static FLOOR: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(i64::MIN);

/// How far ahead of the coarse clock a kernel-made time may be (the
/// kernel's fine-grained stamps lead it by at most a tick).
const KERNEL_LEAD_NS: i64 = 50_000_000;

/// The kernel's coarse real-time clock, the one it stamps files with.
fn coarse_now() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the kernel to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } != 0 {
        return Timestamp::from_system(SystemTime::now()).0;
    }
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

impl Timestamp {
    /// Now, for file times and every other stamp the store keeps.
    ///
    /// From the clock the kernel stamps files with (its coarse clock,
    /// `current_time()`), never earlier than a time given before or seen
    /// on an object: writes through passthrough get their times from the
    /// kernel, the rest from here, and the two must order as the events
    /// did (a file made after another never looks older). Two events in
    /// one tick may get the same time, as on ext4 (a later stamp that ran
    /// ahead of the clock would make a kernel stamp after it look older).
    pub fn now() -> Timestamp {
        let t = coarse_now();
        let before = FLOOR.fetch_max(t, std::sync::atomic::Ordering::AcqRel);
        Timestamp(t.max(before))
    }

    /// A time the kernel gave an object (a write through passthrough):
    /// later [`now`](Self::now)s are not earlier. Times set by hand into
    /// the future (`touch -d`) are not taken as the clock.
    pub fn observe(t: Timestamp) {
        if t.0 <= coarse_now().saturating_add(KERNEL_LEAD_NS) {
            FLOOR.fetch_max(t.0, std::sync::atomic::Ordering::AcqRel);
        }
    }

    pub fn from_system(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(d.as_nanos().min(i64::MAX as u128) as i64),
            Err(e) => Timestamp(-(e.duration().as_nanos().min(i64::MAX as u128) as i64)),
        }
    }

    /// The modification time of a file as the backing filesystem has it.
    pub fn mtime_of(m: &std::fs::Metadata) -> Timestamp {
        use std::os::unix::fs::MetadataExt;
        Timestamp(m.mtime() * 1_000_000_000 + m.mtime_nsec())
    }

    /// The change time of a file as the backing filesystem has it.
    pub fn ctime_of(m: &std::fs::Metadata) -> Timestamp {
        use std::os::unix::fs::MetadataExt;
        Timestamp(m.ctime() * 1_000_000_000 + m.ctime_nsec())
    }

    pub fn to_system(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_nanos(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(self.0.unsigned_abs())
        }
    }

    /// RFC 3339 in UTC with `Z`, keeping as many fractional digits as the
    /// nanoseconds need (none for a whole second): `2024-03-05T10:20:30.5Z`.
    pub fn to_rfc3339(self) -> String {
        // Every i64 of nanoseconds is within years 1677..2262, so neither
        // the conversion nor RFC 3339's four-digit year can fail.
        time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128)
            .expect("i64 nanoseconds are a valid instant")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("years 1677..2262 fit RFC 3339")
    }

    /// Parse RFC 3339 (`Z` or any offset, converted to UTC) or a naive
    /// ISO 8601 date-time without an offset (`2024-03-05T10:20:30.123456`,
    /// as Python's `isoformat()` writes for naive datetimes), which is taken
    /// as UTC. A space may stand for the `T`.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, TimestampError> {
        use time::format_description::well_known::Rfc3339;
        use time::macros::format_description;
        let s = s.trim();
        let bad = || TimestampError(s.to_string());
        let utc = match time::OffsetDateTime::parse(s, &Rfc3339) {
            Ok(t) => t,
            Err(_) => {
                let naive = format_description!(
                    version = 2,
                    "[year]-[month]-[day][first [T] [t] [ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
                );
                time::PrimitiveDateTime::parse(s, &naive)
                    .map_err(|_| bad())?
                    .assume_utc()
            }
        };
        i64::try_from(utc.unix_timestamp_nanos())
            .map(Timestamp)
            .map_err(|_| bad())
    }
}

/// A time string that is neither RFC 3339 nor a naive ISO 8601 date-time,
/// or lies outside what i64 nanoseconds hold (years 1677..2262).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 time within 1677..2262: {0:?}")]
pub struct TimestampError(pub String);

/// One inode as the metadata store keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    /// Stable identity (UUID v7), survives rename, shared by hard links.
    pub file_id: String,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub size: u64,
    pub atime: Timestamp,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub crtime: Timestamp,
    pub rdev: u32,
    /// For directories the containing directory; for other kinds the
    /// directory of the first link (kept for sidecars and rebuild).
    pub parent: u64,
    /// Symlink target bytes.
    pub target: Option<Vec<u8>>,
    pub created_by: String,
    /// The name the inode was created under.
    pub original_name: Vec<u8>,
    /// SHA-256 (hex) of a regular file's content; `None` while unknown.
    pub sha256: Option<String>,
    /// 512-byte blocks a regular file's object held when last recorded;
    /// `None` while unknown (the size stands in).
    pub blocks: Option<u64>,
    /// The inode flags `chattr` sets (`FS_IOC_SETFLAGS` bits:
    /// [`flags::IMMUTABLE`], [`flags::APPEND`], ...; see `core::flags`).
    pub flags: u32,
    /// The content version the tables hold a regular file to be, in a
    /// store that keeps versions (a bucket: the last part of the object's
    /// key); `None` in a local directory, or while not recorded.
    pub version: Option<String>,
}

/// Inode flags as `FS_IOC_GETFLAGS`/`SETFLAGS` carry them (linux/fs.h), the
/// ones artfs keeps.
pub mod flags {
    /// `chattr +i`: no change at all, nor removal.
    pub const IMMUTABLE: u32 = 0x0000_0010;
    /// `chattr +a`: content only grows; no removal.
    pub const APPEND: u32 = 0x0000_0020;
    /// `chattr +d`: skipped by dump(8); kept, no effect here.
    pub const NODUMP: u32 = 0x0000_0040;
    /// `chattr +A`: reads never move the atime.
    pub const NOATIME: u32 = 0x0000_0080;
    /// Every flag artfs keeps; setting another is EOPNOTSUPP.
    pub const KEPT: u32 = IMMUTABLE | APPEND | NODUMP | NOATIME;
}

impl Inode {
    /// A new, empty directory made by artfs itself (the root, /.trash,
    /// /lost+found): a fresh file id, all times now.
    pub fn new_dir(
        ino: u64,
        perm: u32,
        owner: (u32, u32),
        parent: u64,
        name: &[u8],
        by: &str,
    ) -> Inode {
        let now = Timestamp::now();
        Inode {
            ino,
            file_id: uuid::Uuid::now_v7().to_string(),
            kind: Kind::Dir,
            perm,
            uid: owner.0,
            gid: owner.1,
            nlink: 2,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            rdev: 0,
            parent,
            target: None,
            created_by: by.to_string(),
            original_name: name.to_vec(),
            sha256: None,
            blocks: None,
            flags: 0,
            version: None,
        }
    }

    /// Full `st_mode` (type and permission bits).
    pub fn mode(&self) -> u32 {
        let fmt = match self.kind {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
        };
        fmt | (self.perm & 0o7777)
    }
}

/// A directory entry as readdir returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Stable cookie: the next readdir continues after it.
    pub offset: u64,
    pub ino: u64,
    pub kind: Kind,
    pub name: Vec<u8>,
}

/// Who is asking. uid/gid come from the kernel request (or the JWT mapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// Who is behind the request beyond the uid (a JWT subject), for the
    /// log's `user_id`.
    pub subject: Option<String>,
    /// Supplementary groups, when known up front (the HTTP API's
    /// identity); `None`: read from /proc for the calling process.
    pub groups: Option<std::sync::Arc<[u32]>>,
    /// Archive acts no permission bit governs, granted by an HTTP token's
    /// role and scope; `None` for a local process (a FUSE request, an
    /// offline command), whose uid decides instead.
    pub grants: Option<Grants>,
}

impl Caller {
    /// Who this is, for messages naming the holders of open files: the
    /// token's subject through the HTTP API, else the process.
    pub fn describe(&self) -> String {
        match &self.subject {
            Some(s) => format!("API client {s}"),
            None => format!("pid {} (uid {})", self.pid, self.uid),
        }
    }
}

/// What an HTTP caller's role and scope allow beyond its POSIX identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Set or extend a retention lock (`user.artstore.retention_until`).
    pub retain: bool,
    /// Schedule a removal (`user.artstore.expires_at`, `default_ttl`).
    pub expire: bool,
    /// See and use `/.trash`.
    pub trash: bool,
}

impl Caller {
    pub fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            pid: 0,
            subject: None,
            groups: None,
            grants: None,
        }
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Whether the caller belongs to `gid`, counting supplementary groups
    /// (read from /proc for FUSE callers; only asked on rare paths).
    pub fn in_group(&self, gid: u32) -> bool {
        if self.gid == gid {
            return true;
        }
        if let Some(g) = &self.groups {
            return g.contains(&gid);
        }
        if self.pid == 0 {
            return false;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .map(|groups| {
                groups
                    .split_whitespace()
                    .any(|g| g.parse::<u32>() == Ok(gid))
            })
            .unwrap_or(false)
    }
}

/// A time to set: a given instant or "now" (UTIME_NOW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Timestamp),
}

/// The fields of a setattr request; `None` means leave unchanged (UTIME_OMIT).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Timestamp>,
}

/// Filesystem-wide figures for statfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// How rename treats an existing target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RenameMode {
    #[default]
    Replace,
    NoReplace,
    Exchange,
}
