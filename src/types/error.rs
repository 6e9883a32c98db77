//! The core's error type. Every error carries the errno a local filesystem
//! would return, so both doors map it without knowing where it came from.

use std::fmt;

/// Result alias used throughout the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A POSIX condition (ENOENT, EEXIST, ...) with a short reason.
    #[error("{reason} ({})", errno_name(*.errno))]
    Posix { errno: i32, reason: &'static str },
    /// The same with a reason built at run time (which attribute, what
    /// bound), for refusals people must understand.
    #[error("{reason} ({})", errno_name(*.errno))]
    PosixMsg { errno: i32, reason: String },
    /// An I/O error from the backing directory.
    #[error("backing store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The metadata database failed or is unreachable.
    #[error("metadata store: {0}")]
    Meta(String),
    /// A policy refusal with a message for people (a mode transition).
    #[error("{0}")]
    Policy(String),
}

impl Error {
    pub const fn posix(errno: i32, reason: &'static str) -> Error {
        Error::Posix { errno, reason }
    }

    pub fn posix_msg(errno: i32, reason: impl Into<String>) -> Error {
        Error::PosixMsg {
            errno,
            reason: reason.into(),
        }
    }

    /// Whether the failure is the disk (or database) being full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io(e) => e.raw_os_error() == Some(libc::ENOSPC),
            // SQLITE_FULL's message; PostgreSQL says "No space left on device".
            Error::Meta(m) => m.contains("disk is full") || m.contains("No space left"),
            Error::Posix { errno, .. } | Error::PosixMsg { errno, .. } => *errno == libc::ENOSPC,
            Error::Policy(_) => false,
        }
    }

    /// The errno to hand back to the kernel.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Posix { errno, .. } | Error::PosixMsg { errno, .. } => *errno,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Meta(_) => libc::EIO,
            Error::Policy(_) => libc::EPERM,
        }
    }
}

fn errno_name(errno: i32) -> impl fmt::Display {
    std::io::Error::from_raw_os_error(errno)
}

/// Shorthands for the common conditions.
pub fn enoent() -> Error {
    Error::posix(libc::ENOENT, "no such file or directory")
}
pub fn eexist() -> Error {
    Error::posix(libc::EEXIST, "file exists")
}
pub fn enotdir() -> Error {
    Error::posix(libc::ENOTDIR, "not a directory")
}
pub fn eisdir() -> Error {
    Error::posix(libc::EISDIR, "is a directory")
}
pub fn enotempty() -> Error {
    Error::posix(libc::ENOTEMPTY, "directory not empty")
}
pub fn einval(reason: &'static str) -> Error {
    Error::posix(libc::EINVAL, reason)
}
pub fn eperm(reason: &'static str) -> Error {
    Error::posix(libc::EPERM, reason)
}
pub fn eacces(reason: &'static str) -> Error {
    Error::posix(libc::EACCES, reason)
}
pub fn enametoolong() -> Error {
    Error::posix(libc::ENAMETOOLONG, "name longer than 255 bytes")
}
pub fn ebadf() -> Error {
    Error::posix(libc::EBADF, "bad file handle")
}
