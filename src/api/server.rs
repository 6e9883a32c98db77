//! Starting and stopping the HTTP door: bind (before the mount appears, so
//! a bad address or key fails the start), plain HTTP or TLS (rustls),
//! connection limits and timeouts, SIGHUP to reload keys and certificates.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::settings::{connection_cap, ApiConfig, Limits};
use super::{connections::Capped, metrics::Metrics, router, Inner};
use crate::auth::Verifier;
use crate::core::Fs;
use crate::types::{Caller, ROOT_INO};
use anyhow::Context;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use hyper_util::server::conn::auto::Builder;

/// A running HTTP door.
pub struct ApiServer {
    handle: axum_server::Handle<SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    rt: tokio::runtime::Handle,
    local_addr: SocketAddr,
}

impl ApiServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stop accepting, give requests in flight a few seconds, then close.
    /// Call from outside the runtime (the daemon's main thread).
    pub fn shutdown(self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(5)));
        let task = self.task;
        let r = self
            .rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), task).await });
        match r {
            Ok(Ok(Ok(()))) => tracing::info!("HTTP API stopped"),
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP API ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP API task failed"),
            Err(_) => tracing::warn!("HTTP API did not stop in time"),
        }
    }
}

fn configure(builder: &mut Builder<hyper_util::rt::TokioExecutor>, limits: &Limits) {
    builder
        .http1()
        // The head's own limit is checked in `head` (a larger read
        // buffer makes uploads cheaper).
        .max_buf_size(limits.max_header_bytes.max(super::head::READ_BUFFER))
        .header_read_timeout(Some(limits.header_timeout));
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_frame_size(H2_MAX_FRAME);
}

