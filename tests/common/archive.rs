//! Fixture: a tree as the original storage element left it, for import and
//! rebuild tests. Files live under a UTC date tree `YYYY/MM/DD/HH/`, named
//! `{stem}_{user}_{YYYYmmddTHHMMSS}_{file_id}{ext}`, each with
//! `<that name>.attr.json` beside it, in schema V1 (no `schema_version`,
//! `metadata`) or V2 (`schema_version: "2.0"`, `custom_attributes`).
//!
//! Everything is derived from a seed with a small PRNG of our own, and the
//! times and texts are computed here by hand (not with artfs's helpers), so
//! the fixture is an independent witness of what the original wrote.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// The schema a sidecar was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Schema {
    V1,
    V2,
}

/// How a broken entry is broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Defect {
    /// The attr.json is truncated mid-document.
    MalformedJson,
    /// The attr.json has no `file_id` (the data file's name still carries it).
    MissingFileId,
    /// The recorded checksum is not the SHA-256 of the content.
    ChecksumMismatch,
    /// The attr.json is there, its data file is not.
    MissingData,
}

/// What to write.
#[derive(Clone, Debug)]
pub struct ArchiveSpec {
    pub seed: u64,
    /// Healthy files in each schema.
    pub v1: usize,
    pub v2: usize,
    /// Give about half the files custom attributes (V1 `metadata`, V2
    /// `custom_attributes`) of mixed JSON types.
    pub custom_attributes: bool,
    /// Draw original filenames from a pool with non-ASCII names too.
    pub non_ascii_names: bool,
    /// Add two more healthy files (one V1, one V2) with the same
    /// original_filename, user and second, in the same hour directory.
    pub same_name_same_day: bool,
    /// Broken entries, in addition to the healthy ones.
    pub malformed_json: usize,
    pub missing_file_id: usize,
    pub checksum_mismatch: usize,
    pub missing_data: usize,
}

impl Default for ArchiveSpec {
    fn default() -> Self {
        ArchiveSpec {
            seed: 1,
            v1: 8,
            v2: 8,
            custom_attributes: true,
            non_ascii_names: true,
            same_name_same_day: true,
            malformed_json: 1,
            missing_file_id: 1,
            checksum_mismatch: 1,
            missing_data: 1,
        }
    }
}

impl ArchiveSpec {
    /// The default archive without its broken entries: healthy files only.
    pub fn healthy() -> Self {
        ArchiveSpec {
            malformed_json: 0,
            missing_file_id: 0,
            checksum_mismatch: 0,
            missing_data: 0,
            ..ArchiveSpec::default()
        }
    }
}

/// One file as written, and what a correct reader must find in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub schema: Schema,
    pub defect: Option<Defect>,
    pub file_id: String,
    pub original_filename: String,
    pub storage_filename: String,
    /// `YYYY/MM/DD/HH` of `created_at`, UTC.
    pub rel_dir: String,
    /// The data file (absent on disk for `Defect::MissingData`).
    pub data_path: PathBuf,
    pub attr_path: PathBuf,
    pub content: Vec<u8>,
    /// SHA-256 of `content`, lowercase hex.
    pub sha256: String,
    /// The checksum the attr.json records (differs from `sha256` only for
    /// `Defect::ChecksumMismatch`).
    pub recorded_checksum: String,
    pub content_type: String,
    pub description: Option<String>,
    pub version: Option<String>,
    pub created_by_id: String,
    pub created_by_username: String,
    pub created_by_fullname: Option<String>,
    /// Custom attributes as a reader must map them: strings as they are,
    /// other JSON values as their compact JSON text.
    pub custom: BTreeMap<String, String>,
    /// The same as written (V1 `metadata` / V2 `custom_attributes`).
    pub custom_raw: Map<String, Value>,
    /// Nanoseconds since the epoch, UTC, and the text written for them.
    pub created_at_ns: i64,
    pub created_at_text: String,
    pub updated_at_ns: i64,
    pub updated_at_text: String,
    /// Keys the original wrote that artfs does not know.
    pub extra: BTreeMap<String, Value>,
}

