//! Hard links, symbolic links, special files (FIFO, socket) and statfs
//! through real syscalls. Errnos are compared with a local ext4.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::sys::stat::{mknod, Mode, SFlag};

use common::{code, errno, ext4_dir, Mount};

fn nlink(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().nlink()
}

#[test]
fn hard_link_counts_everywhere() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir(m.path("d")).unwrap();
        fs::write(m.path("a"), b"shared").unwrap();
        let ino = fs::metadata(m.path("a")).unwrap().ino();
        let open = fs::File::open(m.path("a")).unwrap();
        fs::hard_link(m.path("a"), m.path("b")).unwrap();
        fs::hard_link(m.path("b"), m.path("d/c")).unwrap();
        for p in ["a", "b", "d/c"] {
            let md = fs::metadata(m.path(p)).unwrap();
            assert_eq!(md.nlink(), 3, "{p}");
            assert_eq!(md.ino(), ino, "{p}");
        }
        assert_eq!(open.metadata().unwrap().nlink(), 3);
        // Links do not count towards the directory's link count.
        assert_eq!(nlink(&m.path("d")), 2);
        assert_eq!(nlink(&m.mnt), 3);
        // Writing through one name shows through the others.
        fs::OpenOptions::new()
            .append(true)
            .open(m.path("d/c"))
            .unwrap()
            .write_all(b"+more")
            .unwrap();
        assert_eq!(fs::read(m.path("a")).unwrap(), b"shared+more");
        fs::remove_file(m.path("a")).unwrap();
        assert_eq!(nlink(&m.path("b")), 2);
        assert_eq!(open.metadata().unwrap().nlink(), 2);
        drop(open);
        m.remount();
        assert_eq!(nlink(&m.path("b")), 2);
        assert_eq!(nlink(&m.path("d/c")), 2);
        assert_eq!(fs::read(m.path("d/c")).unwrap(), b"shared+more");
        fs::remove_file(m.path("d/c")).unwrap();
        assert_eq!(nlink(&m.path("b")), 1);
        assert_eq!(fs::read(m.path("b")).unwrap(), b"shared+more");
    });
}

#[test]
fn link_changes_ctime_and_parent_mtime() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::write(m.path("a"), b"").unwrap();
        fs::create_dir(m.path("d")).unwrap();
        let before = fs::metadata(m.path("a")).unwrap();
        let dir_before = fs::metadata(m.path("d")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15));
        fs::hard_link(m.path("a"), m.path("d/b")).unwrap();
        let after = fs::metadata(m.path("a")).unwrap();
        let dir_after = fs::metadata(m.path("d")).unwrap();
        assert!(
            (after.ctime(), after.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
            "link did not change ctime"
        );
        assert_eq!(
            (after.mtime(), after.mtime_nsec()),
            (before.mtime(), before.mtime_nsec())
        );
        assert!(
            (dir_after.mtime(), dir_after.mtime_nsec())
                > (dir_before.mtime(), dir_before.mtime_nsec())
        );
    });
}

/// The errnos of link/symlink edge cases, run in `dir`.
fn link_errnos(d: &Path) -> Vec<i32> {
    let p = |s: &str| d.join(s);
    fs::create_dir(p("dir")).unwrap();
    fs::write(p("f"), b"").unwrap();
    fs::write(p("g"), b"").unwrap();
    std::os::unix::fs::symlink("f", p("sym")).unwrap();
    std::os::unix::fs::symlink("nowhere", p("dangling")).unwrap();
    let sym = |t: &str, l: &str| std::os::unix::fs::symlink(t, p(l));
    vec![
        code(fs::hard_link(p("dir"), p("dirlink"))),
        code(fs::hard_link(p("f"), p("g"))),
        code(fs::hard_link(p("f"), p("dir"))),
        code(fs::hard_link(p("missing"), p("x"))),
        code(fs::hard_link(p("f"), p("missing/x"))),
        code(fs::hard_link(p("f"), p("g/x"))),
        code(fs::hard_link(p("f"), p("f"))),
        code(sym("x", "f")),
        code(sym("x", "dir")),
        code(sym("x", "missing/l")),
        code(sym("", "empty-target")),
        code(sym(&"t".repeat(4095), "long-target")),
        code(sym(&"t".repeat(4096), "too-long-target")),
        // link(2) does not follow a symlink source: the link is to the symlink.
        code(fs::hard_link(p("dangling"), p("dangling2"))),
        code(fs::read_link(p("f"))),
        code(fs::read_link(p("missing"))),
        code(fs::read_link(p("dangling"))),
        code(fs::read(p("dangling"))),
    ]
}

