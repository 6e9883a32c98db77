//! `artfs scrub`: re-read every object and compare it with its recorded
//! SHA-256. Read-only: it may run while the store is mounted (files being
//! written have no recorded hash and are skipped).

use std::io::Read;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::blob::ObjectStore;
use crate::core::error::Result;
use crate::core::types::Kind;
use crate::meta::MetaStore;

/// What a scrub found.
#[derive(Debug, Default)]
pub struct Scrubbed {
    pub verified: u64,
    pub bytes: u64,
    /// Files with no recorded hash (never closed since written, or hashing
    /// still pending): nothing to compare with.
    pub unverified: u64,
    /// (path, what is wrong)
    pub damaged: Vec<(String, String)>,
}

/// Scrub every regular file; `rate` caps the read rate in bytes/s.
pub fn scrub(
    meta: &dyn MetaStore,
    objects: &ObjectStore,
    rate: Option<u64>,
    progress: &indicatif::ProgressBar,
) -> Result<Scrubbed> {
    let files: Vec<_> = meta
        .all_inodes()?
        .into_iter()
        .filter(|i| i.kind == Kind::File)
        .collect();
    progress.set_length(files.iter().map(|i| i.size).sum());
    let mut out = Scrubbed::default();
    let started = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    for inode in files {
        let Some(want) = inode.sha256.clone() else {
            out.unverified += 1;
            progress.inc(inode.size);
            continue;
        };
        let name = || {
            meta.path_of(inode.ino)
                .ok()
                .flatten()
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_else(|| format!("<inode {}>", inode.ino))
        };
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        match std::fs::File::open(objects.path(inode.ino)) {
            Ok(mut f) => loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                len += n as u64;
                out.bytes += n as u64;
                progress.inc(n as u64);
                if let Some(rate) = rate.filter(|r| *r > 0) {
                    // Sleep until the bytes read so far fit the rate.
                    let due = Duration::from_secs_f64(out.bytes as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let got = hex::encode(hasher.finalize());
        if got == want && len == inode.size {
            out.verified += 1;
            continue;
        }
        // Changed while we read it (a mounted store)? Then it is not damage.
        let now = meta.get_inode(inode.ino)?;
        if now.as_ref().and_then(|i| i.sha256.as_ref()) != Some(&want) {
            out.unverified += 1;
            continue;
        }
        let what = if len != inode.size {
            format!("object holds {len} bytes, {} recorded", inode.size)
        } else {
            format!("content hash {got} differs from the recorded {want}")
        };
        out.damaged.push((name(), what));
    }
    Ok(out)
}
