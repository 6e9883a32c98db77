//! Rebuild from sidecars (issue 4): a varied tree survives losing its
//! database: `artfs rebuild` from the attr.json sidecars alone gives back
//! the same stat and the same extended attributes for everything.

mod common;

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::Mount;

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    common::set_xattr(p, name, value).unwrap_or_else(|e| panic!("setxattr {name} on {p:?}: {e}"));
}

/// Every attribute of `p` (not following symlinks), name -> value.
fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(
        n >= 0,
        "listxattr {p:?}: {}",
        std::io::Error::last_os_error()
    );
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: valid C strings and buffer.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(
            len >= 0,
            "getxattr {:?} on {p:?}",
            String::from_utf8_lossy(name)
        );
        v.truncate(len as usize);
        out.insert(name.to_vec(), v);
    }
    out
}

#[derive(Debug, PartialEq)]
struct Seen {
    ino: u64,
    mode: u32,
    nlink: u64,
    uid: u32,
    gid: u32,
    size: u64,
    rdev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    target: Option<PathBuf>,
    /// `lsattr` of files and directories (chattr's flags).
    flags: Option<String>,
}

fn lsattr(p: &Path) -> String {
    let out = std::process::Command::new("lsattr")
        .arg("-d")
        .arg(p)
        .output()
        .unwrap();
    assert!(out.status.success(), "lsattr {p:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// lstat and attributes of everything under `root`, by relative path.
fn record(root: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                Seen {
                    ino: m.ino(),
                    mode: m.mode(),
                    nlink: m.nlink(),
                    uid: m.uid(),
                    gid: m.gid(),
                    size: m.size(),
                    rdev: m.rdev(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    ctime: (m.ctime(), m.ctime_nsec()),
                    xattrs: xattrs(&p),
                    target: m
                        .file_type()
                        .is_symlink()
                        .then(|| fs::read_link(&p).unwrap()),
                    flags: (m.is_file() || m.is_dir()).then(|| lsattr(&p)),
                },
            );
        }
    }
    out
}

