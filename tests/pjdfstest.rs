//! POSIX conformance with pjdfstest (the Rust port, crates.io v0.2.2).
//!
//! The suite runs twice with tests/pjdfstest.toml: once in a fresh temp dir
//! on the host's file system (ext4, the baseline) and once on a fresh artfs
//! mount. Every case that passes on the baseline must pass on artfs; the
//! failure message lists each regression with the runner's output for it.
//!
//! Needs root (for the cases that switch users), the `pjdfstest` binary and
//! the dummy users of the config: `scripts/install-deps.sh` provides both.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pjdfstest.toml");
const INSTALL_HINT: &str = "run scripts/install-deps.sh (as root) to install it";
/// Generous: a full run takes seconds; this only stops a hung file system.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const EXT4_SUPER_MAGIC: i64 = 0xEF53;

/// Cases that pass on ext4 but cannot run on any FUSE file system. They are
/// accepted only when the runner *skips* them on artfs (a failure still counts).
const SKIPPED_ON_FUSE: &[(&str, &str)] = &[(
    "link::link_count_max",
    "its guard asks pathconf(_PC_LINK_MAX); glibc answers from a table of statfs f_type \
     values and returns 127 (\"unknown\") for FUSE, so the runner skips the case",
)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    Failed,
    Skipped,
    ExpectedFailure,
    UnexpectedPass,
}

impl Status {
    /// Result words as the runner prints them after the (padded) case name.
    const WORDS: [(&'static str, Status); 5] = [
        ("PASSED UNEXPECTEDLY", Status::UnexpectedPass),
        ("failed as expected", Status::ExpectedFailure),
        ("FAILED", Status::Failed),
        ("skipped", Status::Skipped),
        ("ok", Status::Ok),
    ];

    fn word(self) -> &'static str {
        Status::WORDS.iter().find(|(_, s)| *s == self).unwrap().0
    }
}

#[derive(Debug)]
struct Case {
    status: Status,
    /// The runner's lines after the case line (panic message, skip reasons).
    detail: String,
}

struct Run {
    label: &'static str,
    cases: BTreeMap<String, Case>,
    /// The last case the runner reported.
    last_case: Option<String>,
    /// "Summary: N failed, N skipped, N passed, N expected failures, N total".
    summary: Option<String>,
    exit: Option<ExitStatus>,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn count(&self, status: Status) -> usize {
        self.cases.values().filter(|c| c.status == status).count()
    }

    fn describe(&self) -> String {
        format!(
            "{}: {} cases parsed ({} ok, {} FAILED, {} skipped) in {:.1}s; {}; {}",
            self.label,
            self.cases.len(),
            self.count(Status::Ok),
            self.count(Status::Failed),
            self.count(Status::Skipped),
            self.elapsed.as_secs_f64(),
            self.exit
                .map_or("none (killed)".to_string(), |s| s.to_string()),
            self.summary.as_deref().unwrap_or("no summary line"),
        )
    }
}

/// Drop ANSI colour sequences (ESC '[' ... final byte), should the runner
/// colour its output despite NO_COLOR.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A case line: `<name><spaces><result words>`, where a name is a path such
/// as `rename::preserve_metadata::regular`.
fn parse_case_line(line: &str) -> Option<(&str, Status)> {
    let line = line.trim_end();
    for (word, status) in Status::WORDS {
        let Some(name) = line.strip_suffix(word) else {
            continue;
        };
        if !name.ends_with(char::is_whitespace) {
            continue;
        }
        let name = name.trim_end();
        let valid = name.contains("::")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        if valid {
            return Some((name, status));
        }
    }
    None
}

/// Cases by name, the summary line, and the last case reported.
type Parsed = (BTreeMap<String, Case>, Option<String>, Option<String>);

