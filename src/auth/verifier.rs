//! The verifier: holds the current keys, checks a token against them and
//! reloads them when asked (SIGHUP) or when the key file changes.
//!
//! Verifications read the key set through an `ArcSwap`, so a reload never
//! blocks them: it builds a whole new set aside and swaps it in, or keeps
//! the old one when the new file is bad.
//!
//! Each distinct token is verified once, then served from a bounded cache
//! until its `exp`; every reload empties the cache (src/auth/cache.rs).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::bearer::bearer_token;
use super::cache::{token_hash, TokenCache};
use super::claims::{self, Checks};
use super::error::{AuthError, InvalidReason, KeyError};
use super::keys::KeySet;
use super::principal::Principal;
use super::{now_utc_secs, AuthConfig};

/// The key file is looked at no more often than this, on verify.
const CHECK_INTERVAL_MS: u64 = 1000;

/// Longer tokens are refused unparsed; real ones are well under 2 KiB.
const MAX_TOKEN_LEN: usize = 16 * 1024;

pub struct Verifier {
    config: AuthConfig,
    keys: ArcSwap<KeySet>,
    /// Identity of the key file as last loaded or tried (a bad file is not
    /// retried until it changes again).
    loaded: Mutex<Option<FileStamp>>,
    /// Serialises reloads; the check on verify only tries it.
    reloading: Mutex<()>,
    started: Instant,
    /// Milliseconds after `started` of the last key file check.
    last_check: AtomicU64,
    /// Tokens verified with the current keys.
    cache: TokenCache,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.config)
            .field("keys", &self.keys.load().describe())
            .finish_non_exhaustive()
    }
}

/// What tells a rewritten or replaced key file from the loaded one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

impl Verifier {
    /// Load the keys; fails when the key file is missing or unusable, so a
    /// server never starts without a verification key.
    pub fn new(config: AuthConfig) -> Result<Verifier, KeyError> {
        let stamp = file_stamp(config.key.path());
        let keys = KeySet::load(&config.key)?;
        tracing::info!(
            "auth keys loaded from {}: {}",
            config.key.path().display(),
            keys.describe()
        );
        Ok(Verifier {
            config,
            keys: ArcSwap::from_pointee(keys),
            loaded: Mutex::new(stamp),
            reloading: Mutex::new(()),
            started: Instant::now(),
            last_check: AtomicU64::new(0),
            cache: TokenCache::default(),
        })
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// How many verified tokens are remembered (at most
    /// [`TOKEN_CACHE_ENTRIES`](super::TOKEN_CACHE_ENTRIES)).
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Re-read the key file. On error the previous keys stay in use (and
    /// the error is logged as well as returned).
    pub fn reload(&self) -> Result<(), KeyError> {
        let _one = self.reloading.lock();
        self.reload_locked()
    }

    fn reload_locked(&self) -> Result<(), KeyError> {
        let path = self.config.key.path();
        // Stat before reading: a change in between makes the next check
        // reload once more; the other order could miss the change.
        let stamp = file_stamp(path);
        let result = KeySet::load(&self.config.key);
        *self.loaded.lock() = stamp;
        match result {
            Ok(keys) => {
                tracing::info!(
                    "auth keys reloaded from {}: {}",
                    path.display(),
                    keys.describe()
                );
                // Keys first, then the clear: a verification that read
                // the generation before the clear may have used the old
                // keys, and its insert is refused (cache.rs).
                self.keys.store(Arc::new(keys));
                self.cache.clear();
                Ok(())
            }
            Err(e) => {
                tracing::error!("auth keys not reloaded, the previous ones stay in use: {e}");
                Err(e)
            }
        }
    }

    /// Reload when the key file changed, at most once per interval, on one
    /// caller's thread; everyone else verifies with the current keys.
    fn check_key_file(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_check.load(Ordering::Relaxed);
        if now.saturating_sub(last) < CHECK_INTERVAL_MS {
            return;
        }
        if self
            .last_check
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let Some(_one) = self.reloading.try_lock() else {
            return;
        };
        if file_stamp(self.config.key.path()) != *self.loaded.lock() {
            // Logged inside; the old keys stay on error.
            let _ = self.reload_locked();
        }
    }

    /// Verify a bearer token and return whom it speaks for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.check_key_file();
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidToken(InvalidReason::Malformed));
        }
        let hash = token_hash(token);
        if let Some(p) = self.cache.get(&hash, now_utc_secs()) {
            return Ok(p);
        }
        // The generation before the keys: see `reload_locked`.
        let generation = self.cache.generation();
        let keys = self.keys.load();
        let principal =
            verify_token(&keys, token, &self.config).map_err(AuthError::InvalidToken)?;
        self.cache
            .insert(hash, &principal, generation, now_utc_secs());
        Ok(principal)
    }

    /// [`bearer_token`] then [`Verifier::verify`]: the whole check of an
    /// `Authorization` header value (`None` when the header is absent).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        self.verify(bearer_token(authorization)?)
    }
}

fn verify_token(
    keys: &KeySet,
    token: &str,
    config: &AuthConfig,
) -> Result<Principal, InvalidReason> {
    use InvalidReason::*;
    if token.len() > MAX_TOKEN_LEN {
        return Err(Malformed);
    }
    // `signed` is `header.payload` exactly as sent: what the signature covers.
    let (signed, signature) = token.rsplit_once('.').ok_or(Malformed)?;
    let (header, payload) = signed.split_once('.').ok_or(Malformed)?;
    if payload.contains('.') {
        return Err(Malformed);
    }
    let header = json_object(header)?;
    // We implement no JWS extension, so any critical one is unsupported
    // (RFC 7515 section 4.1.11).
    if header.contains_key("crit") {
        return Err(CriticalHeader);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(Malformed),
    };
    let alg = header.get("alg").and_then(Value::as_str).ok_or(Malformed)?;
    let key = keys.select(kid)?;
    // The algorithm follows the key: a header naming anything else (`none`
    // and HMAC included) is refused before any cryptography.
    if alg != key.alg.name() {
        return Err(AlgMismatch);
    }
    match jsonwebtoken::crypto::verify(signature, signed.as_bytes(), &key.key, key.alg.jwt()) {
        Ok(true) => {}
        Ok(false) => return Err(BadSignature),
        Err(e) => match e.kind() {
            ErrorKind::Base64(_) => return Err(Malformed),
            other => {
                tracing::warn!("token verification failed unexpectedly: {other:?}");
                return Err(BadSignature);
            }
        },
    }
    // Only now, with the signature good, are the claims looked at.
    let claims = json_object(payload)?;

    let leeway = i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX);
    claims::principal(
        &claims,
        &Checks {
            issuer: config.issuer.as_deref(),
            audience: config.audience.as_deref(),
            leeway,
            now: now_utc_secs(),
        },
    )
}

/// A base64url (unpadded) JSON object, as JWS headers and JWT payloads are.
fn json_object(part: &str) -> Result<Map<String, Value>, InvalidReason> {
    URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or(InvalidReason::Malformed)
}
