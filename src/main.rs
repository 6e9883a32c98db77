//! The `artfs` command line.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use artfs::cmd::fsck;
use artfs::config::{over, Config};
use artfs::core::{open_for_rebuild, open_offline, open_store, StoreLock, StoreOptions};
use artfs::fuse::{serve, MountOptions};

/// jemalloc, not glibc's malloc. A request thread builds what the writer
/// and the sidecar thread free: glibc served that pattern from contended
/// arenas whose free lists it sorts again on each allocation, a cost that
/// grew with the store (at a million files, 17% of the request thread in
/// `_int_malloc`). With jemalloc the create rate at a million files rose
/// by about a quarter, resident memory the same (benches/README.md,
/// session 21). SQLite's own allocations still go to glibc.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "artfs",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ARTFS_GIT_COMMIT"), ")"),
    about = "A crash-safe POSIX filesystem with SQL metadata",
    after_help = "Also a mount helper: `artfs BACKING MOUNTPOINT -o OPTIONS` (as mount.fuse3 \
                  runs it for `mount -t fuse.artfs` and fstab) mounts in the background."
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line for collectors.
    #[arg(
        long,
        global = true,
        env = "ARTFS_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: artfs::logging::LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mount BACKING at MOUNTPOINT and serve it in the foreground until
    /// unmounted or signalled (SIGINT/SIGTERM unmount cleanly).
    Mount(Box<MountArgs>),
    /// Check that the metadata tables and the objects in BACKING agree.
    /// Exit 0 when consistent, 1 with a report otherwise.
    Fsck(FsckArgs),
    /// Rebuild the metadata tables from the attr.json sidecars in BACKING
    /// (the store must not be mounted).
    Rebuild(RebuildArgs),
    /// Verify every file's content against its recorded SHA-256; exit 1
    /// if any is damaged. Read-only: safe while mounted.
    Scrub(ScrubArgs),
    /// Show the store's state: mode, capacity and use, files, whether it is
    /// mounted (and by which pid), the writer's lease (PostgreSQL), pending
    /// log rows, unhashed files, and the last fsck and scrub results.
    /// Read-only: safe while mounted; never takes the store lock.
    Status(StatusArgs),
    /// Full-text search over names, descriptions, versions and custom
    /// attributes; prints matching paths, best first.
    Search(SearchArgs),
    /// Show the store's mode, or change it (rw -> ro -> ar; ro -> rw and
    /// the irreversible ro -> ar with --confirm; edit is fixed for the
    /// store's life). A running mount follows within a second.
    Mode(ModeArgs),
    /// Mint a signed access token for tests and administration; prints it
    /// on stdout. The algorithm follows the key (RS256, ES256, EdDSA).
    Token(TokenArgs),
    /// Adopt a tree written by the original storage element
    /// (YYYY/MM/DD/HH/{storage_filename} + .attr.json, V1 or V2) into the
    /// (unmounted) store: DEST/YYYY/MM/DD/original_filename. Exit 0 when
    /// every file was imported or already present, 1 when some were
    /// skipped (listed with reasons). See docs/IMPORT.md.
    Import(ImportArgs),
    /// The configuration file: print an example with every key and its
    /// default, or check a file.
    Config(ConfigArgs),
    /// The trash (/.trash/<uid>/<when>/<original path>): list its units
    /// (a user's deletion session each), or empty it. Refused while the
    /// store is mounted; then use `rm` inside /.trash (or the HTTP API's
    /// /api/v1/trash).
    Trash(TrashArgs),
    /// The metadata database: `db copy` moves a store's tables to another
    /// database (SQLite <-> PostgreSQL) without a rebuild.
    Db(DbArgs),
    /// Print a shell completion script, e.g. `artfs completions bash >
    /// /etc/bash_completion.d/artfs`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page artfs(1), or write a page per command into
    /// --dir (artfs.1, artfs-mount.1, ...).
    Man {
        /// Directory to write every page into.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct TrashArgs {
    #[command(subcommand)]
    cmd: TrashCmd,
}

#[derive(Subcommand)]
enum TrashCmd {
    /// Each unit, oldest first: path, deleting uid, last deletion, files
    /// and bytes.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Purge every unit (or those whose last deletion is older than
    /// --older-than days) for good, with its directories.
    Empty {
        #[command(flatten)]
        store: StoreArgs,
        /// Only units whose last deletion is at least this many days old.
        #[arg(long, value_name = "DAYS")]
        older_than: Option<f64>,
    },
}

#[derive(clap::Args)]
struct ConfigArgs {
    #[command(subcommand)]
    cmd: ConfigCmd,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print an example configuration file: every key, with its default.
    Example,
    /// Read a configuration file and report the first problem (exit 2) or
    /// "ok" (exit 0).
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct DbArgs {
    #[command(subcommand)]
    cmd: DbCmd,
}

#[derive(Subcommand)]
enum DbCmd {
    /// Copy the (unmounted) store's metadata into the empty tables of
    /// another database, verify the copy, and check it against BACKING as
    /// fsck does. The source is left as it was; mount with the new --db
    /// (and --table-prefix) afterwards.
    Copy(DbCopyArgs),
}

#[derive(clap::Args)]
struct DbCopyArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Target database URL (sqlite://FILE, postgres://...; a password from
    /// ARTFS_DB_PASSWORD).
    #[arg(long, value_name = "URL")]
    to: String,
    /// Table prefix in the target [default: the source's].
    #[arg(long, value_name = "PREFIX")]
    to_prefix: Option<String>,
}

#[derive(clap::Args)]
struct FsckArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Fix what can be fixed without guessing, and say what was done.
    /// Refused while the store is mounted.
    #[arg(long)]
    repair: bool,
}

// Where a store is: BACKING, and its database when not the default; or
// the `[store]` section of a configuration file.
//
// Settings a file may also give are `Option`s without a clap default
// (defaults live in artfs::config): `Some` means the flag or its
// `ARTFS_*` variable was given, and then it wins over the file.
#[derive(clap::Args)]
struct StoreArgs {
    /// Directory holding the objects, or s3://BUCKET[/PREFIX] with
    /// --cache-dir [or `backing` in the config file's [store]].
    #[arg(env = "ARTFS_BACKING")]
    backing: Option<PathBuf>,
    /// Metadata database URL [default: sqlite://BACKING/.artfs/meta.db].
    #[arg(long, env = "ARTFS_DB")]
    db: Option<String>,
    /// Prefix of the metadata tables [default: artfs].
    #[arg(long, env = "ARTFS_TABLE_PREFIX")]
    table_prefix: Option<String>,
    /// TOML configuration file; flags and ARTFS_* variables override it
    /// (`artfs config example` shows every key).
    #[arg(long, env = "ARTFS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    s3: S3Flags,
}

impl StoreArgs {
    /// The command line and environment laid over the file's `[store]`.
    fn merge(self, cfg: &mut Config) {
        over(&mut cfg.store.backing, self.backing.map(Some));
        over(&mut cfg.store.db, self.db.map(Some));
        over(&mut cfg.store.table_prefix, self.table_prefix);
        self.s3.merge(cfg);
    }
}

/// Where a store in a bucket is cached and how the bucket is reached
/// (every command that opens a store takes these).
#[derive(clap::Args)]
struct S3Flags {
    /// With BACKING s3://BUCKET[/PREFIX]: the local directory caching the
    /// bucket's objects (made if absent).
    #[arg(long, env = "ARTFS_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// With BACKING s3://...: bytes of cached copies kept [default: 10G].
    #[arg(long, env = "ARTFS_CACHE_SIZE", value_parser = artfs::config::parse_bytes)]
    cache_size: Option<u64>,
    /// With BACKING s3://...: endpoint URL of an S3-compatible service
    /// [default: AWS, or AWS_ENDPOINT_URL].
    #[arg(long, env = "ARTFS_S3_ENDPOINT", value_name = "URL")]
    s3_endpoint: Option<String>,
    /// With BACKING s3://...: the bucket's region [default: AWS_REGION, else us-east-1].
    #[arg(long, env = "ARTFS_S3_REGION", value_name = "REGION")]
    s3_region: Option<String>,
}

