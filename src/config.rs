//! The configuration file (`--config FILE`, or `ARTFS_CONFIG`): plain
//! structs with defaults, read from TOML, and the rules that combine it
//! with the command line and the `ARTFS_*` environment.
//!
//! Precedence, highest first: command-line flag > `ARTFS_*` environment
//! variable > config file > built-in default. The command line and the
//! environment are clap's job: every clap field that a file may also set is
//! an `Option` without a clap default, so clap hands back `Some` exactly
//! when the value came from a flag or from the environment (flag first).
//! [`over`] then lays that value over the file's, and the file's over the
//! defaults here ([`Default`] impls). Each default has one home: the
//! store's is [`StoreOptions::default`] (and the option structs it holds),
//! which `[store]` and `[policy]` read; the mount's and the log's are here,
//! and the FUSE door (above this layer) takes its defaults from
//! [`MountConfig`]. A test checks that the file's defaults, converted, are
//! `StoreOptions::default()`; one in `main.rs` that the flags' are too.
//!
//! The file is strict: an unknown key is an error naming the key, the line
//! and the file (`deny_unknown_fields`), so a typo never passes silently.
//! Relative paths in the file are resolved against the file's directory.
//! `docs/artfs.example.toml` (also `artfs config example`) lists every key
//! with its default; a test checks that it parses to [`Config::default`].

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::core::collector::CollectorConfig;
use crate::core::options::{Role, StoreOptions, DEFAULT_CACHE_ENTRIES, DEFAULT_TABLE_PREFIX};
use crate::core::policy::Mode;
use crate::types::journal::Retention;

/// The example file: every key, with its default.
pub const EXAMPLE: &str = include_str!("../docs/artfs.example.toml");

/// The default log filter (`[log] filter`, `ARTFS_LOG`).
pub const DEFAULT_LOG: &str = "info,fuser::session=error";

/// Everything a configuration file may say.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub store: StoreConfig,
    pub s3: S3Section,
    pub mount: MountConfig,
    pub policy: PolicyConfig,
    pub cluster: ClusterConfig,
    pub api: ApiConfig,
    pub log: LogConfig,
}

/// `[cluster]`: what this daemon is to a store several machines serve
/// (docs/CLUSTER.md).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// writer (the default), replica or standby.
    pub role: Role,
    /// Milliseconds between a follower's reads of the change feed.
    pub poll_ms: u64,
    /// Seconds of silence from the writer before a standby takes over.
    pub takeover_secs: f64,
    /// Redis URL for commit hints and the node registry; `None`: none
    /// (followers poll).
    pub redis: Option<String>,
    /// A file whose first line is Redis's password, for a URL without one
    /// when `ARTFS_REDIS_PASSWORD` is not set.
    pub redis_password_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// Redis's password: `ARTFS_REDIS_PASSWORD`, else the first line of
    /// `redis_password_file` (an unreadable or empty file is an error).
    pub fn redis_password(&self) -> anyhow::Result<Option<String>> {
        if let Ok(pw) = std::env::var(REDIS_PASSWORD_ENV) {
            return Ok(Some(pw));
        }
        let Some(path) = &self.redis_password_file else {
            return Ok(None);
        };
        first_line(path, "redis_password_file").map(Some)
    }
}

/// `[s3]`: how to reach the bucket of a store whose BACKING is
/// `s3://BUCKET[/PREFIX]` (docs/S3.md). Credentials not given here come
/// from the standard `AWS_*` variables or the shared credentials file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Section {
    /// Endpoint URL of an S3-compatible service (MinIO, Ceph RGW, Garage).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    /// A file whose first line is the secret access key (never on the
    /// command line).
    pub secret_access_key_file: Option<PathBuf>,
    /// Files larger than this are sent in parts [default: 32M].
    #[serde(deserialize_with = "de_size")]
    pub multipart_threshold: Option<u64>,
    /// Seconds a failing request is retried before the operation that
    /// needed it gets EIO [default: 20].
    pub retry_secs: Option<f64>,
    /// Files at least this large are read through the mount while they
    /// are fetched, not after [default: 8M].
    #[serde(deserialize_with = "de_size")]
    pub sparse_threshold: Option<u64>,
}

/// The variable that gives Redis's password.
pub const REDIS_PASSWORD_ENV: &str = "ARTFS_REDIS_PASSWORD";

