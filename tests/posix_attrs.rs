//! Attributes through real syscalls: chmod, chown (and the setuid/setgid
//! clearing rules for unprivileged callers), utimensat with UTIME_NOW and
//! UTIME_OMIT, ctime/mtime bookkeeping, UTC times, setgid directories and
//! sticky directories. Sequences that involve permissions are run both on
//! the mount and on a temp dir on the local ext4 and must agree.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Mount;

/// An unprivileged user and group with no other memberships.
const NOBODY: u32 = 65534;
/// A second unprivileged user.
const OTHER: u32 = 65533;
/// A group only some callers belong to.
const GROUP: u32 = 4242;

fn ext4_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("artfs-ext4-ref-")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Let unprivileged users reach the mount point (the harness's temp dir is 0700).
fn open_up(m: &Mount) {
    fs::set_permissions(m.mnt.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// errno of the last failed libc call, or 0 when `rc` is not negative.
fn rc(rc: libc::c_int) -> i32 {
    if rc < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    } else {
        0
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

fn chown(p: &Path, uid: Option<u32>, gid: Option<u32>) -> i32 {
    let c = cpath(p);
    // SAFETY: valid C string.
    rc(unsafe { libc::chown(c.as_ptr(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)) })
}

fn ctime(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.ctime(), m.ctime_nsec())
}

fn mtime(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec())
}

fn atime(p: &Path) -> (i64, i64) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.atime(), m.atime_nsec())
}

fn now() -> (i64, i64) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (d.as_secs() as i64, d.subsec_nanos() as i64)
}

/// The clock file times are taken from (the kernel's and the daemon's
/// coarse clock, a few ms behind `now`): a time set "now" after this is
/// not earlier.
fn coarse_now() -> (i64, i64) {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut t) },
        0
    );
    (t.tv_sec, t.tv_nsec)
}

fn tick() {
    std::thread::sleep(Duration::from_millis(15));
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

fn utimens(p: &Path, a: libc::timespec, m: libc::timespec, flags: libc::c_int) -> i32 {
    let c = cpath(p);
    let times = [a, m];
    // SAFETY: valid C string and a two-element array.
    rc(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) })
}

const OMIT: libc::c_long = libc::UTIME_OMIT;
const NOW: libc::c_long = libc::UTIME_NOW;

/// A named filesystem operation.
type Op<'a> = (&'static str, Box<dyn Fn() + 'a>);

#[test]
fn chmod_sets_all_mode_bits_and_ctime() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        fs::create_dir(m.path("d")).unwrap();
        for bits in [0o7777, 0o4755, 0o2755, 0o1777, 0o0, 0o640, 0o777] {
            let c0 = ctime(&f);
            tick();
            chmod(&f, bits);
            assert_eq!(mode(&f), bits, "file {bits:o}");
            assert!(ctime(&f) > c0, "chmod {bits:o} did not change ctime");
            chmod(&m.path("d"), bits);
            assert_eq!(mode(&m.path("d")), bits, "dir {bits:o}");
        }
        chmod(&f, 0o4751);
        chmod(&m.path("d"), 0o3750);
        let c = ctime(&f);
        m.remount();
        assert_eq!(mode(&f), 0o4751);
        assert_eq!(mode(&m.path("d")), 0o3750);
        assert_eq!(ctime(&f), c);
        assert!(fs::metadata(&f).unwrap().is_file());
        assert!(fs::metadata(m.path("d")).unwrap().is_dir());
    });
}

#[test]
fn chown_by_root_sets_owner_and_group() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        let c0 = ctime(&f);
        tick();
        assert_eq!(chown(&f, Some(1000), Some(2000)), 0);
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 2000));
        assert!(ctime(&f) > c0);
        assert_eq!(chown(&f, None, Some(3000)), 0);
        assert_eq!(chown(&f, Some(4000), None), 0);
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.uid(), md.gid()), (4000, 3000));
        // Of a symlink itself (lchown) and through it.
        std::os::unix::fs::symlink("f", m.path("l")).unwrap();
        std::os::unix::fs::lchown(m.path("l"), Some(7), Some(8)).unwrap();
        let lmd = fs::symlink_metadata(m.path("l")).unwrap();
        assert_eq!((lmd.uid(), lmd.gid()), (7, 8));
        assert_eq!(fs::metadata(&f).unwrap().uid(), 4000);
        m.remount();
        let md = fs::metadata(&f).unwrap();
        assert_eq!((md.uid(), md.gid()), (4000, 3000));
        let lmd = fs::symlink_metadata(m.path("l")).unwrap();
        assert_eq!((lmd.uid(), lmd.gid()), (7, 8));
    });
}

