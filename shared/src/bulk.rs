//! The bulk (initial) sync job engine, built once and exposed by every connector service.
//!
//! A service registers one [`BulkSource`] per kind of load it offers (source system, target,
//! entity) with [`Platform::run_bulk`]; operators start, watch, cancel and resume jobs through
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
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    app::Platform,
    bus::{consumer::backoff, outbox},
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
}

/// The bulk loads a service offers, and the signal that wakes its worker.
pub struct Engine {
    sources: BTreeMap<BulkKind, Arc<dyn BulkSource>>,
    wake: Notify,
}

pub(crate) type EngineSlot = Arc<OnceLock<Arc<Engine>>>;

impl Platform {
    /// Offers `sources` as bulk loads of this service and starts its job worker.
    pub fn run_bulk(
        &self,
        sources: impl IntoIterator<Item = (BulkKind, Arc<dyn BulkSource>)>,
    ) -> anyhow::Result<()> {
        let engine =
            Arc::new(Engine { sources: sources.into_iter().collect(), wake: Notify::new() });
        self.bulk
            .set(engine.clone())
            .map_err(|_| anyhow::anyhow!("the bulk engine is already running"))?;
        if !engine.sources.is_empty() {
            self.spawn("bulk-worker", work(self.clone(), engine));
        }
        Ok(())
    }
}

/// A bulk-sync job.
#[derive(Clone, Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
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
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    #[diesel(sql_type = Text)]
    pub status: String,
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
#[derive(Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct JobError {
    #[diesel(sql_type = Text)]
    pub record_id: String,
    #[diesel(sql_type = Text)]
    pub error: String,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// The worker

async fn work(platform: Platform, engine: Arc<Engine>) {
    let owner = format!("{}/{}", platform.config.service, Uuid::new_v4().simple());
    while !platform.shutdown.is_cancelled() {
        match claim(&platform, &engine, &owner).await {
            Ok(Some(job)) => {
                let span = tracing::info_span!("bulk_job", job = %job.id, kind = %job.kind());
                run_job(&platform, &engine, &owner, job).instrument(span).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "looking for bulk jobs failed"),
        }
        tokio::select! {
            () = platform.shutdown.cancelled() => {}
            () = engine.wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Takes the oldest queued job of a kind this replica offers, or a running one whose worker's
/// lease expired.
async fn claim(platform: &Platform, engine: &Engine, owner: &str) -> anyhow::Result<Option<Job>> {
    let offered: Vec<String> =
        engine.sources.keys().map(|k| format!("{}/{}/{}", k.source, k.target, k.entity)).collect();
    let mut conn = platform.db.get().await?;
    let service = platform.config.service;
    let schema = platform.schema;
    let job = conn
        .transaction::<_, DieselError, _>(async |conn| {
            let job: Option<Job> = diesel::sql_query(format!(
                "UPDATE bulk.jobs SET status = 'running', lease_owner = $2, \
                     lease_until = now() + make_interval(secs => $3), attempts = attempts + 1, \
                     started_at = COALESCE(started_at, now()), updated_at = now() \
                 WHERE id = (SELECT id FROM bulk.jobs WHERE service = $1 \
                     AND (status = 'queued' OR (status = 'running' AND lease_until < now())) \
                     AND source || '/' || target || '/' || entity = ANY($4) \
                     ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING {COLUMNS}"
            ))
            .bind::<Text, _>(service)
            .bind::<Text, _>(owner)
            .bind::<BigInt, _>(LEASE.as_secs() as i64)
            .bind::<Array<Text>, _>(&offered)
            .get_result(conn)
            .await
            .optional()?;
            if let Some(job) = &job {
                announce(conn, schema, job).await?;
            }
            Ok(job)
        })
        .await?;
    if let Some(job) = &job {
        tracing::info!(job = %job.id, attempt = job.attempts, checkpoint = ?job.checkpoint, "bulk job claimed");
    }
    Ok(job)
}

async fn run_job(platform: &Platform, engine: &Engine, owner: &str, mut job: Job) {
    let Some(source) = engine.sources.get(&job.kind()) else {
        let error = format!("{} offers no bulk sync of {}", platform.config.service, job.kind());
        fail(platform, owner, &job, &error).await;
        return;
    };
    loop {
        if platform.shutdown.is_cancelled() {
            release(platform, owner, &job).await;
            return;
        }
        match renew(platform, owner, &job, LEASE).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!("bulk job cancelled or taken over; stopping");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the bulk job's lease failed; it will be resumed");
                return;
            }
        }
        let step = tokio::select! {
            step = page(platform, &job, source.as_ref()) => step,
            () = heartbeat(platform, owner, &job) => {
                tracing::info!("bulk job cancelled or taken over; stopping");
                return;
            }
        };
        let (page, errors) = match step {
            Step::Applied(page, errors) => (page, errors),
            Step::Stopping => {
                release(platform, owner, &job).await;
                return;
            }
            Step::Failed(error) => {
                fail(platform, owner, &job, &error).await;
                return;
            }
        };
        match commit_page(platform, owner, &job, &page, &errors).await {
            Ok(Some(updated)) => {
                let failed = failed_records(&page, &errors);
                RECORDS
                    .with_label_values(&[&job.entity, "applied"])
                    .inc_by((page.records.len() as i64 - failed) as u64);
                RECORDS.with_label_values(&[&job.entity, "failed"]).inc_by(failed as u64);
                job = updated;
                if job.status == "completed" {
                    tracing::info!(
                        processed = job.processed_records,
                        errors = job.error_count,
                        "bulk job completed"
                    );
                    return;
                }
            }
            Ok(None) => {
                tracing::info!("bulk job cancelled or taken over; stopping");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "saving the bulk job's checkpoint failed; it will be resumed");
                return;
            }
        }
    }
}