/// The first line of a secret file; an unreadable or empty one is an
/// error naming the file and the setting.
fn first_line(path: &Path, setting: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{setting} {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        anyhow::bail!("{setting} {} is empty", path.display());
    }
    Ok(line.to_string())
}

/// The store's defaults ([`StoreOptions::default`]).
impl Default for ClusterConfig {
    fn default() -> Self {
        let o = StoreOptions::default();
        ClusterConfig {
            role: o.role,
            poll_ms: o.poll.as_millis() as u64,
            takeover_secs: o.takeover_after.as_secs_f64(),
            redis: None,
            redis_password_file: None,
        }
    }
}

/// `[store]`: where a store is. Read by every command that opens one.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory holding the objects (BACKING).
    pub backing: Option<PathBuf>,
    /// Metadata database URL; `None`: `sqlite://BACKING/.artfs/meta.db`.
    pub db: Option<String>,
    /// Prefix of the metadata tables.
    pub table_prefix: String,
    /// With BACKING `s3://...`: the local cache directory (made if absent).
    pub cache_dir: Option<PathBuf>,
    /// With BACKING `s3://...`: bytes of cached copies kept [default: 10G].
    #[serde(deserialize_with = "de_size")]
    pub cache_size: Option<u64>,
    /// A file whose first line is the database password, for a `db` URL
    /// without one when `ARTFS_DB_PASSWORD` is not set (never on the
    /// command line, so never in `ps` or shell history).
    pub db_password_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backing: None,
            db: None,
            table_prefix: DEFAULT_TABLE_PREFIX.into(),
            cache_dir: None,
            cache_size: None,
            db_password_file: None,
        }
    }
}

impl StoreConfig {
    /// The password `db_password_file` holds, when the environment gives
    /// none (`ARTFS_DB_PASSWORD` wins): its first line. An unreadable or
    /// empty file is an error naming it.
    pub fn db_password(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.db_password_file else {
            return Ok(None);
        };
        first_line(path, "db_password_file").map(Some)
    }
}

impl MountConfig {
    /// When reads move atime: noatime or a read-only mount, never;
    /// strictatime, always; else relatime.
    pub fn atime(&self) -> anyhow::Result<crate::core::options::Atime> {
        use crate::core::options::Atime;
        Ok(match (self.noatime || self.read_only, self.strictatime) {
            (true, true) => anyhow::bail!(
                "--strictatime cannot go with --noatime or --read-only: choose one atime rule"
            ),
            (true, false) => Atime::Never,
            (false, true) => Atime::Always,
            (false, false) => Atime::Relative,
        })
    }
}

/// `[mount]`: how `artfs mount` serves the store.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MountConfig {
    /// Empty directory to mount on (MOUNTPOINT).
    pub mountpoint: Option<PathBuf>,
    /// Let other users access the mount.
    pub allow_other: bool,
    /// FUSE request threads; `None`: one (see `fuse::MountOptions`).
    pub threads: Option<usize>,
    /// Seconds the kernel may cache entries and attributes. The daemon
    /// owns its metadata, so this is long; changes made behind the
    /// kernel's back are pushed out through the notifier.
    pub attr_ttl: u64,
    /// Microseconds a CPU is kept busy after each FUSE request (0: never;
    /// see `fuse::awake`).
    pub keep_awake_us: u64,
    /// Entries per in-memory metadata cache.
    pub cache_entries: usize,
    /// Detach a stale mount left at the mount point by a killed daemon.
    pub force: bool,
    /// Serve requests over FUSE-over-io_uring when the kernel offers it
    /// (see `fuse::MountOptions::io_uring`).
    pub io_uring: bool,
    /// listxattr lists the computed `user.artstore.*` attributes too.
    pub list_computed_xattrs: bool,
    /// With a capacity, writes go through passthrough, each checked
    /// against the capacity by the kernel's fanotify pre-content events
    /// (Linux 6.14+); sendfile and splice into a file are not checked.
    pub capacity_passthrough: bool,
    /// The kernel ignores device files on the mount (mount's `nodev`).
    pub nodev: bool,
    /// The kernel ignores set-user-id and set-group-id bits when running
    /// programs from the mount (mount's `nosuid`).
    pub nosuid: bool,
    /// The kernel refuses to run programs from the mount (mount's
    /// `noexec`).
    pub noexec: bool,
    /// The kernel refuses every change through the mount (mount's `ro`);
    /// the store's mode, and what the HTTP door may do, stay as they are.
    pub read_only: bool,
    /// Reads never move atime (mount's `noatime`).
    pub noatime: bool,
    /// Every open for reading moves atime (mount's `strictatime`).
    pub strictatime: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            mountpoint: None,
            allow_other: false,
            threads: None,
            attr_ttl: 3600,
            keep_awake_us: 1000,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            force: false,
            io_uring: true,
            list_computed_xattrs: false,
            capacity_passthrough: false,
            nodev: false,
            nosuid: false,
            noexec: false,
            read_only: false,
            noatime: false,
            strictatime: false,
        }
    }
}

