//! Who may do what beyond the permission bits (issue 12, points 2, 13 and
//! 15): retention locks, scheduled removals, the reserved `user.artstore.`
//! namespace and its refusals, the API's identity by role, and the
//! confirmations of irreversible mode changes. Mount tests use real
//! syscalls as root and as other uids (forked children); API tests use real
//! keys, tokens and HTTP.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use artfs::auth::{Role, Scope};
use common::engine::StoreDb;
use common::{as_user, bin, errno, getx, is_mounted, listx, removex, setx, Mount};
use serde_json::{json, Value};

const NOBODY: u32 = 65534;
const OTHER: u32 = 65533;
const RETENTION: &str = "user.artstore.retention_until";
const EXPIRES: &str = "user.artstore.expires_at";
const TTL: &str = "user.artstore.default_ttl";

// ------------------------------------------------------------ helpers

/// setxattr as `uid`: 0 or the errno.
fn setx_as(uid: u32, p: &Path, name: &str, value: &str) -> i32 {
    let (p, n, v) = (
        CString::new(p.as_os_str().as_bytes()).unwrap(),
        CString::new(name).unwrap(),
        value.as_bytes().to_vec(),
    );
    as_user(uid, uid, move || unsafe {
        let rc = libc::lsetxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0);
        if rc < 0 {
            *libc::__errno_location()
        } else {
            0
        }
    })
}

/// removexattr as `uid`: 0 or the errno.
fn removex_as(uid: u32, p: &Path, name: &str) -> i32 {
    let (p, n) = (
        CString::new(p.as_os_str().as_bytes()).unwrap(),
        CString::new(name).unwrap(),
    );
    as_user(uid, uid, move || unsafe {
        if libc::lremovexattr(p.as_ptr(), n.as_ptr()) < 0 {
            *libc::__errno_location()
        } else {
            0
        }
    })
}

