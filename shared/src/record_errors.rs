//! The per-record error ledger, both directions, in every service schema
//! (`<schema>.record_errors`).
//!
//! One open row per failing record and direction: the system, entity and record id, whether it
//! failed coming in (an inbound apply) or going out (a push), the latest error, how many
//! attempts failed, and the last payload. The push engine writes a row when it gives a push up
//! and settles it when the record is delivered; a service's consumers do the same for the
//! records they cannot apply ([`record_failure`], [`settle`]). Rows are kept until an operator
//! deals with them:
//!
//! - `retry`: the same work again (the stored payload, or the push of the record) with a fresh
//!   retry budget;
//! - `requeue`: the record's current state instead (re-read from the system, or from our table);
//! - `ignore`: closed (`ignored`) without doing anything.
//!
//! A retried or requeued row stays `open` until the work goes through (`resolved`, by
//! [`settle`]); if it fails again, the same row counts one more attempt.
//!
//! One at a time (`POST /admin/record-errors/{id}/{action}`) or in bulk by filter
//! (`POST /admin/record-errors/{action}`): without `"confirm": true` the bulk call only counts
//! what it would touch, so the count is seen before acting (and `expected_count` refuses with a
//! 409 when the set changed meanwhile). What retry and requeue do is the service's
//! ([`ErrorActions`]): they return the messages to queue, which are written to the outbox in
//! the same transaction that closes the rows.

use std::sync::{Arc, OnceLock};

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    bus::outbox::{self, OutboxRow},
    db::PgPool,
    http::{Admin, ApiError, parse_json},
    schemas::sync::Direction,
};

/// One failing record.
#[derive(Clone, Debug)]
pub struct Failure<'a> {
    pub system: &'a str,
    pub entity: &'a str,
    pub record_id: &'a str,
    pub direction: Direction,
    pub error: &'a str,
    pub payload: &'a Value,
}

fn direction_str(direction: Direction) -> &'static str {
    match direction {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// `payload` as PostgreSQL's `jsonb` can hold it: NUL characters (which `jsonb` refuses, and
/// which may be the very reason a record failed) become U+FFFD.
fn storable(payload: &Value) -> Value {
    match payload {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "\u{FFFD}")),
        Value::Array(items) => Value::Array(items.iter().map(storable).collect()),
        Value::Object(map) => Value::Object(
            map.iter().map(|(k, v)| (k.replace('\0', "\u{FFFD}"), storable(v))).collect(),
        ),
        other => other.clone(),
    }
}

