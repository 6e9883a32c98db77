//! The trash (issue 12): `/.trash/<uid>/<when>/<original path>`, as
//! private as the original path, restorable with one rename, purged with
//! its directories, and giving its space back to writes that need it.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{as_user, code, Mount};

const NOBODY: u32 = 65534;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// open(2) for reading as the child: 0 or the errno.
fn open_errno(p: &CString) -> i32 {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    0
}

/// Listing a directory as the child: opendir then readdir; 0 or the errno.
fn list_errno(p: &CString) -> i32 {
    // SAFETY: a valid C string; the stream is closed.
    unsafe {
        let d = libc::opendir(p.as_ptr());
        if d.is_null() {
            return errno();
        }
        libc::closedir(d);
    }
    0
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn owner(p: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(p).unwrap();
    (m.uid(), m.gid())
}

/// The one bucket of `uid` in the trash.
fn only_bucket(m: &Mount, uid: u32) -> PathBuf {
    let dir = m.path(".trash").join(uid.to_string());
    let names = common::names(&dir);
    assert_eq!(names.len(), 1, "buckets of {uid}: {names:?}");
    dir.join(&names[0])
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Write `len` bytes of `byte` to a new file; Ok(len) or the error (with
/// what was written before it).
fn fill(p: &Path, len: usize, byte: u8) -> Result<usize, (usize, std::io::Error)> {
    let mut f = fs::File::create(p).map_err(|e| (0, e))?;
    let chunk = vec![byte; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = chunk.len().min(len - done);
        if let Err(e) = f.write_all(&chunk[..n]) {
            return Err((done, e));
        }
        done += n;
    }
    f.sync_all().map_err(|e| (done, e))?;
    Ok(done)
}

fn avail(p: &Path) -> u64 {
    let v = nix::sys::statvfs::statvfs(p).unwrap();
    v.blocks_available() * v.fragment_size()
}

/// Let the kernel's asynchronous RELEASE of closed files reach the daemon
/// (an unlink of a file still open is no trash case).
fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_file_deleted_from_a_private_directory_stays_private_in_the_trash() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("secret")).unwrap();
        fs::set_permissions(m.path("secret"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(m.path("secret/payroll.csv"), b"salary data").unwrap();
        fs::create_dir(m.path("pub")).unwrap();
        fs::write(m.path("pub/notes"), b"public").unwrap();
        assert_eq!(
            as_user(NOBODY, NOBODY, || list_errno(&cpath(&m.path("secret")))),
            libc::EACCES
        );
        settle();
        fs::remove_file(m.path("secret/payroll.csv")).unwrap();
        fs::remove_file(m.path("pub/notes")).unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let bucket = only_bucket(&m, uid);
        let trashed_secret = bucket.join("secret/payroll.csv");
        let trashed_pub = bucket.join("pub/notes");
        assert_eq!(fs::read(&trashed_secret).unwrap(), b"salary data");
        // The trash and the user's directory: pass-through only, root's and
        // the deleter's; the bucket stands for the root, each directory copy
        // for its original.
        assert_eq!(mode(&m.path(".trash")), 0o711);
        assert_eq!(owner(&m.path(".trash")), (0, 0));
        assert_eq!(mode(&m.path(&format!(".trash/{uid}"))), 0o711);
        assert_eq!(mode(&bucket), mode(&m.mnt));
        assert_eq!(owner(&bucket), owner(&m.mnt));
        assert_eq!(mode(&bucket.join("secret")), 0o700);
        assert_eq!(mode(&bucket.join("pub")), mode(&m.path("pub")));
        // Nobody can list the trash nor the user's part, nor reach the file
        // from the private directory, nor drop anything in the trash...
        let (t, u, s, p) = (
            cpath(&m.path(".trash")),
            cpath(&m.path(&format!(".trash/{uid}"))),
            cpath(&trashed_secret),
            cpath(&trashed_pub),
        );
        let drop_box = cpath(&m.path(".trash/drop"));
        let got = as_user(NOBODY, NOBODY, || {
            let checks = [
                (list_errno(&t), libc::EACCES),
                (list_errno(&u), libc::EACCES),
                (open_errno(&s), libc::EACCES),
                // ...but what was public at its old path is at its new one.
                (open_errno(&p), 0),
                (
                    // SAFETY: a valid C string.
                    if unsafe { libc::mkdir(drop_box.as_ptr(), 0o777) } == 0 {
                        0
                    } else {
                        errno()
                    },
                    libc::EACCES,
                ),
            ];
            for (i, (got, want)) in checks.iter().enumerate() {
                if got != want {
                    return 100 + i as i32;
                }
            }
            0
        });
        assert_eq!(got, 0, "check {} as nobody failed", got - 100);
        // The owner still restores it.
        fs::rename(&trashed_secret, m.path("secret/payroll.csv")).unwrap();
        assert_eq!(
            fs::read(m.path("secret/payroll.csv")).unwrap(),
            b"salary data"
        );
    });
}

#[test]
fn rm_rf_of_a_tree_comes_back_with_one_rename() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let p = |s: &str| m.path(s);
        for d in ["proj", "proj/src", "proj/src/deep", "proj/docs"] {
            fs::create_dir(p(d)).unwrap();
        }
        let files = [
            ("proj/README", &b"read me"[..], 0o644),
            ("proj/src/main.rs", b"fn main() {}", 0o600),
            ("proj/src/deep/data.bin", b"\x00\x01\x02", 0o640),
            ("proj/docs/guide.txt", b"guide", 0o444),
        ];
        for (f, content, perm) in files {
            fs::write(p(f), content).unwrap();
            fs::set_permissions(p(f), fs::Permissions::from_mode(perm)).unwrap();
        }
        fs::set_permissions(p("proj/src"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::set_permissions(p("proj/docs"), fs::Permissions::from_mode(0o2775)).unwrap();
        nix::unistd::chown(&p("proj/src/main.rs"), Some(1000.into()), Some(1000.into())).unwrap();
        nix::unistd::chown(&p("proj/docs"), Some(1000.into()), Some(100.into())).unwrap();
        let before: Vec<(String, u32, (u32, u32))> =
            ["proj", "proj/src", "proj/src/deep", "proj/docs"]
                .iter()
                .chain(files.iter().map(|f| &f.0))
                .map(|s| (s.to_string(), mode(&p(s)), owner(&p(s))))
                .collect();
        settle();
        let st = std::process::Command::new("rm")
            .arg("-rf")
            .arg(p("proj"))
            .status()
            .unwrap();
        assert!(st.success());
        assert!(!p("proj").exists());
        // One bucket holds the whole tree, at its original path.
        let uid = nix::unistd::getuid().as_raw();
        let bucket = only_bucket(&m, uid);
        assert_eq!(common::names(&bucket), vec!["proj"]);
        fs::rename(bucket.join("proj"), p("proj")).unwrap();
        for (f, content, _) in files {
            assert_eq!(fs::read(p(f)).unwrap(), content, "{f}");
        }
        for (s, perm, own) in &before {
            assert_eq!(mode(&p(s)), *perm, "mode of {s}");
            assert_eq!(owner(&p(s)), *own, "owner of {s}");
        }
        // And it is all there after a remount, consistent.
        m.unmount();
        m.assert_consistent();
        m.mount();
        assert_eq!(
            fs::read(m.path("proj/src/deep/data.bin")).unwrap(),
            b"\x00\x01\x02"
        );
    });
}

