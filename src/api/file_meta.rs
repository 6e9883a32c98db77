//! The metadata door, `GET|PATCH /api/v1/meta/{path}`, and the metadata
//! document shared by every door (shaped like the original API).
//!
//! Metadata lives in extended attributes (DESIGN §5): description, version,
//! content type and retention under `user.artstore.*`; every other `user.*`
//! attribute is a custom attribute whose key is the name without `user.`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::path;
use super::{blocking, AppState};
use crate::auth::{Action, Principal};
use crate::core::access::{MAY_READ, MAY_WRITE};
use crate::core::archive_attrs::{self, Class};
use crate::core::{Attr, Fs};
use crate::types::{Caller, Kind, XATTR_NAME_MAX};

const ARTSTORE: &str = "user.artstore.";

/// A file's (or directory's) metadata.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FileMeta {
    /// Stable identity (UUID); survives rename.
    pub file_id: String,
    /// Path below the mount's root, when reached by path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `chardev`, `blockdev`.
    pub kind: String,
    /// The name the file was created under.
    pub original_filename: String,
    pub file_size: u64,
    /// `user.artstore.content_type`, else guessed from the name (files only).
    pub content_type: Option<String>,
    /// RFC 3339, UTC (`Z`).
    pub created_at: String,
    /// Last change of content or metadata, RFC 3339 UTC.
    pub updated_at: String,
    /// Last change of content, RFC 3339 UTC.
    pub modified_at: String,
    pub created_by: String,
    pub description: Option<String>,
    pub version: Option<String>,
    /// SHA-256 of the content, hex (files only).
    pub checksum: Option<String>,
    pub retention_until: Option<String>,
    /// When the collector removes the file (`user.artstore.expires_at`),
    /// if scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// On a directory: seconds until new files in it expire, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<String>,
    pub custom_attributes: BTreeMap<String, String>,
    /// Permission bits, octal text (`0644`).
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    // The original element's fields (docs/API.md, "Metadata"), so its
    // clients read this document unchanged.
    /// The file's name in its directory, as the caller reaches it (`null`
    /// when reached by no path).
    pub storage_filename: Option<String>,
    /// That directory below the mount's root, with a trailing `/` as the
    /// original's `YYYY/MM/DD/HH/` (empty at the root).
    pub storage_path: Option<String>,
    /// `created_by`, under the original's name: a token's `name` (else
    /// its `sub`) for files made through the API, the local user's name
    /// for files made on the mount.
    pub created_by_username: String,
    /// Always null: artfs keeps no full names.
    pub created_by_fullname: Option<String>,
    /// The original served metadata from a cache of its attr files that
    /// could go stale; artfs's metadata is the database itself, read for
    /// this answer: so the time of the answer, [`CACHE_TTL_HOURS`], and
    /// never expired.
    pub cache_updated_at: String,
    pub cache_ttl_hours: u32,
    pub cache_expired: bool,
}

/// `cache_ttl_hours` of every document: the original's default.
pub const CACHE_TTL_HOURS: u32 = 24;

impl FileMeta {
    /// Fill the original's `storage_path` and `storage_filename` from the
    /// path the caller reaches the file by (`/a/b/c.txt`: `a/b/`, `c.txt`).
    /// The original stored uploads under a date tree of its own; here the
    /// tree is the mount's, which the original's upload route fills by date
    /// too.
    pub fn located(mut self, path: &[u8]) -> FileMeta {
        let path = String::from_utf8_lossy(path);
        let rel = path.trim_start_matches('/');
        let (dir, name) = match rel.rfind('/') {
            Some(i) => (&rel[..=i], &rel[i + 1..]),
            None => ("", rel),
        };
        self.storage_path = Some(dir.to_string());
        self.storage_filename = Some(name.to_string());
        self
    }
}

pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
        Kind::CharDev => "chardev",
        Kind::BlockDev => "blockdev",
    }
}

