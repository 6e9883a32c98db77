//! `artfs status`: what it shows of a fresh, a written, a checked and a
//! damaged store, mounted and not, on every engine; `--json`; a BACKING
//! that is no store.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::Mount;
use serde_json::Value;

/// `artfs status [--json]` on the store: (exit code, stdout, stderr).
fn status(m: &Mount, json: bool) -> (i32, String, String) {
    let mut c = m.command("status");
    if json {
        c.arg("--json");
    }
    let out = c.env("ARTFS_LOG", "warn").output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status_text(m: &Mount) -> String {
    let (code, out, err) = status(m, false);
    assert_eq!(code, 0, "{out}{err}");
    out
}

fn status_json(m: &Mount) -> Value {
    let (code, out, err) = status(m, true);
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The value of `key: value` in the human output.
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}:");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key:?} line in:\n{text}"))
        .trim()
}

fn run(m: &Mount, args: &[&str]) -> (i32, String) {
    let out = m
        .command(args[0])
        .args(&args[1..])
        .env("ARTFS_LOG", "warn")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), common::output_text(&out))
}

#[test]
fn status_shows_the_store() {
    common::engine::every_engine(|| {
        let pg = common::engine::current() == common::engine::Engine::Postgres;
        let mut m = Mount::new();
        let pid = m.pid().unwrap();

        // Fresh and mounted: who serves it, nothing checked yet.
        let text = status_text(&m);
        let mounted = line(&text, "mounted");
        assert!(
            mounted.starts_with("yes") && mounted.contains(&format!("pid {pid}")),
            "{text}"
        );
        assert!(mounted.contains(&m.mnt.display().to_string()), "{text}");
        assert!(line(&text, "mode").starts_with("edit"), "{text}");
        assert_eq!(line(&text, "files"), "0");
        assert_eq!(line(&text, "capacity"), "unlimited");
        assert_eq!(line(&text, "last fsck"), "never");
        assert_eq!(line(&text, "last scrub"), "never");
        // Keys are aligned: every value starts in one column.
        let value_column = |l: &str| {
            let colon = l.find(':').unwrap();
            colon + 1 + l[colon + 1..].find(|c| c != ' ').unwrap()
        };
        let cols: Vec<usize> = text.lines().map(value_column).collect();
        assert!(cols.windows(2).all(|w| w[0] == w[1]), "{text}");
        if pg {
            let lease = line(&text, "writer lease");
            assert!(
                lease.starts_with("held by") && lease.contains(&format!("pid {pid}")),
                "{text}"
            );
        } else {
            assert!(!text.contains("writer lease"), "{text}");
        }

        // After writes: files and bytes.
        fs::write(m.path("a"), vec![7u8; 3000]).unwrap();
        fs::write(m.path("b"), vec![8u8; 1000]).unwrap();
        let ino = fs::metadata(m.path("a")).unwrap().ino();
        // Both hashes recorded (the hasher works after close).
        common::getx(&m.path("a"), "user.artstore.sha256").unwrap();
        common::getx(&m.path("b"), "user.artstore.sha256").unwrap();
        // Status shows committed state; the daemon commits in batches.
        fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let j = loop {
            let j = status_json(&m);
            if j["files"] == 2 && j["used_bytes"] == 4000 || std::time::Instant::now() > deadline {
                break j;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert_eq!(j["files"], 2, "{j}");
        assert_eq!(j["used_bytes"], 4000, "{j}");
        assert_eq!(j["mounted"], true, "{j}");
        assert_eq!(j["lock_pid"], pid, "{j}");
        assert_eq!(j["unhashed_files"], 0, "{j}");
        // Rows of operations still settling may be pending while mounted.
        assert!(j["log_pending"].is_u64(), "{j}");
        assert!(j["log_rows"].is_object(), "{j}");
        assert_eq!(j["engine"], if pg { "postgres" } else { "sqlite" });
        assert!(j["store_id"].is_string(), "{j}");
        assert!(j["last_fsck"].is_null() && j["last_scrub"].is_null(), "{j}");
        if pg {
            assert_eq!(j["lease"]["held"], true, "{j}");
            assert_eq!(j["lease"]["pid"], pid, "{j}");
            assert!(j["lease"]["beat_age_secs"].as_f64().unwrap() < 10.0, "{j}");
            assert!(j["lease"]["host"].as_str().is_some_and(|h| !h.is_empty()));
        } else {
            assert!(j["lease"].is_null(), "{j}");
        }

        // A read-only fsck of the mounted store is recorded too.
        let (code, out) = run(&m, &["fsck"]);
        assert_eq!(code, 0, "{out}");
        let j = status_json(&m);
        assert_eq!(j["last_fsck"]["outcome"], "clean", "{j}");
        assert!(
            j["last_fsck"]["summary"]
                .as_str()
                .unwrap()
                .contains("while mounted"),
            "{j}"
        );

        // Unmounted: says so; the lease is released.
        m.unmount();
        let text = status_text(&m);
        assert_eq!(line(&text, "mounted"), "no", "{text}");
        if pg {
            assert!(
                line(&text, "writer lease").starts_with("released"),
                "{text}"
            );
        }
        let j = status_json(&m);
        assert_eq!(j["mounted"], false, "{j}");
        assert!(j["lock_pid"].is_null() && j["mountpoint"].is_null(), "{j}");
        assert!(j["stale_mountpoint"].is_null(), "{j}");
        assert_eq!(j["files"], 2, "{j}");
        assert_eq!(j["used_bytes"], 4000, "{j}");
        assert_eq!(j["log_pending"], 0, "{j}");
        assert_eq!(line(&text, "pending log rows"), "0", "{text}");

        // Another prefix: refused, and no tables are made for it.
        let mut args = m.store_args();
        match args.iter().position(|a| a == "--table-prefix") {
            Some(i) => args[i + 1] = "other".into(),
            None => args.extend(["--table-prefix".into(), "other".into()]),
        }
        let out = std::process::Command::new(common::bin())
            .arg("status")
            .arg(&m.backing)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no tables with prefix \"other\""), "{err}");
        let tables = if pg {
            "SELECT count(*)::text FROM pg_class WHERE relname LIKE 'other%'"
        } else {
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'other%'"
        };
        assert_eq!(m.query(tables), ["0"]);

        // fsck and scrub results with their times.
        let (code, out) = run(&m, &["fsck"]);
        assert_eq!(code, 0, "{out}");
        let (code, out) = run(&m, &["scrub"]);
        assert_eq!(code, 0, "{out}");
        let text = status_text(&m);
        let fsck = line(&text, "last fsck");
        assert!(
            fsck.starts_with("clean at 20") && fsck.contains(" ago: checked "),
            "{text}"
        );
        assert!(!fsck.contains("while mounted"), "{text}");
        let scrub = line(&text, "last scrub");
        assert!(
            scrub.starts_with("clean at 20") && scrub.contains("verified 2 files"),
            "{text}"
        );
        let j = status_json(&m);
        for kind in ["last_fsck", "last_scrub"] {
            let c = &j[kind];
            assert_eq!(c["outcome"], "clean", "{j}");
            assert_eq!(c["problems"], 0, "{j}");
            assert!(c["finished_at"].as_str().unwrap().ends_with('Z'), "{j}");
            assert!(c["age_secs"].as_f64().unwrap() < 60.0, "{j}");
        }
        // --dry-run records nothing.
        let before = j["last_scrub"]["finished_at"].clone();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (code, out) = run(&m, &["scrub", "--dry-run"]);
        assert_eq!(code, 0, "{out}");
        assert_eq!(status_json(&m)["last_scrub"]["finished_at"], before);

        // A damaged store: its object cut short; both record problems.
        assert!(m.object_exists(ino), "no object of {ino}");
        m.cut_object(ino, 10);
        let (code, out) = run(&m, &["fsck"]);
        assert_eq!(code, 1, "{out}");
        let (code, out) = run(&m, &["scrub"]);
        assert_eq!(code, 1, "{out}");
        let j = status_json(&m);
        for kind in ["last_fsck", "last_scrub"] {
            assert_eq!(j[kind]["outcome"], "problems", "{j}");
            assert_eq!(j[kind]["problems"], 1, "{j}");
            assert!(
                j[kind]["summary"].as_str().unwrap().contains("first: "),
                "{j}"
            );
        }
        let text = status_text(&m);
        assert!(
            line(&text, "last fsck").starts_with("problems (1 problems) at"),
            "{text}"
        );

        // A killed daemon's mount: not mounted, and named as stale.
        m.mount();
        m.kill_only();
        let text = status_text(&m);
        let mounted = line(&text, "mounted");
        assert!(
            mounted.starts_with("no, but a dead daemon's mount remains at")
                && mounted.contains(&m.mnt.display().to_string()),
            "{text}"
        );
        let j = status_json(&m);
        assert_eq!(j["mounted"], false, "{j}");
        assert_eq!(j["stale_mountpoint"], m.mnt.display().to_string(), "{j}");
        m.clear_stale();
        assert!(status_json(&m)["stale_mountpoint"].is_null());
    });
}

#[test]
fn a_directory_that_is_no_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("status")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no artfs store"), "{err}");
    assert!(out.stdout.is_empty());
    // Nothing was created there.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    let out = std::process::Command::new(common::bin())
        .arg("status")
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not usable"), "{err}");
}
