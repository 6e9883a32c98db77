//! One `MetaStore` suite, run on every engine: SQLite (a temp file) and
//! PostgreSQL (a database per test on tests/common/pg.rs's server). Each
//! test is a function of the engine; `conformance!` makes a `sqlite::` and
//! a `postgres::` test of it, so no behaviour is checked on one engine only
//! by accident. Unit level: no FUSE, no daemon.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use artfs::meta::{self, migrate, Batch, CheckResult, Dentry, MetaStore, StoreConfig};
use artfs::types::error::Error;
use artfs::types::journal::{self, Op, Record, Retention, Status, Update};
use artfs::types::{DentryKey, Inode, Kind, Timestamp, ROOT_INO};
use common::pg::{PgDatabase, PgServer};
use sqlx::Connection;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

/// The runtime the stores block on (multi-threaded, as the daemon's).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// One test's database: a SQLite file or a PostgreSQL database.
struct Db {
    engine: Engine,
    url: String,
    _tmp: Option<tempfile::TempDir>,
    _pg: Option<PgDatabase>,
}

impl Db {
    fn new(engine: Engine, name: &str) -> Db {
        match engine {
            Engine::Sqlite => {
                let tmp = tempfile::Builder::new()
                    .prefix("artfs-conf-")
                    .tempdir()
                    .unwrap();
                Db {
                    engine,
                    url: format!("sqlite://{}", tmp.path().join("meta.db").display()),
                    _tmp: Some(tmp),
                    _pg: None,
                }
            }
            Engine::Postgres => {
                let pg = PgServer::shared().database(name);
                Db {
                    engine,
                    url: pg.url.clone(),
                    _tmp: None,
                    _pg: Some(pg),
                }
            }
        }
    }

    fn open(&self, prefix: &str) -> artfs::types::error::Result<Box<dyn MetaStore>> {
        meta::open(&self.url, prefix, rt().handle().clone())
    }

    /// The tables of `prefix`, opened (created) and initialised with a root.
    fn fresh(&self, prefix: &str) -> Box<dyn MetaStore> {
        let s = self.open(prefix).unwrap();
        assert_eq!(s.store_identity().unwrap(), None);
        s.init_store(
            &format!("store-{prefix}"),
            &format!("/backing/{prefix}"),
            &root(),
        )
        .unwrap();
        s
    }

    /// Run SQL on a connection of its own (behind the store's back).
    fn exec(&self, sql: &str) {
        let (url, stmt) = (self.url.clone(), sql.to_string());
        let engine = self.engine;
        rt().block_on(async move {
            let sql = stmt;
            match engine {
                Engine::Sqlite => {
                    let mut c = sqlx::SqliteConnection::connect(&url).await?;
                    sqlx::raw_sql(&sql).execute(&mut c).await?;
                    c.close().await
                }
                Engine::Postgres => {
                    let mut c = sqlx::PgConnection::connect(&url).await?;
                    sqlx::raw_sql(&sql).execute(&mut c).await?;
                    c.close().await
                }
            }
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::Engine::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::Engine::Postgres) })*
        }
    };
}

conformance!(
    a_writer_whose_lease_moved_commits_nothing,
    identity_counters_and_config,
    every_field_round_trips,
    names_are_bytes,
    cookies_page_in_order_across_changes,
    files_page_newest_first,
    moves_and_swaps_in_one_batch,
    xattr_lists_are_replaced_whole,
    search_grammar,
    search_follows_the_namespace,
    log_rows,
    batches_past_the_parameter_limit,
    prefixes_do_not_see_each_other,
    edited_migration_is_refused,
    prefix_length_is_bounded,
    check_results_and_lease_are_read,
    a_file_id_names_one_inode,
    clearing_the_namespace_clears_search,
    a_batch_round_trips,
    usage_deltas_add_up_on_the_policy_row,
    reservations_only_grow,
    a_failed_batch_changes_nothing,
    many_rows_settle_in_one_batch,
    usage_and_reservation_ride_with_changes,
);

/// The same root every call (fixed id and times), to compare with.
fn root() -> Inode {
    let mut r = Inode::new_dir(ROOT_INO, 0o755, (0, 0), ROOT_INO, b"/", "root");
    r.file_id = "0190aaaa-0000-7000-8000-000000000001".into();
    for t in [&mut r.atime, &mut r.mtime, &mut r.ctime, &mut r.crtime] {
        *t = Timestamp(1_700_000_000_000_000_001);
    }
    r
}

fn node(ino: u64, kind: Kind, parent: u64, name: &[u8]) -> Inode {
    let mut i = Inode::new_dir(ino, 0o644, (1000, 1000), parent, name, "tester");
    i.kind = kind;
    if kind != Kind::Dir {
        i.nlink = 1;
    }
    i
}

fn entry(parent: u64, name: &[u8], ino: u64, kind: Kind, id: u64) -> (DentryKey, Option<Dentry>) {
    ((parent, name.to_vec()), Some(Dentry { ino, kind, id }))
}

fn unlink(parent: u64, name: &[u8]) -> (DentryKey, Option<Dentry>) {
    ((parent, name.to_vec()), None)
}

/// A file `name` in `parent`: its inode and entry.
fn file(b: &mut Batch, ino: u64, parent: u64, name: &[u8], id: u64) {
    b.inodes
        .push((ino, Some(node(ino, Kind::File, parent, name))));
    b.dentries.push(entry(parent, name, ino, Kind::File, id));
}

