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
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};

use common::cluster::{write_synced, Node};
use common::pg::{PgDatabase, PgServer};

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
    let mut b = Node::beside(&a, &[]);
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
    a.kill9();
    // Its lease is still fresh, but its process is gone from this host:
    // taken at once, and recovery runs first.
    let mut b = Node::beside(&a, &[]);
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

    let mut b = Node::beside(&a, &[]);
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
