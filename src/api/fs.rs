//! The path door, `/api/v1/fs/{path}`: GET streams a file (Range,
//! conditional requests) or lists a directory; PUT uploads a whole file
//! atomically (or, with `?mkdir`, makes a directory); DELETE removes a file
//! or an empty directory.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use super::file_meta::{content_type, file_meta, kind_name, with_etag, MetaChanges};
use super::path::{self, encode_segment, ApiPath};
use super::{blocking, AppState};
use crate::auth::{Action, Principal};
use crate::core::access::MAY_READ;
use crate::core::namespace::NewNode;
use crate::core::{Attr, Condition, Fs, NewFileId, UploadOptions};
use crate::types::{Caller, Kind};

const PREFIX: &str = "/api/v1/fs";
/// Bytes read per step when sending a file.
const READ_CHUNK: usize = 1 << 20;
/// Default page of a directory listing.
const DEFAULT_PAGE: usize = 1000;

/// One entry of a directory listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListEntry {
    /// The name (lossy when it is not UTF-8; see `name_encoded`).
    pub name: String,
    /// Percent-encoded name, for names that are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name_encoded: Option<String>,
    pub kind: String,
    pub size: u64,
    pub file_id: String,
    /// RFC 3339 UTC.
    pub modified_at: String,
    /// Cursor that continues the listing after this entry.
    pub cursor: String,
}

/// A page of a directory listing.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listing {
    pub path: String,
    pub entries: Vec<ListEntry>,
    /// Pass as `?cursor=` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Read a file (Range, ETag, If-None-Match, If-Modified-Since) or list a
/// directory (`?cursor=&limit=`).
#[utoipa::path(get, path = "/api/v1/fs/{path}", tag = "fs", security(("bearer" = [])),
    params(("path" = String, Path, description = "path below the root, '/'-separated, percent-encoded"),
           ("cursor" = Option<String>, Query, description = "listing: continue after this cursor"),
           ("limit" = Option<usize>, Query, description = "listing: entries per page (default 1000)")),
    responses((status = 200, description = "file content, or a directory listing", body = Listing),
              (status = 206, description = "the requested range"),
              (status = 304, description = "not modified"),
              (status = 400, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody),
              (status = 416, description = "range not satisfiable", body = super::ErrorBody)))]
pub async fn get(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    who.require(Action::Read)?;
    let p = path::parse(uri.path(), PREFIX)?;
    let caller = st.caller_for(&who);
    let cond = Conditions::of(&headers);
    let (st2, c2, p2) = (st.clone(), caller.clone(), p.clone());
    // One trip to the blocking pool for a file: resolve, check, open, and
    // for a small file read and release too (each trip costs a thread
    // handoff, which at 32 clients was most of a small GET's time).
    let found = blocking(move || {
        let attr = p2.resolve(&st2.fs, &c2)?;
        match attr.inode.kind {
            Kind::Dir => Ok(Found::Dir(attr)),
            Kind::File => {
                let mut attr = attr;
                let since = std::time::Instant::now();
                loop {
                    let tried = attr.inode.ino;
                    match prepare_file(&st2, &c2, attr, &cond, None) {
                        // Replaced (and reclaimed) between the lookup and
                        // the open: look again and serve the newer file.
                        // Under a burst of replacements that one may go
                        // too: again while the name keeps naming newer
                        // files (a name that is replaced never stops
                        // existing), for a while.
                        Err(e)
                            if e.status == StatusCode::NOT_FOUND
                                && since.elapsed() < REOPEN_FOR =>
                        {
                            attr = p2.resolve(&st2.fs, &c2)?;
                            if attr.inode.kind != Kind::File || attr.inode.ino == tried {
                                return Err(e);
                            }
                        }
                        r => return Ok(Found::File(r?)),
                    }
                }
            }
            _ => Err(ApiError::bad_request(
                "not a regular file or directory (symbolic links are not followed)",
            )),
        }
    })
    .await?;
    match found {
        Found::Dir(attr) => list(st, caller, attr, p, &q).await,
        Found::File(resp) => Ok(resp),
    }
}

/// How long a GET goes on opening the file its path names when each one
/// it found was replaced and reclaimed before it could open it.
const REOPEN_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// What one GET found: a directory to list, or a file's response.
enum Found {
    Dir(Attr),
    File(Response),
}

