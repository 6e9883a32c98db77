//! The `artfs` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use artfs::core::{open_for_rebuild, open_offline, open_store, StoreLock, StoreOptions};
use artfs::fsck;
use artfs::fuse::{serve, MountOptions};

#[derive(Parser)]
#[command(
    name = "artfs",
    version,
    about = "A crash-safe POSIX filesystem with SQL metadata"
)]
struct Cli {
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
    /// Full-text search over names, descriptions, versions and custom
    /// attributes; prints matching paths, best first.
    Search(SearchArgs),
    /// Show the store's mode, or change it (edit | rw -> ro -> ar; ro -> rw
    /// with --confirm). A running mount follows within a second.
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
}

#[derive(clap::Args)]
struct FsckArgs {
    /// Directory holding the objects.
    #[arg(env = "ARTFS_BACKING")]
    backing: PathBuf,
    /// Metadata database URL [default: sqlite://BACKING/.artfs/meta.db].
    #[arg(long, env = "ARTFS_DB")]
    db: Option<String>,
    /// Prefix of the metadata tables.
    #[arg(long, env = "ARTFS_TABLE_PREFIX", default_value = "artfs")]
    table_prefix: String,
    /// Fix what can be fixed without guessing, and say what was done.
    /// Refused while the store is mounted.
    #[arg(long)]
    repair: bool,
}

/// Where a store is: BACKING, and its database when not the default.
#[derive(clap::Args)]
struct StoreArgs {
    /// Directory holding the objects.
    #[arg(env = "ARTFS_BACKING")]
    backing: PathBuf,
    /// Metadata database URL [default: sqlite://BACKING/.artfs/meta.db].
    #[arg(long, env = "ARTFS_DB")]
    db: Option<String>,
    /// Prefix of the metadata tables.
    #[arg(long, env = "ARTFS_TABLE_PREFIX", default_value = "artfs")]
    table_prefix: String,
}

impl StoreArgs {
    fn options(&self) -> StoreOptions {
        let mut o = StoreOptions::new(&self.backing);
        o.db_url = self.db.clone();
        o.table_prefix = self.table_prefix.clone();
        o
    }
}

#[derive(clap::Args)]
struct ModeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The new mode: edit, rw, ro or ar. Without it, print the mode.
    mode: Option<artfs::core::policy::Mode>,
    /// Confirm going back from ro to rw.
    #[arg(long)]
    confirm: bool,
}

#[derive(clap::Args)]
struct ScrubArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Read at most this many MiB per second.
    #[arg(long, value_name = "MIB_PER_S")]
    rate_limit: Option<u64>,
}

#[derive(clap::Args)]
struct SearchArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// FTS5 query: words, "phrases", prefix*, AND/OR/NOT, column:word
    /// (columns: names, description, version, custom).
    query: String,
    /// Most results to print.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(clap::Args)]
struct RebuildArgs {
    /// Directory holding the objects and their sidecars.
    #[arg(env = "ARTFS_BACKING")]
    backing: PathBuf,
    /// Metadata database URL [default: sqlite://BACKING/.artfs/meta.db].
    #[arg(long, env = "ARTFS_DB")]
    db: Option<String>,
    /// Prefix of the metadata tables.
    #[arg(long, env = "ARTFS_TABLE_PREFIX", default_value = "artfs")]
    table_prefix: String,
    /// Only add inodes missing from the tables; keep the rest.
    #[arg(long, conflicts_with = "check")]
    incremental: bool,
    /// Change nothing: report sidecars without rows and rows without
    /// sidecars (exit 1 if any).
    #[arg(long)]
    check: bool,
}

