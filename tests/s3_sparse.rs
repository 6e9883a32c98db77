//! Large files of an S3 store read while they are fetched (issue 16,
//! docs/S3.md "Sparse copies"): a read-only open through the mount does
//! not wait for the whole file, reads get exactly the object's bytes
//! (never a hole's zeros), and whatever else reads or writes the file
//! sees it whole. The fetch is slowed down by a test point
//! (`s3::fill_piece`, once per 256 KiB: 192 times for the 48 MiB file)
//! so that each check acts while it runs.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

use common::engine::{run_on, Engine};
use common::Mount;

const SIZE: usize = 48 << 20;
const MIB: usize = 1 << 20;

/// Bytes that differ at every offset (a misplaced range shows).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len.div_ceil(4) as u32)
        .flat_map(|i| (i ^ seed).wrapping_mul(2654435761).to_le_bytes())
        .take(len)
        .collect()
}

fn sha(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

/// A store holding `big` (SIZE bytes of `pattern(SIZE, seed)`), sent to
/// the bucket, its cache directory emptied and mounted again: the next
/// open fetches it. Returns the mount, the file's inode and its bytes.
fn cold_file(seed: u32) -> (Mount, u64, Vec<u8>) {
    cold_file_with(seed, &[])
}

fn cold_file_with(seed: u32, args: &[&str]) -> (Mount, u64, Vec<u8>) {
    let mut m = Mount::with_args(args);
    let data = pattern(SIZE, seed);
    fs::write(m.path("big"), &data).unwrap();
    let ino = fs::metadata(m.path("big")).unwrap().ino();
    // Hashed now: a file without its hash is hashed after the next
    // mount, which fetches it whole.
    let hash = common::get_xattr(&m.path("big"), "user.artstore.sha256").unwrap();
    assert_eq!(hash, sha(&data).into_bytes());
    m.unmount();
    fs::remove_dir_all(&m.backing).unwrap();
    m.mount();
    (m, ino, data)
}

/// Slow the fetch: each 256 KiB waits `ms` before it lands.
fn slow_fetch(m: &Mount, ms: u32) {
    m.arm(&[&format!("s3::fill_piece=sleep({ms})")]);
}

fn fast_fetch(m: &Mount) {
    m.arm(&["s3::fill_piece=off"]);
}

/// Whether a partial copy of `ino` is in the cache (being fetched).
fn partial_copy(m: &Mount, ino: u64) -> bool {
    let dir = m.backing.join(format!("objects/{:02x}", ino & 0xff));
    let stem = format!("{ino:016x}.");
    fs::read_dir(dir).unwrap().any(|e| {
        let n = e.unwrap().file_name().to_string_lossy().into_owned();
        n.starts_with(&stem) && n.ends_with(".fetch")
    })
}

fn versions(m: &Mount, ino: u64) -> Vec<String> {
    let (bucket, prefix) = m.bucket().unwrap();
    bucket
        .keys(&format!("{prefix}/objects/{ino:016x}/"))
        .into_iter()
        .filter(|k| !k.ends_with("attr.json"))
        .collect()
}

fn read_at(f: &fs::File, at: usize, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, at as u64).unwrap();
    buf
}

