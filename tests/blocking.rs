//! One request thread serves the mount; requests that may block run on
//! helper threads. Requests held up (here an fsync and an open for writing
//! whose commits are made to wait) must not hold up anyone else.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Mount;

#[test]
fn requests_waiting_for_a_commit_do_not_hold_up_the_others() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("seen"), b"seen").unwrap();
        fs::write(m.path("appended"), b"old").unwrap();
        fs::create_dir(m.path("sub")).unwrap();
        fs::write(m.path("sub/a"), b"a").unwrap();
        let mut f = File::create(m.path("synced")).unwrap();
        f.write_all(b"data").unwrap();
        // Let the setup commit, then make every commit wait 4 s.
        File::open(&m.mnt).unwrap().sync_all().unwrap();
        m.arm(&["writer::before_commit=sleep(4000)"]);

        // An fsync waits for the commit, and so does opening an existing file
        // for writing (its write intent must be durable first).
        let synced = Arc::new(AtomicBool::new(false));
        let syncer = {
            let synced = synced.clone();
            std::thread::spawn(move || {
                f.sync_all().unwrap();
                synced.store(true, Ordering::SeqCst);
            })
        };
        let opened = Arc::new(AtomicBool::new(false));
        let opener = {
            let opened = opened.clone();
            let path = m.path("appended");
            std::thread::spawn(move || {
                let mut f = OpenOptions::new().append(true).open(path).unwrap();
                opened.store(true, Ordering::SeqCst);
                f.write_all(b" and new").unwrap();
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(!synced.load(Ordering::SeqCst), "the fsync did not wait");
        assert!(!opened.load(Ordering::SeqCst), "the open did not wait");

        // Meanwhile everything else is served: lookups, reads, creates,
        // listings, attributes.
        let p = |n: &str| m.mnt.join(n);
        assert_eq!(fs::read(p("seen")).unwrap(), b"seen");
        fs::write(p("new"), b"new").unwrap();
        assert_eq!(fs::read(p("new")).unwrap(), b"new");
        fs::create_dir(p("dir")).unwrap();
        fs::write(p("dir/x"), b"x").unwrap();
        let names = |d: &str| {
            let mut v: Vec<_> = fs::read_dir(p(d))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names("sub"), ["a"]);
        assert_eq!(names("dir"), ["x"]);
        assert_eq!(fs::metadata(p("synced")).unwrap().len(), 4);
        assert!(
            !synced.load(Ordering::SeqCst) && !opened.load(Ordering::SeqCst),
            "the others were served only after the waiting requests"
        );

        syncer.join().unwrap();
        opener.join().unwrap();
        m.arm(&["writer::before_commit=off"]);
        m.remount();
        assert_eq!(fs::read(m.path("synced")).unwrap(), b"data");
        assert_eq!(fs::read(m.path("new")).unwrap(), b"new");
        assert_eq!(fs::read(m.path("appended")).unwrap(), b"old and new");
    });
}
