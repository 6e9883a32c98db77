//! A metadata writer that dies (a panic: a bug) must not hang the mount:
//! whoever waits for a commit gets an error, later changes are refused with
//! EIO, the daemon still unmounts, and the next mount recovers a consistent
//! store with everything committed before the death.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::Mount;

/// Run `f` on a thread; its result, or a failure if it takes longer than
/// `limit` (a hang is the defect this file is about).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .expect("the call hung after the writer died")
}

#[test]
fn a_dead_writer_fails_waiters_refuses_changes_and_still_unmounts() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        std::fs::write(m.path("kept"), b"committed before").unwrap();
        let f = std::fs::File::open(m.path("kept")).unwrap();
        f.sync_all().unwrap();
        drop(f);

        m.arm(&["writer::before_commit=panic"]);
        let p = m.path("lost");
        let synced = within(Duration::from_secs(20), move || {
            let f = std::fs::File::create(&p)?;
            f.sync_all()
        });
        assert_eq!(
            synced.map_err(|e| e.raw_os_error()),
            Err(Some(libc::EIO)),
            "fsync after the writer died must fail, not hang or succeed"
        );
        let p = m.path("later");
        let made = within(Duration::from_secs(20), move || std::fs::create_dir(&p));
        assert_eq!(made.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
        // Reads still work.
        assert_eq!(std::fs::read(m.path("kept")).unwrap(), b"committed before");

        // The daemon leaves (whatever its exit status) instead of hanging.
        let pid = m.pid().unwrap();
        let mnt = m.mnt.clone();
        within(Duration::from_secs(30), move || {
            let _ = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg(&mnt)
                .status();
            while std::path::Path::new(&format!("/proc/{pid}")).exists()
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        m.kill(); // reap it (it has exited) and clear anything left
        m.mount();
        assert_eq!(std::fs::read(m.path("kept")).unwrap(), b"committed before");
        m.unmount();
        m.assert_consistent();
    });
}