/// chown/chmod by owners and others, and what happens to setuid/setgid.
/// Returns the errnos and resulting modes/owners.
fn chown_rules(d: &Path) -> Vec<(i32, u32, u32, u32)> {
    let p = |s: &str| d.join(s);
    let state = |p: &Path| {
        let md = fs::symlink_metadata(p).unwrap();
        (md.mode() & 0o7777, md.uid(), md.gid())
    };
    let mut out = Vec::new();
    let mut push = |e: i32, p: &Path| {
        let (m, u, g) = state(p);
        out.push((e, m, u, g));
    };
    // Root chown of setuid/setgid files.
    for (name, bits) in [("r1", 0o6755), ("r2", 0o6745), ("r3", 0o4700)] {
        fs::write(p(name), b"").unwrap();
        chmod(&p(name), bits);
        let e = chown(&p(name), Some(1), Some(1));
        push(e, &p(name));
    }
    // A directory keeps its bits on chown.
    fs::create_dir(p("dir")).unwrap();
    chmod(&p("dir"), 0o6755);
    let e = chown(&p("dir"), Some(NOBODY), Some(NOBODY));
    push(e, &p("dir"));

    // Files owned by NOBODY.
    for name in ["u1", "u2", "u3", "u4", "u5", "u6"] {
        fs::write(p(name), b"").unwrap();
        chown(&p(name), Some(NOBODY), Some(NOBODY));
        chmod(&p(name), 0o6775);
    }
    let (c1, c2, c3, c4, c5, c6) = (
        cpath(&p("u1")),
        cpath(&p("u2")),
        cpath(&p("u3")),
        cpath(&p("u4")),
        cpath(&p("u5")),
        cpath(&p("u6")),
    );
    // The owner gives the file to a group it belongs to: allowed, bits drop.
    let e = common::as_user_in(NOBODY, NOBODY, &[GROUP], || unsafe {
        rc(libc::chown(c1.as_ptr(), u32::MAX, GROUP))
    });
    push(e, &p("u1"));
    // ... to a group it is not in, or to another user: EPERM.
    let e = common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::chown(c2.as_ptr(), u32::MAX, GROUP))
    });
    push(e, &p("u2"));
    let e = common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::chown(c3.as_ptr(), OTHER, u32::MAX))
    });
    push(e, &p("u3"));
    // A no-op chown by the owner (same uid and gid) is allowed, and still
    // clears setuid/setgid.
    let e = common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::chown(c4.as_ptr(), NOBODY, NOBODY))
    });
    push(e, &p("u4"));
    // Someone else may not chown or chmod it.
    let e = common::as_user_in(OTHER, OTHER, &[NOBODY], || unsafe {
        rc(libc::chown(c5.as_ptr(), u32::MAX, NOBODY))
    });
    push(e, &p("u5"));
    let e = common::as_user_in(OTHER, OTHER, &[], || unsafe {
        rc(libc::chmod(c5.as_ptr(), 0o777))
    });
    push(e, &p("u5"));
    // The owner may chmod; setgid is dropped when not in the file's group.
    chown(&p("u6"), None, Some(GROUP));
    let e = common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::chmod(c6.as_ptr(), 0o2770))
    });
    push(e, &p("u6"));
    let e = common::as_user_in(NOBODY, NOBODY, &[GROUP], || unsafe {
        rc(libc::chmod(c6.as_ptr(), 0o2770))
    });
    push(e, &p("u6"));
    out
}

#[test]
fn chown_and_chmod_permission_rules_match_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        open_up(&m);
        let got = chown_rules(&m.mnt);
        let reference = ext4_dir();
        let want = chown_rules(reference.path());
        let n = NOBODY;
        assert_eq!(
            want,
            vec![
                (0, 0o755, 1, 1),
                (0, 0o2745, 1, 1),
                (0, 0o700, 1, 1),
                (0, 0o6755, n, n),
                (0, 0o775, n, GROUP),
                (libc::EPERM, 0o6775, n, n),
                (libc::EPERM, 0o6775, n, n),
                (0, 0o775, n, n),
                (libc::EPERM, 0o6775, n, n),
                (libc::EPERM, 0o6775, n, n),
                (0, 0o770, n, GROUP),
                (0, 0o2770, n, GROUP),
            ],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
    });
}

