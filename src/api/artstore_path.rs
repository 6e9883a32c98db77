//! Where the original's upload is stored: `/uploads/YYYY/MM/DD/` (the UTC
//! date of the upload) and `{stem}_{file_id}{ext}`, a name made from the
//! client's filename that is safe on the mount (one component, no NUL, no
//! leading dot, at most 255 bytes) and unique by its id.

/// The directory every upload goes below.
const UPLOADS: &[u8] = b"uploads";
/// Longest extension kept in the stored name (`.gz`, `.docx`, ...).
const EXT_MAX: usize = 16;

/// The directory (components), the name, and the path on the mount an
/// upload of `original` with `file_id` is stored under, today.
pub fn stored_at(original: &str, file_id: &str) -> (Vec<Vec<u8>>, Vec<u8>, String) {
    let dir = day_dir();
    let name = stored_name(original, file_id);
    let mut path = String::new();
    for c in dir.iter().chain([&name]) {
        path.push('/');
        path.push_str(&String::from_utf8_lossy(c));
    }
    (dir, name, path)
}

/// The name a file is stored under: the client's filename's stem (its
/// last path component, control characters replaced, a leading dot made
/// visible, shortened to fit 255 bytes), `_`, the id, and a short
/// alphanumeric extension.
pub fn stored_name(original: &str, file_id: &str) -> Vec<u8> {
    let base = original.rsplit(['/', '\\']).next().unwrap_or_default();
    let (stem, ext) = match base.rsplit_once('.') {
        Some((s, e))
            if !s.is_empty()
                && !e.is_empty()
                && e.len() <= EXT_MAX
                && e.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            (s, format!(".{e}"))
        }
        _ => (base, String::new()),
    };
    let mut stem: String = stem
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    if stem.starts_with('.') {
        stem.replace_range(..1, "_");
    }
    if stem.is_empty() {
        stem = "file".into();
    }
    let room = 255 - 1 - file_id.len() - ext.len();
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{file_id}{ext}", &stem[..cut]).into_bytes()
}

/// `uploads/YYYY/MM/DD` for now, UTC.
pub fn day_dir() -> Vec<Vec<u8>> {
    let now = time::OffsetDateTime::now_utc();
    vec![
        UPLOADS.to_vec(),
        format!("{:04}", now.year()).into_bytes(),
        format!("{:02}", u8::from(now.month())).into_bytes(),
        format!("{:02}", now.day()).into_bytes(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b7e7c3e-5f43-4d2a-9a57-7d4d8c1e2f30";

    fn name(original: &str) -> String {
        String::from_utf8(stored_name(original, ID)).unwrap()
    }

    #[test]
    fn stored_names_keep_stem_and_extension() {
        assert_eq!(name("report.pdf"), format!("report_{ID}.pdf"));
        assert_eq!(name("a.tar.gz"), format!("a.tar_{ID}.gz"));
        assert_eq!(name("C:\\docs\\x.txt"), format!("x_{ID}.txt"));
        assert_eq!(name("../../etc/passwd"), format!("passwd_{ID}"));
        assert_eq!(name(".bashrc"), format!("_bashrc_{ID}"));
        assert_eq!(
            name("odd.ext with space"),
            format!("odd.ext with space_{ID}")
        );
        assert_eq!(name("tab\there"), format!("tab_here_{ID}"));
        assert_eq!(name("dir/"), format!("file_{ID}"));
        let long = "д".repeat(300) + ".bin";
        let n = name(&long);
        assert!(n.len() <= 255 && n.ends_with(&format!("_{ID}.bin")), "{n}");
    }
}
