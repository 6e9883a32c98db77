//! The throwaway PostgreSQL of the tests (tests/common/pg.rs), and the
//! search grammar's two renderings (src/meta/query.rs) checked against the
//! real engines: for every sample query, PostgreSQL (`to_tsquery`) and
//! SQLite FTS5 (`MATCH`) return exactly the expected documents.

mod common;

use std::time::{Duration, Instant};

use artfs::meta::query::{index_text, parse, to_fts5, to_tsquery, words};
use common::pg::{with_database, PgServer};
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
        if s.is_own() {
            // Unix socket only: no TCP listener at all.
            let addrs: String = sqlx::query_scalar("SHOW listen_addresses")
                .fetch_one(&mut cb)
                .await
                .unwrap();
            assert_eq!(addrs, "");
        }
        ca.close().await.unwrap();
        cb.close().await.unwrap();
    });
    if !s.is_own() {
        // ARTFS_TEST_PG_URL: not ours to stop.
        return;
    }
    // Stop (an outage) and start again on the same data.
    let pid = s.pid().unwrap() as i32;
    // The pid held is the server's own (postgres, not a wrapper).
    let postmaster = std::fs::read_to_string(s.data_dir().unwrap().join("postmaster.pid")).unwrap();
    assert_eq!(postmaster.lines().next(), Some(pid.to_string().as_str()));
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
    let pid = s.pid().unwrap() as i32;
    let dir = s.data_dir().unwrap().parent().unwrap().to_path_buf();
    assert!(dir.join("data").exists());
    drop((a, b));
    drop(s);
    assert!(!alive(pid), "postgres {pid} still running after drop");
    assert!(!dir.exists(), "{} left behind", dir.display());
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
    ["Café Crème.txt", "naïve", "", ""],
    // Decomposed: e and a combining acute accent.
    ["cafe\u{301}-noir.txt", "", "", "Đồng Khởi"],
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
    // Latin diacritics are folded on both (FTS5's remove_diacritics 2).
    ("uber", &[7]),
    ("cafe", &[12, 13]),
    ("CAFÉ", &[12, 13]),
    ("café-noir", &[13]),
    ("creme", &[12]),
    ("naive", &[12]),
    ("dong", &[]),
    ("đồng khoi", &[13]),
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

/// Every character of the Basic Multilingual Plane between two letters,
/// split and folded by FTS5 (`unicode61 remove_diacritics 2`) and by
/// `index_text`: identical for Latin (with diacritics and combining
/// marks), Cyrillic, kana and CJK; elsewhere the differences (Unicode 6.1
/// tables in SQLite against Rust's current ones) are counted, not fatal.
#[test]
fn index_text_splits_and_folds_as_fts5_does() {
    let rt = runtime();
    let fts5: Vec<(i64, String)> = rt.block_on(async {
        let lite = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::raw_sql(
            "CREATE VIRTUAL TABLE t USING fts5(x, tokenize = 'unicode61 remove_diacritics 2'); \
             CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance'); \
             WITH RECURSIVE c(cp) AS (SELECT 128 UNION ALL SELECT cp + 1 FROM c WHERE cp < 65533) \
             INSERT INTO t (rowid, x) SELECT cp, 'a' || char(cp) || 'b' FROM c \
             WHERE cp NOT BETWEEN 55296 AND 57343",
        )
        .execute(&lite)
        .await
        .unwrap();
        let rows = sqlx::query_as(
            "SELECT doc, group_concat(term, ' ') FROM \
             (SELECT doc, term FROM v ORDER BY doc, \"offset\") GROUP BY doc ORDER BY doc",
        )
        .fetch_all(&lite)
        .await
        .unwrap();
        lite.close().await;
        rows
    });
    assert!(fts5.len() > 60_000, "{}", fts5.len());
    let must_agree = |cp: u32| {
        matches!(cp, 0x80..=0x24F | 0x300..=0x36F | 0x400..=0x4FF | 0x1E00..=0x1EFF
            | 0x3041..=0x3096 | 0x3099..=0x30FF | 0x4E00..=0x9FCC)
    };
    let (mut fatal, mut other) = (Vec::new(), Vec::new());
    for (cp, tokens) in &fts5 {
        let c = char::from_u32(*cp as u32).unwrap();
        let ours = index_text(&format!("a{c}b"));
        if &ours != tokens {
            let line = format!("U+{cp:04X} {c:?}: FTS5 {tokens:?}, index_text {ours:?}");
            if must_agree(*cp as u32) {
                fatal.push(line);
            } else {
                other.push(line);
            }
        }
    }
    eprintln!(
        "{} of {} characters outside the checked scripts split or fold differently, e.g.:\n{}",
        other.len(),
        fts5.len(),
        other
            .iter()
            .step_by(other.len() / 10 + 1)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(fatal.is_empty(), "{}", fatal.join("\n"));
    // The query side uses the same split.
    assert_eq!(words("a\u{301}b c").count(), 2);
}

/// A test's database URL keeps everything of the server's URL but the
/// database (a `dbname=` parameter would override the path: dropped).
#[test]
fn database_urls_keep_host_port_and_options() {
    assert_eq!(
        with_database(
            "postgres:///postgres?host=/tmp/x/sock&port=5432&user=postgres",
            "t1"
        ),
        "postgres:///t1?host=/tmp/x/sock&port=5432&user=postgres"
    );
    assert_eq!(
        with_database(
            "postgresql://u:p@db.example:6432/main?sslmode=require&dbname=main",
            "t2"
        ),
        "postgresql://u:p@db.example:6432/t2?sslmode=require"
    );
    assert_eq!(with_database("postgres://h", "t3"), "postgres://h/t3");
}
