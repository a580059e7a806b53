//! conflict-resolver's JSON API (admin token): list, show and decide conflicts.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, post, web};
use diesel_async::AsyncConnection;
use serde::Deserialize;
use serde_json::{Map, Value};
use shared::{
    http::{Admin, ApiError, parse_json},
    merge::changed,
};
use uuid::Uuid;

use crate::{
    AppState,
    conflicts::{self, Conflict, Filter, Resolution},
};

fn database(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("database: {e}"))
}

/// The conflicts, newest first, filtered by system, entity, status and age.
#[utoipa::path(get, path = "/conflicts", tag = "conflicts", security(("admin_token" = [])),
    params(Filter), responses((status = 200, body = [Conflict])))]
#[get("/conflicts")]
pub async fn list(
    _: Admin,
    state: web::Data<AppState>,
    filter: web::Query<Filter>,
) -> Result<HttpResponse, ApiError> {
    if let Some(status) = filter.status.as_deref()
        && !matches!(status, "pending" | "escalated" | "resolved")
    {
        return Err(ApiError::field("status", "must be pending, escalated or resolved"));
    }
    let mut conn = state.db.get().await.map_err(database)?;
    Ok(HttpResponse::Ok().json(conflicts::list(&mut conn, &filter).await.map_err(database)?))
}

/// One conflict with base, local and remote, and the fields each side changed.
#[utoipa::path(get, path = "/conflicts/{id}", tag = "conflicts", security(("admin_token" = [])),
    responses((status = 200, body = Conflict), (status = 404, description = "no such conflict")))]
#[get("/conflicts/{id}")]
pub async fn show(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.db.get().await.map_err(database)?;
    let conflict = conflicts::get(&mut conn, *id, false)
        .await
        .map_err(database)?
        .ok_or_else(|| ApiError::NotFound(format!("conflict {id}")))?;
    let object = |v: &Value| v.as_object().cloned().unwrap_or_default();
    let base = object(&conflict.base);
    let mut body = serde_json::to_value(&conflict).map_err(anyhow::Error::from)?;
    body["changed"] = serde_json::json!({
        "local": changed(&base, &object(&conflict.local)),
        "remote": changed(&base, &object(&conflict.remote)),
    });
    Ok(HttpResponse::Ok().json(body))
}

/// A person's decision: one side for every field, or a side per field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Choice {
    /// `local` or `remote`: that side's values of every field either side changed.
    pub side: Option<String>,
    /// Per field, `local` or `remote` (fields not named take `side`).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// The values a choice gives the fields either side changed.
fn values_of(conflict: &Conflict, choice: &Choice) -> Result<Map<String, Value>, ApiError> {
    let object = |v: &Value| v.as_object().cloned().unwrap_or_default();
    let (base, local, remote) =
        (object(&conflict.base), object(&conflict.local), object(&conflict.remote));
    let mut fields = changed(&base, &local);
    fields.extend(changed(&base, &remote));
    for field in choice.fields.keys() {
        if !fields.contains(field) {
            return Err(ApiError::field(
                &format!("fields.{field}"),
                "is not a field either side changed",
            ));
        }
    }
    let mut values = Map::new();
    for field in fields {
        let side = choice.fields.get(&field).or(choice.side.as_ref()).ok_or_else(|| {
            ApiError::field(&format!("fields.{field}"), "choose local or remote (or a side)")
        })?;
        let from = match side.as_str() {
            "local" => &local,
            "remote" => &remote,
            _ => {
                return Err(ApiError::field(&format!("fields.{field}"), "must be local or remote"));
            }
        };
        values.insert(field.clone(), from.get(&field).cloned().unwrap_or(Value::Null));
    }
    Ok(values)
}

/// Decides a conflict by hand; a conflict resolved already is a 409 (nothing is resolved twice).
#[utoipa::path(post, path = "/conflicts/{id}/resolve", tag = "conflicts", security(("admin_token" = [])),
    request_body = Choice,
    responses((status = 200, body = Conflict), (status = 404, description = "no such conflict"),
        (status = 409, description = "resolved already"), (status = 422, description = "a bad choice, naming the field")))]
#[post("/conflicts/{id}/resolve")]
pub async fn resolve(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let choice: Choice = parse_json(&body)?;
    if let Some(side) = choice.side.as_deref()
        && !matches!(side, "local" | "remote")
    {
        return Err(ApiError::field("side", "must be local or remote"));
    }
    let id = *id;
    let mut conn = state.db.get().await.map_err(database)?;
    let resolved = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let conflict = unresolved(conn, id).await?;
            apply_choice(conn, &conflict, &choice).await?;
            conflicts::get(conn, id, false).await.map_err(database)
        })
        .await?;
    Ok(HttpResponse::Ok().json(resolved))
}

