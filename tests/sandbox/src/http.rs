//! The HTTP systems.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

/// Which system a [`SimServer`] simulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// HubSpot's CRM objects v3 API (`/crm/v3/objects/<type>`, see [`crate::crm`]), bearer
    /// token.
    Crm,
    /// ERP REST API (`PUT /api/inventory/{sku}`), bearer token.
    Erp,
    /// Shopify-style Admin API, `X-Shopify-Access-Token`.
    Shop,
    /// Point of sale (`POST /inventory/update`), `X-API-Key`.
    Pos,
    /// Warehouse management (`PUT /api/inventory`), bearer token.
    Wms,
    /// Slack incoming webhook: the secret is the URL path.
    Slack,
    /// PagerDuty Events API v2 (`POST /v2/enqueue`): the secret is the routing key.
    PagerDuty,
}

impl System {
    /// The credential the simulated system accepts.
    pub fn credential(self) -> &'static str {
        match self {
            System::Crm => "sandbox-crm-token-0123456789",
            System::Erp => "sandbox-erp-token-0123456789",
            System::Shop => "sandbox-shop-token-0123456789",
            System::Pos => "sandbox-pos-key-0123456789",
            System::Wms => "sandbox-wms-token-0123456789",
            System::Slack => "/services/T0SANDBOX/B0SANDBOX/sandboxsecret",
            System::PagerDuty => "sandboxroutingkey0123456789abcde",
        }
    }

    /// For the connector APIs, the variables a datasync service reads to reach this system:
    /// (base URL variable, credential variable).
    pub fn connector_vars(self) -> Option<(&'static str, &'static str)> {
        match self {
            System::Crm => Some(("CRM_BASE_URL", "CRM_API_TOKEN")),
            System::Erp => Some(("ERP_BASE_URL", "ERP_API_KEY")),
            System::Shop => Some(("SHOP_BASE_URL", "SHOP_ACCESS_TOKEN")),
            System::Pos => Some(("POS_BASE_URL", "POS_API_KEY")),
            System::Wms => Some(("WMS_BASE_URL", "WMS_API_KEY")),
            System::Slack | System::PagerDuty => None,
        }
    }
}

/// A fault to answer the next request with.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status.
    Status(u16),
    /// 429 with `Retry-After: <secs>`.
    RateLimited { retry_after_secs: u64 },
    /// The request is carried out, then answered with this status (an answer lost on the way
    /// back, as a client sees it).
    StatusAfterApply(u16),
}

/// One request as the system received it, and what it answered.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The query string (without `?`), empty when there is none.
    pub query: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub status: u16,
}

#[derive(Default)]
pub(crate) struct State {
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    /// Faults for requests whose path contains the given text, checked first.
    path_faults: Vec<(String, Fault)>,
    latency: Option<Duration>,
    /// Requests received and not answered yet (waiting out the latency).
    in_flight: usize,
    /// Extra random delay, up to this, on top of `latency` (each request draws its own).
    jitter: Option<Duration>,
    /// (sku, location) -> quantity, for the stock-holding systems.
    pub(crate) levels: BTreeMap<(String, String), i64>,
    /// (collection, id) -> record, for the ERP's lists (`customers`, `orders`, `products`).
    pub(crate) erp_records: crate::erp::Records,
    /// sku -> sellable, for the shop.
    products: BTreeMap<String, bool>,
    /// The CRM's objects and quota.
    pub(crate) crm: crate::crm::CrmState,
    /// PagerDuty's alerts by `dedup_key`.
    pub(crate) incidents: BTreeMap<String, crate::alerting::Incident>,
}

struct Inner {
    system: System,
    state: Mutex<State>,
}

/// A running simulated system. Cheap to clone; the server stops with the test process.
#[derive(Clone)]
pub struct SimServer {
    inner: Arc<Inner>,
    base_url: String,
}

impl SimServer {
    /// Starts the system on a free loopback port.
    pub fn start(system: System) -> anyhow::Result<Self> {
        Self::start_on(system, 0)
    }