/// HTTP/2 flow-control windows: how much a client may send ahead of what
/// the door has taken in. An upload over HTTP/2 runs at most one window
/// per round trip; hyper's 1 MiB gave 18 MB/s at a 50 ms round trip
/// (HTTP/1.1, on TCP's own window, 250 MB/s), 8 MiB gives 100 MB/s.
/// Credit, not buffers: the door takes a body in as it comes, so what
/// waits in memory is a window's worth only while a handler is held up.
const H2_STREAM_WINDOW: u32 = 8 << 20;
/// Shared by a connection's streams (several uploads on one connection).
const H2_CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest frame a client may send (the protocol's default is 16 KiB).
/// Clients that send frames as large as allowed (Go's, Python's h2) then
/// cost the door a quarter less CPU per uploaded GiB: 2.0-3.1 CPU-s with
/// 16 KiB frames, 1.35-1.75 with 256 KiB, over TLS. As large as an
/// HTTP/1.1 read.
const H2_MAX_FRAME: u32 = super::head::READ_BUFFER as u32;

/// Start the HTTP door on `rt`. Fails (nothing started) without a usable
/// verification key or certificate, or when the address cannot be bound.
/// Call from outside the runtime.
pub fn start(
    fs: Arc<Fs>,
    cfg: ApiConfig,
    rt: &tokio::runtime::Handle,
) -> anyhow::Result<ApiServer> {
    cfg.validate()?;
    let verifier = Arc::new(
        Verifier::new(cfg.auth.clone()).context("the HTTP API needs a usable verification key")?,
    );
    let root = fs
        .getattr(ROOT_INO)
        .context("cannot read the root directory")?;
    let (uid, gid) = api_identity(cfg.uid, cfg.gid, (root.inode.uid, root.inode.gid));
    let caller = identity(uid, gid);
    // An admin token acts as root; `--api-uid 0` makes every token do so.
    let admin_caller = identity(0, 0);
    let tls = match &cfg.tls {
        Some((cert, key)) => {
            // One crypto provider in this build (ring); make it the default.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Some(
                rt.block_on(RustlsConfig::from_pem_file(cert, key))
                    .with_context(|| {
                        format!(
                            "cannot load TLS certificate {} and key {}",
                            cert.display(),
                            key.display()
                        )
                    })?,
            )
        }
        None => None,
    };
    let metrics_token = metrics_token(cfg.metrics_token_file.as_deref())?;
    let max_connections = connection_cap(cfg.limits.max_connections, open_file_limit())?;
    let listener = std::net::TcpListener::bind(cfg.addr)
        .with_context(|| format!("cannot listen on {}", cfg.addr))?;
    let local_addr = listener.local_addr()?;
    let limits = cfg.limits.clone();
    let state = Arc::new(Inner {
        fs,
        verifier: verifier.clone(),
        caller: caller.clone(),
        admin_caller,
        name: cfg.name.clone(),
        uploads: super::uploads::Uploads::new(&limits),
        limits: limits.clone(),
        metrics: Arc::new(Metrics::with_token(metrics_token.as_deref())),
        file_mode: cfg.file_mode,
        dir_mode: cfg.dir_mode,
        jobs: Default::default(),
        element: cfg
            .element
            .clone()
            .unwrap_or_else(|| super::element::Element::named(&cfg.name)),
        redis: cfg.redis.clone(),
    });
    // At most `max_connections` at once: the accept loop waits for a free
    // slot, so more wait in the kernel's listen queue, holding no
    // descriptor of ours.
    let app = Capped::new(router(state), max_connections, limits.idle_timeout());
    let handle = axum_server::Handle::new();
    let _enter = rt.enter();
    // TCP_NODELAY on every accepted connection, plain or TLS: a response
    // leaves as headers then body (two writes); with Nagle on, the second
    // waits for the client's delayed ACK (~40 ms) on a reused connection.
    let task = match &tls {
        Some(tls) => {
            let acceptor = RustlsAcceptor::new(tls.clone()).acceptor(NoDelayAcceptor::new());
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(acceptor)
                .handle(handle.clone())
                .first_request_timeout(limits.header_timeout);
            configure(server.http_builder(), &limits);
            rt.spawn(server.serve(app))
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?
                .acceptor(NoDelayAcceptor::new())
                .handle(handle.clone())
                .first_request_timeout(limits.header_timeout);
            configure(server.http_builder(), &limits);
            rt.spawn(server.serve(app))
        }
    };
    spawn_reloader(rt, verifier, tls.zip(cfg.tls.clone()))?;
    tracing::info!(
        addr = %local_addr,
        tls = cfg.tls.is_some(),
        uid = caller.uid,
        gid = caller.gid,
        max_connections,
        metrics_token = metrics_token.is_some(),
        "HTTP API listening (user and operator tokens act as uid:gid, admin tokens as root)"
    );
    Ok(ApiServer {
        handle,
        task,
        rt: rt.clone(),
        local_addr,
    })
}

/// The soft limit on open files (raised to the hard one at start).
fn open_file_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a plain syscall filling a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// The secret `/metrics` asks for: the content of `file` (one line; the
/// newline is not part of it), else `ARTFS_METRICS_TOKEN`; none: open.
/// Never logged.
fn metrics_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<u8>>> {
    let secret = match file {
        Some(f) => {
            let text = std::fs::read(f)
                .with_context(|| format!("cannot read the metrics token file {}", f.display()))?;
            let end = text
                .iter()
                .rposition(|b| !b.is_ascii_whitespace())
                .map_or(0, |i| i + 1);
            text[..end].to_vec()
        }
        None => match std::env::var_os("ARTFS_METRICS_TOKEN") {
            Some(v) if !v.is_empty() => v.into_encoded_bytes(),
            _ => return Ok(None),
        },
    };
    if secret.len() < 16 || secret.iter().any(|b| !b.is_ascii_graphic()) {
        anyhow::bail!("the metrics token must be at least 16 printable characters without spaces");
    }
    Ok(Some(secret))
}

