//! A large copy read while it is fetched (docs/S3.md, "Sparse copies").
//!
//! A read-only open through the FUSE door of a large file not cached
//! does not wait for the whole file: the copy is made at a temp name
//! (`<ino>.<n>.fetch`, as long as the file, holes where bytes have not
//! come), one GET streams the object into it from the first byte not
//! there, and the handle is served by the daemon, each read waiting
//! ([`Fill::wait`]) until the bytes it needs have arrived. A read far
//! past the stream's front asks for its own range (and some read-ahead)
//! rather than wait. Once every byte is there the copy is renamed into
//! place and recorded clean, as a whole fetch would leave it.
//!
//! Nothing but the daemon's reads sees the temp file: a crash leaves it
//! for `load_cache` to remove (fetched again, never served or sent), the
//! figures of an open partial copy are the version's ([`Fill::figures`]),
//! and everything that reads descriptors itself waits for the whole copy
//! (`S3Store::settled`).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path as Key;
use object_store::ObjectStore;
use parking_lot::{Condvar, Mutex};

use super::{bump, object_stat, Counters, S3Store, Version};
use crate::blob::{Filling, ObjectStat};

/// A read starting this far past the stream's front asks for its own
/// range: the stream would take a while to get there.
const FAR: u64 = 16 << 20;
/// What a far read asks for beyond its own bytes, doubled for each read
/// that continues the range before it (a sequential reader far ahead).
const AHEAD_MIN: u64 = 4 << 20;
const AHEAD_MAX: u64 = 64 << 20;

/// Sorted, disjoint, non-adjacent byte ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RangeSet(Vec<Range<u64>>);

impl RangeSet {
    pub(super) fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        // The ranges touching or overlapping `r` merge with it.
        let first = self.0.partition_point(|x| x.end < r.start);
        let last = self.0.partition_point(|x| x.start <= r.end);
        let mut merged = r;
        if first < last {
            merged.start = merged.start.min(self.0[first].start);
            merged.end = merged.end.max(self.0[last - 1].end);
        }
        self.0.splice(first..last, std::iter::once(merged));
    }

    /// Whether every byte of `r` is in the set.
    pub(super) fn covers(&self, r: &Range<u64>) -> bool {
        r.is_empty() || self.0.iter().any(|x| x.start <= r.start && r.end <= x.end)
    }

    /// The first byte of `r` not in the set (`r.end` when covered).
    pub(super) fn first_missing(&self, r: &Range<u64>) -> u64 {
        let i = self.0.partition_point(|x| x.end <= r.start);
        match self.0.get(i) {
            Some(x) if x.start <= r.start => x.end.min(r.end),
            _ => r.start,
        }
    }

    /// The end of the bytes held from 0 on.
    pub(super) fn front(&self) -> u64 {
        self.first_missing(&(0..u64::MAX))
    }
}

#[derive(Default)]
struct State {
    have: RangeSet,
    /// The stream is running.
    streaming: bool,
    /// Ranged GETs under way.
    asked: Vec<Range<u64>>,
    /// Where the last far range ended, and its read-ahead.
    last_ask: (u64, u64),
    /// Fetches that failed so far, and the last one's error.
    failures: u64,
    error: String,
    /// Given up (the file removed, the copy abandoned, its placing failed).
    cancelled: bool,
    /// Every byte arrived; placing the copy was handed on.
    finishing: bool,
    /// The ranges readers wait for: a piece that lands wakes them only
    /// when it completes one (a wake-up per piece of a few KiB cost as
    /// much as the copying).
    waiting: Vec<Range<u64>>,
}

/// The fetch of one version into a partial copy.
pub(super) struct Fill {
    pub(super) ino: u64,
    pub(super) version: Version,
    /// The temp file, and its write side.
    pub(super) tmp: PathBuf,
    pub(super) file: File,
    me: Weak<Fill>,
    store: Weak<S3Store>,
    client: Arc<AmazonS3>,
    rt: tokio::runtime::Handle,
    /// How long a GET may go without a byte before it is given up.
    idle: Duration,
    counters: Arc<Counters>,
    st: Mutex<State>,
    cv: Condvar,
    /// Placed and recorded: the local file is the copy.
    whole: AtomicBool,
    started: std::time::Instant,
}

fn eio(what: String) -> io::Error {
    io::Error::other(what)
}