/// Write the tree under `root` (created if missing) and return its records,
/// in the order written.
pub fn write_archive(root: &Path, spec: &ArchiveSpec) -> Vec<Record> {
    let mut rng = SplitMix64(spec.seed);
    let mut plan: Vec<(Schema, Option<Defect>)> = Vec::new();
    plan.extend(std::iter::repeat_n((Schema::V1, None), spec.v1));
    plan.extend(std::iter::repeat_n((Schema::V2, None), spec.v2));
    for (n, defect) in [
        (spec.malformed_json, Defect::MalformedJson),
        (spec.missing_file_id, Defect::MissingFileId),
        (spec.checksum_mismatch, Defect::ChecksumMismatch),
        (spec.missing_data, Defect::MissingData),
    ] {
        for i in 0..n {
            let schema = if i % 2 == 0 { Schema::V2 } else { Schema::V1 };
            plan.push((schema, Some(defect)));
        }
    }

    let mut records = Vec::new();
    for (schema, defect) in plan {
        let name = pick_name(&mut rng, spec.non_ascii_names);
        let user = USERS[rng.below(USERS.len() as u64) as usize];
        let created = random_instant(&mut rng);
        let rec = build(&mut rng, spec, schema, defect, name, user, created);
        records.push(write_record(root, rec, &mut rng));
    }
    if spec.same_name_same_day {
        let name = pick_name(&mut rng, spec.non_ascii_names);
        let user = USERS[0];
        let created = random_instant(&mut rng);
        for schema in [Schema::V1, Schema::V2] {
            // Same second too: the storage names differ only by file_id.
            let rec = build(&mut rng, spec, schema, None, name, user, created);
            records.push(write_record(root, rec, &mut rng));
        }
    }
    records
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// (created_by_id, created_by_username, created_by_fullname)
type User = (&'static str, &'static str, Option<&'static str>);

const USERS: [User; 4] = [
    ("u-1001", "ivanov", Some("Иван Иванов")),
    ("u-1002", "jsmith", Some("John Smith")),
    ("7f3c2a1e-5d4b-4c3a-9b8e-1f2d3c4b5a69", "svc-ingest", None),
    ("u-1044", "müller", Some("Jürgen Müller")),
];

const ASCII_NAMES: [&str; 7] = [
    "report.pdf",
    "invoice_2024.xlsx",
    "photo.jpg",
    "notes.txt",
    "archive.tar.gz",
    "README",
    "data.csv",
];

const NON_ASCII_NAMES: [&str; 6] = [
    "Отчёт за март.pdf",
    "договор №17.docx",
    "日本語のメモ.txt",
    "café menu.pdf",
    "Ünïcödé ñame.csv",
    "📦 package.bin",
];

fn pick_name(rng: &mut SplitMix64, non_ascii: bool) -> &'static str {
    let n = ASCII_NAMES.len() + if non_ascii { NON_ASCII_NAMES.len() } else { 0 };
    let i = rng.below(n as u64) as usize;
    ASCII_NAMES
        .get(i)
        .copied()
        .unwrap_or_else(|| NON_ASCII_NAMES[i - ASCII_NAMES.len()])
}

/// Stem and extension as Python's `Path.stem` / `Path.suffix` split them.
fn split_name(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

fn content_type(name: &str) -> &'static str {
    match split_name(name).1 {
        ".pdf" => "application/pdf",
        ".xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ".docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ".jpg" => "image/jpeg",
        ".txt" => "text/plain",
        ".csv" => "text/csv",
        ".gz" => "application/gzip",
        _ => "application/octet-stream",
    }
}

/// Custom attributes of mixed JSON types, with the text a reader must
/// map each to.
fn custom_pool() -> Vec<(&'static str, Value, &'static str)> {
    vec![
        ("department", json!("Бухгалтерия"), "Бухгалтерия"),
        ("project", json!("apollo"), "apollo"),
        ("pages", json!(42), "42"),
        ("ratio", json!(0.5), "0.5"),
        ("approved", json!(true), "true"),
        ("reviewed_by", Value::Null, "null"),
        ("tags", json!(["a", "b"]), r#"["a","b"]"#),
        ("nested", json!({"k": "v", "n": 1}), r#"{"k":"v","n":1}"#),
        ("empty", json!(""), ""),
    ]
}

/// An instant in 2023..2026 with microsecond precision (what Python
/// datetimes hold); one in four on a whole second.
fn random_instant(rng: &mut SplitMix64) -> i64 {
    let start = 1_672_531_200i64; // 2023-01-01T00:00:00Z
    let secs = start + rng.below(3 * 365 * 86_400) as i64;
    let micros = if rng.below(4) == 0 {
        0
    } else {
        rng.below(1_000_000) as i64
    };
    secs * 1_000_000_000 + micros * 1_000
}

fn build(
    rng: &mut SplitMix64,
    spec: &ArchiveSpec,
    schema: Schema,
    defect: Option<Defect>,
    name: &str,
    user: User,
    created_at_ns: i64,
) -> Record {
    let file_id = uuid_v4(rng);
    let (stem, ext) = split_name(name);
    let storage_filename = format!(
        "{stem}_{}_{}_{file_id}{ext}",
        user.1,
        compact_utc(created_at_ns)
    );
    let len = match rng.below(8) {
        0 => 0,
        _ => rng.below(4096) as usize,
    };
    let content: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let sha256 = sha256_hex(&content);
    let recorded_checksum = if defect == Some(Defect::ChecksumMismatch) {
        sha256_hex(&[&content[..], b"tampered"].concat())
    } else {
        sha256.clone()
    };
    let updated_at_ns = created_at_ns + rng.below(10 * 86_400) as i64 * 1_000_000_000;
    // V1 wrote naive times, V2 aware ones; each with exceptions.
    let naive = match schema {
        Schema::V1 => rng.below(4) != 0,
        Schema::V2 => rng.below(6) == 0,
    };
    let mut custom_raw = Map::new();
    let mut custom = BTreeMap::new();
    if spec.custom_attributes && rng.below(2) == 0 {
        let pool = custom_pool();
        for _ in 0..1 + rng.below(4) {
            let (k, v, text) = &pool[rng.below(pool.len() as u64) as usize];
            custom_raw.insert(k.to_string(), v.clone());
            custom.insert(k.to_string(), text.to_string());
        }
    }
    let description = match rng.below(3) {
        0 => None,
        1 => Some("quarterly figures".to_string()),
        _ => Some("скан договора, страница 1".to_string()),
    };
    let version = match rng.below(3) {
        0 => None,
        1 => Some("1.0".to_string()),
        _ => Some("v2-draft".to_string()),
    };
    let mut extra = BTreeMap::new();
    if rng.below(3) == 0 {
        extra.insert("storage_element_id".to_string(), json!("storage_elem_01"));
    }
    Record {
        schema,
        defect,
        file_id,
        original_filename: name.to_string(),
        storage_filename,
        rel_dir: hour_dir(created_at_ns),
        data_path: PathBuf::new(),
        attr_path: PathBuf::new(),
        content,
        sha256,
        recorded_checksum,
        content_type: content_type(name).to_string(),
        description,
        version,
        created_by_id: user.0.to_string(),
        created_by_username: user.1.to_string(),
        created_by_fullname: user.2.map(str::to_string),
        custom,
        custom_raw,
        created_at_text: python_isoformat(created_at_ns, naive),
        created_at_ns,
        updated_at_text: python_isoformat(updated_at_ns, naive),
        updated_at_ns,
        extra,
    }
}

/// The attr.json the original would have written for `rec`.
fn document(rec: &Record, rng: &mut SplitMix64) -> Value {
    let mut doc = Map::new();
    if rec.defect != Some(Defect::MissingFileId) {
        doc.insert("file_id".into(), json!(rec.file_id));
    }
    doc.insert("original_filename".into(), json!(rec.original_filename));
    doc.insert("storage_filename".into(), json!(rec.storage_filename));
    doc.insert("file_size".into(), json!(rec.content.len()));
    doc.insert("content_type".into(), json!(rec.content_type));
    doc.insert("created_at".into(), json!(rec.created_at_text));
    doc.insert("updated_at".into(), json!(rec.updated_at_text));
    doc.insert("created_by_id".into(), json!(rec.created_by_id));
    doc.insert("created_by_username".into(), json!(rec.created_by_username));
    // V1 sometimes left empty optional fields out rather than null.
    let omit_nulls = rec.schema == Schema::V1 && rng.below(2) == 0;
    for (key, value) in [
        ("created_by_fullname", &rec.created_by_fullname),
        ("description", &rec.description),
        ("version", &rec.version),
    ] {
        if value.is_some() || !omit_nulls {
            doc.insert(key.into(), json!(value));
        }
    }
    doc.insert("checksum".into(), json!(rec.recorded_checksum));
    match rec.schema {
        Schema::V1 => {
            if !rec.custom_raw.is_empty() || !omit_nulls {
                doc.insert("metadata".into(), Value::Object(rec.custom_raw.clone()));
            }
        }
        Schema::V2 => {
            doc.insert("schema_version".into(), json!("2.0"));
            doc.insert(
                "custom_attributes".into(),
                Value::Object(rec.custom_raw.clone()),
            );
        }
    }
    for (k, v) in &rec.extra {
        doc.insert(k.clone(), v.clone());
    }
    Value::Object(doc)
}

fn write_record(root: &Path, mut rec: Record, rng: &mut SplitMix64) -> Record {
    let dir = root.join(&rec.rel_dir);
    std::fs::create_dir_all(&dir).unwrap();
    rec.data_path = dir.join(&rec.storage_filename);
    rec.attr_path = dir.join(format!("{}.attr.json", rec.storage_filename));
    let doc = document(&rec, rng);
    let mut text = serde_json::to_string_pretty(&doc).unwrap();
    // Python's json.dump escapes non-ASCII unless told otherwise: do both.
    if rng.below(2) == 0 {
        text = ascii_escape(&text);
    }
    if rec.defect == Some(Defect::MalformedJson) {
        let mut cut = text.len() / 2;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    std::fs::write(&rec.attr_path, text).unwrap();
    if rec.defect != Some(Defect::MissingData) {
        std::fs::write(&rec.data_path, &rec.content).unwrap();
    }
    rec
}

/// JSON text with every non-ASCII character as `\uXXXX` (surrogate pairs
/// beyond the BMP), as Python's `ensure_ascii=True` writes it. Only string
/// contents can hold non-ASCII, so the result is the same JSON value.
fn ascii_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// A v4 UUID from the PRNG.
fn uuid_v4(rng: &mut SplitMix64) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&rng.next().to_le_bytes());
    b[8..].copy_from_slice(&rng.next().to_le_bytes());
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// UTC civil time of `ns`: (year, month, day, hour, minute, second, micros).
fn civil(ns: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let micros = (ns.rem_euclid(1_000_000_000) / 1_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u32;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, micros)
}

fn hour_dir(ns: i64) -> String {
    let (y, m, d, h, ..) = civil(ns);
    format!("{y:04}/{m:02}/{d:02}/{h:02}")
}

/// `YYYYmmddTHHMMSS`, as in storage filenames.
fn compact_utc(ns: i64) -> String {
    let (y, m, d, h, mi, s, _) = civil(ns);
    format!("{y:04}{m:02}{d:02}T{h:02}{mi:02}{s:02}")
}

/// What Python's `datetime.isoformat()` writes: microseconds only when
/// nonzero; `+00:00` for an aware UTC datetime, nothing for a naive one.
pub fn python_isoformat(ns: i64, naive: bool) -> String {
    let (y, m, d, h, mi, s, us) = civil(ns);
    let mut out = format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
    if us != 0 {
        out.push_str(&format!(".{us:06}"));
    }
    if !naive {
        out.push_str("+00:00");
    }
    out
}

/// SplitMix64: tiny, and the same sequence for a seed forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for fixtures.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
