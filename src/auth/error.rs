//! Errors of authentication, key loading and minting.
//!
//! Request-facing messages are fixed texts: they never quote the token, a
//! part of it or a claim value, so they are safe to return to the caller
//! and to log.

use std::path::PathBuf;

use super::action::Action;

/// Why a request is not authenticated or not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header at all.
    #[error("missing bearer token")]
    MissingCredentials,
    /// An `Authorization` header that is not `Bearer <token>`.
    #[error("malformed Authorization header: {0}")]
    MalformedHeader(&'static str),
    /// A bearer token that does not verify or whose claims are refused.
    #[error("invalid token: {0}")]
    InvalidToken(#[from] InvalidReason),
    /// A valid token whose role and scope do not allow the action.
    #[error("forbidden: the token's role and scope do not allow {0}")]
    Forbidden(Action),
}

/// Why a token is refused. Each reason is a fixed, token-free text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("a refresh token is not an access token")]
    RefreshToken,
    #[error("token type is not an access type (admin_user, service_account, access)")]
    WrongType,
    #[error("missing claim {0}")]
    MissingClaim(&'static str),
    #[error("malformed claim {0}")]
    MalformedClaim(&'static str),
    #[error("unknown key id")]
    UnknownKid,
    #[error("token has no key id and several keys are configured")]
    MissingKid,
    #[error("token algorithm does not match the key")]
    AlgMismatch,
    #[error("unsupported critical header")]
    CriticalHeader,
}

impl AuthError {
    /// HTTP status: 403 for [`AuthError::Forbidden`], 401 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Forbidden(_) => 403,
            _ => 401,
        }
    }

    /// Stable error code for a JSON error body.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "unauthorized",
            AuthError::MalformedHeader(_) => "invalid_request",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::Forbidden(_) => "forbidden",
        }
    }

    /// Value of the `WWW-Authenticate` header (RFC 6750 section 3): no error
    /// code when credentials are missing, `invalid_request`,
    /// `invalid_token` or `insufficient_scope` otherwise.
    pub fn www_authenticate(&self) -> String {
        // The descriptions are fixed texts without quotes or backslashes,
        // so they need no escaping inside the quoted string.
        match self {
            AuthError::MissingCredentials => "Bearer".to_string(),
            AuthError::MalformedHeader(why) => {
                format!("Bearer error=\"invalid_request\", error_description=\"{why}\"")
            }
            AuthError::InvalidToken(why) => {
                format!("Bearer error=\"invalid_token\", error_description=\"{why}\"")
            }
            AuthError::Forbidden(action) => format!(
                "Bearer error=\"insufficient_scope\", error_description=\"{action} not allowed\""
            ),
        }
    }
}

/// A key file that cannot be used. Carries the path and a reason about the
/// file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("private key: {0}")]
    Key(String),
    #[error("{0}")]
    Request(&'static str),
    #[error("signing failed: {0}")]
    Sign(String),
}
