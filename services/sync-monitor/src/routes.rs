//! sync-monitor's JSON API, for an administrator (the admin token, or the dashboard's session
//! with its CSRF token in `X-CSRF-Token` for changes):
//! - `GET /api/health`: the last check, each integration with its 24-hour history, open
//!   conflicts with their review links, open dead letters, bulk jobs and the runtime settings;
//! - `POST /api/health/check`: a check now;
//! - `PUT /api/settings/{key}`: changes a runtime setting, audited (who, when, old, new);
//!   `GET /api/settings/audit`;
//! - `POST /api/dead-letters/{id}/replay` and `GET /api/record-errors`,
//!   `POST /api/record-errors/{service}/{id}/{action}`: the owning service's admin API.

use actix_web::{HttpRequest, HttpResponse, get, post, put, web};
use diesel::sql_types::{Integer, Jsonb, Text};
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde_json::{Value, json};
use shared::{
    db::PgPool,
    http::{ApiError, session::AdminPage},
};
use uuid::Uuid;

use crate::{AppState, check};

fn database(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("database: {e}"))
}

/// A change from the dashboard carries the session's CSRF token (the bearer token needs none).
fn changing(admin: &AdminPage, req: &HttpRequest) -> Result<(), ApiError> {
    let given = req.headers().get("x-csrf-token").and_then(|v| v.to_str().ok());
    if admin.csrf_ok(given) {
        Ok(())
    } else {
        Err(ApiError::Rejected {
            detail: "the X-CSRF-Token header is missing or wrong: reload the page".into(),
            extra: json!({"field": "X-CSRF-Token"}),
        })
    }
}

#[derive(diesel::QueryableByName)]
struct Json {
    #[diesel(sql_type = Jsonb)]
    value: Value,
}

async fn json_query(db: &PgPool, sql: &str) -> Result<Value, ApiError> {
    let mut conn = db.get().await.map_err(database)?;
    let row: Json = diesel::sql_query(sql).get_result(&mut conn).await.map_err(database)?;
    Ok(row.value)
}

/// Everything the dashboard shows, as JSON.
pub async fn health_view(state: &AppState) -> Result<Value, ApiError> {
    let latest = json_query(
        &state.db,
        "SELECT coalesce((SELECT jsonb_build_object('status', overall, 'checked_at', checked_at, \
                'integrations', integrations, 'issues', issues) \
         FROM monitor.health_reports ORDER BY checked_at DESC LIMIT 1), 'null') AS value",
    )
    .await?;
    let mut view = if latest.is_null() {
        // No check ran yet: run one now.
        let report =
            check::run(state).await.map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
        let mut v = serde_json::to_value(&report).map_err(anyhow::Error::from)?;
        v["checked_at"] = json!(chrono::Utc::now());
        v
    } else {
        latest
    };
    let history = json_query(
        &state.db,
        "SELECT coalesce(jsonb_object_agg(system, points), '{}') AS value FROM ( \
           SELECT system, jsonb_agg(jsonb_build_object('hour', hour, 'synced', synced, 'errors', errors) ORDER BY hour) AS points \
           FROM monitor.hourly WHERE hour > now() - interval '24 hours' GROUP BY system) h",
    )
    .await?;
    if let Some(integrations) = view["integrations"].as_array_mut() {
        for i in integrations {
            let name = i["name"].as_str().unwrap_or_default().to_owned();
            i["history"] = history.get(&name).cloned().unwrap_or_else(|| json!([]));
        }
    }
    view["conflicts"] = json_query(
        &state.db,
        "SELECT coalesce(jsonb_agg(c ORDER BY c.updated_at DESC), '[]') AS value FROM ( \
           SELECT conflict_id, system, entity, record_id, external_id, status, updated_at FROM monitor.conflicts \
           WHERE status <> 'resolved' ORDER BY updated_at DESC LIMIT 50) c",
    )
    .await?;
    if let Some(conflicts) = view["conflicts"].as_array_mut() {
        for c in conflicts {
            let id = c["conflict_id"].as_str().unwrap_or_default().to_owned();
            c["review_url"] = json!(format!("{}/review/conflicts/{id}", state.review_url));
        }
    }
    view["dead_letters"] = json_query(
        &state.db,
        "SELECT coalesce(jsonb_agg(d ORDER BY d.at DESC), '[]') AS value FROM ( \
           SELECT dead_letter_id, integration, service, consumer, subject, error, deliveries, at \
           FROM monitor.service_dead_letters WHERE state = 'open' ORDER BY at DESC LIMIT 50) d",
    )
    .await?;
    view["bulk_jobs"] = json_query(
        &state.db,
        "SELECT coalesce(jsonb_agg(b ORDER BY b.updated_at DESC), '[]') AS value FROM ( \
           SELECT job_id, service, source, target, entity, status, total_records, processed_records, \
                  error_count, error, updated_at FROM monitor.bulk_jobs ORDER BY updated_at DESC LIMIT 20) b",
    )
    .await?;
    view["settings"] = state.settings.view();
    Ok(view)
}

