//! `artfs import SRC BACKING`: adopt a tree written by the original storage
//! element (`YYYY/MM/DD/HH/{storage_filename}` with
//! `{storage_filename}.attr.json` beside each file, schema V1 or V2) into a
//! store, offline. Each file appears at `DEST/YYYY/MM/DD/original_filename`
//! (date of `created_at`, UTC) keeping its file_id, checksum (verified),
//! creator, times, description, version, content type, retention and
//! custom attributes. See docs/IMPORT.md for the rules (names, collisions,
//! what is skipped and why).
//!
//! SRC is a directory, or the original's S3 element (`s3://BUCKET/FOLDER`):
//! its keys are the same tree, each file fetched into BACKING's staging
//! area before it is adopted.
//!
//! What it owns: walking SRC, pairing and parsing sidecars, mapping them to
//! [`ImportMeta`], choosing names, the progress bar and the report. Files
//! are created by [`Fs::import_file`], which keeps the WAL protocol.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::blob::sidecar::{AttrJson, SUFFIX};
use crate::core::{open_store, Fs, ImportMeta, ImportOutcome, StoreLock, StoreOptions};
use crate::types::{Caller, Timestamp, NAME_MAX};

/// Where the original's tree is.
#[derive(Clone, Debug)]
pub enum Source {
    Dir(PathBuf),
    /// An element that kept its files in a bucket (`s3://BUCKET/FOLDER`).
    Bucket(Box<crate::blob::S3Config>),
}

/// What to import, and where.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The original's tree.
    pub src: Source,
    pub store: StoreOptions,
    /// Directory of the store (slash-separated, from its root) under which
    /// the `YYYY/MM/DD` directories go; created if missing.
    pub dest: String,
    /// Hard-link content into BACKING instead of copying (falls back to a
    /// copy, with a note, across filesystems).
    pub link: bool,
    /// Show a progress bar on stderr (only drawn on a terminal).
    pub progress: bool,
}

/// One file imported.
#[derive(Clone, Debug)]
pub struct Imported {
    pub source: PathBuf,
    /// Path in the store, from its root.
    pub path: String,
    pub file_id: String,
    pub ino: u64,
    pub linked: bool,
    /// The name was taken by another file: a suffixed name was used.
    pub renamed: bool,
    pub notes: Vec<String>,
}

/// One file whose file_id the store already holds.
#[derive(Clone, Debug)]
pub struct Present {
    pub source: PathBuf,
    pub file_id: String,
    pub ino: u64,
}

/// One file (or sidecar) not imported, and why.
#[derive(Clone, Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub imported: Vec<Imported>,
    pub present: Vec<Present>,
    pub skipped: Vec<Skipped>,
}

impl Report {
    /// Exit 0 when nothing was skipped, else 1.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.skipped.is_empty())
    }

    /// The report as printed: one line per file, then the totals.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in &self.imported {
            let mut how = vec![format!("file_id {}", i.file_id)];
            if i.linked {
                how.push("linked".into());
            }
            if i.renamed {
                how.push("name taken: suffixed".into());
            }
            out.push(format!(
                "imported: /{} ({}) <- {}",
                i.path,
                how.join(", "),
                i.source.display()
            ));
            for n in &i.notes {
                out.push(format!("  note: {n}"));
            }
        }
        for p in &self.present {
            out.push(format!(
                "already present: {} (file_id {}, inode {})",
                p.source.display(),
                p.file_id,
                p.ino
            ));
        }
        for s in &self.skipped {
            out.push(format!("skipped: {}: {}", s.path.display(), s.reason));
        }
        out.push(format!(
            "{} imported, {} already present, {} skipped",
            self.imported.len(),
            self.present.len(),
            self.skipped.len()
        ));
        out
    }
}

/// A data file and its parsed sidecar, ready to import.
struct Candidate {
    data: PathBuf,
    attr: PathBuf,
    meta: ImportMeta,
}

