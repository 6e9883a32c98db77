//! `artfs fsck`: check that the metadata tables and BACKING agree, and
//! repair what can be repaired without guessing.
//!
//! It works on the stores directly (no mount, no in-memory layer), so on a
//! mounted store it sees the last committed state: it reports, and refuses
//! to repair.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde_json::json;

use crate::blob::sidecar::AttrJson;
use crate::blob::ContentStore;
use crate::core::render;
use crate::meta::{Batch, Dentry, MetaStore};
use crate::types::error::Result;
use crate::types::journal;
use crate::types::{Inode, Kind, Timestamp, ROOT_INO};

/// One inconsistency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    NoRoot,
    RootNotDir,
    /// An entry whose parent is missing or not a directory.
    EntryWithoutParent {
        parent: u64,
        name: Vec<u8>,
    },
    /// An entry pointing at a missing inode.
    DanglingEntry {
        parent: u64,
        name: Vec<u8>,
        ino: u64,
    },
    /// An entry whose recorded kind differs from its inode's.
    EntryKindMismatch {
        parent: u64,
        name: Vec<u8>,
        ino: u64,
    },
    /// A directory reachable under more than one name.
    DirectoryHardLink {
        ino: u64,
        links: usize,
    },
    WrongLinkCount {
        ino: u64,
        recorded: u32,
        counted: u32,
    },
    /// An inode no entry reaches, with links recorded.
    Unreachable {
        ino: u64,
    },
    /// An inode with no links left (unlinked while open; the next mount
    /// reclaims it).
    AwaitingReclaim {
        ino: u64,
    },
    /// A regular file whose object is missing (and its size not zero):
    /// its content is lost until the object is restored.
    MissingObject {
        ino: u64,
        size: u64,
        path: String,
    },
    /// A regular file whose object holds fewer bytes than recorded: the
    /// rest of its content is lost until the object is restored.
    ShortObject {
        ino: u64,
        recorded: u64,
        object: u64,
        path: String,
    },
    /// A regular file whose object holds more bytes than recorded (the
    /// metadata fell behind the content).
    SizeMismatch {
        ino: u64,
        recorded: u64,
        object: u64,
    },
    /// A file in a bucket whose recorded content version is not the
    /// bucket's current one (a crash between a put and the commit naming
    /// it, with the cache directory lost; or a version deleted by hand).
    VersionMismatch {
        ino: u64,
        recorded: String,
        current: String,
    },
    /// An object no regular file owns.
    OrphanObject {
        ino: u64,
    },
    /// A file in the object area that is not an object.
    StrayFile {
        path: String,
    },
    /// Attribute rows of a missing inode.
    OrphanAttributes {
        ino: u64,
    },
    /// Log rows left pending by a crash (the next mount settles them).
    PendingLog {
        count: usize,
    },
    /// An inode without its attr.json sidecar.
    MissingSidecar {
        ino: u64,
    },
    /// A sidecar that cannot be read.
    BadSidecar {
        ino: u64,
        why: String,
    },
    /// A sidecar that says something else than the tables.
    StaleSidecar {
        ino: u64,
        field: &'static str,
    },
    /// A sidecar of an inode the tables do not have.
    OrphanSidecar {
        ino: u64,
    },
    /// The usage the capacity is checked against disagrees with the files.
    UsageMismatch {
        recorded: (u64, u64),
        counted: (u64, u64),
    },
    /// Inode numbers in use above the durable reservation.
    ReservationBehind {
        reserved: u64,
        max_ino: u64,
    },
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Finding::*;
        match self {
            NoRoot => write!(f, "the root directory (inode 1) is missing"),
            RootNotDir => write!(f, "the root inode is not a directory"),
            EntryWithoutParent { parent, name } => write!(
                f,
                "entry {:?} in inode {parent}: the parent is missing or not a directory",
                show(name)
            ),
            DanglingEntry { parent, name, ino } => write!(
                f,
                "entry {:?} in directory {parent} points at missing inode {ino}",
                show(name)
            ),
            EntryKindMismatch { parent, name, ino } => write!(
                f,
                "entry {:?} in directory {parent}: recorded kind differs from inode {ino}",
                show(name)
            ),
            DirectoryHardLink { ino, links } => {
                write!(
                    f,
                    "directory {ino} has {links} names (directories have one)"
                )
            }
            WrongLinkCount {
                ino,
                recorded,
                counted,
            } => write!(
                f,
                "inode {ino}: link count {recorded} recorded, {counted} counted"
            ),
            Unreachable { ino } => write!(f, "inode {ino} has links but no entry reaches it"),
            AwaitingReclaim { ino } => write!(
                f,
                "inode {ino} has no links left (removed while open); not yet reclaimed"
            ),
            MissingObject { ino, size, path } => write!(
                f,
                "file {ino} ({path}): object missing, {size} bytes recorded \
                 (content lost until the object is restored; reads give EIO)"
            ),
            ShortObject {
                ino,
                recorded,
                object,
                path,
            } => write!(
                f,
                "file {ino} ({path}): object short, holds {object} of {recorded} recorded bytes \
                 (content lost until the object is restored; reads give EIO)"
            ),
            SizeMismatch {
                ino,
                recorded,
                object,
            } => write!(
                f,
                "file {ino}: size {recorded} recorded, object holds {object} bytes"
            ),
            VersionMismatch {
                ino,
                recorded,
                current,
            } => write!(
                f,
                "file {ino}: version {recorded} recorded, the bucket's current one is {current}"
            ),
            OrphanObject { ino } => write!(f, "object {ino:016x} belongs to no file"),
            StrayFile { path } => write!(f, "{path} is not an object"),
            OrphanAttributes { ino } => write!(f, "attributes of missing inode {ino}"),
            PendingLog { count } => write!(
                f,
                "{count} log rows pending (an interrupted operation; recovery settles them)"
            ),
            ReservationBehind { reserved, max_ino } => {
                write!(f, "inode {max_ino} exists above the reservation {reserved}")
            }
            UsageMismatch { recorded, counted } => write!(
                f,
                "usage recorded as {} bytes in {} files, counted {} bytes in {} files",
                recorded.0, recorded.1, counted.0, counted.1
            ),
            MissingSidecar { ino } => write!(f, "inode {ino} has no sidecar"),
            BadSidecar { ino, why } => write!(f, "sidecar of inode {ino} is unreadable: {why}"),
            StaleSidecar { ino, field } => write!(
                f,
                "sidecar of inode {ino} disagrees with the tables ({field})"
            ),
            OrphanSidecar { ino } => write!(f, "sidecar of missing inode {ino}"),
        }
    }
}

