//! Minting tokens with a private key, for tests and administrators
//! (`artfs token`). The algorithm follows the key, as when verifying.

use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Header;
use serde::Serialize;

use super::error::MintError;
use super::keys::signing_key_from_pem;
use super::now_utc_secs;
use super::principal::{Role, Scope, TokenType};

/// What to put in a token. [`MintRequest::new`] fills in the defaults:
/// `service_account`, 30 minutes, no scope, issuer, audience, name or kid.
#[derive(Clone, Debug)]
pub struct MintRequest {
    /// PEM of the private key: RSA (RS256), EC P-256 (ES256) or Ed25519
    /// (EdDSA), PKCS#8 or traditional.
    pub private_key_pem: Vec<u8>,
    pub sub: String,
    pub role: Role,
    pub token_type: TokenType,
    /// `exp` is `iat` plus this, in whole seconds (at least one).
    pub ttl: Duration,
    /// Written as a space-separated `scope` string when given.
    pub scope: Option<Vec<Scope>>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub name: Option<String>,
    /// `kid` header, to select the key in a JWKS.
    pub kid: Option<String>,
}

impl MintRequest {
    pub fn new(private_key_pem: impl Into<Vec<u8>>, sub: impl Into<String>, role: Role) -> Self {
        MintRequest {
            private_key_pem: private_key_pem.into(),
            sub: sub.into(),
            role,
            token_type: TokenType::ServiceAccount,
            ttl: Duration::from_secs(30 * 60),
            scope: None,
            issuer: None,
            audience: None,
            name: None,
            kid: None,
        }
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    role: &'static str,
    #[serde(rename = "type")]
    token_type: &'static str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
}

/// Sign a token: `iat` and `nbf` now (UTC), `exp` now + ttl, a random
/// (v4) `jti`.
pub fn mint(req: &MintRequest) -> Result<String, MintError> {
    if req.sub.is_empty() {
        return Err(MintError::Request("sub must not be empty"));
    }
    let ttl = i64::try_from(req.ttl.as_secs()).unwrap_or(i64::MAX);
    if ttl < 1 {
        return Err(MintError::Request("ttl must be at least one second"));
    }
    let key = signing_key_from_pem(&req.private_key_pem).map_err(MintError::Key)?;
    let now = now_utc_secs();
    let exp = now
        .checked_add(ttl)
        .ok_or(MintError::Request("ttl too long"))?;
    let claims = Claims {
        sub: &req.sub,
        role: req.role.as_str(),
        token_type: req.token_type.as_str(),
        iat: now,
        nbf: now,
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
        scope: req
            .scope
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")),
        iss: req.issuer.as_deref(),
        aud: req.audience.as_deref(),
        name: req.name.as_deref(),
    };
    let mut header = Header::new(key.alg.jwt());
    header.kid = req.kid.clone();
    jsonwebtoken::encode(&header, &claims, &key.key).map_err(|e| MintError::Sign(e.to_string()))
}

/// A `--ttl` value: a humantime duration (`30m`, `12h`, `7d`) of at least
/// one second.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = humantime::parse_duration(s).map_err(|e| format!("not a duration ({e})"))?;
    if ttl < Duration::from_secs(1) {
        return Err("must be at least 1s".to_string());
    }
    Ok(ttl)
}

/// A `--scope` value: space-separated scope names, at least one, all known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeList(pub Vec<Scope>);

impl FromStr for ScopeList {
    type Err = String;
    fn from_str(s: &str) -> Result<ScopeList, String> {
        let scopes = s
            .split_whitespace()
            .map(Scope::from_str)
            .collect::<Result<Vec<_>, _>>()?;
        if scopes.is_empty() {
            return Err("empty scope list".to_string());
        }
        Ok(ScopeList(scopes))
    }
}