/// Let other users reach the mount (the harness's temp dir is 0700).
fn open_up(m: &Mount) {
    fs::set_permissions(m.mnt.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
}

fn chown(p: &Path, uid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(uid)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// An RFC 3339 time `days` from now.
fn in_days(days: i64) -> String {
    let t = std::time::SystemTime::now() + Duration::from_secs((days * 86400) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

// ------------------------------------------------------------ the mount

/// Setting a retention lock on the mount is root's alone (like chattr +i),
/// even on one's own file; an expiry is the owner's (or root's); removing
/// an expiry takes only write access; `--max-retention` (default 100
/// years) bounds every lock, root's too.
#[test]
fn retention_is_root_only_and_expiry_the_owners_on_the_mount() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        open_up(&m);
        chmod(&m.mnt, 0o777);
        let own = m.path("own.txt");
        fs::write(&own, b"mine").unwrap();
        chown(&own, NOBODY);
        chmod(&own, 0o666);

        // The owner cannot lock their own file, not for a day, not forever.
        assert_eq!(setx_as(NOBODY, &own, RETENTION, &in_days(1)), libc::EPERM);
        assert_eq!(
            setx_as(NOBODY, &own, RETENTION, "2261-12-31T00:00:00Z"),
            libc::EPERM
        );
        assert_eq!(errno(getx(&own, RETENTION)), libc::ENODATA);
        // Another user who may write the file may describe it, not schedule
        // its removal; the owner may.
        assert_eq!(setx_as(OTHER, &own, "user.artstore.description", "d"), 0);
        assert_eq!(setx_as(OTHER, &own, EXPIRES, &in_days(30)), libc::EPERM);
        assert_eq!(setx_as(NOBODY, &own, EXPIRES, &in_days(30)), 0);
        // Cancelling the removal takes only write access.
        assert_eq!(removex_as(OTHER, &own, EXPIRES), 0);
        assert_eq!(errno(getx(&own, EXPIRES)), libc::ENODATA);
        assert_eq!(setx_as(OTHER, &own, EXPIRES, &in_days(30)), libc::EPERM);

        // default_ttl on a directory: its owner's (or root's).
        let dir = m.path("d");
        fs::create_dir(&dir).unwrap();
        chmod(&dir, 0o777);
        assert_eq!(setx_as(NOBODY, &dir, TTL, "3600"), libc::EPERM);
        chown(&dir, NOBODY);
        assert_eq!(setx_as(NOBODY, &dir, TTL, "3600"), 0);
        assert_eq!(setx_as(OTHER, &dir, TTL, "60"), libc::EPERM);
        assert_eq!(getx(&dir, TTL).unwrap(), b"3600");

        // Root may lock, within the bound.
        let e = errno(setx(&own, RETENTION, b"2261-12-31T00:00:00Z"));
        assert_eq!(e, libc::EINVAL, "beyond the default 100 years");
        assert_eq!(errno(getx(&own, RETENTION)), libc::ENODATA);
        let until = in_days(2);
        setx(&own, RETENTION, until.as_bytes()).unwrap();
        assert_eq!(fs::read(&own).unwrap(), b"mine");
        // The lock holds against the owner and root alike.
        assert_eq!(errno(fs::remove_file(&own)), libc::EPERM);
        assert_eq!(errno(removex(&own, RETENTION)), libc::EPERM);
        // Extending is still a lock: the owner cannot, root can.
        assert_eq!(setx_as(NOBODY, &own, RETENTION, &in_days(3)), libc::EPERM);
        setx(&own, RETENTION, in_days(3).as_bytes()).unwrap();
    });
}

#[test]
fn max_retention_bounds_locks_and_zero_lifts_the_bound() {
    common::engine::every_engine(|| {
        let m = Mount::with_args(&["--max-retention", "30d"]);
        let f = m.path("f");
        fs::write(&f, b"x").unwrap();
        assert_eq!(
            errno(setx(&f, RETENTION, in_days(60).as_bytes())),
            libc::EINVAL
        );
        setx(&f, RETENTION, in_days(10).as_bytes()).unwrap();
        // Refused extensions leave the lock as it was.
        assert_eq!(
            errno(setx(&f, RETENTION, in_days(45).as_bytes())),
            libc::EINVAL
        );
        assert!(getx(&f, RETENTION).is_ok());
        drop(m);

        let m = Mount::with_args(&["--max-retention", "0"]);
        let f = m.path("f");
        fs::write(&f, b"x").unwrap();
        setx(&f, RETENTION, b"2200-01-01T00:00:00Z").unwrap();
        assert_eq!(getx(&f, RETENTION).unwrap(), b"2200-01-01T00:00:00Z");
        drop(m);

        // A bad duration stops the start with a clear message.
        let d = tempfile::tempdir().unwrap();
        let (b, mnt) = (d.path().join("b"), d.path().join("m"));
        fs::create_dir_all(&b).unwrap();
        fs::create_dir_all(&mnt).unwrap();
        let out = Command::new(bin())
            .arg("mount")
            .arg(&b)
            .arg(&mnt)
            .args(["--max-retention", "forever"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("not a duration"), "{err}");
        assert!(!is_mounted(&mnt));
    });
}

/// A mount whose daemon logs at info level into a file we can read.
struct LoggedMount {
    dir: Option<tempfile::TempDir>,
    child: std::process::Child,
    mnt: Option<PathBuf>,
}

impl LoggedMount {
    fn start(backing: &Path, mnt: &Path, db: &StoreDb, dir: tempfile::TempDir) -> LoggedMount {
        let log = fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(bin())
            .arg("mount")
            .arg(backing)
            .arg(mnt)
            .args(&db.args)
            .env("ARTFS_LOG", "info,fuser=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lm = LoggedMount {
            dir: Some(dir),
            child,
            mnt: Some(mnt.to_path_buf()),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(mnt) {
            assert!(lm.child.try_wait().unwrap().is_none(), "artfs exited");
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        lm
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.as_ref().unwrap().path().join("log")).unwrap()
    }

    fn stop(mut self, mnt: &Path) -> tempfile::TempDir {
        nix::mount::umount(mnt).unwrap();
        assert!(self.child.wait().unwrap().success());
        self.mnt = None;
        self.dir.take().unwrap()
    }
}

impl Drop for LoggedMount {
    /// On a failed assertion: detach the mount and stop the daemon we
    /// started, by its pid.
    fn drop(&mut self) {
        if let Some(mnt) = self.mnt.take() {
            let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Refusals of archive attributes keep their errno and say why in the
/// log (once each, values cut short); an unknown name in the reserved
/// namespace is refused, not stored as a custom attribute; one a store
/// already holds stays listable and removable.
#[test]
fn reserved_names_are_refused_and_every_refusal_is_logged() {
    common::engine::every_engine(|| {
        let dir = tempfile::tempdir().unwrap();
        let (backing, mnt) = (dir.path().join("b"), dir.path().join("m"));
        fs::create_dir_all(&backing).unwrap();
        fs::create_dir_all(&mnt).unwrap();
        let logdir = tempfile::tempdir().unwrap();
        let db = common::engine::new_store_db("grants");
        let lm = LoggedMount::start(&backing, &mnt, &db, logdir);
        let f = mnt.join("f.txt");
        fs::write(&f, b"data").unwrap();

        let typo = "user.artstore.descripton";
        assert_eq!(errno(setx(&f, typo, b"quarterly")), libc::EINVAL);
        assert_eq!(errno(getx(&f, typo)), libc::ENODATA);
        assert!(!listx(&f).iter().any(|n| n == typo));
        assert_eq!(errno(setx(&f, "user.artstore.sha256", b"00")), libc::EPERM);
        assert_eq!(
            errno(setx(&f, "user.artstore.content_type", b"plain")),
            libc::EINVAL
        );
        let long = "x".repeat(5000);
        assert_eq!(
            errno(setx(&f, "user.artstore.expires_at", long.as_bytes())),
            libc::EINVAL
        );
        // Outside the reserved namespace, anything goes.
        setx(&f, "user.project", b"apollo").unwrap();
        setx(&f, "user.artstore.description", b"fine").unwrap();

        let ino = fs::metadata(&f).unwrap().ino();
        let logdir = lm.stop(&mnt);
        let log = fs::read_to_string(logdir.path().join("log")).unwrap();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("archive attribute refused"))
            .collect();
        assert_eq!(refusals.len(), 4, "one line per refusal:\n{log}");
        let has = |attr: &str, why: &str| {
            refusals
                .iter()
                .any(|l| l.contains(attr) && l.contains(why) && l.contains("INFO"))
        };
        assert!(has("descripton", "reserved user.artstore."), "{log}");
        assert!(has("sha256", "read-only"), "{log}");
        assert!(has("content_type", "MIME type"), "{log}");
        assert!(has("expires_at", "RFC 3339"), "{log}");
        assert!(!log.contains(&"x".repeat(100)), "long values are cut short");

        // A store holding such a name from before the rule: put one in the
        // tables while unmounted, as an old version would have stored it.
        db.sql(
            &backing,
            &format!(
                "INSERT INTO {{p}}_xattrs VALUES ({ino}, {}, {});",
                db.blob(typo.as_bytes()),
                db.blob(b"old")
            ),
        );
        let lm = LoggedMount::start(&backing, &mnt, &db, logdir);
        assert_eq!(getx(&f, typo).unwrap(), b"old");
        assert!(listx(&f).iter().any(|n| n == typo), "{:?}", listx(&f));
        // Changing it is refused; removing it is fine.
        assert_eq!(errno(setx(&f, typo, b"new")), libc::EINVAL);
        removex(&f, typo).unwrap();
        assert_eq!(errno(getx(&f, typo)), libc::ENODATA);
        assert_eq!(getx(&f, "user.project").unwrap(), b"apollo");
        assert!(lm.log().contains("archive attribute refused"));
        lm.stop(&mnt);
    });
}

// ------------------------------------------------------------ the API

fn token(role: Role) -> String {
    common::api::token(role.as_str(), role)
}

fn scoped(role: Role, scopes: &[Scope]) -> String {
    common::api::scoped("scoped", role, scopes)
}

/// The API with the identities the daemon picks by itself (no
/// `--api-uid 0` added: identity is what these tests are about).
struct Api(common::api::Api);

impl std::ops::Deref for Api {
    type Target = common::api::Api;
    fn deref(&self) -> &common::api::Api {
        &self.0
    }
}

impl std::ops::DerefMut for Api {
    fn deref_mut(&mut self) -> &mut common::api::Api {
        &mut self.0
    }
}

impl Api {
    fn start(extra: &[&str]) -> Api {
        Api(common::api::Api::with_default_identity(extra))
    }

    fn put(&self, tok: &str, rel: &str, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut r = self
            .client
            .put(format!("{}/api/v1/fs/{rel}", self.base))
            .bearer_auth(tok)
            .body(b"payload".to_vec());
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().unwrap();
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(Value::Null))
    }

    fn get(&self, tok: &str, rel: &str) -> u16 {
        self.client
            .get(format!("{}/api/v1/fs/{rel}", self.base))
            .bearer_auth(tok)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }

    fn patch(&self, tok: &str, rel: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .patch(format!("{}/api/v1/meta/{rel}", self.base))
            .bearer_auth(tok)
            .json(&body)
            .send()
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(Value::Null))
    }

    fn mode(&self, mode: &str, confirm: bool) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}/api/v1/mode", self.base))
            .bearer_auth(token(Role::Admin))
            .json(&json!({ "mode": mode, "confirm": confirm }))
            .send()
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(Value::Null))
    }
}