/// Writes and truncates by an unprivileged owner of setuid/setgid files.
fn write_kills_suid(d: &Path) -> Vec<(i32, u32)> {
    let p = |s: &str| d.join(s);
    let mut out = Vec::new();
    for (name, bits) in [
        ("w1", 0o6775),
        ("w2", 0o2745),
        ("w3", 0o4755),
        ("t1", 0o6775),
    ] {
        fs::write(p(name), b"").unwrap();
        chown(&p(name), Some(NOBODY), Some(NOBODY));
        chmod(&p(name), bits);
    }
    for name in ["w1", "w2", "w3"] {
        let c = cpath(&p(name));
        let e = common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return rc(fd);
            }
            let n = libc::write(fd, b"x".as_ptr().cast(), 1);
            let e = if n == 1 { 0 } else { rc(-1) };
            libc::close(fd);
            e
        });
        out.push((e, mode(&p(name))));
    }
    let c = cpath(&p("t1"));
    let e = common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::truncate(c.as_ptr(), 10))
    });
    out.push((e, mode(&p("t1"))));
    // Root writing keeps the bits.
    fs::write(p("r"), b"").unwrap();
    chmod(&p("r"), 0o6775);
    fs::OpenOptions::new()
        .write(true)
        .open(p("r"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"x"))
        .unwrap();
    out.push((0, mode(&p("r"))));
    out
}

/// Writes, a truncate and an fallocate by users who do not own the file:
/// setgid without group-execute goes when the writer is not in the file's
/// group, stays when they are (Linux's setattr_should_drop_sgid).
fn foreign_write_kills_setgid(d: &Path) -> Vec<(i32, u32)> {
    let p = |s: &str| d.join(s);
    let mut out = Vec::new();
    let cases = [
        // (name, mode, writer's groups, how)
        ("outsider", 0o2666, vec![], "write"),
        ("member", 0o2666, vec![GROUP], "write"),
        ("truncated", 0o2666, vec![], "truncate"),
        ("allocated", 0o2666, vec![], "fallocate"),
        ("both", 0o6666, vec![GROUP], "write"),
    ];
    for (name, bits, groups, how) in &cases {
        fs::write(p(name), b"").unwrap();
        chown(&p(name), Some(0), Some(GROUP));
        chmod(&p(name), *bits);
        let c = cpath(&p(name));
        let how = *how;
        let e = common::as_user_in(OTHER, OTHER, groups, || unsafe {
            if how == "truncate" {
                return rc(libc::truncate(c.as_ptr(), 10));
            }
            let fd = libc::open(c.as_ptr(), libc::O_WRONLY);
            if fd < 0 {
                return rc(fd);
            }
            let r = if how == "fallocate" {
                libc::fallocate(fd, 0, 0, 4096)
            } else if libc::write(fd, b"x".as_ptr().cast(), 1) == 1 {
                0
            } else {
                -1
            };
            let e = rc(r);
            libc::close(fd);
            e
        });
        out.push((e, mode(&p(name))));
    }
    out
}

#[test]
fn a_write_by_someone_outside_the_group_clears_setgid_as_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        open_up(&m);
        let got = foreign_write_kills_setgid(&m.mnt);
        let reference = ext4_dir();
        let want = foreign_write_kills_setgid(reference.path());
        assert_eq!(
            want,
            vec![(0, 0o666), (0, 0o2666), (0, 0o666), (0, 0o666), (0, 0o2666)],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
    });
}

#[test]
fn unprivileged_write_clears_setuid_and_setgid_as_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        open_up(&m);
        let got = write_kills_suid(&m.mnt);
        let reference = ext4_dir();
        let want = write_kills_suid(reference.path());
        assert_eq!(
            want,
            vec![(0, 0o775), (0, 0o2745), (0, 0o755), (0, 0o775), (0, 0o6775)],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
        // And it stays cleared (the daemon has it, not only the kernel cache).
        let mut m = m;
        m.remount();
        assert_eq!(mode(&m.path("w1")), 0o775);
        assert_eq!(mode(&m.path("t1")), 0o775);
        assert_eq!(fs::metadata(m.path("w1")).unwrap().len(), 1);
    });
}

