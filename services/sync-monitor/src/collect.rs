//! What the monitor learns from the bus, stored in `monitor`:
//! - `sync.events.>`: every sync attempt (one row per record, `(message id, seq)` once), the
//!   last success per integration, dead letters and bulk jobs;
//! - `sync.conflicts.>`: each conflict's state (pending, escalated with its review link,
//!   resolved).

use chrono::{DateTime, Utc};
use diesel::sql_types::{Jsonb, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Value, json};
use shared::{
    bus::{Delivery, HandlerError},
    db::PgPool,
    schemas::sync::{
        BulkJobChanged, MessageDeadLettered, RecordSynced, SettingChanged, SyncBatchRecorded,
        SyncRecorded,
    },
};

use crate::health::INTEGRATIONS;

pub const EVENTS_CONSUMER: &str = "monitor-events";
pub const CONFLICTS_CONSUMER: &str = "monitor-conflicts";

/// The integration a service's dead letter belongs to: one named in its consumer
/// (`push-ecommerce-levels`), else the service's own system.
pub fn integration_of(service: &str, consumer: &str) -> String {
    let named = |text: &str| {
        text.split(['-', '.', '_']).find(|part| INTEGRATIONS.contains(part)).map(str::to_owned)
    };
    named(consumer).or_else(|| named(service)).unwrap_or_else(|| match service {
        "user-sync" => "directory".into(),
        other => other.trim_end_matches("-sync").to_owned(),
    })
}

fn row(message: &Delivery<Value>, seq: usize, s: &SyncRecorded) -> Value {
    json!({
        "message_id": message.envelope.id, "seq": seq, "at": message.envelope.occurred_at,
        "system": s.system, "direction": s.direction, "entity": s.entity,
        "record_id": s.record_id, "status": s.status.as_str(), "http_status": s.http_status,
        "detail": s.detail.as_deref().map(|d| d.chars().take(500).collect::<String>()),
    })
}

/// What one batch of `sync.events.>` adds.
#[derive(Default)]
struct Batch {
    events: Vec<Value>,
    dead_letters: Vec<Value>,
    bulk_jobs: Vec<Value>,
    settings: Vec<Value>,
}

impl Batch {
    fn add(&mut self, message: &Delivery<Value>) -> Result<(), serde_json::Error> {
        let data = message.envelope.data.clone();
        match message.envelope.kind.as_str() {
            "sync.recorded" => {
                let s: SyncRecorded = serde_json::from_value(data)?;
                self.events.push(row(message, 0, &s));
            }
            "sync.batch_recorded" => {
                let b: SyncBatchRecorded = serde_json::from_value(data)?;
                for (seq, r) in b.records.into_iter().enumerate() {
                    let RecordSynced { record_id, status, http_status, detail } = r;
                    let s = SyncRecorded {
                        system: b.system.clone(),
                        direction: b.direction,
                        entity: b.entity.clone(),
                        record_id,
                        status,
                        http_status,
                        detail,
                    };
                    self.events.push(row(message, seq, &s));
                }
            }
            "sync.dead_lettered" => {
                let d: MessageDeadLettered = serde_json::from_value(data)?;
                self.dead_letters.push(json!({
                    "dead_letter_id": d.dead_letter_id,
                    "integration": integration_of(&d.service, &d.consumer),
                    "service": d.service, "consumer": d.consumer, "subject": d.subject,
                    "error": d.error.chars().take(2000).collect::<String>(),
                    "deliveries": d.deliveries, "at": message.envelope.occurred_at,
                }));
            }
            "sync.setting_changed" => {
                let c: SettingChanged = serde_json::from_value(data)?;
                self.settings.push(json!({
                    "message_id": message.envelope.id, "at": message.envelope.occurred_at,
                    "service": c.service, "who": c.who, "key": c.key,
                    "old_value": c.old_value, "new_value": c.new_value,
                }));
            }
            "sync.bulk_job" => {
                let j: BulkJobChanged = serde_json::from_value(data)?;
                let mut v = serde_json::to_value(j)?;
                v["updated_at"] = json!(message.envelope.occurred_at);
                self.bulk_jobs.push(v);
            }
            _ => {}
        }
        Ok(())
    }

