//! Mounting and serving: mount point checks (including stale mounts left
//! by a killed daemon), the multi-threaded fuser session, and clean
//! unmount on SIGINT/SIGTERM.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use fuser::{Config, MountOption, SessionACL};

use super::FuseFs;
use crate::core::Fs;

/// Helper threads for requests that may block (fsync, I/O through the
/// daemon): several at once never wait for each other.
const HELPERS: usize = 4;

/// Options of the FUSE session. Plain data with defaults.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Request threads. One is fastest: the kernel then always wakes the
    /// same thread, which the scheduler keeps on the caller's CPU; requests
    /// that may block run on helper threads (see `offload`).
    pub threads: usize,
    pub allow_other: bool,
    /// Detach a dead mount at the mount point before mounting (never a
    /// live one; see [`check_mountpoint`]).
    pub force: bool,
    pub ttl: Duration,
    /// How long a CPU is kept awake after each request (see `awake`).
    pub keep_awake: Duration,
    /// Ask the kernel for FUSE over io_uring: requests then come through
    /// one io_uring queue per possible CPU, served by a thread pinned to
    /// that CPU (the vendored fuser's `uring` module), so each is answered
    /// on its caller's CPU. The kernel offers it only when
    /// /sys/module/fuse/parameters/enable_uring is Y; otherwise, or if
    /// registering the queues fails, the mount is served over /dev/fuse.
    /// On by default: setting that parameter is the administrator's choice.
    pub io_uring: bool,
    /// listxattr also lists the computed read-only `user.artstore.*`
    /// names (file_id, sha256, ...); off by default, so copying tools do
    /// not carry them. They are readable by name either way.
    pub list_computed_xattrs: bool,
    /// With a capacity, let files opened for writing use passthrough,
    /// each write checked against the capacity by fanotify's pre-content
    /// events (`write_guard`): bulk writes at the backing filesystem's
    /// speed. Off by default: sendfile(2) and splice(2) into such a file
    /// are not checked (docs/SEMANTICS.md).
    pub capacity_passthrough: bool,
    /// mount(8)'s `nodev`, `nosuid` and `noexec`, as the kernel applies
    /// them to this mount (an archive of files from elsewhere may hold
    /// device nodes and set-id programs that must not take effect here).
    pub nodev: bool,
    pub nosuid: bool,
    pub noexec: bool,
    /// mount(8)'s `ro`: the kernel refuses changes through this mount.
    pub read_only: bool,
    /// mount(8)'s `noatime`, shown in /proc/mounts (the daemon keeps atime,
    /// see `core::options::Atime`).
    pub noatime: bool,
}

/// Request threads unless told otherwise (see [`MountOptions::threads`]).
const DEFAULT_THREADS: usize = 1;

/// The `[mount]` defaults (`config::MountConfig`, their one home).
impl Default for MountOptions {
    fn default() -> Self {
        MountOptions::from(&crate::config::MountConfig::default())
    }
}

/// The `[mount]` settings (file, flags and `ARTFS_*` merged) as the
/// session's options.
impl From<&crate::config::MountConfig> for MountOptions {
    fn from(m: &crate::config::MountConfig) -> Self {
        MountOptions {
            threads: m.threads.unwrap_or(DEFAULT_THREADS),
            allow_other: m.allow_other,
            force: m.force,
            ttl: Duration::from_secs(m.attr_ttl),
            keep_awake: Duration::from_micros(m.keep_awake_us),
            io_uring: m.io_uring,
            list_computed_xattrs: m.list_computed_xattrs,
            capacity_passthrough: m.capacity_passthrough,
            nodev: m.nodev,
            nosuid: m.nosuid,
            noexec: m.noexec,
            read_only: m.read_only,
            noatime: m.noatime,
        }
    }
}

/// How long the mount point may take to answer a stat: a mount whose
/// daemon is stopped (SIGSTOP) or hung never does.
const STAT_WAIT: Duration = Duration::from_secs(5);

