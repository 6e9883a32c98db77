//! The filesystem core: namespace, inodes, open files and the rules that
//! govern them. It knows nothing of FUSE or HTTP; both doors call these
//! operations, so every rule is written once.
//!
//! Concurrency: reads are served from the caches or straight from the
//! metadata store without locks. Mutations of metadata take one mutation
//! lock for the span of their transaction (the store serialises writers
//! anyway); data I/O on open files never takes it.

pub mod cache;
mod data;
pub mod error;
pub mod namespace;
mod open;
pub mod types;
mod xattr;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::blob::ObjectStore;
use crate::meta::{MetaStore, MetaTxn};
use cache::{Cache, Changes};
use error::{enoent, Result};
pub use open::{open_store, StoreOptions};
use types::{Inode, Kind};

pub use data::Handle;

/// An inode with at least one open handle: the object file is shared by
/// all handles and is the truth for size and content while open.
struct OpenInode {
    count: u32,
    file: Arc<std::fs::File>,
    /// Object mtime when first opened: a different mtime later means the
    /// content changed through an open handle (possibly via passthrough).
    base_mtime: types::Timestamp,
}

pub struct Fs {
    meta: Box<dyn MetaStore>,
    objects: ObjectStore,
    cache: Cache,
    mutate: Mutex<()>,
    open: Mutex<HashMap<u64, OpenInode>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    backing: PathBuf,
    store_id: String,
}

/// Attributes as a door shows them.
#[derive(Clone, Debug)]
pub struct Attr {
    pub inode: Inode,
    /// 512-byte blocks allocated.
    pub blocks: u64,
}

impl Fs {
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Fetch an inode through the cache.
    fn inode(&self, ino: u64) -> Result<Inode> {
        if let Some(i) = self.cache.inode(ino) {
            return Ok(i);
        }
        let gen = self.cache.generation();
        let inode = self.meta.get_inode(ino)?.ok_or_else(enoent)?;
        self.cache.fill_inode(gen, &inode);
        Ok(inode)
    }

    /// Resolve a name in a directory through the cache.
    fn child(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>> {
        if let Some(v) = self.cache.dentry(parent, name) {
            return Ok(v);
        }
        let gen = self.cache.generation();
        let v = self.meta.lookup(parent, name)?;
        self.cache.fill_dentry(gen, parent, name, v);
        Ok(v)
    }

    /// Run a metadata mutation as one transaction, then publish its changes
    /// to the caches and remove the objects it released.
    fn with_tx<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let _guard = self.mutate.lock();
        let mut tx = Tx {
            fs: self,
            txn: self.meta.begin()?,
            changes: Changes::default(),
            local: HashMap::new(),
            local_dentries: HashMap::new(),
            released_objects: Vec::new(),
        };
        let out = f(&mut tx)?;
        let Tx {
            txn,
            changes,
            released_objects,
            ..
        } = tx;
        txn.commit()?;
        self.cache.publish(changes);
        // Only now that no committed metadata refers to them.
        for ino in released_objects {
            if let Err(e) = self.objects.remove(ino) {
                tracing::warn!(ino, error = %e, "could not remove released object");
            }
        }
        Ok(out)
    }

    fn attr_of(&self, inode: Inode) -> Result<Attr> {
        if inode.kind == Kind::File {
            if let Some(a) = self.open_attr(&inode)? {
                return Ok(a);
            }
        }
        let blocks = inode.size.div_ceil(512);
        Ok(Attr { inode, blocks })
    }
}

/// A metadata transaction with read-your-writes and cache bookkeeping.
pub(crate) struct Tx<'a> {
    fs: &'a Fs,
    txn: Box<dyn MetaTxn + 'a>,
    changes: Changes,
    local: HashMap<u64, Inode>,
    local_dentries: HashMap<cache::DentryKey, cache::DentryVal>,
    released_objects: Vec<u64>,
}

impl Tx<'_> {
    /// The inode as this transaction sees it. Under the mutation lock the
    /// cache holds committed state, so it is consulted before the store.
    fn inode(&mut self, ino: u64) -> Result<Inode> {
        if let Some(i) = self.local.get(&ino) {
            return Ok(i.clone());
        }
        if let Some(i) = self.fs.cache.inode(ino) {
            return Ok(i);
        }
        self.txn.get_inode(ino)?.ok_or_else(enoent)
    }

    fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>> {
        if let Some(v) = self.local_dentries.get(&(parent, name.to_vec())) {
            return Ok(*v);
        }
        if let Some(v) = self.fs.cache.dentry(parent, name) {
            return Ok(v);
        }
        self.txn.lookup(parent, name)
    }

    fn put(&mut self, inode: &Inode) -> Result<()> {
        self.txn.update_inode(inode)?;
        self.local.insert(inode.ino, inode.clone());
        self.changes.inodes.push(inode.clone());
        Ok(())
    }

    fn insert(&mut self, mut inode: Inode) -> Result<Inode> {
        inode.ino = self.txn.insert_inode(&inode)?;
        self.local.insert(inode.ino, inode.clone());
        self.changes.inodes.push(inode.clone());
        Ok(inode)
    }

    /// Delete an inode; a regular file's object goes after commit.
    fn remove(&mut self, inode: &Inode) -> Result<()> {
        self.txn.delete_inode(inode.ino)?;
        self.local.remove(&inode.ino);
        self.changes.removed_inodes.push(inode.ino);
        if inode.kind == Kind::File {
            self.released_objects.push(inode.ino);
        }
        Ok(())
    }

    fn set_dentry(&mut self, parent: u64, name: &[u8], v: Option<(u64, Kind)>) {
        self.local_dentries.insert((parent, name.to_vec()), v);
        self.changes.dentries.push(((parent, name.to_vec()), v));
    }

    fn add_entry(&mut self, parent: u64, name: &[u8], ino: u64, kind: Kind) -> Result<()> {
        self.txn.insert_dentry(parent, name, ino, kind)?;
        self.set_dentry(parent, name, Some((ino, kind)));
        Ok(())
    }

    fn remove_entry(&mut self, parent: u64, name: &[u8]) -> Result<()> {
        self.txn.delete_dentry(parent, name)?;
        self.set_dentry(parent, name, None);
        Ok(())
    }
}

impl Fs {
    /// Flush and close the metadata store (at unmount).
    pub fn close(&self) {
        self.meta.close();
    }
}
