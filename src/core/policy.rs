//! Storage policy: the store's mode, a state machine, and what each mode
//! allows. Both doors ask here (through the core's operations), so each
//! rule is written once.
//!
//! | mode | allows |
//! |---|---|
//! | `edit` | everything |
//! | `rw` | create, write, change metadata; no unlink, rmdir, rename over an existing file, or truncate that shrinks |
//! | `ro` | reading only (EROFS for any change) |
//! | `ar` | as `ro`, and file content is not served (EACCES on open for reading) |
//!
//! Transitions: rw → ro → ar; ro → rw and ro → ar (which is forever)
//! only with confirmation; edit has none in or out: it is fixed for the
//! store's life (a store meant to be frozen later is created `--mode rw`).

use std::fmt;
use std::str::FromStr;

use crate::types::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Edit,
    Rw,
    Ro,
    Ar,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Edit => "edit",
            Mode::Rw => "rw",
            Mode::Ro => "ro",
            Mode::Ar => "ar",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> Mode {
        match v {
            0 => Mode::Edit,
            1 => Mode::Rw,
            2 => Mode::Ro,
            _ => Mode::Ar,
        }
    }

    /// Modes reachable from this one (`confirm` unlocks ro → rw and the
    /// irreversible ro → ar).
    pub fn next(self, confirm: bool) -> Vec<Mode> {
        match self {
            Mode::Edit | Mode::Ar => vec![],
            Mode::Rw => vec![Mode::Ro],
            Mode::Ro if confirm => vec![Mode::Ar, Mode::Rw],
            Mode::Ro => vec![],
        }
    }

    /// Check a transition; the error names the allowed moves.
    pub fn check_transition(self, to: Mode, confirm: bool) -> std::result::Result<(), String> {
        if self.next(confirm).contains(&to) {
            return Ok(());
        }
        if self == Mode::Ro && to == Mode::Rw {
            return Err(
                "ro -> rw needs explicit confirmation (--confirm; \"confirm\": true through the API)"
                    .into(),
            );
        }
        if self == Mode::Ro && to == Mode::Ar {
            return Err("ro -> ar is irreversible (content is never served again): \
                 needs explicit confirmation (--confirm; \"confirm\": true through the API)"
                .into());
        }
        let allowed: Vec<&str> = self.next(true).iter().map(|m| m.as_str()).collect();
        Err(if self == Mode::Edit {
            "mode edit is fixed for the store's life (no transitions in or out); \
             a store meant to be frozen later is created with --mode rw"
                .to_string()
        } else if allowed.is_empty() {
            format!("mode {self} has no transitions (it is final)")
        } else {
            format!(
                "cannot go from {self} to {to}; allowed: {}",
                allowed.join(", ")
            )
        })
    }

    /// Whether files may be written (edit, rw). A change from a mode that
    /// does to one that does not is made by the daemon serving the store,
    /// which knows its writers (`Fs::change_mode`).
    pub fn writable(self) -> bool {
        matches!(self, Mode::Edit | Mode::Rw)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Mode, String> {
        match s {
            "edit" => Ok(Mode::Edit),
            "rw" => Ok(Mode::Rw),
            "ro" => Ok(Mode::Ro),
            "ar" => Ok(Mode::Ar),
            _ => Err(format!("unknown mode {s:?}: use edit, rw, ro or ar")),
        }
    }
}

/// What an operation does, as far as the mode cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// New names: create, mkdir, mknod, symlink, link.
    Create,
    /// File content grows or is overwritten (write, fallocate, extend).
    Write,
    /// Content is cut (truncate to a smaller size, O_TRUNC).
    Shrink,
    /// Attributes and extended attributes.
    Metadata,
    /// Names go away: unlink, rmdir.
    Remove,
    /// A rename onto a free name.
    Rename,
    /// A rename that replaces an existing file.
    RenameOver,
    /// Reading file content.
    Read,
}

/// Whether `mode` allows `change` (the errno a refusal gives).
pub fn check(mode: Mode, change: Change) -> Result<()> {
    use Change::*;
    match (mode, change) {
        (Mode::Edit, _) => Ok(()),
        (Mode::Rw, Remove | RenameOver | Shrink) => Err(Error::posix(
            libc::EPERM,
            "not allowed in rw mode (no deletion, replacement or shrinking)",
        )),
        (Mode::Rw, _) => Ok(()),
        (Mode::Ar, Read) => Err(Error::posix(
            libc::EACCES,
            "archived (ar mode): content is not served",
        )),
        (Mode::Ro, Read) => Ok(()),
        (Mode::Ro | Mode::Ar, _) => Err(Error::posix(libc::EROFS, "store is read-only")),
    }
}

