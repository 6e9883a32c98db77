//! Writes through passthrough under a capacity (`--capacity-passthrough`,
//! `fuse::write_guard`, issue 19): the kernel writes the object itself,
//! and every write that could grow a file waits for the daemon's answer
//! (fanotify pre-content events). The capacity is never passed, usage is
//! exact once the writers close, and no write reaches the daemon.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use common::api::Api;

const CAP: u64 = 1 << 20;

fn start() -> Api {
    Api::start(&[
        "--capacity",
        "1M",
        "--trash-days",
        "0",
        "--capacity-passthrough",
    ])
}

/// Wait until df shows `want` bytes available (releases, which settle
/// usage, arrive asynchronously after a close).
fn wait_avail(api: &Api, want: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while avail(api) != want {
        assert!(
            std::time::Instant::now() < deadline,
            "usage not settled: {} available, not {want}",
            avail(api)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Available bytes as df shows them.
fn avail(api: &Api) -> u64 {
    let s = nix::sys::statvfs::statvfs(&api.m.mnt).unwrap();
    s.blocks_available() as u64 * s.fragment_size() as u64
}

#[test]
fn concurrent_passthrough_writers_fill_the_capacity_exactly_and_never_pass_it() {
    common::engine::every_engine(|| {
        let api = start();
        let total = common::fill_concurrently(&api.m.mnt, 6, 64);
        assert_eq!(
            total, CAP,
            "6 writers of 256 KiB into 1 MiB fill it exactly"
        );
        assert_eq!(
            api.fuse_ops("write"),
            0,
            "the writes went through the daemon, not passthrough"
        );
        let mut on_disk = 0;
        for t in 0..6u8 {
            let got = fs::read(api.m.path(&format!("w{t}"))).unwrap();
            assert!(got.iter().all(|b| *b == t), "w{t} holds another's bytes");
            on_disk += got.len() as u64;
        }
        assert_eq!(on_disk, CAP);
        // Usage is exact once the writers closed (their releases arrive
        // asynchronously).
        wait_avail(&api, 0);
        assert_eq!(
            common::code(fs::write(api.m.path("more"), b"x")),
            libc::ENOSPC
        );
        let mut api = api;
        api.m.unmount();
        api.m.assert_consistent();
    });
}

#[test]
fn a_write_that_would_pass_the_capacity_is_refused_before_any_byte_lands() {
    common::engine::every_engine(|| {
        let api = start();
        let p = api.m.path("big");
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(&vec![1u8; 900 << 10]).unwrap();
        // 200 KiB more would pass 1 MiB: refused whole, nothing written.
        let e = f.write(&vec![2u8; 200 << 10]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs::metadata(&p).unwrap().len(), 900 << 10);
        // What is left still fits.
        f.write_all(&vec![3u8; (CAP - (900 << 10)) as usize])
            .unwrap();
        drop(f);
        let got = fs::read(&p).unwrap();
        assert_eq!(got.len() as u64, CAP);
        assert!(got[..900 << 10].iter().all(|b| *b == 1));
        assert!(got[900 << 10..].iter().all(|b| *b == 3));
        assert_eq!(api.fuse_ops("write"), 0);
    });
}

#[test]
fn appending_set_after_the_open_cannot_pass_the_capacity() {
    common::engine::every_engine(|| {
        let api = start();
        let p = api.m.path("log");
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.write_all(&vec![1u8; 600 << 10]).unwrap();
        // O_APPEND turned on behind the daemon's back, the position moved
        // to 0: the kernel reports the write at offset 0, yet it lands at
        // the end. 600 + 500 KiB would pass 1 MiB.
        nix::fcntl::fcntl(
            f.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND),
        )
        .unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let e = f.write(&vec![2u8; 500 << 10]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        f.write_all(&vec![3u8; 100 << 10]).unwrap();
        drop(f);
        assert_eq!(fs::metadata(&p).unwrap().len(), 700 << 10);
    });
}

#[test]
fn reads_past_the_end_at_a_full_capacity_are_not_refused() {
    common::engine::every_engine(|| {
        let api = start();
        let p = api.m.path("rw");
        let f = common::create_rw(&p);
        f.write_all_at(&vec![5u8; CAP as usize], 0).unwrap();
        assert_eq!(
            f.write_at(b"x", CAP).unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        // A read whose buffer reaches past the end, through the writer's
        // own descriptor (the guarded backing file), at a full store.
        let mut buf = vec![0u8; 64 << 10];
        assert_eq!(f.read_at(&mut buf, CAP - 10).unwrap(), 10);
        assert_eq!(&buf[..10], &[5u8; 10]);
        // And by another reader of the file while it is open for writing.
        let mut other = fs::File::open(&p).unwrap();
        let mut all = Vec::new();
        std::io::Read::read_to_end(&mut other, &mut all).unwrap();
        assert_eq!(all.len() as u64, CAP);
    });
}

#[test]
fn a_truncate_gives_back_what_a_guarded_writer_may_grow_into() {
    common::engine::every_engine(|| {
        let api = start();
        let p = api.m.path("t");
        let mut f = fs::File::create(&p).unwrap();
        f.write_all(&vec![1u8; 800 << 10]).unwrap();
        // Shrunk through the daemon while open: the capacity it held is
        // free again, for this writer and others.
        f.set_len(0).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&vec![2u8; 512 << 10]).unwrap();
        fs::write(api.m.path("other"), vec![3u8; 512 << 10]).unwrap();
        assert_eq!(
            f.write(b"x").unwrap_err().raw_os_error(),
            Some(libc::ENOSPC)
        );
        drop(f);
        assert_eq!(fs::metadata(&p).unwrap().len(), 512 << 10);
    });
}

#[test]
fn sendfile_is_not_checked_but_counted_at_the_close() {
    // The documented hole: the kernel's backing-file splice raises no
    // event, so sendfile(2) into a guarded file passes the capacity. The
    // close records what it wrote, and the store then refuses growth.
    common::engine::every_engine(|| {
        let api = start();
        let mut src = tempfile::tempfile().unwrap();
        src.write_all(&vec![4u8; 1536 << 10]).unwrap();
        src.seek(SeekFrom::Start(0)).unwrap();
        let dst = fs::File::create(api.m.path("sent")).unwrap();
        let mut sent = 0;
        while sent < 1536 << 10 {
            // SAFETY: both descriptors are open for the call.
            let n = unsafe {
                libc::sendfile(
                    dst.as_raw_fd(),
                    src.as_raw_fd(),
                    std::ptr::null_mut(),
                    (1536 << 10) - sent,
                )
            };
            assert!(n > 0, "sendfile: {}", std::io::Error::last_os_error());
            sent += n as usize;
        }
        drop(dst);
        assert_eq!(fs::metadata(api.m.path("sent")).unwrap().len(), 1536 << 10);
        wait_avail(&api, 0);
        assert_eq!(
            common::code(fs::write(api.m.path("more"), b"x")),
            libc::ENOSPC
        );
        // Freed, the store takes writes again.
        fs::remove_file(api.m.path("sent")).unwrap();
        wait_avail(&api, CAP);
        fs::write(api.m.path("more"), b"x").unwrap();
        let mut api = api;
        api.m.unmount();
        api.m.assert_consistent();
    });
}

#[test]
fn a_growing_file_holds_a_little_ahead_and_the_close_gives_back_the_rest() {
    // With over 1 GiB free, a file opened for writing holds 8 MiB, and a
    // write past what it holds reserves 8 MiB beyond its end (one
    // decision per 8 MiB); usage counts it until the close.
    common::engine::every_engine(|| {
        const BIG: u64 = 2 << 30;
        let api = Api::start(&[
            "--capacity",
            "2G",
            "--trash-days",
            "0",
            "--capacity-passthrough",
        ]);
        let used = || BIG - avail(&api);
        let mut f = fs::File::create(api.m.path("g")).unwrap();
        assert_eq!(used(), 8 << 20, "8 MiB held from the open");
        // Writes within what is held ask for nothing more.
        f.write_all(&vec![1u8; 1 << 20]).unwrap();
        f.write_all(&vec![2u8; 3 << 20]).unwrap();
        assert_eq!(used(), 8 << 20);
        // Past it: what the write reaches, and 8 MiB beyond.
        f.write_all(&vec![3u8; 5 << 20]).unwrap();
        assert_eq!(used(), 17 << 20);
        drop(f);
        // What was held and not written is given back.
        wait_avail(&api, BIG - (9 << 20));
        assert_eq!(api.fuse_ops("write"), 0);
    });
}

/// Wait until every thread of `pid` is stopped (a SIGSTOP reaches each
/// thread a moment after kill(2) returns).
fn wait_stopped(pid: i32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let all = fs::read_dir(format!("/proc/{pid}/task")).unwrap().all(|t| {
            let stat = fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            state.starts_with('T') || state.starts_with('t')
        });
        if all {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn a_killed_daemon_leaves_no_writer_waiting_and_recovery_records_what_landed() {
    // A writer whose write waits for the guard's answer when the daemon
    // dies is let go by the kernel (the fanotify group is released), and
    // the next mount records what the object holds.
    common::engine::every_engine(|| {
        let mut m = common::Mount::with_args(&[
            "--capacity",
            "1M",
            "--trash-days",
            "0",
            "--capacity-passthrough",
        ]);
        let mut f = fs::File::create(m.path("w")).unwrap();
        f.write_all(&[1u8; 4096]).unwrap();
        // Durable, so the crash cannot take the file itself.
        f.sync_all().unwrap();
        let pid = nix::unistd::Pid::from_raw(m.pid().unwrap() as i32);
        // Stopped, the daemon answers nothing: the next growing write
        // waits for it.
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
        wait_stopped(pid.as_raw());
        let (done_tx, done) = std::sync::mpsc::channel();
        let writer = std::thread::spawn(move || {
            let r = f.write(&[2u8; 4096]);
            done_tx.send(r.map_err(|e| e.raw_os_error())).unwrap();
        });
        if let Ok(r) = done.recv_timeout(std::time::Duration::from_millis(300)) {
            panic!("the write did not wait for the stopped daemon: {r:?}");
        }
        m.kill_only();
        let r = done
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the writer still waits after the daemon died");
        writer.join().unwrap();
        eprintln!("the waiting write after the daemon died: {r:?}");
        m.clear_stale();
        m.mount();
        let len = fs::metadata(m.path("w")).unwrap().len();
        let got = fs::read(m.path("w")).unwrap();
        assert_eq!(got.len() as u64, len);
        assert!(got[..4096].iter().all(|b| *b == 1));
        m.unmount();
        m.assert_consistent();
    });
}
