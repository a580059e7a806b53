//! The admin API of bulk jobs (`/admin/bulk/jobs`, admin token).

use diesel::{ExpressionMethods, QueryDsl, SelectableHelper};

use super::{worker::announce, *};

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

fn engine(platform: &Bulk) -> Option<&Arc<Engine>> {
    platform.engine.get()
}

async fn find(conn: &mut AsyncPgConnection, service: &str, id: &str) -> Result<Job, ApiError> {
    schema::jobs::table
        .filter(schema::jobs::id.eq(id))
        .filter(schema::jobs::service.eq(service))
        .select(Job::as_select())
        .first(conn)
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
    platform: web::Data<Bulk>,
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
    let service = platform.service;
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
pub async fn list_jobs(_: Admin, platform: web::Data<Bulk>) -> Result<HttpResponse, ApiError> {
    let mut conn = platform.db.get().await?;
    let jobs: Vec<Job> = schema::jobs::table
        .filter(schema::jobs::service.eq(platform.service))
        .order((schema::jobs::created_at.desc(), schema::jobs::id.desc()))
        .limit(100)
        .select(Job::as_select())
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
    platform: web::Data<Bulk>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = platform.db.get().await?;
    let job = find(&mut conn, platform.service, &id).await?;
    let errors: Vec<JobError> = schema::job_errors::table
        .filter(schema::job_errors::job_id.eq(&job.id))
        .order(schema::job_errors::id)
        .limit(100)
        .select(JobError::as_select())
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
    platform: web::Data<Bulk>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    transition(&platform, &id, &[JobStatus::Queued, JobStatus::Running], JobStatus::Cancelled).await
}

/// Queues a failed or cancelled job again; it resumes from its checkpoint.
#[utoipa::path(post, path = "/admin/bulk/jobs/{id}/resume", tag = "bulk", security(("admin_token" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, description = "queued again", body = Job), (status = 404, description = "no such job"), (status = 409, description = "the job is not failed or cancelled, or the same load is active")))]
#[post("/admin/bulk/jobs/{id}/resume")]
pub async fn resume_job(
    _: Admin,
    platform: web::Data<Bulk>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let response =
        transition(&platform, &id, &[JobStatus::Failed, JobStatus::Cancelled], JobStatus::Queued)
            .await?;
    if let Some(engine) = engine(&platform) {
        engine.wake.notify_one();
    }
    Ok(response)
}

async fn transition(
    platform: &Bulk,
    id: &str,
    from: &[JobStatus],
    to: JobStatus,
) -> Result<HttpResponse, ApiError> {
    let service = platform.service;
    let schema = platform.schema;
    let mut conn = platform.db.get().await?;
    let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
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
            .bind::<Text, _>(to.as_str())
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
            tracing::info!(job = %job.id, status = %to, "bulk job changed by admin");
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
        .service(resume_job)
        .service(dry_run);
}

/// A dry run of a bulk load: which records it would create or change, nothing written.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DryRunRequest {
    pub source: String,
    pub target: String,
    pub entity: String,
    /// Records to read at most (default 1000, at most 100000).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Records per page (1-1000, default 100).
    #[serde(default)]
    pub batch_size: Option<i32>,
}

/// What a bulk load would do: counts over every record read, the first 50 differences and
/// errors.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DryRun {
    pub source: String,
    pub target: String,
    pub entity: String,
    /// Records read from the source.
    pub read: u64,
    /// Whether the source had more records than `limit`.
    pub truncated: bool,
    pub create: u64,
    pub update: u64,
    pub unchanged: u64,
    pub error_count: u64,
    pub errors: Vec<PreviewError>,
    /// Differences found (the first 50).
    pub differences: Vec<Difference>,
    pub difference_count: u64,
}

