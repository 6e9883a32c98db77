//! The FUSE door's operations as the per-operation statistics name them
//! (`artfs_fuse_ops_total{op=...}` and `artfs_fuse_op_seconds_total` on
//! `/metrics`): the core counts, this door names (see `core::opstats`).

pub use crate::core::opstats::OpTimer;
use crate::core::opstats::{OpStats, MAX_OPS};

/// The operations counted (the FUSE requests the daemon serves; reads and
/// writes through passthrough never reach it and are not counted). The
/// last is the catch-all.
pub const OPS: [&str; 35] = [
    "lookup",
    "getattr",
    "statx",
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
    "tmpfile",
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

const _: () = assert!(OPS.len() <= MAX_OPS);

/// The index of `op` in [`OPS`] ("other" if unknown); `const`, so each
/// call site looks its name up at compile time.
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

/// Timing a FUSE request by its index in [`OPS`].
pub trait FuseOps {
    /// Time request `OPS[i]` until the returned guard drops.
    fn time_at(&self, i: usize) -> OpTimer<'_>;
}

impl FuseOps for OpStats {
    fn time_at(&self, i: usize) -> OpTimer<'_> {
        self.start(&OPS, i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_under_their_names() {
        assert_eq!(OPS[op_index("lookup")], "lookup");
        assert_eq!(OPS[op_index("readdirplus")], "readdirplus");
        assert_eq!(OPS[op_index("no-such-op")], "other");
        let s = OpStats::default();
        drop(s.time_at(op_index("getattr")));
        drop(s.time_at(op_index("getattr")));
        drop(s.time_at(op_index("write")));
        let snap = s.snapshot();
        assert_eq!(
            snap.iter().map(|(o, n, _)| (*o, *n)).collect::<Vec<_>>(),
            vec![("getattr", 2), ("write", 1)]
        );
    }
}