/// By default an admin token acts as root and the others as `nobody`, so
/// a user token passes no POSIX check the world would not; a root
/// directory owned by someone else makes that owner the default;
/// `--api-uid 0` brings back "every token acts as root".
#[test]
fn the_api_acts_as_root_for_admins_and_as_nobody_for_the_others() {
    common::engine::every_engine(|| {
        let mut api = Api::start(&[]);
        let (user, op, admin) = (token(Role::User), token(Role::Operator), token(Role::Admin));
        let private = api.m.path("private");
        fs::create_dir(&private).unwrap();
        chmod(&private, 0o700);
        fs::write(private.join("salaries.txt"), b"secret").unwrap();
        chmod(&private.join("salaries.txt"), 0o600);
        let shared = api.m.path("shared");
        fs::create_dir(&shared).unwrap();
        chmod(&shared, 0o777);

        // The root directory is root's 0755: only the admin may write there.
        assert_eq!(api.put(&user, "u.txt", &[]).0, 403);
        assert_eq!(api.put(&op, "o.txt", &[]).0, 403);
        let (s, meta) = api.put(&admin, "a.txt", &[]);
        assert_eq!(s, 201, "{meta}");
        assert_eq!(meta["uid"], 0);
        assert_eq!(fs::metadata(api.m.path("a.txt")).unwrap().uid(), 0);
        // Private to root: the admin reads it, the others do not.
        assert_eq!(api.get(&user, "private/salaries.txt"), 403);
        assert_eq!(api.get(&op, "private/salaries.txt"), 403);
        assert_eq!(api.get(&admin, "private/salaries.txt"), 200);
        let (s, _) = api.patch(&user, "private/salaries.txt", json!({"description": "x"}));
        assert_eq!(s, 403);
        // Where the world may write, user and operator tokens write as nobody.
        let (s, meta) = api.put(&user, "shared/u.txt", &[]);
        assert_eq!(s, 201, "{meta}");
        assert_eq!(meta["uid"], NOBODY);
        assert_eq!(meta["gid"], NOBODY);
        assert_eq!(fs::metadata(shared.join("u.txt")).unwrap().uid(), NOBODY);

        // A root directory owned by a user: that user is the default identity.
        chown(&api.m.mnt, 4321);
        api.m.unmount();
        api.m.mount();
        api.wait();
        let (s, meta) = api.put(&user, "u.txt", &[]);
        assert_eq!(s, 201, "{meta}");
        assert_eq!(meta["uid"], 4321);
        drop(api);

        // --api-uid 0: every token acts as root (the old default).
        let api = Api::start(&["--api-uid", "0"]);
        let (s, meta) = api.put(&user, "u.txt", &[]);
        assert_eq!(s, 201, "{meta}");
        assert_eq!(meta["uid"], 0);
    });
}

