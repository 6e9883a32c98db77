//! Every error a door answers is counted and logged once, at the level its
//! kind picks, with the operation, inode, name and causes (issue 13).
//! Real mounts, real syscalls; the counters are read from `/metrics`, the
//! log from the daemon's stderr.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use std::{fs, io};

use artfs::auth::Role;
use common::api::{free_addr, key, token};
use common::engine::Engine;
use common::{code, is_mounted, stop_daemon};

/// A daemon serving a mount and the API, its log kept in a file.
struct Daemon {
    backing: PathBuf,
    mnt: PathBuf,
    log: PathBuf,
    base: String,
    http: reqwest::blocking::Client,
    child: Option<Child>,
    _db: common::engine::StoreDb,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("artfs-test-")
            .tempdir()
            .unwrap();
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        fs::create_dir_all(&backing).unwrap();
        fs::create_dir_all(&mnt).unwrap();
        let log = dir.path().join("daemon.log");
        let addr = free_addr();
        let db = common::engine::new_store_db("errors");
        let mut child = Command::new(common::bin())
            .arg("mount")
            .arg(&backing)
            .arg(&mnt)
            .args(&db.args)
            .args(["--allow-other", "--api", &addr, "--api-uid", "0"])
            .arg("--jwt-key")
            .arg(&key().public)
            .args(args)
            // Failed requests (logged by the error type) down to debug.
            .env("ARTFS_LOG", "warn,artfs::types::error=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn artfs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mnt) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "artfs exited with {st}: {}",
                    fs::read_to_string(&log).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        let d = Daemon {
            backing,
            mnt,
            log,
            base: format!("http://{addr}"),
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            child: Some(child),
            _db: db,
            _dir: dir,
        };
        while d.http.get(d.url("/health/live")).send().is_err() {
            assert!(Instant::now() < deadline, "the API never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The value of the series `series` (name and labels) in `/metrics`;
    /// 0 when absent.
    fn counter(&self, series: &str) -> u64 {
        let text = self.http.get(self.url("/metrics")).send().unwrap();
        let text = text.text().unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |v| v.parse().unwrap())
    }

    /// The daemon's log lines about failed requests that contain every
    /// one of `parts`.
    fn failures(&self, parts: &[&str]) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("request failed") && parts.iter().all(|p| l.contains(p)))
            .map(String::from)
            .collect()
    }

    /// The one log line about failed requests containing `parts` (the
    /// log is written as the reply goes, so it may lag a little).
    fn failure(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.failures(parts);
            match lines.len() {
                1 => return lines.into_iter().next().unwrap(),
                0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => panic!(
                    "expected one failure logged with {parts:?}, got {lines:#?}\nlog:\n{}",
                    fs::read_to_string(&self.log).unwrap()
                ),
            }
        }
    }

    /// Arm fail points in the daemon (test builds have them).
    fn arm(&self, points: &str) {
        let file = self.backing.join(".artfs/failpoints");
        let armed = self.backing.join(".artfs/failpoints.armed");
        let _ = fs::remove_file(&armed);
        fs::write(&file, points).unwrap();
        let pid = self.child.as_ref().unwrap().id() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !armed.exists() {
            assert!(Instant::now() < deadline, "fail points were not armed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_daemon(child, &self.mnt, Duration::from_secs(10));
        }
    }
}

fn fuse_errors(op: &str, errno: &str) -> String {
    format!("artfs_fuse_errors_total{{op=\"{op}\",errno=\"{errno}\"}}")
}

fn api_errors(method: &str, route: &str, status: u16, errno: &str) -> String {
    format!(
        "artfs_api_errors_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\",errno=\"{errno}\"}}"
    )
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// setxattr(2) with `flags`: 0 or the errno.
fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> i32 {
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::setxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    code(if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    })
}

