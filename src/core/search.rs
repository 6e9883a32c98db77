//! Full-text search over names, description, version and custom attribute
//! values (the index is kept by the metadata store in the same transaction
//! as the metadata; see migrations/sqlite/0004_search.sql).

use super::error::{einval, Result};
use super::Fs;

/// One search result.
#[derive(Clone, Debug)]
pub struct Hit {
    pub ino: u64,
    /// Path from the root (bytes; names need not be UTF-8).
    pub path: Vec<u8>,
    /// BM25 rank: lower is better.
    pub rank: f64,
}

/// Longest query accepted.
pub const MAX_QUERY: usize = 1024;

impl Fs {
    /// Search; `offset` pages through results. Commits what is staged
    /// first, so a search sees every change made before it.
    pub fn search(&self, query: &str, limit: usize, offset: usize) -> Result<Vec<Hit>> {
        let q = query.trim();
        if q.is_empty() || q.len() > MAX_QUERY {
            return Err(einval("search query empty or too long"));
        }
        self.flush()?;
        search_in(self.meta.as_ref(), q, limit, offset)
    }
}

/// Search a metadata store directly (the offline `artfs search`).
pub fn search_in(
    meta: &dyn crate::meta::MetaStore,
    query: &str,
    limit: usize,
    offset: usize,
) -> Result<Vec<Hit>> {
    let mut out = Vec::new();
    for (ino, rank) in meta.search(query, limit.clamp(1, 1000), offset)? {
        // An inode without a name (unlinked while open) or in the trash
        // is not a result.
        if let Some(path) = meta.path_of(ino)? {
            if path.starts_with(b"/.trash/") {
                continue;
            }
            out.push(Hit { ino, path, rank });
        }
    }
    Ok(out)
}
