//! The daemon's life: refusing bad mount points and unusable BACKINGs
//! without touching anything, one daemon per store, stale mounts left by
//! SIGKILL (reported, and recovered with --force), clean unmount on
//! SIGTERM/SIGINT, and a remount that shows everything.

mod common;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::{bin, is_mounted, Mount};

/// A scratch area with BACKING and MOUNTPOINT directories.
struct Area {
    dir: tempfile::TempDir,
    /// Where the store's tables live on the running test's engine.
    db: common::engine::StoreDb,
}

impl Area {
    fn new() -> Area {
        let dir = tempfile::Builder::new()
            .prefix("artfs-life-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("backing")).unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        let db = common::engine::new_store_db("life");
        Area { dir, db }
    }
    /// `artfs mount BACKING MOUNTPOINT <store flags> EXTRA`.
    fn artfs(&self, extra: &[&str]) -> Command {
        let mut c = artfs(&self.backing(), &self.mnt(), extra);
        c.args(&self.db.args);
        c
    }
    /// Start the daemon of this area's store and wait until it is mounted
    /// and answering (a stale mount there is listed too, but does not
    /// answer).
    fn start(&self, extra: &[&str]) -> Child {
        start_cmd(self.artfs(extra), &self.mnt())
    }
    fn backing(&self) -> PathBuf {
        self.dir.path().join("backing")
    }
    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // Never leave a mount (live or stale) behind in the temp dir.
        for _ in 0..3 {
            if is_mounted(&self.mnt()) {
                let _ = nix::mount::umount2(&self.mnt(), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

fn artfs(backing: &Path, mnt: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("mount")
        .arg(backing)
        .arg(mnt)
        .args(extra)
        .env("ARTFS_LOG", "warn,fuser=error")
        .stdin(Stdio::null());
    c
}

/// Run a mount that must fail: it has to exit on its own, non-zero.
fn must_fail(mut cmd: Command, mnt: &Path) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn artfs");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH);
            panic!("artfs did not exit although it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        !out.status.success(),
        "artfs succeeded although it should have refused"
    );
    assert_eq!(out.status.code(), Some(2), "exit status {}", out.status);
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `Area::start` with a command prepared by the caller (limits, piped
/// stderr).
fn start_cmd(mut cmd: Command, mnt: &Path) -> Child {
    let mut child = cmd.spawn().expect("spawn artfs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(is_mounted(mnt) && fs::metadata(mnt).is_ok()) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("artfs exited before mounting: {st}");
        }
        assert!(Instant::now() < deadline, "mount did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn wait_exit(child: &mut Child, secs: u64) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("artfs did not exit in {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Everything under `dir`, for the "backing untouched" checks.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn non_empty_mount_point_is_refused_and_backing_untouched() {
    common::engine::every_engine(|| {
        let a = Area::new();
        fs::write(a.mnt().join("precious"), b"keep me").unwrap();
        let out = must_fail(a.artfs(&[]), &a.mnt());
        let err = stderr(&out);
        assert!(err.contains("not empty"), "unclear message: {err}");
        assert!(
            err.contains(&*a.mnt().to_string_lossy()),
            "message does not name the mount point: {err}"
        );
        assert!(!is_mounted(&a.mnt()));
        assert!(tree(&a.backing()).is_empty(), "BACKING was touched");
        assert_eq!(fs::read(a.mnt().join("precious")).unwrap(), b"keep me");
    });
}

#[test]
fn missing_or_non_directory_mount_point_is_refused() {
    let a = Area::new();
    let out = must_fail(
        artfs(&a.backing(), &a.dir.path().join("absent"), &[]),
        &a.mnt(),
    );
    let err = stderr(&out);
    assert!(
        err.contains("absent") && err.contains("No such file"),
        "unclear message: {err}"
    );
    let file = a.dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let out = must_fail(artfs(&a.backing(), &file, &[]), &file);
    let err = stderr(&out);
    assert!(err.contains("not a directory"), "unclear message: {err}");
    assert!(tree(&a.backing()).is_empty(), "BACKING was touched");
}

#[test]
fn unwritable_backing_is_refused_for_a_non_root_user() {
    common::engine::every_engine(|| {
        let a = Area::new();
        fs::set_permissions(a.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(a.backing(), fs::Permissions::from_mode(0o555)).unwrap();
        let mut cmd = a.artfs(&[]);
        cmd.uid(65534).gid(65534);
        let out = must_fail(cmd, &a.mnt());
        let err = stderr(&out);
        assert!(err.contains("not writable"), "unclear message: {err}");
        assert!(
            err.contains(&*a.backing().to_string_lossy()),
            "message does not name BACKING: {err}"
        );
        assert!(tree(&a.backing()).is_empty(), "BACKING was touched");
        assert!(!is_mounted(&a.mnt()));
    });
}

#[test]
fn read_only_backing_is_refused_and_the_store_left_intact() {
    common::engine::every_engine(|| {
        let a = Area::new();
        // Make a store with some content first.
        let mut d = a.start(&[]);
        fs::write(a.mnt().join("f"), b"content").unwrap();
        signal(&d, Signal::SIGTERM);
        assert!(wait_exit(&mut d, 20).success());
        let before: Vec<_> = tree(&a.backing())
            .into_iter()
            .map(|p| {
                let md = fs::symlink_metadata(&p).unwrap();
                (p, md.len(), md.mtime(), md.mtime_nsec())
            })
            .collect();

        // A read-only bind mount of BACKING over itself.
        let b = a.backing();
        let none: Option<&str> = None;
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        mount(Some(&b), &b, none, MsFlags::MS_BIND, none).expect("bind mount");
        let ro = mount(
            none,
            &b,
            none,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            none,
        );
        if let Err(e) = ro {
            let _ = umount2(&b, MntFlags::MNT_DETACH);
            panic!("cannot make a read-only bind mount: {e}");
        }
        let out = must_fail(artfs(&b, &a.mnt(), &[]), &a.mnt());
        umount2(&b, MntFlags::empty()).unwrap();
        let err = stderr(&out);
        assert!(err.contains("not writable"), "unclear message: {err}");
        let after: Vec<_> = tree(&a.backing())
            .into_iter()
            .map(|p| {
                let md = fs::symlink_metadata(&p).unwrap();
                (p, md.len(), md.mtime(), md.mtime_nsec())
            })
            .collect();
        assert_eq!(before, after, "BACKING changed");
        // Writable again: the store mounts and has its data.
        let mut d = a.start(&[]);
        assert_eq!(fs::read(a.mnt().join("f")).unwrap(), b"content");
        signal(&d, Signal::SIGTERM);
        assert!(wait_exit(&mut d, 20).success());
    });
}

#[test]
fn a_second_daemon_on_the_same_backing_refuses() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::write(m.path("f"), b"first").unwrap();
        let other = tempfile::Builder::new()
            .prefix("artfs-life-")
            .tempdir()
            .unwrap();
        let mut cmd = artfs(&m.backing, other.path(), &[]);
        cmd.args(m.store_args());
        let out = must_fail(cmd, other.path());
        let err = stderr(&out);
        assert!(
            err.contains("in use by another artfs process"),
            "unclear message: {err}"
        );
        let pid = m.pid().unwrap().to_string();
        assert!(err.contains(&pid), "message does not name pid {pid}: {err}");
        assert!(!is_mounted(other.path()));
        // The first daemon is unharmed and still serves.
        fs::write(m.path("g"), b"still works").unwrap();
        assert_eq!(fs::read(m.path("f")).unwrap(), b"first");
        assert_eq!(fs::read(m.path("g")).unwrap(), b"still works");
        // The lock file still names the first daemon.
        let lock = fs::read_to_string(m.backing.join(".artfs/lock")).unwrap();
        assert_eq!(lock.trim(), pid);
    });
}

#[test]
fn mounting_over_a_live_mount_is_refused() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let other = Area::new();
        let out = must_fail(artfs(&other.backing(), &m.mnt, &[]), &other.mnt());
        let err = stderr(&out);
        assert!(
            err.contains("already a mount point") || err.contains("not empty"),
            "unclear message: {err}"
        );
        fs::write(m.path("ok"), b"").unwrap();
        assert!(tree(&other.backing()).is_empty(), "BACKING was touched");
    });
}

#[test]
fn stale_mount_after_kill_9_is_reported_and_force_recovers() {
    common::engine::every_engine(|| {
        let a = Area::new();
        let mut d = a.start(&[]);
        let f = fs::File::create(a.mnt().join("f")).unwrap();
        std::io::Write::write_all(&mut &f, b"survives").unwrap();
        f.sync_all().unwrap();
        drop(f);
        signal(&d, Signal::SIGKILL);
        let st = d.wait().unwrap();
        assert!(!st.success());
        // The mount is still listed but dead.
        assert!(is_mounted(&a.mnt()));
        // ECONNABORTED when the test runs with ARTFS_IO_URING=true and the
        // ring was in use (the kernel aborts the connection with the rings),
        // or ECANCELED before the rings are torn down.
        let e = fs::metadata(a.mnt()).unwrap_err().raw_os_error();
        assert!(
            matches!(
                e,
                Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
            ),
            "{e:?}"
        );

        let out = must_fail(a.artfs(&[]), &a.mnt());
        let err = stderr(&out);
        assert!(err.contains("stale"), "unclear message: {err}");
        assert!(
            err.contains("--force"),
            "message does not offer --force: {err}"
        );
        assert!(is_mounted(&a.mnt()), "the stale mount went away by itself");

        let mut d = a.start(&["--force"]);
        assert_eq!(fs::read(a.mnt().join("f")).unwrap(), b"survives");
        fs::write(a.mnt().join("g"), b"new").unwrap();
        // Exactly one artfs mount remains at the mount point.
        let mounts = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(&*a.mnt().to_string_lossy()))
            .count();
        assert_eq!(mounts, 1, "stale mount was not detached");
        assert!(common::fusermount_u(&a.mnt()));
        assert!(wait_exit(&mut d, 20).success());
        assert!(!is_mounted(&a.mnt()));
    });
}

fn signal_unmounts_cleanly(sig: Signal) {
    let a = Area::new();
    let mut d = a.start(&[]);
    fs::create_dir(a.mnt().join("dir")).unwrap();
    fs::write(a.mnt().join("dir/file"), b"flushed at exit").unwrap();
    signal(&d, sig);
    let st = wait_exit(&mut d, 20);
    assert!(st.success(), "{sig} ended artfs with {st}");
    assert!(!is_mounted(&a.mnt()), "{sig} left the mount behind");
    assert!(fs::read_dir(a.mnt()).unwrap().next().is_none());
    let mut d = a.start(&[]);
    assert_eq!(
        fs::read(a.mnt().join("dir/file")).unwrap(),
        b"flushed at exit"
    );
    signal(&d, sig);
    assert!(wait_exit(&mut d, 20).success());
}

#[test]
fn sigterm_unmounts_cleanly_with_exit_0() {
    common::engine::every_engine(|| {
        signal_unmounts_cleanly(Signal::SIGTERM);
    });
}

#[test]
fn sigint_unmounts_cleanly_with_exit_0() {
    common::engine::every_engine(|| {
        signal_unmounts_cleanly(Signal::SIGINT);
    });
}

/// One request thread is the default; several still serve concurrent
/// callers and end cleanly (their workers race at the end of the session).
#[test]
fn several_request_threads_serve_concurrent_callers_and_exit_0() {
    common::engine::every_engine(|| {
        let a = Area::new();
        let mut d = a.start(&["--threads", "3"]);
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let dir = a.mnt().join(format!("w{w}"));
                std::thread::spawn(move || {
                    fs::create_dir(&dir).unwrap();
                    for i in 0..200 {
                        let p = dir.join(format!("f{i}"));
                        fs::write(&p, format!("{w}/{i}")).unwrap();
                        assert_eq!(fs::read_to_string(&p).unwrap(), format!("{w}/{i}"));
                    }
                    fs::File::open(&dir).unwrap().sync_all().unwrap();
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        signal(&d, Signal::SIGTERM);
        let st = wait_exit(&mut d, 20);
        assert!(st.success(), "artfs exited with {st}");
        let mut d = a.start(&[]);
        for w in 0..4 {
            assert_eq!(
                fs::read_dir(a.mnt().join(format!("w{w}"))).unwrap().count(),
                200
            );
            assert_eq!(
                fs::read_to_string(a.mnt().join(format!("w{w}/f199"))).unwrap(),
                format!("{w}/199")
            );
        }
        signal(&d, Signal::SIGTERM);
        assert!(wait_exit(&mut d, 20).success());
    });
}

#[test]
fn sigterm_while_busy_detaches_and_exits_after_last_close() {
    common::engine::every_engine(|| {
        let a = Area::new();
        let mut d = a.start(&[]);
        fs::write(a.mnt().join("f"), b"held open").unwrap();
        let f = fs::File::open(a.mnt().join("f")).unwrap();
        signal(&d, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_mounted(&a.mnt()) {
            assert!(Instant::now() < deadline, "busy mount was not detached");
            std::thread::sleep(Duration::from_millis(20));
        }
        // The open file still works through the detached mount.
        let mut s = String::new();
        std::io::Read::read_to_string(&mut &f, &mut s).unwrap();
        assert_eq!(s, "held open");
        drop(f);
        let st = wait_exit(&mut d, 20);
        assert!(st.success(), "artfs exited with {st}");
        let mut d = a.start(&[]);
        assert_eq!(fs::read(a.mnt().join("f")).unwrap(), b"held open");
        signal(&d, Signal::SIGTERM);
        assert!(wait_exit(&mut d, 20).success());
    });
}

/// An unmount ends the FUSE connection, and the kernel drops the RELEASE
/// requests still queued then: the daemon closes what is left itself, so a
/// clean unmount leaves a clean store (sizes recorded, removed files and
/// directories reclaimed) without waiting for the next mount.
#[test]
fn closes_queued_when_the_unmount_comes_are_done_by_the_daemon() {
    common::engine::every_engine(|| {
        use std::io::Write;
        let mut m = Mount::new();
        // The first release holds the request thread, so the others queue
        // behind it until the unmount drops them.
        m.arm(&["release::before_persist=1*sleep(1500)"]);
        let first = fs::File::create(m.path("first")).unwrap();
        let mut written = fs::File::create(m.path("written")).unwrap();
        written.write_all(b"recorded at unmount").unwrap();
        let removed = fs::File::create(m.path("removed")).unwrap();
        fs::remove_file(m.path("removed")).unwrap();
        fs::create_dir(m.path("dir")).unwrap();
        let dir = fs::File::open(m.path("dir")).unwrap();
        fs::remove_dir(m.path("dir")).unwrap();
        drop(first);
        drop(written);
        drop(removed);
        drop(dir);
        m.unmount();
        m.assert_consistent();
        m.mount();
        assert_eq!(fs::read(m.path("written")).unwrap(), b"recorded at unmount");
        assert_eq!(common::names(&m.mnt), ["first", "written"]);
    });
}

/// Everything observable about a tree, keyed by relative path.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = fs::symlink_metadata(&p).unwrap();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if ft.is_symlink() {
                format!("symlink->{:?}", fs::read_link(&p).unwrap())
            } else if ft.is_fifo() {
                "fifo".to_string()
            } else if ft.is_socket() {
                "socket".to_string()
            } else {
                let data = fs::read(&p).unwrap();
                let sum: u64 = data
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (i as u64 + 1) * *b as u64)
                    .sum();
                format!("file len={} sum={sum}", data.len())
            };
            let mut xattrs = Vec::new();
            if !ft.is_symlink() {
                let c = CString::new(p.as_os_str().as_bytes()).unwrap();
                let mut buf = vec![0u8; 4096];
                // SAFETY: valid C string and buffer.
                let n = unsafe { libc::listxattr(c.as_ptr(), buf.as_mut_ptr().cast(), 4096) };
                assert!(n >= 0);
                buf.truncate(n as usize);
                for name in buf.split(|b| *b == 0).filter(|s| !s.is_empty()) {
                    let cn = CString::new(name).unwrap();
                    let mut v = vec![0u8; 4096];
                    // SAFETY: valid C strings and buffer.
                    let n = unsafe {
                        libc::getxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), 4096)
                    };
                    assert!(n >= 0);
                    v.truncate(n as usize);
                    xattrs.push((String::from_utf8_lossy(name).into_owned(), v));
                }
                xattrs.sort();
            }
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            out.insert(
                rel,
                format!(
                    "{kind} ino={} mode={:o} uid={} gid={} nlink={} size={} mtime={}.{} \
                     atime={}.{} ctime={}.{} rdev={} xattrs={xattrs:?}",
                    md.ino(),
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.nlink(),
                    md.len(),
                    md.mtime(),
                    md.mtime_nsec(),
                    md.atime(),
                    md.atime_nsec(),
                    md.ctime(),
                    md.ctime_nsec(),
                    md.rdev(),
                ),
            );
        }
    }
    out
}

