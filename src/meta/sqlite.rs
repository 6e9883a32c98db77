//! SQLite backend (the embedded default): one file in BACKING/.artfs,
//! WAL journal, `synchronous=NORMAL` so commits cost no fsync; `sync()`
//! fsyncs the journal when a caller asks for durability.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Arguments, Sqlite};
use tokio::runtime::Handle;

use super::{migrate, rows};
use super::{Batch, Counters, Dentry, MetaStore, XattrList};
use crate::types::error::{Error, Result};
use crate::types::journal;
use crate::types::{DirEntry, Inode, Timestamp};

use super::rows::{INODE_COLS, INODE_NCOLS, WAL_COLS, WAL_NCOLS};
/// Rows per multi-row statement (SQLite allows 32766 parameters).
const CHUNK: usize = 100;

pub struct SqliteStore {
    pool: SqlitePool,
    rt: Handle,
    p: String,
    q_get_inode: String,
    q_lookup: String,
    q_read_dir: String,
    q_xattrs: String,
    q_search_del: String,
    q_search_ins: String,
    db_path: PathBuf,
    /// Kept open for `sync` (see there why never closed early).
    sync_files: parking_lot::Mutex<Vec<std::fs::File>>,
}

/// Whether the database file at `path` has the tables of `prefix`, found
/// read-only (a missing file has none; nothing is created).
pub async fn prefix_exists(path: &str, prefix: &str) -> Result<bool> {
    migrate::check_prefix(prefix)?;
    if !Path::new(path).exists() {
        return Ok(false);
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .busy_timeout(Duration::from_secs(30));
    let mut conn: sqlx::SqliteConnection = sqlx::Connection::connect_with(&opts).await?;
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
            .bind(format!("{prefix}_store"))
            .fetch_one(&mut conn)
            .await?;
    let _ = sqlx::Connection::close(conn).await;
    Ok(n > 0)
}

/// SQLite's page cache per connection, in MiB, unless
/// `ARTFS_SQLITE_CACHE_MIB` says otherwise. Each of the pool's connections
/// has its own and fills it as the database grows: at 64 MiB each a store
/// of a million files took 570 MiB of memory. Pages not cached are read
/// from the kernel's page cache (a pread), so a small one costs little.
pub const DEFAULT_PAGE_CACHE_MIB: u64 = 8;

fn page_cache_kib() -> u64 {
    std::env::var("ARTFS_SQLITE_CACHE_MIB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|m| (1..=65536).contains(m))
        .unwrap_or(DEFAULT_PAGE_CACHE_MIB)
        * 1024
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the database at `url`
    /// (`sqlite://PATH` or a plain path).
    pub fn open(url: &str, prefix: &str, rt: Handle) -> Result<SqliteStore> {
        migrate::check_prefix(prefix)?;
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let db_path = PathBuf::from(path);
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .pragma("cache_size", format!("-{}", page_cache_kib()))
            .pragma("temp_store", "memory");
        // Switch to WAL once, on a single connection, before the pool opens
        // several at once (racing connections would see "database is locked").
        rt.block_on(async {
            let conn: sqlx::SqliteConnection = sqlx::Connection::connect_with(&opts).await?;
            sqlx::Connection::close(conn).await
        })?;
        let pool = rt.block_on(
            SqlitePoolOptions::new()
                .max_connections(6)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .test_before_acquire(false)
                .connect_with(opts),
        )?;
        let p = prefix;
        let store = SqliteStore {
            pool,
            rt,
            p: p.to_string(),
            q_get_inode: format!("SELECT {INODE_COLS} FROM {p}_inodes WHERE ino = ?"),
            q_lookup: format!(
                "SELECT ino, kind, id FROM {p}_dentries WHERE parent = ? AND name = ?"
            ),
            // One row for the whole page: sqlx hands rows over from its
            // worker thread one at a time (a thread wake-up each), which
            // cost more than the query itself. No ORDER BY inside the
            // aggregate: it sorted the page again in a temporary b-tree
            // (a tenth of a cold `find`); `read_dir` puts the entries in
            // order itself.
            q_read_dir: format!(
                "SELECT group_concat(id || ' ' || ino || ' ' || kind || ' ' || hex(name), ' ') \
                 FROM (SELECT id, ino, kind, name FROM {p}_dentries \
                 WHERE parent = ? AND id > ? ORDER BY id LIMIT ?)"
            ),
            q_xattrs: format!("SELECT name, value FROM {p}_xattrs WHERE ino = ? ORDER BY name"),
            q_search_del: format!("DELETE FROM {p}_search WHERE rowid IN ({{list}})"),
            q_search_ins: format!(
                "INSERT INTO {p}_search (rowid, names, description, version, custom) \
                 SELECT i.ino, \
                   (SELECT group_concat(CAST(d.name AS TEXT), ' ') FROM {p}_dentries d \
                     WHERE d.ino = i.ino), \
                   (SELECT CAST(x.value AS TEXT) FROM {p}_xattrs x WHERE x.ino = i.ino \
                     AND x.name = CAST('user.artstore.description' AS BLOB)), \
                   (SELECT CAST(x.value AS TEXT) FROM {p}_xattrs x WHERE x.ino = i.ino \
                     AND x.name = CAST('user.artstore.version' AS BLOB)), \
                   (SELECT group_concat(CAST(x.value AS TEXT), ' ') FROM {p}_xattrs x \
                     WHERE x.ino = i.ino AND substr(x.name, 1, 5) = CAST('user.' AS BLOB) \
                     AND substr(x.name, 1, 14) != CAST('user.artstore.' AS BLOB)) \
                 FROM {p}_inodes i WHERE i.ino IN ({{list}})"
            ),
            db_path,
            sync_files: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.db_path
    }

    fn migrate(&self) -> Result<()> {
        self.rt.block_on(async {
            let mut conn = self.pool.acquire().await?;
            migrate::run_sqlite(&mut conn, &self.p).await
        })
    }
}

fn add<'q, T>(args: &mut SqliteArguments<'q>, v: T)
where
    T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    // Encoding plain integers and byte strings cannot fail.
    let _ = args.add(v);
}

/// "(?, ?, ?), (?, ?, ?)" for `rows` rows of `cols` columns.
fn tuples(rows: usize, cols: usize) -> String {
    let one = format!("({})", vec!["?"; cols].join(", "));
    vec![one; rows].join(", ")
}

/// One transaction's connection, as the apply steps below take it.
type Conn = sqlx::SqliteConnection;
type SqlResult = std::result::Result<(), sqlx::Error>;

impl SqliteStore {
    /// Commit one batch in one transaction, one table family at a time.
    /// Entries first go away (all touched keys), then come back with their
    /// final state, so moves and replacements never collide.
    async fn apply_async(&self, b: &Batch) -> SqlResult {
        let mut tx = self.pool.begin().await?;
        self.delete_dentries(&mut tx, b).await?;
        self.write_inodes(&mut tx, b).await?;
        self.write_xattrs(&mut tx, b).await?;
        self.insert_dentries(&mut tx, b).await?;
        self.insert_journal(&mut tx, b).await?;
        self.settle_journal(&mut tx, b).await?;
        self.update_search(&mut tx, b).await?;
        self.write_config(&mut tx, b).await?;
        tx.commit().await
    }

    /// Remove every entry key the batch touches.
    async fn delete_dentries(&self, tx: &mut Conn, b: &Batch) -> SqlResult {
        let p = &self.p;
        for chunk in b.dentries.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM {p}_dentries WHERE (parent, name) IN (VALUES {})",
                tuples(chunk.len(), 2)
            );
            let mut args = SqliteArguments::default();
            for ((parent, name), _) in chunk {
                add(&mut args, *parent as i64);
                add(&mut args, name.as_slice());
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Insert the entries the batch leaves present (after the deletes).
    async fn insert_dentries(&self, tx: &mut Conn, b: &Batch) -> SqlResult {
        let p = &self.p;
        let present: Vec<(&(u64, Vec<u8>), &Dentry)> = b
            .dentries
            .iter()
            .filter_map(|(k, d)| d.as_ref().map(|d| (k, d)))
            .collect();
        for chunk in present.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO {p}_dentries (id, parent, name, ino, kind) VALUES {}",
                tuples(chunk.len(), 5)
            );
            let mut args = SqliteArguments::default();
            for ((parent, name), d) in chunk {
                add(&mut args, d.id as i64);
                add(&mut args, *parent as i64);
                add(&mut args, name.as_slice());
                add(&mut args, d.ino as i64);
                add(&mut args, d.kind as i64);
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Delete the removed inodes, then write the final state of the others.
    async fn write_inodes(&self, tx: &mut Conn, b: &Batch) -> SqlResult {
        let p = &self.p;
        let gone: Vec<i64> = b
            .inodes
            .iter()
            .filter(|(_, i)| i.is_none())
            .map(|(ino, _)| *ino as i64)
            .collect();
        for chunk in gone.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM {p}_inodes WHERE ino IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut args = SqliteArguments::default();
            for ino in chunk {
                add(&mut args, *ino);
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        let live: Vec<&Inode> = b.inodes.iter().filter_map(|(_, i)| i.as_ref()).collect();
        for chunk in live.chunks(CHUNK / 2) {
            let sql = super::rows::upsert_inodes(
                &format!("{p}_inodes"),
                &tuples(chunk.len(), INODE_NCOLS),
            );
            let mut args = SqliteArguments::default();
            for i in chunk {
                rows::push_inode(&mut args, i);
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Replace the whole attribute list of every inode the batch touches.
    async fn write_xattrs(&self, tx: &mut Conn, b: &Batch) -> SqlResult {
        let p = &self.p;
        for chunk in b.xattrs.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM {p}_xattrs WHERE ino IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut args = SqliteArguments::default();
            for (ino, _) in chunk {
                add(&mut args, *ino as i64);
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        let rows: Vec<(u64, &[u8], &[u8])> = b
            .xattrs
            .iter()
            .filter_map(|(ino, l)| l.as_ref().map(|l| (ino, l)))
            .flat_map(|(ino, l)| l.iter().map(|(n, v)| (*ino, n.as_slice(), v.as_slice())))
            .collect();
        for chunk in rows.chunks(CHUNK) {
            let sql = format!(
                "INSERT INTO {p}_xattrs (ino, name, value) VALUES {}",
                tuples(chunk.len(), 3)
            );
            let mut args = SqliteArguments::default();
            for (ino, n, v) in chunk {
                add(&mut args, *ino as i64);
                add(&mut args, *n);
                add(&mut args, *v);
            }
            sqlx::query_with(&sql, args).execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// Insert the batch's new intent-log rows.
    async fn insert_journal(&self, tx: &mut Conn, b: &Batch) -> SqlResult {
        let p = &self.p;
        for chunk in b.journal.chunks(CHUNK / 2) {
            let sql = format!(
                "INSERT INTO {p}_wal ({WAL_COLS}) VALUES {}",
                tuples(chunk.len(), WAL_NCOLS)
            );
            let mut args = SqliteArguments::default();
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
        Ok(())
    }

    /// Settle intent-log rows (status, outcome, completion time).
    async fn settle_journal(&self, tx: &mut Conn, b: &Batch) -> SqlResult {
        let p = &self.p;
        for u in &b.journal_done {
            let done = journal::rfc3339(u.completed_at);
            sqlx::query(&format!(
                "UPDATE {p}_wal SET status = ?, outcome = coalesce(?, outcome), \
                 error_message = coalesce(?, error_message), completed_at = ?, \
                 duration_ms = coalesce(?, round((julianday(?) - julianday(started_at)) \
                 * 86400000.0, 3)) WHERE transaction_id = ?"
            ))
            .bind(u.status.as_str())
            .bind(u.outcome.as_deref())
            .bind(u.error.as_deref())
            .bind(&done)
            .bind(u.duration_ms)
            .bind(&done)
            .bind(u.id.to_string())
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }

    /// The search index follows every inode whose names or attributes may
    /// have changed (every entry change also changes its inode).
    async fn update_search(&self, tx: &mut Conn, b: &Batch) -> SqlResult {
        let mut touched: Vec<i64> = b
            .inodes
            .iter()
            .map(|(i, _)| *i as i64)
            .chain(b.xattrs.iter().map(|(i, _)| *i as i64))
            .collect();
        touched.sort_unstable();
        touched.dedup();
        for chunk in touched.chunks(CHUNK * 4) {
            let list = vec!["?"; chunk.len()].join(", ");
            let (del_sql, ins_sql) = (
                self.q_search_del.replace("{list}", &list),
                self.q_search_ins.replace("{list}", &list),
            );
            let mut del = sqlx::query(&del_sql);
            let mut ins = sqlx::query(&ins_sql);
            for ino in chunk {
                del = del.bind(*ino);
                ins = ins.bind(*ino);
            }
            del.execute(&mut *tx).await?;
            ins.execute(&mut *tx).await?;
        }
        Ok(())
    }

    /// The store's settings, usage counters and inode reservation.
    async fn write_config(&self, tx: &mut Conn, b: &Batch) -> SqlResult {
        let p = &self.p;
        if let Some(c) = &b.config {
            sqlx::query(&format!(
                "INSERT INTO {p}_config \
                 (id, mode, mode_changed_at, mode_changed_by, capacity) VALUES (1, ?, ?, ?, ?) \
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
        if b.usage_delta != (0, 0) {
            sqlx::query(&format!(
                "UPDATE {p}_config SET used_bytes = used_bytes + ?, \
                 file_count = file_count + ? WHERE id = 1"
            ))
            .bind(b.usage_delta.0)
            .bind(b.usage_delta.1)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(r) = b.ino_reserved {
            sqlx::query(&format!(
                "UPDATE {p}_store SET ino_reserved = max(ino_reserved, ?) WHERE id = 1"
            ))
            .bind(r as i64)
            .execute(&mut *tx)
            .await?;
        }
        Ok(())
    }
}

impl MetaStore for SqliteStore {
    fn store_identity(&self) -> Result<Option<(String, String)>> {
        let p = &self.p;
        let row: Option<(String, String)> = self.rt.block_on(
            sqlx::query_as(&format!(
                "SELECT store_id, backing FROM {p}_store WHERE id = 1"
            ))
            .fetch_optional(&self.pool),
        )?;
        Ok(row)
    }

    fn init_store(&self, store_id: &str, backing: &str, root: &Inode) -> Result<()> {
        let batch = Batch {
            inodes: vec![(root.ino, Some(root.clone()))],
            ..Batch::default()
        };
        self.apply(&batch)?;
        let p = &self.p;
        self.rt.block_on(
            sqlx::query(&format!(
                "INSERT INTO {p}_store (id, store_id, backing, created_at, ino_reserved) \
                 VALUES (1, ?, ?, ?, ?)"
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
        let (max_ino, reserved, max_id): (i64, i64, i64) = self.rt.block_on(
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
        let row = self.rt.block_on(
            sqlx::query(&self.q_get_inode)
                .bind(ino as i64)
                .fetch_optional(&self.pool),
        )?;
        row.as_ref().map(rows::inode).transpose()
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<Dentry>> {
        // Test builds: a lookup SQLite itself refuses (a real database
        // error, with its code), for tests/error_replies.rs.
        fail::fail_point!("meta::lookup", |_| -> Result<Option<Dentry>> {
            let q = sqlx::query("SELECT * FROM fail_point_meta_lookup");
            self.rt.block_on(q.execute(&self.pool))?;
            Ok(None)
        });
        let row: Option<(i64, i64, i64)> = self.rt.block_on(
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
        let page: Option<String> = self.rt.block_on(
            sqlx::query_scalar(&self.q_read_dir)
                .bind(parent as i64)
                .bind(after as i64)
                .bind(limit as i64)
                .fetch_one(&self.pool),
        )?;
        let Some(page) = page else {
            return Ok(Vec::new());
        };
        let bad = || Error::Meta(format!("malformed directory page of {parent}"));
        let mut fields = page.split(' ');
        let mut out = Vec::with_capacity(limit.min(1024));
        while let Some(id) = fields.next() {
            let mut next = || fields.next().ok_or_else(bad);
            let (ino, kind, name) = (next()?, next()?, next()?);
            out.push(DirEntry {
                offset: id.parse().map_err(|_| bad())?,
                ino: ino.parse().map_err(|_| bad())?,
                kind: rows::kind_of(kind.parse().map_err(|_| bad())?)?,
                name: hex::decode(name).map_err(|_| bad())?,
            });
        }
        // The page is the right rows; the aggregate's order is SQLite's
        // choice (in practice already this one, which the sort checks in
        // one pass).
        out.sort_unstable_by_key(|e| e.offset);
        Ok(out)
    }

    fn xattrs(&self, ino: u64) -> Result<XattrList> {
        Ok(self.rt.block_on(
            sqlx::query_as(&self.q_xattrs)
                .bind(ino as i64)
                .fetch_all(&self.pool),
        )?)
    }

    fn inode_count(&self) -> Result<u64> {
        let p = &self.p;
        let n: i64 = self.rt.block_on(
            sqlx::query_scalar(&format!("SELECT count(*) FROM {p}_inodes")).fetch_one(&self.pool),
        )?;
        Ok(n as u64)
    }

    fn unhashed_files(&self) -> Result<Vec<u64>> {
        let p = &self.p;
        let v: Vec<i64> = self.rt.block_on(
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
        let n: i64 = self.rt.block_on(
            sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {p}_inodes WHERE kind = 1 AND nlink > 0 AND sha256 IS NULL"
            ))
            .fetch_one(&self.pool),
        )?;
        Ok(n as u64)
    }

    fn orphans(&self) -> Result<Vec<u64>> {
        let p = &self.p;
        let v: Vec<i64> = self.rt.block_on(
            sqlx::query_scalar(&format!("SELECT ino FROM {p}_inodes WHERE nlink = 0"))
                .fetch_all(&self.pool),
        )?;
        Ok(v.into_iter().map(|i| i as u64).collect())
    }

    fn inodes_of(&self, inos: &[u64]) -> Result<Vec<Inode>> {
        let p = &self.p;
        let mut out = Vec::with_capacity(inos.len());
        for chunk in inos.chunks(500) {
            let sql = format!(
                "SELECT {INODE_COLS} FROM {p}_inodes WHERE ino IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query(&sql);
            for ino in chunk {
                q = q.bind(*ino as i64);
            }
            let rows = self.rt.block_on(q.fetch_all(&self.pool))?;
            for r in &rows {
                out.push(rows::inode(r)?);
            }
        }
        Ok(out)
    }

    fn links_of(&self, inos: &[u64]) -> Result<Vec<(u64, u64, Vec<u8>)>> {
        let p = &self.p;
        let mut out = Vec::new();
        for chunk in inos.chunks(500) {
            let sql = format!(
                "SELECT ino, parent, name FROM {p}_dentries WHERE ino IN ({}) ORDER BY id",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query_as::<_, (i64, i64, Vec<u8>)>(&sql);
            for ino in chunk {
                q = q.bind(*ino as i64);
            }
            let rows = self.rt.block_on(q.fetch_all(&self.pool))?;
            out.extend(rows.into_iter().map(|(i, p, n)| (i as u64, p as u64, n)));
        }
        Ok(out)
    }

    fn xattrs_of(&self, inos: &[u64]) -> Result<super::XattrRows> {
        let p = &self.p;
        let mut out = Vec::new();
        for chunk in inos.chunks(500) {
            let sql = format!(
                "SELECT ino, name, value FROM {p}_xattrs WHERE ino IN ({}) ORDER BY ino, name",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut q = sqlx::query_as::<_, (i64, Vec<u8>, Vec<u8>)>(&sql);
            for ino in chunk {
                q = q.bind(*ino as i64);
            }
            let rows = self.rt.block_on(q.fetch_all(&self.pool))?;
            out.extend(rows.into_iter().map(|(i, n, v)| (i as u64, n, v)));
        }
        Ok(out)
    }

    fn xattr_values(&self, name: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
        let p = &self.p;
        let rows: Vec<(i64, Vec<u8>)> = self.rt.block_on(
            sqlx::query_as(&format!("SELECT ino, value FROM {p}_xattrs WHERE name = ?"))
                .bind(name)
                .fetch_all(&self.pool),
        )?;
        Ok(rows.into_iter().map(|(i, v)| (i as u64, v)).collect())
    }

    fn clear_namespace(&self) -> Result<()> {
        let p = &self.p;
        self.rt.block_on(async {
            let mut tx = self.pool.begin().await?;
            // The search rows follow the inodes they index.
            for t in ["inodes", "dentries", "xattrs", "search"] {
                sqlx::query(&format!("DELETE FROM {p}_{t}"))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })?;
        Ok(())
    }

    fn init_identity(&self, store_id: &str, backing: &str, ino_reserved: u64) -> Result<()> {
        let p = &self.p;
        self.rt.block_on(
            sqlx::query(&format!(
                "INSERT OR REPLACE INTO {p}_store (id, store_id, backing, created_at, ino_reserved) \
                 VALUES (1, ?, ?, ?, ?)"
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
        // artfs's grammar, not FTS5's (meta/query.rs): the same queries
        // are accepted on every backend, and no input reaches FTS5 raw.
        let expr = super::query::to_fts5(&super::query::parse_search(query)?);
        tracing::debug!(query, fts5 = %expr, "search");
        let rows: std::result::Result<Vec<(i64, f64)>, sqlx::Error> = self.rt.block_on(
            sqlx::query_as(&format!(
                "SELECT rowid, bm25({p}_search) AS r FROM {p}_search \
                 WHERE {p}_search MATCH ? ORDER BY r, rowid LIMIT ? OFFSET ?"
            ))
            .bind(&expr)
            .bind(limit as i64)
            .bind(offset as i64)
            .fetch_all(&self.pool),
        );
        match rows {
            Ok(rows) => Ok(rows.into_iter().map(|(i, r)| (i as u64, r)).collect()),
            // The renderer quotes every term, so FTS5 should accept every
            // expression; should it not, it is still the query's fault.
            Err(sqlx::Error::Database(e)) => {
                tracing::debug!(error = %e.message(), "search query refused");
                Err(Error::posix(libc::EINVAL, "malformed search query"))
            }
            Err(e) => Err(e.into()),
        }
    }

    fn config(&self) -> Result<Option<super::StoreConfig>> {
        let p = &self.p;
        type Row = (String, String, String, Option<i64>, i64, i64);
        let row: Option<Row> = self.rt.block_on(
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
        let v: Option<i64> = self.rt.block_on(
            sqlx::query_scalar(&format!("SELECT ino FROM {p}_inodes WHERE file_id = ?"))
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
        // The terms of the partial index `{p}_inodes_listing`, so it serves.
        let key = if after.is_some() {
            "AND (crtime < ? OR (crtime = ? AND file_id < ?))"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {INODE_COLS} FROM {p}_inodes WHERE kind = 1 AND nlink > 0 {key} \
             ORDER BY crtime DESC, file_id DESC LIMIT ?"
        );
        let mut q = sqlx::query(&sql);
        if let Some((t, id)) = after {
            q = q.bind(t.0).bind(t.0).bind(id.to_string());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.rt.block_on(q.bind(limit).fetch_all(&self.pool))?;
        rows.iter().map(rows::inode).collect()
    }

    fn pending_journal(&self) -> Result<Vec<journal::Record>> {
        let p = &self.p;
        let rows = self.rt.block_on(
            sqlx::query(&format!(
                "SELECT {WAL_COLS} FROM {p}_wal WHERE status = 'pending' ORDER BY seq"
            ))
            .fetch_all(&self.pool),
        )?;
        rows.iter().map(rows::record).collect()
    }

    fn pending_of(&self, op: journal::Op) -> Result<Vec<journal::Record>> {
        let p = &self.p;
        let rows = self.rt.block_on(
            sqlx::query(&format!(
                "SELECT {WAL_COLS} FROM {p}_wal WHERE status = 'pending' \
                 AND operation_type = ? ORDER BY seq"
            ))
            .bind(op.as_str())
            .fetch_all(&self.pool),
        )?;
        rows.iter().map(rows::record).collect()
    }

    fn journal_row(&self, id: uuid::Uuid) -> Result<Option<journal::Record>> {
        let p = &self.p;
        let row = self.rt.block_on(
            sqlx::query(&format!(
                "SELECT {WAL_COLS} FROM {p}_wal WHERE transaction_id = ?"
            ))
            .bind(id.to_string())
            .fetch_optional(&self.pool),
        )?;
        row.as_ref().map(rows::record).transpose()
    }

    fn journal_counts(&self) -> Result<Vec<(String, u64)>> {
        let p = &self.p;
        let rows: Vec<(String, i64)> = self.rt.block_on(
            sqlx::query_as(&format!(
                "SELECT status, count(*) FROM {p}_wal GROUP BY status ORDER BY status"
            ))
            .fetch_all(&self.pool),
        )?;
        Ok(rows.into_iter().map(|(s, n)| (s, n as u64)).collect())
    }

    fn record_check(&self, r: &super::CheckResult) -> Result<()> {
        super::check_result_valid(r)?;
        let p = &self.p;
        self.rt.block_on(
            sqlx::query(&format!(
                "INSERT INTO {p}_checks (kind, finished_at, outcome, problems, summary) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind) DO UPDATE SET \
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
        let rows: Vec<super::CheckRow> = self.rt.block_on(
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
        let n = self.rt.block_on(async {
            let mut n = 0u64;
            let left = |n: u64| limit.saturating_sub(n).min(i64::MAX as u64) as i64;
            // Past the age, then beyond the count (the newest kept), then
            // failures by their own age: each the oldest first. Every
            // statement walks at most `limit` rows of an index from its
            // oldest end, whatever the log holds (issue 19: filtering the
            // whole log for age, or counting the kept rows with OFFSET,
            // cost the writer O(log) per call at a million files). So
            // the age rule looks at the oldest `limit` rows only (a row
            // settles after those before it, near enough: a younger one
            // among them just waits), and the count rule keeps the
            // committed rows among the newest `committed_max_rows`
            // sequence numbers (at most that many).
            n += sqlx::query(&format!(
                "DELETE FROM {p}_wal WHERE seq IN (SELECT seq FROM {p}_wal \
                 WHERE status = 'committed' ORDER BY seq LIMIT ?) AND completed_at < ?"
            ))
            .bind(left(n))
            .bind(&committed_before)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if n < limit {
                n += sqlx::query(&format!(
                    "DELETE FROM {p}_wal WHERE seq IN (SELECT seq FROM {p}_wal \
                     WHERE status = 'committed' AND seq <= \
                     (SELECT max(seq) FROM {p}_wal WHERE status = 'committed') - ? \
                     ORDER BY seq LIMIT ?)"
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
                     WHERE status IN ('failed', 'rolled_back') ORDER BY seq LIMIT ?) \
                     AND completed_at < ?"
                ))
                .bind(left(n))
                .bind(&failed_before)
                .execute(&self.pool)
                .await?
                .rows_affected();
            }
            Ok::<_, sqlx::Error>(n)
        })?;
        Ok(n)
    }

    fn all_inodes(&self) -> Result<Vec<Inode>> {
        let p = &self.p;
        let rows = self.rt.block_on(
            sqlx::query(&format!("SELECT {INODE_COLS} FROM {p}_inodes ORDER BY ino"))
                .fetch_all(&self.pool),
        )?;
        rows.iter().map(rows::inode).collect()
    }

    fn all_dentries(&self) -> Result<Vec<(u64, Vec<u8>, Dentry)>> {
        let p = &self.p;
        let rows: Vec<(i64, Vec<u8>, i64, i64, i64)> = self.rt.block_on(
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
        let v: Vec<i64> = self.rt.block_on(
            sqlx::query_scalar(&format!("SELECT DISTINCT ino FROM {p}_xattrs ORDER BY ino"))
                .fetch_all(&self.pool),
        )?;
        Ok(v.into_iter().map(|i| i as u64).collect())
    }

    fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.rt.block_on(self.apply_async(batch))?;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        // In WAL mode with synchronous=NORMAL a commit is in the -wal file
        // (or already checkpointed, and checkpoints sync the main file):
        // syncing both makes every committed transaction durable.
        //
        // The descriptors stay open for the life of the store: closing any
        // descriptor of a file drops every POSIX lock this process holds
        // on it, SQLite's included. Another process (sqlite3, `artfs
        // search`) would then believe it is the last user, checkpoint, and
        // delete the -wal file under our feet.
        let mut files = self.sync_files.lock();
        if files.is_empty() {
            let mut wal = self.db_path.clone().into_os_string();
            wal.push("-wal");
            for p in [PathBuf::from(wal), self.db_path.clone()] {
                match std::fs::File::open(&p) {
                    Ok(f) => files.push(f),
                    // The -wal file appears with the first commit; try again
                    // at the next sync.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        files.clear();
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for f in files.iter() {
            f.sync_data()?;
        }
        Ok(())
    }

    fn close(&self) {
        self.rt.block_on(self.pool.close());
    }
}