/// Run an import. Errors are for the run as a whole (SRC unreadable, the
/// store unusable or mounted); per-file problems land in the report.
pub fn run(opts: &ImportOptions, rt: tokio::runtime::Handle) -> anyhow::Result<Report> {
    let origin = match &opts.src {
        Source::Dir(dir) => {
            let src = dir
                .canonicalize()
                .with_context(|| format!("SRC {} is not usable", dir.display()))?;
            if !src.is_dir() {
                bail!("SRC {} is not a directory", src.display());
            }
            Origin::Dir(src)
        }
        Source::Bucket(cfg) => {
            let tree = crate::blob::BucketTree::open((**cfg).clone(), rt.clone())
                .with_context(|| format!("SRC {}", cfg.url()))?;
            let keys = tree
                .keys()
                .with_context(|| format!("SRC {} cannot be listed", cfg.url()))?;
            Origin::Bucket {
                tree: Box::new(tree),
                keys,
            }
        }
    };
    if matches!(opts.store.content, crate::blob::Content::S3(_)) {
        // A bucket's cache directory is made on first use.
        std::fs::create_dir_all(&opts.store.backing).with_context(|| {
            format!(
                "cannot create the cache directory {}",
                opts.store.backing.display()
            )
        })?;
    }
    let backing = opts
        .store
        .backing
        .canonicalize()
        .with_context(|| format!("BACKING {} is not usable", opts.store.backing.display()))?;
    if let Origin::Dir(src) = &origin {
        if backing.starts_with(src) || src.starts_with(&backing) {
            bail!(
                "SRC {} and BACKING {} must not contain one another",
                src.display(),
                backing.display()
            );
        }
    }
    if StoreLock::is_held(&backing) {
        bail!(
            "{} is mounted (its daemon holds the store lock); unmount it first, then import",
            backing.display()
        );
    }
    let (fs, _lock) = open_store(&opts.store, rt)
        .with_context(|| format!("cannot open store {}", backing.display()))?;
    let result = import_all(&fs, &origin, opts);
    let synced = fs.sync_meta();
    fs.close();
    let report = result?;
    synced.context("cannot commit the imported metadata")?;
    Ok(report)
}

/// SRC, opened.
enum Origin {
    Dir(PathBuf),
    Bucket {
        tree: Box<crate::blob::BucketTree>,
        /// Every key under the folder, relative to it.
        keys: Vec<String>,
    },
}

impl Origin {
    /// The root the files' paths start with (a bucket's: its URL).
    fn root(&self) -> PathBuf {
        match self {
            Origin::Dir(d) => d.clone(),
            Origin::Bucket { tree, .. } => PathBuf::from(tree.url()),
        }
    }

    /// The bytes of the file at `path` (a sidecar).
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        match self {
            Origin::Dir(_) => std::fs::read(path),
            Origin::Bucket { tree, .. } => tree.get(&self.key_of(path)),
        }
    }

    /// A bucket file's key, from its path.
    fn key_of(&self, path: &Path) -> String {
        let rel = path.strip_prefix(self.root()).unwrap_or(path);
        rel.to_string_lossy().into_owned()
    }
}

