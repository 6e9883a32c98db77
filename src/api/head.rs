//! The request head's size limit (`--api-max-header-bytes`, 431 beyond).
//!
//! hyper can only bound the head through its read buffer, which is also
//! what every read of a body fills: held to the head's limit (16 KiB),
//! an upload took one `recv` per 16 KiB, and those calls cost about a
//! sixth of the daemon's CPU per uploaded byte (issue 20). So the buffer
//! is larger ([`READ_BUFFER`]; a head beyond even that is hyper's 431) and
//! the limit is checked here, on the head as the client sent it.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// hyper's read buffer: a head may fill it, and a body is read in pieces
/// of up to this size.
pub const READ_BUFFER: usize = 256 << 10;

/// The bytes of the request line and headers as HTTP/1.1 sends them.
pub fn head_bytes(req: &Request) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method().as_str().len() + " ".len() + target + " HTTP/1.1\r\n".len();
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + ": \r\n".len())
        .sum();
    line + fields + "\r\n".len()
}

pub async fn within_limit(max: usize, req: Request, next: Next) -> Response {
    let n = head_bytes(&req);
    if n > max {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "header_fields_too_large",
            format!("the request line and headers take {n} bytes; at most {max} are allowed"),
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_is_counted_as_sent() {
        let req = Request::builder()
            .method("GET")
            .uri("/api/v1/fs/a?x=1")
            .header("Host", "h")
            .body(axum::body::Body::empty())
            .unwrap();
        let sent = "GET /api/v1/fs/a?x=1 HTTP/1.1\r\nhost: h\r\n\r\n";
        assert_eq!(head_bytes(&req), sent.len());
    }
}
