//! Test harness: mount a real artfs over a temp BACKING with the built
//! binary, and unmount it when dropped. Every test owns its own mount.
#![allow(dead_code)]

pub mod api;
pub mod archive;
pub mod cluster;
pub mod engine;
pub mod keys;
pub mod pg;
pub mod redis;
pub mod s3;
pub mod services;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mount {
    pub backing: PathBuf,
    pub mnt: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Where the tables live (the test's engine, see `engine`).
    db: engine::StoreDb,
    _dir: tempfile::TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_artfs")
}

/// `fusermount3 -u MNT`, as a user would; true once it succeeded (false
/// also when fusermount3 is not installed). A mount
/// found busy is tried again for up to 5 s: a child another test thread
/// forks holds this process's descriptors (one on the mount, say) until
/// it execs, and an unmount in that moment is EBUSY.
pub fn fusermount_u(mnt: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ok = match Command::new("fusermount3")
            .arg("-u")
            .arg(mnt)
            .stderr(Stdio::null())
            .status()
        {
            Ok(st) => st.success(),
            // Not installed (scripts/install-deps.sh installs fuse3).
            Err(_) => return false,
        };
        if ok || !is_mounted(mnt) || Instant::now() > deadline {
            return ok;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `path` is currently a mount point.
pub fn is_mounted(path: &Path) -> bool {
    let want = path.to_string_lossy().replace(' ', "\\040");
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == want)
}

impl Mount {
    /// Mount a fresh store.
    pub fn new() -> Mount {
        Mount::with_args(&[])
    }

    pub fn with_args(args: &[&str]) -> Mount {
        Mount::prepared(args, |_| {})
    }

    /// Mount a fresh store after `prepare` ran on the empty BACKING
    /// directory (e.g. to mount a small tmpfs there).
    pub fn prepared(args: &[&str], prepare: impl FnOnce(&Path)) -> Mount {
        Mount::prepared_store(args, |backing, _| prepare(backing))
    }

    /// As [`Mount::prepared`], and `prepare` also gets the flags that name
    /// the store's tables (for a command that makes the store, like import).
    pub fn prepared_store(args: &[&str], prepare: impl FnOnce(&Path, &[String])) -> Mount {
        let dir = tempfile::Builder::new()
            .prefix("artfs-test-")
            .tempdir()
            .expect("tempdir");
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        // A test that names its own database keeps it.
        let db = if args.contains(&"--db") {
            engine::StoreDb::none()
        } else {
            engine::new_store_db("mount")
        };
        prepare(&backing, &db.args);
        let mut m = Mount {
            backing,
            mnt,
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            db,
            _dir: dir,
        };
        m.mount();
        m
    }

    /// The flags every command on this store needs besides BACKING
    /// (`--db URL --table-prefix P` on PostgreSQL; none on SQLite).
    pub fn store_args(&self) -> Vec<String> {
        self.db.args.clone()
    }

    /// BACKING as commands name it (with `--cache-dir` on S3, where the
    /// test's BACKING directory is the bucket's cache).
    pub fn location(&self) -> Vec<std::ffi::OsString> {
        self.db.location(&self.backing)
    }

    /// The local file of object `ino`: the object itself, or on S3 its
    /// cached copy.
    pub fn object_file(&self, ino: u64) -> PathBuf {
        self.backing
            .join(format!("objects/{:02x}/{:016x}", ino & 0xff, ino))
    }

    /// The keys of object `ino`'s versions in the bucket (S3 only).
    fn version_keys(&self, ino: u64) -> Vec<String> {
        let Some((bucket, prefix)) = self.bucket() else {
            return Vec::new();
        };
        bucket
            .keys(&format!("{prefix}/objects/{ino:016x}/"))
            .into_iter()
            .filter(|k| !k.ends_with("/attr.json"))
            .collect()
    }

    /// Whether object `ino` exists anywhere (BACKING, the bucket, the cache).
    pub fn object_exists(&self, ino: u64) -> bool {
        self.object_file(ino).exists() || !self.version_keys(ino).is_empty()
    }

    /// Take object `ino` away behind artfs's back (on S3: its versions and
    /// its cached copy), to [`Mount::put_back`] later.
    pub fn take_object(&self, ino: u64) -> TakenObject {
        let file = self.object_file(ino);
        let saved = self.backing.join(format!("taken-{ino}"));
        let mut keys = Vec::new();
        if let Some((bucket, _)) = self.bucket() {
            for k in self.version_keys(ino) {
                keys.push((k.clone(), bucket.get(&k).expect("version")));
                bucket.delete(&k);
            }
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(file.with_extension("cached"));
            return TakenObject { file: None, keys };
        }
        std::fs::rename(&file, &saved).unwrap();
        TakenObject {
            file: Some((saved, file)),
            keys,
        }
    }

    /// Put back what [`Mount::take_object`] took.
    pub fn put_back(&self, t: TakenObject) {
        if let Some((saved, file)) = t.file {
            std::fs::rename(saved, file).unwrap();
        }
        if let Some((bucket, _)) = self.bucket() {
            for (k, bytes) in &t.keys {
                bucket.put(k, bytes);
            }
        }
    }

    /// Cut object `ino` to `len` bytes behind artfs's back (on S3: its
    /// current version, and the cached copy dropped).
    pub fn cut_object(&self, ino: u64, len: usize) {
        let file = self.object_file(ino);
        if let Some((bucket, _)) = self.bucket() {
            let keys = self.version_keys(ino);
            let key = keys.last().expect("a version");
            let bytes = bucket.get(key).unwrap();
            bucket.put(key, &bytes[..len]);
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(file.with_extension("cached"));
            return;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(len as u64)
            .unwrap();
    }

    /// Replace object `ino`'s bytes behind artfs's back (on S3: its
    /// current version's, and the cached copy dropped).
    pub fn set_object_bytes(&self, ino: u64, bytes: &[u8]) {
        let file = self.object_file(ino);
        if let Some((bucket, _)) = self.bucket() {
            let keys = self.version_keys(ino);
            bucket.put(keys.last().expect("a version"), bytes);
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(file.with_extension("cached"));
            return;
        }
        std::fs::write(&file, bytes).unwrap();
    }

    /// The bytes of inode `ino`'s attr.json sidecar, if it has one.
    pub fn sidecar_bytes(&self, ino: u64) -> Option<Vec<u8>> {
        match self.bucket() {
            Some((bucket, prefix)) => bucket.get(&format!("{prefix}/objects/{ino:016x}/attr.json")),
            None => std::fs::read(self.backing.join(format!(
                "objects/{:02x}/{:016x}.attr.json",
                ino & 0xff,
                ino
            )))
            .ok(),
        }
    }

    /// Replace the attr.json sidecar of `ino` (in the bucket on S3).
    pub fn set_sidecar_bytes(&self, ino: u64, bytes: &[u8]) {
        match self.bucket() {
            Some((bucket, prefix)) => {
                bucket.put(&format!("{prefix}/objects/{ino:016x}/attr.json"), bytes)
            }
            None => std::fs::write(
                self.backing
                    .join(format!("objects/{:02x}/{:016x}.attr.json", ino & 0xff, ino)),
                bytes,
            )
            .unwrap(),
        }
    }

    /// Variables every command on this store needs (S3 credentials).
    pub fn store_env(&self) -> Vec<(String, String)> {
        self.db.env.clone()
    }

    /// The bucket holding this store's content, and its key prefix (S3 only).
    pub fn bucket(&self) -> Option<(s3::Bucket<'static>, String)> {
        self.db.bucket()
    }

    /// The content version the tables name for `ino` ("" for none).
    pub fn recorded_version(&self, ino: u64) -> String {
        self.query(&format!(
            "SELECT coalesce(version, '') FROM {{p}}_inodes WHERE ino = {ino}"
        ))
        .concat()
    }

    /// The names of the content versions of `ino` in the bucket (S3 only).
    pub fn bucket_versions(&self, ino: u64) -> Vec<String> {
        let (server, prefix) = self.bucket().expect("an S3 store");
        server
            .keys(&format!("{prefix}/objects/{ino:016x}/"))
            .iter()
            .filter(|k| !k.ends_with("attr.json"))
            .map(|k| k.rsplit('/').next().unwrap().to_string())
            .collect()
    }

    /// Wait until the bucket holds one version of `ino`, later than
    /// `after` ("" for any), and the tables name it (S3 only); returns it.
    /// (A close's release reaches the daemon after close(2) returns.)
    pub fn settled_version(&self, ino: u64, after: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (held, named) = (self.bucket_versions(ino), self.recorded_version(ino));
            if held.len() == 1 && held[0] == named && named.as_str() > after {
                return named;
            }
            assert!(
                Instant::now() < deadline,
                "the bucket holds {held:?}, the tables name {named:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Serve the store from other tables from now on (after `artfs db
    /// copy`): the flags that name them.
    pub fn use_tables(&mut self, args: &[&str]) {
        self.db = engine::StoreDb::given(args);
    }

    /// Run SQL on this store's tables behind artfs's back (`{p}` is the
    /// table prefix): see [`engine::StoreDb::sql`].
    pub fn sql(&self, sql: &str) {
        self.db.sql(&self.backing, sql);
    }

    /// Rows of a text query on this store's tables (`{p}`: the prefix).
    pub fn query(&self, sql: &str) -> Vec<String> {
        self.db.query(&self.backing, sql)
    }

    /// `bytes` as an SQL literal of the engine's binary type.
    pub fn blob(&self, bytes: &[u8]) -> String {
        self.db.blob(bytes)
    }

    /// Lose this store's tables, as a disaster would.
    pub fn lose_tables(&self) {
        self.db.lose_tables(&self.backing);
    }

    /// A path inside the mount; a leading `/` means the mount's root
    /// (never the host's: `PathBuf::join` would drop the mount point).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel.trim_start_matches('/'))
    }

    /// Start the daemon and wait until the mount is live.
    pub fn mount(&mut self) {
        if let Err(status) = self.try_mount(&[]) {
            panic!("artfs exited before mounting: {status}");
        }
    }

    /// Start the daemon with extra environment; Err if it exits before the
    /// mount appears.
    pub fn try_mount(&mut self, env: &[(&str, &str)]) -> Result<(), std::process::ExitStatus> {
        assert!(self.child.is_none(), "already mounted");
        let child = Command::new(bin())
            .arg("mount")
            .args(self.db.location(&self.backing))
            .arg(&self.mnt)
            .arg("--allow-other")
            .args(&self.db.args)
            .args(&self.extra_args)
            .env(
                "ARTFS_LOG",
                std::env::var("ARTFS_LOG").unwrap_or_else(|_| "warn,fuser::session=error".into()),
            )
            .envs(self.db.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn artfs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&self.mnt) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(status);
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Arm crash points in the running daemon (test builds have them):
    /// `name=actions` lines, as the `fail` crate reads them.
    pub fn arm(&self, points: &[&str]) {
        let file = self.backing.join(".artfs/failpoints");
        let armed = self.backing.join(".artfs/failpoints.armed");
        let _ = std::fs::remove_file(&armed);
        std::fs::write(&file, points.join("\n")).unwrap();
        let pid = nix::unistd::Pid::from_raw(self.pid().expect("mounted") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !armed.exists() {
            assert!(Instant::now() < deadline, "crash points were not armed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait for the daemon to die at an armed crash point (abnormally),
    /// then clear the stale mount it leaves. Panics if it lives on.
    pub fn expect_crash(&mut self, what: &str) {
        let mut child = self.child.take().expect("mounted");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
                panic!("the daemon never reached crash point {what}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            !status.success(),
            "the daemon exited cleanly instead of crashing"
        );
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }

    /// `artfs SUB BACKING` with the store's flags (its database on
    /// PostgreSQL): an offline command on this store.
    pub fn command(&self, sub: &str) -> Command {
        let mut c = Command::new(bin());
        c.arg(sub)
            .args(self.db.location(&self.backing))
            .args(&self.db.args)
            .envs(self.db.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// Run `artfs fsck` on this store: (exit code, output).
    pub fn fsck(&self, repair: bool) -> (i32, String) {
        let mut c = self.command("fsck");
        if repair {
            c.arg("--repair");
        }
        let out = c.env("ARTFS_LOG", "warn").output().expect("run fsck");
        let text = output_text(&out);
        (out.status.code().unwrap_or(-1), text)
    }

    /// Assert that fsck finds the (unmounted) store consistent.
    pub fn assert_consistent(&self) {
        let (code, out) = self.fsck(false);
        assert_eq!(code, 0, "fsck found problems:\n{out}");
    }

    /// Unmount cleanly and wait for the daemon to exit successfully.
    pub fn unmount(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let status = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "artfs exited with {st}");
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("artfs did not exit after unmount");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the daemon with SIGKILL, leaving a stale mount, then clear it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }

    /// SIGKILL the daemon and wait for it, leaving the dead mount in place
    /// (its users get ENOTCONN) until [`Mount::clear_stale`].
    pub fn kill_only(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Detach the dead mount a killed daemon left.
    pub fn clear_stale(&self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }

    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    /// Mount again with `more` arguments after those it was made with
    /// (kept for later remounts too).
    pub fn remount_with(&mut self, more: &[&str]) {
        self.unmount();
        self.extra_args.extend(more.iter().map(|a| a.to_string()));
        self.mount();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// An object [`Mount::take_object`] took away.
pub struct TakenObject {
    /// Where the file went, and where it was.
    file: Option<(PathBuf, PathBuf)>,
    /// S3: the versions' keys and bytes.
    keys: Vec<(String, Vec<u8>)>,
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_daemon(child, &self.mnt, Duration::from_secs(10));
        }
    }
}

/// The errno of a failed std::io call.
pub fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

/// A fresh directory on the local ext4 root filesystem, to run the same
/// syscalls against as a reference.
pub fn ext4_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("artfs-ext4-ref-")
        .tempdir_in("/tmp")
        .unwrap()
}

/// Open `p` for reading and writing, created or truncated (`O_RDWR |
/// O_CREAT | O_TRUNC`).
pub fn create_rw(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .unwrap()
}

/// `writers` threads, each writing its own file `w{t}` under `root` in
/// 4 KiB blocks of the byte `t`, until ENOSPC (any other error fails) or
/// `blocks` blocks; the bytes written by all of them.
pub fn fill_concurrently(root: &Path, writers: u8, blocks: usize) -> u64 {
    use std::io::Write;
    let threads: Vec<_> = (0..writers)
        .map(|t| {
            let path = root.join(format!("w{t}"));
            std::thread::spawn(move || {
                let mut f = std::fs::File::create(path).unwrap();
                let mut written = 0u64;
                for _ in 0..blocks {
                    match f.write(&[t; 4096]) {
                        Ok(n) => written += n as u64,
                        Err(e) => {
                            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                            break;
                        }
                    }
                }
                written
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// 0 for success, else the errno: for comparing outcomes with ext4.
pub fn code<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().expect("an OS error"),
    }
}

fn cpath(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_os_error<T>(rc: isize) -> std::io::Result<T>
where
    T: Default,
{
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(T::default())
    }
}

/// lsetxattr(2) with no flags.
pub fn setx(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::lsetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    last_os_error(rc as isize)
}

/// lgetxattr(2) into a 64 KiB buffer.
pub fn getx(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let n = std::ffi::CString::new(name).unwrap();
    let mut v = vec![0u8; 65536];
    // SAFETY: valid C strings and buffer.
    let len = unsafe {
        libc::lgetxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    last_os_error::<()>(len as isize)?;
    v.truncate(len as usize);
    Ok(v)
}

/// lremovexattr(2).
pub fn removex(p: &Path, name: &str) -> std::io::Result<()> {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings.
    let rc = unsafe { libc::lremovexattr(cpath(p).as_ptr(), n.as_ptr()) };
    last_os_error(rc as isize)
}

/// The names in directory `dir`, sorted.
pub fn names(dir: &Path) -> Vec<std::ffi::OsString> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

/// llistxattr(2): the names.
pub fn listx(p: &Path) -> Vec<String> {
    let mut v = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(cpath(p).as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    assert!(
        n >= 0,
        "listxattr {p:?}: {}",
        std::io::Error::last_os_error()
    );
    v.truncate(n as usize);
    v.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Run `f` in a forked child as `uid`/`gid` (no supplementary groups) and
/// return what it returned (an errno, 0 for success).
pub fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
    as_user_in(uid, gid, &[], f)
}

/// [`as_user`] with supplementary `groups`. The child makes only plain
/// libc calls on what the parent prepared.
pub fn as_user_in(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> i32) -> i32 {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    let groups: Vec<libc::gid_t> = groups.to_vec();
    // SAFETY: the child makes only plain libc calls and _exits.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return 250;
                }
                f()
            }))
            .unwrap_or(251);
            // SAFETY: leave the forked child without running destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, code) => {
                assert!(code < 250, "child as uid {uid} failed to start ({code})");
                code
            }
            other => panic!("child as uid {uid}: {other:?}"),
        },
    }
}

/// The files in the trash, as paths relative to `/.trash`
/// (`<uid>/<when>/<original path>`), sorted; none when there is no trash.
pub fn trashed(m: &Mount) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        // A directory the collector purges while this walks is simply gone.
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            r => r.unwrap(),
        };
        for e in entries {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &r, out);
            } else {
                out.push(r);
            }
        }
    }
    let mut out = Vec::new();
    if m.path(".trash").exists() {
        walk(&m.path(".trash"), "", &mut out);
    }
    out.sort();
    out
}

/// Tear down a daemon a test started (on drop, whatever state it is in):
/// unmount `mnt` (lazily if `fusermount3` cannot), give the daemon `grace`
/// to exit, then kill it by its own pid.
pub fn stop_daemon(mut child: Child, mnt: &Path, grace: Duration) {
    let _ = Command::new("fusermount3").arg("-u").arg(mnt).status();
    if is_mounted(mnt) {
        let _ = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH);
    }
    let deadline = Instant::now() + grace;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A finished command's stdout then stderr, as text (for messages and
/// checks of what a command said).
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// lsetxattr(2), as an `io::Result`.
pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// lgetxattr(2) of a value up to 64 KiB; `None` when absent or failing.
pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    let n = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and buffer.
    let len =
        unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

/// A shared writable mapping of a file's first `len` bytes, unmapped on
/// drop: it may outlive the descriptor it was made from.
pub struct SharedMap {
    ptr: *mut u8,
    len: usize,
}

impl SharedMap {
    pub fn of(f: &std::fs::File, len: usize) -> SharedMap {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh mapping of an open file; unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        SharedMap {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Write `bytes` at `at` through the mapping and msync it.
    pub fn write(&mut self, at: usize, bytes: &[u8]) {
        self.try_write(at, bytes).expect("msync");
    }

    /// [`SharedMap::write`], returning msync's error (the write back
    /// refused).
    pub fn try_write(&mut self, at: usize, bytes: &[u8]) -> std::io::Result<()> {
        assert!(at + bytes.len() <= self.len);
        // SAFETY: within the mapping, which this value owns.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(at), bytes.len());
            if libc::msync(self.ptr.cast(), self.len, libc::MS_SYNC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
