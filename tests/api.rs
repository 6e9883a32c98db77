//! The HTTP door against real mounts: real RS256/ES256 keys made by the
//! `openssl` command, tokens minted with `artfs::auth::mint`, a real HTTP
//! client (and raw sockets where a client would tidy the request up).
//! Every test owns its mount, port and keys' files.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use artfs::auth::{mint, MintRequest, Role};
use common::Mount;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------- keys

struct KeyPair {
    private: Vec<u8>,
    public: PathBuf,
}

struct Keys {
    rsa: KeyPair,
    ec: KeyPair,
    /// Another EC key: tokens it signs must be refused.
    stranger: KeyPair,
    _dir: tempfile::TempDir,
}

fn keypair(dir: &Path, name: &str, genpkey: &[&str]) -> KeyPair {
    let (private, public) = common::keys::genpkey(dir, name, genpkey);
    KeyPair {
        private: std::fs::read(&private).unwrap(),
        public,
    }
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("artfs-api-keys-")
            .tempdir()
            .unwrap();
        let ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
        Keys {
            rsa: keypair(
                dir.path(),
                "rsa",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
            ec: keypair(dir.path(), "ec", &ec),
            stranger: keypair(dir.path(), "stranger", &ec),
            _dir: dir,
        }
    })
}

fn token_with(key: &KeyPair, sub: &str, role: Role) -> String {
    mint(&MintRequest::new(key.private.clone(), sub, role)).unwrap()
}

/// An RS256 token that expired two minutes ago.
fn expired_rsa_token(key: &KeyPair) -> String {
    use pkcs8::DecodePrivateKey;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let pem = std::str::from_utf8(&key.private).unwrap();
    let der = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .unwrap()
        .to_pkcs1_der()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"sub": "late", "role": "admin", "type": "service_account",
                        "iat": now - 600, "nbf": now - 600, "exp": now - 120});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(der.as_bytes()),
    )
    .unwrap()
}

// ---------------------------------------------------------------- server

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Api {
    m: Mount,
    base: String,
    addr: String,
    client: Client,
    key: &'static KeyPair,
    user: String,
    operator: String,
}

fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Wait until `url` answers (any status).
fn wait_for(client: &Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let err = match client.get(url).send() {
            Ok(_) => return,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "the API never answered at {url}: {err:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Api {
    /// A mount with the API on a free loopback port, verifying with `key`.
    /// Every token acts as root (`--api-uid 0`) unless `extra` names an
    /// identity: these tests are about the HTTP door, not the default
    /// least-privilege identity (tests/grants.rs covers that).
    fn start_with(key: &'static KeyPair, extra: &[&str]) -> Api {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let public = key.public.to_str().unwrap().to_string();
        let mut args = vec!["--api", addr.as_str(), "--jwt-key", public.as_str()];
        if !extra.contains(&"--api-uid") {
            args.extend_from_slice(&["--api-uid", "0"]);
        }
        args.extend_from_slice(extra);
        let m = Mount::with_args(&args);
        let base = format!("http://{addr}");
        let client = client();
        wait_for(&client, &format!("{base}/health/live"));
        Api {
            m,
            base,
            addr,
            client,
            key,
            user: token_with(key, "alice", Role::User),
            operator: token_with(key, "olga", Role::Operator),
        }
    }

    fn start() -> Api {
        Api::start_with(&keys().ec, &[])
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn fs_url(&self, rel: &str) -> String {
        self.url(&format!("/api/v1/fs/{rel}"))
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(&self.user)
    }

    fn put(&self, rel: &str, body: impl Into<reqwest::blocking::Body>) -> RequestBuilder {
        self.client
            .put(self.fs_url(rel))
            .bearer_auth(&self.user)
            .body(body)
    }

    fn read(&self, rel: &str) -> Vec<u8> {
        let r = self.get(&format!("/api/v1/fs/{rel}")).send().unwrap();
        assert_eq!(r.status(), 200, "GET {rel}");
        r.bytes().unwrap().to_vec()
    }

    /// PUT `body` at `rel`; panics unless 200/201; returns the metadata.
    fn upload(&self, rel: &str, body: &[u8]) -> Value {
        let r = self.put(rel, body.to_vec()).send().unwrap();
        let status = r.status();
        let text = r.text().unwrap();
        assert!(status == 201 || status == 200, "PUT {rel}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    fn delete(&self, path: &str, token: &str) -> Response {
        self.client
            .delete(self.url(path))
            .bearer_auth(token)
            .send()
            .unwrap()
    }

    /// A request written by hand on a socket: (status, whole response).
    fn raw(&self, request: &str) -> (u16, String) {
        raw_http(&self.addr, request)
    }
}

fn raw_http(addr: &str, request: &str) -> (u16, String) {
    common::api::raw_http(addr, request.as_bytes())
}

fn json(r: Response) -> Value {
    let status = r.status();
    let text = r.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn getfattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid NUL-terminated strings and a buffer of the given size.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn assert_error(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    let v = json(r);
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].is_string(), "{v}");
    v
}

// ---------------------------------------------------------------- tests

#[test]
fn tokens_and_roles_decide_access() {
    common::engine::every_engine(|| {
        let api = Api::start_with(&keys().rsa, &[]);

        // Health needs no token; the API does.
        for p in ["/health/live", "/health/ready", "/metrics"] {
            let r = api.client.get(api.url(p)).send().unwrap();
            assert_eq!(r.status(), 200, "{p}");
        }
        let r = api
            .client
            .get(api.url("/api/v1/search?q=x"))
            .send()
            .unwrap();
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        assert_error(r, 401, "unauthorized");

        // Signed by a key the server does not know.
        let stranger = token_with(&keys().stranger, "mallory", Role::Admin);
        let r = api
            .client
            .get(api.url("/api/v1/info"))
            .bearer_auth(&stranger)
            .send()
            .unwrap();
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(www.starts_with("Bearer error=\"invalid_token\""), "{www}");
        assert_error(r, 401, "invalid_token");

        // Not a bearer header at all.
        let r = api
            .client
            .get(api.url("/api/v1/info"))
            .header("Authorization", "Basic dXNlcjpwYXNz")
            .send()
            .unwrap();
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_request"));
        assert_error(r, 401, "invalid_request");

        // An expired token (beyond the leeway), signed by the right key.
        let expired = expired_rsa_token(api.key);
        let r = api
            .client
            .get(api.url("/api/v1/info"))
            .bearer_auth(&expired)
            .send()
            .unwrap();
        assert_error(r, 401, "invalid_token");

        // A valid token: info as the original reported it.
        let info = json(api.get("/api/v1/info").send().unwrap());
        assert_eq!(info["mode"], "edit");
        assert_eq!(info["name"], "artfs");
        assert!(info["capacity_bytes"].as_u64().unwrap() > 0);
        // Regular files of the store: none yet.
        assert_eq!(info["file_count"].as_u64(), Some(0));
        let cap = json(api.get("/api/v1/capacity").send().unwrap());
        assert!(cap["used_bytes"].as_u64().unwrap() <= cap["capacity_bytes"].as_u64().unwrap());

        // user: read and write, not delete; operator and admin delete.
        api.upload("a.txt", b"a");
        api.upload("b.txt", b"b");
        let r = api.delete("/api/v1/fs/a.txt", &api.user);
        assert!(r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope"));
        assert_error(r, 403, "forbidden");
        assert!(api.m.path("a.txt").exists(), "a refused delete deleted");
        assert_eq!(api.delete("/api/v1/fs/a.txt", &api.operator).status(), 204);
        let admin = token_with(api.key, "root", Role::Admin);
        assert_eq!(api.delete("/api/v1/fs/b.txt", &admin).status(), 204);
        assert!(!api.m.path("a.txt").exists() && !api.m.path("b.txt").exists());
    });
}

#[test]
fn put_get_delete_round_trip() {
    common::engine::every_engine(|| {
        let api = Api::start();
        let body = b"hello, archive\n".to_vec();
        let meta = api.upload("notes.txt", &body);
        assert_eq!(meta["file_size"], body.len());
        assert_eq!(meta["checksum"], sha256_hex(&body));
        assert_eq!(meta["original_filename"], "notes.txt");
        assert_eq!(meta["created_by"], "alice");
        assert_eq!(meta["path"], "/notes.txt");
        assert!(meta["created_at"].as_str().unwrap().ends_with('Z'));

        let r = api.get("/api/v1/fs/notes.txt").send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(
            r.headers()["etag"].to_str().unwrap(),
            format!("\"{}\"", sha256_hex(&body))
        );
        assert_eq!(
            r.headers()["x-artfs-file-id"],
            meta["file_id"].as_str().unwrap()
        );
        assert_eq!(r.bytes().unwrap().as_ref(), body.as_slice());
        assert_eq!(std::fs::read(api.m.path("notes.txt")).unwrap(), body);
        let r = api
            .client
            .head(api.fs_url("notes.txt"))
            .bearer_auth(&api.user)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-length"],
            body.len().to_string().as_str()
        );
        assert!(r.bytes().unwrap().is_empty());

        // Replace: 200, whole new content, a new file.
        let r = api.put("notes.txt", b"v2".to_vec()).send().unwrap();
        assert_eq!(r.status(), 200);
        let v2 = json(r);
        assert_ne!(v2["file_id"], meta["file_id"]);
        assert_eq!(api.read("notes.txt"), b"v2");

        // Larger than one write step and than axum's default body limit.
        let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let m = api.upload("big.bin", &big);
        assert_eq!(m["checksum"], sha256_hex(&big));
        assert_eq!(m["content_type"], "application/octet-stream");
        assert_eq!(api.read("big.bin"), big);
        assert_eq!(std::fs::read(api.m.path("big.bin")).unwrap(), big);

        // Empty files, JSON content types from the name.
        let e = api.upload("empty.json", b"");
        assert_eq!(e["file_size"], 0);
        let r = api.get("/api/v1/fs/empty.json").send().unwrap();
        assert_eq!(r.headers()["content-type"], "application/json");

        // Errors are JSON, never 500.
        assert_error(
            api.put("missing/x.txt", b"x".to_vec()).send().unwrap(),
            404,
            "not_found",
        );
        assert_error(api.get("/api/v1/fs/nope").send().unwrap(), 404, "not_found");
        std::fs::create_dir(api.m.path("dir")).unwrap();
        assert_error(
            api.put("dir", b"x".to_vec()).send().unwrap(),
            409,
            "conflict",
        );
        assert_error(
            api.put("notes.txt/x", b"x".to_vec()).send().unwrap(),
            400,
            "bad_request",
        );
        assert_error(
            api.get("/api/v1/fs/notes.txt/x").send().unwrap(),
            400,
            "bad_request",
        );

        // If-None-Match: * creates only; If-Match replaces only that version.
        let r = api
            .put("notes.txt", b"v3".to_vec())
            .header("If-None-Match", "*")
            .send()
            .unwrap();
        assert_error(r, 412, "precondition_failed");
        let r = api
            .put("notes.txt", b"v3".to_vec())
            .header("If-Match", "\"0000\"")
            .send()
            .unwrap();
        assert_error(r, 412, "precondition_failed");
        let etag = format!("\"{}\"", sha256_hex(b"v2"));
        let r = api
            .put("notes.txt", b"v3".to_vec())
            .header("If-Match", &etag)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(api.read("notes.txt"), b"v3");
        let r = api
            .put("fresh.txt", b"new".to_vec())
            .header("If-None-Match", "*")
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);

        // DELETE files and empty directories; not full ones.
        std::fs::write(api.m.path("dir/inner"), b"i").unwrap();
        assert_error(api.delete("/api/v1/fs/dir", &api.operator), 409, "conflict");
        assert_eq!(
            api.delete("/api/v1/fs/dir/inner", &api.operator).status(),
            204
        );
        assert_eq!(api.delete("/api/v1/fs/dir", &api.operator).status(), 204);
        assert_eq!(
            api.delete("/api/v1/fs/notes.txt", &api.operator).status(),
            204
        );
        assert_error(
            api.get("/api/v1/fs/notes.txt").send().unwrap(),
            404,
            "not_found",
        );
        assert_error(
            api.delete("/api/v1/fs/notes.txt", &api.operator),
            404,
            "not_found",
        );
        assert!(!api.m.path("notes.txt").exists());
        assert!(!api.m.path("dir").exists());

        let mut m = api.m;
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn ranges_and_conditional_requests() {
    common::engine::every_engine(|| {
        let api = Api::start();
        let body: Vec<u8> = (0u8..100).collect();
        api.upload("r.bin", &body);
        let get = |h: &[(&str, &str)]| {
            let mut r = api.get("/api/v1/fs/r.bin");
            for (k, v) in h {
                r = r.header(*k, *v);
            }
            r.send().unwrap()
        };

        let r = get(&[("Range", "bytes=10-19")]);
        assert_eq!(r.status(), 206);
        assert_eq!(r.headers()["content-range"], "bytes 10-19/100");
        assert_eq!(r.headers()["content-length"], "10");
        assert_eq!(r.bytes().unwrap().as_ref(), &body[10..20]);
        let r = get(&[("Range", "bytes=-5")]);
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().unwrap().as_ref(), &body[95..]);
        let r = get(&[("Range", "bytes=90-")]);
        assert_eq!(r.bytes().unwrap().as_ref(), &body[90..]);
        let r = get(&[("Range", "bytes=100-")]);
        assert_eq!(r.headers()["content-range"], "bytes */100");
        assert_error(r, 416, "range_not_satisfiable");
        // Several ranges: the whole file (a server may ignore Range).
        let r = get(&[("Range", "bytes=0-1,5-6")]);
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().len(), 100);

        let r = get(&[]);
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let last_modified = r.headers()["last-modified"].to_str().unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", sha256_hex(&body)));
        assert!(last_modified.ends_with("GMT"));

        let r = get(&[("If-None-Match", &etag)]);
        assert_eq!(r.status(), 304);
        assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
        assert!(r.bytes().unwrap().is_empty());
        assert_eq!(
            get(&[("If-None-Match", "\"other\", W/\"x\"")]).status(),
            200
        );
        assert_eq!(get(&[("If-Modified-Since", &last_modified)]).status(), 304);
        assert_eq!(
            get(&[("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT")]).status(),
            200
        );
        // If-None-Match wins over If-Modified-Since.
        assert_eq!(
            get(&[
                ("If-None-Match", "\"other\""),
                ("If-Modified-Since", &last_modified)
            ])
            .status(),
            200
        );
        // If-Range naming an old version: the whole new file.
        let r = get(&[("Range", "bytes=0-0"), ("If-Range", "\"old\"")]);
        assert_eq!(r.status(), 200);
        let r = get(&[("Range", "bytes=0-0"), ("If-Range", &etag)]);
        assert_eq!(r.status(), 206);

        // Once the content changes, the old ETag no longer matches.
        std::fs::write(api.m.path("r.bin"), b"changed").unwrap();
        let r = get(&[("If-None-Match", &etag)]);
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), b"changed");
    });
}