/// Reads a bulk load's source and reports what applying it would change; nothing is written.
/// A mapping change is tried the same way: a build with the new mapping reports what it would
/// change before it applies anything.
#[utoipa::path(post, path = "/admin/bulk/dry-run", tag = "bulk", security(("admin_token" = [])),
    request_body = DryRunRequest,
    responses((status = 200, description = "counts and the first differences", body = DryRun),
        (status = 422, description = "no such load, or it has no dry run"),
        (status = 502, description = "the source failed")))]
#[post("/admin/bulk/dry-run")]
pub async fn dry_run(
    _: Admin,
    platform: web::Data<Bulk>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    const SHOWN: usize = 50;
    let request: DryRunRequest = parse_json(&body)?;
    let limit = request.limit.unwrap_or(1000);
    if !(1..=100_000).contains(&limit) {
        return Err(ApiError::field("limit", "limit must be between 1 and 100000"));
    }
    let batch_size = request.batch_size.unwrap_or(DEFAULT_BATCH);
    if !(1..=MAX_BATCH).contains(&batch_size) {
        return Err(ApiError::field(
            "batch_size",
            format!("batch_size must be between 1 and {MAX_BATCH}"),
        ));
    }
    let kind = BulkKind::new(&request.source, &request.target, &request.entity);
    let source =
        engine(&platform).and_then(|e| e.sources.get(&kind).cloned()).ok_or_else(|| {
            ApiError::field("entity", format!("{} offers no bulk sync of {kind}", platform.service))
        })?;
    let mut report = DryRun {
        source: kind.source.clone(),
        target: kind.target.clone(),
        entity: kind.entity.clone(),
        read: 0,
        truncated: false,
        create: 0,
        update: 0,
        unchanged: 0,
        error_count: 0,
        errors: Vec::new(),
        differences: Vec::new(),
        difference_count: 0,
    };
    let mut cursor: Option<Value> = None;
    loop {
        let want = (limit - report.read).min(batch_size as u64) as usize;
        let page = fetch_for_preview(&platform, source.as_ref(), cursor.as_ref(), want).await?;
        let mut records = page.records;
        records.truncate(want);
        report.read += records.len() as u64;
        let Some(preview) = source.preview(&records).await.map_err(ApiError::Unexpected)? else {
            return Err(ApiError::field(
                "entity",
                format!("the bulk sync of {kind} has no dry run"),
            ));
        };
        report.create += preview.create;
        report.update += preview.update;
        report.unchanged += preview.unchanged;
        report.error_count += preview.errors.len() as u64;
        report.difference_count += preview.differences.len() as u64;
        report
            .errors
            .extend(preview.errors.into_iter().take(SHOWN - report.errors.len().min(SHOWN)));
        report.differences.extend(
            preview.differences.into_iter().take(SHOWN - report.differences.len().min(SHOWN)),
        );
        match page.next {
            Some(next) if report.read < limit => cursor = Some(next),
            Some(_) => {
                report.truncated = true;
                break;
            }
            None => break,
        }
    }
    tracing::info!(kind = %kind, read = report.read, create = report.create, update = report.update, "bulk dry run");
    Ok(HttpResponse::Ok().json(report))
}

/// One page for a dry run: retried like a job's fetch, a refusal is a 502 naming the source.
async fn fetch_for_preview(
    platform: &Bulk,
    source: &dyn BulkSource,
    cursor: Option<&Value>,
    limit: usize,
) -> Result<Page, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match source.fetch(cursor, limit).await {
            Ok(page) => return Ok(page),
            Err(Outcome::Retry { after, error, .. }) if attempt < ATTEMPTS => {
                tracing::warn!(%error, attempt, "dry run: fetching a page failed; retrying");
                tokio::select! {
                    _ = platform.shutdown.cancelled() => return Err(ApiError::Unavailable("shutting down".into())),
                    _ = tokio::time::sleep(after.unwrap_or_else(|| backoff(attempt))) => {}
                }
            }
            Err(outcome) => {
                return Err(ApiError::Unavailable(format!(
                    "the source failed: {}",
                    worker::fetch_failure(0, outcome)
                )));
            }
        }
    }
}
