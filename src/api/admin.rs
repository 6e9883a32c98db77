//! Search, mode changes and maintenance jobs over HTTP.
//!
//! - `GET /api/v1/search?q=&limit=&cursor=`: full-text search (read).
//! - `POST /api/v1/mode` `{"mode", "confirm"}`: admin only; refused moves
//!   are 409 with the allowed ones named.
//! - `POST|GET /api/v1/maintenance/{fsck|scrub|rebuild}`: admin only; one
//!   job of a kind at a time (409 otherwise). On a mounted store the jobs
//!   are the read-only checks (`rebuild` compares sidecars and tables).

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::{Extension, Json};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::{blocking, AppState};
use crate::auth::{Action, Principal};
use crate::core::policy::Mode;
use crate::types::error::Error as CoreError;
use crate::types::Timestamp;

#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchQuery {
    /// FTS5 query: words, "phrases", prefix*, AND/OR/NOT, column:word.
    pub q: String,
    /// Most results (1..=1000, default 50).
    #[param(value_type = Option<usize>)]
    pub limit: Option<String>,
    /// Where the previous page ended (its `next_cursor`); 0..2^63-1,
    /// anything else is 400.
    #[param(value_type = Option<u64>)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchHit {
    pub path: String,
    pub file_id: String,
    /// BM25 rank: lower is better.
    pub rank: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchPage {
    pub results: Vec<SearchHit>,
    /// Pass as `?cursor=` for the next page; `null` when no match is
    /// left. A page may hold fewer than `limit` results (even none) and
    /// still have a next cursor: results the caller cannot reach are
    /// skipped.
    pub next_cursor: Option<u64>,
}

/// Full-text search over names, descriptions, versions and custom values;
/// only files the token's identity could reach by path are results.
#[utoipa::path(get, path = "/api/v1/search", tag = "search", security(("bearer" = [])),
    params(SearchQuery),
    responses((status = 200, body = SearchPage), (status = 400, body = super::ErrorBody)))]
pub async fn search(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Json<SearchPage>> {
    who.require(Action::Read)?;
    let limit = match q.limit.as_deref() {
        None | Some("") => 50,
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("limit must be a positive integer"))?
            .clamp(1, 1000),
    };
    let cursor = super::fs::parse_cursor(q.cursor.as_deref())?;
    let caller = st.caller_for(&who);
    let page = blocking(move || {
        let found = st.fs.search_as(&caller, &q.q, limit, cursor)?;
        let mut results = Vec::with_capacity(found.hits.len());
        for h in found.hits {
            let file_id = st.fs.getattr(h.ino)?.inode.file_id;
            results.push(SearchHit {
                path: String::from_utf8_lossy(&h.path).into_owned(),
                file_id,
                rank: h.rank,
            });
        }
        Ok(SearchPage {
            results,
            next_cursor: found.next,
        })
    })
    .await?;
    Ok(Json(page))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ModeChange {
    pub mode: String,
    #[serde(default)]
    pub confirm: bool,
    /// A change to ro while files are open for writing: wait for them to
    /// be closed (they finish their writes) instead of refusing (409).
    #[serde(default)]
    pub force: bool,
    /// With `force`: give up (409) after this many seconds; default 60.
    #[serde(default)]
    pub wait_secs: Option<f64>,
}

/// Change the store's mode (admin). 409 for a move the state machine
/// refuses, or a change to ro while files are open for writing (unless
/// `force`, which waits for them).
#[utoipa::path(post, path = "/api/v1/mode", tag = "store", security(("bearer" = [])),
    request_body = ModeChange,
    responses((status = 200), (status = 403, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn change_mode(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    // The role first: nothing of the body is read for a caller who may
    // not change the mode.
    who.require(Action::Admin)?;
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            let t = t.trim().to_ascii_lowercase();
            t == "application/json" || t.ends_with("+json")
        });
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let body = axum::body::to_bytes(body, MODE_BODY_MAX)
        .await
        .map_err(|_| ApiError::bad_request("the body is too large or was cut short"))?;
    let req: ModeChange = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))?;
    let to: Mode = req
        .mode
        .parse()
        .map_err(|m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m))?;
    let by = who.sub.clone();
    let wait = match req.wait_secs {
        Some(w) if !(w.is_finite() && w > 0.0) => {
            return Err(ApiError::bad_request("wait_secs must be a positive number"))
        }
        Some(w) => std::time::Duration::from_secs_f64(w),
        None => std::time::Duration::from_secs(60),
    };
    let from = blocking(move || {
        match st
            .fs
            .change_mode(to, req.confirm, req.force, Some(wait), &by)
        {
            Ok(from) => Ok(from),
            Err(CoreError::Policy(m)) => Err(ApiError::new(StatusCode::CONFLICT, "conflict", m)),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    Ok(Json(json!({ "from": from.as_str(), "mode": to.as_str() })))
}

/// Largest body of a mode change.
const MODE_BODY_MAX: usize = 4096;

/// One maintenance job's state.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Job {
    pub kind: String,
    pub state: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    /// The job's findings when finished.
    #[schema(value_type = Object)]
    pub result: Option<Value>,
}

/// Jobs by kind (the last run of each).
#[derive(Default)]
pub struct Jobs {
    by_kind: Mutex<HashMap<String, Job>>,
}

impl Jobs {
    /// Whether a maintenance job runs now.
    pub fn any_running(&self) -> bool {
        self.by_kind.lock().values().any(|j| j.state == "running")
    }
}

fn job_kind(kind: &str) -> ApiResult<&'static str> {
    match kind {
        "fsck" => Ok("fsck"),
        "scrub" => Ok("scrub"),
        "rebuild" => Ok("rebuild"),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "maintenance jobs: fsck, scrub, rebuild",
        )),
    }
}