#[test]
fn api_changes_show_in_the_mount_at_once() {
    common::engine::every_engine(|| {
        let api = Api::start();
        std::fs::create_dir(api.m.path("d")).unwrap();
        std::fs::write(api.m.path("d/f.txt"), b"old content").unwrap();
        // The kernel now caches d/f.txt (entry and attributes, 1 h TTL) and,
        // once listed, the listing of d.
        let before = std::fs::metadata(api.m.path("d/f.txt")).unwrap();
        assert_eq!(before.len(), 11);
        let names = |p: &Path| -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&api.m.path("d")), ["f.txt"]);

        // Replace through the API: the mount sees the new file at once.
        api.upload("d/f.txt", b"new");
        let after = std::fs::metadata(api.m.path("d/f.txt")).unwrap();
        assert_eq!(after.len(), 3);
        assert_ne!(after.ino(), before.ino());
        assert_eq!(std::fs::read(api.m.path("d/f.txt")).unwrap(), b"new");

        // A new name appears in the cached listing.
        api.upload("d/g.txt", b"g");
        assert_eq!(names(&api.m.path("d")), ["f.txt", "g.txt"]);
        let r = api
            .client
            .put(api.fs_url("d/sub?mkdir"))
            .bearer_auth(&api.user)
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        assert!(api.m.path("d/sub").is_dir());

        // Metadata changed through the API shows as xattrs.
        let r = api
            .client
            .patch(api.url("/api/v1/meta/d/g.txt"))
            .bearer_auth(&api.user)
            .json(&json!({"description": "from the API"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            getfattr(&api.m.path("d/g.txt"), "user.artstore.description").unwrap(),
            b"from the API"
        );

        // Deleted through the API: gone from the mount at once.
        std::fs::metadata(api.m.path("d/g.txt")).unwrap();
        assert_eq!(
            api.delete("/api/v1/fs/d/g.txt", &api.operator).status(),
            204
        );
        assert_eq!(
            common::errno(std::fs::metadata(api.m.path("d/g.txt"))),
            libc::ENOENT
        );
        assert_eq!(names(&api.m.path("d")), ["f.txt", "sub"]);
    });
}

#[test]
fn mount_changes_show_in_the_api_at_once() {
    common::engine::every_engine(|| {
        let api = Api::start();
        std::fs::write(api.m.path("m.txt"), b"one").unwrap();
        assert_eq!(api.read("m.txt"), b"one");
        let etag1 = api.get("/api/v1/fs/m.txt").send().unwrap().headers()["etag"].clone();
        // Overwrite in place through the mount.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(api.m.path("m.txt"))
            .unwrap();
        f.write_all(b"two!").unwrap();
        drop(f);
        let r = api.get("/api/v1/fs/m.txt").send().unwrap();
        assert_ne!(r.headers()["etag"], etag1);
        assert_eq!(r.bytes().unwrap().as_ref(), b"two!");
        // A file still open for writing is read as it is now.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(api.m.path("m.txt"))
            .unwrap();
        f.write_all(b" three").unwrap();
        f.flush().unwrap();
        assert_eq!(api.read("m.txt"), b"two! three");
        drop(f);

        // Rename, xattrs, removal through the mount.
        std::fs::rename(api.m.path("m.txt"), api.m.path("n.txt")).unwrap();
        assert_error(
            api.get("/api/v1/fs/m.txt").send().unwrap(),
            404,
            "not_found",
        );
        assert_eq!(api.read("n.txt"), b"two! three");
        Command::new("setfattr")
            .args(["-n", "user.artstore.description", "-v", "set in the mount"])
            .arg(api.m.path("n.txt"))
            .status()
            .map(|s| assert!(s.success()))
            .unwrap_or_else(|_| {
                // No setfattr: set it through libc.
                use std::ffi::CString;
                use std::os::unix::ffi::OsStrExt;
                let p = CString::new(api.m.path("n.txt").as_os_str().as_bytes()).unwrap();
                let n = CString::new("user.artstore.description").unwrap();
                let v = b"set in the mount";
                // SAFETY: valid strings and buffer.
                let rc = unsafe {
                    libc::setxattr(p.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0)
                };
                assert_eq!(rc, 0);
            });
        let meta = json(api.get("/api/v1/meta/n.txt").send().unwrap());
        assert_eq!(meta["description"], "set in the mount");
        // Renamed moments after it was created, for the first time: the new
        // name is the original one (docs/SEMANTICS.md, write-temp-and-rename).
        assert_eq!(meta["original_filename"], "n.txt");
        assert_eq!(meta["path"], "/n.txt");
        std::fs::remove_file(api.m.path("n.txt")).unwrap();
        assert_error(
            api.get("/api/v1/fs/n.txt").send().unwrap(),
            404,
            "not_found",
        );
    });
}

#[test]
fn concurrent_puts_to_one_path_never_tear() {
    common::engine::every_engine(|| {
        let api = Api::start();
        const N: usize = 6;
        const SIZE: usize = 2 * 1024 * 1024 + 4096;
        let bodies: Vec<Vec<u8>> = (0..N).map(|i| vec![b'a' + i as u8; SIZE]).collect();
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            // A reader in the mount: every read sees one whole body (or none yet).
            let reader = s.spawn(|| {
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(data) = std::fs::read(api.m.path("same.bin")) {
                        assert_eq!(data.len(), SIZE, "a torn length");
                        assert!(data.iter().all(|b| *b == data[0]), "a torn file");
                        seen += 1;
                    }
                }
                seen
            });
            // A reader through the API: whole bodies too, never an error once
            // the file exists.
            let api_reader = s.spawn(|| {
                let c = client();
                let mut seen = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = c
                        .get(api.fs_url("same.bin"))
                        .bearer_auth(&api.user)
                        .send()
                        .unwrap();
                    if r.status() == 404 && seen == 0 {
                        continue;
                    }
                    if r.status() != 200 {
                        panic!("GET: {}: {}", r.status(), r.text().unwrap_or_default());
                    }
                    let data = r.bytes().unwrap();
                    assert_eq!(data.len(), SIZE, "a torn length");
                    assert!(data.iter().all(|b| *b == data[0]), "a torn file");
                    seen += 1;
                }
                seen
            });
            let writers: Vec<_> = bodies
                .iter()
                .map(|b| {
                    let c = client();
                    let url = api.fs_url("same.bin");
                    let tok = api.user.clone();
                    s.spawn(move || {
                        let mut failures = Vec::new();
                        for _ in 0..3 {
                            match c.put(&url).bearer_auth(&tok).body(b.clone()).send() {
                                Ok(r) if r.status().is_success() => {}
                                Ok(r) => {
                                    failures.push(format!("{}: {}", r.status(), r.text().unwrap()))
                                }
                                Err(e) => failures.push(e.to_string()),
                            }
                        }
                        failures
                    })
                })
                .collect();
            // Collect before asserting, so the reader is always stopped.
            let failures: Vec<String> = writers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_else(|_| vec!["writer panicked".into()]))
                .collect();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let seen = reader.join().unwrap();
            let api_seen = api_reader.join().unwrap();
            assert!(api_seen > 0, "the API reader never saw the file");
            assert!(failures.is_empty(), "uploads failed: {failures:?}");
            assert!(seen > 0, "the reader never saw the file");
        });
        let got = api.read("same.bin");
        assert!(bodies.contains(&got), "the result is not one of the bodies");
        let meta = json(api.get("/api/v1/meta/same.bin").send().unwrap());
        assert_eq!(meta["checksum"], sha256_hex(&got));
        let mut m = api.m;
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn mkdir_and_listing_pages() {
    common::engine::every_engine(|| {
        let api = Api::start();
        let mkdir = |rel: &str| {
            api.client
                .put(api.fs_url(&format!("{rel}?mkdir")))
                .bearer_auth(&api.user)
                .send()
                .unwrap()
        };
        let r = mkdir("box");
        assert_eq!(r.status(), 201);
        assert_eq!(json(r)["kind"], "dir");
        assert_error(mkdir("box"), 409, "conflict");
        assert_error(mkdir("no/such"), 404, "not_found");
        for i in 0..25 {
            std::fs::write(api.m.path(&format!("box/f{i:02}")), format!("{i}")).unwrap();
        }
        // A name that is not UTF-8 (made through the mount).
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"odd\xff");
        std::fs::write(api.m.path("box").join(odd), b"odd").unwrap();

        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut url = "/api/v1/fs/box?limit=10".to_string();
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = json(api.get(&url).send().unwrap());
            pages += 1;
            let entries = page["entries"].as_array().unwrap();
            assert!(entries.len() <= 10);
            for e in entries {
                assert_eq!(e["kind"], "file");
                if let Some(enc) = e["name_encoded"].as_str() {
                    assert_eq!(enc, "odd%FF");
                    assert_eq!(api.read(&format!("box/{enc}")), b"odd");
                }
                names.push(e["name"].as_str().unwrap().to_string());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(names.len(), 26);
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 26, "a name listed twice");
        assert!(names.contains(&"f07".to_string()));

        let root = json(api.get("/api/v1/fs/").send().unwrap());
        assert_eq!(root["path"], "/");
        assert_eq!(root["entries"][0]["name"], "box");
        assert_error(
            api.get("/api/v1/fs/box?cursor=abc").send().unwrap(),
            400,
            "bad_request",
        );
        assert_error(
            api.get("/api/v1/fs/box?limit=0").send().unwrap(),
            400,
            "bad_request",
        );
    });
}

