//! The sidecar thread: keeps each inode's attr.json (see `blob::sidecar`)
//! in step with the tables.
//!
//! Every batch that changes inodes or attributes carries a pending
//! `sidecars` log row naming them. After the batch commits, the writer
//! hands the row here; the thread lets changes gather (a burst of changes
//! to one file writes its sidecar once), renders the sidecars of all named
//! inodes from the committed tables, syncs the filesystem once, and only
//! then settles the rows. A crash in between leaves the rows pending, and
//! recovery rewrites those sidecars: the log covers the window.
//!
//! A clean stop: the store stops the thread (between two sidecars of the
//! slice it is writing) and the writer, then [`finish_at_close`] writes
//! the sidecars of the rows still pending, each fsynced on its own (a
//! syncfs would also flush every object a burst of changes just wrote),
//! and settles them, for at most half a second (checked before each
//! sidecar). After a quiet spell that leaves no row
//! pending.
//! Rows that still remain (after a burst, or on a full disk) are deferred
//! housekeeping, not an interrupted operation: the tables already hold
//! everything, only the attr.json copies lag; fsck says so, and the next
//! mount hands them to this thread as ordinary work.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use uuid::Uuid;

use super::Fs;
use crate::core::render;
use crate::types::journal;

/// How long changes gather before their sidecars are written.
/// Sidecars are written once changes have been quiet this long (a burst
/// of changes writes each sidecar once, after the burst, instead of
/// competing with it for the CPU)...
const QUIET: Duration = Duration::from_millis(500);
/// ...or at the latest this long after the first unwritten change.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Sidecars written per round (then the thread syncs them and settles
/// their rows).
const SLICE: usize = 1000;

#[derive(Default)]
struct State {
    jobs: Vec<(Uuid, Vec<u64>)>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
    /// Skip the gathering delay (someone waits in `drain`).
    urgent: bool,
    stop: bool,
    /// The thread is writing sidecars (taken jobs not yet handled).
    busy: bool,
    queued: u64,
    handled: u64,
}

#[derive(Default)]
pub struct Sidecars {
    state: Mutex<State>,
    work: Condvar,
    done: Condvar,
}

impl Sidecars {
    /// Queue the sidecars of `inos`, covered by the pending log row `id`.
    pub fn push(&self, id: Uuid, inos: Vec<u64>) {
        let mut s = self.state.lock();
        s.jobs.push((id, inos));
        s.first_at.get_or_insert_with(Instant::now);
        s.last_at = Some(Instant::now());
        s.queued += 1;
        self.work.notify_one();
    }

    /// Wait until every queued sidecar is written and synced, for at most
    /// half a minute (if they cannot be written, e.g. on a full disk, their
    /// rows stay pending and the next mount writes them).
    pub fn drain(&self) {
        if !self.drain_within(Duration::from_secs(30)) {
            tracing::warn!("sidecars not all written; the next mount writes them");
        }
    }

    /// [`Sidecars::drain`] for at most `within`; whether all were written.
    pub fn drain_within(&self, within: Duration) -> bool {
        let mut s = self.state.lock();
        let target = s.queued;
        s.urgent = true;
        self.work.notify_one();
        let deadline = std::time::Instant::now() + within;
        let mut all = true;
        while s.handled < target && !s.stop {
            if self.done.wait_until(&mut s, deadline).timed_out() {
                all = false;
                break;
            }
        }
        s.urgent = false;
        all
    }

    /// Stop the thread, waiting for the sidecars it is writing (so that
    /// [`finish_at_close`] never writes the same files at the same time).
    pub fn stop(&self) {
        let mut s = self.state.lock();
        s.stop = true;
        self.work.notify_one();
        self.done.notify_all();
        while s.busy {
            self.done.wait(&mut s);
        }
    }
}

/// How long a clean close may spend on the sidecars left after the drain
/// (usually a handful); what is left after that stays deferred, and the
/// next mount writes it in the background: an unmount after a burst of
/// changes ends within a couple of seconds.
const FINISH_WITHIN: Duration = Duration::from_millis(500);

/// At a clean close, with the sidecar thread and the writer stopped (no
/// commit can happen any more): write the sidecars of every `sidecars` row
/// still pending and settle the rows, oldest first, in bounded time.
/// Returns the rows left pending (deferred housekeeping).
pub fn finish_at_close(fs: &Fs) -> usize {
    finish_within(fs, FINISH_WITHIN)
}

