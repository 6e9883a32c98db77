//! Regular files through real syscalls: create/open flags, positioned I/O,
//! holes, truncate, fallocate, fsync, unlink-while-open and persistence.
//! Errnos are those a local ext4 gives; where in doubt the same sequence is
//! run on a temp dir on / and compared.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{errno, ext4_dir, Mount};

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn cvt(rc: libc::c_int) -> std::io::Result<libc::c_int> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// open(2) with raw flags.
fn open_raw(p: &Path, flags: libc::c_int, mode: libc::mode_t) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    let c = cpath(p);
    // SAFETY: valid C string; the descriptor is owned by the File.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn fallocate(f: &File, mode: libc::c_int, off: i64, len: i64) -> std::io::Result<()> {
    // SAFETY: plain syscall on an owned descriptor.
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) }).map(drop)
}

/// Path of a regular file's object under BACKING.
fn object_path(m: &Mount, ino: u64) -> PathBuf {
    m.backing
        .join("objects")
        .join(format!("{:02x}", ino & 0xff))
        .join(format!("{ino:016x}"))
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A scratch directory on the local ext4 root, to compare against.
/// The errnos (0 = success) of a sequence of open calls, run in `dir`.
fn open_flag_errnos(dir: &Path) -> Vec<i32> {
    let e = |r: std::io::Result<File>| r.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
    fs::write(dir.join("f"), b"data").unwrap();
    fs::create_dir(dir.join("d")).unwrap();
    std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
    let creat_excl = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
    vec![
        e(open_raw(&dir.join("f"), creat_excl, 0o644)),
        e(open_raw(&dir.join("new"), creat_excl, 0o644)),
        e(open_raw(&dir.join("missing"), libc::O_RDONLY, 0)),
        e(open_raw(
            &dir.join("nodir/x"),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )),
        e(open_raw(
            &dir.join("f/x"),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        )),
        e(open_raw(&dir.join("d"), libc::O_WRONLY, 0)),
        e(open_raw(&dir.join("d"), libc::O_RDWR, 0)),
        e(open_raw(&dir.join("d"), creat_excl, 0o644)),
        e(open_raw(&dir.join("dangling"), creat_excl, 0o644)),
        e(open_raw(
            &dir.join("f"),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )),
        e(open_raw(
            &dir.join("dangling"),
            libc::O_RDONLY | libc::O_NOFOLLOW,
            0,
        )),
    ]
}

#[test]
fn open_flags_errnos_match_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("t")).unwrap();
        let got = open_flag_errnos(&m.path("t"));
        let reference = ext4_dir();
        let want = open_flag_errnos(reference.path());
        assert_eq!(
            want,
            vec![
                libc::EEXIST,
                0,
                libc::ENOENT,
                libc::ENOENT,
                libc::ENOTDIR,
                libc::EISDIR,
                libc::EISDIR,
                libc::EEXIST,
                libc::EEXIST,
                libc::ENOTDIR,
                libc::ELOOP,
            ],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
        // O_CREAT|O_EXCL made a fresh empty file; the existing one is intact.
        assert_eq!(fs::metadata(m.path("t/new")).unwrap().len(), 0);
        assert_eq!(fs::read(m.path("t/f")).unwrap(), b"data");
    });
}

#[test]
fn create_applies_mode_and_umask_and_owner() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let f = open_raw(
            &m.path("m"),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o640,
        )
        .unwrap();
        let md = f.metadata().unwrap();
        assert!(md.is_file());
        // The test process umask is applied by the kernel or artfs; 0o640 has
        // no bits a usual umask (022/002) removes.
        assert_eq!(md.mode() & 0o7777, 0o640);
        assert_eq!(md.uid(), 0);
        assert_eq!(md.gid(), 0);
        assert_eq!(md.nlink(), 1);
        assert_eq!(md.len(), 0);
    });
}

