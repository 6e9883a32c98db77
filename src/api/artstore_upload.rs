//! The original element's upload, `POST /api/v1/files/upload`: a
//! multipart form (`file` plus `description`, `version`, `file_id`,
//! `retention_policy`, `finalize_transaction_id`) stored under a path of
//! artfs's making, `/uploads/YYYY/MM/DD/{stem}_{file_id}{ext}` (UTC), by
//! the core's one upload operation ([`Fs::upload`]): same rules, same
//! atomicity and durability as a PUT. Replies in the original's shape;
//! errors get its `detail` from the route's `original_shape` layer.
//!
//! The form is parsed as it streams (multer): the fields before `file` are
//! known when the file starts, and its content goes to the core on the
//! blocking pool through a small channel, never whole in memory. A form
//! field the upload needs that comes after the file is refused (422):
//! common clients (httpx, requests) send fields first.
//!
//! An error answered before the body is read would break async clients
//! (they see a read error, not the status, so the Ingester's 507 failover
//! never starts): once the upload has its slot, the rest of the body is
//! read first, up to `--api-max-upload` (a 507 of a large file must reach
//! the Ingester too); earlier refusals are left to the `drain` layer.

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::artstore_form::{filename, form_error, text, unprocessable, Form, FIELDS};
use super::artstore_path::stored_at;
use super::error::{ApiError, ApiResult};
use super::uploads::BodyReader;
use super::AppState;
use crate::auth::{Action, Principal};
use crate::core::namespace::NewNode;
use crate::core::{Condition, NewFileId, UploadOptions};
use crate::types::{SetAttr, ROOT_INO};

/// Chunks in flight between the form and the core.
const DEPTH: usize = 4;
/// What a form may carry besides the file's bytes (headers, text fields).
const FORM_SLACK: u64 = 1 << 20;

/// The reply to an upload (201).
#[derive(Debug, Serialize, ToSchema)]
pub struct UploadReply {
    pub file_id: String,
    pub original_filename: String,
    pub file_size: u64,
    /// SHA-256 of the content, hex.
    pub checksum: String,
    pub message: String,
    /// Where the file is on the mount (artfs's addition).
    pub path: String,
}

/// Upload a file the original element's way (multipart form).
#[utoipa::path(post, path = "/api/v1/files/upload", tag = "files", security(("bearer" = [])),
    request_body(content_type = "multipart/form-data",
        description = "`file` (with its filename and content type); optional `description`, `version`, \
                       `file_id` (a UUID), `retention_policy` (temporary|permanent), \
                       `finalize_transaction_id`, all before `file`"),
    responses((status = 201, body = UploadReply),
              (status = 403, description = "the role or the mode forbids writing"),
              (status = 409, description = "a file has this file_id"),
              (status = 413, description = "larger than --api-max-upload"),
              (status = 422, description = "a malformed form or UUID"),
              (status = 507, description = "over capacity")))]
pub async fn upload(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut source = Source {
        reader: BodyReader::new(body, &st.limits),
        read: 0,
        ended: false,
        started: false,
        failure: None,
    };
    match receive(&st, &who, &headers, &mut source).await {
        Ok(reply) => (StatusCode::CREATED, Json(reply)).into_response(),
        Err(e) => {
            // A refusal before the upload took its slot (401, the role,
            // the declared length, not a form, busy) is drained by the
            // layer, up to its smaller bound.
            if source.started {
                source
                    .drain(st.limits.max_upload.saturating_add(FORM_SLACK))
                    .await;
            }
            e.into_response()
        }
    }
}

/// The request body, read by the form parser and, after an error, drained.
struct Source {
    reader: BodyReader,
    read: u64,
    ended: bool,
    /// The upload holds a slot: the whole body may be read.
    started: bool,
    /// Why the body failed (too slow, broken): the answer to give.
    failure: Option<ApiError>,
}

