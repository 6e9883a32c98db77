//! Health, readiness, metrics, and the store's figures (`info`,
//! `capacity`).

use std::fmt::Write;

use axum::extract::{Extension, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::{blocking, AppState};
use crate::auth::{Action, Principal};

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "alive")))]
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long readiness waits for the database: a probe must answer in
/// time during an outage (the pool itself waits far longer for a
/// connection, as requests should).
const READY_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Readiness: the database answers (within [`READY_WAIT`]), the writer
/// commits and BACKING is usable; 503 otherwise.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "ready"),
              (status = 503, description = "database or BACKING unusable", body = super::ErrorBody)))]
pub async fn ready(State(st): State<AppState>) -> Response {
    let fs = st.fs.clone();
    let check = blocking(move || fs.check_ready().map_err(ApiError::from));
    let outcome = match tokio::time::timeout(READY_WAIT, check).await {
        Ok(r) => r.map_err(|e| e.message),
        Err(_) => Err(format!(
            "the metadata store did not answer within {} s",
            READY_WAIT.as_secs()
        )),
    };
    match outcome {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("not ready: {why}"),
        )
        .into_response(),
    }
}

/// Capacity figures of the store: its own accounting (bytes and number of
/// regular files) against its `--capacity`, or against the filesystem
/// holding BACKING when none is set.
#[derive(Debug, Serialize, ToSchema)]
pub struct CapacityDetail {
    /// The store's capacity, or the size of BACKING's filesystem.
    pub capacity_bytes: u64,
    /// Bytes of regular files in the store.
    pub used_bytes: u64,
    /// Bytes still available to new content.
    pub available_bytes: u64,
    /// Regular files in the store.
    pub file_count: u64,
    /// Percentage of capacity in use.
    pub used_percent: f64,
    /// Free-space level: ok, warning, critical, full.
    pub level: String,
}

/// What `/api/v1/capacity` reports: the original element's document
/// (what its Ingester's capacity monitor polls, without a token), and
/// with a token that may read, artfs's figures beside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Capacity {
    /// The element's id (`--api-element-id`, default the API name).
    pub storage_id: String,
    /// The store's mode: edit, rw, ro or ar.
    pub mode: String,
    pub capacity: CapacityFigures,
    /// healthy, degraded (critical free-space level) or unhealthy (full).
    pub health: String,
    /// When these figures were taken (RFC 3339, UTC).
    pub last_update: String,
    /// Where content lives: local (or s3).
    pub backend: String,
    /// The element's location label (a datacenter).
    pub location: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub detail: Option<CapacityDetail>,
}

/// The original's nested figures, in bytes.
#[derive(Debug, Serialize, ToSchema)]
pub struct CapacityFigures {
    pub total: u64,
    pub used: u64,
    pub available: u64,
    pub percent_used: f64,
}

/// What `/api/v1/info` reports: the original element's fields (anonymous
/// callers see only these: it served them to its Admin Module's discovery
/// without a token), and with a token that may read, artfs's beside them.
#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub name: String,
    pub display_name: String,
    pub version: String,
    /// Operating mode: edit, rw, ro or ar.
    pub mode: String,
    /// local (or s3).
    pub storage_type: String,
    /// BACKING (a directory; `bucket/folder` for S3).
    pub base_path: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub file_count: u64,
    /// operational, degraded (free space critical or full) or maintenance
    /// (a maintenance job runs).
    pub status: String,
    /// Lower fills first (`--api-priority`, default 100).
    pub priority: i64,
    /// The element's service-discovery id.
    pub element_id: String,
    /// When this was taken (RFC 3339, UTC).
    pub timestamp: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub detail: Option<InfoDetail>,
}

/// artfs's own figures in `/api/v1/info`, for a token that may read.
#[derive(Debug, Serialize, ToSchema)]
pub struct InfoDetail {
    pub store_id: String,
    pub available_bytes: u64,
    /// Regular files with no recorded SHA-256 yet (being written, or
    /// waiting for the background hasher).
    pub unhashed_files: u64,
    /// Accesses refused with EIO since the mount started because a file's
    /// object was missing or short in BACKING.
    pub missing_objects: u64,
}

/// Figures of the store and its mode, as `capacity_of` takes them.
struct Figures {
    detail: CapacityDetail,
    mode: String,
}