#[test]
fn o_creat_without_excl_keeps_content_and_o_trunc_empties() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("f");
        fs::write(&p, b"0123456789").unwrap();
        drop(open_raw(&p, libc::O_CREAT | libc::O_WRONLY, 0o644).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"0123456789");

        let before = fs::metadata(&p).unwrap().mtime_nsec();
        std::thread::sleep(Duration::from_millis(20));
        let mut f = open_raw(&p, libc::O_TRUNC | libc::O_WRONLY, 0).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
        assert_eq!(fs::metadata(&p).unwrap().len(), 0);
        assert_ne!(fs::metadata(&p).unwrap().mtime_nsec(), before);
        f.write_all(b"ab").unwrap();
        drop(f);
        assert_eq!(fs::read(&p).unwrap(), b"ab");
        // O_TRUNC with O_RDWR truncates as well.
        drop(open_raw(&p, libc::O_TRUNC | libc::O_RDWR, 0).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"");
    });
}

#[test]
fn o_append_always_writes_at_end() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("log");
        fs::write(&p, b"head").unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"-one").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(b"-two").unwrap();
        // On Linux pwrite on an O_APPEND descriptor appends too.
        f.write_at(b"-three", 0).unwrap();
        drop(f);
        assert_eq!(fs::read(&p).unwrap(), b"head-one-two-three");

        // Two appenders interleave without overwriting each other.
        let mut a = OpenOptions::new().append(true).open(&p).unwrap();
        let mut b = OpenOptions::new().append(true).open(&p).unwrap();
        a.write_all(b"A").unwrap();
        b.write_all(b"B").unwrap();
        a.write_all(b"A").unwrap();
        drop((a, b));
        assert_eq!(fs::read(&p).unwrap(), b"head-one-two-threeABA");
    });
}

#[test]
fn read_write_at_offsets() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("f");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all_at(b"hello world", 0).unwrap();
        f.write_all_at(b"WORLD", 6).unwrap();
        f.write_all_at(b"!", 11).unwrap();
        let mut buf = [0u8; 12];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"hello WORLD!");
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 3).unwrap();
        assert_eq!(&buf, b"lo WO");
        // Reading at or past EOF gives 0 bytes, a read across EOF is short.
        assert_eq!(f.read_at(&mut buf, 12).unwrap(), 0);
        assert_eq!(f.read_at(&mut buf, 1000).unwrap(), 0);
        assert_eq!(f.read_at(&mut buf, 10).unwrap(), 2);
        assert_eq!(&buf[..2], b"D!");

        // A large write crossing the max_write boundary, read back in pieces.
        let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        f.write_all_at(&big, 100).unwrap();
        drop(f);
        let all = fs::read(&p).unwrap();
        assert_eq!(all.len(), 100 + big.len());
        assert_eq!(&all[..6], b"hello ");
        assert_eq!(&all[100..], &big[..]);
    });
}

#[test]
fn read_and_write_need_the_right_access_mode() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("f");
        fs::write(&p, b"abc").unwrap();
        let mut ro = File::open(&p).unwrap();
        assert_eq!(errno(ro.write(b"x")), libc::EBADF);
        let mut wo = OpenOptions::new().write(true).open(&p).unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(errno(wo.read(&mut buf)), libc::EBADF);
        assert_eq!(errno(ro.set_len(0)), libc::EINVAL);
        assert_eq!(fs::read(&p).unwrap(), b"abc");
    });
}

#[test]
fn sparse_holes_read_as_zeros() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("sparse");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all_at(b"start", 0).unwrap();
        let far = 64 * 1024 * 1024 + 3;
        f.write_all_at(b"end", far).unwrap();
        assert_eq!(f.metadata().unwrap().len(), far + 3);
        let mut hole = vec![0xAAu8; 128 * 1024];
        f.read_exact_at(&mut hole, 1024 * 1024).unwrap();
        assert!(hole.iter().all(|&b| b == 0), "hole is not zeros");
        let mut edge = [0xAAu8; 8];
        f.read_exact_at(&mut edge, far - 5).unwrap();
        assert_eq!(&edge, b"\0\0\0\0\0end");
        drop(f);
        // Still holes after the last close, and the file is really sparse on the backing.
        let f = File::open(&p).unwrap();
        let mut mid = vec![0xAAu8; 4096];
        f.read_exact_at(&mut mid, 32 * 1024 * 1024).unwrap();
        assert!(mid.iter().all(|&b| b == 0));
        let obj = fs::metadata(object_path(&m, f.metadata().unwrap().ino())).unwrap();
        assert!(
            obj.blocks() * 512 < 1024 * 1024,
            "object is not sparse: {} blocks",
            obj.blocks()
        );
    });
}