impl Fill {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        ino: u64,
        version: Version,
        tmp: PathBuf,
        file: File,
        store: Weak<S3Store>,
        client: Arc<AmazonS3>,
        rt: tokio::runtime::Handle,
        idle: Duration,
        counters: Arc<Counters>,
    ) -> Arc<Fill> {
        Arc::new_cyclic(|me| Fill {
            ino,
            version,
            tmp,
            file,
            me: me.clone(),
            store,
            client,
            rt,
            idle,
            counters,
            st: Mutex::new(State::default()),
            cv: Condvar::new(),
            whole: AtomicBool::new(false),
            started: std::time::Instant::now(),
        })
    }

    fn size(&self) -> u64 {
        self.version.size
    }

    /// Start the stream from the first byte not there. Caller holds `st`.
    fn start_stream(&self, st: &mut State) {
        st.streaming = true;
        let Some(me) = self.me.upgrade() else { return };
        self.rt.spawn(async move {
            let r = me.stream().await;
            me.settle(r, None);
        });
    }

    /// Start the stream (at open).
    pub(super) fn start(&self) {
        let mut st = self.st.lock();
        self.start_stream(&mut st);
    }

    /// Ask for `r` alone. Caller holds `st`.
    fn ask(&self, st: &mut State, r: Range<u64>) {
        st.asked.push(r.clone());
        let Some(me) = self.me.upgrade() else { return };
        self.rt.spawn(async move {
            let got = me.get_into(r.clone()).await;
            me.settle(got, Some(r));
        });
    }

    /// A fetch ended: record a failure, or hand the whole copy on to be
    /// placed.
    fn settle(&self, r: Result<(), String>, asked: Option<Range<u64>>) {
        let mut st = self.st.lock();
        match &asked {
            Some(a) => st.asked.retain(|x| x != a),
            None => st.streaming = false,
        }
        if let Err(e) = r {
            if !st.cancelled {
                tracing::warn!(ino = self.ino, key = %self.version.key, error = %e,
                    "fetching a file from S3 failed; reads of bytes not fetched get EIO");
            }
            st.failures += 1;
            st.error = e;
        }
        // Placed only once no fetch runs: none writes the copy after.
        let idle = !st.streaming && st.asked.is_empty();
        let done = idle && !st.cancelled && !st.finishing && st.have.covers(&(0..self.size()));
        st.finishing |= done;
        let st_cancelled = st.cancelled;
        drop(st);
        self.cv.notify_all();
        let (Some(store), Some(me)) = (self.store.upgrade(), self.me.upgrade()) else {
            return;
        };
        if done {
            tracing::debug!(ino = self.ino, bytes = self.size(), took = ?self.started.elapsed(),
                "fetched a copy while it was read");
            // Renaming and recording take the object's lock: not on the
            // runtime's threads.
            self.rt.spawn_blocking(move || store.fill_done(&me));
        } else if idle && !st_cancelled {
            self.rt.spawn_blocking(move || store.fill_idle(&me));
        }
    }

    /// Stream the object from the first byte not there to its end; a GET
    /// cut short after some progress is resumed from where it stopped.
    async fn stream(&self) -> Result<(), String> {
        loop {
            let from = self.st.lock().have.front();
            if from >= self.size() {
                return Ok(());
            }
            match self.get_into(from..self.size()).await {
                Ok(()) => {}
                Err(e) if self.st.lock().have.front() > from && !self.st.lock().cancelled => {
                    tracing::debug!(ino = self.ino, error = %e, "resuming a fetch");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// GET `r` of the object into the copy, recording each piece as it
    /// lands. The client has no overall timeout (a large object takes as
    /// long as it takes): a GET with no byte for `idle` is given up.
    async fn get_into(&self, r: Range<u64>) -> Result<(), String> {
        bump(&self.counters.gets, 1);
        let key = Key::from(self.version.key.as_str());
        let whole = r.start == 0 && r.end == self.size();
        let opts = object_store::GetOptions::new().with_range((!whole).then_some(r.clone()));
        let fail = |what: String| {
            bump(&self.counters.failures, 1);
            format!("S3 get {}: {what}", self.version.key)
        };
        // The first answer may take the client's own retries.
        let answer = tokio::time::timeout(self.idle * 2, self.client.get_opts(&key, opts))
            .await
            .map_err(|_| fail(format!("no answer in {:?}", self.idle * 2)))?
            .map_err(|e| fail(e.to_string()))?;
        let mut body = answer.into_stream();
        let mut at = r.start;
        loop {
            let next = tokio::time::timeout(self.idle, body.try_next())
                .await
                .map_err(|_| fail(format!("no byte in {:?}", self.idle)))?
                .map_err(|e| fail(e.to_string()))?;
            let Some(bytes) = next else { break };
            let n = bytes.len() as u64;
            if at + n > r.end {
                return Err(fail(format!(
                    "more than the {} bytes asked",
                    r.end - r.start
                )));
            }
            // Tests slow the fetch down here, once per 256 KiB whatever
            // the pieces' sizes, to act while it runs.
            for _ in (at >> 18)..((at + n) >> 18) {
                fail::fail_point!("s3::fill_piece");
            }
            if self.st.lock().cancelled {
                return Err("given up".into());
            }
            self.file
                .write_all_at(&bytes, at)
                .map_err(|e| fail(format!("writing the copy: {e}")))?;
            bump(&self.counters.fetched, n);
            let mut st = self.st.lock();
            st.have.insert(at..at + n);
            at += n;
            // The rest came by another GET (a far read's range).
            let rest_there = st.have.covers(&(at..r.end));
            let wake = st.waiting.iter().any(|w| st.have.covers(w));
            drop(st);
            if wake {
                self.cv.notify_all();
            }
            if rest_there {
                return Ok(());
            }
        }
        if at != r.end {
            return Err(fail(format!(
                "{} bytes of the {} asked came back",
                at - r.start,
                r.end - r.start
            )));
        }
        Ok(())
    }

    /// Give up: readers of bytes not there get EIO, fetches stop, the
    /// temp file goes (open descriptors keep what it holds).
    pub(super) fn cancel(&self) {
        self.st.lock().cancelled = true;
        self.cv.notify_all();
        let _ = std::fs::remove_file(&self.tmp);
    }

    /// The copy is placed and recorded.
    pub(super) fn set_whole(&self) {
        self.whole.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    /// Nothing is being fetched (the fetches failed).
    pub(super) fn is_idle(&self) -> bool {
        let st = self.st.lock();
        !st.streaming && st.asked.is_empty() && !st.finishing
    }

    /// Wait for every byte, then for the copy to be placed (or given up).
    pub(super) fn wait_whole(&self) -> io::Result<()> {
        self.wait(0..self.size())?;
        let mut st = self.st.lock();
        while !self.whole() && !st.cancelled {
            self.cv.wait_for(&mut st, Duration::from_millis(200));
        }
        Ok(())
    }
}

impl Filling for Fill {
    fn wait(&self, r: Range<u64>) -> io::Result<()> {
        let r = r.start.min(self.size())..r.end.min(self.size());
        let mut st = self.st.lock();
        let seen = st.failures;
        let mut launched = 0;
        loop {
            if st.have.covers(&r) {
                return Ok(());
            }
            if st.cancelled {
                return Err(eio(format!(
                    "the fetch of {} was given up",
                    self.version.key
                )));
            }
            if st.failures != seen {
                return Err(eio(st.error.clone()));
            }
            let need = st.have.first_missing(&r);
            let front = st.have.front();
            let far = need > front + FAR;
            let coming = (st.streaming && !far) || st.asked.iter().any(|a| a.contains(&need));
            if !coming {
                if launched >= 2 {
                    // What was started ended without the bytes or an error.
                    return Err(eio(format!(
                        "bytes at {need} of {} never came",
                        self.version.key
                    )));
                }
                launched += 1;
                if far {
                    let ahead = if st.last_ask.0 == need {
                        (st.last_ask.1 * 2).min(AHEAD_MAX)
                    } else {
                        AHEAD_MIN
                    };
                    let end = r.end.max(need + ahead).min(self.size());
                    // Whole 64 KiB pages, as the kernel reads.
                    let start = need & !0xffff;
                    st.last_ask = (end, ahead);
                    self.ask(&mut st, start..end);
                } else {
                    // A read after a failure tries again.
                    self.start_stream(&mut st);
                }
            }
            st.waiting.push(r.clone());
            self.cv.wait_for(&mut st, Duration::from_secs(1));
            if let Some(i) = st.waiting.iter().position(|w| *w == r) {
                st.waiting.swap_remove(i);
            }
        }
    }

    fn ready(&self, r: Range<u64>) -> bool {
        let r = r.start.min(self.size())..r.end.min(self.size());
        self.st.lock().have.covers(&r)
    }

    fn whole(&self) -> bool {
        self.whole.load(Ordering::Acquire)
    }

    fn figures(&self) -> ObjectStat {
        object_stat(self.version.size, self.version.mtime)
    }
}

#[cfg(test)]
mod tests {
    use super::RangeSet;

    #[test]
    fn a_range_set_merges_and_answers() {
        let mut s = RangeSet::default();
        assert_eq!(s.front(), 0);
        assert!(s.covers(&(5..5)));
        assert!(!s.covers(&(0..1)));
        s.insert(10..20);
        s.insert(30..40);
        assert_eq!(s.front(), 0);
        assert!(s.covers(&(12..18)) && s.covers(&(10..20)));
        assert!(!s.covers(&(15..25)) && !s.covers(&(5..12)));
        assert_eq!(s.first_missing(&(12..35)), 20);
        assert_eq!(s.first_missing(&(5..35)), 5);
        assert_eq!(s.first_missing(&(20..35)), 20);
        assert_eq!(s.first_missing(&(32..35)), 35);
        // Adjacent ranges join; one spanning several swallows them.
        s.insert(20..25);
        assert_eq!(s.0, vec![10..25, 30..40]);
        s.insert(0..10);
        assert_eq!(s.front(), 25);
        s.insert(24..31);
        assert_eq!(s.0, vec![0..40]);
        assert_eq!(s.front(), 40);
        s.insert(50..60);
        s.insert(70..80);
        s.insert(45..75);
        assert_eq!(s.0, vec![0..40, 45..80]);
        s.insert(3..7);
        s.insert(0..0);
        assert_eq!(s.0, vec![0..40, 45..80]);
        assert!(s.covers(&(46..80)) && !s.covers(&(39..46)));
    }
}