/// `[policy]`: the store's mode (for a new store) and capacity.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Mode of a new store; an existing store keeps its own.
    #[serde(deserialize_with = "de_mode")]
    pub mode: Mode,
    /// Most bytes regular files may hold (0 removes the limit); `None`
    /// leaves the store's capacity as it is. In the file: a number of
    /// bytes or a string with a binary suffix ("500G").
    #[serde(deserialize_with = "de_size")]
    pub capacity: Option<u64>,
    /// Days an unlinked file stays in /.trash (edit mode); 0: no trash.
    pub trash_days: f64,
    /// How far ahead a retention lock may reach; zero: no bound. In the
    /// file: a duration ("100years", "30d") or seconds.
    #[serde(deserialize_with = "de_duration")]
    pub max_retention: std::time::Duration,
    /// Committed log rows kept at most (older ones are pruned).
    pub wal_keep_rows: u64,
    /// Days committed log rows are kept.
    pub wal_keep_days: u64,
    /// Days failed and rolled-back log rows are kept, for audit.
    pub wal_keep_failed_days: u64,
}

/// Seconds in a day (the `wal_keep_*days` settings).
const DAY: u64 = 24 * 3600;

/// The store's defaults ([`StoreOptions::default`]).
impl Default for PolicyConfig {
    fn default() -> Self {
        let o = StoreOptions::default();
        let r = &o.journal_retention;
        PolicyConfig {
            mode: o.initial_mode,
            capacity: o.capacity,
            trash_days: o.collector.trash_days,
            max_retention: o.max_retention.unwrap_or(std::time::Duration::ZERO),
            wal_keep_rows: r.committed_max_rows,
            wal_keep_days: r.committed_max_age.as_secs() / DAY,
            wal_keep_failed_days: r.failed_max_age.as_secs() / DAY,
        }
    }
}

impl PolicyConfig {
    /// How long settled log rows are kept.
    pub fn retention(&self) -> Retention {
        Retention {
            committed_max_rows: self.wal_keep_rows,
            committed_max_age: std::time::Duration::from_secs(self.wal_keep_days * DAY),
            failed_max_age: std::time::Duration::from_secs(self.wal_keep_failed_days * DAY),
        }
    }
}

/// `[api]`: the HTTP door (docs/API.md); flags and `ARTFS_*` variables
/// override each key.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to listen on ("127.0.0.1:8080"); `None`: no API.
    pub listen: Option<String>,
    /// PEM public key verifying tokens.
    pub jwt_key: Option<PathBuf>,
    /// JWKS file verifying tokens (instead of `jwt_key`).
    pub jwks: Option<PathBuf>,
    /// Required token issuer (`iss`).
    pub jwt_issuer: Option<String>,
    /// Required token audience (`aud`).
    pub jwt_audience: Option<String>,
    /// TLS certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Allow listening on a non-loopback address without TLS.
    pub insecure_public: bool,
    /// File holding the secret `/metrics` asks for; `None`: open.
    pub metrics_token_file: Option<PathBuf>,
    /// What the original element's clients see (`api::element`); `None`:
    /// the API's name, priority 100, location `default`.
    pub element_id: Option<String>,
    pub display_name: Option<String>,
    pub priority: Option<i64>,
    pub location: Option<String>,
}

/// `[log]`: what the daemon logs (to stderr).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter, as in `ARTFS_LOG` (which overrides it).
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            filter: DEFAULT_LOG.into(),
        }
    }
}

