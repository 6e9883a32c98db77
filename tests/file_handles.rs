//! File handles (`name_to_handle_at` + `open_by_handle_at`, what an NFS
//! re-export and backup tools use): they survive the kernel forgetting the
//! inode and a remount, and a removed file's handle is stale, as on ext4.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::{ext4_dir, Mount};

/// A handle as the kernel encodes it, and the mount it belongs to.
struct FileHandle {
    bytes: Vec<u8>,
    handle_type: i32,
}

const MAX_HANDLE_SZ: usize = 128;

#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

fn handle_of(path: &Path) -> std::io::Result<FileHandle> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut raw = RawHandle {
        handle_bytes: MAX_HANDLE_SZ as u32,
        handle_type: 0,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    let mut mount_id = 0;
    // SAFETY: `raw` is a file_handle with room for MAX_HANDLE_SZ bytes.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&raw mut raw).cast(),
            &mut mount_id,
            0,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FileHandle {
        bytes: raw.f_handle[..raw.handle_bytes as usize].to_vec(),
        handle_type: raw.handle_type,
    })
}

/// Open `h` on the filesystem mounted at `mount` (any path on it).
fn open_handle(mount: &Path, h: &FileHandle, flags: i32) -> std::io::Result<fs::File> {
    let m = fs::File::open(mount)?;
    let mut raw = RawHandle {
        handle_bytes: h.bytes.len() as u32,
        handle_type: h.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..h.bytes.len()].copy_from_slice(&h.bytes);
    // SAFETY: `raw` is a file_handle filled by name_to_handle_at.
    let fd = unsafe { libc::open_by_handle_at(m.as_raw_fd(), (&raw mut raw).cast(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn read_all(mut f: fs::File) -> Vec<u8> {
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// A name under an open directory descriptor.
fn read_at(dir: &fs::File, name: &str) -> Vec<u8> {
    let c = CString::new(name).unwrap();
    // SAFETY: plain openat on a descriptor we hold.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), libc::O_RDONLY) };
    assert!(
        fd >= 0,
        "openat {name}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new descriptor we own.
    read_all(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[test]
fn handles_survive_a_remount() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir_all(m.path("d/e")).unwrap();
        fs::write(m.path("d/e/f"), b"by handle").unwrap();
        fs::write(m.path("top"), b"top file").unwrap();
        let file = handle_of(&m.path("d/e/f")).unwrap();
        let dir = handle_of(&m.path("d/e")).unwrap();
        let top = handle_of(&m.path("top")).unwrap();
        // While the kernel holds the inodes.
        assert_eq!(
            read_all(open_handle(&m.mnt, &file, libc::O_RDONLY).unwrap()),
            b"by handle"
        );
        // A new daemon and a new kernel superblock: the kernel knows none
        // of the inodes and asks the daemon for each by number, and for a
        // directory's parents to connect it to the tree.
        m.remount();
        assert_eq!(
            read_all(open_handle(&m.mnt, &file, libc::O_RDONLY).unwrap()),
            b"by handle"
        );
        assert_eq!(
            read_all(open_handle(&m.mnt, &top, libc::O_RDONLY).unwrap()),
            b"top file"
        );
        m.remount();
        let d = open_handle(&m.mnt, &dir, libc::O_RDONLY | libc::O_DIRECTORY).unwrap();
        assert_eq!(read_at(&d, "f"), b"by handle");
        // The directory's path resolves from the handle (connected to the
        // tree through "..").
        let via = fs::read_link(format!("/proc/self/fd/{}", d.as_raw_fd())).unwrap();
        assert_eq!(via, m.path("d/e"));
        drop(d);
        // Writing through a handle opened for writing is an ordinary write.
        m.remount();
        {
            use std::io::Write;
            let mut w = open_handle(&m.mnt, &top, libc::O_WRONLY | libc::O_APPEND).unwrap();
            w.write_all(b", appended").unwrap();
        }
        assert_eq!(fs::read(m.path("top")).unwrap(), b"top file, appended");
    });
}

/// ext4's answers for a removed file: stale once closed, open while held.
fn removed_file_outcomes(dir: &Path, mount: &Path, remount: impl FnOnce()) -> (i32, Vec<u8>) {
    fs::write(dir.join("gone"), b"x").unwrap();
    fs::write(dir.join("held"), b"still open").unwrap();
    let gone = handle_of(&dir.join("gone")).unwrap();
    let held = handle_of(&dir.join("held")).unwrap();
    let keep = fs::File::open(dir.join("held")).unwrap();
    fs::remove_file(dir.join("gone")).unwrap();
    fs::remove_file(dir.join("held")).unwrap();
    remount();
    let stale = common::code(open_handle(mount, &gone, libc::O_RDONLY));
    let still = read_all(open_handle(mount, &held, libc::O_RDONLY).unwrap());
    drop(keep);
    (stale, still)
}

#[test]
fn a_removed_files_handle_is_stale_as_on_ext4() {
    let reference = ext4_dir();
    // Both sides forget what they can before the handles are used: the
    // reference once saw a freed inode still in ext4's cache.
    let forget = || {
        nix::unistd::sync();
        fs::write("/proc/sys/vm/drop_caches", b"2").unwrap();
    };
    let ext4 = removed_file_outcomes(reference.path(), reference.path(), forget);
    assert_eq!(ext4, (libc::ESTALE, b"still open".to_vec()));
    common::engine::every_engine(|| {
        // The trash keeps the removed file (default in edit mode): its
        // handle is stale all the same; a file still open is reachable.
        let m = Mount::new();
        let dir = m.path("d");
        fs::create_dir(&dir).unwrap();
        // The removed file's inode goes at once (no link left in the
        // kernel's view).
        let artfs = removed_file_outcomes(&dir, &m.mnt, forget);
        assert_eq!(artfs, ext4);
        let trash = fs::read_dir(m.path(".trash"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(trash > 0, "the removed file is in the trash");
    });
}