/// Through the API a retention lock takes operator or admin (and
/// `storage:admin` when the token is scoped), even where the token's
/// identity may write the file; an expiry takes what deleting takes;
/// cancelling one takes only write access; the store's bound is a 400.
#[test]
fn retention_and_expiry_through_the_api_follow_the_role() {
    common::engine::every_engine(|| {
        // Every token acts as root here: the role alone decides.
        let api = Api::start(&["--api-uid", "0"]);
        let (user, op, admin) = (token(Role::User), token(Role::Operator), token(Role::Admin));
        assert_eq!(api.put(&user, "f.txt", &[]).0, 201);

        // The review's attack: a user token locking a file until 2261.
        let (s, body) = api.patch(
            &user,
            "f.txt",
            json!({"retention_until": "2261-12-31T00:00:00Z"}),
        );
        assert_eq!(s, 403, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("privileged"),
            "{body}"
        );
        let (s, _) = api.patch(&user, "f.txt", json!({"retention_until": in_days(1)}));
        assert_eq!(s, 403);
        // Nor at upload time, and the refused upload leaves nothing.
        let (s, _) = api.put(&user, "g.txt", &[("X-Artfs-Retention-Until", &in_days(1))]);
        assert_eq!(s, 403);
        assert!(!api.m.path("g.txt").exists());
        // A scoped admin token without storage:admin may not lock either.
        let files_only = scoped(Role::Admin, &[Scope::FilesRead, Scope::FilesWrite]);
        assert_eq!(
            api.patch(&files_only, "f.txt", json!({"retention_until": in_days(1)}))
                .0,
            403
        );

        // The operator may, within the bound (a 400 that says why beyond it).
        let (s, body) = api.patch(
            &op,
            "f.txt",
            json!({"retention_until": "2261-12-31T00:00:00Z"}),
        );
        assert_eq!(s, 400, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("max-retention"),
            "{body}"
        );
        let (s, body) = api.patch(&op, "f.txt", json!({"retention_until": in_days(1)}));
        assert_eq!(s, 200, "{body}");
        assert!(body["retention_until"].is_string());
        // An admin token holding storage:admin may extend it.
        let storage = scoped(Role::Admin, &[Scope::FilesWrite, Scope::StorageAdmin]);
        assert_eq!(
            api.patch(&storage, "f.txt", json!({"retention_until": in_days(2)}))
                .0,
            200
        );
        let (s, meta) = api.put(&op, "h.txt", &[("X-Artfs-Retention-Until", &in_days(1))]);
        assert_eq!(s, 201, "{meta}");
        assert!(meta["retention_until"].is_string());

        // Expiry and default_ttl: what deleting takes.
        assert_eq!(api.put(&user, "e.txt", &[]).0, 201);
        let (s, _) = api.patch(&user, "e.txt", json!({"expires_at": in_days(7)}));
        assert_eq!(s, 403);
        let (s, body) = api.patch(&op, "e.txt", json!({"expires_at": in_days(7)}));
        assert_eq!(s, 200, "{body}");
        assert!(body["expires_at"].is_string(), "{body}");
        assert!(getx(&api.m.path("e.txt"), EXPIRES).is_ok());
        // Cancelling it: any token that may write the file.
        let (s, body) = api.patch(&user, "e.txt", json!({"expires_at": null}));
        assert_eq!(s, 200, "{body}");
        assert!(body.get("expires_at").is_none(), "{body}");
        fs::create_dir(api.m.path("d")).unwrap();
        assert_eq!(api.patch(&user, "d", json!({"default_ttl": 3600})).0, 403);
        let (s, body) = api.patch(&admin, "d", json!({"default_ttl": 3600}));
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["default_ttl"], "3600");
        // Unknown names in the reserved namespace are not custom attributes.
        let (s, _) = api.patch(
            &admin,
            "e.txt",
            json!({"custom_attributes": {"artstore.descripton": "x"}}),
        );
        assert_eq!(s, 400);
    });
}

