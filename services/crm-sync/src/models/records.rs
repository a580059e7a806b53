//! Every query on `crm.contacts`, `crm.accounts` and `crm.opportunities`.
//!
//! The three tables share their bookkeeping columns; their data columns are the mapped fields
//! of [`shared::mappers::crm`], read as JSON (`to_jsonb(row)`) and written with
//! `jsonb_populate_record`, so one set of statements serves the three tables and PostgreSQL
//! does the typing (numeric, date, jsonb). Column names come from the static field tables,
//! never from input.
//!
//! Writes run under a transaction-local origin (`datasync.origin`, see [`shared::db::set_origin`]): the
//! capture trigger stamps it on the row, and only a change that did not come from the CRM
//! bumps `local_version` and queues a push.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::{Map, Value};
use shared::{mappers::crm as mapper, schemas::crm::Entity};

/// A local record.
#[derive(Clone, Debug, PartialEq)]
pub struct Local {
    pub entity: Entity,
    pub id: i64,
    pub external_id: Option<String>,
    /// The mapped columns (every one, `null` when empty).
    pub data: Map<String, Value>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_from: Option<String>,
    pub local_version: i64,
    pub updated_at: DateTime<Utc>,
    /// When the data last changed other than from the CRM.
    pub local_changed_at: Option<DateTime<Utc>>,
}

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    external_id: Option<String>,
    #[diesel(sql_type = Jsonb)]
    record: Value,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deleted_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_from: Option<String>,
    #[diesel(sql_type = BigInt)]
    local_version: i64,
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    local_changed_at: Option<DateTime<Utc>>,
}

impl Row {
    fn into_local(self, entity: Entity) -> Local {
        let row = self.record.as_object().cloned().unwrap_or_default();
        Local {
            entity,
            id: self.id,
            external_id: self.external_id,
            data: mapper::mapped_columns(entity, &row),
            deleted_at: self.deleted_at,
            deleted_from: self.deleted_from,
            local_version: self.local_version,
            updated_at: self.updated_at,
            local_changed_at: self.local_changed_at,
        }
    }
}

const SELECT: &str = "SELECT id, external_id, to_jsonb(t) AS record, deleted_at, deleted_from, \
    local_version, updated_at, local_changed_at";

/// The records with these CRM ids (`lock`: for the transaction, in id order).
pub async fn by_external_ids(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    external_ids: &[String],
    lock: bool,
) -> diesel::QueryResult<Vec<Local>> {
    let lock = if lock { "FOR UPDATE" } else { "" };
    let rows: Vec<Row> = diesel::sql_query(format!(
        "{SELECT} FROM crm.{} t WHERE external_id = ANY($1) ORDER BY id {lock}",
        entity.table()
    ))
    .bind::<Array<Text>, _>(external_ids)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.into_local(entity)).collect())
}

/// The records with these local ids (`lock`: for the transaction).
pub async fn by_ids(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    ids: &[i64],
    lock: bool,
) -> diesel::QueryResult<Vec<Local>> {
    let lock = if lock { "FOR UPDATE" } else { "" };
    let rows: Vec<Row> = diesel::sql_query(format!(
        "{SELECT} FROM crm.{} t WHERE id = ANY($1) ORDER BY id {lock}",
        entity.table()
    ))
    .bind::<Array<BigInt>, _>(ids)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.into_local(entity)).collect())
}

fn columns(entity: Entity, data: &Map<String, Value>) -> Vec<&'static str> {
    mapper::fields(entity).iter().map(|f| f.local).filter(|c| data.contains_key(*c)).collect()
}

/// A record as one element of a `jsonb_populate_recordset` argument.
fn as_row(local: &Local) -> Value {
    let mut row = local.data.clone();
    row.insert("id".into(), Value::from(local.id));
    row.insert("external_id".into(), local.external_id.clone().map_or(Value::Null, Value::from));
    row.insert(
        "deleted_at".into(),
        local.deleted_at.map_or(Value::Null, |t| Value::from(t.to_rfc3339())),
    );
    row.insert("deleted_from".into(), local.deleted_from.clone().map_or(Value::Null, Value::from));
    Value::Object(row)
}