impl Source {
    fn stream(&mut self) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + '_ {
        futures_util::stream::unfold(self, |s| async move {
            if s.ended {
                return None;
            }
            match s.reader.next().await {
                Ok(Some(b)) => {
                    s.read += b.len() as u64;
                    Some((Ok(b), s))
                }
                Ok(None) => {
                    s.ended = true;
                    None
                }
                Err(e) => {
                    s.ended = true;
                    let io = std::io::Error::other(e.message.clone());
                    s.failure = Some(e);
                    Some((Err(io), s))
                }
            }
        })
    }

    /// Read and drop the rest of the body, until `bound` bytes were read
    /// in all (the body's pacing limits apply).
    async fn drain(&mut self, bound: u64) {
        while !self.ended && self.read <= bound {
            match self.reader.next().await {
                Ok(Some(b)) => self.read += b.len() as u64,
                _ => self.ended = true,
            }
        }
    }
}

async fn receive(
    st: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    source: &mut Source,
) -> ApiResult<UploadReply> {
    who.require(Action::Write)?;
    let max = st.limits.max_upload;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max.saturating_add(FORM_SLACK)) {
        return Err(too_large(max));
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(ctype)
        .map_err(|_| unprocessable("the body must be a multipart/form-data form"))?;
    let _slot = st.uploads.admit(&who.sub)?;
    source.started = true;
    let result = {
        let mut form = multer::Multipart::new(source.stream(), boundary);
        read_form(st, who, &mut form).await
    };
    // The body's own failure is the answer, not what it caused.
    result.map_err(|e| source.failure.take().unwrap_or(e))
}

async fn read_form(
    st: &AppState,
    who: &Principal,
    mp: &mut multer::Multipart<'_>,
) -> ApiResult<UploadReply> {
    let mut form = Form::default();
    loop {
        let Some(field) = mp.next_field().await.map_err(form_error)? else {
            return Err(unprocessable("field required: file"));
        };
        match field.name() {
            Some("file") => return store(st, who, form, field, mp).await,
            Some(name) if FIELDS.contains(&name) => {
                let name = name.to_string();
                form.set(&name, text(field).await?)?;
            }
            // Unknown fields are ignored, as the original did.
            _ => {}
        }
    }
}

/// Store the `file` field: the core reads it from a channel on the
/// blocking pool while this task feeds it; then the rest of the form is
/// checked before the content ends, so a refused form publishes nothing.
async fn store(
    st: &AppState,
    who: &Principal,
    form: Form,
    mut field: multer::Field<'_>,
    mp: &mut multer::Multipart<'_>,
) -> ApiResult<UploadReply> {
    let original = filename(&field)?;
    let changes = form.changes(field.content_type().map(|m| m.to_string()))?;
    // New ids are v4, as the original's clients expect in places; one the
    // client chose is looked up (409 when taken), a random one need not be.
    let (file_id, new_id) = match form.file_id {
        Some(id) => {
            let id = id.hyphenated().to_string();
            (id.clone(), NewFileId::Chosen(id))
        }
        None => {
            let id = uuid::Uuid::new_v4().hyphenated().to_string();
            (id.clone(), NewFileId::Made(id))
        }
    };
    let (dir, name, path) = stored_at(&original, &file_id);
    let (tx, rx) = mpsc::channel(DEPTH);
    let caller = st.caller_for(who);
    let opts = UploadOptions {
        // The name holds the id: it exists only if the id does (409).
        condition: Condition::Absent,
        perm: st.file_mode,
        created_by: who.sub.clone(),
        set: changes.set,
        remove: Vec::new(),
        file_id: new_id,
        original_name: Some(original.clone().into_bytes()),
        // As `?mkdir`: each day's directory made as the caller.
        make_dirs: Some(st.dir_mode),
    };
    // Spawned now: it must read while this task feeds it.
    let job = {
        let (st, id) = (st.clone(), file_id.clone());
        tokio::task::spawn_blocking(move || -> ApiResult<(u64, String)> {
            let mut content = ChannelRead { rx, ended: false };
            if let Some((parent, made)) = uploads_root(&st)? {
                st.invalidate_entry(parent, &made);
            }
            let up = st
                .fs
                .upload(&caller, &dir, &name, &mut content, opts)
                .map_err(|e| match e.errno() {
                    libc::EEXIST | libc::ESTALE => ApiError::new(
                        StatusCode::CONFLICT,
                        "conflict",
                        format!("file_id {id} exists"),
                    ),
                    _ => e.into(),
                })?;
            for (parent, made) in &up.made {
                st.invalidate_entry(*parent, made);
            }
            st.invalidate_entry(up.parent, &name);
            let attr = st.fs.getattr(up.ino)?;
            let checksum = st.fs.sha256(up.ino)?.unwrap_or_default();
            up.finish()?;
            Ok((attr.inode.size, checksum))
        })
    };
    let fed = feed(&mut field, &tx, st.limits.max_upload).await;
    drop(field);
    let fed = match fed {
        Ok(true) => rest(mp).await,
        other => other,
    };
    if let Err(e) = &fed {
        // The core discards the upload on a failed read.
        let _ = tx.send(Err(std::io::Error::other(e.message.clone()))).await;
    }
    drop(tx);
    let stored = job
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?;
    fed?;
    let (file_size, checksum) = stored?;
    Ok(UploadReply {
        file_id,
        original_filename: original,
        file_size,
        checksum,
        message: "File uploaded successfully".into(),
        path,
    })
}

