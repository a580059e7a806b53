//! The push engine's tables (`<schema>.push_state`, `push_log`, `stopped_targets`): every query
//! on them lives here. Raw SQL because the tables exist once per service schema.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use serde_json::Value;

use super::{Connector, Loaded, PushEngine};
use crate::{
    bus::outbox::{self, OutboxRow},
    record_errors::{self, Failure},
    schemas::{
        Envelope,
        sync::{AlertRaised, Direction, RecordSynced, Severity, SyncBatchRecorded, SyncStatus},
    },
};

/// Takes a transaction-scoped advisory lock per name if free; `true` for each one taken.
pub(super) async fn try_lock(
    conn: &mut AsyncPgConnection,
    names: &[String],
) -> diesel::QueryResult<Vec<bool>> {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    let rows: Vec<Locked> = diesel::sql_query(
        "SELECT pg_try_advisory_xact_lock(hashtextextended(n, 0)) AS locked \
         FROM unnest($1::text[]) WITH ORDINALITY AS t(n, i) ORDER BY i",
    )
    .bind::<Array<Text>, _>(names)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.locked).collect())
}

#[derive(diesel::QueryableByName)]
struct Stopped {
    #[diesel(sql_type = Text)]
    reason: String,
    #[diesel(sql_type = Timestamptz)]
    stopped_at: DateTime<Utc>,
}

async fn stopped(
    conn: &mut AsyncPgConnection,
    schema: &str,
    target: &str,
) -> diesel::QueryResult<Option<Stopped>> {
    let rows: Vec<Stopped> = diesel::sql_query(format!(
        "SELECT reason, stopped_at FROM {schema}.stopped_targets WHERE target = $1"
    ))
    .bind::<Text, _>(target)
    .load(conn)
    .await?;
    Ok(rows.into_iter().next())
}

/// Why the target is stopped (it answered 410), if it is.
pub(super) async fn stopped_reason(
    conn: &mut AsyncPgConnection,
    schema: &str,
    target: &str,
) -> diesel::QueryResult<Option<String>> {
    Ok(stopped(conn, schema, target).await?.map(|s| s.reason))
}

#[derive(diesel::QueryableByName)]
struct Pushed {
    #[diesel(sql_type = Text)]
    record_key: String,
    #[diesel(sql_type = BigInt)]
    pushed_version: i64,
}

/// The version the target was last told, per key (absent: never told).
pub(super) async fn pushed_versions(
    conn: &mut AsyncPgConnection,
    schema: &str,
    target: &str,
    keys: &[String],
) -> diesel::QueryResult<HashMap<String, i64>> {
    let rows: Vec<Pushed> = diesel::sql_query(format!(
        "SELECT record_key, pushed_version FROM {schema}.push_state \
         WHERE target = $1 AND record_key = ANY($2)"
    ))
    .bind::<Text, _>(target)
    .bind::<Array<Text>, _>(keys)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.record_key, r.pushed_version)).collect())
}

/// Failed attempts logged per key for exactly these versions.
pub(super) async fn failed_attempts(
    conn: &mut AsyncPgConnection,
    schema: &str,
    target: &str,
    versions: &[(String, i64)],
) -> diesel::QueryResult<HashMap<String, i64>> {
    #[derive(diesel::QueryableByName)]
    struct Tried {
        #[diesel(sql_type = Text)]
        record_key: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    if versions.is_empty() {
        return Ok(HashMap::new());
    }
    let (keys, versions): (Vec<&str>, Vec<i64>) =
        versions.iter().map(|(k, v)| (k.as_str(), *v)).unzip();
    let rows: Vec<Tried> = diesel::sql_query(format!(
        "SELECT p.record_key, count(*) AS n FROM {schema}.push_log p \
         JOIN unnest($2::text[], $3::bigint[]) AS k(key, version) \
             ON p.record_key = k.key AND p.version = k.version \
         WHERE p.target = $1 AND p.status = 'retrying' \
           AND p.id > coalesce((SELECT max(d.id) FROM {schema}.push_log d \
               WHERE d.target = $1 AND d.record_key = p.record_key AND d.version = p.version \
                 AND d.status = 'dead_lettered'), 0) \
         GROUP BY p.record_key"
    ))
    .bind::<Text, _>(target)
    .bind::<Array<Text>, _>(keys)
    .bind::<Array<BigInt>, _>(versions)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| (r.record_key, r.n)).collect())
}