#[test]
fn remount_shows_everything() {
    common::engine::every_engine(|| {
        // The snapshot compares the computed attributes too.
        let mut m = Mount::with_args(&["--list-computed-xattrs"]);
        let p = |s: &str| m.path(s);
        fs::create_dir_all(p("a/b/c")).unwrap();
        fs::write(p("a/small"), b"small").unwrap();
        fs::write(
            p("a/b/big"),
            (0..2_000_000u32)
                .map(|i| (i % 249) as u8)
                .collect::<Vec<_>>(),
        )
        .unwrap();
        fs::write(p("a/b/c/empty"), b"").unwrap();
        let f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(p("sparse"))
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"end", 10_000_000).unwrap();
        drop(f);
        fs::hard_link(p("a/small"), p("a/b/small-link")).unwrap();
        std::os::unix::fs::symlink("a/b/big", p("to-big")).unwrap();
        std::os::unix::fs::symlink("dangling", p("dangling")).unwrap();
        nix::unistd::mkfifo(&p("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o620)).unwrap();
        fs::write(p("\u{263a} non-ascii \u{00e9}"), b"unicode").unwrap();
        fs::set_permissions(p("a/b"), fs::Permissions::from_mode(0o2750)).unwrap();
        fs::set_permissions(p("a/small"), fs::Permissions::from_mode(0o4711)).unwrap();
        std::os::unix::fs::chown(p("a/b/c/empty"), Some(1234), Some(5678)).unwrap();
        let c = CString::new(p("a/b/big").as_os_str().as_bytes()).unwrap();
        let n = CString::new("user.tag").unwrap();
        // SAFETY: valid C strings and buffer.
        assert_eq!(
            unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), b"v1".as_ptr().cast(), 2, 0) },
            0
        );
        fs::rename(p("a/b/c"), p("moved-c")).unwrap();
        fs::remove_file(p("dangling")).unwrap();
        // The first look reads every file, which moves atime (relatime, as
        // ext4): compare from the second, stable look.
        snapshot(&m.mnt);
        let before = snapshot(&m.mnt);
        assert_eq!(before.len(), 11, "{before:#?}");
        m.remount();
        let after = snapshot(&m.mnt);
        for (k, v) in &before {
            assert_eq!(
                after.get(k),
                Some(v),
                "{} differs after remount",
                String::from_utf8_lossy(k)
            );
        }
        assert_eq!(before, after);
        // And once more, after a SIGKILL (everything was already committed).
        m.kill();
        m.mount();
        let after_kill = snapshot(&m.mnt);
        assert_eq!(before, after_kill);
    });
}

