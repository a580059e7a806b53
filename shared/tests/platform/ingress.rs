//! The webhook ingress over real HTTP, NATS and PostgreSQL: verify, publish once per delivery,
//! answer 202 with the event ids, report each event's status.

use std::time::Duration;

use harness::{TestApp, TestDb, TestNats};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::{
    app::Application,
    bus::{ConsumerSpec, HandlerError, streams},
    http::{
        ApiError, AuthConfig,
        verify::{Scheme, Verified, sign_hubspot, sign_standard},
    },
    ingress::{EventStatus, InboundEvent, WebhookSource},
    platform::{Platform, ServiceSpec},
};

const CRM_SECRET: &str = "whsec_c2VjcmV0LWZvci10aGUtY3JtLXdlYmhvb2tzLTAxMjM=";
const HUBSPOT_SECRET: &str = "hubspot-app-client-secret";
const ERP_KEY: &str = "erp-webhook-key-0123456789";

/// A CRM event body: `{id, type, data}` with the entity in `type` (`contact.updated`).
fn parse_crm(verified: &Verified, body: &[u8]) -> Result<Vec<InboundEvent>, ApiError> {
    let value: Value = shared::http::parse_json(body)?;
    let events = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    events
        .into_iter()
        .map(|event| {
            let id = event
                .get("eventId")
                .map(|id| id.to_string())
                .or_else(|| verified.delivery_id.clone())
                .ok_or_else(|| ApiError::field("eventId", "eventId is required"))?;
            let entity = event
                .get("objectType")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::field("objectType", "objectType is required"))?
                .to_owned();
            Ok(InboundEvent { id, entity, data: event })
        })
        .collect()
}

struct Fixture {
    app: TestApp,
    nats: TestNats,
    db: TestDb,
}

async fn spawn(max_body: usize) -> Fixture {
    harness::init_logs();
    let db = TestDb::new().await;
    let nats = TestNats::new();
    let mut config = harness::common_config("crm-sync", &db, &nats);
    config.max_body = max_body;
    let spec = ServiceSpec {
        schema: "crm",
        streams: &[&streams::WEBHOOKS, &streams::SYNC_EVENTS],
        openapi: shared::app::described("ingress test"),
        settings: None,
    };
    let platform = Platform::start(&config, spec).await.unwrap();
    let named = |name: &str, secret: &str| vec![(name.to_owned(), SecretString::from(secret))];
    platform
        .run_ingress(vec![
            WebhookSource {
                system: "crm",
                schemes: vec![
                    Scheme::StandardWebhooks(named("crm", CRM_SECRET)),
                    Scheme::HubSpotV3(named("crm", HUBSPOT_SECRET)),
                    Scheme::ApiKey(named("erp", ERP_KEY)),
                ],
                parse: parse_crm,
            },
            WebhookSource {
                system: "erp",
                schemes: vec![Scheme::ApiKey(named("erp", ERP_KEY))],
                parse: parse_crm,
            },
        ])
        .unwrap();
    // The consumer that applies CRM contacts: a contact named "poison" can never be applied.
    let spec = ConsumerSpec {
        max_deliver: 2,
        ..ConsumerSpec::new("crm-contacts", &streams::WEBHOOKS, "webhooks.crm.contact")
    };
    let consumer_platform = platform.clone();
    platform.spawn_consumer(spec, move |delivery: shared::bus::Delivery<Value>| {
        let platform = consumer_platform.clone();
        async move {
            if delivery.envelope.data["name"] == "poison" {
                return Err(HandlerError::Permanent(anyhow::anyhow!("contact cannot be applied")));
            }
            let mut conn = platform.db.get().await.map_err(anyhow::Error::from)?;
            let status = vec![(delivery.envelope.id, EventStatus::Applied, None)];
            shared::ingress::record(&mut conn, "crm", "crm", "contact", &status).await?;
            Ok(())
        }
    });
    let app = Application::build(platform, (), AuthConfig::default(), |_| {}).unwrap();
    Fixture { app: TestApp::spawn(app), nats, db }
}

fn standard(body: &str, id: &str) -> Vec<(&'static str, String)> {
    let t = chrono::Utc::now().timestamp();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", t.to_string()),
        ("webhook-signature", sign_standard(CRM_SECRET, id, t, body.as_bytes()).unwrap()),
    ]
}