/// Records that the target now holds these versions (never lowers a version).
pub(super) async fn mark_pushed(
    conn: &mut AsyncPgConnection,
    schema: &str,
    target: &str,
    delivered: &[(String, i64)],
) -> diesel::QueryResult<()> {
    if delivered.is_empty() {
        return Ok(());
    }
    let (keys, versions): (Vec<&str>, Vec<i64>) =
        delivered.iter().map(|(k, v)| (k.as_str(), *v)).unzip();
    diesel::sql_query(format!(
        "INSERT INTO {schema}.push_state (target, record_key, pushed_version) \
         SELECT $1, k, v FROM unnest($2::text[], $3::bigint[]) AS t(k, v) ORDER BY k \
         ON CONFLICT (target, record_key) DO UPDATE \
         SET pushed_version = GREATEST({schema}.push_state.pushed_version, excluded.pushed_version), \
             pushed_at = now()"
    ))
    .bind::<Text, _>(target)
    .bind::<Array<Text>, _>(keys)
    .bind::<Array<BigInt>, _>(versions)
    .execute(conn)
    .await?;
    Ok(())
}

/// A push given up: the version it was for, and the target's answer (`None`: none, e.g. the
/// retry budget ran out on timeouts).
#[derive(Clone, Copy, Debug)]
pub(super) struct GivenUp {
    pub version: i64,
    pub http_status: Option<i32>,
}

impl GivenUp {
    /// The target refused this version for good (a 4xx other than a timeout or a rate
    /// limit): pushing the same version again gets the same answer.
    pub fn refused(&self, version: i64) -> bool {
        self.version == version
            && self.http_status.is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
    }
}

/// Keys among `keys` whose latest logged attempt for the target was given up (dead-lettered).
pub(super) async fn dead_lettered(
    conn: &mut AsyncPgConnection,
    schema: &str,
    target: &str,
    keys: &[String],
) -> diesel::QueryResult<HashMap<String, GivenUp>> {
    #[derive(diesel::QueryableByName)]
    struct Last {
        #[diesel(sql_type = Text)]
        key: String,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = BigInt)]
        version: i64,
        #[diesel(sql_type = Nullable<Integer>)]
        http_status: Option<i32>,
    }
    let rows: Vec<Last> = diesel::sql_query(format!(
        "SELECT DISTINCT ON (record_key) record_key AS key, status, version, http_status \
         FROM {schema}.push_log \
         WHERE target = $1 AND record_key = ANY($2) ORDER BY record_key, id DESC"
    ))
    .bind::<Text, _>(target)
    .bind::<Array<Text>, _>(keys)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.status == "dead_lettered")
        .map(|r| (r.key, GivenUp { version: r.version, http_status: r.http_status }))
        .collect())
}

/// Forgets what the target was told for `key`, so the next message pushes it again.
pub(super) async fn forget_pushed(
    conn: &mut AsyncPgConnection,
    schema: &str,
    target: &str,
    keys: &[String],
) -> diesel::QueryResult<()> {
    diesel::sql_query(format!(
        "DELETE FROM {schema}.push_state WHERE target = $1 AND record_key = ANY($2)"
    ))
    .bind::<Text, _>(target)
    .bind::<Array<Text>, _>(keys)
    .execute(conn)
    .await?;
    Ok(())
}

/// One attempt, as logged.
pub(super) struct LogRow {
    key: String,
    version: i64,
    value: Value,
    status: SyncStatus,
    http_status: Option<u16>,
    error: Option<String>,
    attempt: i64,
    /// The target holds the record's version (synced, or confirmed by a read-back); a push
    /// skipped because the target is stopped is not.
    delivered: bool,
}