/// Renews the lease every [`HEARTBEAT`] while a page is fetched and applied; returns when the
/// job is no longer this worker's (cancelled, or taken over), which abandons the page.
async fn heartbeat(platform: &Platform, owner: &str, job: &Job) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        match renew(platform, owner, job, LEASE).await {
            Ok(true) => {}
            Ok(false) => return,
            // The database may be back before the lease runs out; keep trying.
            Err(e) => tracing::warn!(error = %e, "renewing the bulk job's lease failed"),
        }
    }
}

enum Step {
    Applied(Page, Vec<RecordError>),
    Failed(String),
    Stopping,
}

/// Fetches and applies the page at the job's checkpoint, retrying transient failures of
/// either with backoff (a fetch honours `Retry-After`; an apply may run again, being
/// idempotent).
async fn page(platform: &Platform, job: &Job, source: &dyn BulkSource) -> Step {
    let number = job.pages + 1;
    let limit = usize::try_from(job.batch_size).unwrap_or(1).max(1);
    let mut attempt = 0;
    let page = loop {
        attempt += 1;
        let (error, wait) = match source.fetch(job.checkpoint.as_ref(), limit).await {
            Ok(page) => break page,
            Err(Outcome::Retry { after, error, .. }) => (error, after),
            Err(Outcome::Gone) => {
                return Step::Failed(format!(
                    "fetching page {number} failed: the source answered 410 Gone"
                ));
            }
            Err(Outcome::Rejected { status, body }) => {
                return Step::Failed(format!(
                    "fetching page {number} failed: the source rejected the request with {status}: {body}"
                ));
            }
            Err(Outcome::Delivered(status)) => {
                return Step::Failed(format!(
                    "fetching page {number} failed: unexpected answer {status}"
                ));
            }
        };
        if attempt >= ATTEMPTS {
            return Step::Failed(format!(
                "fetching page {number} failed: {error} (after {ATTEMPTS} attempts)"
            ));
        }
        let wait = wait.unwrap_or_else(|| backoff(attempt));
        tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "fetching a page failed; retrying");
        if !pause(platform, wait).await {
            return Step::Stopping;
        }
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        match source.apply(job, &page.records).await {
            Ok(errors) => return Step::Applied(page, errors),
            Err(e) if attempt < ATTEMPTS => {
                let wait = backoff(attempt);
                tracing::warn!(error = %format!("{e:#}"), attempt, "applying a page failed; retrying");
                if !pause(platform, wait).await {
                    return Step::Stopping;
                }
            }
            Err(e) => {
                return Step::Failed(format!(
                    "applying page {number} failed: {e:#} (after {ATTEMPTS} attempts)"
                ));
            }
        }
    }
}

