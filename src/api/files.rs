//! The id door, `/api/v1/files/{file_id}`: the same files by their stable
//! id, shaped like the original API (metadata, download, PATCH, DELETE).
//!
//! An id is no shortcut past the directories: a file is served only when
//! the caller can reach it by some path ([`Fs::reach_by_file_id`]: search
//! permission on every directory from the root, `/.trash` only for who may
//! see it), and then read or write permission on the file applies as for
//! the path door. A file the caller cannot reach is 404, as an unknown id,
//! so ids of hidden files are not confirmed.
//!
//! The listing, `GET /api/v1/files/`, shows what the caller could read by
//! id, no more (`Fs::list_files_as`).
//!
//! These are the original's routes: their errors carry FastAPI's `detail`
//! too (`error::original_shape`, laid on them in `router`), and a
//! malformed id or parameter is 422 as FastAPI's validation answered.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::file_meta::{
    file_meta, parse_patch, patch_inode, with_etag, FileMeta, MetaChanges, PatchMeta,
};
use super::fs::{remove_name, serve_file};
use super::path::encode_segment;
use super::{blocking, AppState};
use crate::auth::{Action, Principal};
use crate::core::access::{Reach, MAY_READ};
use crate::core::Fs;
use crate::types::{Caller, Kind};

/// How `caller` reaches the file with this id, or 404 (422 when it is not
/// a UUID, as the original's FastAPI validation answered).
/// Any UUID version is an id: artfs makes v7, the original and its
/// clients v4 (docs/API.md, "File ids"); every spelling the `uuid` crate
/// reads (upper case, braces, no hyphens) names the same file.
fn by_id(fs: &Fs, caller: &Caller, file_id: &str) -> ApiResult<Reach> {
    let id = uuid::Uuid::parse_str(file_id).map_err(|_| {
        ApiError::unprocessable(
            &["path", "file_id"],
            "uuid_parsing",
            "Input should be a valid UUID",
            file_id,
        )
    })?;
    let id = id.hyphenated().to_string();
    fs.reach_by_file_id(caller, &id)?
        .ok_or_else(|| ApiError::not_found(format!("File {id} not found")))
}

/// Metadata of a file by id.
#[utoipa::path(get, path = "/api/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "the file's UUID")),
    responses((status = 200, body = super::file_meta::FileMeta), (status = 404, body = super::ErrorBody),
              (status = 422, description = "not a UUID", body = super::ErrorBody)))]
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
        Ok(file_meta(&st.fs, &reach.attr, None)?.located(&reach.path))
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
    // A body that is no metadata document at all is FastAPI's 422; a
    // value the archive's rules refuse stays 400, as on the path door.
    let doc = parse_patch(&body)
        .map_err(|e| ApiError::unprocessable(&["body"], "model_attributes_type", &e.message, ""))?;
    let changes = MetaChanges::from_patch(doc.nulls_unchanged())?;
    let caller = st.caller_for(&who);
    let meta = blocking(move || {
        let reach = by_id(&st.fs, &caller, &file_id)?;
        Ok(patch_inode(&st, &caller, &reach.attr, &changes, None)?.located(&reach.path))
    })
    .await?;
    Ok(with_etag(meta))
}

/// Files on one page of the listing when `limit` is not given, and at
/// most (a larger `limit` is cut to it, as the original did).
pub const LIST_LIMIT: u64 = 100;

/// One page of the original's file listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    /// How many files the caller would see on all pages.
    pub total: u64,
    /// Newest first, each with the path the caller reaches it by.
    pub files: Vec<FileMeta>,
}

/// A listing parameter: absent is `default`; anything but a whole number
/// from 0 up is FastAPI's 422.
fn count_param(q: &HashMap<String, String>, name: &str, default: u64) -> ApiResult<u64> {
    let Some(text) = q.get(name) else {
        return Ok(default);
    };
    let n: i64 = text.trim().parse().map_err(|_| {
        ApiError::unprocessable(
            &["query", name],
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
            text,
        )
    })?;
    u64::try_from(n).map_err(|_| {
        ApiError::unprocessable(
            &["query", name],
            "greater_than_equal",
            "Input should be greater than or equal to 0",
            text,
        )
    })
}

/// The files the caller can read, newest first: `skip` of them left out
/// (default 0), then at most `limit` (default and most 100), with the
/// `total` the caller would see.
#[utoipa::path(get, path = "/api/v1/files/", tag = "files", security(("bearer" = [])),
    params(("skip" = Option<u64>, Query, description = "files left out first (default 0)"),
           ("limit" = Option<u64>, Query, description = "files on the page (default and at most 100)")),
    responses((status = 200, body = FileList),
              (status = 422, description = "skip or limit not a whole number from 0 up", body = super::ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    who.require(Action::Read)?;
    let skip = count_param(&q, "skip", 0)?;
    let limit = count_param(&q, "limit", LIST_LIMIT)?.min(LIST_LIMIT) as usize;
    let caller = st.caller_for(&who);
    let doc = blocking(move || {
        let page = st.fs.list_files_as(&caller, skip, limit)?;
        let mut files = Vec::with_capacity(page.files.len());
        for l in &page.files {
            let path = String::from_utf8_lossy(&l.path).into_owned();
            files.push(file_meta(&st.fs, &l.attr, Some(path))?);
        }
        Ok(FileList {
            total: page.total,
            files,
        })
    })
    .await?;
    Ok(Json(doc).into_response())
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
                StatusCode::FORBIDDEN,
                "forbidden",
                "the root directory cannot be deleted",
            ));
        }
        remove_name(&st, &caller, reach.dir, &reach.name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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