fn capacity_of(st: &AppState) -> ApiResult<Figures> {
    let s = st.fs.statfs()?;
    let bs = u64::from(s.frsize.max(1));
    let report = st.fs.capacity_report();
    let capacity = report
        .capacity
        .unwrap_or_else(|| s.blocks.saturating_mul(bs));
    let used = report.used_bytes;
    Ok(Figures {
        detail: CapacityDetail {
            capacity_bytes: capacity,
            used_bytes: used,
            available_bytes: s.bavail.saturating_mul(bs),
            file_count: report.file_count,
            level: format!("{:?}", report.level).to_lowercase(),
            used_percent: if capacity == 0 {
                0.0
            } else {
                (used as f64 * 10_000.0 / capacity as f64).round() / 100.0
            },
        },
        mode: report.mode,
    })
}

/// Whether the caller sees artfs's figures: a token that may read. A
/// token that may not (none here can't, but a scoped one may lack
/// `files:read`) is refused, as on every other route.
fn detailed(who: Option<&Principal>) -> ApiResult<bool> {
    match who {
        None => Ok(false),
        Some(p) => {
            p.require(Action::Read)?;
            Ok(true)
        }
    }
}

fn now_rfc3339() -> String {
    crate::types::Timestamp::now().to_rfc3339()
}

/// The store's name, mode and figures. No token needed (the original's
/// discovery polled it anonymously); a token adds artfs's figures.
#[utoipa::path(get, path = "/api/v1/info", tag = "store", security((), ("bearer" = [])),
    responses((status = 200, body = Info), (status = 401, body = super::ErrorBody)))]
pub async fn info(
    State(st): State<AppState>,
    who: Option<Extension<Principal>>,
) -> ApiResult<Json<Info>> {
    let detailed = detailed(who.as_deref())?;
    let st2 = st.clone();
    let (f, unhashed_files) = blocking(move || {
        let unhashed = if detailed {
            st2.fs.unhashed_files()?
        } else {
            0
        };
        Ok((capacity_of(&st2)?, unhashed))
    })
    .await?;
    let c = &f.detail;
    let status = if st.jobs.any_running() {
        "maintenance"
    } else if matches!(c.level.as_str(), "critical" | "full") {
        "degraded"
    } else {
        "operational"
    };
    Ok(Json(Info {
        name: st.name.clone(),
        display_name: st.element.display_name.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        mode: st.fs.mode().as_str().into(),
        storage_type: st.element.storage_type.clone(),
        base_path: st.fs.backing().display().to_string(),
        capacity_bytes: c.capacity_bytes,
        used_bytes: c.used_bytes,
        file_count: c.file_count,
        status: status.into(),
        priority: st.element.priority,
        element_id: st.element.element_id.clone(),
        timestamp: now_rfc3339(),
        detail: detailed.then(|| InfoDetail {
            store_id: st.fs.store_id().to_string(),
            available_bytes: c.available_bytes,
            unhashed_files,
            missing_objects: st.fs.ops().missing_objects(),
        }),
    }))
}

/// Capacity in the original's shape (no token needed: its Ingester polled
/// it anonymously); a token adds artfs's figures.
#[utoipa::path(get, path = "/api/v1/capacity", tag = "store", security((), ("bearer" = [])),
    responses((status = 200, body = Capacity), (status = 401, body = super::ErrorBody)))]
pub async fn capacity(
    State(st): State<AppState>,
    who: Option<Extension<Principal>>,
) -> ApiResult<Json<Capacity>> {
    let detailed = detailed(who.as_deref())?;
    let st2 = st.clone();
    let f = blocking(move || capacity_of(&st2)).await?;
    let c = &f.detail;
    let health = match c.level.as_str() {
        "full" => "unhealthy",
        "critical" => "degraded",
        _ => "healthy",
    };
    Ok(Json(Capacity {
        storage_id: st.element.element_id.clone(),
        mode: f.mode.clone(),
        capacity: CapacityFigures {
            total: c.capacity_bytes,
            used: c.used_bytes,
            available: c
                .capacity_bytes
                .saturating_sub(c.used_bytes)
                .min(c.available_bytes),
            percent_used: c.used_percent,
        },
        health: health.into(),
        last_update: now_rfc3339(),
        backend: st.element.storage_type.clone(),
        location: st.element.location.clone(),
        detail: detailed.then_some(f.detail),
    }))
}

/// `GET /`: what the original answered there, without a token.
#[utoipa::path(get, path = "/", tag = "health",
    responses((status = 200, description = "the service, its version, mode and storage type")))]