/// Sleeps `wait`; `false` if the service started stopping meanwhile.
async fn pause(platform: &Platform, wait: Duration) -> bool {
    tokio::select! {
        () = platform.shutdown.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// Records of the page that failed (each record counted once, however many errors it has).
fn failed_records(page: &Page, errors: &[RecordError]) -> i64 {
    let distinct: std::collections::BTreeSet<&str> =
        errors.iter().map(|e| e.record_id.as_str()).collect();
    distinct.len().min(page.records.len()) as i64
}

/// Extends the lease; `false` when the job is no longer this worker's to run (cancelled, or
/// taken over after the lease expired).
async fn renew(
    platform: &Platform,
    owner: &str,
    job: &Job,
    lease: Duration,
) -> anyhow::Result<bool> {
    let mut conn = platform.db.get().await?;
    let renewed = diesel::sql_query(
        "UPDATE bulk.jobs SET lease_until = now() + make_interval(secs => $3), updated_at = now() \
         WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
    )
    .bind::<Text, _>(&job.id)
    .bind::<Text, _>(owner)
    .bind::<BigInt, _>(lease.as_secs() as i64)
    .execute(&mut conn)
    .await?;
    Ok(renewed == 1)
}

/// Records one applied page: counters, record errors and the next cursor, in one transaction
/// fenced by the lease. `None` if the job is no longer this worker's.
async fn commit_page(
    platform: &Platform,
    owner: &str,
    job: &Job,
    page: &Page,
    errors: &[RecordError],
) -> anyhow::Result<Option<Job>> {
    let done = page.next.is_none() || page.records.is_empty();
    let failed = failed_records(page, errors);
    let total = page.records.len() as i64;
    let schema = platform.schema;
    let mut conn = platform.db.get().await?;
    let updated = conn
        .transaction::<_, DieselError, _>(async |conn| {
            let updated: Option<Job> = diesel::sql_query(format!(
                "UPDATE bulk.jobs SET \
                     checkpoint = CASE WHEN $3 THEN checkpoint ELSE $4 END, pages = pages + 1, \
                     total_records = total_records + $5, \
                     processed_records = processed_records + $5 - $6, \
                     error_count = error_count + $6, \
                     status = CASE WHEN $3 THEN 'completed' ELSE status END, \
                     completed_at = CASE WHEN $3 THEN now() END, \
                     lease_owner = CASE WHEN $3 THEN NULL ELSE lease_owner END, \
                     lease_until = CASE WHEN $3 THEN NULL ELSE now() + make_interval(secs => $7) END, \
                     updated_at = now() \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running' \
                 RETURNING {COLUMNS}"
            ))
            .bind::<Text, _>(&job.id)
            .bind::<Text, _>(owner)
            .bind::<Bool, _>(done)
            .bind::<Nullable<Jsonb>, _>(page.next.as_ref())
            .bind::<BigInt, _>(total)
            .bind::<BigInt, _>(failed)
            .bind::<BigInt, _>(LEASE.as_secs() as i64)
            .get_result(conn)
            .await
            .optional()?;
            let Some(updated) = updated else { return Ok(None) };
            if !errors.is_empty() {
                diesel::sql_query(
                    "INSERT INTO bulk.job_errors (job_id, record_id, error) \
                     SELECT $1, r, e FROM unnest($2::text[], $3::text[]) AS v(r, e)",
                )
                .bind::<Text, _>(&job.id)
                .bind::<Array<Text>, _>(errors.iter().map(|e| e.record_id.as_str()).collect::<Vec<_>>())
                .bind::<Array<Text>, _>(errors.iter().map(|e| e.error.as_str()).collect::<Vec<_>>())
                .execute(conn)
                .await?;
            }
            if done {
                announce(conn, schema, &updated).await?;
            }
            Ok(Some(updated))
        })
        .await?;
    Ok(updated)
}

/// Fails the job with `error` (it keeps its checkpoint and can be resumed).
async fn fail(platform: &Platform, owner: &str, job: &Job, error: &str) {
    tracing::warn!(%error, "bulk job failed");
    let schema = platform.schema;
    let result: anyhow::Result<()> = async {
        let mut conn = platform.db.get().await?;
        conn.transaction::<_, DieselError, _>(async |conn| {
            let failed: Option<Job> = diesel::sql_query(format!(
                "UPDATE bulk.jobs SET status = 'failed', error = $3, lease_owner = NULL, \
                     lease_until = NULL, completed_at = now(), updated_at = now() \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running' RETURNING {COLUMNS}"
            ))
            .bind::<Text, _>(&job.id)
            .bind::<Text, _>(owner)
            .bind::<Text, _>(error)
            .get_result(conn)
            .await
            .optional()?;
            if let Some(failed) = failed {
                announce(conn, schema, &failed).await?;
            }
            Ok(())
        })
        .await?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "recording the bulk job's failure failed; its lease will expire");
    }
}

/// Hands the job back (graceful stop) so the next worker resumes it without waiting.
async fn release(platform: &Platform, owner: &str, job: &Job) {
    let result: anyhow::Result<usize> = async {
        let mut conn = platform.db.get().await?;
        Ok(diesel::sql_query(
            "UPDATE bulk.jobs SET lease_until = now(), updated_at = now() \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind::<Text, _>(&job.id)
        .bind::<Text, _>(owner)
        .execute(&mut conn)
        .await?)
    }
    .await;
    match result {
        Ok(_) => {
            tracing::info!(checkpoint = ?job.checkpoint, "bulk job handed back; it resumes from its checkpoint")
        }
        Err(e) => {
            tracing::warn!(error = %e, "handing the bulk job back failed; its lease will expire")
        }
    }
}

/// Announces the job's state on `sync.events`, with an alert when it completed or failed.
async fn announce(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    job: &Job,
) -> Result<(), DieselError> {
    let mut rows = vec![outbox::OutboxRow::new(&Envelope::new(
        &job.service,
        BulkJobChanged {
            job_id: job.id.clone(),
            service: job.service.clone(),
            source: job.source.clone(),
            target: job.target.clone(),
            entity: job.entity.clone(),
            status: job.status.clone(),
            total_records: job.total_records,
            processed_records: job.processed_records,
            error_count: job.error_count,
            error: job.error.clone(),
        },
    ))];
    let fields = BTreeMap::from([
        ("job_id".to_owned(), json!(job.id)),
        ("source".to_owned(), json!(job.source)),
        ("target".to_owned(), json!(job.target)),
        ("entity".to_owned(), json!(job.entity)),
        ("processed".to_owned(), json!(job.processed_records)),
        ("errors".to_owned(), json!(job.error_count)),
    ]);
    let summary = format!(
        "Job ID: {}\nSource: {}\nTarget: {}\nEntity: {}\nProcessed: {}\nErrors: {}",
        job.id, job.source, job.target, job.entity, job.processed_records, job.error_count
    );
    let alert = match job.status.as_str() {
        "completed" => Some(AlertRaised {
            severity: Severity::Info,
            kind: "bulk_sync_completed".into(),
            title: format!("Bulk Sync Complete: {}", job.id),
            text: format!("Bulk sync completed\n\n{summary}"),
            dedup_key: format!("bulk/{}", job.id),
            fields,
        }),
        "failed" => Some(AlertRaised {
            severity: Severity::Warning,
            kind: "bulk_sync_failed".into(),
            title: format!("Bulk Sync Failed: {}", job.id),
            text: format!(
                "Bulk sync failed\n\n{summary}\nError: {}",
                job.error.as_deref().unwrap_or("unknown")
            ),
            dedup_key: format!("bulk/{}", job.id),
            fields,
        }),
        _ => None,
    };
    if let Some(alert) = alert {
        rows.push(outbox::OutboxRow::new(&Envelope::new(&job.service, alert)));
    }
    outbox::enqueue(conn, schema, &rows).await
}

// ---------------------------------------------------------------------------------------------
// Admin API

/// Starts a bulk load.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    pub source: String,
    pub target: String,
    pub entity: String,
    /// Records per page (1-1000, default 100).
    #[serde(default)]
    pub batch_size: Option<i32>,
}

/// A job with the records it could not apply (the first 100).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: Job,
    pub errors: Vec<JobError>,
}