/// A `?cursor=` of a listing or a search: absent or empty is the start;
/// otherwise a decimal number below 2^63 (what the server hands out).
/// Anything else (negative, too large, not a number) is 400, never the
/// first page again, so a client following cursors cannot loop.
pub fn parse_cursor(raw: Option<&str>) -> ApiResult<u64> {
    let c = match raw {
        None | Some("") => return Ok(0),
        Some(c) => c,
    };
    if !c.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(
            "cursor is not one this server gave (a decimal number)",
        ));
    }
    match c.parse::<u64>() {
        Ok(n) if n <= i64::MAX as u64 => Ok(n),
        _ => Err(ApiError::bad_request("cursor out of range (0 to 2^63-1)")),
    }
}

async fn list(
    st: AppState,
    caller: Caller,
    dir: Attr,
    p: ApiPath,
    q: &HashMap<String, String>,
) -> ApiResult<Response> {
    let cursor = parse_cursor(q.get("cursor").map(String::as_str))?;
    let limit = match q.get("limit") {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ApiError::bad_request("limit must be a positive integer"))?,
    }
    .min(st.limits.max_list_page);
    let listing = blocking(move || {
        let ino = dir.inode.ino;
        st.fs.check_access(&caller, ino, MAY_READ)?;
        // Cookies 1 and 2 are "." and "..": start after them.
        let mut entries = st.fs.readdir(ino, cursor.max(2), limit + 1)?;
        entries.retain(|e| e.name != b"." && e.name != b"..");
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next_cursor = if more {
            entries.last().map(|e| e.offset.to_string())
        } else {
            None
        };
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            // An entry removed since the listing is simply left out.
            let Ok(a) = st.fs.getattr(e.ino) else {
                continue;
            };
            let utf8 = std::str::from_utf8(&e.name).is_ok();
            out.push(ListEntry {
                name: String::from_utf8_lossy(&e.name).into_owned(),
                name_encoded: (!utf8).then(|| encode_segment(&e.name)),
                kind: kind_name(a.inode.kind).into(),
                size: a.inode.size,
                file_id: a.inode.file_id.clone(),
                modified_at: a.inode.mtime.to_rfc3339(),
                cursor: e.offset.to_string(),
            });
        }
        Ok(Listing {
            path: p.display(),
            entries: out,
            next_cursor,
        })
    })
    .await?;
    Ok(Json(listing).into_response())
}

/// How two entity tags are compared (RFC 9110 8.8.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compare {
    /// `If-None-Match`: `W/"x"` matches `"x"`.
    Weak,
    /// `If-Match`: a weak tag never matches (ours are all strong).
    Strong,
}

/// Whether an `If-None-Match` / `If-Match` list names `etag` (or is `*`).
fn etag_listed(list: &str, etag: Option<&str>, how: Compare) -> bool {
    list.split(',').map(str::trim).any(|t| {
        t == "*"
            || etag.is_some_and(|e| match t.strip_prefix("W/") {
                Some(weak) => how == Compare::Weak && weak == e,
                None => t == e,
            })
    })
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// Whole seconds, as HTTP dates carry.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A byte range to send: `start..start+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub len: u64,
}

/// Parse a `Range` header against a file of `size` bytes. `Ok(None)`: send
/// the whole file (no header, another unit, several ranges or bad
/// syntax, which RFC 9110 lets a server ignore). `Err(())`: not
/// satisfiable (416).
pub fn parse_range(value: &str, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix: the last n bytes.
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || size == 0 {
            return Err(());
        }
        let n = n.min(size);
        return Ok(Some(ByteRange {
            start: size - n,
            len: n,
        }));
    }
    let Ok(start) = a.parse::<u64>() else {
        return Ok(None);
    };
    let end = if b.is_empty() {
        None
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => Some(e),
            _ => return Ok(None),
        }
    };
    if start >= size {
        return Err(());
    }
    let last = end.map_or(size - 1, |e| e.min(size - 1));
    Ok(Some(ByteRange {
        start,
        len: last - start + 1,
    }))
}

/// An open read handle, released when the response body is done or
/// dropped (or at once with [`ReadHandle::release_now`]).
struct ReadHandle {
    fs: Arc<Fs>,
    fh: u64,
    /// The object file the handle reads (the core opened it).
    file: Arc<std::fs::File>,
    /// Its fetch, while a remote store's copy is not whole: each read
    /// waits for its bytes.
    fetch: Option<Arc<dyn crate::blob::Filling>>,
    released: bool,
}

impl ReadHandle {
    /// Release on this thread (already on the blocking pool).
    fn release_now(mut self) {
        self.released = true;
        if let Err(e) = self.fs.release(self.fh) {
            tracing::warn!(fh = self.fh, error = %e, "could not release an API handle");
        }
    }
}

