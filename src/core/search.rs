//! Full-text search over names, description, version and custom attribute
//! values (the index is kept by the metadata store in the same transaction
//! as the metadata; see migrations/sqlite/0004_search.sql). Over HTTP the
//! results are filtered by what the caller can reach ([`Fs::search_as`]).

use super::trash::in_trash;
use super::Fs;
use crate::types::error::{einval, Result};
use crate::types::Caller;

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

/// Most index rows one page examines: a query whose matches are mostly
/// hidden from the caller returns a short (even empty) page with a
/// cursor after this many, rather than scanning the whole index at once.
pub const MAX_SCAN: u64 = 10_000;

/// Largest cursor (an offset the database takes as a signed 64-bit number).
pub const MAX_CURSOR: u64 = i64::MAX as u64;

/// One page of results as a caller sees them.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub hits: Vec<Hit>,
    /// Where the next page starts (an offset into the ranked matches,
    /// hidden ones included); `None` when no match is left.
    pub next: Option<u64>,
}

fn check_query(query: &str) -> Result<&str> {
    let q = query.trim();
    if q.is_empty() || q.len() > MAX_QUERY {
        return Err(einval("search query empty or too long"));
    }
    Ok(q)
}

impl Fs {
    /// Search as `caller`: only files they can reach by path
    /// ([`Fs::reachable`]) and that are not in the trash are results; the
    /// others are skipped, not counted. `cursor` is the offset into the
    /// ranked matches where this page starts (0 first, then the previous
    /// page's `next`); a page ends after `limit` results, at the last
    /// match, or after [`MAX_SCAN`] matches examined, so following `next`
    /// visits every match exactly once. Commits what is staged first, so
    /// a search sees every change made before it.
    pub fn search_as(
        &self,
        caller: &Caller,
        query: &str,
        limit: usize,
        cursor: u64,
    ) -> Result<Page> {
        let q = check_query(query)?;
        if cursor > MAX_CURSOR {
            return Err(einval("search cursor out of range"));
        }
        let limit = limit.clamp(1, 1000);
        self.wait_committed()?;
        // Fetch a little more than a page: most matches are usually
        // visible, and one more tells whether another page exists.
        let batch = (limit + 1).max(64);
        let live = |ino: u64| -> Result<Option<Vec<u8>>> {
            Ok(self
                .reach_committed(caller, ino)?
                .filter(|r| !r.in_trash())
                .map(|r| r.path))
        };
        let mut page = Page::default();
        let mut pos = cursor;
        loop {
            let rows = self.meta.search(q, batch, pos as usize)?;
            let exhausted = rows.len() < batch;
            for (i, &(ino, rank)) in rows.iter().enumerate() {
                if page.hits.len() == limit {
                    // Full: a next page exists if a match is left that
                    // this caller would see (unknown beyond this batch).
                    let more = !exhausted || {
                        let mut any = false;
                        for &(ino, _) in &rows[i..] {
                            if live(ino)?.is_some() {
                                any = true;
                                break;
                            }
                        }
                        any
                    };
                    page.next = more.then_some(pos);
                    return Ok(page);
                }
                pos += 1;
                if let Some(path) = live(ino)? {
                    page.hits.push(Hit { ino, path, rank });
                }
            }
            if exhausted {
                return Ok(page);
            }
            if pos - cursor >= MAX_SCAN {
                page.next = Some(pos);
                return Ok(page);
            }
        }
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
            if in_trash(&path) {
                continue;
            }
            out.push(Hit { ino, path, rank });
        }
    }
    Ok(out)
}
