//! The overlay of staged changes over committed state: read-your-writes,
//! what a batch takes, what committing it drops, and that nothing staged
//! is ever evicted. A reference model (plain maps) checks random sequences
//! of stage / take / write / commit / fill / lookup.

use super::*;
use crate::types::journal::{Op as JOp, Record, Status, Update};
use crate::types::Timestamp;
use std::collections::{BTreeMap, HashMap, HashSet};

fn inode(ino: u64, size: u64) -> Inode {
    Inode {
        ino,
        file_id: format!("f{ino}"),
        kind: Kind::File,
        perm: 0o644,
        uid: 0,
        gid: 0,
        nlink: 1,
        size,
        atime: Timestamp(0),
        mtime: Timestamp(0),
        ctime: Timestamp(0),
        crtime: Timestamp(0),
        rdev: 0,
        parent: 1,
        target: None,
        created_by: "t".into(),
        original_name: b"x".to_vec(),
        sha256: None,
        blocks: None,
        flags: 0,
        version: None,
    }
}

/// Released objects with their log rows, as the tests compare them.
fn objects(released: Vec<Released>) -> Vec<(uuid::Uuid, Vec<u64>)> {
    released
        .into_iter()
        .map(|r| (r.row.expect("objects come with a row"), r.objects))
        .collect()
}

fn dir(ino: u64) -> Inode {
    Inode {
        kind: Kind::Dir,
        nlink: 2,
        ..inode(ino, 0)
    }
}

fn dentry(ino: u64, id: u64) -> Dentry {
    Dentry {
        ino,
        kind: Kind::File,
        id,
    }
}

fn xa(v: u8) -> Xattrs {
    Arc::new(vec![(b"user.k".to_vec(), vec![v])])
}

fn key(parent: u64, name: &str) -> DentryKey {
    (parent, name.as_bytes().to_vec())
}

fn record() -> Record {
    Record::new(JOp::Write, Status::Pending, None, serde_json::Value::Null)
}

fn stage_inode(c: &Cache, ino: u64, v: Option<Inode>) -> u64 {
    let mut s = Staged::default();
    s.inodes.insert(ino, v);
    c.apply(s)
}

fn stage_dentry(c: &Cache, k: DentryKey, v: Option<Dentry>) -> u64 {
    let mut s = Staged::default();
    s.dentries.insert(k, v);
    c.apply(s)
}

fn hit<T: std::fmt::Debug>(k: Known<T>) -> Option<T> {
    match k {
        Known::Hit(v) => v,
        Known::Miss => panic!("expected a hit, got a miss"),
    }
}

fn is_miss<T>(k: &Known<T>) -> bool {
    matches!(k, Known::Miss)
}

/// Take a batch, "write" it, commit it.
fn commit_all(c: &Cache) -> (u64, Batch) {
    let (seq, b) = c.snapshot();
    c.committed(seq);
    (seq, b)
}

#[test]
fn staged_changes_are_read_back_before_commit() {
    let c = Cache::new(100);
    assert!(is_miss(&c.inode(7)));
    assert!(is_miss(&c.dentry(1, b"a")));
    assert!(is_miss(&c.xattrs(7)));

    let mut s = Staged::default();
    s.inodes.insert(7, Some(inode(7, 10)));
    s.dentries.insert(key(1, "a"), Some(dentry(7, 3)));
    s.xattrs.insert(7, Some(xa(1)));
    let seq = c.apply(s);
    assert_eq!(seq, 1);
    assert_eq!(c.seq(), 1);

    assert_eq!(hit(c.inode(7)), Some(inode(7, 10)));
    assert_eq!(hit(c.dentry(1, b"a")), Some(dentry(7, 3)));
    assert_eq!(hit(c.xattrs(7)).as_deref(), Some(&*xa(1)));
    // Another name of the same directory is still unknown (not complete).
    assert!(is_miss(&c.dentry(1, b"b")));

    // Committed: still read back, now from the LRU.
    commit_all(&c);
    assert_eq!(c.dirty_len(), 0);
    assert_eq!(hit(c.inode(7)), Some(inode(7, 10)));
    assert_eq!(hit(c.dentry(1, b"a")), Some(dentry(7, 3)));
    assert_eq!(hit(c.xattrs(7)).as_deref(), Some(&*xa(1)));
}

#[test]
fn a_staged_removal_shadows_committed_state() {
    let c = Cache::new(100);
    // Committed state, as a reader fills it after a miss.
    let gen = c.generation();
    c.fill_inode(gen, &inode(7, 10));
    c.fill_dentry(gen, 1, b"a", Some(dentry(7, 3)));
    c.fill_xattrs(gen, 7, xa(1));
    assert_eq!(hit(c.inode(7)), Some(inode(7, 10)));

    let mut s = Staged::default();
    s.inodes.insert(7, None);
    s.dentries.insert(key(1, "a"), None);
    s.xattrs.insert(7, None);
    c.apply(s);
    // Known absent, although the LRU still holds the old values.
    assert_eq!(hit(c.inode(7)), None);
    assert_eq!(hit(c.dentry(1, b"a")), None);
    assert!(hit(c.xattrs(7)).is_none());

    // While the batch is in flight the removal still shadows.
    let (seq, b) = c.snapshot();
    assert_eq!(b.inodes, vec![(7, None)]);
    assert_eq!(b.dentries, vec![(key(1, "a"), None)]);
    assert_eq!(b.xattrs, vec![(7, None)]);
    assert_eq!(hit(c.inode(7)), None);
    c.committed(seq);
    // Committed: a removed inode or attribute list is forgotten (the store
    // answers); a removed name stays as a negative entry.
    assert!(is_miss(&c.inode(7)));
    assert!(is_miss(&c.xattrs(7)));
    assert_eq!(hit(c.dentry(1, b"a")), None);
}

