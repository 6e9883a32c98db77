//! How many connections the HTTP door serves at once, and how long one
//! may sit idle. Every connection holds a file descriptor, and the mount
//! needs descriptors too (objects of open files, the database, the log):
//! past the cap the accept loop waits, so further clients queue in the
//! kernel's listen queue and cost the daemon nothing.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::http::{Method, Response};
use axum::Router;
use axum_server::ConnectionShutdown;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::Service;

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Makes one [`Conn`] per accepted connection, each holding a slot of the
/// cap; not ready (so the server accepts nothing) while all are taken.
pub struct Capped {
    router: Router,
    slots: Arc<Semaphore>,
    idle: Duration,
    acquiring: Option<Acquire>,
    ready: Option<OwnedSemaphorePermit>,
}

impl Capped {
    pub fn new(router: Router, max: usize, idle: Duration) -> Capped {
        Capped {
            router,
            slots: Arc::new(Semaphore::new(max.max(1))),
            idle,
            acquiring: None,
            ready: None,
        }
    }
}

impl<T> Service<T> for Capped {
    type Response = Conn;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Conn, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.ready.is_none() {
            let slots = self.slots.clone();
            let acquiring = self
                .acquiring
                .get_or_insert_with(|| Box::pin(slots.acquire_owned()));
            match acquiring.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(permit) => {
                    self.acquiring = None;
                    // The semaphore is never closed.
                    self.ready = Some(permit.expect("connection slots are never closed"));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _target: T) -> Self::Future {
        let permit = self.ready.take().expect("poll_ready before call");
        std::future::ready(Ok(Conn {
            router: self.router.clone(),
            idle: self.idle,
            state: Arc::new(ConnState {
                _slot: permit,
                busy: AtomicUsize::new(0),
                born: Instant::now(),
                last_done: AtomicU64::new(0),
                watched: AtomicBool::new(false),
            }),
        }))
    }
}

/// What one connection shares among its requests; its slot is given back
/// when the connection ends (the last clone is dropped).
struct ConnState {
    _slot: OwnedSemaphorePermit,
    /// Requests whose response is not yet ready.
    busy: AtomicUsize,
    born: Instant,
    /// When the last response was ready, in ms after `born`.
    last_done: AtomicU64,
    /// Whether the connection's idle watch runs (one per connection).
    watched: AtomicBool,
}

impl ConnState {
    /// When the connection becomes idle for too long, as things stand.
    fn idle_at(&self, idle: Duration) -> Instant {
        self.born + Duration::from_millis(self.last_done.load(Ordering::SeqCst)) + idle
    }
}

/// The service of one connection: the router, plus the idle watch.
#[derive(Clone)]
pub struct Conn {
    router: Router,
    idle: Duration,
    state: Arc<ConnState>,
}

impl<B> Service<Request<B>> for Conn
where
    Router: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
    <Router as Service<Request<B>>>::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let shutdown = req.extensions().get::<ConnectionShutdown>().cloned();
        let state = self.state.clone();
        state.busy.fetch_add(1, Ordering::SeqCst);
        let idle = self.idle;
        let head = req.method() == Method::HEAD;
        let call = self.router.clone().call(req);
        Box::pin(async move {
            let resp = match call.await {
                Ok(resp) if !head => Ok(in_one_piece(resp).await),
                other => other,
            };
            let ms = state.born.elapsed().as_millis() as u64;
            state.last_done.fetch_max(ms, Ordering::SeqCst);
            state.busy.fetch_sub(1, Ordering::SeqCst);
            if let Some(shutdown) = shutdown {
                if !state.watched.swap(true, Ordering::SeqCst) {
                    watch_idle(Arc::downgrade(&state), idle, shutdown);
                }
            }
            resp
        })
    }
}

/// Streamed bodies at most this long are gathered before the head is sent.
const ONE_PIECE_MAX: u64 = 64 * 1024;

/// A small streamed response (a file's content) gathered into one buffer,
/// so hyper sends head and body in one write (one segment on the wire)
/// rather than the head first and the body when the stream yields it.
/// Bodies already in memory, of unknown length or longer are left as
/// they are. A body that fails while gathered fails the same way after
/// the head, as it would have streamed.
async fn in_one_piece(resp: Response<Body>) -> Response<Body> {
    let len = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(len) = len.filter(|n| *n <= ONE_PIECE_MAX) else {
        return resp;
    };
    if resp.body().size_hint().exact().is_some() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let body = match axum::body::to_bytes(body, len as usize).await {
        Ok(bytes) => Body::from(bytes),
        Err(e) => Body::from_stream(futures_util::stream::once(async move {
            Err::<Bytes, _>(std::io::Error::other(e.to_string()))
        })),
    };
    Response::from_parts(parts, body)
}

/// Close the connection (gracefully: a response still being sent is
/// finished first) if no request comes within `idle`. HTTP/1 closes an
/// idle connection by itself (its header timeout runs between requests);
/// HTTP/2 would not.
fn watch_idle(state: Weak<ConnState>, idle: Duration, shutdown: ConnectionShutdown) {
    // Only a weak hold: the watch never keeps an ended connection's slot.
    tokio::spawn(async move {
        loop {
            let Some(due) = state.upgrade().map(|s| s.idle_at(idle)) else {
                return; // the connection is gone
            };
            tokio::time::sleep_until(due).await;
            let Some(s) = state.upgrade() else {
                return;
            };
            if s.busy.load(Ordering::SeqCst) > 0 {
                // A request is being served: look again an idle time later.
                drop(s);
                tokio::time::sleep(idle).await;
            } else if Instant::now() >= s.idle_at(idle) {
                shutdown.graceful_shutdown();
                return;
            }
        }
    });
}