#[test]
fn utimensat_explicit_now_and_omit() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        // Explicit times with nanoseconds, and one before the epoch.
        assert_eq!(
            utimens(
                &f,
                ts(1_000_000_000, 123_456_789),
                ts(1_500_000_000, 987_654_321),
                0
            ),
            0
        );
        assert_eq!(atime(&f), (1_000_000_000, 123_456_789));
        assert_eq!(mtime(&f), (1_500_000_000, 987_654_321));
        let c1 = ctime(&f);
        assert!(c1.0 >= now().0 - 5, "ctime is not the time of the change");

        // OMIT atime, NOW mtime.
        tick();
        let before = coarse_now();
        assert_eq!(utimens(&f, ts(0, OMIT), ts(0, NOW), 0), 0);
        let after = now();
        assert_eq!(atime(&f), (1_000_000_000, 123_456_789));
        let mt = mtime(&f);
        assert!(
            mt >= before && mt <= after,
            "UTIME_NOW mtime {mt:?} not in [{before:?}, {after:?}]"
        );
        assert!(ctime(&f) > c1);

        // NOW atime, OMIT mtime.
        tick();
        assert_eq!(utimens(&f, ts(0, NOW), ts(0, OMIT), 0), 0);
        assert_eq!(mtime(&f), mt);
        assert!(atime(&f) >= before);

        // Both OMIT changes nothing, not even ctime.
        let c2 = ctime(&f);
        let a2 = atime(&f);
        tick();
        assert_eq!(utimens(&f, ts(0, OMIT), ts(0, OMIT), 0), 0);
        assert_eq!((ctime(&f), atime(&f), mtime(&f)), (c2, a2, mt));

        // Before 1970 (whole seconds) and an invalid nanosecond value.
        assert_eq!(utimens(&f, ts(-86_400, 0), ts(-1, 0), 0), 0);
        assert_eq!(atime(&f), (-86_400, 0));
        assert_eq!(mtime(&f), (-1, 0));
        assert_eq!(
            utimens(&f, ts(0, 1_000_000_000), ts(0, OMIT), 0),
            libc::EINVAL
        );

        // A symlink's own times.
        std::os::unix::fs::symlink("f", m.path("l")).unwrap();
        assert_eq!(
            utimens(
                &m.path("l"),
                ts(111, 1),
                ts(222, 2),
                libc::AT_SYMLINK_NOFOLLOW
            ),
            0
        );
        assert_eq!(mtime(&m.path("l")), (222, 2));
        assert_eq!(mtime(&f), (-1, 0));

        m.remount();
        assert_eq!(atime(&f), (-86_400, 0));
        assert_eq!(mtime(&f), (-1, 0));
        assert_eq!(mtime(&m.path("l")), (222, 2));
        assert_eq!(atime(&m.path("l")), (111, 1));
    });
}

#[test]
fn pre_epoch_times_keep_their_nanoseconds() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"").unwrap();
        // -86399.999999995 s and -0.000000001 s, as ext4 stores them.
        assert_eq!(utimens(&f, ts(-86_400, 5), ts(-1, 999_999_999), 0), 0);
        assert_eq!(atime(&f), (-86_400, 5));
        assert_eq!(mtime(&f), (-1, 999_999_999));
        m.remount();
        assert_eq!(atime(&f), (-86_400, 5));
        assert_eq!(mtime(&f), (-1, 999_999_999));
    });
}

/// Who may set which times: owner, writer, stranger.
fn utime_permissions(d: &Path) -> Vec<i32> {
    let p = |s: &str| d.join(s);
    fs::write(p("writable"), b"").unwrap();
    chmod(&p("writable"), 0o666);
    fs::write(p("readonly"), b"").unwrap();
    chmod(&p("readonly"), 0o644);
    let (w, r) = (cpath(&p("writable")), cpath(&p("readonly")));
    let call = |c: &CString, t: [libc::timespec; 2]| {
        common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
            rc(libc::utimensat(libc::AT_FDCWD, c.as_ptr(), t.as_ptr(), 0))
        })
    };
    let now2 = [ts(0, NOW), ts(0, NOW)];
    let explicit = [ts(5, 0), ts(5, 0)];
    let mixed = [ts(0, NOW), ts(0, OMIT)];
    vec![
        call(&w, now2),
        call(&w, explicit),
        call(&w, mixed),
        call(&r, now2),
        call(&r, explicit),
        common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
            rc(libc::utimensat(
                libc::AT_FDCWD,
                w.as_ptr(),
                std::ptr::null(),
                0,
            ))
        }),
    ]
}

#[test]
fn utimensat_permissions_match_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        open_up(&m);
        let got = utime_permissions(&m.mnt);
        let reference = ext4_dir();
        let want = utime_permissions(reference.path());
        assert_eq!(
            want,
            vec![0, libc::EPERM, libc::EPERM, libc::EACCES, libc::EPERM, 0],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
    });
}

