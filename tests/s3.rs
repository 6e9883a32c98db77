//! Content in an S3 bucket (issue 16, docs/S3.md): what only an S3 store
//! has (versions in the bucket, the cache, multipart uploads, a lost
//! cache directory, the bucket alone rebuilding the tables). The mount's
//! general behaviour on S3 is checked by the suites that run on every
//! store (`common::engine::every_engine`).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::engine::{run_on, Engine};
use common::Mount;

/// Bytes that differ at every offset (a misplaced range shows).
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len.div_ceil(4) as u32)
        .flat_map(|i| (i ^ seed).wrapping_mul(2654435761).to_le_bytes())
        .take(len)
        .collect()
}

/// A config file for the mount: `[s3]` and `[store]` settings.
fn config(dir: &Path, text: &str) -> String {
    let p = dir.join("s3-test.toml");
    fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

fn keys(m: &Mount, under: &str) -> Vec<String> {
    let (server, prefix) = m.bucket().expect("an S3 store");
    server.keys(&format!("{prefix}/{under}"))
}

#[test]
fn content_lives_in_the_bucket_as_versions() {
    run_on(Engine::S3, || {
        let mut m = Mount::new();
        fs::write(m.path("a"), b"one").unwrap();
        let ino = fs::metadata(m.path("a")).unwrap().ino();
        let dir = format!("objects/{ino:016x}/");
        let first = keys(&m, &dir);
        assert!(
            first.iter().any(|k| k.contains("/0000000000000001.")),
            "{first:?}"
        );
        // Overwrite: a new version, the old one gone.
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("a"))
            .unwrap();
        f.write_all(b"two").unwrap();
        f.sync_all().unwrap();
        let (server, _) = m.bucket().unwrap();
        let now = keys(&m, &dir);
        let versions: Vec<_> = now.iter().filter(|k| !k.ends_with("attr.json")).collect();
        assert_eq!(versions.len(), 1, "{now:?}");
        assert!(versions[0].contains("/0000000000000002."), "{now:?}");
        assert_eq!(server.get(versions[0]).unwrap(), b"two");
        drop(f);
        m.unmount();
        // The sidecar and the store id are objects too.
        assert!(keys(&m, &dir).iter().any(|k| k.ends_with("/attr.json")));
        assert_eq!(keys(&m, ".artfs/store-id").len(), 1);
        m.assert_consistent();
    });
}

#[test]
fn the_tables_name_the_version_each_write_sent() {
    run_on(Engine::S3, || {
        let mut m = Mount::new();
        // An fsync sends and records before it returns.
        let mut f = fs::File::create(m.path("a")).unwrap();
        f.write_all(b"one").unwrap();
        f.sync_all().unwrap();
        let ino = fs::metadata(m.path("a")).unwrap().ino();
        let first = m.recorded_version(ino);
        assert!(first.starts_with("0000000000000001."), "{first:?}");
        assert_eq!(m.bucket_versions(ino), vec![first.clone()]);
        drop(f);
        // A last close sends, then records the size and the version in
        // one commit; the version it replaced goes after that commit.
        fs::write(m.path("a"), b"two, longer").unwrap();
        let second = m.settled_version(ino, &first);
        assert!(second > first, "{second:?} after {first:?}");
        let (server, prefix) = m.bucket().unwrap();
        let key = format!("{prefix}/objects/{ino:016x}/{second}");
        assert_eq!(server.get(&key).unwrap(), b"two, longer");
        assert_eq!(
            m.query(&format!("SELECT size FROM {{p}}_inodes WHERE ino = {ino}")),
            vec!["11"]
        );
        m.unmount();
        m.assert_consistent();
        // The tables' version is what the next mount serves.
        m.mount();
        assert_eq!(fs::read(m.path("a")).unwrap(), b"two, longer");
        m.unmount();
    });
}

/// Arm `point`, change `a` with `change` aside (a close sends it, and
/// records it with the size), and wait for the crash.
fn crash_changing(m: &mut Mount, point: &str, change: impl FnOnce(&Path) + Send + 'static) {
    m.arm(&[&format!("{point}=return")]);
    let p = m.path("a");
    let worker = std::thread::spawn(move || change(&p));
    m.expect_crash(point);
    let _ = worker.join();
}

/// [`crash_changing`] by overwriting `a` with `data`.
fn crash_overwriting(m: &mut Mount, point: &str, data: &'static [u8]) {
    crash_changing(m, point, move |p| {
        let _ = fs::write(p, data);
    });
}

