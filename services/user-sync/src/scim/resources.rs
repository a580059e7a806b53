//! `/scim/v2/Users` and `/scim/v2/Groups`, and the discovery endpoints.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, delete, get, http::StatusCode, patch, post, put, web};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::representation::{
    LIST_SCHEMA, MAX_COUNT, kind_of, members_of, project, render, schemas_ok, writable,
};
use super::{
    ScimError, ScimSource,
    filter::{self, ENTERPRISE, Kind},
    patch as scim_patch, respond,
    sql::Compiler,
};
use crate::{
    AppState,
    store::{self, Member, Row},
};

fn parse_id(id: &str, kind: Kind) -> Result<Uuid, ScimError> {
    id.parse().map_err(|_| ScimError::not_found(format!("{} {id}", kind_of(kind).0)))
}

/// `If-Match`: the stored version must be the one the client read (`*` matches any).
fn if_match(given: Option<&str>, row: &Row) -> Result<(), ScimError> {
    let Some(given) = given else { return Ok(()) };
    let current = format!("W/\"{}\"", row.version);
    let ok = given.split(',').map(str::trim).any(|g| {
        g == "*" || g == current || g.trim_start_matches("W/") == current.trim_start_matches("W/")
    });
    if ok {
        Ok(())
    } else {
        Err(ScimError::new(412, None, format!("the resource's version is {current}, not {given}")))
    }
}

fn if_match_header(req: &HttpRequest) -> Option<String> {
    req.headers().get("if-match").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn connection(state: &AppState) -> Result<shared::db::PooledConn, ScimError> {
    state.db.get().await.map_err(|e| {
        tracing::error!(error = %e, "directory database");
        ScimError::new(503, None, "the directory database is unavailable")
    })
}

/// The list's query parameters.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "startIndex")]
    start_index: Option<String>,
    count: Option<String>,
    #[serde(rename = "sortBy")]
    sort_by: Option<String>,
    #[serde(rename = "sortOrder")]
    sort_order: Option<String>,
    attributes: Option<String>,
    #[serde(rename = "excludedAttributes")]
    excluded_attributes: Option<String>,
}

/// `POST .../.search`'s body (RFC 7644 §3.4.3): a list's parameters in JSON, so that filters,
/// which name people, stay out of URLs and access logs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchRequest {
    schemas: Vec<String>,
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    attributes: Option<Vec<String>>,
    excluded_attributes: Option<Vec<String>>,
}

const SEARCH_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

impl From<SearchRequest> for ListQuery {
    fn from(r: SearchRequest) -> Self {
        Self {
            filter: r.filter,
            start_index: r.start_index.map(|n| n.to_string()),
            count: r.count.map(|n| n.to_string()),
            sort_by: r.sort_by,
            sort_order: r.sort_order,
            attributes: r.attributes.map(|a| a.join(",")),
            excluded_attributes: r.excluded_attributes.map(|a| a.join(",")),
        }
    }
}

/// A list whose parameters come in a SearchRequest body.
async fn search(
    state: &AppState,
    kind: Kind,
    source: &str,
    body: &[u8],
) -> Result<HttpResponse, ScimError> {
    let request: SearchRequest = serde_json::from_value(body_json(body)?)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("not a SearchRequest: {e}")))?;
    if !request.schemas.iter().any(|s| s == SEARCH_REQUEST) {
        return Err(ScimError::bad("invalidSyntax", format!("schemas must hold {SEARCH_REQUEST}")));
    }
    list(state, kind, source, request.into()).await
}

fn number(name: &str, value: Option<&str>, default: i64) -> Result<i64, ScimError> {
    value.map_or(Ok(default), |v| {
        v.trim()
            .parse()
            .map_err(|_| ScimError::bad("invalidValue", format!("{name} must be a number")))
    })
}

