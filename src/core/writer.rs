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
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::error::{Error, Result};
use super::Fs;

/// Inode numbers reserved per durable reservation step.
pub const INO_RESERVE_STEP: u64 = 10_000;
/// Uncommitted keys beyond which mutations wait for the writer.
const MAX_DIRTY: usize = 200_000;
/// How long the writer lets changes gather before committing them.
const GATHER: Duration = Duration::from_millis(5);

#[derive(Default)]
struct State {
    kicked: bool,
    flushed_seq: u64,
    shutdown: bool,
    stopped: bool,
    /// Callers blocked in `wait_for`: commit at once for them.
    waiters: usize,
    last_error: Option<String>,
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
            if s.stopped {
                return Err(Error::Meta("metadata writer stopped".into()));
            }
            if let Some(e) = &s.last_error {
                let e = e.clone();
                // Keep waiting through transient errors, but report them.
                let timed_out = self.done.wait_for(s, Duration::from_secs(5)).timed_out();
                if timed_out && s.flushed_seq < seq {
                    return Err(Error::Meta(format!("cannot commit metadata: {e}")));
                }
                continue;
            }
            self.done.wait(s);
        }
        Ok(())
    }

    /// Make mutations wait while too much is uncommitted.
    pub fn throttle(&self, fs: &Fs) {
        if fs.cache.dirty_len() > MAX_DIRTY {
            let _ = self.wait_for(fs.cache.seq());
        }
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

/// The writer thread's loop.
pub fn run(fs: Arc<Fs>) {
    loop {
        {
            let mut s = fs.writer.state.lock();
            while !s.kicked && !s.shutdown {
                fs.writer.work.wait(&mut s);
            }
            // Group commit: unless someone waits for durability, let a burst
            // of mutations gather so one transaction carries many.
            if s.waiters == 0 && !s.shutdown {
                fs.writer.work.wait_for(&mut s, GATHER);
            }
            s.kicked = false;
        }
        let (seq, mut batch) = fs.cache.snapshot();
        let want = fs.writer.want_reserved.load(Ordering::Acquire);
        if want > fs.writer.reserved.load(Ordering::Acquire) {
            batch.ino_reserved = Some(want);
        }
        match fs.meta.apply(&batch) {
            Ok(()) => {
                if let Some(r) = batch.ino_reserved {
                    fs.writer.reserved.fetch_max(r, Ordering::AcqRel);
                }
                for ino in fs.cache.committed(seq) {
                    if let Err(e) = fs.objects.remove(ino) {
                        tracing::warn!(ino, error = %e, "could not remove released object");
                    }
                }
                let mut s = fs.writer.state.lock();
                s.flushed_seq = s.flushed_seq.max(seq);
                s.last_error = None;
                fs.writer.done.notify_all();
                if s.shutdown && fs.cache.seq() <= s.flushed_seq && !s.kicked {
                    s.stopped = true;
                    fs.writer.done.notify_all();
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "metadata commit failed; retrying");
                let mut s = fs.writer.state.lock();
                s.last_error = Some(e.to_string());
                s.kicked = true;
                fs.writer.done.notify_all();
                if s.shutdown {
                    // Nothing more can be saved; recovery at next mount
                    // sees the last committed state.
                    s.stopped = true;
                    fs.writer.done.notify_all();
                    return;
                }
                drop(s);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}
