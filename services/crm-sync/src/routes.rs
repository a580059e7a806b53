//! URLs of crm-sync (webhooks, events, bulk jobs, dry runs, record errors and targets are
//! platform endpoints, mounted by the platform).

use actix_web::{HttpResponse, post, web};
use shared::http::{Admin, ApiError};

use crate::{AppState, reconcile};

/// Runs a drift reconciliation pass now and reports what it found per entity.
#[utoipa::path(post, path = "/admin/crm/reconcile", tag = "crm", security(("admin_token" = [])),
    responses((status = 200, description = "per entity: records compared, drift and missed deletes applied", body = [reconcile::EntityReport]),
        (status = 503, description = "the CRM could not be read")))]
#[post("/admin/crm/reconcile")]
pub async fn reconcile_now(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let reports =
        reconcile::pass(&state).await.map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
    Ok(HttpResponse::Ok().json(reports))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(reconcile_now);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(description = "CRM (Salesforce, HubSpot) <-> local contacts, accounts and opportunities"),
    paths(reconcile_now)
)]
pub struct ApiDoc;