#[test]
fn metadata_by_path_and_by_id() {
    common::engine::every_engine(|| {
        let api = Api::start();
        let r = api
            .put("отчёт.txt", b"quarterly".to_vec())
            .header("X-Artfs-Description", "first draft")
            .header("X-Artfs-Version", "1.0")
            .header("X-Artfs-Attr-Project", "apollo")
            .header("Content-Type", "text/markdown")
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        let meta = json(r);
        for field in [
            "file_id",
            "original_filename",
            "file_size",
            "content_type",
            "created_at",
            "updated_at",
            "created_by",
            "description",
            "version",
            "checksum",
            "custom_attributes",
        ] {
            assert!(meta.get(field).is_some(), "missing {field}: {meta}");
        }
        assert_eq!(meta["description"], "first draft");
        assert_eq!(meta["version"], "1.0");
        assert_eq!(meta["content_type"], "text/markdown");
        assert_eq!(meta["custom_attributes"], json!({"project": "apollo"}));
        let id = meta["file_id"].as_str().unwrap().to_string();
        let f = api.m.path("отчёт.txt");
        assert_eq!(getfattr(&f, "user.project").unwrap(), b"apollo");
        assert_eq!(getfattr(&f, "user.artstore.version").unwrap(), b"1.0");

        // PATCH by path: set, replace, remove; others kept.
        let r = api
            .client
            .patch(api.url("/api/v1/meta/%D0%BE%D1%82%D1%87%D1%91%D1%82.txt"))
            .bearer_auth(&api.user)
            .json(&json!({"description": "final", "version": 2,
                          "custom_attributes": {"project": null, "dept": "finance"}}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let m2 = json(r);
        assert_eq!(m2["description"], "final");
        assert_eq!(m2["version"], "2");
        assert_eq!(m2["custom_attributes"], json!({"dept": "finance"}));
        assert_eq!(getfattr(&f, "user.artstore.description").unwrap(), b"final");
        assert!(getfattr(&f, "user.project").is_none());
        assert_eq!(getfattr(&f, "user.dept").unwrap(), b"finance");

        // Bad documents are 400s and change nothing.
        for bad in [
            json!({"retention_until": "soon"}),
            json!({"content_type": "plain"}),
            json!({"custom_attributes": {"artstore.file_id": "x"}}),
            json!({"colour": "red"}),
        ] {
            let r = api
                .client
                .patch(api.url("/api/v1/meta/отчёт.txt"))
                .bearer_auth(&api.user)
                .json(&bad)
                .send()
                .unwrap();
            assert_error(r, 400, "bad_request");
        }
        let r = api
            .client
            .patch(api.url("/api/v1/meta/отчёт.txt"))
            .bearer_auth(&api.user)
            .body("{not json")
            .send()
            .unwrap();
        assert_error(r, 400, "bad_request");
        assert_eq!(getfattr(&f, "user.artstore.description").unwrap(), b"final");

        // A PATCH is one change: a refused attribute (retention shortened)
        // leaves the others unset too.
        let held = api.m.path("held.txt");
        std::fs::write(&held, b"kept").unwrap();
        common::setx(
            &held,
            "user.artstore.retention_until",
            b"2100-01-01T00:00:00Z",
        )
        .unwrap();
        let r = api
            .client
            .patch(api.url("/api/v1/meta/held.txt"))
            .bearer_auth(&api.user)
            .json(
                &json!({"description": "half", "custom_attributes": {"dept": "x"},
                          "retention_until": "2050-01-01T00:00:00Z"}),
            )
            .send()
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
        assert!(getfattr(&held, "user.artstore.description").is_none());
        assert!(getfattr(&held, "user.dept").is_none());
        assert_eq!(
            getfattr(&held, "user.artstore.retention_until").unwrap(),
            b"2100-01-01T00:00:00Z"
        );

        // The id door: same document, download with the original name.
        let by_id = json(api.get(&format!("/api/v1/files/{id}")).send().unwrap());
        assert_eq!(by_id["file_id"], id);
        assert_eq!(by_id["description"], "final");
        assert_eq!(by_id["checksum"], sha256_hex(b"quarterly"));
        // Renamed in the mount: the id still finds it.
        std::fs::rename(&f, api.m.path("renamed.txt")).unwrap();
        let r = api
            .get(&format!("/api/v1/files/{id}/download"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let cd = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(cd.starts_with("attachment; filename=\""), "{cd}");
        assert!(
            cd.contains("filename*=UTF-8''%D0%BE%D1%82%D1%87%D1%91%D1%82.txt"),
            "{cd}"
        );
        assert_eq!(r.headers()["content-type"], "text/markdown");
        assert_eq!(r.bytes().unwrap().as_ref(), b"quarterly");
        let r = api
            .get(&format!("/api/v1/files/{id}/download"))
            .header("Range", "bytes=0-2")
            .send()
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().unwrap().as_ref(), b"qua");

        let r = api
            .client
            .patch(api.url(&format!("/api/v1/files/{id}")))
            .bearer_auth(&api.user)
            .json(&json!({"metadata": {"dept": "legal"}}))
            .send()
            .unwrap();
        assert_eq!(json(r)["custom_attributes"], json!({"dept": "legal"}));
        assert_eq!(
            getfattr(&api.m.path("renamed.txt"), "user.dept").unwrap(),
            b"legal"
        );

        // DELETE by id: user may not, operator may; then it is gone everywhere.
        assert_error(
            api.delete(&format!("/api/v1/files/{id}"), &api.user),
            403,
            "forbidden",
        );
        assert_eq!(
            api.delete(&format!("/api/v1/files/{id}"), &api.operator)
                .status(),
            204
        );
        assert!(!api.m.path("renamed.txt").exists());
        assert_error(
            api.get(&format!("/api/v1/files/{id}")).send().unwrap(),
            404,
            "not_found",
        );
        // Not a UUID: 422, as the original's FastAPI validation answered.
        assert_error(
            api.get("/api/v1/files/not-a-uuid").send().unwrap(),
            422,
            "unprocessable_entity",
        );
        assert_error(
            api.get("/api/v1/files/01234567-89ab-7def-8123-456789abcdef/download")
                .send()
                .unwrap(),
            404,
            "not_found",
        );
    });
}

#[test]
fn paths_cannot_leave_the_tree() {
    common::engine::every_engine(|| {
        let api = Api::start();
        api.upload("inside.txt", b"in");
        let parent = api.m.backing.parent().unwrap().to_path_buf();
        let before: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let tok = api.user.clone();
        for (method, path) in [
            ("GET", "/api/v1/fs/../x"),
            ("GET", "/api/v1/fs/../../../../etc/passwd"),
            ("GET", "/api/v1/fs/a/../inside.txt"),
            ("GET", "/api/v1/fs/%2e%2e/x"),
            ("GET", "/api/v1/fs/%2E%2E%2Fetc%2Fpasswd"),
            ("GET", "/api/v1/fs/..%2f..%2fetc%2fpasswd"),
            ("GET", "/api/v1/fs/inside.txt%2f"),
            ("GET", "/api/v1/fs/a%00b"),
            ("GET", "/api/v1/fs/a//b"),
            ("GET", "/api/v1/fs/./inside.txt"),
            ("PUT", "/api/v1/fs/../escaped"),
            ("PUT", "/api/v1/fs/%2e%2e/escaped"),
            ("PUT", "/api/v1/fs/..%2fescaped"),
            ("PUT", "/api/v1/fs/%2fescaped"),
            ("DELETE", "/api/v1/fs/../backing"),
            ("GET", "/api/v1/meta/../x"),
            ("PATCH", "/api/v1/meta/%2e%2e"),
        ] {
            // Deleting needs an operator; the others a user.
            let tok = if method == "DELETE" {
                &api.operator
            } else {
                &tok
            };
            let req = format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
                 Content-Length: 4\r\nConnection: close\r\n\r\nevil"
            );
            let (status, text) = api.raw(&req);
            assert!(
                status == 400 || status == 404,
                "{method} {path}: {status}\n{text}"
            );
            assert!(
                text.contains("\"error\""),
                "{method} {path}: not a JSON error"
            );
        }
        // Nothing was written outside the mount's tree, nor inside it.
        let after: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(before, after);
        assert_eq!(common::names(&api.m.mnt), ["inside.txt"]);

        // Names: 255 bytes pass, 256 are a 400; the path door has no '..'.
        let long = "n".repeat(255);
        assert_eq!(api.put(&long, b"x".to_vec()).send().unwrap().status(), 201);
        assert!(api.m.path(&long).exists());
        let longer = "n".repeat(256);
        assert_error(
            api.put(&longer, b"x".to_vec()).send().unwrap(),
            400,
            "bad_request",
        );
        assert_error(
            api.get(&format!("/api/v1/fs/{longer}")).send().unwrap(),
            400,
            "bad_request",
        );
        // Symbolic links are not followed, even to inside the tree.
        std::os::unix::fs::symlink("/etc/passwd", api.m.path("link")).unwrap();
        assert_error(
            api.get("/api/v1/fs/link").send().unwrap(),
            400,
            "bad_request",
        );
        std::os::unix::fs::symlink(".", api.m.path("loop")).unwrap();
        assert_error(
            api.get("/api/v1/fs/loop/inside.txt").send().unwrap(),
            400,
            "bad_request",
        );
    });
}

#[test]
fn health_metrics_and_openapi() {
    common::engine::every_engine(|| {
        let api = Api::start();
        api.upload("x.txt", b"x");
        api.read("x.txt");
        let ready = api.client.get(api.url("/health/ready")).send().unwrap();
        assert_eq!(ready.status(), 200);

        // BACKING's object area gone: not ready, and back.
        let objects = api.m.backing.join("objects");
        let away = api.m.backing.join("objects.away");
        std::fs::rename(&objects, &away).unwrap();
        let r = api.client.get(api.url("/health/ready")).send().unwrap();
        assert_error(r, 503, "unavailable");
        std::fs::rename(&away, &objects).unwrap();
        assert_eq!(
            api.client
                .get(api.url("/health/ready"))
                .send()
                .unwrap()
                .status(),
            200
        );

        // Some work through the mount, for the FUSE figures.
        let _ = std::fs::metadata(api.m.path("x.txt"));
        let _ = std::fs::metadata(api.m.path("no-such-file"));
        let metrics = api
            .client
            .get(api.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        for want in [
            "artfs_http_requests_total{method=\"PUT\",route=\"/api/v1/fs/{*path}\",status=\"201\"} 1",
            "artfs_http_requests_total{method=\"GET\",route=\"/api/v1/fs/{*path}\",status=\"200\"} 1",
            "artfs_http_requests_total{method=\"GET\",route=\"/health/ready\",status=\"503\"} 1",
            "artfs_http_request_duration_seconds_bucket{method=\"GET\",route=\"/health/ready\",status=\"200\",le=\"+Inf\"} 2",
            "artfs_wal_rows{status=\"committed\"}",
            "artfs_capacity_bytes ",
            "artfs_files ",
            "artfs_up 1",
            "artfs_uploads_in_flight 0",
            "artfs_wal_recovered 0",
            "artfs_capacity_level 0",
            "artfs_fuse_ops_total{op=\"lookup\"}",
            "artfs_fuse_op_seconds_total{op=\"getattr\"}",
            "artfs_cache_lookups_total{result=\"hit\"}",
        ] {
            assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
        }
        assert!(
            !metrics.contains("x.txt"),
            "a file name leaked into metrics"
        );

        let doc = json(api.get("/api/v1/openapi.json").send().unwrap());
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/health/live",
            "/health/ready",
            "/metrics",
            "/api/v1/info",
            "/api/v1/capacity",
            "/api/v1/fs/{path}",
            "/api/v1/meta/{path}",
            "/api/v1/files/",
            "/api/v1/files/{file_id}",
            "/api/v1/files/{file_id}/download",
        ] {
            assert!(paths.contains_key(p), "openapi lacks {p}");
        }
        assert!(paths["/api/v1/fs/{path}"]["put"].is_object());
        assert!(paths["/api/v1/fs/{path}"]["delete"].is_object());
        assert!(paths["/api/v1/files/{file_id}"]["patch"].is_object());
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["FileMeta"].is_object());
        assert_error(
            api.client.get(api.url("/no/such/route")).send().unwrap(),
            404,
            "not_found",
        );
    });
}

#[test]
fn posix_permissions_apply_to_api_callers() {
    common::engine::every_engine(|| {
        let api = Api::start_with(&keys().ec, &["--api-uid", "1000", "--api-gid", "1000"]);
        let m = &api.m;
        // As root through the mount.
        std::fs::create_dir(m.path("private")).unwrap();
        std::fs::write(m.path("private/secret"), b"s").unwrap();
        std::fs::set_permissions(m.path("private"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::create_dir(m.path("open")).unwrap();
        std::fs::set_permissions(m.path("open"), std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(m.path("open/rootonly"), b"r").unwrap();
        std::fs::set_permissions(
            m.path("open/rootonly"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::create_dir(m.path("sticky")).unwrap();
        std::fs::set_permissions(m.path("sticky"), std::fs::Permissions::from_mode(0o1777))
            .unwrap();
        std::fs::write(m.path("sticky/roots"), b"r").unwrap();

        // No search permission on the directory; no read on the file.
        assert_error(
            api.get("/api/v1/fs/private/secret").send().unwrap(),
            403,
            "forbidden",
        );
        assert_error(
            api.get("/api/v1/fs/private").send().unwrap(),
            403,
            "forbidden",
        );
        assert_error(
            api.get("/api/v1/fs/open/rootonly").send().unwrap(),
            403,
            "forbidden",
        );
        assert_error(
            api.get("/api/v1/meta/open/rootonly").send().unwrap(),
            403,
            "forbidden",
        );
        // No write permission on the root directory (0755, root's).
        assert_error(
            api.put("new.txt", b"n".to_vec()).send().unwrap(),
            403,
            "forbidden",
        );
        assert!(!m.path("new.txt").exists());
        // A writable directory: the file is the API identity's.
        api.upload("open/mine.txt", b"mine");
        let md = std::fs::metadata(m.path("open/mine.txt")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000));
        assert_eq!(md.mode() & 0o7777, 0o644);
        // Replacing root's file in a writable, non-sticky directory is allowed
        // (as rename over it would be); in a sticky one it is not.
        assert_error(
            api.delete("/api/v1/fs/sticky/roots", &api.operator),
            403,
            "forbidden",
        );
        assert_error(
            api.put("sticky/roots", b"x".to_vec()).send().unwrap(),
            403,
            "forbidden",
        );
        assert_eq!(std::fs::read(m.path("sticky/roots")).unwrap(), b"r");
        api.upload("sticky/own", b"o");
        assert_eq!(
            api.delete("/api/v1/fs/sticky/own", &api.operator).status(),
            204
        );
        // Metadata changes need write permission on the file.
        let r = api
            .client
            .patch(api.url("/api/v1/meta/open/rootonly"))
            .bearer_auth(&api.user)
            .json(&json!({"description": "x"}))
            .send()
            .unwrap();
        assert_error(r, 403, "forbidden");
    });
}

/// A system user whose supplementary groups include one made for it
/// (created once, idempotently; tests run as root): (uid, primary gid,
/// supplementary gid).
fn user_with_a_supplementary_group() -> (u32, u32, u32) {
    use nix::unistd::{Group, User};
    let run = |cmd: &[&str]| {
        let st = std::process::Command::new(cmd[0])
            .args(&cmd[1..])
            .status()
            .unwrap();
        assert!(st.success(), "{cmd:?} failed");
    };
    if Group::from_name("artfs-api-extra").unwrap().is_none() {
        let _ = std::process::Command::new("groupadd")
            .args(["-f", "artfs-api-extra"])
            .status();
    }
    if User::from_name("artfs-api-user").unwrap().is_none() {
        let st = std::process::Command::new("useradd")
            .args([
                "-M",
                "-N",
                "-g",
                "nogroup",
                "-G",
                "artfs-api-extra",
                "artfs-api-user",
            ])
            .status()
            .unwrap();
        // Another test process may have made it meanwhile.
        if !st.success() {
            assert!(User::from_name("artfs-api-user").unwrap().is_some());
        }
    }
    let extra = Group::from_name("artfs-api-extra")
        .unwrap()
        .unwrap()
        .gid
        .as_raw();
    let user = User::from_name("artfs-api-user").unwrap().unwrap();
    if !Group::from_gid(nix::unistd::Gid::from_raw(extra))
        .unwrap()
        .unwrap()
        .mem
        .contains(&user.name)
    {
        run(&["usermod", "-a", "-G", "artfs-api-extra", "artfs-api-user"]);
    }
    (user.uid.as_raw(), user.gid.as_raw(), extra)
}

#[test]
fn api_identity_has_its_users_supplementary_groups() {
    common::engine::every_engine(|| {
        let (uid, gid, extra) = user_with_a_supplementary_group();
        let (u, g) = (uid.to_string(), gid.to_string());
        let api = Api::start_with(&keys().ec, &["--api-uid", &u, "--api-gid", &g]);
        let m = &api.m;
        // Group-writable directories: one of the user's extra group, one not.
        for (dir, group) in [("team", extra), ("others", 0)] {
            std::fs::create_dir(m.path(dir)).unwrap();
            std::fs::set_permissions(m.path(dir), std::fs::Permissions::from_mode(0o770)).unwrap();
            std::os::unix::fs::chown(m.path(dir), Some(0), Some(group)).unwrap();
        }
        api.upload("team/report.txt", b"ours");
        let md = std::fs::metadata(m.path("team/report.txt")).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, gid));
        assert_error(
            api.put("others/report.txt", b"x".to_vec()).send().unwrap(),
            403,
            "forbidden",
        );
        assert!(!m.path("others/report.txt").exists());
    });
}

#[test]
fn limits_on_size_headers_and_slow_clients() {
    common::engine::every_engine(|| {
        let api = Api::start_with(
            &keys().ec,
            &[
                "--api-max-upload",
                "1000",
                "--api-header-timeout",
                "1",
                "--api-body-timeout",
                "1",
                "--api-max-uploads",
                "1",
            ],
        );
        // Declared too large: refused before the body is read.
        assert_error(
            api.put("big", vec![0u8; 2000]).send().unwrap(),
            413,
            "payload_too_large",
        );
        // Streamed without a length: refused once past the limit.
        let r = api
            .put(
                "big",
                reqwest::blocking::Body::new(std::io::Cursor::new(vec![0u8; 5000])),
            )
            .send()
            .unwrap();
        assert_error(r, 413, "payload_too_large");
        assert!(!api.m.path("big").exists());
        assert_eq!(api.upload("small", &[1u8; 1000])["file_size"], 1000);

        // Oversized headers: 431, counted as sent (the token and the
        // other headers take a few hundred bytes besides the padding).
        let padded = |n: usize| {
            api.get("/api/v1/fs/small")
                .header("X-Padding", "p".repeat(n))
                .send()
                .unwrap()
        };
        let r = padded(32 * 1024);
        assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        // Just over the limit (16 KiB by default)...
        assert_error(padded(16 * 1024 - 200), 431, "header_fields_too_large");
        // ...and within it.
        assert_eq!(padded(16 * 1024 - 2000).status(), StatusCode::OK);
        // Past the read buffer: hyper refuses it before it is parsed.
        let r = padded(300 * 1024);
        assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        // Slow loris: headers never finished; the connection is closed.
        let mut s = TcpStream::connect(&api.addr).unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let start = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(start.elapsed() < Duration::from_secs(8), "never closed");
        assert!(
            !String::from_utf8_lossy(&buf).contains("200 OK"),
            "an unfinished request was served"
        );

        // A body that stalls: 408, nothing published.
        let tok = api.user.clone();
        let (status, _) = {
            let mut s = TcpStream::connect(&api.addr).unwrap();
            s.write_all(
                format!(
                    "PUT /api/v1/fs/stalled HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
                     Content-Length: 100\r\n\r\nonly a part"
                )
                .as_bytes(),
            )
            .unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            (
                text.split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse::<u16>().ok())
                    .unwrap_or(0),
                text,
            )
        };
        assert_eq!(status, 408);
        assert!(!api.m.path("stalled").exists());

        // One upload at a time: a second one is told to come back.
        struct Slow(usize);
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Ok(0);
                }
                std::thread::sleep(Duration::from_millis(300));
                self.0 -= 1;
                buf[0] = b's';
                Ok(1)
            }
        }
        std::thread::scope(|s| {
            let c = client();
            let url = api.fs_url("slow");
            let tok = api.user.clone();
            let first = s.spawn(move || {
                c.put(&url)
                    .bearer_auth(&tok)
                    .body(reqwest::blocking::Body::new(Slow(8)))
                    .send()
                    .unwrap()
                    .status()
            });
            std::thread::sleep(Duration::from_millis(900));
            let r = api.put("other", b"o".to_vec()).send().unwrap();
            assert_eq!(r.headers()["retry-after"], "1");
            assert_error(r, 503, "busy");
            assert_eq!(first.join().unwrap(), 201);
        });
        assert_eq!(api.read("slow"), b"ssssssss");
        assert_eq!(api.upload("other", b"o")["file_size"], 1);
    });
}

