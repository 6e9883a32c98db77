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
//! A clean stop leaves no row pending: the store drains the thread, stops
//! it and the writer, then [`finish_at_close`] writes the sidecars of the
//! rows committed meanwhile (by changes made while closing, such as the
//! hasher recording a checksum) and settles them. Rows that still remain
//! (the close ran out of time, or the disk is full) are deferred
//! housekeeping, not an interrupted operation: the tables already hold
//! everything, only the attr.json copies lag; fsck and the next mount say
//! so.

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
    /// rows stay pending and recovery writes them at the next mount).
    pub fn drain(&self) {
        let mut s = self.state.lock();
        let target = s.queued;
        s.urgent = true;
        self.work.notify_one();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while s.handled < target && !s.stop {
            if self.done.wait_until(&mut s, deadline).timed_out() {
                tracing::warn!("sidecars not all written at close; recovery will finish them");
                break;
            }
        }
        s.urgent = false;
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
/// (usually a handful); what is left after that stays deferred.
const FINISH_WITHIN: Duration = Duration::from_secs(20);

/// At a clean close, with the sidecar thread and the writer stopped (no
/// commit can happen any more): write the sidecars of every `sidecars` row
/// still pending and settle the rows, oldest first, in bounded time.
/// Returns the rows left pending (deferred housekeeping).
pub fn finish_at_close(fs: &Fs) -> usize {
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
    let deadline = Instant::now() + FINISH_WITHIN;
    let mut left = rows.len();
    for chunk in rows.chunks(200) {
        if Instant::now() >= deadline {
            break;
        }
        let inos: BTreeSet<u64> = chunk.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let inos: Vec<u64> = inos.into_iter().collect();
        let result = render::rewrite(fs.meta.as_ref(), fs.objects.as_ref(), &inos)
            .and_then(|_| Ok(fs.objects.sync_all()?))
            .and_then(|()| {
                fs.meta.apply(&crate::meta::Batch {
                    journal_done: chunk
                        .iter()
                        .map(|(id, _)| {
                            journal::Update::new(
                                *id,
                                journal::Status::Committed,
                                format!("{} sidecars written at close", inos.len()),
                            )
                        })
                        .collect(),
                    ..Default::default()
                })
            });
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not write sidecars at close");
            break;
        }
        left -= chunk.len();
    }
    if left > 0 {
        tracing::warn!(
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
            s.first_at = None;
            s.busy = true;
            std::mem::take(&mut s.jobs)
        };
        let Some(fs) = fs.upgrade() else {
            sc.state.lock().busy = false;
            sc.done.notify_all();
            return;
        };
        let n = jobs.len() as u64;
        let inos: BTreeSet<u64> = jobs.iter().flat_map(|(_, v)| v.iter().copied()).collect();
        let inos: Vec<u64> = inos.into_iter().collect();
        let result = render::rewrite(fs.meta.as_ref(), fs.objects.as_ref(), &inos)
            .and_then(|_| Ok(fs.objects.sync_all()?));
        match result {
            Ok(()) => {
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
