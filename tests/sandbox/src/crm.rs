//! The simulated CRM: HubSpot's CRM objects v3 API over contacts, companies and deals, as a
//! HubSpot portal speaks it.
//!
//! - Properties by HubSpot's internal names ([`known_properties`], plus the unique custom
//!   property `datasync_id` and any added with [`SimServer::crm_define_property`]), every value
//!   a string (`""` clears). An unknown property is a `400` `VALIDATION_ERROR` naming it
//!   (`PROPERTY_DOESNT_EXIST`); a value of the wrong form (a number property that is not a
//!   number, an email without `@`, a non-string) is that input's `VALIDATION_ERROR`.
//! - `POST /crm/v3/objects/<type>` `{properties}` → 201; `PATCH .../<id>`; `DELETE .../<id>`
//!   archives; `GET .../<id>?properties=` (404 once archived); `GET ?limit=&after=&archived=
//!   &properties=` lists by id with a cursor; `POST .../search` finds records modified after a
//!   time (`hs_lastmodifieddate GT <ms>`), oldest first. Reads return the requested
//!   properties (`null` when unset) beside `hs_object_id`, `createdate` and
//!   `hs_lastmodifieddate`.
//! - Batches of up to 100 inputs: `batch/read` (`{properties, inputs: [{id}]}`),
//!   `batch/create`, `batch/update`, `batch/upsert` (`idProperty`). All inputs fine: `200`
//!   (`201` for creates); some refused: `207 Multi-Status` `{status: "COMPLETE", results,
//!   errors: [{status: "error", category, message, context}], numErrors}` where `context`
//!   names the input (`ids` or `objectWriteTraceId`).
//! - A rolling request quota (off unless set): every answer carries `X-HubSpot-RateLimit-Max`,
//!   `-Remaining` and `-Interval-Milliseconds`; an exhausted window answers `429`
//!   with HubSpot's body (`errorType: RATE_LIMIT`, `policyName: TEN_SECONDLY_ROLLING`) and
//!   without `Retry-After`, as HubSpot does.
//! - The CRM's own users change records ([`SimServer::crm_change`], [`SimServer::crm_delete`],
//!   [`SimServer::crm_merge`], [`SimServer::crm_restore`]); the change is made first, then
//!   reported as HubSpot's webhook events (an array) that the test delivers, signed with
//!   HubSpot v3 or Standard Webhooks ([`WebhookSigner`]).

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
    /// Custom properties defined beside HubSpot's: (object type, name).
    custom: std::collections::BTreeSet<(String, String)>,
    next_event: u64,
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
    pub refused: bool,
    /// `Retry-After` to send with the refusal (never for the CRM: HubSpot sends none).
    pub retry_after: Option<u64>,
}

const TYPES: [&str; 3] = ["contacts", "companies", "deals"];

/// How HubSpot checks a property's value.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PropKind {
    Text,
    Number,
    DateTime,
    Email,
    /// Set by HubSpot itself.
    ReadOnly,
}

/// HubSpot's standard properties the sandbox knows, per object type (a portal has many more;
/// these are the ones a sync uses).
fn known_properties(object_type: &str) -> &'static [(&'static str, PropKind)] {
    use PropKind::*;
    match object_type {
        "contacts" => &[
            ("hs_object_id", ReadOnly),
            ("createdate", ReadOnly),
            ("hs_lastmodifieddate", ReadOnly),
            ("lastmodifieddate", ReadOnly),
            ("hs_analytics_source", ReadOnly),
            ("firstname", Text),
            ("lastname", Text),
            ("email", Email),
            ("phone", Text),
            ("mobilephone", Text),
            ("company", Text),
            ("jobtitle", Text),
            ("website", Text),
            ("hs_lead_status", Text),
            ("lifecyclestage", Text),
            ("address", Text),
            ("city", Text),
            ("state", Text),
            ("zip", Text),
            ("country", Text),
        ],
        "companies" => &[
            ("hs_object_id", ReadOnly),
            ("createdate", ReadOnly),
            ("hs_lastmodifieddate", ReadOnly),
            ("name", Text),
            ("domain", Text),
            ("website", Text),
            ("industry", Text),
            ("phone", Text),
            ("annualrevenue", Number),
            ("numberofemployees", Number),
            ("address", Text),
            ("address2", Text),
            ("city", Text),
            ("state", Text),
            ("zip", Text),
            ("country", Text),
            ("description", Text),
            ("lifecyclestage", Text),
        ],
        _ => &[
            ("hs_object_id", ReadOnly),
            ("createdate", ReadOnly),
            ("hs_lastmodifieddate", ReadOnly),
            ("dealname", Text),
            ("amount", Number),
            ("dealstage", Text),
            ("pipeline", Text),
            ("closedate", DateTime),
            ("hs_deal_stage_probability", Number),
            ("hs_forecast_probability", Number),
            ("dealtype", Text),
            ("description", Text),
        ],
    }
}

