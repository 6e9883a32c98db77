//! Redis, for what it is good at (docs/CLUSTER.md): a fast hint that the
//! writer committed, and a registry of the nodes serving each store.
//!
//! Nothing depends on it. A hint is at-most-once (pub/sub) and says only
//! "read the feed now": the feed in PostgreSQL is the truth and replicas
//! poll it anyway, so a lost hint costs one poll interval. A registry
//! entry expires when its node stops refreshing it. With Redis down,
//! restarted or flushed, each task logs once, retries with a backoff, and
//! says when Redis is back.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a node's registry entry lives without a refresh.
pub const NODE_TTL: Duration = Duration::from_secs(10);
/// How often a node refreshes its entry.
const REFRESH: Duration = Duration::from_secs(2);
/// Longest wait between attempts to reach Redis.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection attempt or command that takes longer has failed.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Keys and channels of this build live under this prefix.
const NS: &str = "artfs";

/// The channel the writer of `store_id` publishes its feed head on.
pub fn channel(store_id: &str) -> String {
    format!("{NS}:{store_id}:feed")
}

fn node_key(store_id: &str, node_id: &str) -> String {
    format!("{NS}:node:{store_id}:{node_id}")
}

/// What a node says about itself in the registry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub store_id: String,
    /// Unique per daemon (a UUID), so restarts never collide.
    pub node_id: String,
    pub host: String,
    pub pid: u32,
    /// writer, replica or standby.
    pub role: String,
    pub mode: String,
    pub capacity: Option<u64>,
    pub used_bytes: u64,
    pub file_count: u64,
    /// Where its HTTP API listens, if it has one.
    pub api_url: Option<String>,
    pub mountpoint: String,
    pub version: String,
    /// RFC 3339 UTC.
    pub started_at: String,
    /// Last feed row a follower applied (a writer: 0).
    pub feed_applied: u64,
    /// Feed rows the follower knows of and has not applied yet.
    pub feed_behind: u64,
}

use crate::types::url::redact;

/// A client for `url` (`redis://`, `rediss://` for TLS, `unix://`), with
/// the password from `password` when the URL has none. Nothing connects
/// yet; the error names the URL without its password.
pub fn client(url: &str, password: Option<&str>) -> Result<redis::Client, String> {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    if !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix") {
        return Err(format!(
            "unsupported Redis URL {}: use redis://HOST[:PORT][/DB], rediss:// (TLS) or unix://PATH",
            redact(url)
        ));
    }
    let mut info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| format!("Redis URL {}: {e}", redact(url)))?;
    if let Some(pw) = password {
        if info.redis_settings().password().is_none() {
            let settings = info.redis_settings().clone().set_password(pw);
            info = info.set_redis_settings(settings);
        }
    }
    redis::Client::open(info).map_err(|e| format!("Redis URL {}: {e}", redact(url)))
}

/// A task's view of whether Redis answers, logged on change only, with
/// its backoff and its connection.
struct Reach {
    what: &'static str,
    url: String,
    down: bool,
    backoff: Duration,
    conn: Option<redis::aio::ConnectionManager>,
}

impl Reach {
    fn new(what: &'static str, url: String) -> Reach {
        Reach {
            what,
            url,
            down: false,
            backoff: Duration::from_millis(100),
            conn: None,
        }
    }