impl LogRow {
    pub(super) fn of<R: Serialize>(
        record: &Loaded<R>,
        status: SyncStatus,
        http_status: Option<u16>,
        error: Option<String>,
        attempt: i64,
    ) -> serde_json::Result<Self> {
        Ok(Self {
            key: record.key.clone(),
            version: record.version,
            value: serde_json::to_value(&record.record)?,
            status,
            http_status,
            error,
            attempt,
            delivered: matches!(status, SyncStatus::Synced | SyncStatus::Skipped),
        })
    }

    /// Skipped without reaching the target (it is stopped): closes nothing.
    pub(super) fn undelivered(self) -> Self {
        Self { delivered: false, ..self }
    }
}

/// Writes the attempts to `push_log` and announces them, one event for the batch, on
/// `sync.events.<target>.outbound.<entity>`.
pub(super) async fn write_log(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    service: &'static str,
    target: &str,
    entity: &str,
    rows: &[LogRow],
) -> diesel::QueryResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    diesel::sql_query(format!(
        "INSERT INTO {schema}.push_log \
             (target, entity, record_key, version, value, status, http_status, error, attempt) \
         SELECT $1, $2, * FROM unnest($3::text[], $4::bigint[], $5::jsonb[], $6::text[], \
             $7::integer[], $8::text[], $9::bigint[])"
    ))
    .bind::<Text, _>(target)
    .bind::<Text, _>(entity)
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.version).collect::<Vec<_>>())
    .bind::<Array<Jsonb>, _>(rows.iter().map(|r| &r.value).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(rows.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
    .bind::<Array<Nullable<Integer>>, _>(
        rows.iter().map(|r| r.http_status.map(i32::from)).collect::<Vec<_>>(),
    )
    .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.error.as_deref()).collect::<Vec<_>>())
    .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.attempt).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    // The error ledger: a push given up opens (or counts on) the record's row; a delivery
    // closes it.
    let failures: Vec<Failure<'_>> = rows
        .iter()
        .filter(|r| r.status == SyncStatus::DeadLettered)
        .map(|r| Failure {
            system: target,
            entity,
            record_id: &r.key,
            direction: Direction::Outbound,
            error: r.error.as_deref().unwrap_or("dead-lettered"),
            payload: &r.value,
        })
        .collect();
    record_errors::record_failure(conn, schema, &failures).await?;
    let delivered: Vec<String> =
        rows.iter().filter(|r| r.delivered).map(|r| r.key.clone()).collect();
    record_errors::settle(conn, schema, target, entity, Direction::Outbound, &delivered).await?;
    let event = Envelope::new(
        service,
        SyncBatchRecorded {
            system: target.to_owned(),
            direction: Direction::Outbound,
            entity: entity.to_owned(),
            records: rows
                .iter()
                .map(|r| RecordSynced {
                    record_id: r.key.clone(),
                    status: r.status,
                    http_status: r.http_status,
                    detail: r.error.clone(),
                })
                .collect(),
        },
    );
    outbox::enqueue(conn, schema, &[OutboxRow::new(&event)]).await
}

/// Stops pushing to a target that answered 410 Gone, raising a critical alert the first time.
pub(super) async fn stop_target(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    service: &'static str,
    target: &str,
    reason: &str,
) -> diesel::QueryResult<()> {
    let stopped = diesel::sql_query(format!(
        "INSERT INTO {schema}.stopped_targets (target, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING"
    ))
    .bind::<Text, _>(target)
    .bind::<Text, _>(reason)
    .execute(&mut *conn)
    .await?;
    if stopped == 0 {
        return Ok(());
    }
    tracing::warn!(target, reason, "target stopped");
    let alert = AlertRaised {
        severity: Severity::Critical,
        kind: "target_stopped".into(),
        title: format!("Pushes to {target} stopped"),
        text: format!(
            "🚨 *Target stopped*\n\nTarget: {target}\nReason: {reason}\nResume with POST /admin/targets/{target}/resume"
        ),
        dedup_key: format!("target_stopped/{target}"),
        fields: [
            ("target".to_owned(), serde_json::json!(target)),
            ("reason".to_owned(), serde_json::json!(reason)),
        ]
        .into(),
    };
    outbox::enqueue(conn, schema, &[OutboxRow::new(&Envelope::new(service, alert))]).await
}

