//! Issue 12, points 1, 11, 12 and the trash part of 13, against real
//! mounts with real keys and a real HTTP client: a file is reached by id or
//! found by search only when its path could be walked by the caller; the
//! trash is for operator and admin tokens; cursors out of range are 400;
//! HTTP conformance (duplicate Authorization, If-Match, JSON error bodies,
//! the mode route's role check, a trailing slash on a file).

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use artfs::auth::Role;
use common::api::{assert_error, json};
use common::{getx, setx};
use reqwest::blocking::{RequestBuilder, Response};
use serde_json::{json, Value};

// ---------------------------------------------------------------- setup

fn token(sub: &str, role: Role) -> String {
    common::api::token(sub, role)
}

/// The API (every token acting as root unless a test names an identity)
/// and a token of each role.
struct Api {
    api: common::api::Api,
    user: String,
    operator: String,
    admin: String,
}

impl std::ops::Deref for Api {
    type Target = common::api::Api;
    fn deref(&self) -> &common::api::Api {
        &self.api
    }
}

impl Api {
    fn start(extra: &[&str]) -> Api {
        Api {
            api: common::api::Api::start(extra),
            user: token("alice", Role::User),
            operator: token("olga", Role::Operator),
            admin: token("root", Role::Admin),
        }
    }

    fn get(&self, path: &str, tok: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(tok)
            .send()
            .unwrap()
    }

    fn req(&self, method: reqwest::Method, path: &str, tok: &str) -> RequestBuilder {
        self.client.request(method, self.url(path)).bearer_auth(tok)
    }

    /// The first search page (default limit): (paths, next_cursor).
    fn search(&self, q: &str, tok: &str) -> (Vec<String>, Value) {
        self.search_page(q, None, None, tok)
    }

    /// One search page: (paths, next_cursor).
    fn search_page(
        &self,
        q: &str,
        limit: Option<usize>,
        cursor: Option<u64>,
        tok: &str,
    ) -> (Vec<String>, Value) {
        let mut query = vec![("q", q.to_string())];
        if let Some(l) = limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = cursor {
            query.push(("cursor", c.to_string()));
        }
        let r = self
            .client
            .get(self.url("/api/v1/search"))
            .query(&query)
            .bearer_auth(tok)
            .send()
            .unwrap();
        let v = json_ok(r);
        let paths = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["path"].as_str().unwrap().to_string())
            .collect();
        (paths, v["next_cursor"].clone())
    }
}

fn json_ok(r: Response) -> Value {
    assert_eq!(r.status(), 200, "{}", r.url());
    json(r)
}