#[test]
fn st_blocks_tells_the_real_allocation_after_close_and_remount() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let sparse = m.path("sparse");
        let f = File::create(&sparse).unwrap();
        f.write_all_at(b"tail", 256 * 1024 * 1024).unwrap();
        drop(f);
        let dense = m.path("dense");
        fs::write(&dense, vec![7u8; 1 << 20]).unwrap();
        let truncated = m.path("truncated");
        fs::write(&truncated, b"x").unwrap();
        // Truncated up while closed: a hole, no new blocks.
        File::options()
            .write(true)
            .open(&truncated)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let check = |m: &Mount| {
            let s = fs::metadata(m.path("sparse")).unwrap();
            assert_eq!(s.len(), 256 * 1024 * 1024 + 4);
            assert!(
                s.blocks() * 512 < 1024 * 1024,
                "a sparse file looks allocated: {} blocks",
                s.blocks()
            );
            assert!(s.blocks() > 0, "the written tail holds a block");
            let d = fs::metadata(m.path("dense")).unwrap();
            assert!(
                d.blocks() >= (1 << 20) / 512,
                "a dense file shows too few blocks: {}",
                d.blocks()
            );
            let t = fs::metadata(m.path("truncated")).unwrap();
            assert_eq!(t.len(), 1 << 30);
            assert!(t.blocks() * 512 < 1024 * 1024, "{} blocks", t.blocks());
        };
        check(&m);
        m.remount();
        check(&m);
    });
}

#[test]
fn seek_data_and_hole_match_ext4() {
    common::engine::every_engine(|| {
        fn probe(dir: &Path) -> Vec<i64> {
            let p = dir.join("s");
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .unwrap();
            f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
            f.set_len(4 << 20).unwrap();
            f.sync_all().unwrap();
            let fd = f.as_raw_fd();
            // SAFETY: lseek on an owned descriptor.
            let s = |off, whence| unsafe { libc::lseek(fd, off, whence) };
            vec![
                s(0, libc::SEEK_DATA),
                s(0, libc::SEEK_HOLE),
                s(1 << 20, libc::SEEK_HOLE),
                s((1 << 20) + 4096, libc::SEEK_DATA),
                s(0, libc::SEEK_END),
            ]
        }
        let m = Mount::new();
        let reference = ext4_dir();
        let want = probe(reference.path());
        assert_eq!(want, vec![1 << 20, 0, (1 << 20) + 4096, -1, 4 << 20]);
        assert_eq!(probe(&m.mnt), want);
    });
}

#[test]
fn truncate_up_and_down() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("t");
        fs::write(&p, vec![b'x'; 10_000]).unwrap();
        // Down, by path.
        nix::unistd::truncate(&p, 100).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 100);
        // Up again: the cut part must come back as zeros, not old data.
        nix::unistd::truncate(&p, 10_000).unwrap();
        let d = fs::read(&p).unwrap();
        assert_eq!(d.len(), 10_000);
        assert!(d[..100].iter().all(|&b| b == b'x'));
        assert!(
            d[100..].iter().all(|&b| b == 0),
            "stale data after truncate up"
        );

        // Through an open descriptor while another one is open.
        let a = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let b = File::open(&p).unwrap();
        a.set_len(5).unwrap();
        assert_eq!(b.metadata().unwrap().len(), 5);
        assert_eq!(fs::metadata(&p).unwrap().len(), 5);
        let mut buf = [0u8; 16];
        assert_eq!(b.read_at(&mut buf, 0).unwrap(), 5);
        a.set_len(1 << 30).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 30);
        a.set_len(7).unwrap();
        drop((a, b));
        assert_eq!(fs::read(&p).unwrap(), b"xxxxx\0\0");

        // Errnos: a directory, a negative length, a missing file.
        assert_eq!(
            errno(nix::unistd::truncate(&m.mnt, 0).map_err(std::io::Error::from)),
            libc::EISDIR
        );
        let c = cpath(&p);
        // SAFETY: valid C string.
        assert_eq!(
            errno(cvt(unsafe { libc::truncate(c.as_ptr(), -1) })),
            libc::EINVAL
        );
        assert_eq!(
            errno(nix::unistd::truncate(&m.path("nope"), 0).map_err(std::io::Error::from)),
            libc::ENOENT
        );
    });
}

