//! `chattr`/`lsattr` (inode flags): immutable and append-only files and
//! directories refuse what they refuse on ext4, through the real tools and
//! syscalls, compared with a local ext4 directory; who may set them; and
//! that they last (remount, sidecar).

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::process::Command;

use common::{code, ext4_dir, Mount};

/// `chattr ARG path` (as `uid` when given): its exit code.
fn chattr(arg: &str, p: &Path, uid: Option<u32>) -> i32 {
    let mut c = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={u}"),
                format!("--regid={u}"),
                "--clear-groups".into(),
                "--".into(),
                "chattr".into(),
            ]);
            c
        }
        None => Command::new("chattr"),
    };
    let out = c.arg(arg).arg(p).output().unwrap();
    out.status.code().unwrap()
}

/// The flags `lsattr` shows that artfs keeps (ext4 adds its own, such as
/// `e` for extents).
fn lsattr(p: &Path) -> String {
    let out = Command::new("lsattr").arg("-d").arg(p).output().unwrap();
    assert!(out.status.success(), "lsattr: {out:?}");
    let s = String::from_utf8(out.stdout).unwrap();
    let shown = s.split_whitespace().next().unwrap().to_string();
    "iadA".chars().filter(|c| shown.contains(*c)).collect()
}

fn utimes_now(p: &Path) -> std::io::Result<()> {
    fs::File::options()
        .write(false)
        .read(true)
        .open(p)?
        .set_times(fs::FileTimes::new().set_modified(std::time::SystemTime::now()))
}