#[test]
fn link_and_symlink_errnos_match_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("t")).unwrap();
        let got = link_errnos(&m.path("t"));
        let reference = ext4_dir();
        let want = link_errnos(reference.path());
        use libc::*;
        assert_eq!(
            want,
            vec![
                EPERM,
                EEXIST,
                EEXIST,
                ENOENT,
                ENOENT,
                ENOTDIR,
                EEXIST,
                EEXIST,
                EEXIST,
                ENOENT,
                ENOENT,
                0,
                ENAMETOOLONG,
                0,
                EINVAL,
                ENOENT,
                0,
                ENOENT
            ],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
        let t = m.path("t");
        assert!(fs::symlink_metadata(t.join("dangling2"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(nlink(&t.join("dangling")), 2);
        assert_eq!(nlink(&t.join("dir")), 2);
        assert_eq!(nlink(&t.join("f")), 1);
    });
}

#[test]
fn symlink_and_readlink() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir(m.path("d")).unwrap();
        fs::write(m.path("d/real"), b"real data").unwrap();
        let targets: Vec<&[u8]> = vec![
            b"d/real",
            b"/absolute/elsewhere",
            b"../../outside",
            b"with space and \xff non-utf8",
            b"d",
        ];
        use std::os::unix::ffi::OsStrExt;
        for (i, t) in targets.iter().enumerate() {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(t), m.path(&format!("l{i}")))
                .unwrap();
        }
        let long = "x/".repeat(2047) + "y"; // 4095 bytes
        std::os::unix::fs::symlink(&long, m.path("long")).unwrap();
        for round in 0..2 {
            for (i, t) in targets.iter().enumerate() {
                let p = m.path(&format!("l{i}"));
                assert_eq!(
                    fs::read_link(&p).unwrap().as_os_str().as_bytes(),
                    *t,
                    "round {round}"
                );
                let md = fs::symlink_metadata(&p).unwrap();
                assert!(md.file_type().is_symlink());
                assert_eq!(
                    md.len(),
                    t.len() as u64,
                    "symlink size is its target length"
                );
                assert_eq!(md.mode() & 0o777, 0o777);
            }
            assert_eq!(fs::read_link(m.path("long")).unwrap().as_os_str(), &*long);
            // Following: to a file, a directory, and nowhere.
            assert_eq!(fs::read(m.path("l0")).unwrap(), b"real data");
            assert!(fs::metadata(m.path("l4")).unwrap().is_dir());
            assert_eq!(fs::read(m.path("l4/real")).unwrap(), b"real data");
            assert_eq!(errno(fs::metadata(m.path("l1"))), libc::ENOENT);
            m.remount();
        }
        // A loop.
        std::os::unix::fs::symlink("loop2", m.path("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", m.path("loop2")).unwrap();
        assert_eq!(errno(fs::metadata(m.path("loop1"))), libc::ELOOP);
        // Removing a symlink leaves the target alone.
        fs::remove_file(m.path("l0")).unwrap();
        assert_eq!(fs::read(m.path("d/real")).unwrap(), b"real data");
    });
}

