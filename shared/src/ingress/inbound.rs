//! One inbound path for every connector: a service states what its events are and how it
//! applies a batch of them ([`Inbound`]); the platform does the rest, once.
//!
//! Delivery semantics: at-least-once from JetStream, exactly-once effect. Per batch of ready
//! events, one transaction:
//! 1. the origin is the system (`datasync.origin`), so capture triggers never queue the
//!    system's own changes back to it;
//! 2. events whose outcome is recorded already are skipped (the recorded outcomes in
//!    `<schema>.webhook_events` are the inbox; a replayed dead letter is `received` again);
//! 3. the service applies the rest ([`Inbound::apply`]);
//! 4. each event's outcome is recorded, error-ledger rows that the events retry are closed, one
//!    `sync.events.<system>.inbound.<entity>` announcement per entity and the service's own
//!    messages go to the outbox.
//!
//! When the batch's transaction fails, its events are applied one per transaction
//! ([`super::apply_batch`]); an event the database still refuses is recorded `failed` with a
//! row in the error ledger. An event that is dead-lettered (its delivery budget spent) reads
//! `failed` and gets a ledger row too. Either row is retried (the stored event again) or
//! requeued (the record as the system holds it now, [`Inbound::current`]) from
//! `/admin/record-errors`, and closes once that event is applied; replaying the dead letter
//! closes it the same way.
//!
//! A bulk load's records are the system's events too ([`apply_loaded`]): the same apply, with
//! [`Applying::loaded`] set, the same one-by-one fallback, and a refused record is the job's
//! record error instead of a ledger row.

use std::{collections::BTreeMap, sync::Arc};

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use uuid::Uuid;

use super::EventStatus;
use crate::{
    bus::{
        Delivery, HandlerError,
        dead_letter::DeadLetterHook,
        outbox::{self, OutboxRow},
    },
    db::PgPool,
    record_errors::{self, Action, ErrorActions, Failure, RecordError},
    schemas::{
        Envelope, Event,
        sync::{Direction, RecordSynced, SyncBatchRecorded, SyncStatus},
    },
};

/// One event to apply: its envelope id, when it was accepted, and the event.
pub struct Applying<'a, E> {
    pub id: Uuid,
    pub accepted: DateTime<Utc>,
    pub event: &'a E,
    /// Read by a bulk load, not reported by the system: a connector leaves out what only a
    /// report causes (the ERP's customer emails).
    pub loaded: bool,
}

/// What became of one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub status: EventStatus,
    pub reason: Option<String>,
}

impl Outcome {
    pub fn applied(reason: Option<String>) -> Self {
        Self { status: EventStatus::Applied, reason }
    }
}

/// What a batch caused: one outcome per event, in order, and the messages for the outbox.
pub struct AppliedBatch {
    pub outcomes: Vec<Outcome>,
    pub messages: Vec<OutboxRow>,
}

/// A connector's inbound events: what they are and how they are applied.
pub trait Inbound: Send + Sync + 'static {
    /// The event as the ingress publishes it on `webhooks.<system>.<entity>`; its
    /// [`Event::subject`] is where a retry is published.
    type Event: Event + Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    /// The system the events come from (`crm`, `erp`): their origin.
    const SYSTEM: &'static str;

    fn entity(event: &Self::Event) -> &str;
    /// The system's id of the record the event is about.
    fn record_id(event: &Self::Event) -> &str;
    /// The error-ledger row this event retries, if any.
    fn retry_of(event: &Self::Event) -> Option<i64>;
    fn set_retry_of(event: &mut Self::Event, row: Option<i64>);

    /// What a batch needs from outside the database (the records its events do not carry),
    /// fetched before any connection is taken, so a slow system never holds one: the events as
    /// [`Inbound::apply`] gets them, one per event, in order (default: unchanged). An error
    /// retries the whole batch later.
    fn prepare<'a>(
        &'a self,
        events: Vec<Self::Event>,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Self::Event>>> {
        Box::pin(async { Ok(events) })
    }

    /// Applies `events` in the caller's transaction (origin already set): one outcome per
    /// event, in order.
    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        events: &'a [Applying<'a, Self::Event>],
    ) -> BoxFuture<'a, anyhow::Result<AppliedBatch>>;

    /// The event a retry sends again (default: unchanged). The ERP stamps an event without its
    /// own time with the time it was accepted, so a late retry is fenced by it.
    fn stored(&self, applying: &Applying<'_, Self::Event>) -> Self::Event {
        applying.event.clone()
    }

    /// The record as the system holds it now, as an event (an operator's requeue).
    fn current<'a>(
        &'a self,
        stored: &'a Self::Event,
    ) -> BoxFuture<'a, anyhow::Result<Self::Event>> {
        let _ = stored;
        Box::pin(async {
            anyhow::bail!("{} cannot be read back: retry the stored event", Self::SYSTEM)
        })
    }
}

