//! Crash consistency (issue 3): the daemon is aborted at each step of each
//! operation's protocol (crash points, armed at run time), then remounted;
//! recovery must leave a store that fsck finds consistent, where the
//! operation happened entirely or not at all.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::Mount;

/// Make everything so far durable (fsyncdir commits all metadata).
fn sync(m: &Mount) {
    File::open(&m.mnt).unwrap().sync_all().unwrap();
}

/// Objects present in BACKING, excluding sidecars, counted unmounted: a
/// mounted store also holds empty objects made ahead of need, which go at
/// unmount.
fn objects(m: &mut Mount) -> Vec<String> {
    let mounted = m.pid().is_some();
    if mounted {
        m.unmount();
    }
    let mut v = Vec::new();
    for d in fs::read_dir(m.backing.join("objects")).unwrap() {
        for e in fs::read_dir(d.unwrap().path()).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if !name.contains('.') {
                v.push(name);
            }
        }
    }
    if mounted {
        m.mount();
    }
    v.sort();
    v
}

/// Arm `point` (`name=actions`) once the sidecar thread has settled what
/// the setup wrote (it waits for 500 ms of quiet; its rows commit in a
/// batch of their own), so the point hits the test's own operation.
fn arm_after_quiet(m: &Mount, point: &str) {
    std::thread::sleep(Duration::from_millis(1200));
    sync(m);
    m.arm(&[point]);
}

/// Arm `point`, run `op` (which dies with the daemon), and recover:
/// fsck must then find the unmounted store consistent.
fn crash_during(m: &mut Mount, point: &str, op: impl FnOnce(&Path) + Send + 'static) {
    arm_after_quiet(m, &format!("{point}=return"));
    let mnt = m.mnt.clone();
    // The syscall that hits the crash point fails (ENOTCONN) or hangs until
    // the stale mount is detached: run it aside.
    let worker = std::thread::spawn(move || op(&mnt));
    m.expect_crash(point);
    let _ = worker.join();
    m.mount();
    m.unmount();
    m.assert_consistent();
    m.mount();
}

fn write_file(path: &Path, data: &[u8]) {
    let mut f = File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn crash_before_a_batch_commits_loses_the_create_whole() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        write_file(&m.path("keep"), b"kept");
        sync(&m);
        let before = objects(&mut m);
        crash_during(&mut m, "writer::before_commit", |mnt| {
            let _ = fs::write(mnt.join("new"), b"hello");
        });
        assert!(!m.path("new").exists(), "an uncommitted create survived");
        assert_eq!(fs::read(m.path("keep")).unwrap(), b"kept");
        // The object created for "new" was removed by recovery.
        assert_eq!(objects(&mut m), before);
    });
}

#[test]
fn crash_after_an_unlink_commits_removes_the_object() {
    common::engine::every_engine(|| {
        // Unlink for real: no trash.
        let mut m = Mount::with_args(&["--trash-days", "0"]);
        write_file(&m.path("victim"), b"doomed");
        write_file(&m.path("keep"), b"kept");
        sync(&m);
        let before = objects(&mut m);
        assert_eq!(before.len(), 2);
        crash_during(&mut m, "writer::after_commit", |mnt| {
            let _ = fs::remove_file(mnt.join("victim"));
            // Make sure a commit happens now.
            let _ = File::open(mnt).and_then(|d| d.sync_all());
        });
        assert!(!m.path("victim").exists());
        assert_eq!(fs::read(m.path("keep")).unwrap(), b"kept");
        assert_eq!(
            objects(&mut m).len(),
            1,
            "the released object was left behind"
        );
    });
}

#[test]
fn crash_between_object_removal_and_its_log_row() {
    common::engine::every_engine(|| {
        // Unlink for real: no trash.
        let mut m = Mount::with_args(&["--trash-days", "0"]);
        write_file(&m.path("victim"), b"doomed");
        sync(&m);
        crash_during(&mut m, "writer::after_reclaim", |mnt| {
            let _ = fs::remove_file(mnt.join("victim"));
            let _ = File::open(mnt).and_then(|d| d.sync_all());
        });
        assert!(!m.path("victim").exists());
        assert!(objects(&mut m).is_empty());
    });
}

