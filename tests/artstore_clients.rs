//! The original ArtStore element's clients against artfs: its Admin
//! Module's discovery and role names, its Ingester's capacity monitor
//! (both anonymous), its Query module's downloader by id, a lister, each
//! against a live mount on every metadata engine, checking the wire shapes
//! REFERENCE.md records and that anonymous callers see nothing more.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use artfs::auth::Role;
use common::api::{assert_error, json, token, token_with_claims, Api};
use common::engine::every_engine;
use reqwest::blocking::Response;
use serde_json::{json as j, Value};

/// Keys of a JSON object, sorted.
fn keys(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(k: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[test]
fn discovery_and_capacity_polls_need_no_token_and_see_only_the_originals_fields() {
    every_engine(discovery_and_capacity_polls);
}

fn discovery_and_capacity_polls() {
    let api = Api::start(&["--capacity", "10M"]);
    std::fs::write(api.m.path("a.bin"), vec![7u8; 1000]).unwrap();

    let root = json(api.client.get(api.url("/")).send().unwrap());
    assert_eq!(root["service"], "ArtStore Storage Element");
    assert_eq!(root["mode"], "edit");
    assert_eq!(root["storage_type"], "local");
    assert_eq!(root["status"], "operational");
    assert!(root["version"].is_string());

    let info = json(api.client.get(api.url("/api/v1/info")).send().unwrap());
    assert_eq!(
        keys(&info),
        sorted(&[
            "name",
            "display_name",
            "version",
            "mode",
            "storage_type",
            "base_path",
            "capacity_bytes",
            "used_bytes",
            "file_count",
            "status",
            "priority",
            "element_id",
            "timestamp",
        ]),
        "anonymous discovery sees the original's fields, nothing more"
    );
    assert_eq!(info["priority"], 100);
    assert_eq!(info["status"], "operational");
    assert_eq!(info["capacity_bytes"], 10 << 20);
    assert_eq!(info["file_count"], 1);
    assert_eq!(info["used_bytes"], 1000);
    assert_eq!(info["base_path"], api.m.backing.to_str().unwrap());
    // Times are UTC, whatever TZ the daemon runs under.
    assert!(info["timestamp"].as_str().unwrap().ends_with('Z'), "{info}");

    let cap = json(api.client.get(api.url("/api/v1/capacity")).send().unwrap());
    assert_eq!(
        keys(&cap),
        sorted(&[
            "storage_id",
            "mode",
            "capacity",
            "health",
            "last_update",
            "backend",
            "location",
        ])
    );
    assert_eq!(
        keys(&cap["capacity"]),
        sorted(&["total", "used", "available", "percent_used"])
    );
    assert_eq!(cap["capacity"]["total"], 10 << 20);
    assert_eq!(cap["capacity"]["used"], 1000);
    // What is left, as statfs counts it (whole blocks).
    let avail = cap["capacity"]["available"].as_u64().unwrap();
    assert!(
        ((10 << 20) - 8192..=(10 << 20) - 1000).contains(&avail),
        "{avail}"
    );
    assert_eq!(cap["health"], "healthy");
    assert_eq!(cap["backend"], "local");
    assert_eq!(cap["storage_id"], info["element_id"]);

    // With a token: artfs's figures beside the original's.
    let t = token("alice", Role::ReadOnly);
    let info = json(
        api.client
            .get(api.url("/api/v1/info"))
            .bearer_auth(&t)
            .send()
            .unwrap(),
    );
    assert_eq!(info["file_count"], 1);
    assert!(info["store_id"].is_string());
    assert!(info["unhashed_files"].is_u64());
    let cap = json(
        api.client
            .get(api.url("/api/v1/capacity"))
            .bearer_auth(&t)
            .send()
            .unwrap(),
    );
    assert_eq!(cap["capacity_bytes"], 10 << 20);
    assert_eq!(cap["level"], "ok");

    // A bad token is refused, never read as "no token".
    let r = api
        .client
        .get(api.url("/api/v1/info"))
        .bearer_auth("not.a.token")
        .send()
        .unwrap();
    assert_error(r, 401, "invalid_token");
    // The rest of the API still needs one.
    let r = api.client.get(api.url("/api/v1/fs/")).send().unwrap();
    assert_error(r, 401, "unauthorized");
}

#[test]
fn the_admin_modules_role_names_mean_what_they_meant() {
    every_engine(role_names);
}

fn role_names() {
    let api = Api::start(&[]);
    let put = |role: Role, name: &str| {
        api.client
            .put(api.url(&format!("/api/v1/fs/{name}")))
            .bearer_auth(token("svc", role))
            .body("x")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let get = |role: Role, path: &str| {
        api.client
            .get(api.url(path))
            .bearer_auth(token("svc", role))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(put(Role::User, "u.txt"), 201);
    // readonly: reads metadata and files, writes nothing.
    assert_eq!(get(Role::ReadOnly, "/api/v1/fs/u.txt"), 200);
    assert_eq!(get(Role::ReadOnly, "/api/v1/meta/u.txt"), 200);
    assert_eq!(put(Role::ReadOnly, "r.txt"), 403);
    // auditor: reads, and reads maintenance results; starts nothing.
    assert_eq!(get(Role::Auditor, "/api/v1/fs/u.txt"), 200);
    assert_eq!(put(Role::Auditor, "a.txt"), 403);
    assert_eq!(
        get(Role::Auditor, "/api/v1/maintenance/fsck"),
        404,
        "no job yet"
    );
    assert_eq!(get(Role::User, "/api/v1/maintenance/fsck"), 403);
    let r = api
        .client
        .post(api.url("/api/v1/maintenance/fsck"))
        .bearer_auth(token("svc", Role::Auditor))
        .send()
        .unwrap();
    assert_error(r, 403, "forbidden");
    // super_admin is an administrator.
    let sa = common::api::token_with_claims(serde_json::json!({ "role": "super_admin" }));
    let r = api
        .client
        .post(api.url("/api/v1/maintenance/fsck"))
        .bearer_auth(&sa)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    // An unknown role still gets nothing.
    let odd = common::api::token_with_claims(serde_json::json!({ "role": "superuser" }));
    let r = api
        .client
        .get(api.url("/api/v1/fs/u.txt"))
        .bearer_auth(&odd)
        .send()
        .unwrap();
    assert_error(r, 403, "forbidden");
}

/// An original error document: `detail` as FastAPI put it, beside artfs's
/// `error` and `message`.
fn assert_detail(r: Response, status: u16, code: &str) -> Value {
    let v = assert_error(r, status, code);
    assert!(!v["detail"].is_null(), "{v}");
    v
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The name the daemon records for files the test process makes on the
/// mount: its user's name, else its uid.
fn local_user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

#[test]
fn a_downloader_by_id_sees_the_originals_fields_and_errors() {
    every_engine(downloader_by_id);
}

fn downloader_by_id() {
    let api = Api::start(&[]);
    std::fs::create_dir(api.m.path("reports")).unwrap();
    // The Admin Module's token names its holder: that name is the creator.
    let ivanov = token_with_claims(j!({ "sub": "u-1001", "name": "ivanov", "role": "user" }));
    let body = b"quarterly figures\n";
    let r = api
        .client
        .put(api.url("/api/v1/fs/reports/q1.txt"))
        .bearer_auth(&ivanov)
        .header("X-Artfs-Description", "Q1")
        .body(body.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = json(r)["file_id"].as_str().unwrap().to_string();

    let get = |path: &str, t: &str| api.client.get(api.url(path)).bearer_auth(t).send().unwrap();
    let meta = json(get(&format!("/api/v1/files/{id}"), &ivanov));
    // Every field of the original's FileMetadataResponse is there.
    for k in [
        "file_id",
        "original_filename",
        "storage_filename",
        "file_size",
        "content_type",
        "created_at",
        "created_by_username",
        "created_by_fullname",
        "description",
        "version",
        "storage_path",
        "checksum",
        "cache_updated_at",
        "cache_ttl_hours",
        "cache_expired",
    ] {
        assert!(meta.get(k).is_some(), "{k} missing: {meta}");
    }
    assert_eq!(meta["file_id"], id.as_str());
    assert_eq!(meta["original_filename"], "q1.txt");
    assert_eq!(meta["storage_filename"], "q1.txt");
    assert_eq!(meta["storage_path"], "reports/");
    assert_eq!(meta["created_by_username"], "ivanov");
    assert_eq!(meta["created_by"], "ivanov");
    assert!(meta["created_by_fullname"].is_null());
    assert_eq!(meta["file_size"], body.len());
    assert_eq!(meta["checksum"], sha256_hex(body));
    assert_eq!(meta["content_type"], "text/plain");
    assert_eq!(meta["description"], "Q1");
    assert!(meta["version"].is_null());
    assert_eq!(meta["cache_ttl_hours"], 24);
    assert_eq!(meta["cache_expired"], false);
    assert!(meta["cache_updated_at"].as_str().unwrap().ends_with('Z'));
    assert!(meta["created_at"].as_str().unwrap().ends_with('Z'));

    // A token without a name: its subject.
    let r = api
        .client
        .put(api.url("/api/v1/fs/anon.txt"))
        .bearer_auth(token("svc-ingester", Role::User))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(json(r)["created_by_username"], "svc-ingester");

    // A file made on the mount: its creator is the local user, its place
    // the mount's tree.
    std::fs::write(api.m.path("reports/local.bin"), b"local").unwrap();
    let local_id = String::from_utf8(
        common::getx(&api.m.path("reports/local.bin"), "user.artstore.file_id").unwrap(),
    )
    .unwrap();
    let local = json(get(&format!("/api/v1/files/{local_id}"), &ivanov));
    assert_eq!(local["created_by_username"], local_user());
    assert_eq!(local["storage_path"], "reports/");
    assert_eq!(local["storage_filename"], "local.bin");

    // The downloader: content and the original filename.
    let r = get(&format!("/api/v1/files/{id}/download"), &ivanov);
    assert_eq!(r.status(), 200);
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cd.contains("filename=\"q1.txt\""), "{cd}");
    assert_eq!(r.bytes().unwrap().as_ref(), body);
    // Any spelling of the id names the file (upper case, no hyphens).
    let upper = id.to_uppercase();
    assert_eq!(
        json(get(&format!("/api/v1/files/{upper}"), &ivanov))["file_id"],
        id.as_str()
    );
    let simple = id.replace('-', "");
    assert_eq!(
        get(&format!("/api/v1/files/{simple}/download"), &ivanov).status(),
        200
    );

    // PATCH as the original: description, version, metadata; the mount
    // sees it at once, in the archive's attributes.
    let r = api
        .client
        .patch(api.url(&format!("/api/v1/files/{id}")))
        .bearer_auth(&ivanov)
        .json(&j!({ "description": "Q1, final", "version": "2.0", "metadata": { "dept": "fin" } }))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let patched = json(r);
    assert_eq!(patched["description"], "Q1, final");
    assert_eq!(patched["version"], "2.0");
    assert_eq!(patched["custom_attributes"]["dept"], "fin");
    assert_eq!(patched["storage_path"], "reports/");
    let on_mount = |name: &str| common::getx(&api.m.path("reports/q1.txt"), name).unwrap();
    assert_eq!(on_mount("user.artstore.description"), b"Q1, final");
    assert_eq!(on_mount("user.artstore.version"), b"2.0");
    assert_eq!(on_mount("user.dept"), b"fin");
    // As the original's request model read it, `null` is "not given":
    // nothing is removed (artfs's own /api/v1/meta route removes).
    let r = api
        .client
        .patch(api.url(&format!("/api/v1/files/{id}")))
        .bearer_auth(&ivanov)
        .json(
            &j!({ "description": "Q1, final (2)", "version": null, "metadata": { "dept": null } }),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(on_mount("user.artstore.description"), b"Q1, final (2)");
    assert_eq!(on_mount("user.artstore.version"), b"2.0");
    assert_eq!(on_mount("user.dept"), b"fin");
    // A body that is no document: 422; a value the rules refuse: 400.
    let patch = |body: &str| {
        api.client
            .patch(api.url(&format!("/api/v1/files/{id}")))
            .bearer_auth(&ivanov)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let v = assert_detail(patch("{not json"), 422, "unprocessable_entity");
    assert_eq!(v["detail"][0]["loc"], j!(["body"]), "{v}");
    let v = assert_detail(patch(r#"{"content_type": "plain"}"#), 400, "bad_request");
    assert_eq!(v["detail"], v["message"]);
    assert_eq!(
        String::from_utf8(on_mount("user.artstore.description")).unwrap(),
        "Q1, final (2)",
        "a refused PATCH changes nothing"
    );

    // Errors as FastAPI answered them, on every by-id route.
    for path in [
        "/api/v1/files/not-a-uuid",
        "/api/v1/files/not-a-uuid/download",
    ] {
        let v = assert_detail(get(path, &ivanov), 422, "unprocessable_entity");
        assert_eq!(v["detail"][0]["loc"], j!(["path", "file_id"]), "{v}");
        assert_eq!(v["detail"][0]["type"], "uuid_parsing", "{v}");
    }
    // A well-formed id of either version that names nothing: 404.
    for missing in [
        "3f2b8c1e-9d4a-4e6b-8f0a-1c2d3e4f5a6b", // v4, as the original made them
        "0190aaaa-0000-7000-8000-0000000000ff", // v7, as artfs makes them
    ] {
        let v = assert_detail(
            get(&format!("/api/v1/files/{missing}"), &ivanov),
            404,
            "not_found",
        );
        assert_eq!(v["detail"], format!("File {missing} not found"));
        assert_detail(
            get(&format!("/api/v1/files/{missing}/download"), &ivanov),
            404,
            "not_found",
        );
    }
    // A method the route lacks: the original's shape too.
    let r = api
        .client
        .post(api.url(&format!("/api/v1/files/{id}")))
        .bearer_auth(&ivanov)
        .send()
        .unwrap();
    assert_detail(r, 405, "method_not_allowed");
    // No token: 401, in the original's shape too.
    let r = api
        .client
        .get(api.url(&format!("/api/v1/files/{id}")))
        .send()
        .unwrap();
    assert_detail(r, 401, "unauthorized");
    // artfs's own routes keep their shape.
    let v = assert_error(get("/api/v1/fs/missing.txt", &ivanov), 404, "not_found");
    assert!(v.get("detail").is_none(), "{v}");
    let v = assert_error(get("/api/v1/meta/missing.txt", &ivanov), 404, "not_found");
    assert!(v.get("detail").is_none(), "{v}");
}

/// One page of the original's listing as `t` sees it.
fn list(api: &Api, t: &str, query: &str) -> Value {
    let r = api
        .client
        .get(api.url(&format!("/api/v1/files/{query}")))
        .bearer_auth(t)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    json(r)
}

fn ids(page: &Value) -> Vec<String> {
    page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_lister_pages_newest_first_and_sees_only_what_it_may_read() {
    every_engine(lister);
}

fn lister() {
    // user tokens act as nobody; admin tokens as root.
    let api = Api::start(&["--api-uid", "65534", "--api-gid", "65534"]);
    let user = token("lister", Role::ReadOnly);
    let admin = token("root", Role::Admin);
    let file_id = |rel: &str| {
        String::from_utf8(common::getx(&api.m.path(rel), "user.artstore.file_id").unwrap()).unwrap()
    };
    std::fs::create_dir(api.m.path("pub")).unwrap();
    std::fs::create_dir(api.m.path("private")).unwrap();
    // The oldest: a file with two names, one of them where nobody cannot
    // search (below): listed once, by the name the caller reaches.
    std::fs::write(api.m.path("private/both.txt"), b"b").unwrap();
    std::fs::hard_link(api.m.path("private/both.txt"), api.m.path("pub/both.txt")).unwrap();
    let both = file_id("pub/both.txt");
    std::thread::sleep(Duration::from_millis(2));
    // Ten readable files, made one after another.
    let mut made = Vec::new();
    for n in 0..10 {
        let rel = format!("pub/f{n:02}.txt");
        std::fs::write(api.m.path(&rel), format!("file {n}")).unwrap();
        made.push(file_id(&rel));
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut newest_first: Vec<String> = made.iter().rev().cloned().collect();
    newest_first.push(both.clone());
    // Hidden from nobody: a file in a directory it cannot search, and one
    // it cannot read. Seen by admin.
    std::fs::write(api.m.path("private/secret.txt"), b"s").unwrap();
    std::fs::set_permissions(
        api.m.path("private"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    std::fs::write(api.m.path("pub/mine.txt"), b"m").unwrap();
    std::fs::set_permissions(
        api.m.path("pub/mine.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let hidden = [file_id("private/secret.txt"), file_id("pub/mine.txt")];
    // Directories and symlinks are not files.
    std::os::unix::fs::symlink("f00.txt", api.m.path("pub/link")).unwrap();

    // The lister with paging: skip and limit, a stable order, a total.
    let whole = list(&api, &user, "?limit=100");
    assert_eq!(whole["total"], 11, "{whole}");
    assert_eq!(ids(&whole), newest_first);
    let mut paged = Vec::new();
    for skip in (0..12).step_by(3) {
        let page = list(&api, &user, &format!("?skip={skip}&limit=3"));
        assert_eq!(page["total"], 11, "every page counts the same");
        assert!(page["files"].as_array().unwrap().len() <= 3);
        paged.extend(ids(&page));
    }
    assert_eq!(paged, newest_first, "pages neither skip nor repeat");
    // Each item is the original's document, placed where the caller
    // reaches it.
    let first = &whole["files"][0];
    assert_eq!(first["storage_path"], "pub/");
    assert_eq!(first["storage_filename"], "f09.txt");
    assert_eq!(first["path"], "/pub/f09.txt");
    assert_eq!(first["checksum"], sha256_hex(b"file 9"));
    assert_eq!(first["cache_expired"], false);
    let last = &whole["files"][10];
    assert_eq!(last["file_id"], both.as_str());
    assert_eq!(last["path"], "/pub/both.txt");
    // Without the trailing slash, and with the defaults, the same.
    let r = api
        .client
        .get(api.url("/api/v1/files"))
        .bearer_auth(&user)
        .send()
        .unwrap();
    assert_eq!(ids(&json(r)), newest_first);
    // Past the end: an empty page, the same total.
    let end = list(&api, &user, "?skip=50");
    assert_eq!(end["total"], 11);
    assert_eq!(ids(&end), Vec::<String>::new());
    assert_eq!(list(&api, &user, "?limit=0")["total"], 11);

    // Admin reaches everything.
    let all = list(&api, &admin, "");
    assert_eq!(all["total"], 13);
    let all_ids = ids(&all);
    assert_eq!(all_ids.iter().filter(|i| **i == both).count(), 1);
    // Root may search `private`: the recorded parent's name comes first.
    assert_eq!(all["files"][12]["path"], "/private/both.txt");
    assert!(hidden.iter().all(|h| all_ids.contains(h)), "{all}");
    assert!(hidden.iter().all(|h| !ids(&whole).contains(h)));
    // A deleted file (in the trash) is listed to no one.
    let r = api
        .client
        .delete(api.url(&format!("/api/v1/files/{}", made[0])))
        .bearer_auth(&admin)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let after = list(&api, &admin, "");
    assert_eq!(after["total"], 12);
    assert!(!ids(&after).contains(&made[0]));
    assert_eq!(list(&api, &user, "")["total"], 10);

    // The limit is cut to 100, as the original did.
    for n in 0..95 {
        std::fs::write(api.m.path(&format!("pub/g{n:03}")), b"").unwrap();
    }
    let big = list(&api, &user, "?limit=1000");
    assert_eq!(big["total"], 105);
    assert_eq!(big["files"].as_array().unwrap().len(), 100);
    assert_eq!(
        list(&api, &user, "")["files"].as_array().unwrap().len(),
        100
    );

    // Bad values: FastAPI's 422, naming the parameter.
    for (q, name) in [
        ("?limit=abc", "limit"),
        ("?limit=-1", "limit"),
        ("?skip=-5", "skip"),
        ("?skip=1.5", "skip"),
        ("?limit=99999999999999999999", "limit"),
    ] {
        let r = api
            .client
            .get(api.url(&format!("/api/v1/files/{q}")))
            .bearer_auth(&user)
            .send()
            .unwrap();
        let v = assert_detail(r, 422, "unprocessable_entity");
        assert_eq!(v["detail"][0]["loc"], j!(["query", name]), "{q}: {v}");
    }
    // No token: 401.
    let r = api.client.get(api.url("/api/v1/files/")).send().unwrap();
    assert_detail(r, 401, "unauthorized");
}

#[test]
fn element_knobs_show_in_discovery_and_capacity() {
    every_engine(element_knobs);
}

fn element_knobs() {
    let api = Api::start(&[
        "--api-element-id",
        "se-07",
        "--api-display-name",
        "Склад 7",
        "--api-priority",
        "5",
        "--api-location",
        "dc-north",
    ]);
    let info = json(api.client.get(api.url("/api/v1/info")).send().unwrap());
    assert_eq!(info["element_id"], "se-07");
    assert_eq!(info["display_name"], "Склад 7");
    assert_eq!(info["priority"], 5);
    assert_eq!(info["name"], "artfs");
    let cap = json(api.client.get(api.url("/api/v1/capacity")).send().unwrap());
    assert_eq!(cap["storage_id"], "se-07");
    assert_eq!(cap["location"], "dc-north");
    let root = json(api.client.get(api.url("/")).send().unwrap());
    assert_eq!(root["storage_type"], "local");
}

/// `artfs mount` with the API and `extra`, expected to refuse to start
/// (killed after a minute: one that mounts by mistake fails the test).
fn refused(extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (backing, mnt) = (dir.path().join("b"), dir.path().join("m"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let key = common::api::key().public.to_str().unwrap().to_string();
    let addr = common::api::free_addr();
    let mut child = Command::new(common::bin())
        .arg("mount")
        .arg(&backing)
        .arg(&mnt)
        .args(["--api", addr.as_str(), "--jwt-key", key.as_str()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
            panic!("artfs {extra:?} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{extra:?}");
    assert!(!common::is_mounted(&mnt));
    common::output_text(&out)
}

#[test]
fn bad_element_knobs_are_refused_at_start() {
    let o = refused(&["--api-priority=-3"]);
    assert!(o.contains("--api-priority") && o.contains("outside"), "{o}");
    let o = refused(&["--api-priority", "high"]);
    assert!(o.contains("--api-priority"), "{o}");
    let o = refused(&["--api-element-id", ""]);
    assert!(o.contains("--api-element-id") && o.contains("empty"), "{o}");
    let long = "x".repeat(300);
    let o = refused(&["--api-location", long.as_str()]);
    assert!(o.contains("--api-location") && o.contains("at most"), "{o}");
}
