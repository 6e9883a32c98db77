//! The original element's upload, `POST /api/v1/files/upload`, as its
//! Ingester sends it (a multipart form, fields before the file), against a
//! live mount: the file on the mount with its archive attributes, its id
//! kept when the caller chose it, and the refusals the Ingester reacts to
//! (409, 422, 401, 403, 507) answered as `{"detail": ...}` and readable by
//! a client still streaming its body, which fails over to another element
//! on 507 as the Ingester does.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use artfs::auth::Role;
use common::api::{json, parse_response, token, Api};
use common::getx;
use reqwest::blocking::multipart::{Form, Part};
use reqwest::blocking::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn file(content: &[u8], name: &str) -> Part {
    Part::bytes(content.to_vec())
        .file_name(name.to_string())
        .mime_str("text/plain")
        .unwrap()
}

fn post(api: &Api, role: Role, form: Form) -> Response {
    api.client
        .post(api.url("/api/v1/files/upload"))
        .bearer_auth(token("ingester", role))
        .multipart(form)
        .send()
        .unwrap()
}

/// An error in FastAPI's shape with this status.
fn assert_detail(r: Response, status: u16) -> String {
    let got = r.status().as_u16();
    let v = json(r);
    assert_eq!(got, status, "{v}");
    assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    v["detail"].as_str().unwrap().to_string()
}

/// Names in the upload directories, all days.
fn stored(api: &Api) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![api.m.path("uploads")];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_upload_lands_on_the_mount_with_its_attributes_and_downloads_by_id() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        let body = b"hello archive";
        let form = Form::new()
            .text("description", "quarterly report")
            .text("version", "3")
            .text("retention_policy", "permanent")
            .text("finalize_transaction_id", "tx-42")
            .text("something_else", "ignored")
            .part("file", file(body, "report.txt"));
        let r = post(&api, Role::User, form);
        assert_eq!(r.status(), 201);
        let v: Value = json(r);
        let id = v["file_id"].as_str().unwrap().to_string();
        let uuid = uuid::Uuid::parse_str(&id).unwrap();
        assert_eq!(uuid.get_version_num(), 4, "new ids are v4 on this route");
        assert_eq!(v["original_filename"], "report.txt");
        assert_eq!(v["file_size"], body.len());
        assert_eq!(v["checksum"], hex::encode(Sha256::digest(body)));
        assert!(v["message"].is_string());

        // /uploads/YYYY/MM/DD/{stem}_{id}{ext}, today in UTC.
        let now = time::OffsetDateTime::now_utc();
        let path = v["path"].as_str().unwrap();
        assert_eq!(
            path,
            format!(
                "/uploads/{:04}/{:02}/{:02}/report_{id}.txt",
                now.year(),
                u8::from(now.month()),
                now.day()
            )
        );
        let on_mount = api.m.path(&path[1..]);
        assert_eq!(std::fs::read(&on_mount).unwrap(), body);
        let x = |n: &str| String::from_utf8(getx(&on_mount, n).unwrap()).unwrap();
        assert_eq!(x("user.artstore.file_id"), id);
        assert_eq!(x("user.artstore.original_filename"), "report.txt");
        assert_eq!(x("user.artstore.description"), "quarterly report");
        assert_eq!(x("user.artstore.version"), "3");
        assert_eq!(x("user.artstore.content_type"), "text/plain");
        assert_eq!(x("user.artstore.created_by"), "ingester");
        assert_eq!(x("user.artstore.sha256"), v["checksum"].as_str().unwrap());
        assert_eq!(x("user.retention_policy"), "permanent");
        assert_eq!(x("user.finalize_transaction_id"), "tx-42");
        assert!(getx(&on_mount, "user.something_else").is_err());

        // Durable at the 201: the daemon killed at once keeps it.
        let mut api = api;
        api.m.kill();
        api.m.mount();
        api.wait();
        assert_eq!(std::fs::read(&on_mount).unwrap(), body);
        assert_eq!(x("user.artstore.file_id"), id);
        assert_eq!(x("user.artstore.description"), "quarterly report");

        // Changed on the mount, downloaded by id through the original route.
        std::fs::write(&on_mount, b"changed on the mount").unwrap();
        let r = api
            .client
            .get(api.url(&format!("/api/v1/files/{id}/download")))
            .bearer_auth(token("query", Role::ReadOnly))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let cd = r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(cd.contains("filename=\"report.txt\""), "{cd}");
        assert_eq!(r.bytes().unwrap().as_ref(), b"changed on the mount");
    });
}

