//! The HTTP door: an axum server inside the daemon, on its tokio runtime,
//! calling the same core as the FUSE door, so every rule (names, rename
//! semantics, permissions, capacity) is written once.
//!
//! What it owns: routes, request parsing, JWT authentication (through
//! `auth`), the mapping of core errors to statuses, limits, metrics, TLS.
//! It holds no filesystem policy. Core calls are synchronous and may wait
//! for the database, so handlers make them on the blocking pool
//! ([`blocking`]). After each mutation the handler tells the kernel what
//! changed (`Fs::invalidator`), so the mount is right at once although the
//! kernel caches entries and attributes for an hour.
//!
//! Modules: `config` (CLI flags, defaults), `server` (binding, TLS, limits,
//! SIGHUP), `guard` (bearer tokens), `path` (safe path parsing), `error`
//! (statuses), one module per door: `health`, `fs`, `meta`, `files`,
//! `artstore_upload` (the original element's multipart upload, with
//! `artstore_form`, its fields, and `artstore_path`, where it is stored); and
//! `metrics`, `openapi`, `connections` (connection cap, idle close),
//! `uploads` (upload slots per subject, minimum body rate), `drain` (early
//! answers readable by a client still sending its body).

mod admin;
mod artstore_form;
mod artstore_path;
mod artstore_upload;
mod cluster;
mod connections;
mod drain;
pub mod element;
mod error;
mod file_meta;
mod files;
mod fs;
mod guard;
mod head;
mod health;
mod metrics;
mod openapi;
pub mod path;
mod server;
mod settings;
mod trash;
mod uploads;

use std::sync::Arc;

use axum::middleware;
use axum::routing::get;
use axum::Router;

pub use error::{errno_status, ApiError, ErrorBody};
pub use openapi::ApiDoc;
pub use server::{start, ApiServer};
pub use settings::{ApiArgs, ApiConfig, Limits};

use crate::auth::Verifier;
use crate::core::Fs;
use crate::types::Caller;
use error::ApiResult;

/// What every handler shares.
pub struct Inner {
    pub fs: Arc<Fs>,
    pub verifier: Arc<Verifier>,
    /// The POSIX identity `user` and `operator` tokens act as
    /// (`--api-uid`/`--api-gid`, by default `nobody`).
    pub caller: Caller,
    /// The identity `admin` tokens act as: root.
    pub admin_caller: Caller,
    /// Reported by `/api/v1/info`.
    pub name: String,
    pub limits: Limits,
    /// Upload slots, in all and per token subject.
    pub uploads: Arc<uploads::Uploads>,
    pub metrics: Arc<metrics::Metrics>,
    /// Permission bits of uploaded files and of directories made by `?mkdir`.
    pub file_mode: u32,
    pub dir_mode: u32,
    /// Maintenance jobs started through the API.
    pub jobs: admin::Jobs,
    /// What the original's clients see of this element.
    pub element: element::Element,
    /// The Redis registry of the store's nodes (`--redis`).
    pub redis: Option<redis::Client>,
}

pub type AppState = Arc<Inner>;

impl Inner {
    /// The identity a request acts as: root for an `admin` token, the
    /// configured uid/gid for the others (docs/AUTH.md, "Identity"), with
    /// the token's subject for the log and the archive acts its role grants.
    pub fn caller_for(&self, who: &crate::auth::Principal) -> Caller {
        let mut c = if who.role == Some(crate::auth::Role::Admin) {
            self.admin_caller.clone()
        } else {
            self.caller.clone()
        };
        c.subject = Some(who.sub.clone());
        c.grants = Some(grants_of(who));
        c
    }

    /// Tell the caching door (the kernel) that `name` in `parent` changed,
    /// and so did the directory's attributes and listing.
    pub fn invalidate_entry(&self, parent: u64, name: &[u8]) {
        if let Some(inv) = self.fs.invalidator() {
            inv.entry(parent, name);
            inv.inode(parent);
        }
    }

    /// Tell the caching door that `ino`'s attributes or content changed.
    pub fn invalidate_inode(&self, ino: u64) {
        if let Some(inv) = self.fs.invalidator() {
            inv.inode(ino);
        }
    }
}

/// The archive acts a token may do beyond POSIX (docs/AUTH.md): a
/// retention lock takes operator or admin (and `storage:admin` when the
/// token is scoped); an expiry is a deferred delete and the trash holds
/// deleted files, so both take what deleting takes.
pub fn grants_of(who: &crate::auth::Principal) -> crate::types::Grants {
    use crate::auth::{Action, Role, Scope};
    let retain = matches!(who.role, Some(Role::Operator | Role::Admin))
        && who
            .scopes
            .as_ref()
            .is_none_or(|s| s.contains(&Scope::StorageAdmin));
    crate::types::Grants {
        retain,
        expire: who.allows(Action::Delete),
        trash: who.allows(Action::Delete),
    }
}

/// Run a synchronous core call on the blocking pool.
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> ApiResult<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

/// All routes. Health and metrics need no token; everything under
/// `/api/v1` does.
pub fn router(state: AppState) -> Router {
    let fs_routes = || get(fs::get).put(fs::put).delete(fs::delete);
    let meta_routes = || get(file_meta::get).patch(file_meta::patch);
    // The original served these without a token; a token adds detail.
    let open = Router::new()
        .route("/", get(health::root))
        .route("/api/v1/info", get(health::info))
        .route("/api/v1/capacity", get(health::capacity))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::optional_token,
        ));
    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi::spec))
        .route("/api/v1/fs", fs_routes())
        .route("/api/v1/fs/", fs_routes())
        .route("/api/v1/fs/{*path}", fs_routes())
        .route("/api/v1/meta", meta_routes())
        .route("/api/v1/meta/", meta_routes())
        .route("/api/v1/meta/{*path}", meta_routes())
        .route("/api/v1/search", get(admin::search))
        .route("/api/v1/mode", axum::routing::post(admin::change_mode))
        .route("/api/v1/cluster", get(cluster::get))
        .route("/api/v1/trash", get(trash::list).delete(trash::empty))
        .route(
            "/api/v1/maintenance/{kind}",
            get(admin::job_status).post(admin::start_job),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_token,
        ));
    // The original's routes: token as above, errors with `detail` too
    // (the outer layer, so the guard's refusals get it as well).
    let original = Router::new()
        .route("/api/v1/files", get(files::list))
        .route("/api/v1/files/", get(files::list))
        .route(
            "/api/v1/files/{file_id}",
            get(files::get).patch(files::patch).delete(files::delete),
        )
        .route("/api/v1/files/{file_id}/download", get(files::download))
        .route(
            "/api/v1/files/upload",
            axum::routing::post(artstore_upload::upload),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_token,
        ))
        .route_layer(middleware::map_response(error::original_shape));
    let public = Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics));
    public
        .merge(open)
        .merge(api)
        .merge(original)
        .fallback(health::no_route)
        .layer(middleware::from_fn({
            let max = state.limits.max_header_bytes;
            move |req, next| head::within_limit(max, req, next)
        }))
        // Outside the routes, so a path no route serves counts as `unmatched`.
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(middleware::map_response(error::json_errors))
        // Outermost but the concurrency cap: whatever answered early, the
        // rest of the body is read before the answer goes out.
        .layer(middleware::from_fn(drain::drain_unread))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            state.limits.max_in_flight.max(1),
        ))
        .with_state(state)
}