/// The mount point must be an empty directory. A mount already there is
/// detached with `force` only when it is provably dead: it answers
/// ENOTCONN/ECONNABORTED/ECANCELED (its daemon was killed), or it is an
/// artfs mount whose store lock nobody holds (no daemon serves it). A live
/// mount (it answers, and its daemon holds its store) is refused even with
/// `force`, naming the daemon when it can be found.
pub fn check_mountpoint(path: &Path, force: bool) -> anyhow::Result<PathBuf> {
    match stat_within(path, STAT_WAIT) {
        // A dead FUSE-over-io_uring mount answers ECONNABORTED rather than
        // ENOTCONN: the kernel aborts the connection when the daemon's rings
        // go away (seen on 6.18 after kill -9 of `artfs mount --io-uring`);
        // until the rings are torn down, a request put on a queue whose
        // thread is dead ends with ECANCELED.
        Some(Err(e))
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOTCONN | libc::ECONNABORTED | libc::ECANCELED)
            ) =>
        {
            if !force {
                bail!(
                    "mount point {} is a stale FUSE mount (transport endpoint is not connected), \
                     probably left by a killed daemon; run `fusermount3 -uz {}` or mount again \
                     with --force",
                    path.display(),
                    path.display()
                );
            }
            detach(
                path,
                "its daemon is gone (transport endpoint is not connected)",
            )?;
        }
        None => bail!(
            "mount point {} does not answer within {} s (a mount whose daemon is stopped or \
             hung?); not touching it, even with --force: only a dead mount is detached",
            path.display(),
            STAT_WAIT.as_secs()
        ),
        Some(Err(e)) => bail!("mount point {} is not usable: {e}", path.display()),
        Some(Ok(m)) if !m.is_dir() => bail!("mount point {} is not a directory", path.display()),
        Some(Ok(_)) => {
            if let Some(mounted) = path
                .canonicalize()
                .ok()
                .and_then(|c| crate::core::mountinfo::mount_at(&c))
            {
                match who_serves(&mounted) {
                    Served::Dead(why) if force => detach(path, &why)?,
                    Served::Dead(why) => bail!(
                        "mount point {} is a stale artfs mount ({why}); run `fusermount3 -uz {}` \
                         or mount again with --force",
                        path.display(),
                        path.display()
                    ),
                    Served::Live(who) => bail!(
                        "{} is already a mount point, live and {who}; unmount it first \
                         (`fusermount3 -u {}`){}",
                        path.display(),
                        path.display(),
                        if force {
                            "; --force detaches only a dead mount, never a live one"
                        } else {
                            ""
                        }
                    ),
                }
            }
        }
    }
    let canon = path.canonicalize()?;
    if std::fs::read_dir(&canon)?.next().is_some() {
        bail!("mount point {} is not empty", canon.display());
    }
    Ok(canon)
}

/// stat(2) of `path` on a helper thread; None if it did not answer within
/// `wait` (the thread is left blocked; the process exits soon after).
fn stat_within(path: &Path, wait: Duration) -> Option<std::io::Result<std::fs::Metadata>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::Builder::new()
        .name("artfs-stat".into())
        .spawn(move || {
            let _ = tx.send(std::fs::metadata(&p));
        })
        .ok()?;
    rx.recv_timeout(wait).ok()
}

/// Whether a mount that answers is served, and by whom.
enum Served {
    /// Provably dead, and why.
    Dead(String),
    /// Live, described ("served by artfs pid N (BACKING B)").
    Live(String),
}

fn who_serves(m: &crate::core::mountinfo::MountEntry) -> Served {
    use crate::core::StoreLock;
    // Mounted by root the type is plain `fuse`; through fusermount3 it
    // carries the subtype, `fuse.artfs`.
    let fuse = m.fstype == "fuse" || m.fstype == "fuse.artfs";
    let backing = fuse
        .then(|| m.source.strip_prefix("artfs:"))
        .flatten()
        .map(PathBuf::from)
        .filter(|b| b.join(".artfs/lock").exists());
    let Some(backing) = backing else {
        return Served::Live(format!("served ({} from {})", m.fstype, m.source));
    };
    // Every daemon holds its store's lock while it serves: a free lock
    // means nobody serves this mount any more.
    if !StoreLock::is_held_now(&backing) {
        return Served::Dead(format!(
            "its daemon is gone: nobody holds the lock of its store {}",
            backing.display()
        ));
    }
    match StoreLock::holder_pid(&backing) {
        Some(pid) => Served::Live(format!(
            "served by artfs pid {pid} (BACKING {})",
            backing.display()
        )),
        None => Served::Live(format!(
            "served by the artfs daemon of BACKING {}",
            backing.display()
        )),
    }
}

