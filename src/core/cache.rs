//! The in-memory metadata layer in front of the store.
//!
//! Two tiers under one lock:
//! - the *overlay* holds every change not yet committed to the database
//!   (never evicted); it is authoritative for the keys it holds;
//! - LRU caches hold committed state (inodes, directory entries including
//!   negative ones, attribute lists).
//!
//! Mutations apply their staged changes to the overlay atomically; the
//! writer thread snapshots the overlay, commits it as one batch, then moves
//! what it committed into the LRU. A directory created (or fully known)
//! during this run is *complete*: a name it lacks is absent without asking
//! the database, until one of its entries is evicted.
//!
//! Coherence of fills: a reader that missed reads the database and fills
//! the LRU only if the generation did not move meanwhile, so a stale read
//! never overwrites fresher state. The generation moves when committed
//! state enters the LRU (and when a follower forgets), not when a change
//! enters the overlay: the overlay outranks the LRU for its keys until its
//! changes are folded in, which moves the generation. (Moving it at every
//! change dropped nearly every fill while a burst of changes ran, so each
//! read went to the database again: issue 19.)

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use parking_lot::Mutex;

use crate::meta::{Batch, Dentry, XattrList};
use crate::types::journal;
use crate::types::{DentryKey, DirEntry, Inode, Kind};
use uuid::Uuid;

pub type Xattrs = Arc<XattrList>;

/// `list` to cache: every empty list shares one allocation, so knowing
/// that an inode has no attributes costs only its cache slot.
pub fn xattr_list(list: XattrList) -> Xattrs {
    static EMPTY: std::sync::LazyLock<Xattrs> = std::sync::LazyLock::new(Xattrs::default);
    if list.is_empty() {
        EMPTY.clone()
    } else {
        Arc::new(list)
    }
}

/// What a tier knows about a key.
pub enum Known<T> {
    /// Known: `None` means known absent.
    Hit(Option<T>),
    Miss,
}

/// A content version the tables now name, and the versions it replaced
/// (see `blob::NewVersion`): once the commit is durable the store deletes
/// those, and owes no report of it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordedVersion {
    pub ino: u64,
    pub name: String,
    pub superseded: Vec<String>,
}

/// What a commit released, for the writer to finish after it.
#[derive(Debug, Default)]
pub struct Released {
    /// The `reclaim` log row covering it; none when nothing is deleted
    /// (only a store's record of a version is owed).
    pub row: Option<Uuid>,
    /// Objects of removed inodes.
    pub objects: Vec<u64>,
    pub versions: Vec<RecordedVersion>,
}

/// Changes one mutation staged, applied atomically.
#[derive(Default)]
pub struct Staged {
    pub inodes: HashMap<u64, Option<Inode>>,
    pub dentries: HashMap<DentryKey, Option<Dentry>>,
    pub xattrs: HashMap<u64, Option<Xattrs>>,
    /// Objects to delete once the removal of their inode is committed.
    pub released_objects: Vec<u64>,
    /// Content versions recorded, with those they replaced.
    pub released_versions: Vec<RecordedVersion>,
    /// The `reclaim` log row covering `released_objects` and the
    /// versions replaced.
    pub reclaim: Option<Uuid>,
    /// Log rows of this mutation.
    pub journal: Vec<journal::Record>,
    /// Status changes of earlier log rows.
    pub journal_done: Vec<journal::Update>,
    /// Directories created empty: complete from birth.
    pub new_dirs: Vec<u64>,
    /// Change of (bytes, number) of regular files.
    pub usage: (i64, i64),
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.inodes.is_empty()
            && self.dentries.is_empty()
            && self.xattrs.is_empty()
            && self.released_objects.is_empty()
            && self.released_versions.is_empty()
            && self.new_dirs.is_empty()
            && self.journal.is_empty()
            && self.journal_done.is_empty()
            && self.usage == (0, 0)
    }
}