#[test]
fn the_last_stage_of_a_key_wins() {
    let c = Cache::new(100);
    let s1 = stage_inode(&c, 7, Some(inode(7, 1)));
    let s2 = stage_inode(&c, 7, Some(inode(7, 2)));
    let s3 = stage_dentry(&c, key(1, "a"), Some(dentry(7, 1)));
    let s4 = stage_dentry(&c, key(1, "a"), None);
    let s5 = stage_dentry(&c, key(1, "a"), Some(dentry(8, 2)));
    assert_eq!([s1, s2, s3, s4, s5], [1, 2, 3, 4, 5]);
    assert_eq!(hit(c.inode(7)), Some(inode(7, 2)));
    assert_eq!(hit(c.dentry(1, b"a")), Some(dentry(8, 2)));
    // One row per key in the batch: the final state.
    assert_eq!(c.dirty_len(), 2);
    let (seq, b) = c.snapshot();
    assert_eq!(seq, 5);
    assert_eq!(b.inodes, vec![(7, Some(inode(7, 2)))]);
    assert_eq!(b.dentries, vec![(key(1, "a"), Some(dentry(8, 2)))]);
    // One mutation staging a key twice (a map): also one row.
    let mut s = Staged::default();
    s.inodes.insert(9, Some(inode(9, 1)));
    s.inodes.insert(9, Some(inode(9, 2)));
    c.apply(s);
    assert_eq!(hit(c.inode(9)), Some(inode(9, 2)));
}

#[test]
fn committing_a_batch_keeps_what_was_staged_after_it() {
    let c = Cache::new(100);
    stage_inode(&c, 1, Some(inode(1, 1)));
    stage_inode(&c, 2, Some(inode(2, 1)));
    let r1 = record();
    let mut s = Staged::default();
    s.journal.push(r1.clone());
    s.usage = (100, 1);
    c.apply(s);
    let (seq, b) = c.snapshot();
    assert_eq!(seq, 3);
    assert_eq!(b.inodes.len(), 2);
    assert_eq!(b.journal.len(), 1);
    assert_eq!(b.usage_delta, (100, 1));

    // Staged while the batch is being written.
    stage_inode(&c, 2, Some(inode(2, 2)));
    stage_inode(&c, 3, Some(inode(3, 1)));
    let r2 = record();
    let mut s = Staged::default();
    s.journal.push(r2.clone());
    s.usage = (5, 0);
    c.apply(s);

    assert!(c.committed(seq).is_empty());
    // The later stages are still visible and still dirty.
    assert_eq!(hit(c.inode(1)), Some(inode(1, 1)));
    assert_eq!(hit(c.inode(2)), Some(inode(2, 2)));
    assert_eq!(hit(c.inode(3)), Some(inode(3, 1)));
    assert_eq!(c.dirty_len(), 2 + 1, "inodes 2 and 3, one log row");
    let (seq2, b2) = c.snapshot();
    assert_eq!(seq2, 6);
    let mut inos: Vec<_> = b2.inodes.iter().map(|(i, v)| (*i, v.clone())).collect();
    inos.sort_by_key(|(i, _)| *i);
    assert_eq!(
        inos,
        vec![(2, Some(inode(2, 2))), (3, Some(inode(3, 1)))],
        "the committed key 1 is not written again"
    );
    let ids: Vec<_> = b2.journal.iter().map(|r| r.id).collect();
    assert_eq!(
        ids,
        vec![r2.id],
        "a committed log row is not inserted twice"
    );
    assert_eq!(b2.usage_delta, (5, 0), "usage counted once");
    assert_eq!(c.usage_total(), (105, 1));
    c.committed(seq2);
    assert_eq!(c.dirty_len(), 0);
    assert!(c.snapshot().1.is_empty());
}

#[test]
fn a_row_settled_before_it_is_taken_is_updated_in_place() {
    let c = Cache::new(100);
    let r = record();
    let mut s = Staged::default();
    s.journal.push(r.clone());
    c.apply(s);
    // Settled by a later mutation before the writer took it.
    let mut s = Staged::default();
    s.journal_done
        .push(Update::new(r.id, Status::Committed, "done".to_string()));
    c.apply(s);
    assert_eq!(c.dirty_len(), 1, "still one row");
    let (seq, b) = c.snapshot();
    assert_eq!(b.journal.len(), 1);
    assert_eq!(b.journal[0].id, r.id);
    assert_eq!(b.journal[0].status, Status::Committed);
    assert_eq!(b.journal[0].outcome.as_deref(), Some("done"));
    assert!(b.journal[0].completed_at.is_some());
    assert!(b.journal_done.is_empty(), "no update row for it");
    c.committed(seq);
    assert_eq!(c.dirty_len(), 0);
}

