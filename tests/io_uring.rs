//! FUSE over io_uring (docs/IO_URING.md): used by default where the
//! kernel offers it, `--io-uring=false` to stay on /dev/fuse.
//!
//! The kernel offers it only when /sys/module/fuse/parameters/enable_uring
//! is Y (N by default). This binary turns it on for its run when it can
//! (root) and puts the old value back after, so the ring is exercised on
//! CI; cargo runs test binaries one at a time, so the others run with it
//! at N (its default) and over /dev/fuse. Where it cannot, only the
//! /dev/fuse fallback is checked. All cases run in one test, in order, so the guard that
//! restores the parameter outlives them all, even on failure.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

fn uring_enabled() -> bool {
    fs::read_to_string(PARAM).is_ok_and(|s| s.trim() == "Y")
}

/// Turns `enable_uring` on while alive (if it can), then restores it.
struct EnableUring {
    old: Option<String>,
}

impl EnableUring {
    fn new() -> EnableUring {
        let old = fs::read_to_string(PARAM).ok().map(|s| s.trim().to_string());
        if old.as_deref() == Some("N") && fs::write(PARAM, "Y").is_err() {
            eprintln!("cannot set {PARAM}: checking the /dev/fuse fallback only");
        }
        EnableUring { old }
    }
}

impl Drop for EnableUring {
    fn drop(&mut self) {
        if let Some(old) = &self.old {
            let _ = fs::write(PARAM, old);
        }
    }
}

