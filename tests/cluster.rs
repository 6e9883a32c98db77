//! One store served by several nodes (docs/CLUSTER.md): a writer, replicas
//! that follow its change feed, and a standby that takes over when the
//! writer stops. PostgreSQL only: the roles exist for tables several
//! machines share (a SQLite store refuses them, tested here too).
//!
//! Every node is a daemon with its own BACKING and mount point (its own
//! kernel cache: what cross-node invalidation must reach), sharing one
//! throwaway PostgreSQL and the first node's objects.

mod common;

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};

use common::cluster::{within, write_synced, Node};
use common::pg::PgServer;
use common::{get_xattr, set_xattr};

/// How long a change may take to show on a replica polling every 100 ms
/// (generous: this is a correctness bound, not a benchmark).
const SHOWS: Duration = Duration::from_secs(5);

const REPLICA: &[&str] = &["--replica", "--poll-ms", "100"];

fn errno(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Create `name` in the directory `dir` (an open descriptor), write
/// `data` and fsync it; Ok once durable.
fn write_synced_at(dir: &fs::File, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: a valid directory descriptor and C string; the returned
    // descriptor is owned by the File made from it.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let f = unsafe { fs::File::from_raw_fd(fd) };
    std::io::Write::write_all(&mut &f, data)?;
    f.sync_all()
}

fn read_or_none(p: &Path) -> Option<Vec<u8>> {
    fs::read(p).ok()
}

/// Wait until `check` holds on the replica, or fail with both logs.
fn shows(what: &str, w: &Node, r: &Node, check: impl FnMut() -> bool) {
    if within(SHOWS, check).is_none() {
        // What the feed says, to tell a missing row from a missed one.
        let feed = common::pg::query_lines(
            &w.db[1],
            "SELECT seq::text || ' ' || inos::text FROM t_changes ORDER BY seq",
        );
        panic!(
            "the replica never showed {what}\nfeed: {feed:?}\n--- writer:\n{}\n--- replica:\n{}",
            w.log(),
            r.log()
        );
    }
}

#[test]
fn a_replica_follows_the_writer_and_refuses_changes() {
    let db = PgServer::shared().database("cluster_follow");
    let mut w = Node::first(&db);
    w.start().unwrap();
    fs::write(w.path("f"), b"one").unwrap();
    fs::create_dir(w.path("d")).unwrap();
    let mut r = Node::beside(&w, REPLICA);
    r.start().unwrap();
    assert_eq!(fs::read(r.path("f")).unwrap(), b"one");

    // The replica caches what it served (kernel and daemon); changes on
    // the writer reach both.
    assert_eq!(fs::metadata(r.path("f")).unwrap().len(), 3);
    assert_eq!(errno(fs::metadata(r.path("new"))), Some(libc::ENOENT));
    fs::write(w.path("f"), b"one, longer").unwrap();
    fs::write(w.path("new"), b"n").unwrap();
    // (The content is the shared object's: it may show before the
    // writer commits the new size when the file is closed.)
    shows("the new content and size", &w, &r, || {
        read_or_none(&r.path("f")).as_deref() == Some(b"one, longer")
            && fs::metadata(r.path("f")).is_ok_and(|m| m.len() == 11)
    });
    shows("a name it had found absent", &w, &r, || {
        read_or_none(&r.path("new")).as_deref() == Some(b"n")
    });

    // Renames, attributes, permissions, removals.
    let ino = fs::metadata(r.path("f")).unwrap().ino();
    fs::rename(w.path("f"), w.path("d/g")).unwrap();
    shows("the rename", &w, &r, || {
        errno(fs::metadata(r.path("f"))) == Some(libc::ENOENT)
            && fs::metadata(r.path("d/g")).is_ok_and(|m| m.ino() == ino)
    });
    set_xattr(&w.path("d/g"), "user.colour", b"blue").unwrap();
    shows("the attribute", &w, &r, || {
        get_xattr(&r.path("d/g"), "user.colour").as_deref() == Some(b"blue")
    });
    let mut names: Vec<_> = fs::read_dir(r.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["g"]);
    fs::write(w.path("d/h"), b"h").unwrap();
    shows("the new entry in a listed directory", &w, &r, || {
        fs::read_dir(r.path("d")).unwrap().count() == 2
    });
    fs::set_permissions(
        w.path("d/g"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    shows("the mode", &w, &r, || {
        fs::metadata(r.path("d/g")).is_ok_and(|m| m.mode() & 0o777 == 0o600)
    });
    fs::remove_file(w.path("d/g")).unwrap();
    shows("the removal", &w, &r, || {
        errno(fs::metadata(r.path("d/g"))) == Some(libc::ENOENT)
    });

    // Every change through the replica is refused, and changes nothing.
    assert_eq!(errno(fs::write(r.path("x"), b"x")), Some(libc::EROFS));
    assert_eq!(errno(fs::create_dir(r.path("y"))), Some(libc::EROFS));
    assert_eq!(errno(fs::remove_file(r.path("new"))), Some(libc::EROFS));
    assert_eq!(
        errno(fs::rename(r.path("new"), r.path("renamed"))),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(set_xattr(&r.path("new"), "user.x", b"1")),
        Some(libc::EROFS)
    );
    assert_eq!(
        errno(fs::OpenOptions::new().append(true).open(r.path("new"))),
        Some(libc::EROFS)
    );
    assert_eq!(fs::read(w.path("new")).unwrap(), b"n");
    assert!(
        r.log().contains("following the store's writer"),
        "{}",
        r.log()
    );
    r.stop();
    w.stop();
    let (code, out) = w.command("fsck", &[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_replica_that_lost_track_drops_everything() {
    let db = PgServer::shared().database("cluster_lost");
    let mut w = Node::first(&db);
    w.start().unwrap();
    fs::write(w.path("f"), b"old").unwrap();
    let mut r = Node::beside(&w, REPLICA);
    r.start().unwrap();
    assert_eq!(fs::read(r.path("f")).unwrap(), b"old");
    // The replica is away (paused) while the writer changes f and the
    // feed rows naming it are pruned: back, it finds the gap and forgets
    // everything, its kernel's cache included.
    kill(r.pid(), Signal::SIGSTOP).unwrap();
    write_synced(&w.path("f"), b"new!");
    common::pg::execute(&db.url, "DELETE FROM t_changes").unwrap();
    kill(r.pid(), Signal::SIGCONT).unwrap();
    shows("the change behind the gap", &w, &r, || {
        fs::metadata(r.path("f")).is_ok_and(|m| m.len() == 4)
    });
    assert_eq!(fs::read(r.path("f")).unwrap(), b"new!");
    assert!(r.log().contains("dropping every cache"), "{}", r.log());
    r.stop();
    w.stop();
}

#[test]
fn a_sqlite_store_has_no_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("b"), dir.path().join("m"));
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mnt).unwrap();
    for role in ["--replica", "--standby"] {
        let out = std::process::Command::new(common::bin())
            .arg("mount")
            .arg(&backing)
            .arg(&mnt)
            .arg(role)
            .output()
            .unwrap();
        let text = common::output_text(&out);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains("postgres://"), "{text}");
        assert!(!common::is_mounted(&mnt));
    }
    // Nothing was made in BACKING.
    assert_eq!(fs::read_dir(&backing).unwrap().count(), 0);
}

/// kill -9 of the writer during a write loop, 20 times: the standby
/// takes over within the bound, every fsynced file and every committed
/// rename and unlink is there, and the store is consistent.
#[test]
fn a_standby_takes_over_from_a_killed_writer() {
    let db = PgServer::shared().database("cluster_standby");
    // The first node's BACKING holds the shared objects: it outlives
    // every node of the test.
    let mut first = Node::first(&db);
    first.start().unwrap();
    first.stop();
    let mut w = Node::beside(&first, &[]);
    w.start().unwrap();
    let mut s = Node::beside(&first, &["--standby", "--poll-ms", "100"]);
    s.start().unwrap();
    assert_eq!(
        errno(fs::write(s.path("early"), b"x")),
        Some(libc::EROFS),
        "a standby is read-only until it takes over"
    );
    let mut written = 0;
    for round in 0..20 {
        // Committed before the loop: a rename and an unlink.
        let keep = format!("keep-{round}");
        write_synced(&w.path(&keep), keep.as_bytes());
        write_synced(&w.path("gone"), b"x");
        fs::rename(w.path(&keep), w.path(&format!("moved-{round}"))).unwrap();
        fs::remove_file(w.path("gone")).unwrap();
        // fsync of the directory commits them.
        fs::File::open(w.mnt()).unwrap().sync_all().unwrap();
        // Killed while a loop writes and fsyncs files: every file whose
        // fsync returned must survive.
        // Names are opened relative to the mount's root directory, held
        // open: once the dead mount is detached, a path would reach the
        // empty directory beneath it instead of failing.
        let root = fs::File::open(w.mnt()).unwrap();
        let looping = std::thread::spawn(move || {
            let mut synced = Vec::new();
            for i in 0.. {
                let name = format!("r{round}-{i}");
                if write_synced_at(&root, &name, name.as_bytes()).is_err() {
                    break;
                }
                synced.push(name);
            }
            synced
        });
        std::thread::sleep(Duration::from_millis(100 + 37 * (round % 5)));
        w.kill9();
        let synced = looping.join().unwrap();
        written += synced.len();
        let took = within(Duration::from_secs(10), || {
            fs::write(s.path(&format!("after-{round}")), b"s").is_ok()
        });
        assert!(took.is_some(), "no takeover within 10 s: {}", s.log());
        assert!(
            s.log().contains("took over as the store's writer"),
            "{}",
            s.log()
        );
        for name in &synced {
            assert_eq!(
                fs::read(s.path(name)).unwrap_or_else(|e| panic!("{name}: {e}: {}", s.log())),
                name.as_bytes()
            );
        }
        assert_eq!(
            fs::read(s.path(&format!("moved-{round}"))).unwrap(),
            format!("keep-{round}").as_bytes()
        );
        assert_eq!(
            fs::metadata(s.path("gone")).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // The new writer's node goes on; a fresh standby joins it for the
        // next round.
        s.stop();
        w = Node::beside(&first, &[]);
        w.start().unwrap();
        s = Node::beside(&first, &["--standby", "--poll-ms", "100"]);
        s.start().unwrap();
    }
    assert!(written >= 20, "the loops wrote {written} files in all");
    s.stop();
    w.stop();
    let (code, out) = w.command("fsck", &[]);
    assert_eq!(code, 0, "{out}");
}

/// SIGSTOP the writer, let the standby take over once the lease lapses,
/// SIGCONT the old writer: it commits nothing and says so.
#[test]
fn a_paused_writer_is_fenced_by_its_standby() {
    let db = PgServer::shared().database("cluster_fence");
    let mut w = Node::first(&db);
    w.start().unwrap();
    write_synced(&w.path("before"), b"w");
    // The default takeover time (6 s of silence).
    let mut s = Node::beside(&w, &["--standby", "--poll-ms", "100"]);
    s.start().unwrap();
    kill(w.pid(), Signal::SIGSTOP).unwrap();
    let took = within(Duration::from_secs(30), || {
        fs::write(s.path("from-standby"), b"s").is_ok()
    });
    // The bound is 10 s; a loaded machine gets some slack here.
    let took = took.unwrap_or_else(|| panic!("no takeover: {}", s.log()));
    assert!(took < Duration::from_secs(15), "took {took:?}: {}", s.log());
    eprintln!("takeover of a paused writer took {took:?}");
    kill(w.pid(), Signal::SIGCONT).unwrap();
    let late = w.path("late");
    match fs::File::create(&late).and_then(|f| f.sync_all()) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}: {}", w.log()),
        Ok(()) => panic!("a fenced writer made {late:?} durable: {}", w.log()),
    }
    assert!(
        w.log().contains("lost the store's writer lease"),
        "{}",
        w.log()
    );
    w.stop();
    // The standby, now the writer, never saw the old writer's late file.
    shows("the state", &s, &s, || fs::read(s.path("before")).is_ok());
    assert_eq!(errno(fs::metadata(s.path("late"))), Some(libc::ENOENT));
    s.stop();
}

/// The tree under `root` as the writer and replicas must agree on it:
/// (path, kind, size, mode, content of files, `user.k`).
type Entry = (String, char, u64, u32, Option<Vec<u8>>, Option<Vec<u8>>);

fn snapshot(root: &Path) -> Vec<Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<Entry>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let kind = if m.is_dir() { 'd' } else { 'f' };
            let content = m.is_file().then(|| fs::read(&p).unwrap_or_default());
            out.push((
                rel,
                kind,
                if m.is_dir() { 0 } else { m.len() },
                m.mode(),
                content,
                get_xattr(&p, "user.k"),
            ));
            if m.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Random operations on the writer; after each, both replicas converge
/// on the writer's tree (names, kinds, sizes, modes, content, attributes)
/// within the staleness bound, and every change through them is refused.
#[test]
fn replicas_converge_on_the_writer_after_every_step() {
    use rand::{Rng, SeedableRng};
    let seed = std::env::var("ARTFS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let db = PgServer::shared().database("cluster_converge");
    let mut w = Node::first(&db);
    w.start().unwrap();
    let mut rs = [Node::beside(&w, REPLICA), Node::beside(&w, REPLICA)];
    for r in &mut rs {
        r.start().unwrap();
    }
    let dirs = ["", "a", "b", "a/c"];
    let names = ["x", "y", "z"];
    let pick = |rng: &mut rand::rngs::StdRng| {
        let d = dirs[rng.gen_range(0..dirs.len())];
        let n = names[rng.gen_range(0..names.len())];
        if d.is_empty() {
            n.to_string()
        } else {
            format!("{d}/{n}")
        }
    };
    for step in 0..60 {
        let p = pick(&mut rng);
        let q = pick(&mut rng);
        let (wp, wq) = (w.path(&p), w.path(&q));
        let what = match rng.gen_range(0..9) {
            0 => {
                let d = dirs[rng.gen_range(1..dirs.len())];
                let _ = fs::create_dir_all(w.path(d));
                format!("mkdir {d}")
            }
            1 | 2 => {
                let len = rng.gen_range(0..5000);
                let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                let _ = fs::write(&wp, &data);
                format!("write {p} ({len} bytes)")
            }
            3 => {
                let _ = fs::OpenOptions::new()
                    .append(true)
                    .open(&wp)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, b"more"));
                format!("append {p}")
            }
            4 => {
                let _ = fs::rename(&wp, &wq);
                format!("rename {p} {q}")
            }
            5 => {
                let _ = fs::remove_file(&wp);
                format!("unlink {p}")
            }
            6 => {
                let v = format!("v{}", rng.gen_range(0..100));
                let _ = set_xattr(&wp, "user.k", v.as_bytes());
                format!("setxattr {p} {v}")
            }
            7 => {
                let mode = [0o600, 0o644, 0o640][rng.gen_range(0..3)];
                let _ =
                    fs::set_permissions(&wp, std::os::unix::fs::PermissionsExt::from_mode(mode));
                format!("chmod {p} {mode:o}")
            }
            _ => {
                let _ = fs::OpenOptions::new()
                    .write(true)
                    .open(&wp)
                    .and_then(|f| f.set_len(rng.gen_range(0..100)));
                format!("truncate {p}")
            }
        };
        let want = snapshot(&w.mnt());
        for (i, r) in rs.iter().enumerate() {
            let mut got = Vec::new();
            let same = within(SHOWS, || {
                got = snapshot(&r.mnt());
                got == want
            });
            assert!(
                same.is_some(),
                "seed {seed}, step {step} ({what}): replica {i} differs\nwriter: {want:?}\nreplica: {got:?}\n{}",
                r.log()
            );
        }
        if step % 20 == 0 {
            assert_eq!(
                errno(fs::write(rs[0].path("nope"), b"x")),
                Some(libc::EROFS)
            );
        }
    }
    for r in &mut rs {
        r.stop();
    }
    w.stop();
}