fn set_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: plain syscall on a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn more_files_open_through_the_mount_than_the_usual_fd_limit() {
    common::engine::every_engine(|| {
        const OPEN: usize = 1500;
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscall on a local struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        if lim.rlim_max < 4096 {
            // Root may raise its own hard limit; the daemon only lifts the soft one.
            set_nofile(8192, 8192).expect("raise the hard open file limit");
            lim.rlim_max = 8192;
        }
        // This process holds the files open: it needs room too.
        set_nofile(lim.rlim_max, lim.rlim_max).unwrap();
        let a = Area::new();
        // The daemon starts with the common default soft limit of 1024.
        let mut cmd = a.artfs(&[]);
        let hard = lim.rlim_max;
        // SAFETY: only an async-signal-safe syscall between fork and exec.
        unsafe {
            cmd.pre_exec(move || set_nofile(1024, hard));
        }
        let mut d = start_cmd(cmd, &a.mnt());
        let files: Vec<fs::File> = (0..OPEN)
            .map(|i| {
                fs::File::create(a.mnt().join(format!("f{i}")))
                    .unwrap_or_else(|e| panic!("open file number {i}: {e}"))
            })
            .collect();
        for (i, mut f) in files.iter().enumerate() {
            std::io::Write::write_all(&mut f, i.to_string().as_bytes()).unwrap();
        }
        drop(files);
        assert_eq!(fs::read(a.mnt().join("f1499")).unwrap(), b"1499");
        signal(&d, Signal::SIGTERM);
        assert!(wait_exit(&mut d, 20).success());
    });
}

