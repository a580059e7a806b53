//! The simulated CRM: a HubSpot-style objects API over contacts, companies and deals.
//!
//! - `POST /crm/v3/objects/<type>` `{properties}` → 201 `{id, properties, createdAt, updatedAt,
//!   archived}`; `PATCH /crm/v3/objects/<type>/<id>` merges properties; `DELETE` archives;
//!   `GET /crm/v3/objects/<type>/<id>` (404 once archived).
//! - `GET /crm/v3/objects/<type>?limit=&after=&archived=` lists by id with a cursor
//!   (`paging.next.after`); `POST /crm/v3/objects/<type>/search` finds records modified after a
//!   time (`hs_lastmodifieddate GT <ms>`), oldest first.
//! - A request quota per window (off unless set): every answer carries
//!   `X-HubSpot-RateLimit-Max`, `-Remaining` and `-Interval-Milliseconds`; an exhausted window
//!   answers 429 with `Retry-After`.
//! - The CRM's own users change records ([`SimServer::crm_change`], [`SimServer::crm_delete`]);
//!   the change is made first, then reported as a webhook event that the test delivers, signed
//!   with Standard Webhooks or HubSpot v3 ([`WebhookSigner`]).

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};

use crate::http::SimServer;

/// One CRM object.
#[derive(Clone, Debug)]
pub struct CrmObject {
    pub properties: Map<String, Value>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub archived_ms: Option<i64>,
}

/// The CRM's state.
#[derive(Default)]
pub(crate) struct CrmState {
    /// (object type, id) -> object; ids are numbers, listed in numeric order.
    objects: BTreeMap<(String, u64), CrmObject>,
    next_id: u64,
    /// The CRM's clock (ms), strictly increasing per change.
    last_ms: i64,
    quota: Option<Quota>,
}

struct Quota {
    max: u32,
    interval: Duration,
    window_start: Instant,
    used: u32,
}

/// The rate-limit headers of one answer, and whether the request was refused.
pub(crate) struct Limited {
    pub headers: Vec<(&'static str, String)>,
    pub retry_after: Option<u64>,
}

const TYPES: [&str; 3] = ["contacts", "companies", "deals"];

/// The webhook `type` of an object type.
fn entity_of(object_type: &str) -> &'static str {
    match object_type {
        "contacts" => "contact",
        "companies" => "account",
        _ => "opportunity",
    }
}

fn iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let nanos = (ms.rem_euclid(1000) * 1_000_000) as u32;
    chrono_like(secs, nanos)
}

