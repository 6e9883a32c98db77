//! The contract of [`ContentStore`], checked on a store: written once,
//! run against every implementation (`LocalDir` now, the S3 store when it
//! comes). Unit level: no FUSE, no metadata store. The store given must be
//! empty.

use std::collections::BTreeSet;
use std::io::{ErrorKind, Write};

use std::os::unix::fs::FileExt;

use super::sidecar::{AttrJson, DirSync, SchemaVersion, SidecarError};
use super::ContentStore;
use crate::types::Timestamp;

/// Inode numbers at the edges of the naming scheme: fan-out bytes 00 and
/// ff, the largest numbers, numbers that differ only above the low byte.
const EDGE_INOS: [u64; 6] = [0x100, 0xff, 0x1ff, 1 << 40, 0xffff_ffff_ffff_ff00, u64::MAX];

/// What only the implementation knows how to do to itself: the traces of
/// a crash and of damage.
pub(crate) struct Faults<'a> {
    /// Leave what a crash in the middle of writing the sidecar of `ino`
    /// leaves (a temp file of the write); `None` for a store whose writes
    /// leave none (a put to S3 is whole or absent).
    pub interrupt_sidecar_write: Option<&'a dyn Fn(u64)>,
    /// Replace the sidecar of `ino` with bytes that are not a document.
    pub damage_sidecar: &'a dyn Fn(u64),
}

/// Run the whole suite on an empty store.
pub(crate) fn run(store: &dyn ContentStore, faults: &Faults) {
    let interrupt_sidecar_write = faults.interrupt_sidecar_write;
    missing_objects_are_not_found(store);
    create_write_fsync_read(store);
    create_new_never_replaces(store);
    remove_is_idempotent(store);
    a_handle_closed_after_removal_puts_nothing_back(store);
    present_lists_a_range(store);
    large_inos_have_distinct_names(store);
    adopt_makes_an_object(store);
    sidecar_round_trip(store);
    match interrupt_sidecar_write {
        Some(interrupt) => {
            list_skips_sidecars_and_temp_files(store, interrupt);
            sweep_temp_removes_only_temp_files(store, interrupt);
        }
        None => list_skips_sidecars_and_temp_files(store, &|_| {}),
    }
    damaged_sidecars_are_errors(store, faults.damage_sidecar);
    local_side(store);
    writers_are_those_of_the_local_file(store);
}

fn doc(n: u64) -> AttrJson {
    AttrJson {
        description: Some(format!("document {n}")),
        custom_attributes: [("n".to_string(), n.to_string())].into(),
        ..AttrJson::new(uuid::Uuid::from_u64_pair(0x0190_0000_0000_7000, n).to_string())
    }
}

fn objects(store: &dyn ContentStore) -> Vec<u64> {
    let (inos, stray) = store.list().expect("list");
    assert!(
        stray.is_empty(),
        "strays in a store made by the suite: {stray:?}"
    );
    inos
}

