//! Trash and expiry (issue 6).
//!
//! - **Trash**: in edit mode with `trash_days > 0`, unlinking the last name
//!   of a regular file that nobody has open moves it to
//!   `/.trash/<uid>/<when>/<original path>` instead of deleting it (layout,
//!   permissions, purge and space: see `trash`). `/.trash` is hidden from
//!   the root's listing, reachable by path, and a file or tree is
//!   restored by renaming it out.
//! - **Expiry**: a regular file whose `user.artstore.expires_at` has passed
//!   is removed (all its names), unless `retention_until` still holds it.
//!   New files inherit an expiry from `user.artstore.default_ttl` (seconds)
//!   on their directory; new directories inherit that attribute.
//! - **The collector**: a thread that, every `interval`, purges trash older
//!   than `trash_days` (with the directories it leaves empty) and removes
//!   expired files, at most `max_per_sweep` of them, each as an ordinary
//!   logged unlink or rmdir (user `collector`), so a sweep cut short is
//!   simply done again.

use std::sync::Weak;
use std::time::Duration;

use super::archive_attrs::{self, PREFIX};
use super::{Fs, Mutation};
use crate::types::error::Result;
use crate::types::{Kind, Timestamp};

pub use super::trash::TRASH;

/// Collector settings (plain data with defaults).
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Days a file stays in the trash; 0 disables the trash.
    pub trash_days: f64,
    pub interval: Duration,
    /// Most removals per sweep (a rate limit).
    pub max_per_sweep: usize,
    /// Added to the clock the collector judges ages by (tests).
    pub clock_skew: Duration,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            trash_days: 1.0,
            interval: Duration::from_secs(60),
            max_per_sweep: 1000,
            clock_skew: Duration::ZERO,
        }
    }
}

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub purged: usize,
    pub expired: usize,
}

fn attr_name(n: &str) -> Vec<u8> {
    [PREFIX, n.as_bytes()].concat()
}

impl Fs {
    fn collector_now(&self) -> Timestamp {
        Timestamp(Timestamp::now().0 + self.collector.clock_skew.as_nanos() as i64)
    }

    /// New files inherit an expiry from their directory's default TTL.
    pub(crate) fn inherited_expiry(
        &self,
        tx: &mut Mutation<'_>,
        parent: u64,
        kind: Kind,
        now: Timestamp,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let xattrs = tx.xattrs(parent)?;
        let ttl_name = attr_name("default_ttl");
        let Some((_, ttl)) = xattrs.iter().find(|(n, _)| *n == ttl_name) else {
            return Ok(Vec::new());
        };
        Ok(match kind {
            Kind::Dir => vec![(ttl_name, ttl.clone())],
            Kind::File => {
                let secs: i64 = std::str::from_utf8(ttl)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                if secs <= 0 {
                    return Ok(Vec::new());
                }
                let at = Timestamp(now.0.saturating_add(secs.saturating_mul(1_000_000_000)));
                vec![(attr_name("expires_at"), at.to_rfc3339().into_bytes())]
            }
            _ => Vec::new(),
        })
    }

    /// One collector pass: purge old trash, remove expired files.
    pub fn sweep(&self) -> Result<Swept> {
        let mut done = Swept::default();
        let mode = self.mode();
        if !matches!(mode, super::policy::Mode::Edit | super::policy::Mode::Rw) {
            return Ok(done);
        }
        let now = self.collector_now();
        let budget = self.collector.max_per_sweep;
        self.wait_committed()?;
        // Trash older than trash_days.
        if self.collector.trash_days > 0.0 {
            self.secure_trash()?;
            let keep_ns = (self.collector.trash_days * 86_400e9) as i64;
            let p = self.trash_empty(Some(Timestamp(now.0 - keep_ns)), budget)?;
            done.purged = (p.files + p.dirs) as usize;
        }
        // Expired files.
        for (ino, value) in self.meta.xattr_values(&attr_name("expires_at"))? {
            if done.purged + done.expired >= budget {
                break;
            }
            let due = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| Timestamp::parse_rfc3339(v.trim()).ok());
            if due.is_none_or(|d| d > now) {
                continue;
            }
            let xattrs = self.xattr_list(ino)?;
            if archive_attrs::retained_until(&xattrs, now).is_some() {
                continue;
            }
            for (_, parent, name) in self.meta.links_of(&[ino])? {
                match self.remove_for_good(parent, &name, "expired") {
                    Ok(_) => {}
                    Err(err) => tracing::warn!(ino, error = %err, "could not remove expired file"),
                }
            }
            done.expired += 1;
        }
        if done != Swept::default() {
            tracing::info!(
                purged = done.purged,
                expired = done.expired,
                "collector sweep"
            );
        }
        Ok(done)
    }
}

/// Run sweeps every `interval` until the filesystem goes away; every
/// second in between, keep BACKING's reserve free of trash (writes through
/// FUSE passthrough fill it without the daemon seeing them).
pub fn run(fs: Weak<Fs>, interval: Duration, stop: &super::workers::Stop) {
    super::background_thread();
    let tick = interval.min(Duration::from_secs(1));
    let mut last = std::time::Instant::now();
    while stop.sleep(tick) {
        let Some(fs) = fs.upgrade() else { return };
        fs.keep_reserve();
        if last.elapsed() >= interval {
            last = std::time::Instant::now();
            if let Err(e) = fs.sweep() {
                tracing::warn!(error = %e, "collector sweep failed");
            }
        }
    }
}