fn detach(path: &Path, why: &str) -> anyhow::Result<()> {
    tracing::warn!(path = %path.display(), why, "detaching dead mount");
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH)
        .with_context(|| format!("cannot detach the dead mount at {}", path.display()))
}

/// Whether `path` is listed as a mount point in /proc/self/mountinfo.
fn is_mountpoint(path: &Path) -> bool {
    let Ok(canon) = path.canonicalize() else {
        return false;
    };
    crate::core::mountinfo::mount_at(&canon).is_some()
}

/// Mount `fs` at `mountpoint` and serve until unmounted (by umount,
/// fusermount3 -u, or SIGINT/SIGTERM).
pub fn serve(fs: Arc<Fs>, mountpoint: &Path, opts: &MountOptions) -> anyhow::Result<()> {
    let mountpoint = check_mountpoint(mountpoint, opts.force)?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("artfs:{}", fs.backing().display())),
        MountOption::Subtype("artfs".into()),
        MountOption::DefaultPermissions,
        if opts.nodev {
            MountOption::NoDev
        } else {
            MountOption::Dev
        },
        if opts.nosuid {
            MountOption::NoSuid
        } else {
            MountOption::Suid
        },
    ];
    if opts.noexec {
        config.mount_options.push(MountOption::NoExec);
    }
    if opts.read_only {
        config.mount_options.push(MountOption::RO);
    }
    if opts.noatime {
        config.mount_options.push(MountOption::NoAtime);
    }
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;

    // Catch the signals before the mount appears: a SIGUSR1 or SIGTERM
    // sent as soon as it does (tests do) would otherwise find the default
    // action, which ends the process. They are acted on once mounted.
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])?;
    // A follower must be able to drop everything the kernel holds.
    let known = (fs.role() != crate::core::options::Role::Writer)
        .then(|| Arc::new(super::known::KnownNames::default()));
    let mut adapter = FuseFs::new(fs.clone());
    if let Some(k) = &known {
        adapter = adapter.with_known_names(k.clone());
    }
    let adapter = adapter
        .with_ttl(opts.ttl)
        .with_keep_awake(opts.keep_awake)?
        .with_io_uring(opts.io_uring)
        .with_list_computed_xattrs(opts.list_computed_xattrs)
        .with_capacity_passthrough(opts.capacity_passthrough)
        .with_helpers(HELPERS)?;
    let notifier = adapter.notifier_cell();
    let session = fuser::Session::new(adapter, &mountpoint, &config)
        .with_context(|| format!("cannot mount at {}", mountpoint.display()))?;
    let _ = notifier.set(session.notifier());
    // Other doors (the HTTP API) push their changes out of the kernel's caches.
    fs.set_invalidator(Arc::new(super::KernelInvalidator::new(
        notifier.clone(),
        known,
    )));
    tracing::info!(mountpoint = %mountpoint.display(), backing = %fs.backing().display(), "mounted");

    let detached = Arc::new(std::sync::atomic::AtomicBool::new(false));
    spawn_signal_handler(
        signals,
        mountpoint.clone(),
        fs.backing().join(".artfs/failpoints"),
        detached.clone(),
    )?;
    let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if crate::notify::enabled() {
        spawn_service_notifier(fs.clone(), mountpoint.clone(), ended.clone())?;
    }
    let mut result = session.run();
    ended.store(true, std::sync::atomic::Ordering::Release);
    crate::notify::stopping("stopping: unmounted; committing and closing the store");
    if let Err(e) = &result {
        // An unmount (ours on SIGTERM/SIGINT, lazy when busy, or umount)
        // can end the session with the connection aborted rather than
        // closed: with several worker threads, the first to see the end
        // closes its cloned device, and the others then read ECONNABORTED.
        // The mount is gone either way; whatever was in flight is
        // recovered at the next mount. An abort with the mount still in
        // place (fusectl) stays an error.
        if e.raw_os_error() == Some(libc::ECONNABORTED)
            && (detached.load(std::sync::atomic::Ordering::Acquire) || !is_mountpoint(&mountpoint))
        {
            tracing::info!("the session ended with the unmount");
            result = Ok(());
        }
    }
    tracing::info!(mountpoint = %mountpoint.display(), "unmounted");
    result.context("FUSE session failed")
}