fn file_id(p: &Path) -> String {
    String::from_utf8(getx(p, "user.artstore.file_id").unwrap()).unwrap()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn describe(p: &Path, text: &str) {
    setx(p, "user.artstore.description", text.as_bytes()).unwrap();
}

/// Every file under `dir` (by path, as `tok`): (path, file_id).
fn walk_api(api: &Api, dir: &str, tok: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.trim_end_matches('/').to_string()];
    while let Some(d) = todo.pop() {
        let v = json_ok(api.get(&format!("/api/v1/fs{d}/"), tok));
        for e in v["entries"].as_array().unwrap() {
            let p = format!("{d}/{}", e["name"].as_str().unwrap());
            if e["kind"] == "directory" || e["kind"] == "dir" {
                todo.push(p);
            } else {
                out.push((p, e["file_id"].as_str().unwrap().to_string()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------- point 1

/// As `--api-uid 65534`: a root-owned 0700 directory hides its files from
/// every door, not only from the path door.
#[test]
fn ids_and_search_obey_the_directory_walk() {
    common::engine::every_engine(|| {
        let api = Api::start(&["--api-uid", "65534", "--api-gid", "65534"]);
        let m = &api.m;
        std::fs::create_dir(m.path("private")).unwrap();
        std::fs::create_dir(m.path("open")).unwrap();
        chmod(&m.path("open"), 0o777);
        std::fs::write(m.path("private/salaries.txt"), b"salary data").unwrap();
        chmod(&m.path("private/salaries.txt"), 0o666);
        describe(&m.path("private/salaries.txt"), "payroll secret");
        std::fs::write(m.path("open/summary.txt"), b"public summary").unwrap();
        chmod(&m.path("open/summary.txt"), 0o666);
        describe(&m.path("open/summary.txt"), "payroll public");
        chmod(&m.path("private"), 0o700);
        let hidden = file_id(&m.path("private/salaries.txt"));
        let shown = file_id(&m.path("open/summary.txt"));

        // The path door refuses (as before).
        assert_error(
            api.get("/api/v1/fs/private/salaries.txt", &api.user),
            403,
            "forbidden",
        );
        // The id door: 404 as for an unknown id, for every method and for
        // each role acting as --api-uid (an admin token acts as root, which
        // reaches it: docs/API.md, "Identity").
        for tok in [&api.user, &api.operator] {
            for path in [
                format!("/api/v1/files/{hidden}"),
                format!("/api/v1/files/{hidden}/download"),
            ] {
                assert_error(api.get(&path, tok), 404, "not_found");
            }
        }
        let r = api.get(&format!("/api/v1/files/{hidden}"), &api.admin);
        assert_eq!(r.status(), 200, "an admin token acts as root");
        let r = api
            .req(
                reqwest::Method::PATCH,
                &format!("/api/v1/files/{hidden}"),
                &api.user,
            )
            .json(&json!({"description": "changed"}))
            .send()
            .unwrap();
        assert_error(r, 404, "not_found");
        assert_eq!(
            getx(&m.path("private/salaries.txt"), "user.artstore.description").unwrap(),
            b"payroll secret"
        );
        let r = api
            .req(
                reqwest::Method::DELETE,
                &format!("/api/v1/files/{hidden}"),
                &api.operator,
            )
            .send()
            .unwrap();
        assert_error(r, 404, "not_found");
        assert_eq!(
            std::fs::read(m.path("private/salaries.txt")).unwrap(),
            b"salary data"
        );

        // Search leaves it out entirely.
        let (paths, _) = api.search("payroll", &api.user);
        assert_eq!(paths, vec!["/open/summary.txt".to_string()]);
        // A query only hidden files match: an empty last page.
        let (paths, next) = api.search("secret", &api.user);
        assert!(paths.is_empty(), "{paths:?}");
        assert!(next.is_null(), "{next}");

        // A reachable file still works by id.
        let v = json_ok(api.get(&format!("/api/v1/files/{shown}"), &api.user));
        assert_eq!(v["file_id"], shown.as_str());
        let r = api.get(&format!("/api/v1/files/{shown}/download"), &api.user);
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), b"public summary");
        let r = api
            .req(
                reqwest::Method::PATCH,
                &format!("/api/v1/files/{shown}"),
                &api.user,
            )
            .json(&json!({"description": "payroll public v2"}))
            .send()
            .unwrap();
        assert_eq!(json_ok(r)["description"], "payroll public v2");

        // Read permission on the file itself still applies once reachable.
        std::fs::write(m.path("open/rootonly.txt"), b"r").unwrap();
        chmod(&m.path("open/rootonly.txt"), 0o600);
        let ro = file_id(&m.path("open/rootonly.txt"));
        assert_error(
            api.get(&format!("/api/v1/files/{ro}/download"), &api.user),
            403,
            "forbidden",
        );
        assert_error(
            api.get(&format!("/api/v1/files/{ro}"), &api.user),
            403,
            "forbidden",
        );

        // Unlocked, the same id is served: the rule is the walk, not the id.
        chmod(&m.path("private"), 0o755);
        let r = api.get(&format!("/api/v1/files/{hidden}/download"), &api.user);
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), b"salary data");
        let (paths, _) = api.search("secret", &api.user);
        assert_eq!(paths, vec!["/private/salaries.txt".to_string()]);
    });
}

/// A hard link makes a file reachable through another directory; the id
/// door then removes the name the caller reaches.
#[test]
fn a_hard_link_elsewhere_makes_a_file_reachable() {
    common::engine::every_engine(|| {
        let api = Api::start(&["--api-uid", "65534", "--api-gid", "65534"]);
        let m = &api.m;
        std::fs::create_dir(m.path("private")).unwrap();
        std::fs::create_dir(m.path("open")).unwrap();
        chmod(&m.path("open"), 0o777);
        std::fs::write(m.path("private/linked.txt"), b"both ways").unwrap();
        describe(&m.path("private/linked.txt"), "linkedword");
        chmod(&m.path("private"), 0o700);
        let id = file_id(&m.path("private/linked.txt"));
        assert_error(
            api.get(&format!("/api/v1/files/{id}"), &api.user),
            404,
            "not_found",
        );
        assert!(api.search("linkedword", &api.user).0.is_empty());

        std::fs::hard_link(m.path("private/linked.txt"), m.path("open/alias.txt")).unwrap();
        let r = api.get(&format!("/api/v1/files/{id}/download"), &api.user);
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), b"both ways");
        // Search names the path the caller can walk, not the recorded one.
        assert_eq!(
            api.search("linkedword", &api.user).0,
            vec!["/open/alias.txt".to_string()]
        );
        // DELETE by id removes the name the caller reaches (the alias).
        let r = api
            .req(
                reqwest::Method::DELETE,
                &format!("/api/v1/files/{id}"),
                &api.operator,
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(!m.path("open/alias.txt").exists());
        assert_eq!(
            std::fs::read(m.path("private/linked.txt")).unwrap(),
            b"both ways"
        );
        assert_error(
            api.get(&format!("/api/v1/files/{id}"), &api.user),
            404,
            "not_found",
        );
    });
}

/// Search paging over a mix of hidden and visible matches: following
/// next_cursor visits each visible match exactly once, and stops.
#[test]
fn search_pages_skip_hidden_results_without_losing_or_looping() {
    common::engine::every_engine(|| {
        let api = Api::start(&["--api-uid", "65534", "--api-gid", "65534"]);
        let m = &api.m;
        std::fs::create_dir(m.path("private")).unwrap();
        std::fs::create_dir(m.path("open")).unwrap();
        let mut visible = BTreeSet::new();
        // Interleaved, so hidden matches sit between visible ones in the
        // ranking (equal ranks are ordered by inode number).
        for i in 0..40 {
            let (dir, show) = if i % 4 == 0 {
                ("open", true)
            } else {
                ("private", false)
            };
            let p = m.path(&format!("{dir}/bulk{i:02}.txt"));
            std::fs::write(&p, b"x").unwrap();
            describe(&p, "bulkword");
            if show {
                visible.insert(format!("/{dir}/bulk{i:02}.txt"));
            }
        }
        chmod(&m.path("private"), 0o700);
        for limit in [1, 3, 10, 100] {
            let mut seen = Vec::new();
            let mut cursor = None;
            for round in 0.. {
                assert!(round < 100, "paging does not end (limit {limit})");
                let (paths, next) = api.search_page("bulkword", Some(limit), cursor, &api.user);
                assert!(paths.len() <= limit);
                seen.extend(paths);
                match next.as_u64() {
                    Some(c) => {
                        assert!(cursor.is_none_or(|p| c > p), "cursor went back");
                        cursor = Some(c);
                    }
                    None => {
                        assert!(next.is_null(), "{next}");
                        break;
                    }
                }
            }
            let set: BTreeSet<String> = seen.iter().cloned().collect();
            assert_eq!(set.len(), seen.len(), "a result twice: {seen:?}");
            assert_eq!(set, visible, "limit {limit}");
        }
    });
}

// ---------------------------------------------------------------- trash

/// `/.trash` is the operators' and admins': a user token cannot see it by
/// path, by id or by search; an operator can by path and by id. Search
/// never lists trashed files (they are deleted).
#[test]
fn the_trash_is_for_operators_and_admins() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        let m = &api.m;
        std::fs::create_dir(m.path("d")).unwrap();
        std::fs::write(m.path("d/gone.txt"), b"deleted content").unwrap();
        describe(&m.path("d/gone.txt"), "vanishedword");
        let id = file_id(&m.path("d/gone.txt"));
        let r = api
            .req(
                reqwest::Method::DELETE,
                "/api/v1/fs/d/gone.txt",
                &api.operator,
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), 204);
        assert!(m.path(".trash").is_dir(), "the deletion went to the trash");

        // Operator: by path (the trash may hold the file at any depth).
        let found = walk_api(&api, "/.trash", &api.operator);
        let (tpath, _) = found
            .iter()
            .find(|(_, fid)| *fid == id)
            .unwrap_or_else(|| panic!("not in the trash: {found:?}"))
            .clone();
        let enc = |p: &str| {
            p.split('/')
                .map(|s| artfs::api::path::encode_segment(s.as_bytes()))
                .collect::<Vec<_>>()
                .join("/")
        };
        let r = api.get(&format!("/api/v1/fs{}", enc(&tpath)), &api.operator);
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().as_ref(), b"deleted content");
        // ... and by id.
        assert_eq!(
            json_ok(api.get(&format!("/api/v1/files/{id}"), &api.operator))["file_id"],
            id.as_str()
        );
        let r = api.get(&format!("/api/v1/files/{id}/download"), &api.admin);
        assert_eq!(r.bytes().unwrap().as_ref(), b"deleted content");

        // User: 404 everywhere, as for a name that does not exist.
        for path in [
            "/api/v1/fs/.trash".to_string(),
            "/api/v1/fs/.trash/".to_string(),
            format!("/api/v1/fs{}", enc(&tpath)),
            "/api/v1/meta/.trash".to_string(),
            format!("/api/v1/meta{}", enc(&tpath)),
            format!("/api/v1/files/{id}"),
            format!("/api/v1/files/{id}/download"),
        ] {
            assert_error(api.get(&path, &api.user), 404, "not_found");
        }
        let r = api
            .req(
                reqwest::Method::PUT,
                "/api/v1/fs/.trash/planted.txt",
                &api.user,
            )
            .body("x")
            .send()
            .unwrap();
        assert_error(r, 404, "not_found");
        let r = api
            .req(
                reqwest::Method::PATCH,
                &format!("/api/v1/files/{id}"),
                &api.user,
            )
            .json(&json!({"description": "x"}))
            .send()
            .unwrap();
        assert_error(r, 404, "not_found");
        // The root listing never shows it.
        let v = json_ok(api.get("/api/v1/fs/", &api.user));
        assert!(v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["name"] != ".trash"));
        // Search: not a result for anyone.
        for tok in [&api.user, &api.operator, &api.admin] {
            let (paths, next) = api.search("vanishedword", tok);
            assert!(paths.is_empty(), "{paths:?}");
            assert!(next.is_null());
        }
        // The mount (local callers) is unchanged: root sees the trash.
        assert_eq!(
            std::fs::read(m.path(&tpath[1..])).unwrap(),
            b"deleted content"
        );
    });
}

