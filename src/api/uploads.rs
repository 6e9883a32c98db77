//! Admission and pacing of uploads: how many run at once (in all and per
//! token subject), and how slowly a body may arrive. A client that opens
//! uploads and feeds them a byte now and then must not hold the slots
//! everyone else needs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::{header, StatusCode};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::error::{ApiError, ApiResult};
use super::settings::Limits;

/// Upload slots: `max_concurrent_uploads` in all, at most
/// `max_uploads_per_subject` of them held by one token subject.
pub struct Uploads {
    global: Arc<Semaphore>,
    max: usize,
    per_subject: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// A slot held for one upload; given back when dropped.
pub struct Slot {
    owner: Arc<Uploads>,
    subject: String,
    _permit: OwnedSemaphorePermit,
}

impl Uploads {
    pub fn new(limits: &Limits) -> Arc<Uploads> {
        let max = limits.max_concurrent_uploads.max(1);
        Arc::new(Uploads {
            global: Arc::new(Semaphore::new(max)),
            max,
            per_subject: limits.max_uploads_per_subject.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Take a slot for `subject`, or 503 with Retry-After when all slots,
    /// or all of this subject's, are taken.
    pub fn admit(self: &Arc<Self>, subject: &str) -> ApiResult<Slot> {
        let mut held = self.held.lock();
        let mine = held.get(subject).copied().unwrap_or(0);
        if mine >= self.per_subject {
            return Err(busy(format!(
                "this token already has {mine} uploads in progress (the limit per \
                 subject); try again when one ends"
            )));
        }
        let permit = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy("too many uploads in progress; try again".into()))?;
        *held.entry(subject.to_string()).or_default() += 1;
        Ok(Slot {
            owner: self.clone(),
            subject: subject.to_string(),
            _permit: permit,
        })
    }

    /// Uploads being received now.
    pub fn in_flight(&self) -> usize {
        self.max - self.global.available_permits().min(self.max)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock();
        if let Some(n) = held.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.subject);
            }
        }
    }
}

fn busy(message: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message)
        .with_header(header::RETRY_AFTER, "1")
}

/// Reads an upload body piece by piece, ending it with 408 when it pauses
/// longer than `body_idle_timeout`, or when a whole window of
/// `min_upload_window` brings less than `min_upload_rate` bytes a second.
pub struct BodyReader {
    stream: BodyDataStream,
    idle: Duration,
    /// Bytes each window must bring (0: no minimum rate).
    window_min: u64,
    window: Duration,
    window_end: Instant,
    window_bytes: u64,
}

impl BodyReader {
    pub fn new(body: Body, limits: &Limits) -> BodyReader {
        let window = limits.min_upload_window.max(Duration::from_secs(1));
        let window_min = (limits.min_upload_rate as f64 * window.as_secs_f64()) as u64;
        BodyReader {
            stream: body.into_data_stream(),
            idle: limits.body_idle_timeout,
            window_min,
            window,
            window_end: Instant::now() + window,
            window_bytes: 0,
        }
    }

    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> ApiResult<Option<Bytes>> {
        let idle_end = Instant::now() + self.idle;
        loop {
            let until = if self.window_min > 0 {
                idle_end.min(self.window_end)
            } else {
                idle_end
            };
            match tokio::time::timeout_at(until, self.stream.next()).await {
                Ok(None) => return Ok(None),
                Ok(Some(Ok(chunk))) => {
                    self.count(chunk.len() as u64)?;
                    return Ok(Some(chunk));
                }
                Ok(Some(Err(e))) => {
                    return Err(ApiError::bad_request(format!(
                        "could not read the request body: {e}"
                    )))
                }
                Err(_) if Instant::now() >= idle_end => {
                    return Err(timeout("the request body stalled".into()))
                }
                // A window ended with no data in it: judge it, wait on.
                Err(_) => self.count(0)?,
            }
        }
    }

    /// Add `n` bytes to the current window; close the windows that ended
    /// and refuse a body that brought too little in one of them.
    fn count(&mut self, n: u64) -> ApiResult<()> {
        if self.window_min == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if now >= self.window_end {
            if self.window_bytes < self.window_min {
                return Err(timeout(format!(
                    "the request body arrived too slowly ({} bytes in {} s; at least {} \
                     are needed)",
                    self.window_bytes,
                    self.window.as_secs(),
                    self.window_min
                )));
            }
            self.window_end = now + self.window;
            self.window_bytes = 0;
        }
        self.window_bytes += n;
        Ok(())
    }
}

fn timeout(message: String) -> ApiError {
    ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", message)
}
