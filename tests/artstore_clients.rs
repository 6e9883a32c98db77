//! The original ArtStore element's clients against artfs: its Admin
//! Module's discovery and role names, its Ingester's capacity monitor
//! (both anonymous), each against a live mount, checking the wire shapes
//! REFERENCE.md records and that anonymous callers see nothing more.

mod common;

use artfs::auth::Role;
use common::api::{assert_error, json, token, Api};

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
        avail <= (10 << 20) - 1000 && avail >= (10 << 20) - 8192,
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
