//! rename(2) and renameat2(2) through real syscalls: replacing, NOREPLACE,
//! EXCHANGE, the errnos of impossible renames, directory moves ('..' and
//! link counts) and hard links. Errnos are compared with a local ext4.

mod common;
use common::ext4_dir;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::Mount;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// renameat2 with raw flags; Ok(()) or the errno.
fn rename2(from: &Path, to: &Path, flags: libc::c_uint) -> Result<(), i32> {
    let (a, b) = (cpath(from), cpath(to));
    // SAFETY: valid C strings.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap())
    }
}

fn code(r: Result<(), i32>) -> i32 {
    r.err().unwrap_or(0)
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

fn nlink(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().nlink()
}

/// Inode of the ".." entry as readdir reports it.
fn dotdot_ino(dir: &Path) -> u64 {
    fs::read_dir(dir).unwrap(); // std skips "." and ".."; use libc.
    let c = cpath(dir);
    // SAFETY: a directory stream opened and closed here.
    unsafe {
        let d = libc::opendir(c.as_ptr());
        assert!(!d.is_null());
        let mut found = None;
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            if std::ffi::CStr::from_ptr((*e).d_name.as_ptr()).to_bytes() == b".." {
                found = Some((*e).d_ino);
            }
        }
        libc::closedir(d);
        found.expect("no '..' entry")
    }
}

const NOREPLACE: libc::c_uint = libc::RENAME_NOREPLACE;
const EXCHANGE: libc::c_uint = libc::RENAME_EXCHANGE;

/// A scenario of impossible (and a few possible) renames; the errnos.
fn rename_errnos(d: &Path) -> Vec<i32> {
    let p = |s: &str| d.join(s);
    fs::create_dir_all(p("a/b/c")).unwrap();
    fs::create_dir(p("empty")).unwrap();
    fs::create_dir(p("full")).unwrap();
    fs::write(p("full/x"), b"").unwrap();
    fs::write(p("f"), b"f").unwrap();
    fs::write(p("g"), b"g").unwrap();
    fs::hard_link(p("f"), p("f2")).unwrap();
    vec![
        // A directory into itself or below itself.
        code(rename2(&p("a"), &p("a/b/inside"), 0)),
        code(rename2(&p("a"), &p("a/inside"), 0)),
        code(rename2(&p("a/b"), &p("a/b/c/inside"), 0)),
        // An ancestor as the target of a replace.
        code(rename2(&p("a/b/c"), &p("a"), 0)),
        // Over a non-empty directory, onto a file, a file onto a dir.
        code(rename2(&p("empty"), &p("full"), 0)),
        code(rename2(&p("empty"), &p("f"), 0)),
        code(rename2(&p("f"), &p("empty"), 0)),
        code(rename2(&p("f"), &p("full"), 0)),
        // Missing source, missing target directory, a file as a directory.
        code(rename2(&p("missing"), &p("z"), 0)),
        code(rename2(&p("f"), &p("nodir/z"), 0)),
        code(rename2(&p("f"), &p("g/z"), 0)),
        code(rename2(&p("g/z"), &p("z"), 0)),
        // "." and ".." cannot be renamed or replaced.
        code(rename2(&p("a/."), &p("z"), 0)),
        code(rename2(&p("a/.."), &p("z"), 0)),
        code(rename2(&p("f"), &p("a/."), 0)),
        // NOREPLACE onto an existing name, EXCHANGE with a missing one.
        code(rename2(&p("f"), &p("g"), NOREPLACE)),
        code(rename2(&p("empty"), &p("full"), NOREPLACE)),
        code(rename2(&p("f"), &p("missing"), EXCHANGE)),
        code(rename2(&p("missing"), &p("f"), EXCHANGE)),
        code(rename2(&p("f"), &p("g"), EXCHANGE | NOREPLACE)),
        code(rename2(&p("f"), &p("g"), 0x80)),
        // EXCHANGE of a directory with its own descendant.
        code(rename2(&p("a"), &p("a/b/c"), EXCHANGE)),
        code(rename2(&p("a/b/c"), &p("a"), EXCHANGE)),
        // Two names of one file: nothing happens, both stay.
        code(rename2(&p("f"), &p("f2"), 0)),
        // Onto itself.
        code(rename2(&p("g"), &p("g"), 0)),
        code(rename2(&p("a"), &p("a"), 0)),
        // NOREPLACE to a free name works.
        code(rename2(&p("g"), &p("g-moved"), NOREPLACE)),
    ]
}

