//! Crash points for the crash-consistency tests (issue 3).
//!
//! `crash_point!("name")` marks a step of a mutation's protocol. In builds
//! where the `fail` crate's `failpoints` feature is on (test builds: it is
//! enabled through the dev-dependency), a point configured with the action
//! `return` aborts the process right there, as a power cut would stop it.
//! Elsewhere the macro compiles to nothing.
//!
//! Points are armed from the `FAILPOINTS` environment variable at start, or
//! at run time: the daemon reads `BACKING/.artfs/failpoints` (lines of
//! `name=actions`) on SIGUSR1 and renames it to `failpoints.armed`.

use std::path::Path;

/// Mark a crash point (see the module docs).
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::failpoints::crash($name))
    };
}

/// Abort the process at a crash point, without unwinding or cleanup.
pub fn crash(name: &str) -> ! {
    eprintln!("artfs: crash point {name} reached, aborting");
    std::process::abort()
}

/// Arm the points listed in `file`; returns how many were armed.
pub fn arm_from_file(file: &Path) -> std::io::Result<usize> {
    let text = std::fs::read_to_string(file)?;
    if !fail::has_failpoints() {
        tracing::warn!("crash points requested, but this build has none");
    }
    let mut n = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((name, actions)) = line.split_once('=') else {
            tracing::warn!(line, "ignoring malformed crash point line");
            continue;
        };
        match fail::cfg(name.trim(), actions.trim()) {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(name, error = %e, "could not arm crash point"),
        }
    }
    let mut armed = file.as_os_str().to_owned();
    armed.push(".armed");
    std::fs::rename(file, armed)?;
    tracing::info!(points = n, "crash points armed");
    Ok(n)
}
