//! The bulk (initial) sync job engine, built once and exposed by every connector service.
//!
//! A service registers one [`BulkSource`] per kind of load it offers (source system, target,
//! entity) with `Platform::run_bulk`; operators start, watch, cancel and resume jobs through
//! `/admin/bulk/jobs` (admin token). Jobs live in `bulk.jobs`, rows a job could not apply in
//! `bulk.job_errors`.
//!
//! How a job runs: a worker claims it with a lease (`FOR UPDATE SKIP LOCKED`, so replicas share
//! the queue), then loops: fetch one page from the source (retrying 5xx/429/timeouts with
//! backoff and honouring `Retry-After`), apply it (retried the same way), and commit the page's
//! counters, its record errors and the next cursor (the checkpoint) in one transaction fenced
//! by the lease. A heartbeat renews the lease while a page is worked on and notices a
//! cancellation within seconds. A crash between apply and commit applies that page again, so
//! [`BulkSource::apply`] must be idempotent; a crash anywhere else loses nothing: an expired
//! lease is taken over and the job goes on from its checkpoint. A graceful stop finishes the
//! current page and hands the lease back at once. A source that refuses (4xx) or stays down
//! past the retry budget fails the job with the reason; `resume` queues it again from its
//! checkpoint.
//!
//! Every state change is announced on `sync.events.<source>.bulk.<entity>`; completion and
//! failure also raise an alert (`alerts.info` / `alerts.warning`) for sync-monitor to route.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock, OnceLock},
    time::Duration,
};

use actix_web::{HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension,
    result::{DatabaseErrorKind, Error as DieselError},
    sql_types::{Array, BigInt, Bool, Integer, Jsonb, Nullable, Text, Timestamptz},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use prometheus::{IntCounterVec, register_int_counter_vec};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    bus::{consumer::backoff, outbox},
    db::PgPool,
    http::{Admin, ApiError, parse_json},
    outbound::Outcome,
    schemas::{
        Envelope,
        sync::{AlertRaised, BulkJobChanged, Severity},
    },
};

/// How long a claimed job stays with its worker without a renewal.
const LEASE: Duration = Duration::from_secs(30);
/// How often an idle worker looks for queued jobs (creating a job wakes it at once).
const POLL: Duration = Duration::from_secs(2);
/// How often a worker renews its lease while it works on a page (and notices a cancellation).
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Attempts to fetch, and to apply, a page before the job fails.
const ATTEMPTS: i64 = 5;
/// Default and largest page size.
const DEFAULT_BATCH: i32 = 100;
const MAX_BATCH: i32 = 1000;

static RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "datasync_bulk_records_total",
        "Records handled by bulk-sync jobs, by entity and result (applied, failed)",
        &["entity", "result"]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

/// One page read from a source.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Vec<Value>,
    /// The cursor of the next page; `None` when this was the last one.
    pub next: Option<Value>,
}

/// A record a job could not apply; the job goes on with the next one.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordError {
    pub record_id: String,
    pub error: String,
}

/// What a bulk load reads and where it writes: `{source, target, entity}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct BulkKind {
    pub source: String,
    pub target: String,
    pub entity: String,
}

impl BulkKind {
    pub fn new(source: &str, target: &str, entity: &str) -> Self {
        Self { source: source.to_owned(), target: target.to_owned(), entity: entity.to_owned() }
    }
}

impl std::fmt::Display for BulkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} from {} to {}", self.entity, self.source, self.target)
    }
}

/// One kind of bulk load a service offers.
pub trait BulkSource: Send + Sync + 'static {
    /// Reads the page at `cursor` (`None`: the first page) of at most `limit` records.
    fn fetch<'a>(
        &'a self,
        cursor: Option<&'a Value>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, Outcome>>;

    /// Applies one page. Must be idempotent: a page is applied again when the worker died
    /// before its checkpoint committed. Returns the records that could not be applied; an
    /// `Err` fails the job (it can be resumed from its checkpoint).
    fn apply<'a>(
        &'a self,
        job: &'a Job,
        records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Vec<RecordError>>>;

    /// What applying `records` would change, writing nothing (a dry run); `None` when this
    /// load has no dry run.
    fn preview<'a>(
        &'a self,
        _records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Option<Preview>>> {
        Box::pin(async { Ok(None) })
    }
}

