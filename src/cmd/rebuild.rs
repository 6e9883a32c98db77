//! `artfs rebuild`: the tables rebuilt from the attr.json sidecars alone,
//! and `--check`, which reports where sidecars and tables disagree about
//! which inodes exist.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use serde_json::json;

use crate::blob::sidecar::AttrJson;
use crate::blob::ContentStore;
use crate::core::render;
use crate::meta::{Batch, Dentry, MetaStore};
use crate::types::error::Result;
use crate::types::journal;
use crate::types::{Inode, Kind, Timestamp, ROOT_INO};

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub inodes: usize,
    pub entries: usize,
    pub attributes: usize,
    /// Sidecars that could not be used, with why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Names whose parent has no sidecar (the entry is dropped).
    pub lost_links: usize,
}

/// Every usable sidecar under the object area, by inode number.
fn read_all(
    objects: &dyn ContentStore,
    progress: &indicatif::ProgressBar,
) -> (BTreeMap<u64, AttrJson>, Vec<(PathBuf, String)>) {
    let mut docs = BTreeMap::new();
    let mut paths = HashMap::new();
    let mut skipped = Vec::new();
    for crate::blob::FoundSidecar { path, parsed, .. } in objects.sidecars() {
        progress.inc(1);
        match parsed {
            Ok((doc, _)) => match doc.fs.as_ref().map(|f| f.ino) {
                Some(ino) => {
                    docs.insert(ino, doc);
                    paths.insert(ino, path);
                }
                None => skipped.push((path, "no fs section (not written by artfs)".into())),
            },
            Err(e) => skipped.push((path, e.to_string())),
        }
    }
    // A file id names one file. Two sidecars with one id (an object and
    // its sidecar copied by hand inside BACKING): the lower inode keeps
    // it, the other is reported, never silently merged.
    let mut holder: HashMap<String, u64> = HashMap::new();
    let mut twins = Vec::new();
    for (ino, doc) in &docs {
        if let Some(first) = holder.get(&doc.file_id) {
            twins.push((*ino, *first));
        } else {
            holder.insert(doc.file_id.clone(), *ino);
        }
    }
    for (ino, first) in twins {
        let doc = docs.remove(&ino).expect("listed above");
        skipped.push((
            paths.remove(&ino).unwrap_or_default(),
            format!(
                "file id {} is also inode {first}'s sidecar's (inode {first} keeps it)",
                doc.file_id
            ),
        ));
    }
    (docs, skipped)
}

