//! How to open a store ([`StoreOptions`]): plain data whose [`Default`] is
//! the single home of the store's defaults. `config.rs` builds its
//! `[store]`, `[policy]` and cache defaults from it (a test there fails if
//! the two drift apart).

use std::path::PathBuf;

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
    pub backing: PathBuf,
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
}

/// The defaults, with an empty BACKING (see [`StoreOptions::new`]).
impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            backing: PathBuf::new(),
            db_url: None,
            table_prefix: DEFAULT_TABLE_PREFIX.to_string(),
            cache_entries: DEFAULT_CACHE_ENTRIES,
            journal_retention: Retention::default(),
            initial_mode: Mode::Edit,
            capacity: None,
            collector: CollectorConfig::default(),
            max_retention: Some(DEFAULT_MAX_RETENTION),
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