#[test]
fn unserved_ioctls_answer_enotty_without_filling_the_log() {
    common::engine::every_engine(|| {
        let a = Area::new();
        let mut cmd = a.artfs(&[]);
        cmd.env("ARTFS_LOG", "warn").stderr(Stdio::piped());
        let d = start_cmd(cmd, &a.mnt());
        let f = fs::File::create(a.mnt().join("f")).unwrap();
        for _ in 0..50 {
            let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
            // SAFETY: TCGETS fills a termios; the descriptor is live.
            let rc = unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&f),
                    libc::TCGETS,
                    t.as_mut_ptr(),
                )
            };
            assert_eq!(rc, -1);
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ENOTTY)
            );
        }
        drop(f);
        signal(&d, Signal::SIGTERM);
        let out = d.wait_with_output().unwrap();
        assert!(out.status.success());
        let log = stderr(&out);
        assert!(!log.contains("ioctl"), "the log mentions ioctls: {log}");
    });
}

/// Object files in BACKING (not sidecars), by inode number.
fn object_inos(backing: &Path) -> std::collections::BTreeSet<u64> {
    let mut v = std::collections::BTreeSet::new();
    for d in fs::read_dir(backing.join("objects")).unwrap() {
        for e in fs::read_dir(d.unwrap().path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if let Ok(ino) = u64::from_str_radix(&name, 16) {
                v.insert(ino);
            }
        }
    }
    v
}

