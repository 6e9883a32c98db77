//! Which engine a test's stores use (where the tables and the content
//! live). A mounting test runs once on every engine by wrapping its body
//! in [`every_engine`]; [`Mount`] (and
//! `Mount::store_args`, for offline commands) follow the engine of the
//! test that runs on this thread. SQLite is the default, so a test not yet
//! wrapped keeps running as it did.
//!
//! [`Mount`]: super::Mount

use std::cell::Cell;
use std::path::Path;
use std::process::Command;

use super::pg::{PgDatabase, PgServer};
use super::s3::{Bucket, S3Server};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded default: SQLite inside BACKING.
    Sqlite,
    /// A database of its own on the test PostgreSQL (tests/common/pg.rs).
    Postgres,
    /// Content in a bucket of the test S3 server (tests/common/s3.rs),
    /// under a prefix of its own; the test's BACKING is its cache
    /// directory, the tables a SQLite file beside it.
    S3,
}

thread_local! {
    static CURRENT: Cell<Engine> = const { Cell::new(Engine::Sqlite) };
}

/// The engine of the test running on this thread.
pub fn current() -> Engine {
    CURRENT.with(Cell::get)
}

/// Run `body` with `engine` as this thread's engine.
pub fn run_on(engine: Engine, body: impl FnOnce()) {
    let before = CURRENT.with(|c| c.replace(engine));
    struct Restore(Engine);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(before);
    body();
}

/// Where a new store's tables live on the current engine: nothing to say
/// for SQLite (inside BACKING); for PostgreSQL a fresh database, kept alive
/// as long as the returned guard, and the `--db`/`--table-prefix` flags
/// every command on that store needs.
pub struct StoreDb {
    pub args: Vec<String>,
    /// Variables every command on the store needs (S3 credentials).
    pub env: Vec<(String, String)>,
    pg: Option<PgDatabase>,
    /// S3: the store's URL and the SQLite file outside BACKING.
    s3: Option<S3Place>,
}