impl Drop for ReadHandle {
    fn drop(&mut self) {
        if !self.released {
            release_later(self.fs.clone(), self.fh);
        }
    }
}

/// Release a handle off the async threads when there is a runtime.
fn release_later(fs: Arc<Fs>, fh: u64) {
    let release = move || {
        if let Err(e) = fs.release(fh) {
            tracing::warn!(fh, error = %e, "could not release an API handle");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(release);
        }
        Err(_) => release(),
    }
}

/// Fill `buf` from `pos` of a body's file, once a copy being fetched has
/// those bytes; a file that shrank while being sent is an error, never a
/// short body.
fn read_body_at(
    file: &std::fs::File,
    fetch: Option<&dyn crate::blob::Filling>,
    pos: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    if let Some(f) = fetch {
        f.wait(pos..pos.saturating_add(buf.len() as u64))?;
    }
    file.read_exact_at(buf, pos).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(e.kind(), "the file shrank while being sent")
        } else {
            e
        }
    })
}

/// Read exactly `len` bytes at `pos` (see [`read_body_at`]).
fn read_exact_at(
    file: &std::fs::File,
    fetch: Option<&dyn crate::blob::Filling>,
    pos: u64,
    len: usize,
) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    read_body_at(file, fetch, pos, &mut buf)?;
    Ok(Bytes::from(buf))
}

/// Buffers of large bodies' pieces, given back once hyper has sent them:
/// a fresh buffer is zeroed before each read (that memset was 4% of a warm
/// download's time).
static PIECE_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());
/// Buffers kept for reuse (each READ_CHUNK bytes).
const KEPT_PIECE_BUFFERS: usize = 16;

/// A piece of a body in a buffer that goes back to [`PIECE_BUFFERS`].
struct Piece(Vec<u8>);

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() == READ_CHUNK {
            if let Ok(mut kept) = PIECE_BUFFERS.lock() {
                if kept.len() < KEPT_PIECE_BUFFERS {
                    // Zeroes only what a short last piece left out.
                    buf.resize(READ_CHUNK, 0);
                    kept.push(buf);
                }
            }
        }
    }
}

/// [`read_exact_at`] of at most READ_CHUNK bytes into a reused buffer.
fn read_piece(
    file: &std::fs::File,
    fetch: Option<&dyn crate::blob::Filling>,
    pos: u64,
    len: usize,
) -> std::io::Result<Bytes> {
    let kept = PIECE_BUFFERS.lock().ok().and_then(|mut k| k.pop());
    let mut buf = kept.unwrap_or_else(|| vec![0u8; READ_CHUNK]);
    let len = len.min(buf.len());
    read_body_at(file, fetch, pos, &mut buf[..len])?;
    buf.truncate(len);
    Ok(Bytes::from_owner(Piece(buf)))
}

/// At most this many large bodies at once are read ahead by a thread of
/// their own (each holds one blocking-pool thread while its client
/// reads); the others are read a chunk at a time.
const READ_AHEAD_STREAMS: usize = 32;
/// Chunks read ahead of what the client has taken.
const READ_AHEAD_CHUNKS: usize = 4;
/// Bytes the kernel is asked to read from disk ahead of the reads.
const READ_AHEAD_DISK: u64 = 16 << 20;

static READ_AHEAD: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_STREAMS)));

/// The body of a large response. The object file is read directly (the
/// handle keeps it open and registered with the core), in large chunks,
/// by one blocking thread that stays a few chunks ahead of the socket, so
/// the disk (cold) or the page-cache copy (warm) overlaps with sending. A
/// remote store's copy still being fetched is sent as its bytes come.
///
/// Nothing is read before the body is first polled: a HEAD request (whose
/// body is dropped unsent) reads nothing.
fn body_of(handle: ReadHandle, range: ByteRange) -> Body {
    use futures_util::StreamExt;
    let start = async move {
        match READ_AHEAD.clone().try_acquire_owned() {
            Ok(permit) => read_ahead(handle, range, permit).left_stream(),
            Err(_) => by_steps(handle, range).right_stream(),
        }
    };
    Body::from_stream(futures_util::stream::once(start).flatten())
}

