//! `attr.json` sidecars: beside each object `objects/XX/<ino>` a document
//! `<ino>.attr.json` repeating all of the inode's metadata, so the tables can
//! be rebuilt from BACKING alone; the same format the original storage
//! element wrote beside its files, so its trees can be imported.
//!
//! This module owns the document (`AttrJson`), its JSON encoding (schema V2
//! written; V1 read and mapped), writing it atomically, and walking a tree of
//! them. It knows nothing of the tables: the core fills and reads documents.
//! The format is described in docs/SIDECAR.md.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::unnamed;
use crate::types::{Kind, Timestamp, NAME_MAX};

/// The `schema_version` artfs writes.
pub const SCHEMA_V2: &str = "2.0";
/// What a sidecar's file name ends with.
pub const SUFFIX: &str = ".attr.json";
/// Temp files of `write_atomic` start with this; a crash may leave them
/// behind, and they are safe to delete (never the only copy of anything).
pub const TEMP_PREFIX: &str = ".attr-json-tmp-";

/// Which schema a parsed document was written in. A V1 document is mapped
/// into V2 on reading; the caller rewrites it on the file's next change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemaVersion {
    V1,
    V2,
}

/// Why a sidecar could not be read. Per file: callers skip and report.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("malformed JSON: {0}")]
    Json(serde_json::Error),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("missing file_id")]
    MissingFileId,
    #[error("unsupported schema_version {0}")]
    UnsupportedSchema(String),
    #[error("field {field}: {reason}")]
    Field { field: String, reason: String },
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

