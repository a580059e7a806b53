//! Operator endpoints mounted on every service: `/healthz` (the process runs), `/readyz`
//! (PostgreSQL and NATS answer), `/metrics` (Prometheus text) and `/openapi.json`.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;

use crate::platform::Platform;

#[derive(Serialize)]
struct Check {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    /// The state only: `/readyz` answers without credentials, so it never shows the raw error
    /// (which may name hosts, users or URLs). The error goes to the log.
    fn from(dependency: &'static str, result: anyhow::Result<()>) -> Self {
        match result {
            Ok(()) => Self { status: "ok", error: None },
            Err(e) => {
                tracing::warn!(dependency, error = %format!("{e:#}"), "readiness check failed");
                Self {
                    status: "fail",
                    error: Some(format!("{dependency} did not answer within 2 s")),
                }
            }
        }
    }
}

/// Liveness: answers as long as the HTTP server runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: the service can do its work. PostgreSQL must answer `SELECT 1` (on readiness's
/// own connection, within 2 s). NATS is reported but does not make it unready: every write goes
/// through the PostgreSQL outbox, so requests are accepted and kept while NATS is down, and
/// published when it returns (`status: degraded` meanwhile).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready (`degraded` while NATS is down)"), (status = 503, description = "PostgreSQL is down")))]
#[get("/readyz")]
pub async fn readyz(platform: web::Data<Platform>) -> HttpResponse {
    let (db, nats) =
        tokio::join!(platform.readiness_db.check(), platform.bus.check(platform.readiness_stream));
    let (db, nats) = (Check::from("postgres", db), Check::from("nats", nats));
    let ready = db.error.is_none();
    crate::metrics::READY.set(i64::from(ready));
    let status = match (ready, nats.error.is_none()) {
        (false, _) => "fail",
        (true, true) => "ok",
        (true, false) => "degraded",
    };
    let body = serde_json::json!({"status": status, "postgres": db, "nats": nats});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus metrics of this process.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
#[get("/metrics")]
pub async fn metrics_endpoint() -> HttpResponse {
    crate::db::observe_pools();
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&prometheus::gather()) {
        Ok(text) => HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// The service's OpenAPI document, generated from its handlers, with the platform's admin
/// endpoints.
#[get("/openapi.json")]
pub async fn openapi_document(platform: web::Data<Platform>) -> HttpResponse {
    let mut document = (*platform.openapi).clone();
    document.merge(<PlatformApi as utoipa::OpenApi>::openapi());
    HttpResponse::Ok().json(&document)
}

/// Mounts the operator endpoints.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics_endpoint).service(openapi_document);
}

/// OpenAPI paths of the operator and admin endpoints, merged into every service's document.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        healthz, readyz, metrics_endpoint,
        crate::admin::get_settings, crate::admin::put_setting, crate::admin::list_dead_letters,
        crate::admin::replay_dead_letter, crate::admin::list_targets, crate::admin::resume_target,
        crate::admin::check_target,
        crate::record_errors::list, crate::record_errors::act_one, crate::record_errors::act_many,
        crate::bulk::create_job, crate::bulk::list_jobs, crate::bulk::get_job,
        crate::bulk::cancel_job, crate::bulk::resume_job, crate::bulk::dry_run,
        crate::ingress::post_webhook, crate::ingress::get_event
    ),
    modifiers(&SecuritySchemes)
)]
pub struct PlatformApi;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Datasync-Signature"))),
        );
    }
}