fn read_all(store: &dyn ContentStore, ino: u64) -> Vec<u8> {
    let f = store.open_read(ino).expect("open_read");
    let len = f.metadata().unwrap().len() as usize;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

fn missing_objects_are_not_found(store: &dyn ContentStore) {
    let ino = 7;
    let kind = |r: std::io::Result<std::fs::File>| r.map(|_| ()).unwrap_err().kind();
    assert_eq!(kind(store.open_rw(ino)), ErrorKind::NotFound);
    assert_eq!(kind(store.open_read(ino)), ErrorKind::NotFound);
    assert_eq!(store.stat(ino).unwrap(), None);
    store
        .remove(ino)
        .expect("removing a missing object is not an error");
    assert!(store.read_sidecar(ino).unwrap().is_none());
    store
        .remove_sidecar(ino)
        .expect("removing a missing sidecar");
    // Asking never creates.
    assert_eq!(store.stat(ino).unwrap(), None);
    assert!(!objects(store).contains(&ino));
}

fn create_write_fsync_read(store: &dyn ContentStore) {
    let ino = 1;
    let f = store.create_new(ino).expect("create_new");
    assert_eq!(store.stat(ino).unwrap().map(|s| s.size), Some(0));
    f.write_all_at(b"hello, world", 0).unwrap();
    f.write_all_at(b"WORLD", 7).unwrap();
    store.fsync(ino, &f, false).expect("fsync");
    let st = store.stat(ino).unwrap().expect("the object exists");
    assert_eq!(st.size, 12);
    // The figures are the local file's: the core compares a hash's
    // version (taken from the open file) with `stat`.
    let m = f.metadata().unwrap();
    assert_eq!(st.mtime, Timestamp::mtime_of(&m));
    assert_eq!(st.ctime, Timestamp::ctime_of(&m));
    assert!(st.blocks > 0, "12 bytes written take space");
    assert_eq!(read_all(store, ino), b"hello, WORLD");
    // Reopened read-write: the content is there, and appending works.
    let g = store.open_rw(ino).expect("open_rw");
    let mut buf = [0u8; 5];
    g.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"hello");
    (&g).write_all(b"!").unwrap(); // at offset 0: not an append handle
    store.fsync(ino, &g, true).expect("fdatasync");
    assert_eq!(read_all(store, ino), b"!ello, WORLD");
    // open_or_create opens an existing object as it is (no truncation)...
    let h = store.open_or_create(ino).unwrap();
    assert_eq!(h.metadata().unwrap().len(), 12);
    // ...and makes an absent one empty.
    let e = store.open_or_create(2).unwrap();
    assert_eq!(e.metadata().unwrap().len(), 0);
    assert_eq!(store.stat(2).unwrap().map(|s| s.size), Some(0));
    assert_eq!(objects(store), vec![1, 2]);
    store.remove(1).unwrap();
    store.remove(2).unwrap();
    assert!(objects(store).is_empty());
}

fn create_new_never_replaces(store: &dyn ContentStore) {
    let ino = 3;
    let f = store.create_new(ino).unwrap();
    f.write_all_at(b"kept", 0).unwrap();
    store.fsync(ino, &f, false).unwrap();
    let again = store.create_new(ino).map(|_| ()).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    assert_eq!(read_all(store, ino), b"kept");
    store.remove(ino).unwrap();
}

fn present_lists_a_range(store: &dyn ContentStore) {
    for ino in [0x500, 0x501, 0x5ff, 0x600] {
        store.create_new(ino).unwrap();
    }
    assert_eq!(
        store.present(0x500..0x600).unwrap(),
        vec![0x500, 0x501, 0x5ff]
    );
    assert_eq!(store.present(0x502..0x5ff).unwrap(), Vec::<u64>::new());
    assert_eq!(store.present(0x600..0x600).unwrap(), Vec::<u64>::new());
    for ino in [0x500, 0x501, 0x5ff, 0x600] {
        store.remove(ino).unwrap();
    }
    assert!(store.present(0x500..0x601).unwrap().is_empty());
}

