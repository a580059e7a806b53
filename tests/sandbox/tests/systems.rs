//! The simulated systems speak their formats, check credentials and inject faults.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sandbox::{Fault, Sandbox};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    shared::tls::install_crypto_provider();
    reqwest::Client::new()
}

#[tokio::test]
async fn stock_systems_require_their_credentials_and_keep_the_levels_they_are_sent() {
    let s = Sandbox::start().await.unwrap();
    let http = client();

    let denied = http
        .put(format!("{}/api/inventory/A", s.erp.base_url()))
        .bearer_auth("wrong")
        .json(&json!({"sku": "A", "warehouseCode": "W", "qtyOnHand": 1}))
        .send()
        .await
        .unwrap();
    let erp = http
        .put(format!("{}/api/inventory/A", s.erp.base_url()))
        .bearer_auth(s.erp.credential())
        .json(&json!({"sku": "A", "warehouseCode": "W", "qtyOnHand": 4}))
        .send()
        .await
        .unwrap();
    let pos = http
        .post(format!("{}/inventory/update", s.pos.base_url()))
        .header("X-API-Key", s.pos.credential())
        .json(&json!({"item_id": "A", "quantity": 5, "location_id": "W"}))
        .send()
        .await
        .unwrap();
    let wms_bad = http
        .put(format!("{}/api/inventory", s.wms.base_url()))
        .bearer_auth(s.wms.credential())
        .json(&json!({"sku": "A", "location": "W", "qty": "six"}))
        .send()
        .await
        .unwrap();
    let shop = http
        .post(format!("{}/admin/api/2024-10/inventory_levels/set.json", s.shop.base_url()))
        .header("X-Shopify-Access-Token", s.shop.credential())
        .json(&json!({"inventory_item_id": "A", "location_id": "W", "available": 7}))
        .send()
        .await
        .unwrap();

    assert_eq!(denied.status(), 401);
    let statuses =
        [erp.status(), pos.status(), wms_bad.status(), shop.status()].map(|s| s.as_u16());
    assert_eq!(statuses, [200, 200, 422, 200]);
    assert_eq!(
        (
            s.erp.level("A", "W"),
            s.pos.level("A", "W"),
            s.wms.level("A", "W"),
            s.shop.level("A", "W")
        ),
        (Some(4), Some(5), None, Some(7))
    );
    assert_eq!(s.erp.requests().len(), 2, "rejected requests are recorded too");
}

#[tokio::test]
async fn injected_faults_come_first_then_normal_answers() {
    let s = Sandbox::start().await.unwrap();
    s.wms.fail_next(1, Fault::Status(503));
    s.wms.fail_next(1, Fault::RateLimited { retry_after_secs: 7 });
    let send = || {
        client()
            .put(format!("{}/api/inventory", s.wms.base_url()))
            .bearer_auth(s.wms.credential())
            .json(&json!({"sku": "A", "location": "W", "qty": 1}))
            .send()
    };

    let first = send().await.unwrap();
    let second = send().await.unwrap();
    let third = send().await.unwrap();

    assert_eq!(first.status(), 503);
    assert_eq!(second.status(), 429);
    assert_eq!(second.headers()["retry-after"], "7");
    assert_eq!(third.status(), 200);
}

#[tokio::test]
async fn notification_systems_speak_slack_pagerduty_and_smtp() {
    let s = Sandbox::start().await.unwrap();
    let http = client();

    let slack = http.post(s.slack.url()).json(&json!({"text": "hello"})).send().await.unwrap();
    let slack_wrong_path = http
        .post(format!("{}/services/x", s.slack.base_url()))
        .json(&json!({"text": "x"}))
        .send()
        .await
        .unwrap();
    let pd: Value = http.post(format!("{}/v2/enqueue", s.pagerduty.base_url()))
        .json(&json!({"routing_key": s.pagerduty.credential(), "event_action": "trigger", "dedup_key": "k1",
                      "payload": {"summary": "down", "source": "datasync", "severity": "critical"}}))
        .send().await.unwrap().json().await.unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(s.smtp.port)
        .build();
    let mail = Message::builder()
        .from("datasync@example.com".parse().unwrap())
        .to("ops@example.com".parse().unwrap())
        .subject("Low Stock Alert: MUG-1")
        .body("Product Mug is below reorder point.".to_owned())
        .unwrap();
    mailer.send(mail).await.unwrap();

    assert_eq!(slack.status(), 200);
    assert_eq!(slack.text().await.unwrap(), "ok");
    assert_eq!(slack_wrong_path.status(), 404);
    assert_eq!(slack_wrong_path.text().await.unwrap(), "no_service");
    assert_eq!(pd, json!({"status": "success", "message": "Event processed", "dedup_key": "k1"}));
    let mails = s.smtp.mails();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["ops@example.com"]);
    assert!(mails[0].data.contains("Subject: Low Stock Alert: MUG-1"), "{}", mails[0].data);
}