/// [`finish_at_close`] in at most about `within` (one more sidecar).
pub(crate) fn finish_within(fs: &Fs, within: Duration) -> usize {
    let rows: Vec<(Uuid, Vec<u64>)> = match fs.meta.pending_journal() {
        Ok(rows) => rows
            .into_iter()
            .filter(|r| r.op == journal::Op::Sidecars)
            .map(|r| {
                let inos = r.data.get("inos").and_then(serde_json::Value::as_array);
                let inos = inos.into_iter().flatten();
                (r.id, inos.filter_map(serde_json::Value::as_u64).collect())
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the log at close");
            return 0;
        }
    };
    // A syncfs would also flush every object a burst just wrote (seconds,
    // and the process could not exit before it is done): one row at a
    // time, each sidecar fsynced on its own.
    // The deadline holds within a row too: a row may name thousands of
    // inodes (a burst's batch), at two fsyncs each.
    let deadline = Instant::now() + within;
    let mut left = rows.len();
    for (id, inos) in &rows {
        let written = render::rewrite_until(
            fs.meta.as_ref(),
            fs.objects.as_ref(),
            inos,
            crate::blob::sidecar::DirSync::Now,
            &|| Instant::now() >= deadline,
        );
        let result = match written {
            // Out of time: the row stays pending, for the next mount.
            Ok(None) => break,
            Ok(Some(n)) => fs.meta.apply(&crate::meta::Batch {
                journal_done: vec![journal::Update::new(
                    *id,
                    journal::Status::Committed,
                    format!("{n} sidecars written at close"),
                )],
                ..Default::default()
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not write sidecars at close");
            break;
        }
        left -= 1;
    }
    if left > 0 {
        tracing::info!(
            rows = left,
            "sidecar rewrites deferred to the next mount (housekeeping; the tables hold everything)"
        );
    }
    left
}

/// The thread's loop. It holds the filesystem only while working, so it
/// never keeps a closed store alive.
pub fn run(sc: Arc<Sidecars>, fs: Weak<Fs>) {
    super::background_thread();
    loop {
        let jobs = {
            let mut s = sc.state.lock();
            loop {
                if s.stop {
                    return;
                }
                match s.first_at {
                    Some(first) => {
                        let last = s.last_at.unwrap_or(first);
                        let due = (last + QUIET).min(first + MAX_DELAY);
                        if s.urgent || Instant::now() >= due {
                            break;
                        }
                        sc.work.wait_until(&mut s, due);
                    }
                    None => sc.work.wait(&mut s),
                }
            }
            // A slice at a time, so a stop waits for one slice at most (a
            // burst queues sidecars of tens of thousands of files).
            let mut k = 0;
            let mut inos = 0;
            while k < s.jobs.len() && inos < SLICE {
                inos += s.jobs[k].1.len();
                k += 1;
            }
            let rest = s.jobs.split_off(k);
            if rest.is_empty() {
                s.first_at = None;
            }
            s.busy = true;
            std::mem::replace(&mut s.jobs, rest)
        };
        let Some(fs) = fs.upgrade() else {
            sc.state.lock().busy = false;
            sc.done.notify_all();
            return;
        };
        let n = jobs.len() as u64;
        let inos: BTreeSet<u64> = jobs.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let inos: Vec<u64> = inos.into_iter().collect();
        // A stop ends the slice between two sidecars: its rows stay
        // pending, for the close (or the next mount) to finish.
        let stopping = || sc.state.lock().stop;
        let result = render::rewrite_until(
            fs.meta.as_ref(),
            fs.objects.as_ref(),
            &inos,
            crate::blob::sidecar::DirSync::Deferred,
            &stopping,
        )
        .and_then(|n| {
            if n.is_some() {
                fs.objects.sync_all()?;
            }
            Ok(n)
        });
        match result {
            Ok(None) => {
                let mut s = sc.state.lock();
                s.busy = false;
                sc.done.notify_all();
                return;
            }
            Ok(Some(_)) => {
                crate::crash_point!("sidecar_sync::before_settle");
                for (id, _) in &jobs {
                    fs.cache.push_journal_done(journal::Update::new(
                        *id,
                        journal::Status::Committed,
                        format!("{} sidecars written", inos.len()),
                    ));
                }
                fs.writer.kick();
                let mut s = sc.state.lock();
                s.handled += n;
                s.busy = false;
                sc.done.notify_all();
            }
            Err(e) => {
                // The rows stay pending; retry (after a crash, recovery
                // redoes them).
                tracing::error!(error = %e, "could not write sidecars; retrying");
                let mut s = sc.state.lock();
                let mut rest = jobs;
                rest.append(&mut s.jobs);
                s.jobs = rest;
                s.first_at = Some(Instant::now());
                s.busy = false;
                sc.done.notify_all();
                if s.stop {
                    return;
                }
                drop(s);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
