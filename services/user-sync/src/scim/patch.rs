//! SCIM PATCH (RFC 7644 §3.5.2) applied to a resource held as JSON, and the normalisation every
//! written resource goes through.
//!
//! - `op` is `add`, `replace` or `remove` in any case (Entra sends `Add`, `Replace`, `Remove`).
//! - `add` / `replace` without a path take an object of attributes, whose keys may be
//!   extension-qualified (`urn:...:enterprise:2.0:User:employeeNumber`) or an extension object.
//! - Paths: `attr`, `attr.sub`, `urn:...:attr`, `attr[filter]`, `attr[filter].sub`.
//! - `add` appends to multi-valued attributes (a value already there is not added twice) and
//!   sets single-valued ones; `replace` sets them (through a value filter: the matched values);
//!   `remove` takes the attribute, the matched values, or, with a `value` list (Entra's member
//!   removal: `path: "members"`, `value: [{"value": id}]`), exactly those values and no others.
//! - Booleans sent as strings (`"active": "False"`, Entra's) are booleans.

use serde_json::{Map, Value};

use super::filter::{self, AttrPath, ENTERPRISE, Filter};

/// Why a PATCH cannot be applied: the SCIM `scimType` and the detail.
#[derive(Debug, PartialEq, Eq)]
pub struct PatchError {
    pub scim_type: &'static str,
    pub detail: String,
}

fn invalid(scim_type: &'static str, detail: impl Into<String>) -> PatchError {
    PatchError { scim_type, detail: detail.into() }
}

/// Multi-valued attributes of users and groups.
const MULTI: &[&str] = &[
    "emails",
    "phoneNumbers",
    "ims",
    "photos",
    "addresses",
    "groups",
    "entitlements",
    "roles",
    "x509Certificates",
    "members",
];

fn is_multi(name: &str) -> bool {
    MULTI.contains(&name)
}

/// Booleans sent as strings, recursively for `active` and `primary`.
pub fn normalize(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if matches!(key.as_str(), "active" | "primary")
                    && let Value::String(s) = v
                {
                    if s.eq_ignore_ascii_case("true") {
                        *v = Value::Bool(true);
                    } else if s.eq_ignore_ascii_case("false") {
                        *v = Value::Bool(false);
                    }
                }
                normalize(v);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize),
        _ => {}
    }
}

/// Canonical attribute names at the top level and in the enterprise extension (clients send
/// `userName` as `username`, say: attribute names are case-insensitive).
pub fn canonical_keys(resource: &mut Value) {
    let Some(map) = resource.as_object_mut() else { return };
    let entries: Vec<(String, Value)> = std::mem::take(map).into_iter().collect();
    for (key, mut v) in entries {
        if key.eq_ignore_ascii_case(ENTERPRISE) {
            canonical_keys(&mut v);
            map.insert(ENTERPRISE.into(), v);
        } else if key.to_ascii_lowercase().starts_with("urn:") || key == "schemas" {
            map.insert(key, v);
        } else {
            map.insert(filter::canonical(&key), v);
        }
    }
}

struct Target {
    /// The object holding the attribute: the resource, or its enterprise extension.
    extension: bool,
    name: String,
    filter: Option<Filter>,
    sub: Option<String>,
}

fn target(path: &str) -> Result<Target, PatchError> {
    let bad = |e: filter::FilterError| invalid("invalidPath", e.0);
    let (head, filter, tail) = match path.find('[') {
        Some(open) => {
            let close = path
                .rfind(']')
                .ok_or_else(|| invalid("invalidPath", format!("{path:?}: `[` not closed")))?;
            let inner = filter::parse(&path[open + 1..close]).map_err(bad)?;
            (&path[..open], Some(inner), path[close + 1..].strip_prefix('.'))
        }
        None => (path, None, None),
    };
    let AttrPath { urn, name, sub } = filter::attr_path(head).map_err(bad)?;
    let extension = match urn.as_deref() {
        None => false,
        Some(u) if u.eq_ignore_ascii_case(ENTERPRISE) => true,
        Some(u) if u.starts_with("urn:ietf:params:scim:schemas:core:2.0:") => false,
        Some(u) => return Err(invalid("invalidPath", format!("unknown schema {u}"))),
    };
    let sub = match (sub.as_deref(), tail) {
        (Some(s), None) | (None, Some(s)) => Some(filter::canonical(s)),
        (None, None) => None,
        (Some(_), Some(_)) => return Err(invalid("invalidPath", format!("bad path {path:?}"))),
    };
    Ok(Target { extension, name: filter::canonical(&name), filter, sub })
}

