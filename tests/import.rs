//! `artfs import`: a tree written by the original storage element
//! (tests/common/archive.rs: V1 and V2 sidecars, custom attributes,
//! non-ASCII names, a same-name pair, broken entries) imported with the
//! built binary, then checked through a real mount with real syscalls:
//! paths, content, the `user.artstore.*` attributes, the report and exit
//! code, idempotence, `--link`, a mounted store refused, a crash mid-import,
//! and fsck clean afterwards.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use artfs::types::Timestamp;
use common::archive::{write_archive, ArchiveSpec, Defect, Record};
use common::{bin, Mount};

/// Run `artfs import SRC BACKING ARGS..`: (exit code, stdout + stderr).
/// `None` for the code when killed by a signal.
/// `store` names the store's tables (`Mount::store_args`).
fn import(
    src: &Path,
    backing: &Path,
    store: &[String],
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .arg("import")
        .arg(src)
        .arg(backing)
        .args(store)
        .args(args)
        // A non-UTC zone: nothing may depend on it.
        .env("TZ", "Europe/Moscow")
        .env("ARTFS_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run artfs import");
    let text = common::output_text(&out);
    (out.status.code(), text)
}

/// A run that skipped something (exit 1) with these counts in its report.
fn assert_counts(code: Option<i32>, out: &str, imported: usize, present: usize, skipped: usize) {
    assert_eq!(code, Some(1), "broken files make exit 1:\n{out}");
    let line = format!("{imported} imported, {present} already present, {skipped} skipped");
    assert!(out.contains(&line), "want {line:?} in:\n{out}");
}

/// lgetxattr through the mount; None when the attribute is absent.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid C strings and a buffer of the given length.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!(errno, Some(libc::ENODATA), "{} {name}", path.display());
        return None;
    }
    buf.truncate(r as usize);
    Some(buf)
}

fn xattr_text(path: &Path, name: &str) -> Option<String> {
    xattr(path, name).map(|v| String::from_utf8(v).unwrap())
}

/// Every regular file under `dir` (through the mount), recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&e.path()));
        } else {
            assert!(t.is_file(), "{}", e.path().display());
            out.push(e.path());
        }
    }
    out.sort();
    out
}

/// Stem and extension as the original split names (Python's Path.suffix).
fn split_name(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// Where each healthy record must land (relative to the mount root, under
/// `dest`), by the documented rule: `DEST/YYYY/MM/DD/original_filename`;
/// among files with the same name on the same day the oldest (then the
/// smallest file_id) keeps it, the others get `stem (8 hex of file_id).ext`.
fn expected_paths(records: &[Record], dest: &str) -> BTreeMap<String, PathBuf> {
    let mut groups: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.defect.is_none()) {
        let day = r.rel_dir[..10].to_string(); // YYYY/MM/DD of created_at, UTC
        groups
            .entry((day, r.original_filename.clone()))
            .or_default()
            .push(r);
    }
    let mut out = BTreeMap::new();
    for ((day, name), mut recs) in groups {
        recs.sort_by(|a, b| (a.created_at_ns, &a.file_id).cmp(&(b.created_at_ns, &b.file_id)));
        for (i, r) in recs.iter().enumerate() {
            let file = if i == 0 {
                name.clone()
            } else {
                let (stem, ext) = split_name(&name);
                format!("{stem} ({}){ext}", &r.file_id.replace('-', "")[..8])
            };
            out.insert(r.file_id.clone(), Path::new(dest).join(&day).join(file));
        }
    }
    out
}