/// Everything whose outcome ext4 and artfs must agree on, as (what, code).
fn outcomes(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut note = |what: &str, v: String| out.push((what.to_string(), v));
    let f = dir.join("f");
    fs::write(&f, b"hi\n").unwrap();
    let d = dir.join("d");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("x"), b"x").unwrap();

    // Immutable file.
    note("+i", chattr("+i", &f, None).to_string());
    note("lsattr +i", lsattr(&f));
    let append = OpenOptions::new().append(true).open(&f);
    note("append-open", code(append).to_string());
    let write = OpenOptions::new().write(true).open(&f);
    note("write-open", code(write).to_string());
    let rw = OpenOptions::new().read(true).write(true).open(&f);
    note("rw-open", code(rw).to_string());
    note(
        "read",
        format!("{:?}", fs::read(&f).map_err(|e| e.raw_os_error())),
    );
    let trunc = fs::File::options().write(true).truncate(true).open(&f);
    note("truncate-open", code(trunc).to_string());
    note("unlink", code(fs::remove_file(&f)).to_string());
    note("rename", code(fs::rename(&f, dir.join("g"))).to_string());
    note("link", code(fs::hard_link(&f, dir.join("h"))).to_string());
    let chmod = fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600));
    note("chmod", code(chmod).to_string());
    note(
        "chown",
        code(std::os::unix::fs::chown(&f, Some(0), Some(0))).to_string(),
    );
    note("touch", code(utimes_now(&f)).to_string());
    note(
        "setxattr",
        code(common::set_xattr(&f, "user.x", b"1")).to_string(),
    );
    let setfacl = Command::new("setfacl")
        .args(["-m", "u:65534:r"])
        .arg(&f)
        .status()
        .unwrap();
    note("setfacl", setfacl.code().unwrap().to_string());
    // Another name over it.
    fs::write(dir.join("other"), b"o").unwrap();
    note(
        "rename-over",
        code(fs::rename(dir.join("other"), &f)).to_string(),
    );
    note("-i", chattr("-i", &f, None).to_string());
    note("lsattr -i", lsattr(&f));

    // Append-only file.
    note("+a", chattr("+a", &f, None).to_string());
    note("lsattr +a", lsattr(&f));
    {
        let mut a = OpenOptions::new().append(true).open(&f).unwrap();
        note("append", code(a.write_all(b"more\n")).to_string());
        // pwrite on an O_APPEND descriptor appends on Linux.
        note("pwrite-append", code(a.write_at(b"end\n", 0)).to_string());
    }
    note("content", String::from_utf8(fs::read(&f).unwrap()).unwrap());
    let write = OpenOptions::new().write(true).open(&f);
    note("a write-open", code(write).to_string());
    let trunc_append = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_APPEND | libc::O_TRUNC)
        .open(&f);
    note("a append+trunc", code(trunc_append).to_string());
    let trunc = fs::File::options().write(true).truncate(true).open(&f);
    note("a truncate-open", code(trunc).to_string());
    note("a unlink", code(fs::remove_file(&f)).to_string());
    note("a rename", code(fs::rename(&f, dir.join("g"))).to_string());
    note("a link", code(fs::hard_link(&f, dir.join("h"))).to_string());
    let chmod = fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600));
    note("a chmod", code(chmod).to_string());
    note(
        "a setxattr",
        code(common::set_xattr(&f, "user.x", b"1")).to_string(),
    );
    note(
        "a touch-now",
        code(Command::new("touch").arg(&f).status().map(|s| s.code())).to_string(),
    );
    let explicit = Command::new("touch")
        .args(["-d", "2001-01-01"])
        .arg(&f)
        .status()
        .unwrap();
    note("a touch-date", explicit.code().unwrap().to_string());
    note("-a", chattr("-a", &f, None).to_string());
    note("write after -a", code(fs::write(&f, b"free\n")).to_string());

    // Immutable directory: no entry added or removed; its files unchanged.
    note("d +i", chattr("+i", &d, None).to_string());
    note("d create", code(fs::write(d.join("new"), b"n")).to_string());
    note("d mkdir", code(fs::create_dir(d.join("sub"))).to_string());
    note("d unlink", code(fs::remove_file(d.join("x"))).to_string());
    note(
        "d rename",
        code(fs::rename(d.join("x"), d.join("y"))).to_string(),
    );
    note(
        "d rename-out",
        code(fs::rename(d.join("x"), dir.join("y"))).to_string(),
    );
    note(
        "d write-inside",
        code(fs::write(d.join("x"), b"changed")).to_string(),
    );
    note("d rmdir", code(fs::remove_dir(&d)).to_string());
    note("d -i", chattr("-i", &d, None).to_string());
    // Append-only directory: entries may be added, never removed.
    note("d +a", chattr("+a", &d, None).to_string());
    note("d add", code(fs::write(d.join("new"), b"n")).to_string());
    note("d remove", code(fs::remove_file(d.join("new"))).to_string());
    note(
        "d rename-in",
        code(fs::rename(d.join("x"), d.join("z"))).to_string(),
    );
    note(
        "d link-in",
        code(fs::hard_link(&f, d.join("f-link"))).to_string(),
    );
    note("d -a", chattr("-a", &d, None).to_string());
    note("d cleanup", code(fs::remove_dir_all(&d)).to_string());

    // Who: the owner may set the other flags, only root the locks.
    let own = dir.join("own");
    fs::write(&own, b"o").unwrap();
    std::os::unix::fs::chown(&own, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(dir, Some(0), Some(0)).unwrap();
    note("owner +d", chattr("+d", &own, Some(65534)).to_string());
    note("owner +A", chattr("+A", &own, Some(65534)).to_string());
    note("owner +i", chattr("+i", &own, Some(65534)).to_string());
    note("owner +a", chattr("+a", &own, Some(65534)).to_string());
    note("other +d", chattr("+d", &f, Some(65534)).to_string());
    note("lsattr own", lsattr(&own));
    note("root +i", chattr("+i", &own, None).to_string());
    note(
        "owner -d of +i",
        chattr("-d", &own, Some(65534)).to_string(),
    );
    note("root -i", chattr("-i", &own, None).to_string());
    out
}

#[test]
fn immutable_and_append_only_refuse_what_ext4_refuses() {
    let reference = ext4_dir();
    let ext4 = outcomes(reference.path());
    // The reference itself: the locks hold there.
    assert!(
        ext4.contains(&("unlink".into(), libc::EPERM.to_string())),
        "{ext4:?}"
    );
    common::engine::every_engine(|| {
        let m = Mount::new();
        let dir = m.path("t");
        fs::create_dir(&dir).unwrap();
        let artfs = outcomes(&dir);
        for (a, e) in artfs.iter().zip(&ext4) {
            assert_eq!(a, e, "artfs and ext4 differ");
        }
        assert_eq!(artfs.len(), ext4.len());
    });
}

