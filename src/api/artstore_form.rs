//! The original element's upload form (`POST /api/v1/files/upload`): the
//! text fields it knows, checked and turned into the attributes the file
//! is stored with, and the file part's filename. Errors are 422, as
//! FastAPI's validation answered.

use axum::http::StatusCode;

use super::error::{ApiError, ApiResult};
use super::file_meta::MetaChanges;

/// Longest text form field.
const FIELD_MAX: usize = 64 << 10;
/// Longest original filename kept.
const ORIGINAL_NAME_MAX: usize = 1024;

/// The fields the upload uses; they must come before `file`.
pub const FIELDS: [&str; 5] = [
    "description",
    "version",
    "file_id",
    "retention_policy",
    "finalize_transaction_id",
];

pub fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_entity",
        message,
    )
}

pub fn form_error(e: multer::Error) -> ApiError {
    unprocessable(format!("malformed multipart form: {e}"))
}

/// The fields before `file`, as given (empty ones count as absent).
#[derive(Default)]
pub struct Form {
    description: Option<String>,
    version: Option<String>,
    pub file_id: Option<uuid::Uuid>,
    retention_policy: Option<String>,
    finalize_transaction_id: Option<String>,
}

impl Form {
    pub fn set(&mut self, name: &str, value: String) -> ApiResult<()> {
        if value.is_empty() {
            return Ok(());
        }
        match name {
            "description" => self.description = Some(value),
            "version" => self.version = Some(value),
            "file_id" => {
                let id = uuid::Uuid::parse_str(value.trim())
                    .map_err(|_| unprocessable("file_id is not a valid UUID"))?;
                self.file_id = Some(id);
            }
            "retention_policy" => match value.as_str() {
                "temporary" | "permanent" => self.retention_policy = Some(value),
                _ => {
                    return Err(unprocessable(
                        "retention_policy must be temporary or permanent",
                    ))
                }
            },
            _ => self.finalize_transaction_id = Some(value),
        }
        Ok(())
    }

    /// The attributes the file is stored with.
    pub fn changes(&self, content_type: Option<String>) -> ApiResult<MetaChanges> {
        let mut c = MetaChanges::default();
        let as_422 = |e: ApiError| unprocessable(e.message);
        for (field, value) in [
            ("description", self.description.clone()),
            ("version", self.version.clone()),
            ("content_type", content_type),
        ] {
            if value.is_some() {
                c.field(field, value).map_err(as_422)?;
            }
        }
        // What artfs has no field for is kept as custom attributes.
        for (key, value) in [
            ("retention_policy", &self.retention_policy),
            ("finalize_transaction_id", &self.finalize_transaction_id),
        ] {
            if let Some(v) = value {
                c.custom(key, Some(v.clone().into_bytes()))
                    .map_err(as_422)?;
            }
        }
        Ok(c)
    }
}

/// Read a text field, at most [`FIELD_MAX`] bytes.
pub async fn text(mut field: multer::Field<'_>) -> ApiResult<String> {
    let name = field.name().unwrap_or_default().to_string();
    let mut buf = Vec::new();
    while let Some(c) = field.chunk().await.map_err(form_error)? {
        if buf.len() + c.len() > FIELD_MAX {
            return Err(unprocessable(format!("{name} is longer than 64 KiB")));
        }
        buf.extend_from_slice(&c);
    }
    String::from_utf8(buf).map_err(|_| unprocessable(format!("{name} is not UTF-8")))
}

/// The file part's filename, as the client meant it (422 without one,
/// longer than [`ORIGINAL_NAME_MAX`] bytes, or holding a NUL).
pub fn filename(field: &multer::Field<'_>) -> ApiResult<String> {
    let original = match field.file_name() {
        Some(n) if !n.is_empty() => unescape(n),
        _ => return Err(unprocessable("file must be a file part with a filename")),
    };
    if original.len() > ORIGINAL_NAME_MAX || original.contains('\0') {
        return Err(unprocessable("the filename is too long or holds a NUL"));
    }
    Ok(original)
}

/// A quoted filename as the client meant it: clients (httpx, urllib3,
/// reqwest) send `\` as `\\` (and `"` as `%22` or `\"`); the original's
/// parser (python-multipart) undid `\\` and `\"`, multer undoes neither.
fn unescape(quoted: &str) -> String {
    let mut out = String::with_capacity(quoted.len());
    let mut chars = quoted.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(&next @ ('\\' | '"'))) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone_as_python_multipart_did() {
        assert_eq!(unescape(r#"a\\b\"c\\\"d\x"#), r#"a\b"c\"d\x"#);
        assert_eq!(unescape("plain name.txt"), "plain name.txt");
    }

    #[test]
    fn fields_are_checked() {
        let mut f = Form::default();
        f.set("file_id", "0190F5A2-7C1D-7B3E-8F00-123456789ABC".into())
            .unwrap();
        assert_eq!(f.file_id.unwrap().get_version_num(), 7);
        assert_eq!(f.set("file_id", "nope".into()).unwrap_err().status, 422);
        assert_eq!(
            f.set("retention_policy", "forever".into())
                .unwrap_err()
                .status,
            422
        );
        // Empty counts as absent.
        f.set("retention_policy", String::new()).unwrap();
        f.set("description", "d".into()).unwrap();
        assert!(f.changes(None).unwrap().set.iter().any(|(_, v)| v == b"d"));
    }
}