/// The pieces of `range`, read by a blocking thread of their own.
fn read_ahead(
    handle: ReadHandle,
    range: ByteRange,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(READ_AHEAD_CHUNKS);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*handle.file);
        let end = range.start + range.len;
        // Ask the kernel to read ahead (asynchronously) the next
        // READ_AHEAD_DISK bytes: a cold file's reads then find the disk
        // already at work on them, while this thread copies and the
        // runtime sends.
        // SAFETY: plain syscalls on a descriptor the handle keeps open.
        let will_need = |from: u64, len: u64| unsafe {
            let len = len.min(end.saturating_sub(from));
            if len > 0 {
                libc::posix_fadvise(fd, from as i64, len as i64, libc::POSIX_FADV_WILLNEED);
            }
        };
        // SAFETY: as above.
        unsafe {
            libc::posix_fadvise(
                fd,
                range.start as i64,
                range.len as i64,
                libc::POSIX_FADV_SEQUENTIAL,
            );
        }
        will_need(range.start, READ_AHEAD_DISK);
        let (mut pos, mut left) = (range.start, range.len);
        while left > 0 {
            let n = left.min(READ_CHUNK as u64) as usize;
            will_need(pos + READ_AHEAD_DISK, n as u64);
            let chunk = read_piece(&handle.file, handle.fetch.as_deref(), pos, n);
            let failed = chunk.is_err();
            // The client went away: stop reading.
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
            pos += n as u64;
            left -= n as u64;
        }
        handle.release_now();
    });
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The pieces of `range` without a thread of their own: one blocking step
/// per piece.
fn by_steps(
    handle: ReadHandle,
    range: ByteRange,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    futures_util::stream::try_unfold(
        (handle, range.start, range.len),
        |(h, pos, left)| async move {
            if left == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            let n = left.min(READ_CHUNK as u64) as usize;
            let (file, fetch) = (h.file.clone(), h.fetch.clone());
            let data =
                tokio::task::spawn_blocking(move || read_piece(&file, fetch.as_deref(), pos, n))
                    .await
                    .map_err(std::io::Error::other)??;
            Ok(Some((data, (h, pos + n as u64, left - n as u64))))
        },
    )
}

/// The request headers a file GET looks at, owned (for the blocking pool).
#[derive(Clone, Default)]
pub struct Conditions {
    if_match: Option<String>,
    if_unmodified_since: Option<String>,
    if_none_match: Option<String>,
    if_modified_since: Option<String>,
    if_range: Option<String>,
    range: Option<String>,
}

impl Conditions {
    pub fn of(headers: &HeaderMap) -> Conditions {
        let hdr = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Conditions {
            if_match: hdr(header::IF_MATCH),
            if_unmodified_since: hdr(header::IF_UNMODIFIED_SINCE),
            if_none_match: hdr(header::IF_NONE_MATCH),
            if_modified_since: hdr(header::IF_MODIFIED_SINCE),
            if_range: hdr(header::IF_RANGE),
            range: hdr(header::RANGE),
        }
    }
}

/// Send a regular file's content, honouring conditional and range
/// requests. `disposition`: a `Content-Disposition` value (downloads).
pub async fn serve_file(
    st: AppState,
    caller: Caller,
    attr: Attr,
    headers: &HeaderMap,
    disposition: Option<String>,
) -> ApiResult<Response> {
    let cond = Conditions::of(headers);
    blocking(move || prepare_file(&st, &caller, attr, &cond, disposition)).await
}

/// Bodies at most this long are read while answering (on the blocking
/// pool, with the handle released there too); longer ones stream.
const READ_AT_ONCE: u64 = 64 << 10;

