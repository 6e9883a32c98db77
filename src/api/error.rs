//! Errors as HTTP responses: `{"error": CODE, "message": TEXT}` with the
//! status the core's errno (or the auth error) implies. A client's mistake
//! is never a 500: only failures of the store itself (I/O, database) are.
//! The original element's routes add FastAPI's `"detail": TEXT`
//! ([`original_shape`]), which its clients read.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::types::error::Error as CoreError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `not_found`, `conflict`.
    pub error: String,
    /// Human-readable explanation (never contains a token).
    pub message: String,
    /// On the original element's routes only: FastAPI's `detail`, the
    /// message, or for a 422 the list of what failed validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// `WWW-Authenticate` for 401 and 403 from authentication.
    pub www_authenticate: Option<String>,
    /// Extra headers (e.g. `Content-Range` on 416, `Retry-After` on 503).
    pub headers: Vec<(header::HeaderName, String)>,
    /// The core's error this answers, if any (see [`Failed`]; boxed: an
    /// `ApiError` travels in every handler's `Result`).
    pub cause: Option<Box<CoreError>>,
    /// FastAPI's `detail` when it is more than the message (a 422's list;
    /// boxed, as `cause`).
    pub detail: Option<Box<serde_json::Value>>,
}

/// What an error response answers, as a response extension for the
/// `metrics::track` middleware, which knows the route, logs it once and
/// counts it.
#[derive(Clone, Debug)]
pub struct Failed {
    pub message: String,
    /// The core's error, with its code and causes; taken by the one who
    /// logs it (extensions must be `Clone`, an error is not).
    cause: Arc<Mutex<Option<Box<CoreError>>>>,
}

impl Failed {
    /// The core's error, the first time only.
    pub fn take_cause(&self) -> Option<CoreError> {
        self.cause.lock().take().map(|e| *e)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            www_authenticate: None,
            headers: Vec::new(),
            cause: None,
            detail: None,
        }
    }

    /// 422 as FastAPI's validation answered the original's clients: the
    /// parameter at `loc` (e.g. `["query", "limit"]`) is not what it must
    /// be; `detail` is the list FastAPI gave, `kind` its `type`.
    pub fn unprocessable(loc: &[&str], kind: &str, msg: &str, input: &str) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            format!("{}: {msg}", loc.last().copied().unwrap_or("request")),
        );
        e.detail = Some(Box::new(serde_json::json!([{
            "type": kind,
            "loc": loc,
            "msg": msg,
            "input": input,
        }])));
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn precondition_failed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            message,
        )
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> ApiError {
        self.headers.push((name, value.into()));
        self
    }
}

