//! Archive metadata (issue 4): `user.artstore.*` attributes through the
//! mount, a SHA-256 that is never stale, attr.json sidecars beside the
//! objects, full-text search and scrub.

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use common::{getx, listx, removex, setx, Mount};

fn get(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    getx(p, name)
}

fn get_s(p: &Path, name: &str) -> String {
    String::from_utf8(get(p, name).unwrap()).unwrap()
}

fn set(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    setx(p, name, value)
}

fn remove(p: &Path, name: &str) -> std::io::Result<()> {
    removex(p, name)
}

fn list(p: &Path) -> Vec<String> {
    listx(p)
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn errno(r: std::io::Result<()>) -> i32 {
    r.unwrap_err().raw_os_error().unwrap()
}

#[test]
fn archive_attributes_read_only_writable_and_custom() {
    common::engine::every_engine(|| {
        // The computed names are listed only with this option (readable by
        // name either way; tests/legacy_copy.rs checks the default).
        let m = Mount::with_args(&["--list-computed-xattrs"]);
        let f = m.path("report.pdf");
        fs::write(&f, b"%PDF").unwrap();
        let names = list(&f);
        for n in [
            "user.artstore.file_id",
            "user.artstore.sha256",
            "user.artstore.created_at",
            "user.artstore.updated_at",
            "user.artstore.created_by",
            "user.artstore.original_filename",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} not listed in {names:?}");
        }
        // Read-only: EPERM to set or remove, even as root.
        assert_eq!(errno(set(&f, "user.artstore.file_id", b"x")), libc::EPERM);
        assert_eq!(errno(set(&f, "user.artstore.sha256", b"0")), libc::EPERM);
        assert_eq!(errno(remove(&f, "user.artstore.created_by")), libc::EPERM);
        // Writable, validated.
        set(&f, "user.artstore.description", b"Q3 report").unwrap();
        set(&f, "user.artstore.version", b"1.2").unwrap();
        set(&f, "user.artstore.content_type", b"application/pdf").unwrap();
        assert_eq!(
            errno(set(&f, "user.artstore.content_type", b"pdf")),
            libc::EINVAL
        );
        assert_eq!(
            errno(set(&f, "user.artstore.retention_until", b"tomorrow")),
            libc::EINVAL
        );
        set(
            &f,
            "user.artstore.retention_until",
            b"2031-05-01T03:00:00+03:00",
        )
        .unwrap();
        assert_eq!(
            get_s(&f, "user.artstore.retention_until"),
            "2031-05-01T00:00:00Z"
        );
        // Custom attributes are plain user.* names.
        set(&f, "user.project", b"apollo").unwrap();
        assert_eq!(get_s(&f, "user.project"), "apollo");
        // Identity and provenance.
        assert_eq!(get_s(&f, "user.artstore.original_filename"), "report.pdf");
        assert_eq!(get_s(&f, "user.artstore.created_by"), "root");
        let id = get_s(&f, "user.artstore.file_id");
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        for t in ["created_at", "updated_at"] {
            let v = get_s(&f, &format!("user.artstore.{t}"));
            assert!(v.ends_with('Z'), "{t} = {v}");
            time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                .unwrap();
        }
        // The id survives rename and is shared by hard links. The first
        // rename of a file created moments ago carries the new name into the
        // original name (write-temp-and-rename); later renames keep it.
        fs::rename(&f, m.path("renamed.pdf")).unwrap();
        fs::rename(m.path("renamed.pdf"), m.path("final.pdf")).unwrap();
        fs::hard_link(m.path("final.pdf"), m.path("alias.pdf")).unwrap();
        assert_eq!(get_s(&m.path("final.pdf"), "user.artstore.file_id"), id);
        assert_eq!(get_s(&m.path("alias.pdf"), "user.artstore.file_id"), id);
        assert_eq!(
            get_s(&m.path("alias.pdf"), "user.artstore.original_filename"),
            "renamed.pdf"
        );
        // Directories have identity but no checksum; symlinks show none (Linux
        // allows no user.* attributes there).
        fs::create_dir(m.path("d")).unwrap();
        assert!(list(&m.path("d"))
            .iter()
            .any(|n| n == "user.artstore.file_id"));
        assert!(!list(&m.path("d"))
            .iter()
            .any(|n| n == "user.artstore.sha256"));
        std::os::unix::fs::symlink("renamed.pdf", m.path("l")).unwrap();
        assert!(list(&m.path("l")).is_empty());
    });
}

#[test]
fn sha256_is_never_stale() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let f = m.path("f");
        fs::write(&f, b"first").unwrap();
        assert_eq!(get_s(&f, "user.artstore.sha256"), sha(b"first"));
        // While a writer is open, the value is that of the content now.
        let mut w = OpenOptions::new().append(true).open(&f).unwrap();
        w.write_all(b" second").unwrap();
        assert_eq!(get_s(&f, "user.artstore.sha256"), sha(b"first second"));
        w.write_all(b" third").unwrap();
        assert_eq!(
            get_s(&f, "user.artstore.sha256"),
            sha(b"first second third")
        );
        drop(w);
        assert_eq!(
            get_s(&f, "user.artstore.sha256"),
            sha(b"first second third")
        );
        nix::unistd::truncate(&f, 5).unwrap();
        assert_eq!(get_s(&f, "user.artstore.sha256"), sha(b"first"));
        // A large file is hashed in the background or on demand: same answer.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(m.path("big"), &big).unwrap();
        assert_eq!(get_s(&m.path("big"), "user.artstore.sha256"), sha(&big));
        fs::write(m.path("empty"), b"").unwrap();
        assert_eq!(get_s(&m.path("empty"), "user.artstore.sha256"), sha(b""));
    });
}