#[test]
fn a_row_settled_after_it_was_taken_gets_an_update() {
    let c = Cache::new(100);
    let r = record();
    let mut s = Staged::default();
    s.journal.push(r.clone());
    c.apply(s);
    let (seq, b) = c.snapshot();
    assert_eq!(b.journal[0].status, Status::Pending);
    // The writer is writing the row as pending: its settling must follow
    // as an update, not change the row the batch already holds.
    let useq = c.push_journal_done(Update::new(r.id, Status::Failed, None));
    assert!(useq > seq);
    c.committed(seq);
    let (seq2, b2) = c.snapshot();
    assert!(b2.journal.is_empty());
    assert_eq!(b2.journal_done.len(), 1);
    assert_eq!(b2.journal_done[0].id, r.id);
    assert_eq!(b2.journal_done[0].status, Status::Failed);
    // Update rows do not count towards the writer's bound.
    assert_eq!(c.dirty_len(), 0);
    c.committed(seq2);
    assert!(c.snapshot().1.journal_done.is_empty());
}

#[test]
fn a_row_staged_after_a_failed_batch_is_still_updated_in_place() {
    let c = Cache::new(100);
    let r1 = record();
    let mut s = Staged::default();
    s.journal.push(r1.clone());
    c.apply(s);
    // A batch taken and not committed (the write failed): r1 was taken.
    let _ = c.snapshot();
    let r2 = record();
    let mut s = Staged::default();
    s.journal.push(r2.clone());
    c.apply(s);
    c.push_journal_done(Update::new(r1.id, Status::Committed, None));
    c.push_journal_done(Update::new(r2.id, Status::Committed, None));
    // The retry carries both rows; r1 (taken before) is settled by an
    // update, r2 in place.
    let (seq, b) = c.snapshot();
    let st: HashMap<_, _> = b.journal.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(st[&r1.id], Status::Pending);
    assert_eq!(st[&r2.id], Status::Committed);
    assert_eq!(b.journal_done.len(), 1);
    assert_eq!(b.journal_done[0].id, r1.id);
    c.committed(seq);
    assert_eq!(c.dirty_len(), 0);
}

#[test]
fn negative_entries_and_complete_directories() {
    let c = Cache::new(100);
    // A name the store does not have: remembered as absent.
    let gen = c.generation();
    c.fill_dentry(gen, 1, b"nope", None);
    assert_eq!(hit(c.dentry(1, b"nope")), None);
    assert!(is_miss(&c.dentry(1, b"other")));

    // A directory created empty is complete: any name it lacks is absent
    // without asking the store.
    let mut s = Staged::default();
    s.inodes.insert(50, Some(dir(50)));
    s.new_dirs.push(50);
    s.dentries.insert(key(50, "a"), Some(dentry(51, 10)));
    c.apply(s);
    assert!(c.has_listing(50));
    assert_eq!(hit(c.dentry(50, b"zzz")), None);
    assert_eq!(hit(c.dentry(50, b"a")), Some(dentry(51, 10)));
    commit_all(&c);
    assert_eq!(hit(c.dentry(50, b"zzz")), None);
    let l = c.listing(50, 0, 10).expect("complete");
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].offset, l[0].ino, &l[0].name[..]), (10, 51, &b"a"[..]));

    // Removing the directory forgets that it was complete.
    stage_inode(&c, 50, None);
    assert!(!c.has_listing(50));
    assert!(is_miss(&c.dentry(50, b"zzz")));
}

#[test]
fn a_stale_fill_is_ignored() {
    let c = Cache::new(100);
    // A reader misses, reads the store (old value) ...
    let gen = c.generation();
    // ... meanwhile a mutation stages and the writer commits a new value.
    stage_inode(&c, 7, Some(inode(7, 2)));
    commit_all(&c);
    // The reader's fill must not overwrite the fresher state.
    c.fill_inode(gen, &inode(7, 1));
    c.fill_dentry(gen, 1, b"a", Some(dentry(7, 1)));
    c.fill_xattrs(gen, 7, xa(1));
    assert_eq!(hit(c.inode(7)), Some(inode(7, 2)));
    assert!(is_miss(&c.dentry(1, b"a")));
    assert!(is_miss(&c.xattrs(7)));
}

#[test]
fn eviction_never_drops_a_staged_entry() {
    // The smallest cache: 16 entries per LRU.
    let c = Cache::new(1);
    const N: u64 = 500;
    for i in 1..=N {
        let mut s = Staged::default();
        s.inodes.insert(i, Some(inode(i, i)));
        s.dentries
            .insert(key(1, &format!("n{i}")), Some(dentry(i, i)));
        s.xattrs.insert(i, Some(xa(i as u8)));
        c.apply(s);
        // Fills of committed state in between churn the LRUs.
        let gen = c.generation();
        c.fill_inode(gen, &inode(10_000 + i, 0));
        c.fill_dentry(gen, 2, format!("x{i}").as_bytes(), None);
    }
    assert_eq!(c.dirty_len() as u64, 3 * N);
    for i in 1..=N {
        assert_eq!(hit(c.inode(i)), Some(inode(i, i)), "inode {i}");
        assert_eq!(
            hit(c.dentry(1, format!("n{i}").as_bytes())),
            Some(dentry(i, i))
        );
        assert_eq!(hit(c.xattrs(i)).as_deref(), Some(&*xa(i as u8)));
    }
    let (seq, b) = c.snapshot();
    assert_eq!(b.inodes.len() as u64, N);
    assert_eq!(b.dentries.len() as u64, N);
    assert_eq!(b.xattrs.len() as u64, N);
    // Until committed, the batch in flight is not evictable either.
    for i in 1..=N {
        let gen = c.generation();
        c.fill_inode(gen, &inode(20_000 + i, 0));
        assert_eq!(hit(c.inode(i)), Some(inode(i, i)));
    }
    c.committed(seq);
    // Committed: only the LRU's worth stays; the rest is a miss (the store
    // answers), never a wrong value.
    let mut hits = 0;
    for i in 1..=N {
        match c.inode(i) {
            Known::Hit(v) => {
                assert_eq!(v, Some(inode(i, i)));
                hits += 1;
            }
            Known::Miss => {}
        }
    }
    assert!(hits <= 16, "{hits} hits in a 16-entry LRU");
    assert_eq!(c.dirty_len(), 0);
}

