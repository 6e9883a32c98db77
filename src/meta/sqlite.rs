//! SQLite backend (the embedded default): one file in BACKING/.artfs,
//! WAL journal, `synchronous=NORMAL` so commits cost no fsync; `sync()`
//! fsyncs the journal when a caller asks for durability.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite};
use tokio::runtime::Handle;

use super::migrate::{self, valid_prefix};
use super::{MetaStore, MetaTxn, NewInode};
use crate::core::error::{Error, Result};
use crate::core::types::{DirEntry, Inode, Kind, Timestamp};

const INODE_COLS: &str = "ino, file_id, kind, perm, uid, gid, nlink, size, atime, mtime, ctime, \
                          crtime, rdev, parent, target, created_by, original_name";

/// SQL text with the table prefix applied, built once.
struct Queries {
    prefix: String,
    get_inode: String,
    lookup: String,
    read_dir: String,
    xattrs: String,
    count: String,
    orphans: String,
    dir_nonempty: String,
    insert_inode: String,
    insert_inode_auto: String,
    update_inode: String,
    delete_inode: String,
    delete_inode_xattrs: String,
    insert_dentry: String,
    delete_dentry: String,
    move_dentry: String,
    retarget_dentry: String,
    set_xattr: String,
    remove_xattr: String,
}