/// Send the file's content to the core. `Ok(false)`: the core stopped
/// reading (it failed; its error is the answer).
async fn feed(
    field: &mut multer::Field<'_>,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    max: u64,
) -> ApiResult<bool> {
    let mut total = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(form_error)? {
        total += chunk.len() as u64;
        if total > max {
            return Err(too_large(max));
        }
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The parts after the file: a field the upload uses is refused (it came
/// too late to apply), a second file too; others are ignored.
async fn rest(mp: &mut multer::Multipart<'_>) -> ApiResult<bool> {
    while let Some(field) = mp.next_field().await.map_err(form_error)? {
        match field.name() {
            Some("file") => return Err(unprocessable("only one file per upload")),
            Some(n) if FIELDS.contains(&n) => {
                return Err(unprocessable(format!(
                    "{n} must come before the file in the form"
                )))
            }
            _ => {}
        }
    }
    Ok(true)
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("uploads are limited to {max} bytes"),
    )
}

/// The content as the core reads it: chunks from the form, an error when
/// the form failed, the end when the sender is gone.
struct ChannelRead {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    ended: bool,
}

/// What the core is handed at a time: the parser's pieces are small.
const BATCH: usize = 1 << 20;

/// The form's file part, in batches of the parser's pieces.
impl crate::core::Content for ChannelRead {
    fn next_pieces(&mut self) -> std::io::Result<Option<Vec<Bytes>>> {
        let (mut batch, mut len) = (Vec::new(), 0);
        while len < BATCH && !self.ended {
            match self.rx.blocking_recv() {
                Some(Ok(c)) => {
                    len += c.len();
                    batch.push(c);
                }
                Some(Err(e)) => return Err(e),
                None => self.ended = true,
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

/// A fresh element takes uploads out of the box, as the original did:
/// the daemon makes `/uploads` once, owned by the API's identity (what an
/// administrator would do by hand), so tokens acting as that identity may
/// make the day directories in it. An existing `/uploads` is left as it is
/// (an operator may have chosen other owners or bits). Returns the entry
/// made, for the kernel's cache.
fn uploads_root(st: &AppState) -> ApiResult<Option<(u64, Vec<u8>)>> {
    const NAME: &[u8] = b"uploads";
    match st.fs.lookup(ROOT_INO, NAME) {
        Ok(_) => return Ok(None),
        Err(e) if e.errno() == libc::ENOENT => {}
        Err(e) => return Err(e.into()),
    }
    let root = &st.admin_caller;
    let made = match st
        .fs
        .create_node(root, ROOT_INO, NAME, NewNode::Dir, st.dir_mode, 0)
    {
        Ok(a) => a,
        // Another upload made it meanwhile.
        Err(e) if e.errno() == libc::EEXIST => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let owner = SetAttr {
        uid: Some(st.caller.uid),
        gid: Some(st.caller.gid),
        ..SetAttr::default()
    };
    st.fs.setattr(root, made.inode.ino, &owner)?;
    tracing::info!(
        uid = st.caller.uid,
        gid = st.caller.gid,
        "made /uploads for the original's upload route, owned by the API's identity"
    );
    Ok(Some((ROOT_INO, NAME.to_vec())))
}