/// getxattr(2) into a buffer of `size` bytes: 0 or the errno.
fn getxattr_into(p: &Path, name: &str, size: usize) -> i32 {
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings and buffer.
    let rc =
        unsafe { libc::getxattr(cpath(p).as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    code(if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    })
}

#[test]
fn fuse_error_replies_are_counted_by_operation_and_errno_and_logged_once() {
    common::engine::every_engine(|| {
        let d = Daemon::start(&[]);
        // ENOENT: one lookup, one debug line naming the parent and the name.
        assert_eq!(code(fs::metadata(d.path("no-such-file"))), libc::ENOENT);
        assert_eq!(d.counter(&fuse_errors("lookup", "ENOENT")), 1);
        let line = d.failure(&["path=\"no-such-file\""]);
        for part in [
            " DEBUG ",
            "op=\"lookup\"",
            "ino=1 ",
            "errno=\"ENOENT\"",
            "reply=ENOENT",
        ] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
        // EEXIST: an attribute created twice (a name made twice is refused
        // by the kernel itself, from its own dentry).
        fs::write(d.path("f"), b"x").unwrap();
        assert_eq!(
            setxattr(&d.path("f"), "user.a", b"1", libc::XATTR_CREATE),
            0
        );
        assert_eq!(
            setxattr(&d.path("f"), "user.a", b"2", libc::XATTR_CREATE),
            libc::EEXIST
        );
        assert_eq!(d.counter(&fuse_errors("setxattr", "EEXIST")), 1);
        let line = d.failure(&["op=\"setxattr\"", "errno=\"EEXIST\""]);
        assert!(line.contains(" DEBUG "), "{line}");
        // ENAMETOOLONG: a name of 256 bytes.
        let long = "n".repeat(256);
        assert_eq!(code(fs::metadata(d.path(&long))), libc::ENAMETOOLONG);
        assert_eq!(d.counter(&fuse_errors("lookup", "ENAMETOOLONG")), 1);
        d.failure(&["errno=\"ENAMETOOLONG\"", &format!("path=\"{long}\"")]);
        // An attribute larger than the caller's buffer: ERANGE (a value over
        // 64 KiB is E2BIG from the kernel itself, which never asks artfs).
        assert_eq!(getxattr_into(&d.path("f"), "user.a", 1), 0);
        assert_eq!(setxattr(&d.path("f"), "user.big", &[7u8; 100], 0), 0);
        assert_eq!(getxattr_into(&d.path("f"), "user.big", 10), libc::ERANGE);
        assert_eq!(d.counter(&fuse_errors("getxattr", "ERANGE")), 1);
        d.failure(&["op=\"getxattr\"", "errno=\"ERANGE\""]);
        // Nothing was counted that did not fail.
        assert_eq!(d.counter(&fuse_errors("setxattr", "ENOENT")), 0);
        assert_eq!(d.counter(&fuse_errors("lookup", "EEXIST")), 0);
    });
}

#[test]
fn a_read_only_store_refuses_with_erofs_logged_at_info() {
    common::engine::every_engine(|| {
        let d = Daemon::start(&["--mode", "ro"]);
        assert_eq!(code(fs::create_dir(d.path("new"))), libc::EROFS);
        assert_eq!(d.counter(&fuse_errors("mkdir", "EROFS")), 1);
        let line = d.failure(&["op=\"mkdir\"", "path=\"new\""]);
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.contains("errno=\"EROFS\""), "{line}");
    });
}

#[test]
fn api_error_responses_are_counted_by_route_status_and_errno() {
    common::engine::every_engine(|| {
        let d = Daemon::start(&[]);
        let user = token("alice", Role::User);
        let fs_route = "/api/v1/fs/{*path}";
        // A core error: ENOENT, 404, logged at debug with the route and path.
        let r = d
            .http
            .get(d.url("/api/v1/fs/missing.txt"))
            .bearer_auth(&user);
        assert_eq!(r.send().unwrap().status(), 404);
        assert_eq!(d.counter(&api_errors("GET", fs_route, 404, "ENOENT")), 1);
        let line = d.failure(&["path=\"/api/v1/fs/missing.txt\""]);
        for part in [
            " DEBUG ",
            "op=\"GET /api/v1/fs/{*path}\"",
            "errno=\"ENOENT\"",
            "reply=404",
        ] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
        // A refusal of the door itself: no token.
        let r = d.http.get(d.url("/api/v1/fs/missing.txt")).send().unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(d.counter(&api_errors("GET", fs_route, 401, "none")), 1);
        // An oversize attribute value through the API.
        fs::write(d.path("f"), b"x").unwrap();
        let big = "v".repeat(70 * 1024);
        let r = d
            .http
            .patch(d.url("/api/v1/meta/f"))
            .bearer_auth(&user)
            .json(&serde_json::json!({ "custom_attributes": { "big": big } }))
            .send()
            .unwrap();
        assert_eq!(r.status(), 400);
        let meta_route = "/api/v1/meta/{*path}";
        assert_eq!(d.counter(&api_errors("PATCH", meta_route, 400, "none")), 1);
        let line = d.failure(&["op=\"PATCH /api/v1/meta/{*path}\""]);
        assert!(line.contains("larger than 64 KiB"), "{line}");
    });
}

#[test]
fn a_database_failure_is_logged_at_error_with_its_code_and_cause() {
    common::engine::every_engine(|| {
        let d = Daemon::start(&[]);
        // Every lookup that reaches the database now fails in SQLite itself.
        d.arm("meta::lookup=return");
        assert_eq!(code(fs::metadata(d.path("lost"))), libc::EIO);
        assert_eq!(d.counter(&fuse_errors("lookup", "EIO")), 1);
        let line = d.failure(&["path=\"lost\""]);
        // The engine's own code and words: SQLITE_ERROR, or PostgreSQL's
        // SQLSTATE for an undefined table.
        let (db_code, words) = match common::engine::current() {
            Engine::Sqlite | Engine::S3 => ("code=\"1\"", "no such table: fail_point_meta_lookup"),
            Engine::Postgres => (
                "code=\"42P01\"",
                "relation \"fail_point_meta_lookup\" does not exist",
            ),
        };
        for part in [" ERROR ", "op=\"lookup\"", "errno=\"EIO\"", db_code, words] {
            assert!(line.contains(part), "{part} missing: {line}");
        }
        // The HTTP door: a 500, logged the same way.
        let user = token("alice", Role::User);
        let r = d.http.get(d.url("/api/v1/fs/gone")).bearer_auth(&user);
        assert_eq!(r.send().unwrap().status(), 500);
        let route = "/api/v1/fs/{*path}";
        assert_eq!(d.counter(&api_errors("GET", route, 500, "EIO")), 1);
        let line = d.failure(&["path=\"/api/v1/fs/gone\""]);
        assert!(line.contains(" ERROR "), "{line}");
        assert!(line.contains(db_code), "{line}");
        d.arm("meta::lookup=off");
        fs::write(d.path("back"), b"ok").unwrap();
        assert_eq!(fs::read(d.path("back")).unwrap(), b"ok");
    });
}
