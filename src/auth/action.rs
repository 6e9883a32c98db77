//! What a caller asks to do: the verbs roles and scopes grant.

use std::fmt;

/// What a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read content, listings and metadata.
    Read,
    /// Create and modify files, directories and metadata.
    Write,
    /// Delete files and directories.
    Delete,
    /// Read the results of maintenance jobs (consistency reports): what
    /// the original's `auditor` accounts were for.
    Audit,
    /// Administrative actions: mode change, starting maintenance.
    Admin,
}

impl Action {
    pub const ALL: [Action; 5] = [
        Action::Read,
        Action::Write,
        Action::Delete,
        Action::Audit,
        Action::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Audit => "audit",
            Action::Admin => "admin",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
