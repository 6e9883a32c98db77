//! Directories through real syscalls: mkdir/rmdir errnos, readdir
//! completeness and stability under concurrent change, directory link
//! counts and name length limits. Errnos are compared with a local ext4.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::stat::Mode;

use common::{code, errno, ext4_dir, Mount};

fn nlink(p: &Path) -> u64 {
    fs::metadata(p).unwrap().nlink()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Type {
    File,
    Directory,
    Symlink,
    Fifo,
    Other(u8),
}

/// A libc directory stream (opendir/readdir/closedir).
struct RawDir(*mut libc::DIR);

impl RawDir {
    fn open(p: &Path) -> RawDir {
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string; the stream is closed in Drop.
        let d = unsafe { libc::opendir(c.as_ptr()) };
        assert!(
            !d.is_null(),
            "opendir {p:?}: {}",
            std::io::Error::last_os_error()
        );
        RawDir(d)
    }
}

impl Iterator for RawDir {
    type Item = (Vec<u8>, u64, Type);
    fn next(&mut self) -> Option<Self::Item> {
        // SAFETY: errno is thread-local; the stream is open; the entry is
        // copied before the next readdir call.
        unsafe {
            *libc::__errno_location() = 0;
            let e = libc::readdir(self.0);
            if e.is_null() {
                let err = *libc::__errno_location();
                assert_eq!(
                    err,
                    0,
                    "readdir failed: {}",
                    std::io::Error::from_raw_os_error(err)
                );
                return None;
            }
            let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                .to_bytes()
                .to_vec();
            let ty = match (*e).d_type {
                libc::DT_REG => Type::File,
                libc::DT_DIR => Type::Directory,
                libc::DT_LNK => Type::Symlink,
                libc::DT_FIFO => Type::Fifo,
                t => Type::Other(t),
            };
            Some((name, (*e).d_ino, ty))
        }
    }
}

impl Drop for RawDir {
    fn drop(&mut self) {
        // SAFETY: opened in RawDir::open, closed once.
        unsafe { libc::closedir(self.0) };
    }
}

/// Names in a directory as raw bytes, with "." and "..", via getdents.
fn list(dir: &Path) -> Vec<(Vec<u8>, u64, Type)> {
    RawDir::open(dir).collect()
}

/// The errnos of mkdir/rmdir/unlink edge cases, run in `dir`.
fn mkdir_rmdir_errnos(dir: &Path) -> Vec<i32> {
    fs::create_dir(dir.join("d")).unwrap();
    fs::create_dir(dir.join("full")).unwrap();
    fs::write(dir.join("full/x"), b"").unwrap();
    fs::write(dir.join("f"), b"").unwrap();
    std::os::unix::fs::symlink("d", dir.join("link")).unwrap();
    vec![
        code(fs::create_dir(dir.join("d"))),
        code(fs::create_dir(dir.join("f"))),
        code(fs::create_dir(dir.join("link"))),
        code(fs::create_dir(dir.join("missing/sub"))),
        code(fs::create_dir(dir.join("f/sub"))),
        code(fs::remove_dir(dir.join("full"))),
        code(fs::remove_dir(dir.join("f"))),
        code(fs::remove_dir(dir.join("missing"))),
        code(fs::remove_dir(dir.join("link"))),
        code(fs::remove_dir(dir.join("d/."))),
        code(fs::remove_dir(dir.join("d/.."))),
        code(fs::remove_dir(dir.join("f/x"))),
        code(fs::remove_file(dir.join("d"))),
        code(fs::remove_file(dir.join("missing"))),
        code(fs::remove_dir(dir.join("d"))),
        code(fs::remove_dir(dir.join("d"))),
    ]
}

/// A named filesystem operation.
type Op<'a> = (&'static str, Box<dyn Fn() + 'a>);

#[test]
fn mkdir_rmdir_errnos_match_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("t")).unwrap();
        let got = mkdir_rmdir_errnos(&m.path("t"));
        let reference = ext4_dir();
        let want = mkdir_rmdir_errnos(reference.path());
        use libc::*;
        assert_eq!(
            want,
            vec![
                EEXIST, EEXIST, EEXIST, ENOENT, ENOTDIR, ENOTEMPTY, ENOTDIR, ENOENT, ENOTDIR,
                EINVAL, ENOTEMPTY, ENOTDIR, EISDIR, ENOENT, 0, ENOENT
            ],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
        // Nothing was harmed by the failed calls.
        assert_eq!(fs::read_dir(m.path("t/full")).unwrap().count(), 1);
        assert!(fs::metadata(m.path("t/f")).unwrap().is_file());
    });
}