#[test]
fn ctime_changes_on_chmod_link_rename_xattr_and_truncate() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"abc").unwrap();
        fs::create_dir(m.path("d")).unwrap();
        let name = CString::new("user.k").unwrap();
        let ops: Vec<Op> = vec![
            ("chmod", Box::new(|| chmod(&m.path("d/g"), 0o600))),
            (
                "link",
                Box::new(|| fs::hard_link(m.path("d/g"), m.path("d/h")).unwrap()),
            ),
            (
                "rename",
                Box::new(|| fs::rename(m.path("d/g"), m.path("d/g2")).unwrap()),
            ),
            (
                "setxattr",
                Box::new(|| {
                    let c = cpath(&m.path("d/g2"));
                    // SAFETY: valid C strings and buffer.
                    let r = unsafe {
                        libc::setxattr(c.as_ptr(), name.as_ptr(), b"v".as_ptr().cast(), 1, 0)
                    };
                    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
                }),
            ),
            (
                "removexattr",
                Box::new(|| {
                    let c = cpath(&m.path("d/g2"));
                    // SAFETY: valid C strings.
                    let r = unsafe { libc::removexattr(c.as_ptr(), name.as_ptr()) };
                    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
                }),
            ),
            (
                "unlink of another link",
                Box::new(|| fs::remove_file(m.path("d/h")).unwrap()),
            ),
            (
                "truncate",
                Box::new(|| nix::unistd::truncate(&m.path("d/g2"), 1).unwrap()),
            ),
            (
                "chown",
                Box::new(|| assert_eq!(chown(&m.path("d/g2"), Some(5), Some(5)), 0)),
            ),
        ];
        fs::rename(&f, m.path("d/g")).unwrap();
        let mut last = ctime(&m.path("d/g"));
        let mut current = m.path("d/g");
        for (what, op) in ops {
            tick();
            let mt = mtime(&current);
            op();
            if what == "rename" {
                current = m.path("d/g2");
            }
            let c = ctime(&current);
            assert!(c > last, "{what} did not advance ctime ({last:?} -> {c:?})");
            if what != "truncate" {
                assert_eq!(mtime(&current), mt, "{what} changed mtime");
            }
            last = c;
        }
        let before = (ctime(&current), mtime(&current));
        m.remount();
        assert_eq!((ctime(&current), mtime(&current)), before);
    });
}

#[test]
fn mtime_and_ctime_move_on_write_not_on_read() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = m.path("f");
        fs::write(&p, b"initial").unwrap();
        let (m0, c0) = (mtime(&p), ctime(&p));
        tick();
        let _ = fs::read(&p).unwrap();
        assert_eq!((mtime(&p), ctime(&p)), (m0, c0), "read changed times");
        let mut f = fs::OpenOptions::new().write(true).open(&p).unwrap();
        std::io::Write::write_all(&mut f, b"more").unwrap();
        // Visible while still open, through the path and the descriptor.
        let m1 = mtime(&p);
        assert!(m1 > m0, "write did not advance mtime: {m0:?} -> {m1:?}");
        assert!(ctime(&p) > c0);
        let fm = f.metadata().unwrap();
        assert_eq!((fm.mtime(), fm.mtime_nsec()), m1);
        tick();
        std::io::Write::write_all(&mut f, b"again").unwrap();
        let m2 = mtime(&p);
        assert!(m2 > m1, "second write did not advance mtime");
        drop(f);
        let after_close = (mtime(&p), ctime(&p));
        assert!(after_close.0 >= m2);
        let n = now();
        assert!(
            (n.0 - after_close.0 .0).abs() <= 5,
            "mtime {after_close:?} is not now {n:?}"
        );
        m.remount();
        assert_eq!((mtime(&p), ctime(&p)), after_close);
        // Through a fresh handle after the remount.
        tick();
        fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"!"))
            .unwrap();
        assert!(mtime(&p) > after_close.0);
        assert_eq!(fs::read(&p).unwrap(), b"moreagain!");
    });
}

/// Reads mark atime as a relatime ext4 does: when atime is not newer than
/// mtime (or ctime), a read moves it to now.
fn relatime_probe(d: &Path) -> (bool, bool) {
    let p = d.join("f");
    fs::write(&p, b"content").unwrap();
    // atime well before mtime.
    assert_eq!(utimens(&p, ts(1_000_000, 0), ts(0, NOW), 0), 0);
    let _ = fs::read(&p).unwrap();
    let moved = atime(&p).0 > 1_000_000;
    // Right after, atime is newer than mtime: a second read need not move it.
    let a1 = atime(&p);
    tick();
    let _ = fs::read(&p).unwrap();
    (moved, atime(&p) == a1)
}

#[test]
fn read_updates_atime_like_relatime_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let reference = ext4_dir();
        let want = relatime_probe(reference.path());
        let opts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root_opts = opts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some("/"))
            .unwrap_or("");
        if !root_opts.contains("relatime") {
            // The reference needs a relatime root; say what we compare to.
            assert!(!want.0, "no relatime on /, yet atime moved");
        }
        assert_eq!(relatime_probe(&m.mnt), want);
    });
}

/// A read that moves atime (relatime) tells the kernel nothing more than
/// the read itself does: through passthrough the kernel drops its cached
/// atime at the read, so stat shows the new one, while mode and owner
/// stay cached and the next open's permission check needs no GETATTR
/// round trip (a whole-inode invalidation used to cost one per file read
/// after a write).
#[test]
fn a_read_that_moves_atime_costs_the_next_open_no_round_trip() {
    common::engine::every_engine(|| {
        let api = common::api::Api::start(&[]);
        let p = api.m.mnt.join("f");
        fs::write(&p, b"content").unwrap();
        // atime well before mtime: the next read moves it.
        assert_eq!(utimens(&p, ts(1_000_000, 0), ts(0, NOW), 0), 0);
        assert_eq!(atime(&p), (1_000_000, 0));
        let before = api.fuse_ops("getattr");
        assert_eq!(fs::read(&p).unwrap(), b"content");
        // An invalidation is sent after the open's reply: give one time to
        // land before the next open.
        std::thread::sleep(Duration::from_millis(200));
        drop(fs::File::open(&p).unwrap());
        assert_eq!(
            api.fuse_ops("getattr"),
            before,
            "the open after the read asked for the attributes again"
        );
        let moved = atime(&p);
        assert!(
            moved.0 > 1_000_000,
            "the read did not move atime: {moved:?}"
        );
    });
}