#[test]
fn truncate_persists_across_remount() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("a"), vec![1u8; 5000]).unwrap();
        nix::unistd::truncate(&m.path("a"), 3000).unwrap();
        let f = OpenOptions::new().write(true).open(m.path("a")).unwrap();
        f.set_len(8192).unwrap();
        drop(f);
        m.remount();
        let d = fs::read(m.path("a")).unwrap();
        assert_eq!(d.len(), 8192);
        assert!(d[..3000].iter().all(|&b| b == 1));
        assert!(d[3000..].iter().all(|&b| b == 0));
    });
}

#[test]
fn fallocate_mode_0_extends_and_keep_size_does_not() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = m.path("fa");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all_at(b"abc", 0).unwrap();
        fallocate(&f, 0, 0, 1 << 20).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
        assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20);
        assert!(fs::metadata(&p).unwrap().blocks() >= (1 << 20) / 512);
        // Existing data is kept, the rest reads as zeros.
        let mut buf = vec![9u8; 8];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"abc\0\0\0\0\0");

        fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 4 << 20).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 1 << 20);
        assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20);
        assert!(
            f.metadata().unwrap().blocks() >= (5 << 20) / 512,
            "KEEP_SIZE did not allocate: {} blocks",
            f.metadata().unwrap().blocks()
        );

        // Punching a hole keeps the size and zeroes the range.
        f.write_all_at(&[7u8; 8192], 4096).unwrap();
        fallocate(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            4096,
            4096,
        )
        .unwrap();
        let mut buf = vec![1u8; 8192];
        f.read_exact_at(&mut buf, 4096).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 0));
        assert!(buf[4096..].iter().all(|&b| b == 7));

        // Errnos as ext4: bad length, read-only descriptor.
        assert_eq!(errno(fallocate(&f, 0, 0, 0)), libc::EINVAL);
        assert_eq!(errno(fallocate(&f, 0, -1, 10)), libc::EINVAL);
        let ro = File::open(&p).unwrap();
        assert_eq!(errno(fallocate(&ro, 0, 0, 10)), libc::EBADF);
        drop((f, ro));
        m.remount();
        assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20);
    });
}

/// FALLOC_FL_ZERO_RANGE: the same bytes, sizes and errnos as on ext4.
#[test]
fn fallocate_zero_range_matches_ext4() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let ext4 = ext4_dir();
        let run = |p: &Path| -> (Vec<u8>, u64, Vec<u8>, u64, i32) {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(p)
                .unwrap();
            f.write_all_at(&[7u8; 20000], 0).unwrap();
            // Inside the file: zeroes, size kept.
            fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 1000, 5000).unwrap();
            let mut a = vec![0u8; 20000];
            f.read_exact_at(&mut a, 0).unwrap();
            // Past the end: grows the file...
            fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 15000, 10000).unwrap();
            let grown = f.metadata().unwrap().len();
            // ...unless KEEP_SIZE.
            fallocate(
                &f,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                20000,
                50000,
            )
            .unwrap();
            let mut b = vec![0u8; grown as usize];
            f.read_exact_at(&mut b, 0).unwrap();
            let kept = fs::metadata(p).unwrap().len();
            let bad = errno(fallocate(
                &f,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_PUNCH_HOLE,
                0,
                10,
            ));
            (a, grown, b, kept, bad)
        };
        let ours = run(&m.path("z"));
        let theirs = run(&ext4.path().join("z"));
        assert_eq!(ours.0, theirs.0, "bytes after zeroing inside the file");
        assert!(
            ours.0[1000..6000].iter().all(|&b| b == 0) && ours.0[999] == 7 && ours.0[6000] == 7
        );
        assert_eq!(ours.1, theirs.1);
        assert_eq!(ours.1, 25000);
        assert_eq!(ours.2, theirs.2);
        assert_eq!(ours.3, theirs.3);
        assert_eq!(ours.4, theirs.4);
        m.remount();
        assert_eq!(fs::read(m.path("z")).unwrap(), ours.2);
    });
}