/// Opens a row for the record, or counts one more attempt on its open row. Call in the
/// transaction of the failed attempt's bookkeeping.
pub async fn record_failure(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    failures: &[Failure<'_>],
) -> diesel::QueryResult<()> {
    for f in failures {
        diesel::sql_query(format!(
            "INSERT INTO {schema}.record_errors \
                 (system, entity, record_id, direction, error, last_payload) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (system, entity, record_id, direction) WHERE status = 'open' \
             DO UPDATE SET error = EXCLUDED.error, last_payload = EXCLUDED.last_payload, \
                 attempts = {schema}.record_errors.attempts + 1, updated_at = now()"
        ))
        .bind::<Text, _>(f.system)
        .bind::<Text, _>(f.entity)
        .bind::<Text, _>(f.record_id)
        .bind::<Text, _>(direction_str(f.direction))
        .bind::<Text, _>(f.error.replace('\0', "\u{FFFD}"))
        .bind::<Jsonb, _>(storable(f.payload))
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// Closes the open rows of records that went through after all (status `resolved`).
pub async fn settle(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    system: &str,
    entity: &str,
    direction: Direction,
    record_ids: &[String],
) -> diesel::QueryResult<usize> {
    if record_ids.is_empty() {
        return Ok(0);
    }
    diesel::sql_query(format!(
        "UPDATE {schema}.record_errors SET status = 'resolved', updated_at = now() \
         WHERE status = 'open' AND system = $1 AND entity = $2 AND direction = $3 \
           AND record_id = ANY($4)"
    ))
    .bind::<Text, _>(system)
    .bind::<Text, _>(entity)
    .bind::<Text, _>(direction_str(direction))
    .bind::<Array<Text>, _>(record_ids)
    .execute(conn)
    .await
}

/// Closes rows by id once the work that retried them went through (status `resolved`).
pub async fn resolve(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    ids: &[i64],
) -> diesel::QueryResult<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    diesel::sql_query(format!(
        "UPDATE {schema}.record_errors SET status = 'resolved', updated_at = now() \
         WHERE status = 'open' AND id = ANY($1)"
    ))
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)
    .await
}

/// A row of the ledger.
#[derive(Clone, Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct RecordError {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub system: String,
    #[diesel(sql_type = Text)]
    pub entity: String,
    #[diesel(sql_type = Text)]
    pub record_id: String,
    /// `inbound` or `outbound`.
    #[diesel(sql_type = Text)]
    pub direction: String,
    #[diesel(sql_type = Text)]
    pub error: String,
    #[diesel(sql_type = BigInt)]
    pub attempts: i64,
    #[diesel(sql_type = Jsonb)]
    #[schema(value_type = Object)]
    pub last_payload: Value,
    /// `open`, `ignored` or `resolved`.
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

/// Which rows: every field optional; `status` defaults to `open`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, utoipa::ToSchema)]
pub struct Filter {
    pub system: Option<String>,
    pub entity: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    pub status: Option<String>,
    /// Rows whose error contains this text.
    pub error_contains: Option<String>,
    /// Rows of this record: its key (`contact/42`) or the id after the key's last `/` (`42`).
    pub record: Option<String>,
}

impl Filter {
    fn check(&self) -> Result<(), ApiError> {
        if let Some(d) = &self.direction
            && !matches!(d.as_str(), "inbound" | "outbound")
        {
            return Err(ApiError::field("direction", "must be inbound or outbound"));
        }
        if let Some(s) = &self.status
            && !matches!(s.as_str(), "open" | "ignored" | "resolved" | "all")
        {
            return Err(ApiError::field("status", "must be open, ignored, resolved or all"));
        }
        Ok(())
    }
}

const WHERE: &str = "WHERE ($1::text IS NULL OR system = $1) AND ($2::text IS NULL OR entity = $2) \
    AND ($3::text IS NULL OR direction = $3) AND ($4 = 'all' OR status = coalesce($4, 'open')) \
    AND ($5::text IS NULL OR strpos(error, $5) > 0) AND ($6::bigint IS NULL OR id = $6) \
    AND ($8::text IS NULL OR record_id = $8 OR substring(record_id from '[^/]*$') = $8)";

async fn find(
    conn: &mut AsyncPgConnection,
    schema: &str,
    filter: &Filter,
    id: Option<i64>,
    limit: i64,
) -> diesel::QueryResult<Vec<RecordError>> {
    diesel::sql_query(format!(
        "SELECT id, system, entity, record_id, direction, error, attempts, last_payload, status, \
                created_at, updated_at \
         FROM {schema}.record_errors {WHERE} ORDER BY id LIMIT $7"
    ))
    .bind::<Nullable<Text>, _>(filter.system.as_deref())
    .bind::<Nullable<Text>, _>(filter.entity.as_deref())
    .bind::<Nullable<Text>, _>(filter.direction.as_deref())
    .bind::<Nullable<Text>, _>(filter.status.as_deref())
    .bind::<Nullable<Text>, _>(filter.error_contains.as_deref())
    .bind::<Nullable<BigInt>, _>(id)
    .bind::<BigInt, _>(limit)
    .bind::<Nullable<Text>, _>(filter.record.as_deref())
    .load(conn)
    .await
}

async fn count(
    conn: &mut AsyncPgConnection,
    schema: &str,
    filter: &Filter,
) -> diesel::QueryResult<i64> {
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let n: N =
        diesel::sql_query(format!("SELECT count(*) AS n FROM {schema}.record_errors {WHERE}"))
            .bind::<Nullable<Text>, _>(filter.system.as_deref())
            .bind::<Nullable<Text>, _>(filter.entity.as_deref())
            .bind::<Nullable<Text>, _>(filter.direction.as_deref())
            .bind::<Nullable<Text>, _>(filter.status.as_deref())
            .bind::<Nullable<Text>, _>(filter.error_contains.as_deref())
            .bind::<Nullable<BigInt>, _>(None::<i64>)
            .bind::<BigInt, _>(0)
            .bind::<Nullable<Text>, _>(filter.record.as_deref())
            .get_result(conn)
            .await?;
    Ok(n.n)
}

/// What an operator can do with a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Retry,
    Requeue,
    Ignore,
}