fn remove_is_idempotent(store: &dyn ContentStore) {
    let ino = 4;
    store.create_new(ino).unwrap();
    store.remove(ino).unwrap();
    store.remove(ino).expect("a second removal is not an error");
    assert_eq!(store.stat(ino).unwrap(), None);
    assert_eq!(
        store.open_rw(ino).map(|_| ()).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    // Removing the object leaves its sidecar: they go separately.
    store.create_new(ino).unwrap();
    store.write_sidecar(ino, &doc(ino), DirSync::Now).unwrap();
    store.remove(ino).unwrap();
    assert!(store.read_sidecar(ino).unwrap().is_some());
    store.remove_sidecar(ino).unwrap();
    assert!(store.read_sidecar(ino).unwrap().is_none());
}

/// A handle may outlive its object's removal (an open racing the last
/// close of a removed file): what it writes and closes afterwards must
/// not bring the object back, on a remote store as on a local one.
fn a_handle_closed_after_removal_puts_nothing_back(store: &dyn ContentStore) {
    let ino = 5;
    let f = store.create_new(ino).unwrap();
    f.write_all_at(b"sent", 0).unwrap();
    store.close(ino, &f).unwrap();
    let f = store.open_rw(ino).unwrap();
    store.remove(ino).unwrap();
    f.write_all_at(b"changed after removal", 0).unwrap();
    store.fsync(ino, &f, false).unwrap();
    store.close(ino, &f).unwrap();
    assert_eq!(store.stat(ino).unwrap(), None);
    assert!(!objects(store).contains(&ino), "{:?}", objects(store));
}

fn large_inos_have_distinct_names(store: &dyn ContentStore) {
    for (i, ino) in EDGE_INOS.iter().enumerate() {
        let f = store
            .create_new(*ino)
            .unwrap_or_else(|e| panic!("create {ino:#x}: {e}"));
        f.write_all_at(&vec![b'x'; i + 1], 0).unwrap();
        store.fsync(*ino, &f, false).unwrap();
    }
    let mut want = EDGE_INOS.to_vec();
    want.sort_unstable();
    assert_eq!(objects(store), want);
    let locations: BTreeSet<String> = EDGE_INOS.iter().map(|i| store.location(*i)).collect();
    assert_eq!(locations.len(), EDGE_INOS.len(), "{locations:?}");
    for (i, ino) in EDGE_INOS.iter().enumerate() {
        assert_eq!(
            store.stat(*ino).unwrap().unwrap().size,
            i as u64 + 1,
            "{ino:#x}"
        );
        assert_eq!(read_all(store, *ino).len(), i + 1);
    }
    for ino in EDGE_INOS {
        store.remove(ino).unwrap();
    }
    assert!(objects(store).is_empty());
}

fn adopt_makes_an_object(store: &dyn ContentStore) {
    let staging = store.staging_dir();
    std::fs::create_dir_all(&staging).unwrap();
    let staged = staging.join("conformance-1");
    std::fs::write(&staged, b"imported").unwrap();
    std::fs::File::open(&staged).unwrap().sync_all().unwrap();
    let ino = 5;
    let st = store.adopt(ino, &staged).expect("adopt");
    assert_eq!(st.size, 8);
    assert_eq!(store.stat(ino).unwrap(), Some(st));
    assert!(!staged.exists(), "the staged file is consumed");
    assert_eq!(read_all(store, ino), b"imported");
    // Never over an existing object; that object stays as it was.
    std::fs::write(&staged, b"other").unwrap();
    let e = store.adopt(ino, &staged).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(read_all(store, ino), b"imported");
    std::fs::remove_file(&staged).unwrap();
    // A staged file that is not there: an error, and no object.
    let e = store.adopt(6, &staging.join("absent")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(store.stat(6).unwrap(), None);
    store.remove(ino).unwrap();
    assert!(objects(store).is_empty());
}

fn sidecar_round_trip(store: &dyn ContentStore) {
    // A sidecar needs no object (directories have none).
    let (a, b) = (0x10, u64::MAX);
    let first = doc(a);
    store.write_sidecar(a, &first, DirSync::Now).unwrap();
    let (back, version) = store.read_sidecar(a).unwrap().expect("written");
    assert_eq!(back, first);
    assert_eq!(version, SchemaVersion::V2);
    // Replaced, durable at sync_all.
    let second = doc(a + 1);
    store.write_sidecar(a, &second, DirSync::Deferred).unwrap();
    store.write_sidecar(b, &doc(b), DirSync::Deferred).unwrap();
    store.sync_all().expect("sync_all");
    assert_eq!(store.read_sidecar(a).unwrap().unwrap().0, second);
    assert_eq!(store.read_sidecar(b).unwrap().unwrap().0, doc(b));
    let found: Vec<_> = store.sidecars().collect();
    assert_eq!(found.len(), 2, "{found:?}");
    let inos: BTreeSet<u64> = found.iter().filter_map(|s| s.ino).collect();
    assert_eq!(inos, [a, b].into());
    for s in &found {
        let (d, _) = s.parsed.as_ref().expect("parses");
        let want = store.read_sidecar(s.ino.unwrap()).unwrap().unwrap().0;
        assert_eq!(d, &want);
    }
    assert!(objects(store).is_empty(), "sidecars are not objects");
    store.remove_sidecar(a).unwrap();
    store
        .remove_sidecar(a)
        .expect("a second removal is not an error");
    store.remove_sidecar(b).unwrap();
    store.sync_all().unwrap();
    assert!(store.read_sidecar(a).unwrap().is_none());
    assert_eq!(store.sidecars().count(), 0);
}

fn list_skips_sidecars_and_temp_files(store: &dyn ContentStore, interrupt: &dyn Fn(u64)) {
    let ino = 0x2a;
    store.create_new(ino).unwrap();
    store.write_sidecar(ino, &doc(ino), DirSync::Now).unwrap();
    interrupt(ino);
    // Sidecar and temp file of an inode without an object too.
    store.write_sidecar(0x2b, &doc(0x2b), DirSync::Now).unwrap();
    interrupt(0x2b);
    assert_eq!(objects(store), vec![ino]);
    let found: Vec<_> = store.sidecars().map(|s| s.ino).collect();
    assert_eq!(
        found,
        vec![Some(ino), Some(0x2b)],
        "temp files are not sidecars"
    );
    store.sweep_temp().unwrap();
    store.remove(ino).unwrap();
    store.remove_sidecar(ino).unwrap();
    store.remove_sidecar(0x2b).unwrap();
    assert!(objects(store).is_empty());
}

fn sweep_temp_removes_only_temp_files(store: &dyn ContentStore, interrupt: &dyn Fn(u64)) {
    let ino = 0x301;
    store.create_new(ino).unwrap();
    store.write_sidecar(ino, &doc(ino), DirSync::Now).unwrap();
    interrupt(ino);
    interrupt(ino);
    interrupt(u64::MAX);
    assert_eq!(store.sweep_temp().unwrap(), 3);
    assert_eq!(store.sweep_temp().unwrap(), 0, "nothing left to sweep");
    assert_eq!(objects(store), vec![ino]);
    assert!(store.read_sidecar(ino).unwrap().is_some());
    assert_eq!(store.sidecars().count(), 1);
    store.remove(ino).unwrap();
    store.remove_sidecar(ino).unwrap();
    assert!(objects(store).is_empty());
}

fn damaged_sidecars_are_errors(store: &dyn ContentStore, damage: &dyn Fn(u64)) {
    let ino = 0x77;
    store.write_sidecar(ino, &doc(ino), DirSync::Now).unwrap();
    damage(ino);
    // An error for the caller to report, not a panic, not "absent".
    let got = store.read_sidecar(ino);
    assert!(matches!(got, Err(SidecarError::Json(_))), "{got:?}");
    let found: Vec<_> = store.sidecars().collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].ino, Some(ino));
    assert!(found[0].parsed.is_err());
    // A good document replaces it.
    store.write_sidecar(ino, &doc(ino), DirSync::Now).unwrap();
    assert_eq!(store.read_sidecar(ino).unwrap().unwrap().0, doc(ino));
    store.remove_sidecar(ino).unwrap();
}