/// Rebuild the tables from the sidecars. With `incremental`, only inodes
/// missing from the tables are added (with their names and attributes);
/// otherwise the namespace tables are replaced.
pub fn rebuild(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    backing: &std::path::Path,
    incremental: bool,
    progress: &indicatif::ProgressBar,
) -> Result<Rebuilt> {
    let (mut docs, skipped) = read_all(objects, progress);
    let mut out = Rebuilt {
        skipped,
        ..Rebuilt::default()
    };
    let existing: BTreeSet<u64> = if incremental {
        let rows = meta.all_inodes()?;
        // A sidecar whose file id a row of another inode holds is not
        // added (the row is what the store serves).
        let ids: HashMap<&str, u64> = rows.iter().map(|i| (i.file_id.as_str(), i.ino)).collect();
        docs.retain(|ino, doc| match ids.get(doc.file_id.as_str()) {
            Some(held) if held != ino => {
                out.skipped.push((
                    objects.location(*ino).into(),
                    format!("file id {} is inode {held}'s in the tables", doc.file_id),
                ));
                false
            }
            _ => true,
        });
        rows.iter().map(|i| i.ino).collect()
    } else {
        meta.clear_namespace()?;
        BTreeSet::new()
    };
    let by_file_id: HashMap<&str, u64> = docs
        .iter()
        .map(|(ino, d)| (d.file_id.as_str(), *ino))
        .collect();
    let mut next_id = meta.counters()?.max_dentry_id + 1;
    let mut batch = Batch::default();
    for (ino, doc) in &docs {
        if existing.contains(ino) {
            continue;
        }
        let Some(mut inode) = render::to_inode(doc, |fid| by_file_id.get(fid).copied()) else {
            continue;
        };
        if inode.kind == Kind::File {
            // Not in the sidecar: the object itself tells.
            inode.blocks = objects.stat(*ino)?.map(|m| m.blocks);
        }
        let fs = doc.fs.as_ref().expect("to_inode checked the fs section");
        for link in &fs.links {
            let Some(parent) = by_file_id.get(link.parent.as_str()) else {
                out.lost_links += 1;
                continue;
            };
            batch.dentries.push((
                (*parent, link.name.0.clone()),
                Some(Dentry {
                    ino: *ino,
                    kind: inode.kind,
                    id: next_id,
                }),
            ));
            next_id += 1;
            out.entries += 1;
        }
        if !fs.xattrs.is_empty() {
            out.attributes += fs.xattrs.len();
            batch.xattrs.push((
                *ino,
                Some(
                    fs.xattrs
                        .iter()
                        .map(|x| (x.name.0.clone(), x.value.0.clone()))
                        .collect(),
                ),
            ));
        }
        batch.inodes.push((*ino, Some(inode)));
        out.inodes += 1;
    }
    if !docs.contains_key(&ROOT_INO) && !existing.contains(&ROOT_INO) {
        // A store whose root never changed has no root sidecar.
        batch.inodes.push((ROOT_INO, Some(default_root())));
        out.inodes += 1;
    }
    let max_ino = docs
        .keys()
        .chain(existing.iter())
        .copied()
        .max()
        .unwrap_or(ROOT_INO);
    batch.ino_reserved = Some(max_ino + 1);
    // The usage the capacity is checked against, counted afresh; a lost
    // policy row comes back from .artfs/policy.json.
    let config = match meta.config()? {
        Some(c) => Some(c),
        None => {
            let c = crate::core::policy::load_policy_file(backing).unwrap_or_else(|| {
                crate::meta::StoreConfig {
                    mode: "edit".into(),
                    mode_changed_at: Timestamp::now().to_rfc3339(),
                    mode_changed_by: "rebuild".into(),
                    capacity: None,
                    used_bytes: 0,
                    file_count: 0,
                }
            });
            batch.config = Some(c.clone());
            Some(c)
        }
    };
    if let Some(c) = config {
        let (mut bytes, mut files) = (0i64, 0i64);
        if incremental {
            bytes = c.used_bytes as i64;
            files = c.file_count as i64;
        }
        for (_, i) in batch.inodes.iter() {
            if let Some(i) = i.as_ref().filter(|i| i.kind == Kind::File) {
                bytes += i.size as i64;
                files += 1;
            }
        }
        batch.usage_delta = (bytes - c.used_bytes as i64, files - c.file_count as i64);
    }
    let mut rec = journal::Record::new(
        journal::Op::Rebuild,
        journal::Status::Committed,
        None,
        json!({ "incremental": incremental, "inodes": out.inodes, "entries": out.entries,
                "skipped": out.skipped.len() }),
    );
    rec.completed_at = Some(Timestamp::now());
    batch.journal.push(rec);
    meta.apply(&batch)?;
    meta.sync()?;
    Ok(out)
}

fn default_root() -> Inode {
    Inode::new_dir(ROOT_INO, 0o755, (0, 0), ROOT_INO, b"/", "rebuild")
}

/// Orphans both ways, for `rebuild --check`.
#[derive(Debug, Default)]
pub struct Orphans {
    /// Sidecars of inodes the tables do not have.
    pub sidecars_without_rows: Vec<u64>,
    /// Inodes (other than an untouched root) without a sidecar.
    pub rows_without_sidecars: Vec<u64>,
    pub skipped: Vec<(PathBuf, String)>,
}

pub fn check(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    progress: &indicatif::ProgressBar,
) -> Result<Orphans> {
    let (docs, skipped) = read_all(objects, progress);
    let rows: BTreeSet<u64> = meta.all_inodes()?.into_iter().map(|i| i.ino).collect();
    Ok(Orphans {
        sidecars_without_rows: docs.keys().filter(|i| !rows.contains(i)).copied().collect(),
        rows_without_sidecars: rows
            .iter()
            .filter(|i| **i != ROOT_INO && !docs.contains_key(i))
            .copied()
            .collect(),
        skipped,
    })
}