#[test]
fn moscow_time_zone_tokens_and_utc_times() {
    common::engine::every_engine(|| {
        let mut api = Api::start();
        api.m.unmount();
        api.m
            .try_mount(&[("TZ", "Europe/Moscow")])
            .expect("remount under TZ=Europe/Moscow");
        wait_for(&api.client, &api.url("/health/live"));
        // A fresh token (30 minutes) is accepted: no local-time arithmetic.
        let meta = api.upload("tz.txt", b"t");
        for field in ["created_at", "updated_at", "modified_at"] {
            let t = meta[field].as_str().unwrap();
            assert!(t.ends_with('Z'), "{field} = {t}");
        }
        let r = api.get("/api/v1/fs/tz.txt").send().unwrap();
        let lm = r.headers()["last-modified"].to_str().unwrap().to_string();
        assert!(lm.ends_with(" GMT"), "{lm}");
        // The HTTP date and the JSON time are the same instant.
        let hour = &meta["modified_at"].as_str().unwrap()[11..13];
        assert!(
            lm.contains(&format!(" {hour}:")),
            "{lm} vs {}",
            meta["modified_at"]
        );
        let listing = json(api.get("/api/v1/fs/").send().unwrap());
        assert!(listing["entries"][0]["modified_at"]
            .as_str()
            .unwrap()
            .ends_with('Z'));
    });
}