/// Closes a conflict without sending anything back (e.g. a resolution whose record is gone);
/// a conflict resolved already is a 409.
#[utoipa::path(post, path = "/conflicts/{id}/dismiss", tag = "conflicts", security(("admin_token" = [])),
    responses((status = 200, body = Conflict), (status = 404, description = "no such conflict"),
        (status = 409, description = "resolved already")))]
#[post("/conflicts/{id}/dismiss")]
pub async fn dismiss(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let mut conn = state.db.get().await.map_err(database)?;
    let dismissed = conn
        .transaction::<_, ApiError, _>(async |conn| {
            let conflict = unresolved(conn, id).await?;
            conflicts::dismiss(conn, &conflict).await.map_err(database)?;
            conflicts::get(conn, id, false).await.map_err(database)
        })
        .await?;
    Ok(HttpResponse::Ok().json(dismissed))
}

/// Resolves a locked unresolved conflict as a person chose.
pub(crate) async fn apply_choice(
    conn: &mut diesel_async::AsyncPgConnection,
    conflict: &Conflict,
    choice: &Choice,
) -> Result<(), ApiError> {
    let values = values_of(conflict, choice)?;
    let winner = match (choice.side.as_deref(), choice.fields.is_empty()) {
        (Some("local"), true) => "local",
        (Some("remote"), true) => "remote",
        _ => "fields",
    };
    let resolution = Resolution {
        rule: None,
        winner,
        explanation: format!("decided by an administrator ({winner})"),
        resolved_by: "admin".into(),
        values,
    };
    conflicts::resolve(conn, conflict, resolution).await.map_err(database)
}

/// What a bulk resolve counted, or did.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Bulk {
    /// Unresolved conflicts matching (a preview), or resolved.
    pub count: usize,
    /// Whether they were resolved (`false`: a preview; send `"confirm": true`).
    pub confirmed: bool,
}

/// Resolves every unresolved conflict `filter` matches (at most 1000) with `side`, each in
/// its own transaction (one already resolved meanwhile is skipped); or, without `confirm`,
/// counts them.
pub(crate) async fn resolve_many(
    state: &AppState,
    filter: &Filter,
    side: &str,
    confirm: bool,
) -> Result<Bulk, ApiError> {
    if matches!(filter.status.as_deref(), Some("resolved")) {
        return Err(ApiError::field("status", "resolved conflicts cannot be resolved again"));
    }
    let mut conn = state.db.get().await.map_err(database)?;
    let matching: Vec<Uuid> =
        conflicts::list(&mut conn, &Filter { limit: Some(1000), ..filter.clone() })
            .await
            .map_err(database)?
            .into_iter()
            .filter(|c| c.status != "resolved")
            .map(|c| c.id)
            .collect();
    if !confirm {
        return Ok(Bulk { count: matching.len(), confirmed: false });
    }
    let choice = Choice { side: Some(side.to_owned()), fields: BTreeMap::new() };
    let mut count = 0;
    for id in matching {
        let done = conn
            .transaction::<_, ApiError, _>(async |conn| {
                let Some(conflict) = conflicts::get(conn, id, true).await.map_err(database)? else {
                    return Ok(false);
                };
                if conflict.status == "resolved" {
                    return Ok(false);
                }
                apply_choice(conn, &conflict, &choice).await.map(|()| true)
            })
            .await?;
        count += usize::from(done);
    }
    Ok(Bulk { count, confirmed: true })
}

/// A bulk resolve: a filter, a side, and whether to do it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkChoice {
    pub system: Option<String>,
    pub entity: Option<String>,
    pub status: Option<String>,
    pub older_than_minutes: Option<i64>,
    /// `local` or `remote`.
    pub side: String,
    /// `false` (default): only count them.
    #[serde(default)]
    pub confirm: bool,
}

/// Resolves every unresolved conflict of a filter with one side; without `confirm`, the count
/// first.
#[utoipa::path(post, path = "/conflicts/resolve", tag = "conflicts", security(("admin_token" = [])),
    request_body = BulkChoice, responses((status = 200, body = Bulk), (status = 422, description = "a bad choice, naming the field")))]
