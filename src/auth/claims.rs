//! The claims of a token whose signature has verified: which are required,
//! how its times are checked, and the [`Principal`] they make.

use serde_json::{Map, Value};

use super::error::InvalidReason;
use super::principal::{Principal, Role, Scope, TokenType};

/// What the claims are checked against.
pub(crate) struct Checks<'a> {
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
    /// Tolerated clock skew, seconds.
    pub leeway: i64,
    /// Current UTC time, seconds since the epoch.
    pub now: i64,
}

pub(crate) fn principal(
    claims: &Map<String, Value>,
    checks: &Checks<'_>,
) -> Result<Principal, InvalidReason> {
    use InvalidReason::*;
    // Presence first: a token lacking a required claim says so, whatever
    // else is wrong with it.
    let sub = required(claims, "sub")?;
    let exp = required(claims, "exp")?;
    let iat = required(claims, "iat")?;
    let token_type = required(claims, "type")?;

    let sub = sub
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or(MalformedClaim("sub"))?;
    let exp = numeric_date(exp, "exp")?;
    let iat = numeric_date(iat, "iat")?;
    let nbf = optional(claims, "nbf")
        .map(|v| numeric_date(v, "nbf"))
        .transpose()?;
    let token_type = token_type.as_str().ok_or(MalformedClaim("type"))?;

    let (now, leeway) = (checks.now, checks.leeway);
    if now >= exp.saturating_add(leeway) {
        return Err(Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(NotYetValid);
    }
    if iat > now.saturating_add(leeway) {
        return Err(IssuedInFuture);
    }

    if let Some(want) = checks.issuer {
        if optional(claims, "iss").and_then(Value::as_str) != Some(want) {
            return Err(WrongIssuer);
        }
    }
    if let Some(want) = checks.audience {
        // `aud` is a string or an array of strings (RFC 7519 section 4.1.3).
        let ok = match optional(claims, "aud") {
            Some(Value::String(aud)) => aud == want,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(want)),
            _ => false,
        };
        if !ok {
            return Err(WrongAudience);
        }
    }

    let token_type = match TokenType::from_claim(token_type) {
        Some(t) => t,
        None if token_type == "refresh" => return Err(RefreshToken),
        None => return Err(WrongType),
    };

    let role = match optional(claims, "role") {
        None => None,
        Some(Value::String(role)) => Role::from_claim(role),
        Some(_) => return Err(MalformedClaim("role")),
    };
    let scopes = match optional(claims, "scope") {
        None => None,
        Some(Value::String(s)) => Some(known_scopes(s.split_whitespace().map(Some))),
        Some(Value::Array(items)) => {
            if items.iter().any(|v| !v.is_string()) {
                return Err(MalformedClaim("scope"));
            }
            Some(known_scopes(items.iter().map(Value::as_str)))
        }
        Some(_) => return Err(MalformedClaim("scope")),
    };

    Ok(Principal {
        sub: sub.to_string(),
        name: optional_string(claims, "name")?,
        role,
        scopes,
        token_type,
        jti: optional_string(claims, "jti")?,
        expires_at: exp,
    })
}

/// A claim's value; JSON `null` counts as absent.
fn optional<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).filter(|v| !v.is_null())
}

fn required<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a Value, InvalidReason> {
    optional(claims, name).ok_or(InvalidReason::MissingClaim(name))
}

fn optional_string(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, InvalidReason> {
    match optional(claims, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(InvalidReason::MalformedClaim(name)),
    }
}

/// A NumericDate: UTC seconds since the epoch, possibly fractional
/// (RFC 7519 section 2); fractions are dropped.
fn numeric_date(v: &Value, name: &'static str) -> Result<i64, InvalidReason> {
    let n = v.as_number().ok_or(InvalidReason::MalformedClaim(name))?;
    if let Some(i) = n.as_i64() {
        return Ok(i);
    }
    match n.as_f64() {
        // `as` saturates, so absurd values stay absurd rather than wrap.
        Some(f) if f.is_finite() => Ok(f.floor() as i64),
        _ => Err(InvalidReason::MalformedClaim(name)),
    }
}

/// The scopes we know, in order, without repeats; unknown names grant
/// nothing, so they are dropped.
fn known_scopes<'a>(names: impl Iterator<Item = Option<&'a str>>) -> Vec<Scope> {
    let mut scopes = Vec::new();
    for scope in names.flatten().filter_map(Scope::from_claim) {
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes
}