/// The last check with everything the dashboard shows.
#[utoipa::path(get, path = "/api/health", tag = "monitor", security(("admin_token" = [])),
    responses((status = 200, description = "`{status, checked_at, integrations, issues, conflicts, dead_letters, bulk_jobs, settings}`")))]
#[get("/api/health")]
pub async fn health(_: AdminPage, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(health_view(&state).await?))
}

/// Runs a health check now.
#[utoipa::path(post, path = "/api/health/check", tag = "monitor", security(("admin_token" = [])),
    responses((status = 200, description = "the report")))]
#[post("/api/health/check")]
pub async fn check_now(
    admin: AdminPage,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    changing(&admin, &req)?;
    let report = check::run(&state).await.map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
    Ok(HttpResponse::Ok().json(report))
}

/// Changes one runtime setting (body: the new value), audited (as every change is: see
/// [`shared::settings::Settings::change`]).
#[utoipa::path(put, path = "/api/settings/{key}", tag = "monitor", security(("admin_token" = [])),
    responses((status = 200, description = "the settings in force"), (status = 422, description = "invalid value, naming the field")))]
#[put("/api/settings/{key}")]
pub async fn set_setting(
    admin: AdminPage,
    req: HttpRequest,
    state: web::Data<AppState>,
    key: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    changing(&admin, &req)?;
    let value: Value = shared::http::parse_json(&body)?;
    let who = if admin.session.is_some() { "dashboard session" } else { "admin token" };
    let view =
        state.settings.change(&state.db, (crate::SCHEMA, crate::SERVICE), &key, value, who).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// Every audited change of a runtime setting, newest first.
#[utoipa::path(get, path = "/api/settings/audit", tag = "monitor", security(("admin_token" = [])),
    responses((status = 200, description = "`[{at, service, who, key, old_value, new_value}]`")))]
#[get("/api/settings/audit")]
pub async fn settings_audit(
    _: AdminPage,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let audit = json_query(
        &state.db,
        "SELECT coalesce(jsonb_agg(a ORDER BY a.at DESC, a.id DESC), '[]') AS value FROM ( \
           SELECT id, at, service, who, key, old_value, new_value FROM monitor.settings_audit \
           ORDER BY at DESC, id DESC LIMIT 200) a",
    )
    .await?;
    Ok(HttpResponse::Ok().json(audit))
}

/// Calls a service's admin API: its answer and status.
async fn call_service(
    state: &AppState,
    service: &str,
    method: reqwest::Method,
    path: &str,
) -> Result<(u16, Value), ApiError> {
    let base = state.services.get(service).ok_or_else(|| {
        ApiError::field("service", format!("{service:?} is not in MONITOR_SERVICES"))
    })?;
    let response = state
        .http
        .request(method, format!("{base}{path}"))
        .bearer_auth(state.token_for(service))
        .send()
        .await
        .map_err(|e| ApiError::Unavailable(format!("{service}: {e}")))?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

fn answered(status: u16, body: Value) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(status)
        .unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
    HttpResponse::build(status).json(body)
}

/// Replays a dead letter through the service that owns it.
#[utoipa::path(post, path = "/api/dead-letters/{id}/replay", tag = "monitor", security(("admin_token" = [])),
    responses((status = 200, description = "replayed"), (status = 404, description = "no such open dead letter")))]
#[post("/api/dead-letters/{id}/replay")]
pub async fn replay(
    admin: AdminPage,
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    changing(&admin, &req)?;
    #[derive(diesel::QueryableByName)]
    struct Owner {
        #[diesel(sql_type = Text)]
        service: String,
    }
    let mut conn = state.db.get().await.map_err(database)?;
    let owner: Option<Owner> = diesel::sql_query(
        "SELECT service FROM monitor.service_dead_letters WHERE dead_letter_id = $1::uuid AND state = 'open'",
    )
    .bind::<Text, _>(id.to_string())
    .get_result(&mut conn)
    .await
    .map(Some)
    .or_else(|e| if e == diesel::result::Error::NotFound { Ok(None) } else { Err(e) })
    .map_err(database)?;
    let owner = owner.ok_or_else(|| ApiError::NotFound(format!("open dead letter {id}")))?;
    drop(conn);
    let path = format!("/admin/dead-letters/{id}/replay");
    let (status, body) = call_service(&state, &owner.service, reqwest::Method::POST, &path).await?;
    if (200..300).contains(&status) {
        let mut conn = state.db.get().await.map_err(database)?;
        diesel::sql_query(
            "UPDATE monitor.service_dead_letters SET state = 'replayed' WHERE dead_letter_id = $1::uuid",
        )
        .bind::<Text, _>(id.to_string())
        .execute(&mut conn)
        .await
        .map_err(database)?;
    }
    Ok(answered(status, body))
}