fn text(v: Vec<u8>) -> String {
    String::from_utf8(v).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The content type of a file: its attribute, else a guess from the name.
pub fn content_type(fs: &Fs, ino: u64, name: &[u8]) -> String {
    if let Ok(v) = fs.getxattr(ino, b"user.artstore.content_type") {
        return text(v);
    }
    mime_guess::from_path(String::from_utf8_lossy(name).as_ref())
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

/// Build the metadata document of `attr` (computes the checksum if unknown).
pub fn file_meta(fs: &Fs, attr: &Attr, path: Option<String>) -> ApiResult<FileMeta> {
    let i = &attr.inode;
    let mut writable: BTreeMap<&str, String> = BTreeMap::new();
    let mut custom = BTreeMap::new();
    let list = fs.listxattr(i.ino)?;
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Some(key) = name.strip_prefix(b"user.") else {
            continue;
        };
        match archive_attrs::classify(name) {
            Class::ReadOnly(_) => {}
            Class::Writable(n) => {
                if let Ok(v) = fs.getxattr(i.ino, name) {
                    writable.insert(n, text(v));
                }
            }
            // An unknown name in the reserved namespace, stored before
            // such names were refused: shown (and removable) as custom.
            Class::Other | Class::Unknown => {
                if let Ok(v) = fs.getxattr(i.ino, name) {
                    custom.insert(text(key.to_vec()), text(v));
                }
            }
        }
    }
    let is_file = i.kind == Kind::File;
    let display_name = if i.original_name.is_empty() {
        b"".as_slice()
    } else {
        &i.original_name
    };
    let content_type = if is_file {
        Some(
            writable
                .get("content_type")
                .cloned()
                .unwrap_or_else(|| content_type(fs, i.ino, display_name)),
        )
    } else {
        None
    };
    let located = path.clone();
    let meta = FileMeta {
        file_id: i.file_id.clone(),
        path,
        kind: kind_name(i.kind).into(),
        original_filename: text(i.original_name.clone()),
        file_size: i.size,
        content_type,
        created_at: i.crtime.to_rfc3339(),
        updated_at: archive_attrs::updated_at(i).to_rfc3339(),
        modified_at: i.mtime.to_rfc3339(),
        created_by: i.created_by.clone(),
        description: writable.remove("description"),
        version: writable.remove("version"),
        checksum: if is_file { fs.sha256(i.ino)? } else { None },
        retention_until: writable.remove("retention_until"),
        expires_at: writable.remove("expires_at"),
        default_ttl: writable.remove("default_ttl"),
        custom_attributes: custom,
        mode: format!("{:04o}", i.perm & 0o7777),
        uid: i.uid,
        gid: i.gid,
        nlink: i.nlink,
        storage_filename: None,
        storage_path: None,
        created_by_username: i.created_by.clone(),
        created_by_fullname: None,
        cache_updated_at: crate::types::Timestamp::now().to_rfc3339(),
        cache_ttl_hours: CACHE_TTL_HOURS,
        cache_expired: false,
    };
    Ok(match located {
        Some(p) => meta.located(p.as_bytes()),
        None => meta,
    })
}

/// Absent stays `None`; `null` is `Some(None)`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Value>>, D::Error> {
    Ok(Some(Option::<Value>::deserialize(d)?))
}

/// A change of metadata. Absent fields stay as they are; `null` removes.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMeta {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<Value>>,
    /// Free text; a number is taken as its text.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub version: Option<Option<Value>>,
    /// A MIME type such as `text/plain`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub content_type: Option<Option<Value>>,
    /// RFC 3339 time (any offset; stored in UTC).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub retention_until: Option<Option<Value>>,
    /// RFC 3339 time at which the collector removes the file; setting it
    /// takes a token that may delete.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<Option<Value>>,
    /// On a directory: seconds until new files in it expire (a number or
    /// its text); setting it takes a token that may delete.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub default_ttl: Option<Option<Value>>,
    /// Custom attributes to set (strings as they are, other JSON values as
    /// their compact text) or, with `null`, to remove. Others are kept.
    #[serde(default, alias = "metadata")]
    #[schema(value_type = Option<Object>)]
    pub custom_attributes: Option<BTreeMap<String, Value>>,
}

/// Parse a PATCH body; malformed JSON or unknown fields are a 400 with a
/// JSON error like every other.
impl PatchMeta {
    /// As the original's `PATCH /api/v1/files/{id}` reads a document: its
    /// request model made `null` the same as absent (pydantic's `None`),
    /// so a `null` there leaves a field, or a custom attribute, as it is.
    /// (artfs's own route keeps `null` = remove.)
    pub fn nulls_unchanged(mut self) -> PatchMeta {
        for f in [
            &mut self.description,
            &mut self.version,
            &mut self.content_type,
            &mut self.retention_until,
            &mut self.expires_at,
            &mut self.default_ttl,
        ] {
            if matches!(f, Some(None)) {
                *f = None;
            }
        }
        if let Some(m) = &mut self.custom_attributes {
            m.retain(|_, v| !v.is_null());
        }
        self
    }
}

pub fn parse_patch(body: &[u8]) -> ApiResult<PatchMeta> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid metadata document: {e}")))
}

/// Attribute changes, checked before any is applied.
#[derive(Debug, Default, Clone)]
pub struct MetaChanges {
    pub set: Vec<(Vec<u8>, Vec<u8>)>,
    pub remove: Vec<Vec<u8>>,
}