/// Inserts records the CRM has and we did not, in one statement; their ids by CRM id. A record
/// another transaction inserted first is left out of the answer.
pub async fn insert_many(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    locals: &[&Local],
) -> diesel::QueryResult<std::collections::HashMap<String, i64>> {
    #[derive(diesel::QueryableByName)]
    struct Inserted {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        external_id: String,
    }
    if locals.is_empty() {
        return Ok(Default::default());
    }
    let cols: Vec<&str> = mapper::fields(entity).iter().map(|f| f.local).collect();
    let names: String = cols.iter().map(|c| format!(", {c}")).collect();
    let values: String = cols.iter().map(|c| format!(", r.{c}")).collect();
    let rows: Vec<Inserted> = diesel::sql_query(format!(
        "INSERT INTO crm.{table} (external_id, external_source, synced_at, deleted_at, deleted_from{names}) \
         SELECT r.external_id, 'crm', now(), r.deleted_at, r.deleted_from{values} \
         FROM jsonb_populate_recordset(NULL::crm.{table}, $1) r \
         ON CONFLICT (external_id) DO NOTHING RETURNING id, external_id",
        table = entity.table()
    ))
    .bind::<Jsonb, _>(Value::Array(locals.iter().map(|l| as_row(l)).collect()))
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.external_id, r.id)).collect())
}

/// Writes the mapped columns and the deletion of existing records, and the CRM id of a record
/// the CRM announced before our create's answer came back, in one statement (the capture
/// trigger sees which rows really changed).
pub async fn write_many(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    locals: &[&Local],
) -> diesel::QueryResult<()> {
    if locals.is_empty() {
        return Ok(());
    }
    let set: Vec<String> = mapper::fields(entity)
        .iter()
        .map(|f| f.local)
        .chain(["deleted_at", "deleted_from"])
        .map(|c| format!("{c} = r.{c}"))
        .collect();
    diesel::sql_query(format!(
        "UPDATE crm.{table} t SET {set}, synced_at = now(), \
             external_id = coalesce(t.external_id, r.external_id), \
             external_source = coalesce(t.external_source, 'crm') \
         FROM jsonb_populate_recordset(NULL::crm.{table}, $1) r WHERE t.id = r.id",
        table = entity.table(),
        set = set.join(", ")
    ))
    .bind::<Jsonb, _>(Value::Array(locals.iter().map(|l| as_row(l)).collect()))
    .execute(conn)
    .await
    .map(|_| ())
}

/// Sets the columns present in `data` (nothing when it is empty).
pub async fn update_columns(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    id: i64,
    data: &Map<String, Value>,
) -> diesel::QueryResult<()> {
    let cols = columns(entity, data);
    if cols.is_empty() {
        return Ok(());
    }
    let set: Vec<String> = cols.iter().map(|c| format!("{c} = r.{c}")).collect();
    diesel::sql_query(format!(
        "UPDATE crm.{table} t SET {set} FROM jsonb_populate_record(NULL::crm.{table}, $1) r \
         WHERE t.id = $2",
        table = entity.table(),
        set = set.join(", ")
    ))
    .bind::<Jsonb, _>(Value::Object(data.clone()))
    .bind::<BigInt, _>(id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Bookkeeping after a delivered push: the CRM's id (after a create) and `synced_at`. Changes
/// no data, so queues nothing.
pub async fn mark_synced(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    id: i64,
    external_id: Option<&str>,
) -> diesel::QueryResult<()> {
    diesel::sql_query(format!(
        "UPDATE crm.{} SET synced_at = now(), \
             external_id = coalesce($2, external_id), \
             external_source = CASE WHEN $2 IS NULL THEN external_source ELSE 'crm' END \
         WHERE id = $1",
        entity.table()
    ))
    .bind::<BigInt, _>(id)
    .bind::<Nullable<Text>, _>(external_id)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Queues a push of the record as it is (a resolution that keeps the local values).
pub async fn request_push(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    id: i64,
) -> diesel::QueryResult<()> {
    diesel::sql_query(format!(
        "UPDATE crm.{} SET local_version = local_version + 1 WHERE id = $1",
        entity.table()
    ))
    .bind::<BigInt, _>(id)
    .execute(conn)
    .await
    .map(|_| ())
}
