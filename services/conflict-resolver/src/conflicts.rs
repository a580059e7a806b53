//! The conflict queue (`resolver.conflicts`): every query on it, and trying a conflict.
//!
//! A conflict is tried in one transaction that locks its row: only a `pending` one is decided,
//! so nothing is resolved twice, whether two replicas, a scheduled pass and a new delivery, or
//! a person's double click meet on it. A decision and the `sync.conflicts.resolved.<system>`
//! message that carries it are committed together (outbox).

use chrono::{DateTime, Utc};
use diesel::{
    QueryableByName,
    sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz, Uuid as SqlUuid},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::{Map, Value};
use shared::{
    bus::outbox::{self, OutboxRow},
    merge::{self, Clocked, Decision, Dispute, Rules, Winner},
    schemas::{
        Envelope,
        conflict::{ConflictDetected, ConflictEscalated, ConflictResolved},
    },
};
use uuid::Uuid;

use crate::{SCHEMA, SERVICE};

/// One stored conflict.
#[derive(Clone, Debug, PartialEq, QueryableByName, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    #[diesel(sql_type = SqlUuid)]
    pub id: Uuid,
    #[diesel(sql_type = Text)]
    pub system: String,
    #[diesel(sql_type = Text)]
    pub entity: String,
    #[diesel(sql_type = BigInt)]
    pub record_id: i64,
    #[diesel(sql_type = Text)]
    pub external_id: String,
    /// The fields both sides changed differently, as detected.
    #[diesel(sql_type = Jsonb)]
    pub fields: Value,
    #[diesel(sql_type = Jsonb)]
    pub base: Value,
    #[diesel(sql_type = Jsonb)]
    pub local: Value,
    #[diesel(sql_type = Jsonb)]
    pub remote: Value,
    #[diesel(sql_type = Timestamptz)]
    pub local_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub local_clock: String,
    #[diesel(sql_type = Timestamptz)]
    pub remote_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub remote_clock: String,
    /// Why an earlier resolution of this record could not be applied, when that is what this
    /// conflict is (no rule decides it).
    #[diesel(sql_type = Nullable<Text>)]
    pub unapplied: Option<String>,
    /// `pending`, `escalated` or `resolved`.
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub rule: Option<String>,
    /// `local`, `remote`, `merged`, `fields` (chosen field by field) or `dismissed` (nothing
    /// sent back).
    #[diesel(sql_type = Nullable<Text>)]
    pub winner: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub explanation: Option<String>,
    /// The values sent back to the owning service.
    #[diesel(sql_type = Nullable<Jsonb>)]
    pub resolution: Option<Value>,
    /// `rule:<name>` or the person who decided.
    #[diesel(sql_type = Nullable<Text>)]
    pub resolved_by: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub detected_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub tried_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub escalated_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub resolved_at: Option<DateTime<Utc>>,
    /// When an administrator undid this automatic resolution.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub undone_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, system, entity, record_id, external_id, fields, base, local, remote, \
    local_at, local_clock, remote_at, remote_clock, unapplied, status, rule, winner, explanation, resolution, \
    resolved_by, detected_at, tried_at, escalated_at, resolved_at, undone_at";

