//! Opening a store: check BACKING, take its lock, connect the metadata
//! database, verify both belong together, create the root on first use and
//! reclaim files that were unlinked while open when the daemon last stopped.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::runtime::Handle;

use super::cache::Cache;
use super::options::{Role, StoreOptions};
use super::workers;
use super::writer::{Writer, INO_RESERVE_STEP};
use super::Fs;
use crate::blob::ContentStore;
use crate::meta::lease;
use crate::meta::MetaStore;
use crate::types::error::{Error, Result};
use crate::types::{Inode, Timestamp, ROOT_INO};
use std::sync::atomic::Ordering;

fn setup_err(msg: String) -> Error {
    Error::Meta(msg)
}

/// Open the store for serving. Fails with a clear message, touching
/// nothing, when BACKING is unusable, locked by another daemon, or paired
/// with a database of another store.
///
/// The steps: check BACKING and take its lock; open the stores and check
/// they belong together; recover what a crash left; settle the store's
/// settings; build the [`Fs`]; start its workers; reclaim orphans.
pub fn open_store(opts: &StoreOptions, rt: Handle) -> Result<(Arc<Fs>, StoreLock)> {
    if opts.role != Role::Writer {
        return open_follower(opts, rt);
    }
    let (fs, lock) = open_unstarted(opts, rt)?;
    let fs = Arc::new(fs);
    super::start::start_workers(&fs)?;
    fs.reclaim_orphans()?;
    fs.wait_committed()?;
    Ok((fs, lock))
}

/// Open a store another daemon writes, as a replica or standby
/// (`core::replica`): no lock, no lease, no recovery, nothing written;
/// the tables must be ones several machines share (PostgreSQL).
fn open_follower(opts: &StoreOptions, rt: Handle) -> Result<(Arc<Fs>, StoreLock)> {
    let backing = canonical_backing(opts)?;
    let state_dir = backing.join(".artfs");
    let url = opts.db_url();
    if crate::meta::sqlite_path(&url).is_some() {
        return Err(setup_err(format!(
            "a {} serves a store whose tables several machines share: give --db \
             postgres://... (a SQLite store is served by its one daemon){}",
            opts.role,
            tables_hint(&state_dir)
        )));
    }
    let meta = crate::meta::open_as(&url, &opts.table_prefix, rt, crate::meta::Schema::Existing)?;
    // Where the feed stands before anything is read: every change after
    // it reaches this node's caches through the feed.
    let head = meta
        .changes_since(u64::MAX - 1, 1)?
        .ok_or_else(|| setup_err("this store's database keeps no change feed".into()))?
        .head;
    let objects = open_content(opts, &backing, &state_dir, true)?;
    let store_id = identify(meta.as_ref(), &backing, &state_dir, &url, false)?;
    let Some(config) = meta.config()? else {
        return Err(setup_err(format!(
            "store {store_id} has never been served by a writer: mount it once without --{}",
            opts.role
        )));
    };
    let mode: super::policy::Mode = config.mode.parse().map_err(Error::Meta)?;
    let ballast = crate::blob::ballast::Ballast::new(&state_dir)?;
    let fs = build_fs(
        opts,
        Parts {
            meta,
            objects,
            backing,
            store_id,
            ballast,
            mode,
            recovered: 0,
        },
    )?;
    fs.follow.set_role(opts.role);
    fs.follow.start_at(head);
    fs.load_state()?;
    let fs = Arc::new(fs);
    let (weak, stop) = (Arc::downgrade(&fs), fs.workers.periodic());
    fs.workers.spawn(workers::POLICY, move || {
        super::start::follow_policy(weak, &stop)
    })?;
    super::replica::start(&fs, opts.role, opts.poll, opts.takeover_after)?;
    tracing::info!(role = %opts.role, feed = head, "following the store's writer");
    Ok((fs, StoreLock::none()))
}

