//! In-memory LRU caches of inodes, directory entries (positive and
//! negative) and extended attributes in front of the metadata store.
//!
//! Coherence rule: every mutation holds the core's mutation lock, commits,
//! then publishes its changes here under the cache lock and bumps the
//! generation. A reader that missed fills the cache only if the generation
//! did not move while it read the database, so a stale read can never
//! overwrite a fresher value.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use super::types::{Inode, Kind};

pub type Xattrs = Arc<Vec<(Vec<u8>, Vec<u8>)>>;
/// A directory entry key and what it resolves to (`None`: known absent).
pub type DentryKey = (u64, Vec<u8>);
pub type DentryVal = Option<(u64, Kind)>;

struct Inner {
    gen: u64,
    inodes: LruCache<u64, Inode>,
    dentries: LruCache<DentryKey, DentryVal>,
    xattrs: LruCache<u64, Xattrs>,
}

pub struct Cache {
    inner: Mutex<Inner>,
}

/// Changes a committed mutation publishes.
#[derive(Default)]
pub struct Changes {
    pub inodes: Vec<Inode>,
    pub removed_inodes: Vec<u64>,
    pub dentries: Vec<(DentryKey, DentryVal)>,
    pub xattrs_changed: Vec<u64>,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        let cap = NonZeroUsize::new(capacity.max(16)).unwrap();
        Cache {
            inner: Mutex::new(Inner {
                gen: 0,
                inodes: LruCache::new(cap),
                dentries: LruCache::new(cap),
                xattrs: LruCache::new(NonZeroUsize::new(capacity.max(16) / 4).unwrap()),
            }),
        }
    }

    pub fn generation(&self) -> u64 {
        self.inner.lock().gen
    }

    pub fn inode(&self, ino: u64) -> Option<Inode> {
        self.inner.lock().inodes.get(&ino).cloned()
    }

    pub fn dentry(&self, parent: u64, name: &[u8]) -> Option<Option<(u64, Kind)>> {
        // The key is owned; a lookup allocates once, far below a query's cost.
        self.inner
            .lock()
            .dentries
            .get(&(parent, name.to_vec()))
            .copied()
    }

    pub fn xattrs(&self, ino: u64) -> Option<Xattrs> {
        self.inner.lock().xattrs.get(&ino).cloned()
    }

    /// Fill after a miss, unless a mutation published since `gen`.
    pub fn fill_inode(&self, gen: u64, inode: &Inode) {
        let mut c = self.inner.lock();
        if c.gen == gen {
            c.inodes.put(inode.ino, inode.clone());
        }
    }

    pub fn fill_dentry(&self, gen: u64, parent: u64, name: &[u8], v: Option<(u64, Kind)>) {
        let mut c = self.inner.lock();
        if c.gen == gen {
            c.dentries.put((parent, name.to_vec()), v);
        }
    }

    pub fn fill_xattrs(&self, gen: u64, ino: u64, v: Xattrs) {
        let mut c = self.inner.lock();
        if c.gen == gen {
            c.xattrs.put(ino, v);
        }
    }

    /// Publish a committed mutation.
    pub fn publish(&self, ch: Changes) {
        let mut c = self.inner.lock();
        c.gen += 1;
        for i in ch.inodes {
            c.inodes.put(i.ino, i);
        }
        for ino in ch.removed_inodes {
            c.inodes.pop(&ino);
            c.xattrs.pop(&ino);
        }
        for (k, v) in ch.dentries {
            c.dentries.put(k, v);
        }
        for ino in ch.xattrs_changed {
            c.xattrs.pop(&ino);
        }
    }

    /// Forget an inode's cached state (e.g. after an out-of-band change).
    pub fn invalidate_inode(&self, ino: u64) {
        let mut c = self.inner.lock();
        c.gen += 1;
        c.inodes.pop(&ino);
        c.xattrs.pop(&ino);
    }
}
