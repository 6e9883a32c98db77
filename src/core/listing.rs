//! The original API's file listing (`GET /api/v1/files/`): the regular
//! files a caller can read, newest first, paged by skip and limit, with
//! how many the caller would see in all.
//!
//! Visibility is the reachability rule of `access.rs` (a name the caller
//! can walk to, read permission on the file), decided per directory once
//! per request: a store's files share few directories, and every file must
//! be examined to count the total. Files whose only names are in the trash
//! are deleted files and never listed, as search leaves them out.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::access::{MAY_EXEC, MAY_READ};
use super::trash::in_trash;
use super::{Attr, Fs};
use crate::types::error::Result;
use crate::types::{Caller, Inode, Timestamp};

/// Rows read from the metadata store at a time.
const BATCH: usize = 1000;

/// A listed file and the path the caller reaches it by.
#[derive(Clone, Debug)]
pub struct Listed {
    pub attr: Attr,
    /// `/a/b.txt` (bytes; names need not be UTF-8).
    pub path: Vec<u8>,
}

/// One page of the listing.
#[derive(Clone, Debug, Default)]
pub struct FilesPage {
    /// Every file the caller would see, on any page.
    pub total: u64,
    pub files: Vec<Listed>,
}

impl Fs {
    /// The files `caller` can read, newest first (creation time, then file
    /// id), skipping `skip` and keeping at most `limit`. Commits what is
    /// staged first, so the listing sees every change made before it.
    /// Examines every regular file (to count `total`): its cost grows with
    /// the store.
    pub fn list_files_as(&self, caller: &Caller, skip: u64, limit: usize) -> Result<FilesPage> {
        self.wait_committed()?;
        // Directory -> its path, when the caller may look names up in it.
        let mut dirs: HashMap<u64, Option<Vec<u8>>> = HashMap::new();
        let mut page = FilesPage::default();
        let mut keep: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut after: Option<(Timestamp, String)> = None;
        loop {
            let key = after.as_ref().map(|(t, id)| (*t, id.as_str()));
            let batch = self.meta.files_newest_first(key, BATCH)?;
            let inos: Vec<u64> = batch.iter().map(|i| i.ino).collect();
            let mut names: HashMap<u64, Vec<(u64, Vec<u8>)>> = HashMap::new();
            for (ino, parent, name) in self.meta.links_of(&inos)? {
                names.entry(ino).or_default().push((parent, name));
            }
            for inode in &batch {
                let links = names.remove(&inode.ino).unwrap_or_default();
                let Some(path) = self.visible_path(caller, inode, links, &mut dirs)? else {
                    continue;
                };
                if page.total >= skip && keep.len() < limit {
                    keep.push((inode.ino, path));
                }
                page.total += 1;
            }
            match batch.last() {
                Some(last) if batch.len() == BATCH => {
                    after = Some((last.crtime, last.file_id.clone()));
                }
                _ => break,
            }
        }
        for (ino, path) in keep {
            page.files.push(Listed {
                attr: self.getattr(ino)?,
                path,
            });
        }
        Ok(page)
    }

    /// The path `caller` reaches the file by, outside the trash (the
    /// recorded parent's name first), if any, and if they may read it.
    fn visible_path(
        &self,
        caller: &Caller,
        inode: &Inode,
        mut links: Vec<(u64, Vec<u8>)>,
        dirs: &mut HashMap<u64, Option<Vec<u8>>>,
    ) -> Result<Option<Vec<u8>>> {
        if !self.may(caller, inode, MAY_READ)? {
            return Ok(None);
        }
        links.sort_by_key(|(parent, _)| *parent != inode.parent);
        for (parent, name) in links {
            let dir = match dirs.entry(parent) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.searchable_dir(caller, parent)?),
            };
            if let Some(dir) = dir {
                let mut path = dir.clone();
                if path != b"/" {
                    path.push(b'/');
                }
                path.extend_from_slice(&name);
                return Ok(Some(path));
            }
        }
        Ok(None)
    }

    /// The path of directory `dir` when `caller` can walk to it and search
    /// it (so look a name up in it), and it is not in the trash.
    fn searchable_dir(&self, caller: &Caller, dir: u64) -> Result<Option<Vec<u8>>> {
        let Some(path) = self.meta.path_of(dir)? else {
            return Ok(None);
        };
        if in_trash(&path) {
            return Ok(None);
        }
        let comps: Vec<Vec<u8>> = path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        match self.walk(caller, &comps) {
            Ok(attr) if attr.inode.ino == dir && self.may(caller, &attr.inode, MAY_EXEC)? => {
                Ok(Some(path))
            }
            Ok(_) => Ok(None),
            Err(e) if matches!(e.errno(), libc::EACCES | libc::ENOENT | libc::ENOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
