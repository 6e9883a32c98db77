//! Sidecars from the tables and back: the attr.json of an inode rendered
//! from the metadata store (what the writer's sidecar thread, recovery and
//! fsck --repair write), and the rows an attr.json stands for (what
//! `artfs rebuild` reads).

use std::collections::{BTreeMap, HashMap};

use crate::blob::sidecar::{self, AttrJson, Bytes, FsAttrs, Link, Xattr};
use crate::blob::ContentStore;
use crate::core::archive_attrs::{self, PREFIX};
use crate::meta::MetaStore;
use crate::types::error::Result;
use crate::types::{Inode, Timestamp};

/// The sidecar of `inode`, given its names as (parent file_id, name) and
/// its extended attributes.
pub fn to_doc(
    inode: &Inode,
    links: Vec<(String, Vec<u8>)>,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> AttrJson {
    let text = |name: &str| -> Option<String> {
        let full = [PREFIX, name.as_bytes()].concat();
        xattrs
            .iter()
            .find(|(n, _)| *n == full)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let mut doc = AttrJson::new(inode.file_id.clone());
    doc.original_filename = String::from_utf8_lossy(&inode.original_name).into_owned();
    doc.storage_filename = format!("{:016x}", inode.ino);
    doc.file_size = inode.size;
    doc.content_type = text("content_type");
    doc.created_at = Some(inode.crtime);
    doc.updated_at = Some(archive_attrs::updated_at(inode));
    doc.created_by_id = Some(inode.uid.to_string());
    doc.created_by_username = Some(inode.created_by.clone());
    doc.description = text("description");
    doc.version = text("version");
    doc.checksum = inode.sha256.clone();
    doc.retention_until = text("retention_until").and_then(|v| Timestamp::parse_rfc3339(&v).ok());
    doc.custom_attributes = xattrs
        .iter()
        .filter(|(n, _)| n.starts_with(b"user.") && !n.starts_with(PREFIX))
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(&n[5..]).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect::<BTreeMap<_, _>>();
    doc.fs = Some(FsAttrs {
        ino: inode.ino,
        kind: inode.kind,
        mode: inode.perm & 0o7777,
        uid: inode.uid,
        gid: inode.gid,
        rdev: inode.rdev,
        size: inode.size,
        nlink: inode.nlink,
        atime: inode.atime,
        mtime: inode.mtime,
        ctime: inode.ctime,
        crtime: inode.crtime,
        links: links
            .into_iter()
            .map(|(parent, name)| Link {
                parent,
                name: Bytes(name),
            })
            .collect(),
        target: inode.target.clone().map(Bytes),
        xattrs: xattrs
            .iter()
            .map(|(n, v)| Xattr {
                name: Bytes(n.clone()),
                value: Bytes(v.clone()),
            })
            .collect(),
        original_name: Some(Bytes(inode.original_name.clone())),
        flags: inode.flags,
    });
    doc
}

/// Rewrite the sidecars of `inos` from the tables (removing those of
/// inodes that are gone). Files are renamed into place but not fsynced:
/// the caller syncs the filesystem once for the whole set.
pub fn rewrite(meta: &dyn MetaStore, objects: &dyn ContentStore, inos: &[u64]) -> Result<usize> {
    let written = rewrite_until(meta, objects, inos, sidecar::DirSync::Deferred, &|| false)?;
    Ok(written.expect("never gives up"))
}

/// [`rewrite`], each sidecar made durable as `sync` says (`Now`: fsynced
/// one by one, which flushes nothing else of the filesystem), giving up
/// as soon as `give_up` says so (asked before each sidecar): `None` then
/// (some sidecars may be written; writing them again is harmless).
pub fn rewrite_until(
    meta: &dyn MetaStore,
    objects: &dyn ContentStore,
    inos: &[u64],
    sync: sidecar::DirSync,
    give_up: &dyn Fn() -> bool,
) -> Result<Option<usize>> {
    let mut written = 0;
    for chunk in inos.chunks(500) {
        let inodes = meta.inodes_of(chunk)?;
        let links = meta.links_of(chunk)?;
        let xattrs = meta.xattrs_of(chunk)?;
        let mut parents: Vec<u64> = links.iter().map(|(_, p, _)| *p).collect();
        parents.sort_unstable();
        parents.dedup();
        let parent_ids: HashMap<u64, String> = meta
            .inodes_of(&parents)?
            .into_iter()
            .map(|i| (i.ino, i.file_id))
            .collect();
        let mut by_ino: HashMap<u64, Vec<(String, Vec<u8>)>> = HashMap::new();
        for (ino, parent, name) in links {
            let pid = parent_ids.get(&parent).cloned().unwrap_or_default();
            by_ino.entry(ino).or_default().push((pid, name));
        }
        let mut attrs: HashMap<u64, crate::meta::XattrList> = HashMap::new();
        for (ino, n, v) in xattrs {
            attrs.entry(ino).or_default().push((n, v));
        }
        let live: HashMap<u64, &Inode> = inodes.iter().map(|i| (i.ino, i)).collect();
        for ino in chunk {
            if give_up() {
                return Ok(None);
            }
            // Slow sidecar writes, for the test of the close's deadline.
            fail::fail_point!("render::sidecar");
            match live.get(ino) {
                Some(inode) => {
                    let doc = to_doc(
                        inode,
                        by_ino.remove(ino).unwrap_or_default(),
                        attrs.get(ino).map(Vec::as_slice).unwrap_or(&[]),
                    );
                    objects.write_sidecar(*ino, &doc, sync)?;
                    written += 1;
                }
                None => objects.remove_sidecar(*ino)?,
            }
        }
    }
    Ok(Some(written))
}

/// The inode an artfs sidecar stands for, if it has an `fs` section.
pub fn to_inode(doc: &AttrJson, parent_of: impl Fn(&str) -> Option<u64>) -> Option<Inode> {
    let fs = doc.fs.as_ref()?;
    let parent = if fs.ino == crate::types::ROOT_INO {
        fs.ino
    } else {
        fs.links
            .first()
            .and_then(|l| parent_of(&l.parent))
            .unwrap_or(0)
    };
    Some(Inode {
        ino: fs.ino,
        file_id: doc.file_id.clone(),
        kind: fs.kind,
        perm: fs.mode & 0o7777,
        uid: fs.uid,
        gid: fs.gid,
        nlink: fs.nlink,
        size: fs.size,
        atime: fs.atime,
        mtime: fs.mtime,
        ctime: fs.ctime,
        crtime: fs.crtime,
        rdev: fs.rdev,
        parent,
        target: fs.target.as_ref().map(|b| b.0.clone()),
        created_by: doc.created_by_username.clone().unwrap_or_default(),
        original_name: fs
            .original_name
            .as_ref()
            .map(|b| b.0.clone())
            .unwrap_or_else(|| doc.original_filename.clone().into_bytes()),
        sha256: doc.checksum.clone(),
        blocks: None,
        flags: fs.flags & crate::types::flags::KEPT,
        version: None,
    })
}
