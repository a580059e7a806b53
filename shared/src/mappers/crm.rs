//! The CRM (HubSpot): webhook events, the CRM objects v3 API (`/crm/v3/objects/<type>`), and
//! the field map between HubSpot's properties and the local columns of `crm.contacts`,
//! `crm.accounts` and `crm.opportunities`.
//!
//! Local records are maps by column name ([`fields`] lists the columns and their kinds). CRM
//! records are maps by HubSpot's internal property names, every value a string (numbers and
//! dates as their text, `""` for a cleared value). The map between them is configuration
//! ([`FieldMap`], HubSpot's standard properties by default); a jsonb column (the billing
//! address) spreads over several properties, one per key.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
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
    field("first_name", "first_name", Kind::Text),
    field("last_name", "last_name", Kind::Text),
    field("email", "email", Kind::Text),
    field("phone", "phone", Kind::Text),
    field("company", "company", Kind::Text),
    field("title", "title", Kind::Text),
    field("source", "source", Kind::Text),
    field("status", "status", Kind::Text),
];

const ACCOUNT: &[Field] = &[
    field("company_name", "company_name", Kind::Text),
    field("industry", "industry", Kind::Text),
    field("website", "website", Kind::Text),
    field("annual_revenue", "annual_revenue", Kind::Decimal),
    field("employee_count", "employee_count", Kind::Integer),
    field("billing_address", "billing_address", Kind::Object),
];

const OPPORTUNITY: &[Field] = &[
    field("name", "name", Kind::Text),
    field("account_id", "account_id", Kind::Text),
    field("amount", "amount", Kind::Decimal),
    field("stage", "stage", Kind::Text),
    field("probability", "probability", Kind::Integer),
    field("close_date", "close_date", Kind::Date),
];

/// The synced columns of `entity` and their kinds (`crm` is the column name too: the CRM's
/// names are in the [`FieldMap`]).
pub fn fields(entity: Entity) -> &'static [Field] {
    match entity {
        Entity::Contact => CONTACT,
        Entity::Account => ACCOUNT,
        Entity::Opportunity => OPPORTUNITY,
    }
}

/// HubSpot's standard properties for the local columns: `(local, property)`, where `local` is
/// a column or `<jsonb column>.<key>`. Not mapped by default: a contact's `source` (HubSpot's
/// `hs_analytics_source` is read-only) and a deal's `account_id` (an association in HubSpot,
/// not a property); map them to custom properties with `CRM_FIELD_MAP`.
const HUBSPOT: [&[(&str, &str)]; 3] = [
    &[
        ("first_name", "firstname"),
        ("last_name", "lastname"),
        ("email", "email"),
        ("phone", "phone"),
        ("company", "company"),
        ("title", "jobtitle"),
        ("status", "hs_lead_status"),
    ],
    &[
        ("company_name", "name"),
        ("industry", "industry"),
        ("website", "website"),
        ("annual_revenue", "annualrevenue"),
        ("employee_count", "numberofemployees"),
        ("billing_address.street", "address"),
        ("billing_address.street2", "address2"),
        ("billing_address.city", "city"),
        ("billing_address.state", "state"),
        ("billing_address.postal_code", "zip"),
        ("billing_address.country", "country"),
    ],
    &[
        ("name", "dealname"),
        ("amount", "amount"),
        ("stage", "dealstage"),
        ("probability", "hs_deal_stage_probability"),
        ("close_date", "closedate"),
    ],
];

fn index(entity: Entity) -> usize {
    match entity {
        Entity::Contact => 0,
        Entity::Account => 1,
        Entity::Opportunity => 2,
    }
}

/// One mapped CRM property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// HubSpot's internal name.
    pub name: String,
    /// The local column.
    pub column: &'static str,
    /// For a jsonb column: the key inside it.
    pub key: Option<String>,
    pub kind: Kind,
}

/// Which CRM property holds which local column, per entity: configuration (`CRM_FIELD_MAP`),
/// HubSpot's standard properties by default ([`FieldMap::hubspot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldMap {
    entities: [Vec<Property>; 3],
}