#[test]
fn mknod_fifo_works_as_a_pipe() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        mknod(
            &m.path("fifo"),
            SFlag::S_IFIFO,
            Mode::from_bits_truncate(0o640),
            0,
        )
        .unwrap();
        let md = fs::symlink_metadata(m.path("fifo")).unwrap();
        assert!(md.file_type().is_fifo());
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(md.len(), 0);
        // Data flows through the kernel pipe, not the filesystem.
        let p = m.path("fifo");
        let writer = std::thread::spawn(move || {
            let mut w = fs::OpenOptions::new().write(true).open(p).unwrap();
            w.write_all(b"through the fifo").unwrap();
        });
        let mut r = fs::File::open(m.path("fifo")).unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        writer.join().unwrap();
        assert_eq!(s, "through the fifo");
        drop(r);
        // mkfifo on an existing name fails, and it survives a remount.
        assert_eq!(
            code(
                nix::unistd::mkfifo(&m.path("fifo"), Mode::from_bits_truncate(0o600))
                    .map_err(std::io::Error::from)
            ),
            libc::EEXIST
        );
        m.remount();
        assert!(fs::symlink_metadata(m.path("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        fs::remove_file(m.path("fifo")).unwrap();
    });
}

#[test]
fn mknod_socket_and_bound_unix_socket() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        mknod(
            &m.path("sock"),
            SFlag::S_IFSOCK,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        assert!(fs::symlink_metadata(m.path("sock"))
            .unwrap()
            .file_type()
            .is_socket());
        // Opening a socket inode fails as on ext4.
        assert_eq!(errno(fs::File::open(m.path("sock"))), libc::ENXIO);
        // bind(2) creates the socket inode through the filesystem and it works.
        let listener = std::os::unix::net::UnixListener::bind(m.path("live.sock")).unwrap();
        let p = m.path("live.sock");
        let client = std::thread::spawn(move || {
            let mut c = std::os::unix::net::UnixStream::connect(p).unwrap();
            c.write_all(b"ping").unwrap();
        });
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        conn.read_to_end(&mut buf).unwrap();
        client.join().unwrap();
        assert_eq!(buf, b"ping");
        // Binding an existing name is EADDRINUSE.
        assert_eq!(
            std::os::unix::net::UnixListener::bind(m.path("sock"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EADDRINUSE)
        );
        // Both the bound and the accepted socket pin the mount.
        drop((listener, conn));
        m.remount();
        assert!(fs::symlink_metadata(m.path("live.sock"))
            .unwrap()
            .file_type()
            .is_socket());
    });
}

#[test]
fn mknod_devices_keep_their_rdev() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let dev = nix::sys::stat::makedev(1, 3);
        mknod(
            &m.path("null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            dev,
        )
        .unwrap();
        let blk = nix::sys::stat::makedev(7, 0);
        mknod(
            &m.path("loop"),
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            blk,
        )
        .unwrap();
        // Regular files and directories cannot be made with mknod's S_IFDIR.
        let r = mknod(
            &m.path("dir"),
            SFlag::S_IFDIR,
            Mode::from_bits_truncate(0o755),
            0,
        );
        assert_eq!(r, Err(nix::errno::Errno::EPERM));
        mknod(
            &m.path("reg"),
            SFlag::S_IFREG,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        assert!(fs::metadata(m.path("reg")).unwrap().is_file());
        m.remount();
        let md = fs::symlink_metadata(m.path("null")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.rdev(), dev);
        let md = fs::symlink_metadata(m.path("loop")).unwrap();
        assert!(md.file_type().is_block_device());
        assert_eq!(md.rdev(), blk);
        // The char device 1:3 is /dev/null: writes vanish, reads are empty.
        fs::write(m.path("null"), b"discarded").unwrap();
        assert_eq!(fs::read(m.path("null")).unwrap(), b"");
    });
}

