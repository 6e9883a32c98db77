//! artfs mounted the way fstab does it: mount(8) → Debian's mount.fuse3 →
//! `artfs BACKING MNT -o OPTIONS` (what `mount -t fuse.artfs` runs), and
//! `mount.artfs` for `-t artfs`. The options
//! take effect, a bad one fails the mount with a message naming it and
//! leaves nothing mounted, and `umount` stops the daemon.
//!
//! Needs root and /sbin/mount.fuse3 (package fuse3, installed by
//! scripts/install-deps.sh); skipped with a message otherwise.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, is_mounted};

const MIB: u64 = 1 << 20;

fn usable() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mount(8) needs root");
        return false;
    }
    if !Path::new("/sbin/mount.fuse3").exists() {
        eprintln!("skipped: no /sbin/mount.fuse3 (apt-get install fuse3)");
        return false;
    }
    true
}

/// A BACKING, a mount point, and a directory holding `artfs` (and
/// `mount.artfs`) links to the built binary for PATH. Dropping it unmounts
/// and stops whatever a failed test left behind.
struct Setup {
    dir: tempfile::TempDir,
    backing: PathBuf,
    mnt: PathBuf,
    path: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("artfs-fstab-")
            .tempdir()
            .unwrap();
        let (backing, mnt, bindir) = (
            dir.path().join("backing"),
            dir.path().join("mnt"),
            dir.path().join("bin"),
        );
        for d in [&backing, &mnt, &bindir] {
            std::fs::create_dir_all(d).unwrap();
        }
        for name in ["artfs", "mount.artfs"] {
            std::os::unix::fs::symlink(bin(), bindir.join(name)).unwrap();
        }
        let path = format!(
            "{}:{}",
            bindir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Setup {
            dir,
            backing,
            mnt,
            path,
        }
    }

    /// mount(8) through mount.fuse3 with its output on pipes: it must
    /// return although the daemon lives on (the daemon lets go of the
    /// pipe once ready). mount(8) resets PATH for its helpers, so instead
    /// of `-t fuse.artfs SOURCE` (which needs artfs in /usr/bin or the
    /// like) this names the test's binary in mount.fuse3's `PROGRAM#SOURCE`
    /// form: the same `artfs SOURCE MNT -o OPTS` call.
    fn mount(&self, source: &Path, opts: &str) -> Output {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "fuse"])
            .arg(format!(
                "{}#{}",
                self.dir.path().join("bin/artfs").display(),
                source.display()
            ))
            .arg(&self.mnt)
            .args(["-o", opts]);
        self.run(cmd)
    }

    fn run(&self, mut cmd: Command) -> Output {
        let mut child = cmd
            .env("PATH", &self.path)
            .env("ARTFS_LOG", "warn,fuser::session=error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let reader = |mut p: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = p.read_to_end(&mut v);
                v
            })
        };
        let out = reader(Box::new(child.stdout.take().unwrap()));
        let err = reader(Box::new(child.stderr.take().unwrap()));
        let status = wait_for(|| child.try_wait().unwrap(), 60, "mount to return");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(out.is_finished() && err.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "mount returned but its output pipes stay open (held by the daemon)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Output {
            status,
            stdout: out.join().unwrap(),
            stderr: err.join().unwrap(),
        }
    }

    /// Daemons whose command line names this test's directory.
    fn daemons(&self) -> Vec<i32> {
        let me = self.dir.path().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.iter().any(|a| a == "mount")
                && args.iter().any(|a| a.contains(&me))
                && args.first().is_some_and(|a| a.ends_with("artfs"))
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// `umount MNT`, then wait for the daemon to exit.
    fn umount(&self, daemon: i32) {
        let st = Command::new("umount").arg(&self.mnt).status().unwrap();
        assert!(st.success(), "umount failed");
        assert!(!is_mounted(&self.mnt));
        let proc = PathBuf::from(format!("/proc/{daemon}"));
        wait_for(
            || (!proc.exists()).then_some(()),
            20,
            "the daemon to exit at umount",
        );
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
        for pid in self.daemons() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn wait_for<T>(mut f: impl FnMut() -> Option<T>, secs: u64, what: &str) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(o: &Output) -> String {
    common::output_text(o)
}

fn total_bytes(mnt: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(mnt).unwrap();
    s.blocks() as u64 * s.fragment_size() as u64
}

#[test]
fn mount_with_options_then_umount() {
    if !usable() {
        return;
    }
    let s = Setup::new();
    // Options of artfs (both spellings), and mount(8)'s own, ignored.
    let out = s.mount(
        &s.backing,
        "defaults,_netdev,nofail,x-systemd.automount,allow_other,capacity=10M,trash-days=0",
    );
    assert!(out.status.success(), "mount failed: {}", text(&out));
    assert!(is_mounted(&s.mnt), "not mounted after mount returned");
    assert_eq!(total_bytes(&s.mnt), 10 * MIB, "capacity=10M took effect");
    // The store serves: a file written through the mount lands in it.
    std::fs::write(s.mnt.join("hello"), b"hi").unwrap();
    assert_eq!(std::fs::read(s.mnt.join("hello")).unwrap(), b"hi");
    // trash-days=0: an unlinked file is gone, not kept in /.trash.
    std::fs::remove_file(s.mnt.join("hello")).unwrap();
    let trash = std::fs::read_dir(s.mnt.join(".trash")).map_or(0, |d| d.count());
    assert_eq!(trash, 0, "trash_days=0 keeps no trash");
    // One daemon, in a session of its own (not ours, not mount's).
    let pids = s.daemons();
    assert_eq!(pids.len(), 1, "one daemon: {pids:?}");
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pids[0]))).unwrap();
    assert_eq!(sid.as_raw(), pids[0], "the daemon leads its own session");
    s.umount(pids[0]);
}