#[derive(clap::Args)]
struct MountArgs {
    /// Directory holding the objects (and, by default, the metadata database).
    #[arg(env = "ARTFS_BACKING")]
    backing: PathBuf,
    /// Empty directory to mount on.
    #[arg(env = "ARTFS_MOUNTPOINT")]
    mountpoint: PathBuf,
    /// Metadata database URL [default: sqlite://BACKING/.artfs/meta.db].
    #[arg(long, env = "ARTFS_DB")]
    db: Option<String>,
    /// Prefix of the metadata tables (several stores may share one database).
    #[arg(long, env = "ARTFS_TABLE_PREFIX", default_value = "artfs")]
    table_prefix: String,
    /// Let other users access the mount (needed for multi-user use as root).
    #[arg(long, env = "ARTFS_ALLOW_OTHER")]
    allow_other: bool,
    /// FUSE worker threads [default: number of CPUs, at least 2].
    #[arg(long, env = "ARTFS_THREADS")]
    threads: Option<usize>,
    /// Detach a stale mount left at MOUNTPOINT by a killed daemon.
    #[arg(long)]
    force: bool,
    /// Seconds the kernel may cache entries and attributes.
    #[arg(long, env = "ARTFS_ATTR_TTL", default_value_t = 3600)]
    attr_ttl: u64,
    /// Entries per in-memory metadata cache.
    #[arg(long, env = "ARTFS_CACHE_ENTRIES", default_value_t = 100_000)]
    cache_entries: usize,
    /// Capacity: the most bytes regular files may hold (e.g. 500G, 10M;
    /// 0 removes the limit). Kept by the store; writes past it fail with
    /// ENOSPC. Writes then go through the daemon (no passthrough).
    #[arg(long, env = "ARTFS_CAPACITY", value_parser = parse_bytes)]
    capacity: Option<u64>,
    /// Days an unlinked file stays in /.trash before it is purged (edit
    /// mode; 0 turns the trash off).
    #[arg(long, env = "ARTFS_TRASH_DAYS", default_value_t = 1.0)]
    trash_days: f64,
    /// Seconds between collector sweeps (trash purge, expiry).
    #[arg(
        long,
        env = "ARTFS_COLLECT_INTERVAL",
        default_value_t = 60.0,
        hide = true
    )]
    collect_interval: f64,
    /// Seconds added to the collector's clock (tests of expiry and trash).
    #[arg(long, env = "ARTFS_CLOCK_SKEW", default_value_t = 0, hide = true)]
    clock_skew: u64,
    /// Mode of a new store: edit (default), rw, ro or ar. An existing
    /// store keeps its mode (change it with `artfs mode`).
    #[arg(long, env = "ARTFS_MODE", default_value = "edit")]
    mode: artfs::core::policy::Mode,
    /// Run in the foreground (the default; accepted for compatibility).
    #[arg(long, short = 'f')]
    foreground: bool,
    #[command(flatten)]
    api: artfs::api::ApiArgs,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARTFS_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,fuser::session=error")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    // Crash points from FAILPOINTS (test builds only; inert otherwise).
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Mount(args) => mount(*args).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Fsck(args) => fsck(args),
        Cmd::Rebuild(args) => rebuild(args),
        Cmd::Scrub(args) => scrub(args),
        Cmd::Search(args) => search(args),
        Cmd::Mode(args) => mode(args),
        Cmd::Token(args) => return token(args),
        Cmd::Import(args) => import(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("artfs: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn mount(args: MountArgs) -> anyhow::Result<()> {
    let mut mopts = MountOptions {
        allow_other: args.allow_other,
        force: args.force,
        ttl: Duration::from_secs(args.attr_ttl),
        ..MountOptions::default()
    };
    if let Some(t) = args.threads {
        mopts.threads = t;
    }
    // Check the mount point and the API settings before touching BACKING,
    // so bad ones change nothing.
    artfs::fuse::check_mountpoint(&args.mountpoint, args.force)?;
    let api = args.api.config()?;
    let rt = runtime()?;
    let mut sopts = StoreOptions::new(&args.backing);
    sopts.db_url = args.db;
    sopts.table_prefix = args.table_prefix;
    sopts.cache_entries = args.cache_entries;
    sopts.initial_mode = args.mode;
    sopts.capacity = args.capacity;
    if !(args.trash_days >= 0.0 && args.trash_days.is_finite()) {
        anyhow::bail!("--trash-days must be 0 or more");
    }
    sopts.collector.trash_days = args.trash_days;
    sopts.collector.interval = Duration::from_secs_f64(args.collect_interval.max(0.05));
    sopts.collector.clock_skew = Duration::from_secs(args.clock_skew);
    let (fs, _lock) = open_store(&sopts, rt.handle().clone())
        .with_context(|| format!("cannot open store {}", args.backing.display()))?;
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
    let served = serve(fs.clone(), &args.mountpoint, &mopts);
    if let Some(s) = server {
        s.shutdown();
    }
    fs.close();
    served
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("artfs-rt")
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn fsck(args: FsckArgs) -> anyhow::Result<std::process::ExitCode> {
    let backing = args
        .backing
        .canonicalize()
        .with_context(|| format!("BACKING {} is not usable", args.backing.display()))?;
    if args.repair && StoreLock::is_held(&backing) {
        anyhow::bail!(
            "{} is mounted (its daemon holds the store lock); unmount it before --repair",
            backing.display()
        );
    }
    let rt = runtime()?;
    let mut sopts = StoreOptions::new(&backing);
    sopts.db_url = args.db;
    sopts.table_prefix = args.table_prefix;
    let (meta, objects, _lock) = open_offline(&sopts, rt.handle().clone(), args.repair)?;
    let mounted = !args.repair && StoreLock::is_held(&backing);
    if mounted {
        println!("note: the store is mounted; this checks its last committed state");
    }
    if args.repair {
        for line in fsck::repair(meta.as_ref(), &objects)? {
            println!("repaired: {line}");
        }
    }
    let report = fsck::check(meta.as_ref(), &objects, mounted)?;
    meta.close();
    println!(
        "checked {} inodes, {} entries, {} objects",
        report.inodes, report.entries, report.objects
    );
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

fn rebuild(args: RebuildArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = runtime()?;
    let mut sopts = StoreOptions::new(&args.backing);
    sopts.db_url = args.db;
    sopts.table_prefix = args.table_prefix;
    let (meta, objects, _lock) = open_for_rebuild(&sopts, rt.handle().clone())
        .with_context(|| format!("cannot rebuild {}", args.backing.display()))?;
    let bar = progress("reading sidecars");
    let code = if args.check {
        let o = artfs::rebuild::check(meta.as_ref(), &objects, &bar)?;
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
        let backing = args.backing.canonicalize()?;
        let r = artfs::rebuild::rebuild(meta.as_ref(), &objects, &backing, args.incremental, &bar)?;
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

fn scrub(args: ScrubArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = runtime()?;
    let (meta, objects, _) = open_offline(&args.store.options(), rt.handle().clone(), false)
        .with_context(|| format!("cannot scrub {}", args.store.backing.display()))?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .expect("valid template"),
    );
    let r = artfs::scrub::scrub(
        meta.as_ref(),
        &objects,
        args.rate_limit.map(|m| m << 20),
        &bar,
    )?;
    bar.finish_and_clear();
    meta.close();
    for (path, what) in &r.damaged {
        println!("damaged: {path}: {what}");
    }
    println!(
        "verified {} files ({} bytes), {} without a recorded hash, {} damaged",
        r.verified,
        r.bytes,
        r.unverified,
        r.damaged.len()
    );
    Ok(if r.damaged.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

fn search(args: SearchArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = runtime()?;
    let (meta, _, _) = open_offline(&args.store.options(), rt.handle().clone(), false)
        .with_context(|| format!("cannot search {}", args.store.backing.display()))?;
    let hits = artfs::core::search::search_in(meta.as_ref(), &args.query, args.limit, 0);
    meta.close();
    let hits = hits.map_err(|e| anyhow::anyhow!("{e}: {:?}", args.query))?;
    for h in &hits {
        println!("{}", String::from_utf8_lossy(&h.path));
    }
    if hits.is_empty() {
        eprintln!("no matches");
        return Ok(std::process::ExitCode::from(1));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn mode(args: ModeArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = runtime()?;
    let (meta, _, _) = open_offline(&args.store.options(), rt.handle().clone(), false)
        .with_context(|| format!("cannot open {}", args.store.backing.display()))?;
    let result = match args.mode {
        None => meta
            .config()
            .map_err(anyhow::Error::from)
            .and_then(|c| c.context("the store has no mode yet (never mounted)"))
            .map(|c| {
                println!(
                    "{} (since {}, by {})",
                    c.mode, c.mode_changed_at, c.mode_changed_by
                )
            }),
        Some(to) => {
            let by = artfs::core::namespace::user_name(nix::unistd::getuid().as_raw());
            let backing = args.store.backing.canonicalize()?;
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
    };
    meta.close();
    result.map(|()| std::process::ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The original's tree (holding YYYY/MM/DD/HH/ directories).
    src: PathBuf,
    /// Directory holding the objects; a new store is initialised if it
    /// holds none. Refused while mounted.
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
    #[arg(long, env = "ARTFS_TABLE_PREFIX", default_value = "artfs")]
    table_prefix: String,
}

/// `artfs import`: the report on stdout, exit 1 if anything was skipped.
fn import(args: ImportArgs) -> anyhow::Result<std::process::ExitCode> {
    let rt = runtime()?;
    let mut store = StoreOptions::new(&args.backing);
    store.db_url = args.db;
    store.table_prefix = args.table_prefix;
    let opts = artfs::import::ImportOptions {
        src: args.src,
        store,
        dest: args.dest,
        link: args.link,
        progress: true,
    };
    let report = artfs::import::run(&opts, rt.handle().clone())?;
    for line in report.lines() {
        println!("{line}");
    }
    Ok(std::process::ExitCode::from(report.exit_code()))
}

/// Bytes with an optional binary suffix: 1048576, 512K, 10M, 2G, 1T.
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?}: use K, M, G or T")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("not a size: {s:?}"))
}
