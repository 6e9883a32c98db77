//! End-to-end smoke test: mount, use, unmount, remount, everything is there.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

#[test]
fn mount_write_remount_read() {
    common::engine::every_engine(|| {
        let mut m = common::Mount::new();
        fs::write(m.path("hello.txt"), b"hello artfs").unwrap();
        fs::create_dir(m.path("dir")).unwrap();
        fs::write(m.path("dir/inner"), vec![7u8; 100_000]).unwrap();
        let ino = fs::metadata(m.path("hello.txt")).unwrap().ino();
        m.remount();
        assert_eq!(fs::read(m.path("hello.txt")).unwrap(), b"hello artfs");
        assert_eq!(fs::read(m.path("dir/inner")).unwrap(), vec![7u8; 100_000]);
        assert_eq!(fs::metadata(m.path("hello.txt")).unwrap().ino(), ino);
    });
}
