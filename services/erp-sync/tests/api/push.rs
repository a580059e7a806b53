//! Local changes of order statuses and customers reach the ERP through the push engine, and
//! what comes from the ERP is never pushed back.

use diesel_async::SimpleAsyncConnection;
use sandbox::{Fault, WebhookSigner};
use serde_json::{Value, json};

use crate::helpers::{API_KEY, TestErp, WAIT, spawn};

/// The ERP reports a record of its own (as its users entered it) to erp-sync.
async fn report(t: &TestErp, collection: &str, id: &str, record: Value) {
    let event = t.erp.erp_record(collection, id, record);
    deliver(t, &event).await;
}

/// Delivers an ERP webhook; the event as applied.
async fn deliver(t: &TestErp, event: &Value) -> Value {
    let signer = WebhookSigner::ApiKey { key: API_KEY.into() };
    let (status, body) =
        sandbox::deliver(&t.app.http, &t.app.url("/webhooks/erp"), &signer, event).await.unwrap();
    assert_eq!(status, 202, "{body}");
    t.event_eventually(body["event_id"].as_str().unwrap(), "applied").await
}

/// The ERP's echo of its current record, as it reports its own changes.
fn echo(t: &TestErp, collection: &str, entity: &str, id: &str) -> Value {
    let record = t.erp.erp_get(collection, id).unwrap();
    json!({"eventType": "updated", "entity": entity, "entityId": id, "payload": record})
}

fn writes(t: &TestErp) -> Vec<(String, String, Value)> {
    t.erp
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method, r.path, r.body))
        .collect()
}

async fn sql(t: &TestErp, statement: &str) {
    t.db.connect().await.batch_execute(statement).await.unwrap();
}

async fn seed(t: &TestErp) {
    report(
        t,
        "customers",
        "C-1",
        json!({"name": "Ada", "email": "ada@example.com",
        "updatedAt": "2020-01-01T09:00:00Z"}),
    )
    .await;
    report(
        t,
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1", "status": "open",
        "total": 10, "currency": "EUR", "updatedAt": "2020-01-01T09:00:00Z",
        "lineItems": [{"sku": "A", "quantity": 1}]}),
    )
    .await;
}

#[tokio::test]
async fn local_changes_reach_the_erp_once_and_its_report_of_them_is_not_pushed_back() {
    let t = spawn().await;
    seed(&t).await;
    assert!(writes(&t).is_empty(), "nothing from the ERP is pushed back to it");

    // Another application changes the order's status and the customer's phone.
    sql(
        &t,
        "UPDATE erp.orders SET status = 'cancelled' WHERE erp_order_id = 'SO-1';
             UPDATE erp.customers SET phone = '+44 20 7946 0000' WHERE erp_customer_id = 'C-1';",
    )
    .await;
    assert!(
        t.erp
            .wait_until(WAIT, |erp| {
                erp.erp_get("orders", "SO-1").unwrap()["status"] == "cancelled"
                    && erp.erp_get("customers", "C-1").unwrap()["phone"] == "+44 20 7946 0000"
            })
            .await,
        "{:?}",
        writes(&t)
    );
    let mut sent = writes(&t);
    sent.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        sent,
        vec![
            (
                "PUT".into(),
                "/api/customers/C-1".into(),
                json!({"name": "Ada", "email": "ada@example.com", "phone": "+44 20 7946 0000"})
            ),
            ("PATCH".into(), "/api/orders/SO-1".into(), json!({"status": "cancelled"})),
        ]
    );
    // The ERP reports the changes back as its own: applied, and nothing is pushed again.
    deliver(&t, &echo(&t, "orders", "salesOrder", "SO-1")).await;
    deliver(&t, &echo(&t, "customers", "customer", "C-1")).await;
    t.assert_settled().await;
    assert_eq!(writes(&t).len(), 2);
    let order = t.row("orders", "erp_order_id", "SO-1").await.unwrap();
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["synced_version"], order["local_version"]);
}

