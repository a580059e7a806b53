//! CRM webhooks: HubSpot's native events and the seed's `{event, type, id, timestamp, data}`.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};

use super::{FieldError, FieldMap};
use crate::{
    mappers::fields::invalid,
    schemas::crm::{ChangeKind, CrmEvent, Entity},
};

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
