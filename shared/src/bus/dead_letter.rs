//! Dead letters: messages that exhausted their retries or can never succeed. Each becomes a row
//! in `<schema>.dead_letters` (with the error and the original message) and a
//! `MessageDeadLettered` event for sync-monitor; an operator can replay it, which re-publishes
//! the original message through the outbox.
//!
//! A dead-lettered inbound webhook event reads `failed` (`GET /events/{id}`); its replay sets it
//! back to `received` in the replay's transaction, so the consumer, whose inbox is the events'
//! recorded outcomes, applies it again instead of skipping it as settled. What else a consumer's
//! owner keeps about its dead letters (the inbound error ledger) is a [`DeadLetterHook`].

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::AsyncPgConnection;
use diesel_async::{AsyncConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde::Serialize;
use uuid::Uuid;

use super::outbox::{self, OutboxRow};
use crate::{
    db::PgPool,
    schemas::{Envelope, sync::MessageDeadLettered},
};

/// What a consumer's owner adds to its dead letters, in the dead letter's own transaction.
pub trait DeadLetterHook: Send + Sync {
    /// A message of the consumer became a dead letter (`payload`: the whole envelope).
    fn dead_lettered<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        subject: &'a str,
        payload: &'a serde_json::Value,
        error: &'a str,
    ) -> BoxFuture<'a, diesel::QueryResult<()>>;
    /// The dead letter is replayed: the envelope to publish again (it may name what the replay
    /// settles).
    fn replayed<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        subject: &'a str,
        payload: &'a serde_json::Value,
    ) -> BoxFuture<'a, diesel::QueryResult<serde_json::Value>>;
}

/// The hooks of a service's consumers, by durable name (without prefix).
pub type DeadLetterHooks = Arc<RwLock<HashMap<String, Arc<dyn DeadLetterHook>>>>;

/// Dead letters of one service (one schema).
#[derive(Clone)]
pub struct DeadLetters {
    pub pool: PgPool,
    pub schema: &'static str,
    pub service: &'static str,
    pub hooks: DeadLetterHooks,
}

/// A dead-letter row as operators see it.
#[derive(Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct DeadLetter {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub consumer: String,
    #[diesel(sql_type = Text)]
    pub subject: String,
    #[diesel(sql_type = Jsonb)]
    pub payload: serde_json::Value,
    #[diesel(sql_type = Text)]
    pub error: String,
    #[diesel(sql_type = BigInt)]
    pub deliveries: i64,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub replayed_at: Option<DateTime<Utc>>,
}

fn without_nul(value: serde_json::Value) -> serde_json::Value {
    let text = value.to_string();
    if !text.contains("\\u0000") {
        return value;
    }
    serde_json::from_str(&text.replace("\\u0000", "\\ufffd")).unwrap_or(value)
}

/// The envelope id of an inbound webhook event (its status becomes `failed`).
fn webhook_event_id(subject: &str, payload: &serde_json::Value) -> Option<Uuid> {
    if !subject.starts_with("webhooks.") {
        return None;
    }
    payload.get("id")?.as_str()?.parse().ok()
}

impl DeadLetters {
    /// Dead letters without hooks.
    pub fn new(pool: PgPool, schema: &'static str, service: &'static str) -> Self {
        Self { pool, schema, service, hooks: Default::default() }
    }