/// What a check found, with figures.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub inodes: usize,
    pub entries: usize,
    pub objects: usize,
    /// Sidecar rewrites left pending (deferred housekeeping, not a
    /// problem: the next mount writes them).
    pub deferred: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }
}

/// What pending log rows cover: differences there are an operation in
/// flight (mounted) or one recovery will settle (not mounted), not damage.
#[derive(Default)]
struct Covered {
    inos: BTreeSet<u64>,
    /// Files an operation on their content is in flight on (the rows
    /// naming one `ino`: create, write, truncate, ...).
    content: BTreeSet<u64>,
    ranges: Vec<(u64, u64)>,
    rows: usize,
    /// Pending `sidecars` rows: deferred housekeeping (only attr.json
    /// copies lag the tables), not an interrupted operation; and requests
    /// for the daemon (a mode change), which it serves.
    deferred: usize,
}

impl Covered {
    fn read(meta: &dyn MetaStore) -> Result<Covered> {
        let mut c = Covered::default();
        for r in meta.pending_journal()? {
            if r.op == journal::Op::Sidecars || journal::is_request(&r) {
                c.deferred += 1;
            } else {
                c.rows += 1;
            }
            let num = |k: &str| r.data.get(k).and_then(serde_json::Value::as_u64);
            match r.op {
                journal::Op::Reserve => {
                    if let (Some(a), Some(b)) = (num("from"), num("to")) {
                        c.ranges.push((a, b));
                    }
                }
                journal::Op::Reclaim | journal::Op::Sidecars => c.inos.extend(
                    r.data
                        .get("inos")
                        .and_then(serde_json::Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(serde_json::Value::as_u64),
                ),
                _ => {
                    c.inos.extend(num("ino"));
                    c.content.extend(num("ino"));
                }
            }
        }
        Ok(c)
    }

    fn covers(&self, ino: u64) -> bool {
        self.inos.contains(&ino) || self.ranges.iter().any(|(a, b)| (*a..*b).contains(&ino))
    }
}

/// Check the store. Reads everything once; memory grows with the number
/// of inodes. With `mounted`, pending log rows and files unlinked while
/// open are the daemon's work in progress, not problems.
///
/// `progress` counts files checked, twice over: their objects, then their
/// sidecars (the two passes that read the content store).
pub fn check(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    mounted: bool,
    progress: &indicatif::ProgressBar,
) -> Result<Report> {
    let covered = Covered::read(meta)?;
    let inodes: BTreeMap<u64, Inode> = meta.all_inodes()?.into_iter().map(|i| (i.ino, i)).collect();
    let dentries = meta.all_dentries()?;
    let (object_inos, stray) = objects.list()?;
    let mut r = Report {
        inodes: inodes.len(),
        entries: dentries.len(),
        objects: object_inos.len(),
        deferred: if mounted { 0 } else { covered.deferred },
        ..Report::default()
    };
    let f = &mut r.findings;

    match inodes.get(&ROOT_INO) {
        None => f.push(Finding::NoRoot),
        Some(i) if !i.kind.is_dir() => f.push(Finding::RootNotDir),
        _ => {}
    }

    // Count names per inode and subdirectories per directory.
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    for (parent, name, d) in &dentries {
        if !inodes.get(parent).is_some_and(|p| p.kind.is_dir()) {
            f.push(Finding::EntryWithoutParent {
                parent: *parent,
                name: name.clone(),
            });
            continue;
        }
        let Some(target) = inodes.get(&d.ino) else {
            f.push(Finding::DanglingEntry {
                parent: *parent,
                name: name.clone(),
                ino: d.ino,
            });
            continue;
        };
        if target.kind != d.kind {
            f.push(Finding::EntryKindMismatch {
                parent: *parent,
                name: name.clone(),
                ino: d.ino,
            });
        }
        *names.entry(d.ino).or_default() += 1;
        if target.kind.is_dir() {
            *subdirs.entry(*parent).or_default() += 1;
        }
    }

    let objects_set: BTreeSet<u64> = object_inos.iter().copied().collect();
    progress.set_length(2 * inodes.len() as u64);
    progress.set_message("objects");
    for (ino, i) in &inodes {
        progress.inc(1);
        let n = names.get(ino).copied().unwrap_or(0);
        if i.kind.is_dir() && n == 0 && i.nlink == 0 && *ino != ROOT_INO {
            // Removed while open (a crash came before its last close).
            if !mounted {
                f.push(Finding::AwaitingReclaim { ino: *ino });
            }
        } else if i.kind.is_dir() {
            if n > 1 {
                f.push(Finding::DirectoryHardLink {
                    ino: *ino,
                    links: n as usize,
                });
            }
            if *ino != ROOT_INO && n == 0 {
                f.push(Finding::Unreachable { ino: *ino });
            }
            let counted = 2 + subdirs.get(ino).copied().unwrap_or(0);
            if i.nlink != counted {
                f.push(Finding::WrongLinkCount {
                    ino: *ino,
                    recorded: i.nlink,
                    counted,
                });
            }
        } else if n == 0 && i.nlink == 0 {
            if !mounted {
                f.push(Finding::AwaitingReclaim { ino: *ino });
            }
        } else if n == 0 {
            f.push(Finding::Unreachable { ino: *ino });
        } else if i.nlink != n {
            f.push(Finding::WrongLinkCount {
                ino: *ino,
                recorded: i.nlink,
                counted: n,
            });
        }
        // A reserved range or a sidecar rewrite explains objects without
        // inodes or stale sidecars, never a committed file's missing or
        // short object: only an operation on its content in flight does.
        if i.kind == Kind::File && !covered.content.contains(ino) {
            // A stat per file: lengths only, no content is read (scrub
            // re-hashes).
            let path = || {
                meta.path_of(*ino)
                    .ok()
                    .flatten()
                    .map(|p| show(&p))
                    .unwrap_or_else(|| "no path".into())
            };
            match objects.stat(*ino)? {
                Some(m) if m.size < i.size => f.push(Finding::ShortObject {
                    ino: *ino,
                    recorded: i.size,
                    object: m.size,
                    path: path(),
                }),
                Some(m) if m.size != i.size => f.push(Finding::SizeMismatch {
                    ino: *ino,
                    recorded: i.size,
                    object: m.size,
                }),
                None if i.size != 0 => f.push(Finding::MissingObject {
                    ino: *ino,
                    size: i.size,
                    path: path(),
                }),
                _ => {}
            }
            // A version recorded is the bucket's current one (none
            // recorded: the current one is served, and recorded later).
            if let Some(recorded) = &i.version {
                match objects.current_version(*ino)? {
                    Some(current) if current != *recorded => f.push(Finding::VersionMismatch {
                        ino: *ino,
                        recorded: recorded.clone(),
                        current,
                    }),
                    _ => {}
                }
            }
        }
    }
    for ino in &objects_set {
        if !inodes.get(ino).is_some_and(|i| i.kind == Kind::File) && !covered.covers(*ino) {
            f.push(Finding::OrphanObject { ino: *ino });
        }
    }
    for p in stray {
        f.push(Finding::StrayFile {
            path: p.display().to_string(),
        });
    }
    for ino in meta.xattr_owners()? {
        if !inodes.contains_key(&ino) {
            f.push(Finding::OrphanAttributes { ino });
        }
    }
    progress.set_message("sidecars");
    check_sidecars(meta, objects, &inodes, &dentries, &covered, f, progress)?;
    if covered.rows == 0 {
        if let Some(c) = meta.config()? {
            let counted = usage_of(&inodes);
            if (c.used_bytes, c.file_count) != counted {
                f.push(Finding::UsageMismatch {
                    recorded: (c.used_bytes, c.file_count),
                    counted,
                });
            }
        }
    }
    if covered.rows > 0 && !mounted {
        f.push(Finding::PendingLog {
            count: covered.rows,
        });
    }
    let counters = meta.counters()?;
    if let Some(max) = inodes.keys().next_back() {
        if *max >= counters.ino_reserved {
            f.push(Finding::ReservationBehind {
                reserved: counters.ino_reserved,
                max_ino: *max,
            });
        }
    }
    Ok(r)
}

/// Repair what can be repaired without guessing; returns what was done.
/// Not for a mounted store (the caller holds the store lock).
///
/// - pending log rows: settled by recovery, as a mount would;
/// - entries without a parent or target: removed;
/// - link counts: set to the counted names (a file left with none is
///   reclaimed);
/// - files with links but no name: reconnected under `/lost+found`;
/// - sizes: set from an object that holds more than recorded (the object
///   is the truth for content); a missing or short object is left alone
///   and reported (zeroing or shrinking would make the loss permanent);
/// - orphan objects and attribute rows: removed;
/// - inodes awaiting reclaim: removed with their objects.
///
/// Left alone (reported again): a missing root, directory hard links,
/// kind mismatches, stray files.
pub fn repair(meta: &dyn MetaStore, objects: &dyn ContentStore) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for s in crate::core::recover::recover(meta, objects)? {
        done.push(format!(
            "settled pending {} row {}: {}",
            s.op.as_str(),
            s.id,
            s.outcome
        ));
    }
    let report = check(meta, objects, false, &indicatif::ProgressBar::hidden())?;
    let inodes: BTreeMap<u64, Inode> = meta.all_inodes()?.into_iter().map(|i| (i.ino, i)).collect();
    let mut batch = Batch::default();
    let mut fixed: BTreeMap<u64, Inode> = BTreeMap::new();
    let mut lost = Vec::new();
    let mut rewrite = Vec::new();
    let mut fix_usage = false;
    for finding in &report.findings {
        use Finding::*;
        let get = |ino: u64| fixed.get(&ino).or(inodes.get(&ino)).cloned();
        match finding {
            EntryWithoutParent { parent, name } | DanglingEntry { parent, name, .. } => {
                batch.dentries.push(((*parent, name.clone()), None));
                done.push(format!("removed {finding}"));
            }
            WrongLinkCount { ino, counted, .. } => {
                let Some(mut i) = get(*ino) else { continue };
                i.nlink = *counted;
                fixed.insert(*ino, i);
                done.push(format!("fixed {finding}"));
            }
            AwaitingReclaim { ino } => {
                batch.inodes.push((*ino, None));
                batch.xattrs.push((*ino, None));
                objects.remove(*ino)?;
                done.push(format!("reclaimed inode {ino}"));
            }
            Unreachable { ino } => lost.push(*ino),
            SizeMismatch { ino, object, .. } => {
                let Some(mut i) = get(*ino) else { continue };
                i.size = *object;
                fixed.insert(*ino, i);
                done.push(format!("fixed {finding}: size set from the object"));
            }
            VersionMismatch { ino, current, .. } => {
                let Some(mut i) = get(*ino) else { continue };
                i.version = Some(current.clone());
                fixed.insert(*ino, i);
                done.push(format!("fixed {finding}: the current version recorded"));
            }
            // Lost content is never "repaired" by zeroing or shrinking the
            // file: it stays as recorded (EIO on reads) and is reported
            // again until its object is restored.
            MissingObject { .. } | ShortObject { .. } => {}
            OrphanObject { ino } => {
                objects.remove(*ino)?;
                done.push(format!("removed {finding}"));
            }
            OrphanAttributes { ino } => {
                batch.xattrs.push((*ino, None));
                done.push(format!("removed {finding}"));
            }
            ReservationBehind { max_ino, .. } => {
                batch.ino_reserved = Some(max_ino + 1);
                done.push(format!("fixed {finding}"));
            }
            MissingSidecar { ino } | BadSidecar { ino, .. } | StaleSidecar { ino, .. } => {
                rewrite.push(*ino);
                done.push(format!(
                    "rewrote the sidecar of inode {ino} from the tables"
                ));
            }
            OrphanSidecar { ino } => {
                objects.remove_sidecar(*ino)?;
                done.push(format!("removed {finding}"));
            }
            UsageMismatch { .. } => fix_usage = true,
            NoRoot
            | RootNotDir
            | EntryKindMismatch { .. }
            | DirectoryHardLink { .. }
            | StrayFile { .. }
            | PendingLog { .. } => {}
        }
    }
    if !lost.is_empty() {
        reconnect(meta, &inodes, &mut fixed, &mut batch, &lost, &mut done)?;
    }
    batch
        .inodes
        .extend(fixed.into_iter().map(|(k, v)| (k, Some(v))));
    // Every inode the repair touched gets its sidecar rewritten too.
    rewrite.extend(batch.inodes.iter().map(|(i, _)| *i));
    rewrite.sort_unstable();
    rewrite.dedup();
    if !batch.is_empty() || !rewrite.is_empty() {
        let mut rec = journal::Record::new(
            journal::Op::Repair,
            journal::Status::Committed,
            None,
            json!({ "repairs": done }),
        );
        rec.completed_at = Some(Timestamp::now());
        batch.journal.push(rec);
        meta.apply(&batch)?;
        meta.sync()?;
        // Sidecars follow the repaired tables.
        render::rewrite(meta, objects, &rewrite)?;
        objects.sync_all()?;
    }
    // Usage last: the fixes above may have changed sizes.
    if fix_usage || !done.is_empty() {
        if let Some(c) = meta.config()? {
            let inodes: BTreeMap<u64, Inode> =
                meta.all_inodes()?.into_iter().map(|i| (i.ino, i)).collect();
            let (b, n) = usage_of(&inodes);
            let delta = (
                b as i64 - c.used_bytes as i64,
                n as i64 - c.file_count as i64,
            );
            if delta != (0, 0) {
                meta.apply(&Batch {
                    usage_delta: delta,
                    ..Batch::default()
                })?;
                done.push(format!("recounted usage: {b} bytes in {n} files"));
            }
        }
    }
    Ok(done)
}

