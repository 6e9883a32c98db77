//! What an upload may be told besides its content, against a real store:
//! a caller-chosen file id and original filename kept as given, a
//! duplicate id refused before anything is written (the store left as it
//! was), and the missing directories of its path made by the rules of a
//! create.

use super::*;
use std::sync::Arc;

use crate::core::{open_store, StoreLock, StoreOptions};
use crate::types::ROOT_INO;

fn opts(file_id: NewFileId, original: Option<&[u8]>) -> UploadOptions {
    UploadOptions {
        condition: Condition::Absent,
        perm: 0o644,
        created_by: "svc".into(),
        set: Vec::new(),
        remove: Vec::new(),
        file_id,
        original_name: original.map(<[u8]>::to_vec),
        make_dirs: None,
    }
}

/// A store on a runtime of its own, for one test.
fn store(dir: &std::path::Path) -> (tokio::runtime::Runtime, Arc<Fs>, StoreLock) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (fs, lock) = open_store(&StoreOptions::new(dir), rt.handle().clone()).unwrap();
    (rt, fs, lock)
}

#[test]
fn a_chosen_id_is_kept_and_never_given_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, fs, _lock) = store(dir.path());
    let root = Caller::root();
    let id = "0b7e7c3e-5f43-4d2a-9a57-7d4d8c1e2f30";
    let chosen = || NewFileId::Chosen(id.to_string());

    let up = fs
        .upload(
            &root,
            &[],
            b"r_1.txt",
            &mut &b"one"[..],
            opts(chosen(), Some(b"r.txt")),
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
            opts(chosen(), None),
        )
        .err()
        .expect("a second file with the id");
    assert_eq!(e.errno(), libc::EEXIST);
    assert_eq!(fs.readdir(ROOT_INO, 0, 100).unwrap().len(), before);
    assert_eq!(fs.find_by_file_id(id).unwrap(), Some(ino));

    // A door's own id is taken as it is; without a chosen original name,
    // the published name is the original one.
    let made = "5d1c3d0e-2b7a-4c55-8f3e-1f2a3b4c5d6e";
    let up = fs
        .upload(
            &root,
            &[],
            b"plain.txt",
            &mut &b"p"[..],
            opts(NewFileId::Made(made.into()), None),
        )
        .unwrap();
    let a = fs.getattr(up.ino).unwrap();
    up.finish().unwrap();
    assert_eq!(a.inode.original_name, b"plain.txt");
    assert_eq!(a.inode.file_id, made);
    // Fresh ids are artfs's v7.
    let up = fs
        .upload(
            &root,
            &[],
            b"fresh",
            &mut &b"f"[..],
            opts(NewFileId::Fresh, None),
        )
        .unwrap();
    let a = fs.getattr(up.ino).unwrap();
    up.finish().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(&a.inode.file_id)
            .unwrap()
            .get_version_num(),
        7
    );
    fs.close();
}

#[test]
fn missing_directories_are_made_as_creates() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, fs, _lock) = store(dir.path());
    let root = Caller::root();
    let path: Vec<Vec<u8>> = vec![b"uploads".to_vec(), b"2026".to_vec(), b"12".to_vec()];
    let with_dirs = |mode| UploadOptions {
        make_dirs: Some(mode),
        ..opts(NewFileId::Fresh, None)
    };

    // Someone without write permission on the root: nothing is made.
    let nobody = Caller {
        uid: 65534,
        gid: 65534,
        ..Caller::root()
    };
    let e = fs
        .upload(&nobody, &path, b"a", &mut &b"a"[..], with_dirs(0o755))
        .err()
        .expect("no write permission on the root");
    assert_eq!(e.errno(), libc::EACCES);
    assert!(fs.lookup(ROOT_INO, b"uploads").is_err());

    let up = fs
        .upload(&root, &path, b"a", &mut &b"a"[..], with_dirs(0o750))
        .unwrap();
    assert_eq!(up.made.len(), 3);
    assert_eq!(up.made[0], (ROOT_INO, b"uploads".to_vec()));
    let parent = up.parent;
    up.finish().unwrap();
    let d = fs.walk(&root, &path).unwrap();
    assert_eq!(d.inode.ino, parent);
    assert_eq!(d.inode.perm & 0o777, 0o750);

    // Existing ones are used as they are.
    let up = fs
        .upload(&root, &path, b"b", &mut &b"b"[..], with_dirs(0o700))
        .unwrap();
    assert!(up.made.is_empty());
    assert_eq!(up.parent, parent);
    up.finish().unwrap();
    fs.close();
}

