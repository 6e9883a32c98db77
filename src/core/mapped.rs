//! Shared writable mappings that outlive their descriptor.
//!
//! Through passthrough, a `MAP_SHARED` writable mapping maps the backing
//! object itself, not the FUSE file (the kernel's `backing_file_mmap`): its
//! process may close the descriptor and go on writing through the mapping,
//! and no request reaches the daemon, neither for those writes nor when the
//! mapping goes. Left alone, they land in the object after the last close
//! recorded its size, times and hash: the hash goes stale (scrub calls the
//! file damaged), a mode change to ro or ar is reported done while the file
//! still changes, and a remote store takes the change for damage and
//! fetches the file again, losing it.
//!
//! So the last close of a writer whose I/O bypassed the daemon leaves the
//! file *lingering*, with the object's figures then. Soon after (the policy
//! thread's next round; at once when the file is opened, its hash is asked
//! for or the mode changes) the object is probed: is it still open for
//! writing anywhere (`blob::lease`)?
//! - No, and unchanged: nothing happened; forgotten.
//! - Yes: a mapping writes it. It becomes a writer of its own, as an open
//!   for writing is: a durable write intent, the hash dropped, listed
//!   among the writers a mode change waits for, counted open (no reclaim).
//!   Later probes find when it is gone.
//! - No, but changed (a mapping came and went), or a mapping found before
//!   is gone: what the object holds now is recorded as a writer's close
//!   records it (size, times, the intent settled, hashed again; a remote
//!   store sends it), by opening a handle for writing and closing it.
//!
//! What it cannot do: stop a mapping's writes (a mode change waits for the
//! mapping to go, as for any writer), or see them before the probe (up to a
//! policy round, 0.5 s, after the close).

use std::collections::HashMap;
use std::fs::File;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Fs;
use crate::blob::lease::Writers;
use crate::blob::ObjectStat;
use crate::types::error::Result;
use crate::types::journal;

/// A policy round probes a file closed at least this long ago: a writer's
/// last descriptor may still be on its way out for a moment after the
/// close reached the daemon (the kernel drops it after queueing the
/// release), and would read as a mapping.
const SETTLE_AFTER: Duration = Duration::from_millis(50);
/// Under load the closer's descriptor can take longer to go (the closing
/// thread preempted between queueing the release and dropping it): a
/// policy round adopts a writer it finds as a mapping only once the close
/// is this old, and otherwise looks again at a later round. (An open, a
/// truncate, a hash asked for or a mode change decide at once.)
const ADOPT_AFTER: Duration = Duration::from_secs(1);

/// Files whose last writer bypassed the daemon, and mappings found.
#[derive(Default)]
pub(super) struct Mappings {
    /// Closed, not yet probed: the object's figures at the close.
    lingering: parking_lot::Mutex<HashMap<u64, (ObjectStat, Instant)>>,
    /// Found written after the close: who had it open, and the write
    /// intent covering the mapping's changes.
    mapped: parking_lot::Mutex<HashMap<u64, Mapping>>,
    /// One settles a file at a time (the policy thread, an open, a mode
    /// change): an open waits for a probe under way to decide first.
    settling: parking_lot::Mutex<()>,
}

/// Who holds a mapped file open, for the writers a mode change names.
const MAPPING_WRITER: &str = "a shared mapping whose descriptor is closed";

struct Mapping {
    /// The write intent covering what the mapping writes.
    intent: uuid::Uuid,
    /// The object's figures at the last close.
    closed: ObjectStat,
}

impl Mappings {
    /// Whether a mapping is known to hold `ino` open for writing.
    pub(super) fn holds(&self, ino: u64) -> bool {
        self.mapped.lock().contains_key(&ino)
    }

    /// The files mappings write, with who writes them (for a mode change).
    pub(super) fn writers(&self) -> Vec<(u64, String)> {
        self.mapped
            .lock()
            .keys()
            .map(|ino| (*ino, MAPPING_WRITER.to_string()))
            .collect()
    }
}

impl Fs {
    /// Whether `ino` is lingering: its last writer's close is not probed
    /// yet.
    pub(super) fn lingers(&self, ino: u64) -> bool {
        self.mappings.lingering.lock().contains_key(&ino)
    }

