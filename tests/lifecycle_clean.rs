//! Clean stops and restarts: a clean unmount leaves nothing that fsck or
//! recovery calls a crash; a remount (or fsck) right after `umount`
//! returns waits for the daemon that is still finishing; a holder that
//! serves no mount is waited for, then refused with its pid; and `--force`
//! never detaches a live mount (its daemon and API keep serving).

mod common;

use std::fs;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::engine::StoreDb;
use common::{bin, is_mounted, Mount};

/// A daemon started by a test, its stderr in a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Start `artfs mount BACKING MNT extra...`, logging at info to `log`,
    /// and wait until the mount answers.
    fn start(backing: &Path, mnt: &Path, db: &StoreDb, extra: &[&str], log: &Path) -> Daemon {
        let child = Command::new(bin())
            .arg("mount")
            .arg(backing)
            .arg(mnt)
            .args(&db.args)
            .args(extra)
            .env("ARTFS_LOG", "info,fuser=error")
            .stdin(Stdio::null())
            .stderr(File::create(log).unwrap())
            .spawn()
            .expect("spawn artfs");
        let mut d = Daemon {
            child,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(is_mounted(mnt) && fs::metadata(mnt).is_ok()) {
            if let Some(st) = d.child.try_wait().unwrap() {
                panic!("artfs exited before mounting ({st}):\n{}", d.stderr());
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(10));
        }
        d
    }

    fn stderr(&self) -> String {
        let mut s = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait for the daemon to exit; it must exit 0.
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "artfs exited with {st}:\n{}", self.stderr());
                return;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("artfs did not exit after the unmount");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Unmount as a user would, and return as soon as the unmount does (not
/// when the daemon exits): `fusermount3 -u`, or umount(2) where fusermount3
/// is not installed.
fn unmount(mnt: &Path) {
    if !common::fusermount_u(mnt) {
        nix::mount::umount2(mnt, nix::mount::MntFlags::empty()).expect("unmount");
    }
}

/// Never leave a mount behind in the temp dir.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in &self.0 {
            for _ in 0..3 {
                if is_mounted(m) {
                    let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
    }
}

/// A scratch dir with BACKING and MOUNTPOINT, and where the store's
/// tables live on the running test's engine.
fn area() -> (tempfile::TempDir, PathBuf, PathBuf, StoreDb) {
    let dir = tempfile::Builder::new()
        .prefix("artfs-clean-")
        .tempdir()
        .unwrap();
    let (b, m) = (dir.path().join("backing"), dir.path().join("mnt"));
    fs::create_dir(&b).unwrap();
    fs::create_dir(&m).unwrap();
    (dir, b, m, common::engine::new_store_db("clean"))
}

fn fsck(backing: &Path, db: &StoreDb) -> Output {
    Command::new(bin())
        .arg("fsck")
        .arg(backing)
        .args(&db.args)
        .env("ARTFS_LOG", "info")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    common::output_text(o)
}

/// Creates, writes, renames and truncates in `MNT/r{round}` for `secs`
/// seconds, plus a few files large enough to be hashed in the background.
fn churn(mnt: &Path, round: usize, secs: f64) -> usize {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    churn_while(mnt, round, || Instant::now() < until)
}

/// [`churn`] until `go` says stop or a call fails (the mount went away:
/// its directory is not in the bare mount point). Returns files made.
fn churn_while(mnt: &Path, round: usize, go: impl Fn() -> bool) -> usize {
    let dir = mnt.join(format!("r{round}"));
    fs::create_dir(&dir).unwrap();
    let big = vec![b'x'; (1 << 20) + 4096];
    let mut n = 0;
    let step = |n: usize| -> std::io::Result<()> {
        let a = dir.join(format!("f{n}"));
        let b = dir.join(format!("g{n}"));
        if n.is_multiple_of(25) {
            fs::write(&a, &big)?;
        } else {
            fs::write(&a, format!("content {round} {n}"))?;
        }
        fs::rename(&a, &b)?;
        File::options().write(true).open(&b)?.set_len(3)?;
        if n.is_multiple_of(7) {
            fs::write(&b, format!("rewritten {n}"))?;
        }
        Ok(())
    };
    while go() && step(n).is_ok() {
        n += 1;
    }
    n
}

/// Unmount while `churn_while` keeps changing files, as an operator
/// stopping a busy archive does: retry while the mount is busy.
fn unmount_while_busy(mnt: &Path, round: usize, secs: f64) -> usize {
    let m = mnt.to_path_buf();
    let worker = std::thread::spawn(move || churn_while(&m, round, || true));
    std::thread::sleep(Duration::from_secs_f64(secs));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match nix::mount::umount2(mnt, nix::mount::MntFlags::empty()) {
            Ok(()) => break,
            Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Err(e) => panic!("unmount: {e}"),
        }
    }
    worker.join().unwrap()
}

const CRASH: &str = "interrupted by a crash";

#[test]
fn clean_unmounts_leave_no_crash_work_over_many_quick_cycles() {
    common::engine::every_engine(|| {
        let (_dir, backing, mnt, db) = area();
        let _c = Cleanup(vec![mnt.clone()]);
        for round in 0..8 {
            let log = backing.parent().unwrap().join(format!("log{round}"));
            let mut d = Daemon::start(&backing, &mnt, &db, &[], &log);
            let log_at_start = d.stderr();
            assert!(
                !log_at_start.contains(CRASH),
                "round {round}: the mount after a clean unmount reported a crash:\n{log_at_start}"
            );
            let n = unmount_while_busy(&mnt, round, 1.2);
            assert!(n > 10, "round {round}: only {n} files written");
            d.wait_exit();
            let out = fsck(&backing, &db);
            let t = text(&out);
            assert_eq!(
                out.status.code(),
                Some(0),
                "round {round}: fsck after a clean unmount:\n{t}"
            );
            assert!(t.contains("consistent"), "round {round}:\n{t}");
            // Sidecar rewrites a close had no time for are deferred
            // housekeeping (the next mount writes them), not crash work.
            assert!(
                !t.contains("pending"),
                "round {round}: a clean close left log rows:\n{t}"
            );
        }
        // And the mount after the last clean stop recovers nothing either.
        let log = backing.parent().unwrap().join("log-last");
        let mut d = Daemon::start(&backing, &mnt, &db, &[], &log);
        assert!(!d.stderr().contains(CRASH), "{}", d.stderr());
        assert_eq!(
            fs::read(mnt.join("r7/g1")).unwrap().len(),
            3,
            "the last round's files are there"
        );
        // The deferred sidecars are written as ordinary work: once the
        // mount has caught up (on S3 each is a PUT, which a loaded moto
        // serves slowly: waiting a fixed 2 s failed once in a full suite),
        // a clean stop leaves nothing, deferred or pending.
        let deadline = Instant::now() + Duration::from_secs(30);
        let backlog = "SELECT CAST(count(*) AS TEXT) FROM {p}_wal \
                       WHERE status = 'pending' AND operation_type = 'sidecars'";
        while db.query(&backing, backlog) != ["0"] {
            assert!(
                Instant::now() < deadline,
                "the deferred sidecars were never written"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        unmount(&mnt);
        d.wait_exit();
        let t = text(&fsck(&backing, &db));
        assert!(
            t.contains("consistent") && !t.contains("pending") && !t.contains("deferred"),
            "after a quiet stop:\n{t}"
        );
    });
}

#[test]
fn remount_and_fsck_right_after_unmount_wait_for_the_exiting_daemon() {
    common::engine::every_engine(|| {
        let (_dir, backing, mnt, db) = area();
        let _c = Cleanup(vec![mnt.clone()]);
        let logs = backing.parent().unwrap().to_path_buf();
        let mut d = Daemon::start(&backing, &mnt, &db, &[], &logs.join("log0"));
        for round in 1..=6 {
            churn(&mnt, round, 0.4);
            let old = d;
            unmount(&mnt);
            // No sleep: the old daemon may still be committing its last work.
            d = Daemon::start(&backing, &mnt, &db, &[], &logs.join(format!("log{round}")));
            let mut old = old;
            old.wait_exit();
            assert!(
                fs::read_dir(mnt.join(format!("r{round}"))).unwrap().count() > 0,
                "round {round}: the files of the last mount are missing"
            );
            let log = d.stderr();
            if log.contains("waiting for artfs") {
                // When it had to wait, it said for whom.
                assert!(
                    log.contains(&format!("waiting for artfs pid {}", old.pid())),
                    "{log}"
                );
            }
        }
        churn(&mnt, 7, 0.4);
        unmount(&mnt);
        // fsck at once, too: it checks the final state, not a mounted store.
        let out = fsck(&backing, &db);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(0), "{t}");
        assert!(!t.contains("is mounted"), "{t}");
        d.wait_exit();
    });
}

/// Hold the store lock from this process, as a daemon would, with `pid`
/// written in it.
fn hold_lock(backing: &Path, pid: &str) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .open(backing.join(".artfs/lock"))
        .unwrap();
    // SAFETY: flock on a valid descriptor.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(rc, 0, "could not take the lock");
    f.set_len(0).unwrap();
    std::io::Write::write_all(&mut &f, pid.as_bytes()).unwrap();
    f
}

#[test]
fn a_holder_serving_no_mount_is_waited_for_and_the_mount_goes_on_once_it_lets_go() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("f"), b"kept").unwrap();
        m.unmount();
        let lock = hold_lock(&m.backing, "424242");
        let log = m.backing.parent().unwrap().join("log");
        let child = Command::new(bin())
            .arg("mount")
            .arg(&m.backing)
            .arg(&m.mnt)
            .args(m.store_args())
            .env("ARTFS_LOG", "info,fuser=error")
            .stdin(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Daemon { child, log };
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            d.child.try_wait().unwrap().is_none(),
            "it gave up at once:\n{}",
            d.stderr()
        );
        assert!(
            d.stderr()
                .contains("waiting for artfs pid 424242 to finish with the store"),
            "it does not say what it waits for:\n{}",
            d.stderr()
        );
        assert!(!is_mounted(&m.mnt));
        drop(lock);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&m.mnt) {
            assert!(d.child.try_wait().unwrap().is_none(), "{}", d.stderr());
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(fs::read(m.path("f")).unwrap(), b"kept");
        unmount(&m.mnt);
        d.wait_exit();
    });
}

