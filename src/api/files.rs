//! The id door, `/api/v1/files/{file_id}`: the same files by their stable
//! id, shaped like the original API (metadata, download, PATCH, DELETE).
//!
//! A file reached by id has no path walked, so only the permission on the
//! file itself is checked (not search permission on its directories).

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::fs::{remove_name, serve_file};
use super::meta::{file_meta, parse_patch, patch_inode, with_etag, MetaChanges, PatchMeta};
use super::path::encode_segment;
use super::{blocking, AppState};
use crate::auth::{Action, Principal};
use crate::core::access::MAY_READ;
use crate::core::types::Kind;
use crate::core::{Attr, Fs};

/// Entries scanned per step when looking for a file's name in its directory.
const SCAN_PAGE: usize = 1024;

/// The inode with this id, or 404 (400 when it is not a UUID).
fn by_id(fs: &Fs, file_id: &str) -> ApiResult<Attr> {
    let id = uuid::Uuid::parse_str(file_id)
        .map_err(|_| ApiError::bad_request("file_id is not a UUID"))?;
    let ino = fs
        .find_by_file_id(&id.hyphenated().to_string())?
        .ok_or_else(|| ApiError::not_found("no file with this id"))?;
    let attr = fs.getattr(ino)?;
    if attr.inode.nlink == 0 {
        // Unlinked (open somewhere) or an upload not yet published.
        return Err(ApiError::not_found("no file with this id"));
    }
    Ok(attr)
}

/// The name of `attr` in its recorded directory: the name it was created
/// under when that still names it, else found by scanning the directory.
fn find_name(fs: &Fs, attr: &Attr) -> ApiResult<(u64, Vec<u8>)> {
    let i = &attr.inode;
    let dir = i.parent;
    if !i.original_name.is_empty() {
        if let Ok(a) = fs.lookup(dir, &i.original_name) {
            if a.inode.ino == i.ino {
                return Ok((dir, i.original_name.clone()));
            }
        }
    }
    let mut cursor = 2;
    loop {
        let page = fs.readdir(dir, cursor, SCAN_PAGE)?;
        let Some(last) = page.last() else { break };
        cursor = last.offset;
        if let Some(e) = page
            .iter()
            .find(|e| e.ino == i.ino && e.name != b"." && e.name != b"..")
        {
            return Ok((dir, e.name.clone()));
        }
        if page.len() < SCAN_PAGE {
            break;
        }
    }
    Err(ApiError::new(
        axum::http::StatusCode::CONFLICT,
        "conflict",
        "the file has no name in its recorded directory (hard links elsewhere only); delete it by path",
    ))
}

/// Metadata of a file by id.
#[utoipa::path(get, path = "/api/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "the file's UUID")),
    responses((status = 200, body = super::meta::FileMeta), (status = 404, body = super::ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(file_id): Path<String>,
) -> ApiResult<Response> {
    who.require(Action::Read)?;
    let caller = st.caller_for(&who);
    let meta = blocking(move || {
        let attr = by_id(&st.fs, &file_id)?;
        st.fs.check_access(&caller, attr.inode.ino, MAY_READ)?;
        file_meta(&st.fs, &attr, None)
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
    let st2 = st.clone();
    let attr = blocking(move || by_id(&st2.fs, &file_id)).await?;
    if attr.inode.kind != Kind::File {
        return Err(ApiError::bad_request("not a regular file"));
    }
    let d = disposition(&attr.inode.original_name);
    let caller = st.caller_for(&who);
    serve_file(st, caller, attr, &headers, Some(d)).await
}

/// Change description, version, content type, retention or custom
/// attributes of a file by id.
#[utoipa::path(patch, path = "/api/v1/files/{file_id}", tag = "files", security(("bearer" = [])),
    params(("file_id" = String, Path, description = "the file's UUID")),
    request_body = PatchMeta,
    responses((status = 200, body = super::meta::FileMeta), (status = 400, body = super::ErrorBody),
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
        let attr = by_id(&st.fs, &file_id)?;
        patch_inode(&st, &caller, &attr, &changes, None)
    })
    .await?;
    Ok(with_etag(meta))
}

/// Delete a file (or empty directory) by id (operator or admin).
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
        let attr = by_id(&st.fs, &file_id)?;
        let (dir, name) = find_name(&st.fs, &attr)?;
        remove_name(&st, &caller, dir, &name)
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