#[test]
fn dirty_counts_and_entries_per_directory() {
    let c = Cache::new(100);
    assert_eq!(c.dirty_len(), 0);
    assert!(!c.has_dirty_entries(1));
    let mut s = Staged::default();
    s.inodes.insert(5, Some(inode(5, 0)));
    s.dentries.insert(key(1, "a"), Some(dentry(5, 1)));
    s.dentries.insert(key(1, "b"), None);
    s.dentries.insert(key(2, "c"), Some(dentry(6, 2)));
    s.xattrs.insert(5, Some(xa(0)));
    s.journal.push(record());
    s.journal.push(record());
    let seq1 = c.apply(s);
    assert_eq!(c.dirty_len(), 1 + 3 + 1 + 2);
    assert!(c.has_dirty_entries(1) && c.has_dirty_entries(2));
    assert!(!c.has_dirty_entries(3));
    let (present, removed) = c.dirty_entries(1);
    assert_eq!(present, 1);
    assert_eq!(removed, vec![b"b".to_vec()]);

    // Restaging keys does not grow the count.
    let s2 = stage_dentry(&c, key(1, "a"), None);
    stage_inode(&c, 5, Some(inode(5, 1)));
    assert_eq!(c.dirty_len(), 1 + 3 + 1 + 2);
    let (present, removed) = c.dirty_entries(1);
    assert_eq!(present, 0);
    assert_eq!(removed.len(), 2);

    // Committing the first stage only: "a" changed since, stays dirty.
    c.committed(seq1);
    assert!(c.has_dirty_entries(1));
    assert!(!c.has_dirty_entries(2));
    assert_eq!(c.dirty_len(), 2, "inode 5 and entry a");
    c.committed(s2 + 1);
    assert!(!c.has_dirty_entries(1));
    assert_eq!(c.dirty_len(), 0);
}

#[test]
fn usage_and_released_objects_follow_their_commit() {
    let c = Cache::new(100);
    c.set_usage_total(1000, 10);
    let rid = uuid::Uuid::now_v7();
    let mut s = Staged::default();
    s.inodes.insert(7, None);
    s.released_objects.push(7);
    s.reclaim = Some(rid);
    s.usage = (-100, -1);
    let seq1 = c.apply(s);
    let s = Staged {
        usage: (40, 1),
        ..Default::default()
    };
    let seq2 = c.apply(s);
    assert_eq!(c.usage_total(), (940, 10));
    let (seq, b) = c.snapshot();
    assert_eq!(seq, seq2);
    assert_eq!(b.usage_delta, (-60, 0));

    let rid2 = uuid::Uuid::now_v7();
    let mut s = Staged::default();
    s.inodes.insert(8, None);
    s.released_objects.extend([8, 9]);
    s.reclaim = Some(rid2);
    let seq3 = c.apply(s);

    // Objects go only once the removal of their inode is committed.
    assert!(c.committed(seq1 - 1).is_empty());
    assert_eq!(objects(c.committed(seq)), vec![(rid, vec![7])]);
    assert!(c.committed(seq).is_empty(), "handed out once");
    assert_eq!(c.snapshot().1.usage_delta, (0, 0));
    assert_eq!(objects(c.committed(seq3)), vec![(rid2, vec![8, 9])]);
    assert_eq!(c.usage_total(), (940, 10), "the running total stays");
}

#[test]
fn listings_follow_renames_and_removals() {
    let c = Cache::new(100);
    let mut s = Staged::default();
    s.inodes.insert(50, Some(dir(50)));
    s.new_dirs.push(50);
    s.dentries.insert(key(50, "a"), Some(dentry(51, 10)));
    s.dentries.insert(key(50, "b"), Some(dentry(52, 11)));
    s.dentries.insert(key(50, "c"), Some(dentry(53, 12)));
    c.apply(s);
    commit_all(&c);
    // Rename a over c: the entry keeps its cookie, c's goes.
    let mut s = Staged::default();
    s.dentries.insert(key(50, "a"), None);
    s.dentries.insert(key(50, "c"), Some(dentry(51, 10)));
    c.apply(s);
    let names = |l: Vec<DirEntry>| -> Vec<(u64, Vec<u8>, u64)> {
        l.into_iter().map(|e| (e.offset, e.name, e.ino)).collect()
    };
    assert_eq!(
        names(c.listing(50, 0, 10).unwrap()),
        vec![(10, b"c".to_vec(), 51), (11, b"b".to_vec(), 52)]
    );
    // Paging by cookie.
    assert_eq!(
        names(c.listing(50, 10, 10).unwrap()),
        vec![(11, b"b".to_vec(), 52)]
    );
    assert!(c.listing(50, 11, 10).unwrap().is_empty());
    assert!(c.listing(51, 0, 10).is_none(), "not a complete directory");
}