#[post("/conflicts/resolve")]
pub async fn resolve_bulk(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let choice: BulkChoice = parse_json(&body)?;
    if !matches!(choice.side.as_str(), "local" | "remote") {
        return Err(ApiError::field("side", "must be local or remote"));
    }
    let filter = Filter {
        system: choice.system,
        entity: choice.entity,
        status: choice.status,
        older_than_minutes: choice.older_than_minutes,
        limit: Some(1000),
    };
    Ok(HttpResponse::Ok().json(resolve_many(&state, &filter, &choice.side, choice.confirm).await?))
}

/// Undoes the automatic resolution of a locked conflict, if it may be: decided by a rule for
/// one side, within the window, not undone yet.
pub(crate) async fn undo_one(
    conn: &mut diesel_async::AsyncPgConnection,
    state: &AppState,
    id: Uuid,
) -> Result<(), ApiError> {
    let conflict = conflicts::get(conn, id, true)
        .await
        .map_err(database)?
        .ok_or_else(|| ApiError::NotFound(format!("conflict {id}")))?;
    let refuse = |detail: String| ApiError::Rejected { detail, extra: serde_json::json!({}) };
    if conflict.status != "resolved" || conflict.undone_at.is_some() {
        return Err(ApiError::Conflict {
            detail: format!("conflict {id} has no automatic resolution to undo"),
            extra: serde_json::json!({"status": conflict.status, "undone_at": conflict.undone_at}),
        });
    }
    if !conflict.resolved_by.as_deref().is_some_and(|b| b.starts_with("rule:")) {
        return Err(refuse(
            "only automatic resolutions can be undone; resolve it again by hand".into(),
        ));
    }
    let window = chrono::Duration::from_std(state.undo_window).unwrap_or(chrono::Duration::MAX);
    if conflict.resolved_at.is_none_or(|at| chrono::Utc::now() - at > window) {
        return Err(refuse(format!(
            "the undo window ({} s) has passed",
            state.undo_window.as_secs()
        )));
    }
    let other = match conflict.winner.as_deref() {
        Some("local") => "remote",
        Some("remote") => "local",
        _ => return Err(refuse("a merge kept both sides' changes: there is no other side".into())),
    };
    let source = if other == "local" { &conflict.local } else { &conflict.remote };
    let fields: Vec<String> = conflict
        .resolution
        .as_ref()
        .and_then(Value::as_object)
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    let values: Map<String, Value> = fields
        .into_iter()
        .map(|f| {
            let v = source.get(&f).cloned().unwrap_or(Value::Null);
            (f, v)
        })
        .collect();
    conflicts::undo(conn, &conflict, other, values).await.map_err(database)
}

/// Undoes an automatic resolution within the window: the other side goes out as a new
/// resolution.
#[utoipa::path(post, path = "/conflicts/{id}/undo", tag = "conflicts", security(("admin_token" = [])),
    responses((status = 200, body = Conflict), (status = 404, description = "no such conflict"),
        (status = 409, description = "nothing to undo (not resolved, or undone already)"),
        (status = 422, description = "not an automatic one-side resolution, or past the window")))]
#[post("/conflicts/{id}/undo")]
pub async fn undo(
    _: Admin,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let id = *id;
    let mut conn = state.db.get().await.map_err(database)?;
    let undone = conn
        .transaction::<_, ApiError, _>(async |conn| {
            undo_one(conn, &state, id).await?;
            conflicts::get(conn, id, false).await.map_err(database)
        })
        .await?;
    Ok(HttpResponse::Ok().json(undone))
}

/// The locked conflict `id`, if it is not resolved yet (404 / 409 otherwise).
pub(crate) async fn unresolved(
    conn: &mut diesel_async::AsyncPgConnection,
    id: Uuid,
) -> Result<Conflict, ApiError> {
    let conflict = conflicts::get(conn, id, true)
        .await
        .map_err(database)?
        .ok_or_else(|| ApiError::NotFound(format!("conflict {id}")))?;
    if conflict.status == "resolved" {
        return Err(ApiError::Conflict {
            detail: format!("conflict {id} is resolved already"),
            extra: serde_json::json!({"resolved_by": conflict.resolved_by}),
        });
    }
    Ok(conflict)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    // `/conflicts/resolve` before `/conflicts/{id}`-shaped routes.
    cfg.service(resolve_bulk)
        .service(list)
        .service(show)
        .service(resolve)
        .service(dismiss)
        .service(undo)
        .configure(crate::review::configure);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(description = "conflict queue, automatic rules and manual review"),
    paths(list, show, resolve, dismiss, resolve_bulk, undo)
)]
pub struct ApiDoc;