async fn post(
    f: &Fixture,
    system: &str,
    body: &str,
    headers: &[(&'static str, String)],
) -> reqwest::Response {
    let mut request = f
        .app
        .http
        .post(f.app.url(&format!("/webhooks/{system}")))
        .header("Content-Type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    request.send().await.unwrap()
}

/// Every message on `webhooks.>` so far.
async fn published(f: &Fixture) -> Vec<(String, Value)> {
    let js = async_nats::jetstream::new(f.nats.client().await);
    let stream = js.get_stream(format!("{}_WEBHOOKS", f.nats.prefix)).await.unwrap();
    let info = stream.get_info().await.unwrap();
    let mut out = Vec::new();
    for seq in info.state.first_sequence..=info.state.last_sequence {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push((msg.subject.to_string(), serde_json::from_slice(&msg.payload).unwrap()));
        }
    }
    out
}

async fn event(f: &Fixture, id: &str) -> (StatusCode, Value) {
    let response = f.app.admin_get(&format!("/events/{id}")).await;
    (response.status(), response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_signed_webhook_is_published_once_and_its_status_can_be_followed() {
    let f = spawn(1024 * 1024).await;
    let body = r#"{"objectType": "deal", "name": "Big deal"}"#;

    let first = post(&f, "crm", body, &standard(body, "msg_1")).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("Idempotent-Replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = post(&f, "crm", body, &standard(body, "msg_1")).await;

    assert_eq!(again.status(), 202, "a redelivery answers as the first time");
    assert_eq!(again.headers().get("Idempotent-Replayed").unwrap(), "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let id = first["event_id"].as_str().unwrap();
    assert_eq!(first["event_ids"], json!([id]));
    let messages = published(&f).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (subject, envelope) = &messages[0];
    assert_eq!(subject, &f.nats.subject("webhooks.crm.deal"));
    assert_eq!(envelope["id"], id);
    assert_eq!(envelope["type"], "crm.webhook_received");
    assert_eq!(envelope["data"]["name"], "Big deal");
    // The `received` row is queued, not waited for by the 202.
    let record = harness::eventually(std::time::Duration::from_secs(10), || async {
        let (status, record) = event(&f, id).await;
        (status == 200).then_some(record)
    })
    .await
    .expect("the event's status");
    assert_eq!(record["status"], "received", "no consumer takes deals: {record}");
    assert_eq!(record["delivery_id"], "msg_1");
    assert_eq!(event(&f, &uuid::Uuid::nil().to_string()).await.0, 404);
    harness::assert_settled(&f.db, &f.nats, "crm", 0).await;
}

#[tokio::test]
async fn an_applied_event_reads_applied_and_a_dead_lettered_one_failed_with_the_reason() {
    let f = spawn(1024 * 1024).await;
    let good = r#"{"objectType": "contact", "name": "Ada"}"#;
    let bad = r#"{"objectType": "contact", "name": "poison"}"#;

    let good: Value =
        post(&f, "crm", good, &standard(good, "msg_good")).await.json().await.unwrap();
    let bad: Value = post(&f, "crm", bad, &standard(bad, "msg_bad")).await.json().await.unwrap();

    let status_of = |v: &Value| v["event_id"].as_str().unwrap().to_owned();
    let applied = harness::eventually(Duration::from_secs(20), || async {
        let (_, record) = event(&f, &status_of(&good)).await;
        (record["status"] == "applied").then_some(record)
    });
    assert!(applied.await.is_some());
    let failed = harness::eventually(Duration::from_secs(20), || async {
        let (_, record) = event(&f, &status_of(&bad)).await;
        (record["status"] == "failed").then_some(record)
    })
    .await
    .expect("the poison event is reported failed");
    assert!(failed["reason"].as_str().unwrap().contains("contact cannot be applied"), "{failed}");
    harness::assert_settled(&f.db, &f.nats, "crm", 1).await;
}

#[tokio::test]
async fn a_hubspot_batch_becomes_one_event_per_entry() {
    let f = spawn(1024 * 1024).await;
    let body =
        r#"[{"eventId": 101, "objectType": "deal"}, {"eventId": 102, "objectType": "company"}]"#;
    let url = f.app.url("/webhooks/crm");
    let t = chrono::Utc::now().timestamp_millis();
    let signature = sign_hubspot(HUBSPOT_SECRET, "POST", &url, body.as_bytes(), t);
    let headers =
        [("X-HubSpot-Signature-v3", signature), ("X-HubSpot-Request-Timestamp", t.to_string())];

    let response = post(&f, "crm", body, &headers).await;

    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["event_ids"].as_array().unwrap().len(), 2);
    let subjects: Vec<String> = published(&f).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        subjects,
        [f.nats.subject("webhooks.crm.deal"), f.nats.subject("webhooks.crm.company")]
    );
    let stale = t - 301_000;
    let old = sign_hubspot(HUBSPOT_SECRET, "POST", &url, body.as_bytes(), stale);
    let headers =
        [("X-HubSpot-Signature-v3", old), ("X-HubSpot-Request-Timestamp", stale.to_string())];
    assert_eq!(post(&f, "crm", body, &headers).await.status(), 401, "older than 5 minutes");
    // The signed URL is this service's own, never one a client names in X-Forwarded-Host.
    let t = chrono::Utc::now().timestamp_millis();
    let spoofed_url = url.replace("127.0.0.1", "evil.example");
    let forged = sign_hubspot(HUBSPOT_SECRET, "POST", &spoofed_url, body.as_bytes(), t);
    let refused = f
        .app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "host=evil.example")
        .header("X-HubSpot-Signature-v3", forged)
        .header("X-HubSpot-Request-Timestamp", t.to_string())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "a signature over a forwarded host is not ours");
    harness::assert_settled(&f.db, &f.nats, "crm", 0).await;
}

#[tokio::test]
async fn a_webhook_without_any_credential_is_refused_before_its_body_is_read() {
    let f = spawn(1024).await;
    // Over the body limit: read, it would be a 413; it is refused for its missing credential.
    let response = f
        .app
        .http
        .post(f.app.url("/webhooks/crm"))
        .header("content-type", "application/json")
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "unauthorized: no signature or API key header");
}

#[tokio::test]
async fn unauthenticated_foreign_oversized_or_malformed_webhooks_are_refused_with_nothing_stored() {
    let f = spawn(1024).await;
    let body = r#"{"objectType": "contact", "name": "Ada"}"#;
    let mut forged = standard(body, "msg_2");
    forged[2].1 =
        sign_standard("whsec_b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA==", "msg_2", 0, b"x").unwrap();

    let cases = [
        (post(&f, "crm", body, &[]).await, 401),
        (post(&f, "crm", body, &forged).await, 401),
        // The ERP's key is valid, but it may not speak for the CRM.
        (post(&f, "crm", body, &[("X-API-Key", ERP_KEY.to_owned())]).await, 401),
        (post(&f, "fax", body, &standard(body, "msg_3")).await, 404),
        (post(&f, "crm", "{", &standard("{", "msg_4")).await, 400),
        (post(&f, "crm", r#"{"name": 1}"#, &standard(r#"{"name": 1}"#, "msg_5")).await, 422),
    ];
    for (response, expected) in cases {
        assert_eq!(response.status(), expected);
        let problem: Value = response.json().await.unwrap();
        assert!(problem["title"].is_string(), "{problem}");
    }
    let big = format!(r#"{{"objectType": "contact", "name": "{}"}}"#, "x".repeat(2000));
    let response = post(&f, "crm", &big, &standard(&big, "msg_6")).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers().get("content-type").unwrap(), "application/problem+json");
    assert!(published(&f).await.is_empty(), "nothing was published");
    let erp = post(&f, "erp", body, &[("X-API-Key", ERP_KEY.to_owned())]).await;
    assert_eq!(erp.status(), 422, "the ERP's own source takes its key (no eventId here)");
    harness::assert_settled(&f.db, &f.nats, "crm", 0).await;
}

/// A contact as the test's inbound path applies it: `{objectType, name}`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Contact {
    #[serde(rename = "objectType")]
    entity: String,
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_of: Option<i64>,
}

impl shared::schemas::Event for Contact {
    const TYPE: &'static str = "crm.webhook_received";
    fn subject(&self) -> String {
        format!("webhooks.crm.{}", self.entity)
    }
}

/// Applies contacts once `cured`; until then every attempt fails (not on its data: retried,
/// then dead-lettered).
struct Contacts {
    cured: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl shared::ingress::Inbound for Contacts {
    type Event = Contact;
    const SYSTEM: &'static str = "crm";

    fn entity(event: &Contact) -> &str {
        &event.entity
    }
    fn record_id(event: &Contact) -> &str {
        &event.name
    }
    fn retry_of(event: &Contact) -> Option<i64> {
        event.retry_of
    }
    fn set_retry_of(event: &mut Contact, row: Option<i64>) {
        event.retry_of = row;
    }
    fn apply<'a>(
        &'a self,
        _conn: &'a mut diesel_async::AsyncPgConnection,
        events: &'a [shared::ingress::Applying<'a, Contact>],
    ) -> futures::future::BoxFuture<'a, anyhow::Result<shared::ingress::AppliedBatch>> {
        Box::pin(async move {
            if !self.cured.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(
                    shared::ingress::Transient("the contacts table is locked".into()).into()
                );
            }
            Ok(shared::ingress::AppliedBatch {
                outcomes: events
                    .iter()
                    .map(|e| shared::ingress::Outcome::applied(Some(e.event.name.clone())))
                    .collect(),
                messages: vec![],
            })
        })
    }
}

