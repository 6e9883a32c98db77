//! One migration runner for every engine. sqlx's own migrator keeps one
//! fixed `_sqlx_migrations` table per database; artfs needs table prefixes
//! so that several stores share one database with independent migrations.
//!
//! Each store records what it applied in `{p}_migrations` (version, name,
//! checksum, applied_at). The checksum is the SHA-256 of the migration's
//! template text as compiled into the binary: a migration edited after a
//! store applied it is refused with an error naming it, and so is a store
//! that applied migrations this binary does not know (a newer build's).
//! Each migration runs in one transaction with its row. On PostgreSQL every
//! step also holds `pg_advisory_xact_lock` on a hash of the prefix, so
//! daemons and commands opening one fresh prefix at once apply each
//! migration exactly once.
//!
//! SQLite stores made by builds before checksums have a migrations table
//! without the column: it is added, and the checksums of the rows already
//! there are filled in from this binary on first open (those migrations
//! were applied from the same, never edited, files).

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, SqliteConnection};

use crate::types::error::{Error, Result};
use crate::types::Timestamp;

/// One migration: version and SQL with `{p}` standing for the table prefix.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

macro_rules! migrations {
    ($dir:literal: $($v:literal $name:literal $file:literal),* $(,)?) => {
        &[$(Migration {
            version: $v,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $dir, "/", $file)),
        }),*]
    };
}

pub const SQLITE: &[Migration] = migrations!("sqlite":
    1 "init" "0001_init.sql",
    2 "wal" "0002_wal.sql",
    3 "checksum" "0003_checksum.sql",
    4 "search" "0004_search.sql",
    5 "config" "0005_config.sql",
    6 "blocks" "0006_blocks.sql",
    7 "listing" "0007_listing.sql",
    8 "lease" "0008_lease.sql",
    9 "checks" "0009_checks.sql",
    10 "feed" "0010_feed.sql",
    11 "flags" "0011_flags.sql",
    12 "version" "0012_version.sql",
);

/// The same versions, names and meaning as [`SQLITE`].
pub const POSTGRES: &[Migration] = migrations!("postgres":
    1 "init" "0001_init.sql",
    2 "wal" "0002_wal.sql",
    3 "checksum" "0003_checksum.sql",
    4 "search" "0004_search.sql",
    5 "config" "0005_config.sql",
    6 "blocks" "0006_blocks.sql",
    7 "listing" "0007_listing.sql",
    8 "lease" "0008_lease.sql",
    9 "checks" "0009_checks.sql",
    10 "feed" "0010_feed.sql",
    11 "flags" "0011_flags.sql",
    12 "version" "0012_version.sql",
);

/// Longest identifier PostgreSQL keeps whole (NAMEDATALEN - 1 bytes).
pub const PG_MAX_IDENTIFIER: usize = 63;

/// The migrations table's own names (created by the runner, not a file).
const RUNNER_NAMES: &[&str] = &["{p}_migrations", "{p}_migrations_pk"];

/// Every name the PostgreSQL schema creates for a prefix: tables, indexes,
/// constraints, sequences (the templates name each one `{p}_...`).
pub fn generated_names(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = RUNNER_NAMES.iter().map(|n| n.to_string()).collect();
    for m in POSTGRES.iter().chain(SQLITE) {
        let text: Vec<&str> = m
            .sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect();
        let text = text.join("\n");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("{p}_") {
            let tail = &rest[i + 4..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(format!("{{p}}_{}", &tail[..end]));
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| n.replace("{p}", prefix))
        .collect()
}

/// The longest table prefix every generated name fits with (same bound on
/// every engine, so a store can move between them).
pub fn max_prefix_len() -> usize {
    let longest = generated_names("")
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0);
    PG_MAX_IDENTIFIER - longest
}

/// Table prefixes become part of identifiers: a safe alphabet, and short
/// enough that PostgreSQL truncates none of the names made from it.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let ok_chars = prefix.starts_with(|c: char| c.is_ascii_alphabetic())
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_chars {
        return Err(Error::Meta(format!(
            "invalid table prefix {prefix:?}: use letters, digits and '_', starting with a letter"
        )));
    }
    let max = max_prefix_len();
    if prefix.len() > max {
        return Err(Error::Meta(format!(
            "table prefix {prefix:?} is too long ({} bytes, at most {max}): PostgreSQL \
             truncates identifiers at {PG_MAX_IDENTIFIER} bytes and the longest name made \
             from the prefix adds {} bytes",
            prefix.len(),
            PG_MAX_IDENTIFIER - max
        )));
    }
    Ok(())
}

pub fn valid_prefix(prefix: &str) -> bool {
    check_prefix(prefix).is_ok()
}

/// SHA-256 (hex) of a migration's template text.
pub fn checksum(m: &Migration) -> String {
    hex::encode(Sha256::digest(m.sql.as_bytes()))
}