// ---------------------------------------------------------------- point 11

#[test]
fn cursors_out_of_range_or_malformed_are_400() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        std::fs::create_dir(api.m.path("d")).unwrap();
        for i in 0..3 {
            let p = api.m.path(&format!("d/f{i}"));
            std::fs::write(&p, b"x").unwrap();
            describe(&p, "cursorword");
        }
        for bad in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "abc",
            "1.5",
        ] {
            let r = api
                .client
                .get(api.url("/api/v1/fs/d/"))
                .query(&[("cursor", bad)])
                .bearer_auth(&api.user)
                .send()
                .unwrap();
            assert_error(r, 400, "bad_request");
            let r = api
                .client
                .get(api.url("/api/v1/search"))
                .query(&[("q", "cursorword"), ("cursor", bad)])
                .bearer_auth(&api.user)
                .send()
                .unwrap();
            assert_error(r, 400, "bad_request");
        }
        // The largest valid cursor is past the end: an empty last page.
        let r = api
            .client
            .get(api.url("/api/v1/search"))
            .query(&[("q", "cursorword"), ("cursor", "9223372036854775807")])
            .bearer_auth(&api.user)
            .send()
            .unwrap();
        let v = json_ok(r);
        assert_eq!(v["results"], json!([]));
        assert!(v["next_cursor"].is_null());
        let r = api
            .client
            .get(api.url("/api/v1/fs/d/"))
            .query(&[("cursor", "9223372036854775807")])
            .bearer_auth(&api.user)
            .send()
            .unwrap();
        let v = json_ok(r);
        assert_eq!(v["entries"], json!([]));
        assert!(v["next_cursor"].is_null());
        // A listing page of one follows to the end.
        let mut names = Vec::new();
        let mut cursor = String::new();
        for _ in 0..10 {
            let r = api
                .client
                .get(api.url("/api/v1/fs/d/"))
                .query(&[("cursor", cursor.as_str()), ("limit", "1")])
                .bearer_auth(&api.user)
                .send()
                .unwrap();
            let v = json_ok(r);
            for e in v["entries"].as_array().unwrap() {
                names.push(e["name"].as_str().unwrap().to_string());
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        names.sort();
        assert_eq!(names, ["f0", "f1", "f2"]);
    });
}