#[test]
fn rename_errnos_match_ext4() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("t")).unwrap();
        let got = rename_errnos(&m.path("t"));
        let reference = ext4_dir();
        let want = rename_errnos(reference.path());
        use libc::*;
        assert_eq!(
            want,
            vec![
                EINVAL, EINVAL, EINVAL, ENOTEMPTY, ENOTEMPTY, ENOTDIR, EISDIR, EISDIR, ENOENT,
                ENOENT, ENOTDIR, ENOTDIR, EBUSY, EBUSY, EBUSY, EEXIST, EEXIST, ENOENT, ENOENT,
                EINVAL, EINVAL, EINVAL, EINVAL, 0, 0, 0, 0
            ],
            "ext4 reference changed?"
        );
        assert_eq!(got, want);
        let t = m.path("t");
        // The failed and no-op renames changed nothing.
        assert_eq!(fs::read(t.join("f")).unwrap(), b"f");
        assert_eq!(fs::read(t.join("f2")).unwrap(), b"f");
        assert_eq!(nlink(&t.join("f")), 2);
        assert_eq!(fs::read(t.join("g-moved")).unwrap(), b"g");
        assert!(fs::metadata(t.join("a/b/c")).unwrap().is_dir());
        assert!(fs::metadata(t.join("full/x")).unwrap().is_file());
        assert!(fs::metadata(t.join("empty")).unwrap().is_dir());
    });
}

#[test]
fn rename_replaces_a_file_atomically() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("new"), b"new content").unwrap();
        fs::write(m.path("old"), b"old").unwrap();
        let new_ino = ino(&m.path("new"));
        // A descriptor on the replaced file keeps reading the old content.
        let held = fs::File::open(m.path("old")).unwrap();
        fs::rename(m.path("new"), m.path("old")).unwrap();
        assert_eq!(common::errno(fs::metadata(m.path("new"))), libc::ENOENT);
        assert_eq!(fs::read(m.path("old")).unwrap(), b"new content");
        assert_eq!(ino(&m.path("old")), new_ino);
        assert_eq!(held.metadata().unwrap().nlink(), 0);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut &held, &mut s).unwrap();
        assert_eq!(s, "old");
        drop(held);
        // An empty directory can be replaced by a directory.
        fs::create_dir(m.path("d1")).unwrap();
        fs::write(m.path("d1/inner"), b"i").unwrap();
        fs::create_dir(m.path("d2")).unwrap();
        let root_links = nlink(&m.mnt);
        fs::rename(m.path("d1"), m.path("d2")).unwrap();
        assert_eq!(nlink(&m.mnt), root_links - 1);
        assert_eq!(fs::read(m.path("d2/inner")).unwrap(), b"i");
        m.remount();
        assert_eq!(common::names(&m.mnt), ["d2", "old"]);
        assert_eq!(fs::read(m.path("old")).unwrap(), b"new content");
        assert_eq!(ino(&m.path("old")), new_ino);
        assert_eq!(nlink(&m.mnt), root_links - 1);
    });
}

/// An open that found a file just before the file was replaced (its last
/// name gone, nothing holding it) still gets that file, and its close
/// reclaims it: never a handle on a file already reclaimed, nor (on S3)
/// an object put back that no file owns. A test point holds the open
/// between its start and its look at the inode while the API replaces
/// the file (the API: a rename through the mount could wait behind the
/// held open in the FUSE request loop).
#[test]
fn an_open_racing_the_replacement_of_its_file_gets_the_old_file() {
    common::engine::every_engine(|| {
        // No trash: the replaced file is reclaimed at once (the trash would
        // keep it whole, under a hidden name).
        let api = common::api::Api::start(&["--trash-days", "0"]);
        let mut m = api.m;
        fs::write(m.path("f"), b"old content").unwrap();
        let old_ino = ino(&m.path("f"));
        m.arm(&["open::pinned=1*sleep(1500)"]);
        let path = m.path("f");
        let opener = std::thread::spawn(move || fs::read(path));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let token = common::api::token("writer", artfs::auth::Role::Admin);
        let put = api
            .client
            .put(format!("{}/api/v1/fs/f", api.base))
            .bearer_auth(&token)
            .body("new content")
            .send()
            .unwrap();
        assert_eq!(put.status(), 200, "{}", put.text().unwrap_or_default());
        let got = opener.join().unwrap().expect("the open lost its file");
        assert_eq!(got, b"old content");
        assert_eq!(fs::read(m.path("f")).unwrap(), b"new content");
        assert_ne!(ino(&m.path("f")), old_ino);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn rename_noreplace_moves_only_to_a_free_name() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("a"), b"A").unwrap();
        fs::write(m.path("b"), b"B").unwrap();
        assert_eq!(
            rename2(&m.path("a"), &m.path("b"), NOREPLACE),
            Err(libc::EEXIST)
        );
        assert_eq!(fs::read(m.path("a")).unwrap(), b"A");
        assert_eq!(fs::read(m.path("b")).unwrap(), b"B");
        fs::create_dir(m.path("d")).unwrap();
        rename2(&m.path("a"), &m.path("d/c"), NOREPLACE).unwrap();
        assert_eq!(fs::read(m.path("d/c")).unwrap(), b"A");
        assert!(fs::symlink_metadata(m.path("a")).is_err());
        m.remount();
        assert_eq!(fs::read(m.path("d/c")).unwrap(), b"A");
        assert!(fs::symlink_metadata(m.path("a")).is_err());
    });
}

