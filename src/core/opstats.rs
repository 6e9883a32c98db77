//! Counts and total latency of each operation a door serves (for
//! `/metrics`), lock-free: one atomic per figure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The operations counted (the FUSE requests the daemon serves; reads and
/// writes through passthrough never reach it and are not counted).
pub const OPS: [&str; 32] = [
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
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            count: std::array::from_fn(|_| AtomicU64::new(0)),
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
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
    /// Time an operation until the returned guard drops.
    pub fn time(&self, op: &str) -> OpTimer<'_> {
        let i = OPS.iter().position(|o| *o == op).unwrap_or(OPS.len() - 1);
        OpTimer {
            stats: self,
            i,
            start: Instant::now(),
        }
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
