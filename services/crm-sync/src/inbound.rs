//! CRM → local: the webhook source (verified by the shared ingress) and the consumer that
//! applies the events.
//!
//! `POST /webhooks/crm` takes one event or an array of them (`{eventId?, event, type, id,
//! timestamp, data}`), signed with Standard Webhooks or HubSpot v3; each event is published on
//! `webhooks.crm.<entity>`.
//!
//! The consumer takes every ready event (up to `CRM_INBOUND_BATCH`) and applies them in one
//! transaction: records locked in id order, the three-way merge per event
//! ([`crate::domain::merge`]) in memory, then per entity one insert, one update and one
//! sync-state upsert; conflicts announced on `sync.conflicts.detected.crm`; each event's status,
//! which is also the inbox (an event whose outcome is recorded is skipped when redelivered);
//! and one `sync.events.crm.inbound.<entity>` announcement per entity, all committed together.
//! Changes are written with origin `crm`, so the capture trigger never queues them back to the
//! CRM. When the batch's transaction fails on a database error, its events are applied one per
//! transaction, and one that still fails is recorded `failed` with a row in the error ledger
//! (its retry re-publishes it).

use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde_json::Value;
use shared::{
    bus::{
        Delivery, HandlerError,
        outbox::{self, OutboxRow},
    },
    http::{ApiError, verify::Verified},
    ingress::{EventStatus, InboundEvent},
    mappers::crm as mapper,
    record_errors::{self, Failure},
    schemas::{
        Envelope,
        crm::{CrmEvent, Entity},
        sync::{Direction, RecordSynced, SyncBatchRecorded, SyncStatus},
    },
};
use uuid::Uuid;

use crate::{
    SCHEMA, SERVICE,
    working::{Outcome, apply_all},
};

/// The durable consumer's name.
pub const CONSUMER: &str = "crm-inbound";

/// Splits a verified body into events (see the module doc); shape errors are 400s and invalid
/// values 422s, each naming the field.
pub fn parse(verified: &Verified, body: &[u8]) -> Result<Vec<InboundEvent>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::Invalid {
        status: actix_web::http::StatusCode::BAD_REQUEST,
        field: Some("body".into()),
        detail: format!("the body is not JSON: {e}"),
    })?;
    let events = mapper::parse_webhook(&value, verified.delivery_id.as_deref()).map_err(|e| {
        let status = if e.field.contains("data.") {
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
        } else {
            actix_web::http::StatusCode::BAD_REQUEST
        };
        ApiError::Invalid { status, field: Some(e.field), detail: e.detail }
    })?;
    events
        .into_iter()
        .map(|(id, event)| {
            Ok(InboundEvent {
                id,
                entity: event.entity.as_str().to_owned(),
                data: serde_json::to_value(&event).map_err(anyhow::Error::from)?,
            })
        })
        .collect()
}

/// Applies `deliveries` in one transaction; `Err` when the transaction failed.
async fn apply_batch(
    conn: &mut AsyncPgConnection,
    deliveries: &[&Delivery<CrmEvent>],
) -> anyhow::Result<Vec<(Uuid, Entity, Outcome)>> {
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        shared::db::set_origin(conn, "crm").await?;
        // The events' recorded outcomes are the inbox: a redelivered event is skipped.
        let ids: Vec<Uuid> = deliveries.iter().map(|d| d.envelope.id).collect();
        let done = shared::ingress::settled(conn, SCHEMA, &ids).await?;
        let fresh: Vec<&Delivery<CrmEvent>> =
            deliveries.iter().copied().filter(|d| !done.contains(&d.envelope.id)).collect();
        let events: Vec<&CrmEvent> = fresh.iter().map(|d| &d.envelope.data).collect();
        let (applied, mut messages) = apply_all(conn, &events).await?;
        let outcomes: Vec<(Uuid, Entity, Outcome)> = fresh
            .iter()
            .zip(applied)
            .map(|(d, o)| (d.envelope.id, d.envelope.data.entity, o))
            .collect();
        record_outcomes(conn, &fresh, &outcomes, &mut messages).await?;
        outbox::enqueue(conn, SCHEMA, &messages).await?;
        Ok(outcomes)
    })
    .await
}

/// Event statuses, ledger rows closed, and one announcement per entity.
async fn record_outcomes(
    conn: &mut AsyncPgConnection,
    deliveries: &[&Delivery<CrmEvent>],
    outcomes: &[(Uuid, Entity, Outcome)],
    messages: &mut Vec<OutboxRow>,
) -> diesel::QueryResult<()> {
    for entity in Entity::ALL {
        let mine: Vec<(&Delivery<CrmEvent>, &Outcome)> = deliveries
            .iter()
            .zip(outcomes)
            .filter(|(_, (_, e, _))| *e == entity)
            .map(|(d, (_, _, o))| (*d, o))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let statuses: Vec<(Uuid, EventStatus, Option<String>)> =
            mine.iter().map(|(d, o)| (d.envelope.id, o.status, o.reason.clone())).collect();
        shared::ingress::record(conn, SCHEMA, "crm", entity.as_str(), &statuses).await?;
        // A retried ledger row closes once its retry is applied (an unrelated later event of
        // the same record does not close it).
        let retried: Vec<i64> = mine
            .iter()
            .filter(|(_, o)| o.status != EventStatus::Failed)
            .filter_map(|(d, _)| d.envelope.data.retry_of)
            .collect();
        record_errors::resolve(conn, SCHEMA, &retried).await?;
        let batch = SyncBatchRecorded {
            system: "crm".into(),
            direction: Direction::Inbound,
            entity: entity.as_str().into(),
            records: mine
                .iter()
                .map(|(d, o)| RecordSynced {
                    record_id: d.envelope.data.id.clone(),
                    status: match o.status {
                        EventStatus::Applied => SyncStatus::Synced,
                        EventStatus::Conflict => SyncStatus::Skipped,
                        _ => SyncStatus::Failed,
                    },
                    http_status: None,
                    detail: o.reason.clone(),
                })
                .collect(),
        };
        messages.push(OutboxRow::new(&Envelope::new(SERVICE, batch)));
    }
    Ok(())
}

/// Records an event that cannot be applied: `failed`, with a row in the error ledger.
async fn record_failure(
    conn: &mut AsyncPgConnection,
    delivery: &Delivery<CrmEvent>,
    error: &str,
) -> anyhow::Result<()> {
    let event = &delivery.envelope.data;
    let payload = serde_json::to_value(event)?;
    let failure = Failure {
        system: "crm",
        entity: event.entity.as_str(),
        record_id: &event.id,
        direction: Direction::Inbound,
        error,
        payload: &payload,
    };
    shared::ingress::record_failed(conn, SCHEMA, delivery.envelope.id, &failure).await
}

/// The consumer's batch handler.
pub async fn handle(
    db: &shared::db::PgPool,
    batch: Vec<Delivery<CrmEvent>>,
) -> Vec<Result<(), HandlerError>> {
    shared::ingress::apply_batch(
        db,
        &batch,
        |conn, deliveries| Box::pin(async move { apply_batch(conn, deliveries).await.map(|_| ()) }),
        |conn, delivery, error| Box::pin(record_failure(conn, delivery, error)),
    )
    .await
}
