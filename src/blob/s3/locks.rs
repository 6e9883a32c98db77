//! One lock per object: operations on one object (fetch, send, remove)
//! never overlap, and operations on different objects never wait on each
//! other.
//!
//! (Before, 64 locks striped by inode number: a large file's upload, which
//! holds its lock for as long as the bucket takes, made every 64th file
//! of the store wait to be opened.)

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::lock_api::ArcMutexGuard;
use parking_lot::{Mutex, RawMutex};

/// The locks in use, by inode number; an entry goes with its last guard.
#[derive(Default)]
pub struct ObjectLocks {
    held: Mutex<HashMap<u64, Arc<Mutex<()>>>>,
}

/// The lock of one object, held.
pub struct ObjectGuard<'a> {
    locks: &'a ObjectLocks,
    ino: u64,
    guard: Option<ArcMutexGuard<RawMutex, ()>>,
}

impl ObjectLocks {
    /// Wait for the lock of `ino` and take it.
    pub fn lock(&self, ino: u64) -> ObjectGuard<'_> {
        let lock = self.entry(ino);
        self.guarded(ino, Some(lock.lock_arc()))
    }

    /// The lock of `ino` if nobody holds it.
    pub fn try_lock(&self, ino: u64) -> Option<ObjectGuard<'_>> {
        let lock = self.entry(ino);
        let guard = lock.try_lock_arc();
        // Dropped through the guard either way: the entry goes if unused.
        let g = self.guarded(ino, guard);
        g.guard.is_some().then_some(g)
    }

    fn entry(&self, ino: u64) -> Arc<Mutex<()>> {
        self.held.lock().entry(ino).or_default().clone()
    }

    fn guarded(&self, ino: u64, guard: Option<ArcMutexGuard<RawMutex, ()>>) -> ObjectGuard<'_> {
        ObjectGuard {
            locks: self,
            ino,
            guard,
        }
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.held.lock().len()
    }
}

impl Drop for ObjectGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self.locks.held.lock();
        // Whoever else wants this lock cloned it under `held`: the entry
        // is unused exactly when the map's reference is the only one.
        if held
            .get(&self.ino)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            held.remove(&self.ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_lock_apart_and_entries_go_with_their_guards() {
        let locks = ObjectLocks::default();
        let a = locks.lock(1);
        // Another object, even one a stripe would have shared (1 + 64).
        let b = locks.try_lock(65).expect("another object's lock");
        assert!(locks.try_lock(1).is_none(), "one object's lock twice");
        assert_eq!(locks.entries(), 2);
        drop((a, b));
        assert_eq!(locks.entries(), 0);
        let _a = locks.lock(1);
        assert_eq!(locks.entries(), 1);
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_let_go() {
        let locks = Arc::new(ObjectLocks::default());
        let g = locks.lock(7);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = {
            let locks = locks.clone();
            std::thread::spawn(move || {
                let _g = locks.lock(7);
                tx.send(()).unwrap();
            })
        };
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(100))
            .is_err());
        drop(g);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        assert_eq!(locks.entries(), 0);
    }
}