#[test]
fn bad_option_fails_and_leaves_nothing() {
    if !usable() {
        return;
    }
    let s = Setup::new();
    let out = s.mount(&s.backing, "allow_other,no_such_option=3");
    assert!(!out.status.success(), "mount succeeded: {}", text(&out));
    let t = text(&out);
    assert!(t.contains("unknown mount option `no_such_option`"), "{t}");
    assert!(!is_mounted(&s.mnt));
    assert!(s.daemons().is_empty(), "no daemon left");
    // Two atime rules at once: the daemon's refusal comes back.
    let out = s.mount(&s.backing, "noatime,strictatime");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("choose one atime rule"),
        "{}",
        text(&out)
    );
    assert!(!is_mounted(&s.mnt));
}

/// `ro` and `noatime` take effect: the kernel refuses changes (EROFS),
/// reads work and move no atime, and /proc/mounts says so.
#[test]
fn ro_and_noatime_take_effect() {
    if !usable() {
        return;
    }
    let s = Setup::new();
    // A file to read, written before the read-only mount.
    let out = s.mount(&s.backing, "allow_other");
    assert!(out.status.success(), "mount failed: {}", text(&out));
    std::fs::write(s.mnt.join("kept"), b"data").unwrap();
    let pids = s.daemons();
    s.umount(pids[0]);

    let out = s.mount(&s.backing, "ro,noatime,allow_other");
    assert!(out.status.success(), "mount failed: {}", text(&out));
    let opts = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(s.mnt.to_str().unwrap()))
        .and_then(|l| l.split(' ').nth(5).map(str::to_string))
        .expect("the mount in mountinfo");
    let opts: Vec<&str> = opts.split(',').collect();
    assert!(
        opts.contains(&"ro") && opts.contains(&"noatime"),
        "{opts:?}"
    );
    use std::os::unix::fs::MetadataExt;
    let atime = std::fs::metadata(s.mnt.join("kept")).unwrap().atime_nsec();
    assert_eq!(std::fs::read(s.mnt.join("kept")).unwrap(), b"data");
    let again = std::fs::metadata(s.mnt.join("kept")).unwrap();
    assert_eq!(again.atime_nsec(), atime, "a read moved atime");
    for err in [
        std::fs::write(s.mnt.join("new"), b"x").unwrap_err(),
        std::fs::write(s.mnt.join("kept"), b"x").unwrap_err(),
        std::fs::create_dir(s.mnt.join("d")).unwrap_err(),
        std::fs::remove_file(s.mnt.join("kept")).unwrap_err(),
    ] {
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
    let pids = s.daemons();
    assert_eq!(pids.len(), 1, "{pids:?}");
    s.umount(pids[0]);
}

#[test]
fn daemon_failure_is_reported_by_mount() {
    if !usable() {
        return;
    }
    let s = Setup::new();
    // The daemon starts, then fails on its config file: its own message
    // and exit code come back through mount.
    let missing = s.dir.path().join("missing.toml");
    let out = s.mount(&s.backing, &format!("config={}", missing.display()));
    assert!(!out.status.success(), "mount succeeded: {}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("missing.toml"),
        "the daemon's error is shown: {t}"
    );
    assert!(t.contains("the daemon exited with status"), "{t}");
    assert!(!is_mounted(&s.mnt));
    assert!(s.daemons().is_empty());
}

