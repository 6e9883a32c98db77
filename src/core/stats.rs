//! Figures and health for doors that report on the store (the HTTP door's
//! readiness probe and metrics).

use super::Fs;
use crate::types::error::{Error, Result};
use crate::types::ROOT_INO;

impl Fs {
    /// Number of log rows per status (`pending`, `committed`, ...).
    pub fn journal_counts(&self) -> Result<Vec<(String, u64)>> {
        self.meta.journal_counts()
    }

    /// Whether the store can serve: the writer commits (its last commit
    /// did not fail, it holds its lease), the database answers a query
    /// (not the cache) and the object area of BACKING is there and
    /// writable.
    pub fn check_ready(&self) -> Result<()> {
        self.writer.check_fenced()?;
        if let (_, Some(e)) = self.writer.health() {
            return Err(Error::Meta(format!("metadata commits are failing: {e}")));
        }
        if self.meta.get_inode(ROOT_INO)?.is_none() {
            return Err(Error::Meta("the root directory is missing".into()));
        }
        self.objects.check_ready()?;
        Ok(())
    }
}