/// [`serve_file`] on the blocking pool: the access check, the
/// preconditions, the open and, for a small file, the read and the
/// release, in one step. The response's body streams a large file.
pub fn prepare_file(
    st: &AppState,
    caller: &Caller,
    attr: Attr,
    cond: &Conditions,
    disposition: Option<String>,
) -> ApiResult<Response> {
    let ino = attr.inode.ino;
    st.fs.check_access(caller, ino, MAY_READ)?;
    let sha = st.fs.sha256(ino)?;
    let ctype = content_type(&st.fs, ino, &attr.inode.original_name);
    let etag = sha.map(|s| format!("\"{s}\""));
    let mtime = attr.inode.mtime.to_system();
    let last_modified = http_date(mtime);

    // RFC 9110 13.2.2: If-Match (strong comparison), else
    // If-Unmodified-Since, decides first: 412 when it fails.
    let precondition_holds = match cond.if_match.as_deref() {
        Some(list) => etag_listed(list, etag.as_deref(), Compare::Strong),
        None => cond
            .if_unmodified_since
            .as_deref()
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_none_or(|since| secs(mtime) <= secs(since)),
    };
    if !precondition_holds {
        return Err(ApiError::precondition_failed(
            "the current file does not match If-Match / If-Unmodified-Since",
        ));
    }
    // Conditional GET: If-None-Match wins over If-Modified-Since.
    let not_modified = match cond.if_none_match.as_deref() {
        Some(list) => etag_listed(list, etag.as_deref(), Compare::Weak),
        None => cond
            .if_modified_since
            .as_deref()
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| secs(mtime) <= secs(since)),
    };
    if not_modified {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        let h = resp.headers_mut();
        if let Some(e) = etag.as_deref().and_then(|e| HeaderValue::from_str(e).ok()) {
            h.insert(header::ETAG, e);
        }
        if let Ok(v) = HeaderValue::from_str(&last_modified) {
            h.insert(header::LAST_MODIFIED, v);
        }
        return Ok(resp);
    }

    // Open, then take the size the handle sees. Streamed: a large file
    // of a remote store is sent while it is fetched (reads wait on it).
    let h = st.fs.open_streamed(caller, ino, libc::O_RDONLY)?;
    let handle = ReadHandle {
        fs: st.fs.clone(),
        fh: h.fh,
        file: h.file.clone(),
        fetch: h.fetch().cloned(),
        released: false,
    };
    if h.changed != crate::core::OpenChange::Nothing {
        st.invalidate_inode(ino);
    }
    drop(h);
    let size = match st.fs.getattr(ino) {
        Ok(a) => a.inode.size,
        Err(e) => {
            handle.release_now();
            return Err(e.into());
        }
    };

    // If-Range: the range only applies to the representation named.
    let range_applies = match cond.if_range.as_deref() {
        None => true,
        Some(v) if v.starts_with('"') => etag.as_deref() == Some(v.trim()),
        Some(v) => httpdate::parse_http_date(v).is_ok_and(|d| secs(d) == secs(mtime)),
    };
    let range = match cond.range.as_deref().filter(|_| range_applies) {
        None => None,
        Some(r) => match parse_range(r, size) {
            Ok(r) => r,
            Err(()) => {
                handle.release_now();
                return Err(ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "range_not_satisfiable",
                    format!("the file has {size} bytes"),
                )
                .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
            }
        },
    };
    let (status, span) = match range {
        Some(r) => (StatusCode::PARTIAL_CONTENT, r),
        None => (
            StatusCode::OK,
            ByteRange {
                start: 0,
                len: size,
            },
        ),
    };
    let body = if span.len <= READ_AT_ONCE {
        let data = read_exact_at(
            &handle.file,
            handle.fetch.as_deref(),
            span.start,
            span.len as usize,
        );
        handle.release_now();
        Body::from(data.map_err(|e| ApiError::internal(e.to_string()))?)
    } else {
        body_of(handle, span)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    set(header::CONTENT_TYPE, &ctype);
    set(header::CONTENT_LENGTH, &span.len.to_string());
    set(header::ACCEPT_RANGES, "bytes");
    set(header::LAST_MODIFIED, &last_modified);
    if let Some(e) = &etag {
        set(header::ETAG, e);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            header::CONTENT_RANGE,
            &format!(
                "bytes {}-{}/{size}",
                span.start,
                span.start + span.len.saturating_sub(1)
            ),
        );
    }
    set(
        header::HeaderName::from_static("x-artfs-file-id"),
        &attr.inode.file_id,
    );
    if let Some(d) = disposition {
        set(header::CONTENT_DISPOSITION, &d);
    }
    Ok(resp)
}

/// Upload a whole file (created or atomically replaced), or make a
/// directory with `?mkdir`.
#[utoipa::path(put, path = "/api/v1/fs/{path}", tag = "fs", security(("bearer" = [])),
    params(("path" = String, Path, description = "path of the file to create or replace"),
           ("mkdir" = Option<String>, Query, description = "present: make a directory instead"),
           ("If-Match" = Option<String>, Header, description = "replace only if the current ETag is one of these"),
           ("If-None-Match" = Option<String>, Header, description = "`*`: create only, never replace"),
           ("X-Artfs-Description" = Option<String>, Header, description = "description to record"),
           ("X-Artfs-Version" = Option<String>, Header, description = "version to record"),
           ("X-Artfs-Retention-Until" = Option<String>, Header, description = "retention time, RFC 3339"),
           ("X-Artfs-Attr-{name}" = Option<String>, Header, description = "custom attribute `name` (lowercase)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the file's content, streamed"),
    responses((status = 201, description = "created", body = super::file_meta::FileMeta),
              (status = 200, description = "replaced", body = super::file_meta::FileMeta),
              (status = 400, body = super::ErrorBody), (status = 403, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody),
              (status = 412, body = super::ErrorBody), (status = 413, body = super::ErrorBody),
              (status = 503, description = "too many uploads at once", body = super::ErrorBody),
              (status = 507, body = super::ErrorBody)))]