/// ro -> ar is irreversible: like ro -> rw it needs confirmation, through
/// `artfs mode` and `POST /api/v1/mode`; an edit store's refusal says edit
/// is fixed for its life and how to make a store that can be frozen.
#[test]
fn irreversible_and_impossible_mode_changes_say_so() {
    common::engine::every_engine(|| {
        let api = Api::start(&["--mode", "rw"]);
        assert_eq!(api.mode("ro", false).0, 200);
        let (s, body) = api.mode("ar", false);
        assert_eq!(s, 409, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("irreversible"),
            "{body}"
        );
        let run = |args: &[&str]| api.m.command("mode").args(args).output().unwrap();
        let out = run(&["ar"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("irreversible") && err.contains("--confirm"),
            "{err}"
        );
        assert!(String::from_utf8_lossy(&run(&[]).stdout).starts_with("ro"));
        let out = run(&["ar", "--confirm"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&run(&[]).stdout).starts_with("ar"));
        drop(api);

        let m = Mount::new();
        let out = m.command("mode").arg("rw").output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("fixed for the store's life"), "{err}");
        assert!(err.contains("--mode rw"), "{err}");
        // Showing the mode says so too.
        let out = m.command("mode").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("edit ") && text.contains("--mode rw"),
            "{text}"
        );
    });
}
