//! A throwaway S3 protocol server for one test: `moto_server` (pip, see
//! scripts/install-deps.sh) on a free local port, with one empty bucket,
//! stopped by the pid it was started with when dropped. Or, for the test
//! binary's shared server, the one `ARTFS_TEST_S3_ENDPOINT` names (the
//! compose file's s3 service). Self-contained (std and reqwest only): the
//! crate's own unit tests include this file too.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The variable naming an outside server (`services::S3_ENDPOINT`, which
/// tests/containers.rs checks against this).
pub const ENDPOINT_VAR: &str = "ARTFS_TEST_S3_ENDPOINT";

/// Set by a binary that pauses its server: `shared` then starts its own.
static OWN_ONLY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub struct S3Server {
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    pub dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

/// Credentials moto accepts (it checks none); set in each daemon's
/// environment by the tests, as users set theirs.
pub const ACCESS_KEY: &str = "artfs-test-key";
pub const SECRET_KEY: &str = "artfs-test-secret";
pub const REGION: &str = "us-east-1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl S3Server {
    /// Start a server with one empty bucket, `artfs-test`.
    pub fn start() -> S3Server {
        let port = free_port();
        let s = S3Server::at(port, format!("http://127.0.0.1:{port}"));
        s.spawn();
        s.make_bucket(&s.bucket.clone());
        s
    }

    /// The server `ARTFS_TEST_S3_ENDPOINT` names, with the default bucket
    /// made there if it is not yet.
    fn external(endpoint: &str) -> S3Server {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let port = endpoint
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let s = S3Server::at(port, endpoint);
        s.make_bucket(&s.bucket.clone());
        s
    }

    /// A server at `endpoint` with the default bucket's name, no process.
    fn at(port: u16, endpoint: String) -> S3Server {
        S3Server {
            port,
            endpoint,
            bucket: "artfs-test".into(),
            dir: tempfile::Builder::new()
                .prefix("artfs-moto-")
                .tempdir()
                .unwrap(),
            child: Mutex::new(None),
        }
    }

    /// Never use an outside server in this binary: it pauses its own.
    pub fn own_only() {
        OWN_ONLY.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The test binary's server, started on first use and stopped when the
    /// process exits (or the outside one `ARTFS_TEST_S3_ENDPOINT` names);
    /// each store on it takes a bucket of its own.
    pub fn shared() -> &'static S3Server {
        static SHARED: OnceLock<S3Server> = OnceLock::new();
        SHARED.get_or_init(|| {
            if !OWN_ONLY.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(endpoint) = std::env::var(ENDPOINT_VAR) {
                    if !endpoint.is_empty() {
                        return S3Server::external(&endpoint);
                    }
                }
            }
            let s = S3Server::start();
            extern "C" fn stop_shared() {
                if let Some(s) = SHARED.get() {
                    s.stop();
                    // Statics are never dropped: remove the dir here.
                    let _ = std::fs::remove_dir_all(s.dir.path());
                }
            }
            // SAFETY: registering a plain function; it runs at exit.
            unsafe { libc::atexit(stop_shared) };
            s
        })
    }

    /// Stop the server (by the pid it was started with).
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            // SAFETY: SIGCONT first, a stopped server would not die.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn spawn(&self) {
        let log = std::fs::File::create(self.dir.path().join("moto.log")).unwrap();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("moto_server (run scripts/install-deps.sh)");
        *self.child.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::blocking::Client::new();
        while client
            .get(format!("{}/", self.endpoint))
            .timeout(Duration::from_secs(2))
            .send()
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {}: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Create another bucket (one already there from an earlier run on an
    /// outside server is fine).
    pub fn make_bucket(&self, name: &str) {
        let r = reqwest::blocking::Client::new()
            .put(format!("{}/{name}", self.endpoint))
            .send()
            .expect("create bucket");
        let owned = r.status() == reqwest::StatusCode::CONFLICT;
        assert!(
            r.status().is_success() || owned,
            "create bucket {name}: {r:?}"
        );
    }

    /// The test's default bucket.
    pub fn default_bucket(&self) -> Bucket<'_> {
        Bucket {
            server: self,
            name: self.bucket.clone(),
        }
    }

    /// A bucket of its own for one store (a short listing per store: moto
    /// lists a whole bucket to answer a prefix), made here.
    pub fn new_bucket(&self, tag: &str) -> Bucket<'_> {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // The time too: on an outside server, a later run may have this
        // process id again. Bucket names are at most 63 bytes.
        let mut tag = tag.to_ascii_lowercase().replace('_', "-");
        tag.truncate(28);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "{}-{}-{}-{:x}",
            tag.trim_end_matches('-'),
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            nanos
        );
        self.make_bucket(&name);
        Bucket { server: self, name }
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.default_bucket().keys(prefix)
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.default_bucket().get(key)
    }

    pub fn put(&self, key: &str, bytes: &[u8]) {
        self.default_bucket().put(key, bytes)
    }

    pub fn open_uploads(&self, prefix: &str) -> Vec<String> {
        self.default_bucket().open_uploads(prefix)
    }

    /// Stop answering (SIGSTOP), as a server that hangs; `resume` undoes it.
    /// Only a server this harness started (see `own_only`).
    pub fn pause(&self) {
        assert!(
            self.child.lock().unwrap().is_some(),
            "an outside server cannot be paused: call S3Server::own_only() first"
        );
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            // SAFETY: a signal to the child this harness started and still holds.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// The variables a daemon needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
        ]
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

/// One bucket of a test server.
pub struct Bucket<'a> {
    pub server: &'a S3Server,
    pub name: String,
}

impl Bucket<'_> {
    /// The keys under `prefix` in the bucket (moto answers unsigned
    /// requests), in name order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{}?list-type=2&prefix={}",
                self.server.endpoint, self.name, prefix
            );
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", urlencode(t)));
            }
            let body = reqwest::blocking::get(url).unwrap().text().unwrap();
            keys.extend(tags(&body, "Key"));
            token = tags(&body, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                return keys;
            }
        }
    }

    /// A request as a client with credentials makes it (moto refuses
    /// anonymous object requests, and checks no signature).
    fn request(&self, method: reqwest::Method, key: &str) -> reqwest::blocking::RequestBuilder {
        reqwest::blocking::Client::new()
            .request(
                method,
                format!("{}/{}/{key}", self.server.endpoint, self.name),
            )
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260101/{REGION}/s3/aws4_request, \
                     SignedHeaders=host, Signature=00"
                ),
            )
            .header("content-type", "application/octet-stream")
    }

    /// The bytes of one object.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let r = self.request(reqwest::Method::GET, key).send().unwrap();
        r.status().is_success().then(|| r.bytes().unwrap().to_vec())
    }

    /// Replace one object's bytes (damage, for tests).
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let r = self
            .request(reqwest::Method::PUT, key)
            .body(bytes.to_vec())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "put {key}: {r:?}");
    }

    /// Delete one object.
    pub fn delete(&self, key: &str) {
        self.request(reqwest::Method::DELETE, key).send().unwrap();
    }

    /// Multipart uploads under `prefix` begun and neither completed nor
    /// aborted.
    pub fn open_uploads(&self, prefix: &str) -> Vec<String> {
        let body = reqwest::blocking::get(format!(
            "{}/{}?uploads&prefix={}",
            self.server.endpoint,
            self.name,
            urlencode(prefix)
        ))
        .unwrap()
        .text()
        .unwrap();
        tags(&body, "UploadId")
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.name)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tags(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(j) = rest.find(&close) else { break };
        out.push(rest[..j].replace("&amp;", "&"));
        rest = &rest[j + close.len()..];
    }
    out
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