pub async fn put(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    who.require(Action::Write)?;
    let p = path::parse(uri.path(), PREFIX)?;
    if p.is_root() {
        return Err(ApiError::bad_request(
            "the root directory cannot be replaced",
        ));
    }
    if q.contains_key("mkdir") {
        return mkdir(st, who, p).await;
    }
    if p.dir_only {
        return Err(ApiError::bad_request(
            "a path ending in '/' names a directory: no file can be uploaded there",
        ));
    }
    upload(st, who, p, headers, body).await
}

async fn mkdir(st: AppState, who: Principal, p: ApiPath) -> ApiResult<Response> {
    let caller = st.caller_for(&who);
    let meta = blocking(move || {
        let (parent, name) = p.split_last().expect("not the root");
        let dir = st.fs.walk(&caller, parent)?;
        st.fs.check_dir_change(&caller, dir.inode.ino, None)?;
        let attr = st
            .fs
            .create_node(&caller, dir.inode.ino, name, NewNode::Dir, st.dir_mode, 0)?;
        st.fs.sync_meta()?;
        st.invalidate_entry(dir.inode.ino, name);
        file_meta(&st.fs, &attr, Some(p.display()))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(meta)).into_response())
}

/// What the client's preconditions ask of the name.
enum Precondition {
    Any,
    /// `If-None-Match: *`.
    Absent,
    /// `If-None-Match` with ETags: fail if the current one is listed.
    NoneOf(String),
    /// `If-Match`: the current file's ETag is listed (or `*`: any file).
    OneOf(String),
}

fn precondition(headers: &HeaderMap) -> ApiResult<Precondition> {
    let get = |n: header::HeaderName| -> ApiResult<Option<String>> {
        headers
            .get(n)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| ApiError::bad_request("conditional header is not ASCII"))
            })
            .transpose()
    };
    match (get(header::IF_MATCH)?, get(header::IF_NONE_MATCH)?) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "give If-Match or If-None-Match, not both",
        )),
        (Some(m), None) => Ok(Precondition::OneOf(m)),
        (None, Some(n)) if n.trim() == "*" => Ok(Precondition::Absent),
        (None, Some(n)) => Ok(Precondition::NoneOf(n)),
        (None, None) => Ok(Precondition::Any),
    }
}

/// Metadata sent with an upload as headers.
fn header_changes(headers: &HeaderMap) -> ApiResult<MetaChanges> {
    let mut c = MetaChanges::default();
    let utf8 = |name: &str, v: &HeaderValue| -> ApiResult<String> {
        String::from_utf8(v.as_bytes().to_vec())
            .map_err(|_| ApiError::bad_request(format!("header {name} is not UTF-8")))
    };
    for (name, value) in headers {
        let n = name.as_str();
        let field = match n {
            "x-artfs-description" => Some("description"),
            "x-artfs-version" => Some("version"),
            "x-artfs-retention-until" => Some("retention_until"),
            "x-artfs-content-type" => Some("content_type"),
            _ => None,
        };
        if let Some(f) = field {
            c.field(f, Some(utf8(n, value)?))?;
        } else if let Some(key) = n.strip_prefix("x-artfs-attr-") {
            c.custom(key, Some(value.as_bytes().to_vec()))?;
        }
    }
    // The request's own Content-Type, unless it is a transport default
    // that says nothing about the file.
    if !headers.contains_key("x-artfs-content-type") {
        if let Some(ct) = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let generic = [
                "application/octet-stream",
                "application/x-www-form-urlencoded",
                "multipart/form-data",
            ];
            if !essence.is_empty() && !generic.contains(&essence.as_str()) {
                c.field("content_type", Some(ct.trim().to_string()))?;
            }
        }
    }
    Ok(c)
}