#[test]
fn rmdir_of_the_mount_root_is_busy() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        assert_eq!(errno(fs::remove_dir(&m.mnt)), libc::EBUSY);
        assert!(common::is_mounted(&m.mnt));
    });
}

#[test]
fn mkdir_mode_and_emptiness() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        nix::unistd::mkdir(&m.path("d"), Mode::from_bits_truncate(0o750)).unwrap();
        let md = fs::metadata(m.path("d")).unwrap();
        assert!(md.is_dir());
        assert_eq!(md.mode() & 0o7777, 0o750);
        assert_eq!(md.nlink(), 2);
        let names: BTreeSet<_> = list(&m.path("d")).into_iter().map(|e| e.0).collect();
        assert_eq!(names, BTreeSet::from([b".".to_vec(), b"..".to_vec()]));
        // A directory emptied again can be removed.
        fs::write(m.path("d/x"), b"1").unwrap();
        assert_eq!(errno(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
        fs::remove_file(m.path("d/x")).unwrap();
        fs::remove_dir(m.path("d")).unwrap();
        assert_eq!(errno(fs::metadata(m.path("d"))), libc::ENOENT);
    });
}

#[test]
fn readdir_lists_everything_with_types_and_inodes() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let root_ino = fs::metadata(&m.mnt).unwrap().ino();
        fs::create_dir(m.path("dir")).unwrap();
        let dir_ino = fs::metadata(m.path("dir")).unwrap().ino();
        let mut want: HashMap<Vec<u8>, Type> = HashMap::new();
        let odd_names: Vec<Vec<u8>> = vec![
            b"\xff\xfe\xfd".to_vec(),
            b"latin1-caf\xe9".to_vec(),
            b"new\nline".to_vec(),
            b" leading space".to_vec(),
            "ünïcødé-名前".as_bytes().to_vec(),
            b"-dash".to_vec(),
            b"...".to_vec(),
            b"a\\b".to_vec(),
        ];
        for n in &odd_names {
            fs::write(m.path("dir").join(OsStr::from_bytes(n)), n).unwrap();
            want.insert(n.clone(), Type::File);
        }
        for i in 0..700 {
            let n = format!("file-{i:04}-{}", "x".repeat(i % 90));
            fs::write(m.path("dir").join(&n), b"").unwrap();
            want.insert(n.into_bytes(), Type::File);
        }
        fs::create_dir(m.path("dir/sub")).unwrap();
        want.insert(b"sub".to_vec(), Type::Directory);
        std::os::unix::fs::symlink("target", m.path("dir/sym")).unwrap();
        want.insert(b"sym".to_vec(), Type::Symlink);
        nix::unistd::mkfifo(&m.path("dir/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        want.insert(b"fifo".to_vec(), Type::Fifo);

        for round in 0..2 {
            let entries = list(&m.path("dir"));
            let mut seen: HashMap<Vec<u8>, Type> = HashMap::new();
            for (name, ino, ty) in &entries {
                match name.as_slice() {
                    b"." => assert_eq!(*ino, dir_ino),
                    b".." => assert_eq!(*ino, root_ino),
                    _ => {
                        let p = m.path("dir").join(OsStr::from_bytes(name));
                        let md = fs::symlink_metadata(&p).unwrap();
                        assert_eq!(*ino, md.ino(), "d_ino of {p:?}");
                        assert!(seen.insert(name.clone(), *ty).is_none(), "duplicate {p:?}");
                    }
                }
            }
            assert_eq!(entries.len(), want.len() + 2, "round {round}");
            assert_eq!(seen, want, "round {round}");
            for n in &odd_names {
                assert_eq!(
                    fs::read(m.path("dir").join(OsStr::from_bytes(n))).unwrap(),
                    *n
                );
            }
            // std's read_dir sees the same raw names.
            let std_names: BTreeSet<Vec<u8>> = fs::read_dir(m.path("dir"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_vec())
                .collect();
            assert_eq!(std_names, want.keys().cloned().collect());
            m.remount();
        }
    });
}