/// Check every healthy record through the mount, and that nothing else is
/// there: one file per healthy file_id, none for the broken ones.
fn check_mount(m: &Mount, records: &[Record], dest: &str) {
    let want = expected_paths(records, dest);
    for r in records.iter().filter(|r| r.defect.is_none()) {
        let path = m.mnt.join(want[&r.file_id].strip_prefix("/").unwrap());
        let what = format!("{} ({})", path.display(), r.file_id);
        let content = std::fs::read(&path).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(content, r.content, "{what}");
        let a = |n: &str| xattr_text(&path, &format!("user.artstore.{n}"));
        assert_eq!(a("file_id").as_deref(), Some(r.file_id.as_str()), "{what}");
        assert_eq!(a("sha256").as_deref(), Some(r.sha256.as_str()), "{what}");
        assert_eq!(
            a("created_by").as_deref(),
            Some(r.created_by_username.as_str()),
            "{what}"
        );
        assert_eq!(
            a("original_filename").as_deref(),
            Some(r.original_filename.as_str()),
            "{what}"
        );
        assert_eq!(a("description"), r.description, "{what}");
        assert_eq!(a("version"), r.version, "{what}");
        assert_eq!(
            a("content_type").as_deref(),
            Some(r.content_type.as_str()),
            "{what}"
        );
        let created = Timestamp::parse_rfc3339(&a("created_at").unwrap()).unwrap();
        assert_eq!(created, Timestamp(r.created_at_ns), "{what}");
        for (k, v) in &r.custom {
            assert_eq!(
                xattr_text(&path, &format!("user.{k}")).as_deref(),
                Some(v.as_str()),
                "{what}: custom attribute {k}"
            );
        }
        let st = std::fs::metadata(&path).unwrap();
        assert_eq!(st.len(), r.content.len() as u64, "{what}");
        assert_eq!(
            st.mtime() * 1_000_000_000 + st.mtime_nsec(),
            r.updated_at_ns,
            "{what}: mtime is updated_at"
        );
    }
    // Nothing else, no duplicates.
    let root = m.path(dest.trim_start_matches('/'));
    let ids: Vec<String> = files_under(&root)
        .iter()
        .map(|p| xattr_text(p, "user.artstore.file_id").unwrap())
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate file_ids: {ids:?}");
    let healthy: BTreeSet<&String> = want.keys().collect();
    assert_eq!(unique, healthy);
}

/// The report names each broken entry with its reason.
fn check_broken_reported(records: &[Record], out: &str) {
    check_broken_reported_as(records, out, |p| p.display().to_string());
}

/// [`check_broken_reported`], the report naming each source file as `shown`
/// gives it.
fn check_broken_reported_as(records: &[Record], out: &str, shown: impl Fn(&Path) -> String) {
    for r in records {
        let (path, why) = match r.defect {
            None => continue,
            Some(Defect::MalformedJson) => (&r.attr_path, "malformed .attr.json: malformed JSON"),
            Some(Defect::MissingFileId) => (&r.attr_path, "malformed .attr.json: missing file_id"),
            Some(Defect::ChecksumMismatch) => (&r.data_path, "damaged: content SHA-256 is"),
            Some(Defect::MissingData) => (&r.attr_path, "its data file is missing"),
        };
        let line = format!("skipped: {}: {why}", shown(path));
        assert!(out.contains(&line), "want {line:?} in:\n{out}");
    }
    // A damaged file's report gives the content's actual checksum.
    for r in records
        .iter()
        .filter(|r| r.defect == Some(Defect::ChecksumMismatch))
    {
        assert!(out.contains(&r.sha256), "actual checksum reported:\n{out}");
    }
    // One line per broken entry: the data file of a broken sidecar is not
    // reported again on its own.
    assert_eq!(out.matches("skipped: ").count(), 4, "{out}");
}

#[test]
fn imports_an_archive_with_its_metadata_once() {
    common::engine::every_metadata_engine(|| {
        let archive = tempfile::tempdir().unwrap();
        let spec = ArchiveSpec::default();
        let records = write_archive(archive.path(), &spec);
        let healthy = records.iter().filter(|r| r.defect.is_none()).count();
        let broken = records.len() - healthy;
        assert!(healthy >= 18 && broken == 4);

        // Import into an empty BACKING: the import initialises the store.
        let mut first = None;
        let mut m = Mount::prepared_store(&[], |backing, store| {
            first = Some(import(
                archive.path(),
                backing,
                store,
                &["--dest", "/archive"],
                &[],
            ));
        });
        let (code, out) = first.unwrap();
        assert_counts(code, &out, healthy, 0, broken);
        check_broken_reported(&records, &out);
        // The same-name pair: one plain, one suffixed, both reported.
        assert!(out.contains("name taken: suffixed"), "{out}");
        check_mount(&m, &records, "/archive");
        m.unmount();
        m.assert_consistent();

        // Twice: nothing new, nothing duplicated.
        let (code, out) = import(
            archive.path(),
            &m.backing,
            &m.store_args(),
            &["--dest", "/archive"],
            &[],
        );
        assert_counts(code, &out, 0, healthy, broken);
        m.assert_consistent();
        m.mount();
        check_mount(&m, &records, "/archive");
        m.unmount();
    });
}

