//! The writer: one thread that commits the overlay of uncommitted changes
//! to the metadata store in batches (group commit). Mutations never wait
//! for the database; `flush` waits for everything staged so far to be
//! committed (fsync, readdir of a changed directory, unmount).
//!
//! Every batch is the complete state of all keys changed up to one instant
//! (mutations apply atomically under the cache lock), so the database only
//! ever moves between consistent states. Objects released by a removal are
//! deleted only after the batch that removed their inode commits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::Fs;
use crate::meta::Batch;
use crate::types::error::{Error, Result};
use crate::types::journal;
use crate::types::Timestamp;

/// Inode numbers reserved per durable reservation step.
pub const INO_RESERVE_STEP: u64 = 10_000;
/// Uncommitted keys beyond which mutations wait for the writer.
const MAX_DIRTY: usize = 200_000;
/// How long the writer lets changes gather before committing them.
const GATHER: Duration = Duration::from_millis(5);
/// How often settled log rows past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Log rows pruned at most per round: a few milliseconds of the writer's
/// time (a backlog of 200,000 rows deleted at once held it for seconds).
const PRUNE_CHUNK: u64 = 2000;
/// How often to try to put the database's reserve back once released.
const BALLAST_RETRY: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    kicked: bool,
    flushed_seq: u64,
    shutdown: bool,
    stopped: bool,
    /// Callers blocked in `wait_for`: commit at once for them.
    waiters: usize,
    /// The last commit's error, shared with every waiter it fails.
    last_error: Option<Arc<Error>>,
    /// The writer lease passed to another process: nothing commits again.
    fenced: Option<Arc<Error>>,
}

#[derive(Default)]
pub struct Writer {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
    /// Highest inode number reservation committed.
    pub(crate) reserved: AtomicU64,
    /// Reservation to commit with the next batch.
    pub(crate) want_reserved: AtomicU64,
}

impl Writer {
    pub fn kick(&self) {
        let mut s = self.state.lock();
        if !s.kicked {
            s.kicked = true;
            self.work.notify_one();
        }
    }

    /// Wait until everything up to `seq` is committed.
    pub fn wait_for(&self, seq: u64) -> Result<()> {
        let mut s = self.state.lock();
        if s.flushed_seq >= seq {
            return Ok(());
        }
        s.kicked = true;
        self.work.notify_one();
        s.waiters += 1;
        let r = self.wait_locked(&mut s, seq);
        s.waiters -= 1;
        r
    }

    fn wait_locked(&self, s: &mut parking_lot::MutexGuard<'_, State>, seq: u64) -> Result<()> {
        while s.flushed_seq < seq {
            if let Some(e) = &s.fenced {
                return Err(Error::Uncommitted(e.clone()));
            }
            if s.stopped {
                return Err(Error::Meta("metadata writer stopped".into()));
            }
            if let Some(e) = &s.last_error {
                let e = e.clone();
                // Keep waiting through transient errors, but report them.
                let timed_out = self.done.wait_for(s, Duration::from_secs(5)).timed_out();
                if timed_out && s.flushed_seq < seq {
                    return Err(Error::Uncommitted(e));
                }
                continue;
            }
            self.done.wait(s);
        }
        Ok(())
    }

    /// Make mutations wait while too much is uncommitted; refuse them
    /// (EIO) once the writer has died, as nothing staged would be saved.
    pub fn throttle(&self, fs: &Fs) -> Result<()> {
        self.check_fenced()?;
        if self.dead() {
            return Err(Error::Meta(
                "the metadata writer has died: no change can be saved; restart artfs".into(),
            ));
        }
        if fs.cache.dirty_len() > MAX_DIRTY {
            let _ = self.wait_for(fs.cache.seq());
        }
        Ok(())
    }

    /// Whether the writer stopped without being asked to (it panicked).
    fn dead(&self) -> bool {
        let s = self.state.lock();
        s.stopped && !s.shutdown
    }

    /// The writer thread ended by a panic: say so, and release everyone
    /// waiting for a commit (they get an error instead of waiting forever,
    /// and the service watchdog stops pinging).
    pub(crate) fn died(&self, why: String) {
        tracing::error!(why = %why, "the metadata writer died; changes are refused until artfs restarts (recovery at the next mount repairs)");
        let mut s = self.state.lock();
        s.last_error = Some(Arc::new(Error::meta(format!(
            "metadata writer died: {why}"
        ))));
        s.stopped = true;
        self.done.notify_all();
    }

    /// EROFS (the lease's error) once the store's lease passed to another
    /// writer.
    pub fn check_fenced(&self) -> Result<()> {
        match &self.state.lock().fenced {
            Some(e) => Err(Error::Uncommitted(e.clone())),
            None => Ok(()),
        }
    }

