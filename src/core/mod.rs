//! The filesystem core: namespace, inodes, open files and the rules that
//! govern them. It knows nothing of FUSE or HTTP; both doors call these
//! operations, so every rule is written once.
//!
//! Concurrency: reads are served from the in-memory layer (`cache`) or the
//! metadata store without holding the mutation lock. Metadata mutations
//! take the mutation lock only while they stage and apply their changes in
//! memory (microseconds); the writer thread commits them in batches. Data
//! I/O on open files never takes it.

pub mod access;
pub mod acl;
pub mod archive_attrs;
pub mod cache;
mod checksum;
pub mod collector;
mod data;
mod direct_fill;
pub mod flags;
mod handles;
mod import;
mod listed;
pub mod listing;
mod maintenance;
mod mapped;
pub mod mountinfo;
pub mod namespace;
mod objpool;
mod open;
pub mod opstats;
pub mod options;
pub mod policy;
mod publish;
pub mod recover;
pub mod render;
pub mod replica;
pub mod search;
mod sidecar_sync;
mod start;
mod stats;
pub mod trash;
mod upload;
mod workers;
mod writer;
mod xattr;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::blob::ContentStore;
use crate::meta::{Dentry, MetaStore};
use crate::types::error::{enoent, Error, Result};
use crate::types::journal;
use crate::types::DentryKey;
use crate::types::{Inode, Kind};
use cache::{Cache, Known, Staged, Xattrs};
pub use open::{open_for_rebuild, open_offline, open_store, serving_mount, StoreLock};
pub use options::StoreOptions;
use writer::Writer;

pub use handles::{Handle, OpenChange};
pub use import::{ImportMeta, ImportOutcome};
pub use publish::{estale, Expect, Published};
pub use upload::{Condition, Content, NewFileId, UploadOptions, Uploaded};

pub struct Fs {
    meta: Box<dyn MetaStore>,
    objects: Arc<dyn ContentStore>,
    cache: Cache,
    writer: Writer,
    mutate: Mutex<()>,
    next_ino: AtomicU64,
    next_dentry_id: AtomicU64,
    /// File handles, open inodes and open directories.
    files: handles::OpenFiles,
    /// Closed files a shared mapping may still write (see `mapped`).
    mappings: mapped::Mappings,
    /// Chunks of recent listings, refilled whole on a miss.
    listed: listed::Listed,
    backing: PathBuf,
    store_id: String,
    journal_retention: journal::Retention,
    /// Disk space kept back for the database (see `blob::ballast`).
    ballast: crate::blob::ballast::Ballast,
    hasher: std::sync::OnceLock<checksum::Hasher>,
    sidecars: Arc<sidecar_sync::Sidecars>,
    /// Anonymous files made ahead of need for creates.
    pool: Arc<objpool::ObjectPool>,
    invalidator: std::sync::OnceLock<Arc<dyn Invalidator>>,
    /// The store's mode and capacity, followed live.
    policy: policy::Live,
    collector: collector::CollectorConfig,
    /// Bound on retention locks (`--max-retention`); `None`: none.
    max_retention: Option<std::time::Duration>,
    /// When reads move atime (see `on_open`).
    atime: options::Atime,
    ops: opstats::OpStats,
    /// Log rows recovery settled when this mount started.
    recovered: u64,
    /// Inodes in the store, staged changes included (for statfs).
    inodes: std::sync::atomic::AtomicI64,
    trash: trash::TrashState,
    /// Regular files whose original name a rename already replaced, by
    /// inode, with their creation time (see `archive_attrs::takes_new_name`);
    /// only files still inside the window are kept.
    renamed_fresh: Mutex<HashMap<u64, crate::types::Timestamp>>,
    /// The background threads, and who stops them when (see `workers`).
    workers: workers::Workers,
    /// Writer, replica or standby, and how far a follower has followed.
    follow: replica::Follow,
}