/// Applies the records a bulk load read from `I`'s system as that system's events: prepared
/// ([`Inbound::prepare`]), then applied in one transaction with the system as origin, marked
/// [`Applying::loaded`], their messages to the outbox. When the database refuses the page, the
/// events are applied one per transaction. An event refused for its data, or whose outcome is
/// `failed`, is a record error naming its record; nothing goes to `webhook_events` or the
/// error ledger (no webhook carried them; the job reports them).
///
/// `page` is the page's records as events and the ones that could not be read as events
/// ([`crate::bulk::split`]); the answer is every record error of the page.
pub async fn apply_loaded<I: Inbound>(
    inbound: &I,
    db: &PgPool,
    schema: &'static str,
    job: &crate::bulk::Job,
    page: (Vec<I::Event>, Vec<crate::bulk::RecordError>),
) -> anyhow::Result<Vec<crate::bulk::RecordError>> {
    let (events, mut errors) = page;
    let applied = events.len();
    errors.extend(apply_events(inbound, db, schema, events).await?);
    tracing::info!(job = %job.id, system = I::SYSTEM, entity = %job.entity, applied, errors = errors.len(), "bulk page applied");
    Ok(errors)
}

async fn apply_events<I: Inbound>(
    inbound: &I,
    db: &PgPool,
    schema: &'static str,
    events: Vec<I::Event>,
) -> anyhow::Result<Vec<crate::bulk::RecordError>> {
    let events = inbound.prepare(events).await?;
    let mut conn = db.get().await?;
    let accepted = chrono::Utc::now();
    let apply = async |conn: &mut AsyncPgConnection, events: &[I::Event]| {
        conn.transaction::<_, anyhow::Error, _>(async |conn| {
            crate::db::set_origin(conn, I::SYSTEM).await?;
            let applying: Vec<Applying<'_, I::Event>> = events
                .iter()
                .map(|event| Applying { id: Uuid::now_v7(), accepted, event, loaded: true })
                .collect();
            let AppliedBatch { outcomes, messages } = inbound.apply(conn, &applying).await?;
            outbox::enqueue(conn, schema, &messages).await?;
            Ok(events
                .iter()
                .zip(outcomes)
                .filter(|(_, o)| o.status == EventStatus::Failed)
                .map(|(event, o)| crate::bulk::RecordError {
                    record_id: I::record_id(event).to_owned(),
                    error: o.reason.unwrap_or_else(|| "failed".into()),
                })
                .collect::<Vec<_>>())
        })
        .await
    };
    match apply(&mut conn, &events).await {
        Ok(errors) => Ok(errors),
        Err(e) if events.len() > 1 && super::is_data_error(&e) => {
            tracing::warn!(error = %format!("{e:#}"), events = events.len(), "bulk page refused; applying its records one by one");
            let mut errors = Vec::new();
            for event in events.chunks(1) {
                match apply(&mut conn, event).await {
                    Ok(refused) => errors.extend(refused),
                    Err(e) if super::is_data_error(&e) => errors.push(crate::bulk::RecordError {
                        record_id: I::record_id(&event[0]).to_owned(),
                        error: format!("{e:#}"),
                    }),
                    Err(e) => return Err(e),
                }
            }
            Ok(errors)
        }
        Err(e) if super::is_data_error(&e) => Ok(events
            .iter()
            .map(|event| crate::bulk::RecordError {
                record_id: I::record_id(event).to_owned(),
                error: format!("{e:#}"),
            })
            .collect()),
        Err(e) => Err(e),
    }
}

/// An applied delivery with its outcome.
type Settled<'a, E> = (&'a Delivery<E>, &'a Outcome);

/// Runs an [`Inbound`] for the platform: the consumers' handler, the ledger's actions and the
/// dead letters' hook.
pub(crate) struct InboundRunner<I> {
    pub(crate) inbound: Arc<I>,
    pub(crate) db: PgPool,
    pub(crate) schema: &'static str,
    pub(crate) service: &'static str,
}

