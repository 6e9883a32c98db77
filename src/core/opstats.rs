//! Counts and total latency of each operation a door serves (for
//! `/metrics`), lock-free: one atomic per figure. The core knows no door's
//! operations: the door names them (the FUSE door's table is
//! `fuse::opstats::OPS`) and times each by its index in that table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::types::error::{errno_index, ERRNO_LABELS};

/// Most operations one door may name.
pub const MAX_OPS: usize = 64;

pub struct OpStats {
    /// The door's operation names, fixed by the first operation timed.
    names: OnceLock<&'static [&'static str]>,
    count: [AtomicU64; MAX_OPS],
    nanos: [AtomicU64; MAX_OPS],
    /// Opens and hashes refused because a file's object was missing or
    /// short (`artfs_missing_objects_total`).
    missing_objects: AtomicU64,
    /// Error replies per operation and errno (`artfs_fuse_errors_total`).
    errors: [[AtomicU64; ERRNO_LABELS.len()]; MAX_OPS],
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            names: OnceLock::new(),
            count: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
            missing_objects: AtomicU64::new(0),
            errors: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// Records one operation when dropped.
pub struct OpTimer<'a> {
    stats: &'a OpStats,
    i: usize,
    start: Instant,
}

impl Drop for OpTimer<'_> {
    fn drop(&mut self) {
        let ns = self.start.elapsed().as_nanos() as u64;
        self.stats.count[self.i].fetch_add(1, Ordering::Relaxed);
        self.stats.nanos[self.i].fetch_add(ns, Ordering::Relaxed);
    }
}

impl OpStats {
    /// Time operation `names[i]` until the returned guard drops. `names` is
    /// the door's table (at most [`MAX_OPS`] names, the last one the
    /// catch-all); the first call fixes it. An index past its end counts
    /// under the last name.
    pub fn start(&self, names: &'static [&'static str], i: usize) -> OpTimer<'_> {
        let names = self
            .names
            .get_or_init(|| &names[..names.len().min(MAX_OPS)]);
        let i = i.min(names.len().saturating_sub(1));
        OpTimer {
            stats: self,
            i,
            start: Instant::now(),
        }
    }

    /// Count an access refused because a file's object is missing or short.
    pub fn missing_object(&self) {
        self.missing_objects.fetch_add(1, Ordering::Relaxed);
    }

    /// Accesses refused so far because an object was missing or short.
    pub fn missing_objects(&self) -> u64 {
        self.missing_objects.load(Ordering::Relaxed)
    }

    /// Count an error reply to operation `names[op]` (the door's table, as
    /// for [`OpStats::start`]).
    pub fn error(&self, names: &'static [&'static str], op: usize, errno: i32) {
        let names = self
            .names
            .get_or_init(|| &names[..names.len().min(MAX_OPS)]);
        let op = op.min(names.len().saturating_sub(1));
        self.errors[op][errno_index(errno)].fetch_add(1, Ordering::Relaxed);
    }

    /// (operation, errno name, count) for every pair seen.
    pub fn errors(&self) -> Vec<(&'static str, &'static str, u64)> {
        let names = self.names.get().copied().unwrap_or_default();
        let mut out = Vec::new();
        for (i, op) in names.iter().enumerate() {
            for (j, (_, name)) in ERRNO_LABELS.iter().enumerate() {
                let n = self.errors[i][j].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((*op, *name, n));
                }
            }
        }
        out
    }

    /// (operation, count, total seconds) for every operation seen, in the
    /// door's order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, f64)> {
        let names = self.names.get().copied().unwrap_or_default();
        names
            .iter()
            .enumerate()
            .filter_map(|(i, op)| {
                let n = self.count[i].load(Ordering::Relaxed);
                (n > 0).then(|| (*op, n, self.nanos[i].load(Ordering::Relaxed) as f64 / 1e9))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["get", "put", "other"];

    #[test]
    fn operations_are_counted_under_the_door_names() {
        let s = OpStats::default();
        assert!(s.snapshot().is_empty());
        drop(s.start(NAMES, 0));
        drop(s.start(NAMES, 0));
        drop(s.start(NAMES, 1));
        drop(s.start(NAMES, 99));
        let snap = s.snapshot();
        assert_eq!(
            snap.iter().map(|(o, n, _)| (*o, *n)).collect::<Vec<_>>(),
            vec![("get", 2), ("put", 1), ("other", 1)]
        );
    }

    #[test]
    fn errors_are_counted_by_operation_and_errno_name() {
        const OPS: &[&str] = &["lookup", "open", "other"];
        let s = OpStats::default();
        s.error(OPS, 0, libc::ENOENT);
        s.error(OPS, 0, libc::ENOENT);
        s.error(OPS, 1, libc::EIO);
        s.error(OPS, 1, libc::EHOSTDOWN);
        s.error(OPS, 7, libc::EIO);
        assert_eq!(
            s.errors(),
            vec![
                ("lookup", "ENOENT", 2),
                ("open", "EIO", 1),
                ("open", "other", 1),
                ("other", "EIO", 1)
            ]
        );
    }
}
