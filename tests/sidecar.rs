//! attr.json sidecars against a tree as the original storage element wrote
//! it (tests/common/archive.rs): schema detection, every value, broken
//! entries reported as errors, and UTC whatever the local time zone.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use artfs::blob::sidecar::{self, AttrJson, SchemaVersion, SidecarError};
use artfs::types::Timestamp;
use common::archive::{self, ArchiveSpec, Defect, Record, Schema};

/// Check one parse outcome against the fixture's record of what was written.
fn check_record(rec: &Record, parsed: &Result<(AttrJson, SchemaVersion), SidecarError>) {
    let what = rec.attr_path.display();
    match rec.defect {
        Some(Defect::MalformedJson) => {
            assert!(
                matches!(parsed, Err(SidecarError::Json(_))),
                "{what}: {parsed:?}"
            );
            return;
        }
        Some(Defect::MissingFileId) => {
            assert!(
                matches!(parsed, Err(SidecarError::MissingFileId)),
                "{what}: {parsed:?}"
            );
            return;
        }
        _ => {}
    }
    let (doc, version) = parsed.as_ref().unwrap_or_else(|e| panic!("{what}: {e}"));
    let want_version = match rec.schema {
        Schema::V1 => SchemaVersion::V1,
        Schema::V2 => SchemaVersion::V2,
    };
    assert_eq!(*version, want_version, "{what}");
    assert_eq!(doc.schema_version, "2.0");
    assert_eq!(doc.file_id, rec.file_id);
    assert_eq!(doc.original_filename, rec.original_filename);
    assert_eq!(doc.storage_filename, rec.storage_filename);
    assert_eq!(doc.file_size, rec.content.len() as u64);
    assert_eq!(doc.content_type.as_deref(), Some(rec.content_type.as_str()));
    assert_eq!(
        doc.created_at,
        Some(Timestamp(rec.created_at_ns)),
        "{what}: {}",
        rec.created_at_text
    );
    assert_eq!(
        doc.updated_at,
        Some(Timestamp(rec.updated_at_ns)),
        "{what}: {}",
        rec.updated_at_text
    );
    assert_eq!(
        doc.created_by_id.as_deref(),
        Some(rec.created_by_id.as_str())
    );
    assert_eq!(
        doc.created_by_username.as_deref(),
        Some(rec.created_by_username.as_str())
    );
    assert_eq!(doc.created_by_fullname, rec.created_by_fullname);
    assert_eq!(doc.description, rec.description);
    assert_eq!(doc.version, rec.version);
    assert_eq!(
        doc.checksum.as_deref(),
        Some(rec.recorded_checksum.as_str())
    );
    assert_eq!(doc.custom_attributes, rec.custom, "{what}");
    assert_eq!(doc.extra, rec.extra, "{what}");
    assert_eq!(doc.retention_until, None);
    assert!(doc.fs.is_none());

    // The date directory is created_at's UTC hour, as artfs formats it.
    let rfc = doc.created_at.unwrap().to_rfc3339();
    let hour_dir = format!(
        "{}/{}/{}/{}",
        &rfc[0..4],
        &rfc[5..7],
        &rfc[8..10],
        &rfc[11..13]
    );
    assert_eq!(hour_dir, rec.rel_dir);
    assert!(rfc.ends_with('Z'), "{rfc}");

    // The checksum matches the content exactly when it is not the broken one.
    let matches = doc.checksum.as_deref() == Some(rec.sha256.as_str());
    assert_eq!(
        matches,
        rec.defect != Some(Defect::ChecksumMismatch),
        "{what}"
    );
    if rec.defect == Some(Defect::MissingData) {
        assert!(!rec.data_path.exists());
    } else {
        let content = std::fs::read(&rec.data_path).unwrap();
        assert_eq!(archive::sha256_hex(&content), rec.sha256);
    }
}