    /// Starts the system on `port` of 127.0.0.1 (0: a free one).
    pub fn start_on(system: System, port: u16) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner { system, state: Mutex::new(State::default()) });
        let data = web::Data::from(inner.clone());
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new().app_data(data.clone()).default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        tokio::spawn(server);
        Ok(Self { inner, base_url: format!("http://127.0.0.1:{port}") })
    }

    pub fn system(&self) -> System {
        self.inner.system
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// PagerDuty's alerts, by `dedup_key`.
    pub fn incidents(&self) -> Vec<crate::alerting::Incident> {
        self.state().incidents.values().cloned().collect()
    }

    /// The URL clients are configured with (Slack's includes its secret path).
    pub fn url(&self) -> String {
        match self.inner.system {
            System::Slack => format!("{}{}", self.base_url, System::Slack.credential()),
            _ => self.base_url.clone(),
        }
    }

    pub fn credential(&self) -> &'static str {
        self.inner.system.credential()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn state_guard(&self) -> MutexGuard<'_, State> {
        self.state()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// Requests answered with 2xx.
    pub fn accepted(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| (200..300).contains(&r.status)).collect()
    }

    /// Answers the next `n` requests with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut state = self.state();
        state.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Answers the next `n` requests whose path or query contains `path_part` with `fault`.
    pub fn fail_path(&self, path_part: &str, n: usize, fault: Fault) {
        let mut state = self.state();
        state.path_faults.extend(std::iter::repeat_n((path_part.to_owned(), fault), n));
    }

    /// Delays every answer (to simulate a slow system).
    pub fn set_latency(&self, latency: Option<Duration>) {
        self.state().latency = latency;
    }

    /// Requests received and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// Delays every answer by a random time up to `max` (so requests overtake each other).
    pub fn set_jitter(&self, max: Option<Duration>) {
        self.state().jitter = max;
    }

    /// Changes the level the system holds, as its own users do (a sale, a receipt, a count),
    /// without recording a request; returns the new level. The system reports such changes to
    /// datasync itself, after making them, as real systems do.
    pub fn change_level(&self, sku: &str, location: &str, change: impl FnOnce(i64) -> i64) -> i64 {
        let mut state = self.state();
        let level = state.levels.entry((sku.to_owned(), location.to_owned())).or_insert(0);
        *level = change(*level);
        *level
    }

    /// The stock level the system holds for `sku` at `location`.
    pub fn level(&self, sku: &str, location: &str) -> Option<i64> {
        self.state().levels.get(&(sku.to_owned(), location.to_owned())).copied()
    }

    /// Sets the level the system holds (test data for bulk loads), without recording a request.
    pub fn set_level(&self, sku: &str, location: &str, quantity: i64) {
        self.state().levels.insert((sku.to_owned(), location.to_owned()), quantity);
    }

    /// Whether the shop sells `sku` (None if never set).
    pub fn product_available(&self, sku: &str) -> Option<bool> {
        self.state().products.get(sku).copied()
    }

    /// Polls until `check` holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, check: impl Fn(&SimServer) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if check(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        check(self)
    }
}

pub(crate) fn problem(status: u16, message: &str) -> (u16, Value) {
    (status, json!({"errors": message}))
}

