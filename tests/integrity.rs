//! Content integrity (issue 12, points 5 and 10): every regular file gets
//! its SHA-256 recorded without anyone asking, even after a crash; a
//! missing or short object is an error on every door, never an empty file,
//! and nothing about the file changes until the object is back.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use artfs::auth::{mint, MintRequest, Role};
use common::Mount;
use reqwest::blocking::Client;
use sha2::{Digest, Sha256};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Run the artfs command on a store: (exit code, stdout + stderr).
fn cli(m: &Mount, args: &[&str]) -> (i32, String) {
    let out = m
        .command(args[0])
        .args(&args[1..])
        .env("ARTFS_LOG", "warn")
        .output()
        .unwrap();
    let text = common::output_text(&out);
    (out.status.code().unwrap_or(-1), text)
}

/// The checksum the sidecar of `ino` records (what the tables said when
/// it was last written), if any.
fn sidecar_checksum(m: &Mount, ino: u64) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(&m.sidecar_bytes(ino)?).ok()?;
    doc["checksum"].as_str().map(str::to_string)
}

/// Deterministic content of `len` bytes for file `i`.
fn content(i: usize, len: usize) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Files written just before a kill -9, none with a recorded hash: `big`
/// ones closed while the hasher is held back, `small` ones still open
/// (never closed). Returns (name, content) of each; the daemon is dead.
fn crash_leaving_unhashed(m: &mut Mount, big: usize, small: usize) -> Vec<(String, Vec<u8>)> {
    m.arm(&["hasher::before_hash=sleep(600000)"]);
    let mut files = Vec::new();
    for i in 0..big {
        let (name, data) = (format!("big{i}"), content(i, (1 << 20) + 4096 * i + 1));
        fs::write(m.path(&name), &data).unwrap();
        files.push((name, data));
    }
    let mut open = Vec::new();
    for i in 0..small {
        let (name, data) = (format!("small{i}"), content(1000 + i, 100 + i * 37));
        let mut f = File::create(m.path(&name)).unwrap();
        f.write_all(&data).unwrap();
        open.push(f);
        files.push((name, data));
    }
    // Every create's intent is durable; the content is in the objects.
    File::open(&m.mnt).unwrap().sync_all().unwrap();
    m.kill();
    drop(open);
    files
}

/// `artfs scrub --dry-run` output on the store.
fn scrub_report(m: &Mount) -> String {
    let (code, out) = cli(m, &["scrub", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    out
}

#[test]
fn files_left_unhashed_by_a_crash_get_their_hash_at_the_next_mount() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let files = crash_leaving_unhashed(&mut m, 8, 40);
        // Nothing was recorded before the crash.
        let out = scrub_report(&m);
        for (name, _) in &files {
            assert!(
                out.contains(&format!("no recorded hash: /{name}\n")),
                "{out}"
            );
        }

        m.mount();
        let inos: Vec<(u64, String)> = files
            .iter()
            .map(|(name, data)| {
                let st = fs::metadata(m.path(name)).unwrap();
                assert_eq!(st.len(), data.len() as u64, "{name}");
                (st.ino(), sha256_hex(data))
            })
            .collect();
        // Nobody asks for a hash (no getxattr, no read): the mount records
        // them by itself, committed to the tables and their sidecars.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = scrub_report(&m);
            let all_sidecars = inos
                .iter()
                .all(|(ino, want)| sidecar_checksum(&m, *ino).as_deref() == Some(want.as_str()));
            if out.contains(&format!("verified {} files", files.len()))
                && out.contains(" 0 without a recorded hash")
                && out.contains(" 0 damaged")
                && all_sidecars
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "hashes were not recorded in time:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn unhashed_files_are_counted_in_metrics_and_info_until_hashed() {
    common::engine::every_engine(|| {
        let (mut m, api) = mount_with_api();
        let gauge = |name: &str| -> Option<u64> {
            let text = api
                .client
                .get(format!("{}/metrics", api.base))
                .send()
                .ok()?
                .text()
                .ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse().ok())
        };
        let info = || -> serde_json::Value {
            match api
                .client
                .get(format!("{}/api/v1/info", api.base))
                .bearer_auth(&api.token)
                .send()
            {
                Ok(r) => r.json().unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            }
        };
        let files = crash_leaving_unhashed(&mut m, 3, 5);
        m.mount();
        api.wait();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (metric, info) = (gauge("artfs_unhashed_files"), info());
            if metric == Some(0) && info["unhashed_files"] == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still unhashed: metric {metric:?}, info {info}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(gauge("artfs_missing_objects_total"), Some(0));
        for (name, data) in &files {
            assert_eq!(
                common::getx(&m.path(name), "user.artstore.sha256").unwrap(),
                sha256_hex(data).as_bytes()
            );
        }
    });
}

