//! What maintenance of a mounted store needs from the core: live mode
//! changes, and a settled view of the stores for the read-only checks of
//! `artfs fsck`, `artfs scrub` and `artfs rebuild --check`, which the HTTP
//! door runs as jobs (`api::admin`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::policy::{self, Mode};
use super::Fs;
use crate::blob::ContentStore;
use crate::meta::MetaStore;
use crate::types::error::{Error, Result};
use crate::types::journal;

impl Fs {
    /// Change the mode (state machine and log row as `artfs mode`);
    /// returns the previous mode. Refusals are `Error::Policy`.
    ///
    /// A change that stops writes (rw -> ro) while files are open for
    /// writing is refused, naming them (as `mount -o remount,ro` is
    /// EBUSY); with `force` it waits up to `wait` (`None`: as long as it
    /// takes) for them to be closed: from the start it rules every change
    /// but the writes of those writers, which finish. It is done, and
    /// reported done, only once none is left, so no write follows it.
    pub fn change_mode(
        &self,
        to: Mode,
        confirm: bool,
        force: bool,
        wait: Option<Duration>,
        by: &str,
    ) -> Result<Mode> {
        let _one = self.policy.changing.lock();
        let from = self.mode();
        if from != to {
            from.check_transition(to, confirm)
                .map_err(|m| Error::Policy(format!("mode change refused: {m}")))?;
        }
        if from.writable() && !to.writable() {
            self.stop_writers(to, force, wait)?;
        }
        let r = policy::change_mode(self.meta.as_ref(), &self.backing, to, confirm, by)
            .and_then(|from| self.refresh_policy().map(|()| from));
        self.policy.set_draining(None);
        r
    }

    /// Before a change to `to`, which allows no writes: refuse if files
    /// are open for writing, or (`force`) let them finish first.
    fn stop_writers(&self, to: Mode, force: bool, wait: Option<Duration>) -> Result<()> {
        if self.writers().is_empty() {
            return Ok(());
        }
        if !force {
            return Err(Error::Policy(format!(
                "mode change refused: {}; close them, or use --force (\"force\": true \
                 through the API) to let them finish first",
                self.describe_writers()
            )));
        }
        // No new writer from here on; those open finish their writes.
        self.policy.set_draining(Some(to));
        tracing::warn!(to = %to, writers = %self.describe_writers(),
            "mode change waits for the files open for writing to be closed");
        let start = Instant::now();
        let mut told = Instant::now();
        while !self.writers().is_empty() {
            if wait.is_some_and(|w| start.elapsed() >= w) {
                self.policy.set_draining(None);
                return Err(Error::Policy(format!(
                    "mode change given up after {} s: {}",
                    start.elapsed().as_secs(),
                    self.describe_writers()
                )));
            }
            if told.elapsed() >= Duration::from_secs(10) {
                tracing::info!(writers = %self.describe_writers(), "mode change still waiting");
                told = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Files open for writing, by inode, with who holds them: handles,
    /// and shared mappings whose descriptor is closed (probed now, see
    /// `mapped`).
    fn writers(&self) -> Vec<(u64, Vec<String>)> {
        self.settle_all_mappings();
        let mut by_ino: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for h in self.files.handles.lock().values() {
            if h.writable {
                by_ino.entry(h.ino).or_default().push(h.opener.clone());
            }
        }
        for (ino, by) in self.mappings.writers() {
            by_ino.entry(ino).or_default().push(by);
        }
        by_ino.into_iter().collect()
    }

    /// "2 files are open for writing: /a (pid 12 (uid 0)), ...".
    fn describe_writers(&self) -> String {
        let writers = self.writers();
        let _ = self.wait_committed();
        let shown: Vec<String> = writers
            .iter()
            .take(20)
            .map(|(ino, by)| {
                let path = self
                    .meta
                    .path_of(*ino)
                    .ok()
                    .flatten()
                    .map(|p| String::from_utf8_lossy(&p).into_owned())
                    .unwrap_or_else(|| format!("inode {ino} (no name)"));
                format!("{path} ({})", by.join(", "))
            })
            .collect();
        let more = writers.len().saturating_sub(shown.len());
        format!(
            "{} file{} open for writing: {}{}",
            writers.len(),
            if writers.len() == 1 { " is" } else { "s are" },
            shown.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        )
    }

    /// Serve the mode changes other processes asked for (`artfs mode`
    /// while this daemon serves the store leaves a pending `mode_change`
    /// row with `"request": true`): each on its own thread, since one may
    /// wait for writers; the row is settled with the outcome, which the
    /// asking process reads.
    pub(crate) fn serve_mode_requests(self: &Arc<Self>) -> Result<()> {
        if self.refuse_as_follower().is_err() {
            return Ok(()); // the store's writer serves them
        }
        for rec in self.meta.pending_of(journal::Op::ModeChange)? {
            if rec.data.get("request").and_then(|v| v.as_bool()) != Some(true)
                || !self.policy.requests.lock().insert(rec.id)
            {
                continue;
            }
            let fs = self.clone();
            std::thread::Builder::new()
                .name("artfs-mode".into())
                .spawn(move || fs.serve_mode_request(&rec))
                .map_err(Error::from)?;
        }
        Ok(())
    }

    fn serve_mode_request(&self, rec: &journal::Record) {
        let d = &rec.data;
        let flag = |k: &str| d.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
        let wait = d
            .get("wait_secs")
            .and_then(|v| v.as_f64())
            .filter(|w| w.is_finite() && *w > 0.0)
            .map(Duration::from_secs_f64);
        let by = rec.user_id.clone().unwrap_or_else(|| "artfs mode".into());
        let r = d
            .get("to")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::Policy("the request names no mode".into()))
            .and_then(|t| t.parse::<Mode>().map_err(Error::Policy))
            .and_then(|to| {
                self.change_mode(to, flag("confirm"), flag("force"), wait, &by)
                    .map(|from| format!("{from} -> {to}"))
            });
        let u = match &r {
            Ok(done) => journal::Update::new(rec.id, journal::Status::Committed, done.clone()),
            Err(e) => {
                let mut u = journal::Update::new(rec.id, journal::Status::Failed, None);
                u.error = Some(e.to_string());
                u
            }
        };
        if let Err(e) = self.mutate(|tx| {
            tx.settle(u);
            Ok(())
        }) {
            tracing::warn!(error = %e, "could not answer a mode change request");
        }
        let _ = self.wait_committed();
        self.policy.requests.lock().remove(&rec.id);
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
