//! The row shapes both SQL engines share: an inode row and a log row are
//! the same columns in the same order on SQLite and PostgreSQL (u64s as
//! INTEGER/BIGINT bit patterns, names as BLOB/BYTEA), so they are read and
//! bound once, generically over the driver.

use sqlx::{Arguments, ColumnIndex, Decode, Encode, Row, Type};

use crate::types::error::{Error, Result};
use crate::types::journal;
use crate::types::{Inode, Kind, Timestamp};

/// The inode row's columns, in the order [`push_inode`] binds them.
pub const INODE_COLS: &str = "ino, file_id, kind, perm, uid, gid, nlink, size, atime, mtime, ctime, \
                              crtime, rdev, parent, target, created_by, original_name, sha256, blocks, flags, version";
pub const INODE_NCOLS: usize = 21;
/// The log row's columns, in the order its binder binds them.
pub const WAL_COLS: &str = "transaction_id, operation_type, status, file_id, operation_data, \
                            error_message, started_at, completed_at, duration_ms, user_id, outcome";
pub const WAL_NCOLS: usize = 11;

/// `INSERT INTO {table} (INODE_COLS) VALUES {values}` that updates an
/// existing row of the same inode in place. It conflicts on `ino` only, on
/// both engines: a file id another inode holds is refused by the unique
/// index (SQLite's `INSERT OR REPLACE` would delete that other inode).
pub fn upsert_inodes(table: &str, values: &str) -> String {
    let set: Vec<String> = INODE_COLS
        .split(',')
        .map(str::trim)
        .filter(|c| *c != "ino")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} ({INODE_COLS}) VALUES {values} ON CONFLICT (ino) DO UPDATE SET {}",
        set.join(", ")
    )
}

/// An inode from the 21 columns of `{p}_inodes`, in table order.
pub(super) fn inode<'r, R>(row: &'r R) -> Result<Inode>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
{
    let int = |i: usize| row.try_get::<i64, _>(i);
    Ok(Inode {
        ino: int(0)? as u64,
        file_id: row.try_get(1)?,
        kind: kind_of(int(2)?)?,
        perm: int(3)? as u32,
        uid: int(4)? as u32,
        gid: int(5)? as u32,
        nlink: int(6)? as u32,
        size: int(7)? as u64,
        atime: Timestamp(int(8)?),
        mtime: Timestamp(int(9)?),
        ctime: Timestamp(int(10)?),
        crtime: Timestamp(int(11)?),
        rdev: int(12)? as u32,
        parent: int(13)? as u64,
        target: row.try_get(14)?,
        created_by: row.try_get(15)?,
        original_name: row.try_get(16)?,
        sha256: row.try_get(17)?,
        blocks: row.try_get::<Option<i64>, _>(18)?.map(|b| b as u64),
        flags: int(19)? as u32,
        version: row.try_get(20)?,
    })
}

/// Bind an inode's 21 columns, in table order.
pub(super) fn push_inode<'q, A>(args: &mut A, i: &'q Inode)
where
    A: Arguments<'q>,
    i64: Encode<'q, A::Database> + Type<A::Database>,
    Option<i64>: Encode<'q, A::Database> + Type<A::Database>,
    &'q str: Encode<'q, A::Database> + Type<A::Database>,
    Option<&'q str>: Encode<'q, A::Database> + Type<A::Database>,
    &'q [u8]: Encode<'q, A::Database> + Type<A::Database>,
    Option<&'q [u8]>: Encode<'q, A::Database> + Type<A::Database>,
{
    // Encoding plain integers, strings and byte strings cannot fail.
    let _ = args.add(i.ino as i64);
    let _ = args.add(i.file_id.as_str());
    let _ = args.add(i.kind as i64);
    let _ = args.add(i.perm as i64);
    let _ = args.add(i.uid as i64);
    let _ = args.add(i.gid as i64);
    let _ = args.add(i.nlink as i64);
    let _ = args.add(i.size as i64);
    let _ = args.add(i.atime.0);
    let _ = args.add(i.mtime.0);
    let _ = args.add(i.ctime.0);
    let _ = args.add(i.crtime.0);
    let _ = args.add(i.rdev as i64);
    let _ = args.add(i.parent as i64);
    let _ = args.add(i.target.as_deref());
    let _ = args.add(i.created_by.as_str());
    let _ = args.add(i.original_name.as_slice());
    let _ = args.add(i.sha256.as_deref());
    let _ = args.add(i.blocks.map(|b| b as i64));
    let _ = args.add(i64::from(i.flags));
    let _ = args.add(i.version.as_deref());
}

/// A log row of `{p}_wal`, in the column order both engines select.
pub(super) fn record<'r, R>(row: &'r R) -> Result<journal::Record>
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
{
    let bad = |what: &str| Error::Meta(format!("corrupt log row: bad {what}"));
    let text = |i: usize| row.try_get::<String, _>(i);
    let opt = |i: usize| row.try_get::<Option<String>, _>(i);
    let (id, op, status, data, started) = (text(0)?, text(1)?, text(2)?, text(4)?, text(6)?);
    Ok(journal::Record {
        id: uuid::Uuid::parse_str(&id).map_err(|_| bad("transaction_id"))?,
        op: journal::Op::parse(&op).ok_or_else(|| bad("operation_type"))?,
        status: journal::Status::parse(&status).ok_or_else(|| bad("status"))?,
        file_id: opt(3)?,
        data: serde_json::from_str(&data).map_err(|_| bad("operation_data"))?,
        error: opt(5)?,
        started_at: journal::parse_rfc3339(&started).ok_or_else(|| bad("started_at"))?,
        completed_at: opt(7)?.as_deref().and_then(journal::parse_rfc3339),
        user_id: opt(9)?,
        outcome: opt(10)?,
    })
}

pub(super) fn kind_of(v: i64) -> Result<Kind> {
    Kind::from_i64(v).ok_or_else(|| Error::Meta(format!("corrupt kind {v} in metadata")))
}