#[test]
fn rename_exchange_swaps_files_and_directories() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("f"), b"file").unwrap();
        fs::create_dir(m.path("d")).unwrap();
        fs::write(m.path("d/inside"), b"in").unwrap();
        fs::create_dir(m.path("other")).unwrap();
        fs::write(m.path("other/g"), b"g").unwrap();
        let (f_ino, d_ino, g_ino) = (
            ino(&m.path("f")),
            ino(&m.path("d")),
            ino(&m.path("other/g")),
        );
        // Same directory: file <-> directory.
        rename2(&m.path("f"), &m.path("d"), EXCHANGE).unwrap();
        assert_eq!(ino(&m.path("f")), d_ino);
        assert_eq!(ino(&m.path("d")), f_ino);
        assert_eq!(fs::read(m.path("d")).unwrap(), b"file");
        assert_eq!(fs::read(m.path("f/inside")).unwrap(), b"in");
        assert_eq!(nlink(&m.mnt), 4); // ".", "..", "f" (a dir) and "other"

        // Across directories: the directory "f" <-> the file "other/g". The
        // moved directory's '..' and both parents' link counts follow.
        let (root_ino, other_ino) = (ino(&m.mnt), ino(&m.path("other")));
        rename2(&m.path("f"), &m.path("other/g"), EXCHANGE).unwrap();
        assert_eq!(ino(&m.path("f")), g_ino);
        assert_eq!(ino(&m.path("other/g")), d_ino);
        assert_eq!(fs::read(m.path("other/g/inside")).unwrap(), b"in");
        assert_eq!(fs::read(m.path("f")).unwrap(), b"g");
        assert_eq!(nlink(&m.mnt), 3);
        assert_eq!(nlink(&m.path("other")), 3);
        assert_eq!(dotdot_ino(&m.path("other/g")), other_ino);
        assert_eq!(fs::metadata(m.path("other/g/..")).unwrap().ino(), other_ino);

        // Two directories in different parents.
        fs::create_dir(m.path("x")).unwrap();
        fs::write(m.path("x/mark"), b"x").unwrap();
        rename2(&m.path("x"), &m.path("other/g"), EXCHANGE).unwrap();
        assert_eq!(fs::read(m.path("x/inside")).unwrap(), b"in");
        assert_eq!(fs::read(m.path("other/g/mark")).unwrap(), b"x");
        assert_eq!(dotdot_ino(&m.path("x")), root_ino);
        assert_eq!(dotdot_ino(&m.path("other/g")), other_ino);

        m.remount();
        assert_eq!(fs::read(m.path("x/inside")).unwrap(), b"in");
        assert_eq!(fs::read(m.path("other/g/mark")).unwrap(), b"x");
        assert_eq!(fs::read(m.path("f")).unwrap(), b"g");
        assert_eq!(fs::read(m.path("d")).unwrap(), b"file");
        assert_eq!(nlink(&m.mnt), 4);
        assert_eq!(nlink(&m.path("other")), 3);
        assert_eq!(dotdot_ino(&m.path("x")), root_ino);
        assert_eq!(dotdot_ino(&m.path("other/g")), other_ino);
    });
}

