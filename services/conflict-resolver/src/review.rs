//! The review pages (HTML) for people: log in with the admin token (or send it as a bearer
//! token), list conflicts with filters, see one with base, local and remote side by side and the
//! changed fields highlighted, choose local, remote or per field, dismiss, and resolve many at
//! once (the count is shown first). Every form carries the session's CSRF token.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use diesel_async::AsyncConnection;
use serde_json::{Map, Value};
use shared::{
    http::{
        ApiError,
        pages::{Site, see},
        session::AdminPage,
    },
    merge::changed,
    notify::escape_html,
};
use uuid::Uuid;

use crate::{
    AppState,
    conflicts::{self, Conflict, Filter},
    routes::{Choice, apply_choice, unresolved},
};

fn database(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("database: {e}"))
}

/// The review pages' site.
const SITE: Site = Site {
    home: "/review",
    name: "datasync conflicts",
    style: "td.changed{background:#fff1c2;font-weight:600}\
.status-escalated{color:#a40}.status-resolved{color:#070}.status-pending{color:#555}",
};

fn page(title: &str, body: &str) -> HttpResponse {
    SITE.page(title, body)
}

fn login_redirect() -> HttpResponse {
    SITE.login_redirect()
}

fn text(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "<em>empty</em>".into(),
        Some(Value::String(s)) => escape_html(s),
        Some(other) => escape_html(&other.to_string()),
    }
}

/// The login form.
#[get("/review/login")]
pub async fn login_form() -> HttpResponse {
    SITE.login_form()
}

/// Logs in with the admin token: a session cookie, then the list.
#[post("/review/login")]
pub async fn login(
    req: HttpRequest,
    form: web::Form<BTreeMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    SITE.login(&req, &form)
}

fn filter_query(filter: &Filter) -> String {
    let mut parts = Vec::new();
    for (k, v) in [
        ("system", filter.system.clone()),
        ("entity", filter.entity.clone()),
        ("status", filter.status.clone()),
        ("older_than_minutes", filter.older_than_minutes.map(|m| m.to_string())),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            parts.push(format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                escape_html(&v)
            ));
        }
    }
    parts.concat()
}

/// Empty filter fields (from a form) mean "any".
fn cleaned(mut filter: Filter) -> Filter {
    let none_if_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    filter.system = none_if_empty(filter.system);
    filter.entity = none_if_empty(filter.entity);
    filter.status = none_if_empty(filter.status);
    filter
}

/// The list, with filters and the bulk form.
#[get("/review")]
pub async fn list(
    admin: Result<AdminPage, ApiError>,
    state: web::Data<AppState>,
    filter: web::Query<Filter>,
) -> Result<HttpResponse, ApiError> {
    let Ok(admin) = admin else { return Ok(login_redirect()) };
    let filter = cleaned(filter.into_inner());
    let mut conn = state.db.get().await.map_err(database)?;
    let rows = conflicts::list(&mut conn, &filter).await.map_err(database)?;
    let value = |v: &Option<String>| escape_html(v.as_deref().unwrap_or_default());
    let selected = |s: &str| if filter.status.as_deref() == Some(s) { " selected" } else { "" };
    let mut body = format!(
        "<h1>Conflicts</h1><form method=\"get\" action=\"/review\" id=\"filters\">\
         <label>System <input name=\"system\" value=\"{}\" size=\"8\"></label> \
         <label>Entity <input name=\"entity\" value=\"{}\" size=\"10\"></label> \
         <label>Status <select name=\"status\"><option value=\"\">any</option>\
         <option{}>pending</option><option{}>escalated</option><option{}>resolved</option></select></label> \
         <label>Older than <input name=\"older_than_minutes\" value=\"{}\" size=\"4\"> min</label> \
         <button type=\"submit\">Filter</button></form>",
        value(&filter.system),
        value(&filter.entity),
        selected("pending"),
        selected("escalated"),
        selected("resolved"),
        filter.older_than_minutes.map(|m| m.to_string()).unwrap_or_default(),
    );
    body.push_str(
        "<table id=\"conflicts\"><thead><tr><th>Detected</th><th>System</th><th>Record</th>\
         <th>Fields</th><th>Status</th><th>Decided by</th></tr></thead><tbody>",
    );
    for c in &rows {
        let fields: Vec<String> = c
            .fields
            .as_array()
            .map(|f| f.iter().filter_map(Value::as_str).map(escape_html).collect())
            .unwrap_or_default();
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td><a href=\"/review/conflicts/{id}\">{} #{}</a></td>\
             <td>{}</td><td class=\"status-{status}\">{status}</td><td>{}</td></tr>",
            c.detected_at.format("%Y-%m-%d %H:%M:%S"),
            escape_html(&c.system),
            escape_html(&c.entity),
            c.record_id,
            fields.join(", "),
            escape_html(c.resolved_by.as_deref().unwrap_or("")),
            id = c.id,
            status = escape_html(&c.status),
        ));
    }
    body.push_str("</tbody></table>");
    body.push_str(&format!(
        "<h2>Resolve many</h2><form method=\"post\" action=\"/review/bulk\" id=\"bulk\">{}\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <label><input type=\"radio\" name=\"side\" value=\"local\" checked> local</label> \
         <label><input type=\"radio\" name=\"side\" value=\"remote\"> remote</label> \
         <button type=\"submit\" id=\"bulk-preview\">Count the unresolved conflicts of this filter</button></form>",
        filter_query(&filter),
        escape_html(&admin.csrf)
    ));
    Ok(page("Conflicts", &body))
}

