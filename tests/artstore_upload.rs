//! The original element's upload, `POST /api/v1/files/upload`, as its
//! Ingester sends it (a multipart form, fields before the file), against a
//! live mount: the file on the mount with its archive attributes, its id
//! kept when the caller chose it, and the refusals the Ingester reacts to
//! (409, 422, 403, 507) answered as `{"detail": ...}` and readable by a
//! client still sending its body.

mod common;

use std::io::Write;
use std::path::PathBuf;

use artfs::auth::Role;
use common::api::{json, read_response, token, Api};
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

    // Changed on the mount, downloaded by id through the original route.
    std::fs::write(&on_mount, b"changed on the mount").unwrap();
    let r = api
        .client
        .get(api.url(&format!("/api/v1/files/{id}/download")))
        .bearer_auth(token("query", Role::ReadOnly))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let cd = r.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(cd.contains("filename=\"report.txt\""), "{cd}");
    assert_eq!(r.bytes().unwrap().as_ref(), b"changed on the mount");
}

#[test]
fn a_chosen_id_is_kept_once_and_bad_forms_are_422() {
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
}

/// A request with a multipart body of `size` bytes of content, sent whole
/// on a raw socket, as an async client streams it without waiting for an
/// early answer: the status must still be readable.
fn raw_upload(api: &Api, role: Role, size: usize) -> (u16, String) {
    let boundary = "artfs-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend(std::iter::repeat_n(b'z', size));
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let head = format!(
        "POST /api/v1/files/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        token("ingester", role),
        body.len()
    );
    let mut s = std::net::TcpStream::connect(&api.addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // Without the server reading it, this fails (reset) after the socket
    // buffers fill.
    s.write_all(&body)
        .expect("the server reads the body before answering");
    read_response(&mut s)
}

#[test]
fn refusals_reach_a_client_that_is_still_sending() {
    let api = Api::start(&["--mode", "rw", "--capacity", "2M"]);
    // The role may not write: 403, after the body was read.
    let (status, text) = raw_upload(&api, Role::ReadOnly, 8 << 20);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("\"detail\""), "{text}");
    // Over capacity: 507, which the Ingester answers by failing over.
    let (status, text) = raw_upload(&api, Role::User, 8 << 20);
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("\"detail\""), "{text}");
    assert!(stored(&api).is_empty(), "nothing of a refused upload stays");
    // What fits is stored.
    let (status, text) = raw_upload(&api, Role::User, 1 << 20);
    assert_eq!(status, 201, "{text}");
    assert_eq!(stored(&api).len(), 1);

    // Read-only mode: every upload is 403.
    let r = api
        .client
        .post(api.url("/api/v1/mode"))
        .bearer_auth(token("root", Role::Admin))
        .json(&serde_json::json!({ "mode": "ro" }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let form = Form::new().part("file", file(b"x", "ro.txt"));
    assert_detail(post(&api, Role::User, form), 403);
    assert_eq!(stored(&api).len(), 1);
}