/// SIGHUP: reload the token verification keys and the TLS certificate.
/// A bad new file is logged and the old one stays in use.
fn spawn_reloader(
    rt: &tokio::runtime::Handle,
    verifier: Arc<Verifier>,
    tls: Option<(RustlsConfig, (std::path::PathBuf, std::path::PathBuf))>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _enter = rt.enter();
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    rt.spawn(async move {
        while hup.recv().await.is_some() {
            let v = verifier.clone();
            match tokio::task::spawn_blocking(move || v.reload()).await {
                Ok(Ok(())) => tracing::info!("SIGHUP: token verification keys reloaded"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "SIGHUP: keys not reloaded; the old ones stay")
                }
                Err(e) => tracing::warn!(error = %e, "SIGHUP: key reload failed"),
            }
            if let Some((config, (cert, key))) = &tls {
                match config.reload_from_pem_file(cert, key).await {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::warn!(error = %e,
                        "SIGHUP: TLS certificate not reloaded; the old one stays"),
                }
            }
        }
    });
    Ok(())
}

/// The uid and gid `user` and `operator` tokens act as (docs/AUTH.md,
/// "Identity"): `--api-uid`/`--api-gid` when given; else the owner of the
/// root directory when that is not root (a store run by one user); else
/// the unprivileged `nobody` (65534:65534), so a token passes no POSIX
/// check that the world would not. Without `--api-gid`, the group is the
/// primary group of `--api-uid` (its own number when it has no entry).
pub fn api_identity(uid: Option<u32>, gid: Option<u32>, root_owner: (u32, u32)) -> (u32, u32) {
    const NOBODY: u32 = 65534;
    match (uid, gid) {
        (Some(u), Some(g)) => (u, g),
        (Some(u), None) => {
            let g = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(u))
                .ok()
                .flatten()
                .map_or(u, |e| e.gid.as_raw());
            (u, g)
        }
        (None, g) if root_owner.0 != 0 => (root_owner.0, g.unwrap_or(root_owner.1)),
        (None, g) => (NOBODY, g.unwrap_or(NOBODY)),
    }
}

fn identity(uid: u32, gid: u32) -> Caller {
    Caller {
        uid,
        gid,
        pid: 0,
        subject: None,
        groups: Some(supplementary_groups(uid, gid).into()),
        grants: None,
    }
}

/// The groups of the user with this uid (from the system's user and group
/// databases), as a login would have them; just `gid` for a uid with no
/// user entry.
fn supplementary_groups(uid: u32, gid: u32) -> Vec<u32> {
    use nix::unistd::{getgrouplist, Gid, Uid, User};
    let groups = User::from_uid(Uid::from_raw(uid))
        .ok()
        .flatten()
        .and_then(|u| std::ffi::CString::new(u.name).ok())
        .and_then(|name| getgrouplist(&name, Gid::from_raw(gid)).ok());
    match groups {
        Some(g) => g.into_iter().map(Gid::as_raw).collect(),
        None => vec![gid],
    }
}

#[cfg(test)]
mod tests {
    use super::{api_identity, metrics_token};

    #[test]
    fn metrics_token_file_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "0123456789abcdef-secret\n").unwrap();
        assert_eq!(
            metrics_token(Some(&f)).unwrap().unwrap(),
            b"0123456789abcdef-secret"
        );
        for bad in ["short\n", "0123456789 abcdef spaces\n", "\n"] {
            std::fs::write(&f, bad).unwrap();
            let e = metrics_token(Some(&f)).unwrap_err().to_string();
            assert!(e.contains("at least 16"), "{e}");
            assert!(!e.contains(bad.trim()) || bad.trim().is_empty(), "{e}");
        }
        let e = metrics_token(Some(&dir.path().join("none"))).unwrap_err();
        assert!(e.to_string().contains("cannot read the metrics token file"));
    }

    #[test]
    fn the_default_identity_is_least_privilege() {
        // A root-owned store: nobody, unless told otherwise.
        assert_eq!(api_identity(None, None, (0, 0)), (65534, 65534));
        assert_eq!(api_identity(None, Some(100), (0, 0)), (65534, 100));
        // A store run by one user: that user, as before.
        assert_eq!(api_identity(None, None, (1000, 100)), (1000, 100));
        // Given: as given; without a gid, the uid's primary group.
        assert_eq!(api_identity(Some(0), None, (1000, 100)), (0, 0));
        assert_eq!(api_identity(Some(7), Some(8), (0, 0)), (7, 8));
        assert_eq!(
            api_identity(Some(987_654), None, (0, 0)),
            (987_654, 987_654)
        );
    }
}