#[test]
fn old_trash_is_purged_with_its_directories() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir_all(m.path("a/b/c")).unwrap();
        fs::write(m.path("a/b/c/f"), b"1").unwrap();
        fs::write(m.path("a/g"), b"2").unwrap();
        settle();
        let st = std::process::Command::new("rm")
            .arg("-rf")
            .arg(m.path("a"))
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(common::trashed(&m).len(), 2, "{:?}", common::trashed(&m));
        let ino = fs::metadata(only_bucket(&m, nix::unistd::getuid().as_raw()).join("a/b/c/f"))
            .unwrap()
            .ino();
        // Recent: the collector leaves it.
        m.unmount();
        m.try_mount(&[("ARTFS_COLLECT_INTERVAL", "0.2")]).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(common::trashed(&m).len(), 2);
        // Two days on: files and every directory of the trash below it go.
        m.unmount();
        m.try_mount(&[
            ("ARTFS_COLLECT_INTERVAL", "0.2"),
            ("ARTFS_CLOCK_SKEW", "172800"),
        ])
        .unwrap();
        eventually("purge", || common::names(&m.path(".trash")).is_empty());
        m.unmount();
        m.assert_consistent();
        let obj = m
            .backing
            .join(format!("objects/{:02x}/{:016x}", ino & 0xff, ino));
        assert!(!obj.exists(), "the purged file's object is gone");
    });
}