/// (bytes, number) of regular files.
pub fn usage_of(inodes: &BTreeMap<u64, Inode>) -> (u64, u64) {
    inodes
        .values()
        .filter(|i| i.kind == Kind::File)
        .fold((0, 0), |(b, n), i| (b + i.size, n + 1))
}

/// Compare every inode's sidecar with what the tables say.
fn check_sidecars(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    inodes: &BTreeMap<u64, Inode>,
    dentries: &[(u64, Vec<u8>, Dentry)],
    covered: &Covered,
    f: &mut Vec<Finding>,
    progress: &indicatif::ProgressBar,
) -> Result<()> {
    let mut found: BTreeMap<u64, std::result::Result<AttrJson, String>> = BTreeMap::new();
    for crate::blob::FoundSidecar { ino, parsed, .. } in objects.sidecars() {
        progress.inc(1);
        if let Some(ino) = ino {
            found.insert(ino, parsed.map(|(d, _)| d).map_err(|e| e.to_string()));
        }
    }
    let mut links: HashMap<u64, Vec<(String, Vec<u8>)>> = HashMap::new();
    for (parent, name, d) in dentries {
        let pid = inodes
            .get(parent)
            .map(|p| p.file_id.clone())
            .unwrap_or_default();
        links.entry(d.ino).or_default().push((pid, name.clone()));
    }
    let all: Vec<u64> = inodes.keys().copied().collect();
    let mut attrs: HashMap<u64, crate::meta::XattrList> = HashMap::new();
    for (ino, n, v) in meta.xattrs_of(&all)? {
        attrs.entry(ino).or_default().push((n, v));
    }
    for (ino, inode) in inodes {
        if covered.covers(*ino) {
            continue;
        }
        match found.get(ino) {
            None => f.push(Finding::MissingSidecar { ino: *ino }),
            Some(Err(why)) => f.push(Finding::BadSidecar {
                ino: *ino,
                why: why.clone(),
            }),
            Some(Ok(doc)) => {
                let want = render::to_doc(
                    inode,
                    links.remove(ino).unwrap_or_default(),
                    attrs.get(ino).map(Vec::as_slice).unwrap_or(&[]),
                );
                if let Some(field) = differs(doc, &want) {
                    f.push(Finding::StaleSidecar { ino: *ino, field });
                }
            }
        }
    }
    for ino in found.keys() {
        if !inodes.contains_key(ino) && !covered.covers(*ino) {
            f.push(Finding::OrphanSidecar { ino: *ino });
        }
    }
    Ok(())
}

