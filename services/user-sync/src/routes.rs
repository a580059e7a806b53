//! user-sync's admin API (admin token): pull the directory now, and the group drift report.

use actix_web::{HttpResponse, get, post, web};
use serde::Deserialize;
use shared::http::{Admin, ApiError};

use crate::{AppState, ldap};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncQuery {
    /// A full pass (every entry, and deactivation of the ones gone) instead of a delta one.
    #[serde(default)]
    full: bool,
}

/// Runs an LDAP pass now; what it did.
#[post("/admin/directory/ldap/sync")]
pub async fn sync_now(
    _: Admin,
    state: web::Data<AppState>,
    query: web::Query<SyncQuery>,
) -> Result<HttpResponse, ApiError> {
    let config = state
        .ldap
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("no LDAP directory is configured (LDAP_URL)".into()))?;
    let report = ldap::pass(&state.db, config, query.full)
        .await
        .map_err(|e| ApiError::Unavailable(format!("LDAP pass: {e:#}")))?;
    Ok(HttpResponse::Ok().json(report))
}

/// Groups whose members differ from what their provider set.
#[get("/admin/directory/drift")]
pub async fn drift(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.get().await?;
    let drift = crate::drift::drift(&mut conn)
        .await
        .map_err(|e| ApiError::Unavailable(format!("database: {e}")))?;
    Ok(HttpResponse::Ok().json(drift))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(sync_now).service(drift).configure(crate::scim::configure);
}