fn import_all(fs: &Fs, origin: &Origin, opts: &ImportOptions) -> anyhow::Result<Report> {
    // Left by an interrupted import; nothing refers to it (we hold the lock).
    let staging = fs.import_staging_dir();
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot clear {}", staging.display()))
        }
        _ => {}
    }
    let mut report = Report::default();
    let (candidates, skipped) = collect(origin);
    report.skipped = skipped;

    let caller = Caller {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        pid: 0,
        subject: None,
        groups: None,
        grants: None,
    };
    let dest = opts.dest.trim_matches('/').to_string();
    fs.mkdir_p(&caller, dest.as_bytes())
        .with_context(|| format!("cannot make the destination /{dest}"))?;

    let bar = if opts.progress {
        indicatif::ProgressBar::new(candidates.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} eta {eta} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    for c in candidates {
        bar.set_message(c.meta.file_id.clone());
        let done = match origin {
            Origin::Dir(_) => import_one(fs, &caller, &dest, &c, &c.data, opts.link),
            Origin::Bucket { tree, .. } => import_fetched(fs, &caller, &dest, &c, tree, origin),
        };
        match done {
            Ok(Done::Imported(i)) => report.imported.push(i),
            Ok(Done::Present(p)) => report.present.push(p),
            Err(reason) => report.skipped.push(Skipped {
                path: c.data.clone(),
                reason,
            }),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Empty unless something failed midway; then the next run clears it.
    let _ = std::fs::remove_dir(&staging);
    report.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

enum Done {
    Imported(Imported),
    Present(Present),
}

/// Import one file of a bucket: fetched into BACKING's staging area first
/// (unless the store has it already), then adopted as a local file is.
fn import_fetched(
    fs: &Fs,
    caller: &Caller,
    dest: &str,
    c: &Candidate,
    tree: &crate::blob::BucketTree,
    origin: &Origin,
) -> Result<Done, String> {
    // A second run fetches nothing it imported already.
    if let Ok(Some(ino)) = fs.find_by_file_id(&c.meta.file_id) {
        return Ok(Done::Present(Present {
            source: c.data.clone(),
            file_id: c.meta.file_id.clone(),
            ino,
        }));
    }
    let staging = fs.import_staging_dir();
    std::fs::create_dir_all(&staging).map_err(|e| format!("cannot fetch: {e}"))?;
    let temp = staging.join(format!("fetched-{}", uuid::Uuid::new_v4()));
    let fetched = tree
        .download(&origin.key_of(&c.data), &temp)
        .map_err(|e| format!("cannot fetch: {e}"));
    // Into a local store the fetched file is linked, not copied again
    // (same filesystem: BACKING); into a bucket's cache it is copied.
    let local = !fs.content_is_remote();
    let done = fetched.and_then(|()| import_one(fs, caller, dest, c, &temp, local));
    let _ = std::fs::remove_file(&temp);
    done.map(|d| match d {
        Done::Imported(i) => Done::Imported(Imported { linked: false, ..i }),
        d => d,
    })
}

/// Import one file (its content at `data`) under the first free name of
/// the collision rule.
fn import_one(
    fs: &Fs,
    caller: &Caller,
    dest: &str,
    c: &Candidate,
    data: &Path,
    link: bool,
) -> Result<Done, String> {
    let day = day_dir(c.meta.created_at);
    let dir_path = if dest.is_empty() {
        day
    } else {
        format!("{dest}/{day}")
    };
    let dir = fs
        .mkdir_p(caller, dir_path.as_bytes())
        .map_err(|e| format!("cannot make /{dir_path}: {e}"))?;
    let original = String::from_utf8_lossy(&c.meta.original_filename).into_owned();
    for (n, name) in target_names(&original, &c.meta.file_id)
        .into_iter()
        .enumerate()
    {
        match fs.import_file(caller, dir, &name, &c.meta, data, link) {
            Ok(ImportOutcome::Imported {
                ino, linked, notes, ..
            }) => {
                return Ok(Done::Imported(Imported {
                    source: c.data.clone(),
                    path: format!("{dir_path}/{}", String::from_utf8_lossy(&name)),
                    file_id: c.meta.file_id.clone(),
                    ino,
                    linked,
                    renamed: n > 0,
                    notes,
                }))
            }
            Ok(ImportOutcome::AlreadyPresent { ino }) => {
                return Ok(Done::Present(Present {
                    source: c.data.clone(),
                    file_id: c.meta.file_id.clone(),
                    ino,
                }))
            }
            Ok(ImportOutcome::ChecksumMismatch { expected, actual }) => {
                return Err(format!(
                    "damaged: content SHA-256 is {actual}, {} records {expected}",
                    file_name(&c.attr)
                ))
            }
            Err(e) if e.errno() == libc::EEXIST => continue,
            Err(e) => return Err(format!("cannot import: {e}")),
        }
    }
    Err(format!(
        "every name for it in /{dir_path} is taken by other files"
    ))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Walk SRC: pair each data file with its sidecar and parse it. Returns the
/// candidates in import order (oldest `created_at` first, then file_id, so
/// the oldest of same-named files keeps the plain name) and what cannot be
/// imported.
fn collect(origin: &Origin) -> (Vec<Candidate>, Vec<Skipped>) {
    let src = origin.root();
    let mut files = BTreeSet::new();
    let mut skipped = Vec::new();
    match origin {
        Origin::Dir(dir) => walk(dir, &mut files, &mut skipped),
        Origin::Bucket { keys, .. } => files.extend(keys.iter().map(|k| src.join(k))),
    }
    let src = src.as_path();
    let mut candidates = Vec::new();
    for path in &files {
        let name = path.as_os_str().as_bytes();
        if let Some(data) = name.strip_suffix(SUFFIX.as_bytes()) {
            let data = PathBuf::from(OsStr::from_bytes(data));
            if !files.contains(&data) {
                skipped.push(Skipped {
                    path: path.clone(),
                    reason: "its data file is missing".into(),
                });
                continue;
            }
            match parse(origin, path, &data, src) {
                Ok(meta) => candidates.push(Candidate {
                    data,
                    attr: path.clone(),
                    meta,
                }),
                Err(reason) => skipped.push(Skipped {
                    path: path.clone(),
                    reason,
                }),
            }
        } else {
            let mut attr = name.to_vec();
            attr.extend_from_slice(SUFFIX.as_bytes());
            let attr = PathBuf::from(OsStr::from_bytes(&attr));
            if !files.contains(&attr) {
                skipped.push(Skipped {
                    path: path.clone(),
                    reason: format!("no {SUFFIX} beside it"),
                });
            }
        }
    }
    candidates.sort_by(|a, b| {
        (a.meta.created_at, &a.meta.file_id).cmp(&(b.meta.created_at, &b.meta.file_id))
    });
    (candidates, skipped)
}

/// Regular files under `dir`, recursively, without following symlinks.
fn walk(dir: &Path, files: &mut BTreeSet<PathBuf>, skipped: &mut Vec<Skipped>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            skipped.push(Skipped {
                path: dir.to_path_buf(),
                reason: format!("cannot read directory: {e}"),
            });
            return;
        }
    };
    for e in entries {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                skipped.push(Skipped {
                    path: dir.to_path_buf(),
                    reason: format!("cannot read directory: {err}"),
                });
                return;
            }
        };
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&path, files, skipped),
            Ok(t) if t.is_file() => {
                files.insert(path);
            }
            Ok(_) => skipped.push(Skipped {
                path,
                reason: "not a regular file".into(),
            }),
            Err(err) => skipped.push(Skipped {
                path,
                reason: format!("cannot stat: {err}"),
            }),
        }
    }
}