#[test]
fn a_full_capacity_is_freed_by_deleting() {
    common::engine::every_engine(|| {
        let m = Mount::with_args(&["--capacity", "20M"]);
        const MIB: usize = 1 << 20;
        fill(&m.path("f1"), 10 * MIB, 1).unwrap();
        fill(&m.path("f2"), 9 * MIB, 2).unwrap();
        let (_, e) = fill(&m.path("f3"), 4 * MIB, 3).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        settle();
        fs::remove_file(m.path("f3")).unwrap();
        assert_eq!(common::trashed(&m).len(), 1);
        let before = avail(&m.mnt);
        fs::remove_file(m.path("f2")).unwrap();
        assert_eq!(common::trashed(&m).len(), 2);
        // df counts the trash as free: reclaimable.
        let after = avail(&m.mnt);
        assert!(
            after >= before + 9 * MIB as u64 - 4096,
            "df did not count the trash as free: {before} -> {after}"
        );
        // The next write purges it and goes through.
        fill(&m.path("f4"), 8 * MIB, 4).unwrap();
        assert!(common::trashed(&m).is_empty(), "{:?}", common::trashed(&m));
        assert_eq!(fs::read(m.path("f4")).unwrap(), vec![4u8; 8 * MIB]);
        assert_eq!(fs::read(m.path("f1")).unwrap(), vec![1u8; 10 * MIB]);
        // Nothing left to purge: ENOSPC as before.
        let (_, e) = fill(&m.path("f5"), 4 * MIB, 5).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    });
}