impl S3Flags {
    fn merge(self, cfg: &mut Config) {
        over(&mut cfg.store.cache_dir, self.cache_dir.map(Some));
        over(&mut cfg.store.cache_size, self.cache_size.map(Some));
        over(&mut cfg.s3.endpoint, self.s3_endpoint.map(Some));
        over(&mut cfg.s3.region, self.s3_region.map(Some));
    }
}

/// The store the merged settings name; without a BACKING, clap's usage
/// error for the subcommand (exit 2).
fn store_options(cfg: &Config, cmd: &str) -> StoreOptions {
    let o = match cfg.store_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("artfs {cmd}: {e:#}");
            std::process::exit(2);
        }
    };
    let Some(o) = o else {
        missing(
            cmd,
            "<BACKING>\n(give it on the command line, in ARTFS_BACKING, \
             or as [store] backing in the --config file)",
        );
    };
    o
}

/// Exit as clap does for a missing required argument (exit 2).
fn missing(cmd: &str, what: &str) -> ! {
    let mut c = Cli::command();
    c.build(); // names the subcommand's usage `artfs CMD`
    let sub = c.find_subcommand_mut(cmd).expect("known subcommand");
    sub.error(
        clap::error::ErrorKind::MissingRequiredArgument,
        format!("the following required argument was not provided: {what}"),
    )
    .exit()
}

#[derive(clap::Args)]
struct ModeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The new mode: edit, rw, ro or ar. Without it, print the mode. With
    /// BACKING from ARTFS_BACKING or --config, `artfs mode MODE` works.
    mode: Option<artfs::core::policy::Mode>,
    /// Confirm going back from ro to rw, or the irreversible ro -> ar.
    #[arg(long)]
    confirm: bool,
    /// rw -> ro while files are open for writing: wait for them to be
    /// closed (they finish their writes; no new writer is let in) instead
    /// of refusing.
    #[arg(long)]
    force: bool,
    /// With --force: give up after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    wait: f64,
}

#[derive(clap::Args)]
struct ScrubArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Read at most this many MiB per second.
    #[arg(long, value_name = "MIB_PER_S")]
    rate_limit: Option<u64>,
    /// Only report: list the files without a recorded hash but record
    /// nothing (recording is the default on a store no daemon serves).
    #[arg(long)]
    dry_run: bool,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print one JSON object (field names in docs/OPERATIONS.md) instead
    /// of `key: value` lines.
    #[arg(long)]
    json: bool,
    /// Also list the nodes serving the store, from the Redis registry
    /// [or [cluster] redis in the config file].
    #[arg(long, env = "ARTFS_REDIS", value_name = "URL")]
    redis: Option<String>,
}

#[derive(clap::Args)]
struct SearchArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// FTS5 query: words, "phrases", prefix*, AND/OR/NOT, column:word
    /// (columns: names, description, version, custom). Required; with
    /// BACKING from ARTFS_BACKING or --config, `artfs search QUERY` works.
    query: Option<String>,
    /// Most results to print.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(clap::Args)]
struct RebuildArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only add inodes missing from the tables; keep the rest.
    #[arg(long, conflicts_with = "check")]
    incremental: bool,
    /// Change nothing: report sidecars without rows and rows without
    /// sidecars (exit 1 if any).
    #[arg(long)]
    check: bool,
}

// `artfs mount`. Every setting may also come from `ARTFS_*` and from the
// `--config` file. To add one: a field in artfs::config (with its default,
// and a line in docs/artfs.example.toml), an `Option` field here with
// `env = "ARTFS_..."` and no clap default, and a line in `merge` below.
#[derive(clap::Args)]
struct MountArgs {
    /// BACKING (directory holding the objects and, by default, the
    /// metadata database), --db, --table-prefix and --config.
    #[command(flatten)]
    store: StoreArgs,
    /// Empty directory to mount on [or `mountpoint` in the config file's
    /// [mount]].
    #[arg(env = "ARTFS_MOUNTPOINT")]
    mountpoint: Option<PathBuf>,
    /// Let other users access the mount (needed for multi-user use as
    /// root) [default: false].
    #[arg(long, env = "ARTFS_ALLOW_OTHER", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    allow_other: Option<bool>,
    /// FUSE request threads [default: 1; requests that may block run on
    /// helper threads].
    #[arg(long, env = "ARTFS_THREADS")]
    threads: Option<usize>,
    /// Detach a stale mount left at MOUNTPOINT by a killed daemon
    /// [default: false].
    #[arg(long, env = "ARTFS_FORCE", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    force: Option<bool>,
    /// Serve requests over FUSE-over-io_uring (one queue per CPU, each
    /// request answered on its caller's CPU) when the kernel offers it,
    /// which it does once the administrator sets
    /// /sys/module/fuse/parameters/enable_uring to Y; otherwise, or with
    /// --io-uring=false, over /dev/fuse [default: true].
    #[arg(long, env = "ARTFS_IO_URING", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    io_uring: Option<bool>,
    /// List the computed read-only attributes (user.artstore.file_id,
    /// sha256, ...) in listxattr; without it they are readable by name
    /// only, so copying tools do not carry them [default: false].
    #[arg(long, env = "ARTFS_LIST_COMPUTED_XATTRS", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    list_computed_xattrs: Option<bool>,
    /// With --capacity, let writes use passthrough (bulk writes at the
    /// backing filesystem's speed), each checked against the capacity by
    /// the kernel's fanotify pre-content events (Linux 6.14+, as root);
    /// sendfile(2) and splice(2) into a file are not checked, so they can
    /// pass the capacity [default: false].
    #[arg(long, env = "ARTFS_CAPACITY_PASSTHROUGH", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    capacity_passthrough: Option<bool>,
    /// Device files on the mount do not work as devices (mount's nodev)
    /// [default: false].
    #[arg(long, env = "ARTFS_NODEV", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    nodev: Option<bool>,
    /// Set-user-id and set-group-id bits do not take effect when programs
    /// run from the mount (mount's nosuid) [default: false].
    #[arg(long, env = "ARTFS_NOSUID", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    nosuid: Option<bool>,
    /// Programs on the mount cannot be run (mount's noexec)
    /// [default: false].
    #[arg(long, env = "ARTFS_NOEXEC", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    noexec: Option<bool>,
    /// Mount read-only (mount's ro): the kernel refuses every change
    /// through this mount with EROFS, and reads move no atime; the store's
    /// mode, and so the HTTP door, are unchanged (`artfs mode` makes the
    /// store read-only) [default: false].
    #[arg(long, env = "ARTFS_READ_ONLY", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    read_only: Option<bool>,
    /// Reads never move atime (mount's noatime) [default: false; relatime:
    /// atime moves when not newer than mtime or ctime, or a day old].
    #[arg(long, env = "ARTFS_NOATIME", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    noatime: Option<bool>,
    /// Every open for reading moves atime (mount's strictatime)
    /// [default: false].
    #[arg(long, env = "ARTFS_STRICTATIME", value_name = "BOOL", num_args = 0..=1,
          require_equals = true, default_missing_value = "true",
          value_parser = artfs::config::parse_bool)]
    strictatime: Option<bool>,
    /// Seconds the kernel may cache entries and attributes [default: 3600].
    #[arg(long, env = "ARTFS_ATTR_TTL")]
    attr_ttl: Option<u64>,
    /// Microseconds a CPU is kept busy after each request, so the next
    /// request's hand-offs land on a running CPU (0: never) [default: 1000].
    #[arg(long, env = "ARTFS_KEEP_AWAKE_US")]
    keep_awake_us: Option<u64>,
    /// Entries per in-memory metadata cache [default: 100000].
    #[arg(long, env = "ARTFS_CACHE_ENTRIES")]
    cache_entries: Option<usize>,
    /// Capacity: the most bytes regular files may hold (e.g. 500G, 10M;
    /// 0 removes the limit). Kept by the store; writes past it fail with
    /// ENOSPC. Writes then go through the daemon (no passthrough).
    #[arg(long, env = "ARTFS_CAPACITY", value_parser = artfs::config::parse_bytes)]
    capacity: Option<u64>,
    /// Days an unlinked file stays in /.trash before it is purged (edit
    /// mode; 0 turns the trash off) [default: 1].
    #[arg(long, env = "ARTFS_TRASH_DAYS")]
    trash_days: Option<f64>,
    /// How far ahead a retention lock may reach (e.g. 100years, 30d; 0: no
    /// bound) [default: 100years].
    #[arg(long, env = "ARTFS_MAX_RETENTION", value_parser = artfs::config::parse_duration)]
    max_retention: Option<Duration>,
    /// Committed log rows kept at most [default: 100000].
    #[arg(long, env = "ARTFS_WAL_KEEP_ROWS")]
    wal_keep_rows: Option<u64>,
    /// Days committed log rows are kept [default: 7].
    #[arg(long, env = "ARTFS_WAL_KEEP_DAYS")]
    wal_keep_days: Option<u64>,
    /// Days failed and rolled-back log rows are kept [default: 90].
    #[arg(long, env = "ARTFS_WAL_KEEP_FAILED_DAYS")]
    wal_keep_failed_days: Option<u64>,
    /// Seconds between collector sweeps (trash purge, expiry).
    #[arg(
        long,
        env = "ARTFS_COLLECT_INTERVAL",
        default_value_t = artfs::core::collector::CollectorConfig::default().interval.as_secs_f64(),
        hide = true
    )]
    collect_interval: f64,
    /// Seconds added to the collector's clock (tests of expiry and trash).
    #[arg(long, env = "ARTFS_CLOCK_SKEW", default_value_t = 0, hide = true)]
    clock_skew: u64,
    /// Mode of a new store: edit, rw, ro or ar [default: edit]. An existing
    /// store keeps its mode (change it with `artfs mode`).
    #[arg(long, env = "ARTFS_MODE")]
    mode: Option<artfs::core::policy::Mode>,
    /// Serve the store read-only as a replica of its writer on another
    /// node, following its changes (tables in PostgreSQL; docs/CLUSTER.md)
    /// [or [cluster] role = "replica"].
    #[arg(long, conflicts_with = "standby")]
    replica: bool,
    /// Serve as a replica that takes over as writer, without unmounting,
    /// when the writer stops renewing its lease [or [cluster] role =
    /// "standby"].
    #[arg(long)]
    standby: bool,
    /// Milliseconds between a follower's reads of the writer's change feed
    /// [default: 1000].
    #[arg(long, env = "ARTFS_POLL_MS")]
    poll_ms: Option<u64>,
    /// Seconds the writer may be silent before a standby takes over (at
    /// least 3) [default: 6].
    #[arg(long, env = "ARTFS_TAKEOVER_SECS")]
    takeover_secs: Option<f64>,
    /// Redis URL (redis://, rediss://, unix://) for instant change hints
    /// to followers and the node registry; the password from
    /// ARTFS_REDIS_PASSWORD or [cluster] redis_password_file [default:
    /// none: followers poll].
    #[arg(long, env = "ARTFS_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// Run in the foreground (the default; accepted for compatibility).
    #[arg(long, short = 'f')]
    foreground: bool,
    #[command(flatten)]
    api: artfs::api::ApiArgs,
}