/// Read and map one sidecar.
fn parse(origin: &Origin, attr: &Path, data: &Path, src: &Path) -> Result<ImportMeta, String> {
    let text = origin.read(attr).map_err(|e| format!("cannot read: {e}"))?;
    let (doc, _) = AttrJson::parse(&text).map_err(|e| format!("malformed {SUFFIX}: {e}"))?;
    map_meta(doc, data, src)
}

/// The original's fields as the import keeps them.
fn map_meta(doc: AttrJson, data: &Path, src: &Path) -> Result<ImportMeta, String> {
    let created_at = match doc.created_at {
        Some(t) => t,
        None => hour_of_path(data, src).ok_or_else(|| {
            "no created_at, and the file is not under a YYYY/MM/DD/HH directory".to_string()
        })?,
    };
    let original = if doc.original_filename.is_empty() {
        // The original always had one; fall back on the stored name.
        file_name(data)
    } else {
        doc.original_filename
    };
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ImportMeta {
        file_id: doc.file_id.to_ascii_lowercase(),
        original_filename: original.into_bytes(),
        created_at,
        updated_at: doc.updated_at,
        created_by: nonempty(doc.created_by_username)
            .or(nonempty(doc.created_by_id))
            .unwrap_or_default(),
        checksum: nonempty(doc.checksum),
        description: nonempty(doc.description),
        version: nonempty(doc.version),
        content_type: nonempty(doc.content_type),
        retention_until: doc.retention_until,
        custom: doc.custom_attributes.into_iter().collect(),
    })
}

/// The start of the hour of the `YYYY/MM/DD/HH` directory holding `data`.
fn hour_of_path(data: &Path, src: &Path) -> Option<Timestamp> {
    let rel = data.parent()?.strip_prefix(src).ok()?;
    let parts: Vec<&str> = rel.iter().map(|c| c.to_str()).collect::<Option<_>>()?;
    let [y, m, d, h] = parts.as_slice() else {
        return None;
    };
    Timestamp::parse_rfc3339(&format!("{y}-{m}-{d}T{h}:00:00Z")).ok()
}

/// `YYYY/MM/DD` of an instant, UTC.
pub fn day_dir(t: Timestamp) -> String {
    let dt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t.0))
        .expect("i64 nanoseconds are a valid instant");
    format!(
        "{:04}/{:02}/{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day()
    )
}

