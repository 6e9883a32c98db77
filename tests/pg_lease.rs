//! The writer's lease of a PostgreSQL store (src/meta/lease.rs): one
//! writer per store across machines. PostgreSQL only: a SQLite store lives
//! in one BACKING and its flock is the guard (tests/lifecycle_clean.rs).
//!
//! A second "node" is a second BACKING on this machine whose `objects`
//! are the first one's (shared content, as on a shared filesystem) and
//! whose `.artfs` (lock, staging) is its own, so the BACKING flock cannot
//! stand in for the lease.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use common::pg::{PgDatabase, PgServer};
use common::{bin, is_mounted, stop_daemon};

/// One daemon serving the store from its own BACKING and mount point.
struct Node {
    dir: tempfile::TempDir,
    db: Vec<String>,
    child: Option<Child>,
}

impl Node {
    /// The store's first node: a fresh BACKING.
    fn first(db: &PgDatabase) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("artfs-lease-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("backing")).unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        Node {
            dir,
            db: vec![
                "--db".into(),
                db.url.clone(),
                "--table-prefix".into(),
                "t".into(),
            ],
            child: None,
        }
    }

    /// Another node of `other`'s store (which must have been mounted once):
    /// the same content and store id, state of its own.
    fn beside(other: &Node) -> Node {
        let n = Node {
            dir: tempfile::Builder::new()
                .prefix("artfs-lease-")
                .tempdir()
                .unwrap(),
            db: other.db.clone(),
            child: None,
        };
        fs::create_dir_all(n.backing().join(".artfs")).unwrap();
        fs::create_dir(n.mnt()).unwrap();
        symlink(other.backing().join("objects"), n.backing().join("objects")).unwrap();
        fs::copy(
            other.backing().join(".artfs/store-id"),
            n.backing().join(".artfs/store-id"),
        )
        .unwrap();
        n
    }

    fn backing(&self) -> PathBuf {
        self.dir.path().join("backing")
    }
    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.mnt().join(rel)
    }
    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Start the daemon; Err(its log) when it exits instead of mounting.
    fn start(&mut self) -> Result<(), String> {
        let log = fs::File::create(self.dir.path().join("log")).unwrap();
        let child = Command::new(bin())
            .arg("mount")
            .arg(self.backing())
            .arg(self.mnt())
            .args(&self.db)
            .env("ARTFS_LOG", "info,fuser=error")
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(40);
        while !is_mounted(&self.mnt()) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exit {st}: {}", self.log()));
            }
            assert!(Instant::now() < deadline, "no mount: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Unmount and wait for a clean exit.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(self.mnt())
            .status()
            .unwrap();
        assert!(st.success());
        let st = child.wait().unwrap();
        assert!(st.success(), "{st}: {}", self.log());
    }

    /// `artfs SUB BACKING <store flags> ARGS`: (exit code, output).
    fn command(&self, sub: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new(bin())
            .arg(sub)
            .arg(self.backing())
            .args(&self.db)
            .args(args)
            .env("ARTFS_LOG", "warn")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), common::output_text(&out))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // A paused daemon must run again to exit.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            stop_daemon(child, &self.mnt(), Duration::from_secs(10));
        }
    }
}

fn write_synced(p: &Path, data: &[u8]) {
    let f = fs::File::create(p).unwrap();
    std::io::Write::write_all(&mut &f, data).unwrap();
    f.sync_all().unwrap();
}

/// The lease row as the database holds it: (holder is empty, pid).
fn lease_row(db: &PgDatabase) -> (bool, i64) {
    let rows = common::pg::query_lines(
        &db.url,
        "SELECT (holder = '')::text || ' ' || pid::text FROM t_lease WHERE id = 1",
    )
    .unwrap();
    let (free, pid) = rows[0].split_once(' ').unwrap();
    (free == "true", pid.parse().unwrap())
}

