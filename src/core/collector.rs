//! Trash and expiry (issue 6).
//!
//! - **Trash**: in edit mode with `trash_days > 0`, unlinking the last name
//!   of a regular file that nobody has open moves it to `/.trash/` as
//!   `<unix seconds>-<ino>-<name>` instead of deleting it. `/.trash` is
//!   hidden from the root's listing, reachable by path, and a file is
//!   restored by renaming it out. Trashed files keep counting toward the
//!   capacity (once) until purged.
//! - **Expiry**: a regular file whose `user.artstore.expires_at` has passed
//!   is removed (all its names), unless `retention_until` still holds it.
//!   New files inherit an expiry from `user.artstore.default_ttl` (seconds)
//!   on their directory; new directories inherit that attribute.
//! - **The collector**: a thread that, every `interval`, purges trash older
//!   than `trash_days` and removes expired files, at most `max_per_sweep`
//!   of them, each as an ordinary logged unlink (user `collector`), so a
//!   sweep cut short is simply done again.

use std::sync::Weak;
use std::time::Duration;

use serde_json::json;

use super::archive_attrs::{self, PREFIX};
use super::error::Result;
use super::types::{Caller, Inode, Kind, Timestamp, ROOT_INO};
use super::{Fs, Tx};
use crate::wal;

/// The trash directory's name in the root.
pub const TRASH: &[u8] = b".trash";

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

    /// Move the last name of a quiet regular file into the trash instead of
    /// unlinking it. Returns the name in the trash, or `None` when the
    /// file must be unlinked for real.
    pub(crate) fn trash_entry(
        &self,
        tx: &mut Tx<'_>,
        parent: u64,
        name: &[u8],
        inode: &Inode,
        now: Timestamp,
    ) -> Result<Option<Vec<u8>>> {
        if self.collector.trash_days <= 0.0
            || self.mode() != super::policy::Mode::Edit
            || inode.kind != Kind::File
            || inode.nlink != 1
            || self.is_open(inode.ino)
        {
            return Ok(None);
        }
        let trash = match tx.dentry(ROOT_INO, TRASH)? {
            Some(d) if d.kind == Kind::Dir => d.ino,
            // Something else is called .trash: no trash.
            Some(_) => return Ok(None),
            None => self.make_trash(tx, now)?,
        };
        if parent == trash {
            return Ok(None);
        }
        let secs = now.0.div_euclid(1_000_000_000);
        let mut tname = format!("{secs}-{}-", inode.ino).into_bytes();
        let room = super::types::NAME_MAX - tname.len();
        tname.extend_from_slice(&name[..name.len().min(room)]);
        tx.move_entry((parent, name.to_vec()), (trash, tname.clone()))?;
        let mut i = inode.clone();
        i.parent = trash;
        i.ctime = now;
        tx.put(&i)?;
        let mut t = tx.inode(trash)?;
        t.mtime = now;
        t.ctime = now;
        tx.put(&t)?;
        Ok(Some(tname))
    }

    fn make_trash(&self, tx: &mut Tx<'_>, now: Timestamp) -> Result<u64> {
        let mut root = tx.inode(ROOT_INO)?;
        // Like /tmp: everyone may restore their own files.
        let dir = Inode::new_dir(0, 0o1777, (0, 0), ROOT_INO, TRASH, "artfs");
        let dir = tx.insert(dir)?;
        tx.add_entry(ROOT_INO, TRASH, dir.ino, Kind::Dir)?;
        root.nlink += 1;
        root.mtime = now;
        root.ctime = now;
        tx.put(&root)?;
        Ok(dir.ino)
    }

    /// New files inherit an expiry from their directory's default TTL.
    pub(crate) fn inherited_expiry(
        &self,
        tx: &mut Tx<'_>,
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
        let collector = Caller::root();
        let budget = self.collector.max_per_sweep;
        self.flush()?;
        // Trash older than trash_days.
        if self.collector.trash_days > 0.0 {
            if let Some(t) = self.meta.lookup(ROOT_INO, TRASH)? {
                let keep_ns = (self.collector.trash_days * 86_400e9) as i64;
                for e in self.meta.read_dir(t.ino, 0, budget)? {
                    let secs: Option<i64> = e
                        .name
                        .split(|b| *b == b'-')
                        .next()
                        .and_then(|s| std::str::from_utf8(s).ok())
                        .and_then(|s| s.parse().ok());
                    let Some(secs) = secs else { continue };
                    if now.0 - secs * 1_000_000_000 < keep_ns {
                        continue;
                    }
                    match self.remove_name(&collector, t.ino, &e.name, "trash purged") {
                        Ok(()) => done.purged += 1,
                        Err(err) => tracing::warn!(error = %err, "could not purge from the trash"),
                    }
                }
            }
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
                match self.remove_name(&collector, parent, &name, "expired") {
                    Ok(()) => {}
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

    /// Remove one name for good (no trash), logged as the collector's.
    fn remove_name(&self, caller: &Caller, parent: u64, name: &[u8], why: &str) -> Result<()> {
        self.with_tx(|tx| {
            let mut dir = tx.inode(parent)?;
            let Some((ino, kind)) = tx.lookup(parent, name)? else {
                return Ok(()); // gone already: a sweep done twice
            };
            if kind.is_dir() {
                return Ok(());
            }
            let now = Timestamp::now();
            tx.remove_entry(parent, name)?;
            let inode = tx.inode(ino)?;
            let mut rec = wal::Record::new(
                wal::Op::Unlink,
                wal::Status::Committed,
                Some(inode.file_id.clone()),
                json!({ "ino": ino, "parent": parent, "name": wal::name_json(name),
                        "reason": why }),
            );
            rec.user_id = Some("collector".into());
            tx.log(rec);
            self.drop_link(tx, inode, now)?;
            dir.mtime = now;
            dir.ctime = now;
            tx.put(&dir)
        })?;
        let _ = caller;
        // Behind the kernel's back: tell it (after the change, never from
        // inside one of its requests).
        if let Some(inv) = self.invalidator() {
            inv.entry(parent, name);
            inv.inode(parent);
        }
        Ok(())
    }
}

/// Run sweeps every `interval` until the filesystem goes away.
pub fn run(fs: Weak<Fs>, interval: Duration) {
    super::background_thread();
    loop {
        std::thread::sleep(interval);
        let Some(fs) = fs.upgrade() else { return };
        if let Err(e) = fs.sweep() {
            tracing::warn!(error = %e, "collector sweep failed");
        }
    }
}
