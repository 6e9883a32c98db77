//! How to open a store ([`StoreOptions`]): plain data whose [`Default`] is
//! the single home of the store's defaults. `config.rs` builds its
//! `[store]`, `[policy]` and cache defaults from it (a test there fails if
//! the two drift apart).

use std::path::PathBuf;
use std::time::Duration;

use super::archive_attrs::DEFAULT_MAX_RETENTION;
use super::collector::CollectorConfig;
use super::policy::Mode;
use crate::types::journal::Retention;

/// Prefix of the metadata tables unless told otherwise.
pub const DEFAULT_TABLE_PREFIX: &str = "artfs";

/// Entries per in-memory metadata cache unless told otherwise.
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;

/// How to open a store. Plain data with defaults; the CLI fills it.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The store's local directory: the content itself with the default
    /// `Content::Local`, the cache of a bucket with `Content::S3`.
    pub backing: PathBuf,
    /// Where file content lives.
    pub content: crate::blob::Content,
    /// Metadata database URL; default `sqlite://BACKING/.artfs/meta.db`.
    pub db_url: Option<String>,
    pub table_prefix: String,
    /// Entries per in-memory cache.
    pub cache_entries: usize,
    /// How long settled log rows are kept.
    pub journal_retention: Retention,
    /// Mode of a store created by this mount (an existing store keeps its own).
    pub initial_mode: Mode,
    /// Set the store's capacity (bytes of regular files; 0 removes it).
    pub capacity: Option<u64>,
    /// Trash and expiry.
    pub collector: CollectorConfig,
    /// How far ahead a retention lock may reach (`--max-retention`);
    /// `None`: no bound.
    pub max_retention: Option<std::time::Duration>,
    /// What this daemon is to the store (docs/CLUSTER.md).
    pub role: Role,
    /// How often a replica reads the change feed when nothing wakes it.
    pub poll: Duration,
    /// How long a standby lets the writer's heartbeat be silent before it
    /// takes over (at least [`MIN_TAKEOVER`]).
    pub takeover_after: Duration,
    /// When reading moves a file's atime (mount's relatime, noatime,
    /// strictatime).
    pub atime: Atime,
}

/// When reading a file moves its atime. Reads through passthrough never
/// reach the daemon, so opening a file for reading counts as reading it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Atime {
    /// As ext4's relatime (the kernel's default): when atime is not newer
    /// than mtime or ctime, or is a day old.
    #[default]
    Relative,
    /// Never (`noatime`; also a read-only mount).
    Never,
    /// At every open for reading (`strictatime`).
    Always,
}

/// What a daemon is to the store it serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds the store's lease and commits every change (the default).
    #[default]
    Writer,
    /// Serves reads of a store another node writes, following its changes.
    Replica,
    /// A replica that becomes the writer when the writer's lease lapses.
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Writer => "writer",
            Role::Replica => "replica",
            Role::Standby => "standby",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A replica's feed poll interval unless told otherwise.
pub const DEFAULT_POLL: Duration = Duration::from_millis(1000);

/// A writer's silence a standby waits out unless told otherwise: the
/// lease's own lapse, so a standby and a restarted writer agree.
pub const DEFAULT_TAKEOVER: Duration = crate::meta::lease::LAPSE;

/// Shorter silences than this are too close to the heartbeat interval: a
/// slow beat would hand the store to a standby while its writer lives.
pub const MIN_TAKEOVER: Duration = Duration::from_secs(3);

/// The defaults, with an empty BACKING (see [`StoreOptions::new`]).
impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            backing: PathBuf::new(),
            content: crate::blob::Content::Local,
            db_url: None,
            table_prefix: DEFAULT_TABLE_PREFIX.to_string(),
            cache_entries: DEFAULT_CACHE_ENTRIES,
            journal_retention: Retention::default(),
            initial_mode: Mode::Edit,
            capacity: None,
            collector: CollectorConfig::default(),
            max_retention: Some(DEFAULT_MAX_RETENTION),
            role: Role::Writer,
            poll: DEFAULT_POLL,
            takeover_after: DEFAULT_TAKEOVER,
            atime: Atime::Relative,
        }
    }
}

impl StoreOptions {
    /// The store at `backing`, everything else at its default.
    pub fn new(backing: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            backing: backing.into(),
            ..StoreOptions::default()
        }
    }

    pub fn db_url(&self) -> String {
        self.db_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.backing.join(".artfs/meta.db").display())
        })
    }
}