impl MetaChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Set (or, with `None`, remove) one of the writable archive fields.
    pub fn field(&mut self, field: &str, value: Option<String>) -> ApiResult<()> {
        let name = format!("{ARTSTORE}{field}").into_bytes();
        match value {
            Some(v) => {
                archive_attrs::validate(field, v.as_bytes())
                    .map_err(|e| ApiError::bad_request(format!("{field}: {e}")))?;
                self.set.push((name, v.into_bytes()));
            }
            None => self.remove.push(name),
        }
        Ok(())
    }

    /// Set (or remove) a custom attribute `key` (stored as `user.<key>`).
    pub fn custom(&mut self, key: &str, value: Option<Vec<u8>>) -> ApiResult<()> {
        let name = format!("user.{key}").into_bytes();
        if key.is_empty() || name.len() > XATTR_NAME_MAX || key.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "custom attribute name {key:?} is empty or too long"
            )));
        }
        match archive_attrs::classify(&name) {
            Class::Other => {}
            // One stored before such names were refused may be removed.
            Class::Unknown if value.is_none() => {}
            Class::Unknown => {
                return Err(ApiError::bad_request(format!(
                    "{key:?} is in the reserved artstore. namespace, not a custom attribute"
                )))
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{key:?} is an archive field, not a custom attribute"
                )))
            }
        }
        if value
            .as_ref()
            .is_some_and(|v| v.len() > crate::types::XATTR_SIZE_MAX)
        {
            return Err(ApiError::bad_request(format!(
                "custom attribute {key:?} is larger than 64 KiB"
            )));
        }
        match value {
            Some(v) => self.set.push((name, v)),
            None => self.remove.push(name),
        }
        Ok(())
    }

    pub fn from_patch(p: PatchMeta) -> ApiResult<MetaChanges> {
        let mut c = MetaChanges::default();
        for (field, v) in [
            ("description", p.description),
            ("version", p.version),
            ("content_type", p.content_type),
            ("retention_until", p.retention_until),
            ("expires_at", p.expires_at),
            ("default_ttl", p.default_ttl),
        ] {
            match v {
                None => {}
                Some(None) => c.field(field, None)?,
                Some(Some(Value::String(s))) => c.field(field, Some(s))?,
                Some(Some(Value::Number(n))) if field == "version" || field == "default_ttl" => {
                    c.field(field, Some(n.to_string()))?
                }
                Some(Some(_)) => {
                    return Err(ApiError::bad_request(format!("{field} must be a string")))
                }
            }
        }
        for (k, v) in p.custom_attributes.unwrap_or_default() {
            let value = match v {
                Value::Null => None,
                Value::String(s) => Some(s.into_bytes()),
                other => Some(other.to_string().into_bytes()),
            };
            c.custom(&k, value)?;
        }
        Ok(c)
    }

    /// Apply to `ino` as `caller` (whose grants the core checks for
    /// retention and expiry), all in one change: a refused attribute (a
    /// shortened retention, say) leaves every other one as it was.
    pub fn apply(&self, fs: &Fs, caller: &Caller, ino: u64) -> ApiResult<()> {
        Ok(fs.update_xattrs(caller, ino, &self.set, &self.remove)?)
    }
}

/// Metadata of the file or directory at a path.
#[utoipa::path(get, path = "/api/v1/meta/{path}", tag = "meta", security(("bearer" = [])),
    params(("path" = String, Path, description = "path below the root, '/'-separated, percent-encoded")),
    responses((status = 200, body = FileMeta), (status = 404, body = super::ErrorBody),
              (status = 403, body = super::ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> ApiResult<Response> {
    who.require(Action::Read)?;
    let p = path::parse(uri.path(), "/api/v1/meta")?;
    let caller = st.caller_for(&who);
    let meta = blocking(move || {
        let attr = p.resolve(&st.fs, &caller)?;
        st.fs.check_access(&caller, attr.inode.ino, MAY_READ)?;
        file_meta(&st.fs, &attr, Some(p.display()))
    })
    .await?;
    Ok(with_etag(meta))
}

/// The metadata document, with the checksum as ETag.
pub fn with_etag(meta: FileMeta) -> Response {
    let etag = meta.checksum.as_ref().map(|c| format!("\"{c}\""));
    let mut resp = Json(meta).into_response();
    if let Some(v) = etag.and_then(|e| e.parse().ok()) {
        resp.headers_mut().insert(axum::http::header::ETAG, v);
    }
    resp
}

/// Change description, version, content type, retention or custom
/// attributes of the file at a path; returns the new metadata.
#[utoipa::path(patch, path = "/api/v1/meta/{path}", tag = "meta", security(("bearer" = [])),
    params(("path" = String, Path, description = "path below the root")),
    request_body = PatchMeta,
    responses((status = 200, body = FileMeta), (status = 400, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody)))]
