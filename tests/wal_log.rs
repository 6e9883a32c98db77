//! The intent log's rows (issue 3): every mutation through the mount
//! leaves one, with UTC times, the caller's uid and a status that ends
//! settled; settled rows are pruned by age and count.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use artfs::meta::sqlite::SqliteStore;
use artfs::meta::{Batch, MetaStore};
use artfs::types::journal::{Op, Record, Retention, Status};
use artfs::types::Timestamp;
use common::Mount;

#[derive(Debug)]
struct Row {
    op: String,
    status: String,
    file_id: Option<String>,
    started: String,
    completed: Option<String>,
    user: Option<String>,
}

/// The log rows of `m`'s store, oldest first (on either engine).
fn rows(m: &Mount) -> Vec<Row> {
    // One text column per row: fields joined by a unit separator, NULL as
    // an empty field marked by a leading `-` (values are never empty).
    let field = |c: &str| format!("coalesce('+' || {c}, '-')");
    let sql = format!(
        "SELECT {} FROM {{p}}_wal ORDER BY seq",
        [
            "operation_type",
            "status",
            "file_id",
            "started_at",
            "completed_at",
            "user_id"
        ]
        .map(field)
        .join(" || '|' || ")
    );
    let opt = |f: &str| f.strip_prefix('+').map(str::to_string);
    m.query(&sql)
        .iter()
        .map(|line| {
            let f: Vec<&str> = line.split('|').collect();
            assert_eq!(f.len(), 6, "{line}");
            Row {
                op: opt(f[0]).unwrap(),
                status: opt(f[1]).unwrap(),
                file_id: opt(f[2]),
                started: opt(f[3]).unwrap(),
                completed: opt(f[4]),
                user: opt(f[5]),
            }
        })
        .collect()
}

