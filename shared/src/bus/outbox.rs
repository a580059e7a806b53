//! The transactional outbox.
//!
//! Services never publish from a request or a consumer directly: they insert outbox rows in the
//! same PostgreSQL transaction as the change, so the event exists if and only if the change
//! does. [`OutboxRelay`] publishes the rows (message id = row id, so a re-send after a crash is
//! dropped by JetStream's duplicate window) and deletes them once their PubAck arrived.
//!
//! The relay is woken by `LISTEN/NOTIFY` (a statement trigger on every outbox table notifies
//! `<schema>_outbox`), listens on a dedicated connection outside the pool, reconnects with
//! backoff, and polls once a second as a fallback. Several replicas share the table safely:
//! batches are claimed with `FOR UPDATE SKIP LOCKED`. Ordering across replicas is not
//! guaranteed; consumers must not depend on it.

use std::time::Duration;

use diesel::sql_types::{Array, Jsonb, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Bus;
use crate::{
    db::PgPool,
    schemas::{Envelope, Event},
};

/// Rows claimed per relay transaction.
const BATCH: i64 = 500;
/// Fallback poll when no notification arrives (lost NOTIFY, listener reconnecting).
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// A message to publish once the caller's transaction commits.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    /// `Nats-Msg-Id` of the publication.
    pub id: Uuid,
    /// Subject without installation prefix.
    pub subject: String,
    /// The envelope as JSON.
    pub payload: serde_json::Value,
}

impl OutboxRow {
    pub fn new<T: Event>(envelope: &Envelope<T>) -> Self {
        Self {
            id: envelope.id,
            subject: envelope.subject(),
            payload: serde_json::to_value(envelope).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Inserts rows into `<schema>.outbox`. Call inside the transaction of the change.
pub async fn enqueue(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    rows: &[OutboxRow],
) -> diesel::QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let subjects: Vec<&str> = rows.iter().map(|r| r.subject.as_str()).collect();
    let payloads: Vec<&serde_json::Value> = rows.iter().map(|r| &r.payload).collect();
    diesel::sql_query(format!(
        "INSERT INTO {schema}.outbox (id, subject, payload) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])"
    ))
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .bind::<Array<Text>, _>(subjects)
    .bind::<Array<Jsonb>, _>(payloads)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct PendingRow {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    subject: String,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
}

/// Publishes one schema's outbox.
#[derive(Clone)]
pub struct OutboxRelay {
    pub pool: PgPool,
    pub db_url: String,
    pub bus: Bus,
    pub schema: &'static str,
}

impl OutboxRelay {
    /// Runs until `shutdown`, then publishes what is left (best effort) and returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let channel = format!("{}_outbox", self.schema);
        let mut listener: Option<AsyncPgConnection> = None;
        let mut failures = 0;
        loop {
            if listener.is_none() {
                listener = self.listen(&channel).await;
            }
            match self.drain().await {
                Ok(_) => failures = 0,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(
                        schema = self.schema,
                        error = format!("{e:#}"),
                        "outbox relay failed, will retry"
                    );
                }
            }
            let wait = if failures > 0 {
                super::consumer::backoff(failures).min(Duration::from_secs(10))
            } else {
                POLL_INTERVAL
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
                alive = next_notification(&mut listener) => {
                    if !alive {
                        listener = None;
                    }
                }
            }
        }
        if let Err(e) = self.drain().await {
            tracing::warn!(
                schema = self.schema,
                error = format!("{e:#}"),
                "outbox not fully flushed at shutdown; rows stay for the next start"
            );
        }
    }

    async fn listen(&self, channel: &str) -> Option<AsyncPgConnection> {
        crate::db::dedicated("listen");
        let mut conn = match crate::db::connect(&self.db_url).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "outbox listener cannot connect; polling");
                return None;
            }
        };
        match diesel::sql_query(format!("LISTEN {channel}")).execute(&mut conn).await {
            Ok(_) => Some(conn),
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN failed; polling");
                None
            }
        }
    }

    /// Publishes every pending row; returns how many were published.
    pub async fn drain(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let mut conn = self.pool.get().await?;
            let (claimed, published) = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    let rows: Vec<PendingRow> = diesel::sql_query(format!(
                        "SELECT id, subject, payload FROM {}.outbox ORDER BY seq LIMIT {BATCH} \
                         FOR UPDATE SKIP LOCKED",
                        self.schema
                    ))
                    .load(conn)
                    .await?;
                    let published = self.publish(&rows).await;
                    if !published.is_empty() {
                        diesel::sql_query(format!(
                            "DELETE FROM {}.outbox WHERE id = ANY($1)",
                            self.schema
                        ))
                        .bind::<Array<diesel::sql_types::Uuid>, _>(&published)
                        .execute(conn)
                        .await?;
                    }
                    Ok((rows.len(), published.len()))
                })
                .await?;
            total += published;
            crate::metrics::outbox_published(self.schema, published);
            if published < claimed {
                anyhow::bail!(
                    "{} of {claimed} outbox rows not acknowledged by NATS",
                    claimed - published
                );
            }
            if claimed < BATCH as usize {
                return Ok(total);
            }
        }
    }

    /// Sends every row before awaiting any ack (pipelined); returns the ids that were acked.
    async fn publish(&self, rows: &[PendingRow]) -> Vec<Uuid> {
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            let trace = row.payload.get("trace").and_then(|t| t.as_str());
            let body = bytes::Bytes::from(serde_json::to_vec(&row.payload).unwrap_or_default());
            match self.bus.send(&row.subject, &row.id.to_string(), trace, body).await {
                Ok(ack) => pending.push((row.id, ack)),
                Err(e) => {
                    tracing::warn!(subject = %row.subject, error = %e, "outbox publish failed");
                    break;
                }
            }
        }
        let mut acked = Vec::with_capacity(pending.len());
        for (id, ack) in pending {
            match ack.await {
                Ok(_) => acked.push(id),
                Err(e) => tracing::warn!(msg_id = %id, error = %e, "no PubAck for outbox row"),
            }
        }
        acked
    }
}

/// Waits for the next notification and swallows any others already queued; `false` when the
/// listener connection is gone (or there is none: then it never returns).
async fn next_notification(listener: &mut Option<AsyncPgConnection>) -> bool {
    let Some(conn) = listener.as_mut() else {
        return futures::future::pending().await;
    };
    let mut stream = std::pin::pin!(conn.notifications_stream());
    match stream.next().await {
        Some(Ok(_)) => {
            while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
            true
        }
        _ => false,
    }
}
