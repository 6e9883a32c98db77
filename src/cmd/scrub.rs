//! `artfs scrub`: re-read every object and compare it with its recorded
//! SHA-256, and list the files that have none.
//!
//! With `record` (the default of `artfs scrub` on a store no daemon
//! serves), the hash of each file without one is recorded, with its
//! sidecar. On a mounted store it only reads: files being written have no
//! recorded hash, and the daemon's own hasher records the others.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::blob::ContentStore;
use crate::meta::{Batch, MetaStore};
use crate::types::error::Result;
use crate::types::journal;
use crate::types::{Inode, Kind};

/// What a scrub found.
#[derive(Debug, Default)]
pub struct Scrubbed {
    pub verified: u64,
    pub bytes: u64,
    /// Files with no recorded hash (never closed since written, or hashing
    /// still pending), by path; recorded now when scrub records.
    pub unhashed: Vec<String>,
    /// How many of `unhashed` got their hash recorded by this scrub.
    pub recorded: u64,
    /// Files that changed while read (a mounted store): nothing to say.
    pub changed: u64,
    /// Files left unverified: without a hash that this scrub recorded, or
    /// changed while read.
    pub unverified: u64,
    /// (path, what is wrong)
    pub damaged: Vec<(String, String)>,
}

/// Reads objects at most at `rate` bytes/s (none: as fast as they come).
struct Reader<'a> {
    buf: Vec<u8>,
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
    progress: &'a indicatif::ProgressBar,
}

impl Reader<'_> {
    /// (hash, length) of an object, `None` when it is absent.
    /// Hash an object as opened (`NotFound`: no object, `None`).
    fn hash(&mut self, opened: std::io::Result<std::fs::File>) -> Result<Option<(String, u64)>> {
        let mut f = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        loop {
            let n = f.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&self.buf[..n]);
            len += n as u64;
            self.bytes += n as u64;
            self.progress.inc(n as u64);
            if let Some(rate) = self.rate.filter(|r| *r > 0) {
                // Sleep until the bytes read so far fit the rate.
                let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        }
        Ok(Some((hex::encode(hasher.finalize()), len)))
    }
}

/// Scrub every regular file; `rate` caps the read rate in bytes/s. With
/// `record`, hashes missing from the tables are recorded (the caller holds
/// the store lock: no daemon serves the store).
pub fn scrub(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    rate: Option<u64>,
    progress: &indicatif::ProgressBar,
    record: bool,
) -> Result<Scrubbed> {
    let files: Vec<_> = meta
        .all_inodes()?
        .into_iter()
        .filter(|i| i.kind == Kind::File && i.nlink > 0)
        .collect();
    progress.set_length(files.iter().map(|i| i.size).sum());
    let mut out = Scrubbed::default();
    let mut reader = Reader {
        buf: vec![0u8; 1 << 20],
        rate,
        started: Instant::now(),
        bytes: 0,
        progress,
    };
    let mut to_record: Vec<Inode> = Vec::new();
    for inode in files {
        let name = || {
            meta.path_of(inode.ino)
                .ok()
                .flatten()
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_else(|| format!("<inode {}>", inode.ino))
        };
        let got = reader.hash(objects.open_read(inode.ino))?;
        let Some(want) = inode.sha256.clone() else {
            out.unhashed.push(name());
            // No object and no content recorded: an empty file.
            let got = got
                .or_else(|| (inode.size == 0).then(|| (hex::encode(Sha256::new().finalize()), 0)));
            match got {
                None => out.damaged.push((
                    name(),
                    format!("object missing, {} bytes recorded", inode.size),
                )),
                // The metadata has not caught up with the object (a
                // crash not yet recovered, or a file being written): no
                // hash to record against it; fsck judges the sizes.
                Some((_, len)) if len != inode.size => {}
                Some((hash, _)) if record => {
                    let mut i = inode.clone();
                    i.sha256 = Some(hash);
                    to_record.push(i);
                    if to_record.len() >= 500 {
                        out.recorded += record_hashes(meta, objects, &mut to_record)?;
                    }
                }
                Some(_) => {}
            }
            continue;
        };
        let (got, len) = match got {
            Some((h, len)) => (Some(h), len),
            None => (None, 0),
        };
        if got.as_ref() == Some(&want) && len == inode.size {
            out.verified += 1;
            continue;
        }
        // Changed while we read it (a mounted store)? Then it is not damage.
        let now = meta.get_inode(inode.ino)?;
        if now.as_ref().and_then(|i| i.sha256.as_ref()) != Some(&want) {
            out.changed += 1;
            continue;
        }
        let what = match got {
            None => format!("object missing, {} bytes recorded", inode.size),
            Some(_) if len != inode.size => {
                format!("object holds {len} bytes, {} recorded", inode.size)
            }
            Some(got) => format!("content hash {got} differs from the recorded {want}"),
        };
        out.damaged.push((name(), what));
    }
    out.recorded += record_hashes(meta, objects, &mut to_record)?;
    out.bytes = reader.bytes;
    out.unverified = out.unhashed.len() as u64 - out.recorded + out.changed;
    Ok(out)
}

/// Record the hashes of `files` (taken from the vector) and rewrite their
/// sidecars; a pending `sidecars` row covers the rewrite, so a crash in
/// between is settled by recovery as any other. Returns how many.
fn record_hashes(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    files: &mut Vec<Inode>,
) -> Result<u64> {
    if files.is_empty() {
        return Ok(0);
    }
    let inos: Vec<u64> = files.iter().map(|i| i.ino).collect();
    let rec = journal::Record::new(
        journal::Op::Sidecars,
        journal::Status::Pending,
        None,
        json!({ "inos": inos, "why": "scrub recorded missing hashes" }),
    );
    let id = rec.id;
    meta.apply(&Batch {
        inodes: files.drain(..).map(|i| (i.ino, Some(i))).collect(),
        journal: vec![rec],
        ..Batch::default()
    })?;
    meta.sync()?;
    crate::core::render::rewrite(meta, objects, &inos)?;
    objects.sync_all()?;
    meta.apply(&Batch {
        journal_done: vec![journal::Update::new(
            id,
            journal::Status::Committed,
            format!("recorded {} hashes and their sidecars", inos.len()),
        )],
        ..Batch::default()
    })?;
    meta.sync()?;
    Ok(inos.len() as u64)
}