/// Stem and extension as the original split them (Python's `Path.stem` /
/// `Path.suffix`): the extension starts at the last dot, unless that dot
/// begins the name.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// The longest prefix of `s` of at most `max` bytes ending on a char boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `stem + tag + ext` within NAME_MAX bytes: the stem is cut (on a char
/// boundary) so the tag and the extension survive; an extension too long
/// to keep is treated as part of the stem.
fn fit(name: &str, tag: &str) -> Vec<u8> {
    let (stem, ext) = split_ext(name);
    let (stem, ext) = if tag.len() + ext.len() < NAME_MAX {
        (stem, ext)
    } else {
        (name, "")
    };
    let room = NAME_MAX - tag.len() - ext.len();
    format!("{}{tag}{ext}", cut(stem, room)).into_bytes()
}

/// An original filename made into a valid entry name: `/` and NUL become
/// `_`; an empty name, `.` and `..` become the file_id; at most 255 bytes,
/// cut on a char boundary keeping the extension.
pub fn sanitise_name(original: &str, file_id: &str) -> Vec<u8> {
    let clean: String = original
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    let clean = match clean.as_str() {
        "" | "." | ".." => file_id.to_string(),
        _ => clean,
    };
    fit(&clean, "")
}

/// The names tried, in order: the sanitised original filename; then, if
/// another file has it, `stem (first 8 hex of file_id).ext`; then
/// `stem (file_id).ext`.
pub fn target_names(original: &str, file_id: &str) -> [Vec<u8>; 3] {
    let plain = sanitise_name(original, file_id);
    let base = String::from_utf8(plain.clone()).expect("sanitised from a str, cut on boundaries");
    let short: String = file_id.chars().filter(|c| *c != '-').take(8).collect();
    [
        plain,
        fit(&base, &format!(" ({short})")),
        fit(&base, &format!(" ({file_id})")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1a2b3c4d-5e6f-4a0b-8c1d-2e3f4a5b6c7d";

    fn s(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(s(&sanitise_name("a/b\0c.txt", ID)), "a_b_c.txt");
        assert_eq!(s(&sanitise_name("", ID)), ID);
        assert_eq!(s(&sanitise_name(".", ID)), ID);
        assert_eq!(s(&sanitise_name("..", ID)), ID);
        assert_eq!(s(&sanitise_name("...", ID)), "...");
        assert_eq!(s(&sanitise_name(".bashrc", ID)), ".bashrc");
    }

    #[test]
    fn long_names_keep_their_extension_and_whole_chars() {
        let long = format!("{}.pdf", "ж".repeat(200)); // 400 bytes + 4
        let n = sanitise_name(&long, ID);
        assert!(n.len() <= 255, "{}", n.len());
        let t = s(&n);
        assert!(t.ends_with(".pdf"));
        assert_eq!(t.len(), 2 * 125 + 4);
        // An extension too long to keep is cut like the rest.
        let ext = format!("a.{}", "x".repeat(300));
        let n = sanitise_name(&ext, ID);
        assert_eq!(n.len(), 255);
        for name in target_names(&long, ID) {
            assert!(name.len() <= 255);
            assert!(s(&name).ends_with(".pdf"));
        }
    }

    #[test]
    fn collision_names_carry_the_file_id() {
        let [a, b, c] = target_names("archive.tar.gz", ID);
        assert_eq!(s(&a), "archive.tar.gz");
        assert_eq!(s(&b), "archive.tar (1a2b3c4d).gz");
        assert_eq!(s(&c), format!("archive.tar ({ID}).gz"));
        let [_, b, _] = target_names("README", ID);
        assert_eq!(s(&b), "README (1a2b3c4d)");
    }

    #[test]
    fn day_dirs_are_utc() {
        let t = Timestamp::parse_rfc3339("2024-03-05T23:30:00-02:00").unwrap();
        assert_eq!(day_dir(t), "2024/03/06");
    }

    #[test]
    fn hour_dirs_give_a_time_when_created_at_is_missing() {
        let src = Path::new("/src");
        let t = hour_of_path(Path::new("/src/2024/03/05/10/x_u_1_id.txt"), src).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-03-05T10:00:00Z");
        assert!(hour_of_path(Path::new("/src/other/x.txt"), src).is_none());
    }
}