#[test]
fn evicting_a_live_entry_makes_its_directory_incomplete() {
    let c = Cache::new(16);
    let mut s = Staged::default();
    s.inodes.insert(50, Some(dir(50)));
    s.new_dirs.push(50);
    s.dentries.insert(key(50, "a"), Some(dentry(51, 10)));
    c.apply(s);
    commit_all(&c);
    assert!(c.has_listing(50));
    // Fill the dentry LRU with other names until "a" leaves it.
    for i in 0..16 {
        let gen = c.generation();
        c.fill_dentry(
            gen,
            1,
            format!("x{i}").as_bytes(),
            Some(dentry(99, 100 + i)),
        );
    }
    assert!(!c.has_listing(50));
    // "b" may exist in the store now as far as memory knows.
    assert!(is_miss(&c.dentry(50, b"b")));
    assert!(is_miss(&c.dentry(50, b"a")));
}

// ---------------------------------------------------------------------------
// Reference model.

mod model {
    use super::*;
    use proptest::prelude::*;

    const INOS: u64 = 40;
    const NAMES: u8 = 10;
    /// Directories that exist in the store from the start (never complete).
    const OLD_DIRS: [u64; 3] = [1000, 1001, 1002];

    #[derive(Clone, Debug)]
    pub enum Op {
        Inode(u64, Option<u64>, i64),
        Dentry(usize, u8, Option<u64>),
        Rename(usize, u8, u8),
        Xattr(u64, Option<u8>),
        NewDir,
        DropDir(usize),
        Log,
        Settle(usize, bool),
        Release(u64),
        Snapshot,
        Fail,
        Write,
        Commit,
        ReadInode(u64),
        ReadDentry(usize, u8),
        ReadXattr(u64),
        StartFill(u8, u64, u8),
        FinishFill(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        let ino = 1..=INOS;
        prop_oneof![
            6 => (ino.clone(), proptest::option::weighted(0.8, 0..1000u64), -50..50i64)
                .prop_map(|(i, v, u)| Op::Inode(i, v, u)),
            6 => (0..8usize, 0..NAMES, proptest::option::weighted(0.7, 1..100u64))
                .prop_map(|(p, n, v)| Op::Dentry(p, n, v)),
            2 => (0..8usize, 0..NAMES, 0..NAMES).prop_map(|(p, a, b)| Op::Rename(p, a, b)),
            3 => (ino.clone(), proptest::option::weighted(0.8, any::<u8>()))
                .prop_map(|(i, v)| Op::Xattr(i, v)),
            1 => Just(Op::NewDir),
            1 => (0..8usize).prop_map(Op::DropDir),
            2 => Just(Op::Log),
            2 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Settle(i, ok)),
            1 => ino.clone().prop_map(Op::Release),
            3 => Just(Op::Snapshot),
            1 => Just(Op::Fail),
            3 => Just(Op::Write),
            3 => Just(Op::Commit),
            4 => ino.clone().prop_map(Op::ReadInode),
            4 => (0..8usize, 0..NAMES).prop_map(|(p, n)| Op::ReadDentry(p, n)),
            3 => ino.clone().prop_map(Op::ReadXattr),
            3 => (0..3u8, any::<u64>(), 0..NAMES).prop_map(|(w, k, n)| Op::StartFill(w, k, n)),
            1 => any::<usize>().prop_map(Op::FinishFill),
        ]
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Phase {
        Taken,
        Written,
    }

    enum Fill {
        Inode(Inode),
        Dentry(u64, Vec<u8>, Option<Dentry>),
        Xattr(u64, Xattrs),
    }

    /// What the cache must show, and a store the batches are written to.
    #[derive(Default)]
    struct Model {
        // The truth: every stage applied at once.
        inodes: HashMap<u64, Inode>,
        dentries: HashMap<DentryKey, Dentry>,
        xattrs: HashMap<u64, Xattrs>,
        // The store: what committed batches wrote.
        db_inodes: HashMap<u64, Inode>,
        db_dentries: HashMap<DentryKey, Dentry>,
        db_xattrs: HashMap<u64, Xattrs>,
        db_journal: HashMap<uuid::Uuid, Status>,
        db_usage: (i64, i64),
        // The overlay: keys staged and not committed, with their last seq.
        o_inodes: HashMap<u64, u64>,
        o_dentries: HashMap<DentryKey, u64>,
        o_xattrs: HashMap<u64, u64>,
        /// Log rows: truth of their status.
        journal: Vec<(uuid::Uuid, Status)>,
        /// Rows not committed, and whether a batch already took them.
        j_uncommitted: HashMap<uuid::Uuid, bool>,
        /// Update rows not committed.
        u_uncommitted: usize,
        usage: Vec<(u64, i64, i64)>,
        usage_total: (i64, i64),
        released: Vec<(u64, uuid::Uuid, Vec<u64>)>,
        dirs: Vec<u64>,
        next_dir: u64,
        next_id: u64,
        phase: Option<(Phase, u64, Batch, HashSet<uuid::Uuid>, usize)>,
        fills: Vec<(u64, Fill)>,
    }

    impl Model {
        fn parent(&self, i: usize) -> u64 {
            let all: Vec<u64> = OLD_DIRS.iter().copied().chain(self.dirs.clone()).collect();
            all[i % all.len()]
        }