/// Write an archive, parse every sidecar of it, and check it all.
fn check_archive(spec: &ArchiveSpec) {
    let dir = tempfile::tempdir().unwrap();
    let records = archive::write_archive(dir.path(), spec);
    let broken =
        spec.malformed_json + spec.missing_file_id + spec.checksum_mismatch + spec.missing_data;
    let pair = if spec.same_name_same_day { 2 } else { 0 };
    assert_eq!(records.len(), spec.v1 + spec.v2 + broken + pair);

    let mut versions = HashMap::new();
    for rec in &records {
        let parsed = AttrJson::parse(&std::fs::read(&rec.attr_path).unwrap());
        check_record(rec, &parsed);
        if let Ok((_, v)) = parsed {
            *versions.entry(v).or_insert(0usize) += 1;
        }
    }
    // Broken V1/V2 alternate starting with V2; checksum and missing-data
    // ones still parse.
    let parseable_broken = |n: usize, schema: Schema| match schema {
        Schema::V2 => n.div_ceil(2),
        Schema::V1 => n / 2,
    };
    for (schema, version, healthy) in [
        (Schema::V1, SchemaVersion::V1, spec.v1),
        (Schema::V2, SchemaVersion::V2, spec.v2),
    ] {
        let want = healthy
            + pair / 2
            + parseable_broken(spec.checksum_mismatch, schema)
            + parseable_broken(spec.missing_data, schema);
        assert_eq!(
            versions.get(&version).copied().unwrap_or(0),
            want,
            "{version:?}"
        );
    }

    // scan walks the date tree and finds exactly these sidecars, with the
    // same outcome for each.
    let by_path: HashMap<&Path, &Record> =
        records.iter().map(|r| (r.attr_path.as_path(), r)).collect();
    let mut seen = BTreeSet::new();
    for (path, parsed) in sidecar::scan(dir.path()) {
        let rec = by_path
            .get(path.as_path())
            .unwrap_or_else(|| panic!("unexpected {}", path.display()));
        check_record(rec, &parsed);
        assert!(seen.insert(path), "scanned twice");
    }
    let all: BTreeSet<PathBuf> = records.iter().map(|r| r.attr_path.clone()).collect();
    assert_eq!(seen, all);
}

#[test]
fn archive_sidecars_parse_as_written() {
    common::engine::every_engine(|| {
        let spec = ArchiveSpec::default();
        check_archive(&spec);

        // The default fixture really covers what it claims to.
        let dir = tempfile::tempdir().unwrap();
        let records = archive::write_archive(dir.path(), &spec);
        assert!(records.iter().any(|r| !r.original_filename.is_ascii()));
        assert!(records
            .iter()
            .any(|r| r.custom_raw.values().any(|v| !v.is_string())));
        assert!(records
            .iter()
            .any(|r| r.schema == Schema::V1 && !r.custom.is_empty()));
        assert!(records.iter().any(|r| !r.created_at_text.contains('+')));
        assert!(records
            .iter()
            .any(|r| r.created_at_text.ends_with("+00:00")));
        assert!(records.iter().any(|r| !r.extra.is_empty()));
        let texts: Vec<String> = records
            .iter()
            .map(|r| String::from_utf8(std::fs::read(&r.attr_path).unwrap()).unwrap())
            .collect();
        assert!(
            texts.iter().any(|t| t.contains("\\u")),
            "some ensure_ascii documents"
        );
        assert!(
            texts.iter().any(|t| !t.is_ascii()),
            "some raw UTF-8 documents"
        );
        // The collision pair: same name, same hour directory, different files.
        let pair: Vec<&Record> = records.iter().rev().take(2).collect();
        assert_eq!(pair[0].original_filename, pair[1].original_filename);
        assert_eq!(pair[0].rel_dir, pair[1].rel_dir);
        assert_ne!(pair[0].file_id, pair[1].file_id);
        assert_ne!(pair[0].storage_filename, pair[1].storage_filename);
    });
}

#[test]
fn other_seeds_and_shapes() {
    common::engine::every_engine(|| {
        for seed in 2..=6 {
            check_archive(&ArchiveSpec {
                seed,
                v1: 5,
                v2: 5,
                malformed_json: 2,
                missing_file_id: 2,
                checksum_mismatch: 3,
                missing_data: 2,
                ..ArchiveSpec::default()
            });
        }
        check_archive(&ArchiveSpec {
            seed: 7,
            v1: 3,
            v2: 0,
            custom_attributes: false,
            non_ascii_names: false,
            same_name_same_day: false,
            ..ArchiveSpec::healthy()
        });
    });
}