#[test]
fn readdir_is_stable_while_entries_come_and_go() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let dir = m.path("busy");
        fs::create_dir(&dir).unwrap();
        // Long names: fewer entries per getdents batch, so many batches.
        let pad = "p".repeat(200);
        let mut keep = BTreeSet::new();
        let mut doomed = std::collections::VecDeque::new();
        for i in 0..600 {
            let k = format!("keep-{i:05}-{pad}");
            fs::write(dir.join(&k), b"").unwrap();
            keep.insert(OsString::from(k));
            let t = format!("tmp-{i:05}-{pad}");
            fs::write(dir.join(&t), b"").unwrap();
            doomed.push_back(t);
        }
        // Temporaries are removed from both ends: some already listed (a
        // position-based cursor would then skip entries), some not yet.

        let mut seen: Vec<OsString> = Vec::new();
        let mut added = 0;
        for (n, (name, _, _)) in RawDir::open(&dir).enumerate() {
            seen.push(OsString::from_vec(name));
            if n % 20 == 0 {
                for _ in 0..4 {
                    let t = if added % 2 == 0 {
                        doomed.pop_front()
                    } else {
                        doomed.pop_back()
                    };
                    if let Some(t) = t {
                        fs::remove_file(dir.join(t)).unwrap();
                    }
                    let a = format!("added-{added:05}-{pad}");
                    fs::write(dir.join(&a), b"").unwrap();
                    added += 1;
                }
                // Rename a temporary: it neither existed throughout nor may
                // make a kept entry disappear or repeat.
                if let Some(t) = doomed.pop_back() {
                    fs::rename(dir.join(&t), dir.join(format!("{t}-renamed"))).unwrap();
                }
            }
        }
        assert!(added > 150, "iteration was too short to mean anything");
        let mut counts: HashMap<&OsString, usize> = HashMap::new();
        for s in &seen {
            *counts.entry(s).or_default() += 1;
        }
        let dups: Vec<_> = counts.iter().filter(|(_, &c)| c > 1).collect();
        assert!(dups.is_empty(), "duplicated entries: {dups:?}");
        let missing: Vec<_> = keep.iter().filter(|k| !counts.contains_key(k)).collect();
        assert!(missing.is_empty(), "skipped entries: {missing:?}");
        assert_eq!(counts.get(&OsString::from(".")), Some(&1));
        assert_eq!(counts.get(&OsString::from("..")), Some(&1));
    });
}

#[test]
fn telldir_seekdir_resume_at_the_same_entry() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        for i in 0..300 {
            fs::write(m.path(&format!("f{i:03}")), b"").unwrap();
        }
        let c = std::ffi::CString::new(m.mnt.as_os_str().as_bytes()).unwrap();
        // SAFETY: libc dirstream calls on a stream we open and close here.
        unsafe {
            let d = libc::opendir(c.as_ptr());
            assert!(!d.is_null());
            let mut names = Vec::new();
            let mut pos = 0;
            let mut after_pos = Vec::new();
            for i in 0.. {
                if i == 150 {
                    pos = libc::telldir(d);
                }
                let e = libc::readdir(d);
                if e.is_null() {
                    break;
                }
                let name = std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                    .to_bytes()
                    .to_vec();
                if i >= 150 {
                    after_pos.push(name.clone());
                }
                names.push(name);
            }
            assert_eq!(names.len(), 302);
            libc::seekdir(d, pos);
            let mut again = Vec::new();
            loop {
                let e = libc::readdir(d);
                if e.is_null() {
                    break;
                }
                again.push(
                    std::ffi::CStr::from_ptr((*e).d_name.as_ptr())
                        .to_bytes()
                        .to_vec(),
                );
            }
            assert_eq!(again, after_pos);
            libc::rewinddir(d);
            let first = libc::readdir(d);
            assert!(!first.is_null());
            libc::closedir(d);
        }
    });
}

#[test]
fn directory_nlink_counts_subdirectories() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        assert_eq!(nlink(&m.mnt), 2);
        fs::create_dir(m.path("a")).unwrap();
        assert_eq!(nlink(&m.mnt), 3);
        assert_eq!(nlink(&m.path("a")), 2);
        for i in 0..5 {
            fs::create_dir(m.path(&format!("a/s{i}"))).unwrap();
        }
        fs::write(m.path("a/file"), b"").unwrap();
        std::os::unix::fs::symlink("x", m.path("a/sym")).unwrap();
        assert_eq!(nlink(&m.path("a")), 7);
        fs::remove_dir(m.path("a/s0")).unwrap();
        assert_eq!(nlink(&m.path("a")), 6);
        fs::remove_file(m.path("a/file")).unwrap();
        assert_eq!(nlink(&m.path("a")), 6);
        m.remount();
        assert_eq!(nlink(&m.mnt), 3);
        assert_eq!(nlink(&m.path("a")), 6);
        assert_eq!(nlink(&m.path("a/s1")), 2);
        // The link count agrees with the number of subdirectories listed.
        let subdirs = list(&m.path("a"))
            .into_iter()
            .filter(|e| e.2 == Type::Directory)
            .count() as u64;
        assert_eq!(subdirs, nlink(&m.path("a")));
    });
}