impl SidecarError {
    fn field(field: impl Into<String>, reason: impl fmt::Display) -> SidecarError {
        SidecarError::Field {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

/// One sidecar document: the original's V2 fields, plus the `fs` section
/// artfs needs to rebuild its namespace losslessly.
///
/// Fields the original may leave out or null are `Option`s (or empty);
/// only `file_id` is required. Keys are written in declaration order,
/// then any unknown keys (kept in `extra`) in name order. Read documents
/// with `AttrJson::parse`, which maps V1 and checks what serde cannot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrJson {
    /// Always `"2.0"` once parsed (V1 is mapped into V2).
    pub schema_version: String,
    /// UUID; never changes, shared by hard links.
    pub file_id: String,
    #[serde(default)]
    pub original_filename: String,
    #[serde(default)]
    pub storage_filename: String,
    #[serde(default)]
    pub file_size: u64,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default, with = "rfc3339_opt")]
    pub created_at: Option<Timestamp>,
    #[serde(default, with = "rfc3339_opt")]
    pub updated_at: Option<Timestamp>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub created_by_id: Option<String>,
    #[serde(default)]
    pub created_by_username: Option<String>,
    #[serde(default)]
    pub created_by_fullname: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Free text; a number in the input is taken as its text.
    #[serde(default, deserialize_with = "lenient_string")]
    pub version: Option<String>,
    /// SHA-256 of the content, 64 lowercase hex digits.
    #[serde(default, deserialize_with = "checksum")]
    pub checksum: Option<String>,
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    pub retention_until: Option<Timestamp>,
    /// Name -> string. Non-string values in the input are kept as their
    /// JSON text (`42`, `true`, `{"a":1}`).
    #[serde(default, deserialize_with = "string_map")]
    pub custom_attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsAttrs>,
    /// Keys this version does not know, kept so a rewrite loses nothing.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// What the filesystem needs to rebuild an inode and its names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsAttrs {
    pub ino: u64,
    #[serde(with = "kind_name")]
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`0..=0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub rdev: u32,
    #[serde(default)]
    pub size: u64,
    pub nlink: u32,
    /// Nanoseconds since the epoch, UTC.
    #[serde(with = "ts_nanos")]
    pub atime: Timestamp,
    #[serde(with = "ts_nanos")]
    pub mtime: Timestamp,
    #[serde(with = "ts_nanos")]
    pub ctime: Timestamp,
    #[serde(with = "ts_nanos")]
    pub crtime: Timestamp,
    /// Every name of the inode: one per hard link, none for the root.
    #[serde(default)]
    pub links: Vec<Link>,
    /// Symlink target; symlinks only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Bytes>,
    /// All extended attributes, raw.
    #[serde(default)]
    pub xattrs: Vec<Xattr>,
    /// The name at creation, lossless (`original_filename` is text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_name: Option<Bytes>,
    /// The inode flags `chattr` set (`FS_IOC_SETFLAGS` bits); left out
    /// when none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flags: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// One directory entry naming the inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// `file_id` of the directory holding the entry.
    pub parent: String,
    pub name: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Bytes,
    pub value: Bytes,
}

impl Default for AttrJson {
    fn default() -> Self {
        AttrJson {
            schema_version: SCHEMA_V2.to_string(),
            file_id: String::new(),
            original_filename: String::new(),
            storage_filename: String::new(),
            file_size: 0,
            content_type: None,
            created_at: None,
            updated_at: None,
            created_by_id: None,
            created_by_username: None,
            created_by_fullname: None,
            description: None,
            version: None,
            checksum: None,
            retention_until: None,
            custom_attributes: BTreeMap::new(),
            fs: None,
            extra: BTreeMap::new(),
        }
    }
}

impl AttrJson {
    /// An empty V2 document for `file_id`.
    pub fn new(file_id: impl Into<String>) -> AttrJson {
        AttrJson {
            file_id: file_id.into(),
            ..AttrJson::default()
        }
    }

    /// Read a sidecar. V2 is taken as is; V1 (no `schema_version`) is mapped
    /// into V2: its `metadata` object becomes `custom_attributes`.
    pub fn parse(input: &[u8]) -> Result<(AttrJson, SchemaVersion), SidecarError> {
        let mut value: Value = serde_json::from_slice(input).map_err(SidecarError::Json)?;
        let obj = value.as_object_mut().ok_or(SidecarError::NotAnObject)?;
        match obj.get("file_id") {
            None | Some(Value::Null) => return Err(SidecarError::MissingFileId),
            Some(Value::String(s)) if uuid::Uuid::try_parse(s).is_ok() => {}
            Some(other) => {
                return Err(SidecarError::field(
                    "file_id",
                    format!("not a UUID: {other}"),
                ))
            }
        }
        let version = match obj.get("schema_version") {
            None | Some(Value::Null) => SchemaVersion::V1,
            Some(Value::String(s)) if s == "2.0" || s == "2" => SchemaVersion::V2,
            Some(Value::String(s)) if s == "1.0" || s == "1" => SchemaVersion::V1,
            Some(other) => return Err(SidecarError::UnsupportedSchema(other.to_string())),
        };
        if version == SchemaVersion::V1 {
            if let Some(metadata) = obj.remove("metadata") {
                obj.insert("custom_attributes".into(), metadata);
            }
        }
        obj.insert("schema_version".into(), SCHEMA_V2.into());
        let doc: AttrJson = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "document".into() } else { path };
            SidecarError::field(field, e.into_inner())
        })?;
        doc.validate()?;
        Ok((doc, version))
    }

    /// The document as written: pretty JSON, stable key order, final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("string keys always serialize");
        out.push(b'\n');
        out
    }

    /// What typed deserialization cannot say: the `fs` section is coherent.
    fn validate(&self) -> Result<(), SidecarError> {
        let Some(fs) = &self.fs else { return Ok(()) };
        if fs.mode > 0o7777 {
            return Err(SidecarError::field(
                "fs.mode",
                format!("{:#o} has bits beyond 0o7777", fs.mode),
            ));
        }
        match (fs.kind, &fs.target) {
            (Kind::Symlink, None) => {
                return Err(SidecarError::field("fs.target", "missing for a symlink"))
            }
            (k, Some(_)) if k != Kind::Symlink => {
                return Err(SidecarError::field("fs.target", "only symlinks have one"))
            }
            _ => {}
        }
        for (i, link) in fs.links.iter().enumerate() {
            let n = &link.name.0;
            if n.is_empty() || n.len() > NAME_MAX || n.contains(&b'/') || n.contains(&0) {
                return Err(SidecarError::field(
                    format!("fs.links[{i}].name"),
                    "not a valid file name (1..=255 bytes, no '/' or NUL)",
                ));
            }
        }
        Ok(())
    }
}

/// When the new document becomes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirSync {
    /// When `write_atomic_with` returns (file and directory fsynced).
    Now,
    /// When the caller syncs the whole filesystem once for a batch
    /// (`syncfs`). Until then a crash may leave the old document, the new
    /// one or an empty or cut-short file: the caller must be able to
    /// rewrite it (a pending log row names it), and pays no fsync per
    /// document. A new document is written at its final name, so a
    /// reader may also see it short while it is written.
    Deferred,
}

/// Replace `path` with `doc` atomically and durably: a reader (or a crash)
/// sees the old document or the new one, never a mix.
pub fn write_atomic(path: &Path, doc: &AttrJson) -> io::Result<()> {
    write_atomic_with(path, doc, DirSync::Now)
}

/// `write_atomic`, optionally leaving the directory fsync to the caller.
pub fn write_atomic_with(path: &Path, doc: &AttrJson, dir_sync: DirSync) -> io::Result<()> {
    write_atomic_by(path, doc, dir_sync, true)
}

/// [`write_atomic_with`]; `try_unnamed`: try an unnamed file first (see
/// [`unnamed`]), else the temp-file way alone.
fn write_atomic_by(
    path: &Path,
    doc: &AttrJson,
    dir_sync: DirSync,
    try_unnamed: bool,
) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let json = doc.to_json();
    // A new document, durable only at the caller's syncfs anyway, is
    // written at its final name: one create, where an unnamed file costs
    // an inode on the orphan list and a link (10 of 60-70 µs per sidecar
    // in directories of a few thousand entries, measured interleaved).
    if dir_sync == DirSync::Deferred && write_new(path, &json)? {
        return Ok(());
    }
    let sync_file = |file: &File| match dir_sync {
        DirSync::Now => file.sync_all(),
        DirSync::Deferred => Ok(()),
    };
    let mut tmp = None;
    let mut place = || -> io::Result<()> {
        let file = if try_unnamed {
            unnamed::write(dir, &json, sync_file)?
        } else {
            None
        };
        if let Some(file) = file {
            match unnamed::link(&file, path)? {
                unnamed::Linked::Done => return Ok(()),
                // A rewrite: the new document gets a temp name, then replaces.
                unnamed::Linked::Taken => {
                    if let Some(t) = link_temp(&file, dir)? {
                        return fs::rename(tmp.insert(t), path);
                    }
                }
                unnamed::Linked::Refused => {}
            }
        }
        let (t, mut file) = create_temp(dir)?;
        let t = tmp.insert(t);
        file.write_all(&json)?;
        sync_file(&file)?;
        drop(file);
        fs::rename(t, path)
    };
    if let Err(e) = place() {
        if let Some(t) = tmp {
            let _ = fs::remove_file(t);
        }
        return Err(e);
    }
    if dir_sync == DirSync::Now {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Write `json` to a new file at `path`; false if `path` exists. On a
/// failure nothing is left at `path`.
fn write_new(path: &Path, json: &[u8]) -> io::Result<bool> {
    let mut file = match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    crate::crash_point!("sidecar::after_create");
    let written = (|| {
        fail::fail_point!("sidecar::write_new", |_| Err(io::Error::from_raw_os_error(
            libc::ENOSPC
        )));
        file.write_all(json)
    })();
    match written {
        Ok(()) => Ok(true),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(path);
            Err(e)
        }
    }
}

/// Make the entries of `dir` (renames, creations) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether a file name is a temp file of `write_atomic`.
pub fn is_temp_name(name: &OsStr) -> bool {
    name.as_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

/// A temp name in `dir` not used by this process before.
fn temp_name(dir: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()))
}

/// A fresh temp file in `dir`. The name is short whatever the target's
/// length, so a 255-byte target name still gets one.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    loop {
        let tmp = temp_name(dir);
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            // Left by a crashed process that had our pid: take the next number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            r => return r.map(|f| (tmp, f)),
        }
    }
}

/// `file` (written, unnamed) under a fresh temp name in `dir`; `None`
/// if linking was refused.
fn link_temp(file: &File, dir: &Path) -> io::Result<Option<PathBuf>> {
    loop {
        let tmp = temp_name(dir);
        match unnamed::link(file, &tmp)? {
            unnamed::Linked::Done => return Ok(Some(tmp)),
            unnamed::Linked::Taken => continue,
            unnamed::Linked::Refused => return Ok(None),
        }
    }
}

/// A parsed sidecar and the schema it was written in.
pub type Parsed = (AttrJson, SchemaVersion);

/// Every `*.attr.json` under `root`, in any subdirectory (the object
/// fan-out `objects/XX/`, or the original's `YYYY/MM/DD/HH/` tree), in name
/// order, each parsed or with its own error. Unreadable directories are
/// reported as errors on their path and skipped; symlinks are not followed.
pub fn scan(root: &Path) -> Scan {
    Scan {
        stack: vec![vec![(root.to_path_buf(), true)].into_iter()],
    }
}

/// Iterator returned by `scan`.
pub struct Scan {
    /// Entries still to visit, per directory level: (path, is a directory).
    stack: Vec<std::vec::IntoIter<(PathBuf, bool)>>,
}

impl Iterator for Scan {
    type Item = (PathBuf, Result<Parsed, SidecarError>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let top = self.stack.last_mut()?;
            match top.next() {
                None => {
                    self.stack.pop();
                }
                Some((dir, true)) => match list_dir(&dir) {
                    Ok(entries) => self.stack.push(entries.into_iter()),
                    Err(e) => return Some((dir, Err(e.into()))),
                },
                Some((path, false)) => {
                    let parsed = fs::read(&path)
                        .map_err(SidecarError::from)
                        .and_then(|bytes| AttrJson::parse(&bytes));
                    return Some((path, parsed));
                }
            }
        }
    }
}

/// Subdirectories and sidecars of `dir`, sorted by name.
fn list_dir(dir: &Path) -> io::Result<Vec<(PathBuf, bool)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let name = entry.file_name();
        if kind.is_dir() {
            out.push((entry.path(), true));
        } else if kind.is_file()
            && name.as_bytes().ends_with(SUFFIX.as_bytes())
            && !is_temp_name(&name)
        {
            out.push((entry.path(), false));
        }
    }
    out.sort();
    Ok(out)
}

/// Arbitrary bytes in JSON, losslessly: a plain string when they are valid
/// UTF-8, else `{"b64": "<standard base64>"}`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Bytes {
        Bytes(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Bytes {
        Bytes(v.to_vec())
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("b64", &BASE64.encode(&self.0))?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a string or {"b64": "..."}"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                Ok(Bytes(v.as_bytes().to_vec()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Bytes, E> {
                Ok(Bytes(v.into_bytes()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Bytes, A::Error> {
                let mut out = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "b64" {
                        let text: String = map.next_value()?;
                        let bytes = BASE64
                            .decode(text.as_bytes())
                            .map_err(|e| de::Error::custom(format!("invalid base64: {e}")))?;
                        out = Some(Bytes(bytes));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                out.ok_or_else(|| de::Error::missing_field("b64"))
            }
        }
        d.deserialize_any(BytesVisitor)
    }
}

/// Kinds by name, as in docs/SIDECAR.md.
pub fn kind_to_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
        Kind::CharDev => "chardev",
        Kind::BlockDev => "blockdev",
    }
}

pub fn kind_from_name(name: &str) -> Option<Kind> {
    Some(match name {
        "file" => Kind::File,
        "dir" => Kind::Dir,
        "symlink" => Kind::Symlink,
        "fifo" => Kind::Fifo,
        "socket" => Kind::Socket,
        "chardev" => Kind::CharDev,
        "blockdev" => Kind::BlockDev,
        _ => return None,
    })
}

mod kind_name {
    use super::*;

    pub fn serialize<S: Serializer>(kind: &Kind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind_to_name(*kind))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let name = String::deserialize(d)?;
        kind_from_name(&name).ok_or_else(|| de::Error::custom(format!("unknown kind {name:?}")))
    }
}

/// Inode times: integer nanoseconds since the epoch.
mod ts_nanos {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        i64::deserialize(d).map(Timestamp)
    }
}

/// The original's times: RFC 3339 strings (written with `Z`), or null.
mod rfc3339_opt {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&t.to_rfc3339()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => Timestamp::parse_rfc3339(&s)
                .map(Some)
                .map_err(de::Error::custom),
        }
    }
}

/// A string, or a number or boolean taken as its JSON text.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
        Some(other) => Err(de::Error::custom(format!(
            "expected a string, found {other}"
        ))),
    }
}

/// 64 hex digits, stored lowercase; null or "" is no checksum.
fn checksum<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(s.to_ascii_lowercase()))
        }
        Some(s) => Err(de::Error::custom(format!(
            "not a SHA-256 hex digest: {s:?}"
        ))),
    }
}

/// A JSON object whose values become strings (non-strings as JSON text).
fn string_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let map = Option::<BTreeMap<String, Value>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0190f5d2-7a4b-7c3e-8d1f-2a3b4c5d6e7f";
    const PARENT: &str = "0190f5d2-0000-7000-8000-000000000001";

    fn fs_attrs(kind: Kind) -> FsAttrs {
        FsAttrs {
            ino: 0x1234,
            kind,
            mode: 0o4755,
            uid: 1000,
            gid: 100,
            rdev: 0,
            size: 0,
            nlink: 1,
            atime: Timestamp(1_700_000_000_123_456_789),
            mtime: Timestamp(1_700_000_001_000_000_000),
            ctime: Timestamp(-1),
            crtime: Timestamp(0),
            links: vec![Link {
                parent: PARENT.into(),
                name: Bytes(b"name".to_vec()),
            }],
            target: None,
            xattrs: vec![],
            original_name: None,
            flags: 0,
        }
    }

    fn full_doc() -> AttrJson {
        AttrJson {
            original_filename: "Отчёт за март.pdf".into(),
            storage_filename: format!("Отчёт за март_ivanov_20240305T102030_{ID}.pdf"),
            file_size: 5,
            content_type: Some("application/pdf".into()),
            created_at: Some(Timestamp(1_709_634_030_123_456_789)),
            updated_at: Some(Timestamp(1_709_634_030_000_000_000)),
            created_by_id: Some("u-1001".into()),
            created_by_username: Some("ivanov".into()),
            created_by_fullname: Some("Иван Иванов".into()),
            description: Some("quarterly".into()),
            version: Some("1.2".into()),
            checksum: Some("ab".repeat(32)),
            retention_until: Some(Timestamp(1_900_000_000_000_000_000)),
            custom_attributes: [("dept".to_string(), "финансы".to_string())].into(),
            fs: Some(FsAttrs {
                size: 5,
                xattrs: vec![Xattr {
                    name: Bytes(b"user.artstore.description".to_vec()),
                    value: Bytes(b"quarterly".to_vec()),
                }],
                ..fs_attrs(Kind::File)
            }),
            ..AttrJson::new(ID)
        }
    }

    fn round_trip(doc: &AttrJson) -> AttrJson {
        let (back, version) = AttrJson::parse(&doc.to_json()).expect("parse own output");
        assert_eq!(version, SchemaVersion::V2);
        back
    }

    #[test]
    fn bytes_encoding() {
        let cases: Vec<(Vec<u8>, Value)> = vec![
            (b"plain".to_vec(), json!("plain")),
            (vec![], json!("")),
            ("имя".as_bytes().to_vec(), json!("имя")),
            // Valid UTF-8 that looks like the object form stays a string.
            (br#"{"b64":"AAAA"}"#.to_vec(), json!(r#"{"b64":"AAAA"}"#)),
            (vec![0xff, 0xfe, b'a'], json!({"b64": "//5h"})),
            // A lone continuation byte and a truncated sequence.
            (vec![b'x', 0x80], json!({"b64": "eIA="})),
            (vec![0xd0], json!({"b64": "0A=="})),
        ];
        for (raw, want) in cases {
            let v = serde_json::to_value(Bytes(raw.clone())).unwrap();
            assert_eq!(v, want, "encoding of {raw:?}");
            let back: Bytes = serde_json::from_value(v).unwrap();
            assert_eq!(back.0, raw);
        }
    }

    #[test]
    fn bytes_long_and_all_values() {
        let all: Vec<u8> = (0..=255u8).collect();
        let long_utf8 = "я".repeat(127).into_bytes(); // 254 bytes
        let long_raw = vec![0xffu8; 255];
        for raw in [all, long_utf8, long_raw] {
            let text = serde_json::to_string(&Bytes(raw.clone())).unwrap();
            let back: Bytes = serde_json::from_str(&text).unwrap();
            assert_eq!(back.0, raw);
        }
    }

    #[test]
    fn bytes_object_form_errors_and_extra_keys() {
        let back: Bytes = serde_json::from_value(json!({"b64": "AQI=", "note": 1})).unwrap();
        assert_eq!(back.0, vec![1, 2]);
        assert!(serde_json::from_value::<Bytes>(json!({"hex": "0102"})).is_err());
        assert!(serde_json::from_value::<Bytes>(json!({"b64": "not base64!"})).is_err());
        assert!(serde_json::from_value::<Bytes>(json!(5)).is_err());
    }

    #[test]
    fn full_document_round_trips() {
        let doc = full_doc();
        assert_eq!(round_trip(&doc), doc);
    }

    #[test]
    fn every_kind_round_trips() {
        for kind in [
            Kind::File,
            Kind::Dir,
            Kind::Symlink,
            Kind::Fifo,
            Kind::Socket,
            Kind::CharDev,
            Kind::BlockDev,
        ] {
            let mut fs = fs_attrs(kind);
            if kind == Kind::Symlink {
                fs.target = Some(Bytes(b"../a/\xff target".to_vec()));
            }
            if matches!(kind, Kind::CharDev | Kind::BlockDev) {
                fs.rdev = (8 << 8) | 1;
            }
            let doc = AttrJson {
                fs: Some(fs),
                ..AttrJson::new(ID)
            };
            let text = String::from_utf8(doc.to_json()).unwrap();
            assert!(
                text.contains(&format!("\"kind\": \"{}\"", kind_to_name(kind))),
                "{text}"
            );
            assert_eq!(round_trip(&doc), doc, "{kind:?}");
        }
    }

    #[test]
    fn hard_link_symlink_and_raw_names_round_trip() {
        let mut fs = fs_attrs(Kind::File);
        fs.nlink = 2;
        fs.links = vec![
            Link {
                parent: PARENT.into(),
                name: Bytes(b"first".to_vec()),
            },
            Link {
                parent: ID.into(),
                name: Bytes(vec![0xc3, 0x28, b'.', b't', b'x', b't']),
            },
        ];
        fs.xattrs = vec![
            Xattr {
                name: Bytes(b"user.\xffbin".to_vec()),
                value: Bytes(vec![0, 1, 2, 0xff]),
            },
            Xattr {
                name: Bytes(b"user.empty".to_vec()),
                value: Bytes(vec![]),
            },
        ];
        let doc = AttrJson {
            fs: Some(fs),
            ..AttrJson::new(ID)
        };
        let v: Value = serde_json::from_slice(&doc.to_json()).unwrap();
        assert_eq!(v["fs"]["links"][0]["name"], json!("first"));
        assert_eq!(v["fs"]["links"][1]["name"], json!({"b64": "wygudHh0"}));
        assert_eq!(v["fs"]["xattrs"][0]["value"], json!({"b64": "AAEC/w=="}));
        assert_eq!(v["fs"]["xattrs"][1]["value"], json!(""));
        assert_eq!(round_trip(&doc), doc);

        let mut link = fs_attrs(Kind::Symlink);
        link.target = Some(Bytes(b"/abs/target with spaces".to_vec()));
        let doc = AttrJson {
            fs: Some(link),
            ..AttrJson::new(ID)
        };
        let v: Value = serde_json::from_slice(&doc.to_json()).unwrap();
        assert_eq!(v["fs"]["target"], json!("/abs/target with spaces"));
        assert_eq!(round_trip(&doc), doc);
    }

    #[test]
    fn written_form_is_stable_and_utc() {
        let doc = full_doc();
        let text = String::from_utf8(doc.to_json()).unwrap();
        assert_eq!(text, String::from_utf8(full_doc().to_json()).unwrap());
        assert!(text.ends_with("}\n"));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], "2.0");
        assert_eq!(v["created_at"], "2024-03-05T10:20:30.123456789Z");
        assert_eq!(v["updated_at"], "2024-03-05T10:20:30Z");
        assert_eq!(v["fs"]["atime"], 1_700_000_000_123_456_789i64);
        assert_eq!(v["fs"]["ctime"], -1);
        assert_eq!(v["fs"]["mode"], 0o4755);
        // Keys in declaration order: the original's first, fs last.
        let pos = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        let order = [
            "schema_version",
            "file_id",
            "original_filename",
            "storage_filename",
            "file_size",
            "content_type",
            "created_at",
            "updated_at",
            "created_by_id",
            "created_by_username",
            "created_by_fullname",
            "description",
            "version",
            "checksum",
            "retention_until",
            "custom_attributes",
            "fs",
        ];
        assert!(order.windows(2).all(|w| pos(w[0]) < pos(w[1])), "{text}");
        // Absent optional extensions are left out; the original's nulls stay.
        let bare = String::from_utf8(AttrJson::new(ID).to_json()).unwrap();
        assert!(!bare.contains("retention_until") && !bare.contains("\"fs\""));
        assert!(bare.contains("\"description\": null"));
    }

    #[test]
    fn unknown_fields_are_kept() {
        let input = json!({
            "schema_version": "2.0",
            "file_id": ID,
            "storage_path": "2024/03/05/10",
            "future": {"x": [1, 2]},
            "fs": {
                "ino": 5, "kind": "file", "mode": 420, "uid": 0, "gid": 0,
                "nlink": 1, "atime": 0, "mtime": 0, "ctime": 0, "crtime": 0,
                "new_thing": true
            }
        });
        let (doc, version) = AttrJson::parse(input.to_string().as_bytes()).unwrap();
        assert_eq!(version, SchemaVersion::V2);
        assert_eq!(doc.extra["storage_path"], "2024/03/05/10");
        assert_eq!(doc.extra["future"], json!({"x": [1, 2]}));
        assert_eq!(doc.fs.as_ref().unwrap().ino, 5);
        let again = round_trip(&doc);
        assert_eq!(again.extra, doc.extra);
    }

    #[test]
    fn v1_is_mapped_into_v2() {
        let input = json!({
            "file_id": ID,
            "original_filename": "report.pdf",
            "storage_filename": format!("report_ivanov_20240305T102030_{ID}.pdf"),
            "file_size": 1234,
            "content_type": "application/pdf",
            "created_at": "2024-03-05T10:20:30.123456",
            "updated_at": "2024-03-05T10:20:31",
            "created_by_id": 17,
            "created_by_username": "ivanov",
            "created_by_fullname": null,
            "description": "scan",
            "version": 2,
            "checksum": "AB".repeat(32),
            "metadata": {
                "dept": "finance",
                "pages": 12,
                "ratio": 0.25,
                "approved": true,
                "none": null,
                "tags": ["a", "b"],
                "nested": {"k": "v"}
            }
        });
        let (doc, version) = AttrJson::parse(input.to_string().as_bytes()).unwrap();
        assert_eq!(version, SchemaVersion::V1);
        assert_eq!(doc.schema_version, "2.0");
        assert_eq!(doc.file_size, 1234);
        assert_eq!(doc.created_at, Some(Timestamp(1_709_634_030_123_456_000)));
        assert_eq!(doc.updated_at, Some(Timestamp(1_709_634_031_000_000_000)));
        assert_eq!(doc.created_by_id.as_deref(), Some("17"));
        assert_eq!(doc.created_by_fullname, None);
        assert_eq!(doc.version.as_deref(), Some("2"));
        assert_eq!(doc.checksum, Some("ab".repeat(32)));
        let want: BTreeMap<String, String> = [
            ("dept", "finance"),
            ("pages", "12"),
            ("ratio", "0.25"),
            ("approved", "true"),
            ("none", "null"),
            ("tags", r#"["a","b"]"#),
            ("nested", r#"{"k":"v"}"#),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(doc.custom_attributes, want);
        // metadata moved, not duplicated among the unknown keys.
        assert!(doc.extra.is_empty(), "{:?}", doc.extra);
        // Written back it is V2 with Z times.
        let v: Value = serde_json::from_slice(&doc.to_json()).unwrap();
        assert_eq!(v["schema_version"], "2.0");
        assert_eq!(v["created_at"], "2024-03-05T10:20:30.123456Z");
        assert!(v.get("metadata").is_none());
    }

    #[test]
    fn v1_minimal_and_explicit_version_one() {
        let (doc, version) =
            AttrJson::parse(format!(r#"{{"file_id":"{ID}"}}"#).as_bytes()).unwrap();
        assert_eq!(version, SchemaVersion::V1);
        assert_eq!(doc, AttrJson::new(ID));
        let (_, version) =
            AttrJson::parse(format!(r#"{{"file_id":"{ID}","schema_version":"1.0"}}"#).as_bytes())
                .unwrap();
        assert_eq!(version, SchemaVersion::V1);
    }

    #[test]
    fn timestamps_naive_offset_and_z() {
        let want = Timestamp(1_709_634_030_000_000_000); // 2024-03-05T10:20:30Z
        for s in [
            "2024-03-05T10:20:30",
            "2024-03-05 10:20:30",
            "2024-03-05T10:20:30Z",
            "2024-03-05T10:20:30z",
            "2024-03-05T10:20:30+00:00",
            "2024-03-05T13:20:30+03:00",
            "2024-03-05T05:20:30-05:00",
            "2024-03-05T10:20:30.000000",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(s), Ok(want), "{s}");
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2024-03-05T10:20:30.000000001Z"),
            Ok(Timestamp(want.0 + 1))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("1969-12-31T23:59:59.999999999Z"),
            Ok(Timestamp(-1))
        );
        for bad in [
            "",
            "yesterday",
            "2024-03-05",
            "2024-13-05T10:20:30",
            "3000-01-01T00:00:00Z",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad}");
        }
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            Timestamp(1_500_000).to_rfc3339(),
            "1970-01-01T00:00:00.0015Z"
        );
        for t in [i64::MIN, -1, 0, 1, 1_709_634_030_123_456_789, i64::MAX] {
            let s = Timestamp(t).to_rfc3339();
            assert!(s.ends_with('Z'), "{s}");
            assert_eq!(Timestamp::parse_rfc3339(&s), Ok(Timestamp(t)), "{s}");
        }
    }

    fn parse_err(input: &str) -> SidecarError {
        AttrJson::parse(input.as_bytes()).expect_err(input)
    }

    #[test]
    fn malformed_input_errors_name_the_problem() {
        assert!(matches!(
            parse_err(r#"{"file_id": "#),
            SidecarError::Json(_)
        ));
        assert!(matches!(parse_err(""), SidecarError::Json(_)));
        assert!(matches!(parse_err("[1,2]"), SidecarError::NotAnObject));
        assert!(matches!(
            parse_err(r#"{"original_filename":"a"}"#),
            SidecarError::MissingFileId
        ));
        assert!(matches!(
            parse_err(r#"{"file_id":null}"#),
            SidecarError::MissingFileId
        ));
        assert!(matches!(
            parse_err(&format!(r#"{{"file_id":"{ID}","schema_version":"3.0"}}"#)),
            SidecarError::UnsupportedSchema(_)
        ));
        let field_of = |input: String| match parse_err(&input) {
            SidecarError::Field { field, .. } => field,
            other => panic!("{input}: {other}"),
        };
        assert_eq!(field_of(r#"{"file_id":"not-a-uuid"}"#.into()), "file_id");
        assert_eq!(field_of(r#"{"file_id":7}"#.into()), "file_id");
        assert_eq!(
            field_of(format!(
                r#"{{"file_id":"{ID}","created_at":"last tuesday"}}"#
            )),
            "created_at"
        );
        assert_eq!(
            field_of(format!(r#"{{"file_id":"{ID}","file_size":-3}}"#)),
            "file_size"
        );
        assert_eq!(
            field_of(format!(r#"{{"file_id":"{ID}","checksum":"xyz"}}"#)),
            "checksum"
        );
        assert_eq!(
            field_of(format!(r#"{{"file_id":"{ID}","metadata":"x"}}"#)),
            "custom_attributes"
        );
        let fs = |extra: &str| {
            format!(
                r#"{{"file_id":"{ID}","schema_version":"2.0","fs":{{"ino":1,"kind":"file","mode":420,"uid":0,"gid":0,"nlink":1,"atime":0,"mtime":0,"ctime":0,"crtime":0{extra}}}}}"#
            )
        };
        assert!(AttrJson::parse(fs("").as_bytes()).is_ok());
        assert_eq!(
            field_of(fs(r#","kind":"pipe""#).replacen(r#""kind":"file","#, "", 1)),
            "fs.kind"
        );
        assert_eq!(
            field_of(fs(r#","mode":33188"#).replacen(r#""mode":420,"#, "", 1)),
            "fs.mode"
        );
        assert_eq!(field_of(fs(r#","target":"x""#)), "fs.target");
        assert_eq!(
            field_of(fs(r#","links":[{"parent":"p","name":{"b64":"!!"}}]"#)),
            "fs.links[0].name"
        );
        assert_eq!(
            field_of(fs(r#","links":[{"parent":"p","name":"a/b"}]"#)),
            "fs.links[0].name"
        );
        assert_eq!(
            field_of(fs(r#","links":[{"parent":"p","name":""}]"#)),
            "fs.links[0].name"
        );
        let long = "n".repeat(256);
        assert_eq!(
            field_of(fs(&format!(
                r#","links":[{{"parent":"p","name":"{long}"}}]"#
            ))),
            "fs.links[0].name"
        );
        let ok_255 = "n".repeat(255);
        assert!(AttrJson::parse(
            fs(&format!(r#","links":[{{"parent":"p","name":"{ok_255}"}}]"#)).as_bytes()
        )
        .is_ok());
        // The message names the field for a human reading a report.
        let msg = parse_err(&format!(r#"{{"file_id":"{ID}","created_at":"soon"}}"#)).to_string();
        assert!(msg.contains("created_at") && msg.contains("soon"), "{msg}");
    }

    #[test]
    fn example_in_docs_parses() {
        let md = include_str!("../../docs/SIDECAR.md");
        let start = md.find("```json\n").expect("example block") + 8;
        let end = start + md[start..].find("```").unwrap();
        let (doc, version) = AttrJson::parse(&md.as_bytes()[start..end]).unwrap();
        assert_eq!(version, SchemaVersion::V2);
        let fs = doc.fs.unwrap();
        assert_eq!(fs.mode, 0o4755);
        assert_eq!(fs.links[1].name.0, vec![0xc3, 0x28]);
        assert_eq!(fs.xattrs[1].value.0, vec![0, 1, 2, 0xff]);
        assert!(doc.extra.is_empty());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        // Both ways: an unnamed file linked in (where the filesystem has
        // them, as the temp dir's does), and the temp file renamed.
        for try_unnamed in [true, false] {
            atomic_write_by(try_unnamed);
        }
        assert!(
            !unnamed::UNSUPPORTED.load(std::sync::atomic::Ordering::Relaxed),
            "unnamed files were given up on a filesystem that has them"
        );
    }

    fn atomic_write_by(try_unnamed: bool) {
        let write_atomic =
            |path: &Path, doc: &AttrJson| write_atomic_by(path, doc, DirSync::Now, try_unnamed);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{:016x}{SUFFIX}", 0x42));
        let mut doc = full_doc();
        write_atomic(&path, &doc).unwrap();
        assert_eq!(AttrJson::parse(&fs::read(&path).unwrap()).unwrap().0, doc);
        doc.description = Some("second".into());
        doc.custom_attributes.clear();
        write_atomic_by(&path, &doc, DirSync::Deferred, try_unnamed).unwrap();
        sync_dir(dir.path()).unwrap();
        assert_eq!(fs::read(&path).unwrap(), doc.to_json());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![path.file_name().unwrap().to_owned()]);
        // A failed write (no such directory) leaves nothing and reports.
        let missing = dir.path().join("nope").join("x.attr.json");
        assert!(write_atomic(&missing, &doc).is_err());
        assert!(write_atomic_by(&missing, &doc, DirSync::Deferred, try_unnamed).is_err());
        // A new document, deferred, is created at its name: no temp file.
        let new = dir.path().join(format!("{:016x}{SUFFIX}", 0x43));
        write_atomic_by(&new, &doc, DirSync::Deferred, try_unnamed).unwrap();
        assert_eq!(fs::read(&new).unwrap(), doc.to_json());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        fs::remove_file(&new).unwrap();
        // A long target name still gets a temp name.
        let long = dir
            .path()
            .join(format!("{}{SUFFIX}", "L".repeat(255 - SUFFIX.len())));
        write_atomic(&long, &doc).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn scan_finds_every_sidecar_with_errors_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let ids = [
            "0190f5d2-0000-7000-8000-0000000000a1",
            "0190f5d2-0000-7000-8000-0000000000a2",
        ];
        for (ino, id) in [(0x101u64, ids[0]), (0x2ff, ids[1])] {
            let sub = objects.join(format!("{:02x}", ino & 0xff));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("{ino:016x}")), b"content").unwrap();
            write_atomic(&sub.join(format!("{ino:016x}{SUFFIX}")), &AttrJson::new(id)).unwrap();
        }
        fs::write(
            objects.join("01").join(format!("{:016x}{SUFFIX}", 0x201)),
            b"{oops",
        )
        .unwrap();
        fs::write(objects.join("01").join(format!("{TEMP_PREFIX}1-0")), b"{").unwrap();
        fs::write(objects.join("01").join("notes.json"), b"{").unwrap();
        let found: Vec<_> = scan(&objects).collect();
        let names: Vec<String> = found
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "0000000000000101.attr.json",
                "0000000000000201.attr.json",
                "00000000000002ff.attr.json"
            ]
        );
        assert_eq!(found[0].1.as_ref().unwrap().0.file_id, ids[0]);
        assert!(matches!(found[1].1, Err(SidecarError::Json(_))));
        assert_eq!(found[2].1.as_ref().unwrap().0.file_id, ids[1]);

        let missing: Vec<_> = scan(&dir.path().join("absent")).collect();
        assert_eq!(missing.len(), 1);
        assert!(matches!(missing[0].1, Err(SidecarError::Io(_))));
    }
}
