//! What became of every accepted inbound event (`<schema>.webhook_events`): written
//! `received` by the webhook ingress, moved on by the consumer that applies the event (in the
//! transaction of its effect) or by the dead-letter path. Every query on the table lives here
//! (raw SQL: the table exists once per service schema).

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde::Serialize;
use uuid::Uuid;

use crate::db::group_commit::Batch;

/// What became of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    /// Durably accepted, not applied yet.
    Received,
    Applied,
    /// Not applied: it conflicts with a local change (see `sync.conflicts`).
    Conflict,
    /// Not applied, for the reason given (dead-lettered, or refused by the consumer).
    Failed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Received => "received",
            EventStatus::Applied => "applied",
            EventStatus::Conflict => "conflict",
            EventStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "applied" => EventStatus::Applied,
            "conflict" => EventStatus::Conflict,
            "failed" => EventStatus::Failed,
            _ => EventStatus::Received,
        }
    }
}

/// An event as `GET /events/{id}` reports it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventRecord {
    pub id: Uuid,
    pub system: String,
    pub entity: String,
    /// The sender's id of the event.
    pub delivery_id: String,
    pub status: EventStatus,
    pub reason: Option<String>,
    pub received_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    system: String,
    #[diesel(sql_type = Text)]
    entity: String,
    #[diesel(sql_type = Text)]
    delivery_id: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    received_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
}

pub async fn find(
    conn: &mut AsyncPgConnection,
    schema: &str,
    id: Uuid,
) -> diesel::QueryResult<Option<EventRecord>> {
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT id, system, entity, delivery_id, status, reason, received_at, updated_at \
         FROM {schema}.webhook_events WHERE id = $1"
    ))
    .bind::<diesel::sql_types::Uuid, _>(id)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next().map(|r| EventRecord {
        id: r.id,
        system: r.system,
        entity: r.entity,
        delivery_id: r.delivery_id,
        status: EventStatus::parse(&r.status),
        reason: r.reason,
        received_at: r.received_at,
        updated_at: r.updated_at,
    }))
}

/// Of `ids`, the events whose outcome is recorded already (applied, conflict or failed): a
/// consumer that records outcomes with [`record`] in its effect's transaction uses this as its
/// inbox (a redelivered event is skipped), without an inbox row per event.
pub async fn settled(
    conn: &mut AsyncPgConnection,
    schema: &str,
    ids: &[Uuid],
) -> diesel::QueryResult<std::collections::HashSet<Uuid>> {
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
    }
    if ids.is_empty() {
        return Ok(Default::default());
    }
    let rows: Vec<Id> = diesel::sql_query(format!(
        "SELECT id FROM {schema}.webhook_events WHERE id = ANY($1) AND status <> 'received'"
    ))
    .bind::<Array<diesel::sql_types::Uuid>, _>(ids)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Records what became of events, in the caller's transaction (the one of their effect).
/// `(envelope id, status, reason)`; an event whose `received` row is not written yet (the
/// consumer was faster than the ingress's group commit) is inserted, and that row then only
/// adds the delivery id.
pub async fn record(
    conn: &mut AsyncPgConnection,
    schema: &str,
    system: &str,
    entity: &str,
    outcomes: &[(Uuid, EventStatus, Option<String>)],
) -> diesel::QueryResult<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    diesel::sql_query(format!(
        "INSERT INTO {schema}.webhook_events (id, system, entity, delivery_id, status, reason) \
         SELECT id, $1, $2, '', status, reason \
         FROM unnest($3::uuid[], $4::text[], $5::text[]) AS t(id, status, reason) \
         ON CONFLICT (id) DO UPDATE SET status = excluded.status, reason = excluded.reason, \
             updated_at = now()"
    ))
    .bind::<Text, _>(system)
    .bind::<Text, _>(entity)
    .bind::<Array<diesel::sql_types::Uuid>, _>(outcomes.iter().map(|o| o.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(outcomes.iter().map(|o| o.1.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(outcomes.iter().map(|o| o.2.as_deref()).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a dead-lettered webhook event (`subject` = `webhooks.<system>.<entity>`) `failed`.
pub(crate) async fn dead_lettered(
    conn: &mut AsyncPgConnection,
    schema: &str,
    subject: &str,
    id: Uuid,
    error: &str,
) -> diesel::QueryResult<()> {
    let mut parts = subject.splitn(3, '.').skip(1);
    let (system, entity) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let reason = format!("dead-lettered: {error}");
    record(conn, schema, system, entity, &[(id, EventStatus::Failed, Some(reason))]).await
}

/// Sets a dead-lettered event back to `received` when its dead letter is replayed, so the
/// consumer applies it again (a `failed` outcome would make it skip the event as settled).
pub(crate) async fn replayed(
    conn: &mut AsyncPgConnection,
    schema: &str,
    id: Uuid,
    dead_letter: Uuid,
) -> diesel::QueryResult<()> {
    diesel::sql_query(format!(
        "UPDATE {schema}.webhook_events SET status = 'received', \
             reason = 'replayed from dead letter ' || $2::text, updated_at = now() \
         WHERE id = $1 AND status = 'failed'"
    ))
    .bind::<diesel::sql_types::Uuid, _>(id)
    .bind::<Text, _>(dead_letter.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// One accepted event's `received` row.
#[derive(Clone, Debug)]
pub struct ReceivedRow {
    pub id: Uuid,
    pub system: String,
    pub entity: String,
    pub delivery_id: String,
}

/// Writes `received` rows with a group commit: concurrent webhooks share one transaction. A row
/// that exists already (a redelivery, or a consumer that was faster) keeps its status.
pub struct Received {
    pub schema: &'static str,
}

impl Batch for Received {
    type Request = Vec<ReceivedRow>;
    type Response = ();

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        batch: &'a [Vec<ReceivedRow>],
    ) -> BoxFuture<'a, diesel::QueryResult<Vec<()>>> {
        Box::pin(async move {
            let rows: Vec<&ReceivedRow> = batch.iter().flatten().collect();
            diesel::sql_query(format!(
                "INSERT INTO {}.webhook_events (id, system, entity, delivery_id, status) \
                 SELECT id, system, entity, delivery_id, 'received' \
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) \
                     AS t(id, system, entity, delivery_id) \
                 ORDER BY id ON CONFLICT (id) DO UPDATE SET delivery_id = excluded.delivery_id",
                self.schema
            ))
            .bind::<Array<diesel::sql_types::Uuid>, _>(
                rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            )
            .bind::<Array<Text>, _>(rows.iter().map(|r| r.system.as_str()).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(rows.iter().map(|r| r.entity.as_str()).collect::<Vec<_>>())
            .bind::<Array<Text>, _>(rows.iter().map(|r| r.delivery_id.as_str()).collect::<Vec<_>>())
            .execute(conn)
            .await?;
            Ok(vec![(); batch.len()])
        })
    }
}
