//! Limits of the HTTP door against abuse: metric series stay bounded
//! whatever methods and paths arrive, connections cannot starve the mount
//! of file descriptors, one token cannot take every upload slot, a body
//! dripped in too slowly is cut, and /metrics can ask for a token.
//! Real mounts, real keys (openssl), raw sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use artfs::auth::Role;
use common::api::{free_addr, raw_http as http_bytes, read_response};
use common::{is_mounted, Mount};

fn token(sub: &str) -> String {
    common::api::token(sub, Role::User)
}

/// The flags starting the API on `addr` with the test key. Every token
/// acts as root (`--api-uid 0`): these tests are about limits, not the
/// default least-privilege identity (tests/grants.rs).
fn api_args(addr: &str) -> Vec<String> {
    vec![
        "--api".into(),
        addr.into(),
        "--jwt-key".into(),
        common::api::key().public.to_str().unwrap().into(),
        "--api-uid".into(),
        "0".into(),
    ]
}

fn mount_api(extra: &[&str]) -> (Mount, String) {
    let api = common::api::Api::start(extra);
    (api.m, api.addr)
}

fn wait_for_api(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while http(
        addr,
        "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .0 != 200
    {
        assert!(
            Instant::now() < deadline,
            "the API never answered at {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request written by hand: (status, whole response); status 0 when
/// the connection failed.
fn http(addr: &str, request: &str) -> (u16, String) {
    http_bytes(addr, request.as_bytes())
}

fn get_metrics(addr: &str) -> String {
    let (status, text) = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
    text
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

// ------------------------------------------------------------- point 8

/// Thousands of requests with long junk methods and random paths (what an
/// unauthenticated stranger can send) add no metric series: /metrics
/// stays a few KB, none of the junk appears in it, and the daemon's
/// memory does not grow with them.
#[test]
fn junk_methods_and_paths_add_no_metric_series() {
    common::engine::every_engine(|| {
        let (m, addr) = mount_api(&[]);
        let pid = m.pid().unwrap();
        let before = get_metrics(&addr).len();
        let rss_before = rss_kib(pid);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut junk = |n: usize| -> String {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (b'A' + (seed % 26) as u8) as char
                })
                .collect()
        };
        let paths = ["/health/live", "/metrics", "/api/v1/fs/a", "/api/v1/info"];
        for i in 0..3000 {
            let method = junk(1024);
            let path = if i % 2 == 0 {
                paths[i % paths.len()].to_string()
            } else {
                format!("/{}/{}", junk(40), junk(200))
            };
            let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let (status, text) = http(&addr, &req);
            assert!(status >= 400, "{method:.20} {path:.40}: {text:.200}");
        }
        // Junk paths with a known method: counted under `unmatched`.
        for _ in 0..500 {
            let req = format!(
                "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                junk(300)
            );
            assert_eq!(http(&addr, &req).0, 404);
        }
        let text = get_metrics(&addr);
        assert!(
            text.len() < before + 16 * 1024,
            "/metrics grew from {before} to {} bytes",
            text.len()
        );
        assert!(text.contains("method=\"other\""), "{text}");
        assert!(
            text.contains("route=\"unmatched\",status=\"404\""),
            "{text}"
        );
        for line in text.lines().filter(|l| l.contains("method=")) {
            assert!(line.len() < 300, "a long label: {line:.300}");
        }
        let grown = rss_kib(pid).saturating_sub(rss_before);
        assert!(grown < 32 * 1024, "RSS grew by {grown} KiB");
    });
}

// ------------------------------------------------------------- point 9

/// A daemon started by hand under a given open file limit (soft, hard).
struct Limited {
    child: Option<Child>,
    mnt: PathBuf,
    stderr: PathBuf,
    _db: common::engine::StoreDb,
    _dir: tempfile::TempDir,
}

impl Limited {
    fn start(soft: u64, hard: u64, extra: &[String]) -> Limited {
        let dir = tempfile::Builder::new()
            .prefix("artfs-limits-")
            .tempdir()
            .unwrap();
        let backing = dir.path().join("backing");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let stderr = dir.path().join("stderr");
        let db = common::engine::new_store_db("limits");
        let mut cmd = Command::new(common::bin());
        cmd.arg("mount")
            .arg(&backing)
            .arg(&mnt)
            .args(&db.args)
            .args(extra)
            .env("ARTFS_LOG", "warn,fuser::session=error")
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        // SAFETY: setrlimit is async-signal-safe; nothing else runs here.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mnt) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!(
                    "artfs exited with {st}: {}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        Limited {
            child: Some(child),
            mnt,
            stderr,
            _db: db,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            common::stop_daemon(child, &self.mnt, Duration::from_secs(15));
        }
    }
}

/// The soft and hard open file limits of a running process.
fn nofile(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (v[0], v[1])
}

/// Open `n` TCP connections to `addr` that never send a byte (those the
/// listen queue cannot take fail to connect and are not counted).
fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    let sa: std::net::SocketAddr = addr.parse().unwrap();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                (0..n / 8)
                    .filter_map(|_| {
                        TcpStream::connect_timeout(&sa, Duration::from_millis(200)).ok()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Started with a soft limit of 128 under a hard 256, the daemon raises
/// its soft limit to 256; the default connection cap (64 there) keeps
/// 400 idle connections from taking the descriptors the mount needs:
/// creating, writing, listing, reading and metadata (sidecar) writes all
/// work while they are open, and the API serves again once they go.
#[test]
fn idle_connections_cannot_starve_the_mount() {
    common::engine::every_engine(|| {
        let addr = free_addr();
        let mut args = api_args(&addr);
        args.extend(["--api-header-timeout".into(), "120".into()]);
        let d = Limited::start(128, 256, &args);
        wait_for_api(&addr);
        assert_eq!(nofile(d.pid()), (256, 256), "the soft limit was not raised");

        let conns = idle_connections(&addr, 400);
        assert!(conns.len() > 64, "only {} connections opened", conns.len());
        std::thread::sleep(Duration::from_millis(500));
        let fds = open_fds(d.pid());
        assert!(fds < 256 - 64, "the daemon holds {fds} descriptors");

        for i in 0..40 {
            let p = d.path(&format!("f{i}.txt"));
            std::fs::write(&p, format!("content {i}")).unwrap();
            common::setx(&p, "user.artstore.description", b"made under pressure").unwrap();
        }
        let mut names = common::names(&d.mnt);
        names.retain(|n| n.to_string_lossy().starts_with('f'));
        assert_eq!(names.len(), 40);
        let held: Vec<_> = (0..40)
            .map(|i| std::fs::File::open(d.path(&format!("f{i}.txt"))).unwrap())
            .collect();
        for i in 0..40 {
            assert_eq!(
                std::fs::read_to_string(d.path(&format!("f{i}.txt"))).unwrap(),
                format!("content {i}")
            );
        }
        drop(held);
        let log = d.log();
        assert!(
            !log.contains("os error 24") && !log.contains("Too many open files"),
            "{log}"
        );

        // The queued clients are served once the idle ones leave.
        drop(conns);
        let deadline = Instant::now() + Duration::from_secs(20);
        while http(
            &addr,
            "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .0 != 200
        {
            assert!(Instant::now() < deadline, "the API did not come back");
            std::thread::sleep(Duration::from_millis(100));
        }
        // The sidecars were written for real.
        let p = d.path("f7.txt");
        assert_eq!(
            common::getx(&p, "user.artstore.description").unwrap(),
            b"made under pressure"
        );
    });
}

/// A connection that sent one request and then nothing is closed after
/// the idle time (the header timeout), freeing its slot.
#[test]
fn idle_keep_alive_connections_are_closed() {
    common::engine::every_engine(|| {
        let (_m, addr) = mount_api(&["--api-header-timeout", "2"]);
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("the idle connection stayed open: {e}"),
            }
        }
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
            "closed after {waited:?}"
        );
    });
}

/// The same for HTTP/2 (cleartext, prior knowledge), which has no idle
/// timeout of its own: after one request and the idle time, the server
/// says GOAWAY and closes.
#[test]
fn idle_http2_connections_are_closed() {
    common::engine::every_engine(|| {
        let (_m, addr) = mount_api(&["--api-header-timeout", "2"]);
        // HEADERS, END_STREAM | END_HEADERS, stream 1: GET http /health/live
        // (:path as a literal without indexing, name from the static table).
        let path = b"/health/live";
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path);
        let mut request = vec![0, 0, block.len() as u8, 1, 5, 0, 0, 0, 1];
        request.extend_from_slice(&block);
        let mut h2 = common::api::H2Conn::open(&addr, &request, Duration::from_secs(20));
        let start = Instant::now();
        // Read frames until the server closes, answering SETTINGS and PING:
        // a HEADERS frame answers the request (status 200 = 0x88), a
        // GOAWAY (type 7) comes later.
        let mut types = Vec::new();
        loop {
            match h2.next() {
                Ok(None) => break,
                Ok(Some(f)) => {
                    if f.kind == 1 {
                        assert_eq!(f.payload.first(), Some(&0x88), "not a 200");
                    }
                    h2.ack(&f);
                    types.push(f.kind);
                }
                Err(e) => panic!("the idle HTTP/2 connection stayed open: {e}; frames {types:?}"),
            }
        }
        let waited = start.elapsed();
        assert!(types.contains(&1), "no response: {types:?}");
        assert!(types.contains(&7), "no GOAWAY: {types:?}");
        assert!(
            waited >= Duration::from_secs(1) && waited < Duration::from_secs(10),
            "closed after {waited:?}"
        );
    });
}

/// The idle close never cuts a response being sent: a download read
/// slowly, for longer than the idle time, arrives whole.
#[test]
fn slow_download_outlives_the_idle_time() {
    common::engine::every_engine(|| {
        let (m, addr) = mount_api(&["--api-header-timeout", "1"]);
        let data: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(m.path("big.bin"), &data).unwrap();
        let mut s = TcpStream::connect(&addr).unwrap();
        let req = format!(
            "GET /api/v1/fs/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
            token("reader")
        );
        s.write_all(req.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let start = Instant::now();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => panic!("read failed after {} bytes: {e}", got.len()),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            start.elapsed() > Duration::from_secs(2),
            "read too fast to test"
        );
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(got.starts_with(b"HTTP/1.1 200"));
        assert_eq!(got.len() - head_end, data.len());
        assert!(got[head_end..] == data[..]);
    });
}

/// Start an upload on a raw socket: headers and `first` bytes of a body
/// of `len`; the rest is sent (or not) by the caller.
fn start_upload(addr: &str, token: &str, path: &str, len: usize, first: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "PUT /api/v1/fs/{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(first).unwrap();
    s
}

fn uploads_in_flight(addr: &str) -> u64 {
    get_metrics(addr)
        .lines()
        .find_map(|l| l.strip_prefix("artfs_uploads_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

fn wait_uploads(addr: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while uploads_in_flight(addr) != n {
        assert!(
            Instant::now() < deadline,
            "uploads in flight never reached {n}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Drip-fed uploads from one subject take at most its share of the slots:
/// the next from the same subject is 503 with Retry-After, while another
/// subject's upload goes through; when one ends, the subject may upload
/// again.
#[test]
fn one_subject_cannot_take_every_upload_slot() {
    common::engine::every_engine(|| {
        let (m, addr) = mount_api(&[
            "--api-max-uploads",
            "16",
            "--api-max-uploads-per-subject",
            "2",
        ]);
        let mallory = token("mallory");
        let mut drips: Vec<TcpStream> = (0..2)
            .map(|i| start_upload(&addr, &mallory, &format!("drip{i}"), 100, b"x"))
            .collect();
        wait_uploads(&addr, 2);

        let body = b"one more";
        let req = |who: &str, path: &str| {
            let mut r = format!(
                "PUT /api/v1/fs/{path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {who}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        };
        let (status, text) = http_bytes(&addr, &req(&mallory, "third"));
        assert_eq!(status, 503, "{text}");
        assert!(
            text.to_ascii_lowercase().contains("retry-after: 1"),
            "{text}"
        );
        assert!(!m.path("third").exists());

        let (status, text) = http_bytes(&addr, &req(&token("bob"), "bobs"));
        assert_eq!(status, 201, "{text}");
        assert_eq!(std::fs::read(m.path("bobs")).unwrap(), body);

        // Finish one drip: its slot comes back to mallory.
        let mut done = drips.remove(0);
        done.write_all(&[b'x'; 99]).unwrap();
        assert_eq!(read_response(&mut done).0, 201);
        let (status, text) = http_bytes(&addr, &req(&mallory, "third"));
        assert_eq!(status, 201, "{text}");
        drop(drips);
    });
}

/// A body sent slower than --api-min-upload-rate over a window (but never
/// pausing as long as the body timeout) is cut with 408 and nothing is
/// published; a body at a fair pace is accepted.
#[test]
fn upload_below_the_minimum_rate_is_cut() {
    common::engine::every_engine(|| {
        let (m, addr) = mount_api(&[
            "--api-min-upload-rate",
            "1024",
            "--api-min-upload-window",
            "2",
            "--api-body-timeout",
            "30",
        ]);
        let user = token("slow");
        let mut s = start_upload(&addr, &user, "slow.bin", 10_000, b"0123456789");
        let start = Instant::now();
        let mut cut = false;
        while start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(250));
            if s.write_all(b"0123456789").is_err() {
                cut = true;
                break;
            }
            // Stop early once the server has answered.
            s.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            let answered =
                !matches!(s.peek(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock);
            s.set_nonblocking(false).unwrap();
            if answered {
                cut = true;
                break;
            }
        }
        assert!(cut, "the slow upload was never cut");
        let (status, text) = read_response(&mut s);
        assert_eq!(status, 408, "{text}");
        assert!(text.contains("too slowly"), "{text}");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(!m.path("slow.bin").exists());
        assert_eq!(uploads_in_flight(&addr), 0);

        // A fair pace passes: 4 KiB every 0.5 s for 3 s.
        let mut s = start_upload(&addr, &user, "fair.bin", 6 * 4096, &[7u8; 4096]);
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(500));
            s.write_all(&[7u8; 4096]).unwrap();
        }
        assert_eq!(read_response(&mut s).0, 201);
        assert_eq!(std::fs::read(m.path("fair.bin")).unwrap().len(), 6 * 4096);
    });
}

// ------------------------------------------------------------ point 13

/// With a metrics token, /metrics is 401 without it or with a wrong one
/// and 200 with it; health stays open.
#[test]
fn metrics_token_guards_metrics() {
    common::engine::every_engine(|| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics.token");
        std::fs::write(&file, "a-long-scrape-secret-0123\n").unwrap();
        let (_m, addr) = mount_api(&["--metrics-token-file", file.to_str().unwrap()]);
        let get = |auth: &str| {
            http(
                &addr,
                &format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
            )
        };
        let (status, text) = get("");
        assert_eq!(status, 401, "{text}");
        assert!(!text.contains("artfs_files"));
        assert_eq!(
            get("Authorization: Bearer wrong-secret-wrong-secret\r\n").0,
            401
        );
        let (status, text) = get("Authorization: Bearer a-long-scrape-secret-0123\r\n");
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("artfs_files"));
        assert_eq!(
            http(
                &addr,
                "GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .0,
            200
        );
    });
}

/// A metrics token too short to be a secret stops the start.
#[test]
fn short_metrics_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.token");
    std::fs::write(&file, "short\n").unwrap();
    let addr = free_addr();
    let backing = dir.path().join("b");
    let mnt = dir.path().join("m");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let out = Command::new(common::bin())
        .arg("mount")
        .arg(&backing)
        .arg(&mnt)
        .args(api_args(&addr))
        .arg("--metrics-token-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics token"), "{err}");
    assert!(!err.contains("short"), "the secret was printed: {err}");
    assert!(!is_mounted(Path::new(&mnt)));
}