#[test]
fn crash_before_release_records_the_size_rolls_the_write_forward() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        write_file(&m.path("f"), b"0123456789");
        sync(&m);
        crash_during(&mut m, "release::before_persist", |mnt| {
            let mut f = OpenOptions::new().append(true).open(mnt.join("f")).unwrap();
            f.write_all(b"abc").unwrap();
            drop(f);
        });
        // The appended bytes reached the object before the crash; recovery
        // makes the metadata follow it.
        assert_eq!(fs::read(m.path("f")).unwrap(), b"0123456789abc");
        assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 13);
    });
}

#[test]
fn crash_after_the_write_intent_changes_nothing() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        write_file(&m.path("f"), b"0123456789");
        sync(&m);
        crash_during(&mut m, "open::after_intent", |mnt| {
            if let Ok(mut f) = OpenOptions::new().write(true).open(mnt.join("f")) {
                let _ = f.write_all(b"XXXXXXXXXXXXXXXXXXXX");
            }
        });
        assert_eq!(fs::read(m.path("f")).unwrap(), b"0123456789");
    });
}

#[test]
fn crash_between_truncate_intent_and_object_leaves_the_old_file() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        write_file(&m.path("f"), b"0123456789");
        sync(&m);
        crash_during(&mut m, "truncate::after_intent", |mnt| {
            let _ = nix::unistd::truncate(&mnt.join("f"), 3);
        });
        assert_eq!(fs::read(m.path("f")).unwrap(), b"0123456789");
    });
}

#[test]
fn crash_after_truncating_the_object_completes_the_truncate() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        write_file(&m.path("f"), b"0123456789");
        sync(&m);
        crash_during(&mut m, "truncate::after_object", |mnt| {
            let _ = nix::unistd::truncate(&mnt.join("f"), 3);
        });
        assert_eq!(fs::read(m.path("f")).unwrap(), b"012");
    });
}

#[test]
fn crash_right_after_create_leaves_nothing_half_made() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        sync(&m);
        crash_during(&mut m, "create::after_object", |mnt| {
            let _ = File::create(mnt.join("g"));
        });
        match fs::metadata(m.path("g")) {
            Ok(md) => {
                assert!(md.is_file());
                assert_eq!(md.len(), 0);
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        }
    });
}

/// Inode `ino`'s attr.json as artfs parses it (`None`: none, or one that
/// does not parse).
fn sidecar_doc(m: &Mount, ino: u64) -> Option<artfs::blob::sidecar::AttrJson> {
    let bytes = m.sidecar_bytes(ino)?;
    artfs::blob::sidecar::AttrJson::parse(&bytes)
        .ok()
        .map(|(doc, _)| doc)
}

/// The sidecar of `f`, checked against the file, once written.
fn assert_sidecar_matches(m: &Mount, ino: u64, len: u64) {
    let doc = sidecar_doc(m, ino).unwrap_or_else(|| {
        panic!(
            "inode {ino}: no usable sidecar: {:?}",
            m.sidecar_bytes(ino)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        )
    });
    assert_eq!(doc.file_size, len);
    assert_eq!(doc.fs.as_ref().map(|f| f.ino), Some(ino));
}

/// Wait (while mounted) for the sidecar thread to write a usable sidecar
/// of `ino`, then check it.
fn sidecar_written_soon(m: &Mount, ino: u64, len: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while sidecar_doc(m, ino).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "inode {ino}: sidecar never written"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_sidecar_matches(m, ino, len);
}