    /// The store's lease passed to another writer (`e` says to whom): stop
    /// committing, fail everyone waiting, refuse changes (EROFS) from now
    /// on. Reads go on; the operator unmounts.
    pub(crate) fn fence(&self, e: Error) {
        let mut s = self.state.lock();
        if s.fenced.is_some() {
            return;
        }
        tracing::error!(
            error = %e,
            "lost the store's writer lease: no change is committed from now on \
             (changes are refused with EROFS); unmount this store"
        );
        let e = Arc::new(e);
        s.fenced = Some(e.clone());
        s.last_error = Some(e);
        s.kicked = true;
        self.work.notify_one();
        self.done.notify_all();
    }

    /// (running, last commit error): for the service watchdog.
    pub fn health(&self) -> (bool, Option<String>) {
        let s = self.state.lock();
        let error = s.last_error.as_ref().map(|e| e.to_string());
        (!s.stopped && !s.shutdown, error)
    }

    pub fn shutdown(&self) {
        let mut s = self.state.lock();
        s.shutdown = true;
        self.work.notify_one();
        while !s.stopped {
            self.done.wait(&mut s);
        }
    }
}

/// A range of inode numbers reserved with a `reserve` intent: objects in
/// it may exist before their inode is committed. The range is settled once
/// every number in it has been handed out and everything staged up to then
/// is committed.
struct Range {
    id: uuid::Uuid,
    to: u64,
    /// Sequence that covers every allocation in the range.
    covered_at: Option<u64>,
}

/// One batch on its way to the database, with what to do once it commits.
struct Pending {
    /// The overlay sequence the batch covers.
    seq: u64,
    batch: Batch,
    /// The inode reservation the batch makes durable, if any.
    new_range: Option<Range>,
    /// The `sidecars` row of the batch and the inodes it covers.
    sidecars: Option<(uuid::Uuid, Vec<u64>)>,
}

/// What the loop does after a commit attempt.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

/// The writer thread's state between batches.
struct Run {
    fs: Arc<Fs>,
    ranges: Vec<Range>,
    last_prune: Option<Instant>,
    /// When the ballast was last found missing.
    ballast_out: Option<Instant>,
    /// Commits failing in a row (a database outage), since when, and when
    /// that was last logged.
    failures: u32,
    failing_since: Option<Instant>,
    failure_logged: Option<Instant>,
}

/// Pause after a failed commit: doubling from the first to the last, so
/// an outage is retried quickly at first and then without hammering.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often an ongoing failure is logged again.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(30);

/// The writer thread: [`run`], and on a panic, release everyone waiting
/// for a commit (a panic must not leave them waiting forever).
pub fn run_guarded(fs: Arc<Fs>) {
    let w = fs.clone();
    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(w))) {
        let why = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        fs.writer.died(why);
    }
}

/// The writer thread's loop: wait for changes, gather them into one batch,
/// commit it, then hand on what the commit settled.
fn run(fs: Arc<Fs>) {
    let mut w = Run::new(fs);
    loop {
        w.wait_for_work();
        let pending = w.gather();
        crate::crash_point!("writer::before_commit");
        let next = match w.commit(&pending) {
            Ok(()) => w.committed(pending),
            Err(e) => w.failed(e),
        };
        if next == Next::Stop {
            return;
        }
    }
}

impl Run {
    fn new(fs: Arc<Fs>) -> Run {
        let ballast_out = (!fs.ballast.present()).then(Instant::now);
        Run {
            fs,
            ranges: Vec::new(),
            last_prune: None,
            ballast_out,
            failures: 0,
            failing_since: None,
            failure_logged: None,
        }
    }

    /// Sleep until kicked or asked to stop. Group commit: unless someone
    /// waits for durability, let a burst of mutations gather so one
    /// transaction carries many.
    fn wait_for_work(&self) {
        let w = &self.fs.writer;
        let mut s = w.state.lock();
        while !s.kicked && !s.shutdown {
            w.work.wait(&mut s);
        }
        if s.waiters == 0 && !s.shutdown {
            w.work.wait_for(&mut s, GATHER);
        }
        s.kicked = false;
    }

    /// Everything staged so far as one batch, with the reservation and
    /// `sidecars` rows it needs.
    fn gather(&self) -> Pending {
        let (seq, mut batch) = self.fs.cache.snapshot();
        let now = Timestamp::now();
        for r in &mut batch.journal {
            if r.status != journal::Status::Pending && r.completed_at.is_none() {
                r.completed_at = Some(now);
            }
        }
        let new_range = self.reserve(&mut batch);
        let sidecars = sidecar_row(&mut batch);
        Pending {
            seq,
            batch,
            new_range,
            sidecars,
        }
    }

