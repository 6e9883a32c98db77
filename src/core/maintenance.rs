//! Maintenance jobs for a mounted store, as the HTTP door starts them:
//! the checks of `artfs fsck`, `artfs scrub` and `artfs rebuild --check`
//! (all read-only while mounted), and live mode changes.

use super::error::Result;
use super::policy::{self, Mode};
use super::Fs;

impl Fs {
    /// Change the mode now (state machine and log row as `artfs mode`);
    /// returns the previous mode. Refusals are `Error::Policy`.
    pub fn change_mode(&self, to: Mode, confirm: bool, by: &str) -> Result<Mode> {
        let from = policy::change_mode(self.meta.as_ref(), &self.backing, to, confirm, by)?;
        self.refresh_policy()?;
        Ok(from)
    }

    /// fsck's check of the committed state (read-only).
    pub fn fsck_report(&self) -> Result<crate::fsck::Report> {
        self.flush()?;
        crate::fsck::check(self.meta.as_ref(), &self.objects, true)
    }

    /// Re-hash every file against its recorded checksum (read-only: this
    /// daemon's hasher records missing hashes itself).
    pub fn scrub_report(&self, rate: Option<u64>) -> Result<crate::scrub::Scrubbed> {
        self.flush()?;
        crate::scrub::scrub(
            self.meta.as_ref(),
            &self.objects,
            rate,
            &indicatif::ProgressBar::hidden(),
            false,
        )
    }

    /// Sidecars and tables compared (`artfs rebuild --check`, read-only).
    pub fn rebuild_check(&self) -> Result<crate::rebuild::Orphans> {
        // Sidecars trail commits by a moment: let them catch up first.
        self.flush()?;
        self.sidecars.drain();
        crate::rebuild::check(
            self.meta.as_ref(),
            &self.objects,
            &indicatif::ProgressBar::hidden(),
        )
    }
}
