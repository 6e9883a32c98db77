//! What the doors hold open: file handles, the object file each open inode
//! shares among its handles (with its writers and their write intents), and
//! open directories (a removed directory lives on while one is open).
//! Plain state with its locks; the rules that use it are in data.rs and
//! namespace.rs.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// What an open changed of the inode's attributes, for the doors that
/// must tell caches of them (the kernel's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OpenChange {
    #[default]
    Nothing,
    /// Only atime moved (a reader, under relatime).
    Atime,
    /// More than atime (a writer dropped setuid or setgid).
    Attrs,
}

/// One open file handle.
pub struct Handle {
    pub fh: u64,
    pub ino: u64,
    /// The object file, shared by all handles of the inode.
    pub file: Arc<File>,
    pub writable: bool,
    /// What opening changed of the inode's attributes.
    pub changed: OpenChange,
    /// The file was append-only at the open: its writers' writes should
    /// pass the core, which checks each one (see `flags::check_write`).
    pub append_only: bool,
    /// Who opened it (`Caller::describe`), for the list of writers a mode
    /// change waits for.
    pub opener: String,
    /// The object's copy while a remote store still fetches it (opened
    /// by `Fs::open_streamed`): reads wait on it.
    pub fill: Option<Arc<dyn crate::blob::Filling>>,
}

impl Handle {
    /// Whether the object is still being fetched: its descriptor then
    /// holds holes, read only by `Fs::read` or after waiting on
    /// [`Handle::fetch`].
    pub fn filling(&self) -> bool {
        self.fetch().is_some()
    }

    /// The fetch of the object while it is not whole: whoever reads the
    /// descriptor itself waits on it for the bytes it reads
    /// ([`crate::blob::Filling::wait`]), as [`super::Fs::read`] does.
    pub fn fetch(&self) -> Option<&Arc<dyn crate::blob::Filling>> {
        self.fill.as_ref().filter(|f| !f.whole())
    }
}

/// One open inode: the object file its handles share.
pub(super) struct OpenInode {
    pub(super) count: u32,
    pub(super) file: Arc<File>,
    /// Object mtime when first opened: a different mtime later means the
    /// content changed through an open handle (possibly via passthrough).
    pub(super) base_mtime: crate::types::Timestamp,
    /// Open handles that may write.
    pub(super) writers: u32,
    /// Pending log rows (write intents) covering content changes through
    /// these handles; settled when the last writer closes.
    pub(super) intents: Vec<uuid::Uuid>,
    /// The copy being fetched, when opened before it was whole.
    pub(super) fill: Option<Arc<dyn crate::blob::Filling>>,
}

impl OpenInode {
    /// The fetch of the copy, while it is not whole.
    pub(super) fn filling(&self) -> Option<&Arc<dyn crate::blob::Filling>> {
        self.fill.as_ref().filter(|f| !f.whole())
    }
}

pub(super) struct OpenFiles {
    /// Open regular files, by inode.
    pub(super) inodes: Mutex<HashMap<u64, OpenInode>>,
    /// Directories a door holds open, with how many handles.
    pub(super) dirs: Mutex<HashMap<u64, u32>>,
    /// File handles, by number.
    pub(super) handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// Regular files being opened, with how many opens: they count as
    /// open (no reclaim) before their handle exists (see `Fs::pin_open`).
    pub(super) pins: Mutex<HashMap<u64, u32>>,
    next_fh: AtomicU64,
}

impl Default for OpenFiles {
    fn default() -> Self {
        OpenFiles {
            inodes: Default::default(),
            dirs: Default::default(),
            handles: Default::default(),
            pins: Default::default(),
            // 0 is no handle for the doors.
            next_fh: 1.into(),
        }
    }
}

impl OpenFiles {
    /// A handle number never given before in this run.
    pub(super) fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }
}
