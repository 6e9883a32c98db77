//! Verified tokens, remembered so each distinct token pays for its
//! signature check once (an RS256 or ES256 verification costs far more
//! than the request it guards).
//!
//! The rules (docs/AUTH.md, "Token cache"):
//! - keyed by the SHA-256 of the token string (the token itself is never
//!   kept), holding the [`Principal`] its first verification made;
//! - only successful verifications go in: a refused token (bad signature,
//!   expired, wrong issuer, ...) is verified anew every time;
//! - an entry serves while `now < exp`, without the leeway: the stricter
//!   reading. From `exp` on, the token goes through the full verification
//!   again, which applies the leeway exactly as it would uncached, so the
//!   cache changes what a request costs, never its answer;
//! - every key reload (SIGHUP or a changed key file) empties it, and a
//!   verification that raced with the reload (made with the old keys) is
//!   not inserted: a generation number tells;
//! - at most [`MAX_ENTRIES`]; when full, expired entries are dropped, and
//!   if that frees less than a quarter, all of them (re-verifying is the
//!   only cost).

use std::collections::HashMap;

use parking_lot::RwLock;
use sha2::{Digest, Sha256};

use super::principal::Principal;

/// Bound on remembered tokens (a few hundred bytes each).
pub const MAX_ENTRIES: usize = 10_000;

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn token_hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Default)]
pub(crate) struct TokenCache {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bumped by every clear; an insert made under an older one is dropped.
    generation: u64,
    map: HashMap<TokenHash, Principal>,
}

impl TokenCache {
    /// The principal of a token verified before, while `now < exp`.
    pub fn get(&self, hash: &TokenHash, now: i64) -> Option<Principal> {
        let inner = self.inner.read();
        inner.map.get(hash).filter(|p| now < p.expires_at).cloned()
    }

    /// The generation to pass to [`TokenCache::insert`]; read it before
    /// loading the keys that verify the token.
    pub fn generation(&self) -> u64 {
        self.inner.read().generation
    }

    /// Remember a verified token, unless the cache was cleared since
    /// `generation` was read (the keys it was verified with may be gone)
    /// or it is already expired.
    pub fn insert(&self, hash: TokenHash, principal: &Principal, generation: u64, now: i64) {
        if now >= principal.expires_at {
            return;
        }
        let mut inner = self.inner.write();
        if inner.generation != generation {
            return;
        }
        if inner.map.len() >= MAX_ENTRIES && !inner.map.contains_key(&hash) {
            inner.map.retain(|_, p| now < p.expires_at);
            if inner.map.len() > MAX_ENTRIES * 3 / 4 {
                inner.map.clear();
            }
        }
        inner.map.insert(hash, principal.clone());
    }

    /// Forget everything (after a key reload).
    pub fn clear(&self) {
        let mut inner = self.inner.write();
        inner.generation += 1;
        inner.map = HashMap::new();
    }

    pub fn len(&self) -> usize {
        self.inner.read().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::TokenType;

    fn principal(sub: &str, exp: i64) -> Principal {
        Principal {
            sub: sub.into(),
            name: None,
            role: None,
            scopes: None,
            token_type: TokenType::ServiceAccount,
            jti: None,
            expires_at: exp,
        }
    }

    #[test]
    fn serves_until_exp_and_never_past_it() {
        let c = TokenCache::default();
        let h = token_hash("t");
        c.insert(h, &principal("a", 100), c.generation(), 50);
        assert_eq!(c.get(&h, 99).unwrap().sub, "a");
        assert!(c.get(&h, 100).is_none());
        // Already expired: not remembered at all.
        let h2 = token_hash("t2");
        c.insert(h2, &principal("b", 100), c.generation(), 100);
        assert!(c.get(&h2, 0).is_none());
    }

    #[test]
    fn a_clear_drops_entries_and_racing_inserts() {
        let c = TokenCache::default();
        let h = token_hash("t");
        c.insert(h, &principal("a", 100), c.generation(), 0);
        let before = c.generation();
        c.clear();
        assert!(c.get(&h, 0).is_none());
        // Verified with the keys of before the reload: not inserted.
        c.insert(h, &principal("a", 100), before, 0);
        assert!(c.get(&h, 0).is_none());
        c.insert(h, &principal("a", 100), c.generation(), 0);
        assert!(c.get(&h, 0).is_some());
    }

    #[test]
    fn stays_bounded() {
        let c = TokenCache::default();
        for i in 0..(MAX_ENTRIES * 3) {
            // Half of them expire at 10.
            let exp = if i % 2 == 0 { 10 } else { 1000 };
            c.insert(token_hash(&i.to_string()), &principal("x", exp), 0, 5);
            assert!(c.len() <= MAX_ENTRIES);
        }
        // Later, with all the short ones expired.
        for i in 0..MAX_ENTRIES {
            let h = token_hash(&format!("late{i}"));
            c.insert(h, &principal("y", 1000), 0, 20);
            assert!(c.len() <= MAX_ENTRIES);
            assert!(c.get(&h, 20).is_some());
        }
    }
}
