//! Who a verified token speaks for and what they may do: roles, scopes,
//! token types and the permission rule (role AND scope).

use std::fmt;
use std::str::FromStr;

use super::error::AuthError;

pub use super::action::Action;

/// The `role` claim. Anything else grants nothing. The names are the
/// original element's and its Admin Module's (docs/AUTH.md, "Roles and
/// scopes"): `super_admin` is read as `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read content and metadata only.
    ReadOnly,
    /// Read, and read maintenance results (consistency reports).
    Auditor,
    /// Read and write.
    User,
    /// Read, write and delete.
    Operator,
    /// Everything, including administrative actions.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "readonly",
            Role::Auditor => "auditor",
            Role::User => "user",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Exact, case-sensitive names: a claim spelled differently is not a
    /// role we know and grants nothing.
    pub fn from_claim(s: &str) -> Option<Role> {
        match s {
            "readonly" => Some(Role::ReadOnly),
            "auditor" => Some(Role::Auditor),
            "user" => Some(Role::User),
            "operator" => Some(Role::Operator),
            "admin" | "super_admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn allows(self, action: Action) -> bool {
        match action {
            Action::Read => true,
            Action::Write => matches!(self, Role::User | Role::Operator | Role::Admin),
            Action::Delete => matches!(self, Role::Operator | Role::Admin),
            Action::Audit => matches!(self, Role::Auditor | Role::Admin),
            Action::Admin => self == Role::Admin,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::from_claim(s)
            .ok_or_else(|| format!(
                "unknown role {s:?} (expected readonly, auditor, user, operator, admin or super_admin)"
            ))
    }
}

/// One entry of the optional `scope` claim. Each action needs its own scope
/// when the claim is present; none implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    FilesRead,
    FilesWrite,
    FilesDelete,
    StorageAdmin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::FilesRead => "files:read",
            Scope::FilesWrite => "files:write",
            Scope::FilesDelete => "files:delete",
            Scope::StorageAdmin => "storage:admin",
        }
    }

    pub fn from_claim(s: &str) -> Option<Scope> {
        match s {
            "files:read" => Some(Scope::FilesRead),
            "files:write" => Some(Scope::FilesWrite),
            "files:delete" => Some(Scope::FilesDelete),
            "storage:admin" => Some(Scope::StorageAdmin),
            _ => None,
        }
    }

    /// The scope an action needs.
    pub fn for_action(action: Action) -> Scope {
        match action {
            Action::Read => Scope::FilesRead,
            Action::Write => Scope::FilesWrite,
            Action::Delete => Scope::FilesDelete,
            // Reading a report is reading.
            Action::Audit => Scope::FilesRead,
            Action::Admin => Scope::StorageAdmin,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Scope::from_claim(s).ok_or_else(|| {
            format!(
                "unknown scope {s:?} (expected files:read, files:write, files:delete or storage:admin)"
            )
        })
    }
}

/// The `type` claim of an access token. Refresh tokens and any other type
/// are refused by the verifier, so they have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    AdminUser,
    ServiceAccount,
    Access,
}

impl TokenType {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::AdminUser => "admin_user",
            TokenType::ServiceAccount => "service_account",
            TokenType::Access => "access",
        }
    }

    pub fn from_claim(s: &str) -> Option<TokenType> {
        match s {
            "admin_user" => Some(TokenType::AdminUser),
            "service_account" => Some(TokenType::ServiceAccount),
            "access" => Some(TokenType::Access),
            _ => None,
        }
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenType {
    type Err = String;
    fn from_str(s: &str) -> Result<TokenType, String> {
        TokenType::from_claim(s).ok_or_else(|| {
            format!("unknown or non-access token type {s:?} (expected service_account, admin_user or access)")
        })
    }
}

/// The caller a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`: who the token was issued to (never empty).
    pub sub: String,
    /// `name`: display name, when given.
    pub name: Option<String>,
    /// `role`; `None` when missing or unknown, which allows nothing.
    pub role: Option<Role>,
    /// `scope`; `None` when absent (the role alone decides). Unknown scope
    /// names are dropped, so they grant nothing.
    pub scopes: Option<Vec<Scope>>,
    pub token_type: TokenType,
    /// `jti`, for logs and revocation lists.
    pub jti: Option<String>,
    /// `exp`, UTC seconds since the epoch.
    pub expires_at: i64,
}

impl Principal {
    /// Who the files this token makes are recorded as made by
    /// (`created_by`, the original's `created_by_username`): its `name`,
    /// as the original recorded the user's name, else its `sub`.
    pub fn creator(&self) -> &str {
        self.name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or(&self.sub)
    }

    /// Whether the role allows `action` and, when the token carries a
    /// scope claim, the scope does too.
    pub fn allows(&self, action: Action) -> bool {
        let by_role = self.role.is_some_and(|r| r.allows(action));
        let by_scope = self
            .scopes
            .as_ref()
            .is_none_or(|s| s.contains(&Scope::for_action(action)));
        by_role && by_scope
    }

    /// [`Principal::allows`] as a result, for `?` in handlers.
    pub fn require(&self, action: Action) -> Result<(), AuthError> {
        if self.allows(action) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(action))
        }
    }
}
