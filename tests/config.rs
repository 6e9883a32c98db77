//! The configuration file (`--config FILE`) through real mounts and the
//! CLI: a file alone mounts, and flag > ARTFS_* variable > file > default,
//! each proven by an effect seen from outside (the capacity statvfs
//! reports, EPERM from unlink in rw mode, the table names in the
//! database, `allow_other` in the kernel's mount options). Bad files exit
//! 2 naming the file, the key or the line.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, is_mounted};

const MIB: u64 = 1 << 20;

/// A directory holding `backing/`, `mnt/` and, once written, `artfs.toml`.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("artfs-config-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("backing")).unwrap();
        fs::create_dir(dir.path().join("mnt")).unwrap();
        Setup { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn backing(&self) -> PathBuf {
        self.path("backing")
    }

    fn mnt(&self) -> PathBuf {
        self.path("mnt")
    }

    /// Write `artfs.toml`; returns its path.
    fn config(&self, text: &str) -> PathBuf {
        let p = self.path("artfs.toml");
        fs::write(&p, text).unwrap();
        p
    }

    /// A file naming this setup's store and mount point (relative paths:
    /// they are resolved against the file's directory) plus `extra`.
    fn full_config(&self, extra: &str) -> PathBuf {
        self.config(&format!(
            "[store]\nbacking = \"backing\"\n[mount]\nmountpoint = \"mnt\"\n{extra}"
        ))
    }
}

/// A running `artfs mount`, unmounted when dropped.
struct Daemon {
    child: Option<Child>,
    mnt: PathBuf,
}

/// `artfs ARGS` with ARTFS_* cleared (so the caller's environment cannot
/// leak in), run from `/` (so only the file's directory can make its
/// relative paths work).
fn artfs(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    for (k, _) in std::env::vars() {
        if k.starts_with("ARTFS_") {
            c.env_remove(k);
        }
    }
    c.args(args)
        .env("ARTFS_LOG", "warn,fuser::session=error")
        .envs(env.iter().copied())
        .current_dir("/")
        .stdin(Stdio::null());
    c
}

/// Run a command that should not stay up (killed after a minute: one that
/// mounts by mistake must fail the test, not hang it).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut child = artfs(args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run artfs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("artfs {args:?} did not exit: {}", text(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    common::output_text(o)
}

impl Daemon {
    /// `artfs mount ARGS`, waiting until `mnt` is mounted.
    fn start(mnt: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut child = artfs(&["mount"], env)
            .args(args)
            .spawn()
            .expect("spawn artfs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(mnt) {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("artfs mount {args:?} exited before mounting: {st}");
            }
            assert!(Instant::now() < deadline, "mount did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon {
            child: Some(child),
            mnt: mnt.to_path_buf(),
        }
    }