impl MountArgs {
    /// The command line and environment laid over the file: one line per
    /// setting.
    fn merge(self, cfg: &mut Config) {
        self.store.merge(cfg);
        self.api.merge(&mut cfg.api);
        over(&mut cfg.mount.mountpoint, self.mountpoint.map(Some));
        over(&mut cfg.mount.allow_other, self.allow_other);
        over(&mut cfg.mount.threads, self.threads.map(Some));
        over(&mut cfg.mount.force, self.force);
        over(&mut cfg.mount.io_uring, self.io_uring);
        over(
            &mut cfg.mount.list_computed_xattrs,
            self.list_computed_xattrs,
        );
        over(
            &mut cfg.mount.capacity_passthrough,
            self.capacity_passthrough,
        );
        over(&mut cfg.mount.nodev, self.nodev);
        over(&mut cfg.mount.nosuid, self.nosuid);
        over(&mut cfg.mount.noexec, self.noexec);
        over(&mut cfg.mount.read_only, self.read_only);
        over(&mut cfg.mount.noatime, self.noatime);
        over(&mut cfg.mount.strictatime, self.strictatime);
        over(&mut cfg.mount.attr_ttl, self.attr_ttl);
        over(&mut cfg.mount.keep_awake_us, self.keep_awake_us);
        over(&mut cfg.mount.cache_entries, self.cache_entries);
        over(&mut cfg.policy.capacity, self.capacity.map(Some));
        over(&mut cfg.policy.mode, self.mode);
        over(&mut cfg.policy.trash_days, self.trash_days);
        over(&mut cfg.policy.max_retention, self.max_retention);
        let role = if self.replica {
            Some(artfs::core::options::Role::Replica)
        } else if self.standby {
            Some(artfs::core::options::Role::Standby)
        } else {
            None
        };
        over(&mut cfg.cluster.role, role);
        over(&mut cfg.cluster.poll_ms, self.poll_ms);
        over(&mut cfg.cluster.takeover_secs, self.takeover_secs);
        over(&mut cfg.cluster.redis, self.redis.map(Some));
        over(&mut cfg.policy.wal_keep_rows, self.wal_keep_rows);
        over(&mut cfg.policy.wal_keep_days, self.wal_keep_days);
        over(
            &mut cfg.policy.wal_keep_failed_days,
            self.wal_keep_failed_days,
        );
    }
}

impl Cmd {
    /// The `--config` file (or `ARTFS_CONFIG`) of commands that take one.
    fn config_file(&self) -> Option<&std::path::Path> {
        let store = match self {
            Cmd::Mount(a) => &a.store,
            Cmd::Fsck(a) => &a.store,
            Cmd::Rebuild(a) => &a.store,
            Cmd::Scrub(a) => &a.store,
            Cmd::Search(a) => &a.store,
            Cmd::Status(a) => &a.store,
            Cmd::Mode(a) => &a.store,
            Cmd::Db(DbArgs {
                cmd: DbCmd::Copy(a),
            }) => &a.store,
            Cmd::Trash(TrashArgs {
                cmd: TrashCmd::List { store } | TrashCmd::Empty { store, .. },
            }) => store,
            Cmd::Token(_)
            | Cmd::Import(_)
            | Cmd::Config(_)
            | Cmd::Completions { .. }
            | Cmd::Man { .. } => return None,
        };
        store.config.as_deref()
    }
}

/// glibc's malloc arenas a daemon may use, unless `MALLOC_ARENA_MAX` says
/// otherwise. Only C code allocates there now (SQLite's page caches and
/// statements; Rust code uses jemalloc, above). glibc's default, eight
/// per CPU, gave each busy thread an arena of its own that kept what it
/// freed: about 30 MiB more resident memory at a million files (issue 19).
#[cfg(target_env = "gnu")]
const MALLOC_ARENAS: libc::c_int = 4;

fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
    }
}