/// `--noatime`: reads never move atime; `--strictatime`: every read
/// does, even right after the last one (as those mount options on ext4).
#[test]
fn noatime_and_strictatime_mounts() {
    common::engine::every_engine(|| {
        let m = Mount::with_args(&["--noatime"]);
        assert_eq!(relatime_probe(&m.mnt), (false, true), "noatime");
        drop(m);
        let m = Mount::with_args(&["--strictatime"]);
        assert_eq!(relatime_probe(&m.mnt), (true, false), "strictatime");
    });
}

/// The test body run under TZ=Europe/Moscow (daemon and client alike).
fn utc_body() {
    let out = Command::new("date").arg("+%z").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "+0300",
        "TZ is not in effect"
    );
    let mut m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"").unwrap();
    let n = now().0;
    assert!(
        (mtime(&p).0 - n).abs() <= 5,
        "new file mtime {} is not UTC now {n}",
        mtime(&p).0
    );
    // 12:00 Moscow time is 09:00 UTC.
    let st = Command::new("touch")
        .args(["-d", "2020-01-01 12:00:00"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(mtime(&p), (1_577_869_200, 0));
    assert_eq!(atime(&p), (1_577_869_200, 0));
    let st = Command::new("touch")
        .args(["-m", "-d", "2020-06-01T00:00:00Z"])
        .arg(m.path("g"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(mtime(&m.path("g")), (1_590_969_600, 0));
    m.remount();
    assert_eq!(mtime(&p), (1_577_869_200, 0));
    assert_eq!(mtime(&m.path("g")), (1_590_969_600, 0));
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S", "-r"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "2020-01-01T09:00:00"
    );
    assert!((ctime(&p).0 - now().0).abs() <= 5, "ctime is not UTC now");
}

#[test]
fn times_are_utc_under_a_non_utc_timezone() {
    common::engine::every_engine(|| {
        if std::env::var_os("ARTFS_TZ_CHILD").is_some() {
            utc_body();
            return;
        }
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "times_are_utc_under_a_non_utc_timezone",
                "--exact",
                "--test-threads=1",
                "--nocapture",
            ])
            .env("ARTFS_TZ_CHILD", "1")
            .env("TZ", "Europe/Moscow")
            .output()
            .unwrap();
        let text = common::output_text(&out);
        assert!(
            out.status.success(),
            "child under TZ=Europe/Moscow failed:\n{text}"
        );
        assert!(text.contains("1 passed"), "the body did not run:\n{text}");
    });
}

/// Creation in a setgid directory, by root and by a non-member.
fn setgid_dir(d: &Path) -> Vec<(u32, u32)> {
    let p = |s: &str| d.join(s);
    let st = |p: &Path| {
        let md = fs::symlink_metadata(p).unwrap();
        (md.mode() & 0o7777, md.gid())
    };
    fs::create_dir(p("g")).unwrap();
    chown(&p("g"), None, Some(GROUP));
    chmod(&p("g"), 0o2777);
    fs::write(p("g/file"), b"").unwrap();
    fs::create_dir(p("g/sub")).unwrap();
    std::os::unix::fs::symlink("x", p("g/sym")).unwrap();
    nix::unistd::mkfifo(
        &p("g/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    // A non-member asks for setgid on a new file (cleared) and on a new
    // directory (kept: it is inherited).
    let (uf, ud) = (cpath(&p("g/user-file")), cpath(&p("g/user-dir")));
    let e = common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        let fd = libc::open(uf.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o2755);
        if fd < 0 {
            return rc(fd);
        }
        libc::close(fd);
        rc(libc::mkdir(ud.as_ptr(), 0o755))
    });
    assert_eq!(e, 0);
    // A file moved in keeps its group.
    fs::write(p("outside"), b"").unwrap();
    fs::rename(p("outside"), p("g/moved")).unwrap();
    let mut out = vec![st(&p("g"))];
    for n in ["file", "sub", "fifo", "user-file", "user-dir", "moved"] {
        out.push(st(&p(&format!("g/{n}"))));
    }
    out.push((0, fs::symlink_metadata(p("g/sym")).unwrap().gid()));
    // Clearing setgid on the dir stops inheritance.
    chmod(&p("g"), 0o777);
    fs::write(p("g/late"), b"").unwrap();
    out.push(st(&p("g/late")));
    out
}

