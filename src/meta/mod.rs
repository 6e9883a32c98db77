//! The metadata store: namespace, inodes and extended attributes in SQL
//! tables. The core talks to it only through [`MetaStore`], so a second
//! backend (PostgreSQL) is an addition, not a rewrite.
//!
//! Writes arrive as [`Batch`]es: the final state of every key that changed
//! since the previous batch, applied in one transaction (group commit, see
//! `core::writer`). The interface is synchronous: the core is plain
//! blocking code; a backend on an async driver blocks on its own runtime.

pub mod feed;
pub mod lease;
pub mod migrate;
mod pg_lease;
pub mod postgres;
pub mod query;
mod rows;
pub mod sqlite;

use crate::types::error::{Error, Result};
use crate::types::journal;
use crate::types::{DirEntry, Inode, Kind, Timestamp};

/// A directory entry's target and readdir cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dentry {
    pub ino: u64,
    pub kind: Kind,
    /// Stable readdir cookie, unique per store.
    pub id: u64,
}

pub type XattrList = Vec<(Vec<u8>, Vec<u8>)>;
/// Attribute rows of several inodes: (ino, name, value).
pub type XattrRows = Vec<(u64, Vec<u8>, Vec<u8>)>;

/// Final states to write: `None` deletes.
#[derive(Default, Debug)]
pub struct Batch {
    pub inodes: Vec<(u64, Option<Inode>)>,
    pub dentries: Vec<(crate::types::DentryKey, Option<Dentry>)>,
    /// The whole attribute list of an inode (empty or `None`: no attributes).
    pub xattrs: Vec<(u64, Option<XattrList>)>,
    /// Inode numbers below this may have been handed out.
    pub ino_reserved: Option<u64>,
    /// Log rows to insert, in order (see `types::journal`).
    pub journal: Vec<journal::Record>,
    /// Status changes of rows already in the log.
    pub journal_done: Vec<journal::Update>,
    /// A new policy row (mode and capacity; usage is kept by deltas).
    pub config: Option<StoreConfig>,
    /// Change of (bytes of regular files, number of regular files).
    pub usage_delta: (i64, i64),
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
            && self.dentries.is_empty()
            && self.xattrs.is_empty()
            && self.ino_reserved.is_none()
            && self.journal.is_empty()
            && self.journal_done.is_empty()
            && self.config.is_none()
            && self.usage_delta == (0, 0)
    }
}

/// The store's policy row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub mode: String,
    /// RFC 3339 UTC.
    pub mode_changed_at: String,
    pub mode_changed_by: String,
    pub capacity: Option<u64>,
    /// Bytes of regular files (logical sizes), as committed.
    pub used_bytes: u64,
    /// Number of regular files, as committed.
    pub file_count: u64,
}

/// The last result of a whole-store check (`artfs fsck`, `artfs scrub`),
/// one per kind, for `artfs status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// `fsck` or `scrub` ([`CHECK_KINDS`]).
    pub kind: String,
    /// RFC 3339 UTC.
    pub finished_at: String,
    /// `clean`, `problems` or `repaired` ([`CHECK_OUTCOMES`]).
    pub outcome: String,
    pub problems: u64,
    /// One short line.
    pub summary: String,
}

/// A `{p}_checks` row as both engines read it.
pub(crate) type CheckRow = (String, String, String, i64, String);

impl CheckResult {
    /// The query that reads every kind's row, in kind order.
    pub(crate) fn select_sql(p: &str) -> String {
        format!(
            "SELECT kind, finished_at, outcome, problems, summary FROM {p}_checks ORDER BY kind"
        )
    }

    pub(crate) fn from_row((kind, finished_at, outcome, problems, summary): CheckRow) -> Self {
        CheckResult {
            kind,
            finished_at,
            outcome,
            problems: problems.max(0) as u64,
            summary,
        }
    }
}

/// The kinds of check whose result is kept (the table's CHECK agrees).
pub const CHECK_KINDS: &[&str] = &["fsck", "scrub"];
/// What a check can conclude (the table's CHECK agrees).
pub const CHECK_OUTCOMES: &[&str] = &["clean", "problems", "repaired"];