#[test]
fn scrub_lists_unhashed_files_by_path_and_records_their_hashes() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let files = crash_leaving_unhashed(&mut m, 2, 6);
        // Settle the crash offline (as a mount's recovery would).
        let (_, out) = m.fsck(true);
        assert!(out.contains("settled pending"), "{out}");

        // Report only: lists every file by path, records nothing.
        let out = scrub_report(&m);
        for (name, _) in &files {
            assert!(
                out.contains(&format!("no recorded hash: /{name}\n")),
                "{out}"
            );
        }
        assert!(
            out.contains(&format!(
                "{} without a recorded hash (0 recorded now)",
                files.len()
            )),
            "{out}"
        );
        assert!(scrub_report(&m).contains(&format!("{} without", files.len())));

        // By default (no daemon serving the store) it records them.
        let (code, out) = cli(&m, &["scrub"]);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!(
                "{n} without a recorded hash ({n} recorded now)",
                n = files.len()
            )),
            "{out}"
        );
        let out = scrub_report(&m);
        assert!(
            out.contains(&format!("verified {} files", files.len())) && out.contains(" 0 without"),
            "{out}"
        );
        // The tables and sidecars agree.
        m.assert_consistent();
        m.mount();
        for (name, data) in &files {
            let ino = fs::metadata(m.path(name)).unwrap().ino();
            assert_eq!(
                sidecar_checksum(&m, ino).as_deref(),
                Some(sha256_hex(data).as_str())
            );
            assert_eq!(fs::read(m.path(name)).unwrap(), *data);
        }
    });
}

/// The API door of a mount: base URL, client and an admin token.
struct Api {
    base: String,
    client: Client,
    token: String,
    _keys: tempfile::TempDir,
}

