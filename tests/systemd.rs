//! Running under systemd: the `Type=notify` protocol spoken by `artfs
//! mount` (READY=1 only once the mount answers, STATUS= lines, STOPPING=1
//! at SIGTERM, WATCHDOG=1 pings) against a datagram socket each test binds
//! itself, and `systemd-analyze verify` of the shipped unit.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::engine::StoreDb;
use common::{bin, is_mounted};

/// A daemon started by the test with NOTIFY_SOCKET set, and the socket
/// it reports to.
struct Daemon {
    _dir: tempfile::TempDir,
    mnt: PathBuf,
    sock: UnixDatagram,
    child: Option<Child>,
    /// The tables of a fresh store (a given one keeps its own).
    _db: Option<StoreDb>,
}

impl Daemon {
    /// Bind a socket at a path in a temp dir (`abstract_name`: an
    /// abstract `@name` socket instead), then start `artfs mount` with
    /// NOTIFY_SOCKET naming it, extra `env` and `args`.
    fn start(abstract_name: bool, env: &[(&str, &str)], args: &[&str]) -> Daemon {
        Daemon::start_on(None, abstract_name, env, args)
    }

    /// [`Daemon::start`] on an existing (unmounted) store (None: a fresh
    /// one).
    fn start_on(
        store: Option<&common::Mount>,
        abstract_name: bool,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("artfs-systemd-")
            .tempdir()
            .unwrap();
        let (backing, db) = match store {
            Some(m) => (m.backing.clone(), None),
            None => (
                dir.path().join("backing"),
                Some(common::engine::new_store_db("systemd")),
            ),
        };
        let store_args = match (store, &db) {
            (Some(m), _) => m.store_args(),
            (None, Some(db)) => db.args.clone(),
            (None, None) => unreachable!(),
        };
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let (sock, addr) = if abstract_name {
            use std::os::linux::net::SocketAddrExt;
            let name = format!(
                "artfs-test-{}-{}",
                std::process::id(),
                dir.path().file_name().unwrap().to_string_lossy()
            );
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            (UnixDatagram::bind_addr(&a).unwrap(), format!("@{name}"))
        } else {
            let p = dir.path().join("notify.sock");
            (
                UnixDatagram::bind(&p).unwrap(),
                p.to_string_lossy().into_owned(),
            )
        };
        let child = Command::new(bin())
            .arg("mount")
            .arg(&backing)
            .arg(&mnt)
            .args(&store_args)
            .arg("--allow-other")
            .args(args)
            .env("ARTFS_LOG", "warn,fuser::session=error")
            .env("NOTIFY_SOCKET", &addr)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn artfs");
        Daemon {
            _dir: dir,
            mnt,
            sock,
            child: Some(child),
            _db: db,
        }
    }

