//! `GET /api/v1/cluster` (admin): this node's place in the store's
//! cluster and, with `--redis`, every node the registry lists
//! (docs/CLUSTER.md).

use axum::extract::{Extension, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiResult;
use super::AppState;
use crate::auth::{Action, Principal};

/// This node, as it sees itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThisNode {
    /// writer, replica or standby.
    pub role: String,
    /// Last change-feed row a follower applied.
    pub feed_applied: u64,
    /// Rows the writer committed that this follower has not applied.
    pub feed_behind: u64,
    /// Seconds since a follower last read the feed.
    pub feed_read_age_secs: Option<f64>,
}

/// The answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cluster {
    pub store_id: String,
    pub this: ThisNode,
    /// The registry's nodes of this store (`null` without `--redis`).
    #[schema(value_type = Option<Vec<Object>>)]
    pub nodes: Option<Vec<crate::cluster::NodeRecord>>,
    /// Why the registry could not be read.
    pub registry_error: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/cluster", tag = "store", security(("bearer" = [])),
    responses((status = 200, body = Cluster), (status = 403, body = super::ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Cluster>> {
    who.require(Action::Admin)?;
    let f = st.fs.follow_state();
    let store_id = st.fs.store_id().to_string();
    let (nodes, registry_error) = match &st.redis {
        None => (None, None),
        Some(client) => match crate::cluster::nodes(client, Some(&store_id)).await {
            Ok(n) => (Some(n), None),
            Err(e) => (None, Some(e)),
        },
    };
    Ok(Json(Cluster {
        store_id,
        this: ThisNode {
            role: f.role.to_string(),
            feed_applied: f.applied,
            feed_behind: f.behind,
            feed_read_age_secs: f.read_age_secs,
        },
        nodes,
        registry_error,
    }))
}