fn main() -> std::process::ExitCode {
    limit_malloc_arenas();
    // `artfs BACKING MNT -o OPTS`, as mount.fuse3 and mount(8) run it.
    if let Some(code) = artfs::mount_helper::run(&Cli::command()) {
        return code;
    }
    let cli = Cli::parse();
    // The file first: its [log] filter sets up logging (ARTFS_LOG wins).
    let file = Config::load(cli.cmd.config_file());
    let log = file
        .as_ref()
        .map_or(artfs::config::DEFAULT_LOG, |c| &c.log.filter);
    let filter = match (
        tracing_subscriber::EnvFilter::try_new(log),
        tracing_subscriber::EnvFilter::try_from_env("ARTFS_LOG"),
    ) {
        (Err(e), _) if file.is_ok() => {
            let path = cli.cmd.config_file().unwrap_or(std::path::Path::new("?"));
            eprintln!("artfs: config file {}: [log] filter: {e}", path.display());
            return std::process::ExitCode::from(2);
        }
        (_, Ok(from_env)) => from_env,
        (from_file, Err(_)) => from_file
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(artfs::config::DEFAULT_LOG)),
    };
    artfs::logging::init(filter, cli.log_format);
    // The config file's database password reaches the driver the way
    // ARTFS_DB_PASSWORD does (set here, before any thread starts).
    let file = file.and_then(|f| {
        if std::env::var_os(artfs::meta::postgres::PASSWORD_ENV).is_none() {
            if let Some(pw) = f.store.db_password()? {
                std::env::set_var(artfs::meta::postgres::PASSWORD_ENV, pw);
            }
        }
        Ok(f)
    });
    // Crash points from FAILPOINTS (test builds only; inert otherwise).
    let _failpoints = fail::FailScenario::setup();
    let result = file.and_then(|file| match cli.cmd {
        Cmd::Mount(args) => mount(*args, file)
            .inspect_err(|e| artfs::notify::status(&format!("failed: {e:#}")))
            .map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Fsck(args) => fsck(args, file),
        Cmd::Db(DbArgs {
            cmd: DbCmd::Copy(args),
        }) => db_copy(args, file),
        Cmd::Rebuild(args) => rebuild(args, file),
        Cmd::Scrub(args) => scrub(args, file),
        Cmd::Search(args) => search(args, file),
        Cmd::Status(args) => status(args, file),
        Cmd::Mode(args) => mode(args, file),
        Cmd::Token(args) => Ok(token(args)),
        Cmd::Import(args) => import(args),
        Cmd::Config(args) => config(args),
        Cmd::Trash(args) => trash(args, file),
        Cmd::Completions { shell } => {
            artfs::cli_docs::completions(shell, &mut Cli::command(), &mut std::io::stdout())?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Cmd::Man { dir } => man(dir),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("artfs: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// What `artfs mount` serves and how: flags and environment over the file
/// over the defaults, turned into the store's, the mount's and the HTTP
/// door's options.
struct MountPlan {
    store: StoreOptions,
    mountpoint: PathBuf,
    mount: MountOptions,
    api: Option<artfs::api::ApiConfig>,
    /// Redis (the client and its URL), checked before anything starts.
    redis: Option<(redis::Client, String)>,
}

impl MountArgs {
    /// The plan; bad API settings or a bad trash duration fail, a missing
    /// BACKING or MOUNTPOINT exits as clap does.
    fn plan(self, mut cfg: Config) -> anyhow::Result<MountPlan> {
        // Settings only the command line and environment give (for now).
        let (collect_interval, clock_skew) = (self.collect_interval, self.clock_skew);
        let api_args = self.api.clone();
        self.merge(&mut cfg);
        let api = api_args.settings(&cfg.api)?;
        let store = store_options(&cfg, "mount");
        let Some(mountpoint) = cfg.mount.mountpoint.clone() else {
            missing(
                "mount",
                "<MOUNTPOINT>\n(give it on the command line, in ARTFS_MOUNTPOINT, \
                 or as [mount] mountpoint in the --config file)",
            );
        };
        let mut store = cfg.serving(store)?;
        store.collector.interval = Duration::from_secs_f64(collect_interval.max(0.05));
        store.collector.clock_skew = Duration::from_secs(clock_skew);
        let redis = match &cfg.cluster.redis {
            None => None,
            Some(url) => {
                let pw = cfg.cluster.redis_password()?;
                let client =
                    artfs::cluster::client(url, pw.as_deref()).map_err(anyhow::Error::msg)?;
                Some((client, url.clone()))
            }
        };
        let mut api = api;
        if let (Some(a), Some((client, _))) = (api.as_mut(), &redis) {
            a.redis = Some(client.clone());
        }
        Ok(MountPlan {
            store,
            mountpoint,
            mount: MountOptions::from(&cfg.mount),
            api,
            redis,
        })
    }
}

/// `artfs mount`: serve the plan until unmounted.
fn mount(args: MountArgs, cfg: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let MountPlan {
        store: sopts,
        mountpoint,
        mount: mopts,
        api,
        redis,
    } = args.plan(cfg)?;
    // Check the mount point (and, above, the API settings) before touching
    // BACKING, so bad ones change nothing.
    artfs::fuse::check_mountpoint(&mountpoint, mopts.force)?;
    let rt = runtime()?;
    // systemd (Type=notify): recovery may be long; READY=1 comes from
    // `serve` once the mount answers.
    artfs::notify::status("recovering: opening the store and settling its intent log");
    let extend = artfs::notify::Extender::start();
    let (fs, _lock) = open_store(&sopts, rt.handle().clone())
        .with_context(|| format!("cannot open store {}", sopts.backing.display()))?;
    drop(extend);
    // The HTTP door binds before the mount appears: a bad key, certificate
    // or address fails the start.
    let server = match api.map(|cfg| artfs::api::start(fs.clone(), cfg, rt.handle())) {
        Some(Err(e)) => {
            fs.close();
            return Err(e);
        }
        Some(Ok(s)) => Some(s),
        None => None,
    };
    let api_url = server
        .as_ref()
        .map(|s| format!("http://{}", s.local_addr()));
    let link = redis
        .map(|(client, url)| link_cluster(&fs, client, &url, api_url, &mountpoint, rt.handle()));
    let served = serve(fs.clone(), &mountpoint, &mopts);
    if let Some(l) = link {
        l.stop();
    }
    if let Some(s) = server {
        s.shutdown();
    }
    fs.close();
    served
}

/// Tie the store to Redis (docs/CLUSTER.md): publish the feed's head
/// after each commit, wake the follower on hints, keep this node in the
/// registry.
fn link_cluster(
    fs: &Arc<artfs::core::Fs>,
    client: redis::Client,
    url: &str,
    api_url: Option<String>,
    mountpoint: &std::path::Path,
    rt: &tokio::runtime::Handle,
) -> Arc<artfs::cluster::Link> {
    // rediss:// uses the same TLS provider as the API.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = artfs::cluster::NodeRecord {
        store_id: fs.store_id().to_string(),
        node_id: uuid::Uuid::now_v7().to_string(),
        host: artfs::meta::lease::Holder::me().host,
        pid: std::process::id(),
        api_url,
        mountpoint: mountpoint.display().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: artfs::types::Timestamp::now().to_rfc3339(),
        ..Default::default()
    };
    let weak = Arc::downgrade(fs);
    let node = move || {
        let mut n = base.clone();
        if let Some(fs) = weak.upgrade() {
            let f = fs.follow_state();
            let (used_bytes, file_count) = fs.usage();
            n.role = f.role.to_string();
            n.mode = fs.mode().to_string();
            n.capacity = fs.capacity();
            n.used_bytes = used_bytes;
            n.file_count = file_count;
            n.feed_applied = f.applied;
            n.feed_behind = f.behind;
        }
        n
    };
    // Followers (a standby too, until it takes over) wake on hints.
    let on_hint = (fs.role() != artfs::core::options::Role::Writer).then(|| {
        let weak = Arc::downgrade(fs);
        Box::new(move |head| {
            if let Some(fs) = weak.upgrade() {
                fs.feed_hint(head);
            }
        }) as Box<dyn Fn(u64) + Send + Sync>
    });
    let link = artfs::cluster::Link::start(client, url, rt, node, on_hint);
    let link = Arc::new(link);
    let publisher = Arc::downgrade(&link);
    fs.set_feed_publisher(move |head| {
        if let Some(l) = publisher.upgrade() {
            l.publish(head);
        }
    });
    link
}

/// `artfs man [--dir DIR]`.
fn man(dir: Option<PathBuf>) -> anyhow::Result<std::process::ExitCode> {
    match dir {
        None => artfs::cli_docs::man_page(Cli::command(), &mut std::io::stdout())?,
        Some(dir) => {
            let pages = artfs::cli_docs::man_pages(Cli::command(), &dir)
                .with_context(|| format!("cannot write manual pages into {}", dir.display()))?;
            println!("{} pages in {}", pages.len(), dir.display());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `artfs config example|check`.
fn config(args: ConfigArgs) -> anyhow::Result<std::process::ExitCode> {
    match args.cmd {
        ConfigCmd::Example => print!("{}", artfs::config::EXAMPLE),
        ConfigCmd::Check { file } => {
            let cfg = Config::load(Some(&file))?;
            tracing_subscriber::EnvFilter::try_new(&cfg.log.filter)
                .with_context(|| format!("config file {}: [log] filter", file.display()))?;
            println!("{}: ok", file.display());
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("artfs-rt")
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn fsck(args: FsckArgs, mut cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    args.store.merge(&mut cfg);
    let mut sopts = store_options(&cfg, "fsck");
    let backing = sopts
        .backing
        .canonicalize()
        .with_context(|| format!("BACKING {} is not usable", sopts.backing.display()))?;
    if args.repair && StoreLock::is_held(&backing) {
        let pid = StoreLock::holder_pid(&backing)
            .map(|p| format!(" (pid {p})"))
            .unwrap_or_default();
        match artfs::core::serving_mount(&backing) {
            Some(mnt) => anyhow::bail!(
                "{} is mounted at {} (its daemon{pid} holds the store lock); unmount it before \
                 --repair",
                backing.display(),
                mnt.display()
            ),
            None => anyhow::bail!(
                "{} is in use by another artfs process{pid} (it holds the store lock); let it \
                 finish before --repair",
                backing.display()
            ),
        }
    }
    let rt = runtime()?;
    sopts.backing = backing.clone();
    let (meta, objects, _lock) = open_offline(&sopts, rt.handle().clone(), args.repair)?;
    let mounted = !args.repair && StoreLock::is_held(&backing);
    if mounted {
        println!("note: the store is mounted; this checks its last committed state");
    }
    let mut repairs = 0;
    if args.repair {
        for line in fsck::repair(meta.as_ref(), objects.as_ref())? {
            println!("repaired: {line}");
            repairs += 1;
        }
    }
    let bar = counted_progress("checking");
    let report = fsck::check(meta.as_ref(), objects.as_ref(), mounted, &bar)?;
    bar.finish_and_clear();
    // Recorded on a mounted store too: the check reads committed state,
    // and its own row is all it writes.
    artfs::cmd::status::record(
        meta.as_ref(),
        "fsck",
        report.findings.len(),
        repairs > 0,
        &fsck_summary(&report, repairs, mounted),
    );
    meta.close();
    println!(
        "checked {} inodes, {} entries, {} objects",
        report.inodes, report.entries, report.objects
    );
    if report.deferred > 0 {
        println!(
            "note: {} sidecar rewrites deferred (housekeeping, not an interrupted operation; \
             the next mount writes them)",
            report.deferred
        );
    }
    if report.is_clean() {
        println!("consistent");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for f in &report.findings {
        println!("problem: {f}");
    }
    println!("{} problems", report.findings.len());
    Ok(std::process::ExitCode::from(1))
}

/// One line for `artfs status`: what was checked, repaired and found.
fn fsck_summary(report: &fsck::Report, repairs: usize, mounted: bool) -> String {
    let mut s = format!(
        "checked {} inodes, {} entries, {} objects",
        report.inodes, report.entries, report.objects
    );
    if repairs > 0 {
        s.push_str(&format!(", {repairs} repaired"));
    }
    if let Some(first) = report.findings.first() {
        s.push_str(&format!(
            ", {} problems (first: {first})",
            report.findings.len()
        ));
    }
    if mounted {
        s.push_str(" (while mounted)");
    }
    s
}

fn db_copy(args: DbCopyArgs, mut cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    args.store.merge(&mut cfg);
    let mut sopts = store_options(&cfg, "db copy");
    sopts.backing = sopts
        .backing
        .canonicalize()
        .with_context(|| format!("BACKING {} is not usable", sopts.backing.display()))?;
    let prefix = args.to_prefix.unwrap_or_else(|| sopts.table_prefix.clone());
    if args.to == sopts.db_url() && prefix == sopts.table_prefix {
        anyhow::bail!("--to names the store's own tables; give another database or --to-prefix");
    }
    let rt = runtime()?;
    // The store lock and the source's lease: nothing changes it meanwhile.
    let (from, objects, _lock) = open_offline(&sopts, rt.handle().clone(), true)?;
    let to = artfs::meta::open(&args.to, &prefix, rt.handle().clone())?;
    to.claim_writer(&artfs::meta::lease::Holder::me())?;
    let copied = artfs::cmd::db_copy::copy(from.as_ref(), to.as_ref());
    from.close();
    let copied = copied.inspect_err(|_| to.close())?;
    println!(
        "copied {} inodes, {} entries, {} attributes, {} pending log rows to {} (prefix {prefix})",
        copied.inodes,
        copied.entries,
        copied.attributes,
        copied.pending,
        artfs::meta::redact(&args.to)
    );
    let report = fsck::check(
        to.as_ref(),
        objects.as_ref(),
        false,
        &indicatif::ProgressBar::hidden(),
    )?;
    to.close();
    if !report.is_clean() {
        for f in &report.findings {
            println!("problem: {f}");
        }
        println!(
            "{} problems in the copy (as in the source: run artfs fsck on it)",
            report.findings.len()
        );
        return Ok(std::process::ExitCode::from(1));
    }
    println!(
        "consistent; mount with --db {} --table-prefix {prefix}",
        artfs::meta::redact(&args.to)
    );
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Private key PEM: RSA (2048 bits or more), EC P-256 or Ed25519.
    #[arg(long)]
    key: PathBuf,
    /// Subject (`sub`): who the token is for.
    #[arg(long)]
    sub: String,
    /// Role: user (read, write), operator (also delete), admin (everything).
    #[arg(long)]
    role: artfs::auth::Role,
    /// Token type: service_account, admin_user or access.
    #[arg(long = "type", default_value = "service_account")]
    token_type: artfs::auth::TokenType,
    /// Lifetime, e.g. 30m, 12h, 7d.
    #[arg(long, default_value = "30m", value_parser = artfs::auth::parse_ttl)]
    ttl: Duration,
    /// Space-separated scopes narrowing the role: files:read files:write
    /// files:delete storage:admin.
    #[arg(long)]
    scope: Option<artfs::auth::ScopeList>,
    /// Issuer (`iss`).
    #[arg(long)]
    iss: Option<String>,
    /// Audience (`aud`).
    #[arg(long)]
    aud: Option<String>,
    /// Display name (`name`).
    #[arg(long)]
    name: Option<String>,
    /// Key id (`kid` header), to select the key in a JWKS.
    #[arg(long)]
    kid: Option<String>,
}

/// `artfs token`. Bad arguments exit 2 (clap); failures here exit 1.
fn token(args: TokenArgs) -> std::process::ExitCode {
    let minted = std::fs::read(&args.key)
        .with_context(|| format!("cannot read key file {}", args.key.display()))
        .and_then(|pem| {
            let mut req = artfs::auth::MintRequest::new(pem, args.sub, args.role);
            req.token_type = args.token_type;
            req.ttl = args.ttl;
            req.scope = args.scope.map(|s| s.0);
            req.issuer = args.iss;
            req.audience = args.aud;
            req.name = args.name;
            req.kid = args.kid;
            artfs::auth::mint(&req).with_context(|| format!("key file {}", args.key.display()))
        });
    match minted {
        Ok(token) => {
            println!("{token}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("artfs: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn progress(what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} ({per_sec})")
            .expect("valid template"),
    );
    bar.set_message(what);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A bar for work whose size is known (`set_length` once it is): done and
/// total, rate and time left. Drawn on stderr only when it is a terminal;
/// the caller prints a one-line summary either way.
fn counted_progress(what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} {msg}: {bar:30} {pos}/{len} ({per_sec}, {eta} left)",
        )
        .expect("valid template"),
    );
    bar.set_prefix(what);
    // Shown from the start, before the first item is done.
    bar.tick();
    bar
}

fn rebuild(args: RebuildArgs, mut cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    args.store.merge(&mut cfg);
    let sopts = store_options(&cfg, "rebuild");
    let rt = runtime()?;
    let (meta, objects, _lock) = open_for_rebuild(&sopts, rt.handle().clone())
        .with_context(|| format!("cannot rebuild {}", sopts.backing.display()))?;
    let bar = progress("reading sidecars");
    let code = if args.check {
        let o = artfs::cmd::rebuild::check(meta.as_ref(), objects.as_ref(), &bar)?;
        bar.finish_and_clear();
        for ino in &o.sidecars_without_rows {
            println!("sidecar without rows: inode {ino}");
        }
        for ino in &o.rows_without_sidecars {
            println!("rows without sidecar: inode {ino}");
        }
        for (p, why) in &o.skipped {
            println!("unusable sidecar {}: {why}", p.display());
        }
        let n = o.sidecars_without_rows.len() + o.rows_without_sidecars.len() + o.skipped.len();
        println!("{n} problems");
        if n == 0 {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::from(1)
        }
    } else {
        let backing = sopts.backing.canonicalize()?;
        let r = artfs::cmd::rebuild::rebuild(
            meta.as_ref(),
            objects.as_ref(),
            &backing,
            args.incremental,
            &bar,
        )?;
        bar.finish_and_clear();
        for (p, why) in &r.skipped {
            println!("skipped {}: {why}", p.display());
        }
        println!(
            "rebuilt {} inodes, {} entries, {} attributes{}",
            r.inodes,
            r.entries,
            r.attributes,
            if r.lost_links > 0 {
                format!(" ({} names dropped: parent unknown)", r.lost_links)
            } else {
                String::new()
            }
        );
        if r.skipped.is_empty() && r.lost_links == 0 {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::from(1)
        }
    };
    meta.close();
    Ok(code)
}

fn scrub(args: ScrubArgs, mut cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    args.store.merge(&mut cfg);
    let mut sopts = store_options(&cfg, "scrub");
    let backing = sopts
        .backing
        .canonicalize()
        .with_context(|| format!("BACKING {} is not usable", sopts.backing.display()))?;
    sopts.backing = backing.clone();
    // Hashes are recorded only with the store lock held: a daemon serving
    // the store records them itself (its hasher works through them).
    let mounted = StoreLock::is_held(&backing);
    let rt = runtime()?;
    let (meta, objects, _lock) =
        open_offline(&sopts, rt.handle().clone(), !args.dry_run && !mounted)
            .with_context(|| format!("cannot scrub {}", sopts.backing.display()))?;
    let pending = meta.pending_journal()?.len();
    let record = !args.dry_run && !mounted && pending == 0;
    if mounted {
        println!("note: the store is mounted; its daemon records missing hashes itself");
    } else if pending > 0 && !args.dry_run {
        println!(
            "note: {pending} log rows pending (a crash); mount the store or run \
             `artfs fsck --repair` first; recording no hashes"
        );
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "scrubbing: {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        )
        .expect("valid template"),
    );
    bar.tick();
    let r = artfs::cmd::scrub::scrub(
        meta.as_ref(),
        objects.as_ref(),
        args.rate_limit.map(|m| m << 20),
        &bar,
        record,
    )?;
    bar.finish_and_clear();
    // --dry-run changes nothing, this row included.
    if !args.dry_run {
        let first = r
            .damaged
            .first()
            .map(|(p, w)| format!(" (first: {p}: {w})"));
        artfs::cmd::status::record(
            meta.as_ref(),
            "scrub",
            r.damaged.len(),
            false,
            &format!(
                "verified {} files ({} bytes), {} without a recorded hash, {} damaged{}",
                r.verified,
                r.bytes,
                r.unhashed.len(),
                r.damaged.len(),
                first.unwrap_or_default()
            ),
        );
    }
    meta.close();
    for path in &r.unhashed {
        println!("no recorded hash: {path}");
    }
    for (path, what) in &r.damaged {
        println!("damaged: {path}: {what}");
    }
    println!(
        "verified {} files ({} bytes), {} without a recorded hash ({} recorded now), {} damaged",
        r.verified,
        r.bytes,
        r.unhashed.len(),
        r.recorded,
        r.damaged.len()
    );
    Ok(if r.damaged.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// `artfs status`: read-only, lock-free (see artfs::cmd::status).
fn status(args: StatusArgs, mut cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    args.store.merge(&mut cfg);
    let mut sopts = store_options(&cfg, "status");
    sopts.backing = sopts
        .backing
        .canonicalize()
        .with_context(|| format!("BACKING {} is not usable", sopts.backing.display()))?;
    if !sopts.backing.join(".artfs").is_dir() {
        anyhow::bail!(
            "{} holds no artfs store (no .artfs directory)",
            sopts.backing.display()
        );
    }
    let rt = runtime()?;
    // Opening creates missing tables: a wrong --db or --table-prefix must
    // not leave empty ones behind.
    let url = sopts.db_url();
    if !artfs::meta::prefix_exists(&url, &sopts.table_prefix, rt.handle())? {
        anyhow::bail!(
            "database {} has no tables with prefix {:?}: not the database of the store in {} \
             (check --db and --table-prefix), or it was never mounted",
            artfs::meta::redact(&url),
            sopts.table_prefix,
            sopts.backing.display()
        );
    }
    let (meta, _, _) = open_offline(&sopts, rt.handle().clone(), false)
        .with_context(|| format!("cannot read the status of {}", sopts.backing.display()))?;
    let status = artfs::cmd::status::gather(
        meta.as_ref(),
        &sopts.backing,
        &sopts.db_url(),
        &sopts.table_prefix,
    );
    meta.close();
    let mut status = status?;
    artfs::config::over(&mut cfg.cluster.redis, args.redis.map(Some));
    if let Some(url) = &cfg.cluster.redis {
        let pw = cfg.cluster.redis_password()?;
        let client = artfs::cluster::client(url, pw.as_deref()).map_err(anyhow::Error::msg)?;
        match rt.block_on(artfs::cluster::nodes(&client, status.store_id.as_deref())) {
            Ok(n) => status.nodes = Some(n),
            Err(e) => status.nodes_error = Some(e),
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.render());
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn search(mut args: SearchArgs, mut cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    if args.query.is_none() {
        // `artfs search QUERY` with the store from ARTFS_BACKING or the file.
        args.query = artfs::config::shift_positional(&mut args.store.backing, &cfg)
            .map(|p| p.to_string_lossy().into_owned());
    }
    let Some(query) = args.query else {
        missing("search", "<QUERY>");
    };
    args.store.merge(&mut cfg);
    let sopts = store_options(&cfg, "search");
    let rt = runtime()?;
    let (meta, _, _) = open_offline(&sopts, rt.handle().clone(), false)
        .with_context(|| format!("cannot search {}", sopts.backing.display()))?;
    let hits = artfs::core::search::search_in(meta.as_ref(), &query, args.limit, 0);
    meta.close();
    let hits = hits.map_err(|e| anyhow::anyhow!("{e}: {query:?}"))?;
    for h in &hits {
        println!("{}", String::from_utf8_lossy(&h.path));
    }
    if hits.is_empty() {
        eprintln!("no matches");
        return Ok(std::process::ExitCode::from(1));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn mode(mut args: ModeArgs, mut cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    // `artfs mode MODE` with the store from ARTFS_BACKING or the file.
    let lone_mode = (args.store.backing.as_ref())
        .and_then(|p| p.to_str())
        .and_then(|s| s.parse::<artfs::core::policy::Mode>().ok());
    if args.mode.is_none()
        && lone_mode.is_some()
        && artfs::config::shift_positional(&mut args.store.backing, &cfg).is_some()
    {
        args.mode = lone_mode;
    }
    let ask = ModeAsk {
        confirm: args.confirm,
        force: args.force,
        wait: args.wait,
    };
    args.store.merge(&mut cfg);
    let sopts = store_options(&cfg, "mode");
    let rt = runtime()?;
    let (meta, _, _) = open_offline(&sopts, rt.handle().clone(), false)
        .with_context(|| format!("cannot open {}", sopts.backing.display()))?;
    let result = match args.mode {
        None => meta
            .config()
            .map_err(anyhow::Error::from)
            .and_then(|c| c.context("the store has no mode yet (never mounted)"))
            .map(|c| {
                println!(
                    "{} (since {}, by {})",
                    c.mode, c.mode_changed_at, c.mode_changed_by
                );
                if c.mode == "edit" {
                    println!(
                        "edit is fixed for the store's life; a store meant to be frozen \
                         later is created with --mode rw"
                    );
                }
            }),
        Some(to) => {
            let by = artfs::core::namespace::user_name(nix::unistd::getuid().as_raw());
            let backing = sopts.backing.canonicalize()?;
            match serving_daemon(meta.as_ref(), &backing) {
                // The daemon knows its writers: it makes the change.
                Some(daemon) => ask_daemon_for_mode(meta.as_ref(), &ask, to, &by, &daemon),
                None => {
                    artfs::core::policy::change_mode(meta.as_ref(), &backing, to, args.confirm, &by)
                        .map(|from| {
                            if from == to {
                                println!("mode is already {to}");
                            } else {
                                println!("mode: {from} -> {to}");
                            }
                        })
                        .map_err(anyhow::Error::from)
                }
            }
        }
    };
    meta.close();
    result.map(|()| std::process::ExitCode::SUCCESS)
}

/// The process serving the store, if one does: the holder of BACKING's
/// lock, or of a PostgreSQL store's lease while its heartbeat is fresh.
fn serving_daemon(meta: &dyn artfs::meta::MetaStore, backing: &std::path::Path) -> Option<String> {
    if let Some(pid) = artfs::cmd::status::lock_holder(backing) {
        return Some(format!("pid {pid}"));
    }
    let lease = meta.lease_state().ok().flatten()?;
    (!lease.holder.is_empty() && lease.beat_age_secs < artfs::meta::lease::LAPSE.as_secs_f64())
        .then(|| format!("pid {} on {}", lease.pid, lease.host))
}

/// `artfs mode` while a daemon serves the store: leave it the request (a
/// pending `mode_change` row it serves within a second) and wait for its
/// answer.
/// What `artfs mode` asks a serving daemon for, beyond the mode.
struct ModeAsk {
    confirm: bool,
    force: bool,
    wait: f64,
}

fn ask_daemon_for_mode(
    meta: &dyn artfs::meta::MetaStore,
    args: &ModeAsk,
    to: artfs::core::policy::Mode,
    by: &str,
    daemon: &str,
) -> anyhow::Result<()> {
    use artfs::types::journal::{Op, Record, Status};
    if !(args.wait.is_finite() && args.wait > 0.0) {
        anyhow::bail!("--wait must be a positive number of seconds");
    }
    let mut rec = Record::new(
        Op::ModeChange,
        Status::Pending,
        None,
        serde_json::json!({ "request": true, "to": to.as_str(), "confirm": args.confirm,
                            "force": args.force, "wait_secs": args.wait }),
    );
    rec.user_id = Some(by.to_string());
    let id = rec.id;
    meta.apply(&artfs::meta::Batch {
        journal: vec![rec],
        ..Default::default()
    })?;
    meta.sync()?;
    // The daemon looks every 500 ms; with --force it may wait `--wait`.
    let limit = std::time::Duration::from_secs(15)
        + if args.force {
            std::time::Duration::from_secs_f64(args.wait)
        } else {
            std::time::Duration::ZERO
        };
    let start = std::time::Instant::now();
    let mut told = false;
    loop {
        match meta.journal_row(id)? {
            Some(r) if r.status == Status::Committed => {
                println!("mode: {}", r.outcome.unwrap_or_default());
                return Ok(());
            }
            Some(r) if r.status != Status::Pending => {
                return Err(artfs::types::error::Error::Policy(
                    r.error
                        .or(r.outcome)
                        .unwrap_or_else(|| "mode change refused".into()),
                )
                .into());
            }
            _ => {}
        }
        if start.elapsed() > limit {
            anyhow::bail!(
                "the daemon serving the store ({daemon}) did not answer within {} s; \
                 the request stays and is served when a daemon next serves the store",
                limit.as_secs()
            );
        }
        if args.force && !told && start.elapsed() > std::time::Duration::from_secs(2) {
            eprintln!(
                "artfs: waiting for the files open for writing to be closed \
                 (up to {} s; the daemon's log names them)",
                args.wait
            );
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `artfs trash list|empty`: opens the store as a mount would (its lock
/// taken), without serving it.
fn trash(args: TrashArgs, mut cfg: Config) -> anyhow::Result<std::process::ExitCode> {
    let (store, older_than) = match args.cmd {
        TrashCmd::List { store } => (store, None),
        TrashCmd::Empty { store, older_than } => (store, Some(older_than)),
    };
    store.merge(&mut cfg);
    let sopts = store_options(&cfg, "trash");
    if !sopts.backing.join(".artfs").is_dir() {
        anyhow::bail!("{} holds no artfs store", sopts.backing.display());
    }
    if let Some(Some(d)) = older_than {
        if !(d >= 0.0 && d.is_finite()) {
            anyhow::bail!("--older-than must be 0 or more days");
        }
    }
    let rt = runtime()?;
    let (fs, _lock) = open_store(&sopts, rt.handle().clone())
        .with_context(|| format!("cannot open store {}", sopts.backing.display()))?;
    let result = match older_than {
        None => fs.trash_units().map(|units| {
            let (mut files, mut bytes) = (0, 0);
            for u in &units {
                println!(
                    "{}\tuid {}\t{}\t{} files\t{} bytes",
                    String::from_utf8_lossy(&u.path),
                    u.uid.map_or("?".to_string(), |u| u.to_string()),
                    u.when.to_rfc3339(),
                    u.files,
                    u.bytes
                );
                files += u.files;
                bytes += u.bytes;
            }
            println!("{} units, {files} files, {bytes} bytes", units.len());
        }),
        Some(days) => {
            let before = days.map(|d| {
                let now = artfs::types::Timestamp::now();
                artfs::types::Timestamp(now.0 - (d * 86_400e9) as i64)
            });
            fs.trash_empty(before, usize::MAX).map(|p| {
                println!(
                    "purged {} files and {} directories ({} bytes)",
                    p.files, p.dirs, p.bytes
                )
            })
        }
    };
    fs.close();
    result.map_err(anyhow::Error::from)?;
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The original's tree (holding YYYY/MM/DD/HH/ directories): a
    /// directory, or s3://BUCKET/FOLDER for an element that kept its
    /// files in a bucket (credentials: AWS_* variables or the profile).
    src: PathBuf,
    /// With SRC s3://...: endpoint URL of its S3-compatible service
    /// [default: AWS, or AWS_ENDPOINT_URL].
    #[arg(long, value_name = "URL")]
    src_s3_endpoint: Option<String>,
    /// With SRC s3://...: its bucket's region [default: AWS_REGION, else us-east-1].
    #[arg(long, value_name = "REGION")]
    src_s3_region: Option<String>,
    /// Directory holding the objects, or s3://BUCKET[/PREFIX] with
    /// --cache-dir; a new store is initialised if it holds none. Refused
    /// while mounted.
    #[arg(env = "ARTFS_BACKING")]
    backing: PathBuf,
    /// Directory of the store (from its root) under which YYYY/MM/DD/ go.
    #[arg(long, default_value = "/")]
    dest: String,
    /// Hard-link content into BACKING instead of copying (same
    /// filesystem only; falls back to copying). The source and the store
    /// then share the data: a change through the mount changes the source.
    #[arg(long)]
    link: bool,
    /// Metadata database URL [default: sqlite://BACKING/.artfs/meta.db].
    #[arg(long, env = "ARTFS_DB")]
    db: Option<String>,
    /// Prefix of the metadata tables.
    #[arg(long, env = "ARTFS_TABLE_PREFIX", default_value = artfs::core::options::DEFAULT_TABLE_PREFIX)]
    table_prefix: String,
    #[command(flatten)]
    s3: S3Flags,
}

/// `artfs import`: the report on stdout, exit 1 if anything was skipped.
fn import(args: ImportArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = runtime()?;
    // BACKING may be a bucket: the store's options as every command
    // builds them.
    let mut cfg = Config::default();
    cfg.store.backing = Some(args.backing);
    cfg.store.db = args.db;
    cfg.store.table_prefix = args.table_prefix;
    args.s3.merge(&mut cfg);
    let store = cfg.store_options()?.expect("BACKING is given");
    let src = match args.src.to_str().filter(|s| s.starts_with("s3://")) {
        Some(url) => {
            let (bucket, prefix) = artfs::blob::S3Config::parse_url(url)
                .map_err(|e| anyhow::anyhow!("SRC {url}: {e}"))?;
            if args.link {
                anyhow::bail!("--link shares a file of a directory SRC; SRC {url} is a bucket");
            }
            artfs::cmd::import::Source::Bucket(Box::new(artfs::blob::S3Config {
                bucket,
                prefix,
                endpoint: args.src_s3_endpoint,
                region: args.src_s3_region,
                retry_for: artfs::blob::DEFAULT_RETRY_FOR,
                read_only: true,
                ..Default::default()
            }))
        }
        None if args.src_s3_endpoint.is_some() || args.src_s3_region.is_some() => {
            anyhow::bail!("--src-s3-endpoint and --src-s3-region go with SRC s3://BUCKET/FOLDER")
        }
        None => artfs::cmd::import::Source::Dir(args.src),
    };
    let opts = artfs::cmd::import::ImportOptions {
        src,
        store,
        dest: args.dest,
        link: args.link,
        progress: true,
    };
    let report = artfs::cmd::import::run(&opts, rt.handle().clone())?;
    for line in report.lines() {
        println!("{line}");
    }
    Ok(std::process::ExitCode::from(report.exit_code()))
}

/// Every file open through the mount holds a descriptor of its object in
/// the daemon: allow as many as the hard limit does, not the usual 1024.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(from = old, to = lim.rlim_max, "raised the open file limit");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount_args(argv: &[&str]) -> MountArgs {
        let argv = [&["artfs", "mount"][..], argv].concat();
        match Cli::try_parse_from(argv).unwrap().cmd {
            Cmd::Mount(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_left_out_are_the_defaults() {
        // No flag and no file: the store's, the mount's and the HTTP
        // door's own defaults (a clap default that drifts fails here).
        let plan = mount_args(&["/b", "/m"]).plan(Config::default()).unwrap();
        assert_eq!(
            format!("{:?}", plan.store),
            format!("{:?}", StoreOptions::new("/b"))
        );
        assert_eq!(
            format!("{:?}", plan.mount),
            format!("{:?}", MountOptions::default())
        );
        assert!(plan.api.is_none());
        let api = ["--api", "127.0.0.1:0", "--jwt-key", "/k.pem"];
        let plan = mount_args(&[&["/b", "/m"][..], &api[..]].concat())
            .plan(Config::default())
            .unwrap();
        let api = plan.api.unwrap();
        let key = artfs::auth::KeySource::Pem("/k.pem".into());
        // The element's knobs default to the API's name.
        let mut want = artfs::api::ApiConfig::new(api.addr, key);
        want.element = Some(artfs::api::element::Element::named(&want.name));
        assert_eq!(format!("{api:?}"), format!("{want:?}"));
    }

    #[test]
    fn help_states_the_defaults() {
        // The `[default: ...]` a flag's help names is the default it has.
        let (d, m) = (Config::default(), MountOptions::default());
        let cli = Cli::command();
        let mount = cli.find_subcommand("mount").unwrap();
        let stated = |id: &str| {
            let arg = mount.get_arguments().find(|a| a.get_id() == id);
            let help = arg.and_then(|a| a.get_help()).map(|h| h.to_string());
            let help = help.unwrap_or_else(|| panic!("--{id}: no help"));
            let rest = help.split("[default: ").nth(1);
            let rest = rest.unwrap_or_else(|| panic!("--{id}: no [default: ] in {help:?}"));
            rest[..rest.find([']', ';']).unwrap()].to_string()
        };
        let cases = [
            ("table_prefix", d.store.table_prefix.clone()),
            ("allow_other", d.mount.allow_other.to_string()),
            ("threads", m.threads.to_string()),
            ("force", d.mount.force.to_string()),
            ("io_uring", d.mount.io_uring.to_string()),
            (
                "list_computed_xattrs",
                d.mount.list_computed_xattrs.to_string(),
            ),
            (
                "capacity_passthrough",
                d.mount.capacity_passthrough.to_string(),
            ),
            ("nodev", d.mount.nodev.to_string()),
            ("nosuid", d.mount.nosuid.to_string()),
            ("noexec", d.mount.noexec.to_string()),
            ("read_only", d.mount.read_only.to_string()),
            ("noatime", d.mount.noatime.to_string()),
            ("strictatime", d.mount.strictatime.to_string()),
            ("attr_ttl", d.mount.attr_ttl.to_string()),
            ("keep_awake_us", d.mount.keep_awake_us.to_string()),
            ("cache_entries", d.mount.cache_entries.to_string()),
            ("trash_days", d.policy.trash_days.to_string()),
            (
                "max_retention",
                humantime::format_duration(d.policy.max_retention).to_string(),
            ),
            ("wal_keep_rows", d.policy.wal_keep_rows.to_string()),
            ("wal_keep_days", d.policy.wal_keep_days.to_string()),
            (
                "wal_keep_failed_days",
                d.policy.wal_keep_failed_days.to_string(),
            ),
            ("mode", d.policy.mode.to_string()),
        ];
        for (id, want) in cases {
            assert_eq!(stated(id), want, "--{id}'s help");
        }
    }
}