    async fn store(self, conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
        if !self.settings.is_empty() {
            diesel::sql_query(
                "INSERT INTO monitor.settings_audit (message_id, at, service, who, key, old_value, new_value) \
                 SELECT * FROM jsonb_to_recordset($1) AS r(message_id uuid, at timestamptz, service text, \
                      who text, key text, old_value jsonb, new_value jsonb) \
                 ORDER BY at \
                 ON CONFLICT (message_id) DO NOTHING",
            )
            .bind::<Jsonb, _>(Value::Array(self.settings))
            .execute(conn)
            .await?;
        }
        if !self.events.is_empty() {
            // The rows stored now (a redelivery stores none) feed the hourly history and the
            // last success.
            diesel::sql_query(
                "WITH stored AS ( \
                   INSERT INTO monitor.sync_events (message_id, seq, at, system, direction, entity, \
                        record_id, status, http_status, detail) \
                   SELECT message_id, seq, at, system, direction, entity, record_id, status, http_status, detail \
                   FROM jsonb_to_recordset($1) AS r(message_id uuid, seq int, at timestamptz, system text, \
                        direction text, entity text, record_id text, status text, http_status int, detail text) \
                   ON CONFLICT (message_id, seq) DO NOTHING \
                   RETURNING system, at, status IN ('synced', 'skipped', 'drifted') AS ok, \
                             status IN ('retrying', 'dead_lettered') AS failed), \
                 hourly AS ( \
                   INSERT INTO monitor.hourly (system, hour, synced, errors) \
                   SELECT system, date_trunc('hour', at), count(*) FILTER (WHERE ok), count(*) FILTER (WHERE failed) \
                   FROM stored GROUP BY 1, 2 ORDER BY 1, 2 \
                   ON CONFLICT (system, hour) DO UPDATE SET synced = monitor.hourly.synced + excluded.synced, \
                     errors = monitor.hourly.errors + excluded.errors) \
                 INSERT INTO monitor.last_success (system, at) \
                 SELECT system, max(at) FROM stored WHERE ok GROUP BY system ORDER BY system \
                 ON CONFLICT (system) DO UPDATE SET at = greatest(monitor.last_success.at, excluded.at)",
            )
            .bind::<Jsonb, _>(Value::Array(self.events))
            .execute(conn)
            .await?;
        }
        if !self.dead_letters.is_empty() {
            diesel::sql_query(
                "INSERT INTO monitor.service_dead_letters (dead_letter_id, integration, service, consumer, subject, error, deliveries, at) \
                 SELECT * FROM jsonb_to_recordset($1) AS r(dead_letter_id uuid, integration text, service text, \
                      consumer text, subject text, error text, deliveries bigint, at timestamptz) \
                 ON CONFLICT (dead_letter_id) DO NOTHING",
            )
            .bind::<Jsonb, _>(Value::Array(self.dead_letters))
            .execute(conn)
            .await?;
        }
        for job in self.bulk_jobs {
            diesel::sql_query(
                "INSERT INTO monitor.bulk_jobs (job_id, service, source, target, entity, status, total_records, \
                 processed_records, error_count, error, updated_at) \
                 SELECT * FROM jsonb_to_record($1) AS r(job_id text, service text, source text, target text, \
                      entity text, status text, total_records bigint, processed_records bigint, error_count bigint, \
                      error text, updated_at timestamptz) \
                 ON CONFLICT (job_id) DO UPDATE SET status = excluded.status, total_records = excluded.total_records, \
                 processed_records = excluded.processed_records, error_count = excluded.error_count, \
                 error = excluded.error, updated_at = excluded.updated_at \
                 WHERE monitor.bulk_jobs.updated_at <= excluded.updated_at",
            )
            .bind::<Jsonb, _>(job)
            .execute(conn)
            .await?;
        }
        Ok(())
    }
}