/// The webhook object name of an object type.
fn event_object(object_type: &str) -> &'static str {
    match object_type {
        "contacts" => "contact",
        "companies" => "company",
        _ => "deal",
    }
}

/// The seed format's `type` of an object type.
fn seed_type(object_type: &str) -> &'static str {
    match object_type {
        "contacts" => "contact",
        "companies" => "account",
        _ => "opportunity",
    }
}

/// HubSpot's error body.
fn hubspot_error(category: &str, message: &str, context: Value) -> Value {
    json!({"status": "error", "category": category, "message": message, "context": context,
           "correlationId": uuid::Uuid::new_v4().to_string()})
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

    /// The object as HubSpot answers it: the `requested` properties (`null` when unset) and
    /// the ones HubSpot always sends.
    fn json(id: u64, o: &CrmObject, requested: &[String]) -> Value {
        let mut properties = Map::new();
        for name in requested {
            properties.insert(name.clone(), o.properties.get(name).cloned().unwrap_or(Value::Null));
        }
        properties.insert("hs_object_id".into(), json!(id.to_string()));
        properties.insert("createdate".into(), json!(iso(o.created_ms)));
        properties.insert("hs_lastmodifieddate".into(), json!(iso(o.updated_ms)));
        json!({
            "id": id.to_string(),
            "properties": properties,
            "createdAt": iso(o.created_ms),
            "updatedAt": iso(o.updated_ms),
            "archived": o.archived_ms.is_some(),
            "archivedAt": o.archived_ms.map(iso),
        })
    }

    fn kind_of(&self, object_type: &str, name: &str) -> Option<PropKind> {
        // `datasync_id`: the unique custom property a portal's admin creates for datasync.
        let custom = name == "datasync_id"
            || self.custom.contains(&(object_type.to_owned(), name.to_owned()));
        known_properties(object_type)
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, k)| *k)
            .or(custom.then_some(PropKind::Text))
    }

    /// Checks the names of `properties` (an unknown or read-only one refuses the request: a
    /// 400 `VALIDATION_ERROR`) and their values (a wrong one refuses only its input: `Err`
    /// with the message).
    fn check(
        &self,
        object_type: &str,
        properties: &Value,
    ) -> Result<Result<Map<String, Value>, String>, (u16, Value)> {
        let Some(properties) = properties.as_object() else {
            return Err((
                400,
                hubspot_error("VALIDATION_ERROR", "properties must be an object", json!({})),
            ));
        };
        let unknown: Vec<&String> = properties
            .keys()
            .filter(|k| matches!(self.kind_of(object_type, k), None | Some(PropKind::ReadOnly)))
            .collect();
        if let Some(name) = unknown.first() {
            let detail = json!([{"isValid": false, "message": format!("Property \"{name}\" does not exist"),
                "error": "PROPERTY_DOESNT_EXIST", "name": name}]);
            return Err((
                400,
                json!({"status": "error", "category": "VALIDATION_ERROR",
                    "message": format!("Property values were not valid: {detail}"),
                    "errors": [{"message": format!("Property \"{name}\" does not exist"),
                                "code": "PROPERTY_DOESNT_EXIST", "context": {"propertyName": [name]}}],
                    "correlationId": uuid::Uuid::new_v4().to_string()}),
            ));
        }
        for (name, value) in properties {
            let Some(text) = value.as_str() else {
                return Ok(Err(format!(
                    "Property \"{name}\": values must be strings, got {value}"
                )));
            };
            let ok = text.is_empty()
                || match self.kind_of(object_type, name) {
                    Some(PropKind::Number) => text.parse::<f64>().is_ok(),
                    Some(PropKind::DateTime) => {
                        text.parse::<i64>().is_ok()
                            || (text.len() >= 10
                                && text.as_bytes()[4] == b'-'
                                && text.as_bytes()[7] == b'-')
                    }
                    Some(PropKind::Email) => text.contains('@'),
                    _ => true,
                };
            if !ok {
                return Ok(Err(format!("Property \"{name}\": {text:?} is not a valid value")));
            }
        }
        Ok(Ok(properties.clone()))
    }

    pub(crate) fn create(
        &mut self,
        object_type: &str,
        properties: Map<String, Value>,
    ) -> (u64, Value) {
        self.next_id += 1;
        let id = self.next_id;
        let ms = self.tick();
        let mut object =
            CrmObject { properties: Map::new(), created_ms: ms, updated_ms: ms, archived_ms: None };
        set(&mut object.properties, &properties);
        let names: Vec<String> = properties.keys().cloned().collect();
        let answer = Self::json(id, &object, &names);
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
        set(&mut object.properties, properties);
        object.updated_ms = ms;
        let object = object.clone();
        let names: Vec<String> = properties.keys().cloned().collect();
        Some(Self::json(id.parse().ok()?, &object, &names))
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
    /// common `X-RateLimit-Limit` / `-Remaining` / `-Reset` in seconds, with `Retry-After` on a
    /// refusal).
    pub(crate) fn limit(&mut self, hubspot: bool) -> Limited {
        let Some(q) = self.quota.as_mut() else {
            return Limited { headers: Vec::new(), refused: false, retry_after: None };
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
        let retry_after = (refused && !hubspot).then(|| left.as_secs_f64().ceil().max(1.0) as u64);
        Limited { headers, refused, retry_after }
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
            return Some((
                404,
                hubspot_error(
                    "OBJECT_NOT_FOUND",
                    &format!("unknown object type {object_type}"),
                    json!({}),
                ),
            ));
        }
        let requested: Vec<String> = crate::http::query_param(query, "properties")
            .map(|p| p.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default();
        let not_found =
            || (404, hubspot_error("OBJECT_NOT_FOUND", "resource not found", json!({})));
        let result: Result<(u16, Value), (u16, Value)> = match (method, rest) {
            ("POST", []) => match self.check(object_type, &body["properties"]) {
                Ok(Ok(p)) => Ok((201, self.create(object_type, p).1)),
                Ok(Err(message)) => {
                    Err((400, hubspot_error("VALIDATION_ERROR", &message, json!({}))))
                }
                Err(e) => Err(e),
            },
            ("PATCH", [id]) => match self.check(object_type, &body["properties"]) {
                Ok(Ok(p)) => {
                    self.update(object_type, id, &p).map(|r| (200, r)).ok_or_else(not_found)
                }
                Ok(Err(message)) => {
                    Err((400, hubspot_error("VALIDATION_ERROR", &message, json!({}))))
                }
                Err(e) => Err(e),
            },
            ("DELETE", [id]) => {
                if self.archive(object_type, id) {
                    Ok((204, Value::Null))
                } else {
                    Err(not_found())
                }
            }
            ("GET", [id]) => match self.live(object_type, id) {
                Some(o) => {
                    let o = o.clone();
                    Ok((200, Self::json(id.parse().unwrap_or_default(), &o, &requested)))
                }
                None => Err(not_found()),
            },
            ("GET", []) => self.list(object_type, query, &requested),
            ("POST", ["search"]) => self.search(object_type, body),
            ("POST", ["batch", action @ ("read" | "create" | "update" | "upsert")]) => {
                self.batch(object_type, action, body)
            }
            _ => Err((405, hubspot_error("INVALID_METHOD", "method not allowed", json!({})))),
        };
        Some(result.unwrap_or_else(|e| e))
    }

    /// The batch endpoints: each input on its own; `207` when some are refused.
    fn batch(
        &mut self,
        object_type: &str,
        action: &str,
        body: &Value,
    ) -> Result<(u16, Value), (u16, Value)> {
        let inputs = body["inputs"].as_array().ok_or((
            400,
            hubspot_error("VALIDATION_ERROR", "inputs must be an array", json!({})),
        ))?;
        if inputs.len() > 100 {
            return Err((400, hubspot_error("VALIDATION_ERROR", "at most 100 inputs", json!({}))));
        }
        let requested: Vec<String> = body["properties"]
            .as_array()
            .map(|p| p.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
        // Names first: an unknown property refuses the whole request.
        let mut checked = Vec::new();
        for input in inputs {
            checked.push(if action == "read" {
                Ok(Map::new())
            } else {
                self.check(object_type, &input["properties"])?
            });
        }
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (input, props) in inputs.iter().zip(checked) {
            let trace = input["objectWriteTraceId"].as_str().map(str::to_owned);
            let id = input["id"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| input["id"].as_u64().map(|n| n.to_string()));
            let context = |id: &Option<String>| match (&trace, id) {
                (Some(t), _) => json!({"objectWriteTraceId": [t]}),
                (None, Some(id)) => json!({"ids": [id]}),
                (None, None) => json!({}),
            };
            let props = match props {
                Ok(p) => p,
                Err(message) => {
                    errors.push(hubspot_error("VALIDATION_ERROR", &message, context(&id)));
                    continue;
                }
            };
            match action {
                "read" => match id
                    .as_deref()
                    .and_then(|id| self.live(object_type, id).cloned().map(|o| (id.to_owned(), o)))
                {
                    Some((id, o)) => {
                        results.push(Self::json(id.parse().unwrap_or_default(), &o, &requested))
                    }
                    None => errors.push(hubspot_error(
                        "OBJECT_NOT_FOUND",
                        "Could not get some objects, they may be deleted or not exist.",
                        context(&id),
                    )),
                },
                "create" => results.push(self.create(object_type, props).1),
                "update" => match id.as_deref().and_then(|id| self.update(object_type, id, &props))
                {
                    Some(r) => results.push(r),
                    None => errors.push(hubspot_error(
                        "OBJECT_NOT_FOUND",
                        "resource not found",
                        context(&id),
                    )),
                },
                _ => {
                    let (Some(key), Some(id_property)) = (id.clone(), input["idProperty"].as_str())
                    else {
                        errors.push(hubspot_error(
                            "VALIDATION_ERROR",
                            "each input needs id and idProperty",
                            context(&id),
                        ));
                        continue;
                    };
                    if self.kind_of(object_type, id_property) != Some(PropKind::Text) {
                        return Err((
                            400,
                            hubspot_error(
                                "VALIDATION_ERROR",
                                &format!(
                                    "Property \"{id_property}\" does not exist or is not unique"
                                ),
                                json!({}),
                            ),
                        ));
                    }
                    let existing = self
                        .objects
                        .iter()
                        .find(|((t, _), o)| {
                            t == object_type
                                && o.archived_ms.is_none()
                                && o.properties.get(id_property).and_then(Value::as_str)
                                    == Some(key.as_str())
                        })
                        .map(|((_, id), _)| *id);
                    let mut props = props;
                    props.insert(id_property.to_owned(), json!(key));
                    let mut result = match existing {
                        Some(id) => {
                            self.update(object_type, &id.to_string(), &props).unwrap_or(Value::Null)
                        }
                        None => self.create(object_type, props).1,
                    };
                    result["new"] = json!(existing.is_none());
                    results.push(result);
                }
            }
        }
        let now = iso(now_ms());
        let mut answer =
            json!({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now});
        if errors.is_empty() {
            return Ok((if action == "create" { 201 } else { 200 }, answer));
        }
        answer["numErrors"] = json!(errors.len());
        answer["errors"] = Value::Array(errors);
        Ok((207, answer))
    }

    fn list(
        &self,
        object_type: &str,
        query: &str,
        requested: &[String],
    ) -> Result<(u16, Value), (u16, Value)> {
        let param = |name: &str| crate::http::query_param(query, name);
        let bad = |m: &str| (400, hubspot_error("VALIDATION_ERROR", m, json!({})));
        let limit: usize = param("limit")
            .map_or(Ok(10), |v| v.parse())
            .map_err(|_| bad("limit must be a number"))?;
        if !(1..=100).contains(&limit) {
            return Err(bad("limit must be between 1 and 100"));
        }
        let after: u64 = param("after")
            .map_or(Ok(0), |v| v.parse())
            .map_err(|_| bad("after is not a cursor"))?;
        let archived = param("archived").as_deref() == Some("true");
        let matching: Vec<Value> = self
            .objects
            .range((object_type.to_owned(), after + 1)..(object_type.to_owned(), u64::MAX))
            .filter(|(_, o)| o.archived_ms.is_some() == archived)
            .take(limit + 1)
            .map(|((_, id), o)| Self::json(*id, o, requested))
            .collect();
        Ok((200, page(matching, limit, |r| r["id"].as_str().unwrap_or_default().to_owned())))
    }

    fn search(&self, object_type: &str, body: &Value) -> Result<(u16, Value), (u16, Value)> {
        let bad = |m: &str| (400, hubspot_error("VALIDATION_ERROR", m, json!({})));
        let filter = body
            .pointer("/filterGroups/0/filters/0")
            .ok_or_else(|| bad("one filter is required"))?;
        if filter["propertyName"] != "hs_lastmodifieddate" || filter["operator"] != "GT" {
            return Err(bad("the sandbox searches hs_lastmodifieddate GT only"));
        }
        let after_ms: i64 = filter["value"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("value must be epoch ms"))?;
        let requested: Vec<String> = body["properties"]
            .as_array()
            .map(|p| p.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default();
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
            .map(|((_, id), o)| Self::json(*id, o, &requested))
            .collect();
        let mut answer = page(results, limit, |_| (offset + limit).to_string());
        answer["total"] = json!(total);
        Ok((200, answer))
    }

    /// One of HubSpot's webhook events about `object_type` `id`.
    fn event(&mut self, object_type: &str, change: &str, id: u64, at: i64, extra: Value) -> Value {
        self.next_event += 1;
        let mut event = json!({
            "eventId": 1_000 + self.next_event, "subscriptionId": 1, "portalId": 62515,
            "appId": 54321, "occurredAt": at,
            "subscriptionType": format!("{}.{change}", event_object(object_type)),
            "attemptNumber": 0, "objectId": id, "changeSource": "CRM",
        });
        if let (Value::Object(e), Value::Object(extra)) = (&mut event, extra) {
            e.extend(extra);
        }
        event
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

/// Sets properties as HubSpot stores them: `""` clears one.
fn set(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match v.as_str() {
            Some("") | None => {
                into.remove(k);
            }
            Some(_) => {
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

    /// Defines a custom property (as a portal's admin does, e.g. a field map's target).
    pub fn crm_define_property(&self, object_type: &str, name: &str) {
        self.crm().crm.custom.insert((object_type.to_owned(), name.to_owned()));
    }

    /// A CRM user creates (`id: None`) or changes a record (HubSpot's names, string values;
    /// `""` clears); returns HubSpot's webhook events for it, an array: one `.creation`, or
    /// one `.propertyChange` per property, stamped with the change's time.
    pub fn hubspot_change(&self, object_type: &str, id: Option<&str>, properties: Value) -> Value {
        let mut state = self.crm();
        let props = properties.as_object().cloned().unwrap_or_default();
        match id {
            None => {
                let (id, _) = state.crm.create(object_type, props);
                let at = state.crm.last_ms;
                json!([state.crm.event(object_type, "creation", id, at, json!({}))])
            }
            Some(id) => {
                state.crm.update(object_type, id, &props);
                let at = state.crm.last_ms;
                let n: u64 = id.parse().unwrap_or_default();
                let events: Vec<Value> = props
                    .iter()
                    .map(|(name, value)| {
                        state.crm.event(
                            object_type,
                            "propertyChange",
                            n,
                            at,
                            json!({"propertyName": name, "propertyValue": value}),
                        )
                    })
                    .collect();
                Value::Array(events)
            }
        }
    }

    /// A CRM user deletes (archives) a record; returns the `.deletion` event (an array).
    pub fn hubspot_delete(&self, object_type: &str, id: &str) -> Value {
        let mut state = self.crm();
        state.crm.archive(object_type, id);
        let at = state.crm.last_ms;
        json!([state.crm.event(
            object_type,
            "deletion",
            id.parse().unwrap_or_default(),
            at,
            json!({})
        )])
    }

    /// A CRM user restores an archived record; returns the `.restore` event (an array).
    pub fn crm_restore(&self, object_type: &str, id: &str) -> Value {
        let mut state = self.crm();
        let ms = state.crm.tick();
        let n: u64 = id.parse().unwrap_or_default();
        if let Some(o) = state.crm.objects.get_mut(&(object_type.to_owned(), n)) {
            o.archived_ms = None;
            o.updated_ms = ms;
        }
        json!([state.crm.event(object_type, "restore", n, ms, json!({}))])
    }

    /// A CRM user merges `merged` into `primary`: the primary keeps its id and takes the
    /// merged record's properties it lacks; the merged one is archived. Returns the `.merge`
    /// event (an array).
    pub fn crm_merge(&self, object_type: &str, primary: &str, merged: &str) -> Value {
        let mut state = self.crm();
        let ms = state.crm.tick();
        let (p, m): (u64, u64) =
            (primary.parse().unwrap_or_default(), merged.parse().unwrap_or_default());
        let loser =
            state.crm.objects.get(&(object_type.to_owned(), m)).map(|o| o.properties.clone());
        if let Some(o) = state.crm.objects.get_mut(&(object_type.to_owned(), m)) {
            o.archived_ms = Some(ms);
            o.updated_ms = ms;
        }
        if let (Some(o), Some(loser)) =
            (state.crm.objects.get_mut(&(object_type.to_owned(), p)), loser)
        {
            for (k, v) in loser {
                o.properties.entry(k).or_insert(v);
            }
            o.updated_ms = ms;
        }
        json!([state.crm.event(
            object_type,
            "merge",
            p,
            ms,
            json!({
            "primaryObjectId": p, "mergedObjectIds": [m], "newObjectId": p,
            "numberOfPropertiesMoved": 0})
        )])
    }

    /// [`SimServer::hubspot_change`] reported in the seed's format instead:
    /// `{eventId, event, type, id, timestamp, data}` with the record's properties as the CRM
    /// holds them (HubSpot's names, string values).
    pub fn crm_change(&self, object_type: &str, id: Option<&str>, properties: Value) -> Value {
        let events = self.hubspot_change(object_type, id, properties);
        let first = &events[0];
        let id = first["objectId"].as_u64().unwrap_or_default().to_string();
        let object = self.crm_object(object_type, &id);
        json!({
            "eventId": uuid::Uuid::new_v4().to_string(),
            "event": if first["subscriptionType"].as_str().is_some_and(|t| t.ends_with(".creation")) { "created" } else { "updated" },
            "type": seed_type(object_type),
            "id": id,
            "timestamp": iso(first["occurredAt"].as_i64().unwrap_or_default()),
            "data": object.map(|o| o.properties).unwrap_or_default(),
        })
    }

    /// [`SimServer::hubspot_delete`] in the seed's format.
    pub fn crm_delete(&self, object_type: &str, id: &str) -> Value {
        let events = self.hubspot_delete(object_type, id);
        json!({"eventId": uuid::Uuid::new_v4().to_string(), "event": "deleted",
               "type": seed_type(object_type), "id": id,
               "timestamp": iso(events[0]["occurredAt"].as_i64().unwrap_or_default())})
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