    /// The next datagram, or None after `wait`.
    fn recv(&self, wait: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    /// Datagrams until one has the line `line`; all of them, that one last.
    fn until(&self, line: &str, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {line} within {wait:?}; got {seen:?}");
            if let Some(m) = self.recv(left) {
                let done = m.lines().any(|l| l == line);
                seen.push(m);
                if done {
                    return seen;
                }
            }
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// SIGTERM the daemon we started; STOPPING=1 must come, then a clean
    /// exit with nothing left mounted.
    fn terminate(&mut self) -> Vec<String> {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        let seen = self.until("STOPPING=1", Duration::from_secs(20));
        let status = wait_exit(self.child.as_mut().unwrap(), Duration::from_secs(20));
        self.child = None;
        assert!(status.success(), "artfs exited with {status} after SIGTERM");
        assert!(!is_mounted(&self.mnt), "still mounted after SIGTERM");
        seen
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn wait_exit(child: &mut Child, wait: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("artfs did not exit within {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The STATUS= values among `msgs`.
fn statuses(msgs: &[String]) -> Vec<&str> {
    msgs.iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .collect()
}

#[test]
fn ready_only_once_the_mount_answers_then_stopping_at_sigterm() {
    common::engine::every_engine(|| {
        let mut d = Daemon::start(false, &[], &["--mode", "rw"]);
        let before = d.until("READY=1", Duration::from_secs(30));
        // At the moment READY=1 arrives the mount is there and serves.
        assert!(is_mounted(&d.mnt), "READY=1 before the mount appeared");
        std::fs::read_dir(&d.mnt).expect("READY=1 but the mount does not answer");
        std::fs::write(d.mnt.join("f"), b"x").unwrap();
        assert_eq!(std::fs::metadata(d.mnt.join("f")).unwrap().len(), 1);
        let st = statuses(&before);
        assert!(
            st.first().is_some_and(|s| s.starts_with("recovering")),
            "the first status is not the recovery: {st:?}"
        );
        let serving = st.last().unwrap();
        assert!(
            serving.starts_with("serving") && serving.contains("mode rw"),
            "READY=1 comes without the serving status and mode: {st:?}"
        );
        assert!(
            serving.contains(&d.mnt.display().to_string()),
            "status names no mount point: {serving}"
        );
        let after = d.terminate();
        let st = statuses(&after);
        assert!(
            st.iter().any(|s| s.starts_with("stopping")),
            "no stopping status: {st:?}"
        );
    });
}

#[test]
fn a_long_recovery_extends_the_start_timeout_before_ready() {
    common::engine::every_engine(|| {
        // A crash leaves a pending log row: the daemon dies right after the
        // durable intent of an open for writing.
        let mut m = common::Mount::new();
        std::fs::write(m.path("f"), b"old").unwrap();
        m.arm(&["open::after_intent=return"]);
        let _ = std::fs::OpenOptions::new().write(true).open(m.path("f"));
        m.expect_crash("open::after_intent");
        // Recovery of its first row now takes 11 s: the daemon must ask systemd
        // for more start time (every 10 s) before READY=1.
        let mut d = Daemon::start_on(
            Some(&m),
            false,
            &[("FAILPOINTS", "recover::before_settle=1*sleep(11000)")],
            &[],
        );
        let msgs = d.until("READY=1", Duration::from_secs(60));
        let extend = msgs
            .iter()
            .position(|m| m.lines().any(|l| l.starts_with("EXTEND_TIMEOUT_USEC=")))
            .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC during recovery: {msgs:?}"));
        assert!(
            extend < msgs.len() - 1,
            "EXTEND_TIMEOUT_USEC with or after READY=1"
        );
        let st = statuses(&msgs);
        assert!(
            st.last().unwrap().contains(" log rows"),
            "READY=1 status does not tell the recovery: {st:?}"
        );
        d.terminate();
    });
}

#[test]
fn abstract_socket_and_watchdog_pings() {
    common::engine::every_engine(|| {
        let mut d = Daemon::start(true, &[("WATCHDOG_USEC", "200000")], &[]);
        let before = d.until("READY=1", Duration::from_secs(30));
        assert!(
            statuses(&before).last().unwrap().contains("mode edit"),
            "{before:?}"
        );
        // Pings every 100 ms (half of WATCHDOG_USEC): several within 1.5 s.
        let start = Instant::now();
        let mut pings = 0;
        while start.elapsed() < Duration::from_millis(1500) {
            if let Some(m) = d.recv(Duration::from_millis(500)) {
                pings += m.lines().filter(|l| *l == "WATCHDOG=1").count();
            }
        }
        assert!(pings >= 5, "only {pings} WATCHDOG=1 pings in 1.5 s");
        d.terminate();
    });
}

#[test]
fn watchdog_of_another_pid_is_not_ours() {
    common::engine::every_engine(|| {
        // WATCHDOG_PID names the process the watchdog is for (pid 1 here):
        // not this daemon, so it must not ping.
        let mut d = Daemon::start(
            false,
            &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
            &[],
        );
        d.until("READY=1", Duration::from_secs(30));
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(700) {
            if let Some(m) = d.recv(Duration::from_millis(200)) {
                assert!(!m.contains("WATCHDOG=1"), "pinged for another pid: {m}");
            }
        }
        d.terminate();
    });
}

#[test]
fn a_failed_start_reports_its_error_and_never_ready() {
    // A non-empty mount point fails the start before the store is opened.
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(mnt.join("occupied")).unwrap();
    let out = Command::new(bin())
        .arg("mount")
        .arg(&backing)
        .arg(&mnt)
        .env("ARTFS_LOG", "warn")
        .env("NOTIFY_SOCKET", &sock_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    let mut msgs = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(!msgs.iter().any(|m| m.contains("READY=1")), "{msgs:?}");
    let st = statuses(&msgs);
    assert!(
        st.iter()
            .any(|s| s.starts_with("failed:") && s.contains("not empty")),
        "no failed status with the error: {msgs:?}"
    );
}

#[test]
fn an_unusable_notify_socket_never_fails_the_mount() {
    common::engine::every_engine(|| {
        let dir = tempfile::tempdir().unwrap();
        let (backing, mnt) = (dir.path().join("backing"), dir.path().join("mnt"));
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let db = common::engine::new_store_db("systemd");
        let mut child = Command::new(bin())
            .arg("mount")
            .arg(&backing)
            .arg(&mnt)
            .args(&db.args)
            .env("ARTFS_LOG", "warn")
            .env("NOTIFY_SOCKET", dir.path().join("nobody-listens"))
            .env("WATCHDOG_USEC", "200000")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mnt) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "artfs exited: the notify socket failed the mount"
            );
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_dir(&mnt).expect("the mount answers");
        std::thread::sleep(Duration::from_millis(300)); // a few failed pings
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = wait_exit(&mut child, Duration::from_secs(20));
        assert!(status.success(), "artfs exited with {status}");
        assert!(!is_mounted(&mnt));
    });
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        println!("skipped: systemd-analyze is not installed");
        return;
    };
    let unit = std::fs::read_to_string(repo().join("systemd/artfs@.service")).unwrap();
    // Absolute paths only, and nothing that hides the mount from the host.
    for line in unit.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for bad in [
            "PrivateTmp",
            "ProtectSystem",
            "ProtectHome",
            "PrivateMounts",
            "ReadOnlyPaths",
            "TemporaryFileSystem",
        ] {
            assert!(!line.starts_with(bad), "mount-namespace option: {line}");
        }
        if let Some(cmd) = line
            .strip_prefix("ExecStart=")
            .or(line.strip_prefix("ExecStopPost="))
        {
            let prog = cmd.trim_start_matches(['-', '@', '+', '!', ':']);
            assert!(prog.starts_with('/'), "not an absolute path: {line}");
        }
    }
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "ExecStopPost=-/usr/bin/fusermount3 -uz",
        "After=network-online.target",
        "Wants=network-online.target",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(want)),
            "unit lacks {want}"
        );
    }
    // The instance name as systemd would load it; /usr/bin/artfs is not
    // installed here, so ExecStart points at the built binary instead.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("artfs@test.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/artfs ", &format!("{} ", bin())),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    // verify exits 0 on some warnings; none may name our unit.
    assert!(
        !text.contains("artfs@test.service"),
        "systemd-analyze verify complains:\n{text}"
    );
}

fn which(prog: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or(())
}