#[test]
fn every_mutation_leaves_a_settled_row_with_utc_times() {
    common::engine::every_engine(|| {
        // Without the trash, an unlink of a last name reclaims the object.
        let mut m = Mount::with_args(&["--trash-days", "0"]);
        let mnt = m.mnt.clone();
        let p = |s: &str| mnt.join(s);
        fs::create_dir(p("d")).unwrap();
        fs::write(p("d/f"), b"x").unwrap();
        // The kernel releases the create's handle asynchronously; while it is
        // open its intent covers the next writer, which then logs no row of
        // its own. A remount makes sure it is gone.
        m.remount();
        let mut f = fs::OpenOptions::new().append(true).open(p("d/f")).unwrap();
        f.write_all(b"yz").unwrap();
        drop(f);
        nix::unistd::truncate(&p("d/f"), 1).unwrap();
        fs::set_permissions(p("d/f"), fs::Permissions::from_mode(0o600)).unwrap();
        xattr_set(&p("d/f"), "user.k", b"v");
        xattr_remove(&p("d/f"), "user.k");
        fs::hard_link(p("d/f"), p("d/g")).unwrap();
        std::os::unix::fs::symlink("f", p("d/s")).unwrap();
        nix::unistd::mkfifo(
            &p("d/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        fs::rename(p("d/g"), p("d/h")).unwrap();
        fs::remove_file(p("d/h")).unwrap();
        fs::remove_file(p("d/f")).unwrap();
        fs::remove_file(p("d/s")).unwrap();
        fs::remove_file(p("d/fifo")).unwrap();
        fs::remove_dir(p("d")).unwrap();
        m.unmount();

        let rows = rows(&m);
        let ops: Vec<&str> = rows.iter().map(|r| r.op.as_str()).collect();
        for want in [
            "mkdir",
            "create",
            "write",
            "truncate",
            "setattr",
            "xattr_set",
            "xattr_remove",
            "link",
            "symlink",
            "mknod",
            "rename",
            "unlink",
            "rmdir",
            "reserve",
            "reclaim",
        ] {
            assert!(ops.contains(&want), "no {want} row in {ops:?}");
        }
        for r in &rows {
            assert_eq!(
                r.status, "committed",
                "{r:?} not settled after a clean unmount"
            );
            assert!(r.started.ends_with('Z'), "{r:?}");
            assert!(
                r.completed.as_deref().is_some_and(|c| c.ends_with('Z')),
                "{r:?}"
            );
            if !matches!(r.op.as_str(), "reserve" | "reclaim" | "sidecars") {
                assert!(r.file_id.is_some(), "{r:?}");
            }
            if !matches!(
                r.op.as_str(),
                "reserve" | "reclaim" | "sidecars" | "xattr_set" | "xattr_remove"
            ) {
                assert_eq!(r.user.as_deref(), Some("0"), "{r:?}");
            }
        }
    });
}

fn xattr_set(path: &std::path::Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::setxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

fn xattr_remove(path: &std::path::Path, name: &str) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings.
    let rc = unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
}

/// Times are UTC whatever the local zone: the daemon under a UTC+3 zone
/// writes the same instants (within the test's run) as `Z` times.
#[test]
fn times_are_utc_under_a_non_utc_zone() {
    common::engine::every_engine(|| {
        let mut m = Mount::prepared(&[], |_| {});
        m.unmount();
        // Remount under Moscow time.
        m.try_mount(&[("TZ", "Europe/Moscow")]).unwrap();
        let before = Timestamp::now();
        fs::write(m.path("a"), b"1").unwrap();
        m.unmount();
        let after = Timestamp::now();
        let rows = rows(&m);
        let create = rows.iter().find(|r| r.op == "create").unwrap();
        let t = artfs::types::journal::parse_rfc3339(&create.started).unwrap();
        assert!(
            t >= before && t <= after,
            "started_at {} is not the UTC instant of the create",
            create.started
        );
    });
}

#[test]
fn settled_rows_are_pruned_by_age_and_count_failed_ones_kept_longer() {
    common::engine::every_engine(|| {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = dir.path().join("meta.db");
        let store = SqliteStore::open(db.to_str().unwrap(), "artfs", rt.handle().clone()).unwrap();
        let day = 24 * 3600 * 1_000_000_000i64;
        let now = Timestamp::now();
        let mut batch = Batch::default();
        let mut add = |age_days: i64, status: Status| {
            let mut r = Record::new(Op::Mkdir, status, None, serde_json::json!({}));
            r.started_at = Timestamp(now.0 - age_days * day);
            r.completed_at = Some(r.started_at);
            batch.journal.push(r);
        };
        for _ in 0..3 {
            add(10, Status::Committed); // past the age limit
        }
        for _ in 0..5 {
            add(1, Status::Committed); // young, but over the count limit
        }
        add(30, Status::Failed); // kept: failures stay 90 days
        add(100, Status::RolledBack); // past even that
        add(100, Status::Pending); // never pruned
        store.apply(&batch).unwrap();
        let keep = Retention {
            committed_max_rows: 2,
            committed_max_age: Duration::from_secs(7 * 24 * 3600),
            failed_max_age: Duration::from_secs(90 * 24 * 3600),
        };
        // In chunks of 4: 4, then 3, then nothing.
        assert_eq!(store.prune_journal(&keep, 4).unwrap(), 4);
        assert_eq!(store.prune_journal(&keep, 4).unwrap(), 3);
        assert_eq!(store.prune_journal(&keep, 4).unwrap(), 0);
        let counts: std::collections::BTreeMap<String, u64> =
            store.journal_counts().unwrap().into_iter().collect();
        assert_eq!(counts.get("committed"), Some(&2));
        assert_eq!(counts.get("failed"), Some(&1));
        assert_eq!(counts.get("rolled_back"), None);
        assert_eq!(counts.get("pending"), Some(&1));
        store.close();
    });
}

/// Pruning while files are written (issue 19). A store whose log holds
/// more settled rows than it keeps prunes them a chunk at a time in the
/// writer's first rounds after mounting, between the commits of writers
/// that hold new files open (their `create` intents pending). Killed then,
/// the next mount finds those intents and settles them: every file synced
/// has the size and bytes written, nothing is left pending, fsck clean.
#[test]
fn pruning_under_load_never_drops_a_row_still_needed() {
    common::engine::every_engine(|| {
        const KEEP: usize = 10;
        let mut m = Mount::with_args(&["--wal-keep-rows", &KEEP.to_string()]);
        // A row per file: over one prune chunk (2000) past the limit,
        // pruned in the first rounds of the next mount.
        for i in 0..2500 {
            fs::write(m.path(&format!("a{i}")), b"x").unwrap();
        }
        m.unmount();
        let settled = |m: &Mount| rows(m).iter().filter(|r| r.status != "pending").count();
        assert!(settled(&m) > 2000 + KEEP, "{} settled rows", settled(&m));
        m.mount();
        // Writers hold files open while the rounds prune; more creates
        // keep the writer busy meanwhile.
        let mut held = Vec::new();
        for i in 0..20usize {
            let mut f = fs::File::create(m.path(&format!("w{i}"))).unwrap();
            f.write_all(&vec![i as u8; 4096 * (i + 1)]).unwrap();
            // Durable, still open: only a crash's recovery can close it.
            f.sync_all().unwrap();
            held.push(f);
        }
        for i in 0..500 {
            fs::write(m.path(&format!("b{i}")), b"y").unwrap();
        }
        fs::File::open(m.path("b499")).unwrap().sync_all().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while settled(&m) > 1000 {
            assert!(
                std::time::Instant::now() < deadline,
                "never pruned: {} settled rows",
                settled(&m)
            );
            fs::write(m.path("tick"), b"t").unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        // The held files' `create` intents settle at their last close.
        let pending = rows(&m)
            .iter()
            .filter(|r| r.status == "pending" && r.op == "create")
            .count();
        assert!(
            pending >= 20,
            "the open files' intents went: {pending} left"
        );
        m.kill();
        drop(held);
        m.mount();
        for i in 0..20usize {
            let got = fs::read(m.path(&format!("w{i}"))).unwrap();
            assert_eq!(got, vec![i as u8; 4096 * (i + 1)], "w{i}");
        }
        assert_eq!(fs::read(m.path("a0")).unwrap(), b"x");
        assert_eq!(fs::read(m.path("b499")).unwrap(), b"y");
        m.unmount();
        m.assert_consistent();
        // Sidecar rewrites may wait for the next mount (deferred work);
        // nothing else may be left.
        let left: Vec<String> = rows(&m)
            .iter()
            .filter(|r| r.status == "pending" && r.op != "sidecars")
            .map(|r| r.op.clone())
            .collect();
        assert!(left.is_empty(), "recovery left rows pending: {left:?}");
    });
}