/// A page's records as `convert` reads each one (with its index in the page): the ones it
/// takes, and the others as the job's record errors.
pub fn split<E>(
    records: &[Value],
    convert: impl Fn(usize, &Value) -> Result<E, RecordError>,
) -> (Vec<E>, Vec<RecordError>) {
    let mut taken = Vec::with_capacity(records.len());
    let mut errors = Vec::new();
    for (i, record) in records.iter().enumerate() {
        match convert(i, record) {
            Ok(e) => taken.push(e),
            Err(e) => errors.push(e),
        }
    }
    (taken, errors)
}

/// A list page as a system's format reads it: its records and whether more follow, or why it
/// is not a page.
pub type ParsedPage = Result<(Vec<Value>, bool), String>;

/// Reads one page of an offset-paginated list for [`BulkSource::fetch`]: `path(offset,
/// limit)` is the request, `parse` splits the system's answer into its records and whether
/// more follow (the ERP's: `mappers::erp::list_page`); the cursor is `{"offset": n}`. With a
/// budget, the request waits its turn first and teaches the budget the system's quota.
pub async fn offset_page(
    http: &reqwest::Client,
    endpoint: &crate::outbound::Endpoint,
    path: impl Fn(u64, usize) -> String,
    parse: fn(Value) -> ParsedPage,
    cursor: Option<&Value>,
    limit: usize,
    budget: Option<(&crate::outbound::quota::QuotaBudget, &CancellationToken)>,
) -> Result<Page, Outcome> {
    let offset = cursor.and_then(|c| c.get("offset")).and_then(Value::as_u64).unwrap_or(0);
    let request = crate::outbound::OutboundRequest {
        method: reqwest::Method::GET,
        path: path(offset, limit.clamp(1, 1000)),
        body: Value::Null,
    };
    if let Some((budget, shutdown)) = budget {
        budget.wait_turn(shutdown).await;
    }
    let (status, answer) =
        crate::outbound::exchange_with_headers(http, endpoint, &request, budget.map(|b| b.0))
            .await?;
    let (records, has_more) = parse(answer).map_err(|body| Outcome::Rejected { status, body })?;
    let next =
        (has_more && !records.is_empty()).then(|| json!({"offset": offset + records.len() as u64}));
    Ok(Page { records, next })
}

/// What a page would change (see [`BulkSource::preview`]).
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct Preview {
    /// Records that would be created here.
    pub create: u64,
    /// Records that would change here.
    pub update: u64,
    /// Records already as the source has them.
    pub unchanged: u64,
    /// Records that could not be applied.
    pub errors: Vec<PreviewError>,
    /// The differences found, field by field.
    pub differences: Vec<Difference>,
}

/// A record a dry run could not apply.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PreviewError {
    pub record_id: String,
    pub error: String,
}

/// One field a bulk load would change.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Difference {
    pub record_id: String,
    pub field: String,
    /// The value here (`null` for a record that would be created).
    #[schema(value_type = Object)]
    pub ours: Value,
    /// The source's value, as it would be written.
    #[schema(value_type = Object)]
    pub theirs: Value,
}

/// The bulk loads a service offers, and the signal that wakes its worker.
pub struct Engine {
    sources: BTreeMap<BulkKind, Arc<dyn BulkSource>>,
    wake: Notify,
}

/// The bulk-sync plumbing of one service: what the worker and the admin API share. Cheap to
/// clone.
#[derive(Clone)]
pub struct Bulk {
    pub service: &'static str,
    /// The service's schema (its outbox carries the job announcements).
    pub schema: &'static str,
    pub db: PgPool,
    pub shutdown: CancellationToken,
    /// The loads offered, once [`Bulk::start`] ran.
    pub(crate) engine: Arc<OnceLock<Arc<Engine>>>,
}

