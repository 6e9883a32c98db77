//! Objects made ahead of need.
//!
//! Allocating an inode on the backing filesystem is the largest single
//! cost of a create (ext4 searches its bitmaps, and without a journal it
//! also skips inodes freed in the last minutes). A background thread takes
//! inode numbers a few dozen ahead and creates their empty objects at
//! their final paths; `create` takes one, number and open descriptor
//! together, and touches the backing filesystem not at all.
//!
//! Crash safety comes from the inode reservation (see `writer`): every
//! number is in a `reserve` log row that stays pending while this pool
//! holds a number of its range, and recovery removes the objects of a
//! pending range whose inode never committed. At unmount the unused
//! objects are removed and their numbers are never used.
//!
//! (Two earlier designs: files in a pool directory renamed into place cost
//! a cross-directory rename, half of a create's time in the daemon;
//! anonymous `O_TMPFILE` files each sat on ext4's orphan list until named,
//! and with dozens waiting every new one cost hundreds of microseconds.)

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Fs;
use crate::blob::ContentStore;
use crate::types::Timestamp;

/// Refill when fewer objects than this are ready...
const LOW: usize = 32;
/// ...up to this many.
const HIGH: usize = 96;

/// An object made ahead of need: its inode number, the object open
/// read-write, and its mtime (the base later writes are told apart from,
/// read here so a create needs no stat).
pub(crate) struct Made {
    pub ino: u64,
    pub file: File,
    pub mtime: Timestamp,
}

impl Made {
    /// Make the object of the new inode `ino` (numbers are never reused:
    /// made as new, no store is asked whether it holds one). Nothing is
    /// left behind on failure.
    pub(crate) fn create(objects: &dyn ContentStore, ino: u64) -> std::io::Result<Made> {
        let file = objects.create_new(ino)?;
        match file.metadata() {
            Ok(m) => Ok(Made {
                ino,
                file,
                mtime: Timestamp::mtime_of(&m),
            }),
            Err(e) => {
                let _ = objects.remove(ino);
                Err(e)
            }
        }
    }
}

#[derive(Default)]
struct State {
    /// Ready objects, by inode number, oldest first.
    ready: VecDeque<Made>,
    /// A number taken whose object is being made.
    making: Option<u64>,
    /// Files are being created: keep objects ready (not before the first
    /// create, so an idle or read-only mount makes none).
    wanted: bool,
    stop: bool,
}

#[derive(Default)]
pub(crate) struct ObjectPool {
    state: Mutex<State>,
    work: Condvar,
    /// Signalled when an object being made is ready or removed.
    made: Condvar,
}

impl ObjectPool {
    /// Take a ready object: its inode number and the object open
    /// read-write. Call under the mutation lock, and stage the inode before
    /// releasing it (see [`ObjectPool::lowest`]).
    pub(crate) fn take(&self) -> Option<Made> {
        let mut s = self.state.lock();
        let f = s.ready.pop_front();
        if s.ready.len() < LOW {
            s.wanted = true;
            self.work.notify_one();
        }
        f
    }

    /// Give back an object taken by a create that failed.
    pub(crate) fn put_back(&self, object: Made) {
        self.state.lock().ready.push_front(object);
    }

    /// The lowest inode number the pool holds: its reservation range must
    /// stay pending. Numbers handed out by [`ObjectPool::take`] are staged
    /// under the mutation lock, so whoever holds that lock and sees no
    /// number below a range's end here knows every number of the range is
    /// staged or was never used.
    pub(crate) fn lowest(&self) -> Option<u64> {
        let s = self.state.lock();
        s.ready.iter().map(|m| m.ino).chain(s.making).min()
    }

    /// Stop the refill thread and remove the unused objects (at unmount).
    /// Returns once no object is being made: the writer then settles the
    /// reservation ranges, and nothing may appear in them afterwards.
    pub(crate) fn stop(&self, fs: &Fs) {
        let mut s = self.state.lock();
        s.stop = true;
        self.work.notify_all();
        while s.making.is_some() {
            self.made.wait(&mut s);
        }
        for Made { ino, .. } in s.ready.drain(..) {
            if let Err(e) = fs.objects.remove(ino) {
                tracing::warn!(ino, error = %e, "could not remove an unused object");
            }
        }
    }

    /// Start the refill thread (and remove what an older version left in
    /// `.artfs/pool`). It makes objects once files are being created.
    pub(crate) fn start(fs: Weak<Fs>, workers: &super::workers::Workers) -> std::io::Result<()> {
        if let Some(fs) = fs.upgrade() {
            crate::blob::remove_legacy_pool(&fs.backing)?;
        }
        workers.spawn(super::workers::OBJECTS, move || {
            super::background_thread();
            let Some(pool) = fs.upgrade().map(|f| f.pool.clone()) else {
                return;
            };
            run(&pool, &fs);
        })?;
        Ok(())
    }
}

fn run(pool: &Arc<ObjectPool>, fs: &Weak<Fs>) {
    loop {
        {
            let mut s = pool.state.lock();
            while !s.stop && (!s.wanted || s.ready.len() >= LOW) {
                pool.work.wait(&mut s);
            }
            if s.stop {
                return;
            }
        }
        let Some(fs) = fs.upgrade() else { return };
        while pool.state.lock().ready.len() < HIGH {
            // Allocate under the mutation lock, as creates do, and note the
            // number before letting go: the writer settles a range only
            // when no allocation below its end is unaccounted for.
            let ino = {
                let _guard = fs.mutate.lock();
                let ino = match fs.alloc_ino() {
                    Ok(ino) => ino,
                    Err(e) => {
                        tracing::warn!(error = %e, "no inode number for an object made ahead");
                        break;
                    }
                };
                let mut s = pool.state.lock();
                if s.stop {
                    return;
                }
                s.making = Some(ino);
                ino
            };
            let made = Made::create(&*fs.objects, ino);
            let failed = made.is_err();
            let mut s = pool.state.lock();
            let stopped = s.stop;
            match made {
                Ok(m) if !stopped => s.ready.push_back(m),
                // Removed before `stop` may return (it waits for `making`).
                Ok(_) => {
                    let _ = fs.objects.remove(ino);
                }
                Err(e) => tracing::warn!(error = %e, "could not make an object ahead of need"),
            }
            s.making = None;
            pool.made.notify_all();
            drop(s);
            if stopped {
                return;
            }
            if failed {
                std::thread::sleep(Duration::from_secs(1));
                break;
            }
        }
    }
}
