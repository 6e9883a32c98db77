//! The namespace rules where a slip loses data, against a real store (a
//! temporary BACKING, SQLite metadata, the writer running): rename over
//! files and directories, exchange, links and open unlinked files, names,
//! `/.trash`, the sticky bit. Every refused operation must leave the
//! namespace exactly as it was, in memory and in the store.

use super::*;
use crate::core::collector::{CollectorConfig, TRASH};
use crate::core::{open_store, StoreLock, StoreOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A store on a temporary BACKING. Field order matters: the store closes
/// (in `Drop`) before its lock goes, the runtime and the directory last.
struct Store {
    fs: Arc<Fs>,
    lock: Option<StoreLock>,
    trash: bool,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

fn open(dir: &std::path::Path, rt: &tokio::runtime::Runtime, trash: bool) -> (Arc<Fs>, StoreLock) {
    let mut opts = StoreOptions::new(dir);
    opts.collector = CollectorConfig {
        trash_days: if trash { 1.0 } else { 0.0 },
        ..CollectorConfig::default()
    };
    open_store(&opts, rt.handle().clone()).expect("open store")
}

impl Store {
    fn new(trash: bool) -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (fs, lock) = open(dir.path(), &rt, trash);
        Store {
            fs,
            lock: Some(lock),
            trash,
            rt,
            dir,
        }
    }

    /// Close cleanly and open again: what the store holds, not memory.
    fn reopen(&mut self) {
        self.fs.close();
        self.lock = None;
        let (fs, lock) = open(self.dir.path(), &self.rt, self.trash);
        self.fs = fs;
        self.lock = Some(lock);
    }

    fn mkdir(&self, parent: u64, name: &str) -> u64 {
        self.fs
            .create_node(&root(), parent, name.as_bytes(), NewNode::Dir, 0o755, 0)
            .expect("mkdir")
            .inode
            .ino
    }

    /// A regular file holding `content`, closed.
    fn file(&self, parent: u64, name: &str, content: &[u8]) -> u64 {
        let (attr, h) = self
            .fs
            .create(&root(), parent, name.as_bytes(), 0o644, 0, libc::O_RDWR)
            .expect("create");
        self.fs.write(h.fh, 0, content).expect("write");
        self.fs.release(h.fh).expect("release");
        attr.inode.ino
    }

    fn ino(&self, parent: u64, name: &str) -> u64 {
        self.fs
            .lookup(parent, name.as_bytes())
            .unwrap_or_else(|e| panic!("lookup {name}: {e}"))
            .inode
            .ino
    }

    fn absent(&self, parent: u64, name: &str) -> bool {
        match self.fs.lookup(parent, name.as_bytes()) {
            Err(e) => {
                assert_eq!(e.errno(), libc::ENOENT, "{name}: {e}");
                true
            }
            Ok(_) => false,
        }
    }

    fn content(&self, ino: u64) -> Vec<u8> {
        let h = self.fs.open(&root(), ino, libc::O_RDONLY).expect("open");
        let data = self.fs.read(h.fh, 0, 1 << 20).expect("read");
        self.fs.release(h.fh).expect("release");
        data
    }

    fn nlink(&self, ino: u64) -> u32 {
        self.fs.getattr(ino).expect("getattr").inode.nlink
    }

    /// Whether the object of `ino` is still in BACKING, once every change
    /// so far is committed (objects go after their inode's removal commits).
    fn object_exists(&self, ino: u64) -> bool {
        self.fs.wait_committed().expect("commit");
        // The writer removes released objects right after the commit, then
        // logs it; one more round makes sure that happened.
        self.fs.wait_committed().expect("commit");
        self.fs.objects.stat(ino).expect("stat").is_some()
    }

    /// Everything a name shows, by path (the trash included), plus what
    /// each file holds.
    fn tree(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        self.walk(ROOT_INO, "", &mut out);
        if let Ok(t) = self.fs.lookup(ROOT_INO, TRASH) {
            self.walk(t.inode.ino, "/.trash", &mut out);
        }
        let r = self.fs.getattr(ROOT_INO).unwrap().inode;
        out.insert("/".into(), describe(&r));
        out
    }

    fn walk(&self, dir: u64, path: &str, out: &mut BTreeMap<String, String>) {
        let mut offset = 0;
        loop {
            let page = self.fs.readdir(dir, offset, 7).expect("readdir");
            let Some(last) = page.last() else { break };
            offset = last.offset;
            for e in page {
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
                let a = self.fs.lookup(dir, &e.name).expect("listed name resolves");
                assert_eq!(a.inode.ino, e.ino, "{p}: listing and lookup agree");
                let mut d = describe(&a.inode);
                if a.inode.kind == Kind::File {
                    d.push_str(&format!(
                        " {:?}",
                        String::from_utf8_lossy(&self.content(e.ino))
                    ));
                }
                out.insert(p.clone(), d);
                if a.inode.kind.is_dir() {
                    self.walk(e.ino, &p, out);
                }
            }
        }
    }

    /// `op` fails with `errno` and changes nothing a lookup, a listing or
    /// a read shows (names, attributes, times, content).
    fn refused(&self, errno: i32, what: &str, op: impl FnOnce(&Fs) -> Result<()>) {
        let before = self.tree();
        match op(&self.fs) {
            Ok(()) => panic!("{what}: succeeded, expected errno {errno}"),
            Err(e) => assert_eq!(e.errno(), errno, "{what}: {e}"),
        }
        assert_eq!(self.tree(), before, "{what}: changed the namespace");
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.fs.close();
    }
}

fn describe(i: &Inode) -> String {
    format!(
        "ino={} {:?} nlink={} size={} perm={:o} uid={} parent={} mtime={} ctime={}",
        i.ino, i.kind, i.nlink, i.size, i.perm, i.uid, i.parent, i.mtime.0, i.ctime.0
    )
}

fn root() -> Caller {
    Caller::root()
}

fn user(uid: u32) -> Caller {
    Caller {
        uid,
        gid: uid,
        pid: 0,
        subject: None,
        groups: Some(Arc::from(Vec::<u32>::new())),
        grants: None,
    }
}

fn rename(fs: &Fs, p: u64, a: &str, q: u64, b: &str, mode: RenameMode) -> Result<()> {
    fs.rename(&root(), p, a.as_bytes(), q, b.as_bytes(), mode)
        .map(|_| ())
}

#[test]
fn rename_over_a_file_replaces_it_and_reclaims_it() {
    let s = Store::new(false);
    let a = s.file(ROOT_INO, "a", b"new");
    let b = s.file(ROOT_INO, "b", b"old");
    assert!(s.object_exists(b));
    rename(&s.fs, ROOT_INO, "a", ROOT_INO, "b", RenameMode::Replace).unwrap();
    assert!(s.absent(ROOT_INO, "a"));
    assert_eq!(s.ino(ROOT_INO, "b"), a);
    assert_eq!(s.content(a), b"new");
    assert_eq!(s.fs.getattr(b).unwrap_err().errno(), libc::ENOENT);
    assert!(
        !s.object_exists(b),
        "the replaced file's object is reclaimed"
    );
    assert!(s.object_exists(a));
    assert_eq!(s.fs.usage(), (3, 1), "one file of 3 bytes left");
}

#[test]
fn a_replaced_file_lives_on_while_it_has_another_name() {
    let mut s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    s.file(ROOT_INO, "a", b"new");
    let b = s.file(ROOT_INO, "b", b"precious");
    s.fs.link(&root(), b, d, b"b2").unwrap();
    assert_eq!(s.nlink(b), 2);
    rename(&s.fs, ROOT_INO, "a", ROOT_INO, "b", RenameMode::Replace).unwrap();
    assert_eq!(s.nlink(b), 1);
    assert_eq!(s.ino(d, "b2"), b);
    assert_eq!(s.content(b), b"precious");
    assert!(s.object_exists(b));
    // And after a restart.
    s.reopen();
    assert_eq!(s.nlink(b), 1);
    assert_eq!(s.content(b), b"precious");
    // The last name goes: now it is reclaimed.
    s.fs.unlink(&root(), d, b"b2").unwrap();
    assert_eq!(s.fs.getattr(b).unwrap_err().errno(), libc::ENOENT);
    assert!(!s.object_exists(b));
}

#[test]
fn hard_links_count_their_names() {
    let s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    let f = s.file(ROOT_INO, "f", b"x");
    assert_eq!(s.nlink(f), 1);
    assert_eq!(s.fs.link(&root(), f, d, b"g").unwrap().inode.nlink, 2);
    s.fs.link(&root(), f, ROOT_INO, b"h").unwrap();
    assert_eq!(s.nlink(f), 3);
    assert_eq!(s.ino(d, "g"), f);
    s.refused(libc::EEXIST, "link over a name", |fs| {
        fs.link(&root(), f, ROOT_INO, b"h").map(|_| ())
    });
    s.refused(libc::EPERM, "link a directory", |fs| {
        fs.link(&root(), d, ROOT_INO, b"dl").map(|_| ())
    });
    s.refused(libc::ENOTDIR, "link into a file", |fs| {
        fs.link(&root(), f, f, b"x").map(|_| ())
    });
    s.fs.unlink(&root(), ROOT_INO, b"f").unwrap();
    assert_eq!(s.nlink(f), 2);
    s.fs.unlink(&root(), d, b"g").unwrap();
    assert_eq!(s.nlink(f), 1);
    assert_eq!(s.content(f), b"x");
    s.fs.unlink(&root(), ROOT_INO, b"h").unwrap();
    assert_eq!(s.fs.getattr(f).unwrap_err().errno(), libc::ENOENT);
    assert!(!s.object_exists(f));
    // Directory link counts: 2 + one per subdirectory.
    assert_eq!(s.nlink(d), 2);
    let root_links = s.nlink(ROOT_INO);
    s.mkdir(d, "e");
    assert_eq!(s.nlink(d), 3);
    s.fs.rmdir(&root(), d, b"e").unwrap();
    assert_eq!(s.nlink(d), 2);
    assert_eq!(s.nlink(ROOT_INO), root_links);
}

#[test]
fn an_unlinked_open_file_keeps_its_content_until_release() {
    let mut s = Store::new(false);
    let (attr, h) =
        s.fs.create(&root(), ROOT_INO, b"f", 0o644, 0, libc::O_RDWR)
            .unwrap();
    let ino = attr.inode.ino;
    s.fs.write(h.fh, 0, b"still here").unwrap();
    let r = s.fs.open(&root(), ino, libc::O_RDONLY).unwrap();
    s.fs.unlink(&root(), ROOT_INO, b"f").unwrap();
    assert!(s.absent(ROOT_INO, "f"));
    assert_eq!(s.fs.getattr(ino).unwrap().inode.nlink, 0);
    assert!(s.object_exists(ino), "an open file's object stays");
    assert_eq!(s.fs.read(r.fh, 0, 100).unwrap(), b"still here");
    s.fs.write(h.fh, 10, b"!").unwrap();
    s.fs.release(h.fh).unwrap();
    // One handle left: still there.
    assert_eq!(s.fs.read(r.fh, 0, 100).unwrap(), b"still here!");
    assert!(s.object_exists(ino));
    s.fs.release(r.fh).unwrap();
    assert_eq!(s.fs.getattr(ino).unwrap_err().errno(), libc::ENOENT);
    assert!(!s.object_exists(ino), "reclaimed at the last release");
    s.reopen();
    assert_eq!(s.fs.getattr(ino).unwrap_err().errno(), libc::ENOENT);
    assert!(s.fs.meta.orphans().unwrap().is_empty());
}

#[test]
fn a_directory_cannot_move_into_its_own_subtree() {
    let s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    let e = s.mkdir(d, "e");
    let f = s.mkdir(e, "f");
    s.file(f, "data", b"keep");
    for (to, name) in [(d, "x"), (e, "x"), (f, "x")] {
        s.refused(libc::EINVAL, "move d below itself", |fs| {
            rename(fs, ROOT_INO, "d", to, name, RenameMode::Replace)
        });
    }
    s.refused(libc::EINVAL, "move e below itself", |fs| {
        rename(fs, d, "e", f, "e", RenameMode::NoReplace)
    });
    // Exchange too, either way round.
    s.refused(libc::EINVAL, "exchange d with its grandchild", |fs| {
        rename(fs, ROOT_INO, "d", e, "f", RenameMode::Exchange)
    });
    s.refused(libc::EINVAL, "exchange a grandchild with d", |fs| {
        rename(fs, e, "f", ROOT_INO, "d", RenameMode::Exchange)
    });
    // Renaming a directory onto itself does nothing.
    let before = s.tree();
    rename(&s.fs, ROOT_INO, "d", ROOT_INO, "d", RenameMode::Replace).unwrap();
    let mut after = s.tree();
    // (the root's times may move; nothing else)
    after.insert("/".into(), before["/"].clone());
    assert_eq!(after, before);
}

#[test]
fn rename_over_the_wrong_kind_is_refused() {
    let s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    s.mkdir(ROOT_INO, "full");
    let full = s.ino(ROOT_INO, "full");
    s.file(full, "inside", b"keep");
    let empty = s.mkdir(ROOT_INO, "empty");
    s.file(ROOT_INO, "f", b"file");
    s.refused(libc::ENOTEMPTY, "dir over a non-empty dir", |fs| {
        rename(fs, ROOT_INO, "d", ROOT_INO, "full", RenameMode::Replace)
    });
    s.refused(libc::ENOTDIR, "dir over a file", |fs| {
        rename(fs, ROOT_INO, "d", ROOT_INO, "f", RenameMode::Replace)
    });
    s.refused(libc::EISDIR, "file over a dir", |fs| {
        rename(fs, ROOT_INO, "f", ROOT_INO, "empty", RenameMode::Replace)
    });
    s.refused(libc::ENOENT, "a missing source", |fs| {
        rename(fs, ROOT_INO, "nope", ROOT_INO, "x", RenameMode::Replace)
    });
    s.refused(libc::ENOTDIR, "from a file as directory", |fs| {
        rename(
            fs,
            s.ino(ROOT_INO, "f"),
            "x",
            ROOT_INO,
            "y",
            RenameMode::Replace,
        )
    });
    // A directory over an empty one replaces it; link counts follow.
    let root_links = s.nlink(ROOT_INO);
    let dd = s.mkdir(d, "sub");
    rename(&s.fs, d, "sub", ROOT_INO, "empty", RenameMode::Replace).unwrap();
    assert_eq!(s.ino(ROOT_INO, "empty"), dd);
    assert_eq!(s.fs.getattr(empty).unwrap_err().errno(), libc::ENOENT);
    assert_eq!(s.nlink(ROOT_INO), root_links);
    assert_eq!(s.nlink(d), 2);
    assert_eq!(s.fs.getattr(dd).unwrap().inode.parent, ROOT_INO);
    let dots: Vec<_> = s.fs.readdir(dd, 0, 10).unwrap();
    assert_eq!(
        (dots[1].name.as_slice(), dots[1].ino),
        (&b".."[..], ROOT_INO)
    );
}

#[test]
fn noreplace_refuses_an_existing_name() {
    let s = Store::new(false);
    let a = s.file(ROOT_INO, "a", b"a");
    let b = s.file(ROOT_INO, "b", b"b");
    s.refused(libc::EEXIST, "noreplace over a file", |fs| {
        rename(fs, ROOT_INO, "a", ROOT_INO, "b", RenameMode::NoReplace)
    });
    rename(&s.fs, ROOT_INO, "a", ROOT_INO, "c", RenameMode::NoReplace).unwrap();
    assert_eq!(s.ino(ROOT_INO, "c"), a);
    assert_eq!(s.ino(ROOT_INO, "b"), b);
    assert!(s.absent(ROOT_INO, "a"));
}

#[test]
fn exchange_swaps_two_names() {
    let mut s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    let sub = s.mkdir(d, "sub");
    let f = s.file(ROOT_INO, "f", b"file");
    let g = s.file(d, "g", b"gee");
    // Two files in two directories.
    rename(&s.fs, ROOT_INO, "f", d, "g", RenameMode::Exchange).unwrap();
    assert_eq!(s.ino(ROOT_INO, "f"), g);
    assert_eq!(s.ino(d, "g"), f);
    assert_eq!(s.content(g), b"gee");
    assert_eq!((s.nlink(f), s.nlink(g)), (1, 1));
    // A directory with a file across directories: link counts move.
    let (root_links, d_links) = (s.nlink(ROOT_INO), s.nlink(d));
    rename(&s.fs, d, "sub", ROOT_INO, "f", RenameMode::Exchange).unwrap();
    assert_eq!(s.ino(ROOT_INO, "f"), sub);
    assert_eq!(s.ino(d, "sub"), g);
    assert_eq!(s.nlink(ROOT_INO), root_links + 1);
    assert_eq!(s.nlink(d), d_links - 1);
    assert_eq!(s.fs.getattr(sub).unwrap().inode.parent, ROOT_INO);
    s.refused(libc::ENOENT, "exchange with a missing name", |fs| {
        rename(fs, ROOT_INO, "f", ROOT_INO, "nope", RenameMode::Exchange)
    });
    let before = s.tree();
    s.reopen();
    assert_eq!(s.tree(), before, "the store holds the swap");
}

#[test]
fn names_are_checked() {
    let s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    s.file(d, "f", b"x");
    let long = "x".repeat(255);
    let too_long = "x".repeat(256);
    fn create(d: u64, name: &[u8]) -> impl FnOnce(&Fs) -> Result<()> + '_ {
        move |fs: &Fs| {
            fs.create_node(&root(), d, name, NewNode::File, 0o644, 0)
                .map(|_| ())
        }
    }
    for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
        let what = format!("create {bad:?}");
        s.refused(libc::EINVAL, &what, create(d, bad));
        s.refused(libc::EINVAL, &what, |fs| {
            fs.create_node(&root(), d, bad, NewNode::Dir, 0o755, 0)
                .map(|_| ())
        });
        s.refused(libc::EINVAL, &format!("rename to {bad:?}"), |fs| {
            fs.rename(&root(), d, b"f", d, bad, RenameMode::Replace)
                .map(|_| ())
        });
        s.refused(libc::EINVAL, &format!("link as {bad:?}"), |fs| {
            let f = fs.lookup(d, b"f")?.inode.ino;
            fs.link(&root(), f, d, bad).map(|_| ())
        });
    }
    // Removing an invalid name finds nothing.
    for bad in [&b""[..], b"a/b", b"a\0b"] {
        s.refused(libc::ENOENT, "unlink an invalid name", |fs| {
            fs.unlink(&root(), d, bad)
        });
        s.refused(libc::ENOENT, "rmdir an invalid name", |fs| {
            fs.rmdir(&root(), d, bad)
        });
    }
    s.refused(libc::EINVAL, "rmdir .", |fs| fs.rmdir(&root(), d, b"."));
    s.refused(libc::ENOTEMPTY, "rmdir ..", |fs| {
        fs.rmdir(&root(), d, b"..")
    });
    // 255 bytes is a name; 256 is too long, everywhere.
    s.refused(
        libc::ENAMETOOLONG,
        "create 256",
        create(d, too_long.as_bytes()),
    );
    s.refused(libc::ENAMETOOLONG, "unlink 256", |fs| {
        fs.unlink(&root(), d, too_long.as_bytes())
    });
    s.refused(libc::ENAMETOOLONG, "rename to 256", |fs| {
        fs.rename(
            &root(),
            d,
            b"f",
            d,
            too_long.as_bytes(),
            RenameMode::Replace,
        )
        .map(|_| ())
    });
    assert_eq!(
        s.fs.lookup(d, too_long.as_bytes()).unwrap_err().errno(),
        libc::ENAMETOOLONG
    );
    let ino = s.file(d, &long, b"long");
    assert_eq!(s.ino(d, &long), ino);
    // Names are bytes: not UTF-8 is fine.
    let odd =
        s.fs.create_node(&root(), d, b"\xff\xfe", NewNode::File, 0o644, 0)
            .unwrap()
            .inode
            .ino;
    assert_eq!(s.fs.lookup(d, b"\xff\xfe").unwrap().inode.ino, odd);
    s.refused(libc::EEXIST, "create over a name", create(d, b"f"));
}

