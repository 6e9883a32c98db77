//! Whether anything holds a local file open for writing: the one question
//! the kernel answers about writers the daemon never saw (a shared
//! writable mapping of a passthrough file whose descriptor was closed,
//! see `core::mapped`). A read lease (fcntl(2) `F_SETLEASE`) is refused
//! with EAGAIN exactly while the file is open for writing by anyone; the
//! probe takes one and gives it back at once.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::ObjectStat;

/// What a probe of a local file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// Open for writing somewhere (or was, a moment ago: a descriptor
    /// closed concurrently may not have gone yet).
    Some,
    /// Open for writing nowhere; the file's figures.
    None(ObjectStat),
}

/// Probe `path`: `Ok(None)` when it does not exist. Errors when leases are
/// not available (`fs.leases-enable` is 0, a file system without them).
pub fn probe(path: &Path) -> io::Result<Option<Writers>> {
    ignore_lease_breaks();
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // SAFETY: fcntl on a descriptor this function owns.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
    if r == -1 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(Some(Writers::Some)),
            _ => Err(e),
        };
    }
    // SAFETY: as above; the lease goes with the descriptor anyway.
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    Ok(Some(Writers::None(ObjectStat::of(&f.metadata()?))))
}

/// A process that opens the file for writing while the lease is held
/// breaks it: the kernel signals the holder with SIGIO, whose default
/// action ends the process. The lease lasts microseconds and the opener
/// waits for its release, not for the signal, so the signal is ignored.
fn ignore_lease_breaks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: setting a signal's disposition to SIG_IGN is
        // async-signal-safe and nothing else in the process uses SIGIO.
        unsafe {
            libc::signal(libc::SIGIO, libc::SIG_IGN);
        }
    });
}

/// A shared writable mapping of a file's first `len` bytes, for tests;
/// unmapped when dropped, and it outlives the descriptor it was made from.
#[cfg(test)]
pub(crate) struct TestMap(*mut libc::c_void, usize);

#[cfg(test)]
impl TestMap {
    pub(crate) fn of(file: &File, len: usize) -> TestMap {
        // SAFETY: a fresh mapping of an open file, unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "{}", io::Error::last_os_error());
        TestMap(ptr, len)
    }
}

#[cfg(test)]
impl Drop for TestMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`.
        unsafe { libc::munmap(self.0, self.1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    #[test]
    fn a_file_open_for_writing_or_mapped_has_writers_and_a_read_one_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert_eq!(probe(&p).unwrap(), None);
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        assert!(matches!(probe(&p).unwrap(), Some(Writers::None(s)) if s.size == 4096));
        let reader = File::open(&p).unwrap();
        assert!(matches!(probe(&p).unwrap(), Some(Writers::None(_))));
        drop(reader);
        let writer = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        assert_eq!(probe(&p).unwrap(), Some(Writers::Some));
        // A shared writable mapping holds the file open for writing after
        // its descriptor is closed.
        let map = TestMap::of(&writer, 4096);
        drop(writer);
        assert_eq!(probe(&p).unwrap(), Some(Writers::Some));
        drop(map);
        assert!(matches!(probe(&p).unwrap(), Some(Writers::None(_))));
    }
}
