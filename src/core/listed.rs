//! The chunks of recent directory listings, so that a cache miss on one of
//! their entries refills the whole chunk at once (two queries) instead of
//! costing a query per entry.
//!
//! Why: `ls -l` reads a whole directory first (each READDIRPLUS chunk is
//! prefetched into the cache, `Fs::prefetch`), then asks for each entry's
//! `security.selinux` and ACL, which the kernel does not keep, in the same
//! order. With a directory about as large as the cache or larger, the LRU
//! evicts each prefetched entry before `ls` comes back to it, and every
//! entry cost a query: `ls -l` of 100,000 files took 7.4 s with the default
//! 100,000 cache entries and 0.8 s with 300,000 (raw ext4: 0.4-0.6 s).
//! Refilled a chunk at a time, the misses cost one round of queries per
//! chunk, and the entries a refill evicts are the oldest: those `ls` is done
//! with.
//!
//! Bounded: the last [`KEEP_CHUNKS`] chunks (of up to 1024 entries each)
//! are remembered, about 16 bytes per entry.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

/// Chunks remembered: 256 READDIRPLUS chunks are 262,144 entries, more
/// than twice the default cache.
const KEEP_CHUNKS: usize = 256;

#[derive(Default)]
pub(super) struct Listed {
    inner: Mutex<Inner>,
    /// Entries put into the cache so far (loads of chunks and single
    /// misses): a chunk is refilled again only once the cache may have
    /// turned over since it was last loaded, so a random reader of a large
    /// directory pays for a chunk at most once per turnover, not per miss.
    loaded: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// The chunk each remembered entry was last listed in, by sequence
    /// number.
    by_ino: HashMap<u64, u64>,
    /// The chunks, oldest first, from sequence number `first` on.
    chunks: VecDeque<Chunk>,
    first: u64,
}

struct Chunk {
    inos: Arc<[u64]>,
    /// `Listed::loaded` when it was last loaded.
    loaded_at: u64,
}

impl Listed {
    /// A chunk of a listing, in order, is being loaded.
    pub(super) fn remember(&self, inos: &[u64]) {
        let now = self.loaded(inos.len());
        let mut c = self.inner.lock();
        if c.chunks.len() >= KEEP_CHUNKS {
            if let Some(old) = c.chunks.pop_front() {
                let seq = c.first;
                c.first += 1;
                for ino in old.inos.iter() {
                    if c.by_ino.get(ino) == Some(&seq) {
                        c.by_ino.remove(ino);
                    }
                }
            }
        }
        let seq = c.first + c.chunks.len() as u64;
        for ino in inos {
            c.by_ino.insert(*ino, seq);
        }
        c.chunks.push_back(Chunk {
            inos: inos.into(),
            loaded_at: now,
        });
    }

    /// Count `n` entries put into the cache; the count before.
    pub(super) fn loaded(&self, n: usize) -> u64 {
        self.loaded.fetch_add(n as u64, Relaxed)
    }

    /// The chunk `ino` was last listed in, to load again, unless it was
    /// loaded within the last `turnover` entries put into the cache or
    /// holds more than `max_len` entries.
    pub(super) fn take(&self, ino: u64, turnover: u64, max_len: usize) -> Option<Arc<[u64]>> {
        let mut c = self.inner.lock();
        let seq = *c.by_ino.get(&ino)?;
        let i = usize::try_from(seq.checked_sub(c.first)?).ok()?;
        let now = self.loaded.load(Relaxed);
        let chunk = c.chunks.get_mut(i)?;
        if now.saturating_sub(chunk.loaded_at) < turnover || chunk.inos.len() > max_len {
            return None;
        }
        chunk.loaded_at = now;
        let inos = chunk.inos.clone();
        drop(c);
        self.loaded(inos.len());
        Some(inos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_loaded_again_once_per_turnover_and_old_ones_go() {
        let l = Listed::default();
        l.remember(&[1, 2, 3]);
        l.remember(&[4, 5]);
        // Just loaded: not again until 10 more entries went in.
        assert!(l.take(2, 10, usize::MAX).is_none());
        l.loaded(10);
        assert_eq!(l.take(2, 10, usize::MAX).as_deref(), Some(&[1, 2, 3][..]));
        assert!(l.take(1, 10, usize::MAX).is_none(), "once per turnover");
        assert_eq!(l.take(5, 10, usize::MAX).as_deref(), Some(&[4, 5][..]));
        // Listed again: the newer chunk answers.
        l.remember(&[6, 7]);
        l.remember(&[7, 8]);
        l.loaded(10);
        assert_eq!(l.take(7, 10, usize::MAX).as_deref(), Some(&[7, 8][..]));
        assert_eq!(l.take(6, 10, usize::MAX).as_deref(), Some(&[6, 7][..]));
        assert!(l.take(99, 0, usize::MAX).is_none(), "never listed");
        for i in 0..KEEP_CHUNKS as u64 {
            l.remember(&[100 + i]);
        }
        l.remember(&[9]);
        assert!(
            l.take(100, 0, usize::MAX).is_none(),
            "the oldest chunk was dropped"
        );
        assert_eq!(l.take(101, 0, usize::MAX).as_deref(), Some(&[101][..]));
        assert_eq!(l.take(9, 0, usize::MAX).as_deref(), Some(&[9][..]));
        assert!(l.inner.lock().by_ino.len() <= KEEP_CHUNKS);
    }
}
