//! Parsing of the `Authorization: Bearer <token>` header value (RFC 6750
//! section 2.1; the scheme name is case-insensitive per RFC 9110).

use super::error::AuthError;

/// The token of an `Authorization` header value, or why there is none.
/// `None` (no header) is [`AuthError::MissingCredentials`].
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::MissingCredentials)?.trim();
    let (scheme, rest) = value.split_once([' ', '\t']).unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MalformedHeader("expected the Bearer scheme"));
    }
    let token = rest.trim_start_matches([' ', '\t']);
    if token.is_empty() {
        return Err(AuthError::MalformedHeader("empty bearer token"));
    }
    if !is_token68(token) {
        return Err(AuthError::MalformedHeader(
            "bearer token is not a single token68 value",
        ));
    }
    Ok(token)
}

/// `token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_token68(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}