impl Api {
    fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
    }

    /// Wait until the API answers (after a mount).
    fn wait(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .client
            .get(format!("{}/health/live", self.base))
            .send()
            .is_err()
        {
            assert!(Instant::now() < deadline, "the API never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, name: &str) -> u64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }
}

fn mount_with_api() -> (Mount, Api) {
    let keys = tempfile::tempdir().unwrap();
    let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let (private, public) = common::keys::genpkey(keys.path(), "ec", &ec);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let m = Mount::with_args(&["--api", &addr, "--jwt-key", public.to_str().unwrap()]);
    let token = mint(&MintRequest::new(
        fs::read(&private).unwrap(),
        "admin",
        Role::Admin,
    ))
    .unwrap();
    let api = Api {
        base: format!("http://{addr}"),
        client: Client::builder().no_proxy().build().unwrap(),
        token,
        _keys: keys,
    };
    api.wait();
    (m, api)
}

/// Everything about `name` as both doors show it, once its object is back.
fn assert_intact(m: &Mount, api: &Api, name: &str, data: &[u8], id: &str) {
    let sha = sha256_hex(data);
    assert_eq!(fs::metadata(m.path(name)).unwrap().len(), data.len() as u64);
    assert_eq!(fs::read(m.path(name)).unwrap(), data);
    assert_eq!(
        common::getx(&m.path(name), "user.artstore.sha256").unwrap(),
        sha.as_bytes()
    );
    for path in [
        format!("/api/v1/fs/{name}"),
        format!("/api/v1/files/{id}/download"),
    ] {
        let r = api.get(&path);
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            r.headers()["etag"].to_str().unwrap(),
            format!("\"{sha}\""),
            "{path}"
        );
        assert_eq!(r.bytes().unwrap().as_ref(), data, "{path}");
    }
}

#[test]
fn a_missing_object_under_a_live_mount_is_an_error_on_every_door() {
    common::engine::every_engine(|| {
        let (mut m, api) = mount_with_api();
        let data = content(7, 100_000);
        fs::write(m.path("f"), &data).unwrap();
        File::create(m.path("empty")).unwrap();
        let ino = fs::metadata(m.path("f")).unwrap().ino();
        let sha = sha256_hex(&data);
        assert_eq!(
            common::getx(&m.path("f"), "user.artstore.sha256").unwrap(),
            sha.as_bytes()
        );
        let meta: serde_json::Value = api.get("/api/v1/meta/f").json().unwrap();
        let id = meta["file_id"].as_str().unwrap().to_string();
        assert_intact(&m, &api, "f", &data, &id);

        // The object goes away behind artfs's back.
        let taken = m.take_object(ino);
        let before = api.metric("artfs_missing_objects_total");

        // The mount: every open (fresh descriptors) is EIO, also one that
        // would truncate; getxattr sha256 too. The size stays as recorded.
        assert_eq!(common::errno(File::open(m.path("f"))), libc::EIO);
        assert_eq!(common::errno(fs::read(m.path("f"))), libc::EIO);
        assert_eq!(
            common::errno(OpenOptions::new().write(true).open(m.path("f"))),
            libc::EIO
        );
        assert_eq!(
            common::errno(File::create(m.path("f"))),
            libc::EIO,
            "O_TRUNC must not empty a file whose content is lost"
        );
        assert_eq!(
            common::errno(common::getx(&m.path("f"), "user.artstore.sha256")),
            libc::EIO
        );
        assert_eq!(fs::metadata(m.path("f")).unwrap().len(), data.len() as u64);
        // The API: both download routes fail, never 200 with 0 bytes.
        for path in [
            "/api/v1/fs/f".to_string(),
            format!("/api/v1/files/{id}/download"),
        ] {
            let r = api.get(&path);
            assert_eq!(r.status(), 500, "{path}");
        }
        // Never created in its place; counted; fsck (read-only, mounted)
        // names it and fails.
        assert!(!m.object_exists(ino), "the object was recreated");
        assert!(api.metric("artfs_missing_objects_total") >= before + 5);
        let (code, out) = m.fsck(false);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!(
                "file {ino} (/f): object missing, 100000 bytes recorded"
            )),
            "{out}"
        );
        // An empty file may lack its object: it is made again, empty.
        let empty = fs::metadata(m.path("empty")).unwrap().ino();
        drop(m.take_object(empty));
        assert_eq!(fs::read(m.path("empty")).unwrap(), b"");

        // Back again: everything as before, through both doors.
        m.put_back(taken);
        assert_intact(&m, &api, "f", &data, &id);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn a_missing_or_short_object_found_unmounted_is_reported_and_never_zeroed() {
    common::engine::every_engine(|| {
        let (mut m, api) = mount_with_api();
        let data = content(3, 50_000);
        let other = content(4, 3000);
        fs::write(m.path("f"), &data).unwrap();
        fs::write(m.path("g"), &other).unwrap();
        let (ino, ino_g) = (
            fs::metadata(m.path("f")).unwrap().ino(),
            fs::metadata(m.path("g")).unwrap().ino(),
        );
        let id: String = api
            .get("/api/v1/meta/f")
            .json::<serde_json::Value>()
            .unwrap()["file_id"]
            .as_str()
            .unwrap()
            .into();
        common::getx(&m.path("f"), "user.artstore.sha256").unwrap();
        common::getx(&m.path("g"), "user.artstore.sha256").unwrap();
        m.unmount();
        m.assert_consistent();

        // f's object goes, g's is cut short.
        let taken = m.take_object(ino);
        m.cut_object(ino_g, 1000);
        let (code, out) = m.fsck(false);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains(&format!(
                "file {ino} (/f): object missing, 50000 bytes recorded"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "file {ino_g} (/g): object short, holds 1000 of 3000 recorded bytes"
            )),
            "{out}"
        );
        // --repair neither zeroes nor shrinks: both are reported again.
        let (code, out) = m.fsck(true);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("object missing") && out.contains("object short"),
            "{out}"
        );
        assert!(!m.object_exists(ino));
        // Scrub names them too.
        let (code, out) = cli(&m, &["scrub", "--dry-run"]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("damaged: /f: object missing"), "{out}");

        // Mounted: errors, sizes as recorded, nothing created.
        m.mount();
        assert_eq!(common::errno(fs::read(m.path("f"))), libc::EIO);
        assert_eq!(common::errno(fs::read(m.path("g"))), libc::EIO);
        assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 50_000);
        assert_eq!(fs::metadata(m.path("g")).unwrap().len(), 3000);
        assert!(!m.object_exists(ino), "the object was recreated");
        m.unmount();

        // Restored: as before.
        m.put_back(taken);
        m.set_object_bytes(ino_g, &other);
        m.assert_consistent();
        m.mount();
        api.wait();
        assert_intact(&m, &api, "f", &data, &id);
        assert_eq!(fs::read(m.path("g")).unwrap(), other);
        assert_eq!(
            common::getx(&m.path("g"), "user.artstore.sha256").unwrap(),
            sha256_hex(&other).as_bytes()
        );
    });
}

#[test]
fn recovery_keeps_the_recorded_size_of_a_file_whose_object_is_missing() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let data = content(9, 70_000);
        fs::write(m.path("f"), &data).unwrap();
        let ino = fs::metadata(m.path("f")).unwrap().ino();
        // A writer's intent is durable and pending when the daemon dies.
        let writer = OpenOptions::new().write(true).open(m.path("f")).unwrap();
        m.kill();
        drop(writer);
        let taken = m.take_object(ino);

        m.mount();
        assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 70_000);
        assert_eq!(common::errno(fs::read(m.path("f"))), libc::EIO);
        assert!(!m.object_exists(ino), "the object was recreated");
        m.unmount();
        let (code, out) = m.fsck(false);
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("(/f): object missing, 70000 bytes recorded"),
            "{out}"
        );

        m.put_back(taken);
        m.assert_consistent();
        m.mount();
        assert_eq!(fs::read(m.path("f")).unwrap(), data);
        assert_eq!(
            common::getx(&m.path("f"), "user.artstore.sha256").unwrap(),
            sha256_hex(&data).as_bytes()
        );
    });
}
