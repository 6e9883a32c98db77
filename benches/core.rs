//! Criterion micro-benchmarks of the filesystem core's hot paths, driving
//! `artfs::core` directly over a temporary BACKING (no FUSE, no kernel
//! round trips): what the daemon itself spends per request.
//!
//! Run with `cargo bench --bench core` (add `-- lookup` to filter).
//! Set `TMPDIR` to a disk-backed directory if /tmp is tmpfs.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use artfs::core::namespace::NewNode;
use artfs::core::{open_store, Fs, StoreLock, StoreOptions};
use artfs::types::{Caller, ROOT_INO};

/// A store over a fresh temporary BACKING. Field order matters: the store
/// closes before the lock is released, the runtime and the dir go last.
struct Store {
    fs: std::sync::Arc<Fs>,
    /// The store lock; released on drop.
    _lock: StoreLock,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        // As the daemon builds it (src/main.rs).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (fs, lock) =
            open_store(&StoreOptions::new(dir.path()), rt.handle().clone()).expect("open store");
        Store {
            fs,
            _lock: lock,
            _rt: rt,
            _dir: dir,
        }
    }

    fn mkdir(&self, name: &str) -> u64 {
        self.fs
            .create_node(
                &Caller::root(),
                ROOT_INO,
                name.as_bytes(),
                NewNode::Dir,
                0o755,
                0o022,
            )
            .expect("mkdir")
            .inode
            .ino
    }

    fn mkfile(&self, parent: u64, name: &str) -> u64 {
        self.fs
            .create_node(
                &Caller::root(),
                parent,
                name.as_bytes(),
                NewNode::File,
                0o644,
                0o022,
            )
            .expect("create")
            .inode
            .ino
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.fs.close();
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn fresh_name() -> String {
    format!("n{:09}", SEQ.fetch_add(1, Ordering::Relaxed))
}

fn lookups(c: &mut Criterion) {
    let s = Store::new();
    let dir = s.mkdir("d");
    let ino = s.mkfile(dir, "present");
    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    g.bench_function("getattr_cache_hit", |b| {
        b.iter(|| black_box(s.fs.getattr(black_box(ino)).unwrap()))
    });
    g.bench_function("lookup_hit", |b| {
        b.iter(|| black_box(s.fs.lookup(dir, black_box(b"present")).unwrap()))
    });
    // "d" was made during this run, so the cache knows all of it
    // (*complete*, core/cache.rs): every miss below is answered from
    // memory, never by the database. The same absent name each time:
    g.bench_function("lookup_miss_negative_cached", |b| {
        b.iter(|| black_box(s.fs.lookup(dir, black_box(b"absent")).is_err()))
    });
    // A new absent name each iteration (the name predates complete
    // directories; kept so results compare with earlier runs):
    g.bench_function("lookup_miss_uncached", |b| {
        b.iter_batched(
            fresh_name,
            |n| black_box(s.fs.lookup(dir, n.as_bytes()).is_err()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn files(c: &mut Criterion) {
    let s = Store::new();
    let dir = s.mkdir("files");
    let caller = Caller::root();
    let data = vec![0xa5u8; 4096];
    let mut g = c.benchmark_group("files");
    g.throughput(Throughput::Elements(1));
    // The daemon's share of `open(O_CREAT)+write(4 KiB)+close` through FUSE:
    // CREATE (metadata staged in memory; the object usually one made ahead
    // of need), WRITE, RELEASE (size and times staged). No transaction on
    // this path: the writer thread commits what is staged, in batches.
    g.bench_function("create_write4k_release", |b| {
        b.iter_batched(
            fresh_name,
            |n| {
                let (_, h) =
                    s.fs.create(&caller, dir, n.as_bytes(), 0o644, 0o022, libc::O_RDWR)
                        .unwrap();
                s.fs.write(h.fh, 0, &data).unwrap();
                s.fs.release(h.fh).unwrap();
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("create_node_only", |b| {
        b.iter_batched(
            fresh_name,
            |n| {
                s.fs.create_node(&caller, dir, n.as_bytes(), NewNode::File, 0o644, 0o022)
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    let ino = s.mkfile(dir, "existing");
    g.bench_function("open_release_unchanged", |b| {
        b.iter(|| {
            let h = s.fs.open(&caller, ino, libc::O_RDONLY).unwrap();
            s.fs.release(h.fh).unwrap();
        })
    });
    // With the defaults (edit mode, a trash) unlink moves the file to
    // /.trash/<uid>/<when>/files/NAME rather than deleting it.
    g.bench_function("unlink", |b| {
        b.iter_batched(
            || {
                let n = fresh_name();
                s.mkfile(dir, &n);
                n
            },
            |n| s.fs.unlink(&caller, dir, n.as_bytes()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    // Daemon-served data path (used when the kernel lacks FUSE passthrough).
    let h = s.fs.open(&caller, ino, libc::O_RDWR).unwrap();
    s.fs.write(h.fh, 0, &vec![0u8; 1 << 20]).unwrap();
    let mut off = 0u64;
    g.throughput(Throughput::Bytes(4096));
    g.bench_function("write_4k_open_handle", |b| {
        b.iter(|| {
            off = (off + 4096) % (1 << 20);
            s.fs.write(h.fh, off, &data).unwrap()
        })
    });
    g.bench_function("read_4k_open_handle", |b| {
        b.iter(|| {
            off = (off + 4096) % (1 << 20);
            black_box(s.fs.read(h.fh, off, 4096).unwrap())
        })
    });
    s.fs.release(h.fh).unwrap();
    g.finish();
}

fn readdir(c: &mut Criterion) {
    let s = Store::new();
    let mut g = c.benchmark_group("readdir");
    for n in [1000usize, 10_000] {
        let dir = s.mkdir(&format!("dir{n}"));
        for i in 0..n {
            s.mkfile(dir, &format!("f{i:06}"));
        }
        // A whole listing in the pages FUSE asks for (readdir: 512 entries;
        // readdirplus: 256 plus a getattr per entry).
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}_entries_pages_of_512"), |b| {
            b.iter(|| {
                let (mut off, mut got) = (0, 0);
                loop {
                    let page = s.fs.readdir(dir, off, 512).unwrap();
                    let Some(last) = page.last() else { break };
                    off = last.offset;
                    got += page.len();
                }
                assert_eq!(got, n + 2);
            })
        });
        g.bench_function(format!("{n}_entries_plus_pages_of_256"), |b| {
            b.iter(|| {
                let mut off = 0;
                loop {
                    let page = s.fs.readdir(dir, off, 256).unwrap();
                    let Some(last) = page.last() else { break };
                    off = last.offset;
                    for e in &page {
                        black_box(s.fs.getattr(e.ino).unwrap());
                    }
                }
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookups, files, readdir
}
criterion_main!(benches);