        fn stage(&mut self, c: &Cache, s: Staged) -> u64 {
            let ins: Vec<_> = s.inodes.iter().map(|(k, v)| (*k, v.clone())).collect();
            let den: Vec<_> = s.dentries.iter().map(|(k, v)| (k.clone(), *v)).collect();
            let xat: Vec<_> = s.xattrs.iter().map(|(k, v)| (*k, v.clone())).collect();
            let rel = (s.reclaim, s.released_objects.clone());
            let usage = s.usage;
            let seq = c.apply(s);
            for (k, v) in ins {
                self.o_inodes.insert(k, seq);
                match v {
                    Some(v) => self.inodes.insert(k, v),
                    None => self.inodes.remove(&k),
                };
            }
            for (k, v) in den {
                self.o_dentries.insert(k.clone(), seq);
                match v {
                    Some(v) => self.dentries.insert(k, v),
                    None => self.dentries.remove(&k),
                };
            }
            for (k, v) in xat {
                self.o_xattrs.insert(k, seq);
                match v {
                    Some(v) => self.xattrs.insert(k, v),
                    None => self.xattrs.remove(&k),
                };
            }
            if let (Some(id), inos) = rel {
                self.released.push((seq, id, inos));
            }
            if usage != (0, 0) {
                self.usage.push((seq, usage.0, usage.1));
                self.usage_total.0 += usage.0;
                self.usage_total.1 += usage.1;
            }
            seq
        }

        fn check_inode(&self, c: &Cache, ino: u64) {
            match c.inode(ino) {
                Known::Hit(v) => assert_eq!(v.as_ref(), self.inodes.get(&ino), "inode {ino}"),
                Known::Miss => {
                    assert!(
                        !self.o_inodes.contains_key(&ino),
                        "staged inode {ino} missed"
                    );
                    assert_eq!(self.inodes.get(&ino), self.db_inodes.get(&ino));
                }
            }
        }

        fn check_dentry(&self, c: &Cache, k: &DentryKey) {
            match c.dentry(k.0, &k.1) {
                Known::Hit(v) => assert_eq!(v.as_ref(), self.dentries.get(k), "entry {k:?}"),
                Known::Miss => {
                    assert!(
                        !self.o_dentries.contains_key(k),
                        "staged entry {k:?} missed"
                    );
                    assert_eq!(self.dentries.get(k), self.db_dentries.get(k));
                }
            }
        }

        fn check_xattr(&self, c: &Cache, ino: u64) {
            match c.xattrs(ino) {
                Known::Hit(v) => {
                    let v = v.filter(|x| !x.is_empty());
                    assert_eq!(v.as_ref(), self.xattrs.get(&ino), "xattrs {ino}")
                }
                Known::Miss => {
                    assert!(
                        !self.o_xattrs.contains_key(&ino),
                        "staged xattrs {ino} missed"
                    );
                    assert_eq!(self.xattrs.get(&ino), self.db_xattrs.get(&ino));
                }
            }
        }

        fn check_listings(&self, c: &Cache) {
            for &d in OLD_DIRS.iter() {
                assert!(c.listing(d, 0, 1000).is_none(), "{d} is not complete");
            }
            for &d in &self.dirs {
                let Some(l) = c.listing(d, 0, 1000) else {
                    continue;
                };
                let mut want: BTreeMap<u64, (Vec<u8>, u64)> = BTreeMap::new();
                for ((p, n), v) in &self.dentries {
                    if *p == d {
                        want.insert(v.id, (n.clone(), v.ino));
                    }
                }
                let got: BTreeMap<u64, (Vec<u8>, u64)> =
                    l.into_iter().map(|e| (e.offset, (e.name, e.ino))).collect();
                assert_eq!(got, want, "listing of {d}");
            }
        }

        fn check_counts(&self, c: &Cache) {
            let want = self.o_inodes.len()
                + self.o_dentries.len()
                + self.o_xattrs.len()
                + self.j_uncommitted.len();
            assert_eq!(c.dirty_len(), want, "dirty_len");
            assert_eq!(c.usage_total(), self.usage_total);
            for &d in OLD_DIRS.iter().chain(&self.dirs) {
                let dirty = self.o_dentries.keys().any(|(p, _)| *p == d);
                assert_eq!(c.has_dirty_entries(d), dirty, "dirty entries of {d}");
            }
        }

