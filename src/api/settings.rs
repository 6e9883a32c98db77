//! Settings of the HTTP door: plain data with defaults ([`ApiConfig`],
//! [`Limits`]) and the `artfs mount` flags that fill them ([`ApiArgs`]):
//! those the config file's `[api]` may also give are laid over it
//! ([`ApiArgs::merge`], as every other section), the rest come from the
//! command line and the environment only.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use super::element::Element;
use crate::auth::{AuthConfig, KeySource};
use crate::config::over;

/// Name `/api/v1/info` reports unless told otherwise.
pub const DEFAULT_NAME: &str = "artfs";

/// Limits protecting the daemon from large or slow requests.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest upload body, in bytes (413 beyond).
    pub max_upload: u64,
    /// Uploads running at once; more are refused with 503 and Retry-After.
    pub max_concurrent_uploads: usize,
    /// Requests handled at once; more wait their turn.
    pub max_in_flight: usize,
    /// Room for the request line and headers, in bytes (431 beyond);
    /// at least 8 KiB.
    pub max_header_bytes: usize,
    /// Time a client has to send the request line and headers.
    pub header_timeout: Duration,
    /// Longest pause allowed between two pieces of an upload body.
    pub body_idle_timeout: Duration,
    /// Largest page of a directory listing.
    pub max_list_page: usize,
    /// Uploads one token subject may run at once (503 beyond), so one
    /// client cannot take every upload slot; by default half of them.
    pub max_uploads_per_subject: usize,
    /// Slowest upload body accepted, in bytes a second, judged over each
    /// `min_upload_window` (408 below it); 0: no minimum.
    pub min_upload_rate: u64,
    pub min_upload_window: Duration,
    /// Connections served at once; more wait in the kernel's listen queue.
    /// `None`: a quarter of the open file limit, at least 64, leaving
    /// [`FD_RESERVE`] descriptors for the mount (see [`connection_cap`]).
    pub max_connections: Option<usize>,
}

impl Limits {
    /// How long a connection may sit with no request before it is closed:
    /// the time a client has to send its headers (HTTP/1 already closes an
    /// idle keep-alive connection then; this covers HTTP/2 too).
    pub fn idle_timeout(&self) -> Duration {
        self.header_timeout
    }
}

/// Descriptors kept out of the API's reach for the FUSE door, the writer,
/// SQLite, the log and the objects of open files.
pub const FD_RESERVE: usize = 128;

/// The connection cap for a process whose open file limit is `fd_limit`:
/// `wanted` if given, else a quarter of the limit, at least 64; never more
/// than the limit minus [`FD_RESERVE`]. Err when `wanted` leaves too little.
pub fn connection_cap(wanted: Option<usize>, fd_limit: usize) -> anyhow::Result<usize> {
    let room = fd_limit.saturating_sub(FD_RESERVE).max(1);
    match wanted {
        Some(0) => bail!("--api-max-connections must be at least 1"),
        Some(n) if n > room => bail!(
            "--api-max-connections {n} leaves too few file descriptors for the mount: \
             the open file limit is {fd_limit} and {FD_RESERVE} are kept for the mount, \
             so at most {room} (raise the hard limit, e.g. LimitNOFILE=, or lower the cap)"
        ),
        Some(n) => Ok(n),
        None => Ok((fd_limit / 4).max(64).min(room)),
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_upload: 64 << 30,
            max_concurrent_uploads: 16,
            max_in_flight: 512,
            max_header_bytes: 16 << 10,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(60),
            max_list_page: 10_000,
            max_uploads_per_subject: 8,
            min_upload_rate: 1024,
            min_upload_window: Duration::from_secs(30),
            max_connections: None,
        }
    }
}

/// Everything the HTTP door needs to start.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub addr: SocketAddr,
    pub auth: AuthConfig,
    /// Certificate chain and private key (PEM) to serve HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Allow plain HTTP on an address other than loopback.
    pub insecure_public: bool,
    /// POSIX identity of user and operator tokens (admin tokens act as
    /// root); default `server::api_identity`.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Name reported by `/api/v1/info`.
    pub name: String,
    /// What the original's clients see of this element; default
    /// `Element::named(name)`.
    pub element: Option<Element>,
    /// Permission bits of uploaded files and of directories made by `?mkdir`.
    pub file_mode: u32,
    pub dir_mode: u32,
    pub limits: Limits,
    /// A file holding the secret `/metrics` asks for; `None`: open.
    pub metrics_token_file: Option<PathBuf>,
    /// The Redis registry `/api/v1/cluster` lists (`--redis`).
    pub redis: Option<redis::Client>,
}