/// Mount after a crash: `a` reads `content`, and once settled the bucket
/// holds one version of it, later than `after`, which the tables name;
/// fsck finds the store clean. Returns that version.
fn recovered(m: &mut Mount, ino: u64, after: &str, content: &[u8]) -> String {
    m.mount();
    assert_eq!(fs::read(m.path("a")).unwrap(), content);
    let v = m.settled_version(ino, after);
    m.unmount();
    m.assert_consistent();
    v
}

/// A store with `a` holding "one", sent and recorded: (mount, ino, version).
fn store_with_one_version() -> (Mount, u64, String) {
    let m = Mount::new();
    let mut f = fs::File::create(m.path("a")).unwrap();
    f.write_all(b"one").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let ino = fs::metadata(m.path("a")).unwrap().ino();
    let v = m.settled_version(ino, "");
    (m, ino, v)
}

#[test]
fn a_crash_between_a_send_and_its_commit_records_the_version_sent() {
    run_on(Engine::S3, || {
        let (mut m, ino, one) = store_with_one_version();
        // The close sent "two", and died before recording it.
        crash_overwriting(&mut m, "flush::after_send", b"two");
        assert_eq!(
            m.bucket_versions(ino).len(),
            2,
            "both versions are in the bucket"
        );
        assert_eq!(m.recorded_version(ino), one, "the tables name the old one");
        // Recovery rolls the write forward to the version sent.
        recovered(&mut m, ino, &one, b"two");
    });
}

#[test]
fn a_crash_after_the_commit_deletes_the_replaced_version_at_recovery() {
    run_on(Engine::S3, || {
        let (mut m, ino, one) = store_with_one_version();
        // A truncate of the closed file: sent, and recorded with its size
        // in the commit that settles its intent; only the `reclaim` row
        // is left pending (a write's intent, rolled forward, would delete
        // the old version on its own).
        crash_changing(&mut m, "writer::before_version_reclaim", |p| {
            let _ = nix::unistd::truncate(p, 2);
        });
        let named = m.recorded_version(ino);
        assert!(named > one, "the new version is recorded: {named:?}");
        assert_eq!(
            m.bucket_versions(ino).len(),
            2,
            "the old one is still there"
        );
        // Recovery deletes the old one.
        assert_eq!(recovered(&mut m, ino, "", b"on"), named);
    });
}

#[test]
fn a_crash_right_after_a_put_sends_again_and_records_the_last() {
    run_on(Engine::S3, || {
        let (mut m, ino, one) = store_with_one_version();
        // The put is in the bucket; the cache's record and the tables
        // know nothing of it.
        crash_overwriting(&mut m, "s3::after_put", b"two");
        assert_eq!(m.recorded_version(ino), one);
        recovered(&mut m, ino, &one, b"two");
    });
}

#[test]
fn fsck_reports_a_recorded_version_that_is_not_the_current_one() {
    run_on(Engine::S3, || {
        let (mut m, ino, one) = store_with_one_version();
        m.unmount();
        m.assert_consistent();
        // The tables name a version the bucket does not hold.
        let gone = "00000000000000ff.1";
        m.sql(&format!(
            "UPDATE {{p}}_inodes SET version = '{gone}' WHERE ino = {ino}"
        ));
        let (code, out) = m.fsck(false);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!("version {gone} recorded")) && out.contains(&one),
            "{out}"
        );
        let (code, out) = m.fsck(true);
        assert_eq!(code, 0, "{out}");
        assert_eq!(m.recorded_version(ino), one);
        m.assert_consistent();
    });
}