/// One conflict: base, local and remote side by side, changed cells highlighted, and the forms.
#[get("/review/conflicts/{id}")]
pub async fn show(
    admin: Result<AdminPage, ApiError>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let Ok(admin) = admin else { return Ok(login_redirect()) };
    let mut conn = state.db.get().await.map_err(database)?;
    let c = conflicts::get(&mut conn, *id, false)
        .await
        .map_err(database)?
        .ok_or_else(|| ApiError::NotFound(format!("conflict {id}")))?;
    let undoable = c.status == "resolved"
        && c.undone_at.is_none()
        && c.resolved_by.as_deref().is_some_and(|b| b.starts_with("rule:"))
        && matches!(c.winner.as_deref(), Some("local" | "remote"))
        && c.resolved_at.is_some_and(|at| {
            chrono::Utc::now() - at
                < chrono::Duration::from_std(state.undo_window).unwrap_or(chrono::Duration::MAX)
        });
    let mut body = conflict_body(&c, &admin.csrf);
    if undoable {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/review/conflicts/{}/undo\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"undo\">Undo: send the other side back</button></form>",
            c.id,
            escape_html(&admin.csrf)
        ));
    }
    Ok(page(&format!("{} #{}", c.entity, c.record_id), &body))
}

/// Undoes an automatic resolution from its page.
#[post("/review/conflicts/{id}/undo")]
pub async fn undo(
    admin: Result<AdminPage, ApiError>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    form: web::Form<BTreeMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let Some(_) = posted(admin, &form)? else { return Ok(login_redirect()) };
    let id = *id;
    let mut conn = state.db.get().await.map_err(database)?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        crate::routes::undo_one(conn, &state, id).await
    })
    .await?;
    Ok(see(&format!("/review/conflicts/{id}")))
}

fn conflict_body(c: &Conflict, csrf: &str) -> String {
    let object = |v: &Value| v.as_object().cloned().unwrap_or_default();
    let (base, local, remote): (Map<String, Value>, _, _) =
        (object(&c.base), object(&c.local), object(&c.remote));
    let (ours, theirs) = (changed(&base, &local), changed(&base, &remote));
    let mut fields: Vec<&String> = base.keys().chain(local.keys()).chain(remote.keys()).collect();
    fields.sort();
    fields.dedup();
    let open = c.status != "resolved";
    let mut body = format!(
        "<h1>{} #{} <small>({}, id {})</small></h1><p id=\"status\" class=\"status-{status}\">Status: {status}</p>",
        escape_html(&c.entity),
        c.record_id,
        escape_html(&c.system),
        escape_html(&c.external_id),
        status = escape_html(&c.status)
    );
    if let Some(explanation) = &c.explanation {
        body.push_str(&format!(
            "<p class=\"note\" id=\"explanation\">{}</p>",
            escape_html(explanation)
        ));
    }
    body.push_str(&format!(
        "<p>Local changed at {} ({} clock); {} changed at {} ({} clock).</p>",
        c.local_at.to_rfc3339(),
        escape_html(&c.local_clock),
        escape_html(&c.system),
        c.remote_at.to_rfc3339(),
        escape_html(&c.remote_clock)
    ));
    body.push_str(&format!(
        "<form method=\"post\" action=\"/review/conflicts/{}/resolve\" id=\"resolve\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <table id=\"sides\"><thead><tr><th>Field</th><th>Base</th><th>Local</th><th>{}</th><th>Keep</th></tr></thead><tbody>",
        c.id,
        escape_html(csrf),
        escape_html(&c.system)
    ));
    for f in fields {
        let (l, r) = (ours.contains(f), theirs.contains(f));
        let class = |changed: bool| if changed { " class=\"changed\"" } else { "" };
        let choose = if open && (l || r) {
            let default = if l && !r { "local" } else { "remote" };
            let radio = |side: &str| {
                format!(
                    "<label><input type=\"radio\" name=\"field.{name}\" value=\"{side}\"{checked}> {side}</label> ",
                    name = escape_html(f),
                    checked = if side == default { " checked" } else { "" }
                )
            };
            format!("{}{}", radio("local"), radio("remote"))
        } else {
            String::new()
        };
        body.push_str(&format!(
            "<tr><th>{}</th><td>{}</td><td{}>{}</td><td{}>{}</td><td>{}</td></tr>",
            escape_html(f),
            text(base.get(f)),
            class(l),
            text(local.get(f)),
            class(r),
            text(remote.get(f)),
            choose
        ));
    }
    body.push_str("</tbody></table>");
    if open {
        body.push_str(
            "<p><button type=\"submit\" id=\"resolve-fields\">Resolve with these choices</button> \
             <button type=\"submit\" name=\"side\" value=\"local\" id=\"resolve-local\">All local</button> \
             <button type=\"submit\" name=\"side\" value=\"remote\" id=\"resolve-remote\">All remote</button></p></form>",
        );
        body.push_str(&format!(
            "<form method=\"post\" action=\"/review/conflicts/{}/dismiss\" class=\"inline\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\" id=\"dismiss\">Dismiss (send nothing back)</button></form>",
            c.id,
            escape_html(csrf)
        ));
    } else {
        body.push_str("</form>");
        if let Some(values) = &c.resolution {
            body.push_str(&format!(
                "<p id=\"resolution\">Decided by {}: <code>{}</code></p>",
                escape_html(c.resolved_by.as_deref().unwrap_or("")),
                escape_html(&values.to_string())
            ));
        }
    }
    body
}