/// The open error-ledger rows of every service in `MONITOR_SERVICES` (each service's answer, or
/// why it could not be read).
#[utoipa::path(get, path = "/api/record-errors", tag = "monitor", security(("admin_token" = [])),
    responses((status = 200, description = "`{<service>: {count, errors} | {error}}`")))]
#[get("/api/record-errors")]
pub async fn record_errors(
    _: AdminPage,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let calls = state.services.keys().map(|service| {
        let state = state.clone();
        async move {
            let answer = call_service(
                &state,
                service,
                reqwest::Method::GET,
                "/admin/record-errors?limit=50",
            )
            .await;
            let value = match answer {
                Ok((200, body)) => body,
                Ok((status, body)) => json!({"error": format!("answered {status}"), "body": body}),
                Err(e) => json!({"error": e.to_string()}),
            };
            (service.clone(), value)
        }
    });
    let all: serde_json::Map<String, Value> =
        futures::future::join_all(calls).await.into_iter().collect();
    Ok(HttpResponse::Ok().json(all))
}

/// Retries, requeues or ignores one error-ledger row of a service.
#[utoipa::path(post, path = "/api/record-errors/{service}/{id}/{action}", tag = "monitor", security(("admin_token" = [])),
    responses((status = 200, description = "the service's answer")))]
#[post("/api/record-errors/{service}/{id}/{action}")]
pub async fn record_error_action(
    admin: AdminPage,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, i64, String)>,
) -> Result<HttpResponse, ApiError> {
    changing(&admin, &req)?;
    let (service, id, action) = path.into_inner();
    if !matches!(action.as_str(), "retry" | "requeue" | "ignore") {
        return Err(ApiError::field("action", "must be retry, requeue or ignore"));
    }
    let path = format!("/admin/record-errors/{id}/{action}");
    let (status, body) = call_service(&state, &service, reqwest::Method::POST, &path).await?;
    Ok(answered(status, body))
}