#[tokio::test]
async fn the_crm_keeps_records_lists_them_with_a_cursor_and_rate_limits() {
    let s = Sandbox::start().await.unwrap();
    let http = client();
    let objects = format!("{}/crm/v3/objects/contacts", s.crm.base_url());

    // HubSpot's internal names and string values; an unknown property refuses the request.
    let unknown = http
        .post(&objects)
        .bearer_auth(s.crm.credential())
        .json(&json!({"properties": {"firstName": "Ada"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["errors"][0]["code"], "PROPERTY_DOESNT_EXIST");
    assert_eq!(unknown["errors"][0]["context"]["propertyName"][0], "firstName");
    let created = http
        .post(&objects)
        .bearer_auth(s.crm.credential())
        .json(&json!({"properties": {"firstname": "Ada", "lastname": "Lovelace"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    let patched = http
        .patch(format!("{objects}/{id}"))
        .bearer_auth(s.crm.credential())
        .json(&json!({"properties": {"jobtitle": "Countess"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let held = s.crm.crm_object("contacts", id).unwrap().properties;
    assert_eq!(
        (held["jobtitle"].as_str(), held["firstname"].as_str()),
        (Some("Countess"), Some("Ada"))
    );

    // The CRM's own users add two more; a page of 2 has a cursor to the third.
    s.crm.crm_change("contacts", None, json!({"firstname": "Grace"}));
    s.crm.crm_change("contacts", None, json!({"firstname": "Edsger"}));
    let page: Value = http
        .get(format!("{objects}?limit=2&properties=firstname"))
        .bearer_auth(s.crm.credential())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let after = page["paging"]["next"]["after"].as_str().unwrap();
    let last: Value = http
        .get(format!("{objects}?limit=2&properties=firstname&after={after}"))
        .bearer_auth(s.crm.credential())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["results"].as_array().unwrap().len(), 2);
    assert_eq!(last["results"][0]["properties"]["firstname"], "Edsger");
    assert!(last.get("paging").is_none(), "{last}");

    // Archived records leave the live list; a spent quota answers 429 with HubSpot's headers
    // and, as HubSpot, no Retry-After.
    let deleted = http
        .delete(format!("{objects}/{id}"))
        .bearer_auth(s.crm.credential())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    s.crm.set_quota(1, std::time::Duration::from_secs(60));
    let first =
        http.get(format!("{objects}/{id}")).bearer_auth(s.crm.credential()).send().await.unwrap();
    assert_eq!(first.status(), 404);
    assert_eq!(first.headers()["x-hubspot-ratelimit-remaining"], "0");
    let refused = http.get(&objects).bearer_auth(s.crm.credential()).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(!refused.headers().contains_key("retry-after"));
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(
        (refused["errorType"].as_str(), refused["policyName"].as_str()),
        (Some("RATE_LIMIT"), Some("TEN_SECONDLY_ROLLING"))
    );
}

#[tokio::test]
async fn the_erp_lists_its_records_a_page_at_a_time_and_reports_them_as_webhooks() {
    let s = Sandbox::start().await.unwrap();
    let http = client();
    let created = s.erp.erp_record("customers", "C-1", json!({"name": "Ada"}));
    assert_eq!(
        created,
        json!({"eventType": "created", "entity": "customer", "entityId": "C-1", "payload": {"name": "Ada"}})
    );
    let updated = s.erp.erp_record("customers", "C-1", json!({"name": "Ada L."}));
    assert_eq!(updated["eventType"], "updated");
    s.erp.erp_record("customers", "C-2", json!({"name": "Grace"}));
    let page: Value = http
        .get(format!("{}/api/customers?offset=1&limit=1", s.erp.base_url()))
        .bearer_auth(s.erp.credential())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page,
        json!({"data": [{"id": "C-2", "name": "Grace"}], "has_more": false, "total": 2})
    );
    // Changes pushed to it are kept, with the ERP's own time.
    let put = http
        .put(format!("{}/api/customers/C-2", s.erp.base_url()))
        .bearer_auth(s.erp.credential())
        .json(&json!({"name": "Grace H.", "email": "grace@example.com", "phone": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let customer = s.erp.erp_get("customers", "C-2").unwrap();
    assert_eq!(customer["email"], "grace@example.com");
    assert!(customer["updatedAt"].is_string());
    let patch = http
        .patch(format!("{}/api/orders/SO-404", s.erp.base_url()))
        .bearer_auth(s.erp.credential())
        .json(&json!({"status": "cancelled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 404, "an order the ERP does not have");
}