    fn hook(&self, consumer: &str) -> Option<Arc<dyn DeadLetterHook>> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).get(consumer).cloned()
    }

    /// Stores a dead letter and announces it, in one transaction.
    pub async fn record(
        &self,
        consumer: &str,
        subject: &str,
        payload: &[u8],
        error: &str,
        deliveries: i64,
    ) -> anyhow::Result<Uuid> {
        let id = Uuid::now_v7();
        // Undecodable payloads are kept as a JSON string so nothing is lost; NUL characters,
        // which PostgreSQL's jsonb cannot store, become U+FFFD (a message carrying one must
        // still become a visible dead letter instead of being redelivered forever).
        let payload: serde_json::Value = serde_json::from_slice(payload)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(payload).into()));
        let payload = without_nul(payload);
        let error = error.replace('\0', "\u{fffd}");
        let error = error.as_str();
        let event = Envelope::new(
            self.service,
            MessageDeadLettered {
                service: self.service.to_owned(),
                consumer: consumer.to_owned(),
                dead_letter_id: id,
                subject: subject.to_owned(),
                error: error.to_owned(),
                deliveries,
            },
        );
        let schema = self.schema;
        let hook = self.hook(consumer);
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, diesel::result::Error, _>(async |conn| {
            diesel::sql_query(format!(
                "INSERT INTO {schema}.dead_letters (id, consumer, subject, payload, error, deliveries) \
                 VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .bind::<diesel::sql_types::Uuid, _>(id)
            .bind::<Text, _>(consumer)
            .bind::<Text, _>(subject)
            .bind::<Jsonb, _>(&payload)
            .bind::<Text, _>(error)
            .bind::<BigInt, _>(deliveries)
            .execute(conn)
            .await?;
            if let Some(event_id) = webhook_event_id(subject, &payload) {
                super::events::dead_lettered(conn, schema, subject, event_id, error).await?;
            }
            if let Some(hook) = &hook {
                hook.dead_lettered(conn, subject, &payload, error).await?;
            }
            outbox::enqueue(conn, schema, &[OutboxRow::new(&event)]).await
        })
        .await?;
        Ok(id)
    }

    /// The most recent dead letters, newest first.
    pub async fn list(
        &self,
        include_replayed: bool,
        limit: i64,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        let mut conn = self.pool.get().await?;
        let rows = diesel::sql_query(format!(
            "SELECT id, consumer, subject, payload, error, deliveries, created_at, replayed_at \
             FROM {}.dead_letters WHERE $1 OR replayed_at IS NULL ORDER BY created_at DESC LIMIT $2",
            self.schema
        ))
        .bind::<diesel::sql_types::Bool, _>(include_replayed)
        .bind::<BigInt, _>(limit)
        .load(&mut conn)
        .await?;
        Ok(rows)
    }

    /// Re-publishes the original message (new message id, same envelope, so consumers' inboxes
    /// still recognise work already done) and marks the row replayed; an inbound webhook
    /// event's status goes back to `received`, so it is applied again. `None` if there is no
    /// such unreplayed dead letter.
    pub async fn replay(&self, id: Uuid) -> anyhow::Result<Option<DeadLetter>> {
        let schema = self.schema;
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut conn = self.pool.get().await?;
        let row = conn
            .transaction::<_, diesel::result::Error, _>(async |conn| {
                let row: Option<DeadLetter> = diesel::sql_query(format!(
                    "UPDATE {schema}.dead_letters SET replayed_at = now() \
                     WHERE id = $1 AND replayed_at IS NULL \
                     RETURNING id, consumer, subject, payload, error, deliveries, created_at, replayed_at"
                ))
                .bind::<diesel::sql_types::Uuid, _>(id)
                .get_result(conn)
                .await
                .map(Some)
                .or_else(|e| match e {
                    diesel::result::Error::NotFound => Ok(None),
                    e => Err(e),
                })?;
                if let Some(row) = &row {
                    if let Some(event_id) = webhook_event_id(&row.subject, &row.payload) {
                        super::events::replayed(conn, schema, event_id, row.id).await?;
                    }
                    let payload = match hooks.get(&row.consumer) {
                        Some(hook) => hook.replayed(conn, &row.subject, &row.payload).await?,
                        None => row.payload.clone(),
                    };
                    let replay =
                        OutboxRow { id: Uuid::now_v7(), subject: row.subject.clone(), payload };
                    outbox::enqueue(conn, schema, &[replay]).await?;
                }
                Ok(row)
            })
            .await?;
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn nul_characters_are_replaced_so_the_payload_fits_jsonb() {
        let payload = serde_json::json!({"eventType": "up\u{0}dated", "n": 1});
        let clean = super::without_nul(payload);
        assert_eq!(clean, serde_json::json!({"eventType": "up\u{fffd}dated", "n": 1}));
    }
}