#[test]
fn backing_from_the_config_file() {
    if !usable() {
        return;
    }
    let s = Setup::new();
    let cfg = s.dir.path().join("a.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nbacking = \"{}\"\n[policy]\ncapacity = \"3M\"\n",
            s.backing.display()
        ),
    )
    .unwrap();
    // The fstab line `artfs MNT fuse.artfs config=FILE 0 0`.
    let out = s.mount(
        Path::new("artfs"),
        &format!("config={},allow_other", cfg.display()),
    );
    assert!(out.status.success(), "mount failed: {}", text(&out));
    assert_eq!(total_bytes(&s.mnt), 3 * MIB, "capacity from the file");
    assert!(
        s.backing.join(".artfs").is_dir(),
        "the file's BACKING is used"
    );
    let pids = s.daemons();
    assert_eq!(pids.len(), 1, "{pids:?}");
    s.umount(pids[0]);
}

#[test]
fn mount_dot_artfs() {
    if !usable() {
        return;
    }
    let s = Setup::new();
    // What mount(8) runs for `-t artfs`: /sbin/mount.artfs SOURCE MNT
    // [-sfnv] -o OPTS (here the link in the test's bin directory). Its
    // stderr a file: the daemon keeps it, so it must still return.
    let log = s.dir.path().join("log");
    let mut cmd = Command::new(s.dir.path().join("bin/mount.artfs"));
    cmd.arg(&s.backing)
        .arg(&s.mnt)
        .args(["-n", "-o", "rw,capacity=2M"])
        .env("ARTFS_LOG", "warn,fuser::session=error")
        .stderr(std::fs::File::create(&log).unwrap());
    let st = cmd.status().unwrap();
    assert!(
        st.success(),
        "mount.artfs failed: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert_eq!(total_bytes(&s.mnt), 2 * MIB);
    let pids = s.daemons();
    assert_eq!(pids.len(), 1, "{pids:?}");
    s.umount(pids[0]);
}

/// The literal `mount -t fuse.artfs`, as fstab's `fuse.artfs` type runs
/// it: mount(8) resets PATH for mount.fuse3, which then finds `artfs` in
/// /usr/local/sbin. The test puts its binary there in a private mount
/// namespace of its own (a tmpfs over /usr/local/sbin that no other
/// process sees), mounts with nodev,nosuid,noexec, checks the kernel
/// applied them and that the store serves, and unmounts, all inside
/// that namespace.
#[test]
fn literal_mount_t_fuse_artfs_with_nodev_nosuid_noexec() {
    if !usable() {
        return;
    }
    if Command::new("unshare").arg("--help").output().is_err() {
        eprintln!("skipped: no unshare(1) (package util-linux)");
        return;
    }
    let s = Setup::new();
    let script = r#"
set -e
mount -t tmpfs artfs-test-bin /usr/local/sbin
ln -s "$ARTFS_BIN" /usr/local/sbin/artfs
mount -t fuse.artfs "$BACKING" "$MNT" -o allow_other,nodev,nosuid,noexec,capacity=5M
echo "options: $(awk -v m="$MNT" '$5 == m { print $6 }' /proc/self/mountinfo)"
echo "type: $(awk -v m="$MNT" '$5 == m { for (i = 7; $i != "-"; i++); print $(i + 1) }' /proc/self/mountinfo)"
printf hello > "$MNT/greeting"
echo "read: $(cat "$MNT/greeting")"
cp /bin/true "$MNT/prog"
chmod 755 "$MNT/prog"
if "$MNT/prog" 2>/dev/null; then echo "exec: ran"; else echo "exec: refused"; fi
umount "$MNT"
if grep -q " $MNT " /proc/self/mountinfo; then echo "after umount: mounted"; else echo "after umount: gone"; fi
"#;
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("ARTFS_BIN", bin())
        .env("BACKING", &s.backing)
        .env("MNT", &s.mnt);
    let out = s.run(cmd);
    let t = text(&out);
    assert!(out.status.success(), "the mount script failed: {t}");
    let options = t
        .lines()
        .find_map(|l| l.strip_prefix("options: "))
        .unwrap_or_else(|| panic!("no options line: {t}"));
    let options: Vec<&str> = options.split(',').collect();
    for o in ["nodev", "nosuid", "noexec"] {
        assert!(options.contains(&o), "{o} not applied: {options:?}");
    }
    assert!(t.contains("type: fuse.artfs"), "{t}");
    assert!(t.contains("read: hello"), "{t}");
    assert!(t.contains("exec: refused"), "noexec: {t}");
    assert!(t.contains("after umount: gone"), "{t}");
    // The daemon ran inside the namespace: umount stopped it.
    wait_for(
        || s.daemons().is_empty().then_some(()),
        20,
        "the daemon to exit at umount",
    );
    // The file is in the store, as read from outside the namespace.
    assert!(
        std::fs::read_dir(s.backing.join("objects")).is_ok_and(|mut d| d.next().is_some()),
        "the file landed in BACKING"
    );
}
