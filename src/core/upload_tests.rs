//! A caller-chosen file id and original filename on an upload, against a
//! real store: kept as given, and a duplicate id refused before anything
//! is written, the store left as it was.

use super::*;
use crate::core::{open_store, StoreOptions};
use crate::types::ROOT_INO;

fn opts(file_id: Option<&str>, original: Option<&[u8]>) -> UploadOptions {
    UploadOptions {
        condition: Condition::Absent,
        perm: 0o644,
        created_by: "svc".into(),
        set: Vec::new(),
        remove: Vec::new(),
        file_id: file_id.map(str::to_string),
        original_name: original.map(<[u8]>::to_vec),
        make_dirs: None,
    }
}

#[test]
fn a_chosen_id_is_kept_and_never_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (fs, _lock) = open_store(&StoreOptions::new(dir.path()), rt.handle().clone()).unwrap();
    let root = Caller::root();
    let id = "0b7e7c3e-5f43-4d2a-9a57-7d4d8c1e2f30";

    let up = fs
        .upload(
            &root,
            &[],
            b"r_1.txt",
            &mut &b"one"[..],
            opts(Some(id), Some(b"r.txt")),
        )
        .unwrap();
    let ino = up.ino;
    up.finish().unwrap();
    let a = fs.getattr(ino).unwrap();
    assert_eq!(a.inode.file_id, id);
    assert_eq!(a.inode.original_name, b"r.txt");
    assert_eq!(fs.find_by_file_id(id).unwrap(), Some(ino));

    let before = fs.readdir(ROOT_INO, 0, 100).unwrap().len();
    let e = fs
        .upload(
            &root,
            &[],
            b"r_2.txt",
            &mut &b"two"[..],
            opts(Some(id), None),
        )
        .err()
        .expect("a second file with the id");
    assert_eq!(e.errno(), libc::EEXIST);
    assert_eq!(fs.readdir(ROOT_INO, 0, 100).unwrap().len(), before);
    assert_eq!(fs.find_by_file_id(id).unwrap(), Some(ino));

    // Without a chosen name, the published name is the original one.
    let up = fs
        .upload(&root, &[], b"plain.txt", &mut &b"p"[..], opts(None, None))
        .unwrap();
    let a = fs.getattr(up.ino).unwrap();
    up.finish().unwrap();
    assert_eq!(a.inode.original_name, b"plain.txt");
    assert_ne!(a.inode.file_id, id);
    fs.close();
}