fn engine(platform: &Platform) -> Option<&Arc<Engine>> {
    platform.bulk.get()
}

async fn find(conn: &mut AsyncPgConnection, service: &str, id: &str) -> Result<Job, ApiError> {
    diesel::sql_query(format!("SELECT {COLUMNS} FROM bulk.jobs WHERE id = $1 AND service = $2"))
        .bind::<Text, _>(id)
        .bind::<Text, _>(service)
        .get_result(conn)
        .await
        .optional()?
        .ok_or_else(|| ApiError::NotFound(format!("bulk job {id}")))
}

/// Queues a bulk load; `409` while the same load is queued or running.
#[utoipa::path(post, path = "/admin/bulk/jobs", tag = "bulk", security(("admin_token" = [])),
    request_body = CreateJob,
    responses((status = 202, description = "queued", body = Job), (status = 409, description = "the same load is already queued or running"), (status = 422, description = "invalid field")))]
#[post("/admin/bulk/jobs")]
pub async fn create_job(
    _: Admin,
    platform: web::Data<Platform>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: CreateJob = parse_json(&body)?;
    let batch_size = request.batch_size.unwrap_or(DEFAULT_BATCH);
    if !(1..=MAX_BATCH).contains(&batch_size) {
        return Err(ApiError::field(
            "batch_size",
            format!("batch_size must be between 1 and {MAX_BATCH}"),
        ));
    }
    let kind = BulkKind::new(&request.source, &request.target, &request.entity);
    let service = platform.config.service;
    let Some(engine) = engine(&platform).filter(|e| e.sources.contains_key(&kind)) else {
        let offered: Vec<String> = engine(&platform)
            .map(|e| e.sources.keys().map(ToString::to_string).collect())
            .unwrap_or_default();
        let field = match engine(&platform) {
            Some(e) if !e.sources.keys().any(|k| k.source == kind.source) => "source",
            Some(e)
                if !e
                    .sources
                    .keys()
                    .any(|k| k.source == kind.source && k.target == kind.target) =>
            {
                "target"
            }
            _ => "entity",
        };
        return Err(ApiError::field(
            field,
            format!(
                "{service} offers no bulk sync of {kind} (offered: {})",
                if offered.is_empty() { "none".to_owned() } else { offered.join("; ") }
            ),
        ));
    };
    let id = format!(
        "SYNC-{}-{}",
        Utc::now().format("%Y%m%d%H%M%S"),
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let mut conn = platform.db.get().await?;
    let inserted: Result<Job, DieselError> = diesel::sql_query(format!(
        "INSERT INTO bulk.jobs (id, service, source, target, entity, batch_size, status) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued') RETURNING {COLUMNS}"
    ))
    .bind::<Text, _>(&id)
    .bind::<Text, _>(service)
    .bind::<Text, _>(&kind.source)
    .bind::<Text, _>(&kind.target)
    .bind::<Text, _>(&kind.entity)
    .bind::<Integer, _>(batch_size)
    .get_result(&mut conn)
    .await;
    match inserted {
        Ok(job) => {
            tracing::info!(job = %job.id, kind = %kind, "bulk job queued by admin");
            engine.wake.notify_one();
            Ok(HttpResponse::Accepted().json(job))
        }
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            let active: Option<Job> = diesel::sql_query(format!(
                "SELECT {COLUMNS} FROM bulk.jobs WHERE service = $1 AND source = $2 AND target = $3 \
                 AND entity = $4 AND status IN ('queued', 'running')"
            ))
            .bind::<Text, _>(service)
            .bind::<Text, _>(&kind.source)
            .bind::<Text, _>(&kind.target)
            .bind::<Text, _>(&kind.entity)
            .get_result(&mut conn)
            .await
            .optional()?;
            Err(ApiError::Conflict {
                detail: format!("a bulk sync of {kind} is already queued or running"),
                extra: json!({"job_id": active.map(|j| j.id)}),
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// This service's bulk jobs, newest first (the last 100).
#[utoipa::path(get, path = "/admin/bulk/jobs", tag = "bulk", security(("admin_token" = [])),
    responses((status = 200, description = "jobs, newest first", body = [Job])))]
#[get("/admin/bulk/jobs")]
pub async fn list_jobs(_: Admin, platform: web::Data<Platform>) -> Result<HttpResponse, ApiError> {
    let mut conn = platform.db.get().await?;
    let jobs: Vec<Job> = diesel::sql_query(format!(
        "SELECT {COLUMNS} FROM bulk.jobs WHERE service = $1 ORDER BY created_at DESC, id DESC LIMIT 100"
    ))
    .bind::<Text, _>(platform.config.service)
    .load(&mut conn)
    .await?;
    Ok(HttpResponse::Ok().json(jobs))
}

/// One job with the first 100 records it could not apply.
#[utoipa::path(get, path = "/admin/bulk/jobs/{id}", tag = "bulk", security(("admin_token" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "the job", body = JobDetail), (status = 404, description = "no such job")))]
#[get("/admin/bulk/jobs/{id}")]
pub async fn get_job(
    _: Admin,
    platform: web::Data<Platform>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = platform.db.get().await?;
    let job = find(&mut conn, platform.config.service, &id).await?;
    let errors: Vec<JobError> = diesel::sql_query(
        "SELECT record_id, error, created_at FROM bulk.job_errors WHERE job_id = $1 ORDER BY id LIMIT 100",
    )
    .bind::<Text, _>(&job.id)
    .load(&mut conn)
    .await?;
    Ok(HttpResponse::Ok().json(JobDetail { job, errors }))
}

/// Cancels a queued or running job. A running one stops within seconds: the page in progress
/// is abandoned (what it already applied stays applied; it is idempotent) and not counted.
#[utoipa::path(post, path = "/admin/bulk/jobs/{id}/cancel", tag = "bulk", security(("admin_token" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "cancelled", body = Job), (status = 404, description = "no such job"), (status = 409, description = "the job has already ended")))]
#[post("/admin/bulk/jobs/{id}/cancel")]
pub async fn cancel_job(
    _: Admin,
    platform: web::Data<Platform>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    transition(&platform, &id, &["queued", "running"], "cancelled").await
}

/// Queues a failed or cancelled job again; it resumes from its checkpoint.
#[utoipa::path(post, path = "/admin/bulk/jobs/{id}/resume", tag = "bulk", security(("admin_token" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "queued again", body = Job), (status = 404, description = "no such job"), (status = 409, description = "the job is not failed or cancelled, or the same load is active")))]
#[post("/admin/bulk/jobs/{id}/resume")]
pub async fn resume_job(
    _: Admin,
    platform: web::Data<Platform>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let response = transition(&platform, &id, &["failed", "cancelled"], "queued").await?;
    if let Some(engine) = engine(&platform) {
        engine.wake.notify_one();
    }
    Ok(response)
}

async fn transition(
    platform: &Platform,
    id: &str,
    from: &[&str],
    to: &'static str,
) -> Result<HttpResponse, ApiError> {
    let service = platform.config.service;
    let schema = platform.schema;
    let mut conn = platform.db.get().await?;
    let from: Vec<&str> = from.to_vec();
    let changed = conn
        .transaction::<_, DieselError, _>(async |conn| {
            let job: Option<Job> = diesel::sql_query(format!(
                "UPDATE bulk.jobs SET status = $3, lease_owner = NULL, lease_until = NULL, \
                     error = CASE WHEN $3 = 'queued' THEN NULL ELSE error END, \
                     completed_at = CASE WHEN $3 = 'queued' THEN NULL ELSE now() END, \
                     updated_at = now() \
                 WHERE id = $1 AND service = $2 AND status = ANY($4) RETURNING {COLUMNS}"
            ))
            .bind::<Text, _>(id)
            .bind::<Text, _>(service)
            .bind::<Text, _>(to)
            .bind::<Array<Text>, _>(&from)
            .get_result(conn)
            .await
            .optional()?;
            if let Some(job) = &job {
                announce(conn, schema, job).await?;
            }
            Ok(job)
        })
        .await;
    match changed {
        Ok(Some(job)) => {
            tracing::info!(job = %job.id, status = to, "bulk job changed by admin");
            Ok(HttpResponse::Ok().json(job))
        }
        Ok(None) => {
            let job = find(&mut conn, service, id).await?;
            Err(ApiError::Conflict {
                detail: format!("bulk job {id} is {}", job.status),
                extra: json!({"status": job.status}),
            })
        }
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            Err(ApiError::Conflict {
                detail: format!("another bulk job of the same kind as {id} is queued or running"),
                extra: json!({}),
            })
        }
        Err(e) => Err(e.into()),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(create_job)
        .service(list_jobs)
        .service(get_job)
        .service(cancel_job)
        .service(resume_job);
}