        fn run(&mut self, c: &Cache, op: Op) {
            match op {
                Op::Inode(ino, v, u) => {
                    let mut s = Staged::default();
                    s.inodes.insert(ino, v.map(|v| inode(ino, v)));
                    s.usage = (u, u.signum());
                    self.stage(c, s);
                }
                Op::Dentry(p, n, v) => {
                    let p = self.parent(p);
                    let mut s = Staged::default();
                    let v = v.map(|ino| {
                        self.next_id += 1;
                        dentry(ino, self.next_id)
                    });
                    s.dentries.insert((p, vec![b'a' + n]), v);
                    self.stage(c, s);
                }
                Op::Rename(p, a, b) => {
                    let p = self.parent(p);
                    let (ka, kb) = ((p, vec![b'a' + a]), (p, vec![b'a' + b]));
                    if a == b {
                        return;
                    }
                    let Some(d) = self.dentries.get(&ka).copied() else {
                        return;
                    };
                    let mut s = Staged::default();
                    s.dentries.insert(ka, None);
                    s.dentries.insert(kb, Some(d));
                    self.stage(c, s);
                }
                Op::Xattr(ino, v) => {
                    let mut s = Staged::default();
                    s.xattrs.insert(ino, v.map(xa));
                    self.stage(c, s);
                }
                Op::NewDir => {
                    self.next_dir += 1;
                    let d = 2000 + self.next_dir;
                    self.dirs.push(d);
                    let mut s = Staged::default();
                    s.inodes.insert(d, Some(dir(d)));
                    s.new_dirs.push(d);
                    self.stage(c, s);
                }
                Op::DropDir(i) => {
                    if self.dirs.is_empty() {
                        return;
                    }
                    let d = self.dirs[i % self.dirs.len()];
                    let mut s = Staged::default();
                    s.inodes.insert(d, None);
                    self.stage(c, s);
                }
                Op::Log => {
                    let r = record();
                    self.journal.push((r.id, Status::Pending));
                    self.j_uncommitted.insert(r.id, false);
                    let mut s = Staged::default();
                    s.journal.push(r);
                    self.stage(c, s);
                }
                Op::Settle(i, ok) => {
                    if self.journal.is_empty() {
                        return;
                    }
                    let i = i % self.journal.len();
                    let st = if ok {
                        Status::Committed
                    } else {
                        Status::Failed
                    };
                    let id = self.journal[i].0;
                    self.journal[i].1 = st;
                    match self.j_uncommitted.get(&id) {
                        Some(false) => {} // settled in place
                        _ => self.u_uncommitted += 1,
                    }
                    c.push_journal_done(Update::new(id, st, None));
                }
                Op::Release(ino) => {
                    let mut s = Staged::default();
                    s.inodes.insert(ino, None);
                    s.released_objects.push(ino);
                    s.reclaim = Some(uuid::Uuid::now_v7());
                    self.stage(c, s);
                }
                Op::Snapshot => {
                    if self.phase.is_some() {
                        return;
                    }
                    let (seq, b) = c.snapshot();
                    assert_eq!(seq, c.seq());
                    // Everything uncommitted, each key once, final state.
                    let ins: HashMap<u64, Option<Inode>> = b.inodes.iter().cloned().collect();
                    assert_eq!(ins.len(), b.inodes.len(), "one row per inode");
                    let want: HashMap<u64, Option<Inode>> = self
                        .o_inodes
                        .keys()
                        .map(|k| (*k, self.inodes.get(k).cloned()))
                        .collect();
                    assert_eq!(ins, want);
                    let den: HashMap<DentryKey, Option<Dentry>> =
                        b.dentries.iter().cloned().collect();
                    assert_eq!(den.len(), b.dentries.len(), "one row per entry");
                    let want: HashMap<DentryKey, Option<Dentry>> = self
                        .o_dentries
                        .keys()
                        .map(|k| (k.clone(), self.dentries.get(k).copied()))
                        .collect();
                    assert_eq!(den, want);
                    let xat: HashMap<u64, Option<XattrList>> = b.xattrs.iter().cloned().collect();
                    assert_eq!(xat.len(), b.xattrs.len(), "one row per attribute list");
                    let want: HashMap<u64, Option<XattrList>> = self
                        .o_xattrs
                        .keys()
                        .map(|k| (*k, self.xattrs.get(k).map(|x| (**x).clone())))
                        .collect();
                    assert_eq!(xat, want);
                    let ids: HashSet<uuid::Uuid> = b.journal.iter().map(|r| r.id).collect();
                    assert_eq!(ids.len(), b.journal.len());
                    let want: HashSet<uuid::Uuid> = self.j_uncommitted.keys().copied().collect();
                    assert_eq!(ids, want, "log rows");
                    assert_eq!(b.journal_done.len(), self.u_uncommitted, "update rows");
                    let usage = self
                        .usage
                        .iter()
                        .fold((0, 0), |(a, b), (_, x, y)| (a + x, b + y));
                    assert_eq!(b.usage_delta, usage);
                    for t in self.j_uncommitted.values_mut() {
                        *t = true;
                    }
                    let n = b.journal_done.len();
                    self.phase = Some((Phase::Taken, seq, b, ids, n));
                }
                Op::Fail => {
                    if let Some((Phase::Taken, ..)) = self.phase {
                        self.phase = None;
                    }
                }
                Op::Write => {
                    let Some((ph @ Phase::Taken, _, b, _, _)) = &mut self.phase else {
                        return;
                    };
                    *ph = Phase::Written;
                    for (k, v) in &b.inodes {
                        match v {
                            Some(v) => self.db_inodes.insert(*k, v.clone()),
                            None => self.db_inodes.remove(k),
                        };
                    }
                    for (k, v) in &b.dentries {
                        match v {
                            Some(v) => self.db_dentries.insert(k.clone(), *v),
                            None => self.db_dentries.remove(k),
                        };
                    }
                    for (k, v) in &b.xattrs {
                        match v {
                            Some(v) if !v.is_empty() => {
                                self.db_xattrs.insert(*k, Arc::new(v.clone()))
                            }
                            _ => self.db_xattrs.remove(k),
                        };
                    }
                    for r in &b.journal {
                        let old = self.db_journal.insert(r.id, r.status);
                        assert!(old.is_none(), "log row {} inserted twice", r.id);
                    }
                    for u in &b.journal_done {
                        let st = self.db_journal.get_mut(&u.id);
                        let st = st.unwrap_or_else(|| panic!("update of a missing row {}", u.id));
                        *st = u.status;
                    }
                    self.db_usage.0 += b.usage_delta.0;
                    self.db_usage.1 += b.usage_delta.1;
                }
                Op::Commit => {
                    let Some((Phase::Written, seq, _, ids, n)) = self.phase.take() else {
                        return;
                    };
                    let mut got = objects(c.committed(seq));
                    got.sort();
                    let mut want: Vec<(uuid::Uuid, Vec<u64>)> = self
                        .released
                        .iter()
                        .filter(|(s, _, _)| *s <= seq)
                        .map(|(_, id, inos)| (*id, inos.clone()))
                        .collect();
                    want.sort();
                    assert_eq!(got, want, "released objects");
                    self.released.retain(|(s, _, _)| *s > seq);
                    self.o_inodes.retain(|_, s| *s > seq);
                    self.o_dentries.retain(|_, s| *s > seq);
                    self.o_xattrs.retain(|_, s| *s > seq);
                    self.usage.retain(|(s, _, _)| *s > seq);
                    for id in ids {
                        self.j_uncommitted.remove(&id);
                    }
                    self.u_uncommitted -= n;
                }
                Op::ReadInode(ino) => {
                    self.check_inode(c, ino);
                    self.fill_now(c, 0, ino, 0);
                    self.check_inode(c, ino);
                }
                Op::ReadDentry(p, n) => {
                    let k = (self.parent(p), vec![b'a' + n]);
                    self.check_dentry(c, &k);
                    self.fill_now(c, 1, p as u64, n);
                    self.check_dentry(c, &k);
                }
                Op::ReadXattr(ino) => {
                    self.check_xattr(c, ino);
                    self.fill_now(c, 2, ino, 0);
                    self.check_xattr(c, ino);
                }
                Op::StartFill(what, k, n) => {
                    // A reader that missed: generation, then the store.
                    let gen = c.generation();
                    if let Some(f) = self.read_store(what, k, n) {
                        self.fills.push((gen, f));
                    }
                }
                Op::FinishFill(i) => {
                    if self.fills.is_empty() {
                        return;
                    }
                    let (gen, f) = self.fills.remove(i % self.fills.len());
                    // A late fill must not bring back what the store held
                    // before a commit it raced with.
                    match &f {
                        Fill::Inode(i) => {
                            let ino = i.ino;
                            apply_fill(c, gen, f);
                            self.check_inode(c, ino);
                        }
                        Fill::Dentry(p, n, _) => {
                            let k = (*p, n.clone());
                            apply_fill(c, gen, f);
                            self.check_dentry(c, &k);
                        }
                        Fill::Xattr(ino, _) => {
                            let ino = *ino;
                            apply_fill(c, gen, f);
                            self.check_xattr(c, ino);
                        }
                    }
                }
            }
        }