/// RFC 3339 in UTC with milliseconds, without a date library.
fn chrono_like(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        nanos / 1_000_000
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl CrmState {
    fn tick(&mut self) -> i64 {
        self.last_ms = now_ms().max(self.last_ms + 1);
        self.last_ms
    }

    fn json(object_type: &str, id: u64, o: &CrmObject) -> Value {
        let _ = object_type;
        json!({
            "id": id.to_string(),
            "properties": o.properties,
            "createdAt": iso(o.created_ms),
            "updatedAt": iso(o.updated_ms),
            "archived": o.archived_ms.is_some(),
            "archivedAt": o.archived_ms.map(iso),
        })
    }

    pub(crate) fn create(
        &mut self,
        object_type: &str,
        properties: Map<String, Value>,
    ) -> (u64, Value) {
        self.next_id += 1;
        let id = self.next_id;
        let ms = self.tick();
        let object = CrmObject { properties, created_ms: ms, updated_ms: ms, archived_ms: None };
        let answer = Self::json(object_type, id, &object);
        self.objects.insert((object_type.to_owned(), id), object);
        (id, answer)
    }

    fn live(&mut self, object_type: &str, id: &str) -> Option<&mut CrmObject> {
        let id: u64 = id.parse().ok()?;
        self.objects.get_mut(&(object_type.to_owned(), id)).filter(|o| o.archived_ms.is_none())
    }

    pub(crate) fn update(
        &mut self,
        object_type: &str,
        id: &str,
        properties: &Map<String, Value>,
    ) -> Option<Value> {
        let ms = self.tick();
        let object = self.live(object_type, id)?;
        merge(&mut object.properties, properties);
        object.updated_ms = ms;
        let object = object.clone();
        Some(Self::json(object_type, id.parse().ok()?, &object))
    }

    pub(crate) fn archive(&mut self, object_type: &str, id: &str) -> bool {
        let ms = self.tick();
        match self.live(object_type, id) {
            Some(object) => {
                object.archived_ms = Some(ms);
                object.updated_ms = ms;
                true
            }
            None => false,
        }
    }

    /// Counts one request against the quota; the headers to answer with (HubSpot's, or the
    /// common `X-RateLimit-Limit` / `-Remaining` / `-Reset` in seconds).
    pub(crate) fn limit(&mut self, hubspot: bool) -> Limited {
        let Some(q) = self.quota.as_mut() else {
            return Limited { headers: Vec::new(), retry_after: None };
        };
        if q.window_start.elapsed() >= q.interval {
            q.window_start = Instant::now();
            q.used = 0;
        }
        let refused = q.used >= q.max;
        if !refused {
            q.used += 1;
        }
        let left = q.interval.saturating_sub(q.window_start.elapsed());
        let headers = if hubspot {
            vec![
                ("X-HubSpot-RateLimit-Max", q.max.to_string()),
                ("X-HubSpot-RateLimit-Remaining", (q.max - q.used).to_string()),
                ("X-HubSpot-RateLimit-Interval-Milliseconds", q.interval.as_millis().to_string()),
            ]
        } else {
            vec![
                ("X-RateLimit-Limit", q.max.to_string()),
                ("X-RateLimit-Remaining", (q.max - q.used).to_string()),
                ("X-RateLimit-Reset", (left.as_secs_f64().ceil() as u64).to_string()),
            ]
        };
        Limited { headers, retry_after: refused.then(|| left.as_secs_f64().ceil().max(1.0) as u64) }
    }

    /// The API: `Some((status, body))` for the CRM's paths.
    pub(crate) fn route(
        &mut self,
        method: &str,
        segments: &[&str],
        query: &str,
        body: &Value,
    ) -> Option<(u16, Value)> {
        let ["crm", "v3", "objects", object_type, rest @ ..] = segments else {
            return None;
        };
        if !TYPES.contains(object_type) {
            return Some((404, json!({"message": format!("unknown object type {object_type}")})));
        }
        let properties = || -> Result<Map<String, Value>, (u16, Value)> {
            body.get("properties")
                .and_then(Value::as_object)
                .cloned()
                .ok_or((400, json!({"message": "properties must be an object"})))
        };
        let result: Result<(u16, Value), (u16, Value)> = match (method, rest) {
            ("POST", []) => properties().map(|p| (201, self.create(object_type, p).1)),
            ("PATCH", [id]) => properties().and_then(|p| {
                self.update(object_type, id, &p)
                    .map(|r| (200, r))
                    .ok_or((404, json!({"message": "not found"})))
            }),
            ("DELETE", [id]) => Ok(if self.archive(object_type, id) {
                (204, Value::Null)
            } else {
                (404, json!({"message": "not found"}))
            }),
            ("GET", [id]) => match self.live(object_type, id) {
                Some(o) => {
                    let o = o.clone();
                    Ok((200, Self::json(object_type, id.parse().unwrap_or_default(), &o)))
                }
                None => Err((404, json!({"message": "not found"}))),
            },
            ("GET", []) => self.list(object_type, query),
            ("POST", ["search"]) => self.search(object_type, body),
            ("POST", ["batch", "upsert"]) => self.upsert(object_type, body),
            _ => Err((405, json!({"message": "method not allowed"}))),
        };
        Some(result.unwrap_or_else(|e| e))
    }

    /// Creates or updates each input by a unique property of ours (`idProperty`).
    fn upsert(&mut self, object_type: &str, body: &Value) -> Result<(u16, Value), (u16, Value)> {
        let inputs = body["inputs"]
            .as_array()
            .ok_or((400, json!({"message": "inputs must be an array"})))?;
        let mut results = Vec::new();
        for input in inputs {
            let (Some(key), Some(id_property), Some(properties)) = (
                input["id"].as_str(),
                input["idProperty"].as_str(),
                input["properties"].as_object(),
            ) else {
                return Err((
                    400,
                    json!({"message": "each input needs id, idProperty and properties"}),
                ));
            };
            let existing = self
                .objects
                .iter()
                .find(|((t, _), o)| {
                    t == object_type
                        && o.archived_ms.is_none()
                        && o.properties.get(id_property).and_then(Value::as_str) == Some(key)
                })
                .map(|((_, id), _)| *id);
            let mut properties = properties.clone();
            properties.insert(id_property.to_owned(), json!(key));
            results.push(match existing {
                Some(id) => {
                    self.update(object_type, &id.to_string(), &properties).unwrap_or(Value::Null)
                }
                None => self.create(object_type, properties).1,
            });
        }
        Ok((200, json!({"status": "COMPLETE", "results": results})))
    }

    fn list(&self, object_type: &str, query: &str) -> Result<(u16, Value), (u16, Value)> {
        let param = |name: &str| crate::http::query_param(query, name);
        let limit: usize = param("limit")
            .map_or(Ok(10), |v| v.parse())
            .map_err(|_| (400, json!({"message": "limit must be a number"})))?;
        if !(1..=100).contains(&limit) {
            return Err((400, json!({"message": "limit must be between 1 and 100"})));
        }
        let after: u64 = param("after")
            .map_or(Ok(0), |v| v.parse())
            .map_err(|_| (400, json!({"message": "after is not a cursor"})))?;
        let archived = param("archived").as_deref() == Some("true");
        let matching: Vec<Value> = self
            .objects
            .range((object_type.to_owned(), after + 1)..(object_type.to_owned(), u64::MAX))
            .filter(|(_, o)| o.archived_ms.is_some() == archived)
            .take(limit + 1)
            .map(|((t, id), o)| Self::json(t, *id, o))
            .collect();
        Ok((200, page(matching, limit, |r| r["id"].as_str().unwrap_or_default().to_owned())))
    }

    fn search(&self, object_type: &str, body: &Value) -> Result<(u16, Value), (u16, Value)> {
        let filter = body
            .pointer("/filterGroups/0/filters/0")
            .ok_or((400, json!({"message": "one filter is required"})))?;
        if filter["propertyName"] != "hs_lastmodifieddate" || filter["operator"] != "GT" {
            return Err((
                400,
                json!({"message": "the sandbox searches hs_lastmodifieddate GT only"}),
            ));
        }
        let after_ms: i64 = filter["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or((400, json!({"message": "value must be epoch ms"})))?;
        let limit = body["limit"].as_u64().unwrap_or(10).clamp(1, 100) as usize;
        let offset: usize = body["after"].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut found: Vec<(&(String, u64), &CrmObject)> = self
            .objects
            .iter()
            .filter(|((t, _), o)| {
                t == object_type && o.archived_ms.is_none() && o.updated_ms > after_ms
            })
            .collect();
        found.sort_by_key(|((_, id), o)| (o.updated_ms, *id));
        let total = found.len();
        let results: Vec<Value> = found
            .into_iter()
            .skip(offset)
            .take(limit + 1)
            .map(|((t, id), o)| Self::json(t, *id, o))
            .collect();
        let mut answer = page(results, limit, |_| (offset + limit).to_string());
        answer["total"] = json!(total);
        Ok((200, answer))
    }
}

/// `{results, paging.next.after}` from up to `limit + 1` results.
fn page(mut results: Vec<Value>, limit: usize, cursor: impl Fn(&Value) -> String) -> Value {
    let more = results.len() > limit;
    results.truncate(limit);
    let mut answer = json!({"results": results});
    if more && let Some(last) = results.last() {
        answer["paging"] = json!({"next": {"after": cursor(last)}});
    }
    answer
}

fn merge(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

/// How a simulated system authenticates its webhooks.
#[derive(Clone, Debug)]
pub enum WebhookSigner {
    /// An `X-API-Key` header (the ERP's way).
    ApiKey { key: String },
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    Standard { secret: String },
    /// HubSpot v3 (`X-HubSpot-Signature-v3`, `X-HubSpot-Request-Timestamp`).
    HubSpot { secret: String },
}

impl WebhookSigner {
    /// The headers for a POST of `body` to `url`, signed at `t_ms`.
    pub fn headers(
        &self,
        url: &str,
        body: &[u8],
        delivery_id: &str,
        t_ms: i64,
    ) -> Vec<(String, String)> {
        use shared::http::verify::{sign_hubspot, sign_standard};
        match self {
            WebhookSigner::ApiKey { key } => vec![("X-API-Key".into(), key.clone())],
            WebhookSigner::Standard { secret } => {
                let t = t_ms / 1000;
                let signature = sign_standard(secret, delivery_id, t, body).unwrap_or_default();
                vec![
                    ("webhook-id".into(), delivery_id.into()),
                    ("webhook-timestamp".into(), t.to_string()),
                    ("webhook-signature".into(), signature),
                ]
            }
            WebhookSigner::HubSpot { secret } => vec![
                ("X-HubSpot-Signature-v3".into(), sign_hubspot(secret, "POST", url, body, t_ms)),
                ("X-HubSpot-Request-Timestamp".into(), t_ms.to_string()),
            ],
        }
    }
}

impl SimServer {
    fn crm(&self) -> std::sync::MutexGuard<'_, crate::http::State> {
        self.state_guard()
    }

    /// Turns on a request quota of `max` requests per `interval`, with rate-limit headers on
    /// every answer and 429s once it is spent (the CRM and the ERP).
    pub fn set_quota(&self, max: u32, interval: Duration) {
        self.crm().crm.quota = Some(Quota { max, interval, window_start: Instant::now(), used: 0 });
    }

    /// A CRM user creates (`id: None`) or changes a record; returns the webhook event the CRM
    /// reports afterwards (`eventId` unique).
    pub fn crm_change(&self, object_type: &str, id: Option<&str>, properties: Value) -> Value {
        let mut state = self.crm();
        let props = properties.as_object().cloned().unwrap_or_default();
        let (id, answer, event) = match id {
            None => {
                let (id, answer) = state.crm.create(object_type, props);
                (id.to_string(), answer, "created")
            }
            Some(id) => {
                let answer = state.crm.update(object_type, id, &props).unwrap_or(Value::Null);
                (id.to_owned(), answer, "updated")
            }
        };
        json!({
            "eventId": uuid::Uuid::new_v4().to_string(),
            "event": event,
            "type": entity_of(object_type),
            "id": id,
            "timestamp": answer["updatedAt"],
            "data": answer["properties"],
        })
    }

    /// A CRM user deletes (archives) a record; returns the webhook event.
    pub fn crm_delete(&self, object_type: &str, id: &str) -> Value {
        let mut state = self.crm();
        state.crm.archive(object_type, id);
        let ms = state.crm.last_ms;
        json!({"eventId": uuid::Uuid::new_v4().to_string(), "event": "deleted",
               "type": entity_of(object_type), "id": id, "timestamp": iso(ms)})
    }

    /// A CRM object as the CRM holds it (archived ones too).
    pub fn crm_object(&self, object_type: &str, id: &str) -> Option<CrmObject> {
        let id: u64 = id.parse().ok()?;
        self.crm().crm.objects.get(&(object_type.to_owned(), id)).cloned()
    }

    /// Every live object of a type: (id, properties).
    pub fn crm_objects(&self, object_type: &str) -> Vec<(String, Map<String, Value>)> {
        self.crm()
            .crm
            .objects
            .iter()
            .filter(|((t, _), o)| t == object_type && o.archived_ms.is_none())
            .map(|((_, id), o)| (id.to_string(), o.properties.clone()))
            .collect()
    }
}

/// Delivers `events` (one event or an array) to `url`, authenticated by `signer`, as the CRM's
/// and the ERP's webhook senders do; returns the status and body.
pub async fn deliver(
    client: &reqwest::Client,
    url: &str,
    signer: &WebhookSigner,
    events: &Value,
) -> anyhow::Result<(u16, Value)> {
    let body = serde_json::to_vec(events)?;
    let delivery_id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let mut request = client.post(url).header("content-type", "application/json");
    for (k, v) in signer.headers(url, &body, &delivery_id, now_ms()) {
        request = request.header(k, v);
    }
    let response = request.body(body).send().await?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_764_583_200_123), "2025-12-01T10:00:00.123Z");
    }
}