impl Action {
    fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "retry" => Ok(Self::Retry),
            "requeue" => Ok(Self::Requeue),
            "ignore" => Ok(Self::Ignore),
            other => Err(ApiError::NotFound(format!("record error action {other}"))),
        }
    }

    /// The row's status after the action (retried and requeued rows stay open until the work
    /// goes through).
    fn status_after(self) -> &'static str {
        match self {
            Action::Retry | Action::Requeue => "open",
            Action::Ignore => "ignored",
        }
    }
}

/// How a service retries and requeues its failed inbound records: the messages that do it,
/// written to the outbox with the rows' new status. An error leaves the row open. (Outbound
/// rows are failed pushes: their push engine queues the record again, with a fresh budget.)
pub trait ErrorActions: Send + Sync + 'static {
    fn messages<'a>(
        &'a self,
        action: Action,
        row: &'a RecordError,
    ) -> BoxFuture<'a, anyhow::Result<Vec<OutboxRow>>>;
}

/// What pushes one entity to one system and can be asked to push a record again: a push
/// engine (see [`crate::push::PushTarget`]); it requeues the ledger's failed pushes.
pub trait Requeue: Send + Sync {
    /// The system it pushes to.
    fn target(&self) -> &str;
    /// The entity it pushes.
    fn entity(&self) -> &str;
    /// The message that asks for a push of the record `key` (an operator's retry).
    fn message(&self, key: &str) -> OutboxRow;
}

/// A service's ledger: where it is, and its [`ErrorActions`] once registered. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    pub db: PgPool,
    pub schema: &'static str,
    pub(crate) actions: Arc<OnceLock<Arc<dyn ErrorActions>>>,
    /// The service's push engines, which requeue its failed pushes.
    targets: Arc<std::sync::RwLock<Vec<Arc<dyn Requeue>>>>,
}

impl Ledger {
    pub fn new(db: PgPool, schema: &'static str) -> Self {
        Self { db, schema, actions: Default::default(), targets: Default::default() }
    }

    /// Registers a push engine that requeues the failed pushes of its system and entity.
    pub fn requeues_with(&self, engine: Arc<dyn Requeue>) {
        self.targets.write().unwrap_or_else(|p| p.into_inner()).push(engine);
    }

    /// The push of the record an outbound row names, by the engine of its system and entity.
    fn push_again(&self, row: &RecordError) -> anyhow::Result<Vec<OutboxRow>> {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        let engine = targets
            .iter()
            .find(|t| t.target() == row.system && t.entity() == row.entity)
            .ok_or_else(|| {
                anyhow::anyhow!("this service pushes no {} to {}", row.entity, row.system)
            })?;
        Ok(vec![engine.message(&row.record_id)])
    }
}

/// The outcome of an action.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Acted {
    pub action: Action,
    /// Rows matching (a preview) or acted on.
    pub count: i64,
    /// Whether anything was done (`false`: a preview; send `"confirm": true` to act).
    pub confirmed: bool,
    /// Rows that could not be acted on, with the reason (they stay open).
    pub failed: Vec<(i64, String)>,
}

async fn act(platform: &Ledger, action: Action, rows: Vec<RecordError>) -> Result<Acted, ApiError> {
    let actions = platform.actions.get().cloned();
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for row in rows {
        let messages = match (action, &actions) {
            (Action::Ignore, _) => Ok(Vec::new()),
            _ if row.direction == "outbound" => platform.push_again(&row),
            (_, None) => Err(anyhow::anyhow!("this service has no retry for its records")),
            (_, Some(actions)) => actions.messages(action, &row).await,
        };
        match messages {
            Ok(messages) => done.push((row.id, messages)),
            Err(e) => failed.push((row.id, format!("{e:#}"))),
        }
    }
    let schema = platform.schema;
    let mut conn = platform.db.get().await?;
    let count = done.len() as i64;
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        for (id, messages) in &done {
            outbox::enqueue(conn, schema, messages).await?;
            diesel::sql_query(format!(
                "UPDATE {schema}.record_errors SET status = $2, updated_at = now() \
                 WHERE id = $1 AND status = 'open'"
            ))
            .bind::<BigInt, _>(*id)
            .bind::<Text, _>(action.status_after())
            .execute(conn)
            .await?;
        }
        Ok(())
    })
    .await?;
    tracing::info!(?action, count, failed = failed.len(), "record errors acted on");
    Ok(Acted { action, count, confirmed: true, failed })
}