#[test]
fn removing_the_wrong_kind_is_refused() {
    let s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    s.file(d, "f", b"x");
    s.mkdir(ROOT_INO, "e");
    s.refused(libc::EISDIR, "unlink a directory", |fs| {
        fs.unlink(&root(), ROOT_INO, b"d")
    });
    s.refused(libc::ENOTDIR, "rmdir a file", |fs| {
        fs.rmdir(&root(), d, b"f")
    });
    s.refused(libc::ENOTEMPTY, "rmdir a non-empty dir", |fs| {
        fs.rmdir(&root(), ROOT_INO, b"d")
    });
    s.refused(libc::ENOENT, "unlink a missing name", |fs| {
        fs.unlink(&root(), d, b"nope")
    });
    // Emptied (the removal not committed yet): rmdir succeeds.
    s.fs.unlink(&root(), d, b"f").unwrap();
    s.fs.rmdir(&root(), ROOT_INO, b"d").unwrap();
    assert!(s.absent(ROOT_INO, "d"));
    // A name added to a committed empty directory makes it non-empty at once.
    s.fs.wait_committed().unwrap();
    let e = s.ino(ROOT_INO, "e");
    s.file(e, "new", b"y");
    s.refused(libc::ENOTEMPTY, "rmdir a dir with a staged entry", |fs| {
        fs.rmdir(&root(), ROOT_INO, b"e")
    });
}