/// Unmount a tmpfs BACKING after the test's mount is gone.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        std::thread::sleep(Duration::from_millis(50));
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_backing_filesystem_is_freed_by_deleting() {
    common::engine::every_engine(|| {
        let mut m = Mount::prepared(&[], |backing| {
            nix::mount::mount(
                Some("tmpfs"),
                backing,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=40m"),
            )
            .expect("mount a tmpfs as BACKING (needs root)");
        });
        let _tmpfs = Unmounter(m.backing.clone());
        const MIB: usize = 1 << 20;
        fill(&m.path("keep"), 4 * MIB, 1).unwrap();
        fill(&m.path("old"), 10 * MIB, 2).unwrap();
        settle();
        fs::remove_file(m.path("old")).unwrap();
        assert_eq!(common::trashed(&m).len(), 1, "old went to the trash");
        // Fill BACKING up to 3 MiB of free space...
        let left = avail(&m.backing) as usize;
        fill(&m.path("filler"), left - 3 * MIB, 3).unwrap();
        settle();
        // ...the next write makes the trash give its space back.
        fill(&m.path("after"), 6 * MIB, 4).unwrap();
        assert!(common::trashed(&m).is_empty(), "{:?}", common::trashed(&m));
        assert_eq!(fs::read(m.path("after")).unwrap(), vec![4u8; 6 * MIB]);
        assert_eq!(fs::read(m.path("keep")).unwrap(), vec![1u8; 4 * MIB]);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn each_deleter_has_a_bucket_and_removing_inside_the_trash_is_for_good() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("shared")).unwrap();
        fs::set_permissions(m.path("shared"), fs::Permissions::from_mode(0o777)).unwrap();
        fs::write(m.path("shared/mine"), b"m").unwrap();
        fs::write(m.path("shared/theirs"), b"t").unwrap();
        fs::set_permissions(m.path("shared/theirs"), fs::Permissions::from_mode(0o666)).unwrap();
        settle();
        fs::remove_file(m.path("shared/mine")).unwrap();
        let theirs = cpath(&m.path("shared/theirs"));
        // SAFETY: a valid C string.
        let rc = as_user(NOBODY, NOBODY, || {
            if unsafe { libc::unlink(theirs.as_ptr()) } == 0 {
                0
            } else {
                errno()
            }
        });
        assert_eq!(rc, 0);
        let uid = nix::unistd::getuid().as_raw();
        let mine = only_bucket(&m, uid).join("shared/mine");
        let theirs = only_bucket(&m, NOBODY).join("shared/theirs");
        assert_eq!(fs::read(&theirs).unwrap(), b"t");
        assert_eq!(owner(&m.path(&format!(".trash/{NOBODY}"))).0, NOBODY);
        // nobody lists their own deletions.
        let own = cpath(&m.path(&format!(".trash/{NOBODY}")));
        assert_eq!(as_user(NOBODY, NOBODY, || list_errno(&own)), 0);
        // rm inside the trash removes for good.
        fs::remove_file(&mine).unwrap();
        assert_eq!(code(fs::metadata(&mine)), libc::ENOENT);
        assert_eq!(common::trashed(&m).len(), 1, "{:?}", common::trashed(&m));
    });
}

#[test]
fn the_trash_command_lists_and_empties_it() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::create_dir(m.path("d")).unwrap();
        fs::write(m.path("d/a"), b"12345").unwrap();
        fs::write(m.path("b"), b"678").unwrap();
        settle();
        fs::remove_file(m.path("d/a")).unwrap();
        fs::remove_file(m.path("b")).unwrap();
        m.unmount();
        let run = |args: &[&str]| {
            let out = std::process::Command::new(common::bin())
                .arg("trash")
                .args(args)
                .args(m.location())
                .args(m.store_args())
                .envs(m.store_env())
                .env("ARTFS_LOG", "warn")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            text
        };
        let uid = nix::unistd::getuid().as_raw();
        let list = run(&["list"]);
        assert!(list.contains(&format!("/.trash/{uid}/")), "{list}");
        assert!(list.contains("1 units, 2 files, 8 bytes"), "{list}");
        // Nothing is a day old yet.
        let kept = run(&["empty", "--older-than", "1"]);
        assert!(kept.contains("purged 0 files"), "{kept}");
        let purged = run(&["empty"]);
        assert!(purged.contains("purged 2 files"), "{purged}");
        assert!(run(&["list"]).contains("0 units, 0 files"));
        m.assert_consistent();
        m.mount();
        assert!(common::names(&m.path(".trash")).is_empty());
    });
}

