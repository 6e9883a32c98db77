//! Empty objects made ahead of need.
//!
//! Allocating an inode on the backing filesystem is the largest single
//! cost of a create (ext4 searches its bitmaps and skips recently freed
//! inodes). A background thread keeps a few dozen empty files ready in
//! `.artfs/pool`; `create` renames one into place as the new object (a
//! plain directory update) and uses its open descriptor at once.
//!
//! Nothing here needs recovery: the pool holds only unused files, and each
//! mount empties it first. (Anonymous `O_TMPFILE` files were tried first:
//! on ext4 each sits on the orphan list until named, and with dozens
//! waiting every new one cost hundreds of microseconds.)

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Fs;

/// Refill when fewer files than this are ready...
const LOW: usize = 32;
/// ...up to this many.
const HIGH: usize = 96;

#[derive(Default)]
struct State {
    /// Oldest first: the newest sit in the directory being filled.
    ready: std::collections::VecDeque<(PathBuf, File)>,
    stop: bool,
}

#[derive(Default)]
pub(crate) struct ObjectPool {
    state: Mutex<State>,
    work: Condvar,
}

impl ObjectPool {
    /// Take a ready file: where it waits, and the file open read-write.
    pub(crate) fn take(&self) -> Option<(PathBuf, File)> {
        let mut s = self.state.lock();
        let f = s.ready.pop_front();
        if s.ready.len() < LOW {
            self.work.notify_one();
        }
        f
    }

    /// Stop the refill thread and remove the unused files (at unmount).
    pub(crate) fn stop(&self) {
        let mut s = self.state.lock();
        s.stop = true;
        for (path, _) in s.ready.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        self.work.notify_all();
    }

    /// Empty the pool directory and start the refill thread.
    pub(crate) fn start(fs: Weak<Fs>) -> std::io::Result<()> {
        if let Some(fs) = fs.upgrade() {
            let left = fs.objects.reset_pool()?;
            if left > 0 {
                tracing::debug!(files = left, "emptied the object pool");
            }
        }
        std::thread::Builder::new()
            .name("artfs-objects".into())
            .spawn(move || {
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
    let mut made = 0u64;
    loop {
        {
            let mut s = pool.state.lock();
            while !s.stop && s.ready.len() >= LOW {
                pool.work.wait(&mut s);
            }
            if s.stop {
                return;
            }
        }
        let Some(fs) = fs.upgrade() else { return };
        while pool.state.lock().ready.len() < HIGH {
            made += 1;
            match fs.objects.pooled(made) {
                Ok(f) => {
                    let mut s = pool.state.lock();
                    if s.stop {
                        let _ = std::fs::remove_file(&f.0);
                        return;
                    }
                    s.ready.push_back(f);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not make an object ahead of need");
                    std::thread::sleep(Duration::from_secs(1));
                    break;
                }
            }
        }
    }
}
