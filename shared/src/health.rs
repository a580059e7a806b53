//! Operator endpoints mounted on every service: `/healthz` (the process runs), `/readyz`
//! (PostgreSQL and NATS answer), `/metrics` (Prometheus text) and `/openapi.json`.

use actix_web::{HttpResponse, get, web};
use serde::Serialize;

use crate::app::Platform;

#[derive(Serialize)]
struct Check {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl Check {
    fn from(result: anyhow::Result<()>) -> Self {
        match result {
            Ok(()) => Self { status: "ok", error: None },
            Err(e) => Self { status: "fail", error: Some(e.to_string()) },
        }
    }
}

/// Liveness: answers as long as the HTTP server runs.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

/// Readiness: PostgreSQL answers `SELECT 1` and NATS answers a JetStream request, each within 2s.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "ready"), (status = 503, description = "a dependency is down")))]
#[get("/readyz")]
pub async fn readyz(platform: web::Data<Platform>) -> HttpResponse {
    let (db, nats) =
        tokio::join!(crate::db::check(&platform.db), platform.bus.check(platform.readiness_stream));
    let (db, nats) = (Check::from(db), Check::from(nats));
    let ready = db.error.is_none() && nats.error.is_none();
    crate::metrics::READY.set(i64::from(ready));
    let body = serde_json::json!({"status": if ready { "ok" } else { "fail" }, "postgres": db, "nats": nats});
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
    let encoder = prometheus::TextEncoder::new();
    match encoder.encode_to_string(&prometheus::gather()) {
        Ok(text) => HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

/// The service's OpenAPI document, generated from its handlers.
#[get("/openapi.json")]
pub async fn openapi(platform: web::Data<Platform>) -> HttpResponse {
    HttpResponse::Ok().json(&*platform.openapi)
}

/// Mounts the operator endpoints.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(healthz).service(readyz).service(metrics_endpoint).service(openapi);
}