/// The HTTP door of a replica serves reads and refuses changes (403),
/// and its metrics say what it is.
#[test]
fn a_replicas_api_reads_and_refuses_changes() {
    let db = PgServer::shared().database("cluster_api");
    let mut w = Node::first(&db);
    w.start().unwrap();
    fs::write(w.path("f"), b"from the writer").unwrap();
    let addr = common::api::free_addr();
    let key = common::api::key().public.to_str().unwrap().to_string();
    let mut r = Node::beside(
        &w,
        &[
            "--replica",
            "--poll-ms",
            "100",
            "--api",
            &addr,
            "--jwt-key",
            &key,
            "--api-uid",
            "0",
        ],
    );
    r.start().unwrap();
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let auth = format!(
        "Bearer {}",
        common::api::token("reader", artfs::auth::Role::Admin)
    );
    let url = |p: &str| format!("http://{addr}{p}");
    let got = client
        .get(url("/api/v1/fs/f"))
        .header("authorization", &auth)
        .send()
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().unwrap().as_ref(), b"from the writer");
    let put = client
        .put(url("/api/v1/fs/g"))
        .header("authorization", &auth)
        .body("x")
        .send()
        .unwrap();
    assert_eq!(put.status(), 403, "{:?}", put.text());
    let del = client
        .delete(url("/api/v1/fs/f"))
        .header("authorization", &auth)
        .send()
        .unwrap();
    assert_eq!(del.status(), 403);
    assert_eq!(fs::read(w.path("f")).unwrap(), b"from the writer");
    let cluster: serde_json::Value = client
        .get(url("/api/v1/cluster"))
        .header("authorization", &auth)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(cluster["this"]["role"], "replica", "{cluster}");
    assert!(cluster["nodes"].is_null(), "no --redis: {cluster}");
    let user = format!(
        "Bearer {}",
        common::api::token("someone", artfs::auth::Role::User)
    );
    let refused = client
        .get(url("/api/v1/cluster"))
        .header("authorization", &user)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    // Maintenance runs on the writer only.
    let job = client
        .post(url("/api/v1/maintenance/fsck"))
        .header("authorization", &auth)
        .send()
        .unwrap();
    assert_eq!(job.status(), 409);
    assert!(job.text().unwrap().contains("runs on the store's writer"));
    let metrics = client.get(url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("artfs_role{role=\"replica\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("artfs_feed_applied_row"), "{metrics}");
    r.stop();
    w.stop();
}

/// PostgreSQL restarted with a replica attached: the replica serves what
/// it has cached meanwhile, says it cannot read the feed, and follows the
/// writer again once the database is back.
#[test]
fn a_replica_rides_out_a_database_restart() {
    let server = PgServer::start();
    let db = server.database("cluster_pg_restart");
    let mut w = Node::first(&db);
    w.start().unwrap();
    fs::write(w.path("before"), b"cached").unwrap();
    let mut r = Node::beside(&w, REPLICA);
    r.start().unwrap();
    // Quiet first: the writer's hasher records the file's SHA-256 after
    // it is closed, a change the replica then forgets the file for.
    let hashed = within(SHOWS, || {
        get_xattr(&w.path("before"), "user.artstore.sha256").is_some()
    });
    assert!(hashed.is_some());
    shows("the hash", &w, &r, || {
        get_xattr(&r.path("before"), "user.artstore.sha256").is_some()
    });
    // And the feed still for a second (the writer's upkeep after a close
    // may commit more), then applied by the replica and cached.
    let head = || common::pg::query_lines(&db.url, "SELECT max(seq)::text FROM t_changes").unwrap();
    let mut last = head();
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = head();
        if now == last {
            break;
        }
        last = now;
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fs::read(r.path("before")).unwrap(), b"cached");

    server.stop();
    // Cached names and attributes answer; the content is the shared
    // object's.
    assert_eq!(fs::read(r.path("before")).unwrap(), b"cached");
    let said = within(SHOWS, || {
        r.log().contains("cannot read the writer's changes")
    });
    assert!(said.is_some(), "{}", r.log());
    server.restart();

    fs::write(w.path("after"), b"new").unwrap();
    shows("a change made after the restart", &w, &r, || {
        read_or_none(&r.path("after")).as_deref() == Some(b"new")
    });
    assert!(
        r.log().contains("reading the writer's changes again"),
        "{}",
        r.log()
    );
    r.stop();
    w.stop();
}

/// A follower never changes the schema: it refuses tables that are not
/// there, or that lack a migration it needs, and leaves them as they are.
#[test]
fn a_replica_never_creates_or_migrates_tables() {
    let db = PgServer::shared().database("cluster_schema");
    let mut w = Node::first(&db);
    w.start().unwrap();
    w.stop();
    let mut other = Node::beside(&w, REPLICA);
    other.db[3] = "zz".into();
    let err = other.start().unwrap_err();
    assert!(err.contains("mount the store's writer first"), "{err}");
    let zz = common::pg::query_lines(
        &db.url,
        "SELECT count(*)::text FROM pg_tables WHERE tablename LIKE 'zz\\_%'",
    )
    .unwrap();
    assert_eq!(zz, ["0"], "no table of the prefix was made");

    let applied =
        || common::pg::query_lines(&db.url, "SELECT count(*)::text FROM t_migrations").unwrap();
    common::pg::execute(&db.url, "DELETE FROM t_migrations WHERE version = 10").unwrap();
    let before = applied();
    let mut r = Node::beside(&w, REPLICA);
    let err = r.start().unwrap_err();
    assert!(err.contains("lack migration 10 (feed)"), "{err}");
    assert_eq!(applied(), before, "the replica migrated nothing");
}