#[test]
fn a_lost_cache_directory_loses_nothing() {
    run_on(Engine::S3, || {
        let mut m = Mount::new();
        let big = pattern(40 << 20, 7);
        fs::write(m.path("big"), &big).unwrap();
        fs::create_dir(m.path("d")).unwrap();
        for i in 0..20 {
            fs::write(m.path(&format!("d/f{i}")), pattern(1000 + i, i as u32)).unwrap();
        }
        common::set_xattr(&m.path("big"), "user.artstore.description", b"large").unwrap();
        m.unmount();
        let (server, prefix) = m.bucket().unwrap();
        assert!(
            server.open_uploads(&prefix).is_empty(),
            "no multipart upload left"
        );
        // The disk under the cache dies.
        fs::remove_dir_all(&m.backing).unwrap();
        m.mount();
        assert!(fs::read(m.path("big")).unwrap() == big, "big differs");
        for i in 0..20 {
            assert_eq!(
                fs::read(m.path(&format!("d/f{i}"))).unwrap(),
                pattern(1000 + i, i as u32)
            );
        }
        assert_eq!(
            common::get_xattr(&m.path("big"), "user.artstore.description").unwrap(),
            b"large"
        );
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn evicted_files_are_fetched_again() {
    run_on(Engine::S3, || {
        let mut m = Mount::with_args(&["--cache-size", "256K"]);
        for i in 0..16u32 {
            fs::write(m.path(&format!("f{i}")), pattern(64 << 10, i)).unwrap();
        }
        // Closes reach the daemon after close(2) returns: wait for the last.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut cached = walk_sizes(&m.backing.join("objects"));
        while cached > 256 << 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            cached = walk_sizes(&m.backing.join("objects"));
        }
        assert!(cached <= 256 << 10, "the cache holds {cached} bytes");
        for i in 0..16u32 {
            assert_eq!(
                fs::read(m.path(&format!("f{i}"))).unwrap(),
                pattern(64 << 10, i),
                "f{i}"
            );
        }
        m.unmount();
        m.assert_consistent();
    });
}

fn walk_sizes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        if m.is_dir() {
            n += walk_sizes(&e.path());
        } else if !e.file_name().to_string_lossy().contains('.') {
            n += m.len();
        }
    }
    n
}

