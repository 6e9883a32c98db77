//! Test harness: mount a real artfs over a temp BACKING with the built
//! binary, and unmount it when dropped. Every test owns its own mount.
#![allow(dead_code)]

pub mod archive;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mount {
    pub backing: PathBuf,
    pub mnt: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    _dir: tempfile::TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_artfs")
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
        let dir = tempfile::Builder::new()
            .prefix("artfs-test-")
            .tempdir()
            .expect("tempdir");
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let mut m = Mount {
            backing,
            mnt,
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            _dir: dir,
        };
        m.mount();
        m
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Start the daemon and wait until the mount is live.
    pub fn mount(&mut self) {
        assert!(self.child.is_none(), "already mounted");
        let child = Command::new(bin())
            .arg("mount")
            .arg(&self.backing)
            .arg(&self.mnt)
            .arg("--allow-other")
            .args(&self.extra_args)
            .env(
                "ARTFS_LOG",
                std::env::var("ARTFS_LOG").unwrap_or_else(|_| "warn,fuser::session=error".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn artfs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&self.mnt) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("artfs exited before mounting: {status}");
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
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

    pub fn remount(&mut self) {
        self.unmount();
        self.mount();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status();
            if is_mounted(&self.mnt) {
                let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
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

/// 0 for success, else the errno: for comparing outcomes with ext4.
pub fn code<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().expect("an OS error"),
    }
}