impl<I: Inbound> InboundRunner<I> {
    /// The consumers' batch handler.
    pub(crate) async fn handle(
        self: Arc<Self>,
        mut batch: Vec<Delivery<I::Event>>,
    ) -> Vec<Result<(), HandlerError>> {
        let events = batch.iter().map(|d| d.envelope.data.clone()).collect();
        let prepared = self.inbound.prepare(events).await.and_then(|prepared| {
            anyhow::ensure!(
                prepared.len() == batch.len(),
                "{} prepared events for {}",
                prepared.len(),
                batch.len()
            );
            Ok(prepared)
        });
        match prepared {
            Ok(prepared) => {
                for (delivery, event) in batch.iter_mut().zip(prepared) {
                    delivery.envelope.data = event;
                }
            }
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(
                    error,
                    events = batch.len(),
                    "preparing the batch failed; retrying it"
                );
                return batch
                    .iter()
                    .map(|_| {
                        Err(HandlerError::Retry {
                            error: anyhow::anyhow!(error.clone()),
                            after: None,
                        })
                    })
                    .collect();
            }
        }
        super::apply_batch(
            &self.db,
            &batch,
            |conn, deliveries| {
                let this = self.clone();
                Box::pin(async move { this.apply(conn, deliveries).await })
            },
            |conn, delivery, error| {
                let this = self.clone();
                Box::pin(async move { this.failed(conn, delivery, error).await })
            },
        )
        .await
    }

    async fn apply(
        &self,
        conn: &mut AsyncPgConnection,
        deliveries: &[&Delivery<I::Event>],
    ) -> anyhow::Result<()> {
        let schema = self.schema;
        conn.transaction::<_, anyhow::Error, _>(async |conn| {
            crate::db::set_origin(conn, I::SYSTEM).await?;
            let ids: Vec<Uuid> = deliveries.iter().map(|d| d.envelope.id).collect();
            let done = super::settled(conn, schema, &ids).await?;
            let fresh: Vec<&Delivery<I::Event>> =
                deliveries.iter().copied().filter(|d| !done.contains(&d.envelope.id)).collect();
            if fresh.is_empty() {
                return Ok(());
            }
            let applying: Vec<Applying<'_, I::Event>> = fresh
                .iter()
                .map(|d| Applying {
                    id: d.envelope.id,
                    accepted: d.envelope.occurred_at,
                    event: &d.envelope.data,
                    loaded: false,
                })
                .collect();
            let AppliedBatch { outcomes, mut messages } =
                self.inbound.apply(conn, &applying).await?;
            anyhow::ensure!(
                outcomes.len() == fresh.len(),
                "{} outcomes for {} events",
                outcomes.len(),
                fresh.len()
            );
            let mut by_entity: BTreeMap<&str, Vec<Settled<'_, I::Event>>> = BTreeMap::new();
            for (delivery, outcome) in fresh.iter().zip(&outcomes) {
                by_entity
                    .entry(I::entity(&delivery.envelope.data))
                    .or_default()
                    .push((delivery, outcome));
            }
            for (entity, mine) in by_entity {
                let statuses: Vec<(Uuid, EventStatus, Option<String>)> =
                    mine.iter().map(|(d, o)| (d.envelope.id, o.status, o.reason.clone())).collect();
                super::record(conn, schema, I::SYSTEM, entity, &statuses).await?;
                messages.push(OutboxRow::new(&Envelope::new(
                    self.service,
                    SyncBatchRecorded {
                        system: I::SYSTEM.into(),
                        direction: Direction::Inbound,
                        entity: entity.into(),
                        records: mine
                            .iter()
                            .map(|(d, o)| RecordSynced {
                                record_id: I::record_id(&d.envelope.data).to_owned(),
                                status: match o.status {
                                    EventStatus::Applied => SyncStatus::Synced,
                                    EventStatus::Conflict => SyncStatus::Skipped,
                                    _ => SyncStatus::Failed,
                                },
                                http_status: None,
                                detail: o.reason.clone(),
                            })
                            .collect(),
                    },
                )));
            }
            // A retried ledger row closes once its retry is applied (an unrelated later event
            // of the same record does not close it).
            let retried: Vec<i64> = fresh
                .iter()
                .zip(&outcomes)
                .filter(|(_, o)| o.status != EventStatus::Failed)
                .filter_map(|(d, _)| I::retry_of(&d.envelope.data))
                .collect();
            record_errors::resolve(conn, schema, &retried).await?;
            outbox::enqueue(conn, schema, &messages).await?;
            Ok(())
        })
        .await
    }

    /// An event the database refuses: `failed`, with a row in the error ledger.
    async fn failed(
        &self,
        conn: &mut AsyncPgConnection,
        delivery: &Delivery<I::Event>,
        error: &str,
    ) -> anyhow::Result<()> {
        let applying = Applying {
            id: delivery.envelope.id,
            accepted: delivery.envelope.occurred_at,
            event: &delivery.envelope.data,
            loaded: false,
        };
        let mut stored = self.inbound.stored(&applying);
        I::set_retry_of(&mut stored, None);
        let payload = serde_json::to_value(&stored)?;
        let event = &delivery.envelope.data;
        let failure = Failure {
            system: I::SYSTEM,
            entity: I::entity(event),
            record_id: I::record_id(event),
            direction: Direction::Inbound,
            error,
            payload: &payload,
        };
        super::record_failed(conn, self.schema, delivery.envelope.id, &failure).await
    }
}

