//! Counts and total latency of each operation a door serves (for
//! `/metrics`), lock-free: one atomic per figure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::types::error::{errno_index, ERRNO_LABELS};

/// The operations counted (the FUSE requests the daemon serves; reads and
/// writes through passthrough never reach it and are not counted).
pub const OPS: [&str; 33] = [
    "lookup",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "create",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "releasedir",
    "readdirplus",
    "fsyncdir",
    "statfs",
    "ioctl",
    "setxattr",
    "getxattr",
    "listxattr",
    "removexattr",
    "access",
    "fallocate",
    "lseek",
    "other",
];

pub struct OpStats {
    count: [AtomicU64; OPS.len()],
    nanos: [AtomicU64; OPS.len()],
    /// Opens and hashes refused because a file's object was missing or
    /// short (`artfs_missing_objects_total`).
    missing_objects: AtomicU64,
    /// Error replies per operation and errno (`artfs_fuse_errors_total`).
    errors: [[AtomicU64; ERRNO_LABELS.len()]; OPS.len()],
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            count: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
            missing_objects: AtomicU64::new(0),
            errors: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// The index of `op` in [`OPS`] ("other" if unknown).
pub const fn op_index(op: &str) -> usize {
    let mut i = 0;
    while i < OPS.len() {
        if eq(OPS[i].as_bytes(), op.as_bytes()) {
            return i;
        }
        i += 1;
    }
    OPS.len() - 1
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
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
    /// Time an operation until the returned guard drops. `op` is one of
    /// [`OPS`] (looked up once per call site and remembered by the caller's
    /// `static`, see [`op_index`]).
    pub fn time(&self, op: &str) -> OpTimer<'_> {
        self.time_at(op_index(op))
    }

    /// As [`OpStats::time`], by index into [`OPS`].
    pub fn time_at(&self, i: usize) -> OpTimer<'_> {
        let i = i.min(OPS.len() - 1);
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

    /// Count an error reply to operation `op` (an index into [`OPS`]).
    pub fn error(&self, op: usize, errno: i32) {
        let op = op.min(OPS.len() - 1);
        self.errors[op][errno_index(errno)].fetch_add(1, Ordering::Relaxed);
    }

    /// (operation, errno name, count) for every pair seen.
    pub fn errors(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut out = Vec::new();
        for (i, op) in OPS.iter().enumerate() {
            for (j, (_, name)) in ERRNO_LABELS.iter().enumerate() {
                let n = self.errors[i][j].load(Ordering::Relaxed);
                if n > 0 {
                    out.push((*op, *name, n));
                }
            }
        }
        out
    }

    /// (operation, count, total seconds) for every operation seen.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, f64)> {
        OPS.iter()
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

    #[test]
    fn operations_are_counted_under_their_names() {
        assert_eq!(OPS[op_index("lookup")], "lookup");
        assert_eq!(OPS[op_index("readdirplus")], "readdirplus");
        assert_eq!(OPS[op_index("no-such-op")], "other");
        let s = OpStats::default();
        drop(s.time("getattr"));
        drop(s.time_at(op_index("getattr")));
        drop(s.time("write"));
        let snap = s.snapshot();
        assert_eq!(
            snap.iter().map(|(o, n, _)| (*o, *n)).collect::<Vec<_>>(),
            vec![("getattr", 2), ("write", 1)]
        );
    }

    #[test]
    fn errors_are_counted_by_operation_and_errno_name() {
        let s = OpStats::default();
        s.error(op_index("lookup"), libc::ENOENT);
        s.error(op_index("lookup"), libc::ENOENT);
        s.error(op_index("open"), libc::EIO);
        s.error(op_index("open"), libc::EHOSTDOWN);
        assert_eq!(
            s.errors(),
            vec![
                ("lookup", "ENOENT", 2),
                ("open", "EIO", 1),
                ("open", "other", 1)
            ]
        );
    }
}
