//! The writer's lease on PostgreSQL (see [`super::lease`] for the rules).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPool;
use sqlx::{Postgres, Transaction};

use super::lease::{Holder, BEAT, LAPSE};
use crate::types::error::{Error, Result};

/// The lease as this store handle holds it: the epoch it claimed, or 0
/// (not claimed: a reader, or a command that writes nothing).
#[derive(Default)]
pub struct Lease {
    epoch: AtomicI64,
}

/// A held lease, as read from its row.
struct Row {
    epoch: i64,
    holder: String,
    host: String,
    pid: i64,
    beat: i64,
    /// Seconds since the last heartbeat, by the database's clock.
    age: f64,
}

impl Lease {
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Become the writer: take the lease when it is free, released,
    /// lapsed or held by a dead process here; watch a held one until its
    /// heartbeat moves (refused: a live writer) or [`LAPSE`] passes
    /// without one (taken).
    pub async fn claim(&self, pool: &PgPool, p: &str, me: &Holder) -> Result<()> {
        let deadline = Instant::now() + LAPSE + BEAT;
        let mut first_beat = None;
        loop {
            let r = match self.try_take(pool, p, me, LAPSE).await? {
                None => return Ok(()),
                Some(r) => r,
            };
            let moved = *first_beat.get_or_insert(r.beat) != r.beat;
            if moved || Instant::now() > deadline {
                return Err(Error::posix_msg(
                    libc::EBUSY,
                    format!(
                        "store is in use by another artfs process (pid {} on host {}, \
                         its lease renewed {:.1} s ago); one writer per store",
                        r.pid, r.host, r.age
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One look at the lease: take it when it is free, released, silent
    /// for longer than `lapse`, or held by a dead process on this host
    /// (`None`: ours now); else the row of whoever holds it.
    async fn try_take(
        &self,
        pool: &PgPool,
        p: &str,
        me: &Holder,
        lapse: Duration,
    ) -> Result<Option<Row>> {
        let mut tx = pool.begin().await?;
        let row = read_locked(&mut tx, p).await?;
        // Why a held lease may be taken (None: it may not).
        let taken_from = match &row {
            None => Some(None),
            Some(r) if r.holder.is_empty() => Some(None),
            Some(r) if r.age > lapse.as_secs_f64() => Some(Some("stopped renewing it")),
            Some(r) if Holder::is_dead_here(&r.host, r.pid) => Some(Some("is gone from this host")),
            Some(_) => None,
        };
        let Some(why) = taken_from else {
            return Ok(row);
        };
        let epoch = row.as_ref().map_or(0, |r| r.epoch) + 1;
        sqlx::query(&format!(
            "INSERT INTO {p}_lease (id, epoch, holder, host, pid, beat, beat_at) \
             VALUES (1, $1, $2, $3, $4, 0, now()) \
             ON CONFLICT (id) DO UPDATE SET epoch = $1, holder = $2, host = $3, \
             pid = $4, beat = 0, beat_at = now()"
        ))
        .bind(epoch)
        .bind(&me.id)
        .bind(&me.host)
        .bind(i64::from(me.pid))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if let (Some(r), Some(why)) = (row, why) {
            tracing::warn!(
                host = %r.host, pid = r.pid, epoch,
                silent_secs = format!("{:.1}", r.age),
                "took over the store's lease from a writer that {why}"
            );
        }
        self.epoch.store(epoch, Ordering::Release);
        Ok(None)
    }

    /// A standby's try ([`Lease::try_take`]): true when the lease is ours.
    pub async fn try_claim(
        &self,
        pool: &PgPool,
        p: &str,
        me: &Holder,
        lapse: Duration,
    ) -> Result<bool> {
        Ok(self.try_take(pool, p, me, lapse).await?.is_none())
    }

    /// Renew the lease; [`Error::Fenced`] once another holder took it.
    pub async fn beat(&self, pool: &PgPool, p: &str) -> Result<()> {
        let epoch = self.epoch();
        if epoch == 0 {
            return Ok(());
        }
        let done = sqlx::query(&format!(
            "UPDATE {p}_lease SET beat = beat + 1, beat_at = now() WHERE id = 1 AND epoch = $1"
        ))
        .bind(epoch)
        .execute(pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(self.lost(pool, p).await);
        }
        Ok(())
    }

    /// Inside a batch's transaction: refuse to commit unless the lease is
    /// still ours. `FOR KEY SHARE` lets heartbeats through but makes a
    /// takeover (`FOR UPDATE`) wait until this transaction ends.
    pub async fn check(&self, tx: &mut Transaction<'_, Postgres>, p: &str) -> Result<()> {
        let epoch = self.epoch();
        if epoch == 0 {
            return Ok(());
        }
        let now: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT epoch FROM {p}_lease WHERE id = 1 FOR KEY SHARE"
        ))
        .fetch_optional(&mut **tx)
        .await?;
        if now != Some(epoch) {
            return Err(Error::Fenced(format!(
                "the store's lease passed to another writer (epoch {epoch} -> {}); \
                 this process no longer writes it",
                now.map_or("none".into(), |e| e.to_string())
            )));
        }
        Ok(())
    }

    /// Give the lease up, so the next writer need not wait for it to lapse.
    pub async fn release(&self, pool: &PgPool, p: &str) -> Result<()> {
        let epoch = self.epoch.swap(0, Ordering::AcqRel);
        if epoch == 0 {
            return Ok(());
        }
        sqlx::query(&format!(
            "UPDATE {p}_lease SET holder = '', beat_at = now() WHERE id = 1 AND epoch = $1"
        ))
        .bind(epoch)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// The fencing error, naming who holds the lease now.
    async fn lost(&self, pool: &PgPool, p: &str) -> Error {
        let epoch = self.epoch();
        let who: Option<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT host, pid, epoch FROM {p}_lease WHERE id = 1"
        ))
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        Error::Fenced(match who {
            Some((host, pid, now)) => format!(
                "the store's lease passed to pid {pid} on host {host} (epoch {epoch} -> {now}); \
                 this process no longer writes it"
            ),
            None => format!(
                "the store's lease (epoch {epoch}) is gone; this process no longer writes it"
            ),
        })
    }
}

async fn read_locked(tx: &mut Transaction<'_, Postgres>, p: &str) -> Result<Option<Row>> {
    let row: Option<(i64, String, String, i64, i64, f64)> = sqlx::query_as(&format!(
        "SELECT epoch, holder, host, pid, beat, \
         EXTRACT(EPOCH FROM (now() - beat_at))::float8 FROM {p}_lease WHERE id = 1 FOR UPDATE"
    ))
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(epoch, holder, host, pid, beat, age)| Row {
        epoch,
        holder,
        host,
        pid,
        beat,
        age,
    }))
}
