//! [`S3Store`]: content in an S3-compatible bucket, worked on through a
//! local cache of whole objects (docs/S3.md).
//!
//! ```text
//! s3://BUCKET/PREFIX/objects/<ino hex16>/<version hex16>.<mtime ns>  one version of the content (immutable)
//! s3://BUCKET/PREFIX/objects/<ino hex16>/attr.json                   its sidecar
//! s3://BUCKET/PREFIX/.artfs/store-id                                 the store's id
//! CACHE/objects/XX/<ino hex16>         local copy, XX = ino & 0xff (what the doors open)
//! CACHE/objects/XX/<ino hex16>.cached  which version the copy is, and its size and times then
//! CACHE/objects/XX/<ino hex16>.<n>.fetch  a large copy being fetched (see `fill`)
//! CACHE/.artfs/uploads/<ino>-<version> a multipart upload under way (its id), aborted at start
//! ```
//!
//! **Versions.** Content in the bucket is never overwritten: sending a
//! file's changes puts version n+1 (a conditional put, so two writers
//! never share a key), then deletes version n. The highest version is the
//! content, as the object file is for a local store; a crash between the
//! put and the delete leaves an older version, deleted when next seen.
//! The mtime is in the key, so one LIST answers `stat`.
//!
//! **The copy.** The doors open local copies (passthrough, pread,
//! pwrite), fetched whole before `open_*` returns. A copy is *clean* while
//! its size, mtime and ctime are what they were when it last matched its
//! version (`.cached` holds them, so this survives a restart); a write,
//! a truncate or a crash mid-write shows as a change. Changes are sent at
//! [`ContentStore::fsync`] and at the last close ([`ContentStore::close`]);
//! one that could not be sent stays in the cache and is retried every
//! second by the sender thread, and at the next start. A copy with no
//! `.cached` is content never sent (a new file) if the bucket has no
//! version of it, else a fetch cut short (thrown away).
//!
//! **Large copies** (`sparse_threshold`) are fetched by one streaming GET
//! into a temp file (`fill`): `open_partial` hands it out while it comes,
//! the other opens wait for it to be placed (`settled`, `materialise`).
//!
//! **Eviction.** Past `cache_size`, the least recently used copies that
//! are clean and not open are removed (a reader holding one keeps its
//! descriptor; the next open fetches again).
//!
//! **Followers** (read-only): never put, delete or write the bucket, and
//! check the bucket's version at every open, as another node writes it.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use parking_lot::Mutex;

use super::sidecar::{AttrJson, DirSync, Parsed, SidecarError};
use super::{ContentStore, Filling, FoundSidecar, NewVersion, ObjectStat, Partial, Space};

mod fill;
mod locks;
mod source;
use crate::types::Timestamp;
use fill::Fill;
pub use source::BucketTree;

/// How to reach a bucket, and the local cache in front of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix of the store inside the bucket, without slashes at
    /// either end; empty for the bucket's root.
    pub prefix: String,
    /// Endpoint URL of an S3-compatible service (MinIO, Ceph RGW,
    /// Garage); `None`: AWS, or `AWS_ENDPOINT_URL` from the environment.
    pub endpoint: Option<String>,
    /// `None`: `AWS_REGION`, else us-east-1.
    pub region: Option<String>,
    /// `None`: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, else the
    /// profile (`AWS_PROFILE`, default `default`) of the shared
    /// credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
    /// `~/.aws/credentials`).
    pub credentials: Option<Credentials>,
    /// Bytes of local copies kept (clean, closed copies beyond it are
    /// evicted; copies with unsent changes never are).
    pub cache_size: u64,
    /// Files larger than this are sent as multipart uploads.
    pub multipart_threshold: u64,
    /// How long a request is retried (throttling, timeouts, 5xx) before
    /// the operation that needed it fails with EIO.
    pub retry_for: Duration,
    /// Files at least this large, opened for reading through the FUSE
    /// door and not cached, are read while they are fetched (see
    /// `fill`); smaller ones are fetched whole before the open returns.
    pub sparse_threshold: u64,
    /// A follower's store: reads only.
    pub read_only: bool,
}

/// An access key; never logged (`Debug` hides the secret).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("secret", &"<hidden>")
            .finish()
    }
}

/// Default `cache_size`: 10 GiB.
pub const DEFAULT_CACHE_SIZE: u64 = 10 << 30;
/// Default `retry_for`.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(20);
/// Default `multipart_threshold`: 32 MiB.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 32 << 20;
/// Default `sparse_threshold`: 8 MiB (below it one GET takes little
/// longer than its first bytes would).
pub const DEFAULT_SPARSE_THRESHOLD: u64 = 8 << 20;
/// Parts are at least this large (S3's minimum is 5 MiB) and grow so that
/// 5 TiB fits in 10,000 parts.
const MIN_PART: u64 = 16 << 20;
/// Fetches: this many ranges at once, each of at least `FETCH_CHUNK` and
/// at most `FETCH_MAX_RANGE` bytes.
const FETCH_CHUNK: u64 = 8 << 20;
const FETCH_MAX_RANGE: u64 = 256 << 20;
const FETCH_PARALLEL: usize = 4;
const PARTS_PARALLEL: usize = 4;
/// Hints of versions kept for opens under way (see `expect_version`).
const MAX_HINTS: usize = 4096;

impl S3Config {
    /// Split `s3://BUCKET[/PREFIX]`.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid {
            return Err(format!(
                "{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '-' and '.')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") {
            return Err(format!("the prefix {prefix:?} may not hold . or .. parts"));
        }
        Ok((bucket.to_string(), prefix.to_string()))
    }

    /// `s3://BUCKET/PREFIX`, for messages.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Read the shared credentials file's profile, if there is one.
fn profile_credentials() -> Option<Credentials> {
    let file = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws/credentials")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let want = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let mut section = String::new();
    let mut c = Credentials::default();
    for line in text.lines().map(str::trim) {
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.trim().trim_start_matches("profile ").to_string();
        } else if section == want {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().to_string();
                match k.trim() {
                    "aws_access_key_id" => c.key_id = v,
                    "aws_secret_access_key" => c.secret = v,
                    "aws_session_token" => c.session_token = Some(v),
                    _ => {}
                }
            }
        }
    }
    (!c.key_id.is_empty() && !c.secret.is_empty()).then_some(c)
}

/// A copy's figures when it last matched its version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    size: u64,
    mtime: i64,
    ctime: i64,
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: m.len(),
            mtime: Timestamp::mtime_of(m).0,
            ctime: Timestamp::ctime_of(m).0,
        }
    }
}

/// The `.cached` record beside a copy. A copy without one was never
/// sent (nothing of it is in the bucket).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Cached {
    /// The version the copy matched last (0: none).
    version: u64,
    /// The copy's figures then.
    clean: Option<Stamp>,
    /// A put of this version was begun: it may be in the bucket.
    #[serde(default)]
    sending: Option<u64>,
    /// Opened for writing since it matched: a change of its figures is a
    /// local write to send. Without it, a change is damage (the copy is
    /// fetched again, never served or sent).
    #[serde(default)]
    writing: bool,
    /// The tables are known to name `version` (or owe it no record):
    /// a version this cache sent stays unrecorded until the core's commit
    /// naming it is durable, and is reported again at the next start if
    /// a crash came first. Records from before versions were recorded
    /// read as unrecorded: reported once.
    #[serde(default)]
    recorded: bool,
}

/// What the cache knows of one copy.
#[derive(Clone, Debug, Default)]
struct Entry {
    /// The version the copy came from or was sent as; 0: none (new).
    version: u64,
    /// Its key in the bucket (to delete it when superseded).
    key: Option<String>,
    /// The copy's figures when it last matched `version`.
    clean: Option<Stamp>,
    /// Opens by the core not yet closed (`open_rw`, `open_or_create`,
    /// `create_new` .. `close`).
    writers: u32,
    /// A put of this version may have happened (a crash during a send).
    sending: Option<u64>,
    /// Opened for writing since it matched (see `Cached::writing`).
    writing: bool,
    /// Checked against the bucket during this run.
    checked: bool,
    /// See `Cached::recorded`.
    recorded: bool,
    /// The version the tables name, as the core said before opening
    /// (`ContentStore::expect_version`): `Some(None)` when they name none.
    expected: Option<Option<String>>,
    /// Sent while the version it replaced was not known (a restart): the
    /// older ones are listed and deleted once the new one is recorded.
    prune_older: bool,
    bytes: u64,
    used: u64,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<u64, Entry>,
    bytes: u64,
    clock: u64,
    /// Copies with changes to send once closed (a failed send, a crash).
    unsent: BTreeSet<u64>,
}

/// What `materialise_or_fill` left.
enum Got {
    /// No object.
    Absent,
    /// The copy is there, whole.
    Copy,
    /// The copy is being fetched while read.
    Filling(Arc<Fill>),
}

/// One version found in the bucket.
#[derive(Clone, Debug)]
struct Version {
    number: u64,
    key: String,
    size: u64,
    mtime: Timestamp,
}

/// Requests and bytes, for metrics (`RemoteStats`).
#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    puts: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    failures: AtomicU64,
    fetched: AtomicU64,
    sent: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub struct S3Store {
    cfg: S3Config,
    counters: Arc<Counters>,
    /// Whether this process writes the store (a follower's store becomes
    /// writable when its standby takes over).
    writable: AtomicBool,
    /// This store, for its sender thread (which must not keep it alive).
    me: std::sync::Weak<S3Store>,
    client: Arc<AmazonS3>,
    /// The client of partial copies' GETs: no overall timeout (a large
    /// object streams as long as it takes; `fill` gives up on a GET that
    /// stalls instead).
    fill_client: Arc<AmazonS3>,
    /// Copies being fetched while read, and a number for their temp files.
    fills: Mutex<HashMap<u64, Arc<Fill>>>,
    fill_seq: AtomicU64,
    rt: Option<tokio::runtime::Runtime>,
    /// `CACHE/objects`.
    root: PathBuf,
    /// `CACHE/.artfs`.
    state_dir: PathBuf,
    state: Mutex<CacheState>,
    /// One lock per object (`locks.rs`).
    locks: locks::ObjectLocks,
    stop: Arc<AtomicBool>,
    sender: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Versions the core has not been told of (`take_versions`).
    reports: Mutex<Vec<NewVersion>>,
    /// The versions the tables name, as the core said before opening
    /// (`expect_version`), until the copy's entry takes them.
    hints: Mutex<HashMap<u64, Option<String>>>,
}