#[test]
fn a_directory_emptied_by_renames_can_go() {
    let mut s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    s.file(d, "a", b"1");
    s.file(d, "b", b"2");
    s.reopen();
    let d2 = s.ino(ROOT_INO, "d");
    assert_eq!(d, d2);
    // Both names leave d (committed entries, removals only staged).
    rename(&s.fs, d, "a", ROOT_INO, "a", RenameMode::Replace).unwrap();
    s.refused(libc::ENOTEMPTY, "rmdir with b left", |fs| {
        fs.rmdir(&root(), ROOT_INO, b"d")
    });
    rename(&s.fs, d, "b", ROOT_INO, "b", RenameMode::Replace).unwrap();
    s.fs.rmdir(&root(), ROOT_INO, b"d").unwrap();
    assert_eq!(s.content(s.ino(ROOT_INO, "a")), b"1");
    assert_eq!(s.content(s.ino(ROOT_INO, "b")), b"2");
}

#[test]
fn the_trash_at_the_root_is_reserved() {
    let s = Store::new(true);
    let d = s.mkdir(ROOT_INO, "d");
    let f = s.file(ROOT_INO, "f", b"x");
    s.refused(libc::EPERM, "create /.trash", |fs| {
        fs.create_node(&root(), ROOT_INO, TRASH, NewNode::Dir, 0o755, 0)
            .map(|_| ())
    });
    s.refused(libc::EPERM, "rename onto /.trash", |fs| {
        rename(fs, ROOT_INO, "d", ROOT_INO, ".trash", RenameMode::Replace)
    });
    s.refused(libc::EPERM, "link as /.trash", |fs| {
        fs.link(&root(), f, ROOT_INO, TRASH).map(|_| ())
    });
    // Elsewhere it is an ordinary name.
    s.fs.create_node(&root(), d, TRASH, NewNode::Dir, 0o755, 0)
        .unwrap();
    // Unlinking moves the file into the trash: out of sight, content kept.
    s.fs.unlink(&root(), ROOT_INO, b"f").unwrap();
    assert!(s.absent(ROOT_INO, "f"));
    let trash = s.ino(ROOT_INO, ".trash");
    let listed: Vec<_> =
        s.fs.readdir(ROOT_INO, 0, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
    assert!(!listed.contains(&TRASH.to_vec()), "the trash is not listed");
    assert!(s.tree().keys().any(|p| p.starts_with("/.trash/")));
    assert_eq!(s.content(f), b"x");
    assert!(s.object_exists(f));
    s.refused(libc::EPERM, "rename /.trash away", |fs| {
        rename(fs, ROOT_INO, ".trash", ROOT_INO, "t", RenameMode::Replace)
    });
    s.refused(libc::EPERM, "exchange /.trash", |fs| {
        rename(fs, ROOT_INO, "d", ROOT_INO, ".trash", RenameMode::Exchange)
    });
    assert_eq!(s.ino(ROOT_INO, ".trash"), trash);
}

#[test]
fn the_sticky_bit_guards_other_users_names() {
    let s = Store::new(false);
    let alice = user(1000);
    let bob = user(1001);
    let owner = user(1002);
    // A shared directory like /tmp, owned by `owner`.
    let tmp = s.mkdir(ROOT_INO, "tmp");
    s.fs.setattr(
        &root(),
        tmp,
        &SetAttr {
            mode: Some(0o1777),
            uid: Some(1002),
            gid: Some(1002),
            ..SetAttr::default()
        },
    )
    .unwrap();
    let f =
        s.fs.create_node(&alice, tmp, b"alices", NewNode::File, 0o666, 0)
            .unwrap()
            .inode
            .ino;
    // Anyone may add a name; only the file's owner, the directory's owner
    // or root may remove or replace one.
    s.fs.check_dir_change(&bob, tmp, None).unwrap();
    assert_eq!(
        s.fs.check_dir_change(&bob, tmp, Some(f))
            .unwrap_err()
            .errno(),
        libc::EPERM
    );
    s.fs.check_dir_change(&alice, tmp, Some(f)).unwrap();
    s.fs.check_dir_change(&owner, tmp, Some(f)).unwrap();
    s.fs.check_dir_change(&root(), tmp, Some(f)).unwrap();
    // Without the sticky bit, write permission on the directory decides.
    s.fs.setattr(
        &owner,
        tmp,
        &SetAttr {
            mode: Some(0o777),
            ..SetAttr::default()
        },
    )
    .unwrap();
    s.fs.check_dir_change(&bob, tmp, Some(f)).unwrap();
    s.fs.setattr(
        &owner,
        tmp,
        &SetAttr {
            mode: Some(0o1755),
            ..SetAttr::default()
        },
    )
    .unwrap();
    assert_eq!(
        s.fs.check_dir_change(&alice, tmp, Some(f))
            .unwrap_err()
            .errno(),
        libc::EACCES,
        "no write permission on the directory"
    );
    s.fs.check_dir_change(&owner, tmp, Some(f)).unwrap();
    // A non-owner may not change the mode of the directory.
    s.refused(libc::EPERM, "chmod by a non-owner", |fs| {
        fs.setattr(
            &bob,
            tmp,
            &SetAttr {
                mode: Some(0o777),
                ..SetAttr::default()
            },
        )
        .map(|_| ())
    });
    assert_eq!(
        s.fs.check_dir_change(&bob, f, None).unwrap_err().errno(),
        libc::ENOTDIR
    );
}

#[test]
fn listings_stay_consistent_through_changes() {
    let mut s = Store::new(false);
    let d = s.mkdir(ROOT_INO, "d");
    for i in 0..20 {
        s.file(d, &format!("f{i:02}"), format!("{i}").as_bytes());
    }
    rename(&s.fs, d, "f03", d, "f05", RenameMode::Replace).unwrap();
    s.fs.unlink(&root(), d, b"f07").unwrap();
    rename(&s.fs, d, "f10", d, "f11", RenameMode::Exchange).unwrap();
    let before = s.tree();
    assert_eq!(before.keys().filter(|p| p.starts_with("/d/")).count(), 18);
    assert!(before["/d/f05"].ends_with("\"3\""));
    assert!(before["/d/f11"].ends_with("\"10\""));
    // From memory (a directory made during this run) and from the store.
    s.reopen();
    assert_eq!(s.tree(), before);
}

#[test]
fn attribute_lists_known_empty_stay_known_after_their_commit() {
    // Every unlink checks the file's retention attributes and every first
    // write asks for security.capability: if a commit made the cache
    // forget an empty list, each would cost a query.
    for trash in [false, true] {
        let s = Store::new(trash);
        let f = s.file(ROOT_INO, "f", b"x");
        let g = s.file(ROOT_INO, "g", b"y");
        s.fs.setxattr(&root(), g, b"user.a", b"1", 0)
            .expect("setxattr");
        s.fs.removexattr(&root(), g, b"user.a")
            .expect("removexattr");
        s.fs.wait_committed().expect("commit");
        for ino in [f, g] {
            match s.fs.cache.xattrs(ino) {
                Known::Hit(Some(list)) => assert!(list.is_empty(), "inode {ino}: {list:?}"),
                Known::Hit(None) => panic!("inode {ino}: the list is staged as removed"),
                Known::Miss => panic!("inode {ino}: the commit forgot its empty attribute list"),
            }
            assert!(s.fs.getxattr(ino, b"user.a").is_err());
        }
        // The answer is the store's too.
        assert!(s.fs.meta.xattrs(g).expect("xattrs").is_empty());
        s.fs.unlink(&root(), ROOT_INO, b"f").expect("unlink");
        s.fs.wait_committed().expect("commit");
        assert!(s.absent(ROOT_INO, "f"));
    }
}
