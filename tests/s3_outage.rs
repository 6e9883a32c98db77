//! An S3 store whose bucket stops answering (issue 16): the operation that
//! needs the bucket fails with EIO after the retries, local work goes on,
//! and once the bucket is back every file is whole, never mixed. Its own
//! test binary: it pauses the binary's shared S3 server.

mod common;

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use common::engine::{run_on, Engine};
use common::Mount;

#[test]
fn a_bucket_that_stops_answering_gives_eio_and_never_a_mixed_file() {
    common::s3::S3Server::own_only();
    run_on(Engine::S3, || {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("s3.toml");
        fs::write(&cfg, "[s3]\nretry_secs = 2\n").unwrap();
        let mut m = Mount::with_args(&["--config", cfg.to_str().unwrap()]);
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
