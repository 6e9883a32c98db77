//! Safe parsing of the file path in an API URL.
//!
//! The raw (still percent-encoded) path after the route prefix is split on
//! `/` first and each segment decoded afterwards, so an encoded slash
//! (`%2f`) can never make a separator. Refused with 400: `.` and `..`
//! segments (also encoded, `%2e%2e`), empty segments (`a//b`), NUL bytes,
//! names over 255 bytes and paths over 4096 bytes. Names are bytes: a
//! segment may decode to any other bytes, UTF-8 or not. The components are
//! then resolved from the root through the core, one lookup each
//! (`Fs::walk`), so no API path can reach outside the mount's tree. A
//! trailing `/` must name a directory (`file.txt/` is ENOTDIR).

use percent_encoding::percent_decode_str;

use super::error::ApiError;
use crate::core::{Attr, Fs};
use crate::types::{Caller, NAME_MAX};

/// Longest raw path accepted (as Linux `PATH_MAX`).
pub const PATH_MAX: usize = 4096;

/// A path below the root; no components means the root itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiPath {
    pub components: Vec<Vec<u8>>,
    /// The path ended in `/`: it must name a directory (as for the
    /// kernel, `file/` is ENOTDIR).
    pub dir_only: bool,
}

impl ApiPath {
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The parent's components and the last name; `None` for the root.
    pub fn split_last(&self) -> Option<(&[Vec<u8>], &[u8])> {
        let (last, parent) = self.components.split_last()?;
        Some((parent, last))
    }

    /// Walk the path as `caller` ([`Fs::walk`]: search permission on
    /// every directory, `/.trash` only for who may see it); a trailing
    /// `/` on something other than a directory is ENOTDIR.
    pub fn resolve(&self, fs: &Fs, caller: &Caller) -> crate::types::error::Result<Attr> {
        let attr = fs.walk(caller, &self.components)?;
        if self.dir_only && !attr.inode.kind.is_dir() {
            return Err(crate::types::error::enotdir());
        }
        Ok(attr)
    }

    /// `/a/b` for display (lossy for names that are not UTF-8).
    pub fn display(&self) -> String {
        let mut s = String::from("/");
        let parts: Vec<String> = self
            .components
            .iter()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        s.push_str(&parts.join("/"));
        s
    }
}

/// Parse the raw path of a URL after `prefix` (e.g. `/api/v1/fs`).
pub fn parse(raw_path: &str, prefix: &str) -> Result<ApiPath, ApiError> {
    let rest = raw_path
        .strip_prefix(prefix)
        .ok_or_else(|| ApiError::bad_request("path outside the route"))?;
    if rest.len() > PATH_MAX {
        return Err(ApiError::bad_request("path longer than 4096 bytes"));
    }
    let rest = match rest.strip_prefix('/') {
        Some(r) => r,
        None if rest.is_empty() => rest,
        None => return Err(ApiError::not_found("no such route")),
    };
    // One trailing slash is allowed ("dir/"), as a shell would; it then
    // names a directory.
    let dir_only = rest.ends_with('/');
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut components = Vec::new();
    if rest.is_empty() {
        return Ok(ApiPath {
            components,
            dir_only: true,
        });
    }
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err(ApiError::bad_request("empty path segment"));
        }
        let name: Vec<u8> = percent_decode_str(seg).collect();
        if name == b"." || name == b".." {
            return Err(ApiError::bad_request(
                "'.' and '..' segments are not allowed in paths",
            ));
        }
        if name.contains(&b'/') {
            return Err(ApiError::bad_request(
                "an encoded '/' is not allowed in a name",
            ));
        }
        if name.contains(&0) {
            return Err(ApiError::bad_request("NUL is not allowed in a name"));
        }
        if name.is_empty() {
            return Err(ApiError::bad_request("empty path segment"));
        }
        if name.len() > NAME_MAX {
            return Err(ApiError::bad_request("name longer than 255 bytes"));
        }
        components.push(name);
    }
    Ok(ApiPath {
        components,
        dir_only,
    })
}

/// Percent-encode a name for use in a URL path segment.
pub fn encode_segment(name: &[u8]) -> String {
    use percent_encoding::{percent_encode, AsciiSet, CONTROLS};
    const SEGMENT: &AsciiSet = &CONTROLS
        .add(b' ')
        .add(b'"')
        .add(b'#')
        .add(b'%')
        .add(b'/')
        .add(b'<')
        .add(b'>')
        .add(b'?')
        .add(b'`')
        .add(b'{')
        .add(b'}')
        .add(b'\\')
        .add(b'^')
        .add(b'|');
    percent_encode(name, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/api/v1/fs";

    fn comps(p: &str) -> Vec<Vec<u8>> {
        parse(p, P).unwrap().components
    }

    fn status(p: &str) -> u16 {
        parse(p, P).unwrap_err().status.as_u16()
    }

    #[test]
    fn plain_paths() {
        assert!(comps("/api/v1/fs").is_empty());
        assert!(comps("/api/v1/fs/").is_empty());
        assert_eq!(comps("/api/v1/fs/a/b"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(comps("/api/v1/fs/a/b/"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(parse("/api/v1/fs/a/b/", P).unwrap().dir_only);
        assert!(!parse("/api/v1/fs/a/b", P).unwrap().dir_only);
        assert_eq!(
            comps("/api/v1/fs/%D0%BE%D1%82%D1%87%D1%91%D1%82%20x"),
            vec!["отчёт x".as_bytes().to_vec()]
        );
        assert_eq!(comps("/api/v1/fs/%ff"), vec![vec![0xff]]);
        assert_eq!(comps("/api/v1/fs/...")[0], b"...".to_vec());
    }

    #[test]
    fn traversal_and_bad_segments_are_refused() {
        for p in [
            "/api/v1/fs/..",
            "/api/v1/fs/../x",
            "/api/v1/fs/a/../../x",
            "/api/v1/fs/%2e%2e/x",
            "/api/v1/fs/%2E%2E",
            "/api/v1/fs/.%2e/x",
            "/api/v1/fs/./x",
            "/api/v1/fs/a%2f..%2fb",
            "/api/v1/fs/..%2fx",
            "/api/v1/fs/a//b",
            "/api/v1/fs//a",
            "/api/v1/fs/a%00b",
        ] {
            assert_eq!(status(p), 400, "{p}");
        }
        assert_eq!(status(&format!("/api/v1/fs/{}", "n".repeat(256))), 400);
        assert!(parse(&format!("/api/v1/fs/{}", "n".repeat(255)), P).is_ok());
        assert_eq!(status("/api/v1/fsx"), 404);
    }

    #[test]
    fn encoding_round_trips() {
        for name in [&b"a b#?%"[..], "отчёт".as_bytes(), &[0xff, b'/', 1]] {
            let url = format!("{P}/{}", encode_segment(name));
            if name.contains(&b'/') {
                assert_eq!(status(&url), 400);
            } else {
                assert_eq!(comps(&url), vec![name.to_vec()]);
            }
        }
    }
}
