//! A real mount on PostgreSQL: `artfs mount BACKING MNT --db postgres://...`
//! serves files, keeps them across a remount, and the offline commands
//! (fsck, search) read the same tables. (The whole FUSE suite on both
//! engines comes with the test helper that chooses the engine.)

mod common;

use std::io::Write;
use std::process::Command;

use common::pg::PgServer;
use common::{bin, Mount};

/// Run an offline command on the store: (exit code, output).
fn artfs(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .env("ARTFS_LOG", "warn")
        .output()
        .expect("run artfs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_store_mounts_and_remounts_on_postgresql() {
    let db = PgServer::shared().database("mount");
    let args = ["--db", db.url.as_str(), "--table-prefix", "mnt1"];
    let mut m = Mount::with_args(&args);
    std::fs::create_dir(m.path("docs")).unwrap();
    let mut f = std::fs::File::create(m.path("docs/README.gz")).unwrap();
    f.write_all(b"hello from postgres").unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::write(m.path("docs/old.txt"), b"x").unwrap();
    std::fs::rename(m.path("docs/old.txt"), m.path("new.txt")).unwrap();
    std::fs::hard_link(m.path("new.txt"), m.path("docs/link.txt")).unwrap();
    std::fs::remove_file(m.path("docs/link.txt")).unwrap();
    m.remount();
    assert_eq!(
        std::fs::read(m.path("docs/README.gz")).unwrap(),
        b"hello from postgres"
    );
    let mut names: Vec<String> = std::fs::read_dir(m.path("/"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"docs".to_string()), "{names:?}");
    assert!(names.contains(&"new.txt".to_string()), "{names:?}");
    assert_eq!(std::fs::read(m.path("new.txt")).unwrap(), b"x");
    m.unmount();

    let backing = m.backing.to_str().unwrap();
    let (code, out) = artfs(&[&["fsck", backing][..], &args[..]].concat());
    assert_eq!(code, 0, "fsck:\n{out}");
    let (code, out) = artfs(&[&["search", backing][..], &args[..], &["README.gz"][..]].concat());
    assert_eq!(code, 0, "search:\n{out}");
    assert!(out.contains("docs/README.gz"), "search:\n{out}");
    // The store is its prefix's tables: the default prefix in the same
    // database holds none.
    let (code, out) = artfs(&[&["fsck", backing][..], &["--db", db.url.as_str()][..]].concat());
    assert_ne!(code, 0, "another prefix holds no store:\n{out}");
}

/// The engine helper really moves a test's tables: on SQLite they are in
/// BACKING, on PostgreSQL nothing of them is (and commands need the
/// store's flags).
#[test]
fn every_engine_puts_the_tables_where_it_says() {
    use common::engine::{current, every_engine, Engine};
    let seen = std::sync::Mutex::new(Vec::new());
    every_engine(|| {
        let m = Mount::new();
        std::fs::write(m.path("f"), b"x").unwrap();
        let in_backing = m.backing.join(".artfs/meta.db").exists();
        assert_eq!(in_backing, current() == Engine::Sqlite, "{:?}", current());
        assert_eq!(m.store_args().is_empty(), current() == Engine::Sqlite);
        seen.lock().unwrap().push(current());
    });
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Engine::Sqlite, Engine::Postgres]
    );
}