/// PUT of a file: parse the request, then let the core upload the body
/// (read on the blocking pool) in one operation.
async fn upload(
    st: AppState,
    who: Principal,
    p: ApiPath,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let max = st.limits.max_upload;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large(max));
    }
    let slot = st.uploads.admit(&who.sub)?;
    let condition = condition(precondition(&headers)?);
    let changes = header_changes(&headers)?;
    let caller = st.caller_for(&who);
    let opts = UploadOptions {
        condition,
        perm: st.file_mode,
        created_by: who.creator().to_string(),
        set: changes.set,
        remove: changes.remove,
        file_id: NewFileId::Fresh,
        original_name: None,
        make_dirs: None,
    };
    let mut content = BodyRead::new(body, &st.limits);
    // The upload runs to its end even if the client goes away meanwhile
    // (the body then fails, and the core discards the upload), holding
    // its slot until then.
    let (meta, replaced) = blocking(move || {
        let _slot = slot;
        let (dir, name) = p.split_last().expect("not the root");
        let up = match st.fs.upload(&caller, dir, name, &mut content, opts) {
            Ok(up) => up,
            // The body's own failure is the answer, not the error it
            // caused in the core.
            Err(e) => return Err(content.failure.take().unwrap_or_else(|| e.into())),
        };
        st.invalidate_entry(up.parent, name);
        if let Some(old) = up.replaced {
            st.invalidate_inode(old);
        }
        // Describe the file while the upload keeps it open: a concurrent
        // upload may replace it the moment it is published.
        let attr = st.fs.getattr(up.ino)?;
        let meta = file_meta(&st.fs, &attr, Some(p.display()))?;
        let replaced = up.replaced.is_some();
        up.finish()?;
        Ok((meta, replaced))
    })
    .await?;
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut resp = with_etag(meta);
    *resp.status_mut() = status;
    Ok(resp)
}

/// An upload's body as the core's content, taken on the blocking pool.
/// What ends it early (too large, too slow, broken) is kept as the
/// answer to give, and reaches the core as an I/O error.
///
/// The body is taken off the connection by a task of its own that
/// gathers hyper's pieces (at most its read buffer, `head::READ_BUFFER`)
/// into batches of [`UPLOAD_BATCH`] bytes, without copying them,
/// and keeps a few batches ahead of the core: the socket is read while the
/// core hashes and writes, and the blocking thread is woken once per batch
/// rather than per piece; the core writes and hashes the pieces where
/// they are.
struct BodyRead {
    rx: tokio::sync::mpsc::Receiver<ApiResult<Vec<Bytes>>>,
    ended: bool,
    failure: Option<ApiError>,
}

/// What the body task gathers before handing it to the core.
const UPLOAD_BATCH: usize = 1 << 20;
/// Batches gathered ahead of the core.
const UPLOAD_AHEAD: usize = 4;

impl BodyRead {
    /// Must be made on the runtime (its task reads the body there).
    fn new(body: Body, limits: &super::settings::Limits) -> BodyRead {
        let mut reader = super::uploads::BodyReader::new(body, limits);
        let max = limits.max_upload;
        let (tx, rx) = tokio::sync::mpsc::channel(UPLOAD_AHEAD);
        tokio::spawn(async move {
            let mut total = 0u64;
            let (mut batch, mut batched) = (Vec::new(), 0usize);
            loop {
                // The core stopped reading (it failed, or is done): the
                // body is let go at once, as it was when read directly.
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    next = reader.next() => next,
                };
                let (item, last) = match next {
                    Ok(Some(c)) => {
                        total += c.len() as u64;
                        if total > max {
                            (Err(too_large(max)), true)
                        } else {
                            batched += c.len();
                            batch.push(c);
                            if batched < UPLOAD_BATCH {
                                continue;
                            }
                            batched = 0;
                            (Ok(std::mem::take(&mut batch)), false)
                        }
                    }
                    Ok(None) if batch.is_empty() => return,
                    Ok(None) => (Ok(std::mem::take(&mut batch)), true),
                    Err(e) => (Err(e), true),
                };
                if tx.send(item).await.is_err() || last {
                    return;
                }
            }
        });
        BodyRead {
            rx,
            ended: false,
            failure: None,
        }
    }
}

impl crate::core::Content for BodyRead {
    fn next_pieces(&mut self) -> std::io::Result<Option<Vec<Bytes>>> {
        if self.ended {
            return Ok(None);
        }
        match self.rx.blocking_recv() {
            Some(Ok(batch)) => Ok(Some(batch)),
            None => {
                self.ended = true;
                Ok(None)
            }
            Some(Err(e)) => {
                let io = std::io::Error::other(e.message.clone());
                self.failure = Some(e);
                Err(io)
            }
        }
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("uploads are limited to {max} bytes"),
    )
}