#[test]
fn a_second_writer_is_refused_with_who_holds_the_store() {
    let db = PgServer::shared().database("lease_refused");
    let mut a = Node::first(&db);
    a.start().unwrap();
    fs::write(a.path("f"), b"a").unwrap();
    let mut b = Node::beside(&a);
    let err = b.start().unwrap_err();
    let who = format!("in use by another artfs process (pid {} on host", a.pid());
    assert!(err.contains(&who), "{err}");
    // Exclusive offline commands ask for the lease too.
    let (code, out) = b.command("fsck", &["--repair"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&who), "{out}");
    // The refused node changed nothing.
    assert_eq!(fs::read(a.path("f")).unwrap(), b"a");
    let pid = i64::from(a.pid().as_raw());
    a.stop();
    // A clean unmount gives the lease up: the next writer need not wait.
    assert_eq!(lease_row(&db), (true, pid));
    b.start().unwrap();
    assert_eq!(fs::read(b.path("f")).unwrap(), b"a");
    b.stop();
}

#[test]
fn a_killed_writer_is_taken_over_and_its_work_recovered() {
    let db = PgServer::shared().database("lease_killed");
    let mut a = Node::first(&db);
    a.start().unwrap();
    write_synced(&a.path("kept"), b"synced before the kill");
    let mut child = a.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = nix::mount::umount2(&a.mnt(), nix::mount::MntFlags::MNT_DETACH);
    // Its lease is still fresh, but its process is gone from this host:
    // taken at once, and recovery runs first.
    let mut b = Node::beside(&a);
    b.start().unwrap();
    assert!(
        b.log().contains("took over the store's lease"),
        "{}",
        b.log()
    );
    assert_eq!(fs::read(b.path("kept")).unwrap(), b"synced before the kill");
    write_synced(&b.path("new"), b"b");
    b.stop();
    let (code, out) = b.command("fsck", &[]);
    assert_eq!(code, 0, "{out}");
}

/// SIGSTOP the writer (a pause, a partition), let another take the lapsed
/// lease, SIGCONT: the old writer commits nothing more and refuses
/// changes with EROFS, saying why in its log.
#[test]
fn a_paused_writer_loses_the_lease_and_can_never_commit_again() {
    let db = PgServer::shared().database("lease_paused");
    let mut a = Node::first(&db);
    a.start().unwrap();
    write_synced(&a.path("before"), b"a");
    kill(a.pid(), Signal::SIGSTOP).unwrap();

    let mut b = Node::beside(&a);
    let t0 = Instant::now();
    b.start().unwrap();
    // The documented bound: the lapse (6 s) plus a beat, and start-up.
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(
        b.log().contains("took over the store's lease"),
        "{}",
        b.log()
    );
    assert_eq!(fs::read(b.path("before")).unwrap(), b"a");
    write_synced(&b.path("from-b"), b"b");

    kill(a.pid(), Signal::SIGCONT).unwrap();
    // The old writer finds out at its next heartbeat or commit: a change
    // is refused, or made and never committed (its fsync fails).
    let late = a.path("late");
    match fs::File::create(&late).and_then(|f| f.sync_all()) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}: {}", a.log()),
        Ok(()) => panic!("a fenced writer made {late:?} durable: {}", a.log()),
    }
    assert_eq!(
        fs::write(a.path("later"), b"x").unwrap_err().raw_os_error(),
        Some(libc::EROFS)
    );
    assert!(
        a.log().contains("lost the store's writer lease"),
        "{}",
        a.log()
    );
    // It still reads, and still exits cleanly when unmounted.
    assert_eq!(
        fs::read(a.path("before")).unwrap_or_else(|e| panic!("{e}: {}", a.log())),
        b"a"
    );
    a.stop();

    // Nothing of the old writer's reached the tables.
    b.stop();
    b.start().unwrap();
    let mut names: Vec<String> = fs::read_dir(b.mnt())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["before", "from-b"]);
    b.stop();
}