/// One record's whole trail, oldest first, and whether it is stuck and why: its sync attempts
/// (inbound event outcomes and pushes, as announced), conflicts, dead letters naming it and every
/// service's error-ledger rows. `id` is ours or the external system's, or a record key.
pub async fn trail(state: &AppState, id: &str) -> Result<Value, ApiError> {
    if id.is_empty() || id.chars().count() > 200 {
        return Err(ApiError::field("id", "must be 1 to 200 characters"));
    }
    let mut conn = state.db.get().await.map_err(database)?;
    let own: Json = diesel::sql_query(
            "WITH q(id) AS (SELECT $1::text), \
             e AS (SELECT at, 'sync' AS kind, system, NULL::text AS service, \
                          direction || ' ' || entity || ' ' || record_id AS what, status, \
                          coalesce(detail, http_status::text) AS detail, NULL::text AS link \
                   FROM monitor.sync_events, q WHERE record_id = q.id OR record_key = q.id \
                   ORDER BY at DESC LIMIT 500), \
             c AS (SELECT updated_at AS at, 'conflict', system, NULL, entity || ' ' || coalesce(external_id, record_id), \
                          status, NULL, conflict_id::text \
                   FROM monitor.conflicts, q WHERE record_id = q.id OR external_id = q.id), \
             d AS (SELECT at, 'dead letter', integration, service, consumer || ' ' || subject, state, error, \
                          dead_letter_id::text \
                   FROM monitor.service_dead_letters, q WHERE strpos(subject, q.id) > 0 OR strpos(error, q.id) > 0) \
             SELECT coalesce(jsonb_agg(t ORDER BY t.at), '[]') AS value FROM ( \
               SELECT * FROM e UNION ALL SELECT * FROM c UNION ALL SELECT * FROM d) t",
    )
    .bind::<Text, _>(id)
    .get_result(&mut conn)
    .await
    .map_err(database)?;
    drop(conn);
    let mut entries: Vec<Value> = own.value.as_array().cloned().unwrap_or_default();
    for entry in &mut entries {
        if entry["kind"] == "conflict" {
            let conflict = entry["link"].as_str().unwrap_or_default().to_owned();
            entry["link"] = json!(format!("{}/review/conflicts/{conflict}", state.review_url));
        }
    }
    // Every service's error ledger.
    let calls =
        state.services.keys().map(|service| {
            let path = format!(
                "/admin/record-errors?status=all&limit=100&record={}",
                shared::mappers::path_segment(id)
            );
            async move {
                (service.clone(), call_service(state, service, reqwest::Method::GET, &path).await)
            }
        });
    let mut unreachable = Vec::new();
    for (service, answer) in futures::future::join_all(calls).await {
        match answer {
            Ok((200, body)) => {
                for row in body["errors"].as_array().cloned().unwrap_or_default() {
                    entries.push(json!({
                        "at": row["updated_at"], "kind": "error ledger", "system": row["system"],
                        "service": service, "what": format!("{} {} {}", row["direction"].as_str().unwrap_or_default(),
                            row["entity"].as_str().unwrap_or_default(), row["record_id"].as_str().unwrap_or_default()),
                        "status": row["status"], "detail": row["error"], "link": row["id"],
                    }));
                }
            }
            Ok((status, _)) => unreachable.push(format!("{service} answered {status}")),
            Err(e) => unreachable.push(e.to_string()),
        }
    }
    entries.sort_by(|a, b| {
        a["at"].as_str().unwrap_or_default().cmp(b["at"].as_str().unwrap_or_default())
    });
    // Stuck: anything still open, or a last attempt that failed.
    let last_sync = entries.iter().rev().find(|e| e["kind"] == "sync");
    let mut why: Vec<String> = entries
        .iter()
        .filter(|e| match e["kind"].as_str() {
            Some("error ledger") | Some("dead letter") => e["status"] == "open",
            Some("conflict") => e["status"] != "resolved",
            _ => false,
        })
        .map(|e| {
            format!(
                "{}: {}",
                e["kind"].as_str().unwrap_or_default(),
                e["detail"].as_str().or(e["status"].as_str()).unwrap_or_default()
            )
        })
        .collect();
    if let Some(last) =
        last_sync.filter(|e| matches!(e["status"].as_str(), Some("retrying" | "dead_lettered")))
    {
        why.push(format!(
            "last sync attempt {}: {}",
            last["status"].as_str().unwrap_or_default(),
            last["detail"].as_str().unwrap_or_default()
        ));
    }
    Ok(
        json!({"record": id, "stuck": !why.is_empty(), "why": why, "trail": entries, "unreachable": unreachable}),
    )
}

/// "Is this record stuck, and why": its whole trail across every service.
#[utoipa::path(get, path = "/api/records/{id}", tag = "monitor", security(("admin_token" = [])),
    responses((status = 200, description = "`{record, stuck, why, trail: [{at, kind, system, service, what, status, detail, link}], unreachable}`")))]
#[get("/api/records/{id}")]
pub async fn record_trail(
    _: AdminPage,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(trail(&state, &id).await?))
}

/// Removes sync events, hourly counts and reports older than `days`, a bounded batch at a time.
pub async fn prune(db: &PgPool, days: u32) -> anyhow::Result<u64> {
    let mut conn = db.get().await?;
    let days = i32::try_from(days.max(1)).unwrap_or(i32::MAX);
    let mut removed = 0u64;
    loop {
        let n = diesel::sql_query(
            "DELETE FROM monitor.sync_events WHERE id IN (SELECT id FROM monitor.sync_events \
             WHERE at < now() - make_interval(days => $1) LIMIT 10000)",
        )
        .bind::<Integer, _>(days)
        .execute(&mut conn)
        .await?;
        removed += n as u64;
        if n < 10_000 {
            break;
        }
    }
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        for table in ["monitor.hourly WHERE hour", "monitor.health_reports WHERE checked_at"] {
            let n = diesel::sql_query(format!(
                "DELETE FROM {table} < now() - make_interval(days => $1)"
            ))
            .bind::<Integer, _>(days)
            .execute(conn)
            .await?;
            removed += n as u64;
        }
        Ok(())
    })
    .await?;
    shared::metrics::pruned("monitor", removed);
    Ok(removed)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health)
        .service(check_now)
        .service(settings_audit)
        .service(set_setting)
        .service(replay)
        .service(record_errors)
        .service(record_error_action)
        .service(record_trail)
        .configure(crate::dashboard::configure);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(description = "health checks, alert routing (Slack, PagerDuty, email) and the dashboard"),
    paths(
        health,
        check_now,
        set_setting,
        settings_audit,
        replay,
        record_errors,
        record_error_action
    )
)]
pub struct ApiDoc;
