//! Where the daemon's and the commands' log lines go, and how they look:
//! plain text (colour only on a terminal; no timestamps under journald,
//! which adds its own) or JSON lines for collectors.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields).
    Json,
}

/// Install the global subscriber writing to stderr.
pub fn init(filter: tracing_subscriber::EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match (format, stderr_is_journal()) {
        (LogFormat::Json, _) => builder.json().init(),
        (LogFormat::Text, true) => builder.without_time().init(),
        (LogFormat::Text, false) => builder.init(),
    }
}

/// Whether stderr is systemd's journal stream: `JOURNAL_STREAM` names its
/// device and inode (systemd.exec(5)); a variable merely inherited by a
/// process whose stderr was redirected does not count.
pub fn stderr_is_journal() -> bool {
    let Some(want) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    want.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_needs_the_matching_stream() {
        // The test's stderr is never the journal stream "0:0".
        std::env::set_var("JOURNAL_STREAM", "0:0");
        assert!(!stderr_is_journal());
        std::env::remove_var("JOURNAL_STREAM");
        assert!(!stderr_is_journal());
    }
}
