//! The SQLite store through the [`MetaStore`] interface only (how the core
//! sees it): batches round trip, readdir cookies, byte names, batches
//! larger than SQLite's bind-parameter limit, usage and log rows.

use crate::meta::{Batch, Dentry, MetaStore, StoreConfig};
use crate::types::journal::{Op, Record, Status, Update};
use crate::types::{DirEntry, Inode, Kind, Timestamp, ROOT_INO};
use std::collections::BTreeMap;

struct Db {
    meta: Box<dyn MetaStore>,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Drop for Db {
    fn drop(&mut self) {
        self.meta.close();
    }
}

fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = format!("sqlite://{}", dir.path().join("meta.db").display());
    let meta = crate::meta::open(&url, "t", rt.handle().clone()).expect("open");
    let root = Inode::new_dir(ROOT_INO, 0o755, (0, 0), ROOT_INO, b"", "test");
    meta.init_store("store-1", "/backing", &root).unwrap();
    Db {
        meta,
        _rt: rt,
        _dir: dir,
    }
}

fn file(ino: u64, size: u64) -> Inode {
    Inode {
        ino,
        file_id: format!("00000000-0000-7000-8000-{ino:012}"),
        kind: Kind::File,
        perm: 0o640,
        uid: 1000,
        gid: 100,
        nlink: 1,
        size,
        atime: Timestamp(1),
        mtime: Timestamp(2),
        ctime: Timestamp(3),
        crtime: Timestamp(-4),
        rdev: 0,
        parent: ROOT_INO,
        target: None,
        created_by: "alice".into(),
        original_name: format!("f{ino}").into_bytes(),
        sha256: None,
        blocks: None,
    }
}

fn entry(ino: u64, id: u64) -> Option<Dentry> {
    Some(Dentry {
        ino,
        kind: Kind::File,
        id,
    })
}

/// Every entry of `dir` by paging through `read_dir`.
fn list(m: &dyn MetaStore, dir: u64, page: usize) -> Vec<DirEntry> {
    let mut out: Vec<DirEntry> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.offset);
        let p = m.read_dir(dir, after, page).unwrap();
        assert!(p.len() <= page);
        if p.is_empty() {
            return out;
        }
        out.extend(p);
    }
}