/// A row of `{p}_migrations`.
struct Applied {
    version: i64,
    name: String,
    checksum: Option<String>,
}

/// Check what a store applied against the binary's migrations: an edited
/// migration or an unknown one (a newer build's) is refused. Returns the
/// versions whose checksum is still to be recorded (older builds).
fn verify(set: &[Migration], applied: &[Applied], prefix: &str) -> Result<Vec<i64>> {
    let mut backfill = Vec::new();
    for a in applied {
        let Some(m) = set.iter().find(|m| m.version == a.version) else {
            return Err(Error::Meta(format!(
                "table prefix {prefix:?} has migration {:04} ({}) applied, which this build \
                 does not know: the database was migrated by a newer artfs; use that build",
                a.version, a.name
            )));
        };
        match &a.checksum {
            None => backfill.push(a.version),
            Some(c) if *c == checksum(m) => {}
            Some(c) => {
                return Err(Error::Meta(format!(
                    "migration {:04} ({}) of table prefix {prefix:?} was applied with checksum \
                     {c}, but this build's migration has checksum {}: the migration was edited \
                     after it was applied; refusing to open the store (restore the original \
                     migration file, or add a new migration instead of editing this one)",
                    m.version,
                    m.name,
                    checksum(m)
                )));
            }
        }
    }
    Ok(backfill)
}

/// Split a migration into statements with the prefix substituted.
/// Comment lines go first, so a `;` in a comment splits nothing.
pub fn statements(m: &Migration, prefix: &str) -> Vec<String> {
    m.sql
        .replace("{p}", prefix)
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Bring a SQLite store's tables up to date (the store's flock keeps
/// daemons apart; SQLite serialises writers).
pub async fn run_sqlite(conn: &mut SqliteConnection, p: &str) -> Result<()> {
    check_prefix(p)?;
    sqlx::query(&format!(
        "CREATE TABLE IF NOT EXISTS {p}_migrations (version INTEGER PRIMARY KEY, \
         name TEXT NOT NULL, applied_at INTEGER NOT NULL, checksum TEXT)"
    ))
    .execute(&mut *conn)
    .await?;
    // Older builds made the table without checksums.
    let cols: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT name FROM pragma_table_info('{p}_migrations')"
    ))
    .fetch_all(&mut *conn)
    .await?;
    if !cols.iter().any(|c| c == "checksum") {
        sqlx::query(&format!(
            "ALTER TABLE {p}_migrations ADD COLUMN checksum TEXT"
        ))
        .execute(&mut *conn)
        .await?;
    }
    let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT version, name, checksum FROM {p}_migrations ORDER BY version"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let applied: Vec<Applied> = rows
        .into_iter()
        .map(|(version, name, checksum)| Applied {
            version,
            name,
            checksum,
        })
        .collect();
    let backfill = verify(SQLITE, &applied, p)?;
    for v in backfill {
        let m = SQLITE.iter().find(|m| m.version == v).expect("verified");
        tracing::info!(
            version = v,
            name = m.name,
            "recording the checksum of a migration applied by an older build"
        );
        sqlx::query(&format!(
            "UPDATE {p}_migrations SET checksum = ? WHERE version = ?"
        ))
        .bind(checksum(m))
        .bind(v)
        .execute(&mut *conn)
        .await?;
    }
    for m in SQLITE {
        if applied.iter().any(|a| a.version == m.version) {
            continue;
        }
        tracing::info!(version = m.version, name = m.name, "applying migration");
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        for stmt in statements(m, p) {
            sqlx::query(&stmt).execute(&mut *tx).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO {p}_migrations (version, name, applied_at, checksum) \
             VALUES (?, ?, ?, ?)"
        ))
        .bind(m.version)
        .bind(m.name)
        .bind(Timestamp::now().0)
        .bind(checksum(m))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// The advisory lock key of a prefix (advisory locks are per database;
/// PostgreSQL folds unquoted names to lower case, so `A` and `a` name the
/// same tables and take the same lock).
pub fn lock_key(prefix: &str) -> i64 {
    let prefix = prefix.to_ascii_lowercase();
    let h = Sha256::digest(format!("artfs migrations {prefix}").as_bytes());
    i64::from_be_bytes(h[..8].try_into().expect("8 bytes"))
}

/// Bring a PostgreSQL store's tables up to date. Every step (one
/// migration, or finding there is none left) is one transaction holding
/// the prefix's advisory lock, so concurrent openers queue, and each sees
/// what the one before it applied.
/// For a node that must not change the schema (a replica, a standby):
/// the tables of `p` exist and every migration this binary knows is
/// applied, unedited. Writes nothing.
pub async fn check_postgres(conn: &mut PgConnection, p: &str) -> Result<()> {
    check_prefix(p)?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{p}_migrations"))
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Err(Error::Meta(format!(
            "the database has no tables with prefix {p:?}: mount the store's writer first \
             (a replica or standby never creates them)"
        )));
    }
    let applied = applied_pg(conn, p).await?;
    verify(POSTGRES, &applied, p)?;
    if let Some(m) = POSTGRES
        .iter()
        .find(|m| !applied.iter().any(|a| a.version == m.version))
    {
        return Err(Error::Meta(format!(
            "the tables with prefix {p:?} lack migration {} ({}), which this artfs needs: \
             upgrade and restart the store's writer first (a replica or standby never \
             migrates the tables)",
            m.version, m.name
        )));
    }
    Ok(())
}

