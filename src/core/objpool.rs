//! Empty objects made ahead of need.
//!
//! Allocating an inode on the backing filesystem is the largest single
//! cost of a create (ext4 searches its bitmaps and skips recently freed
//! inodes). A background thread keeps a few dozen *anonymous* files ready
//! (`O_TMPFILE`: an inode with no name); `create` gives one the object's
//! name with `linkat`, a plain directory insert, and uses it at once.
//!
//! Nothing here needs recovery: an anonymous file that was never named is
//! freed by the backing filesystem when the daemon exits, however it
//! exits. Backing filesystems without `O_TMPFILE` simply get no pool.

use std::fs::File;
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
    ready: Vec<File>,
    stop: bool,
}

#[derive(Default)]
pub(crate) struct ObjectPool {
    state: Mutex<State>,
    work: Condvar,
}

impl ObjectPool {
    /// Take a ready anonymous file, if any.
    pub(crate) fn take(&self) -> Option<File> {
        let mut s = self.state.lock();
        let f = s.ready.pop();
        if s.ready.len() < LOW {
            self.work.notify_one();
        }
        f
    }

    /// Stop the refill thread and free the unused files.
    pub(crate) fn stop(&self) {
        let mut s = self.state.lock();
        s.stop = true;
        s.ready.clear();
        self.work.notify_all();
    }

    /// Start the refill thread.
    pub(crate) fn start(fs: Weak<Fs>) -> std::io::Result<()> {
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
            match fs.objects.anonymous() {
                Ok(f) => {
                    let mut s = pool.state.lock();
                    if s.stop {
                        return;
                    }
                    s.ready.push(f);
                }
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                    tracing::info!("BACKING has no O_TMPFILE: objects are made at create");
                    return;
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
