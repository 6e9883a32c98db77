//! Several nodes of one store whose content is in a bucket (issues 15 and
//! 16): each node has a cache of its own and finds its store in the
//! bucket; a replica sees the writer's new versions, never a stale copy;
//! a standby that takes over from a killed writer serves, and sends, what
//! the writer had fsynced.

mod common;

use std::fs;
use std::time::Duration;

use common::cluster::{within, write_synced, Node};
use common::pg::PgServer;
use common::s3::S3Server;

/// Bytes that differ at every offset.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len.div_ceil(4) as u32)
        .flat_map(|i| (i ^ seed).wrapping_mul(2654435761).to_le_bytes())
        .take(len)
        .collect()
}

#[test]
fn nodes_of_a_bucket_store_share_its_content() {
    let db = PgServer::shared().database("cluster_s3");
    let bucket = S3Server::shared().new_bucket("cluster");
    let mut w = Node::first_on(&db, &bucket);
    w.start().unwrap();
    write_synced(&w.path("small"), b"version one");
    let big = pattern(40 << 20, 3);
    write_synced(&w.path("big"), &big);

    // A replica with an empty cache directory: the store id comes from
    // the bucket, the content from the writer's versions.
    let mut r = Node::beside(&w, &["--replica", "--poll-ms", "100"]);
    r.start().unwrap();
    assert_eq!(fs::read(r.path("small")).unwrap(), b"version one");
    assert!(
        fs::read(r.path("big")).unwrap() == big,
        "big differs on the replica"
    );

    // A new version on the writer: the replica's copy is stale, and is
    // never served once the change reached it.
    write_synced(&w.path("small"), b"version two, longer");
    let seen = within(Duration::from_secs(10), || {
        fs::read(r.path("small")).is_ok_and(|b| b == b"version two, longer")
    });
    assert!(
        seen.is_some(),
        "the replica never read version two: {}",
        r.log()
    );

    // A standby takes over from the killed writer and writes on.
    let mut s = Node::beside(&w, &["--standby", "--poll-ms", "100"]);
    s.start().unwrap();
    w.kill9();
    let took = within(Duration::from_secs(15), || {
        fs::write(s.path("after"), b"written by the new writer").is_ok()
    });
    assert!(took.is_some(), "no takeover: {}", s.log());
    assert!(fs::read(s.path("big")).unwrap() == big);
    assert_eq!(fs::read(s.path("small")).unwrap(), b"version two, longer");
    s.stop();
    r.stop();

    // What the new writer wrote went to the bucket: a fresh node reads it.
    let mut fresh = Node::beside(&s, &[]);
    fresh.start().unwrap();
    assert_eq!(
        fs::read(fresh.path("after")).unwrap(),
        b"written by the new writer"
    );
    fresh.stop();
    let (code, out) = fresh.command("fsck", &[]);
    assert_eq!(code, 0, "{out}");
}

/// Requests of one kind a node made to the bucket, from its `/metrics`.
fn requests(api: &str, op: &str) -> u64 {
    let (status, text) = common::api::raw_http(
        api,
        b"GET /metrics HTTP/1.1\r\nHost: artfs\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{text}");
    let name = format!("artfs_s3_requests_total{{op=\"{op}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[test]
fn a_replica_serves_its_copy_of_the_recorded_version_without_asking_the_bucket() {
    let db = PgServer::shared().database("cluster_s3_versions");
    let bucket = S3Server::shared().new_bucket("versions");
    let mut w = Node::first_on(&db, &bucket);
    w.start().unwrap();
    write_synced(&w.path("f"), b"version one");
    let api = common::api::free_addr();
    let key = common::api::key().public.to_str().unwrap().to_string();
    let mut r = Node::beside(
        &w,
        &[
            "--replica",
            "--poll-ms",
            "100",
            "--api",
            &api,
            "--jwt-key",
            &key,
        ],
    );
    r.start().unwrap();
    assert_eq!(fs::read(r.path("f")).unwrap(), b"version one");
    // The tables name the version the replica's copy holds: each open
    // serves it as it is, with no request to the bucket.
    let (lists, gets) = (requests(&api, "list"), requests(&api, "get"));
    for _ in 0..5 {
        assert_eq!(fs::read(r.path("f")).unwrap(), b"version one");
    }
    assert_eq!(requests(&api, "list"), lists, "a LIST for a current copy");
    assert_eq!(requests(&api, "get"), gets, "a GET for a current copy");

    // A new version recorded: the copy is stale, never served once the
    // change reached the replica.
    write_synced(&w.path("f"), b"version two");
    let seen = within(Duration::from_secs(10), || {
        fs::read(r.path("f")).is_ok_and(|b| b == b"version two")
    });
    assert!(
        seen.is_some(),
        "the replica never read version two: {}",
        r.log()
    );
    assert_eq!(fs::read(r.path("f")).unwrap(), b"version two");
    r.stop();
    w.stop();
    let (code, out) = w.command("fsck", &[]);
    assert_eq!(code, 0, "{out}");
}