#[test]
fn a_holder_that_never_lets_go_is_refused_after_the_wait_with_its_pid() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        m.unmount();
        let _lock = hold_lock(&m.backing, "424242");
        let start = Instant::now();
        let out = m
            .command("fsck")
            .arg("--repair")
            .env("ARTFS_LOG", "info")
            .output()
            .unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(start.elapsed() >= Duration::from_secs(9), "no wait: {t}");
        assert!(t.contains("waiting for artfs pid 424242"), "{t}");
        assert!(
            t.contains("in use by another artfs process (pid 424242)"),
            "{t}"
        );
    });
}

#[test]
fn a_daemon_that_serves_the_store_is_refused_at_once() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let other = tempfile::Builder::new()
            .prefix("artfs-clean-")
            .tempdir()
            .unwrap();
        let start = Instant::now();
        let out = Command::new(bin())
            .arg("mount")
            .arg(&m.backing)
            .arg(other.path())
            .args(m.store_args())
            .env("ARTFS_LOG", "info")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(start.elapsed() < Duration::from_secs(5), "it waited: {t}");
        let pid = m.pid().unwrap();
        assert!(
            t.contains(&format!("in use by another artfs process (pid {pid})")),
            "{t}"
        );
        assert!(t.contains("which serves it at"), "{t}");
        assert!(!is_mounted(other.path()));
        fs::write(m.path("g"), b"still serves").unwrap();
    });
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_status(url: &str) -> u16 {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(url)
        .send()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn mounts_at(mnt: &Path) -> usize {
    let want = mnt.to_string_lossy().replace(' ', "\\040");
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(want.as_str()))
        .count()
}

