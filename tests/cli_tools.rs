//! The command line's self-description and its log output: shell
//! completions and manual pages generated from the clap definition,
//! `--version` with the git commit, and log lines without colour codes
//! when stderr is not a terminal, or as JSON with `--log-format json`.

mod common;

use std::process::{Command, Output, Stdio};

use common::bin;

fn artfs(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run artfs")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{}", common::output_text(o));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef artfs"),
        ("fish", "complete -c artfs"),
    ] {
        let s = stdout(&artfs(&["completions", shell]));
        assert!(s.contains(marker), "{shell}: no {marker:?}");
        // Subcommands and their flags come from the definition.
        for word in ["mount", "fsck", "trash-days"] {
            assert!(s.contains(word), "{shell} completion lacks {word}");
        }
    }
    let o = artfs(&["completions", "tcsh"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn manual_pages() {
    let page = stdout(&artfs(&["man"]));
    assert!(page.contains(".TH artfs 1"), "{page}");
    assert!(page.contains("mount"), "the page lists the commands");
    let dir = tempfile::tempdir().unwrap();
    let out = stdout(&artfs(&["man", "--dir", dir.path().to_str().unwrap()]));
    assert!(out.contains("pages in"), "{out}");
    let mount = std::fs::read_to_string(dir.path().join("artfs-mount.1")).unwrap();
    assert!(
        mount.contains("trash\\-days"),
        "the mount page has its flags"
    );
    assert!(dir.path().join("artfs.1").exists());
}

#[test]
fn version_names_the_commit() {
    let v = stdout(&artfs(&["--version"]));
    let want = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or("unknown".to_string(), |o| {
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        });
    assert_eq!(
        v.trim(),
        format!("artfs {} ({want})", env!("CARGO_PKG_VERSION"))
    );
}

/// `artfs [EXTRA] import EMPTY NEW_STORE` at debug level: initialising
/// the store logs its database statements.
fn import(extra: &[&str]) -> (Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for d in ["src", "store"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let mut cmd = Command::new(bin());
    cmd.args(extra)
        .arg("import")
        .arg(dir.path().join("src"))
        .arg(dir.path().join("store"))
        .env("ARTFS_LOG", "debug")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null());
    (cmd, dir)
}

/// The log lines of [`import`] with stderr on a pipe.
fn log_lines(extra: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let (mut cmd, _dir) = import(extra);
    let out = cmd.envs(env.iter().copied()).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<String> = err.lines().map(str::to_string).collect();
    assert!(!lines.is_empty(), "no log lines");
    lines
}

#[test]
fn no_colour_codes_on_a_pipe() {
    let lines = log_lines(&[], &[]);
    assert!(
        lines.iter().all(|l| !l.contains('\x1b')),
        "escape codes in {lines:?}"
    );
    // Text lines start with a timestamp (no journald to add one).
    assert!(lines.iter().any(|l| l.starts_with("20")), "{lines:?}");
}

#[test]
fn json_lines_parse() {
    for lines in [
        log_lines(&["--log-format", "json"], &[]),
        log_lines(&[], &[("ARTFS_LOG_FORMAT", "json")]),
    ] {
        let mut events = 0;
        for l in lines.iter().filter(|l| l.starts_with('{')) {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            assert!(
                v.get("level").is_some() && v.get("timestamp").is_some(),
                "{l}"
            );
            events += 1;
        }
        assert!(events > 0, "no JSON lines in {lines:?}");
    }
}

#[test]
fn no_timestamps_for_journald() {
    // stderr is "the journal" when JOURNAL_STREAM names its device and
    // inode, as systemd sets it; journald stamps lines itself.
    use std::os::unix::fs::MetadataExt;
    let (mut cmd, dir) = import(&[]);
    let path = dir.path().join("journal");
    let file = std::fs::File::create(&path).unwrap();
    let m = file.metadata().unwrap();
    cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))
        .stdout(Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.is_empty(), "no log lines");
    for l in text.lines() {
        assert!(!l.starts_with("20"), "a timestamp under journald: {l}");
        assert!(!l.contains('\x1b'), "escape codes: {l}");
    }
}

/// A store of 20 files, made offline by `artfs import` of an archive in
/// the original's layout.
fn small_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    let spec = common::archive::ArchiveSpec {
        v1: 10,
        v2: 10,
        same_name_same_day: false,
        ..common::archive::ArchiveSpec::healthy()
    };
    common::archive::write_archive(&src, &spec);
    let out = Command::new(bin())
        .arg("import")
        .arg(&src)
        .arg(dir.path().join("store"))
        .env("ARTFS_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    dir
}