/// Every step of [`open_store`] but the threads: the [`Fs`] with its
/// state loaded, nothing committing yet (unit tests drive the writer by
/// hand from here).
pub(super) fn open_unstarted(opts: &StoreOptions, rt: Handle) -> Result<(Fs, StoreLock)> {
    let backing = usable_backing(opts)?;
    let state_dir = backing.join(".artfs");
    std::fs::create_dir_all(&state_dir)
        .map_err(|e| setup_err(format!("cannot create {}: {e}", state_dir.display())))?;
    let lock = StoreLock::acquire(&state_dir)?;

    let url = opts.db_url();
    // A store whose SQLite file is gone (or whose tables live elsewhere):
    // refused before opening would create an empty database in BACKING.
    if let Some(path) = crate::meta::sqlite_path(&url) {
        let id = std::fs::read_to_string(state_dir.join("store-id"));
        if let (false, Ok(id)) = (Path::new(path).exists(), id) {
            return Err(setup_err(format!(
                "BACKING {} holds store {} but database {path} does not exist; rebuild the \
                 tables from the sidecars or point --db at the right database{}",
                backing.display(),
                id.trim(),
                tables_hint(&state_dir)
            )));
        }
    }
    let meta = crate::meta::open(&url, &opts.table_prefix, rt)?;
    meta.claim_writer(&lease::Holder::me())?;
    let objects = open_content(opts, &backing, &state_dir, false)?;
    let store_id = identify(meta.as_ref(), &backing, &state_dir, &url, true)?;
    if objects.identity()?.is_none() {
        objects.set_identity(&store_id)?;
    }
    remember_tables(&state_dir, &url, &opts.table_prefix);
    let recovered = super::start::recover(meta.as_ref(), objects.as_ref())?;
    let mode = settle_config(meta.as_ref(), &backing, opts)?;
    let ballast = super::start::reserve_ballast(&state_dir)?;

    let fs = build_fs(
        opts,
        Parts {
            meta,
            objects,
            backing,
            store_id,
            ballast,
            mode,
            recovered,
        },
    )?;
    fs.load_state()?;
    Ok((fs, lock))
}

