//! PostgreSQL backend: the same store as [`super::sqlite`] on a shared
//! database, several stores per database by table prefix.
//!
//! Same tables, columns and meaning as the SQLite schema
//! (`migrations/postgres`): names, link targets and attribute values are
//! BYTEA, u64 values BIGINT bit patterns (`as i64` both ways), the search
//! index a weighted `tsvector` per inode built from the same text the FTS5
//! table holds (split by `query::index_text`), kept in the batch's
//! transaction.
//!
//! Durability: an ordinary batch commits with `synchronous_commit = off`
//! (SQLite's "commit without fsync"); a batch carrying pending intents, and
//! every [`MetaStore::sync`], commits with `synchronous_commit = on`, which
//! also makes every earlier commit durable (WAL is flushed in order).
//!
//! The driver is async: calls block on a runtime whose workers drive the
//! connections (the caller's when it is multi-threaded, else one of our own).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgArguments, PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Arguments, Postgres};
use tokio::runtime::{Handle, Runtime, RuntimeFlavor};

use super::{feed, migrate, redact, rows, Batch, Counters, Dentry, MetaStore, XattrList};
use crate::types::error::{Error, Result};
use crate::types::journal;
use crate::types::{DirEntry, Inode, Timestamp};

use super::rows::{INODE_COLS, INODE_NCOLS, WAL_COLS, WAL_NCOLS};
/// Bind parameters per statement the protocol allows (a 16-bit count).
pub const MAX_PARAMS: usize = 65_535;

/// Rows of `cols` columns per multi-row statement.
fn rows_per_chunk(cols: usize) -> usize {
    MAX_PARAMS / cols
}

/// The password to add to a URL that has none (never on the command line).
pub const PASSWORD_ENV: &str = "ARTFS_DB_PASSWORD";

pub struct PgStore {
    pool: PgPool,
    rt: Handle,
    /// A runtime of our own when the caller's cannot drive connections
    /// from other threads (current-thread); kept alive with the pool.
    _own_rt: Option<Runtime>,
    p: String,
    /// The writer's lease, when this handle claimed it (fencing).
    lease: super::pg_lease::Lease,
    /// The last change-feed row this handle wrote (see [`feed`]).
    feed_written: std::sync::atomic::AtomicU64,
    q_get_inode: String,
    q_lookup: String,
    q_read_dir: String,
    q_xattrs: String,
}

/// Whether a `postgres://` URL carries a password (user:pass@ or
/// `password=` in the query).
fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, query) = {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        (&rest[..end], rest.split_once('?').map(|(_, q)| q))
    };
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    in_userinfo || query.is_some_and(|q| q.split('&').any(|kv| kv.starts_with("password=")))
}

/// How to connect to `url`, with the password from [`PASSWORD_ENV`] when
/// the URL has none.
fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let mut opts = PgConnectOptions::from_str(url)
        .map_err(|e| Error::Meta(format!("invalid database URL {}: {e}", redact(url))))?
        .application_name("artfs");
    if !has_password(url) {
        if let Some(pw) = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()) {
            opts = opts.password(&pw);
        }
    }
    Ok(opts)
}

/// Whether the database at `url` has the tables of `prefix`, found
/// without creating or migrating anything (for read-only commands).
pub async fn prefix_exists(url: &str, prefix: &str) -> Result<bool> {
    migrate::check_prefix(prefix)?;
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect_with(&connect_options(url)?)
        .await
        .map_err(|e| Error::Meta(format!("cannot connect to {}: {e}", redact(url))))?;
    // Unquoted, as the tables were created: PostgreSQL folds the case.
    let found: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{prefix}_store"))
        .fetch_one(&mut conn)
        .await?;
    let _ = sqlx::Connection::close(conn).await;
    Ok(found)
}

impl PgStore {
    /// Connect to `url` (`postgres://` or `postgresql://`, with `host=` a
    /// socket directory, `sslmode=`, ...), and create or migrate the
    /// tables of `prefix`. A URL without a password takes the one in
    /// `ARTFS_DB_PASSWORD`, if set.
    pub fn open(url: &str, prefix: &str, rt: Handle) -> Result<PgStore> {
        Self::open_as(url, prefix, rt, super::Schema::Migrate)
    }

    /// [`PgStore::open`], creating and migrating the tables or only
    /// checking they are current (`schema`).
    pub fn open_as(url: &str, prefix: &str, rt: Handle, schema: super::Schema) -> Result<PgStore> {
        migrate::check_prefix(prefix)?;
        let shown = redact(url);
        let opts = connect_options(url)?;
        let own_rt = match rt.runtime_flavor() {
            RuntimeFlavor::CurrentThread => Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("artfs-pg")
                    .enable_all()
                    .build()?,
            ),
            _ => None,
        };
        let rt = own_rt.as_ref().map_or(rt, |r| r.handle().clone());
        let pool = rt
            .block_on(
                PgPoolOptions::new()
                    .max_connections(6)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(opts),
            )
            .map_err(|e| Error::Meta(format!("cannot connect to {shown}: {e}")))?;
        let p = prefix;
        let store = PgStore {
            pool,
            rt,
            _own_rt: own_rt,
            p: p.to_string(),
            feed_written: 0.into(),
            lease: Default::default(),
            q_get_inode: format!("SELECT {INODE_COLS} FROM {p}_inodes WHERE ino = $1"),
            q_lookup: format!(
                "SELECT ino, kind, id FROM {p}_dentries WHERE parent = $1 AND name = $2"
            ),
            q_read_dir: format!(
                "SELECT id, ino, kind, name FROM {p}_dentries WHERE parent = $1 AND id > $2 \
                 ORDER BY id LIMIT $3"
            ),
            q_xattrs: format!("SELECT name, value FROM {p}_xattrs WHERE ino = $1 ORDER BY name"),
        };
        store.rt.block_on(async {
            let mut conn = store.pool.acquire().await?;
            match schema {
                super::Schema::Migrate => migrate::run_postgres(&mut conn, p).await,
                super::Schema::Existing => migrate::check_postgres(&mut conn, p).await,
            }
        })?;
        Ok(store)
    }

    fn block<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
    ) -> Result<T> {
        Ok(self.rt.block_on(f)?)
    }
}