struct Inner {
    gen: u64,
    seq: u64,
    d_inodes: HashMap<u64, (u64, Option<Inode>)>,
    d_dentries: HashMap<DentryKey, (u64, Option<Dentry>)>,
    /// How many keys of `d_dentries` each directory has (none: absent).
    d_parents: HashMap<u64, usize>,
    d_xattrs: HashMap<u64, (u64, Option<Xattrs>)>,
    released: Vec<(u64, Released)>,
    journal: Vec<(u64, journal::Record)>,
    journal_done: Vec<(u64, journal::Update)>,
    /// Highest sequence handed to the writer in a snapshot.
    snap: u64,
    /// Usage changes not yet committed, by sequence.
    usage: Vec<(u64, i64, i64)>,
    /// Usage with everything staged: (bytes, files) of regular files.
    usage_total: (i64, i64),
    inodes: LruCache<u64, Inode>,
    dentries: LruCache<DentryKey, Option<Dentry>>,
    xattrs: LruCache<u64, Xattrs>,
    complete: HashSet<u64>,
    /// The entries of each complete directory in cookie order (staged ones
    /// included): its listing needs no query and no commit first.
    listings: HashMap<u64, Listing>,
}

/// A directory's entries by cookie: (name, inode, kind).
type Listing = std::collections::BTreeMap<u64, (Vec<u8>, u64, Kind)>;

impl Inner {
    fn put_dentry(&mut self, k: DentryKey, v: Option<Dentry>) {
        let replacing = self.dentries.contains(&k);
        if let Some((evicted, Some(_))) = self.dentries.push(k, v) {
            if !replacing {
                // A live entry left the cache: its directory is no longer
                // fully known.
                self.complete.remove(&evicted.0);
                self.listings.remove(&evicted.0);
            }
        }
    }

    /// A row not yet handed to the writer is settled in place (an
    /// operation that starts and ends between two commits costs one insert);
    /// otherwise the change follows as an update.
    fn push_done(&mut self, seq: u64, u: journal::Update) {
        let snap = self.snap;
        if let Some((s, r)) = self.journal.iter_mut().find(|(_, r)| r.id == u.id) {
            if *s > snap {
                r.status = u.status;
                r.outcome = u.outcome.or(r.outcome.take());
                r.error = u.error.or(r.error.take());
                r.completed_at = Some(u.completed_at);
                *s = seq;
                return;
            }
        }
        self.journal_done.push((seq, u));
    }

    fn dirty_len(&self) -> usize {
        self.d_inodes.len() + self.d_dentries.len() + self.d_xattrs.len() + self.journal.len()
    }
}

pub struct Cache {
    inner: Mutex<Inner>,
    hits: std::sync::atomic::AtomicU64,
    misses: std::sync::atomic::AtomicU64,
}