async fn handle(req: HttpRequest, body: web::Bytes, sim: web::Data<Inner>) -> HttpResponse {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let method = req.method().as_str().to_owned();
    let path = req.path().to_owned();
    if method == "GET" && path == "/_sandbox/requests" {
        // Inspection for people trying the platform locally (no credentials: loopback only).
        let requests: Vec<Value> = sim
            .state
            .lock()
            .map(|s| {
                s.requests
                    .iter()
                    .map(|r| json!({"method": r.method, "path": r.path, "status": r.status, "body": r.body}))
                    .collect()
            })
            .unwrap_or_default();
        return HttpResponse::Ok().json(requests);
    }
    let (latency, jitter) = {
        let mut state = sim.state.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight += 1;
        (state.latency, state.jitter)
    };
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    if let Some(jitter) = jitter {
        tokio::time::sleep(jitter.mul_f64(rand::random::<f64>())).await;
    }
    let (status, response, retry_after, extra_headers) = {
        let mut state = sim.state.lock().unwrap_or_else(|p| p.into_inner());
        let authorized = authorized(sim.system, &headers, &path, parsed.as_ref());
        let limited = (authorized && matches!(sim.system, System::Crm | System::Erp))
            .then(|| state.crm.limit(sim.system == System::Crm));
        let (status, response, retry_after) = if !authorized {
            let (s, b) = problem(401, "invalid credentials");
            (s, b, None)
        } else if let Some(l) = limited.as_ref().filter(|l| l.refused) {
            // HubSpot answers its rolling window's 429 with its own body and no `Retry-After`;
            // the ERP with a problem document and `Retry-After`.
            let body = if sim.system == System::Crm {
                json!({"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
                    "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING",
                    "correlationId": uuid::Uuid::new_v4().to_string(),
                    "requestId": uuid::Uuid::new_v4().to_string()})
            } else {
                problem(429, "rate limit exceeded").1
            };
            (429, body, l.retry_after)
        } else if let Some(fault) = state
            .path_faults
            .iter()
            .position(|(part, _)| {
                path.contains(part.as_str()) || req.query_string().contains(part.as_str())
            })
            .map(|i| state.path_faults.remove(i).1)
            .or_else(|| state.faults.pop_front())
        {
            match fault {
                Fault::Status(s) => (s, json!({"errors": "injected fault"}), None),
                Fault::StatusAfterApply(s) => {
                    route(
                        sim.system,
                        &mut state,
                        &method,
                        &path,
                        req.query_string(),
                        parsed.as_ref().unwrap_or(&Value::Null),
                    );
                    (s, json!({"errors": "injected fault after the request was carried out"}), None)
                }
                Fault::RateLimited { retry_after_secs } => {
                    (429, json!({"errors": "rate limited"}), Some(retry_after_secs))
                }
            }
        } else {
            let (s, b) = match parsed.as_ref() {
                _ if sim.system == System::Slack && method == "POST" => {
                    let (s, text) = crate::alerting::slack(
                        path == System::Slack.credential(),
                        headers.get("content-type").map(String::as_str),
                        &body,
                    );
                    (s, Value::from(text))
                }
                None if sim.system == System::PagerDuty => crate::alerting::pagerduty(
                    &mut state.incidents,
                    System::PagerDuty.credential(),
                    None,
                ),
                None if !body.is_empty() => problem(400, "body is not JSON"),
                _ => route(
                    sim.system,
                    &mut state,
                    &method,
                    &path,
                    req.query_string(),
                    parsed.as_ref().unwrap_or(&Value::Null),
                ),
            };
            (s, b, None)
        };
        state.in_flight -= 1;
        state.requests.push(Recorded {
            method,
            path,
            query: req.query_string().to_owned(),
            headers,
            body: parsed.unwrap_or(Value::Null),
            status,
        });
        (status, response, retry_after, limited.map(|l| l.headers).unwrap_or_default())
    };
    let mut builder = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    );
    if let Some(secs) = retry_after {
        builder.insert_header(("Retry-After", secs.to_string()));
    }
    for (name, value) in extra_headers {
        builder.insert_header((name, value));
    }
    if status == 204 {
        return builder.finish();
    }
    if let (System::Slack, Value::String(text)) = (sim.system, &response) {
        // Slack answers in plain text: `ok` or the error's name.
        return builder.content_type("text/plain").body(text.clone());
    }
    builder.json(response)
}

fn authorized(
    system: System,
    headers: &BTreeMap<String, String>,
    path: &str,
    body: Option<&Value>,
) -> bool {
    let bearer = headers.get("authorization").and_then(|v| v.strip_prefix("Bearer "));
    match system {
        System::Crm | System::Erp | System::Wms => bearer == Some(system.credential()),
        System::Shop => {
            headers.get("x-shopify-access-token").map(String::as_str) == Some(system.credential())
        }
        System::Pos => headers.get("x-api-key").map(String::as_str) == Some(system.credential()),
        // Their own validation answers as they do (`404 no_service`, `400 invalid event`).
        System::Slack | System::PagerDuty => {
            let _ = (path, body);
            true
        }
    }
}

pub(crate) fn str_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, (u16, Value)> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| problem(422, &format!("{name} is required and must be a string")))
}

pub(crate) fn int_field(body: &Value, name: &str) -> Result<i64, (u16, Value)> {
    body.get(name)
        .and_then(Value::as_i64)
        .ok_or_else(|| problem(422, &format!("{name} is required and must be an integer")))
}

/// The decoded value of query parameter `name`.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

pub(crate) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The level at (sku, location), or a 404.
pub(crate) fn held(state: &State, sku: &str, location: &str) -> Result<i64, (u16, Value)> {
    state
        .levels
        .get(&(sku.to_owned(), location.to_owned()))
        .copied()
        .ok_or_else(|| problem(404, "no such inventory level"))
}

