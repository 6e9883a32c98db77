//! A reserve of disk space in BACKING for the metadata database.
//!
//! Objects and the database share one filesystem. When objects fill it,
//! the database could no longer commit, and so could not commit the very
//! removals that would free space. The ballast is a preallocated file the
//! writer deletes when a commit fails for lack of space, so that commit goes
//! through; it is put back once space allows.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub struct Ballast {
    path: PathBuf,
    size: u64,
}

impl Ballast {
    /// The ballast of the store whose state directory is `state_dir`, sized
    /// 1% of the filesystem, between 1 MiB and 64 MiB.
    pub fn new(state_dir: &Path) -> io::Result<Ballast> {
        let st = nix::sys::statvfs::statvfs(state_dir).map_err(io::Error::from)?;
        let total = st.blocks() as u64 * st.fragment_size() as u64;
        Ok(Ballast {
            path: state_dir.join("ballast"),
            size: (total / 100).clamp(1 << 20, 64 << 20),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn present(&self) -> bool {
        self.path.exists()
    }

    /// Put the ballast in place if it is missing and at least four times
    /// its size is free. Returns whether it is in place.
    pub fn ensure(&self) -> io::Result<bool> {
        if self.present() {
            return Ok(true);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let st = nix::sys::statvfs::statvfs(dir).map_err(io::Error::from)?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free < 4 * self.size {
            return Ok(false);
        }
        let tmp = self.path.with_extension("tmp");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // SAFETY: fallocate on an owned descriptor.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, self.size as libc::off_t) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            drop(f);
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &self.path)?;
        Ok(true)
    }

    /// Free the reserve. Returns whether there was one to free.
    pub fn release(&self) -> io::Result<bool> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
