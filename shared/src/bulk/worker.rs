//! The job worker: claims jobs with a lease and runs them page by page. The claim and the page
//! commit stay raw SQL (a `FOR UPDATE SKIP LOCKED` subselect, and counters that depend on
//! whether the page was the last); the other statements are diesel's DSL.

use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};

use super::{
    schema::{job_errors, jobs},
    *,
};

/// `jobs` narrowed to one job, its lease holder, and the running status.
type Held<'a> = diesel::dsl::Filter<
    diesel::dsl::Filter<
        diesel::dsl::Filter<jobs::table, diesel::dsl::Eq<jobs::id, &'a str>>,
        diesel::dsl::Eq<jobs::lease_owner, &'a str>,
    >,
    diesel::dsl::Eq<jobs::status, JobStatus>,
>;

/// The job, while `owner` holds its lease and it runs (every write of a worker is fenced so).
fn held<'a>(job: &'a Job, owner: &'a str) -> Held<'a> {
    jobs::table
        .filter(jobs::id.eq(job.id.as_str()))
        .filter(jobs::lease_owner.eq(owner))
        .filter(jobs::status.eq(JobStatus::Running))
}

pub(super) async fn work(platform: Bulk, engine: Arc<Engine>) {
    let owner = format!("{}/{}", platform.service, Uuid::new_v4().simple());
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
async fn claim(platform: &Bulk, engine: &Engine, owner: &str) -> anyhow::Result<Option<Job>> {
    let offered: Vec<String> =
        engine.sources.keys().map(|k| format!("{}/{}/{}", k.source, k.target, k.entity)).collect();
    let mut conn = platform.db.get().await?;
    let service = platform.service;
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

async fn run_job(platform: &Bulk, engine: &Engine, owner: &str, mut job: Job) {
    let Some(source) = engine.sources.get(&job.kind()) else {
        let error = format!("{} offers no bulk sync of {}", platform.service, job.kind());
        fail(platform, owner, &job, &error).await;
        return;
    };
    let mut prefetched = None;
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
            step = page(platform, &job, source.as_ref(), &mut prefetched) => step,
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
                if job.status == JobStatus::Completed {
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
async fn heartbeat(platform: &Bulk, owner: &str, job: &Job) {
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

/// A page read ahead while the previous one was applied: the cursor it was read at, and the
/// page or why it could not be read. (A page read ahead and then abandoned, at a stop, is read
/// again on resume.)
type Prefetched = Option<(Option<Value>, Result<Page, Outcome>)>;

/// Fetches (or takes the page read ahead) and applies the page at the job's checkpoint,
/// retrying transient failures of either with backoff (a fetch honours `Retry-After`; an apply
/// may run again, being idempotent). While it applies, the next page is read.
async fn page(
    platform: &Bulk,
    job: &Job,
    source: &dyn BulkSource,
    prefetched: &mut Prefetched,
) -> Step {
    let number = job.pages + 1;
    let limit = usize::try_from(job.batch_size).unwrap_or(1).max(1);
    let page = match prefetched.take() {
        Some((cursor, Ok(page))) if cursor == job.checkpoint => page,
        // A refusal stands; a transient failure is retried below.
        Some((cursor, Err(refusal))) if cursor == job.checkpoint && refused(&refusal) => {
            return Step::Failed(fetch_failure(number, refusal));
        }
        _ => match fetch(platform, job, source, number, limit).await {
            Ok(page) => page,
            Err(step) => return step,
        },
    };
    let next_cursor = page.next.clone();
    let read_ahead = async {
        match &next_cursor {
            Some(cursor) => Some(source.fetch(Some(cursor), limit).await),
            None => None,
        }
    };
    let apply = async move {
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
    };
    let (step, next) = tokio::join!(apply, read_ahead);
    if let (Step::Applied(..), Some(next)) = (&step, next) {
        *prefetched = Some((next_cursor, next));
    }
    step
}

/// Fetches the page at the job's checkpoint with retries.
async fn fetch(
    platform: &Bulk,
    job: &Job,
    source: &dyn BulkSource,
    number: i64,
    limit: usize,
) -> Result<Page, Step> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (error, wait) = match source.fetch(job.checkpoint.as_ref(), limit).await {
            Ok(page) => return Ok(page),
            Err(Outcome::Retry { after, error, .. }) => (error, after),
            Err(refusal) => return Err(Step::Failed(fetch_failure(number, refusal))),
        };
        if attempt >= ATTEMPTS {
            return Err(Step::Failed(format!(
                "fetching page {number} failed: {error} (after {ATTEMPTS} attempts)"
            )));
        }
        let wait = wait.unwrap_or_else(|| backoff(attempt));
        tracing::warn!(%error, attempt, wait_ms = wait.as_millis() as u64, "fetching a page failed; retrying");
        if !pause(platform, wait).await {
            return Err(Step::Stopping);
        }
    }
}

/// Whether a fetch's failure is final (not worth retrying).
fn refused(outcome: &Outcome) -> bool {
    !matches!(outcome, Outcome::Retry { .. })
}

/// Why the job fails on a final fetch failure.
pub(super) fn fetch_failure(number: i64, outcome: Outcome) -> String {
    match outcome {
        Outcome::Gone => format!("fetching page {number} failed: the source answered 410 Gone"),
        Outcome::Rejected { status, body } => format!(
            "fetching page {number} failed: the source rejected the request with {status}: {body}"
        ),
        Outcome::Delivered(status) => {
            format!("fetching page {number} failed: unexpected answer {status}")
        }
        Outcome::Retry { error, .. } => format!("fetching page {number} failed: {error}"),
    }
}

/// Sleeps `wait`; `false` if the service started stopping meanwhile.
async fn pause(platform: &Bulk, wait: Duration) -> bool {
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
async fn renew(platform: &Bulk, owner: &str, job: &Job, lease: Duration) -> anyhow::Result<bool> {
    let mut conn = platform.db.get().await?;
    let lease_until = Utc::now() + lease;
    let renewed = diesel::update(held(job, owner))
        .set((jobs::lease_until.eq(lease_until), jobs::updated_at.eq(diesel::dsl::now)))
        .execute(&mut conn)
        .await?;
    Ok(renewed == 1)
}

/// Records one applied page: counters, record errors and the next cursor, in one transaction
/// fenced by the lease. `None` if the job is no longer this worker's.
async fn commit_page(
    platform: &Bulk,
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
                let rows: Vec<_> = errors
                    .iter()
                    .map(|e| {
                        (
                            job_errors::job_id.eq(&job.id),
                            job_errors::record_id.eq(&e.record_id),
                            job_errors::error.eq(&e.error),
                        )
                    })
                    .collect();
                diesel::insert_into(job_errors::table).values(&rows).execute(conn).await?;
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
async fn fail(platform: &Bulk, owner: &str, job: &Job, error: &str) {
    tracing::warn!(%error, "bulk job failed");
    let schema = platform.schema;
    let result: anyhow::Result<()> = async {
        let mut conn = platform.db.get().await?;
        conn.transaction::<_, DieselError, _>(async |conn| {
            let failed: Option<Job> = diesel::update(held(job, owner))
                .set((
                    jobs::status.eq(JobStatus::Failed),
                    jobs::error.eq(error),
                    jobs::lease_owner.eq(None::<String>),
                    jobs::lease_until.eq(None::<DateTime<Utc>>),
                    jobs::completed_at.eq(diesel::dsl::now),
                    jobs::updated_at.eq(diesel::dsl::now),
                ))
                .returning(Job::as_returning())
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
async fn release(platform: &Bulk, owner: &str, job: &Job) {
    let result: anyhow::Result<usize> = async {
        let mut conn = platform.db.get().await?;
        Ok(diesel::update(held(job, owner))
            .set((jobs::lease_until.eq(diesel::dsl::now), jobs::updated_at.eq(diesel::dsl::now)))
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
pub(super) async fn announce(
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
            status: job.status.as_str().to_owned(),
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
    let alert = match job.status {
        JobStatus::Completed => Some(AlertRaised {
            severity: Severity::Info,
            kind: "bulk_sync_completed".into(),
            title: format!("Bulk Sync Complete: {}", job.id),
            text: format!("Bulk sync completed\n\n{summary}"),
            dedup_key: format!("bulk/{}", job.id),
            fields,
        }),
        JobStatus::Failed => Some(AlertRaised {
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