    /// Say so (once per outage) and wait before the next attempt.
    async fn failed(&mut self, e: impl std::fmt::Display) {
        if !self.down {
            self.down = true;
            tracing::warn!(redis = %self.url, error = %e,
                "Redis is unreachable: {} (retrying)", self.what);
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn ok(&mut self) {
        self.backoff = Duration::from_millis(100);
        if self.down {
            self.down = false;
            tracing::info!(redis = %self.url, "Redis is reachable again: {}", self.what);
        }
    }

    /// Run `cmd` on this task's connection (made first if need be). On a
    /// failure the connection is dropped (the manager's own reconnects
    /// give up during a long outage), the outage noted and waited out:
    /// `None`, try again.
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        client: &redis::Client,
        cmd: &redis::Cmd,
    ) -> Option<T> {
        if self.conn.is_none() {
            match timed(client.get_connection_manager()).await {
                Ok(c) => self.conn = Some(c),
                Err(e) => {
                    self.failed(e).await;
                    return None;
                }
            }
        }
        let c = self.conn.as_mut().expect("connected above");
        match timed(cmd.query_async::<T>(c)).await {
            Ok(v) => {
                self.ok();
                Some(v)
            }
            Err(e) => {
                self.conn = None;
                self.failed(e).await;
                None
            }
        }
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

/// One daemon's link to Redis: publishes the feed head (a writer),
/// wakes the follower on hints (a replica or standby), and keeps the
/// node's registry entry. Ends with [`Link::stop`].
pub struct Link {
    head: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
    client: redis::Client,
    key: String,
    rt: Handle,
}

impl Link {
    /// Start the link's tasks on `rt`. `node` describes this node for the
    /// registry (asked at every refresh). A follower (`on_hint` given)
    /// subscribes: `on_hint` is called with the head a writer published,
    /// or 0 after (re)subscribing (read the feed now: hints may have been
    /// missed meanwhile).
    pub fn start(
        client: redis::Client,
        url: &str,
        rt: &Handle,
        node: impl Fn() -> NodeRecord + Send + Sync + 'static,
        on_hint: Option<Box<dyn Fn(u64) + Send + Sync>>,
    ) -> Link {
        let first = node();
        let (store_id, key) = (
            first.store_id.clone(),
            node_key(&first.store_id, &first.node_id),
        );
        let url = redact(url);
        let (head, heads) = watch::channel(0u64);
        let mut tasks = vec![rt.spawn(publish(
            client.clone(),
            url.clone(),
            channel(&store_id),
            heads,
        ))];
        if let Some(on_hint) = on_hint {
            tasks.push(rt.spawn(subscribe(
                client.clone(),
                url.clone(),
                channel(&store_id),
                Arc::from(on_hint),
            )));
        }
        tasks.push(rt.spawn(register(client.clone(), url, key.clone(), Arc::new(node))));
        Link {
            head,
            tasks,
            client,
            key,
            rt: rt.clone(),
        }
    }

    /// The writer committed up to feed row `seq`: tell the followers
    /// (never blocks; a burst of commits sends the latest head).
    pub fn publish(&self, seq: u64) {
        self.head.send_if_modified(|h| {
            let newer = seq > *h;
            *h = (*h).max(seq);
            newer
        });
    }

    /// Stop the tasks and remove this node's registry entry (best effort:
    /// it expires anyway).
    pub fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let (client, key) = (self.client.clone(), self.key.clone());
        let _ = self.rt.block_on(async move {
            let mut c = timed(client.get_multiplexed_async_connection()).await?;
            timed(redis::cmd("DEL").arg(&key).query_async::<()>(&mut c)).await
        });
    }
}

/// PUBLISH every new head; a head that could not be sent is sent once
/// Redis is back (followers poll meanwhile).
async fn publish(client: redis::Client, url: String, ch: String, mut heads: watch::Receiver<u64>) {
    let mut reach = Reach::new("replicas are not told of commits at once (they poll)", url);
    while heads.changed().await.is_ok() {
        loop {
            let head = *heads.borrow_and_update();
            let cmd = redis::cmd("PUBLISH").arg(&ch).arg(head).clone();
            if reach.query::<i64>(&client, &cmd).await.is_some() {
                break;
            }
        }
    }
}

/// SUBSCRIBE and call `on_hint` for each message; after every
/// (re)subscription call it with 0 (hints may have been missed).
async fn subscribe(
    client: redis::Client,
    url: String,
    ch: String,
    on_hint: Arc<dyn Fn(u64) + Send + Sync>,
) {
    let mut reach = Reach::new("followers read the feed at their poll interval only", url);
    loop {
        let mut ps = match timed(client.get_async_pubsub()).await {
            Ok(ps) => ps,
            Err(e) => {
                reach.failed(e).await;
                continue;
            }
        };
        if let Err(e) = timed(ps.subscribe(&ch)).await {
            reach.failed(e).await;
            continue;
        }
        reach.ok();
        on_hint(0);
        let mut messages = ps.on_message();
        while let Some(m) = messages.next().await {
            let head = m
                .get_payload::<String>()
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            on_hint(head);
        }
        // The connection ended (killed, Redis restarted): resubscribe.
        drop(messages);
        reach.failed("the subscription ended").await;
    }
}

/// Keep this node's registry entry fresh.
async fn register(
    client: redis::Client,
    url: String,
    key: String,
    node: Arc<dyn Fn() -> NodeRecord + Send + Sync>,
) {
    let mut reach = Reach::new("this node is missing from the registry", url);
    loop {
        let record = serde_json::to_string(&node()).unwrap_or_default();
        let cmd = redis::cmd("SET")
            .arg(&key)
            .arg(record)
            .arg("EX")
            .arg(NODE_TTL.as_secs())
            .clone();
        if reach.query::<()>(&client, &cmd).await.is_some() {
            tokio::time::sleep(REFRESH).await;
        }
    }
}

/// Every node the registry lists (of every store, or of `store_id`),
/// sorted by store, then role, then host.
pub async fn nodes(
    client: &redis::Client,
    store_id: Option<&str>,
) -> Result<Vec<NodeRecord>, String> {
    let mut c = timed(client.get_multiplexed_async_connection()).await?;
    let pattern = format!("{NS}:node:{}:*", store_id.unwrap_or("*"));
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = timed(
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c),
        )
        .await?;
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = Vec::new();
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> =
            timed(redis::cmd("MGET").arg(chunk).query_async(&mut c)).await?;
        out.extend(
            values
                .into_iter()
                .flatten()
                .filter_map(|v| serde_json::from_str::<NodeRecord>(&v).ok()),
        );
    }
    let rank = |r: &str| match r {
        "writer" => 0,
        "standby" => 1,
        _ => 2,
    };
    out.sort_by(|a, b| {
        (&a.store_id, rank(&a.role), &a.host, a.pid).cmp(&(
            &b.store_id,
            rank(&b.role),
            &b.host,
            b.pid,
        ))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_passwords_kept_out_of_errors() {
        let e = client("http://h:6379", None).unwrap_err();
        assert!(e.contains("unsupported Redis URL"), "{e}");
        let e = client("redis://u:s3cret@h:notaport", None).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(client("redis://127.0.0.1:6379/2", Some("pw")).is_ok());
        assert!(client("rediss://h:6380", None).is_ok());
        assert_eq!(channel("s1"), "artfs:s1:feed");
    }
}