#[test]
fn a_crash_mid_upload_keeps_what_was_synced_and_leaves_no_upload() {
    run_on(Engine::S3, || {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), "[s3]\nmultipart_threshold = \"5M\"\n");
        let mut m = Mount::with_args(&["--config", &cfg]);
        let synced = pattern(12 << 20, 1);
        // fsync: sent now (a close sends later, when the kernel's release
        // reaches the daemon).
        let mut f = fs::File::create(m.path("synced")).unwrap();
        f.write_all(&synced).unwrap();
        f.sync_all().unwrap();
        drop(f);
        m.arm(&["s3::before_complete=return"]);
        let mut f = fs::File::create(m.path("cut")).unwrap();
        f.write_all(&pattern(12 << 20, 2)).unwrap();
        // The fsync sends the parts, then dies before completing them.
        let _ = f.sync_all();
        drop(f);
        m.expect_crash("s3::before_complete");
        let (server, prefix) = m.bucket().unwrap();
        assert_eq!(
            server.open_uploads(&prefix).len(),
            1,
            "the upload cut short"
        );
        m.mount();
        assert!(
            server.open_uploads(&prefix).is_empty(),
            "the restart aborts the upload a crash left"
        );
        assert!(fs::read(m.path("synced")).unwrap() == synced);
        // The cut file's bytes were in the cache: sent after the restart.
        let cut = fs::read(m.path("cut")).unwrap();
        assert!(cut == pattern(12 << 20, 2), "cut has {} bytes", cut.len());
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn an_s3_store_needs_a_database_and_a_cache_dir() {
    let server = common::s3::S3Server::shared();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::bin())
            .arg("mount")
            .args(args)
            .envs(server.env())
            .output()
            .unwrap();
        (out.status.code(), common::output_text(&out))
    };
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let url = server.url("needs");
    let mnt = mnt.to_str().unwrap();
    let (code, out) = run(&[&url, mnt]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--cache-dir"), "{out}");
    let cache = dir.path().join("cache");
    let cache = cache.to_str().unwrap();
    let (code, out) = run(&[&url, mnt, "--cache-dir", cache]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("needs --db"), "{out}");
    let (code, out) = run(&["s3://Bad_Bucket/x", mnt, "--cache-dir", cache]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not a bucket name"), "{out}");
    assert!(!common::is_mounted(Path::new(mnt)));
}

#[test]
fn df_shows_the_capacity_not_the_cache_disk() {
    run_on(Engine::S3, || {
        let statvfs = |m: &Mount| nix::sys::statvfs::statvfs(&m.mnt).unwrap();
        let m = Mount::new();
        let v = statvfs(&m);
        let size = v.blocks() * v.fragment_size();
        assert_eq!(size, 1 << 50, "a bucket without a capacity shows 1 PiB");
        drop(m);
        let m = Mount::with_args(&["--capacity", "10M"]);
        fs::write(m.path("f"), vec![1u8; 1 << 20]).unwrap();
        let v = statvfs(&m);
        assert_eq!(v.blocks() * v.fragment_size(), 10 << 20);
        let free = v.blocks_available() * v.fragment_size();
        assert!(
            (8 << 20..=9 << 20).contains(&free),
            "free {free} of 10 MiB with 1 MiB used"
        );
    });
}

#[test]
fn an_archive_of_the_original_imports_into_a_bucket() {
    use common::archive::{write_archive, ArchiveSpec};
    run_on(Engine::S3, || {
        let archive = tempfile::tempdir().unwrap();
        let spec = ArchiveSpec {
            v1: 3,
            v2: 3,
            ..ArchiveSpec::healthy()
        };
        let records = write_archive(archive.path(), &spec);
        // The same tree as an element of the original that kept its files
        // in a bucket (`s3://BUCKET/FOLDER`).
        let server = common::s3::S3Server::shared();
        let original = server.new_bucket("original");
        let mut stack = vec![archive.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(archive.path()).unwrap().to_str().unwrap();
                    original.put(&format!("se01/{rel}"), &fs::read(&p).unwrap());
                }
            }
        }
        let from_dir = vec![archive.path().as_os_str().to_owned()];
        let from_bucket: Vec<std::ffi::OsString> = vec![
            format!("s3://{}/se01", original.name).into(),
            "--src-s3-endpoint".into(),
            server.endpoint.clone().into(),
        ];
        for src in [from_dir, from_bucket] {
            // An empty store in the bucket, unmounted, then the import
            // (which takes the same BACKING arguments as every command).
            let mut m = Mount::new();
            m.unmount();
            fs::remove_dir_all(&m.backing).unwrap();
            let out = std::process::Command::new(common::bin())
                .arg("import")
                .arg(&src[0])
                .args(m.location())
                .args(m.store_args())
                .args(&src[1..])
                .envs(m.store_env())
                .env("ARTFS_LOG", "warn")
                .output()
                .unwrap();
            let text = common::output_text(&out);
            assert_eq!(out.status.code(), Some(0), "{src:?}: {text}");
            assert!(
                text.contains(&format!("{} imported", records.len())),
                "{text}"
            );
            // Each imported file's version is recorded with it.
            let files = m.query("SELECT ino FROM {p}_inodes WHERE kind = 1");
            assert_eq!(files.len(), records.len(), "{files:?}");
            for ino in files {
                let ino: u64 = ino.parse().unwrap();
                assert_eq!(m.bucket_versions(ino), vec![m.recorded_version(ino)]);
            }
            // Read back by file id, from a cache emptied again: the
            // bucket holds the content.
            fs::remove_dir_all(&m.backing).unwrap();
            m.mount();
            let found = by_file_id(&m);
            for r in &records {
                assert_eq!(found.get(&r.file_id), Some(&r.content), "{}", r.file_id);
            }
            m.unmount();
            m.assert_consistent();
        }
    });
}

/// Every file of the mount, by its file id: its content.
fn by_file_id(m: &Mount) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut found = std::collections::BTreeMap::new();
    let mut stack = vec![m.mnt.clone()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(id) = common::get_xattr(&p, "user.artstore.file_id") {
                found.insert(String::from_utf8(id).unwrap(), fs::read(&p).unwrap());
            }
        }
    }
    found
}

