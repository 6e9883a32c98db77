//! `artfs db copy`: move one store's metadata to another database (SQLite
//! to PostgreSQL as a store outgrows one machine, or back), without a
//! rebuild: every inode, entry (readdir cookies kept), attribute, the
//! policy row with its usage, the inode reservation and the pending log
//! rows (so recovery on the new tables finishes what a crash left). The
//! log's settled history stays behind: it describes the old tables.
//!
//! The target must hold no store; the copy is one batch, so it lands whole
//! or not at all, and is then compared with the source.

use std::collections::BTreeMap;

use crate::meta::{Batch, MetaStore, XattrList};
use crate::types::error::{Error, Result};
use crate::types::journal;

/// What was copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub inodes: usize,
    pub entries: usize,
    pub attributes: usize,
    pub pending: usize,
}

/// Inodes per `xattrs_of` call (bounded statements).
const XATTR_CHUNK: usize = 1000;

/// Copy the store in `from` into the empty tables of `to`.
pub fn copy(from: &dyn MetaStore, to: &dyn MetaStore) -> Result<Copied> {
    let Some((store_id, backing)) = from.store_identity()? else {
        return Err(Error::meta("the source tables hold no store"));
    };
    if let Some((other, at)) = to.store_identity()? {
        return Err(Error::meta(format!(
            "the target tables already hold store {other} (BACKING {at}); copy into empty tables \
             (another database, or another --to-prefix)"
        )));
    }
    let counters = from.counters()?;
    let config = from.config()?;
    let inodes = from.all_inodes()?;
    let dentries = from.all_dentries()?;
    let owners = from.xattr_owners()?;
    let mut xattrs: BTreeMap<u64, XattrList> = BTreeMap::new();
    for chunk in owners.chunks(XATTR_CHUNK) {
        for (ino, name, value) in from.xattrs_of(chunk)? {
            xattrs.entry(ino).or_default().push((name, value));
        }
    }
    let pending = from.pending_journal()?;

    let out = Copied {
        inodes: inodes.len(),
        entries: dentries.len(),
        attributes: xattrs.values().map(Vec::len).sum(),
        pending: pending.len(),
    };
    let mut batch = Batch {
        ino_reserved: Some(counters.ino_reserved.max(counters.max_ino + 1)),
        ..Batch::default()
    };
    if let Some(c) = config {
        batch.usage_delta = (c.used_bytes as i64, c.file_count as i64);
        batch.config = Some(c);
    }
    batch.inodes = inodes.into_iter().map(|i| (i.ino, Some(i))).collect();
    batch.dentries = dentries
        .into_iter()
        .map(|(parent, name, d)| ((parent, name), Some(d)))
        .collect();
    batch.xattrs = xattrs.into_iter().map(|(i, x)| (i, Some(x))).collect();
    batch.journal = pending;
    let mut note = journal::Record::new(
        journal::Op::Rebuild,
        journal::Status::Committed,
        None,
        serde_json::json!({ "copied_from": "another database", "inodes": out.inodes,
                            "entries": out.entries }),
    );
    note.completed_at = Some(crate::types::Timestamp::now());
    batch.journal.push(note);

    to.init_identity(&store_id, &backing, batch.ino_reserved.unwrap_or(0))?;
    to.apply(&batch)?;
    to.sync()?;
    verify(from, to, &out)?;
    Ok(out)
}

/// The target holds what the source does.
fn verify(from: &dyn MetaStore, to: &dyn MetaStore, copied: &Copied) -> Result<()> {
    let differs = |what: &str, a: String, b: String| {
        Error::meta(format!(
            "the copy differs from the source in {what}: {a} vs {b}"
        ))
    };
    let sorted = |mut v: Vec<(u64, Vec<u8>, crate::meta::Dentry)>| {
        v.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
        v
    };
    let (a, b) = (from.all_inodes()?, to.all_inodes()?);
    if a != b {
        return Err(differs("inodes", a.len().to_string(), b.len().to_string()));
    }
    let (a, b) = (sorted(from.all_dentries()?), sorted(to.all_dentries()?));
    if a != b {
        return Err(differs("entries", a.len().to_string(), b.len().to_string()));
    }
    let owners = to.xattr_owners()?;
    let n: usize = owners
        .chunks(XATTR_CHUNK)
        .map(|c| to.xattrs_of(c).map(|r| r.len()))
        .sum::<Result<usize>>()?;
    if n != copied.attributes {
        return Err(differs(
            "attributes",
            copied.attributes.to_string(),
            n.to_string(),
        ));
    }
    let (a, b) = (from.config()?, to.config()?);
    let usage = |c: &Option<crate::meta::StoreConfig>| {
        c.as_ref()
            .map(|c| (c.mode.clone(), c.capacity, c.used_bytes, c.file_count))
    };
    if usage(&a) != usage(&b) {
        return Err(differs(
            "policy and usage",
            format!("{:?}", usage(&a)),
            format!("{:?}", usage(&b)),
        ));
    }
    Ok(())
}