    /// Add the next inode reservation to `batch` when one is wanted.
    fn reserve(&self, batch: &mut Batch) -> Option<Range> {
        let want = self.fs.writer.want_reserved.load(Ordering::Acquire);
        let had = self.fs.writer.reserved.load(Ordering::Acquire);
        if want <= had {
            return None;
        }
        batch.ino_reserved = Some(want);
        let rec = journal::Record::new(
            journal::Op::Reserve,
            journal::Status::Pending,
            None,
            serde_json::json!({ "from": had, "to": want }),
        );
        let range = Range {
            id: rec.id,
            to: want,
            covered_at: None,
        };
        batch.journal.push(rec);
        Some(range)
    }

    /// Commit the batch. A reservation is durable (fsync) before any
    /// number in it is used: objects of those numbers may be created at
    /// once.
    fn commit(&self, p: &Pending) -> Result<()> {
        self.fs.meta.apply(&p.batch)?;
        if p.batch.ino_reserved.is_some() {
            self.fs.meta.sync()?;
        }
        Ok(())
    }

    /// After a commit: hand on its sidecars and reservation, reclaim what
    /// it released, acknowledge waiters, do the periodic upkeep, and stop
    /// once asked to with nothing left.
    fn committed(&mut self, p: Pending) -> Next {
        crate::crash_point!("writer::after_commit");
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                attempts = self.failures,
                failed_secs = format!("{:.1}", since.elapsed().as_secs_f64()),
                "metadata commits resumed"
            );
            self.failures = 0;
            self.failure_logged = None;
        }
        if let Some((id, inos)) = p.sidecars {
            self.fs.sidecars.push(id, inos);
        }
        if let Some(r) = p.new_range {
            self.fs.writer.reserved.fetch_max(r.to, Ordering::AcqRel);
            self.ranges.push(r);
        }
        let mut more = self.reclaim(p.seq);
        let flushed = self.acknowledge(p.seq);
        self.fs.publish_feed();
        more |= settle_ranges(&self.fs, &mut self.ranges, flushed);
        self.restore_ballast();
        self.prune_journal();
        self.finish_round(more)
    }

    /// Delete the objects of inodes removed by what just committed, and
    /// the content versions it replaced, and stage the settlement of
    /// their log rows. Returns whether it staged anything.
    fn reclaim(&self, seq: u64) -> bool {
        let mut more = false;
        for r in self.fs.cache.committed(seq) {
            let mut removed = 0;
            for ino in &r.objects {
                match self.fs.objects.remove(*ino) {
                    Ok(()) => removed += 1,
                    Err(e) => {
                        tracing::warn!(ino, error = %e, "could not remove released object")
                    }
                }
            }
            let mut replaced = 0;
            if r.versions.iter().any(|v| !v.superseded.is_empty()) {
                crate::crash_point!("writer::before_version_reclaim");
            }
            for v in &r.versions {
                match self
                    .fs
                    .objects
                    .version_committed(v.ino, &v.name, &v.superseded)
                {
                    Ok(()) => replaced += v.superseded.len(),
                    Err(e) => tracing::warn!(ino = v.ino, version = %v.name, error = %e,
                        "could not delete the content versions a recorded one replaced"),
                }
            }
            crate::crash_point!("writer::after_reclaim");
            if let Some(id) = r.row {
                self.fs.cache.push_journal_done(journal::Update::new(
                    id,
                    journal::Status::Committed,
                    format!(
                        "removed {removed} of {} objects, {replaced} replaced versions",
                        r.objects.len()
                    ),
                ));
                more = true;
            }
        }
        more
    }

    /// Record `seq` as committed; returns the committed sequence.
    fn acknowledge(&self, seq: u64) -> u64 {
        let mut s = self.fs.writer.state.lock();
        s.flushed_seq = s.flushed_seq.max(seq);
        // A lost lease stays the error: only empty batches "commit" then.
        if s.fenced.is_none() {
            s.last_error = None;
        }
        s.flushed_seq
    }

    /// Put the database's reserve back a while after it was released.
    fn restore_ballast(&mut self) {
        if self
            .ballast_out
            .is_some_and(|t| t.elapsed() > BALLAST_RETRY)
        {
            self.ballast_out = match self.fs.ballast.ensure() {
                Ok(true) => {
                    tracing::info!("space reserved for the database again");
                    None
                }
                _ => Some(Instant::now()),
            };
        }
    }

    /// Delete settled log rows past their retention, now and then, a
    /// chunk per round; a full chunk means more are due, taken in the
    /// next rounds.
    fn prune_journal(&mut self) {
        if self.last_prune.is_none_or(|t| t.elapsed() > PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            match self
                .fs
                .meta
                .prune_journal(&self.fs.journal_retention, PRUNE_CHUNK)
            {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(rows = n, "pruned settled log rows");
                    if n >= PRUNE_CHUNK {
                        self.last_prune = None;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not prune the log"),
            }
        }
    }

    /// Wake the waiters; go round again if something was staged meanwhile
    /// by the writer itself; stop when shutting down with everything
    /// committed (settling the open reservation ranges first).
    fn finish_round(&mut self, more: bool) -> Next {
        let w = &self.fs.writer;
        let mut s = w.state.lock();
        w.done.notify_all();
        if more {
            s.kicked = true;
            return Next::Continue;
        }
        if s.shutdown && self.fs.cache.seq() <= s.flushed_seq && !s.kicked {
            if !self.ranges.is_empty() {
                // Everything is committed and nothing more is allocated:
                // every open range is settled.
                for r in self.ranges.drain(..) {
                    self.fs.cache.push_journal_done(range_done(r.id));
                }
                s.kicked = true;
                return Next::Continue;
            }
            s.stopped = true;
            w.done.notify_all();
            return Next::Stop;
        }
        Next::Continue
    }

    /// A commit failed. On a full disk, release the database's reserve and
    /// retry at once; otherwise report the error to waiters and retry
    /// shortly (or stop, when shutting down).
    fn failed(&mut self, e: Error) -> Next {
        if matches!(e.bare(), Error::Fenced(_)) {
            self.fs.writer.fence(e);
            let w = &self.fs.writer;
            let mut s = w.state.lock();
            s.stopped = true;
            w.done.notify_all();
            return Next::Stop;
        }
        if e.is_disk_full() && self.fs.ballast.release().unwrap_or(false) {
            // Objects filled the disk: give the database the reserve so
            // this commit (which may free space) goes through.
            tracing::warn!(
                bytes = self.fs.ballast.size(),
                "BACKING is full: released the space reserved for the database"
            );
            self.fs.writer.state.lock().kicked = true;
            self.ballast_out = Some(Instant::now());
            return Next::Continue;
        }
        self.failures += 1;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        let due = self
            .failure_logged
            .is_none_or(|t| t.elapsed() >= FAILURE_LOG_EVERY);
        if due {
            self.failure_logged = Some(Instant::now());
            tracing::error!(
                error = %e,
                attempts = self.failures,
                failing_secs = since.elapsed().as_secs(),
                "metadata commit failed; retrying (staged changes are kept, fsync waits)"
            );
        }
        let pause = RETRY_FIRST
            .saturating_mul(1 << self.failures.min(8))
            .min(RETRY_MAX);
        let w = &self.fs.writer;
        let mut s = w.state.lock();
        s.last_error = Some(Arc::new(e));
        s.kicked = true;
        w.done.notify_all();
        if s.shutdown {
            // Nothing more can be saved; recovery at next mount sees the
            // last committed state.
            s.stopped = true;
            w.done.notify_all();
            return Next::Stop;
        }
        drop(s);
        std::thread::sleep(pause);
        Next::Continue
    }
}

