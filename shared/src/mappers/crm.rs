//! The CRM: webhook events, HubSpot-style objects API (`/crm/v3/objects/<type>`), and the
//! mapping between the CRM's properties (firstName, account.name, stageName, ...) and the
//! local columns of `crm.contacts`, `crm.accounts` and `crm.opportunities`.
//!
//! Records are maps on both sides: CRM properties by their (dotted) CRM names, local records
//! by column name. A property that is absent is left alone (a partial update); `null` clears.

use chrono::{DateTime, TimeZone, Utc};
use reqwest::Method;
use serde_json::{Map, Value, json};

pub use super::fields::{Field, FieldError, Kind, same};
use super::{
    fields::{self, field, invalid},
    path_segment,
};
use crate::{
    outbound::OutboundRequest,
    schemas::crm::{ChangeKind, CrmEvent, Entity},
};

const CONTACT: &[Field] = &[
    field("firstName", "first_name", Kind::Text),
    field("lastName", "last_name", Kind::Text),
    field("email", "email", Kind::Text),
    field("phone", "phone", Kind::Text),
    field("account.name", "company", Kind::Text),
    field("title", "title", Kind::Text),
    field("leadSource", "source", Kind::Text),
    field("status", "status", Kind::Text),
];

const ACCOUNT: &[Field] = &[
    field("name", "company_name", Kind::Text),
    field("industry", "industry", Kind::Text),
    field("website", "website", Kind::Text),
    field("annualRevenue", "annual_revenue", Kind::Decimal),
    field("numberOfEmployees", "employee_count", Kind::Integer),
    field("billingAddress", "billing_address", Kind::Object),
];

const OPPORTUNITY: &[Field] = &[
    field("name", "name", Kind::Text),
    field("accountId", "account_id", Kind::Text),
    field("amount", "amount", Kind::Decimal),
    field("stageName", "stage", Kind::Text),
    field("probability", "probability", Kind::Integer),
    field("closeDate", "close_date", Kind::Date),
];

/// The mapped fields of `entity`.
pub fn fields(entity: Entity) -> &'static [Field] {
    match entity {
        Entity::Contact => CONTACT,
        Entity::Account => ACCOUNT,
        Entity::Opportunity => OPPORTUNITY,
    }
}

/// The local columns for the CRM properties `props` (only the fields present); an invalid
/// value is an error naming `data.<property>`.
pub fn to_local(
    entity: Entity,
    props: &Map<String, Value>,
) -> Result<Map<String, Value>, FieldError> {
    fields::to_local(fields(entity), props, "data.")
}

/// The CRM properties for the local columns of `local` (only the mapped columns present).
pub fn to_crm(entity: Entity, local: &Map<String, Value>) -> Map<String, Value> {
    fields::to_remote(fields(entity), local)
}

/// The mapped columns whose values differ between `from` and `to` (a column missing on one
/// side counts as `null`).
pub fn changed(
    entity: Entity,
    from: &Map<String, Value>,
    to: &Map<String, Value>,
) -> Vec<&'static str> {
    fields(entity)
        .iter()
        .filter(|f| {
            let a = from.get(f.local).unwrap_or(&Value::Null);
            let b = to.get(f.local).unwrap_or(&Value::Null);
            !same(f.kind, a, b)
        })
        .map(|f| f.local)
        .collect()
}

