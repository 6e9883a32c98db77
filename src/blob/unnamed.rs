//! Files made whole before they get a name: written into an unnamed file
//! (`O_TMPFILE`) in the target's directory, then linked in. Sidecars that
//! must be durable at once are written this way
//! (`sidecar::write_atomic_with`): a new one costs one change to its
//! directory instead of a temp file's creation and its rename, and a crash
//! leaves no temp file; a rewrite links the unnamed file under a temp name
//! and renames it over. (The sidecar thread's new sidecars, durable only at
//! its `syncfs`, are created at their names: cheaper still.)
//! Where the filesystem has no unnamed files, or linking one is refused
//! (before Linux 6.10 `AT_EMPTY_PATH` needs CAP_DAC_READ_SEARCH; then
//! `/proc/self/fd` is tried), [`write`] says so from then on and callers
//! go the temp-file way.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// An unnamed file in `dir` holding `data`, `sync`ed; `None` where
/// unnamed files cannot be used.
pub fn write(
    dir: &Path,
    data: &[u8],
    sync: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<Option<File>> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let mut file = match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
    {
        Ok(f) => f,
        Err(e) if unsupported(&e) => {
            give_up(&e);
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    file.write_all(data)?;
    sync(&file)?;
    Ok(Some(file))
}

pub enum Linked {
    Done,
    /// The name exists; nothing changed.
    Taken,
    /// Linking unnamed files is refused here (from now on [`write`]
    /// gives `None`): write the document another way.
    Refused,
}

/// Give `file` (from [`write`]) the name `path`, if it is free.
pub fn link(file: &File, path: &Path) -> io::Result<Linked> {
    let to = CString::new(path.as_os_str().as_bytes())?;
    let by_fd = |flags| {
        // SAFETY: valid descriptor and NUL-terminated paths.
        let r = unsafe {
            libc::linkat(
                file.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                flags,
            )
        };
        ok(r)
    };
    let by_proc = || {
        let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
        // SAFETY: NUL-terminated paths.
        let r = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                from.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        ok(r)
    };
    let r = match by_fd(libc::AT_EMPTY_PATH) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOENT)) => by_proc(),
        r => r,
    };
    match r {
        Ok(()) => Ok(Linked::Done),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(Linked::Taken),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOENT)) => {
            // Refused by the kernel or without /proc: `path`'s
            // directory exists (the unnamed file was made in it).
            give_up(&e);
            Ok(Linked::Refused)
        }
        Err(e) => Err(e),
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
    )
}

fn give_up(e: &io::Error) {
    if !UNSUPPORTED.swap(true, Ordering::Relaxed) {
        tracing::info!(error = %e, "sidecars: unnamed files (O_TMPFILE) unusable here; writing them by temp file and rename");
    }
}

/// A libc call's result: 0, or -1 with `errno` set.
fn ok(r: libc::c_int) -> io::Result<()> {
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}