#[test]
fn a_batch_round_trips() {
    let db = db();
    let m = &*db.meta;
    let mut link = file(3, 0);
    link.kind = Kind::Symlink;
    link.target = Some(b"../some/where\xff".to_vec());
    let mut hashed = file(2, 12345);
    hashed.sha256 = Some("ab".repeat(32));
    hashed.blocks = Some(24);
    hashed.rdev = 7;
    let rec = Record::new(
        Op::Create,
        Status::Pending,
        Some(hashed.file_id.clone()),
        serde_json::json!({"ino": 2}),
    )
    .by(1000);
    let done = Record::new(Op::Mkdir, Status::Committed, None, serde_json::json!({}));
    m.apply(&Batch {
        inodes: vec![(2, Some(hashed.clone())), (3, Some(link.clone()))],
        dentries: vec![
            ((ROOT_INO, b"h".to_vec()), entry(2, 10)),
            (
                (ROOT_INO, b"l".to_vec()),
                Some(Dentry {
                    ino: 3,
                    kind: Kind::Symlink,
                    id: 11,
                }),
            ),
        ],
        xattrs: vec![(
            2,
            Some(vec![
                (b"user.b".to_vec(), b"2".to_vec()),
                (b"user.a".to_vec(), b"\x00\xff".to_vec()),
            ]),
        )],
        journal: vec![rec.clone(), done.clone()],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(m.get_inode(2).unwrap(), Some(hashed.clone()));
    assert_eq!(m.get_inode(3).unwrap(), Some(link.clone()));
    assert_eq!(m.get_inode(4).unwrap(), None);
    assert_eq!(m.lookup(ROOT_INO, b"h").unwrap(), entry(2, 10));
    assert_eq!(m.lookup(ROOT_INO, b"nope").unwrap(), None);
    assert_eq!(
        m.xattrs(2).unwrap(),
        vec![
            (b"user.a".to_vec(), b"\x00\xff".to_vec()),
            (b"user.b".to_vec(), b"2".to_vec())
        ],
        "attributes by name"
    );
    assert_eq!(m.find_by_file_id(&hashed.file_id).unwrap(), Some(2));
    assert_eq!(m.inode_count().unwrap(), 3);
    let c = m.counters().unwrap();
    assert_eq!((c.max_ino, c.max_dentry_id), (3, 11));
    let pending = m.pending_journal().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, rec.id);
    assert_eq!(pending[0].op, Op::Create);
    assert_eq!(pending[0].user_id.as_deref(), Some("1000"));
    assert_eq!(pending[0].data, serde_json::json!({"ino": 2}));
    assert_eq!(pending[0].started_at, rec.started_at, "nanoseconds kept");

    // Settle the row; replace the attributes; remove the link.
    m.apply(&Batch {
        inodes: vec![(3, None)],
        dentries: vec![((ROOT_INO, b"l".to_vec()), None)],
        xattrs: vec![(2, Some(vec![(b"user.c".to_vec(), b"3".to_vec())]))],
        journal_done: vec![Update::new(rec.id, Status::Committed, "ok".to_string())],
        ..Batch::default()
    })
    .unwrap();
    assert!(m.pending_journal().unwrap().is_empty());
    assert_eq!(
        m.journal_counts().unwrap(),
        vec![("committed".to_string(), 2)]
    );
    assert_eq!(m.get_inode(3).unwrap(), None);
    assert_eq!(m.lookup(ROOT_INO, b"l").unwrap(), None);
    assert_eq!(
        m.xattrs(2).unwrap(),
        vec![(b"user.c".to_vec(), b"3".to_vec())]
    );
    // `None` and an empty list both clear the attributes.
    m.apply(&Batch {
        xattrs: vec![(2, Some(vec![]))],
        ..Batch::default()
    })
    .unwrap();
    assert!(m.xattrs(2).unwrap().is_empty());
    assert!(m.xattr_owners().unwrap().is_empty());
}

#[test]
fn renames_and_replacements_in_one_batch_do_not_collide() {
    let db = db();
    let m = &*db.meta;
    m.apply(&Batch {
        inodes: vec![(2, Some(file(2, 1))), (3, Some(file(3, 1)))],
        dentries: vec![
            ((ROOT_INO, b"a".to_vec()), entry(2, 1)),
            ((ROOT_INO, b"b".to_vec()), entry(3, 2)),
        ],
        ..Batch::default()
    })
    .unwrap();
    // Exchange a and b (each keeps its cookie), as the cache hands it over.
    m.apply(&Batch {
        dentries: vec![
            ((ROOT_INO, b"a".to_vec()), entry(3, 1)),
            ((ROOT_INO, b"b".to_vec()), entry(2, 2)),
        ],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(m.lookup(ROOT_INO, b"a").unwrap(), entry(3, 1));
    assert_eq!(m.lookup(ROOT_INO, b"b").unwrap(), entry(2, 2));
    // Rename a over b: b's cookie goes, a's moves to b.
    m.apply(&Batch {
        inodes: vec![(2, None)],
        dentries: vec![
            ((ROOT_INO, b"b".to_vec()), entry(3, 1)),
            ((ROOT_INO, b"a".to_vec()), None),
        ],
        ..Batch::default()
    })
    .unwrap();
    let l = list(m, ROOT_INO, 10);
    assert_eq!(l.len(), 1);
    assert_eq!((l[0].offset, l[0].ino, &l[0].name[..]), (1, 3, &b"b"[..]));
    assert_eq!(
        m.links_of(&[3]).unwrap(),
        vec![(3, ROOT_INO, b"b".to_vec())]
    );
}

#[test]
fn readdir_cookies_survive_inserts_and_deletes() {
    let db = db();
    let m = &*db.meta;
    let dir = 2;
    let mut d = Inode::new_dir(dir, 0o755, (0, 0), ROOT_INO, b"d", "test");
    d.file_id = "dir".into();
    let mut b = Batch {
        inodes: vec![(dir, Some(d))],
        ..Batch::default()
    };
    // Cookies are allocated store-wide: interleave another directory.
    for i in 0..60u64 {
        let parent = if i % 3 == 0 { ROOT_INO } else { dir };
        b.dentries.push((
            (parent, format!("n{i:03}").into_bytes()),
            entry(100 + i, 1 + i),
        ));
    }
    m.apply(&b).unwrap();
    let all = list(m, dir, 1000);
    assert_eq!(all.len(), 40);
    assert!(
        all.windows(2).all(|w| w[0].offset < w[1].offset),
        "cookie order"
    );

    // Page through while names come and go between pages.
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut after = 0;
    let mut next_id = 1000;
    let mut deleted_ahead: Vec<Vec<u8>> = Vec::new();
    let mut added: Vec<Vec<u8>> = Vec::new();
    let mut round = 0;
    loop {
        let page = m.read_dir(dir, after, 5).unwrap();
        if page.is_empty() {
            break;
        }
        for e in &page {
            assert!(e.offset > after);
            assert!(!seen.contains(&e.name), "{:?} listed twice", e.name);
            seen.push(e.name.clone());
        }
        after = page.last().unwrap().offset;
        round += 1;
        // Remove one name already listed and one still ahead; add a name
        // (it gets a new, higher cookie) and rename one still ahead.
        let mut b = Batch::default();
        let behind = page[0].name.clone();
        b.dentries.push(((dir, behind), None));
        let ahead = m.read_dir(dir, after, 2).unwrap();
        if let Some(ahead) = ahead.get(1).filter(|e| e.name.starts_with(b"n0")) {
            b.dentries.push(((dir, ahead.name.clone()), None));
            deleted_ahead.push(ahead.name.clone());
        }
        if round < 6 {
            next_id += 1;
            let name = format!("new{round}").into_bytes();
            b.dentries
                .push(((dir, name.clone()), entry(5000 + round, next_id)));
            added.push(name);
        }
        m.apply(&b).unwrap();
    }
    for n in &deleted_ahead {
        assert!(!seen.contains(n), "{n:?} was deleted before it was reached");
    }
    for n in &added {
        assert!(
            seen.contains(n),
            "{n:?} added ahead of the cursor is listed"
        );
    }
    let expected: usize = 40 - deleted_ahead.len() + added.len();
    assert_eq!(seen.len(), expected);
    // Everything still present, when listed afresh, has its old cookie.
    for e in list(m, dir, 3) {
        let old = all.iter().find(|o| o.name == e.name);
        if let Some(o) = old {
            assert_eq!(o.offset, e.offset, "{:?} kept its cookie", e.name);
        }
    }
}

#[test]
fn names_are_bytes() {
    let db = db();
    let m = &*db.meta;
    let names: Vec<&[u8]> = vec![
        b"\xff\xfe",
        b"caf\xc3\xa9",
        b"a b  c",
        b"\x01\x7f\x80",
        b"%",
        b"_",
        b"'; DROP TABLE t_dentries; --",
        b"x\\y",
        &[b'n'; 255],
    ];
    let mut b = Batch::default();
    for (i, n) in names.iter().enumerate() {
        let ino = 10 + i as u64;
        let mut f = file(ino, 0);
        f.original_name = n.to_vec();
        b.inodes.push((ino, Some(f)));
        b.dentries
            .push(((ROOT_INO, n.to_vec()), entry(ino, 1 + i as u64)));
        b.xattrs.push((ino, Some(vec![(n.to_vec(), n.to_vec())])));
    }
    m.apply(&b).unwrap();
    for (i, n) in names.iter().enumerate() {
        let ino = 10 + i as u64;
        assert_eq!(
            m.lookup(ROOT_INO, n).unwrap().map(|d| d.ino),
            Some(ino),
            "{n:?}"
        );
        assert_eq!(m.get_inode(ino).unwrap().unwrap().original_name, *n);
        assert_eq!(m.xattrs(ino).unwrap(), vec![(n.to_vec(), n.to_vec())]);
        let mut path = b"/".to_vec();
        path.extend_from_slice(n);
        assert_eq!(m.path_of(ino).unwrap(), Some(path));
    }
    let listed: Vec<Vec<u8>> = list(m, ROOT_INO, 4).into_iter().map(|e| e.name).collect();
    let want: Vec<Vec<u8>> = names.iter().map(|n| n.to_vec()).collect();
    assert_eq!(listed, want);
    // A prefix or a pattern never matches another name.
    assert_eq!(m.lookup(ROOT_INO, b"\xff").unwrap(), None);
    assert_eq!(m.lookup(ROOT_INO, b"a").unwrap(), None);
    assert_eq!(m.lookup(ROOT_INO, b"caf\xc3\xa9 ").unwrap(), None);
    let mut all = m.all_dentries().unwrap();
    all.sort_by_key(|(_, _, d)| d.id);
    assert_eq!(all.into_iter().map(|(_, n, _)| n).collect::<Vec<_>>(), want);
}

#[test]
fn a_batch_larger_than_the_parameter_limit_is_chunked() {
    let db = db();
    let m = &*db.meta;
    // 40,000 entries x 5 columns is far beyond SQLite's 32,766 parameters.
    const N: u64 = 40_000;
    let mut b = Batch::default();
    for i in 0..N {
        let ino = 10 + i;
        if i % 4 == 0 {
            b.inodes.push((ino, Some(file(ino, 1))));
        }
        b.dentries.push((
            (ROOT_INO, format!("e{i:05}").into_bytes()),
            entry(ino, 1 + i),
        ));
        if i % 10 == 0 {
            b.xattrs.push((
                ino,
                Some(vec![(b"user.n".to_vec(), i.to_string().into_bytes())]),
            ));
        }
        if i % 100 == 0 {
            b.journal.push(Record::new(
                Op::Create,
                Status::Pending,
                None,
                serde_json::json!({ "i": i }),
            ));
        }
    }
    m.apply(&b).unwrap();
    let l = list(m, ROOT_INO, 10_000);
    assert_eq!(l.len() as u64, N);
    assert!(l.iter().enumerate().all(|(i, e)| e.offset == 1 + i as u64));
    assert_eq!(m.inode_count().unwrap(), 1 + N / 4);
    assert_eq!(m.xattr_owners().unwrap().len() as u64, N / 10);
    assert_eq!(m.pending_journal().unwrap().len() as u64, N / 100);
    assert_eq!(
        m.lookup(ROOT_INO, b"e39999").unwrap(),
        entry(10 + 39_999, 40_000)
    );

    // And all of it goes in one batch too.
    let b = Batch {
        inodes: (0..N).step_by(4).map(|i| (10 + i, None)).collect(),
        dentries: (0..N)
            .map(|i| ((ROOT_INO, format!("e{i:05}").into_bytes()), None))
            .collect(),
        xattrs: (0..N).step_by(10).map(|i| (10 + i, None)).collect(),
        ..Batch::default()
    };
    m.apply(&b).unwrap();
    assert!(m.read_dir(ROOT_INO, 0, 10).unwrap().is_empty());
    assert_eq!(m.inode_count().unwrap(), 1);
    assert!(m.xattr_owners().unwrap().is_empty());
}

#[test]
fn usage_deltas_add_up_on_the_policy_row() {
    let db = db();
    let m = &*db.meta;
    let cfg = StoreConfig {
        mode: "edit".into(),
        mode_changed_at: "2026-01-01T00:00:00Z".into(),
        mode_changed_by: "test".into(),
        capacity: Some(1 << 30),
        used_bytes: 0,
        file_count: 0,
    };
    m.apply(&Batch {
        config: Some(cfg.clone()),
        usage_delta: (100, 2),
        ..Batch::default()
    })
    .unwrap();
    m.apply(&Batch {
        usage_delta: (-30, -1),
        ..Batch::default()
    })
    .unwrap();
    let got = m.config().unwrap().unwrap();
    assert_eq!((got.used_bytes, got.file_count), (70, 1));
    // A new policy row keeps the usage (it is kept by deltas only).
    m.apply(&Batch {
        config: Some(StoreConfig {
            mode: "ro".into(),
            capacity: None,
            ..cfg.clone()
        }),
        usage_delta: (5, 0),
        ..Batch::default()
    })
    .unwrap();
    let got = m.config().unwrap().unwrap();
    assert_eq!(got.mode, "ro");
    assert_eq!(got.capacity, None);
    assert_eq!((got.used_bytes, got.file_count), (75, 1));
}

#[test]
fn reservations_only_grow() {
    let db = db();
    let m = &*db.meta;
    let start = m.counters().unwrap().ino_reserved;
    m.apply(&Batch {
        ino_reserved: Some(start + 1000),
        ..Batch::default()
    })
    .unwrap();
    m.apply(&Batch {
        ino_reserved: Some(start + 10),
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(m.counters().unwrap().ino_reserved, start + 1000);
}

#[test]
fn a_failed_batch_changes_nothing() {
    let db = db();
    let m = &*db.meta;
    m.apply(&Batch {
        inodes: vec![(2, Some(file(2, 1)))],
        dentries: vec![((ROOT_INO, b"a".to_vec()), entry(2, 1))],
        ..Batch::default()
    })
    .unwrap();
    let before: BTreeMap<_, _> = m
        .all_dentries()
        .unwrap()
        .into_iter()
        .map(|(p, n, d)| ((p, n), d))
        .collect();
    // A cookie already taken by another name: the batch fails after its
    // first statements ran.
    let err = m.apply(&Batch {
        inodes: vec![(4, Some(file(4, 1)))],
        dentries: vec![((ROOT_INO, b"b".to_vec()), entry(4, 1))],
        xattrs: vec![(2, Some(vec![(b"user.x".to_vec(), b"1".to_vec())]))],
        ..Batch::default()
    });
    assert!(err.is_err());
    let after: BTreeMap<_, _> = m
        .all_dentries()
        .unwrap()
        .into_iter()
        .map(|(p, n, d)| ((p, n), d))
        .collect();
    assert_eq!(after, before);
    assert_eq!(m.get_inode(4).unwrap(), None);
    assert!(m.xattrs(2).unwrap().is_empty());
}
