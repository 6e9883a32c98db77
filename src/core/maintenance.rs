//! What maintenance of a mounted store needs from the core: live mode
//! changes, and a settled view of the stores for the read-only checks of
//! `artfs fsck`, `artfs scrub` and `artfs rebuild --check`, which the HTTP
//! door runs as jobs (`api::admin`).

use super::policy::{self, Mode};
use super::Fs;
use crate::blob::ContentStore;
use crate::meta::MetaStore;
use crate::types::error::Result;

impl Fs {
    /// Change the mode now (state machine and log row as `artfs mode`);
    /// returns the previous mode. Refusals are `Error::Policy`.
    pub fn change_mode(&self, to: Mode, confirm: bool, by: &str) -> Result<Mode> {
        let from = policy::change_mode(self.meta.as_ref(), &self.backing, to, confirm, by)?;
        self.refresh_policy()?;
        Ok(from)
    }

    /// Commit what is staged and let sidecars catch up, so that a check
    /// of the stores (fsck, scrub, `rebuild --check`) sees everything
    /// acknowledged so far.
    pub fn settle(&self) -> Result<()> {
        self.wait_committed()?;
        self.sidecars.drain();
        Ok(())
    }

    /// The stores under this mount, for read-only checks run beside it.
    pub fn stores(&self) -> (&dyn MetaStore, &dyn ContentStore) {
        (self.meta.as_ref(), self.objects.as_ref())
    }
}
