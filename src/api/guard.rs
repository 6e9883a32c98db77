//! Bearer-token authentication of every `/api/v1` request. The verified
//! [`Principal`](crate::auth::Principal) goes into the request's extensions;
//! handlers then check the action they perform (`Principal::require`).
//! Tokens are never logged: only the fixed reason of a refusal is. Two or
//! more `Authorization` headers are 400, never "the first one wins".

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::AppState;
use crate::auth::AuthError;

pub async fn require_token(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    match principal(&st, &req) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// For the routes the original element served without a token (`/`,
/// `/api/v1/info`, `/api/v1/capacity`): a request without an
/// `Authorization` header goes on anonymous (no `Principal`); one with a
/// header is checked exactly as [`require_token`] checks it, so a bad token
/// is refused rather than quietly treated as none.
pub async fn optional_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.headers().get(AUTHORIZATION).is_none() {
        return next.run(req).await;
    }
    require_token(State(st), req, next).await
}

/// The principal the request's bearer token speaks for, or the refusal.
fn principal(st: &AppState, req: &Request) -> Result<crate::auth::Principal, ApiError> {
    if req.headers().get_all(AUTHORIZATION).iter().nth(1).is_some() {
        // Which one would count is ambiguous (a proxy may have added
        // one): refuse rather than pick (RFC 6750 invalid_request, 400).
        let mut e = ApiError::from(AuthError::MalformedHeader(
            "more than one Authorization header",
        ));
        e.status = axum::http::StatusCode::BAD_REQUEST;
        tracing::debug!("request refused: more than one Authorization header");
        return Err(e);
    }
    let result = match req.headers().get(AUTHORIZATION).map(|v| v.to_str()) {
        None => st.verifier.authenticate(None),
        Some(Err(_)) => Err(AuthError::MalformedHeader(
            "the Authorization header is not ASCII",
        )),
        Some(Ok(v)) => st.verifier.authenticate(Some(v)),
    };
    result.map_err(|e| {
        tracing::debug!(reason = %e, "request refused");
        ApiError::from(e)
    })
}
