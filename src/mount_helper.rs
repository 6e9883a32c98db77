//! `artfs` as a mount helper, for mount(8) and fstab.
//!
//! `mount -t fuse.artfs BACKING MNT -o OPTS` runs Debian's mount.fuse3,
//! which runs `artfs BACKING MNT -o OPTS`; `mount -t artfs ...` runs
//! `mount.artfs BACKING MNT [-sfnv] [-o OPTS]` (a link to `artfs`). Both
//! shapes end here: each `-o` option becomes a long flag of `artfs mount`,
//! looked up in its clap definition so the two cannot drift (`key=value`
//! is `--key=value`, `flag` is `--flag`; `_` and `-` both accepted), and
//! mount(8)'s own bookkeeping options are ignored.
//!
//! Then the helper daemonises the way mount(8) expects: it starts the real
//! `artfs mount` (this executable again, in a new session, stdin and
//! stdout on /dev/null) with `NOTIFY_SOCKET` on a datagram socket of its
//! own, and exits 0 at READY=1 (sent once the mount answers), or with the
//! daemon's exit code if the daemon dies first. The daemon's stderr:
//! - kept as it is when it is the journal (a mount under systemd) or a
//!   file (`mount ... 2>>/var/log/artfs.log`): the daemon's errors and
//!   later logs land there directly;
//! - otherwise (a terminal, a pipe) relayed by the helper until READY=1,
//!   so a failure is shown where the mount was typed; after that the
//!   daemon points stderr at /dev/null (it must not hold a pipe that the
//!   caller waits to see closed, nor write to a terminal it left).
//!
//! Source `artfs` or `none`: BACKING comes from the `config=` file.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

/// Options mount(8) keeps for itself (fstab bookkeeping, systemd ordering)
/// or that name the kernel's defaults: accepted and ignored.
const IGNORED: &[&str] = &[
    "defaults",
    "rw",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "dev",
    "suid",
    "exec",
    "async",
    "relatime",
    "nodiratime",
    "diratime",
];

/// Prefixes of options for other programs (`x-systemd.*`, `comment=`) or
/// set by mount.fuse3 itself (`subtype=`): ignored.
const IGNORED_PREFIXES: &[&str] = &["x-", "comment=", "subtype="];

/// Sources meaning "BACKING is in the config file".
const NO_SOURCE: &[&str] = &["artfs", "none"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HelperError {
    #[error(
        "usage: artfs BACKING MOUNTPOINT [-o OPTION[,OPTION...]] \
         (the mount helper form; `artfs --help` lists the commands)"
    )]
    Usage,
    #[error(
        "unknown mount option `{0}` (options are the long flags of `artfs mount --help`, \
         without the dashes: allow_other, config=FILE, capacity=10G, ...)"
    )]
    Unknown(String),
    #[error("mount option `{0}` needs a value: {0}=VALUE")]
    NeedsValue(String),
    #[error("mount option `{0}` takes no value")]
    TakesNoValue(String),
    #[error("mount helper switch `{0}` is not supported")]
    Switch(String),
}

/// What mount(8) or mount.fuse3 asked for.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub source: OsString,
    pub mountpoint: OsString,
    /// The `-o` options, split at commas, empty ones dropped.
    pub options: Vec<String>,
}

/// Whether this process was started as a mount helper: as `mount.artfs`,
/// or with a first argument that is neither a subcommand of `cli` nor a
/// flag, followed by a second one (`artfs BACKING MNT ...`). Anything else
/// is for clap, which reports a mistyped subcommand as such.
pub fn invoked(args: &[OsString], cli: &clap::Command) -> bool {
    let as_mount = args
        .first()
        .and_then(|a0| Path::new(a0).file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("mount."));
    if as_mount {
        return true;
    }
    let word = |a: Option<&OsString>| a.map(|a| a.to_string_lossy().into_owned());
    match (word(args.get(1)), word(args.get(2))) {
        (Some(first), Some(second)) => {
            !first.starts_with('-')
                && !second.starts_with('-')
                && first != "help"
                && cli.find_subcommand(&first).is_none()
        }
        _ => false,
    }
}

/// The helper's argument vector (without argv[0]): SOURCE MOUNTPOINT, then
/// `-o OPTS` (repeatable, or `-oOPTS`) and mount(8)'s `-s -f -n -v` and
/// `-t TYPE` in any order.
pub fn parse_args(args: &[OsString]) -> Result<Request, HelperError> {
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        match s.as_str() {
            "-o" => {
                let opts = it.next().ok_or(HelperError::Usage)?;
                options.extend(split(&opts.to_string_lossy()));
            }
            // sloppy, fake, no mtab, verbose: nothing for a FUSE daemon.
            "-s" | "-f" | "-n" | "-v" => {}
            // The type mount(8) gives for `-t artfs.SUBTYPE`.
            "-t" => {
                it.next().ok_or(HelperError::Usage)?;
            }
            _ if s.starts_with("-o") => options.extend(split(&s[2..])),
            _ if s.starts_with('-') => return Err(HelperError::Switch(s)),
            _ => positional.push(a.clone()),
        }
    }
    let [source, mountpoint] =
        <[OsString; 2]>::try_from(positional).map_err(|_| HelperError::Usage)?;
    Ok(Request {
        source,
        mountpoint,
        options,
    })
}