/// The migrations a PostgreSQL prefix has applied, in version order.
async fn applied_pg(conn: &mut PgConnection, p: &str) -> Result<Vec<Applied>> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as(&format!(
        "SELECT version, name, checksum FROM {p}_migrations ORDER BY version"
    ))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(version, name, checksum)| Applied {
            version,
            name,
            checksum: Some(checksum),
        })
        .collect())
}

pub async fn run_postgres(conn: &mut PgConnection, p: &str) -> Result<()> {
    check_prefix(p)?;
    loop {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(lock_key(p))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {p}_migrations (version BIGINT NOT NULL, \
             name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at BIGINT NOT NULL, \
             CONSTRAINT {p}_migrations_pk PRIMARY KEY (version))"
        ))
        .execute(&mut *tx)
        .await?;
        let applied = applied_pg(&mut tx, p).await?;
        verify(POSTGRES, &applied, p)?;
        let Some(m) = POSTGRES
            .iter()
            .find(|m| !applied.iter().any(|a| a.version == m.version))
        else {
            tx.commit().await?;
            return Ok(());
        };
        tracing::info!(
            version = m.version,
            name = m.name,
            prefix = p,
            "applying migration"
        );
        for stmt in statements(m, p) {
            sqlx::query(&stmt).execute(&mut *tx).await?;
        }
        sqlx::query(&format!(
            "INSERT INTO {p}_migrations (version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, $4)"
        ))
        .bind(m.version)
        .bind(m.name)
        .bind(checksum(m))
        .bind(Timestamp::now().0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_substituted_and_comments_dropped() {
        for set in [SQLITE, POSTGRES] {
            let stmts = statements(&set[0], "x1");
            assert!(stmts.iter().all(|s| !s.contains("{p}")));
            assert!(stmts.iter().any(|s| s.contains("CREATE TABLE x1_inodes")));
            assert!(stmts.iter().all(|s| !s.contains("--")));
        }
        let m = Migration {
            version: 99,
            name: "t",
            sql: "-- a note; with a semicolon\nCREATE TABLE {p}_t (a);\nSELECT 1;\n",
        };
        assert_eq!(statements(&m, "x"), ["CREATE TABLE x_t (a)", "\nSELECT 1"]);
    }

    #[test]
    fn both_engines_have_the_same_migrations() {
        let names = |s: &[Migration]| -> Vec<(i64, &str)> {
            s.iter().map(|m| (m.version, m.name)).collect()
        };
        assert_eq!(names(SQLITE), names(POSTGRES));
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(valid_prefix("artfs"));
        assert!(valid_prefix("storage_elem_01"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("1abc"));
        assert!(!valid_prefix("a; DROP TABLE x"));
        let max = max_prefix_len();
        assert!((40..63).contains(&max), "{max}");
        assert!(valid_prefix(&"a".repeat(max)));
        let e = check_prefix(&"a".repeat(max + 1)).unwrap_err().to_string();
        assert!(e.contains("too long") && e.contains("63"), "{e}");
        let longest = generated_names(&"a".repeat(max));
        assert!(longest.iter().all(|n| n.len() <= PG_MAX_IDENTIFIER));
        assert!(longest.iter().any(|n| n.len() == PG_MAX_IDENTIFIER));
        assert!(longest.iter().any(|n| n.ends_with("_inodes_orphans")));
    }

    #[test]
    fn edited_and_unknown_migrations_are_refused() {
        let ok = |v: i64| Applied {
            version: v,
            name: "x".into(),
            checksum: SQLITE.get(v as usize - 1).map(checksum),
        };
        assert_eq!(
            verify(SQLITE, &[ok(1), ok(2)], "p").unwrap(),
            Vec::<i64>::new()
        );
        let old = Applied {
            checksum: None,
            ..ok(3)
        };
        assert_eq!(verify(SQLITE, &[ok(1), old], "p").unwrap(), [3]);
        let edited = Applied {
            checksum: Some("00".into()),
            ..ok(2)
        };
        let e = verify(SQLITE, &[ok(1), edited], "p")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("migration 0002 (wal)") && e.contains("edited"),
            "{e}"
        );
        let e = verify(SQLITE, &[ok(1), ok(99)], "p")
            .unwrap_err()
            .to_string();
        assert!(e.contains("0099") && e.contains("newer"), "{e}");
    }
}