fn parse_output(stdout: &str) -> Parsed {
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    let mut summary = None;
    let mut current: Option<String> = None;
    let mut last = None;
    for line in stdout.lines() {
        if let Some((name, status)) = parse_case_line(line) {
            let prev = cases.insert(
                name.to_string(),
                Case {
                    status,
                    detail: String::new(),
                },
            );
            assert!(prev.is_none(), "case {name} reported twice");
            current = Some(name.to_string());
            last = current.clone();
        } else if line.trim_start().starts_with("Summary:") {
            summary = Some(line.trim().to_string());
            current = None;
        } else if let Some(name) = &current {
            // Everything else belongs to the case above it: the panic
            // message (possibly several lines) or the skip reasons.
            if !line.trim().is_empty() {
                let detail = &mut cases.get_mut(name).unwrap().detail;
                detail.push_str(line.trim_end());
                detail.push('\n');
            }
        }
    }
    (cases, summary, last)
}

/// The total announced by the summary line.
fn summary_total(summary: &str) -> Option<usize> {
    let before = summary.strip_suffix("total")?.trim_end();
    before.rsplit([' ', ',']).next()?.parse().ok()
}

fn pjdfstest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PJDFSTEST") {
        return PathBuf::from(p);
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin"));
    }
    candidates
        .into_iter()
        .map(|d| d.join("pjdfstest"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("the pjdfstest binary is not on PATH nor in ~/.cargo/bin: {INSTALL_HINT}")
        })
}

/// The `[user, group]` pairs of the config's `[dummy_auth]` entries.
fn dummy_auth_entries(config: &str) -> Vec<(String, String)> {
    let section = config
        .split("[dummy_auth]")
        .nth(1)
        .expect("tests/pjdfstest.toml has a [dummy_auth] section");
    section
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter_map(|l| {
            let inner = l
                .strip_prefix('[')?
                .trim_end_matches(',')
                .strip_suffix(']')?;
            let mut it = inner
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string());
            Some((it.next()?, it.next()?))
        })
        .filter(|(u, g)| !u.is_empty() && !g.is_empty())
        .collect()
}

/// pjdfstest refuses the whole config when a user or group is missing, or
/// is not the user's primary group: say so plainly instead.
fn check_dummy_users(config: &str) {
    use nix::unistd::{Group, User};
    let entries = dummy_auth_entries(config);
    assert_eq!(
        entries.len(),
        2,
        "expected 2 dummy_auth entries: {entries:?}"
    );
    for (user, group) in entries {
        let u = User::from_name(&user).unwrap().unwrap_or_else(|| {
            panic!("pjdfstest needs a user {user:?}, which does not exist: {INSTALL_HINT}")
        });
        let g = Group::from_name(&group).unwrap().unwrap_or_else(|| {
            panic!("pjdfstest needs a group {group:?}, which does not exist: {INSTALL_HINT}")
        });
        assert_eq!(
            u.gid, g.gid,
            "pjdfstest needs {group:?} to be the primary group of {user:?} \
             (fix tests/pjdfstest.toml or {INSTALL_HINT})"
        );
    }
}