// ---------------------------------------------------------------- point 12

#[test]
fn two_authorization_headers_are_400() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        let (status, text) = api.raw(&format!(
            "GET /api/v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Authorization: Bearer {}\r\nConnection: close\r\n\r\n",
            api.admin, api.user
        ));
        assert_eq!(status, 400, "{text}");
        assert!(text.contains("\"error\":\"invalid_request\""), "{text}");
        // Even when both are the same token.
        let (status, _) = api.raw(&format!(
            "GET /api/v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {0}\r\n\
             Authorization: Bearer {0}\r\nConnection: close\r\n\r\n",
            api.user
        ));
        assert_eq!(status, 400);
        // One is fine.
        let (status, _) = api.raw(&format!(
            "GET /api/v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Connection: close\r\n\r\n",
            api.user
        ));
        assert_eq!(status, 200);
    });
}

#[test]
fn if_match_is_strong_and_applies_to_get() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        let r = api
            .req(reqwest::Method::PUT, "/api/v1/fs/f.txt", &api.user)
            .body("version one")
            .send()
            .unwrap();
        assert_eq!(r.status(), 201);
        let etag = r.headers()["etag"].to_str().unwrap().to_string();
        let id = json(r)["file_id"].as_str().unwrap().to_string();
        let get_if = |path: &str, value: &str| {
            api.req(reqwest::Method::GET, path, &api.user)
                .header("if-match", value)
                .send()
                .unwrap()
        };
        let weak = format!("W/{etag}");
        for path in [
            "/api/v1/fs/f.txt".to_string(),
            format!("/api/v1/files/{id}/download"),
        ] {
            assert_eq!(get_if(&path, &etag).status(), 200);
            assert_eq!(get_if(&path, "*").status(), 200);
            assert_eq!(get_if(&path, &format!("\"x\", {etag}")).status(), 200);
            assert_error(get_if(&path, &weak), 412, "precondition_failed");
            assert_error(get_if(&path, "\"other\""), 412, "precondition_failed");
        }
        // If-None-Match keeps the weak comparison (304).
        let r = api
            .req(reqwest::Method::GET, "/api/v1/fs/f.txt", &api.user)
            .header("if-none-match", &weak)
            .send()
            .unwrap();
        assert_eq!(r.status(), 304);
        // A PUT with a weak If-Match replaces nothing.
        let r = api
            .req(reqwest::Method::PUT, "/api/v1/fs/f.txt", &api.user)
            .header("if-match", &weak)
            .body("version two")
            .send()
            .unwrap();
        assert_error(r, 412, "precondition_failed");
        assert_eq!(std::fs::read(api.m.path("f.txt")).unwrap(), b"version one");
        let r = api
            .req(reqwest::Method::PUT, "/api/v1/fs/f.txt", &api.user)
            .header("if-match", &etag)
            .body("version two")
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(std::fs::read(api.m.path("f.txt")).unwrap(), b"version two");
    });
}