/// The errnos of name-length edge cases, run in `dir`.
fn name_length_errnos(dir: &Path) -> Vec<i32> {
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    let d255 = "d".repeat(255);
    fs::write(dir.join("src"), b"s").unwrap();
    vec![
        code(fs::write(dir.join(&n255), b"ok")),
        code(fs::create_dir(dir.join(&d255))),
        code(fs::write(dir.join(&d255).join(&n255), b"deep")),
        code(fs::write(dir.join(&n256), b"")),
        code(fs::create_dir(dir.join(&n256))),
        code(fs::metadata(dir.join(&n256))),
        code(fs::remove_file(dir.join(&n256))),
        code(fs::remove_dir(dir.join(&n256))),
        code(fs::rename(dir.join("src"), dir.join(&n256))),
        code(fs::hard_link(dir.join("src"), dir.join(&n256))),
        code(std::os::unix::fs::symlink("src", dir.join(&n256))),
        code(
            nix::unistd::mkfifo(&dir.join(&n256), Mode::from_bits_truncate(0o600))
                .map_err(std::io::Error::from),
        ),
        code(fs::rename(dir.join("src"), dir.join(&n255))),
        code(fs::hard_link(dir.join(&n255), dir.join("n".repeat(254)))),
    ]
}

#[test]
fn names_of_255_bytes_ok_and_256_enametoolong() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir(m.path("t")).unwrap();
        let got = name_length_errnos(&m.path("t"));
        let reference = ext4_dir();
        let want = name_length_errnos(reference.path());
        use libc::ENAMETOOLONG as E;
        assert_eq!(
            want,
            vec![0, 0, 0, E, E, E, E, E, E, E, E, E, 0, 0],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
        // Multi-byte characters count in bytes: 85 × 3 bytes = 255 is fine.
        let wide = "€".repeat(85);
        fs::write(m.path("t").join(&wide), b"w").unwrap();
        assert_eq!(
            code(fs::write(m.path("t").join(format!("{wide}x")), b"")),
            libc::ENAMETOOLONG
        );
        m.remount();
        assert_eq!(fs::read(m.path("t").join(&wide)).unwrap(), b"w");
        assert_eq!(fs::read(m.path("t").join("n".repeat(255))).unwrap(), b"s");
        assert_eq!(
            fs::read(m.path("t").join("d".repeat(255)).join("n".repeat(255))).unwrap(),
            b"deep"
        );
    });
}

#[test]
fn directory_times_change_on_entry_changes() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("d")).unwrap();
        let t0 = fs::metadata(m.path("d")).unwrap();
        let stamp = |md: &fs::Metadata| (md.mtime(), md.mtime_nsec(), md.ctime(), md.ctime_nsec());
        let mut last = stamp(&t0);
        let ops: Vec<Op> = vec![
            (
                "create",
                Box::new(|| fs::write(m.path("d/f"), b"").unwrap()),
            ),
            ("mkdir", Box::new(|| fs::create_dir(m.path("d/s")).unwrap())),
            (
                "rename",
                Box::new(|| fs::rename(m.path("d/f"), m.path("d/g")).unwrap()),
            ),
            (
                "unlink",
                Box::new(|| fs::remove_file(m.path("d/g")).unwrap()),
            ),
            ("rmdir", Box::new(|| fs::remove_dir(m.path("d/s")).unwrap())),
        ];
        for (what, op) in ops {
            std::thread::sleep(std::time::Duration::from_millis(15));
            op();
            let now = stamp(&fs::metadata(m.path("d")).unwrap());
            assert!(
                (now.0, now.1) > (last.0, last.1),
                "{what} did not advance mtime"
            );
            assert!(
                (now.2, now.3) > (last.2, last.3),
                "{what} did not advance ctime"
            );
            last = now;
        }
    });
}

