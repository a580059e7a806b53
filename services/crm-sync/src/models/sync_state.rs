//! `crm.sync_state`: per record, the last copy both sides agreed on (the base of three-way
//! merges), the local version the CRM holds, the CRM's time of that state, and an open
//! conflict's held fields.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::{ExpressionMethods, QueryDsl, upsert::excluded};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::{Map, Value};
use shared::schemas::crm::Entity;
use uuid::Uuid;

use super::schema::sync_state;

/// One record's sync state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SyncState {
    /// The agreed copy (local column names).
    pub base: Map<String, Value>,
    /// The `local_version` the CRM holds.
    pub synced_version: i64,
    /// The CRM's own time of the newest state we know (deletes older than it are stale).
    pub remote_updated_at: Option<DateTime<Utc>>,
    /// Per field, the CRM's time (epoch ms) of its value in `base`: older changes of that field
    /// are stale.
    pub field_times: Map<String, Value>,
    /// Fields of an open conflict, with the CRM's values: not pushed until it is resolved.
    pub held: Map<String, Value>,
    pub conflict_id: Option<Uuid>,
}

#[derive(diesel::Queryable)]
struct Row {
    record_id: i64,
    base: Value,
    synced_version: i64,
    remote_updated_at: Option<DateTime<Utc>>,
    field_times: Value,
    held: Value,
    conflict_id: Option<Uuid>,
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The states of these records (records never synced are missing).
pub async fn of(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    ids: &[i64],
) -> diesel::QueryResult<HashMap<i64, SyncState>> {
    let rows: Vec<Row> = sync_state::table
        .filter(sync_state::entity.eq(entity.as_str()))
        .filter(sync_state::record_id.eq_any(ids))
        .select((
            sync_state::record_id,
            sync_state::base,
            sync_state::synced_version,
            sync_state::remote_updated_at,
            sync_state::field_times,
            sync_state::held,
            sync_state::conflict_id,
        ))
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.record_id,
                SyncState {
                    base: object(r.base),
                    synced_version: r.synced_version,
                    remote_updated_at: r.remote_updated_at,
                    field_times: object(r.field_times),
                    held: object(r.held),
                    conflict_id: r.conflict_id,
                },
            )
        })
        .collect())
}

/// Writes a record's state.
pub async fn save(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    id: i64,
    state: &SyncState,
) -> diesel::QueryResult<()> {
    diesel::insert_into(sync_state::table)
        .values((
            sync_state::entity.eq(entity.as_str()),
            sync_state::record_id.eq(id),
            sync_state::base.eq(Value::Object(state.base.clone())),
            sync_state::synced_version.eq(state.synced_version),
            sync_state::remote_updated_at.eq(state.remote_updated_at),
            sync_state::field_times.eq(Value::Object(state.field_times.clone())),
            sync_state::synced_at.eq(Utc::now()),
            sync_state::held.eq(Value::Object(state.held.clone())),
            sync_state::conflict_id.eq(state.conflict_id),
        ))
        .on_conflict((sync_state::entity, sync_state::record_id))
        .do_update()
        .set((
            sync_state::base.eq(excluded(sync_state::base)),
            sync_state::synced_version.eq(excluded(sync_state::synced_version)),
            sync_state::remote_updated_at.eq(excluded(sync_state::remote_updated_at)),
            sync_state::field_times.eq(excluded(sync_state::field_times)),
            sync_state::synced_at.eq(excluded(sync_state::synced_at)),
            sync_state::held.eq(excluded(sync_state::held)),
            sync_state::conflict_id.eq(excluded(sync_state::conflict_id)),
        ))
        .execute(conn)
        .await
        .map(|_| ())
}

/// Writes many records' states in one statement.
pub async fn save_many(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    states: &[(i64, &SyncState)],
) -> diesel::QueryResult<()> {
    if states.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = states
        .iter()
        .map(|(id, s)| {
            serde_json::json!({
                "record_id": id,
                "base": s.base,
                "synced_version": s.synced_version,
                "remote_updated_at": s.remote_updated_at,
                "field_times": s.field_times,
                "held": s.held,
                "conflict_id": s.conflict_id,
            })
        })
        .collect();
    diesel::sql_query(
        "INSERT INTO crm.sync_state (entity, record_id, base, synced_version, remote_updated_at, field_times, synced_at, held, conflict_id) \
         SELECT $1, r.record_id, r.base, r.synced_version, r.remote_updated_at, r.field_times, now(), r.held, r.conflict_id \
         FROM jsonb_to_recordset($2) AS r(record_id bigint, base jsonb, synced_version bigint, \
             remote_updated_at timestamptz, field_times jsonb, held jsonb, conflict_id uuid) \
         ON CONFLICT (entity, record_id) DO UPDATE SET base = excluded.base, \
             synced_version = excluded.synced_version, remote_updated_at = excluded.remote_updated_at, \
             field_times = excluded.field_times, \
             synced_at = excluded.synced_at, held = excluded.held, conflict_id = excluded.conflict_id",
    )
    .bind::<diesel::sql_types::Text, _>(entity.as_str())
    .bind::<diesel::sql_types::Jsonb, _>(Value::Array(rows))
    .execute(conn)
    .await
    .map(|_| ())
}
