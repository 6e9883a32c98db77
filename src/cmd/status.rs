//! `artfs status`: what a store is and how it is doing, in one screen (or
//! one JSON object): mode, capacity and use, who serves it, the writer's
//! lease (PostgreSQL), the intent log's backlog, files still unhashed and
//! the last fsck and scrub results (kept by [`record`]).
//!
//! Read-only and safe while mounted: it reads the tables and probes the
//! store lock through /proc/locks, never taking it (a mount starting at the
//! same moment must not find it held).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::meta::{CheckResult, LeaseState, MetaStore};
use crate::types::error::Result;
use crate::types::Timestamp;

/// Everything `artfs status` shows. The JSON field names are stable
/// (docs/OPERATIONS.md lists them).
#[derive(Debug, Serialize)]
pub struct Status {
    pub backing: PathBuf,
    pub store_id: Option<String>,
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// The database URL, password redacted.
    pub db: String,
    pub table_prefix: String,
    /// None before the first mount.
    pub mode: Option<String>,
    pub mode_changed_at: Option<String>,
    /// None: no capacity set.
    pub capacity_bytes: Option<u64>,
    pub used_bytes: u64,
    /// Of the capacity; None without one.
    pub used_percent: Option<f64>,
    pub files: u64,
    pub inodes: u64,
    /// A live artfs daemon serves the store from this machine.
    pub mounted: bool,
    pub mountpoint: Option<PathBuf>,
    /// A mount of the store left by a killed daemon (no process holds the
    /// lock): its users get ENOTCONN until it is detached.
    pub stale_mountpoint: Option<PathBuf>,
    /// The process holding the store lock (a daemon, or a repairing
    /// command), on this machine.
    pub lock_pid: Option<u32>,
    /// The writer's lease row (PostgreSQL; None on SQLite, whose guard is
    /// the lock above).
    pub lease: Option<Lease>,
    /// Intent log rows still pending (non-zero while operations run, or
    /// after a crash until the next mount or `fsck --repair`).
    pub log_pending: u64,
    /// Intent log rows per status.
    pub log_rows: BTreeMap<String, u64>,
    /// Files with no recorded SHA-256 yet.
    pub unhashed_files: u64,
    pub last_fsck: Option<Check>,
    pub last_scrub: Option<Check>,
    /// The change feed's last row (PostgreSQL; docs/CLUSTER.md).
    pub feed_head: Option<u64>,
    /// The nodes serving the store, as the Redis registry lists them
    /// (`--redis`; None without it).
    pub nodes: Option<Vec<crate::cluster::NodeRecord>>,
    /// Why the registry could not be read.
    pub nodes_error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Lease {
    /// False once released at a clean unmount.
    pub held: bool,
    pub host: String,
    pub pid: i64,
    pub epoch: u64,
    /// Seconds since the holder's last heartbeat (or the release).
    pub beat_age_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub finished_at: String,
    /// Seconds since then; None when the time does not parse.
    pub age_secs: Option<f64>,
    pub outcome: String,
    pub problems: u64,
    pub summary: String,
}

impl From<CheckResult> for Check {
    fn from(c: CheckResult) -> Check {
        let age_secs = Timestamp::parse_rfc3339(&c.finished_at)
            .ok()
            .map(|t| (Timestamp::now().0 - t.0) as f64 / 1e9);
        Check {
            finished_at: c.finished_at,
            age_secs,
            outcome: c.outcome,
            problems: c.problems,
            summary: c.summary,
        }
    }
}

impl From<LeaseState> for Lease {
    fn from(l: LeaseState) -> Lease {
        Lease {
            held: !l.holder.is_empty(),
            host: l.host,
            pid: l.pid,
            epoch: l.epoch,
            beat_age_secs: l.beat_age_secs,
        }
    }
}

/// Gather the status of the store at `backing` (canonical) from its
/// opened tables.
pub fn gather(meta: &dyn MetaStore, backing: &Path, db_url: &str, prefix: &str) -> Result<Status> {
    let config = meta.config()?;
    let counts: BTreeMap<String, u64> = meta.journal_counts()?.into_iter().collect();
    let mut checks: BTreeMap<String, Check> = meta
        .checks()?
        .into_iter()
        .map(|c| (c.kind.clone(), Check::from(c)))
        .collect();
    let lock_pid = lock_holder(backing);
    // Listed in mountinfo is not proof of life: only a lock holder serves.
    let listed = crate::core::serving_mount(backing);
    let (mountpoint, stale) = match lock_pid {
        Some(_) => (listed, None),
        None => (None, listed),
    };
    let (capacity, used, files) = config
        .as_ref()
        .map_or((None, 0, 0), |c| (c.capacity, c.used_bytes, c.file_count));
    Ok(Status {
        backing: backing.to_path_buf(),
        store_id: meta.store_identity()?.map(|(id, _)| id),
        engine: if crate::meta::is_postgres_url(db_url) {
            "postgres"
        } else {
            "sqlite"
        },
        db: crate::meta::redact(db_url),
        table_prefix: prefix.to_string(),
        mode: config.as_ref().map(|c| c.mode.clone()),
        mode_changed_at: config.as_ref().map(|c| c.mode_changed_at.clone()),
        capacity_bytes: capacity,
        used_bytes: used,
        used_percent: capacity
            .filter(|&c| c > 0)
            .map(|c| (used as f64 * 1000.0 / c as f64).round() / 10.0),
        files,
        inodes: meta.inode_count()?,
        mounted: mountpoint.is_some(),
        mountpoint,
        stale_mountpoint: stale,
        lock_pid,
        lease: meta.lease_state()?.map(Lease::from),
        log_pending: counts.get("pending").copied().unwrap_or(0),
        log_rows: counts,
        unhashed_files: meta.unhashed_count()?,
        last_fsck: checks.remove("fsck"),
        last_scrub: checks.remove("scrub"),
        feed_head: meta.changes_since(u64::MAX - 1, 1)?.map(|p| p.head),
        nodes: None,
        nodes_error: None,
    })
}

/// The pid holding the store lock under `backing`, if any process holds
/// it: read from /proc/locks (a flock on the lock file's inode), so the
/// lock is never taken to find out. The pid is the one the holder wrote
/// into the lock file, else the one the kernel lists.
pub fn lock_holder(backing: &Path) -> Option<u32> {
    let path = backing.join(".artfs/lock");
    let md = std::fs::metadata(&path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let kernel_pid = held_by(&locks, md.dev(), md.ino())?;
    let written = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    Some(written.unwrap_or(kernel_pid))
}

/// The pid of a granted FLOCK on (dev, ino) in /proc/locks text. Lines:
/// `1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF`; waiters (`1: ->
/// FLOCK ...`) hold nothing.
fn held_by(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want_dev = (libc::major(dev), libc::minor(dev));
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        let pid: u32 = f.get(4)?.parse().ok()?;
        let mut id = f.get(5)?.split(':');
        let major = u32::from_str_radix(id.next()?, 16).ok()?;
        let minor = u32::from_str_radix(id.next()?, 16).ok()?;
        let inode: u64 = id.next()?.parse().ok()?;
        ((major, minor) == want_dev && inode == ino).then_some(pid)
    })
}

