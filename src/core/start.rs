//! Starting a store's writer: what a mount does once the store is open,
//! and what a standby does when it takes over (`replica`): settle what a
//! crash left pending, keep space back for the database, start the
//! writer's threads.

use std::path::Path;
use std::sync::Arc;

use super::options::Role;
use super::workers;
use super::Fs;
use crate::blob::ContentStore;
use crate::meta::MetaStore;
use crate::types::error::{Error, Result};
use crate::types::ROOT_INO;

/// Before anything is served: settle what a crash left pending, and give
/// a new store's root its sidecar. Returns how many log rows it settled.
/// Pending `sidecars` rows are deferred housekeeping (the tables hold
/// everything; only attr.json copies lag), not an interrupted operation:
/// a clean stop leaves those it had no time for, and the sidecar thread
/// writes them once serving starts ([`queue_deferred_sidecars`]).
pub(super) fn recover(meta: &dyn MetaStore, objects: &dyn ContentStore) -> Result<u64> {
    objects.serve_as_writer()?;
    let settled = crate::core::recover::recover_with(meta, objects, true)?;
    if !settled.is_empty() {
        tracing::warn!(
            rows = settled.len(),
            "recovered operations interrupted by a crash (see the log table for each)"
        );
    }
    if matches!(
        objects.read_sidecar(ROOT_INO),
        Ok(None) | Err(crate::blob::sidecar::SidecarError::Io(_))
    ) {
        // A new store's root: every other inode gets its sidecar when a
        // batch first changes it.
        crate::core::render::rewrite(meta, objects, &[ROOT_INO])?;
    }
    objects.recovered();
    Ok(settled.len() as u64)
}

/// Hand the sidecar thread the `sidecars` rows a stop left pending: it
/// writes them in the background, as any other.
pub(super) fn queue_deferred_sidecars(fs: &Fs) -> Result<()> {
    let rows = fs.meta.pending_of(crate::types::journal::Op::Sidecars)?;
    if rows.is_empty() {
        return Ok(());
    }
    tracing::info!(
        rows = rows.len(),
        "sidecar rewrites deferred by the last stop are written in the background"
    );
    for r in rows {
        let inos = r.data.get("inos").and_then(serde_json::Value::as_array);
        let inos = inos.into_iter().flatten();
        fs.sidecars
            .push(r.id, inos.filter_map(serde_json::Value::as_u64).collect());
    }
    Ok(())
}

/// Keep space back for the database (see `blob::ballast`); a full
/// BACKING only warns.
pub(super) fn reserve_ballast(state_dir: &Path) -> Result<crate::blob::ballast::Ballast> {
    let ballast = crate::blob::ballast::Ballast::new(state_dir)?;
    match ballast.ensure() {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            bytes = ballast.size(),
            "BACKING is nearly full: no space reserved for the database"
        ),
        Err(e) => tracing::warn!(error = %e, "could not reserve space for the database"),
    }
    Ok(ballast)
}

/// Start the store's threads (see [`super::workers`] for who stops them
/// and when).
pub(super) fn start_workers(fs: &Arc<Fs>) -> Result<()> {
    let w = &fs.workers;
    let (weak, every, stop) = (Arc::downgrade(fs), fs.collector.interval, w.periodic());
    w.spawn(workers::COLLECTOR, move || {
        super::collector::run(weak, every, &stop)
    })?;
    if fs.role() == Role::Writer {
        // A standby taking over already follows the policy row.
        let (weak, stop) = (Arc::downgrade(fs), w.periodic());
        w.spawn(workers::POLICY, move || follow_policy(weak, &stop))?;
    }
    let (sc, weak) = (fs.sidecars.clone(), Arc::downgrade(fs));
    w.spawn(workers::SIDECARS, move || {
        super::sidecar_sync::run(sc, weak)
    })?;
    if fs.role() == Role::Writer {
        queue_deferred_sidecars(fs)?;
    }
    let _ = fs
        .hasher
        .set(super::checksum::Hasher::start(Arc::downgrade(fs), w)?);
    let strong = fs.clone();
    w.spawn(workers::WRITER, move || super::writer::run_guarded(strong))?;
    if fs.meta.leased() {
        let (weak, stop) = (Arc::downgrade(fs), w.lease());
        w.spawn(workers::LEASE, move || keep_lease(weak, &stop))?;
    }
    super::objpool::ObjectPool::start(Arc::downgrade(fs), w)?;
    Ok(())
}

/// Renew the writer's lease every beat; once it is lost, stop the writer
/// (changes are refused with EROFS; what was acknowledged is committed).
fn keep_lease(fs: std::sync::Weak<Fs>, stop: &workers::Stop) {
    while stop.sleep(crate::meta::lease::BEAT) {
        let Some(fs) = fs.upgrade() else { return };
        match fs.meta.heartbeat() {
            Ok(()) => {}
            Err(e @ Error::Fenced(_)) => {
                fs.writer.fence(e);
                return;
            }
            // The database is away: batches retry, and the check inside
            // each one keeps a lease lost meanwhile from being used.
            Err(e) => tracing::warn!(error = %e, "could not renew the store's lease"),
        }
    }
}

/// Mode changes by other processes take effect within a second.
/// Policy rounds (0.5 s each) between two [`trim_heap`] calls.
const TRIM_EVERY_ROUNDS: u32 = 20;

/// Hand glibc's free heap pages back to the kernel. glibc keeps what a
/// burst freed as resident memory until the top of a heap is free, which
/// it rarely is: after a million creates that was tens of MiB the daemon
/// no longer used (issue 19). The daemon's own allocations go to jemalloc
/// (which returns pages on its own, after a decay); glibc's heap serves C
/// code (SQLite) and programs built on this library with the system
/// allocator. A pass over the free lists takes about a millisecond.
fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub(super) fn follow_policy(fs: std::sync::Weak<Fs>, stop: &workers::Stop) {
    let mut rounds = 0u32;
    while stop.sleep(std::time::Duration::from_millis(500)) {
        rounds = rounds.wrapping_add(1);
        if rounds.is_multiple_of(TRIM_EVERY_ROUNDS) {
            trim_heap();
        }
        let Some(fs) = fs.upgrade() else { return };
        if let Err(e) = fs.refresh_policy() {
            tracing::debug!(error = %e, "could not read the policy row");
        }
        if let Err(e) = fs.serve_mode_requests() {
            tracing::debug!(error = %e, "could not read the mode change requests");
        }
        if fs.role() == Role::Writer {
            // Content versions a remote store sent in the background.
            fs.record_reported_versions();
            // What shared mappings wrote after their file's last close.
            fs.settle_mappings();
        }
    }
}