#[test]
fn tls_and_key_reload_on_sighup() {
    common::engine::every_engine(|| {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = common::keys::tls_files(dir.path());
        // The verification key is a copy we can replace.
        let jwt_pub = dir.path().join("jwt.pub");
        std::fs::copy(&keys().ec.public, &jwt_pub).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let m = Mount::with_args(&[
            "--api",
            &addr,
            "--jwt-key",
            jwt_pub.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]);
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
        let tls = Client::builder()
            .no_proxy()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let base = format!("https://localhost:{port}");
        wait_for(&tls, &format!("{base}/health/live"));
        let ec_token = token_with(&keys().ec, "alice", Role::User);
        let r = tls
            .get(format!("{base}/api/v1/info"))
            .bearer_auth(&ec_token)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        // Plain HTTP on the TLS port gets nowhere.
        assert!(client()
            .get(format!("http://{addr}/health/live"))
            .send()
            .map(|r| !r.status().is_success())
            .unwrap_or(true));

        // Rotate the verification key and send SIGHUP: new tokens pass, old fail.
        std::fs::copy(&keys().rsa.public, &jwt_pub).unwrap();
        let pid = nix::unistd::Pid::from_raw(m.pid().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        let rsa_token = token_with(&keys().rsa, "alice", Role::User);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = tls
                .get(format!("{base}/api/v1/info"))
                .bearer_auth(&rsa_token)
                .send()
                .unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "the new key was never taken");
            std::thread::sleep(Duration::from_millis(100));
        }
        let r = tls
            .get(format!("{base}/api/v1/info"))
            .bearer_auth(&ec_token)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
        // The daemon survived the signal and still serves the mount.
        std::fs::write(m.path("alive"), b"yes").unwrap();
        assert!(common::is_mounted(&m.mnt));
    });
}

