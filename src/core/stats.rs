//! Figures and health for doors that report on the store (the HTTP door's
//! readiness probe and metrics).

use super::error::{Error, Result};
use super::types::ROOT_INO;
use super::Fs;

impl Fs {
    /// Number of log rows per status (`pending`, `committed`, ...).
    pub fn wal_counts(&self) -> Result<Vec<(String, u64)>> {
        self.meta.wal_counts()
    }

    /// Whether the store can serve: the database answers a query (not the
    /// cache) and the object area of BACKING is there and writable.
    pub fn check_ready(&self) -> Result<()> {
        if self.meta.get_inode(ROOT_INO)?.is_none() {
            return Err(Error::Meta("the root directory is missing".into()));
        }
        let objects = self.objects.path(0);
        let area = objects.parent().unwrap_or(&self.backing);
        self.objects.statvfs()?;
        nix::unistd::access(area, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| Error::Io(std::io::Error::from(e)))?;
        Ok(())
    }
}