impl Config {
    /// The file at `path`, or the defaults when there is none. Errors name
    /// the file, and for bad TOML or an unknown key the line.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut cfg = Config::parse(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?;
        let abs =
            std::path::absolute(path).with_context(|| format!("config file {}", path.display()))?;
        cfg.resolve_paths(abs.parent().unwrap_or(Path::new("/")));
        Ok(cfg)
    }

    /// The store `[store]` names, every other option at its default (what
    /// the offline commands open); `None` without a BACKING.
    /// BACKING `s3://BUCKET[/PREFIX]` puts the content in that bucket and
    /// makes `cache_dir` the store's local directory. Fails on a bad
    /// bucket URL, or one without a cache directory.
    pub fn store_options(&self) -> anyhow::Result<Option<StoreOptions>> {
        let Some(backing) = self.store.backing.clone() else {
            return Ok(None);
        };
        let (backing, content) = match backing.to_str().filter(|b| b.starts_with("s3://")) {
            None => (backing, crate::blob::Content::Local),
            Some(url) => {
                let (bucket, prefix) = crate::blob::S3Config::parse_url(url)
                    .map_err(|e| anyhow::anyhow!("BACKING {url}: {e}"))?;
                let Some(cache) = self.store.cache_dir.clone() else {
                    anyhow::bail!(
                        "BACKING {url} needs --cache-dir DIR (or [store] cache_dir): the local \
                         directory where the bucket's objects are cached"
                    );
                };
                let s3 = &self.s3;
                let credentials = match (&s3.access_key_id, &s3.secret_access_key_file) {
                    (Some(id), Some(file)) => Some(crate::blob::Credentials {
                        key_id: id.clone(),
                        secret: first_line(file, "secret_access_key_file")?,
                        session_token: None,
                    }),
                    (None, None) => None,
                    _ => anyhow::bail!("[s3] access_key_id and secret_access_key_file go together"),
                };
                let cfg = crate::blob::S3Config {
                    bucket,
                    prefix,
                    endpoint: s3.endpoint.clone(),
                    region: s3.region.clone(),
                    credentials,
                    cache_size: self
                        .store
                        .cache_size
                        .unwrap_or(crate::blob::DEFAULT_CACHE_SIZE),
                    multipart_threshold: s3
                        .multipart_threshold
                        .unwrap_or(crate::blob::DEFAULT_MULTIPART_THRESHOLD)
                        .max(5 << 20),
                    retry_for: match s3.retry_secs {
                        None => crate::blob::DEFAULT_RETRY_FOR,
                        Some(s) if (0.5..=3600.0).contains(&s) => {
                            std::time::Duration::from_secs_f64(s)
                        }
                        Some(s) => anyhow::bail!("[s3] retry_secs must be 0.5 to 3600, not {s}"),
                    },
                    sparse_threshold: s3
                        .sparse_threshold
                        .unwrap_or(crate::blob::DEFAULT_SPARSE_THRESHOLD),
                    read_only: false,
                };
                (cache, crate::blob::Content::S3(Box::new(cfg)))
            }
        };
        Ok(Some(StoreOptions {
            backing,
            content,
            db_url: self.store.db.clone(),
            table_prefix: self.store.table_prefix.clone(),
            ..StoreOptions::default()
        }))
    }

    /// `store` as `artfs mount` serves it: with `[mount] cache_entries`
    /// and `[policy]`. Fails on a trash duration that is not a number of
    /// days.
    pub fn serving(&self, store: StoreOptions) -> anyhow::Result<StoreOptions> {
        let p = &self.policy;
        if !(p.trash_days >= 0.0 && p.trash_days.is_finite()) {
            anyhow::bail!("--trash-days must be 0 or more");
        }
        let c = &self.cluster;
        if c.poll_ms == 0 {
            anyhow::bail!("--poll-ms must be at least 1");
        }
        let min = crate::core::options::MIN_TAKEOVER.as_secs_f64();
        if !(c.takeover_secs >= min && c.takeover_secs <= 3600.0) {
            anyhow::bail!(
                "--takeover-secs must be between {min} and 3600: a shorter silence is too \
                 close to the writer's heartbeat (every {} s)",
                crate::meta::lease::BEAT.as_secs()
            );
        }
        Ok(StoreOptions {
            role: c.role,
            poll: std::time::Duration::from_millis(c.poll_ms),
            takeover_after: std::time::Duration::from_secs_f64(c.takeover_secs),
            cache_entries: self.mount.cache_entries,
            journal_retention: p.retention(),
            initial_mode: p.mode,
            capacity: p.capacity,
            collector: CollectorConfig {
                trash_days: p.trash_days,
                ..store.collector
            },
            max_retention: Some(p.max_retention).filter(|d| !d.is_zero()),
            atime: self.mount.atime()?,
            ..store
        })
    }

    /// Parse TOML text (relative paths are left as they are).
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Make the relative paths (and a relative SQLite database) relative
    /// to `dir`, the file's directory, rather than the working directory.
    pub fn resolve_paths(&mut self, dir: &Path) {
        if self
            .store
            .backing
            .as_ref()
            .and_then(|b| b.to_str())
            .is_some_and(|b| b.starts_with("s3://"))
        {
            // A bucket, not a path.
            let url = self.store.backing.take();
            self.resolve_paths(dir);
            self.store.backing = url;
            return;
        }
        let paths = [
            &mut self.store.backing,
            &mut self.store.cache_dir,
            &mut self.s3.secret_access_key_file,
            &mut self.store.db_password_file,
            &mut self.cluster.redis_password_file,
            &mut self.mount.mountpoint,
            &mut self.api.jwt_key,
            &mut self.api.jwks,
            &mut self.api.tls_cert,
            &mut self.api.tls_key,
            &mut self.api.metrics_token_file,
        ];
        for p in paths.into_iter().flatten() {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        if let Some(db) = &mut self.store.db {
            *db = resolve_sqlite(db, dir);
        }
    }
}