/// Long commands draw a progress bar on a terminal, nothing on a pipe,
/// and end with a one-line summary on stdout either way.
#[test]
fn progress_on_a_terminal_only_and_a_summary_always() {
    let dir = small_store();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    // (arguments, what the bar shows, what the summary says)
    let cases: [(&[&str], &str, &str); 3] = [
        (&["fsck"], "checking", "inodes, "),
        (&["scrub"], "scrubbing", "verified 20 files"),
        (&["rebuild", "--check"], "reading sidecars", "0 problems"),
    ];
    for (args, bar, summary) in cases {
        let mut argv: Vec<&str> = args.to_vec();
        argv.push(store);
        // On pipes: no bar, no escape codes, the summary.
        let out = Command::new(bin())
            .args(&argv)
            .env("ARTFS_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{argv:?}: {o}{e}");
        assert!(
            o.contains(summary),
            "{argv:?}: no summary {summary:?} in {o}"
        );
        assert!(
            !e.contains(bar) && !e.contains('\x1b') && !e.contains('\r'),
            "{argv:?}: a bar on a pipe: {e:?}"
        );
        // On a terminal (script(1) gives the command a pty): the bar is
        // drawn (then cleared), and the same summary follows.
        let line = std::iter::once(bin().to_string())
            .chain(argv.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(" ");
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("ARTFS_LOG", "warn")
            .env("TERM", "xterm")
            .stdin(Stdio::null())
            .output()
            .expect("script(1) (util-linux)");
        let t = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{argv:?} on a pty: {t}");
        assert!(t.contains(bar), "{argv:?}: no bar on a terminal: {t:?}");
        assert!(
            t.contains(summary),
            "{argv:?}: no summary on a terminal: {t:?}"
        );
    }
}

/// scripts/build-deb.sh packages the binary under test: the package
/// installs artfs, the mount helper link, the systemd unit, man pages,
/// completions and the example config, and its artfs runs.
#[test]
fn debian_package() {
    if Command::new("dpkg-deb").arg("--version").output().is_err() {
        eprintln!("skipped: no dpkg-deb (not a Debian system)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/build-deb.sh"))
        .args(["--binary", bin(), "--compression", "none", "--out"])
        .arg(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let deb = stdout(&out).trim().to_string();
    assert!(deb.ends_with(".deb"), "{deb}");
    let field = |name: &str| {
        let o = Command::new("dpkg-deb")
            .args(["--field", &deb, name])
            .output()
            .unwrap();
        stdout(&o).trim().to_string()
    };
    assert_eq!(field("Package"), "artfs");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert!(field("Depends").contains("fuse3"), "mount.fuse3 is needed");
    // Unpacked, it holds what an administrator needs.
    let tree = dir.path().join("tree");
    let o = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&tree)
        .output()
        .unwrap();
    stdout(&o);
    for path in [
        "usr/bin/artfs",
        "usr/lib/systemd/system/artfs@.service",
        "usr/share/man/man1/artfs.1.gz",
        "usr/share/man/man1/artfs-mount.1.gz",
        "usr/share/bash-completion/completions/artfs",
        "usr/share/zsh/vendor-completions/_artfs",
        "usr/share/fish/vendor_completions.d/artfs.fish",
        "usr/share/doc/artfs/examples/artfs.example.toml",
        "usr/share/doc/artfs/OPERATIONS.md",
        "etc/artfs",
    ] {
        assert!(tree.join(path).exists(), "{path} is not in the package");
    }
    let helper = std::fs::read_link(tree.join("usr/sbin/mount.artfs")).unwrap();
    assert_eq!(helper, std::path::Path::new("../bin/artfs"));
    // The packaged binary is the one built, and the unit starts it from
    // where the package puts it.
    let version = Command::new(tree.join("usr/bin/artfs"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(stdout(&version).starts_with("artfs "), "{version:?}");
    let unit = std::fs::read_to_string(tree.join("usr/lib/systemd/system/artfs@.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/artfs mount"), "{unit}");
    // An unknown argument is refused, naming it.
    let o = Command::new("bash")
        .arg(format!("{root}/scripts/build-deb.sh"))
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--frobnicate"));
}