/// The list's query: the filter and a limit.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub system: Option<String>,
    pub entity: Option<String>,
    pub direction: Option<String>,
    pub status: Option<String>,
    pub error_contains: Option<String>,
    /// Rows of this record (its key, or the id after the key's last `/`).
    pub record: Option<String>,
    /// At most this many rows (default 100, at most 1000).
    pub limit: Option<i64>,
}

/// The ledger's rows matching the filter (open ones unless `status` says otherwise), oldest
/// first, with their total count.
#[utoipa::path(get, path = "/admin/record-errors", tag = "admin", security(("admin_token" = [])),
    params(ListQuery),
    responses((status = 200, description = "`{count, errors}`")))]
#[get("/admin/record-errors")]
pub async fn list(
    _: Admin,
    platform: web::Data<Ledger>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let filter = Filter {
        system: query.system,
        entity: query.entity,
        direction: query.direction,
        status: query.status,
        error_contains: query.error_contains,
        record: query.record,
    };
    filter.check()?;
    let mut conn = platform.db.get().await?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let errors = find(&mut conn, platform.schema, &filter, None, limit).await?;
    let count = count(&mut conn, platform.schema, &filter).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"count": count, "errors": errors})))
}

/// Retries, requeues or ignores one open row.
#[utoipa::path(post, path = "/admin/record-errors/{id}/{action}", tag = "admin", security(("admin_token" = [])),
    params(("id" = i64, Path, description = "the row"), ("action" = String, Path, description = "retry, requeue or ignore")),
    responses((status = 200, description = "acted", body = Acted), (status = 404, description = "no such open row")))]
#[post("/admin/record-errors/{id}/{action}")]
pub async fn act_one(
    _: Admin,
    platform: web::Data<Ledger>,
    path: web::Path<(i64, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, action) = path.into_inner();
    let action = Action::parse(&action)?;
    let rows = {
        let mut conn = platform.db.get().await?;
        find(&mut conn, platform.schema, &Filter::default(), Some(id), 1).await?
    };
    if rows.is_empty() {
        return Err(ApiError::NotFound(format!("open record error {id}")));
    }
    Ok(HttpResponse::Ok().json(act(&platform, action, rows).await?))
}

/// A bulk action's body: the filter, and whether to act.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkAction {
    #[serde(flatten)]
    pub filter: Filter,
    /// `false` (default): only count the rows it would touch.
    #[serde(default)]
    pub confirm: bool,
    /// Refuse (409) unless exactly this many rows match (the count seen in the preview).
    pub expected_count: Option<i64>,
}

/// Retries, requeues or ignores every open row matching a filter; a preview (the count) unless
/// `"confirm": true`.
#[utoipa::path(post, path = "/admin/record-errors/{action}", tag = "admin", security(("admin_token" = [])),
    params(("action" = String, Path, description = "retry, requeue or ignore")),
    request_body = BulkAction,
    responses((status = 200, description = "the count, and whether it acted", body = Acted), (status = 409, description = "the count differs from expected_count")))]
#[post("/admin/record-errors/{action}")]
pub async fn act_many(
    _: Admin,
    platform: web::Data<Ledger>,
    action: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let action = Action::parse(&action)?;
    let request: BulkAction =
        if body.is_empty() { BulkAction::default() } else { parse_json(&body)? };
    request.filter.check()?;
    if request.filter.status.as_deref().is_some_and(|s| s != "open") {
        return Err(ApiError::field("status", "only open rows can be acted on"));
    }
    let mut conn = platform.db.get().await?;
    let n = count(&mut conn, platform.schema, &request.filter).await?;
    if let Some(expected) = request.expected_count
        && expected != n
    {
        return Err(ApiError::Conflict {
            detail: format!("{n} rows match now, not the {expected} expected: preview again"),
            extra: serde_json::json!({"count": n}),
        });
    }
    if !request.confirm {
        return Ok(HttpResponse::Ok().json(Acted {
            action,
            count: n,
            confirmed: false,
            failed: vec![],
        }));
    }
    let rows = find(&mut conn, platform.schema, &request.filter, None, 10_000).await?;
    drop(conn);
    Ok(HttpResponse::Ok().json(act(&platform, action, rows).await?))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list).service(act_one).service(act_many);
}