/// Keep a check's result for `artfs status`. Recording is a convenience:
/// a failure is a warning, never the command's failure.
pub fn record(meta: &dyn MetaStore, kind: &str, problems: usize, repaired: bool, summary: &str) {
    let result = CheckResult {
        kind: kind.into(),
        finished_at: Timestamp::now().to_rfc3339(),
        outcome: match (problems, repaired) {
            (0, false) => "clean",
            (0, true) => "repaired",
            _ => "problems",
        }
        .into(),
        problems: problems as u64,
        summary: summary.chars().take(500).collect(),
    };
    if let Err(e) = meta.record_check(&result) {
        tracing::warn!(error = %e, "could not record the {kind} result for `artfs status`");
    }
}

/// A duration for people: `42 s`, `5 min`, `3 h`, `2 d`.
pub fn ago(secs: f64) -> String {
    let s = secs.max(0.0);
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.0} h", s / 3600.0)
    } else {
        format!("{:.0} d", s / 86_400.0)
    }
}

impl Status {
    /// The human form: one aligned `key: value` line each.
    pub fn lines(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("store", self.backing.display().to_string()),
            ("store id", self.store_id.clone().unwrap_or("-".into())),
            (
                "database",
                format!("{} (prefix {})", self.db, self.table_prefix),
            ),
            (
                "mode",
                match (&self.mode, &self.mode_changed_at) {
                    (Some(m), Some(at)) => format!("{m} (since {at})"),
                    _ => "none yet (never mounted)".into(),
                },
            ),
            (
                "capacity",
                self.capacity_bytes.map_or("unlimited".into(), bytes),
            ),
            (
                "used",
                match self.used_percent {
                    Some(p) => format!("{} ({p:.1}% of capacity)", bytes(self.used_bytes)),
                    None => bytes(self.used_bytes),
                },
            ),
            ("files", self.files.to_string()),
            ("inodes", self.inodes.to_string()),
            (
                "mounted",
                match (&self.mountpoint, self.lock_pid) {
                    _ if self.stale_mountpoint.is_some() => format!(
                        "no, but a dead daemon's mount remains at {} (detach it: \
                         fusermount3 -u, or artfs mount --force)",
                        self.stale_mountpoint.as_ref().expect("matched").display()
                    ),
                    (Some(m), Some(pid)) => format!("yes, at {} by pid {pid}", m.display()),
                    (_, Some(pid)) => {
                        format!("no (pid {pid} holds the store lock: a command or a daemon)")
                    }
                    _ => "no".into(),
                },
            ),
        ];
        if self.engine == "postgres" {
            out.push((
                "writer lease",
                match &self.lease {
                    None => "never claimed".into(),
                    Some(l) if l.held => format!(
                        "held by pid {} on host {}, epoch {}, beat {} ago",
                        l.pid,
                        l.host,
                        l.epoch,
                        ago(l.beat_age_secs)
                    ),
                    Some(l) => format!(
                        "released (last pid {} on host {}, epoch {}, {} ago)",
                        l.pid,
                        l.host,
                        l.epoch,
                        ago(l.beat_age_secs)
                    ),
                },
            ));
        }
        if let Some(head) = self.feed_head {
            out.push(("change feed", format!("at row {head}")));
        }
        if let Some(e) = &self.nodes_error {
            out.push(("nodes", format!("unknown: {e}")));
        }
        for n in self.nodes.iter().flatten() {
            let follows = if n.role == "writer" {
                String::new()
            } else {
                format!(", feed row {} ({} behind)", n.feed_applied, n.feed_behind)
            };
            let api = n
                .api_url
                .as_ref()
                .map(|u| format!(", API {u}"))
                .unwrap_or_default();
            out.push((
                "node",
                format!(
                    "{} pid {} on {} at {} (mode {}, since {}{follows}{api})",
                    n.role, n.pid, n.host, n.mountpoint, n.mode, n.started_at
                ),
            ));
        }
        out.push(("pending log rows", self.log_pending.to_string()));
        out.push(("unhashed files", self.unhashed_files.to_string()));
        out.push(("last fsck", check_line(&self.last_fsck)));
        out.push(("last scrub", check_line(&self.last_scrub)));
        out
    }

    /// The human form as text, keys aligned.
    pub fn render(&self) -> String {
        let lines = self.lines();
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
        let mut s = String::new();
        for (k, v) in lines {
            s.push_str(&format!("{:<width$} {v}\n", format!("{k}:")));
        }
        s
    }
}