#[test]
fn sidecars_repeat_the_metadata_beside_each_object() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        let f = m.path("doc.txt");
        fs::write(&f, b"hello").unwrap();
        set(&f, "user.artstore.description", b"greeting").unwrap();
        set(&f, "user.color", b"blue").unwrap();
        let ino = fs::metadata(&f).unwrap().ino();
        let id = get_s(&f, "user.artstore.file_id");
        m.unmount();
        let doc: serde_json::Value =
            serde_json::from_slice(&m.sidecar_bytes(ino).expect("a sidecar")).unwrap();
        assert_eq!(doc["schema_version"], "2.0");
        assert_eq!(doc["file_id"], id.as_str());
        assert_eq!(doc["original_filename"], "doc.txt");
        assert_eq!(doc["file_size"], 5);
        assert_eq!(doc["description"], "greeting");
        assert_eq!(doc["checksum"], sha(b"hello").as_str());
        assert_eq!(doc["custom_attributes"]["color"], "blue");
        assert!(doc["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(doc["fs"]["ino"], ino);
        assert_eq!(doc["fs"]["links"][0]["name"], "doc.txt");
        m.assert_consistent();
    });
}

fn cli(args: &[&str], m: &Mount) -> (i32, String, String) {
    let out = m
        .command(args[0])
        .args(&args[1..])
        .env("ARTFS_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn search_finds_names_descriptions_and_custom_values() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        fs::create_dir(m.path("reports")).unwrap();
        let a = m.path("reports/q3-budget.txt");
        fs::write(&a, b"x").unwrap();
        set(
            &a,
            "user.artstore.description",
            b"Quarterly budget of the Apollo programme",
        )
        .unwrap();
        let b = m.path("notes");
        fs::write(&b, b"y").unwrap();
        set(&b, "user.project", b"apollo moon").unwrap();
        set(&b, "user.artstore.version", b"draft-7").unwrap();
        fs::write(m.path("unrelated"), b"z").unwrap();
        // Searching while mounted sees what is committed: make it so.
        fs::File::open(&m.mnt).unwrap().sync_all().unwrap();

        let (code, out, _) = cli(&["search", "apollo"], &m);
        assert_eq!(code, 0);
        let hits: Vec<&str> = out.lines().collect();
        assert_eq!(hits.len(), 2, "{out}");
        assert!(hits.contains(&"/reports/q3-budget.txt") && hits.contains(&"/notes"));
        let (_, out, _) = cli(&["search", "budget"], &m);
        assert_eq!(out.trim(), "/reports/q3-budget.txt");
        let (_, out, _) = cli(&["search", "version:draft*"], &m);
        assert_eq!(out.trim(), "/notes");
        let (_, out, _) = cli(&["search", "apollo", "--limit", "1"], &m);
        assert_eq!(out.lines().count(), 1);
        // Renames and removals are reflected.
        fs::rename(m.path("notes"), m.path("moon-notes")).unwrap();
        fs::remove_file(&a).unwrap();
        fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
        let (_, out, _) = cli(&["search", "apollo"], &m);
        assert_eq!(out.trim(), "/moon-notes");
        // No match: exit 1; bad syntax: a clear error, exit 2.
        let (code, _, err) = cli(&["search", "zebra"], &m);
        assert_eq!(code, 1);
        assert!(err.contains("no matches"));
        let (code, _, err) = cli(&["search", "\"unbalanced"], &m);
        assert_eq!(code, 2);
        assert!(err.contains("malformed search query"), "{err}");
    });
}

#[test]
fn scrub_verifies_and_finds_damage() {
    common::engine::every_engine(|| {
        let mut m = Mount::new();
        fs::write(m.path("good"), b"good data").unwrap();
        fs::write(m.path("bad"), b"bad data!").unwrap();
        let ino = fs::metadata(m.path("bad")).unwrap().ino();
        // Hashes are recorded at close; make sure they are committed.
        get(&m.path("good"), "user.artstore.sha256").unwrap();
        get(&m.path("bad"), "user.artstore.sha256").unwrap();
        m.unmount();
        let (code, out, _) = cli(&["scrub"], &m);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("verified 2 files"), "{out}");
        // Flip one byte of an object behind artfs's back.
        let mut data = b"bad data!".to_vec();
        data[0] ^= 0xff;
        m.set_object_bytes(ino, &data);
        let (code, out, _) = cli(&["scrub", "--rate-limit", "100"], &m);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("damaged: /bad: content hash"), "{out}");
        assert!(!out.contains("damaged: /good"), "{out}");
    });
}