    /// The capacity the mount reports (statvfs total bytes).
    fn total_bytes(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.mnt).unwrap();
        s.blocks() as u64 * s.fragment_size() as u64
    }

    /// The kernel's options for this mount (mountinfo super options).
    fn super_options(&self) -> String {
        let want = self.mnt.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(want.as_str()))
            .and_then(|l| l.rsplit(' ').next())
            .expect("mount in mountinfo")
            .to_string()
    }

    /// Unmount and check the daemon exits 0.
    fn stop(mut self) {
        // The child stays in `self` until it has exited, so a failure
        // here still leaves Drop to tear the daemon down.
        assert!(common::fusermount_u(&self.mnt), "fusermount3 -u failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                assert!(st.success(), "artfs exited with {st}");
                return;
            }
            assert!(Instant::now() < deadline, "artfs did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            common::stop_daemon(child, &self.mnt, Duration::from_secs(10));
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether the store's SQLite database defines `{prefix}_inodes` (the
/// schema's SQL text is in the file, or in its WAL before a checkpoint).
fn has_tables(backing: &Path, prefix: &str) -> bool {
    let needle = format!("{prefix}_inodes");
    ["meta.db", "meta.db-wal"].iter().any(|f| {
        fs::read(backing.join(".artfs").join(f))
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

#[test]
fn a_config_file_alone_mounts_with_paths_relative_to_it() {
    let t = Setup::new();
    let cfg = t.full_config("[policy]\ncapacity = \"1M\"\n");
    // Run from `/`: "backing" and "mnt" only work relative to the file.
    let d = Daemon::start(&t.mnt(), &["--config", s(&cfg)], &[]);
    assert_eq!(d.total_bytes(), MIB, "capacity from the file");
    fs::write(t.mnt().join("hello"), b"from the file").unwrap();
    assert_eq!(
        fs::read(t.mnt().join("hello")).unwrap(),
        b"from the file",
        "content through the mount"
    );
    d.stop();
    assert!(
        t.backing().join(".artfs/meta.db").exists(),
        "the store is in the file's backing directory"
    );
    assert!(!Path::new("/backing").exists());
    // ARTFS_CONFIG names the file as well as --config does.
    let d = Daemon::start(&t.mnt(), &[], &[("ARTFS_CONFIG", s(&cfg))]);
    assert_eq!(
        fs::read(t.mnt().join("hello")).unwrap(),
        b"from the file",
        "same store again"
    );
    d.stop();
}

#[test]
fn a_relative_config_path_and_relative_keys() {
    // --config given relative to the working directory; the keys in it
    // relative to the file's own directory (here a subdirectory).
    let t = Setup::new();
    fs::create_dir(t.path("etc")).unwrap();
    fs::write(
        t.path("etc/artfs.toml"),
        "[store]\nbacking = \"../backing\"\ntable_prefix = \"rel\"\n\
         [mount]\nmountpoint = \"../mnt\"\n",
    )
    .unwrap();
    let mut c = artfs(&["mount", "--config", "etc/artfs.toml"], &[]);
    c.current_dir(t.dir.path());
    let child = c.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut d = Daemon {
        child: Some(child),
        mnt: t.mnt(),
    };
    while !is_mounted(&t.mnt()) {
        if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("artfs exited before mounting: {st}");
        }
        assert!(Instant::now() < deadline, "mount did not appear");
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(t.mnt().join("f"), b"x").unwrap();
    d.stop();
    assert!(has_tables(&t.backing(), "rel"));
}

#[test]
fn a_flag_overrides_the_file() {
    let t = Setup::new();
    let cfg = t.full_config("[policy]\ncapacity = \"1M\"\n");
    let d = Daemon::start(&t.mnt(), &["--config", s(&cfg), "--capacity", "2M"], &[]);
    assert_eq!(d.total_bytes(), 2 * MIB, "the flag wins over the file");
    d.stop();
    // Positionals override the file's backing and mount point too.
    let other = Setup::new();
    let d = Daemon::start(
        &other.mnt(),
        &["--config", s(&cfg), s(&other.backing()), s(&other.mnt())],
        &[],
    );
    assert_eq!(d.total_bytes(), MIB, "the rest still comes from the file");
    d.stop();
    assert!(other.backing().join(".artfs/meta.db").exists());
}

#[test]
fn an_environment_variable_overrides_the_file_but_not_a_flag() {
    let t = Setup::new();
    let cfg = t.full_config("[policy]\ncapacity = \"1M\"\n");
    let d = Daemon::start(
        &t.mnt(),
        &["--config", s(&cfg)],
        &[("ARTFS_CAPACITY", "2M")],
    );
    assert_eq!(d.total_bytes(), 2 * MIB, "the variable wins over the file");
    d.stop();
    let d = Daemon::start(
        &t.mnt(),
        &["--config", s(&cfg), "--capacity", "3M"],
        &[("ARTFS_CAPACITY", "2M")],
    );
    assert_eq!(d.total_bytes(), 3 * MIB, "the flag wins over the variable");
    d.stop();
    let d = Daemon::start(&t.mnt(), &["--config", s(&cfg)], &[]);
    assert_eq!(d.total_bytes(), MIB, "alone, the file's value");
    d.stop();
}

#[test]
fn the_mode_of_a_new_store_follows_the_same_order() {
    // rw refuses unlink with EPERM; edit allows it.
    let unlink_allowed = |extra: &[&str], env: &[(&str, &str)]| {
        let t = Setup::new();
        let cfg = t.full_config("[policy]\nmode = \"rw\"\n");
        let mut args = vec!["--config", s(&cfg)];
        args.extend_from_slice(extra);
        let d = Daemon::start(&t.mnt(), &args, env);
        fs::write(t.mnt().join("f"), b"x").unwrap();
        let r = fs::remove_file(t.mnt().join("f"));
        d.stop();
        match r {
            Ok(()) => true,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => false,
            Err(e) => panic!("unlink: {e}"),
        }
    };
    assert!(!unlink_allowed(&[], &[]), "file: rw");
    assert!(unlink_allowed(&[], &[("ARTFS_MODE", "edit")]), "env: edit");
    assert!(
        !unlink_allowed(&["--mode", "rw"], &[("ARTFS_MODE", "edit")]),
        "flag rw over env edit"
    );
}

#[test]
fn booleans_can_be_turned_off_over_the_file() {
    let t = Setup::new();
    let cfg = t.full_config("allow_other = true\n");
    let d = Daemon::start(&t.mnt(), &["--config", s(&cfg)], &[]);
    assert!(d.super_options().contains("allow_other"), "from the file");
    d.stop();
    let d = Daemon::start(
        &t.mnt(),
        &["--config", s(&cfg)],
        &[("ARTFS_ALLOW_OTHER", "false")],
    );
    assert!(!d.super_options().contains("allow_other"), "env false");
    d.stop();
    let d = Daemon::start(
        &t.mnt(),
        &["--config", s(&cfg), "--allow-other=false"],
        &[("ARTFS_ALLOW_OTHER", "1")],
    );
    assert!(!d.super_options().contains("allow_other"), "flag false");
    d.stop();
    // The bare flag still means true, before or after the positionals.
    let d = Daemon::start(
        &t.mnt(),
        &["--allow-other", s(&t.backing()), s(&t.mnt())],
        &[],
    );
    assert!(d.super_options().contains("allow_other"), "bare flag");
    d.stop();
}

#[test]
fn table_prefix_from_the_file_and_fsck_reads_the_store_from_it() {
    let t = Setup::new();
    let cfg = t.config(
        "[store]\nbacking = \"backing\"\ntable_prefix = \"fromfile\"\n\
         [mount]\nmountpoint = \"mnt\"\n[policy]\nmode = \"rw\"\n",
    );
    let ok = run(&["config", "check", s(&cfg)], &[]);
    assert!(ok.status.success(), "{}", text(&ok));
    let d = Daemon::start(&t.mnt(), &["--config", s(&cfg)], &[]);
    fs::create_dir(t.mnt().join("dir")).unwrap();
    fs::write(t.mnt().join("dir/file"), b"content").unwrap();
    d.stop();
    assert!(has_tables(&t.backing(), "fromfile"));
    assert!(!has_tables(&t.backing(), "artfs"));

    // fsck takes BACKING and the prefix from the file.
    let out = run(&["fsck", "--config", s(&cfg)], &[]);
    let o = text(&out);
    assert_eq!(out.status.code(), Some(0), "{o}");
    assert!(o.contains("checked 3 inodes"), "{o}");
    // The same with the prefix overridden by a flag: no such tables.
    let out = run(
        &["fsck", "--config", s(&cfg), "--table-prefix", "artfs"],
        &[],
    );
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
    // search and mode take a lone positional as their QUERY / MODE.
    let out = run(&["search", "--config", s(&cfg), "file"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "/dir/file");
    let out = run(&["mode", "--config", s(&cfg)], &[]);
    assert!(text(&out).starts_with("rw "), "{}", text(&out));
    let out = run(&["mode", "--config", s(&cfg), "ro"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["mode"], &[("ARTFS_CONFIG", s(&cfg))]);
    assert!(text(&out).starts_with("ro "), "{}", text(&out));
}

#[test]
fn an_unknown_key_exits_2_naming_key_file_and_line() {
    let t = Setup::new();
    let cfg = t.full_config("attr_ttl = 5\nmountpiont = \"/elsewhere\"\n");
    for cmd in [&["mount"][..], &["fsck"], &["config", "check"]] {
        let mut args = cmd.to_vec();
        if cmd[0] == "config" {
            args.push(s(&cfg));
        } else {
            args.extend(["--config", s(&cfg)]);
        }
        let out = run(&args, &[]);
        let o = text(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {o}");
        assert!(o.contains("mountpiont"), "{cmd:?}: {o}");
        assert!(o.contains(s(&cfg)), "{cmd:?}: {o}");
        assert!(o.contains("line 6"), "{cmd:?}: {o}");
    }
    assert!(!is_mounted(&t.mnt()));
    assert!(!t.backing().join(".artfs").exists(), "nothing touched");
    // An unknown section too.
    let cfg = t.config("[mounts]\nthreads = 2\n");
    let out = run(&["mount", "--config", s(&cfg)], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("mounts"), "{}", text(&out));
}

#[test]
fn a_syntax_error_or_bad_value_exits_2_with_the_line() {
    let t = Setup::new();
    let cfg = t.full_config("[policy]\nmode = \"edit\"\ncapacity = 10 G\n");
    let out = run(&["mount", "--config", s(&cfg)], &[]);
    let o = text(&out);
    assert_eq!(out.status.code(), Some(2), "{o}");
    assert!(o.contains(s(&cfg)) && o.contains("line 7"), "{o}");
    let cfg = t.full_config("[policy]\nmode = \"rx\"\n");
    let out = run(&["mount", "--config", s(&cfg)], &[]);
    let o = text(&out);
    assert_eq!(out.status.code(), Some(2), "{o}");
    assert!(o.contains("line 6") && o.contains("rx"), "{o}");
    let cfg = t.full_config("[log]\nfilter = \"info,=[\"\n");
    let out = run(&["mount", "--config", s(&cfg)], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!t.backing().join(".artfs").exists(), "nothing touched");
}

#[test]
fn a_missing_file_or_argument_exits_2() {
    let t = Setup::new();
    let missing = t.path("nope.toml");
    let out = run(&["mount", "--config", s(&missing)], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains(s(&missing)), "{}", text(&out));
    // A file without a mount point, and none given: clap's usage error.
    let cfg = t.config("[store]\nbacking = \"backing\"\n");
    let out = run(&["mount", "--config", s(&cfg)], &[]);
    let o = text(&out);
    assert_eq!(out.status.code(), Some(2), "{o}");
    assert!(
        o.contains("<MOUNTPOINT>") && o.contains("Usage: artfs mount"),
        "{o}"
    );
    let out = run(&["fsck"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("<BACKING>"), "{}", text(&out));
}

#[test]
fn the_example_is_printed_parses_and_is_the_defaults() {
    let out = run(&["config", "example"], &[]);
    assert!(out.status.success());
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/artfs.example.toml");
    assert_eq!(out.stdout, fs::read(&example).unwrap());
    let out = run(&["config", "check", s(&example)], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        artfs::config::Config::load(Some(&example)).unwrap(),
        artfs::config::Config::default()
    );
    // A mount from the example plus a store and a mount point works.
    let t = Setup::new();
    let cfg = t.config(&format!(
        "{}\n",
        fs::read_to_string(&example)
            .unwrap()
            .replace(
                "# backing = \"/srv/artfs/backing\"",
                "backing = \"backing\""
            )
            .replace("# mountpoint = \"/mnt/archive\"", "mountpoint = \"mnt\"")
    ));
    let d = Daemon::start(&t.mnt(), &["--config", s(&cfg)], &[]);
    fs::write(t.mnt().join("f"), b"x").unwrap();
    d.stop();
}
