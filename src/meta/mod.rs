//! The metadata store: namespace, inodes and extended attributes in SQL
//! tables. The core talks to it only through [`MetaStore`] and [`MetaTxn`],
//! so a second backend (PostgreSQL) is an addition, not a rewrite.
//!
//! The interface is synchronous: the core is plain blocking code called from
//! FUSE worker threads (and from `spawn_blocking` in the HTTP door); a
//! backend built on an async driver blocks on its own runtime handle.

mod migrate;
pub mod sqlite;

use crate::core::error::Result;
use crate::core::types::{DirEntry, Inode, Kind};

/// Fields of an inode the store assigns itself (the inode number).
pub type NewInode = Inode;

/// Read access and transactions over the metadata tables.
pub trait MetaStore: Send + Sync {
    /// Identity of the store this database belongs to, if initialised.
    fn store_identity(&self) -> Result<Option<(String, String)>>;
    /// Record the store identity (first mount only).
    fn init_store(&self, store_id: &str, backing: &str, root: &Inode) -> Result<()>;

    fn get_inode(&self, ino: u64) -> Result<Option<Inode>>;
    fn lookup(&self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>>;
    /// Entries of `parent` whose cookie is greater than `after`, in cookie order.
    fn read_dir(&self, parent: u64, after: u64, limit: usize) -> Result<Vec<DirEntry>>;
    fn xattrs(&self, ino: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Number of inodes, for statfs.
    fn inode_count(&self) -> Result<u64>;
    /// Inodes with no links left (unlinked while open when the daemon stopped).
    fn orphans(&self) -> Result<Vec<u64>>;

    /// Start a read-write transaction.
    fn begin(&self) -> Result<Box<dyn MetaTxn + '_>>;
    /// Make everything committed so far durable (called by fsync).
    fn sync(&self) -> Result<()>;
    /// Flush and close; called at unmount.
    fn close(&self);
}

/// One read-write transaction. Dropping it without `commit` rolls back.
pub trait MetaTxn: Send {
    fn get_inode(&mut self, ino: u64) -> Result<Option<Inode>>;
    fn lookup(&mut self, parent: u64, name: &[u8]) -> Result<Option<(u64, Kind)>>;
    fn dir_is_empty(&mut self, ino: u64) -> Result<bool>;
    /// Insert an inode; `inode.ino == 0` asks the store to allocate the number.
    fn insert_inode(&mut self, inode: &NewInode) -> Result<u64>;
    fn update_inode(&mut self, inode: &Inode) -> Result<()>;
    /// Delete an inode and its extended attributes.
    fn delete_inode(&mut self, ino: u64) -> Result<()>;
    fn insert_dentry(&mut self, parent: u64, name: &[u8], ino: u64, kind: Kind) -> Result<()>;
    fn delete_dentry(&mut self, parent: u64, name: &[u8]) -> Result<()>;
    /// Move an entry, keeping its cookie.
    fn move_dentry(
        &mut self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
    ) -> Result<()>;
    /// Point an existing entry at another inode (rename exchange).
    fn retarget_dentry(&mut self, parent: u64, name: &[u8], ino: u64, kind: Kind) -> Result<()>;
    fn set_xattr(&mut self, ino: u64, name: &[u8], value: &[u8]) -> Result<()>;
    fn remove_xattr(&mut self, ino: u64, name: &[u8]) -> Result<bool>;
    fn commit(self: Box<Self>) -> Result<()>;
}