fn holder(resource: &mut Map<String, Value>, extension: bool) -> &mut Map<String, Value> {
    if !extension {
        return resource;
    }
    let ext = resource.entry(ENTERPRISE).or_insert_with(|| Value::Object(Map::new()));
    if !ext.is_object() {
        *ext = Value::Object(Map::new());
    }
    ext.as_object_mut().unwrap_or_else(|| unreachable!("made an object above"))
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a.get("value"), b.get("value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn add_values(list: &mut Vec<Value>, values: Value) {
    let values = match values {
        Value::Array(v) => v,
        one => vec![one],
    };
    for v in values {
        if !list.iter().any(|have| same_value(have, &v)) {
            list.push(v);
        }
    }
}

/// Sets attributes from an object of them (an `add` / `replace` without a path).
fn set_all(resource: &mut Map<String, Value>, value: Value, add: bool) -> Result<(), PatchError> {
    let Value::Object(attrs) = value else {
        return Err(invalid(
            "invalidValue",
            "an operation without a path needs an object of attributes",
        ));
    };
    for (key, v) in attrs {
        if key.eq_ignore_ascii_case(ENTERPRISE) {
            let Value::Object(ext) = v else {
                return Err(invalid("invalidValue", format!("{key} must be an object")));
            };
            for (k, v) in ext {
                apply_one(
                    resource,
                    Target {
                        extension: true,
                        name: filter::canonical(&k),
                        filter: None,
                        sub: None,
                    },
                    Some(v),
                    if add { Kind::Add } else { Kind::Replace },
                )?;
            }
        } else {
            let t = target(&key)?;
            apply_one(resource, t, Some(v), if add { Kind::Add } else { Kind::Replace })?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Replace,
    Remove,
}

fn apply_one(
    resource: &mut Map<String, Value>,
    t: Target,
    value: Option<Value>,
    kind: Kind,
) -> Result<(), PatchError> {
    let holder = holder(resource, t.extension);
    let multi = is_multi(&t.name);
    match (&t.filter, kind) {
        (Some(f), _) => {
            let Some(Value::Array(list)) = holder.get_mut(&t.name) else {
                return Err(invalid("noTarget", format!("{} has no values", t.name)));
            };
            let before = list.len();
            let matched: Vec<usize> =
                (0..list.len()).filter(|i| filter::matches(f, &list[*i])).collect();
            if matched.is_empty() && kind != Kind::Remove {
                return Err(invalid(
                    "noTarget",
                    format!("no value of {} matches the filter", t.name),
                ));
            }
            match kind {
                Kind::Remove => match &t.sub {
                    Some(sub) => matched.iter().for_each(|i| {
                        if let Some(o) = list[*i].as_object_mut() {
                            o.remove(sub);
                        }
                    }),
                    None => {
                        let mut i = 0;
                        list.retain(|_| {
                            let keep = !matched.contains(&i);
                            i += 1;
                            keep
                        });
                    }
                },
                Kind::Add | Kind::Replace => {
                    let value =
                        value.ok_or_else(|| invalid("invalidValue", "a value is required"))?;
                    for i in matched {
                        match (&t.sub, list[i].as_object_mut(), &value) {
                            (Some(sub), Some(o), v) => {
                                o.insert(sub.clone(), v.clone());
                            }
                            (None, Some(o), Value::Object(v)) => o.extend(v.clone()),
                            (None, _, v) => list[i] = v.clone(),
                            (Some(_), None, _) => {
                                return Err(invalid(
                                    "invalidPath",
                                    "the matched value has no sub-attributes",
                                ));
                            }
                        }
                    }
                }
            }
            let _ = before;
        }
        (None, Kind::Remove) => match (value, &t.sub) {
            // Exactly the listed values (Entra removes one member this way).
            (Some(values), None) if multi => {
                let values = match values {
                    Value::Array(v) => v,
                    one => vec![one],
                };
                if let Some(Value::Array(list)) = holder.get_mut(&t.name) {
                    list.retain(|have| !values.iter().any(|v| same_value(have, v)));
                }
            }
            (_, Some(sub)) => match holder.get_mut(&t.name) {
                Some(Value::Array(list)) => {
                    list.iter_mut().filter_map(Value::as_object_mut).for_each(|o| {
                        o.remove(sub);
                    })
                }
                Some(Value::Object(o)) => {
                    o.remove(sub);
                }
                _ => {}
            },
            (_, None) => {
                holder.remove(&t.name);
            }
        },
        (None, kind) => {
            let value = value
                .ok_or_else(|| invalid("invalidValue", format!("{} needs a value", t.name)))?;
            match (&t.sub, multi) {
                (Some(sub), false) => {
                    let entry =
                        holder.entry(t.name.clone()).or_insert_with(|| Value::Object(Map::new()));
                    let Some(o) = entry.as_object_mut() else {
                        return Err(invalid(
                            "invalidPath",
                            format!("{} has no sub-attributes", t.name),
                        ));
                    };
                    o.insert(sub.clone(), value);
                }
                (Some(sub), true) => {
                    // `emails.value`: every value's sub-attribute.
                    if let Some(Value::Array(list)) = holder.get_mut(&t.name) {
                        list.iter_mut().filter_map(Value::as_object_mut).for_each(|o| {
                            o.insert(sub.clone(), value.clone());
                        });
                    }
                }
                (None, true) if kind == Kind::Add => {
                    let entry =
                        holder.entry(t.name.clone()).or_insert_with(|| Value::Array(vec![]));
                    if !entry.is_array() {
                        *entry = Value::Array(vec![]);
                    }
                    if let Value::Array(list) = entry {
                        add_values(list, value);
                    }
                }
                (None, true) => {
                    holder.insert(
                        t.name.clone(),
                        match value {
                            Value::Array(v) => Value::Array(v),
                            one => Value::Array(vec![one]),
                        },
                    );
                }
                (None, false) => match (holder.get_mut(&t.name), value) {
                    // A complex attribute's sub-attributes merge (`name`, `manager`).
                    (Some(Value::Object(have)), Value::Object(new)) if kind == Kind::Add => {
                        have.extend(new)
                    }
                    (_, v) => {
                        holder.insert(t.name.clone(), v);
                    }
                },
            }
        }
    }
    Ok(())
}

/// Applies a PATCH request's operations (`Operations`) to `resource`, in order, all or none.
pub fn apply(resource: &Value, request: &Value) -> Result<Value, PatchError> {
    let schemas_ok = request["schemas"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s == "urn:ietf:params:scim:api:messages:2.0:PatchOp"));
    if !schemas_ok {
        return Err(invalid(
            "invalidSyntax",
            "schemas must name urn:ietf:params:scim:api:messages:2.0:PatchOp",
        ));
    }
    let operations = request
        .get("Operations")
        .or_else(|| request.get("operations"))
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("invalidSyntax", "Operations must be a list"))?;
    let mut out = resource.as_object().cloned().unwrap_or_default();
    for (i, operation) in operations.iter().enumerate() {
        let op = operation["op"].as_str().unwrap_or_default().to_ascii_lowercase();
        let path = operation.get("path").and_then(Value::as_str).filter(|p| !p.trim().is_empty());
        let mut value = operation.get("value").cloned();
        if let Some(v) = value.as_mut() {
            normalize(v);
        }
        let kind = match op.as_str() {
            "add" => Kind::Add,
            "replace" => Kind::Replace,
            "remove" => Kind::Remove,
            other => {
                return Err(invalid(
                    "invalidSyntax",
                    format!("Operations[{i}].op {other:?} is not add, replace or remove"),
                ));
            }
        };
        match (kind, path) {
            (Kind::Remove, None) => {
                return Err(invalid("noTarget", format!("Operations[{i}]: remove needs a path")));
            }
            (_, None) => set_all(&mut out, value.unwrap_or(Value::Null), kind == Kind::Add)?,
            (_, Some(path)) => {
                let t = target(path)?;
                if matches!(t.name.as_str(), "id" | "meta" | "schemas") {
                    return Err(invalid("mutability", format!("{} cannot be changed", t.name)));
                }
                apply_one(&mut out, t, value, kind)?;
            }
        }
    }
    let mut out = Value::Object(out);
    normalize(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patch(ops: Value) -> Value {
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
    }

    fn user() -> Value {
        json!({"userName": "ann", "active": true, "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "ann@work.example", "type": "work", "primary": true},
                       {"value": "ann@home.example", "type": "home"}]})
    }

    #[test]
    fn okta_deactivates_with_replace_and_entra_with_a_capitalised_string_boolean() {
        let okta =
            apply(&user(), &patch(json!([{"op": "replace", "value": {"active": false}}]))).unwrap();
        assert_eq!(okta["active"], false);
        let entra =
            apply(&user(), &patch(json!([{"op": "Replace", "path": "active", "value": "False"}])))
                .unwrap();
        assert_eq!(entra["active"], false);
    }

    #[test]
    fn paths_with_value_filters_and_sub_attributes() {
        let u = apply(&user(), &patch(json!([
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "ann@new.example"},
            {"op": "remove", "path": "emails[type eq \"home\"]"},
            {"op": "add", "path": "name.middleName", "value": "Q"},
            {"op": "add", "path": "phoneNumbers", "value": [{"value": "555", "type": "work"}]}
        ]))).unwrap();
        assert_eq!(
            u["emails"],
            json!([{"value": "ann@new.example", "type": "work", "primary": true}])
        );
        assert_eq!(u["name"]["middleName"], "Q");
        assert_eq!(u["phoneNumbers"][0]["value"], "555");
        let none = apply(
            &user(),
            &patch(
                json!([{"op": "replace", "path": "emails[type eq \"other\"].value", "value": "x"}]),
            ),
        );
        assert_eq!(none.unwrap_err().scim_type, "noTarget");
    }

    #[test]
    fn entra_adds_without_a_path_with_the_extension_urn() {
        let u = apply(&user(), &patch(json!([{"op": "Add", "value": {
            "title": "Engineer",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": {"value": "42"}
        }}]))).unwrap();
        assert_eq!(u["title"], "Engineer");
        assert_eq!(u[ENTERPRISE]["department"], "R&D");
        assert_eq!(u[ENTERPRISE]["manager"]["value"], "42");
    }

    #[test]
    fn removing_a_listed_member_removes_that_member_only() {
        let group = json!({"displayName": "Eng", "members": [{"value": "a"}, {"value": "b"}, {"value": "c"}]});
        let g = apply(
            &group,
            &patch(json!([{"op": "Remove", "path": "members", "value": [{"value": "b"}]}])),
        )
        .unwrap();
        assert_eq!(g["members"], json!([{"value": "a"}, {"value": "c"}]));
        let g = apply(&group, &patch(json!([{"op": "remove", "path": "members[value eq \"a\"]"}])))
            .unwrap();
        assert_eq!(g["members"], json!([{"value": "b"}, {"value": "c"}]));
        let g = apply(&group, &patch(json!([{"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "d"}]}]))).unwrap();
        assert_eq!(g["members"].as_array().unwrap().len(), 4, "a is not added twice");
        let g = apply(
            &group,
            &patch(json!([{"op": "replace", "path": "displayName", "value": "Engineering"}])),
        )
        .unwrap();
        assert_eq!(g["displayName"], "Engineering");
    }

    #[test]
    fn refuses_what_it_cannot_apply_naming_the_scim_type() {
        assert_eq!(
            apply(&user(), &json!({"Operations": []})).unwrap_err().scim_type,
            "invalidSyntax"
        );
        assert_eq!(
            apply(&user(), &patch(json!([{"op": "move", "path": "x"}]))).unwrap_err().scim_type,
            "invalidSyntax"
        );
        assert_eq!(
            apply(&user(), &patch(json!([{"op": "remove"}]))).unwrap_err().scim_type,
            "noTarget"
        );
        assert_eq!(
            apply(&user(), &patch(json!([{"op": "replace", "path": "id", "value": "x"}])))
                .unwrap_err()
                .scim_type,
            "mutability"
        );
        assert_eq!(
            apply(&user(), &patch(json!([{"op": "add", "path": "emails[type eq", "value": 1}])))
                .unwrap_err()
                .scim_type,
            "invalidPath"
        );
    }
}