#[test]
fn flags_last_and_guard_the_daemon_paths() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"kept\n").unwrap();
        assert_eq!(chattr("+i", &f, None), 0);
        let d = m.path("d");
        fs::create_dir(&d).unwrap();
        assert_eq!(chattr("+a", &d, None), 0);
        let g = m.path("g");
        fs::write(&g, b"log\n").unwrap();
        assert_eq!(chattr("+a", &g, None), 0);

        // A reader and an appender share the file.
        let mut reader = fs::File::open(&g).unwrap();
        let mut log = OpenOptions::new().append(true).open(&g).unwrap();
        log.write_all(b"line 2\n").unwrap();
        let mut seen = String::new();
        reader.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "log\nline 2\n");
        // Clearing O_APPEND is not seen by the kernel's FUSE client (it
        // keeps no inode flags). A write below the end still never lands
        // there: through passthrough the kernel's own descriptor keeps
        // O_APPEND (the bytes go to the end); through the daemon it is
        // EPERM.
        // SAFETY: fcntl on a descriptor we hold.
        let rc = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&log), libc::F_SETFL, 0) };
        assert_eq!(rc, 0);
        let r = code(log.write_at(b"XXX", 0));
        drop((reader, log));
        let after = fs::read(&g).unwrap();
        match r {
            0 => assert_eq!(after, b"log\nline 2\nXXX"),
            e => {
                assert_eq!(e, libc::EPERM);
                assert_eq!(after, b"log\nline 2\n");
            }
        }

        // Locking a file that is open for writing is refused (a writer
        // the kernel serves directly could not be stopped).
        let h = m.path("h");
        let w = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&h)
            .unwrap();
        assert_ne!(chattr("+i", &h, None), 0);
        assert_eq!(lsattr(&h), "");
        drop(w);
        assert_eq!(chattr("+i", &h, None), 0);
        // Flags artfs does not keep are refused.
        assert_ne!(chattr("+c", &f, None), 0);

        // The sidecar carries them, and a remount keeps them.
        m.remount();
        assert_eq!(lsattr(&f), "i");
        assert_eq!(lsattr(&d), "a");
        assert_eq!(lsattr(&g), "a");
        assert_eq!(code(fs::remove_file(&f)), libc::EPERM);
        assert_eq!(code(fs::write(d.join("n"), b"n")), 0);
        assert_eq!(code(fs::remove_file(d.join("n"))), libc::EPERM);
        let ino = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&f).unwrap());
        m.unmount();
        let side: serde_json::Value =
            serde_json::from_slice(&m.sidecar_bytes(ino).expect("a sidecar")).unwrap();
        assert_eq!(side["fs"]["flags"], 16, "{side}");
        m.mount();
        // Unlocked, the file goes as any other.
        assert_eq!(chattr("-i", &f, None), 0);
        fs::remove_file(&f).unwrap();
    });
}

#[test]
fn append_only_writes_through_the_daemon_only_append() {
    common::engine::every_engine(|| {
        // With a capacity every write passes the daemon (no passthrough).
        let m = Mount::with_args(&["--capacity", "10M"]);
        let g = m.path("g");
        fs::write(&g, b"log\n").unwrap();
        assert_eq!(chattr("+a", &g, None), 0);
        let mut log = OpenOptions::new().append(true).open(&g).unwrap();
        log.write_all(b"line 2\n").unwrap();
        // SAFETY: fcntl on a descriptor we hold.
        let rc = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&log), libc::F_SETFL, 0) };
        assert_eq!(rc, 0);
        assert_eq!(code(log.write_at(b"XXX", 0)), libc::EPERM);
        assert_eq!(code(log.write_at(b"end\n", 11)), 0);
        drop(log);
        assert_eq!(fs::read(&g).unwrap(), b"log\nline 2\nend\n");
    });
}