#[test]
fn a_chosen_id_is_kept_once_and_bad_forms_are_422() {
    common::engine::every_engine(|| {
        let api = Api::start(&["--mode", "rw"]);
        // The Ingester's finalize step keeps the id it had on another element
        // (any UUID version, any case).
        let id = "0190F5A2-7C1D-7B3E-8F00-123456789ABC";
        let with_id = |name: &str| {
            Form::new()
                .text("file_id", id)
                .part("file", file(b"payload", name))
        };
        let r = post(&api, Role::User, with_id("a.bin"));
        assert_eq!(r.status(), 201);
        let v = json(r);
        assert_eq!(v["file_id"], id.to_lowercase());
        let r = api
            .client
            .get(api.url(&format!("/api/v1/files/{}", id.to_lowercase())))
            .bearer_auth(token("query", Role::ReadOnly))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let before = stored(&api);
        assert_eq!(before.len(), 1);

        // The same id again, under another name: 409, nothing stored.
        let d = assert_detail(post(&api, Role::User, with_id("b.bin")), 409);
        assert!(d.contains("exists"), "{d}");

        // Racing finalize copies of one new id: exactly one wins.
        let racing = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let tasks: Vec<_> = (0..4)
                .map(|i| {
                    let api = &api;
                    s.spawn(move || {
                        let form = Form::new()
                            .text("file_id", racing)
                            .part("file", file(b"race", &format!("race{i}.bin")));
                        post(api, Role::User, form).status().as_u16()
                    })
                })
                .collect();
            tasks.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [201, 409, 409, 409], "{statuses:?}");
        let before = stored(&api);
        assert_eq!(before.len(), 2);

        let bad = Form::new()
            .text("file_id", "not-a-uuid")
            .part("file", file(b"x", "c.bin"));
        assert_detail(post(&api, Role::User, bad), 422);
        let bad = Form::new()
            .text("retention_policy", "forever")
            .part("file", file(b"x", "c.bin"));
        assert_detail(post(&api, Role::User, bad), 422);
        let no_file = Form::new().text("description", "d");
        assert_detail(post(&api, Role::User, no_file), 422);
        // A field the upload uses after the file came too late: refused,
        // and the content already sent is not published.
        let late = Form::new()
            .part("file", file(b"late", "d.bin"))
            .text("description", "too late");
        assert_detail(post(&api, Role::User, late), 422);
        let r = api
            .client
            .post(api.url("/api/v1/files/upload"))
            .bearer_auth(token("ingester", Role::User))
            .body("not a form")
            .send()
            .unwrap();
        assert_detail(r, 422);
        assert_eq!(stored(&api), before, "no refused upload left anything");
    });
}

/// An upload as an async client sends it: the request head, then the
/// multipart body in `chunks` pieces of `chunk` bytes with a pause after
/// each, reading nothing until all is sent (as httpx's AsyncClient does),
/// then the response. `Err` when the connection broke instead (what an
/// early answer without draining causes).
struct Streamed<'a> {
    addr: &'a str,
    path: &'a str,
    method: &'a str,
    token: Option<String>,
    filename: &'a str,
    chunks: usize,
    chunk: usize,
    pause: std::time::Duration,
}

impl Streamed<'_> {
    fn upload<'a>(addr: &'a str, token: Option<String>, chunks: usize) -> Streamed<'a> {
        Streamed {
            addr,
            path: "/api/v1/files/upload",
            method: "POST",
            token,
            filename: "big.bin",
            chunks,
            chunk: 64 << 10,
            pause: std::time::Duration::from_millis(2),
        }
    }

    fn send(&self) -> std::io::Result<(u16, String)> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(self.send_async())
    }

    async fn send_async(&self) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let boundary = "artfs-test-boundary";
        let open = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n\
             streamed\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
             filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            self.filename
        );
        let close = format!("\r\n--{boundary}--\r\n");
        let length = open.len() + self.chunks * self.chunk + close.len();
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{} {} HTTP/1.1\r\nHost: x\r\n{auth}\
             Content-Type: multipart/form-data; boundary={boundary}\r\n\
             Content-Length: {length}\r\nConnection: close\r\n\r\n",
            self.method, self.path
        );
        let mut s = tokio::net::TcpStream::connect(self.addr).await?;
        s.write_all(head.as_bytes()).await?;
        s.write_all(open.as_bytes()).await?;
        let piece = vec![b'z'; self.chunk];
        for _ in 0..self.chunks {
            s.write_all(&piece).await?;
            tokio::time::sleep(self.pause).await;
        }
        s.write_all(close.as_bytes()).await?;
        let mut out = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(60), s.read_to_end(&mut out))
            .await
            .map_err(|_| std::io::Error::other("no answer in 60 s"))??;
        Ok(parse_response(&out))
    }
}