#[test]
fn crash_while_a_new_sidecar_is_written_leaves_it_to_recovery() {
    // Local content only: a bucket's sidecar is one PUT.
    common::engine::every_metadata_engine(|| {
        let mut m = Mount::new();
        arm_after_quiet(&m, "sidecar::after_create=return");
        // The sidecar thread creates f's sidecar by its name and dies
        // before writing it: an empty attr.json, its row pending.
        write_file(&m.path("f"), b"four");
        let ino = fs::metadata(m.path("f")).unwrap().ino();
        m.expect_crash("sidecar::after_create");
        assert_eq!(m.sidecar_bytes(ino), Some(Vec::new()));
        // The next mount hands the row to the sidecar thread, which
        // replaces the empty file.
        m.mount();
        sidecar_written_soon(&m, ino, 4);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn crash_after_sidecars_are_synced_rewrites_them() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        crash_during(&mut m, "sidecar_sync::before_settle", |mnt| {
            write_file(&mnt.join("f"), b"four");
        });
        let ino = fs::metadata(m.path("f")).unwrap().ino();
        m.unmount();
        assert_sidecar_matches(&m, ino, 4);
        m.assert_consistent();
    });
}

#[test]
fn a_sidecar_that_cannot_be_written_leaves_no_empty_file() {
    common::engine::every_metadata_engine(|| {
        let mut m = Mount::new();
        // Every new sidecar's write fails (as on a full disk) after its
        // file was created.
        arm_after_quiet(&m, "sidecar::write_new=return");
        write_file(&m.path("f"), b"four");
        let ino = fs::metadata(m.path("f")).unwrap().ino();
        // The thread tries after 500 ms of quiet, then once a second.
        std::thread::sleep(Duration::from_millis(2500));
        assert_eq!(m.sidecar_bytes(ino), None, "a failed write left a file");
        m.arm(&["sidecar::write_new=off"]);
        sidecar_written_soon(&m, ino, 4);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn crash_during_rename_over_keeps_one_whole_state() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        write_file(&m.path("a"), b"AAAA");
        write_file(&m.path("b"), b"BBBBBBBB");
        sync(&m);
        crash_during(&mut m, "writer::before_commit", |mnt| {
            let _ = fs::rename(mnt.join("a"), mnt.join("b"));
        });
        let a = fs::read(m.path("a")).ok();
        let b = fs::read(m.path("b")).unwrap();
        match a {
            Some(a) => {
                assert_eq!(a, b"AAAA");
                assert_eq!(b, b"BBBBBBBB");
                assert_eq!(objects(&mut m).len(), 2);
            }
            None => {
                assert_eq!(b, b"AAAA");
                assert_eq!(objects(&mut m).len(), 1);
            }
        }
    });
}

#[test]
fn crash_during_recovery_is_recovered_by_the_next_mount() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        write_file(&m.path("f"), b"0123456789");
        sync(&m);
        m.arm(&["release::before_persist=return"]);
        let mnt = m.mnt.clone();
        let w = std::thread::spawn(move || {
            let mut f = OpenOptions::new().append(true).open(mnt.join("f")).unwrap();
            let _ = f.write_all(b"abc");
        });
        m.expect_crash("release::before_persist");
        let _ = w.join();
        // Recovery itself dies before settling its first row...
        let status = m
            .try_mount(&[("FAILPOINTS", "recover::before_settle=return")])
            .expect_err("the mount should have died in recovery");
        assert!(!status.success());
        let (code, out) = m.fsck(false);
        assert_eq!(code, 1, "fsck should see the pending rows:\n{out}");
        assert!(out.contains("pending"), "{out}");
        // ...and the next mount recovers everything.
        m.mount();
        assert_eq!(fs::read(m.path("f")).unwrap(), b"0123456789abc");
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn fsck_reports_damage_and_repair_fixes_it_but_not_while_mounted() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        write_file(&m.path("a"), b"alpha");
        write_file(&m.path("b"), b"beta");
        fs::hard_link(m.path("b"), m.path("b2")).unwrap();
        sync(&m);
        let (code, out) = m.fsck(true);
        assert_eq!(code, 2, "--repair must refuse a mounted store: {out}");
        assert!(out.contains("mounted"), "{out}");
        let ino_a = fs::metadata(m.path("a")).unwrap().ino();
        let ino_b = fs::metadata(m.path("b")).unwrap().ino();
        m.unmount();
        m.assert_consistent();

        // Damage: an object no file owns, a file whose object grew behind the
        // metadata, a wrong link count, a stray file.
        let objdir = m.backing.join("objects");
        fs::write(objdir.join("ff/00000000000fffff"), b"orphan").unwrap();
        m.set_object_bytes(ino_a, b"alpha and more");
        m.sql(&format!(
            "UPDATE {{p}}_inodes SET nlink = 5 WHERE ino = {ino_b}"
        ));
        fs::write(objdir.join("00/stray"), b"?").unwrap();

        let (code, out) = m.fsck(false);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("belongs to no file"), "{out}");
        assert!(out.contains("object holds 14 bytes"), "{out}");
        assert!(out.contains("is not an object"), "{out}");
        assert!(out.contains("link count 5 recorded, 2 counted"), "{out}");
        let (code, out) = m.fsck(true);
        // The stray file is not ours to delete: reported again, exit 1.
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("repaired:"), "{out}");
        fs::remove_file(objdir.join("00/stray")).unwrap();
        m.assert_consistent();
        m.mount();
        assert_eq!(fs::read(m.path("a")).unwrap(), b"alpha and more");
        assert_eq!(fs::metadata(m.path("b")).unwrap().nlink(), 2);
    });
}

