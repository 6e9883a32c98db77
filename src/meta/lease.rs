//! The writer's lease: one daemon (or exclusive command) writes a store at
//! a time, across machines.
//!
//! A SQLite store lives in BACKING and is guarded by the flock there. A
//! PostgreSQL store is shared by every machine that reaches the database,
//! so its guard is a row (`{p}_lease`) holding an epoch, who holds it and
//! a heartbeat:
//! - **claim**: a free lease, one released at a clean unmount, one whose
//!   heartbeat is older than [`LAPSE`] (the database's clock on both
//!   sides, so hosts' clocks never matter) or one held by a dead process
//!   on this host is taken at once, with the epoch raised. A held lease is
//!   watched: a heartbeat that moves means a live writer (refused, naming
//!   it); one that does not move for [`LAPSE`] means a dead one (taken).
//! - **heartbeat**: every [`BEAT`], only while the epoch is still ours; a
//!   holder that finds it changed has been fenced.
//! - **fencing**: every batch checks the epoch inside its own transaction
//!   (under a row lock a takeover must wait for), so a holder that lost
//!   the lease (paused, partitioned) can never commit again.

use std::time::Duration;

/// How long a heartbeat may be missing before the lease is taken over.
/// A killed writer's store is served again within about this long.
pub const LAPSE: Duration = Duration::from_secs(6);

/// How often the holder renews the lease: several beats per lapse, so a
/// slow beat or two never loses it.
pub const BEAT: Duration = Duration::from_secs(2);

/// Who asks for the lease.
#[derive(Debug, Clone)]
pub struct Holder {
    /// Unique per process (a pid alone repeats across hosts and reboots).
    pub id: String,
    pub host: String,
    pub pid: u32,
}

impl Holder {
    /// This process.
    pub fn me() -> Holder {
        Holder {
            id: uuid::Uuid::now_v7().to_string(),
            host: hostname(),
            pid: std::process::id(),
        }
    }

    /// Whether this holder's process is gone (only knowable on our host).
    pub fn is_dead_here(host: &str, pid: i64) -> bool {
        if host != hostname() || pid <= 0 || pid > i32::MAX as i64 {
            return false;
        }
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        matches!(
            nix::sys::signal::kill(pid, None),
            Err(nix::errno::Errno::ESRCH)
        )
    }
}

/// This machine's name (the kernel's, as `uname -n` says).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