/// The first field where a sidecar differs from the tables' rendering.
fn differs(have: &AttrJson, want: &AttrJson) -> Option<&'static str> {
    if have.file_id != want.file_id {
        return Some("file_id");
    }
    if have.checksum != want.checksum {
        return Some("checksum");
    }
    let (Some(h), Some(w)) = (&have.fs, &want.fs) else {
        return Some("fs section");
    };
    let fields: [(&'static str, bool); 10] = [
        ("kind", h.kind == w.kind),
        ("mode", h.mode == w.mode),
        ("owner", h.uid == w.uid && h.gid == w.gid),
        ("size", h.size == w.size),
        ("nlink", h.nlink == w.nlink),
        (
            "times",
            h.mtime == w.mtime && h.ctime == w.ctime && h.crtime == w.crtime,
        ),
        ("names", h.links == w.links),
        ("target", h.target == w.target),
        ("xattrs", h.xattrs == w.xattrs),
        ("atime", h.atime == w.atime),
    ];
    fields.iter().find(|(_, same)| !same).map(|(n, _)| *n)
}

/// Give unreachable inodes a name in `/lost+found` (created if needed),
/// as `#<ino>`.
fn reconnect(
    meta: &dyn MetaStore,
    inodes: &BTreeMap<u64, Inode>,
    fixed: &mut BTreeMap<u64, Inode>,
    batch: &mut Batch,
    lost: &[u64],
    done: &mut Vec<String>,
) -> Result<()> {
    let counters = meta.counters()?;
    let mut next_id = counters.max_dentry_id + 1;
    let Some(mut root) = fixed.get(&ROOT_INO).or(inodes.get(&ROOT_INO)).cloned() else {
        return Ok(());
    };
    let lf = match meta.lookup(ROOT_INO, b"lost+found")? {
        Some(d) if d.kind.is_dir() => fixed.get(&d.ino).or(inodes.get(&d.ino)).cloned(),
        Some(_) => {
            done.push("cannot reconnect: /lost+found is not a directory".into());
            return Ok(());
        }
        None => None,
    };
    let mut lf = match lf {
        Some(lf) => lf,
        None => {
            let ino = counters.max_ino.max(counters.ino_reserved) + 1;
            batch.ino_reserved = Some(ino + 1);
            batch.dentries.push((
                (ROOT_INO, b"lost+found".to_vec()),
                Some(Dentry {
                    ino,
                    kind: Kind::Dir,
                    id: next_id,
                }),
            ));
            next_id += 1;
            root.nlink += 1;
            done.push("created /lost+found".into());
            Inode::new_dir(ino, 0o700, (0, 0), ROOT_INO, b"lost+found", "fsck")
        }
    };
    for ino in lost {
        let Some(mut i) = fixed.get(ino).or(inodes.get(ino)).cloned() else {
            continue;
        };
        let name = format!("#{ino}").into_bytes();
        batch.dentries.push((
            (lf.ino, name),
            Some(Dentry {
                ino: *ino,
                kind: i.kind,
                id: next_id,
            }),
        ));
        next_id += 1;
        if i.kind.is_dir() {
            lf.nlink += 1;
            i.parent = lf.ino;
            i.nlink = i.nlink.max(2);
        } else {
            i.nlink = 1;
        }
        fixed.insert(*ino, i);
        done.push(format!("reconnected inode {ino} as /lost+found/#{ino}"));
    }
    fixed.insert(lf.ino, lf);
    fixed.insert(ROOT_INO, root);
    Ok(())
}
