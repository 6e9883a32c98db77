//! The write-ahead intent log: one row per mutation in `<prefix>_wal`.
//!
//! What it owns: the record type, the protocol vocabulary (operation types,
//! statuses) and recovery ([`recover`]). Rows travel to the database inside
//! the writer's batches (`meta::Batch`), so the metadata change and the row's
//! status always land in one transaction, and many operations share one
//! commit.
//!
//! Two kinds of rows:
//! - *intents* (`pending`), made durable **before** a side effect in
//!   BACKING: a range of inode numbers whose objects may be created
//!   (`reserve`), content that may change behind the metadata (`create` of a
//!   file open for writing, `write`, `truncate`), objects to delete after
//!   their inode is gone (`reclaim`). The operation later marks its row
//!   `committed`; recovery at mount settles any row still pending;
//! - *records* of mutations with no side effect outside the database
//!   (mkdir, rename, chmod, ...): written `committed` in the same
//!   transaction as the change itself.

use serde_json::Value;
use uuid::Uuid;

use super::Timestamp;

/// The `operation_type` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Create,
    Mkdir,
    Mknod,
    Symlink,
    Link,
    Write,
    Truncate,
    Setattr,
    XattrSet,
    XattrRemove,
    Unlink,
    Rmdir,
    Rename,
    /// Inode numbers handed out ahead: objects in the range may exist
    /// without an inode until it commits.
    Reserve,
    /// Objects to delete once their inodes are committed away.
    Reclaim,
    /// Repairs made by `artfs fsck --repair`.
    Repair,
    /// Sidecars of these inodes may be stale until rewritten.
    Sidecars,
    /// `artfs rebuild` replaced or completed the tables from the sidecars.
    Rebuild,
    /// The store's mode changed.
    ModeChange,
    /// A file adopted from the original storage element (`artfs import`):
    /// a record; its object was durable before the row was staged.
    Import,
    /// A staged upload (HTTP PUT) published under its name, replacing
    /// any file there, in one transaction.
    Upload,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Mkdir => "mkdir",
            Op::Mknod => "mknod",
            Op::Symlink => "symlink",
            Op::Link => "link",
            Op::Write => "write",
            Op::Truncate => "truncate",
            Op::Setattr => "setattr",
            Op::XattrSet => "xattr_set",
            Op::XattrRemove => "xattr_remove",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Rename => "rename",
            Op::Reserve => "reserve",
            Op::Reclaim => "reclaim",
            Op::Repair => "fsck_repair",
            Op::Sidecars => "sidecars",
            Op::Rebuild => "cache_rebuild",
            Op::ModeChange => "mode_change",
            Op::Import => "import",
            Op::Upload => "upload",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        ALL_OPS.iter().copied().find(|o| o.as_str() == s)
    }
}

const ALL_OPS: [Op; 21] = [
    Op::Create,
    Op::Mkdir,
    Op::Mknod,
    Op::Symlink,
    Op::Link,
    Op::Write,
    Op::Truncate,
    Op::Setattr,
    Op::XattrSet,
    Op::XattrRemove,
    Op::Unlink,
    Op::Rmdir,
    Op::Rename,
    Op::Reserve,
    Op::Reclaim,
    Op::Repair,
    Op::Sidecars,
    Op::Rebuild,
    Op::ModeChange,
    Op::Import,
    Op::Upload,
];

/// The `status` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pending,
    Committed,
    RolledBack,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Committed => "committed",
            Status::RolledBack => "rolled_back",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Committed,
            Status::RolledBack,
            Status::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// One row of the log.
#[derive(Clone, Debug)]
pub struct Record {
    pub id: Uuid,
    pub op: Op,
    pub status: Status,
    pub file_id: Option<String>,
    /// What recovery needs to roll forward or back (JSON).
    pub data: Value,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// uid (as decimal) or JWT subject.
    pub user_id: Option<String>,
    pub outcome: Option<String>,
}

impl Record {
    pub fn new(op: Op, status: Status, file_id: Option<String>, data: Value) -> Record {
        Record {
            id: Uuid::now_v7(),
            op,
            status,
            file_id,
            data,
            error: None,
            started_at: Timestamp::now(),
            completed_at: None,
            user_id: None,
            outcome: None,
        }
    }

    pub fn by(mut self, uid: u32) -> Record {
        self.user_id = Some(uid.to_string());
        self
    }

    /// Attribute the row to a caller: its JWT subject if it has one, else
    /// its uid.
    pub fn by_caller(mut self, c: &super::Caller) -> Record {
        self.user_id = Some(c.subject.clone().unwrap_or_else(|| c.uid.to_string()));
        self
    }

    pub fn duration_ms(&self) -> Option<f64> {
        self.completed_at
            .map(|c| (c.0 - self.started_at.0).max(0) as f64 / 1e6)
    }
}

/// A later change of an existing row's status (the operation finished, or
/// recovery settled it).
#[derive(Clone, Debug)]
pub struct Update {
    pub id: Uuid,
    pub status: Status,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub completed_at: Timestamp,
    /// Duration from the row's start, when the caller knows it.
    pub duration_ms: Option<f64>,
}

impl Update {
    pub fn new(id: Uuid, status: Status, outcome: impl Into<Option<String>>) -> Update {
        Update {
            id,
            status,
            outcome: outcome.into(),
            error: None,
            completed_at: Timestamp::now(),
            duration_ms: None,
        }
    }
}

/// How long settled rows are kept. Committed rows go by age and count;
/// failed and rolled-back rows are kept longer, for audit.
#[derive(Clone, Debug)]
pub struct Retention {
    pub committed_max_rows: u64,
    pub committed_max_age: std::time::Duration,
    pub failed_max_age: std::time::Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Retention {
            committed_max_rows: 100_000,
            committed_max_age: std::time::Duration::from_secs(7 * DAY),
            failed_max_age: std::time::Duration::from_secs(90 * DAY),
        }
    }
}

/// Whether `rec` is a request another process left for the daemon serving
/// the store (a `mode_change` with `"request": true`, see
/// `Fs::serve_mode_requests`): not an interrupted operation; the daemon
/// serves it, also the next one after a crash.
pub fn is_request(rec: &Record) -> bool {
    rec.op == Op::ModeChange && rec.data.get("request").and_then(Value::as_bool) == Some(true)
}

/// A name (bytes) in `operation_data`: a string when it is UTF-8, else hex.
pub fn name_json(name: &[u8]) -> Value {
    match std::str::from_utf8(name) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => {
            let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

/// RFC 3339 with `Z` and nanoseconds, the log's time format.
pub fn rfc3339(t: Timestamp) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(t.0 as i128)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    dt.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Parse [`rfc3339`]'s output back.
pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let dt = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(Timestamp(dt.unix_timestamp_nanos() as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_enums() {
        for op in ALL_OPS {
            assert_eq!(Op::parse(op.as_str()), Some(op));
        }
        assert_eq!(Op::parse("nope"), None);
        assert_eq!(Status::parse("rolled_back"), Some(Status::RolledBack));
    }

    #[test]
    fn times_are_utc_with_z() {
        let t = Timestamp(1_700_000_000_123_456_789);
        let s = rfc3339(t);
        assert_eq!(s, "2023-11-14T22:13:20.123456789Z");
        assert_eq!(parse_rfc3339(&s), Some(t));
    }

    #[test]
    fn non_utf8_names_are_hex() {
        assert_eq!(name_json(b"a"), Value::String("a".into()));
        assert_eq!(name_json(&[0xff, 0x00]), serde_json::json!({"hex": "ff00"}));
    }
}