#[test]
fn setgid_directory_inheritance_matches_ext4() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        open_up(&m);
        // SAFETY: umask is process-wide; both runs use the same value.
        let old = unsafe { libc::umask(0o022) };
        let got = setgid_dir(&m.mnt);
        let reference = ext4_dir();
        let want = setgid_dir(reference.path());
        unsafe { libc::umask(old) };
        let g = GROUP;
        assert_eq!(
            want,
            vec![
                (0o2777, g),
                (0o644, g),
                (0o2755, g),
                (0o644, g),
                (0o755, g),
                (0o2755, g),
                (0o644, 0),
                (0, g),
                (0o644, 0),
            ],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
        m.remount();
        assert_eq!(fs::metadata(m.path("g/sub")).unwrap().gid(), GROUP);
        assert_eq!(mode(&m.path("g/sub")), 0o2755);
    });
}

/// Who may remove or rename what in a sticky world-writable directory.
fn sticky_rules(d: &Path) -> Vec<i32> {
    let p = |s: &str| d.join(s);
    fs::create_dir(p("tmp")).unwrap();
    chmod(&p("tmp"), 0o1777);
    fs::write(p("tmp/root-file"), b"").unwrap();
    chmod(&p("tmp/root-file"), 0o666);
    let c = |s: &str| cpath(&p(s));
    let (rootf, nob, nob2, nob3, oth) = (
        c("tmp/root-file"),
        c("tmp/nobody-file"),
        c("tmp/nobody-renamed"),
        c("tmp/nobody-other"),
        c("tmp/other-file"),
    );
    let elsewhere = c("tmp/elsewhere");
    let mut out = Vec::new();
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        let fd = libc::open(nob.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o666);
        if fd < 0 {
            return rc(fd);
        }
        libc::close(fd);
        let fd = libc::open(nob3.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o666);
        libc::close(fd);
        0
    }));
    out.push(common::as_user_in(OTHER, OTHER, &[], || unsafe {
        let fd = libc::open(oth.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o666);
        libc::close(fd);
        rc(fd)
    }));
    // NOBODY against root's file: no unlink, no rename away, no replace.
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::unlink(rootf.as_ptr()))
    }));
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::rename(rootf.as_ptr(), elsewhere.as_ptr()))
    }));
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::rename(nob3.as_ptr(), rootf.as_ptr()))
    }));
    // ... but it may write to it (mode 0666).
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        let fd = libc::open(rootf.as_ptr(), libc::O_WRONLY);
        libc::close(fd);
        rc(fd)
    }));
    // Against another user's file: the same.
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::unlink(oth.as_ptr()))
    }));
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::rename(oth.as_ptr(), elsewhere.as_ptr()))
    }));
    // Its own files: rename and unlink are fine.
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::rename(nob.as_ptr(), nob2.as_ptr()))
    }));
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::unlink(nob2.as_ptr()))
    }));
    // Root may remove anything.
    out.push(rc(unsafe { libc::unlink(oth.as_ptr()) }));
    // Without the sticky bit the same user may remove root's file.
    chmod(&p("tmp"), 0o777);
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::unlink(rootf.as_ptr()))
    }));
    // Without write permission on the directory, nothing can be removed.
    chmod(&p("tmp"), 0o755);
    out.push(common::as_user_in(NOBODY, NOBODY, &[], || unsafe {
        rc(libc::unlink(nob3.as_ptr()))
    }));
    out
}

#[test]
fn sticky_directory_rules_match_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        open_up(&m);
        let got = sticky_rules(&m.mnt);
        let reference = ext4_dir();
        let want = sticky_rules(reference.path());
        use libc::{EACCES, EPERM};
        assert_eq!(
            want,
            vec![0, 0, EPERM, EPERM, EPERM, 0, EPERM, EPERM, 0, 0, 0, 0, EACCES],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
        assert!(fs::metadata(m.path("tmp/nobody-other")).is_ok());
        assert!(fs::metadata(m.path("tmp/root-file")).is_err());
    });
}

