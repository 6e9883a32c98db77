//! Everyday copying tools against the mount (issue 18): `rsync -aX`,
//! `cp -a`, `cp --preserve=all` and `tar --xattrs` round trips between two
//! stores and through ext4 finish with exit 0 and no warnings and carry
//! the user-settable metadata; the computed `user.artstore.*` attributes
//! are readable by name but not listed (unless `--list-computed-xattrs`);
//! a file written under a temporary name and renamed records the name the
//! user sees as its original name.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{ext4_dir, getx, listx, removex, setx, Mount};

const COMPUTED: [&str; 6] = [
    "user.artstore.file_id",
    "user.artstore.sha256",
    "user.artstore.created_at",
    "user.artstore.updated_at",
    "user.artstore.created_by",
    "user.artstore.original_filename",
];

/// What `populate` puts in a tree: path, content, attributes.
type Expected = Vec<(
    &'static str,
    Option<&'static [u8]>,
    Vec<(&'static str, &'static [u8])>,
)>;

/// A small tree with archive metadata and custom attributes under `root`.
fn populate(root: &Path) -> Expected {
    let want: Expected = vec![
        (
            "report.txt",
            Some(b"quarterly numbers\n"),
            vec![
                ("user.artstore.description", b"Q3 report"),
                ("user.artstore.version", b"1.2"),
                ("user.artstore.content_type", b"text/plain"),
                ("user.project", b"apollo"),
            ],
        ),
        (
            "sub",
            None,
            vec![
                ("user.artstore.description", b"a directory"),
                ("user.dept", b"finance"),
            ],
        ),
        (
            "sub/data.bin",
            Some(&[0, 1, 2, 255, 7, 7, 7]),
            vec![
                ("user.artstore.version", b"7"),
                ("user.bin", &[0, 1, 2, 255]),
            ],
        ),
        ("sub/plain", Some(b""), vec![]),
    ];
    fs::create_dir_all(root).unwrap();
    for (rel, content, attrs) in &want {
        let p = root.join(rel);
        match content {
            Some(c) => fs::write(&p, c).unwrap(),
            None => fs::create_dir(&p).unwrap(),
        }
        for (n, v) in attrs {
            setx(&p, n, v).unwrap();
        }
    }
    want
}

/// Every path of `want` is under `root` with its content and exactly its
/// attributes in the listing; on artfs, `original_filename` is its name.
fn check_copy(root: &Path, want: &Expected, on_artfs: bool) {
    for (rel, content, attrs) in want {
        let p = root.join(rel);
        if let Some(c) = content {
            assert_eq!(&fs::read(&p).unwrap(), c, "{p:?}");
        } else {
            assert!(p.is_dir(), "{p:?}");
        }
        let mut listed = listx(&p);
        listed.sort();
        let mut names: Vec<String> = attrs.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(listed, names, "attributes of {p:?}");
        for (n, v) in attrs {
            assert_eq!(&getx(&p, n).unwrap(), v, "{n} of {p:?}");
        }
        if on_artfs {
            let base = Path::new(rel).file_name().unwrap().to_str().unwrap();
            assert_eq!(
                getx(&p, "user.artstore.original_filename").unwrap(),
                base.as_bytes(),
                "the original name of {p:?}"
            );
        } else {
            assert!(COMPUTED.iter().all(|n| getx(&p, n).is_err()), "{p:?}");
        }
    }
}

/// Run a tool: it must exit 0 and print nothing on stderr.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{cmd:?}: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn rsync(from: &Path, to: &Path) {
    // Trailing slashes: copy the contents of `from` into `to`.
    run(Command::new("rsync")
        .arg("-aX")
        .arg(format!("{}/", from.display()))
        .arg(format!("{}/", to.display())));
}

fn tar_copy(from_dir: &Path, name: &str, to_dir: &Path) {
    let scratch = ext4_dir();
    let archive = scratch.path().join("a.tar");
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-cf"])
        .arg(&archive)
        .arg("-C")
        .arg(from_dir)
        .arg(name));
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=user.*", "-xf"])
        .arg(&archive)
        .arg("-C")
        .arg(to_dir));
}