        /// What a reader would fetch from the store for a lookup.
        fn read_store(&self, what: u8, k: u64, n: u8) -> Option<Fill> {
            match what {
                0 => {
                    let ino = 1 + k % INOS;
                    self.db_inodes.get(&ino).map(|i| Fill::Inode(i.clone()))
                }
                1 => {
                    let p = self.parent(k as usize);
                    let name = vec![b'a' + n % NAMES];
                    let v = self.db_dentries.get(&(p, name.clone())).copied();
                    Some(Fill::Dentry(p, name, v))
                }
                _ => {
                    let ino = 1 + k % INOS;
                    let v = self.db_xattrs.get(&ino).cloned().unwrap_or_default();
                    Some(Fill::Xattr(ino, v))
                }
            }
        }

        /// A reader that missed fills at once.
        fn fill_now(&self, c: &Cache, what: u8, k: u64, n: u8) {
            let missed = match what {
                0 => is_miss(&c.inode(k)),
                1 => is_miss(&c.dentry(self.parent(k as usize), &[b'a' + n])),
                _ => is_miss(&c.xattrs(k)),
            };
            if missed {
                let gen = c.generation();
                let k = if what == 1 { k } else { k - 1 };
                if let Some(f) = self.read_store(what, k, n) {
                    apply_fill(c, gen, f);
                }
            }
        }

        fn finish(&mut self, c: &Cache) {
            if let Some((Phase::Taken, ..)) = self.phase {
                self.run(c, Op::Write);
            }
            self.run(c, Op::Commit);
            self.run(c, Op::Snapshot);
            self.run(c, Op::Write);
            self.run(c, Op::Commit);
            assert_eq!(c.dirty_len(), 0);
            assert!(c.snapshot().1.is_empty());
            assert_eq!(self.db_inodes, self.inodes);
            assert_eq!(self.db_dentries, self.dentries);
            assert_eq!(self.db_xattrs, self.xattrs);
            let want: HashMap<uuid::Uuid, Status> = self.journal.iter().copied().collect();
            assert_eq!(self.db_journal, want, "log statuses");
            let total = self.usage_total;
            assert_eq!(self.db_usage, total);
        }
    }

    fn apply_fill(c: &Cache, gen: u64, f: Fill) {
        match f {
            Fill::Inode(i) => c.fill_inode(gen, &i),
            Fill::Dentry(p, n, v) => c.fill_dentry(gen, p, &n, v),
            Fill::Xattr(ino, x) => c.fill_xattrs(gen, ino, x),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 300,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The cache against plain maps: every lookup is the truth or a
        /// miss (never a miss for a staged key), every batch carries
        /// exactly what is uncommitted, and the store ends equal to the
        /// truth.
        #[test]
        fn cache_matches_a_reference_model(ops in proptest::collection::vec(op(), 1..250)) {
            let c = Cache::new(16);
            let mut m = Model::default();
            for op in ops {
                m.run(&c, op);
                m.check_counts(&c);
                m.check_listings(&c);
            }
            for ino in 1..=INOS {
                m.check_inode(&c, ino);
                m.check_xattr(&c, ino);
            }
            for p in 0..8 {
                for n in 0..NAMES {
                    m.check_dentry(&c, &(m.parent(p), vec![b'a' + n]));
                }
            }
            m.finish(&c);
        }
    }
}