#[test]
fn fsync_and_fdatasync_succeed_and_survive_a_crash() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = m.path("durable");
        let mut f = File::create(&p).unwrap();
        f.write_all(&vec![5u8; 200_000]).unwrap();
        f.sync_all().unwrap();
        f.write_all(b"tail").unwrap();
        f.sync_data().unwrap();
        // fsync on a read-only descriptor and on a directory is fine too.
        File::open(&p).unwrap().sync_all().unwrap();
        File::open(&m.mnt).unwrap().sync_all().unwrap();
        // The daemon dies without a clean unmount; fsynced data and size stay.
        m.kill();
        drop(f);
        m.mount();
        let d = fs::read(&p).unwrap();
        assert_eq!(d.len(), 200_004);
        assert!(d[..200_000].iter().all(|&b| b == 5));
        assert_eq!(&d[200_000..], b"tail");
    });
}

#[test]
fn unlink_while_open_stays_usable_until_last_close() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("victim");
        fs::write(&p, b"before").unwrap();
        let a = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let b = File::open(&p).unwrap();
        let ino = a.metadata().unwrap().ino();
        let obj = object_path(&m, ino);
        assert!(obj.exists(), "object {} missing while open", obj.display());

        fs::remove_file(&p).unwrap();
        assert_eq!(errno(fs::metadata(&p)), libc::ENOENT);
        assert!(fs::read_dir(&m.mnt).unwrap().next().is_none());
        assert_eq!(a.metadata().unwrap().nlink(), 0);

        // Readable and writable through both descriptors.
        a.write_all_at(b" and after", 6).unwrap();
        let mut buf = vec![0u8; 16];
        b.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"before and after");
        assert_eq!(b.metadata().unwrap().len(), 16);
        a.set_len(6).unwrap();
        assert_eq!(b.metadata().unwrap().len(), 6);

        // A new file under the same name is a different file.
        fs::write(&p, b"new").unwrap();
        assert_ne!(fs::metadata(&p).unwrap().ino(), ino);
        let mut buf = vec![0u8; 6];
        b.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"before");

        drop(a);
        assert!(obj.exists(), "object removed while still open");
        b.read_exact_at(&mut buf, 0).unwrap();
        drop(b);
        wait_until("the object of the unlinked file to go", || !obj.exists());
        assert_eq!(fs::read(&p).unwrap(), b"new");
    });
}

#[test]
fn unlink_while_open_then_crash_is_reclaimed_at_next_mount() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = m.path("orphan");
        fs::write(&p, vec![3u8; 4096]).unwrap();
        let f = File::open(&p).unwrap();
        let obj = object_path(&m, f.metadata().unwrap().ino());
        fs::remove_file(&p).unwrap();
        // Metadata is durable at fsync (here fsync of the directory); without
        // it a crash may legitimately bring the name back.
        File::open(&m.mnt).unwrap().sync_all().unwrap();
        m.kill();
        drop(f);
        assert!(obj.exists());
        m.mount();
        assert!(!obj.exists(), "orphan object not reclaimed at mount");
        assert!(fs::read_dir(&m.mnt).unwrap().next().is_none());
    });
}

#[test]
fn unlinked_file_object_is_removed_and_hard_link_keeps_it() {
    common::engine::every_engine(|| {
        // Unlink for real (the trash would keep the object for a day).
        let m = Mount::with_args(&["--trash-days", "0"]);
        fs::write(m.path("a"), b"x").unwrap();
        let ino = fs::metadata(m.path("a")).unwrap().ino();
        let obj = object_path(&m, ino);
        fs::hard_link(m.path("a"), m.path("b")).unwrap();
        fs::remove_file(m.path("a")).unwrap();
        assert!(obj.exists());
        assert_eq!(fs::read(m.path("b")).unwrap(), b"x");
        fs::remove_file(m.path("b")).unwrap();
        wait_until("the object to go", || !obj.exists());
    });
}