fn errno(r: std::io::Result<()>) -> i32 {
    r.unwrap_err().raw_os_error().unwrap()
}

#[test]
fn computed_attributes_are_read_by_name_and_listed_only_on_request() {
    common::engine::every_engine(|| {
        let m = Mount::new();
        let f = m.path("fresh");
        fs::write(&f, b"x").unwrap();
        // "Set one attribute, list, expect one."
        assert!(listx(&f).is_empty(), "{:?}", listx(&f));
        setx(&f, "user.one", b"1").unwrap();
        assert_eq!(listx(&f), ["user.one"]);
        fs::create_dir(m.path("d")).unwrap();
        assert!(listx(&m.path("d")).is_empty());
        // Readable by name, each of them.
        for n in COMPUTED {
            assert!(!getx(&f, n).unwrap().is_empty(), "{n}");
        }
        let out = Command::new("getfattr")
            .args(["--only-values", "-n", "user.artstore.sha256"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            out.stdout,
            b"2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );

        // Setting one to the value it has is a no-op; any other value, and
        // removal, stay EPERM.
        let id = getx(&f, "user.artstore.file_id").unwrap();
        setx(&f, "user.artstore.file_id", &id).unwrap();
        let sha = getx(&f, "user.artstore.sha256").unwrap();
        setx(&f, "user.artstore.sha256", &sha).unwrap();
        assert_eq!(getx(&f, "user.artstore.file_id").unwrap(), id);
        assert_eq!(
            errno(setx(
                &f,
                "user.artstore.file_id",
                b"0190aaaa-0000-7000-8000-000000000000"
            )),
            libc::EPERM
        );
        assert_eq!(errno(setx(&f, "user.artstore.sha256", b"00")), libc::EPERM);
        assert_eq!(errno(removex(&f, "user.artstore.file_id")), libc::EPERM);
        assert_eq!(listx(&f), ["user.one"]);

        // With --list-computed-xattrs they are listed as well.
        let m2 = Mount::with_args(&["--list-computed-xattrs"]);
        let g = m2.path("fresh");
        fs::write(&g, b"x").unwrap();
        let mut listed = listx(&g);
        listed.sort();
        let mut want: Vec<&str> = COMPUTED.to_vec();
        want.sort();
        assert_eq!(listed, want);
        // getfattr's dump of the archive metadata, as documented.
        let out = Command::new("getfattr")
            .args(["-d", "-m", r"^user\.artstore\.", "--absolute-names"])
            .arg(&g)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success());
        assert!(
            text.contains("user.artstore.original_filename=\"fresh\""),
            "{text}"
        );
        assert!(text.contains("user.artstore.file_id="), "{text}");
    });
}

#[test]
fn a_getfattr_dump_restores_onto_its_own_file() {
    common::engine::every_engine(|| {
        // With the computed names listed, a dump holds them; restoring it onto
        // the same, unchanged file succeeds and changes nothing.
        let m = Mount::with_args(&["--list-computed-xattrs"]);
        let f = m.path("f.txt");
        fs::write(&f, b"content").unwrap();
        setx(&f, "user.artstore.description", b"before").unwrap();
        let dump = Command::new("getfattr")
            .args(["-d", "-m", "-", "--absolute-names"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(dump.status.success());
        let text = String::from_utf8(dump.stdout).unwrap();
        assert!(text.contains("user.artstore.file_id="), "{text}");
        let scratch = ext4_dir();
        let file = scratch.path().join("dump");
        fs::write(&file, &text).unwrap();
        let id = getx(&f, "user.artstore.file_id").unwrap();
        run(Command::new("setfattr").arg(format!("--restore={}", file.display())));
        assert_eq!(getx(&f, "user.artstore.file_id").unwrap(), id);
        assert_eq!(getx(&f, "user.artstore.description").unwrap(), b"before");
    });
}

#[test]
fn rsync_ax_between_two_stores() {
    common::engine::every_engine(|| {
        let (a, b) = (Mount::new(), Mount::new());
        let want = populate(&a.path("src"));
        rsync(&a.path("src"), &b.path("dst"));
        check_copy(&b.path("dst"), &want, true);
        // A second run (an incremental backup) is just as clean.
        setx(&a.path("src/report.txt"), "user.artstore.version", b"1.3").unwrap();
        rsync(&a.path("src"), &b.path("dst"));
        assert_eq!(
            getx(&b.path("dst/report.txt"), "user.artstore.version").unwrap(),
            b"1.3"
        );
        // Each copy is a file of its own store.
        assert_ne!(
            getx(&a.path("src/report.txt"), "user.artstore.file_id").unwrap(),
            getx(&b.path("dst/report.txt"), "user.artstore.file_id").unwrap()
        );
    });
}

#[test]
fn cp_a_and_cp_preserve_all_between_two_stores() {
    common::engine::every_engine(|| {
        let (a, b) = (Mount::new(), Mount::new());
        let want = populate(&a.path("src"));
        run(Command::new("cp")
            .arg("-a")
            .arg(a.path("src"))
            .arg(b.path("cpa")));
        check_copy(&b.path("cpa"), &want, true);
        run(Command::new("cp")
            .args(["-R", "--preserve=all"])
            .arg(a.path("src"))
            .arg(b.path("all")));
        check_copy(&b.path("all"), &want, true);
        run(Command::new("cp")
            .args(["--preserve=xattr"])
            .arg(a.path("src/report.txt"))
            .arg(b.path("one.txt")));
        assert_eq!(
            getx(&b.path("one.txt"), "user.artstore.description").unwrap(),
            b"Q3 report"
        );
    });
}

#[test]
fn tar_xattrs_between_two_stores() {
    common::engine::every_engine(|| {
        let (a, b) = (Mount::new(), Mount::new());
        let want = populate(&a.path("src"));
        tar_copy(&a.mnt, "src", &b.mnt);
        check_copy(&b.path("src"), &want, true);
    });
}

#[test]
fn round_trips_through_ext4() {
    common::engine::every_engine(|| {
        let (a, b) = (Mount::new(), Mount::new());
        let want = populate(&a.path("src"));
        let ext4 = ext4_dir();
        // rsync: artfs -> ext4 -> artfs. The ext4 copy has no computed names.
        rsync(&a.path("src"), &ext4.path().join("r"));
        check_copy(&ext4.path().join("r"), &want, false);
        rsync(&ext4.path().join("r"), &b.path("r"));
        check_copy(&b.path("r"), &want, true);
        // cp -a.
        run(Command::new("cp")
            .arg("-a")
            .arg(a.path("src"))
            .arg(ext4.path().join("c")));
        check_copy(&ext4.path().join("c"), &want, false);
        run(Command::new("cp")
            .arg("-a")
            .arg(ext4.path().join("c"))
            .arg(b.path("c")));
        check_copy(&b.path("c"), &want, true);
        // tar: archive from artfs, extract on ext4, archive again, into artfs.
        tar_copy(&a.mnt, "src", ext4.path());
        check_copy(&ext4.path().join("src"), &want, false);
        tar_copy(ext4.path(), "src", &b.mnt);
        check_copy(&b.path("src"), &want, true);
        // Restoring the backup over the tree it came from is as clean.
        rsync(&ext4.path().join("r"), &a.path("src"));
        check_copy(&a.path("src"), &want, true);
    });
}

#[test]
fn rename_over_records_the_name_the_user_sees() {
    common::engine::every_engine(|| {
        let (a, b) = (Mount::new(), Mount::new());
        // rsync -a writes ".name.XXXXXX" and renames it over "name".
        fs::write(a.path("a.txt"), b"aaa").unwrap();
        run(Command::new("rsync")
            .arg("-a")
            .arg(a.path("a.txt"))
            .arg(b.path("a.txt")));
        assert_eq!(
            getx(&b.path("a.txt"), "user.artstore.original_filename").unwrap(),
            b"a.txt"
        );
        // An editor's or a package tool's write-temp + rename, over an
        // existing file.
        let m = &b;
        fs::write(m.path("config"), b"old").unwrap();
        fs::write(m.path(".config.swp"), b"new").unwrap();
        fs::rename(m.path(".config.swp"), m.path("config")).unwrap();
        assert_eq!(fs::read(m.path("config")).unwrap(), b"new");
        assert_eq!(
            getx(&m.path("config"), "user.artstore.original_filename").unwrap(),
            b"config"
        );
        // Only the first rename carries the name: a later one keeps it.
        fs::rename(m.path("config"), m.path("config.old")).unwrap();
        assert_eq!(
            getx(&m.path("config.old"), "user.artstore.original_filename").unwrap(),
            b"config"
        );
        // A second name (a hard link) is not the name the file was created
        // with: renaming it keeps the original.
        fs::write(m.path("kept"), b"k").unwrap();
        fs::hard_link(m.path("kept"), m.path("alias")).unwrap();
        fs::rename(m.path("alias"), m.path("alias2")).unwrap();
        assert_eq!(
            getx(&m.path("alias2"), "user.artstore.original_filename").unwrap(),
            b"kept"
        );
        // Directories keep the name they were made with.
        fs::create_dir(m.path("tmpdir")).unwrap();
        fs::rename(m.path("tmpdir"), m.path("final")).unwrap();
        assert_eq!(
            getx(&m.path("final"), "user.artstore.original_filename").unwrap(),
            b"tmpdir"
        );
    });
}

/// `cmd` run as uid/gid 65534 (nobody): its exit code and stderr.
fn as_nobody(cmd: &mut Command) -> (i32, String) {
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(prog)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn retention_travels_only_with_a_copier_who_may_set_it() {
    common::engine::every_engine(|| {
        let (a, b) = (Mount::new(), Mount::new());
        let f = a.path("held.txt");
        fs::write(&f, b"kept").unwrap();
        setx(&f, "user.artstore.description", b"kept for audit").unwrap();
        setx(&f, "user.artstore.retention_until", b"2035-01-01T00:00:00Z").unwrap();
        std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
        // Its owner may "set" the date it already has (a restore onto the
        // same file), not another one.
        let (code, err) = as_nobody(
            Command::new("setfattr")
                .args([
                    "-n",
                    "user.artstore.retention_until",
                    "-v",
                    "2035-01-01T00:00:00Z",
                ])
                .arg(&f),
        );
        assert_eq!(code, 0, "{err}");
        let (code, _) = as_nobody(
            Command::new("setfattr")
                .args([
                    "-n",
                    "user.artstore.retention_until",
                    "-v",
                    "2036-01-01T00:00:00Z",
                ])
                .arg(&f),
        );
        assert_ne!(code, 0);
        assert_eq!(
            getx(&f, "user.artstore.retention_until").unwrap(),
            b"2035-01-01T00:00:00Z"
        );
        // A non-root copy: everything but the lock is carried, and rsync
        // reports that one refusal (exit 23), as documented.
        fs::create_dir(b.path("dst")).unwrap();
        std::os::unix::fs::chown(b.path("dst"), Some(65534), Some(65534)).unwrap();
        let (code, err) = as_nobody(
            Command::new("rsync")
                .arg("-aX")
                .arg(&f)
                .arg(b.path("dst/held.txt")),
        );
        assert_eq!(code, 23, "{err}");
        assert!(err.contains("user.artstore.retention_until"), "{err}");
        let copy = b.path("dst/held.txt");
        assert_eq!(fs::read(&copy).unwrap(), b"kept");
        assert_eq!(
            getx(&copy, "user.artstore.description").unwrap(),
            b"kept for audit"
        );
        assert!(getx(&copy, "user.artstore.retention_until").is_err());
        // Root's copy carries it.
        rsync(&a.mnt, &b.path("root"));
        assert_eq!(
            getx(&b.path("root/held.txt"), "user.artstore.retention_until").unwrap(),
            b"2035-01-01T00:00:00Z"
        );
    });
}