fn s3_err(what: &str, key: &str, e: object_store::Error) -> io::Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => io::ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => io::ErrorKind::AlreadyExists,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => io::ErrorKind::PermissionDenied,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("S3 {what} {key}: {e}"))
}

/// How long a multipart completion of `size` bytes may take: `retry_for`,
/// and a second per 32 MiB (a store assembling at 32 MiB/s), at most an
/// hour.
fn completion_deadline(retry_for: Duration, size: u64) -> Duration {
    (retry_for + Duration::from_secs(size / (32 << 20))).min(Duration::from_secs(3600))
}

fn gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl S3Store {
    /// Connect to the bucket and open the cache under `cache_dir` (made if
    /// absent). Checks the bucket answers.
    pub fn open(cfg: S3Config, cache_dir: &Path) -> io::Result<Arc<S3Store>> {
        let connect = ClientOptions::new().with_connect_timeout(
            cfg.retry_for
                .clamp(Duration::from_secs(1), Duration::from_secs(5)),
        );
        let client = Arc::new(Self::client(
            &cfg,
            connect.clone().with_timeout(
                cfg.retry_for
                    .clamp(Duration::from_secs(1), Duration::from_secs(60)),
            ),
        )?);
        let fill_client = Arc::new(Self::client(&cfg, connect.with_timeout_disabled())?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("artfs-s3")
            .enable_all()
            .build()?;
        let root = cache_dir.join("objects");
        for i in 0..=255u8 {
            std::fs::create_dir_all(root.join(format!("{i:02x}")))?;
        }
        let state_dir = cache_dir.join(".artfs");
        std::fs::create_dir_all(state_dir.join("uploads"))?;
        let store = Arc::new_cyclic(|me| S3Store {
            me: me.clone(),
            counters: Arc::default(),
            writable: AtomicBool::new(!cfg.read_only),
            cfg,
            client,
            fill_client,
            fills: Mutex::default(),
            fill_seq: AtomicU64::new(0),
            rt: Some(rt),
            root,
            state_dir,
            state: Mutex::new(CacheState::default()),
            locks: locks::ObjectLocks::default(),
            stop: Arc::new(AtomicBool::new(false)),
            sender: Mutex::new(None),
            reports: Mutex::new(Vec::new()),
            hints: Mutex::new(HashMap::new()),
        });
        store.check_bucket()?;
        store.load_cache()?;
        Ok(store)
    }

    /// A client of the bucket with these options (given first: they
    /// replace what `with_allow_http` sets).
    fn client(cfg: &S3Config, options: ClientOptions) -> io::Result<AmazonS3> {
        let mut b = AmazonS3Builder::from_env()
            .with_client_options(options)
            .with_bucket_name(&cfg.bucket);
        if let Some(e) = &cfg.endpoint {
            b = b
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        match &cfg.region {
            Some(r) => b = b.with_region(r),
            None if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none() =>
            {
                b = b.with_region("us-east-1")
            }
            None => {}
        }
        let creds = cfg.credentials.clone().or_else(|| {
            std::env::var_os("AWS_ACCESS_KEY_ID")
                .is_none()
                .then(profile_credentials)
                .flatten()
        });
        if let Some(c) = creds {
            b = b
                .with_access_key_id(c.key_id)
                .with_secret_access_key(c.secret);
            if let Some(t) = c.session_token {
                b = b.with_token(t);
            }
        }
        // Throttling (503 SlowDown), timeouts and 5xx are retried with
        // backoff; a store still failing after `retry_for` gives EIO. A
        // request that hangs counts against it too.
        let retry = RetryConfig {
            max_retries: 10,
            retry_timeout: cfg.retry_for,
            ..RetryConfig::default()
        };
        b.with_retry(retry)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
            .build()
            .map_err(|e| io::Error::other(format!("S3 {}: {e}", cfg.url())))
    }

    /// Run `fut` on the store's runtime and wait for it, from any thread
    /// (the doors call the core from FUSE threads and the API's blocking
    /// pool alike).
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.as_ref().expect("runtime").spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().expect("the S3 runtime stopped")
    }

    fn key(&self, rest: &str) -> String {
        if self.cfg.prefix.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.cfg.prefix)
        }
    }

    fn object_dir_key(&self, ino: u64) -> String {
        self.key(&format!("objects/{ino:016x}/"))
    }

    fn sidecar_key(&self, ino: u64) -> String {
        self.key(&format!("objects/{ino:016x}/attr.json"))
    }

    fn identity_key(&self) -> String {
        self.key(".artfs/store-id")
    }

    fn copy_path(&self, ino: u64) -> PathBuf {
        self.root
            .join(format!("{:02x}", ino & 0xff))
            .join(format!("{ino:016x}"))
    }

    fn record_path(&self, ino: u64) -> PathBuf {
        self.root
            .join(format!("{:02x}", ino & 0xff))
            .join(format!("{ino:016x}.cached"))
    }

    fn object_lock(&self, ino: u64) -> locks::ObjectGuard<'_> {
        self.locks.lock(ino)
    }

    /// An S3 error as an `io::Error`, counted.
    fn failed(&self, what: &str, key: &str, e: object_store::Error) -> io::Error {
        bump(&self.counters.failures, 1);
        s3_err(what, key, e)
    }

    fn read_only(&self) -> bool {
        !self.writable.load(Ordering::Relaxed)
    }

    fn refuse_write(&self) -> io::Result<()> {
        if self.read_only() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a follower never writes the bucket",
            ));
        }
        Ok(())
    }

    fn check_bucket(&self) -> io::Result<()> {
        let client = self.client.clone();
        let prefix = Key::from(self.key(".artfs"));
        let url = self.cfg.url();
        self.run(async move { client.list_with_delimiter(Some(&prefix)).await })
            .map(|_| ())
            .map_err(|e| io::Error::other(format!("S3 bucket {url}: {e}")))
    }

    // ---- the bucket ---------------------------------------------------

    /// Every version of object `ino` in the bucket, oldest first.
    fn versions(&self, ino: u64) -> io::Result<Vec<Version>> {
        let client = self.client.clone();
        let dir = self.object_dir_key(ino);
        let prefix = Key::from(dir.trim_end_matches('/'));
        bump(&self.counters.lists, 1);
        let listed: Vec<object_store::ObjectMeta> = self
            .run(async move { client.list(Some(&prefix)).try_collect().await })
            .map_err(|e| self.failed("list", &dir, e))?;
        let mut out: Vec<Version> = listed
            .into_iter()
            .filter_map(|m| {
                let key = m.location.to_string();
                let name = key.rsplit('/').next()?;
                let (number, mtime) = parse_version(name)?;
                Some(Version {
                    number,
                    key,
                    size: m.size,
                    mtime,
                })
            })
            .collect();
        out.sort_by_key(|v| v.number);
        Ok(out)
    }

    /// The current version of `ino`; older ones left by a crash are
    /// deleted (not by a follower).
    fn current(&self, ino: u64) -> io::Result<Option<Version>> {
        let mut all = self.versions(ino)?;
        let last = all.pop();
        if !self.read_only() {
            for old in all {
                self.delete_key(&old.key)?;
            }
        }
        Ok(last)
    }

    /// Whether version `number` of `ino` is current, for a follower: the
    /// version the tables name, if the core said, else the bucket's.
    fn is_current(&self, ino: u64, number: u64) -> io::Result<bool> {
        let hint = self.hints.lock().get(&ino).cloned().flatten();
        let hint = hint.or_else(|| {
            let st = self.state.lock();
            st.entries
                .get(&ino)
                .and_then(|e| e.expected.clone())
                .flatten()
        });
        match hint.as_deref().and_then(parse_version) {
            Some((n, _)) => Ok(n == number),
            None => Ok(self.current(ino)?.map(|v| v.number) == Some(number)),
        }
    }

    /// [`S3Store::current`], for an open: on the writer, a current
    /// version other than the one the tables name (`hint`, when the core
    /// said) is reported for the core to record (a crash cut the commit
    /// that would have named it, or it predates recorded versions).
    fn listed(&self, ino: u64, hint: Option<Option<String>>) -> io::Result<Option<Version>> {
        let cur = self.current(ino)?;
        if let (Some(named), Some(v), false) = (hint, &cur, self.read_only()) {
            let name = last_part(&v.key);
            if named.as_deref() != Some(name) {
                self.reports.lock().push(NewVersion {
                    ino,
                    name: name.to_string(),
                    superseded: None,
                });
            }
        }
        Ok(cur)
    }

    fn delete_key(&self, key: &str) -> io::Result<()> {
        bump(&self.counters.deletes, 1);
        let client = self.client.clone();
        let k = Key::from(key);
        gone(
            self.run(async move { client.delete(&k).await })
                .map_err(|e| self.failed("delete", key, e)),
        )
    }

    fn get_bytes(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        bump(&self.counters.gets, 1);
        let client = self.client.clone();
        let k = Key::from(key);
        let got = self.run(async move {
            match client.get(&k).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.failed("get", key, e))
    }

    fn put_bytes(&self, key: &str, bytes: Vec<u8>, mode: PutMode) -> io::Result<()> {
        bump(&self.counters.puts, 1);
        bump(&self.counters.sent, bytes.len() as u64);
        let client = self.client.clone();
        let k = Key::from(key);
        self.run(async move {
            client
                .put_opts(&k, PutPayload::from(bytes), PutOptions::from(mode))
                .await
        })
        .map(|_| ())
        .map_err(|e| self.failed("put", key, e))
    }

    /// Download `v` into a new copy of `ino` (temp file, then renamed), and
    /// record it clean.
    fn fetch(&self, ino: u64, v: &Version) -> io::Result<Stamp> {
        let path = self.copy_path(ino);
        let tmp = path.with_extension("fetch");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let result = self
            .download(&file, v)
            .and_then(|()| self.place(ino, v, &file, &tmp));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Make the fetched temp file `tmp` (`file`, all of `v`) the copy of
    /// `ino`, recorded clean. The record comes first: a crash before the
    /// rename leaves a temp file (removed at start), one after it a copy
    /// whose figures may differ from the record (the rename moves the
    /// ctime), taken for damage and fetched again; never a copy without
    /// a record, which would be taken for new content and sent.
    fn place(&self, ino: u64, v: &Version, file: &File, tmp: &Path) -> io::Result<Stamp> {
        let path = self.copy_path(ino);
        file.set_modified(v.mtime.to_system())?;
        // The copy's bytes are on disk before the record says so.
        file.sync_data()?;
        let record = |stamp| Cached {
            version: v.number,
            clean: Some(stamp),
            sending: None,
            writing: false,
            // Whether the tables name it was settled when it was chosen
            // (`materialise_or_fill` reports one they do not).
            recorded: true,
        };
        let before = Stamp::of(&file.metadata()?);
        self.write_record(ino, &record(before))?;
        if let Err(e) = std::fs::rename(tmp, &path) {
            let _ = std::fs::remove_file(self.record_path(ino));
            return Err(e);
        }
        let stamp = Stamp::of(&file.metadata()?);
        if stamp != before {
            self.write_record(ino, &record(stamp))?;
        }
        Ok(stamp)
    }

    /// Fetch version `v` into `file`: the object in `FETCH_PARALLEL`
    /// ranges or more (each at most `FETCH_MAX_RANGE`), streamed to their
    /// offsets as the bytes arrive. Few, long ranges: each request has a
    /// fixed cost (some servers read the whole object to answer a range).
    fn download(&self, file: &File, v: &Version) -> io::Result<()> {
        let client = self.client.clone();
        let key = Key::from(v.key.as_str());
        let size = v.size;
        let part = size
            .div_ceil(FETCH_PARALLEL as u64)
            .clamp(FETCH_CHUNK, FETCH_MAX_RANGE);
        let ranges: Vec<std::ops::Range<u64>> = (0..size.div_ceil(part))
            .map(|i| i * part..((i + 1) * part).min(size))
            .collect();
        let out = Arc::new(file.try_clone()?);
        bump(&self.counters.gets, ranges.len() as u64);
        bump(&self.counters.fetched, size);
        self.run(async move {
            futures_util::stream::iter(ranges)
                .map(|r| {
                    let (client, key, out) = (client.clone(), key.clone(), out.clone());
                    async move {
                        let (start, want) = (r.start, r.end - r.start);
                        let opts = object_store::GetOptions::new().with_range(Some(r));
                        let mut body = client.get_opts(&key, opts).await?.into_stream();
                        let mut at = start;
                        while let Some(bytes) = body.try_next().await? {
                            out.write_all_at(&bytes, at).map_err(|e| {
                                object_store::Error::Generic {
                                    store: "cache",
                                    source: Box::new(e),
                                }
                            })?;
                            at += bytes.len() as u64;
                        }
                        if at - start != want {
                            return Err(object_store::Error::Generic {
                                store: "S3",
                                source: format!(
                                    "a range of {want} bytes at {start} came back with {}",
                                    at - start
                                )
                                .into(),
                            });
                        }
                        Ok(())
                    }
                })
                .buffer_unordered(FETCH_PARALLEL)
                .try_collect::<Vec<()>>()
                .await
        })
        .map_err(|e| self.failed("get", &v.key, e))?;
        file.set_len(size)
    }

    /// Send the content of `file` (the copy of `ino`) as a new version,
    /// unless it is unchanged since it last matched; returns the version
    /// made. The version it replaces stays in the bucket until the core has
    /// recorded the new one ([`ContentStore::version_committed`]): a crash
    /// before that commit finds both. Caller holds the object's lock.
    fn send(&self, ino: u64, file: &File) -> io::Result<Option<NewVersion>> {
        self.refuse_write()?;
        if self.fills.lock().contains_key(&ino) {
            // Being fetched: nothing of it was written here (writers wait
            // for the whole copy), and its figures are the fetch's.
            return Ok(None);
        }
        let m = file.metadata()?;
        if m.nlink() == 0 {
            // A copy dropped while a handle held it (the file was removed,
            // or the copy refetched): it is not the file's content, and
            // sending it would put back an object nothing owns.
            return Ok(None);
        }
        let stamp = Stamp::of(&m);
        let entry = self.state.lock().entries.get(&ino).cloned();
        let entry = entry.unwrap_or_default();
        if entry.clean == Some(stamp) {
            return Ok(None);
        }
        let mut number = entry.version.max(entry.sending.unwrap_or(0)) + 1;
        let first = number;
        let mut superseded = entry.key.clone();
        // Before the put: from now on a crash leaves a copy that may be in
        // the bucket, never one taken for content never sent.
        self.write_record(
            ino,
            &Cached {
                version: entry.version,
                clean: entry.clean,
                sending: Some(number),
                writing: entry.writing,
                recorded: entry.recorded,
            },
        )?;
        // And in memory: a removal from now on lists the bucket, and a
        // retry goes past this number.
        self.state.lock().entries.entry(ino).or_default().sending = Some(number);
        let key = loop {
            let key = self.key(&format!(
                "objects/{ino:016x}/{}",
                version_name(number, Timestamp(stamp.mtime))
            ));
            // Tests slow the bucket here (`sleep(ms)`).
            fail::fail_point!("s3::before_put");
            match self.upload(ino, number, &key, file, stamp.size) {
                Ok(()) => break key,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && number == first => {
                    // Someone wrote this number (a crash after a put, before
                    // its record): go past what the bucket holds.
                    let cur = self.versions(ino)?;
                    number = cur.last().map_or(0, |v| v.number) + 1;
                    superseded = cur.last().map(|v| v.key.clone());
                }
                Err(e) => return Err(e),
            }
        };
        crate::crash_point!("s3::after_put");
        {
            // The bucket holds it, whatever becomes of the record below: a
            // removal must delete it, and a retry (the record failed: a
            // full disk) must supersede it.
            let mut st = self.state.lock();
            let e = st.entries.entry(ino).or_default();
            e.version = number;
            e.key = Some(key.clone());
        }
        // Still open: more writes may come.
        let writing = entry.writers > 0;
        let recorded = (|| {
            // Tests fail the record here, as a full disk would.
            fail::fail_point!("s3::record_after_put", |_| Err(
                io::Error::from_raw_os_error(libc::ENOSPC)
            ));
            self.write_record(
                ino,
                &Cached {
                    version: number,
                    clean: Some(stamp),
                    sending: None,
                    writing,
                    recorded: false,
                },
            )
        })();
        // Still `sending` in memory if this fails: the retry supersedes
        // this version and every older one.
        recorded?;
        {
            let mut st = self.state.lock();
            let e = st.entries.entry(ino).or_default();
            e.version = number;
            e.key = Some(key.clone());
            e.clean = Some(stamp);
            e.sending = None;
            e.writing = writing;
            e.checked = true;
            e.recorded = false;
            // Which key it replaced is not known (a restart), or an
            // earlier send may have put a version it never heard back about
            // (a timeout, a failed record): the older ones are listed and
            // deleted once the new one is recorded.
            e.prune_older |= entry.sending.is_some() || (superseded.is_none() && entry.version > 0);
            st.unsent.remove(&ino);
        }
        // The cache's size counts what was just sent (a file still open
        // is counted at its last close too).
        self.touch(ino, stamp.size);
        Ok(Some(NewVersion {
            ino,
            name: last_part(&key).to_string(),
            superseded: superseded.map(|k| last_part(&k).to_string()),
        }))
    }

    /// Send as [`S3Store::send`] does, from a door (an `fsync`, a last
    /// release): a failure leaves the changes for the sender thread.
    fn send_now(&self, ino: u64, file: &File) -> io::Result<Option<NewVersion>> {
        if self.read_only() {
            return Ok(None);
        }
        let _g = self.object_lock(ino);
        let r = self.send(ino, file);
        if r.is_err() {
            self.state.lock().unsent.insert(ino);
        }
        r
    }

    /// Put `size` bytes of `file` under `key`, never over an existing key.
    fn upload(&self, ino: u64, number: u64, key: &str, file: &File, size: u64) -> io::Result<()> {
        if size <= self.cfg.multipart_threshold {
            let mut buf = vec![0u8; size as usize];
            file.read_exact_at(&mut buf, 0)?;
            return self.put_bytes(key, buf, PutMode::Create);
        }
        let part = MIN_PART.max(size.div_ceil(10_000).next_multiple_of(1 << 20));
        let client = self.client.clone();
        let k = Key::from(key);
        let id = {
            let (client, k) = (client.clone(), k.clone());
            self.run(async move { client.create_multipart(&k).await })
                .map_err(|e| self.failed("create multipart upload", key, e))?
        };
        // Recorded so that a crash leaves nothing behind: the next start
        // aborts it.
        let marker = self
            .state_dir
            .join("uploads")
            .join(format!("{ino:016x}-{number:016x}"));
        super::write_atomic(&marker, format!("{key}\n{id}\n").as_bytes())?;
        let src = file.try_clone()?;
        // The create, each part and the completion.
        bump(&self.counters.puts, size.div_ceil(part) + 2);
        bump(&self.counters.sent, size);
        let parts: Vec<(usize, u64, u64)> = (0..size.div_ceil(part))
            .map(|i| (i as usize, i * part, ((i + 1) * part).min(size) - i * part))
            .collect();
        let sent = {
            let (client, k, id) = (client.clone(), k.clone(), id.clone());
            let complete = self.fill_client.clone();
            let deadline = completion_deadline(self.cfg.retry_for, size);
            self.run(async move {
                let mut done: Vec<(usize, PartId)> = futures_util::stream::iter(parts)
                    .map(|(idx, off, len)| {
                        let (client, k, id) = (client.clone(), k.clone(), id.clone());
                        let src = src.try_clone();
                        async move {
                            let src = src.map_err(|e| object_store::Error::Generic {
                                store: "cache",
                                source: Box::new(e),
                            })?;
                            let buf = tokio::task::spawn_blocking(move || {
                                let mut buf = vec![0u8; len as usize];
                                src.read_exact_at(&mut buf, off).map(|()| buf)
                            })
                            .await
                            .expect("read task")
                            .map_err(|e| {
                                object_store::Error::Generic {
                                    store: "cache",
                                    source: Box::new(e),
                                }
                            })?;
                            let pid = client.put_part(&k, &id, idx, PutPayload::from(buf)).await?;
                            Ok::<_, object_store::Error>((idx, pid))
                        }
                    })
                    .buffer_unordered(PARTS_PARALLEL)
                    .try_collect()
                    .await?;
                done.sort_by_key(|(i, _)| *i);
                let parts = done.into_iter().map(|(_, p)| p).collect();
                crate::crash_point!("s3::before_complete");
                // The store assembles the parts before it answers (S3 says
                // a completion may take minutes; moto takes 20 s for 2 GiB
                // here), so the completion is not held to the per-request
                // timeout: the client without one, under a deadline that
                // grows with the size.
                match tokio::time::timeout(deadline, complete.complete_multipart(&k, &id, parts))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(object_store::Error::Generic {
                        store: "S3",
                        source: format!("the completion took more than {} s", deadline.as_secs())
                            .into(),
                    }),
                }
            })
        };
        match sent {
            Ok(_) => {
                let _ = std::fs::remove_file(&marker);
                Ok(())
            }
            Err(e) => {
                let (client, k2, id2) = (client.clone(), k.clone(), id.clone());
                if self
                    .run(async move { client.abort_multipart(&k2, &id2).await })
                    .is_ok()
                {
                    let _ = std::fs::remove_file(&marker);
                }
                Err(self.failed("multipart upload", key, e))
            }
        }
    }

    /// Abort the multipart uploads a crash left; returns how many.
    fn abort_leftover_uploads(&self) -> io::Result<usize> {
        let mut n = 0;
        for e in std::fs::read_dir(self.state_dir.join("uploads"))? {
            let path = e?.path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines = text.lines();
            if let (Some(key), Some(id)) = (lines.next(), lines.next()) {
                let client = self.client.clone();
                let (k, id) = (Key::from(key), id.to_string());
                match self.run(async move { client.abort_multipart(&k, &id).await }) {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.failed("abort multipart upload", key, e)),
                }
                n += 1;
            }
            std::fs::remove_file(&path)?;
        }
        Ok(n)
    }

    // ---- the cache ----------------------------------------------------

    fn write_record(&self, ino: u64, rec: &Cached) -> io::Result<()> {
        let rec = serde_json::to_vec(rec).expect("record");
        let path = self.record_path(ino);
        let tmp = path.with_extension("cached-tmp");
        std::fs::write(&tmp, rec)?;
        std::fs::rename(&tmp, &path)
    }

    fn read_record(&self, ino: u64) -> Option<Cached> {
        let bytes = std::fs::read(self.record_path(ino)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Drop the copy of `ino` and its record.
    fn drop_copy(&self, ino: u64) -> io::Result<()> {
        gone(std::fs::remove_file(self.record_path(ino)))?;
        gone(std::fs::remove_file(self.copy_path(ino)))?;
        let mut st = self.state.lock();
        if let Some(e) = st.entries.remove(&ino) {
            st.bytes = st.bytes.saturating_sub(e.bytes);
        }
        st.unsent.remove(&ino);
        Ok(())
    }

    /// Learn the copies already in the cache: their sizes, and which hold
    /// changes not sent (a crash, a failed send).
    fn load_cache(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        for i in 0..=255u8 {
            for e in std::fs::read_dir(self.root.join(format!("{i:02x}")))? {
                let e = e?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".fetch") || name.ends_with(".cached-tmp") {
                    // A fetch or record write cut short.
                    let _ = std::fs::remove_file(e.path());
                    continue;
                }
                let Some(ino) = (name.len() == 16)
                    .then(|| u64::from_str_radix(&name, 16).ok())
                    .flatten()
                else {
                    continue;
                };
                let m = e.metadata()?;
                let entry = self.entry_from_disk(ino, &m);
                // Copies with a record were sent before (or were being):
                // changes to them go again. One without was never sent: a
                // file open at a crash (recovery's `stat` queues it) or an
                // object made ahead of need (recovery removes it).
                if (entry.version > 0 || entry.sending.is_some()) && Self::is_unsent(&entry, &m) {
                    st.unsent.insert(ino);
                }
                // Sent, and the commit naming it may not have happened
                // (a crash came first): the core is told again.
                if let (false, Some(clean), None, 1..) =
                    (entry.recorded, entry.clean, entry.sending, entry.version)
                {
                    self.reports.lock().push(NewVersion {
                        ino,
                        name: version_name(entry.version, Timestamp(clean.mtime)),
                        superseded: None,
                    });
                }
                st.bytes += m.len();
                st.entries.insert(ino, entry);
            }
        }
        Ok(())
    }

    /// What the record of a copy found on disk says.
    fn entry_from_disk(&self, ino: u64, m: &std::fs::Metadata) -> Entry {
        let rec = self.read_record(ino);
        Entry {
            version: rec.map_or(0, |r| r.version),
            clean: rec.and_then(|r| r.clean),
            sending: rec.and_then(|r| r.sending),
            writing: rec.is_some_and(|r| r.writing),
            recorded: rec.is_some_and(|r| r.recorded),
            bytes: m.len(),
            ..Entry::default()
        }
    }

    /// The cache's entry for `ino` with its copy's figures, learning a
    /// copy made before this run from its record; `None` without a copy.
    fn known(&self, ino: u64) -> io::Result<Option<(Entry, std::fs::Metadata)>> {
        let m = match std::fs::metadata(self.copy_path(ino)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut st = self.state.lock();
        if let Some(e) = st.entries.get(&ino) {
            return Ok(Some((e.clone(), m)));
        }
        let e = self.entry_from_disk(ino, &m);
        st.bytes += m.len();
        st.entries.insert(ino, e.clone());
        Ok(Some((e, m)))
    }

    /// Whether a copy holds content that is not (or may not be) in the
    /// bucket: new, written since it matched, or cut short while sent.
    fn is_unsent(e: &Entry, m: &std::fs::Metadata) -> bool {
        e.sending.is_some() || (e.clean != Some(Stamp::of(m)) && (e.writing || e.version == 0))
    }

    /// Whether a copy changed though nothing wrote it: damage (a disk
    /// error, a hand), fetched again, never served or sent.
    fn is_damaged(e: &Entry, m: &std::fs::Metadata) -> bool {
        e.version > 0 && e.sending.is_none() && !e.writing && e.clean != Some(Stamp::of(m))
    }

    /// Record that local writes may change the copy of `ino` (entry `e`),
    /// before they do: after a crash its new figures are then taken for
    /// local writes, not for damage. Nothing to do for a copy already so
    /// recorded, or never sent (all of it is local).
    fn mark_writing(&self, ino: u64, e: &Entry) -> io::Result<()> {
        if e.writing || e.version == 0 {
            return Ok(());
        }
        self.write_record(
            ino,
            &Cached {
                version: e.version,
                clean: e.clean,
                sending: e.sending,
                writing: true,
                recorded: e.recorded,
            },
        )?;
        self.mark(ino, |e| e.writing = true);
        Ok(())
    }

    fn mark(&self, ino: u64, f: impl FnOnce(&mut Entry)) {
        if let Some(e) = self.state.lock().entries.get_mut(&ino) {
            f(e);
        }
    }

    /// The lock of `ino`, with its copy there and current (`true`) or
    /// no object (`false`): fetched whole if need be, a large one by a
    /// [`Fill`] waited for with the lock let go (a reader through the
    /// door reads it meanwhile).
    fn materialise(&self, ino: u64) -> io::Result<(locks::ObjectGuard<'_>, bool)> {
        loop {
            let g = self.settled(ino)?;
            match self.materialise_or_fill(ino)? {
                Got::Copy => return Ok((g, true)),
                Got::Absent => return Ok((g, false)),
                Got::Filling(f) => {
                    drop(g);
                    f.wait_whole()?;
                    if !f.whole() {
                        return Err(io::Error::other(format!(
                            "the fetch of {} was given up",
                            f.version.key
                        )));
                    }
                }
            }
        }
    }

    /// Make sure the copy of `ino` is there and current, or that a
    /// [`Fill`] is fetching it (a large version). Caller holds the lock
    /// (from `settled`: no fill runs).
    fn materialise_or_fill(&self, ino: u64) -> io::Result<Got> {
        let known = self.known(ino)?;
        let hint = self.hints.lock().get(&ino).cloned();
        let hint = hint.or_else(|| known.as_ref().and_then(|(e, _)| e.expected.clone()));
        let Some((e, m)) = known else {
            return self.get_version(ino, self.listed(ino, hint)?);
        };
        if Self::is_damaged(&e, &m) {
            tracing::warn!(ino, copy = %self.copy_path(ino).display(),
                "a cached copy changed though nothing wrote it; fetching it again");
            self.drop_copy(ino)?;
            return self.get_version(ino, self.listed(ino, hint)?);
        }
        if e.checked && !self.read_only() {
            self.touch(ino, m.len());
            return Ok(Got::Copy);
        }
        let named = hint
            .as_ref()
            .and_then(|h| h.as_deref().and_then(parse_version));
        let unsent = Self::is_unsent(&e, &m);
        if named.is_some_and(|(n, _)| n == e.version) && (self.read_only() || !unsent) {
            // A copy of the version the tables name is current without
            // asking the bucket: a follower's; and the writer's when it
            // holds no changes, for only the writer puts versions, and one
            // it put that the tables do not name yet is in its record
            // (sending, or reported at the start).
            let key = hint.flatten().map(|name| self.object_dir_key(ino) + &name);
            self.mark(ino, |e| {
                e.checked = true;
                e.key = key;
            });
            self.touch(ino, m.len());
            return Ok(Got::Copy);
        }
        if e.version == 0 && e.sending.is_none() {
            // Never sent (no record): nothing in the bucket to compare with.
            self.mark(ino, |e| e.checked = true);
            if !self.read_only() {
                self.state.lock().unsent.insert(ino);
            }
            self.touch(ino, m.len());
            return Ok(Got::Copy);
        }
        let cur = self.listed(ino, hint)?;
        let ours = e.version.max(e.sending.unwrap_or(0));
        let keep = match &cur {
            // The version the copy matched.
            Some(v) if v.number == e.version && !unsent => true,
            // Local changes on top of what this node last sent (a reader
            // of this cache, like fsck, sees them as the content too).
            Some(v) if unsent && v.number <= ours => true,
            // Gone from the bucket behind our back, with local content:
            // sent again rather than lost.
            None if unsent => true,
            _ => false,
        };
        if keep {
            self.mark(ino, |en| {
                en.checked = true;
                if let Some(v) = &cur {
                    en.version = v.number.max(en.version);
                    en.key = Some(v.key.clone());
                }
            });
            if unsent && !self.read_only() {
                self.state.lock().unsent.insert(ino);
            }
            self.touch(ino, m.len());
            return Ok(Got::Copy);
        }
        if unsent {
            tracing::warn!(
                ino,
                "another node wrote a newer version of a file this cache holds \
                changes to; the bucket's version wins and the local changes are dropped"
            );
        }
        self.drop_copy(ino)?;
        self.get_version(ino, cur)
    }

    /// Fetch `v` as the copy of `ino`: whole, or a large one by a fill
    /// (one GET, readable as it comes, shared by whoever opens it
    /// meanwhile); `Got::Absent` when there is no version (no object).
    fn get_version(&self, ino: u64, v: Option<Version>) -> io::Result<Got> {
        match v {
            Some(v) if v.size >= self.cfg.sparse_threshold => {
                self.start_fill(ino, v).map(Got::Filling)
            }
            Some(v) => self.fetch_entry(ino, &v).map(|()| Got::Copy),
            None => Ok(Got::Absent),
        }
    }

    /// Begin fetching `v` into a partial copy of `ino`. Caller holds the
    /// lock.
    fn start_fill(&self, ino: u64, v: Version) -> io::Result<Arc<Fill>> {
        let n = self.fill_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.copy_path(ino).with_extension(format!("{n}.fetch"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        // Full length from the start: holes until the bytes come.
        if let Err(e) = file.set_len(v.size) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let rt = self.rt.as_ref().expect("runtime").handle().clone();
        let idle = self
            .cfg
            .retry_for
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let entry = Entry {
            version: v.number,
            key: Some(v.key.clone()),
            ..Entry::default()
        };
        let fill = Fill::new(
            ino,
            v,
            tmp,
            file,
            self.me.clone(),
            self.fill_client.clone(),
            rt,
            idle,
            self.counters.clone(),
        );
        // No copy yet: eviction skips it (not clean), and no path but the
        // fill's own reads finds the temp file.
        self.state.lock().entries.insert(ino, entry);
        self.fills.lock().insert(ino, fill.clone());
        fill.start();
        Ok(fill)
    }

    /// The lock of `ino`, once no copy of it is being fetched while
    /// read (waiting for one that is: whoever takes the lock sees whole
    /// copies only). An error when that fetch failed.
    fn settled(&self, ino: u64) -> io::Result<locks::ObjectGuard<'_>> {
        loop {
            let g = self.object_lock(ino);
            let Some(f) = self.fills.lock().get(&ino).cloned() else {
                return Ok(g);
            };
            drop(g);
            f.wait_whole()?;
        }
    }

    /// Every byte of `fill` came: place the copy and record it clean.
    fn fill_done(&self, fill: &Arc<Fill>) {
        let ino = fill.ino;
        {
            let _g = self.object_lock(ino);
            if !self
                .fills
                .lock()
                .get(&ino)
                .is_some_and(|f| Arc::ptr_eq(f, fill))
            {
                return;
            }
            match self.place(ino, &fill.version, &fill.file, &fill.tmp) {
                Ok(stamp) => {
                    {
                        let mut st = self.state.lock();
                        let e = st.entries.entry(ino).or_default();
                        e.version = fill.version.number;
                        e.key = Some(fill.version.key.clone());
                        e.clean = Some(stamp);
                        e.checked = true;
                    }
                    self.touch(ino, stamp.size);
                    self.fills.lock().remove(&ino);
                    fill.set_whole();
                }
                Err(e) => {
                    tracing::warn!(ino, error = %e, "could not place a fetched copy");
                    self.fills.lock().remove(&ino);
                    fill.cancel();
                    let _ = self.drop_copy(ino);
                }
            }
        }
        self.evict();
    }

    /// The fetches of `fill` failed and none runs: given up if no handle
    /// holds it (the next open starts again), else kept for its reads to
    /// try again.
    fn fill_idle(&self, fill: &Arc<Fill>) {
        let _g = self.object_lock(fill.ino);
        self.abandon_if_unused(fill);
    }

    /// Caller holds the object's lock.
    fn abandon_if_unused(&self, fill: &Arc<Fill>) {
        let ino = fill.ino;
        let ours = self
            .fills
            .lock()
            .get(&ino)
            .is_some_and(|f| Arc::ptr_eq(f, fill));
        let unused = self
            .state
            .lock()
            .entries
            .get(&ino)
            .is_none_or(|e| e.writers == 0);
        if ours && unused && fill.is_idle() {
            self.fills.lock().remove(&ino);
            fill.cancel();
            let mut st = self.state.lock();
            if let Some(e) = st.entries.remove(&ino) {
                st.bytes = st.bytes.saturating_sub(e.bytes);
            }
        }
    }

    fn fetch_entry(&self, ino: u64, v: &Version) -> io::Result<()> {
        let stamp = self.fetch(ino, v)?;
        {
            let mut st = self.state.lock();
            st.bytes += stamp.size;
            st.entries.insert(
                ino,
                Entry {
                    version: v.number,
                    key: Some(v.key.clone()),
                    clean: Some(stamp),
                    checked: true,
                    bytes: stamp.size,
                    ..Entry::default()
                },
            );
        }
        self.touch(ino, stamp.size);
        Ok(())
    }

    fn touch(&self, ino: u64, len: u64) {
        let mut st = self.state.lock();
        st.clock += 1;
        let clock = st.clock;
        let mut delta = 0i64;
        if let Some(e) = st.entries.get_mut(&ino) {
            e.used = clock;
            delta = len as i64 - e.bytes as i64;
            e.bytes = len;
        }
        st.bytes = (st.bytes as i64 + delta).max(0) as u64;
    }

    fn open_copy(&self, ino: u64, write: bool) -> io::Result<File> {
        let mut o = OpenOptions::new();
        o.read(true)
            .write(write)
            .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC);
        o.open(self.copy_path(ino))
    }

    fn opened(&self, ino: u64) {
        let hint = self.hints.lock().remove(&ino);
        if let Some(e) = self.state.lock().entries.get_mut(&ino) {
            e.writers += 1;
            if hint.is_some() {
                e.expected = hint;
            }
        }
    }

    /// Remove the least recently used clean, closed copies until the
    /// cache fits its size.
    fn evict(&self) {
        let victims: Vec<u64> = {
            let st = self.state.lock();
            if st.bytes <= self.cfg.cache_size {
                return;
            }
            let mut c: Vec<(u64, u64, u64)> = st
                .entries
                .iter()
                .filter(|(ino, e)| {
                    e.writers == 0 && e.version > 0 && e.clean.is_some() && !st.unsent.contains(ino)
                })
                .map(|(ino, e)| (e.used, *ino, e.bytes))
                .collect();
            c.sort_unstable();
            let mut over = st.bytes - self.cfg.cache_size;
            c.into_iter()
                .take_while(|(_, _, b)| {
                    let go = over > 0;
                    over = over.saturating_sub(*b);
                    go
                })
                .map(|(_, ino, _)| ino)
                .collect()
        };
        for ino in victims {
            let Some(_g) = self.locks.try_lock(ino) else {
                continue;
            };
            let still = self.state.lock().entries.get(&ino).is_some_and(|e| {
                e.writers == 0
                    && std::fs::metadata(self.copy_path(ino))
                        .is_ok_and(|m| e.clean == Some(Stamp::of(&m)))
            });
            // Nor a copy a shared mapping may still write, its descriptor
            // closed (`core::mapped`): its writes would go with the file.
            let still = still
                && !matches!(
                    super::lease::probe(&self.copy_path(ino)),
                    Ok(Some(super::lease::Writers::Some))
                );
            if still {
                if let Err(e) = self.drop_copy(ino) {
                    tracing::warn!(ino, error = %e, "could not evict a cached copy");
                }
            }
        }
    }

    /// The thread that retries sending closed copies with changes.
    fn start_sender(&self) {
        let weak = self.me.clone();
        let stop = self.stop.clone();
        let h = std::thread::Builder::new()
            .name("artfs-s3-send".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_secs(1));
                    let Some(store) = weak.upgrade() else { return };
                    store.send_unsent(false);
                }
            })
            .expect("spawn the S3 sender");
        *self.sender.lock() = Some(h);
    }

    /// Send what closed copies hold unsent; returns how many failed (or,
    /// with `give_up`, were left after the first failure: at unmount a
    /// bucket that does not answer would cost `retry_for` per file, and
    /// what is left is sent at the next mount).
    pub fn send_unsent(&self, give_up: bool) -> usize {
        let todo: Vec<u64> = {
            let st = self.state.lock();
            st.unsent
                .iter()
                .filter(|ino| st.entries.get(ino).is_none_or(|e| e.writers == 0))
                .copied()
                .collect()
        };
        let mut failed = 0;
        let total = todo.len();
        for (i, ino) in todo.into_iter().enumerate() {
            if give_up && failed > 0 {
                tracing::warn!(
                    left = total - i,
                    "the bucket failed a send at unmount: the rest wait for the next mount"
                );
                return failed + total - i;
            }
            let _g = self.object_lock(ino);
            if !self.state.lock().unsent.contains(&ino) {
                continue;
            }
            let r = self.open_copy(ino, false).and_then(|f| self.send(ino, &f));
            match r {
                Ok(made) => self.reports.lock().extend(made),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.state.lock().unsent.remove(&ino);
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(ino, error = %e, "could not send a file's changes to S3; retrying");
                }
            }
        }
        failed
    }

    /// The store id kept in the bucket, if any.
    pub fn stored_identity(&self) -> io::Result<Option<String>> {
        Ok(self
            .get_bytes(&self.identity_key())?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string()))
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(rt) = self.rt.take() {
            // Dropping a runtime inside another's context panics.
            rt.shutdown_background();
        }
    }
}