/// An append-only file's writer never shares a backing file (passthrough):
/// through it, a shared mapping could write anywhere. So the file's
/// readers are served by the daemon too (a writer can join them), and a
/// writer meeting handles opened by passthrough before the flag was set
/// is refused with ETXTBSY, changing nothing, until they close. Then
/// neither `F_SETFL` nor a shared mapping rewrites what is there.
/// `FS_IOC_SETFLAGS` through `f`, in this process: no `chattr` start-up
/// between a close and the lock.
fn set_flags(f: &fs::File, flags: libc::c_long) -> i32 {
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    // SAFETY: the ioctl reads a long we own, on a descriptor we hold.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(f), FS_IOC_SETFLAGS, &flags) };
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

/// A writer's release reaches the daemon after close(2) returns: locking a
/// file at once after writing it must not find that writer still open.
#[test]
fn a_file_locked_as_soon_as_it_is_written_is_locked() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        const APPEND: libc::c_long = 0x20;
        for i in 0..40 {
            let p = m.path(&format!("f{i}"));
            fs::write(&p, b"done\n").unwrap();
            let f = fs::File::open(&p).unwrap();
            assert_eq!(set_flags(&f, APPEND), 0, "file {i}");
            assert_eq!(lsattr(&p), "a");
            assert_eq!(code(fs::write(&p, b"over")), libc::EPERM);
            assert_eq!(set_flags(&f, 0), 0);
        }
        // A release still on its way: with several request threads, the
        // lock is served beside it (one thread serves them in turn).
        m.remount_with(&["--threads", "4"]);
        m.arm(&["fuse::release=1*sleep(300)"]);
        let p = m.path("slow");
        fs::write(&p, b"done\n").unwrap();
        let f = fs::File::open(&p).unwrap();
        assert_eq!(set_flags(&f, APPEND), 0);
        assert_eq!(lsattr(&p), "a");
        assert_eq!(set_flags(&f, 0), 0);
        drop(f);
        // A writer still open is refused, after the wait.
        let p = m.path("open");
        let w = fs::File::create(&p).unwrap();
        let f = fs::File::open(&p).unwrap();
        assert_eq!(set_flags(&f, APPEND), libc::EBUSY);
        assert_eq!(lsattr(&p), "");
        drop((w, f));
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn append_only_writers_never_share_passthrough() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let p = m.path("log");
        fs::write(&p, b"line 1\n").unwrap();
        // By passthrough (no capacity): opened before the flag.
        let early = fs::File::open(&p).unwrap();
        assert_eq!(chattr("+a", &p, None), 0);
        let sha = common::getx(&p, "user.artstore.sha256").unwrap();
        let append = || OpenOptions::new().append(true).open(&p);
        assert_eq!(code(append()), libc::ETXTBSY);
        assert_eq!(
            code(OpenOptions::new().read(true).append(true).open(&p)),
            libc::ETXTBSY
        );
        assert_eq!(common::getx(&p, "user.artstore.sha256").unwrap(), sha);
        drop(early);
        // The kernel sends the release after close returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let w = loop {
            match append() {
                Ok(w) => break w,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                    assert!(std::time::Instant::now() < deadline, "still refused");
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("open for appending: {e}"),
            }
        };
        // A reader beside the writer, and a second writer that reads.
        let r = fs::File::open(&p).unwrap();
        let rw = OpenOptions::new().read(true).append(true).open(&p).unwrap();
        // SAFETY: fcntl on a descriptor we hold.
        let rc = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&w), libc::F_SETFL, 0) };
        assert_eq!(rc, 0);
        assert_eq!(code(w.write_at(b"XXX", 0)), libc::EPERM);
        let mut map = common::SharedMap::of(&rw, 4);
        assert!(map.try_write(0, b"YYYY").is_err(), "a mapping rewrote it");
        // The refused bytes leave the page cache too: the reader beside
        // the mapping soon reads what the object holds (the daemon drops
        // the pages after its reply).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut head = [0u8; 4];
        loop {
            r.read_exact_at(&mut head, 0).unwrap();
            if &head == b"line" {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "readers still see the refused bytes: {head:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(map);
        // Appending still works (`w` lost O_APPEND: refused at 0 again).
        assert_eq!(code((&w).write_all(b"no")), libc::EPERM);
        (&rw).write_all(b"line 2\n").unwrap();
        drop((w, rw));
        drop(r);
        assert_eq!(fs::read(&p).unwrap(), b"line 1\nline 2\n");
        assert_eq!(chattr("-a", &p, None), 0);
        let mut m = m;
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn the_http_door_keeps_the_same_locks() {
    use artfs::auth::Role;
    common::engine::every_engine(|| {
        let api = common::api::Api::start(&[]);
        let f = api.m.path("locked.txt");
        fs::write(&f, b"v1").unwrap();
        assert_eq!(chattr("+i", &f, None), 0);
        let t = common::api::token("admin", Role::Admin);
        let url = api.url("/api/v1/fs/locked.txt");
        let put = api
            .client
            .put(&url)
            .bearer_auth(&t)
            .body("v2")
            .send()
            .unwrap();
        assert_eq!(put.status(), 403, "replace");
        let del = api.client.delete(&url).bearer_auth(&t).send().unwrap();
        assert_eq!(del.status(), 403, "delete");
        let patch = api
            .client
            .patch(api.url("/api/v1/meta/locked.txt"))
            .bearer_auth(&t)
            .json(&serde_json::json!({ "description": "changed" }))
            .send()
            .unwrap();
        assert_eq!(patch.status(), 403, "metadata");
        let get = api.client.get(&url).bearer_auth(&t).send().unwrap();
        assert_eq!(get.status(), 200);
        assert_eq!(get.bytes().unwrap().as_ref(), b"v1");
        // Unlocked, the same requests go through.
        assert_eq!(chattr("-i", &f, None), 0);
        let del = api.client.delete(&url).bearer_auth(&t).send().unwrap();
        assert_eq!(del.status(), 204);
    });
}