pub async fn patch(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    body: Bytes,
) -> ApiResult<Response> {
    who.require(Action::Write)?;
    let p = path::parse(uri.path(), "/api/v1/meta")?;
    let changes = MetaChanges::from_patch(parse_patch(&body)?)?;
    let caller = st.caller_for(&who);
    let meta = blocking(move || {
        let attr = p.resolve(&st.fs, &caller)?;
        patch_inode(&st, &caller, &attr, &changes, Some(p.display()))
    })
    .await?;
    Ok(with_etag(meta))
}

/// Check write permission, apply, tell the kernel, return the new metadata.
/// `caller` is the request's identity ([`super::Inner::caller_for`]).
pub fn patch_inode(
    st: &AppState,
    caller: &Caller,
    attr: &Attr,
    changes: &MetaChanges,
    path: Option<String>,
) -> ApiResult<FileMeta> {
    let ino = attr.inode.ino;
    st.fs.check_access(caller, ino, MAY_WRITE)?;
    changes.apply(&st.fs, caller, ino)?;
    if !changes.is_empty() {
        // Durable when answered, as an upload is.
        st.fs.sync_meta()?;
        st.invalidate_inode(ino);
    }
    let attr = st.fs.getattr(ino)?;
    file_meta(&st.fs, &attr, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_fields_come_from_the_path_reached() {
        let doc = FileMeta {
            file_id: String::new(),
            path: None,
            kind: "file".into(),
            original_filename: String::new(),
            file_size: 0,
            content_type: None,
            created_at: String::new(),
            updated_at: String::new(),
            modified_at: String::new(),
            created_by: String::new(),
            description: None,
            version: None,
            checksum: None,
            retention_until: None,
            expires_at: None,
            default_ttl: None,
            custom_attributes: BTreeMap::new(),
            mode: String::new(),
            uid: 0,
            gid: 0,
            nlink: 1,
            storage_filename: None,
            storage_path: None,
            created_by_username: String::new(),
            created_by_fullname: None,
            cache_updated_at: String::new(),
            cache_ttl_hours: CACHE_TTL_HOURS,
            cache_expired: false,
        };
        let at = |p: &[u8]| {
            let d = doc.clone().located(p);
            (d.storage_path.unwrap(), d.storage_filename.unwrap())
        };
        assert_eq!(at(b"/a.txt"), ("".into(), "a.txt".into()));
        assert_eq!(
            at(b"/uploads/2026/12/05/q_1.pdf"),
            ("uploads/2026/12/05/".into(), "q_1.pdf".into())
        );
        // Names that are not UTF-8 are shown lossily, as `path` is.
        assert_eq!(at(b"/d/\xff"), ("d/".into(), "\u{fffd}".into()));
    }

    #[test]
    fn patch_parses_null_as_removal_and_absent_as_keep() {
        let p: PatchMeta = serde_json::from_str(
            r#"{"description": null, "version": 2, "custom_attributes": {"a": "x", "b": null, "n": [1]}}"#,
        )
        .unwrap();
        let c = MetaChanges::from_patch(p).unwrap();
        assert_eq!(
            c.set,
            vec![
                (b"user.artstore.version".to_vec(), b"2".to_vec()),
                (b"user.a".to_vec(), b"x".to_vec()),
                (b"user.n".to_vec(), b"[1]".to_vec()),
            ]
        );
        assert_eq!(
            c.remove,
            vec![b"user.artstore.description".to_vec(), b"user.b".to_vec()]
        );
    }

    #[test]
    fn bad_values_and_reserved_names_are_refused() {
        let bad = |j: &str| {
            serde_json::from_str::<PatchMeta>(j)
                .map_err(|_| ())
                .and_then(|p| MetaChanges::from_patch(p).map_err(|_| ()))
                .is_err()
        };
        assert!(bad(r#"{"retention_until": "soon"}"#));
        assert!(bad(r#"{"content_type": "plain"}"#));
        assert!(bad(r#"{"description": 5}"#));
        assert!(bad(r#"{"custom_attributes": {"artstore.file_id": "x"}}"#));
        assert!(bad(
            r#"{"custom_attributes": {"artstore.descripton": "x"}}"#
        ));
        assert!(!bad(
            r#"{"custom_attributes": {"artstore.descripton": null}}"#
        ));
        assert!(bad(r#"{"expires_at": "tomorrow"}"#));
        assert!(bad(r#"{"default_ttl": 0}"#));
        assert!(!bad(r#"{"default_ttl": 3600, "expires_at": null}"#));
        assert!(bad(r#"{"custom_attributes": {"": "x"}}"#));
        assert!(bad(r#"{"unknown": 1}"#));
        assert!(!bad(r#"{"metadata": {"dept": "x"}}"#));
    }
}