fn order_by(sort_by: Option<&str>, descending: bool) -> Result<String, ScimError> {
    let direction = if descending { "DESC" } else { "ASC" };
    let Some(sort) = sort_by.filter(|s| !s.trim().is_empty()) else {
        return Ok(format!("r.created_at {direction}"));
    };
    let path = filter::attr_path(sort.trim())
        .map_err(|e| ScimError::bad("invalidValue", format!("sortBy: {}", e.0)))?;
    let name = filter::canonical(&path.name);
    Ok(match (name.as_str(), path.sub.as_deref().map(filter::canonical).as_deref()) {
        ("id", _) => format!("r.id {direction}"),
        ("meta", Some("created")) => format!("r.created_at {direction}"),
        ("meta", Some("lastModified")) => format!("r.updated_at {direction}"),
        ("userName", None) => format!("lower(r.user_name) {direction}"),
        (_, sub) => {
            let mut parts = vec![name.clone()];
            if path.urn.is_some() {
                parts.insert(0, ENTERPRISE.into());
            }
            if let Some(s) = sub {
                parts.push(s.to_owned());
            }
            let literal = parts
                .iter()
                .map(|p| p.replace(['\'', '"', ',', '{', '}'], ""))
                .collect::<Vec<_>>()
                .join(",");
            format!("lower(r.resource #>> '{{{literal}}}') {direction} NULLS LAST")
        }
    })
}

async fn related(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    ids: &[Uuid],
) -> Result<BTreeMap<Uuid, Vec<Member>>, ScimError> {
    Ok(store::memberships(conn, kind, ids).await?)
}

async fn list(
    state: &AppState,
    kind: Kind,
    source: &str,
    query: ListQuery,
) -> Result<HttpResponse, ScimError> {
    let start = number("startIndex", query.start_index.as_deref(), 1)?.max(1);
    let count = number("count", query.count.as_deref(), 100)?.clamp(0, MAX_COUNT);
    let mut compiler = Compiler { kind, values: Vec::new(), param: "$1" };
    let condition = match query.filter.as_deref().filter(|f| !f.trim().is_empty()) {
        Some(text) => {
            let parsed = filter::parse(text).map_err(|e| ScimError::bad("invalidFilter", e.0))?;
            compiler.compile(&parsed).map_err(|e| ScimError::bad("invalidFilter", e.0))?
        }
        None => "true".into(),
    };
    let descending =
        query.sort_order.as_deref().is_some_and(|o| o.eq_ignore_ascii_case("descending"));
    let order = order_by(query.sort_by.as_deref(), descending)?;
    let mut conn = connection(state).await?;
    let (total, rows) = store::list(
        &mut conn,
        kind,
        source,
        &condition,
        Value::Array(compiler.values),
        &order,
        start - 1,
        count,
    )
    .await?;
    let excluded_members = kind == Kind::Group
        && query
            .excluded_attributes
            .as_deref()
            .is_some_and(|e| e.split(',').any(|a| a.trim().eq_ignore_ascii_case("members")));
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let links =
        if excluded_members { BTreeMap::new() } else { related(&mut conn, kind, &ids).await? };
    let resources: Vec<Value> = rows
        .iter()
        .map(|row| {
            let shown = render(state, kind, row, links.get(&row.id).map_or(&[][..], Vec::as_slice));
            project(shown, query.attributes.as_deref(), query.excluded_attributes.as_deref())
        })
        .collect();
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": resources.len(),
        "Resources": resources,
    });
    Ok(respond(StatusCode::OK, &body))
}

async fn show(
    state: &AppState,
    kind: Kind,
    source: &str,
    id: &str,
    query: &ListQuery,
) -> Result<HttpResponse, ScimError> {
    let id = parse_id(id, kind)?;
    let mut conn = connection(state).await?;
    let row = store::get(&mut conn, kind, source, id, false)
        .await?
        .ok_or_else(|| ScimError::not_found(format!("{} {id}", kind_of(kind).0)))?;
    let links = related(&mut conn, kind, &[id]).await?;
    let shown = render(state, kind, &row, links.get(&id).map_or(&[][..], Vec::as_slice));
    Ok(respond(
        StatusCode::OK,
        &project(shown, query.attributes.as_deref(), query.excluded_attributes.as_deref()),
    ))
}

fn body_json(body: &[u8]) -> Result<Value, ScimError> {
    serde_json::from_slice(body)
        .map_err(|e| ScimError::bad("invalidSyntax", format!("the body is not JSON: {e}")))
}