#[test]
fn access_checks_for_unprivileged_users() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        open_up(&m);
        let p = |s: &str| m.path(s);
        fs::write(p("private"), b"secret").unwrap();
        chmod(&p("private"), 0o600);
        fs::create_dir(p("locked")).unwrap();
        fs::write(p("locked/inner"), b"").unwrap();
        chmod(&p("locked"), 0o700);
        fs::write(p("public"), b"").unwrap();
        chmod(&p("public"), 0o644);
        let (private, inner, public) = (
            cpath(&p("private")),
            cpath(&p("locked/inner")),
            cpath(&p("public")),
        );
        let new_in_root = cpath(&p("new"));
        let open = |c: &CString, flags| unsafe {
            let fd = libc::open(c.as_ptr(), flags, 0o644);
            if fd >= 0 {
                libc::close(fd);
            }
            rc(fd)
        };
        assert_eq!(
            common::as_user_in(NOBODY, NOBODY, &[], || open(&private, libc::O_RDONLY)),
            libc::EACCES
        );
        assert_eq!(
            common::as_user_in(NOBODY, NOBODY, &[], || open(&inner, libc::O_RDONLY)),
            libc::EACCES
        );
        assert_eq!(
            common::as_user_in(NOBODY, NOBODY, &[], || open(&public, libc::O_RDONLY)),
            0
        );
        assert_eq!(
            common::as_user_in(NOBODY, NOBODY, &[], || open(&public, libc::O_WRONLY)),
            libc::EACCES
        );
        assert_eq!(
            common::as_user_in(NOBODY, NOBODY, &[], || open(
                &new_in_root,
                libc::O_CREAT | libc::O_WRONLY
            )),
            libc::EACCES
        );
        // A file created by an unprivileged user belongs to it.
        fs::create_dir(p("open-dir")).unwrap();
        chmod(&p("open-dir"), 0o777);
        let created = cpath(&p("open-dir/mine"));
        assert_eq!(
            common::as_user_in(NOBODY, NOBODY, &[], || open(
                &created,
                libc::O_CREAT | libc::O_WRONLY
            )),
            0
        );
        let md = fs::metadata(p("open-dir/mine")).unwrap();
        assert_eq!((md.uid(), md.gid()), (NOBODY, NOBODY));
        // The owner's group may read once given the bits.
        chown(&p("private"), None, Some(GROUP));
        chmod(&p("private"), 0o640);
        assert_eq!(
            common::as_user_in(NOBODY, NOBODY, &[GROUP], || open(&private, libc::O_RDONLY)),
            0
        );
        assert!(fs::metadata(p("new")).is_err());
    });
}

/// Times the daemon gives (a create) and times the kernel gives (a write
/// through passthrough stamps the object) order as the events did: a file
/// made or written after another never looks older, as on ext4.
#[test]
fn daemon_and_kernel_times_never_go_backwards() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        for i in 0..200 {
            let made = m.path(&format!("made{i}"));
            drop(fs::File::create(&made).unwrap());
            let t_made = mtime(&made);
            let written = m.path(&format!("written{i}"));
            let mut f = fs::File::create(&written).unwrap();
            std::io::Write::write_all(&mut f, b"x").unwrap();
            drop(f);
            let t_written = mtime(&written);
            assert!(
                t_written >= t_made,
                "round {i}: written after, but older: {t_made:?} -> {t_written:?}"
            );
            let after = m.path(&format!("after{i}"));
            drop(fs::File::create(&after).unwrap());
            let t_after = mtime(&after);
            assert!(
                t_after >= t_written,
                "round {i}: made after, but older: {t_written:?} -> {t_after:?}"
            );
        }
    });
}

/// statx(2)'s birth time, through `path`: (seconds, nanoseconds), or
/// None when the filesystem does not report one.
fn btime(path: &Path) -> Option<(i64, u32)> {
    let c = cpath(path);
    // SAFETY: a zeroed statx for the kernel to fill; a NUL-terminated path.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut sx,
        )
    };
    assert_eq!(rc, 0, "statx {path:?}: {}", std::io::Error::last_os_error());
    (sx.stx_mask & libc::STATX_BTIME != 0).then_some((sx.stx_btime.tv_sec, sx.stx_btime.tv_nsec))
}

/// statx reports the birth time, as ext4 does: the creation time artfs
/// records, which writes, chmod and a remount leave alone.
#[test]
fn statx_reports_the_birth_time() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = m.path("f");
        fs::write(&p, b"first").unwrap();
        fs::create_dir(m.path("d")).unwrap();
        let born = btime(&p).expect("no birth time from statx");
        let md = fs::metadata(&p).unwrap();
        assert!(
            born <= (md.mtime(), md.mtime_nsec() as u32),
            "born {born:?} after its mtime"
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((born.0 - now).abs() < 60, "born {born:?}, now {now}");
        assert!(btime(&m.path("d")).is_some(), "directories have one too");
        tick();
        fs::write(&p, b"second").unwrap();
        chmod(&p, 0o600);
        assert_eq!(btime(&p), Some(born), "a write or chmod moved it");
        m.remount();
        assert_eq!(btime(&p), Some(born), "a remount moved it");
        // A plain stat still works beside it (the kernel's getattr path).
        assert_eq!(fs::metadata(&p).unwrap().len(), 6);
    });
}