/// Wait until the whole copy is in place (the fetch goes on after the
/// last close).
fn wait_whole(m: &Mount, ino: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while partial_copy(m, ino) || !m.object_file(ino).exists() {
        assert!(Instant::now() < deadline, "the fetch never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_large_file_is_read_while_it_is_fetched() {
    run_on(Engine::S3, || {
        let (mut m, ino, data) = cold_file(1);
        let before = versions(&m, ino);
        slow_fetch(&m, 10);
        let mut f = fs::File::open(m.path("big")).unwrap();
        let mut head = vec![0u8; MIB];
        f.read_exact(&mut head).unwrap();
        assert!(head == data[..MIB], "the first MiB differs");
        // The open and the first read did not wait for the whole file.
        assert!(
            partial_copy(&m, ino) && !m.object_file(ino).exists(),
            "the file was fetched whole before the first read returned"
        );
        // Its figures are the file's, not the partial copy's.
        let st = fs::metadata(m.path("big")).unwrap();
        assert_eq!(st.len(), SIZE as u64);
        fast_fetch(&m);
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        head.extend_from_slice(&rest);
        assert_eq!(sha(&head), sha(&data), "a sequential read differs");
        drop(f);
        wait_whole(&m, ino);
        // Whole now: read again (passthrough), and the times never moved.
        assert!(fs::read(m.path("big")).unwrap() == data);
        assert_eq!(fs::metadata(m.path("big")).unwrap().mtime(), st.mtime());
        m.unmount();
        assert_eq!(versions(&m, ino), before, "a read sent a new version");
        m.assert_consistent();
    });
}

#[test]
fn a_tail_read_first_then_the_head() {
    run_on(Engine::S3, || {
        let (mut m, ino, data) = cold_file(2);
        slow_fetch(&m, 10);
        let f = fs::File::open(m.path("big")).unwrap();
        let t = Instant::now();
        // Far past the stream: fetched by a range of its own.
        let tail = read_at(&f, SIZE - MIB - 12345, MIB);
        assert!(
            tail == data[SIZE - MIB - 12345..SIZE - 12345],
            "the tail differs"
        );
        assert!(partial_copy(&m, ino), "fetched whole before the tail read");
        let end = read_at(&f, SIZE - 100, 100);
        assert!(end == data[SIZE - 100..]);
        eprintln!("tail read after {:?}", t.elapsed());
        let head = read_at(&f, 0, 3 * MIB);
        assert!(head == data[..3 * MIB], "the head differs");
        let mid = read_at(&f, SIZE / 2 + 7, 2 * MIB);
        assert!(
            mid == data[SIZE / 2 + 7..SIZE / 2 + 7 + 2 * MIB],
            "the middle differs"
        );
        fast_fetch(&m);
        assert_eq!(sha(&read_at(&f, 0, SIZE)), sha(&data));
        drop(f);
        wait_whole(&m, ino);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn two_readers_at_once_read_the_same_bytes() {
    run_on(Engine::S3, || {
        let (mut m, ino, data) = cold_file(3);
        slow_fetch(&m, 3);
        let want = sha(&data);
        let path = m.path("big");
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..2)
                .map(|i| {
                    let path = path.clone();
                    s.spawn(move || {
                        let mut f = fs::File::open(&path).unwrap();
                        let mut all = Vec::new();
                        if i == 1 {
                            // The second starts in the middle, then reads
                            // from the start.
                            let mid = read_at(&f, SIZE / 2, MIB);
                            assert!(mid == pattern(SIZE, 3)[SIZE / 2..SIZE / 2 + MIB]);
                        }
                        f.read_to_end(&mut all).unwrap();
                        sha(&all)
                    })
                })
                .collect();
            for r in readers {
                assert_eq!(r.join().unwrap(), want);
            }
        });
        wait_whole(&m, ino);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn opening_for_writing_during_the_fetch_waits_for_the_whole_file() {
    run_on(Engine::S3, || {
        let (mut m, ino, data) = cold_file(4);
        slow_fetch(&m, 5);
        let r = fs::File::open(m.path("big")).unwrap();
        assert!(read_at(&r, 0, MIB) == data[..MIB]);
        assert!(partial_copy(&m, ino), "fetched whole before the first read");
        // Opened for writing while the fetch runs: the open waits for the
        // whole copy, then writes go into it.
        let w = fs::OpenOptions::new()
            .write(true)
            .open(m.path("big"))
            .unwrap();
        assert!(
            !partial_copy(&m, ino),
            "opened for writing before the copy was whole"
        );
        w.write_all_at(b"WRITTEN", 40 << 20).unwrap();
        w.sync_all().unwrap();
        drop(w);
        let mut want = data.clone();
        want[40 << 20..(40 << 20) + 7].copy_from_slice(b"WRITTEN");
        // The reader sees the whole file, with the write.
        assert_eq!(sha(&read_at(&r, 0, SIZE)), sha(&want));
        drop(r);
        m.unmount();
        // The bucket holds the write.
        fs::remove_dir_all(&m.backing).unwrap();
        m.mount();
        fast_fetch(&m);
        assert_eq!(sha(&fs::read(m.path("big")).unwrap()), sha(&want));
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn a_daemon_killed_mid_fetch_reads_back_right_and_sends_nothing() {
    run_on(Engine::S3, || {
        let (mut m, ino, data) = cold_file(5);
        let before = versions(&m, ino);
        let mtime = fs::metadata(m.path("big")).unwrap().mtime_nsec();
        slow_fetch(&m, 10);
        let f = fs::File::open(m.path("big")).unwrap();
        assert!(read_at(&f, 0, 2 * MIB) == data[..2 * MIB]);
        assert!(partial_copy(&m, ino), "fetched whole before the first read");
        m.kill();
        drop(f);
        // The half-fetched copy is there after the crash.
        assert!(partial_copy(&m, ino));
        m.mount();
        assert!(!partial_copy(&m, ino), "the restart kept a partial copy");
        let st = fs::metadata(m.path("big")).unwrap();
        assert_eq!((st.len(), st.mtime_nsec()), (SIZE as u64, mtime));
        assert_eq!(sha(&fs::read(m.path("big")).unwrap()), sha(&data));
        wait_whole(&m, ino);
        m.unmount();
        assert_eq!(versions(&m, ino), before, "the partial copy was sent");
        m.assert_consistent();
        // And the copy the restart fetched is served whole.
        m.mount();
        assert_eq!(sha(&fs::read(m.path("big")).unwrap()), sha(&data));
        m.unmount();
    });
}

#[test]
fn seek_data_and_holes_answer_for_the_whole_file() {
    run_on(Engine::S3, || {
        let (mut m, ino, data) = cold_file(6);
        slow_fetch(&m, 5);
        let r = fs::File::open(m.path("big")).unwrap();
        assert!(read_at(&r, 0, 4096) == data[..4096]);
        assert!(partial_copy(&m, ino), "fetched whole before the first read");
        // The partial copy has holes; the file has none.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
        // SAFETY: plain lseek on an open descriptor.
        let hole = unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) };
        assert_eq!(hole, SIZE as i64, "SEEK_HOLE saw the partial copy's holes");
        assert_eq!(sha(&read_at(&r, 0, SIZE)), sha(&data));
        drop(r);
        wait_whole(&m, ino);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn an_api_download_is_sent_while_the_file_is_fetched() {
    run_on(Engine::S3, || {
        let mut api = common::api::Api::start(&[]);
        let data = pattern(SIZE, 7);
        fs::write(api.m.path("big"), &data).unwrap();
        let ino = fs::metadata(api.m.path("big")).unwrap().ino();
        common::get_xattr(&api.m.path("big"), "user.artstore.sha256").unwrap();
        api.m.unmount();
        fs::remove_dir_all(&api.m.backing).unwrap();
        api.m.mount();
        api.wait();
        slow_fetch(&api.m, 10);
        let token = common::api::token("reader", artfs::auth::Role::Admin);
        let get = |range: Option<String>| {
            let mut req = api
                .client
                .get(api.url("/api/v1/fs/big"))
                .bearer_auth(&token);
            if let Some(r) = range {
                req = req.header("Range", r);
            }
            req.send().unwrap()
        };
        // The API opens the cold file first: its first bytes come before
        // the whole file is fetched.
        let mut whole = get(None);
        assert_eq!(whole.status(), 200);
        let mut head = vec![0u8; MIB];
        whole.read_exact(&mut head).unwrap();
        assert!(head == data[..MIB], "the first MiB differs");
        assert!(
            partial_copy(&api.m, ino),
            "the download waited for the whole file"
        );
        // Ranges during the fetch, read in one piece (4 KiB) and streamed
        // (the tail, ahead of the fetch): the object's bytes, never holes.
        let at = 30 * MIB + 123;
        let small = get(Some(format!("bytes={at}-{}", at + 4095)));
        assert_eq!(small.status(), 206);
        assert!(small.bytes().unwrap()[..] == data[at..at + 4096]);
        let tail = get(Some(format!("bytes={}-", SIZE - MIB)));
        assert_eq!(tail.status(), 206);
        assert!(tail.bytes().unwrap()[..] == data[SIZE - MIB..]);
        // A reader in the mount meanwhile shares the same fetch.
        let r = fs::File::open(api.m.path("big")).unwrap();
        assert!(read_at(&r, 20 * MIB, MIB) == data[20 * MIB..21 * MIB]);
        assert!(partial_copy(&api.m, ino), "fetched whole too early to tell");
        fast_fetch(&api.m);
        let mut rest = Vec::new();
        whole.read_to_end(&mut rest).unwrap();
        head.extend_from_slice(&rest);
        assert_eq!(sha(&head), sha(&data));
        drop(r);
        wait_whole(&api.m, ino);
        assert_eq!(versions(&api.m, ino).len(), 1, "the fetch sent a version");
        api.m.unmount();
        api.m.assert_consistent();
    });
}

#[test]
fn eviction_never_takes_a_copy_being_fetched_or_open() {
    run_on(Engine::S3, || {
        // A cache far smaller than the file: every close evicts.
        let (mut m, ino, data) = cold_file_with(8, &["--cache-size", "1M"]);
        slow_fetch(&m, 5);
        let r = fs::File::open(m.path("big")).unwrap();
        assert!(read_at(&r, 0, MIB) == data[..MIB]);
        assert!(partial_copy(&m, ino), "fetched whole before the first read");
        for i in 0..8u32 {
            fs::write(m.path(&format!("small{i}")), pattern(256 << 10, i)).unwrap();
        }
        fast_fetch(&m);
        assert_eq!(sha(&read_at(&r, 0, SIZE)), sha(&data));
        // Placed while open: kept, however full the cache.
        wait_whole(&m, ino);
        for i in 8..12u32 {
            fs::write(m.path(&format!("small{i}")), pattern(256 << 10, i)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(m.object_file(ino).exists(), "an open copy was evicted");
        assert_eq!(sha(&read_at(&r, 0, SIZE)), sha(&data));
        drop(r);
        m.unmount();
        m.assert_consistent();
    });
}