struct S3Place {
    /// The store's own bucket on the shared server.
    bucket: String,
    prefix: String,
    sqlite: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// The table prefix tests give PostgreSQL stores (SQLite keeps the default).
const PG_PREFIX: &str = "t";

impl StoreDb {
    /// Run SQL on the store's tables, behind artfs's back (to damage them
    /// on purpose): `{p}` stands for the table prefix. The store must not
    /// be mounted unless the test means a concurrent writer.
    pub fn sql(&self, backing: &Path, sql: &str) {
        match &self.pg {
            None => {
                let sql = sql.replace("{p}", "artfs");
                let db = self.sqlite_file(backing);
                let out = Command::new("sqlite3").arg(&db).arg(&sql).output().unwrap();
                assert!(out.status.success(), "sqlite3 {sql}: {out:?}");
            }
            Some(db) => {
                let sql = sql.replace("{p}", PG_PREFIX);
                super::pg::execute(&db.url, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
        }
    }

    /// `bytes` as an SQL literal of the engine's binary type.
    pub fn blob(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match &self.pg {
            None => format!("X'{hex}'"),
            Some(_) => format!("'\\x{hex}'::bytea"),
        }
    }

    /// The rows of a query whose first column is text (`{p}` as in
    /// [`StoreDb::sql`]).
    pub fn query(&self, backing: &Path, sql: &str) -> Vec<String> {
        match &self.pg {
            None => {
                let sql = sql.replace("{p}", "artfs");
                let db = self.sqlite_file(backing);
                let out = Command::new("sqlite3").arg(&db).arg(&sql).output().unwrap();
                assert!(out.status.success(), "sqlite3 {sql}: {out:?}");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect()
            }
            Some(db) => {
                let sql = sql.replace("{p}", PG_PREFIX);
                super::pg::query_lines(&db.url, &sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
        }
    }

    /// Lose every table of the store (the disaster `artfs rebuild` recovers
    /// from): SQLite's files go; on PostgreSQL the store's database is
    /// emptied.
    pub fn lose_tables(&self, backing: &Path) {
        match &self.pg {
            None => {
                let db = self.sqlite_file(backing);
                for f in ["", "-wal", "-shm"] {
                    let mut p = db.clone().into_os_string();
                    p.push(f);
                    let _ = std::fs::remove_file(p);
                }
            }
            Some(db) => {
                super::pg::execute(&db.url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
                    .unwrap()
            }
        }
    }
}

impl StoreDb {
    /// Tables named by `args` (`--db URL --table-prefix P`), kept by the
    /// test itself.
    pub fn given(args: &[&str]) -> StoreDb {
        StoreDb {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..StoreDb::none()
        }
    }

    /// Tables wherever the test's own flags say.
    pub fn none() -> StoreDb {
        StoreDb {
            args: Vec::new(),
            env: Vec::new(),
            pg: None,
            s3: None,
        }
    }

    /// The SQLite file of the store (SQLite and S3 engines).
    fn sqlite_file(&self, backing: &Path) -> std::path::PathBuf {
        match &self.s3 {
            Some(p) => p.sqlite.clone(),
            None => backing.join(".artfs/meta.db"),
        }
    }

    /// BACKING as commands name it: the directory, or on S3 the bucket's
    /// URL with the directory as its cache.
    pub fn location(&self, backing: &Path) -> Vec<std::ffi::OsString> {
        match &self.s3 {
            None => vec![backing.into()],
            Some(p) => vec![
                format!("s3://{}/{}", p.bucket, p.prefix).into(),
                "--cache-dir".into(),
                backing.into(),
            ],
        }
    }

    /// The store's bucket and key prefix (S3 only).
    pub fn bucket(&self) -> Option<(Bucket<'static>, String)> {
        self.s3.as_ref().map(|p| {
            (
                Bucket {
                    server: S3Server::shared(),
                    name: p.bucket.clone(),
                },
                p.prefix.clone(),
            )
        })
    }
}

pub fn new_store_db(tag: &str) -> StoreDb {
    match current() {
        Engine::Sqlite => StoreDb::none(),
        Engine::S3 => {
            let server = S3Server::shared();
            let bucket = server.new_bucket(tag).name;
            let dir = tempfile::Builder::new()
                .prefix("artfs-s3-db-")
                .tempdir()
                .unwrap();
            let sqlite = dir.path().join("meta.db");
            let prefix = "store".to_string();
            StoreDb {
                args: vec![
                    "--db".into(),
                    format!("sqlite://{}", sqlite.display()),
                    "--s3-endpoint".into(),
                    server.endpoint.clone(),
                ],
                env: server
                    .env()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                pg: None,
                s3: Some(S3Place {
                    bucket,
                    prefix,
                    sqlite,
                    _dir: dir,
                }),
            }
        }
        Engine::Postgres => {
            let db = PgServer::shared().database(tag);
            StoreDb {
                args: vec![
                    "--db".into(),
                    db.url.clone(),
                    "--table-prefix".into(),
                    PG_PREFIX.into(),
                ],
                pg: Some(db),
                ..StoreDb::none()
            }
        }
    }
}

/// Run a test's body once on every metadata engine with content in
/// BACKING, SQLite first: only for tests bound to that layout (they hand
/// BACKING's path to a command that builds a store in it, or measure the
/// local transport); every other mounting test uses [`every_engine`].
pub fn every_metadata_engine(body: impl Fn()) {
    for engine in chosen(&[Engine::Sqlite, Engine::Postgres]) {
        eprintln!("-- on {engine:?}");
        run_on(engine, &body);
    }
}

/// `engines`, or those of them `ARTFS_TEST_ENGINES` names (a comma list of
/// sqlite, postgres, s3: to work on one engine's failures quickly).
fn chosen(engines: &[Engine]) -> Vec<Engine> {
    let Ok(only) = std::env::var("ARTFS_TEST_ENGINES") else {
        return engines.to_vec();
    };
    let only = only.to_ascii_lowercase();
    engines
        .iter()
        .copied()
        .filter(|e| {
            only.split(',')
                .any(|o| o.trim() == format!("{e:?}").to_ascii_lowercase())
        })
        .collect()
}

/// Run a test's body once on every engine the project has: SQLite and
/// PostgreSQL tables with content in BACKING, and content in an S3 bucket
/// (the failing engine is named on stderr, which cargo shows for a failed
/// test). The helper every mounting test goes through.
pub fn every_engine(body: impl Fn()) {
    for engine in chosen(&[Engine::Sqlite, Engine::Postgres, Engine::S3]) {
        eprintln!("-- on {engine:?}");
        run_on(engine, &body);
    }
}