impl Queries {
    fn new(p: &str) -> Queries {
        Queries {
            prefix: p.to_string(),
            get_inode: format!("SELECT {INODE_COLS} FROM {p}_inodes WHERE ino = ?"),
            lookup: format!("SELECT ino, kind FROM {p}_dentries WHERE parent = ? AND name = ?"),
            read_dir: format!(
                "SELECT id, ino, kind, name FROM {p}_dentries WHERE parent = ? AND id > ? \
                 ORDER BY id LIMIT ?"
            ),
            xattrs: format!("SELECT name, value FROM {p}_xattrs WHERE ino = ? ORDER BY name"),
            count: format!("SELECT count(*) FROM {p}_inodes"),
            orphans: format!("SELECT ino FROM {p}_inodes WHERE nlink = 0"),
            dir_nonempty: format!("SELECT 1 FROM {p}_dentries WHERE parent = ? LIMIT 1"),
            insert_inode: format!(
                "INSERT INTO {p}_inodes ({INODE_COLS}) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ),
            insert_inode_auto: format!(
                "INSERT INTO {p}_inodes (file_id, kind, perm, uid, gid, nlink, size, atime, \
                 mtime, ctime, crtime, rdev, parent, target, created_by, original_name) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING ino"
            ),
            update_inode: format!(
                "UPDATE {p}_inodes SET perm = ?, uid = ?, gid = ?, nlink = ?, size = ?, \
                 atime = ?, mtime = ?, ctime = ?, crtime = ?, rdev = ?, parent = ?, target = ? \
                 WHERE ino = ?"
            ),
            delete_inode: format!("DELETE FROM {p}_inodes WHERE ino = ?"),
            delete_inode_xattrs: format!("DELETE FROM {p}_xattrs WHERE ino = ?"),
            insert_dentry: format!(
                "INSERT INTO {p}_dentries (parent, name, ino, kind) VALUES (?, ?, ?, ?)"
            ),
            delete_dentry: format!("DELETE FROM {p}_dentries WHERE parent = ? AND name = ?"),
            move_dentry: format!(
                "UPDATE {p}_dentries SET parent = ?, name = ? WHERE parent = ? AND name = ?"
            ),
            retarget_dentry: format!(
                "UPDATE {p}_dentries SET ino = ?, kind = ? WHERE parent = ? AND name = ?"
            ),
            set_xattr: format!(
                "INSERT INTO {p}_xattrs (ino, name, value) VALUES (?, ?, ?) \
                 ON CONFLICT (ino, name) DO UPDATE SET value = excluded.value"
            ),
            remove_xattr: format!("DELETE FROM {p}_xattrs WHERE ino = ? AND name = ?"),
        }
    }
}

pub struct SqliteStore {
    pool: SqlitePool,
    rt: Handle,
    q: Arc<Queries>,
    db_path: PathBuf,
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the database at `url`
    /// (`sqlite://PATH` or a plain path).
    pub fn open(url: &str, prefix: &str, rt: Handle) -> Result<SqliteStore> {
        if !valid_prefix(prefix) {
            return Err(Error::Meta(format!(
                "invalid table prefix {prefix:?}: use letters, digits and '_', starting with a letter"
            )));
        }
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
            .pragma("cache_size", "-65536")
            .pragma("temp_store", "memory");
        let pool = rt.block_on(
            SqlitePoolOptions::new()
                .max_connections(6)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(opts),
        )?;
        let store = SqliteStore {
            pool,
            rt,
            q: Arc::new(Queries::new(prefix)),
            db_path,
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.db_path
    }

    fn migrate(&self) -> Result<()> {
        let p = &self.q.prefix;
        self.rt.block_on(async {
            let mut conn = self.pool.acquire().await?;
            sqlx::query(&format!(
                "CREATE TABLE IF NOT EXISTS {p}_migrations (version INTEGER PRIMARY KEY, \
                 name TEXT NOT NULL, applied_at INTEGER NOT NULL)"
            ))
            .execute(&mut *conn)
            .await?;
            let applied: Vec<i64> =
                sqlx::query_scalar(&format!("SELECT version FROM {p}_migrations"))
                    .fetch_all(&mut *conn)
                    .await?;
            for m in migrate::SQLITE {
                if applied.contains(&m.version) {
                    continue;
                }
                tracing::info!(version = m.version, name = m.name, "applying migration");
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for stmt in migrate::statements(m, p) {
                    sqlx::query(&stmt).execute(&mut *tx).await?;
                }
                sqlx::query(&format!(
                    "INSERT INTO {p}_migrations (version, name, applied_at) VALUES (?, ?, ?)"
                ))
                .bind(m.version)
                .bind(m.name)
                .bind(Timestamp::now().0)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        })?;
        Ok(())
    }
}

fn row_to_inode(row: &SqliteRow) -> Result<Inode> {
    let kind: i64 = row.try_get(2)?;
    Ok(Inode {
        ino: row.try_get::<i64, _>(0)? as u64,
        file_id: row.try_get(1)?,
        kind: Kind::from_i64(kind)
            .ok_or_else(|| Error::Meta(format!("corrupt inode kind {kind}")))?,
        perm: row.try_get::<i64, _>(3)? as u32,
        uid: row.try_get::<i64, _>(4)? as u32,
        gid: row.try_get::<i64, _>(5)? as u32,
        nlink: row.try_get::<i64, _>(6)? as u32,
        size: row.try_get::<i64, _>(7)? as u64,
        atime: Timestamp(row.try_get(8)?),
        mtime: Timestamp(row.try_get(9)?),
        ctime: Timestamp(row.try_get(10)?),
        crtime: Timestamp(row.try_get(11)?),
        rdev: row.try_get::<i64, _>(12)? as u32,
        parent: row.try_get::<i64, _>(13)? as u64,
        target: row.try_get(14)?,
        created_by: row.try_get(15)?,
        original_name: row.try_get(16)?,
    })
}

fn kind_of(v: i64) -> Result<Kind> {
    Kind::from_i64(v).ok_or_else(|| Error::Meta(format!("corrupt entry kind {v}")))
}

impl MetaStore for SqliteStore {
    fn store_identity(&self) -> Result<Option<(String, String)>> {
        let p = &self.q.prefix;
        let row: Option<(String, String)> = self.rt.block_on(
            sqlx::query_as(&format!(
                "SELECT store_id, backing FROM {p}_store WHERE id = 1"
            ))
            .fetch_optional(&self.pool),
        )?;
        Ok(row)
    }

    fn init_store(&self, store_id: &str, backing: &str, root: &Inode) -> Result<()> {
        let p = self.q.prefix.clone();
        let mut tx = self.begin()?;
        tx.insert_inode(root)?;
        drop(tx.commit());
        self.rt.block_on(
            sqlx::query(&format!(
                "INSERT INTO {p}_store (id, store_id, backing, created_at) VALUES (1, ?, ?, ?)"
            ))
            .bind(store_id)
            .bind(backing)
            .bind(Timestamp::now().0)
            .execute(&self.pool),
        )?;
        Ok(())
    }

    fn get_inode(&self, ino: u64) -> Result<Option<Inode>> {
        let row = self.rt.block_on(
            sqlx::query(&self.q.get_inode)
                .bind(ino as i64)
                .fetch_optional(&self.pool),
        )?;
        row.as_ref().map(row_to_inode).transpose()
    }

    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>> {
        let row: Option<(i64, i64)> = self.rt.block_on(
            sqlx::query_as(&self.q.lookup)
                .bind(parent as i64)
                .bind(name)
                .fetch_optional(&self.pool),
        )?;
        row.map(|(ino, k)| Ok((ino as u64, kind_of(k)?)))
            .transpose()
    }

    fn read_dir(&self, parent: u64, after: u64, limit: usize) -> Result<Vec<DirEntry>> {
        let rows: Vec<(i64, i64, i64, Vec<u8>)> = self.rt.block_on(
            sqlx::query_as(&self.q.read_dir)
                .bind(parent as i64)
                .bind(after as i64)
                .bind(limit as i64)
                .fetch_all(&self.pool),
        )?;
        rows.into_iter()
            .map(|(id, ino, kind, name)| {
                Ok(DirEntry {
                    offset: id as u64,
                    ino: ino as u64,
                    kind: kind_of(kind)?,
                    name,
                })
            })
            .collect()
    }

    fn xattrs(&self, ino: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.rt.block_on(
            sqlx::query_as(&self.q.xattrs)
                .bind(ino as i64)
                .fetch_all(&self.pool),
        )?)
    }

    fn inode_count(&self) -> Result<u64> {
        let n: i64 = self
            .rt
            .block_on(sqlx::query_scalar(&self.q.count).fetch_one(&self.pool))?;
        Ok(n as u64)
    }

    fn orphans(&self) -> Result<Vec<u64>> {
        let v: Vec<i64> = self
            .rt
            .block_on(sqlx::query_scalar(&self.q.orphans).fetch_all(&self.pool))?;
        Ok(v.into_iter().map(|i| i as u64).collect())
    }

    fn begin(&self) -> Result<Box<dyn MetaTxn + '_>> {
        let tx = self.rt.block_on(self.pool.begin())?;
        Ok(Box::new(SqliteTxn {
            tx,
            rt: self.rt.clone(),
            q: self.q.clone(),
        }))
    }

