//! Trash and expiry (issue 6), with a controllable clock: unlink moves
//! files into the hidden /.trash (restorable by renaming them out), the
//! collector purges old trash and removes expired files, respecting
//! retention.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{code, setx, Mount};

fn getx_s(p: &Path, name: &str) -> Option<String> {
    common::getx(p, name)
        .ok()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Wait until `cond` holds (the collector runs every 200 ms here).
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const FAST: [(&str, &str); 1] = [("ARTFS_COLLECT_INTERVAL", "0.2")];

#[test]
fn unlink_moves_to_a_hidden_trash_restorable_and_purged_later() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("doc"), b"precious").unwrap();
        let ino = fs::metadata(m.path("doc")).unwrap().ino();
        fs::remove_file(m.path("doc")).unwrap();
        assert!(!m.path("doc").exists());
        assert!(
            names(&m.mnt).is_empty(),
            "the trash is not listed: {:?}",
            names(&m.mnt)
        );
        let files = common::trashed(&m);
        assert_eq!(files.len(), 1);
        // /.trash/<uid>/<when>/<original path>, the same inode.
        let uid = nix::unistd::getuid().as_raw();
        assert!(files[0].starts_with(&format!("{uid}/")), "{files:?}");
        assert!(files[0].ends_with("Z/doc"), "{files:?}");
        let t = m.path(".trash").join(&files[0]);
        assert_eq!(fs::metadata(&t).unwrap().ino(), ino);
        // Restore by renaming it out.
        fs::rename(&t, m.path("doc")).unwrap();
        assert_eq!(fs::read(m.path("doc")).unwrap(), b"precious");
        // A file with other names is unlinked as usual (its nlink drops).
        fs::hard_link(m.path("doc"), m.path("alias")).unwrap();
        fs::remove_file(m.path("alias")).unwrap();
        assert_eq!(fs::metadata(m.path("doc")).unwrap().nlink(), 1);
        assert!(common::trashed(&m).is_empty());
        // Trash it again; two days later the collector purges it, with the
        // directories that held it.
        fs::remove_file(m.path("doc")).unwrap();
        assert_eq!(common::trashed(&m).len(), 1);
        m.unmount();
        m.try_mount(&[FAST[0], ("ARTFS_CLOCK_SKEW", "172800")])
            .unwrap();
        eventually("purge", || names(&m.path(".trash")).is_empty());
        m.unmount();
        m.assert_consistent();
        let obj = m
            .backing
            .join(format!("objects/{:02x}/{:016x}", ino & 0xff, ino));
        assert!(!obj.exists(), "the purged file's object is gone");
    });
}

#[test]
fn the_trash_cannot_be_renamed_replaced_or_made_by_hand() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        // Before the trash exists: nothing may take its name.
        fs::create_dir(m.path("d")).unwrap();
        fs::write(m.path("d/important"), b"keep").unwrap();
        fs::write(m.path("f"), b"x").unwrap();
        assert_eq!(code(fs::create_dir(m.path(".trash"))), libc::EPERM);
        assert_eq!(code(fs::write(m.path(".trash"), b"x")), libc::EPERM);
        assert_eq!(
            code(std::os::unix::fs::symlink("d", m.path(".trash"))),
            libc::EPERM
        );
        assert_eq!(
            code(fs::hard_link(m.path("f"), m.path(".trash"))),
            libc::EPERM
        );
        assert_eq!(code(fs::rename(m.path("d"), m.path(".trash"))), libc::EPERM);
        // A .trash elsewhere is an ordinary name.
        fs::create_dir(m.path("d/.trash")).unwrap();
        // Once it exists: it stays where it is.
        fs::remove_file(m.path("f")).unwrap();
        assert_eq!(common::trashed(&m).len(), 1);
        assert_eq!(
            code(fs::rename(m.path(".trash"), m.path("t2"))),
            libc::EPERM
        );
        fs::create_dir(m.path("empty")).unwrap();
        assert_eq!(
            code(fs::rename(m.path("empty"), m.path(".trash"))),
            libc::EPERM
        );
        assert_eq!(common::trashed(&m).len(), 1);
        assert_eq!(fs::read(m.path("d/important")).unwrap(), b"keep");
        // Trashed files still come out by rename.
        let t = m.path(".trash").join(&common::trashed(&m)[0]);
        fs::rename(&t, m.path("f")).unwrap();
        assert_eq!(fs::read(m.path("f")).unwrap(), b"x");
    });
}