fn local_side(store: &dyn ContentStore) {
    let s = store.space().expect("space");
    assert!(s.frsize > 0);
    assert!(s.blocks > 0);
    assert!(s.bfree <= s.blocks && s.bavail <= s.bfree, "{s:?}");
    store.check_ready().expect("ready");
    assert!(store.staging_dir().is_absolute());
}

/// `writers`: a local file open for writing anywhere (here: a descriptor
/// of the store's) has writers; closed, its figures; absent, nothing.
fn writers_are_those_of_the_local_file(store: &dyn ContentStore) {
    use super::lease::Writers;
    let ino = 40;
    assert_eq!(store.writers(ino).unwrap(), None);
    let f = store.create_new(ino).unwrap();
    f.write_all_at(b"written", 0).unwrap();
    assert_eq!(store.writers(ino).unwrap(), Some(Writers::Some));
    store.fsync(ino, &f, false).unwrap();
    store.close(ino, &f).unwrap();
    drop(f);
    match store.writers(ino).unwrap() {
        Some(Writers::None(st)) => assert_eq!(st.size, 7),
        other => panic!("closed, yet {other:?}"),
    }
    // Taking changes a writer made unseen is harmless on a quiet file.
    store.adopt_changes(ino).unwrap();
    assert_eq!(read_all(store, ino), b"written");
    store.remove(ino).unwrap();
}