#[tokio::test]
async fn a_replayed_dead_letter_is_applied_and_closes_its_ledger_row() {
    harness::init_logs();
    let db = TestDb::new().await;
    let nats = TestNats::new();
    let config = harness::common_config("crm-sync", &db, &nats);
    let spec = ServiceSpec {
        schema: "crm",
        streams: &[&streams::WEBHOOKS, &streams::SYNC_EVENTS],
        openapi: shared::app::described("inbound test"),
        settings: None,
    };
    let platform = Platform::start(&config, spec).await.unwrap();
    let named = |name: &str, secret: &str| vec![(name.to_owned(), SecretString::from(secret))];
    platform
        .run_ingress(vec![WebhookSource {
            system: "crm",
            schemes: vec![Scheme::StandardWebhooks(named("crm", CRM_SECRET))],
            parse: parse_crm,
        }])
        .unwrap();
    let cured = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    platform
        .run_inbound(
            Contacts { cured: cured.clone() },
            vec![ConsumerSpec {
                max_deliver: 1,
                batch: 8,
                ..ConsumerSpec::new("crm-inbound", &streams::WEBHOOKS, "webhooks.crm.>")
            }],
        )
        .unwrap();
    let app = Application::build(platform, (), AuthConfig::default(), |_| {}).unwrap();
    let f = Fixture { app: TestApp::spawn(app), nats, db };
    let body = r#"{"objectType": "contact", "name": "Ada"}"#;

    // Dead-lettered: `failed`, with a dead letter and an open inbound ledger row.
    let accepted: Value =
        post(&f, "crm", body, &standard(body, "msg_ada")).await.json().await.unwrap();
    let id = accepted["event_id"].as_str().unwrap().to_owned();
    let failed = harness::eventually(Duration::from_secs(20), || async {
        let (_, record) = event(&f, &id).await;
        (record["status"] == "failed").then_some(record)
    })
    .await
    .expect("the event is dead-lettered");
    assert!(failed["reason"].as_str().unwrap().contains("locked"), "{failed}");
    let rows: Value =
        f.app.admin_get("/admin/record-errors?direction=inbound").await.json().await.unwrap();
    assert_eq!(rows["count"], 1, "a dead-lettered event is in the error ledger: {rows}");
    assert_eq!(rows["errors"][0]["record_id"], "Ada");
    assert_eq!(rows["errors"][0]["entity"], "contact");
    let letters: Value = f.app.admin_get("/admin/dead-letters").await.json().await.unwrap();
    let letter = letters.as_array().unwrap()[0]["id"].as_str().unwrap().to_owned();

    // Replayed once the cause is gone: applied, and the ledger row closes.
    cured.store(true, std::sync::atomic::Ordering::SeqCst);
    let replay =
        f.app.admin_post(&format!("/admin/dead-letters/{letter}/replay"), &json!({})).await;
    assert_eq!(replay.0, 202, "{}", replay.1);
    let applied = harness::eventually(Duration::from_secs(20), || async {
        let (_, record) = event(&f, &id).await;
        (record["status"] == "applied").then_some(record)
    })
    .await;
    assert!(applied.is_some(), "the replayed event is applied: {:?}", event(&f, &id).await);
    let open = harness::eventually(Duration::from_secs(10), || async {
        let rows: Value =
            f.app.admin_get("/admin/record-errors?direction=inbound").await.json().await.unwrap();
        (rows["count"] == 0).then_some(())
    })
    .await;
    assert!(open.is_some(), "the ledger row closes once the replay is applied");
    harness::assert_settled(&f.db, &f.nats, "crm", 1).await;
}

