//! The `artfs` command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use artfs::core::{open_offline, open_store, StoreLock, StoreOptions};
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
    Mount(MountArgs),
    /// Check that the metadata tables and the objects in BACKING agree.
    /// Exit 0 when consistent, 1 with a report otherwise.
    Fsck(FsckArgs),
    /// Mint a signed access token for tests and administration; prints it
    /// on stdout. The algorithm follows the key (RS256, ES256, EdDSA).
    Token(TokenArgs),
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
        Cmd::Mount(args) => mount(args).map(|()| std::process::ExitCode::SUCCESS),
        Cmd::Fsck(args) => fsck(args),
        Cmd::Token(args) => return token(args),
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