pub async fn root(State(st): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "service": "ArtStore Storage Element",
        "implementation": "artfs",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": st.fs.mode().as_str(),
        "storage_type": st.element.storage_type,
        "status": "operational",
    }))
}

/// Prometheus text: HTTP requests per route and status, log rows per
/// status, capacity figures, uploads in flight. Open to all unless the
/// daemon was given a metrics token (then 401 without it).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
              (status = 401, description = "a metrics token is set and was not given", body = super::ErrorBody)))]
pub async fn metrics(State(st): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let auth = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if !st.metrics.allows(auth) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics needs the metrics token (--metrics-token-file) as a bearer token",
        )
        .with_header(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")
        .into_response();
    }
    let mut out = String::new();
    st.metrics.render(&mut out);
    let st2 = st.clone();
    let figures = blocking(move || {
        let wal = st2.fs.journal_counts()?;
        let cap = capacity_of(&st2)?.detail;
        let unhashed = st2.fs.unhashed_files()?;
        Ok((wal, cap, unhashed))
    });
    // A scrape during a database outage answers in time, with artfs_up 0.
    let figures = tokio::time::timeout(READY_WAIT, figures)
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::from(crate::types::error::Error::meta(
                "timed out",
            )))
        });
    match figures {
        Ok((wal, cap, unhashed)) => {
            out.push_str("# HELP artfs_wal_rows Rows of the intent log per status.\n");
            out.push_str("# TYPE artfs_wal_rows gauge\n");
            for (status, n) in wal {
                let _ = writeln!(
                    out,
                    "artfs_wal_rows{{status=\"{}\"}} {n}",
                    super::metrics::escape(&status)
                );
            }
            for (name, help, v) in [
                (
                    "artfs_capacity_bytes",
                    "Size of the filesystem holding BACKING.",
                    cap.capacity_bytes,
                ),
                ("artfs_used_bytes", "Bytes in use on it.", cap.used_bytes),
                (
                    "artfs_available_bytes",
                    "Bytes available to the daemon.",
                    cap.available_bytes,
                ),
                ("artfs_files", "Regular files in the store.", cap.file_count),
                (
                    "artfs_wal_recovered",
                    "Log rows recovery settled when this mount started.",
                    st.fs.recovered_at_start(),
                ),
                (
                    "artfs_capacity_level",
                    "Free-space level: 0 ok, 1 warning, 2 critical, 3 full.",
                    match cap.level.as_str() {
                        "warning" => 1,
                        "critical" => 2,
                        "full" => 3,
                        _ => 0,
                    },
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
            }
            let _ = writeln!(
                out,
                "# HELP artfs_unhashed_files Regular files with no recorded SHA-256 yet.\n\
                 # TYPE artfs_unhashed_files gauge\nartfs_unhashed_files {unhashed}\n\
                 # HELP artfs_missing_objects_total Accesses refused (EIO) because a file's \
                 object was missing or short.\n# TYPE artfs_missing_objects_total counter\n\
                 artfs_missing_objects_total {}",
                st.fs.ops().missing_objects()
            );
            out.push_str(
                "# HELP artfs_up Whether the store answered.\n# TYPE artfs_up gauge\nartfs_up 1\n",
            );
            let ops = st.fs.ops().snapshot();
            out.push_str("# HELP artfs_fuse_ops_total FUSE requests served, per operation.\n");
            out.push_str("# TYPE artfs_fuse_ops_total counter\n");
            for (op, n, _) in &ops {
                let _ = writeln!(out, "artfs_fuse_ops_total{{op=\"{op}\"}} {n}");
            }
            out.push_str(
                "# HELP artfs_fuse_op_seconds_total Time spent serving FUSE requests, per operation.\n",
            );
            out.push_str("# TYPE artfs_fuse_op_seconds_total counter\n");
            for (op, _, secs) in &ops {
                let _ = writeln!(out, "artfs_fuse_op_seconds_total{{op=\"{op}\"}} {secs:.6}");
            }
            let c = st.fs.cache_stats();
            let _ = writeln!(
                out,
                "# HELP artfs_cache_lookups_total Metadata lookups answered from memory (hit) \
                 or the database (miss).\n# TYPE artfs_cache_lookups_total counter\n\
                 artfs_cache_lookups_total{{result=\"hit\"}} {}\n\
                 artfs_cache_lookups_total{{result=\"miss\"}} {}",
                c.hits, c.misses
            );
        }
        Err(_) => out.push_str(
            "# HELP artfs_up Whether the store answered.\n# TYPE artfs_up gauge\nartfs_up 0\n",
        ),
    }
    // In memory: a store in a bucket (docs/S3.md).
    if let Some(r) = st.fs.content_stats() {
        for (name, kind, help, v) in [
            (
                "artfs_s3_cache_bytes",
                "gauge",
                "Bytes of cached copies.",
                r.cache_bytes,
            ),
            (
                "artfs_s3_cache_limit_bytes",
                "gauge",
                "The most the cache keeps (--cache-size).",
                r.cache_limit,
            ),
            ("artfs_s3_cached_files", "gauge", "Cached copies.", r.cached),
            (
                "artfs_s3_unsent_files",
                "gauge",
                "Cached copies with changes not yet in the bucket.",
                r.unsent,
            ),
            (
                "artfs_s3_request_failures_total",
                "counter",
                "Requests that failed after their retries.",
                r.failures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        out.push_str("# HELP artfs_s3_requests_total Requests to the bucket, per kind.\n");
        out.push_str("# TYPE artfs_s3_requests_total counter\n");
        for (op, n) in [
            ("get", r.gets),
            ("put", r.puts),
            ("list", r.lists),
            ("delete", r.deletes),
        ] {
            let _ = writeln!(out, "artfs_s3_requests_total{{op=\"{op}\"}} {n}");
        }
        out.push_str(
            "# HELP artfs_s3_bytes_total Content bytes fetched from and sent to the bucket.\n",
        );
        out.push_str("# TYPE artfs_s3_bytes_total counter\n");
        let _ = writeln!(
            out,
            "artfs_s3_bytes_total{{direction=\"fetched\"}} {}",
            r.bytes_fetched
        );
        let _ = writeln!(
            out,
            "artfs_s3_bytes_total{{direction=\"sent\"}} {}",
            r.bytes_sent
        );
    }
    // In memory: shown even when the store does not answer.
    out.push_str(
        "# HELP artfs_fuse_errors_total FUSE requests answered with an error, per operation \
         and errno.\n# TYPE artfs_fuse_errors_total counter\n",
    );
    for (op, errno, n) in st.fs.ops().errors() {
        let _ = writeln!(
            out,
            "artfs_fuse_errors_total{{op=\"{op}\",errno=\"{errno}\"}} {n}"
        );
    }
    let committing = matches!(st.fs.writer_health(), (true, None));
    let _ = writeln!(
        out,
        "# HELP artfs_writer_committing Whether metadata commits succeed (0 during a database \
         outage, after a lost lease, or once the writer died).\n\
         # TYPE artfs_writer_committing gauge\nartfs_writer_committing {}",
        u8::from(committing)
    );
    // The node's place in a cluster (docs/CLUSTER.md).
    let f = st.fs.follow_state();
    out.push_str(
        "# HELP artfs_role This daemon's role for the store: 1 for the one it has now.
         # TYPE artfs_role gauge
",
    );
    for role in ["writer", "replica", "standby"] {
        let _ = writeln!(
            out,
            "artfs_role{{role=\"{role}\"}} {}",
            u8::from(f.role.as_str() == role)
        );
    }
    let _ = writeln!(
        out,
        "# HELP artfs_feed_applied_row Last change-feed row a follower's caches reflect.
         # TYPE artfs_feed_applied_row gauge
artfs_feed_applied_row {}
         # HELP artfs_feed_rows_behind Feed rows the writer committed that this follower has          not applied yet (as of its last read).
         # TYPE artfs_feed_rows_behind gauge
artfs_feed_rows_behind {}",
        f.applied, f.behind
    );
    if let Some(age) = f.read_age_secs {
        let _ = writeln!(
            out,
            "# HELP artfs_feed_read_age_seconds Seconds since a follower last read the feed.
             # TYPE artfs_feed_read_age_seconds gauge
artfs_feed_read_age_seconds {age:.3}"
        );
    }
    let busy = st.uploads.in_flight();
    let _ = writeln!(
        out,
        "# HELP artfs_uploads_in_flight Uploads being received.\n# TYPE artfs_uploads_in_flight gauge\nartfs_uploads_in_flight {busy}"
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Any path no route serves.
pub async fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}
