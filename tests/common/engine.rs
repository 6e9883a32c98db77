//! Which metadata engine a test's stores use. A mounting test runs once on
//! every engine by wrapping its body in [`every_engine`]; [`Mount`] (and
//! `Mount::store_args`, for offline commands) follow the engine of the
//! test that runs on this thread. SQLite is the default, so a test not yet
//! wrapped keeps running as it did.
//!
//! [`Mount`]: super::Mount

use std::cell::Cell;

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
    _db: Option<PgDatabase>,
}

impl StoreDb {
    /// Tables wherever the test's own flags say.
    pub fn none() -> StoreDb {
        StoreDb {
            args: Vec::new(),
            _db: None,
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
                    "t".into(),
                ],
                _db: Some(db),
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
