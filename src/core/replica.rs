//! Serving a store another daemon writes (docs/CLUSTER.md).
//!
//! A **replica** opens the store without its lease and refuses every
//! change (EROFS through the mount, 403 through the API). It follows the
//! writer through the change feed (`meta::feed`): after each poll (or a
//! wake-up), it drops from its caches, and the kernel's, exactly what the
//! writer's committed batches changed, so nothing it serves is older than
//! the last batch it applied.
//!
//! A **standby** is a replica that also watches the writer's lease: once
//! the heartbeat has been silent for the takeover time, it takes the
//! lease, settles what the old writer left pending (recovery), starts the
//! writer's threads and serves changes from then on, on the same mount.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::options::Role;
use super::workers::{self, Stop};
use super::Fs;
use crate::meta::feed::{Page, Step};
use crate::meta::lease;
use crate::types::error::{Error, Result};
use crate::types::Timestamp;

/// Feed rows read per query.
const PAGE: usize = 1000;

/// How often a standby looks at the writer's lease.
const LEASE_LOOK: Duration = Duration::from_millis(500);

/// A daemon's place in the store: its role, and for a follower how far
/// it has followed.
pub(crate) struct Follow {
    role: AtomicU8,
    /// Last feed row whose changes this node's caches reflect.
    applied: AtomicU64,
    /// The feed's head at the last read (for the lag).
    head: AtomicU64,
    /// When the last read of the feed succeeded (ns since the epoch; 0:
    /// never).
    read_at: AtomicI64,
    /// Wakes the follower before its poll interval (a change hint).
    wake: Mutex<bool>,
    woken: Condvar,
    /// Told the feed's head after each commit (a writer's hint to its
    /// followers, e.g. over Redis).
    publisher: std::sync::OnceLock<Box<dyn Fn(u64) + Send + Sync>>,
}

impl Default for Follow {
    fn default() -> Self {
        Follow {
            role: AtomicU8::new(role_u8(Role::Writer)),
            applied: 0.into(),
            head: 0.into(),
            read_at: 0.into(),
            wake: Mutex::new(false),
            woken: Condvar::new(),
            publisher: Default::default(),
        }
    }
}

fn role_u8(r: Role) -> u8 {
    match r {
        Role::Writer => 0,
        Role::Replica => 1,
        Role::Standby => 2,
    }
}

fn role_of(v: u8) -> Role {
    match v {
        1 => Role::Replica,
        2 => Role::Standby,
        _ => Role::Writer,
    }
}

/// Where a follower stands, for status and metrics.
#[derive(Clone, Copy, Debug)]
pub struct FollowState {
    pub role: Role,
    /// Last feed row applied.
    pub applied: u64,
    /// Feed rows committed by the writer and not yet applied here.
    pub behind: u64,
    /// Seconds since the feed was last read successfully (`None`: never).
    pub read_age_secs: Option<f64>,
}

impl Follow {
    pub(crate) fn set_role(&self, r: Role) {
        self.role.store(role_u8(r), Ordering::Release);
    }

    pub(crate) fn start_at(&self, seq: u64) {
        self.applied.store(seq, Ordering::Release);
        self.head.store(seq, Ordering::Release);
    }

    /// Read the feed now instead of at the next poll.
    pub fn wake(&self) {
        *self.wake.lock() = true;
        self.woken.notify_one();
    }

    /// Sleep up to `d` or until woken; false once `stop` is given.
    fn sleep(&self, d: Duration, stop: &Stop) -> bool {
        let mut w = self.wake.lock();
        if !*w {
            self.woken.wait_for(&mut w, d);
        }
        *w = false;
        drop(w);
        stop.sleep(Duration::ZERO)
    }
}

impl Fs {
    /// What this daemon is to the store now (a standby that took over
    /// says writer).
    pub fn role(&self) -> Role {
        role_of(self.follow.role.load(Ordering::Acquire))
    }

    /// Where a follower stands (a writer: at its own head).
    pub fn follow_state(&self) -> FollowState {
        let f = &self.follow;
        let applied = f.applied.load(Ordering::Acquire);
        let read_at = f.read_at.load(Ordering::Acquire);
        FollowState {
            role: self.role(),
            applied,
            behind: f.head.load(Ordering::Acquire).saturating_sub(applied),
            read_age_secs: (read_at > 0)
                .then(|| (Timestamp::now().0 - read_at).max(0) as f64 / 1e9),
        }
    }

    /// Wake the follower (a hint that the writer committed up to feed
    /// row `head`; 0: it may have).
    pub fn feed_hint(&self, head: u64) {
        if head == 0 || head > self.follow.applied.load(Ordering::Acquire) {
            self.follow.wake();
        }
    }

    /// Tell `publish` the feed's head after every commit (once, at mount).
    pub fn set_feed_publisher(&self, publish: impl Fn(u64) + Send + Sync + 'static) {
        let _ = self.follow.publisher.set(Box::new(publish));
    }

    /// A batch committed: hand the feed's head to the publisher.
    pub(crate) fn publish_feed(&self) {
        if let Some(p) = self.follow.publisher.get() {
            let head = self.meta.feed_written();
            if head > 0 {
                p(head);
            }
        }
    }

    /// A follower refuses every change: the writer is elsewhere.
    pub(crate) fn refuse_as_follower(&self) -> Result<()> {
        match self.role() {
            Role::Writer => Ok(()),
            r => Err(Error::posix_msg(
                libc::EROFS,
                format!("this node serves the store as a {r}: changes go to its writer"),
            )),
        }
    }

