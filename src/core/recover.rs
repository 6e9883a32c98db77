//! Recovery at mount: settle every log row left pending by a crash, before
//! the first request is served.
//!
//! Each row is rolled forward or back by looking at what actually reached
//! BACKING, and settled in the same transaction as any metadata fix, so a
//! crash during recovery is recovered by running it again (every step is
//! idempotent). What each operation type means here is tabled in
//! docs/ARCHITECTURE.md.

use serde_json::Value;

use crate::blob::ContentStore;
use crate::meta::{Batch, MetaStore};
use crate::types::error::Result;
use crate::types::journal::{Op, Record, Status, Update};
use crate::types::Kind;

/// What recovery did to one row.
#[derive(Clone, Debug)]
pub struct Settled {
    pub op: Op,
    pub id: uuid::Uuid,
    pub status: Status,
    pub outcome: String,
}

/// Settle every pending row. Returns what was done, oldest row first.
pub fn recover(meta: &dyn MetaStore, objects: &dyn ContentStore) -> Result<Vec<Settled>> {
    recover_with(meta, objects, false)
}

/// [`recover`]; with `defer_sidecars`, pending `sidecars` rows (deferred
/// housekeeping, not an interrupted operation) are left for the sidecar
/// thread of the daemon about to serve, as ordinary work.
pub fn recover_with(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    defer_sidecars: bool,
) -> Result<Vec<Settled>> {
    let pending = meta.pending_journal()?;
    let mut report = Vec::with_capacity(pending.len());
    let mut deferred = 0;
    for rec in pending {
        if crate::types::journal::is_request(&rec) {
            continue; // served by the daemon once it runs
        }
        if defer_sidecars && rec.op == Op::Sidecars {
            deferred += 1;
            continue;
        }
        let (status, outcome, mut batch) = settle(meta, objects, &rec)?;
        crate::crash_point!("recover::before_settle");
        batch
            .journal_done
            .push(Update::new(rec.id, status, outcome.clone()));
        meta.apply(&batch)?;
        tracing::info!(op = rec.op.as_str(), id = %rec.id, status = status.as_str(), %outcome,
            "recovered log row");
        report.push(Settled {
            op: rec.op,
            id: rec.id,
            status,
            outcome,
        });
    }
    if !report.is_empty() {
        meta.sync()?;
    }
    if deferred > 0 || report.iter().any(|s| s.op == Op::Sidecars) {
        let n = objects.sweep_temp()?;
        if n > 0 {
            tracing::info!(
                files = n,
                "removed temp files of interrupted sidecar writes"
            );
        }
    }
    Ok(report)
}