fn split(opts: &str) -> impl Iterator<Item = String> + '_ {
    opts.split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_string)
}

/// The `artfs mount` flags for `options`, each looked up among the long
/// flags of `mount` (the `mount` subcommand of `cli`).
pub fn mount_flags(cli: &clap::Command, options: &[String]) -> Result<Vec<String>, HelperError> {
    // Built, so each argument's number of values is settled and global
    // flags (--log-format) are among the subcommand's.
    let mut cli = cli.clone();
    cli.build();
    let cmd = cli
        .find_subcommand("mount")
        .expect("artfs has a mount subcommand");
    let mut flags = Vec::new();
    for opt in options {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        if value.is_none() && IGNORED.contains(&key)
            || IGNORED_PREFIXES.iter().any(|p| opt.starts_with(p))
        {
            continue;
        }
        // mount(8)'s names for two of artfs's flags.
        let key = match key {
            "ro" if value.is_none() => "read-only",
            "atime" if value.is_none() => continue,
            k => k,
        };
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .filter(|a| {
                !matches!(
                    a.get_action(),
                    clap::ArgAction::Help | clap::ArgAction::Version
                )
            })
            .find(|a| a.get_long() == Some(long.as_str()))
            .ok_or_else(|| HelperError::Unknown(key.to_string()))?;
        let takes = arg.get_action().takes_values();
        let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
        match value {
            Some(_) if !takes => return Err(HelperError::TakesNoValue(key.to_string())),
            Some(v) => flags.push(format!("--{long}={v}")),
            None if takes && !optional => return Err(HelperError::NeedsValue(key.to_string())),
            None => flags.push(format!("--{long}")),
        }
    }
    Ok(flags)
}

/// Run as the mount helper when [`invoked`] says so: `None` otherwise.
pub fn run(cli: &clap::Command) -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if !invoked(&args, cli) {
        return None;
    }
    let result = parse_args(&args[1..])
        .and_then(|req| Ok((mount_flags(cli, &req.options)?, req)))
        .map_err(|e| anyhow::anyhow!(e))
        .and_then(|(flags, req)| daemonise(&flags, &req));
    Some(match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("artfs: {e:#}");
            ExitCode::from(2)
        }
    })
}

/// A private directory for the notification socket, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("artfs-mount.{}.{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether the daemon may keep the helper's stderr for good.
fn keep_stderr() -> bool {
    crate::logging::stderr_is_journal()
        || std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.is_file())
}

/// Start `artfs mount FLAGS [--] SOURCE MNT` and wait until it is ready or
/// gone.
fn daemonise(flags: &[String], req: &Request) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let dir = PrivateDir::new().context("cannot create the notification socket's directory")?;
    let sock_path = dir.0.join("notify");
    let sock = UnixDatagram::bind(&sock_path).context("cannot bind the notification socket")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let relay = !keep_stderr();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("artfs").arg("mount").args(flags);
    if NO_SOURCE.iter().any(|s| OsStr::new(s) == req.source) {
        cmd.env("ARTFS_MOUNTPOINT", &req.mountpoint);
    } else {
        cmd.arg("--").arg(&req.source).arg(&req.mountpoint);
    }
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if relay {
        cmd.env(crate::notify::MOUNT_HELPER, crate::notify::RELAY)
            .stderr(Stdio::piped());
    } else {
        cmd.env(crate::notify::MOUNT_HELPER, "keep");
    }
    // SAFETY: setsid is async-signal-safe; the daemon leaves the caller's
    // session so a hangup of the terminal mount ran from does not stop it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the artfs daemon")?;
    let relayed = child.stderr.take().map(|mut from| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                use std::io::Write;
                let _ = std::io::stderr().write_all(&buf[..n]);
            }
            let _ = tx.send(());
        });
        rx
    });
    let outcome = wait_ready(&sock, &mut child)?;
    // Every line the daemon wrote before it let go of the pipe (or died).
    if let Some(rx) = relayed {
        let _ = rx.recv_timeout(Duration::from_secs(2));
    }
    Ok(match outcome {
        None => ExitCode::SUCCESS,
        Some(status) => {
            eprintln!(
                "artfs: mounting {} failed: the daemon {}",
                Path::new(&req.mountpoint).display(),
                describe(status)
            );
            ExitCode::from(status.code().map_or(1, |c| c.clamp(1, 255) as u8))
        }
    })
}

