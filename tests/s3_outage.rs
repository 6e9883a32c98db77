//! An S3 store whose bucket stops answering (issue 16): the operation that
//! needs the bucket fails with EIO after the retries, local work goes on,
//! and once the bucket is back every file is whole, never mixed. Its own
//! test binary: it pauses the binary's shared S3 server.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, Instant};

use common::engine::{run_on, Engine};
use common::Mount;

/// A mount whose requests to the bucket give up after 2 s (the config
/// file lives as long as the returned directory).
fn mount_giving_up_after_2s() -> (tempfile::TempDir, Mount) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s3.toml");
    fs::write(&cfg, "[s3]\nretry_secs = 2\n").unwrap();
    let m = Mount::with_args(&["--config", cfg.to_str().unwrap()]);
    (dir, m)
}

/// The tests pause the binary's one server: one at a time.
static SERVER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run `body` on an S3 store of this binary's own server, mounted to give
/// up on the bucket after 2 s, one test at a time.
fn with_outage_mount(body: impl Fn(&mut Mount)) {
    let _one = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    common::s3::S3Server::own_only();
    run_on(Engine::S3, || {
        let (_cfg, mut m) = mount_giving_up_after_2s();
        body(&mut m);
    });
}

#[test]
fn a_bucket_that_stops_answering_gives_eio_and_never_a_mixed_file() {
    with_outage_mount(|m| {
        let old = vec![b'a'; 1 << 20];
        let new = vec![b'b'; 1 << 20];
        let mut f = fs::File::create(m.path("f")).unwrap();
        f.write_all(&old).unwrap();
        f.sync_all().unwrap();

        let (bucket, _) = m.bucket().unwrap();
        bucket.server.pause();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&new).unwrap();
        let t = Instant::now();
        let synced = f.sync_all();
        let waited = t.elapsed();
        // The local side goes on: the copy holds the new bytes.
        let local = fs::read(m.path("f"));
        bucket.server.resume();
        assert_eq!(
            synced.as_ref().map_err(|e| e.raw_os_error()),
            Err(Some(libc::EIO)),
            "fsync with the bucket away"
        );
        assert!(waited < Duration::from_secs(30), "EIO after {waited:?}");
        assert!(local.unwrap() == new, "the mount reads the local copy");

        // Back: a new fsync sends it.
        f.sync_all().unwrap();
        drop(f);
        m.unmount();
        // The bucket alone holds the file whole.
        fs::remove_dir_all(&m.backing).unwrap();
        m.mount();
        assert!(
            fs::read(m.path("f")).unwrap() == new,
            "f is the new content, whole"
        );
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn a_bucket_that_stops_answering_mid_fetch_gives_eio_never_zeros() {
    with_outage_mount(|m| {
        let size = 32usize << 20;
        let data: Vec<u8> = (0..size as u32 / 4)
            .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
            .collect();
        fs::write(m.path("big"), &data).unwrap();
        let ino = fs::metadata(m.path("big")).unwrap().ino();
        // Hashed now, or the next mount's hashing fetches it whole.
        common::get_xattr(&m.path("big"), "user.artstore.sha256").unwrap();
        m.unmount();
        fs::remove_dir_all(&m.backing).unwrap();
        m.mount();
        // The fetch crawls, so the bucket stops while it runs.
        m.arm(&["s3::fill_piece=sleep(20)"]);
        let f = fs::File::open(m.path("big")).unwrap();
        let mut head = vec![0u8; 1 << 20];
        f.read_exact_at(&mut head, 0).unwrap();
        assert!(head == data[..1 << 20]);
        let (bucket, _) = m.bucket().unwrap();
        bucket.server.pause();
        // Far past the stream: a GET of its own, which gets no answer:
        // EIO once the retries are over, never the partial copy's zeros.
        // (The kernel may ask again, its read-ahead then the read: each
        // waits for its own try.)
        let t = Instant::now();
        let mut buf = vec![0u8; 1 << 20];
        let far = f.read_exact_at(&mut buf, 24 << 20);
        let waited = t.elapsed();
        // Near the stream's front: what already came (the socket holds
        // some), else EIO once the stream stalls; never other bytes.
        let near = f.read_exact_at(&mut buf, 6 << 20).map(|()| buf.clone());
        bucket.server.resume();
        assert_eq!(far.map_err(|e| e.raw_os_error()), Err(Some(libc::EIO)));
        assert!(waited < Duration::from_secs(60), "EIO after {waited:?}");
        match near {
            Ok(got) => assert!(got == data[6 << 20..7 << 20], "wrong bytes near the front"),
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
        }
        // The bucket back: the next reads fetch again, and get it right.
        m.arm(&["s3::fill_piece=off"]);
        f.read_exact_at(&mut buf, 24 << 20).unwrap();
        assert!(
            buf == data[24 << 20..25 << 20],
            "wrong bytes after the outage"
        );
        let mut all = vec![0u8; size];
        f.read_exact_at(&mut all, 0).unwrap();
        assert!(all == data, "the file differs after the outage");
        drop(f);
        m.unmount();
        m.assert_consistent();
        // The bucket alone still holds it whole; nothing was sent.
        fs::remove_dir_all(&m.backing).unwrap();
        m.mount();
        assert!(fs::read(m.path("big")).unwrap() == data);
        assert_eq!(fs::metadata(m.path("big")).unwrap().ino(), ino);
        m.unmount();
    });
}

#[test]
fn a_send_retried_once_the_bucket_is_back_is_recorded() {
    with_outage_mount(|m| {
        fs::write(m.path("f"), b"old").unwrap();
        let ino = fs::metadata(m.path("f")).unwrap().ino();
        let old = m.settled_version(ino, "");

        let (bucket, _) = m.bucket().unwrap();
        bucket.server.pause();
        // The last close's send fails: the size is recorded, the version
        // stays the one the bucket holds.
        fs::write(m.path("f"), b"new, longer").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while m.query(&format!("SELECT size FROM {{p}}_inodes WHERE ino = {ino}")) != ["11"] {
            assert!(Instant::now() < deadline, "the close was never recorded");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(m.recorded_version(ino), old);
        bucket.server.resume();

        // The store's sender puts it, and the version is recorded; the old
        // one goes after that.
        let new = m.settled_version(ino, &old);
        let (server, prefix) = m.bucket().unwrap();
        assert_eq!(
            server
                .get(&format!("{prefix}/objects/{ino:016x}/{new}"))
                .unwrap(),
            b"new, longer"
        );
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn an_unmount_with_the_bucket_away_exits_soon_and_the_next_mount_sends() {
    with_outage_mount(|m| {
        let (bucket, _) = m.bucket().unwrap();
        bucket.server.pause();
        // Eight new files (made with the bucket away: a new file needs
        // nothing from it) whose closes' sends fail: all of them wait in
        // the cache, unsent.
        let names: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
        std::thread::scope(|s| {
            for n in &names {
                let p = m.path(n);
                s.spawn(move || fs::write(p, n.as_bytes()).unwrap());
            }
        });
        let inos: Vec<u64> = names
            .iter()
            .map(|n| fs::metadata(m.path(n)).unwrap().ino())
            .collect();
        // Give the closes' sends time to fail (each gives up after 2 s).
        std::thread::sleep(Duration::from_secs(3));
        // The unmount tries once and gives up: not 2 s or more per file.
        let t = Instant::now();
        m.unmount();
        let took = t.elapsed();
        bucket.server.resume();
        assert!(
            took < Duration::from_secs(12),
            "the unmount took {took:?} with the bucket away"
        );
        // The next mount sends what the cache held: the bucket alone then
        // serves every file.
        m.mount();
        for ino in &inos {
            m.settled_version(*ino, "");
        }
        m.unmount();
        fs::remove_dir_all(&m.backing).unwrap();
        m.mount();
        for n in &names {
            assert_eq!(fs::read(m.path(n)).unwrap(), n.as_bytes(), "{n}");
        }
        m.unmount();
        m.assert_consistent();
    });
}