/// Change the mode of the store behind `meta` (a running daemon picks it
/// up within a second). Logged as a `mode_change` row recording who and
/// when. Returns the previous mode.
pub fn change_mode(
    meta: &dyn crate::meta::MetaStore,
    backing: &std::path::Path,
    to: Mode,
    confirm: bool,
    by: &str,
) -> Result<Mode> {
    let mut cfg = meta
        .config()?
        .ok_or_else(|| Error::Meta("the store has no policy row yet (never mounted)".into()))?;
    let from: Mode = cfg.mode.parse().map_err(Error::Meta)?;
    if from == to {
        return Ok(from);
    }
    from.check_transition(to, confirm)
        .map_err(|m| Error::Policy(format!("mode change refused: {m}")))?;
    let now = crate::types::Timestamp::now();
    cfg.mode = to.as_str().to_string();
    cfg.mode_changed_at = now.to_rfc3339();
    cfg.mode_changed_by = by.to_string();
    let mut rec = crate::types::journal::Record::new(
        crate::types::journal::Op::ModeChange,
        crate::types::journal::Status::Committed,
        None,
        serde_json::json!({ "from": from.as_str(), "to": to.as_str(), "confirm": confirm }),
    );
    rec.user_id = Some(by.to_string());
    rec.completed_at = Some(now);
    let batch = crate::meta::Batch {
        config: Some(cfg.clone()),
        journal: vec![rec],
        ..Default::default()
    };
    meta.apply(&batch)?;
    meta.sync()?;
    save_policy_file(backing, &cfg);
    Ok(from)
}

/// The store's policy as this process follows it: its mode and capacity
/// (refreshed from the tables when `artfs mode` changes them) and the last
/// free-space level seen. Atomics: every request reads them, unlocked.
pub(crate) struct Live {
    mode: std::sync::atomic::AtomicU8,
    /// The mode a change under way goes to (`u8::MAX`: none): it already
    /// rules every change but the writes of handles open before it.
    draining: std::sync::atomic::AtomicU8,
    /// One mode change at a time.
    pub(crate) changing: parking_lot::Mutex<()>,
    /// Requests of other processes (`artfs mode`) being served.
    pub(crate) requests: parking_lot::Mutex<std::collections::HashSet<uuid::Uuid>>,
    /// Bytes of regular files; `u64::MAX`: no capacity.
    capacity: std::sync::atomic::AtomicU64,
    /// `Level` as u8.
    level: std::sync::atomic::AtomicU8,
}

impl Live {
    pub(crate) fn new(mode: Mode) -> Live {
        Live {
            mode: mode.to_u8().into(),
            draining: u8::MAX.into(),
            changing: Default::default(),
            requests: Default::default(),
            capacity: u64::MAX.into(),
            level: (Level::Ok as u8).into(),
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        Mode::from_u8(self.mode.load(std::sync::atomic::Ordering::Acquire))
    }

    /// The mode a change under way goes to.
    pub(crate) fn draining(&self) -> Option<Mode> {
        match self.draining.load(std::sync::atomic::Ordering::Acquire) {
            u8::MAX => None,
            m => Some(Mode::from_u8(m)),
        }
    }

    pub(crate) fn set_draining(&self, to: Option<Mode>) {
        self.draining.store(
            to.map_or(u8::MAX, Mode::to_u8),
            std::sync::atomic::Ordering::Release,
        );
    }

    /// Follow a new mode; returns the one before.
    pub(crate) fn set_mode(&self, m: Mode) -> Mode {
        Mode::from_u8(
            self.mode
                .swap(m.to_u8(), std::sync::atomic::Ordering::AcqRel),
        )
    }

    pub(crate) fn capacity(&self) -> Option<u64> {
        match self.capacity.load(std::sync::atomic::Ordering::Acquire) {
            u64::MAX => None,
            c => Some(c),
        }
    }

    pub(crate) fn set_capacity(&self, cap: Option<u64>) {
        self.capacity.store(
            cap.unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Release,
        );
    }

    /// Record the level usage is at now; whether it differs from the last.
    pub(crate) fn crossed(&self, level: Level) -> bool {
        self.level
            .swap(level as u8, std::sync::atomic::Ordering::AcqRel)
            != level as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_state_machine() {
        use Mode::*;
        assert!(Rw.check_transition(Ro, false).is_ok());
        assert!(Ro
            .check_transition(Ar, false)
            .unwrap_err()
            .contains("irreversible"));
        assert!(Ro.check_transition(Ar, true).is_ok());
        assert!(Ro
            .check_transition(Rw, false)
            .unwrap_err()
            .contains("confirm"));
        assert!(Ro.check_transition(Rw, true).is_ok());
        let e = Edit.check_transition(Rw, true).unwrap_err();
        assert!(e.contains("fixed for the store's life"), "{e}");
        assert!(e.contains("--mode rw"), "{e}");
        assert!(Ar.check_transition(Ro, true).is_err());
        assert!(Rw
            .check_transition(Ar, true)
            .unwrap_err()
            .contains("allowed: ro"));
        assert!(Rw.check_transition(Edit, true).is_err());
    }

    #[test]
    fn every_mode_and_change() {
        use Change::*;
        for c in [
            Create, Write, Shrink, Metadata, Remove, Rename, RenameOver, Read,
        ] {
            assert!(check(Mode::Edit, c).is_ok());
        }
        for (c, ok) in [
            (Create, true),
            (Write, true),
            (Metadata, true),
            (Rename, true),
            (Read, true),
            (Shrink, false),
            (Remove, false),
            (RenameOver, false),
        ] {
            assert_eq!(check(Mode::Rw, c).is_ok(), ok, "rw {c:?}");
        }
        assert_eq!(check(Mode::Ro, Create).unwrap_err().errno(), libc::EROFS);
        assert!(check(Mode::Ro, Read).is_ok());
        assert_eq!(check(Mode::Ar, Read).unwrap_err().errno(), libc::EACCES);
        assert_eq!(check(Mode::Ar, Metadata).unwrap_err().errno(), libc::EROFS);
    }
}

/// How full the store is, by its free space (the original's levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
    Critical,
    Full,
}

/// Free-space levels: a level applies when free space is below its
/// percentage of the capacity or below its absolute floor.
#[derive(Clone, Debug)]
pub struct Thresholds {
    pub warning_pct: f64,
    pub critical_pct: f64,
    pub full_pct: f64,
    pub warning_bytes: u64,
    pub critical_bytes: u64,
    pub full_bytes: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            warning_pct: 20.0,
            critical_pct: 10.0,
            full_pct: 2.0,
            warning_bytes: 0,
            critical_bytes: 0,
            full_bytes: 0,
        }
    }
}