/// The writer's lease as its row says (see [`lease`]); only engines
/// several machines share have one.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseState {
    pub epoch: u64,
    /// Empty once released at a clean unmount.
    pub holder: String,
    pub host: String,
    pub pid: i64,
    /// Seconds since the last heartbeat (or the release), by the
    /// database's clock.
    pub beat_age_secs: f64,
}

/// Counters the core resumes from at mount.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub max_ino: u64,
    pub ino_reserved: u64,
    pub max_dentry_id: u64,
}

pub trait MetaStore: Send + Sync {
    /// Identity of the store this database belongs to, if initialised.
    fn store_identity(&self) -> Result<Option<(String, String)>>;
    /// Record the store identity and root (first mount only).
    fn init_store(&self, store_id: &str, backing: &str, root: &Inode) -> Result<()>;
    fn counters(&self) -> Result<Counters>;

    fn get_inode(&self, ino: u64) -> Result<Option<Inode>>;
    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Dentry>>;
    /// Entries of `parent` whose cookie is greater than `after`, in cookie order.
    fn read_dir(&self, parent: u64, after: u64, limit: usize) -> Result<Vec<DirEntry>>;
    fn xattrs(&self, ino: u64) -> Result<XattrList>;
    /// Number of inodes, for statfs.
    fn inode_count(&self) -> Result<u64>;
    /// Inodes with no links left (unlinked while open when the daemon stopped).
    fn orphans(&self) -> Result<Vec<u64>>;

    /// Inodes among `inos` that exist (any order).
    fn inodes_of(&self, inos: &[u64]) -> Result<Vec<Inode>>;
    /// Every name of the given inodes: (ino, parent, name).
    fn links_of(&self, inos: &[u64]) -> Result<Vec<(u64, u64, Vec<u8>)>>;
    /// Extended attributes of the given inodes: (ino, name, value).
    fn xattrs_of(&self, inos: &[u64]) -> Result<XattrRows>;
    /// Every (ino, value) of the attribute `name`.
    fn xattr_values(&self, name: &[u8]) -> Result<Vec<(u64, Vec<u8>)>>;
    /// Delete every inode, entry and attribute (rebuild starts from here).
    fn clear_namespace(&self) -> Result<()>;
    /// Record the store identity without creating a root (rebuild).
    fn init_identity(&self, store_id: &str, backing: &str, ino_reserved: u64) -> Result<()>;

    /// Full-text search: matching inodes, best first, with their rank
    /// (lower is better). A malformed query is an EINVAL error.
    fn search(&self, query: &str, limit: usize, offset: usize) -> Result<Vec<(u64, f64)>>;

    /// The policy row, if the store has one yet.
    fn config(&self) -> Result<Option<StoreConfig>>;

    /// The inode with this stable file id.
    fn find_by_file_id(&self, file_id: &str) -> Result<Option<u64>>;
    /// Regular files with a name, newest first (creation time, then file
    /// id bytewise, both descending), after `after` in that order (a
    /// keyset, so batches neither skip nor repeat a file), at most
    /// `limit`: the original API's file listing walks them in batches.
    fn files_newest_first(
        &self,
        after: Option<(Timestamp, &str)>,
        limit: usize,
    ) -> Result<Vec<Inode>>;
    /// Log rows still pending, oldest first.
    fn pending_journal(&self) -> Result<Vec<journal::Record>>;
    /// Pending log rows of one operation, oldest first (requests another
    /// process left for the daemon, such as a mode change).
    fn pending_of(&self, op: journal::Op) -> Result<Vec<journal::Record>>;
    /// One log row by its id, if it is still kept.
    fn journal_row(&self, id: uuid::Uuid) -> Result<Option<journal::Record>>;
    /// Number of log rows per status.
    fn journal_counts(&self) -> Result<Vec<(String, u64)>>;
    /// Delete settled rows past their retention, oldest first, at most
    /// `limit` of them (each statement a short one: the writer commits
    /// between calls); returns how many went. Call again while it
    /// returns `limit`.
    fn prune_journal(&self, keep: &journal::Retention, limit: u64) -> Result<u64>;