/// The status a streaming client read, failing the test on a broken
/// connection.
fn status_of(r: std::io::Result<(u16, String)>) -> (u16, String) {
    r.unwrap_or_else(|e| panic!("the connection broke instead of an answer: {e}"))
}

#[test]
fn refusals_reach_a_client_that_is_still_sending() {
    common::engine::every_engine(|| {
        let max = (4 << 20).to_string();
        let api = Api::start(&["--mode", "rw", "--capacity", "2M", "--api-max-upload", &max]);
        let addr = api.addr.as_str();
        // 4 MiB sent in 64 KiB pieces: the answer is decided long before.
        let user = || Some(token("ingester", Role::User));

        // Declared larger than --api-max-upload (and the form's slack).
        let (status, text) = status_of(Streamed::upload(addr, user(), 96).send());
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("\"detail\""), "{text}");

        // No token: the guard answers before the handler runs.
        let (status, text) = status_of(Streamed::upload(addr, None, 64).send());
        assert_eq!(status, 401, "{text}");
        assert!(text.contains("\"detail\""), "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{text}"
        );
        // A client that waits for `100 Continue` before sending is told
        // at once, and no 100 comes first: it never has to send the body.
        let started = std::time::Instant::now();
        let (status, text) = common::api::raw_http(
            addr,
            b"POST /api/v1/files/upload HTTP/1.1\r\nHost: x\r\n\
              Content-Type: multipart/form-data; boundary=b\r\n\
              Content-Length: 100000000\r\nExpect: 100-continue\r\n\r\n",
        );
        assert_eq!(status, 401, "{text}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "waited for a body that was not coming"
        );
        // A route that does not exist, and a method the route lacks.
        let mut s = Streamed::upload(addr, user(), 32);
        s.path = "/api/v1/nowhere";
        assert_eq!(status_of(s.send()).0, 404);
        let mut s = Streamed::upload(addr, user(), 32);
        s.method = "PUT";
        assert_eq!(status_of(s.send()).0, 405);
        // The role may not write.
        let s = Streamed::upload(addr, Some(token("query", Role::ReadOnly)), 64);
        let (status, text) = status_of(s.send());
        assert_eq!(status, 403, "{text}");
        assert!(text.contains("\"detail\""), "{text}");
        // Over capacity: 507, which the Ingester answers by failing over;
        // nothing of it stays.
        let (status, text) = status_of(Streamed::upload(addr, user(), 64).send());
        assert_eq!(status, 507, "{text}");
        assert!(text.contains("\"detail\""), "{text}");
        assert!(stored(&api).is_empty(), "nothing of a refused upload stays");
        // What fits is stored, whole.
        let (status, text) = status_of(Streamed::upload(addr, user(), 16).send());
        assert_eq!(status, 201, "{text}");
        let files = stored(&api);
        assert_eq!(files.len(), 1);
        assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), 16 << 16);

        // Read-only mode: every upload is 403, still readable.
        let r = api
            .client
            .post(api.url("/api/v1/mode"))
            .bearer_auth(token("root", Role::Admin))
            .json(&serde_json::json!({ "mode": "ro" }))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let (status, text) = status_of(Streamed::upload(addr, user(), 32).send());
        assert_eq!(status, 403, "{text}");
        let form = Form::new().part("file", file(b"x", "ro.txt"));
        assert_detail(post(&api, Role::User, form), 403);
        assert_eq!(stored(&api).len(), 1);
    });
}

/// The Ingester's way with a full element: stream the upload to the first
/// element, and on 507 send it to the next.
fn upload_with_failover(elements: &[&Api], chunks: usize) -> (usize, Value) {
    for (i, api) in elements.iter().enumerate() {
        let s = Streamed::upload(&api.addr, Some(token("ingester", Role::User)), chunks);
        let (status, text) = status_of(s.send());
        match status {
            201 => {
                let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
                return (i, serde_json::from_str(body).unwrap());
            }
            507 => continue,
            other => panic!("element {i} answered {other}: {text}"),
        }
    }
    panic!("every element is full");
}