/// The open inbound ledger row of a record, if any.
async fn open_row(
    conn: &mut AsyncPgConnection,
    schema: &str,
    system: &str,
    entity: &str,
    record_id: &str,
) -> diesel::QueryResult<Option<i64>> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }
    let rows: Vec<Id> = diesel::sql_query(format!(
        "SELECT id FROM {schema}.record_errors WHERE status = 'open' AND direction = 'inbound' \
           AND system = $1 AND entity = $2 AND record_id = $3"
    ))
    .bind::<Text, _>(system)
    .bind::<Text, _>(entity)
    .bind::<Text, _>(record_id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| r.id))
}

/// The event of a dead letter's envelope, if it decodes.
fn event_of<I: Inbound>(envelope: &Value) -> Option<(I::Event, DateTime<Utc>)> {
    let envelope: Envelope<I::Event> = serde_json::from_value(envelope.clone()).ok()?;
    Some((envelope.data, envelope.occurred_at))
}

impl<I: Inbound> DeadLetterHook for InboundRunner<I> {
    /// A dead-lettered event gets a ledger row (its status reads `failed` already).
    fn dead_lettered<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        _subject: &'a str,
        payload: &'a Value,
        error: &'a str,
    ) -> BoxFuture<'a, diesel::QueryResult<()>> {
        Box::pin(async move {
            let Some((event, accepted)) = event_of::<I>(payload) else {
                return Ok(());
            };
            let id = payload.get("id").and_then(Value::as_str).and_then(|s| s.parse().ok());
            let applying =
                Applying { id: id.unwrap_or_default(), accepted, event: &event, loaded: false };
            let mut stored = self.inbound.stored(&applying);
            I::set_retry_of(&mut stored, None);
            let stored = serde_json::to_value(&stored).unwrap_or(Value::Null);
            let error = format!("dead-lettered: {error}");
            let failure = Failure {
                system: I::SYSTEM,
                entity: I::entity(&event),
                record_id: I::record_id(&event),
                direction: Direction::Inbound,
                error: &error,
                payload: &stored,
            };
            record_errors::record_failure(conn, self.schema, std::slice::from_ref(&failure)).await
        })
    }

    /// A replayed event names the record's open ledger row, which closes once it is applied.
    fn replayed<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        _subject: &'a str,
        payload: &'a Value,
    ) -> BoxFuture<'a, diesel::QueryResult<Value>> {
        Box::pin(async move {
            let Some((mut event, _)) = event_of::<I>(payload) else {
                return Ok(payload.clone());
            };
            let row =
                open_row(conn, self.schema, I::SYSTEM, I::entity(&event), I::record_id(&event))
                    .await?;
            if row.is_none() {
                return Ok(payload.clone());
            }
            I::set_retry_of(&mut event, row);
            let mut payload = payload.clone();
            if let (Some(data), Ok(event)) = (payload.get_mut("data"), serde_json::to_value(&event))
            {
                *data = event;
            }
            Ok(payload)
        })
    }
}

impl<I: Inbound> ErrorActions for InboundRunner<I> {
    /// Retry: the stored event again; requeue: the record as the system holds it now. Either
    /// names the row, which closes once the event is applied.
    fn messages<'a>(
        &'a self,
        action: Action,
        row: &'a RecordError,
    ) -> BoxFuture<'a, anyhow::Result<Vec<OutboxRow>>> {
        Box::pin(async move {
            let stored: I::Event = serde_json::from_value(row.last_payload.clone())?;
            let mut event = match action {
                Action::Requeue => self.inbound.current(&stored).await?,
                _ => stored,
            };
            I::set_retry_of(&mut event, Some(row.id));
            Ok(vec![OutboxRow::new(&Envelope::new(I::SYSTEM, event))])
        })
    }
}