impl Default for FieldMap {
    fn default() -> Self {
        Self::hubspot()
    }
}

impl FieldMap {
    /// HubSpot's standard properties.
    pub fn hubspot() -> Self {
        let pairs = |entity: Entity| {
            HUBSPOT[index(entity)].iter().map(|(l, p)| ((*l).to_owned(), Some((*p).to_owned())))
        };
        Self::build(|entity| Ok(pairs(entity).collect())).unwrap_or_else(|_| Self::empty())
    }

    fn empty() -> Self {
        Self { entities: [Vec::new(), Vec::new(), Vec::new()] }
    }

    /// The defaults with overrides, as `CRM_FIELD_MAP` gives them: `{"contact": {"source":
    /// "lead_source", "status": null}, "account": {"billing_address.postal_code": "zip"}}`; a
    /// key is a column or `<jsonb column>.<key>`, a value the CRM property (`null`: not
    /// synced). An unknown entity or column, or two columns on one property, is an error.
    pub fn with_overrides(json: &str) -> Result<Self, String> {
        let overrides: Map<String, Value> =
            serde_json::from_str(json).map_err(|e| format!("not a JSON object: {e}"))?;
        for name in overrides.keys() {
            Entity::parse(name)
                .ok_or(format!("unknown entity {name:?} (contact, account or opportunity)"))?;
        }
        Self::build(|entity| {
            let mut pairs: Vec<(String, Option<String>)> = HUBSPOT[index(entity)]
                .iter()
                .map(|(l, p)| ((*l).to_owned(), Some((*p).to_owned())))
                .collect();
            if let Some(Value::Object(over)) = overrides.get(entity.as_str()) {
                for (local, property) in over {
                    let property = match property {
                        Value::String(p) if !p.is_empty() => Some(p.clone()),
                        Value::Null => None,
                        _ => {
                            return Err(format!(
                                "{entity}.{local}: the property must be a name or null"
                            ));
                        }
                    };
                    pairs.retain(|(l, _)| l != local);
                    pairs.push((local.clone(), property));
                }
            } else if overrides.contains_key(entity.as_str()) {
                return Err(format!("{entity}: must be an object"));
            }
            Ok(pairs)
        })
    }

    fn build(
        mut pairs: impl FnMut(Entity) -> Result<Vec<(String, Option<String>)>, String>,
    ) -> Result<Self, String> {
        let mut map = Self::empty();
        for entity in Entity::ALL {
            let mut seen = BTreeSet::new();
            for (local, property) in pairs(entity)? {
                let Some(name) = property else { continue };
                let (column, key) = match local.split_once('.') {
                    Some((c, k)) => (c, Some(k.to_owned())),
                    None => (local.as_str(), None),
                };
                let f = fields(entity)
                    .iter()
                    .find(|f| f.local == column)
                    .ok_or(format!("{entity}.{local}: no such column in crm.{}", entity.table()))?;
                let kind = match (f.kind, &key) {
                    (Kind::Object, Some(_)) => Kind::Text,
                    (Kind::Object, None) => {
                        return Err(format!("{entity}.{local}: map the keys of a jsonb column"));
                    }
                    (_, Some(_)) => return Err(format!("{entity}.{local}: not a jsonb column")),
                    (kind, None) => kind,
                };
                if name == LOCAL_KEY_PROPERTY || !seen.insert(name.clone()) {
                    return Err(format!("{entity}: property {name} is mapped twice"));
                }
                map.entities[index(entity)].push(Property { name, column: f.local, key, kind });
            }
        }
        Ok(map)
    }

    /// The mapped properties of `entity`.
    pub fn properties(&self, entity: Entity) -> &[Property] {
        &self.entities[index(entity)]
    }

    /// The property names a read asks for: the mapped ones and our key.
    pub fn names(&self, entity: Entity) -> Vec<String> {
        self.properties(entity)
            .iter()
            .map(|p| p.name.clone())
            .chain([LOCAL_KEY_PROPERTY.to_owned()])
            .collect()
    }