#[test]
fn operators_list_and_empty_the_trash_over_http() {
    common::engine::every_engine(|| {
        use artfs::auth::Role;
        use common::api::{token, Api};
        let (user, operator) = (token("alice", Role::User), token("olga", Role::Operator));
        let api = Api::with_default_identity(&[]);
        let (m, client) = (&api.m, &api.client);
        let url = api.url("/api/v1/trash");
        fs::write(m.path("gone"), b"12345").unwrap();
        settle();
        fs::remove_file(m.path("gone")).unwrap();
        let r = client.get(&url).bearer_auth(&user).send().unwrap();
        assert_eq!(r.status(), 403, "a user token lists no trash");
        let r = client.delete(&url).bearer_auth(&user).send().unwrap();
        assert_eq!(r.status(), 403, "a user token empties no trash");
        let list: serde_json::Value = client
            .get(&url)
            .bearer_auth(&operator)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(list["files"], 1, "{list}");
        assert_eq!(list["bytes"], 5, "{list}");
        let uid = nix::unistd::getuid().as_raw();
        assert!(
            list["units"][0]["path"]
                .as_str()
                .unwrap()
                .starts_with(&format!("/.trash/{uid}/")),
            "{list}"
        );
        let r = client
            .delete(format!("{url}?older_than_days=-1"))
            .bearer_auth(&operator)
            .send()
            .unwrap();
        assert_eq!(r.status(), 400);
        let kept: serde_json::Value = client
            .delete(format!("{url}?older_than_days=1"))
            .bearer_auth(&operator)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(kept["files"], 0, "{kept}");
        let purged: serde_json::Value = client
            .delete(&url)
            .bearer_auth(&operator)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(purged["files"], 1, "{purged}");
        assert!(common::names(&m.path(".trash")).is_empty());
    });
}

#[test]
fn a_name_deleted_twice_gets_a_second_bucket() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("a")).unwrap();
        let was = mode(&m.path("a"));
        assert_ne!(was, 0o700);
        fs::write(m.path("a/f"), b"first").unwrap();
        settle();
        fs::remove_file(m.path("a/f")).unwrap();
        fs::write(m.path("a/f"), b"second").unwrap();
        settle();
        fs::remove_file(m.path("a/f")).unwrap();
        // A directory made private in between: its copy must not stay open.
        fs::write(m.path("a/g"), b"third").unwrap();
        fs::set_permissions(m.path("a"), fs::Permissions::from_mode(0o700)).unwrap();
        settle();
        fs::remove_file(m.path("a/g")).unwrap();
        let uid = nix::unistd::getuid().as_raw();
        let user = m.path(&format!(".trash/{uid}"));
        let buckets = common::names(&user);
        assert_eq!(buckets.len(), 3, "{buckets:?}");
        let got: Vec<Vec<u8>> = buckets
            .iter()
            .map(|b| {
                let d = user.join(b).join("a");
                let f = if d.join("f").exists() { "f" } else { "g" };
                fs::read(d.join(f)).unwrap()
            })
            .collect();
        assert_eq!(got, [&b"first"[..], b"second", b"third"]);
        assert_eq!(mode(&user.join(&buckets[2]).join("a")), 0o700);
        assert_eq!(mode(&user.join(&buckets[0]).join("a")), was);
    });
}

#[test]
fn the_trash_yields_when_writes_the_daemon_does_not_see_fill_backing() {
    common::engine::every_engine(|| {
        let m = Mount::prepared(&[], |backing| {
            nix::mount::mount(
                Some("tmpfs"),
                backing,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=40m"),
            )
            .expect("mount a tmpfs as BACKING (needs root)");
        });
        let _tmpfs = Unmounter(m.backing.clone());
        const MIB: usize = 1 << 20;
        fill(&m.path("old"), 10 * MIB, 1).unwrap();
        settle();
        fs::remove_file(m.path("old")).unwrap();
        assert_eq!(common::trashed(&m).len(), 1);
        // Leave 5 MiB free (under twice the 4 MiB reserve of a small
        // filesystem); no further write needed: the trash gives way.
        let left = avail(&m.backing) as usize;
        fill(&m.path("filler"), left - 5 * MIB, 2).unwrap();
        eventually("the trash purged", || common::trashed(&m).is_empty());
        // The names go at the purge's commit, the object just after it.
        eventually("the purged space returned", || {
            avail(&m.backing) as usize > 12 * MIB
        });
        assert_eq!(fs::read(m.path("filler")).unwrap().len(), left - 5 * MIB);
    });
}