fn object(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

impl Conflict {
    fn clocked(at: DateTime<Utc>, clock: &str) -> Clocked {
        Clocked { at, clock: clock.to_owned() }
    }

    /// What the rules decide for it now (`None`: a person must).
    pub fn decide(&self, rules: &Rules) -> Option<Decision> {
        if self.unapplied.is_some() {
            return None;
        }
        let (base, local, remote) = (object(&self.base), object(&self.local), object(&self.remote));
        let (local_at, remote_at) = (
            Self::clocked(self.local_at, &self.local_clock),
            Self::clocked(self.remote_at, &self.remote_clock),
        );
        merge::decide(
            &Dispute {
                system: &self.system,
                base: &base,
                local: &local,
                remote: &remote,
                local_at: &local_at,
                remote_at: &remote_at,
            },
            rules,
        )
    }
}

/// Stores a detected conflict (a redelivery changes nothing); whether it is new.
pub async fn store(
    conn: &mut AsyncPgConnection,
    detected: &ConflictDetected,
) -> diesel::QueryResult<bool> {
    let inserted = diesel::sql_query(
        "INSERT INTO resolver.conflicts (id, system, entity, record_id, external_id, fields, base, \
             local, remote, local_at, local_clock, remote_at, remote_clock, unapplied) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind::<SqlUuid, _>(detected.conflict_id)
    .bind::<Text, _>(&detected.system)
    .bind::<Text, _>(&detected.entity)
    .bind::<BigInt, _>(detected.record_id)
    .bind::<Text, _>(&detected.external_id)
    .bind::<Jsonb, _>(serde_json::json!(detected.fields))
    .bind::<Jsonb, _>(Value::Object(detected.base.clone()))
    .bind::<Jsonb, _>(Value::Object(detected.local.clone()))
    .bind::<Jsonb, _>(Value::Object(detected.remote.clone()))
    .bind::<Timestamptz, _>(detected.local_updated_at)
    .bind::<Text, _>(detected.local_clock.as_deref().unwrap_or("local"))
    .bind::<Timestamptz, _>(detected.remote_updated_at)
    .bind::<Text, _>(detected.remote_clock.as_deref().unwrap_or(&detected.system))
    .bind::<Nullable<Text>, _>(detected.unapplied.as_deref())
    .execute(conn)
    .await?;
    Ok(inserted > 0)
}

/// One conflict, locked for the caller's transaction when `lock`.
pub async fn get(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    lock: bool,
) -> diesel::QueryResult<Option<Conflict>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let mut rows: Vec<Conflict> =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM resolver.conflicts WHERE id = $1{lock}"))
            .bind::<SqlUuid, _>(id)
            .load(conn)
            .await?;
    Ok(rows.pop())
}

/// Filters of the list.
#[derive(Clone, Debug, Default, serde::Deserialize, utoipa::IntoParams)]
pub struct Filter {
    pub system: Option<String>,
    pub entity: Option<String>,
    /// `pending`, `escalated` or `resolved`.
    pub status: Option<String>,
    /// Only conflicts detected at least this many minutes ago.
    pub older_than_minutes: Option<i64>,
    /// At most this many (default 100, at most 1000), newest first.
    pub limit: Option<i64>,
}

/// The conflicts matching `filter`, newest first.
pub async fn list(
    conn: &mut AsyncPgConnection,
    filter: &Filter,
) -> diesel::QueryResult<Vec<Conflict>> {
    diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM resolver.conflicts \
         WHERE ($1::text IS NULL OR system = $1) AND ($2::text IS NULL OR entity = $2) \
           AND ($3::text IS NULL OR status = $3) \
           AND ($4::bigint IS NULL OR detected_at <= now() - make_interval(mins => $4::int)) \
         ORDER BY detected_at DESC, id LIMIT $5"
    ))
    .bind::<Nullable<Text>, _>(filter.system.as_deref())
    .bind::<Nullable<Text>, _>(filter.entity.as_deref())
    .bind::<Nullable<Text>, _>(filter.status.as_deref())
    .bind::<Nullable<BigInt>, _>(filter.older_than_minutes)
    .bind::<BigInt, _>(filter.limit.unwrap_or(100).clamp(1, 1000))
    .load(conn)
    .await
}

/// Ids of the unresolved conflicts, oldest first (a scheduled pass tries them again).
pub async fn unresolved(
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> diesel::QueryResult<Vec<Uuid>> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let ids: Vec<Id> = diesel::sql_query(
        "SELECT id FROM resolver.conflicts WHERE status <> 'resolved' ORDER BY detected_at LIMIT $1",
    )
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(ids.into_iter().map(|i| i.id).collect())
}

/// How a conflict ends: who decided, which side, the values and why.
pub struct Resolution {
    pub rule: Option<String>,
    pub winner: &'static str,
    pub values: Map<String, Value>,
    pub explanation: String,
    pub resolved_by: String,
}

impl Resolution {
    pub fn of(decision: Decision) -> Self {
        Self {
            rule: Some(decision.rule.as_str().to_owned()),
            winner: match decision.winner {
                Winner::Local => "local",
                Winner::Remote => "remote",
                Winner::Merged => "merged",
            },
            resolved_by: format!("rule:{}", decision.rule.as_str()),
            values: decision.values,
            explanation: decision.explanation,
        }
    }
}