fn route(
    system: System,
    state: &mut State,
    method: &str,
    path: &str,
    query: &str,
    body: &Value,
) -> (u16, Value) {
    let result: Result<(u16, Value), (u16, Value)> = (|| {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (system, method, segments.as_slice()) {
            (System::Erp, _, ["api", "customers" | "orders" | "products", ..]) => {
                crate::erp::route(&mut state.erp_records, method, &segments[1..], query, body)
            }
            (System::Erp, _, ["api", "inventory", ..]) => {
                crate::erp::inventory_route(state, method, &segments[2..], query, body)
            }
            (System::Shop, "GET", ["admin", "api", _, "inventory_levels.json"]) => {
                // Comma lists of items and locations; every level that exists of the pairs.
                let list = |name: &str| -> Result<Vec<String>, (u16, Value)> {
                    let raw = query
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(k, _)| *k == name)
                        .map(|(_, v)| v)
                        .ok_or_else(|| problem(400, &format!("{name} is required")))?;
                    Ok(raw.split(',').map(percent_decode).collect())
                };
                let (items, locations) = (list("inventory_item_ids")?, list("location_ids")?);
                if items.len() > 50 || locations.len() > 50 {
                    return Err(problem(422, "at most 50 ids per list"));
                }
                let mut levels = Vec::new();
                for item in &items {
                    for location in &locations {
                        if let Ok(available) = held(state, item, location) {
                            levels.push(json!({"inventory_item_id": item, "location_id": location, "available": available}));
                        }
                    }
                }
                Ok((200, json!({"inventory_levels": levels})))
            }
            (System::Shop, "POST", ["admin", "api", _, "inventory_levels", "set.json"]) => {
                let item = str_field(body, "inventory_item_id")?;
                let location = str_field(body, "location_id")?;
                let available = int_field(body, "available")?;
                state.levels.insert((item.to_owned(), location.to_owned()), available);
                Ok((
                    200,
                    json!({"inventory_level": {
                    "inventory_item_id": item, "location_id": location, "available": available}}),
                ))
            }
            (System::Shop, "PUT", ["admin", "api", _, "products", file]) => {
                let sku = file.strip_suffix(".json").ok_or_else(|| problem(404, "not found"))?;
                let product =
                    body.get("product").ok_or_else(|| problem(422, "product is required"))?;
                let available = product
                    .get("available")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| problem(422, "product.available must be a boolean"))?;
                let policy = str_field(product, "inventory_policy")?;
                if !matches!(policy, "deny" | "continue") {
                    return Err(problem(422, "product.inventory_policy must be deny or continue"));
                }
                state.products.insert(sku.to_owned(), available);
                Ok((
                    200,
                    json!({"product": {"id": sku, "available": available, "inventory_policy": policy}}),
                ))
            }
            (System::Pos, "GET", ["inventory", item]) => {
                let item = percent_decode(item);
                let location = query_param(query, "location_id")
                    .ok_or_else(|| problem(400, "location_id is required"))?;
                let qty = held(state, &item, &location)?;
                Ok((200, json!({"item_id": item, "location_id": location, "quantity": qty})))
            }
            (System::Pos, "POST", ["inventory", "update"]) => {
                let item = str_field(body, "item_id")?;
                let location = str_field(body, "location_id")?;
                let qty = int_field(body, "quantity")?;
                state.levels.insert((item.to_owned(), location.to_owned()), qty);
                Ok((200, json!({"status": "ok"})))
            }
            (System::Wms, "GET", ["api", "inventory"]) => {
                let sku =
                    query_param(query, "sku").ok_or_else(|| problem(400, "sku is required"))?;
                let location = query_param(query, "location")
                    .ok_or_else(|| problem(400, "location is required"))?;
                let qty = held(state, &sku, &location)?;
                Ok((200, json!({"sku": sku, "location": location, "qty": qty})))
            }
            (System::Wms, "PUT", ["api", "inventory"]) => {
                let sku = str_field(body, "sku")?;
                let location = str_field(body, "location")?;
                let qty = int_field(body, "qty")?;
                state.levels.insert((sku.to_owned(), location.to_owned()), qty);
                Ok((200, json!({"sku": sku, "location": location, "qty": qty})))
            }
            (System::Crm, _, _) => state
                .crm
                .route(method, &segments, query, body)
                .ok_or_else(|| problem(404, "no such endpoint")),
            (System::PagerDuty, "POST", ["v2", "enqueue"]) => Ok(crate::alerting::pagerduty(
                &mut state.incidents,
                System::PagerDuty.credential(),
                (!body.is_null()).then_some(body),
            )),
            _ => Err(problem(404, "no such endpoint")),
        }
    })();
    result.unwrap_or_else(|e| e)
}
