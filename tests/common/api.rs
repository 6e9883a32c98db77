//! The HTTP door under test: one EC P-256 key pair per test process (made
//! with openssl, as users make them), tokens minted with it, and a mount
//! serving the API on a free loopback port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use artfs::auth::{mint, MintRequest, Role, Scope};
use reqwest::blocking::{Client, Response};
use serde_json::Value;

use super::Mount;

pub struct TestKey {
    pub private: Vec<u8>,
    pub public: PathBuf,
    _dir: tempfile::TempDir,
}

/// The process's test key.
pub fn key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("artfs-api-key-")
            .tempdir()
            .unwrap();
        let (private, public) = super::keys::genpkey(
            dir.path(),
            "ec",
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        TestKey {
            private: std::fs::read(private).unwrap(),
            public,
            _dir: dir,
        }
    })
}

/// A token for `sub` with `role`, signed with the test key.
pub fn token(sub: &str, role: Role) -> String {
    mint(&MintRequest::new(key().private.clone(), sub, role)).unwrap()
}

/// A token narrowed to `scopes`.
pub fn scoped(sub: &str, role: Role, scopes: &[Scope]) -> String {
    let mut r = MintRequest::new(key().private.clone(), sub, role);
    r.scope = Some(scopes.to_vec());
    mint(&r).unwrap()
}

/// A token whose claims are a valid service account's with `changes`
/// merged in (for claims `mint` cannot write, such as a role name that is
/// an alias or unknown).
pub fn token_with_claims(changes: Value) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": "svc-test",
        "role": "user",
        "type": "service_account",
        "iat": now,
        "exp": now + 600,
    });
    for (k, v) in changes.as_object().unwrap() {
        claims[k] = v.clone();
    }
    // PKCS#8 DER, as jsonwebtoken takes EC keys without its PEM feature.
    let key =
        jsonwebtoken::EncodingKey::from_ec_der(pem::parse(&key().private).unwrap().contents());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .unwrap()
}

/// A loopback address no one listens on now.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The daemon's ends of the connections it accepted on `port`, each with
/// whether TCP_NODELAY is set on it. Read off the daemon's own sockets:
/// pidfd_getfd(2) copies each of its socket descriptors into this process
/// (root may), where std asks the copy. No client can see the option
/// from its side of the wire.
pub fn accepted_nodelay(pid: u32, port: u16) -> Vec<(std::net::SocketAddr, bool)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open({pid}): {}",
        std::io::Error::last_os_error()
    );
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if !is_socket {
            continue;
        }
        use std::os::fd::AsRawFd;
        let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        if copy < 0 {
            continue; // closed since the listing
        }
        // Dropping the stream closes only the copy.
        let stream = std::net::TcpStream::from(unsafe { OwnedFd::from_raw_fd(copy as i32) });
        let accepted = stream.local_addr().is_ok_and(|a| a.port() == port);
        if let (true, Ok(peer)) = (accepted, stream.peer_addr()) {
            found.push((peer, stream.nodelay().unwrap()));
        }
    }
    found
}

/// A mount with the API on.
pub struct Api {
    pub m: Mount,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub client: Client,
}

impl Api {
    /// Mount with the API; every token acts as root unless `extra` names
    /// `--api-uid` (most tests are about something else than the default
    /// least-privilege identity, which tests/grants.rs checks).
    pub fn start(extra: &[&str]) -> Api {
        let mut args: Vec<&str> = Vec::new();
        if !extra.contains(&"--api-uid") {
            args.extend_from_slice(&["--api-uid", "0"]);
        }
        args.extend_from_slice(extra);
        Api::with_default_identity(&args)
    }