#[test]
fn force_never_detaches_a_live_mount_and_its_api_keeps_serving() {
    common::engine::every_engine(|| {
        let keys = tempfile::Builder::new()
            .prefix("artfs-clean-keys-")
            .tempdir()
            .unwrap();
        let (_, public) = common::keys::genpkey(
            keys.path(),
            "ec",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let addr = format!("127.0.0.1:{}", free_port());
        let public = public.to_str().unwrap().to_string();
        let m = Mount::with_args(&["--api", &addr, "--jwt-key", &public]);
        let live = format!("http://{addr}/health/live");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_status(&live) != 200 {
            assert!(Instant::now() < deadline, "the API never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        fs::write(m.path("f"), b"served").unwrap();
        let pid = m.pid().unwrap();
        let (_dir, other, _, _) = area();

        // Another store, and the same store, with and without --force.
        for (backing, force) in [
            (&other, false),
            (&other, true),
            (&m.backing, false),
            (&m.backing, true),
        ] {
            let mut c = Command::new(bin());
            c.arg("mount").arg(backing).arg(&m.mnt);
            if force {
                c.arg("--force");
            }
            let out = c
                .env("ARTFS_LOG", "info,fuser=error")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let t = text(&out);
            assert_eq!(out.status.code(), Some(2), "force={force}: {t}");
            assert!(t.contains("already a mount point"), "{t}");
            assert!(t.contains("live"), "{t}");
            assert!(
                t.contains(&format!("artfs pid {pid}")),
                "does not name its daemon: {t}"
            );
            assert!(!t.contains("detaching"), "{t}");
            if !force {
                assert!(
                    !t.contains("--force"),
                    "suggests --force for a live mount: {t}"
                );
            }
        }
        // The first daemon's mount and API still serve, and nothing was
        // stacked on or detached from its mount point.
        assert_eq!(fs::read(m.path("f")).unwrap(), b"served");
        fs::write(m.path("g"), b"still").unwrap();
        assert_eq!(http_status(&live), 200);
        assert_eq!(mounts_at(&m.mnt), 1);
        assert!(
            fs::read_dir(&other).unwrap().next().is_none(),
            "other BACKING was touched"
        );
    });
}

#[test]
fn force_detaches_an_artfs_mount_whose_daemon_is_gone() {
    common::engine::every_engine(|| {
        let (_dir, backing, mnt, db) = area();
        let _c = Cleanup(vec![mnt.clone()]);
        let log = backing.parent().unwrap().join("log");
        let mut d = Daemon::start(&backing, &mnt, &db, &[], &log);
        let f = File::create(mnt.join("f")).unwrap();
        std::io::Write::write_all(&mut &f, b"survives").unwrap();
        f.sync_all().unwrap();
        drop(f);
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        drop(d);
        let out = Command::new(bin())
            .arg("mount")
            .arg(&backing)
            .arg(&mnt)
            .args(&db.args)
            .env("ARTFS_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains("stale") && t.contains("--force"), "{t}");
        let log2 = backing.parent().unwrap().join("log2");
        let mut d = Daemon::start(&backing, &mnt, &db, &["--force"], &log2);
        assert_eq!(fs::read(mnt.join("f")).unwrap(), b"survives");
        assert_eq!(mounts_at(&mnt), 1, "the dead mount was not detached");
        unmount(&mnt);
        d.wait_exit();
    });
}
