//! The OpenAPI document, generated from the handlers' annotations
//! (utoipa) and served at `GET /api/v1/openapi.json`.

use axum::extract::Extension;
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::error::ApiResult;
use crate::auth::{Action, Principal};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "artfs HTTP API",
        description = "Authenticated remote access to an artfs store: the same files, rules and \
                       metadata as the mount. Errors are JSON {\"error\": CODE, \"message\": TEXT}; \
                       on the original element's routes (/api/v1/files...) also FastAPI's \
                       \"detail\"."
    ),
    paths(
        super::health::root,
        super::health::live,
        super::health::ready,
        super::health::metrics,
        super::health::info,
        super::cluster::get,
        super::health::capacity,
        spec,
        super::fs::get,
        super::fs::put,
        super::fs::delete,
        super::file_meta::get,
        super::file_meta::patch,
        super::files::list,
        super::files::get,
        super::files::download,
        super::files::patch,
        super::files::delete,
        super::artstore_upload::upload,
        super::admin::search,
        super::admin::change_mode,
        super::admin::start_job,
        super::admin::job_status,
        super::trash::list,
        super::trash::empty,
    ),
    components(schemas(
        super::error::ErrorBody,
        super::file_meta::FileMeta,
        super::file_meta::PatchMeta,
        super::files::FileList,
        super::fs::Listing,
        super::fs::ListEntry,
        super::health::Info,
        super::health::InfoDetail,
        super::health::Capacity,
        super::health::CapacityFigures,
        super::health::CapacityDetail,
        super::admin::SearchPage,
        super::admin::SearchHit,
        super::admin::ModeChange,
        super::admin::Job,
        super::artstore_upload::UploadReply,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "health", description = "liveness, readiness, metrics (no token)"),
        (name = "store", description = "the store's figures"),
        (name = "fs", description = "files and directories by path"),
        (name = "meta", description = "metadata by path"),
        (name = "files", description = "files by stable id, as the original API"),
    )
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "store", security(("bearer" = [])),
    responses((status = 200, description = "the OpenAPI document")))]
pub async fn spec(
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<utoipa::openapi::OpenApi>> {
    who.require(Action::Read)?;
    Ok(Json(ApiDoc::openapi()))
}
