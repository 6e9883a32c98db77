//! Counts and total latency of each operation a door serves (for
//! `/metrics`), lock-free: one atomic per figure. The core knows no door's
//! operations: the door names them (the FUSE door's table is
//! `fuse::opstats::OPS`) and times each by its index in that table.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

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
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            names: OnceLock::new(),
            count: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
            missing_objects: AtomicU64::new(0),
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
}
