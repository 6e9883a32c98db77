//! Several "nodes" of one PostgreSQL store on this machine: each is a
//! daemon with its own BACKING and mount point. A node's BACKING shares
//! the first one's `objects` (shared content, as on a shared filesystem)
//! and has its own `.artfs` (lock, staging), so nothing but the store's
//! lease and feed ties the nodes together (the BACKING flock cannot stand
//! in for the lease).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::pg::PgDatabase;
use super::{bin, is_mounted, stop_daemon};

/// One daemon serving the store from its own BACKING and mount point.
pub struct Node {
    pub dir: tempfile::TempDir,
    pub db: Vec<String>,
    /// Flags of `artfs mount` beyond the store's (`--replica`, ...).
    pub extra: Vec<String>,
    pub child: Option<Child>,
    /// Content in this bucket (`s3://...`), BACKING its cache (each node
    /// its own); `None`: BACKING's objects, shared by the nodes.
    pub bucket: Option<String>,
}

impl Node {
    /// The store's first node: a fresh BACKING.
    pub fn first(db: &PgDatabase) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("artfs-node-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("backing")).unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        Node {
            dir,
            db: vec![
                "--db".into(),
                db.url.clone(),
                "--table-prefix".into(),
                "t".into(),
            ],
            extra: Vec::new(),
            child: None,
            bucket: None,
        }
    }

    /// The first node of a store whose content is in a bucket of the test
    /// S3 server (tests/common/s3.rs).
    pub fn first_on(db: &PgDatabase, bucket: &super::s3::Bucket) -> Node {
        let mut n = Node::first(db);
        n.bucket = Some(bucket.url("store"));
        n
    }

    /// Another node of `other`'s store (which must have been mounted once):
    /// the same content and store id, state of its own, serving with
    /// `extra` flags.
    pub fn beside(other: &Node, extra: &[&str]) -> Node {
        let n = Node {
            dir: tempfile::Builder::new()
                .prefix("artfs-node-")
                .tempdir()
                .unwrap(),
            db: other.db.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            bucket: other.bucket.clone(),
        };
        if n.bucket.is_some() {
            // A cache of its own; the store id comes from the bucket.
            fs::create_dir(n.mnt()).unwrap();
            return n;
        }
        fs::create_dir_all(n.backing().join(".artfs")).unwrap();
        fs::create_dir(n.mnt()).unwrap();
        symlink(other.backing().join("objects"), n.backing().join("objects")).unwrap();
        fs::copy(
            other.backing().join(".artfs/store-id"),
            n.backing().join(".artfs/store-id"),
        )
        .unwrap();
        n
    }

    pub fn backing(&self) -> PathBuf {
        self.dir.path().join("backing")
    }

    /// BACKING as commands name it, and the variables they need.
    fn location(&self) -> (Vec<std::ffi::OsString>, Vec<(&'static str, String)>) {
        match &self.bucket {
            None => (vec![self.backing().into()], Vec::new()),
            Some(url) => {
                let server = super::s3::S3Server::shared();
                (
                    vec![
                        url.into(),
                        "--cache-dir".into(),
                        self.backing().into(),
                        "--s3-endpoint".into(),
                        server.endpoint.clone().into(),
                    ],
                    server.env(),
                )
            }
        }
    }
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt().join(rel)
    }
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().unwrap().id() as i32)
    }

    /// Start the daemon; Err(its log) when it exits instead of mounting.
    pub fn start(&mut self) -> Result<(), String> {
        self.start_with(&[])
    }

    /// Start the daemon with more flags (and `env`).
    pub fn start_with(&mut self, env: &[(&str, &str)]) -> Result<(), String> {
        let log = fs::File::create(self.dir.path().join("log")).unwrap();
        let (location, store_env) = self.location();
        let child = Command::new(bin())
            .arg("mount")
            .args(location)
            .arg(self.mnt())
            .args(&self.db)
            .args(&self.extra)
            .env(
                "ARTFS_LOG",
                std::env::var("ARTFS_TEST_NODE_LOG").unwrap_or("info,fuser=error".into()),
            )
            .envs(store_env)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(40);
        while !is_mounted(&self.mnt()) {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exit {st}: {}", self.log()));
            }
            assert!(Instant::now() < deadline, "no mount: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Unmount and wait for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(self.mnt())
            .status()
            .unwrap();
        assert!(st.success());
        let st = child.wait().unwrap();
        assert!(st.success(), "{st}: {}", self.log());
    }

    /// kill -9, and detach the dead mount it leaves.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
        let _ = nix::mount::umount2(&self.mnt(), nix::mount::MntFlags::MNT_DETACH);
    }

    /// `artfs SUB BACKING <store flags> ARGS`: (exit code, output).
    pub fn command(&self, sub: &str, args: &[&str]) -> (i32, String) {
        let (location, env) = self.location();
        let out = Command::new(bin())
            .arg(sub)
            .args(location)
            .args(&self.db)
            .envs(env)
            .args(args)
            .env("ARTFS_LOG", "warn")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), super::output_text(&out))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            // A paused daemon must run again to exit.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            stop_daemon(child, &self.mnt(), Duration::from_secs(10));
        }
    }
}

/// Write `data` to `p` and fsync it.
pub fn write_synced(p: &Path, data: &[u8]) {
    let f = fs::File::create(p).unwrap();
    std::io::Write::write_all(&mut &f, data).unwrap();
    f.sync_all().unwrap();
}

/// Wait up to `within` for `check` to hold; the time it took, or None.
pub fn within(within: Duration, mut check: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        if check() {
            return Some(t0.elapsed());
        }
        if t0.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