    /// The local columns for the CRM properties in `props` (only the mapped ones present;
    /// others are ignored). A jsonb column comes as an object of the keys present (`null`
    /// for a cleared one), to lay over the value held ([`overlay`]). Our key
    /// ([`LOCAL_KEY_PROPERTY`]) is kept under its name. An invalid value is an error naming
    /// `data.<property>`.
    pub fn to_local(
        &self,
        entity: Entity,
        props: &Map<String, Value>,
    ) -> Result<Map<String, Value>, FieldError> {
        let mut local = Map::new();
        for p in self.properties(entity) {
            let Some(value) = props.get(&p.name) else { continue };
            let value = from_crm(p.kind, value)
                .map_err(|detail| invalid(format!("data.{}", p.name), detail))?;
            match &p.key {
                None => {
                    local.insert(p.column.to_owned(), value);
                }
                Some(key) => {
                    let object = local.entry(p.column).or_insert_with(|| json!({}));
                    if let Value::Object(object) = object {
                        object.insert(key.clone(), value);
                    }
                }
            }
        }
        if let Some(Value::String(key)) = props.get(LOCAL_KEY_PROPERTY) {
            local.insert(LOCAL_KEY_PROPERTY.to_owned(), Value::from(key.clone()));
        }
        Ok(local)
    }

    /// The CRM properties for the columns present in `local`, every value a string (`""`
    /// clears); a jsonb column sets each of its mapped keys.
    pub fn to_crm(&self, entity: Entity, local: &Map<String, Value>) -> Map<String, Value> {
        let mut props = Map::new();
        for p in self.properties(entity) {
            let Some(value) = local.get(p.column) else { continue };
            let value = match &p.key {
                None => value,
                Some(key) => value.get(key).unwrap_or(&Value::Null),
            };
            props.insert(p.name.clone(), Value::from(to_crm_text(p.kind, value)));
        }
        props
    }
}

/// A CRM value (a string, as HubSpot sends it; or a JSON value) as a local value of `kind`:
/// `""` is `null`, a date may be epoch milliseconds (webhooks) or an ISO time.
fn from_crm(kind: Kind, value: &Value) -> Result<Value, String> {
    let one = [field("v", "v", kind)];
    let value = match (kind, value) {
        (_, Value::String(s)) if s.is_empty() => return Ok(Value::Null),
        (Kind::Date, Value::String(s))
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            let day = s
                .parse::<i64>()
                .ok()
                .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
                .ok_or("must be a date")?;
            Value::from(day.date_naive().format("%Y-%m-%d").to_string())
        }
        _ => value.clone(),
    };
    let mut props = Map::new();
    props.insert("v".into(), value);
    let mut local = fields::to_local(&one, &props, "").map_err(|e| e.detail)?;
    Ok(local.remove("v").unwrap_or(Value::Null))
}

/// A local value as HubSpot's text: numbers as written, a date as midnight UTC in ISO 8601
/// (HubSpot's date and datetime properties both take it), `""` for `null`.
fn to_crm_text(kind: Kind, value: &Value) -> String {
    match (kind, value) {
        (_, Value::Null) => String::new(),
        (_, Value::String(s)) if kind == Kind::Date && !s.is_empty() => {
            match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(_) => format!("{s}T00:00:00Z"),
                Err(_) => s.clone(),
            }
        }
        (_, Value::String(s)) => s.clone(),
        (_, other) => other.to_string(),
    }
}

/// The local columns of `data` validated by kind (events carry local columns once mapped);
/// an invalid value is an error naming `data.<column>`.
pub fn local_changes(
    entity: Entity,
    data: &Map<String, Value>,
) -> Result<Map<String, Value>, FieldError> {
    fields::to_local(fields(entity), data, "data.")
}