#[test]
fn no_trash_when_turned_off_or_outside_edit_mode() {
    common::engine::every_engine(|| {
        let m = Mount::with_args(&["--trash-days", "0"]);
        fs::write(m.path("f"), b"x").unwrap();
        fs::remove_file(m.path("f")).unwrap();
        assert_eq!(code(fs::read_dir(m.path(".trash"))), libc::ENOENT);
    });
}

#[test]
fn expired_files_are_removed_unless_retained() {
    common::engine::every_engine(|| {
        let m = Mount::prepared(&[], |_| {});
        let mut m = m;
        m.unmount();
        m.try_mount(&FAST).unwrap();
        fs::write(m.path("old"), b"1").unwrap();
        fs::hard_link(m.path("old"), m.path("old-alias")).unwrap();
        fs::write(m.path("held"), b"2").unwrap();
        fs::write(m.path("future"), b"3").unwrap();
        assert_eq!(
            code(setx(
                &m.path("old"),
                "user.artstore.expires_at",
                b"yesterday"
            )),
            libc::EINVAL
        );
        setx(
            &m.path("held"),
            "user.artstore.retention_until",
            b"2100-01-01T00:00:00Z",
        )
        .unwrap();
        setx(
            &m.path("future"),
            "user.artstore.expires_at",
            b"2200-01-01T00:00:00Z",
        )
        .unwrap();
        setx(
            &m.path("held"),
            "user.artstore.expires_at",
            b"2001-01-01T00:00:00Z",
        )
        .unwrap();
        setx(
            &m.path("old"),
            "user.artstore.expires_at",
            b"2001-01-01T00:00:00Z",
        )
        .unwrap();
        eventually("expiry", || {
            !m.path("old").exists() && !m.path("old-alias").exists()
        });
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(fs::read(m.path("held")).unwrap(), b"2");
        assert_eq!(fs::read(m.path("future")).unwrap(), b"3");
        // Expired files do not go to the trash.
        assert_eq!(code(fs::read_dir(m.path(".trash"))), libc::ENOENT);
    });
}

#[test]
fn a_directory_default_ttl_gives_new_files_an_expiry() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir(m.path("tmp")).unwrap();
        assert_eq!(
            code(setx(&m.path("tmp"), "user.artstore.default_ttl", b"-5")),
            libc::EINVAL
        );
        setx(&m.path("tmp"), "user.artstore.default_ttl", b"3600").unwrap();
        fs::create_dir(m.path("tmp/sub")).unwrap();
        fs::write(m.path("tmp/sub/scratch"), b"s").unwrap();
        fs::write(m.path("kept"), b"k").unwrap();
        assert_eq!(
            getx_s(&m.path("tmp/sub"), "user.artstore.default_ttl").as_deref(),
            Some("3600")
        );
        let exp = getx_s(&m.path("tmp/sub/scratch"), "user.artstore.expires_at").unwrap();
        let t = time::OffsetDateTime::parse(&exp, &time::format_description::well_known::Rfc3339)
            .unwrap();
        let left = t - time::OffsetDateTime::now_utc();
        assert!(
            left > time::Duration::minutes(59) && left <= time::Duration::minutes(60),
            "{exp}"
        );
        assert!(getx_s(&m.path("kept"), "user.artstore.expires_at").is_none());
        // Two hours later it is gone; the rest stays.
        m.unmount();
        m.try_mount(&[FAST[0], ("ARTFS_CLOCK_SKEW", "7200")])
            .unwrap();
        eventually("expiry by default ttl", || {
            !m.path("tmp/sub/scratch").exists()
        });
        assert!(m.path("kept").exists() && m.path("tmp/sub").exists());
    });
}