#[test]
fn extractor_errors_have_the_json_body() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        let post_mode = |tok: &str, ctype: Option<&str>, body: &str| {
            let mut b = api
                .req(reqwest::Method::POST, "/api/v1/mode", tok)
                .body(body.to_string());
            if let Some(c) = ctype {
                b = b.header("content-type", c);
            }
            b.send().unwrap()
        };
        // Bad JSON, a wrong shape, a wrong content type.
        assert_error(
            post_mode(&api.admin, Some("application/json"), "{"),
            400,
            "bad_request",
        );
        assert_error(
            post_mode(&api.admin, Some("application/json"), r#"{"mode": 5}"#),
            400,
            "bad_request",
        );
        assert_error(
            post_mode(&api.admin, Some("text/plain"), r#"{"mode": "rw"}"#),
            415,
            "unsupported_media_type",
        );
        assert_error(
            post_mode(&api.admin, None, r#"{"mode": "rw"}"#),
            415,
            "unsupported_media_type",
        );
        // Bad query strings.
        assert_error(api.get("/api/v1/search", &api.user), 400, "bad_request");
        assert_error(
            api.get("/api/v1/search?q=x&limit=abc", &api.user),
            400,
            "bad_request",
        );
        // A path parameter that is not UTF-8, a method a route lacks.
        assert_error(api.get("/api/v1/files/%FF", &api.user), 400, "bad_request");
        let r = api
            .req(reqwest::Method::POST, "/api/v1/fs/x", &api.user)
            .send()
            .unwrap();
        assert_error(r, 405, "method_not_allowed");
        // A metadata PATCH with broken JSON.
        std::fs::write(api.m.path("f"), b"x").unwrap();
        let r = api
            .req(reqwest::Method::PATCH, "/api/v1/meta/f", &api.user)
            .header("content-type", "application/json")
            .body("{nope")
            .send()
            .unwrap();
        assert_error(r, 400, "bad_request");
    });
}