/// Names of the daemon's threads.
fn threads(pid: u32) -> Vec<String> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return vec![];
    };
    dir.filter_map(|e| fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

fn exercise(m: &common::Mount) {
    fs::write(m.path("a.txt"), b"hello ring").unwrap();
    assert_eq!(fs::read(m.path("a.txt")).unwrap(), b"hello ring");
    fs::create_dir(m.path("d")).unwrap();
    fs::rename(m.path("a.txt"), m.path("d/b.txt")).unwrap();
    common::setx(&m.path("d/b.txt"), "user.k", b"v").unwrap();
    assert_eq!(common::getx(&m.path("d/b.txt"), "user.k").unwrap(), b"v");
    // Larger than one 1 MiB ring payload buffer, in several requests.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(m.path("d/big"), &big).unwrap();
    assert_eq!(fs::read(m.path("d/big")).unwrap(), big);
    std::os::unix::fs::symlink("big", m.path("d/link")).unwrap();
    assert_eq!(
        fs::read_link(m.path("d/link")).unwrap().to_str(),
        Some("big")
    );
    let mut names: Vec<String> = fs::read_dir(m.path("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["b.txt", "big", "link"]);
    for n in &names {
        fs::remove_file(m.path(&format!("d/{n}"))).unwrap();
    }
    fs::remove_dir(m.path("d")).unwrap();
}

#[test]
fn io_uring() {
    common::engine::every_metadata_engine(|| {
        let _on = EnableUring::new();
        mount_serves_and_unmounts();
        io_uring_false_stays_on_dev_fuse();
        concurrent_callers();
        setup_failure_falls_back_to_dev_fuse();
        kill_9_leaves_a_stale_mount_that_force_recovers();
        unmount_while_a_helper_holds_a_ring_entry();
    });
}

fn mount_serves_and_unmounts() {
    // --capacity: writes go through the daemon (no passthrough), so WRITE
    // and READ requests (answered from helper threads) cross the ring too.
    // (The ring is used by default where the kernel offers it.)
    for args in [&[][..], &["--io-uring", "--capacity", "1G"][..]] {
        let mut m = common::Mount::with_args(args);
        // The ring threads start once the session runs, a moment after the
        // mount appears; touching the mount waits for INIT.
        fs::metadata(m.path("")).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let ring_threads = loop {
            let n = threads(m.pid().unwrap())
                .into_iter()
                .filter(|t| t.starts_with("fuser-ring-"))
                .count();
            if n > 0 || !uring_enabled() || std::time::Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        if uring_enabled() {
            assert!(ring_threads >= 1, "no ring threads with enable_uring=Y");
        } else {
            eprintln!("enable_uring is N: checking the /dev/fuse fallback only");
            assert_eq!(ring_threads, 0);
        }
        exercise(&m);
        fs::write(m.path("kept"), b"kept").unwrap();
        let ino = fs::metadata(m.path("kept")).unwrap().ino();
        m.remount();
        assert_eq!(fs::read(m.path("kept")).unwrap(), b"kept");
        assert_eq!(fs::metadata(m.path("kept")).unwrap().ino(), ino);
        m.unmount();
    }
}

fn io_uring_false_stays_on_dev_fuse() {
    let m = common::Mount::with_args(&["--io-uring=false"]);
    fs::write(m.path("x"), b"over /dev/fuse").unwrap();
    assert_eq!(fs::read(m.path("x")).unwrap(), b"over /dev/fuse");
    assert!(!threads(m.pid().unwrap())
        .iter()
        .any(|t| t.starts_with("fuser-ring-")));
}

fn concurrent_callers() {
    let m = common::Mount::with_args(&["--io-uring", "--capacity", "1G"]);
    std::thread::scope(|s| {
        for t in 0..8 {
            let m = &m;
            s.spawn(move || {
                let dir = m.path(&format!("t{t}"));
                fs::create_dir(&dir).unwrap();
                for i in 0..100 {
                    let p = dir.join(format!("f{i}"));
                    let data = vec![(t * 7 + i) as u8; 1000 + i * 97];
                    fs::write(&p, &data).unwrap();
                    assert_eq!(fs::read(&p).unwrap(), data);
                }
                assert_eq!(fs::read_dir(&dir).unwrap().count(), 100);
            });
        }
    });
}

fn setup_failure_falls_back_to_dev_fuse() {
    // FUSER_URING_FAIL_SETUP makes the vendored fuser fail to set up its
    // rings before the INIT reply, which must then not ask for the ring
    // (else the kernel would hold every request for queues that never come).
    let mut m = common::Mount::with_args(&["--io-uring"]);
    m.unmount();
    m.try_mount(&[("FUSER_URING_FAIL_SETUP", "1")])
        .expect("artfs exited before mounting");
    fs::write(m.path("x"), b"over /dev/fuse").unwrap();
    assert_eq!(fs::read(m.path("x")).unwrap(), b"over /dev/fuse");
    assert!(!threads(m.pid().unwrap())
        .iter()
        .any(|t| t.starts_with("fuser-ring-")));
    m.unmount();
}

fn kill_9_leaves_a_stale_mount_that_force_recovers() {
    let mut m = common::Mount::with_args(&["--io-uring"]);
    let f = fs::File::create(m.path("f")).unwrap();
    std::io::Write::write_all(&mut &f, b"survives").unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.kill_only();
    // A dead ring mount answers ECONNABORTED or ECANCELED while the kernel
    // tears its rings down (requests in flight are aborted or cancelled),
    // ENOTCONN after, as a dead /dev/fuse mount does: which one depends
    // on timing, and the stale-mount check takes all three.
    let e = fs::metadata(&m.mnt).unwrap_err().raw_os_error();
    assert!(
        matches!(
            e,
            Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
        ),
        "{e:?}"
    );
    let out = std::process::Command::new(common::bin())
        .arg("mount")
        .arg(&m.backing)
        .arg(&m.mnt)
        .args(m.store_args())
        .arg("--io-uring")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("stale"), "{err}");
    // The stale mount is still there: detach it, as --force would.
    m.clear_stale();
    m.mount();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"survives");
    m.unmount();
    m.assert_consistent();
}

/// A request answered from a helper thread holds its ring entry until the
/// reply; an unmount meanwhile (lazy: the mount is busy) must neither hang
/// nor lose the request's work.
fn unmount_while_a_helper_holds_a_ring_entry() {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut m = common::Mount::new();
    fs::write(m.path("f"), b"before,").unwrap();
    // Opening for writing waits for a durable intent, on a helper thread:
    // every commit now takes a second.
    m.arm(&["writer::before_commit=sleep(1000)"]);
    // The directory descriptor keeps the mount busy, so the unmount is
    // lazy whatever the timing, and the file is reached through it after.
    let dir = fs::File::open(&m.mnt).unwrap();
    let (opening, opened) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        opening.send(()).unwrap();
        // SAFETY: a valid directory descriptor and a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                c"f".as_ptr(),
                libc::O_WRONLY | libc::O_APPEND,
            )
        };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: a descriptor just opened, owned from here on.
        let mut f = unsafe { fs::File::from_raw_fd(fd) };
        f.write_all(b"after").unwrap();
        f.sync_all().unwrap();
    });
    opened.recv().unwrap();
    // Let the open reach its helper thread, then unmount; this waits (at
    // most 20 s) for the daemon to exit 0, once the writer is done.
    std::thread::sleep(std::time::Duration::from_millis(300));
    m.unmount();
    writer.join().unwrap();
    m.mount();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"before,after");
    m.unmount();
    m.assert_consistent();
}
