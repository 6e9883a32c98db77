//! `artfs db copy`: a store's metadata moves from SQLite to PostgreSQL
//! and back without a rebuild; the copy serves the same tree (inode
//! numbers, readdir order, attributes, links), and bad targets are
//! refused. Both engines by nature: it moves between them.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::pg::PgServer;
use common::{bin, getx, listx, setx, Mount};

/// Everything observable of the tree: path -> (ino, nlink, size, content
/// or link target, attributes), and each directory's listing order.
fn record(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let rel = d.strip_prefix(root).unwrap().display().to_string();
        out.insert(format!("{rel}/"), names.join(","));
        for n in names {
            let p = d.join(&n);
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.is_dir() {
                dirs.push(p.clone());
                String::new()
            } else if m.file_type().is_symlink() {
                fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            };
            let attrs: Vec<String> = if m.file_type().is_symlink() {
                Vec::new()
            } else {
                listx(&p)
                    .into_iter()
                    .filter(|a| a.starts_with("user."))
                    .map(|a| format!("{a}={:?}", getx(&p, &a).unwrap()))
                    .collect()
            };
            out.insert(
                p.strip_prefix(root).unwrap().display().to_string(),
                format!(
                    "ino {} nlink {} size {} mode {:o} [{what}] {attrs:?}",
                    m.ino(),
                    m.nlink(),
                    m.size(),
                    m.mode()
                ),
            );
        }
    }
    out
}

/// `artfs db copy BACKING ARGS`: (exit code, output).
fn copy(backing: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(["db", "copy"])
        .arg(backing)
        .args(args)
        .env("ARTFS_LOG", "warn")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), common::output_text(&out))
}

#[test]
fn a_store_moves_to_postgresql_and_back_unchanged() {
    // A SQLite store with a bit of everything.
    let mut m = Mount::with_args(&[]);
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("a/b/file"), b"content").unwrap();
    fs::hard_link(m.path("a/b/file"), m.path("a/link")).unwrap();
    std::os::unix::fs::symlink("b/file", m.path("a/sym")).unwrap();
    setx(&m.path("a/b/file"), "user.project", b"apollo").unwrap();
    setx(&m.path("a/b/file"), "user.artstore.description", b"moon").unwrap();
    for i in 0..30 {
        fs::write(m.path(&format!("a/many-{i}")), format!("{i}")).unwrap();
    }
    fs::remove_file(m.path("a/many-7")).unwrap();
    let before = record(&m.mnt);

    // Refused while mounted: the store lock is held.
    let pg = PgServer::shared().database("dbcopy");
    let (code, out) = copy(&m.backing, &["--to", &pg.url]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("in use"), "{out}");
    m.unmount();

    let (code, out) = copy(&m.backing, &["--to", &pg.url, "--to-prefix", "moved"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("consistent"), "{out}");
    assert!(out.contains("copied "), "{out}");
    // A second copy into the same tables is refused, nothing touched.
    let (code, out) = copy(&m.backing, &["--to", &pg.url, "--to-prefix", "moved"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("already hold store"), "{out}");
    // So is a copy onto the store's own tables, and one to no database.
    let own = format!("sqlite://{}", m.backing.join(".artfs/meta.db").display());
    let (code, out) = copy(&m.backing, &["--to", &own]);
    assert_ne!(code, 0, "{out}");
    let (code, out) = copy(&m.backing, &["--to", ""]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("unsupported database URL"), "{out}");

    // The PostgreSQL copy serves the same tree, and takes changes.
    m.use_tables(&["--db", &pg.url, "--table-prefix", "moved"]);
    m.mount();
    assert_eq!(record(&m.mnt), before);
    fs::write(m.path("a/on-pg"), b"pg").unwrap();
    let before = record(&m.mnt);
    m.unmount();
    m.assert_consistent();

    // And back to a SQLite file of its own.
    let dir = tempfile::tempdir().unwrap();
    let back = format!("sqlite://{}", dir.path().join("back.db").display());
    let (code, out) = Command::new(bin())
        .args(["db", "copy"])
        .arg(&m.backing)
        .args(m.store_args())
        .args(["--to", &back])
        .env("ARTFS_LOG", "warn")
        .output()
        .map(|o| (o.status.code().unwrap_or(-1), common::output_text(&o)))
        .unwrap();
    assert_eq!(code, 0, "{out}");
    // The prefix goes along unless --to-prefix says otherwise.
    assert!(out.contains("--table-prefix moved"), "{out}");
    m.use_tables(&["--db", &back, "--table-prefix", "moved"]);
    m.mount();
    assert_eq!(record(&m.mnt), before);
    assert_eq!(fs::read(m.path("a/on-pg")).unwrap(), b"pg");
    m.unmount();
    m.assert_consistent();
}