impl ApiConfig {
    /// A configuration with defaults: no TLS, loopback only, the default
    /// identity (`server::api_identity`).
    pub fn new(addr: SocketAddr, key: KeySource) -> ApiConfig {
        ApiConfig {
            addr,
            auth: AuthConfig::new(key),
            tls: None,
            insecure_public: false,
            uid: None,
            gid: None,
            name: DEFAULT_NAME.to_string(),
            element: None,
            file_mode: 0o644,
            dir_mode: 0o755,
            limits: Limits::default(),
            metrics_token_file: None,
            redis: None,
        }
    }

    /// Refuse what must not start: plain HTTP on a public address unless
    /// explicitly allowed.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.tls.is_none() && !self.addr.ip().is_loopback() && !self.insecure_public {
            bail!(
                "refusing to serve plain HTTP on {} (not a loopback address): give \
                 --tls-cert and --tls-key, or --api-insecure-public",
                self.addr
            );
        }
        if self.limits.max_header_bytes < 8192 {
            bail!("--api-max-header-bytes must be at least 8192");
        }
        Ok(())
    }
}

/// The HTTP door's flags of `artfs mount`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ApiArgs {
    /// Serve the HTTP API on this address (e.g. 127.0.0.1:8080). Needs
    /// --jwt-key or --jwks. Plain HTTP is served on loopback only unless
    /// --api-insecure-public; use --tls-cert/--tls-key otherwise.
    #[arg(long = "api", env = "ARTFS_API", value_name = "ADDR")]
    pub addr: Option<String>,
    /// Public key (PEM: RSA, EC P-256 or Ed25519) verifying bearer tokens.
    /// Reloaded on SIGHUP.
    #[arg(
        long,
        env = "ARTFS_JWT_KEY",
        value_name = "PEM",
        conflicts_with = "jwks"
    )]
    pub jwt_key: Option<PathBuf>,
    /// JWKS document verifying bearer tokens (keys chosen by `kid`).
    #[arg(long, env = "ARTFS_JWKS", value_name = "FILE")]
    pub jwks: Option<PathBuf>,
    /// Required `iss` claim.
    #[arg(long, env = "ARTFS_JWT_ISSUER", value_name = "S")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "ARTFS_JWT_AUDIENCE", value_name = "S")]
    pub jwt_audience: Option<String>,
    /// Certificate chain (PEM) to serve HTTPS; reloaded on SIGHUP.
    #[arg(long, env = "ARTFS_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "ARTFS_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address.
    #[arg(long, env = "ARTFS_API_INSECURE_PUBLIC")]
    pub api_insecure_public: bool,
    /// uid user and operator tokens act as (admin tokens act as root;
    /// 0 makes every token act as root) [default: the root directory's
    /// owner if not root, else nobody (65534)].
    #[arg(long, env = "ARTFS_API_UID")]
    pub api_uid: Option<u32>,
    /// gid user and operator tokens act as [default: --api-uid's primary
    /// group, else the root directory's group if its owner is not root,
    /// else 65534].
    #[arg(long, env = "ARTFS_API_GID")]
    pub api_gid: Option<u32>,
    /// Name reported by /api/v1/info.
    #[arg(long, env = "ARTFS_API_NAME", default_value = DEFAULT_NAME)]
    pub api_name: String,
    /// The element's service-discovery id: `element_id` in /api/v1/info,
    /// `storage_id` in /api/v1/capacity [default: --api-name].
    #[arg(long, env = "ARTFS_API_ELEMENT_ID", value_name = "ID")]
    pub api_element_id: Option<String>,
    /// The element's name for people (`display_name` in /api/v1/info)
    /// [default: --api-name].
    #[arg(long, env = "ARTFS_API_DISPLAY_NAME", value_name = "S")]
    pub api_display_name: Option<String>,
    /// The element's priority among its peers, lower fills first
    /// (`priority` in /api/v1/info) [default: 100].
    #[arg(long, env = "ARTFS_API_PRIORITY", value_name = "N")]
    pub api_priority: Option<i64>,
    /// The element's location label, e.g. a datacenter (`location` in
    /// /api/v1/capacity) [default: default].
    #[arg(long, env = "ARTFS_API_LOCATION", value_name = "S")]
    pub api_location: Option<String>,
    /// Largest upload, in bytes.
    #[arg(long, env = "ARTFS_API_MAX_UPLOAD", default_value_t = Limits::default().max_upload)]
    pub api_max_upload: u64,
    /// Uploads running at once (more get 503).
    #[arg(long, env = "ARTFS_API_MAX_UPLOADS", default_value_t = Limits::default().max_concurrent_uploads)]
    pub api_max_uploads: usize,
    /// Room for request line and headers, in bytes (at least 8192).
    #[arg(long, env = "ARTFS_API_MAX_HEADER_BYTES", default_value_t = Limits::default().max_header_bytes)]
    pub api_max_header_bytes: usize,
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "ARTFS_API_HEADER_TIMEOUT", default_value_t = Limits::default().header_timeout.as_secs())]
    pub api_header_timeout: u64,
    /// Longest pause, in seconds, between pieces of an upload body.
    #[arg(long, env = "ARTFS_API_BODY_TIMEOUT", default_value_t = Limits::default().body_idle_timeout.as_secs())]
    pub api_body_timeout: u64,
    /// Uploads one token subject may run at once (more get 503)
    /// [default: half of --api-max-uploads].
    #[arg(long, env = "ARTFS_API_MAX_UPLOADS_PER_SUBJECT")]
    pub api_max_uploads_per_subject: Option<usize>,
    /// Slowest upload accepted, in bytes a second over each
    /// --api-min-upload-window (408 below it); 0: no minimum.
    #[arg(long, env = "ARTFS_API_MIN_UPLOAD_RATE", default_value_t = Limits::default().min_upload_rate)]
    pub api_min_upload_rate: u64,
    /// Seconds over which --api-min-upload-rate is judged.
    #[arg(long, env = "ARTFS_API_MIN_UPLOAD_WINDOW", default_value_t = Limits::default().min_upload_window.as_secs())]
    pub api_min_upload_window: u64,
    /// Connections served at once; more wait in the listen queue
    /// [default: a quarter of the open file limit, at least 64, leaving 128
    /// descriptors for the mount].
    #[arg(long, env = "ARTFS_API_MAX_CONNECTIONS")]
    pub api_max_connections: Option<usize>,
    /// File holding a secret that GET /metrics must present as a bearer
    /// token [default: /metrics needs no token].
    #[arg(long, env = "ARTFS_METRICS_TOKEN_FILE", value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
}