#[test]
fn shared_mmap_writes_reach_the_file() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = m.path("mapped");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(3 * 4096).unwrap();
        let before = fs::metadata(&p).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let len = 3 * 4096;
        let mut map = common::SharedMap::of(&f, len);
        map.write(0, b"mmap!");
        map.write(2 * 4096 + 10, b"end");
        drop(map);
        // Visible through read(2) on another descriptor at once.
        let mut buf = [0u8; 5];
        File::open(&p).unwrap().read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"mmap!");
        // And in the times while the file is still open (after msync).
        let open = fs::metadata(&p).unwrap();
        assert!(
            (open.mtime(), open.mtime_nsec()) > (before.mtime(), before.mtime_nsec()),
            "mmap write did not advance mtime while open"
        );
        drop(f);
        let after = fs::metadata(&p).unwrap();
        assert!(
            (after.mtime(), after.mtime_nsec()) > (before.mtime(), before.mtime_nsec()),
            "mmap write did not advance mtime"
        );
        m.remount();
        let d = fs::read(&p).unwrap();
        assert_eq!(d.len(), len);
        assert_eq!(&d[..5], b"mmap!");
        assert_eq!(&d[2 * 4096 + 10..2 * 4096 + 13], b"end");
        assert!(d[5..2 * 4096 + 10].iter().all(|&b| b == 0));
    });
}

fn sha256_of(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(fs::read(p).unwrap()))
}

/// Through passthrough a shared mapping maps the object itself and may
/// write on after its descriptor is closed, with no request reaching the
/// daemon: what it writes is recorded all the same (size, mtime, hash; on
/// S3, sent), never taken for damage.
#[test]
fn writes_through_a_mapping_that_outlives_its_descriptor_are_recorded() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = m.path("mapped");
        let len = 3 * 4096;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(len as u64).unwrap();
        f.write_all_at(b"by write(2)", 0).unwrap();
        let mut map = common::SharedMap::of(&f, len);
        drop(f);
        let closed = fs::metadata(&p).unwrap();
        // Past the last close, and past the daemon's probe of it.
        std::thread::sleep(Duration::from_millis(700));
        map.write(0, b"by the map");
        map.write(2 * 4096 + 10, b"end");
        // The hash asked for while the mapping writes is the content's.
        let hash = || String::from_utf8(common::getx(&p, "user.artstore.sha256").unwrap());
        assert_eq!(hash().unwrap(), sha256_of(&p));
        map.write(4096, b"more");
        assert_eq!(hash().unwrap(), sha256_of(&p));
        drop(map);
        let want = {
            let mut v = vec![0u8; len];
            v[..11].copy_from_slice(b"by write(2)");
            v[..10].copy_from_slice(b"by the map");
            v[4096..4100].copy_from_slice(b"more");
            v[2 * 4096 + 10..2 * 4096 + 13].copy_from_slice(b"end");
            v
        };
        assert_eq!(fs::read(&p).unwrap(), want);
        m.remount();
        assert_eq!(
            fs::read(&p).unwrap(),
            want,
            "the mapping's writes were lost"
        );
        let after = fs::metadata(&p).unwrap();
        assert!(
            (after.mtime(), after.mtime_nsec()) > (closed.mtime(), closed.mtime_nsec()),
            "the mapping's mtime was not recorded"
        );
        assert_eq!(hash().unwrap(), sha256_of(&p));
        // Checked unmounted: the reads above moved atime, whose sidecar
        // rewrite a mounted store defers.
        m.unmount();
        m.assert_consistent();
        let out = m.command("scrub").output().unwrap();
        assert!(out.status.success(), "{}", common::output_text(&out));
    });
}

