//! Request metrics in the Prometheus text format: counts and latency
//! histograms per method, route (the route template, never the concrete
//! path: file names stay out of metrics) and status.
//!
//! Every label value comes from a closed set, so no request, however
//! strange, can add a series: the method is one of [`METHODS`] or
//! `other`, the route one of the router's templates or `unmatched`, the
//! status a number from 100 to 599.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;

use super::error::{status_level, Failed};
use crate::types::error::{errno_label, Context, Error, Failure};

type ErrorKey = (&'static str, String, u16, &'static str);

/// Upper bounds of the latency buckets, in seconds (time to response
/// headers; streamed bodies are not included).
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(String, String, u16), Series>>,
    /// Error responses per (method, route, status, errno name or `none`):
    /// `artfs_api_errors_total`.
    errors: Mutex<BTreeMap<ErrorKey, u64>>,
    /// SHA-256 of the secret `/metrics` asks for; `None`: open to all.
    token: Option<[u8; 32]>,
}

impl Metrics {
    /// Metrics whose page asks for `token` as a bearer token, when given.
    pub fn with_token(token: Option<&[u8]>) -> Metrics {
        Metrics {
            series: Mutex::default(),
            errors: Mutex::default(),
            token: token.map(digest),
        }
    }

    /// Whether a request with this `Authorization` header may read the
    /// metrics. The comparison takes the same time whatever the header
    /// holds (both sides are hashed, then compared in full).
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(want) = &self.token else {
            return true;
        };
        let Some(given) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let got = digest(given);
        want.iter()
            .zip(got.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
    }

    pub fn record(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut m = self.series.lock();
        let s = m
            .entry((method.to_string(), route.to_string(), status))
            .or_default();
        s.count += 1;
        s.sum += secs;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                s.buckets[i] += 1;
            }
        }
    }

    /// Count an error response; `errno` when it answers a core error.
    pub fn record_error(&self, method: &'static str, route: &str, status: u16, errno: Option<i32>) {
        let errno = errno.map_or("none", errno_label);
        *self
            .errors
            .lock()
            .entry((method, route.to_string(), status, errno))
            .or_default() += 1;
    }

    /// The request series in the text exposition format.
    pub fn render(&self, out: &mut String) {
        let errors = self.errors.lock().clone();
        out.push_str(
            "# HELP artfs_api_errors_total Error responses, per route, status and the errno \
             of the core's error they answer (none: no core error).\n\
             # TYPE artfs_api_errors_total counter\n",
        );
        for ((method, route, status, errno), n) in &errors {
            let _ = writeln!(
                out,
                "artfs_api_errors_total{{method=\"{method}\",route=\"{}\",status=\"{status}\",errno=\"{errno}\"}} {n}",
                escape(route)
            );
        }
        let m = self.series.lock().clone();
        out.push_str("# HELP artfs_http_requests_total HTTP requests served.\n");
        out.push_str("# TYPE artfs_http_requests_total counter\n");
        for ((method, route, status), s) in &m {
            let _ = writeln!(
                out,
                "artfs_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                escape(route),
                s.count
            );
        }
        out.push_str("# HELP artfs_http_request_duration_seconds Time to response headers.\n");
        out.push_str("# TYPE artfs_http_request_duration_seconds histogram\n");
        for ((method, route, status), s) in &m {
            let labels = format!(
                "method=\"{method}\",route=\"{}\",status=\"{status}\"",
                escape(route)
            );
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "artfs_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                    s.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "artfs_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(
                out,
                "artfs_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum
            );
            let _ = writeln!(
                out,
                "artfs_http_request_duration_seconds_count{{{labels}}} {}",
                s.count
            );
        }
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret).into()
}

/// Escape a label value (backslash, quote, newline).
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The methods counted by name; any other is counted as `other`.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// The label of a request method: its name when known, else `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    METHODS
        .iter()
        .find(|m| **m == method.as_str())
        .copied()
        .unwrap_or("other")
}