impl ApiArgs {
    /// The command line and environment laid over the file's `[api]`: one
    /// line per setting the file may also give.
    pub fn merge(&self, file: &mut crate::config::ApiConfig) {
        over(&mut file.listen, self.addr.clone().map(Some));
        over(&mut file.jwt_key, self.jwt_key.clone().map(Some));
        over(&mut file.jwks, self.jwks.clone().map(Some));
        over(&mut file.jwt_issuer, self.jwt_issuer.clone().map(Some));
        over(&mut file.jwt_audience, self.jwt_audience.clone().map(Some));
        over(&mut file.tls_cert, self.tls_cert.clone().map(Some));
        over(&mut file.tls_key, self.tls_key.clone().map(Some));
        // A plain flag: given, it says yes; absent, the file decides.
        over(
            &mut file.insecure_public,
            self.api_insecure_public.then_some(true),
        );
        over(
            &mut file.metrics_token_file,
            self.metrics_token_file.clone().map(Some),
        );
        over(&mut file.element_id, self.api_element_id.clone().map(Some));
        over(
            &mut file.display_name,
            self.api_display_name.clone().map(Some),
        );
        over(&mut file.priority, self.api_priority.map(Some));
        over(&mut file.location, self.api_location.clone().map(Some));
    }

    /// The configuration from these flags alone (no config file).
    pub fn config(&self) -> anyhow::Result<Option<ApiConfig>> {
        let mut api = crate::config::ApiConfig::default();
        self.merge(&mut api);
        self.settings(&api)
    }