/// How often lookups were answered from memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        let cap = NonZeroUsize::new(capacity.max(16)).unwrap();
        Cache {
            inner: Mutex::new(Inner {
                gen: 0,
                seq: 0,
                d_inodes: HashMap::new(),
                d_dentries: HashMap::new(),
                d_parents: HashMap::new(),
                d_xattrs: HashMap::new(),
                released: Vec::new(),
                journal: Vec::new(),
                journal_done: Vec::new(),
                snap: 0,
                usage: Vec::new(),
                usage_total: (0, 0),
                inodes: LruCache::new(cap),
                dentries: LruCache::new(cap),
                // As many as inodes: `ls -l`, `cp -a` and rsync ask every
                // entry's attributes, and most lists are empty (one shared
                // allocation, see `xattr_list`).
                xattrs: LruCache::new(cap),
                complete: HashSet::new(),
                listings: HashMap::new(),
            }),
            hits: Default::default(),
            misses: Default::default(),
        }
    }

    pub fn stats(&self) -> CacheStats {
        use std::sync::atomic::Ordering::Relaxed;
        CacheStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
        }
    }

    fn count<T>(&self, k: Known<T>) -> Known<T> {
        use std::sync::atomic::Ordering::Relaxed;
        match &k {
            Known::Hit(_) => self.hits.fetch_add(1, Relaxed),
            Known::Miss => self.misses.fetch_add(1, Relaxed),
        };
        k
    }

    /// Entries each of its LRU caches holds at most.
    pub fn capacity(&self) -> usize {
        self.inner.lock().inodes.cap().get()
    }

    pub fn generation(&self) -> u64 {
        self.inner.lock().gen
    }

    pub fn inode(&self, ino: u64) -> Known<Inode> {
        let k = self.inode_raw(ino);
        self.count(k)
    }

    /// The recorded size of `ino` if the cache holds it and its lock is
    /// free this instant (never waits: for a thread that must not block
    /// on the core's locks, see `fuse::write_guard`).
    pub fn try_size(&self, ino: u64) -> Option<u64> {
        let mut c = self.inner.try_lock()?;
        if let Some((_, v)) = c.d_inodes.get(&ino) {
            return v.as_ref().map(|i| i.size);
        }
        c.inodes.get(&ino).map(|i| i.size)
    }

    /// Whether `inode` would answer without the database (not counted).
    pub fn holds_inode(&self, ino: u64) -> bool {
        !matches!(self.inode_raw(ino), Known::Miss)
    }

    /// Whether `ino` is known to exist while its attribute list is not
    /// known (the two LRUs evict apart).
    pub fn lacks_xattrs(&self, ino: u64) -> bool {
        matches!(self.inode_raw(ino), Known::Hit(Some(_)))
            && matches!(self.xattrs(ino), Known::Miss)
    }

    /// The entry `dentry` would answer, without counting a hit or miss.
    pub fn peek_dentry(&self, parent: u64, name: &[u8]) -> Known<Dentry> {
        self.dentry_raw(parent, name)
    }

    fn inode_raw(&self, ino: u64) -> Known<Inode> {
        let mut c = self.inner.lock();
        if let Some((_, v)) = c.d_inodes.get(&ino) {
            return Known::Hit(v.clone());
        }
        match c.inodes.get(&ino) {
            Some(i) => Known::Hit(Some(i.clone())),
            None => Known::Miss,
        }
    }

    pub fn dentry(&self, parent: u64, name: &[u8]) -> Known<Dentry> {
        let k = self.dentry_raw(parent, name);
        self.count(k)
    }

    fn dentry_raw(&self, parent: u64, name: &[u8]) -> Known<Dentry> {
        let mut c = self.inner.lock();
        // Keys are owned; one allocation per lookup is far below a query.
        let key = (parent, name.to_vec());
        if let Some((_, v)) = c.d_dentries.get(&key) {
            return Known::Hit(*v);
        }
        if let Some(v) = c.dentries.get(&key) {
            return Known::Hit(*v);
        }
        if c.complete.contains(&parent) {
            return Known::Hit(None);
        }
        Known::Miss
    }

    pub fn xattrs(&self, ino: u64) -> Known<Xattrs> {
        let mut c = self.inner.lock();
        if let Some((_, v)) = c.d_xattrs.get(&ino) {
            return Known::Hit(v.clone());
        }
        match c.xattrs.get(&ino) {
            Some(x) => Known::Hit(Some(x.clone())),
            None => Known::Miss,
        }
    }

    /// Fill after a miss, unless something changed since `gen`.
    pub fn fill_inode(&self, gen: u64, inode: &Inode) {
        let mut c = self.inner.lock();
        if c.gen == gen {
            c.inodes.put(inode.ino, inode.clone());
        }
    }

    pub fn fill_dentry(&self, gen: u64, parent: u64, name: &[u8], v: Option<Dentry>) {
        let mut c = self.inner.lock();
        if c.gen == gen {
            c.put_dentry((parent, name.to_vec()), v);
        }
    }

    pub fn fill_xattrs(&self, gen: u64, ino: u64, v: Xattrs) {
        let mut c = self.inner.lock();
        if c.gen == gen {
            c.xattrs.put(ino, v);
        }
    }

    /// Inode `ino` was just made: unless a change staged its attributes,
    /// it has none in the database (inode numbers are never reused).
    pub fn fresh_inode_xattrs(&self, ino: u64) {
        let mut c = self.inner.lock();
        // Anything already known (staged, or folded in since) is newer.
        if !c.d_xattrs.contains_key(&ino) && !c.xattrs.contains(&ino) {
            c.xattrs.put(ino, xattr_list(Vec::new()));
        }
    }

    /// Up to `limit` entries of a complete directory after cookie `after`
    /// (`None`: the directory is not complete; ask the store).
    pub fn listing(&self, dir: u64, after: u64, limit: usize) -> Option<Vec<DirEntry>> {
        let c = self.inner.lock();
        let l = c.listings.get(&dir)?;
        Some(
            l.range(after.saturating_add(1)..)
                .take(limit)
                .map(|(id, (name, ino, kind))| DirEntry {
                    offset: *id,
                    ino: *ino,
                    kind: *kind,
                    name: name.clone(),
                })
                .collect(),
        )
    }

    /// Whether `dir`'s listing is kept in memory.
    pub fn has_listing(&self, dir: u64) -> bool {
        self.inner.lock().listings.contains_key(&dir)
    }

    /// Whether uncommitted entries exist under `parent`.
    pub fn has_dirty_entries(&self, parent: u64) -> bool {
        self.inner.lock().d_parents.contains_key(&parent)
    }

    /// Uncommitted entries under `parent`: (present names, removed names).
    pub fn dirty_entries(&self, parent: u64) -> (usize, Vec<Vec<u8>>) {
        let c = self.inner.lock();
        let mut present = 0;
        let mut removed = Vec::new();
        for ((p, name), (_, v)) in &c.d_dentries {
            if *p == parent {
                match v {
                    Some(_) => present += 1,
                    None => removed.push(name.clone()),
                }
            }
        }
        (present, removed)
    }

    pub fn dirty_len(&self) -> usize {
        self.inner.lock().dirty_len()
    }

    /// Apply one mutation's changes; returns its sequence number.
    pub fn apply(&self, s: Staged) -> u64 {
        let mut c = self.inner.lock();
        c.seq += 1;
        let seq = c.seq;
        for (k, v) in s.inodes {
            if v.is_none() {
                c.complete.remove(&k);
                c.listings.remove(&k);
            }
            c.d_inodes.insert(k, (seq, v));
        }
        // New directories first: entries of this same change may go in them.
        for ino in s.new_dirs {
            c.complete.insert(ino);
            c.listings.insert(ino, Default::default());
        }
        // Listings: every replaced entry leaves before any new one comes
        // (a rename moves one cookie from a name to another).
        for k in s.dentries.keys() {
            if c.listings.contains_key(&k.0) {
                let old = match c.d_dentries.get(k) {
                    Some((_, old)) => *old,
                    None => c.dentries.peek(k).copied().flatten(),
                };
                if let (Some(old), Some(l)) = (old, c.listings.get_mut(&k.0)) {
                    l.remove(&old.id);
                }
            }
        }
        for (k, v) in &s.dentries {
            if let (Some(d), Some(l)) = (v, c.listings.get_mut(&k.0)) {
                l.insert(d.id, (k.1.clone(), d.ino, d.kind));
            }
        }
        for (k, v) in s.dentries {
            let parent = k.0;
            if c.d_dentries.insert(k, (seq, v)).is_none() {
                *c.d_parents.entry(parent).or_default() += 1;
            }
        }
        for (k, v) in s.xattrs {
            c.d_xattrs.insert(k, (seq, v));
        }
        if !s.released_objects.is_empty() || !s.released_versions.is_empty() {
            debug_assert!(s.released_objects.is_empty() || s.reclaim.is_some());
            c.released.push((
                seq,
                Released {
                    row: s.reclaim,
                    objects: s.released_objects,
                    versions: s.released_versions,
                },
            ));
        }
        for r in s.journal {
            c.journal.push((seq, r));
        }
        if s.usage != (0, 0) {
            c.usage.push((seq, s.usage.0, s.usage.1));
            c.usage_total.0 += s.usage.0;
            c.usage_total.1 += s.usage.1;
        }
        for u in s.journal_done {
            c.push_done(seq, u);
        }
        seq
    }

    /// Record a status change of a log row (e.g. after the writer removed
    /// the objects of a `reclaim` row); returns its sequence number.
    pub fn push_journal_done(&self, u: journal::Update) -> u64 {
        let mut c = self.inner.lock();
        c.seq += 1;
        let seq = c.seq;
        c.push_done(seq, u);
        seq
    }

    /// Everything uncommitted, as one batch, with the sequence it reaches.
    pub fn snapshot(&self) -> (u64, Batch) {
        let mut c = self.inner.lock();
        c.snap = c.seq;
        let batch = Batch {
            inodes: c
                .d_inodes
                .iter()
                .map(|(k, (_, v))| (*k, v.clone()))
                .collect(),
            dentries: c
                .d_dentries
                .iter()
                .map(|(k, (_, v))| (k.clone(), *v))
                .collect(),
            xattrs: c
                .d_xattrs
                .iter()
                .map(|(k, (_, v))| (*k, v.as_ref().map(|x| x.as_ref().clone())))
                .collect(),
            ino_reserved: None,
            journal: c.journal.iter().map(|(_, r)| r.clone()).collect(),
            journal_done: c.journal_done.iter().map(|(_, u)| u.clone()).collect(),
            config: None,
            usage_delta: c
                .usage
                .iter()
                .fold((0, 0), |(b, f), (_, db, df)| (b + db, f + df)),
        };
        (c.seq, batch)
    }

    /// The batch reaching `seq` is committed: move what did not change
    /// since into the LRU; return objects and versions now safe to
    /// delete, with the `reclaim` rows that cover them.
    pub fn committed(&self, seq: u64) -> Vec<Released> {
        let mut c = self.inner.lock();
        c.gen += 1;
        for (k, v) in take_committed(&mut c.d_inodes, seq) {
            settle(&mut c.inodes, k, v);
        }
        for (k, v) in take_committed(&mut c.d_dentries, seq) {
            if let Some(n) = c.d_parents.get_mut(&k.0) {
                *n -= 1;
                if *n == 0 {
                    c.d_parents.remove(&k.0);
                }
            }
            c.put_dentry(k, v);
        }
        for (k, v) in take_committed(&mut c.d_xattrs, seq) {
            settle(&mut c.xattrs, k, v);
        }
        c.journal.retain(|(s, _)| *s > seq);
        c.usage.retain(|(s, _, _)| *s > seq);
        c.journal_done.retain(|(s, _)| *s > seq);
        let (done, later): (Vec<_>, Vec<_>) = c.released.drain(..).partition(|(s, _)| *s <= seq);
        c.released = later;
        done.into_iter().map(|(_, r)| r).collect()
    }

    /// (bytes, files) of regular files including everything staged.
    pub fn usage_total(&self) -> (i64, i64) {
        self.inner.lock().usage_total
    }

    /// Start the running usage from the committed figures (at mount).
    pub fn set_usage_total(&self, bytes: i64, files: i64) {
        self.inner.lock().usage_total = (bytes, files);
    }

    pub fn seq(&self) -> u64 {
        self.inner.lock().seq
    }

    /// Another node committed changes to these inodes and entries (a
    /// replica following the writer): forget what the committed tier
    /// holds of them, and the listings they belong to. Fills that read
    /// the database before now are dropped (the generation moves).
    pub fn forget(&self, inos: &[u64], entries: &[(u64, Vec<u8>)]) {
        let mut c = self.inner.lock();
        c.gen += 1;
        for ino in inos {
            c.inodes.pop(ino);
            c.xattrs.pop(ino);
        }
        for k in entries {
            c.dentries.pop(k);
            c.complete.remove(&k.0);
            c.listings.remove(&k.0);
        }
    }

    /// Forget the whole committed tier (a replica that lost track of the
    /// writer's changes).
    pub fn forget_all(&self) {
        let mut c = self.inner.lock();
        c.gen += 1;
        c.inodes.clear();
        c.dentries.clear();
        c.xattrs.clear();
        c.complete.clear();
        c.listings.clear();
    }
}

/// Remove the overlay entries that the batch reaching `seq` committed
/// (those not changed again since).
fn take_committed<K: Hash + Eq + Clone, V>(
    overlay: &mut HashMap<K, (u64, Option<V>)>,
    seq: u64,
) -> Vec<(K, Option<V>)> {
    let keys: Vec<K> = overlay
        .iter()
        .filter(|(_, (s, _))| *s <= seq)
        .map(|(k, _)| k.clone())
        .collect();
    keys.into_iter()
        .filter_map(|k| overlay.remove(&k).map(|(_, v)| (k, v)))
        .collect()
}

/// Record committed state in an LRU: present values cached, removed ones dropped.
fn settle<K: Hash + Eq, V>(lru: &mut LruCache<K, V>, k: K, v: Option<V>) {
    match v {
        Some(v) => {
            lru.put(k, v);
        }
        None => {
            lru.pop(&k);
        }
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