/// The administrator behind a posted form, if logged in (`None`: to the login page); a form
/// without the session's CSRF token is refused.
fn posted(
    admin: Result<AdminPage, ApiError>,
    form: &BTreeMap<String, String>,
) -> Result<Option<AdminPage>, ApiError> {
    let Ok(admin) = admin else { return Ok(None) };
    if !admin.csrf_ok(form.get("csrf").map(String::as_str)) {
        return Err(csrf_refused());
    }
    Ok(Some(admin))
}

fn csrf_refused() -> ApiError {
    ApiError::Rejected {
        detail: "the form's CSRF token is missing or wrong: reload the page".into(),
        extra: serde_json::json!({"field": "csrf"}),
    }
}

/// Resolves one conflict from its page.
#[post("/review/conflicts/{id}/resolve")]
pub async fn resolve(
    admin: Result<AdminPage, ApiError>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    form: web::Form<BTreeMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let Some(_) = posted(admin, &form)? else { return Ok(login_redirect()) };
    let choice = Choice {
        side: form.get("side").cloned(),
        fields: form
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("field.").map(|f| (f.to_owned(), v.clone())))
            .filter(|_| !form.contains_key("side"))
            .collect(),
    };
    let id = *id;
    let mut conn = state.db.get().await.map_err(database)?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let conflict = unresolved(conn, id).await?;
        apply_choice(conn, &conflict, &choice).await
    })
    .await?;
    Ok(see(&format!("/review/conflicts/{id}")))
}

/// Dismisses one conflict from its page.
#[post("/review/conflicts/{id}/dismiss")]
pub async fn dismiss(
    admin: Result<AdminPage, ApiError>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    form: web::Form<BTreeMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let Some(_) = posted(admin, &form)? else { return Ok(login_redirect()) };
    let id = *id;
    let mut conn = state.db.get().await.map_err(database)?;
    conn.transaction::<_, ApiError, _>(async |conn| {
        let conflict = unresolved(conn, id).await?;
        conflicts::dismiss(conn, &conflict).await.map_err(database)
    })
    .await?;
    Ok(see(&format!("/review/conflicts/{id}")))
}

/// Resolves every unresolved conflict of a filter with one side: first the count, then (with
/// `confirm`) the resolutions.
#[post("/review/bulk")]
pub async fn bulk(
    admin: Result<AdminPage, ApiError>,
    state: web::Data<AppState>,
    form: web::Form<BTreeMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let Some(admin) = posted(admin, &form)? else { return Ok(login_redirect()) };
    let filter = cleaned(Filter {
        system: form.get("system").cloned(),
        entity: form.get("entity").cloned(),
        status: form.get("status").cloned(),
        older_than_minutes: form.get("older_than_minutes").and_then(|m| m.parse().ok()),
        limit: Some(1000),
    });
    let side = form.get("side").cloned().unwrap_or_default();
    if !matches!(side.as_str(), "local" | "remote") {
        return Err(ApiError::field("side", "must be local or remote"));
    }
    let confirm = form.get("confirm").is_some_and(|c| c == "yes");
    let outcome = crate::routes::resolve_many(&state, &filter, &side, confirm).await?;
    let body = if confirm {
        format!(
            "<h1>Resolved</h1><p id=\"bulk-result\">{} conflicts resolved with the {} side.</p>\
             <p><a href=\"/review\">Back to the list</a></p>",
            outcome.count,
            escape_html(&side)
        )
    } else {
        format!(
            "<h1>Resolve many</h1><p id=\"bulk-count\">{count} unresolved conflicts match; each \
             would take the {side} side.</p>\
             <form method=\"post\" action=\"/review/bulk\">{filter}\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <input type=\"hidden\" name=\"side\" value=\"{side}\">\
             <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
             <button type=\"submit\" id=\"bulk-confirm\">Resolve these {count}</button></form>\
             <p><a href=\"/review\">Cancel</a></p>",
            count = outcome.count,
            side = escape_html(&side),
            filter = filter_query(&filter),
            csrf = escape_html(&admin.csrf),
        )
    };
    Ok(page("Resolve many", &body))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(login_form)
        .service(login)
        .service(list)
        .service(show)
        .service(resolve)
        .service(dismiss)
        .service(undo)
        .service(bulk);
}