/// A push target as operators see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetStatus {
    pub target: String,
    /// Why pushes are stopped (it answered 410 Gone), if they are.
    pub stopped_reason: Option<String>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Records whose current version the target has not been told (this includes changes
    /// that came from the target itself and were confirmed without a push), plus records a
    /// follow-up has not settled.
    pub behind: i64,
}

#[derive(diesel::QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    key: String,
}

/// Keys of the records the target has not been told, in key order.
fn behind_sql<C: Connector>(engine: &PushEngine<C>) -> String {
    let schema = engine.schema;
    let records = engine.connector.records().page_sql();
    let mut sql = format!(
        "SELECT r.key FROM ({records}) r \
         LEFT JOIN {schema}.push_state p ON p.target = $3 AND p.record_key = r.key \
         WHERE r.version > COALESCE(p.pushed_version, 0)"
    );
    if let Some(unsettled) = engine.connector.unsettled_sql() {
        sql = format!("{sql} UNION {unsettled}");
    }
    sql
}

async fn behind<C: Connector>(
    conn: &mut AsyncPgConnection,
    engine: &PushEngine<C>,
) -> diesel::QueryResult<Vec<String>> {
    let keys: Vec<Key> = diesel::sql_query(format!("{} ORDER BY 1", behind_sql(engine)))
        .bind::<Text, _>("")
        .bind::<BigInt, _>(i64::MAX)
        .bind::<Text, _>(&engine.target)
        .load(conn)
        .await?;
    Ok(keys.into_iter().map(|k| k.key).collect())
}

pub(super) async fn status<C: Connector>(
    conn: &mut AsyncPgConnection,
    engine: &PushEngine<C>,
) -> anyhow::Result<TargetStatus> {
    let stopped = stopped(conn, engine.schema, &engine.target).await?;
    let behind = behind(conn, engine).await?.len() as i64;
    Ok(TargetStatus {
        target: engine.target.clone(),
        stopped_reason: stopped.as_ref().map(|s| s.reason.clone()),
        stopped_at: stopped.map(|s| s.stopped_at),
        behind,
    })
}

/// Clears the stop, then queues every record the target has not been told.
///
/// Two transactions on purpose: a push that still saw the stop before the first commits skips
/// a version that the second one, reading after that commit, then finds behind and queues;
/// every push after the commit goes through. (One transaction would miss a version committed
/// between its read and its commit.)
pub(super) async fn resume<C: Connector>(
    conn: &mut AsyncPgConnection,
    engine: &PushEngine<C>,
) -> anyhow::Result<(bool, usize)> {
    let schema = engine.schema;
    let was_stopped =
        diesel::sql_query(format!("DELETE FROM {schema}.stopped_targets WHERE target = $1"))
            .bind::<Text, _>(&engine.target)
            .execute(&mut *conn)
            .await?
            > 0;
    let queued = conn
        .transaction::<_, diesel::result::Error, _>(async |conn| {
            let keys = behind(conn, engine).await?;
            let rows: Vec<OutboxRow> = keys.iter().map(|k| engine.connector.message(k)).collect();
            for chunk in rows.chunks(1000) {
                outbox::enqueue(conn, schema, chunk).await?;
            }
            Ok(rows.len())
        })
        .await?;
    tracing::info!(target = %engine.target, was_stopped, queued, "target resumed");
    Ok((was_stopped, queued))
}

/// A page of the keys of every record the target should hold, after `after`, in key order.
pub(super) async fn records_page<C: Connector>(
    conn: &mut AsyncPgConnection,
    engine: &PushEngine<C>,
    after: &str,
    limit: i64,
) -> diesel::QueryResult<Vec<String>> {
    let keys: Vec<Key> = diesel::sql_query(engine.connector.records().page_sql())
        .bind::<Text, _>(after)
        .bind::<BigInt, _>(limit)
        .load(conn)
        .await?;
    Ok(keys.into_iter().map(|k| k.key).collect())
}
