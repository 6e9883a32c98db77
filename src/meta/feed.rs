//! The change feed: what each committed batch changed, numbered in commit
//! order, for replicas on other machines (docs/CLUSTER.md).
//!
//! Engines several machines share (PostgreSQL) write one row per batch
//! that touched the namespace, in the batch's own transaction, and bump a
//! counter under a row lock: the numbers are gapless and in commit order.
//! A replica asks for the rows after the last one it applied and drops
//! exactly what they name from its caches; a gap means rows were pruned
//! before it read them, and it drops every cache instead.

use std::time::Duration;

use super::Batch;

/// One committed batch, as replicas see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    /// Inodes whose row or attribute list changed (or went away).
    pub inos: Vec<u64>,
    /// Entries added, replaced or removed: (parent, name).
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Too much changed to list: drop every cache.
    pub everything: bool,
}

/// The feed after some sequence number.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The last batch's number when the page was read.
    pub head: u64,
    /// Rows after the one asked for, in order (at most the limit asked).
    pub changes: Vec<Change>,
}

/// More inodes and entries than this in one batch are recorded as
/// "everything": a replica re-reads rather than receive a huge row.
pub const MAX_LISTED: usize = 20_000;

/// How long rows are kept: a replica away longer drops every cache.
pub const KEEP: Duration = Duration::from_secs(600);

/// At most this many rows are kept, however young.
pub const KEEP_ROWS: i64 = 100_000;

/// What a batch changed, as its feed row lists it; `None` when it changed
/// nothing a replica caches (only log rows, reservations, usage).
pub fn what_changed(b: &Batch) -> Option<Change> {
    if b.inodes.is_empty() && b.dentries.is_empty() && b.xattrs.is_empty() {
        return None;
    }
    let mut inos: Vec<u64> = b
        .inodes
        .iter()
        .map(|(i, _)| *i)
        .chain(b.xattrs.iter().map(|(i, _)| *i))
        .collect();
    inos.sort_unstable();
    inos.dedup();
    if inos.len() + b.dentries.len() > MAX_LISTED {
        return Some(Change {
            everything: true,
            ..Default::default()
        });
    }
    Some(Change {
        seq: 0,
        inos,
        entries: b.dentries.iter().map(|(k, _)| k.clone()).collect(),
        everything: false,
    })
}

/// Where a replica stands after reading a page from `applied`.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Nothing new.
    Idle,
    /// These rows, in order, then stand at `to`.
    Apply(&'a [Change], u64),
    /// Rows were pruned before they were read (or one says "everything"):
    /// drop every cache, then stand at `to`.
    DropAll(u64),
}

impl Page {
    /// What a replica that applied everything up to `applied` must do.
    pub fn step(&self, applied: u64) -> Step<'_> {
        let Some(first) = self.changes.first() else {
            return if self.head > applied {
                Step::DropAll(self.head)
            } else {
                Step::Idle
            };
        };
        let last = self.changes.last().map_or(applied, |c| c.seq);
        let gapless =
            first.seq == applied + 1 && self.changes.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        if !gapless || self.changes.iter().any(|c| c.everything) {
            return Step::DropAll(last);
        }
        Step::Apply(&self.changes, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: u64) -> Change {
        Change {
            seq,
            inos: vec![seq],
            ..Default::default()
        }
    }

    #[test]
    fn a_page_says_what_to_do() {
        let idle = Page {
            head: 4,
            changes: vec![],
        };
        assert_eq!(idle.step(4), Step::Idle);
        // Rows pruned with nothing after them: the head moved past us.
        assert_eq!(idle.step(2), Step::DropAll(4));
        let p = Page {
            head: 7,
            changes: vec![change(5), change(6)],
        };
        assert_eq!(p.step(4), Step::Apply(&p.changes, 6));
        // A gap before the first row, or inside the page.
        assert_eq!(p.step(3), Step::DropAll(6));
        let holed = Page {
            head: 7,
            changes: vec![change(5), change(7)],
        };
        assert_eq!(holed.step(4), Step::DropAll(7));
        let mut all = change(5);
        all.everything = true;
        let big = Page {
            head: 5,
            changes: vec![all],
        };
        assert_eq!(big.step(4), Step::DropAll(5));
    }

    #[test]
    fn a_batch_lists_what_replicas_cache() {
        let mut b = Batch::default();
        b.journal_done.push(crate::types::journal::Update {
            id: uuid::Uuid::nil(),
            status: crate::types::journal::Status::Committed,
            outcome: None,
            error: None,
            completed_at: crate::types::Timestamp(0),
            duration_ms: None,
        });
        assert_eq!(
            what_changed(&b),
            None,
            "log rows alone change nothing cached"
        );
        b.inodes.push((5, None));
        b.xattrs.push((5, None));
        b.xattrs.push((3, None));
        b.dentries.push(((1, b"a".to_vec()), None));
        let c = what_changed(&b).unwrap();
        assert_eq!(c.inos, vec![3, 5]);
        assert_eq!(c.entries, vec![(1, b"a".to_vec())]);
        assert!(!c.everything);
        b.inodes = (0..MAX_LISTED as u64 + 1).map(|i| (i, None)).collect();
        assert!(what_changed(&b).unwrap().everything);
    }
}