impl Bulk {
    pub fn new(
        service: &'static str,
        schema: &'static str,
        db: PgPool,
        shutdown: CancellationToken,
    ) -> Self {
        Self { service, schema, db, shutdown, engine: Default::default() }
    }

    /// Offers `sources` as bulk loads of this service; returns the job worker to run (none when
    /// nothing is offered).
    pub fn start(
        &self,
        sources: impl IntoIterator<Item = (BulkKind, Arc<dyn BulkSource>)>,
    ) -> anyhow::Result<Option<impl std::future::Future<Output = ()> + Send + 'static>> {
        let engine =
            Arc::new(Engine { sources: sources.into_iter().collect(), wake: Notify::new() });
        self.engine
            .set(engine.clone())
            .map_err(|_| anyhow::anyhow!("the bulk engine is already running"))?;
        Ok((!engine.sources.is_empty()).then(|| worker::work(self.clone(), engine)))
    }
}

/// Where a job is in its life.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = Text)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Completed, Self::Failed, Self::Cancelled]
            .into_iter()
            .find(|status| status.as_str() == s)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl diesel::deserialize::FromSql<Text, diesel::pg::Pg> for JobStatus {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        let text = <String as diesel::deserialize::FromSql<Text, diesel::pg::Pg>>::from_sql(bytes)?;
        Self::parse(&text).ok_or_else(|| format!("unknown bulk job status {text:?}").into())
    }
}

impl diesel::serialize::ToSql<Text, diesel::pg::Pg> for JobStatus {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        <str as diesel::serialize::ToSql<Text, diesel::pg::Pg>>::to_sql(self.as_str(), out)
    }
}

/// A bulk-sync job.
#[derive(
    Clone,
    Debug,
    Serialize,
    diesel::QueryableByName,
    diesel::Queryable,
    diesel::Selectable,
    utoipa::ToSchema,
)]
#[diesel(table_name = schema::jobs, check_for_backend(diesel::pg::Pg))]
pub struct Job {
    #[diesel(sql_type = Text)]
    pub id: String,
    #[diesel(sql_type = Text)]
    pub service: String,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub target: String,
    #[diesel(sql_type = Text)]
    pub entity: String,
    #[diesel(sql_type = Integer)]
    pub batch_size: i32,
    #[diesel(sql_type = Text)]
    pub status: JobStatus,
    /// The source's cursor after the last applied page (where the job resumes).
    #[diesel(sql_type = Nullable<Jsonb>)]
    #[schema(value_type = Option<Object>)]
    pub checkpoint: Option<Value>,
    #[diesel(sql_type = BigInt)]
    pub pages: i64,
    #[diesel(sql_type = BigInt)]
    pub total_records: i64,
    #[diesel(sql_type = BigInt)]
    pub processed_records: i64,
    #[diesel(sql_type = BigInt)]
    pub error_count: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub error: Option<String>,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub completed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, service, source, target, entity, batch_size, status, checkpoint, pages, \
    total_records, processed_records, error_count, error, attempts, created_at, started_at, \
    updated_at, completed_at";

impl Job {
    pub fn kind(&self) -> BulkKind {
        BulkKind::new(&self.source, &self.target, &self.entity)
    }
}

/// A record a job could not apply.
#[derive(
    Debug,
    Serialize,
    diesel::QueryableByName,
    diesel::Queryable,
    diesel::Selectable,
    utoipa::ToSchema,
)]
#[diesel(table_name = schema::job_errors, check_for_backend(diesel::pg::Pg))]
pub struct JobError {
    #[diesel(sql_type = Text)]
    pub record_id: String,
    #[diesel(sql_type = Text)]
    pub error: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

mod api;
pub mod schema;
mod worker;

pub use api::*;
