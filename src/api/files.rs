//! The id door, `/api/v1/files/{file_id}`: the same files by their stable
//! id, shaped like the original API (metadata, download, PATCH, DELETE).
//!
//! An id is no shortcut past the directories: a file is served only when
//! the caller can reach it by some path ([`Fs::reach_by_file_id`]: search
//! permission on every directory from the root, `/.trash` only for who may
//! see it), and then read or write permission on the file applies as for
//! the path door. A file the caller cannot reach is 404, as an unknown id,
//! so ids of hidden files are not confirmed.

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::file_meta::{file_meta, parse_patch, patch_inode, with_etag, MetaChanges, PatchMeta};
use super::fs::{remove_name, serve_file};
use super::path::encode_segment;
use super::{blocking, AppState};
use crate::auth::{Action, Principal};
use crate::core::access::{Reach, MAY_READ};
use crate::core::Fs;
use crate::types::{Caller, Kind};

/// How `caller` reaches the file with this id, or 404 (400 when it is not
/// a UUID).
fn by_id(fs: &Fs, caller: &Caller, file_id: &str) -> ApiResult<Reach> {
    let id = uuid::Uuid::parse_str(file_id)
        .map_err(|_| ApiError::bad_request("file_id is not a UUID"))?;
    fs.reach_by_file_id(caller, &id.hyphenated().to_string())?
        .ok_or_else(|| ApiError::not_found("no file with this id"))
}

/// Metadata of a file by id.
#[utoipa::path(get, path = "/api/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "the file's UUID")),
    responses((status = 200, body = super::file_meta::FileMeta), (status = 404, body = super::ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(file_id): Path<String>,
) -> ApiResult<Response> {
    who.require(Action::Read)?;
    let caller = st.caller_for(&who);
    let meta = blocking(move || {
        let reach = by_id(&st.fs, &caller, &file_id)?;
        st.fs
            .check_access(&caller, reach.attr.inode.ino, MAY_READ)?;
        file_meta(&st.fs, &reach.attr, None)
    })
    .await?;
    Ok(with_etag(meta))
}

/// `attachment` with the original filename (ASCII fallback and RFC 5987
/// UTF-8 form).
fn disposition(name: &[u8]) -> String {
    let fallback: String = String::from_utf8_lossy(name)
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{fallback}\"; filename*=UTF-8''{}",
        encode_segment(name)
    )
}

/// Content of a file by id, as an attachment with its original filename
/// (Range and conditional requests as for the path door).
#[utoipa::path(get, path = "/api/v1/files/{file_id}/download", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "the file's UUID")),
    responses((status = 200, description = "the content"), (status = 206, description = "a range"),
              (status = 304, description = "not modified"), (status = 404, body = super::ErrorBody)))]
pub async fn download(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    who.require(Action::Read)?;
    let caller = st.caller_for(&who);
    let (st2, c2) = (st.clone(), caller.clone());
    let attr = blocking(move || Ok(by_id(&st2.fs, &c2, &file_id)?.attr)).await?;
    if attr.inode.kind != Kind::File {
        return Err(ApiError::bad_request("not a regular file"));
    }
    let d = disposition(&attr.inode.original_name);
    // serve_file checks read permission on the file (as the path door).
    serve_file(st, caller, attr, &headers, Some(d)).await
}

/// Change description, version, content type, retention or custom
/// attributes of a file by id.
#[utoipa::path(patch, path = "/api/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "the file's UUID")),
    request_body = PatchMeta,
    responses((status = 200, body = super::file_meta::FileMeta), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)))]
pub async fn patch(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(file_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    who.require(Action::Write)?;
    let changes = MetaChanges::from_patch(parse_patch(&body)?)?;
    let caller = st.caller_for(&who);
    let meta = blocking(move || {
        let reach = by_id(&st.fs, &caller, &file_id)?;
        patch_inode(&st, &caller, &reach.attr, &changes, None)
    })
    .await?;
    Ok(with_etag(meta))
}

/// Delete a file (or empty directory) by id (operator or admin): the name
/// the caller reaches it by (outside the trash first; in the trash, this
/// purges it).
#[utoipa::path(delete, path = "/api/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "the file's UUID")),
    responses((status = 204, description = "deleted"), (status = 403, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(file_id): Path<String>,
) -> ApiResult<Response> {
    who.require(Action::Delete)?;
    let caller = st.caller_for(&who);
    blocking(move || {
        // The name removed is the one the caller reaches the file by.
        let reach = by_id(&st.fs, &caller, &file_id)?;
        if reach.name.is_empty() {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "the root directory cannot be deleted",
            ));
        }
        remove_name(&st, &caller, reach.dir, &reach.name)
    })
    .await?;
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispositions_quote_safely() {
        assert_eq!(
            disposition(b"a b.txt"),
            "attachment; filename=\"a b.txt\"; filename*=UTF-8''a%20b.txt"
        );
        let d = disposition("отчёт \"x\".pdf".as_bytes());
        assert!(d.starts_with("attachment; filename=\"_____ _x_.pdf\"; filename*=UTF-8''%D0%BE"));
    }
}
