//! `/scim/v2/Users` and `/scim/v2/Groups`, and the discovery endpoints.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, delete, get, http::StatusCode, patch, post, put, web};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    MEDIA_TYPE, ScimError, ScimSource,
    filter::{self, Compiler, ENTERPRISE, Kind},
    patch as scim_patch, respond,
};
use crate::{
    AppState,
    store::{self, Member, Row},
};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Most resources one list page returns.
const MAX_COUNT: i64 = 1000;

fn kind_of(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::User => ("User", "Users"),
        Kind::Group => ("Group", "Groups"),
    }
}

/// A stored resource as SCIM shows it: `id`, `schemas`, members or groups, and `meta`.
fn render(state: &AppState, kind: Kind, row: &Row, related: &[Member]) -> Value {
    let (resource_type, endpoint) = kind_of(kind);
    let mut out = Map::new();
    let mut schemas = vec![json!(if kind == Kind::User { USER_SCHEMA } else { GROUP_SCHEMA })];
    if row.resource.get(ENTERPRISE).is_some_and(|e| e.as_object().is_some_and(|o| !o.is_empty())) {
        schemas.push(json!(ENTERPRISE));
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), json!(row.id.to_string()));
    if let Some(r) = row.resource.as_object() {
        for (k, v) in r {
            if !matches!(k.as_str(), "schemas" | "id" | "meta" | "members" | "groups") {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let base = &state.scim_base_url;
    let links: Vec<Value> = related
        .iter()
        .map(|m| {
            let (_, other) = kind_of(if kind == Kind::User { Kind::Group } else { Kind::User });
            json!({"value": m.id.to_string(), "display": m.name, "$ref": format!("{base}/{other}/{}", m.id)})
        })
        .collect();
    match kind {
        Kind::Group => {
            out.insert("members".into(), Value::Array(links));
        }
        Kind::User if !links.is_empty() => {
            out.insert("groups".into(), Value::Array(links));
        }
        Kind::User => {}
    }
    out.insert(
        "meta".into(),
        json!({
            "resourceType": resource_type,
            "created": row.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "lastModified": row.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "version": format!("W/\"{}\"", row.version),
            "location": format!("{base}/{endpoint}/{}", row.id),
        }),
    );
    Value::Object(out)
}

/// `attributes` / `excludedAttributes` (comma separated; `name.givenName` and extension-qualified
/// names allowed). `id` and `schemas` are always returned.
fn project(resource: Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
    let split = |s: &str| -> Vec<(bool, String, Option<String>)> {
        s.split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .filter_map(|a| {
                let ext = a.to_ascii_lowercase().starts_with(&ENTERPRISE.to_ascii_lowercase());
                let rest = if ext { a.get(ENTERPRISE.len() + 1..)? } else { a };
                let rest = rest.rsplit_once(':').map_or(rest, |(_, r)| r);
                let (name, sub) = match rest.split_once('.') {
                    Some((n, s)) => (filter::canonical(n), Some(filter::canonical(s))),
                    None => (filter::canonical(rest), None),
                };
                Some((ext, name, sub))
            })
            .collect()
    };
    let Value::Object(mut map) = resource else { return resource };
    if let Some(wanted) = attributes.filter(|a| !a.trim().is_empty()) {
        let wanted = split(wanted);
        let mut out = Map::new();
        for key in ["schemas", "id"] {
            if let Some(v) = map.remove(key) {
                out.insert(key.into(), v);
            }
        }
        for (ext, name, sub) in wanted {
            let from = if ext {
                map.get(ENTERPRISE).and_then(Value::as_object).cloned()
            } else {
                Some(map.clone())
            };
            let Some(v) = from.and_then(|f| f.get(&name).cloned()) else { continue };
            let v = match (&sub, v) {
                (Some(s), Value::Object(o)) => {
                    o.get(s).map(|x| json!({s.clone(): x.clone()})).unwrap_or(Value::Null)
                }
                (Some(s), Value::Array(items)) => Value::Array(
                    items
                        .iter()
                        .filter_map(|i| i.get(s).map(|x| json!({s.clone(): x.clone()})))
                        .collect(),
                ),
                (_, v) => v,
            };
            if v.is_null() {
                continue;
            }
            if ext {
                let e = out.entry(ENTERPRISE).or_insert_with(|| json!({}));
                if let Some(e) = e.as_object_mut() {
                    e.insert(name, v);
                }
            } else {
                out.insert(name, v);
            }
        }
        return Value::Object(out);
    }
    if let Some(excluded) = excluded {
        for (ext, name, sub) in split(excluded) {
            if matches!(name.as_str(), "id" | "schemas") {
                continue;
            }
            let holder = if ext {
                map.get_mut(ENTERPRISE).and_then(Value::as_object_mut)
            } else {
                Some(&mut map)
            };
            let Some(holder) = holder else { continue };
            match sub {
                Some(s) => {
                    if let Some(Value::Object(o)) = holder.get_mut(&name) {
                        o.remove(&s);
                    }
                }
                None => {
                    holder.remove(&name);
                }
            }
        }
    }
    Value::Object(map)
}

/// A written resource as stored: canonical names, booleans, no read-only attributes. Refuses
/// what RFC 7643 requires and is missing.
fn writable(kind: Kind, body: &Value) -> Result<Value, ScimError> {
    let Value::Object(_) = body else {
        return Err(ScimError::bad("invalidSyntax", "the body must be a JSON object"));
    };
    let mut v = body.clone();
    scim_patch::normalize(&mut v);
    scim_patch::canonical_keys(&mut v);
    let map = v.as_object_mut().unwrap_or_else(|| unreachable!("an object above"));
    // Read-only attributes, and the password: the directory keeps no credentials (RFC 7643's
    // password is write-only; the identity provider authenticates).
    for key in ["id", "meta", "schemas", "groups", "password"] {
        map.remove(key);
    }
    if kind == Kind::Group {
        // Members are kept as memberships.
        map.remove("members");
    }
    let (required, what) = match kind {
        Kind::User => ("userName", "userName"),
        Kind::Group => ("displayName", "displayName"),
    };
    match map.get(required) {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => {
            return Err(ScimError::bad(
                "invalidValue",
                format!("{what} is required and must be a non-empty string"),
            ));
        }
    }
    if let Some(active) = map.get("active")
        && !active.is_boolean()
    {
        return Err(ScimError::bad("invalidValue", "active must be a boolean"));
    }
    for multi in ["emails", "phoneNumbers", "addresses"] {
        if map.get(multi).is_some_and(|v| !v.is_array() && !v.is_null()) {
            return Err(ScimError::bad("invalidValue", format!("{multi} must be a list")));
        }
    }
    Ok(v)
}

fn schemas_ok(kind: Kind, body: &Value) -> Result<(), ScimError> {
    let expected = if kind == Kind::User { USER_SCHEMA } else { GROUP_SCHEMA };
    let ok = body["schemas"].as_array().is_some_and(|s| {
        s.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(expected)))
    });
    if ok {
        Ok(())
    } else {
        Err(ScimError::bad("invalidSyntax", format!("schemas must name {expected}")))
    }
}