#[tokio::test]
async fn every_error_is_a_problem_document_naming_what_was_wrong() {
    let f = spawn(1024).await;
    let http = &f.app.http;
    let problem = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let kind = r.headers()["content-type"].to_str().unwrap().to_owned();
        let body: Value = r.json().await.unwrap();
        (status, kind, body)
    };
    let (status, kind, body) =
        problem(http.get(f.app.url("/no/such/route")).send().await.unwrap()).await;
    assert_eq!((status, kind.as_str()), (404, "application/problem+json"));
    assert_eq!(body["detail"], "no route for GET /no/such/route");
    let (status, _, body) = problem(http.delete(f.app.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, body["detail"].as_str()), (404, Some("no route for DELETE /readyz")));
    let (status, kind, body) = problem(
        http.get(f.app.url("/admin/record-errors?limit=many"))
            .bearer_auth(harness::ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, kind.as_str()), (400, "application/problem+json"), "{body}");
    assert!(body["detail"].as_str().unwrap().contains("invalid digit"), "{body}");
    let (status, kind, _) = problem(
        http.get(f.app.url("/events/not-a-uuid"))
            .bearer_auth(harness::ADMIN_TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!((400..500).contains(&status) && kind == "application/problem+json", "{status} {kind}");
    let big = vec![b'x'; 4096];
    let (status, kind, body) = problem(
        http.put(f.app.url("/admin/settings/sync_priority_source"))
            .bearer_auth(harness::ADMIN_TOKEN)
            .body(big)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, kind.as_str()), (413, "application/problem+json"), "{body}");
    let _ = (&f.nats, &f.db);
}

