//! artfs's search grammar end to end (src/meta/query.rs): plain strings
//! people type (`README.gz`, `5.2.15`, `day-one`) find files without
//! quoting, through `artfs search` and `GET /api/v1/search`; database
//! syntax typed in is inert; malformed queries are refused with a message
//! saying what is wrong and how to quote (exit 2, HTTP 400).

mod common;

use std::fs;

use artfs::auth::Role;
use common::api::{assert_error, json, token, Api};
use common::{setx, Mount};

/// `artfs search BACKING QUERY`: (exit code, sorted result paths, stderr).
fn search(m: &Mount, query: &str) -> (i32, Vec<String>, String) {
    let out = m
        .command("search")
        .arg("--")
        .arg(query)
        .env("ARTFS_LOG", "warn")
        .output()
        .unwrap();
    let mut paths: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    paths.sort();
    (
        out.status.code().unwrap_or(-1),
        paths,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The paths a query finds (exit 0 with results, or exit 1 "no matches").
fn found(m: &Mount, query: &str) -> Vec<String> {
    let (code, paths, err) = search(m, query);
    match code {
        0 => assert!(!paths.is_empty(), "{query}: exit 0 without results"),
        1 => assert!(
            paths.is_empty() && err.contains("no matches"),
            "{query}: {err}"
        ),
        _ => panic!("{query:?} refused (exit {code}): {err}"),
    }
    paths
}

/// A refused query: exit 2 and the error on stderr.
fn refused(m: &Mount, query: &str) -> String {
    let (code, paths, err) = search(m, query);
    assert_eq!(code, 2, "{query:?} accepted: {paths:?} {err}");
    assert!(paths.is_empty());
    assert!(err.contains("malformed search query: "), "{query}: {err}");
    err
}

#[test]
fn plain_queries_find_files_and_malformed_ones_say_how_to_quote() {
    common::engine::every_engine(|| {
        let api = Api::start(&[]);
        let m = &api.m;
        for name in [
            "README.gz",
            "readme-old.txt",
            "v5.2.15.txt",
            "artfs-5.2.15.tar",
            "5.2.16.txt",
            "day-one.md",
            "a_b.txt",
            "日本語.txt",
        ] {
            fs::write(m.path(name), name.as_bytes()).unwrap();
        }
        let notes = m.path("notes");
        fs::write(&notes, b"n").unwrap();
        setx(
            &notes,
            "user.artstore.description",
            "Über die Mondlandung".as_bytes(),
        )
        .unwrap();
        setx(&notes, "user.artstore.version", b"draft-7").unwrap();
        // Searching reads what is committed: make it so.
        fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
        let b = m;

        // Punctuated tokens are phrases of their pieces: no quoting needed.
        assert_eq!(found(b, "README.gz"), ["/README.gz"]);
        assert_eq!(found(b, "readme.GZ"), ["/README.gz"]);
        assert_eq!(found(b, "5.2.15"), ["/artfs-5.2.15.tar"]);
        assert_eq!(found(b, "v5.2.15"), ["/v5.2.15.txt"]);
        assert_eq!(found(b, "v5.2.15.txt"), ["/v5.2.15.txt"]);
        assert_eq!(found(b, "day-one"), ["/day-one.md"]);
        assert_eq!(found(b, "a_b"), ["/a_b.txt"]);
        // Quoted, they mean the same.
        assert_eq!(found(b, "\"5.2.15\""), ["/artfs-5.2.15.tar"]);
        assert_eq!(found(b, "\"day one\""), ["/day-one.md"]);
        // A phrase is in order: "one day" is not "day-one".
        assert!(found(b, "\"one day\"").is_empty());
        // Words, prefixes, AND / OR / NOT, parentheses, fields.
        assert_eq!(found(b, "readme"), ["/README.gz", "/readme-old.txt"]);
        assert_eq!(found(b, "READ*"), ["/README.gz", "/readme-old.txt"]);
        assert_eq!(found(b, "README.g*"), ["/README.gz"]);
        assert_eq!(found(b, "5.2.1*"), ["/5.2.16.txt", "/artfs-5.2.15.tar"]);
        assert_eq!(found(b, "readme NOT gz"), ["/readme-old.txt"]);
        assert_eq!(found(b, "readme AND NOT gz"), ["/readme-old.txt"]);
        assert_eq!(found(b, "readme old"), ["/readme-old.txt"]);
        assert_eq!(found(b, "gz OR md"), ["/README.gz", "/day-one.md"]);
        assert_eq!(
            found(b, "(gz OR md OR tar) NOT readme"),
            ["/artfs-5.2.15.tar", "/day-one.md"]
        );
        assert_eq!(found(b, "version:draft*"), ["/notes"]);
        assert_eq!(found(b, "version:draft-7"), ["/notes"]);
        assert!(found(b, "names:draft").is_empty());
        assert_eq!(found(b, "description:\"die mondlandung\""), ["/notes"]);
        // Any case; non-ASCII words.
        assert_eq!(found(b, "über"), ["/notes"]);
        assert_eq!(found(b, "ÜBER"), ["/notes"]);
        assert_eq!(found(b, "uber"), ["/notes"]);
        assert_eq!(found(b, "日本語"), ["/日本語.txt"]);
        // Lower-case keywords are words; punctuation alone is a separator.
        assert!(found(b, "readme and gz").is_empty());
        assert_eq!(found(b, "readme - gz"), ["/README.gz"]);

        // FTS5 syntax typed in is inert: no error, no widening.
        assert!(found(b, "a\" OR \"readme").is_empty());
        assert!(found(b, "NEAR(readme gz)").is_empty());
        assert_eq!(found(b, "^readme"), ["/README.gz", "/readme-old.txt"]);
        assert!(found(b, "col:readme").is_empty());
        assert!(found(b, "rowid:1").is_empty());
        assert!(found(b, "readme'; DROP TABLE t; --").is_empty());
        assert_eq!(found(b, "readme").len(), 2, "the index survived");
        // Long flat queries are fine (FTS5 limits the depth of its trees).
        let long = vec!["readme"; 300].join(" ");
        assert_eq!(found(b, &long), ["/README.gz", "/readme-old.txt"]);
        let long = vec!["gz"; 200].join(" OR ");
        assert_eq!(found(b, &long), ["/README.gz"]);

        // Malformed: what is wrong and how to write it instead.
        let err = refused(b, "\"unbalanced");
        assert!(
            err.contains("unterminated quote") && err.contains("\"5.2.15\""),
            "{err}"
        );
        assert!(refused(b, "(readme").contains("missing `)`"));
        assert!(refused(b, "readme)").contains("`)` without `(`"));
        assert!(refused(b, "()").contains("empty parentheses"));
        assert!(refused(b, "readme OR").contains("OR needs a term after it"));
        assert!(refused(b, "AND readme").contains("quote it: \"AND\""));
        let err = refused(b, "NOT readme");
        assert!(err.contains("`a NOT b`"), "{err}");
        assert!(refused(b, "gz OR NOT readme").contains("not supported"));
        assert!(refused(b, "version:").contains("right after the colon"));
        assert!(refused(b, "---").contains("empty query"));
        let deep = format!("{}readme{}", "(".repeat(40), ")".repeat(40));
        assert!(refused(b, &deep).contains("nested too deeply"));

        // The HTTP door: the same grammar, malformed is 400 with the reason.
        let tok = token("root", Role::Admin);
        let get = |q: &str| {
            api.client
                .get(api.url("/api/v1/search"))
                .query(&[("q", q)])
                .bearer_auth(&tok)
                .send()
                .unwrap()
        };
        let page = json(get("README.gz"));
        let paths: Vec<&str> = page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["/README.gz"], "{page}");
        let page = json(get("day-one OR 5.2.15"));
        assert_eq!(page["results"].as_array().unwrap().len(), 2, "{page}");
        let v = assert_error(get("\"unbalanced"), 400, "bad_request");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("unterminated quote"), "{v}");
        let v = assert_error(get("NOT readme"), 400, "bad_request");
        assert!(v["message"].as_str().unwrap().contains("NOT"), "{v}");
    });
}