fn members_of(body: &Value) -> Result<Option<Vec<Uuid>>, ScimError> {
    let Some(members) = body.get("members") else { return Ok(None) };
    let Value::Array(items) = members else {
        return Err(ScimError::bad("invalidValue", "members must be a list"));
    };
    items
        .iter()
        .map(|m| {
            m.get("value").and_then(Value::as_str).and_then(|v| v.parse::<Uuid>().ok()).ok_or_else(
                || ScimError::bad("invalidValue", format!("members: {m} has no user id as value")),
            )
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

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

fn discovery(body: Value) -> HttpResponse {
    HttpResponse::Ok().content_type(MEDIA_TYPE).body(body.to_string())
}

#[get("/scim/v2/ServiceProviderConfig")]
async fn service_provider_config(_: ScimSource, state: web::Data<AppState>) -> HttpResponse {
    discovery(json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "documentationUri": "https://github.com/datasync/datasync#user-sync",
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_COUNT},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [{"type": "oauthbearertoken", "name": "Bearer token",
            "description": "A bearer token per source (SCIM_TOKENS)", "primary": true}],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{}/ServiceProviderConfig", state.scim_base_url)},
    }))
}

fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "User", "name": "User",
            "endpoint": "/Users", "description": "User Account", "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")}}),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "Group", "name": "Group",
            "endpoint": "/Groups", "description": "Group", "schema": GROUP_SCHEMA,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")}}),
    ]
}

fn list_of(resources: Vec<Value>) -> Value {
    json!({"schemas": [LIST_SCHEMA], "totalResults": resources.len(), "startIndex": 1,
        "itemsPerPage": resources.len(), "Resources": resources})
}

#[get("/scim/v2/ResourceTypes")]
async fn list_resource_types(_: ScimSource, state: web::Data<AppState>) -> HttpResponse {
    discovery(list_of(resource_types(&state.scim_base_url)))
}

#[get("/scim/v2/ResourceTypes/{name}")]
async fn get_resource_type(
    _: ScimSource,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    resource_types(&state.scim_base_url)
        .into_iter()
        .find(|t| t["id"] == name.as_str())
        .map(discovery)
        .ok_or_else(|| ScimError::not_found(format!("resource type {name}")))
}