/// The client's preconditions as the core's condition; entity tags are
/// compared here (our ETag is the checksum, quoted).
fn condition(pre: Precondition) -> Condition {
    let quoted = |sha: Option<&str>| sha.map(|s| format!("\"{s}\""));
    match pre {
        Precondition::Any => Condition::Any,
        Precondition::Absent => Condition::Absent,
        Precondition::NoneOf(list) => Condition::NoneOf(Box::new(move |sha| {
            etag_listed(&list, quoted(sha).as_deref(), Compare::Weak)
        })),
        Precondition::OneOf(list) => Condition::OneOf(Box::new(move |sha| {
            etag_listed(&list, quoted(sha).as_deref(), Compare::Strong)
        })),
    }
}

/// Delete a file or an empty directory (operator or admin).
#[utoipa::path(delete, path = "/api/v1/fs/{path}", tag = "fs", security(("bearer" = [])),
    params(("path" = String, Path, description = "path of the file or empty directory")),
    responses((status = 204, description = "deleted"), (status = 403, body = super::ErrorBody),
              (status = 404, body = super::ErrorBody), (status = 409, description = "directory not empty", body = super::ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    Extension(who): Extension<Principal>,
    uri: Uri,
) -> ApiResult<Response> {
    who.require(Action::Delete)?;
    let p = path::parse(uri.path(), PREFIX)?;
    if p.is_root() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the root directory cannot be deleted",
        ));
    }
    let caller = st.caller_for(&who);
    blocking(move || {
        let (parent, name) = p.split_last().expect("not the root");
        let dir = st.fs.walk(&caller, parent)?;
        if !dir.inode.kind.is_dir() {
            return Err(crate::types::error::enotdir().into());
        }
        if p.dir_only && !st.fs.lookup(dir.inode.ino, name)?.inode.kind.is_dir() {
            return Err(crate::types::error::enotdir().into());
        }
        remove_name(&st, &caller, dir.inode.ino, name)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Remove `name` from directory `dir` (unlink, or rmdir for a directory)
/// with the permission rules, and tell the kernel.
pub fn remove_name(
    st: &AppState,
    caller: &crate::types::Caller,
    dir: u64,
    name: &[u8],
) -> ApiResult<()> {
    let victim = st.fs.lookup(dir, name)?;
    st.fs
        .check_dir_change(caller, dir, Some(victim.inode.ino))?;
    if victim.inode.kind.is_dir() {
        st.fs.rmdir(caller, dir, name)?;
    } else {
        st.fs.unlink(caller, dir, name)?;
    }
    // Durable when answered, as an upload is.
    st.fs.sync_meta()?;
    st.invalidate_entry(dir, name);
    st.invalidate_inode(victim.inode.ino);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s: &str, size| parse_range(s, size);
        let br = |start, len| Ok(Some(ByteRange { start, len }));
        assert_eq!(r("bytes=0-9", 100), br(0, 10));
        assert_eq!(r("bytes=90-", 100), br(90, 10));
        assert_eq!(r("bytes=90-200", 100), br(90, 10));
        assert_eq!(r("bytes=-10", 100), br(90, 10));
        assert_eq!(r("bytes=-1000", 100), br(0, 100));
        assert_eq!(r("bytes=100-", 100), Err(()));
        assert_eq!(r("bytes=-0", 100), Err(()));
        assert_eq!(r("bytes=0-", 0), Err(()));
        assert_eq!(r("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(r("items=0-1", 100), Ok(None));
        assert_eq!(r("bytes=5-1", 100), Ok(None));
        assert_eq!(r("bytes=x-1", 100), Ok(None));
    }

    #[test]
    fn etag_lists() {
        let weak = |l, e| etag_listed(l, e, Compare::Weak);
        assert!(weak("\"a\", \"b\"", Some("\"b\"")));
        assert!(weak("W/\"b\"", Some("\"b\"")));
        assert!(weak("*", None));
        assert!(!weak("\"a\"", Some("\"b\"")));
        assert!(!weak("\"a\"", None));
        let strong = |l, e| etag_listed(l, e, Compare::Strong);
        assert!(strong("\"a\", \"b\"", Some("\"b\"")));
        assert!(!strong("W/\"b\"", Some("\"b\"")));
        assert!(strong("W/\"b\", \"b\"", Some("\"b\"")));
        assert!(strong("*", Some("\"b\"")));
    }

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor(None).unwrap(), 0);
        assert_eq!(parse_cursor(Some("")).unwrap(), 0);
        assert_eq!(parse_cursor(Some("42")).unwrap(), 42);
        assert_eq!(
            parse_cursor(Some("9223372036854775807")).unwrap(),
            i64::MAX as u64
        );
        for bad in [
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "+1",
            "abc",
            " 1",
            "1e3",
        ] {
            assert_eq!(parse_cursor(Some(bad)).unwrap_err().status, 400, "{bad}");
        }
    }
}