#[test]
fn a_slow_send_at_close_holds_up_only_the_closing_caller() {
    run_on(Engine::S3, || {
        let mut m = Mount::new();
        fs::write(m.path("slow"), b"first").unwrap();
        let ino = fs::metadata(m.path("slow")).unwrap().ino();
        let first = m.settled_version(ino, "");
        // The next put takes 3 s.
        m.arm(&["s3::before_put=1*sleep(3000)"]);
        let p = m.path("slow");
        let writer = std::thread::spawn(move || {
            let t = std::time::Instant::now();
            fs::write(&p, b"sent slowly").unwrap();
            t.elapsed()
        });
        // While that close sends, other files are made, written and read.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let t = std::time::Instant::now();
        for i in 0..10 {
            let p = m.path(&format!("quick{i}"));
            fs::write(&p, b"quick").unwrap();
            assert_eq!(fs::read(&p).unwrap(), b"quick");
        }
        let took = t.elapsed();
        assert!(
            took < std::time::Duration::from_millis(2000),
            "other requests waited for the slow send: {took:?}"
        );
        // The close returned once the bytes were in the bucket; the
        // version is recorded with them.
        let closing = writer.join().unwrap();
        assert!(
            closing >= std::time::Duration::from_millis(2900),
            "the close returned before its send: {closing:?}"
        );
        m.settled_version(ino, &first);
        assert_eq!(fs::read(m.path("slow")).unwrap(), b"sent slowly");
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn a_slow_send_holds_up_no_other_file() {
    run_on(Engine::S3, || {
        let mut m = Mount::new();
        // Two files 64 inode numbers apart: the same lock when locks were
        // striped by inode number.
        let mut by_ino = std::collections::HashMap::new();
        for i in 0..70 {
            let p = m.path(&format!("f{i}"));
            fs::write(&p, b"kept").unwrap();
            by_ino.insert(fs::metadata(&p).unwrap().ino(), p);
        }
        let (slow, other) = by_ino
            .keys()
            .find_map(|&a| by_ino.get(&(a + 64)).map(|_| (a, a + 64)))
            .expect("two files 64 numbers apart");
        m.settled_version(other, "");
        m.arm(&["s3::before_put=1*sleep(4000)"]);
        let p = by_ino[&slow].clone();
        let writer = std::thread::spawn(move || fs::write(&p, b"sent slowly").unwrap());
        std::thread::sleep(std::time::Duration::from_millis(500));
        // The other file opens while the slow one is being sent.
        let t = std::time::Instant::now();
        assert_eq!(fs::read(&by_ino[&other]).unwrap(), b"kept");
        let took = t.elapsed();
        writer.join().unwrap();
        assert!(
            took < std::time::Duration::from_millis(2000),
            "an open waited for another file's send: {took:?}"
        );
        assert_eq!(fs::read(&by_ino[&slow]).unwrap(), b"sent slowly");
        m.unmount();
        m.assert_consistent();
    });
}

/// A send whose put landed but whose local record then failed (a full
/// disk under the cache) leaves nothing behind: a removal still deletes
/// that version, and a file kept gets a newer one that supersedes it and
/// every older one.
#[test]
fn a_send_whose_record_fails_after_the_put_leaves_no_stray_version() {
    run_on(Engine::S3, || {
        // Removal for real: no trash.
        let mut m = Mount::with_args(&["--trash-days", "0"]);
        // A new file, removed after the failed record: the bug left its
        // first version in the bucket, an object no file owns.
        m.arm(&["s3::record_after_put=1*return"]);
        fs::write(m.path("gone"), b"sent, never recorded").unwrap();
        let gone = fs::metadata(m.path("gone")).unwrap().ino();
        // The send runs at the release, after close(2) returns; a removal
        // waits for it (the object's lock).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while m.bucket_versions(gone).is_empty() {
            assert!(std::time::Instant::now() < deadline, "the put never landed");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        fs::remove_file(m.path("gone")).unwrap();
        // A file sent before, whose next send's record fails: the retry
        // supersedes both the version put and the one before it.
        fs::write(m.path("kept"), b"first").unwrap();
        let kept = fs::metadata(m.path("kept")).unwrap().ino();
        let first = m.settled_version(kept, "");
        m.arm(&["s3::record_after_put=1*return"]);
        fs::write(m.path("kept"), b"second, sent twice").unwrap();
        let now = m.settled_version(kept, &first);
        assert!(now.starts_with("0000000000000003."), "{now}");
        assert_eq!(fs::read(m.path("kept")).unwrap(), b"second, sent twice");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while !m.bucket_versions(gone).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the removed file's version stays: {:?}",
                m.bucket_versions(gone)
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        m.unmount();
        m.assert_consistent();
        m.mount();
        assert_eq!(fs::read(m.path("kept")).unwrap(), b"second, sent twice");
    });
}

/// A counter's value in a `/metrics` text.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[test]
fn after_a_restart_a_copy_of_the_recorded_version_is_used_without_a_request() {
    run_on(Engine::S3, || {
        let mut api = common::api::Api::start(&[]);
        fs::write(api.m.path("f"), b"kept").unwrap();
        let ino = fs::metadata(api.m.path("f")).unwrap().ino();
        let first = api.m.settled_version(ino, "");
        api.m.unmount();
        api.m.mount();
        api.wait();
        let requests = |api: &common::api::Api| {
            let text = api.metrics();
            ["list", "get"]
                .map(|op| counter(&text, &format!("artfs_s3_requests_total{{op=\"{op}\"}}")))
        };
        let before = requests(&api);
        assert_eq!(fs::read(api.m.path("f")).unwrap(), b"kept");
        assert_eq!(requests(&api), before, "(LISTs, GETs) for a current copy");
        // The bucket's copy is the one the tables name: a change goes on
        // from it as usual.
        fs::write(api.m.path("f"), b"changed").unwrap();
        let now = api.m.settled_version(ino, &first);
        assert!(now.starts_with("0000000000000002."), "{now}");
        api.m.unmount();
        api.m.assert_consistent();
    });
}

#[test]
fn a_new_file_asks_the_bucket_nothing_before_its_send() {
    run_on(Engine::S3, || {
        let api = common::api::Api::start(&[]);
        let requests = |api: &common::api::Api| {
            let text = api.metrics();
            ["list", "get"]
                .map(|op| counter(&text, &format!("artfs_s3_requests_total{{op=\"{op}\"}}")))
        };
        let before = requests(&api);
        // The first create of a mount included: no object is made ahead
        // of need before it.
        for i in 0..20 {
            let mut f = fs::File::create(api.m.path(&format!("f{i}"))).unwrap();
            f.write_all(b"new").unwrap();
        }
        assert_eq!(requests(&api), before, "(LISTs, GETs) for new files");
        for i in 0..20 {
            assert_eq!(fs::read(api.m.path(&format!("f{i}"))).unwrap(), b"new");
        }
    });
}

#[test]
fn metrics_show_the_cache_and_the_traffic() {
    run_on(Engine::S3, || {
        let api = common::api::Api::start(&["--cache-size", "1G"]);
        let mut f = fs::File::create(api.m.path("f")).unwrap();
        f.write_all(&vec![7u8; 100_000]).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let text = api.metrics();
        let value = |name: &str| counter(&text, name);
        assert!(value("artfs_s3_requests_total{op=\"put\"}") >= 1);
        // Shown (a new file lists nothing: the mount's check of the
        // bucket is what counts here).
        assert!(value("artfs_s3_requests_total{op=\"list\"}") <= 2);
        assert!(value("artfs_s3_bytes_total{direction=\"sent\"}") >= 100_000);
        assert!(value("artfs_s3_cache_bytes") >= 100_000);
        assert_eq!(value("artfs_s3_cache_limit_bytes"), 1 << 30);
        assert_eq!(value("artfs_s3_unsent_files"), 0);
        assert_eq!(value("artfs_s3_request_failures_total"), 0);
    });
}

#[test]
fn a_damaged_cached_copy_is_fetched_again_never_served_or_sent() {
    run_on(Engine::S3, || {
        let mut m = Mount::new();
        let data = pattern(300_000, 9);
        fs::write(m.path("f"), &data).unwrap();
        let ino = fs::metadata(m.path("f")).unwrap().ino();
        m.unmount();
        let versions = |m: &Mount| {
            keys(m, &format!("objects/{ino:016x}/"))
                .into_iter()
                .filter(|k| !k.ends_with("attr.json"))
                .collect::<Vec<_>>()
        };
        let before = versions(&m);
        assert_eq!(before.len(), 1, "{before:?}");
        // The cached copy is damaged while nothing of artfs wrote it: cut
        // short, then overwritten with other bytes of the same length.
        let copy = m.object_file(ino);
        fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(1000)
            .unwrap();
        m.mount();
        assert!(
            fs::read(m.path("f")).unwrap() == data,
            "the damaged copy was served"
        );
        m.unmount();
        fs::write(&copy, vec![0u8; data.len()]).unwrap();
        m.mount();
        assert!(
            fs::read(m.path("f")).unwrap() == data,
            "the damaged copy was served"
        );
        m.unmount();
        assert_eq!(versions(&m), before, "the damage was sent as a new version");
        m.assert_consistent();
        // Written through the mount and then killed before the close sends
        // it: a local write, kept and sent at the next mount.
        m.mount();
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(m.path("f"))
            .unwrap();
        f.write_all(b"NEW").unwrap();
        m.kill();
        drop(f);
        m.mount();
        let mut want = data.clone();
        want[..3].copy_from_slice(b"NEW");
        assert!(
            fs::read(m.path("f")).unwrap() == want,
            "the local write was lost"
        );
        m.unmount();
        assert_ne!(versions(&m), before, "the local write was never sent");
        m.assert_consistent();
    });
}
