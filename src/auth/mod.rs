//! Authentication and authorisation of HTTP callers: verifying bearer JWTs
//! against configured public keys, turning their claims into a
//! [`Principal`], deciding what that principal may do, and minting tokens
//! for tests and administrators.
//!
//! Independent of the filesystem: nothing here imports `core`, `fuse` or
//! `meta`; the HTTP door calls [`Verifier::authenticate`] and
//! [`Principal::require`] and maps [`AuthError`] to a response.
//!
//! Rules that fix the original's defects (docs/AUTH.md has the details):
//! the algorithm follows the configured key, never the token header; only
//! access token types pass; an unknown role grants nothing; issuer and
//! audience are checked when configured; keys reload without a restart;
//! every time is UTC seconds since the epoch.

mod action;
mod bearer;
mod cache;
mod claims;
mod error;
mod keys;
mod mint;
mod principal;
mod verifier;

use std::path::PathBuf;
use std::time::Duration;

pub use bearer::bearer_token;
pub use cache::MAX_ENTRIES as TOKEN_CACHE_ENTRIES;
pub use error::{AuthError, InvalidReason, KeyError, MintError};
pub use mint::{mint, parse_ttl, MintRequest, ScopeList};
pub use principal::{Action, Principal, Role, Scope, TokenType};
pub use verifier::Verifier;

/// Clock skew tolerated on `exp`, `nbf` and `iat` unless configured.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Where the verification keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// One public key in PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`): RSA (RS256),
    /// EC P-256 (ES256) or Ed25519 (EdDSA).
    Pem(PathBuf),
    /// A JWKS document (`{"keys": [...]}`); tokens pick a key by `kid`.
    Jwks(PathBuf),
}

impl KeySource {
    pub fn path(&self) -> &std::path::Path {
        match self {
            KeySource::Pem(p) | KeySource::Jwks(p) => p,
        }
    }
}

/// What the verifier checks beyond the signature.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub key: KeySource,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required member of `aud` when set.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

impl AuthConfig {
    /// A configuration checking no issuer or audience, with the default leeway.
    pub fn new(key: KeySource) -> AuthConfig {
        AuthConfig {
            key,
            issuer: None,
            audience: None,
            leeway: DEFAULT_LEEWAY,
        }
    }
}

/// Seconds since the Unix epoch, UTC whatever the local time zone.
pub(crate) fn now_utc_secs() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
}