fn build_tree(m: &Mount) {
    let p = |s: &str| m.path(s);
    fs::create_dir_all(p("a/b/c")).unwrap();
    fs::write(p("a/b/c/deep.txt"), b"deep content").unwrap();
    fs::write(p("a/file"), vec![7u8; 100_000]).unwrap();
    fs::hard_link(p("a/file"), p("a/b/hardlink")).unwrap();
    std::os::unix::fs::symlink("../file", p("a/b/link")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", p("dangling")).unwrap();
    nix::unistd::mkfifo(
        &p("a/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    let mut sparse = fs::File::create(p("sparse")).unwrap();
    sparse.seek(SeekFrom::Start(10 << 20)).unwrap();
    sparse.write_all(b"end").unwrap();
    drop(sparse);
    // Odd names: not UTF-8, 255 bytes, spaces and a newline.
    let bad = OsStr::from_bytes(b"caf\xe9 \xff");
    fs::write(m.mnt.join(bad), b"latin-1").unwrap();
    let long = "x".repeat(255);
    fs::write(p(&long), b"long").unwrap();
    fs::write(p("with space\nand newline"), b"odd").unwrap();
    fs::create_dir(p("empty dir")).unwrap();
    // Metadata: custom and archive attributes, owners, modes.
    setxattr(&p("a/file"), "user.project", b"apollo");
    setxattr(&p("a/file"), "user.binary", &[0, 159, 146, 150]);
    setxattr(&p("a/file"), "user.artstore.description", b"the main file");
    setxattr(&p("a/file"), "user.artstore.version", b"3");
    setxattr(&p("a/b/c"), "user.on-a-dir", b"yes");
    setxattr(&p("a/b/link"), "trusted.on-a-link", b"t");
    nix::unistd::chown(&p("a/b/c/deep.txt"), Some(1234.into()), Some(5678.into())).unwrap();
    fs::set_permissions(p("a/b/c/deep.txt"), fs::Permissions::from_mode(0o4751)).unwrap();
    fs::set_permissions(p("a/b"), fs::Permissions::from_mode(0o1777)).unwrap();
    // A removed file and a rename leave no trace.
    fs::write(p("gone"), b"x").unwrap();
    fs::remove_file(p("gone")).unwrap();
    fs::rename(p("a/b/c/deep.txt"), p("a/moved.txt")).unwrap();
    // chattr's flags.
    for (flag, path) in [
        ("+i", "a/moved.txt"),
        ("+a", "empty dir"),
        ("+dA", "sparse"),
    ] {
        let s = std::process::Command::new("chattr")
            .arg(flag)
            .arg(p(path))
            .status()
            .unwrap();
        assert!(s.success(), "chattr {flag} {path}");
    }
}

/// `artfs rebuild BACKING <store flags> ARGS`: (exit code, output).
fn rebuild(m: &Mount, args: &[&str]) -> (i32, String) {
    let out = m
        .command("rebuild")
        .args(args)
        .env("ARTFS_LOG", "warn")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), common::output_text(&out))
}

#[test]
fn losing_the_database_loses_nothing() {
    common::engine::every_engine(|| {
        // List the computed attributes too: they must come back as well.
        let mut m = Mount::with_args(&["--list-computed-xattrs"]);
        build_tree(&m);
        let before = record(&m.mnt);
        assert!(before.len() >= 12, "{before:?}");
        // The archive attributes are part of what must come back.
        let file_attrs = &before[Path::new("a/file")].xattrs;
        assert!(file_attrs.contains_key(&b"user.artstore.sha256"[..]));
        assert!(file_attrs.contains_key(&b"user.artstore.file_id"[..]));
        let before = record(&m.mnt); // the sha256 just computed is recorded now
        m.unmount();

        let (code, out) = rebuild(&m, &["--check"]);
        assert_eq!(code, 0, "sidecars and tables should agree:\n{out}");
        m.lose_tables();
        if m.bucket().is_some() {
            // On S3 the cache directory goes too: the bucket alone holds
            // what the rebuild needs.
            fs::remove_dir_all(&m.backing).unwrap();
        }
        let (code, out) = rebuild(&m, &[]);
        assert_eq!(code, 0, "rebuild failed:\n{out}");
        m.assert_consistent();
        m.mount();
        let after = record(&m.mnt);
        for (path, seen) in &before {
            assert_eq!(
                after.get(path),
                Some(seen),
                "{path:?} differs after rebuild"
            );
        }
        assert_eq!(before.len(), after.len());
        assert_eq!(
            fs::read(m.path("a/b/hardlink")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(fs::read(m.path("a/moved.txt")).unwrap(), b"deep content");
        // Writing after a rebuild allocates fresh inode numbers.
        fs::write(m.path("new"), b"n").unwrap();
        let new_ino = fs::metadata(m.path("new")).unwrap().ino();
        assert!(before.values().all(|s| s.ino != new_ino));
    });
}

#[test]
fn check_reports_orphans_both_ways_and_changes_nothing() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("a"), b"a").unwrap();
        fs::write(m.path("b"), b"b").unwrap();
        let ino_a = fs::metadata(m.path("a")).unwrap().ino();
        m.unmount();
        // The sidecar of `a` goes, and a damaged one appears (in BACKING,
        // or in the bucket of an S3 store).
        let b = m.backing.clone();
        let sidecar = b.join(format!(
            "objects/{:02x}/{:016x}.attr.json",
            ino_a & 0xff,
            ino_a
        ));
        let key = |ino: u64| format!("objects/{ino:016x}/attr.json");
        let sidecar_exists = || match m.bucket() {
            Some((bucket, prefix)) => bucket.get(&format!("{prefix}/{}", key(ino_a))).is_some(),
            None => sidecar.exists(),
        };
        assert!(sidecar_exists());
        match m.bucket() {
            Some((bucket, prefix)) => {
                bucket.delete(&format!("{prefix}/{}", key(ino_a)));
                bucket.put(&format!("{prefix}/{}", key(0xee)), b"{ not json");
            }
            None => {
                fs::remove_file(&sidecar).unwrap();
                fs::write(
                    b.join("objects/ee/00000000000000ee.attr.json"),
                    b"{ not json",
                )
                .unwrap();
            }
        }
        let (code, out) = rebuild(&m, &["--check"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!("rows without sidecar: inode {ino_a}")),
            "{out}"
        );
        assert!(out.contains("unusable sidecar"), "{out}");
        assert!(!sidecar_exists(), "--check must not write");
        // The mount still works and serves the file.
        m.mount();
        assert_eq!(fs::read(m.path("a")).unwrap(), b"a");
    });
}