#[test]
fn the_mode_route_checks_the_role_before_the_body() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        for tok in [&api.user, &api.operator] {
            for (ctype, body) in [
                (Some("application/json"), "{not json"),
                (Some("text/plain"), "whatever"),
                (None, ""),
                (
                    Some("application/json"),
                    r#"{"mode": "ro", "confirm": true}"#,
                ),
            ] {
                let mut b = api
                    .req(reqwest::Method::POST, "/api/v1/mode", tok)
                    .body(body);
                if let Some(c) = ctype {
                    b = b.header("content-type", c);
                }
                assert_error(b.send().unwrap(), 403, "forbidden");
            }
        }
        let v = json_ok(api.get("/api/v1/info", &api.user));
        assert_eq!(v["mode"], "edit");
        // The admin's request is read and reaches the state machine (an
        // edit store has no transitions: 409).
        let r = api
            .req(reqwest::Method::POST, "/api/v1/mode", &api.admin)
            .json(&json!({"mode": "rw"}))
            .send()
            .unwrap();
        assert_error(r, 409, "conflict");
    });
}

#[test]
fn a_trailing_slash_on_a_file_is_an_error() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        std::fs::create_dir(api.m.path("dir")).unwrap();
        std::fs::write(api.m.path("dir/file.txt"), b"content").unwrap();
        for path in ["/api/v1/fs/dir/file.txt/", "/api/v1/meta/dir/file.txt/"] {
            assert_error(api.get(path, &api.user), 400, "bad_request");
        }
        let r = api
            .req(
                reqwest::Method::PATCH,
                "/api/v1/meta/dir/file.txt/",
                &api.user,
            )
            .json(&json!({"description": "x"}))
            .send()
            .unwrap();
        assert_error(r, 400, "bad_request");
        let r = api
            .req(reqwest::Method::PUT, "/api/v1/fs/dir/file.txt/", &api.user)
            .body("replaced")
            .send()
            .unwrap();
        assert_error(r, 400, "bad_request");
        let r = api
            .req(
                reqwest::Method::DELETE,
                "/api/v1/fs/dir/file.txt/",
                &api.operator,
            )
            .send()
            .unwrap();
        assert_error(r, 400, "bad_request");
        assert_eq!(
            std::fs::read(api.m.path("dir/file.txt")).unwrap(),
            b"content"
        );
        // Without the slash it is the file; a directory takes either form.
        let r = api.get("/api/v1/fs/dir/file.txt", &api.user);
        assert_eq!(r.bytes().unwrap().as_ref(), b"content");
        for path in ["/api/v1/fs/dir", "/api/v1/fs/dir/", "/api/v1/meta/dir/"] {
            assert_eq!(api.get(path, &api.user).status(), 200, "{path}");
        }
    });
}