/// Only the mapped columns of a local record (`to_jsonb(row)` has bookkeeping columns too).
pub fn mapped_columns(entity: Entity, row: &Map<String, Value>) -> Map<String, Value> {
    fields(entity)
        .iter()
        .map(|f| (f.local.to_owned(), row.get(f.local).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// What is wrong with a webhook body: `(field, detail)`, answered as a 400/422 naming it.
pub type BodyError = FieldError;

/// `timestamp` as RFC 3339 or epoch milliseconds.
fn timestamp(value: Option<&Value>, at: &str) -> Result<DateTime<Utc>, BodyError> {
    let field = format!("{at}timestamp");
    match value {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| invalid(field, "must be an RFC 3339 time or epoch milliseconds")),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .ok_or_else(|| invalid(field, "must be an RFC 3339 time or epoch milliseconds")),
        _ => Err(invalid(field, "is required")),
    }
}

/// Splits a verified webhook body into events with their ids. The body is one event or an
/// array of them: `{eventId?, event, type, id, timestamp, data}`. A single event without
/// `eventId` takes the delivery id of its signature scheme.
pub fn parse_webhook(
    body: &Value,
    delivery_id: Option<&str>,
) -> Result<Vec<(String, CrmEvent)>, BodyError> {
    let (items, batch): (Vec<&Value>, bool) = match body {
        Value::Array(items) => (items.iter().collect(), true),
        Value::Object(_) => (vec![body], false),
        _ => return Err(invalid("body", "must be an event object or an array of events")),
    };
    if items.len() > 100 {
        return Err(invalid("body", "at most 100 events per webhook"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = if batch { format!("[{i}].") } else { String::new() };
            parse_event(item, &at, delivery_id.filter(|_| !batch))
        })
        .collect()
}

fn parse_event(
    item: &Value,
    at: &str,
    delivery_id: Option<&str>,
) -> Result<(String, CrmEvent), BodyError> {
    let Some(obj) = item.as_object() else {
        return Err(invalid(format!("{at}body"), "an event must be an object"));
    };
    let text = |name: &str| -> Result<&str, BodyError> {
        obj.get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| invalid(format!("{at}{name}"), "is required and must be a string"))
    };
    let kind = text("type")?;
    let entity = Entity::parse(kind)
        .ok_or_else(|| invalid(format!("{at}type"), format!("Unknown record type: {kind}")))?;
    let event = text("event")?;
    let event = ChangeKind::parse(event).ok_or_else(|| {
        invalid(
            format!("{at}event"),
            format!("Unknown event: {event} (created, updated or deleted)"),
        )
    })?;
    let id = text("id")?;
    if id.len() > 200 {
        return Err(invalid(format!("{at}id"), "at most 200 characters"));
    }
    let event_id = match obj.get("eventId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(invalid(format!("{at}eventId"), "must be a string")),
        None => delivery_id
            .map(str::to_owned)
            .ok_or_else(|| invalid(format!("{at}eventId"), "is required (no delivery id)"))?,
    };
    let timestamp = timestamp(obj.get("timestamp"), at)?;
    let data = match (event, obj.get("data")) {
        (ChangeKind::Deleted, None | Some(Value::Null)) => Map::new(),
        (_, Some(Value::Object(data))) => data.clone(),
        _ => return Err(invalid(format!("{at}data"), "is required and must be an object")),
    };
    // Validated here, so a bad value is the sender's 4xx, never a failed consumer.
    to_local(entity, &data).map_err(|e| invalid(format!("{at}{}", e.field), e.detail))?;
    Ok((event_id, CrmEvent { event, entity, id: id.to_owned(), timestamp, data, retry_of: None }))
}

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
/// (`POST /crm/v3/objects/<type>/batch/upsert` with `idProperty` [`LOCAL_KEY_PROPERTY`]), so
/// a create whose answer was lost and is sent again finds the record it made. The answer's
/// `results[0]` carries the CRM's id.
pub fn create(entity: Entity, local_key: &str, local: &Map<String, Value>) -> OutboundRequest {
    let mut properties = to_crm(entity, local);
    properties.insert(LOCAL_KEY_PROPERTY.to_owned(), json!(local_key));
    OutboundRequest {
        method: Method::POST,
        path: format!("{}/batch/upsert", objects(entity)),
        body: json!({"inputs": [
            {"id": local_key, "idProperty": LOCAL_KEY_PROPERTY, "properties": properties}
        ]}),
    }
}

/// The record a create (upsert) answered.
pub fn created(answer: &Value) -> Option<RemoteRecord> {
    remote_record(answer.pointer("/results/0")?)
}

/// Changes some properties: `PATCH /crm/v3/objects/<type>/<id>` `{properties}`.
pub fn update(entity: Entity, external_id: &str, changes: &Map<String, Value>) -> OutboundRequest {
    OutboundRequest {
        method: Method::PATCH,
        path: format!("{}/{}", objects(entity), path_segment(external_id)),
        body: json!({"properties": to_crm(entity, changes)}),
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

/// Reads one record: `GET /crm/v3/objects/<type>/<id>` (404 once archived).
pub fn read(entity: Entity, external_id: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        path: format!("{}/{}", objects(entity), path_segment(external_id)),
        body: Value::Null,
    }
}

/// One page of the list API, `after` the cursor of the previous page.
pub fn list_path(entity: Entity, after: Option<&str>, limit: usize, archived: bool) -> String {
    let mut path = format!("{}?limit={limit}&archived={archived}", objects(entity));
    if let Some(after) = after {
        path.push_str("&after=");
        path.push_str(&path_segment(after));
    }
    path
}

/// One page of the records modified after `after_ms` (the CRM's clock), oldest first:
/// `POST /crm/v3/objects/<type>/search`.
pub fn search_modified(
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn value_of(kind: Kind) -> BoxedStrategy<Value> {
        let present = match kind {
            Kind::Text => any::<String>().prop_map(|s| Value::from(s.replace('\0', ""))).boxed(),
            Kind::Integer => any::<i32>().prop_map(Value::from).boxed(),
            Kind::Decimal => (any::<i64>(), 0u32..4)
                .prop_map(|(n, scale)| json!(n as f64 / 10f64.powi(scale as i32)))
                .boxed(),
            Kind::Date => (1i32..9999, 1u32..=12, 1u32..=28)
                .prop_map(|(y, m, d)| json!(format!("{y:04}-{m:02}-{d:02}")))
                .boxed(),
            Kind::Object => proptest::collection::btree_map("[a-z]{1,8}", "[^\0]*", 0..4)
                .prop_map(|m| json!(m))
                .boxed(),
        };
        prop_oneof![1 => Just(Value::Null), 6 => present].boxed()
    }

    /// A local record of `entity` with any subset of its columns.
    fn local_record(entity: Entity) -> impl Strategy<Value = Map<String, Value>> {
        let columns: Vec<_> = fields(entity)
            .iter()
            .map(|f| proptest::option::of(value_of(f.kind)).prop_map(move |v| (f.local, v)))
            .collect();
        columns.prop_map(|pairs| {
            pairs.into_iter().filter_map(|(k, v)| Some((k.to_owned(), v?))).collect()
        })
    }

    fn entity() -> impl Strategy<Value = Entity> {
        prop_oneof![Just(Entity::Contact), Just(Entity::Account), Just(Entity::Opportunity)]
    }

    proptest! {
        #[test]
        fn local_to_crm_and_back_is_the_same_record(
            (entity, local) in entity().prop_flat_map(|e| (Just(e), local_record(e)))
        ) {
            let back = to_local(entity, &to_crm(entity, &local)).unwrap();
            prop_assert_eq!(back, local);
        }

        #[test]
        fn crm_to_local_and_back_is_the_same_properties(
            (entity, local) in entity().prop_flat_map(|e| (Just(e), local_record(e)))
        ) {
            // Any valid CRM payload is the image of some local record.
            let props = to_crm(entity, &local);
            let again = to_crm(entity, &to_local(entity, &props).unwrap());
            prop_assert_eq!(again, props);
        }

        #[test]
        fn a_wrongly_typed_property_is_refused_naming_it(
            entity in entity(), pick in any::<prop::sample::Index>()
        ) {
            let f = pick.get(fields(entity));
            let wrong = match f.kind { Kind::Text | Kind::Date | Kind::Object => json!(12), _ => json!("x") };
            let mut props = Map::new();
            super::fields::set_path(&mut props, f.crm, wrong);
            let err = to_local(entity, &props).unwrap_err();
            prop_assert_eq!(err.field, format!("data.{}", f.crm));
        }

        #[test]
        fn changed_lists_exactly_the_differing_columns(
            (entity, a, b) in entity().prop_flat_map(|e| (Just(e), local_record(e), local_record(e)))
        ) {
            let diff = changed(entity, &a, &b);
            for f in fields(entity) {
                let x = a.get(f.local).unwrap_or(&Value::Null);
                let y = b.get(f.local).unwrap_or(&Value::Null);
                prop_assert_eq!(diff.contains(&f.local), !same(f.kind, x, y));
            }
            prop_assert!(changed(entity, &a, &a).is_empty());
        }
    }

    #[test]
    fn string_properties_as_hubspot_sends_them_are_read_as_their_types() {
        let deal = json!({"amount": "1200.50", "probability": "40", "closeDate": "2026-12-31T00:00:00Z", "stageName": ""});
        let local = to_local(Entity::Opportunity, deal.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(local),
            json!({"amount": 1200.5, "probability": 40, "close_date": "2026-12-31", "stage": ""})
        );
        let cleared = json!({"amount": "", "probability": "forty"});
        let err = to_local(Entity::Opportunity, cleared.as_object().unwrap()).unwrap_err();
        assert_eq!(err.field, "data.probability");
    }

    #[test]
    fn the_seed_names_map_to_the_local_columns() {
        let contact = json!({"firstName": "Ann", "lastName": "Lee", "email": "ann@example.com",
            "account": {"name": "Acme"}, "leadSource": "web", "title": "CFO"});
        let local = to_local(Entity::Contact, contact.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(local),
            json!({"first_name": "Ann", "last_name": "Lee", "email": "ann@example.com",
                   "company": "Acme", "source": "web", "title": "CFO"})
        );
        let deal = json!({"stageName": "Closed Won", "amount": 1200.5, "closeDate": "2026-12-31", "accountId": "acc-1"});
        let local = to_local(Entity::Opportunity, deal.as_object().unwrap()).unwrap();
        assert_eq!(local["stage"], json!("Closed Won"));
        assert_eq!(local["close_date"], json!("2026-12-31"));
        assert_eq!(local["account_id"], json!("acc-1"));
    }

    #[test]
    fn webhooks_are_one_event_or_a_batch_and_unknown_types_are_named() {
        let one = json!({"event": "updated", "type": "contact", "id": "c-1",
            "timestamp": "2026-12-01T10:00:00Z", "data": {"email": "a@b.c"}});
        let events = parse_webhook(&one, Some("msg_1")).unwrap();
        assert_eq!(events[0].0, "msg_1");
        assert_eq!(events[0].1.entity, Entity::Contact);
        let batch = json!([
            {"eventId": "e1", "event": "deleted", "type": "account", "id": "a-1", "timestamp": 1764583200000i64},
            {"eventId": "e2", "event": "created", "type": "opportunity", "id": "o-1",
             "timestamp": "2026-12-01T10:00:00Z", "data": {"amount": 5}}
        ]);
        let events = parse_webhook(&batch, None).unwrap();
        assert_eq!(events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["e1", "e2"]);
        let lead =
            json!({"event": "created", "type": "lead", "id": "l-1", "timestamp": 1, "data": {}});
        let err = parse_webhook(&lead, Some("m")).unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.detail.as_str()),
            ("type", "Unknown record type: lead")
        );
        let bad = json!([{"eventId": "e", "event": "created", "type": "account", "id": "a", "timestamp": 1,
            "data": {"numberOfEmployees": "many"}}]);
        assert_eq!(parse_webhook(&bad, None).unwrap_err().field, "[0].data.numberOfEmployees");
        let no_id = json!([{"event": "deleted", "type": "account", "id": "a", "timestamp": 1}]);
        assert_eq!(parse_webhook(&no_id, Some("m")).unwrap_err().field, "[0].eventId");
    }

    #[test]
    fn requests_use_the_objects_api_with_escaped_ids() {
        let changes = json!({"stage": "Won"});
        let r = update(Entity::Opportunity, "d/1", changes.as_object().unwrap());
        assert_eq!((r.method, r.path.as_str()), (Method::PATCH, "/crm/v3/objects/deals/d%2F1"));
        assert_eq!(r.body, json!({"properties": {"stageName": "Won"}}));
        assert_eq!(
            list_path(Entity::Account, Some("x y"), 50, false),
            "/crm/v3/objects/companies?limit=50&archived=false&after=x%20y"
        );
        let c =
            create(Entity::Contact, "contact/7", json!({"first_name": "Ann"}).as_object().unwrap());
        assert_eq!(c.path, "/crm/v3/objects/contacts/batch/upsert");
        assert_eq!(
            c.body["inputs"][0],
            json!({"id": "contact/7", "idProperty": "datasync_id",
            "properties": {"firstName": "Ann", "datasync_id": "contact/7"}})
        );
        let (records, next) = page(&json!({"results": [{"id": "1", "properties": {"name": "A"},
            "updatedAt": "2026-12-01T10:00:00Z"}], "paging": {"next": {"after": "1"}}}))
        .unwrap();
        assert_eq!((records[0].id.as_str(), next.as_deref()), ("1", Some("1")));
    }
}