    /// Regular files with a name and no recorded SHA-256, by inode number
    /// (the hasher's backlog after a crash; scrub).
    fn unhashed_files(&self) -> Result<Vec<u64>> {
        Ok(self
            .all_inodes()?
            .into_iter()
            .filter(|i| i.kind == crate::types::Kind::File && i.nlink > 0)
            .filter(|i| i.sha256.is_none())
            .map(|i| i.ino)
            .collect())
    }
    /// How many files [`MetaStore::unhashed_files`] lists (for metrics).
    fn unhashed_count(&self) -> Result<u64> {
        Ok(self.unhashed_files()?.len() as u64)
    }

    /// Everything, for fsck and rebuild checks (whole-store scans).
    fn all_inodes(&self) -> Result<Vec<Inode>>;
    /// Every directory entry as (parent, name, entry).
    fn all_dentries(&self) -> Result<Vec<(u64, Vec<u8>, Dentry)>>;
    /// Inodes that have extended attributes rows.
    fn xattr_owners(&self) -> Result<Vec<u64>>;

    /// The path of an inode from the root (its first name at each level),
    /// `None` if it has no name.
    fn path_of(&self, mut ino: u64) -> Result<Option<Vec<u8>>> {
        let mut parts: Vec<Vec<u8>> = Vec::new();
        while ino != crate::types::ROOT_INO {
            let Some((_, parent, name)) = self.links_of(&[ino])?.into_iter().next() else {
                return Ok(None);
            };
            parts.push(name);
            ino = parent;
            if parts.len() > 4096 {
                return Ok(None); // a cycle: damage for fsck to find
            }
        }
        let mut path = Vec::new();
        for p in parts.iter().rev() {
            path.push(b'/');
            path.extend_from_slice(p);
        }
        if path.is_empty() {
            path.push(b'/');
        }
        Ok(Some(path))
    }

    /// Whether a query is a network round trip (PostgreSQL), not a local
    /// file read (SQLite).
    fn is_remote(&self) -> bool {
        false
    }

    /// Keep `result` as the last of its kind (replacing the one before).
    /// A small write of its own, outside batches: a read-only check of a
    /// mounted store may record its result too.
    fn record_check(&self, result: &CheckResult) -> Result<()>;
    /// The last result of each kind recorded, in kind order.
    fn checks(&self) -> Result<Vec<CheckResult>>;
    /// The writer's lease row, where the engine has one.
    fn lease_state(&self) -> Result<Option<LeaseState>> {
        Ok(None)
    }

    /// Become the store's one writer (see [`lease`]): needed by engines
    /// several machines share. SQLite's guard is the flock in BACKING, so
    /// by default there is nothing to do.
    fn claim_writer(&self, _me: &lease::Holder) -> Result<()> {
        Ok(())
    }
    /// Whether this handle holds a lease that needs [`MetaStore::heartbeat`]
    /// every [`lease::BEAT`].
    fn leased(&self) -> bool {
        false
    }
    /// Renew the lease; `Error::Fenced` once another writer took it.
    fn heartbeat(&self) -> Result<()> {
        Ok(())
    }
    /// A standby's attempt: take the lease if it is free, released, held
    /// by a dead process here, or silent for longer than `lapse`; never
    /// wait. False: a writer holds it (or the engine has no lease).
    fn try_claim_writer(&self, _me: &lease::Holder, _lapse: std::time::Duration) -> Result<bool> {
        Ok(false)
    }

    /// The last change-feed row this handle wrote (0: none yet, or an
    /// engine without a feed).
    fn feed_written(&self) -> u64 {
        0
    }

    /// The change feed after `after` (at most `limit` rows; see [`feed`]).
    /// `None`: this engine keeps no feed (one daemon serves its stores).
    fn changes_since(&self, _after: u64, _limit: usize) -> Result<Option<feed::Page>> {
        Ok(None)
    }

    /// Apply a batch atomically (refused with `Error::Fenced` when this
    /// handle's lease passed to another writer).
    fn apply(&self, batch: &Batch) -> Result<()>;
    /// Make everything committed so far durable (called by fsync).
    fn sync(&self) -> Result<()>;
    /// Flush and close (giving up the lease); called at unmount.
    fn close(&self);
}