fn names(s: &dyn MetaStore, dir: u64) -> Vec<Vec<u8>> {
    s.read_dir(dir, 0, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn hits(s: &dyn MetaStore, q: &str) -> BTreeSet<u64> {
    s.search(q, 1000, 0)
        .unwrap_or_else(|e| panic!("{q:?}: {e}"))
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

fn set(v: &[u64]) -> BTreeSet<u64> {
    v.iter().copied().collect()
}

/// Fencing (meta/lease.rs): once another writer took the lease, a batch
/// of the old holder commits nothing and says why (EROFS). SQLite's guard
/// is the flock in BACKING: no lease there to lose.
fn a_writer_whose_lease_moved_commits_nothing(e: Engine) {
    let db = Db::new(e, "lease");
    let s = db.fresh("l");
    s.claim_writer(&meta::lease::Holder::me()).unwrap();
    let mut b = Batch::default();
    file(&mut b, 10, ROOT_INO, b"kept", 1);
    s.apply(&b).unwrap();
    s.heartbeat().unwrap();
    if e == Engine::Sqlite {
        assert!(!s.leased());
        return;
    }
    assert!(s.leased());
    // Another writer takes over (what a claim of a lapsed lease does).
    db.exec("UPDATE l_lease SET epoch = epoch + 1, holder = 'other', pid = 1");
    let mut b = Batch::default();
    file(&mut b, 11, ROOT_INO, b"late", 2);
    let err = s.apply(&b).unwrap_err();
    assert!(matches!(err.bare(), Error::Fenced(_)), "{err}");
    assert_eq!(err.errno(), libc::EROFS);
    let err = s.heartbeat().unwrap_err();
    assert!(err.to_string().contains("pid 1 on host"), "{err}");
    assert_eq!(names(s.as_ref(), ROOT_INO), [b"kept".to_vec()]);
}

fn identity_counters_and_config(e: Engine) {
    let db = Db::new(e, "identity");
    let s = db.fresh("t");
    assert_eq!(
        s.store_identity().unwrap(),
        Some(("store-t".into(), "/backing/t".into()))
    );
    let c = s.counters().unwrap();
    assert_eq!((c.max_ino, c.ino_reserved, c.max_dentry_id), (1, 2, 0));
    assert_eq!(s.inode_count().unwrap(), 1);
    assert_eq!(s.get_inode(ROOT_INO).unwrap(), Some(root()));

    let mut b = Batch::default();
    file(&mut b, 7, ROOT_INO, b"seven", 12);
    file(&mut b, 3, ROOT_INO, b"three", 4);
    b.ino_reserved = Some(100);
    s.apply(&b).unwrap();
    // The reservation only grows.
    s.apply(&Batch {
        ino_reserved: Some(50),
        ..Batch::default()
    })
    .unwrap();
    let c = s.counters().unwrap();
    assert_eq!((c.max_ino, c.ino_reserved, c.max_dentry_id), (7, 100, 12));
    assert_eq!(s.inode_count().unwrap(), 3);

    // A new store has no policy row until the first one is written; usage
    // is kept by deltas, mode and capacity by the row.
    assert_eq!(s.config().unwrap(), None);
    let cfg = StoreConfig {
        mode: "rw".into(),
        mode_changed_at: "2026-01-02T03:04:05.123456789Z".into(),
        mode_changed_by: "alice".into(),
        capacity: Some(u64::MAX >> 1),
        used_bytes: 0,
        file_count: 0,
    };
    s.apply(&Batch {
        config: Some(cfg.clone()),
        usage_delta: (4096, 2),
        ..Batch::default()
    })
    .unwrap();
    s.apply(&Batch {
        usage_delta: (-1000, -1),
        ..Batch::default()
    })
    .unwrap();
    let ro = StoreConfig {
        mode: "ro".into(),
        capacity: None,
        ..cfg.clone()
    };
    s.apply(&Batch {
        config: Some(ro.clone()),
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(
        s.config().unwrap(),
        Some(StoreConfig {
            used_bytes: 3096,
            file_count: 1,
            ..ro
        })
    );
    // A mode outside the state machine's is refused by the table.
    let bad = StoreConfig {
        mode: "bogus".into(),
        ..cfg
    };
    assert!(s
        .apply(&Batch {
            config: Some(bad),
            ..Batch::default()
        })
        .is_err());
    // Rebuild: the identity is replaced, the namespace cleared.
    s.clear_namespace().unwrap();
    s.init_identity("store-u", "/elsewhere", 77).unwrap();
    assert_eq!(
        s.store_identity().unwrap(),
        Some(("store-u".into(), "/elsewhere".into()))
    );
    assert_eq!(s.inode_count().unwrap(), 0);
    assert_eq!(s.all_dentries().unwrap(), vec![]);
    let c = s.counters().unwrap();
    assert_eq!((c.max_ino, c.ino_reserved, c.max_dentry_id), (0, 77, 0));
    s.sync().unwrap();
    s.close();
}

fn every_field_round_trips(e: Engine) {
    let db = Db::new(e, "fields");
    let s = db.fresh("t");
    // u64 and u32 at their extremes (BIGINT bit patterns), times before
    // 1970 and with nanoseconds, bytes that are not UTF-8.
    let odd = Inode {
        ino: 5,
        file_id: "0190aaaa-0000-7000-8000-000000000005".into(),
        kind: Kind::Symlink,
        perm: 0o7777,
        uid: u32::MAX,
        gid: u32::MAX - 1,
        nlink: u32::MAX,
        size: u64::MAX,
        atime: Timestamp(-1_234_567_890_123_456_789),
        mtime: Timestamp(i64::MAX),
        ctime: Timestamp(i64::MIN + 1),
        crtime: Timestamp(1_700_000_000_123_456_789),
        rdev: u32::MAX,
        parent: ROOT_INO,
        target: Some(b"\xff\xfe/t\xc3(arget".to_vec()),
        created_by: "h\u{e9}l\u{e8}ne".into(),
        original_name: b"n\xe9e".to_vec(),
        sha256: Some("ab".repeat(32)),
        blocks: Some(u64::MAX - 1),
        flags: u32::MAX,
        version: Some("00000000000000ff.1700000000123456789".into()),
    };
    let mut dev = node(6, Kind::BlockDev, ROOT_INO, b"dev");
    dev.rdev = 0x0801;
    dev.blocks = Some(0);
    let mut b = Batch::default();
    b.inodes
        .push((5, Some(node(5, Kind::File, ROOT_INO, b"first"))));
    // The last state of a key in a batch wins.
    b.inodes.push((5, Some(odd.clone())));
    b.inodes.push((6, Some(dev.clone())));
    b.dentries
        .push(entry(ROOT_INO, b"odd", 5, Kind::Symlink, 1));
    b.dentries
        .push(entry(ROOT_INO, b"dev", 6, Kind::BlockDev, 2));
    s.apply(&b).unwrap();
    assert_eq!(s.get_inode(5).unwrap(), Some(odd.clone()));
    assert_eq!(s.get_inode(6).unwrap(), Some(dev.clone()));
    assert_eq!(s.get_inode(99).unwrap(), None);
    assert_eq!(s.find_by_file_id(&odd.file_id).unwrap(), Some(5));
    assert_eq!(s.find_by_file_id("nope").unwrap(), None);
    let mut got = s.inodes_of(&[6, 5, 42]).unwrap();
    got.sort_by_key(|i| i.ino);
    assert_eq!(got, vec![odd.clone(), dev.clone()]);
    assert_eq!(s.all_inodes().unwrap(), vec![root(), odd.clone(), dev]);
    assert_eq!(
        s.lookup(ROOT_INO, b"odd").unwrap(),
        Some(Dentry {
            ino: 5,
            kind: Kind::Symlink,
            id: 1
        })
    );
    assert_eq!(s.path_of(5).unwrap(), Some(b"/odd".to_vec()));
    assert_eq!(s.path_of(ROOT_INO).unwrap(), Some(b"/".to_vec()));

    // Hashing backlog and orphans.
    let mut f = node(8, Kind::File, ROOT_INO, b"f");
    let mut orphan = node(9, Kind::File, ROOT_INO, b"gone");
    orphan.nlink = 0;
    let mut b = Batch::default();
    b.inodes.push((8, Some(f.clone())));
    b.inodes.push((9, Some(orphan)));
    b.dentries.push(entry(ROOT_INO, b"f", 8, Kind::File, 3));
    s.apply(&b).unwrap();
    assert_eq!(s.unhashed_files().unwrap(), vec![8]);
    assert_eq!(s.unhashed_count().unwrap(), 1);
    assert_eq!(s.orphans().unwrap(), vec![9]);
    f.sha256 = Some("cd".repeat(32));
    s.apply(&Batch {
        inodes: vec![(8, Some(f)), (9, None)],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(s.unhashed_files().unwrap(), Vec::<u64>::new());
    assert_eq!(s.unhashed_count().unwrap(), 0);
    assert_eq!(s.orphans().unwrap(), Vec::<u64>::new());
    assert_eq!(s.get_inode(9).unwrap(), None);
}

fn names_are_bytes(e: Engine) {
    let db = Db::new(e, "bytes");
    let s = db.fresh("t");
    // NUL-free, not UTF-8; case and normalisation variants stay distinct.
    let odd: &[&[u8]] = &[
        b"\xff\xfe",
        b"caf\xe9",
        b"caf\xc3\xa9",
        b"cafe\xcc\x81",
        b"CAF\xc3\x89",
        b"a\x01b\x7f",
        b"\x80",
        b" lead and trail ",
        b"'; DROP TABLE t_inodes; --",
    ];
    let mut b = Batch::default();
    for (n, name) in odd.iter().enumerate() {
        file(&mut b, 10 + n as u64, ROOT_INO, name, 1 + n as u64);
    }
    let attrs = vec![
        (
            b"user.\xff".to_vec(),
            b"\x00\x01\xff value with NUL \x00".to_vec(),
        ),
        (b"user.empty".to_vec(), Vec::new()),
    ];
    b.xattrs.push((10, Some(attrs.clone())));
    s.apply(&b).unwrap();
    for (n, name) in odd.iter().enumerate() {
        let d = s.lookup(ROOT_INO, name).unwrap();
        assert_eq!(d.map(|d| d.ino), Some(10 + n as u64), "{name:?}");
        assert_eq!(
            s.get_inode(10 + n as u64).unwrap().unwrap().original_name,
            name.to_vec()
        );
    }
    assert_eq!(s.lookup(ROOT_INO, b"caf").unwrap(), None);
    assert_eq!(s.lookup(ROOT_INO, b"\xff").unwrap(), None);
    let want: Vec<Vec<u8>> = odd.iter().map(|n| n.to_vec()).collect();
    assert_eq!(names(s.as_ref(), ROOT_INO), want);
    // Attribute lists come back in byte order of their names.
    let mut sorted = attrs.clone();
    sorted.sort();
    assert_eq!(s.xattrs(10).unwrap(), sorted);
    assert_eq!(
        s.xattr_values(b"user.\xff").unwrap(),
        vec![(10, attrs[0].1.clone())]
    );
    let links = s.links_of(&[11, 12]).unwrap();
    assert_eq!(
        links,
        vec![
            (11, ROOT_INO, odd[1].to_vec()),
            (12, ROOT_INO, odd[2].to_vec())
        ]
    );
    // The text columns of a name still find it (lossy, as both index it).
    assert_eq!(hits(s.as_ref(), "lead"), set(&[17]));
}

fn cookies_page_in_order_across_changes(e: Engine) {
    let db = Db::new(e, "cookies");
    let s = db.fresh("t");
    let mut b = Batch::default();
    b.inodes.push((2, Some(node(2, Kind::Dir, ROOT_INO, b"d"))));
    b.dentries.push(entry(ROOT_INO, b"d", 2, Kind::Dir, 1));
    // Cookies are the daemon's, increasing but not dense; names in
    // reverse so cookie order is not name order.
    for n in 0..50u64 {
        file(
            &mut b,
            100 + n,
            2,
            format!("f{:02}", 49 - n).as_bytes(),
            10 + 3 * n,
        );
    }
    s.apply(&b).unwrap();
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = s.read_dir(2, after, 7).unwrap();
        assert!(page.len() <= 7);
        let Some(last) = page.last() else { break };
        after = last.offset;
        seen.extend(page);
    }
    assert_eq!(seen.len(), 50);
    assert!(seen.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_eq!(seen[0].name, b"f49");
    assert_eq!(seen[0].offset, 10);
    assert_eq!(seen[0].ino, 100);
    assert_eq!(seen[0].kind, Kind::File);
    // The entry a reader stopped at goes away, another is added: the page
    // after its cookie continues where it was, then finds the new one.
    let stop = seen[20].offset;
    let mut b = Batch::default();
    b.dentries.push(unlink(2, &seen[20].name));
    b.dentries.push(unlink(2, &seen[21].name));
    b.inodes.push((seen[20].ino, None));
    b.inodes.push((seen[21].ino, None));
    file(&mut b, 500, 2, b"new", 1000);
    s.apply(&b).unwrap();
    let rest = s.read_dir(2, stop, 1000).unwrap();
    assert_eq!(rest[0].offset, seen[22].offset);
    assert_eq!(rest.len(), 50 - 22 + 1);
    assert_eq!(rest.last().unwrap().name, b"new");
    assert_eq!(s.read_dir(2, 1000, 10).unwrap(), vec![]);
    assert_eq!(s.read_dir(999, 0, 10).unwrap(), vec![]);
    assert_eq!(s.read_dir(2, 0, 0).unwrap(), vec![]);
    assert_eq!(s.counters().unwrap().max_dentry_id, 1000);
}

fn files_page_newest_first(e: Engine) {
    let db = Db::new(e, "listing");
    let s = db.fresh("t");
    let mut b = Batch::default();
    b.inodes.push((2, Some(node(2, Kind::Dir, ROOT_INO, b"d"))));
    b.dentries.push(entry(ROOT_INO, b"d", 2, Kind::Dir, 1));
    // Twelve files; times repeat so the file id decides among equals,
    // and the ids are given out of order so neither ino nor insertion
    // order is the answer.
    for n in 0..12u64 {
        file(&mut b, 100 + n, 2, format!("f{n}").as_bytes(), 10 + n);
    }
    for (ino, i) in b.inodes.iter_mut() {
        let Some(i) = i.as_mut().filter(|i| i.kind == Kind::File) else {
            continue;
        };
        let n = *ino - 100;
        i.crtime = Timestamp(1_000 + (n as i64 % 4));
        i.file_id = format!("0190aaaa-0000-4000-8000-{:012x}", (n * 7) % 12);
    }
    // Not listed: a directory (above), a symlink, a file without a name.
    let mut link = node(200, Kind::Symlink, 2, b"l");
    link.target = Some(b"f1".to_vec());
    b.inodes.push((200, Some(link)));
    b.dentries.push(entry(2, b"l", 200, Kind::Symlink, 50));
    let mut orphan = node(201, Kind::File, 2, b"gone");
    orphan.nlink = 0;
    b.inodes.push((201, Some(orphan)));
    s.apply(&b).unwrap();

    let mut want: Vec<(i64, String, u64)> = (0..12u64)
        .map(|n| {
            let id = format!("0190aaaa-0000-4000-8000-{:012x}", (n * 7) % 12);
            (1_000 + (n as i64 % 4), id, 100 + n)
        })
        .collect();
    want.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    let want: Vec<u64> = want.into_iter().map(|w| w.2).collect();

    let mut seen: Vec<Inode> = Vec::new();
    loop {
        let after = seen.last().map(|i| (i.crtime, i.file_id.as_str()));
        let page = s.files_newest_first(after, 5).unwrap();
        assert!(page.len() <= 5);
        let done = page.len() < 5;
        seen.extend(page);
        if done {
            break;
        }
    }
    assert_eq!(seen.iter().map(|i| i.ino).collect::<Vec<_>>(), want);
    assert!(seen.iter().all(|i| i.kind == Kind::File && i.nlink == 1));
    assert_eq!(s.files_newest_first(None, 0).unwrap(), vec![]);
    // A file removed between batches is simply not met again.
    let mut b = Batch::default();
    b.dentries.push(unlink(2, b"f0"));
    b.inodes.push((100, None));
    s.apply(&b).unwrap();
    let all = s.files_newest_first(None, 100).unwrap();
    assert_eq!(all.len(), 11);
    assert!(all.iter().all(|i| i.ino != 100));
}

fn moves_and_swaps_in_one_batch(e: Engine) {
    let db = Db::new(e, "moves");
    let s = db.fresh("t");
    let mut b = Batch::default();
    b.inodes.push((2, Some(node(2, Kind::Dir, ROOT_INO, b"d"))));
    b.dentries.push(entry(ROOT_INO, b"d", 2, Kind::Dir, 1));
    file(&mut b, 3, ROOT_INO, b"a", 2);
    file(&mut b, 4, ROOT_INO, b"b", 3);
    file(&mut b, 5, ROOT_INO, b"c", 4);
    s.apply(&b).unwrap();
    // Swap a and b (RENAME_EXCHANGE), move c into d keeping its cookie,
    // and a hard link of a: each key's final state only.
    let mut b = Batch::default();
    b.dentries.push(entry(ROOT_INO, b"a", 4, Kind::File, 3));
    b.dentries.push(entry(ROOT_INO, b"b", 3, Kind::File, 2));
    b.dentries.push(unlink(ROOT_INO, b"c"));
    b.dentries.push(entry(2, b"c2", 5, Kind::File, 4));
    b.dentries.push(entry(2, b"a-link", 3, Kind::File, 5));
    let mut a = node(3, Kind::File, ROOT_INO, b"a");
    a.nlink = 2;
    b.inodes.push((3, Some(a)));
    b.inodes
        .push((4, Some(node(4, Kind::File, ROOT_INO, b"b"))));
    b.inodes.push((5, Some(node(5, Kind::File, 2, b"c"))));
    s.apply(&b).unwrap();
    assert_eq!(s.lookup(ROOT_INO, b"a").unwrap().unwrap().ino, 4);
    assert_eq!(s.lookup(ROOT_INO, b"b").unwrap().unwrap().ino, 3);
    assert_eq!(s.lookup(ROOT_INO, b"c").unwrap(), None);
    assert_eq!(
        s.lookup(2, b"c2").unwrap(),
        Some(Dentry {
            ino: 5,
            kind: Kind::File,
            id: 4
        })
    );
    assert_eq!(
        s.links_of(&[3]).unwrap(),
        vec![(3, ROOT_INO, b"b".to_vec()), (3, 2, b"a-link".to_vec())]
    );
    assert_eq!(s.path_of(5).unwrap(), Some(b"/d/c2".to_vec()));
    // Replace an existing name with another inode under a new cookie.
    let mut b = Batch::default();
    b.dentries.push(entry(2, b"c2", 4, Kind::File, 9));
    b.inodes.push((5, None));
    s.apply(&b).unwrap();
    assert_eq!(
        s.lookup(2, b"c2").unwrap(),
        Some(Dentry {
            ino: 4,
            kind: Kind::File,
            id: 9
        })
    );
    let all = s.all_dentries().unwrap();
    assert_eq!(
        all.iter().map(|(_, _, d)| d.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 5, 9]
    );
    // An entry whose cookie another key holds is refused as a whole.
    let mut b = Batch::default();
    b.dentries.push(entry(ROOT_INO, b"clash", 4, Kind::File, 1));
    b.inodes
        .push((77, Some(node(77, Kind::File, ROOT_INO, b"x"))));
    assert!(s.apply(&b).is_err());
    assert_eq!(s.get_inode(77).unwrap(), None);
}

fn xattr_lists_are_replaced_whole(e: Engine) {
    let db = Db::new(e, "xattrs");
    let s = db.fresh("t");
    let mut b = Batch::default();
    file(&mut b, 2, ROOT_INO, b"f", 1);
    file(&mut b, 3, ROOT_INO, b"g", 2);
    let list = |pairs: &[(&str, &str)]| -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    };
    b.xattrs.push((
        2,
        Some(list(&[("user.b", "2"), ("user.a", "1"), ("user.c", "3")])),
    ));
    b.xattrs.push((3, Some(list(&[("user.a", "g")]))));
    s.apply(&b).unwrap();
    assert_eq!(
        s.xattrs(2).unwrap(),
        list(&[("user.a", "1"), ("user.b", "2"), ("user.c", "3")])
    );
    assert_eq!(s.xattr_owners().unwrap(), vec![2, 3]);
    let mut both = s.xattr_values(b"user.a").unwrap();
    both.sort();
    assert_eq!(both, vec![(2, b"1".to_vec()), (3, b"g".to_vec())]);
    s.apply(&Batch {
        xattrs: vec![(2, Some(list(&[("user.b", "two")])))],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(s.xattrs(2).unwrap(), list(&[("user.b", "two")]));
    assert_eq!(
        s.xattrs_of(&[3, 2]).unwrap(),
        vec![
            (2, b"user.b".to_vec(), b"two".to_vec()),
            (3, b"user.a".to_vec(), b"g".to_vec())
        ]
    );
    s.apply(&Batch {
        xattrs: vec![(2, Some(vec![])), (3, None)],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(s.xattrs(2).unwrap(), vec![]);
    assert_eq!(s.xattrs(3).unwrap(), vec![]);
    assert_eq!(s.xattr_owners().unwrap(), Vec::<u64>::new());
}

/// Documents: (name, description, version, custom values).
const DOCS: &[(&str, &str, &str, &[&str])] = &[
    ("README.gz", "", "", &[]),
    ("readme-old.txt", "", "", &[]),
    ("artfs-5.2.15.tar", "", "", &[]),
    ("day-one.md", "First day of the mission", "", &[]),
    (
        "notes",
        "\u{dc}ber die Mondlandung",
        "draft-7",
        &["apollo", "moon"],
    ),
    (
        "report.pdf",
        "Quarterly budget, Apollo programme",
        "1.0",
        &[],
    ),
];

fn search_store(e: Engine, name: &str) -> (Db, Box<dyn MetaStore>) {
    let db = Db::new(e, name);
    let s = db.fresh("t");
    let mut b = Batch::default();
    for (n, (name, desc, version, custom)) in DOCS.iter().enumerate() {
        let ino = 10 + n as u64;
        file(&mut b, ino, ROOT_INO, name.as_bytes(), ino);
        let mut attrs = Vec::new();
        if !desc.is_empty() {
            attrs.push((
                b"user.artstore.description".to_vec(),
                desc.as_bytes().to_vec(),
            ));
        }
        if !version.is_empty() {
            attrs.push((
                b"user.artstore.version".to_vec(),
                version.as_bytes().to_vec(),
            ));
        }
        for (k, v) in custom.iter().enumerate() {
            attrs.push((format!("user.c{k}").into_bytes(), v.as_bytes().to_vec()));
        }
        // Not searchable: artfs's own other attributes, other namespaces.
        attrs.push((b"user.artstore.other".to_vec(), b"hidden".to_vec()));
        attrs.push((b"trusted.x".to_vec(), b"secret".to_vec()));
        b.xattrs.push((ino, Some(attrs)));
    }
    s.apply(&b).unwrap();
    (db, s)
}

fn search_grammar(e: Engine) {
    let (_db, s) = search_store(e, "search");
    // (query, documents by index into DOCS)
    let cases: &[(&str, &[u64])] = &[
        ("README.gz", &[0]),
        ("readme", &[0, 1]),
        ("READ*", &[0, 1]),
        ("\"readme gz\"", &[0]),
        ("\"gz readme\"", &[]),
        ("5.2.15", &[2]),
        ("5.2.1*", &[2]),
        ("day-one", &[3]),
        ("readme NOT gz", &[1]),
        ("(gz OR md OR tar) NOT readme", &[2, 3]),
        ("gz OR md", &[0, 3]),
        ("readme AND old", &[1]),
        ("version:draft*", &[4]),
        ("names:draft", &[]),
        ("description:\"die mondlandung\"", &[4]),
        ("custom:apollo", &[4]),
        ("apollo", &[4, 5]),
        ("apollo NOT (budget OR moon)", &[]),
        ("\u{fc}ber", &[4]),
        ("version:1.0", &[5]),
        ("hidden", &[]),
        ("secret", &[]),
        ("\"pdf quarterly\"", &[]),
        ("readme'; DROP TABLE t_search; --", &[]),
        ("NEAR(readme gz)", &[]),
    ];
    for (q, want) in cases {
        let want: BTreeSet<u64> = want.iter().map(|i| 10 + i).collect();
        assert_eq!(hits(s.as_ref(), q), want, "query {q:?} on {e:?}");
    }
    // Malformed: EINVAL, with why.
    for q in [
        "",
        "\"unbalanced",
        "(readme",
        "readme)",
        "()",
        "readme OR",
        "NOT readme",
        "version:",
        "---",
    ] {
        let err = s.search(q, 10, 0).unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL, "query {q:?} on {e:?}: {err}");
        assert!(err.to_string().contains("malformed search query"), "{err}");
    }
    // Best first (lower rank), and pages by limit and offset.
    let all = s.search("apollo OR readme", 10, 0).unwrap();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].1 <= w[1].1), "{all:?}");
    let mut paged = s.search("apollo OR readme", 3, 0).unwrap();
    paged.extend(s.search("apollo OR readme", 3, 3).unwrap());
    assert_eq!(
        paged.iter().map(|h| h.0).collect::<Vec<_>>(),
        all.iter().map(|h| h.0).collect::<Vec<_>>()
    );
    assert_eq!(s.search("apollo OR readme", 10, 4).unwrap(), vec![]);
}

fn search_follows_the_namespace(e: Engine) {
    let (_db, s) = search_store(e, "search follows");
    // A rename, a second link, an attribute change and an unlink, each
    // seen by the next search.
    let mut b = Batch::default();
    b.dentries.push(unlink(ROOT_INO, b"README.gz"));
    b.dentries
        .push(entry(ROOT_INO, b"manual.gz", 10, Kind::File, 10));
    b.inodes
        .push((10, Some(node(10, Kind::File, ROOT_INO, b"README.gz"))));
    s.apply(&b).unwrap();
    assert_eq!(hits(s.as_ref(), "readme"), set(&[11]));
    assert_eq!(hits(s.as_ref(), "manual"), set(&[10]));
    let mut b = Batch::default();
    b.dentries
        .push(entry(ROOT_INO, b"zebra", 11, Kind::File, 100));
    b.inodes
        .push((11, Some(node(11, Kind::File, ROOT_INO, b"x"))));
    s.apply(&b).unwrap();
    assert_eq!(hits(s.as_ref(), "zebra"), set(&[11]));
    assert_eq!(hits(s.as_ref(), "readme"), set(&[11]));
    s.apply(&Batch {
        xattrs: vec![(
            12,
            Some(vec![(
                b"user.artstore.description".to_vec(),
                b"zebra crossing".to_vec(),
            )]),
        )],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(hits(s.as_ref(), "zebra"), set(&[11, 12]));
    assert_eq!(hits(s.as_ref(), "description:zebra"), set(&[12]));
    let mut b = Batch::default();
    b.dentries.push(unlink(ROOT_INO, b"zebra"));
    b.dentries.push(unlink(ROOT_INO, b"readme-old.txt"));
    b.inodes.push((11, None));
    s.apply(&b).unwrap();
    assert_eq!(hits(s.as_ref(), "zebra"), set(&[12]));
    assert_eq!(hits(s.as_ref(), "readme"), set(&[]));
}

fn record(op: Op, status: Status, at: i64) -> Record {
    let mut r = Record::new(
        op,
        status,
        Some(format!("file-{at}")),
        serde_json::json!({ "name": journal::name_json(b"n\xff"), "n": at }),
    )
    .by(1000);
    r.started_at = Timestamp(at);
    r
}

fn log_rows(e: Engine) {
    let db = Db::new(e, "log");
    let s = db.fresh("t");
    let now = Timestamp::now().0;
    let day = 86_400 * 1_000_000_000i64;
    let p1 = record(Op::Write, Status::Pending, now - 5_000_000_123);
    let mut p2 = record(Op::Reserve, Status::Pending, now - 4_000_000_000);
    p2.file_id = None;
    p2.user_id = None;
    let mut old = record(Op::Mkdir, Status::Committed, now - 30 * day);
    old.completed_at = Some(Timestamp(now - 30 * day + 1_500_000));
    old.outcome = Some("made".into());
    let mut failed = record(Op::Unlink, Status::Failed, now - 100 * day);
    failed.completed_at = Some(Timestamp(now - 100 * day));
    failed.error = Some("ENOSPC: no space \u{2014} really".into());
    let mut recent = record(Op::Rename, Status::Committed, now - 1000);
    recent.completed_at = Some(Timestamp(now));
    s.apply(&Batch {
        journal: vec![old, p1.clone(), failed, p2.clone(), recent.clone()],
        ..Batch::default()
    })
    .unwrap();
    s.sync().unwrap();
    let pending = s.pending_journal().unwrap();
    assert_eq!(pending.len(), 2);
    for (got, want) in pending.iter().zip([&p1, &p2]) {
        assert_eq!(got.id, want.id);
        assert_eq!(got.op, want.op);
        assert_eq!(got.status, want.status);
        assert_eq!(got.file_id, want.file_id);
        assert_eq!(got.data, want.data);
        assert_eq!(got.error, want.error);
        assert_eq!(got.started_at, want.started_at);
        assert_eq!(got.completed_at, None);
        assert_eq!(got.user_id, want.user_id);
        assert_eq!(got.outcome, want.outcome);
    }
    assert_eq!(
        s.journal_counts().unwrap(),
        vec![
            ("committed".to_string(), 2),
            ("failed".to_string(), 1),
            ("pending".to_string(), 2)
        ]
    );
    // Settle the intents: one forward, one back (as recovery does).
    let mut back = Update::new(p2.id, Status::RolledBack, "nothing to undo".to_string());
    back.error = Some("crashed".into());
    s.apply(&Batch {
        journal_done: vec![Update::new(p1.id, Status::Committed, None::<String>), back],
        ..Batch::default()
    })
    .unwrap();
    assert!(s.pending_journal().unwrap().is_empty());
    assert_eq!(
        s.journal_counts().unwrap(),
        vec![
            ("committed".to_string(), 3),
            ("failed".to_string(), 1),
            ("rolled_back".to_string(), 1)
        ]
    );
    // Committed rows go by age (old) and by count (keep 2 of the rest),
    // failed ones by their own, longer age.
    let keep = Retention {
        committed_max_rows: 1,
        committed_max_age: Duration::from_secs(7 * 86_400),
        failed_max_age: Duration::from_secs(90 * 86_400),
    };
    // At most `limit` rows per call, oldest first.
    assert_eq!(s.prune_journal(&keep, 2).unwrap(), 2);
    assert_eq!(s.prune_journal(&keep, 2).unwrap(), 1);
    assert_eq!(
        s.journal_counts().unwrap(),
        vec![("committed".to_string(), 1), ("rolled_back".to_string(), 1)]
    );
    assert_eq!(s.prune_journal(&keep, u64::MAX).unwrap(), 0);
    // A transaction id is unique.
    assert!(s
        .apply(&Batch {
            journal: vec![recent],
            ..Batch::default()
        })
        .is_err());
}

fn batches_past_the_parameter_limit(e: Engine) {
    let db = Db::new(e, "chunking");
    let s = db.fresh("t");
    // PostgreSQL takes at most 65,535 bind parameters per statement: every
    // part of this batch needs more than that in one statement.
    const N: u64 = 35_000;
    let mut b = Batch::default();
    for n in 0..N {
        let ino = 100 + n;
        file(&mut b, ino, ROOT_INO, format!("bulk {n}").as_bytes(), ino);
        b.xattrs.push((
            ino,
            Some(vec![(b"user.k".to_vec(), n.to_le_bytes().to_vec())]),
        ));
    }
    b.journal = (0..6_000)
        .map(|n| record(Op::Create, Status::Committed, n))
        .collect();
    b.ino_reserved = Some(100 + N);
    s.apply(&b).unwrap();
    assert_eq!(s.inode_count().unwrap(), N + 1);
    assert_eq!(
        s.read_dir(ROOT_INO, 0, usize::MAX).unwrap().len(),
        N as usize
    );
    assert_eq!(s.xattr_owners().unwrap().len(), N as usize);
    assert_eq!(
        s.journal_counts().unwrap(),
        vec![("committed".into(), 6_000)]
    );
    assert_eq!(s.search("bulk", 100_000, 0).unwrap().len(), N as usize);
    assert_eq!(
        s.inodes_of(&(0..N + 200).collect::<Vec<_>>())
            .unwrap()
            .len(),
        N as usize + 1
    );
    // And all of it away again in one batch.
    let mut b = Batch::default();
    for n in 0..N {
        b.dentries
            .push(unlink(ROOT_INO, format!("bulk {n}").as_bytes()));
        b.inodes.push((100 + n, None));
        b.xattrs.push((100 + n, None));
    }
    s.apply(&b).unwrap();
    assert_eq!(s.inode_count().unwrap(), 1);
    assert_eq!(names(s.as_ref(), ROOT_INO), Vec::<Vec<u8>>::new());
    assert_eq!(s.xattr_owners().unwrap(), Vec::<u64>::new());
    assert!(s.search("bulk", 10, 0).unwrap().is_empty());
}

fn prefixes_do_not_see_each_other(e: Engine) {
    let db = Db::new(e, "tenancy");
    let a = db.fresh("a");
    let b = db.fresh("b");
    // Both written at once, the same inode numbers and cookies in each.
    std::thread::scope(|t| {
        for (s, word) in [(&a, "alpha"), (&b, "beta")] {
            t.spawn(move || {
                for n in 0..20u64 {
                    let mut batch = Batch::default();
                    file(
                        &mut batch,
                        10 + n,
                        ROOT_INO,
                        format!("{word} {n}").as_bytes(),
                        1 + n,
                    );
                    batch
                        .journal
                        .push(record(Op::Create, Status::Pending, n as i64));
                    s.apply(&batch).unwrap();
                }
            });
        }
    });
    for (s, mine, theirs) in [(&a, "alpha", "beta"), (&b, "beta", "alpha")] {
        assert_eq!(s.inode_count().unwrap(), 21);
        let names = names(s.as_ref(), ROOT_INO);
        assert_eq!(names.len(), 20);
        assert!(names.iter().all(|n| n.starts_with(mine.as_bytes())));
        assert_eq!(
            s.lookup(ROOT_INO, format!("{theirs} 3").as_bytes())
                .unwrap(),
            None
        );
        assert_eq!(hits(s.as_ref(), mine).len(), 20);
        assert!(hits(s.as_ref(), theirs).is_empty());
        assert_eq!(s.pending_journal().unwrap().len(), 20);
        assert_eq!(s.counters().unwrap().max_dentry_id, 20);
    }
    assert_eq!(a.store_identity().unwrap().unwrap().0, "store-a");
    assert_eq!(b.store_identity().unwrap().unwrap().0, "store-b");
    // Dropping one prefix's tables leaves the other whole.
    a.close();
    drop(a);
    for t in [
        "search",
        "store",
        "inodes",
        "dentries",
        "xattrs",
        "wal",
        "config",
        "lease",
        "checks",
        "migrations",
    ] {
        db.exec(&format!("DROP TABLE a_{t}"));
    }
    // The change feed's tables exist on PostgreSQL only.
    for t in ["feed", "changes"] {
        db.exec(&format!("DROP TABLE IF EXISTS a_{t}"));
    }
    assert_eq!(b.inode_count().unwrap(), 21);
    assert_eq!(hits(b.as_ref(), "beta").len(), 20);
    assert_eq!(b.pending_journal().unwrap().len(), 20);
    let b2 = db.open("b").unwrap();
    assert_eq!(b2.store_identity().unwrap().unwrap().0, "store-b");
    // And `a` opens again as a new, empty store.
    let a = db.open("a").unwrap();
    assert_eq!(a.store_identity().unwrap(), None);
    assert_eq!(a.inode_count().unwrap(), 0);
}

fn edited_migration_is_refused(e: Engine) {
    let db = Db::new(e, "edited");
    db.fresh("t").close();
    // Opening again checks every applied migration's checksum.
    db.open("t").unwrap().close();
    db.exec("UPDATE t_migrations SET checksum = '0000' WHERE version = 2");
    let err = db.open("t").err().expect("an edited migration is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("migration 0002 (wal)") && msg.contains("edited"),
        "{msg}"
    );
    // A store migrated by a newer build is refused too.
    let db = Db::new(e, "newer");
    db.fresh("t").close();
    db.exec(
        "INSERT INTO t_migrations (version, name, applied_at, checksum) \
         VALUES (99, 'future', 0, 'ff')",
    );
    let msg = db.open("t").err().expect("refused").to_string();
    assert!(msg.contains("0099") && msg.contains("newer"), "{msg}");
}

fn prefix_length_is_bounded(e: Engine) {
    let db = Db::new(e, "prefix length");
    let max = migrate::max_prefix_len();
    let longest = "p".repeat(max);
    let s = db.fresh(&longest);
    let mut b = Batch::default();
    file(&mut b, 2, ROOT_INO, b"fits", 1);
    s.apply(&b).unwrap();
    assert_eq!(hits(s.as_ref(), "fits"), set(&[2]));
    if e == Engine::Postgres {
        // Every generated name exists whole: none was truncated.
        let url = db.url.clone();
        let like = format!("{longest}%");
        let found: Vec<String> = rt()
            .block_on(async move {
                let mut c = sqlx::PgConnection::connect(&url).await?;
                sqlx::query_scalar(
                    "SELECT relname::text FROM pg_class WHERE relname LIKE $1 \
                     UNION SELECT conname::text FROM pg_constraint WHERE conname LIKE $1",
                )
                .bind(like)
                .fetch_all(&mut c)
                .await
            })
            .unwrap();
        let found: BTreeSet<String> = found.into_iter().collect();
        let want: BTreeSet<String> = migrate::generated_names(&longest).into_iter().collect();
        assert!(
            want.is_subset(&found),
            "missing: {:?}",
            want.difference(&found)
        );
    }
    let err = db
        .open(&"p".repeat(max + 1))
        .err()
        .expect("a too-long prefix is refused");
    let msg = err.to_string();
    assert!(msg.contains("too long") && msg.contains("63"), "{msg}");
    for bad in ["", "1a", "a-b", "a b", "a;DROP"] {
        assert!(db.open(bad).is_err(), "{bad:?}");
    }
}

/// The last fsck and scrub results (`artfs status`): one row per kind,
/// replaced by the next; the lease row as `status` shows it.
fn check_results_and_lease_are_read(e: Engine) {
    let db = Db::new(e, "checks");
    let s = db.fresh("c");
    assert_eq!(s.checks().unwrap(), []);
    let result = |kind: &str, outcome: &str, problems: u64, summary: &str| CheckResult {
        kind: kind.into(),
        finished_at: "2026-01-02T03:04:05.5Z".into(),
        outcome: outcome.into(),
        problems,
        summary: summary.into(),
    };
    let scrub = result("scrub", "problems", 2, "2 damaged: /a, /b");
    s.record_check(&scrub).unwrap();
    s.record_check(&result("fsck", "clean", 0, "first"))
        .unwrap();
    let fsck = result("fsck", "repaired", 0, "checked 3 inodes, 1 repaired");
    s.record_check(&fsck).unwrap();
    assert_eq!(s.checks().unwrap(), [fsck.clone(), scrub.clone()]);
    // What the tables would refuse is refused before, by name.
    let err = s.record_check(&result("tune", "clean", 0, "")).unwrap_err();
    assert!(err.to_string().contains("\"tune\""), "{err}");
    let err = s.record_check(&result("fsck", "fine", 0, "")).unwrap_err();
    assert!(err.to_string().contains("\"fine\""), "{err}");
    // Another handle (a later `artfs status`) reads the same.
    assert_eq!(db.open("c").unwrap().checks().unwrap(), [fsck, scrub]);

    assert_eq!(s.lease_state().unwrap(), None);
    let me = meta::lease::Holder::me();
    s.claim_writer(&me).unwrap();
    let held = s.lease_state().unwrap();
    if e == Engine::Sqlite {
        // The flock in BACKING is SQLite's guard: no lease row.
        assert_eq!(held, None);
        return;
    }
    let held = held.expect("a claimed lease has a row");
    assert!(!held.holder.is_empty());
    assert_eq!(
        (held.host.as_str(), held.pid),
        (me.host.as_str(), me.pid as i64)
    );
    assert!(held.epoch >= 1 && held.beat_age_secs < 5.0, "{held:?}");
    s.close();
    let reader = db.open("c").unwrap();
    let released = reader.lease_state().unwrap().unwrap();
    assert!(released.holder.is_empty(), "{released:?}");
    assert_eq!(released.epoch, held.epoch);
}

/// PostgreSQL only: daemons and commands opening one fresh prefix at once
/// (the advisory lock makes them take turns; SQLite's flock in BACKING
/// keeps its openers apart before they get here).
#[test]
fn postgres_concurrent_openers_migrate_once() {
    let db = Db::new(Engine::Postgres, "openers");
    std::thread::scope(|t| {
        for _ in 0..4 {
            t.spawn(|| db.open("race").unwrap().close());
        }
    });
    let url = db.url.clone();
    let n: i64 = rt()
        .block_on(async move {
            let mut c = sqlx::PgConnection::connect(&url).await?;
            sqlx::query_scalar("SELECT count(*) FROM race_migrations")
                .fetch_one(&mut c)
                .await
        })
        .unwrap();
    assert_eq!(n as usize, migrate::POSTGRES.len());
}

/// PostgreSQL only: a URL's password appears in no error, and one from
/// ARTFS_DB_PASSWORD is not needed on the command line.
#[test]
fn postgres_urls_are_redacted() {
    let err = meta::open(
        "postgres://artfs:hunter2@localhost/db?host=/nonexistent/artfs-sock&sslmode=disable",
        "t",
        rt().handle().clone(),
    )
    .err()
    .expect("no server there");
    let msg = err.to_string();
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(msg.contains("artfs:***@"), "{msg}");
    let err = meta::open("mysql://u:hunter2@h/db", "t", rt().handle().clone())
        .err()
        .expect("unsupported");
    let msg = err.to_string();
    assert!(
        !msg.contains("hunter2") && msg.contains("unsupported"),
        "{msg}"
    );
}

/// A batch that gives a second inode a file id another inode holds is
/// refused whole, and the first inode keeps it (never replaced, as an
/// `INSERT OR REPLACE` on the unique file id would do silently).
fn a_file_id_names_one_inode(e: Engine) {
    let db = Db::new(e, "file id unique");
    let s = db.fresh("t");
    let mut b = Batch::default();
    file(&mut b, 10, ROOT_INO, b"first", 10);
    s.apply(&b).unwrap();
    let held = s.get_inode(10).unwrap().unwrap().file_id;

    let mut b = Batch::default();
    let mut twin = node(11, Kind::File, ROOT_INO, b"second");
    twin.file_id = held.clone();
    b.inodes.push((11, Some(twin)));
    b.dentries
        .push(entry(ROOT_INO, b"second", 11, Kind::File, 11));
    let err = s.apply(&b).expect_err("a second inode with a held file id");
    assert!(
        matches!(err, Error::Database { .. }),
        "refused by the database: {err:?}"
    );
    assert_eq!(s.get_inode(10).unwrap().unwrap().file_id, held);
    assert_eq!(s.get_inode(11).unwrap(), None, "nothing of the batch");
    assert_eq!(names(s.as_ref(), ROOT_INO), vec![b"first".to_vec()]);
    // The same inode rewritten with its own id is an update, not a clash.
    let mut again = s.get_inode(10).unwrap().unwrap();
    again.size = 42;
    s.apply(&Batch {
        inodes: vec![(10, Some(again))],
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(s.get_inode(10).unwrap().unwrap().size, 42);
}

/// `clear_namespace` (a full rebuild) leaves no search rows behind: a
/// term of a cleared inode finds nothing, and an inode put back under
/// another name is found by that name only.
fn clearing_the_namespace_clears_search(e: Engine) {
    let (_db, s) = search_store(e, "clear search");
    assert!(!hits(s.as_ref(), "readme").is_empty());
    s.clear_namespace().unwrap();
    assert_eq!(hits(s.as_ref(), "readme"), set(&[]));
    let mut b = Batch::default();
    b.inodes.push((ROOT_INO, Some(root())));
    file(&mut b, 10, ROOT_INO, b"ledger.txt", 1);
    s.apply(&b).unwrap();
    assert_eq!(hits(s.as_ref(), "ledger"), set(&[10]));
    assert_eq!(hits(s.as_ref(), "readme"), set(&[]));
}

/// A file inode with every field set (moved from meta/sqlite_tests.rs).
fn sized_file(ino: u64, size: u64) -> Inode {
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
        flags: 0,
        version: None,
    }
}

fn file_entry(ino: u64, id: u64) -> Option<Dentry> {
    Some(Dentry {
        ino,
        kind: Kind::File,
        id,
    })
}

fn a_batch_round_trips(e: Engine) {
    let db = Db::new(e, "a batch round trips");
    let s = db.fresh("t");
    let m = s.as_ref();
    let mut link = sized_file(3, 0);
    link.kind = Kind::Symlink;
    link.target = Some(b"../some/where\xff".to_vec());
    let mut hashed = sized_file(2, 12345);
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
            ((ROOT_INO, b"h".to_vec()), file_entry(2, 10)),
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
    assert_eq!(m.lookup(ROOT_INO, b"h").unwrap(), file_entry(2, 10));
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

fn usage_deltas_add_up_on_the_policy_row(e: Engine) {
    let db = Db::new(e, "usage deltas add up on the policy row");
    let s = db.fresh("t");
    let m = s.as_ref();
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

fn reservations_only_grow(e: Engine) {
    let db = Db::new(e, "reservations only grow");
    let s = db.fresh("t");
    let m = s.as_ref();
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

fn a_failed_batch_changes_nothing(e: Engine) {
    let db = Db::new(e, "a failed batch changes nothing");
    let s = db.fresh("t");
    let m = s.as_ref();
    m.apply(&Batch {
        inodes: vec![(2, Some(sized_file(2, 1)))],
        dentries: vec![((ROOT_INO, b"a".to_vec()), file_entry(2, 1))],
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
        inodes: vec![(4, Some(sized_file(4, 1)))],
        dentries: vec![((ROOT_INO, b"b".to_vec()), file_entry(4, 1))],
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

/// A batch settles many log rows at once (a writer's batch of unlinks),
/// one of them twice: the later update wins, as in order.
fn many_rows_settle_in_one_batch(e: Engine) {
    let db = Db::new(e, "settle many");
    let s = db.fresh("t");
    let rows: Vec<Record> = (0..300)
        .map(|n| record(Op::Unlink, Status::Pending, 1_700_000_000_000_000_000 + n))
        .collect();
    s.apply(&Batch {
        journal: rows.clone(),
        ..Batch::default()
    })
    .unwrap();
    assert_eq!(s.pending_journal().unwrap().len(), 300);
    let mut done: Vec<Update> = rows
        .iter()
        .enumerate()
        .map(|(n, r)| {
            let status = if n % 3 == 0 {
                Status::Failed
            } else {
                Status::Committed
            };
            Update::new(r.id, status, format!("row {n}"))
        })
        .collect();
    // Row 0 first fails, then (later in the same batch) commits.
    done.push(Update::new(
        rows[0].id,
        Status::Committed,
        "retried".to_string(),
    ));
    s.apply(&Batch {
        journal_done: done,
        ..Batch::default()
    })
    .unwrap();
    assert!(s.pending_journal().unwrap().is_empty());
    let counts: BTreeMap<String, u64> = s.journal_counts().unwrap().into_iter().collect();
    assert_eq!(counts.get("failed"), Some(&99), "{counts:?}");
    assert_eq!(counts.get("committed"), Some(&201), "{counts:?}");
}

/// A batch that changes the namespace carries its usage delta and inode
/// reservation too (PostgreSQL writes them with the feed row).
fn usage_and_reservation_ride_with_changes(e: Engine) {
    let db = Db::new(e, "usage with changes");
    let s = db.fresh("t");
    s.apply(&Batch {
        config: Some(StoreConfig {
            mode: "edit".into(),
            mode_changed_at: "2026-01-01T00:00:00Z".into(),
            mode_changed_by: "test".into(),
            capacity: None,
            used_bytes: 0,
            file_count: 0,
        }),
        ..Batch::default()
    })
    .unwrap();
    let start = s.counters().unwrap().ino_reserved;
    let mut b = Batch::default();
    file(&mut b, 10, ROOT_INO, b"f", 10);
    b.usage_delta = (4096, 1);
    b.ino_reserved = Some(start + 500);
    s.apply(&b).unwrap();
    let mut b = Batch::default();
    file(&mut b, 11, ROOT_INO, b"g", 11);
    b.usage_delta = (100, 1);
    b.ino_reserved = Some(start + 5);
    s.apply(&b).unwrap();
    let c = s.config().unwrap().unwrap();
    assert_eq!((c.used_bytes, c.file_count), (4196, 2));
    assert_eq!(s.counters().unwrap().ino_reserved, start + 500);
    // A change without usage or reservation leaves both alone.
    let mut b = Batch::default();
    file(&mut b, 12, ROOT_INO, b"h", 12);
    s.apply(&b).unwrap();
    let c = s.config().unwrap().unwrap();
    assert_eq!((c.used_bytes, c.file_count), (4196, 2));
    assert_eq!(s.counters().unwrap().ino_reserved, start + 500);
}