fn chmod_755(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn read_all(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Run the whole suite in `dir`, with `secondary` on another file system.
fn run_pjdfstest(bin: &Path, label: &'static str, dir: &Path, secondary: &Path) -> Run {
    let start = Instant::now();
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(CONFIG)
        .arg("-p")
        .arg(dir)
        .arg("-s")
        .arg(secondary)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("CLICOLOR", "0")
        .env_remove("CLICOLOR_FORCE")
        // No backtraces after the panic messages of failed cases.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", bin.display()));
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    let exit = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > RUN_TIMEOUT {
            eprintln!("pjdfstest on {label} still running after {RUN_TIMEOUT:?}; killing it");
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = strip_ansi(&out.join().unwrap());
    let stderr = strip_ansi(&err.join().unwrap());
    let (cases, summary, last_case) = parse_output(&stdout);
    let run = Run {
        label,
        cases,
        last_case,
        summary,
        exit,
        stderr,
        elapsed: start.elapsed(),
    };
    println!("{}", run.describe());
    run
}

/// Whether the artfs daemon is still running (not exited, not a zombie).
fn daemon_alive(pid: Option<u32>) -> bool {
    let Some(pid) = pid else { return false };
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

// f_type is a c_long on some targets and an i32 on others.
#[allow(clippy::unnecessary_cast)]
fn fs_magic(p: &Path) -> i64 {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type().0 as i64)
        .unwrap_or(-1)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[test]
fn pjdfstest_artfs_passes_what_ext4_passes() {
    common::engine::every_engine(|| {
        let started = Instant::now();
        let bin = pjdfstest_bin();
        let config = std::fs::read_to_string(CONFIG).expect("read tests/pjdfstest.toml");
        check_dummy_users(&config);
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "pjdfstest must run as root (cases switch to the dummy users)"
        );

        // The dummy users must reach every directory the suite works in: the
        // temp dirs are 0700 by default.
        let mut m = common::Mount::new();
        chmod_755(m.mnt.parent().unwrap());
        let art_dir = m.path("pjdfstest");
        std::fs::create_dir(&art_dir).unwrap();
        chmod_755(&art_dir);
        // Any directory of the other file system will do for the EXDEV cases.
        let art_secondary = m.path("secondary");
        std::fs::create_dir(&art_secondary).unwrap();

        let base = tempfile::Builder::new()
            .prefix("pjdfstest-ext4-")
            .tempdir()
            .unwrap();
        chmod_755(base.path());
        let ext4_dir = base.path().join("suite");
        let ext4_secondary = base.path().join("secondary");
        std::fs::create_dir(&ext4_dir).unwrap();
        std::fs::create_dir(&ext4_secondary).unwrap();
        chmod_755(&ext4_dir);
        let magic = fs_magic(&ext4_dir);
        if magic != EXT4_SUPER_MAGIC {
            eprintln!(
                "warning: the baseline dir {} is not on ext4 (f_type {magic:#x}); \
                 comparing against that file system instead",
                ext4_dir.display()
            );
        }

        // (a) Baseline.
        let ext4 = run_pjdfstest(&bin, "ext4", &ext4_dir, &art_secondary);
        let total = ext4.summary.as_deref().and_then(summary_total);
        assert!(
            ext4.exit.is_some() && total.is_some(),
            "pjdfstest did not complete on the baseline: {}\nstderr:\n{}",
            ext4.describe(),
            ext4.stderr
        );
        assert_eq!(
            total,
            Some(ext4.cases.len()),
            "could not parse every case of the baseline run: {}",
            ext4.describe()
        );
        assert!(
            ext4.count(Status::Ok) > 0,
            "nothing passes on the baseline: {}\nstderr:\n{}",
            ext4.describe(),
            ext4.stderr
        );

        // (b) artfs.
        let art = run_pjdfstest(&bin, "artfs", &art_dir, &ext4_secondary);

        // (c) Compare.
        let mut regressions = Vec::new();
        let mut accepted = Vec::new();
        for (name, base_case) in &ext4.cases {
            if base_case.status != Status::Ok {
                continue;
            }
            match art.cases.get(name) {
                Some(c) if c.status == Status::Ok => {}
                Some(c)
                    if c.status == Status::Skipped
                        && SKIPPED_ON_FUSE.iter().any(|(n, _)| n == name) =>
                {
                    accepted.push(name.as_str());
                }
                Some(c) => regressions.push((name.as_str(), c.status.word(), c.detail.as_str())),
                None => regressions.push((name.as_str(), "did not run", "")),
            }
        }
        let improvements: Vec<_> = art
            .cases
            .iter()
            .filter(|(n, c)| {
                c.status == Status::Ok && ext4.cases.get(*n).is_none_or(|b| b.status != Status::Ok)
            })
            .map(|(n, _)| n.as_str())
            .collect();

        println!(
            "ext4 passes {} cases, artfs {}; {} regressions; {} skipped on FUSE by design {:?}; \
             pass on artfs only: {:?}; total {:.1}s",
            ext4.count(Status::Ok),
            art.count(Status::Ok),
            regressions.len(),
            accepted.len(),
            accepted,
            improvements,
            started.elapsed().as_secs_f64()
        );

        if !regressions.is_empty() {
            // A daemon that panicked may take a moment to exit.
            std::thread::sleep(Duration::from_secs(1));
        }
        let alive = daemon_alive(m.pid());
        let mounted = common::is_mounted(&m.mnt);
        if !regressions.is_empty() || !alive || !mounted {
            let mut msg = format!(
                "{} pjdfstest case(s) pass on ext4 but not on artfs\n{}\n{}\n",
                regressions.len(),
                ext4.describe(),
                art.describe()
            );
            if !alive || !mounted {
                msg.push_str(&format!(
                    "the artfs daemon {} during the run (mount {}): cases after that fail \
                     with EIO/ENOTCONN; see its panic on stderr above\n",
                    if alive { "survived" } else { "DIED" },
                    if mounted { "still present" } else { "gone" },
                ));
            }
            // Cases that ran and failed first, with the runner's output; then
            // the ones the runner never reached.
            let (ran, not_run): (Vec<_>, Vec<_>) = regressions
                .iter()
                .partition(|(_, status, _)| *status != "did not run");
            for (name, status, detail) in ran {
                msg.push_str(&format!("\n{name}: ext4 ok, artfs {status}\n"));
                for l in truncate(detail, 1500).lines() {
                    msg.push_str(&format!("    {}\n", l.trim_start()));
                }
            }
            if !not_run.is_empty() {
                msg.push_str(&format!(
                    "\n{} case(s) passing on ext4 never ran on artfs: the runner stopped after {} \
                     ({}; it prints nothing when it aborts, typically because it could no \
                     longer create its per-case directory):\n",
                    not_run.len(),
                    art.last_case.as_deref().unwrap_or("no case"),
                    art.exit
                        .map_or("none (killed)".to_string(), |s| s.to_string()),
                ));
                let names: Vec<&str> = not_run.iter().map(|(n, _, _)| *n).collect();
                for chunk in names.chunks(4) {
                    msg.push_str(&format!("    {}\n", chunk.join("  ")));
                }
            }
            if !art.stderr.trim().is_empty() {
                let tail: Vec<_> = art.stderr.lines().rev().take(20).collect();
                msg.push_str("\npjdfstest stderr (last lines):\n");
                for l in tail.into_iter().rev() {
                    msg.push_str(&format!("    {l}\n"));
                }
            }
            panic!("{msg}");
        }
        for (name, why) in SKIPPED_ON_FUSE {
            if accepted.contains(name) {
                println!("accepted: {name} is skipped on artfs: {why}");
            }
        }
        drop(base);
        // A clean unmount: the daemon must exit successfully after the suite.
        m.unmount();
    });
}

#[test]
fn parses_runner_output() {
    let out = "\
unlink::enametoolong_component                                                ok
unlink::erofs_named                                                      skipped
\tRemounts (allow_remount) are not allowed in the configuration file
rename::eexist_enotempty_to_non_empty::block                              FAILED
\tassertion `left == right` failed
  left: Err(EIO)
 right: Ok(())
\u{1b}[34mchmod::x::y\u{1b}[0m                  \u{1b}[32mok\u{1b}[0m
utimensat::y2038                                             failed as expected
a_very_long_case_name_that_is_longer_than_the_padding::with_more_parts::and_more ok

Summary: 1 failed, 1 skipped, 3 passed, 1 expected failures, 6 total
";
    let (cases, summary, last) = parse_output(&strip_ansi(out));
    assert_eq!(
        last.as_deref(),
        Some("a_very_long_case_name_that_is_longer_than_the_padding::with_more_parts::and_more")
    );
    assert_eq!(cases.len(), 6);
    assert_eq!(summary_total(summary.as_deref().unwrap()), Some(6));
    let c = &cases["rename::eexist_enotempty_to_non_empty::block"];
    assert_eq!(c.status, Status::Failed);
    assert!(c.detail.contains("left: Err(EIO)"), "{:?}", c.detail);
    assert_eq!(cases["unlink::erofs_named"].status, Status::Skipped);
    assert_eq!(cases["chmod::x::y"].status, Status::Ok);
    assert_eq!(cases["utimensat::y2038"].status, Status::ExpectedFailure);
    assert_eq!(
        cases["a_very_long_case_name_that_is_longer_than_the_padding::with_more_parts::and_more"]
            .status,
        Status::Ok
    );
    let entries = dummy_auth_entries(&std::fs::read_to_string(CONFIG).unwrap());
    assert_eq!(entries.len(), 2, "{entries:?}");
}