#[test]
fn fsck_on_a_directory_that_is_no_store_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .arg("fsck")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no artfs store"), "{err}");
    // Nothing was created.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn disk_full_gives_enospc_and_keeps_metadata_true() {
    common::engine::every_engine(|| {
        let mut m = Mount::prepared(&["--trash-days", "0"], |backing| {
            nix::mount::mount(
                Some("tmpfs"),
                backing,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=24m"),
            )
            .expect("mount a tmpfs as BACKING (needs root)");
        });
        let _tmpfs = Unmounter(m.backing.clone());
        write_file(&m.path("small"), b"precious");
        sync(&m);
        let mut f = File::create(m.path("big")).unwrap();
        let chunk = vec![0x5au8; 1 << 20];
        let mut written = 0u64;
        let err = loop {
            match f.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(e) => break e,
            }
            assert!(written < 64 << 20, "never ran out of space");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(f);
        // What the caller was told it wrote is what the file holds: no more.
        assert_eq!(fs::metadata(m.path("big")).unwrap().len(), written);
        assert_eq!(fs::read(m.path("small")).unwrap(), b"precious");
        // Free the space; the store carries on and stays consistent.
        fs::remove_file(m.path("big")).unwrap();
        // Space comes back once the removal commits (fsyncdir waits for it).
        sync(&m);
        write_file(&m.path("after"), b"fine");
        m.unmount();
        m.assert_consistent();
        m.mount();
        assert_eq!(fs::read(m.path("small")).unwrap(), b"precious");
        assert_eq!(fs::read(m.path("after")).unwrap(), b"fine");
        assert!(!m.path("big").exists());
        m.unmount();
    });
}

/// Unmount a tmpfs BACKING after the test's mount is gone.
struct Unmounter(std::path::PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Regression: closing any descriptor of the database file drops SQLite's
/// POSIX locks; an outside reader then thought it was the last user and
/// deleted the -wal file, so later commits went to an unlinked file and a
/// crash lost them. SQLite's own files: SQLite only.
#[test]
fn outside_readers_of_the_database_never_make_commits_vanish() {
    let mut m = Mount::new();
    write_file(&m.path("before"), b"1");
    sync(&m);
    // Read the database from other processes while mounted.
    let out = std::process::Command::new(common::bin())
        .args(["search".as_ref(), m.backing.as_os_str(), "before".as_ref()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let (code, _) = m.fsck(false);
    assert_eq!(code, 0);
    assert!(m.backing.join(".artfs/meta.db-wal").exists());
    write_file(&m.path("after"), b"2");
    fs::rename(m.path("before"), m.path("renamed")).unwrap();
    sync(&m);
    m.kill();
    m.mount();
    assert_eq!(fs::read(m.path("after")).unwrap(), b"2");
    assert_eq!(fs::read(m.path("renamed")).unwrap(), b"1");
    assert!(!m.path("before").exists());
}