impl Thresholds {
    pub fn level(&self, capacity: u64, used: u64) -> Level {
        let free = capacity.saturating_sub(used);
        let pct = if capacity == 0 {
            0.0
        } else {
            free as f64 * 100.0 / capacity as f64
        };
        if free == 0 || pct < self.full_pct || free < self.full_bytes {
            Level::Full
        } else if pct < self.critical_pct || free < self.critical_bytes {
            Level::Critical
        } else if pct < self.warning_pct || free < self.warning_bytes {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// Capacity and usage, as `/api/v1/capacity` reports them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CapacityReport {
    pub mode: String,
    pub capacity: Option<u64>,
    pub used_bytes: u64,
    pub free_bytes: Option<u64>,
    pub file_count: u64,
    pub level: Level,
}

impl super::Fs {
    pub fn capacity_report(&self) -> CapacityReport {
        let (used, files) = self.usage();
        let cap = self.capacity();
        CapacityReport {
            mode: self.mode().as_str().to_string(),
            capacity: cap,
            used_bytes: used,
            free_bytes: cap.map(|c| c.saturating_sub(used)),
            file_count: files,
            level: cap.map_or(Level::Ok, |c| Thresholds::default().level(c, used)),
        }
    }
}

/// The policy row is also kept in `BACKING/.artfs/policy.json`, so that a
/// store rebuilt from BACKING alone keeps its mode and capacity.
pub fn save_policy_file(backing: &std::path::Path, cfg: &crate::meta::StoreConfig) {
    let doc = serde_json::json!({
        "mode": cfg.mode,
        "mode_changed_at": cfg.mode_changed_at,
        "mode_changed_by": cfg.mode_changed_by,
        "capacity": cfg.capacity,
    });
    let path = backing.join(".artfs/policy.json");
    if let Err(e) = crate::blob::write_atomic(&path, doc.to_string().as_bytes()) {
        tracing::warn!(error = %e, "could not write {}", path.display());
    }
}

/// The policy saved by [`save_policy_file`], if any.
pub fn load_policy_file(backing: &std::path::Path) -> Option<crate::meta::StoreConfig> {
    let text = std::fs::read(backing.join(".artfs/policy.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let mode = v.get("mode")?.as_str()?;
    mode.parse::<Mode>().ok()?;
    Some(crate::meta::StoreConfig {
        mode: mode.to_string(),
        mode_changed_at: v.get("mode_changed_at")?.as_str()?.to_string(),
        mode_changed_by: v.get("mode_changed_by")?.as_str()?.to_string(),
        capacity: v.get("capacity").and_then(serde_json::Value::as_u64),
        used_bytes: 0,
        file_count: 0,
    })
}