fn attribute(name: &str, kind: &str, multi: bool, extra: Value) -> Value {
    let mut a = json!({"name": name, "type": kind, "multiValued": multi, "required": false,
        "caseExact": false, "mutability": "readWrite", "returned": "default", "uniqueness": "none"});
    if let (Some(a), Value::Object(extra)) = (a.as_object_mut(), extra) {
        a.extend(extra);
    }
    a
}

fn multi_complex(name: &str) -> Value {
    attribute(
        name,
        "complex",
        true,
        json!({"subAttributes": [
        attribute("value", "string", false, json!({})), attribute("display", "string", false, json!({})),
        attribute("type", "string", false, json!({})), attribute("primary", "boolean", false, json!({}))]}),
    )
}

fn schemas(base: &str) -> Vec<Value> {
    let name_parts: Vec<Value> = [
        "formatted",
        "familyName",
        "givenName",
        "middleName",
        "honorificPrefix",
        "honorificSuffix",
    ]
    .iter()
    .map(|n| attribute(n, "string", false, json!({})))
    .collect();
    let schema = |id: &str, name: &str, attributes: Vec<Value>| {
        json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Schema"], "id": id, "name": name,
        "attributes": attributes, "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")}})
    };
    vec![
        schema(
            USER_SCHEMA,
            "User",
            vec![
                attribute(
                    "userName",
                    "string",
                    false,
                    json!({"required": true, "uniqueness": "server"}),
                ),
                attribute("name", "complex", false, json!({"subAttributes": name_parts})),
                attribute("displayName", "string", false, json!({})),
                attribute("title", "string", false, json!({})),
                attribute("userType", "string", false, json!({})),
                attribute("preferredLanguage", "string", false, json!({})),
                attribute("locale", "string", false, json!({})),
                attribute("timezone", "string", false, json!({})),
                attribute("active", "boolean", false, json!({})),
                attribute("externalId", "string", false, json!({"caseExact": true})),
                multi_complex("emails"),
                multi_complex("phoneNumbers"),
                multi_complex("addresses"),
                attribute("groups", "complex", true, json!({"mutability": "readOnly"})),
            ],
        ),
        schema(
            GROUP_SCHEMA,
            "Group",
            vec![
                attribute("displayName", "string", false, json!({"required": true})),
                attribute("externalId", "string", false, json!({"caseExact": true})),
                attribute(
                    "members",
                    "complex",
                    true,
                    json!({"subAttributes": [
                attribute("value", "string", false, json!({"mutability": "immutable"})),
                attribute("display", "string", false, json!({"mutability": "readOnly"})),
                attribute("$ref", "reference", false, json!({"mutability": "immutable"}))]}),
                ),
            ],
        ),
        schema(
            ENTERPRISE,
            "EnterpriseUser",
            vec![
                attribute("employeeNumber", "string", false, json!({})),
                attribute("costCenter", "string", false, json!({})),
                attribute("organization", "string", false, json!({})),
                attribute("division", "string", false, json!({})),
                attribute("department", "string", false, json!({})),
                attribute(
                    "manager",
                    "complex",
                    false,
                    json!({"subAttributes": [
                attribute("value", "string", false, json!({})), attribute("displayName", "string", false, json!({"mutability": "readOnly"}))]}),
                ),
            ],
        ),
    ]
}

#[get("/scim/v2/Schemas")]
async fn list_schemas(_: ScimSource, state: web::Data<AppState>) -> HttpResponse {
    discovery(list_of(schemas(&state.scim_base_url)))
}

#[get("/scim/v2/Schemas/{id}")]
async fn get_schema(
    _: ScimSource,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ScimError> {
    schemas(&state.scim_base_url)
        .into_iter()
        .find(|s| s["id"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&id)))
        .map(discovery)
        .ok_or_else(|| ScimError::not_found(format!("schema {id}")))
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_users)
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
        .service(service_provider_config)
        .service(list_resource_types)
        .service(get_resource_type)
        .service(list_schemas)
        .service(get_schema);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_keeps_id_and_schemas_and_drops_excluded_members() {
        let r = json!({"schemas": ["s"], "id": "1", "userName": "ann", "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "a@x", "type": "work"}], ENTERPRISE: {"employeeNumber": "7", "department": "R&D"}});
        let p = project(
            r.clone(),
            Some(
                "userName,name.givenName,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            ),
            None,
        );
        assert_eq!(
            p,
            json!({"schemas": ["s"], "id": "1", "userName": "ann", "name": {"givenName": "Ann"}, ENTERPRISE: {"employeeNumber": "7"}})
        );
        let p = project(r, None, Some("emails,name.familyName,id"));
        assert!(
            p.get("emails").is_none() && p["name"] == json!({"givenName": "Ann"}) && p["id"] == "1"
        );
        let g = project(
            json!({"id": "g", "displayName": "Eng", "members": [{"value": "1"}]}),
            None,
            Some("members"),
        );
        assert!(g.get("members").is_none());
    }

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
