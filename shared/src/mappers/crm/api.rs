//! The CRM objects v3 API (`/crm/v3/objects/<type>`): requests and what their answers mean.

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::FieldMap;
use crate::{mappers::path_segment, outbound::OutboundRequest, schemas::crm::Entity};

/// A record as the CRM's objects API returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteRecord {
    pub id: String,
    pub properties: Map<String, Value>,
    pub updated_at: Option<DateTime<Utc>>,
    pub archived: bool,
}

/// Reads `{id, properties, updatedAt, archived}`.
pub fn remote_record(answer: &Value) -> Option<RemoteRecord> {
    let id = match answer.get("id")? {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(RemoteRecord {
        id,
        properties: answer
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        updated_at: answer
            .get("updatedAt")
            .and_then(Value::as_str)
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc)),
        archived: answer.get("archived").and_then(Value::as_bool).unwrap_or(false),
    })
}

fn objects(entity: Entity) -> String {
    format!("/crm/v3/objects/{}", entity.object_type())
}

/// The CRM property (unique, set by us) that holds our key of a record we created there.
pub const LOCAL_KEY_PROPERTY: &str = "datasync_id";

/// Creates a record, idempotently: an upsert keyed by our own key of it
/// (`POST /crm/v3/objects/<type>/batch/upsert`, input `{id, idProperty:`
/// [`LOCAL_KEY_PROPERTY`]`, objectWriteTraceId, properties}`), so a create whose answer was
/// lost and is sent again finds the record it made. The answer's `results[0]` carries the
/// CRM's id; a `207` lists a refused input in `errors` ([`refusal`]).
pub fn create(
    map: &FieldMap,
    entity: Entity,
    local_key: &str,
    local: &Map<String, Value>,
) -> OutboundRequest {
    let mut properties = map.to_crm(entity, local);
    properties.insert(LOCAL_KEY_PROPERTY.to_owned(), json!(local_key));
    OutboundRequest {
        method: Method::POST,
        path: format!("{}/batch/upsert", objects(entity)),
        body: json!({"inputs": [{"id": local_key, "idProperty": LOCAL_KEY_PROPERTY,
            "objectWriteTraceId": local_key, "properties": properties}]}),
    }
}

/// The record a create (upsert) answered.
pub fn created(answer: &Value) -> Option<RemoteRecord> {
    remote_record(answer.pointer("/results/0")?)
}

/// Why a batch answer (`200`/`207` with `{status, results, errors, numErrors}`) refused the
/// input traced as `trace` (its `objectWriteTraceId` or id in the error's `context`), if it
/// did: `(category, message)`.
pub fn refusal(answer: &Value, trace: &str) -> Option<(String, String)> {
    let errors = answer.get("errors")?.as_array()?;
    let names = |e: &Value| -> bool {
        let Some(context) = e.get("context").and_then(Value::as_object) else {
            return false;
        };
        context.values().any(|v| match v {
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(trace)),
            Value::String(s) => s == trace,
            _ => false,
        })
    };
    // An error naming no input concerns them all (a batch of one).
    let error = errors.iter().find(|e| names(e)).or_else(|| {
        errors
            .iter()
            .find(|e| e.get("context").and_then(Value::as_object).is_none_or(Map::is_empty))
    })?;
    Some((
        error["category"].as_str().unwrap_or("UNKNOWN").to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Changes some properties: `PATCH /crm/v3/objects/<type>/<id>` `{properties}`.
pub fn update(
    map: &FieldMap,
    entity: Entity,
    external_id: &str,
    changes: &Map<String, Value>,
) -> OutboundRequest {
    OutboundRequest {
        method: Method::PATCH,
        path: format!("{}/{}", objects(entity), path_segment(external_id)),
        body: json!({"properties": map.to_crm(entity, changes)}),
    }
}

/// Archives (deletes) a record: `DELETE /crm/v3/objects/<type>/<id>`.
pub fn archive(entity: Entity, external_id: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::DELETE,
        path: format!("{}/{}", objects(entity), path_segment(external_id)),
        body: Value::Null,
    }
}

fn properties_param(map: &FieldMap, entity: Entity) -> String {
    map.names(entity).iter().map(|n| path_segment(n)).collect::<Vec<_>>().join(",")
}

/// Reads one record with the mapped properties:
/// `GET /crm/v3/objects/<type>/<id>?properties=...` (404 once archived).
pub fn read(map: &FieldMap, entity: Entity, external_id: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        path: format!(
            "{}/{}?properties={}",
            objects(entity),
            path_segment(external_id),
            properties_param(map, entity)
        ),
        body: Value::Null,
    }
}

/// Most records one batch read takes (HubSpot's limit).
pub const BATCH_READ_MAX: usize = 100;

/// Reads up to [`BATCH_READ_MAX`] records with the mapped properties:
/// `POST /crm/v3/objects/<type>/batch/read` `{properties, inputs: [{id}]}`. The answer lists
/// the records found in `results` (one missing is an `OBJECT_NOT_FOUND` error, in a `207`).
pub fn batch_read(map: &FieldMap, entity: Entity, ids: &[String]) -> OutboundRequest {
    let inputs: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
    OutboundRequest {
        method: Method::POST,
        path: format!("{}/batch/read", objects(entity)),
        body: json!({"properties": map.names(entity), "inputs": inputs}),
    }
}

/// One page of the list API with the mapped properties, `after` the cursor of the previous
/// page.
pub fn list_path(
    map: &FieldMap,
    entity: Entity,
    after: Option<&str>,
    limit: usize,
    archived: bool,
) -> String {
    let mut path = format!(
        "{}?limit={limit}&archived={archived}&properties={}",
        objects(entity),
        properties_param(map, entity)
    );
    if let Some(after) = after {
        path.push_str("&after=");
        path.push_str(&path_segment(after));
    }
    path
}

/// One page of the records modified after `after_ms` (the CRM's clock), oldest first:
/// `POST /crm/v3/objects/<type>/search`.
pub fn search_modified(
    map: &FieldMap,
    entity: Entity,
    after_ms: i64,
    cursor: Option<&str>,
    limit: usize,
) -> OutboundRequest {
    let mut body = json!({
        "filterGroups": [{"filters": [
            {"propertyName": "hs_lastmodifieddate", "operator": "GT", "value": after_ms.to_string()}
        ]}],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": map.names(entity),
        "limit": limit,
    });
    if let Some(cursor) = cursor {
        body["after"] = json!(cursor);
    }
    OutboundRequest { method: Method::POST, path: format!("{}/search", objects(entity)), body }
}

/// A list or search page: its records and the next page's cursor.
pub fn page(answer: &Value) -> Result<(Vec<RemoteRecord>, Option<String>), String> {
    let results =
        answer.get("results").and_then(Value::as_array).ok_or("the answer has no results array")?;
    let records = results
        .iter()
        .enumerate()
        .map(|(i, r)| remote_record(r).ok_or(format!("results[{i}] has no id")))
        .collect::<Result<Vec<_>, _>>()?;
    let next = answer
        .pointer("/paging/next/after")
        .and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|n| n.to_string())));
    Ok((records, next))
}