#[test]
fn refuses_to_start_unsafely() {
    let run = |args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let backing = dir.path().join("b");
        let mnt = dir.path().join("m");
        std::fs::create_dir_all(&backing).unwrap();
        std::fs::create_dir_all(&mnt).unwrap();
        let out = Command::new(common::bin())
            .arg("mount")
            .arg(&backing)
            .arg(&mnt)
            .args(args)
            .env("ARTFS_LOG", "warn")
            .output()
            .unwrap();
        assert!(!common::is_mounted(&mnt));
        assert!(!out.status.success());
        // Nothing was created in BACKING.
        assert_eq!(std::fs::read_dir(&backing).unwrap().count(), 0);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let port = free_port().to_string();
    let loopback = format!("127.0.0.1:{port}");
    let public = format!("0.0.0.0:{port}");
    let pubkey = keys().ec.public.to_str().unwrap();
    let e = run(&["--api", &loopback]);
    assert!(e.contains("--jwt-key"), "{e}");
    let e = run(&["--api", &public, "--jwt-key", pubkey]);
    assert!(e.contains("plain HTTP"), "{e}");
}

#[test]
fn a_bad_key_file_stops_the_start() {
    common::engine::every_engine(|| {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pub");
        std::fs::write(&junk, "not a key").unwrap();
        let mut m = Mount::prepared(&[], |_| {});
        m.unmount();
        let port = free_port();
        let out = Command::new(common::bin())
            .arg("mount")
            .args(m.location())
            .arg(&m.mnt)
            .args(m.store_args())
            .envs(m.store_env())
            .args(["--api", &format!("127.0.0.1:{port}"), "--jwt-key"])
            .arg(&junk)
            .env("ARTFS_LOG", "warn")
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!common::is_mounted(&m.mnt));
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(e.contains("verification key"), "{e}");
        m.assert_consistent();
    });
}

/// Uploads go to the disk with O_DIRECT (`core/direct_fill.rs`); a
/// filesystem that opens that way but refuses the writes (EINVAL, another
/// alignment) gets the rest of the upload buffered, whole and hashed, and
/// the next upload too; so does one that takes no O_DIRECT at all.
#[test]
fn an_upload_whose_direct_writes_are_refused_is_written_buffered() {
    common::engine::every_engine(|| {
        let api = Api::start();
        api.m.arm(&["upload::direct_write=return"]);
        let sizes = [("a.bin", (5 << 20) + 123), ("b.bin", 4096)];
        let mut uploads: Vec<(&str, usize)> = sizes.to_vec();
        uploads.extend([("c.bin", (5 << 20) + 123), ("d.bin", 4096)]);
        for (i, (name, len)) in uploads.into_iter().enumerate() {
            if i == sizes.len() {
                api.m.arm(&["upload::no_direct=return"]);
            }
            let body: Vec<u8> = (0..len as u32).map(|i| (i * 13 % 251) as u8).collect();
            let meta = api.upload(name, &body);
            assert_eq!(meta["checksum"], sha256_hex(&body), "{name}: {meta}");
            assert!(api.read(name) == body, "{name}: the bytes differ");
            assert!(
                std::fs::read(api.m.path(name)).unwrap() == body,
                "{name}: the bytes differ through the mount"
            );
        }
        api.m.assert_consistent();
    });
}

#[test]
fn an_upload_cut_short_leaves_nothing() {
    common::engine::every_engine(|| {
        let mut api = Api::start();
        api.upload("keep.txt", b"keep");
        let tok = api.user.clone();
        let partial = |addr: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                format!(
                    "PUT /api/v1/fs/keep.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\n\
                     Content-Length: 10000000\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
            s.write_all(&vec![b'x'; 3 << 20]).unwrap();
            s
        };
        // The client goes away mid-body: the old file stays, whole.
        drop(partial(&api.addr));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(api.read("keep.txt"), b"keep");
        assert_eq!(std::fs::read(api.m.path("keep.txt")).unwrap(), b"keep");

        // The daemon dies mid-upload: after a remount the old file is there
        // and the staged one is reclaimed.
        let s = partial(&api.addr);
        std::thread::sleep(Duration::from_millis(300));
        api.m.kill();
        drop(s);
        api.m.mount();
        wait_for(&api.client, &api.url("/health/live"));
        assert_eq!(std::fs::read(api.m.path("keep.txt")).unwrap(), b"keep");
        assert_eq!(common::names(&api.m.mnt), ["keep.txt"]);
        api.m.unmount();
        api.m.assert_consistent();
    });
}

// ---------------------------------------------------------------- policy

fn admin_token(key: &KeyPair) -> String {
    token_with(key, "root-admin", Role::Admin)
}