#[test]
fn statfs_figures_are_sane() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let s = nix::sys::statvfs::statvfs(&m.mnt).unwrap();
        assert!(s.block_size() > 0);
        assert!(s.fragment_size() > 0);
        assert!(s.blocks() > 0);
        assert!(s.blocks_free() <= s.blocks());
        assert!(s.blocks_available() <= s.blocks_free());
        assert!(s.blocks_free() > 0);
        assert!(s.files() > 0);
        assert!(s.files_free() <= s.files());
        assert_eq!(s.name_max(), 255);
        // The capacity roughly matches the backing filesystem's (a
        // bucket has none: tests/s3.rs checks what it shows).
        let b = nix::sys::statvfs::statvfs(&m.backing).unwrap();
        let bytes = |v: &nix::sys::statvfs::Statvfs| v.blocks() as u128 * v.fragment_size() as u128;
        let (ours, theirs) = (bytes(&s), bytes(&b));
        assert!(
            m.bucket().is_some() || (ours * 100 >= theirs * 99 && ours * 99 <= theirs * 100),
            "capacity {ours} vs backing {theirs}"
        );
        // Creating files is reflected in the inode figures.
        let used0 = s.files() - s.files_free();
        for i in 0..20 {
            fs::write(m.path(&format!("f{i}")), b"").unwrap();
        }
        let s2 = nix::sys::statvfs::statvfs(&m.mnt).unwrap();
        assert!(
            s2.files() - s2.files_free() >= used0 + 20,
            "used inodes {} -> {}",
            used0,
            s2.files() - s2.files_free()
        );
        // std's statfs(2) view agrees on the name length and block size.
        let mut raw: libc::statfs = unsafe { std::mem::zeroed() };
        let c = std::ffi::CString::new(m.mnt.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string and out-pointer.
        assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut raw) }, 0);
        assert_eq!(raw.f_namelen, 255);
        assert!(raw.f_bsize > 0);
        assert_eq!(raw.f_type, 0x65735546, "FUSE_SUPER_MAGIC");
    });
}

/// What fstat shows through descriptors held on special files after their
/// last name goes: (kind bits, nlink) for a FIFO open for reading and
/// writing, and `O_PATH` descriptors of a socket and a symlink (the socket
/// and the symlink lose their names to unlink and to rename-over).
fn removed_special_files(root: &Path) -> Vec<(u32, u64)> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let open = |p: &Path, flags: libc::c_int| -> OwnedFd {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; the descriptor is owned from here on.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        assert!(
            fd >= 0,
            "open {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        );
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let fifo = root.join("fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o640)).unwrap();
    let sock = root.join("sock");
    mknod(&sock, SFlag::S_IFSOCK, Mode::from_bits_truncate(0o600), 0).unwrap();
    let link = root.join("link");
    std::os::unix::fs::symlink("target", &link).unwrap();
    fs::write(root.join("other"), b"x").unwrap();

    let fds = [
        open(&fifo, libc::O_RDWR | libc::O_NONBLOCK),
        open(&sock, libc::O_PATH),
        open(&link, libc::O_PATH | libc::O_NOFOLLOW),
    ];
    fs::remove_file(&fifo).unwrap();
    fs::remove_file(&sock).unwrap();
    fs::rename(root.join("other"), &link).unwrap();
    fds.iter()
        .map(|fd| {
            let st = nix::sys::stat::fstat(fd.as_raw_fd()).unwrap();
            (st.st_mode & libc::S_IFMT, st.st_nlink)
        })
        .collect()
}

#[test]
fn removed_special_files_stay_visible_through_held_descriptors() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let ext4 = ext4_dir();
        let want = removed_special_files(ext4.path());
        assert_eq!(
            want,
            [(libc::S_IFIFO, 0), (libc::S_IFSOCK, 0), (libc::S_IFLNK, 0)],
            "ext4 itself"
        );
        assert_eq!(removed_special_files(&m.mnt), want);
        // Closed and forgotten: nothing is left of them.
        m.unmount();
        m.assert_consistent();
    });
}
