//! How users and groups look on the wire: rendering a stored row (`id`, `schemas`, members or
//! groups, `meta`), projecting `attributes` / `excludedAttributes`, and the checks and
//! normalisation a written resource goes through.

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    ScimError,
    filter::{self, ENTERPRISE, Kind},
    patch as scim_patch,
};
use crate::{
    AppState,
    store::{Member, Row},
};

pub(super) const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub(super) const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub(super) const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// Most resources one list page returns.
pub(super) const MAX_COUNT: i64 = 1000;

pub(super) fn kind_of(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::User => ("User", "Users"),
        Kind::Group => ("Group", "Groups"),
    }
}

/// A stored resource as SCIM shows it: `id`, `schemas`, members or groups, and `meta`.
pub(super) fn render(state: &AppState, kind: Kind, row: &Row, related: &[Member]) -> Value {
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
pub(super) fn project(resource: Value, attributes: Option<&str>, excluded: Option<&str>) -> Value {
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
pub(super) fn writable(kind: Kind, body: &Value) -> Result<Value, ScimError> {
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

pub(super) fn schemas_ok(kind: Kind, body: &Value) -> Result<(), ScimError> {
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

pub(super) fn members_of(body: &Value) -> Result<Option<Vec<Uuid>>, ScimError> {
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

/// A list of discovery resources as a ListResponse.
pub(super) fn list_of(resources: Vec<Value>) -> Value {
    json!({"schemas": [LIST_SCHEMA], "totalResults": resources.len(), "startIndex": 1,
        "itemsPerPage": resources.len(), "Resources": resources})
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
}