#[test]
fn concurrent_creates_renames_and_removes_in_one_directory() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("c")).unwrap();
        let dir = m.path("c");
        std::thread::scope(|s| {
            for t in 0..6 {
                let dir = &dir;
                s.spawn(move || {
                    for i in 0..80 {
                        let a = dir.join(format!("t{t}-{i}"));
                        fs::write(&a, format!("{t}/{i}")).unwrap();
                        if i % 2 == 0 {
                            fs::rename(&a, dir.join(format!("t{t}-{i}-r"))).unwrap();
                        }
                        if i % 5 == 0 {
                            fs::create_dir(dir.join(format!("d{t}-{i}"))).unwrap();
                        }
                        if i % 3 == 0 && i % 2 == 1 {
                            fs::remove_file(&a).unwrap();
                        }
                    }
                });
            }
        });
        let mut want = BTreeSet::new();
        for t in 0..6 {
            for i in 0..80 {
                if i % 2 == 0 {
                    want.insert(format!("t{t}-{i}-r").into_bytes());
                } else if i % 3 != 0 {
                    want.insert(format!("t{t}-{i}").into_bytes());
                }
                if i % 5 == 0 {
                    want.insert(format!("d{t}-{i}").into_bytes());
                }
            }
        }
        let got: BTreeSet<Vec<u8>> = list(&dir)
            .into_iter()
            .map(|e| e.0)
            .filter(|n| n != b"." && n != b"..")
            .collect();
        assert_eq!(got, want);
        assert_eq!(nlink(&dir), 2 + 6 * 16);
        for n in &want {
            if n.starts_with(b"t") {
                let s = String::from_utf8(n.clone()).unwrap();
                let body = fs::read_to_string(dir.join(&s)).unwrap();
                let stem = s.trim_end_matches("-r");
                assert_eq!(body, stem[1..].replacen('-', "/", 1));
            }
        }
    });
}

/// What the calls of a program holding a removed directory open see:
/// (fstat nlink, entries listed, fchmod, futimens, flistxattr, create inside).
fn removed_but_open(root: &Path) -> (u64, usize, i32, i32, i32, i32) {
    use std::os::fd::AsRawFd;
    let p = root.join("gone");
    fs::create_dir(&p).unwrap();
    let replaced = root.join("replaced");
    fs::create_dir(&replaced).unwrap();
    let d = fs::File::open(&p).unwrap();
    let r = fs::File::open(&replaced).unwrap();
    fs::remove_dir(&p).unwrap();
    fs::create_dir(root.join("newer")).unwrap();
    fs::rename(root.join("newer"), &replaced).unwrap();
    let fd = d.as_raw_fd();
    let rc = |v: libc::c_int| {
        if v == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        }
    };
    let nl = d.metadata().unwrap().nlink();
    assert_eq!(r.metadata().unwrap().nlink(), nl, "the replaced one too");
    // Through the descriptor's magic link: the name itself is gone.
    let listed = fs::read_dir(format!("/proc/self/fd/{fd}")).unwrap().count();
    // SAFETY: plain syscalls on a live descriptor and valid pointers.
    let (chmod, times, lx, create) = unsafe {
        let chmod = rc(libc::fchmod(fd, 0o700));
        let times = rc(libc::futimens(fd, std::ptr::null()));
        let lx = if libc::flistxattr(fd, std::ptr::null_mut(), 0) >= 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        };
        let c = libc::openat(fd, c"x".as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
        let create = if c >= 0 {
            libc::close(c);
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap()
        };
        (chmod, times, lx, create)
    };
    (nl, listed, chmod, times, lx, create)
}

#[test]
fn a_removed_directory_stays_usable_through_open_descriptors() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let ext4 = ext4_dir();
        let want = removed_but_open(ext4.path());
        assert_eq!(want, (0, 0, 0, 0, 0, libc::ENOENT), "ext4 itself");
        assert_eq!(removed_but_open(&m.mnt), want);
        // Closed: nothing is left of them.
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn a_directory_removed_while_open_then_a_crash_is_reclaimed_at_next_mount() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir(m.path("gone")).unwrap();
        let d = fs::File::open(m.path("gone")).unwrap();
        fs::remove_dir(m.path("gone")).unwrap();
        // Durable at fsync of the parent; without it the crash may bring the
        // name back, legitimately.
        fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
        m.kill();
        drop(d);
        let (code, out) = m.fsck(false);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("no links left (removed while open)"), "{out}");
        assert!(!out.contains("no entry reaches it"), "{out}");
        m.mount();
        assert!(fs::read_dir(&m.mnt).unwrap().next().is_none());
        m.unmount();
        m.assert_consistent();
    });
}