fn add<'q, T>(args: &mut PgArguments, v: T)
where
    T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
{
    // Encoding plain integers, strings and byte strings cannot fail.
    let _ = args.add(v);
}

/// "($1, $2), ($3, $4)" for `rows` rows of `cols` columns.
fn tuples(rows: usize, cols: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 6);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * cols + c + 1).to_string());
        }
        out.push(')');
    }
    out
}

fn ino_array(inos: impl IntoIterator<Item = u64>) -> Vec<i64> {
    inos.into_iter().map(|i| i as i64).collect()
}

/// The four columns of an inode's search document, as the SQLite index
/// holds them (names of all links, description, version, other `user.`
/// values), each split as queries are split.
fn search_doc(names: &[Vec<u8>], xattrs: &[(Vec<u8>, Vec<u8>)]) -> [String; 4] {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let join = |parts: Vec<String>| super::query::index_text(&parts.join(" "));
    let value_of = |n: &[u8]| {
        xattrs
            .iter()
            .find(|(k, _)| k.as_slice() == n)
            .map(|(_, v)| super::query::index_text(&text(v)))
            .unwrap_or_default()
    };
    let custom = xattrs
        .iter()
        .filter(|(k, _)| k.starts_with(b"user.") && !k.starts_with(b"user.artstore."))
        .map(|(_, v)| text(v))
        .collect();
    [
        join(names.iter().map(|n| text(n)).collect()),
        value_of(b"user.artstore.description"),
        value_of(b"user.artstore.version"),
        join(custom),
    ]
}