    fn sync(&self) -> Result<()> {
        // In WAL mode with synchronous=NORMAL a commit is in the -wal file
        // (or already checkpointed, and checkpoints sync the main file):
        // syncing both makes every committed transaction durable.
        let mut wal = self.db_path.clone().into_os_string();
        wal.push("-wal");
        for p in [PathBuf::from(wal), self.db_path.clone()] {
            match std::fs::File::open(&p) {
                Ok(f) => f.sync_data()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn close(&self) {
        self.rt.block_on(self.pool.close());
    }
}

struct SqliteTxn {
    tx: sqlx::Transaction<'static, Sqlite>,
    rt: Handle,
    q: Arc<Queries>,
}

impl MetaTxn for SqliteTxn {
    fn get_inode(&mut self, ino: u64) -> Result<Option<Inode>> {
        let row = self.rt.block_on(
            sqlx::query(&self.q.get_inode)
                .bind(ino as i64)
                .fetch_optional(&mut *self.tx),
        )?;
        row.as_ref().map(row_to_inode).transpose()
    }

    fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>> {
        let row: Option<(i64, i64)> = self.rt.block_on(
            sqlx::query_as(&self.q.lookup)
                .bind(parent as i64)
                .bind(name)
                .fetch_optional(&mut *self.tx),
        )?;
        row.map(|(ino, k)| Ok((ino as u64, kind_of(k)?)))
            .transpose()
    }

    fn dir_is_empty(&mut self, ino: u64) -> Result<bool> {
        let row: Option<i64> = self.rt.block_on(
            sqlx::query_scalar(&self.q.dir_nonempty)
                .bind(ino as i64)
                .fetch_optional(&mut *self.tx),
        )?;
        Ok(row.is_none())
    }

    fn insert_inode(&mut self, i: &NewInode) -> Result<u64> {
        let auto = i.ino == 0;
        let sql = if auto {
            &self.q.insert_inode_auto
        } else {
            &self.q.insert_inode
        };
        let mut q = sqlx::query(sql);
        if !auto {
            q = q.bind(i.ino as i64);
        }
        let q = q
            .bind(&i.file_id)
            .bind(i.kind as i64)
            .bind(i.perm as i64)
            .bind(i.uid as i64)
            .bind(i.gid as i64)
            .bind(i.nlink as i64)
            .bind(i.size as i64)
            .bind(i.atime.0)
            .bind(i.mtime.0)
            .bind(i.ctime.0)
            .bind(i.crtime.0)
            .bind(i.rdev as i64)
            .bind(i.parent as i64)
            .bind(i.target.as_deref())
            .bind(&i.created_by)
            .bind(&i.original_name);
        if auto {
            let row = self.rt.block_on(q.fetch_one(&mut *self.tx))?;
            Ok(row.try_get::<i64, _>(0)? as u64)
        } else {
            self.rt.block_on(q.execute(&mut *self.tx))?;
            Ok(i.ino)
        }
    }

    fn update_inode(&mut self, i: &Inode) -> Result<()> {
        self.rt.block_on(
            sqlx::query(&self.q.update_inode)
                .bind(i.perm as i64)
                .bind(i.uid as i64)
                .bind(i.gid as i64)
                .bind(i.nlink as i64)
                .bind(i.size as i64)
                .bind(i.atime.0)
                .bind(i.mtime.0)
                .bind(i.ctime.0)
                .bind(i.crtime.0)
                .bind(i.rdev as i64)
                .bind(i.parent as i64)
                .bind(i.target.as_deref())
                .bind(i.ino as i64)
                .execute(&mut *self.tx),
        )?;
        Ok(())
    }

    fn delete_inode(&mut self, ino: u64) -> Result<()> {
        self.rt.block_on(async {
            sqlx::query(&self.q.delete_inode_xattrs)
                .bind(ino as i64)
                .execute(&mut *self.tx)
                .await?;
            sqlx::query(&self.q.delete_inode)
                .bind(ino as i64)
                .execute(&mut *self.tx)
                .await
        })?;
        Ok(())
    }

    fn insert_dentry(&mut self, parent: u64, name: &[u8], ino: u64, kind: Kind) -> Result<()> {
        self.rt.block_on(
            sqlx::query(&self.q.insert_dentry)
                .bind(parent as i64)
                .bind(name)
                .bind(ino as i64)
                .bind(kind as i64)
                .execute(&mut *self.tx),
        )?;
        Ok(())
    }

    fn delete_dentry(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        self.rt.block_on(
            sqlx::query(&self.q.delete_dentry)
                .bind(parent as i64)
                .bind(name)
                .execute(&mut *self.tx),
        )?;
        Ok(())
    }

    fn move_dentry(
        &mut self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
    ) -> Result<()> {
        self.rt.block_on(
            sqlx::query(&self.q.move_dentry)
                .bind(new_parent as i64)
                .bind(new_name)
                .bind(parent as i64)
                .bind(name)
                .execute(&mut *self.tx),
        )?;
        Ok(())
    }

    fn retarget_dentry(&mut self, parent: u64, name: &[u8], ino: u64, kind: Kind) -> Result<()> {
        self.rt.block_on(
            sqlx::query(&self.q.retarget_dentry)
                .bind(ino as i64)
                .bind(kind as i64)
                .bind(parent as i64)
                .bind(name)
                .execute(&mut *self.tx),
        )?;
        Ok(())
    }

    fn set_xattr(&mut self, ino: u64, name: &[u8], value: &[u8]) -> Result<()> {
        self.rt.block_on(
            sqlx::query(&self.q.set_xattr)
                .bind(ino as i64)
                .bind(name)
                .bind(value)
                .execute(&mut *self.tx),
        )?;
        Ok(())
    }

    fn remove_xattr(&mut self, ino: u64, name: &[u8]) -> Result<bool> {
        let r = self.rt.block_on(
            sqlx::query(&self.q.remove_xattr)
                .bind(ino as i64)
                .bind(name)
                .execute(&mut *self.tx),
        )?;
        Ok(r.rows_affected() > 0)
    }

    fn commit(self: Box<Self>) -> Result<()> {
        self.rt.block_on(self.tx.commit())?;
        Ok(())
    }
}