    /// The last writer of `ino` closed, and its I/O bypassed the daemon
    /// (or an earlier writer's did, and may map it still); `file`: the
    /// object it wrote.
    pub(super) fn linger(&self, ino: u64, file: &File) {
        match file.metadata() {
            // An empty file cannot be written through a mapping: a page
            // past the end faults, and the descriptor that could have
            // grown it is closed.
            Ok(m) if m.len() > 0 => {
                self.mappings
                    .lingering
                    .lock()
                    .insert(ino, (ObjectStat::of(&m), Instant::now()));
            }
            _ => {}
        }
    }

    /// Probe every lingering file closed a moment ago or earlier, and
    /// every mapping found (the policy thread's rounds).
    pub(crate) fn settle_mappings(&self) {
        self.settle_mappings_older_than(SETTLE_AFTER, false);
    }

    /// Probe them all now (a mode change, unmount).
    pub(crate) fn settle_all_mappings(&self) {
        self.settle_mappings_older_than(Duration::ZERO, true);
    }

    fn settle_mappings_older_than(&self, age: Duration, decide_now: bool) {
        let now = Instant::now();
        let mut inos: Vec<u64> = self
            .mappings
            .lingering
            .lock()
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) >= age)
            .map(|(ino, _)| *ino)
            .collect();
        inos.extend(self.mappings.mapped.lock().keys().copied());
        for ino in inos {
            self.settle_mapping(ino, decide_now);
        }
    }

    /// Before `ino` is opened or its content vouched for: settle it if
    /// its last writer's mapping may have written it since.
    pub(crate) fn settle_if_lingering(&self, ino: u64) {
        if self.lingers(ino) {
            self.settle_mapping(ino, true);
        }
    }

    /// `decide_now`: a writer found soon after the close is taken for a
    /// mapping at once, not looked at again later (see [`ADOPT_AFTER`]).
    fn settle_mapping(&self, ino: u64, decide_now: bool) {
        let _one = self.mappings.settling.lock();
        let lingering = self.mappings.lingering.lock().get(&ino).copied();
        let closed = lingering.map(|(s, _)| s);
        let mapped = self.mappings.holds(ino);
        if closed.is_none() && !mapped {
            // Settled by another caller meanwhile.
            return;
        }
        if self.files.inodes.lock().contains_key(&ino) {
            // Open again: a probe would find its handles. Probed once they
            // are closed (a writer's close takes the figures afresh).
            return;
        }
        let mut probe = self.probe_writers(ino);
        if let (false, Some((_, at))) = (mapped, lingering) {
            // A writer found within SETTLE_AFTER of the close may be the
            // closer's descriptor on its way out (the kernel drops it just
            // after queueing the release): asked again until then. The
            // wait (this may be the mount's request thread) happens only
            // when a writer is found that soon.
            while matches!(probe, Some(Writers::Some)) && at.elapsed() < SETTLE_AFTER {
                std::thread::sleep(Duration::from_millis(1));
                probe = self.probe_writers(ino);
            }
            if matches!(probe, Some(Writers::Some)) && !decide_now && at.elapsed() < ADOPT_AFTER {
                return;
            }
        }
        // (Past that, a writer is taken for a mapping; if it was a slow
        // closer after all, the next round finds it gone and records the
        // file again, unchanged.)
        let Some(probe) = probe else {
            // Gone (reclaimed with its last name), or not to be probed.
            self.mappings.lingering.lock().remove(&ino);
            if let Some(m) = self.mappings.mapped.lock().remove(&ino) {
                let e = crate::types::error::Error::posix(libc::ENOENT, "object gone");
                self.fail_intent(m.intent, &e);
            }
            return;
        };
        let at_close = match (closed, self.mappings.mapped.lock().get(&ino)) {
            (_, Some(m)) => m.closed,
            (Some(c), None) => c,
            (None, None) => return,
        };
        match probe {
            Writers::Some if mapped => {}
            Writers::Some => {
                if let Err(e) = self.adopt_mapping(ino, at_close) {
                    tracing::warn!(ino, error = %e,
                        "a shared mapping writes a closed file; could not log its changes");
                }
                self.mappings.lingering.lock().remove(&ino);
            }
            Writers::None(now) if !mapped && unchanged(&now, &at_close) => {
                self.mappings.lingering.lock().remove(&ino);
            }
            // Changed since the close by a mapping now gone, or a mapping
            // found before is gone.
            Writers::None(_) => {
                self.mappings.lingering.lock().remove(&ino);
                let intent = self.mappings.mapped.lock().remove(&ino).map(|m| m.intent);
                if let Err(e) = self.record_mapped(ino, at_close, intent) {
                    tracing::warn!(ino, error = %e,
                        "could not record what a shared mapping wrote to a closed file");
                }
            }
        }
    }

    /// At unmount: record what the files mappings still write hold now
    /// (later writes are the next mount's to find, at the file's next
    /// close), settling their intents: a clean stop leaves none pending.
    pub(crate) fn record_mappings_at_close(&self) {
        let left: Vec<(u64, Mapping)> = self.mappings.mapped.lock().drain().collect();
        for (ino, m) in left {
            tracing::warn!(
                ino,
                "a shared mapping still writes a file at unmount; \
                what it writes from now on is not recorded"
            );
            if let Err(e) = self.record_mapped(ino, m.closed, Some(m.intent)) {
                tracing::warn!(ino, error = %e,
                    "could not record what a shared mapping wrote to a closed file");
            }
        }
    }

    fn probe_writers(&self, ino: u64) -> Option<Writers> {
        self.objects.writers(ino).unwrap_or_else(|e| {
            warn_unprobed(&e);
            None
        })
    }

    /// A mapping writes `ino`, closed (`closed`: the object's figures at
    /// its close): log the intent an open for writing logs (the hash goes
    /// with it), and count the mapping as a writer.
    fn adopt_mapping(&self, ino: u64, closed: ObjectStat) -> Result<()> {
        let intent = self.mapping_intent(ino)?;
        tracing::info!(
            ino,
            "a shared mapping writes a file after its last close; \
            it counts as a writer until it goes"
        );
        self.mappings
            .mapped
            .lock()
            .insert(ino, Mapping { intent, closed });
        Ok(())
    }

    /// The write intent covering a mapping's changes, durable; a remote
    /// store takes them for local writes from now on.
    fn mapping_intent(&self, ino: u64) -> Result<uuid::Uuid> {
        let inode = self.inode(ino)?;
        self.objects.adopt_changes(ino)?;
        let rec = journal::Record::new(
            journal::Op::Write,
            journal::Status::Pending,
            Some(inode.file_id.clone()),
            json!({ "ino": ino, "size": inode.size, "mapped": true }),
        );
        self.durable_intent(rec, Some(ino))
    }

    /// Record what the object of closed `ino` holds, as its last writer's
    /// close would have (`closed`: its figures at that close; `intent`:
    /// the mapping's, when one was logged): open it for writing and close
    /// it.
    fn record_mapped(
        &self,
        ino: u64,
        closed: ObjectStat,
        intent: Option<uuid::Uuid>,
    ) -> Result<()> {
        let intent = match intent {
            Some(id) => id,
            None => match self.mapping_intent(ino) {
                Ok(id) => id,
                // Removed meanwhile: nothing to record.
                Err(e) if e.errno() == libc::ENOENT => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let h = match self.open_handle_with(
            "a shared mapping".into(),
            ino,
            true,
            super::OpenChange::Nothing,
            Some(intent),
            None,
            false,
        ) {
            Ok(h) => h,
            Err(e) => {
                self.fail_intent(intent, &e);
                return if e.errno() == libc::ENOENT {
                    Ok(())
                } else {
                    Err(e)
                };
            }
        };
        // The close compares the object with its figures at the open: make
        // that the last recorded close, so the mapping's times are kept.
        if let Some(o) = self.files.inodes.lock().get_mut(&ino) {
            o.base_mtime = closed.mtime;
        }
        self.release(h.fh)
    }
}

/// Whether a file's content can have changed between two looks at its
/// object: size and times. Not its blocks, which a file system may trim
/// after the last close (XFS drops its preallocation past the end).
fn unchanged(now: &ObjectStat, then: &ObjectStat) -> bool {
    (now.size, now.mtime, now.ctime) == (then.size, then.mtime, then.ctime)
}

/// Without leases the mappings cannot be told apart from nothing (as
/// before probes existed); said once.
fn warn_unprobed(e: &std::io::Error) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(error = %e, "cannot tell whether a shared mapping still writes \
            a closed file (file leases unavailable: fs.leases-enable?); \
            what such a mapping writes after the close goes unrecorded");
    });
}