/// The content store, paired with BACKING: a store that records its id
/// in the content (a bucket) hands it to a new BACKING (a fresh cache
/// directory), and one recording another store's id is refused.
fn open_content(
    opts: &StoreOptions,
    backing: &Path,
    state_dir: &Path,
    read_only: bool,
) -> Result<Arc<dyn ContentStore>> {
    if matches!(opts.content, crate::blob::Content::S3(_)) && opts.db_url.is_none() {
        return Err(setup_err(
            "content in S3 needs --db: the tables cannot live in the cache directory, \
             which may be lost"
                .into(),
        ));
    }
    let objects = crate::blob::open(backing, &opts.content, read_only)
        .map_err(|e| setup_err(format!("cannot open the content store: {e}")))?;
    let Some(theirs) = objects.identity()? else {
        return Ok(objects);
    };
    let id_path = state_dir.join("store-id");
    match std::fs::read_to_string(&id_path) {
        Ok(ours) if ours.trim() == theirs => {}
        Ok(ours) => {
            return Err(setup_err(format!(
                "{} belongs to store {}, but the content holds store {theirs}; refusing to \
                 mix them",
                backing.display(),
                ours.trim()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(state_dir)?;
            crate::blob::write_atomic(&id_path, theirs.as_bytes())?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(objects)
}

/// BACKING, canonical (it must exist; an S3 store's cache directory is
/// made).
fn canonical_backing(opts: &StoreOptions) -> Result<PathBuf> {
    if matches!(opts.content, crate::blob::Content::S3(_)) {
        std::fs::create_dir_all(&opts.backing).map_err(|e| {
            setup_err(format!(
                "cannot create the cache directory {}: {e}",
                opts.backing.display()
            ))
        })?;
    }
    opts.backing.canonicalize().map_err(|e| {
        setup_err(format!(
            "BACKING {} is not usable: {e}",
            opts.backing.display()
        ))
    })
}

/// BACKING, canonical, checked to be a writable directory.
fn usable_backing(opts: &StoreOptions) -> Result<PathBuf> {
    let backing = canonical_backing(opts)?;
    if !backing.is_dir() {
        return Err(setup_err(format!(
            "BACKING {} is not a directory",
            backing.display()
        )));
    }
    if nix::unistd::access(&backing, nix::unistd::AccessFlags::W_OK).is_err() {
        return Err(setup_err(format!(
            "BACKING {} is not writable",
            backing.display()
        )));
    }
    Ok(backing)
}

/// The store's settings row: created on a first mount, the capacity
/// updated when asked; the policy file follows it. Returns the mode.
fn settle_config(
    meta: &dyn MetaStore,
    backing: &Path,
    opts: &StoreOptions,
) -> Result<super::policy::Mode> {
    let Some(mut c) = meta.config()? else {
        let cfg = crate::meta::StoreConfig {
            mode: opts.initial_mode.as_str().into(),
            mode_changed_at: Timestamp::now().to_rfc3339(),
            mode_changed_by: crate::core::namespace::user_name(nix::unistd::getuid().as_raw()),
            capacity: opts.capacity.filter(|b| *b > 0),
            used_bytes: 0,
            file_count: 0,
        };
        meta.apply(&crate::meta::Batch {
            config: Some(cfg.clone()),
            ..Default::default()
        })?;
        super::policy::save_policy_file(backing, &cfg);
        return Ok(opts.initial_mode);
    };
    if opts.capacity.is_some() && opts.capacity != c.capacity {
        c.capacity = opts.capacity.filter(|b| *b > 0);
        tracing::info!(capacity = ?c.capacity, "capacity set");
        meta.apply(&crate::meta::Batch {
            config: Some(c.clone()),
            ..Default::default()
        })?;
    }
    super::policy::save_policy_file(backing, &c);
    let m: super::policy::Mode = c.mode.parse().map_err(Error::Meta)?;
    if m != opts.initial_mode && opts.initial_mode != super::policy::Mode::Edit {
        tracing::warn!(mode = %m, asked = %opts.initial_mode,
            "--mode applies to new stores only; use `artfs mode` to change it");
    }
    Ok(m)
}

/// What opening found, for [`build_fs`].
struct Parts {
    meta: Box<dyn MetaStore>,
    objects: Arc<dyn ContentStore>,
    backing: PathBuf,
    store_id: String,
    ballast: crate::blob::ballast::Ballast,
    mode: super::policy::Mode,
    recovered: u64,
}

/// The [`Fs`], resuming inode and entry numbers above every number that
/// may have been handed out. No thread runs yet.
fn build_fs(opts: &StoreOptions, p: Parts) -> Result<Fs> {
    let fs = Fs {
        meta: p.meta,
        objects: p.objects,
        cache: Cache::new(opts.cache_entries),
        writer: Writer::default(),
        mutate: Default::default(),
        next_ino: 0.into(),
        next_dentry_id: 0.into(),
        files: Default::default(),
        mappings: Default::default(),
        listed: Default::default(),
        backing: p.backing,
        store_id: p.store_id,
        journal_retention: opts.journal_retention.clone(),
        ballast: p.ballast,
        hasher: Default::default(),
        sidecars: Default::default(),
        pool: Default::default(),
        invalidator: Default::default(),
        policy: super::policy::Live::new(p.mode),
        collector: opts.collector.clone(),
        max_retention: opts.max_retention,
        atime: opts.atime,
        ops: Default::default(),
        recovered: p.recovered,
        inodes: 0.into(),
        trash: Default::default(),
        renamed_fresh: Default::default(),
        workers: Default::default(),
        follow: Default::default(),
    };
    fs.resume_counters()?;
    Ok(fs)
}

/// Where a store's tables were last served from, for commands run
/// without the flags that name them (the password never written).
const TABLES_FILE: &str = "tables";

/// Note in BACKING which tables serve the store (`--db URL --table-prefix
/// P`, the URL redacted). Only a hint for error messages: failing to write
/// it fails nothing.
fn remember_tables(state_dir: &Path, url: &str, prefix: &str) {
    let text = format!(
        "--db {} --table-prefix {prefix}\n",
        crate::meta::redact(url)
    );
    let path = state_dir.join(TABLES_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
        return;
    }
    if let Err(e) = crate::blob::write_atomic(&path, text.as_bytes()) {
        tracing::debug!(error = %e, "could not note where the tables are");
    }
}

/// "; its daemon last served it with ..." when BACKING says so.
fn tables_hint(state_dir: &Path) -> String {
    match std::fs::read_to_string(state_dir.join(TABLES_FILE)) {
        Ok(t) if !t.trim().is_empty() => format!(
            "; this store was last served with `{}` (give those flags, or --config)",
            t.trim()
        ),
        _ => String::new(),
    }
}

/// Check that the database and BACKING belong to the same store (creating
/// the store on a first mount when `create`); returns the store id.
fn identify(
    meta: &dyn MetaStore,
    backing: &Path,
    state_dir: &Path,
    url: &str,
    create: bool,
) -> Result<String> {
    // Error messages name the database, never its password.
    let url = &crate::meta::redact(url);
    let id_path = state_dir.join("store-id");
    let file_id = match std::fs::read_to_string(&id_path) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let store_id = match (meta.store_identity()?, file_id) {
        (Some((db_id, _)), Some(f_id)) if db_id == f_id => db_id,
        (Some((db_id, db_backing)), f_id) => {
            return Err(setup_err(format!(
                "database {url} belongs to store {db_id} (BACKING {db_backing}), but {} holds {}; \
                 refusing to mix them",
                backing.display(),
                f_id.map(|s| format!("store {s}"))
                    .unwrap_or_else(|| "no store".into())
            )))
        }
        (None, Some(f_id)) => {
            return Err(setup_err(format!(
                "BACKING {} holds store {f_id} but database {url} has no metadata for it; \
                 rebuild the tables from the sidecars or point --db at the right database{}",
                backing.display(),
                tables_hint(state_dir)
            )))
        }
        (None, None) if !create => {
            return Err(setup_err(format!(
                "{} holds no artfs store (it was never mounted)",
                backing.display()
            )))
        }
        (None, None) => {
            let id = uuid::Uuid::now_v7().to_string();
            let (uid, gid) = (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            );
            let root = Inode::new_dir(
                ROOT_INO,
                0o755,
                (uid, gid),
                ROOT_INO,
                b"/",
                &crate::core::namespace::user_name(uid),
            );
            meta.init_store(&id, &backing.to_string_lossy(), &root)?;
            crate::blob::write_atomic(&id_path, id.as_bytes())?;
            tracing::info!(store_id = %id, backing = %backing.display(), "initialised new store");
            id
        }
    };

    Ok(store_id)
}

/// A store's two halves opened for an offline tool, with the store lock
/// `L` it holds (`Option<StoreLock>` or `StoreLock`).
pub type Stores<L> = (Box<dyn MetaStore>, Arc<dyn ContentStore>, L);

/// The stores of BACKING for offline tools (fsck, rebuild, mode): no
/// mount, no writer. With `exclusive`, take the store lock first, so that
/// no daemon serves it meanwhile (fails if one does).
pub fn open_offline(
    opts: &StoreOptions,
    rt: Handle,
    exclusive: bool,
) -> Result<Stores<Option<StoreLock>>> {
    let backing = canonical_backing(opts)?;
    let state_dir = backing.join(".artfs");
    if !state_dir.is_dir() {
        return Err(setup_err(format!(
            "{} holds no artfs store (no .artfs directory)",
            backing.display()
        )));
    }
    let lock = if exclusive {
        Some(StoreLock::acquire(&state_dir)?)
    } else {
        None
    };
    let url = opts.db_url();
    if let Some(path) = crate::meta::sqlite_path(&url) {
        if !Path::new(path).exists() {
            return Err(setup_err(format!(
                "database {path} does not exist{}",
                tables_hint(&state_dir)
            )));
        }
    }
    let meta = crate::meta::open(&url, &opts.table_prefix, rt)?;
    if exclusive {
        meta.claim_writer(&lease::Holder::me())?;
    }
    // Without the lock a daemon may serve the store: read, never write.
    let objects = open_content(opts, &backing, &state_dir, !exclusive)?;
    identify(meta.as_ref(), &backing, &state_dir, &url, false)?;
    Ok((meta, objects, lock))
}

/// The stores of BACKING for `artfs rebuild`: like [`open_offline`] with
/// the lock taken, but the database may be missing or empty (it is what
/// gets rebuilt); only a database of another store is refused.
pub fn open_for_rebuild(opts: &StoreOptions, rt: Handle) -> Result<Stores<StoreLock>> {
    let backing = canonical_backing(opts)?;
    let state_dir = backing.join(".artfs");
    // A bucket records its store: a new cache directory learns it here.
    let objects = open_content(opts, &backing, &state_dir, false)?;
    let store_id = std::fs::read_to_string(state_dir.join("store-id"))
        .map(|s| s.trim().to_string())
        .map_err(|_| {
            setup_err(format!(
                "{} holds no artfs store (no .artfs/store-id)",
                backing.display()
            ))
        })?;
    let lock = StoreLock::acquire(&state_dir)?;
    let url = opts.db_url();
    let meta = crate::meta::open(&url, &opts.table_prefix, rt)?;
    meta.claim_writer(&lease::Holder::me())?;
    match meta.store_identity()? {
        Some((db_id, db_backing)) if db_id != store_id => {
            return Err(setup_err(format!(
                "database {} belongs to store {db_id} (BACKING {db_backing}), not to {}",
                crate::meta::redact(&url),
                backing.display()
            )))
        }
        Some(_) => {}
        None => meta.init_identity(&store_id, &backing.to_string_lossy(), 0)?,
    }
    Ok((meta, objects, lock))
}

/// How long taking the store lock waits for an artfs process that holds
/// it but serves no mount of the store: a daemon finishing its last commit
/// after `umount` returned, or an offline tool (fsck --repair, rebuild).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An exclusive lock on a store: one daemon (or repairing fsck) at a time.
/// Released when dropped or when the process dies.
pub struct StoreLock {
    /// `None`: a follower's, which locks nothing (the writer's lease
    /// guards the store).
    _file: Option<File>,
}

/// Who holds a store's lock, as far as can be told.
struct Holder {
    pid: Option<u32>,
    /// Where the holder serves the store (a live artfs mount of it).
    serves: Option<PathBuf>,
}

impl StoreLock {
    /// No lock: what a follower holds.
    pub fn none() -> StoreLock {
        StoreLock { _file: None }
    }

    /// Take the lock. A holder that still serves a mount of the store is
    /// refused at once; any other holder (a daemon finishing after its
    /// unmount, an offline tool) is waited for, up to [`LOCK_WAIT`].
    pub fn acquire(state_dir: &Path) -> Result<StoreLock> {
        Self::acquire_within(state_dir, LOCK_WAIT)
    }

    pub fn acquire_within(state_dir: &Path, wait: std::time::Duration) -> Result<StoreLock> {
        let path = state_dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let holder = match Self::wait_for_holder(state_dir, &file, wait) {
            None => {
                file.set_len(0)?;
                write!(file, "{}", std::process::id())?;
                return Ok(StoreLock { _file: Some(file) });
            }
            Some(h) => h,
        };
        Err(setup_err(format!(
            "store {} is in use by another artfs process{}{}",
            state_dir.parent().unwrap_or(state_dir).display(),
            match holder.pid {
                None => String::new(),
                Some(pid) => format!(" (pid {pid})"),
            },
            match holder.serves {
                Some(mnt) => format!(", which serves it at {}", mnt.display()),
                None => format!(" (waited {} s for it to finish)", wait.as_secs()),
            }
        )))
    }

    /// Flock `file` (the lock file of `state_dir`), waiting up to `wait`
    /// for a holder that serves no mount. None once locked; else who holds
    /// it.
    fn wait_for_holder(state_dir: &Path, file: &File, wait: std::time::Duration) -> Option<Holder> {
        let start = std::time::Instant::now();
        let mut said = false;
        loop {
            // SAFETY: flock on a valid, owned descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                if said {
                    tracing::info!("the store is free now");
                }
                return None;
            }
            let holder = Holder {
                pid: std::fs::read_to_string(state_dir.join("lock"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok()),
                serves: state_dir.parent().and_then(serving_mount),
            };
            if holder.serves.is_some() || start.elapsed() >= wait {
                return Some(holder);
            }
            if !said {
                said = true;
                let who = holder
                    .pid
                    .map(|p| format!("pid {p}"))
                    .unwrap_or("a process".into());
                tracing::info!(
                    "waiting for artfs {who} to finish with the store (it serves no mount of it; \
                     up to {} s)",
                    wait.as_secs()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Whether some process holds the lock on the store under `backing`
    /// (after waiting, as [`StoreLock::acquire`] does, for a holder that
    /// serves no mount: a daemon finishing after its unmount counts as
    /// gone once it is). Never writes the lock file.
    pub fn is_held(backing: &Path) -> bool {
        let state_dir = backing.join(".artfs");
        let Ok(file) = File::open(state_dir.join("lock")) else {
            return false;
        };
        Self::wait_for_holder(&state_dir, &file, LOCK_WAIT).is_some()
    }

    /// Whether the lock is held right now (no waiting).
    pub fn is_held_now(backing: &Path) -> bool {
        let state_dir = backing.join(".artfs");
        let Ok(file) = File::open(state_dir.join("lock")) else {
            return false;
        };
        Self::wait_for_holder(&state_dir, &file, std::time::Duration::ZERO).is_some()
    }

    /// The pid written in the lock file under `backing`, if any.
    pub fn holder_pid(backing: &Path) -> Option<u32> {
        std::fs::read_to_string(backing.join(".artfs/lock"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }
}

/// The mount point of a live artfs mount of the store under `backing`
/// (its FUSE source is `artfs:BACKING`), from /proc/self/mountinfo.
/// Listed is not proof of life (a killed daemon's mount stays listed):
/// callers ask only while some process holds the store's lock.
pub fn serving_mount(backing: &Path) -> Option<PathBuf> {
    let backing = backing.canonicalize().ok()?;
    let want = format!("artfs:{}", backing.display());
    super::mountinfo::mounts()
        .into_iter()
        .rfind(|m| (m.fstype == "fuse" || m.fstype == "fuse.artfs") && m.source == want)
        .map(|m| m.mountpoint)
}

impl Fs {
    /// Hand out inode and entry numbers above every number that may have
    /// been handed out (at open, and when a standby takes over).
    pub(super) fn resume_counters(&self) -> Result<()> {
        let counters = self.meta.counters()?;
        let next_ino = counters
            .max_ino
            .max(counters.ino_reserved.saturating_sub(1))
            + 1;
        self.writer
            .reserved
            .store(counters.ino_reserved.max(next_ino), Ordering::Release);
        self.writer
            .want_reserved
            .store(next_ino + INO_RESERVE_STEP, Ordering::Release);
        self.next_ino.store(next_ino, Ordering::Release);
        self.next_dentry_id
            .store(counters.max_dentry_id + 1, Ordering::Release);
        Ok(())
    }

    /// The live figures the mount starts from: mode and capacity, inode
    /// count, usage.
    pub(super) fn load_state(&self) -> Result<()> {
        self.refresh_policy()?;
        self.inodes
            .store(self.meta.inode_count()? as i64, Ordering::Release);
        if let Some(c) = self.meta.config()? {
            self.cache
                .set_usage_total(c.used_bytes as i64, c.file_count as i64);
        }
        Ok(())
    }

    /// Delete inodes left with no links (unlinked while open at the last
    /// stop or crash) and their objects.
    pub(super) fn reclaim_orphans(&self) -> Result<()> {
        let orphans = self.meta.orphans()?;
        if orphans.is_empty() {
            return Ok(());
        }
        for ino in &orphans {
            self.mutate(|tx| {
                let inode = tx.inode(*ino)?;
                tx.remove(&inode)
            })?;
        }
        tracing::info!(count = orphans.len(), "reclaimed files unlinked while open");
        Ok(())
    }
}