/// Resolves a locked `pending` or `escalated` conflict in the caller's transaction: the row
/// records it and `sync.conflicts.resolved.<system>` carries the values to the owning service.
pub async fn resolve(
    conn: &mut AsyncPgConnection,
    conflict: &Conflict,
    resolution: Resolution,
) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "UPDATE resolver.conflicts SET status = 'resolved', rule = $2, winner = $3, \
             explanation = $4, resolution = $5, resolved_by = $6, resolved_at = now(), \
             tried_at = now() \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(conflict.id)
    .bind::<Nullable<Text>, _>(resolution.rule.as_deref())
    .bind::<Text, _>(resolution.winner)
    .bind::<Text, _>(&resolution.explanation)
    .bind::<Jsonb, _>(Value::Object(resolution.values.clone()))
    .bind::<Text, _>(&resolution.resolved_by)
    .execute(conn)
    .await?;
    let message = ConflictResolved {
        conflict_id: conflict.id,
        system: conflict.system.clone(),
        entity: conflict.entity.clone(),
        record_id: conflict.record_id,
        values: resolution.values,
        resolved_by: Some(resolution.resolved_by),
        undo: false,
    };
    outbox::enqueue(conn, SCHEMA, &[OutboxRow::new(&Envelope::new(SERVICE, message))]).await
}

/// Closes a locked unresolved conflict without sending anything back (a person's call, e.g.
/// for a resolution whose record is gone).
pub async fn dismiss(conn: &mut AsyncPgConnection, conflict: &Conflict) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "UPDATE resolver.conflicts SET status = 'resolved', winner = 'dismissed', \
             explanation = 'dismissed by an administrator: nothing sent back', \
             resolved_by = 'admin', resolved_at = now() \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(conflict.id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Marks a locked `pending` conflict for a person: `escalated`, with why, and announces it once
/// (`sync.conflicts.escalated.<system>`, whose email and Slack message link to `review_url`);
/// whether it was still pending.
pub async fn escalate(
    conn: &mut AsyncPgConnection,
    conflict: &Conflict,
    why: &str,
    review_url: &str,
) -> diesel::QueryResult<bool> {
    let n = diesel::sql_query(
        "UPDATE resolver.conflicts SET status = 'escalated', explanation = $2, \
             escalated_at = now(), tried_at = now() \
         WHERE id = $1 AND status = 'pending'",
    )
    .bind::<SqlUuid, _>(conflict.id)
    .bind::<Text, _>(why)
    .execute(conn)
    .await?;
    if n == 0 {
        return Ok(false);
    }
    let (base, local, remote) =
        (object(&conflict.base), object(&conflict.local), object(&conflict.remote));
    let changes = |side: &Map<String, Value>| -> Map<String, Value> {
        merge::changed(&base, side)
            .into_iter()
            .map(|f| (f.clone(), side.get(&f).cloned().unwrap_or(Value::Null)))
            .collect()
    };
    let escalated = ConflictEscalated {
        conflict_id: conflict.id,
        system: conflict.system.clone(),
        entity: conflict.entity.clone(),
        record_id: conflict.record_id,
        external_id: conflict.external_id.clone(),
        local_changes: changes(&local),
        remote_changes: changes(&remote),
        review_url: format!(
            "{}/review/conflicts/{}",
            review_url.trim_end_matches('/'),
            conflict.id
        ),
    };
    outbox::enqueue(conn, SCHEMA, &[OutboxRow::new(&Envelope::new(SERVICE, escalated))]).await?;
    Ok(true)
}

/// Records that a rule pass looked at a conflict it could not decide yet.
pub async fn tried(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> diesel::QueryResult<()> {
    diesel::sql_query("UPDATE resolver.conflicts SET tried_at = now() WHERE id = ANY($1)")
        .bind::<Array<SqlUuid>, _>(ids)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Undoes a locked automatic resolution: the other side's values of the same fields become the
/// resolution, published with `undo` so the owning service applies them whatever it holds.
pub async fn undo(
    conn: &mut AsyncPgConnection,
    conflict: &Conflict,
    other: &'static str,
    values: Map<String, Value>,
) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "UPDATE resolver.conflicts SET undone_at = now(), winner = $2, resolution = $3, \
             resolved_by = 'admin', \
             explanation = coalesce(explanation, '') || ' (undone by an administrator: the ' || $2 || ' side sent back)' \
         WHERE id = $1",
    )
    .bind::<SqlUuid, _>(conflict.id)
    .bind::<Text, _>(other)
    .bind::<Jsonb, _>(Value::Object(values.clone()))
    .execute(conn)
    .await?;
    let message = ConflictResolved {
        conflict_id: conflict.id,
        system: conflict.system.clone(),
        entity: conflict.entity.clone(),
        record_id: conflict.record_id,
        values,
        resolved_by: Some("admin (undo)".into()),
        undo: true,
    };
    outbox::enqueue(conn, SCHEMA, &[OutboxRow::new(&Envelope::new(SERVICE, message))]).await
}