/// Status and code for an errno of the core.
pub fn errno_status(errno: i32) -> (StatusCode, &'static str) {
    match errno {
        libc::ENOENT | libc::ENODATA => (StatusCode::NOT_FOUND, "not_found"),
        libc::EEXIST | libc::ENOTEMPTY | libc::EMLINK | libc::EBUSY | libc::ETXTBSY => {
            (StatusCode::CONFLICT, "conflict")
        }
        libc::ENOSPC | libc::EDQUOT => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
        libc::EACCES | libc::EPERM | libc::EROFS => (StatusCode::FORBIDDEN, "forbidden"),
        libc::EINVAL
        | libc::ENAMETOOLONG
        | libc::EISDIR
        | libc::ENOTDIR
        | libc::ERANGE
        | libc::E2BIG
        | libc::EOPNOTSUPP
        | libc::ENXIO
        | libc::ELOOP => (StatusCode::BAD_REQUEST, "bad_request"),
        libc::EFBIG => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        libc::ESTALE => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        let errno = if e.is_disk_full() {
            libc::ENOSPC
        } else {
            e.errno()
        };
        let (status, code) = errno_status(errno);
        let mut a = ApiError::new(status, code, e.to_string());
        a.cause = Some(Box::new(e));
        a
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        ApiError {
            status,
            code: e.code(),
            // Fixed texts: never the token or a claim value.
            message: e.to_string(),
            www_authenticate: Some(e.www_authenticate()),
            headers: Vec::new(),
            cause: None,
            detail: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let failed = Failed {
            message: self.message.clone(),
            cause: Arc::new(Mutex::new(self.cause)),
        };
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
            detail: self.detail.map(|d| *d),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        let h = resp.headers_mut();
        if let Some(v) = self
            .www_authenticate
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            h.insert(header::WWW_AUTHENTICATE, v);
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        resp.extensions_mut().insert(failed);
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// The level an error response that answers no core error is logged at
/// (one that does takes `Error::level`): a server failure is an error, a
/// full or busy server a warning, an authentication refusal info (as
/// EACCES is), any other client mistake debug.
pub fn status_level(status: StatusCode) -> tracing::Level {
    match status.as_u16() {
        503 | 507 => tracing::Level::WARN,
        s if s >= 500 => tracing::Level::ERROR,
        401 | 403 => tracing::Level::INFO,
        _ => tracing::Level::DEBUG,
    }
}

/// Code of an error status that reached the client without an
/// [`ApiError`] (axum's extractor rejections, 405).
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        411 => "length_required",
        412 => "precondition_failed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        416 => "range_not_satisfiable",
        422 => "unprocessable_entity",
        503 => "unavailable",
        507 => "insufficient_storage",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}

/// Longest plain-text error body turned into a message.
const REJECTION_TEXT_MAX: usize = 4096;

/// Longest JSON error body given a `detail` (an error document is small;
/// its message may name a long path).
const ERROR_JSON_MAX: usize = 64 << 10;

/// Marks a response of the original element's routes: [`json_errors`]
/// gives its error body FastAPI's `detail` too.
#[derive(Clone, Copy, Debug)]
pub struct OriginalShape;

/// Route layer (`map_response`) of the original's routes: marks every
/// response, the refusals of the token guard and of axum's extractors
/// included, so the one place that shapes error bodies knows.
pub async fn original_shape(mut resp: Response) -> Response {
    resp.extensions_mut().insert(OriginalShape);
    resp
}

/// Middleware (`map_response`): every error response has the documented
/// `{"error", "message"}` JSON body, also those made outside the handlers
/// (axum's rejections of bad JSON, a wrong content type or a bad query
/// string are plain text; a 405 has no body). The status and headers are
/// kept; the plain text becomes the message. On the original's routes
/// ([`OriginalShape`]) the body also has `"detail"`: the message, as
/// FastAPI's `HTTPException` put it; the other two fields stay, so one
/// error document serves both kinds of client.
pub async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let original = resp.extensions().get::<OriginalShape>().is_some();
    if !(status.is_client_error() || status.is_server_error()) || (is_json && !original) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let limit = if is_json {
        ERROR_JSON_MAX
    } else {
        REJECTION_TEXT_MAX
    };
    let bytes = axum::body::to_bytes(body, limit).await.unwrap_or_default();
    let parsed = is_json
        .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .flatten();
    let mut doc = parsed.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        let message = if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text
        };
        serde_json::json!({ "error": code_of(status), "message": message })
    });
    if let Some(obj) = doc.as_object_mut() {
        if original && !obj.contains_key("detail") {
            if let Some(m) = obj.get("message").cloned() {
                obj.insert("detail".into(), m);
            }
        }
    }
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_client_statuses() {
        let s = |e| errno_status(e).0.as_u16();
        assert_eq!(s(libc::ENOENT), 404);
        assert_eq!(s(libc::EEXIST), 409);
        assert_eq!(s(libc::ENOTEMPTY), 409);
        assert_eq!(s(libc::ENOSPC), 507);
        assert_eq!(s(libc::EACCES), 403);
        assert_eq!(s(libc::EPERM), 403);
        assert_eq!(s(libc::EROFS), 403);
        for e in [
            libc::EINVAL,
            libc::ENAMETOOLONG,
            libc::EISDIR,
            libc::ENOTDIR,
        ] {
            assert_eq!(s(e), 400);
        }
        assert_eq!(s(libc::EIO), 500);
    }

    #[test]
    fn disk_full_database_is_507() {
        // SQLITE_FULL, as meta's `From<sqlx::Error>` keeps it.
        let full = std::io::Error::other("database or disk is full");
        let e: ApiError = CoreError::database(Some("13".into()), "full", full).into();
        assert_eq!(e.status.as_u16(), 507);
    }
}