/// A crash while a mapping writes a closed file: its intent, logged when
/// the mapping was found, recovers what it wrote (on S3 the copy's changes
/// are sent, not fetched over), even what it wrote after the crash.
#[test]
fn a_crash_while_a_mapping_writes_a_closed_file_keeps_its_writes() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = m.path("mapped");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(8192).unwrap();
        let mut map = common::SharedMap::of(&f, 8192);
        drop(f);
        map.write(0, b"one");
        // Asking for the hash finds the mapping (and logs its intent).
        common::getx(&p, "user.artstore.sha256").unwrap();
        m.kill();
        map.write(4096, b"two");
        drop(map);
        m.mount();
        let mut want = vec![0u8; 8192];
        want[..3].copy_from_slice(b"one");
        want[4096..4099].copy_from_slice(b"two");
        assert_eq!(fs::read(&p).unwrap(), want);
        m.remount();
        assert_eq!(fs::read(&p).unwrap(), want);
        assert_eq!(
            String::from_utf8(common::getx(&p, "user.artstore.sha256").unwrap()).unwrap(),
            sha256_of(&p)
        );
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn replaced_file_object_goes_after_its_last_close() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::write(m.path("old"), b"old data").unwrap();
        fs::write(m.path("new"), b"new data").unwrap();
        let held = File::open(m.path("old")).unwrap();
        let obj = object_path(&m, held.metadata().unwrap().ino());
        fs::rename(m.path("new"), m.path("old")).unwrap();
        let mut buf = [0u8; 8];
        held.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"old data");
        assert!(obj.exists(), "object of the open, replaced file is gone");
        drop(held);
        wait_until("the replaced file's object to go", || !obj.exists());
        assert_eq!(fs::read(m.path("old")).unwrap(), b"new data");
        // Replaced while closed: gone at once.
        fs::write(m.path("x"), b"x").unwrap();
        let obj = object_path(&m, fs::metadata(m.path("x")).unwrap().ino());
        assert!(obj.exists());
        fs::write(m.path("y"), b"y").unwrap();
        fs::rename(m.path("y"), m.path("x")).unwrap();
        wait_until("the replaced file's object to go", || !obj.exists());
    });
}

#[test]
fn remount_shows_data_sizes_and_modes() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir_all(m.path("d/e")).unwrap();
        let files: Vec<(String, Vec<u8>)> = (0..20)
            .map(|i| {
                (
                    format!("d/e/f{i}"),
                    (0..i * 5000).map(|j| (j % 256) as u8).collect(),
                )
            })
            .collect();
        for (name, data) in &files {
            fs::write(m.path(name), data).unwrap();
        }
        fs::set_permissions(
            m.path("d/e/f3"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        // A file still open (and written) across the unmount is flushed too.
        {
            let mut f = File::create(m.path("open")).unwrap();
            f.write_all(b"written before unmount").unwrap();
        }
        let before: Vec<_> = files
            .iter()
            .map(|(n, _)| fs::metadata(m.path(n)).unwrap())
            .collect();
        m.remount();
        for ((name, data), md) in files.iter().zip(&before) {
            assert_eq!(&fs::read(m.path(name)).unwrap(), data, "{name}");
            let now = fs::metadata(m.path(name)).unwrap();
            assert_eq!(now.len(), md.len(), "{name}");
            assert_eq!(now.ino(), md.ino(), "{name}");
            assert_eq!(now.mode(), md.mode(), "{name}");
            assert_eq!(now.mtime(), md.mtime(), "{name}");
            assert_eq!(now.mtime_nsec(), md.mtime_nsec(), "{name}");
        }
        assert_eq!(
            fs::metadata(m.path("d/e/f3")).unwrap().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read(m.path("open")).unwrap(), b"written before unmount");
    });
}

/// What the kernel's FUSE client cannot do, on any FUSE filesystem, fails
/// with a clear errno and changes nothing (docs/SEMANTICS.md lists it): a
/// swap file, a freeze, a FIEMAP extent map.
#[test]
fn what_fuse_cannot_do_fails_cleanly() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("swap");
        // A real swap area (mkswap), so only the filesystem can refuse it.
        let page = vec![0u8; 16 << 20];
        fs::write(&p, &page).unwrap();
        let made = std::process::Command::new("mkswap")
            .arg(&p)
            .output()
            .expect("mkswap (util-linux)");
        assert!(made.status.success(), "{}", common::output_text(&made));
        let page = fs::read(&p).unwrap();
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; undone below if it ever succeeds.
        let rc = unsafe { libc::swapon(c.as_ptr(), 0) };
        let err = std::io::Error::last_os_error();
        if rc == 0 {
            // SAFETY: the same path, swapped on just above.
            unsafe { libc::swapoff(c.as_ptr()) };
            panic!("swapon succeeded on a FUSE file: update docs/SEMANTICS.md");
        }
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "swapon: {err}");

        const FIFREEZE: libc::c_ulong = 0xC004_5877;
        const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
        let dir = File::open(&m.mnt).unwrap();
        // SAFETY: FIFREEZE takes an int argument.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FIFREEZE, 0) };
        let err = std::io::Error::last_os_error();
        assert_eq!(rc, -1, "the mount froze");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::EOPNOTSUPP),
            "FIFREEZE: {err}"
        );

        let f = File::open(&p).unwrap();
        // A struct fiemap header asking for no extents (32 bytes).
        let mut map = [0u8; 32];
        map[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // fm_length
                                                             // SAFETY: a 32-byte fiemap header the kernel may read and write.
        let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FIEMAP, map.as_mut_ptr()) };
        let err = std::io::Error::last_os_error();
        assert_eq!(rc, -1);
        assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "FIEMAP: {err}");
        // The file is as it was.
        assert_eq!(fs::read(&p).unwrap(), page);
    });
}