#[test]
fn an_uploader_fails_over_to_the_next_element_on_507() {
    common::engine::every_engine(|| {
        let full = Api::start(&["--mode", "rw", "--capacity", "1M"]);
        let roomy = Api::start(&["--mode", "rw"]);
        // 20 MiB: more than the first element holds, and more than any
        // refusal is drained by the layer alone (the upload drains it).
        let (at, reply) = upload_with_failover(&[&full, &roomy], 320);
        assert_eq!(at, 1, "{reply}");
        assert_eq!(reply["file_size"], 320 << 16);
        assert!(stored(&full).is_empty());
        let on_second = stored(&roomy);
        assert_eq!(on_second.len(), 1);
        let id = reply["file_id"].as_str().unwrap();
        assert_eq!(
            getx(&on_second[0], "user.artstore.file_id").unwrap(),
            id.as_bytes()
        );
        // What fits still goes to the first.
        let (at, _) = upload_with_failover(&[&full, &roomy], 4);
        assert_eq!(at, 0);
        assert_eq!(stored(&full).len(), 1);
    });
}

#[test]
fn odd_filenames_are_stored_under_safe_names_and_kept_as_given() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        let long = "ж".repeat(200) + ".txt";
        let cases: [(&str, &str); 7] = [
            ("отчёт за год.pdf", "отчёт за год_"),
            ("with spaces .txt", "with spaces _"),
            ("..", "_._"),
            ("../../etc/passwd", "passwd_"),
            ("dir\\sub\\x.tar.gz", "x.tar_"),
            (".hidden", "_hidden_"),
            (&long, "жжж"),
        ];
        for (original, stem_start) in cases {
            let r = post(
                &api,
                Role::User,
                Form::new().part("file", file(b"c", original)),
            );
            assert_eq!(r.status(), 201, "{original}");
            let v = json(r);
            assert_eq!(v["original_filename"], original);
            let id = v["file_id"].as_str().unwrap();
            let path = v["path"].as_str().unwrap();
            let name = path.rsplit('/').next().unwrap();
            assert!(name.starts_with(stem_start), "{original} -> {name}");
            assert!(name.contains(id), "{name}");
            assert!(name.len() <= 255, "{} bytes: {name}", name.len());
            assert!(!name.starts_with('.') && name != "..", "{name}");
            assert!(path.starts_with("/uploads/"), "{path}");
            // It is where the reply says, with the name as given kept.
            let on_mount = api.m.path(path);
            assert_eq!(std::fs::read(&on_mount).unwrap(), b"c");
            assert_eq!(
                getx(&on_mount, "user.artstore.original_filename").unwrap(),
                original.as_bytes()
            );
        }
        assert_eq!(stored(&api).len(), cases.len());
        // The long one kept its extension and was cut to fit.
        let v = json(post(
            &api,
            Role::User,
            Form::new().part("file", file(b"c", &long)),
        ));
        let name = v["path"].as_str().unwrap().rsplit('/').next().unwrap();
        assert!(name.ends_with(".txt") && name.len() <= 255, "{name}");
        assert!(name.len() > 240, "only as short as needed: {name}");
    });
}

/// A fresh element takes the original's uploads with the daemon's default
/// API identity (not root): `/uploads` is made once, owned by that
/// identity. One an operator made is left as it is.
#[test]
fn a_fresh_element_takes_uploads_with_the_default_identity() {
    common::engine::every_engine(|| {
        let api = Api::with_default_identity(&[]);
        let form = Form::new().part("file", file(b"first", "first.txt"));
        let r = post(&api, Role::User, form);
        assert_eq!(r.status(), 201, "{:?}", r.text());
        let uploads = fs::metadata(api.m.path("uploads")).unwrap();
        let day = stored(&api);
        assert_eq!(day.len(), 1, "{day:?}");
        let file_meta = fs::metadata(&day[0]).unwrap();
        assert_ne!(uploads.uid(), 0, "made for the API's identity, not root");
        assert_eq!(
            (uploads.uid(), uploads.gid()),
            (file_meta.uid(), file_meta.gid())
        );
        // An operator's own /uploads (root's, 0755) is not taken over.
        let api = Api::with_default_identity(&[]);
        fs::create_dir(api.m.path("uploads")).unwrap();
        let form = Form::new().part("file", file(b"second", "second.txt"));
        assert_detail(post(&api, Role::User, form), 403);
        assert_eq!(fs::metadata(api.m.path("uploads")).unwrap().uid(), 0);
    });
}