#[tokio::test]
async fn a_client_refused_too_often_is_rate_limited_even_with_the_right_token_then() {
    let f = spawn(1024).await;
    let get = |token: &'static str| {
        let request = f.app.http.get(f.app.url("/admin/settings")).bearer_auth(token);
        async move { request.send().await.unwrap() }
    };
    assert_eq!(get(harness::ADMIN_TOKEN).await.status(), 200);
    for _ in 0..30 {
        assert_eq!(get("guessing-the-admin-token").await.status(), 401);
    }
    let blocked = get(harness::ADMIN_TOKEN).await;
    assert_eq!(blocked.status(), 429, "30 refusals within a minute");
    let wait: u64 = blocked.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    let problem: Value = blocked.json().await.unwrap();
    assert_eq!(problem["status"], 429);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_is_limited_and_a_forged_header_is_not_believed()
 {
    // Direct: X-Forwarded-For is not believed (127.0.0.1 is no trusted proxy here).
    let f = spawn(1024).await;
    for n in 0..30 {
        let r = f
            .app
            .http
            .get(f.app.url("/admin/settings"))
            .bearer_auth("guessing-the-admin-token")
            .header("X-Forwarded-For", format!("198.51.100.{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r =
        f.app.http.get(f.app.url("/admin/settings")).header("X-Forwarded-For", "198.51.100.200");
    assert_eq!(r.send().await.unwrap().status(), 429, "a forged header does not escape the limit");

    // Behind a trusted proxy (the loopback): each forwarded client has a limit of its own.
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let mut config = harness::common_config("crm-sync", &db, &nats);
    config.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    let spec = ServiceSpec {
        schema: "crm",
        streams: &[&streams::WEBHOOKS, &streams::SYNC_EVENTS],
        openapi: shared::app::described("proxy test"),
        settings: None,
    };
    let platform = Platform::start(&config, spec).await.unwrap();
    let app =
        TestApp::spawn(Application::build(platform, (), AuthConfig::default(), |_| {}).unwrap());
    let get = |client: &str, token: &str| {
        app.http
            .get(app.url("/admin/settings"))
            .bearer_auth(token)
            // A proxy appends the address it saw to what the client sent.
            .header("X-Forwarded-For", format!("10.9.9.9, {client}"))
            .send()
    };
    for _ in 0..30 {
        assert_eq!(get("203.0.113.7", "guessing-the-admin-token").await.unwrap().status(), 401);
    }
    assert_eq!(get("203.0.113.7", harness::ADMIN_TOKEN).await.unwrap().status(), 429);
    assert_eq!(
        get("203.0.113.8", harness::ADMIN_TOKEN).await.unwrap().status(),
        200,
        "another client behind the same proxy is not throttled"
    );
}