/// Sidecars of what `batch` changes are stale until rewritten: add a
/// pending `sidecars` row naming them.
fn sidecar_row(batch: &mut Batch) -> Option<(uuid::Uuid, Vec<u64>)> {
    let mut touched: Vec<u64> = batch
        .inodes
        .iter()
        .map(|(i, _)| *i)
        .chain(batch.xattrs.iter().map(|(i, _)| *i))
        .collect();
    touched.sort_unstable();
    touched.dedup();
    if touched.is_empty() {
        return None;
    }
    let rec = journal::Record::new(
        journal::Op::Sidecars,
        journal::Status::Pending,
        None,
        serde_json::json!({ "inos": touched }),
    );
    let id = rec.id;
    batch.journal.push(rec);
    Some((id, touched))
}

fn range_done(id: uuid::Uuid) -> journal::Update {
    journal::Update::new(
        id,
        journal::Status::Committed,
        "every inode of the range committed".to_string(),
    )
}

/// Settle the reserve rows whose numbers are all handed out and committed.
/// Returns whether it staged anything.
fn settle_ranges(fs: &Fs, ranges: &mut Vec<Range>, flushed: u64) -> bool {
    let next = fs.next_ino.load(Ordering::Acquire);
    for r in ranges.iter_mut() {
        if r.covered_at.is_none() && next >= r.to {
            // Allocations happen under the mutation lock and are staged
            // before it is released (or held by the object pool, which
            // notes them under that lock): holding it once means every
            // number below `next` not in the pool is staged at or before
            // the current sequence. Never block on it: a mutation holding
            // it may wait for us.
            if let Some(_guard) = fs.mutate.try_lock() {
                if fs.pool.lowest().is_none_or(|l| l >= r.to) {
                    r.covered_at = Some(fs.cache.seq());
                }
            }
        }
    }
    let mut any = false;
    ranges.retain(|r| match r.covered_at {
        Some(at) if at <= flushed => {
            fs.cache.push_journal_done(range_done(r.id));
            any = true;
            false
        }
        _ => true,
    });
    any
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