/// Middleware recording every request, routed or not. An error response
/// is also counted in `artfs_api_errors_total` and logged once, with the
/// method, route and path: at the level its core error picks
/// (`Error::log`: a 404 for a missing file is debug, a database failure
/// error), or by its status when it answers none (`status_level`).
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    // The router's own template (a fixed string), never the request's path.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let path = req.uri().path().to_string();
    let mut resp = next.run(req).await;
    let status = resp.status();
    if status.is_client_error() || status.is_server_error() {
        let failed = resp.extensions_mut().remove::<Failed>();
        let cause = failed.as_ref().and_then(Failed::take_cause);
        metrics.record_error(
            method,
            &route,
            status.as_u16(),
            cause.as_ref().map(Error::errno),
        );
        let at = Context::op(format!("{method} {route}")).path(path);
        match cause {
            Some(e) => e.with_context(at).log(&status.as_u16()),
            None => {
                // A refusal of the door itself (a bad token, a malformed
                // request, no such route): its message is all there is.
                let report = failed.map_or_else(|| status.to_string(), |f| f.message);
                let f = Failure {
                    at: Some(&at),
                    errno: "none",
                    code: None,
                    reply: &status.as_u16(),
                    report: &report,
                };
                f.log(status_level(status));
            }
        }
    }
    metrics.record(
        method,
        &route,
        status.as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        m.record("GET", "/api/v1/fs/{*path}", 200, 0.003);
        m.record("GET", "/api/v1/fs/{*path}", 200, 0.2);
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "artfs_http_requests_total{method=\"GET\",route=\"/api/v1/fs/{*path}\",status=\"200\"} 2"
        ));
        assert!(out.contains("le=\"0.005\"} 1"));
        assert!(out.contains("le=\"0.25\"} 2"));
        assert!(out.contains("le=\"+Inf\"} 2"));
    }

    #[test]
    fn errors_are_counted_by_route_status_and_errno_name() {
        let m = Metrics::default();
        let fs = "/api/v1/fs/{*path}";
        m.record_error("GET", fs, 404, Some(libc::ENOENT));
        m.record_error("GET", fs, 404, Some(libc::ENOENT));
        m.record_error("PUT", fs, 500, Some(libc::EIO));
        m.record_error("PUT", fs, 500, Some(libc::EHOSTDOWN));
        m.record_error("GET", "unmatched", 404, None);
        let mut out = String::new();
        m.render(&mut out);
        for line in [
            "artfs_api_errors_total{method=\"GET\",route=\"/api/v1/fs/{*path}\",status=\"404\",errno=\"ENOENT\"} 2",
            "artfs_api_errors_total{method=\"PUT\",route=\"/api/v1/fs/{*path}\",status=\"500\",errno=\"EIO\"} 1",
            "artfs_api_errors_total{method=\"PUT\",route=\"/api/v1/fs/{*path}\",status=\"500\",errno=\"other\"} 1",
            "artfs_api_errors_total{method=\"GET\",route=\"unmatched\",status=\"404\",errno=\"none\"} 1",
        ] {
            assert!(out.contains(line), "{line}\n{out}");
        }
    }

    #[test]
    fn metrics_token_is_checked_when_set() {
        assert!(Metrics::default().allows(None));
        let m = Metrics::with_token(Some(b"s3cret-s3cret-s3cret"));
        assert!(m.allows(Some(b"Bearer s3cret-s3cret-s3cret")));
        assert!(!m.allows(Some(b"Bearer s3cret-s3cret-s3creT")));
        assert!(!m.allows(Some(b"Bearer ")));
        assert!(!m.allows(Some(b"s3cret-s3cret-s3cret")));
        assert!(!m.allows(None));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        use axum::http::Method;
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let junk = Method::from_bytes(b"XYZZYXYZZYXYZZY").unwrap();
        assert_eq!(method_label(&junk), "other");
        assert_eq!(method_label(&Method::from_bytes(b"get").unwrap()), "other");
    }
}