/// Start a maintenance job (admin); 409 while one of its kind runs.
#[utoipa::path(post, path = "/api/v1/maintenance/{kind}", tag = "maintenance",
    security(("bearer" = [])), params(("kind" = String, Path)),
    responses((status = 202, body = Job), (status = 409, body = super::ErrorBody)))]
pub async fn start_job(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(kind): Path<String>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    who.require(Action::Admin)?;
    let kind = job_kind(&kind)?;
    // One node per store runs maintenance: the one holding the lease
    // (docs/CLUSTER.md). A follower's checks would race its writer's.
    let role = st.fs.role();
    if role != crate::core::options::Role::Writer {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("maintenance runs on the store's writer; this node is a {role}"),
        ));
    }
    let job = Job {
        kind: kind.into(),
        state: "running".into(),
        started_at: Timestamp::now().to_rfc3339(),
        finished_at: None,
        result: None,
    };
    {
        let mut jobs = st.jobs.by_kind.lock();
        if jobs.get(kind).is_some_and(|j| j.state == "running") {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a {kind} job is already running"),
            ));
        }
        jobs.insert(kind.into(), job.clone());
    }
    let st2: Arc<super::Inner> = st.clone();
    tokio::task::spawn_blocking(move || {
        let fs = &st2.fs;
        let result = fs.settle().and_then(|()| {
            let (meta, objects) = fs.stores();
            let quiet = indicatif::ProgressBar::hidden();
            match kind {
                "fsck" => crate::cmd::fsck::check(meta, objects, true, &quiet).map(|r| {
                    // The last result `artfs status` shows, however run.
                    crate::cmd::status::record(
                        meta,
                        "fsck",
                        r.findings.len(),
                        false,
                        &format!(
                            "checked {} inodes, {} entries, {} objects, {} problems \
                             (HTTP job, while mounted)",
                            r.inodes,
                            r.entries,
                            r.objects,
                            r.findings.len()
                        ),
                    );
                    json!({ "consistent": r.is_clean(), "inodes": r.inodes, "entries": r.entries,
                        "objects": r.objects,
                        "problems": r.findings.iter().map(|f| f.to_string()).collect::<Vec<_>>() })
                }),
                "scrub" => crate::cmd::scrub::scrub(meta, objects, None, &quiet, false).map(|r| {
                    crate::cmd::status::record(
                        meta,
                        "scrub",
                        r.damaged.len(),
                        false,
                        &format!(
                            "verified {} files ({} bytes), {} damaged (HTTP job)",
                            r.verified,
                            r.bytes,
                            r.damaged.len()
                        ),
                    );
                    json!({ "verified": r.verified, "bytes": r.bytes, "unverified": r.unverified,
                        "damaged": r.damaged.iter()
                            .map(|(p, w)| json!({ "path": p, "problem": w }))
                            .collect::<Vec<_>>() })
                }),
                _ => crate::cmd::rebuild::check(meta, objects, &quiet).map(|o| {
                    json!({ "sidecars_without_rows": o.sidecars_without_rows,
                        "rows_without_sidecars": o.rows_without_sidecars,
                        "unusable_sidecars": o.skipped.len() })
                }),
            }
        });
        let mut jobs = st2.jobs.by_kind.lock();
        if let Some(j) = jobs.get_mut(kind) {
            j.finished_at = Some(Timestamp::now().to_rfc3339());
            match result {
                Ok(v) => {
                    j.state = "finished".into();
                    j.result = Some(v);
                }
                Err(e) => {
                    j.state = "failed".into();
                    j.result = Some(json!({ "error": e.to_string() }));
                }
            }
        }
    });
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// The last job of a kind (auditor or admin).
#[utoipa::path(get, path = "/api/v1/maintenance/{kind}", tag = "maintenance",
    security(("bearer" = [])), params(("kind" = String, Path)),
    responses((status = 200, body = Job), (status = 404, body = super::ErrorBody)))]
pub async fn job_status(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(kind): Path<String>,
) -> ApiResult<Json<Job>> {
    who.require(Action::Audit)?;
    let kind = job_kind(&kind)?;
    st.jobs
        .by_kind
        .lock()
        .get(kind)
        .cloned()
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no {kind} job has run"),
            )
        })
}