/// Database errors become the core's metadata error (EIO at the doors),
/// keeping the engine's code (SQLite's extended result code, PostgreSQL's
/// SQLSTATE) and the driver's error as the source.
impl From<sqlx::Error> for crate::types::error::Error {
    fn from(e: sqlx::Error) -> Self {
        let code = match &e {
            sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
            _ => None,
        };
        let message = e.to_string();
        crate::types::error::Error::database(code, message, e)
    }
}

/// The file of a SQLite URL (`sqlite://PATH`, `sqlite:PATH` or a bare
/// path); `None` for other engines.
pub fn sqlite_path(url: &str) -> Option<&str> {
    if url.contains("://") && !url.starts_with("sqlite:") {
        return None;
    }
    Some(
        url.strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url),
    )
}

/// Whether a URL names a PostgreSQL database (`postgres://`,
/// `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
}

pub use crate::types::url::redact;

/// Refuse a check result the tables would refuse, with a clear error.
pub fn check_result_valid(r: &CheckResult) -> Result<()> {
    if !CHECK_KINDS.contains(&r.kind.as_str()) {
        return Err(Error::Meta(format!("unknown check kind {:?}", r.kind)));
    }
    if !CHECK_OUTCOMES.contains(&r.outcome.as_str()) {
        return Err(Error::Meta(format!(
            "unknown check outcome {:?}",
            r.outcome
        )));
    }
    Ok(())
}

/// Whether the database a URL names has the tables of `prefix`, found
/// without creating or migrating anything (`artfs status` reads only).
pub fn prefix_exists(url: &str, prefix: &str, rt: &tokio::runtime::Handle) -> Result<bool> {
    if is_postgres_url(url) {
        rt.block_on(postgres::prefix_exists(url, prefix))
    } else if let Some(path) = sqlite_path(url) {
        rt.block_on(sqlite::prefix_exists(path, prefix))
    } else {
        Err(Error::Meta(format!(
            "unsupported database URL {}: use sqlite://PATH, postgres:// or postgresql://",
            redact(url)
        )))
    }
}

/// What opening a store may do to its schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schema {
    /// Create the tables and apply pending migrations (writers, commands).
    Migrate,
    /// Only check they exist and are current: a replica or standby
    /// changes nothing (PostgreSQL; SQLite stores have no such nodes).
    Existing,
}

/// Open the metadata store a URL names, tables under `prefix`. The one
/// place that knows which engines exist.
pub fn open(url: &str, prefix: &str, rt: tokio::runtime::Handle) -> Result<Box<dyn MetaStore>> {
    open_as(url, prefix, rt, Schema::Migrate)
}

/// [`open`], doing to the schema only what `schema` allows.
pub fn open_as(
    url: &str,
    prefix: &str,
    rt: tokio::runtime::Handle,
    schema: Schema,
) -> Result<Box<dyn MetaStore>> {
    if is_postgres_url(url) {
        Ok(Box::new(postgres::PgStore::open_as(
            url, prefix, rt, schema,
        )?))
    } else if schema == Schema::Existing {
        Err(Error::Meta(format!(
            "{} is not a database several machines share: use postgres://",
            redact(url)
        )))
    } else if sqlite_path(url).is_some_and(|p| !p.is_empty()) {
        Ok(Box::new(sqlite::SqliteStore::open(url, prefix, rt)?))
    } else {
        // An empty path among them: SQLite would open a private in-memory
        // database per connection, never the one meant.
        Err(Error::Meta(format!(
            "unsupported database URL {:?}: use sqlite://PATH, postgres:// or postgresql://",
            redact(url)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_and_dispatched() {
        assert_eq!(
            redact("postgres://artfs:s3cr%40t@db.example:5432/meta?sslmode=require"),
            "postgres://artfs:***@db.example:5432/meta?sslmode=require"
        );
        assert_eq!(
            redact("postgresql:///meta?host=/run/pg&password=hunter2&user=u"),
            "postgresql:///meta?host=/run/pg&password=***&user=u"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///a/b.db"), "sqlite:///a/b.db");
        assert!(is_postgres_url("postgres://h/db"));
        assert!(is_postgres_url("postgresql:///db?host=/tmp"));
        assert!(!is_postgres_url("sqlite:///x"));
        assert!(!is_postgres_url("/tmp/postgres://x"));
        assert_eq!(sqlite_path("postgres://h/db"), None);
    }
}