/// Stores one batch of `sync.events.>` in one transaction; a message that is not what its type
/// says is refused alone.
pub async fn events(db: &PgPool, batch: Vec<Delivery<Value>>) -> Vec<Result<(), HandlerError>> {
    let mut rows = Batch::default();
    let mut outcomes: Vec<Result<(), HandlerError>> = batch
        .iter()
        .map(|m| {
            rows.add(m).map_err(|e| {
                HandlerError::Permanent(anyhow::anyhow!(
                    "{} {}: {e}",
                    m.envelope.kind,
                    m.envelope.id
                ))
            })
        })
        .collect();
    let stored = async {
        let mut conn = db.get().await.map_err(|e| anyhow::anyhow!("database: {e}"))?;
        conn.transaction::<_, diesel::result::Error, _>(async |conn| rows.store(conn).await)
            .await
            .map_err(anyhow::Error::from)
    }
    .await;
    if let Err(e) = stored {
        let message = format!("{e:#}");
        for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
            *outcome = Err(HandlerError::from(anyhow::anyhow!("storing sync events: {message}")));
        }
    }
    crate::metrics::EVENTS.inc_by(batch.len() as u64);
    outcomes
}

/// Keeps one conflict's state from `sync.conflicts.>`.
pub async fn conflict(db: &PgPool, delivery: Delivery<Value>) -> Result<(), HandlerError> {
    let d = &delivery.envelope.data;
    let text =
        |name: &str| d.get(name).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    let (Some(id), Some(system)) = (text("conflict_id"), text("system")) else {
        return Err(HandlerError::Permanent(anyhow::anyhow!(
            "a conflict message without conflict_id or system"
        )));
    };
    let status = match delivery.envelope.kind.as_str() {
        "sync.conflict_detected" => "pending",
        "sync.conflict_escalated" => "escalated",
        "sync.conflict_resolved" => "resolved",
        _ => return Ok(()),
    };
    let id: uuid::Uuid =
        id.parse().map_err(|e| HandlerError::Permanent(anyhow::anyhow!("conflict_id: {e}")))?;
    let at: DateTime<Utc> = delivery.envelope.occurred_at;
    let mut conn = db.get().await.map_err(|e| anyhow::anyhow!("database: {e}"))?;
    // A later state never goes back (a redelivered detection after the resolution).
    diesel::sql_query(
        "INSERT INTO monitor.conflicts (conflict_id, system, entity, record_id, external_id, status, review_url, updated_at) \
         VALUES ($1::uuid, $2, $3, $4, nullif($5, ''), $6, nullif($7, ''), $8) \
         ON CONFLICT (conflict_id) DO UPDATE SET \
           status = CASE WHEN monitor.conflicts.status = 'resolved' OR excluded.status = 'pending' \
                         THEN monitor.conflicts.status ELSE excluded.status END, \
           review_url = coalesce(excluded.review_url, monitor.conflicts.review_url), \
           external_id = coalesce(monitor.conflicts.external_id, excluded.external_id), \
           updated_at = greatest(monitor.conflicts.updated_at, excluded.updated_at)",
    )
    .bind::<Text, _>(id.to_string())
    .bind::<Text, _>(system)
    .bind::<Text, _>(text("entity").unwrap_or_default())
    .bind::<Text, _>(text("record_id").unwrap_or_default())
    .bind::<Text, _>(text("external_id").unwrap_or_default())
    .bind::<Text, _>(status)
    .bind::<Text, _>(text("review_url").unwrap_or_default())
    .bind::<Timestamptz, _>(at)
    .execute(&mut conn)
    .await
    .map_err(anyhow::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_belong_to_the_integration_their_consumer_or_service_names() {
        assert_eq!(integration_of("inventory-sync", "push-ecommerce"), "ecommerce");
        assert_eq!(integration_of("crm-sync", "crm-inbound"), "crm");
        assert_eq!(integration_of("erp-sync", "outbound-order"), "erp");
        assert_eq!(integration_of("user-sync", "scim"), "directory");
        assert_eq!(integration_of("conflict-resolver", "resolver-detected"), "conflict-resolver");
    }
}