#[tokio::test]
async fn an_erp_event_older_than_a_pending_local_change_does_not_undo_it() {
    let t = spawn().await;
    seed(&t).await;
    // The ERP is down for a while: the local change waits to be pushed.
    t.erp.fail_next(2, Fault::Status(503));
    sql(&t, "UPDATE erp.orders SET status = 'on_hold' WHERE erp_order_id = 'SO-1'").await;
    // An ERP event from before that change (but after the stored one) arrives meanwhile.
    let event = deliver(
        &t,
        &json!({"eventType": "updated", "entity": "salesOrder", "entityId": "SO-1",
            "payload": {"orderNumber": "1", "customerId": "C-1", "status": "confirmed",
                "total": 12, "updatedAt": "2020-01-01T09:30:00Z"}}),
    )
    .await;
    assert_eq!(event["reason"], Value::Null, "no status change was applied: {event}");
    let order = t.row("orders", "erp_order_id", "SO-1").await.unwrap();
    assert_eq!(order["status"], "on_hold", "the local change is on its way to the ERP");
    assert_eq!(order["total"].as_f64(), Some(12.0), "the ERP's other fields apply");

    assert!(
        t.erp
            .wait_until(WAIT, |erp| erp.erp_get("orders", "SO-1").unwrap()["status"] == "on_hold")
            .await
    );
    t.assert_settled().await;
    // Once delivered, a newer ERP change applies as usual.
    report(
        &t,
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1",
        "status": "shipped", "updatedAt": "2099-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(t.row("orders", "erp_order_id", "SO-1").await.unwrap()["status"], "shipped");
    t.assert_settled().await;
    assert_eq!(writes(&t).iter().filter(|w| w.0 == "PATCH").count(), 3, "two 503s, then delivered");
    let updates: Vec<String> = t
        .smtp
        .mails()
        .into_iter()
        .filter(|m| m.data.contains("Order Update"))
        .map(|m| m.data)
        .collect();
    assert_eq!(updates.len(), 1, "only the applied change to shipped is emailed: {updates:?}");
    assert!(updates[0].contains("shipped"));
}

#[tokio::test]
async fn a_newer_erp_change_over_a_queued_local_change_is_not_pushed_back() {
    let t = spawn().await;
    seed(&t).await;
    // One 503 (a second one would fail the read-back too, and a target that cannot be read is
    // pushed to).
    t.erp.fail_next(1, Fault::Status(503));
    sql(&t, "UPDATE erp.orders SET status = 'on_hold' WHERE erp_order_id = 'SO-1'").await;
    assert!(
        t.erp
            .wait_until(WAIT, |erp| erp
                .requests()
                .iter()
                .any(|r| r.method == "PATCH" && r.status == 503))
            .await
    );
    // While the push waits, the ERP's users ship the order (later than the local change).
    report(
        &t,
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1",
        "status": "shipped", "updatedAt": "2099-01-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(t.row("orders", "erp_order_id", "SO-1").await.unwrap()["status"], "shipped");
    // The queued push reads the ERP back, finds it holds the record, and sends nothing.
    t.assert_settled().await;
    assert!(
        writes(&t).iter().all(|w| w.2 != json!({"status": "shipped"})),
        "the ERP's own value is not pushed back: {:?}",
        writes(&t)
    );
    assert_eq!(t.erp.erp_get("orders", "SO-1").unwrap()["status"], "shipped");
    assert_eq!(
        t.count(
            "SELECT count(*) AS n FROM erp.push_log WHERE target = 'erp' AND status = 'skipped'"
        )
        .await,
        1,
        "read back, found in place"
    );
}

#[tokio::test]
async fn a_read_back_never_pushes_over_a_newer_erp_change_still_in_flight() {
    let t = spawn().await;
    seed(&t).await;
    // The local change's push waits (the ERP asks for 3 s).
    t.erp.fail_next(1, Fault::RateLimited { retry_after_secs: 3 });
    sql(&t, "UPDATE erp.orders SET status = 'on_hold' WHERE erp_order_id = 'SO-1'").await;
    assert!(
        t.erp.wait_until(WAIT, |erp| erp.requests().iter().any(|r| r.status == 429)).await,
        "the push was tried"
    );
    // W1: the ERP ships the order, later than the local change; it wins here.
    report(
        &t,
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1",
        "status": "shipped", "updatedAt": "2099-01-01T00:00:00Z"}),
    )
    .await;
    // W2: the ERP delivers it; its webhook is still in flight when the push reads it back.
    let w2 = t.erp.erp_record(
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1",
        "status": "delivered", "updatedAt": "2099-01-02T00:00:00Z"}),
    );
    let read_back = harness::eventually(WAIT, || async {
        let n = t
            .count("SELECT count(*) AS n FROM erp.push_log WHERE target = 'erp' AND status <> 'retrying'")
            .await;
        (n > 0).then_some(())
    });
    assert!(read_back.await.is_some(), "the queued push ran");
    deliver(&t, &w2).await;

    t.assert_settled().await;
    assert_eq!(t.row("orders", "erp_order_id", "SO-1").await.unwrap()["status"], "delivered");
    assert_eq!(
        t.erp.erp_get("orders", "SO-1").unwrap()["status"],
        "delivered",
        "the ERP's newer change was pushed over: {:?}",
        writes(&t)
    );
}