#[test]
fn objects_made_ahead_feed_creates_and_go_at_unmount_and_after_a_crash() {
    common::engine::every_engine(|| {
        let a = Area::new();
        let mut d = a.start(&[]);
        // Nothing is made ahead until files are being created.
        std::thread::sleep(Duration::from_millis(300));
        assert!(object_inos(&a.backing()).is_empty());
        fs::write(a.mnt().join("first"), b"1").unwrap();
        // Then the pool fills in the background (to 96, then waits until
        // below 32): empty objects under numbers no file has yet.
        let deadline = Instant::now() + Duration::from_secs(10);
        while object_inos(&a.backing()).len() < 97 {
            assert!(Instant::now() < deadline, "the pool never filled");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ready = object_inos(&a.backing());
        for i in 0..10 {
            let p = a.mnt().join(format!("f{i}"));
            fs::write(&p, format!("content {i}")).unwrap();
            // The new file took one of the objects made ahead.
            let ino = fs::metadata(&p).unwrap().ino();
            assert!(ready.contains(&ino), "f{i} (inode {ino}) got a new object");
        }
        signal(&d, Signal::SIGTERM);
        assert!(wait_exit(&mut d, 20).success());
        // Unused objects go at unmount: one object per file remains.
        assert_eq!(object_inos(&a.backing()).len(), 11, "unused objects left");

        // A killed daemon leaves its objects made ahead; recovery removes them
        // (their inode numbers' reservation is still pending).
        let mut d = a.start(&[]);
        fs::write(a.mnt().join("g"), b"g").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while object_inos(&a.backing()).len() < 12 + 96 {
            assert!(Instant::now() < deadline, "the pool never filled");
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = object_inos(&a.backing());
        signal(&d, Signal::SIGKILL);
        let _ = d.wait();
        let _ = Command::new("fusermount3")
            .args(["-uz"])
            .arg(a.mnt())
            .status();
        let mut d = a.start(&[]);
        let now = object_inos(&a.backing());
        assert!(
            now.len() <= 12,
            "objects made ahead survived the crash: {now:?}"
        );
        assert!(now.is_subset(&left));
        for i in 0..10 {
            assert_eq!(
                fs::read_to_string(a.mnt().join(format!("f{i}"))).unwrap(),
                format!("content {i}")
            );
        }
        signal(&d, Signal::SIGTERM);
        assert!(wait_exit(&mut d, 20).success());
        let out = Command::new(bin())
            .arg("fsck")
            .arg(a.backing())
            .args(&a.db.args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    });
}
