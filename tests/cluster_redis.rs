//! Redis between the nodes of a store (docs/CLUSTER.md): the writer's
//! hint makes a replica read the feed at once; Redis faults (pub/sub
//! clients killed, the server stopped and restarted) lose nothing and
//! stop nothing; the registry lists every node. A throwaway redis-server
//! and PostgreSQL; nodes as in tests/cluster.rs.

mod common;

use std::fs;
use std::time::Duration;

use common::cluster::{within, Node};
use common::pg::PgServer;
use common::redis::{RedisServer, SomeRedis};

/// Well under the replica's poll interval (a minute here): only a hint
/// can make a change show this fast.
const HINTED: Duration = Duration::from_secs(3);

fn shows(r: &Node, name: &str, bound: Duration) -> bool {
    within(bound, || fs::read(r.path(name)).is_ok()).is_some()
}

/// A writer and a replica of one store on `redis`, the replica polling
/// only once a minute.
fn writer_and_replica(db: &common::pg::PgDatabase, url: &str) -> (Node, Node) {
    let mut w = Node::first(db);
    w.extra = vec!["--redis".into(), url.to_string()];
    w.start().unwrap();
    fs::write(w.path("first"), b"1").unwrap();
    let mut r = Node::beside(&w, &["--replica", "--poll-ms", "60000", "--redis", url]);
    r.start().unwrap();
    // The replica subscribed (it reads the feed once subscribed).
    assert!(shows(&r, "first", HINTED), "{}", r.log());
    (w, r)
}

/// On the shared Redis (the compose file's, when there is one).
#[test]
fn hints_make_replicas_follow_at_once_and_the_registry_lists_every_node() {
    let redis = SomeRedis::get();
    let db = PgServer::shared().database("cluster_redis");
    let (w, mut r) = writer_and_replica(&db, &redis.url);
    fs::write(w.path("a"), b"a").unwrap();
    assert!(shows(&r, "a", HINTED), "no hint: {}\n{}", w.log(), r.log());

    // The registry lists both nodes.
    let listed = within(Duration::from_secs(10), || {
        let (code, out) = w.command("status", &["--redis", &redis.url]);
        code == 0 && out.matches("node:").count() == 2
    });
    let (_, out) = w.command("status", &["--redis", &redis.url, "--json"]);
    assert!(listed.is_some(), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut roles: Vec<&str> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    roles.sort();
    assert_eq!(roles, ["replica", "writer"], "{out}");
    assert!(v["feed_head"].as_u64().unwrap() > 0, "{out}");

    // A node that stops leaves the registry.
    r.stop();
    let gone = within(Duration::from_secs(5), || {
        let (_, out) = w.command("status", &["--redis", &redis.url]);
        out.matches("node:").count() == 1
    });
    assert!(gone.is_some());
    let mut w = w;
    w.stop();
}

/// On a server of its own: it kills the server's clients, stops it and
/// starts it again.
#[test]
fn redis_faults_lose_nothing_and_stop_nothing() {
    let redis = RedisServer::start();
    let db = PgServer::shared().database("cluster_redis_faults");
    let (mut w, mut r) = writer_and_replica(&db, &redis.url);

    // Pub/sub clients killed: the replica subscribes again.
    let killed = redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_eq!(killed.trim(), "1", "one subscriber: {killed}");
    fs::write(w.path("b"), b"b").unwrap();
    assert!(shows(&r, "b", Duration::from_secs(10)), "{}", r.log());

    // Redis away: the writer goes on committing; back, the replica
    // catches up at once (it reads the feed when it subscribes again).
    redis.stop();
    fs::write(w.path("c"), b"c").unwrap();
    fs::File::open(w.mnt()).unwrap().sync_all().unwrap();
    assert_eq!(fs::read(w.path("c")).unwrap(), b"c");
    redis.restart();
    assert!(
        shows(&r, "c", Duration::from_secs(15)),
        "not caught up after Redis came back: {}",
        r.log()
    );
    fs::write(w.path("d"), b"d").unwrap();
    assert!(shows(&r, "d", HINTED), "{}\n{}", w.log(), r.log());
    // Each outage logged once, and its end (the writer's publisher logs
    // its success just after Redis passed the hint on: wait for it).
    for (who, node) in [("writer", &w), ("replica", &r)] {
        let balanced = within(Duration::from_secs(5), || {
            let log = node.log();
            log.contains("Redis is reachable again")
                && log.matches("Redis is unreachable").count()
                    == log.matches("Redis is reachable again").count()
        });
        assert!(balanced.is_some(), "{who}: {}", node.log());
    }
    // The registry the restart wiped is written again (every 2 s).
    let listed = within(Duration::from_secs(10), || {
        let (code, out) = w.command("status", &["--redis", &redis.url]);
        code == 0 && out.matches("node:").count() == 2
    });
    assert!(listed.is_some(), "the registry came back");
    r.stop();
    w.stop();
}

#[test]
fn a_bad_redis_url_fails_the_mount_before_anything_starts() {
    let db = PgServer::shared().database("cluster_redis_bad");
    let mut w = Node::first(&db);
    w.extra = vec!["--redis".into(), "http://u:hunter2@h:1".into()];
    let err = w.start().unwrap_err();
    assert!(err.contains("unsupported Redis URL"), "{err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
    assert_eq!(fs::read_dir(w.backing()).unwrap().count(), 0);
}

/// `rediss://`: the daemon and `artfs status` reach a TLS-only Redis whose
/// certificate the system's trust (here `SSL_CERT_FILE`) vouches for, and
/// refuse one it does not.
#[test]
fn a_tls_redis_is_reached_through_the_systems_trust() {
    let (redis, ca) = RedisServer::start_tls();
    let db = PgServer::shared().database("cluster_redis_tls");
    let mut w = Node::first(&db);
    w.extra = vec!["--redis".into(), redis.url.clone()];
    let trust = ca.to_str().unwrap().to_string();
    w.start_with(&[("SSL_CERT_FILE", &trust)]).unwrap();
    let listed = within(Duration::from_secs(10), || {
        let out = std::process::Command::new(common::bin())
            .arg("status")
            .arg(w.backing())
            .args(&w.db)
            .args(["--redis", &redis.url])
            .env("SSL_CERT_FILE", &trust)
            .output()
            .unwrap();
        common::output_text(&out).contains("node:")
    });
    assert!(listed.is_some(), "{}", w.log());
    assert!(!w.log().contains("Redis is unreachable"), "{}", w.log());
    // Without the CA, the certificate is refused and status says why.
    let (code, out) = w.command("status", &["--redis", &redis.url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("nodes:") && out.contains("unknown"), "{out}");
    w.stop();
}