/// `open(dir, O_TMPFILE | extra, 0640)`.
fn open_tmpfile(dir: &Path, extra: i32) -> std::io::Result<File> {
    use std::os::fd::FromRawFd;
    let c = cpath(dir);
    // SAFETY: plain open(2); the descriptor is ours.
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR | extra, 0o640) })?;
    // SAFETY: a new descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `linkat(fd, "", AT_FDCWD, to, AT_EMPTY_PATH)`: give an open file a name.
fn link_open_file(f: &File, to: &Path) -> std::io::Result<()> {
    let to = cpath(to);
    // SAFETY: valid descriptor and C strings.
    cvt(unsafe {
        libc::linkat(
            f.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// What ext4 and artfs must agree on for O_TMPFILE files.
fn tmpfile_outcomes(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut f = open_tmpfile(dir, 0).unwrap();
    f.write_all(b"written before it had a name").unwrap();
    let md = f.metadata().unwrap();
    out.push(format!(
        "nlink before {} mode {:o}",
        md.nlink(),
        md.mode() & 0o7777
    ));
    out.push(format!(
        "listed before {}",
        fs::read_dir(dir).unwrap().count()
    ));
    out.push(format!(
        "link {:?}",
        link_open_file(&f, &dir.join("published")).map_err(|e| e.raw_os_error())
    ));
    out.push(format!("nlink after {}", f.metadata().unwrap().nlink()));
    // Writes after publishing go to the same file.
    f.write_all(b", and after").unwrap();
    drop(f);
    out.push(format!(
        "content {:?}",
        String::from_utf8(fs::read(dir.join("published")).unwrap())
    ));
    // Never linked: nothing is left once it is closed.
    let mut g = open_tmpfile(dir, 0).unwrap();
    g.write_all(b"scratch").unwrap();
    drop(g);
    out.push(format!(
        "listed after {}",
        fs::read_dir(dir).unwrap().count()
    ));
    // O_EXCL: may never be linked (the kernel refuses).
    let e = open_tmpfile(dir, libc::O_EXCL).unwrap();
    out.push(format!(
        "excl link {:?}",
        link_open_file(&e, &dir.join("no")).map_err(|e| e.raw_os_error())
    ));
    out
}

#[test]
fn o_tmpfile_files_are_published_whole_by_linkat_as_on_ext4() {
    let reference = ext4_dir();
    let ext4 = tmpfile_outcomes(reference.path());
    assert_eq!(ext4[0], "nlink before 0 mode 640", "{ext4:?}");
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let dir = m.path("d");
        fs::create_dir(&dir).unwrap();
        assert_eq!(tmpfile_outcomes(&dir), ext4);
        // The published file is an ordinary one, named as published.
        let p = m.path("d/published");
        assert_eq!(
            common::get_xattr(&p, "user.artstore.original_filename").as_deref(),
            Some(&b"published"[..])
        );
        let want = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(fs::read(&p).unwrap()))
        };
        assert_eq!(
            common::get_xattr(&p, "user.artstore.sha256"),
            Some(want.into_bytes())
        );
        // A file still unnamed when the daemon dies is gone at the next
        // mount, and its object with it.
        let mut lost = open_tmpfile(&dir, 0).unwrap();
        lost.write_all(b"never published").unwrap();
        lost.sync_all().unwrap();
        let lost_ino = lost.metadata().unwrap().ino();
        std::mem::forget(lost);
        m.kill();
        m.mount();
        assert!(
            !m.object_exists(lost_ino),
            "the unnamed file's object is gone"
        );
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
        m.unmount();
        m.assert_consistent();
    });
}