fn bytes(n: u64) -> String {
    format!("{n} bytes ({})", indicatif::HumanBytes(n))
}

fn check_line(c: &Option<Check>) -> String {
    match c {
        None => "never".into(),
        Some(c) => {
            let ago = c
                .age_secs
                .map(|a| format!(", {} ago", ago(a)))
                .unwrap_or_default();
            let n = if c.outcome == "problems" {
                format!(" ({} problems)", c.problems)
            } else {
                String::new()
            };
            format!("{}{n} at {}{ago}: {}", c.outcome, c.finished_at, c.summary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_are_read() {
        let dev = libc::makedev(0, 0x2a);
        let text = "1: POSIX  ADVISORY  WRITE 9 00:2a:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 1234 00:2a:77 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 999 00:2a:77 0 EOF\n";
        assert_eq!(held_by(text, dev, 77), Some(1234));
        assert_eq!(held_by(text, dev, 78), None);
        assert_eq!(held_by(text, libc::makedev(8, 1), 77), None);
        assert_eq!(held_by("", dev, 77), None);
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(ago(3.2), "3 s");
        assert_eq!(ago(600.0), "10 min");
        assert_eq!(ago(3.0 * 3600.0), "3 h");
        assert_eq!(ago(5.0 * 86_400.0), "5 d");
    }
}