#[test]
fn rebuild_refuses_a_mounted_store() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let (code, out) = rebuild(&m, &[]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("in use by another artfs process"), "{out}");
    });
}

#[test]
fn incremental_rebuild_adds_only_what_the_tables_lack() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir(m.path("d")).unwrap();
        fs::write(m.path("d/lost"), b"lost row").unwrap();
        fs::write(m.path("kept"), b"kept row").unwrap();
        let lost = fs::metadata(m.path("d/lost")).unwrap().ino();
        m.unmount();
        // Lose one file's rows (inode, name, attributes) from the tables.
        m.sql(&format!(
            "DELETE FROM {{p}}_inodes WHERE ino = {lost}; DELETE FROM {{p}}_dentries WHERE ino = {lost}; \
             UPDATE {{p}}_config SET used_bytes = used_bytes - 8, file_count = file_count - 1;"
        ));
        let (code, out) = rebuild(&m, &["--check"]);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!("sidecar without rows: inode {lost}")),
            "{out}"
        );
        let (code, out) = rebuild(&m, &["--incremental"]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("rebuilt 1 inodes, 1 entries"), "{out}");
        m.assert_consistent();
        m.mount();
        assert_eq!(fs::read(m.path("d/lost")).unwrap(), b"lost row");
        assert_eq!(fs::read(m.path("kept")).unwrap(), b"kept row");
        assert_eq!(fs::metadata(m.path("d/lost")).unwrap().ino(), lost);
    });
}

/// Two sidecars claiming one file id (a file and its sidecar copied by
/// hand inside BACKING): the rebuild gives the id to the lower inode,
/// reports the other by path and exits 1, and never merges them.
#[test]
fn a_file_id_on_two_sidecars_stays_with_one_file_and_is_reported() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("a"), b"alpha").unwrap();
        fs::write(m.path("b"), b"beta").unwrap();
        let ia = fs::metadata(m.path("a")).unwrap().ino();
        let ib = fs::metadata(m.path("b")).unwrap().ino();
        assert!(ia < ib);
        m.unmount();
        let doc = |ino| -> serde_json::Value {
            serde_json::from_slice(&m.sidecar_bytes(ino).expect("a sidecar")).unwrap()
        };
        let id = doc(ia)["file_id"].as_str().unwrap().to_string();
        let mut twin = doc(ib);
        twin["file_id"] = serde_json::Value::String(id.clone());
        m.set_sidecar_bytes(ib, &serde_json::to_vec(&twin).unwrap());

        m.lose_tables();
        let (code, out) = rebuild(&m, &[]);
        assert_eq!(code, 1, "a skipped sidecar is reported:\n{out}");
        assert!(
            out.contains(&format!("file id {id} is also inode {ia}")),
            "{out}"
        );
        m.mount();
        assert_eq!(fs::read(m.path("a")).unwrap(), b"alpha");
        assert_eq!(
            common::get_xattr(&m.path("a"), "user.artstore.file_id"),
            Some(id.into_bytes()),
            "the lower inode keeps the id"
        );
        assert!(!m.path("b").exists(), "the twin is not served");
    });
}