/// On SIGINT/SIGTERM unmount; if busy, detach lazily so the session ends
/// once the last user lets go. SIGUSR1 arms crash points from
/// `failpoints_file` (test builds; see `crate::failpoints`).
fn spawn_signal_handler(
    mut signals: signal_hook::iterator::Signals,
    mountpoint: PathBuf,
    failpoints_file: PathBuf,
    detached: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    use signal_hook::consts::SIGUSR1;
    std::thread::Builder::new()
        .name("artfs-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGUSR1 {
                    if let Err(e) = crate::failpoints::arm_from_file(&failpoints_file) {
                        tracing::warn!(error = %e, "could not arm crash points");
                    }
                    continue;
                }
                tracing::info!(signal = sig, "unmounting on signal");
                crate::notify::stopping(&format!("stopping: unmounting on signal {sig}"));
                if let Err(e) = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::empty()) {
                    tracing::warn!(error = %e, "mount busy; detaching lazily");
                    detached.store(true, std::sync::atomic::Ordering::Release);
                    let _ = nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        })?;
    Ok(())
}

/// How often the service status is refreshed (and, at most, the watchdog
/// interval).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// For systemd (`Type=notify`, see `crate::notify`): READY=1 once the mount
/// answers (a stat of its root goes through the session, so the kernel's
/// INIT is done and requests are served; the HTTP door, if any, was bound
/// before the mount appeared), then STATUS= whenever the mode or the
/// writer's last error change, and WATCHDOG=1 pings only while the writer
/// still commits and the session runs.
fn spawn_service_notifier(
    fs: Arc<Fs>,
    mountpoint: PathBuf,
    ended: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    use crate::notify;
    use std::sync::atomic::Ordering;
    let root = mountpoint.clone();
    let describe = move |fs: &Fs| {
        let (alive, error) = fs.writer_health();
        let recovered = match fs.recovered_at_start() {
            0 => String::new(),
            n => format!(", recovered {n} log rows"),
        };
        let mut error = error
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default();
        if !alive {
            error.push_str("; the metadata writer stopped");
        }
        format!(
            "serving {} at {}, mode {}{recovered}{error}",
            fs.backing().display(),
            mountpoint.display(),
            fs.mode()
        )
    };
    let watchdog = notify::watchdog_interval();
    let tick = watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
    std::thread::Builder::new()
        .name("artfs-sd-notify".into())
        .spawn(move || {
            if let Err(e) = std::fs::metadata(&root) {
                notify::status(&format!("failed: the mount does not answer: {e}"));
                return;
            }
            if ended.load(Ordering::Acquire) {
                return;
            }
            let mut shown = describe(&fs);
            tracing::info!(status = %shown, "ready (notified systemd)");
            notify::ready(&shown);
            loop {
                std::thread::sleep(tick);
                if ended.load(Ordering::Acquire) {
                    return;
                }
                let now = describe(&fs);
                if now != shown {
                    notify::status(&now);
                    shown = now;
                }
                // A stopped writer means nothing more gets committed:
                // stop pinging and let systemd's watchdog act.
                if watchdog.is_some() && fs.writer_health().0 {
                    notify::send("WATCHDOG=1");
                }
            }
        })?;
    Ok(())
}
