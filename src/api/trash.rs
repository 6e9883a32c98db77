//! The trash for operators (`Action::Delete`: operator and admin roles,
//! `files:delete` when the token is scoped); others get 403.
//!
//! - `GET /api/v1/trash`: its units (a user's deletion session each, see
//!   docs/SEMANTICS.md), oldest first, with files and bytes.
//! - `DELETE /api/v1/trash?older_than_days=D`: purge the units whose last
//!   deletion is at least D days old (every unit without D), with their
//!   directories, for good.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult};
use super::{blocking, AppState};
use crate::auth::{Action, Principal};
use crate::types::Timestamp;

/// One unit of the trash.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrashUnit {
    /// `/.trash/<uid>/<when>` (or a file of the old flat layout).
    pub path: String,
    /// The deleting user, when the layout names one.
    pub uid: Option<u32>,
    /// Its last deletion (RFC 3339): its age counts from here.
    pub when: String,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrashList {
    pub units: Vec<TrashUnit>,
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EmptyQuery {
    /// Only units whose last deletion is at least this many days old.
    pub older_than_days: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TrashPurged {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
}

/// What the trash holds (operator, admin).
#[utoipa::path(get, path = "/api/v1/trash", tag = "store", security(("bearer" = [])),
    responses((status = 200, body = TrashList), (status = 403, body = super::ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<TrashList>> {
    who.require(Action::Delete)?;
    let units = blocking(move || Ok(st.fs.trash_units()?)).await?;
    let units: Vec<TrashUnit> = units
        .into_iter()
        .map(|u| TrashUnit {
            path: String::from_utf8_lossy(&u.path).into_owned(),
            uid: u.uid,
            when: u.when.to_rfc3339(),
            files: u.files,
            bytes: u.bytes,
        })
        .collect();
    Ok(Json(TrashList {
        files: units.iter().map(|u| u.files).sum(),
        bytes: units.iter().map(|u| u.bytes).sum(),
        units,
    }))
}

/// Empty the trash, or its part older than `older_than_days` (operator,
/// admin).
#[utoipa::path(delete, path = "/api/v1/trash", tag = "store", security(("bearer" = [])),
    params(EmptyQuery),
    responses((status = 200, body = TrashPurged), (status = 400, body = super::ErrorBody),
        (status = 403, body = super::ErrorBody)))]
pub async fn empty(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<EmptyQuery>,
) -> ApiResult<Json<TrashPurged>> {
    who.require(Action::Delete)?;
    let before = match q.older_than_days {
        None => None,
        Some(d) if d >= 0.0 && d.is_finite() && d < 100_000.0 => {
            Some(Timestamp(Timestamp::now().0 - (d * 86_400e9) as i64))
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "older_than_days must be a number of days, 0 or more",
            ))
        }
    };
    let p = blocking(move || Ok(st.fs.trash_empty(before, usize::MAX)?)).await?;
    Ok(Json(TrashPurged {
        files: p.files,
        dirs: p.dirs,
        bytes: p.bytes,
    }))
}
