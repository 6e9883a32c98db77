//! The kernel side of [`Invalidator`]: other doors (the HTTP API) tell the
//! kernel what they changed behind its back, through the session's
//! notifier, so entries and attributes cached for the full TTL are dropped
//! at once. Called from the other door's threads, never from inside a FUSE
//! request, so the kernel never waits on itself.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};

use fuser::{INodeNo, Notifier};

use crate::core::Invalidator;

pub struct KernelInvalidator {
    notifier: Arc<OnceLock<Notifier>>,
    /// What the kernel holds, on a follower's mount (see `known`).
    known: Option<Arc<super::known::KnownNames>>,
}

impl KernelInvalidator {
    pub fn new(
        notifier: Arc<OnceLock<Notifier>>,
        known: Option<Arc<super::known::KnownNames>>,
    ) -> KernelInvalidator {
        KernelInvalidator { notifier, known }
    }
}

/// ENOENT means the kernel holds nothing for it: nothing to drop.
fn report(what: &str, r: std::io::Result<()>) {
    if let Err(e) = r {
        if e.raw_os_error() != Some(libc::ENOENT) {
            tracing::debug!(what, error = %e, "kernel invalidation");
        }
    }
}

impl Invalidator for KernelInvalidator {
    fn entry(&self, parent: u64, name: &[u8]) {
        if let Some(n) = self.notifier.get() {
            report(
                "entry",
                n.inval_entry(INodeNo(parent), OsStr::from_bytes(name)),
            );
        }
    }

    fn inode(&self, ino: u64) {
        if let Some(n) = self.notifier.get() {
            // Attributes and cached pages (content, or a directory's listing).
            report("inode", n.inval_inode(INodeNo(ino), 0, 0));
        }
    }

    fn everything(&self) {
        let Some(known) = &self.known else {
            tracing::warn!(
                "the kernel's caches of this mount cannot be dropped: names not tracked"
            );
            return;
        };
        let (names, inos) = known.all();
        for (parent, name) in &names {
            self.entry(*parent, name);
        }
        for ino in inos.into_iter().chain([crate::types::ROOT_INO]) {
            self.inode(ino);
        }
    }
}