/// Writes a group's members; unknown users are a 400 naming them.
async fn write_members(
    conn: &mut AsyncPgConnection,
    group: Uuid,
    source: &str,
    members: &[Uuid],
) -> Result<(), ScimError> {
    let unknown = store::set_members(conn, group, source, members, "scim").await?;
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(ScimError::bad("invalidValue", format!("members: no users {unknown:?} of this source")))
    }
}

async fn create(
    state: &AppState,
    kind: Kind,
    source: &str,
    body: &[u8],
) -> Result<HttpResponse, ScimError> {
    let body = body_json(body)?;
    schemas_ok(kind, &body)?;
    let resource = writable(kind, &body)?;
    let members = if kind == Kind::Group { members_of(&body)? } else { None };
    let mut conn = connection(state).await?;
    let (row, links) = conn
        .transaction::<_, ScimError, _>(async |conn| {
            let row = store::insert(conn, kind, source, &resource, None).await?;
            if let Some(members) = &members {
                write_members(conn, row.id, source, members).await?;
            }
            let links = related(conn, kind, &[row.id]).await?.remove(&row.id).unwrap_or_default();
            match kind {
                Kind::User => store::user_changed(conn, &row, "created").await?,
                Kind::Group => store::group_changed(conn, &row, links.len(), "created").await?,
            }
            Ok((row, links))
        })
        .await?;
    tracing::info!(source, kind = kind_of(kind).0, id = %row.id, "SCIM resource created");
    Ok(respond(StatusCode::CREATED, &render(state, kind, &row, &links)))
}

/// Replaces (PUT) or patches (PATCH) a resource, in one transaction holding its row lock.
async fn change(
    state: &AppState,
    req: &HttpRequest,
    kind: Kind,
    source: &str,
    id: &str,
    body: &[u8],
    is_patch: bool,
) -> Result<HttpResponse, ScimError> {
    let id = parse_id(id, kind)?;
    let body = body_json(body)?;
    let expected = if_match_header(req);
    let mut conn = connection(state).await?;
    let (row, links) = conn
        .transaction::<_, ScimError, _>(async |conn| {
            let current = store::get(conn, kind, source, id, true)
                .await?
                .ok_or_else(|| ScimError::not_found(format!("{} {id}", kind_of(kind).0)))?;
            if_match(expected.as_deref(), &current)?;
            let before = related(conn, kind, &[id]).await?.remove(&id).unwrap_or_default();
            let (next, members) = if is_patch {
                // The resource as the client sees it (members included), patched.
                let mut seen = current.resource.clone();
                if kind == Kind::Group {
                    seen["members"] = Value::Array(
                        before
                            .iter()
                            .map(|m| json!({"value": m.id.to_string(), "display": m.name}))
                            .collect(),
                    );
                }
                let patched = scim_patch::apply(&seen, &body)?;
                let members = if kind == Kind::Group {
                    members_of(&patched)?.or(Some(Vec::new()))
                } else {
                    None
                };
                (writable(kind, &patched)?, members)
            } else {
                schemas_ok(kind, &body)?;
                let members = if kind == Kind::Group {
                    members_of(&body)?.or(Some(Vec::new()))
                } else {
                    None
                };
                (writable(kind, &body)?, members)
            };
            let row = store::replace(conn, kind, id, &next).await?;
            if let Some(members) = &members {
                write_members(conn, id, source, members).await?;
            }
            let links = related(conn, kind, &[id]).await?.remove(&id).unwrap_or_default();
            match kind {
                Kind::User => {
                    let was =
                        current.resource.get("active").and_then(Value::as_bool).unwrap_or(true);
                    let is = next.get("active").and_then(Value::as_bool).unwrap_or(true);
                    store::user_changed(
                        conn,
                        &row,
                        if was && !is { "deactivated" } else { "updated" },
                    )
                    .await?;
                }
                Kind::Group => store::group_changed(conn, &row, links.len(), "updated").await?,
            }
            Ok((row, links))
        })
        .await?;
    Ok(respond(StatusCode::OK, &render(state, kind, &row, &links)))
}

