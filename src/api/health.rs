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

/// Readiness: the database answers and BACKING is usable; 503 otherwise.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "ready"),
              (status = 503, description = "database or BACKING unusable", body = super::ErrorBody)))]
pub async fn ready(State(st): State<AppState>) -> Response {
    let fs = st.fs.clone();
    match blocking(move || fs.check_ready().map_err(ApiError::from)).await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("not ready: {}", e.message),
        )
        .into_response(),
    }
}

/// Capacity figures of the store: its own accounting (bytes and number of
/// regular files) against its `--capacity`, or against the filesystem
/// holding BACKING when none is set.
#[derive(Debug, Serialize, ToSchema)]
pub struct Capacity {
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
    /// The store's mode.
    pub mode: String,
}

/// What `/api/v1/info` reports.
#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub name: String,
    /// Operating mode: edit, rw, ro or ar.
    pub mode: String,
    pub version: String,
    pub store_id: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub file_count: u64,
    /// Regular files with no recorded SHA-256 yet (being written, or
    /// waiting for the background hasher).
    pub unhashed_files: u64,
    /// Accesses refused with EIO since the mount started because a file's
    /// object was missing or short in BACKING.
    pub missing_objects: u64,
}

fn capacity_of(st: &AppState) -> ApiResult<Capacity> {
    let s = st.fs.statfs()?;
    let bs = u64::from(s.frsize.max(1));
    let report = st.fs.capacity_report();
    let capacity = report
        .capacity
        .unwrap_or_else(|| s.blocks.saturating_mul(bs));
    let used = report.used_bytes;
    Ok(Capacity {
        capacity_bytes: capacity,
        used_bytes: used,
        available_bytes: s.bavail.saturating_mul(bs),
        file_count: report.file_count,
        level: format!("{:?}", report.level).to_lowercase(),
        mode: report.mode,
        used_percent: if capacity == 0 {
            0.0
        } else {
            (used as f64 * 10_000.0 / capacity as f64).round() / 100.0
        },
    })
}

/// The store's name, mode and figures.
#[utoipa::path(get, path = "/api/v1/info", tag = "store", security(("bearer" = [])),
    responses((status = 200, body = Info), (status = 401, body = super::ErrorBody)))]
pub async fn info(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Info>> {
    who.require(Action::Read)?;
    let st2 = st.clone();
    let (c, unhashed_files) =
        blocking(move || Ok((capacity_of(&st2)?, st2.fs.unhashed_files()?))).await?;
    Ok(Json(Info {
        name: st.name.clone(),
        mode: st.fs.mode().as_str().into(),
        version: env!("CARGO_PKG_VERSION").into(),
        store_id: st.fs.store_id().to_string(),
        capacity_bytes: c.capacity_bytes,
        used_bytes: c.used_bytes,
        available_bytes: c.available_bytes,
        file_count: c.file_count,
        unhashed_files,
        missing_objects: st.fs.ops().missing_objects(),
    }))
}

/// Capacity, used and available bytes, file count.
#[utoipa::path(get, path = "/api/v1/capacity", tag = "store", security(("bearer" = [])),
    responses((status = 200, body = Capacity), (status = 401, body = super::ErrorBody)))]
pub async fn capacity(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Capacity>> {
    who.require(Action::Read)?;
    Ok(Json(blocking(move || capacity_of(&st)).await?))
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
        let cap = capacity_of(&st2)?;
        let unhashed = st2.fs.unhashed_files()?;
        Ok((wal, cap, unhashed))
    })
    .await;
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