/// Content handed over in many pieces of odd sizes, more to a batch
/// than one `pwritev` takes (IOV_MAX, 1024).
struct Pieces {
    data: Vec<u8>,
    at: usize,
}

impl Content for Pieces {
    fn next_pieces(&mut self) -> std::io::Result<Option<Vec<bytes::Bytes>>> {
        let mut batch = Vec::new();
        let mut size = 1;
        while self.at < self.data.len() && batch.len() < 3000 {
            let end = (self.at + size).min(self.data.len());
            batch.push(bytes::Bytes::copy_from_slice(&self.data[self.at..end]));
            self.at = end;
            size = size % 97 + 1;
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

#[test]
fn pieces_are_written_and_hashed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, fs, _lock) = store(dir.path());
    let root = Caller::root();
    let data: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut content = Pieces {
        data: data.clone(),
        at: 0,
    };
    let up = fs
        .upload(&root, &[], b"p", &mut content, opts(NewFileId::Fresh, None))
        .unwrap();
    let ino = up.ino;
    up.finish().unwrap();
    assert_eq!(fs.getattr(ino).unwrap().inode.size, data.len() as u64);
    let h = fs.open(&root, ino, libc::O_RDONLY).unwrap();
    assert!(
        fs.read(h.fh, 0, data.len()).unwrap() == data,
        "the bytes differ"
    );
    assert_eq!(
        fs.sha256(ino).unwrap().as_deref(),
        Some(hex::encode(Sha256::digest(&data)).as_str())
    );
}

/// How many of `file`'s pages are in the page cache.
fn resident_pages(file: &std::fs::File) -> usize {
    use std::os::fd::AsRawFd;
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let page = 4096;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: a private read-only mapping of `len` bytes of an open file,
    // only passed to mincore (which fills `vec`, one byte per page) and
    // unmapped before returning; nothing reads through it.
    unsafe {
        let at = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(at, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        let r = libc::mincore(at, len, vec.as_mut_ptr());
        libc::munmap(at, len);
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    }
    vec.iter().filter(|b| *b & 1 == 1).count()
}

/// Uploads go to the disk with O_DIRECT where BACKING takes it, in
/// aligned writes of several megabytes (`direct_fill`), the last partial
/// block through the page cache: every size around those boundaries keeps
/// its bytes and its hash, and the page cache holds at most that last
/// block of the new file.
#[test]
fn uploads_of_every_size_around_the_blocks_keep_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_rt, fs, _lock) = store(dir.path());
    let root = Caller::root();
    // Where the filesystem takes O_DIRECT (ext4, XFS, btrfs, tmpfs since
    // Linux 6.6), the page cache must show it.
    let direct = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(dir.path().join("probe"))
            .is_ok()
    };
    let chunk = 2 << 20;
    for (i, size) in [
        0,
        1,
        4095,
        4096,
        4097,
        chunk - 1,
        chunk,
        chunk + 1,
        2 * chunk + 3 * 4096 + 17,
        3 * chunk,
    ]
    .into_iter()
    .enumerate()
    {
        let data: Vec<u8> = (0..size as u32).map(|i| (i * 31 % 253) as u8).collect();
        let mut content = Pieces {
            data: data.clone(),
            at: 0,
        };
        let name = format!("f{i}");
        let up = fs
            .upload(
                &root,
                &[],
                name.as_bytes(),
                &mut content,
                opts(NewFileId::Fresh, None),
            )
            .unwrap();
        let ino = up.ino;
        up.finish().unwrap();
        assert_eq!(fs.getattr(ino).unwrap().inode.size, size as u64, "{size}");
        let h = fs.open(&root, ino, libc::O_RDONLY).unwrap();
        if direct {
            let cached = resident_pages(&fs.handle(h.fh).unwrap().file);
            assert!(
                cached <= usize::from(size % 4096 != 0),
                "{size} bytes uploaded left {cached} pages in the page cache"
            );
        }
        assert!(
            fs.read(h.fh, 0, size + 1).unwrap() == data,
            "{size}: the bytes differ"
        );
        fs.release(h.fh).unwrap();
        assert_eq!(
            fs.sha256(ino).unwrap().as_deref(),
            Some(hex::encode(Sha256::digest(&data)).as_str()),
            "{size}"
        );
    }
    fs.close();
}