/// Lay a value from the command line or the environment (clap's `Some`)
/// over the file's. For a setting that is itself optional in the file,
/// pass `value.map(Some)`.
pub fn over<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// `BACKING` for commands whose BACKING is followed by another positional
/// (`search QUERY`, `mode MODE`). clap fills positionals in order, so a
/// lone one lands in BACKING even when the store comes from `ARTFS_BACKING`
/// or the file. When the store is known from there, this takes the lone
/// positional back out of `backing` (the caller makes it the QUERY or
/// MODE) and puts `ARTFS_BACKING` in its place; otherwise it returns None
/// and changes nothing.
pub fn shift_positional(backing: &mut Option<PathBuf>, file: &Config) -> Option<PathBuf> {
    let env = std::env::var_os("ARTFS_BACKING")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if env.is_none() && file.store.backing.is_none() {
        return None;
    }
    let lone = backing.take();
    *backing = env;
    lone
}

/// A SQLite URL with a relative path, made relative to `dir`; other URLs
/// (and `:memory:`) unchanged.
fn resolve_sqlite(url: &str, dir: &Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_string();
    };
    let (path, query) = match rest.find('?') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.is_empty() || path.starts_with(':') || Path::new(path).is_absolute() {
        return url.to_string();
    }
    format!("sqlite://{}{query}", dir.join(path).display())
}

/// Bytes with an optional binary suffix: 1048576, 512K, 10M, 2G, 1T.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
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

/// A duration such as "100years", "30d", "1h 30m" (humantime), or "0".
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match s.trim() {
        "0" => Ok(std::time::Duration::ZERO),
        t => humantime::parse_duration(t)
            .map_err(|e| format!("not a duration: {s:?} ({e}; e.g. 100years, 30d, 0)")),
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    struct Dur;
    impl de::Visitor<'_> for Dur {
        type Value = std::time::Duration;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration like \"100years\" or a number of seconds")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(std::time::Duration::from_secs(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(std::time::Duration::from_secs)
                .map_err(|_| E::custom(format!("not a duration: {v}")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Dur)
}

/// A boolean from a flag's `=VALUE` or its variable: true/false, yes/no,
/// on/off, 1/0 (any case); empty is false, as for a flag never given.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Ok(true),
        "false" | "no" | "n" | "off" | "0" | "" => Ok(false),
        _ => Err(format!("not a boolean: {s:?} (use true or false)")),
    }
}