    /// Read the feed from where this node stands and drop what changed;
    /// returns how many rows it applied.
    pub(crate) fn follow_feed(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let applied = self.follow.applied.load(Ordering::Acquire);
            let page = self
                .meta
                .changes_since(applied, PAGE)?
                .ok_or_else(|| Error::Meta("this store's database keeps no change feed".into()))?;
            self.follow
                .read_at
                .store(Timestamp::now().0, Ordering::Release);
            self.follow.head.store(page.head, Ordering::Release);
            let (to, full) = self.apply_page(&page, applied);
            if to == applied {
                return Ok(total);
            }
            total += to - applied;
            self.follow.applied.store(to, Ordering::Release);
            if !full {
                return Ok(total);
            }
        }
    }

    /// Drop what one page of the feed names; returns where this node
    /// stands after it, and whether more rows may follow.
    fn apply_page(&self, page: &Page, applied: u64) -> (u64, bool) {
        let full = page.changes.len() >= PAGE;
        match page.step(applied) {
            Step::Idle => (applied, false),
            Step::DropAll(to) => {
                tracing::info!(
                    from = applied,
                    to,
                    "the writer's changes since this node last looked are no longer listed: \
                     dropping every cache"
                );
                self.cache.forget_all();
                if let Some(inv) = self.invalidator() {
                    inv.everything();
                }
                (to, full)
            }
            Step::Apply(changes, to) => {
                tracing::debug!(from = applied, to, "applying the writer's changes");
                for c in changes {
                    tracing::trace!(seq = c.seq, inos = ?c.inos, entries = c.entries.len(), "change");
                    self.cache.forget(&c.inos, &c.entries);
                }
                // The kernel after the core, so a lookup it sends next
                // finds the new state.
                if let Some(inv) = self.invalidator() {
                    for c in changes {
                        for (parent, name) in &c.entries {
                            inv.entry(*parent, name);
                        }
                        for ino in &c.inos {
                            inv.inode(*ino);
                        }
                    }
                }
                (to, full)
            }
        }
    }
}

/// The follower's thread: read the feed every `poll` (sooner when woken)
/// until stopped or promoted.
pub(crate) fn follow(fs: Weak<Fs>, poll: Duration, stop: &Stop) {
    let mut failing = false;
    loop {
        let Some(fs) = fs.upgrade() else { return };
        if fs.role() == Role::Writer {
            return;
        }
        match fs.follow_feed() {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("reading the writer's changes again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "cannot read the writer's changes; retrying");
            }
            Err(_) => {}
        }
        if !fs.follow.sleep(poll, stop) {
            return;
        }
    }
}

/// The standby's thread: look at the lease until it lapses, then take
/// over.
pub(crate) fn stand_by(fs: Weak<Fs>, lapse: Duration, stop: &Stop) {
    let me = lease::Holder::me();
    while stop.sleep(LEASE_LOOK) {
        let Some(fs) = fs.upgrade() else { return };
        match fs.meta.try_claim_writer(&me, lapse) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                tracing::debug!(error = %e, "could not look at the store's lease");
                continue;
            }
        }
        let started = std::time::Instant::now();
        tracing::warn!("the store's writer stopped renewing its lease: taking over");
        let settled = match settle(&fs) {
            Ok(n) => n,
            Err(e) => {
                // Nothing was started: the lease, never renewed, lapses
                // and is taken again (recovery is idempotent).
                tracing::error!(error = %e, "could not take over as the store's writer; retrying");
                continue;
            }
        };
        if let Err(e) = super::start::start_workers(&fs) {
            tracing::error!(error = %e, "could not start the writer's threads");
            fs.writer
                .fence(Error::Meta(format!("takeover failed: {e}")));
            return;
        }
        fs.follow.set_role(Role::Writer);
        if let Err(e) = fs.reclaim_orphans().and_then(|()| fs.wait_committed()) {
            tracing::warn!(error = %e, "could not reclaim files unlinked while open");
        }
        tracing::warn!(
            recovered = settled,
            took_ms = started.elapsed().as_millis() as u64,
            "took over as the store's writer: changes are served from now on"
        );
        return;
    }
}

/// The lease is ours: settle what the old writer left and start from the
/// state it committed. Returns the log rows recovery settled.
fn settle(fs: &Arc<Fs>) -> Result<u64> {
    // What the old writer committed last reaches the caches first.
    fs.follow_feed()?;
    let settled = super::start::recover(fs.meta.as_ref(), fs.objects.as_ref())?;
    fs.cache.forget_all();
    if let Some(inv) = fs.invalidator() {
        inv.everything();
    }
    fs.resume_counters()?;
    fs.load_state()?;
    if let Err(e) = super::start::reserve_ballast(&fs.backing.join(".artfs")) {
        tracing::warn!(error = %e, "could not reserve space for the database");
    }
    Ok(settled)
}

/// Start a follower's threads: the feed and, for a standby, the lease.
pub(crate) fn start(fs: &Arc<Fs>, role: Role, poll: Duration, lapse: Duration) -> Result<()> {
    let w = &fs.workers;
    let (weak, stop) = (Arc::downgrade(fs), w.periodic());
    w.spawn(workers::FOLLOWER, move || follow(weak, poll, &stop))?;
    if role == Role::Standby {
        let (weak, stop) = (Arc::downgrade(fs), w.periodic());
        w.spawn(workers::STANDBY, move || stand_by(weak, lapse, &stop))?;
    }
    Ok(())
}
