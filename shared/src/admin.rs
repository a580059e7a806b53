//! Admin endpoints every service has (admin bearer token): runtime settings, the service's
//! dead letters, its push targets ([`crate::push`]) and its bulk-sync jobs ([`crate::bulk`]).

use actix_web::{HttpResponse, get, post, put, web};
use serde::Deserialize;
use uuid::Uuid;

use crate::{
    http::{Admin, ApiError, Reader, parse_json},
    platform::Platform,
    push::{PushTarget, TargetStatus, anti_entropy::PassReport},
};

/// The runtime settings in force.
#[utoipa::path(get, path = "/admin/settings", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, description = "the settings in force", body = crate::settings::RuntimeSettings)))]
#[get("/admin/settings")]
pub async fn get_settings(_: Admin, platform: web::Data<Platform>) -> HttpResponse {
    HttpResponse::Ok().json(platform.settings.view())
}

/// Sets one runtime setting for every service (body: the JSON value).
#[utoipa::path(put, path = "/admin/settings/{key}", tag = "admin", security(("admin_token" = [])),
    params(("key" = String, Path, description = "setting name")),
    responses((status = 200, description = "the settings in force", body = crate::settings::RuntimeSettings), (status = 422, description = "invalid value")))]
#[put("/admin/settings/{key}")]
pub async fn put_setting(
    _: Admin,
    platform: web::Data<Platform>,
    key: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let value: serde_json::Value = parse_json(&body)?;
    let service = (platform.schema, platform.config.service);
    let updated =
        platform.settings.change(&platform.db, service, &key, value, "admin token").await?;
    Ok(HttpResponse::Ok().json(updated))
}

#[derive(Deserialize)]
pub struct DeadLetterQuery {
    #[serde(default)]
    all: bool,
}

/// Dead letters of this service, newest first (`?all=true` includes replayed ones).
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, description = "dead letters, newest first", body = Vec<crate::bus::dead_letter::DeadLetter>)))]
#[get("/admin/dead-letters")]
pub async fn list_dead_letters(
    _: Admin,
    platform: web::Data<Platform>,
    query: web::Query<DeadLetterQuery>,
) -> Result<HttpResponse, ApiError> {
    let rows = platform.dead_letters().list(query.all, 500).await?;
    Ok(HttpResponse::Ok().json(rows))
}

/// Re-publishes a dead letter's original message.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = "admin", security(("admin_token" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, description = "replay queued", body = crate::bus::dead_letter::DeadLetter), (status = 404, description = "no such unreplayed dead letter")))]
#[post("/admin/dead-letters/{id}/replay")]
pub async fn replay_dead_letter(
    _: Admin,
    platform: web::Data<Platform>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    match platform.dead_letters().replay(*id).await? {
        Some(row) => Ok(HttpResponse::Accepted().json(row)),
        None => Err(ApiError::NotFound(format!("unreplayed dead letter {id}"))),
    }
}

/// The engines pushing to target `name` (one per entity the service pushes there).
fn push_target(
    platform: &Platform,
    name: &str,
) -> Result<Vec<std::sync::Arc<dyn PushTarget>>, ApiError> {
    let engines: Vec<_> =
        platform.push_targets().into_iter().filter(|t| t.target() == name).collect();
    if engines.is_empty() {
        return Err(ApiError::NotFound(format!("configured push target {name}")));
    }
    Ok(engines)
}

/// The push targets this service runs: stopped or not, and how many records each is behind.
#[utoipa::path(get, path = "/targets", tag = "admin", security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "state of each configured target", body = [TargetStatus])))]
#[get("/targets")]
pub async fn list_targets(
    _: Reader,
    platform: web::Data<Platform>,
) -> Result<HttpResponse, ApiError> {
    let mut out = Vec::new();
    for target in platform.push_targets() {
        out.push(target.status().await?);
    }
    Ok(HttpResponse::Ok().json(out))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Resumed {
    pub target: String,
    /// Whether the target was stopped before this call.
    pub was_stopped: bool,
    /// Records queued for pushing.
    pub queued: usize,
}

/// Resumes pushes to a target: clears its stop (after a 410), then queues every record it has
/// not been told. Safe on a running target (it re-queues what is behind).
#[utoipa::path(post, path = "/admin/targets/{target}/resume", tag = "admin", security(("admin_token" = [])),
    params(("target" = String, Path, description = "a configured push target")),
    responses((status = 200, description = "resumed", body = Resumed), (status = 404, description = "no such configured target")))]
#[post("/admin/targets/{target}/resume")]
pub async fn resume_target(
    _: Admin,
    platform: web::Data<Platform>,
    target: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut resumed = Resumed { target: target.into_inner(), was_stopped: false, queued: 0 };
    for engine in push_target(&platform, &resumed.target)? {
        let (was_stopped, queued) = engine.resume().await?;
        resumed.was_stopped |= was_stopped;
        resumed.queued += queued;
    }
    Ok(HttpResponse::Ok().json(resumed))
}

/// Runs an anti-entropy pass on a target now: reads every record back, pushes the ones that
/// drifted, and reports what it found.
#[utoipa::path(post, path = "/admin/targets/{target}/anti-entropy", tag = "admin", security(("admin_token" = [])),
    params(("target" = String, Path, description = "a configured push target")),
    responses((status = 200, description = "the pass's findings", body = PassReport), (status = 404, description = "no such configured target")))]
#[post("/admin/targets/{target}/anti-entropy")]
pub async fn check_target(
    _: Admin,
    platform: web::Data<Platform>,
    target: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut total: Option<crate::push::anti_entropy::PassReport> = None;
    for engine in push_target(&platform, &target)? {
        let report = engine.check().await?;
        total = Some(match total {
            None => report,
            Some(t) => crate::push::anti_entropy::PassReport {
                checked: t.checked + report.checked,
                drifted: t.drifted + report.drifted,
                unreadable: t.unreadable + report.unreadable,
                readable: t.readable || report.readable,
                ..t
            },
        });
    }
    Ok(HttpResponse::Ok().json(total))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(get_settings)
        .service(put_setting)
        .service(list_dead_letters)
        .service(replay_dead_letter)
        .service(list_targets)
        .service(resume_target)
        .service(check_target)
        .configure(crate::record_errors::configure)
        .configure(crate::bulk::configure)
        .configure(crate::ingress::configure);
}