async fn remove(
    state: &AppState,
    req: &HttpRequest,
    kind: Kind,
    source: &str,
    id: &str,
) -> Result<HttpResponse, ScimError> {
    let id = parse_id(id, kind)?;
    let expected = if_match_header(req);
    let mut conn = connection(state).await?;
    conn.transaction::<_, ScimError, _>(async |conn| {
        let current = store::get(conn, kind, source, id, true)
            .await?
            .ok_or_else(|| ScimError::not_found(format!("{} {id}", kind_of(kind).0)))?;
        if_match(expected.as_deref(), &current)?;
        store::delete(conn, kind, id).await?;
        match kind {
            Kind::User => store::user_changed(conn, &current, "deleted").await?,
            Kind::Group => store::group_changed(conn, &current, 0, "deleted").await?,
        }
        Ok(())
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[get("/scim/v2/Users")]
async fn list_users(
    source: ScimSource,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ScimError> {
    list(&state, Kind::User, &source.0, query.into_inner()).await
}

#[get("/scim/v2/Groups")]
async fn list_groups(
    source: ScimSource,
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ScimError> {
    list(&state, Kind::Group, &source.0, query.into_inner()).await
}

#[post("/scim/v2/Users/.search")]
async fn search_users(
    source: ScimSource,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ScimError> {
    search(&state, Kind::User, &source.0, &body).await
}

#[post("/scim/v2/Groups/.search")]
async fn search_groups(
    source: ScimSource,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ScimError> {
    search(&state, Kind::Group, &source.0, &body).await
}

#[get("/scim/v2/Users/{id}")]
async fn get_user(
    source: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ScimError> {
    show(&state, Kind::User, &source.0, &id, &query).await
}

#[get("/scim/v2/Groups/{id}")]
async fn get_group(
    source: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ScimError> {
    show(&state, Kind::Group, &source.0, &id, &query).await
}

#[post("/scim/v2/Users")]
async fn create_user(
    source: ScimSource,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ScimError> {
    create(&state, Kind::User, &source.0, &body).await
}

#[post("/scim/v2/Groups")]
async fn create_group(
    source: ScimSource,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ScimError> {
    create(&state, Kind::Group, &source.0, &body).await
}

#[put("/scim/v2/Users/{id}")]
async fn put_user(
    req: HttpRequest,
    source: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ScimError> {
    change(&state, &req, Kind::User, &source.0, &id, &body, false).await
}

#[put("/scim/v2/Groups/{id}")]
async fn put_group(
    req: HttpRequest,
    source: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ScimError> {
    change(&state, &req, Kind::Group, &source.0, &id, &body, false).await
}

#[patch("/scim/v2/Users/{id}")]
async fn patch_user(
    req: HttpRequest,
    source: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ScimError> {
    change(&state, &req, Kind::User, &source.0, &id, &body, true).await
}

#[patch("/scim/v2/Groups/{id}")]
async fn patch_group(
    req: HttpRequest,
    source: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ScimError> {
    change(&state, &req, Kind::Group, &source.0, &id, &body, true).await
}

#[delete("/scim/v2/Users/{id}")]
async fn delete_user(
    req: HttpRequest,
    source: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    remove(&state, &req, Kind::User, &source.0, &id).await
}

#[delete("/scim/v2/Groups/{id}")]
async fn delete_group(
    req: HttpRequest,
    source: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    remove(&state, &req, Kind::Group, &source.0, &id).await
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_users)
        .service(search_users)
        .service(search_groups)
        .service(create_user)
        .service(get_user)
        .service(put_user)
        .service(patch_user)
        .service(delete_user)
        .service(list_groups)
        .service(create_group)
        .service(get_group)
        .service(put_group)
        .service(patch_group)
        .service(delete_group)
        .configure(super::discovery::configure);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_reads_canonical_paths_only() {
        assert_eq!(order_by(Some("userName"), false).unwrap(), "lower(r.user_name) ASC");
        assert_eq!(
            order_by(Some("name.familyName"), true).unwrap(),
            "lower(r.resource #>> '{name,familyName}') DESC NULLS LAST"
        );
        assert!(order_by(Some("name'); drop table x; --"), false).is_err());
    }
}