/// Lays the jsonb columns of `changes` (objects of some keys, `null` for a cleared one) over
/// their values in `held`, so a change of one key keeps the others; an empty object is `null`.
pub fn overlay(entity: Entity, held: &Map<String, Value>, changes: &mut Map<String, Value>) {
    for f in fields(entity).iter().filter(|f| f.kind == Kind::Object) {
        let Some(Value::Object(incoming)) = changes.get(f.local) else { continue };
        let mut object = held.get(f.local).and_then(Value::as_object).cloned().unwrap_or_default();
        for (k, v) in incoming {
            if v.is_null() {
                object.remove(k);
            } else {
                object.insert(k.clone(), v.clone());
            }
        }
        let value = if object.is_empty() { Value::Null } else { Value::Object(object) };
        changes.insert(f.local.to_owned(), value);
    }
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
/// array of them, each either HubSpot's own (`{eventId, subscriptionType, objectId,
/// occurredAt, propertyName?, propertyValue?, mergedObjectIds?, primaryObjectId?,
/// newObjectId?, ...}`, see [`parse_native`]) or the seed's `{eventId?, event, type, id,
/// timestamp, data}` (property names and values as in the CRM, validated against HubSpot's
/// standard properties). A single event without `eventId` takes the delivery id of its
/// signature scheme. HubSpot events about objects or changes not synced here (tickets,
/// associations) are left out.
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
    let mut events = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = if batch { format!("[{i}].") } else { String::new() };
        if item.get("subscriptionType").is_some() {
            events.extend(parse_native(item, &at)?);
        } else {
            events.push(parse_event(item, &at, delivery_id.filter(|_| !batch))?);
        }
    }
    Ok(events)
}

/// An id HubSpot sends as a number (or a string).
fn object_id(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Number(n) if n.as_u64().is_some() => Some(n.to_string()),
        Value::String(s) if !s.is_empty() && s.len() <= 200 => Some(s.clone()),
        _ => None,
    }
}

