//! SHA-256 of file content, never stale.
//!
//! With passthrough, writes never pass through the daemon, so the hash
//! cannot be computed while streaming. Instead: opening a file for writing
//! clears the recorded hash (in the same commit as the write intent); when
//! the last writer closes, small files are hashed at once (their pages are
//! in cache) and larger ones by a background thread; asking for
//! `user.artstore.sha256` of a file with no recorded hash computes it on
//! demand. A hash is recorded only if the content did not change while it
//! was computed.

use crate::types::Timestamp;
use std::collections::VecDeque;
use std::sync::mpsc;

use parking_lot::Mutex;
use std::sync::{Arc, Weak};

use sha2::{Digest, Sha256};

use super::Fs;
use crate::types::error::Result;
use crate::types::Kind;

/// Files up to this size are hashed when their last writer closes.
pub const HASH_AT_CLOSE_MAX: u64 = 1 << 20;

/// (size, mtime ns) of an object: what a hash was computed against.
type Version = (u64, i64);

impl Fs {
    /// Hash an object's current content; also returns the version hashed.
    /// `recorded` is the file's recorded size: an object that is absent
    /// (while content is recorded) or shorter than it, with no writer to
    /// explain it, is lost content: EIO, never the hash of what is left.
    pub(crate) fn hash_object(&self, ino: u64, recorded: u64) -> Result<(String, Version)> {
        match self.objects.open_read(ino) {
            Ok(f) => {
                let (hash, version) = hash_file(&f, u64::MAX)?.expect("no size limit");
                if version.0 < recorded && !self.is_open(ino) {
                    return Err(self.lost_object(ino, recorded, Some(version.0)));
                }
                Ok((hash, version))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && recorded == 0 => {
                Ok((hex::encode(Sha256::new().finalize()), (0, 0)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(self.lost_object(ino, recorded, None))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a handle that may write is open on `ino`.
    pub(crate) fn open_for_write(&self, ino: u64) -> bool {
        self.files
            .inodes
            .lock()
            .get(&ino)
            .is_some_and(|o| o.writers > 0)
            || self.mappings.holds(ino)
    }

    /// The SHA-256 of a regular file's content, computing (and, when the
    /// file is quiet, recording) it if unknown. `None` for other kinds.
    pub fn sha256(&self, ino: u64) -> Result<Option<String>> {
        let inode = self.inode(ino)?;
        if inode.kind != Kind::File {
            return Ok(None);
        }
        // A shared mapping may have changed it since its last close.
        self.settle_if_lingering(ino);
        let inode = self.inode(ino)?;
        if let Some(h) = inode.sha256 {
            // A recorded hash is of content that must still be there (one
            // stat): a lost object is EIO here as on every other door.
            if !self.is_open(ino) {
                let held = self.objects.stat(ino)?.map(|m| m.size);
                if held.unwrap_or(0) < inode.size {
                    return Err(self.lost_object(ino, inode.size, held));
                }
            }
            return Ok(Some(h));
        }
        let (hash, version) = self.hash_object(ino, inode.size)?;
        self.record_hash(ino, &hash, version)?;
        Ok(Some(hash))
    }

    /// Record `hash` if the file still is the version it was computed on
    /// and nobody may be writing to it.
    fn record_hash(&self, ino: u64, hash: &str, version: Version) -> Result<()> {
        self.mutate(|tx| {
            let mut i = tx.inode(ino)?;
            if i.sha256.is_some() || self.open_for_write(ino) {
                return Ok(());
            }
            let now = match self.objects.stat(ino)? {
                Some(m) => (m.size, m.mtime.0),
                None => (0, 0),
            };
            if now != version || i.size != version.0 {
                return Ok(());
            }
            i.sha256 = Some(hash.to_string());
            tx.put(&i)
        })
    }
}

/// The SHA-256 (hex) of the batches `fill` sends, in order, computed on a
/// thread of its own while `fill` goes on (an upload's writes, issue 20:
/// hashing was as slow as all the rest of an upload together, and with
/// the two overlapped an upload takes about what the slower one takes).
/// `feed` hashes a batch, and `done` then gets it back; up to `queue`
/// batches wait for the hasher. `fill`'s error wins.
pub(super) fn hashed_beside<B: Send>(
    queue: usize,
    feed: impl Fn(&mut Sha256, &B) + Send,
    mut done: impl FnMut(B) + Send,
    fill: impl FnOnce(&dyn Fn(B) -> Result<()>) -> Result<()>,
) -> Result<String> {
    use crate::types::error::Error;
    std::thread::scope(|scope| {
        let (to_hash, batches) = mpsc::sync_channel::<B>(queue);
        let hasher = std::thread::Builder::new()
            .name("artfs-upload-hash".into())
            .spawn_scoped(scope, move || {
                let mut hasher = Sha256::new();
                for batch in batches {
                    feed(&mut hasher, &batch);
                    done(batch);
                }
                hex::encode(hasher.finalize())
            })?;
        let send = |batch: B| {
            to_hash
                .send(batch)
                .map_err(|_| Error::posix(libc::EIO, "upload hash thread ended"))
        };
        let filled = fill(&send);
        drop(to_hash);
        let hash = hasher
            .join()
            .map_err(|_| Error::posix(libc::EIO, "upload hash thread panicked"))?;
        filled.map(|()| hash)
    })
}

/// Hash an open object from its start (positioned reads: the descriptor
/// may be shared) if it holds at most `max` bytes; also returns the
/// version hashed. The version is the object's before the reads: callers
/// compare it with a stat taken after them, under the mutation lock, so a
/// change made while reading is caught there (one stat less per close).
pub(crate) fn hash_file(file: &std::fs::File, max: u64) -> Result<Option<(String, Version)>> {
    use std::os::unix::fs::FileExt;
    let before = file.metadata()?;
    let len = before.len();
    if len > max {
        return Ok(None);
    }
    let mut hasher = Sha256::new();
    // Sized to the file: most are small, and a fresh 1 MiB buffer costs
    // page faults and zeroing on every call.
    let mut buf = vec![0u8; len.clamp(4096, 1 << 20) as usize];
    let mut at = 0u64;
    // Up to the size seen: a file that grows meanwhile fails the
    // caller's version check anyway, so no read to find the end.
    while at < len {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    let v = (len, Timestamp::mtime_of(&before).0);
    Ok(Some((hex::encode(hasher.finalize()), v)))
}

/// The background hasher: hashes files whose last writer closed, one at a
/// time, so a burst of large files does not take every core, and only once
/// a file has been left alone for a moment (a file rewritten or deleted
/// soon after is never hashed in vain; asking for the hash computes it at
/// once anyway).
///
/// At every mount it also takes as its backlog every regular file left
/// without a recorded hash (a crash before the close or the hasher got to
/// it, or an unmount while it was queued): found by one query, in its own
/// thread, so the mount serves at once; worked through whenever no closed
/// file is due, at lowered CPU and I/O priority.
pub struct Hasher {
    tx: mpsc::Sender<(u64, std::time::Instant)>,
    /// The last count of unhashed files, and when it was taken.
    counted: Mutex<Option<(std::time::Instant, u64)>>,
}

/// How long a closed file stays untouched before the background hashes it.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a count of unhashed files is reused (it is a table scan).
const COUNT_TTL: std::time::Duration = std::time::Duration::from_secs(5);

impl Hasher {
    pub fn start(fs: Weak<Fs>, workers: &super::workers::Workers) -> std::io::Result<Hasher> {
        let (tx, rx) = mpsc::channel::<(u64, std::time::Instant)>();
        workers.spawn(super::workers::HASHER, move || {
            super::background_thread();
            lower_io_priority();
            let mut backlog = match fs.upgrade() {
                Some(fs) => fs.unhashed_backlog(),
                None => return,
            };
            let mut live = VecDeque::new();
            let mut backlog_left = backlog.len();
            while let Some(ino) = next(&rx, &mut live, &mut backlog) {
                crate::crash_point!("hasher::before_hash");
                let Some(fs) = fs.upgrade() else { return };
                if let Err(e) = run_one(&fs, ino) {
                    tracing::debug!(ino, error = %e, "could not hash");
                }
                if backlog_left > 0 && backlog.is_empty() {
                    tracing::info!(
                        files = backlog_left,
                        "worked through the files left without a recorded hash"
                    );
                    backlog_left = 0;
                }
            }
        })?;
        Ok(Hasher {
            tx,
            counted: Mutex::new(None),
        })
    }

    pub fn queue(&self, ino: u64) {
        let _ = self.tx.send((ino, std::time::Instant::now()));
    }
}

/// The next file to hash: a closed file once it has settled, else one of
/// the backlog, else wait for either. `None` once the store is gone.
fn next(
    rx: &mpsc::Receiver<(u64, std::time::Instant)>,
    live: &mut VecDeque<(u64, std::time::Instant)>,
    backlog: &mut VecDeque<u64>,
) -> Option<u64> {
    use mpsc::{RecvTimeoutError, TryRecvError};
    loop {
        loop {
            match rx.try_recv() {
                Ok(x) => live.push_back(x),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return None,
            }
        }
        let now = std::time::Instant::now();
        match live.front() {
            Some((_, at)) if *at + SETTLE <= now => return live.pop_front().map(|x| x.0),
            _ => {}
        }
        if let Some(ino) = backlog.pop_front() {
            return Some(ino);
        }
        let got = match live.front() {
            Some((_, at)) => rx.recv_timeout((*at + SETTLE).saturating_duration_since(now)),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match got {
            Ok(x) => live.push_back(x),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// The lowest best-effort I/O priority for the calling thread: hashing a
/// backlog must not slow the requests being served.
fn lower_io_priority() {
    const IOPRIO_WHO_PROCESS: libc::c_long = 1;
    const IOPRIO_BE_LOWEST: libc::c_long = (2 << 13) | 7;
    // SAFETY: plain syscalls on the calling thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_BE_LOWEST,
        );
    }
}

impl Fs {
    /// Every regular file without a recorded hash, for the hasher's backlog.
    fn unhashed_backlog(&self) -> VecDeque<u64> {
        match self.meta.unhashed_files() {
            Ok(v) => {
                if !v.is_empty() {
                    tracing::info!(
                        files = v.len(),
                        "files without a recorded hash; hashing them in the background"
                    );
                }
                v.into()
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not list the files without a recorded hash");
                VecDeque::new()
            }
        }
    }

    /// Regular files with no recorded hash yet (being written, queued, or
    /// in the backlog), as last committed; counted at most every few
    /// seconds (`artfs_unhashed_files`).
    pub fn unhashed_files(&self) -> Result<u64> {
        let Some(h) = self.hasher.get() else {
            return self.meta.unhashed_count();
        };
        let mut c = h.counted.lock();
        match *c {
            Some((at, n)) if at.elapsed() < COUNT_TTL => Ok(n),
            _ => {
                let n = self.meta.unhashed_count()?;
                *c = Some((std::time::Instant::now(), n));
                Ok(n)
            }
        }
    }
}

fn run_one(fs: &Arc<Fs>, ino: u64) -> Result<()> {
    if fs.open_for_write(ino) {
        return Ok(());
    }
    match fs.inode(ino) {
        Ok(i) if i.kind == Kind::File && i.sha256.is_none() => {
            fs.sha256(ino)?;
        }
        _ => {}
    }
    Ok(())
}