    /// The configuration from the merged `[api]` and the settings only
    /// flags give, or `None` when no address to listen on is given. Fails
    /// when the API is asked for without a verification key, or on a
    /// public address without TLS.
    pub fn settings(&self, api: &crate::config::ApiConfig) -> anyhow::Result<Option<ApiConfig>> {
        let Some(addr) = &api.listen else {
            return Ok(None);
        };
        let addr: SocketAddr = match addr.parse() {
            Ok(a) => a,
            Err(_) => addr
                .to_socket_addrs()
                .with_context(|| format!("--api {addr}: not an address"))?
                .next()
                .with_context(|| format!("--api {addr}: resolves to no address"))?,
        };
        let key = match (&api.jwt_key, &api.jwks) {
            (Some(p), _) => KeySource::Pem(p.clone()),
            (None, Some(p)) => KeySource::Jwks(p.clone()),
            (None, None) => {
                bail!("--api needs a token verification key: give --jwt-key PEM or --jwks FILE")
            }
        };
        let mut c = ApiConfig::new(addr, key);
        c.auth.issuer = api.jwt_issuer.clone();
        c.auth.audience = api.jwt_audience.clone();
        c.tls = api.tls_cert.clone().zip(api.tls_key.clone());
        c.insecure_public = api.insecure_public;
        c.uid = self.api_uid;
        c.gid = self.api_gid;
        c.name = self.api_name.clone();
        let named = Element::named(&c.name);
        let element = Element {
            element_id: api.element_id.clone().unwrap_or(named.element_id),
            display_name: api.display_name.clone().unwrap_or(named.display_name),
            priority: api.priority.unwrap_or(named.priority),
            location: api.location.clone().unwrap_or(named.location),
            storage_type: named.storage_type,
        };
        if let Err(e) = element.check() {
            bail!("{e}");
        }
        c.element = Some(element);
        c.limits.max_upload = self.api_max_upload;
        c.limits.max_concurrent_uploads = self.api_max_uploads.max(1);
        c.limits.max_header_bytes = self.api_max_header_bytes;
        c.limits.header_timeout = Duration::from_secs(self.api_header_timeout.max(1));
        c.limits.body_idle_timeout = Duration::from_secs(self.api_body_timeout.max(1));
        c.limits.max_uploads_per_subject = self
            .api_max_uploads_per_subject
            .unwrap_or(c.limits.max_concurrent_uploads / 2)
            .clamp(1, c.limits.max_concurrent_uploads);
        c.limits.min_upload_rate = self.api_min_upload_rate;
        c.limits.min_upload_window = Duration::from_secs(self.api_min_upload_window.max(1));
        c.limits.max_connections = self.api_max_connections;
        c.metrics_token_file = api.metrics_token_file.clone();
        c.validate()?;
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn args(addr: &str) -> ApiArgs {
        ApiArgs {
            addr: Some(addr.into()),
            jwt_key: Some("/k.pub".into()),
            api_name: DEFAULT_NAME.into(),
            api_max_header_bytes: 16384,
            api_min_upload_window: 30,
            ..ApiArgs::default()
        }
    }

    #[test]
    fn no_api_without_flag_and_no_api_without_key() {
        assert!(ApiArgs::default().config().unwrap().is_none());
        let mut a = args("127.0.0.1:0");
        a.jwt_key = None;
        assert!(a.config().unwrap_err().to_string().contains("--jwt-key"));
    }

    #[test]
    fn flags_over_the_file_over_the_defaults() {
        let mut file = crate::config::ApiConfig {
            listen: Some("127.0.0.1:1".into()),
            jwks: Some("/file.jwks".into()),
            jwt_issuer: Some("file-iss".into()),
            insecure_public: true,
            ..Default::default()
        };
        let mut a = args("127.0.0.2:2");
        a.jwt_key = None;
        a.jwt_issuer = Some("flag-iss".into());
        a.merge(&mut file);
        assert_eq!(file.listen.as_deref(), Some("127.0.0.2:2"));
        assert_eq!(file.jwt_issuer.as_deref(), Some("flag-iss"));
        assert_eq!(file.jwks.as_deref(), Some(Path::new("/file.jwks")));
        // An absent plain flag leaves the file's yes.
        assert!(file.insecure_public);
        let c = a.settings(&file).unwrap().unwrap();
        assert!(matches!(c.auth.key, KeySource::Jwks(_)));
        assert_eq!(c.auth.issuer.as_deref(), Some("flag-iss"));
        assert!(c.insecure_public);
        assert_eq!(c.name, DEFAULT_NAME);
        assert_eq!(c.element, Some(Element::named(DEFAULT_NAME)));
        // Nothing to listen on: no API.
        let none = crate::config::ApiConfig::default();
        assert!(ApiArgs::default().settings(&none).unwrap().is_none());
    }

    #[test]
    fn element_knobs_come_from_flags_over_the_file_else_the_name() {
        let mut file = crate::config::ApiConfig {
            listen: Some("127.0.0.1:1".into()),
            jwt_key: Some("/k.pub".into()),
            element_id: Some("se-file".into()),
            priority: Some(7),
            location: Some("dc-file".into()),
            ..Default::default()
        };
        let a = ApiArgs {
            api_name: "se01".into(),
            api_location: Some("dc-flag".into()),
            ..args("127.0.0.1:1")
        };
        a.merge(&mut file);
        let e = a.settings(&file).unwrap().unwrap().element.unwrap();
        assert_eq!(e.element_id, "se-file");
        assert_eq!(e.display_name, "se01", "the name when not given");
        assert_eq!(e.priority, 7);
        assert_eq!(e.location, "dc-flag");
        assert_eq!(e.storage_type, "local");
        // A knob no client could use fails the start, naming it.
        let bad = ApiArgs {
            api_priority: Some(-1),
            ..args("127.0.0.1:1")
        };
        let mut file = crate::config::ApiConfig::default();
        bad.merge(&mut file);
        let err = bad.settings(&file).unwrap_err().to_string();
        assert!(err.contains("--api-priority"), "{err}");
    }

    #[test]
    fn connection_cap_leaves_the_mount_its_descriptors() {
        assert_eq!(connection_cap(None, 1024).unwrap(), 256);
        assert_eq!(connection_cap(None, 256).unwrap(), 64);
        assert_eq!(connection_cap(None, 160).unwrap(), 32);
        assert_eq!(connection_cap(None, 1 << 20).unwrap(), 1 << 18);
        assert_eq!(connection_cap(Some(100), 1024).unwrap(), 100);
        let e = connection_cap(Some(1000), 1024).unwrap_err().to_string();
        assert!(e.contains("at most 896"), "{e}");
        assert!(connection_cap(Some(0), 1024).is_err());
    }

    #[test]
    fn one_subject_gets_half_the_upload_slots_by_default() {
        let mut a = args("127.0.0.1:0");
        a.api_max_uploads = 16;
        assert_eq!(
            a.config().unwrap().unwrap().limits.max_uploads_per_subject,
            8
        );
        a.api_max_uploads = 1;
        assert_eq!(
            a.config().unwrap().unwrap().limits.max_uploads_per_subject,
            1
        );
        a.api_max_uploads_per_subject = Some(3);
        assert_eq!(
            a.config().unwrap().unwrap().limits.max_uploads_per_subject,
            1
        );
        a.api_max_uploads = 16;
        assert_eq!(
            a.config().unwrap().unwrap().limits.max_uploads_per_subject,
            3
        );
    }

    #[test]
    fn plain_http_is_loopback_only() {
        assert!(args("127.0.0.1:8080").config().unwrap().is_some());
        assert!(args("[::1]:8080").config().unwrap().is_some());
        assert!(args("0.0.0.0:8080").config().is_err());
        let mut a = args("0.0.0.0:8080");
        a.api_insecure_public = true;
        assert!(a.config().unwrap().is_some());
        let mut a = args("0.0.0.0:8080");
        a.tls_cert = Some("/c.pem".into());
        a.tls_key = Some("/k.pem".into());
        assert!(a.config().unwrap().is_some());
    }
}