#[test]
fn generator_is_deterministic() {
    common::engine::every_engine(|| {
        let (a, b, c) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let spec = ArchiveSpec::default();
        let ra = archive::write_archive(a.path(), &spec);
        let rb = archive::write_archive(b.path(), &spec);
        let rc = archive::write_archive(
            c.path(),
            &ArchiveSpec {
                seed: 99,
                ..spec.clone()
            },
        );
        assert_eq!(ra.len(), rb.len());
        for (x, y) in ra.iter().zip(&rb) {
            let rel =
                |r: &Record, root: &Path| r.attr_path.strip_prefix(root).unwrap().to_path_buf();
            assert_eq!(rel(x, a.path()), rel(y, b.path()));
            assert_eq!(
                std::fs::read(&x.attr_path).unwrap(),
                std::fs::read(&y.attr_path).unwrap()
            );
            assert_eq!(
                (&x.file_id, &x.content, &x.custom),
                (&y.file_id, &y.content, &y.custom)
            );
        }
        let ids = |rs: &[Record]| {
            rs.iter()
                .map(|r| r.file_id.clone())
                .collect::<BTreeSet<_>>()
        };
        assert!(ids(&ra).is_disjoint(&ids(&rc)));
    });
}

#[test]
fn v1_rewritten_is_v2_and_loses_nothing() {
    common::engine::every_engine(|| {
        let dir = tempfile::tempdir().unwrap();
        let records = archive::write_archive(dir.path(), &ArchiveSpec::default());
        let out = tempfile::tempdir().unwrap();
        let mut upgraded = 0;
        for rec in records
            .iter()
            .filter(|r| r.schema == Schema::V1 && r.defect.is_none())
        {
            let (doc, v) = AttrJson::parse(&std::fs::read(&rec.attr_path).unwrap()).unwrap();
            assert_eq!(v, SchemaVersion::V1);
            let path = out
                .path()
                .join(format!("{}.attr.json", rec.storage_filename));
            sidecar::write_atomic(&path, &doc).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains("\"schema_version\": \"2.0\""));
            assert!(!text.contains("\"metadata\""));
            let (again, v) = AttrJson::parse(text.as_bytes()).unwrap();
            assert_eq!(v, SchemaVersion::V2);
            assert_eq!(again, doc);
            let mut check = rec.clone();
            check.schema = Schema::V2;
            check_record(&check, &Ok((again, v)));
            upgraded += 1;
        }
        assert!(upgraded > 0);
    });
}

/// The time zone the child runs in: UTC+3 all year (no DST since 2014).
const CHILD_TZ: &str = "Europe/Moscow";

#[test]
fn utc_whatever_the_local_zone() {
    common::engine::every_engine(|| {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "tz_child_checks",
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .env("TZ", CHILD_TZ)
            .env("ARTFS_TZ_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "child did not run the checks:\n{stdout}"
        );
    });
}

/// Run by `utc_whatever_the_local_zone` in a child process with `TZ` set.
#[test]
#[ignore = "run in a child with TZ set by utc_whatever_the_local_zone"]
fn tz_child_checks() {
    assert_eq!(std::env::var("ARTFS_TZ_CHILD").as_deref(), Ok("1"));
    assert_eq!(std::env::var("TZ").as_deref(), Ok(CHILD_TZ));
    // The zone really is in effect for this process (else the test proves
    // nothing): 2024-03-05T10:20:30Z is 13:20:30 local.
    let instant = 1_709_634_030i64;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = instant as libc::time_t;
    assert!(!unsafe { libc::localtime_r(&t, &mut tm) }.is_null());
    assert_eq!((tm.tm_gmtoff, tm.tm_hour), (3 * 3600, 13), "TZ not applied");

    let ns = instant * 1_000_000_000;
    assert_eq!(Timestamp(ns).to_rfc3339(), "2024-03-05T10:20:30Z");
    assert_eq!(
        Timestamp(ns + 123_000).to_rfc3339(),
        "2024-03-05T10:20:30.000123Z"
    );
    assert_eq!(
        Timestamp::parse_rfc3339("2024-03-05T10:20:30"),
        Ok(Timestamp(ns))
    );
    assert_eq!(
        Timestamp::parse_rfc3339("2024-03-05T13:20:30+03:00"),
        Ok(Timestamp(ns))
    );
    let now = Timestamp::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let parsed = Timestamp::parse_rfc3339(&now.to_rfc3339()).unwrap();
    assert_eq!(parsed, now);
    assert!((wall - now.0).abs() < 60_000_000_000, "now is not UTC");

    // The whole archive check, naive times included, under this zone.
    check_archive(&ArchiveSpec::default());
    let doc = AttrJson {
        created_at: Some(Timestamp(ns)),
        ..AttrJson::new("0190f5d2-7a4b-7c3e-8d1f-2a3b4c5d6e7f")
    };
    let text = String::from_utf8(doc.to_json()).unwrap();
    assert!(
        text.contains("\"created_at\": \"2024-03-05T10:20:30Z\""),
        "{text}"
    );
}