/// `None` at READY=1; the daemon's status if it exited first.
fn wait_ready(sock: &UnixDatagram, child: &mut Child) -> anyhow::Result<Option<ExitStatus>> {
    let mut buf = [0u8; 4096];
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") {
                    return Ok(None);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for the binary's definition: the same kinds of flags.
    fn cli() -> clap::Command {
        use clap::{Arg, ArgAction};
        let boolean = |name: &'static str| {
            Arg::new(name)
                .long(name)
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true")
        };
        clap::Command::new("artfs").subcommand(
            clap::Command::new("mount")
                .arg(Arg::new("backing"))
                .arg(Arg::new("mountpoint"))
                .arg(boolean("allow-other"))
                .arg(boolean("read-only"))
                .arg(boolean("noatime"))
                .arg(Arg::new("config").long("config"))
                .arg(Arg::new("trash-days").long("trash-days"))
                .arg(
                    Arg::new("foreground")
                        .long("foreground")
                        .short('f')
                        .action(ArgAction::SetTrue),
                ),
        )
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn flags(opts: &str) -> Result<Vec<String>, HelperError> {
        mount_flags(&cli(), &split(opts).collect::<Vec<_>>())
    }

    #[test]
    fn detects_the_helper_shape() {
        let c = cli();
        assert!(invoked(&os(&["artfs", "/srv/b", "/mnt/a", "-o", "rw"]), &c));
        assert!(invoked(&os(&["/sbin/mount.artfs", "/srv/b", "/mnt/a"]), &c));
        assert!(!invoked(&os(&["artfs", "mount", "/srv/b", "/mnt/a"]), &c));
        assert!(!invoked(&os(&["artfs", "help", "mount"]), &c));
        assert!(!invoked(&os(&["artfs", "--version"]), &c));
        assert!(!invoked(&os(&["artfs", "mout"]), &c), "a typo is clap's");
        assert!(!invoked(&os(&["artfs", "/srv/b", "--x"]), &c));
        assert!(!invoked(&os(&["artfs"]), &c));
    }

    #[test]
    fn parses_what_mount_passes() {
        let r = parse_args(&os(&[
            "/b",
            "/m",
            "-n",
            "-o",
            "rw,allow_other",
            "-oconfig=/c",
            "-v",
        ]))
        .unwrap();
        assert_eq!(r.source, "/b");
        assert_eq!(r.mountpoint, "/m");
        assert_eq!(r.options, ["rw", "allow_other", "config=/c"]);
        assert_eq!(parse_args(&os(&["/b"])), Err(HelperError::Usage));
        assert_eq!(
            parse_args(&os(&["/b", "/m", "-o"])),
            Err(HelperError::Usage)
        );
        assert_eq!(
            parse_args(&os(&["/b", "/m", "/x"])),
            Err(HelperError::Usage)
        );
        assert_eq!(
            parse_args(&os(&["/b", "/m", "-N", "ns"])),
            Err(HelperError::Switch("-N".into()))
        );
    }

    #[test]
    fn maps_options_onto_long_flags() {
        assert_eq!(
            flags("allow_other,config=/etc/artfs/a.toml,trash-days=3,foreground").unwrap(),
            [
                "--allow-other",
                "--config=/etc/artfs/a.toml",
                "--trash-days=3",
                "--foreground"
            ]
        );
        assert_eq!(flags("allow_other=false").unwrap(), ["--allow-other=false"]);
        // A value may hold `=`.
        assert_eq!(flags("config=/a=b").unwrap(), ["--config=/a=b"]);
        // mount(8)'s names: ro is --read-only; noatime is a flag of its own.
        assert_eq!(
            flags("ro,noatime,relatime,atime").unwrap(),
            ["--read-only", "--noatime"]
        );
    }

    #[test]
    fn ignores_mount_bookkeeping() {
        let all = "defaults,rw,auto,noauto,user,nouser,users,_netdev,nofail,dev,suid,exec,\
                   x-systemd.automount,x-systemd.requires=postgresql.service,comment=x,\
                   subtype=artfs";
        assert_eq!(flags(all).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        assert_eq!(
            flags("nosuch=1"),
            Err(HelperError::Unknown("nosuch".into()))
        );
        assert_eq!(
            flags("backing=/x"),
            Err(HelperError::Unknown("backing".into()))
        );
        assert_eq!(flags("help"), Err(HelperError::Unknown("help".into())));
        assert_eq!(
            flags("config"),
            Err(HelperError::NeedsValue("config".into()))
        );
        assert_eq!(
            flags("foreground=yes"),
            Err(HelperError::TakesNoValue("foreground".into()))
        );
        // Bookkeeping words with a value are not bookkeeping.
        assert_eq!(flags("rw=1"), Err(HelperError::Unknown("rw".into())));
        let msg = HelperError::Unknown("nosuch".into()).to_string();
        assert!(msg.contains("`nosuch`"), "{msg}");
    }
}