impl PgStore {
    async fn apply_async(&self, b: &Batch) -> Result<()> {
        let p = &self.p;
        // Durable at commit only when the batch carries intents that must
        // be on disk before their side effects (see the module doc).
        let durable = b
            .journal
            .iter()
            .any(|r| r.status == journal::Status::Pending);
        let mut tx = self
            .pool
            .begin_with(if durable {
                "BEGIN; SET LOCAL synchronous_commit = on"
            } else {
                "BEGIN; SET LOCAL synchronous_commit = off"
            })
            .await?;
        // Fencing: a writer whose lease passed to another commits nothing.
        self.lease.check(&mut tx, p).await?;
        // Entries first go away (all touched keys), then come back with
        // their final state, so moves and replacements never collide.
        for chunk in b.dentries.chunks(rows_per_chunk(2)) {
            let sql = format!(
                "DELETE FROM {p}_dentries WHERE (parent, name) IN (VALUES {})",
                tuples(chunk.len(), 2)
            );
            let mut args = PgArguments::default();
            for ((parent, name), _) in chunk {
                add(&mut args, *parent as i64);
                add(&mut args, name.as_slice());
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        let gone = ino_array(
            b.inodes
                .iter()
                .filter(|(_, i)| i.is_none())
                .map(|(ino, _)| *ino),
        );
        if !gone.is_empty() {
            sqlx::query(&format!("DELETE FROM {p}_inodes WHERE ino = ANY($1)"))
                .bind(&gone)
                .execute(&mut *tx)
                .await?;
        }
        // The last state of an inode wins; one statement may not touch a
        // row twice here.
        let mut live: Vec<&Inode> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for i in b.inodes.iter().rev().filter_map(|(_, i)| i.as_ref()) {
            if seen.insert(i.ino) {
                live.push(i);
            }
        }
        live.reverse();
        for chunk in live.chunks(rows_per_chunk(INODE_NCOLS)) {
            let sql = super::rows::upsert_inodes(
                &format!("{p}_inodes"),
                &tuples(chunk.len(), INODE_NCOLS),
            );
            let mut args = PgArguments::default();
            for i in chunk {
                rows::push_inode(&mut args, i);
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        if !b.xattrs.is_empty() {
            let owners = ino_array(b.xattrs.iter().map(|(ino, _)| *ino));
            sqlx::query(&format!("DELETE FROM {p}_xattrs WHERE ino = ANY($1)"))
                .bind(&owners)
                .execute(&mut *tx)
                .await?;
        }
        let rows: Vec<(u64, &[u8], &[u8])> = b
            .xattrs
            .iter()
            .filter_map(|(ino, l)| l.as_ref().map(|l| (ino, l)))
            .flat_map(|(ino, l)| l.iter().map(|(n, v)| (*ino, n.as_slice(), v.as_slice())))
            .collect();
        for chunk in rows.chunks(rows_per_chunk(3)) {
            let sql = format!(
                "INSERT INTO {p}_xattrs (ino, name, value) VALUES {}",
                tuples(chunk.len(), 3)
            );
            let mut args = PgArguments::default();
            for (ino, n, v) in chunk {
                add(&mut args, *ino as i64);
                add(&mut args, *n);
                add(&mut args, *v);
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        let present: Vec<(&(u64, Vec<u8>), &Dentry)> = b
            .dentries
            .iter()
            .filter_map(|(k, d)| d.as_ref().map(|d| (k, d)))
            .collect();
        for chunk in present.chunks(rows_per_chunk(5)) {
            let sql = format!(
                "INSERT INTO {p}_dentries (id, parent, name, ino, kind) VALUES {}",
                tuples(chunk.len(), 5)
            );
            let mut args = PgArguments::default();
            for ((parent, name), d) in chunk {
                add(&mut args, d.id as i64);
                add(&mut args, *parent as i64);
                add(&mut args, name.as_slice());
                add(&mut args, d.ino as i64);
                add(&mut args, d.kind as i64);
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        for chunk in b.journal.chunks(rows_per_chunk(WAL_NCOLS)) {
            let sql = format!(
                "INSERT INTO {p}_wal ({WAL_COLS}) VALUES {}",
                tuples(chunk.len(), WAL_NCOLS)
            );
            let mut args = PgArguments::default();
            for r in chunk {
                add(&mut args, r.id.to_string());
                add(&mut args, r.op.as_str());
                add(&mut args, r.status.as_str());
                add(&mut args, r.file_id.clone());
                add(&mut args, r.data.to_string());
                add(&mut args, r.error.clone());
                add(&mut args, journal::rfc3339(r.started_at));
                add(&mut args, r.completed_at.map(journal::rfc3339));
                add(&mut args, r.duration_ms());
                add(&mut args, r.user_id.clone());
                add(&mut args, r.outcome.clone());
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        if !b.journal_done.is_empty() {
            self.settle_rows(&mut tx, &b.journal_done).await?;
        }
        // The search index follows every inode whose names or attributes
        // may have changed (every entry change also changes its inode).
        let mut touched: Vec<i64> = b
            .inodes
            .iter()
            .map(|(i, _)| *i as i64)
            .chain(b.xattrs.iter().map(|(i, _)| *i as i64))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        if !touched.is_empty() {
            self.reindex(&mut tx, &touched).await?;
        }
        if let Some(c) = &b.config {
            sqlx::query(&format!(
                "INSERT INTO {p}_config \
                 (id, mode, mode_changed_at, mode_changed_by, capacity) VALUES (1, $1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, \
                 mode_changed_at = excluded.mode_changed_at, \
                 mode_changed_by = excluded.mode_changed_by, capacity = excluded.capacity"
            ))
            .bind(&c.mode)
            .bind(&c.mode_changed_at)
            .bind(&c.mode_changed_by)
            .bind(c.capacity.map(|v| v as i64))
            .execute(&mut *tx)
            .await?;
        }
        let seq = match feed::what_changed(b) {
            // One round trip for the feed row, the usage and the
            // reservation (a create's durable batch waits for each).
            Some(c) => Some(
                self.record_change(&mut tx, &c, b.usage_delta, b.ino_reserved)
                    .await?,
            ),
            None => {
                if b.usage_delta != (0, 0) {
                    sqlx::query(&format!(
                        "UPDATE {p}_config SET used_bytes = used_bytes + $1, \
                         file_count = file_count + $2 WHERE id = 1"
                    ))
                    .bind(b.usage_delta.0)
                    .bind(b.usage_delta.1)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(r) = b.ino_reserved {
                    sqlx::query(&format!(
                        "UPDATE {p}_store SET ino_reserved = greatest(ino_reserved, $1) \
                         WHERE id = 1"
                    ))
                    .bind(r as i64)
                    .execute(&mut *tx)
                    .await?;
                }
                None
            }
        };
        tx.commit().await?;
        if let Some(seq) = seq {
            self.feed_written
                .store(seq, std::sync::atomic::Ordering::Release);
        }
        Ok(())
    }

    /// Settle log rows in one statement (a row per update was one round
    /// trip each: a batch of unlinks settles as many rows as it holds).
    /// When a batch settles one row twice, the later update wins, as
    /// applying them in order would.
    async fn settle_rows(
        &self,
        tx: &mut sqlx::PgConnection,
        updates: &[journal::Update],
    ) -> std::result::Result<(), sqlx::Error> {
        let p = &self.p;
        let mut last: std::collections::HashMap<uuid::Uuid, &journal::Update> =
            std::collections::HashMap::new();
        for u in updates {
            last.insert(u.id, u);
        }
        let mut ids = Vec::with_capacity(last.len());
        let mut statuses = Vec::with_capacity(last.len());
        let mut outcomes = Vec::with_capacity(last.len());
        let mut errors = Vec::with_capacity(last.len());
        let mut done = Vec::with_capacity(last.len());
        let mut durations = Vec::with_capacity(last.len());
        for u in last.values() {
            ids.push(u.id.to_string());
            statuses.push(u.status.as_str());
            outcomes.push(u.outcome.as_deref());
            errors.push(u.error.as_deref());
            done.push(journal::rfc3339(u.completed_at));
            durations.push(u.duration_ms);
        }
        sqlx::query(&format!(
            "UPDATE {p}_wal w SET status = u.status, outcome = coalesce(u.outcome, w.outcome), \
             error_message = coalesce(u.error, w.error_message), completed_at = u.done, \
             duration_ms = coalesce(u.ms, round(((extract(epoch FROM u.done::timestamptz) \
             - extract(epoch FROM w.started_at::timestamptz)) * 1000)::numeric, 3)::float8) \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::float8[]) AS u(id, status, outcome, error, done, ms) \
             WHERE w.transaction_id = u.id"
        ))
        .bind(&ids)
        .bind(&statuses)
        .bind(&outcomes)
        .bind(&errors)
        .bind(&done)
        .bind(&durations)
        .execute(tx)
        .await?;
        Ok(())
    }

    /// The batch's row of the change feed (see [`feed`]), numbered by the
    /// counter row this transaction locks until it commits; with the
    /// batch's usage delta and inode reservation in the same statement
    /// (data-modifying CTEs run whether or not the query reads them).
    async fn record_change(
        &self,
        tx: &mut sqlx::PgConnection,
        c: &feed::Change,
        usage: (i64, i64),
        reserved: Option<u64>,
    ) -> std::result::Result<u64, sqlx::Error> {
        let p = &self.p;
        let inos: Vec<i64> = c.inos.iter().map(|i| *i as i64).collect();
        let parents: Vec<i64> = c.entries.iter().map(|(p, _)| *p as i64).collect();
        let names: Vec<&[u8]> = c.entries.iter().map(|(_, n)| n.as_slice()).collect();
        let seq: i64 = sqlx::query_scalar(&format!(
            "WITH u AS (UPDATE {p}_config SET used_bytes = used_bytes + $5, \
                          file_count = file_count + $6 \
                        WHERE id = 1 AND ($5 <> 0 OR $6 <> 0) RETURNING 1), \
                  r AS (UPDATE {p}_store SET ino_reserved = greatest(ino_reserved, $7) \
                        WHERE id = 1 AND $7::bigint IS NOT NULL RETURNING 1), \
                  s AS (UPDATE {p}_feed SET seq = seq + 1 WHERE id = 1 RETURNING seq) \
             INSERT INTO {p}_changes (seq, inos, parents, names, everything) \
             SELECT s.seq, $1, $2, $3, $4 FROM s RETURNING seq"
        ))
        .bind(&inos)
        .bind(&parents)
        .bind(&names)
        .bind(c.everything)
        .bind(usage.0)
        .bind(usage.1)
        .bind(reserved.map(|r| r as i64))
        .fetch_one(tx)
        .await?;
        Ok(seq.max(0) as u64)
    }

    /// Rebuild the search rows of `inos` from what this transaction sees:
    /// one row per existing inode (empty documents included, as in FTS5),
    /// none for an inode that is gone.
    async fn reindex(
        &self,
        tx: &mut sqlx::PgConnection,
        inos: &[i64],
    ) -> std::result::Result<(), sqlx::Error> {
        let p = &self.p;
        type DocRow = (i64, Vec<Vec<u8>>, Vec<Vec<u8>>, Vec<Vec<u8>>);
        let rows: Vec<DocRow> = sqlx::query_as(&format!(
            "SELECT i.ino, \
               ARRAY(SELECT d.name FROM {p}_dentries d WHERE d.ino = i.ino ORDER BY d.id), \
               ARRAY(SELECT x.name FROM {p}_xattrs x WHERE x.ino = i.ino ORDER BY x.name), \
               ARRAY(SELECT x.value FROM {p}_xattrs x WHERE x.ino = i.ino ORDER BY x.name) \
             FROM {p}_inodes i WHERE i.ino = ANY($1)"
        ))
        .bind(inos)
        .fetch_all(&mut *tx)
        .await?;
        let gone: Vec<i64> = inos
            .iter()
            .copied()
            .filter(|i| !rows.iter().any(|r| r.0 == *i))
            .collect();
        if !gone.is_empty() {
            sqlx::query(&format!("DELETE FROM {p}_search WHERE ino = ANY($1)"))
                .bind(&gone)
                .execute(&mut *tx)
                .await?;
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut cols: [Vec<String>; 4] = Default::default();
        let mut ids = Vec::with_capacity(rows.len());
        for (ino, names, xnames, xvalues) in rows {
            let xattrs: Vec<(Vec<u8>, Vec<u8>)> = xnames.into_iter().zip(xvalues).collect();
            for (col, text) in cols.iter_mut().zip(search_doc(&names, &xattrs)) {
                col.push(text);
            }
            ids.push(ino);
        }
        let [names, description, version, custom] = cols;
        sqlx::query(&format!(
            "INSERT INTO {p}_search (ino, doc) \
             SELECT t.ino, setweight(to_tsvector('simple', t.n), 'A') \
               || setweight(to_tsvector('simple', t.d), 'B') \
               || setweight(to_tsvector('simple', t.v), 'C') \
               || setweight(to_tsvector('simple', t.c), 'D') \
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) \
               AS t(ino, n, d, v, c) \
             ON CONFLICT (ino) DO UPDATE SET doc = excluded.doc"
        ))
        .bind(&ids)
        .bind(&names)
        .bind(&description)
        .bind(&version)
        .bind(&custom)
        .execute(&mut *tx)
        .await?;
        Ok(())
    }
}

impl MetaStore for PgStore {
    fn store_identity(&self) -> Result<Option<(String, String)>> {
        let p = &self.p;
        self.block(
            sqlx::query_as(&format!(
                "SELECT store_id, backing FROM {p}_store WHERE id = 1"
            ))
            .fetch_optional(&self.pool),
        )
    }

    fn init_store(&self, store_id: &str, backing: &str, root: &Inode) -> Result<()> {
        let batch = Batch {
            inodes: vec![(root.ino, Some(root.clone()))],
            ..Batch::default()
        };
        self.apply(&batch)?;
        let p = &self.p;
        self.block(
            sqlx::query(&format!(
                "INSERT INTO {p}_store (id, store_id, backing, created_at, ino_reserved) \
                 VALUES (1, $1, $2, $3, $4)"
            ))
            .bind(store_id)
            .bind(backing)
            .bind(Timestamp::now().0)
            .bind(root.ino as i64 + 1)
            .execute(&self.pool),
        )?;
        Ok(())
    }

    fn counters(&self) -> Result<Counters> {
        let p = &self.p;
        let (max_ino, reserved, max_id): (i64, i64, i64) = self.block(
            sqlx::query_as(&format!(
                "SELECT (SELECT coalesce(max(ino), 0) FROM {p}_inodes), \
                        (SELECT coalesce(max(ino_reserved), 0) FROM {p}_store), \
                        (SELECT coalesce(max(id), 0) FROM {p}_dentries)"
            ))
            .fetch_one(&self.pool),
        )?;
        Ok(Counters {
            max_ino: max_ino as u64,
            ino_reserved: reserved as u64,
            max_dentry_id: max_id as u64,
        })
    }

    fn get_inode(&self, ino: u64) -> Result<Option<Inode>> {
        let row = self.block(
            sqlx::query(&self.q_get_inode)
                .bind(ino as i64)
                .fetch_optional(&self.pool),
        )?;
        row.as_ref().map(rows::inode).transpose()
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Dentry>> {
        // Test builds: a lookup PostgreSQL itself refuses (a real database
        // error, with its SQLSTATE), for tests/error_replies.rs.
        fail::fail_point!("meta::lookup", |_| -> Result<Option<Dentry>> {
            self.block(sqlx::query("SELECT * FROM fail_point_meta_lookup").execute(&self.pool))?;
            Ok(None)
        });
        let row: Option<(i64, i64, i64)> = self.block(
            sqlx::query_as(&self.q_lookup)
                .bind(parent as i64)
                .bind(name)
                .fetch_optional(&self.pool),
        )?;
        row.map(|(ino, k, id)| {
            Ok(Dentry {
                ino: ino as u64,
                kind: rows::kind_of(k)?,
                id: id as u64,
            })
        })
        .transpose()
    }

    fn read_dir(&self, parent: u64, after: u64, limit: usize) -> Result<Vec<DirEntry>> {
        let rows: Vec<(i64, i64, i64, Vec<u8>)> = self.block(
            sqlx::query_as(&self.q_read_dir)
                .bind(parent as i64)
                .bind(after as i64)
                .bind(limit.min(i64::MAX as usize) as i64)
                .fetch_all(&self.pool),
        )?;
        rows.into_iter()
            .map(|(id, ino, kind, name)| {
                Ok(DirEntry {
                    offset: id as u64,
                    ino: ino as u64,
                    kind: rows::kind_of(kind)?,
                    name,
                })
            })
            .collect()
    }

    fn xattrs(&self, ino: u64) -> Result<XattrList> {
        self.block(
            sqlx::query_as(&self.q_xattrs)
                .bind(ino as i64)
                .fetch_all(&self.pool),
        )
    }

    fn inode_count(&self) -> Result<u64> {
        let p = &self.p;
        let n: i64 = self.block(
            sqlx::query_scalar(&format!("SELECT count(*) FROM {p}_inodes")).fetch_one(&self.pool),
        )?;
        Ok(n as u64)
    }

    fn unhashed_files(&self) -> Result<Vec<u64>> {
        let p = &self.p;
        let v: Vec<i64> = self.block(
            sqlx::query_scalar(&format!(
                "SELECT ino FROM {p}_inodes WHERE kind = 1 AND nlink > 0 AND sha256 IS NULL \
                 ORDER BY ino"
            ))
            .fetch_all(&self.pool),
        )?;
        Ok(v.into_iter().map(|i| i as u64).collect())
    }

    fn unhashed_count(&self) -> Result<u64> {
        let p = &self.p;
        let n: i64 = self.block(
            sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {p}_inodes WHERE kind = 1 AND nlink > 0 AND sha256 IS NULL"
            ))
            .fetch_one(&self.pool),
        )?;
        Ok(n as u64)
    }

    fn orphans(&self) -> Result<Vec<u64>> {
        let p = &self.p;
        let v: Vec<i64> = self.block(
            sqlx::query_scalar(&format!("SELECT ino FROM {p}_inodes WHERE nlink = 0"))
                .fetch_all(&self.pool),
        )?;
        Ok(v.into_iter().map(|i| i as u64).collect())
    }

    fn inodes_of(&self, inos: &[u64]) -> Result<Vec<Inode>> {
        let p = &self.p;
        let rows = self.block(
            sqlx::query(&format!(
                "SELECT {INODE_COLS} FROM {p}_inodes WHERE ino = ANY($1)"
            ))
            .bind(ino_array(inos.iter().copied()))
            .fetch_all(&self.pool),
        )?;
        rows.iter().map(rows::inode).collect()
    }

    fn links_of(&self, inos: &[u64]) -> Result<Vec<(u64, u64, Vec<u8>)>> {
        let p = &self.p;
        let rows: Vec<(i64, i64, Vec<u8>)> = self.block(
            sqlx::query_as(&format!(
                "SELECT ino, parent, name FROM {p}_dentries WHERE ino = ANY($1) ORDER BY id"
            ))
            .bind(ino_array(inos.iter().copied()))
            .fetch_all(&self.pool),
        )?;
        Ok(rows
            .into_iter()
            .map(|(i, p, n)| (i as u64, p as u64, n))
            .collect())
    }

    fn xattrs_of(&self, inos: &[u64]) -> Result<super::XattrRows> {
        let p = &self.p;
        let rows: Vec<(i64, Vec<u8>, Vec<u8>)> = self.block(
            sqlx::query_as(&format!(
                "SELECT ino, name, value FROM {p}_xattrs WHERE ino = ANY($1) ORDER BY ino, name"
            ))
            .bind(ino_array(inos.iter().copied()))
            .fetch_all(&self.pool),
        )?;
        Ok(rows.into_iter().map(|(i, n, v)| (i as u64, n, v)).collect())
    }

    fn xattr_values(&self, name: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
        let p = &self.p;
        let rows: Vec<(i64, Vec<u8>)> = self.block(
            sqlx::query_as(&format!(
                "SELECT ino, value FROM {p}_xattrs WHERE name = $1"
            ))
            .bind(name)
            .fetch_all(&self.pool),
        )?;
        Ok(rows.into_iter().map(|(i, v)| (i as u64, v)).collect())
    }

    fn clear_namespace(&self) -> Result<()> {
        let p = &self.p;
        self.block(async {
            let mut tx = self.pool.begin().await?;
            // The search rows follow the inodes they index.
            for t in ["inodes", "dentries", "xattrs", "search"] {
                sqlx::query(&format!("DELETE FROM {p}_{t}"))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    fn init_identity(&self, store_id: &str, backing: &str, ino_reserved: u64) -> Result<()> {
        let p = &self.p;
        self.block(
            sqlx::query(&format!(
                "INSERT INTO {p}_store (id, store_id, backing, created_at, ino_reserved) \
                 VALUES (1, $1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET \
                 store_id = excluded.store_id, backing = excluded.backing, \
                 created_at = excluded.created_at, ino_reserved = excluded.ino_reserved"
            ))
            .bind(store_id)
            .bind(backing)
            .bind(Timestamp::now().0)
            .bind(ino_reserved as i64)
            .execute(&self.pool),
        )?;
        Ok(())
    }

    fn search(&self, query: &str, limit: usize, offset: usize) -> Result<Vec<(u64, f64)>> {
        let p = &self.p;
        // The grammar both backends share (meta/query.rs): the same queries
        // are accepted and refused as on SQLite; no input reaches
        // to_tsquery raw.
        let expr = super::query::to_tsquery(&super::query::parse_search(query)?);
        tracing::debug!(query, tsquery = %expr, "search");
        // Rank: ts_rank_cd, negated so that lower is better as with FTS5's
        // bm25; ties by inode number.
        let rows: std::result::Result<Vec<(i64, f64)>, sqlx::Error> = self.rt.block_on(
            sqlx::query_as(&format!(
                "SELECT s.ino, -ts_rank_cd(s.doc, q)::float8 AS r \
                 FROM {p}_search s, to_tsquery('simple', $1) q \
                 WHERE s.doc @@ q ORDER BY r, s.ino LIMIT $2 OFFSET $3"
            ))
            .bind(&expr)
            .bind(limit.min(i64::MAX as usize) as i64)
            .bind(offset.min(i64::MAX as usize) as i64)
            .fetch_all(&self.pool),
        );
        match rows {
            Ok(rows) => Ok(rows.into_iter().map(|(i, r)| (i as u64, r)).collect()),
            // The renderer quotes every lexeme; a refusal (class 42: syntax)
            // is still the query's fault.
            Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("42")) => {
                tracing::debug!(error = %e.message(), "search query refused");
                Err(Error::posix(libc::EINVAL, "malformed search query"))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn config(&self) -> Result<Option<super::StoreConfig>> {
        let p = &self.p;
        type Row = (String, String, String, Option<i64>, i64, i64);
        let row: Option<Row> = self.block(
            sqlx::query_as(&format!(
                "SELECT mode, mode_changed_at, mode_changed_by, capacity, used_bytes, \
                 file_count FROM {p}_config WHERE id = 1"
            ))
            .fetch_optional(&self.pool),
        )?;
        Ok(
            row.map(|(mode, at, by, cap, used, files)| super::StoreConfig {
                mode,
                mode_changed_at: at,
                mode_changed_by: by,
                capacity: cap.map(|c| c as u64),
                used_bytes: used.max(0) as u64,
                file_count: files.max(0) as u64,
            }),
        )
    }

    fn find_by_file_id(&self, file_id: &str) -> Result<Option<u64>> {
        let p = &self.p;
        let v: Option<i64> = self.block(
            sqlx::query_scalar(&format!("SELECT ino FROM {p}_inodes WHERE file_id = $1"))
                .bind(file_id)
                .fetch_optional(&self.pool),
        )?;
        Ok(v.map(|i| i as u64))
    }

    fn files_newest_first(
        &self,
        after: Option<(Timestamp, &str)>,
        limit: usize,
    ) -> Result<Vec<Inode>> {
        let p = &self.p;
        // File ids compare bytewise (`C`), as on SQLite and as the partial
        // index `{p}_inodes_listing` is ordered, whatever the collation.
        let (key, n) = if after.is_some() {
            (
                "AND (crtime < $1 OR (crtime = $1 AND file_id COLLATE \"C\" < $2))",
                3,
            )
        } else {
            ("", 1)
        };
        let sql = format!(
            "SELECT {INODE_COLS} FROM {p}_inodes WHERE kind = 1 AND nlink > 0 {key} \
             ORDER BY crtime DESC, file_id COLLATE \"C\" DESC LIMIT ${n}"
        );
        let mut q = sqlx::query(&sql);
        if let Some((t, id)) = after {
            q = q.bind(t.0).bind(id.to_string());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.block(q.bind(limit).fetch_all(&self.pool))?;
        rows.iter().map(rows::inode).collect()
    }

    fn pending_journal(&self) -> Result<Vec<journal::Record>> {
        let p = &self.p;
        let rows = self.block(
            sqlx::query(&format!(
                "SELECT {WAL_COLS} FROM {p}_wal WHERE status = 'pending' ORDER BY seq"
            ))
            .fetch_all(&self.pool),
        )?;
        rows.iter().map(rows::record).collect()
    }

    fn pending_of(&self, op: journal::Op) -> Result<Vec<journal::Record>> {
        let p = &self.p;
        let rows = self.block(
            sqlx::query(&format!(
                "SELECT {WAL_COLS} FROM {p}_wal WHERE status = 'pending' \
                 AND operation_type = $1 ORDER BY seq"
            ))
            .bind(op.as_str())
            .fetch_all(&self.pool),
        )?;
        rows.iter().map(rows::record).collect()
    }

    fn journal_row(&self, id: uuid::Uuid) -> Result<Option<journal::Record>> {
        let p = &self.p;
        let row = self.block(
            sqlx::query(&format!(
                "SELECT {WAL_COLS} FROM {p}_wal WHERE transaction_id = $1"
            ))
            .bind(id.to_string())
            .fetch_optional(&self.pool),
        )?;
        row.as_ref().map(rows::record).transpose()
    }

    fn journal_counts(&self) -> Result<Vec<(String, u64)>> {
        let p = &self.p;
        // Byte order, as SQLite sorts text.
        let rows: Vec<(String, i64)> = self.block(
            sqlx::query_as(&format!(
                "SELECT status, count(*) FROM {p}_wal GROUP BY status \
                 ORDER BY status COLLATE \"C\""
            ))
            .fetch_all(&self.pool),
        )?;
        Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
    }

    fn record_check(&self, r: &super::CheckResult) -> Result<()> {
        super::check_result_valid(r)?;
        let p = &self.p;
        self.block(
            sqlx::query(&format!(
                "INSERT INTO {p}_checks (kind, finished_at, outcome, problems, summary) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind) DO UPDATE SET \
                 finished_at = excluded.finished_at, outcome = excluded.outcome, \
                 problems = excluded.problems, summary = excluded.summary"
            ))
            .bind(&r.kind)
            .bind(&r.finished_at)
            .bind(&r.outcome)
            .bind(i64::try_from(r.problems).unwrap_or(i64::MAX))
            .bind(&r.summary)
            .execute(&self.pool),
        )?;
        Ok(())
    }

    fn checks(&self) -> Result<Vec<super::CheckResult>> {
        let rows: Vec<super::CheckRow> = self.block(
            sqlx::query_as(&super::CheckResult::select_sql(&self.p)).fetch_all(&self.pool),
        )?;
        Ok(rows.into_iter().map(super::CheckResult::from_row).collect())
    }

    fn prune_journal(&self, keep: &journal::Retention, limit: u64) -> Result<u64> {
        let p = &self.p;
        let now = Timestamp::now().0;
        let age = |d: std::time::Duration| journal::rfc3339(Timestamp(now - d.as_nanos() as i64));
        let committed_before = age(keep.committed_max_age);
        let failed_before = age(keep.failed_max_age);
        let left = |n: u64| limit.saturating_sub(n).min(i64::MAX as u64) as i64;
        // RFC 3339 text compares as time in byte order (COLLATE "C", as
        // SQLite compares it); a locale's collation need not.
        self.block(async {
            // Past the age, then beyond the count (the newest kept), then
            // failures by their own age: each the oldest first, each
            // walking at most `limit` index rows (as in sqlite.rs, which
            // says why).
            let mut n = sqlx::query(&format!(
                "DELETE FROM {p}_wal WHERE seq IN (SELECT seq FROM {p}_wal \
                 WHERE status = 'committed' ORDER BY seq LIMIT $1) \
                 AND completed_at COLLATE \"C\" < $2"
            ))
            .bind(left(0))
            .bind(&committed_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if n < limit {
                n += sqlx::query(&format!(
                    "DELETE FROM {p}_wal WHERE seq IN (SELECT seq FROM {p}_wal \
                     WHERE status = 'committed' AND seq <= \
                     (SELECT max(seq) FROM {p}_wal WHERE status = 'committed') - $1 \
                     ORDER BY seq LIMIT $2)"
                ))
                .bind(keep.committed_max_rows.min(i64::MAX as u64) as i64)
                .bind(left(n))
                .execute(&self.pool)
                .await?
                .rows_affected();
            }
            if n < limit {
                n += sqlx::query(&format!(
                    "DELETE FROM {p}_wal WHERE seq IN (SELECT seq FROM {p}_wal \
                     WHERE status IN ('failed', 'rolled_back') ORDER BY seq LIMIT $1) \
                     AND completed_at COLLATE \"C\" < $2"
                ))
                .bind(left(n))
                .bind(&failed_before)
                .execute(&self.pool)
                .await?
                .rows_affected();
            }
            // The change feed: a replica away longer than this re-reads
            // everything (it finds the gap). As many rows at most.
            sqlx::query(&format!(
                "DELETE FROM {p}_changes WHERE seq IN (SELECT seq FROM {p}_changes \
                 WHERE at < now() - make_interval(secs => $1) \
                 OR seq <= (SELECT seq FROM {p}_feed WHERE id = 1) - $2 \
                 ORDER BY seq LIMIT $3)"
            ))
            .bind(feed::KEEP.as_secs_f64())
            .bind(feed::KEEP_ROWS)
            .bind(left(0))
            .execute(&self.pool)
            .await?;
            Ok(n)
        })
    }

    fn all_inodes(&self) -> Result<Vec<Inode>> {
        let p = &self.p;
        let rows = self.block(
            sqlx::query(&format!("SELECT {INODE_COLS} FROM {p}_inodes ORDER BY ino"))
                .fetch_all(&self.pool),
        )?;
        rows.iter().map(rows::inode).collect()
    }

    fn all_dentries(&self) -> Result<Vec<(u64, Vec<u8>, Dentry)>> {
        let p = &self.p;
        let rows: Vec<(i64, Vec<u8>, i64, i64, i64)> = self.block(
            sqlx::query_as(&format!(
                "SELECT parent, name, ino, kind, id FROM {p}_dentries ORDER BY id"
            ))
            .fetch_all(&self.pool),
        )?;
        rows.into_iter()
            .map(|(parent, name, ino, kind, id)| {
                Ok((
                    parent as u64,
                    name,
                    Dentry {
                        ino: ino as u64,
                        kind: rows::kind_of(kind)?,
                        id: id as u64,
                    },
                ))
            })
            .collect()
    }

    fn xattr_owners(&self) -> Result<Vec<u64>> {
        let p = &self.p;
        let v: Vec<i64> = self.block(
            sqlx::query_scalar(&format!("SELECT DISTINCT ino FROM {p}_xattrs ORDER BY ino"))
                .fetch_all(&self.pool),
        )?;
        Ok(v.into_iter().map(|i| i as u64).collect())
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.rt.block_on(self.apply_async(batch))
    }

    fn sync(&self) -> Result<()> {
        // A synchronous commit that writes a commit record (txid_current
        // assigns a transaction id) flushes the WAL up to it, and with it
        // every earlier commit, the asynchronous ones included.
        self.block(async {
            let mut tx = self
                .pool
                .begin_with("BEGIN; SET LOCAL synchronous_commit = on")
                .await?;
            sqlx::query("SELECT txid_current()")
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        })
    }

    fn lease_state(&self) -> Result<Option<super::LeaseState>> {
        let p = &self.p;
        let row: Option<(i64, String, String, i64, f64)> = self.block(
            sqlx::query_as(&format!(
                "SELECT epoch, holder, host, pid, \
                 EXTRACT(EPOCH FROM (now() - beat_at))::float8 FROM {p}_lease WHERE id = 1"
            ))
            .fetch_optional(&self.pool),
        )?;
        Ok(
            row.map(|(epoch, holder, host, pid, age)| super::LeaseState {
                epoch: epoch.max(0) as u64,
                holder,
                host,
                pid,
                beat_age_secs: age,
            }),
        )
    }

    fn claim_writer(&self, me: &super::lease::Holder) -> Result<()> {
        self.rt.block_on(self.lease.claim(&self.pool, &self.p, me))
    }

    fn try_claim_writer(&self, me: &super::lease::Holder, lapse: Duration) -> Result<bool> {
        self.rt
            .block_on(self.lease.try_claim(&self.pool, &self.p, me, lapse))
    }

    fn feed_written(&self) -> u64 {
        self.feed_written.load(std::sync::atomic::Ordering::Acquire)
    }

    fn changes_since(&self, after: u64, limit: usize) -> Result<Option<feed::Page>> {
        let p = &self.p;
        type Row = (
            i64,
            Option<i64>,
            Option<Vec<i64>>,
            Option<Vec<i64>>,
            Option<Vec<Vec<u8>>>,
            Option<bool>,
        );
        // One statement, one snapshot: the head and the rows agree.
        let rows: Vec<Row> = self.block(
            sqlx::query_as(&format!(
                "SELECT f.seq, c.seq, c.inos, c.parents, c.names, c.everything \
                 FROM {p}_feed f LEFT JOIN LATERAL (SELECT * FROM {p}_changes \
                 WHERE seq > $1 ORDER BY seq LIMIT $2) c ON true WHERE f.id = 1 ORDER BY c.seq"
            ))
            .bind(after as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool),
        )?;
        let mut page = feed::Page::default();
        for (head, seq, inos, parents, names, everything) in rows {
            page.head = head.max(0) as u64;
            let Some(seq) = seq else { continue };
            page.changes.push(feed::Change {
                seq: seq as u64,
                inos: inos
                    .unwrap_or_default()
                    .into_iter()
                    .map(|i| i as u64)
                    .collect(),
                entries: parents
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p as u64)
                    .zip(names.unwrap_or_default())
                    .collect(),
                everything: everything.unwrap_or(false),
            });
        }
        Ok(Some(page))
    }

    fn leased(&self) -> bool {
        self.lease.epoch() != 0
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn heartbeat(&self) -> Result<()> {
        self.rt.block_on(self.lease.beat(&self.pool, &self.p))
    }

    fn close(&self) {
        if let Err(e) = self.rt.block_on(self.lease.release(&self.pool, &self.p)) {
            // It lapses on its own: the next writer waits a little longer.
            tracing::warn!(error = %e, "could not release the store's lease");
        }
        self.rt.block_on(self.pool.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_row() {
        assert_eq!(tuples(2, 2), "($1, $2), ($3, $4)");
        assert!(rows_per_chunk(INODE_NCOLS) * INODE_NCOLS <= MAX_PARAMS);
        assert!(rows_per_chunk(5) * 5 <= MAX_PARAMS);
    }

    #[test]
    fn passwords_are_found_in_urls() {
        assert!(has_password("postgres://u:pw@h/db"));
        assert!(has_password(
            "postgresql://u:p%40w@h:5432/db?sslmode=require"
        ));
        assert!(has_password("postgres:///db?host=/run/pg&password=x"));
        assert!(!has_password("postgres://u@h/db"));
        assert!(!has_password("postgres:///db?host=/run/pg&user=u"));
        assert!(!has_password("postgres://h/db?application_name=a:b@c"));
    }

    #[test]
    fn search_documents_are_split_like_queries() {
        let names = vec![b"README.gz".to_vec(), b"also-this".to_vec()];
        let x = vec![
            (
                b"user.artstore.description".to_vec(),
                b"Moon landing".to_vec(),
            ),
            (b"user.artstore.version".to_vec(), b"5.2.15".to_vec()),
            (b"user.artstore.other".to_vec(), b"hidden".to_vec()),
            (b"user.a".to_vec(), b"x-1".to_vec()),
            (b"user.b".to_vec(), b"y".to_vec()),
            (b"trusted.c".to_vec(), b"z".to_vec()),
        ];
        assert_eq!(
            search_doc(&names, &x),
            ["readme gz also this", "moon landing", "5 2 15", "x 1 y"]
        );
    }
}