fn de_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(de::Error::custom)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Size;
    impl de::Visitor<'_> for Size {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number of bytes or a size like \"500G\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("not a size: {v}")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            parse_bytes(v).map(Some).map_err(E::custom)
        }
    }
    d.deserialize_any(Size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example with its commented-out settings (`# key = value`)
    /// turned on.
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if is_setting(rest) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn is_setting(line: &str) -> bool {
        let mut words = line.split_whitespace();
        let key = words.next().unwrap_or("");
        !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            && words.next() == Some("=")
    }

    #[test]
    fn defaults_are_the_stores() {
        // One home per default: the file's defaults, converted, are the
        // store's own (a copy that drifts fails here).
        let mut c = Config::default();
        assert_eq!(c.store_options().unwrap().map(|o| o.backing), None);
        c.store.backing = Some("/b".into());
        let served = c.serving(c.store_options().unwrap().unwrap()).unwrap();
        assert_eq!(
            format!("{served:?}"),
            format!("{:?}", StoreOptions::new("/b"))
        );
        // And the way back: what the file says reaches the store.
        c.policy.wal_keep_days = 3;
        c.policy.max_retention = std::time::Duration::ZERO;
        let o = c.serving(StoreOptions::new("/b")).unwrap();
        assert_eq!(o.journal_retention.committed_max_age.as_secs(), 3 * DAY);
        assert_eq!(o.max_retention, None);
        c.policy.trash_days = -1.0;
        assert!(c.serving(StoreOptions::new("/b")).is_err());
    }

    #[test]
    fn example_is_the_defaults() {
        assert_eq!(Config::parse(EXAMPLE).unwrap(), Config::default());
    }

    #[test]
    fn example_names_every_key() {
        // With every commented-out setting on, it still parses (so they are
        // spelled right) and every optional setting is set.
        let all = Config::parse(&uncommented(EXAMPLE)).unwrap();
        let c = &all;
        let optional = [
            ("store.backing", c.store.backing.is_some()),
            ("store.db", c.store.db.is_some()),
            ("store.cache_dir", c.store.cache_dir.is_some()),
            ("store.cache_size", c.store.cache_size.is_some()),
            ("s3.endpoint", c.s3.endpoint.is_some()),
            ("s3.region", c.s3.region.is_some()),
            ("s3.access_key_id", c.s3.access_key_id.is_some()),
            (
                "s3.secret_access_key_file",
                c.s3.secret_access_key_file.is_some(),
            ),
            ("s3.multipart_threshold", c.s3.multipart_threshold.is_some()),
            ("s3.retry_secs", c.s3.retry_secs.is_some()),
            ("s3.sparse_threshold", c.s3.sparse_threshold.is_some()),
            ("mount.mountpoint", c.mount.mountpoint.is_some()),
            ("mount.threads", c.mount.threads.is_some()),
            ("policy.capacity", c.policy.capacity.is_some()),
            ("cluster.redis", c.cluster.redis.is_some()),
            (
                "cluster.redis_password_file",
                c.cluster.redis_password_file.is_some(),
            ),
            ("api.listen", c.api.listen.is_some()),
            ("api.jwt_key", c.api.jwt_key.is_some()),
            ("api.jwks", c.api.jwks.is_some()),
            ("api.jwt_issuer", c.api.jwt_issuer.is_some()),
            ("api.jwt_audience", c.api.jwt_audience.is_some()),
            ("api.tls_cert", c.api.tls_cert.is_some()),
            ("api.tls_key", c.api.tls_key.is_some()),
            ("api.metrics_token_file", c.api.metrics_token_file.is_some()),
        ];
        for (key, set) in optional {
            assert!(set, "the example does not show {key}");
        }
        // Every key of every section appears (the structs' fields, as
        // deny_unknown_fields lists them when given a bad key).
        for section in ["store", "s3", "mount", "policy", "api", "log"] {
            let err = Config::parse(&format!("[{section}]\nno_such_key = 1\n"))
                .unwrap_err()
                .to_string();
            let expected = err.split(", expected").nth(1).unwrap_or(&err);
            for key in expected.split('`').skip(1).step_by(2) {
                assert!(
                    uncommented(EXAMPLE)
                        .lines()
                        .any(|l| l.starts_with(&format!("{key} = "))),
                    "the example does not show [{section}] {key}"
                );
            }
        }
    }

    #[test]
    fn an_s3_backing_names_a_bucket_and_needs_a_cache_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s3.secret"), "sekrit\n").unwrap();
        let text = "[store]\nbacking = \"s3://archive-a/elements/one/\"\n";
        let mut c = Config::parse(text).unwrap();
        c.resolve_paths(dir.path());
        let err = c.store_options().unwrap_err().to_string();
        assert!(err.contains("--cache-dir"), "{err}");
        let text = format!(
            "{text}cache_dir = \"cache\"\ncache_size = \"1G\"\n\
             [s3]\nendpoint = \"http://127.0.0.1:9000\"\naccess_key_id = \"AK\"\n\
             secret_access_key_file = \"s3.secret\"\n"
        );
        let mut c = Config::parse(&text).unwrap();
        c.resolve_paths(dir.path());
        let o = c.store_options().unwrap().unwrap();
        // The cache directory is the store's local directory.
        assert_eq!(o.backing, dir.path().join("cache"));
        let crate::blob::Content::S3(s3) = o.content else {
            panic!("not an S3 store: {:?}", o.content)
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str()),
            ("archive-a", "elements/one")
        );
        assert_eq!(s3.cache_size, 1 << 30);
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        let creds = s3.credentials.unwrap();
        assert_eq!(
            (creds.key_id.as_str(), creds.secret.as_str()),
            ("AK", "sekrit")
        );
        assert!(
            !format!("{creds:?}").contains("sekrit"),
            "the secret is never shown"
        );
        let mut c = Config::parse("[store]\nbacking = \"s3://x\"\ncache_dir = \"/c\"\n").unwrap();
        c.resolve_paths(dir.path());
        let err = c.store_options().unwrap_err().to_string();
        assert!(err.contains("not a bucket name"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("[mount]\nattr_ttl = 5\nmountpiont = \"/mnt\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("mountpiont"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = Config::parse("[mont]\n").unwrap_err().to_string();
        assert!(err.contains("mont"), "{err}");
    }

    #[test]
    fn values_and_types() {
        let c =
            Config::parse("[policy]\nmode = \"rw\"\ncapacity = \"500G\"\n[mount]\nthreads = 4\n")
                .unwrap();
        assert_eq!(c.policy.mode, Mode::Rw);
        assert_eq!(c.policy.capacity, Some(500 << 30));
        assert_eq!(c.mount.threads, Some(4));
        let c = Config::parse("[policy]\ncapacity = 1048576\n").unwrap();
        assert_eq!(c.policy.capacity, Some(1 << 20));
        for bad in [
            "[policy]\nmode = \"rx\"\n",
            "[policy]\ncapacity = \"5Q\"\n",
            "[policy]\ncapacity = -1\n",
            "[mount]\nattr_ttl = \"soon\"\n",
        ] {
            assert!(Config::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let mut c = Config::parse(
            "[store]\nbacking = \"data\"\ndb = \"sqlite://meta/m.db?mode=rwc\"\n\
             [mount]\nmountpoint = \"/mnt/x\"\n[api]\njwt_key = \"../k.pem\"\n",
        )
        .unwrap();
        c.resolve_paths(Path::new("/etc/artfs"));
        assert_eq!(c.store.backing.unwrap(), Path::new("/etc/artfs/data"));
        assert_eq!(c.mount.mountpoint.unwrap(), Path::new("/mnt/x"));
        assert_eq!(c.api.jwt_key.unwrap(), Path::new("/etc/artfs/../k.pem"));
        assert_eq!(
            c.store.db.unwrap(),
            "sqlite:///etc/artfs/meta/m.db?mode=rwc"
        );
        let d = Path::new("/d");
        assert_eq!(resolve_sqlite("sqlite:x.db", d), "sqlite:///d/x.db");
        assert_eq!(resolve_sqlite("sqlite:///a/x.db", d), "sqlite:///a/x.db");
        assert_eq!(resolve_sqlite("sqlite::memory:", d), "sqlite::memory:");
        assert_eq!(resolve_sqlite("postgres://h/db", d), "postgres://h/db");
    }

    #[test]
    fn over_keeps_the_file_unless_given() {
        let mut ttl = 10u64;
        over(&mut ttl, None);
        assert_eq!(ttl, 10);
        over(&mut ttl, Some(20));
        assert_eq!(ttl, 20);
        let mut db = Some("file".to_string());
        over(&mut db, None::<String>.map(Some));
        assert_eq!(db.as_deref(), Some("file"));
    }

    #[test]
    fn booleans() {
        for t in ["true", "YES", "on", "1", " y "] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "No", "off", "0", ""] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        assert!(parse_bool("maybe").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1M"), Ok(1 << 20));
        assert_eq!(parse_bytes("512k"), Ok(512 << 10));
        assert_eq!(parse_bytes("42"), Ok(42));
        assert!(parse_bytes("1X").is_err());
        assert!(parse_bytes("99999999T").is_err());
    }
}