/// One of HubSpot's webhook events: `<object>.<change>` with object `contact`, `company` or
/// `deal` and change `creation`, `propertyChange`, `deletion`, `privacyDeletion`, `restore`
/// or `merge`; `None` for the others. A creation, restore or merge carries no properties:
/// its event asks the consumer to read the record ([`CrmEvent::read`]). A merge names the
/// winner (`newObjectId`, else `primaryObjectId`) and the records merged into it
/// (`mergedObjectIds`, and the primary when a new record won), which become deleted.
pub fn parse_native(item: &Value, at: &str) -> Result<Option<(String, CrmEvent)>, BodyError> {
    let name = |n: &str| format!("{at}{n}");
    let kind = item["subscriptionType"]
        .as_str()
        .ok_or_else(|| invalid(name("subscriptionType"), "must be a string"))?;
    let Some((object, change)) = kind.split_once('.') else {
        return Err(invalid(name("subscriptionType"), format!("Unknown subscription: {kind}")));
    };
    let entity = match object {
        "contact" => Entity::Contact,
        "company" => Entity::Account,
        "deal" => Entity::Opportunity,
        _ => return Ok(None),
    };
    let event_id = object_id(item.get("eventId"))
        .ok_or_else(|| invalid(name("eventId"), "is required and must be a number"))?;
    let occurred = item["occurredAt"]
        .as_i64()
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .ok_or_else(|| invalid(name("occurredAt"), "is required (epoch milliseconds)"))?;
    let id = || {
        object_id(item.get("objectId"))
            .ok_or_else(|| invalid(name("objectId"), "is required and must be a number"))
    };
    let mut event = CrmEvent {
        event: ChangeKind::Updated,
        entity,
        id: String::new(),
        timestamp: occurred,
        data: Map::new(),
        read: false,
        merged: Vec::new(),
        retry_of: None,
    };
    match change {
        "creation" => {
            (event.event, event.id, event.read) = (ChangeKind::Created, id()?, true);
        }
        "restore" => (event.id, event.read) = (id()?, true),
        "deletion" | "privacyDeletion" => (event.event, event.id) = (ChangeKind::Deleted, id()?),
        "propertyChange" => {
            event.id = id()?;
            let property = item["propertyName"]
                .as_str()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| invalid(name("propertyName"), "is required"))?;
            let value = match item.get("propertyValue") {
                None | Some(Value::Null) => Value::from(""),
                Some(v @ Value::String(_)) => v.clone(),
                Some(other) => Value::from(other.to_string()),
            };
            event.data.insert(property.to_owned(), value);
        }
        "merge" => {
            let primary = object_id(item.get("primaryObjectId"))
                .ok_or_else(|| invalid(name("primaryObjectId"), "is required"))?;
            let winner = object_id(item.get("newObjectId")).unwrap_or_else(|| primary.clone());
            let merged = item["mergedObjectIds"]
                .as_array()
                .ok_or_else(|| invalid(name("mergedObjectIds"), "must be an array"))?;
            let mut losers = merged
                .iter()
                .map(|v| object_id(Some(v)))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(name("mergedObjectIds"), "must hold object ids"))?;
            losers.push(primary);
            losers.retain(|l| *l != winner);
            losers.sort();
            losers.dedup();
            (event.event, event.id, event.read, event.merged) =
                (ChangeKind::Merged, winner, true, losers);
        }
        _ => return Ok(None),
    }
    Ok(Some((event_id, event)))
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
    // Validated here against HubSpot's standard properties, so a bad value is the sender's
    // 4xx, never a failed consumer.
    FieldMap::hubspot()
        .to_local(entity, &data)
        .map_err(|e| invalid(format!("{at}{}", e.field), e.detail))?;
    Ok((
        event_id,
        CrmEvent {
            event,
            entity,
            id: id.to_owned(),
            timestamp,
            data,
            read: false,
            merged: Vec::new(),
            retry_of: None,
        },
    ))
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn value_of(kind: Kind) -> BoxedStrategy<Value> {
        let present = match kind {
            Kind::Text => "[^\0]{1,12}".prop_map(Value::from).boxed(),
            Kind::Integer => any::<i32>().prop_map(Value::from).boxed(),
            Kind::Decimal => (any::<i32>(), 0u32..4)
                .prop_map(|(n, scale)| json!(n as f64 / 10f64.powi(scale as i32)))
                .boxed(),
            Kind::Date => (1i32..9999, 1u32..=12, 1u32..=28)
                .prop_map(|(y, m, d)| json!(format!("{y:04}-{m:02}-{d:02}")))
                .boxed(),
            Kind::Object => proptest::collection::btree_map(
                prop_oneof![Just("street"), Just("city"), Just("postal_code"), Just("country")],
                "[^\0]{1,8}",
                1..4,
            )
            .prop_map(|m| json!(m))
            .boxed(),
        };
        prop_oneof![1 => Just(Value::Null), 6 => present].boxed()
    }

    /// A local record of `entity` with any subset of the columns HubSpot's map syncs.
    fn local_record(entity: Entity) -> impl Strategy<Value = Map<String, Value>> {
        let map = FieldMap::hubspot();
        let synced: BTreeSet<&str> = map.properties(entity).iter().map(|p| p.column).collect();
        let columns: Vec<_> = fields(entity)
            .iter()
            .filter(|f| synced.contains(f.local))
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
            let map = FieldMap::hubspot();
            let props = map.to_crm(entity, &local);
            prop_assert!(props.values().all(Value::is_string), "{props:?}");
            let mut back = map.to_local(entity, &props).unwrap();
            overlay(entity, &Map::new(), &mut back);
            for f in fields(entity) {
                if let Some(want) = local.get(f.local) {
                    let got = back.get(f.local).unwrap_or(&Value::Null);
                    prop_assert!(same(f.kind, got, want), "{}: {got} != {want}", f.local);
                }
            }
        }

        #[test]
        fn a_wrongly_typed_property_is_refused_naming_it(
            entity in entity(), pick in any::<prop::sample::Index>()
        ) {
            let map = FieldMap::hubspot();
            let p = pick.get(map.properties(entity));
            let wrong = match p.kind { Kind::Text => json!(12), _ => json!("x") };
            let mut props = Map::new();
            props.insert(p.name.clone(), wrong);
            let err = map.to_local(entity, &props).unwrap_err();
            prop_assert_eq!(err.field, format!("data.{}", p.name));
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
    fn hubspot_names_and_string_values_go_out_and_come_back_typed() {
        let map = FieldMap::hubspot();
        let deal = json!({"name": "Anvils", "amount": 1200.5, "probability": 40,
            "close_date": "2026-12-31", "stage": null, "account_id": "7"});
        let props = map.to_crm(Entity::Opportunity, deal.as_object().unwrap());
        assert_eq!(
            Value::Object(props.clone()),
            json!({"dealname": "Anvils", "amount": "1200.5", "hs_deal_stage_probability": "40",
                   "closedate": "2026-12-31T00:00:00Z", "dealstage": ""})
        );
        let back = map.to_local(Entity::Opportunity, &props).unwrap();
        assert_eq!(
            Value::Object(back),
            json!({"name": "Anvils", "amount": 1200.5, "probability": 40,
                   "close_date": "2026-12-31", "stage": null})
        );
        // Webhooks send dates as epoch milliseconds.
        let changed = json!({"closedate": "1798675200000"});
        let local = map.to_local(Entity::Opportunity, changed.as_object().unwrap()).unwrap();
        assert_eq!(local["close_date"], "2026-12-31");
        let bad = json!({"hs_deal_stage_probability": "forty"});
        let err = map.to_local(Entity::Opportunity, bad.as_object().unwrap()).unwrap_err();
        assert_eq!(err.field, "data.hs_deal_stage_probability");
    }

    #[test]
    fn the_billing_address_spreads_over_hubspot_address_properties() {
        let map = FieldMap::hubspot();
        let account = json!({"company_name": "Acme", "billing_address": {"city": "Lyon", "postal_code": "69001"}});
        let props = map.to_crm(Entity::Account, account.as_object().unwrap());
        assert_eq!(
            Value::Object(props),
            json!({"name": "Acme", "address": "", "address2": "", "city": "Lyon", "state": "",
                   "zip": "69001", "country": ""})
        );
        // A change of one key keeps the others.
        let change = json!({"city": "Paris"});
        let mut local = map.to_local(Entity::Account, change.as_object().unwrap()).unwrap();
        overlay(Entity::Account, account.as_object().unwrap(), &mut local);
        assert_eq!(local["billing_address"], json!({"city": "Paris", "postal_code": "69001"}));
    }

    #[test]
    fn the_field_map_takes_overrides_and_refuses_unknown_columns() {
        let map = FieldMap::with_overrides(
            r#"{"contact": {"source": "lead_source", "status": null}, "opportunity": {"account_id": "company_ref"}}"#,
        )
        .unwrap();
        let contact = json!({"source": "web", "status": "new", "first_name": "Ann"});
        assert_eq!(
            Value::Object(map.to_crm(Entity::Contact, contact.as_object().unwrap())),
            json!({"firstname": "Ann", "lead_source": "web"})
        );
        assert!(map.names(Entity::Opportunity).contains(&"company_ref".to_owned()));
        for bad in [
            r#"{"lead": {}}"#,
            r#"{"contact": {"nickname": "x"}}"#,
            r#"{"contact": {"title": "firstname"}}"#,
            r#"{"account": {"billing_address": "address"}}"#,
            "[]",
        ] {
            assert!(FieldMap::with_overrides(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hubspot_native_events_become_changes_and_reads() {
        let body = json!([
            {"eventId": 100, "subscriptionId": 1, "portalId": 62515, "appId": 54321,
             "occurredAt": 1733400000000i64, "subscriptionType": "contact.propertyChange",
             "attemptNumber": 0, "objectId": 123, "propertyName": "firstname",
             "propertyValue": "Ada", "changeSource": "CRM"},
            {"eventId": 101, "occurredAt": 1733400000001i64, "subscriptionType": "company.creation", "objectId": 7},
            {"eventId": 102, "occurredAt": 1733400000002i64, "subscriptionType": "deal.deletion", "objectId": 8},
            {"eventId": 103, "occurredAt": 1733400000003i64, "subscriptionType": "contact.merge",
             "objectId": 123, "primaryObjectId": 123, "mergedObjectIds": [124], "newObjectId": 125},
            {"eventId": 104, "occurredAt": 1733400000004i64, "subscriptionType": "ticket.creation", "objectId": 9},
            {"eventId": 105, "occurredAt": 1733400000005i64, "subscriptionType": "contact.associationChange", "objectId": 9}
        ]);
        let events = parse_webhook(&body, None).unwrap();
        assert_eq!(
            events.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["100", "101", "102", "103"]
        );
        let change = &events[0].1;
        assert_eq!((change.event, change.id.as_str()), (ChangeKind::Updated, "123"));
        assert_eq!(Value::Object(change.data.clone()), json!({"firstname": "Ada"}));
        assert_eq!(change.timestamp.timestamp_millis(), 1733400000000);
        assert!(events[1].1.read && events[1].1.entity == Entity::Account);
        assert_eq!(events[2].1.event, ChangeKind::Deleted);
        let merge = &events[3].1;
        assert_eq!(
            (merge.event, merge.id.as_str(), merge.merged.clone()),
            (ChangeKind::Merged, "125", vec!["123".to_owned(), "124".to_owned()])
        );
        let no_time =
            json!([{"eventId": 1, "subscriptionType": "contact.creation", "objectId": 1}]);
        assert_eq!(parse_webhook(&no_time, None).unwrap_err().field, "[0].occurredAt");
    }

    #[test]
    fn the_seed_format_is_one_event_or_a_batch_and_unknown_types_are_named() {
        let one = json!({"event": "updated", "type": "contact", "id": "c-1",
            "timestamp": "2026-12-01T10:00:00Z", "data": {"email": "a@b.c"}});
        let events = parse_webhook(&one, Some("msg_1")).unwrap();
        assert_eq!(events[0].0, "msg_1");
        assert_eq!(events[0].1.entity, Entity::Contact);
        let batch = json!([
            {"eventId": "e1", "event": "deleted", "type": "account", "id": "a-1", "timestamp": 1764583200000i64},
            {"eventId": "e2", "event": "created", "type": "opportunity", "id": "o-1",
             "timestamp": "2026-12-01T10:00:00Z", "data": {"amount": "5"}}
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
            "data": {"numberofemployees": "many"}}]);
        assert_eq!(parse_webhook(&bad, None).unwrap_err().field, "[0].data.numberofemployees");
        let no_id = json!([{"event": "deleted", "type": "account", "id": "a", "timestamp": 1}]);
        assert_eq!(parse_webhook(&no_id, Some("m")).unwrap_err().field, "[0].eventId");
    }

    #[test]
    fn requests_use_the_objects_api_with_escaped_ids() {
        let map = FieldMap::hubspot();
        let changes = json!({"stage": "Won"});
        let r = update(&map, Entity::Opportunity, "d/1", changes.as_object().unwrap());
        assert_eq!((r.method, r.path.as_str()), (Method::PATCH, "/crm/v3/objects/deals/d%2F1"));
        assert_eq!(r.body, json!({"properties": {"dealstage": "Won"}}));
        assert!(
            list_path(&map, Entity::Account, Some("x y"), 50, false)
                .starts_with("/crm/v3/objects/companies?limit=50&archived=false&properties=name,")
        );
        let c = create(
            &map,
            Entity::Contact,
            "contact/7",
            json!({"first_name": "Ann"}).as_object().unwrap(),
        );
        assert_eq!(c.path, "/crm/v3/objects/contacts/batch/upsert");
        assert_eq!(
            c.body["inputs"][0],
            json!({"id": "contact/7", "idProperty": "datasync_id", "objectWriteTraceId": "contact/7",
            "properties": {"firstname": "Ann", "datasync_id": "contact/7"}})
        );
        let (records, next) = page(&json!({"results": [{"id": "1", "properties": {"name": "A"},
            "updatedAt": "2026-12-01T10:00:00Z"}], "paging": {"next": {"after": "1"}}}))
        .unwrap();
        assert_eq!((records[0].id.as_str(), next.as_deref()), ("1", Some("1")));
        let answer = json!({"status": "COMPLETE", "results": [], "numErrors": 1, "errors": [
            {"status": "error", "category": "VALIDATION_ERROR", "message": "Email is invalid",
             "context": {"objectWriteTraceId": ["contact/8"]}}]});
        assert_eq!(refusal(&answer, "contact/7"), None);
        assert_eq!(refusal(&answer, "contact/8").unwrap().0, "VALIDATION_ERROR");
    }
}
