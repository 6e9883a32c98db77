//! Early answers a client still sending its body can read. A response
//! decided before the request body was read (401 from the guard, 404, 405,
//! 413 on the declared length, 507, ...) would otherwise be followed by
//! the server closing a socket with unread data in it: the kernel then
//! resets the connection, and a client that writes its whole body before
//! reading (httpx's AsyncClient, which the original's Ingester uses) sees
//! a write or read error instead of the status, so its retry and failover
//! never start.
//!
//! This layer keeps a hold on the request body; once the handler has
//! answered, it reads and drops what is left of the body, at most what the
//! client declared (up to [`DRAIN_DECLARED_MAX`]; [`DRAIN_MAX_BYTES`] for a
//! chunked body) or for [`DRAIN_MAX_TIME`], whichever comes first,
//! and only then lets the response go. A larger or slower rest is cut off
//! (the connection then closes as before), and so is a body that pauses
//! for [`DRAIN_IDLE`]: that client is waiting for the answer, not sending. Handlers that refuse an upload
//! they have started reading drain it themselves, further (up to
//! `--api-max-upload`, see `artstore_upload`).
//!
//! Not drained: a body the client has not started sending because it
//! waits for `100 Continue` (nothing read yet): the final status goes out
//! and the client sends nothing; and a 408 (the body was too slow or
//! stalled: waiting for it again is what the 408 refused).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use parking_lot::Mutex;

/// Most bytes read after an early answer to a body of unknown length
/// (chunked).
pub const DRAIN_MAX_BYTES: u64 = 16 << 20;
/// Most bytes read after an early answer to a body whose length the client
/// declared: all of it up to this. A client uploading a large file with an
/// expired token must still read its 401 (found with httpx: a 24 MiB body
/// cut at 16 MiB gave it a read error); [`DRAIN_MAX_TIME`] still bounds
/// what any client costs.
pub const DRAIN_DECLARED_MAX: u64 = 1 << 30;
/// Longest time spent reading after an early answer.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);
/// Longest pause of the body while draining.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// The request body, shared between the handler and this layer.
#[derive(Default)]
struct Held {
    body: Option<Body>,
    /// Polled at least once (a `100 Continue` went out, if asked for).
    polled: bool,
}

/// The handler's view of the held body.
struct Shared(Arc<Mutex<Held>>);

impl HttpBody for Shared {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut held = self.0.lock();
        held.polled = true;
        match held.body.as_mut() {
            Some(b) => Pin::new(b).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .body
            .as_ref()
            .is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .body
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// The layer (see the module's documentation).
pub async fn drain_unread(req: Request, next: Next) -> Response {
    let waits_for_continue = expects_continue(req.headers());
    let max_bytes = declared_length(req.headers()).map_or(DRAIN_MAX_BYTES, |n| {
        n.clamp(DRAIN_MAX_BYTES, DRAIN_DECLARED_MAX)
    });
    let (parts, body) = req.into_parts();
    let held = Arc::new(Mutex::new(Held {
        body: Some(body),
        polled: false,
    }));
    let req = Request::from_parts(parts, Body::new(Shared(held.clone())));
    let resp = next.run(req).await;
    let rest = {
        let mut h = held.lock();
        let skip = waits_for_continue && !h.polled;
        h.body.take().filter(|b| !skip && !b.is_end_stream())
    };
    if let Some(body) = rest {
        if resp.status() != StatusCode::REQUEST_TIMEOUT {
            drain(body, max_bytes, DRAIN_MAX_TIME, DRAIN_IDLE).await;
        }
    }
    resp
}

/// The body length the client declared (`Content-Length`), if any.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
}

/// Read and drop `body` until it ends, fails, brought `max_bytes`, paused
/// for `idle`, or `max_time` passed. Returns the bytes read.
pub async fn drain(body: Body, max_bytes: u64, max_time: Duration, idle: Duration) -> u64 {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    let _ = tokio::time::timeout(max_time, async {
        while read < max_bytes {
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(Ok(b))) => read += b.len() as u64,
                _ => break,
            }
        }
    })
    .await;
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_stops_at_its_bounds() {
        let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1024])));
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let long = Duration::from_secs(5);
        assert_eq!(drain(body, 2048, long, long).await, 2048);

        // A body that never comes: the shorter of the two times ends it.
        let short = Duration::from_millis(200);
        for (total, idle) in [(short, long), (long, short)] {
            let body = Body::from_stream(futures_util::stream::pending::<std::io::Result<Bytes>>());
            let t = std::time::Instant::now();
            assert_eq!(drain(body, 1 << 20, total, idle).await, 0);
            assert!(t.elapsed() < Duration::from_secs(4));
        }
    }

    #[test]
    fn continue_is_recognised() {
        let mut h = HeaderMap::new();
        assert!(!expects_continue(&h));
        h.insert(header::EXPECT, "100-Continue".parse().unwrap());
        assert!(expects_continue(&h));
    }
}