fn ino_of(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Decide one row: its final status, what was done, and the metadata fix
/// to commit with the status change.
fn settle(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    rec: &Record,
) -> Result<(Status, String, Batch)> {
    let mut batch = Batch::default();
    match rec.op {
        Op::Reserve => {
            let (Some(from), Some(to)) = (ino_of(&rec.data, "from"), ino_of(&rec.data, "to"))
            else {
                return Ok(malformed(rec));
            };
            // Objects in the range whose inode never committed were created
            // by operations that did not happen: remove them.
            let mut removed = 0;
            for ino in objects.present(from..to)? {
                if meta.get_inode(ino)?.is_none() {
                    objects.remove(ino)?;
                    removed += 1;
                }
            }
            if removed == 0 {
                Ok((
                    Status::Committed,
                    "no uncommitted objects in the range".into(),
                    batch,
                ))
            } else {
                Ok((
                    Status::RolledBack,
                    format!("removed {removed} objects of creations that never committed"),
                    batch,
                ))
            }
        }
        Op::Create | Op::Write | Op::Truncate => {
            let Some(ino) = ino_of(&rec.data, "ino") else {
                return Ok(malformed(rec));
            };
            let Some(mut inode) = meta.get_inode(ino)? else {
                objects.remove(ino)?;
                return Ok((
                    Status::RolledBack,
                    "the inode never committed; its object was removed".into(),
                    batch,
                ));
            };
            if inode.kind != Kind::File {
                return Ok((Status::Committed, "not a regular file".into(), batch));
            }
            // The object is the truth for content: the metadata follows it.
            let (size, mtime, ctime) =
                match objects.stat(ino)? {
                    Some(m) => (m.size, m.mtime, m.ctime),
                    // No object and no content recorded: an empty file (its
                    // object is made when it is next opened).
                    None if inode.size == 0 => (0, inode.mtime, inode.ctime),
                    // Content recorded but the object is gone: it was lost
                    // (an object is never removed while its inode lives), not
                    // emptied by this operation. Keep size and hash as recorded
                    // for the doors to answer EIO and fsck to report.
                    None => {
                        tracing::error!(ino, size = inode.size,
                        "recovery: the file's object is missing; its metadata is left as recorded");
                        return Ok((
                            Status::Failed,
                            format!(
                            "the object is missing; {} bytes stay recorded (restore the object)",
                            inode.size
                        ),
                            batch,
                        ));
                    }
                };
            let before = inode.size;
            let newer = mtime > inode.mtime;
            // A store that keeps versions: the one it holds current (a
            // crash may have come between its put and the commit naming
            // it; the older one goes once this names the newer).
            let version = objects.current_version(ino)?;
            let versioned = version
                .as_deref()
                .is_some_and(|v| crate::blob::is_later_version(v, inode.version.as_deref()));
            if versioned {
                inode.version = version;
            }
            if size == before && !newer {
                if versioned {
                    batch.inodes.push((ino, Some(inode)));
                }
                return Ok((
                    Status::Committed,
                    format!("metadata matched the object (size {size})"),
                    batch,
                ));
            }
            inode.size = size;
            batch.usage_delta = (size as i64 - before as i64, 0);
            if newer {
                inode.mtime = mtime;
                inode.ctime = inode.ctime.max(ctime);
            }
            batch.inodes.push((ino, Some(inode)));
            Ok((
                Status::Committed,
                format!("rolled forward: size {before} -> {size} from the object"),
                batch,
            ))
        }
        Op::Sidecars => {
            let Some(inos) = rec.data.get("inos").and_then(Value::as_array) else {
                return Ok(malformed(rec));
            };
            let inos: Vec<u64> = inos.iter().filter_map(Value::as_u64).collect();
            let n = crate::core::render::rewrite(meta, objects, &inos)?;
            objects.sync_all()?;
            Ok((
                Status::Committed,
                format!("rewrote {n} sidecars from the tables"),
                batch,
            ))
        }
        Op::Reclaim => {
            let Some(inos) = rec.data.get("inos").and_then(Value::as_array) else {
                return Ok(malformed(rec));
            };
            let mut removed = 0;
            for ino in inos.iter().filter_map(Value::as_u64) {
                if meta.get_inode(ino)?.is_none() {
                    objects.remove(ino)?;
                    removed += 1;
                }
            }
            // Versions replaced by a recorded one (rows from before
            // versions were recorded have none).
            let versions: Vec<crate::core::cache::RecordedVersion> = match rec.data.get("versions")
            {
                Some(v) => match serde_json::from_value(v.clone()) {
                    Ok(v) => v,
                    Err(_) => return Ok(malformed(rec)),
                },
                None => Vec::new(),
            };
            let mut replaced = 0;
            for v in versions {
                let Some(inode) = meta.get_inode(v.ino)? else {
                    continue;
                };
                // Never the version the tables name now.
                let old: Vec<String> = v
                    .superseded
                    .into_iter()
                    .filter(|o| inode.version.as_deref() != Some(o.as_str()))
                    .collect();
                objects.version_committed(v.ino, &v.name, &old)?;
                replaced += old.len();
            }
            Ok((
                Status::Committed,
                format!("removed {removed} released objects, {replaced} replaced versions"),
                batch,
            ))
        }
        _ => Ok((
            Status::Failed,
            format!("no recovery defined for a pending {} row", rec.op.as_str()),
            batch,
        )),
    }
}

fn malformed(rec: &Record) -> (Status, String, Batch) {
    (
        Status::Failed,
        format!("malformed operation_data for {}", rec.op.as_str()),
        Batch::default(),
    )
}
