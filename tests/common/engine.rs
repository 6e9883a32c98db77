//! Which metadata engine a test's stores use. A mounting test runs once on
//! every engine by wrapping its body in [`every_engine`]; [`Mount`] (and
//! `Mount::store_args`, for offline commands) follow the engine of the
//! test that runs on this thread. SQLite is the default, so a test not yet
//! wrapped keeps running as it did.
//!
//! [`Mount`]: super::Mount

use std::cell::Cell;
use std::path::Path;
use std::process::Command;

use super::pg::{PgDatabase, PgServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded default: SQLite inside BACKING.
    Sqlite,
    /// A database of its own on the test PostgreSQL (tests/common/pg.rs).
    Postgres,
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
    pg: Option<PgDatabase>,
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
                let db = backing.join(".artfs/meta.db");
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
                let db = backing.join(".artfs/meta.db");
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
                for f in ["meta.db", "meta.db-wal", "meta.db-shm"] {
                    let _ = std::fs::remove_file(backing.join(".artfs").join(f));
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
            pg: None,
        }
    }

    /// Tables wherever the test's own flags say.
    pub fn none() -> StoreDb {
        StoreDb {
            args: Vec::new(),
            pg: None,
        }
    }
}

pub fn new_store_db(tag: &str) -> StoreDb {
    match current() {
        Engine::Sqlite => StoreDb::none(),
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
            }
        }
    }
}

/// Run a test's body once on every engine, SQLite first (the failing
/// engine is named on stderr, which cargo shows for a failed test).
pub fn every_engine(body: impl Fn()) {
    for engine in [Engine::Sqlite, Engine::Postgres] {
        eprintln!("-- on {engine:?}");
        run_on(engine, &body);
    }
}