/// An element of the original that kept its files in a bucket: the same
/// tree, as keys under a folder (`s3://BUCKET/FOLDER`), imported into a
/// store as a directory's is, reported by URL, and fetched only once.
#[test]
fn imports_an_archive_from_a_bucket() {
    common::engine::every_metadata_engine(|| {
        let archive = tempfile::tempdir().unwrap();
        let records = write_archive(archive.path(), &ArchiveSpec::default());
        let healthy = records.iter().filter(|r| r.defect.is_none()).count();
        let broken = records.len() - healthy;
        let server = common::s3::S3Server::shared();
        let bucket = server.new_bucket("import-src");
        for f in files_under(archive.path()) {
            let rel = f.strip_prefix(archive.path()).unwrap().to_str().unwrap();
            bucket.put(&format!("element-01/{rel}"), &std::fs::read(&f).unwrap());
        }
        let url = format!("s3://{}/element-01", bucket.name);
        let env: Vec<(&str, String)> = server.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let args = ["--src-s3-endpoint", server.endpoint.as_str()];
        let mut first = None;
        let mut m = Mount::prepared_store(&[], |backing, store| {
            first = Some(import(Path::new(&url), backing, store, &args, &env));
        });
        let (code, out) = first.unwrap();
        assert_counts(code, &out, healthy, 0, broken);
        check_broken_reported_as(&records, &out, |p| {
            format!(
                "{url}/{}",
                p.strip_prefix(archive.path()).unwrap().display()
            )
        });
        check_mount(&m, &records, "/");
        m.unmount();
        m.assert_consistent();
        // Again: everything is there already; nothing is fetched twice.
        let (code, out) = import(Path::new(&url), &m.backing, &m.store_args(), &args, &env);
        assert_counts(code, &out, 0, healthy, broken);
        // Nothing fetched is left in the staging area.
        let left: Vec<PathBuf> = files_under(&m.backing)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("fetched-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        m.assert_consistent();
        // A bucket that does not exist is an error of the run (exit 2),
        // as a SRC directory that does not exist is.
        let gone = format!("s3://no-such-bucket-{}/x", std::process::id());
        let (code, out) = import(Path::new(&gone), &m.backing, &m.store_args(), &args, &env);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("cannot be listed"), "{out}");
        let (code, out) = import(
            Path::new(&url),
            &m.backing,
            &m.store_args(),
            &[args[0], args[1], "--link"],
            &env,
        );
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("--link"), "{out}");
        m.assert_consistent();
    });
}