    /// Mount with the API and the identities the daemon picks by itself.
    pub fn with_default_identity(extra: &[&str]) -> Api {
        let addr = free_addr();
        let public = key().public.to_str().unwrap().to_string();
        let mut args = vec!["--api", addr.as_str(), "--jwt-key", public.as_str()];
        args.extend_from_slice(extra);
        let m = Mount::with_args(&args);
        let api = Api {
            m,
            base: format!("http://{addr}"),
            addr,
            client: Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        api.wait();
        api
    }

    /// Wait until `/health/live` answers.
    pub fn wait(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.client.get(self.url("/health/live")).send().is_err() {
            assert!(Instant::now() < deadline, "the API never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `POST /api/v1/mode` with `body` (`mode`, `confirm`, `force`,
    /// `wait_secs`), as an admin.
    pub fn post_mode(&self, body: Value) -> Response {
        self.client
            .post(self.url("/api/v1/mode"))
            .bearer_auth(token("admin", Role::Admin))
            .json(&body)
            .send()
            .unwrap()
    }

    /// The daemon's `/metrics` text (no token needed).
    pub fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// `artfs_fuse_ops_total{op}` from the daemon's metrics: how many
    /// requests of a kind the kernel sent.
    pub fn fuse_ops(&self, op: &str) -> u64 {
        let prefix = format!("artfs_fuse_ops_total{{op=\"{op}\"}} ");
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// A request written by hand on a new socket: (status, whole response).
    pub fn raw(&self, request: &str) -> (u16, String) {
        raw_http(&self.addr, request.as_bytes())
    }
}

/// Send `request` as it is on a new connection to `addr` and read until
/// the server closes it: (status, whole response); status 0 when the
/// connection failed.
pub fn raw_http(addr: &str, request: &[u8]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    if s.write_all(request).is_err() {
        return (0, String::new());
    }
    read_response(&mut s)
}

/// Read a response until the server closes the connection.
pub fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    parse_response(&out)
}

/// A raw response as (status, text); status 0 when there is none.
pub fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// One HTTP/2 frame as it came off the wire.
pub struct H2Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// A cleartext HTTP/2 connection by prior knowledge, spoken in raw
/// frames: what a test needs to see the server's own frames.
pub struct H2Conn {
    s: TcpStream,
    got: Vec<u8>,
}

impl H2Conn {
    /// Connect to `addr`, send the preface and an empty SETTINGS, then
    /// `more` (frames already encoded); reads wait at most `timeout`.
    pub fn open(addr: &str, more: &[u8], timeout: Duration) -> H2Conn {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        out.extend_from_slice(more);
        s.write_all(&out).unwrap();
        s.set_read_timeout(Some(timeout)).unwrap();
        H2Conn { s, got: Vec::new() }
    }

    /// The next frame; `Ok(None)` once the server has closed.
    pub fn next(&mut self) -> std::io::Result<Option<H2Frame>> {
        loop {
            if self.got.len() >= 9 {
                let len = u32::from_be_bytes([0, self.got[0], self.got[1], self.got[2]]) as usize;
                if self.got.len() >= 9 + len {
                    let head: Vec<u8> = self.got.drain(..9).collect();
                    return Ok(Some(H2Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff,
                        payload: self.got.drain(..len).collect(),
                    }));
                }
            }
            let mut buf = [0u8; 4096];
            match self.s.read(&mut buf)? {
                0 => return Ok(None),
                n => self.got.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Answer SETTINGS and PING as a client must (a server's graceful
    /// close waits for its PING's ack); true when `f` was one of them.
    pub fn ack(&mut self, f: &H2Frame) -> bool {
        let reply = match (f.kind, f.flags & 1) {
            (4, 0) => vec![0, 0, 0, 4, 1, 0, 0, 0, 0],
            (6, 0) => [&[0, 0, 8, 6, 1, 0, 0, 0, 0][..], &f.payload].concat(),
            _ => return false,
        };
        // The server may have closed already; a test sees that in `next`.
        let _ = self.s.write_all(&reply);
        true
    }
}

/// The body as JSON, or a failure showing it.
pub fn json(r: Response) -> Value {
    let status = r.status();
    let text = r.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
}

/// The documented error body with this status and code.
pub fn assert_error(r: Response, status: u16, code: &str) -> Value {
    let got = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let v = json(r);
    assert_eq!(got, status, "{v}");
    assert_eq!(ctype.as_deref(), Some("application/json"), "{v}");
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    v
}