/// Lower the calling thread's CPU priority: background upkeep (sidecars,
/// hashing, the collector) yields to the requests users wait for.
pub(crate) fn background_thread() {
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Tells a door that caches (the kernel, through FUSE) what changed behind
/// its back. Doors other than the one that made a change call it after the
/// change, never from inside a request of the caching door itself.
pub trait Invalidator: Send + Sync {
    /// The name `name` in directory `parent` changed (created, removed,
    /// replaced).
    fn entry(&self, parent: u64, name: &[u8]);
    /// The attributes or content of `ino` changed.
    fn inode(&self, ino: u64);
    /// Anything may have changed (a replica that lost track of the
    /// writer's changes): drop every name and inode the door caches.
    fn everything(&self);
}

/// Attributes as a door shows them.
#[derive(Clone, Debug)]
pub struct Attr {
    pub inode: Inode,
    /// 512-byte blocks allocated.
    pub blocks: u64,
}

impl Fs {
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Whether content lives in a remote store: opening a file may wait on
    /// the network while it is fetched.
    pub fn content_is_remote(&self) -> bool {
        self.objects.is_remote()
    }

    /// A remote content store's cache and traffic (metrics).
    pub fn content_stats(&self) -> Option<crate::blob::RemoteStats> {
        self.objects.remote_stats()
    }

    /// Install the caching door's invalidator (once, at mount).
    pub fn set_invalidator(&self, inv: Arc<dyn Invalidator>) {
        let _ = self.invalidator.set(inv);
    }

    /// The caching door's invalidator, if one is installed.
    pub fn invalidator(&self) -> Option<&Arc<dyn Invalidator>> {
        self.invalidator.get()
    }

    /// Log rows recovery settled when this mount started (after a crash).
    pub fn recovered_at_start(&self) -> u64 {
        self.recovered
    }

    /// Counts and latencies of the operations the doors serve.
    pub fn ops(&self) -> &opstats::OpStats {
        &self.ops
    }

    /// Hits and misses of the in-memory metadata caches.
    pub fn cache_stats(&self) -> cache::CacheStats {
        self.cache.stats()
    }

    /// Inodes in the store, staged changes included.
    pub(crate) fn inode_total(&self) -> u64 {
        self.inodes.load(Ordering::Acquire).max(0) as u64
    }

    /// Whether the writer still commits (not stopped), and its last
    /// commit error if the latest attempt failed (the service watchdog).
    pub fn writer_health(&self) -> (bool, Option<String>) {
        self.writer.health()
    }

    /// The store's mode now.
    pub fn mode(&self) -> policy::Mode {
        self.policy.mode()
    }

    /// Whether the current mode allows `change`.
    pub(crate) fn allow(&self, change: policy::Change) -> Result<()> {
        // A store whose lease passed to another writer is read-only here.
        if !matches!(change, policy::Change::Read) {
            self.refuse_as_follower()?;
            self.writer.check_fenced()?;
        }
        policy::check(self.mode(), change)?;
        // A change of mode under way rules already (see `change_mode`).
        match self.policy.draining() {
            Some(to) => policy::check(to, change),
            None => Ok(()),
        }
    }

    /// Whether a write through a handle opened earlier may go on: the
    /// mode's rule, but not a change under way, which lets such writers
    /// finish.
    pub(crate) fn allow_handle_write(&self) -> Result<()> {
        self.refuse_as_follower()?;
        self.writer.check_fenced()?;
        policy::check(self.mode(), policy::Change::Write)
    }

    /// Whether `ino` is append-only (`chattr +a`): its writers' writes
    /// must pass the core (see `flags::check_write`).
    pub fn is_append_only(&self, ino: u64) -> bool {
        self.inode(ino)
            .is_ok_and(|i| i.flags & crate::types::flags::APPEND != 0)
    }

    /// Whether the daemon must see every write (see `policy`): if so, the
    /// doors must not hand writes to the kernel (FUSE passthrough). True
    /// whenever a capacity is set, and while BACKING is nearly full with
    /// something in the trash (a write that fails for lack of space then
    /// purges the trash and is retried). Not for modes: rw's rules are
    /// about removal, renames and shrinking, which the daemon always sees,
    /// and a change to ro or ar waits for (or refuses) open writers.
    pub fn writes_through_daemon(&self) -> bool {
        self.capacity().is_some() || self.space_tight()
    }

    /// Log when usage crosses a free-space level.
    fn note_level(&self) {
        let Some(cap) = self.capacity() else { return };
        let level = policy::Thresholds::default().level(cap, self.usage().0);
        if self.policy.crossed(level) {
            let (used, _) = self.usage();
            if level == policy::Level::Ok {
                tracing::info!(used, capacity = cap, "capacity level back to ok");
            } else {
                tracing::warn!(?level, used, capacity = cap, "capacity level crossed");
            }
        }
    }

    /// The capacity (bytes of regular files), if one is set.
    pub fn capacity(&self) -> Option<u64> {
        self.policy.capacity()
    }

    /// (bytes, files) of regular files, including staged changes.
    pub fn usage(&self) -> (u64, u64) {
        let (b, f) = self.cache.usage_total();
        (b.max(0) as u64, f.max(0) as u64)
    }

    /// Follow mode changes made by other processes (`artfs mode`).
    pub(crate) fn refresh_policy(&self) -> Result<()> {
        if let Some(c) = self.meta.config()? {
            self.policy.set_capacity(c.capacity);
            if let Ok(m) = c.mode.parse::<policy::Mode>() {
                let old = self.policy.set_mode(m);
                if old != m {
                    tracing::warn!(from = %old, to = %m,
                        by = %c.mode_changed_by, "store mode changed");
                }
            }
        }
        Ok(())
    }

    /// The inode with this stable file id (commits what is staged first:
    /// the index lives in the database).
    /// A file in the trash counts as deleted here.
    pub fn find_by_file_id(&self, file_id: &str) -> Result<Option<u64>> {
        self.wait_committed()?;
        let Some(ino) = self.meta.find_by_file_id(file_id)? else {
            return Ok(None);
        };
        if trash::trashed(self.meta.as_ref(), ino)? {
            return Ok(None);
        }
        Ok(Some(ino))
    }

    /// Fetch an inode through the in-memory layer.
    fn inode(&self, ino: u64) -> Result<Inode> {
        let mut known = self.cache.inode(ino);
        if matches!(known, Known::Miss) && self.refill_listed(ino) {
            known = self.cache.inode(ino);
        }
        match known {
            Known::Hit(Some(i)) => Ok(i),
            Known::Hit(None) => Err(enoent()),
            Known::Miss => {
                let gen = self.cache.generation();
                let inode = self.meta.get_inode(ino)?.ok_or_else(enoent)?;
                self.cache.fill_inode(gen, &inode);
                Ok(inode)
            }
        }
    }

    /// After a miss on `ino`: if it was listed lately, load its whole
    /// chunk of the listing (see `listed`); whether that was done.
    fn refill_listed(&self, ino: u64) -> bool {
        let cap = self.cache.capacity() as u64;
        // Loaded at least half a cache ago: `ls` of a directory as large
        // as the cache comes back to a chunk one cache after listing it.
        // Worth it only where a chunk is small beside the cache.
        match self.listed.take(ino, cap / 2, (cap / 4) as usize) {
            Some(chunk) => {
                self.fill_listed(&chunk);
                true
            }
            None => {
                self.listed.loaded(1);
                false
            }
        }
    }

    /// Resolve a name in a directory through the in-memory layer.
    fn child(&self, parent: u64, name: &[u8]) -> Result<Option<Dentry>> {
        match self.cache.dentry(parent, name) {
            Known::Hit(v) => Ok(v),
            Known::Miss => {
                let gen = self.cache.generation();
                let v = self.meta.lookup(parent, name)?;
                self.cache.fill_dentry(gen, parent, name, v);
                Ok(v)
            }
        }
    }

    fn xattr_list(&self, ino: u64) -> Result<Xattrs> {
        let mut known = self.cache.xattrs(ino);
        if matches!(known, Known::Miss) && self.refill_listed(ino) {
            known = self.cache.xattrs(ino);
        }
        match known {
            Known::Hit(Some(x)) => Ok(x),
            Known::Hit(None) => Ok(Arc::default()),
            Known::Miss => {
                let gen = self.cache.generation();
                self.inode(ino)?;
                let x = cache::xattr_list(self.meta.xattrs(ino)?);
                self.cache.fill_xattrs(gen, ino, x.clone());
                Ok(x)
            }
        }
    }

    /// Run a metadata mutation: stage its changes, then apply them to the
    /// in-memory layer atomically and let the writer commit them. An error
    /// drops everything staged.
    fn mutate<T>(&self, f: impl FnOnce(&mut Mutation<'_>) -> Result<T>) -> Result<T> {
        // A follower runs no writer: whatever it staged would shadow the
        // writer's changes forever.
        self.refuse_as_follower()?;
        self.writer.throttle(self)?;
        let _guard = self.mutate.lock();
        let mut tx = Mutation {
            fs: self,
            staged: Staged::default(),
            exempt: false,
            inodes: 0,
        };
        let out = f(&mut tx)?;
        // Capacity is checked once, on what the whole mutation adds.
        if let Some(cap) = self.capacity() {
            if tx.staged.usage.0 > 0 && !tx.exempt {
                let used = self.cache.usage_total().0.max(0) as u64;
                if used + tx.staged.usage.0 as u64 > cap {
                    return Err(Error::posix(libc::ENOSPC, "store capacity reached"));
                }
            }
        }
        let replaced = tx
            .staged
            .released_versions
            .iter()
            .any(|v| !v.superseded.is_empty());
        if !tx.staged.released_objects.is_empty() || replaced {
            // Objects go only after the inode removal commits, replaced
            // versions only after the commit naming their successor; this
            // intent lets recovery finish the job if the daemon dies in
            // between.
            let rec = journal::Record::new(
                journal::Op::Reclaim,
                journal::Status::Pending,
                None,
                serde_json::json!({ "inos": tx.staged.released_objects,
                                    "versions": tx.staged.released_versions }),
            );
            tx.staged.reclaim = Some(rec.id);
            tx.staged.journal.push(rec);
        }
        self.inodes.fetch_add(tx.inodes, Ordering::AcqRel);
        let grew = tx.staged.usage.0 != 0;
        if !tx.staged.is_empty() {
            self.cache.apply(tx.staged);
            self.writer.kick();
            if grew {
                self.note_level();
            }
        }
        Ok(out)
    }

    /// Wait until every mutation so far is committed to the store.
    pub fn wait_committed(&self) -> Result<()> {
        self.writer.wait_for(self.cache.seq())
    }

    fn alloc_ino(&self) -> Result<u64> {
        let ino = self.next_ino.fetch_add(1, Ordering::AcqRel);
        // Reserve ahead so numbers are durable before use and never reused
        // after a crash; block only if the writer fell a whole step behind.
        let want = self.writer.want_reserved.load(Ordering::Acquire);
        if ino + writer::INO_RESERVE_STEP / 2 >= want {
            self.writer
                .want_reserved
                .fetch_max(ino + writer::INO_RESERVE_STEP, Ordering::AcqRel);
            self.writer.kick();
        }
        while ino >= self.writer.reserved.load(Ordering::Acquire) {
            self.writer.wait_for(self.cache.seq())?;
            self.writer.kick();
        }
        Ok(ino)
    }

    fn attr_of(&self, mut inode: Inode) -> Result<Attr> {
        if inode.ino == crate::types::ROOT_INO {
            // The trash is hidden: its ".." does not count for the root.
            if self.trash_ino().is_some() {
                inode.nlink = inode.nlink.saturating_sub(1);
            }
        }
        if inode.kind == Kind::File {
            if let Some(a) = self.open_attr(&inode)? {
                return Ok(a);
            }
            // A last release may have recorded the size and closed between
            // the two reads: read again, after the open state is gone.
            inode = self.inode(inode.ino)?;
        }
        let blocks = inode.blocks.unwrap_or_else(|| inode.size.div_ceil(512));
        Ok(Attr { inode, blocks })
    }

    /// Commit everything, stop the writer and close the store (at unmount).
    /// The threads end in the order `workers` documents.
    pub fn close(&self) {
        let mut took = CloseTimes::start();
        // The follower sleeps on its own wake-up (hints), not the stop.
        self.workers.signal_periodic();
        self.follow.wake();
        self.workers.stop_periodic();
        if self.role() != options::Role::Writer {
            // A follower staged nothing and runs no writer.
            self.release_all();
            self.meta.close();
            return;
        }
        took.step("threads");
        self.release_all();
        // What shared mappings wrote after their file's last close is
        // recorded; one still writing is recorded as it is now.
        self.settle_all_mappings();
        self.record_mappings_at_close();
        if let Err(e) = self.wait_committed() {
            tracing::error!(error = %e, "could not commit metadata at close");
        }
        took.step("commit");
        self.pool.stop(self);
        self.workers.join(workers::OBJECTS);
        took.step("objects");
        // A remote store sends what its cache still holds unsent.
        if let Err(e) = self.objects.flush() {
            tracing::error!(error = %e, "content not sent at close stays in the cache; \
                it is sent at the next mount");
        }
        // And what it sent is recorded before the writer stops.
        self.record_reported_versions();
        if let Err(e) = self.wait_committed() {
            tracing::error!(error = %e, "could not record the content versions sent at close");
        }
        // The sidecar thread stops between two sidecars (before a slice's
        // syncfs); what it had queued is written below, in bounded time.
        self.sidecars.stop();
        self.workers.join(workers::SIDECARS);
        took.step("sidecar thread");
        self.writer.shutdown();
        self.workers.join(workers::WRITER);
        self.workers.stop_lease();
        took.step("writer");
        // Nothing commits any more: finish the sidecars of what committed
        // after the drain (the hasher, the last releases), so a clean stop
        // leaves no pending row.
        sidecar_sync::finish_at_close(self);
        took.step("sidecars at close");
        self.meta.close();
        took.step("database");
        took.log();
    }
}

/// How long each step of a writer's close took, logged once at the end:
/// the time from unmount to exit is a promise (issue 19), and this says
/// where it went when it is not kept.
struct CloseTimes {
    started: std::time::Instant,
    last: std::time::Instant,
    steps: Vec<(&'static str, std::time::Duration)>,
}

impl CloseTimes {
    fn start() -> CloseTimes {
        let now = std::time::Instant::now();
        CloseTimes {
            started: now,
            last: now,
            steps: Vec::new(),
        }
    }

    fn step(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }

    fn log(&self) {
        let steps: Vec<String> = self
            .steps
            .iter()
            .map(|(n, d)| format!("{n} {} ms", d.as_millis()))
            .collect();
        tracing::info!(
            ms = self.started.elapsed().as_millis() as u64,
            steps = %steps.join(", "),
            "store closed"
        );
    }
}

/// One mutation's staging area, with read-your-writes.
pub(crate) struct Mutation<'a> {
    fs: &'a Fs,
    staged: Staged,
    /// Record what already happened (sizes found in objects): no capacity
    /// check.
    exempt: bool,
    /// Inodes this mutation adds (less those it removes).
    inodes: i64,
}

impl Mutation<'_> {
    /// Name `v` as the content version of `i` (a regular file; the caller
    /// puts `i`) if it is newer than the one recorded, releasing the
    /// versions it replaced (the recorded one, and the one the store
    /// replaced) to be deleted once this commits. Returns whether `i`
    /// changed. A version not newer is only acknowledged to the store.
    fn record_version(&mut self, i: &mut Inode, v: &crate::blob::NewVersion) -> bool {
        let newer =
            i.kind == Kind::File && crate::blob::is_later_version(&v.name, i.version.as_deref());
        let mut superseded = Vec::new();
        if newer {
            superseded.extend(v.superseded.iter().cloned());
            if let Some(old) = i.version.take() {
                if !superseded.contains(&old) {
                    superseded.push(old);
                }
            }
            i.version = Some(v.name.clone());
        }
        self.staged.released_versions.push(cache::RecordedVersion {
            ino: i.ino,
            name: v.name.clone(),
            superseded,
        });
        newer
    }

    fn inode(&mut self, ino: u64) -> Result<Inode> {
        match self.staged.inodes.get(&ino) {
            Some(Some(i)) => Ok(i.clone()),
            Some(None) => Err(enoent()),
            None => self.fs.inode(ino),
        }
    }

    fn dentry(&mut self, parent: u64, name: &[u8]) -> Result<Option<Dentry>> {
        if let Some(v) = self.staged.dentries.get(&(parent, name.to_vec())) {
            return Ok(*v);
        }
        self.fs.child(parent, name)
    }

    fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>> {
        Ok(self.dentry(parent, name)?.map(|d| (d.ino, d.kind)))
    }

    /// A directory new names may go into: it exists, is a directory and
    /// was not removed.
    fn live_dir(&mut self, ino: u64) -> Result<Inode> {
        let dir = self.inode(ino)?;
        if !dir.kind.is_dir() {
            return Err(crate::types::error::enotdir());
        }
        if dir.nlink == 0 {
            return Err(enoent());
        }
        Ok(dir)
    }

    fn put(&mut self, inode: &Inode) -> Result<()> {
        if inode.kind == Kind::File {
            if let Ok(old) = self.inode(inode.ino) {
                self.staged.usage.0 += inode.size as i64 - old.size as i64;
            }
        }
        self.staged.inodes.insert(inode.ino, Some(inode.clone()));
        Ok(())
    }

    /// Insert a new inode, allocating its number.
    fn insert(&mut self, inode: Inode) -> Result<Inode> {
        let ino = self.fs.alloc_ino()?;
        Ok(self.insert_at(inode, ino))
    }

    /// Insert a new inode under a number allocated for it already (one
    /// the object pool held, or an import's whose object is in place).
    fn insert_at(&mut self, mut inode: Inode, ino: u64) -> Inode {
        inode.ino = ino;
        self.inodes += 1;
        if inode.kind == Kind::File {
            self.staged.usage.0 += inode.size as i64;
            self.staged.usage.1 += 1;
        }
        if inode.kind.is_dir() {
            self.staged.new_dirs.push(inode.ino);
        }
        self.staged.inodes.insert(inode.ino, Some(inode.clone()));
        // A fresh number has no attributes: known, not a miss, and still
        // known once committed (`None` would be folded in as "forget").
        self.staged
            .xattrs
            .insert(inode.ino, Some(cache::xattr_list(Vec::new())));
        inode
    }

    /// Delete an inode and its attributes; a regular file's object goes
    /// once the deletion is committed.
    fn remove(&mut self, inode: &Inode) -> Result<()> {
        self.inodes -= 1;
        if inode.kind == Kind::File {
            let size = self.inode(inode.ino).map_or(inode.size, |i| i.size);
            self.staged.usage.0 -= size as i64;
            self.staged.usage.1 -= 1;
        }
        self.staged.inodes.insert(inode.ino, None);
        self.staged.xattrs.insert(inode.ino, None);
        if inode.kind == Kind::File {
            self.staged.released_objects.push(inode.ino);
        }
        Ok(())
    }

    /// Log this mutation (see `types::journal`): the row lands with its changes.
    fn log(&mut self, rec: journal::Record) {
        self.staged.journal.push(rec);
    }

    /// Settle an earlier log row together with this mutation's changes.
    fn settle(&mut self, u: journal::Update) {
        self.staged.journal_done.push(u);
    }

    fn set_dentry(&mut self, parent: u64, name: &[u8], v: Option<Dentry>) {
        self.staged.dentries.insert((parent, name.to_vec()), v);
    }

    fn add_entry(&mut self, parent: u64, name: &[u8], ino: u64, kind: Kind) -> Result<()> {
        let id = self.fs.next_dentry_id.fetch_add(1, Ordering::AcqRel);
        self.set_dentry(parent, name, Some(Dentry { ino, kind, id }));
        Ok(())
    }

    fn remove_entry(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        self.set_dentry(parent, name, None);
        Ok(())
    }

    /// Move an entry to a new key, keeping its readdir cookie.
    fn move_entry(&mut self, from: DentryKey, to: DentryKey) -> Result<()> {
        let d = self.dentry(from.0, &from.1)?.ok_or_else(enoent)?;
        self.set_dentry(from.0, &from.1, None);
        self.set_dentry(to.0, &to.1, Some(d));
        Ok(())
    }

    /// Point an existing entry at another inode (rename exchange).
    fn retarget(&mut self, parent: u64, name: &[u8], ino: u64, kind: Kind) -> Result<()> {
        let d = self.dentry(parent, name)?.ok_or_else(enoent)?;
        self.set_dentry(
            parent,
            name,
            Some(Dentry {
                ino,
                kind,
                id: d.id,
            }),
        );
        Ok(())
    }

    fn dir_is_empty(&mut self, ino: u64) -> Result<bool> {
        if self
            .staged
            .dentries
            .iter()
            .any(|((p, _), v)| *p == ino && v.is_some())
        {
            return Ok(false);
        }
        let (present, mut removed) = self.fs.cache.dirty_entries(ino);
        if present > 0 {
            return Ok(false);
        }
        removed.extend(
            self.staged
                .dentries
                .iter()
                .filter(|((p, _), v)| *p == ino && v.is_none())
                .map(|((_, n), _)| n.clone()),
        );
        // Committed entries, less those removed but not yet committed.
        let sample = self.fs.meta.read_dir(ino, 0, removed.len() + 1)?;
        Ok(sample.iter().all(|e| removed.contains(&e.name)))
    }

    fn xattrs(&mut self, ino: u64) -> Result<Xattrs> {
        match self.staged.xattrs.get(&ino) {
            Some(Some(x)) => Ok(x.clone()),
            Some(None) => Ok(Arc::default()),
            None => self.fs.xattr_list(ino),
        }
    }

    fn set_xattrs(&mut self, ino: u64, list: Vec<(Vec<u8>, Vec<u8>)>) {
        // An empty list too is staged as a list: the commit then leaves it
        // known in the cache instead of forgetting it (only a removed
        // inode's is `None`).
        self.staged
            .xattrs
            .insert(ino, Some(cache::xattr_list(list)));
    }
}
