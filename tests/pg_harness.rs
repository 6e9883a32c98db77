//! The throwaway PostgreSQL of the tests (tests/common/pg.rs), and the
//! search grammar's two renderings (src/meta/query.rs) checked against the
//! real engines: for every sample query, PostgreSQL (`to_tsquery`) and
//! SQLite FTS5 (`MATCH`) return exactly the expected documents.

mod common;

use std::time::{Duration, Instant};

use artfs::meta::query::{index_text, parse, to_fts5, to_tsquery};
use common::pg::PgServer;
use sqlx::Connection;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// initdb, start, a database each for two tests that cannot see each
/// other, stop and restart on the same data, and nothing left behind.
#[test]
fn throwaway_server_starts_isolates_restarts_and_cleans_up() {
    let s = PgServer::start();
    eprintln!("PostgreSQL startup (initdb + ready): {:?}", s.startup);
    let t = Instant::now();
    let a = s.database("isolation a");
    eprintln!("CREATE DATABASE: {:?}", t.elapsed());
    let b = s.database("isolation b");
    assert_ne!(a.name, b.name);
    let rt = runtime();
    rt.block_on(async {
        let mut ca = sqlx::PgConnection::connect(&a.url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (x BIGINT); INSERT INTO t VALUES (42)")
            .execute(&mut ca)
            .await
            .unwrap();
        let mut cb = sqlx::PgConnection::connect(&b.url).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 't'",
        )
        .fetch_one(&mut cb)
        .await
        .unwrap();
        assert_eq!(n, 0, "database b sees a's table");
        // Unix socket only: no TCP listener at all.
        let addrs: String = sqlx::query_scalar("SHOW listen_addresses")
            .fetch_one(&mut cb)
            .await
            .unwrap();
        assert_eq!(addrs, "");
        ca.close().await.unwrap();
        cb.close().await.unwrap();
    });
    if !s.is_own() {
        // ARTFS_TEST_PG_URL: not ours to stop.
        return;
    }
    // Stop (an outage) and start again on the same data.
    let pid = server_pid(&s);
    assert!(alive(pid));
    let t = Instant::now();
    s.stop();
    eprintln!("stop: {:?}", t.elapsed());
    assert!(!alive(pid), "postgres {pid} still running after stop");
    let refused = rt.block_on(sqlx::PgConnection::connect(&a.url));
    assert!(refused.is_err(), "connected to a stopped server");
    let t = Instant::now();
    s.restart();
    eprintln!("restart: {:?}", t.elapsed());
    rt.block_on(async {
        let mut ca = sqlx::PgConnection::connect(&a.url).await.unwrap();
        let x: i64 = sqlx::query_scalar("SELECT x FROM t")
            .fetch_one(&mut ca)
            .await
            .unwrap();
        assert_eq!(x, 42, "data kept across the restart");
        ca.close().await.unwrap();
    });
    // Dropping stops the server and removes its directory.
    let pid = server_pid(&s);
    let dir = data_dir(&s);
    assert!(dir.exists());
    drop((a, b));
    drop(s);
    assert!(!alive(pid), "postgres {pid} still running after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// The server's pid, as its postmaster.pid says (the one we started).
fn server_pid(s: &PgServer) -> i32 {
    let text = std::fs::read_to_string(data_dir(s).join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().trim().parse().unwrap()
}

fn data_dir(s: &PgServer) -> std::path::PathBuf {
    // admin_url: postgres:///postgres?host=<dir>/sock&...
    let url = s.admin_url();
    let host = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("host="))
        .unwrap();
    std::path::Path::new(host).parent().unwrap().join("data")
}

/// names, description, version, custom values (as the index sees them).
const DOCS: &[[&str; 4]] = &[
    ["README.gz", "", "", ""],
    ["readme-old.txt", "", "", ""],
    ["v5.2.15.txt", "", "", ""],
    ["artfs-5.2.15.tar", "", "", ""],
    ["day-one.md", "First day of the mission", "", ""],
    ["a_b.txt", "", "", ""],
    ["notes", "Über die Mondlandung", "draft-7", "apollo moon"],
    ["日本語.txt", "", "", "Москва 2024"],
    [
        "report.pdf",
        "Quarterly budget, Apollo programme",
        "1.0",
        "",
    ],
    ["it's.txt", "", "", ""],
    // Hard links: every name, space separated.
    ["moon-notes.txt also-moon.txt", "", "", ""],
];

/// Query and the documents (1-based, as DOCS) it must find.
const CASES: &[(&str, &[i64])] = &[
    ("README.gz", &[1]),
    ("readme", &[1, 2]),
    ("README", &[1, 2]),
    ("READ*", &[1, 2]),
    ("README.g*", &[1]),
    ("\"readme gz\"", &[1]),
    ("\"gz readme\"", &[]),
    ("5.2.15", &[4]),
    ("v5.2.15", &[3]),
    ("v5.2.15.txt", &[3]),
    ("5.2.1*", &[4]),
    ("day-one", &[5]),
    ("\"one day\"", &[]),
    ("\"day on\"*", &[5]),
    ("a_b", &[6]),
    ("readme NOT gz", &[2]),
    ("readme AND NOT gz", &[2]),
    ("(gz OR md OR tar) NOT readme", &[4, 5]),
    ("gz OR md", &[1, 5]),
    ("readme old OR a_b", &[2, 6]),
    ("version:draft*", &[7]),
    ("version:draft-7", &[7]),
    ("names:draft", &[]),
    ("description:\"die mondlandung\"", &[7]),
    ("description:apollo", &[9]),
    ("custom:apollo", &[7]),
    ("names:notes", &[7, 11]),
    ("apollo", &[7, 9]),
    ("apollo NOT budget", &[7]),
    ("apollo (budget OR moon)", &[7, 9]),
    ("apollo NOT (budget OR moon)", &[]),
    ("über", &[7]),
    ("ÜBER", &[7]),
    ("日本語", &[8]),
    ("МОСКВА", &[8]),
    ("москва-2024", &[8]),
    ("it's", &[10]),
    ("first mission", &[5]),
    ("\"first mission\"", &[]),
    ("quarter*", &[9]),
    ("1.0", &[9]),
    ("version:1.0", &[9]),
    // A phrase never runs from one column into the next.
    ("\"pdf quarterly\"", &[]),
    ("pdf quarterly", &[9]),
    ("\"7 apollo\"", &[]),
    // Names of one inode are one column, as in FTS5.
    ("\"txt also\"", &[11]),
    ("moon", &[7, 11]),
    ("moon NOT names:moon", &[7]),
    // Database syntax is inert.
    ("a\" OR \"readme", &[]),
    ("NEAR(readme gz)", &[]),
    ("^readme", &[1, 2]),
    ("col:readme", &[]),
    ("readme'; DROP TABLE docs; --", &[]),
    ("readme:*A", &[]),
    ("readme & !gz", &[1]),
    ("readme | gz", &[1]),
];

/// Refused by the parser, hence by both backends.
const REFUSED: &[&str] = &[
    "",
    "\"unbalanced",
    "(readme",
    "readme)",
    "()",
    "readme OR",
    "AND readme",
    "NOT readme",
    "gz OR NOT readme",
    "version:",
    "---",
];

#[test]
fn tsquery_and_fts5_renderings_find_the_same_documents() {
    let t = Instant::now();
    let s = PgServer::shared();
    eprintln!("shared server ready after {:?}", t.elapsed());
    let db = s.database("parity");
    let rt = runtime();
    rt.block_on(async {
        let pg = sqlx::PgPool::connect(&db.url).await.unwrap();
        // The index a PostgreSQL store builds: each column's text split as
        // the parser splits queries (index_text), weighted by column.
        sqlx::raw_sql("CREATE TABLE docs (id BIGINT PRIMARY KEY, v TSVECTOR NOT NULL)")
            .execute(&pg)
            .await
            .unwrap();
        let lite = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::raw_sql(
            "CREATE VIRTUAL TABLE docs USING fts5(names, description, version, custom, \
             tokenize = 'unicode61 remove_diacritics 2')",
        )
        .execute(&lite)
        .await
        .unwrap();
        for (i, d) in DOCS.iter().enumerate() {
            let id = i as i64 + 1;
            sqlx::query(
                "INSERT INTO docs VALUES ($1, \
                 setweight(to_tsvector('simple', $2), 'A') || \
                 setweight(to_tsvector('simple', $3), 'B') || \
                 setweight(to_tsvector('simple', $4), 'C') || \
                 setweight(to_tsvector('simple', $5), 'D'))",
            )
            .bind(id)
            .bind(index_text(d[0]))
            .bind(index_text(d[1]))
            .bind(index_text(d[2]))
            .bind(index_text(d[3]))
            .execute(&pg)
            .await
            .unwrap();
            sqlx::query("INSERT INTO docs (rowid, names, description, version, custom) VALUES (?, ?, ?, ?, ?)")
                .bind(id)
                .bind(d[0])
                .bind(d[1])
                .bind(d[2])
                .bind(d[3])
                .execute(&lite)
                .await
                .unwrap();
        }
        let mut failures = Vec::new();
        for &(q, want) in CASES {
            let parsed = parse(q).unwrap_or_else(|e| panic!("{q:?} refused: {e}"));
            let (tsq, fts) = (to_tsquery(&parsed), to_fts5(&parsed));
            let got_pg: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM docs WHERE v @@ to_tsquery('simple', $1) ORDER BY id",
            )
            .bind(&tsq)
            .fetch_all(&pg)
            .await
            .unwrap_or_else(|e| panic!("{q:?}: PostgreSQL refused {tsq:?}: {e}"));
            let got_lite: Vec<i64> =
                sqlx::query_scalar("SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY rowid")
                    .bind(&fts)
                    .fetch_all(&lite)
                    .await
                    .unwrap_or_else(|e| panic!("{q:?}: FTS5 refused {fts:?}: {e}"));
            if got_pg != want || got_lite != want {
                failures.push(format!(
                    "{q:?}: want {want:?}, PostgreSQL {got_pg:?} ({tsq}), FTS5 {got_lite:?} ({fts})"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        for q in REFUSED {
            assert!(parse(q).is_err(), "{q:?} accepted");
        }
        // Why documents go through index_text: PostgreSQL's own parser
        // keeps `readme.gz` (a file name), `5.2.15` (a version) and
        // `day-one` as tokens of their own, so plain pieces would miss.
        let raw: Vec<String> = sqlx::query_scalar(
            "SELECT token FROM ts_debug('simple', 'README.gz 5.2.15') WHERE alias <> 'blank'",
        )
        .fetch_all(&pg)
        .await
        .unwrap();
        assert_eq!(raw, ["README.gz", "5.2.15"], "PostgreSQL's parser changed");
        // The queries all went through rendering: no table was dropped.
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM docs")
            .fetch_one(&pg)
            .await
            .unwrap();
        assert_eq!(n, DOCS.len() as i64);
        pg.close().await;
        lite.close().await;
    });
    // Bounded: a stuck server fails the test rather than hanging it.
    assert!(t.elapsed() < Duration::from_secs(120));
}