fn set_mode(api: &Api, mode: &str, confirm: bool) -> u16 {
    api.client
        .post(api.url("/api/v1/mode"))
        .bearer_auth(admin_token(api.key))
        .json(&json!({ "mode": mode, "confirm": confirm }))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// Every mode x every mutating request through the HTTP door: the status
/// the mode promises, and nothing changed when refused (checked through
/// the mount).
#[test]
fn modes_apply_through_the_api_door_too() {
    common::engine::every_engine(|| {
        for mode in ["edit", "rw", "ro", "ar"] {
            let start = if mode == "edit" { "edit" } else { "rw" };
            let api = Api::start_with(&keys().ec, &["--mode", start, "--trash-days", "0"]);
            api.upload("keep", b"keep");
            api.upload("victim", b"victim");
            api.upload("replace-me", b"old");
            match mode {
                "ro" => assert_eq!(set_mode(&api, "ro", false), 200),
                "ar" => {
                    assert_eq!(set_mode(&api, "ro", false), 200);
                    assert_eq!(set_mode(&api, "ar", true), 200);
                }
                _ => {}
            }
            let code = |r: Response| r.status().as_u16();
            let create = code(api.put("new", b"n".to_vec()).send().unwrap());
            let replace = code(api.put("replace-me", b"new".to_vec()).send().unwrap());
            let delete = code(api.delete("/api/v1/fs/victim", &api.operator));
            let patch = code(
                api.client
                    .patch(api.url("/api/v1/meta/keep"))
                    .bearer_auth(&api.user)
                    .json(&json!({ "description": "d" }))
                    .send()
                    .unwrap(),
            );
            let mkdir = code(
                api.client
                    .put(format!("{}?mkdir", api.fs_url("dir")))
                    .bearer_auth(&api.user)
                    .send()
                    .unwrap(),
            );
            let read = code(api.get("/api/v1/fs/keep").send().unwrap());
            let got = [create, replace, delete, patch, mkdir, read];
            let want = match mode {
                "edit" => [201, 200, 204, 200, 201, 200],
                "rw" => [201, 403, 403, 200, 201, 200],
                "ro" => [403, 403, 403, 403, 403, 200],
                _ => [403, 403, 403, 403, 403, 403],
            };
            assert_eq!(
                got, want,
                "{mode}: create, replace, delete, patch, mkdir, read"
            );
            // Refused means unchanged, as the mount shows.
            if mode != "edit" {
                // (Content is not served in ar: compare sizes.)
                assert_eq!(
                    std::fs::metadata(api.m.path("replace-me")).unwrap().len(),
                    3
                );
                assert!(api.m.path("victim").exists());
            }
            if mode == "ro" || mode == "ar" {
                assert!(!api.m.path("new").exists() && !api.m.path("dir").exists());
                let info = json(api.get("/api/v1/info").send().unwrap());
                assert_eq!(info["mode"], mode);
            }
        }
    });
}

#[test]
fn mode_changes_over_http_follow_the_state_machine() {
    common::engine::every_engine(|| {
        let api = Api::start_with(&keys().ec, &["--mode", "rw"]);
        // Only admins change modes.
        let r = api
            .client
            .post(api.url("/api/v1/mode"))
            .bearer_auth(&api.operator)
            .json(&json!({ "mode": "ro" }))
            .send()
            .unwrap();
        assert_error(r, 403, "forbidden");
        assert_eq!(set_mode(&api, "ar", false), 409, "rw -> ar skips ro");
        assert_eq!(set_mode(&api, "ro", false), 200);
        let r = api
            .client
            .post(api.url("/api/v1/mode"))
            .bearer_auth(admin_token(api.key))
            .json(&json!({ "mode": "rw" }))
            .send()
            .unwrap();
        let body = assert_error(r, 409, "conflict");
        assert!(body["message"].as_str().unwrap().contains("confirm"));
        assert_eq!(set_mode(&api, "rw", true), 200);
        assert_eq!(set_mode(&api, "sideways", false), 400);
        // The mount follows at once.
        std::fs::write(api.m.path("writable"), b"yes").unwrap();
    });
}

#[test]
fn capacity_search_and_maintenance_over_http() {
    common::engine::every_engine(|| {
        let api = Api::start_with(&keys().ec, &["--capacity", "1M", "--trash-days", "0"]);
        let r = api
            .put("notes.txt", b"apollo notes".to_vec())
            .header("X-Artfs-Description", "Mission notes for Apollo")
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        // Over capacity: 507, and nothing left behind.
        // (Its own client: the server answers before the body is read and
        // closes that connection.)
        let r = client()
            .put(api.fs_url("big"))
            .bearer_auth(&api.user)
            .body(vec![0u8; 2 << 20])
            .send()
            .unwrap();
        assert_error(r, 507, "insufficient_storage");
        assert!(!api.m.path("big").exists());
        let cap = json(api.get("/api/v1/capacity").send().unwrap());
        assert_eq!(cap["capacity_bytes"], 1 << 20);
        assert_eq!(cap["used_bytes"], 12);
        assert_eq!(cap["file_count"], 1);
        assert_eq!(cap["level"], "ok");
        // The failed upload's staging file is gone by the time the 507 is
        // answered: the very next capacity request never counts it.
        for _ in 0..10 {
            let r = client()
                .put(api.fs_url("big"))
                .bearer_auth(&api.user)
                .body(vec![0u8; 2 << 20])
                .send()
                .unwrap();
            assert_error(r, 507, "insufficient_storage");
            let cap = json(api.get("/api/v1/capacity").send().unwrap());
            assert_eq!(cap["file_count"], 1, "a failed upload still counted");
            assert_eq!(cap["used_bytes"], 12, "a failed upload still counted");
        }
        // Search.
        let page = json(api.get("/api/v1/search?q=apollo").send().unwrap());
        assert_eq!(page["results"][0]["path"], "/notes.txt");
        assert!(page["results"][0]["file_id"].as_str().is_some());
        let r = api.get("/api/v1/search?q=%22unbalanced").send().unwrap();
        assert_error(r, 400, "bad_request");
        // Maintenance: admin only; the job runs and reports.
        let r = api
            .client
            .post(api.url("/api/v1/maintenance/fsck"))
            .bearer_auth(&api.user)
            .send()
            .unwrap();
        assert_error(r, 403, "forbidden");
        let admin = admin_token(api.key);
        for kind in ["fsck", "scrub", "rebuild"] {
            let r = api
                .client
                .post(api.url(&format!("/api/v1/maintenance/{kind}")))
                .bearer_auth(&admin)
                .send()
                .unwrap();
            assert_eq!(r.status(), 202, "{kind}");
            let deadline = Instant::now() + Duration::from_secs(20);
            let job = loop {
                let j = json(
                    api.client
                        .get(api.url(&format!("/api/v1/maintenance/{kind}")))
                        .bearer_auth(&admin)
                        .send()
                        .unwrap(),
                );
                if j["state"] != "running" {
                    break j;
                }
                assert!(Instant::now() < deadline, "{kind} never finished");
                std::thread::sleep(Duration::from_millis(50));
            };
            assert_eq!(job["state"], "finished", "{kind}: {job}");
            match kind {
                "fsck" => assert_eq!(job["result"]["consistent"], true, "{job}"),
                "scrub" => assert_eq!(job["result"]["damaged"], json!([]), "{job}"),
                _ => assert_eq!(job["result"]["rows_without_sidecars"], json!([]), "{job}"),
            }
        }
        // The jobs' results are the last ones `artfs status` shows.
        let out = api.m.command("status").arg("--json").output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(st["capacity_bytes"], 1 << 20, "{st}");
        assert!(st["used_percent"].as_f64().is_some(), "{st}");
        for kind in ["last_fsck", "last_scrub"] {
            assert_eq!(st[kind]["outcome"], "clean", "{st}");
            let summary = st[kind]["summary"].as_str().unwrap();
            assert!(summary.contains("HTTP job"), "{st}");
        }
        let r = api
            .client
            .post(api.url("/api/v1/maintenance/defrag"))
            .bearer_auth(&admin)
            .send()
            .unwrap();
        assert_eq!(r.status(), 404);
    });
}

/// The log says who did it: the token's subject for HTTP requests.
#[test]
fn log_rows_of_api_requests_carry_the_token_subject() {
    common::engine::every_engine(|| {
        let api = Api::start_with(&keys().ec, &["--trash-days", "0"]);
        api.upload("by-alice.txt", b"a");
        assert_eq!(
            api.delete("/api/v1/fs/by-alice.txt", &api.operator)
                .status(),
            204
        );
        let rows = api.m.query(
            "SELECT operation_type || '=' || user_id FROM {p}_wal \
             WHERE operation_type IN ('upload', 'unlink') ORDER BY seq",
        );
        assert_eq!(rows, ["upload=alice", "unlink=olga"]);
    });
}