#[test]
fn rename_across_directories_updates_dotdot_and_nlink() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir_all(m.path("a/moving/deeper")).unwrap();
        fs::write(m.path("a/moving/file"), b"payload").unwrap();
        fs::create_dir(m.path("b")).unwrap();
        let (a, b) = (ino(&m.path("a")), ino(&m.path("b")));
        assert_eq!((nlink(&m.path("a")), nlink(&m.path("b"))), (3, 2));
        let moving = ino(&m.path("a/moving"));
        let ctime0 = fs::metadata(m.path("a/moving")).unwrap().ctime_nsec();
        std::thread::sleep(std::time::Duration::from_millis(10));

        fs::rename(m.path("a/moving"), m.path("b/moved")).unwrap();
        assert_eq!(ino(&m.path("b/moved")), moving);
        assert_eq!((nlink(&m.path("a")), nlink(&m.path("b"))), (2, 3));
        assert_eq!(nlink(&m.path("b/moved")), 3);
        assert_eq!(dotdot_ino(&m.path("b/moved")), b);
        assert_eq!(fs::metadata(m.path("b/moved/..")).unwrap().ino(), b);
        assert_eq!(dotdot_ino(&m.path("b/moved/deeper")), moving);
        assert_eq!(fs::read(m.path("b/moved/file")).unwrap(), b"payload");
        assert_ne!(
            fs::metadata(m.path("b/moved")).unwrap().ctime_nsec(),
            ctime0,
            "rename did not change the moved directory's ctime"
        );
        // A file moved across directories.
        fs::rename(m.path("b/moved/file"), m.path("a/file")).unwrap();
        assert_eq!((nlink(&m.path("a")), nlink(&m.path("b"))), (2, 3));

        m.remount();
        assert_eq!((nlink(&m.path("a")), nlink(&m.path("b"))), (2, 3));
        assert_eq!(dotdot_ino(&m.path("b/moved")), b);
        assert_eq!(dotdot_ino(&m.path("a")), ino(&m.mnt));
        assert_ne!(dotdot_ino(&m.path("b/moved")), a);
        assert_eq!(fs::read(m.path("a/file")).unwrap(), b"payload");
        // Moving back and then removing the tree works (nothing dangling).
        fs::rename(m.path("b/moved"), m.path("a/back")).unwrap();
        assert_eq!((nlink(&m.path("a")), nlink(&m.path("b"))), (3, 2));
        fs::remove_dir(m.path("a/back/deeper")).unwrap();
        fs::remove_dir(m.path("a/back")).unwrap();
        fs::remove_file(m.path("a/file")).unwrap();
        fs::remove_dir(m.path("a")).unwrap();
        fs::remove_dir(m.path("b")).unwrap();
        assert_eq!(nlink(&m.mnt), 2);
    });
}

#[test]
fn rename_between_hard_links_and_over_a_link() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("one"), b"shared").unwrap();
        fs::hard_link(m.path("one"), m.path("two")).unwrap();
        fs::create_dir(m.path("d")).unwrap();
        fs::hard_link(m.path("one"), m.path("d/three")).unwrap();
        let i = ino(&m.path("one"));
        assert_eq!(nlink(&m.path("one")), 3);
        // Renaming one name onto another of the same inode does nothing.
        fs::rename(m.path("one"), m.path("two")).unwrap();
        assert_eq!(ino(&m.path("one")), i);
        assert_eq!(ino(&m.path("two")), i);
        assert_eq!(nlink(&m.path("two")), 3);
        // Renaming a link keeps the count; replacing another file drops that one.
        fs::rename(m.path("d/three"), m.path("d/four")).unwrap();
        assert_eq!(nlink(&m.path("one")), 3);
        fs::write(m.path("victim"), b"v").unwrap();
        fs::rename(m.path("two"), m.path("victim")).unwrap();
        assert_eq!(nlink(&m.path("one")), 3);
        assert_eq!(fs::read(m.path("victim")).unwrap(), b"shared");
        // Replacing one of the links with another file drops the count.
        fs::write(m.path("other"), b"o").unwrap();
        fs::rename(m.path("other"), m.path("victim")).unwrap();
        assert_eq!(nlink(&m.path("one")), 2);
        m.remount();
        assert_eq!(nlink(&m.path("one")), 2);
        assert_eq!(nlink(&m.path("d/four")), 2);
        assert_eq!(fs::read(m.path("d/four")).unwrap(), b"shared");
        assert_eq!(fs::read(m.path("victim")).unwrap(), b"o");
    });
}

#[test]
fn rename_of_a_symlink_and_of_an_open_file() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        std::os::unix::fs::symlink("target-text", m.path("ln")).unwrap();
        fs::create_dir(m.path("d")).unwrap();
        fs::rename(m.path("ln"), m.path("d/ln2")).unwrap();
        assert_eq!(
            fs::read_link(m.path("d/ln2")).unwrap().as_os_str(),
            "target-text"
        );
        // An open file follows its inode, not its name.
        fs::write(m.path("open"), b"").unwrap();
        let f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("open"))
            .unwrap();
        fs::rename(m.path("open"), m.path("d/renamed")).unwrap();
        std::io::Write::write_all(&mut &f, b"after rename").unwrap();
        drop(f);
        assert_eq!(fs::read(m.path("d/renamed")).unwrap(), b"after rename");
    });
}