#[test]
fn link_shares_the_inode_with_the_source() {
    common::engine::every_metadata_engine(|| {
        let archive = tempfile::tempdir().unwrap();
        let spec = ArchiveSpec {
            seed: 7,
            v1: 3,
            v2: 3,
            same_name_same_day: false,
            ..ArchiveSpec::healthy()
        };
        let records = write_archive(archive.path(), &spec);
        let mut result = None;
        let mut m = Mount::prepared_store(&[], |backing, store| {
            // Same filesystem (both temp dirs): the link must succeed.
            assert_eq!(
                std::fs::metadata(backing).unwrap().dev(),
                std::fs::metadata(archive.path()).unwrap().dev()
            );
            result = Some(import(archive.path(), backing, store, &["--link"], &[]));
        });
        let (code, out) = result.unwrap();
        assert_eq!(code, Some(0), "{out}");
        assert!(
            out.contains("6 imported, 0 already present, 0 skipped"),
            "{out}"
        );
        let want = expected_paths(&records, "/");
        for r in &records {
            let path = m.mnt.join(want[&r.file_id].strip_prefix("/").unwrap());
            assert_eq!(std::fs::read(&path).unwrap(), r.content);
            let ino = std::fs::metadata(&path).unwrap().ino();
            let object = m
                .backing
                .join("objects")
                .join(format!("{:02x}", ino & 0xff))
                .join(format!("{ino:016x}"));
            let obj = std::fs::metadata(&object).unwrap();
            let src = std::fs::metadata(&r.data_path).unwrap();
            assert_eq!(obj.ino(), src.ino(), "{}: object is the source", r.file_id);
            assert_eq!(obj.nlink(), 2);
            assert_eq!(
                xattr_text(&path, "user.artstore.sha256").as_deref(),
                Some(r.sha256.as_str())
            );
        }
        check_mount(&m, &records, "/");
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn a_mounted_store_is_refused() {
    common::engine::every_metadata_engine(|| {
        let archive = tempfile::tempdir().unwrap();
        write_archive(
            archive.path(),
            &ArchiveSpec {
                v1: 1,
                v2: 1,
                ..ArchiveSpec::default()
            },
        );
        let mut m = Mount::new();
        let (code, out) = import(archive.path(), &m.backing, &m.store_args(), &[], &[]);
        assert_eq!(code, Some(2), "{out}");
        assert!(
            out.contains("is mounted") && out.contains("unmount"),
            "{out}"
        );
        assert_eq!(std::fs::read_dir(&m.mnt).unwrap().count(), 0);
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn a_crash_mid_import_leaves_nothing_behind() {
    common::engine::every_metadata_engine(|| {
        let archive = tempfile::tempdir().unwrap();
        let spec = ArchiveSpec {
            seed: 11,
            v1: 2,
            v2: 2,
            ..ArchiveSpec::healthy()
        };
        let records = write_archive(archive.path(), &spec);
        let mut crashed = None;
        let mut m = Mount::prepared_store(&[], |backing, store| {
            // Dies with the first object in place and its inode not staged.
            let run = import(
                archive.path(),
                backing,
                store,
                &[],
                &[("FAILPOINTS", "import::after_object=return")],
            );
            assert_eq!(
                run.0, None,
                "the import should die at the crash point: {}",
                run.1
            );
            crashed = Some(run);
            let objects: usize = std::fs::read_dir(backing.join("objects"))
                .unwrap()
                .map(|d| {
                    std::fs::read_dir(d.unwrap().path())
                        .unwrap()
                        // Objects only, not the sidecars beside them.
                        .filter(|e| {
                            !e.as_ref()
                                .unwrap()
                                .file_name()
                                .to_string_lossy()
                                .contains('.')
                        })
                        .count()
                })
                .sum();
            assert_eq!(objects, 1, "the crash left the first object");
            // The next import recovers (the object goes) and imports all.
            let (code, out) = import(archive.path(), backing, store, &[], &[]);
            assert_eq!(code, Some(0), "{out}");
            assert!(out.contains("6 imported"), "{out}");
        });
        let (code, out) = crashed.unwrap();
        assert_eq!(code, None, "killed at the crash point: {out}");
        check_mount(&m, &records, "/");
        m.unmount();
        m.assert_consistent();
    });
}

#[test]
fn link_across_filesystems_falls_back_to_copying() {
    common::engine::every_metadata_engine(|| {
        let archive = tempfile::tempdir().unwrap();
        let spec = ArchiveSpec {
            seed: 3,
            v1: 1,
            v2: 1,
            same_name_same_day: false,
            ..ArchiveSpec::healthy()
        };
        let records = write_archive(archive.path(), &spec);
        let mut result = None;
        let mut m = Mount::prepared_store(&[], |backing, store| {
            nix::mount::mount(
                Some("tmpfs"),
                backing,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=64m"),
            )
            .expect("mount a tmpfs as BACKING (needs root)");
            result = Some(import(archive.path(), backing, store, &["--link"], &[]));
        });
        let _tmpfs = Unmounter(m.backing.clone());
        let (code, out) = result.unwrap();
        assert_eq!(code, Some(0), "{out}");
        assert_eq!(
            out.matches("note: copied instead of linked").count(),
            2,
            "{out}"
        );
        assert!(!out.contains(", linked)"), "{out}");
        check_mount(&m, &records, "/");
        for r in &records {
            assert_eq!(std::fs::metadata(&r.data_path).unwrap().nlink(), 1);
        }
        m.unmount();
        m.assert_consistent();
    });
}

/// Unmount a tmpfs BACKING after the test's mount is gone.
struct Unmounter(PathBuf);

impl Drop for Unmounter {
    fn drop(&mut self) {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}