/// The last part of a key: a version's name.
fn last_part(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

fn version_name(number: u64, mtime: Timestamp) -> String {
    format!("{number:016x}.{}", mtime.0)
}

fn parse_version(name: &str) -> Option<(u64, Timestamp)> {
    let (n, t) = name.split_once('.')?;
    if n.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(n, 16).ok()?, Timestamp(t.parse().ok()?)))
}

fn object_stat(size: u64, mtime: Timestamp) -> ObjectStat {
    ObjectStat {
        size,
        mtime,
        ctime: mtime,
        blocks: size.div_ceil(4096) * 8,
    }
}

impl ContentStore for S3Store {
    fn open_rw(&self, ino: u64) -> io::Result<File> {
        let (_g, found) = self.materialise(ino)?;
        if !found {
            return Err(io::ErrorKind::NotFound.into());
        }
        let f = self.open_copy(ino, !self.read_only())?;
        self.opened(ino);
        Ok(f)
    }

    fn open_read(&self, ino: u64) -> io::Result<File> {
        let (_g, found) = self.materialise(ino)?;
        if !found {
            return Err(io::ErrorKind::NotFound.into());
        }
        self.open_copy(ino, false)
    }

    fn open_or_create(&self, ino: u64) -> io::Result<File> {
        let (_g, found) = self.materialise(ino)?;
        if !found {
            self.refuse_write()?;
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.copy_path(ino))?;
            self.state.lock().entries.insert(
                ino,
                Entry {
                    checked: true,
                    ..Entry::default()
                },
            );
        }
        let f = self.open_copy(ino, !self.read_only())?;
        self.opened(ino);
        Ok(f)
    }

    fn create_new(&self, ino: u64) -> io::Result<File> {
        self.refuse_write()?;
        let _g = self.object_lock(ino);
        // Inode numbers are never reused, so the bucket cannot hold one
        // not made yet: only the cache is asked.
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC)
            .open(self.copy_path(ino))?;
        self.state.lock().entries.insert(
            ino,
            Entry {
                checked: true,
                writers: 1,
                ..Entry::default()
            },
        );
        Ok(f)
    }

    fn adopt(&self, ino: u64, staged: &Path) -> io::Result<ObjectStat> {
        self.refuse_write()?;
        let _g = self.object_lock(ino);
        if std::fs::symlink_metadata(self.copy_path(ino)).is_ok() || !self.versions(ino)?.is_empty()
        {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let file = File::open(staged)?;
        let stamp = Stamp::of(&file.metadata()?);
        let key = self.key(&format!(
            "objects/{ino:016x}/{}",
            version_name(1, Timestamp(stamp.mtime))
        ));
        self.upload(ino, 1, &key, &file, stamp.size)?;
        std::fs::rename(staged, self.copy_path(ino))?;
        // A rename changes the ctime of some filesystems' inodes.
        let stamp = Stamp::of(&std::fs::metadata(self.copy_path(ino))?);
        self.write_record(
            ino,
            &Cached {
                version: 1,
                clean: Some(stamp),
                sending: None,
                writing: false,
                // The core records it with the inode it makes.
                recorded: true,
            },
        )?;
        let mut st = self.state.lock();
        st.bytes += stamp.size;
        st.entries.insert(
            ino,
            Entry {
                version: 1,
                key: Some(key),
                clean: Some(stamp),
                checked: true,
                recorded: true,
                bytes: stamp.size,
                ..Entry::default()
            },
        );
        drop(st);
        let placed = ObjectStat::of(&std::fs::metadata(self.copy_path(ino))?);
        self.evict();
        Ok(placed)
    }

    fn fsync(&self, ino: u64, file: &File, _data_only: bool) -> io::Result<Option<NewVersion>> {
        self.send_now(ino, file)
    }

    fn send(&self, ino: u64, file: &File) -> io::Result<Option<NewVersion>> {
        if self.state.lock().unsent.contains(&ino) {
            // A send of it failed (a close's, an fsync's): the sender
            // thread retries it, and a close need not wait for the bucket's
            // retries a second time.
            return Ok(None);
        }
        self.send_now(ino, file)
    }

    fn take_versions(&self) -> Vec<NewVersion> {
        std::mem::take(&mut *self.reports.lock())
    }

    fn version_committed(&self, ino: u64, name: &str, superseded: &[String]) -> io::Result<()> {
        if self.read_only() {
            return Ok(());
        }
        let Some((number, _)) = parse_version(name) else {
            return Ok(());
        };
        let _g = self.object_lock(ino);
        let dir = self.object_dir_key(ino);
        for old in superseded {
            if old != name && parse_version(old).is_some() {
                self.delete_key(&format!("{dir}{old}"))?;
            }
        }
        let e = self.state.lock().entries.get(&ino).cloned();
        let Some(e) = e.filter(|e| e.version == number) else {
            return Ok(());
        };
        if e.prune_older {
            for v in self.versions(ino)? {
                if v.number < number {
                    self.delete_key(&v.key)?;
                }
            }
        }
        if !e.recorded && e.sending.is_none() {
            self.write_record(
                ino,
                &Cached {
                    version: e.version,
                    clean: e.clean,
                    sending: None,
                    writing: e.writing,
                    recorded: true,
                },
            )?;
        }
        self.mark(ino, |en| {
            if en.version == number {
                en.recorded = true;
                en.prune_older = false;
            }
        });
        Ok(())
    }

    fn current_version(&self, ino: u64) -> io::Result<Option<String>> {
        if !self.read_only() {
            let _g = self.object_lock(ino);
            if let Some((e, m)) = self.known(ino)? {
                if e.checked && !Self::is_unsent(&e, &m) && !Self::is_damaged(&e, &m) {
                    if let Some(k) = &e.key {
                        return Ok(Some(last_part(k).to_string()));
                    }
                }
            }
        }
        Ok(self.current(ino)?.map(|v| last_part(&v.key).to_string()))
    }

    fn expect_version(&self, ino: u64, version: Option<&str>) {
        let v = version.map(str::to_string);
        let mut st = self.state.lock();
        if let Some(e) = st.entries.get_mut(&ino) {
            e.expected = Some(v.clone());
        }
        drop(st);
        let mut hints = self.hints.lock();
        if hints.len() >= MAX_HINTS {
            // Hints of opens that never got their copy: stale, dropped.
            hints.clear();
        }
        hints.insert(ino, v);
    }

    fn close(&self, ino: u64, file: &File) -> io::Result<Option<NewVersion>> {
        let r = {
            let _g = self.object_lock(ino);
            let filling = self.fills.lock().get(&ino).cloned();
            if let Some(f) = filling {
                // Read while fetched: the fetch goes on (the next open
                // finds the copy), unless it failed.
                self.mark(ino, |e| e.writers = e.writers.saturating_sub(1));
                self.abandon_if_unused(&f);
                return Ok(None);
            }
            // A send that just failed (the core sends before the last
            // release, see `ContentStore::send`) is not tried again here:
            // the sender thread retries it.
            let failed = self.state.lock().unsent.contains(&ino);
            let r = if self.read_only() || failed {
                Ok(None)
            } else {
                self.send(ino, file)
            };
            let mut st = self.state.lock();
            if r.is_err() {
                st.unsent.insert(ino);
            }
            let sent = r.is_ok() && !st.unsent.contains(&ino);
            let mut settled = None;
            if let Some(e) = st.entries.get_mut(&ino) {
                e.writers = e.writers.saturating_sub(1);
                if sent && e.writers == 0 && e.writing && e.sending.is_none() {
                    // Sent and closed: a later change is damage again.
                    e.writing = false;
                    settled = Some(Cached {
                        version: e.version,
                        clean: e.clean,
                        sending: None,
                        writing: false,
                        recorded: e.recorded,
                    });
                }
            }
            drop(st);
            if let Some(rec) = settled {
                self.write_record(ino, &rec)?;
            }
            r
        };
        if let Ok(m) = file.metadata() {
            self.touch(ino, m.len());
        }
        self.evict();
        r
    }

    fn stat(&self, ino: u64) -> io::Result<Option<ObjectStat>> {
        let _g = self.object_lock(ino);
        if let Some((e, m)) = self.known(ino)? {
            if Self::is_unsent(&e, &m) {
                // The copy is the freshest content (a crash, a failed send):
                // recovery records it, and it is sent.
                if !self.read_only() {
                    self.state.lock().unsent.insert(ino);
                }
                return Ok(Some(ObjectStat::of(&m)));
            }
            if e.checked && !self.read_only() && !Self::is_damaged(&e, &m) {
                return Ok(Some(ObjectStat::of(&m)));
            }
        }
        Ok(self.current(ino)?.map(|v| object_stat(v.size, v.mtime)))
    }

    fn writers(&self, ino: u64) -> io::Result<Option<super::lease::Writers>> {
        super::lease::probe(&self.copy_path(ino))
    }

    fn adopt_changes(&self, ino: u64) -> io::Result<()> {
        if self.read_only() {
            return Ok(());
        }
        let _g = self.object_lock(ino);
        match self.known(ino)? {
            // As at an open for writing: after a crash the changed copy is
            // sent, not fetched again.
            Some((e, _)) => self.mark_writing(ino, &e),
            None => Ok(()),
        }
    }

    fn present(&self, range: std::ops::Range<u64>) -> io::Result<Vec<u64>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = BTreeSet::new();
        for ino in range.clone() {
            if self.copy_path(ino).exists() {
                found.insert(ino);
            }
            if ino - range.start > 1 << 20 {
                break;
            }
        }
        // One listing from the first number on, stopped past the last.
        let client = self.client.clone();
        let dir = self.key("objects");
        let prefix = Key::from(dir.as_str());
        let offset = Key::from(format!("{dir}/{:016x}", range.start.saturating_sub(1)));
        bump(&self.counters.lists, 1);
        let last = format!("{dir}/{:016x}/~", range.end - 1);
        let listed: Vec<String> = self
            .run(async move {
                client
                    .list_with_offset(Some(&prefix), &offset)
                    .map_ok(|m| m.location.to_string())
                    .try_take_while(|k| std::future::ready(Ok(*k <= last)))
                    .try_collect()
                    .await
            })
            .map_err(|e| self.failed("list", &dir, e))?;
        for key in listed {
            let parsed = key
                .strip_prefix(&format!("{dir}/"))
                .and_then(|rel| rel.split_once('/'))
                .filter(|(_, name)| parse_version(name).is_some())
                .and_then(|(i, _)| u64::from_str_radix(i, 16).ok());
            if let Some(ino) = parsed.filter(|i| range.contains(i)) {
                found.insert(ino);
            }
        }
        Ok(found.into_iter().collect())
    }

    fn remove(&self, ino: u64) -> io::Result<()> {
        self.refuse_write()?;
        let _g = self.object_lock(ino);
        if let Some(f) = self.fills.lock().remove(&ino) {
            f.cancel();
        }
        let never_sent = self
            .known(ino)?
            .is_some_and(|(e, _)| e.version == 0 && e.sending.is_none());
        // The copy first: a crash before the bucket's versions go leaves
        // the object whole (removal is repeated), never a copy that would
        // look like new content.
        self.drop_copy(ino)?;
        if !never_sent {
            for v in self.versions(ino)? {
                self.delete_key(&v.key)?;
            }
        }
        Ok(())
    }

    fn list(&self) -> io::Result<(Vec<u64>, Vec<PathBuf>)> {
        bump(&self.counters.lists, 1);
        let client = self.client.clone();
        let dir = self.key("objects");
        let prefix = Key::from(dir.as_str());
        let listed: Vec<object_store::ObjectMeta> = self
            .run(async move { client.list(Some(&prefix)).try_collect().await })
            .map_err(|e| self.failed("list", &dir, e))?;
        let mut inos = BTreeSet::new();
        let mut stray = Vec::new();
        for m in listed {
            let key = m.location.to_string();
            let rel = key.strip_prefix(&format!("{dir}/")).unwrap_or(&key);
            let parsed = rel.split_once('/').and_then(|(i, name)| {
                let ino = (i.len() == 16).then(|| u64::from_str_radix(i, 16).ok())??;
                match name {
                    "attr.json" => Some(None),
                    n => parse_version(n).map(|_| Some(ino)),
                }
            });
            match parsed {
                Some(Some(ino)) => {
                    inos.insert(ino);
                }
                Some(None) => {}
                None => stray.push(PathBuf::from(format!("s3://{}/{key}", self.cfg.bucket))),
            }
        }
        // New content not sent yet is an object too; what is neither a
        // copy nor its record in the cache is a stray (reported, kept).
        for i in 0..=255u8 {
            for e in std::fs::read_dir(self.root.join(format!("{i:02x}")))? {
                let e = e?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                let (stem, ext) = name.split_once('.').unwrap_or((&name, ""));
                let ino = (stem.len() == 16)
                    .then(|| u64::from_str_radix(stem, 16).ok())
                    .flatten()
                    .filter(|ino| ino & 0xff == u64::from(i));
                match (ino, ext) {
                    (Some(ino), "") => {
                        if self.read_record(ino).is_none_or(|r| r.version == 0) {
                            inos.insert(ino);
                        }
                    }
                    (Some(_), "cached" | "fetch" | "cached-tmp") => {}
                    // A partial copy's temp file (`<ino>.<n>.fetch`).
                    (Some(_), e) if e.ends_with(".fetch") => {}
                    _ => stray.push(e.path()),
                }
            }
        }
        Ok((inos.into_iter().collect(), stray))
    }

    fn location(&self, ino: u64) -> String {
        format!("s3://{}/{}", self.cfg.bucket, self.object_dir_key(ino))
    }

    fn read_sidecar(&self, ino: u64) -> Result<Option<Parsed>, SidecarError> {
        match self.get_bytes(&self.sidecar_key(ino))? {
            Some(bytes) => AttrJson::parse(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn write_sidecar(&self, ino: u64, doc: &AttrJson, _when: DirSync) -> io::Result<()> {
        self.refuse_write()?;
        // A put replaces the document whole and is durable when it returns.
        self.put_bytes(&self.sidecar_key(ino), doc.to_json(), PutMode::Overwrite)
    }

    fn remove_sidecar(&self, ino: u64) -> io::Result<()> {
        self.refuse_write()?;
        self.delete_key(&self.sidecar_key(ino))
    }

    fn sidecars(&self) -> Box<dyn Iterator<Item = FoundSidecar> + '_> {
        bump(&self.counters.lists, 1);
        let client = self.client.clone();
        let dir = self.key("objects");
        let prefix = Key::from(dir.as_str());
        let bucket = self.cfg.bucket.clone();
        let found: Result<Vec<FoundSidecar>, object_store::Error> = self.run(async move {
            let mut keys: Vec<String> = client
                .list(Some(&prefix))
                .try_filter_map(|m| {
                    let k = m.location.to_string();
                    async move { Ok(k.ends_with("/attr.json").then_some(k)) }
                })
                .try_collect()
                .await?;
            keys.sort();
            futures_util::stream::iter(keys)
                .map(|k| {
                    let client = client.clone();
                    let bucket = bucket.clone();
                    async move {
                        let bytes = client.get(&Key::from(k.as_str())).await?.bytes().await?;
                        let ino = k
                            .rsplit('/')
                            .nth(1)
                            .filter(|i| i.len() == 16)
                            .and_then(|i| u64::from_str_radix(i, 16).ok());
                        Ok(FoundSidecar {
                            ino,
                            path: PathBuf::from(format!("s3://{bucket}/{k}")),
                            parsed: AttrJson::parse(&bytes),
                        })
                    }
                })
                .buffered(16)
                .try_collect()
                .await
        });
        match found {
            Ok(v) => Box::new(v.into_iter()),
            Err(e) => Box::new(std::iter::once(FoundSidecar {
                ino: None,
                path: PathBuf::from(self.cfg.url()),
                parsed: Err(self.failed("list", &dir, e).into()),
            })),
        }
    }

    fn sweep_temp(&self) -> io::Result<usize> {
        // Puts leave no temp objects; multipart uploads a crash left were
        // aborted at open.
        Ok(0)
    }

    fn sync_all(&self) -> io::Result<()> {
        Ok(())
    }

    fn staging_dir(&self) -> PathBuf {
        self.state_dir.join("import")
    }

    fn space(&self) -> io::Result<Space> {
        Space::of(&self.root)
    }

    fn check_ready(&self) -> io::Result<()> {
        nix::unistd::access(&self.root.join("00"), nix::unistd::AccessFlags::W_OK)
            .map_err(io::Error::from)?;
        self.check_bucket()
    }

    fn identity(&self) -> io::Result<Option<String>> {
        self.stored_identity()
    }

    fn set_identity(&self, id: &str) -> io::Result<()> {
        self.refuse_write()?;
        self.put_bytes(
            &self.identity_key(),
            id.as_bytes().to_vec(),
            PutMode::Overwrite,
        )
    }

    fn is_remote(&self) -> bool {
        true
    }

    fn remote_stats(&self) -> Option<super::RemoteStats> {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let st = self.state.lock();
        Some(super::RemoteStats {
            cache_bytes: st.bytes,
            cache_limit: self.cfg.cache_size,
            cached: st.entries.len() as u64,
            unsent: st.unsent.len() as u64,
            gets: get(&c.gets),
            puts: get(&c.puts),
            lists: get(&c.lists),
            deletes: get(&c.deletes),
            failures: get(&c.failures),
            bytes_fetched: get(&c.fetched),
            bytes_sent: get(&c.sent),
        })
    }

    fn open_partial(&self, ino: u64) -> io::Result<Partial> {
        let _g = self.object_lock(ino);
        let running = self.fills.lock().get(&ino).cloned();
        let got = match running {
            // A follower fetches only the bucket's current version.
            Some(f) if self.read_only() && !self.is_current(ino, f.version.number)? => {
                drop(_g);
                return Ok(Partial {
                    file: self.open_rw(ino)?,
                    filling: None,
                });
            }
            Some(f) => Got::Filling(f),
            None => self.materialise_or_fill(ino)?,
        };
        let (file, filling) = match got {
            Got::Absent => return Err(io::ErrorKind::NotFound.into()),
            Got::Copy => (self.open_copy(ino, !self.read_only())?, None),
            Got::Filling(f) => {
                let mut o = OpenOptions::new();
                o.read(true)
                    .write(true)
                    .custom_flags(libc::O_NOATIME | libc::O_CLOEXEC);
                let file = o.open(&f.tmp)?;
                (file, Some(f as Arc<dyn Filling>))
            }
        };
        self.opened(ino);
        Ok(Partial { file, filling })
    }

    fn warm(&self, ino: u64, for_write: bool) -> io::Result<()> {
        let (_g, found) = self.materialise(ino)?;
        if !found || !for_write || self.read_only() {
            return Ok(());
        }
        let e = self
            .state
            .lock()
            .entries
            .get(&ino)
            .cloned()
            .unwrap_or_default();
        self.mark_writing(ino, &e)
    }

    fn serve_as_writer(&self) -> io::Result<()> {
        self.writable.store(true, Ordering::Relaxed);
        let n = self.abort_leftover_uploads()?;
        if n > 0 {
            tracing::info!(count = n, "aborted multipart uploads left by a crash");
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only() {
            return Ok(());
        }
        match self.send_unsent(true) {
            0 => Ok(()),
            n => Err(io::Error::other(format!(
                "{n} files' changes could not be sent to {}",
                self.cfg.url()
            ))),
        }
    }

    fn recovered(&self) {
        if self.sender.lock().is_none() && !self.read_only() {
            self.start_sender();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::conformance::{self, Faults};

    use crate::blob::moto;

    fn config(server: &moto::S3Server, prefix: &str) -> S3Config {
        S3Config {
            bucket: server.bucket.clone(),
            prefix: prefix.into(),
            endpoint: Some(server.endpoint.clone()),
            region: Some(moto::REGION.into()),
            credentials: Some(Credentials {
                key_id: moto::ACCESS_KEY.into(),
                secret: moto::SECRET_KEY.into(),
                session_token: None,
            }),
            cache_size: DEFAULT_CACHE_SIZE,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            retry_for: DEFAULT_RETRY_FOR,
            sparse_threshold: DEFAULT_SPARSE_THRESHOLD,
            read_only: false,
        }
    }

    #[test]
    fn s3_store_conforms() {
        let server = moto::S3Server::start();
        let cache = tempfile::tempdir().unwrap();
        let store = S3Store::open(config(&server, "conf"), cache.path()).unwrap();
        let damage =
            |ino: u64| server.put(&format!("conf/objects/{ino:016x}/attr.json"), b"{ not json");
        conformance::run(
            store.as_ref(),
            &Faults {
                interrupt_sidecar_write: None,
                damage_sidecar: &damage,
            },
        );
    }

    #[test]
    fn a_completion_may_take_longer_the_larger_the_upload() {
        let r = Duration::from_secs(20);
        assert_eq!(completion_deadline(r, 1 << 20), r);
        // moto took 20 s to assemble 2 GiB here: well inside.
        assert_eq!(completion_deadline(r, 2 << 30), Duration::from_secs(84));
        assert_eq!(completion_deadline(r, 5 << 40), Duration::from_secs(3600));
    }

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(
            S3Config::parse_url("s3://my-bucket/a/b/").unwrap(),
            ("my-bucket".to_string(), "a/b".to_string())
        );
        assert_eq!(
            S3Config::parse_url("s3://my-bucket").unwrap(),
            ("my-bucket".to_string(), String::new())
        );
        for bad in [
            "s3://",
            "s3://A",
            "http://b/x",
            "s3://bucket/../x",
            "s3://ab",
        ] {
            assert!(S3Config::parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions_are_immutable_keys_and_the_old_one_goes_once_recorded() {
        let server = moto::S3Server::start();
        let cache = tempfile::tempdir().unwrap();
        let store = S3Store::open(config(&server, "v"), cache.path()).unwrap();
        let f = store.create_new(7).unwrap();
        f.write_all_at(b"first", 0).unwrap();
        let v1 = store.close(7, &f).unwrap().expect("a first version");
        assert_eq!(v1.superseded, None);
        let keys = server.keys("v/objects/");
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(keys[0].starts_with("v/objects/0000000000000007/0000000000000001."));
        assert!(keys[0].ends_with(&v1.name), "{keys:?} {v1:?}");
        store.version_committed(7, &v1.name, &[]).unwrap();
        let f = store.open_rw(7).unwrap();
        f.write_all_at(b"second", 0).unwrap();
        let v2 = store
            .fsync(7, &f, false)
            .unwrap()
            .expect("a second version");
        assert!(v2.name.starts_with("0000000000000002."), "{v2:?}");
        assert_eq!(v2.superseded.as_deref(), Some(v1.name.as_str()));
        // Unchanged since the fsync: the close sends nothing.
        assert_eq!(store.close(7, &f).unwrap(), None);
        // Both versions stay until the core has recorded the new one.
        let keys = server.keys("v/objects/");
        assert_eq!(keys.len(), 2, "{keys:?}");
        assert_eq!(
            store.current_version(7).unwrap().as_deref(),
            Some(v2.name.as_str())
        );
        store
            .version_committed(7, &v2.name, std::slice::from_ref(&v1.name))
            .unwrap();
        let keys = server.keys("v/objects/");
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(keys[0].ends_with(&v2.name), "{keys:?}");
        assert_eq!(server.get(&keys[0]).unwrap(), b"second");
        // Recorded: nothing is owed at the next start.
        drop(store);
        let store = S3Store::open(config(&server, "v"), cache.path()).unwrap();
        assert_eq!(store.take_versions(), Vec::new());
    }

    #[test]
    fn a_version_sent_but_not_recorded_is_reported_at_the_next_start() {
        let server = moto::S3Server::start();
        let cache = tempfile::tempdir().unwrap();
        let store = S3Store::open(config(&server, "r"), cache.path()).unwrap();
        let f = store.create_new(3).unwrap();
        f.write_all_at(b"content", 0).unwrap();
        let v = store.close(3, &f).unwrap().expect("a version");
        // A crash before the core's commit: the store says so again.
        drop(store);
        let store = S3Store::open(config(&server, "r"), cache.path()).unwrap();
        let reported = store.take_versions();
        assert_eq!(
            reported,
            vec![NewVersion {
                ino: 3,
                name: v.name.clone(),
                superseded: None
            }]
        );
        assert_eq!(store.take_versions(), Vec::new(), "handed out once");
        store.version_committed(3, &v.name, &[]).unwrap();
        drop(store);
        let store = S3Store::open(config(&server, "r"), cache.path()).unwrap();
        assert_eq!(store.take_versions(), Vec::new());
    }

    #[test]
    fn a_lost_cache_refetches_and_a_large_file_goes_in_parts() {
        let server = moto::S3Server::start();
        let cache = tempfile::tempdir().unwrap();
        let mut cfg = config(&server, "big");
        cfg.multipart_threshold = 1 << 20;
        let data: Vec<u8> = (0..(40u32 << 20) / 4)
            .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
            .collect();
        {
            let store = S3Store::open(cfg.clone(), cache.path()).unwrap();
            let f = store.create_new(9).unwrap();
            f.write_all_at(&data, 0).unwrap();
            store.fsync(9, &f, false).unwrap();
            store.close(9, &f).unwrap();
        }
        assert!(server.open_uploads("big").is_empty());
        std::fs::remove_dir_all(cache.path()).unwrap();
        let store = S3Store::open(cfg, cache.path()).unwrap();
        // Found in the bucket alone.
        assert_eq!(store.present(0..100).unwrap(), vec![9]);
        assert_eq!(store.present(10..100).unwrap(), Vec::<u64>::new());
        assert_eq!(store.stat(9).unwrap().unwrap().size, data.len() as u64);
        let f = store.open_read(9).unwrap();
        let mut back = vec![0u8; data.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data, "content differs after a refetch");
    }

    #[test]
    fn a_large_object_not_cached_is_read_while_it_is_fetched() {
        let server = moto::S3Server::start();
        let cache = tempfile::tempdir().unwrap();
        let mut cfg = config(&server, "sp");
        cfg.sparse_threshold = 4 << 20;
        let data: Vec<u8> = (0..(12u32 << 20) / 4)
            .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
            .collect();
        let len = data.len() as u64;
        for (ino, bytes) in [(5u64, &data[..]), (6, &data[..1 << 20])] {
            let store = S3Store::open(cfg.clone(), cache.path()).unwrap();
            let f = store.create_new(ino).unwrap();
            f.write_all_at(bytes, 0).unwrap();
            store.close(ino, &f).unwrap();
        }
        let mtime = S3Store::open(cfg.clone(), cache.path())
            .unwrap()
            .stat(5)
            .unwrap()
            .unwrap()
            .mtime;
        std::fs::remove_dir_all(cache.path()).unwrap();
        let store = S3Store::open(cfg, cache.path()).unwrap();
        // Below the threshold: whole at open, as `open_rw`.
        assert!(store.open_partial(6).unwrap().filling.is_none());
        let p = store.open_partial(5).unwrap();
        let fill = p.filling.clone().expect("a partial copy");
        assert_eq!(fill.figures().size, len);
        assert_eq!(fill.figures().mtime, mtime);
        // The tail, then the head, each once its bytes are there.
        fill.wait(len - 100..len).unwrap();
        let mut tail = vec![0u8; 100];
        p.file.read_exact_at(&mut tail, len - 100).unwrap();
        assert!(tail == data[data.len() - 100..]);
        fill.wait(0..4096).unwrap();
        let mut head = vec![0u8; 4096];
        p.file.read_exact_at(&mut head, 0).unwrap();
        assert!(head == data[..4096]);
        // The object's figures are the version's; a send sends nothing.
        let st = store.stat(5).unwrap().unwrap();
        assert_eq!((st.size, st.mtime), (len, mtime));
        store.fsync(5, &p.file, false).unwrap();
        // Whoever opens the object itself waits for the whole copy.
        let whole = store.open_read(5).unwrap();
        assert!(fill.whole());
        let mut back = vec![0u8; data.len()];
        whole.read_exact_at(&mut back, 0).unwrap();
        assert!(back == data, "the copy differs");
        store.close(5, &p.file).unwrap();
        let keys: Vec<String> = server
            .keys("sp/objects/0000000000000005/")
            .into_iter()
            .filter(|k| !k.ends_with("attr.json"))
            .collect();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(keys[0].contains("/0000000000000001."), "{keys:?}");
        // Recorded clean: a new store serves it without fetching.
        drop((p, whole, store));
        let store = S3Store::open(config(&server, "sp"), cache.path()).unwrap();
        assert!(store.open_partial(5).unwrap().filling.is_none());
        assert_eq!(store.remote_stats().unwrap().bytes_fetched, 0);
    }

    #[test]
    fn eviction_keeps_the_cache_bounded_and_never_loses_content() {
        let server = moto::S3Server::start();
        let cache = tempfile::tempdir().unwrap();
        let mut cfg = config(&server, "ev");
        cfg.cache_size = 64 << 10;
        let store = S3Store::open(cfg, cache.path()).unwrap();
        for ino in 1..=8u64 {
            let f = store.create_new(ino).unwrap();
            f.write_all_at(&vec![ino as u8; 32 << 10], 0).unwrap();
            store.close(ino, &f).unwrap();
        }
        assert!(store.state.lock().bytes <= 64 << 10);
        let present = (1..=8u64).filter(|i| store.copy_path(*i).exists()).count();
        assert!(present <= 2, "{present} copies kept");
        for ino in 1..=8u64 {
            let f = store.open_read(ino).unwrap();
            let mut b = vec![0u8; 32 << 10];
            f.read_exact_at(&mut b, 0).unwrap();
            assert!(b.iter().all(|x| *x == ino as u8), "object {ino}");
        }
    }

    /// A copy a shared mapping still writes (its descriptor closed) stays
    /// in the cache however full it is; evicted once the mapping goes.
    #[test]
    fn a_copy_still_mapped_for_writing_is_never_evicted() {
        let server = moto::S3Server::start();
        let cache = tempfile::tempdir().unwrap();
        let mut cfg = config(&server, "map");
        cfg.cache_size = 64 << 10;
        let store = S3Store::open(cfg, cache.path()).unwrap();
        let f = store.create_new(1).unwrap();
        f.write_all_at(&[1u8; 32 << 10], 0).unwrap();
        store.close(1, &f).unwrap();
        drop(f);
        let rw = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(store.copy_path(1))
            .unwrap();
        let map = crate::blob::lease::TestMap::of(&rw, 4096);
        drop(rw);
        let fill = |from: u64| {
            for ino in from..from + 4 {
                let f = store.create_new(ino).unwrap();
                f.write_all_at(&vec![ino as u8; 32 << 10], 0).unwrap();
                store.close(ino, &f).unwrap();
            }
        };
        fill(2);
        assert!(store.copy_path(1).exists(), "a mapped copy was evicted");
        drop(map);
        fill(6);
        assert!(!store.copy_path(1).exists(), "kept once the mapping went");
    }
}
